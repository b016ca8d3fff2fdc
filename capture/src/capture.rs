//! The capture flow: seize, read everything, refuse what cannot be restored,
//! stream pages, write the image atomically, leave the target as it was.

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

use crate::fds::StoredFiles;
use crate::obstacles::Obstacles;
use crate::pages::{self, MemError, RunBuilder, BATCH};
use crate::procinfo::{self, Mapping};
use crate::remote::{InjectError, Remote};
use crate::tracee::{PtraceError, Tracee};

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

/// Classify a mapping, or say why cryo cannot restore it.
fn classify(m: &Mapping) -> Result<(u32, u32), String> {
    let range = format!("{:x}-{:x}", m.start, m.end);
    let special = matches!(
        m.path.as_str(),
        "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
    );
    if m.path == "/[aio] (deleted)" {
        return Err(format!(
            "mapping {range} is an AIO ring (io_setup), which cryo cannot restore yet"
        ));
    }
    // Every VmFlag is derived from how the mapping is made, set again by
    // the shim, or a reason to refuse (cryo_image::vmflag_rule).
    let mut why: Vec<String> = Vec::new();
    for f in &m.vmflags {
        if let VmFlagRule::Refused(r) = vmflag_rule(f, special) {
            let r = format!("{r} (VmFlags '{f}')");
            if !why.contains(&r) {
                why.push(r);
            }
        }
    }
    if !why.is_empty() {
        return Err(format!("mapping {range} {} is {}", m.path, why.join(", ")));
    }
    let mut flags = 0;
    let vf = [
        ("gd", vma_flags::GROWSDOWN),
        ("lo", vma_flags::LOCKED),
        ("dc", vma_flags::DONTFORK),
        ("dd", vma_flags::DONTDUMP),
        ("wf", vma_flags::WIPEONFORK),
        ("hg", vma_flags::HUGEPAGE),
        ("nh", vma_flags::NOHUGEPAGE),
    ];
    for (f, b) in vf {
        if m.has_flag(f) {
            flags |= b;
        }
    }
    if !m.read && !m.write && !m.exec {
        flags |= vma_flags::GUARD;
    }
    if m.deleted() {
        flags |= vma_flags::DELETED;
    }
    let kind = match m.path.as_str() {
        "[heap]" => vma_kind::HEAP,
        "[stack]" => vma_kind::STACK,
        "[vdso]" => vma_kind::VDSO,
        "[vvar]" => vma_kind::VVAR,
        "[vvar_vclock]" => vma_kind::VVAR_VCLOCK,
        "[vsyscall]" => vma_kind::VSYSCALL,
        "/dev/zero (deleted)" if m.shared => vma_kind::ANON_SHARED,
        p if m.inode == 0
            && (p.is_empty() || p.starts_with("[anon:") || p.starts_with("[anon_shmem:")) =>
        {
            if m.shared {
                vma_kind::ANON_SHARED
            } else {
                vma_kind::ANON_PRIVATE
            }
        }
        "/[aio] (deleted)" => {
            return Err(format!(
                "mapping {range} is an AIO ring (io_setup), which cryo cannot restore yet"
            ))
        }
        p if p.starts_with("/SYSV") => {
            return Err(format!("mapping {range} {p} is System V shared memory"))
        }
        p if p.starts_with("/dev/") && p != "/dev/zero" && !m.deleted() => {
            return Err(format!("mapping {range} {p} maps a device"))
        }
        p if p.starts_with('[') => {
            return Err(format!(
                "mapping {range} {p} is a special mapping cryo does not know"
            ))
        }
        _ if m.shared => vma_kind::FILE_SHARED,
        _ => vma_kind::FILE_PRIVATE,
    };
    Ok((kind, flags))
}

fn to_regs(r: &libc::user_regs_struct) -> Regs {
    Regs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        orig_rax: r.orig_rax,
        rip: r.rip,
        cs: r.cs,
        eflags: r.eflags,
        rsp: r.rsp,
        ss: r.ss,
        fs_base: r.fs_base,
        gs_base: r.gs_base,
        ds: r.ds,
        es: r.es,
        fs: r.fs,
        gs: r.gs,
    }
}

/// The syscall-restart fix-up (as CRIU does): a process stopped inside a
/// system call resumes by re-executing it, or sees -EINTR where the kernel
/// would have used a restart block, which does not survive a restore.
/// Returns the registers to resume with and the `process_flags` bits.
pub fn restart_fixup(raw: &Regs) -> (Regs, u32) {
    const ERESTARTSYS: i64 = -512;
    const ERESTARTNOINTR: i64 = -513;
    const ERESTARTNOHAND: i64 = -514;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    let mut r = *raw;
    if (raw.orig_rax as i64) < 0 {
        return (r, 0);
    }
    match raw.rax as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = raw.orig_rax;
            r.rip = raw.rip.wrapping_sub(2);
            (r, process_flags::IN_SYSCALL)
        }
        ERESTART_RESTARTBLOCK => {
            r.rax = (-(libc::EINTR as i64)) as u64;
            (
                r,
                process_flags::IN_SYSCALL | process_flags::RESTART_BLOCK_EINTR,
            )
        }
        _ => (r, 0),
    }
}

/// Whether pages of this kind of mapping are stored in the image.
fn dumps(kind: u32) -> bool {
    !matches!(
        kind,
        vma_kind::VDSO
            | vma_kind::VVAR
            | vma_kind::VVAR_VCLOCK
            | vma_kind::VSYSCALL
            | vma_kind::FILE_SHARED
    )
}

pub(crate) fn file_id(b: &mut ImageBuilder, path: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    if let Some(i) = b.files.iter().position(|f| {
        b.strings
            .bytes()
            .get(f.path.off as usize..(f.path.off + f.path.len) as usize)
            == Some(path.as_bytes())
    }) {
        return i as u32;
    }
    let md = std::fs::metadata(path).ok();
    let r = b.strings.add(path);
    b.files.push(FileId {
        path: r,
        dev: md.as_ref().map_or(0, |m| m.dev()),
        ino: md.as_ref().map_or(0, |m| m.ino()),
        size: md.as_ref().map_or(0, |m| m.size()),
        mtime_sec: md.as_ref().map_or(0, |m| m.mtime()),
        mtime_nsec: md.as_ref().map_or(0, |m| m.mtime_nsec() as u32),
        mode: md.as_ref().map_or(0, |m| m.mode()),
        uid: md.as_ref().map_or(0, |m| m.uid()),
        gid: md.as_ref().map_or(0, |m| m.gid()),
        ..Default::default()
    });
    (b.files.len() - 1) as u32
}

/// Check, without writing anything, whether `pid` can be captured: every
/// obstacle, all at once (empty: it can). The target is frozen only while
/// it is looked at, and left as it was.
pub fn check(pid: i32, opts: &Options) -> Result<Vec<String>, CaptureError> {
    let mut tracee = Tracee::seize(pid)?;
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
    let mut tracee = Tracee::seize(pid)?;
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

/// The two sequences a restore can finish with without a tracer (see
/// `cryo_image::gadget`), searched in the target's executable mappings,
/// glibc's first; at most 64 MiB of code is read. None if either is missing
/// (the restore then uses its tracer).
fn find_gadgets(pid: i32, maps: &[Mapping], kinds: &[(u32, u32)]) -> Option<Gadgets> {
    const SCAN_LIMIT: u64 = 64 << 20;
    let mut order: Vec<&Mapping> = maps
        .iter()
        .zip(kinds)
        .filter(|(m, (k, _))| {
            m.exec
                && m.read
                && matches!(*k, vma_kind::FILE_PRIVATE | vma_kind::ANON_PRIVATE)
                && m.end - m.start <= SCAN_LIMIT
        })
        .map(|(m, _)| m)
        .collect();
    order.sort_by_key(|m| !m.path.contains("/libc.so"));
    let (mut syscall_ret, mut sigreturn) = (None, None);
    let mut scanned = 0u64;
    let mut buf = Vec::new();
    for m in order {
        if scanned + (m.end - m.start) > SCAN_LIMIT {
            break;
        }
        scanned += m.end - m.start;
        buf.resize((m.end - m.start) as usize, 0);
        if pages::read_remote(pid, m.start, &mut buf).is_err() {
            continue;
        }
        // Whole patterns, with room for the longest (what restore checks).
        let at = |o: usize, max: usize| (o + max <= buf.len()).then_some(m.start + o as u64);
        syscall_ret = syscall_ret
            .or(gadget::find_syscall_ret(&buf).and_then(|o| at(o, gadget::SYSCALL_RET_MAX)));
        sigreturn =
            sigreturn.or(gadget::find_sigreturn(&buf).and_then(|o| at(o, gadget::SIGRETURN_MAX)));
        if let (Some(a), Some(b)) = (syscall_ret, sigreturn) {
            return Some(Gadgets {
                syscall_ret: a,
                sigreturn: b,
            });
        }
    }
    None
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
    t: &mut Tracee,
    w: Option<&mut ImageDirWriter>,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<(ImageBuilder, DumpStats), CaptureError> {
    let pid = t.pid();
    let mut b = ImageBuilder::default();
    let mut obs = Obstacles::default();
    let mut stored = StoredFiles::default();

    // Process-wide conditions: threads, children, namespaces, seccomp.
    let threads = crate::tracee::thread_count(pid)?;
    if threads > 1 {
        obs.push(format!(
            "it has {threads} threads; cryo captures single-threaded processes only"
        ));
    }
    let st = crate::task::StatusText::read(pid);
    crate::task::obstacles(pid, &st, &mut obs);

    // Mappings: classify each, storing the contents of files that exist
    // nowhere else (unlinked, memfd).
    let maps = procinfo::smaps(pid)?;
    let mut kinds = Vec::with_capacity(maps.len());
    let mut map_files = Vec::with_capacity(maps.len());
    for m in &maps {
        let (kind, flags) = match classify(m) {
            Ok(k) => k,
            Err(why) => {
                obs.push(why);
                (vma_kind::ANON_PRIVATE, 0)
            }
        };
        let file = match kind {
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED if m.deleted() => stored
                .file(
                    &mut b,
                    &format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end),
                    &m.path,
                    &format!("mapping {:x}-{:x}", m.start, m.end),
                    &opts.limits,
                    &mut obs,
                )
                .unwrap_or(NO_INDEX),
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED => file_id(&mut b, &m.path),
            _ => NO_INDEX,
        };
        kinds.push((kind, flags));
        map_files.push(file);
    }
    // Shared anonymous memory is restored as one fresh object per mapping:
    // an object mapped twice, or at an offset, would not be one object again.
    for (i, (m, (kind, _))) in maps.iter().zip(&kinds).enumerate() {
        if *kind != vma_kind::ANON_SHARED {
            continue;
        }
        let twice = maps
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.inode == m.inode && o.inode != 0 && o.path == m.path);
        if m.offset != 0 || twice {
            obs.push(format!(
                "mapping {:x}-{:x} is shared anonymous memory {} (split by mremap, or mapped again); cryo restores one object per mapping, not yet this",
                m.start,
                m.end,
                if twice { "mapped more than once" } else { "at an offset into its object" }
            ));
        }
    }
    // fds: what each is, descriptions, pipes and their bytes, locks.
    let fds = procinfo::fds(pid)?;
    crate::fds::capture(pid, &fds, &mut b, &mut stored, &opts.limits, &mut obs);

    // Registers and per-task state.
    let raw = t.regs()?;
    let raw_regs = to_regs(&raw);
    let (regs, sflags) = restart_fixup(&raw_regs);
    let (xsave, xcr0) = t.xstate()?;
    let blocked = t.sigmask()?;
    let rseq = t.rseq()?;
    let status = procinfo::status(pid)?;
    let mm = procinfo::stat_mm(pid)?;
    // Queued signals with their siginfo, the thread's and the process's.
    for shared in [false, true] {
        let infos = crate::sys::peek_siginfo(pid, shared).map_err(|source| PtraceError::Sys {
            op: "PTRACE_PEEKSIGINFO",
            pid,
            source,
        })?;
        for info in infos {
            b.signals.push(cryo_image::signals::QueuedSignal {
                shared: shared as u32,
                signo: info[0] as u32,
                info,
            });
        }
    }

    // vDSO bytes: hashed for restore's check, and where injection finds `syscall`.
    let vdso = maps.iter().find(|m| m.path == "[vdso]");
    let (vdso_start, vdso_bytes) = match vdso {
        Some(v) => {
            let mut bytes = vec![0u8; (v.end - v.start) as usize];
            t.read_mem(v.start, &mut bytes)?;
            (v.start, bytes)
        }
        None => return Err(refused(pid, "it has no [vdso] mapping")),
    };

    // TLS words at fs_base (glibc's tcbhead_t: stack_guard 0x28, pointer_guard 0x30).
    let (mut canary, mut guard) = (0, 0);
    if raw.fs_base != 0 {
        let mut w16 = [0u8; 16];
        if t.read_mem(raw.fs_base + 0x28, &mut w16).is_ok() {
            canary = u64::from_le_bytes(w16[..8].try_into().unwrap_or([0; 8]));
            guard = u64::from_le_bytes(w16[8..].try_into().unwrap_or([0; 8]));
        }
    }

    // State only the task itself can tell: injected system calls.
    let timers = procinfo::timers(pid)?;
    let mut task = cryo_image::task::TaskState::default();
    let mut securebits = 0;
    {
        let mut rem = Remote::new(t, vdso_start, &vdso_bytes)?;
        let r = (|| -> Result<(), InjectError> {
            inject_signals(&mut rem, &status, &mut b)?;
            for ti in &timers {
                let v = rem.timer_gettime(ti.id)?;
                b.timers.push(PosixTimer {
                    id: ti.id,
                    clock: ti.clock,
                    signo: ti.signo,
                    notify: ti.notify,
                    notify_tid: ti.notify_tid,
                    _pad: 0,
                    sigev_value: ti.sigev_value,
                    interval_sec: v[0],
                    interval_nsec: v[1],
                    value_sec: v[2],
                    value_nsec: v[3],
                });
            }
            for which in 0..3 {
                let v = rem.getitimer(which)?;
                b.itimers.push(Itimer {
                    which,
                    _pad: 0,
                    interval_sec: v[0],
                    interval_usec: v[1],
                    value_sec: v[2],
                    value_usec: v[3],
                });
            }
            securebits = crate::task::injected(&mut rem, &mut task)?;
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

    // Process record.
    let exe = procinfo::link(pid, "exe")?;
    let cwd = procinfo::link(pid, "cwd")?;
    let comm = procinfo::comm(pid)?;
    let cwd_deleted = cwd.ends_with(" (deleted)");
    if cwd_deleted {
        let path = std::path::Path::new(cwd.trim_end_matches(" (deleted)"));
        let parent = path.parent().unwrap_or(std::path::Path::new("/"));
        if !parent.is_dir() || path.starts_with("/proc") {
            obs.push(format!(
                "its working directory {cwd} was removed together with its parent (or is a dead process's /proc directory); cryo cannot make it again"
            ));
        }
    }
    let p = &mut b.process;
    p.pid = pid as u32;
    p.flags = sflags
        | if t.was_stopped() {
            process_flags::WAS_STOPPED
        } else {
            0
        }
        | if rseq.rseq_abi_size != 0 {
            process_flags::HAS_RSEQ
        } else {
            0
        }
        | if cwd_deleted {
            process_flags::CWD_DELETED
        } else {
            0
        };
    p.personality = procinfo::personality(pid)?;
    p.umask = status.umask;
    let cb = comm.as_bytes();
    let n = cb.len().min(15);
    p.comm[..n].copy_from_slice(&cb[..n]);
    p.captured_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    p.mm = MmFields {
        start_code: mm.start_code,
        end_code: mm.end_code,
        start_data: mm.start_data,
        end_data: mm.end_data,
        start_brk: mm.start_brk,
        brk: maps
            .iter()
            .find(|m| m.path == "[heap]")
            .map_or(mm.start_brk, |h| h.end),
        start_stack: mm.start_stack,
        arg_start: mm.arg_start,
        arg_end: mm.arg_end,
        env_start: mm.env_start,
        env_end: mm.env_end,
    };
    p.regs = regs;
    p.raw_regs = raw_regs;
    p.sig_blocked = blocked;
    p.sig_pending = status.sig_pending;
    p.sig_shared_pending = status.shd_pending;
    p.rseq_addr = rseq.rseq_abi_pointer;
    p.rseq_size = rseq.rseq_abi_size;
    p.rseq_sig = rseq.signature;
    p.rseq_flags = rseq.flags;
    p.xsave_size = xsave.len() as u32;
    p.xcr0 = xcr0;
    p.tls_canary = canary;
    p.tls_pointer_guard = guard;
    p.vdso_start = vdso_start;
    p.vdso_len = vdso_bytes.len() as u64;
    p.vdso_hash = cryo_image::checksum(&vdso_bytes);
    p.rss_kib = status.vm_rss_kib;
    (p.robust_list, p.robust_list_len) = t.robust_list()?;
    b.xsave = xsave;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    b.process.kernel = b.strings.add(kernel.trim());
    b.process.exe = b.strings.add(&exe);
    b.process.cwd = b.strings.add(cwd.trim_end_matches(" (deleted)"));
    b.process.exe_file = if exe.ends_with(" (deleted)") {
        NO_INDEX
    } else {
        file_id(&mut b, &exe)
    };
    for (k, v) in procinfo::auxv(pid)? {
        b.auxv.push(AuxvEntry { key: k, val: v });
    }
    for (res, cur, max) in procinfo::rlimits(pid)? {
        b.rlimits.push(Rlimit {
            resource: res,
            _pad: 0,
            cur,
            max,
        });
    }
    b.gadgets = find_gadgets(pid, &maps, &kinds);

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

    // Pages. smaps tells which mappings hold anything at all (GHC reserves a
    // terabyte of PROT_NONE address space: its pagemap alone would be 2 GiB),
    // and pagemap is read batch by batch alongside the pages.
    let t_dump = Instant::now();
    let total_bytes: u64 = maps
        .iter()
        .zip(&kinds)
        .filter(|(_, (kind, _))| dumps(*kind))
        .map(|(m, _)| (m.rss_kib + m.swap_kib) * 1024)
        .sum();
    let mut runs = RunBuilder::new();
    let mut pagemap = pages::Pagemap::open(pid)?;
    let batch_pages = BATCH / PAGE_SIZE as usize;
    let mut done_bytes = 0u64;
    for ((m, (kind, flags)), file) in maps.iter().zip(&kinds).zip(&map_files) {
        let first_run = runs.len() as u32;
        let private_file = *kind == vma_kind::FILE_PRIVATE;
        let mut resident = 0u64;
        let has_pages = m.rss_kib + m.swap_kib > 0;
        if *kind == vma_kind::ANON_SHARED {
            // The shared memory object's own data, not what this process
            // has mapped: a page dropped here (MADV_DONTNEED) or faulted in
            // through another mapping is still the object's.
            resident = dump_shmem(pid, m, w, &mut runs, &mut done_bytes, total_bytes, progress)?;
        } else if dumps(*kind) && has_pages {
            let mut chunk_start = m.start;
            while chunk_start < m.end {
                let chunk_end = (chunk_start + BATCH as u64).min(m.end);
                let pm = pagemap.read(chunk_start, chunk_end)?;
                resident += pm.iter().filter(|e| pages::resident(**e)).count() as u64;
                let mut i = 0usize;
                while i < pm.len() {
                    if !pages::wanted(pm[i], private_file) {
                        runs.close();
                        i += 1;
                        continue;
                    }
                    let mut j = i;
                    while j < pm.len() && j - i < batch_pages && pages::wanted(pm[j], private_file)
                    {
                        j += 1;
                    }
                    // Read straight into the page writer's buffer (no copy
                    // on the way to pages.img); it may take fewer pages.
                    let addr = chunk_start + i as u64 * PAGE_SIZE;
                    let offset = w.pages_len();
                    let room = w.pages().spare((j - i) * PAGE_SIZE as usize)?;
                    let len = room.len();
                    pages::read_remote(pid, addr, room).map_err(|source| MemError::Read {
                        pid,
                        addr,
                        source,
                    })?;
                    let kept = runs.add(addr, room, offset);
                    w.pages().advance(kept);
                    j = i + len / PAGE_SIZE as usize;
                    done_bytes += len as u64;
                    progress(Progress {
                        done_bytes,
                        total_bytes: total_bytes.max(done_bytes),
                    });
                    i = j;
                }
                chunk_start = chunk_end;
            }
            runs.close();
        } else if has_pages && !m.has_flag("io") {
            resident = (m.rss_kib + m.swap_kib) / 4;
        }
        let name = if m.path.is_empty() {
            StrRef::NONE
        } else {
            b.strings.add(&m.path)
        };
        let mut vmflags = 0u64;
        for f in &m.vmflags {
            if let Some(bit) = vmflag_bit(f) {
                vmflags |= 1 << bit;
            }
        }
        b.vmas.push(Vma {
            start: m.start,
            end: m.end,
            pgoff: m.offset,
            prot: [
                (m.read, prot::READ),
                (m.write, prot::WRITE),
                (m.exec, prot::EXEC),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit),
            kind: *kind,
            flags: *flags,
            file: *file,
            vmflags,
            name,
            first_run,
            run_count: runs.len() as u32 - first_run,
            resident_pages: resident,
        });
    }
    // Bytes that are not memory (pipe data, file contents), read during
    // the freeze: after the memory, each page-aligned with its checksums.
    for blob in &stored.blobs {
        let padded = blob.bytes.len().next_multiple_of(PAGE_SIZE as usize);
        let mut bytes = blob.bytes.clone();
        bytes.resize(padded, 0);
        let off = w.append_pages(&bytes)?;
        runs.add_blob(&bytes, off);
        blob.place(&mut b, off);
    }
    let stored_pages = runs.stored_pages;
    let zero = runs.zero_pages;
    let (page_runs, sums) = runs.finish();
    b.page_runs = page_runs;
    let sums = cryo_image::write::sums_bytes(&sums);
    b.page_sums = cryo_image::write::sum_block_table(&sums);
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

/// The data of a shared anonymous mapping's object, read through
/// /proc/PID/map_files (SEEK_DATA/SEEK_HOLE, then pread), as DATA and
/// ZERO runs at the addresses that map it. Returns its data pages.
fn dump_shmem(
    pid: i32,
    m: &Mapping,
    w: &mut ImageDirWriter,
    runs: &mut RunBuilder,
    done_bytes: &mut u64,
    total_bytes: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, CaptureError> {
    use std::os::unix::fs::FileExt;
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let read_err = |addr, source| MemError::Read { pid, addr, source };
    let f = std::fs::File::open(&path).map_err(|e| read_err(m.start, e))?;
    let len = m.end - m.start;
    let mut pages = 0u64;
    for (a, b) in crate::fds::data_ranges_in(&f, m.offset, m.offset + len) {
        let mut off = a;
        while off < b {
            let want = ((b - off) as usize).min(BATCH);
            let offset = w.pages_len();
            let room = w.pages().spare(want)?;
            let n = room.len();
            let addr = m.start + (off - m.offset);
            f.read_exact_at(room, off).map_err(|e| read_err(addr, e))?;
            let kept = runs.add(addr, room, offset);
            w.pages().advance(kept);
            off += n as u64;
            pages += n as u64 / PAGE_SIZE;
            *done_bytes += n as u64;
            progress(Progress {
                done_bytes: *done_bytes,
                total_bytes: total_bytes.max(*done_bytes),
            });
        }
        runs.close();
    }
    Ok(pages)
}

/// Signal dispositions (asked inside the target) and the sigaltstack.
fn inject_signals(
    rem: &mut Remote,
    status: &procinfo::Status,
    b: &mut ImageBuilder,
) -> Result<(), InjectError> {
    for sig in 1..=64i32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let bit = 1u64 << (sig - 1);
        // SIG_DFL has nothing to restore, but for SIGCHLD, whose
        // SA_NOCLDWAIT and SA_NOCLDSTOP change what the kernel does
        // with the default action: asked for always, kept if set.
        let default = (status.sig_caught | status.sig_ignored) & bit == 0;
        if default && sig != libc::SIGCHLD {
            continue;
        }
        let (handler, flags, restorer, mask) = rem.sigaction(sig)?;
        let chld_flags = (libc::SA_NOCLDWAIT | libc::SA_NOCLDSTOP) as u64;
        if default && (handler != 0 || flags & chld_flags == 0) {
            continue;
        }
        b.sigactions.push(SigAction {
            signo: sig as u32,
            _pad: 0,
            handler,
            flags,
            restorer,
            mask,
        });
    }
    let (sp, flags, size) = rem.sigaltstack()?;
    b.process.sigaltstack_sp = sp;
    b.process.sigaltstack_flags = flags;
    b.process.sigaltstack_size = size;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_fixup_cases() {
        let mut r = Regs {
            orig_rax: 35, // nanosleep
            rax: (-512i64) as u64,
            rip: 0x1002,
            ..Default::default()
        };
        let (f, fl) = restart_fixup(&r);
        assert_eq!((f.rax, f.rip, fl), (35, 0x1000, process_flags::IN_SYSCALL));
        r.rax = (-516i64) as u64;
        let (f, fl) = restart_fixup(&r);
        assert_eq!(f.rax as i64, -4);
        assert_eq!(f.rip, 0x1002);
        assert!(fl & process_flags::RESTART_BLOCK_EINTR != 0);
        r.rax = 0; // completed syscall (e.g. tgkill before a group-stop)
        assert_eq!(restart_fixup(&r), (r, 0));
        r.orig_rax = u64::MAX; // not in a syscall
        r.rax = (-512i64) as u64;
        assert_eq!(restart_fixup(&r).1, 0);
    }
}
