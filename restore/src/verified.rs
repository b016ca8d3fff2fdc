//! Pages verified once. Checking every page of pages.img against sums.img
//! reads the whole image (~0.4 ms per MiB here): on every restore that
//! would cost more than a mapped restore (`--map`) itself. So after a
//! full check, restore records the identity of pages.img and sums.img
//! (device, inode, size, modification and change times) and of meta.img's
//! contents in the image directory ([`STAMP_FILE`]); a later restore that
//! finds the same identities skips the check. Any write to either file
//! changes its change time, which no user call can set back (the kernel
//! stamps a file that was looked at with a fine-grained time, so two
//! writes in one clock tick are told apart too). The stamp is no weaker
//! than the checksums it stands for: whoever can rewrite it can rewrite
//! sums.img too. `--verify` checks anyway; `--no-verify` never checks.

use crate::RestoreError;
use cryo_image::load::LoadedImage;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The stamp's name in the image directory.
pub const STAMP_FILE: &str = "verified";

/// One file's identity as the stamp records it (a packed restorer's
/// record holds the same, `pack::identity`).
fn identity(path: &Path) -> Option<String> {
    let [dev, ino, size, ms, mns, cs, cns] = crate::pack::identity(path).ok()?;
    Some(format!("{dev}:{ino}:{size}:{ms}.{mns:09}:{cs}.{cns:09}"))
}

/// The stamp's one line for this image as it is now.
fn stamp(image: &LoadedImage) -> Option<String> {
    Some(format!(
        "cryo-verified 1 {:016x} {} {}\n",
        cryo_image::checksum(image.meta()),
        identity(&image.pages_path())?,
        identity(&image.sums_path())?
    ))
}

/// Every page checked against its checksum, unless a stamp says this very
/// pages.img was checked already (and `force` is off); a passed check is
/// stamped (best effort: a read-only image is checked every time).
pub fn pages(image: &LoadedImage, force: bool) -> Result<(), RestoreError> {
    // Read before the check: a write during it changes the identity, so
    // the stamp written after it no longer matches.
    let now = stamp(image);
    let path = image.dir.join(STAMP_FILE);
    if !force
        && now
            .as_deref()
            .is_some_and(|s| std::fs::read_to_string(&path).is_ok_and(|old| old == s))
    {
        return Ok(());
    }
    image.verify_pages(|_| {})?;
    if let Some(s) = now {
        let _ = write_stamp(&image.dir, &path, &s);
    }
    Ok(())
}

/// Temporary name, 0600, then rename: never half-written.
fn write_stamp(dir: &Path, path: &Path, s: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{STAMP_FILE}.{}", std::process::id()));
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(s.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
