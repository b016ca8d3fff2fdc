//! Every thread of the target, frozen at one instant, and the state each
//! one has of its own (`cryo_image::threads::Thread`).
//!
//! Seizing: the main thread first, then every other thread listed in
//! /proc/PID/task, again and again until a pass finds none it does not
//! hold — a thread that was cloning while we seized shows up in the next
//! pass, one that exits between the listing and its seize is skipped. A
//! thread held in a ptrace stop runs no code, so once a pass finds nothing
//! new every thread is frozen, before any memory is read. Every exit path
//! lets every thread go as it was ([`Group`] detaches each on drop).

use crate::capture::CaptureError;
use crate::obstacles::Obstacles;
use crate::regs::{restart_fixup, to_regs};
use crate::remote::{InjectError, Remote};
use crate::task::{Sched, StatusText};
use crate::tracee::{PtraceError, Tracee};
use cryo_image::process_flags;
use cryo_image::threads::Thread;
use cryo_image::write::ImageBuilder;

/// Most threads a restore recreates (the shim's window holds one stack
/// for each).
pub const MAX_THREADS: usize = 4096;

/// Every thread of a process, each held in a ptrace stop.
#[derive(Debug)]
pub struct Group {
    pub main: Tracee,
    /// The other threads, in thread-id order of their seizing.
    pub others: Vec<Tracee>,
}

impl Group {
    /// Seize and stop every thread of `pid`.
    pub fn seize(pid: i32) -> Result<Group, PtraceError> {
        let main = Tracee::seize(pid)?;
        let mut g = Group {
            main,
            others: Vec::new(),
        };
        loop {
            let mut new = false;
            for tid in crate::tracee::task_ids(pid)? {
                if tid == pid || g.others.iter().any(|t| t.pid() == tid) {
                    continue;
                }
                match Tracee::seize_thread(pid, tid) {
                    Ok(t) => {
                        g.others.push(t);
                        new = true;
                    }
                    // Exited between the listing and the seize.
                    Err(PtraceError::Exited(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if !new {
                break;
            }
        }
        Ok(g)
    }

    pub fn pid(&self) -> i32 {
        self.main.pid()
    }

    pub fn was_stopped(&self) -> bool {
        self.main.was_stopped()
    }

    /// Let every thread go on as it was.
    pub fn detach(self) -> Result<(), PtraceError> {
        let mut first = None;
        for t in self.others {
            if let Err(e) = t.detach() {
                first.get_or_insert(e);
            }
        }
        let r = self.main.detach();
        match first {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// Leave the whole process in group-stop.
    pub fn leave_stopped(self) -> Result<(), PtraceError> {
        let r = self.main.leave_stopped();
        for t in self.others {
            t.detach()?;
        }
        r
    }

    /// Kill the process; every thread but the main one is reaped (see
    /// [`Tracee::kill_and_reap`]).
    pub fn kill(self) -> Result<(), PtraceError> {
        for t in self.others {
            t.kill_and_reap()?;
        }
        self.main.kill()
    }
}

/// The threads' own state, into `b.threads` (and their xsave areas after
/// the main thread's, their queued signals into `b.signals`).
/// `statuses`: the other threads' status files ([`statuses`]).
pub fn capture(
    g: &mut Group,
    vdso: &(u64, Vec<u8>),
    (main_status, statuses): (&StatusText, &[StatusText]),
    landlock: &mut crate::task::Landlock,
    b: &mut ImageBuilder,
    obs: &mut Obstacles,
) -> Result<(), CaptureError> {
    let pid = g.pid();
    if g.others.len() + 1 > MAX_THREADS {
        obs.push(format!(
            "it has {} threads; cryo restores at most {MAX_THREADS}",
            g.others.len() + 1
        ));
        return Ok(());
    }
    let mut creds = Vec::with_capacity(g.others.len());
    let main_own = OwnFs::of(&format!("/proc/{pid}"));
    // What is read from outside, thread by thread; then what only a
    // thread can tell, asked in every thread at once (`syscall_all`).
    let mut ths = Vec::with_capacity(g.others.len());
    let mut xsaves = Vec::with_capacity(g.others.len());
    let mut whos = Vec::with_capacity(g.others.len());
    for (k, (t, st)) in g.others.iter_mut().zip(statuses).enumerate() {
        let tid = t.pid();
        let comm = comm_of(pid, tid);
        differences(tid, &comm, st, main_status, obs);
        own_differences(pid, tid, &comm, (st, main_status), &main_own, obs);
        crate::task::dispatch_obstacle(tid, &format!("thread {tid}"), obs);
        let raw = to_regs(&t.regs()?);
        let (regs, sflags) = restart_fixup(&raw, t.restarted_poll(), t.freeze_eintr(), &|a| {
            crate::regs::timespec_at(t, a)
        });
        let (xsave, _) = t.xstate()?;
        if xsave.len() != b.process.xsave_size as usize {
            return Err(CaptureError::Refused {
                pid,
                obstacles: vec![format!(
                    "thread {tid}'s xsave area is {} bytes, the main thread's {}",
                    xsave.len(),
                    b.process.xsave_size
                )],
            });
        }
        let rseq = t.rseq()?;
        let (robust_list, robust_list_len) = t.robust_list()?;
        let mut th = Thread {
            tid: tid as u32,
            flags: sflags
                | if rseq.rseq_abi_size != 0 {
                    process_flags::HAS_RSEQ
                } else {
                    0
                },
            regs,
            raw_regs: raw,
            sig_blocked: t.sigmask()?,
            rseq_size: rseq.rseq_abi_size,
            rseq_addr: rseq.rseq_abi_pointer,
            rseq_sig: rseq.signature,
            rseq_flags: rseq.flags,
            robust_list,
            robust_list_len,
            ..Default::default()
        };
        let n = comm.len().min(15);
        th.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        let s = Sched::read(tid);
        th.nice = s.nice.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        th.sched_policy = s.policy.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        th.sched_priority = s.priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        th.affinity = s.affinity;
        th.ioprio = crate::sys::ioprio_of(tid).map_or(0, |v| {
            v as i32 & !cryo_image::threads::IOPRIO_KNOWN | cryo_image::threads::IOPRIO_KNOWN
        });
        crate::signals::queued_of(tid, k as u32 + 1, false, b)?;
        ths.push(th);
        xsaves.push(xsave);
        whos.push(format!("thread {tid} ({comm})"));
    }
    let mut rems = Vec::with_capacity(g.others.len());
    let mut made = Ok(());
    for t in g.others.iter_mut() {
        match Remote::new(t, vdso.0, &vdso.1) {
            Ok(r) => rems.push(r),
            Err(e) => {
                made = Err(e);
                break;
            }
        }
    }
    // (All at once; one after the other where two threads' scratch
    // buffers would overlap.)
    let at_once = if crate::remote::scratch_overlaps(&rems) {
        1
    } else {
        rems.len().max(1)
    };
    let r = made.and_then(|()| {
        let mut bits = Vec::with_capacity(rems.len());
        let mut from = 0;
        for chunk in rems.chunks_mut(at_once) {
            let to = from + chunk.len();
            bits.extend(asked_in_threads(
                chunk,
                pid,
                &statuses[from..to],
                &whos[from..to],
                landlock,
                &mut ths[from..to],
                obs,
            )?);
            from = to;
        }
        Ok(bits)
    });
    let mut fin = Ok(());
    for rem in rems {
        let f = rem.finish();
        if fin.is_ok() {
            fin = f;
        }
    }
    let bits = r?;
    fin?;
    for ((th, xsave), (st, bits)) in ths.into_iter().zip(xsaves).zip(statuses.iter().zip(bits)) {
        // Its credentials (per thread in the kernel: raw setresuid,
        // capset): its status, and its securebits asked in it.
        creds.push(crate::task::creds(st, bits).0);
        b.xsave.extend_from_slice(&xsave);
        b.threads.push(th);
    }
    // Recorded only where a thread's differ from the main thread's.
    if b.creds.is_some_and(|main| creds.iter().any(|c| *c != main)) {
        b.thread_creds = creds;
    }
    Ok(())
}

/// What only each thread can tell, asked in all of them at once (one
/// system call in every thread, then the next): its sigaltstack, tid
/// address, timer slack, securebits (returned, in `ths`' order), its
/// own parent-death signal, CPUID faulting and keyring (refused by
/// name: not restored per thread), and its Landlock domain.
fn asked_in_threads(
    rems: &mut [Remote],
    pid: i32,
    statuses: &[StatusText],
    whos: &[String],
    landlock: &mut crate::task::Landlock,
    ths: &mut [Thread],
    obs: &mut Obstacles,
) -> Result<Vec<u32>, InjectError> {
    use crate::remote::syscall_all;
    let every = |nr: i64, a: [u64; 6]| move |_: usize, _: &Remote| Some((nr, a));
    let prctl = |opt: i32| every(libc::SYS_prctl, [opt as u64, 0, 0, 0, 0, 0]);
    // Into the scratch buffer: sigaltstack's old stack; then the tid
    // address (a word) and the parent-death signal (an int), each on a
    // zeroed word.
    let into_scratch = |nr: i64, a0: u64, at: usize| {
        move |_: usize, r: &Remote| {
            let mut a = [a0, 0, 0, 0, 0, 0];
            a[at] = r.scratch();
            Some((nr, a))
        }
    };
    let got = syscall_all(rems, into_scratch(libc::SYS_sigaltstack, 0, 1))?;
    for ((rem, th), r) in rems.iter().zip(ths.iter_mut()).zip(got) {
        if let Some(r @ -4095..=-1) = r {
            return Err(InjectError::Failed {
                name: "sigaltstack",
                pid: rem.pid(),
                errno: -r,
            });
        }
        let w = rem.read_scratch(24)?;
        let word = |i: usize| u64::from_le_bytes(w[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        th.sigaltstack_sp = word(0);
        th.sigaltstack_flags = word(1) as u32;
        th.sigaltstack_size = word(2);
    }
    for rem in rems.iter_mut() {
        rem.write_scratch(&[0u8; 8])?;
    }
    const PR_GET_TID_ADDRESS: u64 = 40;
    let got = syscall_all(rems, into_scratch(libc::SYS_prctl, PR_GET_TID_ADDRESS, 1))?;
    for ((rem, th), r) in rems.iter().zip(ths.iter_mut()).zip(got) {
        th.clear_child_tid = if rem.answered(r.unwrap_or(0))? {
            let w = rem.read_scratch(8)?;
            u64::from_le_bytes(w[..8].try_into().unwrap_or([0; 8]))
        } else {
            0
        };
    }
    let got = syscall_all(rems, prctl(libc::PR_GET_TIMERSLACK))?;
    for ((rem, th), r) in rems.iter().zip(ths.iter_mut()).zip(got) {
        let r = r.unwrap_or(0);
        th.timer_slack_ns = if rem.answered(r)? { r as u64 } else { u64::MAX };
    }
    let got = syscall_all(rems, prctl(libc::PR_GET_SECUREBITS))?;
    let mut bits = Vec::with_capacity(rems.len());
    for (rem, r) in rems.iter().zip(got) {
        let r = r.unwrap_or(0);
        bits.push(if rem.answered(r)? { r as u32 } else { 0 });
    }
    // A new thread has no parent-death signal; no /proc file shows one.
    for rem in rems.iter_mut() {
        rem.write_scratch(&[0u8; 8])?;
    }
    let got = syscall_all(
        rems,
        into_scratch(libc::SYS_prctl, libc::PR_GET_PDEATHSIG as u64, 1),
    )?;
    for ((rem, who), r) in rems.iter().zip(whos).zip(got) {
        if rem.answered(r.unwrap_or(0))? {
            let w = rem.read_scratch(4)?;
            let sig = i32::from_le_bytes(w[..4].try_into().unwrap_or([0; 4]));
            if sig > 0 {
                obs.push(format!(
                    "{who} has a parent-death signal of its own (prctl PR_SET_PDEATHSIG, signal {sig}), which cryo restores for the main thread only"
                ));
            }
        }
    }
    let (nr, a) = crate::task::CPUID_CALL;
    let got = syscall_all(rems, every(nr, a))?;
    for (who, r) in whos.iter().zip(got) {
        crate::task::cpuid_obstacle(r.unwrap_or(-1), who, obs);
    }
    let (nr, a) = crate::task::THREAD_KEYRING_CALL;
    let got = syscall_all(rems, every(nr, a))?;
    for (who, r) in whos.iter().zip(got) {
        crate::task::keyring_obstacle(r.unwrap_or(-1), who, obs);
    }
    let calls: Vec<Option<(i64, [u64; 6])>> = rems
        .iter()
        .zip(statuses.iter().zip(whos))
        .map(|(rem, (st, who))| landlock.call(pid, rem.pid(), crate::task::real_ids(st), who, obs))
        .collect();
    let got = syscall_all(rems, |i, _| calls[i])?;
    for (who, r) in whos.iter().zip(got) {
        if let Some(r) = r {
            crate::task::Landlock::judge(r, who, obs);
        }
    }
    Ok(bits)
}

/// Whether any thread of the process runs under seccomp and could not be
/// seized with its filters suspended (PTRACE_O_SUSPEND_SECCOMP needs
/// CAP_SYS_ADMIN): no system call may be injected into it then (strict
/// mode kills the process at the first one but read, write, exit and
/// sigreturn; a filter may kill it or answer with a made-up error), so it
/// is refused, named here, without injecting anything.
pub fn under_seccomp(
    g: &Group,
    main_status: &StatusText,
    statuses: &[StatusText],
    obs: &mut Obstacles,
) -> bool {
    let on = |st: &StatusText| !matches!(st.get("Seccomp"), Some("0") | None);
    let blocked = std::iter::once((&g.main, main_status))
        .chain(g.others.iter().zip(statuses))
        .any(|(t, st)| on(st) && !t.seccomp_suspended());
    if blocked {
        obs.push(
            "it runs under seccomp, and its filters could not be suspended for the capture (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN)",
        );
    }
    blocked
}

/// /proc/PID/task/TID/status of every other thread, in `g.others`' order
/// (read once, while frozen, for [`under_seccomp`] and [`capture`]).
pub fn statuses(g: &Group) -> Vec<StatusText> {
    g.others
        .iter()
        .map(|t| StatusText::read_task(g.pid(), t.pid()))
        .collect()
}

/// A thread's name (/proc/PID/task/TID/comm), without its newline.
fn comm_of(pid: i32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap_or_default()
        .trim_end_matches('\n')
        .to_owned()
}

/// The task's set_tid_address (PR_GET_TID_ADDRESS; 0 if the kernel
/// does not tell).
pub fn tid_address(rem: &mut Remote) -> Result<u64, InjectError> {
    const PR_GET_TID_ADDRESS: u64 = 40;
    Ok(rem
        .query_word(libc::SYS_prctl, [PR_GET_TID_ADDRESS, 0, 0, 0, 0], 1)?
        .unwrap_or(0))
}

/// What a thread may not have of its own: cryo restores each thread's
/// ids and capabilities (`thread_creds`), but the main thread's
/// supplementary groups and no_new_privs in every thread (seccomp
/// filters: `seccomp::capture`).
/// What a thread may have of its own that cryo restores per process only
/// (a sweep of per-thread state, stop 45: each came back as the main
/// thread's, without a word): a working directory, root or umask of its
/// own (unshare(CLONE_FS); a restore clones every thread sharing the
/// main thread's), a personality. (A thread's I/O priority is restored:
/// `Thread::ioprio`.)
fn own_differences(
    pid: i32,
    tid: i32,
    comm: &str,
    (st, main_st): (&StatusText, &StatusText),
    main: &OwnFs,
    obs: &mut Obstacles,
) {
    let own = OwnFs::of(&format!("/proc/{pid}/task/{tid}"));
    let mut differ = Vec::new();
    for (what, differs) in [
        ("umask", st.get("Umask") != main_st.get("Umask")),
        ("working directory", own.cwd != main.cwd),
        ("root directory", own.root != main.root),
        ("personality", own.personality != main.personality),
    ] {
        if differs {
            differ.push(what);
        }
    }
    if !differ.is_empty() {
        obs.push(format!(
            "thread {tid} ({comm}) has its own {} (the main thread's differs); cryo restores them per process, not per thread",
            differ.join(", ")
        ));
    }
}

/// A task's working and root directories and personality, as its /proc
/// directory `dir` shows them (read once for the main thread).
struct OwnFs {
    cwd: Option<std::path::PathBuf>,
    root: Option<std::path::PathBuf>,
    personality: Option<String>,
}

impl OwnFs {
    fn of(dir: &str) -> OwnFs {
        OwnFs {
            cwd: std::fs::read_link(format!("{dir}/cwd")).ok(),
            root: std::fs::read_link(format!("{dir}/root")).ok(),
            personality: std::fs::read_to_string(format!("{dir}/personality")).ok(),
        }
    }
}

fn differences(tid: i32, comm: &str, st: &StatusText, main: &StatusText, obs: &mut Obstacles) {
    let keys = ["Groups", "NoNewPrivs", "x86_Thread_features"];
    let differ: Vec<&str> = keys
        .into_iter()
        .filter(|k| st.get(k) != main.get(k))
        .collect();
    if !differ.is_empty() {
        obs.push(format!(
            "thread {tid} ({comm}) differs from the main thread in {}; cryo gives every thread the main thread's supplementary groups and no_new_privs",
            differ.join(", ")
        ));
    }
}
