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

/// Whether the main thread's filters, back before the finishing chain
/// runs, let every call the chain makes from its own mapping (`area`;
/// `release`: the threads' release word and how many) through, with
/// their real arguments, from the program's `syscall; ret` gadget.
/// Capture checked the filters for the calls of the older release only:
/// these addresses only the restore knows (a review: capture's
/// placeholder 0 passed a filter that kills a munmap at a high address,
/// and refused one that allows only some futex operations).
pub fn allow_chain(
    img: &Image,
    area: &crate::frame::Area,
    release: Option<(usize, usize)>,
) -> bool {
    use cryo_image::bpf;
    if img.seccomp().is_empty() {
        return true;
    }
    let ip = crate::frame::checked_gadgets(img).syscall_ret + 2;
    let mut ok = true;
    area.calls(release, |c| {
        let args = [c[1], c[2], c[3], c[4], c[5], c[6]].map(|a| a as u64);
        let d = bpf::Data::new(c[0] as i32, ip, args);
        ok &= bpf::allows(bpf::run_main_chain(img.seccomp(), &d));
    });
    ok
}
