//! Whether this kernel's vDSO is the captured one: the same bytes, and
//! vvar/vvar_vclock of the same sizes at the same offsets from it. One
//! comparison for `cryo restore` (std, from its /proc/self/maps) and a
//! packed restorer (the shim, from its own).

use crate::Image;

/// How the vDSO here differs from the captured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdsoDiff {
    /// This process has no vDSO.
    Missing,
    /// Other bytes: (length, hash) here and captured.
    Bytes {
        here: (u64, u64),
        captured: (u64, u64),
    },
    /// This special mapping's size or offset from the vDSO differs.
    Special(&'static str),
}

impl core::fmt::Display for VdsoDiff {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VdsoDiff::Missing => write!(f, "this process has no [vdso]"),
            VdsoDiff::Bytes { here, captured } => write!(
                f,
                "{} bytes, hash {:#x} here vs {} bytes, hash {:#x} captured",
                here.0, here.1, captured.0, captured.1
            ),
            VdsoDiff::Special(name) => {
                write!(f, "{name} size or position relative to [vdso] differs")
            }
        }
    }
}

/// Compare this process's vDSO (`here`: its start and bytes) and its
/// special mappings (`special(name)`: start and end) with the image's.
pub fn differs(
    img: &Image,
    here: Option<(u64, &[u8])>,
    special: impl Fn(&str) -> Option<(u64, u64)>,
) -> Option<VdsoDiff> {
    let p = img.process();
    // A process that had unmapped its vDSO gets none, whatever ours is.
    if p.vdso_len == 0 {
        return None;
    }
    let Some((start, bytes)) = here else {
        return Some(VdsoDiff::Missing);
    };
    let hash = crate::checksum(bytes);
    if bytes.len() as u64 != p.vdso_len || hash != p.vdso_hash {
        return Some(VdsoDiff::Bytes {
            here: (bytes.len() as u64, hash),
            captured: (p.vdso_len, p.vdso_hash),
        });
    }
    for name in ["[vvar]", "[vvar_vclock]"] {
        let there = img.vmas().iter().find(|v| img.str(v.name) == Some(name));
        let ok = match (special(name), there) {
            (Some((hs, he)), Some(t)) => {
                he - hs == t.end - t.start
                    && start.wrapping_sub(hs) == p.vdso_start.wrapping_sub(t.start)
            }
            (None, None) => true,
            _ => false,
        };
        if !ok {
            return Some(VdsoDiff::Special(name));
        }
    }
    None
}

/// How far below the captured vDSO the captured vvar block starts, when
/// `[vvar]` and `[vvar_vclock]` (each if captured) lie contiguous right
/// below it, the arrangement the kernel makes at exec and again with
/// ARCH_MAP_VDSO_64. None for any other (a process that moved them).
pub fn block_below(img: &Image) -> Option<u64> {
    let p = img.process();
    let mut lo = p.vdso_start;
    for name in ["[vvar_vclock]", "[vvar]"] {
        if let Some(v) = img.vmas().iter().find(|v| img.str(v.name) == Some(name)) {
            if v.end != lo {
                return None;
            }
            lo = v.start;
        }
    }
    (lo != p.vdso_start).then(|| p.vdso_start - lo)
}
