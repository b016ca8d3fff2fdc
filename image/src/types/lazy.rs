//! The rules a lazy restore follows, shared by the shim (which maps and
//! registers) and the page server (which serves): both must agree exactly.

use super::{vma_flags, vma_kind, Vma, PAGE_SIZE};

/// Pages within this distance below the captured stack pointer (and the
/// page holding it) are filled eagerly: the shim builds the signal frame
/// there, and the program's first instructions touch them.
pub const STACK_EAGER_BELOW: u64 = 16 * PAGE_SIZE;

/// Is this mapping served lazily (registered with userfaultfd in
/// MISSING mode)? Only private anonymous memory (heap and anonymous
/// mappings) with data to serve; the stack, file mappings, shared,
/// locked, sealed, droppable, PROT_NONE and fork-special (dontfork /
/// wipeonfork) mappings are filled eagerly.
pub fn is_lazy(v: &Vma) -> bool {
    matches!(v.kind, vma_kind::ANON_PRIVATE | vma_kind::HEAP)
        && v.prot & 3 != 0
        && v.flags
            & (vma_flags::GROWSDOWN
                | vma_flags::LOCKED
                | vma_flags::DONTFORK
                | vma_flags::WIPEONFORK)
            == 0
        && v.run_count > 0
        && v.vmflags & (super::vmflag("dp") | super::vmflag("sl") | super::vmflag("lo")) == 0
}

/// Page-aligned [start, end) filled eagerly even inside lazy
/// mappings, below `sp`: where the shim writes a thread's signal frame.
pub fn eager_window_at(sp: u64) -> (u64, u64) {
    let sp = sp & !(PAGE_SIZE - 1);
    (sp.saturating_sub(STACK_EAGER_BELOW), sp + PAGE_SIZE)
}

/// The eager window of a thread: below its stack pointer, or at the top
/// of its sigaltstack when the shim builds its frame there
/// (`crate::frame_top`).
pub fn eager_window_of(rsp: u64, alt: (u64, u64, u32), xsave: u32) -> (u64, u64) {
    eager_window_at(crate::frame_top(rsp, alt, xsave) + 128)
}

/// The main thread's eager window.
pub fn eager_window(img: &crate::Image) -> (u64, u64) {
    let p = img.process();
    eager_window_of(p.regs.rsp, img.frame_alt(0), p.xsave_size)
}

/// Every thread's eager window (the main thread's first): the shim
/// builds each thread's signal frame there, so it fills them all,
/// pages without data too, before the page server starts.
pub fn eager_windows<'a>(img: &'a crate::Image<'a>) -> impl Iterator<Item = (u64, u64)> + 'a {
    let p = img.process();
    let main = eager_window(img);
    let xsave = p.xsave_size;
    core::iter::once(main).chain(
        img.threads()
            .iter()
            .enumerate()
            .map(move |(i, t)| eager_window_of(t.regs.rsp, img.frame_alt(i + 1), xsave)),
    )
}

/// The part of [start, end) the eager windows cover, as one range
/// (the hull of the windows that meet it), if any.
pub fn eager_in(img: &crate::Image, start: u64, end: u64) -> Option<(u64, u64)> {
    let mut hull: Option<(u64, u64)> = None;
    for (lo, hi) in eager_windows(img) {
        let (lo, hi) = (lo.max(start), hi.min(end));
        if lo < hi {
            hull = Some(match hull {
                Some((a, b)) => (a.min(lo), b.max(hi)),
                None => (lo, hi),
            });
        }
    }
    hull
}
