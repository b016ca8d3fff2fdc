//! The page server of a lazy restore.
//!
//! The shim registers every lazy mapping (`cryo_image::lazy::is_lazy`) of
//! the rebuilt process with a userfaultfd in MISSING mode and sends the fd
//! here. The server answers each fault with the fault's whole page run
//! (≤ 64 KiB, checksum-verified on first use) by UFFDIO_COPY straight from
//! a mapping of pages.img, pages the image has no data for with
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

use crate::uffd::{send_fd, Fill, Mapped, Msg, Uffd};
use cryo_image::{lazy, run_kind, Image, PageRun, PAGE_SIZE};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Instant;

const PG: u64 = PAGE_SIZE;
/// Pages a fault brings in (from the faulting page on, within its run).
/// Each page costs ~2 µs of kernel work in UFFDIO_COPY here (allocation
/// and copy), so a fault is kept small; background streaming moves the
/// bulk in large copies. See docs/benchmarks.md.
const FAULT_AROUND: u64 = 1;
/// Largest background copy (bytes): a fault that arrives meanwhile waits
/// for it (and so does the program's exit, for the mmap lock). 64 KiB
/// first, doubling up to this (8 MiB measured 4x slower exits at 1 %).
const MAX_BATCH: u64 = 128 << 10;

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
    /// Check each run's checksum before serving it (off: --no-verify).
    pub verify: bool,
}

/// One DATA run of a lazy mapping, as the server tracks it.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    addr: u64,
    npages: u32,
    /// Offset in pages.img.
    off: u64,
    /// Index of the page run whose checksum covers it.
    run: u32,
    /// Bit i: page i still has to come from the image.
    pending: u32,
}

/// One address space being served (the restored process, or a child it
/// forked before every page was in).
struct Space {
    uffd: Uffd,
    chunks: Vec<Chunk>,
    pending_pages: u64,
    root: bool,
    cursor: usize,
}

impl Space {
    /// Index of the chunk holding page `addr`.
    fn find(&self, addr: u64) -> Option<usize> {
        let i = self
            .chunks
            .partition_point(|c| c.addr + c.npages as u64 * PG <= addr);
        (i < self.chunks.len() && self.chunks[i].addr <= addr).then_some(i)
    }

    /// The program dropped [start, end): never fill it from the image.
    fn drop_range(&mut self, start: u64, end: u64) {
        let i0 = self
            .chunks
            .partition_point(|c| c.addr + c.npages as u64 * PG <= start);
        for c in &mut self.chunks[i0..] {
            if c.addr >= end {
                break;
            }
            let mut mask = 0u32;
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                if a >= start && a < end {
                    mask |= 1 << p;
                }
            }
            self.pending_pages -= (c.pending & mask).count_ones() as u64;
            c.pending &= !mask;
        }
    }

    /// mremap moved [from, from+len) to `to`.
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        // Anything tracked at the destination was unmapped first.
        self.drop_range(to, to + len);
        let end = from + len;
        let mut out = Vec::with_capacity(self.chunks.len() + 2);
        for c in self.chunks.drain(..) {
            let cend = c.addr + c.npages as u64 * PG;
            if cend <= from || c.addr >= end {
                out.push(c);
                continue;
            }
            // Split at from and end; move the middle.
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                let inside = a >= from && a < end;
                let na = if inside { a - from + to } else { a };
                let bit = (c.pending >> p) & 1;
                let piece = Chunk {
                    addr: na,
                    npages: 1,
                    off: c.off + p as u64 * PG,
                    run: c.run,
                    pending: bit,
                };
                // Re-join with the previous piece when still contiguous.
                match out.last_mut() {
                    Some(l)
                        if l.run == c.run
                            && l.addr + l.npages as u64 * PG == na
                            && l.off + l.npages as u64 * PG == piece.off
                            && l.npages < 32 =>
                    {
                        l.pending |= bit << l.npages;
                        l.npages += 1;
                    }
                    _ => out.push(piece),
                }
            }
        }
        out.sort_by_key(|c| c.addr);
        self.chunks = out;
        self.cursor = 0;
    }
}

#[derive(Default)]
struct Stats {
    faults: u64,
    zero_faults: u64,
    fault_pages: u64,
    background_pages: u64,
    prefetch_pages: u64,
    prefetch_copies: u64,
    forks: u64,
    /// Runs checksummed, and the time spent on it.
    verified_runs: u64,
    verify_ns: u64,
    removes: u64,
    remaps: u64,
    unmaps: u64,
    /// Service time of each data fault (ns), from reading it to its copy.
    service_ns: Vec<u32>,
}

enum Outcome {
    Done,
    /// The kernel refused a fill (errno): cannot go on correctly.
    Failed(i32),
    /// Events must be read first.
    Again,
    Gone,
}

struct Server<'a> {
    img: Image<'a>,
    pages: Mapped,
    file: std::fs::File,
    buf: Vec<u8>,
    /// Per page run: checksum verified.
    verified: Vec<bool>,
    spaces: Vec<Space>,
    keeper: RawFd,
    stats: Stats,
    /// Pages faulted in, in first-touch order (root space).
    touched: Vec<u64>,
    recording: bool,
}

/// Fatal: the server cannot serve correct pages.
#[derive(Debug)]
struct Fatal(String);

impl<'a> Server<'a> {
    fn verify(&mut self, run: u32) -> Result<(), Fatal> {
        if self.verified[run as usize] {
            return Ok(());
        }
        let r: PageRun = self.img.page_runs().get(run as usize).expect("valid run");
        let t = Instant::now();
        // pread into a warm buffer: hashing through the mapping would
        // take a page fault per 4 KiB of pages.img (measured 3x slower).
        self.buf.resize(r.len() as usize, 0);
        let ok = std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut self.buf, r.offset)
            .is_ok()
            && cryo_image::checksum(&self.buf) == r.checksum;
        if !ok {
            return Err(Fatal(format!(
                "pages.img is corrupt: the run at {:#x} ({} pages) fails its checksum",
                r.vaddr, r.npages
            )));
        }
        self.verified[run as usize] = true;
        self.stats.verify_ns += t.elapsed().as_nanos() as u64;
        self.stats.verified_runs += 1;
        Ok(())
    }

    /// Fill the pending pages of chunks `range` of space `s`, coalescing
    /// neighbours that are contiguous in memory and in pages.img.
    fn fill_chunks(
        &mut self,
        s: usize,
        range: std::ops::Range<usize>,
        count: &mut u64,
    ) -> Result<Outcome, Fatal> {
        self.fill_window(s, range, (0, u64::MAX), count)
    }

    /// fill_chunks, limited to pages in [lo, hi).
    fn fill_window(
        &mut self,
        s: usize,
        range: std::ops::Range<usize>,
        (lo, hi): (u64, u64),
        count: &mut u64,
    ) -> Result<Outcome, Fatal> {
        let want = |c: &Chunk| -> u32 {
            let mut m = c.pending;
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                if a < lo || a >= hi {
                    m &= !(1 << p);
                }
            }
            m
        };
        for i in range.clone() {
            let c = self.spaces[s].chunks[i];
            if c.pending != 0 {
                self.verify(c.run)?;
            }
        }
        let mut i = range.start;
        while i < range.end {
            // Next pending page run: (chunk, page) .. contiguous end.
            let c = self.spaces[s].chunks[i];
            let m = want(&c);
            if m == 0 {
                i += 1;
                continue;
            }
            let p0 = m.trailing_zeros();
            let dst = c.addr + p0 as u64 * PG;
            let src = c.off + p0 as u64 * PG;
            // Extend across pending pages of this and following chunks.
            let mut len = 0u64;
            let mut j = i;
            let mut p = p0;
            loop {
                let cj = self.spaces[s].chunks[j];
                let contiguous =
                    cj.addr + p as u64 * PG == dst + len && cj.off + p as u64 * PG == src + len;
                if !contiguous || (want(&cj) >> p) & 1 == 0 {
                    break;
                }
                len += PG;
                p += 1;
                if p == cj.npages {
                    j += 1;
                    p = 0;
                    if j >= range.end {
                        break;
                    }
                }
            }
            let (outcome, done) = self.copy(s, dst, src, len);
            self.clear(s, dst, dst + done);
            *count += done / PG;
            match outcome {
                Outcome::Done => {}
                Outcome::Failed(e) => {
                    return Err(Fatal(format!(
                        "UFFDIO_COPY to {dst:#x}: {}",
                        std::io::Error::from_raw_os_error(e)
                    )))
                }
                other => return Ok(other),
            }
        }
        Ok(Outcome::Done)
    }

    /// Mark [start, end) of space s filled.
    fn clear(&mut self, s: usize, start: u64, end: u64) {
        if end > start {
            self.spaces[s].drop_range(start, end);
        }
    }

    /// UFFDIO_COPY with the kernel's partial results handled. Returns the
    /// outcome and how many bytes from `dst` on are now present.
    fn copy(&mut self, s: usize, dst: u64, src: u64, len: u64) -> (Outcome, u64) {
        let mut done = 0u64;
        while done < len {
            let Some(bytes) = self.pages.get(src + done, len - done) else {
                return (Outcome::Gone, done);
            };
            let (f, n) = self.spaces[s]
                .uffd
                .copy(dst + done, bytes.as_ptr(), len - done);
            match f {
                Fill::Done => return (Outcome::Done, len),
                Fill::Again if n > 0 => done += n,
                Fill::Again => return (Outcome::Again, done),
                // Already there (the program's own page, or raced): skip it.
                Fill::Exists => {
                    self.spaces[s].uffd.wake(dst + done, PG);
                    done += PG;
                }
                Fill::NoVma => done += PG,
                Fill::Gone => return (Outcome::Gone, done),
                Fill::Failed(e) => return (Outcome::Failed(e), done),
            }
        }
        (Outcome::Done, done)
    }

    /// Serve one fault. Returns Again if it must be retried after events.
    fn fault(&mut self, s: usize, addr: u64) -> Result<Outcome, Fatal> {
        let page = addr & !(PG - 1);
        let t = Instant::now();
        let sp = &self.spaces[s];
        match sp.find(page) {
            Some(i) if (sp.chunks[i].pending >> ((page - sp.chunks[i].addr) / PG)) & 1 != 0 => {
                let mut n = 0;
                let win = (page, page + FAULT_AROUND * PG);
                let o = self.fill_window(s, i..i + 1, win, &mut n)?;
                if matches!(o, Outcome::Done) {
                    self.stats.faults += 1;
                    self.stats.fault_pages += n;
                    let ns = t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                    self.stats.service_ns.push(ns);
                    if self.recording && self.spaces[s].root {
                        self.touched.push(page);
                    }
                }
                Ok(o)
            }
            _ => {
                // No data in the image, or dropped by the program: zeros.
                let (f, _) = self.spaces[s].uffd.zero(page, PG);
                Ok(match f {
                    Fill::Done => {
                        self.stats.zero_faults += 1;
                        Outcome::Done
                    }
                    Fill::Exists | Fill::NoVma => {
                        self.spaces[s].uffd.wake(page, PG);
                        Outcome::Done
                    }
                    Fill::Again => Outcome::Again,
                    Fill::Gone => Outcome::Gone,
                    Fill::Failed(e) => {
                        return Err(Fatal(format!(
                            "UFFDIO_ZEROPAGE at {page:#x}: {}",
                            std::io::Error::from_raw_os_error(e)
                        )))
                    }
                })
            }
        }
    }

    /// Read and handle everything waiting on space `s`. Events first, then
    /// faults (a fault is answered with the state after the events).
    /// Returns false if the space is gone.
    fn pump(&mut self, s: usize) -> Result<bool, Fatal> {
        let mut retry: Vec<u64> = Vec::new();
        for _round in 0..1000 {
            let mut msgs = Vec::new();
            if self.spaces[s].uffd.read_msgs(&mut msgs).is_err() {
                return Ok(false);
            }
            if msgs.is_empty() && retry.is_empty() {
                return Ok(true);
            }
            for m in &msgs {
                match *m {
                    Msg::Remove { start, end } => {
                        self.stats.removes += 1;
                        self.spaces[s].drop_range(start, end);
                    }
                    Msg::Unmap { start, end } => {
                        self.stats.unmaps += 1;
                        self.spaces[s].drop_range(start, end);
                    }
                    Msg::Remap { from, to, len } => {
                        self.stats.remaps += 1;
                        self.spaces[s].remap(from, to, len);
                    }
                    Msg::Fork { ufd } => {
                        self.stats.forks += 1;
                        // Keep the child's uffd alive past our death too.
                        let _ = send_fd(self.keeper, ufd);
                        let parent = &self.spaces[s];
                        let child = Space {
                            uffd: Uffd::adopt(ufd),
                            chunks: parent.chunks.clone(),
                            pending_pages: parent.pending_pages,
                            root: false,
                            cursor: 0,
                        };
                        self.spaces.push(child);
                    }
                    Msg::Fault { addr } => retry.push(addr),
                    Msg::Other => {}
                }
            }
            let faults = std::mem::take(&mut retry);
            let mut again = false;
            for addr in faults {
                if again {
                    retry.push(addr);
                    continue;
                }
                match self.fault(s, addr)? {
                    Outcome::Done => {}
                    Outcome::Again => {
                        again = true;
                        retry.push(addr);
                    }
                    Outcome::Gone | Outcome::Failed(_) => return Ok(false),
                }
            }
            if retry.is_empty() && msgs.is_empty() {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Pump every space; drop the ones that are gone.
    fn pump_all(&mut self) -> Result<(), Fatal> {
        let mut s = 0;
        while s < self.spaces.len() {
            if self.pump(s)? {
                s += 1;
            } else {
                self.spaces.remove(s);
            }
        }
        Ok(())
    }

    /// Copy the next `budget` bytes of pending pages of space s in the
    /// background. Returns false when the space has nothing left.
    fn stream(&mut self, s: usize, budget: u64) -> Result<bool, Fatal> {
        let sp = &self.spaces[s];
        if sp.pending_pages == 0 {
            return Ok(false);
        }
        let mut i = sp.cursor.min(sp.chunks.len());
        // Skip to the next chunk with work, wrapping once.
        let n = sp.chunks.len();
        let mut scanned = 0;
        while scanned < n && sp.chunks[i % n].pending == 0 {
            i += 1;
            scanned += 1;
        }
        if scanned == n {
            return Ok(false);
        }
        let start = i % n;
        let mut end = start;
        let mut bytes = 0u64;
        while end < n && bytes < budget {
            bytes += sp.chunks[end].pending.count_ones() as u64 * PG;
            end += 1;
        }
        let mut count = 0;
        match self.fill_chunks(s, start..end, &mut count)? {
            Outcome::Done => self.spaces[s].cursor = end,
            Outcome::Again => {}
            Outcome::Gone | Outcome::Failed(_) => {
                self.spaces.remove(s);
                return Ok(false);
            }
        }
        self.stats.background_pages += count;
        Ok(true)
    }

    /// Copy the recorded working set (page addresses) before the program
    /// resumes: sorted, and each stretch of adjacent pages one copy.
    fn prefetch(&mut self, addrs: &[u64]) -> Result<(), Fatal> {
        let mut pages: Vec<u64> = addrs.iter().map(|a| a & !(PG - 1)).collect();
        pages.sort_unstable();
        pages.dedup();
        let mut k = 0;
        while k < pages.len() {
            let mut e = k + 1;
            while e < pages.len() && pages[e] == pages[e - 1] + PG {
                e += 1;
            }
            let (lo, hi) = (pages[k], pages[e - 1] + PG);
            k = e;
            let (Some(a), Some(b)) = (self.spaces[0].find(lo), self.spaces[0].find(hi - PG)) else {
                continue;
            };
            let mut count = 0;
            while let Outcome::Again = self.fill_window(0, a..b + 1, (lo, hi), &mut count)? {
                self.pump_all()?;
            }
            self.stats.prefetch_pages += count;
            self.stats.prefetch_copies += 1;
        }
        Ok(())
    }
}

/// Build the root space's chunks from the image.
fn chunks_of(img: &Image) -> Vec<Chunk> {
    let (lo, hi) = lazy::eager_window(&img.process());
    // Sized up front: a 4 GiB heap has 65 536 runs, and growing the vector
    // by doubling would copy it over and over into fresh memory.
    let runs: u32 = img.vmas().iter().filter(lazy::is_lazy).map(|v| v.run_count).sum();
    let mut out = Vec::with_capacity(runs as usize);
    for v in img.vmas().iter().filter(lazy::is_lazy) {
        for j in v.first_run..v.first_run + v.run_count {
            let Some(r) = img.page_runs().get(j as usize) else {
                continue;
            };
            if r.kind != run_kind::DATA {
                continue;
            }
            let mut p = 0u32;
            while p < r.npages {
                let n = (r.npages - p).min(cryo_image::RUN_MAX_PAGES);
                let addr = r.vaddr + p as u64 * PG;
                let pending = pending_mask(addr, n, lo, hi);
                out.push(Chunk {
                    addr,
                    npages: n,
                    off: r.offset + p as u64 * PG,
                    run: j,
                    pending,
                });
                p += n;
            }
        }
    }
    out
}

/// Bits of the `n` (≤ 32) pages from `addr` that lie outside [lo, hi)
/// (the eager window, which the shim filled).
fn pending_mask(addr: u64, n: u32, lo: u64, hi: u64) -> u32 {
    let bits = |k: u32| if k >= 32 { u32::MAX } else { (1u32 << k) - 1 };
    let end = addr + n as u64 * PG;
    if end <= lo || addr >= hi {
        return bits(n);
    }
    let k0 = lo.saturating_sub(addr).div_ceil(PG) as u32;
    let k1 = (hi.min(end) - addr).div_ceil(PG) as u32;
    bits(n) & !(bits(k1 - k0) << k0)
}

/// Pages the page server has to bring in for this image (for messages).
pub fn lazy_pages(img: &Image) -> u64 {
    chunks_of(img)
        .iter()
        .map(|c| c.pending.count_ones() as u64)
        .sum()
}

fn say(msg: &str) {
    let m = format!("cryo page server: {msg}\n");
    // SAFETY: write from a buffer we own.
    unsafe { libc::write(2, m.as_ptr() as *const libc::c_void, m.len()) };
}

/// The page server process: receive the uffd on `sock`, prefetch, say go,
/// serve. `keeper` holds fork children's uffds. `target` is the restored
/// process. Returns the exit status (0: every page in, or the program
/// gone).
pub fn run(
    img: Image,
    pages_path: &std::path::Path,
    cfg: &Config,
    sock: RawFd,
    keeper: RawFd,
    target: i32,
) -> i32 {
    match serve(img, pages_path, cfg, sock, keeper, target) {
        Ok(()) => 0,
        Err(Fatal(m)) => {
            say(&m);
            1
        }
    }
}

fn serve(
    img: Image,
    pages_path: &std::path::Path,
    cfg: &Config,
    sock: RawFd,
    keeper: RawFd,
    target: i32,
) -> Result<(), Fatal> {
    let file = std::fs::File::open(pages_path)
        .map_err(|e| Fatal(format!("opening {}: {e}", pages_path.display())))?;
    let pages = Mapped::open(&file, img.header.pages_len)
        .map_err(|e| Fatal(format!("mapping {}: {e}", pages_path.display())))?;
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, target, 0) } as i32;
    let uffd = match Uffd::recv(sock) {
        Ok(Some(u)) => u,
        // The shim failed before the hand-off (it said why).
        Ok(None) => return Ok(()),
        Err(e) => return Err(Fatal(format!("receiving the userfaultfd: {e}"))),
    };
    let chunks = chunks_of(&img);
    let pending_pages = chunks.iter().map(|c| c.pending.count_ones() as u64).sum();
    let nruns = img.page_runs().len();
    let verified = vec![!cfg.verify; nruns];
    let mut srv = Server {
        img,
        pages,
        file,
        buf: Vec::new(),
        verified,
        spaces: vec![Space {
            uffd,
            chunks,
            pending_pages,
            root: true,
            cursor: 0,
        }],
        keeper,
        stats: Stats::default(),
        touched: Vec::new(),
        recording: cfg.record.is_some(),
    };
    if !cfg.prefetch.is_empty() {
        srv.prefetch(&cfg.prefetch)?;
    }
    // Go: the shim may hand off to the program.
    // SAFETY: write one byte from a local.
    unsafe { libc::write(sock, b"G".as_ptr() as *const libc::c_void, 1) };

    let mode = if cfg.record.is_some() {
        Mode::OnDemand
    } else {
        cfg.mode
    };
    let mut budget: u64 = 64 << 10;
    let mut root_alive = true;
    loop {
        srv.pump_all()?;
        if srv.spaces.is_empty() {
            break;
        }
        let streaming = mode == Mode::Background || !root_alive;
        if streaming {
            // Faults first: only stream when nothing waits.
            let mut any = false;
            let mut s = 0;
            while s < srv.spaces.len() {
                if srv.stream(s, budget)? {
                    any = true;
                }
                s += 1;
            }
            budget = (budget * 2).min(MAX_BATCH);
            if !any {
                break; // every page of every space is in
            }
            continue;
        }
        // On demand: sleep until a fault, an event or the program's exit.
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
        // SAFETY: poll over an array we own.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
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
                if !srv.spaces[s].root {
                    srv.stream(s, PG)?;
                }
                s += 1;
            }
        }
    }
    if let Some(path) = &cfg.record {
        write_working_set(path, cfg.image_id, &srv.touched)
            .map_err(|e| Fatal(format!("writing {}: {e}", path.display())))?;
    }
    if let Some(path) = &cfg.stats {
        let _ = std::fs::write(path, stats_json(&mut srv.stats));
    }
    Ok(())
}

fn stats_json(st: &mut Stats) -> String {
    st.service_ns.sort_unstable();
    let q = |f: f64| -> u64 {
        if st.service_ns.is_empty() {
            0
        } else {
            st.service_ns[((st.service_ns.len() - 1) as f64 * f) as usize] as u64
        }
    };
    format!(
        "{{\"faults\":{},\"zero_faults\":{},\"fault_pages\":{},\"background_pages\":{},\"prefetch_pages\":{},\"prefetch_copies\":{},\"forks\":{},\"removes\":{},\"unmaps\":{},\"remaps\":{},\"verified_runs\":{},\"verify_ns\":{},\"fault_service_ns_p10\":{},\"fault_service_ns_median\":{},\"fault_service_ns_p90\":{}}}\n",
        st.faults,
        st.zero_faults,
        st.fault_pages,
        st.background_pages,
        st.prefetch_pages,
        st.prefetch_copies,
        st.forks,
        st.removes,
        st.unmaps,
        st.remaps,
        st.verified_runs,
        st.verify_ns,
        q(0.1),
        q(0.5),
        q(0.9)
    )
}

/// Name of the working-set file inside an image directory.
pub const WORKING_SET_FILE: &str = "working-set";
const WS_MAGIC: &[u8; 8] = b"CRYOWSET";

/// Working set file: magic, image id (xxh3 of meta.img), count, the page
/// addresses in first-touch order, xxh3 of all of that.
fn write_working_set(path: &std::path::Path, image_id: u64, addrs: &[u64]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut b = Vec::with_capacity(32 + addrs.len() * 8);
    b.extend_from_slice(WS_MAGIC);
    b.extend_from_slice(&image_id.to_le_bytes());
    b.extend_from_slice(&(addrs.len() as u64).to_le_bytes());
    for a in addrs {
        b.extend_from_slice(&a.to_le_bytes());
    }
    let sum = cryo_image::checksum(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Read a working set recorded for the image `image_id`. Ok(None): no
/// file. Err: a file that is not a working set of this image.
pub fn read_working_set(path: &std::path::Path, image_id: u64) -> Result<Option<Vec<u64>>, String> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = |why: &str| Err(format!("{}: {why}", path.display()));
    if b.len() < 32 || &b[..8] != WS_MAGIC {
        return bad("not a cryo working-set file");
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if cryo_image::checksum(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return bad("checksum mismatch (corrupt)");
    }
    let u = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
    if u(8) != image_id {
        return bad("recorded for a different image");
    }
    let n = u(16) as usize;
    if body.len() != 24 + n * 8 {
        return bad("truncated");
    }
    Ok(Some((0..n).map(|i| u(24 + i * 8)).collect()))
}

/// Used by `cryo restore` before exec: a socketpair for the shim and the
/// server (SOCK_SEQPACKET keeps the two fd messages apart).
pub fn socketpair() -> std::io::Result<(RawFd, RawFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two fds into sv.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok((sv[0], sv[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(chunks: Vec<Chunk>) -> Space {
        let f = std::fs::File::open("/dev/null").expect("/dev/null");
        let pending_pages = chunks.iter().map(|c| c.pending.count_ones() as u64).sum();
        Space {
            uffd: Uffd(f.into()),
            chunks,
            pending_pages,
            root: true,
            cursor: 0,
        }
    }

    fn chunk(addr: u64, npages: u32, off: u64) -> Chunk {
        Chunk {
            addr,
            npages,
            off,
            run: 0,
            pending: (1u32 << npages) - 1,
        }
    }

    #[test]
    fn pending_mask_excludes_exactly_the_window() {
        let base = 0x7000_0000u64;
        for n in [1u32, 5, 16, 31, 32] {
            for lo_p in 0..40u64 {
                for len_p in [1u64, 3, 17, 40] {
                    let (lo, hi) = (base + lo_p * PG, base + (lo_p + len_p) * PG);
                    let naive = (0..n).fold(0u32, |m, k| {
                        let a = base + 4 * PG + k as u64 * PG;
                        if (lo..hi).contains(&a) { m } else { m | 1 << k }
                    });
                    assert_eq!(
                        pending_mask(base + 4 * PG, n, lo, hi),
                        naive,
                        "n {n} window pages {lo_p}+{len_p}"
                    );
                }
            }
        }
    }

    #[test]
    fn dropped_pages_are_never_pending_again() {
        let mut s = space(vec![chunk(0x10000, 16, 0), chunk(0x20000, 16, 0x10000)]);
        assert_eq!(s.pending_pages, 32);
        // Drop the last 2 pages of the first chunk and the first of the second.
        s.drop_range(0x1e000, 0x21000);
        assert_eq!(s.pending_pages, 29);
        assert_eq!(s.chunks[0].pending, 0x3fff);
        assert_eq!(s.chunks[1].pending, 0xfffe);
        assert_eq!(s.find(0x1f000), Some(0));
        assert_eq!(s.find(0x30000), None);
    }

    #[test]
    fn remap_moves_pending_pages_with_their_data() {
        let mut s = space(vec![chunk(0x10000, 16, 0)]);
        // Page 0 is dropped before the move.
        s.drop_range(0x10000, 0x11000);
        // Move pages 4..8 to 0x90000.
        s.remap(0x14000, 0x90000, 0x4000);
        assert_eq!(s.pending_pages, 15);
        let i = s.find(0x91000).expect("moved page tracked");
        let c = s.chunks[i];
        // Page 0x91000 is the old page 5: its data is at offset 5 pages.
        assert_eq!(c.off + (0x91000 - c.addr), 5 * PG);
        assert_eq!((c.pending >> ((0x91000 - c.addr) / PG)) & 1, 1);
        assert_eq!(s.find(0x15000), None, "nothing left at the old place");
        let j = s.find(0x10000).expect("page 0 still tracked");
        assert_eq!(s.chunks[j].pending & 1, 0, "page 0 stays dropped");
        assert!(s.chunks.windows(2).all(|w| w[0].addr < w[1].addr), "sorted");
    }
}
