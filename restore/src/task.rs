//! Per-process state outside memory and fds (see `cryo_image::task`):
//! what `cryo restore` checks can be restored here, and what it sets
//! itself before the exec (scheduling, oom score, loginuid: all survive
//! exec). The shim sets credentials and prctl state.

use crate::{sys, IntoSys, RestoreError};
use cryo_image::task::{TaskState, UNKNOWN};
use cryo_image::Image;

/// Capability numbers used here.
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_AUDIT_CONTROL: u32 = 30;

/// This process's credentials and flags, from /proc/self/status.
struct Own {
    uid: [u32; 4],
    gid: [u32; 4],
    groups: Vec<u32>,
    cap_prm: u64,
    cap_eff: u64,
    cap_bnd: u64,
    no_new_privs: bool,
}

impl Own {
    fn from_status(text: &str) -> Own {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let nums = |k: &str| -> Vec<u32> {
            get(k)
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        };
        let four = |k: &str| {
            let v = nums(k);
            [0, 1, 2, 3].map(|i| v.get(i).copied().unwrap_or(0))
        };
        let hex = |k: &str| u64::from_str_radix(&get(k), 16).unwrap_or(0);
        Own {
            uid: four("Uid"),
            gid: four("Gid"),
            groups: nums("Groups"),
            cap_prm: hex("CapPrm"),
            cap_eff: hex("CapEff"),
            cap_bnd: hex("CapBnd"),
            no_new_privs: get("NoNewPrivs") == "1",
        }
    }
    fn hex_of(text: &str, k: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    }
    fn has(&self, cap: u32) -> bool {
        self.cap_eff & (1 << cap) != 0
    }
}

fn refuse(why: String) -> RestoreError {
    RestoreError::Task(why)
}

/// What `check` found, for the exec: whether the shim must change the
/// credentials, and this process's oom score and loginuid.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub same_creds: bool,
    own_oom: Option<i64>,
    own_loginuid: Option<i64>,
    /// The cgroup directories to join (`Cgroups::Captured`).
    cgroups: Vec<std::path::PathBuf>,
}

/// The directory of each cgroup in `text` (/proc/PID/cgroup's lines,
/// `ID:CONTROLLERS:PATH`), where its hierarchy is mounted here: cgroup2
/// for ID 0, else the cgroup mount whose options name every controller.
/// Lines this process already shares are left out. Every line that has
/// no mount, or whose directory is gone, is an error, all named at once.
pub fn cgroup_dirs(text: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // (root of the mount, mount point, fs type, super options)
    let mounts: Vec<(&str, &str, &str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let f: Vec<&str> = a.split(' ').collect();
            let g: Vec<&str> = b.split(' ').collect();
            Some((*f.get(3)?, *f.get(4)?, *g.first()?, *g.get(2)?))
        })
        .filter(|m| m.2 == "cgroup" || m.2 == "cgroup2")
        .collect();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut dirs = Vec::new();
    let mut missing = Vec::new();
    // (A hierarchy where this process is in that cgroup already needs
    // nothing, mounted or not.)
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !own.lines().any(|o| o == *l))
    {
        let mut it = line.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (it.next(), it.next(), it.next()) else {
            missing.push(format!("{line} (not a cgroup line)"));
            continue;
        };
        let found = mounts.iter().find(|(root, _, fs, opts)| {
            let kind = if id == "0" && ctl.is_empty() {
                *fs == "cgroup2"
            } else {
                *fs == "cgroup" && ctl.split(',').all(|c| opts.split(',').any(|o| o == c))
            };
            kind && (*root == "/" || path == *root || path.starts_with(&format!("{root}/")))
        });
        let dir = found.map(|(root, at, _, _)| {
            let rest = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            std::path::Path::new(at).join(rest)
        });
        match dir {
            Some(d) if d.join("cgroup.procs").exists() => dirs.push(d),
            Some(d) => missing.push(format!("{line} ({} is gone)", d.display())),
            None => missing.push(format!("{line} (its hierarchy is not mounted here)")),
        }
    }
    if missing.is_empty() {
        Ok(dirs)
    } else {
        Err(missing.join(", "))
    }
}

/// Can the captured credentials and task state be given back here?
/// Refuses, before anything changes, what this process cannot do.
/// `cgroups`: join the captured cgroups (each must exist).
pub fn check(
    img: &Image,
    status: &crate::OwnStatus,
    cgroups: bool,
) -> Result<Checked, RestoreError> {
    let own = Own::from_status(&status.text);
    let mine = |f: &str| {
        std::fs::read_to_string(format!("/proc/self/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    let mut out = Checked {
        same_creds: true,
        ..Checked::default()
    };
    if let Some(t) = img.task().filter(|_| cgroups) {
        let text = img.str(t.cgroups).unwrap_or("");
        out.cgroups = cgroup_dirs(text).map_err(|e| {
            refuse(format!(
                "process {} was captured in cgroups that cannot be joined here: {e} (restore with --cgroups inherit to stay in this one's)",
                img.process().pid
            ))
        })?;
    }
    if let Some(c) = img.creds() {
        let groups: Vec<u32> = img.groups().iter().map(|g| g.gid).collect();
        let ids_differ = c.uid != own.uid || c.gid != own.gid || groups != own.groups;
        out.same_creds = !ids_differ
            && c.cap_prm == own.cap_prm
            && c.cap_eff == own.cap_eff
            && c.cap_bnd == own.cap_bnd
            && c.cap_inh == Own::hex_of(&status.text, "CapInh")
            && c.cap_amb == Own::hex_of(&status.text, "CapAmb")
            // securebits are not in /proc: let the shim compare if any.
            && c.securebits == 0;
        // The main thread's, then each other thread's own (the same
        // groups: capture checked).
        for c in std::iter::once(c).chain(img.thread_creds().iter()) {
            let ids_differ = c.uid != own.uid || c.gid != own.gid || groups != own.groups;
            if ids_differ {
                let need = [CAP_SETUID, CAP_SETGID];
                if need.iter().any(|&n| !own.has(n)) {
                    return Err(refuse(format!(
                        "the image ran as uid {:?} gid {:?} groups {groups:?}, this restore as uid {:?} gid {:?} groups {:?}: switching needs CAP_SETUID and CAP_SETGID (restore as root, or as the captured user)",
                        c.uid, c.gid, own.uid, own.gid, own.groups
                    )));
                }
            }
            if c.cap_prm & !own.cap_prm != 0 || c.cap_bnd & !own.cap_bnd != 0 {
                return Err(refuse(format!(
                    "the image holds capabilities this process does not (permitted {:#x} vs {:#x}, bounding {:#x} vs {:#x}); restore as root",
                    c.cap_prm, own.cap_prm, c.cap_bnd, own.cap_bnd
                )));
            }
            if c.cap_bnd != own.cap_bnd && !own.has(CAP_SETPCAP) {
                return Err(refuse(
                    "the image's capability bounding set is smaller; dropping ours needs CAP_SETPCAP"
                        .into(),
                ));
            }
        }
    }
    if let Some(root) = img
        .task()
        .and_then(|t| img.str(t.root))
        .filter(|r| !r.is_empty())
    {
        if !std::path::Path::new(root).is_dir() {
            return Err(refuse(format!(
                "process {} ran with its root directory at {root} (chroot), which is not a directory here",
                img.process().pid
            )));
        }
        if !own.has(CAP_SYS_CHROOT) {
            return Err(refuse(format!(
                "process {} ran with its root directory at {root} (chroot); entering it needs CAP_SYS_CHROOT (restore as root)",
                img.process().pid
            )));
        }
    }
    if let Some(t) = img.task() {
        if own.no_new_privs && t.no_new_privs == 0 {
            return Err(refuse(
                "this process has no_new_privs set, the image did not; it cannot be unset (restore from a shell without it)".into(),
            ));
        }
        // mlockall(MCL_FUTURE) needs CAP_IPC_LOCK or a memory-lock limit
        // above 0 (the captured one: the shim sets it first).
        let memlock = img
            .rlimits()
            .iter()
            .find(|r| r.resource == libc::RLIMIT_MEMLOCK)
            .map_or(u64::MAX, |r| r.cur);
        if t.mlock_future != 0 && memlock == 0 && !own.has(CAP_IPC_LOCK) {
            return Err(refuse(
                "the image locks the process's mappings to come (mlockall MCL_FUTURE) with a memory-lock limit of 0, which needs CAP_IPC_LOCK".into(),
            ));
        }
        if t.memory_merge == 1 && !own.has(CAP_SYS_RESOURCE) {
            return Err(refuse(
                "the image had KSM merging on for the whole process (PR_SET_MEMORY_MERGE), which needs CAP_SYS_RESOURCE to set".into(),
            ));
        }
        out.own_oom = mine("oom_score_adj");
        out.own_loginuid = mine("loginuid");
        if t.oom_score_adj != UNKNOWN
            && out.own_oom.is_some_and(|m| t.oom_score_adj < m)
            && !own.has(CAP_SYS_RESOURCE)
        {
            return Err(refuse(format!(
                "the image's oom_score_adj is {}, lower than this process's {}; lowering it needs CAP_SYS_RESOURCE",
                t.oom_score_adj,
                out.own_oom.unwrap_or(0)
            )));
        }
        if t.loginuid != UNKNOWN
            && out.own_loginuid != Some(t.loginuid)
            && !own.has(CAP_AUDIT_CONTROL)
        {
            return Err(refuse(format!(
                "the image's loginuid is {}, this process's {:?}; setting it needs CAP_AUDIT_CONTROL",
                t.loginuid,
                out.own_loginuid
            )));
        }
        if sys::mdwe().is_ok_and(|m| m > 0) && t.mdwe <= 0 {
            return Err(refuse(
                "this process has memory-deny-write-execute set (PR_SET_MDWE), the image did not; it cannot be unset".into(),
            ));
        }
    }
    Ok(out)
}

/// Set what survives the exec: nice, scheduling policy, CPU affinity, I/O
/// priority, oom score, loginuid. Each only where it differs.
pub fn apply_before_exec(img: &Image, checked: &Checked) -> Result<(), RestoreError> {
    let Some(t) = img.task() else {
        return Ok(());
    };
    apply_sched(&t)?;
    let write = |file: &str, cur: Option<i64>, v: i64| -> Result<(), RestoreError> {
        if v == UNKNOWN || cur == Some(v) {
            return Ok(());
        }
        std::fs::write(format!("/proc/self/{file}"), v.to_string())
            .map_err(|e| e.into_sys(format!("setting {file} to {v}")))
    };
    write("oom_score_adj", checked.own_oom, t.oom_score_adj)?;
    write("loginuid", checked.own_loginuid, t.loginuid)?;
    // Which mappings a core dump holds: kept by the exec (a sweep, stop
    // 45: the restorer's 0x33 came back where the program had set 0x7f).
    let known = cryo_image::task::COREDUMP_FILTER_KNOWN;
    if t.coredump_filter & known != 0 {
        let want = t.coredump_filter & !known;
        let path = "/proc/self/coredump_filter";
        let cur = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
        if cur != Some(want) {
            std::fs::write(path, format!("{want:#x}"))
                .map_err(|e| e.into_sys(format!("setting coredump_filter to {want:#x}")))?;
        }
    }
    for d in &checked.cgroups {
        // ("0": the process writing it.)
        std::fs::write(d.join("cgroup.procs"), "0")
            .map_err(|e| e.into_sys(format!("joining cgroup {}", d.display())))?;
    }
    Ok(())
}

fn apply_sched(t: &TaskState) -> Result<(), RestoreError> {
    // (A failed read is taken as -1 or 0, as the calls return: what
    // differs is set.)
    if t.sched_policy != UNKNOWN {
        let cur = sys::sched_policy().unwrap_or(-1);
        let prio = sys::sched_priority().unwrap_or(0);
        let want = t.sched_priority.max(0) as i32;
        if (cur as i64, prio as i64) != (t.sched_policy, want as i64) {
            sys::set_scheduler(t.sched_policy as i32, want)
                .map_err(|e| e.into_sys("setting the scheduling policy"))?;
        }
    }
    let nice = sys::nice().unwrap_or(-1);
    if t.nice != UNKNOWN && nice as i64 != t.nice {
        sys::set_nice(t.nice as i32).map_err(|e| e.into_sys("setting the nice value"))?;
    }
    if t.affinity.iter().any(|&w| w != 0) {
        let mut set = sys::CpuSet::new();
        for cpu in 0..1024usize.min(libc::CPU_SETSIZE as usize) {
            if t.affinity[cpu / 64] & (1 << (cpu % 64)) != 0 {
                let _ = set.set(cpu);
            }
        }
        let same = sys::affinity().is_ok_and(|cur| cur == set);
        if !same {
            sys::set_affinity(&set).map_err(|e| e.into_sys("setting the CPU affinity"))?;
        }
    }
    if t.ioprio != UNKNOWN {
        let cur = sys::ioprio().unwrap_or(-1);
        if cur != t.ioprio {
            sys::set_ioprio(t.ioprio).map_err(|e| e.into_sys("setting the I/O priority"))?;
        }
    }
    Ok(())
}

/// Where the process kept its own PID in its data
/// (`cryo_image::task::PidRef`, found at capture), in words: restored
/// under another PID, it goes on with the captured one there.
pub fn own_pid_note(img: &Image) -> Option<String> {
    let clocks: Vec<String> = img
        .timers()
        .iter()
        .filter_map(|t| match cryo_image::cpu_clock(t.clock) {
            Some((id, thread)) if id != 0 => Some(format!(
                "POSIX timer {} counts the CPU time of {} {id} by its id",
                t.id,
                if thread { "thread" } else { "process" }
            )),
            _ => None,
        })
        .collect();
    let clocks = (!clocks.is_empty()).then(|| {
        format!(
            "{}: the restore makes it on the restored one's clock, but a clock id the program keeps (from pthread_getcpuclockid or clock_getcpuclockid: haproxy's watchdog reads its clock so) names the captured one",
            clocks.join(", ")
        )
    });
    // A kept file named by the PID (Mono's /dev/shm/mono.PID, a JVM's
    // hsperfdata_USER/PID): the program removes it at exit by the PID it
    // has then, so under another it leaves the captured one behind.
    let pid = img.process().pid.to_string();
    let named: Vec<&str> = img
        .files()
        .iter()
        .filter(|f| f.flags & cryo_image::fds::file_flags::KEPT != 0)
        .filter_map(|f| img.str(f.path))
        .filter(|p| {
            p.match_indices(pid.as_str()).any(|(i, _)| {
                let b = p.as_bytes();
                !b.get(i.wrapping_sub(1)).is_some_and(u8::is_ascii_digit)
                    && !b.get(i + pid.len()).is_some_and(u8::is_ascii_digit)
            })
        })
        .collect();
    let files = (!named.is_empty()).then(|| {
        format!(
            "it maps {} named by its PID: a program that removes such a file by the PID it has then (Mono does) leaves it behind under another PID, and the next restore refuses it until it is removed",
            named.join(", ")
        )
    });
    let parts: Vec<String> = [values_note(img), clocks, files]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// [`own_pid_note`]'s part on the PID kept as a value.
fn values_note(img: &Image) -> Option<String> {
    let refs: Vec<cryo_image::task::PidRef> = img
        .pid_refs()
        .iter()
        .filter(|r| r.kind == cryo_image::task::pid_ref::VALUE)
        .collect();
    let p = img.process();
    let first = refs.first()?;
    let vmas = img.vmas();
    let path = |i: usize| {
        vmas.get(i)
            .filter(|v| v.file != cryo_image::NO_INDEX)
            .and_then(|v| img.files().get(v.file as usize))
            .and_then(|f| img.str(f.path))
    };
    let place = match vmas
        .iter()
        .position(|v| v.start <= first.addr && first.addr < v.end)
    {
        Some(i) => match (path(i), i.checked_sub(1).and_then(path)) {
            (Some(p), _) => format!("{p}'s data"),
            (None, Some(p)) => format!("{p}'s .bss"),
            _ => "its data".to_owned(),
        },
        None => "its data".to_owned(),
    };
    let n = refs.len();
    Some(format!(
        "{} keeps its own PID {} in memory ({n} place{}, the first at {:#x} in {place}); under another PID it goes on with {} there (nginx's master then cannot start workers on reload, bash's $$ names another process, Python's asyncio finds no running loop)",
        img.str(p.exe).unwrap_or("the program"),
        p.pid,
        if n == 1 { "" } else { "s" },
        first.addr,
        p.pid,
    ))
}

/// What becomes of the modes of the terminal at the program's fds 0-2
/// (`cryo_image::fds::Terminal`), when the program had turned off
/// canonical input or echo (less, vim, `read -s`): set on this restore's
/// terminal in its foreground, or left as they are.
pub fn terminal_note(img: &Image) -> Option<String> {
    let t = img.terminal()?;
    if t.lflag & libc::ICANON != 0 && t.lflag & libc::ECHO != 0 {
        return None;
    }
    let modes = match (t.lflag & libc::ICANON != 0, t.lflag & libc::ECHO != 0) {
        (false, false) => "non-canonical, no echo",
        (false, true) => "non-canonical",
        _ => "no echo",
    };
    Some(if crate::sys::tty::in_foreground(t.fd as i32) {
        format!(
            "the program had set its terminal's modes ({modes}); this restore's terminal at fd {} gets them",
            t.fd
        )
    } else {
        format!(
            "the program had set its terminal's modes ({modes}); this restore is not in the foreground of a terminal at fd {}, so they are not set: it reads a terminal in other modes (restore it from a terminal's foreground)",
            t.fd
        )
    })
}
