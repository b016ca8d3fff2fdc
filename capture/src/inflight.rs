//! Files in flight: fds sent with SCM_RIGHTS and still queued in a unix
//! socket of the process. They are no fd of the
//! process, and cryo describes a file through an fd that holds it. So,
//! for the capture, the process itself peeks each such message (recvmsg
//! with MSG_PEEK, injected into it), which gives it a copy of every file
//! in flight; the copies are moved above the process's own fds, captured
//! like any fd (`Fd::in_flight`), and closed in the process again before
//! the capture goes on (`release`, on every path). The queue is left as
//! it was (a peek takes nothing; the socket's peek offset, which it did
//! not use, is turned off again).
//!
//! Closing a file in a process drops every POSIX lock the process holds
//! on that file, through any fd: a socket whose files in flight include
//! one the process holds a POSIX lock on is not held, and refused.

use crate::procinfo::OpenFd;
use crate::remote::{InjectError, Remote};
use crate::sys::sock;
use crate::tracee::Tracee;
use std::collections::HashMap;
use std::os::fd::OwnedFd;

/// The files in flight held in the process for its capture.
#[derive(Default)]
pub struct InFlight {
    /// Socket fd -> for each of its queued messages with fds, in queue
    /// order: the numbers the process holds that message's files at.
    pub by_socket: HashMap<i32, Vec<Vec<i32>>>,
    /// Socket fd -> why its files in flight were not held.
    pub not_held: HashMap<i32, String>,
    /// Every number held (closed by [`release`]).
    pub hidden: Vec<i32>,
}

impl InFlight {
    /// The numbers the files in flight of socket `fd`'s queued messages
    /// `m` are held at, one list per message with files; or why they were
    /// not all held.
    pub fn held_for<'a>(&'a self, fd: i32, m: &[sock::Message]) -> Result<&'a [Vec<i32>], &'a str> {
        let held = self.by_socket.get(&fd).map_or(&[][..], |v| v.as_slice());
        let counts: Vec<usize> = m.iter().filter(|m| m.nfds > 0).map(|m| m.nfds).collect();
        if held.len() == counts.len() && held.iter().zip(&counts).all(|(h, &n)| h.len() == n) {
            Ok(held)
        } else {
            Err(self
                .not_held
                .get(&fd)
                .map_or("which cryo could not hold for the capture", |w| w.as_str()))
        }
    }

    /// The socket in whose queue the file held at `fd` is.
    pub fn socket_of(&self, fd: i32) -> i32 {
        self.by_socket
            .iter()
            .find(|(_, m)| m.iter().any(|f| f.contains(&fd)))
            .map_or(-1, |(s, _)| *s)
    }
}

/// A unix socket of the process with messages carrying fds queued (for
/// a stream, the skbs that carry them: `sock::peek_stream`).
struct WithFds {
    fd: i32,
    /// The peek offset of each such message.
    offsets: Vec<usize>,
    /// (st_dev, st_ino) of every file in flight in it.
    files: Vec<(u64, u64)>,
}

/// The sockets among the process's `fds` with files in flight (each
/// socket once, at its lowest fd).
fn sockets_with_fds(pidfd: &OwnedFd, fds: &[OpenFd]) -> Vec<WithFds> {
    let mut out = Vec::new();
    let mut socks: Vec<(i32, &str)> = fds
        .iter()
        .filter(|f| f.target.starts_with("socket:["))
        .map(|f| (f.fd, f.target.as_str()))
        .collect();
    socks.sort_unstable();
    let mut seen = Vec::new();
    for (fd, name) in socks {
        // A socket at several fds (dup) is one queue.
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let Ok(dup) = crate::sys::pidfd_getfd(pidfd, fd) else {
            continue;
        };
        let int = |name| sock::getsockopt_int(&dup, libc::SOL_SOCKET, name);
        let unix = int(libc::SO_DOMAIN).is_ok_and(|d| d == libc::AF_UNIX);
        let ty = int(libc::SO_TYPE).unwrap_or(-1);
        let known = [libc::SOCK_DGRAM, libc::SOCK_SEQPACKET, libc::SOCK_STREAM].contains(&ty);
        // (A socket using a peek offset is refused on its own.)
        if !unix || !known || int(libc::SO_PEEK_OFF).unwrap_or(0) >= 0 {
            continue;
        }
        let ino = name
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse::<u32>()
            .unwrap_or(0);
        let msgs = if ty == libc::SOCK_STREAM {
            // Bytes queued (FIONREAD; a listener answers EINVAL), and
            // files among them: only then is the queue read and cut.
            match crate::sys::fionread(&dup) {
                Ok(n) if n > 0 && sock::stream_has_fds(&dup) => sock::peek_stream(&dup, n),
                _ => continue,
            }
        } else {
            // (A seqpacket end shut down for reading, as its peer's
            // shutdown for writing makes it, reads as empty at its end.)
            let eof_at = match sock::unix_diag(ino) {
                Ok(d) if d.shutdown & 1 != 0 && ty == libc::SOCK_SEQPACKET => {
                    Some(d.rqueue as usize)
                }
                _ => None,
            };
            sock::peek_messages(&dup, 0, eof_at)
        };
        let Ok(Ok(msgs)) = msgs else {
            continue; // refused when the socket is captured
        };
        let mut w = WithFds {
            fd,
            offsets: Vec::new(),
            files: Vec::new(),
        };
        let mut off = 0;
        for m in &msgs {
            if m.nfds > 0 {
                w.offsets.push(off);
                w.files.extend(&m.files);
            }
            off += m.bytes.len();
        }
        if !w.offsets.is_empty() {
            out.push(w);
        }
    }
    out
}

/// (st_dev, st_ino) of the files process `pid` holds POSIX locks on
/// (/proc/locks: "N: POSIX ADVISORY WRITE PID MAJ:MIN:INO START END").
fn posix_locked(pid: i32) -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // (A blocked request's line starts "N: ->".)
        let Some(k) = w.iter().position(|x| *x == "POSIX") else {
            continue;
        };
        if w.get(k + 3).and_then(|p| p.parse::<i32>().ok()) != Some(pid) {
            continue;
        }
        let Some(id) = w.get(k + 4) else { continue };
        let mut parts = id.split(':');
        let hex = |s: Option<&str>| s.and_then(|v| u64::from_str_radix(v, 16).ok());
        let (Some(maj), Some(min)) = (hex(parts.next()), hex(parts.next())) else {
            continue;
        };
        let Some(ino) = parts.next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        out.push((libc::makedev(maj as u32, min as u32), ino));
    }
    out
}

/// Hold the files in flight in the queues of process `pid` (its main
/// thread `t`, frozen; `vdso`: its address and bytes, for the injection).
/// A socket whose files cannot be held is left out, with the reason: its
/// capture then refuses it by name.
///
/// `fds`: the process's fds as read before; with files held, they must be
/// read again.
pub fn hold(
    t: &mut Tracee,
    pid: i32,
    vdso: &(u64, Vec<u8>),
    fds: &[OpenFd],
) -> Result<InFlight, InjectError> {
    let mut held = InFlight::default();
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return Ok(held);
    };
    let socks = sockets_with_fds(&pidfd, fds);
    if socks.is_empty() {
        return Ok(held);
    }
    let top = fds.iter().map(|f| f.fd).max().unwrap_or(-1);
    let locked = posix_locked(pid);
    let mut rem = Remote::new(t, vdso.0, &vdso.1)?;
    // Above the process's own fds, out of its way (and never 0-2, which
    // a restore gives the invoker's).
    let mut next = (top + 1).max(3);
    let r = (|| -> Result<(), InjectError> {
        for w in socks {
            if w.files.iter().any(|f| locked.contains(f)) {
                held.not_held.insert(
                    w.fd,
                    "a file in flight the process holds POSIX locks on (holding it for the capture would drop them)".into(),
                );
                continue;
            }
            let Ok(dup) = crate::sys::pidfd_getfd(&pidfd, w.fd) else {
                continue;
            };
            let mut msgs = Vec::new();
            let mut failed = None;
            for off in w.offsets {
                if let Err(e) = sock::set_peek_off(&dup, off as i32) {
                    failed = Some(format!("setting a peek offset: {e}"));
                    break;
                }
                let got = rem.peek_fds(w.fd);
                let _ = sock::set_peek_off(&dup, -1);
                let Some(low) = got? else {
                    failed = Some("more files in flight than fit in one peek".into());
                    break;
                };
                let mut nums = Vec::with_capacity(low.len());
                let mut close_err = None;
                for &n in &low {
                    if failed.is_none() {
                        match rem.dup_above(n, next) {
                            Ok(m) => {
                                held.hidden.push(m);
                                nums.push(m);
                                next = m + 1;
                            }
                            Err(e) => failed = Some(e.to_string()),
                        }
                    }
                    // Every number the peek made is closed, whatever failed.
                    if let Err(e) = rem.close(n) {
                        close_err = Some(e);
                    }
                }
                if let Some(e) = close_err {
                    return Err(e);
                }
                if failed.is_some() {
                    break;
                }
                msgs.push(nums);
            }
            match failed {
                // (What was held of it stays in `hidden`: closed by release.)
                Some(why) => {
                    held.not_held.insert(w.fd, why);
                }
                None => {
                    held.by_socket.insert(w.fd, msgs);
                }
            }
        }
        Ok(())
    })();
    if r.is_err() {
        for &n in &held.hidden {
            let _ = rem.close(n);
        }
    }
    let fin = rem.finish();
    r?;
    fin?;
    Ok(held)
}

/// Close in the process every file [`hold`] gave it.
pub fn release(t: &mut Tracee, vdso: &(u64, Vec<u8>), held: &InFlight) -> Result<(), InjectError> {
    if held.hidden.is_empty() {
        return Ok(());
    }
    let mut rem = Remote::new(t, vdso.0, &vdso.1)?;
    let mut r = Ok(());
    for &n in &held.hidden {
        if let Err(e) = rem.close(n) {
            r = Err(e);
        }
    }
    let fin = rem.finish();
    r?;
    fin
}
