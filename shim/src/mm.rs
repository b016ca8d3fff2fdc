//! The mm fields (code, data, brk, stack, arguments, environment), the
//! auxiliary vector and the executable, in one PR_SET_MM_MAP.

use crate::mem::*;
use crate::sys::*;
use crate::{check, scratch};
use core::mem::{offset_of, size_of};
use cryo_image::Image;

/// PR_SET_MM_MAP with the captured fields, auxv and executable (`exe_fd`,
/// or u32::MAX to keep it: named in the finishing chain instead, see
/// [`check_late`]).
pub fn restore(img: &Image, exe_fd: u32) {
    let n = auxv_to(img, scratch::AUXV);
    check(
        set(&map_of(img, exe_fd, scratch::AUXV as u64, n)),
        format_args!("prctl(PR_SET_MM, PR_SET_MM_MAP)"),
    );
}

/// Before the finishing chain names the executable (`exe_fd`) once the
/// shim is unmapped (`selfmap::exe_in_chain`): the same call now, with
/// the program's credentials, which checks everything that one will (the
/// capability, the file executable by them and on an exec mount) and ends
/// in EBUSY, changing nothing, for the one thing still in its way: the
/// shim mapped from the executable it was started as. (Whether anyone has
/// the file open for writing, its one later check, `selfmap` asked.)
/// Anything else is a failure here, as it would be there.
pub fn check_late(img: &Image, exe_fd: u32) {
    let r = set(&late_map(img, exe_fd));
    // (0 cannot be, the shim being mapped from its own file; it would
    // have named the executable already, and the chain's call would find
    // it mapped by the program and change nothing.)
    if r != -EBUSY && r != 0 {
        check(
            r,
            format_args!(
                "prctl(PR_SET_MM, PR_SET_MM_MAP) naming the executable, before the shim is gone"
            ),
        );
    }
}

/// [`restore`]'s fields with `exe_fd` and no auxv: an auxv_size of 0
/// leaves the one [`restore`] set.
fn late_map(img: &Image, exe_fd: u32) -> PrctlMmMap {
    map_of(img, exe_fd, 0, 0)
}

/// [`late_map`] written into memory that outlives the shim's window,
/// right below `top` (the finishing chain's own mapping, below its
/// frames there). Returns its address (the lowest written) and size, for
/// PR_SET_MM_MAP in the finishing chain.
pub fn write_late(img: &Image, exe_fd: u32, top: usize) -> (usize, usize) {
    let at = (top - size_of::<PrctlMmMap>()) & !63;
    // SAFETY: [at, top) lies in the chain's mapping, writable, below the
    // frames written there (`frame::Area::map` sizes it for every frame
    // of the chain and 1 KiB more for this); PrctlMmMap is plain data.
    unsafe { core::ptr::write_unaligned(at as *mut PrctlMmMap, late_map(img, exe_fd)) };
    (at, size_of::<PrctlMmMap>())
}

/// The image's auxv as (key, value) words at `at` (at most
/// `scratch::AUXV_WORDS`): how many words.
fn auxv_to(img: &Image, at: usize) -> usize {
    let mut n = 0usize;
    for e in img.auxv().iter() {
        if n + 2 > scratch::AUXV_WORDS {
            break;
        }
        poke_u64(at + n * 8, e.key);
        poke_u64(at + n * 8 + 8, e.val);
        n += 2;
    }
    n
}

fn map_of(img: &Image, exe_fd: u32, auxv: u64, words: usize) -> PrctlMmMap {
    let mm = img.process().mm;
    PrctlMmMap {
        start_code: mm.start_code,
        end_code: mm.end_code,
        start_data: mm.start_data,
        end_data: mm.end_data,
        start_brk: mm.start_brk,
        brk: mm.brk,
        start_stack: mm.start_stack,
        arg_start: mm.arg_start,
        arg_end: mm.arg_end,
        env_start: mm.env_start,
        env_end: mm.env_end,
        auxv,
        auxv_size: words as u32 * 8,
        exe_fd,
    }
}

pub const PR_SET_MM: usize = 35;
pub const PR_SET_MM_MAP: usize = 14;

fn set(map: &PrctlMmMap) -> isize {
    syscall6(
        SYS_PRCTL,
        PR_SET_MM,
        PR_SET_MM_MAP,
        map as *const PrctlMmMap as usize,
        size_of::<PrctlMmMap>(),
        0,
        0,
    )
}

/// The kernel's `struct prctl_mm_map` (include/uapi/linux/prctl.h).
#[repr(C)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

const _: () = {
    assert!(offset_of!(PrctlMmMap, auxv) == 88);
    assert!(offset_of!(PrctlMmMap, auxv_size) == 96);
    assert!(offset_of!(PrctlMmMap, exe_fd) == 100);
    assert!(size_of::<PrctlMmMap>() == 104);
};
