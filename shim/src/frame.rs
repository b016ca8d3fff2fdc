//! Into the program: the kernel's `rt_sigframe` built on its stack, then
//! the window removed and `rt_sigreturn` — by the shim itself through the
//! program's own code (gadgets), or by the tracer at a SIGSTOP.

use crate::mem::*;
use crate::sys::*;
use crate::{die, W, W_END};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicUsize, Ordering};
use cryo_image::handoff::HANDOFF_MAGIC;
use cryo_image::{Image, Regs};

/// The main thread's frame, where `cryo_image::frame_top` says (see
/// [`write`]).
pub fn build(img: &Image) -> usize {
    let p = img.process();
    write(
        cryo_image::frame_top(p.regs.rsp, img.frame_alt(0), p.xsave_size) as usize,
        &resume_regs(&p.regs, &p.raw_regs, p.sig_blocked),
        Some((img.xsave(), p.xcr0, tiles(img))),
        p.sig_blocked,
        (p.sigaltstack_sp, p.sigaltstack_flags, p.sigaltstack_size),
    )
}

/// Whether the process had AMX tile data (its permission is asked for
/// again: `task::restore_xcomp_perm`), so frames carry the tiles.
pub fn tiles(img: &Image) -> bool {
    img.task()
        .is_some_and(|t| t.xcomp_perm & cryo_image::task::XCOMP_TILEDATA != 0)
}

/// The registers a thread captured in an interrupted system call resumes
/// with: `restart` (rewound to the call) as capture made them, unless a
/// signal pending now (sent while the process was being restored, or
/// queued at capture) will be handled the moment the program's mask is
/// back, by a handler that would have made the kernel return EINTR:
/// ERESTARTSYS (-512) and a handler without SA_RESTART, or ERESTARTNOHAND
/// (-514) or ERESTART_RESTARTBLOCK (-516: a poll or sleep capture made a
/// call again) and any handler. Then the call returns EINTR, as it would have,
/// instead of starting again after the handler (which a program that
/// checks for signals after EINTR, as CPython does, would miss). The
/// kernel handles the lowest pending signal first; a default or ignored
/// disposition interrupts nothing there, and the next one decides.
/// (A signal sent after this check, before the final rt_sigreturn, still
/// finds the call restarted.)
fn resume_regs(restart: &Regs, raw: &Regs, blocked: u64) -> Regs {
    const SA_RESTART: u64 = 0x1000_0000;
    let kind = raw.rax as i64;
    if (raw.orig_rax as i64) < 0
        || !(kind == -512 || kind == -514 || kind == -516)
        || restart.rip == raw.rip
    {
        return *restart;
    }
    // (Every signal is blocked in the shim: all that is pending.)
    let mut pending = 0u64;
    syscall6(
        SYS_RT_SIGPENDING,
        &mut pending as *mut u64 as usize,
        8,
        0,
        0,
        0,
        0,
    );
    for sig in 1..=64usize {
        if (pending & !blocked) & (1u64 << (sig - 1)) == 0 {
            continue;
        }
        // The kernel's sigaction: handler, flags, restorer, mask.
        let mut act = [0u64; 4];
        syscall6(SYS_RT_SIGACTION, sig, 0, act.as_mut_ptr() as usize, 8, 0, 0);
        if act[0] <= 1 {
            continue; // SIG_DFL, SIG_IGN
        }
        // (A sleep's time left is in its `rem` already: the freeze
        // interrupted it and the kernel wrote it there.)
        if kind != -512 || act[1] & SA_RESTART == 0 {
            let mut r = *raw;
            r.rax = (-EINTR) as u64;
            return r;
        }
        return *restart;
    }
    *restart
}

/// XFEATURE_XTILEDATA (AMX tile data, 8 KiB): a dynamic feature. XCR0
/// has it wherever the CPU does, and ptrace's xsave area includes it, but a
/// task gets it only by asking (arch_prctl ARCH_REQ_XCOMP_PERM) and then
/// using it (its first tile instruction traps, and the kernel makes its
/// register buffer large enough); until then `rt_sigreturn` takes an area
/// only up to the end of the other features, and from a larger one
/// restores x87 and SSE alone (every AVX and AVX-512 register of the
/// program came back zero). A process without the permission gets a
/// frame without tile data; one with it (asked for again by then) has
/// each thread use tile data first ([`use_tiles`]), then gets its tiles
/// from its frame.
const XTILEDATA: u64 = 1 << 18;

/// The calling thread's first use of tile data, so that the kernel gives
/// it room for it (its process has the permission): LDTILECFG of one 16 ×
/// 64-byte tile, TILEZERO of it, TILERELEASE (all tiles back to their
/// initial state; the shim keeps nothing in them). Measured here: neither
/// TILERELEASE nor LDTILECFG alone does it, the signal frame stays 2 816
/// bytes; after TILEZERO it is 11 008.
fn use_tiles() {
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    cfg[16] = 64; // colsb[0]
    cfg[48] = 16; // rows[0]
                  // SAFETY: LDTILECFG reads the 64 bytes at rax (ours, on the stack);
                  // TILEZERO and TILERELEASE touch only this thread's tile registers.
                  // Executed only where the process has AMX permission, so the kernel
                  // handles the first-use trap.
    unsafe {
        core::arch::asm!(
            ".byte 0xc4, 0xe2, 0x78, 0x49, 0x00", // ldtilecfg (%rax)
            ".byte 0xc4, 0xe2, 0x7b, 0x49, 0xc0", // tilezero %tmm0
            ".byte 0xc4, 0xe2, 0x78, 0x49, 0xc0", // tilerelease
            in("rax") cfg.as_ptr(),
            options(nostack, readonly),
        )
    };
}

/// The xsave size of a signal frame for `xcr0` (with or without tile
/// data): without, as capture recorded it ([`know_sizes`]); else asked of
/// the CPU once (`cryo_image::frame_xsave_size`: a CPUID per feature,
/// 5.7 µs each in this VM, had been a third of each thread's restore) and
/// kept for every other thread.
fn signal_xsave_size(xcr0: u64) -> usize {
    let slot = if xcr0 & XTILEDATA != 0 {
        &WITH_TILES
    } else {
        &NO_TILES
    };
    match slot.load(Ordering::Relaxed) {
        0 => {
            let n = cryo_image::frame_xsave_size(xcr0);
            slot.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

static NO_TILES: AtomicUsize = AtomicUsize::new(0);
static WITH_TILES: AtomicUsize = AtomicUsize::new(0);

/// Take the frame's xsave size without tile data from the image (capture
/// recorded it; the CPU's layout was checked the same as the capturing
/// one's before the exec, or by a packed restorer): called before any
/// frame is written.
pub fn know_sizes(img: &Image) {
    let n = img.task().map_or(0, |t| t.frame_xsave as usize);
    if n != 0 {
        NO_TILES.store(n, Ordering::Relaxed);
    }
}

/// Build the kernel's x86_64 `struct rt_sigframe` below `top`: pretcode,
/// ucontext (flags, link, altstack, sigcontext, mask), siginfo, then the
/// xsave area if any (64-byte aligned, with the `_fpx_sw_bytes` software
/// header and FP_XSTATE_MAGIC2 after it; none: `rt_sigreturn` resets the
/// FPU state). Returns the stack pointer `rt_sigreturn` expects (frame +
/// 8).
pub fn write(
    top: usize,
    r: &Regs,
    xsave: Option<(&[u8], u64, bool)>,
    mask: u64,
    altstack: (u64, u32, u64),
) -> usize {
    const UC_FP_XSTATE: u64 = 1;
    const UC_SIGCONTEXT_SS: u64 = 2;
    const UC_STRICT_RESTORE_SS: u64 = 4;
    let mut fp = 0usize;
    let mut below = top;
    if let Some((xsave, xcr0, tiles)) = xsave {
        let xcr0 = if tiles {
            use_tiles();
            xcr0
        } else {
            xcr0 & !XTILEDATA
        };
        let xsize = signal_xsave_size(xcr0).min(xsave.len());
        fp = (top - xsize - 4) & !63;
        // SAFETY: fp..fp+xsize+4 lies on the program's stack below its red
        // zone (memory the kernel itself would use for a signal frame),
        // mapped writable above; xsave has at least xsize bytes.
        unsafe { core::ptr::copy_nonoverlapping(xsave.as_ptr(), fp as *mut u8, xsize) };
        // The header's XSTATE_BV without tile data where the process had
        // no permission for it (its tiles cannot hold data then).
        if !tiles {
            poke_u64(fp + 512, peek_u64(fp + 512) & !XTILEDATA);
        }
        // _fpx_sw_bytes at offset 464 of the legacy area (ptrace put XCR0 there).
        poke_u32(fp + 464, 0x4650_5853); // FP_XSTATE_MAGIC1
        poke_u32(fp + 468, xsize as u32 + 4); // extended_size
        poke_u64(fp + 472, xcr0); // xfeatures
        poke_u32(fp + 480, xsize as u32); // xstate_size
        for i in 0..7 {
            poke_u32(fp + 484 + i * 4, 0);
        }
        poke_u32(fp + xsize, 0x4650_5845); // FP_XSTATE_MAGIC2
        below = fp;
    }
    let frame = ((below - size_of::<RtSigframe>()) & !15) - 8;
    let fpx = if fp != 0 { UC_FP_XSTATE } else { 0 };
    let f = RtSigframe {
        pretcode: 0,
        uc: UContext {
            uc_flags: fpx | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
            uc_link: 0,
            // The sigaltstack, installed again by rt_sigreturn (never
            // SS_ONSTACK: the kernel works that out from the stack pointer).
            uc_stack: StackT {
                ss_sp: altstack.0,
                ss_flags: altstack.1 & !1,
                _pad: 0,
                ss_size: altstack.2,
            },
            uc_mcontext: SigContext {
                r8: r.r8,
                r9: r.r9,
                r10: r.r10,
                r11: r.r11,
                r12: r.r12,
                r13: r.r13,
                r14: r.r14,
                r15: r.r15,
                rdi: r.rdi,
                rsi: r.rsi,
                rbp: r.rbp,
                rbx: r.rbx,
                rdx: r.rdx,
                rax: r.rax,
                rcx: r.rcx,
                rsp: r.rsp,
                rip: r.rip,
                eflags: r.eflags,
                cs: r.cs as u16,
                gs: 0,
                fs: 0,
                ss: r.ss as u16,
                err: 0,
                trapno: 0,
                oldmask: 0,
                cr2: 0,
                fpstate: fp as u64,
                reserved1: [0; 8],
            },
            uc_sigmask: mask,
        },
        info: [0; 128],
    };
    // SAFETY: frame..frame+size_of::<RtSigframe>() is on the same stack,
    // below fp (or below `top`), mapped writable; write_unaligned needs no
    // alignment (the frame is 16-byte aligned + 8 anyway, as the kernel's).
    unsafe { core::ptr::write_unaligned(frame as *mut RtSigframe, f) };
    frame + 8
}

/// The kernel's x86_64 `struct sigcontext` (arch/x86/include/uapi/asm/sigcontext.h).
#[repr(C)]
struct SigContext {
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rax: u64,
    rcx: u64,
    rsp: u64,
    rip: u64,
    eflags: u64,
    cs: u16,
    gs: u16,
    fs: u16,
    ss: u16,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved1: [u64; 8],
}

/// `stack_t`.
#[repr(C)]
struct StackT {
    ss_sp: u64,
    ss_flags: u32,
    _pad: u32,
    ss_size: u64,
}

/// The kernel's `struct ucontext` (with a 64-bit signal mask).
#[repr(C)]
struct UContext {
    uc_flags: u64,
    uc_link: u64,
    uc_stack: StackT,
    uc_mcontext: SigContext,
    uc_sigmask: u64,
}

/// The kernel's x86_64 `struct rt_sigframe`: the return address, the
/// ucontext, the siginfo.
#[repr(C)]
struct RtSigframe {
    pretcode: u64,
    uc: UContext,
    info: [u8; 128],
}

// The layout rt_sigreturn reads (arch/x86/include/asm/sigframe.h).
const _: () = {
    assert!(offset_of!(SigContext, rip) == 128);
    assert!(offset_of!(SigContext, eflags) == 136);
    assert!(offset_of!(SigContext, cs) == 144);
    assert!(offset_of!(SigContext, ss) == 150);
    assert!(offset_of!(SigContext, fpstate) == 184);
    assert!(size_of::<SigContext>() == 256);
    assert!(offset_of!(UContext, uc_stack) == 16);
    assert!(offset_of!(UContext, uc_mcontext) == 40);
    assert!(offset_of!(UContext, uc_sigmask) == 296);
    assert!(offset_of!(RtSigframe, uc) == 8);
    assert!(offset_of!(RtSigframe, info) == 312);
    assert!(size_of::<RtSigframe>() == 440);
};

/// The image's gadgets, checked to be in the memory just built as
/// capture found them (cryo restore checked them in the image).
pub fn checked_gadgets(img: &Image) -> cryo_image::Gadgets {
    let Some(g) = img.gadgets() else {
        die(format_args!("no tracer and no gadgets in the image"));
    };
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
    g
}

/// futex(`word`, FUTEX_WAKE_PRIVATE, every waiter), as a call for the
/// chain, [`via_gadget`] or `seccomp::allows`.
pub fn wake_all(word: usize) -> [usize; 7] {
    [
        SYS_FUTEX,
        word,
        FUTEX_WAKE_PRIVATE,
        i32::MAX as usize,
        0,
        0,
        0,
    ]
}

/// System call `call` (rax, rdi, rsi, rdx, r10, r8, r9) made from the
/// program's syscall gadget at `gadget` ([`checked_gadgets`]), returning
/// here: for calls the shim makes once seccomp filters are back, which
/// then see the instruction pointer `seccomp::allows` checks them with.
pub fn via_gadget(gadget: u64, call: [usize; 7]) -> isize {
    let ret: isize;
    // SAFETY: `gadget` is a checked `syscall; ret` in the program's code
    // (or a glibc wrapper's `syscall; cmp; jae; ret`, whose error path
    // writes errno in the program's TLS), mapped and executable: `call`
    // pushes our return address on this stack (the shim's, in the
    // window), the gadget makes the system call, and its `ret` comes back
    // here. rcx and r11 are the syscall's; the flags are not kept.
    unsafe {
        core::arch::asm!(
            "call {g}",
            g = in(reg) gadget as usize,
            inlateout("rax") call[0] as isize => ret,
            in("rdi") call[1],
            in("rsi") call[2],
            in("rdx") call[3],
            in("r10") call[4],
            in("r8") call[5],
            in("r9") call[6],
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Where the main thread's release word goes without a chain mapping
/// ([`Area`]): just below its frame.
pub fn release_word(frame_sp: usize) -> usize {
    (frame_sp - 8 - 64) & !63
}

/// The finishing chain's own mapping, outside the window: its frames, the
/// threads' release word and, with the executable named late, the
/// PR_SET_MM_MAP struct. The chain's last call but the program's own
/// unmaps it. Nothing of it is written on the program's stack, where
/// below a stack pointer may lie what the program keeps there when it is
/// not the main one (three reviews: up to 1.4 KiB overwritten below a
/// sigaltstack, a coroutine's stack, one carved out of main's frame).
#[derive(Clone, Copy)]
pub struct Area {
    at: usize,
    len: usize,
}

/// Room for one frame of the chain (a 440-byte rt_sigframe without an
/// xsave area, its return slot, the alignment).
const CHAIN_FRAME: usize = 640;

impl Area {
    /// Mapped before the program's mlockall(MCL_FUTURE) and MDWE are back
    /// (so neither applies to it); `None` where the kernel refuses it
    /// (RLIMIT_AS, the mapping limit), or it lands in the window. Room
    /// for the executable's three calls, one per thread, the release's
    /// and its own unmapping (a frame takes at most 598 bytes; two to
    /// spare), the release word, and 1 KiB for the struct.
    pub fn map(threads: usize) -> Option<Area> {
        let len = ((7 + threads) * CHAIN_FRAME + 1024).next_multiple_of(crate::PG);
        // Right above the window (`cryo_image::RESTORING_AT`), so that a
        // capture that stops the process in these last steps, its window
        // already gone, knows it is still being restored (a sweep of stop
        // 49: a capture a few ms into a restore wrote an image that died
        // of SIGSEGV; this kernel names no anonymous mapping). Anywhere
        // where the program has memory there.
        let mut at = mmap(
            cryo_image::RESTORING_AT as usize,
            len,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            usize::MAX,
            0,
        );
        if at < 0 {
            at = mmap(
                0,
                len,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS,
                usize::MAX,
                0,
            );
        }
        if at < 0 {
            return None;
        }
        let at = at as usize;
        if at + len > W && at < W_END {
            syscall3(SYS_MUNMAP, at, len, 0);
            return None;
        }
        Some(Area { at, len })
    }

    /// The threads' release word: the area's top cache line.
    pub fn release_word(&self) -> usize {
        self.at + self.len - 64
    }

    /// Unmap it (where the chain will not use it).
    pub fn unmap(self) {
        syscall3(SYS_MUNMAP, self.at, self.len, 0);
    }

    /// The chain's calls from this mapping but the executable's, each
    /// (rax, rdi, rsi, rdx, r10, r8, r9) to `f` in the order the chain is
    /// built (the reverse of the order they run in): its own munmap,
    /// then with threads (`release`: their release word and how many)
    /// the release word's wake and each thread's FUTEX_WAKE_OP.
    pub fn calls(&self, release: Option<(usize, usize)>, mut f: impl FnMut([usize; 7])) {
        f([SYS_MUNMAP, self.at, self.len, 0, 0, 0, 0]);
        if let Some((word, n)) = release {
            f(wake_all(word));
            // FUTEX_OP_SET 1 on the own word, then wake its waiters if it
            // was 0 (FUTEX_OP_CMP_EQ 0). The first word it wakes at is
            // one nobody waits on (`word` + 4): the kernel wakes one
            // waiter there even when asked for none (a review: with
            // `word` there, each call let one thread go before its own
            // word was set, and the store landed in that running
            // thread's stack, 5 restores in 10).
            const SET_1_IF_0: usize = 1 << 12;
            for i in 0..n {
                f([
                    SYS_FUTEX,
                    word + 4,
                    FUTEX_WAKE_OP_PRIVATE,
                    0,
                    i32::MAX as usize,
                    crate::threads::own_word(i),
                    SET_1_IF_0,
                ]);
            }
        }
    }
}

/// Remove the window and enter the program, all from the program's own
/// code (see `cryo_image::gadget`): `frame_sp - 8` becomes the frame's
/// return address slot holding the sigreturn gadget, and the shim jumps to
/// the syscall-ret gadget with rax = munmap(window). Nothing of the shim
/// runs after that syscall. With seccomp strict mode (`strict`), one more
/// frame just below the program's: its rt_sigreturn lands on the
/// syscall-ret gadget again to enter it (seccomp(SECCOMP_SET_MODE_STRICT)),
/// whose `ret` enters the main thread's own frame through rt_sigreturn,
/// the one call of these that strict mode allows.
///
/// With the chain's own mapping (`area`), every other frame is in it, and
/// runs before that: with `exe` (the executable's fd,
/// `selfmap::exe_in_chain`) the first munmap removes only the shim's own
/// image, and PR_SET_MM_MAP naming the executable, the fd's close and the
/// munmap of the rest of the window follow; then, with threads
/// (`release`: the word they wait on), one FUTEX_WAKE_OP per thread that
/// sets its own wait word and wakes a wait restarted there after a stop,
/// and the FUTEX_WAKE of `release` (a thread's own word is set while it
/// sleeps: it lies below its frame, where the thread's stack goes once
/// it runs); then the area's munmap ([`Area::calls`]). Without it (the
/// kernel refused it, or seccomp filters would stop one of those calls:
/// `seccomp::allow_chain`), the threads' wake is one frame on the
/// program's stack, just below the release word, and their own words
/// were set right before (`threads::set_own_words`).
pub fn finish_without_tracer(
    img: &Image,
    frame_sp: usize,
    release: Option<(usize, usize)>,
    strict: bool,
    exe: Option<u32>,
    area: Option<Area>,
) -> ! {
    let g = checked_gadgets(img);
    let p = img.process();
    let alt = (p.sigaltstack_sp, p.sigaltstack_flags, p.sigaltstack_size);
    // Built from the last frame back: each frame's rsp is the slot of the
    // next one's sigreturn gadget; each lower on the stack than the last.
    poke_u64(frame_sp - 8, g.sigreturn);
    let mut next = frame_sp - 8;
    let mut top = match (release, area) {
        (Some((word, _)), None) => word - 64,
        _ => (frame_sp - 8 - 64) & !63,
    };
    // One more frame below the last, run before it: a system call from
    // the syscall-ret gadget (rax, rdi, rsi, rdx, r10, r8, r9).
    let chain = |call: [usize; 7], top: &mut usize, next: &mut usize| {
        let r = Regs {
            rip: g.syscall_ret,
            rsp: *next as u64,
            rax: call[0] as u64,
            rdi: call[1] as u64,
            rsi: call[2] as u64,
            rdx: call[3] as u64,
            r10: call[4] as u64,
            r8: call[5] as u64,
            r9: call[6] as u64,
            cs: p.regs.cs,
            ss: p.regs.ss,
            eflags: 0x202,
            ..Default::default()
        };
        let sp = write(*top, &r, None, !0, alt);
        poke_u64(sp - 8, g.sigreturn);
        *next = sp - 8;
        *top = (sp - 8 - 64) & !63;
    };
    if strict {
        const SECCOMP_SET_MODE_STRICT: usize = 0;
        chain(
            [SYS_SECCOMP, SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0],
            &mut top,
            &mut next,
        );
    }
    match area {
        None => {
            if let Some((word, _)) = release {
                chain(wake_all(word), &mut top, &mut next);
            }
            if exe.is_some() {
                die(format_args!(
                    "naming the executable last without the chain's mapping"
                ));
            }
        }
        Some(ar) => {
            let mut t = ar.release_word() - 64;
            ar.calls(release, |c| chain(c, &mut t, &mut next));
            if let Some(fd) = exe {
                chain([SYS_MUNMAP, W, W_END - W, 0, 0, 0, 0], &mut t, &mut next);
                chain([SYS_CLOSE, fd as usize, 0, 0, 0, 0, 0], &mut t, &mut next);
                let (map, size) = crate::mm::write_late(img, fd, t);
                t = (map - 64) & !63;
                use crate::mm::{PR_SET_MM, PR_SET_MM_MAP};
                chain(
                    [SYS_PRCTL, PR_SET_MM, PR_SET_MM_MAP, map, size, 0, 0],
                    &mut t,
                    &mut next,
                );
            }
        }
    }
    let sp = next;
    // The first munmap: the window, or with `exe` only the shim's own
    // image (its file's mappings, which alone stand in PR_SET_MM_MAP's
    // way; the rest of the window goes after it), so that as little as
    // can be lies between the last look for a writer of the executable,
    // here, and the call that names it (a review: a writer opening it
    // every 20 µs still slipped in once in 12 restores while the whole
    // window was unmapped first). Any doubt, and the shim leaves its own
    // file after all (a copy) and names the executable now, as it did
    // before: a writer then fails that call, loudly; the chain's own call
    // then changes nothing (EBUSY: the program maps its executable) and
    // its close closes the fd.
    let (from, len) = match exe {
        Some(fd) => {
            if crate::selfmap::no_writers(fd as usize) != crate::selfmap::Writers::None {
                crate::selfmap::leave_own_file(usize::MAX);
                crate::mm::restore(img, fd);
            }
            crate::selfmap::own_image()
        }
        None => (W, W_END - W),
    };
    // The munmap removes this code (and stack); the gadget's `ret` pops
    // the sigreturn gadget, whose rt_sigreturn loads every register from
    // the frame. Nothing returns here.
    // SAFETY: sp is the return-address slot of a complete rt_sigframe
    // (holding the sigreturn gadget) on the program's stack, or in the
    // chain's own mapping.
    unsafe {
        core::arch::asm!(
            "mov rsp, {sp}",
            "jmp {gadget}",
            sp = in(reg) sp,
            gadget = in(reg) g.syscall_ret,
            in("rax") SYS_MUNMAP,
            in("rdi") from,
            in("rsi") len,
            options(noreturn)
        )
    }
}

/// Stop for the tracer with a SIGSTOP to ourselves (r10 = the magic, r8 =
/// the frame, r9 = the threads' release word or 0, r12 = 1 + this
/// process's end of the tree's second round, which the tracer takes and
/// closes, or 0 (`round_fd` usize::MAX: none), r14 = how many threads,
/// r15 = the table of their own wait words, in the window): the tracer
/// meets it at its signal-delivery-stop, unmaps the window, sets and
/// wakes each thread's own word, wakes the release word and resumes at
/// rt_sigreturn with rsp = frame_sp; we never run again. Not
/// `int3`: its SIGTRAP is forced on a task that blocks it (every signal is
/// blocked here) by resetting the program's SIGTRAP handler, just
/// restored, to SIG_DFL.
pub fn finish_with_tracer(frame_sp: usize, release: Option<(usize, usize)>, round_fd: usize) -> ! {
    let (word, n) = release.unwrap_or((0, 0));
    let pid = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    // SAFETY: tgkill(pid, pid, SIGSTOP) only stops this process; the
    // tracer never lets it return here once it has met it. A SIGCONT
    // from elsewhere can discard the SIGSTOP before it is taken (then the
    // call returns: sent again; it was ud2, and a restore under a storm
    // of SIGSTOP/SIGCONT died of SIGILL 2 times in 30). rcx and r11 are
    // the syscall's, r13 keeps the number.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov rax, r13",
            "syscall",
            "jmp 2b",
            in("r13") SYS_TGKILL,
            in("rdi") pid,
            in("rsi") pid,
            in("rdx") SIGSTOP,
            in("r10") HANDOFF_MAGIC as usize,
            in("r8") frame_sp,
            in("r9") word,
            in("r12") round_fd.wrapping_add(1),
            in("r14") n,
            in("r15") crate::threads::own_words(),
            options(noreturn)
        )
    }
}
