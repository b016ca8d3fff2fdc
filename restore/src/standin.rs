//! Which children of a tree are forked by their parent's shim, so that
//! the private pages they shared copy-on-write at the capture are shared
//! again after an eager restore (docs/design.md, "Process trees").
//!
//! `cryo restore` forks such a child as a *stand-in*: a process with the
//! child's PID that `cryo restore` sets up as it would the child (its fds,
//! working directory, the barriers) and that execs the shim with
//! [`flags::STAND_IN`]. Its parent's shim, once its own memory is in,
//! takes the stand-in's fds, working directory and arguments, kills it and
//! forks the child with that PID: the child starts with the parent's
//! memory, keeps the pages it had in common with it and writes only its
//! own. Everything else the shim restores from the child's image as it
//! would after its own exec; what `cryo restore` sets before an exec
//! (umask, limits, scheduling, cgroups...) the child inherits, so it must
//! have been the parent's: any difference, and the child is restored by
//! its own exec as before (sharing nothing).
//!
//! [`flags::STAND_IN`]: cryo_image::handoff::flags::STAND_IN

use crate::{Finish, Plan};
use cryo_image::tree::TreeProc;
use std::os::unix::fs::MetadataExt;

/// Why child `c` of `p` cannot be forked by `p`'s shim, None if it can:
/// what the restore's options decide, then what the images say
/// ([`cryo_image::fork::obstacle`]). `recs`: the whole tree; `refs`: the
/// PIDs its fds refer to ([`cryo_image::fork::referenced`]);
/// `shares_fds`: it shared its parent's fd table.
pub(crate) fn obstacle(
    recs: &[TreeProc],
    refs: &std::collections::BTreeSet<u32>,
    p: (TreeProc, &Plan),
    c: (TreeProc, &Plan),
    shares_fds: bool,
) -> Option<&'static str> {
    let ((pr, pp), (cr, cp)) = (p, c);
    if cp.lazy.is_some() || pp.lazy.is_some() || cp.opts.map || pp.opts.map {
        return Some("a lazy or mapped restore");
    }
    if cp.finish != Finish::Gadgets || pp.finish != Finish::Gadgets {
        return Some("restored through the tracer");
    }
    if !same_file(&pp.image.pages_path(), &cp.image.pages_path()) {
        return Some("its pages are in another pages.img");
    }
    let (pi, ci) = (pp.image(), cp.image());
    cryo_image::fork::obstacle(recs, refs, (pr, &pi), (cr, &ci), shares_fds, true)
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}
