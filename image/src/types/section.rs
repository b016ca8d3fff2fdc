//! [`SectionKind`]: the tables an image can hold, their names, record
//! sizes and limits.

use super::{
    AuxvEntry, Fd, FileId, Gadgets, Itimer, PageRun, PosixTimer, Process, Rlimit, SigAction,
    SumBlock, Vma,
};

/// Section kinds. Unknown kinds are skipped by readers (forward compatible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionKind {
    Process = 1,
    Vmas = 2,
    Files = 3,
    PageRuns = 4,
    Strings = 5,
    Xsave = 6,
    Auxv = 7,
    SigActions = 8,
    Rlimits = 9,
    Fds = 10,
    Timers = 11,
    Itimers = 12,
    /// Optional (format 1.1): where the restore can finish without a tracer.
    Gadgets = 13,
    /// Format 2.0: one checksum per block of sums.img ([`SumBlock`]).
    PageSums = 14,
    /// Format 3.0: pipes and FIFOs ([`crate::fds::Pipe`]).
    Pipes = 15,
    /// Format 3.0: stored bytes of unlinked files and memfds.
    Extents = 16,
    /// Format 3.0: file locks.
    Locks = 17,
    /// Format 3.0: credentials (one record).
    Creds = 18,
    /// Format 3.0: supplementary groups.
    Groups = 19,
    /// Format 3.0: prctl and scheduling state (one record).
    Task = 20,
    /// Format 3.0: queued signals with their siginfo.
    Signals = 21,
    /// Format 3.0: inotify watches.
    Inotify = 22,
    /// Format 3.0: eventfd counters.
    EventFds = 23,
    /// Format 3.0: timerfd settings.
    TimerFds = 24,
    /// Format 3.0: signalfd masks.
    SignalFds = 25,
    /// Format 3.0: what every epoll instance watches.
    EpollItems = 26,
    /// Format 3.0: every thread but the main one ([`crate::threads::Thread`]).
    Threads = 27,
    /// Format 3.0: fanotify groups: init flags.
    Fanotify = 28,
    /// Format 3.0: the marks of fanotify groups.
    FanotifyMarks = 29,
    /// Format 3.1: sockets.
    Sockets = 30,
    /// Format 3.1: socket options.
    SockOpts = 31,
    /// Format 4.0: the processes of a captured tree (root image only).
    Tree = 32,
    /// Format 4.0: fds whose object processes of the tree share.
    TreeFds = 33,
    /// Format 4.0: files made from the image that processes of the tree share.
    TreeFiles = 34,
    /// Format 4.1: pseudo-terminal pairs ([`crate::fds::Pty`]).
    Ptys = 35,
    /// Format 7.0: SIGIO owners and signals ([`crate::fds::FdOwner`]).
    FdOwners = 36,
    /// Format 8.0: System V shared memory attached ([`crate::fds::SysvShm`]).
    SysvShm = 37,
    /// Format 9.0: sockets' classic BPF filters ([`crate::fds::SockFilterInsn`]).
    SockFilters = 38,
    /// Format 9.0: TCP connections captured with TCP repair ([`crate::fds::TcpConn`]).
    TcpConns = 39,
    /// Format 9.1: where the process kept its own PID ([`crate::task::PidRef`]).
    PidRefs = 40,
    /// Format 9.1: file handles of files reopened without a name ([`crate::fds::FileHandle`]).
    FileHandles = 41,
    /// Format 11.0: the process's seccomp filters ([`crate::task::SeccompInsn`]).
    Seccomp = 42,
    /// Format 11.0: every other thread's credentials, when one differs
    /// from the main thread's ([`crate::task::Creds`]).
    ThreadCreds = 43,
    /// Format 11.6: System V semaphore sets the process could use
    /// ([`crate::fds::SysvSem`]).
    SysvSem = 44,
    /// Format 11.6: System V message queues the process could use
    /// ([`crate::fds::SysvMsq`]).
    SysvMsq = 45,
    /// Format 11.9: stopped children whose stop report the process had
    /// already taken ([`crate::tree::TakenStop`]).
    TakenStops = 46,
    /// Format 11.10: the modes and size of the terminal at the process's
    /// fds 0-2 ([`crate::fds::Terminal`]).
    Terminal = 47,
    /// Format 11.11: AIO contexts ([`crate::fds::AioRing`]).
    AioRings = 48,
    /// Format 11.13: multicast groups sockets joined ([`crate::fds::McastGroup`]).
    McastGroups = 49,
}

/// Most System V semaphore sets, and most message queues, an image records.
pub const MAX_SYSV_OBJECTS: usize = 4096;

/// A `sysv_shm` record as 11.5 wrote it (before the creator).
const SYSV_SHM_11_5: usize = 56;
/// A `files` record as 9.0 wrote it (before the birth time).
const FILE_ID_9_0: usize = 72;
/// A `vmas` record as 11.16 wrote it (before the NUMA policy).
const VMA_11_16: usize = <Vma as crate::record::Record>::SIZE - 16;
/// A `pid_refs` record as 11.3 wrote it (before `kind`).
const PID_REF_11_3: usize = 8;
/// An `inotify` record as 11.4 wrote it (before the file handle).
const INOTIFY_WATCH_11_4: usize = 40;
/// A `fanotify_marks` record as 11.4 wrote it (before the file handle).
const FANOTIFY_MARK_11_4: usize = 56;
/// A `task` record as 11.2 wrote it (before `xcomp_perm`, 11.5's
/// `frame_xsave`, 11.7's `mlock_future`, 11.12's `coredump_filter` and
/// 11.16's `boot_id`, `monotonic_ns` and `boottime_ns`).
const TASK_STATE_11_2: usize = <crate::task::TaskState as crate::record::Record>::SIZE - 64;

impl SectionKind {
    pub const ALL: [SectionKind; 49] = [
        SectionKind::Process,
        SectionKind::Vmas,
        SectionKind::Files,
        SectionKind::PageRuns,
        SectionKind::Strings,
        SectionKind::Xsave,
        SectionKind::Auxv,
        SectionKind::SigActions,
        SectionKind::Rlimits,
        SectionKind::Fds,
        SectionKind::Timers,
        SectionKind::Itimers,
        SectionKind::Gadgets,
        SectionKind::PageSums,
        SectionKind::Pipes,
        SectionKind::Extents,
        SectionKind::Locks,
        SectionKind::Creds,
        SectionKind::Groups,
        SectionKind::Task,
        SectionKind::Signals,
        SectionKind::Inotify,
        SectionKind::EventFds,
        SectionKind::TimerFds,
        SectionKind::SignalFds,
        SectionKind::EpollItems,
        SectionKind::Threads,
        SectionKind::Fanotify,
        SectionKind::FanotifyMarks,
        SectionKind::Sockets,
        SectionKind::SockOpts,
        SectionKind::Tree,
        SectionKind::TreeFds,
        SectionKind::TreeFiles,
        SectionKind::Ptys,
        SectionKind::FdOwners,
        SectionKind::SysvShm,
        SectionKind::SockFilters,
        SectionKind::TcpConns,
        SectionKind::PidRefs,
        SectionKind::FileHandles,
        SectionKind::Seccomp,
        SectionKind::ThreadCreds,
        SectionKind::SysvSem,
        SectionKind::SysvMsq,
        SectionKind::TakenStops,
        SectionKind::Terminal,
        SectionKind::AioRings,
        SectionKind::McastGroups,
    ];
    pub fn from_u32(v: u32) -> Option<SectionKind> {
        SectionKind::ALL.iter().copied().find(|k| *k as u32 == v)
    }
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Process => "process",
            SectionKind::Vmas => "vmas",
            SectionKind::Files => "files",
            SectionKind::PageRuns => "page_runs",
            SectionKind::Strings => "strings",
            SectionKind::Xsave => "xsave",
            SectionKind::Auxv => "auxv",
            SectionKind::SigActions => "sigactions",
            SectionKind::Rlimits => "rlimits",
            SectionKind::Fds => "fds",
            SectionKind::Timers => "timers",
            SectionKind::Itimers => "itimers",
            SectionKind::Gadgets => "gadgets",
            SectionKind::PageSums => "page_sums",
            SectionKind::Pipes => "pipes",
            SectionKind::Extents => "extents",
            SectionKind::Locks => "locks",
            SectionKind::Creds => "creds",
            SectionKind::Groups => "groups",
            SectionKind::Task => "task",
            SectionKind::Signals => "signals",
            SectionKind::Inotify => "inotify",
            SectionKind::EventFds => "eventfds",
            SectionKind::TimerFds => "timerfds",
            SectionKind::SignalFds => "signalfds",
            SectionKind::EpollItems => "epoll_items",
            SectionKind::Threads => "threads",
            SectionKind::Fanotify => "fanotify",
            SectionKind::FanotifyMarks => "fanotify_marks",
            SectionKind::Sockets => "sockets",
            SectionKind::SockOpts => "sockopts",
            SectionKind::Tree => "tree",
            SectionKind::TreeFds => "tree_fds",
            SectionKind::TreeFiles => "tree_files",
            SectionKind::Ptys => "ptys",
            SectionKind::FdOwners => "fd_owners",
            SectionKind::SysvShm => "sysv_shm",
            SectionKind::SockFilters => "sock_filters",
            SectionKind::TcpConns => "tcp_conns",
            SectionKind::PidRefs => "pid_refs",
            SectionKind::FileHandles => "file_handles",
            SectionKind::Seccomp => "seccomp",
            SectionKind::ThreadCreds => "thread_creds",
            SectionKind::SysvSem => "sysv_sem",
            SectionKind::SysvMsq => "sysv_msq",
            SectionKind::TakenStops => "taken_stops",
            SectionKind::Terminal => "terminal",
            SectionKind::AioRings => "aio_rings",
            SectionKind::McastGroups => "mcast_groups",
        }
    }
    /// The shortest records this reader accepts for the section: what it
    /// knows, but for records that gained fields at their end in a minor
    /// version, which read as zero from an older image (`files`: 9.1
    /// added the birth time, 0 meaning "not known"; `task`: 11.3 added
    /// `xcomp_perm`; `inotify`, `fanotify_marks`: 11.5 added the file handle, and `task`
    /// `frame_xsave`; `sysv_shm`: 11.6 added the creator; `task`: 11.7
    /// added `mlock_future`).
    pub fn min_record_size(self) -> usize {
        match self {
            SectionKind::Files => FILE_ID_9_0,
            SectionKind::Vmas => VMA_11_16,
            SectionKind::Task => TASK_STATE_11_2,
            SectionKind::PidRefs => PID_REF_11_3,
            SectionKind::Inotify => INOTIFY_WATCH_11_4,
            SectionKind::FanotifyMarks => FANOTIFY_MARK_11_4,
            SectionKind::SysvShm => SYSV_SHM_11_5,
            k => k.known_record_size(),
        }
    }
    /// Record size this reader knows for the section (1 for byte blobs).
    pub fn known_record_size(self) -> usize {
        use crate::record::Record;
        match self {
            SectionKind::Process => Process::SIZE,
            SectionKind::Vmas => Vma::SIZE,
            SectionKind::Files => FileId::SIZE,
            SectionKind::PageRuns => PageRun::SIZE,
            SectionKind::Strings | SectionKind::Xsave => 1,
            SectionKind::Auxv => AuxvEntry::SIZE,
            SectionKind::SigActions => SigAction::SIZE,
            SectionKind::Rlimits => Rlimit::SIZE,
            SectionKind::Fds => Fd::SIZE,
            SectionKind::Timers => PosixTimer::SIZE,
            SectionKind::Itimers => Itimer::SIZE,
            SectionKind::Gadgets => Gadgets::SIZE,
            SectionKind::PageSums => SumBlock::SIZE,
            SectionKind::Pipes => crate::fds::Pipe::SIZE,
            SectionKind::Extents => crate::fds::Extent::SIZE,
            SectionKind::Locks => crate::fds::Lock::SIZE,
            SectionKind::Creds => crate::task::Creds::SIZE,
            SectionKind::Groups => crate::task::Group::SIZE,
            SectionKind::Task => crate::task::TaskState::SIZE,
            SectionKind::Signals => crate::signals::QueuedSignal::SIZE,
            SectionKind::Inotify => crate::fds::InotifyWatch::SIZE,
            SectionKind::EventFds => crate::fds::EventFd::SIZE,
            SectionKind::TimerFds => crate::fds::TimerFd::SIZE,
            SectionKind::SignalFds => crate::fds::SignalFd::SIZE,
            SectionKind::EpollItems => crate::fds::EpollItem::SIZE,
            SectionKind::Threads => crate::threads::Thread::SIZE,
            SectionKind::Fanotify => crate::fds::FanotifyGroup::SIZE,
            SectionKind::FanotifyMarks => crate::fds::FanotifyMark::SIZE,
            SectionKind::Sockets => crate::fds::Socket::SIZE,
            SectionKind::SockOpts => crate::fds::SockOpt::SIZE,
            SectionKind::Tree => crate::tree::TreeProc::SIZE,
            SectionKind::TreeFds => crate::tree::TreeFd::SIZE,
            SectionKind::TreeFiles => crate::tree::TreeFile::SIZE,
            SectionKind::Ptys => crate::fds::Pty::SIZE,
            SectionKind::FdOwners => crate::fds::FdOwner::SIZE,
            SectionKind::SysvShm => crate::fds::SysvShm::SIZE,
            SectionKind::SockFilters => crate::fds::SockFilterInsn::SIZE,
            SectionKind::TcpConns => crate::fds::TcpConn::SIZE,
            SectionKind::PidRefs => crate::task::PidRef::SIZE,
            SectionKind::FileHandles => crate::fds::FileHandle::SIZE,
            SectionKind::Seccomp => crate::task::SeccompInsn::SIZE,
            SectionKind::ThreadCreds => crate::task::Creds::SIZE,
            SectionKind::SysvSem => crate::fds::SysvSem::SIZE,
            SectionKind::SysvMsq => crate::fds::SysvMsq::SIZE,
            SectionKind::TakenStops => crate::tree::TakenStop::SIZE,
            SectionKind::Terminal => crate::fds::Terminal::SIZE,
            SectionKind::AioRings => crate::fds::AioRing::SIZE,
            SectionKind::McastGroups => crate::fds::McastGroup::SIZE,
        }
    }
    /// Upper bound on the number of records, to refuse absurd images early.
    pub fn max_count(self) -> u64 {
        match self {
            SectionKind::Process => 1,
            SectionKind::Vmas => 1 << 20,
            SectionKind::Files => 1 << 16,
            SectionKind::PageRuns => 1 << 26,
            SectionKind::Strings => 16 << 20,
            // One area per thread (up to 64k threads of 64 KiB each).
            SectionKind::Xsave => 1 << 32,
            SectionKind::Auxv => 128,
            SectionKind::SigActions => 64,
            SectionKind::Rlimits => 32,
            SectionKind::Fds => 1 << 20,
            SectionKind::Timers => 1 << 16,
            SectionKind::Itimers => 3,
            SectionKind::Gadgets => 1,
            // one block per 2 MiB of pages.img, up to MAX_PAGES_LEN
            SectionKind::PageSums => 1 << 19,
            SectionKind::Pipes => 1 << 20,
            SectionKind::Extents => 1 << 24,
            SectionKind::Locks => 1 << 20,
            SectionKind::Creds => 1,
            // NGROUPS_MAX
            SectionKind::Groups => 65536,
            SectionKind::Task => 1,
            // RLIMIT_SIGPENDING can be raised; 1 << 20 queued signals is
            // far beyond any default.
            SectionKind::Signals => 1 << 20,
            // fs.inotify.max_user_watches can be raised; 1 << 22 is far
            // beyond its default (8192 to 1 << 20 by memory).
            SectionKind::Inotify => 1 << 22,
            SectionKind::EventFds | SectionKind::TimerFds | SectionKind::SignalFds => 1 << 20,
            SectionKind::EpollItems => 1 << 22,
            // kernel.threads-max is bounded by memory; 64k threads in one
            // process is far beyond what cryo is meant for.
            SectionKind::Threads => 1 << 16,
            SectionKind::Fanotify => 1 << 16,
            SectionKind::FanotifyMarks => 1 << 22,
            SectionKind::Sockets => 1 << 20,
            SectionKind::SockOpts => 1 << 24,
            // A tree of at most 4096 processes (validation compares each
            // with those before it).
            SectionKind::Tree => 4096,
            SectionKind::TreeFds => 1 << 24,
            SectionKind::TreeFiles => 1 << 24,
            // devpts allows 4096 ptys by default (kernel.pty.max).
            SectionKind::Ptys => 1 << 20,
            SectionKind::FdOwners => 1 << 20,
            // (kernel.shmmni is 4096 by default.)
            SectionKind::SysvShm => 1 << 16,
            SectionKind::SockFilters => 1 << 24,
            SectionKind::TcpConns => 1 << 20,
            SectionKind::PidRefs => crate::task::MAX_PID_REFS as u64,
            SectionKind::FileHandles => 1 << 20,
            // The kernel's limit on the instructions of one task's filters
            // (MAX_INSNS_PER_PATH).
            SectionKind::Seccomp => crate::task::MAX_SECCOMP_INSNS as u64,
            SectionKind::ThreadCreds => 1 << 16,
            // (Validation compares each id with those before it; a process
            // that could use more than 4096 sets or queues is refused.)
            SectionKind::SysvSem | SectionKind::SysvMsq => MAX_SYSV_OBJECTS as u64,
            // (At most one per process of a tree.)
            SectionKind::TakenStops => 4096,
            SectionKind::Terminal => 1,
            // (fs.aio-max-nr, 65536 events by default, bounds the
            // contexts of the whole system.)
            SectionKind::AioRings => 1 << 16,
            SectionKind::McastGroups => 1 << 20,
        }
    }
    /// Sections every valid image must have.
    pub fn required(self) -> bool {
        matches!(
            self,
            SectionKind::Process
                | SectionKind::Vmas
                | SectionKind::PageRuns
                | SectionKind::Strings
                | SectionKind::Xsave
                | SectionKind::PageSums
        )
    }
}
