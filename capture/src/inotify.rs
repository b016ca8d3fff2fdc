//! inotify instances: every watch with its descriptor, mask and a path
//! to its inode (found through open_by_handle_at); an instance with
//! events queued is refused (reading them would take them from the
//! program, and no restore can queue them again) unless
//! `--drop-fs-events` drops them.

use crate::procinfo::OpenFd;
use crate::sys;
use cryo_image::write::ImageBuilder;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// The refusal of an inotify or fanotify instance (`name`) with `n`
/// bytes of events queued.
pub(crate) fn queued(name: &str, n: usize) -> String {
    format!(
        "{name} has {n} bytes of events queued, which cryo cannot put back (capture again once the program has read them, or drop them: `--drop-fs-events`)"
    )
}

/// The watches of an inotify instance (fd `f`, whose record will be the
/// fds table's `desc`), each with a path found for its inode; refuses an
/// instance with events queued (reading them would take them from the
/// program, and no restore can queue them again).
pub fn capture(
    pid: i32,
    pidfd: Option<&OwnedFd>,
    f: &OpenFd,
    desc: u32,
    fds: &[OpenFd],
    drop_events: bool,
    b: &mut ImageBuilder,
) -> Result<(), String> {
    let name = format!("fd {} (inotify)", f.fd);
    if !drop_events {
        let Some(copy) = pidfd.and_then(|p| sys::pidfd_getfd(p, f.fd).ok()) else {
            return Err(format!("{name}: cannot reach it to look for queued events"));
        };
        let n = sys::fionread(&copy).unwrap_or(0);
        if n > 0 {
            return Err(queued(&name, n));
        }
    }
    let _ = pid;
    let mut watches = Vec::new();
    for l in f.info.lines() {
        let Some(rest) = l.strip_prefix("inotify ") else {
            continue;
        };
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .unwrap_or("")
                .to_owned()
        };
        let hex = |k: &str| u64::from_str_radix(&field(k), 16).ok();
        let (Some(wd), Some(ino), Some(sdev), Some(mask)) = (
            field("wd").parse::<i32>().ok(),
            hex("ino"),
            hex("sdev"),
            hex("mask"),
        ) else {
            return Err(format!("{name}: unreadable watch line {l:?}"));
        };
        // The kernel prints its own dev_t (major << 20 | minor).
        let dev = libc::makedev((sdev >> 20) as u32, (sdev & 0xfffff) as u32);
        let kind = field("fhandle-type").parse::<i32>().unwrap_or(0);
        let handle: Vec<u8> = {
            let h = field("f_handle");
            (0..h.len() / 2)
                .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                .collect()
        };
        // By a path to its inode; else, a removed file, through an fd of
        // the process on it (made again from the image at restore).
        let (path, via) = match watched_path(dev, ino, kind, &handle) {
            Some(p) => (p, 0),
            None => {
                let held = fds.iter().find(|g| {
                    (g.dev, g.ino) == (dev, ino)
                        && g.target.ends_with(" (deleted)")
                        && g.mode & libc::S_IFMT == libc::S_IFREG
                });
                match held {
                    Some(g) => (g.target.clone(), g.fd as u32 + 1),
                    None => return Err(format!(
                        "{name}: watch {wd} is on inode {ino} of device {:x}, which cryo cannot find a path to (removed, and no fd of the process holds it)",
                        sdev
                    )),
                }
            }
        };
        let path = b.strings.add(&path);
        let mut w = cryo_image::fds::InotifyWatch {
            desc,
            wd,
            mask: mask as u32,
            via,
            dev,
            ino,
            path,
            ..Default::default()
        };
        w.set_handle(kind, &handle);
        watches.push(w);
    }
    watches.sort_by_key(|w| w.wd);
    b.inotify.extend(watches);
    Ok(())
}

/// A path to the inode a file handle names: through a mount of its
/// device (from cryo's own mountinfo), open_by_handle_at, and the link
/// of the fd it gives; checked to be that inode.
pub(crate) fn watched_path(dev: u64, ino: u64, kind: i32, handle: &[u8]) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for m in cryo_image::mountinfo::mounts(&info).filter(|m| m.dev == dev) {
        let Ok(mount) = std::fs::File::open(&m.point) else {
            continue;
        };
        let Ok(fd) = sys::open_by_handle(&mount, kind, handle) else {
            continue;
        };
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let Ok(path) = std::fs::read_link(&link) else {
            continue;
        };
        let ok = std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino));
        if ok {
            return Some(path.to_string_lossy().into_owned());
        }
    }
    None
}
