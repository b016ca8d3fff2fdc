//! eventfd, timerfd, signalfd and epoll instances made again: a counter
//! and its mode, a timer re-armed relative to the restore with the
//! expirations not yet read, a mask; an epoll instance gets what it
//! watched once every fd is at its number.

use crate::fds::{close, fd_err, set_status_flags, FdPlan, Plan, Source};
use crate::RestoreError;
use cryo_image::{fd_kind, Image};

/// Make the eventfd, timerfd or signalfd `object` of `kind`.
pub(crate) fn make(
    img: &Image,
    p: &FdPlan,
    kind: u32,
    object: u32,
    flags: i32,
) -> Result<i32, RestoreError> {
    let os = |what: &str| fd_err(p, format!("{what}: {}", std::io::Error::last_os_error()));
    let fd = match kind {
        fd_kind::EVENTFD => {
            let e = img
                .eventfds()
                .get(object as usize)
                .ok_or_else(|| fd_err(p, "no eventfd state in the image"))?;
            let sem = if e.semaphore != 0 {
                libc::EFD_SEMAPHORE
            } else {
                0
            };
            // SAFETY: eventfd takes integers and returns a new fd.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | sem) };
            if fd < 0 {
                return Err(os("eventfd"));
            }
            if e.count > 0 {
                let c = e.count.to_ne_bytes();
                // SAFETY: write reads the 8 bytes of the counter we own.
                if unsafe { libc::write(fd, c.as_ptr() as *const libc::c_void, 8) } != 8 {
                    close(fd);
                    return Err(os("setting the eventfd counter"));
                }
            }
            fd
        }
        fd_kind::TIMERFD => {
            let t = img
                .timerfds()
                .get(object as usize)
                .ok_or_else(|| fd_err(p, "no timerfd state in the image"))?;
            // SAFETY: timerfd_create takes integers and returns a new fd.
            let fd = unsafe { libc::timerfd_create(t.clock, libc::TFD_CLOEXEC) };
            if fd < 0 {
                return Err(os("timerfd_create"));
            }
            // A periodic timer whose expiration was due at capture (fdinfo
            // shows it_value 0 until the expirations are read, and the
            // kernel re-arms it only on that read) is armed: its next
            // expiration one interval on. Setting a zero value would
            // disarm it for good (seen: the threaded GHC RTS's ticker then
            // blocks in read() forever and the program hangs at exit).
            let (value_sec, value_nsec) = if (t.value_sec, t.value_nsec) == (0, 0)
                && (t.interval_sec, t.interval_nsec) != (0, 0)
            {
                (t.interval_sec, t.interval_nsec)
            } else {
                (t.value_sec, t.value_nsec)
            };
            let mut value = libc::timespec {
                tv_sec: value_sec,
                tv_nsec: value_nsec,
            };
            let abs = t.settime_flags as i32 & libc::TFD_TIMER_ABSTIME != 0;
            if abs && (value_sec, value_nsec) != (0, 0) {
                // The time left at capture, from now, as a deadline.
                let mut now = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: clock_gettime writes one timespec we own.
                unsafe { libc::clock_gettime(t.clock, &mut now) };
                let ns = (now.tv_nsec + value_nsec) as u64;
                value = libc::timespec {
                    tv_sec: now.tv_sec + value_sec + (ns / 1_000_000_000) as i64,
                    tv_nsec: (ns % 1_000_000_000) as i64,
                };
            }
            let its = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: t.interval_sec,
                    tv_nsec: t.interval_nsec,
                },
                it_value: value,
            };
            let sflags = if abs { t.settime_flags as i32 } else { 0 };
            // SAFETY: timerfd_settime reads one itimerspec we own.
            if unsafe { libc::timerfd_settime(fd, sflags, &its, std::ptr::null_mut()) } < 0 {
                close(fd);
                return Err(os("timerfd_settime"));
            }
            if t.ticks > 0 {
                // TFD_IOC_SET_TICKS (_IOW('T', 0, u64)): the expirations
                // the program has not read yet.
                const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
                // SAFETY: the ioctl reads one u64 we own.
                if unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &t.ticks) } < 0 {
                    close(fd);
                    return Err(os("setting the timerfd's pending expirations"));
                }
            }
            fd
        }
        fd_kind::SIGNALFD => {
            let s = img
                .signalfds()
                .get(object as usize)
                .ok_or_else(|| fd_err(p, "no signalfd state in the image"))?;
            // SAFETY: sigset_t is plain data; all-zero is the empty set.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            for sig in 1..=64 {
                if s.mask & (1 << (sig - 1)) != 0 {
                    // SAFETY: sigaddset writes into our set.
                    unsafe { libc::sigaddset(&mut set, sig) };
                }
            }
            // SAFETY: signalfd reads one sigset_t we own.
            let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
            if fd < 0 {
                return Err(os("signalfd"));
            }
            fd
        }
        _ => {
            // SAFETY: epoll_create1 takes a flag and returns a new fd.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(os("epoll_create1"));
            }
            fd
        }
    };
    set_status_flags(fd, flags).map_err(|e| fd_err(p, e))?;
    Ok(fd)
}

/// What every epoll instance watched, added once all fds are at their
/// numbers (items name fds by number).
pub(crate) fn fill_epolls(img: &Image, plan: &Plan) -> Result<(), RestoreError> {
    for e in img.epoll_items().iter() {
        let Some(p) = plan
            .fds
            .iter()
            .find(|p| matches!(p.source, Source::Anon { kind: fd_kind::EPOLL, object, .. } if object == e.desc))
        else {
            continue;
        };
        let mut ev = libc::epoll_event {
            events: e.events,
            u64: e.data,
        };
        // SAFETY: epoll_ctl reads one epoll_event we own.
        if unsafe { libc::epoll_ctl(p.fd, libc::EPOLL_CTL_ADD, e.tfd, &mut ev) } < 0 {
            return Err(fd_err(
                p,
                format!(
                    "watching fd {} again: {}",
                    e.tfd,
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    Ok(())
}
