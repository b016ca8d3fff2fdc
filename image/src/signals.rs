//! Queued signals, each with its siginfo (PTRACE_PEEKSIGINFO), so that
//! several instances of a real-time signal and the values sent with
//! sigqueue come back exactly; the bitmasks in `Process` alone would
//! restore one instance of each, without its data.

use crate::record::record;

record! {
    /// One queued signal.
    pub struct QueuedSignal {
        /// 1: queued for the whole process (shared), 0: for the thread.
        pub shared: u32,
        pub signo: u32,
        /// The kernel's 128-byte siginfo, as PTRACE_PEEKSIGINFO returns it.
        pub info: [u64; 16],
        /// Whose queue (thread-directed): 0 the main thread, k + 1 the
        /// k-th entry of the threads table.
        pub thread: u32,
        pub _pad: u32,
    }
}
