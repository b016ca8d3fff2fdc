//! The tracer that finishes a restore.
//!
//! The shim cannot unmap its own window (it would unmap the code it runs)
//! and the restored program must not find a trace of cryo. So before the
//! exec, `cryo restore` double-forks a tracer (reparented away from the
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
//! and, after the hand-off, stays as its watchdog: if the server dies
//! before every page is in, the watchdog says so and kills the restored
//! process (and what it forked). The watchdog holds the server's end of
//! the shim's socket, where a second copy of the userfaultfd stays queued:
//! while it lives the userfaultfd cannot close, so a fault waits for the
//! kill instead of reading zeros.

use crate::RestoreError;
use cryo_image::{SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::os::fd::RawFd;

/// The page server to start (lazy restore).
pub struct ServerStart<'a> {
    pub img: cryo_image::Image<'a>,
    pub pages: std::path::PathBuf,
    pub sums: std::path::PathBuf,
    pub cfg: crate::lazy::Config,
    /// Our end of the shim's socket (the server's); closed in the restorer.
    pub server_end: RawFd,
    /// The shim's end: closed in the tracer.
    pub shim_end: RawFd,
}

use cryo_image::handoff::HANDOFF_MAGIC;

pub fn start(
    gadget: u64,
    keep_stopped: bool,
    server: Option<&ServerStart>,
) -> Result<(), RestoreError> {
    // SAFETY: getpid takes no arguments.
    let target = unsafe { libc::getpid() };
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two fds into p.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(crate::sys("pipe"));
    }
    let (r, w) = (p[0], p[1]);
    // SAFETY: this process is single-threaded here (restore runs no other
    // threads), so the child may run ordinary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::sys("fork"));
    }
    if pid == 0 {
        // SAFETY: setsid and fork take no pointers.
        unsafe {
            libc::setsid();
            let t = libc::fork();
            if t == 0 {
                libc::close(r);
                tracer_main(target, w, gadget, keep_stopped, server);
            }
            libc::_exit(if t < 0 { 1 } else { 0 });
        }
    }
    // SAFETY: close/waitpid/read with buffers we own.
    unsafe {
        libc::close(w);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        let mut b = [0u8; 1];
        let n = libc::read(r, b.as_mut_ptr() as *mut libc::c_void, 1);
        libc::close(r);
        if n != 1 || b[0] != b'R' {
            return Err(RestoreError::Sys {
                what: "starting the restore tracer (PTRACE_SEIZE of this process)".into(),
                source: std::io::Error::from_raw_os_error(if n == 1 {
                    b[0] as i32
                } else {
                    libc::ECHILD
                }),
            });
        }
    }
    Ok(())
}

fn say(msg: &str) {
    let m = format!("cryo restore (tracer): {msg}\n");
    // SAFETY: write from a buffer we own.
    unsafe { libc::write(2, m.as_ptr() as *const libc::c_void, m.len()) };
}

fn tracer_main(
    target: i32,
    w: i32,
    gadget: u64,
    keep_stopped: bool,
    server: Option<&ServerStart>,
) -> ! {
    // Hold nothing of the restored process's: pipes it writes to must see
    // EOF when it exits, not when we do. Keep stderr for messages.
    let keep_fd = server.map_or(-1, |s| s.server_end);
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            if fd != w && fd != 2 && fd != keep_fd {
                // SAFETY: closing inherited fds of this (tracer) process.
                unsafe { libc::close(fd) };
            }
        }
    }
    // SAFETY: pidfd_open takes a pid and flags; the target is alive (it
    // waits for our 'R').
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, target, 0) } as i32;
    let mut server_pid = None;
    if let Some(s) = server {
        let (keep_a, keep_b) = match crate::lazy::socketpair() {
            Ok(v) => v,
            Err(e) => {
                say(&format!("socketpair for the page server: {e}"));
                // SAFETY: _exit never returns (no 'R': the restore fails).
                unsafe { libc::_exit(1) }
            }
        };
        // SAFETY: this process is single-threaded.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: closing fds the server does not use.
            unsafe {
                libc::close(w);
                libc::close(keep_a);
                libc::close(pidfd);
            }
            let rc = crate::lazy::run(
                s.img,
                (&s.pages, &s.sums),
                &s.cfg,
                s.server_end,
                keep_b,
                target,
            );
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(rc) };
        }
        // SAFETY: the watchdog keeps keep_a (children's uffds queue there)
        // and server_end (the second copy of the uffd queues there).
        unsafe { libc::close(keep_b) };
        if pid > 0 {
            server_pid = Some(pid);
        }
    }
    // SAFETY: PTRACE_SEIZE takes no pointers (data = options).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            target,
            0usize,
            (libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD) as usize,
        )
    };
    let code = if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(1) as u8
    } else {
        b'R'
    };
    // SAFETY: write one byte from a local.
    unsafe {
        libc::write(w, &code as *const u8 as *const libc::c_void, 1);
        libc::close(w);
    }
    if r < 0 {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(1) };
    }
    let mut w = Waiter {
        target,
        server: server_pid,
    };
    let rc = match trace(&mut w, gadget, keep_stopped) {
        Ok(()) => watchdog(&mut w, pidfd),
        Err(e) => {
            say(&e);
            kill_all(target, pidfd);
            1
        }
    };
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(rc) }
}

/// Waits for the traced process, watching the page server at the same time.
struct Waiter {
    target: i32,
    server: Option<i32>,
}

fn describe(st: i32) -> String {
    if libc::WIFSIGNALED(st) {
        format!("was killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("exited with status {}", libc::WEXITSTATUS(st))
    }
}

impl Waiter {
    /// Next status change of the target. Err if the page server died
    /// without finishing.
    fn wait(&mut self) -> Result<i32, String> {
        loop {
            let mut st = 0;
            // SAFETY: waitpid writes one int.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if r == self.target {
                return Ok(st);
            }
            if r > 0 && Some(r) == self.server {
                self.server = None;
                if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                    continue;
                }
                return Err(format!(
                    "the page server (pid {r}) {} before every page was in",
                    describe(st)
                ));
            }
            if r > 0 {
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(format!("waitpid: {e}"));
            }
        }
    }
}

/// After the hand-off: wait for the page server; if it dies before every
/// page is in, kill the restored process (it would wait forever, or worse).
fn watchdog(w: &mut Waiter, pidfd: i32) -> i32 {
    let Some(server) = w.server else {
        return 0;
    };
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes one int.
        let r = unsafe { libc::waitpid(server, &mut st, 0) };
        if r == server {
            if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                return 0;
            }
            say(&format!(
                "the page server (pid {server}) {} before every page was in; killing the restored process {} so that it cannot read missing memory",
                describe(st),
                w.target
            ));
            kill_all(w.target, pidfd);
            return 1;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

/// SIGKILL the restored process and everything it forked.
fn kill_all(target: i32, pidfd: i32) {
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
    // SAFETY: pidfd_send_signal / kill take integers; the pidfd pins the
    // target's identity against pid reuse.
    unsafe {
        if pidfd >= 0 {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, 0, 0);
        } else {
            libc::kill(target, libc::SIGKILL);
        }
        for &v in &victims[1..] {
            libc::kill(v, libc::SIGKILL);
        }
    }
}

fn regs(pid: i32) -> Result<libc::user_regs_struct, String> {
    // SAFETY: user_regs_struct is plain data; all-zero is valid.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0usize, &mut r as *mut _) } < 0 {
        return Err(format!(
            "PTRACE_GETREGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(r)
}

fn set_regs(pid: i32, r: &libc::user_regs_struct) -> Result<(), String> {
    // SAFETY: PTRACE_SETREGS reads one user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, r as *const _) } < 0 {
        return Err(format!(
            "PTRACE_SETREGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn resume(req: libc::c_uint, pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: resuming requests take no pointers; data is a signal number.
    if unsafe { libc::ptrace(req, pid, 0usize, sig as usize) } < 0 {
        return Err(format!(
            "ptrace resume: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn trace(w: &mut Waiter, gadget: u64, keep_stopped: bool) -> Result<(), String> {
    let pid = w.target;
    loop {
        let st = w.wait()?;
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            return Ok(()); // the shim failed (it said why) or was killed
        }
        let sig = libc::WSTOPSIG(st);
        let event = st >> 16;
        if event == libc::PTRACE_EVENT_STOP {
            // Group-stop (someone stopped it): stay stopped until SIGCONT.
            resume(libc::PTRACE_LISTEN as libc::c_uint, pid, 0)?;
            continue;
        }
        if event != 0 || sig != libc::SIGSTOP {
            resume(libc::PTRACE_CONT, pid, sig)?;
            continue;
        }
        let r = regs(pid)?;
        if r.r10 != HANDOFF_MAGIC || r.rip < SHIM_WINDOW || r.rip >= SHIM_WINDOW + SHIM_WINDOW_LEN {
            // Someone else's SIGSTOP: deliver it.
            resume(libc::PTRACE_CONT, pid, sig)?;
            continue;
        }
        return finish(w, r, gadget, keep_stopped);
    }
}

/// Resume to the syscall-exit stop of the system call the registers are
/// set up for (entry stop, then exit stop), passing over group-stops.
fn run_syscall(w: &mut Waiter) -> Result<(), String> {
    const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;
    let pid = w.target;
    resume(libc::PTRACE_SYSCALL, pid, 0)?;
    let mut stops = 0;
    loop {
        let st = w.wait()?;
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            return Err("the restored process died while its shim window was being removed".into());
        }
        if libc::WSTOPSIG(st) == SYSCALL_STOP {
            stops += 1;
            if stops == 2 {
                return Ok(());
            }
        }
        // All signals are blocked in the shim; only SIGSTOP can arrive,
        // and it waits (not delivered) until the program runs.
        resume(libc::PTRACE_SYSCALL, pid, 0)?;
    }
}

fn finish(
    w: &mut Waiter,
    at_stop: libc::user_regs_struct,
    gadget: u64,
    keep_stopped: bool,
) -> Result<(), String> {
    let pid = w.target;
    let frame_sp = at_stop.r8;
    // munmap(window) from the program's vDSO.
    let mut r = at_stop;
    r.rax = libc::SYS_munmap as u64;
    r.orig_rax = u64::MAX;
    r.rdi = SHIM_WINDOW;
    r.rsi = SHIM_WINDOW_LEN;
    r.rip = gadget;
    r.rsp = frame_sp;
    set_regs(pid, &r)?;
    run_syscall(w)?;
    let after = regs(pid)?;
    if after.rax != 0 {
        return Err(format!(
            "munmap of the shim window failed: errno {}",
            -(after.rax as i64)
        ));
    }
    // The other threads wait on the release word (r9) in the program's
    // code: wake them, unless the process is to stay stopped (the SIGSTOP
    // below interrupts their wait; restarted after SIGCONT, it finds
    // their own words set and returns).
    let release = at_stop.r9;
    let mut after = after;
    if release != 0 && !keep_stopped {
        let mut r = after;
        r.rax = libc::SYS_futex as u64;
        r.orig_rax = u64::MAX;
        r.rdi = release;
        r.rsi = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64;
        r.rdx = i32::MAX as u64;
        r.rip = gadget;
        r.rsp = frame_sp;
        set_regs(pid, &r)?;
        run_syscall(w)?;
        after = regs(pid)?;
        if (after.rax as i64) < 0 {
            return Err(format!(
                "waking the restored threads failed: errno {}",
                -(after.rax as i64)
            ));
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
    if keep_stopped {
        // SAFETY: kill takes integers.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    // The captured pending signals were queued by the shim itself, with
    // their siginfo, before its trap (every signal blocked until the
    // rt_sigreturn installs the program's mask).
    resume(libc::PTRACE_DETACH as libc::c_uint, pid, 0)?;
    Ok(())
}
