//! The mounts of a /proc/PID/mountinfo text: both sides find a mount of a
//! device there (to open a file handle on it, at capture and at restore)
//! or a mount by its id (fanotify marks), and a cgroup hierarchy's mount
//! (the pids check: `cryo restore`'s, and a packed restorer's without an
//! allocator, by the same rule).

/// One mount: its id, device (as `st_dev` holds it) and mount point (its
/// \ooo escapes undone).
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub dev: u64,
    pub point: String,
}

/// Every mount of `mountinfo`, in order (lines that do not parse are
/// skipped).
#[cfg(feature = "std")]
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
#[cfg(feature = "std")]
fn unescape(s: &str) -> String {
    let mut out = vec![0; s.len()];
    let n = unescape_into(s.as_bytes(), &mut out).expect("never longer than its text");
    String::from_utf8_lossy(&out[..n]).into_owned()
}

/// [`unescape`] into `out`: the bytes written, None where they do not fit
/// (they never take more than the escaped text).
pub fn unescape_into(b: &[u8], out: &mut [u8]) -> Option<usize> {
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        let c = if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            i += 4;
            ((b[i - 3] - b'0') << 6) | ((b[i - 2] - b'0') << 3) | (b[i - 1] - b'0')
        } else {
            i += 1;
            b[i - 1]
        };
        *out.get_mut(n)? = c;
        n += 1;
    }
    Some(n)
}

/// The mount point (escaped) of the first mount in `mountinfo` of the
/// cgroup hierarchy with `controllers` (a /proc/PID/cgroup line's second
/// field, comma-separated; empty: v2): v1 by its controllers among the
/// super options, v2 by its type.
pub fn cgroup_mount<'m>(mountinfo: &'m [u8], controllers: &[u8]) -> Option<&'m [u8]> {
    let wanted = || controllers.split(|&c| c == b',').filter(|c| !c.is_empty());
    let v2 = wanted().next().is_none();
    mountinfo.split(|&c| c == b'\n').find_map(|l| {
        let sep = l.windows(3).position(|w| w == b" - ")?;
        let at = l[..sep].split(|&c| c == b' ').nth(4)?;
        let mut f = l[sep + 3..].split(|&c| c == b' ');
        let (fstype, _, opts) = (f.next()?, f.next()?, f.next().unwrap_or(b""));
        let ok = if v2 {
            fstype == b"cgroup2"
        } else {
            fstype == b"cgroup" && wanted().all(|c| opts.split(|&o| o == b',').any(|o| o == c))
        };
        ok.then_some(at)
    })
}

/// One cgroup a process is in, where it can be read: its controllers
/// (none for cgroup v2) and its directory under that hierarchy's mount.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub controllers: Vec<String>,
    pub dir: String,
    /// The hierarchy's mount point (the top of `dir`'s ancestors).
    pub mount: String,
}

#[cfg(feature = "std")]
impl Cgroup {
    /// A v1 hierarchy with `controller`, or (`controller` empty) v2.
    pub fn has(&self, controller: &str) -> bool {
        if controller.is_empty() {
            self.controllers.is_empty()
        } else {
            self.controllers.iter().any(|c| c == controller)
        }
    }
}

/// Each cgroup of a /proc/PID/cgroup text whose hierarchy `mountinfo`
/// mounts (v1 by its controller options, v2 by its type).
#[cfg(feature = "std")]
pub fn cgroups(mountinfo: &str, proc_cgroup: &str) -> Vec<Cgroup> {
    proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let at = cgroup_mount(mountinfo.as_bytes(), controllers.as_bytes())?;
            let at = unescape(std::str::from_utf8(at).ok()?);
            Some(Cgroup {
                dir: format!("{at}{}", path.trim_end_matches('/')),
                mount: at,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
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

    #[test]
    fn unescaped_into_a_buffer_that_fits_or_not() {
        let mut out = [0u8; 8];
        assert_eq!(unescape_into(b"/a\\040b\\1", &mut out), Some(6));
        assert_eq!(&out[..6], b"/a b\\1");
        assert_eq!(unescape_into(b"/123456789", &mut out), None);
    }

    #[test]
    fn cgroups_of_a_hybrid_and_a_unified_hierarchy() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                  36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let pc = "4:pids:/a/b/\n3:cpu,cpuacct:/c\n2:memory:/m\n0::/u\n";
        let g = cgroups(mi, pc);
        assert_eq!(g.len(), 3, "{g:?}");
        assert!(g[0].has("pids") && !g[0].has(""));
        assert_eq!(
            (g[0].dir.as_str(), g[0].mount.as_str()),
            ("/sys/fs/cgroup/pids/a/b", "/sys/fs/cgroup/pids")
        );
        assert_eq!(g[1].dir, "/sys/fs/cgroup/cpu,cpuacct/c");
        assert!(g[2].has("") && !g[2].has("pids"));
        assert_eq!(g[2].dir, "/sys/fs/cgroup/unified/u");
    }
}
