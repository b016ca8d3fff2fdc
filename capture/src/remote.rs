//! System calls executed inside the stopped tracee, for state that /proc does
//! not show (signal dispositions, sigaltstack, POSIX timer settings,
//! itimers).
//!
//! How: save the registers; point rip at a `syscall` instruction that
//! already exists in the tracee's vDSO (no code is written into the target,
//! so no text page is copied-on-write); load rax/rdi/rsi/rdx/r10 with the
//! call; set orig_rax = -1 so the kernel does not apply syscall-restart logic
//! to the stop we resume from; run it to its syscall-exit stop
//! (PTRACE_SYSCALL: no SIGTRAP is raised, unlike a single-step); read rax;
//! put every register back. Output buffers live on the tracee's stack below the 128-byte red
//! zone; the bytes there are saved and written back afterwards. After an
//! injection the tracee's registers and memory are bit-identical to before
//! (the capture tests compare every stored page, sp and pc with the live
//! process after capture).

use crate::tracee::{PtraceError, Tracee};
use libc::user_regs_struct;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error("pid {0}: no `syscall` instruction found in its vDSO (needed to run system calls inside it)")]
    NoGadget(i32),
    #[error("injected {name} in pid {pid} failed: errno {errno}")]
    Failed {
        name: &'static str,
        pid: i32,
        errno: i64,
    },
}

/// Scratch space below the red zone used for output buffers.
const SCRATCH: u64 = 4096;
const RED_ZONE: u64 = 128;

/// Injects system calls into one stopped tracee.
pub struct Remote<'a> {
    t: &'a mut Tracee,
    saved: user_regs_struct,
    gadget: u64,
    scratch: u64,
    scratch_saved: Vec<u8>,
    saved_mask: u64,
}

impl<'a> Remote<'a> {
    /// `vdso` is the tracee's vDSO start address and bytes.
    pub fn new(t: &'a mut Tracee, vdso_start: u64, vdso: &[u8]) -> Result<Self, InjectError> {
        let off = vdso
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or(InjectError::NoGadget(t.pid()))?;
        let saved = t.regs()?;
        let scratch = (saved.rsp - RED_ZONE - SCRATCH) & !0xf;
        let mut scratch_saved = vec![0u8; SCRATCH as usize];
        t.read_mem(scratch, &mut scratch_saved)?;
        // Block every signal while we inject, so that none is dequeued
        // (and so swallowed or reordered) by a signal-delivery-stop; they
        // stay pending, exactly as they were. SIGKILL/SIGSTOP cannot be
        // blocked; the tracee intercepts those.
        let saved_mask = t.sigmask()?;
        let all = !((1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1)));
        t.set_sigmask(all)?;
        Ok(Remote {
            t,
            saved,
            gadget: vdso_start + off as u64,
            scratch,
            scratch_saved,
            saved_mask,
        })
    }

    /// The tracee's PID.
    pub fn pid(&self) -> i32 {
        self.t.pid()
    }

    /// Address of the scratch buffer in the tracee.
    pub fn scratch(&self) -> u64 {
        self.scratch
    }

    /// Run one system call; returns rax (negative errno on failure).
    pub fn syscall(&mut self, nr: i64, args: [u64; 5]) -> Result<i64, InjectError> {
        let [a, b, c, d, e] = args;
        self.syscall6(nr, [a, b, c, d, e, self.saved.r9])
    }

    /// [`Remote::syscall`] with a sixth argument (r9: mmap's offset).
    pub fn syscall6(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        self.load(nr, args)?;
        self.t.syscall_step()?;
        Ok(self.t.regs()?.rax as i64)
    }

    /// Load the registers for system call `nr` and resume to it (the first
    /// half of one call of [`syscall_all`]).
    fn begin(&mut self, nr: i64, args: [u64; 6]) -> Result<(), InjectError> {
        self.load(nr, args)?;
        self.t.syscall_resume()?;
        Ok(())
    }

    /// Load the registers for system call `nr` at the `syscall` gadget.
    fn load(&mut self, nr: i64, args: [u64; 6]) -> Result<(), InjectError> {
        let mut r = self.saved;
        r.r9 = args[5];
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.rip = self.gadget;
        // Keep rsp where it was: the scratch area is below the red zone.
        self.t.set_regs(&r)?;
        Ok(())
    }

    /// Write `bytes` at the scratch buffer.
    pub fn write_scratch(&mut self, bytes: &[u8]) -> Result<(), InjectError> {
        self.t.write_mem(self.scratch, bytes)?;
        Ok(())
    }

    fn call(&mut self, name: &'static str, nr: i64, args: [u64; 5]) -> Result<i64, InjectError> {
        let r = self.syscall(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(InjectError::Failed {
                name,
                pid: self.t.pid(),
                errno: -r,
            });
        }
        Ok(r)
    }

    /// The first `len` bytes of the scratch buffer.
    pub fn read_scratch(&self, len: usize) -> Result<Vec<u8>, InjectError> {
        let mut b = vec![0u8; len];
        self.t.read_mem(self.scratch, &mut b)?;
        Ok(b)
    }

    /// Whether a query's result `r` is an answer (false: the kernel does
    /// not know the call or option, EINVAL/ENOSYS, or refuses it,
    /// EPERM/EACCES); any other error is an error.
    pub fn answered(&self, r: i64) -> Result<bool, InjectError> {
        if !(-4095..0).contains(&r) {
            return Ok(true);
        }
        match -r as i32 {
            libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EACCES => Ok(false),
            errno => Err(InjectError::Failed {
                name: "query",
                pid: self.t.pid(),
                errno: errno as i64,
            }),
        }
    }

    /// A system call whose result is an integer (or an int written to the
    /// scratch buffer when `out` is set: its address is passed as the
    /// argument named by `out`'s index). Ok(None) if the kernel says it
    /// does not know the call or option (EINVAL, ENOSYS) or refuses it
    /// (EPERM); other errors are errors.
    pub fn query(
        &mut self,
        nr: i64,
        mut args: [u64; 5],
        out: Option<usize>,
    ) -> Result<Option<i64>, InjectError> {
        if let Some(i) = out {
            args[i] = self.scratch;
            self.t.write_mem(self.scratch, &[0u8; 8])?;
        }
        let r = self.syscall(nr, args)?;
        if !self.answered(r)? {
            return Ok(None);
        }
        if out.is_some() {
            let b = self.read_scratch(4)?;
            return Ok(Some(
                i32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4])) as i64,
            ));
        }
        Ok(Some(r))
    }

    /// A system call that writes one 64-bit word (a pointer) to the
    /// address passed as argument `out`: that word. None as for
    /// [`Remote::query`].
    pub fn query_word(
        &mut self,
        nr: i64,
        mut args: [u64; 5],
        out: usize,
    ) -> Result<Option<u64>, InjectError> {
        args[out] = self.scratch;
        self.t.write_mem(self.scratch, &[0u8; 8])?;
        let r = self.syscall(nr, args)?;
        if !self.answered(r)? {
            return Ok(None);
        }
        let b = self.read_scratch(8)?;
        Ok(Some(u64::from_le_bytes(
            b[..8].try_into().unwrap_or([0; 8]),
        )))
    }

    /// Whether a stop report of child `pid` waits for the process:
    /// waitid(P_PID, pid, WSTOPPED | WNOHANG | WNOWAIT | __WALL), which
    /// takes nothing. None if the kernel refuses (not its child).
    pub fn stop_report_waiting(&mut self, pid: i32) -> Result<Option<bool>, InjectError> {
        const P_PID: u64 = 1;
        let flags = (libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL) as u64;
        // siginfo_t: si_pid at byte 16 (0 when nothing was reported).
        self.t.write_mem(self.scratch, &[0u8; 128])?;
        let r = self.syscall(
            libc::SYS_waitid,
            [P_PID, pid as u64, self.scratch, flags, 0],
        )?;
        if (-4095..0).contains(&r) {
            return Ok(None);
        }
        let b = self.read_scratch(24)?;
        let si_pid = i32::from_le_bytes(b[16..20].try_into().unwrap_or([0; 4]));
        Ok(Some(si_pid == pid))
    }

    /// rt_sigaction(sig, NULL, &old): (handler, flags, restorer, mask).
    pub fn sigaction(&mut self, sig: i32) -> Result<(u64, u64, u64, u64), InjectError> {
        let s = self.scratch;
        self.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [sig as u64, 0, s, 8, 0],
        )?;
        let b = self.read_scratch(32)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok((w(0), w(1), w(2), w(3)))
    }

    /// sigaltstack(NULL, &old): (sp, flags, size).
    pub fn sigaltstack(&mut self) -> Result<(u64, u32, u64), InjectError> {
        let s = self.scratch;
        self.call("sigaltstack", libc::SYS_sigaltstack, [0, s, 0, 0, 0])?;
        let b = self.read_scratch(24)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok((w(0), w(1) as u32, w(2)))
    }

    /// timer_gettime(id): (interval sec, nsec, value sec, nsec).
    pub fn timer_gettime(&mut self, id: i32) -> Result<[i64; 4], InjectError> {
        let s = self.scratch;
        self.call(
            "timer_gettime",
            libc::SYS_timer_gettime,
            [id as u64, s, 0, 0, 0],
        )?;
        let b = self.read_scratch(32)?;
        let w = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok([w(0), w(1), w(2), w(3)])
    }

    /// timerfd_gettime(fd), for what it does: a periodic timerfd's
    /// expirations since the first not yet read are counted in its
    /// `ticks` only by a read or this call (the kernel forwards the timer
    /// then); fdinfo shows the count as it stands.
    pub fn timerfd_gettime(&mut self, fd: i32) -> Result<(), InjectError> {
        let s = self.scratch;
        self.call(
            "timerfd_gettime",
            libc::SYS_timerfd_gettime,
            [fd as u64, s, 0, 0, 0],
        )?;
        Ok(())
    }

    /// getitimer(which): (interval sec, usec, value sec, usec).
    pub fn getitimer(&mut self, which: i32) -> Result<[i64; 4], InjectError> {
        let s = self.scratch;
        self.call("getitimer", libc::SYS_getitimer, [which as u64, s, 0, 0, 0])?;
        let b = self.read_scratch(32)?;
        let w = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok([w(0), w(1), w(2), w(3)])
    }

    /// recvmsg(fd, MSG_PEEK) with no bytes and room for SCM_MAX_FD fds:
    /// the fds of the message at the socket's peek offset, which the
    /// kernel installs in the tracee. None if it has none or they did not
    /// all fit (MSG_CTRUNC: those that did are closed again).
    pub fn peek_fds(&mut self, fd: i32) -> Result<Option<Vec<i32>>, InjectError> {
        const CTRL: u64 = 64;
        const CTRL_LEN: u64 = 2048;
        let s = self.scratch;
        // struct msghdr: name, namelen, iov, iovlen, control, controllen,
        // flags (56 bytes); no iovec: nothing is copied.
        let mut m = [0u8; 56];
        m[32..40].copy_from_slice(&(s + CTRL).to_le_bytes());
        m[40..48].copy_from_slice(&CTRL_LEN.to_le_bytes());
        self.t.write_mem(s, &m)?;
        self.t.write_mem(s + CTRL, &[0u8; CTRL_LEN as usize])?;
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        let r = self.syscall(libc::SYS_recvmsg, [fd as u64, s, flags as u64, 0, 0])?;
        if r < 0 {
            return Ok(None);
        }
        let b = self.read_scratch((CTRL + CTRL_LEN) as usize)?;
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let int = |i: usize| i32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let cut = int(48) & libc::MSG_CTRUNC != 0;
        let used = (word(40) as usize).min(CTRL_LEN as usize);
        let mut fds = Vec::new();
        let mut at = CTRL as usize;
        let end = CTRL as usize + used;
        // struct cmsghdr: len (8), level (4), type (4), data; each aligned to 8.
        while at + 16 <= end {
            let len = word(at) as usize;
            if len < 16 || at + len > end {
                break;
            }
            if int(at + 8) == libc::SOL_SOCKET && int(at + 12) == libc::SCM_RIGHTS {
                for k in 0..(len - 16) / 4 {
                    fds.push(int(at + 16 + 4 * k));
                }
            }
            at += len.div_ceil(8) * 8;
        }
        if cut || fds.is_empty() {
            for &n in &fds {
                let _ = self.close(n);
            }
            return Ok(None);
        }
        Ok(Some(fds))
    }

    /// fcntl(fd, F_DUPFD_CLOEXEC, min): a copy at the lowest free number
    /// from `min` on.
    pub fn dup_above(&mut self, fd: i32, min: i32) -> Result<i32, InjectError> {
        let r = self.call(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            [fd as u64, libc::F_DUPFD_CLOEXEC as u64, min as u64, 0, 0],
        )?;
        Ok(r as i32)
    }

    /// close(fd).
    pub fn close(&mut self, fd: i32) -> Result<(), InjectError> {
        self.call("close", libc::SYS_close, [fd as u64, 0, 0, 0, 0])?;
        Ok(())
    }

    /// Put the registers and the scratch bytes back exactly.
    pub fn finish(self) -> Result<(), InjectError> {
        let m = self.t.set_sigmask(self.saved_mask);
        self.t.write_mem(self.scratch, &self.scratch_saved)?;
        self.t.set_regs(&self.saved)?;
        m?;
        Ok(())
    }
}

/// One system call in each of `rems` at once (each a stopped thread of
/// one process): `call` gives each its number and six arguments, or
/// None to leave it out. Every thread is resumed to its call first,
/// then each entry stop is taken and the thread sent on to its exit,
/// then each exit: the threads' stops overlap, where one call after the
/// other waits for each round trip in turn (a review measured four more
/// calls per thread at +0.15 ms a thread, one after the other: 300
/// threads frozen 121 -> 166 ms). Returns each rax (None where left out).
/// On an error every thread it resumed is brought back to a stop first,
/// as far as it can be, so that [`Remote::finish`] puts each back as it
/// was; the first error is returned.
pub fn syscall_all(
    rems: &mut [Remote],
    call: impl Fn(usize, &Remote) -> Option<(i64, [u64; 6])>,
) -> Result<Vec<Option<i64>>, InjectError> {
    let mut first: Option<InjectError> = None;
    let keep = |e: InjectError, first: &mut Option<InjectError>| {
        if first.is_none() {
            *first = Some(e);
        }
    };
    // 0: left out; 1: resumed to its call; 2: past its entry.
    let mut stage = vec![0u8; rems.len()];
    for (i, r) in rems.iter_mut().enumerate() {
        if first.is_some() {
            break;
        }
        if let Some((nr, args)) = call(i, r) {
            match r.begin(nr, args) {
                Ok(()) => stage[i] = 1,
                Err(e) => keep(e, &mut first),
            }
        }
    }
    for (r, st) in rems.iter_mut().zip(stage.iter_mut()) {
        if *st == 1 {
            match r.t.syscall_stop(true) {
                Ok(()) => *st = 2,
                Err(e) => keep(e.into(), &mut first),
            }
        }
    }
    let mut out = Vec::with_capacity(rems.len());
    for (r, st) in rems.iter_mut().zip(&stage) {
        if *st == 2 {
            match r.t.syscall_stop(false).and_then(|()| r.t.regs()) {
                Ok(regs) => out.push(Some(regs.rax as i64)),
                Err(e) => {
                    keep(e.into(), &mut first);
                    out.push(None);
                }
            }
        } else {
            out.push(None);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Whether the scratch buffers of `rems` (each below its own thread's
/// stack pointer) overlap: two threads whose stacks lie within a
/// buffer's length of each other would then read each other's answers,
/// so such threads are asked one after the other.
pub fn scratch_overlaps(rems: &[Remote]) -> bool {
    let mut at: Vec<u64> = rems.iter().map(|r| r.scratch).collect();
    at.sort_unstable();
    at.windows(2).any(|w| w[1] - w[0] < SCRATCH)
}
