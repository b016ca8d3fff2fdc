//! Files that exist nowhere else, made again: unlinked files and memfds
//! from their stored bytes (holes kept, size, mode, owner, mtime, seals),
//! unlinked again under their own name where it is free; removed
//! directories and device nodes (made, opened, removed); a removed
//! working directory.

use crate::fds::{fd_err, owned, sys_err, FdErr, FdPlan, Plan, Source};
use crate::{RestoreError, Why};
use cryo_image::fds::file_flags;
use cryo_image::load::LoadedImage;
use cryo_image::{Image, NO_INDEX};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An fd of an unlinked file or memfd: made again once, from the image.
pub(crate) fn plan_fd(f: &cryo_image::Fd, flags: i32, out: &mut Plan) -> Source {
    if !out.stored.contains(&f.file) {
        out.stored.push(f.file);
    }
    Source::Stored {
        file: f.file,
        flags,
        pos: f.pos,
    }
}

/// An fd of a removed directory or device node: made again in its
/// directory, which must be there.
pub(crate) fn plan_removed(
    f: &cryo_image::Fd,
    target: &str,
    flags: i32,
    err: &FdErr,
) -> Result<Source, RestoreError> {
    let path = target.trim_end_matches(" (deleted)").to_owned();
    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(err.why(format!(
            "it was removed, and cryo makes it again in its directory, {}, which is gone",
            parent.display()
        )));
    }
    Ok(Source::Remade {
        path,
        mode: f.mode,
        rdev: f.rdev,
        flags,
    })
}

/// Mapped files made again (unlinked, memfd) too, once each; an unlinked
/// file's directory must be there.
pub(crate) fn plan_mapped(img: &Image, out: &mut Plan) -> Result<(), RestoreError> {
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
                    why: Why::Said(format!(
                        "cryo makes the unlinked file again in its directory, {}, which is gone",
                        parent.display()
                    )),
                });
            }
        }
    }
    Ok(())
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
pub(crate) fn make(
    loaded: &LoadedImage,
    img: &Image,
    idx: u32,
    verify: bool,
) -> Result<OwnedFd, RestoreError> {
    let f = img.files().get(idx as usize).expect("validated index");
    let shown = img.str(f.path).unwrap_or("").to_owned();
    let err = |why: String| RestoreError::Stored {
        path: shown.clone(),
        why: Why::Said(why),
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

/// A removed directory or device node, made again, opened and removed.
pub(crate) fn make_removed(
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
