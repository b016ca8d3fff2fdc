//! The records of an image: one type per table.
//!
//! Field order is the on-disk order. Add fields only at the end of a record
//! (and bump the minor version); never reorder or remove.

mod files;
pub mod lazy;
pub mod mapped;
mod process;
mod section;
mod vma;

pub use files::*;
pub use process::*;
pub use section::*;
pub use vma::*;

/// Page size the format is defined for (x86_64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// Reference to a UTF-8 string in the `Strings` section (offset, length).
/// `len == 0` is the empty string; `off == u32::MAX` means "absent".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub struct StrRef {
    pub off: u32,
    pub len: u32,
}

impl StrRef {
    pub const NONE: StrRef = StrRef {
        off: u32::MAX,
        len: 0,
    };
    pub fn is_none(&self) -> bool {
        self.off == u32::MAX
    }
}

impl crate::record::Field for StrRef {
    const SIZE: usize = 8;
    fn put(&self, out: &mut [u8]) {
        self.off.put(&mut out[0..]);
        self.len.put(&mut out[4..]);
    }
    fn get(b: &[u8]) -> Self {
        StrRef {
            off: u32::get(&b[0..]),
            len: u32::get(&b[4..]),
        }
    }
}

/// Index meaning "no entry" in index-valued fields.
pub const NO_INDEX: u32 = u32::MAX;
