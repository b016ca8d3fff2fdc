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
/// A new socket of this kind (close-on-exec).
pub fn socket(family: i32, sock_type: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes integers and returns a new fd we own.
    let raw = unsafe { libc::socket(family, sock_type | libc::SOCK_CLOEXEC, protocol) };
    cvt(raw as libc::c_long)?;
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

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
    /// How many (0 if the control data was cut short).
    pub nfds: usize,
    /// Their (st_dev, st_ino).
    pub files: Vec<(u64, u64)>,
    /// Other control data (credentials) came with the bytes.
    pub other_control: bool,
    /// Nothing was queued (EAGAIN), as opposed to an empty message.
    pub none: bool,
    /// The sender's address (a datagram's; empty: unnamed, or none).
    pub from: Vec<u8>,
}

/// recvmsg(MSG_PEEK | MSG_DONTWAIT) of up to `len` bytes: the bytes stay
/// queued for their reader.
pub fn peek(fd: &impl AsRawFd, len: usize) -> io::Result<Peeked> {
    let mut buf = vec![0u8; len.max(1)];
    // Room for SCM_MAX_FD (253) fds and credentials.
    let mut ctrl = [0u64; 160];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero sockaddr_storage and msghdr are valid (no
    // name, no iovecs).
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of_val(&name) as libc::socklen_t;
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
    let (n, none) = match n {
        Ok(n) => (n as usize, false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, true),
        Err(e) => return Err(e),
    };
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other(format!(
            "a message queued is larger than {len} bytes"
        )));
    }
    let (mut fds, mut other) = (msg.msg_flags & libc::MSG_CTRUNC != 0, false);
    let mut nfds = 0;
    let mut files = Vec::new();
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel
    // filled, within msg_controllen; SCM_RIGHTS data is an array of ints
    // (fds now ours), each fstat'ed into a zeroed stat of ours, then
    // closed.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                fds = true;
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                nfds += k;
                for i in 0..k {
                    let fd = data.add(i).read_unaligned();
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::fstat(fd, &mut st) == 0 {
                        files.push((st.st_dev, st.st_ino));
                    }
                    libc::close(fd);
                }
            } else {
                other = true;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    buf.truncate(n);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        nfds = 0;
    }
    let namelen = (msg.msg_namelen as usize).min(std::mem::size_of_val(&name));
    // SAFETY: `name` is plain bytes the kernel filled up to msg_namelen.
    let from = unsafe {
        std::slice::from_raw_parts(
            (&name as *const libc::sockaddr_storage).cast::<u8>(),
            namelen,
        )
    };
    // (An unnamed unix sender gives just the family.)
    let from = if from.len() > 2 {
        from.to_vec()
    } else {
        Vec::new()
    };
    Ok(Peeked {
        from,
        bytes: buf,
        fds,
        nfds,
        files,
        other_control: other,
        none,
    })
}

/// Every message queued in a datagram or seqpacket socket, without
/// taking them: peeked one after the other with a peek offset
/// (SO_PEEK_OFF, which the socket did not use: the caller checked),
/// turned off again after, whatever happened. `largest`: a bound on one
/// message's size (unix_diag's count: every byte queued for seqpacket,
/// the first datagram's for datagrams). Err(why) for what cannot be
/// kept: fds or credentials with a message, an empty message (the
/// offset cannot step over it), more than 1 << 16 messages.
///
/// `eof_at`: a seqpacket end its peer shut down for writing reads as
/// empty (end of file) once its queue is read, as an empty record would:
/// the queue's byte count (unix_diag's, for seqpacket every byte queued)
/// tells the end from an empty record.
pub fn peek_messages(
    fd: &impl AsRawFd,
    largest: usize,
    eof_at: Option<usize>,
) -> io::Result<Result<Vec<Message>, String>> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let mut out: Vec<Message> = Vec::new();
    let cap = largest.max(sndbuf_of(fd)).max(1 << 16) + 1;
    let got = loop {
        if out.len() > 1 << 16 {
            break Ok(Err("more than 65536 messages queued".into()));
        }
        match peek(fd, cap) {
            Err(e) => break Err(e),
            Ok(p) if p.none => break Ok(Ok(())),
            Ok(p) if p.other_control => {
                break Ok(Err("a message queued with credentials (SO_PASSCRED)".into()))
            }
            Ok(p) if p.fds && p.nfds == 0 => {
                break Ok(Err(
                    "a message queued with more file descriptors than cryo can read".into(),
                ))
            }
            Ok(p)
                if p.bytes.is_empty()
                    && eof_at == Some(out.iter().map(|m| m.bytes.len()).sum()) =>
            {
                break Ok(Ok(()))
            }
            Ok(p) if p.bytes.is_empty() => break Ok(Err("an empty message queued".into())),
            Ok(p) => out.push(Message {
                bytes: p.bytes,
                nfds: p.nfds,
                files: p.files,
                from: p.from,
            }),
        }
    };
    let off = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1);
    let got = got?;
    off?;
    Ok(got.map(|()| out))
}

/// How many bytes a peek at the peek offset copies into a buffer of
/// `len` bytes that ends where a page the kernel cannot write starts:
/// only whole skbs (the kernel copies one skb at a time and drops the
/// count of an skb whose copy faults), so the answer is where the last
/// skb boundary before `len` bytes from the offset is (0: none). A unix
/// stream socket merges its skbs for a reader and nothing else shows
/// where they start; see [`peek_stream`] for why it matters.
/// [`skb_bounds_visible`] checks that this kernel does so.
fn peek_whole_skbs(fd: &impl AsRawFd, len: usize) -> io::Result<usize> {
    let page = 4096usize;
    let room = len.div_ceil(page) * page;
    let span = room + page;
    // SAFETY: a new private anonymous mapping of our own, unmapped below
    // on every path; no other memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let r = (|| {
        // SAFETY: the last page of the mapping made above becomes one
        // nobody may touch; the mapping is ours.
        let guard = unsafe { base.cast::<u8>().add(room) };
        // SAFETY: as above.
        let r = unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) };
        cvt(r as libc::c_long)?;
        let mut iov = libc::iovec {
            // SAFETY: `room - len` is within the mapping.
            iov_base: unsafe { base.cast::<u8>().add(room - len) }.cast(),
            iov_len: len + page,
        };
        // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no
        // control: fds in flight a peek reached would be closed by the
        // kernel, never given to us).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: the kernel writes through the iovec into our mapping;
        // its last page faults, which the kernel reports as EFAULT.
        let n = cvt(unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                &mut msg,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        } as libc::c_long);
        match n {
            Ok(n) => Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Ok(0),
            Err(e) => Err(e),
        }
    })();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(base, span) };
    r
}

/// Whether [`peek_whole_skbs`] shows skb boundaries on this kernel (a
/// pair of our own: "ab" then "cd" sent; a peek that has room for 3
/// bytes copies 2, one with room for 1 copies none). Asked once.
pub fn skb_bounds_visible() -> bool {
    static SEEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEEN.get_or_init(|| {
        use std::io::Write;
        let Ok((mut a, b)) = std::os::unix::net::UnixStream::pair() else {
            return false;
        };
        if a.write_all(b"ab").is_err() || a.write_all(b"cd").is_err() {
            return false;
        }
        let at = |off: i32, len: usize| {
            set_peek_off(&b, off).ok()?;
            peek_whole_skbs(&b, len).ok()
        };
        at(0, 3) == Some(2) && at(0, 1) == Some(0) && at(2, 2) == Some(2) && at(1, 3) == Some(3)
    })
}

/// Whether any skb queued in unix stream socket `fd` carries files in
/// flight, without reading the queue: a peek of one byte at offset 0
/// runs on over the skbs after that byte, copying nothing, until one
/// with files (whose copies it hands over, closed by `peek`).
pub fn stream_has_fds(fd: &impl AsRawFd) -> bool {
    if set_peek_off(fd, 0).is_err() {
        return true; // (let `peek_stream` say why)
    }
    let p = peek(fd, 1);
    let _ = set_peek_off(fd, -1);
    p.map_or(true, |p| p.fds)
}

/// The bytes queued in a unix stream socket, without taking them, cut
/// where files in flight are: runs without files, and each skb that
/// carries files (SCM_RIGHTS) as a message of its own. A reader gets a
/// message's files with the first byte it reads of that skb, and reads
/// merge the skbs without files before it: a reader that reads a 4-byte
/// header and then the message with its files must find the header
/// without them. So where each such skb starts matters, and a peek does
/// not tell (a peek reaches the next skb with files and hands over its
/// files even when it copies no byte of it): [`peek_whole_skbs`] does.
/// Peek offsets as in [`peek_messages`]. `queued`: unix_diag's count of
/// the bytes queued.
pub fn peek_stream(fd: &impl AsRawFd, queued: usize) -> io::Result<Result<Vec<Message>, String>> {
    let mut out: Vec<Message> = Vec::new();
    let got = (|| -> io::Result<Result<(), String>> {
        let mut pos = 0;
        while pos < queued {
            if out.len() > 1 << 16 {
                return Ok(Err("more than 65536 messages with files queued".into()));
            }
            set_peek_off(fd, pos as i32)?;
            let p = peek(fd, queued - pos + 1)?;
            if p.other_control {
                return Ok(Err("bytes queued with credentials (SO_PASSCRED)".into()));
            }
            if p.fds && p.nfds == 0 {
                return Ok(Err(
                    "bytes queued with more file descriptors than cryo can read".into(),
                ));
            }
            if p.bytes.is_empty() {
                return Ok(Err(format!("peeked {pos} of the {queued} bytes queued")));
            }
            let n = p.bytes.len();
            if !p.fds {
                if pos + n != queued {
                    return Ok(Err(format!(
                        "peeked {} of the {queued} bytes queued",
                        pos + n
                    )));
                }
                out.push(Message {
                    bytes: p.bytes,
                    nfds: 0,
                    files: Vec::new(),
                    from: Vec::new(),
                });
                break;
            }
            // The skb with the files ends where the peek stopped; it
            // starts at the last skb boundary before that.
            if !skb_bounds_visible() {
                return Ok(Err(
                    "file descriptors in flight, and this kernel does not show where their message starts".into(),
                ));
            }
            let start = if n > 1 {
                set_peek_off(fd, pos as i32)?;
                peek_whole_skbs(fd, n - 1)?
            } else {
                0
            };
            if start >= n {
                return Ok(Err(
                    "a message with files in flight cryo could not delimit".into()
                ));
            }
            let mut bytes = p.bytes;
            let tail = bytes.split_off(start);
            if !bytes.is_empty() {
                out.push(Message {
                    bytes,
                    nfds: 0,
                    files: Vec::new(),
                    from: Vec::new(),
                });
            }
            out.push(Message {
                bytes: tail,
                nfds: p.nfds,
                files: p.files,
                from: Vec::new(),
            });
            pos += n;
        }
        Ok(Ok(()))
    })();
    let off = set_peek_off(fd, -1);
    let got = got?;
    off?;
    Ok(got.map(|()| out))
}

/// SO_PEEK_OFF (-1: off).
pub fn set_peek_off(fd: &impl AsRawFd, off: i32) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)
}

/// SO_SNDBUF: a bound on the size of one datagram its peer could send.
fn sndbuf_of(fd: &impl AsRawFd) -> usize {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).map_or(0, |v| v.max(0) as usize)
}

/// setsockopt of one int.
pub fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads one int from `v`.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    } as libc::c_long)?;
    Ok(())
}

/// One message queued in a datagram or seqpacket socket.
pub struct Message {
    pub bytes: Vec<u8>,
    /// File descriptors in flight with it (SCM_RIGHTS).
    pub nfds: usize,
    /// Their (st_dev, st_ino).
    pub files: Vec<(u64, u64)>,
    /// The sender's address (empty: unnamed).
    pub from: Vec<u8>,
}

/// Messages as one blob (`cryo_image::fds::Socket::data` of a datagram or
/// seqpacket pair): each a 4-byte little-endian length, then its bytes;
/// a message with fds in flight has the length's top bit set and, before
/// its bytes, their count and the numbers they are held at in the image
/// (`Fd::in_flight`), 4 bytes each. `fds`: those numbers, per message.
/// With `senders`, a message from a named socket has bit 30 set and,
/// before its bytes (after any fd numbers), the sender's address: its
/// length, 4 bytes, then the sockaddr.
pub fn frame(messages: &[Message], fds: &[Vec<i32>], senders: bool) -> Vec<u8> {
    let mut b = Vec::new();
    let mut with = fds.iter();
    for m in messages {
        let held = (m.nfds > 0).then(|| with.next()).flatten();
        let from = senders && !m.from.is_empty();
        let head = m.bytes.len() as u32
            | if held.is_some() { 1 << 31 } else { 0 }
            | if from { 1 << 30 } else { 0 };
        b.extend_from_slice(&head.to_le_bytes());
        if let Some(f) = held {
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            for n in f {
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        if from {
            b.extend_from_slice(&(m.from.len() as u32).to_le_bytes());
            b.extend_from_slice(&m.from);
        }
        b.extend_from_slice(&m.bytes);
    }
    b
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
    /// Bound to a path: the inode and device (the kernel's dev_t, major
    /// << 20 | minor) of the file the bind made.
    pub vfs: Option<(u32, u32)>,
}

/// A NETLINK_SOCK_DIAG socket that has sent one SOCK_DIAG_BY_FAMILY
/// request; its replies are read with [`Diag::recv`].
struct Diag(OwnedFd);

impl Diag {
    /// Send `body` (the family's request) under a netlink header with
    /// NLM_F_REQUEST and `flags`.
    fn ask(flags: i32, body: &[u8]) -> io::Result<Diag> {
        const SOCK_DIAG_BY_FAMILY: u16 = 20;
        let nl = socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG)?;
        let mut req = Vec::with_capacity(16 + body.len());
        req.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&((libc::NLM_F_REQUEST | flags) as u16).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid
        req.extend_from_slice(body);
        // SAFETY: send reads `req`, ours, within its length.
        let r = unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        cvt(r as libc::c_long)?;
        Ok(Diag(nl))
    }

    /// The next reply datagram into `buf`; its length.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv writes at most buf.len() bytes into `buf`, ours.
        let r = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        Ok(cvt(r as libc::c_long)? as usize)
    }
}

fn ne_u16(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

fn ne_u32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The netlink attributes (type, payload) in `b[from..to]`.
fn attrs(b: &[u8], from: usize, to: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut o = from;
    std::iter::from_fn(move || {
        let len = ne_u16(b, o)? as usize;
        let kind = ne_u16(b, o + 2)?;
        if len < 4 || o + len > to.min(b.len()) {
            return None;
        }
        let payload = &b[o + 4..o + len];
        o += (len + 3) & !3;
        Some((kind, payload))
    })
}

/// A unix_diag_req (24 bytes) for the socket with inode `ino`, asking for
/// the `show` attributes.
fn unix_diag_req(ino: u32, show: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req
}

/// The inodes of the sockets whose connections wait in the queue of
/// listening unix socket `ino`, in queue order (unix_diag's UNIX_DIAG_ICONS:
/// the connecting ends; 0 for one whose end is gone).
pub fn unix_icons(ino: u32) -> io::Result<Vec<u32>> {
    const UDIAG_SHOW_ICONS: u32 = 8;
    const UNIX_DIAG_ICONS: u16 = 3;
    let nl = Diag::ask(0, &unix_diag_req(ino, UDIAG_SHOW_ICONS))?;
    let mut buf = vec![0u8; 1 << 16];
    let n = nl.recv(&mut buf)?;
    let b = &buf[..n];
    let bad = || io::Error::other("short unix_diag reply");
    let len = ne_u32(b, 0).ok_or_else(bad)? as usize;
    if ne_u16(b, 4).ok_or_else(bad)? == libc::NLMSG_ERROR as u16 {
        let errno = ne_u32(b, 16).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let mut out = Vec::new();
    for (kind, p) in attrs(b, 16 + 16, len) {
        if kind == UNIX_DIAG_ICONS {
            out.extend((0..p.len() / 4).filter_map(|i| ne_u32(p, 4 * i)));
        }
    }
    Ok(out)
}

/// unix_diag for the unix socket with inode `ino` (SOCK_DIAG_BY_FAMILY,
/// exact lookup by inode).
pub fn unix_diag(ino: u32) -> io::Result<UnixDiag> {
    const UDIAG_SHOW_VFS: u32 = 2;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UDIAG_SHOW_RQLEN: u32 = 16;
    let show = UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
    let nl = Diag::ask(0, &unix_diag_req(ino, show))?;
    let mut buf = vec![0u8; 8192];
    let n = nl.recv(&mut buf)?;
    parse_unix_diag(&buf[..n])
}

const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

fn parse_unix_diag(b: &[u8]) -> io::Result<UnixDiag> {
    let bad = || io::Error::other("short unix_diag reply");
    let len = ne_u32(b, 0).ok_or_else(bad)? as usize;
    let kind = ne_u16(b, 4).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = ne_u32(b, 16).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    // unix_diag_msg: family, type, state, pad, ino, cookie[2] (16 bytes).
    let mut d = UnixDiag {
        state: *b.get(18).ok_or_else(bad)?,
        ..Default::default()
    };
    for (kind, p) in attrs(b, 16 + 16, len) {
        match kind {
            UNIX_DIAG_VFS => d.vfs = ne_u32(p, 0).zip(ne_u32(p, 4)),
            UNIX_DIAG_PEER => d.peer = ne_u32(p, 0).unwrap_or(0),
            UNIX_DIAG_RQLEN => {
                d.rqueue = ne_u32(p, 0).unwrap_or(0);
                d.wqueue = ne_u32(p, 4).unwrap_or(0);
            }
            UNIX_DIAG_SHUTDOWN => d.shutdown = p.first().copied().unwrap_or(0),
            _ => {}
        }
    }
    Ok(d)
}

/// Every socket of an inet_diag dump of `family` and `protocol` in the
/// TCP states of the `states` bitmask, with the attributes `ext` asks
/// for: `each` gets its message (an inet_diag_msg, 72 bytes, then its
/// attributes) until it returns Some, which is returned once the dump is
/// read to its end.
fn inet_dump<T>(
    family: i32,
    protocol: i32,
    (states, ext): (u32, u8),
    mut each: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<T>> {
    // inet_diag_req_v2 (56 bytes): family, protocol, ext, pad, states, and
    // an all-zero socket id (a dump takes no id).
    let mut req = vec![family as u8, protocol as u8, ext, 0];
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(56, 0);
    let nl = Diag::ask(libc::NLM_F_DUMP, &req)?;
    let mut buf = vec![0u8; 32768];
    let mut found = None;
    loop {
        let n = nl.recv(&mut buf)?;
        let b = &buf[..n];
        let mut o = 0;
        while o + 16 <= n {
            let len = ne_u32(b, o).unwrap_or(0) as usize;
            let kind = ne_u16(b, o + 4).unwrap_or(0);
            if len < 16 || o + len > n {
                return Err(io::Error::other("bad inet_diag reply"));
            }
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(found);
            }
            if kind == libc::NLMSG_ERROR as u16 {
                let errno = ne_u32(b, o + 16).unwrap_or(0) as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            if found.is_none() && len >= 16 + 72 {
                found = each(&b[o + 16..o + len]);
            }
            o += (len + 3) & !3;
        }
    }
}

/// How sockets are shut down (RCV_SHUTDOWN | SEND_SHUTDOWN), by inode.
pub type Shutdowns = std::collections::HashMap<u64, u8>;

/// RCV_SHUTDOWN | SEND_SHUTDOWN of every TCP or UDP socket of `family`
/// and `protocol` on the machine, by inode (inet_diag: one dump).
pub fn inet_shutdowns(
    family: i32,
    protocol: i32,
) -> io::Result<std::collections::HashMap<u64, u8>> {
    const INET_DIAG_SHUTDOWN: u16 = 8;
    let mut map = std::collections::HashMap::new();
    inet_dump(family, protocol, (u32::MAX, 0), |m| -> Option<()> {
        // inet_diag_msg: its inode at 68, attributes after.
        let how = attrs(m, 72, m.len())
            .find(|(k, _)| *k == INET_DIAG_SHUTDOWN)
            .and_then(|(_, p)| p.first().copied())
            .unwrap_or(0);
        map.insert(u64::from(ne_u32(m, 68)?), how);
        None
    })?;
    Ok(map)
}

/// An IPv4 or IPv6 sockaddr as (address in IPv6 form, v4 mapped; port).
fn inet_key(addr: &[u8]) -> Option<InetKey> {
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    let mut ip = [0u8; 16];
    match i32::from(u16::from_ne_bytes([addr[0], addr[1]])) {
        libc::AF_INET => {
            ip[10] = 0xff;
            ip[11] = 0xff;
            ip[12..].copy_from_slice(addr.get(4..8)?);
        }
        libc::AF_INET6 => ip.copy_from_slice(addr.get(8..24)?),
        _ => return None,
    }
    Some((ip, port))
}

/// An address in IPv6 form (IPv4 v4-mapped) and a port.
type InetKey = ([u8; 16], u16);

/// The key of one end in an inet_diag message: inet_diag_sockid at 4 has
/// sport, dport (big-endian) at 4 and 6, src and dst at 8 and 24; an
/// AF_INET message has its addresses in their first 4 bytes.
fn diag_key(m: &[u8], port_at: usize, ip_at: usize) -> Option<InetKey> {
    let port = u16::from_be_bytes([*m.get(port_at)?, *m.get(port_at + 1)?]);
    let mut ip = [0u8; 16];
    if i32::from(*m.first()?) == libc::AF_INET {
        ip[10] = 0xff;
        ip[11] = 0xff;
        ip[12..].copy_from_slice(m.get(ip_at..ip_at + 4)?);
    } else {
        ip.copy_from_slice(m.get(ip_at..ip_at + 16)?);
    }
    Some((ip, port))
}

/// This machine's established and listening TCP sockets, read once (two
/// inet_diag dumps) for every connection of a capture to look up.
#[derive(Debug, Default)]
pub struct TcpTable {
    /// (own address, peer address, inode).
    established: Vec<(InetKey, InetKey, u64)>,
    listening: Vec<InetKey>,
    /// Inodes of the sockets with TCP MD5 signature keys (TCP_MD5SIG).
    md5: Vec<u64>,
}

impl TcpTable {
    pub fn read() -> io::Result<TcpTable> {
        const ESTABLISHED: u8 = 1;
        const LISTEN: u8 = 10;
        let mut t = TcpTable::default();
        let states = (1u32 << ESTABLISHED) | (1u32 << LISTEN);
        // INET_DIAG_INFO brings the protocol's own attributes: with
        // CAP_NET_ADMIN, INET_DIAG_MD5SIG where the socket has keys.
        const INET_DIAG_INFO: u8 = 2;
        const INET_DIAG_MD5SIG: u16 = 18;
        let ext = 1 << (INET_DIAG_INFO - 1);
        for family in [libc::AF_INET, libc::AF_INET6] {
            inet_dump(
                family,
                libc::IPPROTO_TCP,
                (states, ext),
                |m| -> Option<()> {
                    if attrs(m, 72, m.len()).any(|(k, p)| k == INET_DIAG_MD5SIG && !p.is_empty()) {
                        t.md5.push(u64::from(ne_u32(m, 68)?));
                    }
                    let (me, them) = (diag_key(m, 4, 8)?, diag_key(m, 6, 24)?);
                    match *m.get(1)? {
                        LISTEN => t.listening.push(me),
                        ESTABLISHED => t.established.push((me, them, u64::from(ne_u32(m, 68)?))),
                        _ => {}
                    }
                    None
                },
            )?;
        }
        Ok(t)
    }

    /// Whether the socket of inode `ino` has TCP MD5 signature keys
    /// (seen only with CAP_NET_ADMIN).
    pub fn has_md5(&self, ino: u64) -> bool {
        self.md5.contains(&ino)
    }

    /// Whether a socket listens on `local`'s port, at its address or at
    /// the wildcard (an established socket there was accepted by it).
    pub fn listener_at(&self, local: &[u8]) -> bool {
        let Some((ip, port)) = inet_key(local) else {
            return false;
        };
        let mut v4_any = [0u8; 16];
        v4_any[10..12].copy_from_slice(&[0xff, 0xff]);
        self.listening
            .iter()
            .any(|&(lip, lport)| lport == port && (lip == ip || lip == [0; 16] || lip == v4_any))
    }

    /// The inode of the established socket at the other end of the
    /// connection whose own address is `local` and peer `peer`
    /// (sockaddrs), if it is a socket of this machine.
    pub fn peer_inode(&self, local: &[u8], peer: &[u8]) -> Option<u64> {
        let (me, them) = (inet_key(local)?, inet_key(peer)?);
        self.established
            .iter()
            .find(|&&(own, other, _)| own == them && other == me)
            .map(|&(_, _, ino)| ino)
    }
}

/// SO_LINGER {on, 0 s}: a close resets the connection.
pub fn set_linger_zero(fd: &impl AsRawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one struct linger from `l`.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    } as libc::c_long)?;
    Ok(())
}

/// The length getsockopt reports when given no buffer (SO_GET_FILTER:
/// the number of instructions of an attached socket filter, 0 if none).
pub fn getsockopt_len(fd: &impl AsRawFd, level: i32, name: i32) -> io::Result<u32> {
    let mut len: libc::socklen_t = 0;
    let null = std::ptr::null_mut();
    // SAFETY: with a zero length the kernel writes no option bytes (the
    // null buffer is never touched), only the length back to `len`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, null, &mut len) };
    cvt(r as libc::c_long)?;
    Ok(len)
}

/// Bytes of a TCP socket's send queue not yet sent (SIOCOUTQNSD).
pub fn outq_unsent(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int to `n`, which we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCOUTQNSD, &mut n) } as libc::c_long)?;
    Ok(n as usize)
}

/// Whether an urgent byte (TCP out-of-band data, not inline) waits to
/// be read: recv(MSG_OOB | MSG_PEEK) gives it (EINVAL: none, or inline,
/// or read; EAGAIN: announced, not yet arrived, as good as one).
pub fn urgent_pending(fd: &impl AsRawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv writes at most one byte into `b`, ours.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_OOB | libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    r == 1 || (r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN))
}

/// Exactly `len` bytes peeked from the socket (recv MSG_PEEK, not
/// waiting); an error if fewer are there.
pub fn peek_exact(fd: &impl AsRawFd, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    // SAFETY: recv writes at most `len` bytes into `buf`, ours.
    let n = cvt(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    } as libc::c_long)? as usize;
    if n != len {
        return Err(io::Error::other(format!(
            "{n} bytes of {len} could be read"
        )));
    }
    Ok(buf)
}
