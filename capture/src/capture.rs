//! The capture flow: seize, look at everything (refusing, with every
//! obstacle at once, what cannot be restored), stream the pages, write the
//! image atomically, leave the target as it was. Each resource is its own
//! module (`regs`, `vma`, `fds`, `signals`, `timers`, `task`, `mm`,
//! `gadget`); this file is the order they run in.

use crate::fds::StoredFiles;
use crate::obstacles::Obstacles;
use crate::procinfo;
use crate::remote::{InjectError, Remote};
use crate::threads::Group;
use crate::tracee::PtraceError;
use crate::tree::Tree;
use crate::writer::{ImageDirWriter, WriteError};
use cryo_image::write::ImageBuilder;
use cryo_image::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What happens to the target after a successful capture. After a failed
/// one the target is always left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Running stays running, stopped stays stopped.
    AsItWas,
    /// Leave it in group-stop (continue it with SIGCONT).
    LeaveStopped,
    /// Kill it (SIGKILL) once the image is safely on disk.
    Kill,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub after: After,
    /// Replace an existing image at the destination.
    pub force: bool,
    /// Write pages.img with O_DIRECT where the filesystem allows it
    /// (see [`crate::writer::PageWriter`]).
    pub direct_io: bool,
    /// Limits on stored file contents.
    pub limits: crate::fds::Limits,
    /// Capture this process only, refusing if it has children (the
    /// default captures every descendant with it).
    pub single: bool,
    /// Capture established TCP connections to outside the captured
    /// processes with TCP repair (else each is an obstacle).
    pub tcp_established: bool,
    /// Drop the datagrams queued in UDP sockets (the network may drop
    /// any datagram; else each such socket is an obstacle).
    pub drop_datagrams: bool,
    /// Drop the events queued in inotify and fanotify instances (no
    /// restore can queue them again; else each such instance is an
    /// obstacle).
    pub drop_fs_events: bool,
    /// Capture AIO contexts: the user says no request is in flight (the
    /// kernel shows none from outside; else each context is an obstacle).
    pub aio_idle: bool,
    /// Whether the user asked to stop (a ^C the caller holds back): asked
    /// between batches of pages, and the capture then ends with
    /// [`CaptureError::Stopped`], its target left as it was and nothing
    /// written, rather than after reading every page.
    pub stop: Option<fn() -> bool>,
}

/// Progress of the page dump, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// What a capture did (also printed by `cryo capture --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pid: i32,
    pub dir: PathBuf,
    /// Processes in the image (the root, its live descendants and zombies).
    pub processes: usize,
    pub vmas: usize,
    pub pages_stored: u64,
    pub pages_zero: u64,
    /// Pages of a tree's processes shared copy-on-write with a process
    /// whose copy is stored: referred to, not stored again.
    pub pages_shared: u64,
    pub pages_bytes: u64,
    pub meta_bytes: u64,
    /// sums.img: 8 bytes per stored page.
    pub sums_bytes: u64,
    pub rss_kib: u64,
    /// Time from the interrupt to the detach (the target did not run).
    /// A target left as it was is let go once everything is read, before
    /// the last pages are written and fsynced.
    pub frozen_ms: f64,
    /// Time spent reading and writing pages (until every page is written,
    /// not counting the fsync).
    pub dump_ms: f64,
    pub total_ms: f64,
    /// Dumped page bytes (stored + zero-checked) per second of dump time.
    pub throughput_gib_s: f64,
    pub was_stopped: bool,
    /// Whether pages.img was written with O_DIRECT.
    pub direct_io: bool,
    pub in_syscall: bool,
    /// TCP connections kept with TCP repair (`--tcp-established`).
    pub tcp_repaired: usize,
    /// How many of them are locked (`cryo_image::netlock`) until the
    /// restore makes them again.
    pub tcp_locked: usize,
    /// Where the root kept its own PID in its data
    /// (`cryo_image::task::PidRef`): restored under another PID, it goes on
    /// with the captured one there.
    pub own_pid_refs: Vec<u64>,
    /// (PID, places): the tree's other processes that keep the root's
    /// PID in memory (bash's job control its shell's process group,
    /// nginx's workers their master): restored under another PID, the
    /// root is not there any more for them.
    pub root_pid_refs: Vec<(i32, Vec<u64>)>,
    /// The root's fds 0-2 that are regular files (number, path, offset):
    /// `cryo restore` gives the restored process its own fds 0-2 there
    /// unless `--restore-stdio` (a program that put its output file at
    /// fd 1 itself, as `dd of=` and `sort -o` do, would write the rest
    /// to the restore's stdout: said at capture).
    pub stdio_files: Vec<(i32, String, u64)>,
    /// Those of `stdio_files` that hold a lock (flock, POSIX, OFD, a
    /// lease): it goes with the file a restore does not give back.
    pub stdio_locked: Vec<i32>,
    /// (PID, fd): pipes and FIFOs at fd 3 and up (not copies of fds 0-2)
    /// whose other end is outside the image: a restore needs
    /// `--inherit-fd` for each (the root first).
    pub outside_pipes: Vec<(i32, i32)>,
    /// Pipes from outside the image at fds 0-2 with bytes not read yet
    /// (PID, fd, bytes): a restore gives its own fds 0-2 there, and
    /// refuses to lose them unless --drop-pipe-data (`seq | less`,
    /// captured with --kill, could then never be restored as it was: a
    /// sweep of stop 51).
    pub stdio_unread: Vec<(i32, i32, u64)>,
    /// (PID, fd, path): terminals at fd 3 and up that are not the
    /// process's own at its fds 0-2 (a screen or tmux server's clients'):
    /// a restore opens each again by its name while it is that terminal,
    /// else needs `--inherit-fd` (said by the restore only, until stop 50).
    pub other_terminals: Vec<(i32, i32, String)>,
    /// System V semaphore sets and message queues recorded (those the
    /// process could use; made again at restore if gone), by id.
    pub sysv_sets: Vec<i32>,
    pub sysv_queues: Vec<i32>,
    /// cryo itself ran in a Landlock domain (a sandbox): a process in
    /// that same domain could not be told from one in none, and a
    /// restore outside the domain gives it none (`task::Landlock`).
    pub in_landlock_domain: bool,
}

/// Why a capture failed. The target was left as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Everything that keeps this process from being captured faithfully,
    /// all of it (see [`crate::obstacles`]).
    #[error("cannot capture pid {pid}: {}", join_obstacles(.obstacles))]
    Refused { pid: i32, obstacles: Vec<String> },
    #[error(transparent)]
    Ptrace(#[from] crate::tracee::PtraceError),
    #[error(transparent)]
    Proc(#[from] crate::procinfo::ProcError),
    #[error(transparent)]
    Inject(#[from] crate::remote::InjectError),
    #[error(transparent)]
    Mem(#[from] crate::pages::MemError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// [`Options::stop`] said so.
    #[error("stopped as asked: the target was left as it was and nothing was written")]
    Stopped,
}

fn join_obstacles(o: &[String]) -> String {
    match o {
        [one] => one.clone(),
        many => format!("{} obstacles: {}", many.len(), many.join("; ")),
    }
}

/// Refuse a thread's id given for a process's: /proc/TID answers as a
/// process would, and a capture took the thread for the main one (the
/// threads came back swapped), and with --kill waited for ever for it
/// to end, the target left a traced zombie (a sweep of stop 47).
fn not_a_thread(pid: i32) -> Result<(), CaptureError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<i32>().ok());
    match tgid {
        Some(t) if t != pid => Err(CaptureError::Refused {
            pid,
            obstacles: vec![format!(
                "{pid} is a thread of process {t}, not a process: capture {t}, which captures its threads with it"
            )],
        }),
        _ => Ok(()),
    }
}

/// Refuse a target that is a cryo command itself (`cryo restore` before it
/// execs its shim, a capture, a run): its image would be that command's,
/// half done (a sweep of stop 49: a capture 1-4 ms after `cryo restore
/// --lazy` began took cryo itself, and its restore replayed the restore
/// and failed, 125). Told by its executable (this one's) or by its name
/// and first argument.
fn not_cryo(pid: i32) -> Result<(), CaptureError> {
    match crate::tracee::cryo_command(pid) {
        Some(sub) => {
            // A program it runs, by PID: `cryo run`'s, or that of a
            // restore that stays (--same-pid, --pidns: it supervises the
            // restored program, its child, and never becomes it; the
            // advice said to wait for that: a sweep of stop 51).
            // (Through cryo's own: `--pidns` puts its init between, a
            // review of stop 51.)
            let mut children: Vec<String> = Vec::new();
            let mut next = vec![pid];
            while let Some(p) = next.pop() {
                let list = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                    .unwrap_or_default();
                for c in list
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok())
                {
                    if crate::tracee::cryo_command(c).is_some() {
                        next.push(c);
                    } else {
                        children.push(c.to_string());
                    }
                }
            }
            let which = match children.as_slice() {
                [] => "capture the program (a restore's once the restore has become it)".to_owned(),
                [one] => format!("capture the program it runs, pid {one}"),
                many => format!(
                    "capture the program it runs, one of pids {}",
                    many.join(", ")
                ),
            };
            Err(CaptureError::Refused {
                pid,
                obstacles: vec![format!(
                    "{pid} is cryo itself (`cryo {sub}`), not a program it runs: {which}"
                )],
            })
        }
        None => Ok(()),
    }
}

/// Refuse a target that is this process or one of its ancestors (unless
/// `--single` and an ancestor): cryo would be in the tree it freezes (a
/// script capturing its own `$$` was told the target was "a zombie or
/// being traced").
fn not_our_own(pid: i32, opts: &Options) -> Result<(), CaptureError> {
    let me = std::process::id() as i32;
    let mut p = me;
    for _ in 0..4096 {
        if p == pid {
            let why = if p == me {
                format!("pid {pid} is this cryo itself")
            } else if opts.single {
                return Ok(());
            } else {
                format!(
                    "cryo itself (pid {me}) runs in the tree of pid {pid}, its ancestor, which it would freeze with it; capture it from outside that tree, or the process alone with --single"
                )
            };
            return Err(CaptureError::Refused {
                pid,
                obstacles: vec![why],
            });
        }
        match crate::tree::stat(p) {
            Some(s) if s.ppid > 0 => p = s.ppid as i32,
            _ => break,
        }
    }
    Ok(())
}

/// Refuse, before any process is seized, a target whose memory is
/// another process's too (not a thread of it): a parent waiting in
/// vfork() (the seize waited until its child exec'd or exited, 20 s in a
/// survey of stop 36, ^C held back), or a child sharing its parent's
/// memory (vfork, CLONE_VM: captured alone, restored with a copy of its
/// own, its writes never reached the parent). kcmp KCMP_VM.
fn shares_its_memory(pid: i32) -> Result<(), CaptureError> {
    const KCMP_VM: libc::c_long = 1;
    // (Kernel threads and zombies have no memory at all, which kcmp
    // finds equal: only processes with some are compared.)
    let has_mm = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .is_some_and(|pages| pages > 0)
    };
    if !has_mm(pid) {
        return Ok(());
    }
    let same =
        |a: i32, b: i32| has_mm(a) && has_mm(b) && crate::sys::kcmp(a, b, KCMP_VM).unwrap_or(false);
    let mut obstacles = Vec::new();
    let children: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for c in children {
        if same(pid, c) {
            obstacles.push(format!(
                "pid {pid} is waiting in vfork() for its child {c}, which runs in its memory until it execs or exits; capture it after that"
            ));
        }
    }
    if let Some(s) = crate::tree::stat(pid).filter(|s| s.ppid > 0) {
        if same(s.ppid as i32, pid) {
            obstacles.push(format!(
                "pid {pid} runs in the memory of its parent {} (a vfork() child, or cloned with CLONE_VM), which a restore cannot share again; capture it once it has exec'd",
                s.ppid
            ));
        }
    }
    if obstacles.is_empty() {
        Ok(())
    } else {
        Err(CaptureError::Refused { pid, obstacles })
    }
}

/// Check, without writing anything, whether `pid` (and, unless
/// `opts.single`, its descendants) can be captured: every obstacle, all at
/// once (empty: it can). The processes are frozen only while they are
/// looked at, and left as they were.
pub fn check(pid: i32, opts: &Options) -> Result<Checked, CaptureError> {
    not_a_thread(pid)?;
    not_cryo(pid)?;
    not_our_own(pid, opts)?;
    if let Err(CaptureError::Refused { obstacles, .. }) = shares_its_memory(pid) {
        return Ok(Checked {
            obstacles,
            ..Default::default()
        });
    }
    let landlock = crate::task::Landlock::start(pid);
    let root = Group::seize(pid)?;
    let r = freeze_and_inspect(root, opts, landlock);
    match r {
        Ok((_, all)) => Ok(Checked {
            obstacles: Vec::new(),
            own_pid_refs: all
                .first()
                .map(|i| own_values(&i.b.pid_refs))
                .unwrap_or_default(),
            root_pid_refs: root_refs(&all),
            stdio_unread: stdio_unread(&all),
        }),
        Err(CaptureError::Refused { obstacles, .. }) => Ok(Checked {
            obstacles,
            ..Default::default()
        }),
        Err(e) => Err(exited_or(pid, e)),
    }
}

/// [`Summary::stdio_unread`] of the inspected processes.
fn stdio_unread(all: &[Inspected]) -> Vec<(i32, i32, u64)> {
    fds_of(all)
        .filter(|(_, f)| f.fd <= 2)
        .filter_map(|(b, f)| {
            let p = outside_pipe(b, f).filter(|p| p.data.len > 0)?;
            Some((b.process.pid as i32, f.fd, p.data.len))
        })
        .collect()
}

/// Every fd of the inspected processes, with its process's image.
fn fds_of(all: &[Inspected]) -> impl Iterator<Item = (&ImageBuilder, &cryo_image::Fd)> {
    all.iter()
        .flat_map(|i| i.b.fds.iter().map(move |f| (&i.b, f)))
}

/// The pipe of fd `f` if it is one with an end outside the image.
fn outside_pipe<'a>(b: &'a ImageBuilder, f: &cryo_image::Fd) -> Option<&'a cryo_image::fds::Pipe> {
    matches!(
        f.kind,
        cryo_image::fd_kind::PIPE | cryo_image::fd_kind::FIFO
    )
    .then(|| b.pipes.get(f.object as usize))
    .flatten()
    .filter(|p| p.flags & cryo_image::fds::pipe_flags::INSIDE == 0)
}

/// [`Summary::root_pid_refs`] of the inspected processes.
fn root_refs(all: &[Inspected]) -> Vec<(i32, Vec<u64>)> {
    all.iter()
        .filter(|i| !i.root_refs.is_empty())
        .map(|i| (i.b.process.pid as i32, i.root_refs.clone()))
        .collect()
}

/// The places that keep the PID as a value (mutex owners, which restore
/// rewrites, are not the program's to worry about).
fn own_values(refs: &[cryo_image::task::PidRef]) -> Vec<u64> {
    refs.iter()
        .filter(|r| r.kind == cryo_image::task::pid_ref::VALUE)
        .map(|r| r.addr)
        .collect()
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Every obstacle to a faithful capture (empty: it can be captured).
    pub obstacles: Vec<String>,
    /// As [`Summary::own_pid_refs`], when it can be captured.
    pub own_pid_refs: Vec<u64>,
    /// As [`Summary::root_pid_refs`].
    pub root_pid_refs: Vec<(i32, Vec<u64>)>,
    /// As [`Summary::stdio_unread`].
    pub stdio_unread: Vec<(i32, i32, u64)>,
}

/// A target that died while it was looked at says so.
fn exited_or(pid: i32, e: CaptureError) -> CaptureError {
    if matches!(crate::tracee::proc_state(pid), None | Some('Z') | Some('X')) {
        return PtraceError::Exited(pid).into();
    }
    // Its memory gone under the read (ESRCH) while /proc still showed it
    // (2 of 8 kills in a sweep of stop 49 said "reading memory of pid N
    // ...: No such process").
    use crate::pages::MemError;
    if let CaptureError::Mem(
        MemError::Read { pid: p, source, .. } | MemError::Pagemap { pid: p, source },
    ) = &e
    {
        if source.raw_os_error() == Some(libc::ESRCH) {
            return PtraceError::Exited(*p).into();
        }
    }
    e
}

/// Freeze the tree under `root` (frozen) and inspect every live process:
/// the obstacles of all of them at once, each named by its PID when there
/// is more than one. The tree's tables go into the root's builder.
fn freeze_and_inspect(
    root: Group,
    opts: &Options,
    landlock: crate::task::Landlock,
) -> Result<(Tree, Vec<Inspected>), CaptureError> {
    let root_pid = root.pid();
    let mut tree = if opts.single {
        Tree::single(root)
    } else {
        Tree::seize(root)?
    };
    let pids = tree.live_pids();
    // Every process of the tree, zombies too (a pidfd may name one).
    let mut scope = crate::pipes::Scope::new(tree.records().iter().map(|r| r.pid as i32).collect());
    scope.landlock = landlock;
    scope.tcp_repair = opts.tcp_established;
    scope.drop_datagrams = opts.drop_datagrams;
    scope.drop_fs_events = opts.drop_fs_events;
    scope.tcp_lock =
        opts.tcp_established && opts.after == After::Kill && cryo_image::netlock::available();
    let many = tree.members.len() > 1;
    scope.stopped = tree
        .members
        .iter()
        .filter(|m| m.group.as_ref().is_some_and(|g| g.was_stopped()))
        .filter(|m| {
            tree.members
                .iter()
                .any(|p| p.rec.pid == m.rec.ppid && p.group.is_some())
        })
        .map(|m| (m.rec.ppid as i32, m.rec.pid as i32))
        .collect();
    let mut all = Vec::new();
    let mut obstacles: Vec<String> = Vec::new();
    // Every process looked at whole (refused or not): what they share is
    // looked at too, and its obstacles said with theirs (until stop 50 a
    // child's TCP connection hid its sibling's unix one: a sweep).
    let mut whole = true;
    for m in tree.members.iter_mut() {
        let Some(g) = m.group.as_mut() else {
            continue;
        };
        let pid = g.pid();
        let named = |o: String| {
            if many {
                format!("process {pid}: {o}")
            } else {
                o
            }
        };
        match inspect(g, opts, &mut scope) {
            Ok((ins, o)) => {
                all.push(ins);
                obstacles.extend(o.into_iter().map(named));
            }
            Err(CaptureError::Refused { obstacles: o, .. }) => {
                whole = false;
                obstacles.extend(o.into_iter().map(named));
            }
            Err(e) => return Err(e),
        }
    }
    if many {
        tree.check_still()?;
        let mut obs = Obstacles::default();
        crate::tree::shape_obstacles(&tree, &mut obs);
        let shares_fds = crate::tree::shared_fd_tables(&tree, &mut obs);
        for (pid, ins) in pids.iter().zip(all.iter_mut()) {
            if shares_fds.contains(&(*pid as u32)) {
                ins.b.process.flags |= cryo_image::process_flags::SHARES_PARENT_FDS;
            }
        }
        // What they share, once each of them could be read.
        if whole {
            let procs: Vec<(i32, &Inspected)> = pids.iter().copied().zip(all.iter()).collect();
            let files = crate::tree::shared_memory(&procs);
            let crate::tree::Shared {
                fds: shared,
                queued,
                places,
                outside,
            } = crate::tree::share(&procs, &mut obs);
            crate::tree::epolls_made_elsewhere(&procs, &shared, &mut obs);
            crate::tree::dead_proc_cwds(&tree, &procs, &mut obs);
            all[0].b.tree_fds = shared;
            // Sockets at fd 0-2 connected outside the tree: the
            // restore's own fds take their places.
            for (p, index) in outside {
                if let Some(s) = all[p].b.sockets.get_mut(index) {
                    s.state = cryo_image::fds::socket_state::OUTSIDE;
                    s.pair = cryo_image::NO_INDEX;
                }
            }
            // Connections waiting in another process's listener: their
            // places in its queue.
            // (Made and connected by `cryo restore`, by name, the
            // listener's own process's too: no listener index.)
            // Every holder's record of it (a fork may have left it in
            // several processes; the restore makes it from the first).
            for (p, index, place) in places {
                let ino = all[p]
                    .b
                    .fds
                    .iter()
                    .find(|f| f.kind == cryo_image::fd_kind::SOCKET && f.object as usize == index)
                    .map(|f| f.ino);
                let Some(ino) = ino else { continue };
                for ins in all.iter_mut() {
                    let objects: Vec<usize> = ins
                        .b
                        .fds
                        .iter()
                        .filter(|f| f.kind == cryo_image::fd_kind::SOCKET && f.ino == ino)
                        .map(|f| f.object as usize)
                        .collect();
                    for o in objects {
                        let listener = ins.b.sockets.get(o).map(|s| s.pair).and_then(|l| {
                            ins.b.sockets.get(l as usize).map(|l| (l.addr, l.addr_len))
                        });
                        if let Some(s) = ins.b.sockets.get_mut(o) {
                            // (Its listener's name, to connect by.)
                            if s.peer_len <= 2 {
                                if let Some((addr, len)) = listener {
                                    (s.peer, s.peer_len) = (addr, len);
                                }
                            }
                            s.backlog = place;
                            s.pair = cryo_image::NO_INDEX;
                        }
                    }
                }
            }
            for (p, index, bytes, framed) in queued {
                if framed {
                    if let Some(s) = all[p].b.sockets.get_mut(index) {
                        s.flags |= cryo_image::fds::socket_flags::FRAMED;
                    }
                }
                all[p].stored.blobs.push(crate::stored::PendingBlob {
                    to: crate::stored::BlobOwner::Socket(index),
                    bytes,
                });
            }
            all[0].b.tree_files = files;
            all[0].b.tree = tree.records();
            // What only the images say of the processes a restore must
            // fork from their parents' shims (their pages: after they
            // are read, `capture`).
            if obs.is_empty() && !shares_fds.is_empty() {
                let metas: Vec<Vec<u8>> = all.iter().map(|i| i.b.encode(0)).collect();
                crate::tree::fork_obstacles(&tree, &metas, false, &mut obs);
            }
        }
        obstacles.extend(obs.into_vec());
    } else {
        let mut obs = Obstacles::default();
        crate::tree::shared_fd_tables(&tree, &mut obs);
        obstacles.extend(obs.into_vec());
    }
    if !obstacles.is_empty() {
        return Err(CaptureError::Refused {
            pid: root_pid,
            obstacles,
        });
    }
    Ok((tree, all))
}

/// Capture `pid` (and, unless `opts.single`, every descendant) into
/// `dest`. On error every process is left as it was and nothing exists at
/// `dest` that was not there before.
pub fn capture(
    pid: i32,
    dest: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary, CaptureError> {
    let t_start = Instant::now();
    match crate::tracee::proc_state(pid) {
        None => return Err(PtraceError::NoSuchProcess(pid).into()),
        // A main thread that called pthread_exit while others run shows
        // Z too: said as such, not as a zombie (a sweep of stop 49; the
        // dry run said it right).
        Some('Z' | 'X') if crate::tracee::thread_count(pid).unwrap_or(1) > 1 => {
            return Err(PtraceError::LeaderExited(pid).into())
        }
        // (Said as such: "exited during capture" it was not.)
        Some('Z' | 'X') => return Err(PtraceError::NotTraceable(pid).into()),
        _ => {}
    }
    not_a_thread(pid)?;
    not_cryo(pid)?;
    not_our_own(pid, opts)?;
    shares_its_memory(pid)?;
    // The resident size, to allocate the page buffers before the freeze.
    let rss = procinfo::status(pid).map_or(0, |s| s.vm_rss_kib * 1024);
    let mut writer = ImageDirWriter::create(dest, opts.force, opts.direct_io, rss)?;
    let mut landlock = crate::task::Landlock::start(pid);
    let in_landlock_domain = landlock.in_own_domain();
    // A target killed as it is seized says that it exited.
    let root = Group::seize(pid).map_err(|e| exited_or(pid, e.into()))?;
    let t_frozen = Instant::now();
    // `tree` detaches every process on drop (on error: each goes on as it
    // was); `writer` removes its temporary directory on drop.
    let (mut tree, mut all) =
        freeze_and_inspect(root, opts, landlock).map_err(|e| exited_or(pid, e))?;
    // The pages of every process, one after the other, into one pages.img
    // (a tree's: the root's image directory has it, each other process's
    // image in procs/PID links it). A page shared copy-on-write between
    // processes since a fork is stored once.
    let mut cow = (all.len() > 1).then(crate::pages::CowPages::default);
    let mut dumps = Vec::new();
    let mut failed = None;
    for (k, ins) in all.iter_mut().enumerate() {
        if let Some(c) = cow.as_mut() {
            c.start(k);
        }
        match dump(ins, &mut writer, cow.as_mut(), progress, opts.stop) {
            Ok(d) => dumps.push(d),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failed {
        // Their connections read with TCP repair out of it, then every
        // process let go first: one killed meanwhile is then seen gone
        // (or a zombie), and the error says so.
        all.iter_mut().for_each(|i| i.repaired.release());
        drop(tree);
        return Err(exited_or(pid, e));
    }
    // Everything is read. Processes that are to go on as they were can go
    // on now, while the last page buffers are written and fsynced: an
    // error from here on loses only the image. --leave-stopped and --kill
    // wait for the image to be safely on disk (on error: as they were).
    let was_stopped = tree.members[0]
        .group
        .as_ref()
        .is_some_and(|g| g.was_stopped());
    let mut frozen = None;
    if opts.after == After::AsItWas {
        // (Connections read with TCP repair out of it first.)
        all.iter_mut().for_each(|i| i.repaired.release());
        tree.let_go(After::AsItWas)?;
        frozen = Some(t_frozen.elapsed());
    }
    // Open files' handles, out of the freeze where the process is let go
    // now (`vma::note_handles`).
    all.iter_mut()
        .for_each(|i| crate::vma::note_handles(&mut i.b));
    let t_drain = Instant::now();
    writer.drain()?;
    // (Before the image is renamed into place, and the target killed or
    // left stopped: as it was, and nothing written.)
    if opts.stop.is_some_and(|f| f()) {
        return Err(CaptureError::Stopped);
    }
    dumps[0].dump_time += t_drain.elapsed();
    let direct_io = writer.pages().is_direct();
    let pages_bytes = writer.pages_len();
    // sums.img: every process's pages in file order; each process's
    // meta.img describes the whole file.
    let sums: Vec<u64> = dumps.iter().flat_map(|d| d.sums.iter().copied()).collect();
    let sums = cryo_image::write::sums_bytes(&sums);
    let sums_bytes = sums.len() as u64;
    let table = cryo_image::write::sum_block_table(&sums);
    let mut metas = Vec::with_capacity(all.len());
    for ins in all.iter_mut() {
        ins.b.page_sums = table.clone();
        metas.push(ins.b.encode(pages_bytes));
    }
    // A process a restore must fork from its parent's shim that shares
    // no page with it: refused before anything is written or killed.
    if all.len() > 1 {
        let mut obs = crate::obstacles::Obstacles::default();
        crate::tree::fork_obstacles(&tree, &metas, true, &mut obs);
        if !obs.is_empty() {
            return Err(CaptureError::Refused {
                pid,
                obstacles: obs.into_vec(),
            });
        }
    }
    let meta_bytes: u64 = metas.iter().map(|m| m.len() as u64).sum();
    let others: Vec<(String, &[u8])> = all
        .iter()
        .zip(&metas)
        .skip(1)
        .map(|(ins, m)| (cryo_image::tree::proc_dir(ins.b.process.pid), m.as_slice()))
        .collect();
    let dir = writer.commit_tree(&metas[0], &sums, &others)?;
    if opts.after == After::Kill {
        for ins in &all {
            crate::sockets::abort_on_kill(ins.b.process.pid as i32, &ins.b);
        }
    }
    if opts.after != After::Kill {
        all.iter_mut().for_each(|i| i.repaired.release());
    }
    tree.let_go(opts.after)?;
    // Killed: their connections read with TCP repair end without a packet
    // (the peer keeps them for the restore).
    all.iter_mut().for_each(|i| i.repaired.close_silently());
    let b = &all[0].b;
    let frozen = frozen.unwrap_or_else(|| t_frozen.elapsed());
    let dump_s: f64 = dumps.iter().map(|d| d.dump_time.as_secs_f64()).sum();
    let stored: u64 = dumps.iter().map(|d| d.stored).sum();
    let zero: u64 = dumps.iter().map(|d| d.zero).sum();
    let shared: u64 = dumps.iter().map(|d| d.shared).sum();
    // A description another process of the tree holds at 0-2 follows
    // that one (the restore's own there), needing no --inherit-fd.
    let tree_fds = &all[0].b.tree_fds;
    let shared_with_stdio = |pid: u32, fd: i32| {
        tree_fds
            .iter()
            .find(|e| e.pid == pid && e.fd == fd)
            .is_some_and(|e| tree_fds.iter().any(|o| o.object == e.object && o.fd <= 2))
    };
    Ok(Summary {
        pid,
        dir,
        processes: tree.members.len(),
        vmas: all.iter().map(|i| i.b.vmas.len()).sum(),
        pages_stored: stored,
        pages_zero: zero,
        pages_shared: shared,
        pages_bytes,
        meta_bytes,
        sums_bytes,
        rss_kib: all.iter().map(|i| i.b.process.rss_kib).sum(),
        frozen_ms: frozen.as_secs_f64() * 1e3,
        dump_ms: dump_s * 1e3,
        total_ms: t_start.elapsed().as_secs_f64() * 1e3,
        throughput_gib_s: if dump_s > 0.0 {
            ((stored + zero) * PAGE_SIZE) as f64 / dump_s / (1u64 << 30) as f64
        } else {
            0.0
        },
        was_stopped,
        direct_io,
        in_syscall: b.process.flags & process_flags::IN_SYSCALL != 0,
        tcp_repaired: all.iter().map(|i| i.b.tcp_conns.len()).sum(),
        tcp_locked: all
            .iter()
            .flat_map(|i| i.b.tcp_conns.iter())
            .filter(|t| t.options & cryo_image::fds::tcp_opts::LOCKED != 0)
            .count(),
        own_pid_refs: own_values(&b.pid_refs),
        root_pid_refs: root_refs(&all),
        stdio_files: b
            .fds
            .iter()
            .filter(|f| f.fd <= 2 && f.kind == cryo_image::fd_kind::REGULAR)
            .map(|f| (f.fd, b.strings.text(f.target), f.pos))
            .collect(),
        stdio_locked: b
            .fds
            .iter()
            .filter(|f| f.fd <= 2 && f.kind == cryo_image::fd_kind::REGULAR)
            .filter(|f| b.locks.iter().any(|l| l.fd == f.fd))
            .map(|f| f.fd)
            .collect(),
        stdio_unread: stdio_unread(&all),
        outside_pipes: fds_of(&all)
            .filter(|(b, f)| {
                f.fd > 2
                    && outside_pipe(b, f).is_some()
                    && b.fds.get(f.desc as usize).is_some_and(|d| d.fd > 2)
                    && !shared_with_stdio(b.process.pid, f.fd)
            })
            .map(|(b, f)| (b.process.pid as i32, f.fd))
            .collect(),
        other_terminals: fds_of(&all)
            .filter(|(b, f)| {
                f.fd > 2
                    && f.kind == cryo_image::fd_kind::TTY
                    && !b.fds.iter().any(|g| {
                        g.fd <= 2 && g.kind == cryo_image::fd_kind::TTY && g.rdev == f.rdev
                    })
            })
            .map(|(b, f)| (b.process.pid as i32, f.fd, b.strings.text(f.target)))
            .collect(),
        sysv_sets: ids(all.iter().flat_map(|i| i.b.sysv_sem.iter().map(|s| s.id))),
        sysv_queues: ids(all.iter().flat_map(|i| i.b.sysv_msq.iter().map(|q| q.id))),
        in_landlock_domain,
    })
}

/// Each id once, in order.
fn ids(it: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut v: Vec<i32> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// glibc's offset of the cached TID in each thread's TCB, read from its
/// own descriptor. A threaded process on a glibc without the descriptor
/// is refused (its threads' cached ids could not be rewritten); a process
/// without a shared glibc keeps 0 (the shim then looks for the id in the
/// TCB, as for a static binary).
fn tid_offset(
    pid: i32,
    maps: &[procinfo::Mapping],
    b: &mut ImageBuilder,
    obs: &mut crate::obstacles::Obstacles,
) {
    let Some(libc) = crate::glibc::mapped_libc(maps) else {
        return;
    };
    match crate::glibc::tid_offset(pid, libc) {
        Ok(off) => b.process.tid_offset = off,
        Err(e) if !b.threads.is_empty() => {
            obs.push(format!("its threads' cached ids could not be located: {e}"))
        }
        Err(_) => {}
    }
}

pub(crate) struct DumpStats {
    stored: u64,
    zero: u64,
    shared: u64,
    /// The checksums of the pages this process added to pages.img.
    sums: Vec<u64>,
    dump_time: std::time::Duration,
}

/// Everything read of one stopped process but its pages.
pub(crate) struct Inspected {
    /// Where this process (not the root) keeps the root's PID
    /// (`pidrefs::find`).
    pub root_refs: Vec<u64>,
    pub stored: StoredFiles,
    pub b: ImageBuilder,
    pub maps: Vec<procinfo::Mapping>,
    /// Unix sockets connected outside the process (a tree pairs them).
    pub cross: crate::sockets::Cross,
    /// (kind, flags, file) of each mapping, as `vma::classify_all` said.
    classes: Vec<(u32, u32, u32)>,
    /// (start, mode, nodes) of each mapping with a NUMA policy of its own
    /// (`task::numa_policies`), set on its record once it is made.
    policies: Vec<(u64, u32, u64)>,
    /// Its TCP connections in repair mode (out of it when dropped).
    pub repaired: crate::sockets::Repaired,
    /// Epoll items whose file only another process may hold: (epoll fd,
    /// refusal), kept or dropped by `tree::epolls_made_elsewhere`.
    pub epoll_elsewhere: Vec<(i32, String)>,
}

/// Read the state of a stopped target, refusing (with every obstacle at
/// once) what cannot be restored. `scope`: every process captured with it
/// (a pipe whose other end is one of them is inside).
/// What a process holds, and why it cannot be captured (empty: it can).
/// Refused early (before everything could be looked at) it is an error;
/// refused at the end, what was looked at comes with the obstacles, so
/// that a tree's checks of what its processes share still run and every
/// obstacle is said at once.
pub(crate) fn inspect(
    g: &mut Group,
    opts: &Options,
    scope: &mut crate::pipes::Scope,
) -> Result<(Inspected, Vec<String>), CaptureError> {
    let pid = g.pid();
    let mut b = ImageBuilder::default();
    let mut obs = Obstacles::default();
    let mut stored = StoredFiles::default();
    scope.cross = crate::sockets::Cross::default();
    scope.epoll_elsewhere.clear();
    // (Those of a process refused before: it goes on as it was.)
    scope.repaired.release();

    // Process-wide conditions: children (with --single), namespaces, seccomp.
    let st = crate::task::StatusText::read(pid);
    let tracing = scope.tracing.get_or_insert_with(crate::task::Tracing::scan);
    crate::task::obstacles(pid, &st, opts.single, tracing, &mut obs);
    // Mappings and fds: what each is (the contents of files that exist
    // nowhere else stored), or why it cannot be restored.
    let maps = procinfo::smaps(pid)?;
    let classified = crate::vma::classify_all(
        pid,
        &maps,
        (&scope.pids, &mut scope.outside_shared),
        opts.aio_idle,
        &mut b,
        &mut stored,
        &opts.limits,
        &mut obs,
    );
    crate::sysv::attaches(
        pid,
        &classified,
        &mut b,
        &mut stored,
        &mut scope.sysv_stored,
        &opts.limits,
        &mut obs,
    );
    crate::aio::rings(pid, &classified, &mut b, &mut stored, &mut obs);
    crate::sysv::semaphore_undo(pid, &mut obs);
    // (The sets and queues a thread waits on: used, whoever operated on
    // them last.)
    let waits: Vec<(i64, i32)> = std::iter::once(&g.main)
        .chain(g.others.iter())
        .filter_map(|t| t.regs().ok())
        .map(|r| (r.orig_rax as i64, r.rdi as i32))
        .collect();
    crate::sysv::sets_and_queues(
        pid,
        &waits,
        &crate::sysv::IpcUser::of(&st),
        &mut b,
        &mut stored,
        &opts.limits,
        &mut obs,
    );
    let classes: Vec<(u32, u32, u32)> = classified
        .iter()
        .map(|c| (c.kind, c.flags, c.file))
        .collect();
    // System calls are injected through a `syscall` of the vDSO, or of
    // the program's own code when it unmapped its vDSO (zdtm vdso02).
    // (The restore gadgets: found once, here.)
    let gadgets = crate::gadget::find(pid, &classified);
    let vdso_seen = crate::mm::vdso(&g.main, &maps)?;
    let vdso = match &vdso_seen {
        Some(v) => v.clone(),
        None => match gadgets {
            Some(gd) => (gd.syscall_ret, vec![0x0f, 0x05]),
            None => {
                // Nothing more can be learned without injecting: what was
                // found so far, and why. A process stopped between its
                // shim's unmap and its vDSO's return (the suite's
                // mid-restore test, once in a fresh-clone run) is still
                // being restored, which `obs` says already: no vDSO is
                // then its symptom, not another obstacle.
                if !crate::vma::being_restored(&maps) {
                    obs.push("it has no [vdso] mapping and no `syscall; ret` code of its own to ask it things through");
                }
                return Err(CaptureError::Refused {
                    pid,
                    obstacles: obs.into_vec(),
                });
            }
        },
    };
    // Under seccomp not suspended nothing may be injected (it could kill
    // the process): what can be seen from outside is reported, and the
    // capture refused.
    let thread_status = crate::threads::statuses(g);
    let seccomp = crate::threads::under_seccomp(g, &st, &thread_status, &mut obs);
    // Files in flight in its sockets' queues, held by the process for the
    // moment: captured with its fds (read again then), and closed in it
    // again.
    let mut fds = procinfo::fds(pid)?;
    if !seccomp {
        crate::anonfds::fold_timerfds(&mut g.main, pid, &vdso, &mut fds)?;
    }
    let in_flight = if seccomp {
        crate::inflight::InFlight::default()
    } else {
        crate::inflight::hold(&mut g.main, pid, &vdso, &fds)?
    };
    let fds = if in_flight.hidden.is_empty() {
        Ok(fds)
    } else {
        procinfo::fds(pid)
    };
    if let Ok(fds) = &fds {
        crate::anonfds::held_outside(pid, fds, &scope.pids, &mut scope.outside_anon, &mut obs);
        crate::fds::capture(
            pid,
            fds,
            scope,
            &mut b,
            &mut stored,
            &opts.limits,
            &in_flight,
            &mut obs,
        );
    }
    crate::inflight::release(&mut g.main, &vdso, &in_flight)?;
    let fds = fds?;
    // A memfd sealed F_SEAL_FUTURE_WRITE in a tree: each shim seals it
    // after its own mappings, and the first to do so kept a sibling from
    // mapping it writable, past its point of no return (a review of stop
    // 52); the maker's image alone decides whether it waits. Not yet.
    if scope.pids.len() > 1 {
        for f in b.files.iter() {
            if f.flags & cryo_image::fds::file_flags::MEMFD != 0 && f.seals & 0x10 != 0 {
                obs.push(format!(
                    "memfd {} is sealed F_SEAL_FUTURE_WRITE, which cryo restores in a process alone, not yet in a tree (capture the process with --single if it holds it alone)",
                    b.strings.text(f.path)
                ));
            }
        }
    }
    let files: Vec<(u64, u64)> = b.files.iter().map(|f| (f.dev, f.ino)).collect();
    match crate::locks::held_by_mapping(pid, &fds, &maps, &files) {
        Ok(l) => b.locks.extend(l),
        Err(why) => obs.push(why),
    }
    crate::stored::held_outside(
        &stored,
        &scope.pids,
        &mut scope.outside_shared,
        &mut scope.outside_unlinked,
        &mut obs,
    );
    if seccomp {
        return Err(CaptureError::Refused {
            pid,
            obstacles: obs.into_vec(),
        });
    }
    // The main thread: registers, xsave, mask, rseq, TLS words; queued
    // signals (its own and the process's).
    let t = &mut g.main;
    crate::regs::capture(t, &mut b)?;
    crate::task::dispatch_obstacle(pid, "its main thread", &mut obs);
    crate::signals::queued(pid, &mut b)?;
    let status = procinfo::status(pid)?;
    // State only the task itself can tell: injected system calls.
    let timers = procinfo::timers(pid)?;
    let tids: Vec<i32> = std::iter::once(pid)
        .chain(g.others.iter().map(|t| t.pid()))
        .collect();
    crate::timers::clock_obstacles(pid, &tids, &timers, &mut obs);
    crate::task::deadline_obstacles(pid, &tids, &mut obs);
    let mut task = cryo_image::task::TaskState::default();
    let mut securebits = 0;
    let mut xcomp_perm = 0u64;
    let stopped_children: Vec<i32> = scope
        .stopped
        .iter()
        .filter(|(parent, _)| *parent == pid)
        .map(|(_, c)| *c)
        .collect();
    let mut no_context = Vec::new();
    let mut main_policy = false;
    let mut landlock = std::mem::take(&mut scope.landlock);
    {
        let mut rem = Remote::new(t, vdso.0, &vdso.1)?;
        let r = (|| -> Result<(), InjectError> {
            no_context = crate::aio::without_context(&mut rem, &b.aio_rings)?;
            crate::signals::inject(&mut rem, &status, &mut b)?;
            crate::timers::inject(&mut rem, &timers, &mut b)?;
            securebits = crate::task::injected(&mut rem, &mut task)?;
            b.process.clear_child_tid = crate::threads::tid_address(&mut rem)?;
            xcomp_perm = crate::task::xcomp_perm(&mut rem)?;
            main_policy = crate::task::unrestored(&mut rem, &mut obs)?;
            landlock.check(
                &mut rem,
                pid,
                crate::task::real_ids(&st),
                "its main thread",
                &mut obs,
            )?;
            b.taken_stops = crate::task::taken_stops(&mut rem, &stopped_children)?;
            Ok(())
        })();
        let fin = rem.finish();
        r?;
        fin?;
    }
    for (start, got) in no_context {
        obs.push(format!(
            "mapping {start:x} looks like the ring of an AIO context but the process has no context there (io_getevents: {}): a copy of its parent's ring that a fork gave it; not supported",
            if got == -(libc::EINVAL as i64) { "EINVAL".to_owned() } else { format!("{got}") }
        ));
    }
    crate::task::xcomp_obstacle(xcomp_perm, &mut obs);
    let others: Vec<i32> = g.others.iter().map(|t| t.pid()).collect();
    let policies = crate::task::numa_policies(pid, &others, main_policy, &mut obs);
    // Recorded only where it holds tile data (the static features every
    // process is given need no asking).
    task.xcomp_perm = (xcomp_perm & cryo_image::task::XCOMP_TILEDATA as u64) as i64;
    // What a signal frame's xsave area holds without AMX tile data, as
    // this CPU lays it out (restore checks its CPU lays it out the same).
    if b.process.xcr0 != 0 {
        task.frame_xsave =
            (cryo_image::frame_xsave_size(b.process.xcr0 & !cryo_image::XCR0_TILEDATA) as u64)
                .min(b.process.xsave_size as u64);
    }
    crate::task::outside(pid, &mut task);
    let tids: Vec<i32> = g.others.iter().map(|t| t.pid()).collect();
    task.cgroups = b.strings.add(&crate::task::cgroups(pid, &tids, &mut obs));
    task.root = b.strings.add(&crate::task::root(pid));
    crate::task::clocks(pid, &mut task);
    b.task = Some(task);
    let (creds, groups) = crate::task::creds(&st, securebits);
    b.creds = Some(creds);
    b.groups = groups;
    // The process record: layout, identity, limits; the restore gadgets.
    crate::mm::capture(t, &maps, &status, vdso_seen.as_ref(), &mut b, &mut obs)?;
    // A restore parks every fd above the highest before it moves them
    // into place: with the process's own hard limit, past it no restore
    // can (a survey of stop 36: 10 000 fds under 20 000, captured, and
    // every restore failed "Too many open files").
    if let Some(l) = b.rlimits.iter().find(|r| r.resource == libc::RLIMIT_NOFILE) {
        let high = b
            .fds
            .iter()
            .map(|f| f.fd.max(0) as u64)
            .max()
            .unwrap_or(2)
            .max(2)
            + 1;
        let need = high + b.fds.len() as u64 + 16;
        // (With --kill only: otherwise the process goes on, and a restore
        // where the limit is higher can, as its `--dry-run` says. A
        // restore puts them in place under its own limit, which it only
        // raises to the program's (`cryo_image::rlimit_set_late`): under
        // ours here, or the program's, whichever is higher.)
        let ours = crate::sys::own_nofile_hard().unwrap_or(0);
        if need > l.max.max(ours) && opts.after == After::Kill {
            obs.push(format!(
                "its {} fds (the highest {}) would need up to {need} open at once while a restore puts them in place, above its own open-file limit of {} and cryo's here ({ours}), and --kill would end it: capture it without --kill and restore it where `ulimit -Hn` is at least {need}",
                b.fds.len(),
                high - 1,
                l.max
            ));
        }
    }
    b.gadgets = gadgets;
    drop(classified);
    // Every other thread; where glibc caches each thread's id.
    crate::threads::capture(
        g,
        &vdso,
        (&st, &thread_status),
        &mut landlock,
        &mut b,
        &mut obs,
    )?;
    scope.landlock = landlock;
    // Seccomp filters: every thread's, checked against what the restore
    // does after installing them (where its wait words go: each thread's
    // stack pointer, sigaltstack and the frame's size are known now).
    let words = crate::seccomp::wait_words(&b);
    let sc = crate::seccomp::capture(
        &g.main,
        &g.others,
        &st,
        &thread_status,
        b.gadgets.as_ref(),
        &words,
        &mut obs,
    );
    b.seccomp = sc.filters;
    if let Some(task) = b.task.as_mut() {
        task.seccomp_strict = i64::from(sc.strict);
    }
    tid_offset(pid, &maps, &mut b, &mut obs);
    let tid_at = (b.process.tid_offset != 0).then(|| b.process.regs.fs_base + b.process.tid_offset);
    let tids: Vec<i32> = std::iter::once(pid)
        .chain(b.threads.iter().map(|t| t.tid as i32))
        .collect();
    // (And the root's PID in another process of the tree: a plain
    // restore gives the root another, which that process goes on naming.)
    let root = scope.pids.first().copied().filter(|&r| r != pid);
    let (pid_refs, root_refs) = crate::pidrefs::find(pid, &tids, &maps, tid_at, root);
    b.pid_refs = pid_refs;
    if !b.threads.is_empty() && b.gadgets.is_none() {
        obs.push(format!(
            "it has {} threads and no `syscall; ret` and `rt_sigreturn` code of its own; the other threads wait in that code while the shim is removed",
            b.threads.len() + 1
        ));
    }

    Ok((
        Inspected {
            b,
            maps,
            cross: std::mem::take(&mut scope.cross),
            classes,
            policies,
            stored,
            repaired: std::mem::take(&mut scope.repaired),
            epoll_elsewhere: std::mem::take(&mut scope.epoll_elsewhere),
            root_refs,
        },
        obs.into_vec(),
    ))
}

/// The pages of an inspected process, then the bytes that are not memory,
/// into its image writer.
pub(crate) fn dump(
    ins: &mut Inspected,
    w: &mut ImageDirWriter,
    cow: Option<&mut crate::pages::CowPages>,
    progress: &mut dyn FnMut(Progress),
    stop: Option<fn() -> bool>,
) -> Result<DumpStats, CaptureError> {
    let t_dump = Instant::now();
    let pid = ins.b.process.pid as i32;
    let classified = ins
        .maps
        .iter()
        .zip(&ins.classes)
        .map(|(m, &(kind, flags, file))| crate::vma::Classified {
            m,
            kind,
            flags,
            file,
        })
        .collect::<Vec<_>>();
    let d = crate::vma::dump(
        pid,
        &classified,
        w,
        &mut ins.b,
        &ins.stored,
        cow,
        progress,
        stop,
    )?;
    for &(start, mode, nodes) in &ins.policies {
        if let Some(v) = ins.b.vmas.iter_mut().find(|v| v.start == start) {
            (v.mempolicy, v.mempolicy_nodes) = (mode, nodes);
        }
    }
    Ok(DumpStats {
        stored: d.stored_pages,
        zero: d.zero_pages,
        shared: d.shared_pages,
        sums: d.sums,
        dump_time: t_dump.elapsed(),
    })
}
