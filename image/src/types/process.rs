//! Per-process records: registers, mm fields, the `Process` record itself,
//! the restore gadgets, auxv, signal dispositions, rlimits and timers.

use super::StrRef;
use crate::record::record;

record! {
    /// The x86_64 general registers in `struct user_regs_struct` order
    /// (what PTRACE_GETREGSET NT_PRSTATUS returns), fs_base/gs_base included.
    pub struct Regs {
        pub r15: u64,
        pub r14: u64,
        pub r13: u64,
        pub r12: u64,
        pub rbp: u64,
        pub rbx: u64,
        pub r11: u64,
        pub r10: u64,
        pub r9: u64,
        pub r8: u64,
        pub rax: u64,
        pub rcx: u64,
        pub rdx: u64,
        pub rsi: u64,
        pub rdi: u64,
        pub orig_rax: u64,
        pub rip: u64,
        pub cs: u64,
        pub eflags: u64,
        pub rsp: u64,
        pub ss: u64,
        pub fs_base: u64,
        pub gs_base: u64,
        pub ds: u64,
        pub es: u64,
        pub fs: u64,
        pub gs: u64,
    }
}

record! {
    /// Memory-layout fields of the mm (as `prctl(PR_SET_MM_MAP)` takes them).
    pub struct MmFields {
        pub start_code: u64,
        pub end_code: u64,
        pub start_data: u64,
        pub end_data: u64,
        pub start_brk: u64,
        pub brk: u64,
        pub start_stack: u64,
        pub arg_start: u64,
        pub arg_end: u64,
        pub env_start: u64,
        pub env_end: u64,
    }
}

/// `Process::flags` bits.
pub mod process_flags {
    /// The process was in group-stop (stopped by a signal) when captured.
    pub const WAS_STOPPED: u32 = 1 << 0;
    /// The process was inside a system call; `regs` hold the restart fix-up.
    pub const IN_SYSCALL: u32 = 1 << 1;
    /// The syscall was -ERESTART_RESTARTBLOCK: it returns -EINTR on restore.
    pub const RESTART_BLOCK_EINTR: u32 = 1 << 2;
    /// A registered rseq area is recorded in `rseq_*`.
    pub const HAS_RSEQ: u32 = 1 << 3;
    /// The working directory had been removed (`cwd` is its last path);
    /// restore makes an empty directory there, enters it and removes it.
    /// (11.1) `cwd` /proc/PID ([`super::dead_proc_dir`]): the /proc
    /// directory of a process that ended, entered again from a process
    /// made with that PID and ended at once.
    pub const CWD_DELETED: u32 = 1 << 4;
    /// (11.7) The process led its session (setsid: the session's id is
    /// its PID) and had no controlling terminal: restore makes it lead a
    /// session of its own again. (With a controlling terminal, that of a
    /// pty pair of the image is made again and led; any other terminal
    /// is the invoker's, whose session a restore stays in.)
    pub const SESSION_LEADER: u32 = 1 << 5;
    /// (11.8) The process shared its parent's fd table (cloned with
    /// CLONE_FILES, not a thread): restore forks it from its parent's
    /// shim with CLONE_FILES, or refuses.
    pub const SHARES_PARENT_FDS: u32 = 1 << 6;
    /// (11.10) The process led its process group (a job-control shell's
    /// job, an interactive shell): restored with its own PID (--same-pid),
    /// it leads one again, with that PID as its id (bash gives the
    /// terminal back to the group it keeps in memory).
    pub const GROUP_LEADER: u32 = 1 << 7;
}

/// The PID of a path /proc/PID (digits only), the /proc directory of a
/// process (a removed working directory there is a dead process's).
pub fn dead_proc_dir(path: &str) -> Option<i32> {
    let n = path.strip_prefix("/proc/")?;
    (!n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
        .filter(|&p| p > 0)
}

record! {
    /// Per-process state: one record.
    pub struct Process {
        /// PID at capture time.
        pub pid: u32,
        /// `process_flags` bits.
        pub flags: u32,
        pub personality: u32,
        pub umask: u32,
        /// Task name (`comm`), NUL-padded.
        pub comm: [u8; 16],
        pub exe: StrRef,
        /// Index of the executable in the files table.
        pub exe_file: u32,
        pub cwd: StrRef,
        /// Kernel release (`uname -r`) at capture, for inspect and checks.
        pub kernel: StrRef,
        /// Wall-clock capture time (seconds since the epoch).
        pub captured_at: u64,
        pub mm: MmFields,
        /// Registers after the syscall-restart fix-up (what to resume with).
        pub regs: Regs,
        /// Registers exactly as read from the stopped tracee.
        pub raw_regs: Regs,
        pub sig_blocked: u64,
        pub sig_pending: u64,
        pub sig_shared_pending: u64,
        pub sigaltstack_sp: u64,
        pub sigaltstack_size: u64,
        pub sigaltstack_flags: u32,
        pub rseq_size: u32,
        pub rseq_addr: u64,
        pub rseq_sig: u32,
        pub rseq_flags: u32,
        /// XSAVE area size in bytes (the `Xsave` section's length).
        pub xsave_size: u32,
        /// With `WAS_STOPPED`: the signal that stopped it (SIGSTOP,
        /// SIGTSTP, SIGTTIN or SIGTTOU, as a parent's waitid reports it);
        /// 0 in images before 6.0 (SIGSTOP).
        pub stop_signal: u32,
        /// XCR0 (enabled state components) of the capturing CPU.
        pub xcr0: u64,
        /// glibc TCB fields at fs_base: stack protector canary (%fs:0x28).
        pub tls_canary: u64,
        /// glibc TCB fields at fs_base: pointer guard (%fs:0x30).
        pub tls_pointer_guard: u64,
        /// Address and length of the vDSO at capture, and a hash of its bytes.
        pub vdso_start: u64,
        pub vdso_len: u64,
        pub vdso_hash: u64,
        /// Total bytes in pages.img.
        pub pages_bytes: u64,
        /// Resident set size at capture (KiB), for image-size comparisons.
        pub rss_kib: u64,
        /// The task's robust futex list (get_robust_list), 0 if none.
        pub robust_list: u64,
        pub robust_list_len: u64,
        /// set_tid_address of the main thread (format 3.0), 0 if none.
        pub clear_child_tid: u64,
        /// Offset from a thread's fs base of glibc's cached TID
        /// (`struct pthread`'s `tid`), from the `_thread_db_pthread_tid`
        /// descriptor of the libc the process runs; 0: unknown (no glibc,
        /// or a static one).
        pub tid_offset: u64,
    }
}

record! {
    /// Two instruction sequences in the program's own code, found at capture
    /// (see [`crate::gadget`]), with which the restore shim removes its own
    /// window and enters the program without a tracer: it jumps to
    /// `syscall_ret` with rax = munmap of the window and rsp at a signal
    /// frame whose return address is `sigreturn`.
    pub struct Gadgets {
        /// `syscall` followed by a return reached when it succeeds.
        pub syscall_ret: u64,
        /// `mov $15, %eax/%rax; syscall` (glibc's `__restore_rt`).
        pub sigreturn: u64,
    }
}

record! {
    /// One auxv entry (type, value).
    pub struct AuxvEntry {
        pub key: u64,
        pub val: u64,
    }
}

record! {
    /// A signal disposition, as the kernel's `struct sigaction` for rt_sigaction.
    pub struct SigAction {
        pub signo: u32,
        pub _pad: u32,
        pub handler: u64,
        pub flags: u64,
        pub restorer: u64,
        pub mask: u64,
    }
}

record! {
    /// One resource limit.
    pub struct Rlimit {
        pub resource: u32,
        pub _pad: u32,
        pub cur: u64,
        pub max: u64,
    }
}

const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// Limits the restore itself spends under (its own memory and fds, the
/// shim's window and image files): RLIMIT_DATA, RLIMIT_NOFILE and
/// RLIMIT_AS are only raised before the exec (where the program's are
/// higher), and set to the program's, lowering them, at the shim's last
/// step before the program's seccomp filters (lowering needs no
/// privilege). Set before, a program's own small limits failed its
/// restore past the point of no return (`prlimit --data=4000000:`,
/// `--as=8000000:`: "mapping ...: errno 12"; `--nofile=4:`, a sweep of
/// stop 47).
pub fn rlimit_set_late(r: u32) -> bool {
    const RLIMIT_DATA: u32 = 2;
    const RLIMIT_NOFILE: u32 = 7;
    const RLIMIT_AS: u32 = 9;
    matches!(r, RLIMIT_DATA | RLIMIT_NOFILE | RLIMIT_AS)
}

/// The name of resource limit `r` (`RLIMIT_NOFILE`...).
pub fn rlimit_name(r: u32) -> &'static str {
    RLIMIT_NAMES.get(r as usize).copied().unwrap_or("RLIMIT_?")
}

record! {
    /// A POSIX timer (timer_create), with its current setting.
    pub struct PosixTimer {
        pub id: i32,
        pub clock: i32,
        pub signo: i32,
        /// sigev_notify value (SIGEV_SIGNAL, SIGEV_THREAD_ID, ...).
        pub notify: i32,
        /// The target thread for SIGEV_THREAD_ID (the captured pid).
        pub notify_tid: i32,
        pub _pad: u32,
        pub sigev_value: u64,
        pub interval_sec: i64,
        pub interval_nsec: i64,
        pub value_sec: i64,
        pub value_nsec: i64,
    }
}

/// A CPU-time clock id (negative, as the kernel encodes
/// `clock_getcpuclockid` and `pthread_getcpuclockid`: the PID or thread
/// id inverted, shifted left by 3, the clock kind in the low 3 bits; not a
/// dynamic fd clock): the id it names (0: the caller's process or
/// thread, as CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID are
/// recorded) and whether it is a thread's clock.
pub fn cpu_clock(clock: i32) -> Option<(i32, bool)> {
    if clock >= 0 || clock & 7 == 3 {
        return None;
    }
    Some((!(clock >> 3), clock & 4 != 0))
}

/// [`cpu_clock`] `clock` (same kind) of id `id` instead.
pub fn cpu_clock_of(clock: i32, id: i32) -> i32 {
    ((!id) << 3) | (clock & 7)
}

/// Why a timer on `clock`, of process `pid` whose threads are `tids`
/// (the main thread's too), cannot be made again: the clock counts the CPU time of
/// another process or thread, or of "the thread that made it" in a
/// process of several (which one cannot be seen from outside: /proc shows
/// the same clock id for each).
pub fn timer_clock_obstacle(clock: i32, pid: i32, tids: &[i32]) -> Option<ClockObstacle> {
    let (id, thread) = cpu_clock(clock)?;
    if id == 0 {
        return (thread && tids.len() > 1).then_some(ClockObstacle::Caller);
    }
    let ours = if thread {
        tids.contains(&id)
    } else {
        id == pid
    };
    (!ours).then_some(ClockObstacle::Other { id, thread })
}

/// [`timer_clock_obstacle`]'s answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockObstacle {
    /// CLOCK_THREAD_CPUTIME_ID in a process of several threads.
    Caller,
    /// The clock of a process or thread (`thread`) not its own.
    Other { id: i32, thread: bool },
}

impl core::fmt::Display for ClockObstacle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClockObstacle::Caller => write!(
                f,
                "counts the CPU time of the thread that made it (CLOCK_THREAD_CPUTIME_ID), and which of the process's threads that was cannot be seen from outside"
            ),
            ClockObstacle::Other { id, thread: true } => write!(
                f,
                "counts the CPU time of thread {id}, which is not one of the process's (it ended, or is another process's): a timer on the clock of an ended thread never fires, but cryo cannot make one on that clock again"
            ),
            ClockObstacle::Other { id, thread: false } => write!(
                f,
                "counts the CPU time of process {id}, not the process itself"
            ),
        }
    }
}

record! {
    /// An interval timer (getitimer): ITIMER_REAL, _VIRTUAL or _PROF.
    pub struct Itimer {
        pub which: i32,
        pub _pad: u32,
        pub interval_sec: i64,
        pub interval_usec: i64,
        pub value_sec: i64,
        pub value_usec: i64,
    }
}
