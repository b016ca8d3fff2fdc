//! The mounts of a /proc/PID/mountinfo text: both sides find a mount of a
//! device there (to open a file handle on it, at capture and at restore)
//! or a mount by its id (fanotify marks).

/// One mount: its id, device (as `st_dev` holds it) and mount point (its
/// \ooo escapes undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub dev: u64,
    pub point: String,
}

/// Every mount of `mountinfo`, in order (lines that do not parse are
/// skipped).
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount> + '_ {
    mountinfo.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        let id = w.next()?.parse().ok()?;
        let (ma, mi) = w.nth(1)?.split_once(':')?;
        let point = w.nth(1)?;
        Some(Mount {
            id,
            dev: makedev(ma.parse().ok()?, mi.parse().ok()?),
            point: unescape(point),
        })
    })
}

/// glibc's makedev: the device number `st_dev` holds for major:minor.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(((b[i + 1] - b'0') << 6) | ((b[i + 2] - b'0') << 3) | (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_with_escapes_and_device_numbers() {
        let mi = "22 1 254:0 / / rw - ext4 /dev/vda rw\n31 22 0:26 / /tmp/with\\040space rw - tmpfs tmpfs rw\nbad line\n40 1 259:1048577 / /big rw - ext4 x rw\n";
        let m: Vec<Mount> = mounts(mi).collect();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].id, m[0].dev, m[0].point.as_str()), (22, 0xfe00, "/"));
        assert_eq!((m[1].id, m[1].point.as_str()), (31, "/tmp/with space"));
        // Numbers past 12 bits of major and 8 of minor, as glibc packs them.
        assert_eq!(m[2].dev, 4_295_033_601); // os.makedev(259, 1048577)
    }
}
