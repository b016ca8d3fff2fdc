//! A seized tracee as an RAII value: dropping it detaches, so every exit path
//! of a capture leaves the target as it was.
//!
//! Kernel behaviour relied on (verified by the tests in `capture/tests/`):
//! - `PTRACE_SEIZE` of a process already in group-stop (state `T`, e.g. after
//!   `raise(SIGSTOP)`) makes it report a `PTRACE_EVENT_STOP` at once; it stays
//!   stopped. `PTRACE_INTERRUPT` of a running process gives the same event.
//! - `PTRACE_DETACH` from that stop resumes a process that was running, and
//!   puts one whose group is stopped back into group-stop (the kernel's
//!   `__ptrace_unlink` re-arms `JOBCTL_STOP_PENDING` when the signal group
//!   has `SIGNAL_STOP_STOPPED`). So "as it was" needs no extra signal.
//! - A signal that arrives while we wait for the stop shows up as a
//!   signal-delivery-stop first. We suppress it there and queue it again with
//!   its original siginfo (`rt_tgsigqueueinfo`) right after detaching, so the
//!   target never loses a signal because it was captured.

use crate::sys::ptrace;
use libc::user_regs_struct;
use std::io;

const PTRACE_EVENT_STOP: i32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    #[error("pid {0} exited during capture")]
    Exited(i32),
    #[error("pid {} {}", .0, not_traceable_why(*.0))]
    NotTraceable(i32),
    #[error("pid {0}'s main thread has exited while its other threads run (pthread_exit from main); cryo needs the main thread to capture a process")]
    LeaderExited(i32),
    #[error("pid {0} is frozen by its cgroup ({1}): a frozen process cannot stop for cryo, which would wait for it as long as it stays frozen, holding it; thaw it first")]
    Frozen(i32, String),
    #[error("{op} on pid {pid}: {source}")]
    Sys {
        op: &'static str,
        pid: i32,
        source: io::Error,
    },
}

/// Whether the cgroup freezer holds `pid` (v2 `cgroup.freeze` 1, v1
/// `freezer.state` FROZEN or FREEZING): where, if so.
pub(crate) fn frozen_by_cgroup(pid: i32) -> Option<String> {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // (The mounts read once: every process of a tree is asked.)
    static MOUNTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let mounts =
        MOUNTS.get_or_init(|| std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    for g in cryo_image::mountinfo::cgroups(mounts, &groups) {
        let (file, frozen): (&str, fn(&str) -> bool) = if g.has("") {
            ("cgroup.freeze", |v| v == "1")
        } else if g.has("freezer") {
            ("freezer.state", |v| v == "FROZEN" || v == "FREEZING")
        } else {
            continue;
        };
        let value = std::fs::read_to_string(format!("{}/{file}", g.dir)).unwrap_or_default();
        if frozen(value.trim()) {
            return Some(format!("{}/{file} is {}", g.dir, value.trim()));
        }
    }
    None
}

/// Why ptrace would not take `pid`, as /proc tells (a survey of stop 36:
/// a kernel thread, a zombie and a process under strace were all "a
/// zombie or being traced by another process").
fn not_traceable_why(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 9, after the command's closing parenthesis: the task's flags.
    let flags: u64 = stat
        .rsplit_once(") ")
        .and_then(|(_, r)| r.split_whitespace().nth(6)?.parse().ok())
        .unwrap_or(0);
    const PF_KTHREAD: u64 = 0x0020_0000;
    if flags & PF_KTHREAD != 0 {
        return "is a kernel thread: there is no program to capture".into();
    }
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return "is a zombie (it has exited, its parent has not waited for it): there is nothing to capture".into();
    }
    match field("TracerPid:").and_then(|t| t.parse::<i32>().ok()) {
        Some(t) if t != 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{t}/comm")).unwrap_or_default();
            // (Another capture of it: said as such, not as a debugger's
            // link, a sweep of stop 49.)
            if cryo_command(t).is_some() {
                return format!(
                    "is being captured (or restored) by another cryo, process {t}; try again once it is done"
                );
            }
            format!(
                "is being traced by process {t} ({}); capture it once that tracer has detached (a ptrace link cannot be restored: if the tracer is in the tree, as under `strace CMD`, that tree cannot be captured)",
                comm.trim()
            )
        }
        _ => {
            "cannot be traced (ptrace refused it: another user's process, the Yama ptrace scope, or a sandbox cryo runs in: a Landlock domain the process is not in)"
                .into()
        }
    }
}

/// The subcommand process `pid` runs if it is cryo: this very executable,
/// or one named cryo running one of cryo's subcommands.
pub(crate) fn cryo_command(pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(id);
    let ours = std::env::current_exe()
        .and_then(std::fs::metadata)
        .ok()
        .map(id);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let sub = cmdline
        .split(|&b| b == 0)
        .nth(1)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let named = comm.trim() == "cryo"
        && [
            "restore", "capture", "run", "pack", "compare", "inspect", "check",
        ]
        .contains(&sub.as_str());
    (exe.is_some() && exe == ours || named).then_some(sub)
}

fn sys_err(op: &'static str, pid: i32, source: io::Error) -> PtraceError {
    if source.raw_os_error() == Some(libc::ESRCH)
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return PtraceError::Exited(pid);
    }
    PtraceError::Sys { op, pid, source }
}

/// Process state letter from /proc/PID/stat (None if gone).
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// After PTRACE_DETACH from a group-stopped task the kernel wakes it so it
/// can re-enter the stop; for a moment it is 'R'. Wait (bounded) until it is
/// back in 'T', so that when cryo returns the target is observably stopped.
///
/// A process continued meanwhile (SIGCONT while cryo held it) never
/// comes back to 'T': a thread seen sleeping ('S', 'D') was continued,
/// and once one thread of a process has waited its whole time, the
/// others of that process do not wait again. (A review, stop 46: a
/// SIGSTOP then SIGCONT sent while cryo attached a 160-thread program
/// kept it held 2 s per thread, 54 s and more.)
fn settle_stopped(tgid: i32, tid: i32) {
    static CONTINUED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    let continued = || CONTINUED.lock().is_ok_and(|c| c.contains(&tgid));
    if continued() {
        return;
    }
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(2) {
        match task_state(tgid, tid) {
            Some('T') | Some('Z') | Some('X') | None => return,
            Some('S') | Some('D') => break,
            _ => std::thread::sleep(std::time::Duration::from_micros(200)),
        }
    }
    if let Ok(mut c) = CONTINUED.lock() {
        c.push(tgid);
    }
}

/// State letter of thread `tid` of `tgid` (None if gone).
pub fn task_state(tgid: i32, tid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// The thread ids in /proc/PID/task, in order.
pub fn task_ids(pid: i32) -> Result<Vec<i32>, PtraceError> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| PtraceError::NoSuchProcess(pid))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Number of threads in /proc/PID/task.
pub fn thread_count(pid: i32) -> Result<usize, PtraceError> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .map_err(|_| PtraceError::NoSuchProcess(pid))
}

/// A process we hold in a ptrace stop.
#[derive(Debug)]
pub struct Tracee {
    /// The process.
    tgid: i32,
    /// The task (thread) traced: every ptrace request names it.
    pid: i32,
    was_stopped: bool,
    /// The signal of that group-stop, as the kernel reported it.
    stop_signal: i32,
    /// Signals intercepted while stopping it, queued again after detach.
    intercepted: Vec<libc::siginfo_t>,
    attached: bool,
    /// Read before the freeze: it was blocked in restart_syscall for a
    /// poll(2) an earlier stop interrupted ([`restarted_poll`]).
    restarted_poll: Option<[u64; 8]>,
    /// Seized with PTRACE_O_SUSPEND_SECCOMP: its seccomp filters do not
    /// apply to the system calls injected into it.
    seccomp_suspended: bool,
    /// A signal was being delivered when seized (its handler's frame is
    /// set up): the registers are the handler's.
    delivered: bool,
    /// The freeze itself made a system call of it fail with EINTR
    /// ([`crate::regs::freeze_eintr`]): it is made again when let go, and
    /// in the image.
    freeze_eintr: bool,
}

/// Whether task `tid` of `tgid` runs under seccomp (mode 1 or 2), from
/// /proc/TGID/task/TID/status.
fn under_seccomp(tgid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() != "0"))
        })
        .unwrap_or(false)
}

/// Whether thread `tid` blocks, right now, in restart_syscall for a
/// poll(2) that an earlier stop interrupted (a SIGSTOP, a debugger, an
/// earlier capture or dry run): /proc/.../syscall says 219 and the
/// kernel's do_restart_poll is on its stack (or, without access to the
/// stack, its wait channel is poll's). Returns that line's six
/// arguments, stack pointer and pc: once frozen, the registers must still
/// be exactly these for the poll to be executed again.
fn restarted_poll(tgid: i32, tid: i32) -> Option<[u64; 8]> {
    let task = format!("/proc/{tgid}/task/{tid}");
    let line = std::fs::read_to_string(format!("{task}/syscall")).ok()?;
    let mut w = line.split_whitespace();
    if w.next()? != "219" {
        return None;
    }
    let vals: Vec<u64> = w
        .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    let stack = std::fs::read_to_string(format!("{task}/stack")).unwrap_or_default();
    let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
    let poll = if stack.is_empty() {
        wchan.starts_with("poll_schedule_timeout") || wchan == "do_sys_poll"
    } else {
        stack.contains("do_restart_poll")
    };
    if !poll {
        return None;
    }
    vals.try_into().ok()
}

/// No signal the task would take now is pending (for it or its process,
/// and not blocked), from /proc/TGID/task/TID/status: a call that failed
/// with EINTR was then interrupted by the freeze, not by a signal.
fn no_signal_due(tgid: i32, tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    match (field("SigPnd:"), field("ShdPnd:"), field("SigBlk:")) {
        (Some(p), Some(s), Some(b)) => (p | s) & !b == 0,
        _ => false,
    }
}

impl Tracee {
    /// Seize `pid` (its main thread) and stop it. Other threads, if any,
    /// go on running: the caller refuses such a process after looking at
    /// everything else (so that one refusal lists every obstacle).
    pub fn seize(pid: i32) -> Result<Tracee, PtraceError> {
        if pid <= 0 {
            return Err(PtraceError::NoSuchProcess(pid));
        }
        let state = proc_state(pid).ok_or(PtraceError::NoSuchProcess(pid))?;
        if state == 'Z' || state == 'X' {
            if thread_count(pid).unwrap_or(1) > 1 {
                return Err(PtraceError::LeaderExited(pid));
            }
            return Err(PtraceError::NotTraceable(pid));
        }
        // (A capture of a process its cgroup froze waited in waitpid
        // for as long as it stayed frozen, the process seized, deaf to
        // SIGINT: a sweep of stop 51, 10 minutes.)
        if let Some(why) = frozen_by_cgroup(pid) {
            return Err(PtraceError::Frozen(pid, why));
        }
        Tracee::attach(pid, pid, state == 'T')
    }

    /// Seize thread `tid` of process `tgid` and stop it. Err(Exited) if
    /// it is gone (exited between the listing and the seize).
    pub fn seize_thread(tgid: i32, tid: i32) -> Result<Tracee, PtraceError> {
        let state = task_state(tgid, tid).ok_or(PtraceError::Exited(tid))?;
        if state == 'Z' || state == 'X' {
            return Err(PtraceError::Exited(tid));
        }
        Tracee::attach(tgid, tid, state == 'T')
    }

    fn attach(tgid: i32, pid: i32, was_stopped: bool) -> Result<Tracee, PtraceError> {
        let restarted_poll = restarted_poll(tgid, pid);
        // A task under seccomp is seized with its filters suspended
        // (CAP_SYS_ADMIN), so that system calls can be injected into it;
        // without the privilege it is seized as any other and refused
        // later (`threads::under_seccomp`).
        const PTRACE_O_SUSPEND_SECCOMP: libc::c_int = 1 << 21;
        let mut seccomp_suspended = under_seccomp(tgid, pid);
        let mut seized = if seccomp_suspended {
            ptrace::seize(pid, libc::PTRACE_O_TRACESYSGOOD | PTRACE_O_SUSPEND_SECCOMP)
        } else {
            ptrace::seize(pid, libc::PTRACE_O_TRACESYSGOOD)
        };
        if seccomp_suspended
            && seized
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EPERM))
        {
            seccomp_suspended = false;
            seized = ptrace::seize(pid, libc::PTRACE_O_TRACESYSGOOD);
        }
        if let Err(e) = seized {
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) if pid != tgid => PtraceError::Exited(pid),
                Some(libc::ESRCH) => PtraceError::NoSuchProcess(pid),
                Some(libc::EPERM) if proc_state(pid).is_some() => PtraceError::NotTraceable(pid),
                _ => PtraceError::Sys {
                    op: "PTRACE_SEIZE",
                    pid,
                    source: e,
                },
            });
        }
        let mut t = Tracee {
            tgid,
            pid,
            was_stopped,
            stop_signal: libc::SIGSTOP,
            intercepted: Vec::new(),
            attached: true,
            restarted_poll,
            seccomp_suspended,
            delivered: false,
            freeze_eintr: false,
        };
        ptrace::request(libc::PTRACE_INTERRUPT as libc::c_uint, pid, 0)
            .map_err(|e| sys_err("PTRACE_INTERRUPT", pid, e))?;
        let status = t.wait_event_stop()?;
        // (Not in a process that was stopped already: its group-stop, not
        // the freeze, interrupted the call, and SIGCONT gives it EINTR.)
        t.freeze_eintr = !was_stopped
            && !t.delivered
            && t.regs().is_ok_and(|r| {
                crate::regs::freeze_eintr(&crate::regs::to_regs(&r))
                    && t.syscall_before(r.rip)
                    && no_signal_due(tgid, pid)
            });
        // A task seized in group-stop reports that stop's signal (the
        // kernel's jobctl stop signal); one that was running reports
        // SIGTRAP for our interrupt.
        let sig = libc::WSTOPSIG(status);
        if was_stopped
            && [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
        {
            t.stop_signal = sig;
        }
        Ok(t)
    }

    /// The thread group (process) id.
    pub fn tgid(&self) -> i32 {
        self.tgid
    }

    /// The traced task's id (the process id for its main thread).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What /proc showed of a poll(2) being restarted when seized (see
    /// [`restarted_poll`]).
    pub fn restarted_poll(&self) -> Option<&[u64; 8]> {
        self.restarted_poll.as_ref()
    }

    /// The process was in group-stop when seized.
    /// Whether its seccomp filters are suspended while it is traced
    /// (false for a task not under seccomp at the seize).
    pub fn seccomp_suspended(&self) -> bool {
        self.seccomp_suspended
    }

    pub fn was_stopped(&self) -> bool {
        self.was_stopped
    }

    /// The signal of that group-stop (SIGSTOP when not known).
    pub fn stop_signal(&self) -> i32 {
        self.stop_signal
    }

    /// The freeze made its system call fail with EINTR, which it would
    /// not have otherwise ([`crate::regs::freeze_eintr`]), and no signal
    /// has come since that it would take now: one that came while the
    /// capture held it (a SIGTERM for a daemon that answers EINTR by
    /// checking a flag its handler set) must find the call failed, as it
    /// would have without the capture (a review of stop 49).
    pub fn freeze_eintr(&self) -> bool {
        self.freeze_eintr && self.intercepted.is_empty() && no_signal_due(self.tgid, self.pid)
    }

    /// Whether the two bytes before `rip` are a `syscall` instruction.
    fn syscall_before(&self, rip: u64) -> bool {
        let mut b = [0u8; 2];
        rip >= 2 && self.read_mem(rip - 2, &mut b).is_ok() && b == [0x0f, 0x05]
    }

    fn waitpid(&self) -> Result<i32, PtraceError> {
        let (_, status) =
            ptrace::waitpid(self.pid, libc::__WALL).map_err(|source| PtraceError::Sys {
                op: "waitpid",
                pid: self.pid,
                source,
            })?;
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Err(PtraceError::Exited(self.pid));
        }
        Ok(status)
    }

    /// Wait for the PTRACE_EVENT_STOP, intercepting signal-delivery-stops;
    /// its wait status.
    fn wait_event_stop(&mut self) -> Result<i32, PtraceError> {
        loop {
            let status = self.waitpid()?;
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            if status >> 16 == PTRACE_EVENT_STOP {
                return Ok(status);
            }
            // A signal that was already being delivered when we seized:
            // let it be delivered (its handler frame is set up, then the
            // pending interrupt stops the task). Nothing is swallowed and
            // nothing needs re-sending later.
            let sig = if status >> 16 == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            self.delivered |= sig != 0;
            ptrace::request(libc::PTRACE_CONT, self.pid, sig)
                .map_err(|e| sys_err("PTRACE_CONT", self.pid, e))?;
        }
    }

    /// A signal-delivery-stop: keep the signal for later, resume without it.
    fn intercept_and_resume(&mut self, status: i32, how: libc::c_uint) -> Result<(), PtraceError> {
        let sig = libc::WSTOPSIG(status);
        if status >> 16 == 0 && sig != libc::SIGTRAP {
            if let Ok(si) = ptrace::siginfo(self.pid) {
                self.intercepted.push(si);
            }
        }
        ptrace::request(how, self.pid, 0).map_err(|e| sys_err("PTRACE_CONT", self.pid, e))
    }

    /// General registers (NT_PRSTATUS: includes fs_base and gs_base).
    pub fn regs(&self) -> Result<user_regs_struct, PtraceError> {
        ptrace::regs(self.pid).map_err(|e| sys_err("PTRACE_GETREGSET(NT_PRSTATUS)", self.pid, e))
    }

    pub fn set_regs(&self, regs: &user_regs_struct) -> Result<(), PtraceError> {
        ptrace::set_regs(self.pid, regs)
            .map_err(|e| sys_err("PTRACE_SETREGSET(NT_PRSTATUS)", self.pid, e))
    }

    /// The full XSAVE area as the kernel exports it (NT_X86_XSTATE), sized
    /// from CPUID leaf 0xD for the enabled features, and XCR0 (which the
    /// kernel stores in the software-reserved bytes 464..472).
    pub fn xstate(&self) -> Result<(Vec<u8>, u64), PtraceError> {
        let mut buf = vec![0u8; xsave_size()];
        let n = ptrace::xstate(self.pid, &mut buf)
            .map_err(|e| sys_err("PTRACE_GETREGSET(NT_X86_XSTATE)", self.pid, e))?;
        buf.truncate(n);
        let xcr0 = buf
            .get(464..472)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        Ok((buf, xcr0))
    }

    /// Blocked signal mask.
    pub fn sigmask(&self) -> Result<u64, PtraceError> {
        ptrace::sigmask(self.pid).map_err(|e| sys_err("PTRACE_GETSIGMASK", self.pid, e))
    }

    /// The robust futex list head and length (get_robust_list).
    pub fn robust_list(&self) -> Result<(u64, u64), PtraceError> {
        ptrace::robust_list(self.pid).map_err(|e| sys_err("get_robust_list", self.pid, e))
    }

    /// Replace the blocked signal mask (PTRACE_SETSIGMASK).
    pub fn set_sigmask(&self, mask: u64) -> Result<(), PtraceError> {
        ptrace::set_sigmask(self.pid, mask).map_err(|e| sys_err("PTRACE_SETSIGMASK", self.pid, e))
    }

    /// rseq registration (size 0 when none).
    pub fn rseq(&self) -> Result<libc::ptrace_rseq_configuration, PtraceError> {
        ptrace::rseq(self.pid).map_err(|e| sys_err("PTRACE_GET_RSEQ_CONFIGURATION", self.pid, e))
    }

    /// Execute one instruction (used by syscall injection); intercepts
    /// signals that arrive meanwhile and retries until the step is done.
    /// Run the tracee through exactly one system call: resume to its
    /// syscall-entry stop, then to its syscall-exit stop (PTRACE_SYSCALL,
    /// reported as SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD). No signal is
    /// generated on the way: single-stepping raised a SIGTRAP, which the
    /// kernel forces on a task that blocks it by resetting the program's
    /// SIGTRAP handler to SIG_DFL (seen: CRIU's zdtm sigtrap01 lost its
    /// handler to a capture, even a --dry-run).
    pub fn syscall_step(&mut self) -> Result<(), PtraceError> {
        self.syscall_resume()?;
        self.syscall_stop(true)?; // its entry
        self.syscall_stop(false) // its exit
    }

    /// The first part of [`Tracee::syscall_step`], for stepping many
    /// tracees at once: resumed to its next syscall stop.
    pub fn syscall_resume(&mut self) -> Result<(), PtraceError> {
        ptrace::request(libc::PTRACE_SYSCALL, self.pid, 0)
            .map_err(|e| sys_err("PTRACE_SYSCALL", self.pid, e))
    }

    /// Wait for the tracee's next syscall stop (resumed by
    /// [`Tracee::syscall_resume`]), going on past group-stop
    /// notifications and intercepting signals; resumed again to the next
    /// one if `go_on`.
    pub fn syscall_stop(&mut self, go_on: bool) -> Result<(), PtraceError> {
        const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;
        loop {
            let status = self.waitpid()?;
            if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == SYSCALL_STOP {
                if go_on {
                    self.syscall_resume()?;
                }
                return Ok(());
            }
            if libc::WIFSTOPPED(status) && status >> 16 == PTRACE_EVENT_STOP {
                // A group-stop notification (SIGSTOP sent meanwhile): go on.
                self.syscall_resume()?;
                continue;
            }
            self.intercept_and_resume(status, libc::PTRACE_SYSCALL)?;
        }
    }

    /// Read memory of the tracee (process_vm_readv; falls back to
    /// /proc/PID/mem, which can read PROT_NONE and unreadable mappings).
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<(), PtraceError> {
        crate::pages::read_remote(self.pid, addr, buf).map_err(|source| PtraceError::Sys {
            op: "reading memory",
            pid: self.pid,
            source,
        })
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<(), PtraceError> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/mem", self.pid))
            .and_then(|f| f.write_all_at(data, addr).map(|_| f));
        f.map(|_| ()).map_err(|source| PtraceError::Sys {
            op: "writing memory",
            pid: self.pid,
            source,
        })
    }

    fn detach_raw(&mut self) -> Result<(), PtraceError> {
        if !self.attached {
            return Ok(());
        }
        // A call the freeze failed with EINTR is made again, as if the
        // capture had not happened (best effort: else it sees EINTR, as
        // after a SIGSTOP and SIGCONT). Not if a signal was swallowed
        // meanwhile: that one may be why.
        if self.freeze_eintr() {
            if let Ok(mut r) = self.regs() {
                if crate::regs::freeze_eintr(&crate::regs::to_regs(&r)) {
                    r.rax = r.orig_rax;
                    r.rip -= 2;
                    let _ = self.set_regs(&r);
                }
            }
        }
        self.attached = false;
        ptrace::request(libc::PTRACE_DETACH, self.pid, 0)
            .map_err(|e| sys_err("PTRACE_DETACH", self.pid, e))
    }

    /// Send again the signals swallowed by signal-delivery-stops while we
    /// held the task (only possible for signals that cannot be blocked, or
    /// faults: every other signal is blocked while we inject). Called after
    /// the task has settled into its final state, so that a re-sent signal
    /// cannot overtake a SIGSTOP we sent (thread-directed signals are
    /// dequeued before process-wide ones).
    fn resend_intercepted(&mut self) {
        for si in std::mem::take(&mut self.intercepted) {
            if ptrace::tgsigqueueinfo(self.tgid, self.pid, &si).is_err() {
                // Kernel-origin siginfo (si_code >= 0) may not be queued
                // from user space; send the bare signal instead.
                let _ = ptrace::tgkill(self.tgid, self.pid, si.si_signo);
            }
        }
    }

    /// Detach and leave the process as it was found.
    pub fn detach(mut self) -> Result<(), PtraceError> {
        let stopped = self.was_stopped;
        self.detach_raw()?;
        if stopped {
            settle_stopped(self.tgid, self.pid);
        }
        self.resend_intercepted();
        Ok(())
    }

    /// Detach and leave the process stopped (SIGSTOP before detaching, so
    /// it enters group-stop as soon as it is let go).
    pub fn leave_stopped(mut self) -> Result<(), PtraceError> {
        if !self.was_stopped {
            let _ = ptrace::kill(self.tgid, libc::SIGSTOP);
        }
        self.detach_raw()?;
        settle_stopped(self.tgid, self.pid);
        self.resend_intercepted();
        Ok(())
    }

    /// Kill the process (SIGKILL ends a traced process too).
    pub fn kill(mut self) -> Result<(), PtraceError> {
        self.attached = false;
        self.intercepted.clear();
        let _ = ptrace::kill(self.tgid, libc::SIGKILL);
        // Reap the trace stop notification if any (we are its tracer, not
        // necessarily its parent; the parent reaps the zombie).
        let _ = ptrace::waitpid(self.pid, libc::__WALL | libc::WNOHANG);
        Ok(())
    }

    /// Kill the process, and wait for this thread (not the main one) to
    /// be gone. A traced thread that dies stays a zombie until its tracer
    /// reaps it, and the main thread cannot be reaped by its parent before
    /// every other thread is: `cryo run --then kill`, parent and tracer at
    /// once, waited for the main thread forever.
    pub fn kill_and_reap(mut self) -> Result<(), PtraceError> {
        self.attached = false;
        self.intercepted.clear();
        let _ = ptrace::kill(self.tgid, libc::SIGKILL);
        loop {
            match ptrace::waitpid(self.pid, libc::__WALL) {
                Ok((r, st)) if r == self.pid && (libc::WIFEXITED(st) || libc::WIFSIGNALED(st)) => {
                    return Ok(())
                }
                Ok(_) => {}
                Err(_) => return Ok(()), // ECHILD: gone already
            }
        }
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if self.attached {
            let _ = self.detach_raw();
            if self.was_stopped {
                settle_stopped(self.tgid, self.pid);
            }
            self.resend_intercepted();
        }
    }
}

/// XSAVE area size for the features enabled in XCR0 (CPUID 0xD.0:EBX).
pub fn xsave_size() -> usize {
    std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize
}
