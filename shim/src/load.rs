//! The image: meta.img mapped into the window, parsed and validated
//! again with the same no_std code `cryo restore` used.

use crate::mem::*;
use crate::sys::*;
use crate::{check, die, META_AT, PG, W, W_END};
use cryo_image::{vma_kind, Image, MAX_META_LEN};

pub fn image(meta_fd: usize) -> Image<'static> {
    image_at(meta_fd, META_AT)
}

/// [`image`], mapped at `at` in the window.
pub fn image_at(meta_fd: usize, at: usize) -> Image<'static> {
    let len = check(
        syscall3(SYS_LSEEK, meta_fd, 0, 2),
        format_args!("meta.img size"),
    );
    if len == 0 || len as u64 > MAX_META_LEN {
        die(format_args!(
            "meta.img has an impossible size ({len} bytes)"
        ));
    }
    // Mapped from the page cache rather than read into fresh memory: a
    // large image's page-run table is megabytes, and fresh pages cost
    // several µs each here (docs/pitfalls.md). MAP_POPULATE maps it in one
    // call; every byte is checksummed below anyway.
    let buf_len = (len + PG - 1) & !(PG - 1);
    let r = mmap(
        at,
        buf_len,
        PROT_READ,
        MAP_PRIVATE | MAP_FIXED_NOREPLACE | MAP_POPULATE,
        meta_fd,
        0,
    );
    if r as usize != at {
        die(format_args!("mapping meta.img: errno {}", -r));
    }
    // SAFETY: at..+len was just mapped (readable, len bytes of the
    // file, the rest of the last page zero); it stays mapped (inside the
    // window) until the shim is gone.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(at as *const u8, len) };
    let img = match Image::parse(bytes) {
        Ok(i) => i,
        Err(e) => die(format_args!("image: {e}")),
    };
    if let Err(e) = img.validate() {
        die(format_args!("image: {e}"));
    }
    for v in img.vmas().iter() {
        if v.kind != vma_kind::VSYSCALL && (v.start as usize) < W_END && (v.end as usize) > W {
            die(format_args!(
                "mapping {:#x}-{:#x} overlaps the shim window",
                v.start, v.end
            ));
        }
    }
    img
}
