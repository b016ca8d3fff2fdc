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
//!   unlinked again; an unlinked directory or device node is made again
//!   (empty, same mode and device number) and removed;
//! - a pipe or FIFO whose every end is in the process is made again with
//!   the bytes that were in it;
//! - pipes and terminals connected to something outside the process need
//!   `--inherit-fd N[=M]` (give restored fd N our fd M);
//! - flock and OFD locks are taken again here; POSIX locks, which belong
//!   to the process and go with any close of the file, by the shim last.
//!
//! fds the image does not have are closed. Every fd is installed without
//! FD_CLOEXEC (the exec of the shim would close it); the shim sets the
//! flag again where the image has it.

use crate::RestoreError;
use cryo_image::fds::{file_flags, lock_kind, pipe_flags};
use cryo_image::load::LoadedImage;
use cryo_image::{fd_kind, Image, NO_INDEX};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    /// The same open file description as the plan at this index.
    SameAs(usize),
    /// An end of a pipe or FIFO made again (`pipes` index), read or write.
    PipeEnd {
        pipe: usize,
        write: bool,
        flags: i32,
    },
    /// A file made again from the image (files index): unlinked or memfd.
    Stored { file: u32, flags: i32, pos: u64 },
    /// An inotify instance with its watches (the image's watches of the
    /// description whose first fd is at this fds-table index).
    Inotify { desc: u32, flags: i32 },
    /// A removed directory or device node, made again and removed.
    Remade {
        path: String,
        mode: u32,
        rdev: u64,
        flags: i32,
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
}

#[derive(Debug, Clone)]
pub struct PipeMake {
    pub index: usize,
    pub fifo: Option<(String, u64, u64)>,
    pub size: u32,
    pub packet: bool,
    pub data: Vec<u8>,
    /// Keep the write end open (someone holds it).
    pub keep_write: bool,
}

fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// open(2) flags that only matter when creating: dropped when reopening.
/// (O_TMPFILE made a file that is now reopened as any other; O_NOCTTY is
/// added where devices are opened: a terminal must never become the
/// restorer's controlling one by being reopened.)
fn reopen_flags(flags: u32) -> i32 {
    flags as i32
        & !(libc::O_CREAT
            | libc::O_TRUNC
            | libc::O_EXCL
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | (libc::O_TMPFILE & !libc::O_DIRECTORY))
}

/// Decide, for every captured fd, where it comes from; check what can be
/// checked now (files exist and are the same, pipes can be made).
pub fn plan(
    loaded: &LoadedImage,
    img: &Image,
    inherit: &[(i32, i32)],
    drop_pipe_data: bool,
    restore_stdio: &[i32],
    verify: bool,
) -> Result<Plan, RestoreError> {
    let mut out = Plan::default();
    let my_pid = std::process::id();
    let captured_pid = img.process().pid;
    let fds: Vec<cryo_image::Fd> = img.fds().iter().collect();
    for (i, f) in fds.iter().enumerate() {
        let target = img.str(f.target).unwrap_or("").to_owned();
        let what = format!("{} {}", fd_kind::name(f.kind), target);
        let err = |why: String| RestoreError::Fd {
            fd: f.fd,
            what: what.clone(),
            why,
        };
        let pipe = (f.object != NO_INDEX)
            .then(|| img.pipes().get(f.object as usize))
            .flatten();
        // Bytes the process had not read yet from a pipe that will not be
        // made again here: they would be lost.
        let unread = |pipe: Option<cryo_image::fds::Pipe>| -> Result<(), RestoreError> {
            match pipe {
                Some(p) if p.data.len > 0 && !drop_pipe_data => Err(err(format!(
                    "{} bytes were unread in this pipe at capture; the fd it gets here is another pipe, so they would be lost (--drop-pipe-data accepts that)",
                    p.data.len
                ))),
                _ => Ok(()),
            }
        };
        let inherited = inherit.iter().find(|(n, _)| *n == f.fd);
        let first = f.desc as usize;
        let source = if let Some(&(_, ours)) = inherited {
            if !fd_open(ours) {
                return Err(err(format!(
                    "--inherit-fd names our fd {ours}, which is not open"
                )));
            }
            unread(pipe)?;
            Source::Inherit(ours)
        } else if first != i {
            Source::SameAs(first)
        } else if f.fd <= 2 && (!restore_stdio.contains(&f.fd) || f.kind == fd_kind::TTY) {
            if !fd_open(f.fd) {
                return Err(err(format!(
                    "it is inherited from cryo restore's own fd {}, which is closed",
                    f.fd
                )));
            }
            if matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO) {
                unread(pipe)?;
            }
            Source::Keep
        } else {
            let flags = reopen_flags(f.flags);
            let file = (f.file != NO_INDEX)
                .then(|| img.files().get(f.file as usize))
                .flatten();
            let deleted = target.ends_with(" (deleted)");
            match f.kind {
                fd_kind::REGULAR | fd_kind::DIRECTORY
                    if file.is_some_and(|x| x.flags & file_flags::DELETED != 0) =>
                {
                    if !out.stored.contains(&f.file) {
                        out.stored.push(f.file);
                    }
                    Source::Stored {
                        file: f.file,
                        flags,
                        pos: f.pos,
                    }
                }
                fd_kind::DIRECTORY | fd_kind::CHAR_DEVICE if deleted => {
                    let path = target.trim_end_matches(" (deleted)").to_owned();
                    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
                    if !parent.is_dir() {
                        return Err(err(format!(
                            "it was removed, and cryo makes it again in its directory, {}, which is gone",
                            parent.display()
                        )));
                    }
                    Source::Remade {
                        path,
                        mode: f.mode,
                        rdev: f.rdev,
                        flags,
                    }
                }
                fd_kind::REGULAR | fd_kind::DIRECTORY | fd_kind::SYMLINK => {
                    let md = if f.kind == fd_kind::SYMLINK {
                        std::fs::symlink_metadata(&target)
                    } else {
                        std::fs::metadata(&target)
                    }
                    .map_err(|e| err(format!("{target}: {e}")))?;
                    if (md.dev(), md.ino()) != (f.dev, f.ino) {
                        return Err(err(format!(
                            "{target} is a different file now (device/inode)"
                        )));
                    }
                    if let Some(id) = file {
                        if (id.dev, id.ino) != (md.dev(), md.ino()) {
                            return Err(err(format!(
                                "{target} is a different file now (device/inode)"
                            )));
                        }
                    }
                    Source::Open {
                        path: target.clone(),
                        flags: flags
                            | if f.kind == fd_kind::SYMLINK {
                                libc::O_NOFOLLOW
                            } else {
                                0
                            },
                        pos: f.pos,
                        dev_ino: Some((md.dev(), md.ino())),
                        rdev: None,
                    }
                }
                fd_kind::PROC => {
                    // /proc/CAPTURED_PID/... is this process's own now.
                    let own = format!("/proc/{captured_pid}/");
                    let path = match target.strip_prefix(&own) {
                        Some(rest) => {
                            let rest = rest.replace(
                                &format!("task/{captured_pid}/"),
                                &format!("task/{my_pid}/"),
                            );
                            format!("/proc/{my_pid}/{rest}")
                        }
                        None => target.clone(),
                    };
                    Source::Open {
                        path,
                        flags,
                        pos: f.pos,
                        dev_ino: None,
                        rdev: None,
                    }
                }
                fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE => {
                    let md =
                        std::fs::metadata(&target).map_err(|e| err(format!("{target}: {e}")))?;
                    let fmt = |m: u32| m & libc::S_IFMT;
                    if md.rdev() != f.rdev || fmt(md.mode()) != fmt(f.mode) {
                        return Err(err(format!("{target} is a different device now")));
                    }
                    if (md.dev(), md.ino()) != (f.dev, f.ino) {
                        return Err(err(format!(
                            "{target} is a different device node now (device/inode)"
                        )));
                    }
                    Source::Open {
                        path: target.clone(),
                        flags: flags | libc::O_NOCTTY,
                        pos: f.pos,
                        dev_ino: Some((md.dev(), md.ino())),
                        rdev: Some(f.rdev),
                    }
                }
                fd_kind::PIPE | fd_kind::FIFO => {
                    let Some(p) = pipe else {
                        return Err(err("its pipe is missing from the image".into()));
                    };
                    if p.flags & pipe_flags::INSIDE == 0 {
                        return Err(err(format!(
                            "the other end was outside the process; pass --inherit-fd {}[=OUR_FD] to give it one of ours",
                            f.fd
                        )));
                    }
                    let index = f.object as usize;
                    if !out.pipes.iter().any(|m| m.index == index) {
                        let fifo = if f.kind == fd_kind::FIFO {
                            let md = std::fs::metadata(&target)
                                .map_err(|e| err(format!("{target}: {e}")))?;
                            if (md.dev(), md.ino()) != (f.dev, f.ino) {
                                return Err(err(format!(
                                    "{target} is a different file now (device/inode)"
                                )));
                            }
                            Some((target.clone(), f.dev, f.ino))
                        } else {
                            None
                        };
                        let data = if p.data.len > 0 {
                            loaded.read_blob(&p.data, verify)?
                        } else {
                            Vec::new()
                        };
                        let keep_write = fds.iter().any(|g| {
                            g.object == f.object
                                && g.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
                        });
                        out.pipes.push(PipeMake {
                            index,
                            fifo,
                            size: p.size,
                            packet: p.flags & pipe_flags::PACKET != 0,
                            data,
                            keep_write,
                        });
                    }
                    let acc = f.flags as i32 & libc::O_ACCMODE;
                    if acc == libc::O_RDWR && f.kind == fd_kind::PIPE {
                        return Err(err("a pipe end open for both reading and writing".into()));
                    }
                    if acc == libc::O_RDWR {
                        // A FIFO opened read-write: its own description,
                        // opened so again (never blocks), while the ends
                        // made with its bytes are still open.
                        Source::Open {
                            path: target.clone(),
                            flags,
                            pos: 0,
                            dev_ino: Some((f.dev, f.ino)),
                            rdev: None,
                        }
                    } else {
                        Source::PipeEnd {
                            pipe: index,
                            write: acc != libc::O_RDONLY,
                            flags,
                        }
                    }
                }
                fd_kind::INOTIFY => {
                    for w in img.inotify().iter().filter(|w| w.desc == i as u32) {
                        let path = img.str(w.path).unwrap_or("");
                        let md = std::fs::metadata(path)
                            .map_err(|e| err(format!("watch {} on {path}: {e}", w.wd)))?;
                        if (md.dev(), md.ino()) != (w.dev, w.ino) {
                            return Err(err(format!(
                                "watch {} on {path}: a different file now (device/inode)",
                                w.wd
                            )));
                        }
                    }
                    Source::Inotify {
                        desc: i as u32,
                        flags,
                    }
                }
                fd_kind::TTY => {
                    // The same terminal as one of this command's fds 0-2
                    // (an interactive shell's fd 255 and its stdin): that
                    // one. Else the terminal at its path, if it is there.
                    let ours = (0..=2).find(|&n| {
                        // SAFETY: fstat writes one struct stat we own.
                        let mut st: libc::stat = unsafe { std::mem::zeroed() };
                        // SAFETY: as above.
                        let r = unsafe { libc::fstat(n, &mut st) };
                        r == 0 && st.st_rdev == f.rdev
                    });
                    match ours {
                        Some(n) => Source::Inherit(n),
                        None => match std::fs::metadata(&target) {
                            Ok(md) if md.rdev() == f.rdev => Source::Open {
                                path: target.clone(),
                                flags: flags | libc::O_NOCTTY,
                                pos: 0,
                                dev_ino: None,
                                rdev: Some(f.rdev),
                            },
                            _ => {
                                return Err(err(format!(
                                    "a terminal that is not this command's and is gone; pass --inherit-fd {}[=OUR_FD] to give it one of ours",
                                    f.fd
                                )))
                            }
                        },
                    }
                }
                _ => return Err(err("unsupported kind".into())),
            }
        };
        out.fds.push(FdPlan {
            fd: f.fd,
            what,
            source,
            cloexec: f.cloexec != 0,
        });
    }
    // Mapped files made again (unlinked, memfd) too, once each.
    for v in img.vmas().iter() {
        if let Some(file) = (v.file != NO_INDEX)
            .then(|| img.files().get(v.file as usize))
            .flatten()
        {
            if file.flags & file_flags::DELETED != 0 && !out.stored.contains(&v.file) {
                out.stored.push(v.file);
            }
        }
    }
    out.stored.sort_unstable();
    for s in &out.stored {
        let f = img.files().get(*s as usize).expect("validated index");
        if f.flags & file_flags::MEMFD == 0 {
            let path = img.str(f.path).unwrap_or("");
            let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(RestoreError::Stored {
                    path: path.to_owned(),
                    why: format!(
                        "cryo makes the unlinked file again in its directory, {}, which is gone",
                        parent.display()
                    ),
                });
            }
        }
    }
    for l in img.locks().iter() {
        if l.kind != lock_kind::POSIX {
            out.locks.push(l);
        }
    }
    check_posix_locks(img, &out)?;
    Ok(out)
}

/// A POSIX lock the shim will take must not be held by anyone else now
/// (it cannot wait, and a failure there would be past the point of no
/// return). Checked with F_GETLK on the file, by path.
fn check_posix_locks(img: &Image, plan: &Plan) -> Result<(), RestoreError> {
    for l in img.locks().iter().filter(|l| l.kind == lock_kind::POSIX) {
        let Some(p) = plan.fds.iter().find(|p| p.fd == l.fd) else {
            continue;
        };
        let Source::Open { path, .. } = &p.source else {
            continue; // made here (unlinked): no one else can hold it
        };
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(path) else {
            continue;
        };
        let mut fl = flock_struct(l.write != 0, l.start, l.end);
        // SAFETY: F_GETLK reads and writes one struct flock we own.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
        if r == 0 && fl.l_type != libc::F_UNLCK as i16 {
            return Err(RestoreError::Fd {
                fd: l.fd,
                what: p.what.clone(),
                why: format!(
                    "its {} lock on bytes {}.. is held by pid {} now (is the captured process still running?)",
                    if l.write != 0 { "write" } else { "read" },
                    l.start,
                    fl.l_pid
                ),
            });
        }
    }
    Ok(())
}

fn flock_struct(write: bool, start: u64, end: u64) -> libc::flock {
    libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start as i64,
        l_len: if end == u64::MAX {
            0
        } else {
            (end - start + 1) as i64
        },
        l_pid: 0,
    }
}

fn sys_err(what: impl Into<String>) -> RestoreError {
    crate::sys(what)
}

fn dup_above(fd: i32, min: i32) -> Result<i32, RestoreError> {
    // SAFETY: F_DUPFD takes an integer.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD, min) };
    if r < 0 {
        return Err(sys_err(format!("duplicating fd {fd}")));
    }
    Ok(r)
}

fn close(fd: i32) {
    // SAFETY: closing an fd we own (or one the image does not have).
    unsafe { libc::close(fd) };
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass an fd they just created and own exclusively.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn fd_err(p: &FdPlan, why: impl std::fmt::Display) -> RestoreError {
    RestoreError::Fd {
        fd: p.fd,
        what: p.what.clone(),
        why: why.to_string(),
    }
}

/// F_SETFL with the status flags fcntl can change.
fn set_status_flags(fd: RawFd, flags: i32) -> std::io::Result<()> {
    let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;
    // SAFETY: F_GETFL/F_SETFL take integers.
    let cur = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let want = (cur & !settable) | (flags & settable);
    // SAFETY: as above.
    if want != cur && unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write_all(fd: RawFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: write reads at most data.len() bytes from our slice.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// A made pipe: its two ends (we own them).
struct MadePipe {
    index: usize,
    read: OwnedFd,
    write: Option<OwnedFd>,
}

fn make_pipe(m: &PipeMake) -> Result<MadePipe, String> {
    let (r, w) = match &m.fifo {
        None => {
            let mut fds = [0i32; 2];
            let fl = libc::O_CLOEXEC | if m.packet { libc::O_DIRECT } else { 0 };
            // SAFETY: pipe2 writes two ints into our array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), fl) } < 0 {
                return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
            }
            (owned(fds[0]), owned(fds[1]))
        }
        Some((path, dev, ino)) => {
            let open = |flags: i32| -> Result<OwnedFd, String> {
                let f = std::fs::OpenOptions::new()
                    .read(flags & libc::O_ACCMODE == libc::O_RDONLY)
                    .write(flags & libc::O_ACCMODE == libc::O_WRONLY)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| format!("{path}: {e}"))?;
                let md = f.metadata().map_err(|e| e.to_string())?;
                if (md.dev(), md.ino()) != (*dev, *ino) {
                    return Err(format!("{path} was replaced while restoring"));
                }
                Ok(OwnedFd::from(f))
            };
            let r = open(libc::O_RDONLY)?;
            let w = open(libc::O_WRONLY)?;
            (r, w)
        }
    };
    // SAFETY: F_SETPIPE_SZ takes an integer.
    let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, m.size as i32) };
    if got < 0 || (got as u32) < m.size {
        return Err(format!(
            "cannot give the pipe its capacity of {} bytes ({}); raising it past /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE",
            m.size,
            std::io::Error::last_os_error()
        ));
    }
    set_status_flags(w.as_raw_fd(), libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    write_all(w.as_raw_fd(), &m.data)
        .map_err(|e| format!("putting the buffered bytes back: {e}"))?;
    Ok(MadePipe {
        index: m.index,
        read: r,
        write: m.keep_write.then_some(w),
    })
}

/// The directory of `path` and a free name in it: the path itself if it is
/// free, else `.NAME.cryo-PID-N`.
fn free_name(path: &str) -> PathBuf {
    let p = Path::new(path);
    if std::fs::symlink_metadata(p).is_err() {
        return p.to_owned();
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    let name = p
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
    for n in 0.. {
        let c = dir.join(format!(".{name}.cryo-{}-{n}", std::process::id()));
        if std::fs::symlink_metadata(&c).is_err() {
            return c;
        }
    }
    unreachable!()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Make an unlinked file or memfd again from its stored bytes.
fn make_stored(
    loaded: &LoadedImage,
    img: &Image,
    idx: u32,
    verify: bool,
) -> Result<OwnedFd, RestoreError> {
    let f = img.files().get(idx as usize).expect("validated index");
    let shown = img.str(f.path).unwrap_or("").to_owned();
    let err = |why: String| RestoreError::Stored {
        path: shown.clone(),
        why,
    };
    let fd = if f.flags & file_flags::MEMFD != 0 {
        const F_SEAL_SEAL: u32 = 1;
        let name = CString::new(shown.trim_start_matches("memfd:")).unwrap_or_default();
        let sealing = if f.seals == F_SEAL_SEAL {
            0
        } else {
            libc::MFD_ALLOW_SEALING
        };
        // SAFETY: memfd_create reads a NUL-terminated name we own.
        let r = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | sealing) };
        if r < 0 {
            return Err(err(format!(
                "memfd_create: {}",
                std::io::Error::last_os_error()
            )));
        }
        owned(r)
    } else {
        let at = free_name(&shown);
        let c = cpath(&at);
        // SAFETY: open reads a NUL-terminated path we own.
        let r = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        };
        if r < 0 {
            return Err(err(format!(
                "creating {}: {}",
                at.display(),
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: unlink reads a NUL-terminated path we own.
        unsafe { libc::unlink(c.as_ptr()) };
        owned(r)
    };
    let file = std::fs::File::from(fd);
    use std::os::unix::fs::FileExt;
    for e in img
        .extents()
        .iter()
        .skip(f.first_extent as usize)
        .take(f.extent_count as usize)
    {
        let bytes = loaded.read_blob(&e.data, verify)?;
        file.write_all_at(&bytes, e.file_off)
            .map_err(|e| err(format!("writing its contents: {e}")))?;
    }
    file.set_len(f.size)
        .map_err(|e| err(format!("setting its size: {e}")))?;
    let fd = file.as_raw_fd();
    // SAFETY: fchmod/fchown/futimens take an fd we own and plain values.
    unsafe {
        // Owner first: chown clears the setuid and setgid bits.
        let md = file.metadata().map_err(|e| err(e.to_string()))?;
        if (md.uid(), md.gid()) != (f.uid, f.gid) && libc::fchown(fd, f.uid, f.gid) < 0 {
            return Err(err(format!(
                "giving it its owner {}:{}: {}",
                f.uid,
                f.gid,
                std::io::Error::last_os_error()
            )));
        }
        if libc::fchmod(fd, f.mode & 0o7777) < 0 {
            return Err(err(format!("chmod: {}", std::io::Error::last_os_error())));
        }
        let ts = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: f.mtime_sec,
                tv_nsec: f.mtime_nsec as i64,
            },
        ];
        libc::futimens(fd, ts.as_ptr());
    }
    if f.flags & file_flags::MEMFD != 0 && f.seals & !1 != 0 {
        // Everything but F_SEAL_SEAL first, then that one.
        for s in [f.seals & !1, f.seals & 1] {
            // SAFETY: F_ADD_SEALS takes an integer.
            if s != 0 && unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, s as i32) } < 0 {
                return Err(err(format!(
                    "sealing it: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    Ok(OwnedFd::from(file))
}

/// An inotify instance with the image's watches of description `desc`,
/// each at its own watch descriptor: the kernel hands them out in
/// increasing order, so a watch that gets a smaller one than it had is
/// added and removed again until it gets its own.
fn make_inotify(img: &Image, p: &FdPlan, desc: u32, flags: i32) -> Result<i32, RestoreError> {
    // SAFETY: inotify_init1 takes flags and returns a new fd.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(fd_err(
            p,
            format!("inotify_init1: {}", std::io::Error::last_os_error()),
        ));
    }
    let fail = |why: String| {
        close(fd);
        fd_err(p, why)
    };
    for w in img.inotify().iter().filter(|w| w.desc == desc) {
        let path = img.str(w.path).unwrap_or("");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| fail(format!("watch {} on {path}: {e}", w.wd)))?;
        let md = f.metadata().map_err(|e| fail(e.to_string()))?;
        if (md.dev(), md.ino()) != (w.dev, w.ino) {
            return Err(fail(format!(
                "watch {} on {path}: replaced while restoring",
                w.wd
            )));
        }
        let target = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default();
        let mut tries = 0;
        loop {
            // SAFETY: inotify_add_watch reads a NUL-terminated path we own.
            let got = unsafe { libc::inotify_add_watch(fd, target.as_ptr(), w.mask) };
            if got == w.wd {
                break;
            }
            if got < 0 || got > w.wd || tries > w.wd + 16 {
                return Err(fail(format!(
                    "watch {} on {path} came back as {got} ({})",
                    w.wd,
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: inotify_rm_watch takes integers.
            unsafe { libc::inotify_rm_watch(fd, got) };
            tries += 1;
        }
    }
    // Each removal above queued an IN_IGNORED event; the captured
    // instance had none queued (capture refuses that): drain them all.
    let mut buf = [0u8; 4096];
    // SAFETY: read into our buffer of the size we pass.
    while unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) } > 0 {}
    set_status_flags(fd, flags).map_err(|e| fail(e.to_string()))?;
    Ok(fd)
}

/// A removed directory or device node, made again, opened and removed.
fn make_removed(
    p: &FdPlan,
    path: &str,
    mode: u32,
    rdev: u64,
    flags: i32,
) -> Result<i32, RestoreError> {
    let at = free_name(path);
    let c = cpath(&at);
    let dir = mode & libc::S_IFMT == libc::S_IFDIR;
    // SAFETY: mkdir/mknod read a NUL-terminated path we own.
    let r = unsafe {
        if dir {
            libc::mkdir(c.as_ptr(), mode & 0o7777)
        } else {
            libc::mknod(c.as_ptr(), mode, rdev)
        }
    };
    if r < 0 {
        return Err(fd_err(
            p,
            format!(
                "making it again at {}: {}",
                at.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: open reads a NUL-terminated path we own.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    let e = std::io::Error::last_os_error();
    // SAFETY: as above; the object goes, the open fd keeps it.
    unsafe {
        if dir {
            libc::rmdir(c.as_ptr());
        } else {
            libc::unlink(c.as_ptr());
        }
    }
    if fd < 0 {
        return Err(fd_err(p, format!("opening it again: {e}")));
    }
    // SAFETY: fchmod takes our fd (mkdir/mknod applied the umask).
    unsafe { libc::fchmod(fd, mode & 0o7777) };
    Ok(fd)
}

/// The restored process's working directory, removed at capture: the
/// directory an installed fd has for the same removed path (so the two
/// are one directory again), else an empty directory made at its path
/// (or next to it), entered, removed.
pub fn enter_removed_dir(plan: &Plan, path: &str) -> Result<(), RestoreError> {
    let same = plan.fds.iter().find(|p| {
        matches!(&p.source, Source::Remade { path: q, mode, .. }
            if q == path && mode & libc::S_IFMT == libc::S_IFDIR)
    });
    if let Some(p) = same {
        // SAFETY: fchdir takes an fd, installed at its number by now.
        if unsafe { libc::fchdir(p.fd) } < 0 {
            return Err(sys_err(format!(
                "entering the removed working directory {path}"
            )));
        }
        return Ok(());
    }
    let at = free_name(path);
    let c = cpath(&at);
    // SAFETY: mkdir/chdir/rmdir read a NUL-terminated path we own.
    unsafe {
        if libc::mkdir(c.as_ptr(), 0o700) < 0 || libc::chdir(c.as_ptr()) < 0 {
            return Err(sys_err(format!(
                "making the removed working directory {path} again"
            )));
        }
        libc::rmdir(c.as_ptr());
    }
    Ok(())
}

/// Install the planned fds at their numbers, close every other fd, and
/// put the `extra` fds (for the shim) and the made files at consecutive
/// numbers above them. Returns (extra fds in order, first made file's fd).
pub fn install(
    loaded: &LoadedImage,
    img: &Image,
    plan: &Plan,
    extra: &[i32],
    verify: bool,
) -> Result<(Vec<i32>, Option<i32>), RestoreError> {
    let plans = &plan.fds;
    let high = plans.iter().map(|p| p.fd).max().unwrap_or(2).max(2) + 1;
    // 0. Pipes and stored files.
    let mut pipes = Vec::new();
    for m in &plan.pipes {
        let made = make_pipe(m).map_err(|why| {
            let p = plans
                .iter()
                .find(|p| matches!(p.source, Source::PipeEnd { pipe, .. } if pipe == m.index));
            match p {
                Some(p) => fd_err(p, why),
                None => RestoreError::Sys {
                    what: why,
                    source: std::io::Error::other("pipe"),
                },
            }
        })?;
        pipes.push(made);
    }
    let mut stored = Vec::new();
    for &idx in &plan.stored {
        stored.push((idx, make_stored(loaded, img, idx, verify)?));
    }
    // 1. Every source, opened and parked above the highest target.
    let mut parked: Vec<i32> = Vec::with_capacity(plans.len());
    let mut given: Vec<u32> = Vec::new();
    let mut remade: Vec<(String, i32)> = Vec::new();
    for p in plans {
        let src = match &p.source {
            Source::Keep => -1,
            Source::SameAs(i) => parked[*i],
            Source::Inherit(ours) => dup_above(*ours, high)?,
            Source::Open {
                path,
                flags,
                pos,
                dev_ino,
                rdev,
            } => {
                let acc = flags & libc::O_ACCMODE;
                let file = std::fs::OpenOptions::new()
                    .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
                    .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
                    .custom_flags(flags & !libc::O_ACCMODE)
                    .open(path)
                    .map_err(|e| fd_err(p, e))?;
                let md = file.metadata().map_err(|e| fd_err(p, e))?;
                if dev_ino.is_some_and(|(d, i)| (md.dev(), md.ino()) != (d, i))
                    || rdev.is_some_and(|r| md.rdev() != r)
                {
                    return Err(fd_err(p, "replaced while restoring"));
                }
                seek(p, file.as_raw_fd(), *pos)?;
                let raw = file.into_raw_fd();
                let d = dup_above(raw, high)?;
                close(raw);
                d
            }
            Source::PipeEnd { pipe, write, flags } => {
                let m = pipes
                    .iter()
                    .find(|m| m.index == *pipe)
                    .expect("every planned pipe was made");
                let end = if *write {
                    m.write.as_ref()
                } else {
                    Some(&m.read)
                };
                let Some(end) = end else {
                    return Err(fd_err(p, "its pipe's write end was not made"));
                };
                // Another description of an end we already installed
                // (opened again through /proc, as the program did).
                let first_of_end = parked.iter().zip(plans).any(|(_, q)| {
                    matches!(q.source, Source::PipeEnd { pipe: pp, write: ww, .. } if pp == *pipe && ww == *write)
                });
                let d = if first_of_end {
                    let path = format!("/proc/self/fd/{}", end.as_raw_fd());
                    let f = std::fs::OpenOptions::new()
                        .read(!*write)
                        .write(*write)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&path)
                        .map_err(|e| fd_err(p, e))?;
                    let raw = f.into_raw_fd();
                    let d = dup_above(raw, high)?;
                    close(raw);
                    d
                } else {
                    dup_above(end.as_raw_fd(), high)?
                };
                set_status_flags(d, *flags).map_err(|e| fd_err(p, e))?;
                d
            }
            Source::Stored { file, flags, pos }
                if *flags & libc::O_ACCMODE == libc::O_RDWR && !given.contains(file) =>
            {
                // The made file itself (opened read-write) for the first
                // read-write description: a memfd reopened for writing
                // through /proc counts as one more writer, and the
                // program's own execveat of it then fails (ETXTBSY).
                given.push(*file);
                let (_, fd) = stored
                    .iter()
                    .find(|(i, _)| i == file)
                    .expect("every planned file was made");
                let d = dup_above(fd.as_raw_fd(), high)?;
                set_status_flags(d, *flags).map_err(|e| fd_err(p, e))?;
                seek(p, d, *pos)?;
                d
            }
            Source::Stored { file, flags, pos } => {
                let (_, fd) = stored
                    .iter()
                    .find(|(i, _)| i == file)
                    .expect("every planned file was made");
                // The program's own description: opened again through
                // /proc with its flags (the made fd is O_RDWR).
                let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let acc = flags & libc::O_ACCMODE;
                let f = std::fs::OpenOptions::new()
                    .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
                    .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
                    .custom_flags(flags & !(libc::O_ACCMODE | libc::O_TRUNC))
                    .open(&path)
                    .map_err(|e| fd_err(p, e))?;
                seek(p, f.as_raw_fd(), *pos)?;
                let raw = f.into_raw_fd();
                let d = dup_above(raw, high)?;
                close(raw);
                d
            }
            Source::Inotify { desc, flags } => {
                let raw = make_inotify(img, p, *desc, *flags)?;
                let d = dup_above(raw, high)?;
                close(raw);
                d
            }
            Source::Remade {
                path,
                mode,
                rdev,
                flags,
            } => {
                // One object per removed path: another fd on it (its own
                // description) opens the one already made.
                let raw = match remade.iter().find(|(q, _)| q == path) {
                    Some((_, first)) => {
                        let c = CString::new(format!("/proc/self/fd/{first}")).unwrap_or_default();
                        // SAFETY: open reads a NUL-terminated path we own.
                        let r = unsafe { libc::open(c.as_ptr(), *flags | libc::O_CLOEXEC) };
                        if r < 0 {
                            return Err(fd_err(p, std::io::Error::last_os_error()));
                        }
                        r
                    }
                    None => make_removed(p, path, *mode, *rdev, *flags)?,
                };
                let d = dup_above(raw, high)?;
                close(raw);
                if !remade.iter().any(|(q, _)| q == path) {
                    remade.push((path.clone(), d));
                }
                d
            }
        };
        parked.push(src);
    }
    let mut extra: Vec<i32> = extra
        .iter()
        .map(|&fd| dup_above(fd, high))
        .collect::<Result<Vec<i32>, _>>()?;
    let nextra = extra.len();
    for (_, fd) in &stored {
        extra.push(dup_above(fd.as_raw_fd(), high)?);
    }
    // Everything made is parked (dup'ed) now: close the originals before
    // installing, as they may sit at numbers the program's fds take.
    drop(pipes);
    drop(stored);

    // 2. Down to their numbers.
    for (p, &src) in plans.iter().zip(&parked) {
        if src >= 0 {
            // SAFETY: dup2 takes integers; both fds are valid.
            if unsafe { libc::dup2(src, p.fd) } < 0 {
                return Err(sys_err(format!("installing fd {}", p.fd)));
            }
        }
        // Every fd crosses the exec of the shim, which sets FD_CLOEXEC
        // again where the image has it (the exec would close them).
        // SAFETY: F_SETFD takes an integer.
        unsafe { libc::fcntl(p.fd, libc::F_SETFD, 0) };
    }
    // 3. flock and OFD locks, on the installed descriptions.
    for l in &plan.locks {
        take_lock(plans, l)?;
    }

    // 4. Everything else goes (parked copies, our own files, inherited
    //    extras), except the fds for the shim.
    let keep: Vec<i32> = plans
        .iter()
        .map(|p| p.fd)
        .chain(extra.iter().copied())
        .collect();
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| crate::IntoSys::into_sys(e, "listing /proc/self/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if !keep.contains(&fd) {
            close(fd);
        }
    }
    // 5. The shim's fds at consecutive numbers right above the program's:
    //    first out of the way, then down into place.
    let n = extra.len() as i32;
    let mut tmp = Vec::with_capacity(extra.len());
    for &fd in &extra {
        tmp.push(dup_above(fd, high + n)?);
        close(fd);
    }
    let mut placed = Vec::with_capacity(tmp.len());
    for (i, fd) in tmp.into_iter().enumerate() {
        let want = high + i as i32;
        // SAFETY: dup2 takes integers; `fd` is ours, `want` is free.
        if unsafe { libc::dup2(fd, want) } < 0 {
            return Err(sys_err("placing the shim's fds"));
        }
        close(fd);
        // SAFETY: F_SETFD takes an integer; the shim must inherit these.
        unsafe { libc::fcntl(want, libc::F_SETFD, 0) };
        placed.push(want);
    }
    let files_fd = (placed.len() > nextra).then(|| placed[nextra]);
    placed.truncate(nextra);
    Ok((placed, files_fd))
}

fn seek(p: &FdPlan, fd: RawFd, pos: u64) -> Result<(), RestoreError> {
    if pos == 0 {
        return Ok(());
    }
    // SAFETY: lseek takes integers.
    if unsafe { libc::lseek(fd, pos as i64, libc::SEEK_SET) } < 0 {
        return Err(fd_err(
            p,
            format!("seeking to {pos}: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(())
}

fn take_lock(plans: &[FdPlan], l: &cryo_image::fds::Lock) -> Result<(), RestoreError> {
    let p = plans.iter().find(|p| p.fd == l.fd);
    let what = p.map_or(String::new(), |p| p.what.clone());
    let fail = |why: String| RestoreError::Fd {
        fd: l.fd,
        what: what.clone(),
        why,
    };
    let r = match l.kind {
        lock_kind::FLOCK => {
            let op = if l.write != 0 {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            // SAFETY: flock takes integers.
            unsafe { libc::flock(l.fd, op | libc::LOCK_NB) }
        }
        lock_kind::OFD => {
            let fl = flock_struct(l.write != 0, l.start, l.end);
            // SAFETY: F_OFD_SETLK reads one struct flock we own.
            unsafe { libc::fcntl(l.fd, libc::F_OFD_SETLK, &fl) }
        }
        _ => return Ok(()),
    };
    if r < 0 {
        return Err(fail(format!(
            "cannot take its {} lock again: {} (is the captured process still running?)",
            lock_kind::name(l.kind),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
