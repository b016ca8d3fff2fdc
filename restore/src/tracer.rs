//! The tracer that finishes a restore.
//!
//! The shim cannot unmap its own window (it would unmap the code it runs)
//! and the restored program must not find a trace of cryo. So before the
//! exec, `cryo restore` double-forks a tracer (`sys::spawn_detached`;
//! reparented away from the
//! restoring process, so the restored program never sees it as a child and
//! never gets its SIGCHLD) that PTRACE_SEIZEs the restoring process. When
//! the shim is done it sends itself SIGSTOP with r8 = the signal frame and
//! r10 = a magic value. At that signal-delivery-stop the tracer runs two
//! system calls in the restored process through a `syscall` instruction of
//! its vDSO, each to its syscall-exit stop (PTRACE_SYSCALL): `munmap` of
//! the window and `rt_sigreturn`, which loads the captured registers. No
//! SIGTRAP is ever raised (`int3` and single-steps did): the kernel forces
//! a SIGTRAP on a task that blocks it by resetting its handler to SIG_DFL,
//! and the shim blocks every signal with the program's handlers in place. It
//! detaches (after queueing SIGSTOP for `--keep-stopped`) and exits.
//! Signals that arrive meanwhile are passed through. PTRACE_O_EXITKILL: if
//! the tracer dies first, the half-restored process dies too.

//!
//! In a lazy restore the tracer also starts the page server (its child)
//! and, after the hand-off, stays as its watchdog (where the shim can
//! finish alone, through the program's gadgets, it traces nothing and is
//! only that: the ptrace round trips cost 0.6 ms of a 2 ms restore): if the server dies
//! before every page is in, the watchdog says so and kills the restored
//! process (and what it forked). The watchdog holds the server's end of
//! the shim's socket, where a second copy of the userfaultfd stays queued:
//! while it lives the userfaultfd cannot close, so a fault waits for the
//! kill instead of reading zeros.

use crate::sys::{self, Forked, Resume};
use crate::{IntoSys, RestoreError};
use cryo_image::{SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// The page server to start (lazy restore).
pub struct ServerStart<'a> {
    pub img: cryo_image::Image<'a>,
    /// pages.img and sums.img, with the device and inode `prepare` found
    /// (the server opens them by path, and refuses others).
    pub pages: (std::path::PathBuf, Option<cryo_image::load::FileId>),
    pub sums: (std::path::PathBuf, Option<cryo_image::load::FileId>),
    pub cfg: crate::lazy::Config,
    /// Our end of the shim's socket (the server's); closed in the restorer.
    pub server_end: RawFd,
    /// The shim's end: closed in the tracer.
    pub shim_end: RawFd,
}

use cryo_image::handoff::HANDOFF_MAGIC;

/// Why the tracer gave up (it says so on stderr and kills the restored
/// process).
#[derive(Debug, thiserror::Error)]
enum TracerError {
    #[error("the page server (pid {pid}) {status} before every page was in")]
    ServerDied { pid: i32, status: Status },
    #[error("waitpid: {0}")]
    Wait(io::Error),
    #[error("PTRACE_GETREGS: {0}")]
    GetRegs(io::Error),
    #[error("PTRACE_SETREGS: {0}")]
    SetRegs(io::Error),
    #[error("ptrace resume: {0}")]
    Resume(io::Error),
    #[error("the restored process died while its shim window was being removed")]
    DiedInShim,
    #[error("munmap of the shim window failed: errno {0}")]
    Munmap(i64),
    #[error("waking the restored threads failed: errno {0}")]
    Wake(i64),
    #[error("reading or writing the restored threads' wait words: {0}")]
    OwnWords(io::Error),
    #[error("closing the tree's second round in the restored process failed: errno {0}")]
    RoundClose(i64),
}

/// How a child ended: its wait status, said as the tracer says it.
#[derive(Debug, Clone, Copy)]
struct Status(i32);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let st = self.0;
        if libc::WIFSIGNALED(st) {
            write!(f, "was killed by signal {}", libc::WTERMSIG(st))
        } else {
            write!(f, "exited with status {}", libc::WEXITSTATUS(st))
        }
    }
}

/// Start the tracer: fork, and in the child start a new session and fork
/// the tracer, which the exit of its parent reparents away from us. Waits
/// for its word that it has seized this process.
///
/// `stop`: the signal to leave the process stopped with (`--keep-stopped`,
/// or a tree's process captured in group-stop), None to let it run.
/// `suspend_seccomp`: the image has seccomp filters, which the shim
/// installs before it stops for the tracer: seize with them suspended
/// (PTRACE_O_SUSPEND_SECCOMP), so that they do not see the tracer's
/// injected calls (the rt_sigreturn after the detach they do see; capture
/// checked they allow it).
pub fn start(
    gadget: u64,
    stop: Option<i32>,
    server: Option<&ServerStart>,
    seize: bool,
    suspend_seccomp: bool,
    round: Option<RawFd>,
) -> Result<(), RestoreError> {
    let target = std::process::id() as i32;
    let (r, w) = sys::pipe2(libc::O_CLOEXEC).map_err(|e| e.into_sys("pipe"))?;
    // The tracer runs ordinary code after fork: see sys::fork.
    let rfd = r.as_raw_fd();
    sys::spawn_detached(move || {
        sys::close(rfd);
        tracer_main(
            target,
            w,
            gadget,
            stop,
            server,
            seize,
            suspend_seccomp,
            round,
        )
    })
    .map_err(|e| e.into_sys("fork"))?;
    let mut b = [0u8; 1];
    let n = sys::read(r.as_fd(), &mut b);
    drop(r);
    let got = matches!(n, Ok(1));
    if !got || b[0] != b'R' {
        return Err(RestoreError::Sys {
            what: "starting the restore tracer (PTRACE_SEIZE of this process)".into(),
            source: io::Error::from_raw_os_error(if got { b[0] as i32 } else { libc::ECHILD }),
        });
    }
    Ok(())
}

fn say(msg: &str) {
    let m = format!("cryo restore (tracer): {msg}\n");
    let _ = sys::write(io::stderr().as_fd(), m.as_bytes());
}

#[allow(clippy::too_many_arguments)]
fn tracer_main(
    target: i32,
    w: OwnedFd,
    gadget: u64,
    stop: Option<i32>,
    server: Option<&ServerStart>,
    seize: bool,
    suspend_seccomp: bool,
    round: Option<RawFd>,
) -> ! {
    // The target is alive (it waits for our 'R').
    let pidfd = sys::pidfd_open(target).ok();
    // (Not tracing: a lazy restore the shim finishes itself, where this
    // process is only the page server's parent and watchdog.)
    let seized = if seize {
        const PTRACE_O_SUSPEND_SECCOMP: libc::c_int = 1 << 21;
        let suspend = if suspend_seccomp {
            PTRACE_O_SUSPEND_SECCOMP
        } else {
            0
        };
        sys::ptrace_seize(
            target,
            libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD | suspend,
        )
    } else {
        Ok(())
    };
    let code = match &seized {
        Ok(()) => b'R',
        Err(e) => e.raw_os_error().unwrap_or(1) as u8,
    };
    let _ = sys::write(w.as_fd(), &[code]);
    drop(w);
    if seized.is_err() {
        sys::exit_now(1);
    }
    // Hold nothing of the restored process's: pipes it writes to must see
    // EOF when it exits, not when we do. Keep stderr for messages. (After
    // the 'R', while `cryo restore` execs the shim: the program runs only
    // after the shim has rebuilt it.)
    let keep_fd = server.map_or(-1, |s| s.server_end);
    let pidfd_raw = pidfd.as_ref().map_or(-1, |p| p.as_raw_fd());
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            if fd != 2 && fd != keep_fd && fd != pidfd_raw && Some(fd) != round {
                // Inherited: whatever owned it in the restorer never runs
                // here (this process ends in exit_now).
                sys::close(fd);
            }
        }
    }
    // The page server is forked after the 'R', while `cryo restore` execs
    // the shim (which sends it the uffd through a socket that holds it
    // meanwhile, and waits for its go only at the end): one fork less
    // before the program starts.
    let mut server_pid = None;
    if let Some(s) = server {
        let (keep_a, keep_b) = match crate::lazy::socketpair() {
            Ok(v) => v,
            Err(e) => {
                say(&format!("socketpair for the page server: {e}"));
                kill_all(target, pidfd.as_ref().map(|p| p.as_fd()));
                sys::exit_now(1)
            }
        };
        // This process is single-threaded: see sys::fork.
        let forked = sys::fork();
        if let Ok(Forked::Child) = forked {
            // Fds the server does not use.
            sys::close(keep_a);
            drop(pidfd);
            let rc = crate::lazy::run(
                s.img,
                (&s.pages, &s.sums),
                &s.cfg,
                s.server_end,
                keep_b,
                target,
            );
            sys::exit_now(rc);
        }
        // The watchdog keeps keep_a (children's uffds queue there) and
        // server_end (the second copy of the uffd queues there).
        sys::close(keep_b);
        match forked {
            Ok(Forked::Parent(pid)) => server_pid = Some(pid),
            // The shim would wait for the server's go for ever.
            _ => {
                say("forking the page server failed; killing the restored process");
                kill_all(target, pidfd.as_ref().map(|p| p.as_fd()));
                sys::exit_now(1)
            }
        }
    }
    let mut w = Waiter {
        target,
        server: server_pid,
    };
    let traced = if seize {
        // (Our copy of the tree's second round, inherited: the process
        // hands its own over at its trap, and we take its part.)
        let round = round.map(sys::adopt);
        trace(&mut w, gadget, stop, round)
    } else {
        Ok(())
    };
    let rc = match traced {
        Ok(()) => watchdog(&mut w, pidfd.as_ref().map(|p| p.as_fd()), keep_fd),
        Err(e) => {
            say(&e.to_string());
            kill_all(target, pidfd.as_ref().map(|p| p.as_fd()));
            1
        }
    };
    sys::exit_now(rc)
}

/// Waits for the traced process, watching the page server at the same time.
struct Waiter {
    target: i32,
    server: Option<i32>,
}

impl Waiter {
    /// Next status change of the target. Err if the page server died
    /// without finishing.
    fn wait(&mut self) -> Result<i32, TracerError> {
        loop {
            match sys::waitpid(-1, libc::__WALL) {
                Ok((r, st)) if r == self.target => return Ok(st),
                Ok((r, st)) if Some(r) == self.server => {
                    self.server = None;
                    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                        continue;
                    }
                    return Err(TracerError::ServerDied {
                        pid: r,
                        status: Status(st),
                    });
                }
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(TracerError::Wait(e)),
            }
        }
    }
}

/// After the hand-off: wait for the page server; if it dies before every
/// page is in, kill the restored process (it would wait forever, or worse).
fn watchdog(w: &mut Waiter, pidfd: Option<BorrowedFd>, server_end: RawFd) -> i32 {
    let Some(server) = w.server else {
        return 0;
    };
    loop {
        match sys::waitpid(server, 0) {
            Ok((r, st)) if r == server => {
                if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                    // Every page is in, maybe before the shim has read the
                    // go byte (a small image, streamed at once; the shim
                    // finishing alone): closing our end, where the second
                    // copy of the uffd is still queued, would reset the
                    // shim's socket (it read ECONNRESET instead of the go
                    // byte). Wait until the shim has closed its end, or
                    // the process is gone.
                    wait_hangup(server_end, pidfd);
                    return 0;
                }
                say(&format!(
                    "the page server (pid {server}) {} before every page was in; killing the restored process {} so that it cannot read missing memory",
                    Status(st),
                    w.target
                ));
                kill_all(w.target, pidfd);
                return 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            _ => return 1,
        }
    }
}

/// Until the other end of `sock` is closed, or the process behind
/// `pidfd` has ended.
fn wait_hangup(sock: RawFd, pidfd: Option<BorrowedFd>) {
    if sock < 0 {
        return;
    }
    loop {
        let mut fds = vec![libc::pollfd {
            fd: sock,
            events: libc::POLLRDHUP,
            revents: 0,
        }];
        if let Some(p) = pidfd {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let n = crate::uffd::poll(&mut fds, -1);
        if n > 0 && fds.iter().any(|f| f.revents != 0) {
            return;
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// The signal that stops `pid` the way `sig` stopped it when captured (a
/// parent's waitid reports it). The kernel discards SIGTSTP, SIGTTIN and
/// SIGTTOU for a process whose group is orphaned (no member has a parent
/// in another group of the same session), so the process would run on:
/// then, or if the group cannot be read, SIGSTOP (stopped, as captured,
/// but reported as SIGSTOP).
fn stopping_signal(pid: i32, sig: i32) -> i32 {
    if sig == libc::SIGSTOP || group_has_outside_parent(pid) == Some(true) {
        sig
    } else {
        libc::SIGSTOP
    }
}

/// (state, ppid, pgrp, session) from /proc/PID/stat.
fn stat_ids(pid: i32) -> Option<(char, i32, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.rsplit_once(") ")?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let mut n = || -> Option<i32> { f.next()?.parse().ok() };
    Some((state, n()?, n()?, n()?))
}

/// Whether a live member of `pid`'s process group has a parent in another
/// group of the same session (the group is not orphaned); None if a
/// member's parent cannot be seen (outside this PID namespace).
fn group_has_outside_parent(pid: i32) -> Option<bool> {
    let (_, _, pgrp, _) = stat_ids(pid)?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Some((state, ppid, g, sid)) = stat_ids(p) else {
            continue;
        };
        if g != pgrp || state == 'Z' || state == 'X' {
            continue;
        }
        let (_, _, pg, psid) = stat_ids(ppid)?;
        if pg != pgrp && psid == sid {
            return Some(true);
        }
    }
    Some(false)
}

/// SIGKILL the restored process and everything it forked.
fn kill_all(target: i32, pidfd: Option<BorrowedFd>) {
    let mut victims = vec![target];
    // Descendants, by parent pid, to a fixed point.
    let procs: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| {
                let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ppid = stat
                    .rsplit_once(") ")?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((pid, ppid))
            })
            .collect()
        })
        .unwrap_or_default();
    let mut grew = true;
    while grew {
        grew = false;
        for &(pid, ppid) in &procs {
            if victims.contains(&ppid) && !victims.contains(&pid) {
                victims.push(pid);
                grew = true;
            }
        }
    }
    // The pidfd pins the target's identity against pid reuse.
    let _ = match pidfd {
        Some(fd) => sys::pidfd_send_signal(fd, libc::SIGKILL),
        None => sys::kill(target, libc::SIGKILL),
    };
    for &v in &victims[1..] {
        let _ = sys::kill(v, libc::SIGKILL);
    }
}

fn regs(pid: i32) -> Result<libc::user_regs_struct, TracerError> {
    sys::getregs(pid).map_err(TracerError::GetRegs)
}

fn set_regs(pid: i32, r: &libc::user_regs_struct) -> Result<(), TracerError> {
    sys::setregs(pid, r).map_err(TracerError::SetRegs)
}

fn resume(req: Resume, pid: i32, sig: i32) -> Result<(), TracerError> {
    sys::resume(req, pid, sig).map_err(TracerError::Resume)
}

fn trace(
    w: &mut Waiter,
    gadget: u64,
    stop: Option<i32>,
    round: Option<OwnedFd>,
) -> Result<(), TracerError> {
    let pid = w.target;
    loop {
        let st = w.wait()?;
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            return Ok(()); // the shim failed (it said why) or was killed
        }
        let sig = libc::WSTOPSIG(st);
        let event = st >> 16;
        if event == libc::PTRACE_EVENT_STOP {
            // A group-stop (someone stopped it; WSTOPSIG is the stopping
            // signal): stay stopped until SIGCONT. Its end (SIGCONT came:
            // WSTOPSIG is SIGTRAP then) or an interrupt: go on. Listening
            // there too left the process in a trap that nothing would
            // ever end: a restore stopped and continued hung, 20 of 20
            // under a storm of SIGSTOP/SIGCONT.
            let how = if sig == libc::SIGTRAP {
                Resume::Cont
            } else {
                Resume::Listen
            };
            resume(how, pid, 0)?;
            continue;
        }
        if event != 0 || sig != libc::SIGSTOP {
            resume(Resume::Cont, pid, sig)?;
            continue;
        }
        let r = regs(pid)?;
        if r.r10 != HANDOFF_MAGIC
            || r.rip < SHIM_WINDOW
            || r.rip >= SHIM_WINDOW + SHIM_WINDOW_LEN
            || !sent_by_itself(pid)
        {
            // Someone else's SIGSTOP: deliver it. (Also one taken just
            // as the shim sent its own, which it then was: one SIGSTOP
            // is pending at most, and the first sender's siginfo is the
            // one kept. Once continued, the shim sends its own again.)
            resume(Resume::Cont, pid, sig)?;
            continue;
        }
        return finish(w, r, gadget, stop, round);
    }
}

/// Say `f` and `pid` on the tree's second round (`fd`, one end every
/// process but the root shares), then, if `wait`, wait for the root's `G`
/// (or its end). As the shim's `round_two` does for a process it finishes.
fn round_two(fd: BorrowedFd, pid: u32, wait: bool) {
    let p = pid.to_le_bytes();
    let msg = [b'f', p[0], p[1], p[2], p[3]];
    loop {
        match sys::write(fd, &msg) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Ok(5) => break,
            // The root is gone: nobody waits.
            _ => return,
        }
    }
    if !wait {
        return;
    }
    loop {
        let mut b = [0u8; 8];
        match sys::read(fd, &mut b) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Ok(n) if n > 0 && b[0] != b'G' => continue,
            _ => break,
        }
    }
}

/// Run system call `nr` in the stopped target through its `syscall; ret`
/// gadget on stack `sp` (`at` = (gadget, sp)), its first arguments
/// `args` (rdi, rsi, rdx, r10, r8, r9), every other register `base`'s:
/// the registers after it.
fn syscall_in(
    w: &mut Waiter,
    base: &libc::user_regs_struct,
    (gadget, sp): (u64, u64),
    nr: i64,
    args: &[u64],
) -> Result<libc::user_regs_struct, TracerError> {
    let mut r = *base;
    r.rax = nr as u64;
    r.orig_rax = u64::MAX;
    let slots = [
        &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9,
    ];
    for (reg, &v) in slots.into_iter().zip(args) {
        *reg = v;
    }
    r.rip = gadget;
    r.rsp = sp;
    set_regs(w.target, &r)?;
    run_syscall(w)?;
    regs(w.target)
}

/// Whether the SIGSTOP tracee `pid` is stopped for was sent by itself
/// (tgkill: SI_TKILL, from its own PID), not by someone else (kill(2):
/// SI_USER).
fn sent_by_itself(pid: i32) -> bool {
    const SI_TKILL: i32 = -6;
    match sys::getsiginfo(pid) {
        // SAFETY: the kill/tgkill part of the union is what SI_USER and
        // SI_TKILL signals carry; si_pid reads its first field.
        Ok(si) => si.si_code == SI_TKILL && unsafe { si.si_pid() } == pid,
        Err(_) => true,
    }
}

/// Resume to the syscall-exit stop of the system call the registers are
/// set up for (entry stop, then exit stop). A SIGSTOP that arrives
/// meanwhile (every other signal is blocked in the shim) stops the
/// process until a SIGCONT, as it would untraced; the call goes on after
/// it. (Before, the tracer resumed the process without it: a SIGSTOP
/// sent in the ~0.5 ms of the tracer's last calls was lost, 20 of 300
/// sent at random times in a restore's first 7 ms.)
fn run_syscall(w: &mut Waiter) -> Result<(), TracerError> {
    const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;
    let pid = w.target;
    resume(Resume::Syscall, pid, 0)?;
    let mut stops = 0;
    loop {
        let st = w.wait()?;
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            return Err(TracerError::DiedInShim);
        }
        let sig = libc::WSTOPSIG(st);
        if sig == SYSCALL_STOP {
            stops += 1;
            if stops == 2 {
                return Ok(());
            }
            resume(Resume::Syscall, pid, 0)?;
        } else if st >> 16 == libc::PTRACE_EVENT_STOP {
            // The group-stop (until SIGCONT), then its end (SIGTRAP).
            let how = if sig == libc::SIGTRAP {
                Resume::Syscall
            } else {
                Resume::Listen
            };
            resume(how, pid, 0)?;
        } else {
            // A signal-delivery-stop: deliver it.
            resume(Resume::Syscall, pid, sig)?;
        }
    }
}

fn finish(
    w: &mut Waiter,
    at_stop: libc::user_regs_struct,
    gadget: u64,
    stop: Option<i32>,
    round: Option<OwnedFd>,
) -> Result<(), TracerError> {
    let pid = w.target;
    let frame_sp = at_stop.r8;
    // The other threads' own wait words (r14 of them, listed at r15 in
    // the window), read before the window goes.
    let own_words = own_words(pid, at_stop.r15, at_stop.r14)?;
    // munmap(window) from the program's vDSO.
    let after = syscall_in(
        w,
        &at_stop,
        (gadget, frame_sp),
        libc::SYS_munmap,
        &[SHIM_WINDOW, SHIM_WINDOW_LEN],
    )?;
    if after.rax != 0 {
        return Err(TracerError::Munmap(-(after.rax as i64)));
    }
    // A tree's process: its end of the second round (r12, plus one) is
    // closed in the process; we take its part with our own copy
    // (inherited: pidfd_getfd would need ptrace rights a process made
    // undumpable again refuses a restorer without CAP_SYS_PTRACE).
    let round = match (at_stop.r12, round) {
        (0, _) | (_, None) => None,
        (n, Some(ours)) => {
            let closed = syscall_in(w, &after, (gadget, frame_sp), libc::SYS_close, &[n - 1])?;
            if closed.rax != 0 {
                return Err(TracerError::RoundClose(-(closed.rax as i64)));
            }
            Some(ours)
        }
    };
    let stopping = stop.map(|sig| stopping_signal(pid, sig));
    // The tree's second round, for the process: no other process enters
    // its program before this one is ready to, or stopped if it is to be.
    // Stopped, not only with the stop pending: a SIGCONT its parent sends
    // at once would cancel a pending stop without a word to the parent
    // (no CLD_CONTINUED for a process that was not stopped: bash's job
    // stays "Stopped" for ever), and one sent before the stop is queued
    // would be lost (the process stopped for ever). One to run waits
    // here, before its threads are woken.
    if let (Some(fd), None) = (&round, stopping) {
        round_two(fd.as_fd(), pid as u32, true);
    }
    // The other threads wait on the release word (r9) in the program's
    // code, or on their own words if a stop (SIGSTOP, then SIGCONT)
    // restarted their wait: each own word set and woken (FUTEX_WAKE_OP:
    // set it to 1, wake its waiters if it was 0), then the release word
    // woken, unless the process is to stay stopped (the SIGSTOP below
    // interrupts their wait; restarted after SIGCONT, it finds their own
    // words set and returns). Set only now, with the window gone: a
    // wait restarted on a word set earlier went on at once, and such a
    // thread ran with the window mapped (2 restores in 30 under a storm
    // of SIGSTOP/SIGCONT).
    // The first word of each FUTEX_WAKE_OP is one nobody waits on
    // (`release` + 4): the kernel wakes one waiter there even when asked
    // for none (a review: each call let one thread go early). With the
    // process to stay stopped, the words are only written: a thread
    // waiting on its own word since a stop sleeps on until the SIGSTOP
    // below interrupts it, and runs only after SIGCONT (a review: woken,
    // threads of a process restored stopped ran meanwhile).
    let release = at_stop.r9;
    let mut after = after;
    if stop.is_some() {
        set_own_words(pid, &own_words)?;
    } else {
        for &word in &own_words {
            const SET_1_IF_0: u64 = 1 << 12;
            let wake_op = (libc::FUTEX_WAKE_OP | libc::FUTEX_PRIVATE_FLAG) as u64;
            after = syscall_in(
                w,
                &after,
                (gadget, frame_sp),
                libc::SYS_futex,
                &[release + 4, wake_op, 0, i32::MAX as u64, word, SET_1_IF_0],
            )?;
            if (after.rax as i64) < 0 {
                return Err(TracerError::Wake(-(after.rax as i64)));
            }
        }
    }
    if release != 0 && stop.is_none() {
        let wake = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64;
        after = syscall_in(
            w,
            &after,
            (gadget, frame_sp),
            libc::SYS_futex,
            &[release, wake, i32::MAX as u64],
        )?;
        if (after.rax as i64) < 0 {
            return Err(TracerError::Wake(-(after.rax as i64)));
        }
    }
    // rt_sigreturn: every register, the xsave state and the signal mask
    // come from the frame the shim built.
    let mut r = after;
    r.rax = libc::SYS_rt_sigreturn as u64;
    r.orig_rax = u64::MAX;
    r.rip = gadget;
    r.rsp = frame_sp;
    set_regs(pid, &r)?;
    if let Some(sig) = stopping {
        // Pending, and blocked until the rt_sigreturn installs the
        // program's mask: the process stops before its first instruction.
        let _ = sys::kill(pid, sig);
    }
    // The captured pending signals were queued by the shim itself, with
    // their siginfo, before its trap (every signal blocked until the
    // rt_sigreturn installs the program's mask).
    resume(Resume::Detach, pid, 0)?;
    if let (Some(fd), Some(sig)) = (&round, stopping) {
        wait_stopped(pid, sig);
        round_two(fd.as_fd(), pid as u32, false);
    }
    Ok(())
}

/// The `n` own wait words of `pid`'s other threads, from the table at
/// `table` (u64 addresses, `threads::own_words` in the shim).
fn own_words(pid: i32, table: u64, n: u64) -> Result<Vec<u64>, TracerError> {
    use std::os::unix::fs::FileExt;
    if n == 0 {
        return Ok(Vec::new());
    }
    let read = || -> io::Result<Vec<u64>> {
        if n > 4096 {
            return Err(io::Error::other(format!("{n} threads")));
        }
        let mut b = vec![0u8; n as usize * 8];
        std::fs::File::open(format!("/proc/{pid}/mem"))?.read_exact_at(&mut b, table)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    };
    read().map_err(TracerError::OwnWords)
}

/// Write 1 to each of `pid`'s own wait words (u32), through its memory.
fn set_own_words(pid: i32, words: &[u64]) -> Result<(), TracerError> {
    use std::os::unix::fs::FileExt;
    if words.is_empty() {
        return Ok(());
    }
    let write = || -> io::Result<()> {
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/mem"))?;
        for &w in words {
            mem.write_all_at(&1u32.to_ne_bytes(), w)?;
        }
        Ok(())
    };
    write().map_err(TracerError::OwnWords)
}

/// Until process `pid` has taken the stop signal `sig` queued to it (no
/// longer pending for the process: kill queues it there) and is stopped
/// (every thread, once the group stop is complete), or
/// something cancelled the stop, or it is gone; at most about 2 s, then
/// the others go on anyway (a tree must not wait for ever on one).
fn wait_stopped(pid: i32, sig: i32) {
    let path = format!("/proc/{pid}/status");
    let bit = 1u64 << (sig - 1);
    for _ in 0..20_000 {
        let Ok(s) = std::fs::read_to_string(&path) else {
            return;
        };
        let field = |name: &str| s.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let pending = field("ShdPnd:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        // (Taken and nobody stopped: cancelled by a SIGCONT.)
        if pending & bit == 0 && !group_stopping(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Whether some thread of `pid` is still on its way into a group stop
/// (the stop taken by one thread, the others not stopped yet).
fn group_stopping(pid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let states: Vec<char> = rd
        .flatten()
        .filter_map(|e| {
            let st = std::fs::read_to_string(e.path().join("stat")).ok()?;
            st.rsplit_once(") ")?.1.chars().next()
        })
        .collect();
    states.contains(&'T') && states.iter().any(|&c| c != 'T')
}
