//! The second streamer: in background mode, a thread that copies the
//! restored process's pending pages from the top of its memory down while
//! the server streams from the bottom up (and serves every fault).
//!
//! A program that needs all its memory before it answers (a GHC fold over
//! its heap) waits for the server's copies, ~2 µs of kernel work a page
//! on one CPU, while the other CPU idles: the lazy fold ran 1.2-1.3x its
//! eager restore (docs/benchmarks.md, "A second streamer").
//!
//! Only the server reads the userfaultfd, so only it learns of the
//! program's REMOVE, UNMAP, REMAP and FORK events. The kernel refuses
//! copies (EAGAIN) while such an event waits to be read, and lets them in
//! again once the thread that caused it resumes after the read (a
//! REMOVE's pages are dropped only then). A copy of the second streamer
//! that landed after that but before the server recorded the event would
//! put the image's bytes where the program dropped them: a silent loss. So the two share a gate: the streamer holds it for each copy, the
//! server while it reads the root space's messages, and the first event
//! the server reads stops the streamer for good (the server then does the
//! rest). Before reading, the server takes over, under the gate, the
//! ranges the streamer copied: they are done in its own state before any
//! event can move or drop them.

use super::server::{copy_range, Outcome};
use super::PG;
use crate::uffd::{Mapped, Msg, Uffd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The streamer's largest copy: the server, wanting to read, waits for at
/// most one (~2 µs a page).
const CHUNK: u64 = 64 << 10;

/// Fewer pending bytes than this: no second streamer (a thread costs
/// ~50-100 µs to start, and small images are filled eagerly anyway).
pub(super) const SECOND_MIN: u64 = 2 << 20;

struct Shared {
    /// See the module's comment. Holds the ranges copied by the streamer
    /// and not yet taken over by the server.
    gate: Mutex<Vec<(u64, u64)>>,
    /// The server waits for the gate: the streamer lets it in first.
    want: AtomicBool,
    /// Copy nothing more (an event was read, or the server is done).
    stop: AtomicBool,
    /// The server's stream: every page below is its own.
    front: AtomicU64,
    /// The lowest address the streamer has started at.
    back: AtomicU64,
    /// Pages it copied (`--lazy-stats` second_pages).
    pages: AtomicU64,
    /// Wait: the program walks with a fixed stride (the server copies
    /// ahead of it; a stream would only compete with it for the CPUs).
    pause: AtomicBool,
    /// The thread has returned.
    done: AtomicBool,
    failed: Mutex<Option<String>>,
}

pub(super) struct Second {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The server's hold on the gate while it reads the root space.
pub(super) struct Reading<'a> {
    guard: MutexGuard<'a, Vec<(u64, u64)>>,
    shared: &'a Shared,
}

impl Reading<'_> {
    /// The ranges the streamer copied since the last read.
    pub(super) fn copied(&mut self) -> std::vec::Drain<'_, (u64, u64)> {
        self.guard.drain(..)
    }

    /// After the read, still holding the gate: any message but a fault
    /// stops the streamer.
    pub(super) fn read(self, msgs: &[Msg]) {
        if msgs.iter().any(|m| !matches!(m, Msg::Fault { .. })) {
            self.shared.stop.store(true, Ordering::Release);
        }
    }
}

impl Second {
    /// Start streaming `pieces` ((address, pages.img offset, bytes) of
    /// the image's lazy runs, in address order) from the last one down,
    /// into `uffd` (the root space's, duplicated) from `pages` (the
    /// server's mapping of pages.img).
    pub(super) fn start(
        pieces: Vec<(u64, u64, u64)>,
        uffd: Uffd,
        pages: Arc<Mapped>,
    ) -> std::io::Result<Second> {
        let top = pieces.last().map_or(0, |&(dst, _, len)| dst + len);
        let shared = Arc::new(Shared {
            gate: Mutex::new(Vec::new()),
            want: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            front: AtomicU64::new(0),
            back: AtomicU64::new(top),
            pages: AtomicU64::new(0),
            done: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            failed: Mutex::new(None),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cryo-stream2".into())
            .spawn(move || {
                stream(&sh, &pieces, &uffd, &pages);
                sh.done.store(true, Ordering::Release);
            })?;
        Ok(Second {
            shared,
            thread: Some(thread),
        })
    }

    /// Take the gate to read the root space's messages.
    pub(super) fn enter(&self) -> Reading<'_> {
        let sh = &*self.shared;
        sh.want.store(true, Ordering::Release);
        let guard = sh.gate.lock().unwrap_or_else(|e| e.into_inner());
        sh.want.store(false, Ordering::Release);
        Reading { guard, shared: sh }
    }

    /// The server's stream has everything below `cursor` (or is copying it).
    pub(super) fn set_front(&self, cursor: u64) {
        self.shared.front.fetch_max(cursor, Ordering::AcqRel);
    }

    /// Pause (or resume) the streamer.
    pub(super) fn pause(&self, on: bool) {
        self.shared.pause.store(on, Ordering::Release);
    }

    /// Whether the streamer has finished (met the server's stream, was
    /// stopped, or failed).
    pub(super) fn done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Where the streamer's pages begin: the server's stream stops there.
    pub(super) fn back(&self) -> u64 {
        self.shared.back.load(Ordering::Acquire)
    }

    /// Stop the streamer and wait for it. Returns the ranges it copied
    /// that the server has not taken over, how many pages it copied, and
    /// why it failed, if it did.
    pub(super) fn finish(mut self) -> (Vec<(u64, u64)>, u64, Option<String>) {
        self.join();
        let sh = &*self.shared;
        let copied = std::mem::take(&mut *sh.gate.lock().unwrap_or_else(|e| e.into_inner()));
        let failed = sh.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        (copied, sh.pages.load(Ordering::Acquire), failed)
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        self.join();
    }
}

/// The streamer's thread: from the top down, a CHUNK at a time, until it
/// meets the server's stream, is stopped, or the kernel refuses a copy
/// (EAGAIN: an event to be read first; the server does the rest).
fn stream(sh: &Shared, pieces: &[(u64, u64, u64)], uffd: &Uffd, pages: &Mapped) {
    for &(dst, src0, len) in pieces.iter().rev() {
        let mut hi = dst + len;
        while hi > dst {
            while sh.pause.load(Ordering::Acquire) && !sh.stop.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let front = sh.front.load(Ordering::Acquire);
            if hi <= front {
                return;
            }
            let lo = hi.saturating_sub(CHUNK).max(dst).max(front);
            sh.back.store(lo, Ordering::Release);
            let src = src0 + (lo - dst);
            pages.populate(src, hi - lo);
            let mut spins = 0u32;
            while sh.want.load(Ordering::Acquire) {
                spins += 1;
                if spins < 100 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now(); // sched_yield
                }
            }
            let mut gate = sh.gate.lock().unwrap_or_else(|e| e.into_inner());
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
            let (outcome, done, copied) = copy_range(uffd, pages, lo, src, hi - lo, true);
            if done > 0 {
                gate.push((lo, lo + done));
            }
            drop(gate);
            sh.pages.fetch_add(copied / PG, Ordering::AcqRel);
            match outcome {
                Outcome::Done => hi = lo,
                Outcome::Again | Outcome::Gone => return,
                Outcome::Failed(e) => {
                    *sh.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                        "UFFDIO_COPY to {lo:#x}: {}",
                        std::io::Error::from_raw_os_error(e)
                    ));
                    return;
                }
            }
        }
    }
}
