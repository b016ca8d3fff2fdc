//! The record that makes a copy of the shim a packed restorer (`cryo pack
//! DIR -o FILE`): the shim binary carries an empty record in a static of
//! its own ([`RECORD_LEN`] bytes starting with [`MAGIC`]); `cryo pack`
//! copies the binary and writes the record over the empty one. Run, a
//! packed shim finds the image through the record instead of the hand-off
//! arguments `cryo restore` gives it, and checks everything `cryo restore`
//! would have checked before it tears anything down.
//!
//! ```text
//! 0   magic "CRYOPACK"
//! 8   u32 version (2)       12  u32 payload length (0: not packed)
//! 16  payload:
//!     u64 hand-off flags (handoff::flags: MAP, SELF_UNMAP)
//!     u64 glibc's cached-TID offset in the TCB, as the packer found it
//!     7 × u64 identity of pages.img: dev, ino, size, mtime s, ns, ctime s, ns
//!     7 × u64 identity of sums.img (the same)
//!     u64 the kernel's signal frame size (AT_MINSIGSTKSZ) where it was
//!         packed, or 0; u64 the xsave size (CPUID 0xD.0 EBX) and u64
//!         XCR0 there
//!     u32 length of the image directory's absolute path, the path, NUL
//! end u64 xxh3 of bytes 0 .. end (the record's own checksum)
//! ```
//!
//! Pages are trusted through the identities: `cryo pack` checks every page
//! against sums.img first, and any later write to pages.img or sums.img
//! changes its change time, which no system call can set back (the same
//! reasoning as `cryo restore`'s `verified` stamp; docs/design.md).

/// First bytes of the record.
pub const MAGIC: [u8; 8] = *b"CRYOPACK";
/// The record's size in the shim binary.
pub const RECORD_LEN: usize = 4096;
/// Version of the layout.
pub const VERSION: u32 = 2;
const HEAD: usize = 16;
const FIXED: usize = 8 + 8 + 7 * 8 + 7 * 8 + 3 * 8 + 4;

/// The name of a packed restorer's alias in its image directory: a hard
/// link `cryo pack` makes to the restorer, named by its inode, which the
/// restorer maps its code from (a second path to the same file: the
/// kernel refuses to replace the executable while a mapping has its
/// path, and the other way is a copy into fresh memory).
pub struct AliasName(pub u64);

impl core::fmt::Display for AliasName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "packed-{}.text", self.0)
    }
}

/// A file's identity: dev, ino, size, mtime (s, ns), ctime (s, ns).
pub type Identity = [u64; 7];

/// The decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub flags: u64,
    pub tid_offset: u64,
    pub pages: Identity,
    pub sums: Identity,
    /// AT_MINSIGSTKSZ of the kernel `cryo pack` ran under, where the
    /// image's xsave layout and vDSO were that machine's (which `cryo
    /// pack` checks): the restorer's xsave check needs no CPUID where its
    /// own is the same (and XCR0 is [`Record::xcr0`]). 0: not known.
    pub frame: u64,
    /// The xsave size (CPUID leaf 0xD, EBX) where `cryo pack` ran: the
    /// restorer's, when its frame size and XCR0 are the packer's.
    pub xsave_size: u64,
    /// XCR0 where `cryo pack` ran.
    pub xcr0: u64,
    /// The image directory, absolute, without the NUL.
    pub dir: &'a [u8],
}

/// Why a record is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackError {
    Magic,
    Version(u32),
    Length,
    Checksum,
    UnknownFlags(u64),
    TooLong,
}

impl core::fmt::Display for PackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PackError::Magic => write!(f, "no pack record (not a cryo shim)"),
            PackError::Version(v) => {
                write!(f, "pack record version {v}, this shim reads {VERSION}")
            }
            PackError::Length => write!(f, "pack record truncated"),
            PackError::Checksum => write!(f, "pack record corrupt (checksum)"),
            PackError::UnknownFlags(v) => {
                write!(f, "pack record flags {v:#x} unknown to this shim")
            }
            PackError::TooLong => write!(f, "image directory path too long for a pack record"),
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Decode a record: Ok(None) for the empty record of an unpacked shim.
pub fn decode(b: &[u8]) -> Result<Option<Record<'_>>, PackError> {
    if b.len() < HEAD || b[..8] != MAGIC {
        return Err(PackError::Magic);
    }
    let (version, len) = (u32_at(b, 8), u32_at(b, 12) as usize);
    if len == 0 {
        return Ok(None);
    }
    if version != VERSION {
        return Err(PackError::Version(version));
    }
    if len < FIXED || HEAD + len + 8 > b.len() {
        return Err(PackError::Length);
    }
    let end = HEAD + len;
    if crate::checksum(&b[..end]) != u64_at(b, end) {
        return Err(PackError::Checksum);
    }
    let p = &b[HEAD..end];
    let ident = |at: usize| {
        let mut id = [0u64; 7];
        for (k, v) in id.iter_mut().enumerate() {
            *v = u64_at(p, at + 8 * k);
        }
        id
    };
    let dir_len = u32_at(p, 16 + 112 + 24) as usize;
    let dir_at = FIXED;
    if dir_at + dir_len + 1 != len || p[dir_at + dir_len] != 0 {
        return Err(PackError::Length);
    }
    let r = Record {
        flags: u64_at(p, 0),
        tid_offset: u64_at(p, 8),
        pages: ident(16),
        sums: ident(16 + 56),
        frame: u64_at(p, 16 + 112),
        xsave_size: u64_at(p, 16 + 120),
        xcr0: u64_at(p, 16 + 128),
        dir: &p[dir_at..dir_at + dir_len],
    };
    if r.flags & !crate::handoff::flags::ALL != 0 {
        return Err(PackError::UnknownFlags(r.flags));
    }
    Ok(Some(r))
}

/// Encode a record into `out` (RECORD_LEN bytes).
pub fn encode(r: &Record, out: &mut [u8]) -> Result<(), PackError> {
    let len = FIXED + r.dir.len() + 1;
    if out.len() < RECORD_LEN || HEAD + len + 8 > RECORD_LEN {
        return Err(PackError::TooLong);
    }
    out[..RECORD_LEN].fill(0);
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let mut at = HEAD;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&r.flags.to_le_bytes());
    put(&r.tid_offset.to_le_bytes());
    for v in r.pages.iter().chain(r.sums.iter()) {
        put(&v.to_le_bytes());
    }
    for v in [r.frame, r.xsave_size, r.xcr0] {
        put(&v.to_le_bytes());
    }
    put(&(r.dir.len() as u32).to_le_bytes());
    put(r.dir);
    put(&[0]);
    let end = HEAD + len;
    let sum = crate::checksum(&out[..end]);
    out[end..end + 8].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The empty record an unpacked shim carries.
pub const fn empty() -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    let mut i = 0;
    while i < 8 {
        b[i] = MAGIC[i];
        i += 1;
    }
    b[8] = VERSION as u8;
    b
}

/// [`fd_obstacle`]'s answer for a kind of file a packed restorer never
/// makes (a regular file, a socket, ...: the kind says why).
pub const NOT_MADE: &str = "a kind of file a packed restorer does not make";

/// Why a packed restorer cannot make the fd `f` of `img` itself, if it
/// cannot. It opens files, directories and devices under /dev again (the
/// same inode or device, at their offsets; no locks), and makes
/// eventfds, timerfds, signalfds, epoll sets and pipes whose every end
/// is in the process (with their bytes), at their numbers, with their
/// status flags, descriptions shared as captured;
/// fds 0-2 are its invoker's, as `cryo restore`'s are. `cryo pack`
/// refuses an image with any other fd, naming each; the packed shim
/// checks again before it touches anything.
pub fn fd_obstacle(img: &crate::Image, f: &crate::Fd) -> Option<&'static str> {
    use crate::fd_kind;
    use crate::fds::pipe_flags;
    if f.fd <= 2 {
        return None;
    }
    if f.in_flight != 0 {
        return Some("a file in flight in a socket's queue");
    }
    // A copy of fd 0-2 (one description: R's file("stdin") dups fd 0):
    // the invoker's there, as `cryo restore` gives it (a regular file is
    // opened again for its copies above 2, as below).
    if f.kind != fd_kind::REGULAR
        && f.desc != crate::NO_INDEX
        && img
            .fds()
            .get(f.desc as usize)
            .is_some_and(|d| d.fd <= 2 && d.fd != f.fd)
    {
        return None;
    }
    const O_PATH: u32 = 0o10000000;
    let deleted = img.str(f.target).is_none_or(|t| t.ends_with(" (deleted)"));
    let file_flags = (f.file != crate::NO_INDEX)
        .then(|| img.files().get(f.file as usize))
        .flatten()
        .map(|x| x.flags);
    match f.kind {
        fd_kind::REGULAR | fd_kind::DIRECTORY | fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE
            if f.flags & O_PATH != 0 =>
        {
            Some("an O_PATH fd, which only cryo restore opens again")
        }
        fd_kind::REGULAR
            if deleted && img.str(f.target).is_some_and(|t| t.starts_with("/memfd:")) =>
        {
            Some("a memfd, which only cryo restore makes again")
        }
        fd_kind::REGULAR | fd_kind::DIRECTORY | fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE
            if deleted =>
        {
            Some("a removed file, which only cryo restore makes again")
        }
        fd_kind::REGULAR if file_flags != Some(0) => {
            Some("a file that only cryo restore makes or finds again")
        }
        // (A lock is recorded at its description's first fd, which may
        // be one of 0-2.)
        fd_kind::REGULAR | fd_kind::DIRECTORY
            if img.locks().iter().any(|l| {
                l.fd == f.fd || img.fds().get(f.desc as usize).is_some_and(|d| d.fd == l.fd)
            }) =>
        {
            Some("a file with a lock, which only cryo restore takes again")
        }
        fd_kind::REGULAR | fd_kind::DIRECTORY => None,
        fd_kind::NULL_DEVICE | fd_kind::CHAR_DEVICE
            if img.str(f.target).is_some_and(|t| t.starts_with("/dev/")) =>
        {
            None
        }
        fd_kind::EVENTFD | fd_kind::TIMERFD | fd_kind::SIGNALFD => None,
        fd_kind::EPOLL => img
            .epoll_items()
            .iter()
            .any(|e| e.desc == f.desc && e.via != 0)
            .then_some("an epoll set watching a file whose fd was closed"),
        fd_kind::PIPE => {
            let Some(p) = img.pipes().get(f.object as usize) else {
                return Some("a pipe without its state in the image");
            };
            const ACC: u32 = 3;
            let ends = || {
                img.fds()
                    .iter()
                    .filter(move |g| g.kind == fd_kind::PIPE && g.object == f.object)
            };
            if p.flags & pipe_flags::INSIDE == 0 {
                Some("a pipe with an end outside the process")
            } else if f.flags & ACC == 2 {
                Some("a pipe end open for reading and writing")
            } else if ends().any(|g| g.fd <= 2 || g.in_flight != 0) {
                Some("a pipe whose other end is at fd 0-2 (the invoker's in a packed restorer) or in flight")
            } else if ends().any(|g| g.flags & ACC == f.flags & ACC && g.desc != f.desc) {
                Some("a pipe end opened twice (two descriptions)")
            } else {
                None
            }
        }
        _ => Some(NOT_MADE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let r = Record {
            flags: crate::handoff::flags::MAP,
            tid_offset: 720,
            pages: [1, 2, 3, 4, 5, 6, 7],
            sums: [8, 9, 10, 11, 12, 13, 14],
            frame: 11952,
            xsave_size: 11008,
            xcr0: 0x600e7,
            dir: b"/tmp/img",
        };
        let mut b = [0u8; RECORD_LEN];
        encode(&r, &mut b).unwrap();
        assert_eq!(decode(&b), Ok(Some(r)));
        assert_eq!(decode(&empty()), Ok(None));
        let mut bad = b;
        bad[40] ^= 1;
        assert_eq!(decode(&bad), Err(PackError::Checksum));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(PackError::Magic));
        let long = [b'a'; RECORD_LEN];
        let r2 = Record { dir: &long, ..r };
        assert_eq!(encode(&r2, &mut b), Err(PackError::TooLong));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Arbitrary bytes after the magic never panic the decoder.
        #[test]
        fn arbitrary_records_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..RECORD_LEN)) {
            let mut b = [0u8; RECORD_LEN];
            b[..8].copy_from_slice(&MAGIC);
            let n = tail.len().min(RECORD_LEN - 8);
            b[8..8 + n].copy_from_slice(&tail[..n]);
            let _ = decode(&b);
            let _ = decode(&b[..tail.len().min(RECORD_LEN)]);
        }

        /// A changed byte of a valid record is refused (or, in the unused
        /// rest of the record, changes nothing).
        #[test]
        fn mutated_records_are_refused(pos in 0usize..RECORD_LEN, val in proptest::prelude::any::<u8>()) {
            let r = Record { flags: 8, tid_offset: 720, pages: [1; 7], sums: [2; 7], frame: 3, xsave_size: 4, xcr0: 5, dir: b"/i" };
            let mut b = [0u8; RECORD_LEN];
            encode(&r, &mut b).unwrap();
            let orig = b[pos];
            b[pos] = val;
            let got = decode(&b);
            if val == orig || pos >= 16 + FIXED + 3 + 8 {
                proptest::prop_assert_eq!(got, Ok(Some(r)));
            } else {
                proptest::prop_assert!(got.is_err() || got == Ok(None), "{:?}", got);
            }
        }
    }
}
