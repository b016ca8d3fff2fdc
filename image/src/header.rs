//! The fixed header at the start of meta.img and the entries of the
//! section directory that follows it.

use crate::record::Field;
use crate::{checksum, HEADER_SIZE, MAGIC};

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
