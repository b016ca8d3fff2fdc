//! File descriptors of the restored process.
//!
//! Policy (like CRIU's `--shell-job`): fds 0, 1 and 2 are whatever the
//! invoking `cryo restore` has, so the restored program talks to the
//! terminal or pipes of the shell that restored it. Every other fd comes
//! back as it was:
//! - fds that shared an open file description (dup) share one again;
//! - regular files, directories, /dev/null and other devices are reopened
//!   by path with their flags and offset, after checking they are the same
//!   file (device and inode; devices: device number);
//! - files of the process's own /proc directory are reopened under the
//!   restored PID;
//! - unlinked files and memfds are made again from their stored bytes and
//!   unlinked again; an unlinked directory, device node or symbolic link
//!   (with what it pointed to) is made again
//!   (empty, same mode and device number) and removed;
//! - a pipe or FIFO whose every end is in the process is made again with
//!   the bytes that were in it;
//! - pipes and terminals connected to something outside the process need
//!   `--inherit-fd N[=M]` (give restored fd N our fd M);
//! - sockets are made again (`sockets`): bound, listening or connected
//!   as they were, a unix pair with its queued bytes;
//! - flock and OFD locks are taken again here; POSIX locks, which belong
//!   to the process and go with any close of the file, by the shim last.
//!
//! fds the image does not have are closed. Every fd is installed without
//! FD_CLOEXEC (the exec of the shim would close it); the shim sets the
//! flag again where the image has it.

use crate::{sys, IntoSys, RestoreError, Why};
use cryo_image::fds::file_flags;
use cryo_image::load::LoadedImage;
use cryo_image::{fd_kind, Image, NO_INDEX};
use std::ffi::CString;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

pub use crate::pipes::PipeMake;
pub use install::install;
pub(crate) use install::{dead_pidfd, open_path, open_removed};

mod install;

/// How one fd of the restored process comes to be.
#[derive(Debug, Clone)]
pub enum Source {
    /// fd 0-2: keep the invoker's.
    Keep,
    /// Our fd with this number (--inherit-fd).
    Inherit(i32),
    /// Reopen by path.
    Open {
        path: String,
        flags: i32,
        pos: u64,
        /// (dev, ino) the opened file must have, or rdev for devices.
        dev_ino: Option<(u64, u64)>,
        rdev: Option<u64>,
    },
    /// Reopen through a file handle (a file whose name was removed and
    /// that has a link elsewhere): open_by_handle_at on a mount of `dev`.
    /// It is opened at `name`, its removed name, linked there for the
    /// moment (so /proc shows `NAME (deleted)` as before), where that name
    /// is free; else through the handle itself (/proc then shows the other
    /// name).
    Handle {
        dev: u64,
        ino: u64,
        kind: i32,
        bytes: Vec<u8>,
        name: String,
        flags: i32,
        pos: u64,
    },
    /// A file whose opened name was removed, reopened through its other
    /// name in the same directory (`other`) and opened at `name`, its
    /// removed name, linked there for the moment, as [`Source::Handle`].
    Relinked {
        other: String,
        name: String,
        flags: i32,
        pos: u64,
        dev_ino: (u64, u64),
    },
    /// The same open file description as the plan at this index.
    SameAs(usize),
    /// An end of a pipe or FIFO made again (`pipes` index), read or write.
    PipeEnd {
        pipe: usize,
        write: bool,
        flags: i32,
    },
    /// A read-write description of a made FIFO whose path was removed
    /// (`pipes` index): opened through its read end.
    FifoReadWrite { pipe: usize, flags: i32 },
    /// A file made again from the image (files index): unlinked or memfd.
    Stored { file: u32, flags: i32, pos: u64 },
    /// An inotify instance with its watches (the image's watches of the
    /// description whose first fd is at this fds-table index).
    Inotify { desc: u32, flags: i32 },
    /// A fanotify group with its marks (the image's group and marks of
    /// the description whose first fd is at this fds-table index).
    Fanotify { desc: u32, flags: i32 },
    /// An eventfd, timerfd or signalfd (`object`: its state in the kind's
    /// table), or an epoll instance (`object`: the fds-table index of its
    /// first fd, which its items name).
    Anon { kind: u32, object: u32, flags: i32 },
    /// A socket made again (`sock`: its index in the sockets table).
    Socket { sock: u32, flags: i32 },
    /// An epoll set, inotify or fanotify instance another process of the
    /// tree makes, with its items, watches or marks (captured as `pid`,
    /// at its fd `fd`): a stand-in until every process has its fds, then
    /// that process's own (pidfd_getfd; see [`take_from_peers`]).
    FromPeer { pid: i32, fd: i32 },
    /// A pidfd of another process of the tree (which exists by the time
    /// fds are installed), or (`start` not 0) of a process outside it that
    /// must still be the one captured (its start time).
    Pidfd { pid: i32, flags: i32, start: u64 },
    /// A /proc file, opened when fds are installed (every process of the
    /// tree exists then, with its PID): `/proc/P/...` of process `pid`
    /// (captured), under the PID it has now; `start`: the start time it
    /// must have (a process outside the tree), 0 for a tree's process.
    Proc {
        path: String,
        pid: Option<i32>,
        start: u64,
        flags: i32,
        pos: u64,
    },
    /// A namespace (`kind`: mnt, net, ...; `ino`: its inode), opened
    /// through the /proc/PID/ns file of a process in it.
    Namespace { kind: String, ino: u64, flags: i32 },
    /// A POSIX message queue, opened by its name (never made: its
    /// messages are the namespace's); `sizes`: (mq_maxmsg, mq_msgsize) it
    /// must still have.
    MQueue {
        name: String,
        flags: i32,
        sizes: (i64, i64),
    },
    /// A hung-up terminal (its master was closed): the slave of a pair
    /// made for captured terminal `rdev` of devpts instance `dev`
    /// ([`crate::ptys::hung_up`]).
    HungUpTty { dev: u64, rdev: u64, flags: i32 },
    /// A pidfd of a process that had ended: one made for the moment per
    /// `process` (the captured pidfd's inode), waited for once every fd
    /// is made.
    DeadPidfd { process: u64, flags: i32 },
    /// A removed directory, device node or symbolic link (`link`: what
    /// it pointed to), made again and removed.
    Remade {
        path: String,
        mode: u32,
        rdev: u64,
        flags: i32,
        link: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct FdPlan {
    pub fd: i32,
    pub what: String,
    pub source: Source,
    pub cloexec: bool,
}

/// Everything `install` does, decided and checked by `plan`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub fds: Vec<FdPlan>,
    /// Pipes and FIFOs to make: (index in the image's pipes, the FIFO's
    /// path and identity, if it is one).
    pub pipes: Vec<PipeMake>,
    /// Files to make again (unlinked, memfd): files-table indices, in
    /// table order; the shim finds them at consecutive fds.
    pub stored: Vec<u32>,
    /// flock and OFD locks: (fd, kind, write, start, end).
    pub locks: Vec<cryo_image::fds::Lock>,
    /// Files of `stored` a tree's restore made already: (files-table
    /// index, our fd).
    pub premade: Vec<(u32, i32)>,
    /// Ends of socket pairs with another process of a tree whose queue
    /// holds files in flight, which this process sends again: (its fd,
    /// our fd of the other end, that end's shutdown bits).
    pub peers: Vec<(i32, i32, u32)>,
}

/// open(2) flags that only matter when creating: dropped when reopening.
/// (O_TMPFILE made a file that is now reopened as any other; O_NOCTTY is
/// added where devices are opened: a terminal must never become the
/// restorer's controlling one by being reopened.)
fn reopen_flags(flags: u32) -> i32 {
    // (O_TMPFILE is __O_TMPFILE | O_DIRECTORY, and the file's flags keep
    // both: the file is a regular one, which O_DIRECTORY would refuse,
    // ENOTDIR.)
    let tmpfile = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32;
    let drop = if flags & tmpfile != 0 {
        cryo_image::fds::CREATE_ONLY_FLAGS | libc::O_DIRECTORY as u32
    } else {
        cryo_image::fds::CREATE_ONLY_FLAGS
    };
    (flags & !drop) as i32
}

/// What `plan` needs for every fd.
struct Cx<'a> {
    loaded: &'a LoadedImage,
    img: &'a Image<'a>,
    fds: &'a [cryo_image::Fd],
    inherit: &'a [(i32, i32)],
    /// A tree's process (its PID), not the root: [`Cx::inherit_fd`].
    member: Option<u32>,
    /// (restored fd, our fd): objects of a tree, made once for every
    /// process that holds them (`crate::tree`).
    made: &'a [(i32, i32)],
    drop_pipe_data: bool,
    restore_stdio: &'a [i32],
    verify: bool,
    /// The pty pairs made again (`crate::ptys`).
    ptys: Option<&'a crate::ptys::Ptys>,
}

impl Cx<'_> {
    /// The option that gives restored fd `n` one of ours:
    /// `--inherit-fd N[=OUR_FD]`, with the PID for a tree's other
    /// processes.
    pub(crate) fn inherit_fd(&self, n: i32) -> String {
        match self.member {
            Some(pid) => format!("--inherit-fd {pid}:{n}[=OUR_FD]"),
            None => format!("--inherit-fd {n}[=OUR_FD]"),
        }
    }
}

/// One fd's plan failed: the error names it.
pub(crate) struct FdErr<'a> {
    pub fd: i32,
    pub what: &'a str,
}

impl FdErr<'_> {
    pub fn why(&self, why: impl Into<Why>) -> RestoreError {
        RestoreError::Fd {
            fd: self.fd,
            what: self.what.to_owned(),
            why: why.into(),
        }
    }
}

/// Decide, for every captured fd, where it comes from; check what can be
/// checked now (files exist and are the same, pipes can be made).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    loaded: &LoadedImage,
    img: &Image,
    member: Option<u32>,
    inherit: &[(i32, i32)],
    made: &[(i32, i32)],
    drop_pipe_data: bool,
    restore_stdio: &[i32],
    verify: bool,
    ptys: Option<&crate::ptys::Ptys>,
) -> Result<Plan, RestoreError> {
    let fds: Vec<cryo_image::Fd> = img.fds().iter().collect();
    let cx = Cx {
        loaded,
        img,
        fds: &fds,
        inherit,
        member,
        made,
        drop_pipe_data,
        restore_stdio,
        verify,
        ptys,
    };
    let mut out = Plan::default();
    // (Every fd that cannot be had, at once.)
    let mut errs = Vec::new();
    for (i, f) in fds.iter().enumerate() {
        let target = img.str(f.target).unwrap_or("").to_owned();
        let what = format!("{} {}", fd_kind::name(f.kind), target);
        let err = FdErr {
            fd: f.fd,
            what: &what,
        };
        let source = match source_of(&cx, i, f, &target, &err, &mut out) {
            Ok(s) => s,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        out.fds.push(FdPlan {
            fd: f.fd,
            what,
            source,
            cloexec: f.cloexec != 0,
        });
    }
    RestoreError::all(errs)?;
    crate::stored::plan_mapped(img, &mut out)?;
    crate::locks::plan(img, &mut out)?;
    Ok(out)
}

/// Where the `i`-th fd of the image comes from, on its own: for an object
/// of a tree, made once for all its holders. `restore_stdio` as for
/// [`plan`].
pub(crate) fn source_one(
    loaded: &LoadedImage,
    img: &Image,
    member: Option<u32>,
    i: usize,
    restore_stdio: &[i32],
    verify: bool,
    ptys: Option<&crate::ptys::Ptys>,
) -> Result<(FdPlan, Plan), RestoreError> {
    let fds: Vec<cryo_image::Fd> = img.fds().iter().collect();
    let cx = Cx {
        loaded,
        img,
        fds: &fds,
        inherit: &[],
        member,
        made: &[],
        drop_pipe_data: false,
        restore_stdio,
        verify,
        ptys,
    };
    let f = fds[i];
    let target = img.str(f.target).unwrap_or("").to_owned();
    let what = format!("{} {}", fd_kind::name(f.kind), target);
    let err = FdErr {
        fd: f.fd,
        what: &what,
    };
    let mut out = Plan::default();
    let source = source_of(&cx, f.desc as usize, &f, &target, &err, &mut out)?;
    Ok((
        FdPlan {
            fd: f.fd,
            what,
            source,
            cloexec: f.cloexec != 0,
        },
        out,
    ))
}

/// Where fd `f` (the `i`-th of the image) comes from.
fn source_of(
    cx: &Cx,
    i: usize,
    f: &cryo_image::Fd,
    target: &str,
    err: &FdErr,
    out: &mut Plan,
) -> Result<Source, RestoreError> {
    let img = cx.img;
    let pipe = matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO)
        .then(|| img.pipes().get(f.object as usize))
        .flatten();
    // Bytes the process had not read yet from a pipe that will not be
    // made again here: they would be lost.
    let unread = |pipe: Option<cryo_image::fds::Pipe>| -> Result<(), RestoreError> {
        match pipe {
            Some(p) if p.data.len > 0 && !cx.drop_pipe_data => Err(err.why(format!(
                "{} bytes were unread in this pipe at capture; the fd it gets here is not that pipe, so they would be lost (--drop-pipe-data accepts that)",
                p.data.len
            ))),
            _ => Ok(()),
        }
    };
    if let Some(&(_, ours)) = cx.made.iter().find(|(n, _)| *n == f.fd) {
        // Made already, with the bytes of a pipe in it.
        return Ok(Source::Inherit(ours));
    }
    if let Some(&(_, ours)) = cx.inherit.iter().find(|(n, _)| *n == f.fd) {
        if !sys::is_open(ours) {
            return Err(err.why(format!(
                "--inherit-fd names our fd {ours}, which is not open"
            )));
        }
        unread(pipe)?;
        return Ok(Source::Inherit(ours));
    }
    let first = f.desc as usize;
    // fds 0-2 are this command's unless --restore-stdio names them (a
    // terminal always is).
    // (Not one --inherit-fd names, or a tree's restore made: its copies
    // follow it.)
    let given =
        |n: i32| cx.inherit.iter().any(|(m, _)| *m == n) || cx.made.iter().any(|(m, _)| *m == n);
    let ours = |g: &cryo_image::Fd| {
        g.fd <= 2 && (!cx.restore_stdio.contains(&g.fd) || g.kind == fd_kind::TTY) && !given(g.fd)
    };
    if first != i {
        let kept = img.fds().get(first).filter(|g| ours(g));
        match kept {
            // A copy at 3 and up of a description kept as ours at 0-2 (a
            // dup of stdout, bash's fd 255 of its terminal): ours too, at
            // that number. Until stop 30 it was left to whatever cryo
            // restore had at its number (meta.img, or nothing).
            Some(g) if f.fd > 2 && f.kind != fd_kind::REGULAR => {
                if !sys::is_open(g.fd) {
                    return Err(err.why(format!(
                        "it is a copy of fd {}, which is cryo restore's own and closed",
                        g.fd
                    )));
                }
                return Ok(Source::Inherit(g.fd));
            }
            // The same of a file (nginx's error.log, at 2 and 3): the file,
            // opened again for its copies at 3 and up, one description of
            // their own (ours is only for 0-2).
            Some(_) if f.fd > 2 => {
                let own = img
                    .fds()
                    .iter()
                    .position(|h| h.desc == f.desc && h.fd > 2)
                    .unwrap_or(i);
                if own != i {
                    return Ok(Source::SameAs(own));
                }
            }
            // At 0-2 too (`2>&1` captured): ours at its own number, which
            // must be open (else the number is free for whatever cryo
            // restore opens next).
            Some(_) if !sys::is_open(f.fd) => {
                return Err(err.why(format!(
                    "it is inherited from cryo restore's own fd {}, which is closed",
                    f.fd
                )));
            }
            _ => return Ok(Source::SameAs(first)),
        }
    } else if ours(f) {
        if !sys::is_open(f.fd) {
            return Err(err.why(format!(
                "it is inherited from cryo restore's own fd {}, which is closed",
                f.fd
            )));
        }
        if matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO) {
            unread(pipe)?;
        }
        return Ok(Source::Keep);
    }
    let flags = reopen_flags(f.flags);
    let file = (f.file != NO_INDEX)
        .then(|| img.files().get(f.file as usize))
        .flatten();
    let deleted = target.ends_with(" (deleted)");
    match f.kind {
        fd_kind::REGULAR | fd_kind::DIRECTORY
            if file.is_some_and(|x| x.flags & file_flags::DELETED != 0) =>
        {
            Ok(crate::stored::plan_fd(f, flags, out))
        }
        fd_kind::DIRECTORY | fd_kind::CHAR_DEVICE if deleted => {
            crate::stored::plan_removed(f, target, flags, None, err)
        }
        fd_kind::SYMLINK if deleted => {
            let to = file
                .filter(|x| x.flags & file_flags::LINK != 0)
                .and_then(|x| img.str(x.path))
                .ok_or_else(|| {
                    err.why("what the removed link pointed to is missing from the image")
                })?;
            crate::stored::plan_removed(f, target, flags, Some(to.to_owned()), err)
        }
        fd_kind::REGULAR if file.is_some_and(|x| x.flags & file_flags::HANDLE != 0) => {
            // Checked now, opened again when installed.
            let (_, kind, bytes) = crate::stored::by_handle(img, f.file).map_err(|w| err.why(w))?;
            Ok(Source::Handle {
                dev: f.dev,
                ino: f.ino,
                kind,
                bytes,
                name: target.trim_end_matches(" (deleted)").to_owned(),
                flags,
                pos: f.pos,
            })
        }
        fd_kind::REGULAR | fd_kind::DIRECTORY | fd_kind::SYMLINK => {
            // A file whose name was removed and that has another: by
            // that one (the files table's path).
            let relinked = (deleted && f.kind == fd_kind::REGULAR)
                .then(|| file.and_then(|x| img.str(x.path)))
                .flatten()
                .filter(|p| !p.is_empty());
            let target = relinked.unwrap_or(target);
            let found = if f.kind == fd_kind::SYMLINK {
                std::fs::symlink_metadata(target)
            } else {
                std::fs::metadata(target)
            };
            // Not the file at its name any more (gone, or another file
            // there: a log rotated, `mv app.log app.log.1`): the very
            // inode by its file handle, where capture kept one (format
            // 11.17), opened with the name it has now (a sweep of stop
            // 52: refused as "a different file now").
            let moved = !found.as_ref().is_ok_and(|md| {
                (md.dev(), md.ino()) == (f.dev, f.ino)
                    && file.is_none_or(|id| {
                        (id.dev, id.ino) == (md.dev(), md.ino()) && id.same_birth(sys::born(md))
                    })
            });
            if moved
                && f.kind == fd_kind::REGULAR
                && relinked.is_none()
                && img.file_handles().iter().any(|h| h.file == f.file)
            {
                if let Ok((_, kind, bytes)) = crate::stored::by_handle(img, f.file) {
                    return Ok(Source::Handle {
                        dev: f.dev,
                        ino: f.ino,
                        kind,
                        bytes,
                        // (No name to link it at for a moment: it has one.)
                        name: String::new(),
                        flags,
                        pos: f.pos,
                    });
                }
            }
            let md = found.map_err(|e| err.why(format!("{target}: {e}")))?;
            let same = (md.dev(), md.ino()) == (f.dev, f.ino)
                && file.is_none_or(|id| (id.dev, id.ino) == (md.dev(), md.ino()));
            if !same {
                return Err(err.why(format!("{target} is a different file now (device/inode)")));
            }
            if !file.is_none_or(|id| id.same_birth(sys::born(&md))) {
                return Err(err.why(format!(
                    "{target} is a different file now (made again: its birth time differs)"
                )));
            }
            if let Some(other) = relinked {
                return Ok(Source::Relinked {
                    other: other.to_owned(),
                    name: f_target_name(img, f),
                    flags,
                    pos: f.pos,
                    dev_ino: (md.dev(), md.ino()),
                });
            }
            let nofollow = if f.kind == fd_kind::SYMLINK {
                libc::O_NOFOLLOW
            } else {
                0
            };
            Ok(Source::Open {
                path: target.to_owned(),
                flags: flags | nofollow,
                pos: f.pos,
                dev_ino: Some((md.dev(), md.ino())),
                rdev: None,
            })
        }
        fd_kind::PROC => {
            let pid = proc_pid(target);
            if let Some(p) = pid.filter(|_| f.rdev != 0) {
                // (Checked again when it is opened.)
                if cryo_image::fds::proc_start_time(p) != Some(f.rdev) {
                    return Err(err.why(format!(
                        "{target} belongs to process {p}, which is not the process it was at capture (gone, or its PID taken again)"
                    )));
                }
            }
            Ok(Source::Proc {
                path: target.to_owned(),
                pid,
                start: f.rdev,
                flags,
                pos: f.pos,
            })
        }
        fd_kind::NAMESPACE => {
            let kind = target.split(':').next().unwrap_or("").to_owned();
            namespace_path(&kind, f.ino).map_err(|e| err.why(e))?;
            Ok(Source::Namespace {
                kind,
                ino: f.ino,
                flags,
            })
        }
        fd_kind::MQUEUE => {
            let sizes = ((f.rdev >> 32) as i64, (f.rdev & 0xffff_ffff) as i64);
            mqueue_check(target, flags, sizes).map_err(|e| err.why(e))?;
            Ok(Source::MQueue {
                name: target.to_owned(),
                flags,
                sizes,
            })
        }
        fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE => {
            let md = std::fs::metadata(target).map_err(|e| err.why(format!("{target}: {e}")))?;
            let fmt = |m: u32| m & libc::S_IFMT;
            if md.rdev() != f.rdev || fmt(md.mode()) != fmt(f.mode) {
                return Err(err.why(format!("{target} is a different device now")));
            }
            // (A device is its number and type: a node made again for the
            // same device, /dev/null recreated, or /dev after a reboot,
            // is the same device. Its inode was compared until stop 47,
            // and every image holding /dev/null was refused once it was
            // recreated: a sweep.)
            Ok(Source::Open {
                path: target.to_owned(),
                flags: flags | libc::O_NOCTTY,
                pos: f.pos,
                dev_ino: Some((md.dev(), md.ino())),
                rdev: Some(f.rdev),
            })
        }
        fd_kind::PIPE | fd_kind::FIFO => {
            let Some(p) = pipe else {
                return Err(err.why("its pipe is missing from the image"));
            };
            if p.flags & cryo_image::fds::pipe_flags::INSIDE == 0 {
                return Err(err.why(format!(
                    "the other end was outside the process; pass {} to give it one of ours",
                    cx.inherit_fd(f.fd)
                )));
            }
            crate::pipes::plan_fd(cx.loaded, cx.fds, f, &p, target, flags, cx.verify, err, out)
        }
        fd_kind::INOTIFY => crate::inotify::plan(img, i, flags, err),
        fd_kind::FANOTIFY => crate::fanotify::plan(img, i, flags, err),
        fd_kind::EVENTFD | fd_kind::TIMERFD | fd_kind::SIGNALFD => Ok(Source::Anon {
            kind: f.kind,
            object: f.object,
            flags,
        }),
        fd_kind::EPOLL => Ok(Source::Anon {
            kind: f.kind,
            object: i as u32,
            flags,
        }),
        fd_kind::TTY => plan_tty(cx, f, target, flags, err),
        fd_kind::HUNG_UP_TTY => Ok(Source::HungUpTty {
            dev: f.dev,
            rdev: f.rdev,
            flags,
        }),
        fd_kind::PTY | fd_kind::PTY_SLAVE => crate::ptys::source(cx.ptys, f, img, flags, err),
        fd_kind::PIDFD if f.object == NO_INDEX => Ok(Source::DeadPidfd {
            process: f.ino,
            flags,
        }),
        fd_kind::PIDFD => {
            // (Checked again when it is opened.)
            if f.rdev != 0 && cryo_image::fds::proc_start_time(f.object as i32) != Some(f.rdev) {
                return Err(err.why(format!(
                    "it is a pidfd of process {}, outside the captured tree, which is gone (or its PID now another's)",
                    f.object
                )));
            }
            Ok(Source::Pidfd {
                pid: f.object as i32,
                flags,
                start: f.rdev,
            })
        }
        fd_kind::SOCKET
            if img
                .sockets()
                .get(f.object as usize)
                .is_some_and(|s| s.state == cryo_image::fds::socket_state::OUTSIDE) =>
        {
            // (Kept as ours at 0-2 unless --restore-stdio names it.)
            Err(err.why(format!(
                "it was connected to a socket outside the captured processes, which cryo cannot connect again; leave fd {} out of --restore-stdio to give it this command's own, or pass {}",
                f.fd,
                cx.inherit_fd(f.fd)
            )))
        }
        fd_kind::SOCKET => crate::sockets::plan(img, f.object, flags, err),
        _ => Err(err.why("unsupported kind")),
    }
}

/// Refuse, for --pidns, an fd that names a process outside the captured
/// tree (a pidfd, a file under its /proc directory): a new PID namespace
/// cannot see it. (`--dry-run` said yes, the restore then failed:
/// stop 35's survey.)
pub(crate) fn outside_of_pidns(img: &Image) -> Result<(), RestoreError> {
    use cryo_image::fd_kind;
    for f in img.fds().iter() {
        let outside = match f.kind {
            fd_kind::PIDFD => f.object != cryo_image::NO_INDEX && f.rdev != 0,
            fd_kind::PROC => f.rdev != 0,
            _ => false,
        };
        if outside {
            return Err(RestoreError::Fd {
                fd: f.fd,
                what: if f.kind == fd_kind::PIDFD { "pidfd" } else { "/proc file" }.into(),
                why: "it names a process outside the captured tree, which a new PID namespace (--pidns) cannot see; restore without --pidns".into(),
            });
        }
    }
    Ok(())
}

/// The PID of a `/proc/PID/...` path (None: /proc/sys, meminfo...).
fn proc_pid(target: &str) -> Option<i32> {
    target
        .strip_prefix("/proc/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// `/proc/CAPTURED/...` as the path of process `now` (its threads'
/// directories too).
/// Open the /proc file of `Source::Proc` at the PID the process it names
/// has now (`own`: the restored process's captured PID), once that
/// process is checked to be the one captured (`start`, its start time;
/// 0: a process of the tree, or none).
pub(crate) fn open_proc(
    p: &FdPlan,
    path: &str,
    pid: Option<i32>,
    start: u64,
    own: i32,
    flags: i32,
    pos: u64,
) -> Result<RawFd, RestoreError> {
    let path = match pid {
        Some(c) => {
            let now = crate::tree::pid_now(c, own);
            if start != 0 && cryo_image::fds::proc_start_time(now) != Some(start) {
                return Err(fd_err(
                    p,
                    format!("process {c} of {path} is no longer the one captured"),
                ));
            }
            proc_path(path, c, now)
        }
        None => path.to_owned(),
    };
    open_path(p, &path, flags, pos, None, None)
}

pub(crate) fn proc_path(target: &str, captured: i32, now: i32) -> String {
    let own = format!("/proc/{captured}/");
    match target.strip_prefix(&own) {
        Some(rest) => {
            let rest = rest.replace(&format!("task/{captured}/"), &format!("task/{now}/"));
            format!("/proc/{now}/{rest}")
        }
        None => target.to_owned(),
    }
}

/// A /proc/PID/ns file of namespace `kind` whose inode is `ino`: this
/// process's own if it is in that namespace, else any process's that is.
pub(crate) fn namespace_path(kind: &str, ino: u64) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let is = |p: &str| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino);
    let own = format!("/proc/self/ns/{kind}");
    if is(&own) {
        return Ok(own);
    }
    let pids = std::fs::read_dir("/proc")
        .map_err(|e| format!("listing /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let p = format!("/proc/{pid}/ns/{kind}");
        if is(&p) {
            return Ok(p);
        }
    }
    Err(format!(
        "the {kind} namespace {kind}:[{ino}] is gone: no process here is in it"
    ))
}

/// A terminal: the same terminal as one of this command's fds 0-2 (an
/// interactive shell's fd 255 and its stdin): that one. Else the terminal
/// at its path, if it is there.
fn plan_tty(
    cx: &Cx,
    f: &cryo_image::Fd,
    target: &str,
    flags: i32,
    err: &FdErr,
) -> Result<Source, RestoreError> {
    let ours = (0..=2).find(|&n| sys::fstat(n).is_ok_and(|st| st.st_rdev == f.rdev));
    // The process's own terminal (the one at its fds 0-2, which are this
    // command's), opened again (less opens /dev/tty): this command's
    // terminal, opened again, never the one that has the captured
    // number now (a pty's number is reused: a survey of stop 37 found
    // less reading a stranger's terminal).
    // (In a tree, a process's fds 0-2 on its root's terminal are made by
    // this command from its own: the terminal is the one there.)
    let twin = cx.fds.iter().find_map(|g| {
        if g.fd > 2 || g.fd == f.fd || g.kind != fd_kind::TTY || g.rdev != f.rdev {
            return None;
        }
        if cx.inherit.iter().any(|(m, _)| *m == g.fd) {
            return None;
        }
        match cx.made.iter().find(|(m, _)| *m == g.fd) {
            Some(&(_, mine)) => Some((g, mine)),
            None => Some((g, g.fd)),
        }
    });
    if let (Some((g, mine)), None, true) = (twin, ours, f.fd > 2) {
        let st = sys::fstat(mine);
        let path = std::fs::read_link(format!("/proc/self/fd/{mine}")).ok();
        return match (sys::isatty(mine), path, st) {
            (true, Some(path), Ok(st)) => Ok(Source::Open {
                path: path.to_string_lossy().into_owned(),
                flags: flags | libc::O_NOCTTY,
                pos: 0,
                dev_ino: None,
                rdev: Some(st.st_rdev),
            }),
            _ => Err(err.why(format!(
                "it is the process's terminal (as its fd {}) opened again, and this restore has no terminal at fd {} to give it (a terminal's number names another after it is gone): restore it on a terminal, or pass {}",
                g.fd, g.fd, cx.inherit_fd(f.fd)
            ))),
        };
    }
    // /dev/tty: the controlling terminal of whoever opens it, and this
    // restore may have none (under setsid, a daemon): opened past the
    // point of no return, it failed ENXIO there where the dry run had
    // said "can be restored here" (a sweep of stop 51: perl's debugger,
    // ghci). Asked now.
    // (Not where the restore makes a pty pair some session's terminal
    // again: a session of the image leads it, zdtm pty00.)
    let ctty_made =
        cx.img.ptys().iter().any(|p| p.sid != 0) || cx.ptys.is_some_and(|p| p.controls_a_session());
    if ours.is_none() && f.rdev == libc::makedev(5, 0) && !ctty_made {
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty")
        {
            return Err(err.why(format!(
                "it is /dev/tty, the process's controlling terminal, and this restore has none ({e}: started without a terminal, or under setsid): restore it on a terminal, or pass {}",
                cx.inherit_fd(f.fd)
            )));
        }
    }
    match ours {
        Some(n) => Ok(Source::Inherit(n)),
        None => match std::fs::metadata(target) {
            Ok(md) if md.rdev() == f.rdev => Ok(Source::Open {
                path: target.to_owned(),
                flags: flags | libc::O_NOCTTY,
                pos: 0,
                dev_ino: None,
                rdev: Some(f.rdev),
            }),
            _ => Err(err.why(format!(
                "a terminal that is not this command's and is gone; pass {} to give it one of ours",
                cx.inherit_fd(f.fd)
            ))),
        },
    }
}

pub(crate) fn seek(p: &FdPlan, fd: RawFd, pos: u64) -> Result<(), RestoreError> {
    if pos == 0 {
        return Ok(());
    }
    sys::seek_to(fd, pos).map_err(|e| fd_err(p, Why::sys(format!("seeking to {pos}"), e)))
}

/// The fds open at once while `install` puts a process's fds in place:
/// every one parked above the highest, then moved down, beside a few of
/// the restore's own. (A survey of stop 36: 10 000 fds under a limit of
/// 20 000 were captured, `--dry-run` said yes, and every restore failed
/// "Too many open files".)
fn fds_at_once(plan: &Plan) -> u64 {
    let high = plan.fds.iter().map(|p| p.fd).max().unwrap_or(2).max(2) as u64 + 1;
    high + plan.fds.len() as u64 + plan.peers.len() as u64 + 16
}

/// Refuse, before anything is done, a process whose fds cannot be put in
/// place under our open-file limit (`install` raises the soft limit to
/// the hard one for it).
pub(crate) fn fits_our_limit(plan: &Plan) -> Result<(), RestoreError> {
    let need = fds_at_once(plan);
    let (_, hard) =
        sys::getrlimit(libc::RLIMIT_NOFILE).map_err(|e| e.into_sys("getrlimit(RLIMIT_NOFILE)"))?;
    if need > hard {
        return Err(RestoreError::Task(format!(
            "its {} fds (the highest {}) need up to {need} open at once while they are put in place, above this process's open-file limit of {hard} (ulimit -Hn); restore it where that limit is higher",
            plan.fds.len(),
            plan.fds.iter().map(|p| p.fd).max().unwrap_or(0)
        )));
    }
    Ok(())
}

/// Raise the soft open-file limit for `install` (to at most the hard
/// one); returns the soft limit to put back.
pub(crate) fn raise_limit_for(plan: &Plan) -> Option<(u64, u64)> {
    let (soft, hard) = sys::getrlimit(libc::RLIMIT_NOFILE).ok()?;
    let need = fds_at_once(plan).min(hard);
    (need > soft && sys::setrlimit(libc::RLIMIT_NOFILE, need, hard).is_ok()).then_some((soft, hard))
}

pub(crate) fn dup_above(fd: i32, min: i32) -> Result<i32, RestoreError> {
    sys::dup_above(fd, min).map_err(|e| e.into_sys(format!("duplicating fd {fd}")))
}

pub(crate) fn fd_err(p: &FdPlan, why: impl Into<Why>) -> RestoreError {
    RestoreError::Fd {
        fd: p.fd,
        what: p.what.clone(),
        why: why.into(),
    }
}

/// F_SETFL with the status flags fcntl can change.
pub(crate) fn set_status_flags(fd: RawFd, flags: i32) -> std::io::Result<()> {
    // (O_ASYNC: signal-driven I/O, registered by F_SETFL only; an open
    // with it does not. Its owner is set once every fd is made.)
    let settable = cryo_image::fds::STATUS_FLAGS as i32;
    // (A failed F_GETFL reads as -1, and the F_SETFL then fails too.)
    let cur = sys::getfl(fd).unwrap_or(-1);
    let want = (cur & !settable) | (flags & settable);
    if want != cur {
        sys::setfl(fd, want)?;
    }
    Ok(())
}

/// Every fd of `plan` that is another process's epoll set, inotify or
/// fanotify instance or pidfd (`Source::FromPeer`): that process's own now, at
/// its number (called
/// once every process of the tree has its fds, before any shim passes
/// its barrier, so the program that owns it cannot have closed it).
pub(crate) fn take_from_peers(plan: &Plan) -> Result<(), RestoreError> {
    for p in &plan.fds {
        let Source::FromPeer { pid, fd } = p.source else {
            continue;
        };
        let now = crate::tree::pid_now(pid, -1);
        let got = sys::fd_of_process(now, fd).map_err(|e| {
            fd_err(
                p,
                Why::sys(
                    format!("taking the instance process {now} made (its fd {fd})"),
                    e,
                ),
            )
        })?;
        sys::dup2(got.as_raw_fd(), p.fd).map_err(|e| fd_err(p, Why::sys("dup2", e)))?;
    }
    Ok(())
}

/// The name an fd had, without the " (deleted)" /proc adds to a removed
/// one.
fn f_target_name(img: &Image, f: &cryo_image::Fd) -> String {
    img.str(f.target)
        .unwrap_or("")
        .trim_end_matches(" (deleted)")
        .to_owned()
}

/// POSIX message queue `name` opened with `flags`, if it is still there
/// with `sizes` (mq_maxmsg, mq_msgsize); else why not.
pub(crate) fn mqueue_check(
    name: &str,
    flags: i32,
    sizes: (i64, i64),
) -> Result<std::os::fd::OwnedFd, String> {
    match sys::mq_open_existing(name, flags) {
        Ok((fd, max, size)) if (max, size) == sizes => Ok(fd),
        Ok((_, max, size)) => Err(format!(
            "the message queue {name} is another now: {max} messages of {size} bytes at most, not {} of {}",
            sizes.0, sizes.1
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(format!(
            "the message queue {name} is gone (mq_unlink); cryo opens a queue again by its name and does not make one, whose messages are gone with it"
        )),
        Err(e) => Err(format!("opening the message queue {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    /// The flag sets both restorers share, as this libc spells them.
    #[test]
    fn shared_flag_sets_are_libc_s() {
        use cryo_image::fds::{CREATE_ONLY_FLAGS, STATUS_FLAGS};
        let status =
            libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME | libc::O_ASYNC;
        assert_eq!(STATUS_FLAGS, status as u32);
        let create = libc::O_CREAT
            | libc::O_TRUNC
            | libc::O_EXCL
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | (libc::O_TMPFILE & !libc::O_DIRECTORY);
        assert_eq!(CREATE_ONLY_FLAGS, create as u32);
    }
}
