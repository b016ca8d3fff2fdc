//! The network lock of TCP connections kept with TCP repair (`cryo
//! capture --kill --tcp-established`): between the capture and the end
//! of the restore no socket has their ports, and a packet of the peer
//! would get a reset. While a connection is locked, nftables drops its
//! packets both ways (table `inet cryo_netlock`: a set of locked
//! connections per family, one drop rule per set in the input and output
//! hooks); the peer sends them again later, to the restored socket. Both
//! sides follow these rules: capture locks, restore unlocks once the
//! connection is made again, and a capture that does not kill unlocks
//! before it lets the process go. The table stays once made, empty when
//! nothing is locked (removing it then raced with another capture
//! locking a connection meanwhile). A lock expires by itself after [`LOCK_SECS`]: an image never
//! restored would otherwise leave its addresses and ports blocked, and a
//! new connection that happened to get the same ephemeral port would be
//! dropped without a word (the comparison of CRIU's tests left several).
//! A restore after that is not protected any more (a packet of the peer
//! then gets a reset). `nft delete table inet cryo_netlock` unlocks
//! everything and removes the table.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

const TABLE: &str = "cryo_netlock";
/// How long a lock lasts if no restore takes it off.
pub const LOCK_SECS: u32 = 600;
/// (Linux's address families; this crate has no libc.)
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// Whether `nft` is there to run (asked once per process).
pub fn available() -> bool {
    static THERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *THERE.get_or_init(|| {
        Command::new("nft")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `nft ARGS` (or `nft -f -` with `script`); its error output on failure.
fn nft(args: &[&str], script: Option<&str>) -> Result<String, String> {
    let mut c = Command::new("nft");
    c.args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("running nft: {e}"))?;
    if let (Some(s), Some(mut i)) = (script, child.stdin.take()) {
        i.write_all(s.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// (address, port) of a TCP sockaddr (AF_INET or AF_INET6 bytes). An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`: an IPv4 client of a
/// dual-stack listener) is the IPv4 address its packets carry: locked in
/// the IPv6 set, they were not dropped, and every client was reset
/// after `--kill` (a sweep of stop 48).
fn endpoint(sa: &[u8]) -> Option<(IpAddr, u16)> {
    let family = i32::from(u16::from_ne_bytes([*sa.first()?, *sa.get(1)?]));
    let port = u16::from_be_bytes([*sa.get(2)?, *sa.get(3)?]);
    match family {
        AF_INET => {
            let a: [u8; 4] = sa.get(4..8)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        AF_INET6 => {
            let a: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
            let a = Ipv6Addr::from(a);
            Some((a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4), port))
        }
        _ => None,
    }
}

/// The set a connection goes in and its two elements (each direction),
/// each followed by `extra` (a timeout, when adding).
fn elements(local: &[u8], peer: &[u8], extra: &str) -> Result<(&'static str, String), String> {
    let (Some((la, lp)), Some((pa, pp))) = (endpoint(local), endpoint(peer)) else {
        return Err("not a TCP/IP connection".into());
    };
    let set = match (la, pa) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "c4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "c6",
        _ => return Err("its two ends are of different families".into()),
    };
    Ok((
        set,
        format!("{{ {la} . {lp} . {pa} . {pp}{extra}, {pa} . {pp} . {la} . {lp}{extra} }}"),
    ))
}

/// Drop every packet of the connection `local` <-> `peer` from now on.
pub fn lock(local: &[u8], peer: &[u8]) -> Result<(), String> {
    let (set, elems) = elements(local, peer, &format!(" timeout {LOCK_SECS}s"))?;
    // (One run of nft when the table is there; it is made at the first.)
    let add = || nft(&["add", "element", "inet", TABLE, set, &elems], None).map(|_| ());
    if add().is_ok() {
        return Ok(());
    }
    let rules = "ip saddr . tcp sport . ip daddr . tcp dport @c4 drop; \
                 ip6 saddr . tcp sport . ip6 daddr . tcp dport @c6 drop;";
    let script = format!(
        "table inet {TABLE} {{\n\
         set c4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; flags timeout; }}\n\
         set c6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; flags timeout; }}\n\
         chain input {{ type filter hook input priority -150; policy accept; {rules} }}\n\
         chain output {{ type filter hook output priority -150; policy accept; {rules} }}\n\
         }}\n"
    );
    // (Another capture may have made it meanwhile: then only the add.)
    if nft(&["list", "table", "inet", TABLE], None).is_err() {
        nft(&["-f", "-"], Some(&script))?;
    }
    add()
}

/// Let the packets of these connections (local, peer) through again: two
/// runs of nft (one lists what is locked, one deletes, in one
/// transaction, the elements that are there). A connection that is not
/// locked (expired, or unlocked by the other end of a connection inside
/// the captured processes) is no error.
pub fn unlock_all(conns: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    if conns.is_empty() {
        return Ok(());
    }
    let Ok(table) = nft(&["list", "table", "inet", TABLE], None) else {
        return Ok(());
    };
    let mut deletes = String::new();
    let mut keys: Vec<String> = Vec::new();
    for (local, peer) in conns {
        let (Some((la, lp)), Some((pa, pp))) = (endpoint(local), endpoint(peer)) else {
            continue;
        };
        let set = if la.is_ipv4() { "c4" } else { "c6" };
        for e in [
            format!("{la} . {lp} . {pa} . {pp}"),
            format!("{pa} . {pp} . {la} . {lp}"),
        ] {
            // (Listed as "KEY expires ...," or "KEY }". Once each: both
            // ends of a connection inside the process name it twice.)
            let known = keys.contains(&format!("{e} "));
            if !known && (table.contains(&format!("{e} ")) || table.contains(&format!("{e},"))) {
                deletes += &format!("delete element inet {TABLE} {set} {{ {e} }}\n");
                keys.push(format!("{e} "));
            }
        }
    }
    // (The table stays, empty: deleting it once nothing seemed locked
    // raced with another capture locking a connection meanwhile, whose
    // lock went with it.)
    let script = deletes;
    if script.is_empty() {
        return Ok(());
    }
    match nft(&["-f", "-"], Some(&script)) {
        Ok(_) => Ok(()),
        // Another process (the other end of a connection inside a tree)
        // unlocked or removed them meanwhile: done, if none is left.
        Err(why) => match nft(&["list", "table", "inet", TABLE], None) {
            Err(_) => Ok(()),
            Ok(t) if !keys.iter().any(|k| t.contains(k.as_str())) => Ok(()),
            Ok(_) => Err(why),
        },
    }
}
