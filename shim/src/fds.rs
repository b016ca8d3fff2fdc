//! The program's fds after the shim's own are closed: FD_CLOEXEC where
//! the image has it (`cryo restore` installed every fd without it, or the
//! exec of the shim would have closed them), and the POSIX locks, which
//! belong to the process and go with any close of their file. And the
//! process's /proc files bound to its memory, opened again on it.

use crate::check;
use crate::sys::*;
use cryo_image::fds::lock_kind;
use cryo_image::Image;

pub fn restore(img: &Image) {
    reopen_memory_files(img);
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

/// The process's own /proc files bound to its memory as they are opened
/// (`cryo_image::fds::proc_memory_file`: maps, mem, environ, auxv ...):
/// `cryo restore` opened them before the exec of the shim, on the memory
/// the exec ended, so they read nothing (a sweep of stop 52). Each
/// description is opened again through its fd, now that the program's
/// memory and auxv are in place, at its offset, and put in the old one's
/// place (an fd sharing it gets the new one too). Another process's are
/// refused at capture.
fn reopen_memory_files(img: &Image) {
    let own = img.process().pid as i32;
    let fds = img.fds();
    for (i, f) in fds.iter().enumerate() {
        let target = img.str(f.target).unwrap_or("");
        if f.kind != cryo_image::fd_kind::PROC
            || f.in_flight != 0
            || !cryo_image::fds::proc_memory_file(target)
            || cryo_image::fds::proc_ids(target).map(|(p, _)| p) != Some(own)
        {
            continue;
        }
        if f.desc as usize != i {
            // (Its description's first fd was opened again just now.)
            let first = fds.get(f.desc as usize).map_or(-1, |d| d.fd);
            check(
                syscall3(SYS_DUP3, first as usize, f.fd as usize, 0),
                format_args!("sharing fd {first} ({target}) at fd {}", f.fd),
            );
            continue;
        }
        let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
        let mut num = [0u8; 24];
        let n = crate::packed::fmt_i64(i64::from(f.fd), &mut num);
        path[14..14 + n].copy_from_slice(&num[..n]);
        let flags = (f.flags & !cryo_image::fds::CREATE_ONLY_FLAGS) as usize | O_CLOEXEC;
        let new = check(
            syscall3(SYS_OPEN, path.as_ptr() as usize, flags, 0),
            format_args!(
                "opening fd {} ({target}) again on the restored memory",
                f.fd
            ),
        );
        if f.pos != 0 {
            check(
                syscall3(SYS_LSEEK, new, f.pos as usize, 0),
                format_args!("seeking fd {} ({target}) to {}", f.fd, f.pos),
            );
        }
        check(
            syscall3(SYS_DUP3, new, f.fd as usize, 0),
            format_args!("putting fd {} ({target}) in place", f.fd),
        );
        syscall3(SYS_CLOSE, new, 0, 0);
    }
}
