//! A packed restorer's threads fit in its cgroups' pids limits, checked
//! before its point of no return, as `cryo restore` checks
//! (`checks::pids`): a thread the pids controller refuses failed its
//! clone3 past that point ("errno 11", status 125), the process lost.
//! Read as `cryo restore` reads them: /proc/self/cgroup's hierarchies
//! that count pids (v2, or v1's `pids`), found at their usual place or
//! else in /proc/self/mountinfo, and `pids.max` and `pids.current` of
//! this cgroup and of each parent up to the mount's root. Only for an
//! image with threads.

use crate::die;
use crate::sys::*;
use cryo_image::mountinfo::{cgroup_mount, unescape_into};
use cryo_image::Image;

/// This restorer is one task; the image's other threads each need one
/// more.
pub fn check(img: &Image) {
    let need = img.threads().len() as u64;
    if need == 0 {
        return;
    }
    // The texts and the paths built from them, one after the other in
    // the scratch area, whose first page the status text touched already
    // (a fresh page costs several µs here).
    let (at, len) = (crate::scratch::STATUS, crate::scratch::STATUS_LEN);
    // SAFETY: [at, at + len) is the scratch mapping's, writable; the
    // status text read there before (`own::read`) is parsed and done
    // with, and nothing else uses it until the files' tables.
    let buf = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len) };
    let Ok(n) = read_whole(c"/proc/self/cgroup".as_ptr() as usize, &mut buf[..len / 2]) else {
        return;
    };
    let (groups, rest) = buf.split_at_mut(n);
    let (dir, rest) = rest.split_at_mut(DIR_LEN);
    // mountinfo only where a hierarchy is not at its usual place (its
    // first read in a process took 20-24 µs here, a statfs ~1).
    let mut mounts: Option<&[u8]> = None;
    for line in groups.split(|&c| c == b'\n') {
        let mut f = line.splitn(3, |&c| c == b':');
        let (Some(_), Some(ctl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let v2 = ctl.is_empty();
        if !v2 && !ctl.split(|&c| c == b',').any(|c| c == b"pids") {
            continue;
        }
        // A v1 file system at the usual place need not be the pids
        // hierarchy; below its root every cgroup of that one has
        // pids.current. (v2 has it only where pids is enabled, and is one
        // hierarchy wherever it is mounted.)
        let root = path.iter().all(|&c| c == b'/');
        if usual_place(ctl).is_some_and(|at| walk(at, path, need, dir) || v2 || root) {
            continue;
        }
        if mounts.is_none() {
            let Ok(m) = read_whole(c"/proc/self/mountinfo".as_ptr() as usize, &mut rest[..]) else {
                return;
            };
            if m == rest.len() {
                die(format_args!(
                    "/proc/self/mountinfo is longer than {m} bytes: its cgroups' pids.max cannot be checked"
                ));
            }
            mounts = Some(&rest[..m]);
        }
        if let Some(at) = mounts.and_then(|t| cgroup_mount(t, ctl)) {
            walk(at, path, need, dir);
        }
    }
}

/// Where systemd mounts the hierarchy of controllers `ctl` (empty: v2,
/// at /sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1 ones), if a
/// cgroup file system of that version is mounted there: a v1 one there
/// by another name holds no pids.max, and is then not checked, as where
/// mountinfo lists no such mount.
fn usual_place(ctl: &[u8]) -> Option<&'static [u8]> {
    const SYS_STATFS: usize = 137;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    let is = |path: &core::ffi::CStr, magic: i64| {
        let mut st = [0i64; 16];
        syscall3(
            SYS_STATFS,
            path.as_ptr() as usize,
            st.as_mut_ptr() as usize,
            0,
        ) == 0
            && st[0] == magic
    };
    if ctl.is_empty() {
        [&c"/sys/fs/cgroup", &c"/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|p| is(p, CGROUP2_SUPER_MAGIC))
            .map(|p| p.to_bytes())
    } else if ctl == b"pids" && is(c"/sys/fs/cgroup/pids", CGROUP_SUPER_MAGIC) {
        Some(b"/sys/fs/cgroup/pids")
    } else {
        None
    }
}

const DIR_LEN: usize = 4200;

/// `pids.max` against `pids.current` of `mount` + `path` and of each
/// parent up to `mount`, the paths built in `dir` (DIR_LEN bytes).
/// Whether the cgroup itself (`path`) has pids.current.
fn walk(mount: &[u8], path: &[u8], need: u64, dir: &mut [u8]) -> bool {
    let too_long = || -> ! {
        die(format_args!(
            "a cgroup's path is too long to check its pids.max (over 4000 bytes)"
        ))
    };
    // The mount point unescaped (mountinfo writes space, tab, newline and
    // backslash as \ and three octal digits).
    let mut n = unescape_into(mount, &mut dir[..2048]).unwrap_or_else(|| too_long());
    let root = n;
    let path = match path.iter().rposition(|&c| c != b'/') {
        Some(e) => &path[..=e],
        None => b"",
    };
    if n + path.len() > 4000 {
        too_long();
    }
    dir[n..n + path.len()].copy_from_slice(path);
    n += path.len();
    let start = n;
    let mut has_current = false;
    loop {
        let max = read_number(dir, n, b"/pids.max\0");
        let cur = read_number(dir, n, b"/pids.current\0");
        has_current |= n == start && cur.is_some();
        if let (Some(max), Some(cur)) = (max, cur) {
            let room = max.saturating_sub(cur);
            if need > room {
                let shown = core::str::from_utf8(&dir[..n]).unwrap_or("?");
                die(format_args!(
                    "the image's {} tasks (processes and threads) do not fit in this restore's cgroup: {shown} allows {room} more (pids.max {max}, pids.current {cur})",
                    need + 1
                ));
            }
        }
        if n <= root {
            break;
        }
        match dir[root..n].iter().rposition(|&c| c == b'/') {
            Some(k) => n = root + k,
            None => n = root,
        }
    }
    has_current
}

/// The number in the file `dir[..n]` + `name` (NUL-terminated); None
/// where it cannot be read or is not a number ("max": no limit).
fn read_number(dir: &mut [u8], n: usize, name: &[u8]) -> Option<u64> {
    dir[n..n + name.len()].copy_from_slice(name);
    let mut text = [0u8; 32];
    let got = read_whole(dir.as_ptr() as usize, &mut text).ok()?;
    let t = &text[..got];
    crate::own::dec(&t[..t.iter().position(|&c| c == b'\n').unwrap_or(t.len())])
}
