//! The records of an image: one type per table.
//!
//! Field order is the on-disk order. Add fields only at the end of a record
//! (and bump the minor version); never reorder or remove.

use crate::record::record;

/// Page size the format is defined for (x86_64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// Reference to a UTF-8 string in the `Strings` section (offset, length).
/// `len == 0` is the empty string; `off == u32::MAX` means "absent".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub struct StrRef {
    pub off: u32,
    pub len: u32,
}

impl StrRef {
    pub const NONE: StrRef = StrRef {
        off: u32::MAX,
        len: 0,
    };
    pub fn is_none(&self) -> bool {
        self.off == u32::MAX
    }
}

impl crate::record::Field for StrRef {
    const SIZE: usize = 8;
    fn put(&self, out: &mut [u8]) {
        self.off.put(&mut out[0..]);
        self.len.put(&mut out[4..]);
    }
    fn get(b: &[u8]) -> Self {
        StrRef {
            off: u32::get(&b[0..]),
            len: u32::get(&b[4..]),
        }
    }
}

/// Index meaning "no entry" in index-valued fields.
pub const NO_INDEX: u32 = u32::MAX;

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
}

impl SectionKind {
    pub const ALL: [SectionKind; 29] = [
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
    pub const CWD_DELETED: u32 = 1 << 4;
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
        pub _pad0: u32,
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

/// `Vma::kind` values.
pub mod vma_kind {
    pub const ANON_PRIVATE: u32 = 1;
    pub const ANON_SHARED: u32 = 2;
    pub const FILE_PRIVATE: u32 = 3;
    pub const FILE_SHARED: u32 = 4;
    pub const HEAP: u32 = 5;
    pub const STACK: u32 = 6;
    pub const VDSO: u32 = 7;
    pub const VVAR: u32 = 8;
    pub const VVAR_VCLOCK: u32 = 9;
    pub const VSYSCALL: u32 = 10;

    pub fn name(k: u32) -> &'static str {
        match k {
            ANON_PRIVATE => "anon-private",
            ANON_SHARED => "anon-shared",
            FILE_PRIVATE => "file-private",
            FILE_SHARED => "file-shared",
            HEAP => "heap",
            STACK => "stack",
            VDSO => "vdso",
            VVAR => "vvar",
            VVAR_VCLOCK => "vvar_vclock",
            VSYSCALL => "vsyscall",
            _ => "unknown",
        }
    }
}

/// `Vma::prot` bits (same values as PROT_*).
pub mod prot {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 4;
}

/// `Vma::flags` bits.
pub mod vma_flags {
    /// The mapped file was deleted (path ends in " (deleted)").
    pub const DELETED: u32 = 1 << 0;
    /// PROT_NONE guard region.
    pub const GUARD: u32 = 1 << 1;
    /// VM_GROWSDOWN.
    pub const GROWSDOWN: u32 = 1 << 2;
    /// VM_LOCKED.
    pub const LOCKED: u32 = 1 << 3;
    /// MADV_DONTFORK.
    pub const DONTFORK: u32 = 1 << 4;
    /// MADV_DONTDUMP.
    pub const DONTDUMP: u32 = 1 << 5;
    /// MADV_WIPEONFORK.
    pub const WIPEONFORK: u32 = 1 << 6;
    /// MADV_HUGEPAGE.
    pub const HUGEPAGE: u32 = 1 << 7;
    /// MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: u32 = 1 << 8;
}

record! {
    /// One mapping (VMA) as in /proc/PID/maps + smaps.
    pub struct Vma {
        pub start: u64,
        pub end: u64,
        /// File offset in bytes (0 for anonymous mappings).
        pub pgoff: u64,
        /// `prot` bits.
        pub prot: u32,
        /// `vma_kind` value.
        pub kind: u32,
        /// `vma_flags` bits.
        pub flags: u32,
        /// Index into the files table, or NO_INDEX.
        pub file: u32,
        /// smaps VmFlags, as a bitset of `vmflag` positions.
        pub vmflags: u64,
        /// The maps path/name column (file path, `[heap]`, ...).
        pub name: StrRef,
        /// First page run of this VMA and how many (runs are in address order).
        pub first_run: u32,
        pub run_count: u32,
        /// Pages present or swapped at capture (whether dumped or not).
        pub resident_pages: u64,
    }
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn is_special(&self) -> bool {
        matches!(
            self.kind,
            vma_kind::VDSO | vma_kind::VVAR | vma_kind::VVAR_VCLOCK | vma_kind::VSYSCALL
        )
    }
}

/// The two-letter smaps VmFlags, in bit order of `Vma::vmflags`.
pub const VMFLAG_NAMES: [&str; 48] = [
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "dw", "lo", "io", "sr", "rr", "dc",
    "de", "ac", "nr", "ht", "sf", "nl", "ar", "wf", "dd", "sd", "mm", "hg", "nh", "mg", "um", "uw",
    "ss", "sl", "bt", "mt", "ui", "lf", "se", "pk", "p0", "p1", "p2", "p3", "p4", "gu", "dp", "",
];

/// What cryo does with each smaps VmFlag of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFlagRule {
    /// Follows from how the mapping is made (protection, sharing, the
    /// file, MAP_* flags): nothing to do.
    Derived,
    /// Set again by the shim (madvise, mlock, mseal, MAP_DROPPABLE).
    Restored,
    /// Cannot be brought back: capture refuses the mapping, saying why.
    Refused(&'static str),
}

/// The rule for a two-letter VmFlag (`special`: the kernel's own vDSO and
/// vvar mappings, which it recreates with whatever flags it gives them).
pub fn vmflag_rule(name: &str, special: bool) -> VmFlagRule {
    use VmFlagRule::*;
    if special {
        return Derived;
    }
    match name {
        "rd" | "wr" | "ex" | "sh" | "mr" | "mw" | "me" | "ms" | "gd" | "ac" | "nr" | "sd" => {
            Derived
        }
        "lo" | "lf" | "sr" | "rr" | "dc" | "dd" | "wf" | "hg" | "nh" | "mg" | "sl" | "dp" => {
            Restored
        }
        "ht" => Refused("hugetlb memory"),
        "pf" | "io" | "mm" | "ar" | "sf" => {
            Refused("device or DAX memory (VM_PFNMAP/VM_IO/VM_MIXEDMAP/VM_PAT/VM_SYNC)")
        }
        "de" => Refused(
            "a mapping that cannot be expanded (VM_DONTEXPAND: set up by a driver or an io ring)",
        ),
        "um" | "uw" | "ui" => Refused("registered with the program's own userfaultfd"),
        "ss" => Refused("a shadow stack"),
        "gu" => Refused("guard regions (MADV_GUARD_INSTALL)"),
        "pk" | "p0" | "p1" | "p2" | "p3" | "p4" => Refused("memory protection keys"),
        "bt" | "mt" | "se" => Refused("an architecture flag cryo does not know on x86_64"),
        _ => Refused("a flag this cryo does not know"),
    }
}

/// The `Vma::vmflags` mask of a two-letter VmFlag, computed at compile
/// time where `name` is a constant (`const LO: u64 = vmflag("lo")`); 0 for
/// a name this version does not know.
pub const fn vmflag(name: &str) -> u64 {
    let n = name.as_bytes();
    let mut i = 0;
    while i < VMFLAG_NAMES.len() {
        let f = VMFLAG_NAMES[i].as_bytes();
        if f.len() == 2 && n.len() == 2 && f[0] == n[0] && f[1] == n[1] {
            return 1 << i;
        }
        i += 1;
    }
    0
}

/// Bit position of a two-letter VmFlag, if known.
pub fn vmflag_bit(name: &str) -> Option<u32> {
    VMFLAG_NAMES
        .iter()
        .position(|n| !n.is_empty() && *n == name)
        .map(|p| p as u32)
}

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
    }
}

/// `PageRun::kind` values.
pub mod run_kind {
    /// Page contents stored in pages.bin at `offset`.
    pub const DATA: u32 = 1;
    /// All-zero pages (present at capture, not stored).
    pub const ZERO: u32 = 2;
}

record! {
    /// A run of consecutive pages of one VMA.
    pub struct PageRun {
        pub vaddr: u64,
        pub npages: u32,
        /// `run_kind` value.
        pub kind: u32,
        /// Byte offset in pages.img (page aligned), for DATA runs.
        pub offset: u64,
        /// 0. (Format 1.x: the xxh3-64 of the run's bytes. Since 2.0 every
        /// page has its own checksum in sums.img.)
        pub reserved: u64,
    }
}

record! {
    /// The xxh3-64 of one block of sums.img: [`SUMS_PER_BLOCK`] page
    /// checksums (4096 bytes; the last block may be shorter).
    pub struct SumBlock {
        pub checksum: u64,
    }
}

/// Page checksums per block of sums.img: one block covers 2 MiB of
/// pages.img, and is read and checked as a whole.
pub const SUMS_PER_BLOCK: u64 = 512;

/// Blocks of sums.img for a pages.img of `pages_len` bytes.
pub fn sum_blocks(pages_len: u64) -> u64 {
    (pages_len / PAGE_SIZE).div_ceil(SUMS_PER_BLOCK)
}

impl PageRun {
    pub fn len(&self) -> u64 {
        self.npages as u64 * PAGE_SIZE
    }
    pub fn is_empty(&self) -> bool {
        self.npages == 0
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
    /// A file of the process's own /proc directory (`/proc/PID/...`):
    /// reopened under the restored process's PID.
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
        pub _pad: u32,
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

/// The rules a lazy restore follows, shared by the shim (which maps and
/// registers) and the page server (which serves): both must agree exactly.
pub mod lazy {
    use super::{vma_flags, vma_kind, Process, Vma, PAGE_SIZE};

    /// Pages within this distance below the captured stack pointer (and the
    /// page holding it) are filled eagerly: the shim builds the signal frame
    /// there, and the program's first instructions touch them.
    pub const STACK_EAGER_BELOW: u64 = 16 * PAGE_SIZE;

    /// Is this mapping served lazily (registered with userfaultfd in
    /// MISSING mode)? Only private anonymous memory (heap and anonymous
    /// mappings) with data to serve; the stack, file mappings, shared,
    /// locked, sealed, droppable, PROT_NONE and fork-special (dontfork /
    /// wipeonfork) mappings are filled eagerly.
    pub fn is_lazy(v: &Vma) -> bool {
        matches!(v.kind, vma_kind::ANON_PRIVATE | vma_kind::HEAP)
            && v.prot & 3 != 0
            && v.flags
                & (vma_flags::GROWSDOWN
                    | vma_flags::LOCKED
                    | vma_flags::DONTFORK
                    | vma_flags::WIPEONFORK)
                == 0
            && v.run_count > 0
            && v.vmflags & (super::vmflag("dp") | super::vmflag("sl") | super::vmflag("lo")) == 0
    }

    /// Page-aligned [start, end) filled eagerly even inside lazy
    /// mappings, below `sp`: where the shim writes a thread's signal frame.
    pub fn eager_window_at(sp: u64) -> (u64, u64) {
        let sp = sp & !(PAGE_SIZE - 1);
        (sp.saturating_sub(STACK_EAGER_BELOW), sp + PAGE_SIZE)
    }

    /// The eager window of a thread: below its stack pointer, or at the top
    /// of its sigaltstack when the shim builds its frame there
    /// (`crate::frame_top`).
    pub fn eager_window_of(rsp: u64, alt: (u64, u64, u32), xsave: u32) -> (u64, u64) {
        eager_window_at(crate::frame_top(rsp, alt, xsave) + 128)
    }

    /// The main thread's eager window.
    pub fn eager_window(p: &Process) -> (u64, u64) {
        eager_window_of(
            p.regs.rsp,
            (p.sigaltstack_sp, p.sigaltstack_size, p.sigaltstack_flags),
            p.xsave_size,
        )
    }

    /// Every thread's eager window (the main thread's first): the shim
    /// builds each thread's signal frame there, so it fills them all,
    /// pages without data too, before the page server starts.
    pub fn eager_windows<'a>(img: &crate::Image<'a>) -> impl Iterator<Item = (u64, u64)> + 'a {
        let p = img.process();
        let main = eager_window(&p);
        let xsave = p.xsave_size;
        core::iter::once(main).chain(img.threads().iter().map(move |t| {
            eager_window_of(
                t.regs.rsp,
                (t.sigaltstack_sp, t.sigaltstack_size, t.sigaltstack_flags),
                xsave,
            )
        }))
    }

    /// The part of [start, end) the eager windows cover, as one range
    /// (the hull of the windows that meet it), if any.
    pub fn eager_in(img: &crate::Image, start: u64, end: u64) -> Option<(u64, u64)> {
        let mut hull: Option<(u64, u64)> = None;
        for (lo, hi) in eager_windows(img) {
            let (lo, hi) = (lo.max(start), hi.min(end));
            if lo < hi {
                hull = Some(match hull {
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                    None => (lo, hi),
                });
            }
        }
        hull
    }
}
