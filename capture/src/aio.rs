//! AIO contexts (io_setup), captured when the user says no request is in
//! flight (`--aio-idle`): each context's ring, read from the process's
//! memory, is its whole state a program can see (its id is the ring's
//! address; its head, tail and the events completed and not yet reaped
//! are in the ring). A request in flight is not: the kernel shows none
//! from outside, and its completion would go to the original's ring.

use crate::obstacles::Obstacles;
use crate::stored::{BlobOwner, PendingBlob, StoredFiles};
use crate::vma::Classified;
use cryo_image::fds::{AioRing, Blob, AIO_EVENT, AIO_RING_HEADER};
use cryo_image::vma_kind;
use cryo_image::write::ImageBuilder;
use std::os::unix::fs::FileExt;

/// The rings of `rings` with no context in the process (io_getevents for
/// none, which reads nothing, says EINVAL): a ring a fork copied from the
/// parent, whose context stayed there (it is not VM_DONTCOPY). Asked of
/// the process itself: a context belongs to its memory.
pub fn without_context(
    rem: &mut crate::remote::Remote,
    rings: &[AioRing],
) -> Result<Vec<(u64, i64)>, crate::remote::InjectError> {
    let mut none = Vec::new();
    for r in rings {
        let got = rem.syscall(libc::SYS_io_getevents, [r.start, 0, 0, 0, 0])?;
        if got != 0 {
            none.push((r.start, got));
        }
    }
    Ok(none)
}

/// The kernel's `AIO_RING_MAGIC`.
const MAGIC: u32 = 0xa10a_10a1;

/// Record the ring of every AIO mapping of `classified` (kind
/// `vma_kind::AIO`), its events stored; one the kernel would not make
/// again as it is goes to `obs`.
pub fn rings(
    pid: i32,
    classified: &[Classified],
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    obs: &mut Obstacles,
) {
    let mut mem = None;
    for c in classified.iter().filter(|c| c.kind == vma_kind::AIO) {
        let m = c.m;
        let range = format!("{:x}-{:x}", m.start, m.end);
        if !(m.read && m.write && m.shared && !m.exec) {
            obs.push(format!(
                "mapping {range} is the ring of an AIO context with its protection changed since io_setup; not supported"
            ));
            continue;
        }
        let len = m.end - m.start;
        let mut ring = vec![0u8; len as usize];
        let read = mem
            .get_or_insert_with(|| std::fs::File::open(format!("/proc/{pid}/mem")))
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|f| f.read_exact_at(&mut ring, m.start));
        if let Err(e) = read {
            obs.push(format!(
                "mapping {range} (the ring of an AIO context): reading it: {e}"
            ));
            continue;
        }
        let word = |i: usize| u32::from_le_bytes(ring[i * 4..i * 4 + 4].try_into().unwrap());
        // struct aio_ring: id, nr, head, tail, magic, compat_features,
        // incompat_features, header_length.
        let (nr, head, tail, magic, incompat, header) =
            (word(1), word(2), word(3), word(4), word(6), word(7));
        let fits = u64::from(nr) == (len - AIO_RING_HEADER) / AIO_EVENT;
        if magic != MAGIC
            || incompat != 0
            || u64::from(header) != AIO_RING_HEADER
            || !fits
            || head >= nr
            || tail >= nr
        {
            obs.push(format!(
                "mapping {range} (the ring of an AIO context) does not hold the header the kernel writes (magic {magic:#x}, {nr} events, head {head}, tail {tail}); not supported"
            ));
            continue;
        }
        let index = b.aio_rings.len();
        b.aio_rings.push(AioRing {
            start: m.start,
            len,
            nr,
            head,
            tail,
            flags: 0,
            events: Blob::default(),
        });
        stored.blobs.push(PendingBlob {
            to: BlobOwner::Aio(index),
            bytes: ring.split_off(AIO_RING_HEADER as usize),
        });
    }
}
