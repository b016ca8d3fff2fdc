//! fanotify groups: their init flags and every mark (inode, mount or
//! filesystem) with its masks and flags, from fdinfo; the marked object is
//! found by file handle (inodes) or in the process's mountinfo (mounts,
//! filesystems). A group with events queued (unless `--drop-fs-events`
//! drops them), or of a permission class (its answers are owed to other
//! processes), is refused by name.

use crate::procinfo::OpenFd;
use crate::sys;
use cryo_image::fds::{fanotify_mark_kind, FanotifyGroup, FanotifyMark};
use cryo_image::write::ImageBuilder;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// `key:value` in one fdinfo line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
}

fn hex(line: &str, key: &str) -> Option<u64> {
    u64::from_str_radix(field(line, key)?, 16).ok()
}

/// The kernel's dev_t (major << 20 | minor) as user space's.
fn kdev(d: u64) -> u64 {
    libc::makedev((d >> 20) as u32, (d & 0xfffff) as u32)
}

pub fn capture(
    pid: i32,
    pidfd: Option<&OwnedFd>,
    f: &OpenFd,
    desc: u32,
    drop_events: bool,
    b: &mut ImageBuilder,
) -> Result<(), String> {
    let name = format!("fd {} (fanotify)", f.fd);
    if !drop_events {
        let Some(copy) = pidfd.and_then(|p| sys::pidfd_getfd(p, f.fd).ok()) else {
            return Err(format!("{name}: cannot reach it to look for queued events"));
        };
        let n = sys::fionread(&copy).unwrap_or(0);
        if n > 0 {
            return Err(crate::inotify::queued(&name, n));
        }
    }
    let head = f
        .info
        .lines()
        .find(|l| l.starts_with("fanotify flags:"))
        .ok_or_else(|| format!("{name}: no flags line in fdinfo"))?;
    let (Some(flags), Some(event_flags)) = (hex(head, "flags"), hex(head, "event-flags")) else {
        return Err(format!("{name}: unreadable flags line {head:?}"));
    };
    const CLASS_BITS: u64 = 0xc;
    if flags & CLASS_BITS != 0 {
        return Err(format!(
            "{name} is of a permission class (FAN_CLASS_CONTENT/PRE_CONTENT): the answers it owes other processes cannot be handed over"
        ));
    }
    b.fanotify.push(FanotifyGroup {
        desc,
        flags: flags as u32,
        event_flags: event_flags as u32,
        _pad: 0,
    });
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    for l in f.info.lines() {
        let Some(rest) = l.strip_prefix("fanotify ") else {
            continue;
        };
        if rest.starts_with("flags:") {
            continue;
        }
        let bad = || format!("{name}: unreadable mark line {l:?}");
        let (Some(mflags), Some(mask), Some(ignored)) = (
            hex(rest, "mflags"),
            hex(rest, "mask"),
            hex(rest, "ignored_mask"),
        ) else {
            return Err(bad());
        };
        let mut fh = (0, Vec::new());
        let (kind, path, dev, ino) = if let Some(ino) = hex(rest, "ino") {
            let dev = kdev(hex(rest, "sdev").ok_or_else(bad)?);
            let htype = field(rest, "fhandle-type")
                .and_then(|v| i32::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            let h = field(rest, "f_handle").unwrap_or("");
            let handle: Vec<u8> = (0..h.len() / 2)
                .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                .collect();
            let path = crate::inotify::watched_path(dev, ino, htype, &handle).ok_or_else(|| {
                format!("{name}: a mark is on inode {ino} of device {dev:x}, which cryo cannot find a path to (removed?)")
            })?;
            fh = (htype, handle);
            (fanotify_mark_kind::INODE, path, dev, ino)
        } else if let Some(mnt_id) = hex(rest, "mnt_id") {
            let point = mount_point(&mountinfo, |id, _| id == mnt_id).ok_or_else(|| {
                format!(
                    "{name}: a mark is on mount {mnt_id}, which is not in the process's mountinfo"
                )
            })?;
            let md = std::fs::metadata(&point).map_err(|e| format!("{name}: {point}: {e}"))?;
            (fanotify_mark_kind::MOUNT, point, md.dev(), md.ino())
        } else if let Some(sdev) = hex(rest, "sdev") {
            let dev = kdev(sdev);
            let point = mount_point(&mountinfo, |_, d| d == dev).ok_or_else(|| {
                format!("{name}: a mark is on the filesystem of device {dev:x}, which has no mount in the process's mountinfo")
            })?;
            let md = std::fs::metadata(&point).map_err(|e| format!("{name}: {point}: {e}"))?;
            (fanotify_mark_kind::FILESYSTEM, point, md.dev(), md.ino())
        } else {
            return Err(bad());
        };
        let path = b.strings.add(&path);
        let mut m = FanotifyMark {
            desc,
            kind,
            mflags: mflags as u32,
            _pad: 0,
            mask,
            ignored_mask: ignored,
            dev,
            ino,
            path,
            ..Default::default()
        };
        m.set_handle(fh.0, &fh.1);
        b.fanotify_marks.push(m);
    }
    Ok(())
}

/// The mount point of the first mount in `mountinfo` for which `want(mount
/// id, device)` holds.
fn mount_point(mountinfo: &str, want: impl Fn(u64, u64) -> bool) -> Option<String> {
    cryo_image::mountinfo::mounts(mountinfo)
        .find(|m| want(m.id, m.dev))
        .map(|m| m.point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_lines_and_mount_points() {
        let l = "fanotify ino:1b2 sdev:fe00000 mflags:40 mask:2 ignored_mask:8 fhandle-bytes:8 fhandle-type:1 f_handle:b2010000e1d2c3b4";
        let rest = l.strip_prefix("fanotify ").unwrap();
        assert_eq!(hex(rest, "ino"), Some(0x1b2));
        assert_eq!(kdev(hex(rest, "sdev").unwrap()), libc::makedev(254, 0));
        assert_eq!(hex(rest, "mflags"), Some(0x40));
        assert_eq!(hex(rest, "ignored_mask"), Some(8));
        assert_eq!(field(rest, "f_handle"), Some("b2010000e1d2c3b4"));
        let mi = "22 1 254:0 / / rw - ext4 /dev/vda rw\n31 22 0:26 / /tmp/with\\040space rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_point(mi, |id, _| id == 31).as_deref(),
            Some("/tmp/with space")
        );
        assert_eq!(
            mount_point(mi, |_, d| d == libc::makedev(254, 0)).as_deref(),
            Some("/")
        );
    }
}
