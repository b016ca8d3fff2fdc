//! The mm fields (code, data, brk, stack, arguments, environment), the
//! auxiliary vector and the executable, in one PR_SET_MM_MAP.

use crate::mem::*;
use crate::sys::*;
use crate::{check, scratch};
use core::mem::{offset_of, size_of};
use cryo_image::Image;

/// PR_SET_MM_MAP with the captured fields, auxv and executable (`exe_fd`,
/// or u32::MAX to keep it).
pub fn restore(img: &Image, exe_fd: u32) {
    let auxv_buf = scratch::AUXV;
    let mut n = 0usize;
    for e in img.auxv().iter() {
        if n + 2 > scratch::AUXV_WORDS {
            break;
        }
        poke_u64(auxv_buf + n * 8, e.key);
        poke_u64(auxv_buf + n * 8 + 8, e.val);
        n += 2;
    }
    let mm = img.process().mm;
    let map = PrctlMmMap {
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
        auxv: auxv_buf as u64,
        auxv_size: n as u32 * 8,
        exe_fd,
    };
    const PR_SET_MM: usize = 35;
    const PR_SET_MM_MAP: usize = 14;
    check(
        syscall6(
            SYS_PRCTL,
            PR_SET_MM,
            PR_SET_MM_MAP,
            &map as *const PrctlMmMap as usize,
            size_of::<PrctlMmMap>(),
            0,
            0,
        ),
        format_args!("prctl(PR_SET_MM, PR_SET_MM_MAP)"),
    );
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
