//! The program's other threads, recreated.
//!
//! The main thread clones each one (clone3: same address space, files,
//! fs, signal handlers and SysV undo list; its captured fs base as TLS;
//! its captured TID where that TID is free and we may ask for it), on a
//! small stack of its own in the window. Each thread then restores what
//! is its own — gs base, clear-child-tid address, robust list and the
//! cached TIDs in its TCB and robust mutexes, rseq, scheduling, timer
//! slack, name, its queued signals, credentials — builds its signal
//! frame on its own program stack, counts itself ready and leaves the
//! shim: it jumps into the program's `syscall; ret` code to wait on a
//! futex word just below its frame, and when woken returns into the
//! program's `rt_sigreturn` code, which loads its registers.
//!
//! The main thread waits until every thread is ready and then, for each,
//! until the thread is inside its wait (FUTEX_CMP_REQUEUE moves it to the
//! release word and says it did): only then is no thread running shim
//! code, and the window can go. The last steps wake the release word
//! after the window is unmapped (see `frame::finish_*`), so every thread
//! resumes together, each exactly as captured. A thread whose wait is
//! restarted after a stop (SIGSTOP, then SIGCONT) waits on its own word
//! again: the finishing chain (or the tracer) sets and wakes each
//! thread's own word just before the release word, so that such a
//! thread, too, goes on only once the window is gone and the executable
//! named (without the chain's mapping, [`set_own_words`] sets and wakes
//! them just before the chain, and such a thread can run before the
//! window is gone; a fork then would copy it).

use crate::mem::*;
use crate::sys::*;
use crate::{check, die, W};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use cryo_image::handoff::flags;
use cryo_image::task::UNKNOWN;
use cryo_image::threads::Thread;
use cryo_image::{process_flags, Image};

/// Thread tables, then one stack per thread.
const AT: usize = W + 0x3800_0000;
/// New TIDs (u32 each).
const NEW_TIDS: usize = AT;
/// Each thread's wait word (u64 address each).
const WAITS: usize = AT + 0x4000;
const STACKS: usize = AT + 0x1_0000;
const STACK_LEN: usize = 24 << 10;
/// Each thread's buffer for one seccomp filter of its own (mapped only
/// for an image whose threads have chains of their own).
const SECCOMP_BUFS: usize = W + 0x2800_0000;
const SECCOMP_BUF_LEN: usize = cryo_image::task::MAX_SECCOMP_FILTER_INSNS * 8;
/// Most threads the window holds stacks for (capture refuses more).
pub const MAX: usize = 4096;

/// The image and the hand-off flags, for the threads (set before the
/// first clone, read-only after).
static IMG: AtomicUsize = AtomicUsize::new(0);
static FLAGS: AtomicUsize = AtomicUsize::new(0);
/// Threads that have finished their state and are leaving the shim.
static READY: AtomicU32 = AtomicU32::new(0);

#[repr(C)]
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

/// Whether the main thread runs pinned to its CPU while the threads are
/// made ([`pin`]), and its affinity before (the captured one).
static PINNED: AtomicBool = AtomicBool::new(false);
static ORIG: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

/// Keep the main thread, and so the threads it clones, on the CPU it runs
/// on until every thread waits in the program's code: each thread, and
/// the main thread once they are gathered ([`unpin`]), then takes its own
/// affinity back. In a VM a wake-up of another CPU (a new thread placed
/// on the idle one, the main thread woken by the last ready thread)
/// waits for the host to run that virtual CPU: six threads took 0.15-2.4
/// ms to make, one restore in two over 1 ms; pinned, 0.17-0.47 ms
/// (docs/benchmarks.md, stop 47).
fn pin() {
    PINNED.store(false, Ordering::Relaxed);
    let mut mask = [0u64; 16];
    let r = syscall3(
        SYS_SCHED_GETAFFINITY,
        0,
        core::mem::size_of_val(&mask),
        mask.as_mut_ptr() as usize,
    );
    let mut cpu = 0u32;
    if r <= 0
        || syscall3(SYS_GETCPU, &mut cpu as *mut u32 as usize, 0, 0) != 0
        || mask.iter().map(|w| w.count_ones()).sum::<u32>() <= 1
        || cpu as usize >= 64 * mask.len()
    {
        return;
    }
    for (o, w) in ORIG.iter().zip(mask) {
        o.store(w, Ordering::Relaxed);
    }
    let mut one = [0u64; 16];
    one[cpu as usize / 64] = 1 << (cpu % 64);
    let r = syscall3(
        SYS_SCHED_SETAFFINITY,
        0,
        core::mem::size_of_val(&one),
        one.as_ptr() as usize,
    );
    PINNED.store(r == 0, Ordering::Release);
}

/// The affinity a thread made while pinned takes back: its own if the
/// capture knew it, else the main thread's.
fn set_affinity(mask: &[u64; 16], what: core::fmt::Arguments) {
    check(
        syscall3(
            SYS_SCHED_SETAFFINITY,
            0,
            core::mem::size_of_val(mask),
            mask.as_ptr() as usize,
        ),
        what,
    );
}

fn orig() -> [u64; 16] {
    let mut m = [0u64; 16];
    for (w, o) in m.iter_mut().zip(ORIG.iter()) {
        *w = o.load(Ordering::Relaxed);
    }
    m
}

/// The main thread's own affinity back, once every thread is gathered.
pub fn unpin() {
    if PINNED.swap(false, Ordering::AcqRel) {
        set_affinity(
            &orig(),
            format_args!("sched_setaffinity (the main thread's)"),
        );
    }
}

/// Clone every thread of the image; returns how many. Each goes its own
/// way (`thread_main`) until it waits in the program's code.
pub fn spawn_all(img: &Image, flags: u64) -> usize {
    let n = img.threads().len();
    if n == 0 {
        return 0;
    }
    if n > MAX {
        die(format_args!("{n} threads: the shim holds at most {MAX}"));
    }
    pin();
    map_anon_at(AT, STACKS - AT + n * STACK_LEN, "thread stacks");
    let own_filters = img
        .seccomp()
        .iter()
        .any(|i| i.thread != cryo_image::task::EVERY_THREAD && i.thread > 0);
    if own_filters {
        map_anon_at(
            SECCOMP_BUFS,
            n * SECCOMP_BUF_LEN,
            "threads' seccomp buffers",
        );
    }
    IMG.store(img as *const Image as usize, Ordering::Release);
    FLAGS.store(flags as usize, Ordering::Release);
    const CLONE_VM: u64 = 0x100;
    const CLONE_FS: u64 = 0x200;
    const CLONE_FILES: u64 = 0x400;
    const CLONE_SIGHAND: u64 = 0x800;
    const CLONE_THREAD: u64 = 0x1_0000;
    const CLONE_SYSVSEM: u64 = 0x4_0000;
    const CLONE_SETTLS: u64 = 0x8_0000;
    for (i, t) in img.threads().iter().enumerate() {
        let want = t.tid as i32;
        let mut args = CloneArgs {
            flags: CLONE_VM
                | CLONE_FS
                | CLONE_FILES
                | CLONE_SIGHAND
                | CLONE_THREAD
                | CLONE_SYSVSEM
                | CLONE_SETTLS,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: 0,
            stack: (STACKS + i * STACK_LEN) as u64,
            stack_size: STACK_LEN as u64,
            tls: t.regs.fs_base,
            set_tid: &want as *const i32 as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        // Its own id where it is free and we may choose it (root); else
        // a new one (the cached copies are rewritten).
        let mut r = clone_thread(&args, i);
        if r == -EEXIST || r == -EPERM || r == -EINVAL {
            args.set_tid = 0;
            args.set_tid_size = 0;
            r = clone_thread(&args, i);
        }
        let tid = check(r, format_args!("clone3 of thread {}", t.tid));
        poke_u32(NEW_TIDS + i * 4, tid as u32);
    }
    n
}

const EEXIST: isize = 17;
const EPERM: isize = 1;

/// clone3 whose child starts `thread_main(index)` on its new stack.
fn clone_thread(args: &CloneArgs, index: usize) -> isize {
    let ret: isize;
    // SAFETY: clone3 with CLONE_VM|CLONE_THREAD: the child shares this
    // address space and starts at the next instruction on `args.stack`
    // (a fresh stack in the window), rax = 0; it calls thread_main, which
    // never returns. The parent gets the child's id (or -errno) in rax;
    // rcx and r11 are clobbered by `syscall`; r12 is only read.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call {entry}",
            "ud2",
            "2:",
            entry = sym thread_entry,
            inlateout("rax") SYS_CLONE3 as isize => ret,
            in("rdi") args as *const CloneArgs as usize,
            in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r12") index,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// A thread's new id (or the old one's image: `old` unchanged if it is
/// not a captured thread); the main thread's is the new pid.
pub fn new_tid(img: &Image, old: u32, new_pid: u32) -> u32 {
    if old == img.process().pid {
        return new_pid;
    }
    match img.threads().iter().position(|t| t.tid == old) {
        Some(i) => peek_u32(NEW_TIDS + i * 4),
        None => old,
    }
}

extern "C" fn thread_entry(index: usize) -> ! {
    // SAFETY: IMG was set from a live &Image before the first clone; the
    // main thread's `restore` never returns, so the image outlives every
    // thread's use of it (until each leaves the shim).
    let img: &Image = unsafe { &*(IMG.load(Ordering::Acquire) as *const Image) };
    let flags = FLAGS.load(Ordering::Acquire) as u64;
    thread_main(img, index, flags)
}

fn thread_main(img: &Image, index: usize, handoff_flags: u64) -> ! {
    let Some(t) = img.threads().get(index) else {
        die(format_args!("thread {index}: not in the image"));
    };
    let r = t.regs;
    if r.gs_base != 0 {
        const ARCH_SET_GS: usize = 0x1001;
        check(
            syscall3(SYS_ARCH_PRCTL, ARCH_SET_GS, r.gs_base as usize, 0),
            format_args!("thread {}: arch_prctl(ARCH_SET_GS)", t.tid),
        );
    }
    // set_tid_address returns our id.
    let tid = syscall3(SYS_SET_TID_ADDRESS, t.clear_child_tid as usize, 0, 0) as u32;
    if tid != t.tid {
        crate::tls::fix_cached_tid(img, r.fs_base, 0, t.tid, tid);
        crate::tls::fix_robust_owners(img, t.robust_list, t.tid, tid);
        crate::tls::fix_mutex_owners(img, index as u64 + 1, t.tid, tid);
    }
    if t.robust_list != 0 {
        syscall3(
            SYS_SET_ROBUST_LIST,
            t.robust_list as usize,
            t.robust_list_len as usize,
            0,
        );
    }
    if t.flags & process_flags::HAS_RSEQ != 0 && t.rseq_size != 0 {
        check(
            syscall6(
                SYS_RSEQ,
                t.rseq_addr as usize,
                t.rseq_size as usize,
                0,
                t.rseq_sig as usize,
                0,
                0,
            ),
            format_args!("thread {}: rseq registration", t.tid),
        );
    }
    sched(img, &t);
    const PR_SET_NAME: usize = 15;
    let mut comm = [0u8; 17];
    comm[..16].copy_from_slice(&t.comm);
    syscall3(SYS_PRCTL, PR_SET_NAME, comm.as_ptr() as usize, 0);
    // Its own queued signals (blocked until its rt_sigreturn).
    let pid = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    for q in img.signals().iter() {
        let sig = q.signo as usize;
        if q.thread as usize != index + 1 || q.shared != 0 || sig == SIGKILL || sig == SIGSTOP {
            continue;
        }
        check(
            syscall6(
                SYS_RT_TGSIGQUEUEINFO,
                pid,
                tid as usize,
                sig,
                q.info.as_ptr() as usize,
                0,
                0,
            ),
            format_args!("thread {}: queueing signal {sig} again", t.tid),
        );
    }
    // Credentials are per thread: this one sets its own (recorded when
    // some thread's differ from the main thread's, else the main
    // thread's), then no_new_privs.
    if let Some(c) = img.thread_creds().get(index) {
        crate::task::restore_creds(img, &c);
    } else if handoff_flags & flags::SAME_CREDS == 0 {
        if let Some(c) = img.creds() {
            crate::task::restore_creds(img, &c);
        }
    }
    if let Some(task) = img.task() {
        if task.no_new_privs == 1 {
            const PR_SET_NO_NEW_PRIVS: usize = 38;
            check(
                syscall6(SYS_PRCTL, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0),
                format_args!("thread {}: PR_SET_NO_NEW_PRIVS", t.tid),
            );
        }
    }
    // Its frame, its wait word below it, and out of the shim.
    let alt = img.frame_alt(index + 1);
    let frame_sp = crate::frame::write(
        cryo_image::frame_top(r.rsp, alt, img.process().xsave_size) as usize,
        &r,
        Some((
            img.xsave_of(index + 1),
            img.process().xcr0,
            crate::frame::tiles(img),
        )),
        t.sig_blocked,
        (t.sigaltstack_sp, t.sigaltstack_flags, t.sigaltstack_size),
    );
    let word = frame_sp - 16;
    poke_u32(word, 0);
    poke_u64(WAITS + index * 8, word as u64);
    let g = crate::frame::checked_gadgets(img);
    poke_u64(frame_sp - 8, g.sigreturn);
    // Seccomp filters of its own (capture checked they allow what
    // follows: the wake below, the wait and rt_sigreturn; their
    // arguments, addresses only known here, are checked here, before
    // they are in: a wait that failed would run the program now).
    let ready = [
        SYS_FUTEX,
        READY.as_ptr() as usize,
        FUTEX_WAKE_PRIVATE,
        1,
        0,
        0,
        0,
    ];
    // Made pinned to the main thread's CPU (`pin`): its own affinity
    // back, as late as can be (it stays on that CPU until it waits), and
    // before its own seccomp filters.
    if PINNED.load(Ordering::Acquire) {
        let mask = if t.affinity != [0; 16] {
            t.affinity
        } else {
            orig()
        };
        set_affinity(&mask, format_args!("thread {}: sched_setaffinity", t.tid));
    }
    if img.seccomp().iter().any(|i| i.thread == index as u32 + 1) {
        let wait = [SYS_FUTEX, word, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0];
        let me = index as u32 + 1;
        for (what, call) in [
            ("count itself ready", ready),
            ("wait for its release", wait),
        ] {
            if !crate::seccomp::allows(img, me, call) {
                die(format_args!(
                    "thread {}'s own seccomp filters would stop it as it would {what} (futex at {:#x})",
                    t.tid, call[1]
                ));
            }
        }
        // SAFETY: spawn_all mapped SECCOMP_BUF_LEN bytes for each thread
        // at SECCOMP_BUFS when any thread has filters of its own; this
        // thread's slot is its alone.
        let buf = unsafe {
            core::slice::from_raw_parts_mut(
                (SECCOMP_BUFS + index * SECCOMP_BUF_LEN) as *mut u64,
                cryo_image::task::MAX_SECCOMP_FILTER_INSNS,
            )
        };
        crate::seccomp::install_chain(img, index as u32 + 1, false, buf);
    }
    READY.fetch_add(1, Ordering::AcqRel);
    crate::frame::via_gadget(g.syscall_ret, ready);
    // SAFETY: frame_sp - 8 holds the sigreturn gadget's address and
    // frame_sp a complete rt_sigframe; the syscall gadget waits on `word`
    // (FUTEX_WAIT while it is 0), then `ret` enters the sigreturn gadget.
    // Nothing of the shim runs after the jump.
    unsafe {
        core::arch::asm!(
            "mov rsp, {sp}",
            "jmp {gadget}",
            sp = in(reg) frame_sp - 8,
            gadget = in(reg) g.syscall_ret,
            in("rax") SYS_FUTEX,
            in("rdi") word,
            in("rsi") FUTEX_WAIT_PRIVATE,
            in("rdx") 0usize,
            in("r10") 0usize,
            options(noreturn)
        )
    }
}

/// Scheduling that differs from the main thread's (which the clone
/// inherited), and the timer slack.
fn sched(img: &Image, t: &Thread) {
    let main = img.task();
    let known = |v: i32| v as i64 != UNKNOWN && v != i32::MIN;
    let (m_policy, m_prio, m_nice, m_aff) = match &main {
        Some(m) => (m.sched_policy, m.sched_priority, m.nice, m.affinity),
        None => (UNKNOWN, UNKNOWN, UNKNOWN, [0; 16]),
    };
    if known(t.sched_policy)
        && (t.sched_policy as i64 != m_policy || t.sched_priority as i64 != m_prio)
    {
        let prio = t.sched_priority.max(0);
        check(
            syscall3(
                SYS_SCHED_SETSCHEDULER,
                0,
                t.sched_policy as usize,
                &prio as *const i32 as usize,
            ),
            format_args!("thread {}: sched_setscheduler", t.tid),
        );
    }
    if known(t.nice) && t.nice as i64 != m_nice {
        const PRIO_PROCESS: usize = 0;
        check(
            syscall3(SYS_SETPRIORITY, PRIO_PROCESS, 0, t.nice as isize as usize),
            format_args!("thread {}: setpriority({})", t.tid, t.nice),
        );
    }
    if t.affinity != [0; 16] && t.affinity != m_aff && !PINNED.load(Ordering::Acquire) {
        check(
            syscall3(
                SYS_SCHED_SETAFFINITY,
                0,
                core::mem::size_of_val(&t.affinity),
                t.affinity.as_ptr() as usize,
            ),
            format_args!("thread {}: sched_setaffinity", t.tid),
        );
    }
    if t.timer_slack_ns != u64::MAX {
        const PR_SET_TIMERSLACK: usize = 29;
        syscall3(SYS_PRCTL, PR_SET_TIMERSLACK, t.timer_slack_ns as usize, 0);
    }
    // Its I/O priority where it differs from the main thread's, which
    // the clone gave it (`ionice -p PID` sets the main thread's only).
    let iop = cryo_image::threads::IOPRIO_KNOWN;
    if t.ioprio & iop != 0 {
        const SYS_IOPRIO_SET: usize = 251;
        const SYS_IOPRIO_GET: usize = 252;
        const IOPRIO_WHO_PROCESS: usize = 1;
        let want = (t.ioprio & !iop) as i64;
        let inherited = match main.as_ref().map(|m| m.ioprio) {
            Some(v) if v != UNKNOWN => v,
            _ => syscall3(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, 0, 0) as i64,
        };
        if want != inherited {
            check(
                syscall3(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, want as usize),
                format_args!("thread {}: ioprio_set({want:#x})", t.tid),
            );
        }
    }
}

/// Wait until every one of the `n` threads is inside its wait in the
/// program's code, with none left in the shim: then each is moved onto
/// the release word `release` (a futex word the caller placed in the
/// finishing chain's mapping, or on the main thread's stack below its
/// frame). A wait restarted after a stop (SIGSTOP, then SIGCONT) waits on
/// the thread's own word again: the finishing chain (or the tracer) sets
/// and wakes each, in its last calls; without the chain's mapping,
/// [`set_own_words`] does, just before the chain.
pub fn gather(n: usize, release: usize) {
    wait_ready(n);
    poke_u32(release, 0);
    for i in 0..n {
        let word = peek_u64(WAITS + i * 8) as usize;
        loop {
            // Move (up to) one waiter of `word` to `release` if `word`
            // is still 0: 1 = it was there and is now on `release`.
            let r = syscall6(SYS_FUTEX, word, FUTEX_CMP_REQUEUE_PRIVATE, 0, 1, release, 0);
            if r == 1 {
                break;
            }
            if r < 0 {
                die(format_args!("gathering thread {i}: futex errno {}", -r));
            }
            // Counted itself ready, not yet in its wait: a few
            // instructions away.
            syscall3(SYS_SCHED_YIELD, 0, 0, 0);
        }
    }
}

/// Wait until every one of the `n` threads has counted itself ready: its
/// own wait word ([`own_word`]) is known then.
pub fn wait_ready(n: usize) {
    loop {
        let v = READY.load(Ordering::Acquire);
        if v as usize >= n {
            break;
        }
        syscall6(
            SYS_FUTEX,
            READY.as_ptr() as usize,
            FUTEX_WAIT_PRIVATE,
            v as usize,
            0,
            0,
            0,
        );
    }
}

/// Without the chain's mapping: each of the `n` threads' own words set
/// and woken, so that a wait restarted there after a stop does not sleep
/// for ever (a restore under a storm of SIGSTOP/SIGCONT hung once in 30
/// when the word was set without a wake). Such a thread goes on at once,
/// before the window is gone: so as late as can be, once every seccomp
/// filter is in (a review: done in `gather`, such a thread ran without
/// the program's filter, 3 restores in 60 under the storm).
///
/// Made from the program's syscall gadget, as `seccomp::check_release`
/// checked them.
pub fn set_own_words(img: &Image, n: usize) {
    let gadget = crate::frame::checked_gadgets(img).syscall_ret;
    for i in 0..n {
        let word = own_word(i);
        poke_u32(word, 1);
        crate::frame::via_gadget(gadget, crate::frame::wake_all(word));
    }
}

/// The table of the threads' own wait words (u64 addresses, in thread
/// order), for the tracer, which reads it before the window goes.
pub fn own_words() -> usize {
    WAITS
}

/// Thread `i`'s own wait word (just below its frame, on its stack).
pub fn own_word(i: usize) -> usize {
    peek_u64(WAITS + i * 8) as usize
}
