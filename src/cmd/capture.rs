//! `cryo capture` / `cryo dump`: freeze a process and write its image.

use anyhow::Result;
use cryo_capture::{After, Options, Progress, Summary};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// What happens to the target after a successful capture.
#[derive(clap::Args, Debug, Clone)]
pub struct AfterCapture {
    /// Leave the target stopped after capture (default: as it was).
    #[arg(long, conflicts_with = "kill")]
    pub leave_stopped: bool,
    /// Kill the target after a successful capture.
    #[arg(long)]
    pub kill: bool,
}

impl AfterCapture {
    fn after(&self) -> After {
        if self.kill {
            After::Kill
        } else if self.leave_stopped {
            After::LeaveStopped
        } else {
            After::AsItWas
        }
    }
}

/// Freeze a process with ptrace and write its image to DIR.
///
/// Every thread of the process and of each of its descendants is frozen
/// (all of them before any memory is read), only while their state is
/// read, then left as they were: running stays running, stopped stays
/// stopped. On any error they are left as they were and nothing is
/// written at DIR. A tree is one image: the root's in DIR, each other
/// process's in DIR/procs/PID; zombies keep their exit status.
///
/// What cryo cannot restore exactly (an established TCP connection
/// without --tcp-established, a unix socket connected outside the
/// process at fd 3 and up, a seccomp filter that would stop the restore,
/// a userfaultfd...) is refused, every obstacle named at once;
/// `--dry-run` lists them without writing anything. At fds 0-2 a pipe or
/// unix socket to outside (node's child_process, a systemd journal) is
/// given the restore's own fd in its place.
///
/// Interrupted (^C, SIGTERM), a capture finishes leaving the processes as
/// they were. Do not SIGKILL it: one killed while it runs a system call
/// in a target leaves that target with cryo's registers, and it dies.
/// What a killed capture leaves beside DIR, the next capture there
/// removes.
#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// PID of the process (all its threads, and all its descendants, are
    /// captured).
    #[arg(value_parser = clap::value_parser!(i32).range(1..))]
    pub pid: i32,
    /// Image directory to create (must not exist, or be empty; see
    /// --force). Needed but with --dry-run.
    #[arg(required_unless_present = "dry_run")]
    pub dir: Option<PathBuf>,
    /// Only check: list everything that keeps PID from being captured
    /// faithfully (exit status 0 if nothing does, 1 otherwise). Writes
    /// nothing; the target is frozen only while it is looked at.
    #[arg(long)]
    pub dry_run: bool,
    /// Largest unlinked file or memfd whose contents are stored in the
    /// image (they exist nowhere else); a bigger one is refused. The same
    /// bound holds for a System V segment's bytes and a System V message
    /// queue's messages (stored so that a restore can make them again if
    /// they are gone). Accepts K, M and G suffixes.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub max_file_data: u64,
    #[command(flatten)]
    pub after: AfterCapture,
    /// Capture PID alone: refuse, naming them, if it has children (by
    /// default its children, their children and its zombies are captured
    /// with it, into one image).
    #[arg(long)]
    pub single: bool,
    /// Keep every established TCP connection with TCP repair
    /// (CAP_NET_ADMIN): to other machines, to processes not captured,
    /// between captured processes with bytes in flight; their sequence
    /// numbers, window, options and queued bytes; the restore makes each
    /// again without a packet, and the peer goes on with the same
    /// connection. With --kill the connection ends without a FIN or reset,
    /// and is locked (with nftables, if `nft` is installed): its packets
    /// are dropped until the restore makes it again (or for 10 minutes),
    /// instead of getting a reset. Without --kill the process goes on with
    /// them, and the image restores only once it is gone.
    #[arg(long)]
    pub tcp_established: bool,
    /// Drop the datagrams queued in UDP sockets instead of refusing the
    /// capture: the network may drop any datagram, and a UDP server under
    /// steady traffic has some queued while it is frozen. The restored
    /// sockets start empty; the process, if it goes on, still has them.
    #[arg(long)]
    pub drop_datagrams: bool,
    /// Drop the events queued in inotify and fanotify instances instead
    /// of refusing the capture: no restore can queue them again, and an
    /// instance watching a busy mount always has some. The restored
    /// instances keep every watch and mark and start with an empty queue;
    /// the process, if it goes on, still has them.
    #[arg(long)]
    pub drop_fs_events: bool,
    /// Capture AIO contexts (io_setup), saying that no request the
    /// program submitted is still in flight: the kernel shows none from
    /// outside, and one in flight would be lost (its completion goes to
    /// the original). Their rings come back with the events completed
    /// and not yet reaped. Without it each context is refused.
    #[arg(long)]
    pub aio_idle: bool,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
    /// Write the pages through the page cache instead of with O_DIRECT
    /// (the default where the filesystem allows it: steadier and, here,
    /// faster; see docs/benchmarks.md). A buffered image is in memory for
    /// an immediate restore; a direct one is already on disk.
    #[arg(long)]
    pub buffered: bool,
    /// Print a JSON summary of the capture on stdout.
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no summary line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// CRIU spelling of `capture`: `cryo dump -t PID -D DIR`
///
/// Unlike CRIU, the target keeps running unless --kill is given.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// PID of the process to capture.
    #[arg(short = 't', long = "tree", value_parser = clap::value_parser!(i32).range(1..))]
    pub pid: i32,
    /// Image directory.
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub after: AfterCapture,
    /// Accepted for CRIU compatibility (cryo leaves the target running by default).
    #[arg(long, hide = true)]
    pub leave_running: bool,
    /// Accepted for CRIU compatibility (terminals are always recorded as such).
    #[arg(long, hide = true)]
    pub shell_job: bool,
    /// Keep established TCP connections with TCP repair (as `cryo
    /// capture --tcp-established`).
    #[arg(long)]
    pub tcp_established: bool,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
}

/// "256M", "1G", "4096" → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?} (e.g. 4096, 64K, 256M, 1G)"))
}

pub fn run(a: CaptureArgs) -> Result<i32> {
    let opts = Options {
        after: a.after.after(),
        force: a.force,
        direct_io: !a.buffered,
        limits: cryo_capture::fds::Limits {
            max_file_data: a.max_file_data,
        },
        single: a.single,
        tcp_established: a.tcp_established,
        drop_datagrams: a.drop_datagrams,
        drop_fs_events: a.drop_fs_events,
        aio_idle: a.aio_idle,
        stop: Some(stop_requested),
    };
    if a.dry_run {
        let (obstacles, sig) = uninterrupted(|| cryo_capture::check(a.pid, &opts));
        if let Some(sig) = sig {
            eprintln!(
                "cryo: {}",
                Interrupted {
                    sig,
                    done: None,
                    after: None
                }
            );
            return Ok(128 + sig);
        }
        let checked = obstacles?;
        let obstacles = &checked.obstacles;
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "pid": a.pid,
                    "capturable": obstacles.is_empty(),
                    "obstacles": obstacles,
                    "own_pid_refs": checked.own_pid_refs,
                    "root_pid_refs": checked.root_pid_refs,
                    "stdio_unread": checked.stdio_unread,
                }))?
            );
        } else if obstacles.is_empty() {
            println!("pid {} can be captured", a.pid);
            if let Some(note) = own_pid_note(a.pid, &checked.own_pid_refs) {
                println!("{note}");
            }
            if let Some(note) = root_pid_note(a.pid, &checked.root_pid_refs) {
                println!("{note}");
            }
            if let Some(note) = stdio_unread_note(a.pid, &checked.stdio_unread) {
                println!("{note}");
            }
        } else {
            println!("{}", obstacle_list(a.pid, obstacles));
        }
        return Ok(if obstacles.is_empty() { 0 } else { 1 });
    }
    let dir = a
        .dir
        .as_deref()
        .expect("clap requires DIR without --dry-run");
    let s = match capture_with_progress(a.pid, dir, &opts, a.quiet) {
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(i) => {
                eprintln!("cryo: {i}");
                return Ok(128 + i.sig);
            }
            None => return Err(e),
        },
        Ok(s) => s,
    };
    print_summary(&s, a.json, a.quiet)?;
    Ok(0)
}

/// The note on a PID kept in memory, if any (`refs`: where).
fn own_pid_note(pid: i32, refs: &[u64]) -> Option<String> {
    let first = refs.first()?;
    let n = refs.len();
    Some(format!(
        "note: pid {pid} keeps its own PID in memory ({n} place{}, the first at {first:#x}; `cryo inspect` shows them): restored under another PID it goes on with {pid} there (nginx's master then cannot start workers on reload, bash's $$ names another process, Ruby aborts on its next fork, Python's multiprocessing cannot join its pool and its asyncio finds no running loop, node's process.pid names another process); `cryo restore --same-pid` or `--pidns` gives it its own",
        if n == 1 { "" } else { "s" },
    ))
}

/// The note on the root's PID kept by the tree's other processes.
fn root_pid_note(root: i32, refs: &[(i32, Vec<u64>)]) -> Option<String> {
    if refs.is_empty() {
        return None;
    }
    let who = refs
        .iter()
        .map(|(pid, places)| {
            format!(
                "process {pid} ({} place{}, the first at {:#x})",
                places.len(),
                if places.len() == 1 { "" } else { "s" },
                places.first().copied().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "note: {who} {} the root's PID {root} in memory (bash's job control keeps its shell's process group so, nginx's workers their master): restored under another PID, the root is not {root} for {}; `cryo restore --same-pid` or `--pidns` gives it its own",
        if refs.len() == 1 { "keeps" } else { "keep" },
        if refs.len() == 1 { "it" } else { "them" }
    ))
}

/// The note on fds 0-2 that are files: `cryo restore` gives the
/// restored process its own there, which loses the rest of an output
/// file a program put at fd 1 itself (`dd of=FILE`), unless told.
fn stdio_note(files: &[(i32, String, u64)], locked: &[i32]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    let list = files
        .iter()
        .map(|(fd, path, pos)| format!("fd {fd} is {path} (at offset {pos})"))
        .collect::<Vec<_>>()
        .join(", ");
    let fds = files
        .iter()
        .map(|(fd, _, _)| fd.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // (A lock taken through one goes with it: a sweep of stop 52 found
    // a program's lock on its output file gone, nothing said.)
    let locks = match locked {
        [] => String::new(),
        [fd] => format!(" (and the lock it holds through fd {fd})"),
        _ => format!(
            " (and the locks it holds through fds {})",
            locked
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    Some(format!(
        "note: {list}; `cryo restore` gives the restored process its own fds 0-2 instead (as a program started anew gets its shell's), so what it writes there goes to the restore's; `cryo restore --restore-stdio={fds}` gives it {} back{locks}",
        if files.len() == 1 { "this file" } else { "these files" }
    ))
}

/// Fd `fd` of process `pid` as a note names it (`root`'s by the fd alone).
fn fd_named(root: i32, pid: i32, fd: i32) -> String {
    if pid == root {
        format!("fd {fd}")
    } else {
        format!("process {pid}'s fd {fd}")
    }
}

/// The `--inherit-fd` a restore needs for fd `fd` of process `pid`
/// (`root`'s are named by the fd alone).
fn inherit_fd_option(root: i32, pid: i32, fd: i32) -> String {
    if pid == root {
        format!("--inherit-fd {fd}=OUR_FD")
    } else {
        format!("--inherit-fd {pid}:{fd}=OUR_FD")
    }
}

/// The note on terminals at fd 3 and up that are not the process's own
/// (a screen or tmux server holds its clients' so): a restore opens each
/// by its name while it is still that terminal, else needs
/// `--inherit-fd` (a sweep of stop 50 met that only at the restore).
fn other_terminals_note(root: i32, ttys: &[(i32, i32, String)]) -> Option<String> {
    if ttys.is_empty() {
        return None;
    }
    let what = ttys
        .iter()
        .map(|&(pid, fd, ref path)| format!("{} is the terminal {path}", fd_named(root, pid, fd)))
        .collect::<Vec<_>>()
        .join(", ");
    let opts = ttys
        .iter()
        .map(|&(pid, fd, _)| inherit_fd_option(root, pid, fd))
        .collect::<Vec<_>>()
        .join(" ");
    Some(format!(
        "note: {what}, not its own at fds 0-2 (a client's, as a screen or tmux server holds them): a restore opens {} again by name while it is that terminal; once gone (a terminal's number names another after it), `cryo restore` needs {opts}",
        if ttys.len() == 1 { "it" } else { "each" }
    ))
}

/// The note on pipes from outside the image at fds 0-2 with bytes the
/// process had not read: a restore gives its own fds there and refuses
/// to lose those bytes unless told (`root`: the root's PID).
fn stdio_unread_note(root: i32, pipes: &[(i32, i32, u64)]) -> Option<String> {
    if pipes.is_empty() {
        return None;
    }
    let what = pipes
        .iter()
        .map(|&(pid, fd, n)| {
            format!(
                "{} is a pipe with {n} bytes not read yet",
                fd_named(root, pid, fd)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "note: {what}: `cryo restore` gives the restored process its own fds 0-2, not that pipe, and refuses to lose those bytes unless --drop-pipe-data (capture once they are read, to restore them all)"
    ))
}

/// The note on pipes to outside the image at fd 3 and up: a restore
/// needs `--inherit-fd` for each (`root`: the root's PID, whose fds need
/// none).
fn outside_pipes_note(root: i32, pipes: &[(i32, i32)]) -> Option<String> {
    if pipes.is_empty() {
        return None;
    }
    let opt = |&(pid, fd): &(i32, i32)| inherit_fd_option(root, pid, fd);
    let what = pipes
        .iter()
        .map(|&(pid, fd)| fd_named(root, pid, fd))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "note: {what} {} a pipe to a process outside the image, which a restore does not bring back: `cryo restore` needs {} (an fd of its own in that pipe's place)",
        if pipes.len() == 1 { "is" } else { "are each" },
        pipes.iter().map(opt).collect::<Vec<_>>().join(" ")
    ))
}

/// Every obstacle on its own line.
pub fn obstacle_list(pid: i32, obstacles: &[String]) -> String {
    let mut s = format!(
        "pid {pid} cannot be captured faithfully ({} obstacle{}):",
        obstacles.len(),
        if obstacles.len() == 1 { "" } else { "s" }
    );
    for o in obstacles {
        s.push_str("\n  - ");
        s.push_str(o);
    }
    s
}

pub fn run_dump(a: DumpArgs) -> Result<i32> {
    run(CaptureArgs {
        pid: a.pid,
        dir: Some(a.dir),
        dry_run: false,
        max_file_data: 256 << 20,
        after: a.after,
        single: false,
        tcp_established: a.tcp_established,
        drop_datagrams: false,
        drop_fs_events: false,
        aio_idle: false,
        force: a.force,
        buffered: false,
        json: false,
        quiet: false,
    })
}

/// Capture with a progress bar on a terminal for captures over 256 MiB.
pub fn capture_with_progress(pid: i32, dir: &Path, opts: &Options, quiet: bool) -> Result<Summary> {
    let show = !quiet && std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut on_progress = |p: Progress| {
        if !show || p.total_bytes < (256 << 20) {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(p.total_bytes);
            b.set_style(
                ProgressStyle::with_template(
                    "capturing {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        b.set_position(p.done_bytes);
    };
    let (r, sig) = uninterrupted(|| cryo_capture::capture(pid, dir, opts, &mut on_progress));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(sig) = sig {
        return Err(Interrupted {
            sig,
            done: r.is_ok().then(|| dir.to_owned()),
            after: r.is_ok().then_some(opts.after),
        }
        .into());
    }
    Ok(r?)
}

/// A capture that a signal came during (held back until the target was
/// left as it was).
#[derive(Debug)]
pub struct Interrupted {
    pub sig: i32,
    /// The image, if the capture had finished.
    pub done: Option<std::path::PathBuf>,
    /// What was done with the target then (a finished capture with
    /// --kill killed it: "left as it was" said otherwise, a sweep of
    /// stop 47).
    pub after: Option<cryo_capture::After>,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let name = match self.sig {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "SIGQUIT",
        };
        let left = match self.after {
            Some(cryo_capture::After::Kill) => "the target was killed (--kill)",
            Some(cryo_capture::After::LeaveStopped) => {
                "the target was left stopped (--leave-stopped)"
            }
            _ => "the target was left as it was",
        };
        match &self.done {
            Some(dir) => write!(
                f,
                "interrupted ({name}) once the capture had finished: {left}, and {} is complete",
                dir.display()
            ),
            None => write!(
                f,
                "interrupted ({name}): the target was left as it was, and nothing was written"
            ),
        }
    }
}

impl std::error::Error for Interrupted {}

/// The signals a terminal or a supervisor ends a command with.
const STOPPING: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Whether one of [`STOPPING`] is pending (held back by `uninterrupted`,
/// not taken): a capture asks between batches of pages, and stops there
/// (`cryo_capture::Options::stop`). Until stop 49 a ^C 0.1 s into a
/// 2 GB capture kept the target frozen 3.9 s more and wrote the whole
/// image (a sweep).
pub fn stop_requested() -> bool {
    // SAFETY: sigpending writes one sigset_t, ours (all-zero is valid);
    // sigismember only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && STOPPING.iter().any(|&s| libc::sigismember(&set, s) == 1)
    }
}

/// The signals of [`STOPPING`] this command does not ignore, as a set.
/// (A signal it ignores, as under nohup, stays ignored: a blocked signal
/// is queued even when its action is to ignore it.)
pub(crate) fn stopping_set() -> libc::sigset_t {
    // SAFETY: sigset_t and sigaction are plain data (all-zero is valid),
    // ours; sigemptyset and sigaddset fill the set, sigaction only reads
    // the action.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOPPING {
            let mut act: libc::sigaction = std::mem::zeroed();
            let ignored = libc::sigaction(s, std::ptr::null(), &mut act) == 0
                && act.sa_sigaction == libc::SIG_IGN;
            if !ignored {
                libc::sigaddset(&mut set, s);
            }
        }
        set
    }
}

/// Run `f` with the signals that would end this command held back (every
/// thread it starts inherits that), and say which one came meanwhile, if
/// any (taken, so it does not end the command later). Ended in the middle
/// of a capture, cryo would leave its target frozen halfway through a
/// system call injected into it (registers, signal mask and scratch
/// stack not yet put back), or with files in flight still held: the
/// capture always gets to leave its target as it was first.
fn uninterrupted<T>(f: impl FnOnce() -> T) -> (T, Option<i32>) {
    let set = stopping_set();
    // SAFETY: sigset_t is plain data (all-zero is a valid value), filled
    // by pthread_sigmask, which only changes this thread's mask (threads
    // started by `f` inherit it).
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are ours and valid.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    let r = f();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut first = None;
    // SAFETY: sigtimedwait with a zero timeout takes a pending signal of
    // `set` (or returns -1 at once), every one that came (the first is
    // said); then the mask is put back. Both sets are ours.
    unsafe {
        loop {
            let n = libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            if n <= 0 {
                break;
            }
            first.get_or_insert(n);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    (r, first)
}

pub fn print_summary(s: &Summary, json: bool, quiet: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else if !quiet {
        eprintln!(
            "captured pid {}{} into {}: {} mappings, {} pages stored ({:.1} MiB){}, {} zero pages; frozen {:.2} ms, {:.2} GiB/s",
            s.pid,
            if s.processes > 1 {
                match s.processes - 1 {
                    1 => " and 1 more process".to_string(),
                    n => format!(" and {n} more processes"),
                }
            } else {
                String::new()
            },
            s.dir.display(),
            s.vmas,
            s.pages_stored,
            s.pages_bytes as f64 / (1 << 20) as f64,
            if s.pages_shared > 0 {
                format!(
                    " + {} shared copy-on-write between processes, stored once",
                    s.pages_shared
                )
            } else {
                String::new()
            },
            s.pages_zero,
            s.frozen_ms,
            s.throughput_gib_s
        );
        if let Some(note) = own_pid_note(s.pid, &s.own_pid_refs) {
            eprintln!("{note}");
        }
        if let Some(note) = root_pid_note(s.pid, &s.root_pid_refs) {
            eprintln!("{note}");
        }
        if let Some(note) = stdio_note(&s.stdio_files, &s.stdio_locked) {
            eprintln!("{note}");
        }
        if let Some(note) = outside_pipes_note(s.pid, &s.outside_pipes) {
            eprintln!("{note}");
        }
        if let Some(note) = stdio_unread_note(s.pid, &s.stdio_unread) {
            eprintln!("{note}");
        }
        if let Some(note) = other_terminals_note(s.pid, &s.other_terminals) {
            eprintln!("{note}");
        }
        if s.in_landlock_domain {
            eprintln!(
                "note: cryo runs in a Landlock domain (a sandbox): a process in that same domain cannot be told from one in none, and restored outside the domain it would be free of it (one in a domain of its own is refused)"
            );
        }
        if !s.sysv_sets.is_empty() || !s.sysv_queues.is_empty() {
            let list = |v: &[i32]| {
                v.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut what = Vec::new();
            for (v, one, many) in [
                (&s.sysv_sets, "semaphore set", "semaphore sets"),
                (&s.sysv_queues, "message queue", "message queues"),
            ] {
                match v.len() {
                    0 => {}
                    1 => what.push(format!("{one} {}", list(v))),
                    _ => what.push(format!("{many} {}", list(v))),
                }
            }
            eprintln!(
                "System V {} recorded (every one it may use that was made since it started or last used by it: the kernel does not say which it uses); a restore makes one that is gone again",
                what.join(" and ")
            );
        }
        if s.tcp_repaired > 0 {
            let n = s.tcp_repaired;
            let many = if n == 1 { "" } else { "s" };
            if s.tcp_locked == n {
                eprintln!(
                    "{n} TCP connection{many} kept with TCP repair, locked (nftables drops {} packets until the restore; `nft delete table inet cryo_netlock` lets them through)",
                    if n == 1 { "its" } else { "their" }
                );
            } else {
                eprintln!(
                    "{n} TCP connection{many} kept with TCP repair, {} not locked (after --kill, with nftables installed, they are): once the original is gone, restore before a peer sends anything, or it gets a reset",
                    n - s.tcp_locked
                );
            }
        }
    }
    Ok(())
}
