//! Pages verified once ([`cryo_image::verified`]): a full check of every
//! page is skipped when the image's stamp says this very pages.img was
//! checked (by an earlier restore, or written by capture). `--verify`
//! checks anyway; `--no-verify` never checks.

use crate::RestoreError;
use cryo_image::load::LoadedImage;
use cryo_image::verified;

/// Every page checked against its checksum, unless a stamp says this very
/// pages.img was checked already (and `force` is off); a passed check is
/// stamped (best effort: a read-only image is checked every time).
pub fn pages(image: &LoadedImage, force: bool) -> Result<(), RestoreError> {
    // Read before the check: a write during it changes the identity, so
    // the stamp written after it no longer matches.
    let now = verified::stamp(&image.dir, image.meta());
    if !force
        && now
            .as_deref()
            .is_some_and(|s| verified::matches(&image.dir, s))
    {
        return Ok(());
    }
    image.verify_pages(|_| {})?;
    if let Some(s) = now {
        let _ = verified::write(&image.dir, &s);
    }
    Ok(())
}
