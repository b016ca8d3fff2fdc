//! Anonymous-inode fds the runtimes of threaded programs hold: eventfd
//! (counter and mode), timerfd (clock, time left, interval, expirations
//! not read), signalfd (mask) and epoll (every fd it watches, with its
//! events and data), read from fdinfo.

use crate::procinfo::OpenFd;
use cryo_image::fds::{EpollItem, EventFd, SignalFd, TimerFd, EPOLL_VIA_ELSEWHERE};
use cryo_image::write::ImageBuilder;
use cryo_image::{fd_kind, NO_INDEX};

/// `key: value` of an fdinfo line, trimmed.
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// An eventfd's counter: hexadecimal in fdinfo (the kernel prints it
/// with %16llx).
fn eventfd_count(info: &str) -> Option<u64> {
    u64::from_str_radix(field(info, "eventfd-count")?, 16).ok()
}

/// "(sec, nsec)" of a timerfd's fdinfo.
fn pair(s: &str) -> Option<(i64, i64)> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = s.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The state of fd `f` of kind `kind` into its table; its index there
/// (Fd::object), or why it cannot be read.
pub fn capture(kind: u32, f: &OpenFd, b: &mut ImageBuilder) -> Result<u32, String> {
    let bad = |what: &str| format!("fd {} ({}): unreadable {what} in fdinfo", f.fd, f.target);
    match kind {
        fd_kind::EVENTFD => {
            let count = eventfd_count(&f.info).ok_or_else(|| bad("eventfd-count"))?;
            let semaphore = field(&f.info, "eventfd-semaphore").is_some_and(|v| v == "1");
            b.eventfds.push(EventFd {
                count,
                semaphore: semaphore as u32,
                _pad: 0,
            });
            Ok(b.eventfds.len() as u32 - 1)
        }
        fd_kind::TIMERFD => {
            let clock = field(&f.info, "clockid")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("clockid"))?;
            let ticks = field(&f.info, "ticks")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("ticks"))?;
            let settime_flags = field(&f.info, "settime flags")
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .ok_or_else(|| bad("settime flags"))?;
            let value = field(&f.info, "it_value")
                .and_then(pair)
                .ok_or_else(|| bad("it_value"))?;
            let interval = field(&f.info, "it_interval")
                .and_then(pair)
                .ok_or_else(|| bad("it_interval"))?;
            b.timerfds.push(TimerFd {
                clock,
                settime_flags,
                ticks,
                value_sec: value.0,
                value_nsec: value.1,
                interval_sec: interval.0,
                interval_nsec: interval.1,
            });
            Ok(b.timerfds.len() as u32 - 1)
        }
        fd_kind::SIGNALFD => {
            let mask = field(&f.info, "sigmask")
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .ok_or_else(|| bad("sigmask"))?;
            b.signalfds.push(SignalFd { mask });
            Ok(b.signalfds.len() as u32 - 1)
        }
        _ => Ok(NO_INDEX),
    }
}

/// What epoll instance `f` (the fds table's `desc`) watches. An item is
/// keyed by its file and the fd number it was added under; that number
/// may have been closed since, or hold another file (the item stays while
/// its file is open anywhere). Each item's file is compared (kcmp
/// KCMP_EPOLL_TFD) with the file open at its number, and else with every
/// fd of the process on the same inode: one of them is recorded
/// (`via`) to make the registration again through. An item whose file
/// none of the process's fds has is refused: it would come back watching
/// another file, or nothing. In a tree (`in_tree`) another process may
/// hold this epoll set and the file (a child that closed the watched fd
/// after its fork, the parent still has it: redis's BGSAVE child), and
/// make it: such an item is recorded as `EPOLL_VIA_ELSEWHERE`, and its
/// refusal returned for the tree to keep or drop
/// (`tree::epolls_made_elsewhere`).
pub fn epoll(
    pid: i32,
    f: &OpenFd,
    desc: u32,
    fds: &[OpenFd],
    in_tree: bool,
    b: &mut ImageBuilder,
) -> Result<Vec<String>, String> {
    let mut elsewhere = Vec::new();
    // Items seen per fd number: the kcmp slot's `toff` picks the n-th.
    let mut seen: std::collections::HashMap<i32, u32> = std::collections::HashMap::new();
    for l in f.info.lines() {
        let Some(rest) = l.strip_prefix("tfd:") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let hex = |key: &str| {
            w.iter()
                .position(|x| *x == key)
                .and_then(|i| w.get(i + 1))
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        let (Some(tfd), Some(events), Some(data)) = (
            w.first().and_then(|v| v.parse::<i32>().ok()),
            hex("events:"),
            hex("data:"),
        ) else {
            return Err(format!("fd {} (epoll): unreadable item {l:?}", f.fd));
        };
        let toff = {
            let n = seen.entry(tfd).or_insert(0);
            *n += 1;
            *n - 1
        };
        let is = |fd: i32| crate::sys::epoll_target_is(pid, f.fd, fd, tfd, toff).unwrap_or(false);
        let via = if toff == 0 && is(tfd) {
            0
        } else {
            let ino = hex("ino:");
            match fds
                .iter()
                .filter(|g| ino.is_none_or(|i| i == g.ino))
                .find(|g| is(g.fd))
            {
                Some(g) => g.fd as u32 + 1,
                None => {
                    let why = format!(
                        "fd {} (epoll) watches a file under fd {tfd}, which is no longer open there (closed or replaced) nor at any other fd of the process; its registration cannot be made again",
                        f.fd
                    );
                    if !in_tree {
                        return Err(why);
                    }
                    elsewhere.push(why);
                    EPOLL_VIA_ELSEWHERE
                }
            }
        };
        b.epoll_items.push(EpollItem {
            desc,
            tfd,
            events: events as u32,
            via,
            data,
        });
    }
    Ok(elsewhere)
}

/// Fold each periodic timerfd's expirations into its count before its
/// fdinfo is read: `ticks` counts those since the last read only up to
/// the first, until a read or timerfd_gettime forwards the timer (a
/// 100 ms timerfd not read for 6 s read 31 expirations after a restore
/// instead of 60: a sweep of stop 51). timerfd_gettime changes nothing
/// the program can see (its next read returns the same count). The
/// fdinfo of each one asked is read again.
pub fn fold_timerfds(
    t: &mut crate::tracee::Tracee,
    pid: i32,
    vdso: &(u64, Vec<u8>),
    fds: &mut [OpenFd],
) -> Result<(), crate::remote::InjectError> {
    let periodic = |f: &OpenFd| {
        f.target == "anon_inode:[timerfd]"
            && field(&f.info, "it_interval").and_then(pair) != Some((0, 0))
    };
    if !fds.iter().any(periodic) {
        return Ok(());
    }
    let mut rem = crate::remote::Remote::new(t, vdso.0, &vdso.1)?;
    let r = fds
        .iter()
        .filter(|f| periodic(f))
        .try_for_each(|f| rem.timerfd_gettime(f.fd));
    let fin = rem.finish();
    r?;
    fin?;
    for f in fds.iter_mut().filter(|f| periodic(f)) {
        if let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", f.fd)) {
            f.info = info;
        }
    }
    Ok(())
}

/// The anonymous-inode fds a restore makes again as new objects, whose
/// every use is through the description (an eventfd's counter, a timer,
/// a signal mask, an epoll or inotify or fanotify instance's set).
const MADE_AGAIN: [&str; 6] = [
    "anon_inode:[eventfd]",
    "anon_inode:[timerfd]",
    "anon_inode:[signalfd]",
    "anon_inode:[eventpoll]",
    "anon_inode:inotify",
    "anon_inode:[fanotify]",
];

/// Such an fd whose description a process outside the captured ones holds
/// too would be one of its own after the restore: the other process's
/// writes to an eventfd would no longer wake the restored one, nor its
/// watches reach it (a child captured without its parent, both waiting
/// on the eventfd the parent made before the fork, restored without a
/// word and waited for good: stop 51). Refused, each holder named. The
/// other processes' fds are read once per capture (`outside`: target,
/// PID, fd), only when the process has such an fd; kcmp says which are
/// the same description. Not a socket: a listener held by pid 1 for a
/// socket-activated service, or by a supervisor that passes it down, is
/// given to a restore with `--inherit-fd`, and one made again while the
/// other holds its address fails loudly ("in use"). Not a file whose
/// description holds a flock: `flock LOCKFILE cmd` holds it until cmd
/// ends, and a restore takes the lock again once that holder has let go,
/// or says it cannot. (Both refused by a first version: a review of stop
/// 51.)
pub fn held_outside(
    pid: i32,
    fds: &[OpenFd],
    captured: &[i32],
    outside: &mut Option<Vec<(String, i32, i32)>>,
    obs: &mut crate::obstacles::Obstacles,
) {
    let made_again = |t: &str| MADE_AGAIN.contains(&t);
    let mine: Vec<&OpenFd> = fds.iter().filter(|f| made_again(&f.target)).collect();
    if mine.is_empty() {
        return;
    }
    let outside = outside.get_or_insert_with(|| {
        let mut v = Vec::new();
        crate::pipes::each_fd(None, |p, path, t| {
            let fd = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i32>().ok());
            if let (false, true, Some(fd)) = (captured.contains(&p), made_again(t), fd) {
                v.push((t.to_owned(), p, fd));
            }
        });
        v
    });
    // (One obstacle per description: a dup of the same fd said once.)
    let mut said: Vec<(i32, i32)> = Vec::new();
    for f in mine {
        for (t, other, ofd) in outside.iter() {
            if *t != f.target
                || said.contains(&(*other, *ofd))
                || crate::sys::description_order((pid, f.fd), (*other, *ofd))
                    != std::cmp::Ordering::Equal
            {
                continue;
            }
            said.push((*other, *ofd));
            let comm = std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
            obs.push(format!(
                "fd {} ({}) is also held by pid {other} ({}) at its fd {ofd}, which is not captured: restored, it would be one of its own, and neither would see what the other does with it; capture them together (a common parent with its tree: `cryo capture --help`), or close it in one of them first",
                f.fd,
                f.target,
                comm.trim()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timerfd_fields() {
        assert_eq!(pair(" (1, 675302208)"), Some((1, 675302208)));
        let info = "pos:\t0\nclockid: 1\nticks: 3\nsettime flags: 01\nit_value: (1, 5)\nit_interval: (0, 7)\n";
        assert_eq!(field(info, "settime flags"), Some("01"));
        assert_eq!(field(info, "it_value").and_then(pair), Some((1, 5)));
    }

    #[test]
    fn eventfd_count_is_hexadecimal() {
        // eventfd(30): fdinfo as Linux prints it
        let info = "pos:\t0\nflags:\t02000002\neventfd-count:               1e\neventfd-id: 2\n";
        assert_eq!(eventfd_count(info), Some(30));
        assert_eq!(eventfd_count("eventfd-count:               10\n"), Some(16));
    }
}
