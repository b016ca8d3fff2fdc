//! The mm fields (code, data, brk, stack, arguments, environment), the
//! auxiliary vector and the executable, in one PR_SET_MM_MAP.

use crate::mem::*;
use crate::sys::*;
use crate::{check, scratch};
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
    let map: [u64; 13] = [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_buf as u64,
        (n as u64 * 8) | ((exe_fd as u64) << 32),
    ];
    const PR_SET_MM: usize = 35;
    const PR_SET_MM_MAP: usize = 14;
    const PRCTL_MM_MAP_SIZE: usize = 104;
    check(
        syscall6(
            SYS_PRCTL,
            PR_SET_MM,
            PR_SET_MM_MAP,
            map.as_ptr() as usize,
            PRCTL_MM_MAP_SIZE,
            0,
            0,
        ),
        format_args!("prctl(PR_SET_MM, PR_SET_MM_MAP)"),
    );
}
