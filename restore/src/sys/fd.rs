//! Fd numbers, files, pipes and locks.

use super::cvt;
use nix::fcntl::{FcntlArg, OFlag, SealFlag};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Whether `fd` is open here (F_GETFD succeeds).
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument; an fd that is not open is EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// fstat(fd).
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: struct stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one struct stat, which we own.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// Whether `fd` is a terminal.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer and only looks at the fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// lseek(fd, pos, SEEK_SET).
pub fn seek_to(fd: RawFd, pos: u64) -> io::Result<()> {
    // SAFETY: lseek takes integers only.
    cvt(unsafe { libc::lseek(fd, pos as i64, libc::SEEK_SET) })?;
    Ok(())
}

/// fcntl(fd, F_DUPFD, min): a copy of `fd` at the lowest free number from
/// `min` on, without FD_CLOEXEC. The caller owns the copy.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD takes an integer.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD, min) })
}

/// dup2(from, to): `to` becomes a copy of `from` (what was at `to` is
/// closed), without FD_CLOEXEC.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes integers only.
    cvt(unsafe { libc::dup2(from, to) })?;
    Ok(())
}

/// close(fd), its result ignored: an fd restore made and holds by number
/// (no `OwnedFd` has it), or one it found open and does not want.
pub fn close(fd: RawFd) {
    // SAFETY: close takes an integer; no `OwnedFd` of ours holds `fd`
    // (see above), so none will close it again.
    unsafe { libc::close(fd) };
}

/// F_GETFL: the status flags and access mode.
pub fn getfl(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// F_SETFL: the status flags.
pub fn setfl(fd: RawFd, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an integer.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    Ok(())
}

/// F_SETOWN_EX (kind: F_OWNER_TID 0, PID 1, PGRP 2), then F_SETSIG if
/// `sig` is not 0: who gets SIGIO/SIGURG for `fd`'s description, and as
/// which signal.
pub fn set_owner(fd: RawFd, kind: i32, pid: i32, sig: i32) -> io::Result<()> {
    /// struct f_owner_ex (the libc crate lacks it).
    #[repr(C)]
    struct OwnerEx {
        kind: libc::c_int,
        pid: libc::pid_t,
    }
    const F_SETOWN_EX: libc::c_int = 15;
    const F_SETSIG: libc::c_int = 10;
    let o = OwnerEx { kind, pid };
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex (two ints) from
    // `o`, which lives across the call.
    cvt(unsafe { libc::fcntl(fd, F_SETOWN_EX, &o) })?;
    if sig != 0 {
        // SAFETY: F_SETSIG takes an integer.
        cvt(unsafe { libc::fcntl(fd, F_SETSIG, sig) })?;
    }
    Ok(())
}

/// F_SETFD 0: `fd` stays open across an exec.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an integer.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
    Ok(())
}

/// fchdir(fd).
pub fn fchdir(fd: RawFd) -> io::Result<()> {
    // SAFETY: fchdir takes an integer.
    cvt(unsafe { libc::fchdir(fd) })?;
    Ok(())
}

/// read(2), once.
pub fn read(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd, buf)?)
}

/// write(2), once.
pub fn write(fd: BorrowedFd, buf: &[u8]) -> io::Result<usize> {
    Ok(nix::unistd::write(fd, buf)?)
}

/// pipe2(flags): (read end, write end).
pub fn pipe2(flags: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::from_bits_retain(flags))?)
}

/// F_SETPIPE_SZ: the capacity the kernel gave the pipe.
pub fn set_pipe_size(fd: BorrowedFd, size: i32) -> io::Result<i32> {
    Ok(nix::fcntl::fcntl(fd, FcntlArg::F_SETPIPE_SZ(size))?)
}

/// open(path, flags) of something that is there (no O_CREAT).
pub fn open(path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::from_bits_retain(flags),
        Mode::empty(),
    )?)
}

/// A new file at `path`, read-write: open(O_CREAT | O_EXCL).
pub fn create_new(path: &CStr, mode: u32) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_retain(mode),
    )?)
}

/// memfd_create(name, flags).
pub fn memfd_create(name: &CStr, flags: u32) -> io::Result<OwnedFd> {
    Ok(nix::sys::memfd::memfd_create(
        name,
        nix::sys::memfd::MFdFlags::from_bits_retain(flags),
    )?)
}

/// mkdir(path, mode).
pub fn mkdir(path: &CStr, mode: u32) -> io::Result<()> {
    Ok(nix::unistd::mkdir(path, Mode::from_bits_retain(mode))?)
}

/// mknod(path, mode, rdev): `mode` has the file type and the permissions.
pub fn mknod(path: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    Ok(nix::sys::stat::mknod(
        path,
        SFlag::from_bits_retain(mode & libc::S_IFMT),
        Mode::from_bits_retain(mode & !libc::S_IFMT),
        rdev,
    )?)
}

/// rmdir(path).
pub fn rmdir(path: &CStr) -> io::Result<()> {
    // SAFETY: rmdir reads a NUL-terminated path, which `path` is.
    cvt(unsafe { libc::rmdir(path.as_ptr()) })?;
    Ok(())
}

/// unlink(path).
pub fn unlink(path: &CStr) -> io::Result<()> {
    Ok(nix::unistd::unlink(path)?)
}

/// chdir(path).
pub fn chdir(path: &CStr) -> io::Result<()> {
    Ok(nix::unistd::chdir(path)?)
}

/// fchown(fd, uid, gid).
pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown takes integers only.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

/// fchmod(fd, mode).
pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(fd, Mode::from_bits_retain(mode))?)
}

/// futimens: the modification time, the access time left as it is.
pub fn set_mtime(fd: BorrowedFd, sec: i64, nsec: i64) -> io::Result<()> {
    use nix::sys::time::TimeSpec;
    Ok(nix::sys::stat::futimens(
        fd,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(sec, nsec),
    )?)
}

/// F_ADD_SEALS.
pub fn add_seals(fd: BorrowedFd, seals: i32) -> io::Result<()> {
    nix::fcntl::fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals)))?;
    Ok(())
}

/// F_GETLK: `fl` becomes the first lock in its way, or F_UNLCK.
pub fn getlk(fd: BorrowedFd, fl: &mut libc::flock) -> io::Result<()> {
    nix::fcntl::fcntl(fd, FcntlArg::F_GETLK(fl))?;
    Ok(())
}

/// flock(fd, op).
pub fn flock(fd: RawFd, op: i32) -> io::Result<()> {
    // SAFETY: flock takes integers only.
    cvt(unsafe { libc::flock(fd, op) })?;
    Ok(())
}

/// F_OFD_SETLK: take the OFD lock `fl` without waiting.
pub fn ofd_setlk(fd: RawFd, fl: &libc::flock) -> io::Result<()> {
    // SAFETY: F_OFD_SETLK reads one struct flock, which `fl` is.
    cvt(unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, fl as *const libc::flock) })?;
    Ok(())
}

/// F_SETLEASE with F_RDLCK or F_WRLCK.
pub fn setlease(fd: RawFd, kind: i32) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an integer.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, kind) })?;
    Ok(())
}

/// Take ownership of `fd`, a fresh fd of ours that nothing else owns or
/// closes (made by one of restore's own calls that return raw numbers,
/// such as [`dup_above`]): it is closed when the result is dropped.
pub fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes an fd it just made and gives away (the
    // function's contract); a wrong number could only close an fd twice,
    // which restore's callers never do.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// mkfifo(3) (the umask applies).
pub fn mkfifo(path: &std::path::Path, mode: u32) -> io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(mode))?;
    Ok(())
}

/// name_to_handle_at(AT_FDCWD, path, AT_SYMLINK_FOLLOW): the file handle
/// (type, bytes) of the file `path` leads to.
pub fn name_to_handle(path: &str) -> io::Result<(i32, Vec<u8>)> {
    let c = std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[128]; }
    let mut buf = [0u8; 8 + 128];
    buf[0..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: the kernel writes at most handle_bytes (128) bytes of handle
    // after the 8-byte header into our buffer, and one int into mount_id.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(128);
    let kind = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok((kind, buf[8..8 + len].to_vec()))
}

/// An O_PATH fd on the file a handle (type, bytes) names on the device
/// `dev`: open_by_handle_at on a mount of that device (from our
/// mountinfo; needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(dev: u64, kind: i32, bytes: &[u8]) -> io::Result<OwnedFd> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut last = io::Error::from_raw_os_error(libc::ENODEV);
    for m in cryo_image::mountinfo::mounts(&info).filter(|m| m.dev == dev) {
        let Ok(mount) = std::fs::File::open(&m.point) else {
            continue;
        };
        // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }
        let mut buf = vec![0u8; 8 + bytes.len()];
        buf[0..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
        buf[4..8].copy_from_slice(&kind.to_ne_bytes());
        buf[8..].copy_from_slice(bytes);
        // SAFETY: the kernel reads a file_handle of handle_bytes bytes from
        // our buffer (allocated that long) and returns a new fd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                buf.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        match cvt(r) {
            // SAFETY: a fresh fd.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// linkat(AT_FDCWD, "/proc/self/fd/FD", AT_FDCWD, path, AT_SYMLINK_FOLLOW):
/// a new name for the file `fd` is open on (needs CAP_DAC_READ_SEARCH
/// for an O_PATH fd).
pub fn link_fd(fd: RawFd, path: &CStr) -> io::Result<()> {
    let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both paths are NUL-terminated strings we own.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

/// A file's birth time (statx STATX_BTIME, through std), None where the
/// file system does not tell.
pub fn born(md: &std::fs::Metadata) -> Option<(i64, u32)> {
    md.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| (d.as_secs() as i64, d.subsec_nanos()))
}
