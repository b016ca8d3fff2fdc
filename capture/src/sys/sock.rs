//! Socket queries on our own duplicate of a target's socket (pidfd_getfd):
//! options, addresses, a non-consuming peek at queued bytes, and the
//! kernel's unix socket diagnostics (sock_diag over netlink) for what no
//! socket call tells: the peer's inode, queue lengths, listen backlog,
//! shutdown state.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// getsockopt into `buf`; the length the kernel filled in.
pub fn getsockopt(fd: &impl AsRawFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `buf`, which we own,
    // and the length back to `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    } as libc::c_long)?;
    Ok((len as usize).min(buf.len()))
}

/// An int socket option.
pub fn getsockopt_int(fd: &impl AsRawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut b = [0u8; 4];
    getsockopt(fd, level, name, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

fn name_of(
    fd: &impl AsRawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `f` is getsockname or getpeername: the kernel writes at most
    // `len` bytes of a sockaddr to `buf`, which we own.
    cvt(unsafe { f(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut len) } as libc::c_long)?;
    Ok(buf[..(len as usize).min(128)].to_vec())
}

/// getsockname: the socket's own address.
pub fn sockname(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    name_of(fd, libc::getsockname)
}

/// getpeername: the address it is connected to (ENOTCONN if none).
pub fn peername(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    name_of(fd, libc::getpeername)
}

/// What a peek at a socket's queue found.
pub struct Peeked {
    pub bytes: Vec<u8>,
    /// File descriptors were queued with the bytes (SCM_RIGHTS); the
    /// copies the peek gave us are closed again.
    pub fds: bool,
    /// Other control data (credentials) came with the bytes.
    pub other_control: bool,
}

/// recvmsg(MSG_PEEK | MSG_DONTWAIT) of up to `len` bytes: the bytes stay
/// queued for their reader.
pub fn peek(fd: &impl AsRawFd, len: usize) -> io::Result<Peeked> {
    let mut buf = vec![0u8; len.max(1)];
    let mut ctrl = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctrl);
    // SAFETY: the kernel writes into `buf` and `ctrl` through `msg`, all
    // ours and alive for the call, within the lengths given.
    let n = cvt(unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    } as libc::c_long);
    let n = match n {
        Ok(n) => n as usize,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let (mut fds, mut other) = (msg.msg_flags & libc::MSG_CTRUNC != 0, false);
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel
    // filled, within msg_controllen; SCM_RIGHTS data is an array of ints
    // (fds now ours), which we close.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                fds = true;
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..k {
                    libc::close(data.add(i).read_unaligned());
                }
            } else {
                other = true;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    buf.truncate(n);
    Ok(Peeked {
        bytes: buf,
        fds,
        other_control: other,
    })
}

/// What unix_diag says about one unix socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixDiag {
    /// TCP_* state numbers (LISTEN 10, ESTABLISHED 1, CLOSE 7).
    pub state: u8,
    /// Inode of the socket it is connected to (0: none).
    pub peer: u32,
    /// Listening: connections waiting / the backlog; else bytes queued to
    /// read / bytes sent and not yet read by the peer.
    pub rqueue: u32,
    pub wqueue: u32,
    /// RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2.
    pub shutdown: u8,
}

/// unix_diag for the unix socket with inode `ino` (SOCK_DIAG_BY_FAMILY,
/// exact lookup by inode).
pub fn unix_diag(ino: u32) -> io::Result<UnixDiag> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UDIAG_SHOW_RQLEN: u32 = 16;
    // SAFETY: socket(2) takes integers and returns a new fd we own.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    } as libc::c_long)?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    let nl = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&(UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: send reads `req`, ours, within its length.
    cvt(unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } as libc::c_long)?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: recv writes at most buf.len() bytes into `buf`, ours.
    let n = cvt(
        unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
            as libc::c_long,
    )? as usize;
    parse_unix_diag(&buf[..n])
}

const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

fn parse_unix_diag(b: &[u8]) -> io::Result<UnixDiag> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let bad = || io::Error::other("short unix_diag reply");
    let len = u32_at(0).ok_or_else(bad)? as usize;
    let kind = u16_at(4).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(16).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let msg = b.get(..len.min(b.len())).ok_or_else(bad)?;
    // unix_diag_msg: family, type, state, pad, ino, cookie[2] (16 bytes).
    let mut d = UnixDiag {
        state: *msg.get(18).ok_or_else(bad)?,
        ..Default::default()
    };
    let mut o = 16 + 16;
    while o + 4 <= msg.len() {
        let alen = u16_at(o).ok_or_else(bad)? as usize;
        let atype = u16_at(o + 2).ok_or_else(bad)?;
        if alen < 4 {
            break;
        }
        match atype {
            UNIX_DIAG_PEER => d.peer = u32_at(o + 4).unwrap_or(0),
            UNIX_DIAG_RQLEN => {
                d.rqueue = u32_at(o + 4).unwrap_or(0);
                d.wqueue = u32_at(o + 8).unwrap_or(0);
            }
            UNIX_DIAG_SHUTDOWN => d.shutdown = msg.get(o + 4).copied().unwrap_or(0),
            _ => {}
        }
        o += (alen + 3) & !3;
    }
    Ok(d)
}

/// RCV_SHUTDOWN | SEND_SHUTDOWN of the TCP or UDP socket with inode
/// `ino` (inet_diag: a dump of the family and protocol, matched by
/// inode); None if it is not found.
pub fn inet_shutdown(family: i32, protocol: i32, ino: u64) -> io::Result<Option<u8>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const INET_DIAG_SHUTDOWN: u16 = 8;
    // SAFETY: socket(2) takes integers and returns a new fd we own.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    } as libc::c_long)?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    let nl = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    // nlmsghdr (16) + inet_diag_req_v2 (56): family, protocol, ext, pad,
    // states, and an all-zero socket id (a dump takes no id).
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[family as u8, protocol as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.resize(72, 0);
    // SAFETY: send reads `req`, ours, within its length.
    cvt(unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } as libc::c_long)?;
    let mut buf = vec![0u8; 32768];
    let mut found = None;
    loop {
        // SAFETY: recv writes at most buf.len() bytes into `buf`, ours.
        let n = cvt(
            unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
                as libc::c_long,
        )? as usize;
        let b = &buf[..n];
        let u16_at = |o: usize| {
            b.get(o..o + 2)
                .map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]))
        };
        let u32_at = |o: usize| {
            b.get(o..o + 4)
                .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        };
        let mut o = 0;
        while o + 16 <= n {
            let len = u32_at(o) as usize;
            let kind = u16_at(o + 4);
            if len < 16 {
                return Err(io::Error::other("bad inet_diag reply"));
            }
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(found);
            }
            if kind == libc::NLMSG_ERROR as u16 {
                return Err(io::Error::from_raw_os_error(-(u32_at(o + 16) as i32)));
            }
            // inet_diag_msg (72 bytes): its inode at 68, attributes after.
            let m = o + 16;
            if found.is_none() && u32_at(m + 68) as u64 == ino {
                let mut a = m + 72;
                found = Some(0);
                while a + 4 <= o + len {
                    let (alen, atype) = (u16_at(a) as usize, u16_at(a + 2));
                    if alen < 4 {
                        break;
                    }
                    if atype == INET_DIAG_SHUTDOWN {
                        found = b.get(a + 4).copied();
                    }
                    a += (alen + 3) & !3;
                }
            }
            o += (len + 3) & !3;
        }
    }
}

/// The length getsockopt reports when given no buffer (SO_GET_FILTER:
/// the number of instructions of an attached socket filter, 0 if none).
pub fn getsockopt_len(fd: &impl AsRawFd, level: i32, name: i32) -> io::Result<u32> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a zero length the kernel writes no option bytes (the
    // null buffer is never touched), only the length back to `len`.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, std::ptr::null_mut(), &mut len) };
    cvt(r as libc::c_long)?;
    Ok(len)
}
