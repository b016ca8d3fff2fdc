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

/// Take again the stop reports the program had taken (format 11.9
/// `taken_stops`): each such child, stopped again by its tracer, reports
/// its stop to this process once more; the program had already had that
/// report, so it must not get it twice (bash would show the job stopped
/// again, a `waitpid(WUNTRACED)` loop would count it twice). Waits for
/// each child to stop (its tracer lets it go once its own restore is
/// done, however long its memory takes: up to 10 minutes) or end, then
/// takes the SIGCHLD those stops raised, unless one was pending at
/// capture (one SIGCHLD covers both). Every signal is blocked in the
/// shim, so a SIGCHLD raised before the program's disposition was back
/// waits too, whatever that disposition is.
pub fn take_stop_reports(img: &Image) {
    const SYS_WAITID: usize = 247;
    const SYS_NANOSLEEP: usize = 35;
    const SYS_RT_SIGTIMEDWAIT: usize = 128;
    const SIGCHLD: usize = 17;
    const P_PID: usize = 1;
    const WNOHANG: usize = 1;
    const WSTOPPED: usize = 2;
    const WEXITED: usize = 4;
    const WNOWAIT: usize = 0x0100_0000;
    const WALL: usize = 0x4000_0000;
    const CLD_STOPPED: u32 = 5;
    const SA_NOCLDSTOP: u64 = 1;
    const EINTR: isize = -4;
    const LIMIT_NS: u64 = 600_000_000_000;
    let taken = img.taken_stops();
    if taken.is_empty() {
        return;
    }
    let waitid = |pid: u32, info: &mut [u32; 32], how: usize| loop {
        let r = syscall6(
            SYS_WAITID,
            P_PID,
            pid as usize,
            info.as_mut_ptr() as usize,
            how | WNOHANG | WALL,
            0,
            0,
        );
        if r != EINTR {
            return r;
        }
    };
    let start = crate::now_ns();
    let mut reported = 0;
    for t in taken.iter() {
        let mut nap = 100_000i64;
        loop {
            // Looked at, not taken: stopped (si_code CLD_STOPPED at byte
            // 8, si_pid at 16), or ended (nothing to take then).
            let mut info = [0u32; 32];
            if waitid(t.pid, &mut info, WSTOPPED | WEXITED | WNOWAIT) < 0 {
                break; // not this process's child: nothing to take
            }
            if info[4] == t.pid {
                let mut taken_now = [0u32; 32];
                if info[2] == CLD_STOPPED
                    && waitid(t.pid, &mut taken_now, WSTOPPED) == 0
                    && taken_now[4] == t.pid
                {
                    reported += 1;
                }
                break;
            }
            if crate::now_ns().saturating_sub(start) > LIMIT_NS {
                write(
                    2,
                    b"cryo-shim: a stopped child was not stopped again within 10 minutes; the program may get its stop report twice\n",
                );
                break;
            }
            let ts = [0i64, nap];
            syscall3(SYS_NANOSLEEP, ts.as_ptr() as usize, 0, 0);
            nap = (nap * 2).min(10_000_000);
        }
    }
    let p = img.process();
    let bit = 1u64 << (SIGCHLD - 1);
    if reported == 0 || (p.sig_pending | p.sig_shared_pending) & bit != 0 {
        return;
    }
    let mut act = [0u64; 4];
    syscall6(
        SYS_RT_SIGACTION,
        SIGCHLD,
        0,
        act.as_mut_ptr() as usize,
        8,
        0,
        0,
    );
    // A stop raises SIGCHLD unless the disposition says not to; one raised
    // before the program's disposition was back is pending anyway.
    let raised = act[0] != 1 && act[1] & SA_NOCLDSTOP == 0;
    let set = 1u64 << (SIGCHLD - 1);
    let take = |secs: i64| {
        let ts = [secs, 0i64];
        while syscall6(
            SYS_RT_SIGTIMEDWAIT,
            &set as *const u64 as usize,
            0,
            ts.as_ptr() as usize,
            8,
            0,
            0,
        ) == EINTR
        {}
    };
    if raised {
        // The SIGCHLD follows the report (the kernel marks the group
        // stopped, then notifies the parent): wait for it, a second at
        // most, then a moment for a last one (several children's merge
        // into one pending SIGCHLD, or the last came after the first was
        // taken).
        take(1);
        let pause = [0i64, 1_000_000];
        syscall3(SYS_NANOSLEEP, pause.as_ptr() as usize, 0, 0);
    }
    take(0);
}
