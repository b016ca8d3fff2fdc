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

use crate::{sys, LoadedImage, RestoreError};
use cryo_image::Image;

/// The segments this restore made (removed again if it fails before
/// its exec: see [`remove_made`]).
static MADE: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Remove the segments this restore made (it failed).
pub(crate) fn remove_made() {
    if let Ok(mut v) = MADE.lock() {
        for id in v.drain(..) {
            sys::shm_remove(id);
        }
    }
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
    Ok(())
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

/// Every segment `img` attaches, there again (see the module's comment).
pub(crate) fn ensure(loaded: &LoadedImage, img: &Image, verify: bool) -> Result<(), RestoreError> {
    let mut done: Vec<i32> = Vec::new();
    for s in img.sysv_shm().iter() {
        // (Once: another process of the tree may have made it already.)
        let made_here = MADE.lock().is_ok_and(|v| v.contains(&s.id));
        if done.contains(&s.id) || made_here {
            continue;
        }
        done.push(s.id);
        if state(&s)? {
            continue;
        }
        let was = format!(
            "segment {} (key {:#x}, {} bytes)",
            s.id, s.key as u32, s.size
        );
        // Made again with its id: the next shmget takes kernel.shm_next_id
        // (then set back to -1 by the kernel).
        let next = "/proc/sys/kernel/shm_next_id";
        std::fs::write(next, s.id.to_string()).map_err(|e| {
            err(format!(
                "{was} is gone, and making it again with its id needs {next}: {e}"
            ))
        })?;
        // (Ours to fill first; its mode as captured after.)
        let id = sys::shm_create(s.key, s.size, 0o600);
        let _ = std::fs::write(next, "-1");
        let id = id.map_err(|e| err(format!("{was} is gone; making it again: {e}")))?;
        if let Ok(mut v) = MADE.lock() {
            v.push(id);
        }
        if id != s.id {
            return Err(err(format!(
                "{was} is gone, and it was made again as {id}, not with its id"
            )));
        }
        let bytes = loaded.read_blob(&s.data, verify)?;
        sys::shm_fill(id, &bytes)
            .map_err(|e| err(format!("{was}: putting its bytes back: {e}")))?;
        sys::shm_set(id, s.uid, s.gid, s.mode)
            .map_err(|e| err(format!("{was}: setting its owner and mode: {e}")))?;
    }
    Ok(())
}
