//! `cryo restore --same-pid`: the restored process is forked with its
//! captured PID, so `cryo restore` stays, as its parent, for the invoker:
//! it passes on the signals a shell sends a job (interrupt, quit,
//! terminate, hang-up, the user signals, window changes, continue) and
//! ends as the restored process ended (the same exit code, or killed by
//! the same signal), like `sudo` or `timeout` do.

use crate::sys;

/// Signals passed on to the restored process.
const FORWARDED: [i32; 8] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Wait for `child`, passing signals on; end as it ended.
pub(crate) fn run(child: i32) -> ! {
    // Nothing of the restore stays open here (a pipe end kept by this
    // process would keep the restored program's reader from its EOF),
    // but fds 0-2, the invoker's, which the restored process has too.
    sys::close_from(3);
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    if let Err(e) = sys::block_signals(&set) {
        eprintln!("cryo restore: blocking signals: {e}");
    }
    loop {
        match sys::waitpid(child, libc::WNOHANG) {
            Ok((p, st)) if p == child => sys::die_with(st),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                eprintln!("cryo restore: waiting for the restored process {child}: {e}");
                sys::exit_now(1)
            }
        }
        match sys::wait_signal(&set) {
            Ok(libc::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = sys::kill(child, sig);
            }
        }
    }
}
