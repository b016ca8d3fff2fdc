//! Process trees (format 4.0): the root image's `tree` table lists every
//! process captured with it, the root first, then each process after its
//! parent; the `tree_fds` table lists the fds whose open file description
//! (or, for pipes, whose pipe) is held by more than one process of the
//! tree, so a restore makes each such object once and hands it to every
//! holder; `tree_files` does the same for unlinked files and memfds that
//! several processes map (a POSIX semaphore, shared memory). Each process other than the root has its own image in
//! `procs/PID/` (a zombie has none: only its exit status is kept).

use crate::record::record;

/// `TreeProc::state`.
pub mod proc_state {
    /// A live process, with its own image.
    pub const LIVE: u32 = 0;
    /// A zombie: it exited and its parent had not waited for it yet.
    pub const ZOMBIE: u32 = 1;
}

record! {
    /// One process of a captured tree.
    pub struct TreeProc {
        pub pid: u32,
        /// Its parent (0 for the root).
        pub ppid: u32,
        /// Process group and session.
        pub pgid: u32,
        pub sid: u32,
        /// `proc_state`.
        pub state: u32,
        /// A zombie's exit status, as waitpid(2) reports it.
        pub exit_status: u32,
    }
}

record! {
    /// An fd of one process of the tree whose object others share.
    pub struct TreeFd {
        /// The object: fds with the same `object` are one open file
        /// description (of a pipe, `pipe_end` tells which end; pipes are
        /// matched by their inode; the two ends of a socket pair name each
        /// other in `peer`).
        pub object: u32,
        pub pid: u32,
        pub fd: i32,
        /// For a pipe: the description within the pipe (0: read end,
        /// 1: write end); for a socket pair: which end (0 or 1); 0
        /// otherwise.
        pub pipe_end: u32,
        /// For an end of a socket pair: the object of its other end
        /// (`NO_INDEX` otherwise).
        pub peer: u32,
    }
}

record! {
    /// A file made from the image (unlinked, or a memfd) that more than
    /// one process of the tree maps or holds: made once, and every holder
    /// gets that one inode (its shared mappings stay shared).
    pub struct TreeFile {
        /// Entries with the same `object` are one file.
        pub object: u32,
        pub pid: u32,
        /// Index in that process's files table.
        pub file: u32,
    }
}

record! {
    /// (11.9) A child of this process (in the tree) that was stopped at
    /// capture, and whose stop report (`waitpid` with WUNTRACED, `waitid`
    /// with WSTOPPED) this process had already taken. The restore stops
    /// the child again, which reports the stop again: this process's shim
    /// takes that report before the program runs, as the original had.
    pub struct TakenStop {
        pub pid: u32,
    }
}

/// The directory of a non-root process's image inside the tree's image
/// directory.
#[cfg(feature = "std")]
pub fn proc_dir(pid: u32) -> std::string::String {
    std::format!("procs/{pid}")
}
