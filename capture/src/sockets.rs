//! Sockets, read through our own duplicate of each (pidfd_getfd): family,
//! type, address, state and options; for unix sockets the kernel's
//! diagnostics (peer, queues, backlog). What comes back:
//! - TCP and unix stream/seqpacket sockets that are unbound, bound or
//!   listening with no connection waiting;
//! - UDP and unix datagram sockets, bound or not, connected or not, with
//!   nothing queued;
//! - unix socket pairs whose both ends are in the process, with the bytes
//!   queued in a stream pair.
//!
//! Everything else is refused by name: a TCP connection (state and both
//! addresses), a unix stream connected outside the process, connections
//! waiting on a listener, queued datagrams, fds in flight (SCM_RIGHTS), a
//! half-shut pair, other families and protocols.

use crate::procinfo::OpenFd;
use crate::stored::{BlobOwner, PendingBlob, StoredFiles};
use crate::sys::sock::{self, UnixDiag};
use cryo_image::fds::{
    filter_flags, sockaddr_display, sockaddr_words, socket_state, SockFilterInsn, SockOpt, Socket,
    TcpConn,
};
use cryo_image::write::ImageBuilder;
use cryo_image::NO_INDEX;
use std::os::fd::OwnedFd;

/// The options read from every socket of a family (level, name, always);
/// those the kernel does not know for a socket are skipped. `connected`:
/// a TCP connection, whose TCP_MAXSEG and TCP_WINDOW_CLAMP the kernel
/// sets from the peer (a socket made again would be clamped to them) and
/// whose TCP_FASTOPEN_CONNECT can only be set before it connects.
///
/// Each is set again where it differs from a new socket's and read back
/// (`restore/src/sockets.rs`, `set_options`): an option the program set
/// that is not read here is lost without a word. A sweep of real servers
/// (stop 45) found 30 such options reset by a restore (haproxy's listener
/// `mss 1200 transparent` came back as 536 and 0); the list now holds
/// every option of these levels a socket can be given with a plain value
/// of at most 16 bytes, but IP_MULTICAST_IF's interface index
/// (getsockopt gives its address only: docs/pitfalls.md).
///
/// `always` false: recorded only where it differs from a new socket's
/// here ([`read_options`]). Several read a default the system gives
/// (TCP_CONGESTION, TCP_SYNCNT, TCP_LINGER2, IP_MTU_DISCOVER,
/// SO_BUSY_POLL: sysctls), which, recorded, a restore on a machine or
/// in a namespace with other defaults would pin, or fail to set (a
/// congestion control not loaded there): a review found both. Those of
/// the first list are recorded always, as before stop 45 (the restore
/// reads SO_BUF_LOCK and IPV6_V6ONLY whatever they are).
fn options(family: i32, sock_type: i32, connected: bool) -> Vec<(i32, i32, bool)> {
    use libc::*;
    /// Linux 5.14; not in the libc crate yet.
    const SO_BUF_LOCK: i32 = 72;
    const SO_TIMESTAMP_NEW: i32 = 63;
    const SO_TIMESTAMPNS_NEW: i32 = 64;
    const SO_PREFER_BUSY_POLL: i32 = 69;
    const SO_BUSY_POLL_BUDGET: i32 = 70;
    const SO_TXREHASH: i32 = 74;
    const SO_RCVMARK: i32 = 75;
    const SO_PASSPIDFD: i32 = 76;
    /// IP_RECVERR_RFC4884, IP_LOCAL_PORT_RANGE (Linux 6.3),
    /// IPV6_RECVERR_RFC4884, TCP_TX_DELAY: not in the libc crate.
    const IP_RECVERR_RFC4884: i32 = 26;
    const IP_LOCAL_PORT_RANGE: i32 = 51;
    const IPV6_RECVERR_RFC4884: i32 = 31;
    const TCP_TX_DELAY: i32 = 37;
    let mut v: Vec<(i32, i32, bool)> = Vec::new();
    let mut add = |level: i32, names: &[i32], always: bool| {
        v.extend(names.iter().map(|&n| (level, n, always)));
    };
    add(
        SOL_SOCKET,
        &[
            SO_REUSEADDR,
            SO_REUSEPORT,
            SO_KEEPALIVE,
            SO_BROADCAST,
            SO_OOBINLINE,
            SO_PASSCRED,
            SO_PRIORITY,
            SO_RCVLOWAT,
            SO_LINGER,
            SO_RCVBUF,
            SO_SNDBUF,
            // After the sizes: setting a size locks it; the lock as it was.
            SO_BUF_LOCK,
            SO_BINDTODEVICE,
            SO_RCVTIMEO,
            SO_SNDTIMEO,
            SO_MARK,
        ],
        true,
    );
    add(
        SOL_SOCKET,
        &[
            SO_DONTROUTE,
            SO_PASSSEC,
            // Setting SO_TIMESTAMPING clears the flag the _NEW variants
            // set, and SO_TIMESTAMPNS sets SO_TIMESTAMP's: in this order,
            // each ends as captured (a review found the _NEW ones lost
            // with SO_TIMESTAMPING last).
            SO_TIMESTAMPING,
            SO_TIMESTAMP,
            SO_TIMESTAMPNS,
            SO_TIMESTAMP_NEW,
            SO_TIMESTAMPNS_NEW,
            SO_RXQ_OVFL,
            SO_WIFI_STATUS,
            SO_PEEK_OFF,
            SO_NOFCS,
            SO_SELECT_ERR_QUEUE,
            SO_BUSY_POLL,
            SO_MAX_PACING_RATE,
            SO_ZEROCOPY,
            SO_PREFER_BUSY_POLL,
            SO_BUSY_POLL_BUDGET,
            SO_TXREHASH,
            SO_RCVMARK,
            SO_PASSPIDFD,
        ],
        false,
    );
    if family == AF_NETLINK {
        // NETLINK_PKTINFO, BROADCAST_ERROR, NO_ENOBUFS, LISTEN_ALL_NSID,
        // CAP_ACK, EXT_ACK, GET_STRICT_CHK (not in the libc crate).
        add(SOL_NETLINK, &[3, 4, 5, 8, 10, 11, 12], true);
    }
    if family != AF_INET && family != AF_INET6 {
        return v;
    }
    if sock_type == SOCK_STREAM {
        add(
            IPPROTO_TCP,
            &[
                TCP_NODELAY,
                TCP_CORK,
                TCP_KEEPIDLE,
                TCP_KEEPINTVL,
                TCP_KEEPCNT,
                TCP_DEFER_ACCEPT,
                TCP_USER_TIMEOUT,
                TCP_FASTOPEN,
                TCP_NOTSENT_LOWAT,
            ],
            true,
        );
        add(
            IPPROTO_TCP,
            &[
                TCP_SYNCNT,
                TCP_LINGER2,
                TCP_THIN_LINEAR_TIMEOUTS,
                TCP_CONGESTION,
                TCP_SAVE_SYN,
                TCP_INQ,
                TCP_TX_DELAY,
                TCP_FASTOPEN_NO_COOKIE,
            ],
            false,
        );
        if !connected {
            add(
                IPPROTO_TCP,
                &[TCP_MAXSEG, TCP_WINDOW_CLAMP, TCP_FASTOPEN_CONNECT],
                false,
            );
        }
    }
    if sock_type == SOCK_DGRAM {
        // UDP_CORK, then UDP_NO_CHECK6_TX, _RX, UDP_SEGMENT, UDP_GRO.
        add(IPPROTO_UDP, &[UDP_CORK, 101, 102, 103, 104], false);
    }
    // The inet flags any inet socket has, v6 ones too.
    add(
        IPPROTO_IP,
        &[IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT, IP_LOCAL_PORT_RANGE],
        false,
    );
    if family == AF_INET {
        add(
            IPPROTO_IP,
            &[IP_TOS, IP_TTL, IP_FREEBIND, IP_RECVERR, IP_PKTINFO],
            true,
        );
        // (Not on TCP, which refuses to set IP_MULTICAST_TTL: a socket
        // accept made has the TTL of the SYN there, 64, which a socket
        // made again could not be given.)
        if sock_type != SOCK_STREAM {
            add(IPPROTO_IP, &[IP_MULTICAST_TTL, IP_MULTICAST_LOOP], true);
            add(IPPROTO_IP, &[IP_MULTICAST_IF, IP_MULTICAST_ALL], false);
        }
        add(
            IPPROTO_IP,
            &[
                IP_MTU_DISCOVER,
                IP_RECVTTL,
                IP_RECVTOS,
                IP_RECVOPTS,
                IP_RETOPTS,
                IP_RECVORIGDSTADDR,
                IP_PASSSEC,
                IP_MINTTL,
                IP_CHECKSUM,
                IP_RECVFRAGSIZE,
                IP_RECVERR_RFC4884,
            ],
            false,
        );
    } else {
        add(
            IPPROTO_IPV6,
            &[
                IPV6_V6ONLY,
                // The inet flag IP_FREEBIND sets too (on any family).
                IPV6_FREEBIND,
                IPV6_UNICAST_HOPS,
                IPV6_RECVPKTINFO,
                IPV6_TCLASS,
                IPV6_RECVERR,
            ],
            true,
        );
        if sock_type != SOCK_STREAM {
            add(
                IPPROTO_IPV6,
                &[
                    IPV6_MULTICAST_IF,
                    IPV6_MULTICAST_HOPS,
                    IPV6_MULTICAST_LOOP,
                    IPV6_MULTICAST_ALL,
                ],
                false,
            );
        }
        add(
            IPPROTO_IPV6,
            &[
                IPV6_MTU_DISCOVER,
                IPV6_RECVTCLASS,
                IPV6_RECVHOPLIMIT,
                IPV6_RECVHOPOPTS,
                IPV6_RECVRTHDR,
                IPV6_RECVDSTOPTS,
                IPV6_RECVPATHMTU,
                IPV6_DONTFRAG,
                IPV6_AUTOFLOWLABEL,
                IPV6_ADDR_PREFERENCES,
                IPV6_MINHOPCOUNT,
                IPV6_RECVORIGDSTADDR,
                IPV6_TRANSPARENT,
                IPV6_FLOWINFO_SEND,
                IPV6_RECVERR_RFC4884,
                IPV6_RECVFRAGSIZE,
            ],
            false,
        );
    }
    v
}

fn type_name(family: i32, t: i32) -> &'static str {
    match (family, t) {
        (libc::AF_UNIX, libc::SOCK_STREAM) => "unix stream socket",
        (libc::AF_UNIX, libc::SOCK_DGRAM) => "unix datagram socket",
        (libc::AF_UNIX, libc::SOCK_SEQPACKET) => "unix seqpacket socket",
        (_, libc::SOCK_STREAM) => "TCP socket",
        (_, libc::SOCK_DGRAM) => "UDP socket",
        _ => "socket",
    }
}

fn family_name(f: i32) -> String {
    match f {
        libc::AF_NETLINK => "a netlink socket".into(),
        libc::AF_PACKET => "a packet socket".into(),
        libc::AF_VSOCK => "a vsock socket".into(),
        libc::AF_ALG => "a kernel crypto (AF_ALG) socket".into(),
        libc::AF_BLUETOOTH => "a bluetooth socket".into(),
        f => format!("a socket of address family {f}"),
    }
}

fn tcp_state(s: u8) -> &'static str {
    match s {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "unknown",
    }
}

/// A unix socket connected to another one, resolved once every fd is seen.
struct Connected {
    index: usize,
    fd: i32,
    ino: u64,
    diag: UnixDiag,
    dup: OwnedFd,
    /// An unnamed datagram socket connected to a relative name: the
    /// refusal unless that is a ghost of the process (`link`).
    relative_peer: Option<String>,
}

/// A unix stream or seqpacket socket connected to no socket with an
/// inode: waiting in a listener's queue (not accepted yet), or connected
/// to a socket that is gone.
struct Connecting {
    index: usize,
    fd: i32,
    ino: u32,
    /// Bytes sent on it and not yet read (by the accepting end).
    sent: u32,
    shutdown: u8,
    /// The refusal if it is not waiting in a listener of the process.
    gone: String,
    /// Its peer's name (the listener's), if relative, and the refusal if
    /// the listener it waits in is not bound to that name from a known
    /// directory (`socket_flags::RELATIVE`).
    relative_peer: Option<(Vec<u8>, String)>,
}

/// Sockets seen so far, for the pass that pairs them.
#[derive(Default)]
pub struct Sockets {
    connected: Vec<Connected>,
    /// Listeners with connections waiting: (index, fd, the connecting
    /// ends' inodes in queue order).
    waiting: Vec<(usize, i32, Vec<u32>)>,
    connecting: Vec<Connecting>,
    /// Stream ends whose other end was closed: (index, bytes left in it).
    widowed: Vec<(usize, Vec<u8>)>,
    /// Ends whose other end was closed with messages left in them (a
    /// datagram or seqpacket end's, or a stream end's runs cut where files
    /// are in flight): (index, fd, the messages), framed in `link` with
    /// the numbers their files are held at.
    widowed_messages: Vec<(usize, i32, Vec<sock::Message>)>,
    /// Named unix datagram sockets with datagrams queued: (index, fd,
    /// the datagrams, each with its sender's address).
    datagrams: Vec<(usize, i32, Vec<sock::Message>)>,
    /// The machine's TCP sockets, read at the first established one.
    tcp: Option<sock::TcpTable>,
    /// How each inet socket of the machine is shut down, by (family,
    /// protocol), then inode: one inet_diag dump each, read at the first
    /// socket of its kind (a dump per socket made a capture of 2000
    /// loopback connections take 14 s, a review found).
    shutdowns: Vec<((i32, i32), std::io::Result<sock::Shutdowns>)>,
    /// Whether an established TCP connection to outside is captured with
    /// TCP repair (`--tcp-established`) rather than refused.
    pub tcp_repair: bool,
    /// Whether the datagrams queued in a UDP socket are dropped
    /// (`--drop-datagrams`) rather than refused.
    pub drop_datagrams: bool,
    /// Whether those connections are locked (`cryo_image::netlock`): the
    /// capture kills, and nftables is there.
    pub tcp_lock: bool,
    /// The connections put in repair mode, and their queues: (index in
    /// `tcp_conns`, send queue, receive queue).
    pub repaired: Repaired,
    tcp_queues: Vec<(usize, Vec<u8>, Vec<u8>)>,
    /// Every process captured with this one.
    pub scope: Vec<i32>,
    /// The process whose sockets these are (its working directory
    /// resolves a relative name).
    pub pid: i32,
    /// Unix sockets whose file was renamed since their bind: (index, the
    /// path their file has now).
    renamed: Vec<(u32, std::path::PathBuf)>,
    /// Unix sockets bound to a relative name: (index, the absolute path
    /// of its socket file, found from the working directory).
    relative: Vec<(u32, std::path::PathBuf)>,
    /// The socket inodes they hold (read at the first use).
    held: Option<std::collections::HashSet<u64>>,
    /// Every unix socket of the process: (inode, index).
    unix: Vec<(u64, usize)>,
    /// Sockets of the process refused on their own (named in an obstacle
    /// already), by inode: their peers are not "outside".
    refused: Vec<u64>,
}

impl Sockets {
    /// Socket inode `ino` of the process was refused (its obstacle says
    /// why): its peer in the process is not reported as connected to
    /// something outside it.
    pub fn refused(&mut self, ino: u64) {
        self.refused.push(ino);
    }

    /// Whether a process captured holds socket inode `ino`.
    fn captured_holds(&mut self, ino: u64) -> bool {
        let scope = &self.scope;
        self.held
            .get_or_insert_with(|| {
                let mut set = std::collections::HashSet::new();
                crate::pipes::each_fd(Some(scope), |_, _, t| {
                    if let Some(i) = t
                        .strip_prefix("socket:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse().ok())
                    {
                        set.insert(i);
                    }
                });
                set
            })
            .contains(&ino)
    }
}

/// Our copies of TCP connections put in repair mode to be read. Dropped,
/// they leave repair mode without a packet (the process goes on with them
/// as before: every exit path of a capture but a kill);
/// [`Repaired::close_silently`] closes them still in repair mode once
/// their process is killed, so that the connection ends without a packet
/// (no FIN, no reset) and the peer keeps it for the restore.
#[derive(Debug, Default)]
pub struct Repaired(Vec<(OwnedFd, Option<Ends>)>);

/// A TCP connection's two ends, locked (`cryo_image::netlock`): local and
/// peer sockaddr bytes.
type Ends = (Vec<u8>, Vec<u8>);

/// setsockopt(TCP_REPAIR) values.
const TCP_REPAIR: i32 = libc::TCP_REPAIR;
const TCP_REPAIR_ON: i32 = 1;
const TCP_REPAIR_OFF_NO_WP: i32 = -1;

impl Repaired {
    /// Out of repair mode, each as it was (and unlocked).
    pub fn release(&mut self) {
        let mut locked = Vec::new();
        for (fd, ends) in self.0.drain(..) {
            let _ = sock::setsockopt_int(&fd, libc::IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
            locked.extend(ends);
        }
        let _ = cryo_image::netlock::unlock_all(&locked);
    }
    /// Closed in repair mode (their processes are gone), still locked:
    /// the restore unlocks them.
    pub fn close_silently(&mut self) {
        self.0.clear();
    }
    pub fn append(&mut self, other: &mut Repaired) {
        self.0.append(&mut other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Repaired {
    fn drop(&mut self) {
        self.release();
    }
}

/// Read an established TCP connection with TCP repair (`dup`: our copy,
/// kept in `seen.repaired`, in repair mode until the capture lets its
/// process go): its sequence numbers, options, window, timestamp clock
/// and both queues; `s` becomes REPAIRED and its state a `TcpConn`.
fn repair(
    dup: OwnedFd,
    s: &mut Socket,
    b: &mut ImageBuilder,
    seen: &mut Sockets,
    ends: (&[u8], Option<&[u8]>),
) -> Result<(), String> {
    use libc::{TCP_QUEUE_SEQ, TCP_REPAIR_QUEUE, TCP_REPAIR_WINDOW, TCP_TIMESTAMP};
    // (TCP_REPAIR_QUEUE's values.)
    const RECV_QUEUE: i32 = 1;
    const SEND_QUEUE: i32 = 2;
    let tcp = libc::IPPROTO_TCP;
    let e = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    // Locked first (a capture that kills): from here to the end of the
    // restore, its packets are dropped, not answered with a reset.
    let locked = match (seen.tcp_lock, ends.1) {
        (true, Some(peer)) => {
            cryo_image::netlock::lock(ends.0, peer)
                .map_err(|why| format!("locking it (nftables): {why}"))?;
            Some((ends.0.to_vec(), peer.to_vec()))
        }
        _ => None,
    };
    let is_locked = locked.is_some();
    // An acknowledgement the kernel delays (up to 40 ms) goes now: once in
    // repair mode nothing is sent, and the peer would send the bytes again
    // to a port where, after a kill, no socket answers but with a reset.
    // (Pushed first: on any error below it is released, and unlocked.)
    seen.repaired.0.push((dup, locked));
    let dup = &seen.repaired.0.last().expect("just pushed").0;
    sock::setsockopt_int(dup, tcp, libc::TCP_QUICKACK, 1).map_err(e("TCP_QUICKACK"))?;
    sock::setsockopt_int(dup, tcp, TCP_REPAIR, TCP_REPAIR_ON).map_err(e(
        "putting it in repair mode (TCP_REPAIR, needs CAP_NET_ADMIN)",
    ))?;
    // Its state again, now that nothing more comes in (locked) or goes
    // out (repair mode): a FIN that came between the first look and the
    // lock made it CLOSE_WAIT, and an image of it as established kept
    // both sides waiting for ever (a sweep of stop 48: a client's
    // shutdown(SHUT_WR) during the capture, 3 runs of 3).
    // (struct tcp_info: tcpi_state is byte 0.)
    let mut info = [0u8; 8];
    sock::getsockopt(dup, tcp, libc::TCP_INFO, &mut info).map_err(e("TCP_INFO"))?;
    if info[0] != 1 {
        return Err(format!(
            "its peer closed or reset it while it was being captured ({}): capture again",
            tcp_state(info[0])
        ));
    }
    // An urgent byte (MSG_OOB) stops every read of the queue at its mark:
    // it and what followed it were lost without a word (the same sweep).
    if sock::urgent_pending(dup) {
        return Err(
            "an urgent byte (TCP out-of-band data, MSG_OOB) waits in it, which TCP repair cannot put back"
                .into(),
        );
    }
    let outq = crate::sys::outq(dup).map_err(e("its send queue (SIOCOUTQ)"))?;
    let unsent = sock::outq_unsent(dup).map_err(e("its unsent bytes (SIOCOUTQNSD)"))?;
    let inq = crate::sys::fionread(dup).map_err(e("its receive queue (FIONREAD)"))?;
    let queue = |q: i32, len: usize| -> Result<(u32, Vec<u8>), String> {
        sock::setsockopt_int(dup, tcp, TCP_REPAIR_QUEUE, q).map_err(e("TCP_REPAIR_QUEUE"))?;
        let seq = sock::getsockopt_int(dup, tcp, TCP_QUEUE_SEQ).map_err(e("TCP_QUEUE_SEQ"))?;
        let bytes = sock::peek_exact(dup, len).map_err(e("reading its queue"))?;
        Ok((seq as u32, bytes))
    };
    let (snd_seq, sendq) = queue(SEND_QUEUE, outq)?;
    let (rcv_seq, recvq) = queue(RECV_QUEUE, inq)?;
    let mut window = [0u8; 20];
    sock::getsockopt(dup, tcp, TCP_REPAIR_WINDOW, &mut window).map_err(e("TCP_REPAIR_WINDOW"))?;
    let timestamp = sock::getsockopt_int(dup, tcp, TCP_TIMESTAMP).map_err(e("TCP_TIMESTAMP"))?;
    let mss = sock::getsockopt_int(dup, tcp, libc::TCP_MAXSEG).map_err(e("TCP_MAXSEG"))?;
    // (`info`, struct tcp_info, read above: tcpi_options (byte 5),
    // tcpi_snd_wscale and tcpi_rcv_wscale (byte 6, low and high nibbles).)
    let w = |i: usize| {
        u32::from_ne_bytes([
            window[4 * i],
            window[4 * i + 1],
            window[4 * i + 2],
            window[4 * i + 3],
        ])
    };
    s.state = socket_state::REPAIRED;
    let conn = b.tcp_conns.len();
    b.tcp_conns.push(TcpConn {
        sock: b.sockets.len() as u32,
        options: (u32::from(info[5]) & 7)
            | if is_locked {
                cryo_image::fds::tcp_opts::LOCKED
            } else {
                0
            },
        snd_seq,
        rcv_seq,
        mss: mss as u32,
        snd_wscale: u32::from(info[6] & 15),
        rcv_wscale: u32::from(info[6] >> 4),
        timestamp: timestamp as u32,
        window: [w(0), w(1), w(2), w(3), w(4)],
        unsent: unsent.min(outq) as u32,
        ..Default::default()
    });
    seen.tcp_queues.push((conn, sendq, recvq));
    Ok(())
}

/// A tree process's unix sockets connected outside it, resolved by the
/// tree's pass.
#[derive(Debug, Default)]
pub struct Cross {
    pub ends: Vec<CrossEnd>,
    pub ghost_clients: Vec<GhostClient>,
    /// Connections waiting, not accepted yet, in a listener that is not
    /// the process's (`socket_state::PENDING`, `pair` NO_INDEX).
    pub pending: Vec<CrossPending>,
    /// Listeners with connections waiting that are not the process's.
    pub waiting: Vec<CrossWaiting>,
}

/// A connection waiting in a listener outside its process: the tree's
/// pass finds the listener in another process (`CrossWaiting`) and its
/// place in that listener's queue, or refuses it with `obstacle`.
#[derive(Debug)]
pub struct CrossPending {
    pub index: usize,
    pub ino: u64,
    pub obstacle: String,
}

/// A listener with connections waiting from outside its process: the
/// connecting sockets' inodes in queue order (`icons`), those not the
/// process's (`outside`).
#[derive(Debug)]
pub struct CrossWaiting {
    pub fd: i32,
    pub icons: Vec<u32>,
    pub outside: usize,
    pub obstacle: String,
}

/// A datagram socket connected to a socket whose name leads elsewhere now
/// (or nowhere), outside its process: the tree's pass accepts it if that
/// socket is a ghost (`socket_flags::GHOST`) of another process of the
/// tree, or refuses it with `obstacle`.
#[derive(Debug)]
pub struct GhostClient {
    pub fd: i32,
    /// The inode of the socket it is connected to.
    pub peer: u64,
    pub obstacle: String,
}

/// An unnamed unix socket connected to a socket outside its process,
/// which may be in another process of the tree (a socketpair made before
/// a fork): the tree's pass pairs it, or refuses it with `obstacle`.
#[derive(Debug)]
pub struct CrossEnd {
    /// Index in the process's sockets table.
    pub index: usize,
    pub fd: i32,
    pub ino: u64,
    pub peer: u64,
    pub rqueue: u32,
    pub shutdown: u8,
    pub stream: bool,
    /// Datagram or seqpacket: its queue is messages.
    pub messages: bool,
    pub seqpacket: bool,
    /// Our copy of it, to read the bytes queued in it.
    pub dup: OwnedFd,
    pub obstacle: String,
    /// At fd 0-2, nothing queued, not shut down: if its peer is outside
    /// the tree, the restore's own fd takes its place
    /// (`socket_state::OUTSIDE`) and `obstacle` does not apply.
    pub stdio: bool,
    /// The numbers the files in flight in its queue are held at in its
    /// process for the capture, per message that has them
    /// (`crate::inflight`); or why they were not held.
    pub held: Vec<Vec<i32>>,
    pub not_held: Option<String>,
}

impl CrossEnd {
    /// What waits to be read from this end: a stream's bytes as they are,
    /// or (`true`) framed as messages, as a datagram or seqpacket end's
    /// always are and a stream's are when files are in flight in it
    /// (held in its process for the capture: `held`); or why it cannot
    /// be kept.
    pub fn queued(&self) -> Result<(Vec<u8>, bool), String> {
        if self.rqueue == 0 {
            return Ok((Vec::new(), false));
        }
        let what = "a unix socket paired with another process";
        // (A seqpacket end shut down for reading, as its peer's shutdown
        // for writing makes it, reads as empty at its end.)
        let eof_at = (self.seqpacket && self.shutdown & 1 != 0).then_some(self.rqueue as usize);
        let peeked = if self.messages {
            sock::peek_messages(&self.dup, self.rqueue as usize, eof_at)
        } else {
            sock::peek_stream(&self.dup, self.rqueue as usize)
        };
        let m = match peeked {
            Ok(Ok(m)) => m,
            Ok(Err(why)) => {
                return Err(format!(
                    "fd {} ({what}) has {why}; not supported yet",
                    self.fd
                ))
            }
            Err(e) => return Err(format!("fd {}: reading what is queued in it: {e}", self.fd)),
        };
        if m.iter().all(|m| m.nfds == 0) {
            return Ok(if self.messages {
                (sock::frame(&m, &[], false), true)
            } else {
                (m.into_iter().flat_map(|m| m.bytes).collect(), false)
            });
        }
        let counts: Vec<usize> = m.iter().filter(|m| m.nfds > 0).map(|m| m.nfds).collect();
        let same = self.held.len() == counts.len()
            && self.held.iter().zip(&counts).all(|(h, &n)| h.len() == n);
        if !same {
            return Err(format!(
                "fd {} ({what}) has file descriptors in flight (SCM_RIGHTS): {}",
                self.fd,
                self.not_held
                    .as_deref()
                    .unwrap_or("which cryo could not hold for the capture")
            ));
        }
        Ok((sock::frame(&m, &self.held, false), true))
    }
}

/// Capture the socket behind fd `f` of the process (`pidfd`); its index
/// in the sockets table, or why it cannot be restored.
pub fn capture(
    pidfd: Option<&OwnedFd>,
    f: &OpenFd,
    b: &mut ImageBuilder,
    seen: &mut Sockets,
) -> Result<u32, String> {
    let (fd, ino) = (f.fd, f.ino);
    let pidfd =
        pidfd.ok_or_else(|| format!("fd {fd}: cannot reach the socket (pidfd_open failed)"))?;
    let dup = crate::sys::pidfd_getfd(pidfd, fd)
        .map_err(|e| format!("fd {fd}: cannot reach the socket (pidfd_getfd): {e}"))?;
    let int = |level, name| sock::getsockopt_int(&dup, level, name);
    let io = |what: &str, e: std::io::Error| format!("fd {fd} (socket): reading its {what}: {e}");
    let family = int(libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| io("family", e))?;
    let sock_type = int(libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| io("type", e))?;
    let protocol = int(libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(|e| io("protocol", e))?;
    if family == libc::AF_NETLINK {
        return netlink(fd, &dup, sock_type, protocol, b);
    }
    if !matches!(family, libc::AF_UNIX | libc::AF_INET | libc::AF_INET6) {
        return Err(format!(
            "fd {fd} is {}; cryo restores unix, TCP, UDP and netlink sockets only",
            family_name(family)
        ));
    }
    let inet = family != libc::AF_UNIX;
    let ok_proto = match (inet, sock_type) {
        (false, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) => true,
        (true, libc::SOCK_STREAM) => matches!(protocol, 0 | libc::IPPROTO_TCP),
        (true, libc::SOCK_DGRAM) => matches!(protocol, 0 | libc::IPPROTO_UDP),
        _ => false,
    };
    if !ok_proto {
        return Err(format!(
            "fd {fd} is a socket of type {sock_type}, protocol {protocol} (raw, SCTP, MPTCP, ICMP ...); cryo restores TCP, UDP and unix sockets only"
        ));
    }
    let what = type_name(family, sock_type);
    let addr = sock::sockname(&dup).map_err(|e| io("address", e))?;
    let peer = sock::peername(&dup).ok();
    let opts = read_options(&dup, family, sock_type, protocol, peer.is_some());
    // Timestamps numbered by the kernel (SOF_TIMESTAMPING_OPT_ID): the
    // counter, which the program matches its sends against, cannot be
    // set on a new socket (and TCP takes the flag only once connected).
    const SOF_TIMESTAMPING_OPT_ID: u32 = 1 << 7;
    let numbered = opts.iter().any(|(l, n, v)| {
        *l == libc::SOL_SOCKET
            && *n == libc::SO_TIMESTAMPING
            && v.get(..4).is_some_and(|b| {
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) & SOF_TIMESTAMPING_OPT_ID != 0
            })
    });
    if numbered {
        return Err(format!(
            "fd {fd} ({what} {}) numbers its timestamps (SO_TIMESTAMPING with SOF_TIMESTAMPING_OPT_ID): the kernel's counter cannot be given to a new socket",
            sockaddr_display(&addr)
        ));
    }
    if let Some(long) = long_options(&dup, family, sock_type) {
        return Err(format!(
            "fd {fd} ({what} {}) has {long}, which cryo does not restore yet",
            sockaddr_display(&addr)
        ));
    }
    // Multicast groups: joined again, unless a source filter is set
    // (not read yet: refused).
    let groups = if sock_type == libc::SOCK_DGRAM {
        crate::mcast::memberships(&dup, family)
    } else {
        Vec::new()
    };
    let filtered: Vec<String> = groups
        .iter()
        .filter(|g| g.filtered)
        .map(|g| g.shown())
        .collect();
    if !filtered.is_empty() {
        return Err(format!(
            "fd {fd} ({what} {}) filters the sources of multicast group{} {} (MCAST_MSFILTER, IP_ADD_SOURCE_MEMBERSHIP ...); cryo joins groups again, but not source filters yet",
            sockaddr_display(&addr),
            if filtered.len() > 1 { "s" } else { "" },
            filtered.join(", ")
        ));
    }
    let shown = sockaddr_display(&addr);
    let mut s = Socket {
        family: family as u32,
        sock_type: sock_type as u32,
        protocol: protocol as u32,
        pair: NO_INDEX,
        addr_len: addr.len() as u32,
        addr: sockaddr_words(&addr),
        ..Default::default()
    };
    if let Some(p) = &peer {
        s.peer_len = p.len() as u32;
        s.peer = sockaddr_words(p);
    }
    // A unix path the kernel resolved against the cwd of the bind (or
    // connect), which nothing records: bound again from another cwd it
    // would be another file (seen: zdtm sk-unix-rel restored, then its
    // connect failed). A bound socket that is not connected is found from
    // the process's working directory below; a connection's names are
    // not.
    // The name `is`: its own, else its peer's.
    let name_that = |is: &dyn Fn(&[u8]) -> bool| {
        if is(&addr) {
            shown.clone()
        } else {
            peer.as_deref().map(sockaddr_display).unwrap_or_default()
        }
    };
    let relative = |a: &[u8]| !inet && a.len() > 2 && a[2] != 0 && a[2] != b'/';
    // (One exception, resolved in `link`: a connection waiting in a
    // listener of the process bound to a relative name, whose directory
    // is known, zdtm sk-unix-listen01.)
    let relative_peer = (peer.as_deref().is_some_and(relative)
        || (relative(&addr) && peer.is_some()))
    .then(|| {
        let name = name_that(&relative);
        format!(
            "fd {fd} ({what}) is connected, and its own or its peer's name is the relative path {name}; cryo cannot tell which directory it was resolved in"
        )
    });
    // A path name of a process in a changed root (chroot) is its own
    // view, inside that root: made again from cryo's root it would be
    // another file (bound as a "ghost" at the wrong place; found by a
    // socket bound in a Python chroot).
    let pathname = |a: &[u8]| !inet && a.len() > 2 && a[2] != 0;
    if pathname(&addr) || peer.as_deref().is_some_and(pathname) {
        let root = crate::task::root(seen.pid);
        if !root.is_empty() {
            let name = name_that(&pathname);
            return Err(format!(
                "fd {fd} ({what}) has the path name {name} inside the process's root directory {root} (chroot); cryo would bind or connect it from its own root"
            ));
        }
    }
    let bound = if inet {
        addr.get(2..4).is_some_and(|p| p != [0, 0])
    } else {
        addr.len() > 2
    };
    s.state = if bound {
        socket_state::BOUND
    } else {
        socket_state::UNBOUND
    };
    if inet && bound && foreign_address(&addr) {
        s.flags |= cryo_image::fds::socket_flags::FOREIGN;
    }
    if sock::getsockopt_int(&dup, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1) >= 0 {
        return Err(format!(
            "fd {fd} ({what} {shown}) has a peek offset (SO_PEEK_OFF); reading its queue would move it"
        ));
    }
    let filter = read_filter(fd, &dup, &format!("{what} {shown}"))?;
    if !filter.is_empty()
        && !inet
        && sock_type != libc::SOCK_STREAM
        && crate::sys::fionread(&dup).unwrap_or(0) > 0
    {
        // (Sent to it again at restore, the queue would pass the filter a
        // second time.)
        return Err(format!(
            "fd {fd} ({what} {shown}) has a socket filter and messages queued; not supported yet"
        ));
    }
    if inet {
        // Shut down in a direction (UDP can be, even unconnected): the
        // kernel's diagnostics say, for a bound socket; an unbound one
        // shows a read shutdown through poll.
        let proto = if sock_type == libc::SOCK_STREAM {
            libc::IPPROTO_TCP
        } else {
            libc::IPPROTO_UDP
        };
        let at = match seen
            .shutdowns
            .iter()
            .position(|(k, _)| *k == (family, proto))
        {
            Some(at) => at,
            None => {
                // (Once more if it fails: a failed dump would leave every
                // socket of the kind to poll, which sees no write
                // shutdown.)
                let dump = sock::inet_shutdowns(family, proto)
                    .or_else(|_| sock::inet_shutdowns(family, proto));
                seen.shutdowns.push(((family, proto), dump));
                seen.shutdowns.len() - 1
            }
        };
        let known = match &seen.shutdowns[at].1 {
            Ok(map) => map.get(&ino).copied(),
            Err(_) => None,
        };
        let how = match known {
            Some(h) => h,
            _ => {
                let rdhup =
                    crate::sys::poll_now(&dup, libc::POLLRDHUP).unwrap_or(0) & libc::POLLRDHUP != 0;
                u8::from(rdhup)
            }
        };
        if how != 0 && sock_type == libc::SOCK_DGRAM {
            // UDP: made again by a shutdown after the bind and connect.
            s.shutdown = u32::from(how);
        } else if how != 0 {
            // A TCP connection that is closing: named by its state (a
            // peer's FIN reads as a shutdown for reading here).
            let mut info = [0u8; 8];
            let state = (sock_type == libc::SOCK_STREAM)
                .then(|| sock::getsockopt(&dup, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info).ok())
                .flatten()
                .and_then(|_| tcp_closing_state(info[0]));
            if let Some(st) = state {
                return Err(format!(
                    "fd {fd} ({what} {shown}) is a closing TCP connection ({st}); cryo keeps established connections only (--tcp-established); not supported yet"
                ));
            }
            return Err(format!(
                "fd {fd} ({what} {shown}) is shut down for {} (shutdown(2)); not supported yet",
                match how {
                    1 => "reading",
                    2 => "writing",
                    _ => "reading and writing",
                }
            ));
        }
    }
    let mut keep_dup = None;
    if inet && sock_type == libc::SOCK_STREAM {
        // struct tcp_info: state first; for a listener tcpi_unacked (offset
        // 24) is the accept queue and tcpi_sacked (28) the backlog.
        let mut info = [0u8; 104];
        sock::getsockopt(&dup, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
            .map_err(|e| io("TCP state", e))?;
        let u32_at =
            |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
        // TCP MD5 signature keys (TCP_MD5SIG, a BGP daemon's): no
        // getsockopt reads them back, and a socket made again would have
        // none; the kernel's diagnostics show them (to CAP_NET_ADMIN) on
        // a listener or a connection.
        let listed = matches!(info[0], 1 | 10);
        if listed
            && seen
                .tcp
                .get_or_insert_with(|| sock::TcpTable::read().unwrap_or_default())
                .has_md5(ino)
        {
            return Err(format!(
                "fd {fd} ({what} {shown}) has TCP MD5 signature keys (TCP_MD5SIG), which cannot be read back; cryo does not restore them"
            ));
        }
        match info[0] {
            10 => {
                if u32_at(24) > 0 {
                    return Err(format!(
                        "fd {fd} (TCP listener {shown}) has {} connections waiting to be accepted; they cannot be restored (capture when none waits)",
                        u32_at(24)
                    ));
                }
                s.state = socket_state::LISTENING;
                s.backlog = u32_at(28);
            }
            7 => {}
            1 => {
                // Established: restorable when the other end is a socket
                // of the processes captured (the tree's pass, or `link`,
                // pairs them by inode), nothing in flight.
                let to = peer.as_deref().map_or("?".into(), sockaddr_display);
                let tcp = seen
                    .tcp
                    .get_or_insert_with(|| sock::TcpTable::read().unwrap_or_default());
                let peer_ino = peer.as_deref().and_then(|p| tcp.peer_inode(&addr, p));
                let accepted = tcp.listener_at(&addr);
                // (A peer on this machine that no captured process holds
                // is outside too: a client of the server captured.)
                let inside = peer_ino.is_some_and(|i| seen.captured_holds(i));
                let peer_ino = peer_ino.filter(|_| inside);
                // With TCP repair, every connection: to outside, and
                // between captured processes too (each end made again as
                // it was, bytes in flight included).
                if seen.tcp_repair {
                    repair(dup, &mut s, b, seen, (&addr, peer.as_deref())).map_err(|why| {
                        format!("fd {fd} (TCP connection {shown} -> {to}): {why}")
                    })?;
                    return Ok(push(b, s, &opts, &filter) as u32);
                }
                let Some(peer_ino) = peer_ino.and_then(|i| u32::try_from(i).ok()) else {
                    return Err(format!(
                        "fd {fd} is a TCP connection {shown} -> {to} (ESTABLISHED) to another machine or a process not captured; `cryo capture --tcp-established` keeps it (TCP repair)"
                    ));
                };
                let outq = crate::sys::outq(&dup).map_err(|e| io("send queue", e))?;
                if outq > 0 {
                    return Err(format!(
                        "fd {fd} is a TCP connection {shown} -> {to} with {outq} bytes sent and not yet acknowledged, or not yet sent; `cryo capture --tcp-established` keeps them (TCP repair)"
                    ));
                }
                let rqueue = crate::sys::fionread(&dup).map_err(|e| io("queued bytes", e))? as u32;
                if accepted {
                    s.flags |= cryo_image::fds::socket_flags::ACCEPTED;
                }
                keep_dup = Some((
                    sock::UnixDiag {
                        state: 1,
                        peer: peer_ino,
                        rqueue,
                        wqueue: 0,
                        shutdown: 0,
                        vfs: None,
                    },
                    dup,
                ));
            }
            st => {
                // (A FIN that came after the look at its shutdown above
                // ends here: named as that look names it. Until stop 48
                // this said "TCP repair is not supported", under
                // --tcp-established too.)
                let to = peer.as_deref().map_or("?".into(), sockaddr_display);
                return Err(match tcp_closing_state(st) {
                    Some(why) => format!(
                        "fd {fd} ({what} {shown} -> {to}) is a closing TCP connection ({why}); cryo keeps established connections only (--tcp-established); not supported yet"
                    ),
                    None => format!(
                        "fd {fd} ({what} {shown} -> {to}) is a TCP socket in state {}; cryo restores listening and established ones only",
                        tcp_state(st)
                    ),
                });
            }
        }
    } else if inet {
        let queued = crate::sys::fionread(&dup).unwrap_or(0);
        if queued > 0 && !seen.drop_datagrams {
            return Err(format!(
                "fd {fd} ({what} {shown}) has datagrams queued ({queued} bytes in the first), which cannot be restored; `--drop-datagrams` drops them (the network may drop any datagram; a server under steady traffic has some queued while it is frozen)"
            ));
        }
        if peer.is_some() {
            s.state = socket_state::CONNECTED;
        }
    } else {
        let d = sock::unix_diag(ino as u32).map_err(|e| io("state (unix_diag)", e))?;
        let path = unix_bound_path(&addr);
        // Nothing needs to reach a socket whose file is gone by its name
        // later (bound again at the name and its file removed at once: a
        // ghost): no connection waits in it, no datagram sent to it
        // waits. (A connection's two ends are made again through a
        // listener bound at the name for the moment: a connected stream
        // or seqpacket end needs no file either. A datagram socket
        // connected to another is one end of a pair, or connected again
        // by that one's name: `link` refuses what is neither. Datagram
        // sockets connected to it are connected again while it is bound
        // there: `link`.)
        let quiet =
            (peer.is_none() && d.rqueue == 0 && (d.state == 10 || d.peer == 0)) || peer.is_some();
        let waiting = if d.state == 10 {
            "connections wait in it"
        } else {
            "datagrams sent to it wait in it"
        };
        if let Some(rel) = path.as_ref().filter(|p| p.is_relative()) {
            // Bound to a relative name: from the working directory, if it
            // leads to this very socket there; else where the kernel
            // says its file is (`bound_file`).
            // Through the process's own view of it, and by the path the
            // socket file's entry records (restore's directory).
            let here = std::path::Path::new(&format!("/proc/{}/cwd", seen.pid)).join(rel);
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", seen.pid))
                .ok()
                .filter(|dir| {
                    dir.is_absolute() && leads_to(&here, d.vfs) && leads_to(&dir.join(rel), d.vfs)
                });
            // (Where the working directory leads to it, that is where it is.)
            let now = match cwd {
                Some(dir) => Some(FileNow::At(dir.join(rel))),
                None => bound_file(&dup).map(|f| match f {
                    FileNow::At(at) => FileNow::At(as_bound(at, rel)),
                    f => f,
                }),
            };
            match now {
                Some(FileNow::At(at)) if ends_in(&at, rel) && leads_to(&at, d.vfs) => {
                    seen.relative.push((b.sockets.len() as u32, at));
                    s.flags |= cryo_image::fds::socket_flags::RELATIVE;
                }
                // Its file removed since the bind (zdtm
                // fifo_upon_unix_socket01): a ghost, bound again by its
                // name in a directory of the restore's own for the moment.
                Some(FileNow::Gone) if quiet => {
                    s.flags |= cryo_image::fds::socket_flags::GHOST;
                }
                Some(FileNow::Gone) => {
                    return Err(format!(
                        "fd {fd} ({what} bound to the relative path {shown}): its file was removed since the bind, and {waiting}; cryo cannot restore it"
                    ))
                }
                Some(FileNow::LinkedElsewhere) => {
                    return Err(linked_elsewhere(fd, what, &shown))
                }
                Some(FileNow::At(at))
                    if rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir)) =>
                {
                    return Err(format!(
                        "fd {fd} ({what} bound to the relative path {shown}): its file is {}, but a name with `..` parts does not say which directory it was resolved in; cryo cannot restore it",
                        at.display()
                    ))
                }
                Some(FileNow::At(at)) => {
                    return Err(format!(
                        "fd {fd} ({what} bound to the relative path {shown}): its file is {} now, renamed since the bind, and where the name was bound is not known; cryo cannot restore it",
                        at.display()
                    ))
                }
                None => {
                    return Err(format!(
                        "fd {fd} ({what} bound to the relative path {shown}): that name does not lead to this socket from the process's working directory (bound from another directory, or removed since), and the kernel did not say where its file is (SIOCUNIXFILE needs CAP_NET_ADMIN, or the file was renamed); cryo cannot tell which directory it was resolved in"
                    ))
                }
            }
        } else if let (Some(path), Some(_)) = (path, d.vfs) {
            // The name the socket reports is only what it was bound to:
            // bound again there, it would be another socket than the one
            // the path now leads to (if any).
            let same = leads_to(&path, d.vfs);
            // Its file removed (or replaced) since the bind: a ghost,
            // bound again at the name (its directories made for the
            // moment if they are gone too) and the file removed at once,
            // if nothing needs to reach it by the name later (`quiet`).
            // Or renamed since the bind, in its directory (haproxy binds
            // `admin.sock.PID.tmp` and renames it `admin.sock`): reached
            // by the new name, which the restore gives its file again.
            let renamed = (!same).then(|| renamed_to(&path, d.vfs)).flatten();
            // (Where the kernel can say: a name removed while another
            // link remains, or the file moved to another directory, would
            // be lost as a ghost.)
            if !same && renamed.is_none() {
                match bound_file(&dup) {
                    Some(FileNow::LinkedElsewhere) => {
                        return Err(linked_elsewhere(fd, what, &shown))
                    }
                    Some(FileNow::At(at)) => {
                        return Err(format!(
                            "fd {fd} ({what} bound to {shown}): its file was moved to {} since the bind; cryo cannot restore it",
                            at.display()
                        ))
                    }
                    Some(FileNow::Gone) | None => {}
                }
            }
            if !(same || quiet) {
                return Err(format!(
                    "fd {fd} ({what} bound to {shown}): that path no longer leads to this socket ({}), and {}; cryo cannot restore it",
                    match &renamed {
                        Some(to) => format!("its file was renamed to {} since the bind", to.display()),
                        None => "removed or replaced since the bind".into(),
                    },
                    waiting
                ));
            }
            match renamed {
                Some(to) => {
                    seen.renamed.push((b.sockets.len() as u32, to));
                    s.flags |= cryo_image::fds::socket_flags::RENAMED;
                }
                None if !same => s.flags |= cryo_image::fds::socket_flags::GHOST,
                None => {}
            }
        }
        // A named end whose other end was closed is made again accepted
        // at its name (not a relative one: that would be bound in cryo
        // restore's directory), from an unnamed client, as its peer was.
        let widow_keeps_name = s.flags & cryo_image::fds::socket_flags::RELATIVE == 0
            && peer.as_deref().is_none_or(|p| p.len() <= 2);
        if d.state == 10 {
            if d.rqueue > 0 {
                // Connections waiting: made again if each connecting end
                // is a socket of the process (matched in `link`).
                let icons = sock::unix_icons(ino as u32).unwrap_or_default();
                if icons.len() != d.rqueue as usize || icons.contains(&0) {
                    return Err(format!(
                        "fd {fd} ({what} listening on {shown}) has {} connections waiting to be accepted; they cannot be restored",
                        d.rqueue
                    ));
                }
                seen.waiting.push((b.sockets.len(), fd, icons));
            }
            s.state = socket_state::LISTENING;
            s.backlog = d.wqueue;
        } else if d.peer != 0 {
            // Paired up (or refused) once every fd of the process is seen.
            keep_dup = Some((d, dup));
        } else if d.state == 1
            && matches!(sock_type, libc::SOCK_STREAM | libc::SOCK_SEQPACKET)
            && d.shutdown == 3
            && (!bound || widow_keeps_name)
        {
            // (Peer 0 with no shutdown: a connection still waiting in a
            // listener's queue, whose other end has no inode yet: it
            // keeps the refusal below. A named end was accepted, its
            // client gone since (a server's connection; redis's BGSAVE
            // child holds those): made again accepted from a listener
            // bound at its name for the moment, which keeps its name.)
            // One end of a pair (or connection) whose other end was
            // closed: it reads the bytes left in it, then end of file,
            // and writing to it fails (EPIPE). Made again as a pair whose
            // other end is closed after sending those bytes. An error the
            // close left pending (ECONNRESET: the other end had bytes
            // unread) shows only in poll, and reading it would clear it.
            if crate::sys::poll_now(&dup, 0).unwrap_or(0) & libc::POLLERR != 0 {
                return Err(format!(
                    "fd {fd} ({what} {shown}): its other end was closed with bytes unread, which left an error pending (ECONNRESET); not supported"
                ));
            }
            let bytes = if d.rqueue > 0 && sock_type == libc::SOCK_SEQPACKET {
                // Its messages, then end of file.
                let m =
                    widowed_messages(fd, what, &shown, &dup, d.rqueue, Some(d.rqueue as usize))?;
                seen.widowed_messages.push((b.sockets.len(), fd, m));
                Vec::new()
            } else if d.rqueue > 0 {
                match sock::peek(&dup, d.rqueue as usize + 1) {
                    Ok(p) if p.other_control => {
                        return Err(format!(
                            "fd {fd} ({what} {shown}) has credentials in flight; not supported yet"
                        ))
                    }
                    Ok(p) if p.fds => {
                        // Files in flight: its runs of bytes, cut where
                        // they are (framed as messages).
                        match sock::peek_stream(&dup, d.rqueue as usize) {
                            Ok(Ok(m)) => {
                                s.flags |= cryo_image::fds::socket_flags::FRAMED;
                                seen.widowed_messages.push((b.sockets.len(), fd, m));
                            }
                            Ok(Err(why)) => {
                                return Err(format!(
                                    "fd {fd} ({what} {shown}) has {why}; not supported yet"
                                ))
                            }
                            Err(e) => return Err(io("queued bytes", e)),
                        }
                        Vec::new()
                    }
                    Ok(p) if p.bytes.len() == d.rqueue as usize => p.bytes,
                    Ok(p) => {
                        return Err(format!(
                            "fd {fd} ({what}): peeked {} of the {} bytes queued",
                            p.bytes.len(),
                            d.rqueue
                        ))
                    }
                    Err(e) => return Err(io("queued bytes", e)),
                }
            } else {
                Vec::new()
            };
            // (In a tree `cryo restore` makes a named one before any
            // process; files in flight are sent by the process that holds
            // it once they are at their numbers.)
            let flying = s.flags & cryo_image::fds::socket_flags::FRAMED != 0
                || seen
                    .widowed_messages
                    .last()
                    .is_some_and(|(i, _, m)| *i == b.sockets.len() && m.iter().any(|m| m.nfds > 0));
            if bound && seen.scope.len() > 1 && flying {
                return Err(format!(
                    "fd {fd} ({what} {shown}): its other end was closed, and files in flight wait in it; with a name, in a tree, not supported yet"
                ));
            }
            s.state = socket_state::WIDOWED;
            s.shutdown = 3;
            // (Its name's file gone or not, it is accepted again at that
            // name, with what is there moved aside: not a ghost.)
            s.flags &= !cryo_image::fds::socket_flags::GHOST;
            seen.widowed.push((b.sockets.len(), bytes));
        } else if sock_type == libc::SOCK_DGRAM
            && d.peer == 0
            && !bound
            && peer.as_deref().map_or(d.rqueue > 0, |p| p.len() <= 2)
        {
            // An unnamed datagram socket whose peer was closed (a pair's
            // end): it still names the dead peer (getpeername answers,
            // and its next send fails with ECONNREFUSED, then ENOTCONN),
            // or no longer (`peer_len` 0: that send was made); messages
            // the peer sent before its close wait in it. Made again as a
            // pair whose other end sends them and is closed (and then
            // disconnected, if it was).
            if d.rqueue > 0 {
                let m = widowed_messages(fd, what, &shown, &dup, d.rqueue, None)?;
                seen.widowed_messages.push((b.sockets.len(), fd, m));
            }
            s.state = socket_state::WIDOWED;
        } else if d.rqueue > 0 && sock_type == libc::SOCK_DGRAM && bound {
            // Datagrams sent to its name: sent to it again at restore, each
            // from a socket with its sender's address (`link` checks that
            // the process has one, or that the sender was unnamed).
            match sock::peek_messages(&dup, d.rqueue as usize, None) {
                Ok(Ok(m)) if m.iter().any(|m| m.nfds > 0) => {
                    return Err(format!(
                        "fd {fd} ({what} {shown}) has datagrams queued with file descriptors in flight; not supported yet"
                    ))
                }
                Ok(Ok(m)) => seen.datagrams.push((b.sockets.len(), fd, m)),
                Ok(Err(why)) => {
                    return Err(format!("fd {fd} ({what} {shown}) has {why}; not supported yet"))
                }
                Err(e) => return Err(io("queued datagrams", e)),
            }
        } else if d.rqueue > 0 {
            return Err(format!(
                "fd {fd} ({what} {shown}) has {} bytes queued; they cannot be restored",
                d.rqueue
            ));
        } else if d.state == 1 && sock_type != libc::SOCK_DGRAM {
            // (A datagram socket someone connected to shows ESTABLISHED
            // too: that is the other one's connection.) A connection
            // waiting in a listener's queue shows no peer either (the
            // accepting end has no inode yet): `link` looks for it.
            seen.connecting.push(Connecting {
                index: b.sockets.len(),
                fd,
                ino: ino as u32,
                sent: d.wqueue,
                shutdown: d.shutdown,
                gone: format!(
                    "fd {fd} ({what} {shown}) is connected to a socket that is gone, or waits to be accepted by a listener of another process; cryo cannot connect it again"
                ),
                relative_peer: None,
            });
        }
    }
    // (An unnamed datagram socket connected by a relative name, to a
    // socket of the process that `link` finds: `Connected::relative_peer`.)
    let mut dgram_relative_peer = None;
    if let Some(why) = relative_peer {
        // Unnamed itself, waiting in a queue: the listener's name.
        match seen.connecting.last_mut() {
            Some(c) if c.index == b.sockets.len() && !relative(&addr) => {
                c.relative_peer = peer.map(|p| (p, why));
            }
            _ if keep_dup.is_some() && sock_type == libc::SOCK_DGRAM && !relative(&addr) => {
                dgram_relative_peer = Some(why);
            }
            _ => return Err(why),
        }
    }
    let index = push(b, s, &opts, &filter);
    b.mcast_groups
        .extend(groups.iter().map(|g| g.record(index)));
    if !inet {
        seen.unix.push((ino, index));
    }
    if let Some((diag, dup)) = keep_dup {
        seen.connected.push(Connected {
            index,
            fd,
            ino,
            diag,
            dup,
            relative_peer: dgram_relative_peer,
        });
    }
    Ok(index as u32)
}

/// The index of the unix socket of the process with inode `ino`, if it is
/// a ghost (`socket_flags::GHOST`).
fn unix_ghost(unix: &[(u64, usize)], b: &ImageBuilder, ino: u32) -> Option<usize> {
    unix.iter()
        .find(|&&(i, _)| i == u64::from(ino))
        .map(|&(_, g)| g)
        .filter(|&g| b.sockets[g].flags & cryo_image::fds::socket_flags::GHOST != 0)
}

/// The index of the process's unix socket with inode `ino`, if it is bound
/// by a relative name whose directory capture found.
fn unix_relative(unix: &[(u64, usize)], b: &ImageBuilder, ino: u32) -> Option<usize> {
    unix.iter()
        .find(|&&(i, _)| i == u64::from(ino))
        .map(|&(_, g)| g)
        .filter(|&g| b.sockets[g].flags & cryo_image::fds::socket_flags::RELATIVE != 0)
}

/// The messages waiting in a datagram or seqpacket socket whose other end
/// was closed; refused if one came from a named socket (the pair made
/// again has no name).
fn widowed_messages(
    fd: i32,
    what: &str,
    shown: &str,
    dup: &OwnedFd,
    rqueue: u32,
    eof_at: Option<usize>,
) -> Result<Vec<sock::Message>, String> {
    match sock::peek_messages(dup, rqueue as usize, eof_at) {
        Ok(Ok(m)) if m.iter().any(|m| !m.from.is_empty()) => Err(format!(
            "fd {fd} ({what} {shown}): its other end was closed, and messages queued in it came from a named socket; not supported"
        )),
        Ok(Ok(m)) => Ok(m),
        Ok(Err(why)) => Err(format!("fd {fd} ({what} {shown}) has {why}; not supported yet")),
        Err(e) => Err(format!("fd {fd} ({what} {shown}): reading its queued messages: {e}")),
    }
}

/// A netlink socket (format 8.0): its protocol, port id and the groups it
/// joined (bound again at restore with them, the port id included:
/// programs match the kernel's replies by it), the kernel destination it
/// was connected to, its options. Refused: messages waiting to be read
/// (the kernel's answers or broadcasts: they cannot be sent again), a
/// group above 32, a socket filter.
fn netlink(
    fd: i32,
    dup: &OwnedFd,
    sock_type: i32,
    protocol: i32,
    b: &mut ImageBuilder,
) -> Result<u32, String> {
    const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
    let io = |what: &str, e: std::io::Error| {
        format!("fd {fd} (netlink socket): reading its {what}: {e}")
    };
    if !matches!(sock_type, libc::SOCK_RAW | libc::SOCK_DGRAM) {
        return Err(format!(
            "fd {fd} is a netlink socket of type {sock_type}; cryo restores raw and datagram ones only"
        ));
    }
    let addr = sock::sockname(dup).map_err(|e| io("address", e))?;
    let shown = sockaddr_display(&addr);
    let what = format!("netlink socket, protocol {protocol}, {shown}");
    // (An unconnected one reports destination port 0, groups 0.)
    let peer = sock::peername(dup)
        .ok()
        .filter(|p| p.get(4..12).is_some_and(|d| d.iter().any(|&c| c != 0)));
    let mut groups = [0u8; 128];
    let n = sock::getsockopt(
        dup,
        libc::SOL_NETLINK,
        NETLINK_LIST_MEMBERSHIPS,
        &mut groups,
    )
    .map_err(|e| io("groups", e))?;
    if groups[4.min(n)..n].iter().any(|&g| g != 0) {
        return Err(format!(
            "fd {fd} ({what}) joined a multicast group above 32; not supported yet"
        ));
    }
    let filter = read_filter(fd, dup, &what)?;
    // (A peek with room for the longest message netlink sends: one
    // page's worth, or 32 KiB for a dump.)
    match sock::peek(dup, 1 << 16) {
        Ok(p) if p.none => {}
        Ok(_) => {
            return Err(format!(
                "fd {fd} ({what}) has messages waiting to be read; they cannot be restored (capture when it is idle)"
            ))
        }
        Err(e) => return Err(io("queue", e)),
    }
    let mut s = Socket {
        family: libc::AF_NETLINK as u32,
        sock_type: sock_type as u32,
        protocol: protocol as u32,
        pair: NO_INDEX,
        addr_len: addr.len() as u32,
        addr: sockaddr_words(&addr),
        ..Default::default()
    };
    let bound = addr.get(4..12).is_some_and(|a| a.iter().any(|&c| c != 0));
    s.state = if bound {
        socket_state::BOUND
    } else {
        socket_state::UNBOUND
    };
    if let Some(p) = &peer {
        s.peer_len = p.len() as u32;
        s.peer = sockaddr_words(p);
        s.state = socket_state::CONNECTED;
    }
    let opts = read_options(dup, libc::AF_NETLINK, sock_type, protocol, false);
    Ok(push(b, s, &opts, &filter) as u32)
}

/// Every option of [`options`] the socket `dup` answers: (level, name,
/// the bytes getsockopt gave).
///
/// An option not marked `always` is left out where a new socket of the
/// kind, made here (the target's network namespace: another is refused),
/// reads the same: the program did not set it, and the restore's new
/// socket gets its own machine's default.
/// Options whose values are longer than `options` reads, set on the
/// socket (a sweep of real servers, stop 45, listed them as not read):
/// an upper-layer protocol (TCP_ULP: kTLS's "tls", whose keys cannot be
/// read back), IPv4 header options (IP_OPTIONS), IPv6 sticky extension
/// headers (hop-by-hop, routing, destination options). Each reads as
/// empty on a socket without it. None if there are none.
fn long_options(dup: &OwnedFd, family: i32, sock_type: i32) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut got = |level, name| sock::getsockopt(dup, level, name, &mut buf).unwrap_or(0);
    if sock_type == libc::SOCK_STREAM {
        const TCP_ULP: i32 = 31;
        let n = got(libc::IPPROTO_TCP, TCP_ULP);
        if n > 0 {
            let name = String::from_utf8_lossy(&buf[..n]);
            return Some(format!(
                "the upper-layer protocol {:?} (TCP_ULP; kTLS's keys cannot be read back)",
                name.trim_end_matches('\0')
            ));
        }
    }
    if family == libc::AF_INET && got(libc::IPPROTO_IP, libc::IP_OPTIONS) > 0 {
        return Some("IPv4 header options (IP_OPTIONS)".to_owned());
    }
    if family == libc::AF_INET6 {
        for (name, what) in [
            (libc::IPV6_HOPOPTS, "IPV6_HOPOPTS"),
            (libc::IPV6_RTHDRDSTOPTS, "IPV6_RTHDRDSTOPTS"),
            (libc::IPV6_RTHDR, "IPV6_RTHDR"),
            (libc::IPV6_DSTOPTS, "IPV6_DSTOPTS"),
        ] {
            if got(libc::IPPROTO_IPV6, name) > 0 {
                return Some(format!("an IPv6 extension header of its own ({what})"));
            }
        }
    }
    None
}

fn read_options(
    dup: &OwnedFd,
    family: i32,
    sock_type: i32,
    protocol: i32,
    connected: bool,
) -> Vec<(i32, i32, Vec<u8>)> {
    let fresh = sock::socket(family, sock_type, protocol).ok();
    let read = |fd: &OwnedFd, level, name| {
        let mut val = [0u8; 16];
        let len = sock::getsockopt(fd, level, name, &mut val).ok()?;
        Some(val[..len].to_vec())
    };
    options(family, sock_type, connected)
        .into_iter()
        .filter_map(|(level, name, always)| {
            let val = read(dup, level, name)?;
            let default = || fresh.as_ref().and_then(|f| read(f, level, name));
            if !always && default().as_ref() == Some(&val) {
                return None;
            }
            Some((level, name, val))
        })
        .collect()
}

/// Add socket `s`, its options and its filter to the image; its index.
fn push(
    b: &mut ImageBuilder,
    s: Socket,
    opts: &[(i32, i32, Vec<u8>)],
    filter: &[SockFilterInsn],
) -> usize {
    let index = b.sockets.len();
    b.sockopts
        .extend(opts.iter().map(|(l, n, v)| opt(index, *l, *n, v)));
    b.sock_filters.extend(filter.iter().map(|i| SockFilterInsn {
        sock: index as u32,
        ..*i
    }));
    b.sockets.push(s);
    index
}

/// The socket's classic BPF filter (SO_ATTACH_FILTER), read back with
/// SO_GET_FILTER, and whether it is locked (SO_LOCK_FILTER); empty when
/// it has none. An eBPF program (SO_ATTACH_BPF) cannot be read back: the
/// kernel answers EACCES, and it is refused.
fn read_filter(fd: i32, dup: &OwnedFd, what: &str) -> Result<Vec<SockFilterInsn>, String> {
    const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;
    let io = |e: std::io::Error| format!("fd {fd} ({what}): reading its socket filter: {e}");
    // (With no buffer, the kernel answers the number of instructions.)
    let n = match sock::getsockopt_len(dup, libc::SOL_SOCKET, SO_GET_FILTER) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n as usize,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return Err(format!(
                "fd {fd} ({what}) has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back; not supported"
            ))
        }
        Err(e) => return Err(io(e)),
    };
    // (The length given and returned counts instructions, not bytes.)
    let mut buf = vec![0u8; n * 8];
    let got = sock::getsockopt(dup, libc::SOL_SOCKET, SO_GET_FILTER, &mut buf).map_err(io)?;
    if got != n {
        return Err(format!(
            "fd {fd} ({what}): its socket filter changed while it was read"
        ));
    }
    let locked =
        sock::getsockopt_int(dup, libc::SOL_SOCKET, libc::SO_LOCK_FILTER).map_err(io)? != 0;
    let flags = if locked { filter_flags::LOCKED } else { 0 };
    Ok(buf
        .chunks_exact(8)
        .map(|c| SockFilterInsn {
            sock: 0,
            flags,
            code: u32::from(u16::from_ne_bytes([c[0], c[1]])),
            jt: u32::from(c[2]),
            jf: u32::from(c[3]),
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Whether the IP address of a TCP/UDP sockaddr is one this machine does
/// not have (a bind to it, port 0, fails with EADDRNOTAVAIL): the socket
/// was bound with IP_FREEBIND (or the address has gone since).
fn foreign_address(addr: &[u8]) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
    let family = addr
        .get(..2)
        .map(|f| i32::from(u16::from_ne_bytes([f[0], f[1]])));
    let at: Option<SocketAddr> = match family {
        Some(libc::AF_INET) => addr
            .get(4..8)
            .map(|a| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])), 0)),
        Some(libc::AF_INET6) => addr.get(8..28).map(|a| {
            let ip: [u8; 16] = a[..16].try_into().unwrap_or([0; 16]);
            let scope = u32::from_ne_bytes([a[16], a[17], a[18], a[19]]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), 0, 0, scope))
        }),
        _ => None,
    };
    match at {
        Some(a) if !a.ip().is_unspecified() => matches!(
            std::net::UdpSocket::bind(a),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
        ),
        _ => false,
    }
}

/// The files-table entry of the socket file a unix socket of the image
/// (`index`) is bound to (its mode and owner), NO_INDEX if it has none.
pub fn socket_file(b: &mut ImageBuilder, seen: &Sockets, index: u32) -> u32 {
    let Some(s) = b.sockets.get(index as usize) else {
        return NO_INDEX;
    };
    if s.family as i32 != libc::AF_UNIX {
        return NO_INDEX;
    }
    let (a, n) = cryo_image::fds::sockaddr_bytes(&s.addr, s.addr_len);
    if s.flags & cryo_image::fds::socket_flags::GHOST != 0 {
        // (Its file is gone: what the path leads to now is another.)
        return NO_INDEX;
    }
    // (A relative name: its path from the working directory, checked; a
    // renamed file: its name now.)
    let found = seen
        .relative
        .iter()
        .chain(seen.renamed.iter())
        .find(|(i, _)| *i == index);
    match found
        .map(|(_, p)| p.clone())
        .or_else(|| unix_bound_path(&a[..n]))
    {
        // (Not when it cannot be read: a mode 0 owned by root would be
        // given to the socket file made again.)
        Some(p) if p.is_absolute() && std::fs::symlink_metadata(&p).is_ok() => {
            crate::vma::file_id(b, &p.to_string_lossy())
        }
        _ => NO_INDEX,
    }
}

/// The other name in `path`'s directory that leads to the socket file
/// unix_diag names (`vfs`), if one does: its file renamed since the bind.
fn renamed_to(path: &std::path::Path, vfs: Option<(u32, u32)>) -> Option<std::path::PathBuf> {
    let dir = path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p != path && leads_to(p, vfs))
}

/// Whether `path` leads to the socket file unix_diag names (`vfs`: its
/// inode and device). By inode number alone, as unix_diag has it (32
/// bits): its device is the superblock's, which a stat on overlayfs does
/// not report; another file on another device, at this very path, with
/// the same 32 low inode bits, is not worth a refusal of every socket
/// there.
/// A relative path leads nowhere here: it would be resolved from cryo's
/// own directory, not the process's.
fn leads_to(path: &std::path::Path, vfs: Option<(u32, u32)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.is_absolute()
        && vfs.is_some_and(|(vino, _)| {
            std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() as u32 == vino)
        })
}

/// Where the file a unix socket is bound to is now, by the kernel's word.
enum FileNow {
    /// At this path (the bind's, or where it was renamed to).
    At(std::path::PathBuf),
    /// Removed, and no other link to it is left.
    Gone,
    /// The bind's name removed while another link to the file remains
    /// (`link` before the `unlink`): something may reach it there.
    LinkedElsewhere,
}

/// Where the file of a unix socket (`sock`, a copy) is now
/// (SIOCUNIXFILE opens it; its /proc link is its path, " (deleted)"
/// after it once its name is removed, and its link count says whether
/// another name is left). None when the kernel does not say (it wants
/// CAP_NET_ADMIN over the socket's network namespace).
fn bound_file(sock: &OwnedFd) -> Option<FileNow> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(crate::sys::unix_file(sock).ok()?);
    let nlink = file.metadata().ok()?.nlink();
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .ok()?;
    let bytes = link.as_os_str().as_bytes();
    Some(match (nlink, bytes.ends_with(b" (deleted)")) {
        (0, _) => FileNow::Gone,
        (_, true) => FileNow::LinkedElsewhere,
        _ => FileNow::At(link),
    })
}

/// The refusal of a unix socket (fd `fd`, a `what` named `shown`) whose
/// bind's name was removed while another link to its file remains.
fn linked_elsewhere(fd: i32, what: &str, shown: &str) -> String {
    format!(
        "fd {fd} ({what} bound to {shown}): that name was removed since the bind while another link to its file remains (what reaches it there would not reach a socket bound again); cryo cannot restore it"
    )
}

/// The socket file's path `at` (as the kernel spells it: no `.` parts,
/// single slashes) spelled with the name it was bound by, `rel`
/// (`./x.sock`, `a//x.sock`), where the two name the same file from one
/// directory; else `at` as it is. (A name with `..` parts says nothing of
/// the directory it was resolved in.)
fn as_bound(at: std::path::PathBuf, rel: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let parts: Vec<Component> = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let file: Vec<Component> = at.components().collect();
    if parts.is_empty()
        || parts.iter().any(|c| !matches!(c, Component::Normal(_)))
        || file.len() <= parts.len()
        || !file.ends_with(&parts)
    {
        return at;
    }
    let dir: std::path::PathBuf = file[..file.len() - parts.len()].iter().collect();
    dir.join(rel)
}

/// Whether the absolute path `at` ends in the relative name `rel`, as a
/// name under a directory (`/` included).
fn ends_in(at: &std::path::Path, rel: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (p, n) = (at.as_os_str().as_bytes(), rel.as_os_str().as_bytes());
    at.is_absolute() && p.len() > n.len() && p.ends_with(n) && p[p.len() - n.len() - 1] == b'/'
}

/// The path a unix socket address names (not abstract, not unnamed).
pub(crate) fn unix_bound_path(addr: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p = addr.get(2..)?;
    if p.first().is_none_or(|&c| c == 0) {
        return None;
    }
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    Some(std::ffi::OsStr::from_bytes(&p[..end]).into())
}

fn opt(index: usize, level: i32, name: i32, bytes: &[u8]) -> SockOpt {
    let mut w = [0u64; 2];
    for (i, c) in bytes.chunks(8).take(2).enumerate() {
        let mut x = [0u8; 8];
        x[..c.len()].copy_from_slice(c);
        w[i] = u64::from_le_bytes(x);
    }
    SockOpt {
        sock: index as u32,
        level,
        name,
        len: bytes.len().min(16) as u32,
        val: w,
    }
}

/// Pair up the connected unix sockets: both ends here make a pair (with
/// the bytes queued in a stream pair; a stream connection made through
/// a named socket is a pair whose ends keep their addresses); a datagram
/// socket connected to a named socket elsewhere is connected again by
/// address; anything else is refused.
/// `cross`: in a tree, where the unnamed unix sockets connected outside
/// the process go (None: each is an obstacle).
pub fn link(
    b: &mut ImageBuilder,
    seen: Sockets,
    stored: &mut StoredFiles,
    mut cross: Option<&mut Cross>,
    in_flight: &crate::inflight::InFlight,
    obs: &mut crate::obstacles::Obstacles,
) {
    // The queues of connections captured with TCP repair.
    for (conn, sendq, recvq) in &seen.tcp_queues {
        for (to, bytes) in [
            (BlobOwner::TcpSend(*conn), sendq),
            (BlobOwner::TcpRecv(*conn), recvq),
        ] {
            if !bytes.is_empty() {
                stored.blobs.push(PendingBlob {
                    to,
                    bytes: bytes.clone(),
                });
            }
        }
    }
    // Datagrams queued in a named socket: each sender unnamed, or a socket
    // of the process bound to the sender's name (which sends it again).
    for (index, fd, msgs) in &seen.datagrams {
        let names: Vec<Vec<u8>> = b
            .sockets
            .iter()
            .filter(|s| s.family as i32 == libc::AF_UNIX && s.addr_len > 2)
            .map(|s| {
                let (a, n) = cryo_image::fds::sockaddr_bytes(&s.addr, s.addr_len);
                a[..n].to_vec()
            })
            .collect();
        let strangers: Vec<String> = msgs
            .iter()
            .filter(|m| !m.from.is_empty() && !names.contains(&m.from))
            .map(|m| sockaddr_display(&m.from))
            .collect();
        if strangers.is_empty() {
            stored.blobs.push(PendingBlob {
                to: BlobOwner::Socket(*index),
                bytes: sock::frame(msgs, &[], true),
            });
        } else {
            obs.push(format!(
                "fd {fd} (unix datagram socket) has datagrams queued from {}, not a socket of this process (another process's, of the tree or not, or one gone since); they cannot be sent again from that address: only datagrams from the process's own sockets, or from unnamed ones, are",
                strangers.join(", ")
            ));
        }
    }
    // Connections waiting in a listener of the process: connected again
    // to it, in queue order, once it listens.
    for c in &seen.connecting {
        let at = seen.waiting.iter().find_map(|(l, lfd, icons)| {
            icons
                .iter()
                .position(|&i| i == c.ino)
                .map(|k| (*l, *lfd, k))
        });
        match at {
            // Maybe waiting in a listener of another process of the tree:
            // its pass looks (nothing sent on it, not shut down, a
            // listener's name that is not relative).
            None => match cross.as_deref_mut() {
                Some(x)
                    if c.sent == 0
                        && c.shutdown == 0
                        && c.relative_peer.is_none()
                        && b.sockets[c.index].peer_len > 2 =>
                {
                    let me = &mut b.sockets[c.index];
                    me.state = socket_state::PENDING;
                    me.pair = NO_INDEX;
                    x.pending.push(CrossPending {
                        index: c.index,
                        ino: u64::from(c.ino),
                        obstacle: c.gone.clone(),
                    });
                }
                _ => obs.push(c.gone.clone()),
            },
            Some((_, lfd, _)) if c.sent > 0 || c.shutdown != 0 => obs.push(format!(
                "fd {} is connecting to the listener at fd {lfd} (not accepted yet), and {}; not supported",
                c.fd,
                if c.shutdown != 0 {
                    "is shut down".to_owned()
                } else {
                    // (unix_diag's write queue is the memory its sent
                    // buffers hold, not the bytes.)
                    format!("has sent data ({} bytes of buffers in use)", c.sent)
                }
            )),
            Some((l, _, _))
                if c.relative_peer.as_ref().is_some_and(|(name, _)| {
                    let ls = &b.sockets[l];
                    let (a, n) = cryo_image::fds::sockaddr_bytes(&ls.addr, ls.addr_len);
                    ls.flags & cryo_image::fds::socket_flags::RELATIVE == 0 || a[..n] != name[..]
                }) =>
            {
                obs.push(c.relative_peer.as_ref().map(|(_, why)| why.clone()).unwrap_or_default())
            }
            Some((l, _, k)) => {
                b.sockets[c.index].state = socket_state::PENDING;
                b.sockets[c.index].pair = l as u32;
                b.sockets[c.index].backlog = k as u32;
            }
        }
    }
    for (_, lfd, icons) in &seen.waiting {
        let outside = icons
            .iter()
            .filter(|&&i| !seen.connecting.iter().any(|c| c.ino == i))
            .count();
        if outside > 0 {
            let obstacle = format!(
                "fd {lfd} (a unix listener) has {outside} connections waiting to be accepted from another process or from outside; they cannot be restored"
            );
            match cross.as_deref_mut() {
                Some(x) => x.waiting.push(CrossWaiting {
                    fd: *lfd,
                    icons: icons.clone(),
                    outside,
                    obstacle,
                }),
                None => obs.push(obstacle),
            }
        }
    }
    for (index, bytes) in seen.widowed {
        if !bytes.is_empty() {
            stored.blobs.push(PendingBlob {
                to: BlobOwner::Socket(index),
                bytes,
            });
        }
    }
    // Ends whose other end was closed, with messages: their files in
    // flight held in the process for the capture, as for a pair.
    for (index, fd, m) in seen.widowed_messages {
        let held = match in_flight.held_for(fd, &m) {
            Ok(h) => h,
            Err(why) => {
                let s = b.sockets[index];
                let what = type_name(s.family as i32, s.sock_type as i32);
                obs.push(format!(
                    "fd {fd} ({what}, its other end closed) has file descriptors in flight (SCM_RIGHTS): {why}"
                ));
                continue;
            }
        };
        stored.blobs.push(PendingBlob {
            to: BlobOwner::Socket(index),
            bytes: sock::frame(&m, held, false),
        });
    }
    let all = &seen.connected;
    for c in all {
        let s = b.sockets[c.index];
        let what = type_name(s.family as i32, s.sock_type as i32);
        let other = all.iter().find(|o| o.ino == c.diag.peer as u64);
        let mutual = other.is_some_and(|o| o.diag.peer as u64 == c.ino);
        let stream = s.sock_type as i32 != libc::SOCK_DGRAM;
        if let Some(why) = &c.relative_peer {
            // Connected by a relative name: to a ghost of the process, bound
            // again by that name in the restore's directory for the moment
            // and connected to then (zdtm fifo_upon_unix_socket01), or to a
            // socket of the process bound by that name in a directory
            // capture found (`socket_flags::RELATIVE`), connected to there
            // once it is bound again; else where the name was resolved is
            // not known.
            let ghost = unix_ghost(&seen.unix, b, c.diag.peer);
            let live = unix_relative(&seen.unix, b, c.diag.peer).filter(|&g| {
                let (me, g) = (&b.sockets[c.index], &b.sockets[g]);
                let (p, pn) = cryo_image::fds::sockaddr_bytes(&me.peer, me.peer_len);
                let (a, an) = cryo_image::fds::sockaddr_bytes(&g.addr, g.addr_len);
                p[..pn] == a[..an]
            });
            match ghost.or(live) {
                Some(g) if c.diag.rqueue == 0 => {
                    let me = &mut b.sockets[c.index];
                    me.state = socket_state::CONNECTED;
                    me.pair = g as u32;
                    if ghost.is_some() {
                        me.flags |= cryo_image::fds::socket_flags::GHOST_PEER;
                    }
                    me.shutdown = u32::from(c.diag.shutdown & 3);
                }
                _ => obs.push(why.clone()),
            }
            continue;
        }
        match other {
            Some(o) if o.index == c.index && !stream && c.diag.rqueue == 0 => {
                // A datagram socket connected to its own address: bound
                // and connected again.
                b.sockets[c.index].state = socket_state::CONNECTED;
            }
            Some(o) if mutual => {
                b.sockets[c.index].shutdown = u32::from(c.diag.shutdown & 3);
                b.sockets[c.index].state = socket_state::PAIR;
                b.sockets[c.index].pair = o.index as u32;
                if c.diag.rqueue == 0 {
                    continue;
                }
                // A datagram or seqpacket pair's messages, each sent again
                // on its own; a stream's bytes, cut where files in flight
                // are (`sock::peek_stream`).
                let is_stream = s.sock_type as i32 == libc::SOCK_STREAM;
                let peeked = if is_stream {
                    sock::peek_stream(&c.dup, c.diag.rqueue as usize)
                } else {
                    let eof_at = (s.sock_type as i32 == libc::SOCK_SEQPACKET
                        && c.diag.shutdown & 1 != 0)
                        .then_some(c.diag.rqueue as usize);
                    sock::peek_messages(&c.dup, c.diag.rqueue as usize, eof_at)
                };
                // A datagram end takes messages from anyone until it is
                // connected: one that came from another socket than its
                // peer would be sent again by the peer, with the peer's
                // name as its sender.
                let stranger = |m: &[sock::Message]| {
                    let other = &b.sockets[o.index];
                    let (a, n) = cryo_image::fds::sockaddr_bytes(&other.addr, other.addr_len);
                    let want = if n > 2 { a[..n].to_vec() } else { Vec::new() };
                    m.iter().find(|m| m.from != want).map(|m| m.from.clone())
                };
                match peeked {
                    Ok(Ok(m))
                        if s.sock_type as i32 == libc::SOCK_DGRAM && stranger(&m).is_some() =>
                    {
                        let from = stranger(&m).unwrap_or_default();
                        obs.push(format!(
                            "fd {} ({what}, paired with fd {}) has datagrams queued that came from {} before it was connected, not from its peer; they cannot be sent again from that address",
                            c.fd,
                            o.fd,
                            if from.is_empty() {
                                "an unnamed socket".to_owned()
                            } else {
                                sockaddr_display(&from)
                            }
                        ));
                    }
                    Ok(Ok(m)) if is_stream && m.iter().all(|m| m.nfds == 0) => {
                        stored.blobs.push(PendingBlob {
                            to: BlobOwner::Socket(c.index),
                            bytes: m.into_iter().flat_map(|m| m.bytes).collect(),
                        })
                    }
                    Ok(Ok(m)) => {
                        // Files in flight: held in the process for the
                        // capture (`crate::inflight`), as many as the
                        // messages have.
                        let held = match in_flight.held_for(c.fd, &m) {
                            Ok(h) => h,
                            Err(why) => {
                                obs.push(format!(
                                    "fd {} ({what}, paired with fd {}) has file descriptors in flight (SCM_RIGHTS): {why}",
                                    c.fd, o.fd
                                ));
                                continue;
                            }
                        };
                        if is_stream {
                            b.sockets[c.index].flags |= cryo_image::fds::socket_flags::FRAMED;
                        }
                        stored.blobs.push(PendingBlob {
                            to: BlobOwner::Socket(c.index),
                            bytes: sock::frame(&m, held, false),
                        })
                    }
                    Ok(Err(why)) => obs.push(format!(
                        "fd {} ({what}, paired with fd {}) has {why}; not supported yet",
                        c.fd, o.fd
                    )),
                    Err(e) => obs.push(format!(
                        "fd {} ({what}): reading what is queued in it: {e}",
                        c.fd
                    )),
                }
            }
            _ if !stream && s.peer_len > 2 && c.diag.rqueue == 0 => {
                // A datagram socket connected to a named socket (/dev/log):
                // connected again by address, if the name still leads to
                // that socket (else the connect would reach another, or
                // nothing: its file was removed or replaced).
                let (a, _) = cryo_image::fds::sockaddr_bytes(&s.peer, s.peer_len);
                let name = &a[..s.peer_len as usize];
                let leads = match (unix_bound_path(name), sock::unix_diag(c.diag.peer)) {
                    (Some(p), Ok(pd)) => leads_to(&p, pd.vfs),
                    // (An abstract name leads to its socket; a peer that
                    // unix_diag does not find, in another network
                    // namespace, cannot be checked.)
                    (None, _) | (Some(_), Err(_)) => true,
                };
                // A ghost of the process (zdtm sk-unix01): connected
                // again while it is bound there again.
                let ghost = unix_ghost(&seen.unix, b, c.diag.peer);
                // (Its own shutdown, made again after the connect.)
                b.sockets[c.index].shutdown = u32::from(c.diag.shutdown & 3);
                if let (false, Some(g)) = (leads, ghost) {
                    let me = &mut b.sockets[c.index];
                    me.state = socket_state::CONNECTED;
                    me.pair = g as u32;
                    me.flags |= cryo_image::fds::socket_flags::GHOST_PEER;
                    continue;
                }
                if !leads {
                    let obstacle = format!(
                        "fd {} ({what}) is connected to {}, but that name no longer leads to the socket it is connected to (its file was removed or replaced); connected again by the name, it would reach another",
                        c.fd,
                        sockaddr_display(name)
                    );
                    // A ghost of another process of the tree (zdtm
                    // sk-unix-dgram-ghost): its pass checks.
                    match cross.as_deref_mut() {
                        Some(x) => {
                            let me = &mut b.sockets[c.index];
                            me.state = socket_state::CONNECTED;
                            me.flags |= cryo_image::fds::socket_flags::GHOST_PEER;
                            x.ghost_clients.push(GhostClient {
                                fd: c.fd,
                                peer: u64::from(c.diag.peer),
                                obstacle,
                            });
                        }
                        None => obs.push(obstacle),
                    }
                    continue;
                }
                b.sockets[c.index].state = socket_state::CONNECTED;
            }
            _ => {
                let (a, _) = cryo_image::fds::sockaddr_bytes(&s.peer, s.peer_len);
                let to = if s.peer_len > 2 {
                    sockaddr_display(&a[..s.peer_len as usize])
                } else {
                    format!("socket:[{}]", c.diag.peer)
                };
                if seen.refused.contains(&u64::from(c.diag.peer)) {
                    // Its other end, in this process, was refused: that
                    // obstacle says why (a peek offset, a filter).
                    continue;
                }
                // A unix socket at fd 0-2 to outside (node's child_process
                // and systemd's journal give a program's stdio so: a sweep
                // of stop 48): the restore's own fd takes its place, as
                // for a pipe to outside (`socket_state::OUTSIDE`), unless
                // bytes wait in it or it was shut down.
                // (A stream only: a datagram or seqpacket socket's queue
                // is counted by its first message, and an empty message
                // reads as nothing queued.)
                let stdio = c.fd <= 2
                    && s.family as i32 == libc::AF_UNIX
                    && s.sock_type as i32 == libc::SOCK_STREAM
                    && c.diag.rqueue == 0
                    && c.diag.shutdown == 0;
                let obstacle = if c.diag.rqueue > 0 {
                    format!(
                        "fd {} ({what}) is connected to {to}, outside the process, and has {} bytes queued from it; cryo can neither restore them nor connect it again",
                        c.fd, c.diag.rqueue
                    )
                } else if c.fd <= 2 && c.diag.shutdown != 0 {
                    format!(
                        "fd {} ({what}) is connected to {to}, outside the process, and was shut down ({}); cryo cannot connect it again, and the restore's own fd {} in its place would not be shut down",
                        c.fd,
                        match c.diag.shutdown & 3 {
                            1 => "for reading",
                            2 => "for writing",
                            _ => "both ways",
                        },
                        c.fd
                    )
                } else if stdio {
                    // (Only where its peer turns out to be in the tree
                    // after all: the tree's pass pairs them instead.)
                    format!(
                        "fd {} ({what}) is connected to {to}, outside the process tree",
                        c.fd
                    )
                } else {
                    format!(
                        "fd {} ({what}) is connected to {to}, outside the process; cryo cannot connect it again (only a pair or connection between processes it captures)",
                        c.fd
                    )
                };
                // An unnamed pair's end, or a stream connection (through a
                // named socket, accepted or connecting): its other end may
                // be in another process of the tree.
                let pairable = c.diag.peer != 0 && (stream || (s.addr_len <= 2 && s.peer_len <= 2));
                match cross.as_deref_mut() {
                    Some(v) if pairable => {
                        // One end of a pair whose other end is elsewhere
                        // (the tree's pass finds it, or refuses it).
                        b.sockets[c.index].state = socket_state::PAIR;
                        b.sockets[c.index].shutdown = u32::from(c.diag.shutdown & 3);
                        let dup = match c.dup.try_clone() {
                            Ok(d) => d,
                            Err(e) => {
                                obs.push(format!("fd {}: {e}", c.fd));
                                continue;
                            }
                        };
                        v.ends.push(CrossEnd {
                            index: c.index,
                            fd: c.fd,
                            ino: c.ino,
                            peer: c.diag.peer as u64,
                            rqueue: c.diag.rqueue,
                            shutdown: c.diag.shutdown,
                            stream,
                            messages: s.sock_type as i32 != libc::SOCK_STREAM,
                            seqpacket: s.sock_type as i32 == libc::SOCK_SEQPACKET,
                            dup,
                            obstacle,
                            stdio,
                            held: in_flight.by_socket.get(&c.fd).cloned().unwrap_or_default(),
                            not_held: in_flight.not_held.get(&c.fd).cloned(),
                        })
                    }
                    _ if stdio => b.sockets[c.index].state = socket_state::OUTSIDE,
                    _ => obs.push(obstacle),
                }
            }
        }
    }
}

/// Before `cryo capture --kill`: make every TCP connection of process
/// `pid` that the image restores (a pair with another captured socket)
/// close with a reset when the kill closes it, so that it leaves nothing
/// in TIME_WAIT holding its four addresses for a minute, which a restore
/// right after needs (SO_LINGER 0 through our copy of the fd). Best effort:
/// a connection left in TIME_WAIT makes a restore refuse, naming it.
pub fn abort_on_kill(pid: i32, b: &ImageBuilder) {
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return;
    };
    for f in b
        .fds
        .iter()
        .filter(|f| f.kind == cryo_image::fd_kind::SOCKET)
    {
        let tcp_pair = b
            .sockets
            .get(f.object as usize)
            .is_some_and(|s| s.family as i32 != libc::AF_UNIX && s.state == socket_state::PAIR);
        if !tcp_pair {
            continue;
        }
        if let Ok(dup) = crate::sys::pidfd_getfd(&pidfd, f.fd) {
            let _ = sock::set_linger_zero(&dup);
        }
    }
}

/// The name of a closing TCP state (tcp_states.h), with what it means.
fn tcp_closing_state(state: u8) -> Option<&'static str> {
    Some(match state {
        4 => "FIN_WAIT1: it shut down or closed its side, unacknowledged",
        5 => "FIN_WAIT2: it shut down its side, the peer not yet",
        8 => "CLOSE_WAIT: the peer closed its side, this one not yet",
        9 => "LAST_ACK: both sides closed, the last acknowledgement pending",
        11 => "CLOSING: both sides closing at once",
        _ => return None,
    })
}
