//! Small helpers for the address space the shim builds: mapping, and
//! reading and writing words of memory it has mapped.

use crate::die;
use crate::sys::*;
use cryo_image::Image;

pub fn mmap(addr: usize, len: usize, prot: usize, flags: usize, fd: usize, off: u64) -> isize {
    syscall6(SYS_MMAP, addr, len, prot, flags, fd, off as usize)
}

pub fn map_anon_at(addr: usize, len: usize, what: &str) {
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
pub fn poke_u64(addr: usize, v: u64) {
    // SAFETY: callers pass addresses inside mappings the shim created and
    // made writable (the program's stack below its red zone, or scratch).
    unsafe { core::ptr::write_unaligned(addr as *mut u64, v) }
}

pub fn poke_u32(addr: usize, v: u32) {
    // SAFETY: as for poke_u64.
    unsafe { core::ptr::write_unaligned(addr as *mut u32, v) }
}

pub fn peek_u32(addr: usize) -> u32 {
    // SAFETY: callers pass addresses inside mappings the shim created.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

pub fn peek_u64(addr: usize) -> u64 {
    // SAFETY: callers check the address lies in a mapped captured range.
    unsafe { core::ptr::read_unaligned(addr as *const u64) }
}

/// Is [addr, addr+len) inside one writable captured mapping?
pub fn writable(img: &Image, addr: u64, len: u64) -> bool {
    img.vmas().iter().any(|v| {
        !v.is_special() && v.prot & 2 != 0 && v.start <= addr && addr.saturating_add(len) <= v.end
    })
}
