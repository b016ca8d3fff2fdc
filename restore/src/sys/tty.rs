//! Terminal ioctls on the pty pairs restore makes.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The terminal's termios, speeds included (TCGETS2).
pub fn termios(fd: BorrowedFd) -> io::Result<libc::termios2> {
    // SAFETY: termios2 is plain integers and bytes: all zeros is valid.
    let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 writes one struct termios2 into `t`, which we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t) })?;
    Ok(t)
}

/// Set the terminal's termios now (TCSETS2).
pub fn set_termios(fd: BorrowedFd, t: &libc::termios2) -> io::Result<()> {
    // SAFETY: TCSETS2 reads one struct termios2 from `t`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, t) })?;
    Ok(())
}

pub fn set_winsize(fd: BorrowedFd, w: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one struct winsize from `w`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, w) })?;
    Ok(())
}

/// A request that reads one int through a pointer: TIOCSPTLCK, TIOCPKT,
/// TIOCSPGRP.
pub fn set_int(fd: BorrowedFd, req: libc::Ioctl, v: i32) -> io::Result<()> {
    // SAFETY: each request passed here reads one int from `v`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, &v as *const i32) })?;
    Ok(())
}

/// A request that writes one int through a pointer: TIOCGPTN, FIONREAD.
pub fn get_int(fd: BorrowedFd, req: libc::Ioctl) -> io::Result<i32> {
    let mut v: i32 = 0;
    // SAFETY: each request passed here writes one int into `v`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut i32) })?;
    Ok(v)
}

/// A request with an integer argument by value: TIOCSCTTY (0: do not
/// steal), TIOCEXCL (none).
pub fn arg(fd: BorrowedFd, req: libc::Ioctl, v: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these requests take no pointer; the argument is a value.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, v) })?;
    Ok(())
}

/// A new open file description of a pty master's slave (TIOCGPTPEER).
pub fn peer(master: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes open(2) flags by value, returns a new fd.
    let fd = cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// poll() one fd without waiting (for a terminal, this runs the line
/// discipline's pending work first).
pub fn poll_now(fd: BorrowedFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd we own.
    cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(p.revents)
}

/// The foreground process group of the terminal at `fd` is this
/// process's (false when `fd` is no terminal).
pub fn in_foreground(fd: RawFd) -> bool {
    // SAFETY: getpgrp takes nothing and only queries the kernel.
    foreground(fd) == Some(unsafe { libc::getpgrp() })
}

/// The size of the terminal at `fd`: rows, columns, x and y pixels.
pub fn size(fd: RawFd) -> io::Result<[u32; 4]> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize into `w`, which we own.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) })?;
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel].map(u32::from))
}

/// Make `pgid` the foreground process group of the terminal at `fd`
/// (tcsetpgrp), from the background too: SIGTTOU, which a background
/// caller would get, is blocked for the call.
pub fn set_foreground(fd: RawFd, pgid: i32) -> io::Result<()> {
    let old = super::block_signals_saving(&[libc::SIGTTOU])?;
    // SAFETY: tcsetpgrp takes integers only.
    let r = cvt(unsafe { libc::tcsetpgrp(fd, pgid) });
    let _ = super::set_signal_mask(&old);
    r.map(|_| ())
}

/// The foreground process group of the terminal at `fd`, if it has one.
pub fn foreground(fd: RawFd) -> Option<i32> {
    // SAFETY: tcgetpgrp takes an integer only.
    let fg = unsafe { libc::tcgetpgrp(fd) };
    (fg > 0).then_some(fg)
}
