//! Thread state that lives in memory and in the kernel's view of the
//! thread: fs/gs base, glibc's cached TID, the robust futex list and the
//! TIDs in it.

use crate::check;
use crate::mem::*;
use crate::sys::*;
use cryo_image::Image;

const ARCH_SET_GS: usize = 0x1001;
const ARCH_SET_FS: usize = 0x1002;

/// fs/gs base, then every cached copy of the thread's id rewritten to the
/// new one, then the robust list and the clear-child-tid address
/// registered again.
pub fn restore(img: &Image, tid_offset: usize) {
    let p = img.process();
    let r = p.regs;
    check(
        syscall3(SYS_ARCH_PRCTL, ARCH_SET_FS, r.fs_base as usize, 0),
        format_args!("arch_prctl(ARCH_SET_FS)"),
    );
    check(
        syscall3(SYS_ARCH_PRCTL, ARCH_SET_GS, r.gs_base as usize, 0),
        format_args!("arch_prctl(ARCH_SET_GS)"),
    );
    let new_pid = syscall3(SYS_GETPID, 0, 0, 0) as u32;
    fix_cached_tid(img, r.fs_base, tid_offset, p.pid, new_pid);
    fix_robust_owners(img, p.robust_list, p.pid, new_pid);
    fix_mutex_owners(img, 0, p.pid, new_pid);
    if p.robust_list != 0 {
        syscall3(
            SYS_SET_ROBUST_LIST,
            p.robust_list as usize,
            p.robust_list_len as usize,
            0,
        );
    }
    if p.clear_child_tid != 0 {
        syscall3(SYS_SET_TID_ADDRESS, p.clear_child_tid as usize, 0, 0);
    }
}

/// glibc caches each thread's TID in its TCB (`struct pthread`, at the
/// thread pointer `fs_base`); a TID that changed is rewritten there. The
/// offset comes from the image (read at capture from the program's own
/// glibc) or else from `cryo restore` (`hint`: found in its own TCB); it
/// is used only if the word there holds the captured TID. Without either,
/// look for a unique word equal to the captured TID in the first page of
/// the TCB. Found nothing (not glibc, or no TCB): leave memory alone.
pub fn fix_cached_tid(img: &Image, fs_base: u64, hint: usize, old: u32, new: u32) {
    let fs = fs_base as usize;
    let known = img.process().tid_offset as usize;
    let hint = if known != 0 { known } else { hint };
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
    if known != 0 {
        // The program's glibc said where; the word there is not this
        // thread's id (no TCB at fs): nothing to rewrite.
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

/// Mutexes thread `thread` (0 the main thread, k the k-th of the image's
/// threads) held at capture whose kind checks the owner (recursive,
/// error-checking, priority-inheriting; capture found them, `PidRef` of
/// kind MUTEX_OWNER or PI_MUTEX_OWNER): their owner field, and a PI
/// mutex's lock word, get its new id, as robust ones do below. Each only
/// if it still holds the old one. (By the recorded owner, not by the
/// value alone: a thread's new id may be another's old one.)
pub fn fix_mutex_owners(img: &Image, thread: u64, old: u32, new: u32) {
    use cryo_image::task::pid_ref;
    const TID_MASK: u32 = 0x3fff_ffff;
    if old == new {
        return;
    }
    for r in img.pid_refs().iter() {
        if r.kind == pid_ref::VALUE
            || r.owner != thread
            || r.addr < 8
            || !writable(img, r.addr - 8, 12)
        {
            continue;
        }
        let (owner, lock) = (r.addr as usize, r.addr as usize - 8);
        if peek_u32(owner) != old {
            continue;
        }
        poke_u32(owner, new);
        if r.kind == pid_ref::PI_MUTEX_OWNER {
            let word = peek_u32(lock);
            if word & TID_MASK == old {
                poke_u32(lock, (word & !TID_MASK) | new);
            }
        }
    }
}

/// Robust mutexes the program holds carry the old TID in their futex word
/// and owner field. glibc lists them on the robust list (head registered
/// with the kernel, captured): walk it and rewrite old TID → new.
pub fn fix_robust_owners(img: &Image, head: u64, old: u32, new: u32) {
    const TID_MASK: u32 = 0x3fff_ffff;
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
