//! File descriptors: what each one is, which share an open file
//! description, the pipes and the bytes in them, locks, and the contents
//! of files that exist nowhere else (unlinked files, memfds).
//!
//! Everything cryo cannot bring back exactly becomes an obstacle naming
//! the fd; capture refuses with all of them at once.

use crate::obstacles::Obstacles;
use crate::procinfo::OpenFd;
use crate::sys;
use cryo_image::fds::{file_flags, lock_kind, pipe_flags, Blob, Extent, Lock, Pipe};
use cryo_image::write::ImageBuilder;
use cryo_image::{fd_kind, Fd, FileId, NO_INDEX};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bytes read while the target is frozen, to be appended to pages.img
/// once its memory is written; `to` says which record gets the offset.
pub struct PendingBlob {
    pub to: BlobOwner,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
pub enum BlobOwner {
    Pipe(usize),
    Extent(usize),
}

impl PendingBlob {
    /// Record where the bytes landed in pages.img.
    pub fn place(&self, b: &mut ImageBuilder, off: u64) {
        let blob = Blob {
            off,
            len: self.bytes.len() as u64,
        };
        match self.to {
            BlobOwner::Pipe(i) => b.pipes[i].data = blob,
            BlobOwner::Extent(i) => b.extents[i].data = blob,
        }
    }
}

/// Limits on what capture stores besides memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest unlinked file or memfd whose bytes are stored.
    pub max_file_data: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_data: 256 << 20,
        }
    }
}

/// The stored files of one capture: FileIds of unlinked files and memfds
/// keyed by (dev, ino), so an fd and a mapping of one file share it.
#[derive(Default)]
pub struct StoredFiles {
    by_inode: HashMap<(u64, u64), u32>,
    pub blobs: Vec<PendingBlob>,
}

impl StoredFiles {
    /// The FileId of an unlinked file or memfd (`open_path` opens it, e.g.
    /// /proc/PID/fd/N or /proc/PID/map_files/A-B), its bytes read and
    /// stored; None (and an obstacle) if it cannot be.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        &mut self,
        b: &mut ImageBuilder,
        open_path: &str,
        shown: &str,
        what: &str,
        limits: &Limits,
        obs: &mut Obstacles,
    ) -> Option<u32> {
        let f = match std::fs::File::open(open_path) {
            Ok(f) => f,
            Err(e) => {
                obs.push(format!(
                    "{what} ({shown}): cannot open it to store its contents: {e}"
                ));
                return None;
            }
        };
        let md = match f.metadata() {
            Ok(m) => m,
            Err(e) => {
                obs.push(format!("{what} ({shown}): {e}"));
                return None;
            }
        };
        if let Some(&i) = self.by_inode.get(&(md.dev(), md.ino())) {
            return Some(i);
        }
        let memfd = shown.starts_with("/memfd:");
        if !memfd && md.nlink() > 0 {
            obs.push(format!(
                "{what} ({shown}): its name was removed but the file has {} other link(s); cryo cannot reopen that inode by name",
                md.nlink()
            ));
            return None;
        }
        let base = shown.trim_end_matches(" (deleted)");
        let path = if memfd {
            base.trim_start_matches('/').to_owned()
        } else {
            base.to_owned()
        };
        // Only data is stored (holes are not): the limit is on that.
        let stored: u64 = data_ranges(&f, md.len()).iter().map(|(a, b)| b - a).sum();
        if md.is_file() && stored > limits.max_file_data {
            obs.push(format!(
                "{what} ({shown}) holds {stored} bytes of data, over the {} bytes cryo stores for a file that exists nowhere else (--max-file-data)",
                limits.max_file_data
            ));
            return None;
        }
        let seals = if memfd {
            sys::fcntl_int(&f, libc::F_GET_SEALS, 0).unwrap_or(0) as u32
        } else {
            0
        };
        let first_extent = b.extents.len() as u32;
        if md.is_file() {
            match data_extents(&f, md.len()) {
                Ok(ext) => {
                    for (off, bytes) in ext {
                        b.extents.push(Extent {
                            file_off: off,
                            data: Blob::default(),
                        });
                        self.blobs.push(PendingBlob {
                            to: BlobOwner::Extent(b.extents.len() - 1),
                            bytes,
                        });
                    }
                }
                Err(e) => {
                    obs.push(format!("{what} ({shown}): reading its contents: {e}"));
                    return None;
                }
            }
        }
        let r = b.strings.add(&path);
        b.files.push(FileId {
            path: r,
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            mode: md.mode(),
            flags: file_flags::DELETED | if memfd { file_flags::MEMFD } else { 0 },
            seals,
            first_extent,
            extent_count: b.extents.len() as u32 - first_extent,
            uid: md.uid(),
            gid: md.gid(),
        });
        let idx = (b.files.len() - 1) as u32;
        self.by_inode.insert((md.dev(), md.ino()), idx);
        Some(idx)
    }
}

/// The data ranges [start, end) of a file (SEEK_DATA / SEEK_HOLE).
fn data_ranges(f: &std::fs::File, size: u64) -> Vec<(u64, u64)> {
    data_ranges_in(f, 0, size)
}

/// The data ranges of a file within [from, to), page aligned.
pub(crate) fn data_ranges_in(f: &std::fs::File, from: u64, to: u64) -> Vec<(u64, u64)> {
    let size = to;
    let fd = f.as_raw_fd();
    let seek = |off: u64, whence: i32| -> Option<u64> {
        // SAFETY: lseek takes integers only (the file is ours).
        let r = unsafe { libc::lseek(fd, off as i64, whence) };
        (r >= 0).then_some(r as u64)
    };
    let mut out = Vec::new();
    let mut off = from;
    while off < size {
        let Some(start) = seek(off, libc::SEEK_DATA) else {
            break; // ENXIO: only a hole remains
        };
        if start >= size {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE).unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        let ps = cryo_image::PAGE_SIZE;
        out.push((start / ps * ps, (end.div_ceil(ps) * ps).min(size)));
        off = end;
    }
    out
}

/// The data extents of a file, read in full.
fn data_extents(f: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for (start, end) in data_ranges(f, size) {
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        out.push((start, buf));
    }
    Ok(out)
}

const O_PATH: u32 = libc::O_PATH as u32;

/// What an fd is, or why cryo cannot restore it (an obstacle).
fn classify(pid: i32, f: &OpenFd) -> Result<u32, String> {
    let t = &f.target;
    let fmt = f.mode & libc::S_IFMT;
    if t.starts_with("socket:") || fmt == libc::S_IFSOCK {
        return Err(format!(
            "fd {} is a socket ({t}); sockets are not supported yet",
            f.fd
        ));
    }
    if t == "anon_inode:inotify" {
        return Ok(fd_kind::INOTIFY);
    }
    if let Some(kind) = t.strip_prefix("anon_inode:") {
        return Err(format!(
            "fd {} is {} ({t}), which cryo cannot restore yet",
            f.fd,
            anon_name(kind)
        ));
    }
    if t.starts_with("pipe:") {
        return Ok(fd_kind::PIPE);
    }
    if f.mode == 0 {
        return Err(format!(
            "fd {} ({t}): cannot tell what it is (stat failed)",
            f.fd
        ));
    }
    if t == "/dev/zero (deleted)" || t.starts_with("/[anon_shmem") {
        return Err(format!(
            "fd {} is shared anonymous memory ({t}, opened through /proc/PID/map_files); not supported yet",
            f.fd
        ));
    }
    if !t.starts_with('/') {
        return Err(format!(
            "fd {} is {t} (a namespace or another kernel object), which cryo cannot reopen",
            f.fd
        ));
    }
    let deleted = t.ends_with(" (deleted)");
    if deleted && !t.starts_with("/memfd:") {
        // Made again in its directory at restore: that must exist.
        let path = std::path::Path::new(t.trim_end_matches(" (deleted)"));
        let parent = path.parent().unwrap_or(std::path::Path::new("/"));
        if !parent.is_dir() || parent.starts_with("/proc") {
            return Err(format!(
                "fd {} is {t}, removed together with its directory {}; cryo cannot make it again",
                f.fd,
                parent.display()
            ));
        }
    }
    match fmt {
        libc::S_IFIFO if deleted => Err(format!(
            "fd {} is a FIFO whose path was removed ({t}); not supported yet",
            f.fd
        )),
        libc::S_IFIFO => Ok(fd_kind::FIFO),
        libc::S_IFLNK if deleted => Err(format!(
            "fd {} is an O_PATH fd on a removed symbolic link ({t}); not supported yet",
            f.fd
        )),
        libc::S_IFLNK => Ok(fd_kind::SYMLINK),
        _ if t.starts_with("/proc/") && !deleted => {
            // /proc/PID/...: this process's own (reopened under its new
            // PID) or another's (refused); the rest (/proc/sys, meminfo)
            // is the same for everyone.
            let other = t
                .strip_prefix("/proc/")
                .and_then(|r| r.split('/').next())
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| p != pid);
            if other {
                Err(format!(
                    "fd {} is {t}, another process's /proc file; cryo cannot tell what it would refer to after a restore",
                    f.fd
                ))
            } else {
                Ok(fd_kind::PROC)
            }
        }
        libc::S_IFREG => Ok(fd_kind::REGULAR),
        libc::S_IFDIR => Ok(fd_kind::DIRECTORY),
        libc::S_IFCHR | libc::S_IFBLK => {
            let (maj, min) = (libc::major(f.rdev), libc::minor(f.rdev));
            if fmt == libc::S_IFCHR && (maj, min) == (1, 3) && t == "/dev/null" {
                Ok(fd_kind::NULL_DEVICE)
            } else if fmt == libc::S_IFCHR && (maj, min) == (5, 2) || t.starts_with("/dev/pts/ptmx")
            {
                Err(format!(
                    "fd {} is a pseudo-terminal master ({t}); pty pairs are not supported yet",
                    f.fd
                ))
            } else if fmt == libc::S_IFCHR && maj == 136 && deleted {
                Err(format!(
                    "fd {} is a terminal of a removed devpts instance ({t}); not supported",
                    f.fd
                ))
            } else if fmt == libc::S_IFCHR && (maj == 136 || maj == 4 || (maj == 5 && min <= 1)) {
                Ok(fd_kind::TTY)
            } else {
                Ok(fd_kind::CHAR_DEVICE)
            }
        }
        _ => Err(format!(
            "fd {} ({t}) is of a kind cryo cannot restore (mode {:o})",
            f.fd, f.mode
        )),
    }
}

/// A readable name for an anon_inode kind, with the runtime that likely
/// holds it.
fn anon_name(kind: &str) -> &'static str {
    match kind {
        "[eventfd]" => "an eventfd (threaded runtimes: GHC, Go, Node)",
        "[eventpoll]" => "an epoll instance (event loops: GHC -threaded, Go, Node, Python asyncio)",
        "[timerfd]" => "a timerfd (GHC -threaded's ticker, event loops)",
        "[signalfd]" => "a signalfd",
        "inotify" => "an inotify instance",
        "[fanotify]" => "a fanotify instance",
        "[userfaultfd]" => "a userfaultfd",
        "[io_uring]" => "an io_uring instance",
        "[pidfd]" => "a pidfd",
        "[perf_event]" => "a perf event",
        "bpf-map" | "bpf-prog" => "a BPF object",
        _ => "an anonymous-inode file",
    }
}

/// Locks held through one fd, from its fdinfo `lock:` lines.
fn parse_locks(pid: i32, f: &OpenFd) -> Result<Vec<Lock>, String> {
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

/// Holders of each pipe inode among every other process we can see, built
/// on first use (a pipe is only "inside" if no one else holds it).
struct Holders(Option<HashMap<u64, Vec<i32>>>);

impl Holders {
    fn of(&mut self, me: i32, ino: u64) -> &[i32] {
        let map = self.0.get_or_insert_with(|| {
            let mut m: HashMap<u64, Vec<i32>> = HashMap::new();
            let own = std::process::id() as i32;
            let Ok(procs) = std::fs::read_dir("/proc") else {
                return m;
            };
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == me || pid == own {
                    continue;
                }
                let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                    continue;
                };
                for e in fds.flatten() {
                    let Ok(t) = std::fs::read_link(e.path()) else {
                        continue;
                    };
                    let t = t.to_string_lossy();
                    let ino = t
                        .strip_prefix("pipe:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse().ok())
                        .or_else(|| {
                            std::fs::metadata(e.path())
                                .ok()
                                .filter(|m| m.mode() & libc::S_IFMT == libc::S_IFIFO)
                                .map(|m| m.ino())
                        });
                    if let Some(ino) = ino {
                        let v = m.entry(ino).or_default();
                        if !v.contains(&pid) {
                            v.push(pid);
                        }
                    }
                }
            }
            m
        });
        map.get(&ino).map_or(&[], |v| v.as_slice())
    }
}

/// Capture every fd of `pid` into `b` (fds, pipes, locks, stored files);
/// what cannot be restored goes to `obs`.
pub fn capture(
    pid: i32,
    fds: &[OpenFd],
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    limits: &Limits,
    obs: &mut Obstacles,
) {
    let pidfd = sys::pidfd_open(pid).ok();
    let mut holders = Holders(None);
    // Pipe inode -> index in b.pipes.
    let mut pipes: HashMap<u64, usize> = HashMap::new();
    let base = b.fds.len();
    for (i, f) in fds.iter().enumerate() {
        let kind = match classify(pid, f) {
            Ok(k) => k,
            Err(why) => {
                obs.push(why);
                continue;
            }
        };
        let mut file = NO_INDEX;
        match kind {
            fd_kind::REGULAR if f.target.ends_with(" (deleted)") => {
                if f.flags & O_PATH != 0 {
                    obs.push(format!(
                        "fd {} is an O_PATH fd on a removed file ({}); not supported yet",
                        f.fd, f.target
                    ));
                    continue;
                }
                file = match stored.file(
                    b,
                    &format!("/proc/{pid}/fd/{}", f.fd),
                    &f.target,
                    &format!("fd {}", f.fd),
                    limits,
                    obs,
                ) {
                    Some(i) => i,
                    None => continue,
                };
            }
            fd_kind::REGULAR => file = crate::capture::file_id(b, &f.target),
            _ => {}
        }
        // The first earlier fd with the same open file description.
        let desc = (0..i)
            .filter(|&j| {
                let g = &fds[j];
                g.dev == f.dev && g.ino == f.ino && g.mode == f.mode && g.target == f.target
            })
            .find(|&j| sys::same_description(pid, fds[j].fd, f.fd).unwrap_or(false))
            .and_then(|j| b.fds[base..].iter().position(|r| r.fd == fds[j].fd))
            .unwrap_or(b.fds.len() - base);
        let mut object = NO_INDEX;
        if matches!(kind, fd_kind::PIPE | fd_kind::FIFO) {
            let idx = *pipes.entry(f.ino).or_insert_with(|| {
                b.pipes.push(Pipe {
                    ino: f.ino,
                    ..Default::default()
                });
                b.pipes.len() - 1
            });
            object = idx as u32;
        }
        if kind == fd_kind::INOTIFY && desc == b.fds.len() - base {
            let first = b.fds.len() as u32;
            if let Err(why) = inotify(pid, pidfd.as_ref(), f, first, b) {
                obs.push(why);
                continue;
            }
        }
        if desc == b.fds.len() - base {
            // Locks belong to a description (flock, OFD) or are shown on
            // each fd of the description they were taken through (POSIX):
            // record them once, on its first fd.
            match parse_locks(pid, f) {
                Ok(l) => b.locks.extend(l),
                Err(why) => obs.push(why),
            }
        }
        let target = b.strings.add(&f.target);
        b.fds.push(Fd {
            fd: f.fd,
            kind,
            flags: f.flags & !(libc::O_CLOEXEC as u32),
            cloexec: u32::from(f.flags & libc::O_CLOEXEC as u32 != 0),
            pos: f.pos,
            target,
            file,
            _pad: 0,
            rdev: f.rdev,
            ino: f.ino,
            desc: (base + desc) as u32,
            mode: f.mode,
            dev: f.dev,
            object,
            _pad2: 0,
        });
    }
    // The pipes: who holds their ends, their capacity and their bytes.
    for (&ino, &idx) in &pipes {
        let ends: Vec<&Fd> = b.fds[base..]
            .iter()
            .filter(|f| f.object == idx as u32)
            .collect();
        let acc = |f: &&Fd| f.flags & libc::O_ACCMODE as u32;
        let reader = ends
            .iter()
            .find(|f| matches!(acc(f) as i32, libc::O_RDONLY | libc::O_RDWR))
            .map(|f| f.fd);
        let writer = ends
            .iter()
            .find(|f| matches!(acc(f) as i32, libc::O_WRONLY | libc::O_RDWR))
            .map(|f| f.fd);
        let packet = ends.iter().any(|f| f.flags & libc::O_DIRECT as u32 != 0);
        let name = ends.first().map_or(String::new(), |f| {
            format!("fd {} ({})", f.fd, describe_target(b, f))
        });
        let Some(pidfd) = pidfd.as_ref() else {
            obs.push(format!("{name}: cannot reach the pipe (pidfd_open failed)"));
            continue;
        };
        let get = |fd: i32| sys::pidfd_getfd(pidfd, fd).ok();
        let rcopy = reader.and_then(get);
        let wcopy = writer.and_then(get);
        let mut flags = if packet { pipe_flags::PACKET } else { 0 };
        let others = holders.of(pid, ino);
        let inside = others.is_empty()
            && match (&rcopy, &wcopy) {
                (Some(_), Some(_)) => true,
                (Some(r), None) => {
                    let hup = sys::poll_now(r, libc::POLLIN).unwrap_or(0) & libc::POLLHUP != 0;
                    if hup {
                        flags |= pipe_flags::NO_WRITER;
                    }
                    hup
                }
                (None, Some(w)) => {
                    let err = sys::poll_now(w, libc::POLLOUT).unwrap_or(0) & libc::POLLERR != 0;
                    if err {
                        flags |= pipe_flags::NO_READER;
                    }
                    err
                }
                (None, None) => false,
            };
        if inside {
            flags |= pipe_flags::INSIDE;
        }
        let any = rcopy.as_ref().or(wcopy.as_ref());
        let size = any
            .and_then(|f| sys::fcntl_int(f, libc::F_GETPIPE_SZ, 0).ok())
            .unwrap_or(65536) as u32;
        b.pipes[idx].size = size;
        b.pipes[idx].flags = flags;
        let data = match &rcopy {
            Some(r) => match pipe_bytes(r, size) {
                Ok(d) => d,
                Err(e) => {
                    obs.push(format!("{name}: cannot copy the bytes buffered in it: {e}"));
                    continue;
                }
            },
            None => Vec::new(),
        };
        if !data.is_empty() && packet {
            obs.push(format!(
                "{name} is a packet-mode pipe with {} bytes in it; their packet boundaries cannot be kept",
                data.len()
            ));
            continue;
        }
        if !data.is_empty() {
            stored.blobs.push(PendingBlob {
                to: BlobOwner::Pipe(idx),
                bytes: data,
            });
        }
        if !inside && !others.is_empty() {
            // Not an obstacle: restore asks for --inherit-fd, and says why.
            let _ = others;
        }
    }
}

/// The watches of an inotify instance (fd `f`, whose record will be the
/// fds table's `desc`), each with a path found for its inode; refuses an
/// instance with events queued (reading them would take them from the
/// program, and no restore can queue them again).
fn inotify(
    pid: i32,
    pidfd: Option<&OwnedFd>,
    f: &OpenFd,
    desc: u32,
    b: &mut ImageBuilder,
) -> Result<(), String> {
    let name = format!("fd {} (inotify)", f.fd);
    if let Some(copy) = pidfd.and_then(|p| sys::pidfd_getfd(p, f.fd).ok()) {
        let n = sys::fionread(&copy).unwrap_or(0);
        if n > 0 {
            return Err(format!(
                "{name} has {n} bytes of events queued, which cryo cannot put back (capture again once the program has read them)"
            ));
        }
    } else {
        return Err(format!("{name}: cannot reach it to look for queued events"));
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
        let path = watched_path(dev, ino, kind, &handle).ok_or_else(|| {
            format!("{name}: watch {wd} is on inode {ino} of device {:x}, which cryo cannot find a path to (removed?)", sdev)
        })?;
        let path = b.strings.add(&path);
        watches.push(cryo_image::fds::InotifyWatch {
            desc,
            wd,
            mask: mask as u32,
            _pad: 0,
            dev,
            ino,
            path,
        });
    }
    watches.sort_by_key(|w| w.wd);
    b.inotify.extend(watches);
    Ok(())
}

/// A path to the inode a file handle names: through a mount of its
/// device (from cryo's own mountinfo), open_by_handle_at, and the link
/// of the fd it gives; checked to be that inode.
fn watched_path(dev: u64, ino: u64, kind: i32, handle: &[u8]) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for l in info.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (Some(majmin), Some(mnt)) = (w.get(2), w.get(4)) else {
            continue;
        };
        let Some((ma, mi)) = majmin.split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u32>(), mi.parse::<u32>()) else {
            continue;
        };
        if libc::makedev(ma, mi) != dev {
            continue;
        }
        let Ok(mount) = std::fs::File::open(mnt) else {
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

/// The bytes buffered in a pipe (through our copy of its read end),
/// without consuming them: tee(2) into a pipe of ours, then read that.
fn pipe_bytes(r: &OwnedFd, size: u32) -> std::io::Result<Vec<u8>> {
    let n = sys::fionread(r)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let (cr, cw) = sys::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    let want = size.max(n as u32) as i32;
    if sys::fcntl_int(&cw, libc::F_SETPIPE_SZ, want)? < n as i32 {
        return Err(std::io::Error::other("our copy pipe is too small"));
    }
    let got = sys::tee(r, &cw, n)?;
    if got != n {
        return Err(std::io::Error::other(format!(
            "tee copied {got} of {n} bytes"
        )));
    }
    let mut buf = vec![0u8; n];
    sys::read_exact(&cr, &mut buf)?;
    Ok(buf)
}

fn describe_target(b: &ImageBuilder, f: &Fd) -> String {
    let s = b.strings.bytes();
    let (o, l) = (f.target.off as usize, f.target.len as usize);
    String::from_utf8_lossy(s.get(o..o + l).unwrap_or(&[])).into_owned()
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
        let l = parse_locks(77, &f).unwrap();
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
        assert!(parse_locks(77, &lease).unwrap_err().contains("lease"));
    }
}
