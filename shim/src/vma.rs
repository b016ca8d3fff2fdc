//! The program's mappings: everything else unmapped, the vDSO placed,
//! every mapping made at its address with its pages and its flags (see
//! `cryo_image::vmflag_rule`).

use crate::files::Files;
use crate::mem::*;
use crate::sys::*;
use crate::{check, die, Args, PG, TEMP_AT, TEMP_LEN, USER_END, W, W_END};
use cryo_image::{run_kind, vma_flags, vma_kind, Image, Vma, NO_INDEX, PAGE_SIZE};

/// The point of no return: everything outside the window goes.
pub fn unmap_everything() {
    syscall3(SYS_MUNMAP, 0, W, 0);
    syscall3(SYS_MUNMAP, W_END, USER_END - W_END, 0);
}

/// vvar + vvar_vclock + vDSO at their captured place (one call maps all
/// three at fixed offsets from the vvar start).
pub fn place_vdso(img: &Image) {
    let p = img.process();
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
}

/// Every mapping, then its pages (lazy mappings: only the pages around the
/// stack pointer; the page server serves the rest; `map`: the data of
/// private anonymous memory mapped from pages.img, see `cryo_image::mapped`).
pub fn map_all(img: &Image, files: &mut Files, a: &Args, lazy: bool, map: bool) {
    let mut prev: Option<Vma> = None;
    for v in img.vmas().iter() {
        if v.kind == vma_kind::SYSV {
            attach_sysv(img, &v);
        } else if v.kind == vma_kind::AIO {
            // (Made by io_setup and moved here: `aio::make`.)
        } else if !v.is_special() {
            let fd = if v.file != NO_INDEX {
                files.open(v.file)
            } else {
                usize::MAX
            };
            // A lazy mapping: only the part around a thread's stack
            // pointer, where its signal frame goes.
            let only = (lazy && cryo_image::lazy::is_lazy(&v))
                .then(|| cryo_image::lazy::eager_in(img, v.start, v.end).unwrap_or((0, 0)));
            let mapped = map && cryo_image::mapped::is_mapped(&v);
            map_vma(img, &v, prev.as_ref(), fd, a.pages_fd, only, mapped);
        }
        prev = Some(v);
    }
}

/// A mapping of System V shared memory: the segment attached again
/// (shmat, at the attach's start: one attach covers all its mappings, as
/// the capture checked), then each mapping's protection and flags. Its
/// bytes are the segment's: `cryo restore` made it again with them if it
/// was gone.
pub(crate) fn attach_sysv(img: &Image, v: &Vma) {
    const SHM_RDONLY: usize = 0o10000;
    const SHM_EXEC: usize = 0o100000;
    if v.pgoff == 0 {
        let Some(s) = img.sysv_shm().iter().find(|s| s.start == v.start) else {
            die(format_args!(
                "System V memory at {:#x} without its segment",
                v.start
            ));
        };
        use cryo_image::fds::sysv_flags;
        let mut flags = if s.flags & sysv_flags::RDONLY != 0 {
            SHM_RDONLY
        } else {
            0
        };
        if v.prot & cryo_image::prot::EXEC != 0 {
            flags |= SHM_EXEC;
        }
        let r = syscall3(SYS_SHMAT, s.id as usize, v.start as usize, flags);
        if r as usize != v.start as usize {
            die(format_args!(
                "attaching System V segment {} at {:#x}: errno {}",
                s.id, v.start, -r
            ));
        }
        // Removed while attached, as it was: gone with its last detach.
        // (Every process of a tree that attaches it says so; the first
        // does it, and the others may still attach it by its id. Best
        // effort: a process that may not remove it leaves it to another,
        // or in place, which `cryo restore`'s documentation says.)
        if s.flags & sysv_flags::REMOVED != 0 {
            const IPC_RMID: usize = 0;
            syscall3(SYS_SHMCTL, s.id as usize, IPC_RMID, 0);
        }
    }
    check(
        syscall3(
            SYS_MPROTECT,
            v.start as usize,
            v.len() as usize,
            prot_bits(v.prot),
        ),
        format_args!("mprotect {:#x}", v.start),
    );
    restore_vma_flags(v);
}

/// mbind of `start..start+len` with a mapping's captured policy: the
/// mode with its flags, and its nodes (none for MPOL_LOCAL).
pub(crate) fn mbind(start: usize, len: usize, mode: u32, nodes: u64) -> isize {
    const SYS_MBIND: usize = 237;
    const MPOL_LOCAL: u32 = 4;
    let nodes = [nodes];
    let (mask, maxnode) = if mode & 0xff == MPOL_LOCAL {
        (0, 0)
    } else {
        (nodes.as_ptr() as usize, 65)
    };
    syscall6(SYS_MBIND, start, len, mode as usize, mask, maxnode, 0)
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
/// rest). `mapped`: map its runs of data from pages.img (MAP_PRIVATE,
/// over the anonymous mapping) rather than copy them.
pub(crate) fn map_vma(
    img: &Image,
    v: &Vma,
    prev: Option<&Vma>,
    fd: usize,
    pages_fd: usize,
    only: Option<(u64, u64)>,
    mapped: bool,
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
        // (addr, len, offset, starts a malloc'd block)
        let mut pending: Option<(u64, u64, u64, bool)> = None;
        let flush = |p: (u64, u64, u64, bool)| {
            let head = p.3;
            let (addr, n, off) = match only {
                Some((lo, hi)) => {
                    let s = p.0.max(lo);
                    let e = (p.0 + p.1).min(hi);
                    if s >= e {
                        return;
                    }
                    (s, e - s, p.2 + (s - p.0))
                }
                None => (p.0, p.1, p.2),
            };
            if mapped {
                if let Some((at, n_at, off_at)) =
                    cryo_image::mapped::mapped_part(v, addr, n, off, head && addr == p.0)
                {
                    // The same protection and flags as the mapping it
                    // replaces this part of; MAP_FIXED inside it only.
                    let r = mmap(
                        at as usize,
                        n_at as usize,
                        map_prot,
                        MAP_PRIVATE | MAP_FIXED | (flags & MAP_NORESERVE),
                        pages_fd,
                        off_at,
                    );
                    if r as usize != at as usize {
                        die(format_args!("mapping pages.img at {at:#x}: errno {}", -r));
                    }
                    // What comes before it (the mapping's first page) is
                    // copied.
                    let head = at - addr;
                    if head > 0 {
                        if let Err(e) = pread_all(pages_fd, addr as usize, head as usize, off) {
                            die(format_args!("reading pages for {addr:#x}: errno {}", -e));
                        }
                    }
                    return;
                }
            }
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
                    Some((a, n, o, h)) if cryo_image::mapped::joins((a, n, o), &run) => {
                        Some((a, n + run.len(), o, h))
                    }
                    other => {
                        if let Some(p) = other {
                            flush(p);
                        }
                        let head = run.flags & cryo_image::run_flags::MALLOC_HEAD != 0;
                        Some((run.vaddr, run.len(), run.offset, head))
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
    // The eager part of a lazy mapping is all present before the page
    // server starts, the pages without data too: a thread's signal frame
    // goes there, and a fault on a hole would wait for a server that may
    // already have streamed everything and gone.
    if let Some((lo, hi)) = only.filter(|(lo, hi)| lo < hi && map_prot & PROT_WRITE != 0) {
        check(
            syscall3(
                SYS_MADVISE,
                lo as usize,
                (hi - lo) as usize,
                MADV_POPULATE_WRITE,
            ),
            format_args!("populating {lo:#x}-{hi:#x}"),
        );
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
pub(crate) fn restore_vma_flags(v: &Vma) {
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
    let (start, len) = (v.start as usize, v.len() as usize);
    // Its own NUMA policy (mbind), before it is locked or sealed: the
    // mode with its flags, and its nodes (none for MPOL_LOCAL).
    if v.mempolicy != 0 {
        check(
            mbind(start, len, v.mempolicy, v.mempolicy_nodes),
            format_args!(
                "mbind of {start:#x}-{:#x} (policy {:#x})",
                v.end, v.mempolicy
            ),
        );
    }
    if v.vmflags & ANY == 0 {
        return;
    }
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
        // mlock marks the mapping locked, then faults its pages in; that
        // fails (ENOMEM) for a mapping without access (a guard page under
        // mlockall, stop 35's survey) or past the end of its file, where
        // mlockall ignores it. The mapping is locked then, as the
        // original was, unless the ENOMEM is RLIMIT_MEMLOCK's, which
        // CAP_IPC_LOCK lifts. (Made readable to lock it, a 4 GiB
        // reservation got 8 MiB of page tables, and a mapping past its
        // file's end failed the same way: a review.)
        let r = syscall3(SYS_MLOCK2, start, len, how);
        if !(r == -ENOMEM && crate::task::can_lock_any()) {
            check(r, format_args!("mlock of {start:#x}-{:#x}", v.end));
        }
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
pub fn close_mem_fd() {
    // SAFETY: the shim is single-threaded; MEM_FD is only used here and in
    // give_anon_vma.
    unsafe {
        if MEM_FD >= 0 {
            syscall3(SYS_CLOSE, MEM_FD as usize, 0, 0);
            MEM_FD = -1;
        }
    }
}

/// Forget what `give_anon_vma` opened without closing it: a child
/// forked sharing its parent's fd table, whose number is the parent's.
pub fn forget_mem_fd() {
    // SAFETY: as in close_mem_fd (the child is single-threaded too).
    unsafe { MEM_FD = -1 };
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
