//! The program's fds after the shim's own are closed: FD_CLOEXEC where
//! the image has it (`cryo restore` installed every fd without it, or the
//! exec of the shim would have closed them), and the POSIX locks, which
//! belong to the process and go with any close of their file.

use crate::check;
use crate::sys::*;
use cryo_image::fds::lock_kind;
use cryo_image::Image;

pub fn restore(img: &Image) {
    for f in img.fds().iter() {
        if f.cloexec != 0 {
            check(
                syscall3(SYS_FCNTL, f.fd as usize, F_SETFD, FD_CLOEXEC),
                format_args!("setting FD_CLOEXEC on fd {}", f.fd),
            );
        }
    }
    // Taken now that the shim has closed its own fds (cryo restore
    // checked no one else holds them).
    for l in img.locks().iter() {
        if l.kind != lock_kind::POSIX {
            continue;
        }
        let len = if l.end == u64::MAX {
            0
        } else {
            l.end - l.start + 1
        };
        // struct flock: l_type i16, l_whence i16, pad, l_start, l_len, l_pid.
        let mut fl = [0u64; 4];
        fl[0] = if l.write != 0 { 1 } else { 0 }; // F_WRLCK 1, F_RDLCK 0; SEEK_SET 0
        fl[1] = l.start;
        fl[2] = len;
        check(
            syscall3(SYS_FCNTL, l.fd as usize, F_SETLK, fl.as_mut_ptr() as usize),
            format_args!("taking the POSIX lock on fd {} again", l.fd),
        );
    }
}
