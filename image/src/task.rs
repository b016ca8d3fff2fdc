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
    }
}
