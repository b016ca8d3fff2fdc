//! [`Image`], a parsed and checksum-verified meta.img, with its typed
//! accessors, and [`Table`], the view of one of its tables. The semantic
//! checks are in `validate.rs`.

use crate::*;

/// One slot per section kind, indexed by kind: room for every kind this
/// reader knows (checked at compile time).
const SECTION_SLOTS: usize = 50;
const _: () = {
    let mut i = 0;
    while i < SectionKind::ALL.len() {
        assert!((SectionKind::ALL[i] as usize) < SECTION_SLOTS);
        i += 1;
    }
};

/// A typed, bounds-checked view of one table.
#[derive(Clone, Copy)]
pub struct Table<'a, T: Record> {
    bytes: &'a [u8],
    stride: usize,
    count: usize,
    _t: core::marker::PhantomData<T>,
}

impl<'a, T: Record> Table<'a, T> {
    fn empty() -> Self {
        Table {
            bytes: &[],
            stride: T::SIZE.max(1),
            count: 0,
            _t: core::marker::PhantomData,
        }
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.count {
            return None;
        }
        Some(decode_at(self.bytes, self.stride, i))
    }
    pub fn iter(&self) -> impl Iterator<Item = T> + 'a {
        let (bytes, stride) = (self.bytes, self.stride);
        (0..self.count).map(move |i| decode_at(bytes, stride, i))
    }
}

/// The longest record a section may hold shorter than this reader's
/// (`SectionKind::min_record_size`; checked by a test).
pub(crate) const MAX_PADDED_RECORD: usize = 512;

/// Record `i` of a table of `stride`-byte records; one shorter than this
/// reader's (an older minor version's, `SectionKind::min_record_size`)
/// reads its missing fields as zero.
fn decode_at<T: Record>(bytes: &[u8], stride: usize, i: usize) -> T {
    let at = &bytes[i * stride..];
    if stride >= T::SIZE {
        return T::decode(at);
    }
    let mut padded = [0u8; MAX_PADDED_RECORD];
    let n = stride.min(MAX_PADDED_RECORD);
    padded[..n].copy_from_slice(&at[..n]);
    T::decode(&padded[..T::SIZE.min(MAX_PADDED_RECORD)])
}

/// A parsed, checksum-verified image (borrowing meta.img's bytes).
#[derive(Clone, Copy)]
pub struct Image<'a> {
    pub header: Header,
    bytes: &'a [u8],
    sections: [Option<DirEntry>; SECTION_SLOTS],
}

impl<'a> Image<'a> {
    /// The seals of memfd `idx` (files-table index) made only once the
    /// process's memory is mapped: F_SEAL_FUTURE_WRITE (and F_SEAL_SEAL
    /// with it) of a memfd the process maps shared and writable, a
    /// mapping made before the seal, which the kernel refuses to make
    /// after it. `cryo restore` seals the memfd it makes with the others;
    /// the shim adds these after its mappings (a sweep of stop 52: the
    /// shim's mapping failed EPERM past the point of no return).
    pub fn seals_after_mapping(&self, idx: u32) -> u32 {
        const FUTURE_WRITE: u32 = 0x10;
        const SEAL: u32 = 0x1;
        let Some(f) = self.files().get(idx as usize) else {
            return 0;
        };
        if f.seals & FUTURE_WRITE == 0 {
            return 0;
        }
        let may_write = crate::vmflag("mw");
        let mapped = self.vmas().iter().any(|v| {
            v.file == idx
                && v.kind == crate::vma_kind::FILE_SHARED
                && (v.prot & 2 != 0 || v.vmflags & may_write != 0)
        });
        if mapped {
            f.seals & (FUTURE_WRITE | SEAL)
        } else {
            0
        }
    }

    /// Parse meta.img: header, directory, section bounds, record sizes and
    /// every checksum. Call [`Image::validate`] next for semantic checks.
    pub fn parse(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        Self::parse_with(bytes, true)
    }

    /// Parse bytes that [`Image::parse`] has accepted before and that
    /// cannot have changed since (an owned, immutable copy): every
    /// structural check, no checksums. A multi-megabyte page-run table is
    /// not hashed again each time the image is looked at.
    pub fn parse_verified(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        Self::parse_with(bytes, false)
    }

    fn parse_with(bytes: &'a [u8], sums: bool) -> Result<Image<'a>, ImageError> {
        let len = bytes.len() as u64;
        if bytes.len() >= 8 && bytes[0..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if bytes.len() < HEADER_SIZE {
            return Err(ImageError::TooShort { len });
        }
        let major = u16::get(&bytes[8..]);
        let minor = u16::get(&bytes[10..]);
        if major != VERSION_MAJOR {
            return Err(ImageError::UnsupportedVersion { major, minor });
        }
        if sums && checksum(&bytes[..56]) != u64::get(&bytes[56..]) {
            return Err(ImageError::HeaderChecksum);
        }
        let header_size = u32::get(&bytes[12..]) as usize;
        if !(HEADER_SIZE..=4096).contains(&header_size) {
            return Err(ImageError::BadHeader("header size out of range"));
        }
        let header = Header {
            major,
            minor,
            section_count: u32::get(&bytes[16..]),
            flags: u32::get(&bytes[20..]),
            meta_len: u64::get(&bytes[24..]),
            pages_len: u64::get(&bytes[32..]),
            dir_checksum: u64::get(&bytes[40..]),
            body_checksum: u64::get(&bytes[48..]),
        };
        if header.meta_len > MAX_META_LEN {
            return Err(ImageError::TooLarge {
                len: header.meta_len,
            });
        }
        if header.meta_len != len {
            return Err(ImageError::LengthMismatch {
                header: header.meta_len,
                actual: len,
            });
        }
        if header.pages_len > MAX_PAGES_LEN || !header.pages_len.is_multiple_of(PAGE_SIZE) {
            return Err(ImageError::BadHeader("pages length not a page multiple"));
        }
        let n = header.section_count as usize;
        if n > MAX_SECTIONS {
            return Err(ImageError::TooManySections {
                count: header.section_count,
            });
        }
        let dir_end = header_size + n * DIR_ENTRY_SIZE;
        if dir_end > bytes.len() {
            return Err(ImageError::TooShort { len });
        }
        if sums && checksum(&bytes[header_size..]) != header.body_checksum {
            return Err(ImageError::BodyChecksum);
        }
        let dir = &bytes[header_size..dir_end];
        if sums && checksum(dir) != header.dir_checksum {
            return Err(ImageError::DirectoryChecksum);
        }
        let mut sections: [Option<DirEntry>; SECTION_SLOTS] = [None; SECTION_SLOTS];
        for i in 0..n {
            let e = DirEntry::decode(&dir[i * DIR_ENTRY_SIZE..]);
            let Some(kind) = SectionKind::from_u32(e.kind) else {
                continue; // unknown kind: a newer minor version; skip it
            };
            let slot = &mut sections[e.kind as usize];
            if slot.is_some() {
                return Err(ImageError::DuplicateSection { kind: e.kind });
            }
            if !e.offset.is_multiple_of(8) {
                return Err(ImageError::SectionMisaligned { kind: e.kind });
            }
            let need = kind.min_record_size() as u32;
            if e.record_size < need || e.record_size == 0 {
                return Err(ImageError::RecordTooShort {
                    section: kind.name(),
                    size: e.record_size,
                    need,
                });
            }
            if e.count > kind.max_count() {
                return Err(ImageError::TooManyRecords {
                    section: kind.name(),
                    count: e.count,
                });
            }
            let size = e
                .count
                .checked_mul(e.record_size as u64)
                .ok_or(ImageError::SectionOutOfBounds { kind: e.kind })?;
            let end = e
                .offset
                .checked_add(size)
                .ok_or(ImageError::SectionOutOfBounds { kind: e.kind })?;
            if e.offset < dir_end as u64 || end > len {
                return Err(ImageError::SectionOutOfBounds { kind: e.kind });
            }
            if sums && checksum(&bytes[e.offset as usize..end as usize]) != e.checksum {
                return Err(ImageError::SectionChecksum(kind.name()));
            }
            *slot = Some(e);
        }
        for kind in SectionKind::ALL {
            if kind.required() && sections[kind as usize].is_none() {
                return Err(ImageError::MissingSection(kind.name()));
            }
        }
        if sections[SectionKind::Process as usize].map(|e| e.count) != Some(1) {
            return Err(ImageError::Invalid("process section must hold one record"));
        }
        Ok(Image {
            header,
            bytes,
            sections,
        })
    }

    fn section_bytes(&self, kind: SectionKind) -> Option<(&'a [u8], DirEntry)> {
        let e = self.sections[kind as usize]?;
        let start = e.offset as usize;
        let end = start + (e.count as usize) * (e.record_size as usize);
        Some((&self.bytes[start..end], e))
    }

    /// A table of records (empty if the section is absent).
    pub fn table<T: Record>(&self, kind: SectionKind) -> Table<'a, T> {
        match self.section_bytes(kind) {
            Some((b, e)) => Table {
                bytes: b,
                stride: e.record_size as usize,
                count: e.count as usize,
                _t: core::marker::PhantomData,
            },
            None => Table::empty(),
        }
    }

    /// A byte-blob section (empty if absent).
    pub fn blob(&self, kind: SectionKind) -> &'a [u8] {
        self.section_bytes(kind).map(|(b, _)| b).unwrap_or(&[])
    }

    pub fn process(&self) -> Process {
        // parse() checked the section holds exactly one record.
        self.table::<Process>(SectionKind::Process)
            .get(0)
            .unwrap_or_default()
    }
    pub fn vmas(&self) -> Table<'a, Vma> {
        self.table(SectionKind::Vmas)
    }
    pub fn files(&self) -> Table<'a, FileId> {
        self.table(SectionKind::Files)
    }
    /// One checksum per block of sums.img (format 2.0).
    pub fn page_sums(&self) -> Table<'a, SumBlock> {
        self.table(SectionKind::PageSums)
    }
    pub fn page_runs(&self) -> Table<'a, PageRun> {
        self.table(SectionKind::PageRuns)
    }
    /// The main thread's xsave area (the section holds every thread's).
    pub fn xsave(&self) -> &'a [u8] {
        let x = self.blob(SectionKind::Xsave);
        let n = (self.process().xsave_size as usize).min(x.len());
        &x[..n]
    }
    pub fn auxv(&self) -> Table<'a, AuxvEntry> {
        self.table(SectionKind::Auxv)
    }
    pub fn sigactions(&self) -> Table<'a, SigAction> {
        self.table(SectionKind::SigActions)
    }
    pub fn rlimits(&self) -> Table<'a, Rlimit> {
        self.table(SectionKind::Rlimits)
    }
    pub fn fds(&self) -> Table<'a, Fd> {
        self.table(SectionKind::Fds)
    }
    pub fn timers(&self) -> Table<'a, PosixTimer> {
        self.table(SectionKind::Timers)
    }
    pub fn itimers(&self) -> Table<'a, Itimer> {
        self.table(SectionKind::Itimers)
    }

    pub fn pipes(&self) -> Table<'a, fds::Pipe> {
        self.table(SectionKind::Pipes)
    }
    pub fn extents(&self) -> Table<'a, fds::Extent> {
        self.table(SectionKind::Extents)
    }
    pub fn locks(&self) -> Table<'a, fds::Lock> {
        self.table(SectionKind::Locks)
    }
    pub fn creds(&self) -> Option<task::Creds> {
        self.table::<task::Creds>(SectionKind::Creds).get(0)
    }
    pub fn groups(&self) -> Table<'a, task::Group> {
        self.table(SectionKind::Groups)
    }
    pub fn task(&self) -> Option<task::TaskState> {
        self.table::<task::TaskState>(SectionKind::Task).get(0)
    }
    pub fn signals(&self) -> Table<'a, signals::QueuedSignal> {
        self.table(SectionKind::Signals)
    }
    pub fn inotify(&self) -> Table<'a, fds::InotifyWatch> {
        self.table(SectionKind::Inotify)
    }
    pub fn fanotify(&self) -> Table<'a, fds::FanotifyGroup> {
        self.table(SectionKind::Fanotify)
    }
    pub fn fanotify_marks(&self) -> Table<'a, fds::FanotifyMark> {
        self.table(SectionKind::FanotifyMarks)
    }
    pub fn sockets(&self) -> Table<'a, fds::Socket> {
        self.table(SectionKind::Sockets)
    }
    pub fn sockopts(&self) -> Table<'a, fds::SockOpt> {
        self.table(SectionKind::SockOpts)
    }
    /// (11.13) Multicast groups sockets joined.
    pub fn mcast_groups(&self) -> Table<'a, fds::McastGroup> {
        self.table(SectionKind::McastGroups)
    }
    /// Pseudo-terminal pairs whose master this process holds (4.1).
    pub fn ptys(&self) -> Table<'a, fds::Pty> {
        self.table(SectionKind::Ptys)
    }
    /// (7.0) SIGIO owners of open file descriptions.
    /// (8.0) System V shared memory attached.
    pub fn sysv_shm(&self) -> Table<'a, fds::SysvShm> {
        self.table(SectionKind::SysvShm)
    }
    /// (11.6) System V semaphore sets the process could use.
    pub fn sysv_sem(&self) -> Table<'a, fds::SysvSem> {
        self.table(SectionKind::SysvSem)
    }
    /// (11.6) System V message queues the process could use.
    pub fn sysv_msq(&self) -> Table<'a, fds::SysvMsq> {
        self.table(SectionKind::SysvMsq)
    }
    /// (9.0) TCP connections captured with TCP repair.
    pub fn file_handles(&self) -> Table<'a, fds::FileHandle> {
        self.table(SectionKind::FileHandles)
    }
    pub fn pid_refs(&self) -> Table<'a, task::PidRef> {
        self.table(SectionKind::PidRefs)
    }
    /// (11.0) The seccomp filters, in the order they were installed.
    pub fn seccomp(&self) -> Table<'a, task::SeccompInsn> {
        self.table(SectionKind::Seccomp)
    }
    /// (11.0) Every other thread's credentials, in `threads` order, when
    /// one differs from the main thread's (empty otherwise: every thread
    /// has the main thread's). A thread's supplementary groups are the
    /// main thread's (`ngroups` too).
    pub fn thread_creds(&self) -> Table<'a, task::Creds> {
        self.table(SectionKind::ThreadCreds)
    }
    /// Whether the seccomp filters need a privilege the restored process
    /// does not have to be installed (neither no_new_privs nor
    /// CAP_SYS_ADMIN: installed before the program dropped it), so that
    /// the shim installs them before it restores the credentials, and
    /// only a restore whose tracer suspends them can do that.
    pub fn seccomp_before_creds(&self) -> bool {
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        !self.seccomp().is_empty()
            && self.task().is_none_or(|t| t.no_new_privs != 1)
            && self.creds().is_none_or(|c| c.cap_eff & CAP_SYS_ADMIN == 0)
    }
    pub fn tcp_conns(&self) -> Table<'a, fds::TcpConn> {
        self.table(SectionKind::TcpConns)
    }
    /// (9.0) Sockets' classic BPF filters.
    pub fn sock_filters(&self) -> Table<'a, fds::SockFilterInsn> {
        self.table(SectionKind::SockFilters)
    }
    pub fn fd_owners(&self) -> Table<'a, fds::FdOwner> {
        self.table(SectionKind::FdOwners)
    }
    /// The processes captured with this one (root image of a tree; empty
    /// for a single process).
    pub fn tree(&self) -> Table<'a, crate::tree::TreeProc> {
        self.table(SectionKind::Tree)
    }
    pub fn tree_fds(&self) -> Table<'a, crate::tree::TreeFd> {
        self.table(SectionKind::TreeFds)
    }
    /// (11.9) Stopped children whose stop report the process had taken.
    pub fn taken_stops(&self) -> Table<'a, crate::tree::TakenStop> {
        self.table(SectionKind::TakenStops)
    }
    /// (11.11) AIO contexts, each with its ring's events.
    pub fn aio_rings(&self) -> Table<'a, fds::AioRing> {
        self.table(SectionKind::AioRings)
    }
    /// Whether the restored process (a tree's root) makes a process group
    /// of its own again, `setpgid(0, 0)`, when it is not the leader of
    /// the one it is restored in: it led its group, not its session (a
    /// session leader's `setsid` makes it lead both), and that group was
    /// not its terminal's foreground. A group of its own it made itself
    /// (GNU timeout, which ends its command by signalling its group,
    /// `kill(0, SIGTERM)`), or a shell's background job: restored in the
    /// group of a script that ran `cryo restore`, such a program signalled
    /// the script (a sweep of real programs, stop 45). The foreground
    /// job of an interactive shell is left in the group it is restored in,
    /// which is that shell's job and the terminal's foreground.
    pub fn leads_group_again(&self) -> bool {
        use crate::process_flags::{GROUP_LEADER, SESSION_LEADER};
        let p = self.process();
        p.flags & GROUP_LEADER != 0
            && p.flags & SESSION_LEADER == 0
            && self.terminal().is_none_or(|t| t.fg_pgrp != p.pid)
    }

    /// (11.10) The terminal at the process's fds 0-2, its modes and size.
    pub fn terminal(&self) -> Option<fds::Terminal> {
        self.table::<fds::Terminal>(SectionKind::Terminal).get(0)
    }
    pub fn tree_files(&self) -> Table<'a, crate::tree::TreeFile> {
        self.table(SectionKind::TreeFiles)
    }
    pub fn eventfds(&self) -> Table<'a, fds::EventFd> {
        self.table(SectionKind::EventFds)
    }
    pub fn timerfds(&self) -> Table<'a, fds::TimerFd> {
        self.table(SectionKind::TimerFds)
    }
    pub fn signalfds(&self) -> Table<'a, fds::SignalFd> {
        self.table(SectionKind::SignalFds)
    }
    pub fn epoll_items(&self) -> Table<'a, fds::EpollItem> {
        self.table(SectionKind::EpollItems)
    }
    pub fn threads(&self) -> Table<'a, threads::Thread> {
        self.table(SectionKind::Threads)
    }

    /// The sigaltstack (ss_sp, ss_size, ss_flags) of task `k` (0: the main
    /// thread, k + 1: the k-th entry of the threads table) as
    /// [`crate::frame_top`] is to see it ([`crate::unshared_alt`]).
    pub fn frame_alt(&self, k: usize) -> (u64, u64, u32) {
        let p = self.process();
        let alt_of = |k: usize| -> Option<(u64, u64, u32)> {
            if k == 0 {
                Some((p.sigaltstack_sp, p.sigaltstack_size, p.sigaltstack_flags))
            } else {
                let t = self.threads().get(k - 1)?;
                Some((t.sigaltstack_sp, t.sigaltstack_size, t.sigaltstack_flags))
            }
        };
        crate::unshared_alt(k, self.threads().len() + 1, alt_of)
    }

    /// The xsave area of thread `k` (0: the main thread, k + 1: the k-th
    /// entry of the threads table).
    pub fn xsave_of(&self, k: usize) -> &'a [u8] {
        let n = self.process().xsave_size as usize;
        let x = self.blob(SectionKind::Xsave);
        x.get(k * n..(k + 1) * n).unwrap_or(&[])
    }

    /// Every blob of pages.img that is not memory (pipe data, file
    /// contents), for checking.
    pub fn blobs(&self) -> impl Iterator<Item = fds::Blob> + 'a {
        let pipes = self.pipes();
        let ext = self.extents();
        let socks = self.sockets();
        let ptys = self.ptys();
        let sysv = self.sysv_shm();
        let tcp = self.tcp_conns();
        let sems = self.sysv_sem();
        let msqs = self.sysv_msq();
        let aio = self.aio_rings();
        pipes
            .iter()
            .map(|p| p.data)
            .chain(ext.iter().map(|e| e.data))
            .chain(socks.iter().map(|s| s.data))
            .chain(ptys.iter().flat_map(|t| [t.input, t.output]))
            .chain(sysv.iter().map(|s| s.data))
            .chain(tcp.iter().flat_map(|t| [t.sendq, t.recvq]))
            .chain(sems.iter().map(|s| s.values))
            .chain(msqs.iter().map(|q| q.messages))
            .chain(aio.iter().map(|r| r.events))
            .filter(|b| b.len > 0)
    }

    /// The restore gadgets, if the capture found them (format 1.1+).
    pub fn gadgets(&self) -> Option<Gadgets> {
        self.table::<Gadgets>(SectionKind::Gadgets).get(0)
    }

    /// Resolve a string reference (None if absent or invalid).
    pub fn str(&self, r: StrRef) -> Option<&'a str> {
        if r.is_none() {
            return None;
        }
        let s = self.blob(SectionKind::Strings);
        let start = r.off as usize;
        let end = start.checked_add(r.len as usize)?;
        core::str::from_utf8(s.get(start..end)?).ok()
    }
}
