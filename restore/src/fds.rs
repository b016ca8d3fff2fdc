//! File descriptors of the restored process.
//!
//! Policy (like CRIU's `--shell-job`): fds 0, 1 and 2 are whatever the
//! invoking `cryo restore` has, so the restored program talks to the
//! terminal or pipes of the shell that restored it. Regular files,
//! directories, /dev/null and other character devices are reopened by path
//! with their flags and offset, after checking they are the same file (same
//! device and inode; char devices: same device number). Pipes and terminals
//! at fds 3 and up were connected to something outside the process; they
//! need `--inherit-fd N[=M]` (give restored fd N our fd M). fds the image
//! does not have are closed.

use crate::RestoreError;
use cryo_image::{fd_kind, Image};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

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
        /// (dev, ino) for regular files and directories, rdev for devices.
        dev_ino: Option<(u64, u64)>,
        rdev: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct FdPlan {
    pub fd: i32,
    pub what: String,
    pub source: Source,
    pub cloexec: bool,
}

fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Decide, for every captured fd, where it comes from; check what can be
/// checked now (files exist and are the same).
pub fn plan(img: &Image, inherit: &[(i32, i32)]) -> Result<Vec<FdPlan>, RestoreError> {
    let mut out = Vec::new();
    for f in img.fds().iter() {
        let target = img.str(f.target).unwrap_or("").to_owned();
        let what = format!("{} {}", fd_kind::name(f.kind), target);
        let err = |why: String| RestoreError::Fd {
            fd: f.fd,
            what: what.clone(),
            why,
        };
        let source = if let Some(&(_, ours)) = inherit.iter().find(|(n, _)| *n == f.fd) {
            if !fd_open(ours) {
                return Err(err(format!(
                    "--inherit-fd names our fd {ours}, which is not open"
                )));
            }
            Source::Inherit(ours)
        } else if f.fd <= 2 {
            if !fd_open(f.fd) {
                return Err(err(format!(
                    "it is inherited from cryo restore's own fd {}, which is closed",
                    f.fd
                )));
            }
            Source::Keep
        } else {
            let flags = f.flags as i32
                & !(libc::O_CREAT
                    | libc::O_TRUNC
                    | libc::O_EXCL
                    | libc::O_CLOEXEC
                    | libc::O_NOCTTY);
            match f.kind {
                fd_kind::REGULAR | fd_kind::DIRECTORY => {
                    let md = std::fs::metadata(&target)
                        .map_err(|e| err(format!("{target}: {e}")))?;
                    if md.ino() != f.ino && f.ino != 0 {
                        return Err(err(format!("{target} is a different file now (inode)")));
                    }
                    if f.file != cryo_image::NO_INDEX {
                        if let Some(id) = img.files().get(f.file as usize) {
                            if id.dev != md.dev() || id.ino != md.ino() {
                                return Err(err(format!(
                                    "{target} is a different file now (device/inode)"
                                )));
                            }
                        }
                    }
                    Source::Open {
                        path: target.clone(),
                        flags,
                        pos: f.pos,
                        dev_ino: Some((md.dev(), md.ino())),
                        rdev: None,
                    }
                }
                fd_kind::NULL_DEVICE => Source::Open {
                    path: "/dev/null".into(),
                    flags,
                    pos: 0,
                    dev_ino: None,
                    rdev: None,
                },
                fd_kind::CHAR_DEVICE => {
                    let md = std::fs::metadata(&target)
                        .map_err(|e| err(format!("{target}: {e}")))?;
                    if md.rdev() != f.rdev {
                        return Err(err(format!("{target} is a different device now")));
                    }
                    Source::Open {
                        path: target.clone(),
                        flags,
                        pos: f.pos,
                        dev_ino: None,
                        rdev: Some(f.rdev),
                    }
                }
                fd_kind::PIPE | fd_kind::TTY => {
                    return Err(err(format!(
                        "it was connected outside the process; pass --inherit-fd {}[=OUR_FD] to give it one of ours",
                        f.fd
                    )))
                }
                _ => return Err(err("unsupported kind".into())),
            }
        };
        out.push(FdPlan {
            fd: f.fd,
            what,
            source,
            cloexec: f.cloexec != 0,
        });
    }
    Ok(out)
}

fn dup_above(fd: i32, min: i32) -> Result<i32, RestoreError> {
    // SAFETY: F_DUPFD takes an integer.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD, min) };
    if r < 0 {
        return Err(crate::sys(format!("duplicating fd {fd}")));
    }
    Ok(r)
}

fn close(fd: i32) {
    // SAFETY: closing an fd we own (or one the image does not have).
    unsafe { libc::close(fd) };
}

/// Install the planned fds at their numbers; close every other fd but the
/// two image files, which are returned at fds above all planned ones.
/// Install `plans` at their numbers, close everything else, and keep the
/// `extra` fds (for the shim) at free numbers above them, returned in order.
pub fn install(plans: &[FdPlan], extra: &[i32]) -> Result<Vec<i32>, RestoreError> {
    let high = plans.iter().map(|p| p.fd).max().unwrap_or(2).max(2) + 1;
    // 1. Every source, opened and parked above the highest target.
    let mut parked = Vec::with_capacity(plans.len());
    for p in plans {
        let src = match &p.source {
            Source::Keep => -1,
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
                    .map_err(|e| RestoreError::Fd {
                        fd: p.fd,
                        what: p.what.clone(),
                        why: e.to_string(),
                    })?;
                let md = file.metadata().map_err(|e| RestoreError::Fd {
                    fd: p.fd,
                    what: p.what.clone(),
                    why: e.to_string(),
                })?;
                if dev_ino.is_some_and(|(d, i)| (md.dev(), md.ino()) != (d, i))
                    || rdev.is_some_and(|r| md.rdev() != r)
                {
                    return Err(RestoreError::Fd {
                        fd: p.fd,
                        what: p.what.clone(),
                        why: "replaced while restoring".into(),
                    });
                }
                if *pos != 0 {
                    // SAFETY: lseek takes integers.
                    let r = unsafe { libc::lseek(file.as_raw_fd(), *pos as i64, libc::SEEK_SET) };
                    if r < 0 {
                        return Err(crate::sys(format!("seeking {path} to {pos}")));
                    }
                }
                let raw = file.into_raw_fd();
                let d = dup_above(raw, high)?;
                close(raw);
                d
            }
        };
        parked.push(src);
    }
    let extra = extra
        .iter()
        .map(|&fd| dup_above(fd, high))
        .collect::<Result<Vec<i32>, _>>()?;

    // 2. Down to their numbers.
    for (p, &src) in plans.iter().zip(&parked) {
        if src >= 0 {
            // SAFETY: dup2 takes integers; both fds are valid.
            if unsafe { libc::dup2(src, p.fd) } < 0 {
                return Err(crate::sys(format!("installing fd {}", p.fd)));
            }
        }
        let v = if p.cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: F_SETFD takes an integer.
        unsafe { libc::fcntl(p.fd, libc::F_SETFD, v) };
    }

    // 3. Everything else goes (parked copies, our own files, inherited
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
    for &fd in &extra {
        // SAFETY: F_SETFD takes an integer; the shim must inherit these.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    Ok(extra)
}
