//! Signal state only the task can tell (dispositions and sigaltstack,
//! asked inside it) and every queued signal with its siginfo
//! (PTRACE_PEEKSIGINFO, without dequeuing).

use crate::procinfo;
use crate::remote::{InjectError, Remote};
use crate::tracee::PtraceError;
use cryo_image::write::ImageBuilder;
use cryo_image::SigAction;

/// Signal dispositions (asked inside the target) and the sigaltstack.
pub fn inject(
    rem: &mut Remote,
    status: &procinfo::Status,
    b: &mut ImageBuilder,
) -> Result<(), InjectError> {
    for sig in 1..=64i32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let bit = 1u64 << (sig - 1);
        // SIG_DFL has nothing to restore, but for SIGCHLD, whose
        // SA_NOCLDWAIT and SA_NOCLDSTOP change what the kernel does
        // with the default action: asked for always, kept if set.
        let default = (status.sig_caught | status.sig_ignored) & bit == 0;
        if default && sig != libc::SIGCHLD {
            continue;
        }
        let (handler, flags, restorer, mask) = rem.sigaction(sig)?;
        let chld_flags = (libc::SA_NOCLDWAIT | libc::SA_NOCLDSTOP) as u64;
        if default && (handler != 0 || flags & chld_flags == 0) {
            continue;
        }
        b.sigactions.push(SigAction {
            signo: sig as u32,
            _pad: 0,
            handler,
            flags,
            restorer,
            mask,
        });
    }
    let (sp, flags, size) = rem.sigaltstack()?;
    b.process.sigaltstack_sp = sp;
    b.process.sigaltstack_flags = flags;
    b.process.sigaltstack_size = size;
    Ok(())
}

/// Queued signals with their siginfo: the main thread's and the
/// process's (shared) queue.
pub fn queued(pid: i32, b: &mut ImageBuilder) -> Result<(), PtraceError> {
    queued_of(pid, 0, false, b)?;
    queued_of(pid, 0, true, b)
}

/// The queue of task `tid` (`thread`: 0 the main thread, k + 1 the k-th
/// entry of the threads table), or the process's shared queue.
pub fn queued_of(
    tid: i32,
    thread: u32,
    shared: bool,
    b: &mut ImageBuilder,
) -> Result<(), PtraceError> {
    let infos = crate::sys::peek_siginfo(tid, shared).map_err(|source| PtraceError::Sys {
        op: "PTRACE_PEEKSIGINFO",
        pid: tid,
        source,
    })?;
    for info in infos {
        b.signals.push(cryo_image::signals::QueuedSignal {
            shared: shared as u32,
            signo: info[0] as u32,
            info,
            thread,
            _pad: 0,
        });
    }
    Ok(())
}
