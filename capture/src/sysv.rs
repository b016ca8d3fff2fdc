//! System V shared memory (format 8.0): each attach (shmat) of a segment
//! the process has, with what restore needs to attach it again (the id,
//! key, size, mode and owner from /proc/sysvipc/shm) and, to make it
//! again if it is gone by then, its bytes (read through the process's
//! /proc/PID/map_files entry, the segment's shmem file: nothing touches
//! the process or the segment's attach count and times). And System V
//! semaphore undo adjustments, which no restore can read: refused.

use crate::obstacles::Obstacles;
use crate::procinfo::Mapping;
use crate::stored::{BlobOwner, Limits, PendingBlob, StoredFiles};
use crate::vma::Classified;
use cryo_image::fds::{sysv_flags, SysvShm};
use cryo_image::write::ImageBuilder;
use cryo_image::{vma_kind, PAGE_SIZE};
use std::io::Read;

/// One line of /proc/sysvipc/shm.
struct Segment {
    key: i32,
    mode: u32,
    size: u64,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
}

/// The segment with id `id`, as /proc/sysvipc/shm shows it ("key shmid
/// perms size cpid lpid nattch uid gid cuid cgid ...").
fn segment(id: u64) -> Option<Segment> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    text.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.get(1)?.parse::<u64>().ok()? != id {
            return None;
        }
        Some(Segment {
            key: w[0].parse().ok()?,
            mode: u32::from_str_radix(w[2], 8).ok()?,
            size: w.get(3)?.parse().ok()?,
            uid: w.get(7)?.parse().ok()?,
            gid: w.get(8)?.parse().ok()?,
            cuid: w.get(9)?.parse().ok()?,
            cgid: w.get(10)?.parse().ok()?,
        })
    })
}

/// Record every attach among the process's `classified` mappings (kind
/// `vma_kind::SYSV`), or say why one cannot be restored.
pub fn attaches(
    pid: i32,
    classified: &[Classified],
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    stored_before: &mut Vec<i32>,
    limits: &Limits,
    obs: &mut Obstacles,
) {
    // Attaches recorded or refused (by their start).
    let mut seen: Vec<u64> = Vec::new();
    for (i, c) in classified.iter().enumerate() {
        let m: &Mapping = c.m;
        if c.kind != vma_kind::SYSV {
            continue;
        }
        if m.offset != 0 {
            // Part of an attach whose start is mapped: handled there.
            // Else its first pages were unmapped.
            let head = m.start.saturating_sub(m.offset);
            if !seen.contains(&head)
                && !classified[..i]
                    .iter()
                    .any(|d| d.m.start == head && d.kind == vma_kind::SYSV && d.m.inode == m.inode)
            {
                seen.push(head);
                obs.push(format!(
                    "mapping {:x}-{:x} {} (System V shared memory): the start of its attach was unmapped; cryo attaches whole segments",
                    m.start, m.end, m.path
                ));
            }
            continue;
        }
        seen.push(m.start);
        let range = format!("{:x}-{:x}", m.start, m.end);
        let what = format!("mapping {range} {} (System V shared memory)", m.path);
        let Some(seg) = segment(m.inode) else {
            obs.push(format!(
                "{what}: its segment {} is not in /proc/sysvipc/shm",
                m.inode
            ));
            continue;
        };
        let len = seg.size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let end = m.start + len;
        // The attach's mappings, from its start: all of it, each at its
        // offset (mprotect may have split it; a part unmapped would not
        // come back with one shmat).
        let mut at = m.start;
        for d in classified[i..]
            .iter()
            .map(|d| d.m)
            .take_while(|d| d.start < end)
        {
            if d.start != at || d.inode != m.inode || d.offset != d.start - m.start {
                break;
            }
            at = d.end;
        }
        if at != end {
            obs.push(format!(
                "{what}: only part of the segment is mapped there (munmap'ed or remapped); cryo attaches whole segments"
            ));
            continue;
        }
        // Its bytes stored already, by this process (attached twice) or
        // by one of the tree inspected before: said so, not stored again
        // (a sweep of stop 50: a 64 MiB segment four processes attached
        // made a 265 MiB pages.img; PostgreSQL's 300 MB of shared
        // buffers, 2 GB).
        let elsewhere = stored_before.contains(&(m.inode as i32));
        if seg.size > limits.max_file_data && !elsewhere {
            obs.push(format!(
                "{what}: the segment is {} bytes, more than --max-file-data ({})",
                seg.size, limits.max_file_data
            ));
            continue;
        }
        let mut data = Vec::new();
        if !elsewhere {
            data.reserve(seg.size as usize);
            let read = std::fs::File::open(format!("/proc/{pid}/map_files/{range}"))
                .and_then(|f| f.take(seg.size).read_to_end(&mut data));
            match read {
                Ok(n) if n as u64 == seg.size => {}
                Ok(n) => {
                    obs.push(format!("{what}: read {n} of its {} bytes", seg.size));
                    continue;
                }
                Err(e) => {
                    obs.push(format!("{what}: reading its bytes: {e}"));
                    continue;
                }
            }
            stored_before.push(m.inode as i32);
        }
        let index = b.sysv_shm.len();
        b.sysv_shm.push(SysvShm {
            start: m.start,
            size: seg.size,
            id: m.inode as i32,
            key: seg.key,
            mode: seg.mode & 0o777,
            uid: seg.uid,
            gid: seg.gid,
            // (SHM_RDONLY leaves the attach without VM_MAYWRITE; SHM_DEST:
            // removed, alive while attached.)
            flags: if m.has_flag("mw") {
                0
            } else {
                sysv_flags::RDONLY
            } | if seg.mode & 0o1000 != 0 {
                sysv_flags::REMOVED
            } else {
                0
            } | if elsewhere {
                sysv_flags::BYTES_ELSEWHERE
            } else {
                0
            },
            data: Default::default(),
            cuid: seg.cuid,
            cgid: seg.cgid,
        });
        if !elsewhere {
            stored.blobs.push(PendingBlob {
                to: BlobOwner::Sysv(index),
                bytes: data,
            });
        }
    }
}

/// A process that has used a System V semaphore with SEM_UNDO has an undo
/// list: adjustments the kernel applies to the semaphores when it ends (a
/// lock held is released). Nothing shows the list or its values, and a
/// restored process would have none: the semaphores it holds would stay
/// held after it ends. Refused when it may have one: kcmp(KCMP_SYSVSEM)
/// against a process with none tells whether it has a list, and a list
/// holds adjustments only for a set a semop changed since the list was
/// made (removing a set drops them). Every threaded process has a list
/// (pthread_create's CLONE_SYSVSEM makes one to share), empty or not, so
/// what tells is the sets: one whose last semop (sem_otime) is older than
/// the process cannot be in its list, and neither can one never operated
/// on. A list shared with its parent (clone with CLONE_SYSVSEM but not a
/// thread) may be older than the process: then every set operated on
/// counts.
pub fn semaphore_undo(pid: i32, obs: &mut Obstacles) {
    const KCMP_SYSVSEM: libc::c_long = 6;
    // "key semid perms nsems uid gid cuid cgid otime ctime"
    let sets: Vec<(String, u64)> = ipc_table("sem")
        .into_iter()
        .filter_map(|w| Some((w.get(1)?.clone(), w.get(8)?.parse().ok()?)))
        .collect();
    if sets.is_empty() {
        return;
    }
    let has_list = match crate::sys::Idle::start() {
        Ok(none) => !matches!(crate::sys::kcmp(pid, none.pid(), KCMP_SYSVSEM), Ok(true)),
        Err(_) => true,
    };
    if !has_list {
        return;
    }
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.get(s.rfind(')')? + 2..)?
                .split(' ')
                .nth(1)?
                .parse::<i32>()
                .ok()
        })
        .unwrap_or(0);
    let shared_with_parent =
        ppid > 0 && matches!(crate::sys::kcmp(pid, ppid, KCMP_SYSVSEM), Ok(true));
    // (Seconds since the epoch, rounded down, as sem_otime is: a set
    // operated on in the second the process started counts. The start is
    // read against the clock now: a clock set forward since the process's
    // last semop would hide that set, the one case this check gets wrong.)
    let since = if shared_with_parent {
        0
    } else {
        started_at(pid).unwrap_or(0)
    };
    let touched: Vec<String> = sets
        .into_iter()
        .filter(|(_, otime)| *otime != 0 && *otime >= since)
        .map(|(id, _)| id)
        .collect();
    if !touched.is_empty() {
        obs.push(format!(
            "it may hold System V semaphore undo adjustments (semop with SEM_UNDO; semaphore sets operated on since it started, by id: {}): \
             cryo cannot read them, and without them its semaphores would not be released when it ends",
            touched.join(", ")
        ));
    }
}

/// When process `pid` started, in seconds since the epoch (rounded down,
/// and 50 ms earlier still for the clocks' own steps). /proc/stat's
/// btime is rounded to the second, and adding the start's ticks to it was
/// up to two seconds early (the test met it, one run in two); the boot
/// is the clock now less CLOCK_BOOTTIME, which the start's ticks count.
fn started_at(pid: i32) -> Option<u64> {
    let ticks = cryo_image::fds::proc_start_time(pid)?;
    let mut up = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, ours.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut up) } != 0 {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let boot = now - (up.tv_sec as f64 + up.tv_nsec as f64 * 1e-9);
    // SAFETY: sysconf takes an integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let start = boot + ticks as f64 / hz - 0.05;
    (start > 0.0).then_some(start as u64)
}

/// Whose System V objects a process may use: its effective ids and
/// groups, and whether it has CAP_IPC_OWNER (every object).
pub struct IpcUser {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
}

impl IpcUser {
    pub fn of(st: &crate::task::StatusText) -> IpcUser {
        let second = |key| st.nums::<u32>(key).get(1).copied().unwrap_or(u32::MAX);
        IpcUser {
            euid: second("Uid"),
            egid: second("Gid"),
            groups: st.nums("Groups"),
        }
    }
    /// Whether the process may read or alter an object with these owners
    /// and mode by its permission bits (the kernel's ipcperms, but for
    /// CAP_IPC_OWNER: with it a root process could use every object of
    /// the namespace, other users' included, and its image would record,
    /// and its restore make again, each of them; programs use the objects
    /// their ids and the bits give them).
    fn may_use(&self, [uid, gid, cuid, cgid]: [u32; 4], mode: u32) -> bool {
        let in_group = |g| self.egid == g || self.groups.contains(&g);
        let bits = if self.euid == uid || self.euid == cuid {
            mode >> 6
        } else if in_group(gid) || in_group(cgid) {
            mode >> 3
        } else {
            mode
        };
        bits & 0o6 != 0
    }
}

/// The lines of /proc/sysvipc/`what` after its header, split in words.
fn ipc_table(what: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(format!("/proc/sysvipc/{what}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// A message: its type and bytes.
type Message = (i64, Vec<u8>);

/// Every System V semaphore set and message queue the process may use
/// and made or used, with their values and messages (see
/// `cryo_image::fds::SysvSem`): the kernel does not say which of them it
/// uses, only their ids are in its memory, and a restore after one is
/// gone would find an id that names nothing (semop fails with EINVAL).
/// Made or used: made (or changed, IPC_SET) since the process started,
/// last operated on by it (a semaphore's GETPID, a queue's last msgsnd or
/// msgrcv), or waited on by one of its threads now (`waits`: each
/// thread's system call and first argument). Until stop 49 every one it
/// could use was recorded, and a restore of any program made again a
/// queue another program had removed since, with the messages it had
/// already taken.
pub fn sets_and_queues(
    pid: i32,
    waits: &[(i64, i32)],
    who: &IpcUser,
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    limits: &Limits,
    obs: &mut Obstacles,
) {
    let num = |w: &[String], i: usize| w.get(i).and_then(|v| v.parse::<i64>().ok());
    let oct = |w: &[String], i: usize| w.get(i).and_then(|v| u32::from_str_radix(v, 8).ok());
    // (Seconds since the epoch, rounded down, as the tables' times are.)
    let since = started_at(pid).unwrap_or(0) as i64;
    let made_since = |w: &[String], i: usize| num(w, i).is_some_and(|t| t >= since);
    // "key semid perms nsems uid gid cuid cgid otime ctime"
    for w in ipc_table("sem") {
        let (
            Some(key),
            Some(id),
            Some(mode),
            Some(nsems),
            Some(uid),
            Some(gid),
            Some(cuid),
            Some(cgid),
        ) = (
            num(&w, 0),
            num(&w, 1),
            oct(&w, 2),
            num(&w, 3),
            num(&w, 4),
            num(&w, 5),
            num(&w, 6),
            num(&w, 7),
        )
        else {
            continue;
        };
        let (uid, gid) = (uid as u32, gid as u32);
        if !who.may_use([uid, gid, cuid as u32, cgid as u32], mode) {
            continue;
        }
        let used = made_since(&w, 9)
            || waits.iter().any(|&(nr, arg)| {
                matches!(nr, libc::SYS_semop | libc::SYS_semtimedop) && arg as i64 == id
            })
            || crate::sys::ipc::sem_pids(id as i32, nsems as u32).is_ok_and(|p| p.contains(&pid));
        if !used {
            continue;
        }
        let what = format!("System V semaphore set {id} (key {:#x})", key as u32);
        let values = match crate::sys::ipc::sem_values(id as i32, nsems as u32) {
            Ok(v) => v,
            // (Removed since the table was read.)
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => continue,
            Err(e) => {
                obs.push(format!("{what}: reading its values: {e}"));
                continue;
            }
        };
        let index = b.sysv_sem.len();
        b.sysv_sem.push(cryo_image::fds::SysvSem {
            id: id as i32,
            key: key as i32,
            mode: mode & 0o777,
            uid,
            gid,
            cuid: cuid as u32,
            cgid: cgid as u32,
            nsems: nsems as u32,
            values: Default::default(),
        });
        stored.blobs.push(PendingBlob {
            to: BlobOwner::Sem(index),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    let many = |n: usize, what: &str| {
        format!(
            "it made or used {n} System V {what}, more than cryo records ({})",
            cryo_image::MAX_SYSV_OBJECTS
        )
    };
    if b.sysv_sem.len() > cryo_image::MAX_SYSV_OBJECTS {
        obs.push(many(b.sysv_sem.len(), "semaphore sets"));
    }
    // "key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime"
    for w in ipc_table("msg") {
        let (
            Some(key),
            Some(id),
            Some(mode),
            Some(cbytes),
            Some(uid),
            Some(gid),
            Some(cuid),
            Some(cgid),
        ) = (
            num(&w, 0),
            num(&w, 1),
            oct(&w, 2),
            num(&w, 3),
            num(&w, 7),
            num(&w, 8),
            num(&w, 9),
            num(&w, 10),
        )
        else {
            continue;
        };
        let (uid, gid) = (uid as u32, gid as u32);
        if !who.may_use([uid, gid, cuid as u32, cgid as u32], mode) {
            continue;
        }
        // (lspid, lrpid: the last msgsnd's and msgrcv's.)
        let used = made_since(&w, 13)
            || num(&w, 5) == Some(pid as i64)
            || num(&w, 6) == Some(pid as i64)
            || waits.iter().any(|&(nr, arg)| {
                matches!(nr, libc::SYS_msgrcv | libc::SYS_msgsnd) && arg as i64 == id
            });
        if !used {
            continue;
        }
        let id = id as i32;
        let what = format!("System V message queue {id} (key {:#x})", key as u32);
        if cbytes as u64 > limits.max_file_data {
            obs.push(format!(
                "{what}: its messages are {cbytes} bytes, more than --max-file-data ({})",
                limits.max_file_data
            ));
            continue;
        }
        // Read whole: the same queue before and after (a message taken
        // or sent meanwhile shifts the indices MSG_COPY reads by); a few
        // tries, then refused.
        let read = || -> std::io::Result<(u64, Vec<Message>)> {
            // A message is no longer than the bytes the queue holds, and
            // MSG_COPY copies at most kernel.msgmax (a longer message,
            // sent before msgmax was lowered, fails).
            let msgmax: usize = std::fs::read_to_string("/proc/sys/kernel/msgmax")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(8192);
            for _ in 0..5 {
                let before = crate::sys::ipc::msq_stat(id)?;
                let max = (before.cbytes.max(1) as usize).min(msgmax.max(1));
                let mut messages = Vec::new();
                while let Some(m) = crate::sys::ipc::msg_copy(id, messages.len(), max)? {
                    messages.push(m);
                }
                let after = crate::sys::ipc::msq_stat(id)?;
                if before == after && messages.len() as u64 == after.qnum {
                    return Ok((after.qbytes, messages));
                }
            }
            Err(std::io::Error::other("it kept changing while it was read"))
        };
        let (qbytes, messages) = match read() {
            Ok(r) => r,
            // (Removed since the table was read; EINVAL is also a message
            // longer than kernel.msgmax now, or one more than the queue
            // held when the table was read: the queue is still there.)
            Err(e) if e.raw_os_error() == Some(libc::EIDRM) => continue,
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && crate::sys::ipc::msq_stat(id).is_err() =>
            {
                continue
            }
            Err(e) => {
                obs.push(format!(
                    "{what}: reading its messages (MSG_COPY, at most kernel.msgmax bytes each; a queue changing meanwhile): {e}"
                ));
                continue;
            }
        };
        let index = b.sysv_msq.len();
        b.sysv_msq.push(cryo_image::fds::SysvMsq {
            id,
            key: key as i32,
            mode: mode & 0o777,
            uid,
            gid,
            cuid: cuid as u32,
            cgid: cgid as u32,
            count: messages.len() as u32,
            qbytes,
            messages: Default::default(),
        });
        stored.blobs.push(PendingBlob {
            to: BlobOwner::Msq(index),
            bytes: cryo_image::fds::sysv_messages_blob(
                messages.iter().map(|(k, m)| (*k, m.as_slice())),
            ),
        });
    }
    if b.sysv_msq.len() > cryo_image::MAX_SYSV_OBJECTS {
        obs.push(many(b.sysv_msq.len(), "message queues"));
    }
}
