//! The rules of a mapped restore (`cryo restore --map`), shared by the
//! shim (which maps) and `cryo restore` (which reports): private anonymous
//! memory is mapped `MAP_PRIVATE` from pages.img instead of copied, so its
//! pages come from the page cache on first touch and every restore of one
//! image shares the pages it does not write.

use super::{vma_flags, vma_kind, Vma, PAGE_SIZE};

/// Is this mapping's data mapped from pages.img? Private anonymous memory
/// (heap and anonymous mappings) only. Not the stack (a file mapping
/// cannot grow down), not executable memory (JIT code: a file on a
/// `noexec` mount cannot be mapped executable, and a security module may
/// ask for more), and not mappings whose flags only anonymous memory can
/// have: wipe-on-fork and KSM-mergeable (madvise refuses them on a file
/// mapping) and droppable (MAP_DROPPABLE is anonymous only).
pub fn is_mapped(v: &Vma) -> bool {
    matches!(v.kind, vma_kind::ANON_PRIVATE | vma_kind::HEAP)
        && v.prot & super::prot::EXEC == 0
        && v.flags & (vma_flags::GROWSDOWN | vma_flags::WIPEONFORK) == 0
        && v.run_count > 0
        && v.vmflags & (super::vmflag("dp") | super::vmflag("mg") | super::vmflag("wf")) == 0
}

/// A run of data shorter than this is copied, not mapped: every mapped
/// run splits its mapping into more VMAs (the kernel allows 65 530 per
/// process), and a few pages cost less to copy than a VMA costs to make.
pub const MAP_MIN: u64 = 4 * PAGE_SIZE;

/// The part of a run of data (address, length, offset in pages.img;
/// `head`: it starts with a block glibc's malloc mmapped) that is mapped
/// from pages.img, if any. The first page of a mapping is always copied:
/// that keeps the mapping's start anonymous, so a mapping of pages.img
/// never continues the one before it and the kernel never merges two
/// captured mappings into one VMA. So is the first page of a malloc'd
/// block (`run_flags::MALLOC_HEAD`): the block then spans two VMAs, and
/// the mremap with which `realloc` would grow it fails (EFAULT), glibc
/// copying it instead; grown, a mapping of pages.img would bring in
/// pages.img's next bytes, or SIGBUS past its end.
pub fn mapped_part(v: &Vma, addr: u64, len: u64, off: u64, head: bool) -> Option<(u64, u64, u64)> {
    let (addr, len, off) = if addr == v.start || head {
        (
            addr + PAGE_SIZE,
            len.saturating_sub(PAGE_SIZE),
            off + PAGE_SIZE,
        )
    } else {
        (addr, len, off)
    };
    (len >= MAP_MIN).then_some((addr, len, off))
}

/// Whether the shim joins DATA run `r` to a segment (address, length,
/// offset) before it: adjacent in memory and in pages.img, and not the
/// start of a malloc'd block (`run_flags::MALLOC_HEAD`, which starts a
/// segment of its own).
pub fn joins(seg: (u64, u64, u64), r: &super::PageRun) -> bool {
    let (a, n, o) = seg;
    a + n == r.vaddr && o + n == r.offset && r.flags & super::run_flags::MALLOC_HEAD == 0
}

/// The runs of data of `v` as the shim reads or maps them: adjacent DATA
/// runs that are adjacent in pages.img too, joined ([`joins`]): address,
/// length, offset in pages.img, and whether it starts a malloc'd block.
pub fn data_segments<'a>(
    img: &'a crate::Image<'a>,
    v: &Vma,
) -> impl Iterator<Item = (u64, u64, u64, bool)> + 'a {
    let (first, end) = (v.first_run as usize, (v.first_run + v.run_count) as usize);
    let runs = img.page_runs();
    let mut j = first;
    core::iter::from_fn(move || {
        let mut seg: Option<(u64, u64, u64, bool)> = None;
        while j < end {
            let Some(r) = runs.get(j) else { break };
            if r.kind != super::run_kind::DATA {
                j += 1;
                if seg.is_some() {
                    break;
                }
                continue;
            }
            match seg {
                None => {
                    let head = r.flags & super::run_flags::MALLOC_HEAD != 0;
                    seg = Some((r.vaddr, r.len(), r.offset, head))
                }
                Some((a, n, o, h)) if joins((a, n, o), &r) => seg = Some((a, n + r.len(), o, h)),
                Some(_) => break,
            }
            j += 1;
        }
        seg
    })
}

/// Parts of pages.img a mapped restore maps: each splits its mapping into
/// up to two more VMAs.
pub fn mapped_parts(img: &crate::Image) -> u64 {
    img.vmas()
        .iter()
        .filter(is_mapped)
        .map(|v| {
            data_segments(img, &v)
                .filter(|&(a, n, o, h)| mapped_part(&v, a, n, o, h).is_some())
                .count() as u64
        })
        .sum()
}

/// Pages a mapped restore maps from pages.img rather than copies.
pub fn mapped_pages(img: &crate::Image) -> u64 {
    img.vmas()
        .iter()
        .filter(is_mapped)
        .map(|v| {
            data_segments(img, &v)
                .filter_map(|(a, n, o, h)| mapped_part(&v, a, n, o, h))
                .map(|(_, n, _)| n / PAGE_SIZE)
                .sum::<u64>()
        })
        .sum()
}

/// Blocks glibc's malloc mmapped for itself in the memory a mapped
/// restore maps: the first page of each is copied
/// (`run_flags::MALLOC_HEAD`).
pub fn malloc_heads(img: &crate::Image) -> u64 {
    img.vmas()
        .iter()
        .filter(is_mapped)
        .map(|v| data_segments(img, &v).filter(|s| s.3).count() as u64)
        .sum()
}
