//! The threads of a process other than its main one (whose state is the
//! `Process` record). Each is recreated by the shim with `clone3`, with
//! its original thread id where that id is free, and resumes with its own
//! registers, xsave area (in the `xsave` section after the main thread's,
//! at `(1 + index) * xsave_size`), signal mask, sigaltstack, TLS, rseq,
//! robust list, clear-child-tid address, name and scheduling.

use crate::record::record;
use crate::Regs;

record! {
    /// One thread (not the main one).
    pub struct Thread {
        /// Its id at capture.
        pub tid: u32,
        /// `process_flags` bits that are per thread: IN_SYSCALL,
        /// RESTART_BLOCK_EINTR, HAS_RSEQ.
        pub flags: u32,
        /// Registers to resume with (syscall-restart fix-up applied).
        pub regs: Regs,
        /// Registers as read.
        pub raw_regs: Regs,
        pub sig_blocked: u64,
        pub sigaltstack_sp: u64,
        pub sigaltstack_size: u64,
        pub sigaltstack_flags: u32,
        pub rseq_size: u32,
        pub rseq_addr: u64,
        pub rseq_sig: u32,
        pub rseq_flags: u32,
        pub robust_list: u64,
        pub robust_list_len: u64,
        /// set_tid_address (glibc: &pthread->tid; pthread_join waits on it).
        pub clear_child_tid: u64,
        pub comm: [u8; 16],
        pub sched_policy: i32,
        pub sched_priority: i32,
        pub nice: i32,
        /// (11.12) The thread's I/O priority with [`IOPRIO_KNOWN`] set
        /// (`ionice -p PID` gives the main thread one, not the others;
        /// a clone inherits its creator's). 0 in older images: the
        /// thread keeps the one it is cloned with.
        pub ioprio: i32,
        pub timer_slack_ns: u64,
        /// CPU affinity mask (CPUs 0-1023).
        pub affinity: [u64; 16],
    }
}

/// The bit of [`Thread::ioprio`] that says it was read.
pub const IOPRIO_KNOWN: i32 = 1 << 30;
