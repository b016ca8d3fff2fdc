//! Terminal ioctls on fds we own (termios2, window size, pty state).

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// ioctl(fd, req, &mut out) for a request that fills one `T`.
fn get<T: Default>(fd: &impl AsRawFd, req: libc::Ioctl) -> io::Result<T> {
    let mut out = T::default();
    // SAFETY: every request passed here writes exactly one T (the caller
    // pairs each request with its type), into memory we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut out as *mut T) } as libc::c_long)?;
    Ok(out)
}

/// The terminal's termios, speeds included (TCGETS2).
pub fn termios(fd: &impl AsRawFd) -> io::Result<libc::termios2> {
    let mut t: libc::termios2 = zeroed_termios();
    // SAFETY: TCGETS2 writes one struct termios2 into `t`, which we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t) } as libc::c_long)?;
    Ok(t)
}

/// Set the terminal's termios now (TCSETS2).
pub fn set_termios(fd: &impl AsRawFd, t: &libc::termios2) -> io::Result<()> {
    // SAFETY: TCSETS2 reads one struct termios2 from `t`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, t) } as libc::c_long)?;
    Ok(())
}

fn zeroed_termios() -> libc::termios2 {
    // SAFETY: termios2 is plain integers and bytes: all zeros is valid.
    unsafe { std::mem::zeroed() }
}

pub fn winsize(fd: &impl AsRawFd) -> io::Result<libc::winsize> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize into `w`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w) } as libc::c_long)?;
    Ok(w)
}

/// An int-valued query: TIOCGPTN, TIOCGPKT, TIOCGPTLCK, TIOCGEXCL,
/// TIOCGSID, TIOCGPGRP, FIONREAD.
pub fn get_int(fd: &impl AsRawFd, req: libc::Ioctl) -> io::Result<i32> {
    get::<libc::c_int>(fd, req)
}

/// A new open file description of a pty master's slave (TIOCGPTPEER).
pub fn peer(master: &impl AsRawFd, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes open(2) flags by value and returns a new fd.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let fd = cvt(r as libc::c_long)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
