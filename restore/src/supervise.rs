//! `cryo restore --same-pid`: the restored process is forked with its
//! captured PID, so `cryo restore` stays, as its parent, for the invoker:
//! it passes on the signals a shell sends a job (interrupt, quit,
//! terminate, hang-up, the user signals, window changes, continue) and
//! ends as the restored process ended (the same exit code, or killed by
//! the same signal), like `sudo` or `timeout` do.

use crate::sys;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Signals passed on to the restored process.
pub(crate) const FORWARDED: [i32; 8] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Fork the restored process (`fork`), with the signals this process
/// passes on blocked across the fork: one that came between the fork and
/// [`run`] blocking them ended `cryo restore` by its default action and
/// left the restored program running (seen twice under load with
/// --same-pid and SIGTERM, a survey of stop 36). The child gets the mask
/// it had back. Returns in the child; the parent waits in [`run`].
pub(crate) fn fork_and_supervise(
    fork: impl FnOnce() -> std::io::Result<sys::Forked>,
) -> std::io::Result<()> {
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    let old = sys::block_signals_saving(&set)?;
    match fork() {
        Ok(sys::Forked::Child) => sys::set_signal_mask(&old),
        Ok(sys::Forked::Parent(child)) => run(child),
        Err(e) => {
            let _ = sys::set_signal_mask(&old);
            Err(e)
        }
    }
}

/// Wait for `child`, passing signals on; end as it ended.
pub(crate) fn run(child: i32) -> ! {
    run_reporting(child, None)
}

/// [`run`], where `child` (a PID namespace's init, `pidns`) reports the
/// status to end with on `report` before it ends.
pub(crate) fn run_reporting(child: i32, report: Option<OwnedFd>) -> ! {
    // Nothing of the restore stays open here (a pipe end kept by this
    // process would keep the restored program's reader from its EOF),
    // but fds 0-2, the invoker's, which the restored process has too.
    match &report {
        Some(r) => sys::close_from_except(3, r.as_raw_fd()),
        None => sys::close_from(3),
    }
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    // Exactly these: `cryo restore` held every signal until now
    // (`hold_signals`), and a job-control stop of its own must stop it.
    if let Err(e) = sys::block_only(&set) {
        eprintln!("cryo restore: blocking signals: {e}");
    }
    let tty = (0..=2).find(|&fd| sys::isatty(fd));
    loop {
        match sys::waitpid(child, libc::WNOHANG | libc::WUNTRACED) {
            Ok((p, st)) if p == child && libc::WIFSTOPPED(st) => {
                stop_with(child, libc::WSTOPSIG(st), tty)
            }
            Ok((p, st)) if p == child => {
                give_back(child, tty);
                let mut reported = [0u8; 4];
                let got = report
                    .as_ref()
                    .and_then(|r| sys::read(r.as_fd(), &mut reported).ok())
                    == Some(4);
                sys::die_with(if got {
                    i32::from_ne_bytes(reported)
                } else {
                    st
                })
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                eprintln!("cryo restore: waiting for the restored process {child}: {e}");
                sys::exit_now(1)
            }
        }
        match sys::wait_signal_info(&set) {
            Ok((libc::SIGCHLD, _)) | Err(_) => {}
            // From the terminal to its foreground process group: the
            // restored process, if in our group, has its own copy (not
            // once it leads a session of its own: `lead_own_session`).
            Ok((_, libc::SI_KERNEL)) if sys::getpgid(child).ok() == sys::getpgid(0).ok() => {}
            Ok((sig, _)) => {
                let _ = sys::kill(child, sig);
            }
        }
    }
}

/// The group the restored process leads of its own in this command's
/// session (`Plan::lead_own_group`), None otherwise (one group: the
/// terminal's signals reach both; a session of its own: no job of ours).
fn own_group(child: i32) -> Option<i32> {
    let own = sys::getpgid(0).ok()?;
    let theirs = sys::getpgid(child).ok()?;
    (theirs == child && theirs != own && sys::getsid_of(child).ok() == sys::getsid().ok())
        .then_some(theirs)
}

/// The restored process, leading a process group of its own, was stopped
/// by job control (^Z: SIGTSTP, or its terminal read or set from the
/// background: SIGTTIN, SIGTTOU): this command, the job the invoking shell
/// knows, stops with the same signal; continued, it continues the
/// restored group, and gives it the terminal first if the shell gave it
/// to this command (`fg`). Any other stop (SIGSTOP from someone) is the
/// restored process's alone. In an orphaned group (no job-control shell
/// above) the kernel drops the signal: then nothing more is done.
fn stop_with(child: i32, sig: i32, tty: Option<i32>) {
    let Some(theirs) = own_group(child) else {
        return;
    };
    if !matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
        return;
    }
    let _ = sys::kill(std::process::id() as i32, sig);
    // Stopped and continued: the SIGCONT (blocked here, passed on by the
    // loop) is pending.
    if !sys::signal_pending(libc::SIGCONT) {
        return;
    }
    if let Some(fd) = tty.filter(|&fd| sys::tty::in_foreground(fd)) {
        let _ = sys::tty::set_foreground(fd, theirs);
    }
    let _ = sys::kill(-theirs, libc::SIGCONT);
}

/// The restored process ended: if the terminal's foreground is still its
/// group (or one of its tree's that is gone), this command's group gets it
/// back, as it had it before (a shell that does not take it back itself,
/// `sh -c`, make, would read from the background).
fn give_back(child: i32, tty: Option<i32>) {
    let (Some(fd), Ok(own)) = (tty, sys::getpgid(0)) else {
        return;
    };
    let Some(fg) = sys::tty::foreground(fd) else {
        return;
    };
    let gone = sys::kill(-fg, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH));
    if fg != own && (fg == child || gone) {
        let _ = sys::tty::set_foreground(fd, own);
    }
}
