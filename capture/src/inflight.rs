//! Files in flight: fds sent with SCM_RIGHTS and still queued in a unix
//! datagram or seqpacket socket of the process. They are no fd of the
//! process, and cryo describes a file through an fd that holds it. So,
//! for the capture, the process itself peeks each such message (recvmsg
//! with MSG_PEEK, injected into it), which gives it a copy of every file
//! in flight; the copies are moved above the process's own fds, captured
//! like any fd (`Fd::in_flight`), and closed in the process again before
//! the capture ends, whatever happened. The queue is left as it was (a
//! peek takes nothing; the socket's peek offset, which it did not use, is
//! turned off again).

use crate::remote::{InjectError, Remote};
use crate::sys::sock;
use crate::tracee::Tracee;
use std::collections::HashMap;

/// The files in flight held in the process for its capture.
#[derive(Default)]
pub struct InFlight {
    /// Socket fd -> for each of its queued messages with fds, in queue
    /// order: the numbers the process holds that message's files at.
    pub by_socket: HashMap<i32, Vec<Vec<i32>>>,
    /// Every number held (closed by [`release`]).
    pub hidden: Vec<i32>,
}

impl InFlight {
    /// The socket in whose queue the file held at `fd` is.
    pub fn socket_of(&self, fd: i32) -> i32 {
        self.by_socket
            .iter()
            .find(|(_, m)| m.iter().any(|f| f.contains(&fd)))
            .map_or(-1, |(s, _)| *s)
    }
}

/// The fds of process `pid` that are unix datagram or seqpacket sockets
/// with a message carrying fds queued, each with the peek offsets of
/// those messages; and the highest fd number of the process.
fn sockets_with_fds(pid: i32) -> (Vec<(i32, Vec<usize>)>, i32) {
    let mut out = Vec::new();
    let mut top = -1;
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return (out, top);
    };
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (out, top);
    };
    let mut socks = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        top = top.max(fd);
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:["));
        if is_socket {
            socks.push(fd);
        }
    }
    socks.sort_unstable();
    for fd in socks {
        let Ok(dup) = crate::sys::pidfd_getfd(&pidfd, fd) else {
            continue;
        };
        let int = |name| sock::getsockopt_int(&dup, libc::SOL_SOCKET, name);
        let unix = int(libc::SO_DOMAIN).is_ok_and(|d| d == libc::AF_UNIX);
        let messages =
            int(libc::SO_TYPE).is_ok_and(|t| t == libc::SOCK_DGRAM || t == libc::SOCK_SEQPACKET);
        // (A socket using a peek offset is refused on its own.)
        if !unix || !messages || int(libc::SO_PEEK_OFF).unwrap_or(0) >= 0 {
            continue;
        }
        let Ok(Ok(msgs)) = sock::peek_messages(&dup, 0) else {
            continue; // refused when the socket is captured
        };
        let mut off = 0;
        let mut at = Vec::new();
        for m in &msgs {
            if m.nfds > 0 {
                at.push(off);
            }
            off += m.bytes.len();
        }
        if !at.is_empty() {
            out.push((fd, at));
        }
    }
    (out, top)
}

/// Hold the files in flight in the queues of process `pid` (its main
/// thread `t`, frozen; `vdso`: its address and bytes, for the injection).
/// A message whose files cannot be held is left out: the socket's capture
/// then refuses it by name.
pub fn hold(t: &mut Tracee, pid: i32, vdso: &(u64, Vec<u8>)) -> Result<InFlight, InjectError> {
    let mut held = InFlight::default();
    let (socks, top) = sockets_with_fds(pid);
    if socks.is_empty() {
        return Ok(held);
    }
    let pidfd = match crate::sys::pidfd_open(pid) {
        Ok(p) => p,
        Err(_) => return Ok(held),
    };
    let mut rem = Remote::new(t, vdso.0, &vdso.1)?;
    let mut next = top + 1;
    let r = (|| -> Result<(), InjectError> {
        for (fd, offsets) in socks {
            let Ok(dup) = crate::sys::pidfd_getfd(&pidfd, fd) else {
                continue;
            };
            let mut msgs = Vec::new();
            for off in offsets {
                if sock::set_peek_off(&dup, off as i32).is_err() {
                    break;
                }
                let got = rem.peek_fds(fd);
                let _ = sock::set_peek_off(&dup, -1);
                let Some(low) = got? else {
                    break;
                };
                // Above the process's own fds, out of its way.
                let mut nums = Vec::with_capacity(low.len());
                for n in low {
                    let m = rem.dup_above(n, next);
                    rem.close(n)?;
                    let m = m?;
                    held.hidden.push(m);
                    nums.push(m);
                    next = m + 1;
                }
                msgs.push(nums);
            }
            held.by_socket.insert(fd, msgs);
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
