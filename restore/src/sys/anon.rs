//! eventfd, timerfd, signalfd, epoll, inotify and fanotify: made with the
//! raw flags and values the image holds (nix's types cannot carry every
//! one of them: real-time signals, unknown flag bits, watch numbers).

use super::{cvt, new_fd};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// eventfd(0, flags).
pub fn eventfd(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers and returns a new fd.
    new_fd(unsafe { libc::eventfd(0, flags) })
}

/// Add `n` to an eventfd's counter (one 8-byte write).
pub fn eventfd_add(fd: BorrowedFd, n: u64) -> io::Result<()> {
    let b = n.to_ne_bytes();
    // SAFETY: write reads the 8 bytes of `b`, which we own.
    let r = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr() as *const libc::c_void, 8) };
    if r != 8 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// timerfd_create(clock, flags).
pub fn timerfd_create(clock: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes integers and returns a new fd.
    new_fd(unsafe { libc::timerfd_create(clock, flags) })
}

/// timerfd_settime(fd, flags, its), the old value not wanted.
pub fn timerfd_settime(fd: BorrowedFd, flags: i32, its: &libc::itimerspec) -> io::Result<()> {
    // SAFETY: timerfd_settime reads one itimerspec, which `its` is; the
    // old value is not written (null).
    cvt(unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, its, std::ptr::null_mut()) })?;
    Ok(())
}

/// TFD_IOC_SET_TICKS: the expirations not read yet.
pub fn timerfd_set_ticks(fd: BorrowedFd, ticks: u64) -> io::Result<()> {
    // _IOW('T', 0, u64)
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64, which `ticks` is.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) })?;
    Ok(())
}

/// signalfd(-1, mask, flags): bit n-1 of `mask` is signal n. Signals
/// glibc keeps for itself (32 and 33) are left out, as sigaddset does.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; all-zero is the empty set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for sig in 1..=64 {
        if mask & (1 << (sig - 1)) != 0 {
            // SAFETY: sigaddset writes into `set`, which we own.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
    }
    // SAFETY: signalfd reads one sigset_t, which `set` is, and returns a
    // new fd.
    new_fd(unsafe { libc::signalfd(-1, &set, flags) })
}

/// epoll_create1(flags).
pub fn epoll_create(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags and returns a new fd.
    new_fd(unsafe { libc::epoll_create1(flags) })
}

/// EPOLL_CTL_ADD: epoll instance `epfd` watches fd `tfd` for `events`,
/// with `data`.
pub fn epoll_add(epfd: RawFd, tfd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event, which `ev` is.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, tfd, &mut ev) })?;
    Ok(())
}

/// EPOLL_CTL_MOD: the item of `tfd` in `epfd` now watches `events`.
pub fn epoll_mod(epfd: RawFd, tfd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event, which `ev` is.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, tfd, &mut ev) })?;
    Ok(())
}

/// epoll_wait(epfd, one event, no wait): the data of the item reported,
/// if one was ready.
pub fn epoll_take_one(epfd: RawFd) -> io::Result<Option<u64>> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: epoll_wait writes at most one epoll_event, into `ev`.
    let n = cvt(unsafe { libc::epoll_wait(epfd, &mut ev, 1, 0) })?;
    Ok((n == 1).then_some(ev.u64))
}

/// inotify_init1(flags).
pub fn inotify_init(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags and returns a new fd.
    new_fd(unsafe { libc::inotify_init1(flags) })
}

/// inotify_add_watch(fd, path, mask): the watch descriptor.
pub fn inotify_add_watch(fd: BorrowedFd, path: &CStr, mask: u32) -> io::Result<i32> {
    // SAFETY: inotify_add_watch reads a NUL-terminated path, which `path`
    // is.
    cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// inotify_rm_watch(fd, wd).
pub fn inotify_rm_watch(fd: BorrowedFd, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes integers only.
    cvt(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) })?;
    Ok(())
}

/// fanotify_init(flags, event_flags).
pub fn fanotify_init(flags: u32, event_flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: fanotify_init takes flags and returns a new fd.
    new_fd(unsafe { libc::fanotify_init(flags, event_flags) })
}

/// fanotify_mark(fd, flags, mask, AT_FDCWD, path).
pub fn fanotify_mark(fd: BorrowedFd, flags: u32, mask: u64, path: &CStr) -> io::Result<()> {
    // SAFETY: fanotify_mark reads a NUL-terminated path, which `path` is.
    cvt(unsafe {
        libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, path.as_ptr())
    })?;
    Ok(())
}
