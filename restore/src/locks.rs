//! File locks: flock and OFD locks and leases (they belong to the open
//! file description) taken again here once the fds are installed; POSIX locks
//! (the process's, gone with any close of the file) checked free here and
//! taken by the shim after its last close.

use crate::fds::{FdPlan, Plan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::fds::lock_kind;
use cryo_image::Image;
use std::os::fd::AsFd;

/// flock and OFD locks, taken by `install`; POSIX locks, taken by the
/// shim, must be free now.
pub(crate) fn plan(img: &Image, out: &mut Plan) -> Result<(), RestoreError> {
    for l in img.locks().iter() {
        if l.kind == lock_kind::FLOCK_MAPPING {
            check_mapping_flock(img, &l)?;
        } else if l.kind != lock_kind::POSIX {
            out.locks.push(l);
        }
    }
    check_posix_locks(img, out)
}

/// A flock lock held through a mapping (`lock_kind::FLOCK_MAPPING`),
/// which the shim takes past its point of no return, must be free now:
/// tried on the file by its path, and let go at once.
fn check_mapping_flock(img: &Image, l: &cryo_image::fds::Lock) -> Result<(), RestoreError> {
    let Some(path) = img
        .files()
        .get(l.fd as usize)
        .and_then(|f| img.str(f.path))
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(());
    };
    let op = if l.write != 0 {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    use std::os::fd::AsRawFd;
    if let Err(e) = sys::flock(file.as_raw_fd(), op | libc::LOCK_NB) {
        return Err(RestoreError::Task(format!(
            "its flock lock on {path}, held through its mapping, cannot be taken again: {e} (is the captured process still running?)"
        )));
    }
    Ok(())
}

/// A POSIX lock the shim will take must not be held by anyone else now
/// (it cannot wait, and a failure there would be past the point of no
/// return). Checked with F_GETLK on the file, by path.
fn check_posix_locks(img: &Image, plan: &Plan) -> Result<(), RestoreError> {
    for l in img.locks().iter().filter(|l| l.kind == lock_kind::POSIX) {
        let Some(p) = plan.fds.iter().find(|p| p.fd == l.fd) else {
            continue;
        };
        let path = match &p.source {
            Source::Open { path, .. } => path,
            Source::Relinked { other, .. } => other,
            _ => continue, // made here (unlinked): no one else can hold it
        };
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(path) else {
            continue;
        };
        let mut fl = flock_struct(l.write != 0, l.start, l.end);
        let got = sys::getlk(file.as_fd(), &mut fl);
        if got.is_ok() && fl.l_type != libc::F_UNLCK as i16 {
            return Err(RestoreError::Fd {
                fd: l.fd,
                what: p.what.clone(),
                why: Why::Said(format!(
                    "its {} lock on bytes {}.. is held by pid {} now (is the captured process still running?)",
                    if l.write != 0 { "write" } else { "read" },
                    l.start,
                    fl.l_pid
                )),
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

pub(crate) fn take(plans: &[FdPlan], l: &cryo_image::fds::Lock) -> Result<(), RestoreError> {
    let p = plans.iter().find(|p| p.fd == l.fd);
    let what = p.map_or(String::new(), |p| p.what.clone());
    let fail = |why: String| RestoreError::Fd {
        fd: l.fd,
        what: what.clone(),
        why: Why::Said(why),
    };
    let r = match l.kind {
        lock_kind::FLOCK => {
            let op = if l.write != 0 {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            sys::flock(l.fd, op | libc::LOCK_NB)
        }
        lock_kind::OFD => sys::ofd_setlk(l.fd, &flock_struct(l.write != 0, l.start, l.end)),
        lock_kind::LEASE => {
            let t = if l.write != 0 {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            };
            sys::setlease(l.fd, t)
        }
        _ => return Ok(()),
    };
    if let Err(e) = r {
        return Err(fail(if l.kind == lock_kind::LEASE {
            format!(
                "cannot take its {} lease again: {e} (a lease needs the file not open {} anywhere else: is the captured process still running?)",
                if l.write != 0 { "write" } else { "read" },
                if l.write != 0 { "at all" } else { "for writing" },
            )
        } else {
            format!(
                "cannot take its {} lock again: {e} (is the captured process still running?)",
                lock_kind::name(l.kind),
            )
        }));
    }
    Ok(())
}
