//! Signals the shim restores: dispositions, and the signals that were
//! queued at capture, each with its siginfo (see `cryo_image::signals`).

use crate::sys::*;
use crate::{check, die};
use cryo_image::Image;

/// The captured dispositions. Every other signal is SIG_DFL already: exec
/// reset caught signals, and `cryo restore` reset the ones it ignored
/// (exec keeps SIG_IGN) before the exec.
pub fn restore_dispositions(img: &Image) {
    for s in img.sigactions().iter() {
        if s.signo as usize == SIGKILL || s.signo as usize == SIGSTOP {
            continue;
        }
        let act = [s.handler, s.flags, s.restorer, s.mask];
        let r = syscall6(
            SYS_RT_SIGACTION,
            s.signo as usize,
            act.as_ptr() as usize,
            0,
            8,
            0,
            0,
        );
        // Signals 32 and 33 are glibc-internal but settable; anything the
        // kernel refuses that the program had set is an error.
        if r < 0 {
            die(format_args!("rt_sigaction({}): errno {}", s.signo, -r));
        }
    }
}

/// Queue the captured signals of the main thread and the process again,
/// in their order, with their siginfo:
/// the shim is the process itself, so the kernel accepts any si_code. All
/// signals are blocked until the final rt_sigreturn installs the
/// program's mask. A pending signal with no recorded siginfo (an image
/// without the table) is sent plainly.
pub fn queue_pending(img: &Image) {
    let p = img.process();
    let pid = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    let mut covered = 0u64;
    for q in img.signals().iter() {
        let sig = q.signo as usize;
        if sig == SIGKILL || sig == SIGSTOP || q.thread != 0 {
            // Another thread's queue: that thread queues its own.
            continue;
        }
        covered |= 1 << (sig - 1);
        let info = q.info.as_ptr() as usize;
        let r = if q.shared != 0 {
            syscall3(SYS_RT_SIGQUEUEINFO, pid, sig, info)
        } else {
            syscall6(SYS_RT_TGSIGQUEUEINFO, pid, pid, sig, info, 0, 0)
        };
        check(r, format_args!("queueing signal {sig} again"));
    }
    let pending = (p.sig_pending | p.sig_shared_pending)
        & !((1 << (SIGSTOP - 1)) | (1 << (SIGKILL - 1)))
        & !covered;
    for sig in 1..=64usize {
        if pending & (1u64 << (sig - 1)) != 0 {
            syscall3(SYS_KILL, pid, sig, 0);
        }
    }
}
