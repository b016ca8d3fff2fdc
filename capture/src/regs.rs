//! The registers of a stopped task: as read (NT_PRSTATUS), and as a
//! restore must resume them (the syscall-restart fix-up); the full xsave
//! area comes from `Tracee::xstate`.

use cryo_image::{process_flags, Regs};

pub fn to_regs(r: &libc::user_regs_struct) -> Regs {
    Regs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        orig_rax: r.orig_rax,
        rip: r.rip,
        cs: r.cs,
        eflags: r.eflags,
        rsp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
    }
}

/// Whether a task stopped with these registers is at the end of a system
/// call that failed with EINTR only because the task was stopped, and
/// that waited with no timeout: the calls Linux fails so after a stop
/// (signal(7), "Interruption of system calls and library functions by
/// stop signals": epoll_wait, epoll_pwait(2), semop, semtimedop,
/// sigtimedwait). Any signal could have done it too: the caller checks
/// none is due, and that none was being delivered. Such a call is made
/// again; it has no deadline to miss. One with a timeout keeps EINTR:
/// made again, its relative timeout would start again in full, where an
/// event loop that retries EINTR (libuv, CPython's, redis's) takes the
/// time left, and a restored one finds its timers due. (Socket calls fail
/// so only with a timeout, SO_RCVTIMEO or SO_SNDTIMEO.)
pub fn freeze_eintr(r: &Regs) -> bool {
    if r.rax as i64 != -(libc::EINTR as i64) {
        return false;
    }
    match r.orig_rax as i64 {
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => (r.r10 as i32) < 0,
        libc::SYS_epoll_pwait2 | libc::SYS_semtimedop => r.r10 == 0,
        libc::SYS_rt_sigtimedwait => r.rdx == 0,
        libc::SYS_semop => true,
        _ => false,
    }
}

/// The syscall-restart fix-up (as CRIU does): a process stopped inside a
/// system call resumes by re-executing it, or sees -EINTR where the kernel
/// would have used a restart block, which does not survive a restore, and
/// nothing says which call it stands for (restart_syscall after an earlier
/// stop). nanosleep, clock_nanosleep and timed futex waits interrupted by
/// the freeze itself are executed again (until stop 34 they saw -EINTR:
/// perl's `sleep 6` returned after 2, sem_timedwait failed with EINTR).
/// poll(2) with a timeout is executed again too, with its whole timeout (its
/// arguments are still in the registers; the time already waited is
/// lost, as if the process had not run for that long), because a poll
/// whose signals are all blocked can never see EINTR, and programs that
/// block every signal for a signalfd, like script(1), take it as fatal.
/// A poll an earlier stop interrupted is already restart_syscall (219),
/// which names no call; `restarted_poll` (what /proc showed before the
/// freeze, [`crate::tracee::Tracee::restarted_poll`]) says it is a poll,
/// if the registers are still those: then poll is executed again too.
/// Returns the registers to resume with and the `process_flags` bits.
///
/// `timespec_at(addr)`: whether a valid struct timespec can be read at
/// `addr` in the process (a restarted clock_nanosleep's request, and its
/// `rem` if any, must be one: a restarted poll(NULL, 0, ms) has small
/// integers where they would be).
/// `freeze_eintr`: the freeze made the call fail with EINTR
/// ([`freeze_eintr`], checked by the tracee): it is made again.
pub fn restart_fixup(
    raw: &Regs,
    restarted_poll: Option<&[u64; 8]>,
    freeze_eintr: bool,
    timespec_at: &dyn Fn(u64) -> bool,
) -> (Regs, u32) {
    const ERESTARTSYS: i64 = -512;
    const ERESTARTNOINTR: i64 = -513;
    const ERESTARTNOHAND: i64 = -514;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    let mut r = *raw;
    if (raw.orig_rax as i64) < 0 {
        return (r, 0);
    }
    let was_poll = |p: &[u64; 8]| {
        *p == [
            raw.rdi, raw.rsi, raw.rdx, raw.r10, raw.r8, raw.r9, raw.rsp, raw.rip,
        ]
    };
    let poll = raw.orig_rax == libc::SYS_poll as u64
        || (raw.orig_rax == libc::SYS_restart_syscall as u64
            && restarted_poll.is_some_and(was_poll));
    // Sleeps and timed futex waits the freeze interrupted: executed again
    // with their arguments, still in the registers (an absolute deadline,
    // clock_nanosleep's TIMER_ABSTIME or FUTEX_WAIT_BITSET's, is exact; a
    // relative one waits its whole time again: a late wake-up, as if the
    // process had not run meanwhile, never an early one).
    let sleep = matches!(
        raw.orig_rax as i64,
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep | libc::SYS_futex
    );
    // A clock_nanosleep an earlier stop interrupted is restart_syscall
    // too, its arguments still in the registers: a clock id (0-11) and
    // flags (0 or TIMER_ABSTIME) first, where every other call the kernel
    // restarts this way has a pointer (nanosleep's request, futex's word,
    // poll's array). glibc's sleep, usleep and nanosleep all make this
    // call. (nanosleep(2) and futex themselves cannot be told apart
    // there: -EINTR, as before.)
    let restarted_clock_sleep = raw.orig_rax == libc::SYS_restart_syscall as u64
        && !poll
        && raw.rdi < 12
        && raw.rsi <= libc::TIMER_ABSTIME as u64
        && timespec_at(raw.rdx)
        && (raw.r10 == 0 || timespec_at(raw.r10));
    // A relative sleep given somewhere for the time left (glibc's sleep
    // passes its request there too) had that time written there when the
    // freeze interrupted it: it sleeps that, not its whole time again.
    let from_rest = |r: &mut Regs| {
        let nr = r.rax;
        if nr == libc::SYS_clock_nanosleep as u64
            && r.rsi & libc::TIMER_ABSTIME as u64 == 0
            && r.r10 != 0
        {
            r.rdx = r.r10;
        } else if nr == libc::SYS_nanosleep as u64 && r.rsi != 0 {
            r.rdi = r.rsi;
        }
    };
    match raw.rax as i64 {
        ERESTART_RESTARTBLOCK if restarted_clock_sleep => {
            r.rax = libc::SYS_clock_nanosleep as u64;
            r.rip = raw.rip.wrapping_sub(2);
            from_rest(&mut r);
            (r, process_flags::IN_SYSCALL)
        }
        ERESTART_RESTARTBLOCK if poll => {
            r.rax = libc::SYS_poll as u64;
            r.rip = raw.rip.wrapping_sub(2);
            (r, process_flags::IN_SYSCALL)
        }
        ERESTART_RESTARTBLOCK if sleep => {
            r.rax = raw.orig_rax;
            r.rip = raw.rip.wrapping_sub(2);
            from_rest(&mut r);
            (r, process_flags::IN_SYSCALL)
        }
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = raw.orig_rax;
            r.rip = raw.rip.wrapping_sub(2);
            (r, process_flags::IN_SYSCALL)
        }
        _ if freeze_eintr && self::freeze_eintr(raw) => {
            r.rax = raw.orig_rax;
            r.rip = raw.rip.wrapping_sub(2);
            (r, process_flags::IN_SYSCALL)
        }
        ERESTART_RESTARTBLOCK => {
            r.rax = (-(libc::EINTR as i64)) as u64;
            (
                r,
                process_flags::IN_SYSCALL | process_flags::RESTART_BLOCK_EINTR,
            )
        }
        _ => (r, 0),
    }
}

/// Whether a valid struct timespec (seconds ≥ 0, nanoseconds below a
/// second) can be read at `addr` in the stopped task.
pub fn timespec_at(t: &crate::tracee::Tracee, addr: u64) -> bool {
    let mut b = [0u8; 16];
    let word = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
    addr >= 4096
        && t.read_mem(addr, &mut b).is_ok()
        && word(&b[..8]) >= 0
        && (0..1_000_000_000).contains(&word(&b[8..]))
}

/// The stopped task's registers (as read, and as a restore resumes them),
/// full xsave area, signal mask, rseq registration, robust futex list and
/// glibc's TLS words (stack canary %fs:0x28, pointer guard %fs:0x30), into
/// the process record.
pub fn capture(
    t: &crate::tracee::Tracee,
    b: &mut cryo_image::write::ImageBuilder,
) -> Result<(), crate::tracee::PtraceError> {
    let raw = t.regs()?;
    let raw_regs = to_regs(&raw);
    let (regs, sflags) = restart_fixup(&raw_regs, t.restarted_poll(), t.freeze_eintr(), &|a| {
        timespec_at(t, a)
    });
    let (xsave, xcr0) = t.xstate()?;
    let blocked = t.sigmask()?;
    let rseq = t.rseq()?;
    let (mut canary, mut guard) = (0, 0);
    if raw.fs_base != 0 {
        let mut w16 = [0u8; 16];
        if t.read_mem(raw.fs_base + 0x28, &mut w16).is_ok() {
            canary = u64::from_le_bytes(w16[..8].try_into().unwrap_or([0; 8]));
            guard = u64::from_le_bytes(w16[8..].try_into().unwrap_or([0; 8]));
        }
    }
    let p = &mut b.process;
    p.flags |= sflags
        | if rseq.rseq_abi_size != 0 {
            process_flags::HAS_RSEQ
        } else {
            0
        };
    p.regs = regs;
    p.raw_regs = raw_regs;
    p.sig_blocked = blocked;
    p.rseq_addr = rseq.rseq_abi_pointer;
    p.rseq_size = rseq.rseq_abi_size;
    p.rseq_sig = rseq.signature;
    p.rseq_flags = rseq.flags;
    p.xsave_size = xsave.len() as u32;
    p.xcr0 = xcr0;
    p.tls_canary = canary;
    p.tls_pointer_guard = guard;
    (p.robust_list, p.robust_list_len) = t.robust_list()?;
    b.xsave = xsave;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_the_freeze_failed_with_eintr() {
        let ok = |_| true;
        let r = Regs {
            orig_rax: libc::SYS_epoll_wait as u64,
            rax: (-4i64) as u64,
            rip: 0x1002,
            r10: u64::MAX, // no timeout (-1)
            ..Default::default()
        };
        let (f, fl) = restart_fixup(&r, None, true, &ok);
        assert_eq!(
            (f.rax, f.rip, fl),
            (r.orig_rax, 0x1000, process_flags::IN_SYSCALL)
        );
        // A signal may have done it: as it is.
        assert_eq!(restart_fixup(&r, None, false, &ok), (r, 0));
        // With a timeout (500 ms): EINTR, as it is.
        let t = Regs { r10: 500, ..r };
        assert!(!freeze_eintr(&t));
        assert_eq!(restart_fixup(&t, None, true, &ok), (t, 0));
        // sigwaitinfo (no timeout) and sigtimedwait.
        let w = Regs {
            orig_rax: libc::SYS_rt_sigtimedwait as u64,
            rdx: 0,
            ..r
        };
        assert!(freeze_eintr(&w));
        assert!(!freeze_eintr(&Regs { rdx: 0x5000, ..w }));
        // A socket call (EINTR only with a timeout), connect: as it is.
        let c = Regs {
            orig_rax: libc::SYS_connect as u64,
            ..r
        };
        assert!(!freeze_eintr(&c));
        assert_eq!(restart_fixup(&c, None, true, &ok), (c, 0));
        // Another error, or a result: as it is.
        let e = Regs {
            rax: (-11i64) as u64,
            ..r
        };
        assert_eq!(restart_fixup(&e, None, true, &ok), (e, 0));
    }

    #[test]
    fn restart_fixup_cases() {
        let ok = |a: u64| a >= 0x1000;
        let mut r = Regs {
            orig_rax: 35, // nanosleep
            rax: (-512i64) as u64,
            rip: 0x1002,
            ..Default::default()
        };
        let (f, fl) = restart_fixup(&r, None, false, &ok);
        assert_eq!((f.rax, f.rip, fl), (35, 0x1000, process_flags::IN_SYSCALL));
        // A sleep through a restart block: executed again.
        r.rax = (-516i64) as u64;
        let (f, fl) = restart_fixup(&r, None, false, &ok);
        assert_eq!((f.rax, f.rip, fl), (35, 0x1000, process_flags::IN_SYSCALL));
        // Given somewhere for the time left, it sleeps that instead.
        let mut n = r;
        (n.rdi, n.rsi) = (0x5000, 0x6000);
        assert_eq!(restart_fixup(&n, None, false, &ok).0.rdi, 0x6000);
        let mut c = r;
        c.orig_rax = libc::SYS_clock_nanosleep as u64;
        (c.rdi, c.rsi, c.rdx, c.r10) = (1, 0, 0x5000, 0x6000);
        assert_eq!(restart_fixup(&c, None, false, &ok).0.rdx, 0x6000);
        c.rsi = libc::TIMER_ABSTIME as u64; // a deadline: as it is
        assert_eq!(restart_fixup(&c, None, false, &ok).0.rdx, 0x5000);
        (c.rsi, c.r10) = (0, 0); // nowhere for the time left
        assert_eq!(restart_fixup(&c, None, false, &ok).0.rdx, 0x5000);
        r.orig_rax = 202; // a timed futex wait: the same
        let (f, _) = restart_fixup(&r, None, false, &ok);
        assert_eq!((f.rax, f.rip), (202, 0x1000));
        r.orig_rax = 7; // poll with a timeout: executed again
        let (f, fl) = restart_fixup(&r, None, false, &ok);
        assert_eq!((f.rax, f.rip, fl), (7, 0x1000, process_flags::IN_SYSCALL));
        // A poll restarted by an earlier stop: executed again as poll if
        // the registers are what /proc showed, else -EINTR.
        r.orig_rax = 219;
        r.rdi = 0x5000;
        r.rsp = 0x7ff0;
        let seen = [0x5000, 0, 0, 0, 0, 0, 0x7ff0, 0x1002];
        let (f, fl) = restart_fixup(&r, Some(&seen), false, &ok);
        assert_eq!((f.rax, f.rip, fl), (7, 0x1000, process_flags::IN_SYSCALL));
        let other = [0x6000, 0, 0, 0, 0, 0, 0x7ff0, 0x1002];
        let (f, fl) = restart_fixup(&r, Some(&other), false, &ok);
        assert_eq!(f.rax as i64, -4);
        assert!(fl & process_flags::RESTART_BLOCK_EINTR != 0);
        let (f, _) = restart_fixup(&r, None, false, &ok);
        assert_eq!(f.rax as i64, -4);
        // A clock_nanosleep restarted by an earlier stop: a clock id and
        // flags first (CLOCK_MONOTONIC, TIMER_ABSTIME): executed again.
        let mut c = r;
        (c.rdi, c.rsi, c.rdx) = (1, 1, 0x7000);
        let (f, fl) = restart_fixup(&c, None, false, &ok);
        assert_eq!(
            (f.rax as i64, f.rip, fl),
            (libc::SYS_clock_nanosleep, 0x1000, process_flags::IN_SYSCALL)
        );
        c.rsi = 0x7100; // a pointer second: not one
        assert_eq!(restart_fixup(&c, None, false, &ok).0.rax as i64, -4);
        // poll(NULL, 0, 20000) restarted: no timespec where one would be.
        (c.rdi, c.rsi, c.rdx, c.r10) = (0, 0, 20000, 0);
        let no = |_: u64| false;
        assert_eq!(restart_fixup(&c, None, false, &no).0.rax as i64, -4);
        r.rax = 0; // completed syscall (e.g. tgkill before a group-stop)
        assert_eq!(restart_fixup(&r, None, false, &ok), (r, 0));
        r.orig_rax = u64::MAX; // not in a syscall
        r.rax = (-512i64) as u64;
        assert_eq!(restart_fixup(&r, None, false, &ok).1, 0);
    }
}
