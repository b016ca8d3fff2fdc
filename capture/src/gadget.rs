//! The two instruction sequences a restore finishes with, without a
//! tracer (see `cryo_image::gadget`), found in the target's code.

use crate::pages;
use crate::vma::Classified;
use cryo_image::{gadget, vma_kind, Gadgets};

/// The two sequences a restore can finish with without a tracer (see
/// `cryo_image::gadget`), searched in the target's executable mappings,
/// glibc's first; at most 64 MiB of code is read. A plain `syscall; ret`
/// is preferred to a wrapper's (which writes errno when the call fails).
/// None if either is missing (the restore then uses its tracer).
pub fn find(pid: i32, maps: &[Classified]) -> Option<Gadgets> {
    const SCAN_LIMIT: u64 = 64 << 20;
    let mut order: Vec<&crate::procinfo::Mapping> = maps
        .iter()
        .filter(|c| {
            c.m.exec
                && c.m.read
                && matches!(c.kind, vma_kind::FILE_PRIVATE | vma_kind::ANON_PRIVATE)
                && c.m.end - c.m.start <= SCAN_LIMIT
        })
        .map(|c| c.m)
        .collect();
    order.sort_by_key(|m| !m.path.contains("/libc.so"));
    let (mut plain, mut syscall_ret, mut sigreturn) = (None, None, None);
    let mut scanned = 0u64;
    let mut buf = Vec::new();
    for m in order {
        if scanned + (m.end - m.start) > SCAN_LIMIT {
            break;
        }
        scanned += m.end - m.start;
        buf.resize((m.end - m.start) as usize, 0);
        if pages::read_remote(pid, m.start, &mut buf).is_err() {
            continue;
        }
        // Whole patterns, with room for the longest (what restore checks).
        let at = |o: usize, max: usize| (o + max <= buf.len()).then_some(m.start + o as u64);
        plain = plain
            .or(gadget::find_plain_syscall_ret(&buf).and_then(|o| at(o, gadget::SYSCALL_RET_MAX)));
        syscall_ret = syscall_ret
            .or(gadget::find_syscall_ret(&buf).and_then(|o| at(o, gadget::SYSCALL_RET_MAX)));
        sigreturn =
            sigreturn.or(gadget::find_sigreturn(&buf).and_then(|o| at(o, gadget::SIGRETURN_MAX)));
        if let (Some(a), Some(b)) = (plain, sigreturn) {
            return Some(Gadgets {
                syscall_ret: a,
                sigreturn: b,
            });
        }
    }
    // No plain `syscall; ret`: a wrapper's, whose error path writes errno
    // (only a failing call takes it).
    Some(Gadgets {
        syscall_ret: plain.or(syscall_ret)?,
        sigreturn: sigreturn?,
    })
}
