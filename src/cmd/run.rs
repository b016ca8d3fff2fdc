//! `cryo run --capture-on-stop DIR -- PROG`: start a program, capture it when
//! it stops itself.

use super::capture::{capture_with_progress, print_summary, stopping_set};
use anyhow::{Context, Result};
use cryo_capture::{After, Options};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Let the program go on running; `cryo run` exits with its status.
    Continue,
    /// Kill the program after the capture; `cryo run` exits 0.
    Kill,
}

/// Start PROG; when it stops itself (raise(SIGSTOP); in Haskell
/// `raiseSignal sigSTOP`), capture it into DIR.
///
/// This is how a program marks "initialised, snapshot me now". The program
/// shares this terminal (stdin, stdout, stderr). If it ends without ever
/// stopping, nothing is written and `cryo run` fails with its status (128
/// + N if signal N ended it), or with 1 if that was 0.
///
/// A SIGTERM, SIGHUP, SIGINT or SIGQUIT sent to `cryo run` (by kill or a
/// supervisor) while it waits for the program is passed on to the
/// program, and `cryo run` ends with the program's status; one that comes
/// during the capture stops the capture (the program left as it was, no
/// image written) and is passed on too. A ^C at the terminal reaches the
/// program by itself.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Image directory to write when the program stops itself.
    #[arg(long, value_name = "DIR")]
    pub capture_on_stop: PathBuf,
    /// What happens to the program after the capture.
    #[arg(long, value_enum, default_value = "continue")]
    pub then: Then,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
    /// Write the pages through the page cache instead of with O_DIRECT
    /// (see `cryo capture --help`).
    #[arg(long)]
    pub buffered: bool,
    /// Largest unlinked file or memfd whose contents are stored (see
    /// `cryo capture --help`).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::cmd::capture::parse_size)]
    pub max_file_data: u64,
    /// Print a JSON summary of the capture on stdout, on one line: the
    /// program shares stdout, so what it printed before it stopped comes
    /// first (with `--then kill` the summary is the last line: `tail -n 1`).
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROG")]
    pub command: Vec<String>,
}

fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// The signals cryo run passes on to its program while it waits for it:
/// those that would end cryo run (`capture::STOPPING` but the ignored ones, as
/// under nohup), and SIGCHLD, which says the program changed state. Held
/// back from the start, before any thread or the program exists: every
/// thread inherits the mask (a signal sent to the process goes to a
/// thread that does not hold it back). Returns (held, the mask before),
/// which the program is started with (a spawn keeps the mask: the first
/// version's program held SIGTERM back too, and never got it).
fn hold_signals() -> (libc::sigset_t, libc::sigset_t) {
    let mut set = stopping_set();
    // SAFETY: both sets are plain data (all-zero is valid), ours;
    // sigaddset fills one, pthread_sigmask only changes this thread's
    // mask and writes the old one.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    }
}

/// waitpid(pid, WUNTRACED) that meanwhile passes on to the program a
/// signal of `held` sent to cryo run by a process (`kill`, a supervisor,
/// a service manager: si_code ≤ 0) and waits on. One the terminal sent
/// (^C, ^\, a hangup: si_code SI_KERNEL) went to its whole foreground
/// group, the program included, and is not sent twice. Until stop 50 such
/// a signal ended cryo run alone and left the program running without it.
fn wait_state(pid: Pid, held: &libc::sigset_t, prog: &str) -> Result<WaitStatus> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(ws) => return Ok(ws),
            Err(e) => return Err(e).context("waiting for the program"),
        }
        // SAFETY: siginfo_t is plain data (all-zero is valid), ours;
        // sigwaitinfo takes one pending signal of `held` (all held back).
        let (n, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            (libc::sigwaitinfo(held, &mut info), info)
        };
        if n <= 0 || n == libc::SIGCHLD {
            continue;
        }
        let Ok(sig) = Signal::try_from(n) else {
            continue;
        };
        if info.si_code <= 0 {
            kill(pid, sig).ok();
            // Stopped (a second self-stop), it would only get it once
            // continued: continued, as a shell's `kill` of a stopped job
            // is (a review of stop 50: cryo run and its program both
            // waited on for good).
            let stopped = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
                .unwrap_or(false);
            if stopped {
                kill(pid, Signal::SIGCONT).ok();
            }
            eprintln!(
                "cryo run: passed {sig} on to {prog} (pid {pid}){}; waiting for it to end",
                if stopped {
                    ", and continued it (it was stopped)"
                } else {
                    ""
                }
            );
        }
    }
}

/// Wait for the child to exit; returns its status as a shell would report
/// it. A stop after the capture is said, once per stop, and waited out:
/// only the first SIGSTOP is captured (until stop 49 this waited on
/// without a word while the program stayed stopped: a sweep).
fn wait_exit(pid: Pid, held: &libc::sigset_t, prog: &str) -> Result<i32> {
    loop {
        let ws = wait_state(pid, held, prog)?;
        if let WaitStatus::Stopped(_, sig) = ws {
            eprintln!(
                "cryo run: {prog} (pid {pid}) stopped again ({sig}); only its first SIGSTOP is captured: it stays stopped until it is continued (kill -CONT {pid}), and cryo run waits for it to end"
            );
            continue;
        }
        if let Some(c) = exit_code(ws) {
            return Ok(c);
        }
    }
}

pub fn run(a: RunArgs) -> Result<i32> {
    let (prog, args) = a.command.split_first().context("no program given")?;
    // DIR before the program's start-up, not after it.
    cryo_capture::writer::check_dest(&a.capture_on_stop, a.force)
        .with_context(|| format!("cannot capture into {}", a.capture_on_stop.display()))?;
    let (held, before) = hold_signals();
    let mut cmd = Command::new(prog);
    cmd.args(args);
    // SAFETY: between fork and exec the child only sets its own signal
    // mask (pthread_sigmask is async-signal-safe) from a copy of
    // `before`, plain data moved into the closure.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {prog}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    // Wait for it to stop itself (or to end without stopping).
    loop {
        let ws = wait_state(pid, &held, prog)?;
        match ws {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => break,
            WaitStatus::Stopped(_, sig) => {
                // A terminal stop (SIGTSTP, SIGTTIN...) is not the program's
                // "capture me" mark: pass it on by continuing.
                eprintln!("cryo run: {prog} stopped by {sig}; continuing it (only SIGSTOP marks a capture)");
                kill(pid, Signal::SIGCONT).ok();
            }
            ws => {
                if let Some(code) = exit_code(ws) {
                    // Its own status if it failed (the help says so: a
                    // sweep of stop 52 found 1 for every status); 1 if it
                    // succeeded, for nothing was captured.
                    eprintln!(
                        "cryo: {prog} ended (status {code}) without stopping itself; nothing was captured"
                    );
                    return Ok(if code == 0 { 1 } else { code });
                }
            }
        }
    }
    let opts = Options {
        after: match a.then {
            Then::Continue => After::AsItWas,
            Then::Kill => After::Kill,
        },
        force: a.force,
        direct_io: !a.buffered,
        limits: cryo_capture::fds::Limits {
            max_file_data: a.max_file_data,
        },
        single: false,
        tcp_established: false,
        drop_datagrams: false,
        drop_fs_events: false,
        aio_idle: false,
        stop: Some(crate::cmd::capture::stop_requested),
    };
    let res = capture_with_progress(pid.as_raw(), &a.capture_on_stop, &opts, a.quiet);
    match res {
        Ok(summary) => {
            if a.json {
                // (One line, the program's output around it.)
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", serde_json::to_string(&summary)?)?;
                out.flush()?;
            } else {
                print_summary(&summary, false, a.quiet)?;
            }
            match a.then {
                Then::Kill => {
                    // capture killed it; reap it.
                    let _ = wait_exit(pid, &held, prog);
                    Ok(0)
                }
                Then::Continue => {
                    kill(pid, Signal::SIGCONT).context("continuing the program")?;
                    wait_exit(pid, &held, prog)
                }
            }
        }
        Err(e) => {
            // Interrupted (^C, SIGTERM...: held while it captured): the
            // program gets that signal too, as a shell's job would, and
            // cryo run ends with its status. Until stop 49 it was
            // continued as after a failure and waited for, and cryo run
            // went on waiting for a program that may never end.
            if let Some(i) = e.downcast_ref::<crate::cmd::capture::Interrupted>() {
                eprintln!("cryo: {i}");
                if let Ok(sig) = Signal::try_from(i.sig) {
                    kill(pid, sig).ok();
                }
                kill(pid, Signal::SIGCONT).ok();
                let code = wait_exit(pid, &held, prog).unwrap_or(128 + i.sig);
                eprintln!(
                    "cryo run: {prog} was sent that signal too, and ended with status {code}"
                );
                return Ok(code);
            }
            // The program is left as capture found it (stopped): let it go on,
            // and report the capture failure.
            kill(pid, Signal::SIGCONT).ok();
            let code = wait_exit(pid, &held, prog).unwrap_or(1);
            Err(e.context(format!(
                "capture failed; {prog} was continued and exited with status {code}"
            )))
        }
    }
}
