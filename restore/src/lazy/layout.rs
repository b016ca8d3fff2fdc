//! What the image says about lazy memory (the lazy mappings, their runs
//! and eager windows), and a bit set indexed by page of pages.img.

use cryo_image::{lazy, run_kind, Image, PageRun};

/// What the image says about lazy memory, shared by every space: nothing
/// here is built per page run, so the server is ready (and the program
/// resumes) in a time that does not grow with the image (a table of the
/// 65 536 runs that format 1 split a 4 GiB heap into cost 2.1 ms before
/// the go-ahead).
pub(super) struct Layout<'a> {
    pub(super) img: Image<'a>,
    /// Lazy mappings in address order: (start, end, first run, end run).
    vmas: Vec<(u64, u64, u32, u32)>,
    /// Per lazy mapping (same order), the part the shim fills eagerly
    /// (`lazy::eager_in`: the threads' stack windows), never pending;
    /// (0, 0) if none.
    windows: Vec<(u64, u64)>,
}

impl<'a> Layout<'a> {
    pub(super) fn new(img: Image<'a>) -> Layout<'a> {
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
    pub(super) fn in_window(&self, a: u64) -> bool {
        let i = self.vmas.partition_point(|v| v.1 <= a);
        self.windows
            .get(i)
            .is_some_and(|&(lo, hi)| (lo..hi).contains(&a))
    }

    /// The bounds of the lazy mapping (as captured) that holds `a`.
    pub(super) fn vma_of(&self, a: u64) -> Option<(u64, u64)> {
        let i = self.vmas.partition_point(|v| v.1 <= a);
        self.vmas.get(i).filter(|v| v.0 <= a).map(|v| (v.0, v.1))
    }

    /// Is `a` the first page of a lazy mapping?
    pub(super) fn starts_mapping(&self, a: u64) -> bool {
        self.vmas.binary_search_by_key(&a, |v| v.0).is_ok()
    }

    /// Every DATA run of the lazy mappings as (address, pages.img offset,
    /// bytes), in address order, the eager windows cut out: one or two
    /// entries per run, never a walk over pages (the second streamer's
    /// work list, made while the program already runs).
    pub(super) fn data_pieces(&self) -> Vec<(u64, u64, u64)> {
        let runs = self.img.page_runs();
        let mut out = Vec::new();
        for (&(_, _, first, end), &(wlo, whi)) in self.vmas.iter().zip(&self.windows) {
            let rs = (first..end).filter_map(|j| runs.get(j as usize));
            for r in rs.filter(|r| r.kind == run_kind::DATA) {
                let (a, b) = (r.vaddr, r.vaddr + r.len());
                let parts = if wlo < whi {
                    [(a, b.min(wlo)), (a.max(whi), b)]
                } else {
                    [(a, b), (b, b)]
                };
                for (x, y) in parts {
                    if x < y {
                        out.push((x, r.offset + (x - a), y - x));
                    }
                }
            }
        }
        out
    }

    /// The DATA runs of lazy mappings that overlap [lo, hi), in order.
    pub(super) fn runs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u32, PageRun)> + '_ {
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
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    pub(super) fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| (w >> (i % 64)) & 1 != 0)
    }
    pub(super) fn set(&mut self, i: u64) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::lazy::lazy_pages;
    use cryo_image::write::ImageBuilder;
    use cryo_image::{vma_kind, Vma};

    /// An image with one lazy mapping [0x10000, 0x40000): DATA runs of 16
    /// pages at 0x10000 (pages.img offset 0) and 0x20000 (offset 0x10000),
    /// nothing at 0x30000; the eager window far away.
    pub(in crate::lazy) fn image() -> Vec<u8> {
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
                flags: 0,
            });
        }
        b.encode(0x20000)
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
        assert_eq!(
            l.data_pieces(),
            [(0x10000, 0, 0x10000), (0x20000, 0x10000, 0x10000)]
        );
    }
}
