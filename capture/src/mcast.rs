//! Multicast groups a socket joined. The kernel lists the groups joined
//! on each device of the network namespace (/proc/net/igmp and igmp6),
//! not which socket joined them; a socket answers getsockopt
//! MCAST_MSFILTER for a group and device only when it is a member (else
//! EADDRNOTAVAIL). So every listed group is asked of the socket, and
//! joined again by the restore (`cryo_image::fds::McastGroup`) unless it
//! filters sources, which is refused.

use crate::sys::sock;
use std::os::fd::AsRawFd;

/// A group joined on a device, as /proc lists it.
struct Listed {
    ifindex: u32,
    dev: String,
    group: Group,
}

enum Group {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// /proc/net/igmp: a line per device ("IDX\tDEV : COUNT QUERIER"), then
/// one per group joined on it ("\t\t\t\tHEX USERS TIMER\t\tREPORTER",
/// the group's network-order bytes read as a little-endian word).
fn igmp(text: &str) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut dev: Option<(u32, String)> = None;
    for line in text.lines().skip(1) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            dev = first
                .parse()
                .ok()
                .zip(words.next().map(|d| d.trim_end_matches(':').to_owned()));
        } else if let (Some((ifindex, name)), Ok(word)) = (&dev, u32::from_str_radix(first, 16)) {
            out.push(Listed {
                ifindex: *ifindex,
                dev: name.clone(),
                group: Group::V4(word.to_le_bytes()),
            });
        }
    }
    out
}

/// /proc/net/igmp6: "IDX DEV GROUP(32 hex digits) USERS FLAGS TIMER".
fn igmp6(text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let (idx, dev, hex) = (w.first()?, w.get(1)?, w.get(2)?);
            if hex.len() != 32 {
                return None;
            }
            let mut g = [0u8; 16];
            for (i, b) in g.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(Listed {
                ifindex: idx.parse().ok()?,
                dev: (*dev).to_owned(),
                group: Group::V6(g),
            })
        })
        .collect()
}

/// MCAST_MSFILTER (both levels); struct group_filter is gf_interface,
/// the group (a sockaddr_storage at 8), the filter mode and source count
/// (136, 140), then the sources: room for one.
const MCAST_MSFILTER: i32 = 48;
const FILTER_LEN: usize = 144 + 128;

/// Whether the socket is a member of the listed group, and if so its
/// source filter: (fmode, number of sources). A plain join is
/// MCAST_EXCLUDE (0) of no source.
fn filter(fd: &impl AsRawFd, l: &Listed) -> Option<(u32, u32)> {
    let mut buf = [0u8; FILTER_LEN];
    buf[..4].copy_from_slice(&l.ifindex.to_ne_bytes());
    let level = match &l.group {
        Group::V4(a) => {
            buf[8..10].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            buf[12..16].copy_from_slice(a);
            libc::IPPROTO_IP
        }
        Group::V6(a) => {
            buf[8..10].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            buf[16..32].copy_from_slice(a);
            libc::IPPROTO_IPV6
        }
    };
    // (The kernel reads the group from the buffer first.)
    sock::getsockopt(fd, level, MCAST_MSFILTER, &mut buf).ok()?;
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Some((word(136), word(140)))
}

/// A group the socket joined.
pub struct Member {
    listed: Listed,
    /// Its source filter is other than a plain join's.
    pub filtered: bool,
}

impl Member {
    /// "GROUP on DEVICE".
    pub fn shown(&self) -> String {
        self.record(0).display()
    }

    /// Its image record, for socket `sock`.
    pub fn record(&self, sock: usize) -> cryo_image::fds::McastGroup {
        let l = &self.listed;
        let (family, group) = match l.group {
            Group::V4(a) => {
                let mut g = [0u8; 16];
                g[..4].copy_from_slice(&a);
                (libc::AF_INET, g)
            }
            Group::V6(a) => (libc::AF_INET6, a),
        };
        let mut dev = [0u8; 16];
        let n = l.dev.len().min(15);
        dev[..n].copy_from_slice(&l.dev.as_bytes()[..n]);
        cryo_image::fds::McastGroup {
            sock: sock as u32,
            ifindex: l.ifindex,
            family: family as u32,
            _pad: 0,
            group,
            dev,
        }
    }
}

/// The groups the UDP socket `fd` (of `family`) joined; an IPv6 socket
/// may have joined IPv4 groups too.
pub fn memberships(fd: &impl AsRawFd, family: i32) -> Vec<Member> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut listed = igmp(&read("/proc/net/igmp"));
    if family == libc::AF_INET6 {
        listed.extend(igmp6(&read("/proc/net/igmp6")));
    }
    listed
        .into_iter()
        .filter_map(|l| {
            let (mode, sources) = filter(fd, &l)?;
            const MCAST_EXCLUDE: u32 = 0;
            Some(Member {
                listed: l,
                filtered: mode != MCAST_EXCLUDE || sources != 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lists_parse() {
        let v4 = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                  1\tlo        :     1      V3\n\
                  \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                  2\teth0      :     2      V3\n\
                  \t\t\t\t030201EF     1 0:00000000\t\t0\n\
                  \t\t\t\t010000E0     1 0:00000000\t\t0\n";
        let l = igmp(v4);
        assert_eq!(l.len(), 3);
        assert_eq!((l[1].ifindex, l[1].dev.as_str()), (2, "eth0"));
        assert!(matches!(l[1].group, Group::V4([239, 1, 2, 3])));
        let v6 = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                  2    eth0            ff0200000000000000000001ff000001     1 00000004 0\n";
        let l = igmp6(v6);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].dev, "eth0");
        let Group::V6(g) = l[1].group else { panic!() };
        assert_eq!(std::net::Ipv6Addr::from(g).to_string(), "ff02::1:ff00:1");
    }
}
