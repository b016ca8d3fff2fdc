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

use crate::uffd::{send_fd, Fill, Mapped, Msg, Uffd};
use cryo_image::{lazy, run_kind, Image, PageRun, PAGE_SIZE, SUMS_PER_BLOCK};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
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

/// A DATA piece of a lazy mapping that the program moved with mremap: its
/// pages live at a new address, tracked explicitly.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    addr: u64,
    npages: u32,
    /// Offset in pages.img.
    off: u64,
    /// Bit i: page i still has to come from the image.
    pending: u32,
}

/// What the image says about lazy memory, shared by every space: nothing
/// here is built per page run, so the server is ready (and the program
/// resumes) in a time that does not grow with the image (a table of the
/// 65 536 runs that format 1 split a 4 GiB heap into cost 2.1 ms before
/// the go-ahead).
struct Layout<'a> {
    img: Image<'a>,
    /// Lazy mappings in address order: (start, end, first run, end run).
    vmas: Vec<(u64, u64, u32, u32)>,
    /// Per lazy mapping (same order), the part the shim fills eagerly
    /// (`lazy::eager_in`: the threads' stack windows), never pending;
    /// (0, 0) if none.
    windows: Vec<(u64, u64)>,
}

impl<'a> Layout<'a> {
    fn new(img: Image<'a>) -> Layout<'a> {
        let vmas = img
            .vmas()
            .iter()
            .filter(lazy::is_lazy)
            .map(|v| (v.start, v.end, v.first_run, v.first_run + v.run_count))
            .collect();
        let windows = img
            .vmas()
            .iter()
            .filter(lazy::is_lazy)
            .map(|v| lazy::eager_in(&img, v.start, v.end).unwrap_or((0, 0)))
            .collect();
        Layout { img, vmas, windows }
    }

    /// Is `a` in the part of its lazy mapping the shim fills?
    fn in_window(&self, a: u64) -> bool {
        let i = self.vmas.partition_point(|v| v.1 <= a);
        self.windows
            .get(i)
            .is_some_and(|&(lo, hi)| (lo..hi).contains(&a))
    }

    /// Is `a` the first page of a lazy mapping?
    fn starts_mapping(&self, a: u64) -> bool {
        self.vmas.binary_search_by_key(&a, |v| v.0).is_ok()
    }

    /// The DATA runs of lazy mappings that overlap [lo, hi), in order.
    fn runs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u32, PageRun)> + '_ {
        let runs = self.img.page_runs();
        let v0 = self.vmas.partition_point(|v| v.1 <= lo);
        self.vmas[v0..]
            .iter()
            .take_while(move |v| v.0 < hi)
            .flat_map(move |&(_, _, first, end)| {
                // First run of the mapping that ends after lo.
                let (mut a, mut b) = (first, end);
                while a < b {
                    let m = a + (b - a) / 2;
                    match runs.get(m as usize) {
                        Some(r) if r.vaddr + r.len() <= lo => a = m + 1,
                        _ => b = m,
                    }
                }
                (a..end)
                    .map_while(move |j| runs.get(j as usize).map(|r| (j, r)))
                    .take_while(move |(_, r)| r.vaddr < hi)
                    .filter(|(_, r)| r.kind == run_kind::DATA)
            })
    }
}

/// One bit per page of pages.img, all clear at first (allocated zeroed,
/// so untouched parts cost nothing).
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| (w >> (i % 64)) & 1 != 0)
    }
    fn set(&mut self, i: u64) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }
}

/// A stretch of pending pages, contiguous in memory and in pages.img.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    dst: u64,
    src: u64,
    len: u64,
    /// A piece of `moved` (else of the image's own layout).
    moved: bool,
}

/// One address space being served (the restored process, or a child it
/// forked before every page was in). A page of the image's layout is
/// pending unless it is in the eager window or `done` has its pages.img
/// page: filled, dropped by the program, or moved away (into `moved`).
struct Space {
    uffd: Uffd,
    done: Bits,
    moved: Vec<Chunk>,
    root: bool,
    /// Background streaming: every layout page below this is done.
    cursor: u64,
    /// Faults read but not answered yet: the kernel refused the fill with
    /// EAGAIN (an event's producer has not finished it). They are never
    /// dropped: nothing would ask for them again.
    retry: Vec<u64>,
}

impl Space {
    fn new(uffd: Uffd, l: &Layout, root: bool) -> Space {
        Space {
            uffd,
            done: Bits::new(l.img.header.pages_len / PG),
            moved: Vec::new(),
            root,
            cursor: 0,
            retry: Vec::new(),
        }
    }

    /// Whether the page at `page` still has to come from the image.
    fn is_pending(&self, l: &Layout, page: u64) -> bool {
        if let Some(c) = self.moved_at(page) {
            return (c.pending >> ((page - c.addr) / PG)) & 1 != 0;
        }
        l.runs_in(page, page + PG)
            .next()
            .is_some_and(|(_, r)| self.layout_pending(l, page, r.offset + (page - r.vaddr)))
    }

    /// Whether the layout's page at `a` (pages.img offset `src`) is still
    /// to be filled: not in the eager window, not done.
    fn layout_pending(&self, l: &Layout, a: u64, src: u64) -> bool {
        !l.in_window(a) && !self.done.get(src / PG)
    }

    fn moved_at(&self, page: u64) -> Option<&Chunk> {
        let i = self
            .moved
            .partition_point(|c| c.addr + c.npages as u64 * PG <= page);
        self.moved.get(i).filter(|c| c.addr <= page)
    }

    /// The pending pages in [lo, hi) as pieces (in address order within
    /// moved and within the layout).
    fn pieces(&self, l: &Layout, lo: u64, hi: u64) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        let push = |out: &mut Vec<Piece>, dst: u64, src: u64, moved: bool| match out.last_mut() {
            Some(p) if p.moved == moved && p.dst + p.len == dst && p.src + p.len == src => {
                p.len += PG
            }
            _ => out.push(Piece {
                dst,
                src,
                len: PG,
                moved,
            }),
        };
        let i0 = self
            .moved
            .partition_point(|c| c.addr + c.npages as u64 * PG <= lo);
        for c in self.moved[i0..].iter().take_while(|c| c.addr < hi) {
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                if a >= lo && a < hi && (c.pending >> p) & 1 != 0 {
                    push(&mut out, a, c.off + p as u64 * PG, true);
                }
            }
        }
        for (_, r) in l.runs_in(lo, hi) {
            let a0 = r.vaddr.max(lo);
            let a1 = (r.vaddr + r.len()).min(hi);
            let mut a = a0;
            while a < a1 {
                let src = r.offset + (a - r.vaddr);
                if self.layout_pending(l, a, src) && self.moved_at(a).is_none() {
                    // A piece never spans two mappings: the kernel refuses
                    // such a copy.
                    if l.starts_mapping(a) {
                        out.push(Piece {
                            dst: a,
                            src,
                            len: PG,
                            moved: false,
                        });
                    } else {
                        push(&mut out, a, src, false);
                    }
                }
                a += PG;
            }
        }
        out
    }

    /// The program dropped [start, end) (or it was filled): never fill it
    /// from the image again.
    fn drop_range(&mut self, l: &Layout, start: u64, end: u64) {
        for (_, r) in l.runs_in(start, end) {
            let a0 = r.vaddr.max(start);
            let a1 = (r.vaddr + r.len()).min(end);
            let mut a = a0;
            while a < a1 {
                self.done.set((r.offset + (a - r.vaddr)) / PG);
                a += PG;
            }
        }
        let i0 = self
            .moved
            .partition_point(|c| c.addr + c.npages as u64 * PG <= start);
        for c in &mut self.moved[i0..] {
            if c.addr >= end {
                break;
            }
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                if a >= start && a < end {
                    c.pending &= !(1 << p);
                }
            }
        }
    }

    /// mremap moved [from, from+len) to `to`: the pending pages there go
    /// with it (into `moved`); anything at the destination was unmapped.
    fn remap(&mut self, l: &Layout, from: u64, to: u64, len: u64) {
        self.drop_range(l, to, to + len);
        let end = from + len;
        let mut out: Vec<Chunk> = Vec::with_capacity(self.moved.len() + 2);
        let add = |out: &mut Vec<Chunk>, addr: u64, off: u64, bit: u32| match out.last_mut() {
            Some(c)
                if c.addr + c.npages as u64 * PG == addr
                    && c.off + c.npages as u64 * PG == off
                    && c.npages < 32 =>
            {
                c.pending |= bit << c.npages;
                c.npages += 1;
            }
            _ => out.push(Chunk {
                addr,
                npages: 1,
                off,
                pending: bit,
            }),
        };
        // Pieces already moved: shift what lies inside the range.
        for c in std::mem::take(&mut self.moved) {
            let cend = c.addr + c.npages as u64 * PG;
            if cend <= from || c.addr >= end {
                out.push(c);
                continue;
            }
            for p in 0..c.npages {
                let a = c.addr + p as u64 * PG;
                let na = if a >= from && a < end {
                    a - from + to
                } else {
                    a
                };
                add(&mut out, na, c.off + p as u64 * PG, (c.pending >> p) & 1);
            }
        }
        // Pending pages of the layout in the range leave it.
        let taken: Vec<(u64, u64)> = {
            let mut v = Vec::new();
            for (_, r) in l.runs_in(from, end) {
                let mut a = r.vaddr.max(from);
                while a < (r.vaddr + r.len()).min(end) {
                    let src = r.offset + (a - r.vaddr);
                    if self.layout_pending(l, a, src) {
                        v.push((a, src));
                    }
                    a += PG;
                }
            }
            v
        };
        for (a, src) in taken {
            self.done.set(src / PG);
            add(&mut out, a - from + to, src, 1);
        }
        out.sort_by_key(|c| c.addr);
        self.moved = out;
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
    /// Pages checksummed (and sums.img blocks), and the time spent on it.
    verified_pages: u64,
    verified_blocks: u64,
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
    layout: Layout<'a>,
    pages: Mapped,
    /// sums.img: the checksum of each page of pages.img.
    sums: Mapped,
    /// Per block of sums.img: checked against meta.img.
    block_ok: Bits,
    /// Per page of pages.img: checked against its checksum.
    page_ok: Bits,
    /// Per page of pages.img: mapped in the server (populated).
    mapped: Bits,
    /// Where in pages.img the last piece served ended: a piece that starts
    /// there is the next of a sequential scan.
    last_end: u64,
    /// Check each page's checksum before serving it.
    verify: bool,
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
    /// Make pages.img's [src, src+len) (to be copied to `dst`) ready to
    /// serve: mapped in one call, and each page checked against its
    /// checksum in sums.img the first time it is served.
    fn ready(&mut self, dst: u64, src: u64, len: u64) -> Result<(), Fatal> {
        // Populated first: UFFDIO_COPY (and hashing) from an unpopulated
        // file mapping takes a page fault per 4 KiB, several µs each here.
        let (p0, p1) = (src / PG, (src + len) / PG);
        if (p0..p1).any(|p| !self.mapped.get(p)) {
            let ahead = if src == self.last_end { MAP_AHEAD } else { 0 };
            let end = (src + len.max(ahead)).min(self.pages.bytes().len() as u64);
            self.pages.populate(src, end - src);
            (p0..end / PG).for_each(|p| self.mapped.set(p));
        }
        self.last_end = src + len;
        if !self.verify {
            return Ok(());
        }
        let t = Instant::now();
        let mut off = src;
        while off < src + len {
            let i = off / PG;
            if !self.page_ok.get(i) {
                let k = i / SUMS_PER_BLOCK;
                let block = cryo_image::sums_block(self.sums.bytes(), k);
                if !self.block_ok.get(k) {
                    let ok = self
                        .layout
                        .img
                        .page_sums()
                        .get(k as usize)
                        .is_some_and(|b| cryo_image::sum_block_ok(&b, block));
                    if !ok {
                        return Err(Fatal(format!(
                            "sums.img is corrupt: block {k} fails its checksum"
                        )));
                    }
                    self.block_ok.set(k);
                    self.stats.verified_blocks += 1;
                }
                let ok = self
                    .pages
                    .get(off, PG)
                    .zip(cryo_image::page_sum(block, i % SUMS_PER_BLOCK))
                    .is_some_and(|(b, sum)| cryo_image::checksum(b) == sum);
                if !ok {
                    return Err(Fatal(format!(
                        "pages.img is corrupt: the page for {:#x} fails its checksum",
                        dst + (off - src)
                    )));
                }
                self.page_ok.set(i);
                self.stats.verified_pages += 1;
            }
            off += PG;
        }
        self.stats.verify_ns += t.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Fill every pending page of space `s` in [lo, hi), each stretch that
    /// is contiguous in memory and in pages.img with one copy.
    fn fill_range(
        &mut self,
        s: usize,
        lo: u64,
        hi: u64,
        count: &mut u64,
    ) -> Result<Outcome, Fatal> {
        let pieces = self.spaces[s].pieces(&self.layout, lo, hi);
        for p in pieces {
            self.ready(p.dst, p.src, p.len)?;
            let (outcome, done) = self.copy(s, p.dst, p.src, p.len);
            if done > 0 {
                self.spaces[s].drop_range(&self.layout, p.dst, p.dst + done);
            }
            *count += done / PG;
            match outcome {
                Outcome::Done => {}
                Outcome::Failed(e) => {
                    return Err(Fatal(format!(
                        "UFFDIO_COPY to {:#x}: {}",
                        p.dst,
                        std::io::Error::from_raw_os_error(e)
                    )))
                }
                other => return Ok(other),
            }
        }
        Ok(Outcome::Done)
    }

    /// UFFDIO_COPY with the kernel's partial results handled. Returns the
    /// outcome and how many bytes from `dst` on are now present.
    fn copy(&mut self, s: usize, dst: u64, src: u64, len: u64) -> (Outcome, u64) {
        let mut done = 0u64;
        // After ENOENT for a range of pages: one page at a time, because
        // the kernel refuses a copy that crosses from one mapping into the
        // next (adjacent mappings whose pages are adjacent in pages.img),
        // and only a single page tells "not mapped" from "crosses".
        let mut single = false;
        while done < len {
            let want = if single { PG } else { len - done };
            let Some(bytes) = self.pages.get(src + done, want) else {
                return (Outcome::Gone, done);
            };
            let (f, n) = self.spaces[s].uffd.copy(dst + done, bytes.as_ptr(), want);
            match f {
                Fill::Done => {
                    done += want;
                    single = false;
                }
                Fill::Again if n > 0 => done += n,
                Fill::Again => return (Outcome::Again, done),
                // Already there (the program's own page, or raced): skip it.
                Fill::Exists => {
                    self.spaces[s].uffd.wake(dst + done, PG);
                    done += PG;
                }
                Fill::NoVma if want > PG => single = true,
                // This page is not mapped any more (the program unmapped
                // it, and the event is still to be read): nothing to fill.
                Fill::NoVma => {
                    done += PG;
                    single = false;
                }
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
        if self.spaces[s].is_pending(&self.layout, page) {
            let mut n = 0;
            let o = self.fill_range(s, page, page + FAULT_AROUND * PG, &mut n)?;
            if matches!(o, Outcome::Done) {
                self.stats.faults += 1;
                self.stats.fault_pages += n;
                let ns = t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                self.stats.service_ns.push(ns);
                if self.recording && self.spaces[s].root {
                    self.touched.push(page);
                }
            }
            return Ok(o);
        }
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

    /// Read and handle everything waiting on space `s`. Events first, then
    /// faults (a fault is answered with the state after the events).
    /// Returns false if the space is gone. Faults the kernel still refuses
    /// with EAGAIN when no event is left to read stay in `retry`: after a
    /// REMOVE, UNMAP or REMAP event is read, fills fail until the thread
    /// that caused it has run again (the kernel's `mmap_changing`), which
    /// another thread's fault must wait for, not give up on.
    fn pump(&mut self, s: usize) -> Result<bool, Fatal> {
        let mut retry = std::mem::take(&mut self.spaces[s].retry);
        let mut idle_rounds = 0;
        loop {
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
                        self.spaces[s].drop_range(&self.layout, start, end);
                    }
                    Msg::Unmap { start, end } => {
                        self.stats.unmaps += 1;
                        self.spaces[s].drop_range(&self.layout, start, end);
                    }
                    Msg::Remap { from, to, len } => {
                        self.stats.remaps += 1;
                        self.spaces[s].remap(&self.layout, from, to, len);
                    }
                    Msg::Fork { ufd } => {
                        self.stats.forks += 1;
                        // Keep the child's uffd alive past our death too.
                        let _ = send_fd(self.keeper, ufd);
                        let parent = &self.spaces[s];
                        let child = Space {
                            uffd: Uffd::adopt(ufd),
                            done: parent.done.clone(),
                            moved: parent.moved.clone(),
                            root: false,
                            cursor: 0,
                            retry: Vec::new(),
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
            if msgs.is_empty() {
                idle_rounds += 1;
                if idle_rounds >= 64 {
                    // Let the event's thread run; the caller comes back.
                    self.spaces[s].retry = retry;
                    return Ok(true);
                }
            }
        }
    }

    /// Whether some fault waits for a retry.
    fn retry_pending(&self) -> bool {
        self.spaces.iter().any(|sp| !sp.retry.is_empty())
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

    /// Copy about `budget` bytes of pending pages of space s in the
    /// background: moved pieces first, then the layout from the cursor on.
    /// Returns false when the space has nothing left.
    fn stream(&mut self, s: usize, budget: u64) -> Result<bool, Fatal> {
        // The next pending page at or after the cursor (moved pieces are
        // few: any pending one goes first).
        let next = {
            let sp = &self.spaces[s];
            let moved = sp
                .moved
                .iter()
                .find(|c| c.pending != 0)
                .map(|c| c.addr + c.pending.trailing_zeros() as u64 * PG);
            moved.or_else(|| {
                self.layout.runs_in(sp.cursor, u64::MAX).find_map(|(_, r)| {
                    let mut a = r.vaddr.max(sp.cursor);
                    while a < r.vaddr + r.len() {
                        let src = r.offset + (a - r.vaddr);
                        if sp.layout_pending(&self.layout, a, src) && sp.moved_at(a).is_none() {
                            return Some(a);
                        }
                        a += PG;
                    }
                    None
                })
            })
        };
        let Some(start) = next else {
            return Ok(false);
        };
        let end = start.saturating_add(budget);
        let mut count = 0;
        match self.fill_range(s, start, end, &mut count)? {
            Outcome::Done => {
                let sp = &mut self.spaces[s];
                if sp.moved_at(start).is_none() {
                    sp.cursor = end;
                }
            }
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
            let mut count = 0;
            while let Outcome::Again = self.fill_range(0, lo, hi, &mut count)? {
                self.pump_all()?;
            }
            if count > 0 {
                self.stats.prefetch_pages += count;
                self.stats.prefetch_copies += 1;
            }
        }
        Ok(())
    }
}

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
    // SAFETY: write from a buffer we own.
    unsafe { libc::write(2, m.as_ptr() as *const libc::c_void, m.len()) };
}

/// The page server process (`files`: pages.img and sums.img): receive the
/// uffd on `sock`, prefetch, say go,
/// serve. `keeper` holds fork children's uffds. `target` is the restored
/// process. Returns the exit status (0: every page in, or the program
/// gone).
pub fn run(
    img: Image,
    files: (&Path, &Path),
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

fn serve(
    img: Image,
    (pages_path, sums_path): (&Path, &Path),
    cfg: &Config,
    sock: RawFd,
    keeper: RawFd,
    target: i32,
) -> Result<(), Fatal> {
    let map = |path: &Path, len: u64| {
        let file = std::fs::File::open(path)
            .map_err(|e| Fatal(format!("opening {}: {e}", path.display())))?;
        Mapped::open(&file, len).map_err(|e| Fatal(format!("mapping {}: {e}", path.display())))
    };
    let npages = img.header.pages_len / PG;
    // Their lengths were checked by `cryo restore`.
    let pages = map(pages_path, img.header.pages_len)?;
    let sums = map(sums_path, npages * 8)?;
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, target, 0) } as i32;
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
        pages,
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
    };
    if !cfg.prefetch.is_empty() {
        srv.prefetch(&cfg.prefetch)?;
    }
    // Go: the shim may hand off to the program.
    // SAFETY: write one byte from a local.
    unsafe {
        libc::write(
            sock,
            [cryo_image::handoff::GO].as_ptr() as *const libc::c_void,
            1,
        )
    };

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
        if srv.retry_pending() {
            // A fault waits for a thread of the program to finish an
            // event (mmap_changing): let it run, then serve the fault.
            // SAFETY: sched_yield takes no arguments.
            unsafe { libc::sched_yield() };
            continue;
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
        "{{\"faults\":{},\"zero_faults\":{},\"fault_pages\":{},\"background_pages\":{},\"prefetch_pages\":{},\"prefetch_copies\":{},\"forks\":{},\"removes\":{},\"unmaps\":{},\"remaps\":{},\"verified_pages\":{},\"verified_blocks\":{},\"verify_ns\":{},\"fault_service_ns_p10\":{},\"fault_service_ns_median\":{},\"fault_service_ns_p90\":{}}}\n",
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
        st.verified_pages,
        st.verified_blocks,
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
    use cryo_image::write::ImageBuilder;
    use cryo_image::{vma_kind, PageRun, Vma};

    /// An image with one lazy mapping [0x10000, 0x40000): DATA runs of 16
    /// pages at 0x10000 (pages.img offset 0) and 0x20000 (offset 0x10000),
    /// nothing at 0x30000; the eager window far away.
    fn image() -> Vec<u8> {
        let mut b = ImageBuilder::default();
        b.process.regs.rsp = 0x7fff_0000_0000;
        b.vmas.push(Vma {
            start: 0x10000,
            end: 0x40000,
            prot: 3,
            kind: vma_kind::ANON_PRIVATE,
            file: cryo_image::NO_INDEX,
            first_run: 0,
            run_count: 2,
            ..Default::default()
        });
        for (vaddr, offset) in [(0x10000, 0), (0x20000, 0x10000)] {
            b.page_runs.push(PageRun {
                vaddr,
                npages: 16,
                kind: run_kind::DATA,
                offset,
                reserved: 0,
            });
        }
        b.encode(0x20000)
    }

    fn space(l: &Layout) -> Space {
        let f = std::fs::File::open("/dev/null").expect("/dev/null");
        Space::new(Uffd(f.into()), l, true)
    }

    fn pending(s: &Space, l: &Layout) -> u64 {
        s.pieces(l, 0, u64::MAX).iter().map(|p| p.len / PG).sum()
    }

    /// Two adjacent lazy mappings whose pages are adjacent in pages.img
    /// too: a piece (one UFFDIO_COPY) never spans both, because the kernel
    /// refuses such a copy (ENOENT), and the first server then skipped the
    /// first mapping's pages, which the program later read as zeros.
    #[test]
    fn pieces_stop_at_mapping_boundaries() {
        let mut b = ImageBuilder::default();
        b.process.regs.rsp = 0x7fff_0000_0000;
        for (i, start) in [0x10000u64, 0x14000].into_iter().enumerate() {
            b.vmas.push(Vma {
                start,
                end: start + 0x4000,
                prot: 3,
                kind: vma_kind::ANON_PRIVATE,
                file: cryo_image::NO_INDEX,
                first_run: i as u32,
                run_count: 1,
                ..Default::default()
            });
            b.page_runs.push(PageRun {
                vaddr: start,
                npages: 4,
                kind: run_kind::DATA,
                offset: i as u64 * 0x4000,
                reserved: 0,
            });
        }
        let bytes = b.encode(0x8000);
        let l = Layout::new(Image::parse(&bytes).unwrap());
        let s = space(&l);
        let p = s.pieces(&l, 0x10000, 0x18000);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].dst, p[0].len), (0x10000, 4 * PG));
        assert_eq!((p[1].dst, p[1].len), (0x14000, 4 * PG));
    }

    #[test]
    fn layout_finds_runs_without_a_table() {
        let bytes = image();
        let l = Layout::new(Image::parse(&bytes).unwrap());
        let got: Vec<u32> = l.runs_in(0x1f000, 0x21000).map(|(j, _)| j).collect();
        assert_eq!(got, [0, 1]);
        assert_eq!(l.runs_in(0x30000, 0x40000).count(), 0);
        assert_eq!(l.runs_in(0, 0x10000).count(), 0);
        assert_eq!(lazy_pages(&l.img), 32);
    }

    #[test]
    fn dropped_pages_are_never_pending_again() {
        let bytes = image();
        let l = Layout::new(Image::parse(&bytes).unwrap());
        let mut s = space(&l);
        assert_eq!(pending(&s, &l), 32);
        // Drop the last 2 pages of the first run and the first of the second.
        s.drop_range(&l, 0x1e000, 0x21000);
        assert_eq!(pending(&s, &l), 29);
        assert!(s.is_pending(&l, 0x1d000));
        assert!(!s.is_pending(&l, 0x1e000) && !s.is_pending(&l, 0x20000));
        assert!(s.is_pending(&l, 0x21000));
        assert!(!s.is_pending(&l, 0x30000), "no data there");
        // One piece per stretch, contiguous across the two runs' data.
        let p = s.pieces(&l, 0x10000, 0x30000);
        assert_eq!(
            p,
            [
                Piece {
                    dst: 0x10000,
                    src: 0,
                    len: 14 * PG,
                    moved: false
                },
                Piece {
                    dst: 0x21000,
                    src: 0x11000,
                    len: 15 * PG,
                    moved: false
                },
            ]
        );
    }

    #[test]
    fn remap_moves_pending_pages_with_their_data() {
        let bytes = image();
        let l = Layout::new(Image::parse(&bytes).unwrap());
        let mut s = space(&l);
        // Page 0 is dropped before the move.
        s.drop_range(&l, 0x10000, 0x11000);
        // Move pages 4..8 to 0x90000.
        s.remap(&l, 0x14000, 0x90000, 0x4000);
        assert_eq!(pending(&s, &l), 31);
        assert!(s.is_pending(&l, 0x91000), "moved page tracked");
        let c = s.moved_at(0x91000).copied().expect("moved chunk");
        // Page 0x91000 is the old page 5: its data is at offset 5 pages.
        assert_eq!(c.off + (0x91000 - c.addr), 5 * PG);
        assert!(!s.is_pending(&l, 0x15000), "nothing left at the old place");
        assert!(!s.is_pending(&l, 0x10000), "page 0 stays dropped");
        assert!(s.is_pending(&l, 0x18000));
        // Moved back over part of the old range: the data follows again.
        s.remap(&l, 0x90000, 0x12000, 0x2000);
        assert!(s.is_pending(&l, 0x13000));
        let c = s.moved_at(0x13000).copied().expect("moved again");
        assert_eq!(c.off + (0x13000 - c.addr), 5 * PG);
        assert!(s.moved.windows(2).all(|w| w[0].addr < w[1].addr), "sorted");
        // A forked child's state is the parent's.
        let child = Space {
            uffd: Uffd(std::fs::File::open("/dev/null").unwrap().into()),
            done: s.done.clone(),
            moved: s.moved.clone(),
            root: false,
            cursor: 0,
            retry: Vec::new(),
        };
        assert_eq!(pending(&child, &l), pending(&s, &l));
    }
}
