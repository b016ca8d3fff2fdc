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

pub mod fds;
pub mod gadget;
pub mod handoff;
#[cfg(feature = "std")]
pub mod load;
pub mod record;
pub mod signals;
pub mod task;
pub mod threads;
pub mod types;
#[cfg(any(feature = "std", test))]
pub mod write;

pub use record::{Field, Record};
pub use types::*;

use core::fmt;

/// File name of the metadata file inside an image directory.
pub const META_FILE: &str = "meta.img";
/// File name of the page-data file inside an image directory.
pub const PAGES_FILE: &str = "pages.img";
/// File name of the page checksums (format 2.0): the xxh3-64 of page i of
/// pages.img at byte 8 i, little-endian.
pub const SUMS_FILE: &str = "sums.img";

pub const MAGIC: [u8; 8] = *b"CRYOIMG\0";
pub const VERSION_MAJOR: u16 = 3;
pub const VERSION_MINOR: u16 = 0;
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

/// xxh3-64, the checksum used throughout the format.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Why an image was refused. Every variant is a complete one-line reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort {
        len: u64,
    },
    BadMagic,
    UnsupportedVersion {
        major: u16,
        minor: u16,
    },
    BadHeader(&'static str),
    HeaderChecksum,
    DirectoryChecksum,
    BodyChecksum,
    LengthMismatch {
        header: u64,
        actual: u64,
    },
    TooLarge {
        len: u64,
    },
    TooManySections {
        count: u32,
    },
    SectionOutOfBounds {
        kind: u32,
    },
    SectionMisaligned {
        kind: u32,
    },
    DuplicateSection {
        kind: u32,
    },
    MissingSection(&'static str),
    RecordTooShort {
        section: &'static str,
        size: u32,
        need: u32,
    },
    TooManyRecords {
        section: &'static str,
        count: u64,
    },
    SectionChecksum(&'static str),
    BadString {
        section: &'static str,
        index: u64,
    },
    BadVma {
        index: u64,
        why: &'static str,
    },
    BadPageRun {
        index: u64,
        why: &'static str,
    },
    BadIndex {
        section: &'static str,
        index: u64,
        why: &'static str,
    },
    PagesLength {
        expected: u64,
        actual: u64,
    },
    PageChecksum {
        vaddr: u64,
    },
    BlobChecksum {
        offset: u64,
    },
    SumsLength {
        expected: u64,
        actual: u64,
    },
    SumsChecksum {
        block: u64,
    },
    Invalid(&'static str),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match *self {
            TooShort { len } => write!(f, "truncated image: meta.img is {len} bytes, shorter than its header"),
            BadMagic => write!(f, "not a cryo image (bad magic in meta.img)"),
            UnsupportedVersion { major, minor } => write!(
                f,
                "image format {major}.{minor} is not readable by this cryo (reads {VERSION_MAJOR}.x); capture again with this version"
            ),
            BadHeader(why) => write!(f, "corrupt image header: {why}"),
            HeaderChecksum => write!(f, "corrupt image: header checksum mismatch"),
            DirectoryChecksum => write!(f, "corrupt image: section directory checksum mismatch"),
            BodyChecksum => write!(f, "corrupt image: meta.img checksum mismatch"),
            LengthMismatch { header, actual } => write!(
                f,
                "truncated or extended image: header says meta.img is {header} bytes, it is {actual}"
            ),
            TooLarge { len } => write!(f, "image too large: meta.img is {len} bytes (limit {MAX_META_LEN})"),
            TooManySections { count } => write!(f, "corrupt image: {count} sections (limit {MAX_SECTIONS})"),
            SectionOutOfBounds { kind } => write!(f, "corrupt image: section {kind} lies outside meta.img"),
            SectionMisaligned { kind } => write!(f, "corrupt image: section {kind} is not 8-byte aligned"),
            DuplicateSection { kind } => write!(f, "corrupt image: section {kind} appears twice"),
            MissingSection(s) => write!(f, "corrupt image: required section '{s}' is missing"),
            RecordTooShort { section, size, need } => write!(
                f,
                "image section '{section}' has {size}-byte records, this cryo needs at least {need}"
            ),
            TooManyRecords { section, count } => write!(f, "corrupt image: section '{section}' has {count} records, over its limit"),
            SectionChecksum(s) => write!(f, "corrupt image: checksum mismatch in section '{s}'"),
            BadString { section, index } => write!(f, "corrupt image: string reference out of range in '{section}' record {index}"),
            BadVma { index, why } => write!(f, "corrupt image: mapping {index}: {why}"),
            BadPageRun { index, why } => write!(f, "corrupt image: page run {index}: {why}"),
            BadIndex { section, index, why } => write!(f, "corrupt image: '{section}' record {index}: {why}"),
            PagesLength { expected, actual } => write!(
                f,
                "truncated image: pages.img is {actual} bytes, the image needs {expected}"
            ),
            PageChecksum { vaddr } => write!(f, "corrupt image: pages.img data for the page at {vaddr:#x} fails its checksum"),
            BlobChecksum { offset } => write!(f, "corrupt image: pages.img bytes at offset {offset:#x} (pipe data or file contents) fail their checksum"),
            SumsLength { expected, actual } => write!(
                f,
                "truncated image: sums.img is {actual} bytes, the image needs {expected}"
            ),
            SumsChecksum { block } => write!(f, "corrupt image: sums.img block {block} fails its checksum"),
            Invalid(why) => write!(f, "corrupt image: {why}"),
        }
    }
}

#[cfg(any(feature = "std", test))]
impl std::error::Error for ImageError {}

/// The fixed header at the start of meta.img.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub section_count: u32,
    pub flags: u32,
    pub meta_len: u64,
    pub pages_len: u64,
    pub dir_checksum: u64,
    /// Checksum of everything after the header (directory, sections, padding).
    pub body_checksum: u64,
}

impl Header {
    /// Encode into 64 bytes, computing the header checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        self.major.put(&mut b[8..]);
        self.minor.put(&mut b[10..]);
        (HEADER_SIZE as u32).put(&mut b[12..]);
        self.section_count.put(&mut b[16..]);
        self.flags.put(&mut b[20..]);
        self.meta_len.put(&mut b[24..]);
        self.pages_len.put(&mut b[32..]);
        self.dir_checksum.put(&mut b[40..]);
        self.body_checksum.put(&mut b[48..]);
        let sum = checksum(&b[..56]);
        sum.put(&mut b[56..]);
        b
    }
}

/// One section directory entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirEntry {
    pub kind: u32,
    pub record_size: u32,
    pub count: u64,
    pub offset: u64,
    pub checksum: u64,
}

impl DirEntry {
    pub fn encode(&self, out: &mut [u8]) {
        self.kind.put(&mut out[0..]);
        self.record_size.put(&mut out[4..]);
        self.count.put(&mut out[8..]);
        self.offset.put(&mut out[16..]);
        self.checksum.put(&mut out[24..]);
    }
    pub fn decode(b: &[u8]) -> Self {
        DirEntry {
            kind: u32::get(&b[0..]),
            record_size: u32::get(&b[4..]),
            count: u64::get(&b[8..]),
            offset: u64::get(&b[16..]),
            checksum: u64::get(&b[24..]),
        }
    }
}

/// A typed, bounds-checked view of one table.
#[derive(Clone, Copy)]
pub struct Table<'a, T: Record> {
    bytes: &'a [u8],
    stride: usize,
    count: usize,
    _t: core::marker::PhantomData<T>,
}

impl<'a, T: Record> Table<'a, T> {
    fn empty() -> Self {
        Table {
            bytes: &[],
            stride: T::SIZE.max(1),
            count: 0,
            _t: core::marker::PhantomData,
        }
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.count {
            return None;
        }
        Some(T::decode(&self.bytes[i * self.stride..]))
    }
    pub fn iter(&self) -> impl Iterator<Item = T> + 'a {
        let t = *self;
        (0..t.count).map(move |i| T::decode(&t.bytes[i * t.stride..]))
    }
}

/// A parsed, checksum-verified image (borrowing meta.img's bytes).
#[derive(Clone, Copy)]
pub struct Image<'a> {
    pub header: Header,
    bytes: &'a [u8],
    sections: [Option<DirEntry>; 32],
}

impl<'a> Image<'a> {
    /// Parse meta.img: header, directory, section bounds, record sizes and
    /// every checksum. Call [`Image::validate`] next for semantic checks.
    pub fn parse(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        Self::parse_with(bytes, true)
    }

    /// Parse bytes that [`Image::parse`] has accepted before and that
    /// cannot have changed since (an owned, immutable copy): every
    /// structural check, no checksums. A multi-megabyte page-run table is
    /// not hashed again each time the image is looked at.
    pub fn parse_verified(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        Self::parse_with(bytes, false)
    }

    fn parse_with(bytes: &'a [u8], sums: bool) -> Result<Image<'a>, ImageError> {
        let len = bytes.len() as u64;
        if bytes.len() >= 8 && bytes[0..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if bytes.len() < HEADER_SIZE {
            return Err(ImageError::TooShort { len });
        }
        let major = u16::get(&bytes[8..]);
        let minor = u16::get(&bytes[10..]);
        if major != VERSION_MAJOR {
            return Err(ImageError::UnsupportedVersion { major, minor });
        }
        if sums && checksum(&bytes[..56]) != u64::get(&bytes[56..]) {
            return Err(ImageError::HeaderChecksum);
        }
        let header_size = u32::get(&bytes[12..]) as usize;
        if !(HEADER_SIZE..=4096).contains(&header_size) {
            return Err(ImageError::BadHeader("header size out of range"));
        }
        let header = Header {
            major,
            minor,
            section_count: u32::get(&bytes[16..]),
            flags: u32::get(&bytes[20..]),
            meta_len: u64::get(&bytes[24..]),
            pages_len: u64::get(&bytes[32..]),
            dir_checksum: u64::get(&bytes[40..]),
            body_checksum: u64::get(&bytes[48..]),
        };
        if header.meta_len > MAX_META_LEN {
            return Err(ImageError::TooLarge {
                len: header.meta_len,
            });
        }
        if header.meta_len != len {
            return Err(ImageError::LengthMismatch {
                header: header.meta_len,
                actual: len,
            });
        }
        if header.pages_len > MAX_PAGES_LEN || !header.pages_len.is_multiple_of(PAGE_SIZE) {
            return Err(ImageError::BadHeader("pages length not a page multiple"));
        }
        let n = header.section_count as usize;
        if n > MAX_SECTIONS {
            return Err(ImageError::TooManySections {
                count: header.section_count,
            });
        }
        let dir_end = header_size + n * DIR_ENTRY_SIZE;
        if dir_end > bytes.len() {
            return Err(ImageError::TooShort { len });
        }
        if sums && checksum(&bytes[header_size..]) != header.body_checksum {
            return Err(ImageError::BodyChecksum);
        }
        let dir = &bytes[header_size..dir_end];
        if sums && checksum(dir) != header.dir_checksum {
            return Err(ImageError::DirectoryChecksum);
        }
        let mut sections: [Option<DirEntry>; 32] = [None; 32];
        for i in 0..n {
            let e = DirEntry::decode(&dir[i * DIR_ENTRY_SIZE..]);
            let Some(kind) = SectionKind::from_u32(e.kind) else {
                continue; // unknown kind: a newer minor version; skip it
            };
            let slot = &mut sections[e.kind as usize];
            if slot.is_some() {
                return Err(ImageError::DuplicateSection { kind: e.kind });
            }
            if !e.offset.is_multiple_of(8) {
                return Err(ImageError::SectionMisaligned { kind: e.kind });
            }
            let need = kind.known_record_size() as u32;
            if e.record_size < need || e.record_size == 0 {
                return Err(ImageError::RecordTooShort {
                    section: kind.name(),
                    size: e.record_size,
                    need,
                });
            }
            if e.count > kind.max_count() {
                return Err(ImageError::TooManyRecords {
                    section: kind.name(),
                    count: e.count,
                });
            }
            let size = e
                .count
                .checked_mul(e.record_size as u64)
                .ok_or(ImageError::SectionOutOfBounds { kind: e.kind })?;
            let end = e
                .offset
                .checked_add(size)
                .ok_or(ImageError::SectionOutOfBounds { kind: e.kind })?;
            if e.offset < dir_end as u64 || end > len {
                return Err(ImageError::SectionOutOfBounds { kind: e.kind });
            }
            if sums && checksum(&bytes[e.offset as usize..end as usize]) != e.checksum {
                return Err(ImageError::SectionChecksum(kind.name()));
            }
            *slot = Some(e);
        }
        for kind in SectionKind::ALL {
            if kind.required() && sections[kind as usize].is_none() {
                return Err(ImageError::MissingSection(kind.name()));
            }
        }
        if sections[SectionKind::Process as usize].map(|e| e.count) != Some(1) {
            return Err(ImageError::Invalid("process section must hold one record"));
        }
        Ok(Image {
            header,
            bytes,
            sections,
        })
    }

    fn section_bytes(&self, kind: SectionKind) -> Option<(&'a [u8], DirEntry)> {
        let e = self.sections[kind as usize]?;
        let start = e.offset as usize;
        let end = start + (e.count as usize) * (e.record_size as usize);
        Some((&self.bytes[start..end], e))
    }

    /// A table of records (empty if the section is absent).
    pub fn table<T: Record>(&self, kind: SectionKind) -> Table<'a, T> {
        match self.section_bytes(kind) {
            Some((b, e)) => Table {
                bytes: b,
                stride: e.record_size as usize,
                count: e.count as usize,
                _t: core::marker::PhantomData,
            },
            None => Table::empty(),
        }
    }

    /// A byte-blob section (empty if absent).
    pub fn blob(&self, kind: SectionKind) -> &'a [u8] {
        self.section_bytes(kind).map(|(b, _)| b).unwrap_or(&[])
    }

    pub fn process(&self) -> Process {
        // parse() checked the section holds exactly one record.
        self.table::<Process>(SectionKind::Process)
            .get(0)
            .unwrap_or_default()
    }
    pub fn vmas(&self) -> Table<'a, Vma> {
        self.table(SectionKind::Vmas)
    }
    pub fn files(&self) -> Table<'a, FileId> {
        self.table(SectionKind::Files)
    }
    /// One checksum per block of sums.img (format 2.0).
    pub fn page_sums(&self) -> Table<'a, SumBlock> {
        self.table(SectionKind::PageSums)
    }
    pub fn page_runs(&self) -> Table<'a, PageRun> {
        self.table(SectionKind::PageRuns)
    }
    /// The main thread's xsave area (the section holds every thread's).
    pub fn xsave(&self) -> &'a [u8] {
        let x = self.blob(SectionKind::Xsave);
        let n = (self.process().xsave_size as usize).min(x.len());
        &x[..n]
    }
    pub fn auxv(&self) -> Table<'a, AuxvEntry> {
        self.table(SectionKind::Auxv)
    }
    pub fn sigactions(&self) -> Table<'a, SigAction> {
        self.table(SectionKind::SigActions)
    }
    pub fn rlimits(&self) -> Table<'a, Rlimit> {
        self.table(SectionKind::Rlimits)
    }
    pub fn fds(&self) -> Table<'a, Fd> {
        self.table(SectionKind::Fds)
    }
    pub fn timers(&self) -> Table<'a, PosixTimer> {
        self.table(SectionKind::Timers)
    }
    pub fn itimers(&self) -> Table<'a, Itimer> {
        self.table(SectionKind::Itimers)
    }

    pub fn pipes(&self) -> Table<'a, fds::Pipe> {
        self.table(SectionKind::Pipes)
    }
    pub fn extents(&self) -> Table<'a, fds::Extent> {
        self.table(SectionKind::Extents)
    }
    pub fn locks(&self) -> Table<'a, fds::Lock> {
        self.table(SectionKind::Locks)
    }
    pub fn creds(&self) -> Option<task::Creds> {
        self.table::<task::Creds>(SectionKind::Creds).get(0)
    }
    pub fn groups(&self) -> Table<'a, task::Group> {
        self.table(SectionKind::Groups)
    }
    pub fn task(&self) -> Option<task::TaskState> {
        self.table::<task::TaskState>(SectionKind::Task).get(0)
    }
    pub fn signals(&self) -> Table<'a, signals::QueuedSignal> {
        self.table(SectionKind::Signals)
    }
    pub fn inotify(&self) -> Table<'a, fds::InotifyWatch> {
        self.table(SectionKind::Inotify)
    }
    pub fn fanotify(&self) -> Table<'a, fds::FanotifyGroup> {
        self.table(SectionKind::Fanotify)
    }
    pub fn fanotify_marks(&self) -> Table<'a, fds::FanotifyMark> {
        self.table(SectionKind::FanotifyMarks)
    }
    pub fn eventfds(&self) -> Table<'a, fds::EventFd> {
        self.table(SectionKind::EventFds)
    }
    pub fn timerfds(&self) -> Table<'a, fds::TimerFd> {
        self.table(SectionKind::TimerFds)
    }
    pub fn signalfds(&self) -> Table<'a, fds::SignalFd> {
        self.table(SectionKind::SignalFds)
    }
    pub fn epoll_items(&self) -> Table<'a, fds::EpollItem> {
        self.table(SectionKind::EpollItems)
    }
    pub fn threads(&self) -> Table<'a, threads::Thread> {
        self.table(SectionKind::Threads)
    }

    /// The xsave area of thread `k` (0: the main thread, k + 1: the k-th
    /// entry of the threads table).
    pub fn xsave_of(&self, k: usize) -> &'a [u8] {
        let n = self.process().xsave_size as usize;
        let x = self.blob(SectionKind::Xsave);
        x.get(k * n..(k + 1) * n).unwrap_or(&[])
    }

    /// Every blob of pages.img that is not memory (pipe data, file
    /// contents), for checking.
    pub fn blobs(&self) -> impl Iterator<Item = fds::Blob> + 'a {
        let pipes = self.pipes();
        let ext = self.extents();
        pipes
            .iter()
            .map(|p| p.data)
            .chain(ext.iter().map(|e| e.data))
            .filter(|b| b.len > 0)
    }

    /// The restore gadgets, if the capture found them (format 1.1+).
    pub fn gadgets(&self) -> Option<Gadgets> {
        self.table::<Gadgets>(SectionKind::Gadgets).get(0)
    }

    /// Resolve a string reference (None if absent or invalid).
    pub fn str(&self, r: StrRef) -> Option<&'a str> {
        if r.is_none() {
            return None;
        }
        let s = self.blob(SectionKind::Strings);
        let start = r.off as usize;
        let end = start.checked_add(r.len as usize)?;
        core::str::from_utf8(s.get(start..end)?).ok()
    }

    fn check_str(&self, r: StrRef, section: &'static str, index: usize) -> Result<(), ImageError> {
        if r.is_none() || self.str(r).is_some() {
            Ok(())
        } else {
            Err(ImageError::BadString {
                section,
                index: index as u64,
            })
        }
    }

    /// Semantic checks the shim relies on: mappings sorted, page aligned and
    /// disjoint; page runs inside their mapping and inside pages.img; indices
    /// and strings in range. Allocation-free and linear in the image size.
    pub fn validate(&self) -> Result<(), ImageError> {
        let p = self.process();
        let files = self.files();
        let runs = self.page_runs();
        let nfiles = files.len() as u32;
        self.check_str(p.exe, "process", 0)?;
        self.check_str(p.cwd, "process", 0)?;
        self.check_str(p.kernel, "process", 0)?;
        if p.exe_file != NO_INDEX && p.exe_file >= nfiles {
            return Err(ImageError::BadIndex {
                section: "process",
                index: 0,
                why: "executable file index out of range",
            });
        }
        let areas = 1 + self.threads().len();
        if (p.xsave_size as usize).checked_mul(areas) != Some(self.blob(SectionKind::Xsave).len()) {
            return Err(ImageError::Invalid(
                "xsave section is not one area of xsave_size per thread",
            ));
        }
        if p.xsave_size < 576 {
            return Err(ImageError::Invalid(
                "xsave area smaller than the legacy 576 bytes",
            ));
        }
        for (i, f) in files.iter().enumerate() {
            self.check_str(f.path, "files", i)?;
        }
        let mut prev_end = 0u64;
        let mut next_run = 0u64;
        for (i, v) in self.vmas().iter().enumerate() {
            let bad = |why| ImageError::BadVma {
                index: i as u64,
                why,
            };
            if !v.start.is_multiple_of(PAGE_SIZE) || !v.end.is_multiple_of(PAGE_SIZE) {
                return Err(bad("not page aligned"));
            }
            if v.end <= v.start {
                return Err(bad("empty or inverted range"));
            }
            if v.start < prev_end {
                return Err(bad("overlaps or is out of order"));
            }
            // vsyscall lives in the kernel half; everything else must be user space.
            if v.kind != vma_kind::VSYSCALL && v.end > 0x0000_8000_0000_0000 {
                return Err(bad("outside user space"));
            }
            prev_end = v.end;
            if v.file != NO_INDEX && v.file >= nfiles {
                return Err(bad("file index out of range"));
            }
            self.check_str(v.name, "vmas", i)?;
            if v.first_run as u64 != next_run {
                return Err(bad("page runs not in order"));
            }
            let last = v.first_run as u64 + v.run_count as u64;
            if last > runs.len() as u64 {
                return Err(bad("page run range out of bounds"));
            }
            next_run = last;
            let mut run_prev = v.start;
            for j in v.first_run as usize..last as usize {
                let r = runs.get(j).ok_or(bad("page run missing"))?;
                let rbad = |why| ImageError::BadPageRun {
                    index: j as u64,
                    why,
                };
                if r.npages == 0 || !r.vaddr.is_multiple_of(PAGE_SIZE) {
                    return Err(rbad("empty or unaligned"));
                }
                let rend = r
                    .vaddr
                    .checked_add(r.len())
                    .ok_or(rbad("address overflow"))?;
                if r.vaddr < run_prev || rend > v.end {
                    return Err(rbad("outside its mapping or out of order"));
                }
                run_prev = rend;
                match r.kind {
                    run_kind::DATA => {
                        let e = r
                            .offset
                            .checked_add(r.len())
                            .ok_or(rbad("offset overflow"))?;
                        if !r.offset.is_multiple_of(PAGE_SIZE) || e > self.header.pages_len {
                            return Err(rbad("data outside pages.img"));
                        }
                    }
                    run_kind::ZERO => {}
                    _ => return Err(rbad("unknown kind")),
                }
            }
        }
        if next_run != runs.len() as u64 {
            return Err(ImageError::Invalid("page runs not owned by any mapping"));
        }
        if self.page_sums().len() as u64 != sum_blocks(self.header.pages_len) {
            return Err(ImageError::Invalid(
                "page_sums does not cover pages.img (one block per 2 MiB)",
            ));
        }
        for (i, a) in self.sigactions().iter().enumerate() {
            if a.signo == 0 || a.signo > 64 {
                return Err(ImageError::BadIndex {
                    section: "sigactions",
                    index: i as u64,
                    why: "signal number out of range",
                });
            }
        }
        if let Some(g) = self.gadgets() {
            // Each inside one executable mapping (the shim jumps there).
            for (addr, len) in [
                (g.syscall_ret, gadget::SYSCALL_RET_MAX),
                (g.sigreturn, gadget::SIGRETURN_MAX),
            ] {
                let inside = self.vmas().iter().any(|v| {
                    v.prot & prot::EXEC != 0
                        && v.kind != vma_kind::VSYSCALL
                        && addr >= v.start
                        && addr.saturating_add(len as u64) <= v.end
                });
                if !inside {
                    return Err(ImageError::BadIndex {
                        section: "gadgets",
                        index: 0,
                        why: "address outside an executable mapping",
                    });
                }
            }
        }
        let fdt = self.fds();
        let npipes = self.pipes().len() as u32;
        for (i, f) in fdt.iter().enumerate() {
            self.check_str(f.target, "fds", i)?;
            let bad = |why| ImageError::BadIndex {
                section: "fds",
                index: i as u64,
                why,
            };
            if f.fd < 0 || (f.file != NO_INDEX && f.file >= nfiles) {
                return Err(bad("bad fd number or file index"));
            }
            // The description's first fd comes first and names itself.
            let first = fdt.get(f.desc as usize);
            if f.desc as usize > i || first.is_none_or(|d| d.desc != f.desc) {
                return Err(bad("bad open file description index"));
            }
            let objects = match f.kind {
                fd_kind::PIPE | fd_kind::FIFO => Some(npipes),
                fd_kind::EVENTFD => Some(self.eventfds().len() as u32),
                fd_kind::TIMERFD => Some(self.timerfds().len() as u32),
                fd_kind::SIGNALFD => Some(self.signalfds().len() as u32),
                _ => None,
            };
            let ok = match objects {
                Some(n) => f.object < n,
                None => f.object == NO_INDEX,
            };
            if !ok {
                return Err(bad("bad index of its kind's state"));
            }
        }
        for (i, b) in self.blobs().enumerate() {
            let end = b.off.checked_add(b.pages() * PAGE_SIZE);
            if !b.off.is_multiple_of(PAGE_SIZE) || end.is_none_or(|e| e > self.header.pages_len) {
                return Err(ImageError::BadIndex {
                    section: "pipes/extents",
                    index: i as u64,
                    why: "stored bytes outside pages.img",
                });
            }
        }
        let next = self.extents().len() as u64;
        for (i, f) in files.iter().enumerate() {
            if f.first_extent as u64 + f.extent_count as u64 > next {
                return Err(ImageError::BadIndex {
                    section: "files",
                    index: i as u64,
                    why: "extent range out of bounds",
                });
            }
        }
        for (i, l) in self.locks().iter().enumerate() {
            if !fdt.iter().any(|f| f.fd == l.fd) || l.end < l.start || !(1..=4).contains(&l.kind) {
                return Err(ImageError::BadIndex {
                    section: "locks",
                    index: i as u64,
                    why: "lock on an fd the image does not have, or an empty range",
                });
            }
        }
        if let Some(c) = self.creds() {
            if c.ngroups as usize != self.groups().len() {
                return Err(ImageError::Invalid(
                    "creds: group count differs from 'groups'",
                ));
            }
        }
        for (i, w) in self.inotify().iter().enumerate() {
            self.check_str(w.path, "inotify", i)?;
            if fdt
                .get(w.desc as usize)
                .is_none_or(|f| f.kind != fd_kind::INOTIFY)
                || w.wd <= 0
            {
                return Err(ImageError::BadIndex {
                    section: "inotify",
                    index: i as u64,
                    why: "watch of no inotify fd, or a bad watch descriptor",
                });
            }
        }
        let is_fanotify = |desc: u32| {
            fdt.get(desc as usize)
                .is_some_and(|f| f.kind == fd_kind::FANOTIFY && f.desc == desc)
        };
        for (i, g) in self.fanotify().iter().enumerate() {
            if !is_fanotify(g.desc) {
                return Err(ImageError::BadIndex {
                    section: "fanotify",
                    index: i as u64,
                    why: "group of no fanotify fd",
                });
            }
        }
        for (i, m) in self.fanotify_marks().iter().enumerate() {
            self.check_str(m.path, "fanotify_marks", i)?;
            if !is_fanotify(m.desc) || !(1..=3).contains(&m.kind) {
                return Err(ImageError::BadIndex {
                    section: "fanotify_marks",
                    index: i as u64,
                    why: "mark of no fanotify fd, or of an unknown kind",
                });
            }
        }
        for (i, e) in self.epoll_items().iter().enumerate() {
            let on_epoll = fdt
                .get(e.desc as usize)
                .is_some_and(|f| f.kind == fd_kind::EPOLL);
            if !on_epoll || !fdt.iter().any(|f| f.fd == e.tfd) {
                return Err(ImageError::BadIndex {
                    section: "epoll_items",
                    index: i as u64,
                    why: "item of no epoll fd, or on an fd the image does not have",
                });
            }
        }
        let nthreads = self.threads().len() as u32;
        for (i, q) in self.signals().iter().enumerate() {
            if q.signo == 0 || q.signo > 64 || q.shared > 1 || q.thread > nthreads {
                return Err(ImageError::BadIndex {
                    section: "signals",
                    index: i as u64,
                    why: "signal number out of range",
                });
            }
        }
        Ok(())
    }

    /// Check sums.img (the whole file) against the `page_sums` blocks.
    pub fn verify_sums(&self, sums: &[u8]) -> Result<(), ImageError> {
        let expected = self.header.pages_len / PAGE_SIZE * 8;
        if sums.len() as u64 != expected {
            return Err(ImageError::SumsLength {
                expected,
                actual: sums.len() as u64,
            });
        }
        for (k, b) in self.page_sums().iter().enumerate() {
            if !sum_block_ok(&b, sums_block(sums, k as u64)) {
                return Err(ImageError::SumsChecksum { block: k as u64 });
            }
        }
        Ok(())
    }

    /// Check pages.img's and sums.img's lengths, sums.img's blocks, and
    /// every stored page against its checksum. `pages` and `sums` are the
    /// whole files (e.g. mmapped).
    pub fn verify_pages(&self, pages: &[u8], sums: &[u8]) -> Result<(), ImageError> {
        if pages.len() as u64 != self.header.pages_len {
            return Err(ImageError::PagesLength {
                expected: self.header.pages_len,
                actual: pages.len() as u64,
            });
        }
        self.verify_sums(sums)?;
        for b in self.blobs() {
            for p in 0..b.pages() {
                let off = b.off + p * PAGE_SIZE;
                let ok = pages
                    .get(off as usize..(off + PAGE_SIZE) as usize)
                    .zip(page_sum(sums, off / PAGE_SIZE))
                    .is_some_and(|(data, sum)| checksum(data) == sum);
                if !ok {
                    return Err(ImageError::BlobChecksum { offset: off });
                }
            }
        }
        for r in self.page_runs().iter() {
            if r.kind != run_kind::DATA {
                continue;
            }
            for p in 0..r.npages as u64 {
                let off = r.offset + p * PAGE_SIZE;
                let ok = pages
                    .get(off as usize..(off + PAGE_SIZE) as usize)
                    .zip(page_sum(sums, off / PAGE_SIZE))
                    .is_some_and(|(data, sum)| checksum(data) == sum);
                if !ok {
                    return Err(ImageError::PageChecksum {
                        vaddr: r.vaddr + p * PAGE_SIZE,
                    });
                }
            }
        }
        Ok(())
    }
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

/// Where the shim builds a thread's signal frame (the address it grows
/// down from): where the kernel would put a handler's frame for a
/// handler that runs on the alternate stack. On the thread's sigaltstack,
/// at its top, if one is set, large enough and the thread is not on it
/// already; else below the red zone under the stack pointer. Not
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
