//! Seccomp filters installed again (docs/design.md, "Seccomp filters"):
//! the main thread's chain, or the one every thread shares, at the end of
//! the restore; a thread's own chain by that thread (`threads`). Strict
//! mode is entered by the final frame chain (`frame`).

use crate::sys::*;
use crate::{check, die};
use cryo_image::Image;

/// The main thread's seccomp filters, in the order they were installed,
/// each with its flags: a chain every thread shares installed for all at
/// once (other threads all waiting in the program's code;
/// SECCOMP_FILTER_FLAG_TSYNC), so that they share each filter as they
/// did; else the main thread's own (each other thread installed its own,
/// [`install_chain`]). Capture checked that these filters allow
/// the install of each next one and the restore's last system calls; any
/// failure here is after the point of no return.
pub fn install(img: &Image, threads: bool) {
    use cryo_image::task::EVERY_THREAD;
    // Chains are in thread order: the shared one, or the main thread's,
    // comes first.
    let (thread, tsync) = match img.seccomp().get(0).map(|i| i.thread) {
        Some(EVERY_THREAD) => (EVERY_THREAD, threads),
        Some(0) => (0, false),
        _ => return,
    };
    chain_on_stack(img, thread, tsync);
}

/// [`install_chain`] with its buffer on the shim's 1 MiB stack: 32 KiB,
/// in a frame of its own (never inlined into the caller's, where the
/// stack probes touched all eight pages of it on every restore, a
/// fresh-page fault each, filters or not).
#[inline(never)]
fn chain_on_stack(img: &Image, thread: u32, tsync: bool) {
    let mut buf = [0u64; cryo_image::task::MAX_SECCOMP_FILTER_INSNS];
    install_chain(img, thread, tsync, &mut buf);
}

/// One chain of seccomp filters (`thread` as in `SeccompInsn`) into the
/// calling thread (`tsync`: and every other thread of the process);
/// `buf` holds one filter's `struct sock_filter`s while it is installed.
pub fn install_chain(img: &Image, thread: u32, tsync: bool, buf: &mut [u64]) {
    const SECCOMP_SET_MODE_FILTER: usize = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: usize = 1;
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const u64,
    }
    let insns = img.seccomp();
    let mut i = 0;
    while let Some(first) = insns.get(i) {
        if first.thread != thread {
            i += 1;
            continue;
        }
        let mut len = 0;
        while let Some(ins) = insns
            .get(i)
            .filter(|x| x.thread == thread && x.filter == first.filter)
        {
            if len == buf.len() {
                die(format_args!("seccomp filter {} is too long", first.filter));
            }
            buf[len] = ins.code as u64
                | (ins.jt as u64) << 16
                | (ins.jf as u64) << 24
                | (ins.k as u64) << 32;
            len += 1;
            i += 1;
        }
        let prog = SockFprog {
            len: len as u16,
            filter: buf.as_ptr(),
        };
        let flags = first.flags as usize | if tsync { SECCOMP_FILTER_FLAG_TSYNC } else { 0 };
        let r = syscall3(
            SYS_SECCOMP,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const SockFprog as usize,
        );
        if r > 0 {
            die(format_args!(
                "seccomp filter {}: thread {r} could not take it (TSYNC)",
                first.filter
            ));
        }
        check(
            r,
            format_args!("installing seccomp filter {}", first.filter),
        );
    }
}

/// Whether thread `thread`'s filters (0 the main thread, k + 1 the k-th
/// other; its own chain or the shared one, as the restore installs them)
/// let `call` (rax, rdi, rsi, rdx, r10, r8, r9) through from the
/// program's `syscall; ret` gadget, with these very arguments: capture
/// checked the restore's last calls with 0 for every address only the
/// restore knows, which reviews showed wrong both ways (it passed a
/// filter that kills a munmap at a high address and refused one that
/// allows only some futex operations).
pub fn allows(img: &Image, thread: u32, call: [usize; 7]) -> bool {
    use cryo_image::bpf;
    if img.seccomp().is_empty() {
        return true;
    }
    // (Threads and the finishing chain need the gadgets: checked where
    // they are run.)
    let ip = img.gadgets().map_or(0, |g| g.syscall_ret + 2);
    let args = [call[1], call[2], call[3], call[4], call[5], call[6]].map(|a| a as u64);
    let d = bpf::Data::new(call[0] as i32, ip, args);
    bpf::allows(bpf::run_thread_chain(img.seccomp(), thread, &d))
}

/// Whether the main thread's filters, back before the finishing chain
/// runs, let every call the chain makes from its own mapping (`area`;
/// `release`: the threads' release word and how many) through.
pub fn allow_chain(
    img: &Image,
    area: &crate::frame::Area,
    release: Option<(usize, usize)>,
) -> bool {
    let mut ok = true;
    area.calls(release, |c| ok &= allows(img, 0, c));
    ok
}

/// Every thread's wait for its release, as it may be made again after a
/// stop (on its own word), must pass its filters; and, without the
/// chain's mapping (`fallback`: the release word), so must the main
/// thread's wakes of each own word and of the release word. Else the
/// restore says so and ends (status 125): a thread whose wait failed
/// would run before the restore is done, and one never woken would wait
/// for ever (a review: a filter that refuses FUTEX_WAKE at a high
/// address, which capture passed with 0 for it, hung every restore).
pub fn check_release(img: &Image, n: usize, fallback: Option<usize>) {
    if img.seccomp().is_empty() {
        return;
    }
    let own = crate::threads::own_word;
    for i in 0..n {
        let wait = [SYS_FUTEX, own(i), FUTEX_WAIT_PRIVATE, 0, 0, 0, 0];
        if !allows(img, i as u32 + 1, wait) {
            die(format_args!(
                "thread {}'s seccomp filters would stop its wait for the restore's end (futex(FUTEX_WAIT) at {:#x})",
                i + 1,
                own(i)
            ));
        }
    }
    let Some(release) = fallback else {
        return;
    };
    for w in (0..n).map(own).chain(core::iter::once(release)) {
        if !allows(img, 0, crate::frame::wake_all(w)) {
            die(format_args!(
                "the seccomp filters would stop the restore's release of its threads (futex(FUTEX_WAKE) at {w:#x})"
            ));
        }
    }
}
