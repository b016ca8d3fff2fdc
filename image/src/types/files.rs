//! Files behind mappings and fds (`FileId`) and the fd table (`Fd`,
//! `fd_kind`).

use super::StrRef;
use crate::record::record;

record! {
    /// Identity of a file behind a mapping or fd: restore refuses if it changed.
    pub struct FileId {
        pub path: StrRef,
        pub dev: u64,
        pub ino: u64,
        pub size: u64,
        pub mtime_sec: i64,
        pub mtime_nsec: u32,
        pub mode: u32,
        /// `fds::file_flags` bits (format 3.0).
        pub flags: u32,
        /// memfd seals (F_GET_SEALS), else 0.
        pub seals: u32,
        /// Stored contents (unlinked files, memfds): extents
        /// `first_extent..first_extent + extent_count` of the `extents`
        /// section.
        pub first_extent: u32,
        pub extent_count: u32,
        /// Owner (restored on recreated files).
        pub uid: u32,
        pub gid: u32,
        /// (9.1) Birth time (statx STATX_BTIME), 0 where the file system
        /// does not tell: a file removed and made again under the same
        /// name often gets the same inode number (ext4 reuses it at once),
        /// and only its birth time tells it from the captured one.
        pub btime_sec: i64,
        pub btime_nsec: u32,
        pub _pad_b: u32,
    }
}

impl FileId {
    /// Whether a file born at (`sec`, `nsec`) (None: not told) may be this
    /// one: the same birth time, or one side does not know it.
    pub fn same_birth(&self, born: Option<(i64, u32)>) -> bool {
        match born {
            Some(b) if (self.btime_sec, self.btime_nsec) != (0, 0) => {
                b == (self.btime_sec, self.btime_nsec)
            }
            _ => true,
        }
    }
}

/// `Fd::kind` values.
pub mod fd_kind {
    pub const REGULAR: u32 = 1;
    pub const CHAR_DEVICE: u32 = 2;
    pub const PIPE: u32 = 3;
    pub const TTY: u32 = 4;
    pub const DIRECTORY: u32 = 5;
    pub const NULL_DEVICE: u32 = 6;
    /// A named pipe (its path is `target`; the pipe state is in `pipes`).
    pub const FIFO: u32 = 7;
    /// An O_PATH fd on a symbolic link itself.
    pub const SYMLINK: u32 = 8;
    /// A /proc file: of the process's own directory (`/proc/PID/...`),
    /// reopened under the restored process's PID; (7.0) of another
    /// process's, reopened where that PID is the same process: a process
    /// of the tree (`Fd::rdev` 0), or one outside it that has the start
    /// time in `Fd::rdev` (clock ticks after boot).
    pub const PROC: u32 = 9;
    /// An inotify instance (its watches are in the `inotify` section).
    pub const INOTIFY: u32 = 10;
    /// An eventfd (its counter in `eventfds`, at `Fd::object`).
    pub const EVENTFD: u32 = 11;
    /// A timerfd (`timerfds`, at `Fd::object`).
    pub const TIMERFD: u32 = 12;
    /// A signalfd (`signalfds`, at `Fd::object`).
    pub const SIGNALFD: u32 = 13;
    /// An epoll instance (what it watches is in `epoll_items`).
    pub const EPOLL: u32 = 14;
    /// A fanotify group (its flags in `fanotify`, its marks in
    /// `fanotify_marks`, both by the group's first fd).
    pub const FANOTIFY: u32 = 15;
    /// A socket (`sockets`, at `Fd::object`; its options in `sockopts`).
    pub const SOCKET: u32 = 16;
    /// (4.0) A pidfd of another process of the tree, whose PID is
    /// `Fd::object`.
    pub const PIDFD: u32 = 17;
    /// (4.1) The master of a pseudo-terminal pair whose every end is in
    /// the captured processes (its state: `ptys`, at `Fd::object`).
    pub const PTY: u32 = 18;
    /// (4.1) The other end (/dev/pts/N) of such a pair: `rdev` names the
    /// pty (its `Pty::index`), whose record is in the image of a holder
    /// of its master.
    pub const PTY_SLAVE: u32 = 19;
    /// (7.0) A namespace (nsfs: /proc/PID/ns/TYPE opened); `target` is
    /// `TYPE:[INODE]`, `ino` its inode. Opened again on a process in
    /// that very namespace.
    pub const NAMESPACE: u32 = 20;
    /// (11.1) A terminal (/dev/pts/N) hung up because its master was
    /// closed: its devpts node is gone, reads and writes fail with EIO.
    /// Made again as the slave of a new pair whose master is closed; fds
    /// with the same `dev` and `rdev` (several descriptions of one
    /// terminal) are slaves of one pair. Its number N may differ.
    pub const HUNG_UP_TTY: u32 = 21;
    /// (11.6) A POSIX message queue (mq_open) by its name, `target`
    /// ("/NAME"); `rdev` its sizes, mq_maxmsg << 32 | mq_msgsize. Opened
    /// again by name: the queue is the namespace's, as a file is the
    /// filesystem's, and its messages are what is in it then. A queue
    /// whose name was removed is refused at capture (nothing reads its
    /// messages without taking them).
    pub const MQUEUE: u32 = 22;

    pub fn name(k: u32) -> &'static str {
        match k {
            FIFO => "fifo",
            SYMLINK => "symlink",
            PROC => "proc",
            INOTIFY => "inotify",
            EVENTFD => "eventfd",
            TIMERFD => "timerfd",
            SIGNALFD => "signalfd",
            EPOLL => "epoll",
            FANOTIFY => "fanotify",
            SOCKET => "socket",
            PIDFD => "pidfd",
            PTY => "pty master",
            PTY_SLAVE => "pty",
            NAMESPACE => "namespace",
            HUNG_UP_TTY => "hung-up tty",
            MQUEUE => "mqueue",
            REGULAR => "file",
            CHAR_DEVICE => "chardev",
            PIPE => "pipe",
            TTY => "tty",
            DIRECTORY => "directory",
            NULL_DEVICE => "null",
            _ => "unknown",
        }
    }
}

record! {
    /// One open file descriptor.
    pub struct Fd {
        pub fd: i32,
        /// `fd_kind` value.
        pub kind: u32,
        /// open(2) flags from fdinfo (O_ACCMODE, O_APPEND, ...).
        pub flags: u32,
        /// FD_CLOEXEC set.
        pub cloexec: u32,
        pub pos: u64,
        /// Target as /proc/PID/fd shows it (path, `pipe:[ino]`, ...).
        pub target: StrRef,
        /// Index into the files table (regular files), else NO_INDEX.
        pub file: u32,
        /// (6.0) 1: not an fd of the process but a file in flight, sent
        /// with SCM_RIGHTS and queued in a socket (`fd` is a number above
        /// the process's own, at which capture held it): made like any
        /// fd, sent again with its message, then closed.
        pub in_flight: u32,
        /// Device number for char devices (rdev), else 0.
        pub rdev: u64,
        /// Inode (pipes: the pipe inode).
        pub ino: u64,
        /// Index in the fds table of the first fd that shares this fd's
        /// open file description (its own index if none before it does).
        pub desc: u32,
        /// st_mode of the open file.
        pub mode: u32,
        /// st_dev of the open file.
        pub dev: u64,
        /// Kind-specific state: an index in the table of the fd's kind
        /// (`pipes` for PIPE and FIFO, `eventfds`, `timerfds`,
        /// `signalfds`); else NO_INDEX.
        pub object: u32,
        pub _pad2: u32,
    }
}
