//! System V shared memory: what a segment is now, making one again with
//! a given id, key and bytes, and removing it.

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
