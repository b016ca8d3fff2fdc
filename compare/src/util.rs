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
