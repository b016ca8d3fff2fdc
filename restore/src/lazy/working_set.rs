//! The working-set file: the pages a run touched, in first-touch order,
//! tied to one image; written with `--record-working-set`, prefetched by
//! later lazy restores.

/// Name of the working-set file inside an image directory.
pub const WORKING_SET_FILE: &str = "working-set";
const WS_MAGIC: &[u8; 8] = b"CRYOWSET";

/// Working set file: magic, image id (xxh3 of meta.img), count, the page
/// addresses in first-touch order, xxh3 of all of that.
pub(super) fn write_working_set(
    path: &std::path::Path,
    image_id: u64,
    addrs: &[u64],
) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(32 + addrs.len() * 8);
    b.extend_from_slice(WS_MAGIC);
    b.extend_from_slice(&image_id.to_le_bytes());
    b.extend_from_slice(&(addrs.len() as u64).to_le_bytes());
    for a in addrs {
        b.extend_from_slice(&a.to_le_bytes());
    }
    let sum = cryo_image::checksum(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    super::write_renamed(path, &b, 0o600, true)
}

/// Read a working set recorded for the image `image_id`. Ok(None): no
/// file. Err: a file that is not a working set of this image.
pub fn read_working_set(path: &std::path::Path, image_id: u64) -> Result<Option<Vec<u64>>, String> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = |why: &str| Err(format!("{}: {why}", path.display()));
    if b.len() < 32 || &b[..8] != WS_MAGIC {
        return bad("not a cryo working-set file");
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if cryo_image::checksum(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return bad("checksum mismatch (corrupt)");
    }
    let u = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8 bytes"));
    if u(8) != image_id {
        return bad("recorded for a different image");
    }
    let n = u(16) as usize;
    if body.len() != 24 + n * 8 {
        return bad("truncated");
    }
    Ok(Some((0..n).map(|i| u(24 + i * 8)).collect()))
}
