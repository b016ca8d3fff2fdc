//! Building meta.img (std only). Page data is streamed to pages.img by the
//! capturer; this module only lays out the tables.

use crate::record::{Field, Record};
use crate::types::*;
use crate::{
    checksum, DirEntry, Header, DIR_ENTRY_SIZE, HEADER_SIZE, MAX_SECTIONS, VERSION_MAJOR,
    VERSION_MINOR,
};

/// Interns strings into the `Strings` section.
#[derive(Default, Debug)]
pub struct Strings {
    bytes: Vec<u8>,
    index: std::collections::HashMap<String, StrRef>,
}

impl Strings {
    /// Add a string (deduplicated) and return its reference.
    pub fn add(&mut self, s: &str) -> StrRef {
        if let Some(r) = self.index.get(s) {
            return *r;
        }
        let r = StrRef {
            off: self.bytes.len() as u32,
            len: s.len() as u32,
        };
        self.bytes.extend_from_slice(s.as_bytes());
        self.index.insert(s.to_owned(), r);
        r
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The string `r` refers to (lossy; empty if out of range).
    pub fn text(&self, r: StrRef) -> String {
        let (o, l) = (r.off as usize, r.len as usize);
        String::from_utf8_lossy(self.bytes.get(o..o + l).unwrap_or(&[])).into_owned()
    }
}

/// Everything meta.img holds, in owned form.
#[derive(Default, Debug)]
pub struct ImageBuilder {
    pub process: Process,
    pub vmas: Vec<Vma>,
    pub files: Vec<FileId>,
    pub page_runs: Vec<PageRun>,
    pub strings: Strings,
    pub xsave: Vec<u8>,
    pub auxv: Vec<AuxvEntry>,
    pub sigactions: Vec<SigAction>,
    pub rlimits: Vec<Rlimit>,
    pub fds: Vec<Fd>,
    pub timers: Vec<PosixTimer>,
    pub itimers: Vec<Itimer>,
    pub gadgets: Option<Gadgets>,
    /// Checksums of sums.img's blocks ([`sum_block_table`]).
    pub page_sums: Vec<SumBlock>,
    pub pipes: Vec<crate::fds::Pipe>,
    pub extents: Vec<crate::fds::Extent>,
    pub locks: Vec<crate::fds::Lock>,
    pub creds: Option<crate::task::Creds>,
    pub groups: Vec<crate::task::Group>,
    pub task: Option<crate::task::TaskState>,
    pub signals: Vec<crate::signals::QueuedSignal>,
    pub inotify: Vec<crate::fds::InotifyWatch>,
    pub eventfds: Vec<crate::fds::EventFd>,
    pub timerfds: Vec<crate::fds::TimerFd>,
    pub signalfds: Vec<crate::fds::SignalFd>,
    pub epoll_items: Vec<crate::fds::EpollItem>,
    pub threads: Vec<crate::threads::Thread>,
    pub fanotify: Vec<crate::fds::FanotifyGroup>,
    pub fanotify_marks: Vec<crate::fds::FanotifyMark>,
    pub sockets: Vec<crate::fds::Socket>,
    pub sockopts: Vec<crate::fds::SockOpt>,
    pub mcast_groups: Vec<crate::fds::McastGroup>,
    pub ptys: Vec<crate::fds::Pty>,
    pub fd_owners: Vec<crate::fds::FdOwner>,
    pub sysv_shm: Vec<crate::fds::SysvShm>,
    pub sysv_sem: Vec<crate::fds::SysvSem>,
    pub sysv_msq: Vec<crate::fds::SysvMsq>,
    pub taken_stops: Vec<crate::tree::TakenStop>,
    /// (11.10) The terminal at fds 0-2.
    pub terminal: Option<crate::fds::Terminal>,
    /// (11.11) AIO contexts.
    pub aio_rings: Vec<crate::fds::AioRing>,
    pub sock_filters: Vec<crate::fds::SockFilterInsn>,
    pub tcp_conns: Vec<crate::fds::TcpConn>,
    pub pid_refs: Vec<crate::task::PidRef>,
    pub seccomp: Vec<crate::task::SeccompInsn>,
    pub thread_creds: Vec<crate::task::Creds>,
    pub file_handles: Vec<crate::fds::FileHandle>,
    pub tree: Vec<crate::tree::TreeProc>,
    pub tree_fds: Vec<crate::tree::TreeFd>,
    pub tree_files: Vec<crate::tree::TreeFile>,
}

/// sums.img's bytes for the page checksums `sums` (in pages.img order).
pub fn sums_bytes(sums: &[u64]) -> Vec<u8> {
    sums.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The `page_sums` table for sums.img's bytes: one checksum per block.
pub fn sum_block_table(sums: &[u8]) -> Vec<SumBlock> {
    sums.chunks((SUMS_PER_BLOCK * 8) as usize)
        .map(|b| SumBlock {
            checksum: checksum(b),
        })
        .collect()
}

/// An encoded section: record size, record count, bytes.
type Encoded = (u32, u64, Vec<u8>);

fn table<T: Record>(items: &[T]) -> Encoded {
    let mut b = vec![0u8; items.len() * T::SIZE];
    for (i, it) in items.iter().enumerate() {
        it.encode(&mut b[i * T::SIZE..]);
    }
    (T::SIZE as u32, items.len() as u64, b)
}

impl ImageBuilder {
    /// Serialize to meta.img bytes. `pages_len` is the final size of pages.img.
    pub fn encode(&self, pages_len: u64) -> Vec<u8> {
        let blob = |b: &[u8]| (1u32, b.len() as u64, b.to_vec());
        let mut sections: Vec<(SectionKind, Encoded)> = vec![
            (
                SectionKind::Process,
                table(std::slice::from_ref(&self.process)),
            ),
            (SectionKind::Vmas, table(&self.vmas)),
            (SectionKind::Files, table(&self.files)),
            (SectionKind::PageRuns, table(&self.page_runs)),
            (SectionKind::Strings, blob(self.strings.bytes())),
            (SectionKind::Xsave, blob(&self.xsave)),
            (SectionKind::Auxv, table(&self.auxv)),
            (SectionKind::SigActions, table(&self.sigactions)),
            (SectionKind::Rlimits, table(&self.rlimits)),
            (SectionKind::Fds, table(&self.fds)),
            (SectionKind::Timers, table(&self.timers)),
            (SectionKind::Itimers, table(&self.itimers)),
            (SectionKind::PageSums, table(&self.page_sums)),
            (SectionKind::Pipes, table(&self.pipes)),
            (SectionKind::Extents, table(&self.extents)),
            (SectionKind::Locks, table(&self.locks)),
            (SectionKind::Groups, table(&self.groups)),
            (SectionKind::Signals, table(&self.signals)),
            (SectionKind::Inotify, table(&self.inotify)),
            (SectionKind::EventFds, table(&self.eventfds)),
            (SectionKind::TimerFds, table(&self.timerfds)),
            (SectionKind::SignalFds, table(&self.signalfds)),
            (SectionKind::EpollItems, table(&self.epoll_items)),
            (SectionKind::Threads, table(&self.threads)),
            (SectionKind::Fanotify, table(&self.fanotify)),
            (SectionKind::FanotifyMarks, table(&self.fanotify_marks)),
            (SectionKind::Sockets, table(&self.sockets)),
            (SectionKind::SockOpts, table(&self.sockopts)),
            (SectionKind::McastGroups, table(&self.mcast_groups)),
        ];
        if !self.ptys.is_empty() {
            sections.push((SectionKind::Ptys, table(&self.ptys)));
        }
        if !self.sysv_shm.is_empty() {
            sections.push((SectionKind::SysvShm, table(&self.sysv_shm)));
        }
        if !self.sysv_sem.is_empty() {
            sections.push((SectionKind::SysvSem, table(&self.sysv_sem)));
        }
        if !self.sysv_msq.is_empty() {
            sections.push((SectionKind::SysvMsq, table(&self.sysv_msq)));
        }
        if !self.taken_stops.is_empty() {
            sections.push((SectionKind::TakenStops, table(&self.taken_stops)));
        }
        if let Some(t) = &self.terminal {
            sections.push((SectionKind::Terminal, table(std::slice::from_ref(t))));
        }
        if !self.aio_rings.is_empty() {
            sections.push((SectionKind::AioRings, table(&self.aio_rings)));
        }
        if !self.tcp_conns.is_empty() {
            sections.push((SectionKind::TcpConns, table(&self.tcp_conns)));
        }
        if !self.thread_creds.is_empty() {
            sections.push((SectionKind::ThreadCreds, table(&self.thread_creds)));
        }
        if !self.seccomp.is_empty() {
            sections.push((SectionKind::Seccomp, table(&self.seccomp)));
        }
        if !self.pid_refs.is_empty() {
            sections.push((SectionKind::PidRefs, table(&self.pid_refs)));
        }
        if !self.file_handles.is_empty() {
            sections.push((SectionKind::FileHandles, table(&self.file_handles)));
        }
        if !self.sock_filters.is_empty() {
            sections.push((SectionKind::SockFilters, table(&self.sock_filters)));
        }
        if !self.fd_owners.is_empty() {
            sections.push((SectionKind::FdOwners, table(&self.fd_owners)));
        }
        if !self.tree.is_empty() {
            sections.push((SectionKind::Tree, table(&self.tree)));
            sections.push((SectionKind::TreeFds, table(&self.tree_fds)));
            sections.push((SectionKind::TreeFiles, table(&self.tree_files)));
        }
        if let Some(g) = &self.gadgets {
            sections.push((SectionKind::Gadgets, table(std::slice::from_ref(g))));
        }
        if let Some(c) = &self.creds {
            sections.push((SectionKind::Creds, table(std::slice::from_ref(c))));
        }
        if let Some(t) = &self.task {
            sections.push((SectionKind::Task, table(std::slice::from_ref(t))));
        }
        let dir_start = HEADER_SIZE;
        let mut off = dir_start + sections.len() * DIR_ENTRY_SIZE;
        let mut dir = vec![0u8; sections.len() * DIR_ENTRY_SIZE];
        let mut body = Vec::new();
        for (i, (kind, (rs, count, bytes))) in sections.iter().enumerate() {
            off = off.next_multiple_of(8);
            let e = DirEntry {
                kind: *kind as u32,
                record_size: *rs,
                count: *count,
                offset: off as u64,
                checksum: checksum(bytes),
            };
            e.encode(&mut dir[i * DIR_ENTRY_SIZE..]);
            let pad = off - (dir_start + dir.len() + body.len());
            body.extend(std::iter::repeat_n(0u8, pad));
            body.extend_from_slice(bytes);
            off += bytes.len();
        }
        let meta_len = (HEADER_SIZE + dir.len() + body.len()) as u64;
        let mut rest = dir.clone();
        rest.extend_from_slice(&body);
        let header = Header {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            section_count: sections.len() as u32,
            flags: 0,
            meta_len,
            pages_len,
            dir_checksum: checksum(&dir),
            body_checksum: checksum(&rest),
        };
        let mut out = Vec::with_capacity(meta_len as usize);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&rest);
        out
    }
}

/// Recompute the directory, section and header checksums in place, where the
/// layout still allows it: for tools and tests that edit an image on
/// purpose (an edit without resealing is refused as corrupt).
pub fn reseal(meta: &mut [u8]) {
    if meta.len() < HEADER_SIZE {
        return;
    }
    let n = (u32::get(&meta[16..]) as usize).min(MAX_SECTIONS);
    let hs = (u32::get(&meta[12..]) as usize).clamp(HEADER_SIZE, 4096);
    if hs + n * DIR_ENTRY_SIZE > meta.len() {
        return;
    }
    for i in 0..n {
        let at = hs + i * DIR_ENTRY_SIZE;
        let e = DirEntry::decode(&meta[at..]);
        let size = e.count.saturating_mul(e.record_size as u64);
        let end = e.offset.saturating_add(size);
        if end <= meta.len() as u64 {
            let sum = checksum(&meta[e.offset as usize..end as usize]);
            sum.put(&mut meta[at + 24..]);
        }
    }
    let dsum = checksum(&meta[hs..hs + n * DIR_ENTRY_SIZE]);
    dsum.put(&mut meta[40..]);
    let bsum = checksum(&meta[hs..]);
    bsum.put(&mut meta[48..]);
    let hsum = checksum(&meta[..56]);
    hsum.put(&mut meta[56..]);
}
