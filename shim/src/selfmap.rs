//! Where the shim runs from. PR_SET_MM_MAP refuses (EBUSY) to replace the
//! executable while any mapping has the executable's path. Where the
//! process finishes alone through the program's code, the executable is
//! named there, once the shim is unmapped (`exe_in_chain`); else, before
//! PR_SET_MM_MAP, the shim maps its own segments again from
//! `cryo-shim.text` (a hard link of its binary: another path, the same
//! bytes), or copies itself into anonymous memory.

use crate::files::Files;
use crate::mem::*;
use crate::sys::*;
use crate::{die, Args, PG, SELF_COPY_AT};
use cryo_image::Image;

/// Whether the executable can be given to PR_SET_MM_MAP in the finishing
/// chain (`frame::finish_without_tracer`: after the munmap of the shim's
/// window, before the program runs), so that the shim need not leave its
/// own file: ~0.1 ms less for a packed restore of a small C program on
/// the VM of docs/benchmarks.md (the remapping ~55 µs, the code's faults
/// again, and a packed restorer's search for its second name). Only where
/// nothing can make that last call fail where the shim could not tell,
/// and nothing of the program can run before it:
/// - one process finishing alone (not lazily, not in a tree); its other
///   threads go on only after the chain's last calls (the chain sets and
///   wakes their own wait words: before, a wait restarted after a stop
///   went on early and found the restorer its executable and the fd
///   open, 9 runs in 60 under STOP/CONT, a review);
/// - no mapping of the program's of the shim's own file (the chain's
///   PR_SET_MM_MAP would meet the EBUSY `mm::check_late` takes for the
///   shim's: a review, `maps_own_file`);
/// - room for the fallback's copy within the program's own limits
///   (`room_for_more`; the chain's mapping, `frame::Area`, is made before
///   the program's mlockall and MDWE, and refused here it fails the
///   restore);
/// - no seccomp filter and no strict mode (the chain's prctl and close
///   must be allowed);
/// - no POSIX lock (closing the executable's fd in the chain would drop
///   the process's locks on that file, taken again before it);
/// - the capability to name an executable (CAP_SYS_ADMIN or
///   CAP_CHECKPOINT_RESTORE) still held with the program's credentials,
///   and, where the shim sets those, file system uid 0 (whose permission
///   to execute the file the call checks);
/// - the executable opened here read-only, not made by `cryo restore`,
///   and open for writing nowhere (`no_writers`).
///
/// The rest of what that call checks, `mm::check_late` asks with the
/// program's credentials just before the chain (a failure there is the
/// shim's, past the point of no return, as PR_SET_MM_MAP's always was). A
/// writer that opens the file after this, or a permission changed
/// meanwhile, would leave /proc/PID/exe naming the restorer: a race of
/// the kind every mapped file's check has (docs/pitfalls.md).
pub fn exe_in_chain(img: &Image, a: &Args, files: &Files, exe_fd: u32, lazy: bool) -> bool {
    use cryo_image::fds::lock_kind;
    use cryo_image::handoff::flags;
    const ALONE: u64 = flags::SELF_UNMAP;
    const TREE: u64 = flags::BARRIER | flags::FORKS | flags::STAND_IN;
    if exe_fd == u32::MAX || lazy || a.flags & ALONE == 0 || a.flags & TREE != 0 {
        return false;
    }
    if !room_for_more(img) {
        return false;
    }
    if !img.seccomp().is_empty() || img.task().is_some_and(|t| t.seccomp_strict != 0) {
        return false;
    }
    if img.locks().iter().any(|l| l.kind == lock_kind::POSIX) {
        return false;
    }
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_CHECKPOINT_RESTORE: u64 = 1 << 40;
    let eff = match img.creds() {
        Some(c) if a.flags & flags::SAME_CREDS == 0 => {
            if c.uid[3] != 0 {
                return false;
            }
            c.cap_eff
        }
        _ => crate::task::effective_caps(),
    };
    if eff & (CAP_SYS_ADMIN | CAP_CHECKPOINT_RESTORE) == 0 {
        return false;
    }
    if files.made_by_restore(img.process().exe_file) || maps_own_file(img) {
        return false;
    }
    const F_GETFL: usize = 3;
    const O_ACCMODE: isize = 3;
    let fd = exe_fd as usize;
    if syscall3(SYS_FCNTL, fd, F_GETFL, 0) & O_ACCMODE != O_RDONLY as isize {
        return false;
    }
    match no_writers(fd) {
        Writers::None => true,
        Writers::Unknown => false,
        Writers::Some => {
            let p = img.process();
            let exe = img
                .files()
                .get(p.exe_file as usize)
                .and_then(|f| img.str(f.path))
                .unwrap_or("?");
            die(format_args!(
                "the executable {exe} is open for writing elsewhere (or leased): it cannot be the program's executable again while it is"
            ))
        }
    }
}

/// Whether the program's own limits leave room for what the finishing
/// chain and its fallback make: a mapping for the chain's frames (made
/// before the program's mlockall and MDWE are back, but under its
/// rlimits), and, once the program's state is set, a 244 KiB copy of
/// the shim, its code made writable and executable (a review: each
/// failed, status 125, where the old way restored, when both were made
/// last). Not under memory-deny-write-execute (the copy's RWX mapping is
/// refused), nor with mlockall(MCL_FUTURE) set (the copy would be
/// locked, against RLIMIT_MEMLOCK), nor under a finite RLIMIT_AS (either
/// is a new peak of address space), nor near the kernel's 65 530
/// mappings.
fn room_for_more(img: &Image) -> bool {
    const RLIMIT_AS: u32 = 9;
    let task_ok = img
        .task()
        .is_none_or(|t| t.mdwe <= 0 && t.mlock_future == 0);
    let as_ok = img
        .rlimits()
        .iter()
        .all(|r| r.resource != RLIMIT_AS || r.cur == u64::MAX);
    task_ok && as_ok && img.vmas().len() < 60_000
}

/// Whether any of the program's mappings is of the file this shim was
/// started from (its device and inode, by /proc/self/exe): then the
/// EBUSY that `mm::check_late` expects could be the program's, not the
/// shim's, and the chain's call would fail unseen.
fn maps_own_file(img: &Image) -> bool {
    let Some(own) = own_file() else {
        return true;
    };
    img.vmas().iter().any(|v| {
        v.file != cryo_image::NO_INDEX
            && img
                .files()
                .get(v.file as usize)
                .is_some_and(|f| (f.dev, f.ino) == own)
    })
}

/// The device and inode of the file this shim was started from (a stat
/// of /proc/self/exe), if it can be had.
pub fn own_file() -> Option<(u64, u64)> {
    const SYS_NEWFSTATAT: usize = 262;
    const AT_FDCWD: isize = -100;
    let mut st = [0u64; 18];
    let r = syscall6(
        SYS_NEWFSTATAT,
        AT_FDCWD as usize,
        c"/proc/self/exe".as_ptr() as usize,
        st.as_mut_ptr() as usize,
        0,
        0,
        0,
    );
    (r == 0).then_some((st[0], st[1]))
}

/// What a read lease on the executable says of writers (`no_writers`).
#[derive(PartialEq)]
pub enum Writers {
    /// None has it open for writing.
    None,
    /// A writer (or another's lease) has it, on a file system whose
    /// leases are the kernel's own: there EAGAIN says so.
    Some,
    /// Cannot tell: no lease to be had (the file system, fs.leases-enable,
    /// a file neither the invoker's nor leasable without CAP_LEASE), an
    /// EAGAIN from a file system with leases of its own (NFSv4 without a
    /// delegation, SMB without an oplock: a review), or SIGRTMAX pending
    /// already.
    Unknown,
}

/// Whether the executable (`fd`, read-only) is open for writing anywhere,
/// which PR_SET_MM_MAP refuses (it denies writing to the file, as an exec
/// does) and checks only after the EBUSY that `mm::check_late` ends in: a
/// read lease is refused (EAGAIN) while a writer has it open. Taken and
/// given back at once. A writer that opened it in between was sent a
/// signal (a lease's owner is the process that took it): SIGRTMAX, set
/// for this fd alone (F_SETSIG), found pending here (not SIGIO, which the
/// program's own O_ASYNC fds may send meanwhile, a review), and taken
/// back. Asked before the point of no return (a writer then fails the
/// restore in one line) and again just before the finishing chain (a
/// writer may open the file while the pages are read: seconds for a
/// large image, a review found /proc/PID/exe left naming the restorer
/// then); with SIGRTMAX pending before (the program's own, queued by
/// then), that second look cannot tell.
pub fn no_writers(fd: usize) -> Writers {
    const F_SETSIG: usize = 10;
    const F_SETLEASE: usize = 1024;
    const F_RDLCK: usize = 0;
    const F_UNLCK: usize = 2;
    const EAGAIN: isize = 11;
    const SIGRTMAX: usize = 64;
    let pending = || {
        let mut set = 0u64;
        syscall3(SYS_RT_SIGPENDING, &mut set as *mut u64 as usize, 8, 0);
        set & 1 << (SIGRTMAX - 1) != 0
    };
    // (The fd's signal stays SIGRTMAX: the file becomes the process's
    // executable, whose file is never anyone's fd again.)
    if pending() || syscall3(SYS_FCNTL, fd, F_SETSIG, SIGRTMAX) != 0 {
        return Writers::Unknown;
    }
    let r = syscall3(SYS_FCNTL, fd, F_SETLEASE, F_RDLCK);
    if r == 0 {
        syscall3(SYS_FCNTL, fd, F_SETLEASE, F_UNLCK);
        if !pending() {
            return Writers::None;
        }
        return if take_back_alarm(fd, SIGRTMAX) {
            Writers::Some
        } else {
            Writers::None
        };
    }
    if r == -EAGAIN && kernel_leases(fd) {
        Writers::Some
    } else {
        Writers::Unknown
    }
}

/// The lease's alarms taken back (none was pending before the lease): a
/// SIGRTMAX would wait, blocked, for the program, whose default for it is
/// to die (a review: "Real-time signal 30", 1 run in 10). Only those the
/// lease raised (POLL_MSG, this fd); any other, sent to the process in
/// those microseconds, is queued again as it came (a review found one
/// taken). Returns whether the lease raised one: a writer opened the
/// file.
fn take_back_alarm(fd: usize, sig: usize) -> bool {
    const SYS_RT_SIGTIMEDWAIT: usize = 128;
    const SYS_RT_SIGQUEUEINFO: usize = 129;
    const POLL_MSG: i32 = 3;
    let set = 1u64 << (sig - 1);
    let zero = [0u64; 2];
    let mut others = [[0u64; 16]; 8];
    let (mut n, mut ours) = (0, false);
    loop {
        let mut info = [0u64; 16];
        let r = syscall6(
            SYS_RT_SIGTIMEDWAIT,
            &set as *const u64 as usize,
            info.as_mut_ptr() as usize,
            zero.as_ptr() as usize,
            8,
            0,
            0,
        );
        if r != sig as isize {
            break;
        }
        // siginfo_t: si_signo, si_errno, si_code (i32 each); for SIGPOLL
        // si_band (i64) at byte 16, si_fd (i32) at byte 24.
        let code = (info[1] & 0xffff_ffff) as u32 as i32;
        let si_fd = (info[3] & 0xffff_ffff) as u32 as i32;
        if code == POLL_MSG && si_fd == fd as i32 {
            ours = true;
        } else if n < others.len() {
            others[n] = info;
            n += 1;
        }
    }
    let pid = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    for info in &others[..n] {
        syscall3(SYS_RT_SIGQUEUEINFO, pid, sig, info.as_ptr() as usize);
    }
    ours
}

/// Whether `fd`'s file system leaves leases to the kernel's generic code
/// (local and in-memory ones), where a read lease's EAGAIN means a writer
/// or another's lease; network file systems decide themselves.
fn kernel_leases(fd: usize) -> bool {
    const SYS_FSTATFS: usize = 138;
    const LOCAL: [i64; 15] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
        0x794C_7630, // overlayfs
        0xF2F5_2010, // f2fs
        0x7371_7368, // squashfs
        0xE0F5_E1E2, // erofs
        0x2FC1_2FC1, // zfs
        0xCA45_1A4E, // bcachefs
        0x4D44,      // vfat
        0x2011_BAB0, // exfat
        0x3434,      // nilfs2
        0x7366_746E, // ntfs3
    ];
    let mut st = [0i64; 15];
    syscall3(SYS_FSTATFS, fd, st.as_mut_ptr() as usize, 0) == 0 && LOCAL.contains(&st[0])
}

/// Leave the shim's own file: remap from the alias if there is one (and
/// close it: the program never opened it), else copy.
pub fn leave_own_file(alias_fd: usize) {
    if alias_fd == usize::MAX || !remap_self(alias_fd) {
        relocate_self();
    }
    if alias_fd != usize::MAX {
        // The mappings made from it stay; the fd must not outlive the
        // shim (it would be an fd the program never opened).
        syscall3(SYS_CLOSE, alias_fd, 0, 0);
    }
}

/// Map the shim's own file mappings again from `alias` — the same binary
/// under another path (`cryo restore` checked it is a hard link of the
/// shim, or a byte-identical copy). PR_SET_MM_MAP refuses to replace the
/// executable while any mapping has the executable's path; the alias has
/// another. Same bytes, and for a hard link the same page-cache pages, so
/// the code that runs on after each mmap is the code that was there.
/// Cheaper than `relocate_self`'s copy into fresh memory (~50 µs here).
/// The writable segments' pages are kept as they are (what the shim wrote
/// to its statics before this: until stop 38 they came back as the file's
/// bytes, and .bss in their last page zeroed: the barrier's fd among them).
/// Returns false (nothing changed) if the ELF header does not match, or a
/// writable segment is too large to keep on the stack.
fn remap_self(alias: usize) -> bool {
    extern "C" {
        static __executable_start: u8;
    }
    let base = core::ptr::addr_of!(__executable_start) as usize;
    let mut head = [0u8; 64];
    let n = syscall6(SYS_PREAD64, alias, head.as_mut_ptr() as usize, 64, 0, 0, 0);
    // SAFETY: the ELF header is the first 64 bytes of the first segment,
    // mapped readable by the kernel at exec.
    let mine = unsafe { core::slice::from_raw_parts(base as *const u8, 64) };
    if n != 64 || head[..] != mine[..] {
        return false;
    }
    let phoff = peek_u64(base + 0x20) as usize;
    let phentsize = (peek_u32(base + 0x34) >> 16) as usize;
    let phnum = (peek_u32(base + 0x38) & 0xffff) as usize;
    // A writable segment's pages hold what the shim wrote since its start
    // (statics: the barrier's fd, a packed restorer's record): kept in
    // the scratch mapping across the mapping and put back, so that
    // nothing written is lost to the file's bytes. (On the stack, the
    // probes touched the whole buffer: four fresh pages, a fault each.) A
    // larger one than that area: copied instead.
    const KEEP: usize = crate::scratch::SELF_KEPT_LEN;
    let kept = crate::scratch::SELF_KEPT as *mut u8;
    let span = |ph: usize| {
        let (vaddr, filesz) = (peek_u64(ph + 16) as usize, peek_u64(ph + 32) as usize);
        let start = vaddr & !(PG - 1);
        (start, ((vaddr + filesz + PG - 1) & !(PG - 1)) - start)
    };
    for i in 0..phnum {
        let ph = base + phoff + i * phentsize;
        if peek_u32(ph) == 1 && peek_u32(ph + 4) & 2 != 0 && span(ph).1 > KEEP {
            return false;
        }
    }
    for i in 0..phnum {
        let ph = base + phoff + i * phentsize;
        if peek_u32(ph) != 1 {
            continue; // not PT_LOAD
        }
        let flags = peek_u32(ph + 4);
        let writable = flags & 2 != 0;
        if writable {
            let (start, len) = span(ph);
            // SAFETY: [start, start + len) is this writable segment's pages,
            // mapped and readable; `kept` is KEEP >= len bytes of the
            // scratch mapping, writable and used by nothing else.
            unsafe { core::ptr::copy_nonoverlapping(start as *const u8, kept, len) };
        }
        let (off, vaddr, filesz) = (peek_u64(ph + 8), peek_u64(ph + 16), peek_u64(ph + 32));
        let prot = if flags & 4 != 0 { PROT_READ } else { 0 }
            | if flags & 2 != 0 { PROT_WRITE } else { 0 }
            | if flags & 1 != 0 { PROT_EXEC } else { 0 };
        let start = vaddr as usize & !(PG - 1);
        let file_end = (vaddr + filesz) as usize;
        let end = (file_end + PG - 1) & !(PG - 1);
        let r = mmap(
            start,
            end - start,
            prot,
            MAP_PRIVATE | MAP_FIXED,
            alias,
            off & !(PG as u64 - 1),
        );
        if r as usize != start {
            die(format_args!(
                "remapping the shim at {start:#x}: errno {}",
                -r
            ));
        }
        if writable {
            // SAFETY: the writable mapping just made is [start, end), the
            // span saved in `kept` above.
            unsafe { core::ptr::copy_nonoverlapping(kept, start as *mut u8, end - start) };
        }
    }
    true
}

/// The shim's own image, pages rounded: (start, length). What its file
/// maps (and, copied, what `relocate_self` made of it).
pub fn own_image() -> (usize, usize) {
    extern "C" {
        static __executable_start: u8;
        static _end: u8;
    }
    let start = core::ptr::addr_of!(__executable_start) as usize & !(PG - 1);
    let end = (core::ptr::addr_of!(_end) as usize + PG - 1) & !(PG - 1);
    (start, end - start)
}

/// Copy the shim's own image into anonymous memory and move that over it.
/// The copy's pages are allocated by the mmap (MAP_POPULATE) rather than
/// one fault each during the copy: a packed hello 0.57 → 0.54 ms to its
/// answer, 203 → 150 faults (docs/benchmarks.md). (The same for the top
/// of the shim's stack took 16 faults off and no time.)
fn relocate_self() {
    let (start, len) = own_image();
    fill_holes(start, start + len);
    let r = mmap(
        SELF_COPY_AT,
        len,
        PROT_READ | PROT_WRITE | PROT_EXEC,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_POPULATE,
        usize::MAX,
        0,
    );
    if r as usize != SELF_COPY_AT {
        die(format_args!("mapping the shim's copy: errno {}", -r));
    }
    let ret: isize;
    // Copies the shim's own loaded image into the fresh mapping and, in the
    // same asm block (no stack or global writes in between), moves that
    // mapping over the original. The stack is a separate mapping, so
    // nothing written meanwhile is lost.
    // SAFETY: the source is valid for len bytes, and the code after the
    // syscall runs from identical bytes.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            "mov rdi, r9",
            "mov rsi, rdx",
            "syscall",
            inout("rcx") len => _,
            inout("rdi") SELF_COPY_AT => _,
            inout("rsi") start => _,
            in("rdx") len,
            in("r10") MREMAP_MAYMOVE | MREMAP_FIXED,
            in("r8") start,
            in("r9") SELF_COPY_AT,
            inlateout("rax") SYS_MREMAP as isize => ret,
            lateout("r11") _,
            options(nostack)
        );
    }
    if ret as usize != start {
        die(format_args!(
            "moving the shim into anonymous memory: errno {}",
            -ret
        ));
    }
}

/// Map zeros in the pages of [start, end) between the shim's own
/// segments, so that one copy of the whole range reads no hole. (The
/// linker may leave a page unmapped between the code and the data: the
/// packed restorers, which copy themselves, died there with SIGSEGV once
/// the code grew past a page boundary.)
fn fill_holes(start: usize, end: usize) {
    let base = start;
    let phoff = peek_u64(base + 0x20) as usize;
    let phentsize = (peek_u32(base + 0x34) >> 16) as usize;
    let phnum = (peek_u32(base + 0x38) & 0xffff) as usize;
    let mut at = start;
    while at < end {
        let covered = (0..phnum).any(|i| {
            let ph = base + phoff + i * phentsize;
            if peek_u32(ph) != 1 {
                return false; // not PT_LOAD
            }
            let (vaddr, memsz) = (peek_u64(ph + 16) as usize, peek_u64(ph + 40) as usize);
            let s = vaddr & !(PG - 1);
            let e = (vaddr + memsz + PG - 1) & !(PG - 1);
            s <= at && at < e
        });
        if !covered {
            let r = mmap(
                at,
                PG,
                PROT_READ,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                usize::MAX,
                0,
            );
            if r as usize != at {
                die(format_args!(
                    "mapping the hole at {at:#x} in the shim: errno {}",
                    -r
                ));
            }
        }
        at += PG;
    }
}
