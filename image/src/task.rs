//! Per-process state outside memory, registers and fds: credentials and
//! everything a process sets about itself with prctl and friends
//! (scheduling, oom score, membarrier registrations, ...).
//!
//! Where each is restored: credentials, prctl values and membarrier by the
//! shim (they belong to the new address space, or must come last);
//! scheduling, oom score and loginuid by `cryo restore` before the exec
//! (they survive it).

use crate::record::record;

record! {
    /// Credentials (from /proc/PID/status and PR_GET_SECUREBITS).
    pub struct Creds {
        /// Real, effective, saved, filesystem user ids.
        pub uid: [u32; 4],
        /// Real, effective, saved, filesystem group ids.
        pub gid: [u32; 4],
        pub cap_inh: u64,
        pub cap_prm: u64,
        pub cap_eff: u64,
        pub cap_bnd: u64,
        pub cap_amb: u64,
        pub securebits: u32,
        /// Number of supplementary groups (the `groups` section).
        pub ngroups: u32,
    }
}

record! {
    /// One supplementary group.
    pub struct Group {
        pub gid: u32,
    }
}

/// The most [`PidRef`]s an image records (capture stops counting there).
pub const MAX_PID_REFS: usize = 64;

record! {
    /// (9.1) A place in the process's data (writable private mappings of
    /// its executable and libraries, and what follows them: .data and
    /// .bss) that held the process's own PID at capture, as a 32-bit
    /// value: a program that keeps its PID (nginx's master, bash's `$$`,
    /// PostgreSQL's postmaster) and is restored under another PID goes on
    /// with the captured one. Restore says so, by address; it never
    /// changes memory.
    pub struct PidRef {
        pub addr: u64,
        /// (11.4) [`pid_ref`]: what the place is (0 in older images: a
        /// value).
        pub kind: u64,
        /// (11.5) For a mutex: the thread that holds it, 0 the main
        /// thread, k the k-th of `threads` (0 in older images, which
        /// recorded the main thread's only).
        pub owner: u64,
    }
}

/// `PidRef::kind`.
pub mod pid_ref {
    /// The PID as a value the program keeps: named, never changed.
    pub const VALUE: u64 = 0;
    /// The owner field of a glibc mutex a thread holds (`PidRef::owner`)
    /// whose kind checks the owner (recursive, error-checking): restore
    /// rewrites it to the restored thread's id, as it rewrites robust
    /// mutexes.
    pub const MUTEX_OWNER: u64 = 1;
    /// The same for a priority-inheriting mutex, whose lock word (8 bytes
    /// before) holds the owner's id too.
    pub const PI_MUTEX_OWNER: u64 = 2;
}

/// The most instructions of seccomp filters one task may have: the
/// kernel's MAX_INSNS_PER_PATH (each filter also counts 4 more).
pub const MAX_SECCOMP_INSNS: usize = 32768;
/// The most instructions of one filter (BPF_MAXINSNS).
pub const MAX_SECCOMP_FILTER_INSNS: usize = 4096;

/// `SeccompInsn::flags`: the seccomp(2) flags a filter is installed with
/// again (the kernel's own values).
pub mod seccomp_flags {
    /// SECCOMP_FILTER_FLAG_LOG: actions but ALLOW are logged.
    pub const LOG: u32 = 2;
    /// SECCOMP_FILTER_FLAG_SPEC_ALLOW: installing it leaves speculative
    /// store bypass mitigation as it is.
    pub const SPEC_ALLOW: u32 = 4;
    pub const ALL: u32 = LOG | SPEC_ALLOW;
}

/// `SeccompInsn::thread` of a chain every thread shares.
pub const EVERY_THREAD: u32 = u32::MAX;

record! {
    /// (11.0) One instruction of a seccomp filter (mode 2), as
    /// PTRACE_SECCOMP_GET_FILTER read it. A filter's instructions are
    /// consecutive records; a chain's filters in the order they were
    /// installed (`filter` 0 first), each installed again with its
    /// `flags` by the shim as its last act before the program resumes.
    /// `thread`: [`EVERY_THREAD`] for one chain that every thread shares
    /// (the main thread installs it for all with SECCOMP_FILTER_FLAG_TSYNC,
    /// so they share it again), else whose chain this is (0 the main
    /// thread, k + 1 the k-th entry of `threads`), each installed by its
    /// own thread; chains in that order.
    pub struct SeccompInsn {
        pub thread: u32,
        pub filter: u32,
        /// `seccomp_flags` (the same on every instruction of a filter).
        pub flags: u32,
        /// `struct sock_filter`: code (16 bits), jt, jf (8 bits each), k.
        pub code: u32,
        pub jt: u32,
        pub jf: u32,
        pub k: u32,
    }
}

/// Value meaning "not readable here" in [`TaskState`] fields.
pub const UNKNOWN: i64 = i64::MIN;

record! {
    /// What a process can set about itself (prctl and scheduling), as
    /// read at capture. Fields the kernel would not tell are [`UNKNOWN`].
    pub struct TaskState {
        pub thp_disable: i64,
        pub child_subreaper: i64,
        pub pdeathsig: i64,
        pub dumpable: i64,
        pub no_new_privs: i64,
        pub timer_slack_ns: i64,
        pub mdwe: i64,
        /// PR_GET_SPECULATION_CTRL for PR_SPEC_STORE_BYPASS,
        /// PR_SPEC_INDIRECT_BRANCH and PR_SPEC_L1D_FLUSH.
        pub spec: [i64; 3],
        pub mce_kill: i64,
        pub tsc: i64,
        pub memory_merge: i64,
        /// MEMBARRIER_CMD_GET_REGISTRATIONS: the registered commands.
        pub membarrier: i64,
        pub oom_score_adj: i64,
        pub loginuid: i64,
        pub nice: i64,
        pub sched_policy: i64,
        pub sched_priority: i64,
        /// ioprio_get(IOPRIO_WHO_PROCESS)
        pub ioprio: i64,
        /// CPU affinity mask (CPUs 0-1023).
        pub affinity: [u64; 16],
        /// (7.0) /proc/PID/cgroup as read at capture: a line per
        /// hierarchy, `ID:CONTROLLERS:PATH` (empty: not read).
        pub cgroups: crate::StrRef,
        /// (11.0) Its root directory (chroot), absolute as cryo saw it;
        /// empty: `/`.
        pub root: crate::StrRef,
        /// (11.0) 1: the main thread runs in seccomp strict mode (entered
        /// again as the restore's last system call but rt_sigreturn).
        pub seccomp_strict: i64,
        /// (11.3) The dynamic xsave features the process was given
        /// (arch_prctl ARCH_GET_XCOMP_PERM): bit 18, AMX tile data, asked
        /// for again by the shim, whose threads then take their tiles
        /// from their frames. 0 in older images.
        pub xcomp_perm: i64,
        /// (11.5) Bytes of the xsave area a signal frame of this process
        /// carries without AMX tile data ([`crate::frame_xsave_size`] of
        /// XCR0 on the capturing CPU): the shim writes frames of this size
        /// once the CPU's layout is checked the same, instead of asking
        /// CPUID for every feature (5.7 µs each in a VM: a third of a
        /// thread's restore). 0: unknown (older images; the shim asks).
        pub frame_xsave: u64,
        /// (11.7) What mlockall set for mappings to come: 0, or
        /// [`MCL_FUTURE`] with [`MCL_ONFAULT`] if they are locked as they
        /// fault in. 0 in older images (their restores lost it).
        pub mlock_future: u64,
        /// (11.12) /proc/PID/coredump_filter with [`COREDUMP_FILTER_KNOWN`]
        /// set: which mappings a core dump holds (inherited by fork and
        /// kept by exec, so a restore gave the restored process the
        /// restorer's). 0 in older images: left as it is.
        pub coredump_filter: u64,
        /// (11.16) The boot it was captured in
        /// (/proc/sys/kernel/random/boot_id, 16 bytes). All zero:
        /// unknown (older images).
        pub boot_id: [u8; 16],
        /// (11.16) CLOCK_MONOTONIC as the process saw it at capture, ns
        /// (its time namespace's offset added). 0: unknown.
        pub monotonic_ns: u64,
        /// (11.16) CLOCK_BOOTTIME as the process saw it at capture, ns.
        pub boottime_ns: u64,
    }
}

/// The 16 bytes of a boot id as the kernel prints it
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, a newline after); None if it
/// is not one.
pub fn parse_boot_id(text: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut high: Option<u8> = None;
    for &c in text {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'-' | b'\n' => continue,
            _ => return None,
        };
        match high.take() {
            None => high = Some(v),
            Some(h) => {
                *out.get_mut(n)? = (h << 4) | v;
                n += 1;
            }
        }
    }
    (n == 16 && high.is_none()).then_some(out)
}

/// Why the clocks a process saw are not the ones it would see here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockJump {
    /// Another boot (or another machine): the boot ids differ.
    OtherBoot,
    /// CLOCK_MONOTONIC here is this many ns behind what the process saw
    /// at capture (the same boot: another time namespace).
    Behind(u64),
}

/// Whether a process captured with `t` would see its monotonic clocks go
/// back or start again, restored where the boot id is `boot_id` and
/// CLOCK_MONOTONIC reads `monotonic_ns`: its waits and timers on them
/// kept as deadlines (pthread_cond_timedwait on a monotonic condition, a
/// Go or node timer) would end hours late, or at once. None: the same
/// clocks, or not recorded (an older image).
pub fn clock_jump(t: &TaskState, boot_id: &[u8; 16], monotonic_ns: u64) -> Option<ClockJump> {
    if t.boot_id == [0; 16] {
        return None;
    }
    if t.boot_id != *boot_id {
        return Some(ClockJump::OtherBoot);
    }
    (monotonic_ns < t.monotonic_ns).then(|| ClockJump::Behind(t.monotonic_ns - monotonic_ns))
}

impl core::fmt::Display for ClockJump {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = "its waits and timers kept as deadlines on CLOCK_MONOTONIC or CLOCK_BOOTTIME (a Go, node or asyncio timer, pthread_cond_timedwait on a monotonic condition) would end hours late, or at once";
        match self {
            ClockJump::OtherBoot => write!(
                f,
                "it was captured in another boot (or on another machine), whose CLOCK_MONOTONIC and CLOCK_BOOTTIME are not this one's: {what}; `--clock-jump` restores it anyway"
            ),
            ClockJump::Behind(ns) => write!(
                f,
                "CLOCK_MONOTONIC here is {}.{:03} s behind what it saw at capture (another time namespace): {what}; `--clock-jump` restores it anyway",
                ns / 1_000_000_000,
                ns % 1_000_000_000 / 1_000_000
            ),
        }
    }
}

/// The bit of [`TaskState::coredump_filter`] that says it was read.
pub const COREDUMP_FILTER_KNOWN: u64 = 1 << 63;

/// mlockall flags in [`TaskState::mlock_future`].
pub const MCL_FUTURE: u64 = 2;
pub const MCL_ONFAULT: u64 = 4;

/// XFEATURE_XTILEDATA in [`TaskState::xcomp_perm`].
pub const XCOMP_TILEDATA: i64 = 1 << 18;
