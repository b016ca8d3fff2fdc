//! Open files beyond the fd table itself: pipes (with the bytes buffered
//! in them), the contents of files that exist nowhere else (unlinked files,
//! memfds), and file locks.
//!
//! An fd ([`crate::Fd`]) names the first fd of its open file description
//! (`desc`), so fds that share an offset and flags (dup) share them again
//! after a restore. Kind-specific state hangs off `Fd::object`:
//! - PIPE / FIFO: index into the `pipes` table ([`Pipe`]);
//! - unlinked files and memfds: their [`crate::FileId`] (`Fd::file`) has
//!   `FILE_DELETED`/`FILE_MEMFD` and a range of [`Extent`]s, the file's
//!   bytes stored in pages.img (holes are not stored).
//!
//! Locks ([`Lock`]) are listed by the fd they were taken through.

use crate::record::record;

/// Bytes stored in pages.img (page aligned, padded with zeros to a page
/// multiple; every page has its checksum in sums.img like memory pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub struct Blob {
    /// Offset in pages.img (a multiple of 4096).
    pub off: u64,
    /// Length in bytes (0: nothing stored).
    pub len: u64,
}

impl crate::record::Field for Blob {
    const SIZE: usize = 16;
    fn put(&self, out: &mut [u8]) {
        self.off.put(&mut out[0..]);
        self.len.put(&mut out[8..]);
    }
    fn get(b: &[u8]) -> Self {
        Blob {
            off: u64::get(&b[0..]),
            len: u64::get(&b[8..]),
        }
    }
}

impl Blob {
    /// Pages of pages.img it occupies.
    pub fn pages(&self) -> u64 {
        self.len.div_ceil(crate::PAGE_SIZE)
    }
}

/// `Pipe::flags` bits.
pub mod pipe_flags {
    /// Every end of the pipe is in the process (or the missing end is
    /// closed everywhere): restore makes a new pipe with the same bytes.
    /// Without it, an end is held outside and needs `--inherit-fd`.
    pub const INSIDE: u32 = 1 << 0;
    /// Packet mode (pipe2 O_DIRECT).
    pub const PACKET: u32 = 1 << 1;
    /// No write end is open anywhere: readers see EOF after the data.
    pub const NO_WRITER: u32 = 1 << 2;
    /// No read end is open anywhere: writers get EPIPE.
    pub const NO_READER: u32 = 1 << 3;
    /// (11.17) A FIFO's read end no writer has opened since (no process
    /// holds a write end, and poll reports no hang-up, which the kernel
    /// reports to a reader only once a writer came and went while it was
    /// open): its path is opened again for reading alone, after its bytes
    /// (if a writer left some before this reader opened it) were put
    /// back through a reader of the moment.
    pub const NO_WRITER_YET: u32 = 1 << 4;
}

record! {
    /// A pipe or FIFO the process holds an end of.
    pub struct Pipe {
        /// Inode of the pipe (`pipe:[ino]`), or of the FIFO's file.
        pub ino: u64,
        /// Capacity in bytes (F_GETPIPE_SZ).
        pub size: u32,
        /// `pipe_flags` bits.
        pub flags: u32,
        /// The bytes buffered in it at capture, in order.
        pub data: Blob,
    }
}

/// The open flags of a description that F_SETFL sets, restored on it:
/// O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME and O_ASYNC (x86_64 values;
/// checked against libc in cryo-restore's tests).
pub const STATUS_FLAGS: u32 = 0o2000 | 0o4000 | 0o40000 | 0o1000000 | 0o20000;

/// Open flags that only matter when a file is created or first opened,
/// dropped when an fd is opened again: O_CREAT, O_EXCL, O_NOCTTY,
/// O_TRUNC, O_CLOEXEC and O_TMPFILE's own bit (O_NOCTTY is added back for
/// devices: a terminal must never become the restorer's controlling one).
pub const CREATE_ONLY_FLAGS: u32 = 0o100 | 0o200 | 0o400 | 0o1000 | 0o2000000 | 0o20000000;

/// `FileId::flags` bits.
pub mod file_flags {
    /// Unlinked: restored from its stored contents, unlinked again.
    pub const DELETED: u32 = 1 << 0;
    /// A memfd (`memfd_create`): restored as a memfd of the same name.
    pub const MEMFD: u32 = 1 << 1;
    /// (5.0) What a removed symbolic link pointed to, as `path` (the
    /// file of an O_PATH fd on it, kind SYMLINK): made again with it.
    pub const LINK: u32 = 1 << 2;
    /// (6.0) A small file on disk that the process maps shared and
    /// writable, and no fd of it refers to, with a
    /// copy of its bytes (`extents`): made again at its path from them if
    /// it is gone at restore (a JVM removes its hsperfdata file when it
    /// exits, so its image restored once could not be restored again).
    /// If it is there it must be the very file captured, as any mapped
    /// file.
    pub const KEPT: u32 = 1 << 3;
    /// (9.1) A file whose opened name was removed and that has a link
    /// in another directory (found by no name): reopened through its file
    /// handle (section `file_handles`), with open_by_handle_at on a mount
    /// of its device. `path` is empty: a reader that does not know this
    /// flag opens the fd's own removed name and refuses.
    pub const HANDLE: u32 = 1 << 4;
}

/// The longest file handle (MAX_HANDLE_SZ).
pub const MAX_HANDLE: usize = 128;

record! {
    /// (9.1) The file handle of a file of the files table (name_to_handle_at
    /// at capture): open_by_handle_at finds the inode again without a name.
    pub struct FileHandle {
        /// Index in the files table.
        pub file: u32,
        /// handle_type.
        pub kind: i32,
        /// handle_bytes (at most [`MAX_HANDLE`]).
        pub len: u32,
        pub _pad: u32,
        /// f_handle, little-endian words ([`FileHandle::bytes`]).
        pub words: [u64; MAX_HANDLE / 8],
    }
}

impl FileHandle {
    /// The handle of files-table entry `file`; None if it is too long.
    pub fn new(file: u32, kind: i32, bytes: &[u8]) -> Option<FileHandle> {
        if bytes.len() > MAX_HANDLE {
            return None;
        }
        Some(FileHandle {
            file,
            kind,
            len: bytes.len() as u32,
            _pad: 0,
            words: handle_words(bytes)?,
        })
    }
    /// f_handle's bytes: the first `len` of the result.
    pub fn bytes(&self) -> [u8; MAX_HANDLE] {
        handle_bytes(&self.words)
    }
}

record! {
    /// A stretch of a file's bytes stored in pages.img (a data extent of an
    /// unlinked file or memfd; what lies between extents is a hole).
    pub struct Extent {
        /// Offset in the file.
        pub file_off: u64,
        /// Where the bytes are.
        pub data: Blob,
    }
}

/// `Lock::kind` values.
pub mod lock_kind {
    /// flock(2): belongs to the open file description.
    pub const FLOCK: u32 = 1;
    /// fcntl(F_SETLK): belongs to the process.
    pub const POSIX: u32 = 2;
    /// fcntl(F_OFD_SETLK): belongs to the open file description.
    pub const OFD: u32 = 3;
    /// fcntl(F_SETLEASE): a read or write lease, held by the open file
    /// description (`write`: F_WRLCK); the range is the whole file.
    pub const LEASE: u32 = 4;
    /// (11.17) flock(2) held only through a mapping of its file, every fd
    /// of it closed (the mapping keeps the description, and the lock: a
    /// JVM's hsperfdata file). `fd` is the file's index in the files
    /// table; the shim takes it on the description it maps the file
    /// with, before it closes its fd.
    pub const FLOCK_MAPPING: u32 = 5;

    pub fn name(k: u32) -> &'static str {
        match k {
            FLOCK => "flock",
            POSIX => "posix",
            OFD => "ofd",
            LEASE => "lease",
            FLOCK_MAPPING => "flock (through a mapping)",
            _ => "unknown",
        }
    }
}

record! {
    /// A file lock held through `fd`.
    pub struct Lock {
        pub fd: i32,
        /// `lock_kind` value.
        pub kind: u32,
        /// 0 read (shared), 1 write (exclusive).
        pub write: u32,
        pub _pad: u32,
        /// First byte locked.
        pub start: u64,
        /// Last byte locked, u64::MAX for "to EOF" (flock: 0..MAX).
        pub end: u64,
    }
}

record! {
    /// One watch of an inotify instance (`Fd::desc` names the instance's
    /// first fd), in the order of the watch descriptors.
    pub struct InotifyWatch {
        /// The fds-table index of the instance's first fd.
        pub desc: u32,
        /// The watch descriptor the program holds (restored exactly).
        pub wd: i32,
        /// Events and flags (IN_ONESHOT, IN_EXCL_UNLINK ...) as inotify
        /// reports them.
        pub mask: u32,
        /// (6.0) 0: watched by `path`. Else 1 + the number of an fd of
        /// the process on the watched inode, a removed file it holds
        /// open (`path` then shows that fd's target): the watch is added
        /// again on the file made again for that fd.
        pub via: u32,
        /// The watched inode, by identity and by the path found for it at
        /// capture.
        pub dev: u64,
        pub ino: u64,
        pub path: crate::StrRef,
        /// (11.5) Its file handle as inotify reports it (type, length in
        /// bytes, bytes as in [`FileHandle::words`]); length 0: none
        /// (older images). Restore checks that the file at `path` has this
        /// handle: an inode number can be used again by a file made later
        /// (a directory removed and made again), its handle differs.
        pub handle_kind: i32,
        pub handle_len: u32,
        pub handle: [u64; MAX_HANDLE / 8],
    }
}

/// A file handle kept in a record as `MAX_HANDLE / 8` little-endian words
/// ([`FileHandle::words`]' layout): its bytes, the first `len` of the
/// result.
pub fn handle_bytes(words: &[u64; MAX_HANDLE / 8]) -> [u8; MAX_HANDLE] {
    let mut out = [0u8; MAX_HANDLE];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (words[i / 8] >> (8 * (i % 8))) as u8;
    }
    out
}

/// `bytes` as [`handle_bytes`] reads them (None if longer than
/// [`MAX_HANDLE`]).
pub fn handle_words(bytes: &[u8]) -> Option<[u64; MAX_HANDLE / 8]> {
    if bytes.len() > MAX_HANDLE {
        return None;
    }
    let mut words = [0u64; MAX_HANDLE / 8];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 8] |= (*b as u64) << (8 * (i % 8));
    }
    Some(words)
}

impl InotifyWatch {
    /// The handle's bytes: the first `handle_len` of the result (validated
    /// at most [`MAX_HANDLE`]).
    pub fn handle_bytes(&self) -> [u8; MAX_HANDLE] {
        handle_bytes(&self.handle)
    }

    /// Set the handle (none if longer than [`MAX_HANDLE`]).
    pub fn set_handle(&mut self, kind: i32, bytes: &[u8]) {
        if let Some(w) = handle_words(bytes) {
            (self.handle_kind, self.handle_len, self.handle) = (kind, bytes.len() as u32, w);
        }
    }
}

record! {
    /// A fanotify group (`desc`: its first fd in the fds table).
    pub struct FanotifyGroup {
        pub desc: u32,
        /// fanotify_init flags (class, reporting, limits), as fdinfo shows
        /// them (`FANOTIFY_INIT_FLAGS`, without FAN_CLOEXEC/FAN_NONBLOCK,
        /// which are the fd's own flags).
        pub flags: u32,
        /// fanotify_init event_f_flags: how event fds are opened.
        pub event_flags: u32,
        pub _pad: u32,
    }
}

/// `FanotifyMark::kind`.
pub mod fanotify_mark_kind {
    pub const INODE: u32 = 1;
    pub const MOUNT: u32 = 2;
    pub const FILESYSTEM: u32 = 3;
}

record! {
    /// One mark of a fanotify group: an inode, a mount or a filesystem,
    /// by identity and a path found for it at capture.
    pub struct FanotifyMark {
        /// The fds-table index of the group's first fd.
        pub desc: u32,
        /// `fanotify_mark_kind`.
        pub kind: u32,
        /// FAN_MARK_* flags the mark keeps (ignored-survives-modify,
        /// evictable, ignore), as fdinfo's mflags.
        pub mflags: u32,
        pub _pad: u32,
        pub mask: u64,
        pub ignored_mask: u64,
        /// The marked inode (inode marks), or the root of the mount or
        /// filesystem.
        pub dev: u64,
        pub ino: u64,
        pub path: crate::StrRef,
        /// (11.5) An inode mark's file handle, as for
        /// [`InotifyWatch::handle`] (length 0: none).
        pub handle_kind: i32,
        pub handle_len: u32,
        pub handle: [u64; MAX_HANDLE / 8],
    }
}

impl FanotifyMark {
    /// As [`InotifyWatch::handle_bytes`].
    pub fn handle_bytes(&self) -> [u8; MAX_HANDLE] {
        handle_bytes(&self.handle)
    }

    /// As [`InotifyWatch::set_handle`].
    pub fn set_handle(&mut self, kind: i32, bytes: &[u8]) {
        if let Some(w) = handle_words(bytes) {
            (self.handle_kind, self.handle_len, self.handle) = (kind, bytes.len() as u32, w);
        }
    }
}

record! {
    /// (7.0) Who gets SIGIO and SIGURG for an open file description
    /// (F_SETOWN_EX), and as which signal (F_SETSIG).
    pub struct FdOwner {
        /// Index in the fds table of the description's first fd.
        pub desc: u32,
        /// F_OWNER_TID 0 (the main thread only), F_OWNER_PID 1,
        /// F_OWNER_PGRP 2 (the process's own group only).
        pub kind: i32,
        /// The owner as captured (0: none).
        pub pid: i32,
        /// F_SETSIG (0: SIGIO).
        pub sig: i32,
        /// The owner's start time (clock ticks after boot) when it is a
        /// process outside the tree, checked at restore; else 0.
        pub start: u64,
    }
}

/// `SysvShm::flags` bits.
pub mod sysv_flags {
    /// Attached read-only (SHM_RDONLY).
    pub const RDONLY: u32 = 1 << 0;
    /// Marked for removal (IPC_RMID while attached: SHM_DEST): made again
    /// as a new private segment, with its id, and marked so again by the
    /// shim once it is attached.
    pub const REMOVED: u32 = 1 << 1;
    /// (11.15) Its bytes are stored once, with the record of the first
    /// attach of it in the tree's process order (this process's own
    /// first, or a process before it): `data` is empty here. Restore makes
    /// the segment again from that one.
    pub const BYTES_ELSEWHERE: u32 = 1 << 2;
}

record! {
    /// (8.0) A System V shared memory segment attached (shmat) at `start`:
    /// the mappings from `start` to `start + size` rounded up to pages
    /// (kind `vma_kind::SYSV`) are that attach. Restore attaches the
    /// segment with that id if it is still there, with the same key and
    /// size; else makes it again (same key, id, mode, owner, with `data`,
    /// its bytes at capture) before anything else.
    pub struct SysvShm {
        pub start: u64,
        pub size: u64,
        /// shmid (the maps inode).
        pub id: i32,
        /// The key (IPC_PRIVATE 0).
        pub key: i32,
        /// Permission bits (shm_perm.mode & 0o777).
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        /// `sysv_flags` bits.
        pub flags: u32,
        /// The segment's bytes at capture.
        pub data: Blob,
        /// (11.6) Its creator, as for [`SysvSem`] (older images: 0, not
        /// known, not checked).
        pub cuid: u32,
        pub cgid: u32,
    }
}

/// The header of an AIO ring (the kernel's `struct aio_ring`) and of each
/// of its events (`struct io_event`), in bytes.
pub const AIO_RING_HEADER: u64 = 32;
pub const AIO_EVENT: u64 = 32;

record! {
    /// (11.11) An AIO context (io_setup), captured only when the capture
    /// was told no request of the process is in flight (`cryo capture
    /// --aio-idle`: the kernel shows none from outside). Its ring (a
    /// mapping of kind `vma_kind::AIO` at `start`, `len` bytes) holds
    /// `nr` events; the events completed and not yet reaped are those from
    /// `head` to `tail` (modulo `nr`). The shim makes a context with a
    /// ring of the same size, brings its head and tail to these places
    /// (requests that complete at once, reaped up to `head`), writes the
    /// captured events over its own and moves the ring to `start`: the
    /// context's id is its address, so the program's id names it again.
    pub struct AioRing {
        pub start: u64,
        pub len: u64,
        /// Events the ring holds (`(len - AIO_RING_HEADER) / AIO_EVENT`).
        pub nr: u32,
        pub head: u32,
        pub tail: u32,
        /// Reserved (0).
        pub flags: u32,
        /// The ring's events at capture, every one of its `nr` (bytes
        /// `AIO_RING_HEADER..len` of the ring).
        pub events: Blob,
    }
}

impl AioRing {
    /// The events the program has not reaped.
    pub fn unreaped(&self) -> u32 {
        if self.nr == 0 {
            return 0;
        }
        (self.tail + self.nr - self.head % self.nr) % self.nr
    }
}

record! {
    /// (11.6) A System V semaphore set the process could use (its
    /// permissions let the process's credentials read or alter it: the
    /// kernel shows no more which sets a process uses, only their ids in
    /// its memory). Restore leaves a set still there with the same key and
    /// size alone (it is shared, as a file is) and makes one gone again:
    /// the same id, key, mode, owner, and `values`.
    pub struct SysvSem {
        /// semid.
        pub id: i32,
        /// The key (IPC_PRIVATE 0).
        pub key: i32,
        /// Permission bits (sem_perm.mode & 0o777).
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        /// Its creator (cuid, cgid), whom IPC_SET cannot change: one made
        /// again is made by the restorer.
        pub cuid: u32,
        pub cgid: u32,
        /// Semaphores in the set (1 or more).
        pub nsems: u32,
        /// Their values at capture: `nsems` u16, little-endian.
        pub values: Blob,
    }
}

record! {
    /// (11.6) A System V message queue the process could use (as for
    /// [`SysvSem`]), with the messages in it at capture. Restore leaves a
    /// queue still there with the same key alone and makes one gone
    /// again: the same id, key, mode, owner, byte limit and messages.
    pub struct SysvMsq {
        /// msqid.
        pub id: i32,
        /// The key (IPC_PRIVATE 0).
        pub key: i32,
        /// Permission bits (msg_perm.mode & 0o777).
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        /// Its creator, as for [`SysvSem`].
        pub cuid: u32,
        pub cgid: u32,
        /// Messages in `messages`.
        pub count: u32,
        /// msg_qbytes: the most bytes the queue holds.
        pub qbytes: u64,
        /// The messages, oldest first, each its type (i64), its length
        /// (u64), its bytes, then zeros to a multiple of 8; all
        /// little-endian ([`sysv_messages`] reads them).
        pub messages: Blob,
    }
}

/// The messages of a [`SysvMsq`]'s blob, `(type, bytes)` oldest first;
/// None if the blob does not hold exactly `count` well-formed messages.
#[cfg(any(feature = "std", test))]
pub fn sysv_messages(blob: &[u8], count: u32) -> Option<std::vec::Vec<(i64, &[u8])>> {
    let mut out = std::vec::Vec::new();
    let mut at = 0usize;
    while at < blob.len() {
        let head = blob.get(at..at.checked_add(16)?)?;
        let kind = i64::from_le_bytes(head[..8].try_into().ok()?);
        let len = usize::try_from(u64::from_le_bytes(head[8..].try_into().ok()?)).ok()?;
        let start = at + 16;
        let end = start.checked_add(len)?;
        out.push((kind, blob.get(start..end)?));
        at = end.next_multiple_of(8);
        if kind <= 0 || out.len() > count as usize {
            return None;
        }
    }
    (at == blob.len() && out.len() == count as usize).then_some(out)
}

/// A [`SysvMsq`]'s blob for `messages` (see [`sysv_messages`]).
#[cfg(any(feature = "std", test))]
pub fn sysv_messages_blob<'a>(
    messages: impl IntoIterator<Item = (i64, &'a [u8])>,
) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::new();
    for (kind, bytes) in messages {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

record! {
    /// (9.0) One instruction of a socket's classic BPF filter
    /// (SO_ATTACH_FILTER, read back with SO_GET_FILTER), in order: a
    /// socket's instructions are consecutive records.
    pub struct SockFilterInsn {
        /// Index in the sockets table.
        pub sock: u32,
        /// `filter_flags` (the same on every instruction of a socket).
        pub flags: u32,
        /// `struct sock_filter`: code (16 bits), jt, jf (8 bits each), k.
        pub code: u32,
        pub jt: u32,
        pub jf: u32,
        pub k: u32,
    }
}

record! {
    /// (9.0) What TCP repair read of an established connection (a socket
    /// in state `socket_state::REPAIRED`), to make it again in repair
    /// mode: no packet is sent, the peer sees the same connection.
    pub struct TcpConn {
        /// Index in the sockets table.
        pub sock: u32,
        /// TCP_INFO's `tcpi_options`: `tcp_opts` bits.
        pub options: u32,
        /// TCP_QUEUE_SEQ of the send queue: the sequence number after the
        /// last byte queued to send.
        pub snd_seq: u32,
        /// TCP_QUEUE_SEQ of the receive queue: the next sequence number
        /// expected.
        pub rcv_seq: u32,
        /// TCP_MAXSEG.
        pub mss: u32,
        /// Window scale shifts (TCP_INFO), each end's.
        pub snd_wscale: u32,
        pub rcv_wscale: u32,
        /// TCP_TIMESTAMP: the connection's timestamp clock at capture.
        pub timestamp: u32,
        /// TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd,
        /// rcv_wup.
        pub window: [u32; 5],
        /// Bytes at the end of `sendq` never sent (SIOCOUTQNSD): sent
        /// again normally once the connection is out of repair.
        pub unsent: u32,
        /// The send queue (sent and not yet acknowledged, then unsent).
        pub sendq: Blob,
        /// What waited to be read.
        pub recvq: Blob,
    }
}

/// `TcpConn::options` bits (TCPI_OPT_*, and cryo's own above them).
pub mod tcp_opts {
    pub const TIMESTAMPS: u32 = 1;
    pub const SACK: u32 = 2;
    pub const WSCALE: u32 = 4;
    /// (cryo) Locked at capture (`netlock`): the restore unlocks it once
    /// it is made again.
    pub const LOCKED: u32 = 1 << 8;
}

/// `SockFilterInsn::flags` bits.
pub mod filter_flags {
    /// The filter was locked (SO_LOCK_FILTER): it cannot be changed or
    /// taken off.
    pub const LOCKED: u32 = 1 << 0;
}

/// The most instructions a classic BPF filter may have (BPF_MAXINSNS).
pub const MAX_FILTER_INSNS: usize = 4096;

record! {
    /// An eventfd's counter and mode (Fd::object indexes these).
    pub struct EventFd {
        pub count: u64,
        /// EFD_SEMAPHORE.
        pub semaphore: u32,
        pub _pad: u32,
    }
}

record! {
    /// A timerfd: its clock, the time left to its next expiry and its
    /// interval at capture (re-armed relative to the restore), and the
    /// expirations not yet read.
    pub struct TimerFd {
        pub clock: i32,
        /// timerfd_settime flags (TFD_TIMER_ABSTIME, ..._CANCEL_ON_SET).
        pub settime_flags: u32,
        pub ticks: u64,
        pub value_sec: i64,
        pub value_nsec: i64,
        pub interval_sec: i64,
        pub interval_nsec: i64,
    }
}

impl TimerFd {
    /// How restore arms the timer again: `(settime flags, [interval sec,
    /// interval nsec, value sec, value nsec])`, given `now` on its clock
    /// (asked only for an absolute timer).
    ///
    /// A periodic timer whose expiration was due at capture (fdinfo shows
    /// it_value 0 until the expirations are read, and the kernel re-arms
    /// it only on that read) is armed one interval on: setting a zero
    /// value would disarm it for good (seen: the threaded GHC RTS's
    /// ticker then blocks in read() forever and the program hangs at
    /// exit). An absolute timer gets the time it had left, from now.
    pub fn rearm(&self, now: impl FnOnce() -> (i64, i64)) -> (u32, [i64; 4]) {
        const TFD_TIMER_ABSTIME: u32 = 1;
        let interval = (self.interval_sec, self.interval_nsec);
        let mut value = if (self.value_sec, self.value_nsec) == (0, 0) && interval != (0, 0) {
            interval
        } else {
            (self.value_sec, self.value_nsec)
        };
        let abs = self.settime_flags & TFD_TIMER_ABSTIME != 0;
        if abs && value != (0, 0) {
            let (now_sec, now_nsec) = now();
            let ns = (now_nsec + value.1) as u64;
            value = (
                now_sec + value.0 + (ns / 1_000_000_000) as i64,
                (ns % 1_000_000_000) as i64,
            );
        }
        let flags = if abs { self.settime_flags } else { 0 };
        (flags, [interval.0, interval.1, value.0, value.1])
    }
}

record! {
    /// A signalfd's mask.
    pub struct SignalFd {
        pub mask: u64,
    }
}

record! {
    /// One file an epoll instance watches: the fd number it was added
    /// under (which the image's fd table has, as the same file), its
    /// events and data.
    pub struct EpollItem {
        /// The fds-table index of the epoll instance's first fd.
        pub desc: u32,
        pub tfd: i32,
        pub events: u32,
        /// (6.0) 0: the item's file is open at `tfd`. Else the item's fd
        /// was closed (or another file is open at it now) and this is 1 +
        /// the number of an fd of the same process with the item's open
        /// file description: restore puts it at `tfd` for the moment of
        /// the registration. (11.2) [`EPOLL_VIA_ELSEWHERE`]: no fd of
        /// this process has the item's file.
        pub via: u32,
        pub data: u64,
    }
}

impl EpollItem {
    /// An EPOLLONESHOT item that fired and was reported: the kernel keeps
    /// only its flags then (`EP_PRIVATE_BITS`: EPOLLONESHOT, EPOLLET,
    /// EPOLLWAKEUP, EPOLLEXCLUSIVE) until the program re-arms it with
    /// EPOLL_CTL_MOD. An item added anew has EPOLLERR and EPOLLHUP at
    /// least (the kernel adds them), so these events come only from a
    /// firing: a restore adds it with every event ([`epoll::ANY`]) and
    /// takes its report, so that it is disabled again.
    pub fn disabled(&self) -> bool {
        self.events & epoll::ONESHOT != 0 && self.events & !epoll::PRIVATE == 0
    }
}

/// epoll's event bits (`<sys/epoll.h>`) a restore uses.
pub mod epoll {
    pub const ONESHOT: u32 = 1 << 30;
    /// The flags of an item, not events: EPOLLEXCLUSIVE, EPOLLWAKEUP,
    /// EPOLLONESHOT, EPOLLET.
    pub const PRIVATE: u32 = (1 << 28) | (1 << 29) | (1 << 30) | (1 << 31);
    /// Every event a file's poll can report: EPOLLIN, EPOLLPRI, EPOLLOUT,
    /// EPOLLERR, EPOLLHUP, EPOLLRDNORM, EPOLLRDBAND, EPOLLWRNORM,
    /// EPOLLWRBAND, EPOLLMSG, EPOLLRDHUP.
    pub const ANY: u32 =
        0x001 | 0x002 | 0x004 | 0x008 | 0x010 | 0x040 | 0x080 | 0x100 | 0x200 | 0x400 | 0x2000;
}

/// `EpollItem::via` (format 11.2): no fd of this process has the item's
/// file; another process of the tree that holds the same epoll set does,
/// and makes it (this process takes that one). A restore of this process
/// alone cannot register the item, and refuses.
pub const EPOLL_VIA_ELSEWHERE: u32 = u32::MAX;

/// `Socket::state` values.
pub mod socket_state {
    /// Made with socket(2), never bound.
    pub const UNBOUND: u32 = 1;
    /// Bound to `addr`, not listening, not connected.
    pub const BOUND: u32 = 2;
    /// Bound to `addr` and listening (`backlog`), no connection waiting.
    pub const LISTENING: u32 = 3;
    /// A datagram socket connected to `peer` (bound to `addr` if it was).
    pub const CONNECTED: u32 = 4;
    /// One end of a unix socket pair whose other end (`pair`) is in the
    /// process too (NO_INDEX: in another process of the tree); `data` is
    /// what waits to be read from this end. (5.0) A stream connection made
    /// through a named socket is a pair whose ends keep `addr` and `peer`.
    pub const PAIR: u32 = 5;
    /// (5.0) One end of a unix stream pair or connection whose other end
    /// was closed: `data` is what is left to read before end of file.
    pub const WIDOWED: u32 = 6;
    /// (6.0) A unix stream or seqpacket socket whose connection waits in
    /// the queue of listener `pair` (of the process), not yet accepted,
    /// nothing sent on it; `backlog` is its place in that queue.
    pub const PENDING: u32 = 7;
    /// (9.0) An established TCP connection to a socket outside the
    /// captured processes, captured with TCP repair (`cryo capture
    /// --tcp-established`): `addr` and `peer` are its ends, its sequence
    /// numbers, options, window and queues a [`super::TcpConn`].
    pub const REPAIRED: u32 = 8;
    /// (11.14) A unix socket at fd 0-2 connected to a socket outside the
    /// captured processes (node's child_process, a systemd service's
    /// journal), nothing queued from it, not shut down: a restore gives
    /// its own fd in its place, as it does for a pipe to outside there;
    /// it cannot be made again (`--restore-stdio` naming it is refused).
    pub const OUTSIDE: u32 = 9;

    pub fn name(s: u32) -> &'static str {
        match s {
            UNBOUND => "unbound",
            BOUND => "bound",
            LISTENING => "listening",
            CONNECTED => "connected",
            PAIR => "pair",
            WIDOWED => "other end closed",
            PENDING => "connecting, not yet accepted",
            REPAIRED => "established (TCP repair)",
            OUTSIDE => "connected outside (the restore's own in its place)",
            _ => "unknown",
        }
    }
}

record! {
    /// A socket (`Fd::object` of a SOCKET fd; fds of one description
    /// share it).
    pub struct Socket {
        /// AF_UNIX, AF_INET or AF_INET6.
        pub family: u32,
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
        pub sock_type: u32,
        pub protocol: u32,
        /// `socket_state` value.
        pub state: u32,
        /// listen(2) backlog (LISTENING).
        pub backlog: u32,
        /// PAIR: index of the other end in this table; PENDING: the
        /// listener's; CONNECTED with `socket_flags::GHOST_PEER`: the
        /// socket it is connected to; else NO_INDEX.
        pub pair: u32,
        /// Length of `addr` (getsockname; 0: unbound).
        pub addr_len: u32,
        /// Length of `peer` (getpeername; 0: none).
        pub peer_len: u32,
        /// The socket's own address, a sockaddr as the kernel gives it.
        pub addr: [u64; 16],
        /// The address it is connected to (CONNECTED).
        pub peer: [u64; 16],
        /// PAIR, stream: the bytes waiting to be read from this end.
        pub data: Blob,
        /// (5.0) PAIR: how the end was shut down (shutdown(2), as
        /// unix_diag shows it: 1 for reading, 2 for writing); (7.0) a
        /// UDP socket's too.
        pub shutdown: u32,
        /// (5.0) `socket_flags` bits.
        pub flags: u32,
    }
}

/// `Socket::flags` bits.
pub mod socket_flags {
    /// A TCP pair's end that a listener accepted (its port is a listening
    /// socket's): restore makes it the accepting end again.
    pub const ACCEPTED: u32 = 1 << 0;
    /// (6.0) Bound to an address this machine did not have at capture
    /// (IP_FREEBIND at the bind): bound so again.
    pub const FOREIGN: u32 = 1 << 1;
    /// (8.0) A unix stream pair's end whose queue had files in flight:
    /// its `data` is framed as a datagram pair's is, each run of bytes
    /// without files a message, and each skb that carried files a
    /// message with them, sent again one `sendmsg` each.
    pub const FRAMED: u32 = 1 << 2;
    /// (10.0) A unix socket bound to a relative path (the kernel keeps
    /// the name as given): bound again from the directory it was resolved
    /// in, the directory of its socket file (`Fd::file`, an absolute path
    /// ending in the name), so that it reads the same name.
    pub const RELATIVE: u32 = 1 << 3;
    /// (10.0) A unix socket whose file was removed (or replaced) since
    /// its bind: bound again at its name, and that file removed at once
    /// (another file at the name is moved aside for the moment).
    pub const GHOST: u32 = 1 << 4;
    /// (11.1) A unix datagram socket (CONNECTED) connected to the GHOST
    /// socket `pair` of the process: its name leads to nothing (or to
    /// another file) now, so restore connects it while that socket is
    /// bound there again, before the file is removed. `pair` NO_INDEX: a
    /// ghost of another process of the tree, which `cryo restore` makes
    /// and keeps the file of until every process has its fds.
    pub const GHOST_PEER: u32 = 1 << 5;
    /// (11.9) A unix socket whose file was renamed since its bind (haproxy
    /// binds `admin.sock.PID.tmp`, then renames it to `admin.sock`): its
    /// name stays the bind's, its file is at the path of its socket file
    /// (`Fd::file`). Bound again at its name, then its file renamed there.
    pub const RENAMED: u32 = 1 << 6;
    /// Every bit a reader of this version knows.
    pub const ALL: u32 = ACCEPTED | FOREIGN | FRAMED | RELATIVE | GHOST | GHOST_PEER | RENAMED;
}

/// The bytes of a sockaddr held in a `[u64; 16]` (little-endian words).
pub fn sockaddr_bytes(words: &[u64; 16], len: u32) -> ([u8; 128], usize) {
    let mut out = [0u8; 128];
    for (i, w) in words.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    (out, (len as usize).min(128))
}

/// A sockaddr's bytes as `[u64; 16]` (the inverse of [`sockaddr_bytes`]).
pub fn sockaddr_words(bytes: &[u8]) -> [u64; 16] {
    let mut w = [0u64; 16];
    for (i, c) in bytes.chunks(8).take(16).enumerate() {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        w[i] = u64::from_le_bytes(b);
    }
    w
}

record! {
    /// (11.13) A multicast group a UDP socket had joined, with no source
    /// filter (a filtered one is refused at capture): joined again on the
    /// device of the same name. The kernel lists groups per device
    /// (/proc/net/igmp, igmp6), and a socket tells it is a member of one
    /// when asked (getsockopt MCAST_MSFILTER).
    pub struct McastGroup {
        /// Index in the sockets table.
        pub sock: u32,
        /// The device's index at capture.
        pub ifindex: u32,
        /// AF_INET or AF_INET6: the group's family (an IPv6 socket may
        /// join IPv4 groups).
        pub family: u32,
        pub _pad: u32,
        /// The group's address in network order (the first 4 bytes of an
        /// IPv4 group).
        pub group: [u8; 16],
        /// The device's name, NUL-padded (IFNAMSIZ).
        pub dev: [u8; 16],
    }
}

record! {
    /// One socket option, as getsockopt(2) gave it at capture; restore
    /// sets it where a new socket differs, and checks it took.
    pub struct SockOpt {
        /// Index in the sockets table.
        pub sock: u32,
        pub level: i32,
        pub name: i32,
        /// Bytes of `val` used (at most 16).
        pub len: u32,
        pub val: [u64; 2],
    }
}

impl McastGroup {
    /// "GROUP on DEVICE".
    #[cfg(feature = "std")]
    pub fn display(&self) -> std::string::String {
        use std::string::ToString;
        let n = self.dev.iter().position(|&c| c == 0).unwrap_or(16);
        let dev = std::string::String::from_utf8_lossy(&self.dev[..n]);
        let g = if self.family == 2 {
            std::net::Ipv4Addr::from([self.group[0], self.group[1], self.group[2], self.group[3]])
                .to_string()
        } else {
            std::net::Ipv6Addr::from(self.group).to_string()
        };
        std::format!("{g} on {dev}")
    }
}

/// A sockaddr for people: `127.0.0.1:6379`, `[::1]:80`, `/run/x.sock`,
/// `@abstract` (a NUL in an abstract name shown as `@`), `unnamed`.
#[cfg(feature = "std")]
pub fn sockaddr_display(b: &[u8]) -> std::string::String {
    use std::format;
    use std::string::ToString;
    let family = b.get(..2).map_or(0, |f| u16::from_ne_bytes([f[0], f[1]]));
    let port = |b: &[u8]| b.get(2..4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    match family as i32 {
        2 if b.len() >= 8 => format!("{}.{}.{}.{}:{}", b[4], b[5], b[6], b[7], port(b)),
        10 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            format!("[{}]:{}", std::net::Ipv6Addr::from(a), port(b))
        }
        1 => {
            let path = &b[2..];
            if path.is_empty() {
                "unnamed".to_string()
            } else if path[0] == 0 {
                let p: std::string::String = path[1..]
                    .iter()
                    .map(|&c| if c == 0 { '@' } else { c as char })
                    .collect();
                format!("@{p}")
            } else {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                std::string::String::from_utf8_lossy(&path[..end]).into_owned()
            }
        }
        0 => "unbound".to_string(),
        // (8.0) struct sockaddr_nl: family, pad, port id, groups.
        16 if b.len() >= 12 => {
            let word = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            match (word(4), word(8)) {
                (0, 0) => "netlink unbound".to_string(),
                (port, 0) => format!("netlink port {port}"),
                (port, groups) => format!("netlink port {port} groups {groups:#x}"),
            }
        }
        f => format!("(address family {f})"),
    }
}

/// `Pty::flags` bits.
pub mod pty_flags {
    /// The slave could not be opened yet (unlockpt not called: TIOCGPTLCK).
    pub const LOCKED: u32 = 1 << 0;
    /// The master is in packet mode (TIOCPKT).
    pub const PACKET: u32 = 1 << 1;
    /// The terminal is in exclusive mode (TIOCEXCL).
    pub const EXCLUSIVE: u32 = 1 << 2;
}

record! {
    /// A pseudo-terminal pair whose master this process holds and whose
    /// every end is in the captured processes (`Fd::object` of a PTY fd).
    /// Restore makes a new pair (its number is whatever devpts gives),
    /// with the same settings and the bytes that waited in it. In a tree,
    /// every holder of the master has the record; one of them has the
    /// bytes.
    pub struct Pty {
        /// Its number at capture (/dev/pts/N): slave fds (PTY_SLAVE) name
        /// it through their `rdev`.
        pub index: u32,
        /// `pty_flags` bits.
        pub flags: u32,
        /// The terminal's termios (the kernel's struct termios).
        pub iflag: u32,
        pub oflag: u32,
        pub cflag: u32,
        pub lflag: u32,
        pub line: u32,
        /// Its speeds (termios2: c_ispeed, c_ospeed).
        pub ispeed: u32,
        pub ospeed: u32,
        /// c_cc (19 used on Linux).
        pub cc: [u8; 32],
        /// Window size (TIOCGWINSZ).
        pub rows: u32,
        pub cols: u32,
        pub xpixel: u32,
        pub ypixel: u32,
        /// The session whose controlling terminal it is (0: none), and
        /// that session's foreground process group.
        pub sid: u32,
        pub fg_pgrp: u32,
        /// Typed and not read yet: the bytes waiting on the slave side,
        /// as the line discipline keeps them (after input processing).
        pub input: Blob,
        /// Written by the slave side and not read by the master yet
        /// (after output processing).
        pub output: Blob,
        /// The slave's owner and permission bits (devpts gives a new pty
        /// its opener's; grantpt and fchown change them).
        pub uid: u32,
        pub gid: u32,
        pub mode: u32,
        pub _pad: u32,
    }
}

record! {
    /// (11.10) The terminal at the process's fds 0-2 (the first of them
    /// that is one) when it is not a pty of the tree: its modes and size
    /// at capture. A program that set its terminal's modes (less and vim
    /// turn off canonical input and echo, `read -s` echo) reads a
    /// terminal in those modes; the restore's terminal, at the same fd,
    /// gets them when the restore runs in its foreground, and the
    /// foreground gets SIGWINCH when its size differs (the program draws
    /// again, as after a resize).
    pub struct Terminal {
        /// The fd (0-2) it was found at.
        pub fd: u32,
        /// Reserved (0).
        pub flags: u32,
        /// Its foreground process group at capture (TIOCGPGRP; 0: none
        /// or unknown). One of a tree's groups other than its root's
        /// (less run by an interactive bash) is made the foreground of
        /// the restore's terminal again.
        pub fg_pgrp: u32,
        /// Its termios, as [`Pty`]'s.
        pub iflag: u32,
        pub oflag: u32,
        pub cflag: u32,
        pub lflag: u32,
        pub line: u32,
        pub ispeed: u32,
        pub ospeed: u32,
        pub cc: [u8; 32],
        /// Window size (TIOCGWINSZ).
        pub rows: u32,
        pub cols: u32,
        pub xpixel: u32,
        pub ypixel: u32,
    }
}

impl Terminal {
    /// The program had turned canonical input off (less, vim, top, a
    /// shell's line editor): it draws the screen itself, and restored on
    /// a terminal showing something else it is sent a SIGWINCH, which
    /// makes each of those draw it all again, even at the same size.
    pub fn draws_itself(&self) -> bool {
        const ICANON: u32 = 0o2;
        self.lflag & ICANON == 0
    }

    /// The process group of the tree (`recs`, its root first) that was
    /// the terminal's foreground at capture, when it is not the root's:
    /// a live process of the tree is in it. None: the root's group, or
    /// one outside the tree.
    pub fn other_foreground(
        &self,
        mut recs: impl Iterator<Item = crate::tree::TreeProc>,
    ) -> Option<u32> {
        let root = recs.next()?;
        let fg = self.fg_pgrp;
        (fg != 0
            && fg != root.pgid
            && recs.any(|r| r.pgid == fg && r.state == crate::tree::proc_state::LIVE))
        .then_some(fg)
    }
}

impl Pty {
    /// The index of the pty whose slave has device number `rdev` (devpts:
    /// majors 136-143), if it is one.
    pub fn index_of_rdev(rdev: u64) -> Option<u32> {
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        (136..144)
            .contains(&major)
            .then(|| ((major - 136) * 256 + minor) as u32)
    }
}

/// How the bytes that waited in a terminal are put back into one (by
/// capture, which has to read them to copy them, and by restore): written
/// into the other end with termios that make the line discipline keep
/// each byte as it is (no translation, no echo, no signals), then the
/// terminal's own termios set again. Linux's termios bits (asm-generic).
// (Most are used by the std-only replay; the shim sees the module too.)
#[cfg_attr(not(any(feature = "std", test)), allow(dead_code))]
pub mod pty_replay {
    const BRKINT: u32 = 0o2;
    const PARMRK: u32 = 0o10;
    const ISTRIP: u32 = 0o40;
    const INLCR: u32 = 0o100;
    const IGNCR: u32 = 0o200;
    const ICRNL: u32 = 0o400;
    const IUCLC: u32 = 0o1000;
    const IXON: u32 = 0o2000;
    const IMAXBEL: u32 = 0o20000;
    const OPOST: u32 = 0o1;
    const ISIG: u32 = 0o1;
    pub const ICANON: u32 = 0o2;
    const ECHO: u32 = 0o10;
    const ECHOE: u32 = 0o20;
    const ECHOK: u32 = 0o40;
    const ECHONL: u32 = 0o100;
    const IEXTEN: u32 = 0o100000;
    pub const EXTPROC: u32 = 0o200000;
    const VERASE: usize = 2;
    const VKILL: usize = 3;
    const VEOF: usize = 4;
    pub const VTIME: usize = 5;
    pub const VMIN: usize = 6;
    const VSTART: usize = 8;
    const VSTOP: usize = 9;
    const VREPRINT: usize = 12;
    const VWERASE: usize = 14;
    const VLNEXT: usize = 15;
    const VEOL2: usize = 16;

    /// How input waiting on a terminal is written back through its
    /// master.
    #[cfg(any(feature = "std", test))]
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Replay {
        /// The bytes to write: each one the line discipline would act on
        /// quoted with the literal-next character, an end-of-file mark as
        /// the end-of-file character.
        pub bytes: std::vec::Vec<u8>,
        /// IEXTEN on for the write (literal-next needs it).
        pub iexten: bool,
        /// The terminal will hold exactly what it held. Not when a NUL
        /// was in canonical input (an end-of-file mark reads as NUL, and
        /// is written back as one: a NUL typed as data would come back
        /// as a mark), nor when a byte needed quoting and the terminal
        /// has no literal-next character.
        pub exact: bool,
    }

    /// The replay of `input`, waiting on a terminal with these termios
    /// (`cc`: c_cc; 0 is a disabled character).
    #[cfg(any(feature = "std", test))]
    pub fn input(iflag: u32, lflag: u32, cc: &[u8; 32], input: &[u8]) -> Replay {
        let canon = lflag & ICANON != 0;
        let set = |i: usize| (cc[i] != 0).then_some(cc[i]);
        let lnext = set(VLNEXT);
        // What the line discipline acts on even without IEXTEN.
        let mut special = std::vec::Vec::new();
        if canon {
            special.extend([VERASE, VKILL, VEOF].into_iter().filter_map(set));
        }
        if iflag & IXON != 0 {
            special.extend([VSTART, VSTOP].into_iter().filter_map(set));
        }
        // IEXTEN for the write: as it was in canonical mode (the second
        // end of line ends a line only with it), and to quote.
        let quote = lnext.is_some() && input.iter().any(|c| special.contains(c));
        let iexten = (canon && lflag & IEXTEN != 0) || quote;
        if iexten {
            if canon {
                special.extend([VWERASE, VREPRINT].into_iter().filter_map(set));
                // Data, if IEXTEN was off: it must not end a line now.
                if lflag & IEXTEN == 0 {
                    special.extend(set(VEOL2));
                }
            }
            special.extend(lnext);
        }
        let mut bytes = std::vec::Vec::with_capacity(input.len());
        let mut exact = true;
        for &c in input {
            if canon && c == 0 {
                exact = false;
                bytes.push(set(VEOF).unwrap_or(0));
                continue;
            }
            if special.contains(&c) {
                match lnext {
                    Some(l) => bytes.push(l),
                    None => exact = false,
                }
            }
            bytes.push(c);
        }
        Replay {
            bytes,
            iexten,
            exact,
        }
    }

    /// (iflag, lflag) for writing input back through the master: the
    /// same canonical mode and flow control, no translation, no echo, no
    /// signals, IEXTEN as the replay needs.
    pub fn input_flags(iflag: u32, lflag: u32, iexten: bool) -> (u32, u32) {
        let i = iflag & !(BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IUCLC | IMAXBEL);
        let l = lflag & !(ISIG | ECHO | ECHOE | ECHOK | ECHONL | IEXTEN);
        (i, if iexten { l | IEXTEN } else { l })
    }

    /// oflag for writing output back through the slave.
    pub fn output_flags(oflag: u32) -> u32 {
        oflag & !OPOST
    }
}

/// The process P and, for `/proc/P/task/T/...`, the thread T a /proc
/// path names.
pub fn proc_ids(target: &str) -> Option<(i32, Option<i32>)> {
    let mut parts = target.strip_prefix("/proc/")?.split('/');
    let p = parts.next()?.parse().ok()?;
    let t = match parts.next() {
        Some("task") => Some(parts.next()?.parse().ok()?),
        _ => None,
    };
    Some((p, t))
}

/// A /proc file of a process (`/proc/P/NAME`, `/proc/P/task/T/NAME`)
/// that is bound to the process's memory as it is opened: maps, smaps,
/// smaps_rollup, numa_maps, mem, pagemap, environ, auxv. An fd of one
/// reads the memory it was opened on: opened by `cryo restore` before
/// the exec of the shim, it read nothing (or the restorer's auxv) after
/// (a sweep of stop 52), so the shim opens each again.
pub fn proc_memory_file(target: &str) -> bool {
    let Some((_, thread)) = proc_ids(target) else {
        return false;
    };
    let rest: usize = if thread.is_some() { 5 } else { 3 };
    let mut parts = target.split('/').skip(rest);
    matches!(
        (parts.next(), parts.next()),
        (
            Some(
                "maps"
                    | "smaps"
                    | "smaps_rollup"
                    | "numa_maps"
                    | "mem"
                    | "pagemap"
                    | "environ"
                    | "auxv"
            ),
            None
        )
    )
}

/// A process's start time (clock ticks after boot, field 22 of
/// /proc/PID/stat), which with its PID names one process: a PID taken
/// again by another process has another start time. (`fd_kind::PROC`)
#[cfg(feature = "std")]
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(std::format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: field 3 onwards.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(22 - 3)?.parse().ok()
}
