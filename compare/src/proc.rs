//! Running one timed process: spawned directly (no shell in the timed
//! path), reaped with wait4 for its resource usage, its output parsed for
//! the stamps the workloads print.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::BorrowedFd;

/// CLOCK_MONOTONIC in nanoseconds: the clock the workloads stamp with
/// (stamp.c), so a stamp inside a program and one taken here compare.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Resource usage of a reaped process and the children it reaped.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Minor plus major page faults.
    pub faults: u64,
    pub max_rss_kb: u64,
}

/// Reap `pid` (a child of this process); returns its status as a shell
/// reports it (exit code, or 128 + signal) and its rusage.
pub fn wait4(pid: i32) -> io::Result<(i32, Usage)> {
    wait4_within(pid, None)
}

/// As [`wait4`], but a child still running after `timeout` is killed
/// (SIGKILL, then reaped) and reported as an error of kind `TimedOut`: a
/// run that hangs (seen: CRIU 4.1's restore of a threaded GHC program
/// never exits) must not hang the whole comparison. The wait blocks in
/// the kernel (poll on a pidfd): a loop of WNOHANG and 2 ms sleeps put
/// 20-30 µs on every timed run of stop 54 (docs/benchmarks.md).
pub fn wait4_within(pid: i32, timeout: Option<std::time::Duration>) -> io::Result<(i32, Usage)> {
    let mut killed = false;
    if let Some(t) = timeout {
        let exited = match exits_within(pid, t) {
            Ok(e) => e,
            // (No pidfd_open: Linux before 5.3.)
            Err(_) => polled_exit_within(pid, t)?,
        };
        if !exited {
            // SAFETY: kill takes integers; `pid` is our unreaped child,
            // so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
    }
    let mut status = 0i32;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: status and ru are valid, writable, and live for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if killed {
        return Err(hung(timeout.unwrap_or_default()));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let usage = Usage {
        faults: (ru.ru_minflt + ru.ru_majflt) as u64,
        max_rss_kb: ru.ru_maxrss as u64,
    };
    Ok((code, usage))
}

/// As [`wait4_within`], for a run that may answer and then never exit
/// (CRIU 4.1's restore of the threaded GHC program: its RTS waits at exit
/// for a ticker whose timerfd CRIU brought back disarmed): once
/// `answered` says the answer is out, a child that then uses no CPU for
/// `grace` (asleep: hung, not exiting; a large heap's exit takes CPU
/// time the whole while) is killed, reaped, and reported by the `true`
/// beside its status, not as an error. A run that never answers still
/// times out as with [`wait4_within`]; one that answered and reaches the
/// timeout counts as killed after its answer.
pub fn wait4_after_answer(
    pid: i32,
    timeout: Option<std::time::Duration>,
    grace: std::time::Duration,
    answered: &dyn Fn() -> bool,
) -> io::Result<(i32, Usage, bool)> {
    let t0 = std::time::Instant::now();
    // (Looked at this often while it runs: a slice of poll on its pidfd.)
    let step = std::time::Duration::from_millis(20);
    // Since the answer: the CPU time last read, and when it last moved.
    let mut idle: Option<(u64, std::time::Instant)> = None;
    let kill = |pid: i32| -> io::Result<(i32, Usage, bool)> {
        // SAFETY: kill takes integers; `pid` is our unreaped child, so
        // the id cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let (code, usage) = wait4_within(pid, None)?;
        // (Exited by itself just before the kill: its own status.)
        Ok((code, usage, code == 128 + libc::SIGKILL))
    };
    loop {
        let left = timeout.map(|t| t.saturating_sub(t0.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            let (code, usage, killed) = kill(pid)?;
            // (Killed before its answer: it hung.)
            if killed && idle.is_none() {
                return Err(hung(timeout.unwrap_or_default()));
            }
            return Ok((code, usage, killed));
        }
        let slice = left.map_or(step, |l| l.min(step));
        let exited = match exits_within(pid, slice) {
            Ok(e) => e,
            Err(_) => polled_exit_within(pid, slice)?,
        };
        if exited {
            let (code, usage) = wait4_within(pid, None)?;
            return Ok((code, usage, false));
        }
        if idle.is_none() && !answered() {
            continue;
        }
        let cpu = cpu_ticks(pid).unwrap_or(0);
        match idle {
            Some((was, since)) if was == cpu => {
                if since.elapsed() >= grace {
                    return kill(pid);
                }
            }
            _ => idle = Some((cpu, std::time::Instant::now())),
        }
    }
}

/// What a run killed at its timeout is reported as.
fn hung(timeout: std::time::Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "still running after {} s: killed (it hung)",
            timeout.as_secs()
        ),
    )
}

/// User plus system time of process `pid` (all its threads), in clock
/// ticks, from /proc/PID/stat.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit_once(") ")?.1.split_whitespace().collect();
    // (Fields 14 and 15 of stat(5); the state, field 3, is f[0].)
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Whether the child `pid` ends within `t`, waited for in the kernel:
/// poll on its pidfd, which becomes readable when the whole process has
/// exited (it is left to be reaped). Err where pidfd_open is missing.
fn exits_within(pid: i32, t: std::time::Duration) -> io::Result<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = std::time::Instant::now() + t;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // (Rounded up: not a busy loop of zero timeouts in the last ms.)
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: p is one valid pollfd, live for the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 && left.is_zero() {
            return Ok(false);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// [`exits_within`] without pidfds: WNOHANG waits with 2 ms sleeps
/// between (waitid with WNOWAIT: the child is left to be reaped).
fn polled_exit_within(pid: i32, t: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + t;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this C struct.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: si is valid and writable for the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut si,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled si (or left it zeroed: no child ready).
        if unsafe { si.si_pid() } == pid {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Reap every other child that is (or becomes) a zombie of ours within
/// `grace` and add up their rusage: as the subreaper, this process inherits
/// what a timed run leaves behind (cryo's page server and its watchdog,
/// which outlive the restored program by a moment), and their page faults
/// belong to the run. Returns early once no child is left.
pub fn reap_orphans(grace: std::time::Duration) -> Usage {
    let deadline = std::time::Instant::now() + grace;
    let mut total = Usage::default();
    loop {
        let mut status = 0i32;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: status and ru are valid, writable, and live for the call.
        let r = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL, &mut ru) };
        if r > 0 {
            total.faults += (ru.ru_minflt + ru.ru_majflt) as u64;
            total.max_rss_kb = total.max_rss_kb.max(ru.ru_maxrss as u64);
            continue;
        }
        if r < 0 || std::time::Instant::now() >= deadline {
            return total; // ECHILD: nothing left (or still running: give up)
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Make the child `cmd` starts the leader of a new session (setsid between
/// fork and exec). CRIU refuses a process whose session leader lies
/// outside its pid namespace ("A session leader of N is outside of its pid
/// namespace"), which is where a CI job's or a container's shell often is;
/// a workload that leads its own session is always inside.
pub fn new_session(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid, which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        })
    }
}

/// Mark every inherited fd above 2 close-on-exec, so a workload started
/// from here holds only stdin, stdout and stderr: a stray pipe would be
/// captured (and then need --inherit-fd) or refused by CRIU.
pub fn cloexec_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: the fd number came from /proc/self/fd; if it was the
        // directory's own (now closed) fd, fcntl fails with EBADF, which is
        // ignored. The borrow ends with the call.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::fcntl::fcntl(
            b,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// What a workload printed: lines `cryo-bench KEY=VALUE [KEY=VALUE...]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stamps {
    /// The answer's checksum (`answer=`).
    pub checksum: Option<String>,
    /// CLOCK_MONOTONIC when the answer was ready (`at=`).
    pub answer_at: Option<u64>,
    /// Every other numeric KEY=VALUE (`built`, `hs_init_ns`, ...).
    pub other: BTreeMap<String, u64>,
}

pub fn parse_stamps(out: &str) -> Stamps {
    let mut s = Stamps::default();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("cryo-bench ") else {
            continue;
        };
        for kv in rest.split_whitespace() {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "answer" => s.checksum = Some(v.to_string()),
                "at" => s.answer_at = v.parse().ok(),
                _ => {
                    if let Ok(n) = v.parse() {
                        s.other.insert(k.to_string(), n);
                    }
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_parsed_and_noise_ignored() {
        let s = parse_stamps(
            "Hello, world!\ncryo-bench built=100\ncryo-bench answer=-42 at=250\nanswer=1 at=2\ncryo-bench hs_init_ns=7 hs_exit_ns=x\n",
        );
        assert_eq!(s.checksum.as_deref(), Some("-42"));
        assert_eq!(s.answer_at, Some(250));
        assert_eq!(s.other.get("built"), Some(&100));
        assert_eq!(s.other.get("hs_init_ns"), Some(&7));
        assert!(!s.other.contains_key("hs_exit_ns"));
        assert_eq!(parse_stamps("nothing here"), Stamps::default());
    }

    /// Held by each test that has children: reap_orphans reaps any child
    /// of this process, another test's too.
    static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by wait4, which clippy cannot see
    fn wait4_reports_status_and_faults() {
        let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let c = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let (code, u) = wait4(c.id() as i32).unwrap();
        assert_eq!(code, 3);
        assert!(u.faults > 0 && u.max_rss_kb > 0, "{u:?}");
        // A grandchild left behind is reaped with its usage (this test
        // process is not a subreaper, so spawn it as a direct child).
        let c = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        let _ = c.id();
        let left = reap_orphans(std::time::Duration::from_secs(5));
        assert!(left.faults > 0, "{left:?}");
        let t = now_ns();
        assert!(now_ns() >= t);
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by wait4, which clippy cannot see
    fn a_run_past_its_timeout_is_killed_and_reaped() {
        let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = Some(std::time::Duration::from_millis(300));
        let c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        let e = wait4_within(c.id() as i32, timeout).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let took = t.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(300)
                && took < std::time::Duration::from_secs(20),
            "{took:?}"
        );
        // reaped: no such child any more
        // SAFETY: waitpid with a null status pointer only asks the kernel.
        let r = unsafe { libc::waitpid(c.id() as i32, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1);
        // One that ends in time is waited for, its status reported.
        let c = std::process::Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let (code, _) = wait4_within(c.id() as i32, timeout.map(|t| t * 100)).unwrap();
        assert_eq!(code, 5);
        // And the fallback without pidfds, for both.
        let c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!polled_exit_within(c.id() as i32, std::time::Duration::from_millis(100)).unwrap());
        let _ = c.id();
        // SAFETY: kill takes integers; the child is ours and unreaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        assert!(polled_exit_within(c.id() as i32, std::time::Duration::from_secs(10)).unwrap());
        let (code, _) = wait4(c.id() as i32).unwrap();
        assert_eq!(code, 128 + libc::SIGKILL);
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by wait4, which clippy cannot see
    fn a_run_that_answers_and_hangs_is_killed_after_its_grace() {
        let _one = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("cryo-compare-grace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let out = dir.join("out");
        let answered = || std::fs::read_to_string(&out).is_ok_and(|t| t.contains("at="));
        let (grace, timeout) = (
            std::time::Duration::from_millis(300),
            Some(std::time::Duration::from_secs(60)),
        );
        // Answers, then never exits: killed a grace after the answer, not
        // at the timeout, and not an error.
        let c = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("sleep 0.2; echo at=1 > {}; exec sleep 60", out.display()),
            ])
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        let (code, _, killed) =
            wait4_after_answer(c.id() as i32, timeout, grace, &answered).unwrap();
        let took = t.elapsed();
        assert_eq!((code, killed), (128 + libc::SIGKILL, true));
        assert!(
            took >= std::time::Duration::from_millis(500)
                && took < std::time::Duration::from_secs(20),
            "{took:?}"
        );
        // Answers, then works (a large heap's exit) for longer than the
        // grace, then exits: never taken for hung.
        std::fs::remove_file(&out).unwrap();
        // (bash's builtins only: a child's CPU time is not its parent's.)
        let c = std::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "echo at=1 > {}; end=$((SECONDS + 2)); while [ $SECONDS -lt $end ]; do :; done; exit 4",
                    out.display()
                ),
            ])
            .spawn()
            .unwrap();
        let (code, _, killed) =
            wait4_after_answer(c.id() as i32, timeout, grace, &answered).unwrap();
        assert_eq!((code, killed), (4, false));
        // Answers and exits: its status, not killed.
        std::fs::remove_file(&out).unwrap();
        let c = std::process::Command::new("sh")
            .args(["-c", &format!("echo at=1 > {}; exit 3", out.display())])
            .spawn()
            .unwrap();
        let (code, _, killed) =
            wait4_after_answer(c.id() as i32, timeout, grace, &answered).unwrap();
        assert_eq!((code, killed), (3, false));
        // Never answers: times out as wait4_within does, and says so.
        std::fs::remove_file(&out).unwrap();
        let c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let e = wait4_after_answer(
            c.id() as i32,
            Some(std::time::Duration::from_millis(300)),
            grace,
            &answered,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("still running after 0 s"), "{e}");
        // SAFETY: waitpid with a null status pointer only asks the kernel.
        let r = unsafe { libc::waitpid(c.id() as i32, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "reaped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
