//! Where the shim runs from. PR_SET_MM_MAP refuses (EBUSY) to replace the
//! executable while any mapping has the executable's path, so before it
//! the shim maps its own segments again from `cryo-shim.text` (a hard link
//! of its binary: another path, the same bytes), or else copies itself
//! into anonymous memory.

use crate::mem::*;
use crate::sys::*;
use crate::{die, PG, SELF_COPY_AT};

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

/// Copy the shim's own image into anonymous memory and move that over it.
/// The copy's pages are allocated by the mmap (MAP_POPULATE) rather than
/// one fault each during the copy: a packed hello 0.57 → 0.54 ms to its
/// answer, 203 → 150 faults (docs/benchmarks.md). (The same for the top
/// of the shim's stack took 16 faults off and no time.)
fn relocate_self() {
    extern "C" {
        static __executable_start: u8;
        static _end: u8;
    }
    let start = core::ptr::addr_of!(__executable_start) as usize & !(PG - 1);
    let end = (core::ptr::addr_of!(_end) as usize + PG - 1) & !(PG - 1);
    let len = end - start;
    fill_holes(start, end);
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
