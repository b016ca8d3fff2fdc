//! ptrace, waitpid and signal sending, as safe functions: each request
//! names a task and passes only memory owned by the call.

use libc::{c_void, iovec, user_regs_struct};
use std::io;

const NT_PRSTATUS: libc::c_int = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

fn ok(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// PTRACE_SEIZE with `options`.
pub fn seize(tid: i32, options: libc::c_int) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers (addr 0, data = options).
    ok(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, options as usize) })
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_GET_SECCOMP_METADATA: libc::c_uint = 0x420d;

/// One instruction of a classic BPF program (`struct sock_filter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The instructions of seccomp filter `index` of a stopped tracee (0: the
/// one installed first). Err(ENOENT) past the newest.
pub fn seccomp_filter(tid: i32, index: usize) -> io::Result<Vec<SockFilter>> {
    // SAFETY: with a null buffer the kernel only returns the count.
    let n = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index,
            std::ptr::null_mut::<c_void>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut v = vec![SockFilter::default(); n as usize];
    // SAFETY: the kernel writes that filter's n instructions (the count it
    // just gave; a filter never changes) into `v`, which holds n.
    let m = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, v.as_mut_ptr()) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    v.truncate(m as usize);
    Ok(v)
}

/// The flags seccomp filter `index` of a stopped tracee was installed
/// with, as far as the kernel keeps them (SECCOMP_FILTER_FLAG_LOG).
pub fn seccomp_flags(tid: i32, index: usize) -> io::Result<u64> {
    #[repr(C)]
    struct Metadata {
        filter_off: u64,
        flags: u64,
    }
    let mut m = Metadata {
        filter_off: index as u64,
        flags: 0,
    };
    // SAFETY: the kernel reads and writes at most `addr` bytes of `m`.
    ok(unsafe {
        libc::ptrace(
            PTRACE_GET_SECCOMP_METADATA,
            tid,
            std::mem::size_of::<Metadata>(),
            &mut m as *mut Metadata,
        )
    })?;
    Ok(m.flags)
}

/// A request that takes no pointers: PTRACE_INTERRUPT, PTRACE_CONT,
/// PTRACE_SYSCALL, PTRACE_DETACH, PTRACE_LISTEN (`sig`: the signal to
/// deliver, 0 none).
pub fn request(req: libc::c_uint, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: these requests read no memory of ours; data is a signal number.
    ok(unsafe { libc::ptrace(req, tid, 0usize, sig as usize) })
}

/// PTRACE_GETSIGINFO of a task in a signal-delivery-stop.
pub fn siginfo(tid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one siginfo_t into `si`, which we own.
    ok(unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, tid, 0usize, &mut si as *mut _) })?;
    Ok(si)
}

/// The general registers (NT_PRSTATUS: fs_base and gs_base included).
pub fn regs(tid: i32) -> io::Result<user_regs_struct> {
    // SAFETY: user_regs_struct is plain data; all-zero is valid.
    let mut regs: user_regs_struct = unsafe { std::mem::zeroed() };
    let mut iov = iovec {
        iov_base: &mut regs as *mut _ as *mut c_void,
        iov_len: std::mem::size_of::<user_regs_struct>(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `regs`.
    ok(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_PRSTATUS,
            &mut iov as *mut iovec,
        )
    })?;
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &user_regs_struct) -> io::Result<()> {
    let mut iov = iovec {
        iov_base: regs as *const _ as *mut c_void,
        iov_len: std::mem::size_of::<user_regs_struct>(),
    };
    // SAFETY: the kernel reads iov_len bytes from `regs`.
    ok(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            NT_PRSTATUS,
            &mut iov as *mut iovec,
        )
    })
}

/// The XSAVE area (NT_X86_XSTATE) into `buf`; the bytes the kernel wrote.
pub fn xstate(tid: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `buf`.
    ok(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE,
            &mut iov as *mut iovec,
        )
    })?;
    Ok(iov.iov_len)
}

pub fn sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: PTRACE_GETSIGMASK writes `addr` (8) bytes into `mask`.
    ok(unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK, tid, 8usize, &mut mask as *mut u64) })?;
    Ok(mask)
}

pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads `addr` (8) bytes from `mask`.
    ok(unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, tid, 8usize, &mask as *const u64) })
}

pub fn rseq(tid: i32) -> io::Result<libc::ptrace_rseq_configuration> {
    let mut c = libc::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    // SAFETY: the kernel writes at most `addr` bytes into `c`.
    ok(unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of_val(&c),
            &mut c as *mut _,
        )
    })?;
    Ok(c)
}

/// The thread's syscall user dispatch mode (PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
/// Linux 6.4; 0: off).
pub fn syscall_user_dispatch(tid: i32) -> io::Result<u64> {
    const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4211;
    // struct ptrace_sud_config: mode, selector, offset, len.
    let mut c = [0u64; 4];
    // SAFETY: the kernel writes at most `addr` bytes (32) into `c`.
    ok(unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
            tid,
            std::mem::size_of_val(&c),
            c.as_mut_ptr(),
        )
    })?;
    Ok(c[0])
}

/// get_robust_list(tid): (head, len).
pub fn robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let (mut head, mut len) = (0u64, 0u64);
    // SAFETY: get_robust_list writes one pointer and one size_t we own.
    ok(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut u64,
        )
    })?;
    Ok((head, len))
}

/// waitpid(pid, flags), retried on EINTR: (pid or 0, status).
pub fn waitpid(pid: i32, flags: libc::c_int) -> io::Result<(i32, i32)> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int to `status`, which we own.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r >= 0 {
            return Ok((r, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// kill(pid, sig); errors ignored by callers that only need best effort.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers.
    ok(unsafe { libc::kill(pid, sig) } as libc::c_long)
}

/// rt_tgsigqueueinfo(tgid, tid, si.si_signo, si): queue a signal with its
/// siginfo to one thread.
pub fn tgsigqueueinfo(tgid: i32, tid: i32, si: &libc::siginfo_t) -> io::Result<()> {
    let mut copy = *si;
    // SAFETY: the kernel reads one siginfo_t from our copy.
    ok(unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            tgid,
            tid,
            copy.si_signo,
            &mut copy as *mut libc::siginfo_t,
        )
    })
}

/// tgkill(tgid, tid, sig).
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes integers.
    ok(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) })
}
