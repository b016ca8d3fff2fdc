//! Processes: fork, exit, wait, signals, pidfds, ptrace, exec.
//!
//! Statuses, signal numbers and ptrace requests stay raw integers: a
//! restored program stops with and is sent real-time signals, which nix's
//! `Signal` (and so its `WaitStatus`) cannot name.

use super::{cvt, new_fd};
use nix::sys::ptrace;
use nix::unistd::Pid;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Which side of a [`fork`] this is.
pub enum Forked {
    Child,
    Parent(i32),
}

/// fork(2). The child may run any code (allocate, format, open files), as
/// the tracer and the page server do: this process has one thread (see
/// the module's invariant), so no lock is held by a thread the child does
/// not have, and the child is an exact copy of a consistent process.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork is unsound only where another thread could hold a lock
    // (malloc's, stdio's) that the child then finds held forever; restore
    // runs one thread when it forks (the module's invariant), so what the
    // child does after fork is as safe as it was before.
    let forked = unsafe { nix::unistd::fork() }?;
    Ok(match forked {
        nix::unistd::ForkResult::Child => Forked::Child,
        nix::unistd::ForkResult::Parent { child } => Forked::Parent(child.as_raw()),
    })
}

/// Run `child` in a grandchild that is never our child (its parent exits
/// at once: it is reparented to init or a subreaper), in a session of its
/// own. The middle process is made with CLONE_VM|CLONE_VFORK: it shares
/// our memory while we wait for it to exit, so only the grandchild copies
/// our address space, and the middle one's exit frees nothing (a plain
/// double fork copied it twice and tore one copy down while we waited:
/// ~0.3 ms of every traced or lazy restore here). The grandchild runs on
/// the middle process's stack (its own copy of it), 8 MiB reserved; it
/// exits with status 1 if `child` returns. Returns once the middle
/// process is reaped.
pub fn spawn_detached<F: FnOnce()>(child: F) -> io::Result<()> {
    struct Ctx<F> {
        child: Option<F>,
        errno: i32,
    }
    extern "C" fn middle<F: FnOnce()>(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the Ctx our parent passed, alive (it waits,
        // suspended by CLONE_VFORK, until we exit).
        let ctx = unsafe { &mut *(arg as *mut Ctx<F>) };
        // SAFETY: setsid takes no pointers.
        unsafe { libc::setsid() };
        // SAFETY: fork here is as in [`fork`]: our parent has one thread,
        // suspended, and holds no lock; what fork's parent side changes in
        // the shared memory (its own locks) it sets back before it returns.
        let forked = unsafe { libc::fork() };
        match forked {
            0 => {
                if let Some(f) = ctx.child.take() {
                    f();
                }
                exit_now(1)
            }
            -1 => {
                ctx.errno = io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EAGAIN);
                exit_now(1)
            }
            _ => exit_now(0),
        }
    }
    const STACK: usize = 8 << 20;
    // SAFETY: a fresh private anonymous mapping (no pointer of ours is
    // passed); unmapped below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut ctx = Ctx {
        child: Some(child),
        errno: 0,
    };
    // SAFETY: the middle process runs `middle` on the top of `stack`
    // (16-byte aligned, unused by anyone else) with our memory shared;
    // CLONE_VFORK suspends us until it exits, so nothing of ours runs
    // meanwhile, and `ctx` outlives it.
    let pid = unsafe {
        libc::clone(
            middle::<F>,
            (stack as *mut u8).add(STACK) as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut ctx as *mut Ctx<F> as *mut libc::c_void,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, no longer used here (the grandchild
    // has its own copy).
    unsafe { libc::munmap(stack, STACK) };
    if pid < 0 {
        return Err(err);
    }
    let _ = waitpid(pid, 0);
    if ctx.errno != 0 {
        return Err(io::Error::from_raw_os_error(ctx.errno));
    }
    Ok(())
}

/// _exit(code): no atexit handlers, no flushing (a forked child must not
/// run its parent's).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    nix::unistd::setsid()?;
    Ok(())
}

/// getsid(0): our session.
pub fn getsid() -> io::Result<i32> {
    Ok(nix::unistd::getsid(None)?.as_raw())
}

/// getsid(pid): another process's session.
pub fn getsid_of(pid: i32) -> io::Result<i32> {
    Ok(nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))?.as_raw())
}

/// `sig` is pending for this process (blocked and sent).
pub fn signal_pending(sig: i32) -> bool {
    // SAFETY: zeroes are a valid sigset_t, filled by sigpending.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigpending writes the sigset_t we own; sigismember reads it.
    unsafe { libc::sigpending(&mut set) == 0 && libc::sigismember(&set, sig) == 1 }
}

/// The first of `sigs` pending for this process (one sigpending).
pub fn first_pending(sigs: &[i32]) -> Option<i32> {
    // SAFETY: zeroes are a valid sigset_t, filled by sigpending.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigpending writes the sigset_t we own; sigismember reads it.
    unsafe {
        if libc::sigpending(&mut set) != 0 {
            return None;
        }
        sigs.iter()
            .copied()
            .find(|&s| libc::sigismember(&set, s) == 1)
    }
}

/// waitpid(pid, flags): (the pid, its raw status) of the first change.
pub fn waitpid(pid: i32, flags: i32) -> io::Result<(i32, i32)> {
    let mut st = 0;
    // SAFETY: waitpid writes one int, `st`, which we own.
    let r = cvt(unsafe { libc::waitpid(pid, &mut st, flags) })?;
    Ok((r, st))
}

/// kill(pid, sig).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// pidfd_open(pid, 0).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new fd.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    new_fd(r as libc::c_int)
}

/// A copy of fd `fd` of process `pid` (pidfd_getfd).
pub fn fd_of_process(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    let p = pidfd_open(pid)?;
    // SAFETY: integers only; returns a new fd (close-on-exec).
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, p.as_raw_fd(), fd, 0) })?;
    new_fd(r as libc::c_int)
}

/// pidfd_send_signal(pidfd, sig, NULL, 0): the process the pidfd pins,
/// never another that got its pid since.
pub fn pidfd_send_signal(pidfd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: integers only (no siginfo: null).
    cvt(unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, 0, 0) })?;
    Ok(())
}

/// Block every signal (rt_sigprocmask SIG_SETMASK with all 64 bits: glibc's
/// sigprocmask would keep its own two unblocked).
pub fn block_all_signals() -> io::Result<()> {
    let all = !0u64;
    // SAFETY: rt_sigprocmask reads one 8-byte mask, `all`, which we own;
    // the old mask is not written (null).
    cvt(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            0usize,
            8,
        )
    })?;
    Ok(())
}

/// Set the signal mask to exactly `sigs` blocked.
pub fn block_only(sigs: &[i32]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: a sigset_t we own; the old mask is not written (null).
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// signal(sig, SIG_DFL).
pub fn default_disposition(sig: i32) -> io::Result<()> {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run in a
    // signal context because of this.
    if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// execve(path, args, no environment). Returns only on failure.
pub fn execve(path: &CStr, args: &[CString]) -> io::Error {
    let env: [&CStr; 0] = [];
    match nix::unistd::execve(path, args, &env) {
        Err(e) => e.into(),
        Ok(never) => match never {},
    }
}

/// PTRACE_SEIZE with these options.
pub fn ptrace_seize(pid: i32, options: i32) -> io::Result<()> {
    Ok(ptrace::seize(
        Pid::from_raw(pid),
        ptrace::Options::from_bits_retain(options),
    )?)
}

/// PTRACE_GETREGS.
pub fn getregs(pid: i32) -> io::Result<libc::user_regs_struct> {
    Ok(ptrace::getregs(Pid::from_raw(pid))?)
}

/// PTRACE_SETREGS.
pub fn setregs(pid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    Ok(ptrace::setregs(Pid::from_raw(pid), *regs)?)
}

/// PTRACE_GETSIGINFO of a tracee in a signal-delivery-stop.
pub fn getsiginfo(pid: i32) -> io::Result<libc::siginfo_t> {
    Ok(ptrace::getsiginfo(Pid::from_raw(pid))?)
}

/// The ptrace requests that resume (or release) a stopped tracee.
#[derive(Debug, Clone, Copy)]
pub enum Resume {
    Cont,
    Syscall,
    Listen,
    Detach,
}

/// Resume tracee `pid` with `req`, delivering signal `sig` (0: none).
pub fn resume(req: Resume, pid: i32, sig: i32) -> io::Result<()> {
    let req = match req {
        Resume::Cont => libc::PTRACE_CONT,
        Resume::Syscall => libc::PTRACE_SYSCALL,
        Resume::Listen => libc::PTRACE_LISTEN as libc::c_uint,
        Resume::Detach => libc::PTRACE_DETACH,
    };
    // SAFETY: these requests take no pointer: data is a signal number.
    cvt(unsafe { libc::ptrace(req, pid, 0usize, sig as usize) })?;
    Ok(())
}

/// struct clone_args up to `cgroup` (clone3 reads the size it is given).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 without CLONE_VM or a stack: fork(2) with `args`' exit signal
/// and PID wishes. As for [`fork`], this process runs one thread (the
/// module's invariant), so the child finds no lock held by a thread it
/// does not have; glibc's fork handlers do not run, and restore
/// registers none.
fn clone3_fork(args: &CloneArgs) -> io::Result<Forked> {
    // SAFETY: without CLONE_VM or a stack the child gets a copy of this
    // process and returns here with 0; the kernel reads `args` (and what
    // its `set_tid` points to, the caller's, alive for the call).
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    Ok(if r == 0 {
        Forked::Child
    } else {
        Forked::Parent(r as i32)
    })
}

/// A child that ends at once and that nothing reaps but
/// `waitpid(pid, __WALL)`: clone3 with exit signal 0 (no SIGCHLD is sent,
/// and a parent ignoring SIGCHLD does not reap it automatically). Its
/// PID (a pidfd of it can be opened until it is waited for).
pub fn ended_child() -> io::Result<i32> {
    match clone3_fork(&CloneArgs::default())? {
        Forked::Child => exit_now(0),
        Forked::Parent(pid) => Ok(pid),
    }
}

/// A child with PID `pid` that waits, doing nothing, until it is killed
/// (SIGKILL), and sends no SIGCHLD when it ends (exit signal 0: reaped by
/// `waitpid(pid, __WALL)` only). EEXIST: the PID is taken.
fn holder(pid: i32) -> io::Result<i32> {
    let tid = [pid as libc::pid_t];
    let maker = std::process::id() as i32;
    match clone3_fork(&CloneArgs {
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    })? {
        Forked::Child => {
            // Gone with its maker, should that end first (or have ended
            // already); holding none of its fds (a pipe's or socket's end
            // would keep its peer from seeing the end).
            if die_with_parent().is_err() || getppid() != maker {
                exit_now(1);
            }
            // SAFETY: integers only; the child owns nothing it closes
            // here (it only pauses until killed).
            unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
            loop {
                // SAFETY: pause takes nothing.
                unsafe { libc::pause() };
            }
        }
        Forked::Parent(pid) => Ok(pid),
    }
}

/// Kill and reap a [`holder`].
fn release(pid: i32) {
    let _ = kill(pid, libc::SIGKILL);
    let _ = waitpid(pid, libc::__WALL);
}

/// A [`holder`] with PID `pgid` that leads a process group of that id,
/// for processes to join whose captured group's leader is gone.
pub fn group_holder(pgid: i32) -> io::Result<i32> {
    let pid = holder(pgid)?;
    // (Its group made by the parent: made before this returns, whenever
    // the child runs.)
    if let Err(e) = setpgid(pid, pid) {
        release(pid);
        return Err(e);
    }
    Ok(pid)
}

/// Enter /proc/PID of a [`holder`] made with PID `pid` for the moment and
/// ended at once: the working directory is then that dead process's /proc
/// directory (getcwd fails with ENOENT, /proc/self/cwd reads
/// "/proc/PID (deleted)"), as the captured one was (zdtm unhashed_proc).
pub fn enter_dead_proc_dir(pid: i32) -> io::Result<()> {
    // (Processes of a tree with that same working directory each make
    // one, in turn: the PID is free again microseconds later.)
    let t0 = std::time::Instant::now();
    let p = loop {
        match holder(pid) {
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    && t0.elapsed() < std::time::Duration::from_secs(2) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => break r?,
        }
    };
    let path = std::ffi::CString::new(format!("/proc/{p}")).expect("no NUL");
    let r = crate::sys::chdir(&path);
    release(p);
    r
}

/// fork(2) that gives the child PID `pid` (clone3 with `set_tid`; needs
/// CAP_SYS_ADMIN over the PID namespace). EEXIST: the PID is taken.
pub fn fork_with_pid(pid: i32) -> io::Result<Forked> {
    let tid = [pid as libc::pid_t];
    clone3_fork(&CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    })
}

/// [`fork_with_pid`] for a stand-in (`crate::standin`): exit signal 0, so
/// that its end, when its parent's shim kills it, sends no SIGCHLD the
/// restored parent would see (reaped by `waitpid(pid, __WALL)` only).
pub fn fork_stand_in(pid: i32) -> io::Result<Forked> {
    let tid = [pid as libc::pid_t];
    clone3_fork(&CloneArgs {
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    })
}

/// getppid(2).
pub fn getppid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getppid() }
}

/// SIGKILL when the parent thread ends (PR_SET_PDEATHSIG; kept across a
/// non-setuid exec).
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) })?;
    Ok(())
}

/// setpgid(pid, pgid).
pub fn setpgid(pid: i32, pgid: i32) -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::setpgid(pid, pgid) })?;
    Ok(())
}

/// getpgid(pid).
pub fn getpgid(pid: i32) -> io::Result<i32> {
    // SAFETY: integers only.
    cvt(unsafe { libc::getpgid(pid) })
}

/// Wait until child `pid` has exited, leaving it a zombie (WNOWAIT).
pub fn wait_exited_nowait(pid: i32) -> io::Result<()> {
    // SAFETY: waitid writes one siginfo_t, which we own.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: as above.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        match cvt(r) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// End this process so that its parent's wait reports `status` (as
/// waitpid gives it): exit with its code, or die of its signal without a
/// core dump.
pub fn die_with(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: integers only; a process that is not dumpable dumps no
        // core, so the status has no core flag.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let _ = default_disposition(sig);
        // SAFETY: a sigset_t we own, then integers only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        exit_now(128 + sig);
    }
    exit_now(libc::WEXITSTATUS(status))
}

/// pidfd_open(pid, flags) (flags: 0 or O_NONBLOCK, PIDFD_NONBLOCK).
pub fn pidfd_open_flags(pid: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a new fd we own.
    new_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) } as i32)
}

/// Block `sigs` in this (single-threaded) process.
pub fn block_signals(sigs: &[i32]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: a sigset_t we own; no old set wanted.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// Block `sigs`; the mask before, for [`set_signal_mask`].
pub fn block_signals_saving(sigs: &[i32]) -> io::Result<libc::sigset_t> {
    let set = sigset(sigs);
    // SAFETY: zeroes are a valid sigset_t, overwritten by sigprocmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset_ts we own.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) })?;
    Ok(old)
}

/// Set the signal mask to `mask` (from [`block_signals_saving`]).
pub fn set_signal_mask(mask: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: a sigset_t we own; no old set wanted.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) })?;
    Ok(())
}

/// Wait for one of `sigs` (blocked); the signal and its si_code
/// (SI_KERNEL: sent by the kernel, e.g. a terminal's ^C to its foreground
/// process group).
pub fn wait_signal_info(sigs: &[i32]) -> io::Result<(i32, i32)> {
    let set = sigset(sigs);
    // SAFETY: zeroes are a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a sigset_t and a siginfo_t we own.
    let sig = cvt(unsafe { libc::sigwaitinfo(&set, &mut info) })?;
    Ok((sig, info.si_code))
}

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set we own; sigaddset changes it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Close every fd from `first` on.
pub fn close_from(first: i32) {
    // SAFETY: close_range takes integers only and closes fds of ours.
    unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) };
}

/// A new PID namespace for our next child (it becomes its init, PID 1)
/// and a mount namespace of our own (for that namespace's /proc).
pub fn unshare_pid_and_mount_ns() -> io::Result<()> {
    // SAFETY: unshare takes flags only; it changes this process's
    // namespaces (the PID one only for children made from now on).
    cvt(unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) })?;
    Ok(())
}

/// In a mount namespace of our own: nothing mounted from here on goes
/// back to the one we came from (MS_SLAVE), and a proc for our PID
/// namespace on /proc (so /proc/self is us).
pub fn mount_own_proc() -> io::Result<()> {
    let root = c"/";
    let proc_ = c"proc";
    let at = c"/proc";
    // SAFETY: NUL-terminated strings that outlive the calls; no data.
    unsafe {
        cvt(libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))?;
        cvt(libc::mount(
            proc_.as_ptr(),
            at.as_ptr(),
            proc_.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

extern "C" fn no_op(_: libc::c_int) {}

/// Give `sig` a handler that does nothing. A PID namespace's init gets
/// no signal it has no handler for, even blocked for sigwaitinfo (the
/// kernel drops it when it is sent).
pub fn catch_signal(sig: i32) -> io::Result<()> {
    let h = no_op as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler does nothing, so no code of ours runs in a
    // signal context; the signal is blocked and waited for anyway.
    if unsafe { libc::signal(sig, h) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close every fd from `first` on but `keep`.
pub fn close_from_except(first: i32, keep: i32) {
    if keep < first {
        return close_from(first);
    }
    // SAFETY: close_range takes integers only and closes fds of ours.
    unsafe {
        if keep > first {
            libc::syscall(libc::SYS_close_range, first as u32, (keep - 1) as u32, 0);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0);
    }
}

/// CLOCK_MONOTONIC now, in ns (0 if it cannot be read).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
