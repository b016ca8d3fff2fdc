//! cryo's on-disk image format.
//!
//! An image is a directory (mode 0700) holding three files (mode 0600):
//!
//! ```text
//!  IMAGE_DIR/
//!  ├── meta.img    header + section directory + tables (small)
//!  ├── pages.img   raw page contents, page aligned, no framing
//!  └── sums.img    xxh3-64 of each page of pages.img, 8 bytes per page
//!
//!  meta.img
//!  ┌──────────────────────────── header (64 bytes) ─────────────────────────┐
//!  │ magic "CRYOIMG\0" │ major u16 │ minor u16 │ header_size u32 │ nsect u32 │
//!  │ flags u32 │ meta_len u64 │ pages_len u64 │ dir_sum │ body_sum │ hdr_sum│
//!  ├──────────────── section directory: nsect × 32 bytes ───────────────────┤
//!  │ kind u32 │ record_size u32 │ count u64 │ offset u64 │ checksum u64      │
//!  ├──────────────── sections (8-byte aligned, in any order) ───────────────┤
//!  │ process │ vmas[] │ files[] │ page_runs[] │ page_sums[] │ strings ...  │
//!  └────────────────────────────────────────────────────────────────────────┘
//!
//!  pages.img: the DATA page runs back to back; run i starts at page_runs[i].offset
//! ```
//!
//! All integers are little-endian. Every section carries an xxh3-64 checksum,
//! the directory and the header carry their own; every page of `pages.img`
//! has its checksum in `sums.img`, and every 4 KiB block of `sums.img` (512
//! pages, 2 MiB of data) has its checksum in the `page_sums` section. So
//! meta.img grows with the number of mappings and page runs, not with the
//! heap, and one page can be checked on its own (a lazy restore's fault).
//!
//! **Compatibility rule.** `major` changes when an old reader could misread
//! the image: readers refuse any other major. `minor` grows when records gain
//! fields at their end or new section kinds appear: a reader accepts any minor,
//! ignores section kinds it does not know and record bytes past the fields it
//! knows, and refuses a section whose records are shorter than it needs.
//!
//! **Limits.** Readers refuse images larger than [`MAX_META_LEN`], more than
//! [`MAX_SECTIONS`] sections, and tables larger than each kind's
//! [`SectionKind::max_count`], before looking at their contents.
//!
//! The core is `no_std` and allocation-free so the restore shim parses exactly
//! what the capturer wrote; the `std` feature adds the writer and JSON.

#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod bpf;
mod error;
pub mod fds;
#[cfg(feature = "std")]
pub mod fork;
pub mod gadget;
pub mod handoff;
mod header;
mod image;
#[cfg(feature = "std")]
pub mod load;
pub mod mountinfo;
#[cfg(feature = "std")]
pub mod netlock;
pub mod pack;
pub mod record;
pub mod signals;
pub mod task;
pub mod threads;
pub mod tree;
pub mod types;
mod validate;
pub mod vdso;
#[cfg(feature = "std")]
pub mod verified;
#[cfg(any(feature = "std", test))]
pub mod write;

pub use error::ImageError;
pub use header::{DirEntry, Header};
pub use image::{Image, Table};
pub use record::{Field, Record};
pub use types::*;

/// File name of the metadata file inside an image directory.
pub const META_FILE: &str = "meta.img";
/// File name of the page-data file inside an image directory.
pub const PAGES_FILE: &str = "pages.img";
/// File name of the page checksums (format 2.0): the xxh3-64 of page i of
/// pages.img at byte 8 i, little-endian.
pub const SUMS_FILE: &str = "sums.img";

pub const MAGIC: [u8; 8] = *b"CRYOIMG\0";
pub const VERSION_MAJOR: u16 = 11;
pub const VERSION_MINOR: u16 = 17;
pub const HEADER_SIZE: usize = 64;
pub const DIR_ENTRY_SIZE: usize = 32;
pub const MAX_SECTIONS: usize = 64;
/// Largest meta.img a reader accepts (256 MiB).
pub const MAX_META_LEN: u64 = 256 << 20;
/// Largest pages.img a reader accepts (1 TiB).
pub const MAX_PAGES_LEN: u64 = 1 << 40;

/// The restore shim's fixed address window: the shim is linked at its start
/// and keeps its stack, the image tables and scratch space inside it. No
/// captured mapping may overlap it (restore refuses such an image).
pub const SHIM_WINDOW: u64 = 0x3f00_0000_0000;
/// Length of the shim window (4 GiB).
pub const SHIM_WINDOW_LEN: u64 = 1 << 32;
/// Where the shim maps the memory its last steps run in, after the window
/// is gone (right above the window; elsewhere if the program has memory
/// there): a process with an anonymous mapping of at most
/// [`RESTORING_MAX`] bytes starting here is still being restored.
pub const RESTORING_AT: u64 = SHIM_WINDOW + SHIM_WINDOW_LEN;
/// The largest such mapping (frames for 1 000 threads).
pub const RESTORING_MAX: u64 = 1 << 20;

/// xxh3-64, the checksum used throughout the format.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Block `k` of sums.img (its bytes within `sums`, possibly short or empty
/// if `sums` is).
pub fn sums_block(sums: &[u8], k: u64) -> &[u8] {
    let bs = (SUMS_PER_BLOCK * 8) as usize;
    let s = (k as usize).saturating_mul(bs).min(sums.len());
    let e = s.saturating_add(bs).min(sums.len());
    &sums[s..e]
}

/// Whether `bytes` (block `k` of sums.img) are what `b` records.
pub fn sum_block_ok(b: &SumBlock, bytes: &[u8]) -> bool {
    checksum(bytes) == b.checksum
}

/// The checksum recorded for page `i` of pages.img in `sums` (sums.img,
/// or any slice of it that starts at a block boundary, with `i` counted
/// from there).
pub fn page_sum(sums: &[u8], i: u64) -> Option<u64> {
    let s = (i as usize).checked_mul(8)?;
    sums.get(s..s.checked_add(8)?).map(u64::get)
}

#[cfg(test)]
mod tests;

/// Bytes of the xsave area in a signal frame for the state components of
/// `xcr0`, as this CPU lays them out (standard format): the end of the
/// component that ends last (CPUID leaf 0xD), at least the legacy area and
/// header (576). One CPUID per component: 5.7 µs each in this VM.
#[cfg(target_arch = "x86_64")]
pub fn frame_xsave_size(xcr0: u64) -> usize {
    let mut end = 576;
    for bit in 2..64u32 {
        if xcr0 & (1 << bit) != 0 {
            let r = core::arch::x86_64::__cpuid_count(0xd, bit);
            end = end.max(r.ebx as usize + r.eax as usize);
        }
    }
    end
}

/// XCR0's AMX tile data bit (18).
pub const XCR0_TILEDATA: u64 = 1 << 18;

/// The sigaltstack (ss_sp, ss_size, ss_flags) task `k` of `n` (0 the main
/// thread; `alt_of(j)`: task j's own) has for [`frame_top`]: its own, or
/// none (SS_DISABLE) where another task has the same one set. The shim
/// writes each task's frame and wait word at the top of its sigaltstack,
/// and two tasks there wrote over each other: threads that set one
/// sigaltstack each (a review) crashed on every restore.
pub fn unshared_alt(
    k: usize,
    n: usize,
    alt_of: impl Fn(usize) -> Option<(u64, u64, u32)>,
) -> (u64, u64, u32) {
    const SS_DISABLE: u32 = 2;
    let Some(alt) = alt_of(k) else {
        return (0, 0, SS_DISABLE);
    };
    let set = |a: (u64, u64, u32)| a.0 != 0 && a.2 & SS_DISABLE == 0;
    if !set(alt) {
        return alt;
    }
    let shared = (0..n)
        .filter(|&j| j != k)
        .filter_map(&alt_of)
        .any(|a| set(a) && a.0 == alt.0);
    if shared {
        (0, 0, SS_DISABLE)
    } else {
        alt
    }
}

/// Where the shim builds a thread's signal frame (the address it grows
/// down from): where the kernel would put a handler's frame for a
/// handler that runs on the alternate stack. On the thread's sigaltstack,
/// at its top, if one is set, large enough and the thread is not on it
/// already (and no other thread has it: `alt` comes from
/// `Image::frame_alt`); else below the red zone under the stack pointer. Not
/// simply the stack: Go runs goroutines on stacks of 2 KiB in its heap,
/// and a 3 KiB frame written below one overwrote the next goroutine's
/// stack (a restored Go program crashed: "unexpected return pc ... from
/// 0x0"). `alt` is (ss_sp, ss_size, ss_flags).
pub fn frame_top(rsp: u64, alt: (u64, u64, u32), xsave_size: u32) -> u64 {
    const SS_DISABLE: u32 = 2;
    let (ss_sp, ss_size, flags) = alt;
    // The frame, its xsave area, and below it the wait word and, for the
    // main thread, the wake-up frame: a few KiB beyond the xsave area.
    let need = xsave_size as u64 + 4096;
    let on_it = rsp.wrapping_sub(ss_sp) < ss_size;
    if flags & SS_DISABLE == 0 && ss_size >= need && !on_it && ss_sp != 0 {
        (ss_sp + ss_size) & !63
    } else {
        rsp - 128
    }
}
