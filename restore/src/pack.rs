//! `cryo pack`: what a packed restorer (the shim with a record naming the
//! image, `cryo_image::pack`) can restore, and its record. A packed
//! restorer is one exec: no `cryo restore` runs before it, so whatever
//! `cryo restore` would set up before its exec and the shim cannot (fds
//! beyond 0-2, files made again, a tree, a tracer) makes an image
//! unpackable; every such obstacle is named at once.

use crate::{Finish, Plan};
use cryo_image::fds::file_flags;
use cryo_image::pack::{Identity, Record};
use cryo_image::{fd_kind, process_flags, NO_INDEX};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Every reason this plan's image cannot be restored by a packed
/// restorer (empty: it can).
pub fn obstacles(plan: &Plan) -> Vec<String> {
    let img = plan.image();
    let mut out = Vec::new();
    if plan.processes() > 1 {
        out.push(format!(
            "it is a process tree ({} processes); a packed restorer restores one process",
            plan.processes()
        ));
    }
    if !img.sysv_shm().is_empty() {
        out.push(
            "it attaches System V shared memory, which cryo restore makes again if it is gone"
                .into(),
        );
    }
    // (System V semaphore sets and message queues: the packed restorer
    // checks each is still there, and refuses if not.)
    if img.seccomp_before_creds() {
        out.push(
            "its seccomp filters need a privilege the program has dropped since it installed them: only cryo restore, whose tracer suspends them, can install them before the credentials"
                .into(),
        );
    } else if plan.finish() != Finish::Gadgets {
        out.push(
            "it needs a tracer to finish (no usable `syscall; ret` and `rt_sigreturn` code in the image, or --keep-stopped/--use-tracer)"
                .into(),
        );
    }
    let fds: Vec<String> = img
        .fds()
        .iter()
        .filter_map(|f| {
            let why = cryo_image::pack::fd_obstacle(&img, &f)?;
            let why = if why == cryo_image::pack::NOT_MADE {
                String::new()
            } else {
                format!(": {why}")
            };
            Some(format!(
                "fd {} ({} {}{why})",
                f.fd,
                fd_kind::name(f.kind),
                img.str(f.target).unwrap_or("?")
            ))
        })
        .collect();
    if !fds.is_empty() {
        out.push(format!(
            "a packed restorer gives the program fds 0-2 (its invoker's), opens files, directories and devices under /dev again, and makes only eventfds, timerfds, signalfds, epoll sets and pipes within the process; it has {}",
            fds.join(", ")
        ));
    }
    if !img.fd_owners().is_empty() {
        out.push("it has SIGIO owners (F_SETOWN), which only cryo restore sets again".into());
    }
    // Files behind mappings that only cryo restore makes again, each named
    // once.
    let mapped_with = |flag: u32| {
        let mut paths: Vec<&str> = img
            .vmas()
            .iter()
            .filter(|v| v.file != NO_INDEX)
            .filter_map(|v| img.files().get(v.file as usize))
            .filter(|f| f.flags & flag != 0)
            .filter_map(|f| img.str(f.path))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        paths
    };
    for path in mapped_with(file_flags::DELETED) {
        out.push(format!(
            "it maps {path}, an unlinked file or memfd that only cryo restore makes again"
        ));
    }
    for path in mapped_with(file_flags::KEPT) {
        out.push(format!(
            "it maps {path} shared and writable, which only cryo restore makes again from the image when it is gone (a JVM removes its hsperfdata file at exit)"
        ));
    }
    let handled = img
        .vmas()
        .iter()
        .filter(|v| v.file != NO_INDEX)
        .filter_map(|v| img.files().get(v.file as usize))
        .any(|f| f.flags & file_flags::HANDLE != 0);
    if handled {
        out.push("it maps a file whose name was removed and whose other link is elsewhere, which only cryo restore reopens (by its file handle)".into());
    }
    if img.process().flags & process_flags::CWD_DELETED != 0 {
        out.push("its working directory was removed; only cryo restore makes it again".into());
    }
    out
}

/// A file's identity as the record keeps it.
pub fn identity(path: &Path) -> std::io::Result<Identity> {
    // (Named: "cannot pack DIR: No such file or directory" said not
    // which file, a survey of stop 36.)
    let md = std::fs::metadata(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok([
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime() as u64,
        md.mtime_nsec() as u64,
        md.ctime() as u64,
        md.ctime_nsec() as u64,
    ])
}

/// The identities of pages.img and sums.img in `dir`, to be read before
/// the pages are checked (a write during the check then shows).
pub fn identities(dir: &Path) -> std::io::Result<(Identity, Identity)> {
    Ok((
        identity(&dir.join(cryo_image::PAGES_FILE))?,
        identity(&dir.join(cryo_image::SUMS_FILE))?,
    ))
}

/// The record for this plan (`dir`: the image directory, absolute; `ids`:
/// [`identities`] read before the plan checked every page).
pub fn record<'a>(plan: &Plan, dir: &'a Path, ids: (Identity, Identity)) -> Record<'a> {
    use cryo_image::handoff::flags;
    use std::os::unix::ffi::OsStrExt;
    Record {
        flags: flags::SELF_UNMAP
            | if plan.opts.map { flags::MAP } else { 0 }
            | if plan.opts.clock_jump {
                flags::CLOCK_JUMP
            } else {
                0
            },
        tid_offset: plan.tid_offset as u64,
        pages: ids.0,
        sums: ids.1,
        // (`plan` passed the xsave and vDSO checks here: this kernel's
        // frame size is the one for the image's xsave layout.)
        frame: crate::sys::signal_frame_size(),
        xsave_size: crate::sys::xsave_size(),
        xcr0: crate::sys::xcr0(),
        dir: dir.as_os_str().as_bytes(),
    }
}

/// The shim binary with `r` written over its empty record.
pub fn packed_binary(shim: &[u8], r: &Record) -> Result<Vec<u8>, String> {
    use cryo_image::pack;
    let empty = pack::empty();
    let at = shim
        .windows(pack::RECORD_LEN)
        .position(|w| w == empty)
        .ok_or("the shim has no empty pack record (built by another cryo?)")?;
    let mut out = shim.to_vec();
    pack::encode(r, &mut out[at..at + pack::RECORD_LEN]).map_err(|e| e.to_string())?;
    Ok(out)
}
