//! A packed restorer (`cryo pack DIR -o FILE`): this binary with a record
//! (`cryo_image::pack`) naming the image. Run, it restores the image in
//! its own process, with no `cryo restore` before it: it opens the image
//! itself, and checks here, before the point of no return, everything
//! `cryo restore` checks before its exec and a packed image can need
//! (pages.img and sums.img unchanged since the pack, the vDSO, the xsave
//! layout; the mapped files are checked as always when opened), then sets
//! what `cryo restore` sets before its exec: cwd, umask, personality,
//! rlimits, scheduling, oom_score_adj and loginuid, every signal back to
//! its default. Until the point of no return a failure is one line,
//! `cryo: cannot restore DIR: ...`, and exit status 1, like `cryo
//! restore`'s.

use crate::own::{hex, Own};
use crate::sys::*;
use crate::{check, die, Args, PG};
use core::sync::atomic::{AtomicUsize, Ordering};
use cryo_image::pack::{self, Identity, Record, RECORD_LEN};
use cryo_image::Image;

/// The record's bytes, aligned for word-sized reads.
#[repr(C, align(8))]
struct Aligned([u8; RECORD_LEN]);

/// The record `cryo pack` overwrites (an empty one in `cryo-shim`
/// itself). Read with volatile loads: its contents are not the ones the
/// compiler saw.
#[used]
#[no_mangle]
static CRYO_PACK: Aligned = Aligned(pack::empty());

/// The image directory while a failure can still leave cleanly (for
/// `die`'s message); 0 otherwise.
static DIR_AT: AtomicUsize = AtomicUsize::new(0);
static DIR_LEN: AtomicUsize = AtomicUsize::new(0);

/// The record's copy (the image directory's bytes live here).
struct RecordCopy(core::cell::UnsafeCell<Aligned>);
// SAFETY: the shim is single-threaded until its last steps; the copy is
// written once, in `record`, before anything reads it.
unsafe impl Sync for RecordCopy {}
static COPY: RecordCopy = RecordCopy(core::cell::UnsafeCell::new(Aligned([0; RECORD_LEN])));

/// The record this binary carries, if it was packed.
pub fn record() -> Option<Record<'static>> {
    // A word at a time: a volatile read of the whole array was unrolled
    // into 4096 byte loads and stores (~70 KiB of code, a quarter of the
    // shim's text, and ~35 µs of page faults and copying per run).
    let src = core::ptr::addr_of!(CRYO_PACK) as *const u64;
    let dst = COPY.0.get() as *mut u64;
    for i in 0..RECORD_LEN / 8 {
        // SAFETY: both are 8-aligned statics of RECORD_LEN bytes and i is
        // below RECORD_LEN / 8; COPY is written only here, once, before
        // any reference to it is made.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
    }
    // SAFETY: written above, never written again.
    let bytes: &'static [u8; RECORD_LEN] = unsafe { &(*COPY.0.get()).0 };
    match pack::decode(bytes) {
        Ok(Some(r)) => {
            DIR_AT.store(r.dir.as_ptr() as usize, Ordering::Relaxed);
            DIR_LEN.store(r.dir.len(), Ordering::Relaxed);
            Some(r)
        }
        Ok(None) => None,
        // Before anything is done: as a refusal (status 1, as `cryo
        // restore`'s), not as the shim's own failure (125, which says the
        // process was torn down: a sweep of stop 47).
        Err(e) => {
            let mut m = crate::Msg { b: [0; 768], n: 0 };
            let _ = core::fmt::Write::write_fmt(
                &mut m,
                format_args!(
                    "cryo: cannot restore: this packed restorer is damaged ({e}); pack the image again\n"
                ),
            );
            crate::sys::write(2, &m.b[..m.n]);
            crate::sys::exit(1)
        }
    }
}

/// The image directory, while a failure still leaves the process as it
/// was (a packed restorer, before the point of no return).
pub fn dir_for_message() -> Option<&'static str> {
    dir().map(|b| core::str::from_utf8(b).unwrap_or("the packed image"))
}

/// The image directory's bytes, until the point of no return.
fn dir() -> Option<&'static [u8]> {
    let (at, len) = (
        DIR_AT.load(Ordering::Relaxed),
        DIR_LEN.load(Ordering::Relaxed),
    );
    if at == 0 {
        return None;
    }
    // SAFETY: at/len are the directory's bytes inside COPY, which lives
    // and is never written again.
    Some(unsafe { core::slice::from_raw_parts(at as *const u8, len) })
}

/// The point of no return: from here on a failure is the shim's own.
pub fn past_no_return() {
    DIR_AT.store(0, Ordering::Relaxed);
}

/// `dir/name` as a NUL-terminated path in `buf`.
fn path_in<'b>(buf: &'b mut [u8; 4200], dir: &[u8], name: &str) -> &'b [u8] {
    let n = dir.len() + 1 + name.len();
    if n + 1 > buf.len() {
        die(format_args!("the image directory's path is too long"));
    }
    buf[..dir.len()].copy_from_slice(dir);
    buf[dir.len()] = b'/';
    buf[dir.len() + 1..n].copy_from_slice(name.as_bytes());
    buf[n] = 0;
    &buf[..=n]
}

/// Open the NUL-terminated path `p` read-only, and fstat it: the fd and
/// its struct stat's words (0: device, 1: inode, 3: mode in its low
/// half), or the open's errno. Not blocking: a FIFO in its place would
/// hang the open (a survey of stop 36); no effect on a regular file.
fn open_stat(p: &[u8]) -> Result<(usize, [u64; 18]), isize> {
    const O_NONBLOCK: usize = 0o4000;
    let fd = syscall3(
        SYS_OPEN,
        p.as_ptr() as usize,
        O_RDONLY | O_CLOEXEC | O_NONBLOCK,
        0,
    );
    if fd < 0 {
        return Err(-fd);
    }
    let mut st = [0u64; 18];
    if syscall3(SYS_FSTAT, fd as usize, st.as_mut_ptr() as usize, 0) < 0 {
        st = [0; 18];
    }
    Ok((fd as usize, st))
}

fn open_in(dir: &[u8], name: &str) -> usize {
    let mut buf = [0u8; 4200];
    let (fd, st) = open_stat(path_in(&mut buf, dir, name))
        .unwrap_or_else(|e| die(format_args!("opening {name}: {}", errno_name(e))));
    const S_IFMT: u64 = 0o170000;
    const S_IFREG: u64 = 0o100000;
    if st[3] & S_IFMT != S_IFREG {
        die(format_args!("{name} is not a regular file"));
    }
    fd
}

/// This restorer under another path: `packed-INO.text` in the image
/// directory, INO its inode, a hard link `cryo pack` made
/// (`cryo_image::pack::alias_name`). The shim maps its code again from
/// it instead of copying itself into fresh memory (`selfmap`), which
/// took 56 page faults and ~0.13 ms on a VM where a fault costs 3 µs.
/// None (usize::MAX) when it is missing or another file: the restorer was
/// copied, or packed into another file system than the image's. Looked
/// for only where the shim leaves its own file (`selfmap::exe_in_chain`).
pub fn alias() -> usize {
    dir().map_or(usize::MAX, alias_in)
}

fn alias_in(dir: &[u8]) -> usize {
    let Some(own) = crate::selfmap::own_file() else {
        return usize::MAX;
    };
    let mut name = crate::Msg { b: [0; 768], n: 0 };
    if core::fmt::Write::write_fmt(&mut name, format_args!("{}", pack::AliasName(own.1))).is_err() {
        return usize::MAX;
    }
    let Ok(name) = core::str::from_utf8(&name.b[..name.n]) else {
        return usize::MAX;
    };
    let mut buf = [0u8; 4200];
    if dir.len() + name.len() + 2 > buf.len() {
        return usize::MAX;
    }
    let p = path_in(&mut buf, dir, name);
    // Run by that very name (it is executable too), it is no second name:
    // its mappings would have the executable's path, which PR_SET_MM_MAP
    // refuses past the point of no return.
    const SYS_READLINK: usize = 89;
    let mut exe = [0u8; 4200];
    let n = syscall3(
        SYS_READLINK,
        c"/proc/self/exe".as_ptr() as usize,
        exe.as_mut_ptr() as usize,
        exe.len(),
    );
    if n < 0 || exe[..n as usize] == p[..p.len() - 1] {
        return usize::MAX;
    }
    let Ok((fd, st)) = open_stat(p) else {
        return usize::MAX;
    };
    if (st[0], st[1]) != own {
        syscall3(SYS_CLOSE, fd, 0, 0);
        return usize::MAX;
    }
    fd
}

/// The errno's text as Rust's io::Error shows it (`cryo restore`'s
/// words for the same refusal); a number for the rare rest (a sweep of
/// stop 47 met "opening meta.img: error" for EMFILE and ELOOP).
pub(crate) fn errno_name(e: isize) -> ErrnoName {
    ErrnoName(e)
}

pub(crate) struct ErrnoName(isize);

impl core::fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self.0 {
            1 => "Operation not permitted",
            2 => "No such file or directory",
            5 => "Input/output error",
            6 => "No such device or address",
            9 => "Bad file descriptor",
            11 => "Resource temporarily unavailable",
            12 => "Cannot allocate memory",
            13 => "Permission denied",
            16 => "Device or resource busy",
            19 => "No such device",
            20 => "Not a directory",
            21 => "Is a directory",
            22 => "Invalid argument",
            23 => "Too many open files in system",
            24 => "Too many open files",
            26 => "Text file busy",
            27 => "File too large",
            30 => "Read-only file system",
            36 => "File name too long",
            40 => "Too many levels of symbolic links",
            75 => "Value too large for defined data type",
            _ => return write!(f, "errno {}", self.0),
        };
        write!(f, "{text} (os error {})", self.0)
    }
}

fn identity(fd: usize, name: &str) -> Identity {
    let mut st = [0u64; 18];
    check(
        syscall3(SYS_FSTAT, fd, st.as_mut_ptr() as usize, 0),
        format_args!("fstat {name}"),
    );
    [st[0], st[1], st[6], st[11], st[12], st[13], st[14]]
}

/// Open the image the record names; check that its pages are the ones
/// `cryo pack` checked. The invoker's fds beyond 0-2 are closed first
/// (as `cryo restore` closes every fd the image does not have).
pub fn open(r: &Record) -> Args {
    use cryo_image::handoff::flags;
    if r.flags & !(flags::MAP | flags::SELF_UNMAP | flags::CLOCK_JUMP) != 0
        || r.flags & flags::SELF_UNMAP == 0
    {
        die(format_args!(
            "pack record flags {:#x}: a packed restorer finishes alone (and maps, or not; restores in another boot, or not)",
            r.flags
        ));
    }
    syscall3(SYS_CLOSE_RANGE, 3, u32::MAX as usize, 0);
    let meta_fd = open_in(r.dir, cryo_image::META_FILE);
    let pages_fd = open_in(r.dir, cryo_image::PAGES_FILE);
    let sums_fd = open_in(r.dir, cryo_image::SUMS_FILE);
    for (fd, name, want) in [
        (pages_fd, cryo_image::PAGES_FILE, &r.pages),
        (sums_fd, cryo_image::SUMS_FILE, &r.sums),
    ] {
        if identity(fd, name) != *want {
            die(format_args!(
                "{name} changed since it was packed (inode, size or times); its pages are not known to be right: pack the image again (cryo pack checks every page)"
            ));
        }
    }
    SUMS_FD.store(sums_fd, Ordering::Relaxed);
    FRAME_AT_PACK.store(r.frame as usize, Ordering::Relaxed);
    XSAVE_AT_PACK.store(r.xsave_size as usize, Ordering::Relaxed);
    XCR0_AT_PACK.store(r.xcr0 as usize, Ordering::Relaxed);
    Args {
        meta_fd,
        pages_fd,
        tid_offset: r.tid_offset as usize,
        flags: r.flags,
        exec_ns: 0,
        sock_fd: usize::MAX,
        alias_fd: usize::MAX,
        files_fd: usize::MAX,
        barrier_fd: usize::MAX,
        round_fd: usize::MAX,
    }
}

/// The kernel's signal frame size, the xsave size and XCR0 where `cryo
/// pack` ran (the record's), from [`open`], for [`xsave`].
static FRAME_AT_PACK: AtomicUsize = AtomicUsize::new(0);
static XSAVE_AT_PACK: AtomicUsize = AtomicUsize::new(0);
static XCR0_AT_PACK: AtomicUsize = AtomicUsize::new(0);

/// sums.img, open from [`open`] until [`sums_match`] checks it.
static SUMS_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

/// meta.img is the one that describes these pages: every block of
/// sums.img (whose identity the record binds to the pages `cryo pack`
/// checked) has the checksum meta.img records for it, as `cryo restore`
/// checks. Without it another capture's meta.img put in the image's
/// place was restored with these pages, into a state the program never
/// had (a sweep of stop 47). A few µs for a small image; a 1 GiB one has
/// 2 MiB of sums.img.
#[inline(never)]
fn sums_match(img: &Image) {
    use cryo_image::{PAGE_SIZE, SUMS_PER_BLOCK};
    let fd = SUMS_FD.swap(usize::MAX, Ordering::Relaxed);
    let pages = img.header.pages_len / PAGE_SIZE;
    let blocks = img.page_sums();
    let other = || -> ! {
        die(format_args!(
            "meta.img is not the one packed with these pages (sums.img does not match the checksums it records: meta.img is another capture's, or corrupt); pack the image again"
        ))
    };
    if blocks.len() as u64 != pages.div_ceil(SUMS_PER_BLOCK) {
        other();
    }
    let mut buf = [0u8; (SUMS_PER_BLOCK * 8) as usize];
    for (k, b) in blocks.iter().enumerate() {
        let k = k as u64;
        let n = ((pages - k * SUMS_PER_BLOCK).min(SUMS_PER_BLOCK) * 8) as usize;
        if let Err(e) =
            crate::sys::pread_all(fd, buf.as_mut_ptr() as usize, n, k * SUMS_PER_BLOCK * 8)
        {
            die(format_args!("reading sums.img: errno {}", -e));
        }
        if !cryo_image::sum_block_ok(&b, &buf[..n]) {
            other();
        }
    }
    syscall3(SYS_CLOSE, fd, 0, 0);
}

/// The checks `cryo restore` makes against this machine, and the state it
/// sets before its exec. Returns what this process is (its credentials),
/// read once for these checks and those to come.
pub fn check_and_set(img: &Image, flags: u64) -> Own {
    sums_match(img);
    clocks(img, flags);
    let own = crate::own::read(img);
    crate::pids::check(img);
    // (As `cryo restore` refuses: naming the executable needs one of
    // them, and failed past the point of no return.)
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_CHECKPOINT_RESTORE: u64 = 1 << 40;
    if own.cap_eff & (CAP_SYS_ADMIN | CAP_CHECKPOINT_RESTORE) == 0 {
        die(format_args!(
            "restoring names the program's executable (/proc/PID/exe), which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, and this process has neither: run it as root"
        ));
    }
    vdso(img);
    xsave(img);
    sysv(img);
    numa(img);
    if let Err((at, why)) = crate::aio::check(img) {
        die(format_args!("the AIO context at {at:#x}: {why}"));
    }
    crate::task::check_settable(img, &own);
    environment(img, &own);
    own
}

/// Every NUMA policy of a mapping (mbind) can be set here, as `cryo
/// restore` checks (`checks::numa_nodes`): each tried on a page of the
/// restorer's own first. The shim's mbind would fail past its point of
/// no return where the machine lacks a node the policy names, or where
/// mbind is forbidden (Docker's default seccomp profile allows it only
/// with CAP_SYS_NICE): the process lost.
fn numa(img: &Image) {
    let vmas = img.vmas();
    for (i, v) in vmas.iter().enumerate() {
        let p = (v.mempolicy, v.mempolicy_nodes);
        if p.0 == 0
            || vmas
                .iter()
                .take(i)
                .any(|w| (w.mempolicy, w.mempolicy_nodes) == p)
        {
            continue;
        }
        let at = crate::mem::mmap(
            0,
            PG,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            usize::MAX,
            0,
        );
        if at < 0 {
            die(format_args!(
                "a page to try a NUMA policy on: {}",
                errno_name(-at)
            ));
        }
        let r = crate::vma::mbind(at as usize, PG, p.0, p.1);
        syscall3(SYS_MUNMAP, at as usize, PG, 0);
        if r < 0 {
            die(format_args!(
                "process {}: the mapping at {:#x} has a NUMA memory policy of its own (mbind mode {:#x}, nodes {:#x}), which cannot be set here: {}",
                img.process().pid,
                v.start,
                p.0,
                p.1,
                errno_name(-r)
            ));
        }
    }
}

/// As `cryo restore` refuses (its `checks::clocks`): an image captured in
/// another boot, or where CLOCK_MONOTONIC is behind what the process saw,
/// unless packed with `--clock-jump`.
fn clocks(img: &Image, flags: u64) {
    use cryo_image::handoff::flags::CLOCK_JUMP;
    let Some(t) = img
        .task()
        .filter(|t| t.boot_id != [0; 16] && flags & CLOCK_JUMP == 0)
    else {
        return;
    };
    let fd = syscall3(
        SYS_OPEN,
        c"/proc/sys/kernel/random/boot_id".as_ptr() as usize,
        O_RDONLY | O_CLOEXEC,
        0,
    );
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 64];
    let n = syscall3(SYS_READ, fd as usize, buf.as_mut_ptr() as usize, buf.len());
    syscall3(SYS_CLOSE, fd as usize, 0, 0);
    let Some(id) = buf
        .get(..n.max(0) as usize)
        .and_then(cryo_image::task::parse_boot_id)
    else {
        return;
    };
    if let Some(why) = cryo_image::task::clock_jump(&t, &id, crate::now_ns()) {
        die(format_args!(
            "process {}: {why} (a packed restorer: packed again with `cryo pack --clock-jump`)",
            img.process().pid
        ));
    }
}

/// One mapping of /proc/self/maps: start, end.
fn own_special(maps: &[u8], name: &[u8]) -> Option<(u64, u64)> {
    for line in maps.split(|&c| c == b'\n') {
        if !line.ends_with(name) {
            continue;
        }
        let range = line.split(|&c| c == b' ').next()?;
        let mut it = range.split(|&c| c == b'-');
        let (a, b) = (hex(it.next()?)?, hex(it.next()?)?);
        return Some((a, b));
    }
    None
}

/// The vDSO's address from the auxv (AT_SYSINFO_EHDR), for [`vdso`]; 0
/// when the kernel gave none.
static VDSO_AT: AtomicUsize = AtomicUsize::new(0);

/// The kernel's signal frame size from the auxv (AT_MINSIGSTKSZ), for
/// [`xsave`]; 0 when the kernel gave none.
static MINSIGSTKSZ: AtomicUsize = AtomicUsize::new(0);

/// Note what the kernel's initial stack at `sp` tells: the vDSO's address
/// and the signal frame's size.
pub fn note_auxv(sp: *const usize) {
    const AT_SYSINFO_EHDR: usize = 33;
    const AT_MINSIGSTKSZ: usize = 51;
    // SAFETY: the kernel's initial stack: argc, the argv pointers and a
    // NULL, the environment's pointers and a NULL, then (key, value)
    // pairs up to AT_NULL.
    unsafe {
        let mut p = sp.add(1 + *sp + 1);
        while *p != 0 {
            p = p.add(1);
        }
        p = p.add(1);
        while *p != 0 {
            if *p == AT_SYSINFO_EHDR {
                VDSO_AT.store(*p.add(1), Ordering::Relaxed);
            }
            if *p == AT_MINSIGSTKSZ {
                MINSIGSTKSZ.store(*p.add(1), Ordering::Relaxed);
            }
            p = p.add(2);
        }
    }
}

/// The vDSO checked without /proc/self/maps, which costs ~30 µs in a
/// fresh process on the VM of docs/benchmarks.md: the vDSO where the
/// auxv puts it, with its captured length mapped and a hole after it; the
/// captured vvar block mapped right below it, with a hole below that
/// (mincore fails with ENOMEM on an unmapped page); and its bytes the
/// captured ones. The same bytes are the same kernel, whose vvar block
/// ARCH_MAP_VDSO_64 makes again as its exec did. Any other answer (a
/// mapping right next to them, other bytes) goes the long way, whose
/// verdict stands.
fn vdso_quick(img: &Image) -> bool {
    let p = img.process();
    let base = VDSO_AT.load(Ordering::Relaxed) as u64;
    let pg = PG as u64;
    let Some(d) = cryo_image::vdso::block_below(img) else {
        return false;
    };
    let aligned = [base, p.vdso_len, d].iter().all(|x| x.is_multiple_of(pg));
    if base == 0 || !aligned || d + pg > base {
        return false;
    }
    let mincore = |at: u64, len: u64| -> isize {
        let mut vec = [0u8; 32];
        if len == 0 || len > vec.len() as u64 * pg {
            return -EINVAL;
        }
        syscall3(
            SYS_MINCORE,
            at as usize,
            len as usize,
            vec.as_mut_ptr() as usize,
        )
    };
    if mincore(base - d, d) != 0
        || mincore(base, p.vdso_len) != 0
        || mincore(base - d - pg, pg) != -ENOMEM
        || mincore(base + p.vdso_len, pg) != -ENOMEM
    {
        return false;
    }
    // The vDSO's own length, from its ELF header (its section headers end
    // the image the kernel maps, rounded up to a page): the captured one,
    // so that nothing but the vDSO is read below (another mapping right
    // after a shorter vDSO might not be readable).
    // SAFETY: the auxv's vDSO starts with its ELF header, 64 bytes of a
    // mapped, readable page (mincore above).
    let head = unsafe { core::slice::from_raw_parts(base as *const u8, 64) };
    let le16 = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]) as u64;
    let mut shoff = [0u8; 8];
    shoff.copy_from_slice(&head[0x28..0x30]);
    let end = u64::from_le_bytes(shoff).saturating_add(le16(0x3c) * le16(0x3a));
    if head[..4] != *b"\x7fELF" || end.div_ceil(pg) * pg != p.vdso_len {
        return false;
    }
    // SAFETY: [base, base + vdso_len) is mapped (mincore above) and is
    // the vDSO's: it starts where the auxv says, is as long as its ELF
    // header says, and ends at a hole.
    let bytes = unsafe { core::slice::from_raw_parts(base as *const u8, p.vdso_len as usize) };
    cryo_image::checksum(bytes) == p.vdso_hash
}

/// The same vDSO bytes and the same vvar/vvar_vclock/vDSO arrangement as
/// captured: the same kernel.
fn vdso(img: &Image) {
    if img.process().vdso_len != 0 && !vdso_quick(img) {
        vdso_by_maps(img);
    }
}

/// [`vdso`] the long way, from /proc/self/maps (in a frame of its own:
/// its 8 KiB buffer is not touched on the quick way).
#[inline(never)]
fn vdso_by_maps(img: &Image) {
    let p = img.process();
    let mut maps = [0u8; 8192];
    let n = match read_whole(c"/proc/self/maps".as_ptr() as usize, &mut maps) {
        Ok(n) => n,
        Err(e) => die(format_args!("reading /proc/self/maps: errno {}", -e)),
    };
    let maps = &maps[..n];
    let kernel = img.str(p.kernel).unwrap_or("?");
    let here = own_special(maps, b"[vdso]").map(|(vs, ve)| {
        // SAFETY: [vs, ve) is this process's vDSO mapping, readable.
        let bytes = unsafe { core::slice::from_raw_parts(vs as *const u8, (ve - vs) as usize) };
        (vs, bytes)
    });
    if let Some(d) = cryo_image::vdso::differs(img, here, |name| own_special(maps, name.as_bytes()))
    {
        die(format_args!(
            "this kernel's vDSO differs from the captured one ({d}); restore on the kernel that captured the image ({kernel})"
        ));
    }
}

/// Every System V semaphore set and message queue the image records is
/// still there, the same (key; a set's size): `cryo restore` makes one
/// that is gone again, a packed restorer cannot, and a program whose id
/// names nothing would fail every semop or msgsnd.
fn sysv(img: &Image) {
    const IPC_STAT: usize = 2;
    const EACCES: isize = 13;
    // IPC_STAT of object `id`: Ok(its key, and for a set its number of
    // semaphores), Err(true) when only write permission is ours (IPC_STAT
    // needs read: there, as far as can be told), Err(false) when gone.
    // (struct semid64_ds and msqid64_ds: the key first, a set's size at
    // byte 80; 120 bytes each on x86_64.)
    let stat = |nr: usize, id: i32| -> Result<(i32, u64), bool> {
        let mut ds = [0u64; 16];
        let buf = ds.as_mut_ptr() as usize;
        let r = if nr == SYS_MSGCTL {
            syscall3(nr, id as usize, IPC_STAT, buf)
        } else {
            syscall6(nr, id as usize, 0, IPC_STAT, buf, 0, 0)
        };
        match r {
            0.. => Ok((ds[0] as u32 as i32, ds[10])),
            r => Err(r == -EACCES),
        }
    };
    for s in img.sysv_sem().iter() {
        let now = stat(SYS_SEMCTL, s.id);
        if now != Ok((s.key, u64::from(s.nsems))) && now != Err(true) {
            die(format_args!(
                "the System V semaphore set {} (key {:#x}, {} semaphores) the program may use is gone or another now; cryo restore makes it again, a packed restorer does not",
                s.id, s.key as u32, s.nsems
            ));
        }
    }
    for q in img.sysv_msq().iter() {
        let now = stat(SYS_MSGCTL, q.id).map(|(k, _)| k);
        if now != Ok(q.key) && now != Err(true) {
            die(format_args!(
                "the System V message queue {} (key {:#x}) the program may use is gone or another now; cryo restore makes it again, a packed restorer does not",
                q.id, q.key as u32
            ));
        }
    }
}

/// The same CPU state layout: xsave size and XCR0.
fn xsave(img: &Image) {
    let p = img.process();
    // This CPU's xsave size without CPUID where the kernel says it: CPUID
    // traps to the hypervisor in a VM (~10 µs each on stop 53's), and the
    // kernel's signal frame size (AT_MINSIGSTKSZ) is made of the xsave
    // size of the features XCR0 enables (CPUID 0xD's EBX, read once at
    // boot; rounded up to 16 bytes). `cryo pack` recorded its frame size,
    // xsave size and XCR0, where the vDSO was the image's (it refuses
    // otherwise); here the vDSO is the image's too (checked before, where
    // the image has one): the same kernel, the same formula. The same
    // frame size and XCR0 as the packer's: the packer's xsave size (the
    // components' sizes and offsets are fixed by XCR0's features on every
    // CPU known; two layouts 16 bytes apart would need a CPU that gives a
    // feature another size). Any other answer asks CPUID. Either size is
    // then compared with the image's, as ever (the image is not the
    // packer's to vouch for: meta.img is checked again on every run).
    let own = MINSIGSTKSZ.load(Ordering::Relaxed);
    let packers_frame = own != 0 && p.vdso_len != 0 && own == FRAME_AT_PACK.load(Ordering::Relaxed);
    // xgetbv faults (SIGILL) where the kernel left xsave off (booted
    // `noxsave`): read XCR0 where the packer's frame size says xsave is on
    // (a frame without xsave holds a 512-byte fxsave area, less than any
    // xsave area), else where CPUID says the kernel enabled it (OSXSAVE);
    // otherwise XCR0 is 0, which no captured process has.
    const OSXSAVE: u32 = 1 << 27;
    let xcr0 = if packers_frame || core::arch::x86_64::__cpuid(1).ecx & OSXSAVE != 0 {
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv with ecx = 0 reads XCR0, valid where the kernel
        // enabled OSXSAVE, as said above.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
        }
        (hi as u64) << 32 | lo as u64
    } else {
        0
    };
    let size = if packers_frame && xcr0 == XCR0_AT_PACK.load(Ordering::Relaxed) as u64 {
        XSAVE_AT_PACK.load(Ordering::Relaxed) as u32
    } else {
        core::arch::x86_64::__cpuid_count(0xd, 0).ebx
    };
    if size != p.xsave_size || xcr0 != p.xcr0 {
        die(format_args!(
            "this CPU's xsave layout differs from the captured one (xsave size {} vs {size}, XCR0 {:#x} vs {xcr0:#x} here); restore on the same kind of CPU",
            p.xsave_size, p.xcr0
        ));
    }
    if crate::frame::tiles(img) {
        const ARCH_GET_XCOMP_SUPP: usize = 0x1021;
        let mut supp = 0u64;
        let r = syscall3(
            SYS_ARCH_PRCTL,
            ARCH_GET_XCOMP_SUPP,
            &mut supp as *mut u64 as usize,
            0,
        );
        if r != 0 || supp & cryo_image::task::XCOMP_TILEDATA as u64 == 0 {
            die(format_args!(
                "this CPU's xsave layout differs from the captured one (the process had AMX tile data, which this kernel does not offer); restore on the same kind of CPU"
            ));
        }
    }
}

/// cwd, umask, personality, rlimits, scheduling, oom_score_adj and
/// loginuid as captured; every signal this process ignores back to
/// SIG_DFL (an exec keeps SIG_IGN, and resets every other; the captured
/// dispositions are set later).
// (A frame of its own: its path buffer is not probed into the caller's.)
#[inline(never)]
fn environment(img: &Image, own: &Own) {
    let p = img.process();
    let cwd = img.str(p.cwd).unwrap_or("/");
    let mut buf = [0u8; 4200];
    if cwd.len() + 1 > buf.len() {
        die(format_args!("the working directory's path is too long"));
    }
    buf[..cwd.len()].copy_from_slice(cwd.as_bytes());
    let r = syscall3(SYS_CHDIR, buf.as_ptr() as usize, 0, 0);
    if r < 0 {
        die(format_args!("chdir {cwd}: {}", errno_name(-r)));
    }
    syscall3(SYS_UMASK, p.umask as usize, 0, 0);
    // (Without READ_IMPLIES_EXEC until the mappings are made:
    // `task::restore_personality`.)
    const READ_IMPLIES_EXEC: u32 = 0x0040_0000;
    syscall3(
        SYS_PERSONALITY,
        (p.personality & !READ_IMPLIES_EXEC) as usize,
        0,
        0,
    );
    // A process that led its own session without a terminal leads one
    // again (as `cryo restore` does). setsid refuses a process group's
    // leader, which a job-control shell makes of this restorer: `cryo
    // restore` then leads it from a child; here, one line and nothing
    // done.
    if p.flags & cryo_image::process_flags::SESSION_LEADER != 0 {
        let me = syscall3(SYS_GETPID, 0, 0, 0);
        if syscall3(SYS_GETSID, 0, 0, 0) != me {
            let r = syscall3(SYS_SETSID, 0, 0, 0);
            if r < 0 {
                die(format_args!(
                    "the process led its own session (setsid), and this restorer leads a process group (a job-control shell's job), which cannot start one: {}; run it as `setsid -w RESTORER`, or restore the image with cryo restore",
                    errno_name(-r)
                ));
            }
        }
    }
    for r in img.rlimits().iter() {
        let mut cur = [0u64; 2];
        if syscall6(
            SYS_PRLIMIT64,
            0,
            r.resource as usize,
            0,
            cur.as_mut_ptr() as usize,
            0,
            0,
        ) < 0
        {
            continue;
        }
        // (Those the shim lowers at its end are only raised here:
        // `cryo_image::rlimit_set_late`, `task::late_limits`.)
        let want = if cryo_image::rlimit_set_late(r.resource) {
            [r.cur.max(cur[0]), r.max.max(cur[1])]
        } else {
            [r.cur, r.max]
        };
        if cur == want {
            continue;
        }
        let e = syscall6(
            SYS_PRLIMIT64,
            0,
            r.resource as usize,
            want.as_ptr() as usize,
            0,
            0,
            0,
        );
        if e < 0 {
            let name = cryo_image::rlimit_name(r.resource);
            die(format_args!(
                "cannot set {name} to {}/{} (ours: {}/{}): raising a hard limit needs CAP_SYS_RESOURCE; restore from a shell with the captured limits",
                r.cur, r.max, cur[0], cur[1]
            ));
        }
    }
    if let Some(t) = img.task() {
        sched(&t);
        affinity(img, &t);
        proc_write(
            b"/proc/self/oom_score_adj\0",
            t.oom_score_adj,
            "oom_score_adj",
        );
        proc_write(b"/proc/self/loginuid\0", t.loginuid, "loginuid");
        coredump_filter(t.coredump_filter);
    }
    for sig in 1..=64usize {
        if sig == 9 || sig == 19 || own.sig_ign & 1 << (sig - 1) == 0 {
            continue;
        }
        let dfl = [0u64; 4];
        syscall6(SYS_RT_SIGACTION, sig, dfl.as_ptr() as usize, 0, 8, 0, 0);
    }
}

fn sched(t: &cryo_image::task::TaskState) {
    use cryo_image::task::UNKNOWN;
    if t.sched_policy != UNKNOWN {
        let prio = t.sched_priority.max(0) as i32;
        let cur = syscall3(SYS_SCHED_GETSCHEDULER, 0, 0, 0);
        let mut cur_prio = 0i32;
        syscall3(SYS_SCHED_GETPARAM, 0, &mut cur_prio as *mut i32 as usize, 0);
        if (cur as i64, cur_prio) != (t.sched_policy, prio) {
            check(
                syscall3(
                    SYS_SCHED_SETSCHEDULER,
                    0,
                    t.sched_policy as usize,
                    &prio as *const i32 as usize,
                ),
                format_args!("setting the scheduling policy"),
            );
        }
    }
    if t.nice != UNKNOWN {
        const PRIO_PROCESS: usize = 0;
        // getpriority returns 20 - nice.
        let cur = 20 - syscall3(SYS_GETPRIORITY, PRIO_PROCESS, 0, 0) as i64;
        if cur != t.nice {
            check(
                syscall3(SYS_SETPRIORITY, PRIO_PROCESS, 0, t.nice as isize as usize),
                format_args!("setting the nice value to {}", t.nice),
            );
        }
    }
    // The I/O priority, as `cryo restore` sets it (a sweep, stop 45: a
    // packed restorer left it 0).
    if t.ioprio != UNKNOWN {
        const SYS_IOPRIO_SET: usize = 251;
        const SYS_IOPRIO_GET: usize = 252;
        const IOPRIO_WHO_PROCESS: usize = 1;
        if syscall3(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, 0, 0) as i64 != t.ioprio {
            check(
                syscall3(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, t.ioprio as usize),
                format_args!("setting the I/O priority"),
            );
        }
    }
}

/// The process's CPU affinity, once every captured one (its threads'
/// too, set past the point of no return) is known to name a CPU it may
/// run on here, as `cryo restore` checks (`checks::affinity`): asking for
/// every CPU gives those online and in this cpuset.
fn affinity(img: &Image, t: &cryo_image::task::TaskState) {
    if t.affinity == [0; 16] {
        return;
    }
    let set = |m: &[u64; 16]| {
        syscall3(
            SYS_SCHED_SETAFFINITY,
            0,
            core::mem::size_of_val(m),
            m.as_ptr() as usize,
        )
    };
    let mut allowed = [0u64; 16];
    if set(&[!0; 16]) == 0
        && syscall3(
            SYS_SCHED_GETAFFINITY,
            0,
            core::mem::size_of_val(&allowed),
            allowed.as_mut_ptr() as usize,
        ) > 0
    {
        let none = |m: &[u64; 16]| *m != [0; 16] && m.iter().zip(&allowed).all(|(a, b)| a & b == 0);
        if none(&t.affinity) || img.threads().iter().any(|th| none(&th.affinity)) {
            die(format_args!(
                "the image's CPU affinity names no CPU here to run on (online and in this cpuset): restore it where one of its CPUs is (`cryo inspect` shows them)"
            ));
        }
    }
    check(set(&t.affinity), format_args!("setting the CPU affinity"));
}

/// Which mappings a core dump holds, as captured (`TaskState::
/// coredump_filter`; an exec keeps the restorer's otherwise), if the
/// restorer's differs. The file reads in hex, and takes "0x..." (a
/// bare "0000007f" would be read as octal).
fn coredump_filter(v: u64) {
    let known = cryo_image::task::COREDUMP_FILTER_KNOWN;
    if v & known == 0 {
        return;
    }
    let want = v & !known;
    let mut text = [0u8; 18];
    text[..2].copy_from_slice(b"0x");
    let mut len = 2;
    for i in (0..16).rev() {
        let d = (want >> (i * 4)) & 0xf;
        if d != 0 || len > 2 || i == 0 {
            text[len] = b"0123456789abcdef"[d as usize];
            len += 1;
        }
    }
    let same = |got: &[u8]| {
        got.iter().all(u8::is_ascii_hexdigit)
            && got.iter().fold(0u64, |a, &c| {
                a << 4 | (c as char).to_digit(16).unwrap_or(0) as u64
            }) == want
    };
    if let Err((opening, e)) = proc_set(b"/proc/self/coredump_filter\0", same, &text[..len]) {
        if opening {
            die(format_args!("opening coredump_filter: errno {e}"));
        }
        die(format_args!(
            "setting coredump_filter to {want:#x}: errno {e}"
        ));
    }
}

/// Write `v` to a /proc/self file if it holds another value.
fn proc_write(path: &[u8], v: i64, what: &str) {
    if v == cryo_image::task::UNKNOWN {
        return;
    }
    let mut text = [0u8; 24];
    let len = fmt_i64(v, &mut text);
    if let Err((opening, e)) = proc_set(path, |got| got == &text[..len], &text[..len]) {
        if opening {
            die(format_args!("opening {what}: errno {e}"));
        }
        die(format_args!("setting {what} to {v}: errno {e}"));
    }
}

/// Open the /proc/self file `path` and write `text` to it unless what it
/// reads (without its newline) is `same` already; Err: whether the open
/// (else the write) failed, and its errno.
fn proc_set(path: &[u8], same: impl Fn(&[u8]) -> bool, text: &[u8]) -> Result<(), (bool, isize)> {
    let fd = syscall3(SYS_OPEN, path.as_ptr() as usize, O_RDWR | O_CLOEXEC, 0);
    if fd < 0 {
        return Err((true, -fd));
    }
    let mut cur = [0u8; 24];
    let n = syscall3(SYS_READ, fd as usize, cur.as_mut_ptr() as usize, cur.len());
    let got = &cur[..n.max(0) as usize];
    let got = got.strip_suffix(b"\n").unwrap_or(got);
    let r = if n > 0 && same(got) {
        0
    } else {
        syscall6(
            SYS_PWRITE64,
            fd as usize,
            text.as_ptr() as usize,
            text.len(),
            0,
            0,
            0,
        )
    };
    syscall3(SYS_CLOSE, fd as usize, 0, 0);
    if r < 0 {
        return Err((false, -r));
    }
    Ok(())
}

pub(crate) fn fmt_i64(v: i64, out: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 24];
    let (mut n, mut x) = (0, v.unsigned_abs());
    loop {
        digits[n] = b'0' + (x % 10) as u8;
        n += 1;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    let mut len = 0;
    if v < 0 {
        out[0] = b'-';
        len = 1;
    }
    for k in (0..n).rev() {
        out[len] = digits[k];
        len += 1;
    }
    len
}

/// A process that made a group of its own (GNU timeout) or ran as a
/// shell's background job leads one again, as with `cryo restore`
/// (`Image::leads_group_again`): before the terminal is asked whether
/// this restorer is its foreground (such a group is not).
pub fn lead_own_group(img: &Image) {
    if !img.leads_group_again() {
        return;
    }
    let me = syscall3(SYS_GETPID, 0, 0, 0);
    if syscall3(SYS_GETPGID, 0, 0, 0) != me {
        let r = syscall3(SYS_SETPGID, 0, 0, 0);
        if r < 0 {
            die(format_args!(
                "setpgid (the process led its process group): {}",
                errno_name(-r)
            ));
        }
    }
}
