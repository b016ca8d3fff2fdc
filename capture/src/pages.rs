//! Page dumping: which pages to store (pagemap), reading them in large
//! batches (process_vm_readv), and splitting them into DATA and ZERO runs.
//!
//! pagemap entry bits used: 63 present, 62 swapped, 61 "file page or shared
//! anon". CONFIG_MEM_SOFT_DIRTY is off on the target kernels, so for a
//! private file mapping a present page *without* bit 61 is what tells an
//! anonymous copy (written, or a COW-broken page) from a page that still
//! comes from the file: only those are stored.

use cryo_image::{run_kind, PageRun, PAGE_SIZE, RUN_MAX_PAGES};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Size of one batch read from the target (and of the reused buffer).
pub const BATCH: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error("reading pagemap of pid {pid}: {source}")]
    Pagemap { pid: i32, source: io::Error },
    #[error("reading memory of pid {pid} at {addr:#x}: {source}")]
    Read {
        pid: i32,
        addr: u64,
        source: io::Error,
    },
    #[error("writing pages: {0}")]
    Write(#[from] crate::writer::WriteError),
}

/// Read `buf.len()` bytes at `addr` of `pid`: process_vm_readv, or
/// /proc/PID/mem for what it refuses (PROT_NONE, unreadable mappings).
pub fn read_remote(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most local.iov_len bytes into `buf`,
    // which we own mutably; `remote` names memory of another process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        return Ok(());
    }
    let f = File::open(format!("/proc/{pid}/mem"))?;
    f.read_exact_at(buf, addr)
}

/// Which pages of [start, end) to dump, as one entry per page.
pub fn pagemap(pid: i32, start: u64, end: u64) -> Result<Vec<u64>, MemError> {
    let n = ((end - start) / PAGE_SIZE) as usize;
    let mut raw = vec![0u8; n * 8];
    let f = File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|source| MemError::Pagemap { pid, source })?;
    f.read_exact_at(&mut raw, (start / PAGE_SIZE) * 8)
        .map_err(|source| MemError::Pagemap { pid, source })?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Whether a page must be dumped. `private_file`: a private file mapping,
/// where only anonymous copies are stored.
pub fn wanted(entry: u64, private_file: bool) -> bool {
    if entry & PM_SWAPPED != 0 {
        return true;
    }
    if entry & PM_PRESENT == 0 {
        return false;
    }
    !private_file || entry & PM_FILE == 0
}

/// Whether the entry is present or swapped (counted as resident).
pub fn resident(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAPPED) != 0
}

/// True if every byte is zero (vectorises; checks the first 64 bytes first
/// so most non-zero pages are rejected early).
pub fn is_zero(page: &[u8]) -> bool {
    let fold = |b: &[u8]| {
        b.chunks_exact(16).fold(0u128, |acc, c| {
            acc | u128::from_ne_bytes(c.try_into().unwrap_or([1; 16]))
        })
    };
    fold(&page[..64]) == 0 && fold(page) == 0
}

/// Streams page runs: coalesces consecutive pages of one kind, appends DATA
/// to pages.img through `sink`, and checksums each run as it grows.
pub struct RunBuilder {
    runs: Vec<PageRun>,
    cur: Option<(PageRun, xxhash_rust::xxh3::Xxh3)>,
    pub stored_pages: u64,
    pub zero_pages: u64,
}

impl Default for RunBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RunBuilder {
    pub fn new() -> Self {
        RunBuilder {
            runs: Vec::new(),
            cur: None,
            stored_pages: 0,
            zero_pages: 0,
        }
    }

    /// Close the run in progress (call at every gap and VMA boundary).
    pub fn close(&mut self) {
        if let Some((mut r, h)) = self.cur.take() {
            if r.kind == run_kind::DATA {
                r.checksum = h.digest();
            }
            self.runs.push(r);
        }
    }

    /// Number of runs closed so far.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Add `pages` (page-aligned bytes at `vaddr`), already read.
    pub fn add(
        &mut self,
        vaddr: u64,
        pages: &[u8],
        sink: &mut crate::writer::ImageDirWriter,
    ) -> Result<(), MemError> {
        let ps = PAGE_SIZE as usize;
        let mut i = 0;
        while i < pages.len() {
            // Longest stretch of one kind starting at i.
            let zero = is_zero(&pages[i..i + ps]);
            let mut j = i + ps;
            while j < pages.len() && is_zero(&pages[j..j + ps]) == zero {
                j += ps;
            }
            let kind = if zero { run_kind::ZERO } else { run_kind::DATA };
            // DATA runs end every RUN_MAX_PAGES pages, so that a lazy
            // restore can verify and serve them piece by piece.
            let mut k = i;
            while k < j {
                let addr = vaddr + k as u64;
                let contiguous = matches!(&self.cur, Some((r, _))
                    if r.kind == kind && r.vaddr + r.len() == addr
                        && (zero || r.npages < RUN_MAX_PAGES));
                if !contiguous {
                    self.close();
                }
                let have = match &self.cur {
                    Some((r, _)) if contiguous => r.npages,
                    _ => 0,
                };
                let room = if zero {
                    usize::MAX
                } else {
                    (RUN_MAX_PAGES - have) as usize * ps
                };
                let end = j.min(k.saturating_add(room));
                let npages = ((end - k) / ps) as u32;
                let offset = if zero {
                    0
                } else {
                    sink.append_pages(&pages[k..end])?
                };
                if zero {
                    self.zero_pages += npages as u64;
                } else {
                    self.stored_pages += npages as u64;
                }
                match &mut self.cur {
                    Some((r, h)) if contiguous => {
                        r.npages += npages;
                        if !zero {
                            h.update(&pages[k..end]);
                        }
                    }
                    _ => {
                        let mut h = xxhash_rust::xxh3::Xxh3::new();
                        if !zero {
                            h.update(&pages[k..end]);
                        }
                        self.cur = Some((
                            PageRun {
                                vaddr: addr,
                                npages,
                                kind,
                                offset,
                                checksum: 0,
                            },
                            h,
                        ));
                    }
                }
                k = end;
            }
            i = j;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Vec<PageRun> {
        self.close();
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        p[4095] = 0;
        p[3] = 1;
        assert!(!is_zero(&p));
    }

    #[test]
    fn wanted_pages() {
        assert!(!wanted(0, false));
        assert!(wanted(PM_PRESENT, false));
        assert!(wanted(PM_PRESENT | PM_FILE, false));
        assert!(!wanted(PM_PRESENT | PM_FILE, true));
        assert!(wanted(PM_PRESENT, true));
        assert!(wanted(PM_SWAPPED, true));
    }

    #[test]
    fn streaming_checksum_equals_oneshot() {
        let a = vec![3u8; 8192];
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&a[..4096]);
        h.update(&a[4096..]);
        assert_eq!(h.digest(), cryo_image::checksum(&a));
    }
}
