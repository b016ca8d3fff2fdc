//! Where a process keeps its own PID: the places in its data (writable
//! private mappings of its executable and libraries, and the anonymous
//! mapping right after one: .data and .bss) that hold the PID as a 32-bit
//! value. A program restored under another PID (`cryo restore` without
//! `--same-pid` or `--pidns`: the root of an image gets the restorer's)
//! goes on with the captured one there: nginx's master then fails to make
//! its workers on reload (F_SETOWN to a PID that is gone), bash's `$$`
//! names another process. Restore says so; nothing here changes memory.
//!
//! A heuristic, made to miss rather than cry wolf: the heap and stacks
//! are not read for the bare value (values there come and go; but V8's
//! heap is read for process.pid in V8's own form, and other heaps for
//! mutexes the main thread holds whose kind checks the owner), PIDs below 1000 or round (a
//! multiple of 100 or 256) are not looked for (too common a number), nor
//! a value the mapped file holds at the same place (a constant since
//! load); a value that is half of a 64-bit word pointing into a mapping
//! is a pointer, and only pages present in memory are read (through
//! /proc/PID/mem: nothing is faulted in or unshared).

use crate::pages::{read_unpinned, Pagemap};
use crate::procinfo::Mapping;
use cryo_image::task::{pid_ref, PidRef, MAX_PID_REFS};
use cryo_image::PAGE_SIZE;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Below this a PID is too common a number to look for.
const MIN_PID: i32 = 1000;
/// Below this a thread id is too small a number to take a mutex-shaped
/// group of words holding it for a held mutex (the kernel hands out ids
/// below 300 only at a PID namespace's start: RESERVED_PIDS).
const MIN_MUTEX_TID: i32 = 300;
/// Mappings larger than this are not data segments.
const MAX_MAPPING: u64 = 16 << 20;
/// Nor, larger than this, a V8 heap's pages.
const MAX_HEAP_MAPPING: u64 = 64 << 20;
/// How much of V8's heap mappings is read for its process.pid.
const MAX_HEAP_SCAN: u64 = 64 << 20;

/// The places of `pid`'s data that hold `pid`, and the mutexes its
/// threads hold (`tids`: the main thread's id, then the others' in the
/// image's order), up to [`MAX_PID_REFS`]; `tid_at`: where glibc caches
/// the main thread's id (its TCB), which restore rewrites. With `root`
/// (another process's PID: a tree's root's, in one of its descendants,
/// where bash's job control keeps its shell's process group and nginx's
/// workers their master), also the places that hold it as a value, by
/// the same heuristic, in the same pass over the pages.
pub fn find(
    pid: i32,
    tids: &[i32],
    maps: &[Mapping],
    tid_at: Option<u64>,
    root: Option<i32>,
) -> (Vec<PidRef>, Vec<u64>) {
    let mut out = Vec::new();
    let mut of_root = Vec::new();
    // A round number is a size or a limit (4096: 13 to 24 hits in nginx,
    // python3, redis-server and node; 2000: one in vim; none the PID).
    let searched = |v: i32| !(v < MIN_PID || v % 256 == 0 || v % 100 == 0);
    let values = searched(pid);
    let root = root.filter(|&r| searched(r));
    let Ok(mut pagemap) = Pagemap::open(pid) else {
        return (out, of_root);
    };
    let mut mem = None;
    let mapped = |v: u64| maps.iter().any(|m| m.start <= v && v < m.end);
    // Runs of present pages, each read at once (the target is frozen
    // meanwhile), up to this many pages.
    const RUN: usize = 256;
    let mut buf = vec![0u8; RUN * PAGE_SIZE as usize];
    // V8 (node) keeps process.pid in its heap, as a small integer (a
    // Smi: on x86_64 without pointer compression the value in a word's
    // high half, its low half zero). Its heap's pages are anonymous
    // mappings, read for that form only (measured on node 18: 6 such
    // words for its PID, none for ten numbers near it).
    let v8 = maps
        .iter()
        .any(|m| m.path.ends_with("/node") || m.path.contains("/libnode.so"));
    // (At most this much of them, first in address order: the target
    // is frozen meanwhile. A node with 580 MiB resident was frozen 1.7x
    // longer reading all of it.)
    let mut heap_budget: u64 = MAX_HEAP_SCAN;
    // Own values and mutexes up to MAX_PID_REFS; the root's go on.
    let mut full = false;
    for (i, m) in maps.iter().enumerate() {
        let heap = !is_data(maps, i)
            && (is_anon_heap(m) || m.path == "[heap]")
            && !after_guard(maps, i)
            && heap_budget >= m.end - m.start;
        let smi_only = v8 && heap;
        // Elsewhere in the heap: a mutex a thread holds (below).
        let mutex_only = (heap && !v8) || !values;
        // (The root's PID is no mutex owner here: values only.)
        let root_here = root.filter(|_| !heap || v8);
        if !is_data(maps, i) && !heap {
            continue;
        }
        if full && root_here.is_none() {
            continue;
        }
        if heap {
            heap_budget -= m.end - m.start;
        }
        let mut file = None;
        let Ok(entries) = pagemap.read(m.start, m.end) else {
            continue;
        };
        const PM_PRESENT: u64 = 1 << 63;
        let mut k = 0;
        while k < entries.len() {
            if entries[k] & PM_PRESENT == 0 {
                k += 1;
                continue;
            }
            let n = entries[k..]
                .iter()
                .take(RUN)
                .take_while(|&&e| e & PM_PRESENT != 0)
                .count();
            let at = m.start + k as u64 * PAGE_SIZE;
            k += n;
            let run = &mut buf[..n * PAGE_SIZE as usize];
            if read_unpinned(&mut mem, pid, at, run).is_err() {
                break;
            }
            // Mutexes the threads hold (restore rewrites their owner),
            // in data and heap alike; their words are not values.
            let held = if full {
                Vec::new()
            } else {
                held_mutexes(run, tids)
            };
            for &(q, pi, owner) in &held {
                if out.len() == MAX_PID_REFS {
                    full = true;
                    break;
                }
                out.push(PidRef {
                    addr: at + q as u64,
                    kind: if pi {
                        pid_ref::PI_MUTEX_OWNER
                    } else {
                        pid_ref::MUTEX_OWNER
                    },
                    owner: owner as u64,
                });
            }
            let own_here = !mutex_only && !full;
            if !own_here && root_here.is_none() {
                continue;
            }
            let in_mutex = |q: usize| held.iter().any(|&(o, _, _)| q == o || q + 8 == o);
            // Aligned 64-bit words; a PID is either half of one.
            for (q, quad) in run.chunks_exact(8).enumerate() {
                let quad = u64::from_le_bytes(quad.try_into().unwrap_or([0; 8]));
                for half in 0..2u64 {
                    let v = (quad >> (32 * half)) as u32 as i32;
                    let own = own_here && v == pid;
                    if !own && root_here != Some(v) {
                        continue;
                    }
                    if smi_only && quad != (v as u32 as u64) << 32 {
                        continue;
                    }
                    // Half of a pointer into a mapping whose address has
                    // the PID as its high or low half.
                    let addr = at + q as u64 * 8 + 4 * half;
                    if mapped(quad) || in_mutex(q * 8 + 4 * half as usize) {
                        continue;
                    }
                    if own && Some(addr) == tid_at {
                        continue;
                    }
                    // A constant of the file itself (nginx's .data holds
                    // 1001 twice), not a value the program wrote.
                    if m.inode != 0 && in_file(pid, m, &mut file, addr, v) {
                        continue;
                    }
                    if !own {
                        of_root.push(addr);
                    } else if out.len() < MAX_PID_REFS {
                        out.push(PidRef {
                            addr,
                            kind: pid_ref::VALUE,
                            owner: 0,
                        });
                    } else {
                        full = true;
                    }
                }
            }
        }
    }
    (out, of_root)
}

/// Offsets in `buf` of glibc mutexes (`pthread_mutex_t`, 8-byte aligned:
/// lock, count, owner, nusers, kind) that one of the threads `tids` holds
/// and whose kind checks the owner: recursive, error-checking or
/// priority-inheriting (robust ones are on the robust list, which restore
/// rewrites). Restored under another id, a thread no longer owns them:
/// unlock fails with EPERM, a recursive lock with EBUSY, and OCaml's
/// stdin channel hung (the survey of stop 32). The offset is the owner's;
/// true: priority-inheriting (its lock word holds the id too); the index
/// in `tids` of the thread that holds it.
fn held_mutexes(buf: &[u8], tids: &[i32]) -> Vec<(usize, bool, usize)> {
    let word = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or([0; 4]));
    let mut out = Vec::new();
    let mut o = 0;
    while o + 20 <= buf.len() {
        let owner = word(o + 8) as i32;
        if let Some(who) = tids.iter().position(|&t| t == owner && t >= MIN_MUTEX_TID) {
            let tid = owner;
            let (lock, count, nusers, kind) = (word(o), word(o + 4), word(o + 12), word(o + 16));
            const ROBUST: u32 = 0x10;
            const PI: u32 = 0x20;
            let known = kind & !0xff == 0 && kind & ROBUST == 0;
            let checks_owner = matches!(kind & 3, 1 | 2) || kind & PI != 0;
            let locked = if kind & PI != 0 {
                lock & 0x3fff_ffff == tid as u32
            } else {
                lock == 1 || lock == 2
            };
            if known && checks_owner && locked && (1..1 << 16).contains(&nusers) && count < 1 << 24
            {
                out.push((o + 8, kind & PI != 0, who));
            }
        }
        o += 8;
    }
    out
}

/// Whether the file `m` maps holds `value` at `addr` too (opened once per
/// mapping, through /proc/PID/map_files: the very inode mapped).
fn in_file(pid: i32, m: &Mapping, file: &mut Option<Option<File>>, addr: u64, value: i32) -> bool {
    let f = file.get_or_insert_with(|| {
        File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).ok()
    });
    let mut word = [0u8; 4];
    f.as_ref().is_some_and(|f| {
        f.read_exact_at(&mut word, m.offset + (addr - m.start))
            .is_ok()
    }) && i32::from_le_bytes(word) == value
}

/// Whether mapping `i` follows a guard page (no access): a thread's stack.
fn after_guard(maps: &[Mapping], i: usize) -> bool {
    i > 0 && maps[i - 1].end == maps[i].start && !maps[i - 1].read && !maps[i - 1].write
}

/// A writable private anonymous mapping no larger than a V8 heap space's
/// pages are (not a stack).
fn is_anon_heap(m: &Mapping) -> bool {
    m.write
        && !m.shared
        && m.inode == 0
        && m.path.is_empty()
        && m.end - m.start <= MAX_HEAP_MAPPING
        && m.image_pages.is_empty()
}

/// A writable private mapping of a file, or the anonymous one right
/// after it (its .bss).
fn is_data(maps: &[Mapping], i: usize) -> bool {
    let m = &maps[i];
    if !m.write || m.shared || m.end - m.start > MAX_MAPPING || !m.image_pages.is_empty() {
        return false;
    }
    let file = |m: &Mapping| m.inode != 0 && m.path.starts_with('/');
    file(m) || (m.path.is_empty() && i > 0 && file(&maps[i - 1]) && maps[i - 1].end == m.start)
}

#[cfg(test)]
mod tests {
    use super::held_mutexes;

    /// A glibc mutex's words: lock, count, owner, nusers, kind (and the
    /// list's two words), at 8-byte aligned `o`.
    fn put(buf: &mut [u8], o: usize, words: [u32; 5]) {
        for (k, w) in words.iter().enumerate() {
            buf[o + 4 * k..o + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
    }

    #[test]
    fn mutexes_are_found_with_the_thread_that_holds_them() {
        let mut buf = vec![0u8; 256];
        // Recursive, locked twice by the main thread (4321).
        put(&mut buf, 0, [1, 2, 4321, 1, 1]);
        // Error-checking, contended, held by the second thread (4400).
        put(&mut buf, 40, [2, 0, 4400, 1, 2]);
        // Priority-inheriting, held by the first thread (4399): its lock
        // word is the owner's id.
        put(&mut buf, 80, [4399, 0, 4399, 1, 0x20]);
        // A plain (timed) mutex: unlock does not check the owner.
        put(&mut buf, 120, [1, 0, 4321, 1, 0]);
        // Robust: on the robust list, rewritten from there.
        put(&mut buf, 160, [4321, 0, 4321, 1, 0x11]);
        // A recursive mutex of a thread that is not this process's, and
        // one held by a small id (a number more likely than a mutex).
        put(&mut buf, 200, [1, 0, 9999, 1, 1]);
        put(&mut buf, 224, [1, 0, 12, 1, 1]);
        let tids = [4321, 4399, 4400, 12];
        assert_eq!(
            held_mutexes(&buf, &tids),
            vec![(8, false, 0), (48, false, 2), (88, true, 1)]
        );
    }
}
