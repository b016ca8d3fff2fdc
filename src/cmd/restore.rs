//! `cryo restore DIR`: this process becomes the captured one.

use anyhow::Context;
use std::path::PathBuf;

/// Bring a captured process back in place of this `cryo` process.
///
/// Everything is checked before the point of no return: page checksums
/// (once per pages.img, recorded in DIR/verified; see --verify), the files behind mappings (same inode, size, mtime), the vDSO (same
/// bytes and layout: same kernel), the CPU's xsave layout, the shim's
/// address window, fds and rlimits. A refusal is one line saying what
/// differs. Then cryo execs `cryo-shim` in this very process, so the
/// restored program keeps this PID, terminal and job control, and its exit
/// status is this command's. (`cryo pack` writes one executable that
/// does all of this in a single exec, for images that allow it.)
///
/// fds 0-2 of the restored program are this command's (like CRIU's
/// --shell-job; --restore-stdio gives them back as they were); a copy of
/// one of them at 3 and up is this command's too, unless it was a file
/// (nginx's error.log at 2 and 3): that copy is the file, opened again.
/// Every other fd comes back with its number, flags and
/// offset, dup'ed fds sharing one description again: files, directories
/// and devices are reopened (same inode checked), unlinked files and
/// memfds are made again from the image, pipes whose ends were all in the
/// process are made again with the bytes that were in them, and flock,
/// OFD and POSIX locks are taken again. Pipes and terminals connected to
/// something outside need --inherit-fd. A process captured while stopped
/// is resumed unless --keep-stopped. A process that led a session of its
/// own without a terminal (a daemon's setsid) leads one again; where
/// this command leads a process group (a job-control shell's job), a
/// child of it does, and this command waits for it as with --same-pid.
/// The terminal at fds 0-2 gets the modes the program had set (raw, no
/// echo) when this command is its foreground, and the foreground group a
/// SIGWINCH when its size is not the captured one.
///
/// A signal sent to this command while it restores is the program's: it
/// is held and delivered once the program runs, by the program's own
/// handlers and mask. Only ^C, SIGTERM, SIGHUP or SIGQUIT while it waits
/// for a tree's captured PIDs to be freed ends it, with nothing restored
/// (status 128 + the signal).
///
/// An image of a process tree comes back whole: this process becomes its
/// root, and every other process is forked again with its captured PID
/// (needs root), parent, session and process group; zombies come back as
/// zombies, pipes and socket pairs between the processes with their
/// bytes, shared memory and shared descriptions as one. Nothing runs
/// until every process is in place. Every captured PID but the root's
/// must be free (--same-pid: the root's too). The children see this
/// PID as their parent's: a program that kept its own PID to recognise
/// itself later (Python's multiprocessing joins its pool only from the
/// PID that made it; Ruby aborts on its next fork) needs --same-pid or
/// --pidns. fds 0-2 the root shared with other processes are this
/// command's for them too, by the number the root had them at (captured
/// with `2>&1`, restored with `>out 2>err`: every process's stderr goes
/// to err).
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RestoreArgs {
    /// Image directory written by `cryo capture`.
    pub dir: PathBuf,
    /// Leave the restored process stopped (SIGSTOP); `kill -CONT` resumes it.
    /// Of a tree, the root: the others run (or stay stopped) as captured.
    #[arg(long)]
    pub keep_stopped: bool,
    /// Fill every page before the program runs (the default).
    #[arg(long, conflicts_with = "lazy")]
    pub eager: bool,
    /// Start the program before its memory is in: private anonymous memory
    /// is served on first touch by a page server through userfaultfd.
    /// `background` (the default for --lazy) then streams the rest (with
    /// two CPUs, from both ends of memory at once) and exits; `on-demand`
    /// serves only what is touched, for as long as the
    /// program runs. A recorded working set (see --record-working-set) is
    /// prefetched before the program resumes.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "background")]
    pub lazy: Option<LazyMode>,
    /// Map private anonymous memory (heap, anonymous mappings) from the
    /// image's pages.img instead of copying it: nothing is copied at
    /// restore, pages come from the page cache on first touch and are
    /// copied only when written, and every restore of one image shares the
    /// pages it does not write. What differs from anonymous memory:
    /// MADV_DONTNEED gives back the captured bytes, not zeros (programs
    /// using jemalloc, mimalloc or tcmalloc are refused), /proc/PID/maps
    /// names pages.img, no transparent huge pages. pages.img must not be
    /// changed while restored programs run (cryo never writes it in
    /// place). Slower than eager where threads run on other CPUs while
    /// the program writes much of its memory: each such copy is a TLB
    /// shootdown (python3 with numpy and its OpenBLAS thread: 129 against
    /// 40 ms eager here); measure it. See docs/design.md.
    #[arg(long, conflicts_with_all = ["lazy", "eager"])]
    pub map: bool,
    /// Lazy: fill memory eagerly instead when the image (every process of
    /// a tree together) has less than this many MiB of lazy memory. Below
    /// about 4 MiB the page server's start and its round trips cost more
    /// than copying the pages, even for a program that touches 1 % of them
    /// (docs/benchmarks.md, "Lazy or eager by size"). Likewise when the
    /// processes of a tree shared at least this many MiB copy-on-write
    /// (beyond the first copy): served lazily, each would get a copy of
    /// its own; filled eagerly, children are forked sharing them again.
    /// 0: always lazy. `--dry-run` and `--lazy-stats` say which it was.
    #[arg(long, value_name = "MIB", default_value_t = 4, requires = "lazy")]
    pub lazy_min_mib: u64,
    /// Lazy: record which pages the program touches first, in order, into
    /// DIR/working-set (serves on demand while recording). Later --lazy
    /// restores prefetch that set.
    #[arg(long, requires = "lazy")]
    pub record_working_set: bool,
    /// Lazy: ignore a recorded working set.
    #[arg(long, requires = "lazy")]
    pub no_prefetch: bool,
    /// Lazy: write the page server's statistics (faults, pages, service
    /// times) as JSON to FILE when it exits (whole, by a rename: the server
    /// may finish a moment after the program, so a script waits for FILE
    /// to appear).
    #[arg(long, value_name = "FILE", requires = "lazy")]
    pub lazy_stats: Option<PathBuf>,
    /// Give restored fd N our fd M (`N=M`, or `N` for the same number).
    /// Needed for pipes to outside the image and terminals at fd 3 and up.
    /// `PID:N[=M]` gives it to the tree's process with that captured PID
    /// (the root's without one; a tree's other processes get this
    /// command's fds 0-2 for pipes that led outside the tree at 0-2).
    #[arg(long = "inherit-fd", value_name = "[PID:]N[=M]", value_parser = parse_inherit)]
    pub inherit_fd: Vec<(Option<u32>, i32, i32)>,
    /// Accept losing bytes that were unread in a pipe the restored fd does
    /// not get back: fds 0-2 (this command's own) and --inherit-fd fds are
    /// other pipes, and restore refuses by default when the captured one
    /// still held data.
    #[arg(long)]
    pub drop_pipe_data: bool,
    /// Restore an image captured in another boot (or on another machine),
    /// or where CLOCK_MONOTONIC is behind what the process saw (another
    /// time namespace). Refused by default: the process's waits and timers
    /// kept as deadlines on CLOCK_MONOTONIC or CLOCK_BOOTTIME (Go and node
    /// timers, asyncio, pthread_cond_timedwait on a monotonic condition)
    /// would end hours late, or at once. With it, the process sees those
    /// clocks jump (CPU-time clocks start again from zero either way).
    #[arg(long)]
    pub clock_jump: bool,
    /// Give fds 0-2 (or those listed, e.g. `--restore-stdio=0`) back as
    /// they were too — a file at its offset, /dev/null, a pipe made again —
    /// as for a daemon, instead of this command's own; a terminal is still
    /// this command's.
    #[arg(long, value_name = "FDS", num_args = 0..=1, require_equals = true,
          default_missing_value = "0,1,2", value_delimiter = ',')]
    pub restore_stdio: Option<Vec<i32>>,
    /// Skip checking pages against their checksums in sums.img, before the
    /// exec and (lazy) in the page server; meta.img is still checked.
    #[arg(long)]
    pub no_verify: bool,
    /// Check every page against sums.img even if this very pages.img was
    /// checked before. By default a full check is done once and recorded
    /// in DIR/verified with the identity of pages.img and sums.img
    /// (device, inode, size, modification and change times); a restore
    /// that finds both unchanged skips it; lazy restores too. (With
    /// --verify a lazy restore's page server also checks each page as it
    /// serves it.)
    #[arg(long, conflicts_with = "no_verify")]
    pub verify: bool,
    /// Give the restored process (the root of a tree) its captured PID
    /// too, as every other process of a tree gets its own. cryo restore
    /// then forks it with that PID and stays as its parent: it passes on
    /// the signals a shell sends a job and exits as the restored process
    /// does (same code, or killed by the same signal). For programs that
    /// keep their own PID (Python's multiprocessing checks it before it
    /// joins its workers), and for an interactive shell: a process that
    /// led its process group (a shell, a shell's job) leads one again with
    /// that id, the terminal's foreground if this command had it; ^Z stops
    /// it and this command with it, and `fg` gives it the terminal back.
    /// Needs CAP_SYS_ADMIN and the PID free.
    #[arg(long, conflicts_with = "pidns")]
    pub same_pid: bool,
    /// Restore in a new PID namespace (and mount namespace, with its own
    /// /proc), where every captured PID is free: the root gets its PID
    /// too, and a tree can be restored while the original still runs.
    /// The namespace's init (PID 1) is the root's parent; cryo restore
    /// stays outside, passes on the signals a shell sends a job and exits
    /// as the root does; when the root ends, every process left in the
    /// namespace ends. The root's session and process group stay the
    /// invoker's, outside the namespace (getpgrp() is 0 there): a program
    /// that kept its group's id (bash with job control, started by
    /// another script) cannot put children in it. Needs CAP_SYS_ADMIN.
    #[arg(long)]
    pub pidns: bool,
    /// Which cgroups the restored processes join. `auto`: a process, or a
    /// tree whose processes were all in the same cgroups, stays in cryo
    /// restore's (as any program it starts would); a tree whose processes
    /// were in different cgroups goes back to the captured ones, so they
    /// are never merged into one. `inherit`: always cryo restore's.
    /// `captured`: each process joins the cgroups it was captured in (on
    /// every hierarchy mounted here; `cryo inspect` lists them), refused
    /// before anything is made if one is gone.
    #[arg(long, value_enum, default_value = "auto")]
    pub cgroups: CgroupsArg,
    /// Check everything and report, but do not restore.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the report as JSON (image, pid, executable,
    /// mappings, fds, processes, how the restore finishes, mapped and lazy
    /// pages, where the program keeps its own PID). On a refusal or an
    /// error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Print the shim's phase times on stderr, for benchmarks: exec,
    /// image+files, unmap+vdso, map+fill, state, threads+frame, and the
    /// shim's total, in µs.
    #[arg(long)]
    pub phases: bool,
    /// Say nothing but errors: without it, restoring under cryo restore's
    /// PID a program that keeps its own PID in memory (bash's $$, nginx's
    /// master, Python's asyncio and multiprocessing) says so on stderr
    /// first, with --same-pid and --pidns as the way out, when stderr is
    /// a terminal (else it is the program's alone: `--dry-run` says it).
    #[arg(short, long)]
    pub quiet: bool,
    /// Finish with a ptrace tracer even where the image allows the shim to
    /// finish alone (the way --keep-stopped restores finish).
    #[arg(long)]
    pub use_tracer: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CgroupsArg {
    Auto,
    Inherit,
    Captured,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LazyMode {
    Background,
    OnDemand,
}

fn parse_inherit(s: &str) -> Result<(Option<u32>, i32, i32), String> {
    let (pid, s) = match s.split_once(':') {
        Some((p, rest)) => (
            Some(
                p.parse::<u32>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("bad PID {p:?}"))?,
            ),
            rest,
        ),
        None => (None, s),
    };
    let (a, b) = s.split_once('=').unwrap_or((s, s));
    let n = a
        .parse::<i32>()
        .map_err(|_| format!("bad fd number {a:?}"))?;
    let m = b
        .parse::<i32>()
        .map_err(|_| format!("bad fd number {b:?}"))?;
    if n < 0 || m < 0 {
        return Err("fd numbers are not negative".into());
    }
    Ok((pid, n, m))
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let opts = cryo_restore::Options {
        keep_stopped: args.keep_stopped,
        inherit_fds: args
            .inherit_fd
            .iter()
            .filter(|i| i.0.is_none())
            .map(|&(_, n, m)| (n, m))
            .collect(),
        inherit_member_fds: args
            .inherit_fd
            .iter()
            .filter_map(|&(p, n, m)| Some((p?, n, m)))
            .collect(),
        member: None,
        shim: crate::cmd::check::shim_path(),
        shim_len: Some(crate::cmd::check::built_shim().0),
        no_verify: args.no_verify,
        verify: args.verify,
        phases: args.phases,
        use_tracer: args.use_tracer,
        drop_pipe_data: args.drop_pipe_data,
        clock_jump: args.clock_jump,
        restore_stdio: args.restore_stdio.clone().unwrap_or_default(),
        same_pid: args.same_pid,
        pidns: args.pidns,
        say_own_pid: !args.quiet && !args.dry_run,
        cgroups: match args.cgroups {
            CgroupsArg::Auto => cryo_restore::Cgroups::Auto,
            CgroupsArg::Inherit => cryo_restore::Cgroups::Inherit,
            CgroupsArg::Captured => cryo_restore::Cgroups::Captured,
        },
        map: args.map,
        lazy: args.lazy.map(|m| cryo_restore::LazyOptions {
            mode: match m {
                LazyMode::Background => cryo_restore::lazy::Mode::Background,
                LazyMode::OnDemand => cryo_restore::lazy::Mode::OnDemand,
            },
            record_working_set: args.record_working_set,
            no_prefetch: args.no_prefetch,
            stats: args.lazy_stats.clone(),
            min_pages: args.lazy_min_mib.saturating_mul(1 << 20) / cryo_image::PAGE_SIZE,
        }),
    };
    // Where the page server writes when the program ends, checked now:
    // a --lazy-stats file in a missing directory was not written and
    // nothing said so; a working set on a read-only image directory
    // failed at the end and killed the program (a sweep of stop 47).
    if let Some(p) = &args.lazy_stats {
        let d = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !d.is_dir() {
            anyhow::bail!(
                "cannot restore {}: --lazy-stats {}: its directory {} does not exist",
                args.dir.display(),
                p.display(),
                d.display()
            );
        }
    }
    if args.record_working_set && args.lazy.is_some() && !args.dry_run {
        let c = std::ffi::CString::new(args.dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: a NUL-terminated path we own.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            anyhow::bail!(
                "cannot restore {}: --record-working-set writes the working set into the image directory, which this user cannot write ({})",
                args.dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    // Every signal held from here on: they are the restored program's
    // (`hold_signals`); a dry run ends as any command does.
    if !args.dry_run {
        cryo_restore::hold_signals().context("cannot restore")?;
    }
    let plan = match cryo_restore::prepare(&args.dir, opts) {
        Ok(p) => p,
        Err(cryo_restore::RestoreError::Interrupted(sig)) => return Ok(interrupted(&args, sig)),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot restore {}", args.dir.display()))
            )
        }
    };
    // What the checks made again (a kept file a tree maps, gone since the
    // capture) goes again on every error return (the guard) and, for a
    // dry run, which restores nothing, at once, before any output: a
    // panic aborts (no unwinding), and `--dry-run | true` panicked on
    // EPIPE and left it, after which every restore refused it (a review
    // of stop 50).
    let made_again = MadeAgain;
    if args.dry_run {
        cryo_restore::remove_made_again();
    }
    if args.dry_run && args.json {
        let img = plan.image();
        let p = img.process();
        let note = (!args.same_pid && !args.pidns)
            .then(|| cryo_restore::own_pid_note(&img))
            .flatten();
        println!(
            "{}",
            serde_json::json!({
                "image": args.dir,
                "pid": p.pid,
                "exe": img.str(p.exe),
                "mappings": img.vmas().len(),
                "fds": plan.fds().len(),
                "processes": plan.processes(),
                "finish": match plan.finish() {
                    cryo_restore::Finish::Gadgets => "gadgets",
                    cryo_restore::Finish::Tracer => "tracer",
                },
                "map_pages": args.map.then(|| cryo_restore::mapped_pages(&img)),
                "lazy": plan.lazy().map(|l| serde_json::json!({
                    "pages": cryo_restore::lazy::lazy_pages(&img),
                    "prefetch_runs": l.prefetch.len(),
                })),
                "sysv_made_again": plan.sysv_to_make_again(),
                "leads_session": p.flags & cryo_image::process_flags::SESSION_LEADER != 0,
                "stdio_given": plan.given_stdio().iter()
                    .map(|&(pid, fd)| serde_json::json!({"pid": pid, "fd": fd}))
                    .collect::<Vec<_>>(),
                "eager_fill": plan.eager_fill().map(|f| serde_json::json!({
                    "lazy_pages": f.lazy_pages,
                    "lazy_min_pages": f.min_pages,
                    "shared_pages": f.shared_pages,
                })),
                "own_pid": {
                    "refs": img.pid_refs().iter()
                        .filter(|r| r.kind == cryo_image::task::pid_ref::VALUE)
                        .map(|r| r.addr).collect::<Vec<u64>>(),
                    "held_mutexes": img.pid_refs().iter()
                        .filter(|r| r.kind != cryo_image::task::pid_ref::VALUE)
                        .map(|r| r.addr).collect::<Vec<u64>>(),
                    "note": note,
                },
            })
        );
        return Ok(0);
    }
    if args.dry_run {
        let img = plan.image();
        let p = img.process();
        println!(
            "{}: pid {} ({}) can be restored here: {} mappings, {} fds{}",
            args.dir.display(),
            p.pid,
            img.str(p.exe).unwrap_or("?"),
            img.vmas().len(),
            plan.fds().len(),
            match plan.processes() {
                1 => String::new(),
                2 => ", with 1 more process of its tree".to_string(),
                n => format!(", with {} more processes of its tree", n - 1),
            }
        );
        println!(
            "finish: {}",
            match plan.finish() {
                cryo_restore::Finish::Gadgets =>
                    "by the shim, through the program's own code (no tracer)",
                cryo_restore::Finish::Tracer => "by a ptrace tracer",
            }
        );
        if !args.same_pid && !args.pidns {
            if let Some(n) = cryo_restore::own_pid_note(&img) {
                println!(
                    "note: {n}; this restore runs it under cryo restore's PID: --same-pid or --pidns gives it its own"
                );
            }
        }
        if let Some(n) = cryo_restore::terminal_note(&img) {
            println!("terminal: {n}");
        }
        for (pid, fd) in plan.given_stdio() {
            println!(
                "stdio: process {pid}'s fd {fd} was a pipe or socket to a process outside the tree: it gets this restore's fd {fd}, as the root's fds 0-2 do"
            );
        }
        if p.flags & cryo_image::process_flags::SESSION_LEADER != 0 {
            // (setsid refuses a process group's leader: then a child.)
            let me = std::process::id() as i32;
            let leads_group = nix::unistd::getpgrp().as_raw() == me
                && nix::unistd::getsid(None).map(|s| s.as_raw()) != Ok(me);
            println!(
                "session: it led its own, and leads a new one{}",
                if leads_group && !args.same_pid && !args.pidns {
                    " (from a child of cryo restore: this command leads a process group, which cannot start one)"
                } else {
                    ""
                }
            );
        }
        let remade = plan.sysv_to_make_again();
        if !remade.is_empty() {
            println!(
                "System V: made again as captured (gone since the capture): {}",
                remade.join(", ")
            );
        }
        if args.map {
            let heads = cryo_restore::malloc_heads(&img);
            println!(
                "map: {} pages mapped from pages.img{}",
                cryo_restore::mapped_pages(&img),
                if heads > 0 {
                    format!(
                        "; {heads} {} glibc's malloc mmapped for itself copied at the first page (so that realloc copies such a block rather than grow it with mremap, which would bring in pages.img's next bytes)",
                        if heads == 1 { "block" } else { "blocks" }
                    )
                } else {
                    String::new()
                }
            );
        }
        let mib = |pages: u64| (pages * cryo_image::PAGE_SIZE) as f64 / (1u64 << 20) as f64;
        match plan.eager_fill() {
            Some(f) if f.shared_pages > 0 => println!(
                "lazy: filled eagerly instead: the tree's processes shared {} pages ({:.1} MiB) copy-on-write, at least --lazy-min-mib ({} MiB); served lazily each process would get its own copy, filled eagerly the children are forked sharing them again; --lazy-min-mib 0 serves them lazily",
                f.shared_pages,
                mib(f.shared_pages),
                (f.min_pages * cryo_image::PAGE_SIZE) >> 20
            ),
            Some(f) => println!(
                "lazy: filled eagerly instead: {} lazy pages ({:.1} MiB) is below --lazy-min-mib ({} MiB); --lazy-min-mib 0 serves them lazily",
                f.lazy_pages,
                mib(f.lazy_pages),
                (f.min_pages * cryo_image::PAGE_SIZE) >> 20
            ),
            None => {}
        }
        if let Some(l) = plan.lazy() {
            println!(
                "lazy: {} pages served by the page server, {} working-set runs to prefetch",
                cryo_restore::lazy::lazy_pages(&img),
                l.prefetch.len()
            );
        }
        return Ok(0);
    }
    // (The restore removes them itself if it fails; once it is past its
    // point of no return they are the restored processes'.)
    std::mem::forget(made_again);
    match plan.exec() {
        cryo_restore::RestoreError::Interrupted(sig) => Ok(interrupted(&args, sig)),
        e => Err(anyhow::Error::new(e).context(format!("restoring {}", args.dir.display()))),
    }
}

/// Ended by `sig` (^C, SIGTERM, SIGHUP, SIGQUIT) before anything was
/// made: said, and the status a shell gives a command that signal ended.
fn interrupted(args: &RestoreArgs, sig: i32) -> i32 {
    eprintln!(
        "cryo: cannot restore {}: {}",
        args.dir.display(),
        cryo_restore::RestoreError::Interrupted(sig)
    );
    128 + sig
}

/// Removes, when dropped, the files this restore made again
/// (`cryo_restore::remove_made_again`): on every error return of `cryo
/// restore` (forgotten before the exec).
struct MadeAgain;

impl Drop for MadeAgain {
    fn drop(&mut self) {
        cryo_restore::remove_made_again();
    }
}
