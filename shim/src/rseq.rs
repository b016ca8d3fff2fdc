//! The program's rseq area, registered again once its memory is in
//! place (the shim has no libc, so no rseq of its own to drop first).

use crate::check;
use crate::sys::*;
use cryo_image::{process_flags, Image};

pub fn register(img: &Image) {
    let p = img.process();
    if p.flags & process_flags::HAS_RSEQ != 0 && p.rseq_size != 0 {
        check(
            syscall6(
                SYS_RSEQ,
                p.rseq_addr as usize,
                p.rseq_size as usize,
                0,
                p.rseq_sig as usize,
                0,
                0,
            ),
            format_args!("rseq registration at {:#x}", p.rseq_addr),
        );
    }
}
