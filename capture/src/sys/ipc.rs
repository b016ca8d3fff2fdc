//! System V semaphore sets and message queues, read from cryo itself
//! (GETALL and MSG_COPY change neither the objects nor their times).

use std::io;

fn cvt(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The values of the `nsems` semaphores of set `id` (GETALL).
pub fn sem_values(id: i32, nsems: u32) -> io::Result<Vec<u16>> {
    let mut v = vec![0u16; nsems as usize];
    // SAFETY: GETALL writes one unsigned short per semaphore of the set to
    // the array, which holds `nsems` (the set's size; a set never grows).
    cvt(unsafe { libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) })?;
    Ok(v)
}

/// The process that last operated on each semaphore of set `id` (semop,
/// SETVAL or SETALL; 0: none yet), as GETPID says.
pub fn sem_pids(id: i32, nsems: u32) -> io::Result<Vec<i32>> {
    (0..nsems as i32)
        // SAFETY: GETPID takes no fourth argument and writes nothing.
        .map(|i| cvt(unsafe { libc::semctl(id, i, libc::GETPID) }))
        .collect()
}

/// What IPC_STAT says of a message queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MsqStat {
    pub qbytes: u64,
    pub qnum: u64,
    pub cbytes: u64,
    /// Times of the last msgsnd and msgrcv.
    pub stime: i64,
    pub rtime: i64,
}

/// IPC_STAT of queue `id`.
pub fn msq_stat(id: i32) -> io::Result<MsqStat> {
    // SAFETY: an all-zero msqid_ds is valid; the kernel fills it.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one msqid_ds to `ds`, ours.
    cvt(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
    Ok(MsqStat {
        qbytes: ds.msg_qbytes,
        qnum: ds.msg_qnum,
        cbytes: ds.__msg_cbytes,
        stime: ds.msg_stime,
        rtime: ds.msg_rtime,
    })
}

/// A copy of message `index` (0 the oldest) of queue `id`, left in the
/// queue (MSG_COPY); None past the last. `max`: its largest size.
pub fn msg_copy(id: i32, index: usize, max: usize) -> io::Result<Option<(i64, Vec<u8>)>> {
    const MSG_COPY: i32 = 0o40000;
    let mut buf = vec![0u8; 8 + max];
    // SAFETY: msgrcv writes a long (the type) and at most `max` bytes to
    // `buf`, which holds 8 + `max`.
    let n = unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            index as libc::c_long,
            libc::IPC_NOWAIT | MSG_COPY,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOMSG) => Ok(None),
            _ => Err(e),
        };
    }
    let kind = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
    buf.truncate(8 + n as usize);
    buf.drain(..8);
    Ok(Some((kind, buf)))
}

/// A POSIX message queue's state, from a description of its own on it.
pub struct MqState {
    pub maxmsg: i64,
    pub msgsize: i64,
    /// The process registered for its notification (mq_notify; 0: none).
    pub notify_pid: i32,
}

/// The file system type (statfs's f_type) `path` is on.
fn fs_type(path: &str) -> io::Result<i64> {
    let c = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // SAFETY: an all-zero statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path; statfs writes one struct.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_type)
}

/// Whether `path` is on tmpfs (shmem: a file whose NUMA policy is its
/// own); false where it cannot be told.
pub fn on_tmpfs(path: &str) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    fs_type(path).is_ok_and(|t| t == TMPFS_MAGIC)
}

/// If `path` (a /proc/PID/fd/N link) is a POSIX message queue, its
/// state (None: it is not one). Opening it makes a description of our
/// own; neither that nor reading its status line takes a message.
pub fn mqueue_at(path: &str) -> io::Result<Option<MqState>> {
    const MQUEUE_MAGIC: i64 = 0x1980_0202;
    if fs_type(path)? != MQUEUE_MAGIC {
        return Ok(None);
    }
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero mq_attr is valid; the kernel fills it.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `f` is an open message queue; mq_getattr writes one mq_attr.
    cvt(unsafe { libc::mq_getattr(f.as_raw_fd(), &mut a) })?;
    // "QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d"
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &f, &mut text)?;
    let notify_pid = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("NOTIFY_PID:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Some(MqState {
        maxmsg: a.mq_maxmsg,
        msgsize: a.mq_msgsize,
        notify_pid,
    }))
}
