//! Mappings and their pages: `Vma` with its kinds and flags, the smaps
//! VmFlags rules, `PageRun` and the sums.img blocks.

use super::{StrRef, PAGE_SIZE};
use crate::record::record;

/// `Vma::kind` values.
pub mod vma_kind {
    pub const ANON_PRIVATE: u32 = 1;
    pub const ANON_SHARED: u32 = 2;
    pub const FILE_PRIVATE: u32 = 3;
    pub const FILE_SHARED: u32 = 4;
    pub const HEAP: u32 = 5;
    pub const STACK: u32 = 6;
    pub const VDSO: u32 = 7;
    pub const VVAR: u32 = 8;
    pub const VVAR_VCLOCK: u32 = 9;
    pub const VSYSCALL: u32 = 10;
    /// (8.0) An attach of System V shared memory (`fds::SysvShm`).
    pub const SYSV: u32 = 11;
    /// (11.11) The ring of an AIO context (io_setup; `fds::AioRing`):
    /// made again by io_setup and moved here, never mapped as memory.
    pub const AIO: u32 = 12;
    /// The last kind this version knows.
    pub const LAST: u32 = AIO;

    pub fn name(k: u32) -> &'static str {
        match k {
            ANON_PRIVATE => "anon-private",
            ANON_SHARED => "anon-shared",
            FILE_PRIVATE => "file-private",
            FILE_SHARED => "file-shared",
            HEAP => "heap",
            STACK => "stack",
            VDSO => "vdso",
            VVAR => "vvar",
            VVAR_VCLOCK => "vvar_vclock",
            VSYSCALL => "vsyscall",
            SYSV => "sysv-shm",
            AIO => "aio-ring",
            _ => "unknown",
        }
    }
}

/// `Vma::prot` bits (same values as PROT_*).
pub mod prot {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 4;
}

/// `Vma::flags` bits.
pub mod vma_flags {
    /// The mapped file was deleted (path ends in " (deleted)").
    pub const DELETED: u32 = 1 << 0;
    /// PROT_NONE guard region.
    pub const GUARD: u32 = 1 << 1;
    /// VM_GROWSDOWN.
    pub const GROWSDOWN: u32 = 1 << 2;
    /// VM_LOCKED.
    pub const LOCKED: u32 = 1 << 3;
    /// MADV_DONTFORK.
    pub const DONTFORK: u32 = 1 << 4;
    /// MADV_DONTDUMP.
    pub const DONTDUMP: u32 = 1 << 5;
    /// MADV_WIPEONFORK.
    pub const WIPEONFORK: u32 = 1 << 6;
    /// MADV_HUGEPAGE.
    pub const HUGEPAGE: u32 = 1 << 7;
    /// MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: u32 = 1 << 8;
}

/// `PageRun::flags` bits (11.15).
pub mod run_flags {
    /// The run's first page starts a block glibc's malloc mmapped for
    /// itself ([`super::malloc_mmapped_head`]). `realloc` grows such a
    /// block with mremap, which on a mapping of pages.img would bring in
    /// pages.img's next bytes, or SIGBUS past its end: a mapped restore
    /// copies that page, as it does a mapping's first, so that the block
    /// spans two VMAs, mremap fails (EFAULT) and glibc copies the block
    /// into a new one (`mapped::mapped_part`). Only DATA runs.
    pub const MALLOC_HEAD: u64 = 1;
}

/// Does this page (its first 16 bytes; at `addr`, in a mapping ending at
/// `end`) start a block glibc's malloc mmapped for itself? Its chunk
/// header: prev_size 0, then the size of the whole mapping it made (a
/// whole number of pages, within this one) with IS_MMAPPED (2) set and
/// neither PREV_INUSE nor NON_MAIN_ARENA. See `run_flags::MALLOC_HEAD`.
pub fn malloc_mmapped_head(page: &[u8], addr: u64, end: u64) -> bool {
    let word = |i: usize| {
        page.get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    match (word(0), word(8)) {
        (Some(0), Some(size)) => {
            size & (PAGE_SIZE - 1) == 2
                && size >= PAGE_SIZE
                && addr
                    .checked_add(size & !(PAGE_SIZE - 1))
                    .is_some_and(|e| e <= end)
        }
        _ => false,
    }
}

record! {
    /// One mapping (VMA) as in /proc/PID/maps + smaps.
    pub struct Vma {
        pub start: u64,
        pub end: u64,
        /// File offset in bytes (0 for anonymous mappings).
        pub pgoff: u64,
        /// `prot` bits.
        pub prot: u32,
        /// `vma_kind` value.
        pub kind: u32,
        /// `vma_flags` bits.
        pub flags: u32,
        /// Index into the files table, or NO_INDEX.
        pub file: u32,
        /// smaps VmFlags, as a bitset of `vmflag` positions.
        pub vmflags: u64,
        /// The maps path/name column (file path, `[heap]`, ...).
        pub name: StrRef,
        /// First page run of this VMA and how many (runs are in address order).
        pub first_run: u32,
        pub run_count: u32,
        /// Pages present or swapped at capture (whether dumped or not).
        pub resident_pages: u64,
        /// (11.17) Its own NUMA memory policy (mbind), as mbind takes it:
        /// the mode with its flags (MPOL_F_STATIC_NODES ...); 0 (the
        /// default) when it has none of its own.
        pub mempolicy: u32,
        pub _pad: u32,
        /// (11.17) The policy's nodes (nodes 0-63, one bit each).
        pub mempolicy_nodes: u64,
    }
}

/// A list of NUMA nodes as the kernel writes one ("0-3,6", "" for none)
/// as a mask of nodes 0-63; None past node 63 or for what is no list.
pub fn node_mask(list: &str) -> Option<u64> {
    let mut mask = 0u64;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
        if a > b || b > 63 {
            return None;
        }
        for n in a..=b {
            mask |= 1 << n;
        }
    }
    Some(mask)
}

/// A mapping's NUMA policy as /proc/PID/numa_maps words it ("local",
/// "bind:0-1", "interleave=static:0-3", "prefer (many):0,2", "weighted
/// interleave:1"): (mbind's mode with its flags, its nodes), `(0, 0)`
/// for "default"; None for what cryo cannot make again (an unknown word,
/// a node past 63).
pub fn parse_mempolicy(text: &str) -> Option<(u32, u64)> {
    let (head, nodes) = match text.split_once(':') {
        Some((h, n)) => (h, Some(n)),
        None => (text, None),
    };
    let (mode, flags) = match head.split_once('=') {
        Some((m, f)) => (m, Some(f)),
        None => (head, None),
    };
    let mode: u32 = match mode {
        "default" => 0,
        "prefer" => 1,
        "bind" => 2,
        "interleave" => 3,
        "local" => 4,
        "prefer (many)" => 5,
        "weighted interleave" => 6,
        _ => return None,
    };
    let mut bits = 0u32;
    for f in flags.into_iter().flat_map(|f| f.split('|')) {
        bits |= match f {
            "static" => 1 << 15,
            "relative" => 1 << 14,
            "balancing" => 1 << 13,
            _ => return None,
        };
    }
    let mask = node_mask(nodes.unwrap_or(""))?;
    if (mode == 0 || mode == 4) != (mask == 0) {
        return None;
    }
    Some((mode | bits, mask))
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn is_special(&self) -> bool {
        matches!(
            self.kind,
            vma_kind::VDSO | vma_kind::VVAR | vma_kind::VVAR_VCLOCK | vma_kind::VSYSCALL
        )
    }
}

/// The two-letter smaps VmFlags, in bit order of `Vma::vmflags`.
pub const VMFLAG_NAMES: [&str; 48] = [
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "dw", "lo", "io", "sr", "rr", "dc",
    "de", "ac", "nr", "ht", "sf", "nl", "ar", "wf", "dd", "sd", "mm", "hg", "nh", "mg", "um", "uw",
    "ss", "sl", "bt", "mt", "ui", "lf", "se", "pk", "p0", "p1", "p2", "p3", "p4", "gu", "dp", "",
];

/// What cryo does with each smaps VmFlag of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFlagRule {
    /// Follows from how the mapping is made (protection, sharing, the
    /// file, MAP_* flags): nothing to do.
    Derived,
    /// Set again by the shim (madvise, mlock, mseal, MAP_DROPPABLE).
    Restored,
    /// Cannot be brought back: capture refuses the mapping, saying why.
    Refused(&'static str),
}

/// The rule for a two-letter VmFlag (`special`: the kernel's own vDSO and
/// vvar mappings, which it recreates with whatever flags it gives them).
pub fn vmflag_rule(name: &str, special: bool) -> VmFlagRule {
    use VmFlagRule::*;
    if special {
        return Derived;
    }
    match name {
        "rd" | "wr" | "ex" | "sh" | "mr" | "mw" | "me" | "ms" | "gd" | "ac" | "nr" | "sd" => {
            Derived
        }
        "lo" | "lf" | "sr" | "rr" | "dc" | "dd" | "wf" | "hg" | "nh" | "mg" | "sl" | "dp" => {
            Restored
        }
        "ht" => Refused("hugetlb memory"),
        "pf" | "io" | "mm" | "ar" | "sf" => {
            Refused("device or DAX memory (VM_PFNMAP/VM_IO/VM_MIXEDMAP/VM_PAT/VM_SYNC)")
        }
        "de" => Refused(
            "a mapping that cannot be expanded (VM_DONTEXPAND: set up by a driver or an io ring)",
        ),
        "um" | "uw" | "ui" => Refused("registered with the program's own userfaultfd"),
        "ss" => Refused("a shadow stack"),
        "gu" => Refused("guard regions (MADV_GUARD_INSTALL)"),
        "pk" | "p0" | "p1" | "p2" | "p3" | "p4" => Refused("memory protection keys"),
        "bt" | "mt" | "se" => Refused("an architecture flag cryo does not know on x86_64"),
        _ => Refused("a flag this cryo does not know"),
    }
}

/// The `Vma::vmflags` mask of a two-letter VmFlag, computed at compile
/// time where `name` is a constant (`const LO: u64 = vmflag("lo")`); 0 for
/// a name this version does not know.
pub const fn vmflag(name: &str) -> u64 {
    let n = name.as_bytes();
    let mut i = 0;
    while i < VMFLAG_NAMES.len() {
        let f = VMFLAG_NAMES[i].as_bytes();
        if f.len() == 2 && n.len() == 2 && f[0] == n[0] && f[1] == n[1] {
            return 1 << i;
        }
        i += 1;
    }
    0
}

/// Bit position of a two-letter VmFlag, if known.
pub fn vmflag_bit(name: &str) -> Option<u32> {
    VMFLAG_NAMES
        .iter()
        .position(|n| !n.is_empty() && *n == name)
        .map(|p| p as u32)
}

/// `PageRun::kind` values.
pub mod run_kind {
    /// Page contents stored in pages.bin at `offset`.
    pub const DATA: u32 = 1;
    /// All-zero pages (present at capture, not stored).
    pub const ZERO: u32 = 2;
}

record! {
    /// A run of consecutive pages of one VMA.
    pub struct PageRun {
        pub vaddr: u64,
        pub npages: u32,
        /// `run_kind` value.
        pub kind: u32,
        /// Byte offset in pages.img (page aligned), for DATA runs.
        pub offset: u64,
        /// (11.15) `run_flags`. (Format 1.x: the xxh3-64 of the run's
        /// bytes; since 2.0 every page has its own checksum in sums.img,
        /// and this was 0 until 11.15.)
        pub flags: u64,
    }
}

record! {
    /// The xxh3-64 of one block of sums.img: [`SUMS_PER_BLOCK`] page
    /// checksums (4096 bytes; the last block may be shorter).
    pub struct SumBlock {
        pub checksum: u64,
    }
}

/// Page checksums per block of sums.img: one block covers 2 MiB of
/// pages.img, and is read and checked as a whole.
pub const SUMS_PER_BLOCK: u64 = 512;

/// Blocks of sums.img for a pages.img of `pages_len` bytes.
pub fn sum_blocks(pages_len: u64) -> u64 {
    (pages_len / PAGE_SIZE).div_ceil(SUMS_PER_BLOCK)
}

impl PageRun {
    pub fn len(&self) -> u64 {
        self.npages as u64 * PAGE_SIZE
    }
    pub fn is_empty(&self) -> bool {
        self.npages == 0
    }
}
