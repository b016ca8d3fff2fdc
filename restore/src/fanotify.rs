//! fanotify groups made again with their init flags and every mark, its
//! mask, ignore mask and flags, on the same inode, mount or filesystem.

use crate::fds::{fd_err, set_status_flags, FdErr, FdPlan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::fds::{fanotify_mark_kind, FanotifyMark};
use cryo_image::Image;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;

/// Every marked object must still be where capture found it.
pub(crate) fn plan(img: &Image, i: usize, flags: i32, err: &FdErr) -> Result<Source, RestoreError> {
    if !img.fanotify().iter().any(|g| g.desc == i as u32) {
        return Err(err.why("its fanotify group is missing from the image"));
    }
    for m in img.fanotify_marks().iter().filter(|m| m.desc == i as u32) {
        check(img, &m).map_err(|why| err.why(why))?;
    }
    Ok(Source::Fanotify {
        desc: i as u32,
        flags,
    })
}

fn check(img: &Image, m: &FanotifyMark) -> Result<std::fs::File, String> {
    let path = img.str(m.path).unwrap_or("");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(|e| format!("its mark on {path}: {e}"))?;
    let md = f.metadata().map_err(|e| format!("{path}: {e}"))?;
    if (md.dev(), md.ino()) != (m.dev, m.ino) {
        return Err(format!(
            "its mark on {path}: a different {} there now (device/inode)",
            match m.kind {
                fanotify_mark_kind::INODE => "file",
                fanotify_mark_kind::MOUNT => "mount",
                _ => "filesystem",
            }
        ));
    }
    let handle = &m.handle_bytes()[..m.handle_len as usize];
    if !crate::inotify::has_handle(
        &format!("/proc/self/fd/{}", f.as_raw_fd()),
        m.handle_kind,
        handle,
    ) {
        return Err(format!(
            "its mark on {path}: a different file there now with the same inode number (its file handle differs: removed and made again since the capture)"
        ));
    }
    Ok(f)
}

/// The group of description `desc` with its marks.
pub(crate) fn make(img: &Image, p: &FdPlan, desc: u32, flags: i32) -> Result<i32, RestoreError> {
    let Some(g) = img.fanotify().iter().find(|g| g.desc == desc) else {
        return Err(fd_err(p, "its fanotify group is missing from the image"));
    };
    let fd = sys::fanotify_init(g.flags, g.event_flags).map_err(|e| {
        fd_err(
            p,
            Why::sys(
                format!("fanotify_init({:#x}, {:#x})", g.flags, g.event_flags),
                e,
            ),
        )
    })?;
    // (An `OwnedFd`: closed on the way out of any failure below.)
    for m in img.fanotify_marks().iter().filter(|m| m.desc == desc) {
        let obj = check(img, &m).map_err(|why| fd_err(p, why))?;
        let target = CString::new(format!("/proc/self/fd/{}", obj.as_raw_fd())).unwrap_or_default();
        let kind = match m.kind {
            fanotify_mark_kind::MOUNT => FAN_MARK_MOUNT,
            fanotify_mark_kind::FILESYSTEM => FAN_MARK_FILESYSTEM,
            _ => 0,
        };
        let mark = |flags: u32, mask: u64| -> Result<(), RestoreError> {
            sys::fanotify_mark(fd.as_fd(), flags, mask, &target).map_err(|e| {
                fd_err(
                    p,
                    Why::sys(
                        format!(
                            "fanotify_mark({flags:#x}, {mask:#x}) on {}",
                            img.str(m.path).unwrap_or("")
                        ),
                        e,
                    ),
                )
            })
        };
        if m.mask != 0 {
            mark(
                FAN_MARK_ADD | kind | (m.mflags & FAN_MARK_EVICTABLE),
                m.mask,
            )?;
        }
        if m.ignored_mask != 0 {
            let how = if m.mflags & FAN_MARK_IGNORE != 0 {
                FAN_MARK_IGNORE
            } else {
                FAN_MARK_IGNORED_MASK
            };
            let keep = m.mflags & (FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE);
            mark(FAN_MARK_ADD | kind | how | keep, m.ignored_mask)?;
        }
    }
    set_status_flags(fd.as_raw_fd(), flags).map_err(|e| fd_err(p, e))?;
    Ok(fd.into_raw_fd())
}
