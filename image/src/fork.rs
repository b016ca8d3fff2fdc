//! Whether a child of a process tree can be forked by its parent's shim
//! (docs/design.md, "Children forked by their parent's shim"): what the
//! images alone say. `cryo restore` adds what its options decide (a lazy
//! or mapped restore, the tracer); capture asks the same of every child a
//! restore must fork so (one that shared its parent's fd table, and the
//! children of such a child), so that it refuses a tree a restore would
//! always refuse before `--kill` ends it.

use crate::tree::{proc_state, TreeProc};
use crate::{run_kind, vma_kind, Image};
use std::collections::BTreeSet;

/// The PIDs a process of the tree refers to by an fd: a pidfd, a file
/// under /proc/PID, the owner of an fd's SIGIO (or a mapping of one, or the working directory). Such a process is never a stand-in: the fd would be
/// made on the stand-in, which ends (a pidfd of it would say it exited).
pub fn referenced(img: &Image, into: &mut std::collections::BTreeSet<u32>) {
    let proc_pid = |path: Option<&str>| {
        path.and_then(|t| t.strip_prefix("/proc/"))
            .and_then(|t| t.split('/').next())
            .and_then(|t| t.parse::<u32>().ok())
    };
    for f in img.fds().iter() {
        if f.kind == crate::fd_kind::PIDFD && f.object != crate::NO_INDEX {
            into.insert(f.object);
        }
        into.extend(proc_pid(img.str(f.target)));
    }
    // Who gets an fd's SIGIO (a process, or a thread of it: its PID).
    for o in img.fd_owners().iter() {
        if o.kind != 2 && o.pid != 0 {
            into.insert(o.pid as u32);
        }
    }
    // (Mapped files, the working directory.)
    for f in img.files().iter() {
        into.extend(proc_pid(img.str(f.path)));
    }
    into.extend(proc_pid(img.str(img.process().cwd)));
}

/// Why child `c` of `p` cannot be forked by `p`'s shim, as far as their
/// images say; None if it can. `recs`: the whole tree; `refs`: the PIDs
/// its fds refer to ([`referenced`]); `shares_fds`: it shared its
/// parent's fd table (then it is forked so whether it shared pages or
/// not); `pages`: whether the images' page runs are known yet (capture
/// asks before its pages are read, and again after).
pub fn obstacle(
    recs: &[TreeProc],
    refs: &BTreeSet<u32>,
    p: (TreeProc, &Image),
    c: (TreeProc, &Image),
    shares_fds: bool,
    pages: bool,
) -> Option<&'static str> {
    let ((pr, pi), (cr, ci)) = (p, c);
    if refs.contains(&cr.pid) {
        return Some("a pidfd or /proc file of it is open");
    }
    if cr.state != proc_state::LIVE || pr.state != proc_state::LIVE || cr.ppid != pr.pid {
        return Some("not a live child of a live process");
    }
    if cr.sid != pr.sid || cr.pgid != pr.pgid || cr.pgid == cr.pid {
        return Some("not in its parent's process group");
    }
    if recs.iter().any(|r| r.pgid == cr.pid || r.sid == cr.pid) {
        return Some("it led a process group or session");
    }
    if ci.process().flags & crate::process_flags::CWD_DELETED != 0 {
        return Some("its working directory was removed");
    }
    if !ci.seccomp().is_empty() || ci.task().is_some_and(|t| t.seccomp_strict != 0) {
        return Some("it has seccomp filters");
    }
    // Seccomp filters installed before the credentials need the tracer,
    // and so does an image without the code the shim leaves by.
    if pi.seccomp_before_creds()
        || ci.seccomp_before_creds()
        || pi.gadgets().is_none()
        || ci.gadgets().is_none()
    {
        return Some("restored through the tracer");
    }
    // A lease's breaks are signalled to the process that took it again:
    // the stand-in.
    if ci
        .locks()
        .iter()
        .any(|l| l.kind == crate::fds::lock_kind::LEASE)
    {
        return Some("it holds a lease");
    }
    // A flock or OFD lock `cryo restore` takes again may be taken by the
    // stand-in: /proc/locks would name it (in a PID namespace, a PID that
    // is gone: zdtm file_locks03/04 under `unshare --pid`).
    if ci
        .locks()
        .iter()
        .any(|l| l.kind != crate::fds::lock_kind::POSIX)
    {
        return Some("it holds a flock or OFD lock");
    }
    // The parent's shim takes the stand-in's fds above every fd either
    // has: they must stay below the open-file limit.
    if top_fd(pi).max(top_fd(ci)) + taken_fds(ci, shares_fds) + 64 >= nofile(ci) {
        return Some("its fds are too close to its open-file limit");
    }
    if let Some(why) = differs(pi, ci) {
        return Some(why);
    }
    // A POSIX lock belongs to the fd table: the close of any fd of its
    // file by either shim (its own files, closed after the other took the
    // lock again) would drop it.
    if shares_fds
        && [pi, ci].iter().any(|i| {
            i.locks()
                .iter()
                .any(|l| l.kind == crate::fds::lock_kind::POSIX)
        })
    {
        return Some("a POSIX lock is held in the shared fd table");
    }
    if pages && !shares_fds && !shares_pages(pi, ci) {
        return Some("it shared no page with its parent");
    }
    None
}

/// The process's open-file limit (RLIMIT_NOFILE, 7), as captured.
fn nofile(img: &Image) -> u64 {
    const RLIMIT_NOFILE: u32 = 7;
    img.rlimits()
        .iter()
        .find(|r| r.resource == RLIMIT_NOFILE)
        .map_or(u64::MAX, |r| r.cur)
}

/// How many fds of its stand-in the shim that takes it holds for a
/// process forked by its parent's shim (at most): a child sharing that
/// table keeps only its image, pages, working directory, round socket
/// and the files made for it (an unlinked file, one opened by handle, a
/// kept one); another keeps every fd of its own.
pub fn taken_fds(img: &Image, shares_fds: bool) -> u64 {
    if shares_fds {
        let made = img
            .files()
            .iter()
            .filter(|f| {
                f.flags
                    & (crate::fds::file_flags::DELETED
                        | crate::fds::file_flags::HANDLE
                        | crate::fds::file_flags::KEPT)
                    != 0
            })
            .count();
        made as u64 + 5
    } else {
        img.fds().len() as u64 + 3
    }
}

fn top_fd(img: &Image) -> u64 {
    img.fds()
        .iter()
        .map(|f| f.fd.max(0) as u64)
        .max()
        .unwrap_or(0)
}

/// Whether the fds a shim holds at once while it forks its children fit
/// below its open-file limit: `held` are the stand-ins whose fds it holds
/// together (every child sharing its table, in every line, until that
/// child's shim is done with them, and every process below a line's
/// first until its parent's shim forks it), each image and whether it
/// shares the table. One with a table of its own has its fds taken above
/// every number of both tables. None if they fit, else (the fds needed,
/// the limit).
pub fn forker_over(forker: &Image, held: &[(&Image, bool)]) -> Option<(u64, u64)> {
    let top = held
        .iter()
        .filter(|(_, shares)| !shares)
        .map(|(i, _)| top_fd(i))
        .fold(top_fd(forker), u64::max);
    let need = top
        + held
            .iter()
            .map(|(i, shares)| taken_fds(i, *shares))
            .sum::<u64>()
        + 64;
    let nofile = nofile(forker);
    (need >= nofile).then_some((need, nofile))
}

/// What the child would inherit from its parent's shim and `cryo restore`
/// would otherwise set before its exec: the first that differs.
fn differs(p: &Image, c: &Image) -> Option<&'static str> {
    let (pp, cp) = (p.process(), c.process());
    if (pp.umask, pp.personality) != (cp.umask, cp.personality) {
        return Some("its umask or personality");
    }
    let lims = |i: &Image| -> Vec<(u32, u64, u64)> {
        i.rlimits()
            .iter()
            .map(|r| (r.resource, r.cur, r.max))
            .collect()
    };
    if lims(p) != lims(c) {
        return Some("its resource limits");
    }
    match (p.task(), c.task()) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            let sched = |t: &crate::task::TaskState| {
                (
                    t.nice,
                    t.sched_policy,
                    t.sched_priority,
                    t.ioprio,
                    t.affinity,
                    t.oom_score_adj,
                    t.loginuid,
                    t.coredump_filter,
                )
            };
            if sched(&a) != sched(&b) {
                return Some("its scheduling, oom score, loginuid or coredump_filter");
            }
            // (A fork resets it.)
            const SCHED_RESET_ON_FORK: i64 = 0x4000_0000;
            if b.sched_policy != crate::task::UNKNOWN && b.sched_policy & SCHED_RESET_ON_FORK != 0 {
                return Some("its scheduling resets on fork");
            }
            if p.str(a.cgroups) != c.str(b.cgroups) || p.str(a.root) != c.str(b.root) {
                return Some("its cgroups or root directory");
            }
        }
        _ => return Some("its task state"),
    }
    // The vDSO (and vvar) stay where the parent's shim put them.
    let vvar = |i: &Image| {
        i.vmas()
            .iter()
            .find(|v| v.kind == vma_kind::VVAR)
            .map(|v| v.start)
    };
    if pp.vdso_start != cp.vdso_start || vvar(p) != vvar(c) {
        return Some("its vDSO is elsewhere");
    }
    // A sealed mapping (mseal) of the parent cannot be unmapped or
    // changed in the child.
    let sealed = |i: &Image| {
        i.vmas()
            .iter()
            .any(|v| v.vmflags & crate::vmflag("sl") != 0)
    };
    if sealed(p) || sealed(c) {
        return Some("a sealed mapping");
    }
    // System V attaches are inherited as they are.
    let sysv = |i: &Image| -> Vec<(u64, u64)> {
        i.vmas()
            .iter()
            .filter(|v| v.kind == vma_kind::SYSV)
            .map(|v| (v.start, v.end))
            .collect()
    };
    let segs = |i: &Image| -> Vec<(u64, i64)> {
        i.sysv_shm()
            .iter()
            .map(|s| (s.start, s.id as i64))
            .collect()
    };
    if sysv(p) != sysv(c) || segs(p) != segs(c) {
        return Some("its System V attaches");
    }
    None
}

/// Whether some page of the child is the parent's at the same address
/// (capture stored it once: the same offset of pages.img).
fn shares_pages(p: &Image, c: &Image) -> bool {
    let runs: Vec<(u64, u64, u64)> = p
        .page_runs()
        .iter()
        .filter(|r| r.kind == run_kind::DATA)
        .map(|r| (r.vaddr, r.vaddr + r.len(), r.offset))
        .collect();
    c.page_runs()
        .iter()
        .filter(|r| r.kind == run_kind::DATA)
        .any(|r| {
            let i = runs.partition_point(|&(_, end, _)| end <= r.vaddr);
            runs.get(i)
                .is_some_and(|&(s, _, off)| s <= r.vaddr && off + (r.vaddr - s) == r.offset)
        })
}
