//! The stamp that says "every page of this pages.img matches sums.img"
//! (`DIR/verified`). Checking every page reads the whole image (~0.4 ms
//! per MiB here), so the result of a full check is recorded with the
//! identity of pages.img and sums.img (device, inode, size, modification
//! and change times) and the checksum of meta.img; a restore that finds
//! the same identities skips the check. Capture writes the stamp too: it
//! computed every checksum from the very bytes it wrote. Any write to
//! either file changes its change time, which no user call can set back
//! (the kernel stamps a file that was looked at with a fine-grained time,
//! so two writes in one clock tick are told apart too). The stamp is no
//! weaker than the checksums it stands for: whoever can rewrite it can
//! rewrite sums.img too.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The stamp's name in the image directory.
pub const STAMP_FILE: &str = "verified";

/// One file's identity as the stamp records it.
fn identity(path: &Path) -> Option<String> {
    let md = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{:09}:{}.{:09}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    ))
}

/// The stamp's one line for the image in `dir` with this meta.img, as its
/// files are now (None if one cannot be read).
pub fn stamp(dir: &Path, meta: &[u8]) -> Option<String> {
    Some(format!(
        "cryo-verified 1 {:016x} {} {}\n",
        crate::checksum(meta),
        identity(&dir.join(crate::PAGES_FILE))?,
        identity(&dir.join(crate::SUMS_FILE))?
    ))
}

/// Whether `dir`'s stamp is this one.
pub fn matches(dir: &Path, now: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|old| old == now)
}

/// Write the stamp: temporary name, 0600, then rename (never half-written).
pub fn write(dir: &Path, line: &str) -> std::io::Result<()> {
    let path = dir.join(STAMP_FILE);
    let tmp = dir.join(format!(".{STAMP_FILE}.{}", std::process::id()));
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
