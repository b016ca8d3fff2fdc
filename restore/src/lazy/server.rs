//! The page server's work on its spaces: checking pages before they are
//! served, filling ranges (faults, background streaming, the prefetch of a
//! working set) and reading each space's events and faults.

use super::layout::{Bits, Layout};
use super::second::Second;
use super::space::{Ahead, Space};
use super::stats::Stats;
use super::{Fatal, FAULT_AROUND, MAP_AHEAD, PG, STRIDE_STEP};

/// The most blocks of FAULT_AROUND pages one fault brings in (a power of
/// two): after a run of dense faults, 2 MiB.
const MAX_WINDOW: u64 = 32;
use crate::uffd::{send_fd, Fill, Mapped, Msg, Uffd};
use cryo_image::SUMS_PER_BLOCK;
use std::os::fd::RawFd;
use std::time::Instant;

/// How filling a range went.
pub(super) enum Outcome {
    Done,
    /// The kernel refused a fill (errno): cannot go on correctly.
    Failed(i32),
    /// Events must be read first.
    Again,
    Gone,
}

/// The server's state: the image's pages, what was checked, and every
/// address space being served.
pub(super) struct Server<'a> {
    /// The second streamer, while it runs (`super::second`). First, so
    /// that it is stopped and joined before anything else is dropped.
    pub(super) second: Option<Second>,
    pub(super) layout: Layout<'a>,
    /// pages.img (shared with the second streamer).
    pub(super) pages: std::sync::Arc<Mapped>,
    /// sums.img: the checksum of each page of pages.img.
    pub(super) sums: Mapped,
    /// Per block of sums.img: checked against meta.img.
    pub(super) block_ok: Bits,
    /// Per page of pages.img: checked against its checksum.
    pub(super) page_ok: Bits,
    /// Per page of pages.img: mapped in the server (populated).
    pub(super) mapped: Bits,
    /// Where in pages.img the last piece served ended: a piece that starts
    /// there is the next of a sequential scan.
    pub(super) last_end: u64,
    /// Check each page's checksum before serving it.
    pub(super) verify: bool,
    pub(super) spaces: Vec<Space>,
    pub(super) keeper: RawFd,
    pub(super) stats: Stats,
    /// Pages faulted in, in first-touch order (root space).
    pub(super) touched: Vec<u64>,
    pub(super) recording: bool,
}

/// UFFDIO_COPY of pages.img's [src, src+len) to `dst`, with the kernel's
/// partial results handled. Returns the outcome, how many bytes from
/// `dst` on are now present, and how many of them this call copied (the
/// rest were there already, or not mapped).
pub(super) fn copy_range(
    uffd: &Uffd,
    pages: &Mapped,
    dst: u64,
    src: u64,
    len: u64,
    wake: bool,
) -> (Outcome, u64, u64) {
    let (mut done, mut copied) = (0u64, 0u64);
    // After ENOENT for a range of pages: one page at a time, because
    // the kernel refuses a copy that crosses from one mapping into the
    // next (adjacent mappings whose pages are adjacent in pages.img),
    // and only a single page tells "not mapped" from "crosses".
    let mut single = false;
    while done < len {
        let want = if single { PG } else { len - done };
        let Some(bytes) = pages.get(src + done, want) else {
            return (Outcome::Gone, done, copied);
        };
        let (f, n) = uffd.copy(dst + done, bytes, wake);
        match f {
            Fill::Done => {
                done += want;
                copied += want;
                single = false;
            }
            Fill::Again if n > 0 => {
                done += n;
                copied += n;
            }
            Fill::Again => return (Outcome::Again, done, copied),
            // Already there (the program's own page, or raced): skip it.
            Fill::Exists => {
                uffd.wake(dst + done, PG);
                done += PG;
            }
            Fill::NoVma if want > PG => single = true,
            // This page is not mapped any more (the program unmapped
            // it, and the event is still to be read): nothing to fill.
            Fill::NoVma => {
                done += PG;
                single = false;
            }
            Fill::Gone => return (Outcome::Gone, done, copied),
            Fill::Failed(e) => return (Outcome::Failed(e), done, copied),
        }
    }
    (Outcome::Done, done, copied)
}

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
                            "sums.img is corrupt: block {k} fails its checksum in meta.img (or meta.img is another capture's)"
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
    /// `wake`: wake what waits there at once (the background stream does
    /// not: a fault its copy answers is still read and woken after it, so
    /// the server sees where the program goes even when the stream keeps
    /// just ahead of it).
    fn fill_range(
        &mut self,
        s: usize,
        lo: u64,
        hi: u64,
        count: &mut u64,
        wake: bool,
    ) -> Result<Outcome, Fatal> {
        let pieces = self.spaces[s].pieces(&self.layout, lo, hi);
        for p in pieces {
            self.ready(p.dst, p.src, p.len)?;
            let (outcome, done) = self.copy(s, p.dst, p.src, p.len, wake);
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

    fn copy(&self, s: usize, dst: u64, src: u64, len: u64, wake: bool) -> (Outcome, u64) {
        let (outcome, done, _) = copy_range(&self.spaces[s].uffd, &self.pages, dst, src, len, wake);
        (outcome, done)
    }

    /// Whether the block at `block` has data in the image and none of it
    /// is pending in space `s` any more (brought in whole).
    fn block_done(&self, s: usize, block: u64) -> bool {
        let sp = &self.spaces[s];
        let end = block + FAULT_AROUND * PG;
        let mut any = false;
        let all = self.layout.runs_in(block, end).all(|(_, r)| {
            let (lo, hi) = (r.vaddr.max(block), (r.vaddr + r.len()).min(end));
            any |= lo < hi;
            (lo..hi)
                .step_by(PG as usize)
                .all(|a| !sp.layout_pending(&self.layout, a, r.offset + (a - r.vaddr)))
        });
        any && all
    }

    /// Serve one fault. Returns Again if it must be retried after events.
    fn fault(&mut self, s: usize, addr: u64) -> Result<Outcome, Fatal> {
        let page = addr & !(PG - 1);
        let t = Instant::now();
        // Every fault tells where the program goes, also one whose page a
        // copy brought in since (the stream, running just ahead of a walk
        // it then paces), but a fault in memory the program touches
        // densely (below): that is no walk with a stride, and its faults
        // at the edges of growing windows looked like one, which then
        // kept the detector quiet through a real walk after it.
        if !self.recording && !self.spaces[s].is_pending(&self.layout, page) {
            self.spaces[s].stride.fault(page);
        }
        if self.spaces[s].is_pending(&self.layout, page) {
            let mut n = 0;
            // A fault in a block of FAULT_AROUND pages (64 KiB) where the
            // program faulted before brings in the whole block:
            // it touches this part of memory densely (a fold over a heap
            // then takes ~2 faults per block, not 16). A first fault in a
            // block brings in its page only: a sparse walk copies no page
            // it does not touch. Recording a working set: exactly the
            // pages touched, in order (pages brought in around them would
            // never fault, and never be recorded for the prefetch).
            //
            // Dense faults in a row double a window each time, up to
            // MAX_WINDOW blocks (2 MiB), in the direction the program goes:
            // the fault's own block is answered, the rest of the window is
            // copied after it while the program goes on (`ahead_step`), as
            // the kernel reads a file ahead (a GHC fold over a 17 MiB heap:
            // 318 faults of one block each before). A fault that finds its
            // part of memory untouched starts again at one page.
            let block = page & !(FAULT_AROUND * PG - 1);
            let bytes = FAULT_AROUND * PG;
            // (A neighbour counts only where the program faulted first,
            // or a window of its dense faults opened or went: one the
            // background stream filled says nothing about the program. A
            // sparse walk right behind the stream looked dense, was never
            // followed as a walk, and had 100-210 MiB copied ahead of it
            // by windows: 1 GiB, one word per 64 KiB, 1.3-4.2 s instead
            // of ~0.2.)
            let seen = |b: u64| self.spaces[s].faulted.contains(&b) && self.block_done(s, b);
            let below = block.checked_sub(bytes).is_some_and(seen);
            let above = !below && seen(block + bytes);
            // (A block where the program faulted before: not one where a
            // page is merely in, which the stride follower's copies of a
            // walk that was not quite regular made of every block they
            // touched, each next fault then a block and a window.)
            // (Short-circuit: a block dense by a neighbour is not recorded
            // here, only once its window opens below. A sparse walk level
            // with the stream then takes one dense fault, a block, and
            // starts again at one page: recording every dense fault's
            // block would chain them into windows again.)
            let dense = below || above || !self.spaces[s].faulted.insert(block);
            if !self.recording && !dense {
                self.spaces[s].stride.fault(page);
            }
            let sp = &mut self.spaces[s];
            sp.dense_run = if dense { sp.dense_run + 1 } else { 0 };
            let (lo, hi) = if !self.recording && dense {
                let w = bytes << (sp.dense_run - 1).min(MAX_WINDOW.trailing_zeros());
                if w > bytes {
                    sp.faulted.insert(block);
                    sp.ahead = Some(if above {
                        Ahead {
                            lo: block.saturating_sub(w - bytes),
                            hi: block,
                            down: true,
                        }
                    } else {
                        Ahead {
                            lo: block + bytes,
                            hi: (block + bytes).saturating_add(w - bytes),
                            down: false,
                        }
                    });
                }
                (block, block + bytes)
            } else {
                (page, page + PG)
            };
            let o = self.fill_range(s, lo, hi, &mut n, true)?;
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
                self.zero_around(s, page);
                Outcome::Done
            }
            Fill::Exists | Fill::NoVma => {
                // (Answered meanwhile: by the stream, or another thread's
                // fault on the same page.)
                self.stats.answered_faults += 1;
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

    /// After a zero fault: every other page of its block (FAULT_AROUND
    /// pages) with nothing to come from the image gets zeros too, a run of
    /// them per call. A program that touches one such page touches its
    /// neighbours (GHC allocating through its nursery, Go its fresh spans):
    /// 14 zero faults of a GHC hello's 28, one each. A zero fault right
    /// next to the last window doubles it (up to MAX_WINDOW blocks, within
    /// the mapping), as dense data faults do. Zeros need no memory (the
    /// zero page is mapped; a write then takes an ordinary fault); a page
    /// present already (EEXIST) is stepped over; anything else ends it
    /// (the fault itself is answered).
    fn zero_around(&mut self, s: usize, page: u64) {
        let bytes = FAULT_AROUND * PG;
        let block = page & !(bytes - 1);
        let sp = &mut self.spaces[s];
        let (lo, hi) = sp.last_zero;
        let reach = (hi - lo).max(bytes);
        let up = block >= hi && block - hi < reach;
        let down = !up && block < lo && lo - block <= reach;
        sp.zero_run = if up || down { sp.zero_run + 1 } else { 0 };
        let w = bytes << sp.zero_run.min(MAX_WINDOW.trailing_zeros());
        let (mut start, mut end) = if down {
            ((block + bytes).saturating_sub(w), block + bytes)
        } else {
            (block, block.saturating_add(w))
        };
        // Within the mapping (a call across two fails whole); a page in
        // memory the program moved: its block only.
        match self.layout.vma_of(page) {
            Some((vlo, vhi)) => {
                start = start.max(vlo);
                end = end.min(vhi);
            }
            None => {
                start = start.max(block);
                end = end.min(block + bytes);
            }
        }
        sp.last_zero = (start, end);
        let sp = &self.spaces[s];
        let zero = |a: u64| a != page && !sp.is_pending(&self.layout, a);
        let mut a = start;
        while a < end {
            if !zero(a) {
                a += PG;
                continue;
            }
            let mut b = a + PG;
            while b < end && zero(b) {
                b += PG;
            }
            match sp.uffd.zero(a, b - a) {
                (Fill::Done, _) => {
                    self.stats.zero_pages += (b - a) / PG;
                    a = b;
                }
                // Stopped at a page present already (the rest of the run
                // again after it), or that page itself.
                (Fill::Again, done) if done > 0 => {
                    self.stats.zero_pages += done / PG;
                    a += done;
                }
                (Fill::Exists, _) => a += PG,
                _ => break,
            }
        }
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
            let read = match &self.second {
                // The root space, while the second streamer copies into
                // it: its copies first, then the read, under its gate
                // (taken only when there is something to read: waiting
                // for it before every read halved both streams).
                Some(_) if self.spaces[s].root && !self.spaces[s].uffd.readable() => Ok(()),
                Some(second) if self.spaces[s].root => {
                    let mut gate = second.enter();
                    for (lo, hi) in gate.copied() {
                        self.spaces[s].drop_range(&self.layout, lo, hi);
                    }
                    let read = self.spaces[s].uffd.read_msgs(&mut msgs);
                    gate.read(&msgs);
                    read
                }
                _ => self.spaces[s].uffd.read_msgs(&mut msgs),
            };
            if read.is_err() {
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
                            stride: Default::default(),
                            dense_run: 0,
                            ahead: None,
                            last_zero: (0, 0),
                            zero_run: 0,
                            faulted: parent.faulted.clone(),
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
            // Every fault read is answered: back to the caller, which
            // copies ahead of a walk (stride, read-ahead) before it reads
            // again. (Reading on while the program faults again at once
            // starved those copies: in a debug build a walk was never
            // copied ahead of, its program always a fault ahead.)
            if retry.is_empty() {
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
    pub(super) fn retry_pending(&self) -> bool {
        self.spaces.iter().any(|sp| !sp.retry.is_empty())
    }

    /// Pump every space; drop the ones that are gone.
    pub(super) fn pump_all(&mut self) -> Result<(), Fatal> {
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
    pub(super) fn stream(&mut self, s: usize, budget: u64) -> Result<bool, Fatal> {
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
        // Up to where the second streamer began; met: the rest is its.
        let limit = match &self.second {
            Some(second) if self.spaces[s].root => second.back(),
            _ => u64::MAX,
        };
        if start >= limit {
            self.end_second()?;
            return Ok(true);
        }
        let end = start.saturating_add(budget).min(limit);
        let mut count = 0;
        match self.fill_range(s, start, end, &mut count, false)? {
            Outcome::Done => {
                let sp = &mut self.spaces[s];
                if sp.moved_at(start).is_none() {
                    sp.cursor = end;
                    if let Some(second) = self.second.as_ref().filter(|_| sp.root) {
                        second.set_front(end);
                    }
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

    /// Stop the second streamer, if it runs, and take over what it copied.
    pub(super) fn end_second(&mut self) -> Result<(), Fatal> {
        let Some(second) = self.second.take() else {
            return Ok(());
        };
        let (copied, pages, failed) = second.finish();
        if let Some(root) = self.spaces.iter_mut().find(|sp| sp.root) {
            for (lo, hi) in copied {
                root.drop_range(&self.layout, lo, hi);
            }
        }
        self.stats.second_pages += pages;
        match failed {
            Some(m) => Err(Fatal(m)),
            None => Ok(()),
        }
    }

    /// Copy a few pages ahead of each space's walk with a fixed stride
    /// (`super::stride`), if it has one. Returns whether there was any
    /// such work (the caller reads the uffds again before more).
    pub(super) fn stride_step(&mut self) -> Result<bool, Fatal> {
        if self.recording {
            return Ok(false);
        }
        let mut any = false;
        let mut s = 0;
        while s < self.spaces.len() {
            let (mut copied, mut looked) = (0, 0);
            while copied < STRIDE_STEP && looked < 8 * STRIDE_STEP {
                let Some(a) = self.spaces[s].stride.next_page() else {
                    break;
                };
                looked += 1;
                any = true;
                // Only what is still to come from the image: a point the
                // program dropped, or with no data, stays as it is.
                if !self.spaces[s].is_pending(&self.layout, a) {
                    continue;
                }
                let mut n = 0;
                match self.fill_range(s, a, a + PG, &mut n, true)? {
                    Outcome::Done => {
                        copied += 1;
                        self.stats.stride_pages += n;
                    }
                    Outcome::Again => {
                        // Events first; this page again after them, once
                        // the thread whose event it waits for has run.
                        self.spaces[s].stride.unnext(a);
                        std::thread::yield_now(); // sched_yield
                        return Ok(true);
                    }
                    Outcome::Gone | Outcome::Failed(_) => {
                        self.spaces.remove(s);
                        return Ok(true);
                    }
                }
            }
            s += 1;
        }
        Ok(any)
    }

    /// Copy one block of each space's read-ahead window (see `fault`).
    /// Returns whether there was any (the caller reads the uffds again
    /// before more).
    pub(super) fn ahead_step(&mut self) -> Result<bool, Fatal> {
        let mut any = false;
        let mut s = 0;
        while s < self.spaces.len() {
            let Some(mut a) = self.spaces[s].ahead.take() else {
                s += 1;
                continue;
            };
            let whole = a;
            any = true;
            let step = FAULT_AROUND * PG;
            let (lo, hi) = if a.down {
                let lo = a.hi.saturating_sub(step).max(a.lo);
                let r = (lo, a.hi);
                a.hi = lo;
                r
            } else {
                let hi = a.lo.saturating_add(step).min(a.hi);
                let r = (a.lo, hi);
                a.lo = hi;
                r
            };
            let mut n = 0;
            match self.fill_range(s, lo, hi, &mut n, true)? {
                Outcome::Done => {}
                Outcome::Again => {
                    // Events first (they may move or drop these pages); then
                    // this block again (pages dropped meanwhile are not
                    // pending, and stay as they are).
                    self.spaces[s].ahead = Some(whole);
                    std::thread::yield_now(); // sched_yield
                    return Ok(true);
                }
                Outcome::Gone | Outcome::Failed(_) => {
                    self.spaces.remove(s);
                    continue;
                }
            }
            self.stats.ahead_pages += n;
            // The window's blocks are the program's dense memory too.
            self.spaces[s].faulted.insert(lo & !(step - 1));
            if a.lo < a.hi {
                self.spaces[s].ahead = Some(a);
            }
            s += 1;
        }
        Ok(any)
    }

    /// Whether a program is on a walk with a fixed stride right now.
    pub(super) fn walking(&self) -> bool {
        self.spaces.iter().any(|sp| sp.stride.walking())
    }

    /// Copy the recorded working set (page addresses) before the program
    /// resumes: sorted, and each stretch of adjacent pages one copy.
    pub(super) fn prefetch(&mut self, addrs: &[u64]) -> Result<(), Fatal> {
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
            while let Outcome::Again = self.fill_range(0, lo, hi, &mut count, true)? {
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
