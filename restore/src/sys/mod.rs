//! The system calls restore makes that std does not: every `unsafe` of
//! this crate lives here (but for the page server's, in `lazy.rs` and
//! `uffd.rs`), each behind a small safe function that says why it is sound.
//!
//! A call that makes an fd returns an `OwnedFd`; one that uses an fd we
//! hold takes a `BorrowedFd`; one that works on fd numbers (restore puts
//! fds at given numbers, closes the ones the image does not have) takes a
//! `RawFd`, where an fd that is not open is an EBADF, never undefined
//! behaviour. Results are `io::Result`s with the errno kept, so a message
//! reads as std's would. nix where it has the call and takes what restore
//! holds; libc where it does not (fanotify, pidfds, timerfd ticks, signal
//! numbers past SIGSYS, ptrace requests with a raw signal, rlimits by
//! number...).
//!
//! One invariant: the restoring process runs one thread from start to
//! exec (restore starts none, nor does `cryo restore` before it), and so
//! does the tracer it forks. [`fork`] relies on it.

mod anon;
mod barrier;
mod fd;
mod own;
mod process;
mod shm;
mod sock;
pub mod tty;

pub use anon::*;
pub use barrier::{Barrier, Step};
pub use fd::*;
pub use own::*;
pub use process::*;
pub use shm::*;
pub use sock::*;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A C return value: negative is the failure errno says.
fn cvt<T: Copy + Default + PartialOrd>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The fd a call that makes one returned (or its failure).
fn new_fd(r: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(r)?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
