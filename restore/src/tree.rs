//! Restoring a process tree.
//!
//! [`prepare`] checks every process's image as a single restore would, and
//! that every PID but the root's is free; it makes, in this process, every
//! object the tree shares (`tree_fds`): a pipe whose ends are in several
//! processes, with the bytes that were in it; a file, terminal or
//! listening socket that several processes hold. Each process's fd plan
//! takes its shared fds from those.
//!
//! [`exec`] then builds the tree by forking, each process its own
//! children, each child with its captured PID (clone3 `set_tid`): parent
//! links come back, and so do the PIDs parents keep in memory. A process
//! that led a session or a process group makes it again; the others join
//! theirs once every process exists. Zombies are forked and exit at once
//! with their captured status, left for their parent to wait for. Every
//! process inherits the shared objects; each then installs its fds and,
//! once all of them have, execs its own shim. The root is this process
//! (it keeps the invoker's PID, session and process group, as a single
//! restore does): processes captured in the root's process group join
//! the invoker's. A root that led a session of its own without a
//! terminal leads one again first (`lead_own_session`).
//!
//! Nothing runs before everything is in place: until every process has
//! installed its fds, all wait at a barrier ([`crate::sys::Barrier`]); a
//! failure anywhere kills every process made so far, and `cryo restore`
//! reports it. After the barrier each shim restores its process on its
//! own; a signal one restored process sends another that is still being
//! restored waits, blocked, until that one resumes.

use crate::fds::{self, FdPlan, PipeMake, Source};
use crate::sys::{self, Barrier, Forked, Step};
use crate::{Options, Plan, RestoreError};
use cryo_image::fds::{pipe_flags, socket_state};
use cryo_image::load::LoadedImage;
use cryo_image::tree::{proc_dir, proc_state, TreeProc};
use cryo_image::{fd_kind, Image};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

/// One process of the tree.
pub(crate) struct Member {
    pub rec: TreeProc,
    /// Its restore (None for the root, whose plan is the outer one, and
    /// for zombies). Taken by the forked process that becomes it.
    plan: RefCell<Option<Plan>>,
    /// Forked by its parent's shim; `cryo restore` forks a stand-in
    /// (`crate::standin`).
    stand_in: bool,
}

/// The tree behind a root's [`Plan`].
pub(crate) struct Tree {
    members: Vec<Member>,
    /// The shared objects, ours until every process has its copies.
    _made: Vec<OwnedFd>,
    /// Ghost sockets whose files are kept until every process has
    /// connected to them (released at the *ready* barrier).
    ghosts: RefCell<Vec<crate::sockets::KeptGhost>>,
    /// The pty pairs made again.
    ptys: crate::ptys::Ptys,
    /// (PID, fd): fds 0-2 of processes but the root, pipes to outside
    /// the tree, that get this restore's own ([`outside_stdio`]).
    given_stdio: Vec<(u32, i32)>,
}

impl Tree {
    /// Call `f` with every other process's image (the root's is its
    /// plan's own).
    pub(crate) fn each_image(
        &self,
        f: &mut dyn FnMut(&LoadedImage, &Image) -> Result<(), RestoreError>,
    ) -> Result<(), RestoreError> {
        for m in &self.members {
            if let Some(p) = m.plan.borrow().as_ref() {
                f(&p.image, &p.image())?;
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Tasks its restore makes, the root's threads left out: a process
    /// for each (zombies too) and each one's threads. (A stand-in is
    /// reaped before the child forked in its place takes its PID: a
    /// review found a 2-process tree refused at pids.max 2.)
    pub(crate) fn tasks(&self) -> usize {
        let mut n = self.members.len();
        let _ = self.each_image(&mut |_, img| {
            n += img.threads().len();
            Ok(())
        });
        n
    }

    /// Call `f` with every other live process's plan.
    pub(crate) fn each_plan(&self, f: &mut dyn FnMut(&Plan)) {
        for m in &self.members {
            if let Some(p) = m.plan.borrow().as_ref() {
                f(p);
            }
        }
    }

    /// [`Tree::given_stdio`].
    pub fn given_stdio(&self) -> &[(u32, i32)] {
        &self.given_stdio
    }

    /// Every live process in the foreground group `pgid` (the root's, or
    /// the other group made the foreground again) but the root queues
    /// itself a SIGWINCH before its program runs (handoff `WINCH`): the
    /// terminal they are the foreground of has another size.
    pub(crate) fn signal_window_change(&self, pgid: u32) {
        for m in self.members.iter().skip(1) {
            if m.rec.state == proc_state::LIVE && m.rec.pgid == pgid {
                if let Some(p) = m.plan.borrow_mut().as_mut() {
                    p.extra_flags |= cryo_image::handoff::flags::WINCH;
                }
            }
        }
    }

    pub fn ptys(&self) -> &crate::ptys::Ptys {
        &self.ptys
    }
}

/// Load and check every process of the tree whose root image is `root`;
/// make the shared objects. Changes nothing outside this process.
pub(crate) fn prepare(
    dir: &Path,
    root: LoadedImage,
    mut opts: Options,
) -> Result<Plan, RestoreError> {
    let img = root.image()?;
    let recs: Vec<TreeProc> = img.tree().iter().collect();
    // --inherit-fd PID:N, each for its process (the root's with the
    // others it has).
    let mut inherit: BTreeMap<u32, Vec<(i32, i32)>> = BTreeMap::new();
    for (p, n, m) in std::mem::take(&mut opts.inherit_member_fds) {
        match recs.iter().find(|r| r.pid == p) {
            Some(r) if r.state != proc_state::LIVE => {
                return Err(RestoreError::Tree(format!(
                    "--inherit-fd {p}:{n}: process {p} had ended (a zombie), and has no fds"
                )))
            }
            Some(r) if r.pid == recs[0].pid => opts.inherit_fds.push((n, m)),
            Some(_) => inherit.entry(p).or_default().push((n, m)),
            None => {
                return Err(RestoreError::Tree(format!(
                    "--inherit-fd {p}:{n}: the image has no process {p} (its processes: {})",
                    recs.iter()
                        .map(|r| r.pid.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
    can_set_pids()?;
    let mut images: Vec<Option<LoadedImage>> = vec![None];
    let mut pids: Vec<u32> = recs.iter().skip(1).map(|r| r.pid).collect();
    if opts.same_pid {
        pids.push(recs[0].pid);
    }
    if !opts.pidns {
        pids_free(&pids)?;
    }
    for r in recs.iter().skip(1) {
        images.push(if r.state == proc_state::LIVE {
            Some(LoadedImage::open(&dir.join(proc_dir(r.pid)))?)
        } else {
            None
        });
    }
    let img_of = |k: usize| -> Option<(&LoadedImage, Image)> {
        let l = if k == 0 {
            Some(&root)
        } else {
            images[k].as_ref()
        };
        l.and_then(|l| Some((l, l.image().ok()?)))
    };
    let eager_fill = crate::eager_if_small(&mut opts, || {
        (0..recs.len())
            .filter_map(img_of)
            .map(|(_, i)| crate::lazy::lazy_pages(&i))
            .sum()
    })
    .or_else(|| {
        let images: Vec<Image> = (0..recs.len()).filter_map(img_of).map(|(_, i)| i).collect();
        crate::eager_if_shared(&mut opts, shared_copies(&images))
    });
    // Processes that were in different cgroups go back to them; a tree
    // in one set of cgroups stays in ours (`Cgroups::Auto`).
    if opts.cgroups == crate::Cgroups::Auto {
        let sets: Vec<String> = (0..recs.len())
            .filter_map(img_of)
            .map(|(_, i)| {
                i.task()
                    .and_then(|t| i.str(t.cgroups).map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        opts.cgroups = if sets.windows(2).all(|w| w[0] == w[1]) {
            crate::Cgroups::Inherit
        } else {
            crate::Cgroups::Captured
        };
    }
    // Ptys first: shared objects may be fds of them.
    let ptys = {
        let live: Vec<(&LoadedImage, Image)> = (0..recs.len()).filter_map(img_of).collect();
        let forked: Vec<u32> = recs.iter().skip(1).map(|r| r.pid).collect();
        crate::ptys::Ptys::make(&live, &forked, opts.same_pid || opts.pidns, !opts.no_verify)?
    };
    let made = make_shared(&recs, &img, &img_of, &opts, &inherit, &ptys)?;
    let (no_fds, no_files, no_peers, no_from) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let made_of = |pid: u32| crate::MadeFor {
        fds: made.fds.get(&pid).unwrap_or(&no_fds).as_slice(),
        files: made.files.get(&pid).unwrap_or(&no_files).as_slice(),
        ptys: Some(&ptys),
        peers: made.peers.get(&pid).unwrap_or(&no_peers).as_slice(),
        from_peer: made.from_peer.get(&pid).unwrap_or(&no_from).as_slice(),
    };
    let mut given_stdio = Vec::new();
    let mut members = vec![Member {
        rec: recs[0],
        plan: RefCell::new(None),
        stand_in: false,
    }];
    for (r, image) in recs.iter().zip(images).skip(1) {
        let plan = match image {
            Some(image) => {
                // The user's --inherit-fd and --restore-stdio are the
                // root's: every other process gets its fds 0-2 back as
                // they were (or shared with the root, as they were).
                // A process that was stopped (job control) stays stopped:
                // its parent may be waiting to see it so. (The root is
                // resumed, as a single restore is, unless --keep-stopped,
                // which is the root's alone: `kill -CONT ROOT` must
                // resume the program, and a child kept stopped with it
                // stayed stopped for good, one in a session of its own
                // out of reach of a group's SIGCONT: a survey of stop 36,
                // Erlang's erl_child_setup.)
                let child_img = image.image()?;
                let was_stopped =
                    child_img.process().flags & cryo_image::process_flags::WAS_STOPPED != 0;
                // But a pipe at 0-2 whose other end was outside the tree
                // cannot come back as it was: it gets this restore's own,
                // as the root's fds 0-2 do (a shell's `2>&5` of a pipe to
                // an outside reader was captured, and refused by every
                // restore until stop 48).
                let outside = outside_stdio(&child_img);
                let child_opts = Options {
                    inherit_fds: inherit.remove(&r.pid).unwrap_or_default(),
                    member: Some(r.pid),
                    restore_stdio: [0, 1, 2]
                        .into_iter()
                        .filter(|n| !outside.contains(n))
                        .collect(),
                    keep_stopped: was_stopped,
                    same_pid: false,
                    pidns: false,
                    say_own_pid: false,
                    ..opts.clone()
                };
                // (Said of those the root does not share: its fds 0-2
                // are ours in any case; nor of one an --inherit-fd gives,
                // its own or its description's.)
                let desc_of = |n: i32| child_img.fds().iter().find(|f| f.fd == n).map(|f| f.desc);
                let inherited = |n: i32| {
                    child_opts
                        .inherit_fds
                        .iter()
                        .any(|&(m, _)| desc_of(m).is_some() && desc_of(m) == desc_of(n))
                };
                given_stdio.extend(
                    outside
                        .iter()
                        .filter(|&&n| !shared_with(&img, (r.pid, n), recs[0].pid) && !inherited(n))
                        .map(|&n| (r.pid, n)),
                );
                let sub = dir.join(proc_dir(r.pid));
                let p = crate::prepare_one(&sub, image, child_opts, made_of(r.pid))
                    .map_err(|e| in_process(r.pid, e))?;
                Some(p)
            }
            None => None,
        };
        members.push(Member {
            rec: *r,
            plan: RefCell::new(plan),
            stand_in: false,
        });
    }
    let mut plan = crate::prepare_one(dir, root, opts, made_of(recs[0].pid))?;
    choose_stand_ins(&recs, &mut plan, &mut members)?;
    // POSIX locks are taken again by each shim past the first barrier:
    // a second round, before any program runs (`flags::LOCKS`).
    let posix = |img: &Image| {
        img.locks()
            .iter()
            .any(|l| l.kind == cryo_image::fds::lock_kind::POSIX)
    };
    let locks = posix(&plan.image())
        || members
            .iter()
            .any(|m| m.plan.borrow().as_ref().is_some_and(|p| posix(&p.image())));
    if locks {
        plan.extra_flags |= cryo_image::handoff::flags::LOCKS;
    }
    plan.eager_fill = eager_fill;
    plan.tree = Some(Box::new(Tree {
        members,
        _made: made.ours,
        ghosts: RefCell::new(made.ghosts),
        ptys,
        given_stdio,
    }));
    Ok(plan)
}

/// Whether process `pid`'s fd `n` is an object of the tree (`tree_fds` of
/// the root's image) that process `other` holds too.
fn shared_with(root_img: &Image, (pid, n): (u32, i32), other: u32) -> bool {
    let t = root_img.tree_fds();
    t.iter()
        .find(|e| e.pid == pid && e.fd == n)
        .is_some_and(|e| t.iter().any(|o| o.pid == other && o.object == e.object))
}

/// A tree member's fds 0-2 that are a pipe or FIFO whose other end was
/// outside the tree, or a socket connected outside it
/// (`socket_state::OUTSIDE`).
fn outside_stdio(img: &Image) -> Vec<i32> {
    img.fds()
        .iter()
        .filter(|f| {
            f.fd <= 2
                && match f.kind {
                    fd_kind::PIPE | fd_kind::FIFO => img
                        .pipes()
                        .get(f.object as usize)
                        .is_some_and(|p| p.flags & pipe_flags::INSIDE == 0),
                    fd_kind::SOCKET => img
                        .sockets()
                        .get(f.object as usize)
                        .is_some_and(|s| s.state == cryo_image::fds::socket_state::OUTSIDE),
                    _ => false,
                }
        })
        .map(|f| f.fd)
        .collect()
}

/// The pages of pages.img that more than one process of the tree maps
/// (capture stored a page shared copy-on-write once), counted once per
/// process beyond the first: what a restore that gives each process its
/// own copy adds.
fn shared_copies(images: &[Image]) -> u64 {
    let mut runs: Vec<(u64, u64)> = images
        .iter()
        .flat_map(|i| {
            i.page_runs()
                .iter()
                .filter(|r| r.kind == cryo_image::run_kind::DATA)
                .map(|r| (r.offset / cryo_image::PAGE_SIZE, r.npages as u64))
                .collect::<Vec<_>>()
        })
        .collect();
    let all: u64 = runs.iter().map(|r| r.1).sum();
    // The distinct pages: the runs' union.
    runs.sort_unstable();
    let (mut distinct, mut end) = (0u64, 0u64);
    for (start, n) in runs {
        let stop = start + n;
        if stop > end {
            distinct += stop - start.max(end);
            end = stop;
        }
    }
    all - distinct
}

/// The children their parent's shim forks (`crate::standin`): each gets
/// [`flags::STAND_IN`], its parent [`flags::FORKS`]. `--phases` says which
/// and why not.
///
/// [`flags::STAND_IN`]: cryo_image::handoff::flags::STAND_IN
/// [`flags::FORKS`]: cryo_image::handoff::flags::FORKS
///
/// A child that shared its parent's fd table can only be made so (a
/// process that execs gets a table of its own): where it cannot be, the
/// restore is refused, naming why. Such a child may have children of its
/// own if its shim can fork every one of them (zdtm fdt_shared); a child
/// with a table of its own and children execs its own shim.
fn choose_stand_ins(
    recs: &[TreeProc],
    root: &mut Plan,
    members: &mut [Member],
) -> Result<(), RestoreError> {
    use cryo_image::handoff::flags;
    let mut refs = std::collections::BTreeSet::new();
    cryo_image::fork::referenced(&root.image(), &mut refs);
    for m in members.iter() {
        if let Some(p) = m.plan.borrow().as_ref() {
            cryo_image::fork::referenced(&p.image(), &mut refs);
        }
    }
    // Why each member execs its own shim (children decided before their
    // parents: members come after their parents).
    let mut whys: Vec<Option<String>> = vec![None; members.len()];
    for c in (1..members.len()).rev() {
        let Some(p) = members
            .iter()
            .position(|m| m.rec.pid == members[c].rec.ppid)
        else {
            continue;
        };
        let (why, shares_fds) = {
            let cp = members[c].plan.borrow();
            let Some(cp) = cp.as_ref() else { continue };
            let pp = members[p].plan.borrow();
            let pp = if p == 0 { Some(&*root) } else { pp.as_ref() };
            let Some(pp) = pp else { continue };
            let shares_fds =
                cp.image().process().flags & cryo_image::process_flags::SHARES_PARENT_FDS != 0;
            let why = crate::standin::obstacle(
                recs,
                &refs,
                (members[p].rec, pp),
                (members[c].rec, cp),
                shares_fds,
            )
            .map(str::to_owned);
            (why, shares_fds)
        };
        // Its children are forked by its shim, their stand-ins by the
        // nearest ancestor that execs its own (`Cx::forker`).
        let kids = (c + 1..members.len()).filter(|&k| members[k].rec.ppid == members[c].rec.pid);
        let why = why.or_else(|| {
            let mut kids = kids.peekable();
            if kids.peek().is_some() && !shares_fds {
                return Some("it has children".to_owned());
            }
            kids.find(|&k| !members[k].stand_in).map(|k| {
                format!(
                    "its child {} cannot be forked by its shim: {}",
                    members[k].rec.pid,
                    whys[k].as_deref().unwrap_or("not a live child")
                )
            })
        });
        if let (Some(w), true) = (&why, shares_fds) {
            return Err(RestoreError::Tree(format!(
                "process {} shared its parent's fd table (clone with CLONE_FILES), which a restore makes again only by forking it from its parent's shim, and cannot here: {w}",
                members[c].rec.pid
            )));
        }
        if root.opts.phases {
            match &why {
                None => eprintln!(
                    "cryo restore: process {} is forked by its parent's shim (copy-on-write sharing kept)",
                    members[c].rec.pid
                ),
                Some(w) => eprintln!(
                    "cryo restore: process {} execs its own shim: {w}",
                    members[c].rec.pid
                ),
            }
        }
        if why.is_some() {
            whys[c] = why;
            continue;
        }
        members[c].stand_in = true;
        if let Some(cp) = members[c].plan.borrow_mut().as_mut() {
            cp.extra_flags |= flags::STAND_IN;
            cp.stand_in_parent = members[c].rec.ppid as u64;
            if shares_fds {
                cp.extra_flags |= flags::SHARES_FDS;
            }
        }
        if p == 0 {
            root.extra_flags |= flags::FORKS;
        } else if let Some(pp) = members[p].plan.borrow_mut().as_mut() {
            pp.extra_flags |= flags::FORKS;
        }
    }
    // A process that forks lines holds some of their stand-ins' fds at
    // once (`cryo_image::fork::forker_over`): they must fit below its
    // open-file limit, or some would be missing past the point of no
    // return.
    let parents = parents(members);
    let forkers = forkers(members);
    let mut held_by: Vec<Vec<(usize, bool)>> = vec![Vec::new(); members.len()];
    for k in (1..members.len()).filter(|&k| members[k].stand_in) {
        let shares = members[k]
            .plan
            .borrow()
            .as_ref()
            .is_some_and(|pl| pl.extra_flags & flags::SHARES_FDS != 0);
        let below = parents[k].is_some_and(|p| p != 0 && members[p].stand_in);
        if shares || below {
            held_by[forkers[k]].push((k, shares));
        }
    }
    for (f, plans) in held_by.iter().enumerate() {
        if plans.is_empty() {
            continue;
        }
        let borrowed: Vec<_> = plans
            .iter()
            .map(|&(k, _)| members[k].plan.borrow())
            .collect();
        let images: Vec<(cryo_image::Image, bool)> = borrowed
            .iter()
            .zip(plans.iter())
            .filter_map(|(b, &(_, shares))| b.as_ref().map(|pl| (pl.image(), shares)))
            .collect();
        let held: Vec<(&cryo_image::Image, bool)> = images.iter().map(|(i, s)| (i, *s)).collect();
        let over = if f == 0 {
            cryo_image::fork::forker_over(&root.image(), &held)
        } else {
            let pl = members[f].plan.borrow();
            match pl.as_ref() {
                Some(pl) => cryo_image::fork::forker_over(&pl.image(), &held),
                None => continue,
            }
        };
        if let Some((need, nofile)) = over {
            return Err(RestoreError::Tree(format!(
                "process {} would hold up to {need} fds at once while its shim forks the {} processes that share its fd table or are below one that does, above its open-file limit of {nofile}",
                members[f].rec.pid,
                held.len()
            )));
        }
    }
    Ok(())
}

/// Each member's parent in the tree, by PID (None: the root's is not in
/// it).
fn parents(members: &[Member]) -> Vec<Option<usize>> {
    let at: std::collections::HashMap<u32, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.rec.pid, i))
        .collect();
    members
        .iter()
        .map(|m| at.get(&m.rec.ppid).copied())
        .collect()
}

/// The member that forks each member here: its parent, but for a
/// stand-in whose parent is a stand-in too, the nearest ancestor that
/// execs its own shim. Its shim takes the whole line of stand-ins below
/// it at once (a stand-in's children must outlive it: its place is taken
/// first), forks the first, whose shim forks the next.
fn forkers(members: &[Member]) -> Vec<usize> {
    let parents = parents(members);
    (0..members.len())
        .map(|j| {
            let mut p = parents[j].unwrap_or(0);
            while p != 0 && members[j].stand_in && members[p].stand_in {
                p = parents[p].unwrap_or(0);
            }
            p
        })
        .collect()
}

fn in_process(pid: u32, e: RestoreError) -> RestoreError {
    RestoreError::Tree(format!("process {pid}: {e}"))
}

/// clone3's set_tid needs CAP_SYS_ADMIN.
pub(crate) fn can_set_pids() -> Result<(), RestoreError> {
    if !crate::OwnStatus::read().cap_sys_admin {
        return Err(RestoreError::Tree(
            "giving restored processes their captured PIDs (a tree's, or --same-pid) needs CAP_SYS_ADMIN (run cryo restore as root)".into(),
        ));
    }
    Ok(())
}

/// Every PID of `pids` is free, or the refusal names each that is not.
/// Zombies (the killed original tree, reparented to init or a subreaper
/// that reaps it soon) are waited for, up to 5 s, when no taken PID is a
/// live process.
pub(crate) fn pids_free(pids: &[u32]) -> Result<(), RestoreError> {
    let t0 = std::time::Instant::now();
    let mut said = false;
    loop {
        let mut taken = Vec::new();
        let mut all_zombies = true;
        for &pid in pids {
            let Some(state) = proc_state(pid as i32) else {
                continue;
            };
            let zombie = matches!(state, 'Z' | 'X');
            all_zombies &= zombie;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // A zombie goes when its parent reaps it: name the parent.
            let parent = zombie
                .then(|| {
                    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                    let ppid = st
                        .lines()
                        .find_map(|l| l.strip_prefix("PPid:"))?
                        .trim()
                        .to_owned();
                    let pcomm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
                    Some(format!(
                        " (a zombie, until its parent {ppid}, {}, waits for it)",
                        pcomm.trim()
                    ))
                })
                .flatten();
            taken.push(format!(
                "{pid} by {}{}",
                comm.trim(),
                parent.unwrap_or_else(|| if zombie {
                    " (a zombie)".into()
                } else {
                    String::new()
                })
            ));
        }
        if taken.is_empty() {
            return Ok(());
        }
        if let Some(sig) = crate::interrupted() {
            return Err(RestoreError::Interrupted(sig));
        }
        // Zombies only (the killed original, reparented to init or a
        // subreaper that reaps it soon): wait a little. A live process
        // will not go away by waiting.
        if !all_zombies || t0.elapsed() > std::time::Duration::from_secs(5) {
            return Err(RestoreError::Tree(format!(
                "the captured PIDs must be free, and {} taken: {}; {}, or restore with --pidns (a PID namespace of its own, where they are free)",
                if taken.len() == 1 { "one is" } else { "some are" },
                taken.join(", "),
                match (all_zombies, taken.len()) {
                    (true, 1) => "its parent must reap it",
                    (true, _) => "their parents must reap them",
                    (false, 1) => "end it",
                    (false, _) => "end them",
                }
            )));
        }
        // (Said once: a wait of a second or more without a word looks
        // like a hang; this VM's init reaps every ~1.4 s.)
        // (To a terminal only: this stderr is the restored program's.)
        use std::io::IsTerminal;
        if !said
            && t0.elapsed() > std::time::Duration::from_millis(200)
            && std::io::stderr().is_terminal()
        {
            said = true;
            let parents: std::collections::BTreeSet<String> = pids
                .iter()
                .filter_map(|p| {
                    let st = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
                    st.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .map(|v| v.trim().to_owned())
                })
                .collect();
            eprintln!(
                "cryo restore: waiting up to 5 s for the captured PIDs to be free: {}; their parent (PID {}) has not reaped them yet",
                taken.join(", "),
                parents.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What a tree's restore made once for several processes: by PID, their
/// (fd, our fd) and (files-table index, our fd); and our fds.
#[derive(Default)]
struct Made {
    fds: BTreeMap<u32, Vec<(i32, i32)>>,
    files: BTreeMap<u32, Vec<(u32, i32)>>,
    /// `fds::Plan::peers`, by PID.
    peers: BTreeMap<u32, Vec<(i32, i32, u32)>>,
    /// `MadeFor::from_peer`, by PID.
    from_peer: BTreeMap<u32, Vec<(i32, i32, i32)>>,
    ours: Vec<OwnedFd>,
    ghosts: Vec<crate::sockets::KeptGhost>,
}

/// Make every object of `tree_fds` once.
fn make_shared<'a>(
    recs: &[TreeProc],
    root_img: &Image,
    img_of: &dyn Fn(usize) -> Option<(&'a LoadedImage, Image<'a>)>,
    opts: &Options,
    inherit: &BTreeMap<u32, Vec<(i32, i32)>>,
    ptys: &crate::ptys::Ptys,
) -> Result<Made, RestoreError> {
    let index_of = |pid: u32| recs.iter().position(|r| r.pid == pid);
    // Our fd that --inherit-fd gives member k's fd n.
    let given = |k: usize, n: i32| {
        let list = if k == 0 {
            &opts.inherit_fds[..]
        } else {
            inherit.get(&recs[k].pid).map_or(&[][..], Vec::as_slice)
        };
        list.iter().find(|&&(m, _)| m == n).map(|&(_, ours)| ours)
    };
    // object -> its fds (member index, fd, pipe end)
    let mut objects: BTreeMap<u32, Vec<(usize, i32, u32)>> = BTreeMap::new();
    // Socket pairs: (end 0's object, end 1's object).
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for t in root_img.tree_fds().iter() {
        let Some(k) = index_of(t.pid) else { continue };
        if t.peer != cryo_image::NO_INDEX && t.pipe_end == 0 && !pairs.contains(&(t.object, t.peer))
        {
            pairs.push((t.object, t.peer));
        }
        objects
            .entry(t.object)
            .or_default()
            .push((k, t.fd, t.pipe_end));
    }
    let mut made = Made::default();
    let verify = !opts.no_verify;
    let give = |fds: &[(usize, i32, u32)], fd: RawFd, made: &mut Made| {
        for &(k, n, _) in fds {
            made.fds.entry(recs[k].pid).or_default().push((n, fd));
        }
        made.ours.push(sys::adopt(fd));
    };
    // Pipes first: every object on one pipe (by inode) from one pipe2.
    let mut pipes: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut rest = Vec::new();
    for (&obj, fds) in &objects {
        if pairs.iter().any(|&(a, b)| a == obj || b == obj) {
            continue;
        }
        let (k, n, _) = fds[0];
        let Some((_, img)) = img_of(k) else {
            return Err(RestoreError::Tree(format!(
                "process {}: shared fd {n} of a zombie",
                recs[k].pid
            )));
        };
        let f = fd_at(&img, n).ok_or_else(|| {
            RestoreError::Tree(format!(
                "process {}: shared fd {n} missing from its image",
                recs[k].pid
            ))
        })?;
        let inside_pipe = matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO)
            && img
                .pipes()
                .get(f.object as usize)
                .is_some_and(|p| p.flags & pipe_flags::INSIDE != 0);
        if inside_pipe {
            let ino = img.pipes().get(f.object as usize).map_or(0, |p| p.ino);
            pipes.entry(ino).or_default().push(obj);
        } else {
            rest.push(obj);
        }
    }
    for objs in pipes.values() {
        // The pipe's state from a holder of its read end (its bytes).
        let reader = objs
            .iter()
            .flat_map(|o| objects[o].iter())
            .find(|(_, _, end)| *end == 0)
            .or_else(|| objects[&objs[0]].first())
            .copied()
            .expect("an object has fds");
        let (loaded, img) = img_of(reader.0).expect("checked above");
        let f = fd_at(&img, reader.1).expect("checked above");
        let p = img.pipes().get(f.object as usize).expect("checked above");
        let target = img.str(f.target).unwrap_or("").to_owned();
        let data = if p.data.len > 0 {
            loaded.read_blob(&p.data, verify)?
        } else {
            Vec::new()
        };
        let keep_write = objs
            .iter()
            .any(|o| objects[o].iter().any(|(_, _, end)| *end == 1));
        let m = PipeMake {
            index: 0,
            fifo: (f.kind == fd_kind::FIFO).then(|| {
                (
                    target.trim_end_matches(" (deleted)").to_owned(),
                    f.dev,
                    f.ino,
                )
            }),
            removed: f.kind == fd_kind::FIFO && target.ends_with(" (deleted)"),
            size: p.size,
            packet: p.flags & pipe_flags::PACKET != 0,
            data,
            keep_write,
            reader_only: false,
        };
        let pipe = crate::pipes::make(&m).map_err(|why| RestoreError::Fd {
            fd: f.fd,
            what: format!(
                "{} {target} (of process {})",
                fd_kind::name(f.kind),
                recs[reader.0].pid
            ),
            why,
        })?;
        let mut first = [true, true];
        for o in objs {
            let fds = &objects[o];
            let (k, n, end) = fds[0];
            let (_, img) = img_of(k).expect("checked above");
            let f = fd_at(&img, n).expect("checked above");
            let end_fd = if end == 0 {
                Some(&pipe.read)
            } else {
                pipe.write.as_ref()
            };
            let Some(end_fd) = end_fd else {
                return Err(RestoreError::Tree("a pipe's write end was not made".into()));
            };
            // A read-write description (a FIFO opened O_RDWR): one of its
            // own, through the read end, reading and writing (the pipe's
            // write end alone would not read: EBADF, zdtm fifo-rowo-pair).
            let rw = f.flags as i32 & libc::O_ACCMODE == libc::O_RDWR;
            let fd = if rw {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(format!("/proc/self/fd/{}", pipe.read.as_raw_fd()))
                    .map(std::os::fd::IntoRawFd::into_raw_fd)
            } else if std::mem::replace(&mut first[end as usize], false) {
                sys::dup_above(end_fd.as_raw_fd(), 3)
            } else {
                // Another description of the same end: opened again.
                let path = format!("/proc/self/fd/{}", end_fd.as_raw_fd());
                std::fs::OpenOptions::new()
                    .read(end == 0)
                    .write(end == 1)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map(std::os::fd::IntoRawFd::into_raw_fd)
            }
            .map_err(|e| crate::IntoSys::into_sys(e, "duplicating a shared pipe end"))?;
            let flags = f.flags as i32 & !(libc::O_CLOEXEC | libc::O_ACCMODE);
            fds::set_status_flags(fd, flags)
                .map_err(|e| crate::IntoSys::into_sys(e, "setting a shared pipe end's flags"))?;
            give(fds, fd, &mut made);
        }
    }
    // Socket pairs whose ends are in different processes.
    for &(oa, ob) in &pairs {
        let (Some(fa), Some(fb)) = (objects.get(&oa), objects.get(&ob)) else {
            return Err(RestoreError::Tree(format!(
                "a socket pair's end (object {oa} or {ob}) has no holder"
            )));
        };
        let ((a, ka), (b, kb)) = (pair_end(fa, img_of)?, pair_end(fb, img_of)?);
        // (Both ends in one process's image: that process sends both
        // queues itself, as for a pair inside it.)
        let one = ka == kb;
        let (ea, eb, later) = crate::sockets::make_pair([&a, &b], verify, one)?;
        let (ea, eb) = (ea.into_raw_fd(), eb.into_raw_fd());
        // A queue with files in flight: sent by the process whose image
        // has it, through the other end, which it inherits with ours.
        let shutdown = |e: &crate::sockets::PairEnd| {
            e.img
                .sockets()
                .get(e.fd.object as usize)
                .map_or(0, |s| s.shutdown)
        };
        for (go, k, mine, other, theirs) in [
            (later[0], ka, &a, eb, shutdown(&b)),
            (later[1], kb, &b, ea, shutdown(&a)),
        ] {
            if go && !one {
                made.peers
                    .entry(recs[k].pid)
                    .or_default()
                    .push((mine.fd.fd, other, theirs));
            }
        }
        give(fa, ea, &mut made);
        give(fb, eb, &mut made);
    }
    // Pairs inside one process that were connected through a named
    // socket: made here as well, before any process makes a listener
    // (which would hold the name their making borrows for a moment).
    for (k, rec) in recs.iter().enumerate() {
        let Some((loaded, img)) = img_of(k) else {
            continue;
        };
        let fds: Vec<cryo_image::Fd> = img.fds().iter().collect();
        let socks = img.sockets();
        let named = |o: u32| socks.get(o as usize).is_some_and(|s| s.addr_len > 2);
        for (i, f) in fds.iter().enumerate() {
            let Some(s) = socks.get(f.object as usize) else {
                continue;
            };
            let first =
                |g: &cryo_image::Fd| g.kind == fd_kind::SOCKET && fds[g.desc as usize].fd == g.fd;
            if !first(f)
                || f.desc as usize != i
                || s.state != socket_state::PAIR
                || s.pair <= f.object
            {
                continue;
            }
            if !(named(f.object) || named(s.pair)) {
                continue;
            }
            let Some(g) = fds.iter().find(|g| first(g) && g.object == s.pair) else {
                continue;
            };
            let holders = |d: &cryo_image::Fd| -> Vec<(usize, i32, u32)> {
                fds.iter()
                    .filter(|h| h.desc == d.desc)
                    .map(|h| (k, h.fd, 0))
                    .collect()
            };
            let (ha, hb) = (holders(f), holders(g));
            let taken = |h: &[(usize, i32, u32)]| {
                h.iter().any(|&(_, n, _)| {
                    objects
                        .values()
                        .any(|v| v.iter().any(|&(kk, nn, _)| kk == k && nn == n))
                })
            };
            if taken(&ha) || taken(&hb) {
                continue;
            }
            let ends = [
                crate::sockets::PairEnd {
                    loaded,
                    img,
                    fd: *f,
                },
                crate::sockets::PairEnd {
                    loaded,
                    img,
                    fd: *g,
                },
            ];
            // (With files in flight, the process sends its queues itself:
            // both ends are its.)
            let (ea, eb, _) = crate::sockets::make_pair([&ends[0], &ends[1]], verify, true)
                .map_err(|e| in_process(rec.pid, e))?;
            give(&ha, ea.into_raw_fd(), &mut made);
            give(&hb, eb.into_raw_fd(), &mut made);
        }
    }
    // Unlinked files and memfds several processes map or hold.
    let mut files: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
    // (member, file index) -> the file made.
    let mut stored: BTreeMap<(usize, u32), RawFd> = BTreeMap::new();
    for t in root_img.tree_files().iter() {
        let Some(k) = index_of(t.pid) else { continue };
        files.entry(t.object).or_default().push((k, t.file));
    }
    for holders in files.values() {
        let (k, idx) = holders[0];
        let Some((loaded, img)) = img_of(k) else {
            continue;
        };
        if img.files().get(idx as usize).is_none() {
            return Err(in_process(
                recs[k].pid,
                RestoreError::Tree(format!("shared file {idx} missing from its image")),
            ));
        }
        let f = crate::stored::make(loaded, &img, idx, verify)
            .map_err(|e| in_process(recs[k].pid, e))?;
        for &(k, idx) in holders {
            stored.insert((k, idx), f.as_raw_fd());
            made.files
                .entry(recs[k].pid)
                .or_default()
                .push((idx, f.as_raw_fd()));
        }
        made.ours.push(f);
    }
    // Everything else: made as the first holder (the root, where it holds
    // it) would make it alone. Ghost sockets first: a client made here
    // connects by the name at once.
    let ghost_first = |obj: &u32| {
        let (k, n, _) = objects[obj][0];
        let ghost = img_of(k).and_then(|(_, img)| {
            let f = fd_at(&img, n).filter(|f| f.kind == fd_kind::SOCKET)?;
            img.sockets()
                .get(f.object as usize)
                .map(|s| s.flags & cryo_image::fds::socket_flags::GHOST != 0)
        });
        !ghost.unwrap_or(false)
    };
    // Ends with a name whose other end was closed first of all: each is
    // accepted again from a listener bound at its name for the moment,
    // which a listener of the tree bound there already would forbid.
    let named_widow = |obj: &u32| {
        let (k, n, _) = objects[obj][0];
        img_of(k).is_some_and(|(_, img)| {
            fd_at(&img, n).is_some_and(|f| {
                f.kind == fd_kind::SOCKET && crate::sockets::is_named_widow(&img, f.object)
            })
        })
    };
    rest.sort_by_cached_key(|o| (!named_widow(o), ghost_first(o)));
    // Connections that waited in a listener of another process: made
    // last (their listeners are made by now), and connected here in the
    // order they waited, whichever processes they are in.
    let pending_of = |obj: &u32| {
        let (k, n, _) = objects[obj][0];
        img_of(k).and_then(|(_, img)| {
            let f = fd_at(&img, n).filter(|f| f.kind == fd_kind::SOCKET)?;
            crate::sockets::is_pending_elsewhere(&img, f.object)
                .then(|| {
                    img.sockets()
                        .get(f.object as usize)
                        .map(|s| (s.peer, s.backlog))
                })
                .flatten()
        })
    };
    let (mut pending, rest): (Vec<u32>, Vec<u32>) =
        rest.into_iter().partition(|o| pending_of(o).is_some());
    pending.sort_by_cached_key(|o| pending_of(o).map(|(peer, place)| (peer.to_vec(), place)));
    for obj in rest.into_iter().chain(pending.iter().copied()) {
        let fds = &objects[&obj];
        // The root's, else one at 0-2 (whose number decides), else the
        // first.
        let (k, n, _) = fds
            .iter()
            .copied()
            .find(|h| h.0 == 0)
            .or_else(|| fds.iter().copied().find(|h| h.1 <= 2))
            .unwrap_or(fds[0]);
        let (loaded, img) = img_of(k).expect("checked above");
        // An epoll set (its items name fds of one process), an inotify or
        // fanotify instance (its watches, marks), a pidfd (of a process
        // that does not exist yet): made by one process as it would alone
        // (the first holder, nearest the root); the others take that one
        // once every process has its fds.
        // (A pidfd of an ended process is made here, every description of
        // it on one ended process: `make_one`.)
        let by_one = img.fds().iter().any(|f| {
            f.fd == n
                && matches!(
                    f.kind,
                    fd_kind::EPOLL | fd_kind::INOTIFY | fd_kind::FANOTIFY | fd_kind::PIDFD
                )
                && !(f.kind == fd_kind::PIDFD && f.object == cryo_image::NO_INDEX)
        });
        if by_one {
            // The holder nearest the root that has every file an epoll
            // set watches (`EPOLL_VIA_ELSEWHERE`: another holder has it;
            // capture checked that one does).
            let whole = |k: usize, n: i32| {
                img_of(k).is_some_and(|(_, img)| {
                    let Some(f) = img.fds().iter().find(|f| f.fd == n) else {
                        return false;
                    };
                    !img.epoll_items()
                        .iter()
                        .any(|e| e.desc == f.desc && e.via == cryo_image::fds::EPOLL_VIA_ELSEWHERE)
                })
            };
            let mut order = fds.clone();
            order.sort_by_key(|h| h.0);
            let (k, n, _) = order
                .iter()
                .copied()
                .find(|h| whole(h.0, h.1))
                .unwrap_or(order[0]);
            for &(j, m, _) in fds.iter().filter(|h| h.0 != k) {
                made.from_peer
                    .entry(recs[j].pid)
                    .or_default()
                    .push((m, recs[k].pid as i32, n));
            }
            continue;
        }
        let i = img
            .fds()
            .iter()
            .position(|f| f.fd == n)
            .expect("checked above");
        // Our fd `ours` for holder j's fd m, given by --inherit-fd.
        let take_given = |j: usize, m: i32, ours: i32| -> Result<RawFd, RestoreError> {
            let pipe = fd_at(&img, n)
                .filter(|f| matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO))
                .and_then(|f| img.pipes().get(f.object as usize));
            if !sys::is_open(ours) {
                Err(format!("--inherit-fd names our fd {ours}, which is not open"))
            } else if pipe.is_some_and(|p| p.data.len > 0) && !opts.drop_pipe_data {
                Err(format!(
                    "{} bytes were unread in this pipe at capture; the fd it gets here is not that pipe, so they would be lost (--drop-pipe-data accepts that)",
                    pipe.map_or(0, |p| p.data.len)
                ))
            } else {
                sys::dup_above(ours, 3).map_err(|e| format!("duplicating fd {ours}: {e}"))
            }
            .map_err(|why| {
                in_process(
                    recs[j].pid,
                    RestoreError::Fd {
                        fd: m,
                        what: format!("shared fd {m}"),
                        why: why.into(),
                    },
                )
            })
        };
        let any_given = fds
            .iter()
            .find_map(|&(j, m, _)| given(j, m).map(|o| (j, m, o)));
        // A child's fds 0-2 that are pipes to outside the tree are ours
        // (`outside_stdio`).
        let outside_of = |j: usize| {
            img_of(j)
                .map(|(_, i)| outside_stdio(&i))
                .unwrap_or_default()
        };
        let child_stdio: Vec<i32>;
        let stdio: &[i32] = if k == 0 {
            &opts.restore_stdio
        } else {
            let outside = outside_of(k);
            child_stdio = [0, 1, 2]
                .into_iter()
                .filter(|n| !outside.contains(n))
                .collect();
            &child_stdio
        };
        let member = (k != 0).then_some(recs[k].pid);
        let p = match fds::source_one(loaded, &img, member, i, stdio, verify, Some(ptys)) {
            Ok((p, _)) if matches!(p.source, Source::Keep) => p,
            // Given by --inherit-fd (any holder's): one description, ours,
            // for every holder.
            _ if any_given.is_some() => {
                let (j, m, ours) = any_given.expect("matched");
                let fd = take_given(j, m, ours)?;
                give(fds, fd, &mut made);
                continue;
            }
            Ok((p, _)) => p,
            Err(e) => return Err(in_process(recs[k].pid, e)),
        };
        if matches!(p.source, Source::Keep) {
            // Ours at 0-2: the root's (a single restore's `2>&1`
            // captured, `>o 2>e` restored: stdout to o, stderr to e, for
            // every process that shared them), or a child's pipe to
            // outside the tree. Each holder gets ours at its own number
            // where some holder's is ours there, else at the lowest such
            // (a copy at 3 and up); one --inherit-fd gives a holder's fd
            // its own. (Only 0-2 kept as ours, not restored by
            // --restore-stdio, and open.) Until stop 48 every holder got
            // the first holder's number: a child's stderr, piped outside
            // with its stdout, came back as our stdout (a sweep).
            let tty = fd_at(&img, n).is_some_and(|f| f.kind == fd_kind::TTY);
            // (Where the root holds it, the root's numbers decide, as
            // for a single restore: a child's dup of the root's stderr
            // at its fd 1 is our stderr. Else each child's own.)
            let ours_at: Vec<i32> = fds
                .iter()
                .filter(|h| (0..=2).contains(&h.1))
                .filter(|h| {
                    if k == 0 {
                        h.0 == 0 && (tty || !opts.restore_stdio.contains(&h.1))
                    } else {
                        outside_of(h.0).contains(&h.1)
                    }
                })
                .map(|h| h.1)
                .filter(|&m| sys::is_open(m))
                .collect();
            let lowest = ours_at.iter().min().copied().unwrap_or(n);
            // A file (nginx's error.log, at 2 and 3 in the master and its
            // workers): its copies at 3 and up are the file, opened again
            // once for all of them (ours is only for 0-2).
            let file = fd_at(&img, n).is_some_and(|f| f.kind == fd_kind::REGULAR);
            let high: Vec<(usize, i32, u32)> =
                fds.iter().copied().filter(|h| file && h.1 > 2).collect();
            if !high.is_empty() {
                let (p, _) = fds::source_one(loaded, &img, member, i, &[n], verify, Some(ptys))
                    .map_err(|e| in_process(recs[k].pid, e))?;
                let made_file = |file: u32| stored.get(&(k, file)).copied();
                let fd = make_one(loaded, &img, &p, verify, &made_file)
                    .map_err(|e| in_process(recs[k].pid, e))?;
                give(&high, fd, &mut made);
            }
            for &(j, m, _) in fds.iter().filter(|h| !(file && h.1 > 2)) {
                let fd = match given(j, m) {
                    Some(o) => take_given(j, m, o)?,
                    None => {
                        let ours = if ours_at.contains(&m) { m } else { lowest };
                        sys::dup_above(ours, 3).map_err(|e| {
                            in_process(
                                recs[j].pid,
                                crate::IntoSys::into_sys(e, format!("duplicating fd {ours}")),
                            )
                        })?
                    }
                };
                give(&[(j, m, 0)], fd, &mut made);
            }
            continue;
        }
        let made_file = |file: u32| stored.get(&(k, file)).copied();
        // A ghost socket that clients (of any process) connect to by
        // name: its file kept until they all have.
        let ghost = match p.source {
            Source::Socket { sock, flags }
                if crate::sockets::kept_ghost(
                    &img,
                    sock,
                    (0..recs.len()).filter_map(img_of).map(|(_, i)| i),
                ) =>
            {
                Some((sock, flags))
            }
            _ => None,
        };
        let fd = match ghost {
            Some((sock, flags)) => {
                let (fd, kept) = crate::sockets::make_kept_ghost(&img, &p, sock, flags)
                    .map_err(|e| in_process(recs[k].pid, e))?;
                if made.ghosts.iter().any(|g| g.path() == kept.path()) {
                    return Err(in_process(
                        recs[k].pid,
                        RestoreError::Tree(format!(
                            "two sockets whose files were gone are bound to {} and connected to by that name (capture refuses this)",
                            kept.path().display()
                        )),
                    ));
                }
                made.ghosts.push(kept);
                fd
            }
            None => make_one(loaded, &img, &p, verify, &made_file)
                .map_err(|e| in_process(recs[k].pid, e))?,
        };
        // A connection waiting in a listener, made here: connected here,
        // in its place, or never (every holder skips it).
        let waiting = match p.source {
            Source::Socket { sock, .. } => img
                .sockets()
                .get(sock as usize)
                .filter(|s| s.state == cryo_image::fds::socket_state::PENDING)
                .map(|s| (sock, s.pair)),
            _ => None,
        };
        if let Some((sock, pair)) = waiting {
            if pair != cryo_image::NO_INDEX {
                return Err(in_process(
                    recs[k].pid,
                    RestoreError::Tree(format!(
                        "fd {n}: a connection waiting in a listener, shared between processes, without its place in the queue (the image is inconsistent)"
                    )),
                ));
            }
            crate::sockets::connect_pending(&img, sock, fd).map_err(|why| {
                in_process(
                    recs[k].pid,
                    RestoreError::Fd {
                        fd: n,
                        what: "socket".into(),
                        why,
                    },
                )
            })?;
        }
        give(fds, fd, &mut made);
    }
    // Hung-up terminals shared between processes hang up (before any
    // fork: a copy of a master would keep them up).
    crate::ptys::hang_up();
    // The ended processes of those pidfds: waited for now that every
    // pidfd of them is open (no child of ours is left).
    for (_, pid) in std::mem::take(&mut *ended().lock().unwrap_or_else(|e| e.into_inner())) {
        let _ = sys::waitpid(pid, libc::__WALL);
    }
    Ok(made)
}

/// Ended processes made for pidfds of the tree: (pidfs inode at capture,
/// PID now), one per ended process captured.
fn ended() -> &'static std::sync::Mutex<Vec<(u64, i32)>> {
    static ENDED: std::sync::Mutex<Vec<(u64, i32)>> = std::sync::Mutex::new(Vec::new());
    &ENDED
}

/// One end of a socket pair, as a holder whose image has the bytes that
/// waited in it, if one has them; and that holder's member index.
fn pair_end<'a>(
    fds: &[(usize, i32, u32)],
    img_of: &dyn Fn(usize) -> Option<(&'a LoadedImage, Image<'a>)>,
) -> Result<(crate::sockets::PairEnd<'a>, usize), RestoreError> {
    let mut first = None;
    for &(k, n, _) in fds {
        let Some((loaded, img)) = img_of(k) else {
            continue;
        };
        let Some(fd) = fd_at(&img, n) else { continue };
        let queued = img
            .sockets()
            .get(fd.object as usize)
            .is_some_and(|s| s.data.len > 0);
        let e = crate::sockets::PairEnd { loaded, img, fd };
        if queued {
            return Ok((e, k));
        }
        first.get_or_insert((e, k));
    }
    first.ok_or_else(|| RestoreError::Tree("a socket pair's end is missing from its images".into()))
}

fn fd_at(img: &Image, n: i32) -> Option<cryo_image::Fd> {
    img.fds().iter().find(|f| f.fd == n)
}

/// Make one shared object as its holder's plan says (`made_file`: the
/// unlinked files and memfds made for the tree, by index in the holder's
/// files table).
fn make_one(
    loaded: &LoadedImage,
    img: &Image,
    p: &FdPlan,
    verify: bool,
    made_file: &dyn Fn(u32) -> Option<RawFd>,
) -> Result<RawFd, RestoreError> {
    let dup = |n: i32| {
        sys::dup_above(n, 3).map_err(|e| crate::IntoSys::into_sys(e, format!("duplicating fd {n}")))
    };
    match &p.source {
        Source::Keep => dup(p.fd),
        Source::Inherit(n) => dup(*n),
        Source::Open {
            path,
            flags,
            pos,
            dev_ino,
            rdev,
        } => fds::open_path(p, path, *flags, *pos, *dev_ino, *rdev),
        Source::Handle { .. } | Source::Relinked { .. } => fds::open_removed(p),
        // A /proc file of no process, or of one outside the tree (checked
        // to be the one captured, as a single process's is).
        Source::Proc {
            path,
            pid,
            start,
            flags,
            pos,
        } if pid.is_none() || *start != 0 => fds::open_proc(p, path, *pid, *start, 0, *flags, *pos),
        // (Its master closed once every shared object is made.)
        Source::HungUpTty { dev, rdev, flags } => crate::ptys::hung_up(p, (*dev, *rdev), *flags),
        Source::MQueue { name, flags, sizes } => fds::mqueue_check(name, *flags, *sizes)
            .map(|fd| fd.into_raw_fd())
            .map_err(|e| fds::fd_err(p, e)),
        Source::Socket { sock, flags } => {
            let mut pairs = Vec::new();
            crate::sockets::make(loaded, img, p, *sock, *flags, &mut pairs, verify)
        }
        Source::Anon {
            kind,
            object,
            flags,
        } if matches!(
            *kind,
            fd_kind::EVENTFD | fd_kind::TIMERFD | fd_kind::SIGNALFD
        ) =>
        {
            crate::anonfds::make(img, p, *kind, *object, *flags)
        }
        // A pidfd of an ended process: on the one ended process made for
        // every pidfd of it (no SIGCHLD comes of it; waited for once all
        // are open).
        Source::DeadPidfd { process, flags } => {
            let mut ended = ended().lock().unwrap_or_else(|e| e.into_inner());
            Ok(fds::dead_pidfd(p, &mut ended, *process, *flags)?.into_raw_fd())
        }
        // An unlinked file or memfd: this description opened on the one
        // file made for every holder.
        Source::Stored { file, flags, pos } => {
            let made = made_file(*file)
                .ok_or_else(|| fds::fd_err(p, "its unlinked file was not made for the tree"))?;
            crate::stored::reopen(p, made, *flags, *pos)
        }
        _ => Err(fds::fd_err(
            p,
            "this kind cannot be shared between processes of a tree yet",
        )),
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// What every forked process needs.
struct Cx<'a> {
    tree: &'a Tree,
    bar: Barrier,
    /// The barrier the shims meet at (`handoff::flags::BARRIER`): the
    /// root's end, and the end every other process's shim shares.
    meet: (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    /// The same for the barrier's second round (a socket of its own, so
    /// that a byte of the first round left by a process that ended never
    /// stands in front of the second round's).
    round: (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    root_pid: i32,
    /// The process group the root is in now (the invoker's).
    root_pgid: i32,
    /// Which member forks each ([`forkers`]).
    forkers: Vec<usize>,
}

/// Build the tree and exec every process's shim; this process becomes the
/// root. Returns only on failure, with every process made so far killed.
pub(crate) fn exec(root: Plan, tree: Box<Tree>) -> RestoreError {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        return RestoreError::Tree(format!(
            "cryo restore runs {threads} threads; forking the tree needs one"
        ));
    }
    let bar = match Barrier::new() {
        Ok(b) => b,
        Err(e) => return crate::IntoSys::into_sys(e, "mapping the tree's barrier"),
    };
    let meet = match sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET) {
        Ok(p) => p,
        Err(e) => return crate::IntoSys::into_sys(e, "socketpair for the tree's barrier"),
    };
    let round = match sys::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET) {
        Ok(p) => p,
        Err(e) => return crate::IntoSys::into_sys(e, "socketpair for the tree's barrier"),
    };
    let _ = ROOT.set((tree.members[0].rec.pid as i32, std::process::id() as i32));
    let cx = Cx {
        tree: &tree,
        bar,
        meet,
        round,
        root_pid: std::process::id() as i32,
        root_pgid: sys::getpgid(0).unwrap_or(0),
        forkers: forkers(&tree.members),
    };
    // Groups whose leader was gone at capture (in the root's session): a
    // holder with the group's id leads each until its members are in it.
    let holders = match orphan_groups(&tree)
        .into_iter()
        .map(|g| {
            sys::group_holder(g).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    RestoreError::Tree(format!(
                        "PID {g} is taken: process group {g}, whose leader was gone at the capture, is made again by a process with that PID"
                    ))
                } else {
                    crate::IntoSys::into_sys(
                        e,
                        format!("making process group {g} again (clone3 set_tid, setpgid)"),
                    )
                }
            })
        })
        .collect::<Result<Vec<i32>, _>>()
    {
        Ok(h) => GroupHolders(std::cell::RefCell::new(h)),
        Err(e) => return e,
    };
    for c in cx.forks(0) {
        if let Err(e) = cx.fork(c) {
            cx.fail();
            return e;
        }
    }
    let live: Vec<i32> = tree
        .members
        .iter()
        .skip(1)
        .filter(|m| m.rec.state == proc_state::LIVE)
        .map(|m| m.rec.pid as i32)
        .collect();
    let n = live.len() as u32;
    let mut all_alive = || live.iter().all(|&p| alive(p));
    if !cx.bar.wait_arrived(Step::Forked, n, &mut all_alive) {
        cx.fail();
        return RestoreError::Tree("a process of the tree could not be made (see above)".into());
    }
    cx.bar.go(Step::Forked);
    // (Zombie children end once in their groups.)
    cx.wait_zombies(0);
    // Every group exists: the foreground of the terminal of a session the
    // root leads.
    if let Err(e) = crate::ptys::give_foreground(&tree.ptys, cx.rec(0).pid) {
        cx.fail();
        return crate::IntoSys::into_sys(e, "giving the terminal's foreground to its group");
    }
    let mut hook = || -> Result<(), RestoreError> {
        let mut all_alive = || live.iter().all(|&p| alive(p));
        if !cx.bar.wait_arrived(Step::Ready, n, &mut all_alive) {
            return Err(RestoreError::Tree(
                "a process of the tree could not be restored (see above)".into(),
            ));
        }
        // Every process is in its group by now (zombies too): the groups'
        // holders go. Every process has connected to the ghosts: their
        // files go.
        holders.release();
        for g in std::mem::take(&mut *tree.ghosts.borrow_mut()) {
            g.release()?;
        }
        cx.bar.go(Step::Ready);
        Ok(())
    };
    let e = root.exec_with(
        &mut hook,
        Some((cx.meet.0.as_raw_fd(), cx.round.0.as_raw_fd())),
    );
    cx.fail();
    e
}

/// Process groups of the tree whose leader is not in it (it ended before
/// the capture), in the root's session and not the root's own group: made
/// again by a holder (`sys::group_holder`).
fn orphan_groups(tree: &Tree) -> Vec<i32> {
    let root = tree.members[0].rec;
    orphan_groups_in(tree, root.sid, root.pgid)
}

/// The groups in session `sid` (but group `but`) whose leader is not in
/// the tree.
fn orphan_groups_in(tree: &Tree, sid: u32, but: u32) -> Vec<i32> {
    let mut out: Vec<i32> = tree
        .members
        .iter()
        .skip(1)
        .map(|m| m.rec)
        .filter(|r| r.pgid != r.pid && r.pgid != but && r.sid == sid)
        .filter(|r| !tree.members.iter().any(|m| m.rec.pid == r.pgid))
        .map(|r| r.pgid as i32)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The holders of [`orphan_groups`]: killed and reaped once every
/// process is in its group, or when the restore fails.
struct GroupHolders(std::cell::RefCell<Vec<i32>>);

impl GroupHolders {
    /// Kill and reap them (once: their PIDs may be reused after).
    fn release(&self) {
        for h in std::mem::take(&mut *self.0.borrow_mut()) {
            let _ = sys::kill(h, libc::SIGKILL);
            let _ = sys::waitpid(h, libc::__WALL);
        }
    }
}

impl Drop for GroupHolders {
    fn drop(&mut self) {
        self.release();
    }
}

/// The tree's root: its captured PID and its PID now (the restorer's, in
/// a plain restore), set before any other process of the tree is forked.
static ROOT: std::sync::OnceLock<(i32, i32)> = std::sync::OnceLock::new();

/// The PID now of the process captured as `captured` (a pidfd's), seen
/// from a process captured as `own`: only the root's changes (a plain
/// restore gives it the restorer's PID); the root of a single process is
/// the process itself.
pub(crate) fn pid_now(captured: i32, own: i32) -> i32 {
    match ROOT.get() {
        Some(&(c, now)) if c == captured => now,
        None if captured == own => std::process::id() as i32,
        _ => captured,
    }
}

/// The state letter of `pid` (/proc/PID/stat), None if there is none.
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

/// Whether `pid` has not died: it runs, or does not exist yet (its
/// parent has not forked it). A process of the tree that dies before the
/// exec stays a zombie (no parent waits before its own exec), and one
/// whose parent died is never forked, but its parent is then a zombie.
/// Whether `pid` is `ancestor` or below it (its parents, by /proc, up to
/// PID 1).
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        if p == ancestor {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Some(parent) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
            })
            .and_then(|v| v.parse::<i32>().ok())
        else {
            return false;
        };
        p = parent;
    }
    false
}

fn alive(pid: i32) -> bool {
    proc_state(pid).is_none_or(|c| c != 'Z' && c != 'X')
}

/// Whether `pid` (the root) still runs.
fn running(pid: i32) -> bool {
    proc_state(pid).is_some_and(|c| c != 'Z' && c != 'X')
}

impl Cx<'_> {
    fn rec(&self, i: usize) -> TreeProc {
        self.tree.members[i].rec
    }

    /// Member indices of `i`'s children.
    fn children(&self, i: usize) -> Vec<usize> {
        let pid = self.rec(i).pid;
        (i + 1..self.tree.members.len())
            .filter(|&j| self.rec(j).ppid == pid)
            .collect()
    }

    /// The member that forks member `j` here ([`forkers`]).
    fn forker(&self, j: usize) -> usize {
        self.forkers[j]
    }

    /// Member indices of the processes `i` forks.
    fn forks(&self, i: usize) -> Vec<usize> {
        (i + 1..self.tree.members.len())
            .filter(|&j| self.forkers[j] == i)
            .collect()
    }

    /// Fork member `c` with its PID (in the child: become it, never
    /// return).
    fn fork(&self, c: usize) -> Result<i32, RestoreError> {
        let r = self.rec(c);
        let forked = if self.tree.members[c].stand_in {
            sys::fork_stand_in(r.pid as i32)
        } else {
            sys::fork_with_pid(r.pid as i32)
        };
        match forked {
            Ok(Forked::Child) => self.become_member(c),
            Ok(Forked::Parent(p)) => Ok(p),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(RestoreError::Tree(format!(
                "PID {} (a process of the captured tree) was taken while restoring",
                r.pid
            ))),
            Err(e) => Err(crate::IntoSys::into_sys(
                e,
                format!("forking process {} with its PID (clone3 set_tid)", r.pid),
            )),
        }
    }

    /// Wait until `i`'s zombie children have exited (so that no SIGCHLD
    /// of theirs arrives once signals are blocked for the shim).
    fn wait_zombies(&self, i: usize) {
        for c in self.children(i) {
            if self.rec(c).state == proc_state::ZOMBIE {
                let _ = sys::wait_exited_nowait(self.rec(c).pid as i32);
            }
        }
    }

    /// Kill every process made so far (children first), reap ours. Only
    /// ours: a process at a captured PID that this restore did not make
    /// (another restore of the same image won that PID, or any process
    /// took it) is left alone. Killed by its PID alone, a restore that
    /// lost the race for the PIDs killed the winner's children (a sweep
    /// of stop 47: two plain restores of one tree at once both failed 12
    /// times in 40).
    fn fail(&self) {
        self.bar.abort();
        let me = std::process::id() as i32;
        for m in self.tree.members.iter().skip(1).rev() {
            let pid = m.rec.pid as i32;
            // (Through a pidfd: the process checked is the one killed.)
            if let Ok(fd) = sys::pidfd_open(pid) {
                if descends_from(pid, me) {
                    let _ = sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL);
                }
            }
        }
        for c in self.forks(0) {
            // (__WALL: a stand-in sends no SIGCHLD.)
            let _ = sys::waitpid(self.rec(c).pid as i32, libc::__WALL);
        }
    }

    /// Session and own process group, right after the fork (before this
    /// process forks its children, which inherit them).
    fn own_session_and_group(&self, r: TreeProc) -> std::io::Result<()> {
        if r.sid == r.pid {
            sys::setsid()?;
            // Before it forks: its children inherit it.
            crate::ptys::take_controlling(&self.tree.ptys, r.pid)?;
        } else if r.pgid == r.pid {
            sys::setpgid(0, 0)?;
        }
        Ok(())
    }

    /// Join the process group `r` was in (led by another process, which
    /// leads it by now), if it is not its own.
    fn join_group(&self, r: TreeProc) -> Result<(), String> {
        if r.pgid == r.pid {
            return Ok(());
        }
        let want = if r.pgid == self.rec(0).pgid {
            self.root_pgid
        } else {
            r.pgid as i32
        };
        if sys::getpgid(0).ok() != Some(want) {
            sys::setpgid(0, want).map_err(|e| format!("joining process group {want}: {e}"))?;
        }
        Ok(())
    }

    /// The forked process that becomes member `i`.
    fn become_member(&self, i: usize) -> ! {
        let r = self.rec(i);
        let die = |what: String| -> ! {
            eprintln!("cryo restore: process {}: {what}", r.pid);
            self.bar.abort();
            sys::exit_now(1)
        };
        if self.tree.members[i].stand_in {
            // Gone with the process that forked it, whose shim would have
            // replaced it.
            let parent = pid_now(self.rec(self.forker(i)).pid as i32, r.pid as i32);
            if sys::die_with_parent().is_err() || sys::getppid() != parent {
                sys::exit_now(1);
            }
        }
        if let Err(e) = self.own_session_and_group(r) {
            die(format!("setting its session or process group: {e}"));
        }
        // A session leader makes again the groups of its session whose
        // leader ended (the root makes those of its own session); they go
        // once every process is in its group.
        let holders = GroupHolders(std::cell::RefCell::new(Vec::new()));
        if r.sid == r.pid && r.state == proc_state::LIVE {
            for g in orphan_groups_in(self.tree, r.sid, r.pgid) {
                match sys::group_holder(g) {
                    Ok(h) => holders.0.borrow_mut().push(h),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => die(format!(
                        "PID {g} is taken: process group {g} of its session, whose leader was gone at the capture, is made again by a process with that PID"
                    )),
                    Err(e) => die(format!(
                        "making process group {g} of its session again (clone3 set_tid, setpgid): {e}"
                    )),
                }
            }
        }
        let root = self.root_pid;
        let mut root_alive = || running(root);
        if r.state == proc_state::ZOMBIE {
            // It ends once it is in its group: every process exists then,
            // and every leader leads (a zombie keeps the group it ended
            // in; waitpid(-PGID) and getpgid look at it).
            if !self.bar.wait_go(Step::Forked, &mut root_alive) {
                sys::exit_now(1);
            }
            if let Err(e) = self.join_group(r) {
                die(e);
            }
            sys::die_with(r.exit_status as i32);
        }
        for c in self.forks(i) {
            if let Err(e) = self.fork(c) {
                die(e.to_string());
            }
        }
        self.bar.arrive(Step::Forked);
        if !self.bar.wait_go(Step::Forked, &mut root_alive) {
            sys::exit_now(1);
        }
        // Every process exists, every group leader leads its group: join.
        if let Err(e) = self.join_group(r) {
            die(e);
        }
        self.wait_zombies(i);
        // Every group exists: the foreground of its terminal.
        if r.sid == r.pid {
            if let Err(e) = crate::ptys::give_foreground(&self.tree.ptys, r.pid) {
                die(format!(
                    "giving its terminal's foreground to its group: {e}"
                ));
            }
        }
        let Some(plan) = self.tree.members[i].plan.borrow_mut().take() else {
            die("no plan".into());
        };
        let bar = &self.bar;
        let mut hook = || -> Result<(), RestoreError> {
            bar.arrive(Step::Ready);
            let mut root_alive = || running(root);
            if bar.wait_go(Step::Ready, &mut root_alive) {
                holders.release();
                Ok(())
            } else {
                Err(RestoreError::Tree(
                    "the tree's restore was abandoned".into(),
                ))
            }
        };
        let e = plan.exec_with(
            &mut hook,
            Some((self.meet.1.as_raw_fd(), self.round.1.as_raw_fd())),
        );
        if self.bar.aborted() {
            sys::exit_now(1);
        }
        die(e.to_string())
    }
}
