//! What a packed restorer is, from one read of /proc/self/status: its
//! credentials, capability sets, no_new_privs and the signals it ignores.
//! One read (~14 µs on the VM of docs/benchmarks.md) instead of the ~110
//! system calls that asked the same (every capability of the bounding set
//! one prctl each, every signal's disposition one rt_sigaction each),
//! which cost ~0.5 µs each there. `cryo restore` reads the same file.

use crate::die;
use crate::sys::*;
use cryo_image::Image;

pub struct Own {
    /// Real, effective, saved and file-system ids.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// Bit `sig - 1` set: the signal is ignored (an exec keeps SIG_IGN).
    pub sig_ign: u64,
    /// The supplementary groups are the image's, in its order.
    pub same_groups: bool,
}

fn words(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&c| c == b'\t' || c == b' ')
        .filter(|w| !w.is_empty())
}

/// A decimal number (a status field; a cgroup's pids.max).
pub(crate) fn dec(w: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in w {
        let d = (c as char).to_digit(10)? as u64;
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    (!w.is_empty()).then_some(v)
}

fn dec32(w: &[u8]) -> Option<u32> {
    u32::try_from(dec(w)?).ok()
}

impl Own {
    /// The captured ids, groups and effective, permitted and inheritable
    /// sets are this process's.
    pub fn has(&self, c: &cryo_image::task::Creds) -> bool {
        self.uid == c.uid
            && self.gid == c.gid
            && self.same_groups
            && (self.cap_eff, self.cap_prm, self.cap_inh) == (c.cap_eff, c.cap_prm, c.cap_inh)
    }
}

/// A hexadecimal number (a status mask; a maps line's address).
pub(crate) fn hex(w: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in w {
        let d = (c as char).to_digit(16)? as u64;
        v = v.checked_mul(16)?.checked_add(d)?;
    }
    (!w.is_empty()).then_some(v)
}

fn ids(v: &[u8]) -> Option<[u32; 4]> {
    let mut it = words(v);
    let mut x = [0u32; 4];
    for id in x.iter_mut() {
        *id = dec32(it.next()?)?;
    }
    Some(x)
}

/// The lines it reads, in one pass over the text (ten passes took 8 µs
/// here, one takes 5, most of it the first run of this code).
const KEYS: [&[u8]; 10] = [
    b"Uid",
    b"Gid",
    b"Groups",
    b"CapInh",
    b"CapPrm",
    b"CapEff",
    b"CapBnd",
    b"CapAmb",
    b"NoNewPrivs",
    b"SigIgn",
];

fn parse(text: &[u8], img: &Image) -> Option<Own> {
    let mut vals: [Option<&[u8]>; KEYS.len()] = [None; KEYS.len()];
    for l in text.split(|&c| c == b'\n') {
        let Some(colon) = l.iter().position(|&c| c == b':') else {
            continue;
        };
        if let Some(i) = KEYS.iter().position(|k| *k == &l[..colon]) {
            vals[i] = vals[i].or(Some(&l[colon + 1..]));
        }
    }
    let [uid, gid, groups, inh, prm, eff, bnd, amb, nnp, ign] = vals;
    let mask = |v: Option<&[u8]>| hex(words(v?).next()?);
    let mut have = words(groups?);
    let mut same_groups = true;
    for g in img.groups().iter() {
        same_groups &= have.next().and_then(dec32) == Some(g.gid);
    }
    same_groups &= have.next().is_none();
    Some(Own {
        uid: ids(uid?)?,
        gid: ids(gid?)?,
        cap_inh: mask(inh)?,
        cap_prm: mask(prm)?,
        cap_eff: mask(eff)?,
        cap_bnd: mask(bnd)?,
        cap_amb: mask(amb)?,
        no_new_privs: dec(words(nnp?).next()?)? != 0,
        sig_ign: mask(ign)?,
        same_groups,
    })
}

/// This process as /proc/self/status says, compared where it needs the
/// image (its groups). Exits with one line when the file cannot be read
/// or has not every line (the restorer needs /proc, as for its
/// oom_score_adj).
pub fn read(img: &Image) -> Own {
    let (at, len) = (crate::scratch::STATUS, crate::scratch::STATUS_LEN);
    // SAFETY: [at, at + len) is the scratch mapping's, writable, used by
    // nothing else before the files' tables; the bytes read are read back.
    let text = unsafe {
        let n = match read_whole_raw(c"/proc/self/status".as_ptr() as usize, at as *mut u8, len) {
            Ok(n) => n,
            Err(e) => die(format_args!("reading /proc/self/status: errno {}", -e)),
        };
        core::slice::from_raw_parts(at as *const u8, n)
    };
    // (65 536 groups of 10 digits are 704 KiB.)
    if text.len() == len {
        die(format_args!("/proc/self/status is longer than {len} bytes"));
    }
    parse(text, img).unwrap_or_else(|| {
        die(format_args!(
            "/proc/self/status lacks a line a packed restorer reads (Uid, Gid, Groups, CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs, SigIgn)"
        ))
    })
}
