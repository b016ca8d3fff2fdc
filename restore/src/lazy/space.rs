//! One address space being served: which pages are still to come from the
//! image, and how the program's REMOVE, UNMAP and REMAP events change that.

use super::layout::{Bits, Layout};
use super::stride::Stride;
use super::PG;
use crate::uffd::Uffd;

/// A DATA piece of a lazy mapping that the program moved with mremap: its
/// pages live at a new address, tracked explicitly.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunk {
    pub(super) addr: u64,
    pub(super) npages: u32,
    /// Offset in pages.img.
    pub(super) off: u64,
    /// Bit i: page i still has to come from the image.
    pub(super) pending: u32,
}

/// A stretch of pending pages, contiguous in memory and in pages.img.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Piece {
    pub(super) dst: u64,
    pub(super) src: u64,
    pub(super) len: u64,
    /// A piece of `moved` (else of the image's own layout).
    pub(super) moved: bool,
}

/// One address space being served (the restored process, or a child it
/// forked before every page was in). A page of the image's layout is
/// pending unless it is in the eager window or `done` has its pages.img
/// page: filled, dropped by the program, or moved away (into `moved`).
pub(super) struct Space {
    pub(super) uffd: Uffd,
    pub(super) done: Bits,
    pub(super) moved: Vec<Chunk>,
    pub(super) root: bool,
    /// Background streaming: every layout page below this is done.
    pub(super) cursor: u64,
    /// Faults read but not answered yet: the kernel refused the fill with
    /// EAGAIN (an event's producer has not finished it). They are never
    /// dropped: nothing would ask for them again.
    pub(super) retry: Vec<u64>,
    /// Its program's walk with a fixed stride, if any (`super::stride`).
    pub(super) stride: Stride,
    /// Faults in a row that found their part of memory touched densely:
    /// each doubles the window brought in around the next (`super::server`).
    pub(super) dense_run: u32,
    /// The rest of the last dense fault's window, copied a block at a time
    /// after the fault is answered, while the program goes on.
    pub(super) ahead: Option<Ahead>,
    /// The last window of zeros (`Server::zero_around`) and how many zero
    /// faults in a row came right next to the one before.
    pub(super) last_zero: (u64, u64),
    pub(super) zero_run: u32,
    /// Blocks of FAULT_AROUND pages where the program had a data fault:
    /// a second fault in one is dense.
    pub(super) faulted: std::collections::HashSet<u64>,
}

/// Pages to copy ahead of a dense walk: [lo, hi), from the end the walk
/// comes from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ahead {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) down: bool,
}

impl Space {
    pub(super) fn new(uffd: Uffd, l: &Layout, root: bool) -> Space {
        Space {
            uffd,
            done: Bits::new(l.img.header.pages_len / PG),
            moved: Vec::new(),
            root,
            cursor: 0,
            retry: Vec::new(),
            stride: Stride::default(),
            dense_run: 0,
            ahead: None,
            last_zero: (0, 0),
            zero_run: 0,
            faulted: Default::default(),
        }
    }

    /// Whether the page at `page` still has to come from the image.
    pub(super) fn is_pending(&self, l: &Layout, page: u64) -> bool {
        if let Some(c) = self.moved_at(page) {
            return (c.pending >> ((page - c.addr) / PG)) & 1 != 0;
        }
        l.runs_in(page, page + PG)
            .next()
            .is_some_and(|(_, r)| self.layout_pending(l, page, r.offset + (page - r.vaddr)))
    }

    /// Whether the layout's page at `a` (pages.img offset `src`) is still
    /// to be filled: not in the eager window, not done.
    pub(super) fn layout_pending(&self, l: &Layout, a: u64, src: u64) -> bool {
        !l.in_window(a) && !self.done.get(src / PG)
    }

    pub(super) fn moved_at(&self, page: u64) -> Option<&Chunk> {
        let i = self
            .moved
            .partition_point(|c| c.addr + c.npages as u64 * PG <= page);
        self.moved.get(i).filter(|c| c.addr <= page)
    }

    /// The pending pages in [lo, hi) as pieces (in address order within
    /// moved and within the layout).
    pub(super) fn pieces(&self, l: &Layout, lo: u64, hi: u64) -> Vec<Piece> {
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
    pub(super) fn drop_range(&mut self, l: &Layout, start: u64, end: u64) {
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
    pub(super) fn remap(&mut self, l: &Layout, from: u64, to: u64, len: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy::layout::tests::image;
    use cryo_image::write::ImageBuilder;
    use cryo_image::{run_kind, vma_kind, Image, PageRun, Vma};

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
                flags: 0,
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
            stride: Default::default(),
            dense_run: 0,
            ahead: None,
            last_zero: (0, 0),
            zero_run: 0,
            faulted: Default::default(),
        };
        assert_eq!(pending(&child, &l), pending(&s, &l));
    }
}
