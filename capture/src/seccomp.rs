//! Seccomp filters (mode 2): read from every thread with
//! PTRACE_SECCOMP_GET_FILTER while it is frozen, checked, and recorded once
//! for the process (`task::SeccompInsn`); the shim installs them again as
//! its last act (docs/design.md, "Seccomp filters").
//!
//! The capture itself injects system calls into a task under seccomp: it
//! is seized with PTRACE_O_SUSPEND_SECCOMP (`tracee.rs`), so its filters
//! do not see them. What the restore does after the filters are installed
//! again (the window's munmap, the threads' wake-up, rt_sigreturn, and
//! for each filter the install of the next) must pass the filters:
//! capture runs them on those very calls here (`cryo_image::bpf`, a
//! classic BPF interpreter the shim shares: it runs them on its
//! finishing chain's own calls, whose addresses only it knows), and
//! refuses a process whose filters would stop them.

use crate::obstacles::Obstacles;
use crate::sys::ptrace::{self, SockFilter};
use crate::task::StatusText;
use crate::tracee::Tracee;
use cryo_image::bpf::{self, Data, ACTION_FULL, RET_ALLOW, RET_USER_NOTIF};
use cryo_image::task::{seccomp_flags, SeccompInsn, EVERY_THREAD};
use cryo_image::Gadgets;

/// One filter as installed: its flags (`seccomp_flags`) and program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub flags: u32,
    pub insns: Vec<SockFilter>,
}

/// The filters of a stopped task, the oldest first (as the kernel numbers
/// them: PTRACE_SECCOMP_GET_FILTER's index 0 is the first installed).
pub fn chain(tid: i32) -> std::io::Result<Vec<Filter>> {
    const SECCOMP_FILTER_FLAG_LOG: u64 = 2;
    let mut out = Vec::new();
    for index in 0.. {
        let insns = match ptrace::seccomp_filter(tid, index) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        };
        let log = ptrace::seccomp_flags(tid, index)? & SECCOMP_FILTER_FLAG_LOG != 0;
        out.push(Filter {
            flags: if log { seccomp_flags::LOG } else { 0 },
            insns,
        });
    }
    Ok(out)
}

/// The process's seccomp state, for the image: strict mode (`strict`), or
/// every thread's chain of filters, checked (below) and recorded: one
/// chain when every thread has the same (installed for all at once, so
/// they share it again), else each thread's own (installed by that
/// thread; filters they shared are then each their own copy).
pub fn capture(
    main: &Tracee,
    others: &[Tracee],
    main_status: &StatusText,
    statuses: &[StatusText],
    gadgets: Option<&Gadgets>,
    words: &[(i32, u64)],
    obs: &mut Obstacles,
) -> Captured {
    let mut c = Captured::default();
    let mode = |st: &StatusText| st.get("Seccomp").unwrap_or("0").to_owned();
    let read = |t: &Tracee, st: &StatusText| -> Result<Vec<Filter>, String> {
        match mode(st).as_str() {
            "2" => chain(t.pid()).map_err(|e| {
                format!(
                    "its seccomp filters cannot be read (PTRACE_SECCOMP_GET_FILTER: {e}; that needs CAP_SYS_ADMIN)"
                )
            }),
            _ => Ok(Vec::new()),
        }
    };
    // Strict mode (1): entered again by the main thread as the restore's
    // last call but rt_sigreturn (the one other call it allows that the
    // restore makes); another thread's is not.
    for (t, st) in others.iter().zip(statuses) {
        if mode(st) == "1" {
            obs.push(format!(
                "thread {} runs in seccomp strict mode; cryo enters it again in the main thread only",
                t.pid()
            ));
        }
    }
    if mode(main_status) == "1" {
        if gadgets.is_none() {
            obs.push("it runs in seccomp strict mode and has no `syscall; ret` and `rt_sigreturn` code of its own, from which the restore enters it again");
        }
        c.strict = true;
        return c;
    }
    // Every thread's chain: the main thread's first.
    let mut chains = Vec::with_capacity(others.len() + 1);
    for (t, st) in std::iter::once((main, main_status)).chain(others.iter().zip(statuses)) {
        match read(t, st) {
            Ok(f) => chains.push(f),
            Err(e) => {
                obs.push(e);
                return c;
            }
        }
    }
    if chains.iter().all(|f| f.is_empty()) {
        return c;
    }
    let Some(g) = gadgets else {
        obs.push("it has seccomp filters and no `syscall; ret` and `rt_sigreturn` code of its own, in which the restore finishes once they are installed");
        return c;
    };
    let shared = chains.iter().all(|f| *f == chains[0]);
    let threads = !others.is_empty();
    let pid = main.tgid();
    let before = obs.len();
    let record_thread = |k: usize| if shared { EVERY_THREAD } else { k as u32 };
    for (k, filters) in chains.iter().enumerate() {
        if filters.is_empty() || (shared && k > 0) {
            continue;
        }
        let who = if k == 0 {
            "its".to_owned()
        } else {
            format!("thread {}'s", others[k - 1].pid())
        };
        // The calls after each thread's own install: the main thread's
        // unmap of the window, wake-up of the others and rt_sigreturn;
        // another thread's count of itself as ready (from the shim), its
        // wait in the program's code and its rt_sigreturn.
        let last = if k == 0 {
            let mut v = main_calls(pid, g, main, others, words);
            if shared {
                // The others' waits, made again after a stop, under
                // the chain every thread shares.
                for t in others {
                    v.push(thread_wait(t, g, words));
                }
            }
            v
        } else {
            thread_calls(g, &others[k - 1], words)
        };
        check(&who, filters, shared && threads, &last, obs);
        // A thread installs its own chain with its own credentials.
        let st = if k == 0 {
            main_status
        } else {
            &statuses[k - 1]
        };
        let nnp = st.get("NoNewPrivs") == Some("1");
        let admin = st
            .get("CapEff")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .is_some_and(|v| v & (1 << 21) != 0);
        if k > 0 && !nnp && !admin {
            obs.push(format!(
                "{who} seccomp filters need no_new_privs or CAP_SYS_ADMIN to be installed again, and the thread has neither"
            ));
        }
    }
    if obs.len() != before {
        return c;
    }
    // Installing a filter without SECCOMP_FILTER_FLAG_SPEC_ALLOW may force
    // the speculative store bypass mitigation on: only where it was.
    let forced = main_status
        .get("Speculation_Store_Bypass")
        .is_some_and(|v| v.contains("force mitigated"));
    let spec = if forced { 0 } else { seccomp_flags::SPEC_ALLOW };
    for (k, filters) in chains.iter().enumerate() {
        if shared && k > 0 {
            break;
        }
        for (n, f) in filters.iter().enumerate() {
            c.filters.extend(f.insns.iter().map(|i| SeccompInsn {
                thread: record_thread(k),
                filter: n as u32,
                flags: f.flags | spec,
                code: i.code.into(),
                jt: i.jt.into(),
                jf: i.jf.into(),
                k: i.k,
            }));
        }
    }
    c
}

/// What the image keeps of a process's seccomp state.
#[derive(Default)]
pub struct Captured {
    /// Its filters' instructions (`task::SeccompInsn`), oldest first.
    pub filters: Vec<SeccompInsn>,
    /// The main thread runs in strict mode.
    pub strict: bool,
}

const BPF_RET: u16 = 0x06;
const BPF_K: u16 = 0x00;
const SYS_RT_SIGRETURN: i32 = 15;
const SYS_MUNMAP: i32 = 11;
const SYS_FUTEX: i32 = 202;
const SYS_SECCOMP: i32 = 317;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
const FUTEX_WAKE_PRIVATE: u64 = 129;
const FUTEX_WAIT_PRIVATE: u64 = 128;

/// What the restore could not do with one thread's chain: actions it
/// cannot make again, and the calls made once it is installed: each
/// filter's install under the filters before it (`tsync`: with
/// SECCOMP_FILTER_FLAG_TSYNC), then `last` (the restore's own last calls
/// in that thread). (Filters installed with a privilege the program
/// dropped since need no check here: the restore installs the main
/// thread's before the credentials, its tracer suspending them,
/// `Image::seccomp_before_creds`.)
fn check(who: &str, filters: &[Filter], tsync: bool, last: &[(String, Data)], obs: &mut Obstacles) {
    for (n, f) in filters.iter().enumerate() {
        for i in &f.insns {
            if i.code == BPF_RET | BPF_K && i.k & ACTION_FULL == RET_USER_NOTIF {
                obs.push(format!(
                    "{who} seccomp filter {n} hands system calls to a supervisor (SECCOMP_RET_USER_NOTIF), which a restore cannot reconnect"
                ));
                break;
            }
            if i.code & 0x07 == BPF_RET && i.code != BPF_RET | BPF_K {
                obs.push(format!(
                    "{who} seccomp filter {n} returns an action computed at run time, which cryo cannot check"
                ));
                break;
            }
        }
    }
    let window = cryo_image::SHIM_WINDOW;
    let tsync = if tsync { SECCOMP_FILTER_FLAG_TSYNC } else { 0 };
    let mut stopped = Vec::new();
    for (n, f) in filters.iter().enumerate().skip(1) {
        let d = Data::new(
            SYS_SECCOMP,
            window,
            [
                SECCOMP_SET_MODE_FILTER,
                u64::from(f.flags) | tsync,
                window,
                0,
                0,
                0,
            ],
        );
        let r = run_chain(&filters[..n], &d);
        if !allows(r) {
            stopped.push(format!(
                "seccomp(SECCOMP_SET_MODE_FILTER) of filter {n}: {}",
                action_name(r)
            ));
        }
    }
    for (what, d) in last {
        let r = run_chain(filters, d);
        if !allows(r) {
            stopped.push(format!("{what}: {}", action_name(r)));
        }
    }
    if !stopped.is_empty() {
        obs.push(format!(
            "{who} seccomp filters would stop the restore's own last system calls ({}); cryo installs them again just before those",
            stopped.join("; ")
        ));
    }
}

/// Where the restore puts each thread's wait word, by TID (the main
/// thread's: the release word, without the finishing chain's own
/// mapping): just below its signal frame, whose top
/// `cryo_image::frame_top` places (at the top of the thread's sigaltstack
/// where it has one of its own, else below its stack pointer), a frame
/// (an rt_sigframe and the xsave area) further down. A stand-in within a
/// few hundred bytes of the real word, which only the restore knows (the
/// shim checks that one before the filters are back, and ends the
/// restore, loudly, where they would stop a call): near enough for
/// filters that look at an address's range, which 0 was not (a review: a
/// filter refusing FUTEX_WAKE at high addresses passed capture, and
/// every restore hung), nor the stack pointer alone (a third: with a
/// sigaltstack the word is on that).
pub fn wait_words(b: &cryo_image::write::ImageBuilder) -> Vec<(i32, u64)> {
    let p = &b.process;
    let alts: Vec<(u64, u64, u32)> =
        std::iter::once((p.sigaltstack_sp, p.sigaltstack_size, p.sigaltstack_flags))
            .chain(
                b.threads
                    .iter()
                    .map(|t| (t.sigaltstack_sp, t.sigaltstack_size, t.sigaltstack_flags)),
            )
            .collect();
    let alt = |k: usize| cryo_image::unshared_alt(k, alts.len(), |j| alts.get(j).copied());
    let word = |rsp: u64, k: usize| {
        cryo_image::frame_top(rsp, alt(k), p.xsave_size)
            .saturating_sub(u64::from(p.xsave_size) + 512)
            & !7
    };
    std::iter::once((p.pid as i32, word(p.regs.rsp, 0)))
        .chain(
            b.threads
                .iter()
                .enumerate()
                .map(|(k, t)| (t.tid as i32, word(t.regs.rsp, k + 1))),
        )
        .collect()
}

/// Thread `t`'s stand-in wait word ([`wait_words`]).
fn wait_word(t: &Tracee, words: &[(i32, u64)]) -> u64 {
    words
        .iter()
        .find(|(tid, _)| *tid == t.pid())
        .map_or(0, |&(_, w)| w)
}

/// The main thread's last calls: the window's munmap, the other threads'
/// release (without the finishing chain's own mapping: each one's own
/// wait word woken, then the release word, below the main thread's
/// frame), rt_sigreturn (from the program's gadgets). With the chain's
/// mapping, the chain makes its own calls from there, whose addresses
/// only the restore knows: the shim runs the filters on those itself and
/// takes this way where they would stop one.
fn main_calls(
    pid: i32,
    g: &Gadgets,
    main: &Tracee,
    others: &[Tracee],
    words: &[(i32, u64)],
) -> Vec<(String, Data)> {
    let after_syscall = g.syscall_ret + 2;
    let mut v = vec![(
        "munmap of the restore's window".to_owned(),
        Data::new(
            SYS_MUNMAP,
            after_syscall,
            [
                cryo_image::SHIM_WINDOW,
                cryo_image::SHIM_WINDOW_LEN,
                0,
                0,
                0,
                0,
            ],
        ),
    )];
    let wake = |word: u64| {
        Data::new(
            SYS_FUTEX,
            after_syscall,
            [word, FUTEX_WAKE_PRIVATE, i32::MAX as u64, 0, 0, 0],
        )
    };
    for t in others {
        v.push((
            format!(
                "futex(FUTEX_WAKE_PRIVATE) of thread {}'s own wait word",
                t.pid()
            ),
            wake(wait_word(t, words)),
        ));
    }
    if !others.is_empty() {
        v.push((
            "futex(FUTEX_WAKE_PRIVATE) of the other threads".to_owned(),
            wake(wait_word(main, words)),
        ));
    }
    v.push((
        "rt_sigreturn".to_owned(),
        Data::new(
            SYS_RT_SIGRETURN,
            g.sigreturn + sigreturn_len(pid, g),
            [0; 6],
        ),
    ));
    v
}

/// Thread `t`'s wait for its release, in the program's code.
fn thread_wait(t: &Tracee, g: &Gadgets, words: &[(i32, u64)]) -> (String, Data) {
    (
        format!(
            "futex(FUTEX_WAIT_PRIVATE) of thread {} for its release",
            t.pid()
        ),
        Data::new(
            SYS_FUTEX,
            g.syscall_ret + 2,
            [wait_word(t, words), FUTEX_WAIT_PRIVATE, 0, 0, 0, 0],
        ),
    )
}

/// Another thread's last calls after its own chain is in: it counts
/// itself ready (a futex wake of a word in the shim's window, made from
/// the program's gadget), waits in the program's code, then
/// rt_sigreturn.
fn thread_calls(g: &Gadgets, t: &Tracee, words: &[(i32, u64)]) -> Vec<(String, Data)> {
    vec![
        (
            "futex(FUTEX_WAKE_PRIVATE) as the thread counts itself ready".to_owned(),
            Data::new(
                SYS_FUTEX,
                g.syscall_ret + 2,
                [cryo_image::SHIM_WINDOW, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0],
            ),
        ),
        thread_wait(t, g, words),
        (
            "rt_sigreturn".to_owned(),
            Data::new(
                SYS_RT_SIGRETURN,
                g.sigreturn + sigreturn_len(t.tgid(), g),
                [0; 6],
            ),
        ),
    ]
}

/// Length of the sigreturn gadget, read from the process's code: the
/// instruction pointer a filter sees is the address after its `syscall`.
fn sigreturn_len(pid: i32, g: &Gadgets) -> u64 {
    let mut code = [0u8; cryo_image::gadget::SIGRETURN_MAX];
    let _ = crate::pages::read_remote(pid, g.sigreturn, &mut code);
    cryo_image::gadget::sigreturn_len(&code) as u64
}

/// What one filter returns for `d`.
pub fn run(prog: &[SockFilter], d: &Data) -> u32 {
    bpf::run(
        prog.len(),
        |i| bpf::Insn {
            code: prog[i].code,
            jt: prog[i].jt,
            jf: prog[i].jf,
            k: prog[i].k,
        },
        d,
    )
}

/// What a chain of filters decides: the action of highest precedence
/// among all of theirs, as the kernel takes.
pub fn run_chain(filters: &[Filter], d: &Data) -> u32 {
    filters
        .iter()
        .map(|f| run(&f.insns, d))
        .fold(RET_ALLOW, bpf::strictest)
}

fn allows(r: u32) -> bool {
    bpf::allows(r)
}

fn action_name(r: u32) -> String {
    match r & ACTION_FULL {
        0x8000_0000 => "KILL_PROCESS".into(),
        0x0000_0000 => "KILL_THREAD".into(),
        0x0003_0000 => "TRAP".into(),
        0x0005_0000 => format!("ERRNO({})", r & 0xffff),
        RET_USER_NOTIF => "USER_NOTIF".into(),
        0x7ff0_0000 => "TRACE".into(),
        a => format!("action {a:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_image::bpf::AUDIT_ARCH_X86_64;

    fn ins(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    /// Deny `nr` with ERRNO(1), allow the rest (what libseccomp writes for
    /// one rule: check the arch, load nr, compare, return).
    fn deny(nr: u32) -> Filter {
        Filter {
            flags: 0,
            insns: vec![
                ins(0x20, 0, 0, 4),                 // ld arch
                ins(0x15, 1, 0, AUDIT_ARCH_X86_64), // jeq arch
                ins(0x06, 0, 0, 0x8000_0000),       // kill process
                ins(0x20, 0, 0, 0),                 // ld nr
                ins(0x15, 0, 1, nr),                // jeq nr
                ins(0x06, 0, 0, 0x0005_0001),       // errno 1
                ins(0x06, 0, 0, RET_ALLOW),
            ],
        }
    }

    #[test]
    fn a_chain_takes_the_strictest_action() {
        let d = |nr| Data::new(nr, 0x1000, [0; 6]);
        let chain = [deny(SYS_MUNMAP as u32), deny(SYS_FUTEX as u32)];
        assert_eq!(run_chain(&chain, &d(SYS_MUNMAP)), 0x0005_0001);
        assert_eq!(run_chain(&chain, &d(SYS_FUTEX)), 0x0005_0001);
        assert_eq!(run_chain(&chain, &d(SYS_RT_SIGRETURN)), RET_ALLOW);
        assert!(allows(run_chain(&[], &d(0))));
        // KILL_PROCESS (negative) wins over ERRNO.
        let kill = Filter {
            flags: 0,
            insns: vec![ins(0x06, 0, 0, 0x8000_0000)],
        };
        assert_eq!(run_chain(&[deny(11), kill], &d(11)), 0x8000_0000);
    }
}
