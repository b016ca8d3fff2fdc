//! AIO contexts (`cryo_image::fds::AioRing`): each made again by
//! io_setup with a ring of the captured size, its head and tail brought
//! to their captured places by requests that complete at once (a write
//! to /dev/null, reaped up to the head), the captured events written
//! over its own, and the ring moved to its captured address, which is the
//! context's id (the kernel follows a ring that mremap moves).

use crate::die;
use crate::mem::peek_u32;
use crate::sys::*;
use cryo_image::fds::{AioRing, AIO_RING_HEADER};
use cryo_image::Image;

const SYS_IO_SETUP: usize = 206;
const SYS_IO_DESTROY: usize = 207;
const SYS_IO_GETEVENTS: usize = 208;
const SYS_IO_SUBMIT: usize = 209;
const IOCB_CMD_PWRITE: u16 = 1;
const O_WRONLY: usize = 1;
/// Requests submitted (and reaped) at a time.
const BATCH: usize = 32;

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

/// A context whose ring holds `nr` events, as the kernel sizes it: it
/// makes room for twice the request and two more, at least 4 per
/// possible CPU, rounded up to whole pages. Its address, or the errno.
fn setup(nr: u32) -> Result<usize, isize> {
    let mut ctx: u64 = 0;
    let want = (nr.saturating_sub(2) / 2).max(1) as usize;
    let r = syscall3(SYS_IO_SETUP, want, &mut ctx as *mut u64 as usize, 0);
    if r < 0 {
        return Err(-r);
    }
    Ok(ctx as usize)
}

/// The events a ring at `ctx` holds (`struct aio_ring`'s `nr`).
fn ring_nr(ctx: usize) -> u32 {
    peek_u32(ctx + 4)
}

/// Before the point of no return (a packed restorer's checks): whether
/// every context can be made again here with a ring of its size (the
/// kernel sizes rings by the machine's possible CPUs, and fs.aio-max-nr
/// bounds them): the first that cannot, as (its address, why).
pub fn check(img: &Image) -> Result<(), (u64, &'static str)> {
    for r in img.aio_rings().iter() {
        match setup(r.nr) {
            Ok(ctx) => {
                let same = ring_nr(ctx) == r.nr;
                syscall3(SYS_IO_DESTROY, ctx, 0, 0);
                if !same {
                    return Err((r.start, "its ring would have another size on this machine"));
                }
            }
            Err(_) => return Err((r.start, "io_setup refused it (fs.aio-max-nr?)")),
        }
    }
    Ok(())
}

/// Every context, its ring at its address with its events
/// (`pages_fd`: pages.img, where they are stored).
pub fn make(img: &Image, pages_fd: usize) {
    for r in img.aio_rings().iter() {
        make_one(&r, pages_fd);
    }
}

#[inline(never)]
fn make_one(r: &AioRing, pages_fd: usize) {
    let ctx = setup(r.nr).unwrap_or_else(|e| {
        die(format_args!(
            "io_setup for the AIO context at {:#x}: errno {e}",
            r.start
        ))
    });
    if ring_nr(ctx) != r.nr {
        die(format_args!(
            "the AIO context at {:#x}: a ring of {} events, not {}",
            r.start,
            ring_nr(ctx),
            r.nr
        ));
    }
    let null = syscall3(
        SYS_OPEN,
        c"/dev/null".as_ptr() as usize,
        O_WRONLY | O_CLOEXEC,
        0,
    );
    if null < 0 {
        die(format_args!("opening /dev/null: errno {}", -null));
    }
    let byte = 0u8;
    let iocb = Iocb {
        data: 0,
        key: 0,
        rw_flags: 0,
        opcode: IOCB_CMD_PWRITE,
        reqprio: 0,
        fildes: null as u32,
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
    // Head and tail to the captured head, each request reaped; then the
    // tail on to the captured tail, the requests left in the ring.
    let submit = |k: usize| {
        let n = syscall3(SYS_IO_SUBMIT, ctx, k, ptrs.as_ptr() as usize);
        if n != k as isize {
            die(format_args!(
                "placing the AIO context at {:#x}'s tail: io_submit gave {n} of {k}",
                r.start
            ));
        }
    };
    let mut left = r.head as usize;
    while left > 0 {
        let k = left.min(BATCH);
        submit(k);
        let n = syscall6(
            SYS_IO_GETEVENTS,
            ctx,
            k,
            k,
            events.as_mut_ptr() as usize,
            0,
            0,
        );
        if n != k as isize {
            die(format_args!(
                "placing the AIO context at {:#x}'s head: io_getevents gave {n} of {k}",
                r.start
            ));
        }
        left -= k;
    }
    let mut left = r.unreaped() as usize;
    while left > 0 {
        let k = left.min(BATCH);
        submit(k);
        left -= k;
    }
    syscall3(SYS_CLOSE, null as usize, 0, 0);
    if (peek_u32(ctx + 8), peek_u32(ctx + 12)) != (r.head, r.tail) {
        die(format_args!(
            "the AIO context at {:#x}: head and tail {} and {}, not {} and {}",
            r.start,
            peek_u32(ctx + 8),
            peek_u32(ctx + 12),
            r.head,
            r.tail
        ));
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
}
