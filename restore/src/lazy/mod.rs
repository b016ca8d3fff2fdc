//! The page server of a lazy restore.
//!
//! The shim registers every lazy mapping (`cryo_image::lazy::is_lazy`) of
//! the rebuilt process with a userfaultfd in MISSING mode and sends the fd
//! here. The server answers each fault with the faulting page, checked
//! against its checksum in sums.img (whose 4 KiB block is itself checked
//! against meta.img on first use), by UFFDIO_COPY straight from a mapping
//! of pages.img, pages the image has no data for with
//! UFFDIO_ZEROPAGE, and (in background mode) streams the remaining runs in
//! growing batches between faults, then exits.
//!
//! What the program does to its memory is tracked per address space
//! ([`Space`]): pages dropped (EVENT_REMOVE: MADV_DONTNEED/REMOVE; UNMAP)
//! are never filled from the image again, moved ranges (REMAP) move their
//! pending pages, and a fork (EVENT_FORK) gets its own space that starts as
//! a copy of the parent's (the child's missing pages are the parent's).
//! While an event is unread the kernel refuses fills with EAGAIN, so every
//! fill is retried after the events are read.

mod layout;
mod second;
mod server;
mod space;
mod stats;
mod stride;
mod working_set;

use crate::uffd::{self, Mapped, Uffd};
use cryo_image::{Image, PAGE_SIZE};
use layout::{Bits, Layout};
use server::Server;
use space::Space;
pub use stats::{eager_fill_json, write_stats_file};
use stats::{stats_json, Stats};
use std::os::fd::RawFd;
use std::path::PathBuf;
use working_set::write_working_set;
pub use working_set::{read_working_set, WORKING_SET_FILE};

const PG: u64 = PAGE_SIZE;
/// Pages a fault brings in where the program touches memory densely: the
/// aligned block around the faulting page, once another page of it was
/// filled (`Server::fault`). Each page costs ~2 µs of kernel work in
/// UFFDIO_COPY here and ~3 µs to check, a fault ~20 µs of service and a
/// round trip: one page per fault made a GHC fold over a 1e5 map 13×
/// slower than eager (3 621 faults), 16 pages from every faulting page on
/// cut that to 2.6× (1 113 faults; 32 were no better) but made a sparse
/// walk (one word per 64 KiB) 2–3× slower. See docs/benchmarks.md,
/// "Lazy faults".
const FAULT_AROUND: u64 = 16;
/// Largest background copy (bytes): a fault that arrives meanwhile waits
/// for it (and so does the program's exit, for the mmap lock). 64 KiB
/// first, doubling up to this (8 MiB measured 4x slower exits at 1 %).
const MAX_BATCH: u64 = 128 << 10;

/// Pages copied ahead of a walk with a fixed stride between two reads
/// of the uffds (`stride`): a fault that arrives meanwhile waits for at
/// most these few copies (~3 µs each).
const STRIDE_STEP: u64 = 4;

/// How long the on-demand server keeps polling without sleeping after a
/// fault (docs/benchmarks.md, "Lazy faults").
const SPIN_AFTER_FAULT: std::time::Duration = std::time::Duration::from_micros(200);
/// How far ahead the server maps pages.img when the program reads it in
/// order: the faults that follow then take no madvise. A fault out of
/// order maps only its own page (64 KiB for it measured 2 µs dearer).
const MAP_AHEAD: u64 = 64 << 10;

/// How pages that nobody asked for get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// After the prefetch, stream every remaining page in the background
    /// (growing batches, faults first), then exit.
    Background,
    /// Serve only what is touched; the server lives as long as the program.
    OnDemand,
}

/// What the page server is told by `cryo restore`.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// Where to write the working set (first-touch order) when the
    /// program exits (`--record-working-set`; implies on-demand).
    pub record: Option<PathBuf>,
    /// Page addresses to copy before the program resumes.
    pub prefetch: Vec<u64>,
    /// Write serving statistics (JSON) here at exit.
    pub stats: Option<PathBuf>,
    /// Identity of meta.img (its xxh3), stored in a recorded working set.
    pub image_id: u64,
    /// Check each page's checksum before serving it (off: --no-verify).
    pub verify: bool,
}

/// Fatal: the server cannot serve correct pages.
#[derive(Debug)]
struct Fatal(String);

/// Pages the page server has to bring in for this image (for messages).
pub fn lazy_pages(img: &Image) -> u64 {
    let l = Layout::new(*img);
    l.runs_in(0, u64::MAX)
        .map(|(_, r)| {
            (0..r.npages as u64)
                .filter(|&k| !l.in_window(r.vaddr + k * PG))
                .count() as u64
        })
        .sum()
}

fn say(msg: &str) {
    let m = format!("cryo page server: {msg}\n");
    let _ = uffd::write(2, m.as_bytes());
}

/// The page server process (`files`: pages.img and sums.img): receive the
/// uffd on `sock`, prefetch, say go,
/// serve. `keeper` holds fork children's uffds. `target` is the restored
/// process. Returns the exit status (0: every page in, or the program
/// gone).
pub fn run(
    img: Image,
    files: (&ImageFileAt, &ImageFileAt),
    cfg: &Config,
    sock: RawFd,
    keeper: RawFd,
    target: i32,
) -> i32 {
    match serve(img, files, cfg, sock, keeper, target) {
        Ok(()) => 0,
        Err(Fatal(m)) => {
            say(&m);
            1
        }
    }
}

/// An image file's path and the device and inode it must have.
pub type ImageFileAt = (std::path::PathBuf, Option<cryo_image::load::FileId>);

fn serve(
    img: Image,
    (pages_at, sums_at): (&ImageFileAt, &ImageFileAt),
    cfg: &Config,
    sock: RawFd,
    keeper: RawFd,
    target: i32,
) -> Result<(), Fatal> {
    let map = |(path, id): &ImageFileAt, len: u64| {
        let file = cryo_image::load::reopen_checked(path, *id)
            .map_err(|e| Fatal(format!("opening {}: {e}", path.display())))?;
        Mapped::open(&file, len).map_err(|e| Fatal(format!("mapping {}: {e}", path.display())))
    };
    let npages = img.header.pages_len / PG;
    // Their lengths were checked by `cryo restore`.
    let pages = map(pages_at, img.header.pages_len)?;
    let sums = map(sums_at, npages * 8)?;
    let pidfd = uffd::pidfd_open(target);
    let uffd = match Uffd::recv(sock) {
        Ok(Some(u)) => u,
        // The shim failed before the hand-off (it said why).
        Ok(None) => return Ok(()),
        Err(e) => return Err(Fatal(format!("receiving the userfaultfd: {e}"))),
    };
    let layout = Layout::new(img);
    let root = Space::new(uffd, &layout, true);
    let mut srv = Server {
        layout,
        pages: std::sync::Arc::new(pages),
        sums,
        block_ok: Bits::new(cryo_image::sum_blocks(img.header.pages_len)),
        page_ok: Bits::new(npages),
        mapped: Bits::new(npages),
        last_end: u64::MAX,
        verify: cfg.verify,
        spaces: vec![root],
        keeper,
        stats: Stats::default(),
        touched: Vec::new(),
        recording: cfg.record.is_some(),
        second: None,
    };
    if !cfg.prefetch.is_empty() {
        srv.prefetch(&cfg.prefetch)?;
    }
    // Go: the shim may hand off to the program.
    let _ = uffd::write(sock, &[cryo_image::handoff::GO]);

    let mode = if cfg.record.is_some() {
        Mode::OnDemand
    } else {
        cfg.mode
    };
    if mode == Mode::Background && !cfg.verify {
        srv.second = start_second(&srv);
    }
    let mut budget: u64 = 64 << 10;
    let mut root_alive = true;
    let mut served = 0u64;
    let mut last_fault = std::time::Instant::now();
    loop {
        srv.pump_all()?;
        if srv.spaces.is_empty() {
            break;
        }
        let now_served = srv.stats.faults + srv.stats.zero_faults + srv.stats.answered_faults;
        if now_served != served {
            served = now_served;
            last_fault = std::time::Instant::now();
        }
        if srv.retry_pending() {
            // A fault waits for a thread of the program to finish an
            // event (mmap_changing): let it run, then serve the fault.
            std::thread::yield_now(); // sched_yield
            continue;
        }
        if srv.second.as_ref().is_some_and(|s| s.done()) {
            srv.end_second()?;
        }
        // A walk with a fixed stride: the pages ahead of it before
        // anything else (in background mode the streams wait: the walk is
        // what the program waits for), a few between two reads.
        let walking = srv.walking();
        if let Some(second) = &srv.second {
            second.pause(walking);
        }
        if srv.stride_step()? {
            continue;
        }
        // The rest of a dense fault's window, a block between two reads.
        if srv.ahead_step()? {
            continue;
        }
        // While the program walks, its faults come first: no stream
        // batch for them to wait behind (the walk's own pages come in
        // ahead of it above).
        let background = mode == Mode::Background || !root_alive;
        let streaming = background && !walking;
        if streaming {
            // Faults first: only stream when nothing waits.
            let mut any = false;
            let mut s = 0;
            while s < srv.spaces.len() {
                let n = srv.spaces.len();
                if srv.stream(s, budget)? {
                    any = true;
                }
                // (A space whose process is gone was removed: the next
                // one is at s now.)
                if srv.spaces.len() == n {
                    s += 1;
                } else {
                    any = true;
                }
            }
            budget = (budget * 2).min(MAX_BATCH);
            if !any {
                break; // every page of every space is in
            }
            continue;
        }
        // On demand: faults come in bursts (a program walking its heap).
        // Sleeping in poll between two of them costs a wake-up each, which
        // in this VM is most of a fault's cost: poll the uffds without
        // sleeping for a short while after each fault first.
        if last_fault.elapsed() < SPIN_AFTER_FAULT {
            std::hint::spin_loop();
            continue;
        }
        // Then sleep until a fault, an event or the program's exit.
        let mut fds: Vec<libc::pollfd> = srv
            .spaces
            .iter()
            .map(|s| libc::pollfd {
                fd: s.uffd.raw(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        });
        let r = uffd::poll(&mut fds, if background { 1 } else { 1000 });
        let exited = pidfd >= 0 && fds.last().is_some_and(|p| p.revents != 0);
        if exited {
            root_alive = false;
            srv.spaces.retain(|s| !s.root);
            if srv.spaces.is_empty() {
                break;
            }
        } else if r == 0 {
            // Idle: forked children have no pidfd here; a copy into a
            // space whose process is gone fails with ESRCH and drops it.
            let mut s = 0;
            while s < srv.spaces.len() {
                let n = srv.spaces.len();
                if !srv.spaces[s].root {
                    srv.stream(s, PG)?;
                }
                if srv.spaces.len() == n {
                    s += 1;
                }
            }
        }
    }
    srv.end_second()?;
    if let Some(path) = &cfg.record {
        write_working_set(path, cfg.image_id, &srv.touched)
            .map_err(|e| Fatal(format!("writing {}: {e}", path.display())))?;
    }
    if let Some(path) = &cfg.stats {
        let _ = write_stats_file(path, &stats_json(&mut srv.stats));
    }
    Ok(())
}

/// A second streamer for the root space (`second`), where it can help: a
/// second CPU to run on, and enough pending pages. Pages it copies are not
/// checked against their checksums, so never with `verify` (a caller's
/// rule). Best effort: without one, the server streams everything.
fn start_second(srv: &Server) -> Option<second::Second> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    let root = srv.spaces.first().filter(|sp| sp.root)?;
    // The image's runs, not what is pending now (a walk over every page,
    // while the program waits for its first faults): pages prefetched or
    // filled meanwhile are stepped over (EEXIST).
    let pieces = srv.layout.data_pieces();
    if pieces.iter().map(|&(_, _, len)| len).sum::<u64>() < second::SECOND_MIN {
        return None;
    }
    let uffd = Uffd(root.uffd.0.try_clone().ok()?);
    second::Second::start(pieces, uffd, srv.pages.clone()).ok()
}

/// Write `bytes` to `path` whole or not at all: a temporary name of this
/// process's (concurrent restores recording at once shared one, and 19 of
/// 80 lost their recording, "No such file", a sweep of stop 47; the last
/// to finish is the one kept), created with `mode` (less the umask),
/// synced first if `sync`, then renamed over `path`.
fn write_renamed(
    path: &std::path::Path,
    bytes: &[u8],
    mode: u32,
    sync: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

// The shim's and the server's socketpair, made by `cryo restore`.
pub use crate::uffd::socketpair;
