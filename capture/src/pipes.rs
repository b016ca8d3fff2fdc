//! Pipes and FIFOs: whether every end is inside the process, their
//! capacity, and the bytes buffered in them, copied without taking them
//! (pidfd_getfd of the read end, then tee(2) into a pipe of cryo's).

use crate::obstacles::Obstacles;
use crate::stored::{BlobOwner, PendingBlob, StoredFiles};
use crate::sys;
use cryo_image::fds::pipe_flags;
use cryo_image::write::ImageBuilder;
use cryo_image::{fd_kind, Fd};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// The processes captured together (one, or a tree), and the holders of
/// each pipe inode among every process we can see, built on first use and
/// then shared by every process of the tree (a pipe is only "inside" if
/// no one else holds it).
#[derive(Debug, Default)]
pub struct Scope {
    pub pids: Vec<i32>,
    holders: Option<HashMap<u64, Vec<i32>>>,
    /// The unix sockets of the process being inspected that are connected
    /// outside it (taken by the caller after each process).
    pub cross: crate::sockets::Cross,
    /// Who holds each pty: among every process we can see, and among
    /// the captured ones (each scanned on first use).
    pub(crate) ptys: Option<crate::ptys::Holders>,
    pub(crate) pty_inside: Option<crate::ptys::Holders>,
    /// Ptys whose state a process of the scope captured already, by index.
    pub(crate) pty_state: HashMap<u32, cryo_image::fds::Pty>,
    /// Capture established TCP connections to outside with TCP repair.
    pub tcp_repair: bool,
    /// Drop the datagrams queued in UDP sockets (`--drop-datagrams`).
    pub drop_datagrams: bool,
    /// Drop the events queued in inotify and fanotify instances
    /// (`--drop-fs-events`).
    pub drop_fs_events: bool,
    /// And lock them (`cryo_image::netlock`).
    pub tcp_lock: bool,
    /// The connections in repair mode of the process being inspected
    /// (taken by the caller after each process).
    pub repaired: crate::sockets::Repaired,
    /// (epoll fd, refusal) of each epoll item of the process being
    /// inspected whose file only another process may hold
    /// (`anonfds::epoll`; taken by the caller after each process).
    pub epoll_elsewhere: Vec<(i32, String)>,
    /// (parent, child) of each process of the tree captured in group
    /// stop whose parent is in the tree too (`task::taken_stops`).
    pub stopped: Vec<(i32, i32)>,
    /// Who traces whom, read at the first process inspected.
    pub tracing: Option<crate::task::Tracing>,
    /// Landlock's probes, shared by the tree's processes.
    pub landlock: crate::task::Landlock,
    /// System V segments whose bytes a process inspected before stored
    /// (`sysv::attaches`: the others' records say so).
    pub sysv_stored: Vec<i32>,
    /// Shared mappings of the processes outside the capture (device,
    /// inode, name, PID), read once, when a process first has shared
    /// memory a restore makes again (`vma::shared_outside`).
    pub outside_shared: Option<Vec<(String, u64, String, i32)>>,
    /// Unlinked files and memfds the processes outside the capture hold
    /// or map shared (device, inode, PID), read once, when a process
    /// first has such a file stored (`stored::held_outside`).
    pub outside_unlinked: Option<Vec<(u64, u64, i32)>>,
    /// The eventfds, timerfds, epoll instances and the like the processes
    /// outside the capture hold (target, PID, fd), read once, when a
    /// process first has one (`anonfds::held_outside`).
    pub outside_anon: Option<Vec<(String, i32, i32)>>,
}

impl Scope {
    pub fn new(pids: Vec<i32>) -> Scope {
        Scope {
            pids,
            holders: None,
            cross: crate::sockets::Cross::default(),
            ptys: None,
            pty_inside: None,
            pty_state: HashMap::new(),
            tcp_repair: false,
            drop_datagrams: false,
            drop_fs_events: false,
            tcp_lock: false,
            repaired: Default::default(),
            epoll_elsewhere: Vec::new(),
            stopped: Vec::new(),
            tracing: None,
            landlock: Default::default(),
            sysv_stored: Vec::new(),
            outside_shared: None,
            outside_unlinked: None,
            outside_anon: None,
        }
    }

    /// The processes outside the scope (and other than `me`) that hold
    /// pipe `ino`.
    fn outside(&mut self, me: i32, ino: u64) -> Vec<i32> {
        let pids = self.pids.clone();
        self.of(ino)
            .iter()
            .copied()
            .filter(|p| *p != me && !pids.contains(p))
            .collect()
    }

    fn of(&mut self, ino: u64) -> &[i32] {
        let map = self.holders.get_or_insert_with(|| {
            let mut m: HashMap<u64, Vec<i32>> = HashMap::new();
            each_fd(None, |pid, path, t| {
                let ino = t
                    .strip_prefix("pipe:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse().ok())
                    .or_else(|| {
                        std::fs::metadata(path)
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
            });
            m
        });
        map.get(&ino).map_or(&[], |v| v.as_slice())
    }
}

/// Every open fd of the processes `pids` (None: of every process we can
/// see but this one): `each(pid, its /proc/PID/fd/N path, its target)`.
pub(crate) fn each_fd(pids: Option<&[i32]>, mut each: impl FnMut(i32, &std::path::Path, &str)) {
    let all: Vec<i32> = match pids {
        Some(p) => p.to_vec(),
        None => {
            let own = std::process::id() as i32;
            let Ok(procs) = std::fs::read_dir("/proc") else {
                return;
            };
            procs
                .flatten()
                .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| p != own)
                .collect()
        }
    };
    for pid in all {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let path = e.path();
            if let Ok(t) = std::fs::read_link(&path) {
                each(pid, &path, &t.to_string_lossy());
            }
        }
    }
}

/// Every pipe of the process (`scope`: the processes captured with it;
/// `pipes`: pipe inode -> index in `b.pipes`;
/// its fds are `b.fds[base..]`): flags, capacity and bytes.
#[allow(clippy::too_many_arguments)]
pub fn capture(
    pid: i32,
    scope: &mut Scope,
    pidfd: Option<&OwnedFd>,
    pipes: &HashMap<u64, usize>,
    base: usize,
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    obs: &mut Obstacles,
) {
    for (&ino, &idx) in pipes {
        let ends: Vec<&Fd> = b.fds[base..]
            .iter()
            .filter(|f| matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO) && f.object == idx as u32)
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
        let Some(pidfd) = pidfd else {
            obs.push(format!("{name}: cannot reach the pipe (pidfd_open failed)"));
            continue;
        };
        let get = |fd: i32| sys::pidfd_getfd(pidfd, fd).ok();
        let rcopy = reader.and_then(get);
        let wcopy = writer.and_then(get);
        let mut flags = if packet { pipe_flags::PACKET } else { 0 };
        // Every end held here (or the missing one gone for good), and then
        // no other process holding it: the scan of every process's fds is
        // the expensive part, so it comes last (a pipe to a living reader
        // or writer outside, like stdout into a shell pipeline, skips it).
        let (local, gone) = match (&rcopy, &wcopy) {
            (Some(_), Some(_)) => (true, 0),
            (Some(r), None) => {
                let hup = sys::poll_now(r, libc::POLLIN).unwrap_or(0) & libc::POLLHUP != 0;
                // A FIFO no writer has opened yet: no hang-up to see, and
                // no process holding a write end (a sweep of stop 52: taken
                // for a pipe to outside, and refused). (A process alone:
                // in a tree another may hold its writer.)
                let fifo = ends.iter().all(|f| f.kind == fd_kind::FIFO);
                if !hup && fifo && scope.pids.len() == 1 && scope.outside(pid, ino).is_empty() {
                    (true, pipe_flags::NO_WRITER_YET)
                } else {
                    (hup, if hup { pipe_flags::NO_WRITER } else { 0 })
                }
            }
            (None, Some(w)) => {
                let err = sys::poll_now(w, libc::POLLOUT).unwrap_or(0) & libc::POLLERR != 0;
                (err, if err { pipe_flags::NO_READER } else { 0 })
            }
            (None, None) => (false, 0),
        };
        // In a tree, an end held by another process of it is inside too
        // (the tree is frozen: every holder of the pipe is known).
        let in_tree = scope.pids.len() > 1;
        let inside = (local || in_tree) && scope.outside(pid, ino).is_empty();
        if inside {
            flags |= gone;
        }
        if inside {
            flags |= pipe_flags::INSIDE;
        }
        let any = rcopy.as_ref().or(wcopy.as_ref());
        let size = any
            .and_then(|f| sys::fcntl_int(f, libc::F_GETPIPE_SZ, 0).ok())
            .unwrap_or(65536) as u32;
        b.pipes[idx].size = size;
        b.pipes[idx].flags = flags;
        let (data, packets) = match &rcopy {
            Some(r) => match pipe_bytes(r, size) {
                Ok(d) => d,
                Err(e) => {
                    obs.push(format!("{name}: cannot copy the bytes buffered in it: {e}"));
                    continue;
                }
            },
            None => (Vec::new(), false),
        };
        if !data.is_empty() && (packet || packets) {
            obs.push(format!(
                "{name} is a packet-mode pipe with {} bytes in it; their packet boundaries cannot be kept",
                data.len()
            ));
            continue;
        }
        if !data.is_empty() {
            // (Its length now, for what capture says of a pipe at fds 0-2
            // before anything is written; the write sets it again.)
            b.pipes[idx].data.len = data.len() as u64;
            stored.blobs.push(PendingBlob {
                to: BlobOwner::Pipe(idx),
                bytes: data,
            });
        }
    }
}

/// The bytes buffered in a pipe (through our copy of its read end),
/// without consuming them: tee(2) into a pipe of ours, then read that.
/// And whether they are packets: the mode is the write end's (O_DIRECT),
/// which another process may hold, or none any more; its packets keep
/// their mark in the buffers tee copies, and a read of all the bytes
/// stops at the end of one (a sweep of stop 48: a child's 30 packets,
/// its parent holding only the read end, were restored as one stream).
/// (One packet alone, or only the last, cannot be told this way.)
fn pipe_bytes(r: &OwnedFd, size: u32) -> std::io::Result<(Vec<u8>, bool)> {
    let n = sys::fionread(r)?;
    if n == 0 {
        return Ok((Vec::new(), false));
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
    let reads = sys::read_exact(&cr, &mut buf)?;
    Ok((buf, reads > 1))
}

fn describe_target(b: &ImageBuilder, f: &Fd) -> String {
    b.strings.text(f.target)
}
