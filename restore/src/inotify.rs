//! inotify instances made again with their watches, each at its own
//! watch descriptor.

use crate::fds::{close, fd_err, set_status_flags, FdErr, FdPlan, Source};
use crate::RestoreError;
use cryo_image::Image;
use std::ffi::CString;
use std::os::fd::AsRawFd;
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
