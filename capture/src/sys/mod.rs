//! Thin safe wrappers over the system calls capture needs that neither std
//! nor nix offer (pidfds, kcmp, tee, PTRACE_PEEKSIGINFO): every `unsafe`
//! of these lives here, each with the reason it is sound. Results are
//! `io::Result`s with the errno kept.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub mod buf;
pub mod ipc;
pub mod ptrace;
pub mod sock;
pub mod tty;

pub(crate) fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// renameat2(a, b, RENAME_EXCHANGE): the two paths swap, at once.
pub fn rename_exchange(a: &std::path::Path, b: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths we own, alive for the call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    })?;
    Ok(())
}

/// A child of this process that only waits to be killed, killed and
/// reaped when dropped: a process with no System V semaphore undo list
/// (a fork does not share one), for kcmp to compare with.
#[derive(Debug)]
pub struct Idle(i32);

impl Idle {
    pub fn start() -> io::Result<Idle> {
        // SAFETY: fork in a threaded process: the child calls only
        // async-signal-safe system calls (prctl, getppid, pause, _exit)
        // and never returns into Rust code.
        let pid = cvt(unsafe { libc::fork() } as libc::c_long)?;
        if pid == 0 {
            // SAFETY: integers only; see above.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::getppid() == 1 {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        Ok(Idle(pid as i32))
    }

    /// A process that any process of real user `uid` and group `gid` may
    /// look at (ptrace's read access), and that holds nothing: a child
    /// that leaves this process's session and terminal (setsid), its
    /// working directory (for `/`) and its fds (for /dev/null at 0-2),
    /// takes `uid` and `gid` as every one of its ids, drops every
    /// capability, and execs `sleep infinity` with an empty environment,
    /// so no copy of cryo's memory is left in it. (A review found the
    /// first probe, a plain fork given the ids, open to the target's
    /// user: it read cryo's environment, wrote to its fds, and typed into
    /// its terminal.) Dumpable after the exec (its ids all equal, the
    /// file readable), never before it. Returns once the exec is done.
    pub fn start_as(uid: u32, gid: u32) -> io::Result<Idle> {
        const SLEEPS: [&std::ffi::CStr; 2] = [c"/bin/sleep", c"/usr/bin/sleep"];
        let argv = [c"sleep".as_ptr(), c"infinity".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let (r, w) = pipe2(libc::O_CLOEXEC)?;
        // SAFETY: integers only.
        let parent = unsafe { libc::getpid() };
        // SAFETY: fork in a threaded process: the child calls only
        // async-signal-safe system calls, on integers, static strings
        // and its own stack (setsid, chdir, open, dup2, close_range,
        // setgroups, setresgid, setresuid, capset, prctl, getppid,
        // execve, write, _exit), and never returns into Rust code.
        let pid = cvt(unsafe { libc::fork() } as libc::c_long)?;
        if pid == 0 {
            #[repr(C)]
            struct CapHeader {
                version: u32,
                pid: i32,
            }
            let head = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let none = [0u32; 6];
            // SAFETY: as above; `head`, `none`, `err`, `argv` and `envp`
            // live on this stack for the calls that read them.
            unsafe {
                let w = w.as_raw_fd();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                let set = libc::setsid() >= 0
                    && libc::chdir(c"/".as_ptr()) == 0
                    && null >= 0
                    && (0..3).all(|fd| libc::dup2(null, fd) == fd)
                    && (w == 3
                        || libc::syscall(libc::SYS_close_range, 3u32, (w - 1) as u32, 0u32) == 0)
                    && libc::syscall(libc::SYS_close_range, (w + 1) as u32, u32::MAX, 0u32) == 0
                    && {
                        // (Without CAP_SETGID the groups stay: ptrace's
                        // check does not look at them.)
                        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>());
                        true
                    }
                    && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                    // As root, no capabilities through its exec either
                    // (SECBIT_NOROOT, locked): else root's exec gave the
                    // probe every one, and a root target with fewer
                    // (`capsh --drop=cap_sys_ptrace`) was denied the look
                    // and refused as in a Landlock domain (a sweep of
                    // stop 51). (Needs CAP_SETPCAP: only root's probe
                    // needs it.)
                    && (uid != 0 || libc::prctl(libc::PR_SET_SECUREBITS, 0b11, 0, 0, 0) == 0)
                    && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
                    && libc::syscall(libc::SYS_capset, &head, none.as_ptr()) == 0
                    // (A change of identity clears it; an exec keeps it.)
                    && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
                    && libc::getppid() == parent;
                if set {
                    for path in SLEEPS {
                        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    }
                }
                let err: u8 = (*libc::__errno_location()).clamp(1, 255) as u8;
                libc::write(w, (&err as *const u8).cast(), 1);
                libc::_exit(127);
            }
        }
        let idle = Idle(pid as i32);
        drop(w);
        // The exec closes the pipe (close-on-exec): EOF. A byte is the
        // errno of the step that failed.
        let mut err = [0u8];
        match read_exact(&r, &mut err) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(idle),
            Ok(_) => Err(io::Error::from_raw_os_error(err[0] as i32)),
            Err(e) => Err(e),
        }
    }

    pub fn pid(&self) -> i32 {
        self.0
    }
}

/// Whether cryo itself is in a Landlock domain, as far as it can tell: a
/// thread in a domain may not look at a kernel thread, which is in none
/// (kthreadd, PID 2, seen from the first PID namespace). With
/// CAP_SYS_PTRACE (the caller's to check) nothing else can deny that
/// look. (Not PID 1: on the machine this was built on, PID 1 is shielded
/// by another LSM.) Without a kernel thread in sight, not known (false).
pub fn own_landlock_domain() -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    // /proc/2/stat: "2 (kthreadd) S ppid ... flags" (flags the 9th field).
    let kthread = std::fs::read_to_string("/proc/2/stat")
        .ok()
        .is_some_and(|s| {
            s.starts_with("2 (kthreadd) ")
                && s.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
                    .is_some_and(|f| f & PF_KTHREAD != 0)
        });
    if !kthread {
        return false;
    }
    const KCMP_FILES: libc::c_long = 2;
    // SAFETY: kcmp takes integers only and changes nothing.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, 2, 2, KCMP_FILES, 0, 0) };
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The id of this process's keyring `spec` (-3 its session keyring), if
/// it has one (create 0: asks, makes none).
pub fn own_keyring(spec: i64) -> Option<i64> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    // SAFETY: keyctl with integers only; it asks, and makes nothing.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, spec, 0) };
    (r >= 0).then_some(r)
}

/// Whether this kernel runs Landlock (landlock_create_ruleset's ABI
/// version: ENOSYS not built, EOPNOTSUPP turned off at boot).
pub fn landlock_runs() -> bool {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: no ruleset is passed (NULL, 0): the call only answers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    r >= 1
}

impl Drop for Idle {
    fn drop(&mut self) {
        // SAFETY: integers only; the child is ours and not yet reaped.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// pidfd_open(pid, 0).
/// This process's hard RLIMIT_NOFILE.
pub fn own_nofile_hard() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit, which `r` is.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some(r.rlim_max)
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd we own.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_getfd: our own duplicate of the target's fd `fd` (same open file
/// description). Needs ptrace-attach rights over the target.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a new fd we own.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: as above, a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The kernel's order of two open file descriptions (kcmp KCMP_FILE: 0
/// one description, 1 `a`'s first, 2 `b`'s first; a total order of
/// obfuscated pointers), so fds can be sorted by description and each
/// one found among many by a binary search; an error sorts after.
pub fn description_order((p, a): (i32, i32), (q, b): (i32, i32)) -> std::cmp::Ordering {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes integers only and changes nothing.
    match cvt(unsafe { libc::syscall(libc::SYS_kcmp, p, q, KCMP_FILE, a, b) }) {
        Ok(0) => std::cmp::Ordering::Equal,
        Ok(1) => std::cmp::Ordering::Less,
        _ => std::cmp::Ordering::Greater,
    }
}

/// kcmp(p, q, kind, 0, 0) == 0: processes `p` and `q` share one kernel
/// object of `kind` (KCMP_FILES 2: fd table, KCMP_FS 3: fs context).
pub fn kcmp(p: i32, q: i32, kind: libc::c_long) -> io::Result<bool> {
    // SAFETY: kcmp takes integers only and changes nothing.
    let r = cvt(unsafe { libc::syscall(libc::SYS_kcmp, p, q, kind, 0, 0) })?;
    Ok(r == 0)
}

/// kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {epfd, tfd, toff}) == 0: the file
/// of the `toff`-th item epoll instance `epfd` of `pid` watches under fd
/// number `tfd` is the file open at `fd`.
pub fn epoll_target_is(pid: i32, epfd: i32, fd: i32, tfd: i32, toff: u32) -> io::Result<bool> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    let slot = Slot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: kcmp reads one struct kcmp_epoll_slot we own and changes
    // nothing.
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_EPOLL_TFD,
            fd,
            &slot as *const Slot,
        )
    })?;
    Ok(r == 0)
}

/// pipe2(flags): (read end, write end).
pub fn pipe2(flags: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two ints into `fds`, which we own.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } as libc::c_long)?;
    // SAFETY: two fresh fds the kernel just gave us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// fcntl(fd, cmd, arg) for the integer commands (F_GETPIPE_SZ, F_SETPIPE_SZ,
/// F_GETFL, F_GET_SEALS ...).
pub fn fcntl_int(fd: &impl AsRawFd, cmd: i32, arg: i32) -> io::Result<i32> {
    // SAFETY: the integer fcntl commands take no pointer.
    Ok(cvt(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) } as libc::c_long)? as i32)
}

/// The ranges of [start, end) whose pages are present or swapped out, by
/// /proc/PID/pagemap's PAGEMAP_SCAN (Linux 6.7): at most `max` ranges
/// from `start`, and where the walk stopped (`end` when it went through).
pub fn pagemap_scan(
    pagemap: &impl AsRawFd,
    start: u64,
    end: u64,
    max: usize,
) -> io::Result<(Vec<(u64, u64)>, u64)> {
    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    const PAGE_IS_PRESENT: u64 = 1 << 3;
    const PAGE_IS_SWAPPED: u64 = 1 << 4;
    // _IOWR('f', 16, struct pm_scan_arg)
    const PAGEMAP_SCAN: libc::c_ulong = (3 << 30)
        | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
        | ((b'f' as libc::c_ulong) << 8)
        | 16;
    let mut regions = vec![PageRegion::default(); max.max(1)];
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start,
        end,
        walk_end: 0,
        vec: regions.as_mut_ptr() as u64,
        vec_len: regions.len() as u64,
        max_pages: 0,
        category_inverted: 0,
        category_mask: 0,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    };
    // SAFETY: PAGEMAP_SCAN reads `arg` (ours, its size given) and writes
    // at most vec_len page_region records to `regions`, which we own and
    // which outlives the call, and walk_end to `arg`.
    let r = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
    let n = cvt(r as libc::c_long)?;
    regions.truncate(n as usize);
    Ok((
        regions.iter().map(|r| (r.start, r.end)).collect(),
        arg.walk_end,
    ))
}

/// Bytes waiting to be read (FIONREAD).
pub fn fionread(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`, which we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } as libc::c_long)?;
    Ok(n as usize)
}

/// What the symbolic link an O_PATH fd is open on points to
/// (readlinkat(fd, "")).
pub fn readlink_fd(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat writes at most buf.len() bytes into `buf`, ours;
    // the path is an empty C string.
    let n = cvt(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    } as libc::c_long)?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// The file a unix socket is bound to, as an O_PATH fd (SIOCUNIXFILE,
/// Linux 4.10; CAP_NET_ADMIN over the socket's network namespace):
/// ENOENT for a socket without one.
pub fn unix_file(sock: &impl AsRawFd) -> io::Result<OwnedFd> {
    const SIOCUNIXFILE: libc::c_ulong = 0x89e0;
    // SAFETY: SIOCUNIXFILE takes no argument and returns a new fd.
    let fd = cvt(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCUNIXFILE) } as libc::c_long)?;
    // SAFETY: a fresh fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// F_GETOWN_EX: (F_OWNER_TID 0 / PID 1 / PGRP 2, the id; 0: none).
pub fn owner(fd: &impl AsRawFd) -> io::Result<(i32, i32)> {
    /// struct f_owner_ex (the libc crate lacks it).
    #[repr(C)]
    struct OwnerEx {
        kind: libc::c_int,
        pid: libc::pid_t,
    }
    const F_GETOWN_EX: libc::c_int = 16;
    let mut o = OwnerEx { kind: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex (two ints) into
    // `o`, ours.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, &mut o) } as libc::c_long)?;
    Ok((o.kind, o.pid))
}

/// Bytes sent and not yet acknowledged, or not yet sent (SIOCOUTQ).
pub fn outq(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int to `n`, which we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) } as libc::c_long)?;
    Ok(n as usize)
}

/// poll() one fd for `events` without waiting; the revents.
pub fn poll_now(fd: &impl AsRawFd, events: i16) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd we own.
    cvt(unsafe { libc::poll(&mut p, 1, 0) } as libc::c_long)?;
    Ok(p.revents)
}

/// tee(2): copy up to `len` bytes from pipe `from` into pipe `to` without
/// consuming them.
pub fn tee(from: &impl AsRawFd, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
    // SAFETY: tee takes fds and integers only.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    Ok(cvt(r as libc::c_long)? as usize)
}

/// Read exactly `buf.len()` bytes from `fd` (a pipe we own); returns how
/// many reads that took.
pub fn read_exact(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    let mut reads = 0;
    while done < buf.len() {
        // SAFETY: read writes at most buf.len() - done bytes into our buffer.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - done,
            )
        };
        match r {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            r if r < 0 => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
            r => {
                done += r as usize;
                reads += 1;
            }
        }
    }
    Ok(reads)
}

/// The queued signals of a stopped tracee, without dequeuing them
/// (PTRACE_PEEKSIGINFO): the thread's own queue, or the process-wide one.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u64; 16]>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const SHARED: u32 = 1;
    let mut out = Vec::new();
    let mut buf = [[0u64; 16]; 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        // SAFETY: PTRACE_PEEKSIGINFO reads one PeekArgs and writes at most
        // `nr` 128-byte siginfos into `buf`, which holds that many.
        let r = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekArgs,
                buf.as_mut_ptr(),
            )
        };
        let n = cvt(r)? as usize;
        out.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            return Ok(out);
        }
    }
}

/// name_to_handle_at(AT_FDCWD, path, AT_SYMLINK_FOLLOW): the file handle
/// (type, bytes) of the file `path` leads to (a /proc/PID/fd link: the
/// open file itself, named or not).
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

/// open_by_handle_at(mount_fd, handle, O_PATH): the file a handle names
/// (needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount: &impl AsRawFd, kind: i32, bytes: &[u8]) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }
    let mut buf = vec![0u8; 8 + bytes.len()];
    buf[0..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&kind.to_ne_bytes());
    buf[8..].copy_from_slice(bytes);
    // SAFETY: the kernel reads a file_handle of handle_bytes bytes from our
    // buffer (allocated that long) and returns a new fd we own.
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// One `prlimit`-free way to get a process's limits: /proc/PID/limits is
/// readable where prlimit needs CAP_SYS_RESOURCE (another user's process).
/// Returns (resource, soft, hard) for the 16 Linux resources.
pub fn parse_limits(text: &str) -> Vec<(u32, u64, u64)> {
    const NAMES: [&str; 16] = [
        "Max cpu time",
        "Max file size",
        "Max data size",
        "Max stack size",
        "Max core file size",
        "Max resident set",
        "Max processes",
        "Max open files",
        "Max locked memory",
        "Max address space",
        "Max file locks",
        "Max pending signals",
        "Max msgqueue size",
        "Max nice priority",
        "Max realtime priority",
        "Max realtime timeout",
    ];
    let val = |s: &str| {
        if s == "unlimited" {
            Some(libc::RLIM_INFINITY)
        } else {
            s.parse().ok()
        }
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(res) = NAMES.iter().position(|n| line.starts_with(n)) else {
            continue;
        };
        let rest: Vec<&str> = line[NAMES[res].len()..].split_whitespace().collect();
        if let (Some(cur), Some(max)) = (
            rest.first().and_then(|s| val(s)),
            rest.get(1).and_then(|s| val(s)),
        ) {
            out.push((res as u32, cur, max));
        }
    }
    out
}

/// process_vm_readv of `buf.len()` bytes at `addr` in process `pid`: the
/// bytes read (short at an unreadable page).
pub fn process_vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most local.iov_len bytes into `buf`,
    // which we own mutably; `remote` names memory of another process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// lseek(fd, off, whence) (SEEK_DATA/SEEK_HOLE too).
pub fn lseek(fd: &impl AsRawFd, off: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: lseek takes integers only.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as i64, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// A task's nice value, scheduling policy, RT priority and CPU affinity
/// (CPUs 0-1023), each None where the kernel would not tell.
pub struct SchedOf {
    pub nice: Option<i32>,
    pub policy: Option<i32>,
    pub priority: Option<i32>,
    pub affinity: Option<[u64; 16]>,
}

pub fn sched_of(tid: i32) -> SchedOf {
    // SAFETY: the scheduling queries take integers, or write into structs
    // we own; none retain pointers. errno is reset before getpriority,
    // whose -1 is a valid value.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as u32);
        let nice = (*libc::__errno_location() == 0).then_some(nice);
        let pol = libc::sched_getscheduler(tid);
        let mut sp = libc::sched_param { sched_priority: 0 };
        let prio = (libc::sched_getparam(tid, &mut sp) == 0).then_some(sp.sched_priority);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let affinity =
            (libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
                .then(|| {
                    let mut a = [0u64; 16];
                    for cpu in 0..1024usize.min(libc::CPU_SETSIZE as usize) {
                        if libc::CPU_ISSET(cpu, &set) {
                            a[cpu / 64] |= 1 << (cpu % 64);
                        }
                    }
                    a
                });
        SchedOf {
            nice,
            policy: (pol >= 0).then_some(pol),
            priority: prio,
            affinity,
        }
    }
}

/// ioprio_get(IOPRIO_WHO_PROCESS, pid).
pub fn ioprio_of(pid: i32) -> io::Result<i64> {
    const IOPRIO_WHO_PROCESS: i64 = 1;
    // SAFETY: ioprio_get takes integers.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid as i64) };
    cvt(r)
}

/// arch_prctl(ARCH_GET_XCOMP_PERM) of this process (which never asks for
/// more): the xsave features every process is given (0 where the kernel
/// does not tell).
pub fn own_xcomp_perm() -> u64 {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    let mut perm = 0u64;
    // SAFETY: the kernel writes one u64 at the address given, which we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut perm as *mut u64,
        )
    };
    if r == 0 {
        perm
    } else {
        0
    }
}

/// This thread's fs base (ARCH_GET_FS).
#[cfg(test)]
pub fn own_fs_base() -> io::Result<u64> {
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64 we own.
    cvt(unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) })?;
    Ok(fs)
}

/// This thread's id.
#[cfg(test)]
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// clock_gettime(clock) in ns (0 if it fails).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether this process may not make a file in directory `path`
/// (faccessat(W_OK | X_OK, AT_EACCESS): by its effective ids and
/// capabilities, as the writes will be; access() asked with the real
/// ones, and refused a user given CAP_DAC_OVERRIDE: a review. EACCES
/// only; any other failure is left to the writes to say).
pub fn cannot_write_in(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: faccessat reads the NUL-terminated path only.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

/// statvfs(path): whether its file system is mounted read-only, and the
/// bytes free to an unprivileged writer; None if it cannot be asked.
pub fn fs_space(path: &std::path::Path) -> Option<(bool, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads the NUL-terminated path and writes one
    // statvfs, which `st` is.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let ro = st.f_flag & libc::ST_RDONLY != 0;
    // A file system that counts no blocks (tmpfs with size=0, FUSE
    // without statfs) says nothing of its space (a review of stop 51:
    // refused "no space left"); root may write the reserved blocks.
    if st.f_blocks == 0 {
        return Some((ro, u64::MAX));
    }
    // SAFETY: geteuid only reads this process's credentials.
    let free = if unsafe { libc::geteuid() } == 0 {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Some((ro, free.saturating_mul(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_of_self() {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let l = parse_limits(&text);
        assert_eq!(l.len(), 16);
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!(l[7], (7, r.rlim_cur, r.rlim_max));
    }

    #[test]
    fn pipe_data_is_copied_not_consumed() {
        let (r, w) = pipe2(0).unwrap();
        let msg = b"hello pipe";
        // SAFETY: write reads msg.len() bytes from msg.
        unsafe { libc::write(w.as_raw_fd(), msg.as_ptr() as *const _, msg.len()) };
        let (cr, cw) = pipe2(0).unwrap();
        assert_eq!(fionread(&r).unwrap(), msg.len());
        assert_eq!(tee(&r, &cw, msg.len()).unwrap(), msg.len());
        let mut got = vec![0u8; msg.len()];
        read_exact(&cr, &mut got).unwrap();
        assert_eq!(&got, msg);
        assert_eq!(fionread(&r).unwrap(), msg.len(), "still there");
    }
}
