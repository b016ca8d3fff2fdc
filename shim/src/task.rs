//! The per-process state the shim sets last: prctl values, membarrier
//! registrations (they belong to the new address space), credentials
//! (after everything that needs privilege), and memory-deny-write-execute
//! (after the last mapping). See `cryo_image::task`.

use crate::own::Own;
use crate::sys::*;
use crate::{c_path, check, die};
use cryo_image::task::{Creds, TaskState, UNKNOWN};
use cryo_image::Image;

const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_KEEPCAPS: usize = 8;
const PR_SET_TSC: usize = 26;
const PR_SET_SECUREBITS: usize = 28;
const PR_GET_SECUREBITS: usize = 27;
const PR_SET_TIMERSLACK: usize = 29;
const PR_MCE_KILL: usize = 33;
const PR_CAPBSET_READ: usize = 23;
const PR_CAPBSET_DROP: usize = 24;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const PR_SET_NO_NEW_PRIVS: usize = 38;
const PR_SET_THP_DISABLE: usize = 41;
const PR_CAP_AMBIENT: usize = 47;
const PR_SET_SPECULATION_CTRL: usize = 53;
const PR_SET_MDWE: usize = 65;
const PR_SET_MEMORY_MERGE: usize = 67;

fn prctl(opt: usize, a: usize, b: usize) -> isize {
    syscall6(SYS_PRCTL, opt, a, b, 0, 0, 0)
}

/// Known, i.e. read at capture.
fn known(v: i64) -> Option<usize> {
    (v != UNKNOWN && v >= 0).then_some(v as usize)
}

/// prctl state (before the threads are cloned: those that are per thread
/// are inherited).
/// AMX: the permission for tile data (arch_prctl ARCH_REQ_XCOMP_PERM),
/// asked for again before any thread is made (it is the process's), so
/// that every thread's frame can carry its tiles ([`crate::frame`]).
/// `cryo restore` checked that this kernel grants it.
pub fn restore_xcomp_perm(img: &Image) {
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    if img
        .task()
        .is_some_and(|t| t.xcomp_perm & cryo_image::task::XCOMP_TILEDATA != 0)
    {
        check(
            syscall3(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0),
            format_args!("arch_prctl ARCH_REQ_XCOMP_PERM (AMX tile data)"),
        );
    }
}

pub fn restore_prctl_state(img: &Image) {
    if let Some(t) = img.task() {
        restore_prctl(&t);
    }
}

/// The program's RLIMIT_DATA, RLIMIT_NOFILE and RLIMIT_AS, which the
/// restore only raised before (`cryo_image::rlimit_set_late`): set now,
/// lowering them, once nothing of the restore maps memory or opens a
/// file, and before the program's seccomp filters.
pub fn late_limits(img: &Image) {
    for r in img.rlimits().iter() {
        if !cryo_image::rlimit_set_late(r.resource) {
            continue;
        }
        let mut cur = [0u64; 2];
        let want = [r.cur, r.max];
        let res = r.resource as usize;
        if syscall6(SYS_PRLIMIT64, 0, res, 0, cur.as_mut_ptr() as usize, 0, 0) == 0 && cur == want {
            continue;
        }
        check(
            syscall6(SYS_PRLIMIT64, 0, res, want.as_ptr() as usize, 0, 0, 0),
            format_args!(
                "setting {} to {}/{}",
                cryo_image::rlimit_name(r.resource),
                r.cur,
                r.max
            ),
        );
    }
}

/// The rest of the task state, in order: credentials (unless `cryo
/// restore` found them equal to its own, which the exec kept), what a
/// credentials change resets, then MDWE.
pub fn restore(img: &Image, same_creds: bool) {
    // Mappings to come locked (mlockall MCL_FUTURE), while privileged:
    // the shim makes none after this (its window goes by munmap).
    if let Some(t) = img.task().filter(|t| t.mlock_future != 0) {
        check(
            syscall3(SYS_MLOCKALL, t.mlock_future as usize, 0, 0),
            format_args!("mlockall({:#x}) for the mappings to come", t.mlock_future),
        );
    }
    // Its root directory (chroot), while privileged: every file was
    // opened by its path from ours, and the working directory is set.
    if let Some(root) = root_of(img) {
        let mut buf = [0u8; 4096];
        check(
            syscall3(SYS_CHROOT, c_path(root, &mut buf), 0, 0),
            format_args!("chroot into {root}"),
        );
    }
    if let Some(c) = img.creds().filter(|_| !same_creds) {
        restore_creds(img, &c);
    }
    if let Some(t) = img.task() {
        restore_after_creds(&t);
        restore_mdwe(&t);
    }
}

/// Its captured root directory, if not `/`.
fn root_of<'a>(img: &Image<'a>) -> Option<&'a str> {
    img.task()
        .and_then(|t| img.str(t.root))
        .filter(|r| !r.is_empty())
}

/// The task's name (comm).
/// The personality as captured, once the mappings are made. An exec
/// clears READ_IMPLIES_EXEC (the ELF loader sets it from the executable's
/// stack), so the one `cryo restore` set before its exec did not last
/// (a sweep, stop 45: 0x440000 came back 0x40000, and the program's new
/// PROT_READ mappings were not executable); and made while it is on,
/// every PROT_READ mapping of the image would be executable too. So the
/// mappings are made without it and it is set here, before the threads
/// are cloned (they inherit it).
pub fn restore_personality(img: &Image) {
    let want = img.process().personality as usize;
    const QUERY: usize = 0xffff_ffff;
    if syscall3(SYS_PERSONALITY, QUERY, 0, 0) as usize != want {
        syscall3(SYS_PERSONALITY, want, 0, 0);
    }
}

pub fn set_comm(img: &Image) {
    const PR_SET_NAME: usize = 15;
    let mut comm = [0u8; 17];
    comm[..16].copy_from_slice(&img.process().comm);
    syscall3(SYS_PRCTL, PR_SET_NAME, comm.as_ptr() as usize, 0);
}

/// prctl state that belongs to the address space or survives nothing
/// else: THP, subreaper, timer slack, machine-check policy, speculation,
/// TSC, KSM, membarrier registrations. Before the credentials change.
pub fn restore_prctl(t: &TaskState) {
    if let Some(v) = known(t.thp_disable) {
        check(
            prctl(PR_SET_THP_DISABLE, v, 0),
            format_args!("PR_SET_THP_DISABLE"),
        );
    }
    if let Some(v) = known(t.child_subreaper) {
        check(
            prctl(PR_SET_CHILD_SUBREAPER, v, 0),
            format_args!("PR_SET_CHILD_SUBREAPER"),
        );
    }
    if let Some(v) = known(t.timer_slack_ns) {
        check(
            prctl(PR_SET_TIMERSLACK, v, 0),
            format_args!("PR_SET_TIMERSLACK"),
        );
    }
    if let Some(v) = known(t.mce_kill) {
        // PR_MCE_KILL_GET: 0 late, 1 early, 2 the system default.
        let r = if v == 2 {
            syscall6(SYS_PRCTL, PR_MCE_KILL, 0, 0, 0, 0, 0)
        } else {
            syscall6(SYS_PRCTL, PR_MCE_KILL, 1, v, 0, 0, 0)
        };
        check(r, format_args!("PR_MCE_KILL"));
    }
    for (which, &v) in t.spec.iter().enumerate() {
        const PR_SPEC_PRCTL: i64 = 1;
        if v == UNKNOWN || v & PR_SPEC_PRCTL == 0 {
            continue;
        }
        // The state bits (ENABLE 2, DISABLE 4, FORCE_DISABLE 8,
        // DISABLE_NOEXEC 16) are what PR_SET takes.
        let state = (v & !PR_SPEC_PRCTL) as usize;
        if state != 0 {
            let r = syscall6(SYS_PRCTL, PR_SET_SPECULATION_CTRL, which, state, 0, 0, 0);
            check(r, format_args!("PR_SET_SPECULATION_CTRL({which}, {state})"));
        }
    }
    if let Some(v) = known(t.tsc) {
        if v != 0 {
            check(prctl(PR_SET_TSC, v, 0), format_args!("PR_SET_TSC"));
        }
    }
    if t.memory_merge == 1 {
        check(
            prctl(PR_SET_MEMORY_MERGE, 1, 0),
            format_args!("PR_SET_MEMORY_MERGE"),
        );
    }
    if let Some(m) = known(t.membarrier) {
        for bit in 0..16 {
            if m & (1 << bit) != 0 {
                let r = syscall3(SYS_MEMBARRIER, 1 << bit, 0, 0);
                check(r, format_args!("membarrier({:#x}) registration", 1 << bit));
            }
        }
    }
}

/// What a credentials change resets (pdeathsig, dumpable), and what can
/// only be set, never cleared (no_new_privs).
pub fn restore_after_creds(t: &TaskState) {
    if let Some(v) = known(t.pdeathsig) {
        check(
            prctl(PR_SET_PDEATHSIG, v, 0),
            format_args!("PR_SET_PDEATHSIG"),
        );
    }
    // 2 (suid_dumpable "root only") cannot be set with prctl.
    if let Some(v @ (0 | 1)) = known(t.dumpable) {
        check(
            prctl(PR_SET_DUMPABLE, v, 0),
            format_args!("PR_SET_DUMPABLE"),
        );
    }
    if t.no_new_privs == 1 {
        check(
            syscall6(SYS_PRCTL, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0),
            format_args!("PR_SET_NO_NEW_PRIVS"),
        );
    }
}

/// Memory-deny-write-execute, after the last mapping is made.
pub fn restore_mdwe(t: &TaskState) {
    if let Some(v) = known(t.mdwe) {
        if v != 0 {
            check(
                syscall6(SYS_PRCTL, PR_SET_MDWE, v, 0, 0, 0, 0),
                format_args!("PR_SET_MDWE"),
            );
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Whether this process may lock memory beyond RLIMIT_MEMLOCK
/// (CAP_IPC_LOCK in its effective set).
pub fn can_lock_any() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    effective_caps() >> CAP_IPC_LOCK & 1 != 0
}

/// This process's effective capabilities.
pub fn effective_caps() -> u64 {
    capget().0
}

fn capget() -> (u64, u64, u64) {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    check(
        syscall3(
            SYS_CAPGET,
            &mut h as *mut CapHeader as usize,
            d.as_mut_ptr() as usize,
            0,
        ),
        format_args!("capget"),
    );
    let w = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
    (
        w(d[0].effective, d[1].effective),
        w(d[0].permitted, d[1].permitted),
        w(d[0].inheritable, d[1].inheritable),
    )
}

fn ids(getres: usize, setfs: usize) -> [u32; 4] {
    let mut v = [0u32; 3];
    let p = v.as_mut_ptr() as usize;
    check(
        syscall3(getres, p, p + 4, p + 8),
        format_args!("getres[ug]id"),
    );
    // set*fsid(-1) changes nothing and returns the current value.
    let fs = syscall3(setfs, u32::MAX as usize, 0, 0) as u32;
    [v[0], v[1], v[2], fs]
}

/// Can the credentials and no_new_privs be restored by this process? For
/// a packed restorer, which has no `cryo restore` to check this before
/// the point of no return: the same as captured, or the privilege to
/// switch (CAP_SETUID, CAP_SETGID and CAP_SETPCAP); and no_new_privs not
/// set here unless it was there (it cannot be cleared).
// (A frame of its own: its path buffer is not probed into the caller's.)
#[inline(never)]
pub fn check_settable(img: &Image, own: &Own) {
    // The main thread's, then each other thread's own.
    for c in img.creds().into_iter().chain(img.thread_creds().iter()) {
        let same = own.has(&c) && c.cap_amb == 0;
        const NEEDED: u64 = (1 << 6) | (1 << 7) | (1 << 8); // SETGID, SETUID, SETPCAP
        if !same && own.cap_eff & NEEDED != NEEDED {
            die(format_args!(
                "the captured credentials (uid {}, gid {}, groups, capabilities) differ from this process's, which may not change them (CAP_SETUID, CAP_SETGID and CAP_SETPCAP): run it as the captured user, or restore with cryo restore as root",
                c.uid[1], c.gid[1]
            ));
        }
    }
    if let Some(root) = root_of(img) {
        const CAP_SYS_CHROOT: u64 = 1 << 18;
        const O_PATH: usize = 0o10_000_000;
        const O_DIRECTORY: usize = 0o200_000;
        let mut buf = [0u8; 4096];
        let fd = syscall3(SYS_OPEN, c_path(root, &mut buf), O_PATH | O_DIRECTORY, 0);
        if fd < 0 {
            die(format_args!(
                "its root directory {root} (chroot) is not a directory here (errno {})",
                -fd
            ));
        }
        syscall3(SYS_CLOSE, fd as usize, 0, 0);
        if own.cap_eff & CAP_SYS_CHROOT == 0 {
            die(format_args!(
                "it ran with its root directory at {root} (chroot), and entering it needs CAP_SYS_CHROOT"
            ));
        }
    }
    if let Some(t) = img.task() {
        if own.no_new_privs && t.no_new_privs == 0 {
            die(format_args!(
                "no_new_privs is set here and was not in the captured process, and it cannot be cleared: run it from a process without no_new_privs"
            ));
        }
    }
}

/// This thread's credentials, and whether they are the captured ones
/// (`groups`: the captured supplementary groups).
struct Now {
    uid: [u32; 4],
    gid: [u32; 4],
    same_groups: bool,
    securebits: u32,
    same: bool,
}

fn compare(c: &Creds, groups: &[u32]) -> Now {
    const MAX_GROUPS: usize = 1024;
    let mut have = [0u32; MAX_GROUPS];
    let hn = syscall3(SYS_GETGROUPS, MAX_GROUPS, have.as_mut_ptr() as usize, 0);
    let uid = ids(SYS_GETRESUID, SYS_SETFSUID);
    let gid = ids(SYS_GETRESGID, SYS_SETFSGID);
    let (eff, prm, inh) = capget();
    let securebits = syscall3(SYS_PRCTL, PR_GET_SECUREBITS, 0, 0) as u32;
    let same_groups = hn >= 0 && hn as usize == groups.len() && have[..groups.len()] == *groups;
    let mut bnd_differs = false;
    for cap in 0..64 {
        let ours = syscall3(SYS_PRCTL, PR_CAPBSET_READ, cap, 0);
        if ours < 0 {
            break;
        }
        if (ours == 1) != (c.cap_bnd & (1 << cap) != 0) {
            bnd_differs = true;
        }
    }
    // Ambient capabilities of the invoker's, which an exec keeps: the
    // program had none when it is "the same" (a review found them kept).
    const PR_CAP_AMBIENT_IS_SET: usize = 1;
    let ambient = (0..64).any(|cap| prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap) == 1);
    let same = uid == c.uid
        && gid == c.gid
        && same_groups
        && (eff, prm, inh) == (c.cap_eff, c.cap_prm, c.cap_inh)
        && !bnd_differs
        && securebits == c.securebits
        && c.cap_amb == 0
        && !ambient;
    Now {
        uid,
        gid,
        same_groups,
        securebits,
        same,
    }
}

/// Whether this process already has the captured credentials (a packed
/// restorer asks once, so that its threads need not each ask again, as
/// `cryo restore` tells the shim with `SAME_CREDS`).
pub fn creds_same(img: &Image, own: &Own) -> bool {
    let Some(c) = img.creds() else {
        return true;
    };
    own.has(&c)
        && own.cap_bnd == c.cap_bnd
        && syscall3(SYS_PRCTL, PR_GET_SECUREBITS, 0, 0) as u32 == c.securebits
        && (own.cap_amb, c.cap_amb) == (0, 0)
}

/// The captured credentials, if they differ from the shim's (cryo
/// restore checked it has the privilege to switch). Order matters:
/// bounding set and groups while privileged; keep the permitted
/// capabilities across setresuid; then the exact capability sets.
pub fn restore_creds(img: &Image, c: &Creds) {
    const MAX_GROUPS: usize = 1024;
    let mut want = [0u32; MAX_GROUPS];
    let n = img.groups().len().min(MAX_GROUPS);
    for (i, g) in img.groups().iter().take(n).enumerate() {
        want[i] = g.gid;
    }
    let now = compare(c, &want[..n]);
    if now.same {
        return;
    }
    let Now {
        uid,
        gid,
        same_groups,
        securebits,
        ..
    } = now;
    for cap in 0..64usize {
        if c.cap_bnd & (1 << cap) == 0 && syscall3(SYS_PRCTL, PR_CAPBSET_READ, cap, 0) == 1 {
            check(
                syscall3(SYS_PRCTL, PR_CAPBSET_DROP, cap, 0),
                format_args!("PR_CAPBSET_DROP({cap})"),
            );
        }
    }
    if !same_groups {
        check(
            syscall3(SYS_SETGROUPS, n, want.as_ptr() as usize, 0),
            format_args!("setgroups"),
        );
    }
    if gid != c.gid {
        let g = c.gid;
        check(
            syscall3(SYS_SETRESGID, g[0] as usize, g[1] as usize, g[2] as usize),
            format_args!("setresgid"),
        );
        syscall3(SYS_SETFSGID, g[3] as usize, 0, 0);
    }
    // KEEP_CAPS while switching uid, so the permitted set survives the
    // setresuid; cleared below if the program did not have it.
    const SECBIT_KEEP_CAPS: u32 = 1 << 4;
    if securebits != c.securebits | SECBIT_KEEP_CAPS {
        check(
            syscall3(
                SYS_PRCTL,
                PR_SET_SECUREBITS,
                (c.securebits | SECBIT_KEEP_CAPS) as usize,
                0,
            ),
            format_args!("PR_SET_SECUREBITS({:#x})", c.securebits),
        );
    }
    if uid != c.uid {
        let u = c.uid;
        check(
            syscall3(SYS_SETRESUID, u[0] as usize, u[1] as usize, u[2] as usize),
            format_args!("setresuid"),
        );
        syscall3(SYS_SETFSUID, u[3] as usize, 0, 0);
    }
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let d = [
        CapData {
            effective: lo(c.cap_eff),
            permitted: lo(c.cap_prm),
            inheritable: lo(c.cap_inh),
        },
        CapData {
            effective: hi(c.cap_eff),
            permitted: hi(c.cap_prm),
            inheritable: hi(c.cap_inh),
        },
    ];
    check(
        syscall3(
            SYS_CAPSET,
            &mut h as *mut CapHeader as usize,
            d.as_ptr() as usize,
            0,
        ),
        format_args!("capset"),
    );
    const PR_CAP_AMBIENT_RAISE: usize = 2;
    const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
    syscall6(
        SYS_PRCTL,
        PR_CAP_AMBIENT,
        PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
        0,
    );
    for cap in 0..64usize {
        if c.cap_amb & (1 << cap) != 0 {
            check(
                syscall6(
                    SYS_PRCTL,
                    PR_CAP_AMBIENT,
                    PR_CAP_AMBIENT_RAISE,
                    cap,
                    0,
                    0,
                    0,
                ),
                format_args!("ambient capability {cap}"),
            );
        }
    }
    if c.securebits & SECBIT_KEEP_CAPS == 0 {
        let r = syscall3(SYS_PRCTL, PR_SET_KEEPCAPS, 0, 0);
        if r < 0 {
            die(format_args!("PR_SET_KEEPCAPS(0): errno {}", -r));
        }
    }
}
