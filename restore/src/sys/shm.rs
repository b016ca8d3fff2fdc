//! System V IPC objects (shared memory segments, semaphore sets, message
//! queues): what one is now, making one again with a given key and
//! contents, setting its owner, and removing it.

use super::cvt;
use std::io;

/// A segment as IPC_STAT shows it.
pub struct ShmStat {
    pub key: i32,
    pub size: u64,
    /// shm_perm.mode, SHM_DEST (0o1000) included.
    pub mode: u32,
}

/// IPC_STAT of segment `id` (None: no such segment).
pub fn shm_stat(id: i32) -> io::Result<Option<ShmStat>> {
    // SAFETY: an all-zero shmid_ds is valid; the kernel fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds to `ds`, ours.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::EIDRM) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ShmStat {
        key: ds.shm_perm.__key,
        size: ds.shm_segsz as u64,
        mode: u32::from(ds.shm_perm.mode),
    }))
}

/// The id of the segment with `key` (None: none has it).
pub fn shm_find(key: i32) -> io::Result<Option<i32>> {
    // SAFETY: integers only; size 0 and no flags look the key up.
    let r = unsafe { libc::shmget(key, 0, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r))
}

/// A new segment (IPC_CREAT | IPC_EXCL) with `key`, `size` and `mode`;
/// its id.
pub fn shm_create(key: i32, size: u64, mode: u32) -> io::Result<i32> {
    // SAFETY: integers only.
    let r = unsafe {
        libc::shmget(
            key,
            size as usize,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32,
        )
    };
    cvt(r)
}

/// Write `bytes` at the start of segment `id` (attached for the moment,
/// detached again).
pub fn shm_fill(id: i32, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: a new attach of our own at an address the kernel picks.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if at as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the segment is at least `bytes.len()` long (the caller made
    // it with the size the bytes came from); the attach is ours.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.cast::<u8>(), bytes.len());
    }
    // SAFETY: the attach made above, detached once.
    cvt(unsafe { libc::shmdt(at) })?;
    Ok(())
}

/// Owner and mode of segment `id` (IPC_SET).
pub fn shm_set(id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds to `ds`, ours.
    cvt(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) })?;
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as u16;
    // SAFETY: IPC_SET reads the shmid_ds, ours.
    cvt(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) })?;
    Ok(())
}

/// Remove segment `id` (IPC_RMID).
pub fn shm_remove(id: i32) {
    // SAFETY: integers only; a null buffer is allowed for IPC_RMID.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

/// None for EINVAL or EIDRM (no such object), else the call's result.
fn gone<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIDRM)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// None for ENOENT (no object has the key), else the call's result.
fn no_key(r: io::Result<i32>) -> io::Result<Option<i32>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Key and size of semaphore set `id` (None: no such set).
pub fn sem_stat(id: i32) -> io::Result<Option<(i32, u32)>> {
    // SAFETY: an all-zero semid_ds is valid; the kernel fills it.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid_ds to `ds`, ours.
    let r = cvt(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds) });
    Ok(gone(r)?.map(|_| (ds.sem_perm.__key, ds.sem_nsems as u32)))
}

/// The id of the semaphore set with `key` (None: none has it).
pub fn sem_find(key: i32) -> io::Result<Option<i32>> {
    // SAFETY: integers only; no flags look the key up.
    no_key(cvt(unsafe { libc::semget(key, 0, 0) }))
}

/// A new semaphore set (IPC_CREAT | IPC_EXCL) with `key`, `values` and
/// mode 0600 (ours to fill; [`ipc_set_owner`] after); its id.
pub fn sem_create(key: i32, values: &[u16]) -> io::Result<i32> {
    // SAFETY: integers only.
    let id = cvt(unsafe {
        libc::semget(
            key,
            values.len() as i32,
            libc::IPC_CREAT | libc::IPC_EXCL | 0o600,
        )
    })?;
    // SAFETY: SETALL reads one unsigned short per semaphore of the set,
    // which has `values.len()`.
    if let Err(e) = cvt(unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) }) {
        ipc_remove(Ipc::Sem, id);
        return Err(e);
    }
    Ok(id)
}

/// The id of the message queue with `key` (None: none has it).
pub fn msq_find(key: i32) -> io::Result<Option<i32>> {
    // SAFETY: integers only; no flags look the key up.
    no_key(cvt(unsafe { libc::msgget(key, 0) }))
}

/// Key of message queue `id` (None: no such queue).
pub fn msq_stat(id: i32) -> io::Result<Option<i32>> {
    // SAFETY: an all-zero msqid_ds is valid; the kernel fills it.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one msqid_ds to `ds`, ours.
    let r = cvt(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) });
    Ok(gone(r)?.map(|_| ds.msg_perm.__key))
}

/// A new message queue (IPC_CREAT | IPC_EXCL) with `key`, mode 0600,
/// limit `qbytes` and `messages` in it, oldest first; its id.
pub fn msq_create(key: i32, qbytes: u64, messages: &[(i64, &[u8])]) -> io::Result<i32> {
    // SAFETY: integers only.
    let id = cvt(unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) })?;
    let fill = || -> io::Result<()> {
        // SAFETY: an all-zero msqid_ds is valid; IPC_STAT fills it.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one msqid_ds to `ds`, ours.
        cvt(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
        // (Raised before the messages are sent, lowered after: a queue
        // may have held more than its limit, lowered since.)
        let set = |ds: &mut libc::msqid_ds| -> io::Result<()> {
            ds.msg_qbytes = qbytes;
            // SAFETY: IPC_SET reads the msqid_ds, ours.
            cvt(unsafe { libc::msgctl(id, libc::IPC_SET, ds) })?;
            Ok(())
        };
        let lower = ds.msg_qbytes > qbytes;
        if ds.msg_qbytes < qbytes {
            set(&mut ds)?;
        }
        for (kind, bytes) in messages {
            let mut buf = Vec::with_capacity(8 + bytes.len());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(bytes);
            // SAFETY: `buf` is a long (the type) followed by the message's
            // bytes, as msgsnd reads it.
            cvt(unsafe { libc::msgsnd(id, buf.as_ptr().cast(), bytes.len(), libc::IPC_NOWAIT) })?;
        }
        if lower {
            set(&mut ds)?;
        }
        Ok(())
    };
    if let Err(e) = fill() {
        ipc_remove(Ipc::Msq, id);
        return Err(e);
    }
    Ok(id)
}

/// A kind of System V object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ipc {
    Shm,
    Sem,
    Msq,
}

/// Owner and permission bits of object `id` (IPC_SET).
pub fn ipc_set_owner(kind: Ipc, id: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    match kind {
        Ipc::Shm => shm_set(id, uid, gid, mode),
        Ipc::Sem => {
            // SAFETY: an all-zero semid_ds is valid; IPC_STAT fills it.
            let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: IPC_STAT writes one semid_ds to `ds`, ours.
            cvt(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds) })?;
            (ds.sem_perm.uid, ds.sem_perm.gid) = (uid, gid);
            ds.sem_perm.mode = (mode & 0o777) as u16;
            // SAFETY: IPC_SET reads the semid_ds, ours.
            cvt(unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds) })?;
            Ok(())
        }
        Ipc::Msq => {
            // SAFETY: an all-zero msqid_ds is valid; IPC_STAT fills it.
            let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: IPC_STAT writes one msqid_ds to `ds`, ours.
            cvt(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
            (ds.msg_perm.uid, ds.msg_perm.gid) = (uid, gid);
            ds.msg_perm.mode = (mode & 0o777) as u16;
            // SAFETY: IPC_SET reads the msqid_ds, ours.
            cvt(unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) })?;
            Ok(())
        }
    }
}

/// Remove object `id` (IPC_RMID).
pub fn ipc_remove(kind: Ipc, id: i32) {
    match kind {
        Ipc::Shm => shm_remove(id),
        // SAFETY: integers only; IPC_RMID takes no buffer.
        Ipc::Sem => unsafe {
            libc::semctl(id, 0, libc::IPC_RMID);
        },
        // SAFETY: integers only; a null buffer is allowed for IPC_RMID.
        Ipc::Msq => unsafe {
            libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut());
        },
    }
}

/// POSIX message queue `name` ("/NAME") opened with `flags` (access mode
/// and O_NONBLOCK; never made), and its sizes (mq_maxmsg, mq_msgsize).
pub fn mq_open_existing(name: &str, flags: i32) -> io::Result<(std::os::fd::OwnedFd, i64, i64)> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated name; without O_CREAT no mode or
    // attributes are read.
    let fd = cvt(unsafe {
        libc::mq_open(
            c.as_ptr(),
            flags & (libc::O_ACCMODE | libc::O_NONBLOCK) | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: mq_open returned a new fd, ours alone.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero mq_attr is valid; the kernel fills it.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is an open message queue; mq_getattr writes one mq_attr.
    cvt(unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut a) })?;
    Ok((fd, a.mq_maxmsg, a.mq_msgsize))
}
