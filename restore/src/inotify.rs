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
        let path = img.str(w.path).unwrap_or("");
        let md = std::fs::metadata(path)
            .map_err(|e| err.why(format!("watch {} on {path}: {e}", w.wd)))?;
        if (md.dev(), md.ino()) != (w.dev, w.ino) {
            return Err(err.why(format!(
                "watch {} on {path}: a different file now (device/inode)",
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
pub(crate) fn make(img: &Image, p: &FdPlan, desc: u32, flags: i32) -> Result<i32, RestoreError> {
    let fd = sys::inotify_init(libc::IN_NONBLOCK | libc::IN_CLOEXEC)
        .map_err(|e| fd_err(p, Why::sys("inotify_init1", e)))?;
    // (An `OwnedFd`: closed on the way out of any failure below.)
    for w in img.inotify().iter().filter(|w| w.desc == desc) {
        let path = img.str(w.path).unwrap_or("");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| fd_err(p, format!("watch {} on {path}: {e}", w.wd)))?;
        let md = f.metadata().map_err(|e| fd_err(p, e))?;
        if (md.dev(), md.ino()) != (w.dev, w.ino) {
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
