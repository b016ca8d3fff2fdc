//! Per-process state outside memory and fds: credentials, prctl values,
//! scheduling, oom score, membarrier registrations; and the conditions
//! under which a process cannot be captured faithfully at all (children,
//! other namespaces, a changed root, seccomp, shadow stacks).

use crate::obstacles::Obstacles;
use crate::remote::{InjectError, Remote};
use cryo_image::task::{Creds, Group, TaskState, UNKNOWN};

/// `key:` lines of /proc/PID/status.
pub struct StatusText(String);

impl StatusText {
    pub fn read(pid: i32) -> StatusText {
        StatusText(std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
    }
    /// The status of thread `tid` of `pid`.
    pub fn read_task(pid: i32, tid: i32) -> StatusText {
        StatusText(
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
        })
    }
    pub fn nums<T: std::str::FromStr>(&self, key: &str) -> Vec<T> {
        self.get(key)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    }
    pub fn hex(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    }
}

/// Credentials from /proc/PID/status (securebits: injected prctl).
pub fn creds(st: &StatusText, securebits: u32) -> (Creds, Vec<Group>) {
    let four = |key| {
        let v: Vec<u32> = st.nums(key);
        [0, 1, 2, 3].map(|i| v.get(i).copied().unwrap_or(0))
    };
    let groups: Vec<Group> = st
        .nums::<u32>("Groups")
        .into_iter()
        .map(|gid| Group { gid })
        .collect();
    (
        Creds {
            uid: four("Uid"),
            gid: four("Gid"),
            cap_inh: st.hex("CapInh"),
            cap_prm: st.hex("CapPrm"),
            cap_eff: st.hex("CapEff"),
            cap_bnd: st.hex("CapBnd"),
            cap_amb: st.hex("CapAmb"),
            securebits,
            ngroups: groups.len() as u32,
        },
        groups,
    )
}

/// Values from prctl and membarrier, asked inside the stopped target.
pub fn injected(rem: &mut Remote, t: &mut TaskState) -> Result<u32, InjectError> {
    const PRCTL: i64 = libc::SYS_prctl;
    let q = |rem: &mut Remote, opt: i32, arg: u64, out: bool| -> Result<i64, InjectError> {
        Ok(rem
            .query(
                PRCTL,
                [opt as u64, arg, 0, 0, 0],
                if out { Some(1) } else { None },
            )?
            .unwrap_or(UNKNOWN))
    };
    t.thp_disable = q(rem, libc::PR_GET_THP_DISABLE, 0, false)?;
    t.child_subreaper = q(rem, libc::PR_GET_CHILD_SUBREAPER, 0, true)?;
    t.pdeathsig = q(rem, libc::PR_GET_PDEATHSIG, 0, true)?;
    t.dumpable = q(rem, libc::PR_GET_DUMPABLE, 0, false)?;
    t.no_new_privs = q(rem, libc::PR_GET_NO_NEW_PRIVS, 0, false)?;
    t.timer_slack_ns = q(rem, libc::PR_GET_TIMERSLACK, 0, false)?;
    t.mdwe = q(rem, 66 /* PR_GET_MDWE */, 0, false)?;
    for (i, which) in [0u64, 1, 2].into_iter().enumerate() {
        t.spec[i] = q(rem, libc::PR_GET_SPECULATION_CTRL, which, false)?;
    }
    t.mce_kill = q(rem, libc::PR_MCE_KILL_GET, 0, false)?;
    t.tsc = q(rem, libc::PR_GET_TSC, 0, true)?;
    t.memory_merge = q(rem, 68 /* PR_GET_MEMORY_MERGE */, 0, false)?;
    const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
    t.membarrier = rem
        .query(
            libc::SYS_membarrier,
            [MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0],
            None,
        )?
        .unwrap_or(UNKNOWN);
    t.mlock_future = mlock_future(rem)?;
    let securebits = q(rem, libc::PR_GET_SECUREBITS, 0, false)?;
    Ok(if securebits < 0 { 0 } else { securebits as u32 })
}

/// Which of `children` (stopped, in group stop) the process had already
/// taken the stop report of: a waitid(WSTOPPED | WNOWAIT) in it finds
/// none to take (WNOWAIT: it is still there for the program if it was).
/// The restore stops them again, which reports again; the shim takes
/// those reports (`cryo_image::tree::TakenStop`).
pub fn taken_stops(
    rem: &mut Remote,
    children: &[i32],
) -> Result<Vec<cryo_image::tree::TakenStop>, InjectError> {
    let mut taken = Vec::new();
    for &c in children {
        if rem.stop_report_waiting(c)? == Some(false) {
            taken.push(cryo_image::tree::TakenStop { pid: c as u32 });
        }
    }
    Ok(taken)
}

/// What mlockall(MCL_FUTURE) set for the process's mappings to come
/// (`TaskState::mlock_future`): nothing in /proc tells, so a page is
/// mapped in the target and looked at. MADV_DONTNEED refuses a locked
/// mapping (EINVAL); one locked as it was made has its page in
/// (mincore) unless MCL_ONFAULT. The page goes again at once. (mmap
/// refusing it with EAGAIN: only a locked one can pass RLIMIT_MEMLOCK.)
fn mlock_future(rem: &mut Remote) -> Result<u64, InjectError> {
    use cryo_image::task::{MCL_FUTURE, MCL_ONFAULT};
    const PAGE: u64 = 4096;
    let addr = rem.syscall6(
        libc::SYS_mmap,
        [
            0,
            PAGE,
            libc::PROT_READ as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    if addr == -(libc::EAGAIN as i64) {
        return Ok(MCL_FUTURE);
    }
    if (-4095..0).contains(&addr) {
        return Err(InjectError::Failed {
            name: "mmap (the mlockall probe)",
            pid: rem.pid(),
            errno: -addr,
        });
    }
    let addr = addr as u64;
    let probe = (|| -> Result<u64, InjectError> {
        let r = rem.syscall(
            libc::SYS_madvise,
            [addr, PAGE, libc::MADV_DONTNEED as u64, 0, 0],
        )?;
        if r != -(libc::EINVAL as i64) {
            return Ok(0);
        }
        let resident = rem.query(libc::SYS_mincore, [addr, PAGE, 0, 0, 0], Some(2))?;
        Ok(if resident.is_some_and(|v| v & 1 == 0) {
            MCL_FUTURE | MCL_ONFAULT
        } else {
            MCL_FUTURE
        })
    })();
    let unmapped = rem.syscall(libc::SYS_munmap, [addr, PAGE, 0, 0, 0]);
    let got = probe?;
    if let r @ -4095..=-1 = unmapped? {
        return Err(InjectError::Failed {
            name: "munmap (the mlockall probe)",
            pid: rem.pid(),
            errno: -r,
        });
    }
    Ok(got)
}

/// The dynamic xsave features the process was given (arch_prctl
/// ARCH_GET_XCOMP_PERM); 0 where the kernel does not tell.
pub fn xcomp_perm(rem: &mut Remote) -> Result<u64, InjectError> {
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    Ok(rem
        .query_word(libc::SYS_arch_prctl, [ARCH_GET_XCOMP_PERM, 0, 0, 0, 0], 1)?
        .unwrap_or(0))
}

/// Task state cryo does not restore yet, asked of the main thread from
/// inside (a sweep of kernel features, stop 45: each came back reset,
/// capture and restore both saying nothing): CPUID faulting (arch_prctl
/// ARCH_SET_CPUID 0, which an exec resets), and a process or thread
/// keyring (keyctl: the keys in it gone after a restore, search ENOKEY).
/// Returns whether the main thread has a NUMA memory policy.
pub fn unrestored(rem: &mut Remote, obs: &mut Obstacles) -> Result<bool, InjectError> {
    thread_unrestored(rem, "its main thread", obs)?;
    // A NUMA memory policy of the main thread (set_mempolicy): mode 0 is
    // MPOL_DEFAULT (a sweep: MPOL_BIND came back as the default).
    const GET_MEMPOLICY: i64 = 239;
    let mut policy = false;
    if let Some(mode) = rem.query_word(GET_MEMPOLICY, [0, 0, 0, 0, 0], 0)? {
        if mode as u32 != 0 {
            policy = true;
            obs.push(format!(
                "its main thread has a NUMA memory policy (set_mempolicy, mode {:#x}), which cryo does not restore yet",
                mode as u32
            ));
        }
    }
    if let Some(id) = keyring(rem, -2)? {
        obs.push(format!(
            "it has a process keyring (keyctl, key {id}), whose keys cryo does not restore yet"
        ));
    }
    // A session keyring of its own (`keyctl session`, a login's
    // pam_keyinit) other than cryo's, holding keys: a restore gives the
    // process the restoring one's (a sweep, stop 46: `keyctl session`
    // then `keyctl add ... @s`, and after a restore the key was not
    // found, without a word). One that is its user's session keyring
    // (none of its own) comes back with its user.
    // (Its id asks for "search" permission, which a keyring may lack:
    // then it is its own, and is listed all the same.)
    let session = keyring_id(rem, -3)?;
    let shared =
        session >= 0 && [keyring(rem, -5)?, crate::sys::own_keyring(-3)].contains(&Some(session));
    if !shared {
        let which = if session >= 0 {
            format!("key {session}")
        } else {
            format!("its id not given: errno {}", -session)
        };
        match session_keys(rem)? {
            Ok(0) => {}
            Ok(held) => obs.push(format!(
                "it has a session keyring of its own (keyctl session, {which}) holding {held} key{}, and a restore gives it the restoring process's; cryo does not restore keys",
                if held == 1 { "" } else { "s" }
            )),
            Err(errno) => obs.push(format!(
                "it has a session keyring of its own (keyctl session, {which}) that it cannot list (errno {errno}), and a restore gives it the restoring process's; cryo cannot tell whether keys would be lost"
            )),
        }
    }
    Ok(policy)
}

/// The keys in session keyring `session` that a restore would lose: not
/// the link to its user's keyring (or user session keyring), which
/// pam_keyinit puts in every login's session keyring and which comes back
/// with the user (a review: every process started by `su -`, `login` or
/// `runuser -l` was refused for it), nor systemd's `invocation_id`,
/// which names the service run and means nothing to a process a restore
/// starts.
///
/// Read through KEY_SPEC_SESSION_KEYRING (-3), which the process holds
/// whatever the keyring's permissions (by its number, a keyring without
/// "search" for its owner answered EACCES, and passed: a review). Err
/// with the errno where even that cannot be read.
fn session_keys(rem: &mut Remote) -> Result<Result<usize, i64>, InjectError> {
    const KEYCTL_DESCRIBE: u64 = 6;
    const KEYCTL_READ: u64 = 11;
    const ROOM: u64 = 4096;
    let s = rem.scratch();
    let len = rem.syscall(libc::SYS_keyctl, [KEYCTL_READ, -3i64 as u64, s, ROOM, 0])?;
    if len < 0 {
        return Ok(Err(-len));
    }
    if len == 0 {
        return Ok(Ok(0));
    }
    let list = rem.read_scratch(len.min(ROOM as i64) as usize)?;
    let ids: Vec<i64> = list
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as i64)
        .collect();
    // (More keys than the buffer holds: those past it count as held.)
    let mut held = (len as usize / 4).saturating_sub(ids.len());
    let linked = [keyring(rem, -4)?, keyring(rem, -5)?];
    for id in ids {
        if linked.contains(&Some(id)) {
            continue;
        }
        // "type;uid;gid;perm;description"
        let n = rem.syscall(libc::SYS_keyctl, [KEYCTL_DESCRIBE, id as u64, s, ROOM, 0])?;
        if n > 0 {
            let d = rem.read_scratch(n.min(ROOM as i64) as usize)?;
            let d = String::from_utf8_lossy(&d);
            let d = d.trim_end_matches('\0');
            if d.starts_with("user;") && d.ends_with(";invocation_id") {
                continue;
            }
        }
        held += 1;
    }
    Ok(Ok(held))
}

/// What [`unrestored`] asks that is a thread's own, asked of any thread
/// (`who`): CPUID faulting and a thread keyring.
pub fn thread_unrestored(
    rem: &mut Remote,
    who: &str,
    obs: &mut Obstacles,
) -> Result<(), InjectError> {
    let (nr, a) = CPUID_CALL;
    cpuid_obstacle(rem.syscall6(nr, a)?, who, obs);
    let (nr, a) = THREAD_KEYRING_CALL;
    keyring_obstacle(rem.syscall6(nr, a)?, who, obs);
    Ok(())
}

/// arch_prctl(ARCH_GET_CPUID): 0 where the CPUID instruction faults
/// (SIGSEGV) in the thread.
pub const CPUID_CALL: (i64, [u64; 6]) = (libc::SYS_arch_prctl, [0x1011, 0, 0, 0, 0, 0]);

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING, create 0): the
/// thread keyring's id, if the thread has one (asks, makes none).
pub const THREAD_KEYRING_CALL: (i64, [u64; 6]) = (libc::SYS_keyctl, [0, -1i64 as u64, 0, 0, 0, 0]);

/// [`CPUID_CALL`]'s answer `r` in thread `who`.
pub fn cpuid_obstacle(r: i64, who: &str, obs: &mut Obstacles) {
    if r == 0 {
        obs.push(format!(
            "{who} has CPUID faulting on (arch_prctl ARCH_SET_CPUID 0), which cryo does not restore yet"
        ));
    }
}

/// [`THREAD_KEYRING_CALL`]'s answer `r` in thread `who`.
pub fn keyring_obstacle(r: i64, who: &str, obs: &mut Obstacles) {
    if r >= 0 {
        let it = if who == "its main thread" { "it" } else { who };
        obs.push(format!(
            "{it} has a thread keyring (keyctl, key {r}), whose keys cryo does not restore yet"
        ));
    }
}

/// The id of the keyring `spec` (-1 the thread's, -2 the process's) of
/// the thread `rem` runs in, if it has one (create = 0: asks, makes none).
fn keyring(rem: &mut Remote, spec: i64) -> Result<Option<i64>, InjectError> {
    let id = keyring_id(rem, spec)?;
    Ok((id >= 0).then_some(id))
}

/// [`keyring`]'s answer as the kernel gives it (a negative errno where
/// there is none, or it may not be searched).
fn keyring_id(rem: &mut Remote, spec: i64) -> Result<i64, InjectError> {
    const KEYCTL_GET_KEYRING_ID: u64 = 0;
    rem.syscall(
        libc::SYS_keyctl,
        [KEYCTL_GET_KEYRING_ID, spec as u64, 0, 0, 0],
    )
}

/// Whether a thread is in a Landlock domain (landlock_restrict_self),
/// which cryo can neither restore nor read: its rules show nowhere. A
/// sweep of kernel features (stop 45) found every domain gone after a
/// restore, a forbidden path open again, and nothing said.
///
/// The one trace a domain leaves is Landlock's ptrace rule: a thread in
/// a domain may not look at a process outside it, whatever its
/// capabilities. So the thread is asked (kcmp, injected; it changes
/// nothing) to compare a probe with itself: a process in no domain, with
/// the thread's real uid and gid, no capabilities and dumpable, which any
/// thread in no domain may look at ([`crate::sys::Idle::start_as`]: it
/// holds nothing). EPERM then means a domain. Only where the kernel runs
/// Landlock, and for a process in cryo's user and PID namespaces (one in
/// another is refused for that).
///
/// A security label of another LSM (AppArmor, SELinux, Smack) on the
/// thread other than cryo's makes the answer void (that label may forbid
/// the look too): the label is refused instead (a restore would not give
/// it back either: it runs under cryo's). cryo itself in a domain shares
/// it with its probes: a process in the same domain passes as one in
/// none, and the capture says so (`Summary::in_landlock_domain`).
#[derive(Debug, Default)]
pub struct Landlock {
    /// Whether to ask (None: not decided yet).
    runs: Option<bool>,
    /// cryo itself is in a domain (None: not asked yet).
    own_domain: Option<bool>,
    probes: Vec<((u32, u32), std::io::Result<crate::sys::Idle>)>,
    /// cryo's own security label (/proc/thread-self/attr/current).
    own_label: Option<Option<Vec<u8>>>,
}

impl Landlock {
    /// Ready to ask the threads of process `pid`, with a probe for its
    /// main thread's ids started now (before the freeze: its exec runs
    /// while the process is seized).
    pub fn start(pid: i32) -> Landlock {
        let mut l = Landlock::default();
        if l.runs() && askable(pid) {
            let ids = real_ids(&StatusText::read(pid));
            l.probes
                .push((ids, crate::sys::Idle::start_as(ids.0, ids.1)));
        }
        l
    }

    fn runs(&mut self) -> bool {
        *self.runs.get_or_insert_with(crate::sys::landlock_runs)
    }

    /// cryo itself runs in a Landlock domain ([`crate::sys::own_landlock_domain`]):
    /// its probes are in it too, so a process in that same domain cannot
    /// be told from one in none (one in a domain of its own still can).
    pub fn in_own_domain(&mut self) -> bool {
        const CAP_SYS_PTRACE: u32 = 19;
        self.runs()
            && *self.own_domain.get_or_insert_with(|| {
                // (Without CAP_SYS_PTRACE the look may be denied for other
                // reasons: not known.)
                let eff = StatusText::read(std::process::id() as i32).hex("CapEff");
                eff & (1 << CAP_SYS_PTRACE) != 0 && crate::sys::own_landlock_domain()
            })
    }

    /// Asks the thread `rem` runs in, of process `pid` (of real uid and
    /// gid `ids`, from its status), whether it is in a domain, and
    /// whether it has a security label of its own; `who` names it.
    pub fn check(
        &mut self,
        rem: &mut Remote,
        pid: i32,
        ids: (u32, u32),
        who: &str,
        obs: &mut Obstacles,
    ) -> Result<(), InjectError> {
        if let Some((nr, a)) = self.call(pid, rem.pid(), ids, who, obs) {
            Landlock::judge(rem.syscall6(nr, a)?, who, obs);
        }
        Ok(())
    }

    /// [`Landlock::check`] of thread `tid` up to the call to inject in it
    /// (None: none to make, what there was to say said).
    pub fn call(
        &mut self,
        pid: i32,
        tid: i32,
        ids: (u32, u32),
        who: &str,
        obs: &mut Obstacles,
    ) -> Option<(i64, [u64; 6])> {
        if !askable(pid) {
            return None;
        }
        let own = self
            .own_label
            .get_or_insert_with(|| label("/proc/thread-self/attr/current"))
            .clone();
        if let Some(theirs) = label(&format!("/proc/{pid}/task/{tid}/attr/current")) {
            if own.as_ref() != Some(&theirs) {
                obs.push(format!(
                    "{who} runs under the security label {:?} (AppArmor, SELinux or Smack: /proc/PID/attr/current), and a restore would run it under cryo's{}; cryo does not restore labels",
                    String::from_utf8_lossy(&theirs),
                    own.map(|o| format!(", {:?}", String::from_utf8_lossy(&o)))
                        .unwrap_or_default()
                ));
                // (That label may forbid the look asked below, too.)
                return None;
            }
        }
        if !self.runs() {
            return None;
        }
        let at = match self.probes.iter().position(|(k, _)| *k == ids) {
            Some(at) => at,
            None => {
                self.probes
                    .push((ids, crate::sys::Idle::start_as(ids.0, ids.1)));
                self.probes.len() - 1
            }
        };
        let probe = match &self.probes[at].1 {
            Ok(p) => p.pid() as u64,
            Err(e) => {
                obs.push(format!(
                    "cryo could not tell whether {who} is in a Landlock domain: a process of its uid {} and gid {} to compare with could not be made ({e}; it needs CAP_SETUID and CAP_SETGID, which root has)",
                    ids.0, ids.1
                ));
                return None;
            }
        };
        const KCMP_VM: u64 = 1;
        Some((libc::SYS_kcmp, [probe, probe, KCMP_VM, 0, 0, 0]))
    }

    /// The answer `r` of [`Landlock::call`]'s call in thread `who`.
    pub fn judge(r: i64, who: &str, obs: &mut Obstacles) {
        match r {
            0 => {}
            r if r == -(libc::EPERM as i64) => obs.push(format!(
                "{who} is in a Landlock domain (landlock_restrict_self), whose rules the kernel does not show; cryo cannot restore it"
            )),
            r => obs.push(format!(
                "cryo could not tell whether {who} is in a Landlock domain (kcmp in it: errno {})",
                -r
            )),
        }
    }
}

/// Process `pid` is in cryo's user and PID namespaces: a probe of cryo's
/// is one it may look at, by the number cryo knows it by.
fn askable(pid: i32) -> bool {
    ["user", "pid"].iter().all(|ns| {
        let of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).ok();
        of(&pid.to_string()) == of("self")
    })
}

/// A security label file's contents without the trailing NUL or newline;
/// None where no LSM gives one (EINVAL).
fn label(path: &str) -> Option<Vec<u8>> {
    let mut l = std::fs::read(path).ok()?;
    while l.last().is_some_and(|&c| c == 0 || c == b'\n') {
        l.pop();
    }
    Some(l)
}

/// A status file's real uid and gid.
pub fn real_ids(st: &StatusText) -> (u32, u32) {
    let first = |key| st.nums::<u32>(key).first().copied().unwrap_or(0);
    (first("Uid"), first("Gid"))
}

/// NUMA memory policies: those of mappings with one of their own (mbind),
/// returned as (start, mbind mode with flags, nodes) for the shim to set
/// again (stop 52: OpenBLAS binds its buffers MPOL_LOCAL, and every
/// `import numpy` with it was refused); obstacles for a policy it cannot
/// word (`cryo_image::parse_mempolicy`) and for threads with one other
/// than the main thread's (set_mempolicy), not restored yet (a sweep
/// found each back as the default). /proc/PID/numa_maps
/// shows each mapping's policy as a task sees it: its own, else that
/// task's; so with the main thread's own policy (`main_policy`, refused
/// already) a mapping's cannot be told from it. A shared file's (tmpfs,
/// memfd, System V segment) is the file's own: it comes back with it, and
/// is not counted. Absent without NUMA.
///
/// Each line costs a walk of its mapping's pages (a review: 16 ms for a
/// GiB): the whole file is read once, for the main thread, and only its
/// first line for each other thread (a thread's policy shows on every
/// mapping without one of its own, the executable's first).
/// The policy of a numa_maps line (after its address): one word, or
/// two ("prefer (many):0-1", "weighted interleave:0"; a review of stop
/// 52: a thread's was read as its first word alone).
fn policy_words(line: &str) -> Option<String> {
    let mut w = line.split_whitespace().skip(1);
    let first = w.next()?;
    match w.next() {
        Some(more)
            if (first == "prefer" && more.starts_with("(many)"))
                || (first == "weighted" && more.starts_with("interleave")) =>
        {
            Some(format!("{first} {more}"))
        }
        _ => Some(first.to_owned()),
    }
}

pub fn numa_policies(
    pid: i32,
    tids: &[i32],
    main_policy: bool,
    obs: &mut Obstacles,
) -> Vec<(u64, u32, u64)> {
    use std::io::Read;
    let first_policy = |path: String| -> Option<String> {
        let mut buf = [0u8; 512];
        let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        policy_words(text.lines().next()?)
    };
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")) else {
        return Vec::new();
    };
    let main: Vec<(&str, String, bool)> = text
        .lines()
        .filter_map(|l| {
            let at = l.split_whitespace().next()?;
            let policy = policy_words(l)?;
            // (file=PATH, one word: a path with a space is counted, the
            // safe way. A SysV segment or memfd is shmem by its name,
            // another file by its mount.)
            let file = l.split(" file=").nth(1).and_then(|f| f.split(' ').next());
            let shared_file = file.is_some_and(|f| {
                f.starts_with("/SYSV") || f.starts_with("/memfd:") || crate::sys::ipc::on_tmpfs(f)
            });
            Some((at, policy, shared_file))
        })
        .collect();
    let main_first = main.first().map(|(_, p, _)| p.clone());
    for &tid in tids {
        let t = first_policy(format!("/proc/{pid}/task/{tid}/numa_maps"));
        if t.is_some() && t != main_first {
            obs.push(format!(
                "thread {tid} has a NUMA memory policy other than the main thread's (set_mempolicy), which cryo does not restore yet"
            ));
        }
    }
    if main_policy {
        return Vec::new();
    }
    let mut policies = Vec::new();
    let bound: Vec<&str> = main
        .iter()
        .filter(|(_, p, shared_file)| p != "default" && !shared_file)
        .filter(|(at, p, _)| {
            let start = u64::from_str_radix(at, 16).ok();
            match (start, cryo_image::parse_mempolicy(p)) {
                (Some(start), Some((mode, nodes))) => {
                    policies.push((start, mode, nodes));
                    false
                }
                _ => true,
            }
        })
        .map(|(at, _, _)| *at)
        .collect();
    if let Some(first) = bound.first() {
        obs.push(format!(
            "{} mapping{} (the first at {first}) {} a NUMA memory policy of {} own (mbind), which cryo does not restore yet",
            bound.len(),
            if bound.len() == 1 { "" } else { "s" },
            if bound.len() == 1 { "has" } else { "have" },
            if bound.len() == 1 { "its" } else { "their" },
        ));
    }
    policies
}

/// A thread that dispatches its system calls to user space
/// (PR_SET_SYSCALL_USER_DISPATCH, as Wine does): not restored yet, so
/// refused (a sweep, stop 45: the calls were no longer trapped after a
/// restore). A kernel without the ptrace request cannot have told.
pub fn dispatch_obstacle(tid: i32, who: &str, obs: &mut Obstacles) {
    if crate::sys::ptrace::syscall_user_dispatch(tid).is_ok_and(|mode| mode != 0) {
        obs.push(format!(
            "{who} dispatches its system calls to user space (prctl PR_SET_SYSCALL_USER_DISPATCH), which cryo does not restore yet"
        ));
    }
}

/// The dynamic xsave features a process was given beyond those every
/// process has: AMX tile data is
/// asked for again by the shim (and each thread's tiles come back from
/// its frame); any other (none exists yet) cannot be, and is refused.
pub fn xcomp_obstacle(perm: u64, obs: &mut Obstacles) {
    // (Every process is given the static features: cryo's own set.)
    let other = perm & !crate::sys::own_xcomp_perm() & !(cryo_image::task::XCOMP_TILEDATA as u64);
    if other != 0 {
        obs.push(format!(
            "the process was given dynamic xsave features {other:#x} (arch_prctl ARCH_REQ_XCOMP_PERM) that cryo does not know how to give back"
        ));
    }
}

/// A task's scheduling: nice, policy, RT priority (UNKNOWN where the
/// kernel would not tell) and CPU affinity (CPUs 0-1023).
pub struct Sched {
    pub nice: i64,
    pub policy: i64,
    pub priority: i64,
    pub affinity: [u64; 16],
}

impl Sched {
    /// Read from outside, for task (thread) `tid`.
    pub fn read(tid: i32) -> Sched {
        let mut s = Sched {
            nice: UNKNOWN,
            policy: UNKNOWN,
            priority: UNKNOWN,
            affinity: [0; 16],
        };
        let o = crate::sys::sched_of(tid);
        s.nice = o.nice.map_or(UNKNOWN, i64::from);
        s.policy = o.policy.map_or(UNKNOWN, i64::from);
        s.priority = o.priority.map_or(UNKNOWN, i64::from);
        s.affinity = o.affinity.unwrap_or([0; 16]);
        s
    }
}

/// Threads under SCHED_DEADLINE (`chrt -d`): their runtime, deadline and
/// period (sched_getattr) are not recorded, and every restore failed
/// "setting the scheduling policy: Invalid argument" where capture and
/// both dry runs had said yes (a sweep of stop 51). Refused by name.
pub fn deadline_obstacles(pid: i32, tids: &[i32], obs: &mut Obstacles) {
    const SCHED_DEADLINE: i64 = 6;
    for &tid in tids {
        let p = Sched::read(tid).policy;
        if p != UNKNOWN && p & 0xff == SCHED_DEADLINE {
            let who = if tid == pid {
                "its main thread".to_owned()
            } else {
                format!("its thread {tid}")
            };
            obs.push(format!(
                "{who} runs under SCHED_DEADLINE (chrt -d), whose runtime, deadline and period cryo does not record yet"
            ));
        }
    }
}

/// Scheduling, oom score and loginuid, read from outside.
pub fn outside(pid: i32, t: &mut TaskState) {
    let s = Sched::read(pid);
    t.nice = s.nice;
    t.sched_policy = s.policy;
    t.sched_priority = s.priority;
    t.affinity = s.affinity;
    t.ioprio = crate::sys::ioprio_of(pid).unwrap_or(UNKNOWN);
    let num = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(UNKNOWN)
    };
    t.oom_score_adj = num("oom_score_adj");
    t.loginuid = num("loginuid");
    t.coredump_filter = std::fs::read_to_string(format!("/proc/{pid}/coredump_filter"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .map_or(0, |v| v | cryo_image::task::COREDUMP_FILTER_KNOWN);
}

/// The process's cgroups (/proc/PID/cgroup), which every other thread
/// (`tids`, the frozen ones) must share: a restore puts a process in
/// cgroups, not its threads.
/// Its root directory if not `/` (chroot): absolute, as seen from cryo's.
pub fn root(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/root"))
        .ok()
        .map(|r| r.to_string_lossy().into_owned())
        .filter(|r| r != "/")
        .unwrap_or_default()
}

pub fn cgroups(pid: i32, tids: &[i32], obs: &mut Obstacles) -> String {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let own = read(format!("/proc/{pid}/cgroup"));
    for &tid in tids {
        let theirs = read(format!("/proc/{pid}/task/{tid}/cgroup"));
        if !theirs.is_empty() && theirs != own {
            let differ: Vec<&str> = theirs
                .lines()
                .filter(|l| !own.lines().any(|o| o == *l))
                .collect();
            obs.push(format!(
                "thread {tid} is in other cgroups than the main thread ({}); cryo restores a process's cgroups, not a thread's",
                differ.join(", ")
            ));
        }
    }
    own
}

/// Everything that makes a faithful capture impossible and is visible
/// from outside: children, namespaces, root, seccomp, shadow stacks.
/// Who traces whom on this machine: (tracer thread, tracee, its name) for
/// every process whose /proc status names a TracerPid. Read once per
/// capture (`pipes::Scope::tracing`), not once per captured process.
#[derive(Debug, Default)]
pub struct Tracing(Vec<(i32, i32, String)>);

impl Tracing {
    pub fn scan() -> Tracing {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Tracing::default();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
                continue;
            };
            let field = |name: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let tracer: i32 = field("TracerPid:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if tracer != 0 {
                out.push((tracer, p, field("Name:").unwrap_or_default()));
            }
        }
        Tracing(out)
    }

    /// The processes a thread of `pid` traces, with their names. (cryo's
    /// own seize of its target names cryo, not the target.)
    fn by(&self, pid: i32) -> Vec<(i32, &str)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        self.0
            .iter()
            .filter(|(t, _, _)| tids.contains(t))
            .map(|(_, p, n)| (*p, n.as_str()))
            .collect()
    }
}

pub fn obstacles(pid: i32, st: &StatusText, single: bool, tracing: &Tracing, obs: &mut Obstacles) {
    let traced = tracing.by(pid);
    if !traced.is_empty() {
        obs.push(format!(
            "it traces {} (ptrace: strace, a debugger): a restore cannot attach it again, and the restored tracer would find no tracee",
            traced
                .iter()
                .map(|(p, c)| format!("process {p} ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let kids = if single { children(pid) } else { Vec::new() };
    if !kids.is_empty() {
        let list: Vec<String> = kids
            .iter()
            .map(|(p, s)| {
                if *s == 'Z' {
                    format!("{p} (a zombie)")
                } else {
                    p.to_string()
                }
            })
            .collect();
        obs.push(format!(
            "it has child processes ({}), and --single captures one process only",
            list.join(", ")
        ));
    }
    for ns in [
        "mnt",
        "pid",
        "pid_for_children",
        "net",
        "ipc",
        "uts",
        "user",
        "cgroup",
        "time",
        "time_for_children",
    ] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
        if theirs.is_some() && theirs != ours {
            obs.push(if ns.ends_with("_for_children") {
                format!(
                    "its children would start in another {} namespace than cryo's (unshare); a restore would not keep that",
                    ns.trim_end_matches("_for_children")
                )
            } else {
                format!(
                    "it lives in another {ns} namespace than cryo; a restore would not put it back there"
                )
            });
        }
    }
    // A changed root (chroot) is entered again (`root`), if it still has
    // a name.
    if let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root")) {
        let r = root.to_string_lossy();
        if r.ends_with(" (deleted)") || !root.is_dir() {
            obs.push(format!(
                "its root directory is {r} (chroot), which has no name to enter again"
            ));
        }
    }
    // (Strict mode, 1, is entered again: `seccomp::capture`; filters,
    // mode 2, too.)
    if let Some(f) = st.get("x86_Thread_features") {
        if !f.is_empty() {
            obs.push(format!(
                "it uses x86 thread features ({f}: shadow stack), which cryo cannot restore"
            ));
        }
    }
}

/// (pid, state) of every process whose parent is `pid`: from each
/// thread's `children` file (CONFIG_PROC_CHILDREN), or a scan of /proc.
pub(crate) fn children(pid: i32) -> Vec<(i32, char)> {
    let state = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
            .unwrap_or('?')
    };
    let mut out = Vec::new();
    let mut have_file = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                have_file = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|w| w.parse::<i32>().ok())
                        .map(|p| (p, state(p))),
                );
            }
        }
    }
    if !have_file {
        out = scan_children(pid);
    }
    out.sort();
    out.dedup();
    out
}

fn scan_children(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(d) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in d.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|s| s.parse::<i32>().ok()) == Some(pid) {
            out.push((p, state));
        }
    }
    out
}

/// The boot the process runs in and its monotonic clocks as it sees them
/// (this process's, plus its time namespace's offsets from
/// /proc/PID/timens_offsets): a restore in another boot, or where
/// CLOCK_MONOTONIC is behind, is refused unless asked
/// (`cryo_image::task::clock_jump`). Left 0 if the boot id cannot be read.
pub fn clocks(pid: i32, t: &mut cryo_image::task::TaskState) {
    let Some(id) = std::fs::read("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|b| cryo_image::task::parse_boot_id(&b))
    else {
        return;
    };
    // The offsets are from the first time namespace, and this process's
    // clock has its own namespace's already: the difference is the
    // target's view (a review of stop 51 found both in one namespace
    // counted twice, and the restore there refused).
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (theirs, ours) = (
        read(&format!("/proc/{pid}/timens_offsets")),
        read("/proc/self/timens_offsets"),
    );
    fn of(offsets: &str, clock: &str) -> i128 {
        offsets
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                if w.next()? != clock {
                    return None;
                }
                let sec: i128 = w.next()?.parse().ok()?;
                let nsec: i128 = w.next()?.parse().ok()?;
                Some(sec * 1_000_000_000 + nsec)
            })
            .unwrap_or(0)
    }
    let offset = |clock: &str| of(&theirs, clock) - of(&ours, clock);
    let seen = |clock: libc::clockid_t, name: &str| -> u64 {
        let ns = i128::from(crate::sys::clock_ns(clock)) + offset(name);
        u64::try_from(ns).unwrap_or(0)
    };
    t.boot_id = id;
    t.monotonic_ns = seen(libc::CLOCK_MONOTONIC, "monotonic");
    t.boottime_ns = seen(libc::CLOCK_BOOTTIME, "boottime");
}
