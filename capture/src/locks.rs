//! File locks held through an fd, from its fdinfo `lock:` lines.

use crate::procinfo::OpenFd;
use cryo_image::fds::{lock_kind, Lock};

/// Locks held through one fd, from its fdinfo `lock:` lines.
pub fn parse(pid: i32, f: &OpenFd) -> Result<Vec<Lock>, String> {
    let mut out = Vec::new();
    for l in f.info.lines() {
        let Some(rest) = l.strip_prefix("lock:") else {
            continue;
        };
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10019328 0 EOF"; "1: -> ..." is
        // a request still waiting (the syscall restart asks again).
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.get(1) == Some(&"->") {
            continue;
        }
        if w.len() < 8 {
            return Err(format!("fd {}: unreadable lock line {l:?}", f.fd));
        }
        let kind = match w[1] {
            "FLOCK" => lock_kind::FLOCK,
            "POSIX" => lock_kind::POSIX,
            "OFDLCK" => lock_kind::OFD,
            // "LEASE  ACTIVE  READ|WRITE": a lease nobody is breaking.
            "LEASE" if w[2] == "ACTIVE" => lock_kind::LEASE,
            "LEASE" => {
                return Err(format!(
                    "fd {} holds a lease that is being broken ({}: another process opened {}); cryo cannot take it again in that state",
                    f.fd, w[2], f.target
                ))
            }
            other => {
                return Err(format!(
                    "fd {} holds a {} ({}), which cryo cannot take again",
                    f.fd,
                    match other {
                        "LEASE" | "BREAKING" | "BREAK" => "lease",
                        "DELEG" => "delegation",
                        _ => "lock of an unknown kind",
                    },
                    f.target
                ))
            }
        };
        let write = match w[3] {
            "READ" => 0,
            "WRITE" => 1,
            other => return Err(format!("fd {}: lock of type {other}", f.fd)),
        };
        if kind == lock_kind::POSIX && w[4].parse::<i32>().ok() != Some(pid) {
            continue; // another process's lock on the same file
        }
        let start: u64 = w[6]
            .parse()
            .map_err(|_| format!("fd {}: lock start", f.fd))?;
        let end: u64 = if w[7] == "EOF" {
            u64::MAX
        } else {
            w[7].parse().map_err(|_| format!("fd {}: lock end", f.fd))?
        };
        out.push(Lock {
            fd: f.fd,
            kind,
            write,
            _pad: 0,
            start,
            end,
        });
    }
    Ok(out)
}

/// flock locks the process holds only through a mapping of their file
/// (its fds closed: the mapping keeps the open file description, and so
/// its lock; a JVM's hsperfdata file): a restore maps the file anew, and
/// took no lock until stop 52, when another process could take it (a
/// sweep: "TAKEN by outsider", nothing said). /proc/locks names a flock
/// lock's taker, so one taken by this process on a file it maps, shown on
/// none of its fds, is recorded as `lock_kind::FLOCK_MAPPING` on the
/// file's entry of the files table (`files`: (dev, ino) of each), which
/// the shim takes again on the description it maps the file with. (An OFD
/// lock names no process: one held so is not seen.)
pub fn held_by_mapping(
    pid: i32,
    fds: &[OpenFd],
    maps: &[crate::procinfo::Mapping],
    files: &[(u64, u64)],
) -> Result<Vec<Lock>, String> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Ok(Vec::new());
    };
    let through_fds: Vec<&str> = fds
        .iter()
        .flat_map(|f| f.info.lines())
        .filter(|l| l.starts_with("lock:") && l.contains(" FLOCK "))
        .filter_map(|l| l.split_whitespace().nth(6))
        .collect();
    let mut out: Vec<Lock> = Vec::new();
    for l in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10019328 0 EOF"
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 8 || w[1] != "FLOCK" || w[4] != pid.to_string() || through_fds.contains(&w[5])
        {
            continue;
        }
        let Some((dev, ino)) = w[5].rsplit_once(':') else {
            continue;
        };
        let Ok(ino) = ino.parse::<u64>() else {
            continue;
        };
        let Some(m) = maps.iter().find(|m| {
            m.inode == ino
                && m.inode != 0
                && format!("{:02x}:{:02x}", m.dev_major, m.dev_minor) == dev
        }) else {
            continue;
        };
        let dev = libc::makedev(m.dev_major, m.dev_minor);
        let Some(idx) = files.iter().position(|&f| f == (dev, ino)) else {
            return Err(format!(
                "it holds a flock lock on {} only through its mapping at {:x} (every fd of it closed), and cryo did not record that file",
                m.path, m.start
            ));
        };
        if !out.iter().any(|k| k.fd == idx as i32) {
            out.push(Lock {
                fd: idx as i32,
                kind: lock_kind::FLOCK_MAPPING,
                write: u32::from(w[3] == "WRITE"),
                _pad: 0,
                start: 0,
                end: u64::MAX,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_with(info: &str) -> OpenFd {
        OpenFd {
            fd: 3,
            target: "/tmp/x".into(),
            pos: 0,
            flags: 2,
            mode: 0o100600,
            dev: 1,
            ino: 2,
            rdev: 0,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            info: info.into(),
        }
    }

    #[test]
    fn lock_lines() {
        let f = fd_with(
            "pos:\t0\nflags:\t02\nlock:\t1: FLOCK  ADVISORY  WRITE 77 fe:00:1 0 EOF\nlock:\t2: POSIX  ADVISORY  READ 77 fe:00:1 10 29\nlock:\t3: OFDLCK ADVISORY  READ -1 fe:00:1 0 EOF\nlock:\t4: POSIX  ADVISORY  WRITE 99 fe:00:1 0 0\nlock:\t5: -> POSIX  ADVISORY  WRITE 77 fe:00:1 0 0\n",
        );
        let l = parse(77, &f).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[0].kind, l[0].write, l[0].end),
            (lock_kind::FLOCK, 1, u64::MAX)
        );
        assert_eq!(
            (l[1].kind, l[1].start, l[1].end),
            (lock_kind::POSIX, 10, 29)
        );
        assert_eq!(l[2].kind, lock_kind::OFD);
        let lease = fd_with("lock:\t1: LEASE  ACTIVE    READ 77 fe:00:1 0 EOF\n");
        let l = parse(77, &lease).unwrap();
        assert_eq!((l[0].kind, l[0].write), (lock_kind::LEASE, 0));
        let breaking = fd_with("lock:\t1: LEASE  BREAKING  READ 77 fe:00:1 0 EOF\n");
        assert!(parse(77, &breaking).unwrap_err().contains("being broken"));
        let deleg = fd_with("lock:\t1: DELEG  ACTIVE    READ 77 fe:00:1 0 EOF\n");
        assert!(parse(77, &deleg).unwrap_err().contains("delegation"));
    }
}
