//! eventfd, timerfd, signalfd and epoll instances made again: a counter
//! and its mode, a timer re-armed relative to the restore with the
//! expirations not yet read, a mask; an epoll instance gets what it
//! watched once every fd is at its number.

use crate::fds::{fd_err, set_status_flags, FdPlan, Plan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::fds::epoll;
use cryo_image::{fd_kind, Image};
use std::os::fd::{AsFd, IntoRawFd, RawFd};

/// Make the eventfd, timerfd or signalfd `object` of `kind`.
pub(crate) fn make(
    img: &Image,
    p: &FdPlan,
    kind: u32,
    object: u32,
    flags: i32,
) -> Result<i32, RestoreError> {
    let os = |what: &str, e| fd_err(p, Why::sys(what, e));
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
            let fd = sys::eventfd(libc::EFD_CLOEXEC | sem).map_err(|e| os("eventfd", e))?;
            if e.count > 0 {
                sys::eventfd_add(fd.as_fd(), e.count)
                    .map_err(|e| os("setting the eventfd counter", e))?;
            }
            fd
        }
        fd_kind::TIMERFD => {
            let t = img
                .timerfds()
                .get(object as usize)
                .ok_or_else(|| fd_err(p, "no timerfd state in the image"))?;
            let fd = sys::timerfd_create(t.clock, libc::TFD_CLOEXEC)
                .map_err(|e| os("timerfd_create", e))?;
            let (sflags, [i_sec, i_nsec, v_sec, v_nsec]) =
                t.rearm(|| sys::clock_gettime(t.clock).unwrap_or((0, 0)));
            let its = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: i_sec,
                    tv_nsec: i_nsec,
                },
                it_value: libc::timespec {
                    tv_sec: v_sec,
                    tv_nsec: v_nsec,
                },
            };
            sys::timerfd_settime(fd.as_fd(), sflags as i32, &its)
                .map_err(|e| os("timerfd_settime", e))?;
            if t.ticks > 0 {
                // The expirations the program has not read yet.
                sys::timerfd_set_ticks(fd.as_fd(), t.ticks)
                    .map_err(|e| os("setting the timerfd's pending expirations", e))?;
            }
            fd
        }
        fd_kind::SIGNALFD => {
            let s = img
                .signalfds()
                .get(object as usize)
                .ok_or_else(|| fd_err(p, "no signalfd state in the image"))?;
            sys::signalfd(s.mask, libc::SFD_CLOEXEC).map_err(|e| os("signalfd", e))?
        }
        _ => sys::epoll_create(libc::EPOLL_CLOEXEC).map_err(|e| os("epoll_create1", e))?,
    };
    // A number from here on: install moves it to its place and closes it.
    let fd = fd.into_raw_fd();
    set_status_flags(fd, flags).map_err(|e| fd_err(p, e))?;
    Ok(fd)
}

/// What every epoll instance watched, added once all fds are at their
/// numbers (items name fds by number).
///
/// Items an EPOLLONESHOT disabled come first, while their set holds no
/// other item that could be reported: each is added with every event,
/// and, if its file is ready for any, its report is taken, which disables
/// it again as it was (added with its own events only it would be armed
/// for EPOLLERR and EPOLLHUP, which the kernel adds to every item: a
/// sweep of stop 46 saw 40000000 become 40000018 in fdinfo). One whose
/// file is ready for nothing cannot fire: it is left so armed.
pub(crate) fn fill_epolls(img: &Image, plan: &Plan) -> Result<(), RestoreError> {
    let items: Vec<_> = img.epoll_items().iter().collect();
    let disabled = items.iter().filter(|e| e.disabled());
    for e in disabled.chain(items.iter().filter(|e| !e.disabled())) {
        let Some(p) = plan
            .fds
            .iter()
            .find(|p| matches!(p.source, Source::Anon { kind: fd_kind::EPOLL, object, .. } if object == e.desc))
        else {
            continue;
        };
        if e.via == cryo_image::fds::EPOLL_VIA_ELSEWHERE {
            // (In the tree it was captured in, the set's first holder
            // makes it, and this process takes that one.)
            return Err(fd_err(
                p,
                format!(
                    "it watched a file under fd {} that only another process of its tree held; restore the tree from its root's image",
                    e.tfd
                ),
            ));
        }
        let add = || {
            if !e.disabled() {
                return sys::epoll_add(p.fd, e.tfd, e.events, e.data);
            }
            sys::epoll_add(p.fd, e.tfd, e.events | epoll::ANY, e.data)?;
            if sys::epoll_take_one(p.fd)?.is_none() {
                sys::epoll_mod(p.fd, e.tfd, e.events, e.data)?;
            }
            Ok(())
        };
        let r = if e.via == 0 {
            add()
        } else if e.tfd == p.fd {
            // (Its number is the epoll instance's own now: a copy there
            // would replace the instance.)
            Err(std::io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            through((e.via - 1) as i32, e.tfd, add)
        };
        r.map_err(|err| {
            // Our own stdin, stdout or stderr (the program's are ours) of
            // a kind epoll cannot watch: say what to give it instead.
            let what = if e.tfd <= 2 && err.raw_os_error() == Some(libc::EPERM) {
                format!(
                    "watching fd {} again (it is ours, a file epoll cannot watch: the program watched its own with epoll; give the restore a pipe or terminal there, e.g. `cat FILE | cryo restore ...`)",
                    e.tfd
                )
            } else {
                format!("watching fd {} again", e.tfd)
            };
            fd_err(p, Why::sys(what, err))
        })?;
    }
    Ok(())
}

/// Run `f` with fd `at` a copy of fd `via` (an epoll item whose fd was
/// closed or replaced is registered through the number it was added
/// under): what is at `at` now, if anything, is put back after, and a
/// copy made for the moment is closed. Closing an fd does not remove the
/// items of its file (only its file's last close does).
fn through(via: RawFd, at: RawFd, f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    let saved = match sys::getfl(at) {
        Ok(_) => Some(sys::dup_above(at, 3)?),
        Err(_) => None,
    };
    let r = sys::dup2(via, at).and_then(|()| f());
    match saved {
        Some(s) => {
            let back = sys::dup2(s, at);
            sys::close(s);
            back?;
        }
        None => sys::close(at),
    }
    r
}
