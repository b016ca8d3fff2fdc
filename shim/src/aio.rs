//! AIO contexts (`cryo_image::fds::AioRing`): each made again by
//! io_setup with a ring of the captured size, its head and tail brought
//! to their captured places by requests that complete at once (a 1-byte
//! write to a memfd of the shim's, reaped up to the head), the captured
//! events written over its own, and the ring moved to its captured
//! address, which is the context's id (the kernel follows a ring that
//! mremap moves).

use crate::die;
use crate::mem::{mmap, peek_u32};
use crate::sys::*;
use cryo_image::fds::{AioRing, AIO_RING_HEADER};
use cryo_image::{vma_kind, Image};

const SYS_IO_SETUP: usize = 206;
const SYS_IO_DESTROY: usize = 207;
const SYS_IO_GETEVENTS: usize = 208;
const SYS_IO_SUBMIT: usize = 209;
const SYS_SCHED_GETAFFINITY: usize = 204;
const SYS_GETCPU: usize = 309;
const SYS_MEMFD_CREATE: usize = 319;
const MFD_CLOEXEC: usize = 1;
const IOCB_CMD_PWRITE: u16 = 1;
/// Requests submitted (and reaped) at a time.
const BATCH: usize = 32;
/// Trial contexts the checks keep at once (to count their sum against
/// fs.aio-max-nr); past that each is made and destroyed alone.
const KEPT: usize = 64;

/// struct iocb.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// struct io_event.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// The events a ring at `ctx` holds (`struct aio_ring`'s `nr`).
fn ring_nr(ctx: usize) -> u32 {
    peek_u32(ctx + 4)
}

/// A context whose ring holds `nr` events (128 per page, less one), asked
/// for as little as gives that ring, as fs.aio-max-nr counts what is asked:
/// the kernel makes room for twice the request and two more, at least 4
/// per possible CPU, rounded up to whole pages; so 1 (the CPUs' minimum
/// may be enough), else what just fills the pages.
fn setup(nr: u32) -> Result<usize, &'static str> {
    let pages = (nr as usize + 1) / 128;
    let least = (64 * pages.saturating_sub(1)).saturating_sub(1).max(1);
    for want in [1, least] {
        let mut ctx: u64 = 0;
        if syscall3(SYS_IO_SETUP, want, &mut ctx as *mut u64 as usize, 0) < 0 {
            return Err("io_setup refused it (fs.aio-max-nr?)");
        }
        if ring_nr(ctx as usize) == nr {
            return Ok(ctx as usize);
        }
        syscall3(SYS_IO_DESTROY, ctx as usize, 0, 0);
        if want == least {
            break;
        }
    }
    Err("its ring would have another size on this machine")
}

/// This thread on the CPU it is on, for as long as it places rings (a
/// context hands out its requests in per-CPU batches: one that moved
/// between CPUs might find fewer than the ring's program had); the mask
/// it had, to put back.
fn pin() -> [u64; 16] {
    let mut had = [0u64; 16];
    let size = core::mem::size_of_val(&had);
    syscall3(SYS_SCHED_GETAFFINITY, 0, size, had.as_mut_ptr() as usize);
    let mut cpu: u32 = 0;
    if syscall3(SYS_GETCPU, &mut cpu as *mut u32 as usize, 0, 0) == 0 && (cpu as usize) < size * 8 {
        let mut one = [0u64; 16];
        one[cpu as usize / 64] = 1 << (cpu % 64);
        syscall3(SYS_SCHED_SETAFFINITY, 0, size, one.as_ptr() as usize);
    }
    had
}

fn unpin(had: &[u64; 16]) {
    if had.iter().any(|&w| w != 0) {
        syscall3(
            SYS_SCHED_SETAFFINITY,
            0,
            core::mem::size_of_val(had),
            had.as_ptr() as usize,
        );
    }
}

/// A memfd the placing requests write to.
fn target() -> Result<usize, isize> {
    let r = syscall3(
        SYS_MEMFD_CREATE,
        c"cryo-aio".as_ptr() as usize,
        MFD_CLOEXEC,
        0,
    );
    if r < 0 {
        Err(-r)
    } else {
        Ok(r as usize)
    }
}

/// Bring the new context `ctx`'s head and tail to `r`'s: requests that
/// complete at once, reaped up to the head, the rest left in the ring.
#[inline(never)]
fn place(ctx: usize, r: &AioRing, fd: usize) -> Result<(), &'static str> {
    let byte = 0u8;
    let iocb = Iocb {
        data: 0,
        key: 0,
        rw_flags: 0,
        opcode: IOCB_CMD_PWRITE,
        reqprio: 0,
        fildes: fd as u32,
        buf: &byte as *const u8 as u64,
        nbytes: 1,
        offset: 0,
        reserved2: 0,
        flags: 0,
        resfd: 0,
    };
    let iocbs = [iocb; BATCH];
    let mut ptrs = [0usize; BATCH];
    for (p, i) in ptrs.iter_mut().zip(iocbs.iter()) {
        *p = i as *const Iocb as usize;
    }
    let mut events = [IoEvent {
        data: 0,
        obj: 0,
        res: 0,
        res2: 0,
    }; BATCH];
    let submit = |k: usize| syscall3(SYS_IO_SUBMIT, ctx, k, ptrs.as_ptr() as usize) == k as isize;
    let mut left = r.head as usize;
    while left > 0 {
        let k = left.min(BATCH);
        if !submit(k) {
            return Err("io_submit took fewer requests than its head needs");
        }
        let reaped = syscall6(
            SYS_IO_GETEVENTS,
            ctx,
            k,
            k,
            events.as_mut_ptr() as usize,
            0,
            0,
        );
        if reaped != k as isize {
            return Err("the requests that bring its head to its place could not be reaped");
        }
        left -= k;
    }
    let mut left = r.unreaped() as usize;
    while left > 0 {
        let k = left.min(BATCH);
        if !submit(k) {
            return Err("this machine's context takes fewer requests at once than its ring holds unreaped (another number of CPUs?)");
        }
        left -= k;
    }
    if (peek_u32(ctx + 8), peek_u32(ctx + 12)) != (r.head, r.tail) {
        return Err("its head and tail could not be brought to their places");
    }
    Ok(())
}

/// Before the point of no return (a packed restorer's checks): whether
/// every context can be made again here, with a ring of its size, all at
/// once (fs.aio-max-nr bounds their sum), each taking as many requests
/// unreaped as its ring held: the first that cannot, as (its address,
/// why). The trial contexts are destroyed again.
pub fn check(img: &Image) -> Result<(), (u64, &'static str)> {
    let rings = img.aio_rings();
    if rings.is_empty() {
        return Ok(());
    }
    let fd = target().map_err(|_| (0, "memfd_create failed"))?;
    let had = pin();
    let mut kept = [0usize; KEPT];
    let mut n = 0;
    let mut verdict = Ok(());
    for r in rings.iter() {
        let made = setup(r.nr).and_then(|ctx| {
            let placed = place(ctx, &r, fd);
            if n < KEPT {
                kept[n] = ctx;
                n += 1;
            } else {
                syscall3(SYS_IO_DESTROY, ctx, 0, 0);
            }
            placed
        });
        if let Err(why) = made {
            verdict = Err((r.start, why));
            break;
        }
    }
    for &ctx in &kept[..n] {
        syscall3(SYS_IO_DESTROY, ctx, 0, 0);
    }
    unpin(&had);
    syscall3(SYS_CLOSE, fd, 0, 0);
    verdict
}

/// Every context, its ring at its address with its events and its
/// madvise flags (`pages_fd`: pages.img, where the events are stored).
/// Each ring's place is held first (PROT_NONE), so that no io_setup puts
/// a new ring on it (mremap cannot move a ring onto itself).
pub fn make(img: &Image, pages_fd: usize) {
    let rings = img.aio_rings();
    if rings.is_empty() {
        return;
    }
    for r in rings.iter() {
        let at = mmap(
            r.start as usize,
            r.len as usize,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            usize::MAX,
            0,
        );
        if at as usize != r.start as usize {
            die(format_args!(
                "holding the place of the AIO context at {:#x}: errno {}",
                r.start, -at
            ));
        }
    }
    let fd = target().unwrap_or_else(|e| die(format_args!("memfd_create: errno {e}")));
    let had = pin();
    for r in rings.iter() {
        make_one(img, &r, fd, pages_fd);
    }
    unpin(&had);
    syscall3(SYS_CLOSE, fd, 0, 0);
}

#[inline(never)]
fn make_one(img: &Image, r: &AioRing, fd: usize, pages_fd: usize) {
    let ctx = setup(r.nr)
        .unwrap_or_else(|why| die(format_args!("the AIO context at {:#x}: {why}", r.start)));
    if let Err(why) = place(ctx, r, fd) {
        die(format_args!("the AIO context at {:#x}: {why}", r.start));
    }
    let at = ctx + AIO_RING_HEADER as usize;
    if let Err(e) = pread_all(pages_fd, at, r.events.len as usize, r.events.off) {
        die(format_args!(
            "reading the events of the AIO context at {:#x}: errno {}",
            r.start, -e
        ));
    }
    let len = r.len as usize;
    let moved = syscall6(
        SYS_MREMAP,
        ctx,
        len,
        len,
        MREMAP_MAYMOVE | MREMAP_FIXED,
        r.start as usize,
        0,
    );
    if moved as usize != r.start as usize {
        die(format_args!(
            "moving the AIO context's ring to {:#x}: errno {}",
            r.start, -moved
        ));
    }
    if let Some(v) = img
        .vmas()
        .iter()
        .find(|v| v.kind == vma_kind::AIO && v.start == r.start)
    {
        crate::vma::restore_vma_flags(&v);
    }
}
