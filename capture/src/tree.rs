//! A process and its descendants, frozen together.
//!
//! Seizing goes down the tree: a process is frozen before its children are
//! listed, so none can be added behind our back (a frozen process cannot
//! fork), and every process and thread is frozen before any memory is
//! read. Zombies are not seized (they have nothing left to read): their
//! exit status is kept. On every exit path every seized process is let go
//! as it was ([`Group`] detaches on drop).
//!
//! After each live process is inspected on its own, [`share`] finds what
//! they share: open file descriptions held by more than one process (kcmp)
//! and pipes whose ends are in different processes. Each becomes one
//! object of the `tree_fds` table, made once at restore and handed to
//! every holder; kinds a restore cannot yet make for several processes
//! are obstacles, named.

use crate::capture::{CaptureError, Inspected};
use crate::obstacles::Obstacles;
use crate::threads::Group;
use crate::tracee::PtraceError;
use cryo_image::fds::{file_flags, pipe_flags, socket_state};
use cryo_image::tree::{proc_state, TreeFd, TreeFile, TreeProc};
use cryo_image::{fd_kind, Fd, NO_INDEX};
use std::collections::{BTreeMap, HashMap};

/// One process of the tree.
#[derive(Debug)]
pub struct Member {
    pub rec: TreeProc,
    /// None for a zombie.
    pub group: Option<Group>,
}

/// The root first, then every process after its parent (pre-order,
/// children by PID).
#[derive(Debug)]
pub struct Tree {
    pub members: Vec<Member>,
}

/// What /proc/PID/stat says of a process's place in the tree.
pub(crate) struct Stat {
    state: char,
    pub(crate) ppid: u32,
    pub(crate) pgid: u32,
    pub(crate) sid: u32,
    /// The controlling terminal's device number (0: none).
    pub(crate) tty_nr: u32,
    /// That terminal's foreground process group (0: none).
    pub(crate) tpgid: u32,
    exit_code: u32,
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) as u32;
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: num(1),
        pgid: num(2),
        sid: num(3),
        tty_nr: num(4),
        tpgid: num(5),
        // Field 52 of stat(5): the exit status as waitpid reports it.
        exit_code: num(49),
    })
}

impl Tree {
    /// The root (already frozen) alone: `--single`.
    pub fn single(root: Group) -> Tree {
        let pid = root.pid();
        let st = stat(pid);
        Tree {
            members: vec![Member {
                rec: TreeProc {
                    pid: pid as u32,
                    ppid: st.as_ref().map_or(0, |s| s.ppid),
                    pgid: st.as_ref().map_or(0, |s| s.pgid),
                    sid: st.as_ref().map_or(0, |s| s.sid),
                    state: proc_state::LIVE,
                    exit_status: 0,
                },
                group: Some(root),
            }],
        }
    }

    /// Freeze every descendant of `root` (already frozen).
    pub fn seize(root: Group) -> Result<Tree, CaptureError> {
        let mut t = Tree::single(root);
        let mut i = 0;
        while i < t.members.len() {
            if t.members[i].group.is_some() {
                let parent = t.members[i].rec.pid;
                let mut kids = Vec::new();
                for (pid, _) in crate::task::children(parent as i32) {
                    if let Some(m) = member(pid, parent)? {
                        kids.push(m);
                    }
                }
                t.members.extend(kids);
            }
            i += 1;
        }
        t.reorder();
        Ok(t)
    }

    /// Sort into pre-order (each process after its parent, children by PID).
    fn reorder(&mut self) {
        let mut out: Vec<Member> = Vec::with_capacity(self.members.len());
        let mut rest: Vec<Member> = self.members.drain(..).collect();
        let root = rest.remove(0);
        let mut stack = vec![root];
        while let Some(m) = stack.pop() {
            let pid = m.rec.pid;
            out.push(m);
            let mut kids: Vec<Member> = Vec::new();
            let mut k = 0;
            while k < rest.len() {
                if rest[k].rec.ppid == pid {
                    kids.push(rest.remove(k));
                } else {
                    k += 1;
                }
            }
            kids.sort_by_key(|m| std::cmp::Reverse(m.rec.pid));
            stack.extend(kids);
        }
        self.members = out;
    }

    /// The live processes' PIDs.
    pub fn live_pids(&self) -> Vec<i32> {
        self.members
            .iter()
            .filter(|m| m.group.is_some())
            .map(|m| m.rec.pid as i32)
            .collect()
    }

    pub fn records(&self) -> Vec<TreeProc> {
        self.members.iter().map(|m| m.rec).collect()
    }

    /// Every process whose parent is not the process it was captured
    /// under any more, or that changed group: the tree moved while it was
    /// seized (an orphan reparented).
    pub fn check_still(&self) -> Result<(), CaptureError> {
        for m in self.members.iter().skip(1) {
            if let Some(s) = stat(m.rec.pid as i32) {
                if s.ppid != m.rec.ppid {
                    return Err(CaptureError::Refused {
                        pid: self.members[0].rec.pid as i32,
                        obstacles: vec![format!(
                            "process {} changed parent ({} -> {}) while the tree was being frozen; try again",
                            m.rec.pid, m.rec.ppid, s.ppid
                        )],
                    });
                }
            }
        }
        Ok(())
    }
}

/// A child of `parent`, frozen (or a zombie's record); None if it exited
/// between the listing and the seize.
fn member(pid: i32, parent: u32) -> Result<Option<Member>, CaptureError> {
    let Some(st) = stat(pid) else {
        return Ok(None);
    };
    let rec = |state, exit_status| TreeProc {
        pid: pid as u32,
        ppid: parent,
        pgid: st.pgid,
        sid: st.sid,
        state,
        exit_status,
    };
    if st.state == 'Z' || st.state == 'X' {
        return Ok(Some(Member {
            rec: rec(proc_state::ZOMBIE, st.exit_code),
            group: None,
        }));
    }
    match Group::seize(pid) {
        Ok(g) => Ok(Some(Member {
            rec: rec(proc_state::LIVE, 0),
            group: Some(g),
        })),
        Err(PtraceError::NoSuchProcess(_)) | Err(PtraceError::Exited(_)) => Ok(None),
        // Exited between the listing and the seize: a zombie now.
        Err(PtraceError::NotTraceable(_)) => match stat(pid) {
            Some(now) if now.state == 'Z' => Ok(Some(Member {
                rec: rec(proc_state::ZOMBIE, now.exit_code),
                group: None,
            })),
            _ => Err(PtraceError::NotTraceable(pid).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The processes of the tree that share their parent's fd table (cloned
/// with CLONE_FILES, not threads), which a restore makes again by forking
/// them so from their parent's shim. Any other sharing of one (the root
/// with its parent outside the tree; two processes of the tree neither of
/// which is the other's ancestor through children that share it) is an
/// obstacle: a restore would give each its own table, and an fd one opens
/// would be missing in the other.
pub fn shared_fd_tables(t: &Tree, obs: &mut Obstacles) -> Vec<u32> {
    const KCMP_FILES: libc::c_long = 2;
    let live = |m: &Member| m.rec.state != proc_state::ZOMBIE;
    // (A kcmp that fails cannot say: an obstacle, not "not shared".)
    let failed = std::cell::RefCell::new(Vec::new());
    let shares = |a: u32, b: u32| match crate::sys::kcmp(a as i32, b as i32, KCMP_FILES) {
        Ok(same) => same,
        Err(e) => {
            failed.borrow_mut().push(format!(
                "cannot tell whether processes {a} and {b} share one fd table: kcmp: {e}"
            ));
            false
        }
    };
    let root = t.members[0].rec;
    // (The parent outside may be another user's, which kcmp may not
    // compare: not an obstacle of its own.)
    if root.ppid > 0
        && crate::sys::kcmp(root.ppid as i32, root.pid as i32, KCMP_FILES).unwrap_or(false)
    {
        obs.push(format!(
            "process {} shares its fd table with its parent {}, outside the tree (clone with CLONE_FILES); capture the parent instead",
            root.pid, root.ppid
        ));
    }
    // The first process of its table's chain of sharing children.
    let mut table_of: Vec<usize> = (0..t.members.len()).collect();
    let mut out = Vec::new();
    for (i, m) in t.members.iter().enumerate().skip(1) {
        if !live(m) {
            continue;
        }
        let parent = t.members[..i].iter().position(|p| p.rec.pid == m.rec.ppid);
        if let Some(p) = parent.filter(|&p| live(&t.members[p])) {
            if shares(t.members[p].rec.pid, m.rec.pid) {
                table_of[i] = table_of[p];
                out.push(m.rec.pid);
                // Made again by a fork from its parent's shim, in its
                // parent's group, leading none; its children forked by
                // its own shim, so too (docs/design.md, "Process trees").
                let pr = t.members[p].rec;
                let r = m.rec;
                let leads = |pid: u32| {
                    t.members
                        .iter()
                        .any(|c| c.rec.pgid == pid || c.rec.sid == pid)
                };
                let child_why = t
                    .members
                    .iter()
                    .filter(|c| c.rec.ppid == r.pid)
                    .find_map(|c| {
                        let c = c.rec;
                        let why = if c.state == proc_state::ZOMBIE {
                            "is a zombie"
                        } else if c.pgid != r.pgid || c.sid != r.sid {
                            "is not in its process group"
                        } else if leads(c.pid) {
                            "leads a process group or session"
                        } else if t.members.iter().any(|g| g.rec.ppid == c.pid)
                            && !shares(r.pid, c.pid)
                        {
                            "has children and an fd table of its own"
                        } else {
                            return None;
                        };
                        Some(format!("its child {} {why}", c.pid))
                    });
                let why = if r.pgid != pr.pgid || r.sid != pr.sid {
                    Some("it is not in its parent's process group".to_owned())
                } else if leads(r.pid) {
                    Some("it leads a process group or session".to_owned())
                } else {
                    child_why
                };
                if let Some(why) = why {
                    obs.push(format!(
                        "process {} shares its parent's fd table (clone with CLONE_FILES), which a restore makes again only by forking it from its parent's shim, and {why}",
                        r.pid
                    ));
                }
            }
        }
    }
    for (i, m) in t.members.iter().enumerate().skip(1) {
        for (j, p) in t.members[..i].iter().enumerate() {
            if live(m) && live(p) && table_of[i] != table_of[j] && shares(p.rec.pid, m.rec.pid) {
                obs.push(format!(
                    "processes {} and {} share one fd table, and neither is a child of the other or of a process sharing it (clone with CLONE_FILES); cryo restores a shared fd table between a parent and its children only",
                    p.rec.pid, m.rec.pid
                ));
            }
        }
    }
    for f in failed.into_inner() {
        obs.push(f);
    }
    out
}

/// Every process a restore must fork from its parent's shim (one that
/// shared its parent's fd table, and each child of such a process), as
/// its image says (`cryo_image::fork::obstacle`): where a restore could
/// not, the tree is refused here, before `--kill` could end a tree that
/// no restore brings back. `metas`: each live process's encoded image,
/// in the tree's order of live processes; `pages`: whether their page
/// runs are in (not before the pages are read).
pub fn fork_obstacles(t: &Tree, metas: &[Vec<u8>], pages: bool, obs: &mut Obstacles) {
    let live: Vec<&Member> = t
        .members
        .iter()
        .filter(|m| m.rec.state != proc_state::ZOMBIE)
        .collect();
    let images: Vec<cryo_image::Image> = match metas
        .iter()
        .map(|m| cryo_image::Image::parse(m))
        .collect::<Result<_, _>>()
    {
        Ok(i) => i,
        Err(e) => {
            obs.push(format!(
                "the tree's images, checked before they are written: {e}"
            ));
            return;
        }
    };
    if images.len() != live.len() {
        return;
    }
    let sharing =
        |i: usize| images[i].process().flags & cryo_image::process_flags::SHARES_PARENT_FDS != 0;
    if !(0..images.len()).any(sharing) {
        return;
    }
    let recs = t.records();
    let mut refs = std::collections::BTreeSet::new();
    for i in &images {
        cryo_image::fork::referenced(i, &mut refs);
    }
    let index: HashMap<u32, usize> = live
        .iter()
        .enumerate()
        .map(|(i, m)| (m.rec.pid, i))
        .collect();
    let at = |pid: u32| index.get(&pid).copied();
    let why = |p: usize, c: usize| {
        cryo_image::fork::obstacle(
            &recs,
            &refs,
            (live[p].rec, &images[p]),
            (live[c].rec, &images[c]),
            sharing(c),
            pages,
        )
    };
    const SHARES: &str = "shares its parent's fd table (clone with CLONE_FILES), which a restore makes again only by forking it from its parent's shim";
    const SHARES_ITS: &str = "share its fd table (clone with CLONE_FILES) or are children of one that does (a restore forks each from its parent's shim)";
    // A process that forks lines holds some of their stand-ins' fds at
    // once (`cryo_image::fork::forker_over`): every sharing process whose
    // nearest ancestor of a table of its own it is, and every child of
    // one of those.
    let forker = |k: usize| {
        let mut p = at(live[k].rec.ppid);
        while let Some(q) = p.filter(|&q| q != 0 && sharing(q)) {
            p = at(live[q].rec.ppid);
        }
        p
    };
    let mut held_by: Vec<Vec<(&cryo_image::Image, bool)>> = vec![Vec::new(); live.len()];
    for k in 1..live.len() {
        let below = at(live[k].rec.ppid).is_some_and(|p| p != 0 && sharing(p));
        if let Some(f) = forker(k).filter(|_| sharing(k) || below) {
            held_by[f].push((&images[k], sharing(k)));
        }
    }
    for (f, held) in held_by.iter().enumerate().filter(|(_, h)| !h.is_empty()) {
        if let Some((need, nofile)) = cryo_image::fork::forker_over(&images[f], held) {
            obs.push(format!(
                "process {} would hold up to {need} fds at once while a restore forks the {} processes that {SHARES_ITS}, above its open-file limit of {nofile}",
                live[f].rec.pid,
                held.len()
            ));
        }
    }
    for c in (1..live.len()).filter(|&c| sharing(c)) {
        let pid = live[c].rec.pid;
        if let Some(w) = at(live[c].rec.ppid).and_then(|p| why(p, c)) {
            obs.push(format!(
                "process {pid} {SHARES}, and a restore could not: {w}"
            ));
        }
        for k in (0..live.len()).filter(|&k| live[k].rec.ppid == pid) {
            if let Some(w) = why(c, k) {
                obs.push(format!(
                    "process {pid} {SHARES}, and its child {} could not be forked by its shim: {w}",
                    live[k].rec.pid
                ));
            }
        }
    }
}

/// What restore cannot bring back of the tree's shape: sessions and groups
/// whose leader is not where a restore can make it, zombies that dumped
/// core.
pub fn shape_obstacles(t: &Tree, obs: &mut Obstacles) {
    let root = t.members[0].rec;
    for (i, m) in t.members.iter().enumerate().skip(1) {
        let r = m.rec;
        let parent = t.members[..i].iter().find(|p| p.rec.pid == r.ppid);
        let parent_sid = parent.map_or(0, |p| p.rec.sid);
        if r.sid != r.pid && r.sid != parent_sid {
            obs.push(format!(
                "process {} is in session {}, which is neither its own nor its parent's; a restore cannot put it there",
                r.pid, r.sid
            ));
        }
        // The leader may come anywhere in the tree: every process is
        // forked (leaders making their groups) before any joins one.
        let leader_here = t
            .members
            .iter()
            .any(|p| p.rec.pid == r.pgid && p.rec.sid == r.sid);
        // A group whose leader ended (a zombie's, say: zdtm zombie01) is
        // made again by a holder with its id: in the root's session the
        // root's, in another the session leader's, which must be a live
        // process of the tree (a zombie leader ends before anyone joins).
        let session_leader_live = t
            .members
            .iter()
            .any(|p| p.rec.pid == r.sid && p.rec.state == proc_state::LIVE);
        if r.pgid != r.pid
            && r.pgid != root.pgid
            && !leader_here
            && r.sid != root.sid
            && !session_leader_live
        {
            obs.push(format!(
                "process {} is in process group {}, whose leader is not in the tree, in session {} (not the root's), whose leader is not a live process of the tree; a restore cannot make that group again",
                r.pid, r.pgid, r.sid
            ));
        }
        // One fs context for two processes (clone with CLONE_FS, not
        // threads): a restore gives each its own, and a chdir of one would
        // be missing in the other.
        if r.state != proc_state::ZOMBIE {
            for p in t.members[..i]
                .iter()
                .filter(|p| p.rec.state != proc_state::ZOMBIE)
            {
                if crate::sys::kcmp(p.rec.pid as i32, r.pid as i32, 3).unwrap_or(false) {
                    obs.push(format!(
                        "processes {} and {} share one working directory and umask (CLONE_FS); cryo restores each process with its own",
                        p.rec.pid, r.pid
                    ));
                }
            }
        }
        if r.state == proc_state::ZOMBIE && r.exit_status & 0x80 != 0 {
            obs.push(format!(
                "process {} is a zombie killed by signal {} with a core dump; cryo cannot make a zombie with that status",
                r.pid,
                r.exit_status & 0x7f
            ));
        }
    }
}

/// Memory the processes of the tree share: an unlinked file or memfd (a
/// POSIX semaphore, an unlinked shm_open) or a shared anonymous mapping
/// (stored as the shmem file it is, see `vma::classify_all`) that several
/// processes map or hold is made once at restore (`tree_files`), so their
/// shared mappings stay one. (A shared mapping of a file on disk maps that
/// file again in each process; SysV segments are refused on their own.)
pub(crate) fn shared_memory(procs: &[(i32, &Inspected)]) -> Vec<TreeFile> {
    let mut files: HashMap<(u64, u64), Vec<(i32, u32)>> = HashMap::new();
    for (pid, ins) in procs {
        for (i, f) in ins.b.files.iter().enumerate() {
            if f.flags & (file_flags::DELETED | file_flags::MEMFD | file_flags::KEPT) != 0 {
                files
                    .entry((f.dev, f.ino))
                    .or_default()
                    .push((*pid, i as u32));
            }
        }
    }
    let mut keys: Vec<_> = files.keys().copied().collect();
    keys.sort();
    let mut out = Vec::new();
    let mut object = 0;
    for k in keys {
        let holders = &files[&k];
        if holders.len() < 2 {
            continue;
        }
        for &(pid, file) in holders {
            out.push(TreeFile {
                object,
                pid: pid as u32,
                file,
            });
        }
        object += 1;
    }
    out
}

/// What the processes of a tree share ([`share`]).
pub(crate) struct Shared {
    /// Into `tree_fds`.
    pub fds: Vec<TreeFd>,
    /// The bytes queued in the ends of socket pairs between processes,
    /// for the caller to store.
    pub queued: Queued,
    /// Connections waiting in another process's listener: (process,
    /// socket index, place in its queue).
    pub places: Vec<(usize, usize, u32)>,
    /// Unix sockets at fd 0-2 connected outside the tree: (process,
    /// socket index), `socket_state::OUTSIDE` in its image.
    pub outside: Vec<(usize, usize)>,
}

/// The objects processes of the tree share (and the obstacles of kinds
/// that cannot be shared yet). `procs`: (pid, its inspected state) of
/// every live process, root first.
pub(crate) fn share(procs: &[(i32, &Inspected)], obs: &mut Obstacles) -> Shared {
    let mut out = Vec::new();
    let mut next_object = 0u32;
    let (pairs_done, queued, outside) = socket_pairs(procs, &mut out, &mut next_object, obs);
    // Candidates: the first fd of each description, by what it is.
    let mut by_inode: HashMap<(u32, u64, u64), Vec<(usize, usize)>> = HashMap::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for (i, f) in ins.b.fds.iter().enumerate() {
            if f.kind == fd_kind::SOCKET && pairs_done.contains(&f.ino) {
                continue;
            }
            if f.desc as usize == i {
                let kind = if f.kind == fd_kind::FIFO {
                    fd_kind::PIPE
                } else {
                    f.kind
                };
                by_inode
                    .entry((kind, f.dev, f.ino))
                    .or_default()
                    .push((p, i));
            }
        }
    }
    let mut served = served_elsewhere(procs);
    ghosts_served(procs, &served, obs);
    let places = pending_elsewhere(procs, &mut served, obs);
    served.extend(named_widows(procs));
    let mut keys: Vec<_> = by_inode.keys().copied().collect();
    keys.sort();
    for key in keys {
        let cands = &by_inode[&key];
        let procs_here = {
            let mut v: Vec<usize> = cands.iter().map(|c| c.0).collect();
            v.dedup();
            v.len()
        };
        if procs_here < 2 && !cands.iter().any(|c| served.contains(c)) {
            continue;
        }
        // A pidfd of an ended process.
        let dead_pidfd = cands.iter().find(|&&(p, i)| {
            let f = procs[p].1.b.fds[i];
            f.kind == fd_kind::PIDFD && f.object == cryo_image::NO_INDEX
        });
        // A file in flight was held by its process for that process's
        // capture only (its number is closed again): kcmp cannot say any
        // more whether another process holds the same description.
        if let Some(&(p, i)) = cands
            .iter()
            .find(|&&(p, i)| procs[p].1.b.fds[i].in_flight != 0)
        {
            // Every one of them in flight: one file queued in a socket
            // that several processes hold (each one's capture found it
            // there), not a file open elsewhere (a sweep of stop 48:
            // the message sent the user looking for one).
            let everywhere = cands
                .iter()
                .all(|&(q, j)| procs[q].1.b.fds[j].in_flight != 0);
            let holders: Vec<String> = cands.iter().map(|&(q, _)| procs[q].0.to_string()).collect();
            obs.push(if everywhere {
                format!(
                    "a file in flight (SCM_RIGHTS) is queued in a socket that processes {} all hold (a socket pair kept by both sides of a fork); not supported yet: each would send it again",
                    holders.join(", ")
                )
            } else {
                format!(
                    "process {}: a file in flight (SCM_RIGHTS) held at fd {} for the capture is also open in another process of the tree; not supported yet",
                    procs[p].0,
                    procs[p].1.b.fds[i].fd
                )
            });
            continue;
        }
        // Descriptions: classes of kcmp-equal fds, found by a binary
        // search among the classes sorted in the kernel's order.
        let mut descs: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut sorted: Vec<((i32, i32), usize)> = Vec::new();
        for &(p, i) in cands {
            let (pid, ins) = procs[p];
            let fd = ins.b.fds[i].fd;
            match sorted.binary_search_by(|(rep, _)| crate::sys::description_order(*rep, (pid, fd)))
            {
                Ok(k) => descs[sorted[k].1].push((p, i)),
                Err(k) => {
                    sorted.insert(k, ((pid, fd), descs.len()));
                    descs.push(vec![(p, i)]);
                }
            }
        }
        // Pidfds of one ended process in several processes: every
        // description of them is a tree object, made by the restore before
        // it forks, all on one ended process (so that they name one, as
        // zdtm pidfd_diffdead checks through their inodes).
        let every_description = dead_pidfd.is_some();
        let first = procs[cands[0].0].1.b.fds[cands[0].1];
        let pipe = key.0 == fd_kind::PIPE;
        let inside_pipe = pipe && {
            let ins = procs[cands[0].0].1;
            ins.b
                .pipes
                .get(first.object as usize)
                .is_some_and(|p| p.flags & pipe_flags::INSIDE != 0)
        };
        for d in descs {
            let held_by = {
                let mut v: Vec<usize> = d.iter().map(|c| c.0).collect();
                v.dedup();
                v.len()
            };
            // A pipe whose ends are in several processes is made once:
            // every description of it is a tree object. So is a socket
            // another process is connected to. Anything else is one when
            // more than one process holds the description.
            if held_by < 2
                && !inside_pipe
                && !every_description
                && !d.iter().any(|c| served.contains(c))
            {
                continue;
            }
            let (p0, i0) = d[0];
            let f = procs[p0].1.b.fds[i0];
            // (A connection waiting in a listener the restore makes is
            // made and connected by `cryo restore`: `pending_elsewhere`
            // served it.)
            let pending_served = f.kind == fd_kind::SOCKET
                && procs[p0]
                    .1
                    .b
                    .sockets
                    .get(f.object as usize)
                    .is_some_and(|s| s.state == socket_state::PENDING)
                && d.iter().any(|c| served.contains(c));
            // (A socket at fd 0-2 connected outside the tree: the
            // restore's own fd in every holder's place, as for a pipe to
            // outside: `socket_pairs`.)
            let outside_stdio = f.kind == fd_kind::SOCKET
                && d.iter().all(|&(p, i)| {
                    let o = procs[p].1.b.fds[i].object as usize;
                    outside.contains(&(p, o))
                });
            if let Some(why) =
                unshareable(procs[p0].1, &f).filter(|_| !pending_served && !outside_stdio)
            {
                let holders: Vec<String> = d
                    .iter()
                    .map(|&(p, i)| format!("pid {} fd {}", procs[p].0, procs[p].1.b.fds[i].fd))
                    .collect();
                obs.push(format!(
                    "{} ({}) is shared by {}: {why}",
                    fd_kind::name(f.kind),
                    target(procs[p0].1, &f),
                    holders.join(", ")
                ));
                continue;
            }
            let end = if pipe && f.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
                1
            } else {
                0
            };
            describe(procs, &d, next_object, end, NO_INDEX, &mut out);
            next_object += 1;
        }
    }
    hung_up_terminals(procs, &out, obs);
    Shared {
        fds: out,
        queued,
        places,
        outside,
    }
}

/// Connections waiting, not accepted yet, in a listener of another
/// process of the tree (`sockets::CrossPending`, `CrossWaiting`): the
/// listener is made by `cryo restore` before any process (`served`), and
/// the connecting process connects its sockets to it by its name in
/// queue order (`Socket::backlog`, returned as (process, socket index,
/// place) to set). Its queue order is kept only if every waiting
/// connection is one process's: else refused, as is a connection whose
/// listener is not in the tree.
fn pending_elsewhere(
    procs: &[(i32, &Inspected)],
    served: &mut Vec<(usize, usize)>,
    obs: &mut Obstacles,
) -> Vec<(usize, usize, u32)> {
    let mut places = Vec::new();
    let mut placed: Vec<u64> = Vec::new();
    for (pb, (pid, ins)) in procs.iter().enumerate() {
        for w in &ins.cross.waiting {
            let mut from: Vec<usize> = Vec::new();
            let mut found = Vec::new();
            for (k, &icon) in w.icons.iter().enumerate() {
                let theirs = procs.iter().enumerate().find_map(|(pa, (_, a))| {
                    a.cross
                        .pending
                        .iter()
                        .find(|c| c.ino == u64::from(icon))
                        .map(|c| (pa, c.index))
                });
                if let Some((pa, index)) = theirs.filter(|(pa, _)| *pa != pb) {
                    if !from.contains(&pa) {
                        from.push(pa);
                    }
                    found.push((pa, index, k as u32, u64::from(icon)));
                    continue;
                }
                // One of the listener's own process: made and connected
                // by `cryo restore` too, in its place (detached from its
                // listener by the caller: `pair` NO_INDEX).
                let own = ins.b.fds.iter().find(|f| {
                    f.kind == fd_kind::SOCKET
                        && f.ino == u64::from(icon)
                        && ins
                            .b
                            .sockets
                            .get(f.object as usize)
                            .is_some_and(|s| s.state == socket_state::PENDING)
                });
                if let Some(f) = own {
                    found.push((pb, f.object as usize, k as u32, u64::from(icon)));
                }
            }
            if found.len() < w.icons.len() {
                obs.push(format!("process {pid}: {}", w.obstacle));
                continue;
            }
            let Some(desc) = ins
                .b
                .fds
                .iter()
                .find(|f| f.fd == w.fd)
                .map(|f| f.desc as usize)
            else {
                continue;
            };
            if !served.contains(&(pb, desc)) {
                served.push((pb, desc));
            }
            for (pa, index, place, ino) in found {
                places.push((pa, index, place));
                placed.push(ino);
                // Made and connected by `cryo restore`, in queue order
                // whatever process each is in (stop 30; one process's
                // only, connecting by itself, before).
                let first = procs[pa]
                    .1
                    .b
                    .fds
                    .iter()
                    .position(|f| f.kind == fd_kind::SOCKET && f.object as usize == index);
                if let Some(i) = first {
                    let i = procs[pa].1.b.fds[i].desc as usize;
                    if !served.contains(&(pa, i)) {
                        served.push((pa, i));
                    }
                }
            }
        }
    }
    for (pid, ins) in procs {
        for c in &ins.cross.pending {
            if !placed.contains(&c.ino) {
                obs.push(format!("process {pid}: {}", c.obstacle));
            }
        }
    }
    places
}

/// An epoll item whose file no fd of its process has
/// (`Inspected::epoll_elsewhere`) is no obstacle when that epoll set is a
/// tree object and another of its holders has every file it watches: the
/// restore has the first such holder, nearest the root, make it
/// (`restore::tree`), with its own fds, and the others take it. Redis's
/// BGSAVE child closes the clients' fds its parent's epoll set still
/// watches. Else it is refused as a process alone would be (each
/// holder's items that no fd of it has). `procs`: root first, as `share`
/// had them.
pub(crate) fn epolls_made_elsewhere(
    procs: &[(i32, &Inspected)],
    shared: &[TreeFd],
    obs: &mut Obstacles,
) {
    // Whether process `pid` has every file epoll set `object` watches
    // (its items were recorded under the set's first fd there).
    let whole = |pid: u32, object: u32| {
        procs
            .iter()
            .find(|(q, _)| *q as u32 == pid)
            .is_some_and(|(_, ins)| {
                !shared
                    .iter()
                    .filter(|t| t.object == object && t.pid == pid)
                    .any(|t| ins.epoll_elsewhere.iter().any(|(f, _)| *f == t.fd))
            })
    };
    for (pid, ins) in procs.iter() {
        for (fd, why) in &ins.epoll_elsewhere {
            let object = shared
                .iter()
                .find(|t| t.pid == *pid as u32 && t.fd == *fd)
                .map(|t| t.object);
            let made_elsewhere = object.is_some_and(|o| {
                shared
                    .iter()
                    .any(|t| t.object == o && t.pid != *pid as u32 && whole(t.pid, o))
            });
            if !made_elsewhere {
                obs.push(format!("process {pid}: {why}"));
            }
        }
    }
}

/// A working directory that is a dead process's /proc/PID is entered at
/// restore from a process made with that PID for a moment: not while a
/// holder of process group PID (its leader gone) holds it, which lives
/// until every process is ready.
pub(crate) fn dead_proc_cwds(t: &Tree, procs: &[(i32, &Inspected)], obs: &mut Obstacles) {
    for (pid, ins) in procs {
        let p = &ins.b.process;
        if p.flags & cryo_image::process_flags::CWD_DELETED == 0 {
            continue;
        }
        let cwd = ins.b.strings.text(p.cwd);
        let Some(dead) = cryo_image::dead_proc_dir(&cwd) else {
            continue;
        };
        if t.members
            .iter()
            .any(|m| m.rec.pgid == dead as u32 || m.rec.pid == dead as u32)
        {
            obs.push(format!(
                "process {pid}'s working directory is /proc/{dead} of a process that ended, and {dead} is the PID or process group of a process of the tree now; a restore cannot make both"
            ));
        }
    }
}

/// Named stream or seqpacket ends whose other end was closed (process,
/// first fd of the description): each is made again accepted from a
/// listener bound at its name for the moment, with what is at that name
/// moved aside (`restore::sockets::accepted_widow`). In a tree that is
/// done by the restore before any process exists: a process binding its
/// own listener at that name meanwhile would find its path gone.
fn named_widows(procs: &[(i32, &Inspected)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for (i, f) in ins.b.fds.iter().enumerate() {
            let widow = (f.kind == fd_kind::SOCKET && f.desc as usize == i)
                .then(|| ins.b.sockets.get(f.object as usize))
                .flatten()
                .is_some_and(|s| {
                    s.state == socket_state::WIDOWED
                        && s.sock_type != libc::SOCK_DGRAM as u32
                        && s.addr_len > 2
                });
            // (One in flight is its process's own, made with the queue
            // that holds it; one holding files in flight was refused.)
            if widow && f.in_flight == 0 {
                out.push((p, i));
            }
        }
    }
    out
}

/// Bound unix sockets (process, first fd of the description) that a
/// socket of another process is connected to by their path (a datagram
/// server and its clients): made by the restore before any process
/// exists, so that every client connects to a bound socket whatever
/// order the processes install their fds in. (Within one process the
/// restore connects after binding.)
fn served_elsewhere(procs: &[(i32, &Inspected)]) -> Vec<(usize, usize)> {
    use cryo_image::fds::sockaddr_bytes;
    let path = |words: &[u64; 16], len: u32| {
        let (b, n) = sockaddr_bytes(words, len);
        let a = b[..n].to_vec();
        // AF_UNIX with a path (not abstract, not unnamed)
        (a.len() > 2 && a[..2] == (libc::AF_UNIX as u16).to_ne_bytes() && a[2] != 0).then_some(a)
    };
    fn sock<'a>(ins: &'a Inspected, f: &Fd) -> Option<&'a cryo_image::fds::Socket> {
        (f.kind == fd_kind::SOCKET)
            .then(|| ins.b.sockets.get(f.object as usize))
            .flatten()
    }
    let mut peers: Vec<(usize, Vec<u8>)> = Vec::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for f in &ins.b.fds {
            if let Some(s) = sock(ins, f).filter(|s| s.state == socket_state::CONNECTED) {
                if let Some(a) = path(&s.peer, s.peer_len) {
                    peers.push((p, a));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for (i, f) in ins.b.fds.iter().enumerate() {
            if f.desc as usize != i {
                continue;
            }
            let Some(s) = sock(ins, f).filter(|s| s.state == socket_state::BOUND) else {
                continue;
            };
            if let Some(a) = path(&s.addr, s.addr_len) {
                if peers.iter().any(|(q, b)| *q != p && *b == a) {
                    out.push((p, i));
                }
            }
        }
    }
    out
}

/// Ghosts (`socket_flags::GHOST`) that datagram sockets connect to by
/// name at a tree's restore. A client of a ghost of another process
/// (`sockets::GhostClient`) must be connected to a ghost bound in the
/// tree, else it is refused by name. A ghost the restore makes once for
/// several processes (held by several, or `served` by name to another)
/// while some client connects by its name is bound by `cryo restore` with
/// its file kept until every process has its fds (`KeptGhost`): no other
/// ghost of the tree may have that name then (it would be bound in the
/// same window, and a client could reach the wrong one), so that is
/// refused too, naming both.
fn ghosts_served(procs: &[(i32, &Inspected)], served: &[(usize, usize)], obs: &mut Obstacles) {
    use cryo_image::fds::{sockaddr_bytes, sockaddr_display, socket_flags};
    let name = |words: &[u64; 16], len: u32| {
        let (a, n) = sockaddr_bytes(words, len);
        a[..n].to_vec()
    };
    // Every ghost: inode -> (bound, its name, the processes holding it).
    let mut ghosts: BTreeMap<u64, Ghost> = BTreeMap::new();
    // The names GHOST_PEER clients connect to.
    let mut wanted: Vec<Vec<u8>> = Vec::new();
    // The names other sockets have (bound there, or a connection's end
    // made through a listener bound there for a moment).
    let mut named: Vec<(Vec<u8>, i32, i32)> = Vec::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for f in ins.b.fds.iter().filter(|f| f.kind == fd_kind::SOCKET) {
            let Some(s) = ins.b.sockets.get(f.object as usize) else {
                continue;
            };
            if s.flags & socket_flags::GHOST != 0 {
                let e = ghosts.entry(f.ino).or_insert_with(|| {
                    (
                        s.state == socket_state::BOUND,
                        name(&s.addr, s.addr_len),
                        Vec::new(),
                    )
                });
                if !e.2.contains(&p) {
                    e.2.push(p);
                }
            }
            if s.flags & socket_flags::GHOST_PEER != 0 {
                wanted.push(name(&s.peer, s.peer_len));
            }
            if s.flags & socket_flags::GHOST == 0 && s.addr_len > 2 {
                // (A relative name: the absolute path of its socket file.)
                let abs = ins
                    .b
                    .files
                    .get(f.file as usize)
                    .filter(|_| s.flags & socket_flags::RELATIVE != 0)
                    .map(|id| {
                        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                        a.extend_from_slice(ins.b.strings.text(id.path).as_bytes());
                        a
                    });
                named.push((
                    abs.unwrap_or_else(|| name(&s.addr, s.addr_len)),
                    procs[p].0,
                    f.fd,
                ));
            }
        }
    }
    for (pid, ins) in procs {
        for c in &ins.cross.ghost_clients {
            if !ghosts.get(&c.peer).is_some_and(|g| g.0) {
                obs.push(format!("process {pid}: {}", c.obstacle));
            }
        }
    }
    let served_inos: Vec<u64> = served
        .iter()
        .filter_map(|&(p, i)| procs[p].1.b.fds.get(i).map(|f| f.ino))
        .collect();
    let kept = |ino: &u64, (bound, n, holders): &Ghost| {
        *bound && wanted.contains(n) && (holders.len() > 1 || served_inos.contains(ino))
    };
    ghost_dirs(procs, &ghosts, &kept, obs);
    // One bound by a relative name is bound in a directory of the
    // restore's own (`KeptGhost`), which would be the working directory
    // of `cryo restore` while the whole tree is made.
    for (ino, g) in &ghosts {
        if kept(ino, g) && g.1.len() > 2 && g.1[2] != 0 && g.1[2] != b'/' {
            obs.push(format!(
                "unix socket socket:[{ino}] was bound to the relative name {} and its file removed since, and other processes of the tree connect to it by that name; not supported",
                sockaddr_display(&g.1)
            ));
        }
    }
    // A ghost one process binds during its own fd install moves whatever
    // is at its name aside for that moment, while the other processes
    // install theirs: one that binds at that name, or connects by it,
    // would meet it. (Made before any fork, a shared one cannot.)
    for (ino, g) in &ghosts {
        // (A relative name is bound in a directory of the restore's own.)
        let relative = g.1.len() > 2 && g.1[2] != 0 && g.1[2] != b'/';
        if g.2.len() != 1 || served_inos.contains(ino) || relative {
            continue;
        }
        let other = procs.iter().enumerate().find_map(|(p, (pid, ins))| {
            if p == g.2[0] {
                return None;
            }
            ins.b.fds.iter().find_map(|f| {
                let s = ins.b.sockets.get(f.object as usize)?;
                let uses = f.kind == fd_kind::SOCKET
                    && s.state != socket_state::PAIR
                    && s.flags & socket_flags::GHOST == 0
                    && (same_name(&name(&s.addr, s.addr_len), &g.1)
                        || (matches!(s.state, socket_state::CONNECTED | socket_state::PENDING)
                            && same_name(&name(&s.peer, s.peer_len), &g.1)));
                uses.then_some((*pid, f.fd))
            })
        });
        if let Some((pid, fd)) = other {
            obs.push(format!(
                "unix socket socket:[{ino}] was bound to {} and its file removed since, and process {pid}'s fd {fd} binds or connects at that name too; restoring the tree at once, they would meet",
                sockaddr_display(&g.1)
            ));
        }
    }
    let mut said: Vec<&Vec<u8>> = Vec::new();
    for (ino, g) in &ghosts {
        let n = &g.1;
        if !kept(ino, g) || said.contains(&n) {
            continue;
        }
        if let Some((other, _)) = ghosts.iter().find(|(i, g)| *i != ino && g.1 == *n) {
            said.push(n);
            obs.push(format!(
                "unix sockets socket:[{ino}] and socket:[{other}] of the tree were both bound to {} and their files removed since, and processes connect to it by that name at restore; cryo can bind only one of them there while they do",
                sockaddr_display(n)
            ));
        } else if let Some((_, pid, fd)) = named.iter().find(|(a, _, _)| same_name(a, n)) {
            said.push(n);
            obs.push(format!(
                "unix socket socket:[{ino}] of the tree was bound to {} and its file removed since, processes connect to it by that name at restore, and process {pid}'s fd {fd} has that name now; cryo would bind both there while they do",
                sockaddr_display(n)
            ));
        }
    }
}

/// Whether two unix socket names (sockaddr bytes) are one path: with or
/// without the NUL a program may have passed in the length.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let trim = |x: &[u8]| {
        let end = x.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        x[..end.max(2.min(x.len()))].to_vec()
    };
    trim(a) == trim(b)
}

/// A ghost of the tree: whether bound (not listening), its name, the
/// processes holding it.
type Ghost = (bool, Vec<u8>, Vec<usize>);

/// A ghost whose directory is gone too is bound in that directory made
/// again for a moment (`DirsMade`; a kept ghost's until every process is
/// ready). Processes of a tree restore at once: anything else made again
/// under that directory in another process, or while a kept ghost holds
/// it (another ghost, a removed working directory, a removed file or
/// directory an fd held), would find it there, or be found: refused,
/// naming both.
fn ghost_dirs(
    procs: &[(i32, &Inspected)],
    ghosts: &BTreeMap<u64, Ghost>,
    kept: &dyn Fn(&u64, &Ghost) -> bool,
    obs: &mut Obstacles,
) {
    use std::path::{Path, PathBuf};
    let path_of = |n: &[u8]| crate::sockets::unix_bound_path(n).filter(|p| p.is_absolute());
    // The topmost directory of `p` that is gone now.
    let gone_top = |p: &Path| -> Option<PathBuf> {
        p.ancestors()
            .skip(1)
            .take_while(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_err())
            .last()
            .map(Path::to_path_buf)
    };
    // What else is made again at a path: (path, processes, kept ghost).
    let mut things: Vec<(PathBuf, Vec<usize>, bool, String)> = Vec::new();
    for (ino, g) in ghosts {
        if let Some(p) = path_of(&g.1) {
            things.push((p, g.2.clone(), kept(ino, g), format!("socket:[{ino}]")));
        }
    }
    for (p, (pid, ins)) in procs.iter().enumerate() {
        let text = |r| ins.b.strings.text(r);
        if ins.b.process.flags & cryo_image::process_flags::CWD_DELETED != 0 {
            let cwd = text(ins.b.process.cwd);
            things.push((
                PathBuf::from(cwd.trim_end_matches(" (deleted)")),
                vec![p],
                false,
                format!("process {pid}'s working directory"),
            ));
        }
        for f in &ins.b.fds {
            let t = text(f.target);
            if let Some(removed) = t.strip_suffix(" (deleted)").filter(|t| t.starts_with('/')) {
                things.push((
                    PathBuf::from(removed),
                    vec![p],
                    false,
                    format!("process {pid}'s fd {}", f.fd),
                ));
            }
        }
    }
    for (ino, g) in ghosts {
        let Some(top) = path_of(&g.1).as_deref().and_then(gone_top) else {
            continue;
        };
        let me = format!("socket:[{ino}]");
        let clash = things.iter().find(|(p, holders, other_kept, what)| {
            *what != me
                && p.starts_with(&top)
                && (kept(ino, g) || *other_kept || *holders != g.2 || g.2.len() > 1)
        });
        if let Some((p, _, _, what)) = clash {
            obs.push(format!(
                "unix socket {me} was bound to {} and its directory {} removed since; restoring the tree, cryo would make that directory again for it while {what} ({}) is made again there too",
                cryo_image::fds::sockaddr_display(&g.1),
                top.display(),
                p.display()
            ));
        }
    }
}

/// A hung-up terminal (`fd_kind::HUNG_UP_TTY`) is made again as the slave
/// of a new pair: the descriptions one process makes itself from one
/// pair, those several processes hold (`shared`, made by `cryo restore`)
/// from one pair. So a terminal open in several processes must be so
/// through shared descriptions only, else parts of it would come back as
/// another terminal: refused by name.
fn hung_up_terminals(procs: &[(i32, &Inspected)], shared: &[TreeFd], obs: &mut Obstacles) {
    // (devpts instance, rdev) -> (processes, whether one of its fds is not
    // shared)
    let mut by_tty: BTreeMap<(u64, u64), (Vec<usize>, bool)> = BTreeMap::new();
    for (p, (pid, ins)) in procs.iter().enumerate() {
        for f in ins.b.fds.iter().filter(|f| f.kind == fd_kind::HUNG_UP_TTY) {
            let e = by_tty.entry((f.dev, f.rdev)).or_default();
            if !e.0.contains(&p) {
                e.0.push(p);
            }
            e.1 |= !shared.iter().any(|t| t.pid == *pid as u32 && t.fd == f.fd);
        }
    }
    for ((_, rdev), (ps, own)) in by_tty {
        if ps.len() > 1 && own {
            obs.push(format!(
                "the hung-up terminal /dev/pts/{} (its master closed) is open in processes {}, not through one shared open; cryo would make it again as several terminals",
                libc::minor(rdev),
                ps.iter().map(|&p| procs[p].0.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

/// Every fd of every holder of a description (`holders`: the process and
/// the description's first fd there) as object `object`.
fn describe(
    procs: &[(i32, &Inspected)],
    holders: &[(usize, usize)],
    object: u32,
    end: u32,
    peer: u32,
    out: &mut Vec<TreeFd>,
) {
    for &(p, i) in holders {
        for g in procs[p].1.b.fds.iter().filter(|g| g.desc as usize == i) {
            out.push(TreeFd {
                object,
                pid: procs[p].0 as u32,
                fd: g.fd,
                pipe_end: end,
                peer,
            });
        }
    }
}

/// Bytes queued in socket pair ends: (process, socket index, bytes, and
/// whether a stream's are framed as messages: `socket_flags::FRAMED`).
pub(crate) type Queued = Vec<(usize, usize, Vec<u8>, bool)>;

/// Unix socket pairs whose ends (or whose ends' descriptions) are in more
/// than one process: each end a tree object naming the other. Returns the
/// socket inodes done and the bytes queued in ends no process captured
/// on its own (an end paired outside its process), and the ends at fd
/// 0-2 connected outside the tree that the restore's own fds replace
/// (`CrossEnd::stdio`); another socket connected to one outside the tree
/// keeps its process's obstacle.
fn socket_pairs(
    procs: &[(i32, &Inspected)],
    out: &mut Vec<TreeFd>,
    next_object: &mut u32,
    obs: &mut Obstacles,
) -> (Vec<u64>, Queued, Vec<(usize, usize)>) {
    // Socket inode -> the first fds of its description, by process.
    let mut holders: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    let mut outside = Vec::new();
    for (p, (_, ins)) in procs.iter().enumerate() {
        for (i, f) in ins.b.fds.iter().enumerate() {
            if f.kind != fd_kind::SOCKET || f.desc as usize != i {
                continue;
            }
            holders.entry(f.ino).or_default().push((p, i));
            // A pair made in this process.
            let Some(s) = ins.b.sockets.get(f.object as usize) else {
                continue;
            };
            if s.state == socket_state::PAIR && s.pair != NO_INDEX {
                if let Some(o) = ins
                    .b
                    .fds
                    .iter()
                    .find(|g| g.kind == fd_kind::SOCKET && g.object == s.pair)
                {
                    pairs.push((f.ino.min(o.ino), f.ino.max(o.ino)));
                }
            }
        }
    }
    for (p, (pid, ins)) in procs.iter().enumerate() {
        for c in &ins.cross.ends {
            if holders.contains_key(&c.peer) {
                pairs.push((c.ino.min(c.peer), c.ino.max(c.peer)));
            } else if c.stdio {
                // At fd 0-2 and connected outside the tree: the
                // restore's own fd in its place.
                outside.push((p, c.index));
            } else {
                // (Named by its process: "fd 3" alone read as the root's.)
                obs.push(format!("process {pid}: {}", c.obstacle));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut done = Vec::new();
    let mut queued = Vec::new();
    for (a, b) in pairs {
        let (ha, hb) = (&holders[&a], &holders[&b]);
        let mut spans: Vec<usize> = ha.iter().chain(hb).map(|h| h.0).collect();
        spans.sort_unstable();
        spans.dedup();
        if spans.len() < 2 {
            continue; // a pair inside one process: its own image has it
        }
        done.extend([a, b]);
        let mut ok = true;
        let mut flying = Vec::new();
        for end in [a, b] {
            // An end whose process saw it paired outside: its bytes and
            // shutdown state are read here (an end paired inside its
            // process had them read with it).
            let Some((p, c)) = procs.iter().enumerate().find_map(|(p, (_, ins))| {
                ins.cross.ends.iter().find(|c| c.ino == end).map(|c| (p, c))
            }) else {
                continue;
            };
            match c.queued() {
                Ok((bytes, framed)) if !bytes.is_empty() => {
                    if framed && c.held.iter().any(|h| !h.is_empty()) {
                        flying.push((p, c.fd, c.shutdown));
                    }
                    queued.push((p, c.index, bytes, framed && !c.messages))
                }
                Ok(_) => {}
                Err(why) => {
                    obs.push(format!("process {}: {why}", procs[p].0));
                    ok = false;
                }
            }
        }
        // Files in flight both ways: each process sends its own queue
        // again at restore, and neither knows when the other has, which
        // a shutdown must follow.
        if flying.len() == 2 && flying.iter().any(|f| f.2 & 3 != 0) {
            obs.push(format!(
                "process {}: fd {} (a unix socket paired with process {}) has files in flight queued at both ends and was shut down; not supported yet",
                procs[flying[0].0].0,
                flying[0].1,
                procs[flying[1].0].0
            ));
            ok = false;
        }
        if !ok {
            continue;
        }
        let (oa, ob) = (*next_object, *next_object + 1);
        *next_object += 2;
        describe(procs, ha, oa, 0, ob, out);
        describe(procs, hb, ob, 1, oa, out);
    }
    (done, queued, outside)
}

/// Why a description of this kind cannot be handed to several processes
/// by a restore yet (None: it can).
fn unshareable(ins: &Inspected, f: &Fd) -> Option<String> {
    // (An unlinked file or memfd held by several processes is a
    // `tree_files` object too: made once, and this description opened on
    // it once.)
    if f.kind == fd_kind::CHAR_DEVICE && target(ins, f).ends_with(" (deleted)") {
        return Some("a removed device node shared between processes is not supported yet".into());
    }
    match f.kind {
        fd_kind::REGULAR
        | fd_kind::DIRECTORY
        | fd_kind::NULL_DEVICE
        | fd_kind::CHAR_DEVICE
        | fd_kind::TTY
        | fd_kind::HUNG_UP_TTY
        | fd_kind::PTY
        | fd_kind::PTY_SLAVE
        | fd_kind::PIPE
        | fd_kind::FIFO
        // (Made once, by cryo restore before it forks: one counter, one
        // timer, one signal mask for every holder, as before.)
        | fd_kind::EVENTFD
        | fd_kind::TIMERFD
        | fd_kind::SIGNALFD
        // (Made by its first holder with its items or watches (an epoll
        // set's name that process's fds); the others take that one at
        // restore.)
        | fd_kind::EPOLL
        | fd_kind::INOTIFY
        | fd_kind::FANOTIFY
        // (A pidfd of a live process of the tree, likewise: opened by its
        // first holder once every process exists; one of an ended process
        // made by the restore before it forks: see `share`.)
        | fd_kind::PIDFD => None,
        // A /proc file of no process (/proc/sys/..., /proc/meminfo) or of
        // one outside the tree (its start time in `rdev`): opened once by
        // `cryo restore`, as a file is. One of a process of the tree is
        // opened by its holder once that process exists.
        fd_kind::PROC => {
            let names_pid = target(ins, f)
                .strip_prefix("/proc/")
                .and_then(|t| t.split('/').next())
                .is_some_and(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()));
            (names_pid && f.rdev == 0).then(|| {
                "a /proc file of a process of the tree shared between processes is not supported yet"
                    .into()
            })
        }
        fd_kind::SOCKET => {
            let s = ins.b.sockets.get(f.object as usize)?;
            match s.state {
                socket_state::UNBOUND | socket_state::BOUND | socket_state::LISTENING => None,
                // (Each holder would take it out of repair mode and send
                // its bytes never sent.)
                socket_state::REPAIRED => Some(
                    "a TCP connection kept with TCP repair shared between processes is not supported yet"
                        .into(),
                ),
                // One end left of a pair: made alone.
                socket_state::WIDOWED => None,
                _ => Some(
                    "a connected socket or socket pair shared between processes is not supported yet"
                        .into(),
                ),
            }
        }
        k => Some(format!(
            "sharing {} between processes is not supported yet",
            fd_kind::name(k)
        )),
    }
}

fn target(ins: &Inspected, f: &Fd) -> String {
    ins.b.strings.text(f.target)
}

impl Tree {
    /// Let every live process go: as it was, left stopped, or killed
    /// (children first, so no parent sees a child die and reacts).
    pub fn let_go(&mut self, after: crate::capture::After) -> Result<(), PtraceError> {
        use crate::capture::After;
        let mut first = None;
        let mut killed = Vec::new();
        for m in self.members.iter_mut().rev() {
            if let Some(g) = m.group.take() {
                killed.push(g.pid());
                let r = match after {
                    After::AsItWas => g.detach(),
                    After::LeaveStopped => g.leave_stopped(),
                    After::Kill => g.kill(),
                };
                if let Err(e) = r {
                    first.get_or_insert(e);
                }
            }
        }
        if after == After::Kill {
            // Dead before this returns (a zombie at most): a restore
            // started right after finds the captured PIDs free of live
            // processes (a SIGKILLed task still runs its exit for a
            // moment, more so on a loaded machine).
            let t0 = std::time::Instant::now();
            while killed
                .iter()
                .any(|&p| stat(p).is_some_and(|s| s.state != 'Z' && s.state != 'X'))
                && t0.elapsed() < std::time::Duration::from_secs(5)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
