//! A packed restorer's own fds (`cryo restore` makes them before its
//! exec): files, directories and devices opened again (the same inode, at
//! their offsets), eventfds, timerfds, signalfds, epoll sets and pipes
//! whose every end is in the process, each at its number with its status
//! flags and its state, descriptions shared as captured (`cryo_image::pack::
//! fd_obstacle` says what else `cryo pack` refused). Made before the
//! point of no return: a failure leaves the process as it was, with
//! `cryo restore`'s one line and status 1.
//!
//! Numbers: the shim's own fds (meta.img, pages.img) move above the
//! program's highest fd first, so every number the program had is free
//! until its file is put there; a file is made at the lowest free number,
//! which is its own where the program's fds have no gap below it (the
//! usual case: then it stays), else put at its number (`dup3`: a number
//! above every fd made so far, free). A pipe's two ends are made
//! together, and the lowest free numbers may be each other's places:
//! unless both are their own already, each moves above the program's
//! fds first, then to its number.
//!
//! Everything is made without FD_CLOEXEC, as `cryo restore` installs
//! them: `fds::restore` sets it where the image has it (the shim execs
//! nothing meanwhile). Each fd moved used to cost four calls (to a high
//! number, close, back, close) even where it was made at its number:
//! ~50 of a threaded GHC program's ~400 calls in the shim.

use crate::sys::*;
use crate::{check, die, Args};
use cryo_image::fds::{epoll, pipe_flags, EpollItem};
use cryo_image::{fd_kind, Fd, Image};

const SYS_EPOLL_CTL: usize = 233;
const SYS_TIMERFD_CREATE: usize = 283;
const SYS_TIMERFD_SETTIME: usize = 286;
const SYS_SIGNALFD4: usize = 289;
const SYS_EVENTFD2: usize = 290;
const SYS_EPOLL_CREATE1: usize = 291;
const SYS_PIPE2: usize = 293;
const F_GETFL: usize = 3;
const F_SETFL: usize = 4;
const F_SETPIPE_SZ: usize = 1031;
const O_NONBLOCK: usize = 0o4000;
const O_DIRECT: usize = 0o40000;
const EFD_SEMAPHORE: usize = 1;
const EPOLL_CTL_ADD: usize = 1;
const EPOLL_CTL_MOD: usize = 3;
const SYS_EPOLL_WAIT: usize = 232;
/// _IOW('T', 0, u64)
const TFD_IOC_SET_TICKS: usize = 0x4008_5400;
const O_ACCMODE: u32 = 3;

/// Make every fd above 2 of `img`; returns `a` with the shim's own fds
/// moved above them.
pub fn make(img: &Image, a: &Args) -> Args {
    let fds = img.fds();
    for f in fds.iter() {
        if let Some(why) = cryo_image::pack::fd_obstacle(img, &f) {
            die(format_args!(
                "fd {} is {why}: pack the image again with this cryo (cryo pack names what it cannot pack)",
                f.fd
            ));
        }
    }
    if fds.iter().all(|f| f.fd <= 2) {
        return *a;
    }
    let hi = fds
        .iter()
        .map(|f| f.fd.max(2) as usize + 1)
        .max()
        .unwrap_or(3);
    let mut moved = *a;
    moved.meta_fd = above(a.meta_fd, hi);
    moved.pages_fd = above(a.pages_fd, hi);
    moved.alias_fd = above(a.alias_fd, hi);
    for (i, f) in fds.iter().enumerate() {
        if f.fd <= 2 {
            continue;
        }
        if f.desc as usize != i {
            // The same description as an fd before it, placed already;
            // but a file kept as the caller's at 0-2 (nginx's error.log
            // at 2 and 3) is the file again for its copies at 3 and up,
            // as `cryo restore` makes it.
            let first = fds
                .get(f.desc as usize)
                .unwrap_or_else(|| die(format_args!("fd {}: no fd shares its file", f.fd)));
            let own = if first.fd <= 2 && f.kind == fd_kind::REGULAR {
                fds.iter()
                    .position(|g| g.desc == f.desc && g.fd > 2)
                    .unwrap_or(i)
            } else {
                f.desc as usize
            };
            if own != i {
                let from = fds.get(own).map_or(first.fd, |g| g.fd);
                put(from as usize, f.fd, false);
                continue;
            }
        }
        match f.kind {
            fd_kind::PIPE => {
                // Made at the first of its fds, both ends placed then.
                if fds
                    .iter()
                    .position(|g| g.kind == fd_kind::PIPE && g.object == f.object)
                    == Some(i)
                {
                    pipe(img, &f, moved.pages_fd, hi);
                }
            }
            kind => {
                let made = make_one(img, &f, kind);
                if made != f.fd as usize {
                    put(made, f.fd, true);
                }
                status_flags(&f);
            }
        }
    }
    // What each epoll set watched, now that every fd is at its number:
    // the items an EPOLLONESHOT disabled first, each disabled again by
    // a report taken (`cryo_restore`'s `fill_epolls` says why).
    for pass in [true, false] {
        for e in img.epoll_items().iter().filter(|e| e.disabled() == pass) {
            let Some(ep) = fds.get(e.desc as usize) else {
                die(format_args!("an epoll item of no epoll set"));
            };
            let (epfd, events) = (ep.fd as usize, e.events);
            if !pass {
                epoll_ctl(epfd, EPOLL_CTL_ADD, &e, events);
                continue;
            }
            epoll_ctl(epfd, EPOLL_CTL_ADD, &e, events | epoll::ANY);
            let mut out = [0u8; 12];
            if syscall6(SYS_EPOLL_WAIT, epfd, out.as_mut_ptr() as usize, 1, 0, 0, 0) != 1 {
                epoll_ctl(epfd, EPOLL_CTL_MOD, &e, events);
            }
        }
    }
    moved
}

/// epoll_ctl(epfd, op, item's fd, {events, item's data}); dies on failure.
fn epoll_ctl(epfd: usize, op: usize, e: &EpollItem, events: u32) {
    let mut ev = [0u8; 12];
    ev[..4].copy_from_slice(&events.to_le_bytes());
    ev[4..].copy_from_slice(&e.data.to_le_bytes());
    let r = syscall6(
        SYS_EPOLL_CTL,
        epfd,
        op,
        e.tfd as usize,
        ev.as_ptr() as usize,
        0,
        0,
    );
    // Our own stdin, stdout or stderr (the program's are ours) of a kind
    // epoll cannot watch (a regular file, a directory): say what to give
    // it instead, as `cryo restore` does.
    if r == -EPERM && e.tfd <= 2 {
        die(format_args!(
            "epoll set at fd {epfd}: watching fd {} again (it is ours, a file epoll cannot watch: the program watched its own with epoll; give the restorer a pipe or terminal there, e.g. `cat FILE | ./RESTORER`): {}",
            e.tfd,
            crate::packed::errno_name(-r)
        ));
    }
    check(
        r,
        format_args!("epoll set at fd {epfd}: watching fd {} again", e.tfd),
    );
}

/// `fd` moved to a number at or above `hi` (closed where it was).
fn above(fd: usize, hi: usize) -> usize {
    if fd == usize::MAX || fd >= hi {
        return fd;
    }
    let n = check(
        syscall3(SYS_FCNTL, fd, F_DUPFD_CLOEXEC, hi),
        format_args!("moving fd {fd} above the program's fds (to {hi})"),
    );
    syscall3(SYS_CLOSE, fd, 0, 0);
    n
}

/// Put `from` at the program's number `at` (without FD_CLOEXEC: the shim
/// sets it later where the image has it); `close`: `from` was only made
/// for this.
fn put(from: usize, at: i32, close: bool) {
    check(
        syscall3(SYS_DUP3, from, at as usize, 0),
        format_args!("putting fd {at} at its number"),
    );
    if close {
        syscall3(SYS_CLOSE, from, 0, 0);
    }
}

/// The open flags F_SETFL sets, as captured (first fd of a description).
fn status_flags(f: &Fd) {
    let settable = cryo_image::fds::STATUS_FLAGS as usize;
    let cur = check(
        syscall3(SYS_FCNTL, f.fd as usize, F_GETFL, 0),
        format_args!("F_GETFL on fd {}", f.fd),
    );
    let want = (cur & !settable) | (f.flags as usize & settable);
    if want != cur {
        check(
            syscall3(SYS_FCNTL, f.fd as usize, F_SETFL, want),
            format_args!("setting the flags {want:#o} of fd {}", f.fd),
        );
    }
}

/// An fd as captured (at the lowest free number).
fn make_one(img: &Image, f: &Fd, kind: u32) -> usize {
    let missing = || -> ! { die(format_args!("fd {}: no state in the image", f.fd)) };
    match kind {
        fd_kind::EVENTFD => {
            let e = img
                .eventfds()
                .get(f.object as usize)
                .unwrap_or_else(|| missing());
            let sem = if e.semaphore != 0 { EFD_SEMAPHORE } else { 0 };
            let fd = check(
                syscall3(SYS_EVENTFD2, 0, sem, 0),
                format_args!("eventfd for fd {}", f.fd),
            );
            if e.count > 0 {
                let c = e.count.to_le_bytes();
                let r = syscall3(SYS_WRITE, fd, c.as_ptr() as usize, 8);
                if r != 8 {
                    die(format_args!(
                        "setting the counter of eventfd {}: errno {}",
                        f.fd, -r
                    ));
                }
            }
            fd
        }
        fd_kind::TIMERFD => {
            let t = img
                .timerfds()
                .get(f.object as usize)
                .unwrap_or_else(|| missing());
            let fd = check(
                syscall3(SYS_TIMERFD_CREATE, t.clock as usize, 0, 0),
                format_args!("timerfd_create for fd {}", f.fd),
            );
            let (flags, its) = t.rearm(|| {
                let mut ts = [0i64; 2];
                syscall3(
                    SYS_CLOCK_GETTIME,
                    t.clock as usize,
                    ts.as_mut_ptr() as usize,
                    0,
                );
                (ts[0], ts[1])
            });
            check(
                syscall6(
                    SYS_TIMERFD_SETTIME,
                    fd,
                    flags as usize,
                    its.as_ptr() as usize,
                    0,
                    0,
                    0,
                ),
                format_args!("timerfd_settime for fd {}", f.fd),
            );
            if t.ticks > 0 {
                check(
                    syscall3(
                        SYS_IOCTL,
                        fd,
                        TFD_IOC_SET_TICKS,
                        &t.ticks as *const u64 as usize,
                    ),
                    format_args!("the pending expirations of timerfd {}", f.fd),
                );
            }
            fd
        }
        fd_kind::SIGNALFD => {
            let s = img
                .signalfds()
                .get(f.object as usize)
                .unwrap_or_else(|| missing());
            // Without 32 and 33, as `cryo restore` (glibc's sigaddset).
            let mask = s.mask & !(3u64 << 31);
            check(
                syscall6(
                    SYS_SIGNALFD4,
                    usize::MAX,
                    &mask as *const u64 as usize,
                    8,
                    0,
                    0,
                    0,
                ),
                format_args!("signalfd for fd {}", f.fd),
            )
        }
        fd_kind::EPOLL => check(
            syscall3(SYS_EPOLL_CREATE1, 0, 0, 0),
            format_args!("epoll_create1 for fd {}", f.fd),
        ),
        fd_kind::REGULAR | fd_kind::DIRECTORY | fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE => {
            open_again(img, f, kind)
        }
        _ => die(format_args!(
            "fd {}: not a kind a packed restorer makes",
            f.fd
        )),
    }
}

/// A file, directory or device opened again by its path with its open
/// flags (none that creates or truncates) at its offset: the same inode
/// (a device: the same device number) as captured, else a refusal.
// (A frame of its own: its path buffer is not probed into the caller's.)
#[inline(never)]
fn open_again(img: &Image, f: &Fd, kind: u32) -> usize {
    const O_NOCTTY: u32 = 0o400;
    let path = img.str(f.target).unwrap_or("");
    let mut buf = [0u8; 4200];
    if path.is_empty() || path.len() >= buf.len() {
        die(format_args!("fd {}: no path to open it again", f.fd));
    }
    buf[..path.len()].copy_from_slice(path.as_bytes());
    let device = matches!(kind, fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE);
    // Not blocking: a FIFO put in the file's place would wait for a
    // writer for ever, every signal blocked (a sweep of stop 47); the
    // identity check below refuses it. (Its own status flags are set
    // after, `status_flags`.)
    const O_NONBLOCK: u32 = 0o4000;
    let flags = f.flags & !cryo_image::fds::CREATE_ONLY_FLAGS
        | if device { O_NOCTTY } else { 0 }
        | O_NONBLOCK;
    let fd = syscall3(SYS_OPEN, buf.as_ptr() as usize, flags as usize, 0);
    if fd < 0 {
        die(format_args!(
            "opening {path} (fd {}): {}",
            f.fd,
            crate::packed::errno_name(-fd)
        ));
    }
    let fd = fd as usize;
    let mut st = [0u64; 18];
    check(
        syscall3(SYS_FSTAT, fd, st.as_mut_ptr() as usize, 0),
        format_args!("fstat {path}"),
    );
    const S_IFMT: u64 = 0o170000;
    let mode = st[3] & 0xffff_ffff;
    // (A device by its number and type, as `cryo restore` checks it: a
    // node made again for the same device is the same device.)
    let same = if device {
        st[5] == f.rdev && mode & S_IFMT == f.mode as u64 & S_IFMT
    } else {
        (st[0], st[1]) == (f.dev, f.ino)
    };
    let file = (f.file != cryo_image::NO_INDEX)
        .then(|| img.files().get(f.file as usize))
        .flatten();
    let same_birth = file.is_none_or(|id| id.same_birth(born(fd)));
    if !same || !same_birth {
        die(format_args!(
            "{path} (fd {}) is a different file now (device/inode, or made again: birth time)",
            f.fd
        ));
    }
    if f.pos != 0 {
        check(
            syscall3(SYS_LSEEK, fd, f.pos as usize, 0),
            format_args!("seeking fd {} to {}", f.fd, f.pos),
        );
    }
    fd
}

/// The pipe of `f` made again with its capacity and bytes; the first fd
/// of each end gets it.
fn pipe(img: &Image, f: &Fd, pages_fd: usize, hi: usize) {
    let p = img
        .pipes()
        .get(f.object as usize)
        .unwrap_or_else(|| die(format_args!("fd {}: no pipe state in the image", f.fd)));
    let packet = if p.flags & pipe_flags::PACKET != 0 {
        O_DIRECT
    } else {
        0
    };
    let mut ends = [0i32; 2];
    check(
        syscall3(SYS_PIPE2, ends.as_mut_ptr() as usize, packet, 0),
        format_args!("pipe2 for fd {}", f.fd),
    );
    let first = |write: bool| {
        img.fds().iter().find(|g| {
            g.kind == fd_kind::PIPE && g.object == f.object && (g.flags & O_ACCMODE != 0) == write
        })
    };
    let (reader, writer) = (first(false), first(true));
    let in_place =
        reader.is_some_and(|g| g.fd == ends[0]) && writer.is_some_and(|g| g.fd == ends[1]);
    let (r, w) = if in_place {
        (ends[0] as usize, ends[1] as usize)
    } else {
        (above(ends[0] as usize, hi), above(ends[1] as usize, hi))
    };
    let got = syscall3(SYS_FCNTL, w, F_SETPIPE_SZ, p.size as usize);
    if got < 0 || (got as u64) < p.size as u64 {
        die(format_args!(
            "cannot give the pipe at fd {} its capacity of {} bytes (errno {}); raising it past /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE",
            f.fd,
            p.size,
            -got.min(0)
        ));
    }
    if p.data.len > 0 {
        fill(w, pages_fd, p.data.off, p.data.len as usize, f.fd);
    }
    for (end, g) in [(r, reader), (w, writer)] {
        match g {
            Some(g) => {
                if !in_place {
                    put(end, g.fd, true);
                }
                status_flags(&g);
            }
            None => {
                syscall3(SYS_CLOSE, end, 0, 0);
            }
        }
    }
}

/// The `len` bytes at `off` of pages.img (checked when the image was
/// packed) written into the pipe's write end `w`.
fn fill(w: usize, pages_fd: usize, off: u64, len: usize, fd: i32) {
    let size = len.next_multiple_of(cryo_image::PAGE_SIZE as usize);
    let buf = crate::mem::mmap(
        0,
        size,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
        usize::MAX,
        0,
    );
    if buf < 0 {
        die(format_args!(
            "a buffer for the bytes of the pipe at fd {fd}: errno {}",
            -buf
        ));
    }
    let buf = buf as usize;
    if let Err(e) = pread_all(pages_fd, buf, len, off) {
        die(format_args!(
            "reading the bytes of the pipe at fd {fd}: errno {}",
            -e
        ));
    }
    // (Never blocks: the bytes fitted the pipe's capacity at capture.)
    syscall3(SYS_FCNTL, w, F_SETFL, O_NONBLOCK);
    let mut done = 0;
    while done < len {
        let r = syscall3(SYS_WRITE, w, buf + done, len - done);
        if r == -EINTR {
            continue;
        }
        if r <= 0 {
            die(format_args!(
                "putting back the bytes of the pipe at fd {fd}: errno {}",
                -r
            ));
        }
        done += r as usize;
    }
    syscall3(SYS_MUNMAP, buf, size, 0);
}
