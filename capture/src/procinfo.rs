//! Readers for /proc/PID: smaps, stat, status, auxv, fds, timers, limits.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("parsing {path}: {why}")]
    Parse { path: String, why: String },
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse_err(path: &str, why: impl Into<String>) -> ProcError {
    ProcError::Parse {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// One mapping from /proc/PID/smaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path/name column, with any " (deleted)" suffix kept.
    pub path: String,
    /// Two-letter VmFlags.
    pub vmflags: Vec<String>,
    pub rss_kib: u64,
    pub swap_kib: u64,
    /// Ranges that were a cryo image's pages.img mapped by `cryo restore
    /// --map`: anonymous memory, every page of which is read (a page not
    /// yet touched still holds the image's bytes), see [`fold_image_pages`].
    pub image_pages: Vec<(u64, u64)>,
}

impl Mapping {
    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|x| x == f)
    }
    pub fn deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Parse the text of /proc/PID/smaps.
pub fn parse_smaps(text: &str, path: &str) -> Result<Vec<Mapping>, ProcError> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, _)| hex(a).is_some() && !a.is_empty())
        {
            // Header line: start-end perms offset dev inode [path]
            let mut parts = line.splitn(6, ' ');
            let _range = parts.next();
            let perms = parts
                .next()
                .ok_or_else(|| parse_err(path, "no perms"))?
                .as_bytes();
            let offset = parts
                .next()
                .and_then(hex)
                .ok_or_else(|| parse_err(path, "bad offset"))?;
            let dev = parts.next().ok_or_else(|| parse_err(path, "no dev"))?;
            let inode: u64 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| parse_err(path, "bad inode"))?;
            let name = parts.next().unwrap_or("").trim_start().to_string();
            let (maj, min) = dev
                .split_once(':')
                .ok_or_else(|| parse_err(path, "bad dev"))?;
            if perms.len() < 4 {
                return Err(parse_err(path, "short perms"));
            }
            out.push(Mapping {
                start: hex(a).ok_or_else(|| parse_err(path, "bad start"))?,
                end: hex(b).ok_or_else(|| parse_err(path, "bad end"))?,
                read: perms[0] == b'r',
                write: perms[1] == b'w',
                exec: perms[2] == b'x',
                shared: perms[3] == b's',
                offset,
                dev_major: u32::from_str_radix(maj, 16).unwrap_or(0),
                dev_minor: u32::from_str_radix(min, 16).unwrap_or(0),
                inode,
                path: name,
                ..Default::default()
            });
        } else if let Some(m) = out.last_mut() {
            if let Some(v) = line.strip_prefix("VmFlags:") {
                m.vmflags = v.split_whitespace().map(str::to_owned).collect();
            } else if let Some(v) = line.strip_prefix("Rss:") {
                m.rss_kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Swap:") {
                m.swap_kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
    }
    Ok(out)
}

pub fn smaps(pid: i32) -> Result<Vec<Mapping>, ProcError> {
    let path = format!("/proc/{pid}/smaps");
    // (Each pages.img looked at once, however many parts map it.)
    let mut seen: std::collections::HashMap<String, bool> = Default::default();
    let maps = parse_smaps(&read(&path)?, &path)?;
    for m in &maps {
        if m.path.contains("pages.img") && !seen.contains_key(&m.path) {
            seen.insert(m.path.clone(), is_image_pages(&m.path));
        }
    }
    Ok(fold_image_pages(maps, |p| {
        seen.get(p).copied().unwrap_or(false)
    }))
}

/// Is this mapped file a cryo image's pages.img? Its name, and (while it
/// still has one) a meta.img with cryo's magic beside it.
fn is_image_pages(path: &str) -> bool {
    if let Some(p) = path.strip_suffix(" (deleted)") {
        return p.ends_with("/pages.img");
    }
    let Some(dir) = path.strip_suffix("/pages.img") else {
        return false;
    };
    let mut magic = [0u8; 8];
    std::fs::File::open(format!("{dir}/{}", cryo_image::META_FILE))
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == cryo_image::MAGIC)
}

/// A process restored with `cryo restore --map` has its private anonymous
/// memory mapped from pages.img: each captured mapping is an anonymous
/// mapping with parts of pages.img mapped over it (its first page always
/// anonymous, `cryo_image::mapped`). Captured as it is, the new image
/// would depend on the old one's pages.img, and MADV_DONTNEED would give
/// file bytes instead of zeros after its restore. So each such part is
/// folded into the anonymous mapping before it and remembered as a range
/// whose every page is read. (An anonymous part after it stays a mapping
/// of its own: /proc/PID/maps shows no page offset for anonymous memory,
/// so nothing tells the rest of one captured mapping from the next one.
/// But the heap's parts are all `[heap]`, the one mapping brk made: they
/// are joined back into one, whose end is brk.)
pub fn fold_image_pages(maps: Vec<Mapping>, is_pages: impl Fn(&str) -> bool) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::with_capacity(maps.len());
    for m in maps {
        let image = !m.shared && m.inode != 0 && is_pages(&m.path);
        let heap_rest = m.path == "[heap]" && m.inode == 0 && !m.shared;
        let joins = (image || heap_rest)
            && out.last().is_some_and(|c| {
                c.end == m.start
                    && (c.read, c.write, c.exec) == (m.read, m.write, m.exec)
                    && c.inode == 0
                    && !c.shared
                    && (c.path.is_empty() || c.path == "[heap]")
                    && (image || (c.path == "[heap]" && !c.image_pages.is_empty()))
            });
        match out.last_mut() {
            Some(c) if joins => {
                if image {
                    c.image_pages.push((m.start, m.end));
                }
                c.end = m.end;
                c.rss_kib += m.rss_kib;
                c.swap_kib += m.swap_kib;
            }
            _ if image => out.push(Mapping {
                // A mapping whose first part is pages.img (not made by
                // cryo): anonymous memory all the same.
                offset: 0,
                dev_major: 0,
                dev_minor: 0,
                inode: 0,
                path: String::new(),
                image_pages: vec![(m.start, m.end)],
                ..m
            }),
            _ => out.push(m),
        }
    }
    out
}

/// mm fields from /proc/PID/stat (proc(5) field numbers).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatMm {
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

pub fn stat_mm(pid: i32) -> Result<StatMm, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let s = read(&path)?;
    // comm may contain spaces and parentheses: fields start after the last ") ".
    let rest = s
        .rsplit_once(") ")
        .ok_or_else(|| parse_err(&path, "no ')'"))?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let g = |n: usize| -> u64 {
        f.get(n - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    if f.len() < 49 {
        return Err(parse_err(&path, "too few fields"));
    }
    Ok(StatMm {
        start_code: g(26),
        end_code: g(27),
        start_stack: g(28),
        start_data: g(45),
        end_data: g(46),
        start_brk: g(47),
        arg_start: g(48),
        arg_end: g(49),
        env_start: g(50),
        env_end: g(51),
    })
}

/// Fields of /proc/PID/status cryo uses.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub threads: u64,
    pub umask: u32,
    pub sig_pending: u64,
    pub shd_pending: u64,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    pub vm_rss_kib: u64,
}

pub fn status(pid: i32) -> Result<Status, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    let mut s = Status::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let h = || hex(v).unwrap_or(0);
        match k {
            "Threads" => s.threads = v.parse().unwrap_or(0),
            "Umask" => s.umask = u32::from_str_radix(v, 8).unwrap_or(0o022),
            "SigPnd" => s.sig_pending = h(),
            "ShdPnd" => s.shd_pending = h(),
            "SigBlk" => s.sig_blocked = h(),
            "SigIgn" => s.sig_ignored = h(),
            "SigCgt" => s.sig_caught = h(),
            "VmRSS" => s.vm_rss_kib = v.trim_end_matches("kB").trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(s)
}

pub fn auxv(pid: i32) -> Result<Vec<(u64, u64)>, ProcError> {
    let path = format!("/proc/{pid}/auxv");
    let b = std::fs::read(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for c in b.chunks_exact(16) {
        let k = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
        let v = u64::from_le_bytes(c[8..].try_into().unwrap_or([0; 8]));
        out.push((k, v));
        if k == 0 {
            break;
        }
    }
    Ok(out)
}

pub fn link(pid: i32, what: &str) -> Result<String, ProcError> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|source| ProcError::Io { path, source })
}

pub fn comm(pid: i32) -> Result<String, ProcError> {
    Ok(read(&format!("/proc/{pid}/comm"))?
        .trim_end_matches('\n')
        .to_owned())
}

pub fn personality(pid: i32) -> Result<u32, ProcError> {
    let path = format!("/proc/{pid}/personality");
    let s = read(&path)?;
    u32::from_str_radix(s.trim(), 16).map_err(|_| parse_err(&path, "not hex"))
}

/// An open fd with what /proc says about it.
#[derive(Debug, Clone)]
pub struct OpenFd {
    pub fd: i32,
    pub target: String,
    pub pos: u64,
    pub flags: u32,
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// /proc/PID/fdinfo/FD as read (flags, pos, locks, kind-specific lines).
    pub info: String,
}

pub fn fds(pid: i32) -> Result<Vec<OpenFd>, ProcError> {
    let dir = format!("/proc/{pid}/fd");
    let rd = std::fs::read_dir(&dir).map_err(|source| ProcError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let lpath: PathBuf = e.path();
        let Ok(target) = std::fs::read_link(&lpath) else {
            continue;
        }; // closed meanwhile
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = read(&info_path)?;
        let mut pos = 0;
        let mut flags = 0;
        for l in info.lines() {
            if let Some(v) = l.strip_prefix("pos:") {
                pos = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("flags:") {
                flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
            }
        }
        // stat through the magic link: the open file itself.
        let md = std::fs::metadata(&lpath);
        let (mode, dev, ino, rdev, size, ms, mns, uid, gid) = match &md {
            Ok(m) => (
                m.mode(),
                m.dev(),
                m.ino(),
                m.rdev(),
                m.size(),
                m.mtime(),
                m.mtime_nsec() as u32,
                m.uid(),
                m.gid(),
            ),
            Err(_) => (0, 0, 0, 0, 0, 0, 0, 0, 0),
        };
        out.push(OpenFd {
            fd,
            target: target.to_string_lossy().into_owned(),
            pos,
            flags,
            mode,
            dev,
            ino,
            rdev,
            size,
            mtime_sec: ms,
            mtime_nsec: mns,
            uid,
            gid,
            info,
        });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// A POSIX timer from /proc/PID/timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerInfo {
    pub id: i32,
    pub signo: i32,
    pub sigev_value: u64,
    /// "signal", "thread", "none" + tid
    pub notify: i32,
    pub notify_tid: i32,
    pub clock: i32,
}

pub fn parse_timers(text: &str) -> Vec<TimerInfo> {
    let mut out = Vec::new();
    let mut cur: Option<TimerInfo> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            if let Some(t) = cur.take() {
                out.push(t);
            }
            cur = Some(TimerInfo {
                id: v.trim().parse().unwrap_or(-1),
                ..Default::default()
            });
        } else if let (Some(t), Some(v)) = (cur.as_mut(), line.strip_prefix("signal:")) {
            // "signal: 26/0000000000000000"
            let (s, val) = v.trim().split_once('/').unwrap_or((v.trim(), "0"));
            t.signo = s.parse().unwrap_or(0);
            t.sigev_value = hex(val).unwrap_or(0);
        } else if let (Some(t), Some(v)) = (cur.as_mut(), line.strip_prefix("notify:")) {
            // "notify: KIND/WHO.N": KIND is the sigev_notify without its
            // SIGEV_THREAD_ID bit (signal, none; thread is SIGEV_THREAD,
            // which only libc knows), WHO is "tid" when that bit is set
            // (the signal goes to thread N), else "pid". glibc's
            // SIGEV_THREAD timers are signal/tid.<its helper thread>.
            let (kind, who) = v.trim().split_once('/').unwrap_or((v.trim(), ""));
            let base = match kind {
                "signal" => libc::SIGEV_SIGNAL,
                "none" => libc::SIGEV_NONE,
                "thread" => libc::SIGEV_THREAD,
                _ => -1,
            };
            t.notify = if who.starts_with("tid.") && base >= 0 {
                base | libc::SIGEV_THREAD_ID
            } else {
                base
            };
            t.notify_tid = who
                .split('.')
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
        } else if let (Some(t), Some(v)) = (cur.as_mut(), line.strip_prefix("ClockID:")) {
            t.clock = v.trim().parse().unwrap_or(0);
        }
    }
    if let Some(t) = cur {
        out.push(t);
    }
    out
}

pub fn timers(pid: i32) -> Result<Vec<TimerInfo>, ProcError> {
    let path = format!("/proc/{pid}/timers");
    Ok(parse_timers(&read(&path)?))
}

/// All resource limits, from /proc/PID/limits (prlimit on another user's
/// process needs CAP_SYS_RESOURCE, which root may lack).
pub fn rlimits(pid: i32) -> Result<Vec<(u32, u64, u64)>, ProcError> {
    let path = format!("/proc/{pid}/limits");
    let l = crate::sys::parse_limits(&read(&path)?);
    if l.len() != 16 {
        return Err(parse_err(&path, format!("{} limits, expected 16", l.len())));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_of_self_parse() {
        let m = smaps(std::process::id() as i32).unwrap();
        assert!(m.iter().any(|m| m.path == "[stack]" && m.has_flag("gd")));
        assert!(m.iter().any(|m| m.path == "[vdso]"));
        assert!(m.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(m.iter().all(|m| !m.vmflags.is_empty()));
    }

    #[test]
    fn smaps_names_with_spaces() {
        let text = "7f0000000000-7f0000001000 rw-p 00000000 00:01 1234                       /tmp/a b (deleted)\nRss:                   4 kB\nVmFlags: rd wr mr mw me ac sd\n";
        let m = parse_smaps(text, "t").unwrap();
        assert_eq!(m[0].path, "/tmp/a b (deleted)");
        assert!(m[0].deleted());
        assert_eq!(m[0].rss_kib, 4);
        assert_eq!(m[0].dev_minor, 1);
    }

    #[test]
    fn timers_parse() {
        let t = parse_timers("ID: 0\nsignal: 26/0000000000000000\nnotify: signal/pid.4242\nClockID: 1\nID: 1\nsignal: 14/00007f0000000000\nnotify: signal/tid.4243\nClockID: 0\nID: 2\nsignal: 0/0\nnotify: none/pid.4242\nClockID: 1\n");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].signo, 26);
        assert_eq!(t[0].notify, libc::SIGEV_SIGNAL);
        assert_eq!(t[0].notify_tid, 4242);
        assert_eq!(t[1].sigev_value, 0x7f0000000000);
        // SIGEV_SIGNAL | SIGEV_THREAD_ID: to thread 4243 only.
        assert_eq!(t[1].notify, libc::SIGEV_THREAD_ID);
        assert_eq!(t[1].notify_tid, 4243);
        assert_eq!(t[2].notify, libc::SIGEV_NONE);
    }

    #[test]
    fn status_and_stat_of_self() {
        let s = status(std::process::id() as i32).unwrap();
        assert!(s.threads >= 1);
        let mm = stat_mm(std::process::id() as i32).unwrap();
        assert!(mm.start_code > 0 && mm.end_code > mm.start_code);
        assert!(mm.arg_end > mm.arg_start);
    }

    /// A mapped restore's anonymous mapping with two parts of pages.img
    /// over it, then another mapping: each pages.img part joins the
    /// anonymous part before it; the anonymous part after one stays its
    /// own; another file stays a file.
    #[test]
    fn image_pages_fold_into_the_mapping_before() {
        let m = |start: u64, end: u64, path: &str, inode: u64| Mapping {
            start,
            end,
            read: true,
            write: true,
            path: path.into(),
            inode,
            rss_kib: 4,
            ..Default::default()
        };
        let maps = vec![
            m(0x1000, 0x2000, "", 0),
            m(0x2000, 0x6000, "/i/pages.img", 7),
            m(0x6000, 0x7000, "", 0),
            m(0x7000, 0x9000, "/i/pages.img (deleted)", 7),
            m(0x9000, 0xa000, "/lib/x.so", 8),
            m(0xb000, 0xc000, "/i/pages.img", 7),
        ];
        let out = fold_image_pages(maps, |p| p.starts_with("/i/pages.img"));
        let got: Vec<_> = out
            .iter()
            .map(|c| (c.start, c.end, c.path.as_str(), c.image_pages.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x1000, 0x6000, "", vec![(0x2000, 0x6000)]),
                (0x6000, 0x9000, "", vec![(0x7000, 0x9000)]),
                (0x9000, 0xa000, "/lib/x.so", vec![]),
                (0xb000, 0xc000, "", vec![(0xb000, 0xc000)]),
            ]
        );
        assert_eq!(out[0].rss_kib, 8);
        assert_eq!(out[3].inode, 0);
        // The heap: every [heap] part after a pages.img part joins too.
        let heap = vec![
            m(0x1000, 0x2000, "[heap]", 0),
            m(0x2000, 0x6000, "/i/pages.img", 7),
            m(0x6000, 0x7000, "[heap]", 0),
            m(0x7000, 0x9000, "/i/pages.img", 7),
            m(0x9000, 0xc000, "[heap]", 0),
            m(0xc000, 0xd000, "", 0),
        ];
        let out = fold_image_pages(heap, |p| p.starts_with("/i/pages.img"));
        let got: Vec<_> = out
            .iter()
            .map(|c| (c.start, c.end, c.path.as_str(), c.image_pages.len()))
            .collect();
        assert_eq!(
            got,
            vec![(0x1000, 0xc000, "[heap]", 2), (0xc000, 0xd000, "", 0)]
        );
    }
}
