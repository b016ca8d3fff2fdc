//! Raw system calls and the memory functions the compiler expects. The shim
//! has no libc: this file is the only place that talks to the kernel.

use core::arch::asm;

pub const SYS_WRITE: usize = 1;
pub const SYS_OPEN: usize = 2;
pub const O_NONBLOCK: usize = 0o4000;
pub const SYS_CLOSE: usize = 3;
pub const SYS_FSTAT: usize = 5;
pub const SYS_LSEEK: usize = 8;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_RT_SIGACTION: usize = 13;
pub const SYS_RT_SIGPROCMASK: usize = 14;
pub const SYS_PREAD64: usize = 17;
pub const SYS_PWRITE64: usize = 18;
pub const SYS_MREMAP: usize = 25;
pub const SYS_SHMAT: usize = 30;
pub const SYS_SHMCTL: usize = 31;
pub const SYS_SEMCTL: usize = 66;
pub const SYS_MSGCTL: usize = 71;
pub const SYS_MADVISE: usize = 28;
pub const SYS_MINCORE: usize = 27;
pub const SYS_SETITIMER: usize = 38;
pub const SYS_GETPID: usize = 39;
pub const SYS_SETSID: usize = 112;
pub const SYS_GETSID: usize = 124;
pub const SYS_SETPGID: usize = 109;
pub const SYS_GETPGID: usize = 121;
pub const SYS_KILL: usize = 62;
pub const SYS_TGKILL: usize = 234;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_PRCTL: usize = 157;
pub const SYS_SECCOMP: usize = 317;
pub const SYS_CHROOT: usize = 161;
pub const SYS_ARCH_PRCTL: usize = 158;
pub const SYS_TIMER_CREATE: usize = 222;
pub const SYS_TIMER_SETTIME: usize = 223;
pub const SYS_CLOCK_GETTIME: usize = 228;
pub const SYS_SET_ROBUST_LIST: usize = 273;
pub const SYS_RSEQ: usize = 334;
pub const SYS_READ: usize = 0;
pub const SYS_IOCTL: usize = 16;
pub const SYS_SENDMSG: usize = 46;
pub const SYS_USERFAULTFD: usize = 323;
pub const SYS_FCNTL: usize = 72;
pub const SYS_FLOCK: usize = 73;
pub const SYS_MLOCK2: usize = 325;
pub const SYS_MLOCKALL: usize = 151;
pub const SYS_MSEAL: usize = 462;
pub const SYS_MEMBARRIER: usize = 324;
pub const SYS_RT_SIGQUEUEINFO: usize = 129;
pub const SYS_RT_TGSIGQUEUEINFO: usize = 297;
pub const SYS_GETGROUPS: usize = 115;
pub const SYS_SETGROUPS: usize = 116;
pub const SYS_SETRESUID: usize = 117;
pub const SYS_GETRESUID: usize = 118;
pub const SYS_SETRESGID: usize = 119;
pub const SYS_GETRESGID: usize = 120;
pub const SYS_SETFSUID: usize = 122;
pub const SYS_SETFSGID: usize = 123;
pub const SYS_CAPGET: usize = 125;
pub const SYS_CAPSET: usize = 126;
pub const SYS_RT_SIGPENDING: usize = 127;
pub const SYS_SCHED_YIELD: usize = 24;
pub const SYS_FUTEX: usize = 202;
pub const SYS_SCHED_SETAFFINITY: usize = 203;
pub const SYS_SCHED_GETAFFINITY: usize = 204;
pub const SYS_GETCPU: usize = 309;
pub const SYS_SET_TID_ADDRESS: usize = 218;
pub const SYS_SETPRIORITY: usize = 141;
pub const SYS_SCHED_SETSCHEDULER: usize = 144;
pub const SYS_CLONE3: usize = 435;
pub const SYS_CLOSE_RANGE: usize = 436;
pub const SYS_CHDIR: usize = 80;
pub const SYS_UMASK: usize = 95;
pub const SYS_PERSONALITY: usize = 135;
pub const SYS_PRLIMIT64: usize = 302;
pub const SYS_GETPRIORITY: usize = 140;
pub const SYS_SCHED_GETPARAM: usize = 143;
pub const SYS_SCHED_GETSCHEDULER: usize = 145;
pub const FUTEX_WAIT_PRIVATE: usize = 128;
pub const FUTEX_WAKE_PRIVATE: usize = 1 | 128;
pub const FUTEX_CMP_REQUEUE_PRIVATE: usize = 4 | 128;
pub const FUTEX_WAKE_OP_PRIVATE: usize = 5 | 128;

pub const SIGKILL: usize = 9;
pub const SIGSTOP: usize = 19;
pub const F_SETLK: usize = 6;
pub const MAP_DROPPABLE: usize = 0x08;
pub const MLOCK_ONFAULT: usize = 1;
pub const MADV_DONTNEED: usize = 4;

pub const F_SETFD: usize = 2;
pub const FD_CLOEXEC: usize = 1;

pub const O_RDONLY: usize = 0;
pub const O_RDWR: usize = 2;
pub const O_CLOEXEC: usize = 0o2000000;
pub const EPERM: isize = 1;
pub const EEXIST: isize = 17;
pub const EBUSY: isize = 16;
pub const EINVAL: isize = 22;
pub const EINTR: isize = 4;
pub const ENOMEM: isize = 12;

pub const PROT_NONE: usize = 0;
pub const PROT_READ: usize = 1;
pub const PROT_WRITE: usize = 2;
pub const PROT_EXEC: usize = 4;
pub const MAP_SHARED: usize = 0x01;
pub const MAP_PRIVATE: usize = 0x02;
pub const MAP_FIXED: usize = 0x10;
pub const MAP_ANONYMOUS: usize = 0x20;
pub const MAP_GROWSDOWN: usize = 0x100;
pub const MAP_NORESERVE: usize = 0x4000;
pub const MAP_POPULATE: usize = 0x8000;
pub const MAP_FIXED_NOREPLACE: usize = 0x100000;
pub const MREMAP_MAYMOVE: usize = 1;
pub const MREMAP_FIXED: usize = 2;

/// A raw system call with up to six arguments; returns the kernel's value
/// (negative errno on failure).
#[inline(always)]
pub fn syscall6(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: rax = nr, args in rdi, rsi, rdx, r10,
    // r8, r9; the kernel clobbers rcx and r11. Memory effects depend on the
    // call, which is why callers pass only pointers to memory they own.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e, in("r9") f,
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[inline(always)]
pub fn syscall3(nr: usize, a: usize, b: usize, c: usize) -> isize {
    syscall6(nr, a, b, c, 0, 0, 0)
}

pub fn write(fd: usize, b: &[u8]) {
    let _ = syscall3(SYS_WRITE, fd, b.as_ptr() as usize, b.len());
}

pub fn exit(code: i32) -> ! {
    syscall3(SYS_EXIT_GROUP, code as usize, 0, 0);
    // SAFETY: exit_group does not return; this is never reached.
    unsafe { core::hint::unreachable_unchecked() }
}

pub const SYS_DUP3: usize = 292;
pub const F_DUPFD_CLOEXEC: usize = 1030;

/// Read the file at `path` (NUL-terminated) whole into `buf`, as much as
/// fits: the bytes read, or the open's -errno.
pub fn read_whole(path: usize, buf: &mut [u8]) -> Result<usize, isize> {
    // SAFETY: buf is `buf.len()` writable bytes.
    unsafe { read_whole_raw(path, buf.as_mut_ptr(), buf.len()) }
}

/// [`read_whole`] into `len` bytes at `at`, which need not be initialised.
///
/// # Safety
/// `at..at + len` must be writable memory of the caller's.
pub unsafe fn read_whole_raw(path: usize, at: *mut u8, len: usize) -> Result<usize, isize> {
    let fd = syscall3(SYS_OPEN, path, O_RDONLY | O_CLOEXEC, 0);
    if fd < 0 {
        return Err(fd);
    }
    let mut n = 0;
    while n < len {
        let r = syscall3(SYS_READ, fd as usize, at as usize + n, len - n);
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    syscall3(SYS_CLOSE, fd as usize, 0, 0);
    Ok(n)
}

/// pread into `len` bytes at address `dst` (loops over short reads).
pub fn pread_all(fd: usize, dst: usize, len: usize, off: u64) -> Result<(), isize> {
    let mut done = 0usize;
    while done < len {
        let chunk = (len - done).min(1 << 30);
        let r = syscall6(
            SYS_PREAD64,
            fd,
            dst + done,
            chunk,
            off as usize + done,
            0,
            0,
        );
        if r == -4 {
            continue; // EINTR
        }
        if r <= 0 {
            return Err(if r == 0 { -5 } else { r });
        }
        done += r as usize;
    }
    Ok(())
}

// The compiler lowers copies and fills to these symbols; with no libc the
// shim provides them. `rep movsb/stosb` cannot be turned back into calls.

/// # Safety
/// `dst` and `src` must be valid for `n` bytes and not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for n bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `dst` and `src` must be valid for `n` bytes (they may overlap).
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: forward copy is correct when dst is before src or disjoint.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backward copy with the direction flag, restored after.
    unsafe {
        asm!(
            "std", "rep movsb", "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
    dst
}

/// # Safety
/// `dst` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees dst is valid for n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and both ranges are valid for n bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

const SYS_STATX: usize = 332;

/// What identifies the file open at `fd`: device (as fstat's st_dev),
/// inode, size, modification time, and birth time where the file system
/// tells. One statx where fstat and a statx for the birth time were two
/// calls (fstat where statx is refused).
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub born: Option<(i64, u32)>,
}

pub fn identify(fd: usize) -> Result<Identity, isize> {
    const AT_EMPTY_PATH: usize = 0x1000;
    const STATX_BASIC_STATS: u32 = 0x7ff;
    const STATX_BTIME: u32 = 0x800;
    const STATX_INO: u32 = 0x100;
    const STATX_SIZE: u32 = 0x200;
    const STATX_MTIME: u32 = 0x40;
    // struct statx (256 bytes): stx_mask (u32) at 0, stx_ino at 32,
    // stx_size at 40, stx_btime at 80, stx_mtime at 112 (each i64 tv_sec,
    // u32 tv_nsec), stx_dev_major and stx_dev_minor (u32) at 136 and 140.
    let mut b = [0u64; 32];
    let r = syscall6(
        SYS_STATX,
        fd,
        c"".as_ptr() as usize,
        AT_EMPTY_PATH,
        (STATX_BASIC_STATS | STATX_BTIME) as usize,
        b.as_mut_ptr() as usize,
        0,
    );
    let mask = b[0] as u32;
    let need = STATX_INO | STATX_SIZE | STATX_MTIME;
    if r < 0 || mask & need != need {
        // statx refused (a sandbox's filter) or short of an answer: fstat,
        // and no birth time, as before statx was asked at all.
        let mut st = [0u64; 18];
        let r = syscall3(SYS_FSTAT, fd, st.as_mut_ptr() as usize, 0);
        if r < 0 {
            return Err(r);
        }
        return Ok(Identity {
            dev: st[0],
            ino: st[1],
            size: st[6],
            mtime: (st[11] as i64, st[12] as u32),
            born: None,
        });
    }
    let (major, minor) = (b[17] & 0xffff_ffff, b[17] >> 32);
    // glibc's makedev, which is st_dev for every device number Linux has.
    let dev = (major & 0xffff_f000) << 32
        | (major & 0xfff) << 8
        | (minor & 0xffff_ff00) << 12
        | (minor & 0xff);
    Ok(Identity {
        dev,
        ino: b[4],
        size: b[5],
        mtime: (b[14] as i64, b[15] as u32),
        born: (mask & STATX_BTIME != 0).then_some((b[10] as i64, b[11] as u32)),
    })
}

/// The birth time of the file open at `fd` (statx STATX_BTIME), None
/// where the file system does not tell.
pub fn born(fd: usize) -> Option<(i64, u32)> {
    identify(fd).ok()?.born
}
