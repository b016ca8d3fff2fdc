//! File descriptors: what each one is (or why cryo cannot restore it, an
//! obstacle naming the fd), which share an open file description, and
//! the state that hangs off them, each kind in its own module: `pipes`,
//! `stored` (unlinked files, memfds), `inotify`, `locks`.

use crate::obstacles::Obstacles;
use crate::procinfo::OpenFd;
use crate::sys;
use cryo_image::fds::{Pipe, Pty};
use cryo_image::write::ImageBuilder;
use cryo_image::{fd_kind, Fd, NO_INDEX};
use std::collections::HashMap;

pub use crate::stored::{Limits, StoredFiles};

const O_PATH: u32 = libc::O_PATH as u32;

/// The PID a pidfd refers to, if a restore can open a pidfd of it again
/// (a process of the captured tree, which keeps its PID, or the root as
/// restored), and 0, or for a process outside the tree its start time: a
/// restore opens it again only on that very process, still running.
fn pidfd_target(f: &OpenFd, scope: &crate::pipes::Scope) -> Result<(u32, u64), String> {
    let pid = f
        .info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if pid == -1 {
        // Of a process that has ended (and been waited for): made again
        // on a process that ends at restore, one per process pidfds named
        // (their inode), so two of one compare equal again.
        return Ok((cryo_image::NO_INDEX, 0));
    }
    if pid <= 0 {
        return Err(format!(
            "fd {} is a pidfd of a process in another PID namespace; cryo cannot make one again",
            f.fd
        ));
    }
    let pid = pid as i32;
    // (The root's is opened again on the root as restored: with the
    // restorer's PID in a plain restore, as its getpid() says.)
    if !scope.pids.contains(&pid) {
        let start = cryo_image::fds::proc_start_time(pid).ok_or_else(|| {
            format!(
                "fd {} is a pidfd of process {pid}, outside the captured tree, whose start time cannot be read (gone?)",
                f.fd
            )
        })?;
        return Ok((pid as u32, start));
    }
    Ok((pid as u32, 0))
}

/// The namespace type of an nsfs fd's target (`net:[4026531833]`).
pub(crate) fn namespace_kind(target: &str) -> Option<&str> {
    let (kind, rest) = target.split_once(":[")?;
    let num = rest.strip_suffix(']')?;
    (matches!(
        kind,
        "mnt" | "net" | "uts" | "ipc" | "pid" | "user" | "cgroup" | "time"
    ) && !num.is_empty()
        && num.bytes().all(|c| c.is_ascii_digit()))
    .then_some(kind)
}

/// For an fd on another process's /proc file (`/proc/P/...`, P not
/// `pid`): 0 if P is a process of the captured tree (restored with its
/// PID, or the root's as restored), else P's start time (clock ticks
/// after boot, /proc/P/stat field 22), which a restore checks, so the
/// file is opened again only on the very same process.
fn proc_owner(pid: i32, f: &OpenFd, scope: &crate::pipes::Scope) -> Result<u64, String> {
    let Some(p) = f
        .target
        .strip_prefix("/proc/")
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|&p| p != pid)
    else {
        return Ok(0);
    };
    if scope.pids.contains(&p) {
        return Ok(0);
    }
    cryo_image::fds::proc_start_time(p).ok_or_else(|| {
        format!(
            "fd {} is {}, a /proc file of process {p}, which cannot be read (gone?)",
            f.fd, f.target
        )
    })
}

/// What keeps an fd on a /proc file of the captured tree from being
/// opened again (a sweep of stop 52; both passed the dry runs and failed
/// the restore, or read nothing): a file of a thread but the main one
/// (`/proc/P/task/T/...`: threads get new TIDs), and one bound to
/// another process's memory (`cryo_image::fds::proc_memory_file`: that
/// memory is made anew, after its holder's fds; its own the shim opens
/// again).
fn proc_obstacle(pid: i32, f: &OpenFd, scope: &crate::pipes::Scope) -> Option<String> {
    let (p, thread) = cryo_image::fds::proc_ids(&f.target)?;
    if p != pid && !scope.pids.contains(&p) {
        return None;
    }
    if let Some(t) = thread.filter(|&t| t != p) {
        return Some(format!(
            "fd {} is {}, a /proc file of thread {t}, which a restore makes with a new TID: cryo cannot open it again (the main thread's /proc/{p}/task/{p}/ it can)",
            f.fd, f.target
        ));
    }
    (p != pid && cryo_image::fds::proc_memory_file(&f.target)).then(|| {
        format!(
            "fd {} is {}, bound to the memory of process {p}, which a restore makes anew after this process's fds: cryo cannot open it again on that memory",
            f.fd, f.target
        )
    })
}

/// An fd of shared anonymous memory (opened through /proc/PID/map_files).
fn shared_anon(target: &str) -> bool {
    target == "/dev/zero (deleted)" || target.starts_with("/[anon_shmem")
}

/// Why POSIX message queue `f` (state `q`) cannot be restored, if so.
fn mqueue_obstacle(
    f: &OpenFd,
    q: &sys::ipc::MqState,
    scope: &crate::pipes::Scope,
) -> Result<(), String> {
    if f.target.ends_with(" (deleted)") {
        return Err(format!(
            "fd {} is a POSIX message queue whose name was removed ({}, mq_unlink): nothing reads its messages without taking them, and no name opens it again",
            f.fd, f.target
        ));
    }
    if q.notify_pid != 0 && scope.pids.contains(&q.notify_pid) {
        return Err(format!(
            "fd {} is the POSIX message queue {} with a notification process {} registered (mq_notify), which cryo does not register again",
            f.fd,
            mq_name(&f.target),
            q.notify_pid
        ));
    }
    Ok(())
}

/// A queue's name ("/NAME") from its fd's target: every queue of an IPC
/// namespace is at the top of its mqueue filesystem, wherever that is
/// mounted ("/NAME" through mq_open, "/dev/mqueue/NAME" through open).
fn mq_name(target: &str) -> String {
    format!("/{}", target.rsplit('/').next().unwrap_or(""))
}

/// Bytes typed ahead, unread, in a terminal outside the capture: the
/// image cannot hold them (they stay in that terminal), so the restored
/// program never saw them, and after a capture with --kill the shell of
/// that terminal read them as commands (a sweep of stop 51: python busy
/// in a sleep, `echo TYPED_AHEAD` typed, captured with --kill: the shell
/// ran it). Refused, once per terminal. (In canonical mode the kernel
/// counts whole lines only: a line typed in part is not seen.)
fn typed_ahead(
    pid: i32,
    pidfd: &std::os::fd::OwnedFd,
    fds: &[Fd],
    scope: &mut crate::pipes::Scope,
    obs: &mut Obstacles,
) {
    // /dev/tty is the controlling terminal: one of a pty pair captured
    // with the process has its bytes captured with the pair (zdtm pty00
    // was refused for them by a first version).
    // Its controlling terminal's keys are for the terminal's foreground
    // group: a background job's terminal may hold what the user types
    // to the foreground one, which this one will never read (a review
    // of stop 51). A terminal that controls no session of this process
    // has no such owner: its bytes are refused.
    let dev_tty = libc::makedev(5, 0);
    let st = crate::tree::stat(pid);
    let ctty = st.as_ref().map_or(0, |s| u64::from(s.tty_nr));
    let foreground = st.as_ref().is_some_and(|s| s.tpgid == s.pgid);
    let ctty_inside =
        ctty != 0 && Pty::index_of_rdev(ctty).is_some_and(|n| scope.pty_master_inside(n));
    // (Once per terminal: /dev/tty and its /dev/pts/N are one.)
    let mut seen: Vec<u64> = Vec::new();
    for f in fds.iter().filter(|f| f.kind == fd_kind::TTY) {
        let rdev = if f.rdev == dev_tty { ctty } else { f.rdev };
        let controlling = rdev == ctty && ctty != 0;
        if (controlling && (ctty_inside || !foreground)) || seen.contains(&rdev) {
            continue;
        }
        seen.push(rdev);
        let Ok(dup) = sys::pidfd_getfd(pidfd, f.fd) else {
            continue;
        };
        if let Ok(n @ 1..) = sys::fionread(&dup) {
            obs.push(format!(
                "fd {} is a terminal with {n} bytes typed ahead that the process has not read yet: the image cannot hold them, so the restored program would not see them (and after a capture with --kill the terminal's next reader, a shell, would get them); capture again once it has read them",
                f.fd
            ));
        }
    }
}

/// The modes and size of the terminal at the process's fds 0-2 (the
/// first that is one, and not a pty of the tree): what the restore's
/// terminal gets (`cryo_image::fds::Terminal`).
fn terminal(
    pid: i32,
    pidfd: &std::os::fd::OwnedFd,
    fds: &[Fd],
) -> Option<cryo_image::fds::Terminal> {
    let f = fds.iter().find(|f| f.fd <= 2 && f.kind == fd_kind::TTY)?;
    let dup = sys::pidfd_getfd(pidfd, f.fd).ok()?;
    let t = sys::tty::termios(&dup).ok()?;
    let w = sys::tty::winsize(&dup).ok()?;
    // Its foreground group: TIOCGPGRP answers only a process whose
    // controlling terminal it is; /proc/PID/stat tells, when it is the
    // target's (tty_nr, tpgid).
    let fg = crate::tree::stat(pid)
        .filter(|s| u64::from(s.tty_nr) == f.rdev & 0xffff_ffff)
        .map_or(0, |s| s.tpgid);
    let mut cc = [0u8; 32];
    cc[..t.c_cc.len()].copy_from_slice(&t.c_cc);
    Some(cryo_image::fds::Terminal {
        fd: f.fd as u32,
        flags: 0,
        fg_pgrp: fg,
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: u32::from(t.c_line),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
        cc,
        rows: u32::from(w.ws_row),
        cols: u32::from(w.ws_col),
        xpixel: u32::from(w.ws_xpixel),
        ypixel: u32::from(w.ws_ypixel),
    })
}

/// What an fd is, or why cryo cannot restore it (an obstacle).
fn classify(f: &OpenFd) -> Result<u32, String> {
    let t = &f.target;
    let fmt = f.mode & libc::S_IFMT;
    // An O_PATH fd on a FIFO or a socket's file names the file, opens no
    // pipe and no socket: opened again by its path, as one on a regular
    // file is (a sweep of stop 52: taken for a FIFO's reader and a
    // socket, the capture failed "Bad file descriptor").
    if f.flags & O_PATH != 0 && matches!(fmt, libc::S_IFIFO | libc::S_IFSOCK) && t.starts_with('/')
    {
        return Ok(fd_kind::REGULAR);
    }
    if t.starts_with("socket:") || fmt == libc::S_IFSOCK {
        return Ok(fd_kind::SOCKET);
    }
    match t.as_str() {
        "anon_inode:inotify" => return Ok(fd_kind::INOTIFY),
        "anon_inode:[eventfd]" => return Ok(fd_kind::EVENTFD),
        "anon_inode:[timerfd]" => return Ok(fd_kind::TIMERFD),
        "anon_inode:[signalfd]" => return Ok(fd_kind::SIGNALFD),
        "anon_inode:[eventpoll]" => return Ok(fd_kind::EPOLL),
        "anon_inode:[fanotify]" => return Ok(fd_kind::FANOTIFY),
        "anon_inode:[pidfd]" => return Ok(fd_kind::PIDFD),
        _ => {}
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
    if shared_anon(t) {
        // Opened through /proc/PID/map_files: the object stored as the
        // shmem file it is (see `capture`).
        return Ok(fd_kind::REGULAR);
    }
    if namespace_kind(t).is_some() {
        return Ok(fd_kind::NAMESPACE);
    }
    if !t.starts_with('/') {
        return Err(format!(
            "fd {} is {t} (a kernel object), which cryo cannot reopen",
            f.fd
        ));
    }
    let deleted = t.ends_with(" (deleted)");
    if deleted && !t.starts_with("/memfd:") {
        // Made again in its directory at restore: that must exist, but
        // for a removed regular file, directory, device node or link,
        // whose removed directories are made for the moment too.
        let path = std::path::Path::new(t.trim_end_matches(" (deleted)"));
        let parent = path.parent().unwrap_or(std::path::Path::new("/"));
        let chain = matches!(
            fmt,
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFLNK
        );
        if (!parent.is_dir() && !chain) || parent.starts_with("/proc") {
            return Err(format!(
                "fd {} is {t}, removed together with its directory {}; cryo cannot make it again",
                f.fd,
                parent.display()
            ));
        }
    }
    match fmt {
        // (A FIFO whose path was removed is made again in its directory,
        // and removed again.)
        libc::S_IFIFO => Ok(fd_kind::FIFO),
        // (A removed one is made again with what it pointed to.)
        libc::S_IFLNK => Ok(fd_kind::SYMLINK),
        // /proc/PID/...: this process's own (reopened under its new PID)
        // or another's (`proc_owner`); the rest (/proc/sys, meminfo) is
        // the same for everyone.
        _ if t.starts_with("/proc/") && !deleted => Ok(fd_kind::PROC),
        libc::S_IFREG => Ok(fd_kind::REGULAR),
        libc::S_IFDIR => Ok(fd_kind::DIRECTORY),
        libc::S_IFCHR | libc::S_IFBLK => {
            let (maj, min) = (libc::major(f.rdev), libc::minor(f.rdev));
            // A TUN/TAP fd attached to its interface (TUNSETIFF: fdinfo
            // names it), and /dev/kmsg open for reading (its place in the
            // kernel log): each came back blank from a sweep (stop 46),
            // the interface gone, the log read again from its start.
            if let Some(name) = f.info.lines().find_map(|l| l.strip_prefix("iff:")) {
                return Err(format!(
                    "fd {} ({t}) is attached to the TUN/TAP interface {} (TUNSETIFF), which cryo does not make again",
                    f.fd,
                    name.trim()
                ));
            }
            if fmt == libc::S_IFCHR
                && (maj, min) == (1, 11)
                && f.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32
            {
                return Err(format!(
                    "fd {} ({t}) reads the kernel log, whose place in it (a sequence number) cannot be read back: a restore would read it again from the start",
                    f.fd
                ));
            }
            if fmt == libc::S_IFCHR && (maj, min) == (1, 3) && t == "/dev/null" {
                Ok(fd_kind::NULL_DEVICE)
            } else if fmt == libc::S_IFCHR && (maj, min) == (5, 2) || t.starts_with("/dev/pts/ptmx")
            {
                Ok(fd_kind::PTY)
            } else if fmt == libc::S_IFCHR && maj == 136 && deleted {
                // (Its master closed, checked with the fd: else a
                // terminal of a devpts instance unmounted since.)
                Ok(fd_kind::HUNG_UP_TTY)
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

/// Who gets SIGIO and SIGURG for fd `f`'s description (F_GETOWN_EX) and
/// as which signal (F_GETSIG), as the image keeps it (`desc` is the
/// caller's to set); None if nobody does, or if it is a lease's holder,
/// which restoring the lease sets again. Refused: a thread but the main
/// one (its id changes), another process group than the process's own.
fn owner(
    pidfd: &std::os::fd::OwnedFd,
    me: i32,
    f: &OpenFd,
    scope: &crate::pipes::Scope,
) -> Result<Option<cryo_image::fds::FdOwner>, String> {
    let fd = f.fd;
    let Ok(dup) = sys::pidfd_getfd(pidfd, fd) else {
        return Ok(None);
    };
    let Ok((kind, pid)) = sys::owner(&dup) else {
        return Ok(None);
    };
    // F_GETSIG is 11 (10 is F_SETSIG); the libc crate lacks it.
    const F_GETSIG: i32 = 11;
    let sig = sys::fcntl_int(&dup, F_GETSIG, 0).unwrap_or(0);
    let lease = f
        .info
        .lines()
        .any(|l| l.starts_with("lock:") && l.contains("LEASE"));
    if sig == 0 && (pid == 0 || (lease && kind == 1 && pid == me)) {
        return Ok(None);
    }
    // F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2.
    let own_group = crate::tree::stat(me).map_or(0, |s| s.pgid as i32);
    let start = match kind {
        0 if pid == 0 || pid == me => 0,
        0 => {
            return Err(format!(
                "fd {fd} sends SIGIO to thread {pid} (F_SETOWN_EX), whose id a restore changes; not supported"
            ))
        }
        2 if pid == 0 || pid == own_group => 0,
        2 => {
            return Err(format!(
                "fd {fd} sends SIGIO to process group {pid}, not the process's own; not supported"
            ))
        }
        _ if pid == 0 || pid == me || scope.pids.contains(&pid) => 0,
        _ => cryo_image::fds::proc_start_time(pid).ok_or_else(|| {
            format!("fd {fd} sends SIGIO to process {pid}, which cannot be read (gone?)")
        })?,
    };
    Ok(Some(cryo_image::fds::FdOwner {
        desc: 0,
        kind,
        pid,
        sig,
        start,
    }))
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

/// Capture every fd of `pid` into `b` (fds, pipes, locks, stored files);
/// what cannot be restored goes to `obs`.
/// (dev, ino, mode, link target) of an fd: its open file descriptions are
/// kept with (fd, record) of each, in the kernel's order of descriptions.
type SameFile<'a> = (u64, u64, u32, &'a str);

#[allow(clippy::too_many_arguments)]
pub fn capture(
    pid: i32,
    fds: &[OpenFd],
    scope: &mut crate::pipes::Scope,
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    limits: &Limits,
    in_flight: &crate::inflight::InFlight,
    obs: &mut Obstacles,
) {
    let pidfd = sys::pidfd_open(pid).ok();
    // Pipe inode -> index in b.pipes.
    let mut pipes: HashMap<u64, usize> = HashMap::new();
    let base = b.fds.len();
    let mut sockets = crate::sockets::Sockets::default();
    sockets.tcp_repair = scope.tcp_repair;
    sockets.drop_datagrams = scope.drop_datagrams;
    sockets.tcp_lock = scope.tcp_lock;
    sockets.scope = scope.pids.clone();
    sockets.pid = pid;
    let mut descriptions: HashMap<SameFile, Vec<(i32, usize)>> = HashMap::new();
    // An obstacle about a file in flight is named as what it is: no fd of
    // the program's (reworded once the next fd is reached).
    let reword = |obs: &mut Obstacles, last: Option<(i32, usize)>| {
        if let Some((fd, from)) = last.filter(|(fd, _)| in_flight.hidden.contains(fd)) {
            let sock = in_flight.socket_of(fd);
            obs.reword_from(from, |o| {
                format!("a file in flight (SCM_RIGHTS) in the queue of fd {sock}, held at fd {fd} for the capture: {o}")
            });
        }
    };
    let mut last = None;
    for f in fds.iter() {
        reword(obs, last.take());
        last = Some((f.fd, obs.len()));
        let mqueue = if f.target.starts_with('/') {
            sys::ipc::mqueue_at(&format!("/proc/{pid}/fd/{}", f.fd))
        } else {
            Ok(None)
        };
        let mqueue = match mqueue {
            Ok(None) => None,
            Ok(Some(q)) => match mqueue_obstacle(f, &q, scope) {
                Ok(()) => Some(q),
                Err(why) => {
                    obs.push(why);
                    continue;
                }
            },
            Err(e) => {
                obs.push(format!(
                    "fd {} ({}): cannot tell what it is: {e}",
                    f.fd, f.target
                ));
                continue;
            }
        };
        let kind = match mqueue
            .as_ref()
            .map_or_else(|| classify(f), |_| Ok(fd_kind::MQUEUE))
        {
            // The slave of a pty whose master is captured too: made again
            // with it.
            Ok(fd_kind::TTY)
                if Pty::index_of_rdev(f.rdev).is_some_and(|n| scope.pty_master_inside(n)) =>
            {
                fd_kind::PTY_SLAVE
            }
            Ok(k) => k,
            Err(why) => {
                obs.push(why);
                continue;
            }
        };
        let mut file = NO_INDEX;
        match kind {
            // A terminal whose master was closed (zdtm pty04; a program
            // left running after its ssh session ended) is hung up: every
            // ioctl fails with EIO. One that answers is a terminal of a
            // devpts instance unmounted since, which cryo cannot make.
            fd_kind::HUNG_UP_TTY => {
                let dup = pidfd
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("pidfd_open failed"))
                    .and_then(|p| sys::pidfd_getfd(p, f.fd));
                match dup.map(|d| sys::tty::termios(&d)) {
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {}
                    Ok(_) => {
                        obs.push(format!(
                            "fd {} is a terminal of a removed devpts instance ({}); not supported",
                            f.fd, f.target
                        ));
                        continue;
                    }
                    Err(e) => {
                        obs.push(format!(
                            "fd {} ({}): cannot reach the terminal to check it is hung up: {e}",
                            f.fd, f.target
                        ));
                        continue;
                    }
                }
            }
            fd_kind::REGULAR if f.target.ends_with(" (deleted)") => {
                if f.flags & O_PATH != 0 {
                    obs.push(format!(
                        "fd {} is an O_PATH fd on a removed file ({}); not supported yet",
                        f.fd, f.target
                    ));
                    continue;
                }
                // Its name was removed, but the file has another in the
                // same directory (linked, then the first name removed):
                // reopened by that one, as a mapping of it is.
                let fd_path = format!("/proc/{pid}/fd/{}", f.fd);
                if !shared_anon(&f.target) {
                    if let Some(other) = crate::vma::other_link(&fd_path, &f.target) {
                        file = crate::vma::file_id(b, &other);
                        stored.not_kept(b, file);
                    } else if let Some(i) = crate::vma::by_handle(b, &fd_path, &f.target) {
                        // Its other link is in another directory: reopened
                        // through its file handle.
                        file = i;
                    }
                }
                // Shared anonymous memory is the shmem object its mappings
                // have too (one file, by inode), made again as a memfd.
                let shown = if shared_anon(&f.target) {
                    crate::vma::SHARED_ANON_NAME
                } else {
                    &f.target
                };
                file = match (file != NO_INDEX).then_some(file).or_else(|| {
                    stored.file(b, &fd_path, shown, &format!("fd {}", f.fd), limits, obs)
                }) {
                    Some(i) => i,
                    None => continue,
                };
            }
            fd_kind::REGULAR => {
                file = crate::vma::file_id(b, &f.target);
                stored.not_kept(b, file);
                // (Its file handle is read once the process is let go:
                // `vma::note_handles`.)
            }
            fd_kind::SYMLINK if f.target.ends_with(" (deleted)") => {
                // What it pointed to, read through our copy of the fd.
                let to = pidfd
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("pidfd_open failed"))
                    .and_then(|p| sys::pidfd_getfd(p, f.fd))
                    .and_then(|d| sys::readlink_fd(&d));
                match to {
                    Ok(to) => {
                        let path = b.strings.add(&String::from_utf8_lossy(&to));
                        b.files.push(cryo_image::FileId {
                            path,
                            mode: f.mode,
                            flags: cryo_image::fds::file_flags::LINK,
                            uid: f.uid,
                            gid: f.gid,
                            ..Default::default()
                        });
                        file = (b.files.len() - 1) as u32;
                    }
                    Err(e) => {
                        obs.push(format!(
                            "fd {} is an O_PATH fd on a removed symbolic link ({}), which cryo cannot read: {e}",
                            f.fd, f.target
                        ));
                        continue;
                    }
                }
            }
            _ => {}
        }
        // The record of an earlier fd with the same open file
        // description: each file's descriptions are kept sorted in the
        // kernel's order, so this is a binary search (a process with
        // thousands of fds on one file was O(n²) kcmp calls, frozen).
        let same_file = (f.dev, f.ino, f.mode, f.target.as_str());
        let order = |g: &(i32, usize)| sys::description_order((pid, g.0), (pid, f.fd));
        let desc = descriptions
            .get(&same_file)
            .and_then(|v| v.binary_search_by(order).ok().map(|k| v[k].1))
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
        if matches!(
            kind,
            fd_kind::EVENTFD | fd_kind::TIMERFD | fd_kind::SIGNALFD | fd_kind::SOCKET
        ) {
            // Kind state belongs to the description: its first fd's record
            // has it; dups share the index.
            object = if desc == b.fds.len() - base {
                let made = if kind == fd_kind::SOCKET {
                    crate::sockets::capture(pidfd.as_ref(), f, b, &mut sockets)
                } else {
                    crate::anonfds::capture(kind, f, b)
                };
                match made {
                    Ok(i) => i,
                    Err(why) => {
                        obs.push(why);
                        if kind == fd_kind::SOCKET {
                            sockets.refused(f.ino);
                        }
                        continue;
                    }
                }
            } else {
                b.fds[base + desc].object
            };
            // A unix socket bound to a path: its socket file (mode and
            // owner, which a bind at restore does not give).
            if kind == fd_kind::SOCKET {
                file = if desc == b.fds.len() - base {
                    crate::sockets::socket_file(b, &sockets, object)
                } else {
                    b.fds[base + desc].file
                };
            }
        }
        if kind == fd_kind::PTY {
            object = if desc == b.fds.len() - base {
                match crate::ptys::capture(pidfd.as_ref(), f, scope, b, stored) {
                    Ok(i) => i,
                    Err(why) => {
                        obs.push(why);
                        continue;
                    }
                }
            } else {
                b.fds[base + desc].object
            };
        }
        let mut rdev = f.rdev;
        if kind == fd_kind::PROC {
            if let Some(why) = proc_obstacle(pid, f, scope) {
                obs.push(why);
                continue;
            }
            match proc_owner(pid, f, scope) {
                Ok(start) => rdev = start,
                Err(why) => {
                    obs.push(why);
                    continue;
                }
            }
        }
        if let Some(q) = &mqueue {
            rdev = (q.maxmsg as u64) << 32 | (q.msgsize as u64 & 0xffff_ffff);
        }
        if kind == fd_kind::PIDFD {
            match pidfd_target(f, scope) {
                Ok((p, start)) => (object, rdev) = (p, start),
                Err(why) => {
                    obs.push(why);
                    continue;
                }
            }
        }
        if kind == fd_kind::EPOLL && desc == b.fds.len() - base {
            let first = b.fds.len() as u32;
            let in_tree = scope.pids.len() > 1;
            match crate::anonfds::epoll(pid, f, first, fds, in_tree, b) {
                Ok(elsewhere) => scope
                    .epoll_elsewhere
                    .extend(elsewhere.into_iter().map(|why| (f.fd, why))),
                Err(why) => {
                    obs.push(why);
                    continue;
                }
            }
        }
        if kind == fd_kind::FANOTIFY && desc == b.fds.len() - base {
            let first = b.fds.len() as u32;
            if let Err(why) =
                crate::fanotify::capture(pid, pidfd.as_ref(), f, first, scope.drop_fs_events, b)
            {
                obs.push(why);
                continue;
            }
        }
        if kind == fd_kind::INOTIFY && desc == b.fds.len() - base {
            let first = b.fds.len() as u32;
            if let Err(why) =
                crate::inotify::capture(pid, pidfd.as_ref(), f, first, fds, scope.drop_fs_events, b)
            {
                obs.push(why);
                continue;
            }
        }
        if desc == b.fds.len() - base {
            // An owner for SIGIO/SIGURG (F_SETOWN) or a signal for them
            // (F_SETSIG) belongs to the description: kept, and set again
            // once every fd is made (lost without a word before: zdtm
            // file_fown).
            match pidfd.as_ref().map(|p| owner(p, pid, f, scope)) {
                // fcntl(F_NOTIFY) makes the process the directory's
                // description's owner; nothing reads its watch back
                // (no fdinfo), and SIGIO means nothing else there.
                Some(Ok(Some(_))) if f.mode & libc::S_IFMT == libc::S_IFDIR => obs.push(format!(
                    "fd {} (directory {}) has a signal owner, as a dnotify watch (fcntl F_NOTIFY) sets: the watch cannot be read back, so it would be lost; not supported",
                    f.fd, f.target
                )),
                Some(Ok(Some(mut o))) => {
                    o.desc = b.fds.len() as u32;
                    b.fd_owners.push(o);
                }
                // (Its locks are still looked at: every obstacle at once.)
                Some(Err(why)) => obs.push(why),
                _ => {}
            }
            // Locks belong to a description (flock, OFD) or are shown on
            // each fd of the description they were taken through (POSIX):
            // record them once, on its first fd.
            match crate::locks::parse(pid, f) {
                Ok(l) if !l.is_empty() && in_flight.hidden.contains(&f.fd) => obs.push(format!(
                    "a file in flight (SCM_RIGHTS) to fd {} has locks taken through it; not supported",
                    in_flight.socket_of(f.fd)
                )),
                Ok(l) => b.locks.extend(l),
                Err(why) => obs.push(why),
            }
        }
        if desc == b.fds.len() - base {
            let v = descriptions.entry(same_file).or_default();
            if let Err(k) = v.binary_search_by(order) {
                v.insert(k, (f.fd, desc));
            }
        }
        let target = if mqueue.is_some() {
            b.strings.add(&mq_name(&f.target))
        } else {
            b.strings.add(&f.target)
        };
        // (A file in flight has no fd flags: it is closed before the exec.)
        let flying = in_flight.hidden.contains(&f.fd);
        b.fds.push(Fd {
            fd: f.fd,
            kind,
            flags: f.flags & !(libc::O_CLOEXEC as u32),
            cloexec: u32::from(f.flags & libc::O_CLOEXEC as u32 != 0 && !flying),
            pos: f.pos,
            target,
            file,
            in_flight: u32::from(flying),
            rdev,
            ino: f.ino,
            desc: (base + desc) as u32,
            mode: f.mode,
            dev: f.dev,
            object,
            _pad2: 0,
        });
    }
    reword(obs, last);
    b.terminal = pidfd
        .as_ref()
        .and_then(|p| terminal(pid, p, &b.fds[base..]));
    if let Some(p) = pidfd.as_ref() {
        typed_ahead(pid, p, &b.fds[base..], scope, obs);
    }
    // The pipes: who holds their ends, their capacity and their bytes.
    crate::pipes::capture(pid, scope, pidfd.as_ref(), &pipes, base, b, stored, obs);
    // Unix sockets connected to each other.
    let cross = (scope.pids.len() > 1).then_some(&mut scope.cross);
    scope.repaired.append(&mut sockets.repaired);
    crate::sockets::link(b, sockets, stored, cross, in_flight, obs);
}
