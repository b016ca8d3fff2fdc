//! `cryo restore --pidns`: the tree restored in a PID namespace of its
//! own, where every captured PID is free.
//!
//! `cryo restore` makes a new PID namespace and a mount namespace of its
//! own, and forks the namespace's init (PID 1 there), which mounts a proc
//! for the namespace on /proc (so that /proc/self is the process asking)
//! and forks the root with its captured PID; the root then restores the
//! tree as always, every process with its PID. `cryo restore` stays, as
//! with `--same-pid`, for the invoker: it passes the signals a shell
//! sends a job on to init, which passes them on to the root, and it ends
//! as the root ended. When the root ends, init ends, and the kernel ends
//! every process left in the namespace (its daemons too, as a
//! container's). A root that was itself PID 1 is init.
//!
//! What the restored processes see: their captured PIDs; the root's
//! parent is PID 1 (init); sessions and groups as captured inside the
//! tree (the root's, if outside the tree, are this command's, which the
//! namespace cannot see: getsid/getpgid report 0 for them).

use crate::{supervise, sys, IntoSys, RestoreError};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Enter a new PID namespace with `root_pid` as the restoring process's
/// PID there. Returns in that process; `cryo restore` itself and the
/// namespace's init never return.
pub(crate) fn enter(root_pid: i32) -> Result<(), RestoreError> {
    // The root's wait status, from init to `cryo restore` (init, as PID 1
    // of the namespace, cannot end by its own signal).
    let (r, w) = sys::pipe2(libc::O_CLOEXEC).map_err(|e| e.into_sys("pipe2"))?;
    // Init's signals, set before it exists: an init gets no signal it has
    // no handler for, and one forwarded before it is ready must wait.
    // (The root inherits both; its restore blocks every signal, and the
    // exec of the shim drops the handlers.)
    let mut set = supervise::FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    for &sig in &set {
        sys::catch_signal(sig).map_err(|e| e.into_sys(format!("catching signal {sig}")))?;
    }
    sys::block_signals(&set).map_err(|e| e.into_sys("blocking signals"))?;
    sys::unshare_pid_and_mount_ns()
        .map_err(|e| e.into_sys("unshare(CLONE_NEWPID | CLONE_NEWNS)"))?;
    match sys::fork().map_err(|e| e.into_sys("forking the PID namespace's init"))? {
        sys::Forked::Parent(init) => {
            drop(w);
            supervise::run_reporting(init, Some(r))
        }
        sys::Forked::Child => {}
    }
    drop(r);
    if let Err(e) = sys::mount_own_proc() {
        eprintln!("cryo restore: mounting /proc for the new PID namespace: {e}");
        sys::exit_now(1);
    }
    if root_pid == 1 {
        drop(w);
        return Ok(());
    }
    match sys::fork_with_pid(root_pid) {
        Ok(sys::Forked::Child) => {
            drop(w);
            Ok(())
        }
        Ok(sys::Forked::Parent(root)) => init(root, w),
        Err(e) => {
            eprintln!("cryo restore: forking the restored process with its PID {root_pid} in the new PID namespace: {e}");
            sys::exit_now(1)
        }
    }
}

/// The namespace's init: reap every process that ends here, pass the
/// forwarded signals on to the root, and when the root ends, report its
/// status to `cryo restore` and end (the kernel then ends the rest).
fn init(root: i32, report: OwnedFd) -> ! {
    sys::close_from_except(3, report.as_raw_fd());
    // (Handlers and mask inherited from `cryo restore`: see `enter`.)
    let mut set = supervise::FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    loop {
        loop {
            match sys::waitpid(-1, libc::WNOHANG) {
                Ok((p, st)) if p == root => {
                    let _ = sys::write(report.as_fd(), &st.to_ne_bytes());
                    sys::exit_now(0)
                }
                Ok((0, _)) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => break,
            }
        }
        match sys::wait_signal_info(&set) {
            Ok((libc::SIGCHLD, _)) | Err(_) => {}
            // The terminal's own (the root, in the same process group,
            // has its copy); only what `cryo restore` passes on goes on.
            Ok((_, libc::SI_KERNEL)) => {}
            Ok((sig, _)) => {
                let _ = sys::kill(root, sig);
            }
        }
    }
}
