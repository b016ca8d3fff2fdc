//! Sockets made again: socket(2), socketpair(2), options, bind, listen,
//! connect and send, on fds we own; addresses are sockaddr bytes as the
//! image holds them.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// socket(family, type | SOCK_CLOEXEC, protocol).
pub fn socket(family: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a new fd we own.
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: the kernel just returned it; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// socketpair(family, type | SOCK_CLOEXEC, 0).
pub fn socketpair(family: i32, ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two fds into `sv`, ours.
    cvt(unsafe { libc::socketpair(family, ty | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) })?;
    // SAFETY: two fresh fds from the kernel, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// getsockopt into `buf`; the length the kernel filled in.
pub fn getsockopt(fd: BorrowedFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `buf`, ours.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok((len as usize).min(buf.len()))
}

/// setsockopt with `val` as the option's bytes.
pub fn setsockopt(fd: BorrowedFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `val.len()` bytes from `val`, ours.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// bind(2) to the sockaddr `addr`.
pub fn bind(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `addr.len()` bytes of a sockaddr from `addr`.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// connect(2) to the sockaddr `addr`.
pub fn connect(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `addr.len()` bytes of a sockaddr from `addr`.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// listen(2).
pub fn listen(fd: BorrowedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC): a connection waiting (the
/// caller knows one does).
pub fn accept(fd: BorrowedFd) -> io::Result<OwnedFd> {
    // SAFETY: no address is asked for; the result is a new fd we own.
    let c = cvt(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: the kernel just returned it; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

/// shutdown(fd, how).
pub fn shutdown(fd: BorrowedFd, how: i32) -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// send(2) all of `buf` without waiting: EAGAIN if it does not fit.
pub fn send_all(fd: BorrowedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
        let n = cvt(unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        })?;
        buf = &buf[n as usize..];
    }
    Ok(())
}
