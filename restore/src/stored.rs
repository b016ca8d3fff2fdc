//! Files that exist nowhere else, made again: unlinked files and memfds
//! from their stored bytes (holes kept, size, mode, owner, mtime, seals),
//! unlinked again under their own name where it is free; a small file
//! mapped shared that is gone, at its path (`file_flags::KEPT`); removed
//! directories and device nodes (made, opened, removed); a removed
//! working directory.

use crate::fds::{fd_err, FdErr, FdPlan, Plan, Source};
use crate::{sys, IntoSys, RestoreError, Why};
use cryo_image::fds::file_flags;
use cryo_image::load::LoadedImage;
use cryo_image::{Image, NO_INDEX};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
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
    link: Option<String>,
    err: &FdErr,
) -> Result<Source, RestoreError> {
    let path = target.trim_end_matches(" (deleted)").to_owned();
    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
    if parent.starts_with("/proc") {
        return Err(err.why(format!(
            "it was removed, and cryo cannot make directories under {}",
            parent.display()
        )));
    }
    Ok(Source::Remade {
        path,
        mode: f.mode,
        rdev: f.rdev,
        flags,
        link,
    })
}

/// The program's own description of a file made again (`made`, O_RDWR):
/// opened again through /proc with its flags, at its offset. (Not with
/// O_NOFOLLOW, which Python's `tempfile` opens with: /proc/self/fd/N is a
/// symlink, and the open would fail with ELOOP. The flag is kept in the
/// description, but only for F_GETFL to show: it acts on open alone.)
pub(crate) fn reopen(p: &FdPlan, made: RawFd, flags: i32, pos: u64) -> Result<RawFd, RestoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let acc = flags & libc::O_ACCMODE;
    let f = std::fs::OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        // (The made file is a regular file or memfd: never O_DIRECTORY,
        // which an O_TMPFILE's flags carry.)
        .custom_flags(
            flags & !(libc::O_ACCMODE | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_DIRECTORY),
        )
        .open(format!("/proc/self/fd/{made}"))
        .map_err(|e| fd_err(p, e))?;
    crate::fds::seek(p, f.as_raw_fd(), pos)?;
    Ok(f.into_raw_fd())
}

/// Mapped files made again (unlinked, memfd) too, once each; an unlinked
/// file's directory must be there.
pub(crate) fn plan_mapped(img: &Image, out: &mut Plan) -> Result<(), RestoreError> {
    for v in img.vmas().iter() {
        if let Some(file) = (v.file != NO_INDEX)
            .then(|| img.files().get(v.file as usize))
            .flatten()
        {
            let made =
                file.flags & (file_flags::DELETED | file_flags::KEPT | file_flags::HANDLE) != 0;
            if made && !out.stored.contains(&v.file) {
                out.stored.push(v.file);
            }
        }
    }
    // Every file opened by its handle, mapped or not: the shim counts them
    // all among the files passed to it (an fd's own is opened apart).
    for (i, f) in img.files().iter().enumerate() {
        if f.flags & file_flags::HANDLE != 0 && !out.stored.contains(&(i as u32)) {
            out.stored.push(i as u32);
        }
    }
    out.stored.sort_unstable();
    for s in &out.stored {
        let f = img.files().get(*s as usize).expect("validated index");
        if f.flags & (file_flags::MEMFD | file_flags::HANDLE) == 0 {
            let path = img.str(f.path).unwrap_or("");
            let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
            // (An unlinked file's removed directories are made for the
            // moment, `make`; a kept file made again stays at its path.)
            let kept = f.flags & file_flags::KEPT != 0;
            if kept && !Path::new(path).exists() && !parent.is_dir() {
                return Err(RestoreError::Stored {
                    path: path.to_owned(),
                    why: Why::Said(format!(
                        "cryo makes the file again at its path, and its directory {} is gone",
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

/// Kept files this restore made again at their paths (removed again if
/// the restore fails before its exec: see [`remove_made_again`]).
static MADE_AGAIN: std::sync::Mutex<Vec<CString>> = std::sync::Mutex::new(Vec::new());

/// Whether this restore made the kept file at `path` again (a tree's
/// first holder made it; the others take it as the captured one).
pub(crate) fn made_here(path: &str) -> bool {
    let c = cpath(Path::new(path));
    MADE_AGAIN.lock().is_ok_and(|v| v.contains(&c))
}

/// Remove the kept files this restore made again (it failed, or was a
/// dry run): a later restore would find a file that is not the captured
/// one there.
pub fn remove_made_again() {
    if let Ok(mut v) = MADE_AGAIN.lock() {
        for c in v.drain(..) {
            let _ = sys::unlink(&c);
        }
    }
}

/// Files-table entry `idx`, a file whose name was removed and whose other
/// link is elsewhere (`file_flags::HANDLE`), opened by its file handle
/// (O_PATH) and checked to be the very inode captured; with the handle's
/// type and bytes.
pub(crate) fn by_handle(img: &Image, idx: u32) -> Result<(OwnedFd, i32, Vec<u8>), Why> {
    let f = img.files().get(idx as usize).expect("validated index");
    let h = img
        .file_handles()
        .iter()
        .find(|h| h.file == idx)
        .ok_or_else(|| Why::Said("its file handle is missing from the image".into()))?;
    let bytes = h.bytes()[..h.len as usize].to_vec();
    let fd = sys::open_by_handle(f.dev, h.kind, &bytes).map_err(|e| {
        Why::Said(format!(
            "its name was removed and its other link is elsewhere; reopening it by its file handle (open_by_handle_at, which needs CAP_DAC_READ_SEARCH): {e}"
        ))
    })?;
    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| Why::sys("fstat", e))?;
    if (st.st_dev, st.st_ino) != (f.dev, f.ino) {
        return Err(Why::Said("its file handle names another file now".into()));
    }
    Ok((fd, h.kind, bytes))
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
    let err = |why: Why| RestoreError::Stored {
        path: shown.clone(),
        why,
    };
    if f.flags & file_flags::HANDLE != 0 {
        // Its name was removed and its other link is elsewhere: by its
        // file handle, the very inode (the shim checks the rest of its
        // identity before anything is torn down).
        let (fd, _, _) = by_handle(img, idx).map_err(err)?;
        // (An O_PATH fd, which mmap does not take: opened again, read-write
        // where it may be. At its removed name for the moment (linked
        // there, opened, removed again), so that its mappings read
        // `NAME (deleted)` as the captured ones did; through the fd itself
        // where that name is taken or its directory gone.)
        let open_at = |c: &CString| {
            let open = |acc| sys::open(c, acc | libc::O_CLOEXEC);
            open(libc::O_RDWR).or_else(|e| match e.raw_os_error() {
                Some(libc::EACCES | libc::EROFS | libc::ETXTBSY) => open(libc::O_RDONLY),
                _ => Err(e),
            })
        };
        let removed_name = img
            .vmas()
            .iter()
            .find(|v| v.file == idx)
            .and_then(|v| img.str(v.name))
            .and_then(|n| n.strip_suffix(" (deleted)"))
            .map(|n| cpath(Path::new(n)));
        if let Some(c) = removed_name {
            if sys::link_fd(fd.as_raw_fd(), &c).is_ok() {
                let r = open_at(&c);
                let removed = sys::unlink(&c);
                let made = r.map_err(|e| err(Why::sys("opening it through its handle", e)))?;
                removed.map_err(|e| err(Why::sys("removing its name again", e)))?;
                return Ok(made);
            }
        }
        let c = cpath(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())));
        return open_at(&c).map_err(|e| err(Why::sys("opening it through its handle", e)));
    }
    if f.flags & file_flags::KEPT != 0 {
        // The file itself if it is there (checks::mapped_files made sure
        // it is the one captured); else made again at its path below,
        // and left there.
        let c = cpath(Path::new(&shown));
        let open = |acc| sys::open(&c, acc | libc::O_CLOEXEC);
        match open(libc::O_RDWR).or_else(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EROFS) => open(libc::O_RDONLY),
            _ => Err(e),
        }) {
            // Made again by this restore already (a tree's first holder
            // of it): the captured one.
            Ok(fd) if made_here(&shown) => return Ok(fd),
            // The one captured: checked again here, as it may have come
            // since the checks found it gone (another restore of this
            // image making it again at the same moment: both ran, on the
            // one being written, one time in 20 in a survey of stop 36).
            Ok(fd) => {
                let md = std::fs::File::from(fd.try_clone().map_err(|e| err(Why::Io(e)))?)
                    .metadata()
                    .map_err(|e| err(Why::Io(e)))?;
                let same = (md.dev(), md.ino(), md.size()) == (f.dev, f.ino, f.size)
                    && md.mtime() == f.mtime_sec
                    && md.mtime_nsec() as u32 == f.mtime_nsec
                    && f.same_birth(crate::sys::born(&md));
                if !same {
                    return Err(err(Why::Said(
                        "a file appeared at its path since it was found gone (another restore of this image making it again?); it is not the one captured"
                            .into(),
                    )));
                }
                return Ok(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err(Why::sys("opening it", e))),
        }
    }
    let fd = if f.flags & file_flags::MEMFD != 0 {
        const F_SEAL_SEAL: u32 = 1;
        let name = CString::new(shown.trim_start_matches("memfd:")).unwrap_or_default();
        let sealing = if f.seals == F_SEAL_SEAL {
            0
        } else {
            libc::MFD_ALLOW_SEALING
        };
        sys::memfd_create(&name, libc::MFD_CLOEXEC | sealing)
            .map_err(|e| err(Why::sys("memfd_create", e)))?
    } else if f.flags & file_flags::KEPT != 0 {
        let c = cpath(Path::new(&shown));
        let fd = sys::create_new(&c, 0o600).map_err(|e| err(Why::sys("making it again", e)))?;
        if let Ok(mut v) = MADE_AGAIN.lock() {
            v.push(c);
        }
        fd
    } else {
        // Its directories, removed with it (`rm -rf` of a temporary
        // directory whose file is still open), are made for the moment
        // too, and removed again: its path reads as it did. Another
        // restore of the same image may take the free name between the
        // look and the create, or remove a directory both use: each
        // tries again, taking the next name, its own `.NAME.cryo-PID-N`
        // (a sweep of stop 47: 5 of 100 concurrent restores failed "File
        // exists", and a directory was left behind).
        let mut last = None;
        let mut made = None;
        for _ in 0..64 {
            let made_dirs = match make_parents(&shown) {
                Ok(d) => d,
                Err((d, e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                    last = Some((PathBuf::from(d), e));
                    continue;
                }
                Err((d, e)) => {
                    return Err(err(Why::sys(
                        format!("making its removed directory {d} for a moment"),
                        e,
                    )))
                }
            };
            let at = free_name(&shown);
            let c = cpath(&at);
            let r = sys::create_new(&c, 0o600);
            if r.is_ok() {
                let _ = sys::unlink(&c);
            }
            remove_parents(&made_dirs);
            match r {
                Ok(fd) => {
                    made = Some(fd);
                    break;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) => {
                    last = Some((at, e));
                }
                Err(e) => return Err(err(Why::sys(format!("creating {}", at.display()), e))),
            }
        }
        match (made, last) {
            (Some(fd), _) => fd,
            (None, Some((at, e))) => {
                return Err(err(Why::sys(format!("creating {}", at.display()), e)))
            }
            (None, None) => unreachable!(),
        }
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
            .map_err(|e| err(Why::sys("writing its contents", e)))?;
    }
    file.set_len(f.size)
        .map_err(|e| err(Why::sys("setting its size", e)))?;
    let fd = file.as_fd();
    // Owner first: chown clears the setuid and setgid bits.
    let md = file.metadata().map_err(|e| err(Why::Io(e)))?;
    if (md.uid(), md.gid()) != (f.uid, f.gid) {
        sys::fchown(fd, f.uid, f.gid).map_err(|e| {
            err(Why::sys(
                format!("giving it its owner {}:{}", f.uid, f.gid),
                e,
            ))
        })?;
    }
    sys::fchmod(fd, f.mode & 0o7777).map_err(|e| err(Why::sys("chmod", e)))?;
    let _ = sys::set_mtime(fd, f.mtime_sec, f.mtime_nsec as i64);
    // (The shim adds F_SEAL_FUTURE_WRITE, and F_SEAL_SEAL after it, once
    // it has mapped the memfd as it was mapped before that seal.)
    let seals = f.seals & !img.seals_after_mapping(idx);
    if f.flags & file_flags::MEMFD != 0 && seals & !1 != 0 {
        // Everything but F_SEAL_SEAL first, then that one.
        for s in [seals & !1, seals & 1] {
            if s != 0 {
                sys::add_seals(fd, s as i32).map_err(|e| err(Why::sys("sealing it", e)))?;
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
    link: Option<&str>,
) -> Result<i32, RestoreError> {
    // Its directories, removed with it, are made for the moment too (and
    // removed again below, deepest first): its path reads as it did.
    let made_dirs = make_parents(path).map_err(|(d, e)| {
        fd_err(
            p,
            Why::sys(format!("making its removed directory {d} for a moment"), e),
        )
    })?;
    let r = (|| -> Result<i32, RestoreError> {
        let at = free_name(path);
        let c = cpath(&at);
        let dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let made = match link {
            Some(to) => std::os::unix::fs::symlink(to, &at),
            None if dir => sys::mkdir(&c, mode & 0o7777),
            None => sys::mknod(&c, mode, rdev),
        };
        made.map_err(|e| {
            fd_err(
                p,
                Why::sys(format!("making it again at {}", at.display()), e),
            )
        })?;
        let extra = if link.is_some() {
            libc::O_PATH | libc::O_NOFOLLOW
        } else {
            0
        };
        let fd = sys::open(&c, flags | extra | libc::O_CLOEXEC);
        // The object goes, the open fd keeps it.
        let _ = if dir { sys::rmdir(&c) } else { sys::unlink(&c) };
        let fd = fd.map_err(|e| fd_err(p, Why::sys("opening it again", e)))?;
        // mkdir/mknod applied the umask (a link has no mode of its own).
        if link.is_none() {
            let _ = sys::fchmod(fd.as_fd(), mode & 0o7777);
        }
        Ok(fd.into_raw_fd())
    })();
    remove_parents(&made_dirs);
    r
}

/// The missing directories above `path`, made (0700), shallowest first.
fn make_parents(path: &str) -> Result<Vec<CString>, (String, std::io::Error)> {
    let mut up = Path::new(path).parent();
    let mut missing = Vec::new();
    while let Some(d) = up {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_owned());
        up = d.parent();
    }
    let mut made = Vec::new();
    for d in missing.iter().rev() {
        let c = cpath(d);
        match sys::mkdir(&c, 0o700) {
            Ok(()) => made.push(c),
            // Made meanwhile, by another restore of the same image (a
            // sweep of stop 47: "File exists", and a directory left
            // behind): used, and removed after if empty then, as a
            // directory gone at the capture.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && d.is_dir() => made.push(c),
            Err(e) => {
                remove_parents(&made);
                return Err((d.display().to_string(), e));
            }
        }
    }
    Ok(made)
}

/// Remove what [`make_parents`] made, deepest first.
fn remove_parents(made: &[CString]) {
    for c in made.iter().rev() {
        let _ = sys::rmdir(c);
    }
}

/// The restored process's working directory, removed at capture: the
/// directory an installed fd has for the same removed path (so the two
/// are one directory again), else an empty directory made at its path
/// (or next to it), entered, removed.
pub fn enter_removed_dir(plan: &Plan, path: &str) -> Result<(), RestoreError> {
    if let Some(pid) = cryo_image::dead_proc_dir(path) {
        return sys::enter_dead_proc_dir(pid).map_err(|e| {
            e.into_sys(format!(
                "entering {path} of a process made with PID {pid} and ended (the working directory was that dead process's /proc directory)"
            ))
        });
    }
    let same = plan.fds.iter().find(|p| {
        matches!(&p.source, Source::Remade { path: q, mode, .. }
            if q == path && mode & libc::S_IFMT == libc::S_IFDIR)
    });
    if let Some(p) = same {
        // The fd is installed at its number by now.
        return sys::fchdir(p.fd)
            .map_err(|e| e.into_sys(format!("entering the removed working directory {path}")));
    }
    let parents = make_parents(path).map_err(|(d, e)| {
        e.into_sys(format!(
            "making {d}, removed with the working directory {path}, for a moment"
        ))
    })?;
    let at = free_name(path);
    let c = cpath(&at);
    let r = sys::mkdir(&c, 0o700)
        .and_then(|()| sys::chdir(&c))
        .map_err(|e| e.into_sys(format!("making the removed working directory {path} again")));
    let _ = sys::rmdir(&c);
    remove_parents(&parents);
    r
}
