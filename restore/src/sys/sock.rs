//! Sockets made again: socket(2), socketpair(2), options, bind, listen,
//! connect and send, on fds we own; addresses are sockaddr bytes as the
//! image holds them.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// socket(family, type | SOCK_CLOEXEC, protocol).
pub fn socket(family: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a new fd we own.
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: the kernel just returned it; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// socketpair(family, type | SOCK_CLOEXEC, 0).
pub fn socketpair(family: i32, ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two fds into `sv`, ours.
    cvt(unsafe { libc::socketpair(family, ty | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) })?;
    // SAFETY: two fresh fds from the kernel, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// getsockopt into `buf`; the length the kernel filled in.
pub fn getsockopt(fd: BorrowedFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `buf`, ours.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok((len as usize).min(buf.len()))
}

/// The index of the network device named `name` (if_nametoindex).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated name we own, alive for the call.
    let r = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if r == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// setsockopt with `val` as the option's bytes.
pub fn setsockopt(fd: BorrowedFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    setsockopt_at(fd.as_raw_fd(), level, name, val)
}

/// setsockopt on fd number `fd` (EBADF if it is not open).
pub fn setsockopt_at(fd: RawFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `val.len()` bytes from `val`, ours; `fd` is
    // a number (not open: EBADF).
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// SO_ATTACH_FILTER: the classic BPF program `insns` on the socket.
pub fn attach_filter(fd: BorrowedFd, insns: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel reads the sock_fprog and, through it, `len`
    // instructions from `insns`, ours and alive for the call; it writes
    // nothing of ours.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// bind(2) to the sockaddr `addr`.
pub fn bind(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `addr.len()` bytes of a sockaddr from `addr`.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// connect(2) of the socket at number `fd` to the sockaddr `addr`.
pub fn connect_at(fd: RawFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `addr.len()` bytes of a sockaddr from
    // `addr`; `fd` is a number (not open: EBADF).
    cvt(unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len() as libc::socklen_t) })?;
    Ok(())
}

/// connect(2) to the sockaddr `addr`.
pub fn connect(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `addr.len()` bytes of a sockaddr from `addr`.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// listen(2).
pub fn listen(fd: BorrowedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC): a connection waiting (the
/// caller knows one does).
pub fn accept(fd: BorrowedFd) -> io::Result<OwnedFd> {
    // SAFETY: no address is asked for; the result is a new fd we own.
    let c = cvt(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: the kernel just returned it; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

/// getsockname(2): the socket's own address, as sockaddr bytes.
pub fn sockname(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes to `buf`, ours.
    cvt(unsafe { libc::getsockname(fd.as_raw_fd(), buf.as_mut_ptr().cast(), &mut len) })?;
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

/// send(2) without waiting (MSG_NOSIGNAL | MSG_DONTWAIT): bytes sent.
fn send_now(fd: BorrowedFd, buf: &[u8]) -> io::Result<usize> {
    send_now_at(fd.as_raw_fd(), buf)
}

/// [`send_now`] from the socket at number `fd`.
fn send_now_at(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`; `fd`
    // is a number (not open: EBADF).
    let n = cvt(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    })?;
    Ok(n as usize)
}

/// Every byte of `buf` through the stream socket at number `fd`, without
/// waiting.
pub fn send_all_at(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = send_now_at(fd, buf)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// sendmsg(2) of one message with `fds` in flight (SCM_RIGHTS), from the
/// socket at number `fd`, without waiting.
pub fn send_with_fds(fd: RawFd, buf: &[u8], fds: &[i32]) -> io::Result<()> {
    let data = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE computes a size.
    let space = unsafe { libc::CMSG_SPACE(data) } as usize;
    let mut ctrl = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = space;
    }
    // SAFETY: the control buffer (when given) has CMSG_SPACE(data)
    // bytes, so its first header and the data after it fit; the kernel
    // only reads `buf` (the iovec's pointer is not written through) and
    // `ctrl`, both alive for the call.
    let n = unsafe {
        if !fds.is_empty() {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<i32>(),
                fds.len(),
            );
        }
        cvt(libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as i32)?
    };
    if n as usize != buf.len() {
        return Err(io::Error::other(format!(
            "sent {n} of a {}-byte message",
            buf.len()
        )));
    }
    Ok(())
}

/// send(2) one message (a datagram or seqpacket record) without waiting.
pub fn send_message(fd: BorrowedFd, buf: &[u8]) -> io::Result<()> {
    let n = send_now(fd, buf)?;
    if n != buf.len() {
        return Err(io::Error::other(format!(
            "sent {n} of a {}-byte message",
            buf.len()
        )));
    }
    Ok(())
}

/// sendto(fd, buf, MSG_DONTWAIT, addr) of one whole datagram from the
/// socket at number `fd`.
pub fn sendto_at(fd: RawFd, buf: &[u8], addr: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `buf.len()` bytes from `buf` and a
    // sockaddr of `addr.len()` bytes from `addr`; `fd` is a number.
    let n = cvt(unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    } as libc::c_long)? as usize;
    if n != buf.len() {
        return Err(io::Error::other(format!(
            "sent {n} of a {}-byte datagram",
            buf.len()
        )));
    }
    Ok(())
}

/// shutdown(fd, how) of the socket at number `fd`.
pub fn shutdown_at(fd: RawFd, how: i32) -> io::Result<()> {
    // SAFETY: integers only (not open: EBADF).
    cvt(unsafe { libc::shutdown(fd, how) })?;
    Ok(())
}

/// shutdown(fd, how).
pub fn shutdown(fd: BorrowedFd, how: i32) -> io::Result<()> {
    // SAFETY: integers only.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// send(2) all of `buf` without waiting: EAGAIN if it does not fit.
pub fn send_all(fd: BorrowedFd, buf: &[u8]) -> io::Result<()> {
    send_all_at(fd.as_raw_fd(), buf)
}

/// A socket diagnostics socket (NETLINK_SOCK_DIAG) that has sent request
/// `m`; its answers are to be read from it.
fn diag_ask(m: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a new fd we own.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    // SAFETY: the kernel just returned it; nobody else owns it.
    let nl = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the kernel reads m.len() bytes from `m`, ours.
    cvt(unsafe { libc::send(nl.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) })?;
    Ok(nl)
}

/// One request to the kernel's socket diagnostics (NETLINK_SOCK_DIAG)
/// about the TCP socket of `family` with exactly these addresses
/// (`local`, `peer`: address in the family's form, 4 or 16 bytes, and
/// port): the reply's first message (an inet_diag_msg, or the error).
fn tcp_diag(
    kind: u16,
    family: i32,
    local: (&[u8], u16),
    peer: (&[u8], u16),
    cookie: [u8; 8],
) -> io::Result<Vec<u8>> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]); // seq, pid
                                    // inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid.
    m.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&local.1.to_be_bytes());
    m.extend_from_slice(&peer.1.to_be_bytes());
    for ip in [local.0, peer.0] {
        let mut a = [0u8; 16];
        a[..ip.len().min(16)].copy_from_slice(&ip[..ip.len().min(16)]);
        m.extend_from_slice(&a);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // interface
    m.extend_from_slice(&cookie);
    let nl = diag_ask(&m)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the kernel writes at most buf.len() bytes into `buf`, ours.
    let n = cvt(unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// The kernel's answer in a reply of [`tcp_diag`]: Ok(Some(state)) for a
/// socket found, Ok(None) for none (ENOENT) or an acknowledgement.
fn diag_answer(b: &[u8]) -> io::Result<Option<u8>> {
    let kind = u16::from_ne_bytes([*b.get(4).unwrap_or(&0), *b.get(5).unwrap_or(&0)]);
    if kind == libc::NLMSG_ERROR as u16 {
        let e = i32::from_ne_bytes(
            b.get(16..20)
                .and_then(|x| x.try_into().ok())
                .unwrap_or([0; 4]),
        );
        return match -e {
            0 | libc::ENOENT => Ok(None),
            errno => Err(io::Error::from_raw_os_error(errno)),
        };
    }
    Ok(b.get(17).copied())
}

/// Remove a connection left in TIME_WAIT with exactly these addresses
/// (SOCK_DESTROY, CAP_NET_ADMIN): the closed connection of the captured
/// process, or of an earlier restore, whose four addresses a restore is
/// about to use again. Only a socket in TIME_WAIT is touched (a live one
/// is someone's connection). Returns whether one was removed.
pub fn tcp_clear_time_wait(
    family: i32,
    local: (&[u8], u16),
    peer: (&[u8], u16),
) -> io::Result<bool> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const SOCK_DESTROY: u16 = 21;
    const TIME_WAIT: u8 = 6;
    let reply = tcp_diag(SOCK_DIAG_BY_FAMILY, family, local, peer, [0xff; 8])?;
    if diag_answer(&reply)? != Some(TIME_WAIT) {
        return Ok(false);
    }
    // That very socket (its cookie), not a connection made on the same
    // addresses since.
    let cookie: [u8; 8] = reply
        .get(16 + 44..16 + 52)
        .and_then(|c| c.try_into().ok())
        .ok_or_else(|| io::Error::other("short sock_diag reply"))?;
    diag_answer(&tcp_diag(SOCK_DESTROY, family, local, peer, cookie)?)?;
    Ok(true)
}

/// (type, state) of every live unix socket whose name is the file with
/// inode `ino` on device `dev` (as stat(2) gives them): every unix socket
/// the kernel knows, dumped by socket diagnostics (NETLINK_SOCK_DIAG,
/// UNIX_DIAG_VFS), matched by the inode its name's file has. (A stream
/// connection accepted from a listener has the listener's name too.)
/// Nothing connects to it (a connect is a client the socket's owner
/// would accept: stop 35's survey saw a live server count one).
pub fn unix_bound_to(dev: u64, ino: u64) -> io::Result<Vec<(u8, u8)>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_VFS: u32 = 2;
    const UNIX_DIAG_VFS: u16 = 1;
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]); // seq, pid
                                    // unix_diag_req: family, protocol, pad, states, ino, show, cookie.
    m.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&UDIAG_SHOW_VFS.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    let nl = diag_ask(&m)?;
    // The device number as unix_diag gives it: the kernel's own dev_t
    // (major << 20 | minor; seen: 266338304 for 254:0), not stat's.
    let want_dev = ((libc::major(dev) as u32) << 20) | libc::minor(dev) as u32;
    let ne32 = |b: &[u8], o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
    };
    let ne16 = |b: &[u8], o: usize| b.get(o..o + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let mut buf = vec![0u8; 1 << 16];
    let mut found: Vec<(u8, u8)> = Vec::new();
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into `buf`, ours.
        let n = cvt(unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
        let b = &buf[..n as usize];
        let mut o = 0;
        while let (Some(len), Some(kind)) = (ne32(b, o), ne16(b, o + 4)) {
            let len = len as usize;
            if len < 16 || o + len > b.len() {
                return Ok(found);
            }
            match kind as i32 {
                libc::NLMSG_DONE => return Ok(found),
                libc::NLMSG_ERROR => {
                    let e = ne32(b, o + 16).unwrap_or(0) as i32;
                    return Err(io::Error::from_raw_os_error(-e));
                }
                _ => {}
            }
            // unix_diag_msg (16 bytes) after the header, then attributes.
            let mut a = o + 16 + 16;
            while let (Some(alen), Some(akind)) = (ne16(b, a), ne16(b, a + 2)) {
                let alen = alen as usize;
                if alen < 4 || a + alen > o + len {
                    break;
                }
                if akind == UNIX_DIAG_VFS
                    && ne32(b, a + 4) == Some(ino as u32)
                    && ne32(b, a + 8) == Some(want_dev)
                {
                    let ty = b.get(o + 17).copied().unwrap_or(0);
                    let state = b.get(o + 18).copied().unwrap_or(0);
                    found.push((ty, state));
                }
                a += (alen + 3) & !3;
            }
            o += (len + 3) & !3;
        }
    }
}
