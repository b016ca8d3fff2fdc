//! Small helpers: private directories and files, running a command for
//! its output, and dropping the page cache.

use crate::{io_err, CompareError};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) fn mkdir_private(p: &Path) -> Result<(), CompareError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err(format!("creating {}", p.display())))
}

/// Write a file through a temporary name, 0600.
pub(crate) fn write_private(p: &Path, data: &[u8]) -> Result<(), CompareError> {
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
        .and_then(|_| fs::rename(&tmp, p))
        .map_err(io_err(format!("writing {}", p.display())))
}

/// An argv from strings and paths alike.
pub(crate) fn os_args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

pub(crate) fn output_of(cmd: &mut Command) -> Result<String, String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{prog} failed ({}): {}",
            o.status,
            last_lines(&String::from_utf8_lossy(&o.stderr), 12)
        )),
        Err(e) => Err(format!("cannot run {prog}: {e}")),
    }
}

pub(crate) fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(n)..].join(" / ")
}

/// Drop the page cache (and dentries, inodes) so the next run reads its
/// files from disk.
pub(crate) fn drop_caches() -> io::Result<()> {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3")
}

/// Where the timed runs write their output: a private directory on tmpfs
/// (/dev/shm) where there is one, removed when dropped. A program's first
/// write to an empty ext4 file took 50-65 µs of a packed restore's 0.42
/// ms to its answer at stop 54 (tmpfs: 0-15 µs), a cost of where the
/// harness puts the output, the same for every method, which shrinks
/// every ratio against a slow method (docs/benchmarks.md).
pub(crate) struct Outputs {
    /// None: no tmpfs; the runs write into each workload's directory.
    tmp: Option<std::path::PathBuf>,
}

impl Outputs {
    pub(crate) fn new() -> Outputs {
        let shm = Path::new("/dev/shm");
        let on_tmpfs = nix::sys::statfs::statfs(shm)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if on_tmpfs {
            remove_stale(shm);
        }
        // (The time too: a pid namespace gives every run the same pid.)
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = on_tmpfs
            .then(|| shm.join(format!("cryo-compare.{}.{nanos}", std::process::id())))
            .filter(|p| fs::DirBuilder::new().mode(0o700).create(p).is_ok());
        Outputs { tmp }
    }

    /// The directory for one workload's run outputs (`dir` itself where
    /// there is no tmpfs).
    pub(crate) fn for_workload(
        &self,
        name: &str,
        dir: &Path,
    ) -> Result<std::path::PathBuf, CompareError> {
        match &self.tmp {
            Some(t) => {
                let p = t.join(name);
                let _ = fs::remove_dir_all(&p);
                mkdir_private(&p)?;
                Ok(p)
            }
            None => Ok(dir.to_path_buf()),
        }
    }

    /// Whether runs write to tmpfs (for the report).
    pub(crate) fn on_tmpfs(&self) -> bool {
        self.tmp.is_some()
    }

    /// Done with a workload: its outputs copied into `dir` if `keep`, then
    /// removed from tmpfs.
    pub(crate) fn finish(&self, outs: &Path, dir: &Path, keep: bool) {
        if self.tmp.is_none() || outs == dir {
            return;
        }
        if keep {
            if let Ok(rd) = fs::read_dir(outs) {
                for e in rd.flatten() {
                    let _ = fs::copy(e.path(), dir.join(e.file_name()));
                }
            }
        }
        let _ = fs::remove_dir_all(outs);
    }
}

/// Remove the output directories of runs that ended without removing
/// theirs (killed, interrupted, or a panic, which aborts): those whose
/// pid names no live process here and that nothing changed for an hour
/// (a run in another pid namespace has a pid that means nothing here).
fn remove_stale(shm: &Path) {
    let Ok(rd) = fs::read_dir(shm) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cryo-compare."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = pid > 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH);
        let old = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|a| a > std::time::Duration::from_secs(3600))
        });
        if gone && old && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            let _ = fs::remove_dir_all(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_runs_outputs_are_removed_a_live_ones_kept() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        // A pid no process has (no child of ours: another test reaps
        // every child of this process).
        let dead = (4_000_000..)
            .find(|&p| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
            .unwrap();
        let stale = shm.join(format!("cryo-compare.{dead}.1"));
        let live = shm.join(format!("cryo-compare.{}.2", std::process::id()));
        let fresh = shm.join(format!("cryo-compare.{dead}.3"));
        let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for d in [&stale, &live, &fresh] {
            fs::create_dir_all(d.join("w")).unwrap();
            fs::write(d.join("w/x.out"), "x").unwrap();
            if d != &fresh {
                fs::File::open(d).unwrap().set_modified(hours_ago).unwrap();
            }
        }
        let o = Outputs::new();
        let left = [&stale, &live, &fresh].map(|d| d.exists());
        for d in [&stale, &live, &fresh] {
            let _ = fs::remove_dir_all(d);
        }
        assert_eq!(left, [false, true, true], "stale, live, fresh");
        if let Some(t) = &o.tmp {
            assert!(t.is_dir());
        }
        let t = o.tmp.clone();
        drop(o);
        if let Some(t) = t {
            assert!(!t.exists(), "{t:?} left after drop");
        }
    }
}
