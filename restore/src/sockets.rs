//! Sockets made again: a new socket of the same family, type and
//! protocol, its options where a new socket's differ (each checked after
//! setting), then bound to its address, listening with its backlog, or
//! connected again; a unix pair is made with socketpair(2), or, if it was
//! connected through a named socket, connected again through one at the
//! same address, and gets the bytes that were queued in each end.
//!
//! An address must be free: `plan` checks every TCP/UDP address and unix
//! path before anything is made (a unix path whose socket file nobody
//! listens on any more is stale, left by the captured process, and is
//! removed when its socket is bound again).

use crate::fds::{fd_err, set_status_flags, FdErr, FdPlan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::fds::{sockaddr_bytes, sockaddr_display, socket_flags, socket_state, Socket};
use cryo_image::load::LoadedImage;
use cryo_image::Image;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

fn addr_of(s: &Socket) -> Vec<u8> {
    let (b, n) = sockaddr_bytes(&s.addr, s.addr_len);
    b[..n].to_vec()
}

fn peer_of(s: &Socket) -> Vec<u8> {
    let (b, n) = sockaddr_bytes(&s.peer, s.peer_len);
    b[..n].to_vec()
}

fn inet(s: &Socket) -> bool {
    s.family as i32 != libc::AF_UNIX
}

/// A netlink socket bound (to a port id or to groups) at capture.
fn netlink_bound(s: &Socket) -> bool {
    s.family as i32 == libc::AF_NETLINK
        && addr_of(s)
            .get(4..12)
            .is_some_and(|a| a.iter().any(|&c| c != 0))
}

/// Make a netlink socket as it was: its options, bound to its port id and
/// groups, connected to its destination.
fn make_netlink(img: &Image, object: u32, s: &Socket) -> Result<OwnedFd, Why> {
    let fd = sys::socket(s.family as i32, s.sock_type as i32, s.protocol as i32)
        .map_err(|e| Why::sys("socket", e))?;
    set_options(img, object, fd.as_fd())?;
    let addr = addr_of(s);
    if netlink_bound(s) {
        sys::bind(fd.as_fd(), &addr).map_err(|e| in_use(&sockaddr_display(&addr), e))?;
    }
    if s.state == socket_state::CONNECTED {
        let peer = peer_of(s);
        sys::connect(fd.as_fd(), &peer)
            .map_err(|e| Why::sys(format!("connecting to {}", sockaddr_display(&peer)), e))?;
    }
    Ok(fd)
}

/// An established TCP connection captured with TCP repair, made again in
/// repair mode, so that no packet is sent: its sequence numbers and
/// timestamp clock, bound and "connected" to its two addresses (the
/// kernel lets a socket in repair mode share the port of a listener),
/// its options as negotiated, the bytes it had sent and not yet seen
/// acknowledged (to be sent again if the peer asks), what waited to be
/// read, its window; then out of repair mode (a window probe asks the
/// peer where it is), and the bytes it had never sent are sent.
fn make_repaired(
    loaded: &LoadedImage,
    img: &Image,
    object: u32,
    s: &Socket,
    verify: bool,
) -> Result<OwnedFd, Why> {
    use cryo_image::fds::tcp_opts;
    use libc::{
        TCP_QUEUE_SEQ, TCP_REPAIR, TCP_REPAIR_OPTIONS, TCP_REPAIR_QUEUE, TCP_REPAIR_WINDOW,
        TCP_TIMESTAMP,
    };
    // (TCP_REPAIR_QUEUE's values.)
    const RECV_QUEUE: i32 = 1;
    const SEND_QUEUE: i32 = 2;
    // (TCPOPT_* codes for TCP_REPAIR_OPTIONS.)
    const MSS: u32 = 2;
    const WINDOW: u32 = 3;
    const SACK_PERM: u32 = 4;
    const TIMESTAMP: u32 = 8;
    let t = img
        .tcp_conns()
        .iter()
        .find(|t| t.sock == object)
        .ok_or_else(|| Why::Said("its TCP repair state is missing from the image".into()))?;
    let blob = |b: &cryo_image::fds::Blob| -> Result<Vec<u8>, Why> {
        if b.len == 0 {
            return Ok(Vec::new());
        }
        loaded
            .read_blob(b, verify)
            .map_err(|e| Why::Said(e.to_string()))
    };
    let (sendq, recvq) = (blob(&t.sendq)?, blob(&t.recvq)?);
    let fd = sys::socket(s.family as i32, libc::SOCK_STREAM, s.protocol as i32)
        .map_err(|e| Why::sys("socket", e))?;
    // (Buffer sizes before the queues go in.)
    set_plain_options(img, object, fd.as_fd())?;
    let set = |name: i32, what: &str, val: &[u8]| {
        sys::setsockopt(fd.as_fd(), libc::IPPROTO_TCP, name, val).map_err(|e| Why::sys(what, e))
    };
    let int = |name: i32, what: &str, v: i32| set(name, what, &v.to_ne_bytes());
    // Room for the whole send queue: the kernel counts each buffer with
    // its overhead, which differs from the original's, so the bytes the
    // original held in its send buffer may not fit in one of the same
    // size (EAGAIN, seen on a client connection with 16 MiB queued).
    // Until `finish_repair` sets the size as it was (the queue may then
    // be over it for a while, as an original's can be).
    let room =
        i32::try_from(sendq.len().saturating_mul(2).saturating_add(1 << 20)).unwrap_or(i32::MAX);
    sys::setsockopt(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &room.to_ne_bytes(),
    )
    .map_err(|e| Why::sys("SO_SNDBUFFORCE", e))?;
    int(TCP_REPAIR, "TCP_REPAIR (needs CAP_NET_ADMIN)", 1)?;
    let sent = sendq.len() - (t.unsent as usize).min(sendq.len());
    for (q, seq, len) in [
        (SEND_QUEUE, t.snd_seq, sendq.len()),
        (RECV_QUEUE, t.rcv_seq, recvq.len()),
    ] {
        int(TCP_REPAIR_QUEUE, "TCP_REPAIR_QUEUE", q)?;
        int(
            TCP_QUEUE_SEQ,
            "TCP_QUEUE_SEQ",
            seq.wrapping_sub(len as u32) as i32,
        )?;
    }
    if t.options & tcp_opts::TIMESTAMPS != 0 {
        int(TCP_TIMESTAMP, "TCP_TIMESTAMP", t.timestamp as i32)?;
    }
    // (The connect computes the segment size from the MSS clamp, which is
    // the default, 536, until TCP_REPAIR_OPTIONS sets it after the
    // connect: 524-byte segments. A user MSS for the connect, taken off
    // again after it, gives it the captured one.)
    // (At most 32767, MAX_TCP_WINDOW.)
    int(libc::TCP_MAXSEG, "TCP_MAXSEG", t.mss.min(32767) as i32)?;
    let (a, b) = (addr_of(s), peer_of(s));
    sys::bind(fd.as_fd(), &a)
        .map_err(|e| Why::sys(format!("binding {}", sockaddr_display(&a)), e))?;
    sys::connect(fd.as_fd(), &b).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            Why::Said(format!(
                "the connection {} -> {} is held in TIME_WAIT (an earlier restore of it ended), which the kernel does not let it take over (it does for loopback connections with timestamps); it expires within 60 s",
                sockaddr_display(&a),
                sockaddr_display(&b)
            ))
        } else {
            Why::sys(
                format!("connecting to {} in repair mode", sockaddr_display(&b)),
                e,
            )
        }
    })?;
    let mut opts: Vec<u8> = Vec::new();
    let mut opt = |code: u32, val: u32| {
        opts.extend_from_slice(&code.to_ne_bytes());
        opts.extend_from_slice(&val.to_ne_bytes());
    };
    opt(MSS, t.mss);
    if t.options & tcp_opts::WSCALE != 0 {
        opt(WINDOW, t.snd_wscale | (t.rcv_wscale << 16));
    }
    if t.options & tcp_opts::SACK != 0 {
        opt(SACK_PERM, 0);
    }
    if t.options & tcp_opts::TIMESTAMPS != 0 {
        opt(TIMESTAMP, 0);
    }
    set(TCP_REPAIR_OPTIONS, "TCP_REPAIR_OPTIONS", &opts)?;
    int(libc::TCP_MAXSEG, "TCP_MAXSEG", 0)?;
    int(TCP_REPAIR_QUEUE, "TCP_REPAIR_QUEUE", SEND_QUEUE)?;
    sys::send_all(fd.as_fd(), &sendq[..sent])
        .map_err(|e| Why::sys("putting back the bytes sent and not acknowledged", e))?;
    int(TCP_REPAIR_QUEUE, "TCP_REPAIR_QUEUE", RECV_QUEUE)?;
    // (In pieces: each becomes one buffer of the receive queue.)
    for piece in recvq.chunks(64 << 10) {
        sys::send_all(fd.as_fd(), piece)
            .map_err(|e| Why::sys("putting back the bytes waiting to be read", e))?;
    }
    let w: Vec<u8> = consistent_window(t.window, t.rcv_seq)
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    set(TCP_REPAIR_WINDOW, "TCP_REPAIR_WINDOW", &w)?;
    // Still in repair mode: it leaves it in `finish_repair`, once every
    // process of the tree has its sockets (its peer may be one of them,
    // made later: a segment to a port no socket has gets a reset). A
    // socket in repair mode takes what arrives meanwhile, and one closed
    // in it (a restore that fails before) sends nothing.
    if let Ok(mut u) = UNSENT.lock() {
        u.push((object, sendq[sent..].to_vec()));
    }
    Ok(fd)
}

/// The bytes never sent of each connection made in repair mode by this
/// process, by socket index: sent by [`finish_repair`].
static UNSENT: std::sync::Mutex<Vec<(u32, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());

/// Every TCP connection this process made again in repair mode out of it
/// (a window probe tells its peer where it is), the bytes it had never
/// sent sent, its options as they were (leaving repair mode cleared
/// SO_REUSEADDR), its filter. Called once every process of the tree has
/// its sockets, before any shim runs.
pub(crate) fn finish_repair(img: &Image, plan: &crate::fds::Plan) -> Result<(), RestoreError> {
    let pending = UNSENT
        .lock()
        .map(|mut u| std::mem::take(&mut *u))
        .unwrap_or_default();
    // Unlocked first, all at once (the capture locked them): every socket
    // exists now, and one still in repair mode takes what arrives; the
    // window probe of leaving repair mode then reaches the peer.
    let locked: Vec<(Vec<u8>, Vec<u8>)> = pending
        .iter()
        .filter(|(object, _)| {
            img.tcp_conns()
                .iter()
                .any(|t| t.sock == *object && t.options & cryo_image::fds::tcp_opts::LOCKED != 0)
        })
        .filter_map(|(object, _)| img.sockets().get(*object as usize))
        .map(|s| (addr_of(&s), peer_of(&s)))
        .collect();
    cryo_image::netlock::unlock_all(&locked).map_err(|why| {
        RestoreError::Tree(format!("unlocking its TCP connections (nftables): {why}"))
    })?;
    for (object, unsent) in pending {
        // Its fd here (the first of its description).
        let Some(f) = img.fds().iter().find(|f| {
            f.kind == cryo_image::fd_kind::SOCKET
                && f.object == object
                && plan
                    .fds
                    .iter()
                    .any(|p| p.fd == f.fd && !matches!(p.source, Source::Keep))
        }) else {
            continue;
        };
        let err = |why: Why| RestoreError::Fd {
            fd: f.fd,
            what: "TCP connection".into(),
            why,
        };
        // SAFETY: f.fd is open in this process (installed from the plan)
        // and stays open for the whole borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(f.fd) };
        sys::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &0i32.to_ne_bytes())
            .map_err(|e| err(Why::sys("leaving repair mode", e)))?;
        sys::send_all(fd, &unsent).map_err(|e| err(Why::sys("sending the bytes never sent", e)))?;
        // The socket-level ones only (SO_REUSEADDR, which leaving repair
        // mode cleared; the buffer sizes, forced for the queue): the
        // others were set before, and some cannot be changed on a
        // connected socket (IPV6_V6ONLY: EINVAL).
        set_options_of_level(img, object, fd, Some(libc::SOL_SOCKET)).map_err(err)?;
        attach_filter(img, object, fd).map_err(err)?;
    }
    Ok(())
}

/// A unix path (not abstract, not unnamed).
fn unix_path(addr: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p = addr.get(2..)?;
    if p.is_empty() || p[0] == 0 {
        return None;
    }
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    Some(std::ffi::OsStr::from_bytes(&p[..end]).into())
}

/// Whether a live socket of type `ty` would take a connect at unix
/// address `addr` (a listener, or a bound datagram socket), found
/// without connecting: by its file's inode (a path name), or by its name
/// in /proc/net/unix (an abstract one). `listening`: a listener only.
/// None where the kernel cannot be asked (then a connect tells).
fn unix_takes(ty: i32, addr: &[u8], listening: bool) -> Option<bool> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const LISTEN: u8 = 10;
    let takes = |t: u8, st: u8| {
        t as i32 == ty && (st == LISTEN || (!listening && t as i32 == libc::SOCK_DGRAM))
    };
    match unix_path(addr) {
        Some(p) => match p.symlink_metadata() {
            // (Asked again where a dump fails: the fallback, a connect,
            // is a client the socket's owner may count, and one reached
            // another restore's listener; a sweep of stop 47.)
            Ok(m) if m.file_type().is_socket() => (0..3)
                .find_map(|_| sys::unix_bound_to(m.dev(), m.ino()).ok())
                .map(|v| v.iter().any(|&(t, st)| takes(t, st))),
            // (Nothing there, or not a socket file: nothing bound to it.)
            _ => Some(false),
        },
        None => {
            let name = addr.get(2..).filter(|n| n.first() == Some(&0))?;
            let shown: String = name
                .iter()
                .map(|&c| if c == 0 { '@' } else { c as char })
                .collect();
            let table = std::fs::read_to_string("/proc/net/unix").ok()?;
            // Num RefCount Protocol Flags Type St Inode Path (a stream
            // connection accepted from a listener has its name too).
            Some(table.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 8 && f[7..].join(" ") == shown && {
                    let t = u8::from_str_radix(f[4], 16).unwrap_or(0);
                    let st = if f[3] == "00010000" { LISTEN } else { 0 };
                    takes(t, st)
                }
            }))
        }
    }
}

/// Whether a socket listens (or receives) at unix path `addr`. A leftover
/// socket file is not in use, nor is a name only connections accepted
/// from a listener that is gone still have.
fn unix_in_use(s: &Socket, addr: &[u8]) -> bool {
    unix_takes(s.sock_type as i32, addr, false).unwrap_or_else(|| unix_connects(s, addr))
}

/// Whether a connect to unix address `addr` succeeds (a leftover socket
/// file refuses: ECONNREFUSED). A client the socket's owner may count.
fn unix_connects(s: &Socket, addr: &[u8]) -> bool {
    sys::socket(libc::AF_UNIX, s.sock_type as i32, 0)
        .and_then(|t| sys::connect(t.as_fd(), addr))
        .is_ok()
}

/// Whether a socket listens at unix address `addr` (a connection
/// attempt that does not wait: a full queue is a listener too).
fn unix_listening(ty: i32, addr: &[u8]) -> bool {
    if let Some(yes) = unix_takes(ty, addr, true) {
        return yes;
    }
    let Ok(t) = sys::socket(libc::AF_UNIX, ty, 0) else {
        return false;
    };
    let fl = sys::getfl(t.as_raw_fd()).unwrap_or(0);
    let _ = sys::setfl(t.as_raw_fd(), fl | libc::O_NONBLOCK);
    match sys::connect(t.as_fd(), addr) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EAGAIN),
    }
}

/// Check fd `f`'s socket can be made here: its address is free.
pub(crate) fn plan(
    img: &Image,
    object: u32,
    flags: i32,
    err: &FdErr,
) -> Result<Source, RestoreError> {
    let s = img
        .sockets()
        .get(object as usize)
        .ok_or_else(|| err.why("no socket state in the image"))?;
    if !matches!(
        s.state,
        socket_state::UNBOUND
            | socket_state::BOUND
            | socket_state::LISTENING
            | socket_state::CONNECTED
            | socket_state::PAIR
            | socket_state::WIDOWED
            | socket_state::PENDING
            | socket_state::REPAIRED
    ) {
        return Err(err.why(format!("unknown socket state {}", s.state)));
    }
    if s.state == socket_state::WIDOWED
        && s.sock_type as i32 != libc::SOCK_DGRAM
        && s.addr_len > 2
        && unix_listening(s.sock_type as i32, &addr_of(&s))
    {
        // (`accepted_widow` would move a live socket's file aside, or
        // find an abstract name taken.)
        return Err(err.why(format!(
            "it was accepted at {}, where a socket listens now (the captured process, or an earlier restore of it, still has it); it would be made again there",
            sockaddr_display(&addr_of(&s))
        )));
    }
    if s.state == socket_state::REPAIRED {
        // The connection must not be there any more: the captured
        // process (or an earlier restore of it) would still have it.
        let (a, b) = (addr_of(&s), peer_of(&s));
        let locked = img
            .tcp_conns()
            .iter()
            .any(|t| t.sock == object && t.options & cryo_image::fds::tcp_opts::LOCKED != 0);
        if locked && !cryo_image::netlock::available() {
            return Err(err.why(format!(
                "the capture locked the TCP connection {} -> {} with nftables (its packets are dropped until the restore), and `nft` is not here to unlock it (apt-get install nftables)",
                sockaddr_display(&a),
                sockaddr_display(&b)
            )));
        }
        if let Some((state, orphan)) = tcp_connection_state(&a, &b) {
            let why = match state {
                // An orphan an earlier restore closed (its peer has not):
                // the kernel ends it on its own.
                4 | 5 | 9 | 11 if orphan => format!(
                    "no process holds it any more, but it is still closing ({}; closed by a process that held it, an earlier restore of this image maybe, and not yet by its peer): the kernel drops it within net.ipv4.tcp_fin_timeout ({} s here) or once the peer closes",
                    tcp_state_name(state),
                    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
                        .map_or_else(|_| "?".to_owned(), |t| t.trim().to_owned())
                ),
                _ => format!(
                    "{}: the captured process, or an earlier restore of it, still has it",
                    tcp_state_name(state)
                ),
            };
            return Err(err.why(format!(
                "the TCP connection {} -> {} still exists ({why})",
                sockaddr_display(&a),
                sockaddr_display(&b)
            )));
        }
        return Ok(Source::Socket {
            sock: object,
            flags,
        });
    }
    if s.family as i32 == libc::AF_NETLINK {
        if !matches!(
            s.state,
            socket_state::UNBOUND | socket_state::BOUND | socket_state::CONNECTED
        ) {
            return Err(err.why(format!(
                "a netlink socket in state {}",
                socket_state::name(s.state)
            )));
        }
        // Its port id must be free: a probe binds it and is closed.
        if netlink_bound(&s) {
            let addr = addr_of(&s);
            sys::socket(s.family as i32, s.sock_type as i32, s.protocol as i32)
                .and_then(|t| sys::bind(t.as_fd(), &addr))
                .map_err(|e| err.why(in_use(&sockaddr_display(&addr), e)))?;
        }
        return Ok(Source::Socket {
            sock: object,
            flags,
        });
    }
    let bound = matches!(s.state, socket_state::BOUND | socket_state::LISTENING)
        || (s.state == socket_state::CONNECTED && bound_addr(&s));
    if bound {
        let addr = addr_of(&s);
        let shown = sockaddr_display(&addr);
        if inet(&s) {
            // A probe socket binds (with SO_REUSEADDR, as the real one
            // will, so connections of the captured process lingering in
            // TIME_WAIT do not count) and is closed again.
            let probe = sys::socket(s.family as i32, s.sock_type as i32, s.protocol as i32)
                .and_then(|t| {
                    let on = 1i32.to_ne_bytes();
                    sys::setsockopt(t.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &on)?;
                    if s.family as i32 == libc::AF_INET6 {
                        v6only_like(img, object, t.as_fd())?;
                    }
                    bind_inet(t.as_fd(), &addr, s.flags & socket_flags::FOREIGN != 0)
                });
            // A connection of the image through this port, closed by the
            // program of an earlier restore and left in TIME_WAIT: made
            // again first at install, which clears the TIME_WAIT.
            let own_connection = s.sock_type as i32 == libc::SOCK_STREAM
                && img.sockets().iter().any(|o| {
                    inet(&o)
                        && o.state == socket_state::PAIR
                        && port_of(&addr_of(&o)) == port_of(&addr)
                });
            match probe {
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && own_connection => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EADDRINUSE)
                        && s.sock_type as i32 == libc::SOCK_STREAM
                        && !tcp_listener_on(port_of(&addr)) =>
                {
                    return Err(err.why(format!(
                        "{shown} is held by connections in TIME_WAIT that the captured process left, and it did not set SO_REUSEADDR, so the kernel keeps the port for them; they expire within 60 s"
                    )));
                }
                Err(e) => return Err(err.why(in_use(&shown, e))),
                Ok(()) => {}
            }
        } else if let Some(why) = renamed_obstacle(img, object, &s) {
            return Err(err.why(why));
        } else if s.flags & socket_flags::GHOST == 0
            && in_bind_dir(img, object, &s, || {
                Ok(unix_path(&addr).is_some_and(|p| p.exists()) && unix_in_use(&s, &addr))
            })
            .map_err(|w| err.why(w))?
        {
            return Err(err.why(format!(
                "{shown} is in use: a socket listens there (the captured process, or another, still runs)"
            )));
        }
    }
    Ok(Source::Socket {
        sock: object,
        flags,
    })
}

/// Whether /proc/net/tcp (tcp6) lists a socket with local address `a`
/// and remote address `b` (sockaddr bytes), in any state but TIME_WAIT
/// (what an earlier restore of it left: a socket in repair mode may take
/// its place, where the kernel allows it).
/// The name of a TCP state as /proc/net/tcp numbers it.
fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        11 => "CLOSING",
        _ => "another state",
    }
}

/// The state of the TCP connection `a` -> `b` (not TIME-WAIT, which a
/// socket in repair mode takes over) and whether no process holds it
/// (its inode is 0: an orphan), if it exists.
fn tcp_connection_state(a: &[u8], b: &[u8]) -> Option<(u8, bool)> {
    // As the kernel prints them: each 32-bit word of the address as a
    // host-order hex number, then the port.
    let shown = |s: &[u8]| -> Option<String> {
        let (ip, port) = match i32::from(u16::from_ne_bytes([*s.first()?, *s.get(1)?])) {
            libc::AF_INET => (s.get(4..8)?, s.get(2..4)?),
            libc::AF_INET6 => (s.get(8..24)?, s.get(2..4)?),
            _ => return None,
        };
        let mut out: String = ip
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        out += &format!(":{:04X}", u16::from_be_bytes([port[0], port[1]]));
        Some(out)
    };
    let (a, b) = (shown(a)?, shown(b)?);
    let mut found = None;
    any_tcp_socket(|w| {
        let hit = w.get(1) == Some(&a.as_str())
            && w.get(2) == Some(&b.as_str())
            && w.get(3) != Some(&"06");
        if hit {
            let state = w
                .get(3)
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .unwrap_or(0);
            found = Some((state, w.get(9) == Some(&"0")));
        }
        hit
    });
    found
}

/// Whether a line of /proc/net/tcp or tcp6 (its fields: sl, local
/// address, remote address, state, ...) satisfies `f`.
fn any_tcp_socket(mut f: impl FnMut(&[&str]) -> bool) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .skip(1)
                .any(|l| f(&l.split_whitespace().collect::<Vec<_>>()))
        })
    })
}

fn port_of(addr: &[u8]) -> u16 {
    addr.get(2..4)
        .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
}

/// Whether a TCP socket listens on `port` (any address, v4 or v6), by
/// /proc/net/tcp and tcp6 (state 0A).
fn tcp_listener_on(port: u16) -> bool {
    any_tcp_socket(|w| {
        let p = w
            .get(1)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        p == Some(port) && w.get(3) == Some(&"0A")
    })
}

fn in_use(shown: &str, e: std::io::Error) -> Why {
    if e.raw_os_error() == Some(libc::EADDRINUSE) {
        Why::Said(format!(
            "{shown} is in use (the captured process, or another, still holds it)"
        ))
    } else {
        Why::sys(format!("binding {shown}"), e)
    }
}

/// A connected datagram socket that had an address: bound before its
/// connect, or given one by it (UDP: an ephemeral port the program may
/// have told someone), bound to it again.
fn bound_addr(s: &Socket) -> bool {
    let a = addr_of(s);
    if inet(s) {
        a.get(2..4).is_some_and(|p| p != [0, 0])
    } else {
        a.len() > 2
    }
}

/// IPV6_V6ONLY as captured, on the probe: it decides which addresses
/// a v6 bind takes.
fn v6only_like(img: &Image, object: u32, fd: BorrowedFd) -> std::io::Result<()> {
    for o in img.sockopts().iter() {
        if o.sock == object && o.level == libc::IPPROTO_IPV6 && o.name == libc::IPV6_V6ONLY {
            let (b, n) = opt_bytes(&o);
            sys::setsockopt(fd, o.level, o.name, &b[..n])?;
        }
    }
    Ok(())
}

fn opt_bytes(o: &cryo_image::fds::SockOpt) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&o.val[0].to_le_bytes());
    b[8..].copy_from_slice(&o.val[1].to_le_bytes());
    (b, (o.len as usize).min(16))
}

fn opt_name(level: i32, name: i32) -> String {
    let n = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => "SO_REUSEADDR",
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => "SO_REUSEPORT",
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => "SO_KEEPALIVE",
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => "SO_RCVBUF",
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => "SO_SNDBUF",
        (libc::SOL_SOCKET, libc::SO_MARK) => "SO_MARK",
        (libc::SOL_SOCKET, libc::SO_PRIORITY) => "SO_PRIORITY",
        (libc::SOL_SOCKET, libc::SO_LINGER) => "SO_LINGER",
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => "TCP_NODELAY",
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT) => "TCP_DEFER_ACCEPT",
        (libc::IPPROTO_TCP, libc::TCP_FASTOPEN) => "TCP_FASTOPEN",
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => "IPV6_V6ONLY",
        (libc::IPPROTO_IP, libc::IP_TOS) => "IP_TOS",
        (libc::IPPROTO_IP, libc::IP_TTL) => "IP_TTL",
        (libc::IPPROTO_IP, libc::IP_TRANSPARENT) => "IP_TRANSPARENT",
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER) => "IP_MTU_DISCOVER",
        (libc::IPPROTO_IP, libc::IP_MULTICAST_IF) => "IP_MULTICAST_IF",
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => "TCP_MAXSEG",
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => "TCP_CONGESTION",
        (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP) => "TCP_WINDOW_CLAMP",
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPING) => "SO_TIMESTAMPING",
        (libc::SOL_SOCKET, libc::SO_BUSY_POLL) => "SO_BUSY_POLL",
        (libc::SOL_SOCKET, libc::SO_ZEROCOPY) => "SO_ZEROCOPY",
        (libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE) => "SO_MAX_PACING_RATE",
        (libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT) => "IPV6_TRANSPARENT",
        (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF) => "IPV6_MULTICAST_IF",
        _ => "",
    };
    if n.is_empty() {
        format!("option {name} of level {level}")
    } else {
        n.to_owned()
    }
}

/// Every captured option of socket `object` on `fd`, where it differs
/// from what `fd` has, each read back and compared; then its filter.
pub(crate) fn set_options(img: &Image, object: u32, fd: BorrowedFd) -> Result<(), Why> {
    set_plain_options(img, object, fd)?;
    attach_filter(img, object, fd)?;
    join_groups(img, object, fd)
}

/// The multicast groups socket `object` had joined (11.13), joined
/// again (MCAST_JOIN_GROUP) on the device of the same name, each asked
/// back (MCAST_MSFILTER answers only for a member).
fn join_groups(img: &Image, object: u32, fd: BorrowedFd) -> Result<(), Why> {
    const MCAST_JOIN_GROUP: i32 = 42;
    const MCAST_MSFILTER: i32 = 48;
    for g in img.mcast_groups().iter().filter(|g| g.sock == object) {
        let dev_len = g.dev.iter().position(|&c| c == 0).unwrap_or(16);
        let dev = String::from_utf8_lossy(&g.dev[..dev_len]).into_owned();
        let (level, shown) = if g.family as i32 == libc::AF_INET {
            let a: [u8; 4] = [g.group[0], g.group[1], g.group[2], g.group[3]];
            (libc::IPPROTO_IP, std::net::Ipv4Addr::from(a).to_string())
        } else {
            (
                libc::IPPROTO_IPV6,
                std::net::Ipv6Addr::from(g.group).to_string(),
            )
        };
        let what = format!("multicast group {shown} on {dev}");
        let ifindex =
            sys::ifindex(&dev).map_err(|e| Why::sys(format!("finding the device of {what}"), e))?;
        // struct group_req: the device's index, then a sockaddr_storage
        // at 8; MCAST_MSFILTER's group_filter has the same start.
        let mut req = [0u8; 144 + 128];
        req[..4].copy_from_slice(&ifindex.to_ne_bytes());
        req[8..10].copy_from_slice(&(g.family as u16).to_ne_bytes());
        if g.family as i32 == libc::AF_INET {
            req[12..16].copy_from_slice(&g.group[..4]);
        } else {
            req[16..32].copy_from_slice(&g.group);
        }
        sys::setsockopt(fd, level, MCAST_JOIN_GROUP, &req[..136])
            .map_err(|e| Why::sys(format!("joining {what}"), e))?;
        sys::getsockopt(fd, level, MCAST_MSFILTER, &mut req)
            .map_err(|e| Why::sys(format!("asking back {what}"), e))?;
    }
    Ok(())
}

/// [`set_options`] without the filter.
fn set_plain_options(img: &Image, object: u32, fd: BorrowedFd) -> Result<(), Why> {
    set_options_of_level(img, object, fd, None)
}

/// [`set_plain_options`], of one level only (`Some(SOL_SOCKET)`...).
fn set_options_of_level(
    img: &Image,
    object: u32,
    fd: BorrowedFd,
    level: Option<i32>,
) -> Result<(), Why> {
    let late = late_reuse(img, object);
    let late_port = late_reuseport(img, object);
    // A buffer size the program did not set (SO_BUF_LOCK, Linux 5.14,
    // says which it did) is the kernel's: grown by autotuning, it may be
    // odd or above net.core.rmem_max/wmem_max, which SO_RCVBUF and
    // SO_SNDBUF cannot give (seen: CRIU's socket-tcpbuf-local, "SO_RCVBUF
    // did not take"). Left to the kernel to tune again.
    const SO_BUF_LOCK: i32 = 72;
    let buf_lock = img
        .sockopts()
        .iter()
        .find(|o| o.sock == object && o.level == libc::SOL_SOCKET && o.name == SO_BUF_LOCK)
        .map(|o| {
            let (b, _) = opt_bytes(&o);
            i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        });
    let tuned = |o: &cryo_image::fds::SockOpt| {
        o.level == libc::SOL_SOCKET
            && match (o.name, buf_lock) {
                (libc::SO_SNDBUF, Some(l)) => l & 1 == 0,
                (libc::SO_RCVBUF, Some(l)) => l & 2 == 0,
                _ => false,
            }
    };
    for o in img.sockopts().iter().filter(|o| {
        o.sock == object
            && !(late && is_reuse(o))
            && level.is_none_or(|l| l == o.level)
            && !tuned(o)
    }) {
        let (mut want, mut n) = opt_bytes(&o);
        if late_port && is_reuseport(&o) {
            // On for the bind; as captured once every socket is bound.
            (want, n) = ([0; 16], 4);
            want[..4].copy_from_slice(&1i32.to_ne_bytes());
        }
        let want = &want[..n];
        let mut cur = [0u8; 16];
        let got = sys::getsockopt(fd, o.level, o.name, &mut cur)
            .map_err(|e| Why::sys(format!("reading {}", opt_name(o.level, o.name)), e))?;
        if &cur[..got] == want {
            continue;
        }
        let buf_size = o.level == libc::SOL_SOCKET
            && matches!(o.name, libc::SO_RCVBUF | libc::SO_SNDBUF)
            && n == 4;
        let mut val = want.to_vec();
        if buf_size {
            // The kernel doubles what is set (for its bookkeeping) and
            // reports the doubled size.
            let v = i32::from_ne_bytes([want[0], want[1], want[2], want[3]]) / 2;
            val = v.to_ne_bytes().to_vec();
        }
        sys::setsockopt(fd, o.level, o.name, &val)
            .map_err(|e| Why::sys(format!("setting {}", opt_name(o.level, o.name)), e))?;
        let got = sys::getsockopt(fd, o.level, o.name, &mut cur)
            .map_err(|e| Why::sys(format!("reading {}", opt_name(o.level, o.name)), e))?;
        if &cur[..got] != want {
            return Err(Why::Said(format!(
                "{} did not take: captured {:?}, set {:?}",
                opt_name(o.level, o.name),
                want,
                &cur[..got]
            )));
        }
    }
    Ok(())
}

/// Socket `object`'s classic BPF filter (if it had one), read back and
/// compared; locked again if it was.
fn attach_filter(img: &Image, object: u32, fd: BorrowedFd) -> Result<(), Why> {
    use cryo_image::fds::filter_flags;
    let mut flags = 0;
    let insns: Vec<libc::sock_filter> = img
        .sock_filters()
        .iter()
        .filter(|i| i.sock == object)
        .map(|i| {
            flags = i.flags;
            libc::sock_filter {
                code: i.code as u16,
                jt: i.jt as u8,
                jf: i.jf as u8,
                k: i.k,
            }
        })
        .collect();
    if insns.is_empty() {
        return Ok(());
    }
    sys::attach_filter(fd, &insns).map_err(|e| Why::sys("attaching its socket filter", e))?;
    // (SO_GET_FILTER: the length given and returned counts instructions.)
    let mut back = vec![0u8; insns.len() * 8];
    let n = sys::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &mut back)
        .map_err(|e| Why::sys("reading its socket filter back", e))?;
    let same = n == insns.len()
        && back.chunks_exact(8).zip(&insns).all(|(c, i)| {
            u16::from_ne_bytes([c[0], c[1]]) == i.code
                && c[2] == i.jt
                && c[3] == i.jf
                && u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) == i.k
        });
    if !same {
        return Err(Why::Said(
            "its socket filter did not take as captured".into(),
        ));
    }
    if flags & filter_flags::LOCKED != 0 {
        sys::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LOCK_FILTER,
            &1i32.to_ne_bytes(),
        )
        .map_err(|e| Why::sys("locking its socket filter (SO_LOCK_FILTER)", e))?;
    }
    Ok(())
}

fn is_reuse(o: &cryo_image::fds::SockOpt) -> bool {
    o.level == libc::SOL_SOCKET && o.name == libc::SO_REUSEADDR
}

fn is_reuseport(o: &cryo_image::fds::SockOpt) -> bool {
    o.level == libc::SOL_SOCKET && o.name == libc::SO_REUSEPORT
}

/// Whether socket `object` has SO_REUSEPORT set (as captured).
fn reuseport_on(img: &Image, object: u32) -> bool {
    img.sockopts()
        .iter()
        .any(|o| o.sock == object && is_reuseport(&o) && opt_bytes(&o).0[..4] != [0; 4])
}

/// A bound TCP/UDP socket whose SO_REUSEPORT was off when captured while
/// another socket of the image, on the same port and of the same type,
/// had it on: both were bound with it on (a reuseport group), and the
/// program turned it off afterwards. Bound in that order again, the
/// second bind fails, so this one is bound with it on and
/// [`finish_reuse`] turns it off again.
fn late_reuseport(img: &Image, object: u32) -> bool {
    let socks = img.sockets();
    let Some(s) = socks.get(object as usize) else {
        return false;
    };
    let bound = matches!(s.state, socket_state::BOUND | socket_state::LISTENING);
    if !inet(&s) || !bound || reuseport_on(img, object) {
        return false;
    }
    let port = port_of(&addr_of(&s));
    socks.iter().enumerate().any(|(i, t)| {
        i as u32 != object
            && inet(&t)
            && t.sock_type == s.sock_type
            && matches!(t.state, socket_state::BOUND | socket_state::LISTENING)
            && port_of(&addr_of(&t)) == port
            && reuseport_on(img, i as u32)
    })
}

/// A TCP connection's end keeps SO_REUSEADDR on (from the listener that
/// made it) until every socket of the restore is made: the program's own
/// listener on the same port, without SO_REUSEADDR (Python's socketserver
/// default), could not be bound beside a connection without it either,
/// and was bound first in the original. [`finish_reuse`] sets it as it
/// was, once every process has its fds.
fn late_reuse(img: &Image, object: u32) -> bool {
    img.sockets()
        .get(object as usize)
        .is_some_and(|s| inet(&s) && s.state == socket_state::PAIR)
}

/// SO_REUSEADDR of every TCP connection end as captured (see
/// [`late_reuse`]); fds are at their numbers now.
pub(crate) fn finish_reuse(img: &Image, plan: &crate::fds::Plan) -> Result<(), RestoreError> {
    for f in img.fds().iter() {
        if f.kind != cryo_image::fd_kind::SOCKET {
            continue;
        }
        let (addr, port) = (late_reuse(img, f.object), late_reuseport(img, f.object));
        if !addr && !port {
            continue;
        }
        // Only a socket this restore made (an fd 0-2 kept as the
        // invoker's is not the program's socket).
        let made = plan
            .fds
            .iter()
            .any(|p| p.fd == f.fd && !matches!(p.source, Source::Keep));
        if !made {
            continue;
        }
        for o in img
            .sockopts()
            .iter()
            .filter(|o| o.sock == f.object && ((addr && is_reuse(o)) || (port && is_reuseport(o))))
        {
            let (want, n) = opt_bytes(&o);
            sys::setsockopt_at(f.fd, o.level, o.name, &want[..n]).map_err(|e| {
                RestoreError::Fd {
                    fd: f.fd,
                    what: "socket".into(),
                    why: Why::sys(
                        format!("setting {} as it was", opt_name(o.level, o.name)),
                        e,
                    ),
                }
            })?;
        }
    }
    Ok(())
}

/// bind(2) of a TCP/UDP socket. An address this machine does not have
/// (EADDRNOTAVAIL) is bound with IP_FREEBIND on for the bind, and the
/// flag put back after, if it was not the machine's at capture either
/// (`foreign`): the socket was bound with IP_FREEBIND, turned off since
/// (zdtm's sk-freebind-false). An address the machine had then and has
/// no more is refused (a listener there would never hear from anyone).
fn bind_inet(fd: BorrowedFd, addr: &[u8], foreign: bool) -> std::io::Result<()> {
    match sys::bind(fd, addr) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && foreign => {
            let mut cur = [0u8; 4];
            sys::getsockopt(fd, libc::SOL_IP, libc::IP_FREEBIND, &mut cur)?;
            if cur != [0; 4] {
                return Err(e);
            }
            let set =
                |v: i32| sys::setsockopt(fd, libc::SOL_IP, libc::IP_FREEBIND, &v.to_ne_bytes());
            set(1)?;
            let r = sys::bind(fd, addr);
            set(0)?;
            r
        }
        r => r,
    }
}

/// Bind `fd` to `s`'s address (and listen, if it listened): with
/// SO_REUSEADDR for the bind if the program did not set it, put back
/// after. A stale unix socket file is removed.
fn bind(s: &Socket, fd: BorrowedFd) -> Result<(), Why> {
    let addr = addr_of(s);
    let shown = sockaddr_display(&addr);
    let listen = || {
        if s.state == socket_state::LISTENING {
            sys::listen(fd, s.backlog as i32).map_err(|e| Why::sys("listen", e))
        } else {
            Ok(())
        }
    };
    if inet(s) {
        let mut cur = [0u8; 4];
        sys::getsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &mut cur)
            .map_err(|e| Why::sys("reading SO_REUSEADDR", e))?;
        let off = cur == 0i32.to_ne_bytes();
        let set =
            |v: i32| sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &v.to_ne_bytes());
        if off {
            set(1).map_err(|e| Why::sys("setting SO_REUSEADDR", e))?;
        }
        bind_inet(fd, &addr, s.flags & socket_flags::FOREIGN != 0)
            .map_err(|e| in_use(&shown, e))?;
        listen()?;
        if off {
            set(0).map_err(|e| Why::sys("clearing SO_REUSEADDR", e))?;
        }
        return Ok(());
    }
    let bound = match sys::bind(fd, &addr) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let Some(path) = unix_path(&addr) else {
                return Err(in_use(&shown, e));
            };
            // (Before a socket file is removed as stale, a connect too:
            // a client too many beats a live server's name taken.)
            if unix_in_use(s, &addr) || unix_connects(s, &addr) {
                return Err(in_use(&shown, e));
            }
            // (Only a socket file is stale: anything else there is
            // someone's, put there since the capture.)
            use std::os::unix::fs::FileTypeExt;
            if !path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_socket())
            {
                return Err(format!(
                    "{shown} is taken by a file that is not a socket; cryo does not remove it"
                )
                .into());
            }
            std::fs::remove_file(&path)
                .map_err(|e| Why::sys(format!("removing the stale socket file {shown}"), e))?;
            sys::bind(fd, &addr).map_err(|e| in_use(&shown, e))
        }
        r => r.map_err(|e| in_use(&shown, e)),
    };
    bound?;
    listen()
}

/// A stream or seqpacket end with a name whose other end was closed (a
/// server's connection whose client left; redis's BGSAVE child holds
/// those): accepted again from a listener bound at its name for the
/// moment, from an unnamed client, so that getsockname says what it did.
/// What is at the path now (the stale file of the program's listener:
/// these are made before any listener of the restore, and `plan` refused
/// a live one) is moved aside for that moment, as for a ghost
/// ([`KeptGhost`]); an abstract name must be free. A stranger connecting
/// to the name meanwhile is turned away: only the connection whose peer
/// is this process is taken, and nothing waits for long. Returns (the
/// accepted end, the client).
fn accepted_widow(s: &Socket) -> Result<(OwnedFd, OwnedFd), Why> {
    let addr = addr_of(s);
    let shown = sockaddr_display(&addr);
    let ty = s.sock_type as i32;
    let listener = sys::socket(libc::AF_UNIX, ty, 0).map_err(|e| Why::sys("socket", e))?;
    let mut kept = if unix_path(&addr).is_some() {
        Some(KeptGhost::bind(s, listener.as_fd())?)
    } else {
        sys::bind(listener.as_fd(), &addr).map_err(|e| {
            Why::sys(
                format!("binding {shown} for the moment, to accept its connection again"),
                e,
            )
        })?;
        None
    };
    let pair = accept_own(listener.as_fd(), ty, &addr, &shown);
    if let Some(k) = kept.as_mut() {
        k.undo()?;
    }
    pair
}

/// Connect a client of ours to `listener` (bound at `addr`, ours) and
/// accept it: connections of others that reach it meanwhile are closed,
/// and after 2 s it gives up.
fn accept_own(
    listener: BorrowedFd,
    ty: i32,
    addr: &[u8],
    shown: &str,
) -> Result<(OwnedFd, OwnedFd), Why> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let nonblock = |fd: BorrowedFd, on: bool| -> Result<(), Why> {
        let fl = sys::getfl(fd.as_raw_fd()).map_err(|e| Why::sys("F_GETFL", e))?;
        let fl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        sys::setfl(fd.as_raw_fd(), fl).map_err(|e| Why::sys("F_SETFL", e))
    };
    let me = std::process::id() as i32;
    let peer_pid = |fd: BorrowedFd| {
        let mut cred = [0u8; 12];
        sys::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred)
            .ok()
            .map(|_| i32::from_ne_bytes([cred[0], cred[1], cred[2], cred[3]]))
    };
    let late = || {
        Why::Said(format!(
            "{shown}: others kept connecting to it while cryo restore made a connection there again; try again"
        ))
    };
    sys::listen(listener, 64).map_err(|e| Why::sys("listen", e))?;
    nonblock(listener, true)?;
    let client = sys::socket(libc::AF_UNIX, ty, 0).map_err(|e| Why::sys("socket", e))?;
    nonblock(client.as_fd(), true)?;
    // Others' connections taken off the queue and closed (they reached a
    // listener of the moment, not the program's).
    let turn_away = || -> Result<Option<OwnedFd>, Why> {
        loop {
            match sys::accept(listener) {
                Ok(a) if peer_pid(a.as_fd()) == Some(me) => return Ok(Some(a)),
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
                Err(e) => return Err(Why::sys(format!("accepting at {shown}"), e)),
            }
        }
    };
    loop {
        match sys::connect(client.as_fd(), addr) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if turn_away()?.is_some() || std::time::Instant::now() > deadline {
                    return Err(late());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => {
                return Err(Why::sys(format!("connecting to {shown} for the moment"), e));
            }
        }
    }
    loop {
        if let Some(a) = turn_away()? {
            nonblock(client.as_fd(), false)?;
            return Ok((a, client));
        }
        if std::time::Instant::now() > deadline {
            return Err(late());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Bind a unix socket whose file was removed (or replaced) after its bind
/// (`socket_flags::GHOST`) at its name again, run `while_bound` (the
/// datagram sockets connected to it connect then), and remove the file
/// the bind makes, so that it has its name and no file, as it had
/// ([`KeptGhost`] for that moment: what is at the name now is moved aside
/// and back, directories of the name that are gone too are made and
/// removed again).
fn bind_ghost(
    s: &Socket,
    fd: BorrowedFd,
    while_bound: impl FnOnce(&[u8]) -> Result<(), Why>,
) -> Result<(), Why> {
    let mut kept = KeptGhost::bind(s, fd)?;
    let r = while_bound(&addr_of(s));
    kept.undo()?;
    r?;
    if s.state == socket_state::LISTENING {
        sys::listen(fd, s.backlog as i32).map_err(|e| Why::sys("listen", e))?;
    }
    Ok(())
}

/// A unix socket whose file was renamed since its bind
/// (`socket_flags::RENAMED`): bound again at its name (what is there now
/// moved aside for the moment), its file renamed to the name it had at
/// capture. A live socket at that name is another's: refused; a socket
/// file no socket listens at is a leftover, replaced.
fn bind_renamed(img: &Image, object: u32, s: &Socket, fd: BorrowedFd) -> Result<(), Why> {
    if let Some(why) = renamed_obstacle(img, object, s) {
        return Err(why.into());
    }
    let Some(to) = renamed_path(img, object) else {
        return Err("its file was renamed since its bind, but the image has no name for it".into());
    };
    let shown = to.display().to_string();
    let mut kept = KeptGhost::bind(
        &Socket {
            state: socket_state::BOUND,
            ..*s
        },
        fd,
    )?;
    // Listening before its file has its name: whoever finds the file
    // finds it listening.
    let moved = if s.state == socket_state::LISTENING {
        sys::listen(fd, s.backlog as i32).map_err(|e| Why::sys("listen", e))
    } else {
        Ok(())
    }
    .and_then(|()| {
        std::fs::rename(kept.path(), &to)
            .map_err(|e| Why::sys(format!("renaming its socket file to {shown}, as it was"), e))
    });
    kept.undo()?;
    moved
}

/// The name a `socket_flags::RENAMED` socket's file had at capture.
fn renamed_path(img: &Image, object: u32) -> Option<std::path::PathBuf> {
    socket_file(img, object)
        .and_then(|id| img.str(id.path))
        .map(std::path::PathBuf::from)
}

/// Why a `socket_flags::RENAMED` socket's file cannot be given its name
/// again: a file that is not a socket is there, or a live socket (the
/// plan checks it, the dry run included; the bind again).
fn renamed_obstacle(img: &Image, object: u32, s: &Socket) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    if s.flags & socket_flags::RENAMED == 0 {
        return None;
    }
    let Some(to) = renamed_path(img, object) else {
        return Some(
            "its file was renamed since its bind, but the image has no name for it".into(),
        );
    };
    let shown = to.display().to_string();
    let m = to.symlink_metadata().ok()?;
    let mut at = vec![libc::AF_UNIX as u8, 0];
    at.extend_from_slice(to.as_os_str().as_bytes());
    at.push(0);
    if !m.file_type().is_socket() {
        return Some(format!(
            "its file was renamed to {shown} since its bind, and {shown} is a file that is not a socket now; cryo does not remove it"
        ));
    }
    unix_in_use(s, &at).then(|| {
        format!(
            "its file was renamed to {shown} since its bind, and a socket is in use at {shown} (another restore of this image?)"
        )
    })
}

/// The directories of a unix socket's path that are gone (removed since
/// its bind, zdtm sk-unix01), made (0700) for a bind at that path, and
/// removed again, deepest first, once it is done: [`DirsMade::remove`],
/// or on drop if an error came first.
struct DirsMade(Vec<std::path::PathBuf>);

impl DirsMade {
    fn for_path(path: &std::path::Path) -> Result<DirsMade, Why> {
        use std::os::unix::fs::DirBuilderExt;
        let mut gone: Vec<std::path::PathBuf> = path
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
            .take_while(|d| d.symlink_metadata().is_err())
            .map(std::path::Path::to_path_buf)
            .collect();
        gone.reverse();
        let mut made = DirsMade(Vec::new());
        for d in gone {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .map_err(|e| {
                    Why::sys(
                        format!(
                            "making the directory {} again for the moment (it was removed after the socket's bind)",
                            d.display()
                        ),
                        e,
                    )
                })?;
            made.0.push(d);
        }
        Ok(made)
    }

    fn remove(mut self) -> Result<(), Why> {
        while let Some(d) = self.0.pop() {
            std::fs::remove_dir(&d).map_err(|e| {
                Why::sys(
                    format!("removing {} again (gone at capture)", d.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for DirsMade {
    fn drop(&mut self) {
        while let Some(d) = self.0.pop() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// A ghost (`socket_flags::GHOST`) that datagram sockets of other
/// processes of a tree are connected to: made by `cryo restore` before the
/// tree is forked, bound at its name with its file kept (and what was at
/// the name moved aside, directories made) until every process has
/// connected to it, then put as it was: [`KeptGhost::release`] (by the
/// root, at the *ready* barrier), or on drop if the restore fails. (Only
/// one process drops it: the forked processes of the tree end with
/// `exit_now` or exec, and panics abort.)
pub(crate) struct KeptGhost {
    path: std::path::PathBuf,
    /// The socket file the bind made (device, inode): removed only if the
    /// path still leads to it.
    made: (u64, u64),
    aside: Option<std::path::PathBuf>,
    dirs: Option<DirsMade>,
    done: bool,
    /// A relative name: the directory of the restore's own it is bound
    /// in, this process's working directory meanwhile (last: left after
    /// the rest is undone).
    home: Option<PrivateDir>,
}

/// A fresh directory (0700, in the temporary directory) that this
/// process works in until it is dropped: then back in the directory it
/// left, and the directory removed (if it is empty by then). A ghost
/// socket with a relative name is bound there: only its name says
/// where it was, and the name is what getsockname gives back.
struct PrivateDir {
    path: std::path::PathBuf,
    back: OwnedFd,
}

impl PrivateDir {
    fn enter() -> Result<PrivateDir, Why> {
        use std::os::unix::fs::DirBuilderExt;
        let back = sys::open(c".", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .map_err(|e| Why::sys("opening the working directory", e))?;
        let base = std::env::temp_dir();
        let mut n = 0u32;
        let path = loop {
            let p = base.join(format!("cryo-ghost-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => {
                    return Err(Why::sys(
                        format!(
                            "making {} to bind a socket by its relative name",
                            p.display()
                        ),
                        e,
                    ))
                }
            }
        };
        if let Err(e) = std::env::set_current_dir(&path) {
            let _ = std::fs::remove_dir(&path);
            return Err(Why::sys(format!("entering {}", path.display()), e));
        }
        Ok(PrivateDir { path, back })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = sys::fchdir(self.back.as_raw_fd());
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl KeptGhost {
    /// Bind `fd` at ghost `s`'s name, its file kept until [`Self::undo`]:
    /// what is at the name now moved aside in its directory, directories
    /// of the name that are gone made ([`DirsMade`]).
    fn bind(s: &Socket, fd: BorrowedFd) -> Result<KeptGhost, Why> {
        use std::os::unix::fs::MetadataExt;
        let addr = addr_of(s);
        let shown = sockaddr_display(&addr);
        let Some(path) = unix_path(&addr) else {
            return Err(format!(
                "{shown}: a socket without a file marked as one whose file is gone"
            )
            .into());
        };
        // (Before anything at the path is looked at: from there.)
        let home = if path.is_relative() {
            Some(PrivateDir::enter()?)
        } else {
            None
        };
        let mut kept = KeptGhost {
            dirs: Some(DirsMade::for_path(&path)?),
            path,
            made: (0, 0),
            aside: None,
            // (Nothing of ours at the path yet.)
            done: true,
            home,
        };
        if kept.path.symlink_metadata().is_ok() {
            let mut tmp = kept.path.clone().into_os_string();
            tmp.push(format!(".cryo-aside-{}", std::process::id()));
            let tmp = std::path::PathBuf::from(tmp);
            std::fs::rename(&kept.path, &tmp).map_err(|e| {
                Why::sys(
                    format!("moving {shown} aside to bind the socket whose file it replaced"),
                    e,
                )
            })?;
            kept.aside = Some(tmp);
        }
        if let Err(e) = sys::bind(fd, &addr) {
            // (What was moved aside goes back, the directories made go.)
            if let Some(tmp) = kept.aside.take() {
                let _ = std::fs::rename(&tmp, &kept.path);
            }
            return Err(Why::sys(format!("binding {shown}"), e));
        }
        kept.done = false;
        if let Ok(m) = std::fs::symlink_metadata(&kept.path) {
            kept.made = (m.dev(), m.ino());
        }
        Ok(kept)
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(crate) fn release(mut self) -> Result<(), RestoreError> {
        self.undo().map_err(|w| RestoreError::Fd {
            fd: -1,
            what: "unix socket whose file was gone".into(),
            why: w,
        })
    }

    fn undo(&mut self) -> Result<(), Why> {
        use std::os::unix::fs::MetadataExt;
        self.done = true;
        let shown = self.path.display().to_string();
        let now = std::fs::symlink_metadata(&self.path);
        let gone = now
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        let ours = now.is_ok_and(|m| (m.dev(), m.ino()) == self.made);
        if !ours && !gone {
            // Someone else's file now: nothing is moved back over it (the
            // directories made stay if it is in them).
            let aside = self
                .aside
                .take()
                .map(|t| format!(" (what was there at capture is at {})", t.display()))
                .unwrap_or_default();
            drop(self.dirs.take());
            return Err(Why::Said(format!(
                "{shown}, bound for the moment for the socket whose file was gone, is another file now; left as it is{aside}"
            )));
        }
        let removed = if ours {
            std::fs::remove_file(&self.path).map_err(|e| {
                Why::sys(
                    format!("removing {shown} (its file was gone at capture)"),
                    e,
                )
            })
        } else {
            Ok(())
        };
        if let Some(tmp) = self.aside.take() {
            std::fs::rename(&tmp, &self.path)
                .map_err(|e| Why::sys(format!("moving {} back to {shown}", tmp.display()), e))?;
        }
        if let Some(d) = self.dirs.take() {
            d.remove()?;
        }
        drop(self.home.take());
        removed
    }
}

impl Drop for KeptGhost {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.undo();
        }
    }
}

/// Make a ghost socket (`fds::Plan` `p`, socket `object`) that clients in
/// other processes of the tree connect to by name: bound there, its file
/// kept ([`KeptGhost`]).
pub(crate) fn make_kept_ghost(
    img: &Image,
    p: &FdPlan,
    object: u32,
    flags: i32,
) -> Result<(RawFd, KeptGhost), RestoreError> {
    let s = img
        .sockets()
        .get(object as usize)
        .ok_or_else(|| fd_err(p, "no socket state in the image"))?;
    // (Kept bound while the whole tree is made: a relative name would
    // keep `cryo restore` in a directory of its own meanwhile; capture
    // refuses it.)
    if unix_path(&addr_of(&s)).is_some_and(|n| n.is_relative()) {
        return Err(fd_err(
            p,
            "a ghost bound to a relative name that other processes of the tree connect to; not supported",
        ));
    }
    let fd = sys::socket(s.family as i32, s.sock_type as i32, s.protocol as i32)
        .map_err(|e| fd_err(p, Why::sys("socket", e)))?;
    set_options(img, object, fd.as_fd()).map_err(|w| fd_err(p, w))?;
    let kept = KeptGhost::bind(&s, fd.as_fd()).map_err(|w| fd_err(p, w))?;
    set_status_flags(fd.as_raw_fd(), flags).map_err(|e| fd_err(p, e))?;
    Ok((fd.into_raw_fd(), kept))
}

/// Whether socket `object` of `img` (a shared object of a tree) is a bound
/// ghost that datagram sockets of the tree (`images`) connect to by its
/// name (`socket_flags::GHOST_PEER`): clients of a ghost several
/// processes hold, or of another process's. Made by `cryo restore` with
/// its file kept ([`make_kept_ghost`]).
pub(crate) fn kept_ghost<'a>(
    img: &Image,
    object: u32,
    mut images: impl Iterator<Item = Image<'a>>,
) -> bool {
    let Some(g) = img.sockets().get(object as usize) else {
        return false;
    };
    if g.flags & socket_flags::GHOST == 0 || g.state != socket_state::BOUND {
        return false;
    }
    let want = addr_of(&g);
    images.any(|i| {
        i.sockets()
            .iter()
            .any(|s| s.flags & socket_flags::GHOST_PEER != 0 && peer_of(&s) == want)
    })
}

/// Whether a datagram socket of the process is connected to `object`, a
/// ghost (`socket_flags::GHOST_PEER`): it is bound later, in
/// [`connect_waiting`], and they connect while it is.
fn has_ghost_peers(img: &Image, object: u32) -> bool {
    img.sockets()
        .iter()
        .any(|o| o.flags & socket_flags::GHOST_PEER != 0 && o.pair == object)
}

/// The two ends of a connected unix pair, as `sa` and `sb` were: made
/// with socketpair(2) when neither has a name; else connected through a
/// listener made for the moment at the address of the end that was
/// accepted (whose own address is the other's peer), so that each end's
/// own and peer address read as they did. The listener is closed at
/// once; a socket file it left where there was none is removed (the
/// program's own listener, if it has one, is made again afterwards, and
/// takes the path as a stale one).
fn connected(
    sa: &Socket,
    sb: &Socket,
    a_accepted: Option<bool>,
    v6only: &dyn Fn(usize, BorrowedFd) -> std::io::Result<()>,
) -> Result<(OwnedFd, OwnedFd), Why> {
    if inet(sa) {
        return if a_accepted.unwrap_or(true) {
            connected_tcp([sa, sb], &|k, fd| v6only(k, fd))
        } else {
            connected_tcp([sb, sa], &|k, fd| v6only(1 - k, fd)).map(|(b, a)| (a, b))
        };
    }
    let (family, ty) = (sa.family as i32, sa.sock_type as i32);
    if sa.addr_len <= 2 && sb.addr_len <= 2 {
        return sys::socketpair(family, ty).map_err(|e| Why::sys("socketpair", e));
    }
    if ty == libc::SOCK_DGRAM {
        // A datagram end's peer name is whatever its peer is bound to
        // now: a pair, then each end bound (again as a ghost if its file
        // was gone; zdtm sk-unix01 binds both ends to one name).
        let (a, b) = sys::socketpair(family, ty).map_err(|e| Why::sys("socketpair", e))?;
        for (s, fd) in [(sa, a.as_fd()), (sb, b.as_fd())] {
            if s.addr_len <= 2 {
                continue;
            }
            let s = Socket {
                state: socket_state::BOUND,
                ..*s
            };
            if s.flags & socket_flags::GHOST != 0 {
                bind_ghost(&s, fd, |_| Ok(()))?;
            } else {
                bind(&s, fd)?;
            }
        }
        return Ok((a, b));
    }
    // (Both named: either may take the listener's part; the addresses
    // come out the same.)
    let a_accepted = sa.addr_len > 2 && addr_of(sa) == peer_of(sb);
    let (srv, cli) = if a_accepted { (sa, sb) } else { (sb, sa) };
    let at = addr_of(srv);
    if at != peer_of(cli) || (cli.addr_len > 2 && addr_of(cli) != peer_of(srv)) {
        return Err("the two ends' addresses do not name each other".into());
    }
    let path = unix_path(&at);
    // (Its directory may be gone too: made for the moment.)
    let dirs = path.as_deref().map(DirsMade::for_path).transpose()?;
    let existed = path.as_ref().is_some_and(|p| p.symlink_metadata().is_ok());
    let listener = sys::socket(family, ty, 0).map_err(|e| Why::sys("socket", e))?;
    let tmp = Socket {
        state: socket_state::LISTENING,
        backlog: 1,
        ..*srv
    };
    bind(&tmp, listener.as_fd())?;
    let made = (|| -> Result<(OwnedFd, OwnedFd), Why> {
        let c = sys::socket(family, ty, 0).map_err(|e| Why::sys("socket", e))?;
        if cli.addr_len > 2 {
            let tmp = Socket {
                state: socket_state::BOUND,
                ..*cli
            };
            bind(&tmp, c.as_fd())?;
        }
        sys::connect(c.as_fd(), &at)
            .map_err(|e| Why::sys(format!("connecting to {} again", sockaddr_display(&at)), e))?;
        let s = sys::accept(listener.as_fd()).map_err(|e| Why::sys("accept", e))?;
        Ok((s, c))
    })();
    drop(listener);
    if let Some(p) = path.filter(|_| !existed) {
        let _ = std::fs::remove_file(p);
    }
    if let Some(d) = dirs {
        d.remove()?;
    }
    let (s, c) = made?;
    Ok(if a_accepted { (s, c) } else { (c, s) })
}

/// Shut an end of a pair down as it was (after its queued bytes are
/// back): `bits` as unix_diag shows them, 1 for reading, 2 for writing.
/// (A stream end's shutdown shows on its peer too, mirrored, as it did.)
fn shut(fd: BorrowedFd, bits: u32) -> Result<(), Why> {
    let how = match bits & 3 {
        0 => return Ok(()),
        1 => libc::SHUT_RD,
        2 => libc::SHUT_WR,
        _ => libc::SHUT_RDWR,
    };
    sys::shutdown(fd, how).map_err(|e| Why::sys("shutdown", e))
}

/// Send the bytes that waited in an end of pair `s` through its other end
/// `from`: a stream's as they are, a datagram or seqpacket pair's message
/// by message (each a 4-byte little-endian length, then its bytes).
fn put_back(s: &Socket, from: BorrowedFd, bytes: &[u8]) -> Result<(), Why> {
    let sent = |r: std::io::Result<()>| r.map_err(|e| Why::sys("putting the queued bytes back", e));
    if s.sock_type as i32 == libc::SOCK_STREAM && !framed(s) {
        return sent(sys::send_all(from, bytes));
    }
    for q in messages(bytes)? {
        if !q.fds.is_empty() {
            // ([`send_in_flight`] sends those, in one process.)
            return Err(Why::Said(
                "a queued message with files in flight, which only a pair inside one process keeps"
                    .into(),
            ));
        }
        if s.sock_type as i32 == libc::SOCK_STREAM {
            sent(sys::send_all(from, q.bytes))?;
        } else {
            sent(sys::send_message(from, q.bytes))?;
        }
    }
    Ok(())
}

/// Whether the queue of pair end `s` is framed as messages (a datagram or
/// seqpacket pair's always; a stream's when files were in flight in it:
/// `socket_flags::FRAMED`, format 8.0).
fn framed(s: &Socket) -> bool {
    s.sock_type as i32 != libc::SOCK_STREAM || s.flags & socket_flags::FRAMED != 0
}

/// Whether a queue of pair `s` has files in flight (its queues are then
/// sent by [`send_in_flight`]).
fn carries_files(s: &Socket, bytes: &[u8]) -> Result<bool, Why> {
    if !framed(s) {
        return Ok(false);
    }
    Ok(messages(bytes)?.iter().any(|q| !q.fds.is_empty()))
}

/// A queued message, the fd numbers of its files in flight, and its
/// sender's address (a datagram sent to a named socket; else empty).
struct Queued<'a> {
    bytes: &'a [u8],
    fds: Vec<i32>,
    from: &'a [u8],
}

/// The messages of a datagram or seqpacket queue as the image frames them
/// (capture's `sock::frame`): each with the numbers of its files in
/// flight (`Fd::in_flight`), if any.
fn messages(bytes: &[u8]) -> Result<Vec<Queued<'_>>, Why> {
    let short = || Why::Said("the queued messages in the image are cut short".into());
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
    };
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let head = word(rest, 0).ok_or_else(short)?;
        let n = (head & !(3 << 30)) as usize;
        let mut at = 4;
        let mut fds = Vec::new();
        if head & 1 << 31 != 0 {
            let k = word(rest, 4).ok_or_else(short)? as usize;
            if k == 0 || k > 253 {
                return Err(Why::Said(format!(
                    "a queued message with {k} files in flight"
                )));
            }
            for i in 0..k {
                fds.push(word(rest, 8 + 4 * i).ok_or_else(short)? as i32);
            }
            at = 8 + 4 * k;
        }
        let mut from: &[u8] = &[];
        if head & 1 << 30 != 0 {
            let k = word(rest, at).ok_or_else(short)? as usize;
            if !(3..=128).contains(&k) {
                return Err(Why::Said(format!(
                    "a queued message from an address of {k} bytes"
                )));
            }
            from = rest.get(at + 4..at + 4 + k).ok_or_else(short)?;
            at += 4 + k;
        }
        let bytes = rest.get(at..at + n).ok_or_else(short)?;
        out.push(Queued { bytes, fds, from });
        rest = &rest[at + n..];
    }
    Ok(out)
}

/// The socket file a unix socket was bound to, with the mode and owner
/// it had (a bind makes it with the restorer's umask and ids; programs
/// chmod it to say who may connect).
fn socket_file_as_it_was(img: &Image, object: u32, s: &Socket) -> Result<(), Why> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(id) = socket_file(img, object) else {
        return Ok(());
    };
    // (A relative name: the file's absolute path, as capture found it; a
    // renamed file: its name now.)
    let path = if s.flags & (socket_flags::RELATIVE | socket_flags::RENAMED) != 0 {
        img.str(id.path).map(std::path::PathBuf::from)
    } else {
        unix_path(&addr_of(s))
    };
    let Some(path) = path else {
        return Ok(());
    };
    let md =
        std::fs::symlink_metadata(&path).map_err(|e| Why::sys(format!("{}", path.display()), e))?;
    if (md.uid(), md.gid()) != (id.uid, id.gid) {
        std::os::unix::fs::lchown(&path, Some(id.uid), Some(id.gid)).map_err(|e| {
            Why::sys(
                format!("giving {} its owner {}:{}", path.display(), id.uid, id.gid),
                e,
            )
        })?;
    }
    if md.mode() & 0o7777 != id.mode & 0o7777 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(id.mode & 0o7777))
            .map_err(|e| Why::sys(format!("giving {} its mode", path.display()), e))?;
    }
    Ok(())
}

/// The files-table entry of socket `object`'s socket file, if recorded.
fn socket_file(img: &Image, object: u32) -> Option<cryo_image::FileId> {
    img.fds()
        .iter()
        .find(|f| {
            f.kind == cryo_image::fd_kind::SOCKET
                && f.object == object
                && f.file != cryo_image::NO_INDEX
        })
        .and_then(|f| img.files().get(f.file as usize))
}

/// Run `f` in the directory a unix socket bound to a relative name
/// (`socket_flags::RELATIVE`) was bound from, so that it is bound again
/// under the same name: the directory of its socket file, whose absolute
/// path capture found ending in that name. Then back in this process's
/// working directory. Other sockets: `f` as it is.
fn in_bind_dir<T>(
    img: &Image,
    object: u32,
    s: &Socket,
    f: impl FnOnce() -> Result<T, Why>,
) -> Result<T, Why> {
    use std::os::unix::ffi::OsStrExt;
    if s.flags & socket_flags::RELATIVE == 0 {
        return f();
    }
    let name = unix_path(&addr_of(s)).unwrap_or_default();
    let file = socket_file(img, object).and_then(|id| img.str(id.path));
    let dir = file.and_then(|p| {
        let p = p.as_bytes();
        let n = name.as_os_str().as_bytes();
        (p.len() > n.len() && p.ends_with(n) && p[p.len() - n.len() - 1] == b'/').then(|| {
            // (Bound in `/`: the directory is `/`, not an empty name.)
            std::ffi::OsStr::from_bytes(&p[..(p.len() - n.len() - 1).max(1)]).to_owned()
        })
    });
    let Some(dir) = dir else {
        return Err(format!(
            "bound to the relative name {}, but the image has no directory for it",
            name.display()
        )
        .into());
    };
    let back = sys::open(c".", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .map_err(|e| Why::sys("opening the working directory", e))?;
    let shown = std::path::Path::new(&dir).display().to_string();
    std::env::set_current_dir(&dir)
        .map_err(|e| Why::sys(format!("entering {shown}, where it was bound"), e))?;
    let r = f();
    sys::fchdir(back.as_raw_fd())
        .map_err(|e| Why::sys(format!("leaving {shown}, where it was bound"), e))?;
    r
}

/// Whether a unix socket of the process is bound at the address `s` is
/// connected to (a datagram client of a server of its own, or a socket
/// connected to itself): `s` connects once every socket is bound.
fn peer_bound_here(img: &Image, s: &Socket) -> bool {
    let peer = peer_of(s);
    !inet(s)
        && s.flags & socket_flags::GHOST_PEER == 0
        && unix_path(&peer).is_some()
        && img.sockets().iter().any(|o| {
            !inet(&o)
                && matches!(
                    o.state,
                    socket_state::BOUND | socket_state::LISTENING | socket_state::CONNECTED
                )
                && bound_addr(&o)
                && addr_of(&o) == peer
        })
}

/// Connections made once every socket of the process is bound: sockets
/// connected to one of the process's own bound sockets, then the
/// connections that waited in a listener's queue, each connecting socket
/// to its listener (listening by now), in the order they waited, so that
/// accept() takes them in that order.
pub(crate) fn connect_waiting(img: &Image, given: &[i32]) -> Result<(), RestoreError> {
    let socks = img.sockets();
    // (One per socket: its first fd.)
    let mut seen = Vec::new();
    let with_objects: Vec<(u32, Socket, i32)> = img
        .fds()
        .iter()
        .filter(|f| f.kind == cryo_image::fd_kind::SOCKET)
        .filter(|f| {
            let first = !seen.contains(&f.object);
            seen.push(f.object);
            first
        })
        .filter_map(|f| Some((f.object, socks.get(f.object as usize)?, f.fd)))
        .collect();
    // Ghosts with datagram sockets of the process connected to them, one
    // at a time (several may have had one name): each bound there again,
    // those connected, its file removed.
    for (object, g, fd) in &with_objects {
        if g.flags & socket_flags::GHOST == 0 || !has_ghost_peers(img, *object) {
            continue;
        }
        let err = |fd: i32, why: Why| RestoreError::Fd {
            fd,
            what: "socket".into(),
            why,
        };
        let ours = sys::dup_above(*fd, 3)
            .map(sys::adopt)
            .map_err(|e| err(*fd, Why::sys("F_DUPFD", e)))?;
        let clients = with_objects
            .iter()
            .filter(|(_, c, _)| c.flags & socket_flags::GHOST_PEER != 0 && c.pair == *object);
        let connect = |addr: &[u8]| {
            for (_, _, cfd) in clients {
                sys::connect_at(*cfd, addr).map_err(|e| {
                    Why::sys(
                        format!(
                            "connecting fd {cfd} to {} (fd {fd}), bound there for the moment",
                            sockaddr_display(addr)
                        ),
                        e,
                    )
                })?;
            }
            Ok(())
        };
        // (Bound already: a ghost other processes of the tree connect to
        // too, made by `cryo restore` with its file kept, `KeptGhost`.)
        if sys::sockname(ours.as_fd()).is_ok_and(|a| a.len() > 2) {
            connect(&addr_of(g)).map_err(|w| err(*fd, w))?;
            continue;
        }
        bind_ghost(g, ours.as_fd(), connect).map_err(|w| err(*fd, w))?;
    }
    let firsts: Vec<(Socket, i32)> = with_objects.into_iter().map(|(_, s, fd)| (s, fd)).collect();
    for (s, fd) in &firsts {
        if s.state == socket_state::CONNECTED && peer_bound_here(img, s) {
            let peer = peer_of(s);
            let connect = || {
                sys::connect_at(*fd, &peer)
                    .map_err(|e| Why::sys(format!("connecting to {}", sockaddr_display(&peer)), e))
            };
            // (Connected by a relative name: from the directory its
            // server was bound in, where it is bound again.)
            match socks.get(s.pair as usize) {
                Some(g)
                    if s.pair != cryo_image::NO_INDEX && g.flags & socket_flags::RELATIVE != 0 =>
                {
                    in_bind_dir(img, s.pair, &g, connect)
                }
                _ => connect(),
            }
            .map_err(|why| RestoreError::Fd {
                fd: *fd,
                what: "socket".into(),
                why,
            })?;
        }
    }
    let mut waiting: Vec<(u32, u32, i32, Vec<u8>)> = firsts
        .iter()
        .filter(|(s, fd)| s.state == socket_state::PENDING && !given.contains(fd))
        .map(|(s, fd)| (s.pair, s.backlog, *fd, peer_of(s)))
        .collect();
    waiting.sort_unstable();
    for (listener, _, fd, peer) in waiting {
        let err = |why: Why| RestoreError::Fd {
            fd,
            what: "socket".into(),
            why,
        };
        // NO_INDEX: a listener of another process of the tree, made by
        // `cryo restore` before any process, by its name (every
        // connection that waited in it is this process's, in order).
        let l = if listener == cryo_image::NO_INDEX {
            None
        } else {
            Some(
                socks
                    .get(listener as usize)
                    .filter(|l| l.state == socket_state::LISTENING)
                    .ok_or_else(|| {
                        err(Why::Said(
                            "the listener it waited in is not in the image".into(),
                        ))
                    })?,
            )
        };
        let addr = l.as_ref().map_or(peer, addr_of);
        let connect = || {
            sys::connect_at(fd, &addr).map_err(|e| {
                Why::sys(
                    format!("connecting to {} again", sockaddr_display(&addr)),
                    e,
                )
            })
        };
        // (A listener bound to a relative name: from its directory.)
        without_waiting(fd, || match &l {
            Some(l) => in_bind_dir(img, listener, l, connect),
            None => connect(),
        })
        .map_err(err)?;
    }
    Ok(())
}

/// Datagrams that waited in a named unix datagram socket (not one end of
/// a pair), sent to it again in their order once every socket of the
/// process is made: each from the process's socket bound to its sender's
/// name, or from an unnamed socket of the moment if its sender had none.
pub(crate) fn send_datagrams(
    loaded: &LoadedImage,
    img: &Image,
    verify: bool,
) -> Result<(), RestoreError> {
    let socks = img.sockets();
    // (What capture stores for them: a pair's or a widowed end's queue is
    // sent by its other end.)
    let queued = |s: &Socket| {
        s.state == socket_state::BOUND
            && s.sock_type as i32 == libc::SOCK_DGRAM
            && s.data.len > 0
            && !inet(s)
    };
    // (Most restores have none: nothing else is looked at then.)
    if !socks.iter().any(|s| queued(&s)) {
        return Ok(());
    }
    let fds: Vec<cryo_image::Fd> = img
        .fds()
        .iter()
        .filter(|f| f.kind == cryo_image::fd_kind::SOCKET)
        .collect();
    let first_fd = |object: u32| fds.iter().find(|f| f.object == object).map(|f| f.fd);
    for (object, s) in socks.iter().enumerate() {
        if !queued(&s) {
            continue;
        }
        let Some(fd) = first_fd(object as u32) else {
            continue;
        };
        let err = |why: Why| RestoreError::Fd {
            fd,
            what: "unix datagram socket".into(),
            why,
        };
        let bytes = loaded
            .read_blob(&s.data, verify)
            .map_err(|e| err(Why::Said(e.to_string())))?;
        let to = addr_of(&s);
        let mut unnamed: Option<OwnedFd> = None;
        for q in messages(&bytes).map_err(err)? {
            let from = if q.from.is_empty() {
                if unnamed.is_none() {
                    unnamed = Some(
                        sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)
                            .map_err(|e| err(Why::sys("socket", e)))?,
                    );
                }
                unnamed.as_ref().map_or(-1, |u| u.as_raw_fd())
            } else {
                socks
                    .iter()
                    .enumerate()
                    .find(|(_, o)| !inet(o) && addr_of(o) == q.from)
                    .and_then(|(k, _)| first_fd(k as u32))
                    .ok_or_else(|| {
                        err(Why::Said(format!(
                            "a datagram queued from {} names a socket the image does not have",
                            sockaddr_display(q.from)
                        )))
                    })?
            };
            sys::sendto_at(from, q.bytes, &to)
                .map_err(|e| err(Why::sys("sending a queued datagram again", e)))?;
        }
    }
    Ok(())
}

/// The queues of socket pairs that hold files in flight, sent again from
/// the other end of each pair, every fd at its number by now (the files
/// in flight too, at the numbers the image has them at), and the pair's
/// ends shut down as they were after that; then those numbers are
/// closed, leaving the files in flight only. Every number a queue names
/// must be a file in flight of the image, named once.
///
/// `peers`: the ends of pairs with another process of a tree whose queue
/// this process sends (`fds::Plan::peers`, our copy of the other end now
/// at the second number): sent through it, then both ends shut down as
/// they were.
pub(crate) fn send_in_flight(
    loaded: &LoadedImage,
    img: &Image,
    verify: bool,
    peers: &[(i32, i32, u32)],
) -> Result<(), RestoreError> {
    let fds: Vec<cryo_image::Fd> = img.fds().iter().collect();
    let flying: Vec<i32> = fds
        .iter()
        .filter(|f| f.in_flight != 0)
        .map(|f| f.fd)
        .collect();
    // (No file in flight, no queue that holds one: nothing is read again.)
    if flying.is_empty() {
        return Ok(());
    }
    let mut named: Vec<i32> = Vec::new();
    let mut done: Vec<u32> = Vec::new();
    let fd_of = |object: u32| {
        fds.iter()
            .find(|g| g.kind == cryo_image::fd_kind::SOCKET && g.object == object)
            .map(|g| g.fd)
    };
    for f in &fds {
        if f.kind != cryo_image::fd_kind::SOCKET || done.contains(&f.object) {
            continue;
        }
        let Some(s) = img.sockets().get(f.object as usize) else {
            continue;
        };
        let err = |why: Why| RestoreError::Fd {
            fd: f.fd,
            what: "socket".into(),
            why,
        };
        if s.state == socket_state::WIDOWED {
            // Its other end, kept open for this: sends what waited, files
            // and all, and is closed.
            let other = {
                let mut others = widowed_others();
                let k = others.iter().position(|(o, _)| *o == f.object);
                k.map(|k| others.swap_remove(k).1)
            };
            let Some(other) = other else {
                continue;
            };
            done.push(f.object);
            let bytes = loaded
                .read_blob(&s.data, verify)
                .map_err(|e| err(Why::Said(e.to_string())))?;
            let stream = s.sock_type as i32 == libc::SOCK_STREAM;
            send_framed(other.as_raw_fd(), &bytes, stream, &flying, &mut named).map_err(err)?;
            drop(other);
            continue;
        }
        if s.state != socket_state::PAIR {
            continue;
        }
        let read = |data: &cryo_image::fds::Blob| -> Result<Vec<u8>, RestoreError> {
            if data.len == 0 {
                return Ok(Vec::new());
            }
            loaded
                .read_blob(data, verify)
                .map_err(|e| err(Why::Said(e.to_string())))
        };
        // A pair with another process of the tree: this end's queue only
        // (the other's, if it holds files, is that process's to send).
        let cross = peers.iter().find(|(n, ..)| {
            fds.iter()
                .any(|g| g.fd == *n && g.kind == f.kind && g.object == f.object)
        });
        let (other, peer) = match cross {
            Some(&(_, peer, bits)) => (
                Socket {
                    shutdown: bits,
                    ..Socket::default()
                },
                Some(peer),
            ),
            None => {
                let Some(other) = img.sockets().get(s.pair as usize) else {
                    continue;
                };
                (other, fd_of(s.pair))
            }
        };
        let theirs_blob = if cross.is_some() {
            cryo_image::fds::Blob::default()
        } else {
            other.data
        };
        let (mine, theirs) = (read(&s.data)?, read(&theirs_blob)?);
        // (Each end's own frame flag: a stream end without files in its
        // queue has its bytes as they are.)
        let files = carries_files(&s, &mine).map_err(err)?
            || carries_files(&other, &theirs).map_err(err)?;
        if !files {
            continue;
        }
        done.extend([f.object, s.pair]);
        let peer = peer.ok_or_else(|| {
            err(Why::Said(
                "its other end, which sent its files in flight, is not in the image".into(),
            ))
        })?;
        // What waits in an end was sent by the other.
        let stream = s.sock_type as i32 == libc::SOCK_STREAM;
        for (bytes, from, end) in [(&mine, peer, &s), (&theirs, f.fd, &other)] {
            if !framed(end) {
                sys::send_all_at(from, bytes)
                    .map_err(|e| err(Why::sys("putting the queued bytes back", e)))?;
                continue;
            }
            send_framed(from, bytes, stream, &flying, &mut named).map_err(err)?;
        }
        for (fd, bits) in [(f.fd, s.shutdown), (peer, other.shutdown)] {
            let how = match bits & 3 {
                0 => continue,
                1 => libc::SHUT_RD,
                2 => libc::SHUT_WR,
                _ => libc::SHUT_RDWR,
            };
            sys::shutdown_at(fd, how).map_err(|e| err(Why::sys("shutdown", e)))?;
        }
    }
    for &n in &flying {
        sys::close(n);
    }
    Ok(())
}

/// Send a queue framed as messages (`messages`) again from `from`, files
/// in flight and all: each file number must be one of `flying` and named
/// once (`named` keeps those named so far).
fn send_framed(
    from: RawFd,
    bytes: &[u8],
    stream: bool,
    flying: &[i32],
    named: &mut Vec<i32>,
) -> Result<(), Why> {
    for q in messages(bytes)? {
        for n in &q.fds {
            if !flying.contains(n) || named.contains(n) {
                return Err(Why::Said(format!(
                    "a queued message names fd {n} as a file in flight, which the image does not have (once)"
                )));
            }
            named.push(*n);
        }
        // (A stream's run without files: its bytes, in as many sends as
        // it takes; a message with files is one skb.)
        let sent = if stream && q.fds.is_empty() {
            sys::send_all_at(from, q.bytes)
        } else {
            sys::send_with_fds(from, q.bytes, &q.fds)
        };
        sent.map_err(|e| Why::sys("sending a queued message and its files in flight again", e))?;
    }
    Ok(())
}

/// The other ends of widowed sockets (by socket index) whose queues hold
/// files in flight: open until [`send_in_flight`] sends through them.
fn widowed_others() -> std::sync::MutexGuard<'static, Vec<(u32, OwnedFd)>> {
    static OTHERS: std::sync::Mutex<Vec<(u32, OwnedFd)>> = std::sync::Mutex::new(Vec::new());
    OTHERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether socket `object` is one end of a pair made inside the process
/// (its other end there, or closed).
pub(crate) fn is_pair(img: &Image, object: u32) -> bool {
    img.sockets()
        .get(object as usize)
        .is_some_and(|s| matches!(s.state, socket_state::PAIR | socket_state::WIDOWED))
}

/// A connection that waited in a listener of another process of a tree
/// (`socket_state::PENDING`, `pair` NO_INDEX), made by `cryo restore`:
/// connected to that listener (made already, listening) by its name,
/// without waiting. (`cryo restore` makes those of every process in the
/// order they waited.)
pub(crate) fn connect_pending(img: &Image, object: u32, fd: RawFd) -> Result<(), Why> {
    let Some(s) = img.sockets().get(object as usize) else {
        return Err(Why::Said("no socket state in the image".into()));
    };
    // (By its listener's name: capture refused a relative one.)
    let peer = peer_of(&s);
    without_waiting(fd, || {
        sys::connect_at(fd, &peer).map_err(|e| {
            Why::sys(
                format!("connecting to {} again", sockaddr_display(&peer)),
                e,
            )
        })
    })
}

/// Run `connect` on `fd` made non-blocking for it: a listener whose queue
/// filled up meanwhile (someone else connected first) is an error, not a
/// hang. The fd's flags are as they were after.
fn without_waiting(fd: RawFd, connect: impl FnOnce() -> Result<(), Why>) -> Result<(), Why> {
    let fl = sys::getfl(fd).map_err(|e| Why::sys("F_GETFL", e))?;
    sys::setfl(fd, fl | libc::O_NONBLOCK).map_err(|e| Why::sys("F_SETFL", e))?;
    let r = connect();
    sys::setfl(fd, fl).map_err(|e| Why::sys("F_SETFL", e))?;
    r
}

/// Whether socket `object` waited in a listener of another process of
/// its tree (made and connected by `cryo restore`: `connect_pending`).
pub(crate) fn is_pending_elsewhere(img: &Image, object: u32) -> bool {
    img.sockets()
        .get(object as usize)
        .is_some_and(|s| s.state == socket_state::PENDING && s.pair == cryo_image::NO_INDEX)
}

/// Whether socket `object` is an end with a name whose other end was
/// closed (`accepted_widow` makes it: before any listener).
pub(crate) fn is_named_widow(img: &Image, object: u32) -> bool {
    img.sockets().get(object as usize).is_some_and(|s| {
        s.state == socket_state::WIDOWED && s.sock_type as i32 != libc::SOCK_DGRAM && s.addr_len > 2
    })
}

/// Whether a TCP socket was accepted (rather than connected): capture
/// saw a listener on its port (`socket_flags::ACCEPTED`), or, without
/// one, its options tell: an accepted IPv4 socket's IP_MULTICAST_TTL is
/// the TTL of the SYN that made it (64 on loopback), a connecting one's
/// the default 1. The roles matter: such values (that one, an IPv6
/// socket's V6ONLY) come back only if the socket is made in the same role
/// (they cannot be set on a connected socket).
fn accepted(img: &Image, object: u32) -> Option<bool> {
    let s = img.sockets().get(object as usize)?;
    if s.flags & cryo_image::fds::socket_flags::ACCEPTED != 0 {
        return Some(true);
    }
    img.sockopts()
        .iter()
        .find(|o| {
            o.sock == object && o.level == libc::IPPROTO_IP && o.name == libc::IP_MULTICAST_TTL
        })
        .map(|o| opt_bytes(&o).0[0] != 1)
}

/// The accepted end of two TCP sockets, if their options tell (see
/// [`accepted`]): Some(true) for the first.
fn first_accepted(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) => Some(true),
        (_, Some(true)) => Some(false),
        (Some(false), _) => Some(false),
        (None, Some(false)) => Some(true),
        (None, None) => None,
    }
}

/// The connection from `local` to `peer` (sockaddrs), if it was closed
/// and waits in TIME_WAIT (the captured process's, not reset, or an
/// earlier restore's, which its program closed): removed, so that it is
/// made again at once rather than in a minute. Looked up in each family
/// an end of it may have (IPv4, or IPv6 with v4-mapped addresses).
fn clear_time_wait(local: &[u8], peer: &[u8]) {
    let split = |a: &[u8]| -> Option<([u8; 16], u16)> {
        let port = u16::from_be_bytes([*a.get(2)?, *a.get(3)?]);
        let mut ip = [0u8; 16];
        match i32::from(u16::from_ne_bytes([a[0], a[1]])) {
            libc::AF_INET => {
                ip[10] = 0xff;
                ip[11] = 0xff;
                ip[12..].copy_from_slice(a.get(4..8)?);
            }
            _ => ip.copy_from_slice(a.get(8..24)?),
        }
        Some((ip, port))
    };
    let (Some((lip, lport)), Some((pip, pport))) = (split(local), split(peer)) else {
        return;
    };
    for (a, b) in [((lip, lport), (pip, pport)), ((pip, pport), (lip, lport))] {
        if v4_mapped(&a.0) && v4_mapped(&b.0) {
            let _ = sys::tcp_clear_time_wait(libc::AF_INET, (&a.0[12..], a.1), (&b.0[12..], b.1));
        }
        let _ = sys::tcp_clear_time_wait(libc::AF_INET6, (&a.0, a.1), (&b.0, b.1));
    }
}

/// An IPv6 address (16 bytes) that is an IPv4 one, mapped (::ffff:a.b.c.d).
fn v4_mapped(ip: &[u8]) -> bool {
    ip.len() == 16 && ip[..10] == [0; 10] && ip[10..12] == [0xff, 0xff]
}

/// `addr` (an IPv4 or IPv6 sockaddr) at the wildcard address, same port:
/// what the ends of a connection made again are bound to, so that routing
/// picks the same addresses the original connect did (checked after),
/// and so that an IPv6 socket is not made IPV6_V6ONLY, as a bind to a
/// specific IPv6 address does. A v4-mapped address is kept as it is (it
/// does not set V6ONLY, and the wildcard would not reach it).
fn port_only(addr: &[u8]) -> Vec<u8> {
    let mut any = addr.to_vec();
    let mapped = addr.get(8..24).is_some_and(v4_mapped);
    match i32::from(u16::from_ne_bytes([addr[0], addr[1]])) {
        libc::AF_INET => any[4..8].fill(0),
        libc::AF_INET6 if !mapped => any[8..24].fill(0),
        _ => {}
    }
    any
}

/// A TCP connection between two sockets the processes restored hold,
/// as it was between its two addresses: `sa`'s through a listener bound
/// for the moment at its address (SO_REUSEADDR), `sb` bound to its own
/// and connected from there. The killed original's connection may still
/// hold the same four addresses in TIME_WAIT; loopback lets a connect
/// take them over a second after its last packet, so a refused connect
/// is tried again for up to 3 s.
fn connected_tcp(
    [sa, sb]: [&Socket; 2],
    v6only: &dyn Fn(usize, BorrowedFd) -> std::io::Result<()>,
) -> Result<(OwnedFd, OwnedFd), Why> {
    let on = 1i32.to_ne_bytes();
    // IPV6_V6ONLY only before the bind: as captured.
    let sock = |s: &Socket, k: usize| -> Result<OwnedFd, Why> {
        let fd = sys::socket(s.family as i32, libc::SOCK_STREAM, 0)
            .map_err(|e| Why::sys("socket", e))?;
        sys::setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &on)
            .map_err(|e| Why::sys("setting SO_REUSEADDR", e))?;
        if s.family as i32 == libc::AF_INET6 {
            v6only(k, fd.as_fd()).map_err(|e| Why::sys("setting IPV6_V6ONLY", e))?;
        }
        Ok(fd)
    };
    let at = addr_of(sa);
    let (mine, to) = (addr_of(sb), peer_of(sb));
    // A TIME_WAIT on these very addresses shows as the address in use:
    // cleared then (only then: it costs netlink round trips), and tried
    // again.
    let mut cleared = false;
    let mut busy = |e: &std::io::Error| {
        let hit = matches!(
            e.raw_os_error(),
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
        );
        if hit && !std::mem::replace(&mut cleared, true) {
            clear_time_wait(&mine, &to);
        }
        hit
    };
    let bind = |fd: BorrowedFd, a: &[u8], busy: &mut dyn FnMut(&std::io::Error) -> bool| {
        let at = port_only(a);
        match sys::bind(fd, &at) {
            Err(e) if busy(&e) => sys::bind(fd, &at),
            r => r,
        }
        .map_err(|e| in_use(&sockaddr_display(a), e))
    };
    let listener = sock(sa, 0)?;
    bind(listener.as_fd(), &at, &mut busy)?;
    sys::listen(listener.as_fd(), 1).map_err(|e| Why::sys("listen", e))?;
    let c = sock(sb, 1)?;
    bind(c.as_fd(), &mine, &mut busy)?;
    let t0 = std::time::Instant::now();
    loop {
        match sys::connect(c.as_fd(), &to) {
            Ok(()) => break,
            Err(e) if busy(&e) && t0.elapsed() < std::time::Duration::from_secs(3) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Why::sys(
                    format!(
                        "connecting {} to {} again",
                        sockaddr_display(&mine),
                        sockaddr_display(&to)
                    ),
                    e,
                ))
            }
        }
    }
    let s = sys::accept(listener.as_fd()).map_err(|e| Why::sys("accept", e))?;
    for (fd, want) in [(s.as_fd(), &at), (c.as_fd(), &mine)] {
        let got = sys::sockname(fd).map_err(|e| Why::sys("getsockname", e))?;
        if &got != want {
            return Err(Why::Said(format!(
                "connected again at {}, not {}",
                sockaddr_display(&got),
                sockaddr_display(want)
            )));
        }
    }
    Ok((s, c))
}

/// Make socket `object` of plan `p`; the fd (ours, to be installed).
/// `pairs` holds the other ends of unix pairs made before their own fd.
pub(crate) fn make(
    loaded: &LoadedImage,
    img: &Image,
    p: &FdPlan,
    object: u32,
    flags: i32,
    pairs: &mut Vec<(u32, OwnedFd)>,
    verify: bool,
) -> Result<RawFd, RestoreError> {
    let s = img
        .sockets()
        .get(object as usize)
        .ok_or_else(|| fd_err(p, "no socket state in the image"))?;
    let sysw = |what: &str, e| fd_err(p, Why::sys(what, e));
    let fd = if s.state == socket_state::WIDOWED {
        // Its other end was closed: a pair whose other end sends the
        // bytes (or messages) left and is closed.
        let (a, b) = if s.sock_type as i32 != libc::SOCK_DGRAM && s.addr_len > 2 {
            accepted_widow(&s).map_err(|w| fd_err(p, w))?
        } else {
            sys::socketpair(s.family as i32, s.sock_type as i32)
                .map_err(|e| sysw("socketpair", e))?
        };
        set_options(img, object, a.as_fd()).map_err(|w| fd_err(p, w))?;
        let bytes = if s.data.len > 0 {
            loaded
                .read_blob(&s.data, verify)
                .map_err(|e| fd_err(p, Why::Said(e.to_string())))?
        } else {
            Vec::new()
        };
        if carries_files(&s, &bytes).map_err(|w| fd_err(p, w))? {
            // Files in flight: sent by [`send_in_flight`] once they are at
            // their numbers, and the other end closed then (kept above
            // every number the image has meanwhile).
            let high = img.fds().iter().map(|f| f.fd).max().unwrap_or(2).max(2) + 1;
            let kept = sys::dup_above(b.as_raw_fd(), high)
                .map_err(|e| sysw("keeping its other end aside", e))?;
            drop(b);
            widowed_others().push((object, sys::adopt(kept)));
        } else {
            put_back(&s, b.as_fd(), &bytes).map_err(|w| fd_err(p, w))?;
            drop(b);
        }
        // A datagram socket that had already let go of its dead peer (a
        // send failed with ECONNREFUSED): disconnected again.
        if s.sock_type as i32 == libc::SOCK_DGRAM && s.peer_len == 0 {
            let unspec = (libc::AF_UNSPEC as u16).to_ne_bytes();
            sys::connect(a.as_fd(), &unspec).map_err(|e| sysw("disconnecting it", e))?;
        }
        a
    } else if s.state == socket_state::PAIR {
        match pairs.iter().position(|(i, _)| *i == object) {
            Some(k) => pairs.swap_remove(k).1,
            None => {
                let other = img
                    .sockets()
                    .get(s.pair as usize)
                    .ok_or_else(|| fd_err(p, "its pair is missing from the image"))?;
                let hint = first_accepted(accepted(img, object), accepted(img, s.pair));
                let v6 = |k: usize, fd: BorrowedFd| {
                    v6only_like(img, if k == 0 { object } else { s.pair }, fd)
                };
                let (a, b) = connected(&s, &other, hint, &v6).map_err(|w| fd_err(p, w))?;
                set_options(img, object, a.as_fd()).map_err(|w| fd_err(p, w))?;
                set_options(img, s.pair, b.as_fd()).map_err(|w| fd_err(p, w))?;
                if s.sock_type as i32 == libc::SOCK_DGRAM {
                    // (Named ends bound by `connected`: their files' modes.)
                    socket_file_as_it_was(img, object, &s).map_err(|w| fd_err(p, w))?;
                    socket_file_as_it_was(img, s.pair, &other).map_err(|w| fd_err(p, w))?;
                }
                // What waited to be read from an end is sent by the other
                // (with files in flight: later, by `send_in_flight`, and
                // the ends shut down after that).
                let mut queues = Vec::new();
                for (end, from) in [(&s, b.as_fd()), (&other, a.as_fd())] {
                    if end.data.len > 0 {
                        let bytes = loaded
                            .read_blob(&end.data, verify)
                            .map_err(|e| fd_err(p, Why::Said(e.to_string())))?;
                        queues.push((bytes, from, end));
                    }
                }
                let later = queues
                    .iter()
                    .any(|(q, _, end)| carries_files(end, q).unwrap_or(false));
                if later && !img.fds().iter().any(|f| f.in_flight != 0) {
                    return Err(fd_err(
                        p,
                        "a queued message names files in flight the image does not have",
                    ));
                }
                if !later {
                    for (bytes, from, end) in &queues {
                        put_back(end, *from, bytes).map_err(|w| fd_err(p, w))?;
                    }
                    shut(a.as_fd(), s.shutdown).map_err(|w| fd_err(p, w))?;
                    shut(b.as_fd(), other.shutdown).map_err(|w| fd_err(p, w))?;
                }
                pairs.push((s.pair, b));
                a
            }
        }
    } else if s.state == socket_state::REPAIRED {
        make_repaired(loaded, img, object, &s, verify).map_err(|w| fd_err(p, w))?
    } else if s.family as i32 == libc::AF_NETLINK {
        make_netlink(img, object, &s).map_err(|w| fd_err(p, w))?
    } else {
        let fd = sys::socket(s.family as i32, s.sock_type as i32, s.protocol as i32)
            .map_err(|e| sysw("socket", e))?;
        set_options(img, object, fd.as_fd()).map_err(|w| fd_err(p, w))?;
        let bound = matches!(s.state, socket_state::BOUND | socket_state::LISTENING)
            || (matches!(s.state, socket_state::CONNECTED | socket_state::PENDING)
                && bound_addr(&s));
        if bound {
            if s.flags & socket_flags::GHOST != 0 {
                // (One that sockets of the process are connected to: in
                // `connect_waiting`, with them.)
                if !has_ghost_peers(img, object) {
                    bind_ghost(&s, fd.as_fd(), |_| Ok(())).map_err(|w| fd_err(p, w))?;
                }
            } else if s.flags & socket_flags::RENAMED != 0 {
                bind_renamed(img, object, &s, fd.as_fd()).map_err(|w| fd_err(p, w))?;
                socket_file_as_it_was(img, object, &s).map_err(|w| fd_err(p, w))?;
            } else {
                in_bind_dir(img, object, &s, || bind(&s, fd.as_fd())).map_err(|w| fd_err(p, w))?;
                socket_file_as_it_was(img, object, &s).map_err(|w| fd_err(p, w))?;
            }
        }
        // (Connected to a socket this process binds, or to a ghost of
        // the process: later, once that one is bound, by
        // `connect_waiting`.)
        let ghost_here = s.flags & socket_flags::GHOST_PEER != 0 && s.pair != cryo_image::NO_INDEX;
        if s.state == socket_state::CONNECTED && !ghost_here && !peer_bound_here(img, &s) {
            let peer = peer_of(&s);
            sys::connect(fd.as_fd(), &peer)
                .map_err(|e| sysw(&format!("connecting to {}", sockaddr_display(&peer)), e))?;
        }
        // A unix datagram socket connected by a name, shut down: its own
        // shutdown (a datagram socket's does not reach its peer), the
        // same before its connect as after.
        if !inet(&s) && s.sock_type as i32 == libc::SOCK_DGRAM && s.state == socket_state::CONNECTED
        {
            shut(fd.as_fd(), s.shutdown).map_err(|w| fd_err(p, w))?;
        }
        // A UDP socket shut down: the kernel sets the shutdown even on
        // an unconnected one, answering ENOTCONN.
        if inet(&s) && s.sock_type as i32 == libc::SOCK_DGRAM {
            match shut(fd.as_fd(), s.shutdown) {
                Err(Why::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENOTCONN) => {}
                r => r.map_err(|w| fd_err(p, w))?,
            }
        }
        fd
    };
    let raw = fd.into_raw_fd();
    set_status_flags(raw, flags).map_err(|e| fd_err(p, e))?;
    Ok(raw)
}

/// One end of a socket pair whose ends are in different processes of a
/// tree: the image and fd of a process holding it.
pub(crate) struct PairEnd<'a> {
    pub loaded: &'a LoadedImage,
    pub img: Image<'a>,
    pub fd: cryo_image::Fd,
}

/// Make a socket pair whose ends the processes of a tree hold: each end
/// with its options and flags, the bytes that waited to be read from each
/// sent through the other. Returns our ends, in order, and for each
/// whether its queue holds files in flight: the process that holds that
/// end (whose image has them) sends it then, when its files are made
/// ([`send_in_flight`], through our other end, which it inherits), and
/// shuts both ends down after (a pair with both queues so and shut down
/// is refused: neither process would know when the other had sent).
///
/// `one`: both ends are in one process's image (a pair connected through
/// a named socket inside a process, or one whose end another process
/// also holds): that process's `send_in_flight` sends both queues, as
/// for a pair it makes itself, so with files in flight in either, both
/// wait for it (else the other queue would come twice).
pub(crate) fn make_pair(
    ends: [&PairEnd; 2],
    verify: bool,
    one: bool,
) -> Result<(OwnedFd, OwnedFd, [bool; 2]), RestoreError> {
    let sock = |e: &PairEnd| e.img.sockets().get(e.fd.object as usize);
    let set = |e: &PairEnd, fd: BorrowedFd| set_options(&e.img, e.fd.object, fd);
    let err = |e: &PairEnd, why: Why| RestoreError::Fd {
        fd: e.fd.fd,
        what: "unix socket pair between processes".into(),
        why,
    };
    let (Some(sa), Some(sb)) = (sock(ends[0]), sock(ends[1])) else {
        return Err(err(ends[0], "no socket state in the image".into()));
    };
    let hint = first_accepted(
        accepted(&ends[0].img, ends[0].fd.object),
        accepted(&ends[1].img, ends[1].fd.object),
    );
    let v6 = |k: usize, fd: BorrowedFd| v6only_like(&ends[k].img, ends[k].fd.object, fd);
    let (a, b) = connected(&sa, &sb, hint, &v6).map_err(|w| err(ends[0], w))?;
    for (e, fd) in [(ends[0], a.as_fd()), (ends[1], b.as_fd())] {
        set(e, fd).map_err(|w| err(e, w))?;
    }
    let mut later = [false; 2];
    let mut queues = Vec::new();
    for (k, (e, s, from)) in [(ends[0], sa, b.as_fd()), (ends[1], sb, a.as_fd())]
        .into_iter()
        .enumerate()
    {
        if s.data.len > 0 {
            let bytes = e
                .loaded
                .read_blob(&s.data, verify)
                .map_err(|x| err(e, Why::Said(x.to_string())))?;
            later[k] = carries_files(&s, &bytes).map_err(|w| err(e, w))?;
            queues.push((k, e, s, from, bytes));
        }
    }
    if one && later != [false, false] {
        later = [true, true];
    }
    for (k, e, s, from, bytes) in &queues {
        if !later[*k] {
            put_back(s, *from, bytes).map_err(|w| err(e, w))?;
        }
    }
    if !one && later == [true, true] && (sa.shutdown | sb.shutdown) & 3 != 0 {
        return Err(err(
            ends[0],
            "both of its queues hold files in flight and it was shut down".into(),
        ));
    }
    for (e, s, fd) in [(ends[0], sa, &a), (ends[1], sb, &b)] {
        if later == [false, false] {
            shut(fd.as_fd(), s.shutdown).map_err(|w| err(e, w))?;
        }
        set_status_flags(fd.as_raw_fd(), e.fd.flags as i32).map_err(|x| err(e, Why::from(x)))?;
    }
    Ok((a, b, later))
}

/// TCP_REPAIR_WINDOW's values (snd_wl1, snd_wnd, max_window, rcv_wnd,
/// rcv_wup) made consistent with the receive sequence `rcv_nxt` the
/// restore gives the socket, as the kernel demands (else EINVAL). A
/// segment that arrived out of order (after a hole: one the network lock
/// dropped while the next was already past it, or a full receive buffer)
/// updated the window from its sequence number, ahead of `rcv_nxt`; its
/// bytes, in the out-of-order queue, are not captured (the peer sends
/// them again), so the window is taken as if it never came: snd_wl1 at
/// `rcv_nxt`. (zdtm socket-tcpbuf, 1 run in 3 here: snd_wl1 327 415 bytes
/// past rcv_nxt, with a 131 072-byte window.)
fn consistent_window(w: [u32; 5], rcv_nxt: u32) -> [u32; 5] {
    let after = |a: u32, b: u32| (b.wrapping_sub(a) as i32) < 0;
    let [mut snd_wl1, snd_wnd, mut max_window, rcv_wnd, mut rcv_wup] = w;
    if after(snd_wl1, rcv_nxt.wrapping_add(rcv_wnd)) {
        snd_wl1 = rcv_nxt;
    }
    if after(rcv_wup, rcv_nxt) {
        rcv_wup = rcv_nxt;
    }
    max_window = max_window.max(snd_wnd);
    [snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup]
}

#[cfg(test)]
mod tests {
    use super::consistent_window;

    #[test]
    fn the_window_is_made_consistent_with_the_receive_sequence() {
        // socket-tcpbuf's: snd_wl1 past rcv_nxt + rcv_wnd.
        let w = [2198586009, 1024, 65536, 131072, 2198258594];
        assert_eq!(
            consistent_window(w, 2198258594),
            [2198258594, 1024, 65536, 131072, 2198258594]
        );
        // Consistent already (and across the wrap of 2^32): unchanged.
        let w = [5, 65536, 65536, 65536, u32::MAX - 10];
        assert_eq!(consistent_window(w, u32::MAX - 10), w);
    }
}
