//! inotify instances made again with their watches, each at its own
//! watch descriptor.

use crate::fds::{fd_err, set_status_flags, FdErr, FdPlan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::Image;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// Every watch's inode must still be at its path.
pub(crate) fn plan(img: &Image, i: usize, flags: i32, err: &FdErr) -> Result<Source, RestoreError> {
    for w in img.inotify().iter().filter(|w| w.desc == i as u32) {
        if w.via != 0 {
            // On a removed file an fd holds: made again with that fd.
            let held = img
                .fds()
                .iter()
                .find(|f| i64::from(f.fd) == i64::from(w.via) - 1);
            let made = held
                .and_then(|f| img.files().get(f.file as usize))
                .is_some_and(|x| x.flags & cryo_image::fds::file_flags::DELETED != 0);
            if !made {
                return Err(err.why(format!(
                    "watch {} is on a removed file through fd {}, which the image does not make again",
                    w.wd,
                    i64::from(w.via) - 1
                )));
            }
            continue;
        }
        let path = img.str(w.path).unwrap_or("");
        let md = std::fs::metadata(path)
            .map_err(|e| err.why(format!("watch {} on {path}: {e}", w.wd)))?;
        if (md.dev(), md.ino()) != (w.dev, w.ino) {
            return Err(err.why(format!(
                "watch {} on {path}: a different file now (device/inode)",
                w.wd
            )));
        }
        if !same_handle(&w, path) {
            return Err(err.why(format!(
                "watch {} on {path}: a different file now with the same inode number (its file handle differs: removed and made again since the capture)",
                w.wd
            )));
        }
    }
    Ok(Source::Inotify {
        desc: i as u32,
        flags,
    })
}

/// An inotify instance with the image's watches of description `desc`,
/// each at its own watch descriptor: the kernel hands them out in
/// increasing order, so a watch that gets a smaller one than it had is
/// added and removed again until it gets its own.
/// `stored`: the files made again from the image (file index, fd), for a
/// watch on a removed file.
pub(crate) fn make(
    img: &Image,
    p: &FdPlan,
    desc: u32,
    flags: i32,
    stored: &[(u32, std::os::fd::OwnedFd)],
) -> Result<i32, RestoreError> {
    let fd = sys::inotify_init(libc::IN_NONBLOCK | libc::IN_CLOEXEC)
        .map_err(|e| fd_err(p, Why::sys("inotify_init1", e)))?;
    // (An `OwnedFd`: closed on the way out of any failure below.)
    for w in img.inotify().iter().filter(|w| w.desc == desc) {
        let path = img.str(w.path).unwrap_or("");
        let made = (w.via != 0)
            .then(|| {
                let held = img
                    .fds()
                    .iter()
                    .find(|f| i64::from(f.fd) == i64::from(w.via) - 1)?;
                stored.iter().find(|(i, _)| *i == held.file)
            })
            .flatten();
        let open_path = match made {
            Some((_, m)) => format!("/proc/self/fd/{}", m.as_raw_fd()),
            None if w.via != 0 => {
                return Err(fd_err(
                    p,
                    format!("watch {} on {path}: its file was not made again", w.wd),
                ))
            }
            None => path.to_owned(),
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&open_path)
            .map_err(|e| fd_err(p, format!("watch {} on {path}: {e}", w.wd)))?;
        let md = f.metadata().map_err(|e| fd_err(p, e))?;
        if made.is_none()
            && ((md.dev(), md.ino()) != (w.dev, w.ino)
                || !same_handle(&w, &format!("/proc/self/fd/{}", f.as_raw_fd())))
        {
            return Err(fd_err(
                p,
                format!("watch {} on {path}: replaced while restoring", w.wd),
            ));
        }
        let target = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default();
        let mut tries = 0;
        loop {
            // (The errno shown is the last one, also where `got` is a
            // watch descriptor, just not the one wanted.)
            let (got, e) = match sys::inotify_add_watch(fd.as_fd(), &target, w.mask) {
                Ok(got) => (got, std::io::Error::last_os_error()),
                Err(e) => (-1, e),
            };
            if got == w.wd {
                break;
            }
            if got < 0 || got > w.wd || tries > w.wd + 16 {
                return Err(fd_err(
                    p,
                    format!("watch {} on {path} came back as {got} ({e})", w.wd),
                ));
            }
            let _ = sys::inotify_rm_watch(fd.as_fd(), got);
            tries += 1;
        }
    }
    // Each removal above queued an IN_IGNORED event; the captured
    // instance had none queued (capture refuses that): drain them all.
    let mut buf = [0u8; 4096];
    while sys::read(fd.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
    set_status_flags(fd.as_raw_fd(), flags).map_err(|e| fd_err(p, e))?;
    Ok(fd.into_raw_fd())
}

/// Whether the file at `path` is the watched one by its file handle too
/// (the inode number alone can be a later file's).
fn same_handle(w: &cryo_image::fds::InotifyWatch, path: &str) -> bool {
    has_handle(
        path,
        w.handle_kind,
        &w.handle_bytes()[..w.handle_len as usize],
    )
}

/// Whether the file at `path` has the file handle (`kind`, `bytes`) a
/// record kept. True where the record has none (older images) or the
/// filesystem gives none now.
pub(crate) fn has_handle(path: &str, kind: i32, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    match sys::name_to_handle(path) {
        Ok((k, b)) => k == kind && b == bytes,
        Err(_) => true,
    }
}
