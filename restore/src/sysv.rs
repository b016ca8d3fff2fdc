//! System V shared memory (format 8.0): before anything else is made,
//! each segment the image attaches must be there again, for the shim to
//! attach it (shmat at the captured address). A segment still there,
//! with the same key and size, is the program's own, as a shared file
//! is: attached as it is now (restores follow a `capture --kill`, and the
//! segment outlives the killed original). A segment gone is made again:
//! the same id (kernel.shm_next_id: programs keep the id, PostgreSQL in
//! its memory and in postmaster.pid), key, size, mode and owner, with the
//! bytes it had at capture. A segment made here is removed again if the
//! restore fails before the shim runs ([`remove_made`]). `prepare` only
//! checks ([`check`]); the exec makes them ([`ensure`]), once for a tree.
//!
//! A segment removed while attached (IPC_RMID: SHM_DEST, its key made
//! private) belongs to the tree alone: it is always made again (its id
//! must be free: the captured process, or another restore of it, still
//! running has it), and each shim marks it removed again once attached.
//! Were a shim to fail between its exec and that, the segment would stay
//! (`ipcs -m` shows it, with no process attached).
//!
//! Semaphore sets and message queues (format 11.6) the same way, but for
//! all those the process could use (the kernel does not say which it
//! uses): one still there with the same key (and size, for a set) is left
//! as it is, shared; one gone is made again with its id, key, mode,
//! owner, and the values or messages it had at capture.

use crate::{sys, LoadedImage, RestoreError};
use cryo_image::Image;
use sys::Ipc;

/// The objects this restore made (removed again if it fails before
/// its exec: see [`remove_made`]).
static MADE: std::sync::Mutex<Vec<(Ipc, i32)>> = std::sync::Mutex::new(Vec::new());

/// Remove the objects this restore made (it failed).
pub(crate) fn remove_made() {
    if let Ok(mut v) = MADE.lock() {
        for (kind, id) in v.drain(..) {
            sys::ipc_remove(kind, id);
        }
    }
}

fn made(kind: Ipc, id: i32) -> bool {
    MADE.lock().is_ok_and(|v| v.contains(&(kind, id)))
}

/// Make an object of `kind` gone since the capture again with its id
/// `id` (`make` makes one with the next id, kernel.*_next_id, which the
/// kernel sets back to -1), and set its owner and mode. `was` names it.
/// Restores running at once (clones of one image) take turns: each holds
/// an flock on the next-id file while it sets it and makes the object,
/// and one that finds the object made meanwhile (`there`) shares it.
fn make_again(
    kind: Ipc,
    id: i32,
    (uid, gid, mode): (u32, u32, u32),
    was: &str,
    there: impl Fn() -> Result<bool, RestoreError>,
    make: impl FnOnce() -> std::io::Result<i32>,
) -> Result<(), RestoreError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let next = match kind {
        Ipc::Shm => "/proc/sys/kernel/shm_next_id",
        Ipc::Sem => "/proc/sys/kernel/sem_next_id",
        Ipc::Msq => "/proc/sys/kernel/msg_next_id",
    };
    let needs = |e: std::io::Error| {
        err(format!(
            "{was} is gone, and making it again with its id needs {next}: {e}"
        ))
    };
    let mut knob = std::fs::OpenOptions::new()
        .write(true)
        .open(next)
        .map_err(needs)?;
    // (Released when `knob` is closed.)
    sys::flock(knob.as_raw_fd(), libc::LOCK_EX).map_err(needs)?;
    if there()? {
        return Ok(());
    }
    knob.write_all(id.to_string().as_bytes()).map_err(needs)?;
    let made = make();
    let _ = std::fs::write(next, "-1");
    let new = made.map_err(|e| err(format!("{was} is gone; making it again: {e}")))?;
    if let Ok(mut v) = MADE.lock() {
        v.push((kind, new));
    }
    if new != id {
        return Err(err(format!(
            "{was} is gone, and it was made again as {new}, not with its id"
        )));
    }
    sys::ipc_set_owner(kind, id, uid, gid, mode)
        .map_err(|e| err(format!("{was}: setting its owner and mode: {e}")))
}

fn err(s: String) -> RestoreError {
    RestoreError::Sysv(s)
}

/// What [`ensure`] will find for each segment `img` attaches: there, or
/// gone and free to be made again (its id and key unused); else the
/// refusal. Changes nothing.
pub(crate) fn check(img: &Image) -> Result<(), RestoreError> {
    for s in img.sysv_shm().iter() {
        state(&s)?;
    }
    for s in img.sysv_sem().iter() {
        sem_state(&s)?;
    }
    for q in img.sysv_msq().iter() {
        msq_state(&q)?;
    }
    Ok(())
}

/// The System V objects of `img` that are gone and that a restore would
/// make again, named (for `--dry-run`); changes nothing. (An image whose
/// objects cannot be restored is refused before this is asked.)
pub fn to_make_again(img: &Image) -> Vec<String> {
    let mut out = Vec::new();
    for s in img.sysv_shm().iter() {
        let removed = s.flags & cryo_image::fds::sysv_flags::REMOVED != 0;
        if (removed || state(&s).is_ok_and(|there| !there))
            && !out
                .iter()
                .any(|o: &String| o.starts_with(&format!("segment {} ", s.id)))
        {
            out.push(format!(
                "segment {} (key {:#x}, {} bytes){}",
                s.id,
                s.key as u32,
                s.size,
                if removed {
                    ", removed while attached"
                } else {
                    ""
                }
            ));
        }
    }
    for s in img.sysv_sem().iter() {
        if sem_state(&s).is_ok_and(|there| !there) {
            out.push(sem_name(&s));
        }
    }
    for q in img.sysv_msq().iter() {
        if msq_state(&q).is_ok_and(|there| !there) {
            out.push(format!("{} with {} message(s)", msq_name(&q), q.count));
        }
    }
    out
}

/// An object made again is made by the restorer (root: creator 0:0), and
/// IPC_SET cannot change its creator; a process that used it as its
/// creator (cuid, cgid), not its owner, could not any more. Refused then.
fn creator_kept(
    was: &str,
    (uid, gid): (u32, u32),
    (cuid, cgid): (u32, u32),
) -> Result<(), RestoreError> {
    if (cuid, cgid) == (0, 0) || (cuid, cgid) == (uid, gid) {
        return Ok(());
    }
    Err(err(format!(
        "{was} is gone, and its creator ({cuid}:{cgid}) was not its owner ({uid}:{gid}): made again by cryo restore, its creator would be root, and a process that used it as its creator could not"
    )))
}

fn sem_name(s: &cryo_image::fds::SysvSem) -> String {
    format!(
        "semaphore set {} (key {:#x}, {} semaphores)",
        s.id, s.key as u32, s.nsems
    )
}

fn msq_name(q: &cryo_image::fds::SysvMsq) -> String {
    format!("message queue {} (key {:#x})", q.id, q.key as u32)
}

/// Whether set `s` is there as captured (true) or gone, its id and key
/// free (false).
fn sem_state(s: &cryo_image::fds::SysvSem) -> Result<bool, RestoreError> {
    let was = sem_name(s);
    match sys::sem_stat(s.id).map_err(|e| err(format!("{was}: IPC_STAT: {e}")))? {
        Some((key, n)) if key == s.key && n == s.nsems => return Ok(true),
        Some((key, n)) => {
            return Err(err(format!(
                "{was}: that id is now another set (key {:#x}, {n} semaphores); remove it or restore elsewhere",
                key as u32
            )))
        }
        None => {}
    }
    if s.key != 0 {
        if let Some(other) = sys::sem_find(s.key).map_err(|e| err(format!("{was}: {e}")))? {
            return Err(err(format!(
                "{was}: its key now names set {other}; remove it or restore elsewhere"
            )));
        }
    }
    Ok(false)
}

/// Whether queue `q` is there as captured (true) or gone, its id and key
/// free (false).
fn msq_state(q: &cryo_image::fds::SysvMsq) -> Result<bool, RestoreError> {
    let was = msq_name(q);
    match sys::msq_stat(q.id).map_err(|e| err(format!("{was}: IPC_STAT: {e}")))? {
        Some(key) if key == q.key => return Ok(true),
        Some(key) => {
            return Err(err(format!(
                "{was}: that id is now another queue (key {:#x}); remove it or restore elsewhere",
                key as u32
            )))
        }
        None => {}
    }
    if q.key != 0 {
        if let Some(other) = sys::msq_find(q.key).map_err(|e| err(format!("{was}: {e}")))? {
            return Err(err(format!(
                "{was}: its key now names queue {other}; remove it or restore elsewhere"
            )));
        }
    }
    Ok(false)
}

/// Whether segment `s` is there as captured (true) or gone, its id and
/// key free (false).
fn state(s: &cryo_image::fds::SysvShm) -> Result<bool, RestoreError> {
    let was = format!(
        "segment {} (key {:#x}, {} bytes)",
        s.id, s.key as u32, s.size
    );
    let removed = s.flags & cryo_image::fds::sysv_flags::REMOVED != 0;
    match sys::shm_stat(s.id).map_err(|e| err(format!("{was}: IPC_STAT: {e}")))? {
        // Removed while attached: the tree's own, never another's.
        Some(_) if removed => {
            return Err(err(format!(
                "{was} was removed while attached, the tree's own, and that id is taken (by the captured process, or a restore of it, still running?); end it first"
            )))
        }
        Some(now) if now.key == s.key && now.size == s.size && now.mode & 0o1000 == 0 => {
            return Ok(true)
        }
        Some(now) => {
            return Err(err(format!(
                "{was}: that id is now another segment (key {:#x}, {} bytes{}); remove it or restore elsewhere",
                now.key as u32,
                now.size,
                if now.mode & 0o1000 != 0 { ", removed and still attached" } else { "" }
            )))
        }
        None => {}
    }
    if s.key != 0 {
        if let Some(other) = sys::shm_find(s.key).map_err(|e| err(format!("{was}: {e}")))? {
            return Err(err(format!(
                "{was}: its key now names segment {other}; remove it or restore elsewhere"
            )));
        }
    }
    Ok(false)
}

/// Every segment `img` attaches, and every semaphore set and message
/// queue it records, there again (see the module's comment).
pub(crate) fn ensure(loaded: &LoadedImage, img: &Image, verify: bool) -> Result<(), RestoreError> {
    for s in img.sysv_shm().iter() {
        // (Once: another process of the tree may have made it already.)
        if made(Ipc::Shm, s.id) || state(&s)? {
            continue;
        }
        let was = format!(
            "segment {} (key {:#x}, {} bytes)",
            s.id, s.key as u32, s.size
        );
        if s.flags & cryo_image::fds::sysv_flags::BYTES_ELSEWHERE != 0 {
            // (Its bytes are with an attach made again before this one:
            // the tree's processes are made in capture order.)
            return Err(err(format!(
                "{was} is gone, and its bytes are stored with an attach of it that was not made again first (a corrupt image?)"
            )));
        }
        creator_kept(&was, (s.uid, s.gid), (s.cuid, s.cgid))?;
        let bytes = loaded.read_blob(&s.data, verify)?;
        // (Ours to fill first; its mode as captured after.)
        make_again(
            Ipc::Shm,
            s.id,
            (s.uid, s.gid, s.mode),
            &was,
            || state(&s),
            || {
                let id = sys::shm_create(s.key, s.size, 0o600)?;
                if id == s.id {
                    if let Err(e) = sys::shm_fill(id, &bytes) {
                        sys::shm_remove(id);
                        return Err(e);
                    }
                }
                Ok(id)
            },
        )?;
    }
    for s in img.sysv_sem().iter() {
        if made(Ipc::Sem, s.id) || sem_state(&s)? {
            continue;
        }
        let was = sem_name(&s);
        creator_kept(&was, (s.uid, s.gid), (s.cuid, s.cgid))?;
        let values: Vec<u16> = loaded
            .read_blob(&s.values, verify)?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        make_again(
            Ipc::Sem,
            s.id,
            (s.uid, s.gid, s.mode),
            &was,
            || sem_state(&s),
            || sys::sem_create(s.key, &values),
        )?;
    }
    for q in img.sysv_msq().iter() {
        if made(Ipc::Msq, q.id) || msq_state(&q)? {
            continue;
        }
        let was = msq_name(&q);
        creator_kept(&was, (q.uid, q.gid), (q.cuid, q.cgid))?;
        let blob = loaded.read_blob(&q.messages, verify)?;
        let messages = cryo_image::fds::sysv_messages(&blob, q.count)
            .ok_or_else(|| err(format!("{was}: its messages in the image are corrupt")))?;
        make_again(
            Ipc::Msq,
            q.id,
            (q.uid, q.gid, q.mode),
            &was,
            || msq_state(&q),
            || sys::msq_create(q.key, q.qbytes, &messages),
        )?;
    }
    Ok(())
}
