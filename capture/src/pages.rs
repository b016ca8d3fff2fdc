//! Page dumping: which pages to store (pagemap), reading them in large
//! batches (process_vm_readv), and splitting them into DATA and ZERO runs.
//!
//! pagemap entry bits used: 63 present, 62 swapped, 61 "file page or shared
//! anon". CONFIG_MEM_SOFT_DIRTY is off on the target kernels, so for a
//! private file mapping a present page *without* bit 61 is what tells an
//! anonymous copy (written, or a COW-broken page) from a page that still
//! comes from the file: only those are stored.

use cryo_image::{run_flags, run_kind, PageRun, PAGE_SIZE};
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
    #[error("reading memory of pid {pid} at {addr:#x}: {source}: it is mapped from a cryo image's pages.img (a restore with --map), which was cut short or changed in place since; the pages it held are gone, and it cannot be captured")]
    ImageChanged {
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
    let n = crate::sys::process_vm_read(pid, addr, buf).unwrap_or(0);
    if n == buf.len() {
        return Ok(());
    }
    let f = File::open(format!("/proc/{pid}/mem"))?;
    f.read_exact_at(buf, addr)
}

/// /proc/PID/pagemap, opened once per capture.
pub struct Pagemap {
    pid: i32,
    file: File,
    raw: Vec<u8>,
}

impl Pagemap {
    pub fn open(pid: i32) -> Result<Self, MemError> {
        let file = File::open(format!("/proc/{pid}/pagemap"))
            .map_err(|source| MemError::Pagemap { pid, source })?;
        Ok(Pagemap {
            pid,
            file,
            raw: Vec::new(),
        })
    }

    /// The ranges of [start, end) that hold pages (present or swapped
    /// out), if the kernel can say (PAGEMAP_SCAN, Linux 6.7): a sparse
    /// mapping's pagemap is not read whole. AddressSanitizer's shadow
    /// memory is some 16 TiB with a few MiB in it: its pagemap, 32 GiB,
    /// kept a target frozen 21 s (a sweep of stop 50).
    pub fn holding(&self, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
        const MAX: usize = 4096;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = start;
        while at < end {
            let (ranges, walked) = crate::sys::pagemap_scan(&self.file, at, end, MAX).ok()?;
            let full = ranges.len() >= MAX;
            let last = ranges.last().map(|r| r.1);
            out.extend(ranges);
            // Fewer ranges than room for: the walk went through. (Its
            // walk_end is not to be trusted then: this kernel returned
            // every one of 1000 ranges with a walk_end 33 GB short, and a
            // second call gave 488 of them again: pages stored twice, an
            // image restore refused as corrupt; a review of stop 50.)
            if !full {
                break;
            }
            let next = walked.max(last.unwrap_or(at));
            if next <= at {
                return None;
            }
            at = next;
        }
        // In address order, none overlapping (whatever the kernel said).
        out.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            let (s, e) = (s.max(start), e.min(end));
            if s >= e {
                continue;
            }
            match merged.last_mut() {
                Some(l) if s <= l.1 => l.1 = l.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Some(merged)
    }

    /// The entries of the pages of [start, end), one per page.
    pub fn read(&mut self, start: u64, end: u64) -> Result<Vec<u64>, MemError> {
        let n = ((end - start) / PAGE_SIZE) as usize;
        self.raw.resize(n * 8, 0);
        let pid = self.pid;
        self.file
            .read_exact_at(&mut self.raw, (start / PAGE_SIZE) * 8)
            .map_err(|source| MemError::Pagemap { pid, source })?;
        Ok(self
            .raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
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

/// Whether the entry is an anonymous page shared copy-on-write (present,
/// not a file page, not exclusively mapped: pagemap bit 56).
pub fn cow_shared(entry: u64) -> bool {
    const PM_EXCLUSIVE: u64 = 1 << 56;
    entry & PM_PRESENT != 0 && entry & PM_FILE == 0 && entry & PM_EXCLUSIVE == 0
}

/// Read through /proc/PID/mem (opened once, on first use): the kernel
/// copies each page without pinning it. process_vm_readv pins the pages it
/// reads, and pinning an anonymous page shared copy-on-write (a forked
/// child's, its parent's) makes the kernel unshare it first: capturing a
/// tree of 4 processes sharing a 64 MiB heap grew their memory from 64 to
/// 257 MiB, and made capture copy every page (docs/pitfalls.md).
pub fn read_unpinned(
    mem: &mut Option<File>,
    pid: i32,
    addr: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    if mem.is_none() {
        *mem = Some(File::open(format!("/proc/{pid}/mem"))?);
    }
    match mem {
        Some(f) => f.read_exact_at(buf, addr),
        None => unreachable!("opened above"),
    }
}

/// The physical page of a present entry (0 when the kernel hides it from
/// a reader without CAP_SYS_ADMIN, or the page is not present).
pub fn pfn(entry: u64) -> u64 {
    if entry & PM_PRESENT == 0 {
        return 0;
    }
    entry & ((1 << 55) - 1)
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

/// Pages shared copy-on-write between a tree's processes (one physical
/// page, read-only in each since a fork), stored once: the physical page
/// → the process that stored it (its index, PID and the address it had
/// the page at) and the page's offset in the tree's pages.img.
///
/// Two rules keep a reference right. The physical page must still be the
/// one the storing process has at that address (compaction may have
/// moved it, and freed its frame for another page, since it was stored):
/// checked in that process's pagemap, frozen, before each reference. And
/// a process refers to an offset once (KSM may map one page at two of its
/// addresses; within one address space every page of pages.img stays one
/// address's, since the lazy page server tracks pages by offset), and
/// never to a page it stored itself.
#[derive(Default)]
pub struct CowPages {
    map: std::collections::HashMap<u64, StoredPage>,
    /// The process being dumped (its index in the tree).
    proc: usize,
    /// Offsets the process being dumped refers to already.
    referred: std::collections::HashSet<u64>,
    pagemaps: std::cell::RefCell<std::collections::HashMap<i32, File>>,
}

#[derive(Clone, Copy)]
struct StoredPage {
    proc: usize,
    pid: i32,
    vaddr: u64,
    offset: u64,
    /// It starts a block glibc's malloc mmapped for itself
    /// (`cryo_image::malloc_mmapped_head`).
    malloc_head: bool,
}

impl CowPages {
    /// The next process to dump: its index in the tree.
    pub fn start(&mut self, proc: usize) {
        self.proc = proc;
        self.referred.clear();
    }

    /// Where another process stored the physical page `pfn`, if one did
    /// and it still has that page there, and this process does not refer
    /// to that offset already.
    pub fn stored_elsewhere(&self, pfn: u64) -> Option<u64> {
        if pfn == 0 {
            return None;
        }
        let s = *self.map.get(&pfn)?;
        if s.proc == self.proc || self.referred.contains(&s.offset) {
            return None;
        }
        let mut pagemaps = self.pagemaps.borrow_mut();
        let f = match pagemaps.entry(s.pid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(format!("/proc/{}/pagemap", s.pid)).ok()?)
            }
        };
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, s.vaddr / PAGE_SIZE * 8).ok()?;
        (self::pfn(u64::from_le_bytes(b)) == pfn).then_some(s.offset)
    }

    /// This process refers to `offset` (see [`CowPages::stored_elsewhere`]).
    pub fn refer(&mut self, offset: u64) {
        self.referred.insert(offset);
    }

    /// The physical page `pfn`, at `vaddr` in process `pid`, is now stored
    /// at `offset`.
    pub fn note(&mut self, pfn: u64, pid: i32, vaddr: u64, offset: u64, malloc_head: bool) {
        if pfn != 0 {
            self.map.entry(pfn).or_insert(StoredPage {
                proc: self.proc,
                pid,
                vaddr,
                offset,
                malloc_head,
            });
        }
    }

    /// Whether the stored physical page `pfn` starts a block glibc's
    /// malloc mmapped (a page referred to, not read again).
    pub fn malloc_head(&self, pfn: u64) -> bool {
        self.map.get(&pfn).is_some_and(|s| s.malloc_head)
    }
}

/// Streams page runs: coalesces consecutive pages of one kind into runs
/// (as long as they go), and checksums every DATA page as it is appended
/// to pages.img through the page writer (sums.img, in file order).
pub struct RunBuilder {
    runs: Vec<PageRun>,
    cur: Option<PageRun>,
    /// xxh3-64 of each page of pages.img, in file order.
    sums: Vec<u64>,
    /// Offset in pages.img where this builder's pages start (a tree's
    /// processes share one pages.img, each after the one before).
    base: u64,
    pub stored_pages: u64,
    pub zero_pages: u64,
    /// Pages of pages.img that are not memory (pipe data, file contents).
    pub blob_pages: u64,
    /// DATA pages that refer to a page stored before (another process's,
    /// shared copy-on-write): in a run, not stored again.
    pub shared_pages: u64,
}

impl Default for RunBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RunBuilder {
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A builder whose first page goes to pages.img at `base`.
    pub fn starting_at(base: u64) -> Self {
        RunBuilder {
            runs: Vec::new(),
            cur: None,
            sums: Vec::new(),
            base,
            stored_pages: 0,
            zero_pages: 0,
            blob_pages: 0,
            shared_pages: 0,
        }
    }

    /// Where the next page appended to pages.img goes.
    fn next_offset(&self) -> u64 {
        self.base + (self.stored_pages + self.blob_pages) * PAGE_SIZE
    }

    /// Account for `bytes` (whole pages: pipe data, file contents) appended
    /// to pages.img at `offset`: their checksums go to sums.img.
    pub fn add_blob(&mut self, bytes: &[u8], offset: u64) {
        debug_assert_eq!(offset, self.next_offset());
        for page in bytes.chunks(PAGE_SIZE as usize) {
            self.sums.push(cryo_image::checksum(page));
            self.blob_pages += 1;
        }
    }

    /// Close the run in progress (call at every gap and VMA boundary).
    pub fn close(&mut self) {
        if let Some(r) = self.cur.take() {
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

    /// Add `pages` (page-aligned bytes read at `vaddr`), which sit in the
    /// page writer's buffer at file offset `offset` (the file's length so
    /// far). All-zero pages become ZERO runs and are squeezed out: the DATA
    /// pages are moved to the front of `pages`, and their number of bytes,
    /// to keep, is returned.
    pub fn add(&mut self, vaddr: u64, pages: &mut [u8], offset: u64) -> usize {
        self.add_each(vaddr, pages, offset, &[], |_, _| {})
    }

    /// [`RunBuilder::add`], telling `stored` where each page went: its
    /// index in `pages` and its offset in pages.img (None: a zero page).
    /// A page marked in `heads` starts a block glibc's malloc mmapped: a
    /// DATA run of its own begins there, flagged `run_flags::MALLOC_HEAD`.
    pub fn add_each(
        &mut self,
        vaddr: u64,
        pages: &mut [u8],
        offset: u64,
        heads: &[bool],
        mut stored: impl FnMut(usize, Option<u64>),
    ) -> usize {
        debug_assert_eq!(offset, self.next_offset());
        let ps = PAGE_SIZE as usize;
        let mut kept = 0usize;
        let mut i = 0;
        while i < pages.len() {
            let zero = is_zero(&pages[i..i + ps]);
            let kind = if zero { run_kind::ZERO } else { run_kind::DATA };
            let addr = vaddr + i as u64;
            let at = offset + kept as u64;
            let head = !zero && heads.get(i / ps).copied().unwrap_or(false);
            let contiguous = !head
                && matches!(&self.cur, Some(r)
                if r.kind == kind && r.vaddr + r.len() == addr && r.npages < u32::MAX
                    && (zero || r.offset + r.len() == at));
            if !contiguous {
                self.close();
                self.cur = Some(PageRun {
                    vaddr: addr,
                    npages: 0,
                    kind,
                    offset: if zero { 0 } else { offset + kept as u64 },
                    flags: if head { run_flags::MALLOC_HEAD } else { 0 },
                });
            }
            if let Some(r) = &mut self.cur {
                r.npages += 1;
                if zero {
                    self.zero_pages += 1;
                    stored(i / ps, None);
                } else {
                    stored(i / ps, Some(at));
                    if kept != i {
                        pages.copy_within(i..i + ps, kept);
                    }
                    self.sums
                        .push(cryo_image::checksum(&pages[kept..kept + ps]));
                    kept += ps;
                    self.stored_pages += 1;
                }
            }
            i += ps;
        }
        kept
    }

    /// A DATA page at `vaddr` whose bytes are already in pages.img at
    /// `offset` (the same physical page, stored for another process);
    /// `head`: it starts a block glibc's malloc mmapped.
    pub fn add_existing(&mut self, vaddr: u64, offset: u64, head: bool) {
        let contiguous = !head
            && matches!(&self.cur, Some(r)
            if r.kind == run_kind::DATA && r.vaddr + r.len() == vaddr
                && r.offset + r.len() == offset && r.npages < u32::MAX);
        if !contiguous {
            self.close();
            self.cur = Some(PageRun {
                vaddr,
                npages: 0,
                kind: run_kind::DATA,
                offset,
                flags: if head { run_flags::MALLOC_HEAD } else { 0 },
            });
        }
        if let Some(r) = &mut self.cur {
            r.npages += 1;
            self.shared_pages += 1;
        }
    }

    /// The runs, and the checksum of every stored page in pages.img order.
    pub fn finish(mut self) -> (Vec<PageRun>, Vec<u64>) {
        self.close();
        (self.runs, self.sums)
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

    /// Zero pages become ZERO runs and are squeezed out of the buffer;
    /// DATA runs keep their file offsets across calls, and every stored
    /// page gets its checksum, in file order.
    #[test]
    fn runs_squeeze_out_zero_pages() {
        let ps = PAGE_SIZE as usize;
        // 40 pages: page i holds byte i+1, except every 5th which is zero.
        let page = |i: usize| {
            vec![
                if i.is_multiple_of(5) {
                    0u8
                } else {
                    i as u8 + 1
                };
                ps
            ]
        };
        let all: Vec<u8> = (0..40).flat_map(page).collect();
        let mut rb = RunBuilder::new();
        let base = 0x10_0000u64;
        // Two calls, as two batches would be (the second continues the runs).
        let mut a = all[..24 * ps].to_vec();
        let kept_a = rb.add(base, &mut a, 0);
        let mut b = all[24 * ps..].to_vec();
        let kept_b = rb.add(base + 24 * PAGE_SIZE, &mut b, kept_a as u64);
        let mut file = a[..kept_a].to_vec();
        file.extend_from_slice(&b[..kept_b]);
        assert_eq!(rb.zero_pages, 8);
        assert_eq!(rb.stored_pages, 32);
        assert_eq!(file.len(), 32 * ps);
        let (runs, sums) = rb.finish();
        assert_eq!(sums.len(), 32);
        for (k, page) in file.chunks(ps).enumerate() {
            assert_eq!(sums[k], cryo_image::checksum(page));
        }
        let mut next = base;
        for r in &runs {
            assert_eq!(r.vaddr, next, "runs cover the range in order");
            next = r.vaddr + r.len();
            let first = ((r.vaddr - base) / PAGE_SIZE) as usize;
            if r.kind == run_kind::ZERO {
                assert!((first..first + r.npages as usize).all(|i| i.is_multiple_of(5)));
                continue;
            }
            let data = &file[r.offset as usize..(r.offset + r.len()) as usize];
            for k in 0..r.npages as usize {
                assert_eq!(data[k * ps..(k + 1) * ps], page(first + k)[..]);
            }
        }
        assert_eq!(next, base + 40 * PAGE_SIZE);
    }

    /// A long stretch of data is one run, however many batches it came in.
    #[test]
    fn data_runs_are_not_split() {
        let ps = PAGE_SIZE as usize;
        let mut rb = RunBuilder::new();
        let mut off = 0u64;
        for b in 0..3u64 {
            let mut buf = vec![7u8; 40 * ps];
            let kept = rb.add(0x20_0000 + b * 40 * PAGE_SIZE, &mut buf, off);
            off += kept as u64;
        }
        let (runs, sums) = rb.finish();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].npages, runs[0].offset), (120, 0));
        assert_eq!(sums.len(), 120);
    }

    /// A process dumped after another (its pages after the other's in
    /// pages.img) refers to the other's stored copy of a page shared
    /// copy-on-write: a run of its own at that offset, never joined to a
    /// run of pages it stores itself; contiguous references form one run.
    #[test]
    fn shared_pages_refer_to_the_stored_copy() {
        let ps = PAGE_SIZE as usize;
        let base = 10 * PAGE_SIZE;
        let mut rb = RunBuilder::starting_at(base);
        let mut buf = vec![1u8; 2 * ps];
        let mut noted = Vec::new();
        let kept = rb.add_each(0x40_0000, &mut buf, base, &[], |k, at| noted.push((k, at)));
        assert_eq!(kept, 2 * ps);
        assert_eq!(noted, vec![(0, Some(base)), (1, Some(base + PAGE_SIZE))]);
        rb.add_existing(0x40_2000, 3 * PAGE_SIZE, false);
        rb.add_existing(0x40_3000, 4 * PAGE_SIZE, false);
        rb.add_existing(0x40_5000, 9 * PAGE_SIZE, false);
        let mut buf = vec![2u8; ps];
        rb.add(0x40_6000, &mut buf, base + 2 * PAGE_SIZE);
        let (runs, sums) = rb.finish();
        let got: Vec<_> = runs.iter().map(|r| (r.vaddr, r.npages, r.offset)).collect();
        assert_eq!(
            got,
            vec![
                (0x40_0000, 2, base),
                (0x40_2000, 2, 3 * PAGE_SIZE),
                (0x40_5000, 1, 9 * PAGE_SIZE),
                (0x40_6000, 1, base + 2 * PAGE_SIZE),
            ]
        );
        assert_eq!(sums.len(), 3, "only stored pages have sums");
        // This process's own pagemap: a page it has, at its address.
        let page = vec![9u8; ps];
        let at = page.as_ptr() as u64;
        let mut pm = Pagemap::open(std::process::id() as i32).unwrap();
        let real = pfn(pm
            .read(at & !(PAGE_SIZE - 1), (at & !(PAGE_SIZE - 1)) + PAGE_SIZE)
            .unwrap()[0]);
        let mut c = CowPages::default();
        c.note(real, std::process::id() as i32, at, 5 * PAGE_SIZE, false);
        assert_eq!(c.stored_elsewhere(real), None, "not its own pages");
        c.start(1);
        if real != 0 {
            // (root: physical page numbers are visible)
            assert_eq!(c.stored_elsewhere(real), Some(5 * PAGE_SIZE));
            c.refer(5 * PAGE_SIZE);
            assert_eq!(c.stored_elsewhere(real), None, "one reference per process");
            c.start(2);
            assert_eq!(c.stored_elsewhere(real), Some(5 * PAGE_SIZE));
        }
        // A page that moved: the storing process has another there now.
        c.note(
            real ^ 1,
            std::process::id() as i32,
            at,
            6 * PAGE_SIZE,
            false,
        );
        assert_eq!(c.stored_elsewhere(real ^ 1), None);
        assert_eq!(c.stored_elsewhere(0), None);
    }
}
