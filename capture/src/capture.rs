//! The capture flow: seize, look at everything (refusing, with every
//! obstacle at once, what cannot be restored), stream the pages, write the
//! image atomically, leave the target as it was. Each resource is its own
//! module (`regs`, `vma`, `fds`, `signals`, `timers`, `task`, `mm`,
//! `gadget`); this file is the order they run in.

use crate::fds::StoredFiles;
use crate::obstacles::Obstacles;
use crate::procinfo;
use crate::remote::{InjectError, Remote};
use crate::threads::Group;
use crate::tracee::PtraceError;
use crate::writer::{ImageDirWriter, WriteError};
use cryo_image::write::ImageBuilder;
use cryo_image::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What happens to the target after a successful capture. After a failed
/// one the target is always left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Running stays running, stopped stays stopped.
    AsItWas,
    /// Leave it in group-stop (continue it with SIGCONT).
    LeaveStopped,
    /// Kill it (SIGKILL) once the image is safely on disk.
    Kill,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub after: After,
    /// Replace an existing image at the destination.
    pub force: bool,
    /// Write pages.img with O_DIRECT where the filesystem allows it
    /// (see [`crate::writer::PageWriter`]).
    pub direct_io: bool,
    /// Limits on stored file contents.
    pub limits: crate::fds::Limits,
}

/// Progress of the page dump, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// What a capture did (also printed by `cryo capture --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pid: i32,
    pub dir: PathBuf,
    pub vmas: usize,
    pub pages_stored: u64,
    pub pages_zero: u64,
    pub pages_bytes: u64,
    pub meta_bytes: u64,
    /// sums.img: 8 bytes per stored page.
    pub sums_bytes: u64,
    pub rss_kib: u64,
    /// Time from the interrupt to the detach (the target did not run).
    /// A target left as it was is let go once everything is read, before
    /// the last pages are written and fsynced.
    pub frozen_ms: f64,
    /// Time spent reading and writing pages (until every page is written,
    /// not counting the fsync).
    pub dump_ms: f64,
    pub total_ms: f64,
    /// Dumped page bytes (stored + zero-checked) per second of dump time.
    pub throughput_gib_s: f64,
    pub was_stopped: bool,
    /// Whether pages.img was written with O_DIRECT.
    pub direct_io: bool,
    pub in_syscall: bool,
}

/// Why a capture failed. The target was left as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Everything that keeps this process from being captured faithfully,
    /// all of it (see [`crate::obstacles`]).
    #[error("cannot capture pid {pid}: {}", join_obstacles(.obstacles))]
    Refused { pid: i32, obstacles: Vec<String> },
    #[error(transparent)]
    Ptrace(#[from] crate::tracee::PtraceError),
    #[error(transparent)]
    Proc(#[from] crate::procinfo::ProcError),
    #[error(transparent)]
    Inject(#[from] crate::remote::InjectError),
    #[error(transparent)]
    Mem(#[from] crate::pages::MemError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn join_obstacles(o: &[String]) -> String {
    match o {
        [one] => one.clone(),
        many => format!("{} obstacles: {}", many.len(), many.join("; ")),
    }
}

fn refused(pid: i32, why: impl Into<String>) -> CaptureError {
    CaptureError::Refused {
        pid,
        obstacles: vec![why.into()],
    }
}

/// Check, without writing anything, whether `pid` can be captured: every
/// obstacle, all at once (empty: it can). The target is frozen only while
/// it is looked at, and left as it was.
pub fn check(pid: i32, opts: &Options) -> Result<Vec<String>, CaptureError> {
    let mut tracee = Group::seize(pid)?;
    let r = capture_stopped(&mut tracee, None, opts, &mut |_| {});
    drop(tracee);
    match r {
        Ok(_) => Ok(Vec::new()),
        Err(CaptureError::Refused { obstacles, .. }) => Ok(obstacles),
        Err(e) => {
            if matches!(crate::tracee::proc_state(pid), None | Some('Z') | Some('X')) {
                return Err(PtraceError::Exited(pid).into());
            }
            Err(e)
        }
    }
}

/// Capture `pid` into `dest`. On error the target is left as it was and
/// nothing exists at `dest` that was not there before.
pub fn capture(
    pid: i32,
    dest: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary, CaptureError> {
    let t_start = Instant::now();
    if crate::tracee::proc_state(pid).is_none() {
        return Err(PtraceError::NoSuchProcess(pid).into());
    }
    // The resident size, to allocate the page buffers before the freeze.
    let rss = procinfo::status(pid).map_or(0, |s| s.vm_rss_kib * 1024);
    let mut writer = ImageDirWriter::create(dest, opts.force, opts.direct_io, rss)?;
    let mut tracee = Group::seize(pid)?;
    let t_frozen = Instant::now();
    let res = capture_stopped(&mut tracee, Some(&mut writer), opts, progress);
    let (b, mut dump) = match res {
        Ok(v) => v,
        Err(e) => {
            // `tracee` detaches on drop: the target goes on as it was;
            // `writer` removes its temporary directory on drop.
            drop(tracee);
            if matches!(crate::tracee::proc_state(pid), None | Some('Z') | Some('X')) {
                return Err(PtraceError::Exited(pid).into());
            }
            return Err(e);
        }
    };
    // Everything is read. A target that is to go on as it was can go on
    // now, while the last page buffers are written and fsynced: an error
    // from here on loses only the image. --leave-stopped and --kill wait
    // for the image to be safely on disk (on error: as it was).
    let was_stopped = tracee.was_stopped();
    let mut tracee = Some(tracee);
    let mut frozen = None;
    if opts.after == After::AsItWas {
        if let Some(t) = tracee.take() {
            t.detach()?;
        }
        frozen = Some(t_frozen.elapsed());
    }
    let t_drain = Instant::now();
    writer.drain()?;
    dump.dump_time += t_drain.elapsed();
    let direct_io = writer.pages().is_direct();
    let meta = b.encode(writer.pages_len());
    let pages_bytes = writer.pages_len();
    let sums_bytes = dump.sums.len() as u64;
    let dir = writer.commit(&meta, &dump.sums)?;
    if let Some(t) = tracee.take() {
        match opts.after {
            After::AsItWas => t.detach()?,
            After::LeaveStopped => t.leave_stopped()?,
            After::Kill => t.kill()?,
        }
    }
    let frozen = frozen.unwrap_or_else(|| t_frozen.elapsed());
    let dump_s = dump.dump_time.as_secs_f64();
    Ok(Summary {
        pid,
        dir,
        vmas: b.vmas.len(),
        pages_stored: dump.stored,
        pages_zero: dump.zero,
        pages_bytes,
        meta_bytes: meta.len() as u64,
        sums_bytes,
        rss_kib: b.process.rss_kib,
        frozen_ms: frozen.as_secs_f64() * 1e3,
        dump_ms: dump_s * 1e3,
        total_ms: t_start.elapsed().as_secs_f64() * 1e3,
        throughput_gib_s: if dump_s > 0.0 {
            ((dump.stored + dump.zero) * PAGE_SIZE) as f64 / dump_s / (1u64 << 30) as f64
        } else {
            0.0
        },
        was_stopped,
        direct_io,
        in_syscall: b.process.flags & process_flags::IN_SYSCALL != 0,
    })
}

/// glibc's offset of the cached TID in each thread's TCB, read from its
/// own descriptor. A threaded process on a glibc without the descriptor
/// is refused (its threads' cached ids could not be rewritten); a process
/// without a shared glibc keeps 0 (the shim then looks for the id in the
/// TCB, as for a static binary).
fn tid_offset(
    pid: i32,
    maps: &[procinfo::Mapping],
    b: &mut ImageBuilder,
    obs: &mut crate::obstacles::Obstacles,
) {
    let Some(libc) = crate::glibc::mapped_libc(maps) else {
        return;
    };
    match crate::glibc::tid_offset(pid, libc) {
        Ok(off) => b.process.tid_offset = off,
        Err(e) if !b.threads.is_empty() => {
            obs.push(format!("its threads' cached ids could not be located: {e}"))
        }
        Err(_) => {}
    }
}

struct DumpStats {
    stored: u64,
    zero: u64,
    /// sums.img's bytes.
    sums: Vec<u8>,
    dump_time: std::time::Duration,
}

/// Read everything of a stopped target: first its state (refusing, with
/// every obstacle at once, what cannot be restored), then — unless `w` is
/// None (a check only) — its pages into the image writer.
fn capture_stopped(
    g: &mut Group,
    w: Option<&mut ImageDirWriter>,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<(ImageBuilder, DumpStats), CaptureError> {
    let pid = g.pid();
    let mut b = ImageBuilder::default();
    let mut obs = Obstacles::default();
    let mut stored = StoredFiles::default();

    // Process-wide conditions: children, namespaces, seccomp.
    let st = crate::task::StatusText::read(pid);
    crate::task::obstacles(pid, &st, &mut obs);
    // Mappings and fds: what each is (the contents of files that exist
    // nowhere else stored), or why it cannot be restored.
    let maps = procinfo::smaps(pid)?;
    let classified =
        crate::vma::classify_all(pid, &maps, &mut b, &mut stored, &opts.limits, &mut obs);
    let fds = procinfo::fds(pid)?;
    crate::fds::capture(pid, &fds, &mut b, &mut stored, &opts.limits, &mut obs);
    // The main thread: registers, xsave, mask, rseq, TLS words; queued
    // signals (its own and the process's).
    let t = &mut g.main;
    crate::regs::capture(t, &mut b)?;
    crate::signals::queued(pid, &mut b)?;
    let status = procinfo::status(pid)?;
    let Some(vdso) = crate::mm::vdso(t, &maps)? else {
        return Err(refused(pid, "it has no [vdso] mapping"));
    };
    // State only the task itself can tell: injected system calls.
    let timers = procinfo::timers(pid)?;
    let mut task = cryo_image::task::TaskState::default();
    let mut securebits = 0;
    {
        let mut rem = Remote::new(t, vdso.0, &vdso.1)?;
        let r = (|| -> Result<(), InjectError> {
            crate::signals::inject(&mut rem, &status, &mut b)?;
            crate::timers::inject(&mut rem, &timers, &mut b)?;
            securebits = crate::task::injected(&mut rem, &mut task)?;
            b.process.clear_child_tid = crate::threads::tid_address(&mut rem)?;
            Ok(())
        })();
        let fin = rem.finish();
        r?;
        fin?;
    }
    crate::task::outside(pid, &mut task);
    b.task = Some(task);
    let (creds, groups) = crate::task::creds(&st, securebits);
    b.creds = Some(creds);
    b.groups = groups;
    // The process record: layout, identity, limits; the restore gadgets.
    crate::mm::capture(t, &maps, &status, &vdso, &mut b, &mut obs)?;
    b.gadgets = crate::gadget::find(pid, &classified);
    // Every other thread; where glibc caches each thread's id.
    crate::threads::capture(g, &vdso, &st, &mut b, &mut obs)?;
    tid_offset(pid, &maps, &mut b, &mut obs);
    if !b.threads.is_empty() && b.gadgets.is_none() {
        obs.push(format!(
            "it has {} threads and no `syscall; ret` and `rt_sigreturn` code of its own; the other threads wait in that code while the shim is removed",
            b.threads.len() + 1
        ));
    }

    if !obs.is_empty() {
        return Err(CaptureError::Refused {
            pid,
            obstacles: obs.into_vec(),
        });
    }
    let Some(w) = w else {
        // A check only: nothing stands in the way.
        return Ok((
            b,
            DumpStats {
                stored: 0,
                zero: 0,
                sums: Vec::new(),
                dump_time: Default::default(),
            },
        ));
    };
    // The pages, then the bytes that are not memory.
    let t_dump = Instant::now();
    let (stored_pages, zero, sums) =
        crate::vma::dump(pid, &classified, w, &mut b, &stored, progress)?;
    Ok((
        b,
        DumpStats {
            stored: stored_pages,
            zero,
            sums,
            dump_time: t_dump.elapsed(),
        },
    ))
}
