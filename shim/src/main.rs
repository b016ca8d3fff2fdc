//! cryo-shim: rebuilds a captured process inside the process that execs it.
//!
//! `cryo restore` validates the image, sets up fds, cwd, umask, rlimits,
//! scheduling and personality, maybe starts a tracer, and execs this static,
//! libc-free binary (linked at [`SHIM_WINDOW`]) with the hand-off
//! arguments (`cryo_image::handoff`). The shim then, step by step (see
//! [`restore`]): reads and re-validates the image and opens every mapped
//! file, checking its identity — nothing has been torn down yet; leaves
//! its own file; unmaps everything outside its window; maps vvar/vDSO and
//! every captured mapping at its address with its pages and flags;
//! restores mm fields, TLS and cached TIDs, rseq, signal dispositions,
//! timers, fd flags and locks, queued signals, prctl state and
//! credentials; builds an rt_sigframe from the captured registers and
//! xsave area on the program's stack; and enters the program with
//! `rt_sigreturn`, alone through the program's own code or with the
//! tracer. One module per resource; `sys` is the only place that talks to
//! the kernel. See docs/design.md.
#![no_std]
#![no_main]

mod aio;
mod fds;
mod files;
mod forked;
mod frame;
mod load;
mod mem;
mod mm;
mod own;
mod packed;
mod packfds;
mod pids;
mod rseq;
mod seccomp;
mod selfmap;
mod signals;
mod sys;
mod task;
mod terminal;
mod threads;
mod timers;
mod tls;
mod uffd;
mod vma;

use core::fmt::{self, Write};
use cryo_image::handoff::{self, flags, Handoff};
use cryo_image::{PAGE_SIZE, SHIM_WINDOW, SHIM_WINDOW_LEN};
use sys::*;

const W: usize = SHIM_WINDOW as usize;
const W_END: usize = (SHIM_WINDOW + SHIM_WINDOW_LEN) as usize;
const STACK_AT: usize = W + 0x0800_0000;
const STACK_LEN: usize = 1 << 20;
const META_AT: usize = W + 0x1000_0000;
const SELF_COPY_AT: usize = W + 0x3000_0000;
/// A child forked by its parent's shim maps its own meta.img here (its
/// parent's stays at META_AT).
const CHILD_META_AT: usize = W + 0x4000_0000;
const TEMP_AT: usize = W + 0x5000_0000;
const TEMP_LEN: usize = W_END - TEMP_AT;
/// Top of the x86_64 user address space (4-level paging).
const USER_END: usize = 0x7fff_ffff_f000;
const PG: usize = PAGE_SIZE as usize;

/// The shim's scratch pages (it has no allocator), packed so that a small
/// image touches two fresh pages, not four (each costs several µs here):
/// a path, the auxv, then the per-file tables.
mod scratch {
    pub const AT: usize = super::W + 0x2000_0000;
    pub const LEN: usize = 4 << 20;
    /// A NUL-terminated path (`files`).
    pub const PATH: usize = AT;
    pub const PATH_LEN: usize = 4096;
    /// The auxv handed to PR_SET_MM_MAP (`mm`).
    pub const AUXV: usize = AT + 0x1008;
    pub const AUXV_WORDS: usize = 64;
    /// One i32 fd and one byte per files-table entry (`files`).
    pub const FILES_OFF: usize = 0x1400;
    pub const FILES: usize = AT + FILES_OFF;
    /// Where the files' tables must end (the areas below are in use while
    /// they are).
    pub const FILES_END: usize = LEN / 4 * 3;
    /// A packed restorer's /proc/self/status (`own`), read and parsed
    /// before anything above is written: only the pages it fills are
    /// touched, and its first is the path's (a buffer on the stack is
    /// touched whole, by the stack probes).
    pub const STATUS: usize = AT;
    pub const STATUS_LEN: usize = LEN / 4 * 3;
    /// The shim's own writable segments' pages, kept while it maps its
    /// code again from its second name (`selfmap`).
    pub const SELF_KEPT: usize = AT + LEN / 4 * 3;
    pub const SELF_KEPT_LEN: usize = LEN / 4;
}

/// CLOCK_MONOTONIC in ns.
pub(crate) fn now_ns() -> u64 {
    let mut ts = [0i64; 2];
    syscall3(SYS_CLOCK_GETTIME, 1, ts.as_mut_ptr() as usize, 0);
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

/// Phase stamps, printed when FLAG_PHASES is set.
struct Phases {
    t: [u64; 8],
    n: usize,
}

impl Phases {
    fn mark(&mut self, on: bool) {
        if on && self.n < self.t.len() {
            self.t[self.n] = now_ns();
            self.n += 1;
        }
    }

    /// The phase times on stderr (`cryo restore --phases`).
    fn print(&self, exec_ns: u64) {
        let us = |a: u64, b: u64| b.saturating_sub(a) / 1000;
        let t = self.t;
        let mut m = Msg { b: [0; 768], n: 0 };
        let _ = writeln!(
            m,
            "cryo-shim phases (us): exec {} | image+files {} | unmap+vdso {} | map+fill {} | state {} | threads+frame {} | shim total {}",
            if exec_ns != 0 { us(exec_ns, t[0]) } else { 0 },
            us(t[0], t[1]),
            us(t[1], t[2]),
            us(t[2], t[3]),
            us(t[3], t[4]),
            us(t[4], t[5]),
            us(t[0], t[5]),
        );
        write(2, &m.b[..m.n]);
    }
}

/// The marker link.x writes as the last loaded bytes of the shim's file.
const FILE_END_MARK: u64 = 0x646e_6565_6c69_6663;

// The entry: first, in the first page (link.x), a check that the file is
// whole. A restorer cut short (a copy interrupted, a full disk) would
// otherwise die of SIGSEGV or SIGBUS with no word: its code and data lie
// in the part that is gone. The page of the end marker is faulted in with
// MADV_POPULATE_READ (EFAULT: past the file's end), then the marker read
// (zeros: cut inside that page). Then the stack and `shim_main`.
core::arch::global_asm!(
    ".pushsection .cryo_entry,\"ax\",@progbits",
    ".globl _start",
    "_start:",
    "lea rdi, [rip + cryo_file_end]",
    "and rdi, -4096",
    "mov esi, 4096",
    "mov edx, 22",
    "mov eax, 28",
    "syscall",
    "cmp rax, -14",
    "je 2f",
    "mov rax, [rip + cryo_file_end]",
    "mov rcx, {mark}",
    "cmp rax, rcx",
    "jne 2f",
    "jmp 3f",
    "2:",
    "mov edi, 2",
    "lea rsi, [rip + 4f]",
    "lea rdx, [rip + 5f]",
    "sub rdx, rsi",
    "mov eax, 1",
    "syscall",
    "mov edi, 1",
    "mov eax, 231",
    "syscall",
    "4:",
    ".ascii \"cryo: cannot restore: this restorer's file is cut short (it ends inside its own code); copy it again, or run cryo pack again\\n\"",
    "5:",
    ".popsection",
    "3:",
    "mov r12, rsp",
    "mov eax, 9",
    "mov rdi, {stack}",
    "mov rsi, {len}",
    "mov edx, 3",
    "mov r10d, 0x100022",
    "mov r8, -1",
    "xor r9d, r9d",
    "syscall",
    "cmp rax, rdi",
    "jne 2f",
    "lea rsp, [rdi + rsi]",
    "mov rdi, r12",
    "call {main}",
    "ud2",
    "2:",
    "mov edi, 125",
    "mov eax, 231",
    "syscall",
    mark = const FILE_END_MARK,
    stack = const STACK_AT,
    len = const STACK_LEN,
    main = sym shim_main,
);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    die(format_args!("internal error: {}", info.message()))
}

/// core is precompiled with unwind tables that name this symbol; the shim
/// aborts on panic and never unwinds, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// A fixed buffer for one message (no allocator).
pub(crate) struct Msg {
    pub(crate) b: [u8; 768],
    pub(crate) n: usize,
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
        self.n += take;
        Ok(())
    }
}

fn die(args: fmt::Arguments) -> ! {
    let mut m = Msg { b: [0; 768], n: 0 };
    // A packed restorer that can still leave the process as it was speaks
    // like `cryo restore` (and exits 1 as it does).
    let packed = packed::dir_for_message();
    let _ = match packed {
        Some(dir) => write!(m, "cryo: cannot restore {dir}: "),
        None => m.write_str("cryo-shim: "),
    };
    let _ = m.write_fmt(args);
    let _ = m.write_str("\n");
    write(2, &m.b[..m.n]);
    // A tree's barrier not passed yet: the others hear of it.
    let b = BARRIER_FD.load(core::sync::atomic::Ordering::Relaxed);
    if b != usize::MAX {
        barrier_send(b, b'x');
    }
    exit(if packed.is_some() { 1 } else { 125 })
}

/// A tree's barrier socket until it is passed ([`tree_barrier`]).
static BARRIER_FD: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(usize::MAX);

const SYS_SENDTO: usize = 44;
const SYS_RECVFROM: usize = 45;

fn barrier_send(fd: usize, b: u8) -> isize {
    let v = [b];
    const MSG_NOSIGNAL: usize = 0x4000;
    syscall6(SYS_SENDTO, fd, v.as_ptr() as usize, 1, MSG_NOSIGNAL, 0, 0)
}

/// One byte from the barrier socket within `ms` milliseconds: Some(byte),
/// Some(0) at end of file (every other end closed), None if none came.
fn barrier_recv(fd: usize, ms: usize) -> Option<u8> {
    const SYS_POLL: usize = 7;
    const POLLIN: u16 = 1;
    // struct pollfd: fd (i32), events (i16), revents (i16).
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(fd as i32).to_ne_bytes());
    p[4..6].copy_from_slice(&POLLIN.to_ne_bytes());
    let r = syscall3(SYS_POLL, p.as_mut_ptr() as usize, 1, ms);
    if r <= 0 {
        return None;
    }
    let mut g = [0u8];
    let n = syscall6(
        SYS_RECVFROM,
        fd,
        g.as_mut_ptr() as usize,
        1,
        0x40, // MSG_DONTWAIT
        0,
        0,
    );
    match n {
        1 => Some(g[0]),
        0 => Some(0),
        _ if n == -EINTR || n == -11 => None,
        _ => Some(0),
    }
}

/// A tree's barrier ([`flags::BARRIER`]): no process of the tree goes
/// past its point of no return before every one has its files open. The
/// root (its image lists the tree) takes a byte from each other live
/// process (`o`, or `s` from a stand-in, `forked`), then sends one to each
/// but the stand-ins; every other process sends one and waits for one. A
/// failure before that (`x`, or the other side gone) ends the shim here,
/// before its point of no return; a root that hears from nobody for 60 s
/// gives up. With stand-ins in the tree the byte back is `h`: a second
/// round follows ([`round_two`]) on the other socket, which is closed
/// otherwise.
fn tree_barrier(a: &Args, img: &cryo_image::Image) {
    let fd = a.barrier_fd;
    if a.flags & flags::BARRIER == 0 || fd == usize::MAX {
        return;
    }
    let recs = img.tree();
    let abandoned = |_: u8| -> ! {
        die(format_args!(
            "a process of the tree could not be restored (see above)"
        ))
    };
    let mut second = false;
    if recs.len() > 1 {
        let n = recs
            .iter()
            .skip(1)
            .filter(|r| r.state == cryo_image::tree::proc_state::LIVE)
            .count();
        let (mut got, mut stand_ins, mut quiet) = (0, 0, 0);
        let mut by_tracer = false;
        while got < n {
            match barrier_recv(fd, 100) {
                Some(b'o') => (got, quiet) = (got + 1, 0),
                Some(b's') => (got, stand_ins, quiet) = (got + 1, stand_ins + 1, 0),
                Some(b't') => (got, by_tracer, quiet) = (got + 1, true, 0),
                Some(b) => abandoned(b),
                None if quiet < 600 => quiet += 1,
                None => die(format_args!(
                    "{} of the tree's {n} other processes did not get their files open within 60 s",
                    n - got
                )),
            }
        }
        // (Or POSIX locks: each process takes its own again only past
        // this barrier, once its files are closed.)
        second = stand_ins > 0 || by_tracer || a.flags & flags::LOCKS != 0;
        // Every group of the tree exists now, and no process has run its
        // program: the one that was the terminal's foreground is again.
        if a.flags & flags::TERMINAL != 0 {
            terminal::foreground_group(img);
            terminal::set_modes(img);
        }
        let reply = if second { b'h' } else { b'g' };
        for _ in 0..n - stand_ins {
            check(barrier_send(fd, reply), format_args!("the tree's barrier"));
        }
        // In the second round the children made in place of the stand-ins
        // take part too.
        ROUND_TWO_N.store(n, core::sync::atomic::Ordering::Relaxed);
        IS_ROOT.store(true, core::sync::atomic::Ordering::Relaxed);
    } else {
        // `t`: this process finishes through its tracer, which takes its
        // part in the second round (so there is one): a process to be left
        // stopped is stopped before any other runs its program, so that
        // a SIGCONT its parent sends at once is not lost.
        let me = if a.flags & flags::SELF_UNMAP == 0 {
            b't'
        } else {
            b'o'
        };
        check(barrier_send(fd, me), format_args!("the tree's barrier"));
        loop {
            match barrier_recv(fd, 1000) {
                Some(b'g') => break,
                Some(b'h') => {
                    second = true;
                    break;
                }
                Some(b) => abandoned(b),
                None => {}
            }
        }
    }
    BARRIER_FD.store(usize::MAX, core::sync::atomic::Ordering::Relaxed);
    syscall3(SYS_CLOSE, fd, 0, 0);
    if second {
        ROUND_TWO_FD.store(a.round_fd, core::sync::atomic::Ordering::Relaxed);
    } else {
        syscall3(SYS_CLOSE, a.round_fd, 0, 0);
    }
}

/// The barrier socket kept for [`round_two`], and (the root) how many
/// processes meet there.
static ROUND_TWO_FD: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(usize::MAX);
static ROUND_TWO_N: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The second round of a tree's barrier, where some children are forked
/// by their parents' shims: no process enters its program before those
/// children exist (a signal sent to a stand-in would be lost with it).
/// Every process but the root, forked ones included, sends `f` and its
/// PID once it has forked its children (if it has any to fork; and `f`
/// for each child it lost) and waits for `G`; the root takes one `f` for
/// each, then sends one `G` to each. Past every point of no return, and
/// with no time limit (a process may take long to read its memory): a
/// process not heard from counts only once it has ended (gone or a
/// zombie at two looks a second apart; it said why), as then its `f` may
/// never come. The round has a socket of its
/// own (`round_fd`): a byte of the first round that a process which ended
/// never took cannot stand in front of a `G`.
// (A frame of its own: its 16 KiB of bitmaps are not probed into the
// caller's, a fresh-page fault each, on restores of no tree.)
#[inline(never)]
fn round_two(img: &cryo_image::Image) {
    let root = img.tree().len() > 1;
    use core::sync::atomic::Ordering::Relaxed;
    let fd = ROUND_TWO_FD.swap(usize::MAX, Relaxed);
    if fd == usize::MAX {
        return;
    }
    if root {
        // Who was heard from (or ended: never will be), by the index of
        // its record; up to TRACKED processes, counted past that.
        const TRACKED: usize = 1 << 16;
        let recs = img.tree();
        let n = ROUND_TWO_N.load(Relaxed);
        let mut heard = [0u64; TRACKED / 64];
        let mut suspect = [0u64; TRACKED / 64];
        let on = |s: &[u64], i: usize| i < TRACKED && s[i / 64] >> (i % 64) & 1 != 0;
        let put = |s: &mut [u64], i: usize, v: bool| {
            if i < TRACKED {
                s[i / 64] = s[i / 64] & !(1 << (i % 64)) | (v as u64) << (i % 64);
            }
        };
        let (mut got, mut lost, mut quiet) = (0, 0, 0);
        // The children this shim lost (it said nothing for them: its
        // `f` would go to the others' end).
        for slot in ROOT_LOST.iter().take(ROOT_LOST_N.load(Relaxed)) {
            let pid = slot.load(Relaxed);
            if let Some(i) = recs.iter().position(|r| r.pid == pid) {
                if !on(&heard, i) {
                    put(&mut heard, i, true);
                    got += 1;
                }
            }
        }
        let me = syscall3(SYS_GETPID, 0, 0, 0) as u32;
        while got < n {
            match round_recv(fd, 100) {
                Round::From(pid) => {
                    quiet = 0;
                    match recs.iter().position(|r| r.pid == pid) {
                        Some(i) if on(&heard, i) => {}
                        Some(i) => {
                            put(&mut heard, i, true);
                            got += 1;
                        }
                        None => got += 1,
                    }
                }
                Round::End => break,
                Round::Quiet => {
                    quiet += 1;
                    if quiet % 10 != 0 {
                        continue;
                    }
                    // A live process not heard from that has ended (gone
                    // or a zombie at two looks a second apart) never will
                    // be. Not while its parent is still to be heard from:
                    // a stand-in's PID is free from its end until its
                    // fork has copied the parent's memory map.
                    for (i, r) in recs.iter().enumerate().skip(1) {
                        if r.state != cryo_image::tree::proc_state::LIVE
                            || i >= TRACKED
                            || on(&heard, i)
                        {
                            continue;
                        }
                        let pending_parent = recs
                            .iter()
                            .position(|p| p.pid == r.ppid)
                            .is_some_and(|k| k != 0 && !on(&heard, k));
                        let parent = if Some(r.ppid) == recs.get(0).map(|r| r.pid) {
                            me
                        } else {
                            r.ppid
                        };
                        let ended = !pending_parent && forked::ended(r.pid, Some(parent));
                        if ended && on(&suspect, i) {
                            put(&mut heard, i, true);
                            got += 1;
                            lost += 1;
                            let mut m = Msg { b: [0; 768], n: 0 };
                            let _ = m.write_fmt(format_args!(
                                "cryo-shim: process {} ended before its restore was done\n",
                                r.pid
                            ));
                            write(2, &m.b[..m.n]);
                        }
                        put(&mut suspect, i, ended);
                    }
                }
            }
        }
        if lost > 0 {
            let mut m = Msg { b: [0; 768], n: 0 };
            let _ = m.write_fmt(format_args!(
                "cryo-shim: {lost} process(es) of the tree ended before their restore was done (see above, or killed); the others go on without them\n"
            ));
            write(2, &m.b[..m.n]);
        }
        for _ in 0..n {
            barrier_send(fd, b'G');
        }
    } else if round_send(fd, syscall3(SYS_GETPID, 0, 0, 0) as u32) {
        // (Every process waiting here gets one `G`: the root sends one
        // for each. End of file: the root has ended.)
        while !matches!(barrier_recv(fd, 1000), Some(b'G' | 0)) {}
    }
    syscall3(SYS_CLOSE, fd, 0, 0);
}

/// A message of the second round, as the root takes it.
enum Round {
    /// `f` and the PID of a process that has forked its children (or of
    /// a child its parent's shim lost).
    From(u32),
    /// Every other end closed.
    End,
    /// Nothing within the time given.
    Quiet,
}

/// Say `f` for process `pid` in the second round: whether it was sent
/// (again after EINTR or EAGAIN).
fn round_send(fd: usize, pid: u32) -> bool {
    let p = pid.to_le_bytes();
    let v = [b'f', p[0], p[1], p[2], p[3]];
    const MSG_NOSIGNAL: usize = 0x4000;
    loop {
        match syscall6(SYS_SENDTO, fd, v.as_ptr() as usize, 5, MSG_NOSIGNAL, 0, 0) {
            5 => return true,
            r if r == -EINTR || r == -11 => {}
            _ => return false,
        }
    }
}

/// Whether this shim is the tree's root (set at the barrier).
static IS_ROOT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Children the root's own shim lost, for its [`round_two`].
static ROOT_LOST: [core::sync::atomic::AtomicU32; 256] =
    [const { core::sync::atomic::AtomicU32::new(0) }; 256];
static ROOT_LOST_N: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Say `f` for a child this process's shim was to fork and lost (the
/// root waits for every process's); the root notes it for itself.
pub fn round_lost(pid: u32) {
    use core::sync::atomic::Ordering::Relaxed;
    if IS_ROOT.load(Relaxed) {
        let k = ROOT_LOST_N.fetch_add(1, Relaxed);
        if let Some(slot) = ROOT_LOST.get(k) {
            slot.store(pid, Relaxed);
        }
        return;
    }
    let fd = ROUND_TWO_FD.load(Relaxed);
    if fd != usize::MAX {
        round_send(fd, pid);
    }
}

/// One message of the second round within `ms` milliseconds.
fn round_recv(fd: usize, ms: usize) -> Round {
    const SYS_POLL: usize = 7;
    const POLLIN: u16 = 1;
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(fd as i32).to_ne_bytes());
    p[4..6].copy_from_slice(&POLLIN.to_ne_bytes());
    if syscall3(SYS_POLL, p.as_mut_ptr() as usize, 1, ms) <= 0 {
        return Round::Quiet;
    }
    let mut g = [0u8; 8];
    let n = syscall6(SYS_RECVFROM, fd, g.as_mut_ptr() as usize, 8, 0x40, 0, 0);
    match n {
        5 if g[0] == b'f' => Round::From(u32::from_le_bytes([g[1], g[2], g[3], g[4]])),
        0 => Round::End,
        _ if n == -EINTR || n == -11 => Round::Quiet,
        // (Anything else is no process's.)
        _ if n > 0 => Round::Quiet,
        _ => Round::End,
    }
}

fn check(r: isize, what: fmt::Arguments) -> usize {
    if r < 0 {
        die(format_args!("{what}: errno {}", -r));
    }
    r as usize
}

/// The handoff arguments as the shim uses them (fds as usize, absent:
/// usize::MAX).
#[derive(Clone, Copy)]
struct Args {
    meta_fd: usize,
    pages_fd: usize,
    tid_offset: usize,
    flags: u64,
    exec_ns: u64,
    sock_fd: usize,
    alias_fd: usize,
    files_fd: usize,
    barrier_fd: usize,
    round_fd: usize,
}

/// `s` NUL-terminated in `buf` (dies if too long): its address.
fn c_path(s: &str, buf: &mut [u8]) -> usize {
    if s.len() >= buf.len() {
        die(format_args!("path too long: {s}"));
    }
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
    buf.as_ptr() as usize
}

/// The bytes of a NUL-terminated argv string.
fn arg_bytes(p: *const u8) -> &'static [u8] {
    if p.is_null() {
        return &[];
    }
    let mut n = 0;
    // SAFETY: argv strings are NUL-terminated; we stop at the NUL (and at
    // 64 bytes: no valid argument is longer).
    while n < 64 && unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: the n bytes before the NUL are readable and stay (the
    // initial stack lives until the shim is gone).
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// Entry from `_start`, on the shim's own stack; `sp` is the kernel's
/// initial stack (argc, argv...).
#[no_mangle]
extern "C" fn shim_main(sp: *const usize) -> ! {
    // A packed restorer: the image is named by the record it carries.
    if let Some(r) = packed::record() {
        packed::note_auxv(sp);
        let a = packed::open(&r);
        restore(&a, true)
    }
    // SAFETY: the kernel's initial stack holds argc followed by argc argv
    // pointers and a NULL.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const u8) };
    let args = (1..argc).map(|i| {
        // SAFETY: i < argc, so argv[i] is a valid pointer slot.
        arg_bytes(unsafe { *argv.add(i) })
    });
    let h = match Handoff::decode(args) {
        Ok(h) => h,
        Err(e) => die(format_args!("{e}")),
    };
    let fd = handoff_arg;
    restore(
        &Args {
            meta_fd: fd(h.meta_fd),
            pages_fd: fd(h.pages_fd),
            tid_offset: fd(h.tid_offset),
            flags: h.flags,
            exec_ns: if h.exec_ns == handoff::NONE {
                0
            } else {
                h.exec_ns
            },
            sock_fd: fd(h.sock_fd),
            alias_fd: fd(h.alias_fd),
            files_fd: fd(h.files_fd),
            barrier_fd: fd(h.barrier_fd),
            round_fd: fd(h.round_fd),
        },
        false,
    )
}

/// A hand-off value as an fd or offset: usize::MAX for none.
fn handoff_arg(v: u64) -> usize {
    if v == handoff::NONE {
        usize::MAX
    } else {
        v as usize
    }
}

/// The restore, as its steps; every step that can fail before step 4
/// leaves the process as `cryo restore` made it (the shim just exits with
/// a message), every later one kills it with a message. `packed`: run as
/// a packed restorer (`packed`), which checks and sets up here what `cryo
/// restore` would have before its exec.
fn restore(a: &Args, packed: bool) -> ! {
    if a.flags & flags::BARRIER != 0 {
        BARRIER_FD.store(a.barrier_fd, core::sync::atomic::Ordering::Relaxed);
    }
    let on = a.flags & flags::PHASES != 0;
    let mut ph = Phases { t: [0; 8], n: 0 };
    ph.mark(on);
    // No signal may run a handler while the address space is half built;
    // the final rt_sigreturn installs the program's own mask.
    let all: u64 = !0;
    syscall6(
        SYS_RT_SIGPROCMASK,
        2,
        &all as *const u64 as usize,
        0,
        8,
        0,
        0,
    );
    // 1. The image, mapped into the window and validated again.
    let img = load::image(a.meta_fd);
    mem::map_anon_at(scratch::AT, scratch::LEN, "scratch");
    let mut made;
    let a = if packed {
        // (After the restorer leads a group of its own, before it leads a
        // session.)
        packed::lead_own_group(&img);
        let foreground = terminal::foreground(&img);
        let own = packed::check_and_set(&img, a.flags);
        // The program's fds, before any file of the shim's takes a number.
        made = packfds::make(&img, a);
        if task::creds_same(&img, &own) {
            made.flags |= flags::SAME_CREDS;
        }
        if foreground {
            made.flags |= flags::TERMINAL;
        }
        &made
    } else {
        a
    };
    // 2. Every file behind a mapping, and the executable, opened and
    //    checked to be what was captured.
    let (mut files, exe_fd) = files::Files::open_all(&img, a);
    // A stand-in (a tree's child its parent's shim forks): no further.
    if a.flags & flags::STAND_IN != 0 {
        forked::stand_in(a, files);
    }
    // 3. Off the shim's own file (PR_SET_MM_MAP would refuse the exe),
    //    unless the executable is named once the shim is gone.
    ph.mark(on);
    let lazy = a.flags & flags::LAZY != 0;
    let late_exe = selfmap::exe_in_chain(&img, a, &files, exe_fd, lazy);
    if late_exe {
        if a.alias_fd != usize::MAX {
            syscall3(SYS_CLOSE, a.alias_fd, 0, 0);
        }
    } else if packed {
        selfmap::leave_own_file(packed::alias());
    } else {
        selfmap::leave_own_file(a.alias_fd);
    }
    // In a tree, nobody past this point before every process has its
    // files open.
    tree_barrier(a, &img);
    // 4. Point of no return: everything outside the window goes.
    packed::past_no_return();
    vma::unmap_everything();
    // 5. vvar, vvar_vclock and vDSO at their captured place.
    vma::place_vdso(&img);
    ph.mark(on);
    // 6. Every mapping with its pages and flags; lazy mappings registered
    //    with a userfaultfd that goes to the page server.
    if lazy && a.sock_fd == usize::MAX {
        die(format_args!("lazy restore without a page-server socket"));
    }
    let map = a.flags & flags::MAP != 0;
    if lazy && map {
        die(format_args!("a lazy restore cannot also be mapped"));
    }
    vma::map_all(&img, &mut files, a, lazy, map);
    if lazy {
        uffd::hand_to_page_server(&img, a.sock_fd);
    }
    // The children whose pages were this process's too, forked now
    // that its memory is in.
    if a.flags & flags::FORKS != 0 {
        forked::fork_children(&img);
    }
    ph.mark(on);
    finish(&img, files, exe_fd, a, ph, lazy, late_exe)
}

/// A child forked by its parent's shim (`forked`), its fds and working
/// directory in place: its image and files, its mappings made from its
/// parent's, then the rest of the restore as after an exec.
fn restore_forked(a: &Args, parent: &cryo_image::Image) -> ! {
    // Its stand-in's end of the barrier's second round.
    ROUND_TWO_FD.store(a.round_fd, core::sync::atomic::Ordering::Relaxed);
    let on = a.flags & flags::PHASES != 0;
    let mut ph = Phases { t: [0; 8], n: 0 };
    ph.mark(on);
    let img = load::image_at(a.meta_fd, forked::child_meta_at());
    let (mut files, exe_fd) = files::Files::open_all(&img, a);
    ph.mark(on);
    ph.mark(on);
    forked::reshape(parent, &img, &mut files, a.pages_fd);
    // Its own children, their stand-ins taken by its parent's shim.
    if a.flags & flags::FORKS != 0 {
        forked::fork_below(&img);
    }
    ph.mark(on);
    finish(&img, files, exe_fd, a, ph, false, false)
}

/// Steps 7 to 12 of [`restore`]: the process's state, then the program.
fn finish<'a>(
    img: &'a cryo_image::Image<'a>,
    mut files: files::Files<'a>,
    exe_fd: u32,
    a: &Args,
    mut ph: Phases,
    lazy: bool,
    late_exe: bool,
) -> ! {
    let on = a.flags & flags::PHASES != 0;
    // AIO contexts, their rings moved into the memory made.
    aio::make(img, a.pages_fd);
    // 7. mm fields, auxv and the executable.
    mm::restore(img, if late_exe { u32::MAX } else { exe_fd });
    // 8. The main thread's state and the process's.
    tls::restore(img, a.tid_offset);
    rseq::register(img);
    signals::restore_dispositions(img);
    task::set_comm(img);
    task::restore_prctl_state(img);
    task::restore_personality(img);
    // 9. The shim's own fds go (the executable's in the finishing chain, if
    //    it names it there); the program's get their flags and locks.
    files.after_mapping();
    if late_exe {
        files.leave_open(img.process().exe_file);
    }
    files.close_all();
    syscall3(SYS_CLOSE, a.meta_fd, 0, 0);
    syscall3(SYS_CLOSE, a.pages_fd, 0, 0);
    vma::close_mem_fd();
    fds::restore(img);
    if lazy {
        uffd::wait_go(a.sock_fd);
    }
    task::restore_xcomp_perm(img);
    frame::know_sizes(img);
    ph.mark(on);
    // 10. Every other thread, each restoring its own state and frame
    //     (after the page server is ready: they write to their stacks);
    //     then the timers (which may name a thread).
    // The finishing chain's own mapping, before the program's mlockall and
    // MDWE (`frame::Area`): where the shim finishes alone, naming the
    // executable there, or with threads (their own wait words set there;
    // with seccomp filters, kept only if they let its calls through:
    // below, once the threads are ready).
    let alone = a.flags & flags::SELF_UNMAP != 0;
    let area = if alone && (late_exe || !img.threads().is_empty()) {
        frame::Area::map(img.threads().len())
    } else {
        None
    };
    if late_exe && area.is_none() {
        die(format_args!(
            "mapping the finishing chain's frames: refused"
        ));
    }
    let nthreads = threads::spawn_all(img, a.flags);
    let new_pid = syscall3(SYS_GETPID, 0, 0, 0) as u32;
    timers::restore(img, |old| threads::new_tid(img, old, new_pid));
    // 11. The signals queued at capture, with their siginfo (every signal
    //     is blocked until the final rt_sigreturn); the credentials
    //     (after everything that needs privilege), then what a
    //     credentials change resets, then memory-deny-write-execute (no
    //     mapping is made after it).
    //     Seccomp filters installed with a privilege the program dropped
    //     since go in before the credentials (step 12): finishing through
    //     the tracer, which suspended them for this task.
    signals::queue_pending(img);
    signals::take_stop_reports(img);
    // The terminal's modes, as the program left them (a tree's root set
    // them at the barrier already, before any process ran its program),
    // and its SIGWINCH.
    if a.flags & flags::TERMINAL != 0 {
        terminal::restore(img);
    }
    if a.flags & flags::WINCH != 0 {
        terminal::winch();
    }
    let filters_first = img.seccomp_before_creds() && a.flags & flags::SELF_UNMAP == 0;
    if !filters_first {
        task::restore(img, a.flags & flags::SAME_CREDS != 0);
    }
    // 12. The signal frame; every thread out of the shim; into the
    //     program. The seccomp filters, for every thread (all waiting in
    //     the program's code): from here on only the system calls capture
    //     checked them to allow (or, finishing with the tracer, what it
    //     injects: it suspended them).
    let frame_sp = frame::build(img);
    // Seccomp filters are back before the chain runs: its own mapping is
    // used only if they let each of its calls through, as they will be
    // made (the threads' own words are known once each is ready); else
    // the threads are released from the program's stack, with the calls
    // capture checked. Unmapped now, before the filters are in.
    let area = match area {
        Some(ar) if nthreads > 0 && !img.seccomp().is_empty() => {
            threads::wait_ready(nthreads);
            if seccomp::allow_chain(img, &ar, Some((ar.release_word(), nthreads))) {
                Some(ar)
            } else {
                ar.unmap();
                None
            }
        }
        other => other,
    };
    let release = (nthreads > 0).then(|| {
        let word = match &area {
            Some(ar) => ar.release_word(),
            None => frame::release_word(frame_sp),
        };
        threads::gather(nthreads, word);
        threads::unpin();
        // Before the filters are in: each thread's wait as it may be
        // made again, and the older release's wakes, with their real
        // addresses (not where the tracer makes them: it suspended the
        // filters for its calls).
        let alone = a.flags & flags::SELF_UNMAP != 0;
        let fallback = (area.is_none() && alone).then_some(word);
        seccomp::check_release(img, nthreads, fallback);
        (word, nthreads)
    });
    ph.mark(on);
    if on {
        ph.print(a.exec_ns);
    }
    // A tree with children forked by their parents' shims (or with
    // processes finishing through their tracers): all forked. A process
    // finishing through its tracer hands its end of the round to it
    // (`frame::finish_with_tracer`): the tracer takes part once the
    // process is ready to run, or stopped as captured.
    let round_fd = if a.flags & flags::SELF_UNMAP == 0
        && !IS_ROOT.load(core::sync::atomic::Ordering::Relaxed)
    {
        ROUND_TWO_FD.swap(usize::MAX, core::sync::atomic::Ordering::Relaxed)
    } else {
        round_two(img);
        usize::MAX
    };
    // In an fd table shared with others restored with it: none goes on
    // before each has closed its round socket.
    forked::leave_table();
    task::late_limits(img);
    seccomp::install(img, nthreads > 0);
    if filters_first {
        task::restore(img, a.flags & flags::SAME_CREDS != 0);
    }
    // Seccomp strict mode: entered last, through the program's code (its
    // rt_sigreturn is the one call after it), or here when the tracer
    // finishes (it suspended seccomp for this task).
    let strict = img.task().is_some_and(|t| t.seccomp_strict == 1);
    if a.flags & flags::SELF_UNMAP != 0 {
        // (The executable is asked about once more in
        // finish_without_tracer, as late as can be: a writer may have
        // opened it since, the pages alone take seconds for a large
        // image.)
        let exe = late_exe.then_some(exe_fd);
        if late_exe {
            mm::check_late(img, exe_fd);
        }
        if let (None, Some((_, n))) = (&area, release) {
            threads::set_own_words(img, n);
        }
        frame::finish_without_tracer(img, frame_sp, release, strict, exe, area);
    }
    if strict {
        check(
            syscall3(SYS_SECCOMP, 0, 0, 0),
            format_args!("entering seccomp strict mode"),
        );
    }
    frame::finish_with_tracer(frame_sp, release, round_fd)
}
