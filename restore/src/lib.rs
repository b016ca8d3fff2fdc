//! `cryo restore`: everything before the point of no return, then the exec.
//!
//! [`prepare`] loads the image and checks, without changing anything, that
//! it can be restored here: page checksums, files behind mappings, the vDSO
//! bytes and layout, the CPU's xsave layout, the shim's window, fds, rlimits
//! and kernel support. [`Plan::exec`] then starts the tracer, installs fds,
//! cwd, umask, rlimits and personality, and execs `cryo-shim`, which turns
//! this process into the captured one.

mod anonfds;
mod checks;
mod error;
mod fanotify;
mod fds;
mod inotify;
pub mod lazy;
mod locks;
pub mod pack;
mod pidns;
mod pipes;
mod ptys;
mod sockets;
mod standin;
mod stored;
mod supervise;
mod sys;
mod sysv;
mod task;
mod tracer;
mod tree;
mod uffd;
mod verified;

use cryo_image::load::LoadedImage;
use cryo_image::Image;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use error::IntoSys;
pub use error::{RestoreError, Why};
pub use fds::FdPlan;
pub use task::{own_pid_note, terminal_note};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave the restored process stopped (SIGSTOP) instead of running.
    pub keep_stopped: bool,
    /// Say on stderr, if it is a terminal, right before the exec, once
    /// every check and every fd is done (a refusal stays one line), that
    /// the program keeps its own PID in memory ([`own_pid_note`]) when it
    /// runs under another (neither `same_pid` nor `pidns`).
    pub say_own_pid: bool,
    /// (restored fd, our fd): give the restored process our fd.
    pub inherit_fds: Vec<(i32, i32)>,
    /// (PID, restored fd, our fd): the same for the process of the image
    /// with that captured PID (a tree's other processes, or the root).
    pub inherit_member_fds: Vec<(u32, i32, i32)>,
    /// Path of the cryo-shim binary.
    pub shim: PathBuf,
    /// The size of the shim this cryo was built with: another file at
    /// `shim` is refused before anything is done (its whole checksum is
    /// `cryo check`'s and `cryo pack`'s).
    pub shim_len: Option<u64>,
    /// Skip the pages checksum pass (the shim still checks the tables).
    pub no_verify: bool,
    /// Check every page even if this pages.img was checked before
    /// ([`verified`]).
    pub verify: bool,
    /// The shim prints its phase times on stderr.
    pub phases: bool,
    /// Serve private anonymous memory on demand through userfaultfd.
    pub lazy: Option<LazyOptions>,
    /// Map private anonymous memory from pages.img (MAP_PRIVATE) instead
    /// of copying it (`cryo_image::mapped`; not with `lazy`).
    pub map: bool,
    /// Finish with the tracer even where the image's gadgets would do.
    pub use_tracer: bool,
    /// Accept losing bytes that were unread in a pipe the restored fd
    /// does not get back (fds 0-2, --inherit-fd).
    pub drop_pipe_data: bool,
    /// Restore although the image was captured in another boot, or
    /// CLOCK_MONOTONIC is behind here (`checks::clocks`).
    pub clock_jump: bool,
    /// Which of fds 0-2 to restore like every other fd (files reopened at
    /// their offsets, pipes made again...) instead of giving the program
    /// this process's own; terminals are still this process's.
    pub restore_stdio: Vec<i32>,
    /// Give the restored process (a tree's root) its captured PID: it is
    /// forked with it, and this process waits for it (see [`supervise`]).
    pub same_pid: bool,
    /// Restore the whole tree, root included, in a new PID namespace where
    /// every captured PID is free ([`pidns`]).
    pub pidns: bool,
    /// Which cgroups the restored processes join ([`Cgroups`]).
    pub cgroups: Cgroups,
    /// This is a tree's process with this captured PID, not its root:
    /// advice names it (`--inherit-fd PID:N`).
    pub member: Option<u32>,
}

/// Which cgroups restored processes join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cgroups {
    /// `Inherit` when every process of the image was in the same cgroups
    /// (a single process always), else `Captured`: processes that were in
    /// different cgroups are never merged into one without a word.
    #[default]
    Auto,
    /// Every process stays in the cgroups of `cryo restore`, as any
    /// program it started would.
    Inherit,
    /// Every process joins the cgroups it was captured in (each must
    /// exist); refused before anything is made if one does not.
    Captured,
}

/// How the restore ends once the shim has rebuilt the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The shim unmaps its window through the program's own code and
    /// `rt_sigreturn`s (eager restore, image with gadgets): no other process.
    Gadgets,
    /// A ptrace tracer forked before the exec does it (lazy restore,
    /// --keep-stopped, or no usable gadgets).
    Tracer,
}

/// Lazy restore settings.
#[derive(Debug, Clone)]
pub struct LazyOptions {
    pub mode: lazy::Mode,
    /// Record the pages touched first into the image's working-set file
    /// (serves on demand while recording).
    pub record_working_set: bool,
    /// Do not prefetch a recorded working set.
    pub no_prefetch: bool,
    /// Write the page server's statistics (JSON) here when it exits.
    pub stats: Option<PathBuf>,
    /// Fill memory eagerly instead when the image (every process of a
    /// tree together) has fewer lazy pages than this: a page server's
    /// start and round trips cost more than copying so little
    /// (docs/benchmarks.md, "Lazy or eager by size"). 0: always lazy.
    /// Not applied when recording a working set.
    pub min_pages: u64,
}

/// A lazy restore asked for an image too small for it
/// ([`LazyOptions::min_pages`]): memory is filled eagerly.
#[derive(Debug, Clone)]
pub struct EagerFill {
    /// Lazy pages in the image (every process of a tree).
    pub lazy_pages: u64,
    /// The [`LazyOptions::min_pages`] they fell below.
    pub min_pages: u64,
    /// Or (a tree): the pages its processes shared copy-on-write beyond
    /// the first copy, at least `min_pages`, which a lazy restore would
    /// copy into each process and an eager one shares again (0: the
    /// small-image rule).
    pub shared_pages: u64,
    stats: Option<PathBuf>,
}

/// Set `opts.lazy` aside (and say so) when the image's lazy pages (counted
/// by `lazy_pages`, only for a lazy restore: an eager one is the hot path)
/// are below its `min_pages`.
fn eager_if_small(opts: &mut Options, lazy_pages: impl FnOnce() -> u64) -> Option<EagerFill> {
    let l = opts.lazy.as_ref()?;
    if l.record_working_set || l.min_pages == 0 {
        return None;
    }
    let lazy_pages = lazy_pages();
    if lazy_pages >= l.min_pages {
        return None;
    }
    let fill = EagerFill {
        lazy_pages,
        min_pages: l.min_pages,
        shared_pages: 0,
        stats: l.stats.clone(),
    };
    opts.lazy = None;
    Some(fill)
}

/// Set `opts.lazy` aside (and say so) for a tree whose processes shared
/// `shared_pages` pages copy-on-write beyond their first copies, at least
/// its `min_pages`: served lazily, each process gets a copy of its own
/// (a userfaultfd fills a page into one address space); filled eagerly,
/// children are forked sharing them again.
fn eager_if_shared(opts: &mut Options, shared_pages: u64) -> Option<EagerFill> {
    let l = opts.lazy.as_ref()?;
    if l.record_working_set || l.min_pages == 0 || shared_pages < l.min_pages {
        return None;
    }
    let fill = EagerFill {
        lazy_pages: 0,
        min_pages: l.min_pages,
        shared_pages,
        stats: l.stats.clone(),
    };
    opts.lazy = None;
    Some(fill)
}

/// A restore that passed every check and is ready to exec.
pub struct Plan {
    image: LoadedImage,
    opts: Options,
    fds: fds::Plan,
    gadget: u64,
    tid_offset: usize,
    setup: Setup,
    lazy: Option<lazy::Config>,
    /// `--lazy` set aside: the image is too small for it.
    eager_fill: Option<EagerFill>,
    finish: Finish,
    /// The other processes of a captured tree (this plan is its root's).
    tree: Option<Box<tree::Tree>>,
    /// The pty pairs made again (ours until every process has its fds).
    ptys: ptys::Ptys,
    /// Hand-off flags a tree sets ([`handoff::flags::STAND_IN`],
    /// [`handoff::flags::FORKS`]).
    ///
    /// [`handoff::flags::STAND_IN`]: cryo_image::handoff::flags::STAND_IN
    /// [`handoff::flags::FORKS`]: cryo_image::handoff::flags::FORKS
    extra_flags: u64,
    /// A stand-in's parent as captured (the process whose shim forks it),
    /// or [`handoff::NONE`].
    ///
    /// [`handoff::NONE`]: cryo_image::handoff::NONE
    stand_in_parent: u64,
}

/// Process state `exec` applies before the shim runs, read from the image
/// once at `prepare`.
struct Setup {
    checked: task::Checked,
    cwd: String,
    /// The working directory had been removed: make it again, enter it,
    /// remove it.
    cwd_deleted: bool,
    /// Signals this process ignores (reset to SIG_DFL before the exec).
    ignored: u64,
    umask: u32,
    personality: u32,
    /// The captured limits that differ from ours.
    rlimits: Vec<cryo_image::Rlimit>,
}

impl Plan {
    pub fn image(&self) -> Image<'_> {
        self.image.image().expect("validated at prepare")
    }
    pub fn fds(&self) -> &[FdPlan] {
        &self.fds.fds
    }
    /// The page server's settings (lazy restore), e.g. the prefetch size.
    pub fn lazy(&self) -> Option<&lazy::Config> {
        self.lazy.as_ref()
    }
    /// A lazy restore that fills memory eagerly instead (too few lazy
    /// pages for a page server to pay).
    pub fn eager_fill(&self) -> Option<&EagerFill> {
        self.eager_fill.as_ref()
    }
    /// How the restore will end.
    pub fn finish(&self) -> Finish {
        self.finish
    }
    /// Processes restored (the root and, for a tree, every other one,
    /// zombies included).
    pub fn processes(&self) -> usize {
        self.tree.as_ref().map_or(1, |t| t.len())
    }
    /// (PID, fd): the fds 0-2 of a tree's other processes that were pipes
    /// to a process outside the tree, and get this restore's own fd at
    /// that number, as the root's fds 0-2 do.
    pub fn given_stdio(&self) -> Vec<(u32, i32)> {
        self.tree
            .as_ref()
            .map_or_else(Vec::new, |t| t.given_stdio().to_vec())
    }
    /// The System V segments, semaphore sets and message queues the
    /// restore would make again (gone since the capture), named.
    pub fn sysv_to_make_again(&self) -> Vec<String> {
        let mut out = sysv::to_make_again(&self.image());
        if let Some(t) = &self.tree {
            let _ = t.each_image(&mut |_, i| {
                for o in sysv::to_make_again(i) {
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
                Ok(())
            });
        }
        out
    }
}

impl Plan {
    /// With its own PID (--same-pid), a process that led its process
    /// group (a shell's job, an interactive shell) leads one again, whose
    /// id is that PID, as it keeps in memory: an interactive bash gives the
    /// terminal back to that group once a job of its own ends, and read
    /// its terminal from the background (EIO: it exited) when the group
    /// was cryo restore's. The group is the terminal's foreground again if
    /// it was and this restore is; `cryo restore`, waiting, stops and
    /// continues with it (`supervise`). A session leader is left to
    /// `lead_own_session` (setsid makes it lead both).
    fn lead_own_group(&self, pid: i32) -> Result<(), RestoreError> {
        use cryo_image::process_flags::{GROUP_LEADER, SESSION_LEADER};
        let flags = self.image().process().flags;
        if flags & GROUP_LEADER == 0 || flags & SESSION_LEADER != 0 {
            return Ok(());
        }
        // The terminal this command is the foreground of (still in its
        // group here), which the new group gets, unless another group of
        // the tree is made its foreground (at the tree's barrier).
        let tty = (0..=2).find(|&fd| sys::tty::in_foreground(fd));
        sys::setpgid(0, 0)
            .map_err(|e| e.into_sys("setpgid (the restored process led its process group)"))?;
        let img = self.image();
        let other = img
            .terminal()
            .and_then(|t| t.other_foreground(img.tree().iter()));
        if let (Some(fd), None) = (tty, other) {
            sys::tty::set_foreground(fd, pid).map_err(|e| {
                e.into_sys("tcsetpgrp (the restored process's group is its terminal's foreground)")
            })?;
        }
        Ok(())
    }
}

/// Lead a process group of our own (`Image::leads_group_again`), unless
/// we do already (a job-control shell's job does; in a PID namespace the
/// invoker's group reads 0).
fn lead_group_again() -> Result<(), RestoreError> {
    if sys::getpgid(0).ok() == Some(std::process::id() as i32) {
        return Ok(());
    }
    sys::setpgid(0, 0)
        .map_err(|e| e.into_sys("setpgid (the restored process led its process group)"))
}

/// Lead a session of our own (setsid), unless we do already. setsid
/// refuses a process group's leader (a job-control shell started `cryo
/// restore` as a job): then a child of ours leads it and becomes the
/// restored process, which `cryo restore` waits for and passes the job's
/// signals on to, as with --same-pid.
fn lead_own_session() -> Result<(), RestoreError> {
    let what = "setsid (the restored process led its own session)";
    if sys::getsid().ok() == Some(std::process::id() as i32) {
        return Ok(());
    }
    match sys::setsid() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            supervise::fork_and_supervise(sys::fork).map_err(|e| {
                e.into_sys(
                    "fork (a child leads the restored process's session: this one leads a process group)",
                )
            })?;
            sys::setsid().map_err(|e| e.into_sys(what))
        }
        r => r.map_err(|e| e.into_sys(what)),
    }
}

/// The signals a terminal or a supervisor ends a command with: while the
/// signals are held ([`hold_signals`]), one of these that comes during a
/// wait ends the restore before any process is made.
const STOPPING: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The signals [`hold_signals`] holds: those sent to a process from
/// outside (a terminal, a shell, a supervisor, its peers), and SIGIO and
/// SIGURG of the fds made for the program. Not those this process's own
/// work may raise, which must not reach the program: SIGCHLD (its
/// helpers end: a restored script(1) read one from its signalfd and
/// waited for ever for a child that had not ended), SIGPIPE (ignored,
/// but a blocked signal is queued even so), SIGTTIN, SIGTTOU, SIGXFSZ,
/// SIGXCPU; not the faults; not glibc's own two (32, 33), nor a stop
/// from the terminal (SIGTSTP stops `cryo restore`, as before).
const HELD: [i32; 15] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGSTKFLT,
    libc::SIGCONT,
    libc::SIGURG,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
    libc::SIGIO,
    libc::SIGPWR,
];

/// Hold the signals sent from outside ([`HELD`], and every real-time
/// signal) from here on (`cryo restore`, first thing): the process that
/// restores becomes the restored program, whose PID the invoker has at
/// once (`$!`), and a signal sent to it meanwhile is the program's,
/// delivered by the program's own dispositions and mask once it runs.
/// Until now such a signal ended `cryo restore` by its default action: a
/// tree's restore, which may wait for a killed original's PIDs to be
/// reaped (up to 5 s), was ended by a SIGUSR1 that its program handles
/// (exit 138, a sweep of stop 46). A signal that ends a command, during
/// such a wait, ends the restore instead, with
/// [`RestoreError::Interrupted`]. The last steps before the exec block
/// every signal, as the shim does at its start, and its last
/// `rt_sigreturn` installs the program's mask.
pub fn hold_signals() -> Result<(), RestoreError> {
    let mut set = HELD.to_vec();
    set.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    sys::block_signals(&set).map_err(|e| e.into_sys("blocking signals"))
}

/// The first of [`STOPPING`] pending (held), if any.
pub(crate) fn interrupted() -> Option<i32> {
    sys::first_pending(&STOPPING)
}

/// A signal's name, for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

/// Load and check everything; change nothing (a tree's shared objects are
/// made, in this process only; a kept file several of its processes map,
/// gone since the capture, is made again at its path: removed again if
/// this fails, and by [`remove_made_again`] after a dry run).
pub fn prepare(dir: &Path, opts: Options) -> Result<Plan, RestoreError> {
    let plan = prepare_any(dir, opts).and_then(|plan| {
        no_helper_left_to_the_program(&plan)?;
        Ok(plan)
    });
    if plan.is_err() {
        stored::remove_made_again();
    }
    plan
}

pub use stored::remove_made_again;

/// A restore's helper (its tracer, its lazy page server and watchdog) is
/// orphaned on purpose, to be reparented away from the program this
/// process becomes; when orphans come to this very process (it is its
/// PID namespace's init, a container's entry point, or a child
/// subreaper) the helper would be the restored program's child, which a
/// `wait()` of its own reaps (found at stop 48: a Python `os.waitpid(-1,
/// 0)` after a lazy restore in `unshare --pid --fork` returned the
/// helper's PID, where it had no child). Refused then, before anything.
fn no_helper_left_to_the_program(plan: &Plan) -> Result<(), RestoreError> {
    if plan.opts.same_pid || plan.opts.pidns {
        // (`cryo restore` stays, the program's parent: orphans are ours.)
        return Ok(());
    }
    let mut helper = None;
    let mut look = |p: &Plan| {
        if p.lazy.is_some() {
            helper = helper.or(Some("its lazy page server"));
        } else if p.finish == Finish::Tracer {
            helper = helper.or(Some("its tracer"));
        }
    };
    look(plan);
    if let Some(t) = &plan.tree {
        t.each_plan(&mut look);
    }
    let Some(helper) = helper else {
        return Ok(());
    };
    let why = if sys::getpid() == 1 {
        "cryo restore is PID 1 of its PID namespace (a container's first process)"
    } else if sys::is_child_subreaper() {
        "cryo restore is a child subreaper (PR_SET_CHILD_SUBREAPER)"
    } else {
        return Ok(());
    };
    Err(RestoreError::Task(format!(
        "{why}, so {helper}, orphaned to leave the program, would become the restored program's child, which a wait() of its own would reap; run cryo restore under an init (`docker run --init`, tini), or restore with --same-pid or --pidns (cryo restore then stays, the program's parent){}",
        if plan.lazy.is_some() { ", or eagerly (without --lazy)" } else { "" }
    )))
}

fn prepare_any(dir: &Path, mut opts: Options) -> Result<Plan, RestoreError> {
    // One process's part of a tree image (`DIR/procs/PID`) is no image of
    // its own: restored alone, its pipes and sockets to the others were
    // made again within it and its program died of a broken pipe (a
    // sweep of stop 47).
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if let Some(top) = abs
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "procs"))
        .and_then(Path::parent)
        .filter(|t| t.join(cryo_image::META_FILE).is_file())
    {
        return Err(RestoreError::Tree(format!(
            "{} is one process's part of the tree image {}: restore {}, which brings the whole tree back",
            dir.display(),
            top.display(),
            top.display()
        )));
    }
    let image = LoadedImage::open(dir)?;
    if opts.pidns {
        // Every captured PID is free in a namespace of its own.
        tree::can_set_pids()?;
    } else if opts.same_pid {
        let img = image.image()?;
        tree::can_set_pids()?;
        if img.tree().len() <= 1 {
            tree::pids_free(&[img.process().pid])?;
        }
    }
    // A lazy restore's page server and its watchdog need slots too (a
    // review: the check passed, and the shim's clone3 failed EAGAIN).
    let helpers = if opts.lazy.is_some() { 2 } else { 0 };
    if image.image()?.tree().len() > 1 {
        let pidns = opts.pidns;
        // (`tree::prepare` gives each process its --inherit-fd PID:N.)
        let plan = tree::prepare(dir, image, opts)?;
        let threads = plan.image().threads().len();
        checks::pids(helpers + threads + plan.tree.as_ref().map_or(1, |t| t.tasks()))?;
        if pidns {
            fds::outside_of_pidns(&plan.image())?;
            if let Some(t) = &plan.tree {
                t.each_image(&mut |_, img| fds::outside_of_pidns(img))?;
            }
        }
        return Ok(plan);
    }
    let img = image.image()?;
    let pid = img.process().pid;
    checks::pids(helpers + 1 + img.threads().len())?;
    for (p, n, m) in std::mem::take(&mut opts.inherit_member_fds) {
        if p != pid {
            return Err(RestoreError::Task(format!(
                "--inherit-fd {p}:{n}: the image has no process {p} (it holds process {pid} alone)"
            )));
        }
        opts.inherit_fds.push((n, m));
    }
    if opts.pidns {
        fds::outside_of_pidns(&img)?;
    }
    let eager_fill = eager_if_small(&mut opts, || lazy::lazy_pages(&img));
    let ptys = {
        let img = image.image()?;
        ptys::Ptys::make(
            &[(&image, img)],
            &[],
            opts.same_pid || opts.pidns,
            !opts.no_verify,
        )?
    };
    let mut plan = prepare_one(
        dir,
        image,
        opts,
        MadeFor {
            ptys: Some(&ptys),
            ..MadeFor::default()
        },
    )?;
    plan.ptys = ptys;
    plan.eager_fill = eager_fill;
    Ok(plan)
}

/// What a tree's restore made for one process: (fd, our fd) of its shared
/// fds, (files-table index, our fd) of the files it shares.
#[derive(Default, Clone, Copy)]
pub(crate) struct MadeFor<'a> {
    fds: &'a [(i32, i32)],
    files: &'a [(u32, i32)],
    ptys: Option<&'a ptys::Ptys>,
    /// `fds::Plan::peers`.
    peers: &'a [(i32, i32, u32)],
    /// Epoll sets another process of the tree makes: (fd, that process
    /// as captured, its fd): `fds::Source::FromPeer`.
    from_peer: &'a [(i32, i32, i32)],
}

/// The shim is there, executable, and of the size this cryo was built
/// with (`Options::shim_len`).
fn check_shim(opts: &Options) -> Result<(), RestoreError> {
    let shim = std::fs::metadata(&opts.shim)
        .ok()
        .filter(|m| m.is_file() && m.mode() & 0o111 != 0);
    let Some(shim) = shim else {
        return Err(RestoreError::NoShim(opts.shim.clone()));
    };
    match opts.shim_len {
        Some(want) if want != shim.len() => Err(RestoreError::WrongShim {
            path: opts.shim.clone(),
            len: shim.len(),
            want,
        }),
        _ => Ok(()),
    }
}

/// One process's plan (`made`: its fds, and the files it maps or holds,
/// that a tree's restore made).
fn prepare_one(
    dir: &Path,
    image: LoadedImage,
    opts: Options,
    made: MadeFor,
) -> Result<Plan, RestoreError> {
    let img = image.image()?;
    let p = img.process();
    // (Before the pages are checked, which may read the whole image.)
    check_shim(&opts)?;
    let lazy_cfg = lazy_config(dir, &image, &opts)?;
    checks::window(&img)?;
    checks::xsave(&img)?;
    checks::aio(&img)?;
    let gadget = checks::vdso(&img)?;
    // Files changed, timers and fds that cannot be had: every one at once.
    // (The clocks once, for the root: a tree's processes share them.)
    let clocks = match opts.member {
        None => checks::clocks(&img, opts.clock_jump),
        Some(_) => Ok(()),
    };
    let mut errs: Vec<RestoreError> = [
        checks::mapped_files(&img),
        checks::timers(&img),
        clocks,
        checks::affinity(&img),
        checks::numa_nodes(&img),
    ]
    .into_iter()
    .filter_map(Result::err)
    .flat_map(RestoreError::into_list)
    .collect();
    if opts.map {
        if opts.lazy.is_some() {
            return Err(RestoreError::NotMappable(
                "a lazy restore cannot also map its memory (choose --lazy or --map)".into(),
            ));
        }
        checks::mappable(&img)?;
        checks::mappable_here(&image, &img)?;
    }
    // --inherit-fd for an fd the image has, once each (one for an fd it
    // lacks was ignored without a word, and two for one fd taken: a
    // sweep of stop 47).
    let pid = opts.member.map(|p| format!("{p}:")).unwrap_or_default();
    for (i, &(n, _)) in opts.inherit_fds.iter().enumerate() {
        if !img.fds().iter().any(|f| f.fd == n) {
            return Err(RestoreError::Task(format!(
                "--inherit-fd {pid}{n}: the captured process had no fd {n} (`cryo inspect` lists its fds)"
            )));
        }
        if opts.inherit_fds[..i].iter().any(|&(m, _)| m == n) {
            return Err(RestoreError::Task(format!(
                "--inherit-fd {pid}{n} is given twice"
            )));
        }
    }
    let own_status = OwnStatus::read();
    let rlimits = checks::rlimits(&img, own_status.cap_sys_resource)?;
    let planned = fds::plan(
        &image,
        &img,
        opts.member,
        &opts.inherit_fds,
        made.fds,
        opts.drop_pipe_data,
        &opts.restore_stdio,
        !opts.no_verify,
        made.ptys,
    );
    let mut fds = match planned {
        Ok(fds) => {
            RestoreError::all(errs)?;
            fds
        }
        Err(e) => {
            errs.extend(e.into_list());
            return Err(RestoreError::from_list(errs));
        }
    };
    fds.premade = made.files.to_vec();
    fds.peers = made.peers.to_vec();
    fds::fits_our_limit(&fds)?;
    for &(n, pid, fd) in made.from_peer {
        if let Some(p) = fds.fds.iter_mut().find(|p| p.fd == n) {
            p.source = fds::Source::FromPeer { pid, fd };
        }
    }
    // An epoll set this process makes itself whose item's file only
    // another process of its tree had: refused now, before anything is
    // torn down (`anonfds::fill_epolls` says the same).
    for e in img.epoll_items().iter() {
        if e.via != cryo_image::fds::EPOLL_VIA_ELSEWHERE {
            continue;
        }
        let makes = fds.fds.iter().find(|p| {
            matches!(p.source, fds::Source::Anon { kind: cryo_image::fd_kind::EPOLL, object, .. } if object == e.desc)
        });
        if let Some(p) = makes {
            return Err(RestoreError::Fd {
                fd: p.fd,
                what: p.what.clone(),
                why: Why::Said(format!(
                    "it watched a file under fd {} that only another process of its tree held; restore the tree from its root's image",
                    e.tfd
                )),
            });
        }
    }
    let checked = task::check(&img, &own_status, opts.cgroups == Cgroups::Captured)?;
    let setup = Setup {
        checked,
        cwd: img.str(p.cwd).unwrap_or("/").to_owned(),
        cwd_deleted: p.flags & cryo_image::process_flags::CWD_DELETED != 0,
        ignored: own_status.sig_ignored,
        umask: p.umask,
        personality: p.personality,
        rlimits,
    };
    // Its working directory, there now (a dry run said yes, and the
    // restore failed at its chdir: a sweep of stop 47).
    if !setup.cwd_deleted && !std::path::Path::new(&setup.cwd).is_dir() {
        return Err(RestoreError::Task(format!(
            "its working directory {} is gone (or not a directory now)",
            setup.cwd
        )));
    }
    // The shim names the program's executable (PR_SET_MM_MAP's exe_fd),
    // which the kernel lets only a checkpoint/restore-capable process
    // do: without, a user's restore of their own image failed after the
    // point of no return (status 125, a sweep of stop 47).
    if !own_status.cap_sys_admin && !own_status.cap_checkpoint_restore {
        return Err(RestoreError::Task(
            "restoring names the program's executable (/proc/PID/exe), which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, and this process has neither: restore as root".into(),
        ));
    }
    // A dead process's /proc directory as the working directory: entered
    // from a process made with that PID (in a new PID namespace, free).
    if let Some(pid) = cryo_image::dead_proc_dir(&setup.cwd).filter(|_| setup.cwd_deleted) {
        if !own_status.cap_sys_admin {
            return Err(RestoreError::Task(format!(
                "its working directory was /proc/{pid} of a process that had ended; making it again needs a process with PID {pid} for a moment (clone3 set_tid), which needs CAP_SYS_ADMIN"
            )));
        }
        if !opts.pidns && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(RestoreError::Task(format!(
                "its working directory was /proc/{pid} of a process that had ended, and PID {pid} is taken now; end that process, or restore with --pidns"
            )));
        }
    }
    let gadgets_ok = checks::gadgets_in_image(&image, &img);
    if !img.threads().is_empty() && !gadgets_ok {
        return Err(RestoreError::NoThreadGadgets(img.threads().len() + 1));
    }
    // Seccomp filters that need a privilege the program dropped are
    // installed before the credentials, which only a tracer that
    // suspends them lets the shim restore.
    let finish =
        if !opts.keep_stopped && !opts.use_tracer && gadgets_ok && !img.seccomp_before_creds() {
            Finish::Gadgets
        } else {
            Finish::Tracer
        };
    sysv::check(&img)?;
    Ok(Plan {
        image,
        opts,
        fds,
        gadget,
        tid_offset: checks::own_tid_offset(),
        setup,
        lazy: lazy_cfg,
        eager_fill: None,
        finish,
        tree: None,
        ptys: ptys::Ptys::default(),
        extra_flags: 0,
        stand_in_parent: cryo_image::handoff::NONE,
    })
}

/// Lazy restore: a usable userfaultfd, every page verified (unless the
/// image is stamped as checked), the working set to prefetch. Eager: every
/// page verified, unless stamped.
fn lazy_config(
    dir: &Path,
    image: &LoadedImage,
    opts: &Options,
) -> Result<Option<lazy::Config>, RestoreError> {
    Ok(match &opts.lazy {
        None => {
            if !opts.no_verify {
                verified::pages(image, opts.verify)?;
            }
            None
        }
        Some(l) => {
            uffd::probe().map_err(RestoreError::NoLazy)?;
            // Every page checked first, as an eager restore does, unless
            // a stamp says this very pages.img was checked (by capture, or
            // an earlier restore), which is trusted as an eager restore
            // trusts it. Until stop 49 only what the shim reads was
            // checked here and the page server checked each page as it
            // served it: a changed image ran until its first bad page,
            // 13 s and 261 lines of output in a sweep's run, and the
            // program was killed there. The check costs once per changed
            // (or copied) image; a fresh capture is stamped.
            if !opts.no_verify {
                verified::pages(image, opts.verify)?;
            }
            let image_id = cryo_image::checksum(image.meta());
            let ws_path = dir.join(lazy::WORKING_SET_FILE);
            let prefetch = if l.record_working_set || l.no_prefetch {
                Vec::new()
            } else {
                lazy::read_working_set(&ws_path, image_id)
                    .map_err(|e| {
                        RestoreError::WorkingSet(format!(
                            "{e}; delete it or record it again with --record-working-set"
                        ))
                    })?
                    .unwrap_or_default()
            };
            Some(lazy::Config {
                mode: l.mode,
                record: l.record_working_set.then_some(ws_path),
                prefetch,
                stats: l.stats.clone(),
                image_id,
                // (Checked whole above; with --verify each page again as
                // it is served, in case it changed since.)
                verify: opts.verify,
            })
        }
    })
}

impl Plan {
    /// Start the tracer, set up this process and exec the shim (a tree:
    /// every process of it, see [`tree`]). Returns only on failure (the
    /// process may then be half set up: fds moved).
    pub fn exec(mut self) -> RestoreError {
        // (Held since `hold_signals`: ^C while the checks ran ends the
        // restore here, before anything is made.)
        if let Some(sig) = interrupted() {
            return RestoreError::Interrupted(sig);
        }
        if let Some(f) = &self.eager_fill {
            if let Some(path) = &f.stats {
                if let Err(e) = lazy::write_stats_file(
                    path,
                    &lazy::eager_fill_json(f.lazy_pages, f.min_pages, f.shared_pages),
                ) {
                    return e.into_sys(format!("writing {}", path.display()));
                }
            }
        }
        // A process that made a group of its own (GNU timeout) or ran as
        // a shell's background job leads one again
        // (`Image::leads_group_again`; --same-pid: `lead_own_group`),
        // before the terminal is looked at: such a group is not its
        // terminal's foreground, and a tree's children join it.
        if !self.opts.pidns && !self.opts.same_pid && self.image().leads_group_again() {
            if let Err(e) = lead_group_again() {
                return e;
            }
        }
        // The captured modes of the terminal at the program's fds 0-2 go
        // on this restore's terminal there, when it runs in its
        // foreground (asked before a PID namespace hides the group).
        // (With --pidns such a root leads its group once in the namespace,
        // below: it will not be the terminal's foreground either.)
        let own_group_in_ns = self.opts.pidns && self.image().leads_group_again();
        if let Some(t) = self.image().terminal() {
            if !own_group_in_ns && sys::tty::in_foreground(t.fd as i32) {
                self.extra_flags |= cryo_image::handoff::flags::TERMINAL;
                // The rest of the root's group (a shell's pipeline, man's
                // pager) is the foreground too: a resize signals it all,
                // as does a screen to draw again (`Terminal::draws_itself`).
                let size = [t.rows, t.cols, t.xpixel, t.ypixel];
                let differs = sys::tty::size(t.fd as i32).is_ok_and(|s| s != size);
                if let (true, Some(tree)) = (differs || t.draws_itself(), &self.tree) {
                    let img = self.image();
                    let recs = img.tree();
                    let root = recs.get(0).map_or(0, |r| r.pgid);
                    tree.signal_window_change(t.other_foreground(recs.iter()).unwrap_or(root));
                }
            }
        }
        if self.opts.pidns {
            let pid = self.image().process().pid as i32;
            if let Err(e) = pidns::enter(pid) {
                return e;
            }
            // The invoker's group is outside the namespace (getpgrp() is
            // 0 here), and a kill(0, ...) from inside reaches all of it:
            // a review found --pidns's restored timeout killing the
            // script, as the plain restore's did.
            if own_group_in_ns {
                if let Err(e) = lead_group_again() {
                    return e;
                }
            }
        } else if self.opts.same_pid {
            let pid = self.image().process().pid as i32;
            if let Err(e) = supervise::fork_and_supervise(|| sys::fork_with_pid(pid)) {
                return e.into_sys(format!("forking the restored process with its PID {pid}"));
            }
            if let Err(e) = self.lead_own_group(pid) {
                return e;
            }
        }
        // A process that led its own session without a terminal (a
        // daemon's setsid) leads one again, before it forks the rest of
        // the tree.
        if self.image().process().flags & cryo_image::process_flags::SESSION_LEADER != 0 {
            if let Err(e) = lead_own_session() {
                return e;
            }
        }
        // A root that led the session of a pty of the image leads one
        // again, before it forks the rest of the tree.
        let root = self.image().process().pid;
        let ptys = self.tree.as_ref().map_or(&self.ptys, |t| t.ptys());
        if let Err(e) = ptys::lead_session(ptys, root) {
            return e;
        }
        // System V segments gone since the capture, made again (once for
        // a tree, before it forks).
        let verify = !self.opts.no_verify;
        let made = sysv::ensure(&self.image, &self.image(), verify).and_then(|()| {
            self.tree.as_ref().map_or(Ok(()), |t| {
                t.each_image(&mut |l, i| sysv::ensure(l, i, verify))
            })
        });
        let e = match made {
            Err(e) => e,
            Ok(()) => match self.tree.take() {
                Some(t) => tree::exec(self, t),
                None => self.exec_with(&mut || Ok(()), None),
            },
        };
        // Nothing of a failed restore stays behind.
        stored::remove_made_again();
        sysv::remove_made();
        e
    }

    /// [`Plan::exec`], calling `ready` once everything is set up, right
    /// before the exec (an error from it is returned instead). `barrier`:
    /// a tree's barrier sockets for the shim (`handoff::flags::BARRIER`):
    /// the first round's and the second's.
    fn exec_with(
        self,
        ready: &mut dyn FnMut() -> Result<(), RestoreError>,
        barrier: Option<(i32, i32)>,
    ) -> RestoreError {
        let Setup {
            checked,
            cwd,
            cwd_deleted,
            umask,
            ignored: _,
            personality,
            rlimits,
        } = &self.setup;
        let (umask, personality) = (*umask, *personality);

        // (The very files prepare checked: the directory may have been
        // captured into again meanwhile.)
        use cryo_image::load::ImageFile;
        let meta = match self.image.reopen(ImageFile::Meta) {
            Ok(f) => f,
            Err(e) => return e.into(),
        };
        let pages = match self.image.reopen(ImageFile::Pages) {
            Ok(f) => f,
            Err(e) => return e.into(),
        };

        let socks = match self.lazy.as_ref().map(|_| lazy::socketpair()).transpose() {
            Ok(v) => v,
            Err(e) => return e.into_sys("socketpair for the page server"),
        };
        let server = match (&self.lazy, socks) {
            (Some(cfg), Some((shim_end, server_end))) => Some(tracer::ServerStart {
                img: self.image(),
                pages: (self.image.pages_path(), self.image.id(ImageFile::Pages)),
                sums: (self.image.sums_path(), self.image.id(ImageFile::Sums)),
                cfg: cfg.clone(),
                server_end,
                shim_end,
            }),
            _ => None,
        };
        // The tracer finishes the restore where the shim cannot; a lazy
        // restore needs its process (the page server's parent and
        // watchdog) either way, tracing nothing when the shim finishes.
        if self.finish == Finish::Tracer || server.is_some() {
            // A process captured stopped by a job-control signal is
            // stopped again with that signal, if its main thread takes
            // it: the other threads block every signal until they are
            // released, and a stop nobody takes left the process running
            // and its threads waiting for ever (SIGTSTP blocked in the
            // main thread, taken by another at capture). Else SIGSTOP.
            let stop = self.opts.keep_stopped.then(|| {
                let p = self.image().process();
                let captured = p.stop_signal as i32;
                let blocked =
                    (1..=64).contains(&captured) && p.sig_blocked & (1u64 << (captured - 1)) != 0;
                if p.flags & cryo_image::process_flags::WAS_STOPPED != 0
                    && captured != 0
                    && !blocked
                {
                    captured
                } else {
                    libc::SIGSTOP
                }
            });
            let seize = self.finish == Finish::Tracer;
            let img = self.image();
            let suspend_seccomp =
                !img.seccomp().is_empty() || img.task().is_some_and(|t| t.seccomp_strict == 1);
            if let Err(e) = tracer::start(
                self.gadget,
                stop,
                server.as_ref(),
                seize,
                suspend_seccomp,
                barrier.map(|(_, round)| round),
            ) {
                return e;
            }
        }
        // The shim under another name (a hard link): it maps itself from
        // it before it replaces the executable (cryo-shim's remap_self).
        let alias = shim_alias(&self.opts.shim);
        let mut extra = vec![meta.as_raw_fd(), pages.as_raw_fd()];
        if let Some(s) = &server {
            // The server's end belongs to the tracer now.
            sys::close(s.server_end);
            extra.push(s.shim_end);
        }
        if let Some((b, r)) = barrier {
            extra.push(b);
            extra.push(r);
        }
        if let Some(f) = &alias {
            extra.push(f.as_raw_fd());
        }
        let img = self.image();
        let (installed, files_fd) =
            match fds::install(&self.image, &img, &self.fds, &extra, !self.opts.no_verify) {
                Ok(v) => v,
                Err(e) => return e,
            };
        let (meta_fd, pages_fd) = (installed[0], installed[1]);
        let sock_fd = if server.is_some() { installed[2] } else { -1 };
        let (barrier_fd, round_fd) = if barrier.is_some() {
            let at = 2 + usize::from(server.is_some());
            (installed[at], installed[at + 1])
        } else {
            (-1, -1)
        };
        let alias_fd = if alias.is_some() {
            installed[installed.len() - 1]
        } else {
            -1
        };
        use cryo_image::handoff::{self, Handoff};
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        let flags = bit(self.opts.phases, handoff::flags::PHASES)
            | bit(server.is_some(), handoff::flags::LAZY)
            | bit(self.finish == Finish::Gadgets, handoff::flags::SELF_UNMAP)
            | bit(checked.same_creds, handoff::flags::SAME_CREDS)
            | bit(self.opts.map, handoff::flags::MAP)
            | bit(barrier.is_some(), handoff::flags::BARRIER)
            | self.extra_flags;
        let cwd_done = if *cwd_deleted {
            stored::enter_removed_dir(&self.fds, cwd)
        } else {
            std::env::set_current_dir(cwd).map_err(|e| e.into_sys(format!("chdir {cwd}")))
        };
        if let Err(e) = cwd_done {
            return e;
        }
        sys::umask(umask);
        let _ = sys::personality(personality);
        for r in rlimits {
            // (Those the shim lowers at its end are only raised here:
            // `cryo_image::rlimit_set_late`.)
            let (cur, max) = match sys::getrlimit(r.resource) {
                Ok((c, m)) if cryo_image::rlimit_set_late(r.resource) => {
                    (r.cur.max(c), r.max.max(m))
                }
                _ => (r.cur, r.max),
            };
            if let Err(e) = sys::setrlimit(r.resource, cur, max) {
                return e.into_sys(format!("setrlimit({})", checks::rlimit_name(r.resource)));
            }
        }
        if let Err(e) = task::apply_before_exec(&img, checked) {
            return e;
        }
        let shim = match CString::new(self.opts.shim.as_os_str().as_bytes()) {
            Ok(s) => s,
            Err(_) => return RestoreError::NoShim(self.opts.shim.clone()),
        };
        // The shim sets only the captured dispositions: everything else must
        // be SIG_DFL after the exec, which keeps SIG_IGN (Rust ignores
        // SIGPIPE; nohup, SIGHUP). All signals are blocked first: one that
        // arrives from here on stays pending for the restored program.
        let _ = sys::block_all_signals();
        for sig in 1..=64 {
            if self.setup.ignored & (1u64 << (sig - 1)) != 0 {
                let _ = sys::default_disposition(sig);
            }
        }
        // Last, with every signal blocked: in a tree, another process may
        // be restored and send this one a signal as soon as this returns.
        if let Err(e) = ready() {
            return e;
        }
        // Epoll sets, inotify and fanotify instances another process of the
        // tree made: theirs now.
        if let Err(e) = fds::take_from_peers(&self.fds) {
            return e;
        }
        // Every process's sockets are made: TCP connections' SO_REUSEADDR
        // as it was.
        if let Err(e) = sockets::finish_reuse(&img, &self.fds) {
            return e;
        }
        // TCP connections made again in repair mode: out of it now that
        // their peers in the tree exist too.
        if let Err(e) = sockets::finish_repair(&img, &self.fds) {
            return e;
        }
        // Said last, once nothing of ours can fail but the exec (a
        // refusal is one line), and only to a terminal: this stderr is the
        // program's from the exec on, and a file or pipe must get exactly
        // what the program writes.
        use std::io::IsTerminal;
        if self.opts.say_own_pid
            && !self.opts.same_pid
            && !self.opts.pidns
            && std::io::stderr().is_terminal()
        {
            if let Some(n) = own_pid_note(&img) {
                eprintln!(
                    "cryo restore: note: {n}; this restore runs it under cryo restore's PID: --same-pid or --pidns gives it its own (-q: not said)"
                );
            }
        }
        let fd = |v: i32| if v < 0 { handoff::NONE } else { v as u64 };
        let h = Handoff {
            meta_fd: meta_fd as u64,
            pages_fd: pages_fd as u64,
            tid_offset: self.tid_offset as u64,
            flags,
            exec_ns: monotonic_ns(),
            sock_fd: fd(sock_fd),
            alias_fd: fd(alias_fd),
            files_fd: files_fd.map_or(handoff::NONE, |f| f as u64),
            barrier_fd: fd(barrier_fd),
            round_fd: fd(round_fd),
            parent: self.stand_in_parent,
        };
        let args: Vec<CString> = std::iter::once("cryo-shim".to_owned())
            .chain(h.encode())
            .map(|s| CString::new(s).expect("no NUL"))
            .collect();
        sys::execve(&shim, &args).into_sys(format!("exec {}", self.opts.shim.display()))
    }
}

/// `SHIM.text`, if it is the shim's own file under another name (a hard
/// link: same device and inode) or a byte-identical copy.
fn shim_alias(shim: &Path) -> Option<std::fs::File> {
    let path = shim.with_extension("text");
    let f = std::fs::File::open(&path).ok()?;
    let (a, b) = (f.metadata().ok()?, std::fs::metadata(shim).ok()?);
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return Some(f);
    }
    (a.len() == b.len() && std::fs::read(&path).ok()? == std::fs::read(shim).ok()?).then_some(f)
}

fn monotonic_ns() -> u64 {
    let (sec, nsec) = sys::clock_gettime(libc::CLOCK_MONOTONIC).unwrap_or((0, 0));
    sec as u64 * 1_000_000_000 + nsec as u64
}

/// What cryo restore needs from /proc/self/status, read once.
pub(crate) struct OwnStatus {
    cap_sys_resource: bool,
    /// clone3's set_tid (a tree's PIDs, --same-pid).
    cap_sys_admin: bool,
    /// CAP_CHECKPOINT_RESTORE: with CAP_SYS_ADMIN, either names the
    /// executable (PR_SET_MM_MAP's exe_fd).
    cap_checkpoint_restore: bool,
    /// SigIgn: the signals this process ignores.
    sig_ignored: u64,
    /// The whole file, for the task checks.
    text: String,
}

impl OwnStatus {
    fn read() -> OwnStatus {
        const CAP_SYS_RESOURCE: u32 = 24;
        const CAP_SYS_ADMIN: u32 = 21;
        let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let hex = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        OwnStatus {
            cap_sys_resource: hex("CapEff:") & (1 << CAP_SYS_RESOURCE) != 0,
            cap_sys_admin: hex("CapEff:") & (1 << CAP_SYS_ADMIN) != 0,
            cap_checkpoint_restore: hex("CapEff:") & (1 << 40) != 0,
            sig_ignored: hex("SigIgn:"),
            text,
        }
    }
}

pub use cryo_image::mapped::{malloc_heads, mapped_pages};
