//! cryo-shim: rebuilds a captured process inside the process that execs it.
//!
//! `cryo restore` validates the image, sets up fds, cwd, umask, rlimits and
//! personality, starts a tracer, and execs this static, libc-free binary
//! (linked at [`SHIM_WINDOW`]) with
//!
//! ```text
//! cryo-shim META_FD PAGES_FD TID_OFFSET FLAGS
//! ```
//!
//! The shim then (1) reads and re-validates the image and opens every
//! mapped file, checking its identity — nothing has been torn down yet;
//! (2) moves its own code into anonymous memory (so `PR_SET_MM_MAP` may
//! replace the executable); (3) unmaps everything outside its window;
//! (4) maps vvar/vDSO and every captured mapping at its address and fills
//! the pages; (5) restores mm fields, fs/gs base, the cached TID, robust
//! list, rseq, signal handlers, timers, comm; (6) builds an rt_sigframe from
//! the captured registers and xsave area on the program's stack, and traps
//! (a SIGSTOP to itself) so the tracer can unmap the window and `rt_sigreturn` into the
//! program. See docs/design.md.
#![no_std]
#![no_main]

mod signals;
mod sys;
mod task;

use core::fmt::{self, Write};
use cryo_image::fds::{file_flags, lock_kind};
use cryo_image::handoff::{self, flags, Handoff, HANDOFF_MAGIC};
use cryo_image::{
    process_flags, run_kind, vma_flags, vma_kind, Image, Vma, MAX_META_LEN, NO_INDEX, PAGE_SIZE,
    SHIM_WINDOW, SHIM_WINDOW_LEN,
};
use sys::*;

const W: usize = SHIM_WINDOW as usize;
const W_END: usize = (SHIM_WINDOW + SHIM_WINDOW_LEN) as usize;
const STACK_AT: usize = W + 0x0800_0000;
const STACK_LEN: usize = 1 << 20;
const META_AT: usize = W + 0x1000_0000;
const SCRATCH_AT: usize = W + 0x2000_0000;
const SCRATCH_LEN: usize = 4 << 20;
const SELF_COPY_AT: usize = W + 0x3000_0000;
const TEMP_AT: usize = W + 0x4000_0000;
const TEMP_LEN: usize = W_END - TEMP_AT;
/// Top of the x86_64 user address space (4-level paging).
const USER_END: usize = 0x7fff_ffff_f000;
const PG: usize = PAGE_SIZE as usize;

fn now_ns() -> u64 {
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
}

core::arch::global_asm!(
    ".globl _start",
    "_start:",
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
struct Msg {
    b: [u8; 768],
    n: usize,
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
    let _ = m.write_str("cryo-shim: ");
    let _ = m.write_fmt(args);
    let _ = m.write_str("\n");
    write(2, &m.b[..m.n]);
    exit(125)
}

fn check(r: isize, what: fmt::Arguments) -> usize {
    if r < 0 {
        die(format_args!("{what}: errno {}", -r));
    }
    r as usize
}

fn mmap(addr: usize, len: usize, prot: usize, flags: usize, fd: usize, off: u64) -> isize {
    syscall6(SYS_MMAP, addr, len, prot, flags, fd, off as usize)
}

fn map_anon_at(addr: usize, len: usize, what: &str) {
    let r = mmap(
        addr,
        len,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
        usize::MAX,
        0,
    );
    if r as usize != addr {
        die(format_args!("mapping {what} at {addr:#x}: errno {}", -r));
    }
}

/// Write a u64 into memory of the address space being rebuilt.
fn poke_u64(addr: usize, v: u64) {
    // SAFETY: callers pass addresses inside mappings the shim created and
    // made writable (the program's stack below its red zone, or scratch).
    unsafe { core::ptr::write_unaligned(addr as *mut u64, v) }
}

fn poke_u32(addr: usize, v: u32) {
    // SAFETY: as for poke_u64.
    unsafe { core::ptr::write_unaligned(addr as *mut u32, v) }
}

fn peek_u32(addr: usize) -> u32 {
    // SAFETY: callers pass addresses inside mappings the shim created.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

/// The handoff arguments as the shim uses them (fds as usize, absent:
/// usize::MAX).
struct Args {
    meta_fd: usize,
    pages_fd: usize,
    tid_offset: usize,
    flags: u64,
    exec_ns: u64,
    sock_fd: usize,
    alias_fd: usize,
    files_fd: usize,
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
    let fd = |v: u64| {
        if v == handoff::NONE {
            usize::MAX
        } else {
            v as usize
        }
    };
    restore(&Args {
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
    })
}

fn restore(a: &Args) -> ! {
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

    // 1. The image, read into the window and validated again.
    let len = check(
        syscall3(SYS_LSEEK, a.meta_fd, 0, 2),
        format_args!("meta.img size"),
    );
    if len == 0 || len as u64 > MAX_META_LEN {
        die(format_args!(
            "meta.img has an impossible size ({len} bytes)"
        ));
    }
    // Mapped from the page cache rather than read into fresh memory: a
    // large image's page-run table is megabytes, and fresh pages cost
    // several µs each here (docs/pitfalls.md). MAP_POPULATE maps it in one
    // call; every byte is checksummed below anyway.
    let buf_len = (len + PG - 1) & !(PG - 1);
    let r = mmap(
        META_AT,
        buf_len,
        PROT_READ,
        MAP_PRIVATE | MAP_FIXED_NOREPLACE | MAP_POPULATE,
        a.meta_fd,
        0,
    );
    if r as usize != META_AT {
        die(format_args!("mapping meta.img: errno {}", -r));
    }
    // SAFETY: META_AT..+len was just mapped (readable, len bytes of the
    // file, the rest of the last page zero); it stays mapped (inside the
    // window) until the shim is gone.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(META_AT as *const u8, len) };
    let img = match Image::parse(bytes) {
        Ok(i) => i,
        Err(e) => die(format_args!("image: {e}")),
    };
    if let Err(e) = img.validate() {
        die(format_args!("image: {e}"));
    }
    let p = img.process();
    for v in img.vmas().iter() {
        if v.kind != vma_kind::VSYSCALL && (v.start as usize) < W_END && (v.end as usize) > W {
            die(format_args!(
                "mapping {:#x}-{:#x} overlaps the shim window",
                v.start, v.end
            ));
        }
    }

    // 2. Open every file behind a mapping (and the executable) and check
    //    that it is still the file that was captured.
    let nfiles = img.files().len();
    map_anon_at(SCRATCH_AT, SCRATCH_LEN, "scratch");
    // Packed so that a small image touches two fresh pages, not four
    // (each costs several µs here): path, auxv, then the per-file tables.
    let path_buf = SCRATCH_AT; // 4 KiB + NUL
    let auxv_buf = SCRATCH_AT + 0x1008; // 64 u64
    let fds = (SCRATCH_AT + 0x1400) as *mut i32; // nfiles entries
    let need_rw = SCRATCH_AT + 0x1400 + nfiles * 4; // nfiles bytes
    if 0x1400 + nfiles * 5 > SCRATCH_LEN {
        die(format_args!("too many files ({nfiles})"));
    }
    for i in 0..nfiles {
        // SAFETY: i < nfiles and the fd table fits in scratch (checked).
        unsafe { *fds.add(i) = -1 };
    }
    for v in img.vmas().iter() {
        // A shared mapping that may be made writable (VM_MAYWRITE, 'mw')
        // was of a file open for writing: mprotect(PROT_WRITE) must work
        // again, so the file is opened read-write.
        if v.kind == vma_kind::FILE_SHARED
            && (v.prot & 2 != 0 || v.vmflags & cryo_image::vmflag("mw") != 0)
            && v.file != NO_INDEX
        {
            // SAFETY: file < nfiles (validated) and need_rw has nfiles bytes.
            unsafe { *(need_rw as *mut u8).add(v.file as usize) = 1 };
        }
    }
    let open_file = |idx: u32| -> usize {
        // SAFETY: idx < nfiles (validated by Image::validate).
        let slot = unsafe { &mut *fds.add(idx as usize) };
        if *slot >= 0 {
            return *slot as usize;
        }
        let f = img.files().get(idx as usize).unwrap_or_else(|| {
            die(format_args!("file index {idx} out of range"));
        });
        if f.flags & file_flags::DELETED != 0 {
            // Made again by `cryo restore` (unlinked file, memfd): the k-th
            // such file of the table is at FILES_FD + k.
            if a.files_fd == usize::MAX {
                die(format_args!(
                    "file {idx} was not made again by cryo restore"
                ));
            }
            let k = img
                .files()
                .iter()
                .take(idx as usize)
                .filter(|g| g.flags & file_flags::DELETED != 0)
                .count();
            let fd = a.files_fd + k;
            let mut st = [0u64; 18];
            check(
                syscall3(SYS_FSTAT, fd, st.as_mut_ptr() as usize, 0),
                format_args!("fstat of the made file {idx}"),
            );
            if st[6] != f.size {
                die(format_args!(
                    "the made file {idx} has size {} not {}",
                    st[6], f.size
                ));
            }
            *slot = fd as i32;
            return fd;
        }
        let path = img.str(f.path).unwrap_or("");
        if path.is_empty() || path.len() >= 4096 {
            die(format_args!("file {idx} has no usable path"));
        }
        // SAFETY: path_buf has 4 KiB in scratch; path.len() < 4096.
        unsafe {
            core::ptr::copy_nonoverlapping(path.as_ptr(), path_buf as *mut u8, path.len());
            *(path_buf as *mut u8).add(path.len()) = 0;
        }
        // SAFETY: need_rw has nfiles bytes.
        let rw = unsafe { *(need_rw as *const u8).add(idx as usize) } != 0;
        let fd = syscall3(
            SYS_OPEN,
            path_buf,
            if rw { O_RDWR } else { O_RDONLY } | O_CLOEXEC,
            0,
        );
        if fd < 0 {
            die(format_args!("cannot open {path}: errno {}", -fd));
        }
        let mut st = [0u64; 18];
        check(
            syscall3(SYS_FSTAT, fd as usize, st.as_mut_ptr() as usize, 0),
            format_args!("fstat {path}"),
        );
        let (dev, ino, size, mtime, mtime_ns) = (st[0], st[1], st[6], st[11] as i64, st[12] as u32);
        if dev != f.dev
            || ino != f.ino
            || size != f.size
            || mtime != f.mtime_sec
            || mtime_ns != f.mtime_nsec
        {
            die(format_args!(
                "{path} is not the file that was captured (identity, size or mtime changed)"
            ));
        }
        *slot = fd as i32;
        fd as usize
    };
    for v in img.vmas().iter() {
        if v.file != NO_INDEX && matches!(v.kind, vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED) {
            open_file(v.file);
        }
    }
    let exe_fd = if p.exe_file != NO_INDEX {
        open_file(p.exe_file) as u32
    } else {
        u32::MAX
    };

    // 3. Run from anonymous memory: PR_SET_MM_MAP refuses to replace the
    //    executable (EBUSY) while the shim's own file is still mapped.
    ph.mark(on);
    if a.alias_fd == usize::MAX || !remap_self(a.alias_fd) {
        relocate_self();
    }
    if a.alias_fd != usize::MAX {
        // The mappings made from it stay; the fd must not outlive the
        // shim (it would be an fd the program never opened).
        syscall3(SYS_CLOSE, a.alias_fd, 0, 0);
    }

    // 4. Point of no return: unmap everything outside the window.
    syscall3(SYS_MUNMAP, 0, W, 0);
    syscall3(SYS_MUNMAP, W_END, USER_END - W_END, 0);

    // 5. vvar + vvar_vclock + vDSO at their captured place (one call maps
    //    all three at fixed offsets from the vvar start).
    if let Some(vvar) = img.vmas().iter().find(|v| v.kind == vma_kind::VVAR) {
        check(
            syscall3(SYS_ARCH_PRCTL, 0x2003, vvar.start as usize, 0),
            format_args!("arch_prctl(ARCH_MAP_VDSO_64, {:#x})", vvar.start),
        );
        let probe = mmap(
            p.vdso_start as usize,
            PG,
            PROT_READ,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            usize::MAX,
            0,
        );
        if probe != -EEXIST {
            die(format_args!(
                "the vDSO did not land at {:#x} (probe {probe})",
                p.vdso_start
            ));
        }
    }

    ph.mark(on);
    // 6. Every mapping, then its pages (lazy mappings: only the pages
    //    around the stack pointer).
    let lazy = a.flags & flags::LAZY != 0;
    if lazy && a.sock_fd == usize::MAX {
        die(format_args!("lazy restore without a page-server socket"));
    }
    let eager = if lazy {
        Some(cryo_image::lazy::eager_window(&p))
    } else {
        None
    };
    let mut prev: Option<Vma> = None;
    for v in img.vmas().iter() {
        if !v.is_special() {
            let fd = if v.file != NO_INDEX {
                open_file(v.file)
            } else {
                usize::MAX
            };
            let only = eager.filter(|_| cryo_image::lazy::is_lazy(&v));
            map_vma(&img, &v, prev.as_ref(), fd, a.pages_fd, only);
        }
        prev = Some(v);
    }
    if lazy {
        hand_to_page_server(&img, a.sock_fd);
    }

    ph.mark(on);
    // 7. mm fields, with auxv and the executable.
    let mut n = 0usize;
    for e in img.auxv().iter() {
        if n + 2 > 64 {
            break;
        }
        poke_u64(auxv_buf + n * 8, e.key);
        poke_u64(auxv_buf + n * 8 + 8, e.val);
        n += 2;
    }
    let mm = p.mm;
    let map: [u64; 13] = [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_buf as u64,
        (n as u64 * 8) | ((exe_fd as u64) << 32),
    ];
    check(
        syscall6(SYS_PRCTL, 35, 14, map.as_ptr() as usize, 104, 0, 0),
        format_args!("prctl(PR_SET_MM, PR_SET_MM_MAP)"),
    );

    // 8. Thread state.
    let r = p.regs;
    check(
        syscall3(SYS_ARCH_PRCTL, 0x1002, r.fs_base as usize, 0),
        format_args!("arch_prctl(ARCH_SET_FS)"),
    );
    check(
        syscall3(SYS_ARCH_PRCTL, 0x1001, r.gs_base as usize, 0),
        format_args!("arch_prctl(ARCH_SET_GS)"),
    );
    let new_pid = syscall3(SYS_GETPID, 0, 0, 0) as u32;
    fix_cached_tid(&img, a.tid_offset, p.pid, new_pid);
    fix_robust_owners(&img, p.pid, new_pid);
    if p.robust_list != 0 {
        syscall3(
            SYS_SET_ROBUST_LIST,
            p.robust_list as usize,
            p.robust_list_len as usize,
            0,
        );
    }
    if p.flags & process_flags::HAS_RSEQ != 0 && p.rseq_size != 0 {
        check(
            syscall6(
                SYS_RSEQ,
                p.rseq_addr as usize,
                p.rseq_size as usize,
                0,
                p.rseq_sig as usize,
                0,
                0,
            ),
            format_args!("rseq registration at {:#x}", p.rseq_addr),
        );
    }
    signals::restore_dispositions(&img);
    restore_timers(&img, p.pid, new_pid);
    let mut comm = [0u8; 17];
    comm[..16].copy_from_slice(&p.comm);
    syscall3(SYS_PRCTL, 15, comm.as_ptr() as usize, 0);

    // 9. Close what the shim opened; the program's own fds were installed
    //    by `cryo restore` at their numbers and are untouched.
    for i in 0..nfiles {
        // SAFETY: i < nfiles.
        let fd = unsafe { *fds.add(i) };
        if fd >= 0 {
            syscall3(SYS_CLOSE, fd as usize, 0, 0);
        }
    }
    if a.files_fd != usize::MAX {
        let made = img
            .files()
            .iter()
            .filter(|f| f.flags & file_flags::DELETED != 0)
            .count();
        for k in 0..made {
            syscall3(SYS_CLOSE, a.files_fd + k, 0, 0);
        }
    }
    syscall3(SYS_CLOSE, a.meta_fd, 0, 0);
    syscall3(SYS_CLOSE, a.pages_fd, 0, 0);
    close_mem_fd();
    // `cryo restore` installed every fd without FD_CLOEXEC (the exec of
    // this shim would have closed them); put the flag back where the
    // program had it.
    for f in img.fds().iter() {
        if f.cloexec != 0 {
            check(
                syscall3(SYS_FCNTL, f.fd as usize, F_SETFD, FD_CLOEXEC),
                format_args!("setting FD_CLOEXEC on fd {}", f.fd),
            );
        }
    }
    // POSIX locks belong to the process and go with any close of their
    // file: taken now that the shim has closed its own fds (cryo restore
    // checked no one else holds them).
    for l in img.locks().iter() {
        if l.kind != lock_kind::POSIX {
            continue;
        }
        let len = if l.end == u64::MAX {
            0
        } else {
            l.end - l.start + 1
        };
        // struct flock: l_type i16, l_whence i16, pad, l_start, l_len, l_pid.
        let mut fl = [0u64; 4];
        fl[0] = if l.write != 0 { 1 } else { 0 }; // F_WRLCK 1, F_RDLCK 0; SEEK_SET 0
        fl[1] = l.start;
        fl[2] = len;
        check(
            syscall3(SYS_FCNTL, l.fd as usize, F_SETLK, fl.as_mut_ptr() as usize),
            format_args!("taking the POSIX lock on fd {} again", l.fd),
        );
    }
    if lazy {
        // The server prefetches (the recorded working set, if any) and then
        // says go. It never says no: if it dies, its watchdog kills us.
        let mut b = [0u8; 1];
        loop {
            let r = syscall3(SYS_READ, a.sock_fd, b.as_mut_ptr() as usize, 1);
            if r == -EINTR {
                continue;
            }
            if r != 1 || b[0] != handoff::GO {
                die(format_args!("the page server did not start (read {r})"));
            }
            break;
        }
        syscall3(SYS_CLOSE, a.sock_fd, 0, 0);
    }
    // The signals queued at capture, with their siginfo (every signal is
    // blocked until the final rt_sigreturn).
    signals::queue_pending(&img);
    // prctl state, then the credentials (after everything that needs
    // privilege), then what a credentials change resets, then
    // memory-deny-write-execute (no mapping is made after it).
    if let Some(t) = img.task() {
        task::restore_prctl(&t);
    }
    if let Some(c) = img.creds().filter(|_| a.flags & flags::SAME_CREDS == 0) {
        task::restore_creds(&img, &c);
    }
    if let Some(t) = img.task() {
        task::restore_after_creds(&t);
        task::restore_mdwe(&t);
    }

    // 10. The signal frame, and into the program.
    let frame_sp = build_sigframe(&img);
    ph.mark(on);
    if on {
        let us = |a: u64, b: u64| b.saturating_sub(a) / 1000;
        let t = ph.t;
        let mut m = Msg { b: [0; 768], n: 0 };
        let _ = writeln!(
            m,
            "cryo-shim phases (us): exec {} | image+files {} | unmap+vdso {} | map+fill {} | state+frame {} | shim total {}",
            if a.exec_ns != 0 { us(a.exec_ns, t[0]) } else { 0 },
            us(t[0], t[1]),
            us(t[1], t[2]),
            us(t[2], t[3]),
            us(t[3], t[4]),
            us(t[0], t[4]),
        );
        write(2, &m.b[..m.n]);
    }
    if a.flags & flags::SELF_UNMAP != 0 {
        finish_without_tracer(&img, frame_sp);
    }
    // Stop for the tracer with a SIGSTOP to ourselves (r10 = the magic,
    // r8 = the frame): the tracer meets it at its signal-delivery-stop,
    // unmaps the window and resumes at rt_sigreturn with rsp = frame_sp;
    // we never run again. Not `int3`: its SIGTRAP is forced on a task that
    // blocks it (every signal is blocked here) by resetting the program's
    // SIGTRAP handler, just restored, to SIG_DFL.
    let pid = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    // SAFETY: tgkill(pid, pid, SIGSTOP) only stops this process; the
    // tracer never lets it return here (ud2 otherwise).
    unsafe {
        core::arch::asm!(
            "syscall",
            "ud2",
            in("rax") SYS_TGKILL,
            in("rdi") pid,
            in("rsi") pid,
            in("rdx") SIGSTOP,
            in("r10") HANDOFF_MAGIC as usize,
            in("r8") frame_sp,
            options(noreturn)
        )
    }
}

/// Remove the window and enter the program, all from the program's own
/// code (see `cryo_image::gadget`): `frame_sp - 8` becomes the frame's
/// return address slot holding the sigreturn gadget, and the shim jumps to
/// the syscall-ret gadget with rax = munmap(window). Nothing of the shim
/// runs after that syscall.
fn finish_without_tracer(img: &Image, frame_sp: usize) -> ! {
    let Some(g) = img.gadgets() else {
        die(format_args!("no tracer and no gadgets in the image"));
    };
    // The bytes must be what capture found (cryo restore checked them in
    // the image; this checks the memory just built).
    let code = |addr: u64, len: usize| -> &'static [u8] {
        // SAFETY: Image::validate checked [addr, addr + len) lies inside an
        // executable (hence readable) mapping, mapped and filled above.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
    };
    if !cryo_image::gadget::is_syscall_ret(code(g.syscall_ret, cryo_image::gadget::SYSCALL_RET_MAX))
        || !cryo_image::gadget::is_sigreturn(code(g.sigreturn, cryo_image::gadget::SIGRETURN_MAX))
    {
        die(format_args!(
            "the restored code at {:#x}/{:#x} is not the captured gadgets",
            g.syscall_ret, g.sigreturn
        ));
    }
    poke_u64(frame_sp - 8, g.sigreturn);
    // The munmap removes this code and stack; the gadget's `ret` pops the
    // sigreturn gadget, whose rt_sigreturn (with rsp = frame_sp) loads
    // every register from the frame. Nothing returns here.
    // SAFETY: frame_sp - 8 is the return-address slot of a complete
    // rt_sigframe on the program's stack.
    unsafe {
        core::arch::asm!(
            "mov rsp, {sp}",
            "jmp {gadget}",
            sp = in(reg) frame_sp - 8,
            gadget = in(reg) g.syscall_ret,
            in("rax") SYS_MUNMAP,
            in("rdi") W,
            in("rsi") W_END - W,
            options(noreturn)
        )
    }
}

/// Map the shim's own file mappings again from `alias` — the same binary
/// under another path (`cryo restore` checked it is a hard link of the
/// shim, or a byte-identical copy). PR_SET_MM_MAP refuses to replace the
/// executable while any mapping has the executable's path; the alias has
/// another. Same bytes, and for a hard link the same page-cache pages, so
/// the code that runs on after each mmap is the code that was there.
/// Cheaper than `relocate_self`'s copy into fresh memory (~50 µs here).
/// Returns false (nothing changed) if the ELF header does not match.
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
    for i in 0..phnum {
        let ph = base + phoff + i * phentsize;
        if peek_u32(ph) != 1 {
            continue; // not PT_LOAD
        }
        let flags = peek_u32(ph + 4);
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
        if flags & 2 != 0 && file_end < end {
            // The rest of the segment's last file page is .bss: zeros (the
            // kernel cleared it at exec; the file has other bytes there).
            // SAFETY: [file_end, end) is inside the writable mapping just made.
            unsafe { core::ptr::write_bytes(file_end as *mut u8, 0, end - file_end) };
        }
    }
    true
}

/// Copy the shim's own image into anonymous memory and move that over it.
fn relocate_self() {
    extern "C" {
        static __executable_start: u8;
        static _end: u8;
    }
    let start = core::ptr::addr_of!(__executable_start) as usize & !(PG - 1);
    let end = (core::ptr::addr_of!(_end) as usize + PG - 1) & !(PG - 1);
    let len = end - start;
    let r = mmap(
        SELF_COPY_AT,
        len,
        PROT_READ | PROT_WRITE | PROT_EXEC,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
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

fn prot_bits(p: u32) -> usize {
    (p & 7) as usize
}

/// Could the kernel merge `v` into `prev` if both were mapped as is?
fn mergeable(prev: &Vma, v: &Vma) -> bool {
    prev.end == v.start
        && prev.file == NO_INDEX
        && v.file == NO_INDEX
        && !prev.is_special()
        && !v.is_special()
        && prev.kind != vma_kind::ANON_SHARED
        && v.kind != vma_kind::ANON_SHARED
        && prev.prot == v.prot
}

/// Map `v` at its address and fill its pages. `only`: fill only the DATA
/// pages inside this window (a lazy mapping; the page server serves the
/// rest).
fn map_vma(
    img: &Image,
    v: &Vma,
    prev: Option<&Vma>,
    fd: usize,
    pages_fd: usize,
    only: Option<(u64, u64)>,
) {
    let (start, len) = (v.start as usize, v.len() as usize);
    let runs = v.run_count > 0;
    let shared = matches!(v.kind, vma_kind::FILE_SHARED | vma_kind::ANON_SHARED);
    let final_prot = prot_bits(v.prot);
    // Private mappings that get pages are mapped writable, then mprotect'ed.
    let map_prot = if runs && !shared {
        final_prot | PROT_WRITE
    } else {
        final_prot
    };
    let mut flags = if shared {
        MAP_SHARED
    } else if v.vmflags & cryo_image::vmflag("dp") != 0 {
        MAP_DROPPABLE
    } else {
        MAP_PRIVATE
    };
    if v.file == NO_INDEX {
        flags |= MAP_ANONYMOUS;
    }
    if v.flags & vma_flags::GROWSDOWN != 0 {
        flags |= MAP_GROWSDOWN;
    }
    if v.vmflags & cryo_image::vmflag("nr") != 0 {
        flags |= MAP_NORESERVE;
    }
    let off = if v.file != NO_INDEX { v.pgoff } else { 0 };
    // Two adjacent anonymous mappings with the same protection would be
    // merged into one VMA by the kernel, and /proc/PID/maps would no longer
    // match the capture. A mapping moved with mremap keeps its page offset,
    // which then no longer continues its neighbour's, so it is never merged:
    // map such a mapping in the temporary area and move it into place.
    let via_temp =
        prev.is_some_and(|p| mergeable(p, v)) && len <= TEMP_LEN && flags & MAP_GROWSDOWN == 0;
    if via_temp {
        let r = mmap(TEMP_AT, len, map_prot, flags | MAP_FIXED_NOREPLACE, fd, off);
        if r as usize != TEMP_AT {
            die(format_args!("mapping {start:#x} (staged): errno {}", -r));
        }
        // mremap gives an anonymous mapping that was never faulted the
        // page offset of its new place (to let it merge): fault one page
        // first, so it keeps its own. A data page is read to where it
        // moves with the mapping (and read again by the fill below); else
        // a zero byte is written and the page dropped again.
        let first_data = (v.first_run..v.first_run + v.run_count)
            .filter_map(|j| img.page_runs().get(j as usize))
            .find(|r| r.kind == run_kind::DATA);
        match first_data {
            // (Not in a lazy mapping: the page server serves, and checks,
            // its pages.)
            Some(r) if map_prot & PROT_WRITE != 0 && only.is_none() => {
                let at = TEMP_AT + (r.vaddr - v.start) as usize;
                if let Err(e) = pread_all(pages_fd, at, PG, r.offset) {
                    die(format_args!(
                        "reading pages for {:#x}: errno {}",
                        r.vaddr, -e
                    ));
                }
            }
            _ => give_anon_vma(TEMP_AT, map_prot & PROT_WRITE != 0),
        }
        let r = syscall6(
            SYS_MREMAP,
            TEMP_AT,
            len,
            len,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            start,
            0,
        );
        if r as usize != start {
            die(format_args!("moving mapping into {start:#x}: errno {}", -r));
        }
    } else {
        let r = mmap(start, len, map_prot, flags | MAP_FIXED_NOREPLACE, fd, off);
        if r as usize != start {
            let name = img.str(v.name).unwrap_or("");
            die(format_args!(
                "mapping {start:#x}-{:#x} {name}: errno {}",
                v.end, -r
            ));
        }
    }
    if runs {
        // Adjacent DATA runs that are adjacent in pages.img too are read
        // with one pread (format 1 split runs every 16 pages; 2.0 does not,
        // but a run still ends at every zero page).
        let mut pending: Option<(u64, u64, u64)> = None; // (addr, len, offset)
        let flush = |p: (u64, u64, u64)| {
            let (addr, n, off) = match only {
                Some((lo, hi)) => {
                    let s = p.0.max(lo);
                    let e = (p.0 + p.1).min(hi);
                    if s >= e {
                        return;
                    }
                    (s, e - s, p.2 + (s - p.0))
                }
                None => p,
            };
            // Populate a larger private range in one call first: pread would
            // otherwise take a page fault per page, which costs several µs
            // each under virtualisation (docs/pitfalls.md); for a few pages
            // the extra call costs more than it saves. Best effort: on
            // failure the faults happen as before.
            if !shared && n >= POPULATE_MIN {
                syscall3(SYS_MADVISE, addr as usize, n as usize, MADV_POPULATE_WRITE);
            }
            if let Err(e) = pread_all(pages_fd, addr as usize, n as usize, off) {
                die(format_args!("reading pages for {addr:#x}: errno {}", -e));
            }
        };
        let (first, end) = (v.first_run as usize, (v.first_run + v.run_count) as usize);
        // A lazy mapping fills only the window: start at its first run (a
        // 4 GiB heap has 65 536 runs; walking them all took ~0.5 ms).
        let from = match only {
            Some((lo, _)) => {
                let runs = img.page_runs();
                let (mut a, mut b) = (first, end);
                while a < b {
                    let m = a + (b - a) / 2;
                    match runs.get(m) {
                        Some(r) if r.vaddr + r.len() <= lo => a = m + 1,
                        _ => b = m,
                    }
                }
                a
            }
            None => first,
        };
        for j in from..end {
            let Some(run) = img.page_runs().get(j) else {
                break;
            };
            if only.is_some_and(|(_, hi)| run.vaddr >= hi) {
                break;
            }
            if run.kind == run_kind::DATA {
                pending = match pending {
                    Some((a, n, o)) if a + n == run.vaddr && o + n == run.offset => {
                        Some((a, n + run.len(), o))
                    }
                    other => {
                        if let Some(p) = other {
                            flush(p);
                        }
                        Some((run.vaddr, run.len(), run.offset))
                    }
                };
            } else if v.file != NO_INDEX && !shared {
                let (addr, n) = (run.vaddr as usize, run.len() as usize);
                // SAFETY: addr..addr+n lies inside the mapping just created
                // writable (validate checks runs lie inside their VMA).
                unsafe { core::ptr::write_bytes(addr as *mut u8, 0, n) };
            }
        }
        if let Some(p) = pending {
            flush(p);
        }
    }
    if map_prot != final_prot {
        check(
            syscall3(SYS_MPROTECT, start, len, final_prot),
            format_args!("mprotect {start:#x}"),
        );
    }
    restore_vma_flags(v);
}

/// The VmFlags only madvise, mlock and mseal set (`cryo_image::vmflag_rule`
/// says which): after the mapping is filled and has its protection.
fn restore_vma_flags(v: &Vma) {
    use cryo_image::vmflag;
    const ADVICE: [(u64, usize, &str); 8] = [
        (vmflag("dc"), 10, "MADV_DONTFORK"),
        (vmflag("dd"), 16, "MADV_DONTDUMP"),
        (vmflag("wf"), 18, "MADV_WIPEONFORK"),
        (vmflag("hg"), 14, "MADV_HUGEPAGE"),
        (vmflag("nh"), 15, "MADV_NOHUGEPAGE"),
        (vmflag("sr"), 2, "MADV_SEQUENTIAL"),
        (vmflag("rr"), 1, "MADV_RANDOM"),
        (vmflag("mg"), 12, "MADV_MERGEABLE"),
    ];
    const ANY: u64 = vmflag("dc")
        | vmflag("dd")
        | vmflag("wf")
        | vmflag("hg")
        | vmflag("nh")
        | vmflag("sr")
        | vmflag("rr")
        | vmflag("mg")
        | vmflag("lo")
        | vmflag("sl");
    if v.vmflags & ANY == 0 {
        return;
    }
    let (start, len) = (v.start as usize, v.len() as usize);
    for (mask, advice, what) in ADVICE {
        if v.vmflags & mask != 0 {
            check(
                syscall3(SYS_MADVISE, start, len, advice),
                format_args!("{what} on {start:#x}"),
            );
        }
    }
    if v.vmflags & vmflag("lo") != 0 {
        let how = if v.vmflags & vmflag("lf") != 0 {
            MLOCK_ONFAULT
        } else {
            0
        };
        check(
            syscall3(SYS_MLOCK2, start, len, how),
            format_args!("mlock of {start:#x}-{:#x}", v.end),
        );
    }
    if v.vmflags & vmflag("sl") != 0 {
        check(
            syscall3(SYS_MSEAL, start, len, 0),
            format_args!("mseal of {start:#x}-{:#x}", v.end),
        );
    }
}

/// Give the private anonymous mapping at `addr` an anon_vma without
/// leaving a page behind: one byte written (through /proc/self/mem if the
/// mapping is not writable: it writes any private mapping, whatever its
/// protection, without adding VM_ACCOUNT as a writable mmap would), then
/// MADV_DONTNEED.
static mut MEM_FD: isize = -1;

/// Close what `give_anon_vma` opened.
fn close_mem_fd() {
    // SAFETY: the shim is single-threaded; MEM_FD is only used here and in
    // give_anon_vma.
    unsafe {
        if MEM_FD >= 0 {
            syscall3(SYS_CLOSE, MEM_FD as usize, 0, 0);
            MEM_FD = -1;
        }
    }
}

fn give_anon_vma(addr: usize, writable: bool) {
    if writable {
        // SAFETY: addr is the first page of the writable mapping just made
        // at the staging address; the page is dropped again right after.
        unsafe { core::ptr::write_volatile(addr as *mut u8, 0) };
        syscall3(SYS_MADVISE, addr, PG, MADV_DONTNEED);
        return;
    }
    // SAFETY: the shim is single-threaded; MEM_FD is only used here and in
    // close_mem_fd.
    let fd = unsafe {
        if MEM_FD < 0 {
            MEM_FD = syscall3(
                SYS_OPEN,
                c"/proc/self/mem".as_ptr() as usize,
                O_RDWR | O_CLOEXEC,
                0,
            );
        }
        MEM_FD
    };
    if fd < 0 {
        return; // best effort: the mapping may then merge (maps differ)
    }
    let zero = 0u8;
    if syscall6(
        SYS_PWRITE64,
        fd as usize,
        &zero as *const u8 as usize,
        1,
        addr,
        0,
        0,
    ) == 1
    {
        syscall3(SYS_MADVISE, addr, PG, MADV_DONTNEED);
    }
}

/// madvise(2): fault the range in, writable, in one call (Linux 5.14).
const MADV_POPULATE_WRITE: usize = 23;
/// Smallest range worth a MADV_POPULATE_WRITE before its pread.
const POPULATE_MIN: u64 = 16 * PAGE_SIZE;

/// Create the userfaultfd of the rebuilt address space, register every
/// lazy mapping in MISSING mode and send the fd to the page server twice
/// over `sock`: one copy for the server, one that stays queued in the
/// socket so the fd outlives a dead server (its watchdog then kills us:
/// faults wait instead of reading zeros).
fn hand_to_page_server(img: &Image, sock: usize) {
    let uffd = check(
        syscall3(SYS_USERFAULTFD, O_CLOEXEC | 0o4000, 0, 0),
        format_args!("userfaultfd"),
    );
    let mut api: [u64; 3] = [handoff::uffd::UFFD_API, handoff::uffd::CRYO_FEATURES, 0];
    check(
        syscall3(
            SYS_IOCTL,
            uffd,
            handoff::uffd::UFFDIO_API as usize,
            api.as_mut_ptr() as usize,
        ),
        format_args!("UFFDIO_API"),
    );
    for v in img.vmas().iter() {
        if !cryo_image::lazy::is_lazy(&v) {
            continue;
        }
        let mut reg: [u64; 4] = [
            v.start,
            v.len(),
            handoff::uffd::UFFDIO_REGISTER_MODE_MISSING,
            0,
        ];
        check(
            syscall3(
                SYS_IOCTL,
                uffd,
                handoff::uffd::UFFDIO_REGISTER as usize,
                reg.as_mut_ptr() as usize,
            ),
            format_args!("UFFDIO_REGISTER {:#x}-{:#x}", v.start, v.end),
        );
    }
    for _ in 0..2 {
        let byte = [b'U'];
        let iov: [usize; 2] = [byte.as_ptr() as usize, 1];
        // struct cmsghdr { len: u64, level: i32, type: i32 } + one int fd.
        let mut cmsg = [0u64; 3];
        cmsg[0] = 20; // CMSG_LEN(sizeof(int))
        cmsg[1] = 1 | (1 << 32); // SOL_SOCKET, SCM_RIGHTS
        cmsg[2] = uffd as u64;
        // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
        let msg: [usize; 7] = [
            0,
            0,
            iov.as_ptr() as usize,
            1,
            cmsg.as_ptr() as usize,
            24,
            0,
        ];
        check(
            syscall3(SYS_SENDMSG, sock, msg.as_ptr() as usize, 0),
            format_args!("sending the userfaultfd to the page server"),
        );
    }
    syscall3(SYS_CLOSE, uffd, 0, 0);
}

/// glibc caches the thread's TID in its TCB (`struct pthread`); the PID is
/// new, so rewrite it. `cryo restore` passes the offset it found in its own
/// TCB; it is used only if the word there holds the captured PID. Otherwise
/// look for a unique word equal to the captured PID in the first page of the
/// TCB. Found nothing (not glibc, or no TCB): leave memory alone.
fn fix_cached_tid(img: &Image, hint: usize, old: u32, new: u32) {
    let fs = img.process().regs.fs_base as usize;
    if fs == 0 || old == new {
        return;
    }
    let Some(v) = img
        .vmas()
        .iter()
        .find(|v| (v.start as usize) <= fs && fs < v.end as usize)
    else {
        return;
    };
    if v.prot & 2 == 0 {
        return;
    }
    let limit = (v.end as usize).min(fs + 4096);
    if hint != 0 && fs + hint + 4 <= limit && peek_u32(fs + hint) == old {
        poke_u32(fs + hint, new);
        return;
    }
    let mut found = 0usize;
    let mut count = 0;
    let mut a = fs;
    while a + 4 <= limit {
        if peek_u32(a) == old {
            found = a;
            count += 1;
        }
        a += 4;
    }
    if count == 1 {
        poke_u32(found, new);
    }
}

/// Is [addr, addr+len) inside one writable captured mapping?
fn writable(img: &Image, addr: u64, len: u64) -> bool {
    img.vmas().iter().any(|v| {
        !v.is_special() && v.prot & 2 != 0 && v.start <= addr && addr.saturating_add(len) <= v.end
    })
}

fn peek_u64(addr: usize) -> u64 {
    // SAFETY: callers check the address lies in a mapped captured range.
    unsafe { core::ptr::read_unaligned(addr as *const u64) }
}

/// Robust mutexes the program holds carry the old TID in their futex word
/// and owner field. glibc lists them on the robust list (head registered
/// with the kernel, captured): walk it and rewrite old TID → new.
fn fix_robust_owners(img: &Image, old: u32, new: u32) {
    const TID_MASK: u32 = 0x3fff_ffff;
    let head = img.process().robust_list;
    if head == 0 || old == new || !writable(img, head, 24) {
        return;
    }
    let futex_offset = peek_u64(head as usize + 8) as i64;
    let mut entry = peek_u64(head as usize);
    let mut n = 0;
    while entry != head && entry != 0 && n < 4096 {
        let futex = entry.wrapping_add(futex_offset as u64);
        if !writable(img, entry, 8) || !writable(img, futex, 12) {
            break;
        }
        let word = peek_u32(futex as usize);
        if word & TID_MASK == old {
            poke_u32(futex as usize, (word & !TID_MASK) | new);
        }
        // glibc's __owner sits 8 bytes after __lock.
        if peek_u32(futex as usize + 8) == old {
            poke_u32(futex as usize + 8, new);
        }
        entry = peek_u64(entry as usize) & !1;
        n += 1;
    }
}

fn restore_timers(img: &Image, old_pid: u32, new_pid: u32) {
    const SIGEV_THREAD_ID: i32 = 4;
    let timers = img.timers();
    if !timers.is_empty() {
        check(
            syscall6(SYS_PRCTL, 77, 1, 0, 0, 0, 0),
            format_args!("prctl(PR_TIMER_CREATE_RESTORE_IDS)"),
        );
        for t in timers.iter() {
            let mut sev = [0u8; 64];
            sev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
            sev[8..12].copy_from_slice(&t.signo.to_le_bytes());
            sev[12..16].copy_from_slice(&t.notify.to_le_bytes());
            let tid = if t.notify_tid as u32 == old_pid {
                new_pid as i32
            } else {
                t.notify_tid
            };
            if t.notify & SIGEV_THREAD_ID != 0 {
                sev[16..20].copy_from_slice(&tid.to_le_bytes());
            }
            let mut id: i32 = t.id;
            check(
                syscall3(
                    SYS_TIMER_CREATE,
                    t.clock as usize,
                    sev.as_ptr() as usize,
                    &mut id as *mut i32 as usize,
                ),
                format_args!("timer_create(id {})", t.id),
            );
            if id != t.id {
                die(format_args!("timer {} came back as id {id}", t.id));
            }
            if t.value_sec != 0 || t.value_nsec != 0 {
                let its = [t.interval_sec, t.interval_nsec, t.value_sec, t.value_nsec];
                check(
                    syscall6(
                        SYS_TIMER_SETTIME,
                        id as usize,
                        0,
                        its.as_ptr() as usize,
                        0,
                        0,
                        0,
                    ),
                    format_args!("timer_settime(id {id})"),
                );
            }
        }
        syscall6(SYS_PRCTL, 77, 0, 0, 0, 0, 0);
    }
    for it in img.itimers().iter() {
        if it.value_sec != 0 || it.value_usec != 0 {
            let v = [
                it.interval_sec,
                it.interval_usec,
                it.value_sec,
                it.value_usec,
            ];
            check(
                syscall3(SYS_SETITIMER, it.which as usize, v.as_ptr() as usize, 0),
                format_args!("setitimer({})", it.which),
            );
        }
    }
}

/// Build the kernel's x86_64 `struct rt_sigframe` below the program's red
/// zone: pretcode, ucontext (flags, link, altstack, sigcontext, mask),
/// siginfo, then the xsave area (64-byte aligned, with the `_fpx_sw_bytes`
/// software header and FP_XSTATE_MAGIC2 after it). Returns the stack
/// pointer `rt_sigreturn` expects (frame + 8).
fn build_sigframe(img: &Image) -> usize {
    const UC_FP_XSTATE: u64 = 1;
    const UC_SIGCONTEXT_SS: u64 = 2;
    const UC_STRICT_RESTORE_SS: u64 = 4;
    const FRAME_SIZE: usize = 8 + 304 + 128;
    let p = img.process();
    let r = p.regs;
    let xsave = img.xsave();
    let xsize = xsave.len();
    let top = r.rsp as usize - 128;
    let fp = (top - xsize - 4) & !63;
    // SAFETY: fp..fp+xsize+4 lies on the program's stack below its red
    // zone (memory the kernel itself would use for a signal frame), mapped
    // writable above; xsave has xsize bytes.
    unsafe { core::ptr::copy_nonoverlapping(xsave.as_ptr(), fp as *mut u8, xsize) };
    // _fpx_sw_bytes at offset 464 of the legacy area (ptrace put XCR0 there).
    poke_u32(fp + 464, 0x4650_5853); // FP_XSTATE_MAGIC1
    poke_u32(fp + 468, xsize as u32 + 4); // extended_size
    poke_u64(fp + 472, p.xcr0); // xfeatures
    poke_u32(fp + 480, xsize as u32); // xstate_size
    for i in 0..7 {
        poke_u32(fp + 484 + i * 4, 0);
    }
    poke_u32(fp + xsize, 0x4650_5845); // FP_XSTATE_MAGIC2

    let frame = ((fp - FRAME_SIZE) & !15) - 8;
    // SAFETY: frame..frame+FRAME_SIZE is on the same stack, below fp.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, FRAME_SIZE) };
    let uc = frame + 8;
    poke_u64(uc, UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS);
    poke_u64(uc + 8, 0); // uc_link
                         // uc_stack: sigaltstack, re-installed by rt_sigreturn.
    poke_u64(uc + 16, p.sigaltstack_sp);
    poke_u32(uc + 24, p.sigaltstack_flags & !1); // not SS_ONSTACK
    poke_u64(uc + 32, p.sigaltstack_size);
    let sc = uc + 40;
    let gprs = [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ];
    for (i, v) in gprs.iter().enumerate() {
        poke_u64(sc + i * 8, *v);
    }
    // cs, gs, fs, ss (u16 each).
    let seg = (r.cs & 0xffff) | ((r.ss & 0xffff) << 48);
    poke_u64(sc + 144, seg);
    poke_u64(sc + 184, fp as u64); // fpstate
    poke_u64(uc + 296, p.sig_blocked); // uc_sigmask
    frame + 8
}
