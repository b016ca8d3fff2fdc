//! A child forked by its parent's shim ([`flags::FORKS`],
//! [`flags::STAND_IN`]): an eager restore of a tree keeps the private
//! pages a parent and its child shared copy-on-write (docs/design.md,
//! "Process trees").
//!
//! `cryo restore` made a stand-in with the child's PID, fds and working
//! directory. Its shim ([`stand_in`]) checked the child's image and files,
//! says `s` at the tree's barrier and waits. The parent's shim, its memory
//! in ([`fork_children`]), takes the stand-in's fds and working directory
//! and reads its arguments, kills it, and forks the child with its PID.
//! The child ([`child`]) installs them, keeps every mapping it had in
//! common with its parent and the pages it shared with it ([`reshape`]),
//! makes the rest as a shim makes any mapping, and goes on as every shim
//! does.

use crate::files::Files;
use crate::mem::*;
use crate::sys::*;
use crate::vma::{attach_sysv, map_vma, restore_vma_flags};
use crate::{check, die, Args, W};
use cryo_image::handoff::{self, flags, Handoff};
use cryo_image::{run_kind, vma_kind, vmflag, Image, Vma, NO_INDEX, PAGE_SIZE};

const SYS_PAUSE: usize = 34;
const SYS_GETPPID: usize = 110;
const SYS_FCHDIR: usize = 81;
const SYS_GETDENTS64: usize = 217;
const SYS_WAITID: usize = 247;
const SYS_PIDFD_OPEN: usize = 434;
const SYS_PIDFD_GETFD: usize = 438;
const O_DIRECTORY: usize = 0o200000;
const O_PATH: usize = 0o10000000;
const EBADF: isize = 9;

/// The fds taken from a stand-in: (its number, ours) pairs of i32.
/// (Between the scratch area and the threads' seccomp buffers.)
const TABLE_AT: usize = W + 0x2400_0000;
const TABLE_LEN: usize = 1 << 20;
const TABLE_MAX: usize = TABLE_LEN / 8;
/// The stand-ins among a parent's children (u32 PIDs).
const STAND_INS_AT: usize = W + 0x2500_0000;
const STAND_INS_LEN: usize = 1 << 20;
/// What was taken from the stand-ins of one line ([`Rec`]s, a count
/// first): a child of the process whose shim took them and every
/// stand-in below it, which that child's shim forks in turn.
const RECS_AT: usize = W + 0x2600_0000;
const RECS_LEN: usize = 1 << 20;
const RECS_MAX: usize = (RECS_LEN - 64) / core::mem::size_of::<Rec>();

/// The processes of one shared fd table (a process whose shim forks
/// children that share its table, and those children, lines included):
/// slots of (PID, parent, done) u32s after a count, in a shared anonymous
/// mapping every fork keeps shared. Each leaves its shim only once every
/// one of them has closed its shim's last fd in the table, its socket of
/// the second round ([`leave_table`]): a program that ran meanwhile could
/// put an fd of its own at that number (dup2) and the shim would wait on
/// it for ever (`tree fdshare`'s root dup2s onto 70 after the restore,
/// where a sharing child's round socket landed once only its own fds
/// were taken from its stand-in; a review of stop 41).
const MEMBERS_AT: usize = W + 0x2700_0000;
const MEMBERS_LEN: usize = 1 << 20;
const MEMBERS_MAX: usize = MEMBERS_LEN / 16 - 1;

/// Whether this process is in a table of [`MEMBERS_AT`].
static IN_TABLE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The u32 at word `i` of the members' mapping, as an atomic.
fn member_word(i: usize) -> &'static core::sync::atomic::AtomicU32 {
    debug_assert!(i < MEMBERS_LEN / 4);
    // SAFETY: MEMBERS_AT is mapped shared (readable, writable) while
    // IN_TABLE is set, and i < MEMBERS_LEN / 4 (callers: the count at 0,
    // slots below MEMBERS_MAX); AtomicU32 has u32's layout.
    unsafe { &*(MEMBERS_AT as *const core::sync::atomic::AtomicU32).add(i) }
}

/// Join process `pid` (child of `parent`) to this process's table, this
/// process first if it is not in it yet (mapping the slots).
fn join_table(pid: u32, parent: u32) {
    use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    if !IN_TABLE.load(Relaxed) {
        let r = mmap(
            MEMBERS_AT,
            MEMBERS_LEN,
            PROT_READ | PROT_WRITE,
            MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            usize::MAX,
            0,
        );
        if r as usize != MEMBERS_AT {
            die(format_args!(
                "mapping the shared fd table's members: errno {}",
                -r
            ));
        }
        IN_TABLE.store(true, Relaxed);
        let me = syscall3(SYS_GETPID, 0, 0, 0) as u32;
        let up = syscall3(SYS_GETPPID, 0, 0, 0) as u32;
        join_table(me, up);
    }
    // (One writer, this process's shim: the slot, then the count.)
    let k = member_word(0).load(Acquire) as usize;
    if k >= MEMBERS_MAX {
        return; // (not waited for: past what the slots hold)
    }
    member_word(4 * (k + 1)).store(pid, Relaxed);
    member_word(4 * (k + 1) + 1).store(parent, Relaxed);
    member_word(0).store(k as u32 + 1, Release);
}

/// Process `pid` of the table is done with it (or lost: never forked).
fn table_done(pid: u32) {
    use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    if !IN_TABLE.load(Relaxed) {
        return;
    }
    let n = (member_word(0).load(Acquire) as usize).min(MEMBERS_MAX);
    if let Some(k) = (0..n).find(|&k| member_word(4 * (k + 1)).load(Relaxed) == pid) {
        member_word(4 * (k + 1) + 2).store(1, Release);
    }
}

/// Past the second round, with no fd of the shim's left in the table: say
/// so, and wait until every process of the table has (or has ended),
/// so that no program runs while a shim still holds a number of it.
pub fn leave_table() {
    use core::sync::atomic::Ordering::{Acquire, Relaxed};
    if !IN_TABLE.load(Relaxed) {
        return;
    }
    let me = syscall3(SYS_GETPID, 0, 0, 0) as u32;
    table_done(me);
    let n = (member_word(0).load(Acquire) as usize).min(MEMBERS_MAX);
    let slot = |k: usize| 4 * (k + 1);
    const SYS_NANOSLEEP: usize = 35;
    let pause = [0u64, 50_000];
    loop {
        let waiting = (0..n).any(|k| {
            // (Ended: by its state alone, not its parent's PID, which a
            // parent's end changes; one lost before its fork is marked
            // done by whoever lost it.)
            member_word(slot(k) + 2).load(Acquire) == 0
                && !ended(member_word(slot(k)).load(Relaxed), None)
        });
        if !waiting {
            return;
        }
        syscall3(SYS_NANOSLEEP, pause.as_ptr() as usize, 0, 0);
    }
}

/// The stand-in's part: its files were opened and checked (so a changed
/// file fails the tree's restore before any point of no return); close
/// them, say `s` at the barrier, and wait for the parent's shim to kill
/// this process.
// (A frame of its own: its buffers are not probed into the restore's
// on every restore, a fresh-page fault each.)
#[inline(never)]
pub fn stand_in(a: &Args, files: Files) -> ! {
    files.close_opened();
    if a.alias_fd != usize::MAX {
        syscall3(SYS_CLOSE, a.alias_fd, 0, 0);
    }
    let fd = a.barrier_fd;
    if a.flags & flags::BARRIER == 0 || fd == usize::MAX {
        die(format_args!("a stand-in outside a tree's restore"));
    }
    check(
        crate::barrier_send(fd, b's'),
        format_args!("the tree's barrier"),
    );
    crate::BARRIER_FD.store(usize::MAX, core::sync::atomic::Ordering::Relaxed);
    loop {
        // Every signal is blocked: only SIGKILL ends it.
        syscall3(SYS_PAUSE, 0, 0, 0);
    }
}

/// `args` NUL-terminated in `buf` (cut at 63 bytes): its address.
fn path(buf: &mut [u8; 64], args: core::fmt::Arguments) -> usize {
    struct To<'a>(&'a mut [u8; 64], usize);
    impl core::fmt::Write for To<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let take = s.len().min(63 - self.1);
            self.0[self.1..self.1 + take].copy_from_slice(&s.as_bytes()[..take]);
            self.1 += take;
            Ok(())
        }
    }
    let mut to = To(buf, 0);
    let _ = core::fmt::write(&mut to, args);
    let n = to.1;
    buf[n] = 0;
    buf.as_ptr() as usize
}

/// "/proc/<pid><tail>" NUL-terminated in `buf`: its address.
fn proc_path(buf: &mut [u8; 64], pid: u32, tail: &str) -> usize {
    path(buf, format_args!("/proc/{pid}{tail}"))
}

/// Read a small file whole into `buf`: the bytes read (0 if it cannot be
/// opened).
fn read_small(path: usize, buf: &mut [u8]) -> usize {
    read_whole(path, buf).unwrap_or(0)
}

/// Whether process `pid`, child of `parent`, has ended: no /proc entry
/// (ENOENT), a zombie, or (a parent given) the PID another's (its parent
/// is not `parent`: the PID was reused). Any other failure to read it:
/// not known to have ended.
pub fn ended(pid: u32, parent: Option<u32>) -> bool {
    const ENOENT: isize = 2;
    const ESRCH: isize = 3;
    let mut p = [0u8; 64];
    let mut buf = [0u8; 512];
    let n = match read_whole(proc_path(&mut p, pid, "/stat"), &mut buf) {
        Ok(n) => n,
        Err(e) => return e == -ENOENT || e == -ESRCH,
    };
    // "pid (comm) S PPID ...": the state follows the last ") ".
    let stat = &buf[..n];
    let Some(i) = stat.windows(2).rposition(|w| w == b") ") else {
        return n == 0;
    };
    let rest = &stat[i + 2..];
    if rest.first().is_none_or(|&c| c == b'Z' || c == b'X') {
        return true;
    }
    let Some(parent) = parent else {
        return false;
    };
    let ppid = rest
        .get(2..)
        .unwrap_or(b"")
        .split(|&c| c == b' ')
        .next()
        .and_then(handoff::parse_arg);
    ppid.is_some_and(|v| v != parent as u64)
}

/// The arguments of child `pid`'s shim if it is a stand-in.
fn stand_in_args(pid: u32) -> Option<Handoff> {
    let mut p = [0u8; 64];
    let mut buf = [0u8; 512];
    let n = read_small(proc_path(&mut p, pid, "/cmdline"), &mut buf);
    let mut args = buf[..n].split(|&c| c == 0);
    args.next()?; // argv[0]
    let rest: [&[u8]; handoff::ARGC] = core::array::from_fn(|_| args.next().unwrap_or(b""));
    let h = Handoff::decode(rest.iter().copied()).ok()?;
    (h.flags & flags::STAND_IN != 0).then_some(h)
}

/// Every fd number open in `/proc/<pid>/fd` (`pid` 0: this process).
fn each_fd(pid: u32, mut f: impl FnMut(usize)) -> Result<(), Failed> {
    let mut p = [0u8; 64];
    let path = if pid == 0 {
        c"/proc/self/fd".as_ptr() as usize
    } else {
        proc_path(&mut p, pid, "/fd")
    };
    let dir = syscall3(SYS_OPEN, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if dir < 0 {
        return Err(Failed("listing its fds", usize::MAX, dir));
    }
    let dir = dir as usize;
    let mut buf = [0u8; 4096];
    loop {
        let n = syscall3(SYS_GETDENTS64, dir, buf.as_mut_ptr() as usize, buf.len());
        if n < 0 {
            syscall3(SYS_CLOSE, dir, 0, 0);
            return Err(Failed("listing its fds", usize::MAX, n));
        }
        let n = n as usize;
        if n == 0 {
            break;
        }
        // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2),
        // d_type (1), d_name (NUL-terminated).
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            if let Some(v) = handoff::parse_arg(name).filter(|&v| v != handoff::NONE) {
                // (Our own listing's fd is not one of this process's.)
                if pid != 0 || v as usize != dir {
                    f(v as usize);
                }
            }
            at += reclen.max(1);
        }
    }
    syscall3(SYS_CLOSE, dir, 0, 0);
    Ok(())
}

/// Why a stand-in's place could not be taken: what, an fd number (or
/// usize::MAX), the errno.
struct Failed(&'static str, usize, isize);

/// What the parent's shim took from a stand-in, at numbers from `floor`
/// up (above every fd of both).
#[derive(Clone, Copy)]
struct Taken {
    /// Its first pair in the table, and how many.
    first: usize,
    n: usize,
    floor: usize,
    cwd: usize,
    /// The stand-in's end of the tree's barrier's second round.
    round: usize,
    /// The signals pending on the stand-in (sent to the child's PID while
    /// it held the place): its thread's, and the process's.
    pending: (u64, u64),
}

impl Taken {
    fn pair(&self, i: usize) -> (usize, usize) {
        // SAFETY: first + i < first + n <= TABLE_MAX pairs of i32 at
        // TABLE_AT (mapped by fork_children, filled by take).
        let (a, b) = unsafe {
            let p = (TABLE_AT as *const i32).add(2 * (self.first + i));
            (*p, *p.add(1))
        };
        (a as usize, b as usize)
    }

    fn close(&self) {
        for i in 0..self.n {
            syscall3(SYS_CLOSE, self.pair(i).1, 0, 0);
        }
        for fd in [self.cwd, self.round] {
            if fd != usize::MAX {
                syscall3(SYS_CLOSE, fd, 0, 0);
            }
        }
    }
}

/// Take stand-in `pid`'s fds (but the shim's own: barrier, alias and page
/// server sockets), its working directory, and apart from the program's
/// fds its end of the barrier's second round. Its pairs go to the table
/// from `*used` on, which grows by them.
fn take(pid: u32, h: &Handoff, used: &mut usize) -> Result<Taken, Failed> {
    // (Pairs from `first` on: the line's earlier stand-ins' are kept.)
    let first = *used;
    let table = (TABLE_AT as *mut i32).wrapping_add(2 * first);
    let room = TABLE_MAX - first;
    let skip = [h.barrier_fd, h.round_fd, h.alias_fd, h.sock_fd];
    // A child sharing this table has the program's fds already: of its
    // stand-in's, only its image and the files `cryo restore` made (from
    // FILES_FD up) are its own (`shared_table_child`). (A line's table
    // holds every one taken at once.)
    let share = h.flags & flags::SHARES_FDS != 0;
    let keeps = |fd: u64| {
        !share
            || fd == h.meta_fd
            || fd == h.pages_fd
            || (h.files_fd != handoff::NONE && fd >= h.files_fd)
    };
    let (mut n, mut top, mut over) = (0usize, 0usize, false);
    each_fd(pid, |fd| {
        // (Above the barrier too: the child has its second round's at
        // its number.)
        top = top.max(fd);
        if skip.contains(&(fd as u64)) || !keeps(fd as u64) {
            return;
        }
        if n == room {
            over = true;
            return;
        }
        // SAFETY: first + n < TABLE_MAX pairs fit the table mapped.
        unsafe { *table.add(2 * n) = fd as i32 };
        n += 1;
    })?;
    if over {
        return Err(Failed("more fds than", TABLE_MAX, -24));
    }
    each_fd(0, |fd| top = top.max(fd))?;
    let floor = top + 1;
    let pidfd = syscall3(SYS_PIDFD_OPEN, pid as usize, 0, 0);
    if pidfd < 0 {
        return Err(Failed("pidfd_open", usize::MAX, pidfd));
    }
    let pidfd = pidfd as usize;
    // An fd above the floor, or why not. (A sharing child's stay where
    // they land: it uses them where they are, and installs none.)
    let above = |fd: isize, what: &'static str, num: usize| -> Result<usize, Failed> {
        if fd < 0 {
            return Err(Failed(what, num, fd));
        }
        if share {
            return Ok(fd as usize);
        }
        let moved = syscall3(SYS_FCNTL, fd as usize, F_DUPFD_CLOEXEC, floor);
        syscall3(SYS_CLOSE, fd as usize, 0, 0);
        if moved < 0 {
            return Err(Failed("moving it above the fds of both", num, moved));
        }
        Ok(moved as usize)
    };
    let mut t = Taken {
        first,
        n: 0,
        floor,
        cwd: usize::MAX,
        round: usize::MAX,
        pending: (0, 0),
    };
    let got = (|| {
        for i in 0..n {
            // SAFETY: first + i < first + n pairs written above.
            let theirs = unsafe { *table.add(2 * i) } as usize;
            let r = syscall3(SYS_PIDFD_GETFD, pidfd, theirs, 0);
            if r == -EBADF {
                continue; // closed since it was listed (none should be)
            }
            let ours = above(r, "taking fd", theirs)?;
            // SAFETY: first + t.n <= first + i < first + n pairs.
            unsafe {
                *table.add(2 * t.n) = theirs as i32;
                *table.add(2 * t.n + 1) = ours as i32;
            }
            t.n += 1;
        }
        let mut p = [0u8; 64];
        let cwd = syscall3(
            SYS_OPEN,
            proc_path(&mut p, pid, "/cwd"),
            O_PATH | O_DIRECTORY | O_CLOEXEC,
            0,
        );
        t.cwd = above(cwd, "opening its working directory", usize::MAX)?;
        let round = syscall3(SYS_PIDFD_GETFD, pidfd, h.round_fd as usize, 0);
        t.round = above(round, "taking the tree's barrier", h.round_fd as usize)?;
        Ok(())
    })();
    syscall3(SYS_CLOSE, pidfd, 0, 0);
    if let Err(e) = got {
        t.close();
        return Err(e);
    }
    *used = first + t.n;
    Ok(t)
}

/// The signals pending on stand-in `pid` (sent to the child's PID while
/// it held the place): its thread's, and the process's. Read just before
/// it ends.
fn pending(pid: u32) -> (u64, u64) {
    let mut p = [0u8; 64];
    let mut status = [0u8; 16384];
    let len = read_small(proc_path(&mut p, pid, "/status"), &mut status);
    let mask = |field: &[u8]| -> u64 {
        let s = &status[..len];
        let Some(at) = s.windows(field.len()).position(|w| w == field) else {
            return 0;
        };
        // Exactly 16 hex digits and the line's end (else unreadable:
        // cut short, say), or nothing.
        let v = s[at + field.len()..].trim_ascii_start();
        match (v.get(..16), v.get(16)) {
            (Some(d), Some(b'\n')) if d.iter().all(u8::is_ascii_hexdigit) => {
                d.iter().fold(0u64, |v, &c| {
                    v << 4 | (c as char).to_digit(16).unwrap_or(0) as u64
                })
            }
            _ => 0,
        }
    };
    (mask(b"\nSigPnd:"), mask(b"\nShdPnd:"))
}

/// Kill stand-in `pid` and reap it (exit signal 0: no SIGCHLD, `__WALL`),
/// which frees its PID.
fn end(pid: u32) {
    const P_PID: usize = 1;
    const WEXITED: usize = 4;
    const WALL: usize = 0x4000_0000;
    syscall3(SYS_KILL, pid as usize, SIGKILL, 0);
    let mut info = [0u64; 16];
    loop {
        let r = syscall6(
            SYS_WAITID,
            P_PID,
            pid as usize,
            info.as_mut_ptr() as usize,
            WEXITED | WALL,
            0,
            0,
        );
        if r != -4 {
            check(r, format_args!("reaping the stand-in of process {pid}"));
            return;
        }
    }
}

/// fork with PID `pid` (clone3 `set_tid`), sharing this process's fd
/// table if `share_fds` (CLONE_FILES): 0 in the child.
fn fork_with_pid(pid: u32, share_fds: bool) -> isize {
    const SIGCHLD: u64 = 17;
    const CLONE_FILES: u64 = 0x400;
    let tid = [pid as i32];
    let clone_flags = if share_fds { CLONE_FILES } else { 0 };
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let args: [u64; 11] = [
        clone_flags,
        0,
        0,
        0,
        SIGCHLD,
        0,
        0,
        0,
        tid.as_ptr() as u64,
        1,
        0,
    ];
    syscall3(
        SYS_CLONE3,
        args.as_ptr() as usize,
        core::mem::size_of_val(&args),
        0,
    )
}

/// In the parent, its memory in: fork every child a stand-in holds the
/// place of, with its PID, and hand it what was taken from the stand-ins
/// below it, which its shim forks in turn ([`fork_below`]). Returns in
/// the parent; each child goes on in [`child`].
// (A frame of its own: its buffers are not probed into the restore's
// on every restore, a fresh-page fault each.)
#[inline(never)]
pub fn fork_children(parent: &Image) {
    let me = syscall3(SYS_GETPID, 0, 0, 0) as u32;
    // (Its children's stand-ins name it by its PID at the capture.)
    let me_then = parent.process().pid as u64;
    map_anon_at(STAND_INS_AT, STAND_INS_LEN, "the list of stand-ins");
    map_anon_at(TABLE_AT, TABLE_LEN, "the table of the fds taken");
    map_anon_at(RECS_AT, RECS_LEN, "the stand-ins taken");
    let list = {
        // SAFETY: STAND_INS_LEN bytes just mapped, ours alone; u32 aligned.
        unsafe { core::slice::from_raw_parts_mut(STAND_INS_AT as *mut u32, STAND_INS_LEN / 4) }
    };
    // Every stand-in among the children, the whole list read first (it
    // changes as they are forked), then forked; again while the list was
    // full.
    let mut found = 0;
    loop {
        let (n, before) = (stand_ins(me, list), found);
        for k in 0..n {
            if list[2 * k] != 0
                && list[2 * k + 1] as u64 == me_then
                && fork_line(parent, &mut list[..2 * n], k)
            {
                found += 1;
            }
        }
        // A stand-in no line took (its line's head gone, or past what a
        // line holds): ended, and said missing (left, it would be a child
        // of the program).
        for k in 0..n {
            let pid = list[2 * k];
            if pid != 0 && stand_in_args(pid).is_some() {
                end(pid);
                missing(
                    pid,
                    format_args!("the stand-in of a process above it was not found"),
                );
            }
        }
        // (A list that held them all: every stand-in was in it. A second
        // read would wait on each forked child's memory map, which its
        // /proc/PID/cmdline reads.)
        if found == before || 2 * n < list.len() {
            break;
        }
    }
    if found == 0 {
        write(
            2,
            b"cryo-shim: none of the children this process's shim was to fork was found; they are missing\n",
        );
    }
}

/// The PIDs of this process's (`me`) children that are stand-ins, each
/// with its parent at the capture (u32::MAX: none), into `list` in
/// pairs: how many. Dies if the list cannot be read (its stand-ins end
/// with it, and the tree's second round sees them gone).
fn stand_ins(me: u32, list: &mut [u32]) -> usize {
    let mut p = [0u8; 64];
    let path = path(&mut p, format_args!("/proc/{me}/task/{me}/children"));
    let fd = check(
        syscall3(SYS_OPEN, path, O_RDONLY | O_CLOEXEC, 0),
        format_args!("opening the list of its children"),
    );
    let mut buf = [0u8; 4096];
    let (mut n, mut cur, mut digits) = (0usize, 0u64, 0u32);
    let mut add = |pid: u64, n: &mut usize| {
        if 2 * *n + 1 < list.len() && pid <= u32::MAX as u64 {
            if let Some(h) = stand_in_args(pid as u32) {
                list[2 * *n] = pid as u32;
                list[2 * *n + 1] = u32::try_from(h.parent).unwrap_or(u32::MAX);
                *n += 1;
            }
        }
    };
    loop {
        let r = check(
            syscall3(SYS_READ, fd, buf.as_mut_ptr() as usize, buf.len()),
            format_args!("reading the list of its children"),
        );
        if r == 0 {
            break;
        }
        // (A number may go on in the next read.)
        for &c in &buf[..r] {
            if c.is_ascii_digit() && digits < 19 {
                cur = cur * 10 + (c - b'0') as u64;
                digits += 1;
            } else if digits > 0 {
                add(cur, &mut n);
                (cur, digits) = (0, 0);
            }
        }
    }
    if digits > 0 {
        add(cur, &mut n);
    }
    syscall3(SYS_CLOSE, fd, 0, 0);
    n
}

/// A stand-in of a line: its PID, arguments, and what was taken from it.
#[derive(Clone, Copy)]
struct Rec {
    pid: u32,
    h: Handoff,
    t: Taken,
    /// Not taken, or a process above it lost: never forked (said so).
    lost: bool,
}

/// How many [`Rec`]s the line holds (at RECS_AT, mapped by
/// [`fork_children`] and copied into every child forked since).
fn recs_n() -> usize {
    // SAFETY: RECS_AT is mapped, ours alone (see above); a usize there.
    unsafe { *(RECS_AT as *const usize) }
}

fn rec(i: usize) -> Rec {
    debug_assert!(i < recs_n());
    // SAFETY: i < recs_n() <= RECS_MAX records written by fork_line,
    // after the count's 64 bytes.
    unsafe { *((RECS_AT + 64) as *const Rec).add(i) }
}

fn set_rec(i: usize, r: Rec) {
    if i >= RECS_MAX {
        return;
    }
    // SAFETY: i < RECS_MAX records fit after the count (RECS_LEN).
    unsafe { *((RECS_AT + 64) as *mut Rec).add(i) = r };
    if i >= recs_n() {
        // SAFETY: as in recs_n.
        unsafe { *(RECS_AT as *mut usize) = i + 1 };
    }
}

/// Say that process `pid` could not be forked (`why`) and is missing; the
/// tree's second round hears `f` for it.
fn missing(pid: u32, why: core::fmt::Arguments) {
    let mut m = crate::Msg { b: [0; 768], n: 0 };
    let _ = core::fmt::Write::write_fmt(
        &mut m,
        format_args!("cryo-shim: process {pid} could not be forked: {why}; it is missing\n"),
    );
    write(2, &m.b[..m.n]);
    crate::round_lost(pid);
}

/// Every stand-in of the line below process `pid`, which is missing:
/// missing too, and what was taken from them closed (in the one table
/// of the line, nobody else would).
fn lose_below(pid: u32) {
    for i in 0..recs_n() {
        let mut r = rec(i);
        if r.lost || r.h.parent != pid as u64 {
            continue;
        }
        r.lost = true;
        set_rec(i, r);
        r.t.close();
        table_done(r.pid);
        missing(r.pid, format_args!("its parent {pid} is missing"));
        lose_below(r.pid);
    }
}

/// Take the line of stand-in `list[2 k]`, a child of this process's: it
/// and every stand-in below it (its shim forks those; they are all this
/// process's children here), then end them all and fork the first.
/// Whether it was a stand-in.
fn fork_line(parent: &Image, list: &mut [u32], k: usize) -> bool {
    let pid = list[2 * k];
    let Some(h) = stand_in_args(pid) else {
        return false;
    };
    let none = Taken {
        first: 0,
        n: 0,
        floor: 0,
        cwd: usize::MAX,
        round: usize::MAX,
        pending: (0, 0),
    };
    // SAFETY: as in recs_n: the line starts empty.
    unsafe { *(RECS_AT as *mut usize) = 0 };
    let add = |pid: u32, h: Handoff| {
        set_rec(
            recs_n(),
            Rec {
                pid,
                h,
                t: none,
                lost: false,
            },
        )
    };
    add(pid, h);
    // The stand-ins below it: one whose parent is in the line already,
    // until no more is (the list was read whole).
    loop {
        let before = recs_n();
        for (j, pair) in list.chunks_exact(2).enumerate() {
            let (p, up) = (pair[0], pair[1]);
            if j == k || recs_n() >= RECS_MAX || (0..recs_n()).any(|i| rec(i).pid == p) {
                continue;
            }
            if (0..recs_n()).any(|i| rec(i).pid == up) {
                if let Some(h) = stand_in_args(p) {
                    add(p, h);
                }
            }
        }
        if recs_n() == before {
            break;
        }
    }
    // (Each taken off the list: what is left on it no line took.)
    for pair in list.chunks_exact_mut(2) {
        if (0..recs_n()).any(|i| rec(i).pid == pair[0]) {
            pair[0] = 0;
        }
    }
    // Each one's fds above every fd of this table (a stand-in below
    // shares it: its own shim forks it from this table, or from a copy
    // of it), then all ended: their PIDs free for the forks.
    let mut used = 0;
    for i in 0..recs_n() {
        let mut r = rec(i);
        match take(r.pid, &r.h, &mut used) {
            Ok(t) => r.t = t,
            Err(Failed(what, num, e)) => {
                r.lost = true;
                // Past the point of no return: the parent and the rest of
                // the tree go on without this child, and say so.
                if num == usize::MAX {
                    missing(r.pid, format_args!("{what} of its stand-in: errno {}", -e));
                } else {
                    missing(
                        r.pid,
                        format_args!("{what} {num} of its stand-in: errno {}", -e),
                    );
                }
            }
        }
        set_rec(i, r);
    }
    for i in 0..recs_n() {
        let mut r = rec(i);
        r.t.pending = pending(r.pid);
        set_rec(i, r);
        end(r.pid);
        // (Every process of the table in it before any leaves its shim:
        // none does before the second round, which waits for this one.)
        if !r.lost && r.h.flags & flags::SHARES_FDS != 0 {
            // (The first is this process's child: `parent` names it as
            // captured, which for the root may be another PID now.)
            let up = if i == 0 {
                syscall3(SYS_GETPID, 0, 0, 0) as u32
            } else {
                r.h.parent as u32
            };
            join_table(r.pid, up);
        }
    }
    for i in 0..recs_n() {
        if rec(i).lost {
            lose_below(rec(i).pid);
        }
    }
    if !rec(0).lost {
        fork_rec(parent, 0);
    }
    true
}

/// Fork record `i` of the line with its PID (its stand-in ended); in the
/// child, go on as it. What was taken from its stand-in is closed here
/// unless the two share this table (then it is the child's to close).
fn fork_rec(parent: &Image, i: usize) {
    let mut r = rec(i);
    let share_fds = r.h.flags & flags::SHARES_FDS != 0;
    match fork_with_pid(r.pid, share_fds) {
        0 => child(parent, &r.h, &r.t),
        e if e < 0 => {
            // Past the point of no return: the parent goes on, the child
            // is lost, and says so.
            r.lost = true;
            set_rec(i, r);
            r.t.close();
            table_done(r.pid);
            missing(
                r.pid,
                format_args!("with its PID (clone3 set_tid: errno {})", -e),
            );
            lose_below(r.pid);
        }
        _ if share_fds => {}
        _ => r.t.close(),
    }
}

/// In a child forked by its parent's shim, its memory in: fork its own
/// children, whose stand-ins its parent's shim took with it.
#[inline(never)]
pub fn fork_below(img: &Image) {
    let me = syscall3(SYS_GETPID, 0, 0, 0) as u64;
    let mut forked = 0;
    for i in 0..recs_n() {
        let r = rec(i);
        if !r.lost && r.h.parent == me {
            fork_rec(img, i);
            forked += 1;
        }
    }
    if forked == 0 {
        write(
            2,
            b"cryo-shim: none of the children this process's shim was to fork was taken; they are missing\n",
        );
    }
}

/// Where a child forked by its parent's shim maps its image: the place
/// of the window its parent's is not at (a grandparent's there is of no
/// more use: the frames that read it never return).
pub fn child_meta_at() -> usize {
    use core::sync::atomic::Ordering::Relaxed;
    let at = if META_SLOT.load(Relaxed) == crate::CHILD_META_AT {
        crate::META_AT
    } else {
        crate::CHILD_META_AT
    };
    syscall3(SYS_MUNMAP, at, cryo_image::MAX_META_LEN as usize, 0);
    META_SLOT.store(at, Relaxed);
    at
}

/// Where this process's image is mapped (`child_meta_at`).
static META_SLOT: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(crate::META_AT);

/// The child, just forked: its fds and working directory in place, then
/// the restore of its own image from its mappings on.
fn child(parent: &Image, h: &Handoff, t: &Taken) -> ! {
    // (Forked from the root's shim, it is not the root: the children it
    // loses are said in the second round, not noted for itself.)
    crate::IS_ROOT.store(false, core::sync::atomic::Ordering::Relaxed);
    crate::ROOT_LOST_N.store(0, core::sync::atomic::Ordering::Relaxed);
    if h.flags & flags::SHARES_FDS != 0 {
        shared_table_child(parent, h, t)
    }
    // A table of its own: not one of its parent's table.
    IN_TABLE.store(false, core::sync::atomic::Ordering::Relaxed);
    // (A child with a table of its own forks none: `cryo restore` makes
    // no stand-in below it. Its table is about to lose what was taken.)
    lose_below(syscall3(SYS_GETPID, 0, 0, 0) as u32);
    // The parent's /proc/self/mem names the parent's memory; its made
    // files' table (a parent sharing its own parent's table has one) is
    // not this process's: its made files are at their numbers.
    crate::vma::close_mem_fd();
    crate::files::made_files_at(0);
    syscall3(SYS_CLOSE_RANGE, 0, t.floor - 1, 0);
    for i in 0..t.n {
        let (theirs, ours) = t.pair(i);
        check(
            syscall3(SYS_DUP3, ours, theirs, 0),
            format_args!("installing fd {theirs}"),
        );
    }
    check(
        syscall3(SYS_FCHDIR, t.cwd, 0, 0),
        format_args!("entering the working directory"),
    );
    // The second round's socket at the stand-in's number (none of the
    // program's).
    check(
        syscall3(SYS_DUP3, t.round, h.round_fd as usize, O_CLOEXEC),
        format_args!("installing the tree's barrier"),
    );
    syscall3(SYS_CLOSE_RANGE, t.floor, u32::MAX as usize, 0);
    let fd = crate::handoff_arg;
    go_on(
        parent,
        h,
        t,
        fd(h.meta_fd),
        fd(h.pages_fd),
        fd(h.files_fd),
        fd(h.round_fd),
    )
}

/// A child that shares its parent's fd table (CLONE_FILES): the program's
/// fds are in place already, and so are its parent's shim's own, which
/// it leaves alone. What was taken from its stand-in stays where the
/// parent's shim put it (the stand-in's numbers may be the parent shim's
/// own): the shim's files it uses from there and closes when done, the
/// rest at once.
fn shared_table_child(parent: &Image, h: &Handoff, t: &Taken) -> ! {
    // (Its number is the parent's: closed by the parent's shim.)
    crate::vma::forget_mem_fd();
    let ours = |v: u64| {
        if v == handoff::NONE {
            return usize::MAX;
        }
        (0..t.n)
            .map(|i| t.pair(i))
            .find(|&(theirs, _)| theirs as u64 == v)
            .map_or(usize::MAX, |(_, ours)| ours)
    };
    let (meta, pages, files) = (ours(h.meta_fd), ours(h.pages_fd), ours(h.files_fd));
    // The files `cryo restore` made are the stand-in's last fds, from
    // FILES_FD up (above every fd of the program): listed by their place
    // there, in the list of stand-ins (of no more use here).
    let made = STAND_INS_AT as *mut i32;
    let slots = STAND_INS_LEN / 4;
    for k in 0..slots.min(t.n) {
        // SAFETY: k < slots i32s of the mapping, ours (a private copy).
        unsafe { *made.add(k) = -1 };
    }
    for i in 0..t.n {
        let (theirs, o) = t.pair(i);
        let k = (files != usize::MAX && h.files_fd != handoff::NONE)
            .then(|| (theirs as u64).wrapping_sub(h.files_fd) as usize)
            .filter(|&k| k < slots.min(t.n));
        match k {
            // SAFETY: k < slots.
            Some(k) => unsafe { *made.add(k) = o as i32 },
            None if o != meta && o != pages => {
                syscall3(SYS_CLOSE, o, 0, 0);
            }
            None => {}
        }
    }
    if files != usize::MAX {
        crate::files::made_files_at(STAND_INS_AT);
    }
    check(
        syscall3(SYS_FCHDIR, t.cwd, 0, 0),
        format_args!("entering the working directory"),
    );
    syscall3(SYS_CLOSE, t.cwd, 0, 0);
    if meta == usize::MAX {
        die(format_args!(
            "the image of a process sharing its parent's fds was not taken from its stand-in"
        ));
    }
    go_on(parent, h, t, meta, pages, files, t.round)
}

/// The child, its fds and working directory in place: the signals sent
/// to its stand-in, then its restore.
fn go_on(
    parent: &Image,
    h: &Handoff,
    t: &Taken,
    meta_fd: usize,
    pages_fd: usize,
    files_fd: usize,
    round_fd: usize,
) -> ! {
    // What was sent to the stand-in, again (every signal is blocked in
    // the shim): the signal kept, its siginfo and a realtime signal's
    // count not.
    let me = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    for sig in 1..=64usize {
        let bit = 1u64 << (sig - 1);
        if t.pending.0 & bit != 0 {
            syscall3(SYS_TGKILL, me, me, sig);
        }
        if t.pending.1 & bit != 0 {
            syscall3(SYS_KILL, me, sig, 0);
        }
    }
    let a = Args {
        meta_fd,
        pages_fd,
        tid_offset: crate::handoff_arg(h.tid_offset),
        // (FORKS kept: it forks its own children, `fork_below`.)
        flags: h.flags & !(flags::BARRIER | flags::STAND_IN | flags::SHARES_FDS),
        exec_ns: 0,
        sock_fd: usize::MAX,
        alias_fd: usize::MAX,
        files_fd,
        barrier_fd: usize::MAX,
        round_fd,
    };
    crate::restore_forked(&a, parent)
}

/// VmFlags a fork does not copy (mlock) or the shim sets after (mlock,
/// and the protection: a part of a parent's mapping the child
/// mprotect'ed is kept and shared too): the rest must be the same for a
/// mapping to be kept.
const NOT_COMPARED: u64 = vmflag("lo") | vmflag("lf") | vmflag("rd") | vmflag("wr") | vmflag("ex");

/// Whether the child's mapping `v` starts inside the parent's `p` as the
/// fork left it: same kind, backing (its offset too, so a part of it
/// split off by mprotect or munmap counts) and flags; the protection and
/// the end may differ.
fn from_parent(pi: &Image, p: &Vma, ci: &Image, v: &Vma) -> bool {
    let same_file = match (p.file, v.file) {
        (NO_INDEX, NO_INDEX) => true,
        (NO_INDEX, _) | (_, NO_INDEX) => false,
        (a, b) => match (pi.files().get(a as usize), ci.files().get(b as usize)) {
            (Some(f), Some(g)) => {
                (f.dev, f.ino) == (g.dev, g.ino) && pi.str(f.path) == ci.str(g.path)
            }
            _ => false,
        },
    };
    p.start <= v.start
        && v.start < p.end
        // (/proc/PID/maps shows 0 for anonymous private memory.)
        && (p.file == NO_INDEX
            && matches!(p.kind, vma_kind::ANON_PRIVATE | vma_kind::HEAP | vma_kind::STACK)
            || v.pgoff == p.pgoff + (v.start - p.start) / PAGE_SIZE)
        && p.kind == v.kind
        && p.flags == v.flags
        && !p.is_special()
        && p.vmflags & vmflag("dc") == 0
        && p.vmflags & !NOT_COMPARED == v.vmflags & !NOT_COMPARED
        && same_file
}

/// The index of the first mapping of `img` that ends after `addr`.
fn first_ending_after(img: &Image, addr: u64) -> usize {
    let vmas = img.vmas();
    let (mut lo, mut hi) = (0, vmas.len());
    while lo < hi {
        let m = lo + (hi - lo) / 2;
        match vmas.get(m) {
            Some(v) if v.end <= addr => lo = m + 1,
            _ => hi = m,
        }
    }
    lo
}

/// The parent's mapping the child's `v` starts in, if `v` comes from it.
fn source(pi: &Image, ci: &Image, v: &Vma) -> Option<Vma> {
    pi.vmas()
        .get(first_ending_after(pi, v.start))
        .filter(|p| from_parent(pi, p, ci, v))
}

/// The child's address space from its parent's: every part of a parent's
/// mapping that no mapping of the child comes from goes; every mapping
/// that comes from one keeps the pages it shared and gets its own others;
/// every other mapping of the child is made as a shim makes any.
pub fn reshape(pi: &Image, ci: &Image, files: &mut Files, pages_fd: usize) {
    for p in pi.vmas().iter() {
        if p.is_special() || p.vmflags & vmflag("dc") != 0 {
            continue; // (the vDSO stays; MADV_DONTFORK: not forked)
        }
        let mut at = p.start;
        let vmas = ci.vmas();
        for v in (first_ending_after(ci, p.start)..vmas.len()).map_while(|i| vmas.get(i)) {
            if v.start >= p.end {
                break;
            }
            if from_parent(pi, &p, ci, &v) {
                if at < v.start {
                    unmap(at, v.start);
                }
                at = v.end.min(p.end);
            }
        }
        if at < p.end {
            unmap(at, p.end);
        }
    }
    let mut prev: Option<Vma> = None;
    for v in ci.vmas().iter() {
        if !v.is_special() {
            match source(pi, ci, &v) {
                Some(p) => fix_up(pi, &p, ci, &v, pages_fd),
                None if v.kind == vma_kind::SYSV => attach_sysv(ci, &v),
                // (Made by io_setup and moved here: `aio::make`.)
                None if v.kind == vma_kind::AIO => {}
                None => {
                    let fd = if v.file != NO_INDEX {
                        files.open(v.file)
                    } else {
                        usize::MAX
                    };
                    map_vma(ci, &v, prev.as_ref(), fd, pages_fd, None, false);
                }
            }
        }
        prev = Some(v);
    }
}

fn unmap(start: u64, end: u64) {
    check(
        syscall3(SYS_MUNMAP, start as usize, (end - start) as usize, 0),
        format_args!("unmapping {start:#x}-{end:#x}"),
    );
}

/// Where a process's page runs put address `a`: the run's kind (0: no
/// run, the page was not present), the page's offset in pages.img, and
/// where that state ends.
struct Runs<'a> {
    img: &'a Image<'a>,
    i: usize,
    end: usize,
}

impl<'a> Runs<'a> {
    fn of(img: &'a Image<'a>, v: &Vma) -> Runs<'a> {
        let i = v.first_run as usize;
        Runs {
            img,
            i,
            end: i + v.run_count as usize,
        }
    }

    fn none(img: &'a Image<'a>) -> Runs<'a> {
        Runs { img, i: 0, end: 0 }
    }

    fn at(&mut self, a: u64) -> (u32, u64, u64) {
        let runs = self.img.page_runs();
        while self.i < self.end {
            match runs.get(self.i) {
                Some(r) if r.vaddr + r.len() <= a => self.i += 1,
                Some(r) if r.vaddr <= a => {
                    return (r.kind, r.offset + (a - r.vaddr), r.vaddr + r.len())
                }
                Some(r) => return (0, 0, r.vaddr),
                None => break,
            }
        }
        (0, 0, u64::MAX)
    }
}

/// The child's mapping `v`, which the fork left as the parent's `p`:
/// its end, its pages where they are not the parent's, its protection
/// and flags.
fn fix_up(pi: &Image, p: &Vma, ci: &Image, v: &Vma, pages_fd: usize) {
    let (start, len) = (v.start as usize, v.len() as usize);
    if p.end < v.end {
        // (What follows it was unmapped above, or was never there; what
        // the fork left from v.start is the end of a mapping.)
        let r = syscall6(SYS_MREMAP, start, (p.end - v.start) as usize, len, 0, 0, 0);
        if r as usize != start {
            die(format_args!(
                "growing the mapping at {start:#x} to {:#x}: errno {}",
                v.end, -r
            ));
        }
    }
    let shared = matches!(
        v.kind,
        vma_kind::FILE_SHARED | vma_kind::ANON_SHARED | vma_kind::SYSV
    );
    let mut prot = (p.prot & 7) as usize;
    if !shared {
        let file = v.file != NO_INDEX;
        // MADV_WIPEONFORK: the child's copy is empty.
        let wiped = p.vmflags & vmflag("wf") != 0;
        let mut theirs = if wiped {
            Runs::none(pi)
        } else {
            Runs::of(pi, p)
        };
        let mut ours = Runs::of(ci, v);
        let writable = |prot: &mut usize| {
            if *prot & PROT_WRITE == 0 {
                *prot |= PROT_WRITE;
                check(
                    syscall3(SYS_MPROTECT, start, len, *prot),
                    format_args!("mprotect {start:#x}"),
                );
            }
        };
        let mut a = v.start;
        while a < v.end {
            let (ck, co, c_until) = ours.at(a);
            let (pk, po, p_until) = if a < p.end {
                theirs.at(a)
            } else {
                (0, 0, u64::MAX)
            };
            let seg = c_until
                .min(p_until)
                .min(v.end)
                .min(if a < p.end { p.end } else { v.end });
            let n = (seg - a) as usize;
            let drop = |at: u64| {
                check(
                    syscall3(SYS_MADVISE, at as usize, n, MADV_DONTNEED),
                    format_args!("MADV_DONTNEED {at:#x}"),
                );
            };
            match ck {
                run_kind::DATA if pk == run_kind::DATA && po == co => {}
                run_kind::DATA => {
                    writable(&mut prot);
                    if let Err(e) = pread_all(pages_fd, a as usize, n, co) {
                        die(format_args!("reading pages for {a:#x}: errno {}", -e));
                    }
                }
                run_kind::ZERO if file && pk == run_kind::ZERO => {}
                run_kind::ZERO if file => {
                    writable(&mut prot);
                    // SAFETY: a..a+n lies inside this mapping, writable now
                    // (validate checks runs lie inside their VMA).
                    unsafe { core::ptr::write_bytes(a as *mut u8, 0, n) };
                }
                // Anonymous: zero or not present reads zeros; a file's
                // private mapping not present reads the file.
                _ if pk == run_kind::DATA || (file && pk == run_kind::ZERO) => drop(a),
                _ => {}
            }
            a = seg;
        }
    }
    let want = (v.prot & 7) as usize;
    if prot != want {
        check(
            syscall3(SYS_MPROTECT, start, len, want),
            format_args!("mprotect {start:#x}"),
        );
    }
    restore_vma_flags(v);
}
