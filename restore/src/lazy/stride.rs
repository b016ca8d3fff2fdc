//! Following a walk with a fixed stride: a program that reads one word
//! every N pages (a column of a table, one field of large records, a
//! sparse scan) faults on every page it reads, each a round trip through
//! the page server (~18 µs here, of which the server's own service is
//! ~3). Once three faults in a row lie a fixed stride apart, the server
//! copies the pages ahead on that lattice between two reads of its
//! uffds, at most [`AHEAD`] lattice points past the program's last fault,
//! so the program finds them in and the walk runs at the server's copy
//! rate. Pages off the lattice are never brought in by this, and a
//! lattice point the program dropped or never had data stays as it is
//! (the server only fills what is pending, after the events are read).

use super::PG;
use std::time::{Duration, Instant};

/// How many lattice points past the program's last fault the server
/// copies (bounds what a walk that stops costs: this many pages).
pub(super) const AHEAD: u64 = 256;
/// Faults in a row a fixed stride apart before the server follows them.
const LOCK_AFTER: u32 = 3;
/// Confidence kept while locked: a fault off the lattice (a stack page,
/// another object) costs one, so a walk survives a few of them.
const MAX_HITS: u32 = 6;
/// A locked walk whose last fault is more recent than this is still
/// going on (background streaming waits for it).
const WALKING: Duration = Duration::from_millis(10);
/// A fault on a finer lattice refines the walk's stride within this many
/// strides of the last fault, not only at the finer lattice's next point:
/// the streams fill some of a walk's points too, so the program's next
/// fault may come a few points on. (A walk of 64 KiB locked at 128 KiB,
/// its faults then 192 KiB on, each taken for a stray: the lock broke,
/// the streams copied 100-200k pages the program never read, 1 GiB
/// sparse read 280-440 ms instead of ~100.) Farther on, it is a stray.
const REFINE_WITHIN: u64 = 4;
/// Faults without following a walk after one turned out a dense scan.
const QUIET: u32 = 256;
/// Strides the server follows: at least two pages (one page apart is a
/// dense scan: the fault's 64 KiB block and the background stream serve
/// it) and at most 1 GiB.
const MIN_STRIDE: u64 = 2 * PG;
const MAX_STRIDE: u64 = 1 << 30;

/// A space's stride detector.
#[derive(Clone, Debug, Default)]
pub(super) struct Stride {
    /// The last fault on the walk (a page address).
    last: Option<u64>,
    /// The candidate stride in bytes (signed: a walk may go down).
    stride: i64,
    /// Faults so far that fit the stride (the first counts).
    hits: u32,
    /// Locked: the next lattice point to copy.
    next: u64,
    /// When the last fault on the locked walk came.
    at: Option<Instant>,
    /// Faults to go before a walk is followed again, after the program
    /// faulted between two points of one it was followed on at the page
    /// next to one (a dense scan that the stream paced to look like one).
    quiet: u32,
}

impl Stride {
    pub(super) fn locked(&self) -> bool {
        self.hits >= LOCK_AFTER
    }

    /// Whether the program is on a locked walk right now.
    pub(super) fn walking(&self) -> bool {
        self.locked() && self.at.is_some_and(|t| t.elapsed() < WALKING)
    }

    /// Lattice points from `a` to `b` (positive: `b` ahead of `a` on the
    /// walk), if `b` lies on the lattice through `a`.
    fn steps(&self, a: u64, b: u64) -> Option<i64> {
        let d = (b as i64).wrapping_sub(a as i64);
        (self.stride != 0 && d % self.stride == 0).then(|| d / self.stride)
    }

    /// A fault at `page` (served or being served).
    pub(super) fn fault(&mut self, page: u64) {
        // A fault retried after events, or two threads on one page.
        if self.last == Some(page) {
            return;
        }
        let Some(last) = self.last else {
            self.last = Some(page);
            self.hits = 1;
            return;
        };
        if self.locked() {
            match self.steps(last, page) {
                // On the walk, ahead of its last fault (the program caught
                // up with the copies, or went past them).
                Some(k) if k >= 1 && k as u64 <= AHEAD + 1 => {
                    self.last = Some(page);
                    self.at = Some(Instant::now());
                    self.hits = (self.hits + 1).min(MAX_HITS);
                    if self.steps(page, self.next).is_none_or(|j| j < 1) {
                        self.next = self.point(page, 1).unwrap_or(page);
                    }
                    return;
                }
                _ => {
                    let d = (page as i64).wrapping_sub(last as i64);
                    let span = (AHEAD + 1).saturating_mul(self.stride.unsigned_abs());
                    if d.signum() == self.stride.signum() && d.unsigned_abs() <= span {
                        // Ahead on the walk but between two of its points:
                        // the walk is finer than thought (two of its points
                        // to each stream batch the program followed), or
                        // it is no walk (a dense scan paced by the stream).
                        // A page next to a point: a dense scan. The next
                        // point of a finer lattice: the walk's. Anything
                        // else: a stray.
                        let r = (d % self.stride).unsigned_abs();
                        if r < MIN_STRIDE {
                            self.quiet = QUIET;
                            self.hits = 0;
                        } else if d.unsigned_abs() < REFINE_WITHIN * self.stride.unsigned_abs()
                            && self.stride.unsigned_abs().is_multiple_of(r)
                        {
                            self.stride = r as i64 * self.stride.signum();
                            self.last = Some(page);
                            self.next = self.point(page, 1).unwrap_or(page);
                            self.at = Some(Instant::now());
                            return;
                        } else {
                            self.hits -= 1;
                            if self.locked() {
                                return;
                            }
                        }
                    } else {
                        self.hits -= 1;
                        if self.locked() {
                            return;
                        }
                    }
                }
            }
        }
        let d = (page as i64).wrapping_sub(last as i64);
        let ok = (MIN_STRIDE..=MAX_STRIDE).contains(&d.unsigned_abs());
        self.quiet = self.quiet.saturating_sub(1);
        if ok && d == self.stride && self.hits > 0 {
            // Not again soon after the program's faults disproved a walk.
            if self.quiet == 0 || self.hits + 1 < LOCK_AFTER {
                self.hits += 1;
            }
        } else {
            self.stride = d;
            self.hits = if ok { 2 } else { 1 };
        }
        self.last = Some(page);
        if self.locked() {
            self.next = self.point(page, 1).unwrap_or(page);
            self.at = Some(Instant::now());
        }
    }

    /// The lattice point `k` strides from `a`, if it is an address.
    fn point(&self, a: u64, k: i64) -> Option<u64> {
        let off = self.stride.checked_mul(k)?;
        a.checked_add_signed(off)
    }

    /// The next page to copy ahead of the walk, if locked and not yet
    /// [`AHEAD`] points past the last fault.
    pub(super) fn next_page(&mut self) -> Option<u64> {
        if !self.locked() {
            return None;
        }
        let last = self.last?;
        let k = self.steps(last, self.next)?;
        if k < 1 || k as u64 > AHEAD {
            return None;
        }
        let p = self.next;
        match self.point(p, 1) {
            Some(n) => self.next = n,
            // The walk leaves the address space: stop following it.
            None => self.hits = 0,
        }
        Some(p)
    }

    /// Give back the page `next_page` returned (its copy must wait).
    pub(super) fn unnext(&mut self, p: u64) {
        self.next = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(s: &mut Stride, pages: &[u64]) {
        for &p in pages {
            s.fault(p * PG);
        }
    }

    fn ahead(s: &mut Stride, n: usize) -> Vec<u64> {
        (0..n)
            .filter_map(|_| s.next_page())
            .map(|a| a / PG)
            .collect()
    }

    #[test]
    fn three_faults_a_stride_apart_lock_on() {
        let mut s = Stride::default();
        walk(&mut s, &[100, 116]);
        assert_eq!(s.next_page(), None);
        walk(&mut s, &[132]);
        assert_eq!(ahead(&mut s, 3), [148, 164, 180]);
    }

    #[test]
    fn a_walk_down_is_followed_too() {
        let mut s = Stride::default();
        walk(&mut s, &[1000, 997, 994]);
        assert_eq!(ahead(&mut s, 2), [991, 988]);
    }

    #[test]
    fn dense_and_irregular_faults_never_lock() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(s.next_page(), None);
        let mut s = Stride::default();
        walk(&mut s, &[0, 16, 40, 56, 90, 2000, 7]);
        assert_eq!(s.next_page(), None);
    }

    #[test]
    fn copies_stop_ahead_of_the_last_fault() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 4, 8]);
        let got = ahead(&mut s, 1000);
        assert_eq!(got.len() as u64, AHEAD);
        assert_eq!(*got.last().unwrap(), 8 + 4 * AHEAD);
        // The program catches up: the walk goes on from its fault.
        walk(&mut s, &[8 + 4 * 10]);
        assert_eq!(ahead(&mut s, 1000).len(), 10);
    }

    #[test]
    fn a_fault_past_the_copies_moves_them_on() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 4, 8]);
        assert_eq!(ahead(&mut s, 2), [12, 16]);
        walk(&mut s, &[40]);
        assert_eq!(ahead(&mut s, 1), [44]);
    }

    #[test]
    fn a_stray_fault_is_forgiven_a_run_of_them_is_not() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 8, 16, 24, 32]);
        walk(&mut s, &[5000]);
        assert!(s.locked());
        walk(&mut s, &[40]);
        assert_eq!(ahead(&mut s, 1), [48]);
        walk(&mut s, &[7000, 9000, 11000, 13000, 17000, 20000]);
        assert!(!s.locked());
    }

    #[test]
    fn a_fault_between_points_refines_the_stride_or_ends_the_walk() {
        // Two points of a 16-page walk to each 32-page batch it followed.
        let mut s = Stride::default();
        walk(&mut s, &[0, 32, 64]);
        walk(&mut s, &[80]);
        assert_eq!(ahead(&mut s, 2), [96, 112]);
        // A dense scan paced by the stream: 32 pages a fault, then the
        // page after the point copied ahead of it.
        let mut s = Stride::default();
        walk(&mut s, &[0, 32, 64, 97]);
        assert!(!s.locked());
        // Nor on any other stride for a while.
        walk(&mut s, &[128, 160, 192, 224, 300, 310, 320]);
        assert!(!s.locked());
        let more: Vec<u64> = (1..=QUIET as u64).map(|k| 1000 + 10 * k).collect();
        walk(&mut s, &more);
        assert!(s.locked());
    }

    #[test]
    fn a_fault_a_few_points_on_a_finer_lattice_refines_the_stride() {
        // Locked on 32 pages (a 16-page walk whose points in between the
        // stream filled); the next fault 48 pages on, not the finer
        // lattice's next point (a point between was filled too).
        let mut s = Stride::default();
        walk(&mut s, &[0, 32, 64]);
        walk(&mut s, &[112]);
        assert!(s.locked());
        assert_eq!(ahead(&mut s, 2), [128, 144]);
    }

    #[test]
    fn a_stray_fault_within_reach_of_the_walk_is_forgiven_too() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 16, 32, 48, 64]);
        // 1603 and 1608 pages on: within 257 points of 16 pages, on no
        // lattice point, not next to one (1608: on a finer one, but not
        // the next point of it).
        walk(&mut s, &[64 + 1603, 64 + 1608]);
        assert!(s.locked());
        walk(&mut s, &[80]);
        assert_eq!(ahead(&mut s, 1), [96]);
    }

    #[test]
    fn a_given_back_page_comes_again() {
        let mut s = Stride::default();
        walk(&mut s, &[0, 2, 4]);
        let p = s.next_page().unwrap();
        s.unnext(p);
        assert_eq!(s.next_page(), Some(p));
    }
}
