//! Why an image was refused: [`ImageError`], one complete one-line reason
//! per variant.

use crate::{MAX_META_LEN, MAX_SECTIONS, VERSION_MAJOR};
use core::fmt;

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
            PagesLength { expected, actual } if actual < expected => write!(
                f,
                "truncated image: pages.img is {actual} bytes, the image needs {expected}"
            ),
            PagesLength { expected, actual } => write!(
                f,
                "corrupt image: pages.img is {actual} bytes, the image needs {expected} (another capture's pages.img?)"
            ),
            PageChecksum { vaddr } => write!(f, "corrupt image: pages.img data for the page at {vaddr:#x} fails its checksum"),
            BlobChecksum { offset } => write!(f, "corrupt image: pages.img bytes at offset {offset:#x} (pipe data or file contents) fail their checksum"),
            SumsLength { expected, actual } => write!(
                f,
                "truncated image: sums.img is {actual} bytes, the image needs {expected}"
            ),
            SumsChecksum { block } => write!(f, "corrupt image: sums.img block {block} fails its checksum in meta.img (sums.img is corrupt, or meta.img is another capture's)"),
            Invalid(why) => write!(f, "corrupt image: {why}"),
        }
    }
}

#[cfg(any(feature = "std", test))]
impl std::error::Error for ImageError {}
