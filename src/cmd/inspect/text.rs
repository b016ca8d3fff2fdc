//! The text listing of `cryo inspect`: like pmap for the mappings, then
//! registers, signals, threads, fds, credentials, task state, timers, mm.

use super::names::{flag_names, handler, perms, signame, sigset, xcr0_names};
use super::{comm, s, vma_pages};
use cryo_image::fds::{file_flags, lock_kind, pipe_flags};
use cryo_image::load::LoadedImage;
use cryo_image::{fd_kind, process_flags, vma_kind, Image};
use std::fmt::Write as _;

pub(super) fn to_text(img: &Image, loaded: &LoadedImage) -> String {
    let p = img.process();
    let mut o = String::new();
    let pages = img.header.pages_len;
    let (mut data, mut zero) = (0u64, 0u64);
    for v in img.vmas().iter() {
        let (d, z) = vma_pages(img, &v);
        data += d;
        zero += z;
    }
    let _ = writeln!(
        o,
        "cryo image {}.{} in {}",
        img.header.major,
        img.header.minor,
        loaded.dir.display()
    );
    let _ = writeln!(
        o,
        "process   pid {} ({}) exe {} cwd {}",
        p.pid,
        comm(img),
        s(img, p.exe),
        s(img, p.cwd)
    );
    if img.tree().len() > 1 {
        let _ = writeln!(
            o,
            "tree      {} processes (each live one's image in procs/PID; `cryo inspect DIR/procs/PID`), {} fds and {} files shared between them:",
            img.tree().len(),
            img.tree_fds().len(),
            img.tree_files().len()
        );
        for t in img.tree().iter() {
            let _ = writeln!(
                o,
                "  pid {:>7}  parent {:>7}  group {:>7}  session {:>7}  {}",
                t.pid,
                t.ppid,
                t.pgid,
                t.sid,
                super::tree_state(&t)
            );
        }
    }
    let mut state = vec![];
    if p.flags & process_flags::WAS_STOPPED != 0 {
        state.push(match p.stop_signal as i32 {
            libc::SIGTSTP => "was stopped (SIGTSTP)".to_string(),
            libc::SIGTTIN => "was stopped (SIGTTIN)".to_string(),
            libc::SIGTTOU => "was stopped (SIGTTOU)".to_string(),
            _ => "was stopped (SIGSTOP)".to_string(),
        });
    } else {
        state.push("was running".to_string());
    }
    if p.flags & process_flags::SESSION_LEADER != 0 {
        state.push("led its own session without a terminal (setsid; led again on restore)".into());
    }
    if p.flags & process_flags::GROUP_LEADER != 0 && p.flags & process_flags::SESSION_LEADER == 0 {
        state.push("led its process group (led again, with its PID, under --same-pid)".into());
    }
    if p.flags & process_flags::SHARES_PARENT_FDS != 0 {
        state.push(
            "shared its parent's fd table (CLONE_FILES; forked so by its parent's shim on restore, eagerly)"
                .into(),
        );
    }
    if !img.taken_stops().is_empty() {
        let pids: Vec<String> = img
            .taken_stops()
            .iter()
            .map(|t| t.pid.to_string())
            .collect();
        state.push(format!(
            "had taken the stop report of its stopped child {} (taken again on restore)",
            pids.join(", ")
        ));
    }
    if p.flags & process_flags::IN_SYSCALL != 0 {
        state.push(format!(
            "in syscall {} ({})",
            p.raw_regs.orig_rax,
            if p.flags & process_flags::RESTART_BLOCK_EINTR != 0 {
                "returns -EINTR on restore"
            } else {
                "restarted on restore"
            }
        ));
    }
    let _ = writeln!(
        o,
        "captured  at {} (unix) on Linux {}; {}",
        p.captured_at,
        s(img, p.kernel),
        state.join(", ")
    );
    if let Some(t) = img.task().filter(|t| t.boot_id != [0; 16]) {
        let _ = writeln!(
            o,
            "boot      {}; CLOCK_MONOTONIC {:.3} s, CLOCK_BOOTTIME {:.3} s, as it saw them (a restore in another boot, or where CLOCK_MONOTONIC is behind, needs --clock-jump)",
            boot_id_text(&t.boot_id),
            t.monotonic_ns as f64 / 1e9,
            t.boottime_ns as f64 / 1e9
        );
    }
    let _ = writeln!(
        o,
        "size      {} pages stored ({:.1} MiB) in {} runs, {} zero pages recorded, meta {} bytes, sums {} bytes; RSS at capture {} KiB",
        data,
        pages as f64 / (1 << 20) as f64,
        img.page_runs().len(),
        zero,
        img.header.meta_len,
        img.header.pages_len / cryo_image::PAGE_SIZE * 8,
        p.rss_kib
    );
    let _ = writeln!(o, "\nmappings ({})", img.vmas().len());
    let _ = writeln!(
        o,
        "{:<16} {:>10} {:>8} {:>8} {:>6} {:<4} {:<13} NAME",
        "ADDRESS", "KBYTES", "RSS-KB", "DUMP-KB", "ZERO", "PERM", "KIND"
    );
    for v in img.vmas().iter() {
        let (d, z) = vma_pages(img, &v);
        let mut name = s(img, v.name).to_string();
        let fl = flag_names(&v);
        if !fl.is_empty() {
            let _ = write!(name, "  [{}]", fl.join(","));
        }
        let kept = (v.file != cryo_image::NO_INDEX)
            .then(|| img.files().get(v.file as usize))
            .flatten()
            .is_some_and(|f| f.flags & file_flags::KEPT != 0);
        if kept {
            name.push_str("  (bytes kept: made again if gone)");
        }
        if let Some(r) = img.aio_rings().iter().find(|r| r.start == v.start) {
            let _ = write!(
                name,
                "  (AIO context: {} events, head {}, tail {}, {} completed and not reaped)",
                r.nr,
                r.head,
                r.tail,
                r.unreaped()
            );
        }
        if let Some(s) = img.sysv_shm().iter().find(|s| s.start == v.start) {
            use cryo_image::fds::sysv_flags;
            let removed = s.flags & sysv_flags::REMOVED != 0;
            name.push_str(&format!(
                "  (segment {} key {:#x}, {} bytes kept, mode {:o}{}{})",
                s.id,
                s.key as u32,
                s.size,
                s.mode,
                if s.flags & sysv_flags::RDONLY != 0 {
                    ", attached read-only"
                } else {
                    ""
                },
                if removed {
                    ", removed while attached: made again at every restore"
                } else {
                    ": attached again, made again if gone"
                },
            ));
        }
        let _ = writeln!(
            o,
            "{:016x} {:>10} {:>8} {:>8} {:>6} {:<4} {:<13} {}",
            v.start,
            v.len() / 1024,
            v.resident_pages * 4,
            d * 4,
            z,
            perms(&v),
            vma_kind::name(v.kind),
            name
        );
    }
    let r = &p.regs;
    let _ = writeln!(o, "\nregisters (as resumed)");
    let _ = writeln!(
        o,
        "  rip {:016x}  rsp {:016x}  rbp {:016x}  eflags {:x}",
        r.rip, r.rsp, r.rbp, r.eflags
    );
    let _ = writeln!(
        o,
        "  rax {:016x}  rbx {:016x}  rcx {:016x}  rdx {:016x}",
        r.rax, r.rbx, r.rcx, r.rdx
    );
    let _ = writeln!(
        o,
        "  rsi {:016x}  rdi {:016x}  orig_rax {:x}",
        r.rsi, r.rdi, r.orig_rax as i64
    );
    let _ = writeln!(
        o,
        "  fs_base {:016x}  gs_base {:016x}",
        r.fs_base, r.gs_base
    );
    let _ = writeln!(
        o,
        "  xsave {} bytes, XCR0 {:#x} ({}){}",
        p.xsave_size,
        p.xcr0,
        xcr0_names(p.xcr0),
        match img.task().map_or(0, |t| t.frame_xsave) {
            0 => String::new(),
            n => format!(", {n} in a signal frame"),
        }
    );
    let _ = writeln!(
        o,
        "tls       canary (%fs:0x28) {:#018x}  pointer guard (%fs:0x30) {:#018x}",
        p.tls_canary, p.tls_pointer_guard
    );
    match img.gadgets() {
        Some(g) => {
            let _ = writeln!(
                o,
                "finish    syscall-ret gadget {:#x}, sigreturn gadget {:#x} (restore needs no tracer)",
                g.syscall_ret, g.sigreturn
            );
        }
        None => {
            let _ = writeln!(o, "finish    no gadgets found (restore uses its tracer)");
        }
    }
    let (mutexes, refs): (Vec<_>, Vec<_>) = img
        .pid_refs()
        .iter()
        .partition(|r| r.kind != cryo_image::task::pid_ref::VALUE);
    if !mutexes.is_empty() {
        let addrs: Vec<String> = mutexes
            .iter()
            .map(|r| match r.owner {
                0 => format!("{:#x}", r.addr),
                k => format!("{:#x} (thread {k})", r.addr),
            })
            .collect();
        let _ = writeln!(
            o,
            "mutexes   held, owner fields at {} (the main thread's unless a thread is named; rewritten to the holder's id at restore)",
            addrs.join(" ")
        );
    }
    if !refs.is_empty() {
        let addrs: Vec<String> = refs.iter().map(|r| format!("{:#x}", r.addr)).collect();
        let _ = writeln!(
            o,
            "own pid   kept in its data at {} (restored under another PID, it goes on using {})",
            addrs.join(" "),
            p.pid
        );
    }
    if p.flags & process_flags::HAS_RSEQ != 0 {
        let _ = writeln!(
            o,
            "rseq      at {:#x} size {} signature {:#x}",
            p.rseq_addr, p.rseq_size, p.rseq_sig
        );
    } else {
        let _ = writeln!(o, "rseq      not registered");
    }
    let _ = writeln!(
        o,
        "signals   blocked {}  pending {}  shared-pending {}",
        sigset(p.sig_blocked),
        sigset(p.sig_pending),
        sigset(p.sig_shared_pending)
    );
    if p.sigaltstack_size != 0 {
        let _ = writeln!(
            o,
            "sigaltstack {:#x} size {} flags {:#x}",
            p.sigaltstack_sp, p.sigaltstack_size, p.sigaltstack_flags
        );
    }
    // Every recorded disposition: caught, ignored, and SIGCHLD when its
    // default action carries SA_NOCLDWAIT or SA_NOCLDSTOP.
    for a in img.sigactions().iter() {
        let _ = writeln!(
            o,
            "  {:<10} {:<18} flags {:#010x} mask {}",
            signame(a.signo),
            handler(a.handler),
            a.flags,
            sigset(a.mask)
        );
    }
    if !img.signals().is_empty() {
        let _ = writeln!(o, "queued    (with their siginfo, in order)");
        for q in img.signals().iter() {
            let whose = match (q.shared, q.thread) {
                (1, _) => "process".to_string(),
                (_, 0) => format!("thread {}", p.pid),
                (_, k) => format!(
                    "thread {}",
                    img.threads().get(k as usize - 1).map_or(0, |t| t.tid)
                ),
            };
            let _ = writeln!(
                o,
                "  {:<10} {} code {} value {:#x}",
                signame(q.signo),
                whose,
                q.info[1] as u32 as i32,
                q.info[3]
            );
        }
    }
    if !img.threads().is_empty() {
        let _ = writeln!(
            o,
            "threads   {} (main {} and the {} below); cached tid at fs+{}",
            img.threads().len() + 1,
            p.pid,
            img.threads().len(),
            match p.tid_offset {
                0 => "? (found at restore)".to_string(),
                v => format!("{v:#x}"),
            }
        );
        for (k, t) in img.threads().iter().enumerate() {
            let name = String::from_utf8_lossy(&t.comm);
            let name = name.trim_end_matches('\0');
            let state = if t.flags & process_flags::IN_SYSCALL != 0 {
                format!("in syscall {}", t.raw_regs.orig_rax)
            } else {
                "running".to_string()
            };
            let _ = writeln!(
                o,
                "  {:<8} {:<16} rip {:#x} rsp {:#x} {} mask {}",
                t.tid,
                name,
                t.regs.rip,
                t.regs.rsp,
                state,
                sigset(t.sig_blocked)
            );
            if let Some(c) = img
                .thread_creds()
                .get(k)
                .filter(|c| Some(*c) != img.creds())
            {
                let _ = writeln!(
                    o,
                    "           credentials of its own: uid {:?} gid {:?} caps eff {:#x} prm {:#x} inh {:#x} bnd {:#x} amb {:#x} securebits {:#x}",
                    c.uid, c.gid, c.cap_eff, c.cap_prm, c.cap_inh, c.cap_bnd, c.cap_amb, c.securebits
                );
            }
        }
    }
    let _ = writeln!(o, "\nfds ({})", img.fds().len());
    let fdt: Vec<cryo_image::Fd> = img.fds().iter().collect();
    for (i, f) in fdt.iter().enumerate() {
        let mut extra = String::new();
        if f.cloexec != 0 {
            extra.push_str(" cloexec");
        }
        if f.desc as usize != i {
            let _ = write!(
                extra,
                " (same description as fd {})",
                fdt[f.desc as usize].fd
            );
        }
        if let Some(p) = matches!(f.kind, fd_kind::PIPE | fd_kind::FIFO)
            .then(|| img.pipes().get(f.object as usize))
            .flatten()
        {
            let _ = write!(
                extra,
                " [{} bytes buffered, capacity {}, {}]",
                p.data.len,
                p.size,
                if p.flags & pipe_flags::INSIDE != 0 {
                    "made again on restore"
                } else {
                    "other end outside: needs --inherit-fd"
                }
            );
        }
        let _ = write!(extra, "{}", anon_state(img, f));
        if f.in_flight != 0 {
            let _ = write!(
                extra,
                " [in flight: sent with SCM_RIGHTS, queued in a socket; made, sent again, closed]"
            );
        }
        if let Some(fi) = (f.file != cryo_image::NO_INDEX)
            .then(|| img.files().get(f.file as usize))
            .flatten()
        {
            if fi.flags & file_flags::DELETED != 0 {
                let stored: u64 = img
                    .extents()
                    .iter()
                    .skip(fi.first_extent as usize)
                    .take(fi.extent_count as usize)
                    .map(|e| e.data.len)
                    .sum();
                let _ = write!(
                    extra,
                    " [{}: {} of {} bytes stored]",
                    if fi.flags & file_flags::MEMFD != 0 {
                        "memfd"
                    } else {
                        "unlinked"
                    },
                    stored,
                    fi.size
                );
            }
            if fi.flags & file_flags::HANDLE != 0 {
                let _ = write!(
                    extra,
                    " [its other link is elsewhere: reopened by its file handle]"
                );
            }
        }
        let _ = writeln!(
            o,
            "  {:>3} {:<9} flags {:#o} pos {:<8} {}{}",
            f.fd,
            fd_kind::name(f.kind),
            f.flags,
            f.pos,
            s(img, f.target),
            extra
        );
    }
    for w in img.inotify().iter() {
        let _ = writeln!(
            o,
            "  watch fd {} wd {} mask {:#x} {}",
            fdt.get(w.desc as usize).map_or(-1, |f| f.fd),
            w.wd,
            w.mask,
            s(img, w.path)
        );
    }
    for l in img.locks().iter() {
        // (Through a mapping: `fd` is the files-table index.)
        let on = if l.kind == lock_kind::FLOCK_MAPPING {
            let path = img
                .files()
                .get(l.fd as usize)
                .map_or("", |f| s(img, f.path));
            format!("file {path}")
        } else {
            format!("fd {}", l.fd)
        };
        let _ = writeln!(
            o,
            "  lock  {on} {} {} bytes {}..{}",
            lock_kind::name(l.kind),
            if l.write != 0 { "write" } else { "read" },
            l.start,
            if l.end == u64::MAX {
                "EOF".to_string()
            } else {
                l.end.to_string()
            }
        );
    }
    if let Some(c) = img.creds() {
        let groups: Vec<String> = img.groups().iter().map(|g| g.gid.to_string()).collect();
        let _ = writeln!(
            o,
            "\ncredentials uid {:?} gid {:?} groups [{}]",
            c.uid,
            c.gid,
            groups.join(",")
        );
        let _ = writeln!(
            o,
            "          caps eff {:#x} prm {:#x} inh {:#x} bnd {:#x} amb {:#x} securebits {:#x}",
            c.cap_eff, c.cap_prm, c.cap_inh, c.cap_bnd, c.cap_amb, c.securebits
        );
    }
    if let Some(t) = img.task() {
        let v = |x: i64| {
            if x == cryo_image::task::UNKNOWN {
                "?".to_string()
            } else {
                x.to_string()
            }
        };
        let _ = writeln!(
            o,
            "task      thp_disable {} subreaper {} pdeathsig {} dumpable {} no_new_privs {} timer_slack {}ns mdwe {} membarrier {:#x}",
            v(t.thp_disable),
            v(t.child_subreaper),
            v(t.pdeathsig),
            v(t.dumpable),
            v(t.no_new_privs),
            v(t.timer_slack_ns),
            v(t.mdwe),
            t.membarrier.max(0)
        );
        let cpus: Vec<String> = (0..1024)
            .filter(|c| t.affinity[c / 64] & (1 << (c % 64)) != 0)
            .map(|c| c.to_string())
            .collect();
        let _ = writeln!(
            o,
            "          nice {} policy {} priority {} ioprio {:#x} cpus [{}] oom_score_adj {} loginuid {}",
            v(t.nice),
            v(t.sched_policy),
            v(t.sched_priority),
            t.ioprio.max(0),
            cpus.join(","),
            v(t.oom_score_adj),
            v(t.loginuid)
        );
        if t.mlock_future != 0 {
            let onfault = t.mlock_future & cryo_image::task::MCL_ONFAULT != 0;
            let _ = writeln!(
                o,
                "          mappings to come are locked (mlockall MCL_FUTURE{})",
                if onfault { "|MCL_ONFAULT" } else { "" }
            );
        }
        if t.xcomp_perm & cryo_image::task::XCOMP_TILEDATA != 0 {
            let _ = writeln!(
                o,
                "          AMX tile data (permission asked for again; each thread's tiles in its xsave)"
            );
        }
        if let Some(root) = img.str(t.root).filter(|r| !r.is_empty()) {
            let _ = writeln!(o, "          root {root} (chroot)");
        }
        if let Some(cg) = img.str(t.cgroups).filter(|c| !c.is_empty()) {
            let _ = writeln!(
                o,
                "          cgroups {}",
                cg.lines().collect::<Vec<_>>().join(" ")
            );
        }
    }
    seccomp_lines(&mut o, img);
    sysv_lines(&mut o, img, loaded);
    if !img.timers().is_empty()
        || img.itimers().iter().any(|t| {
            t.interval_sec != 0 || t.interval_usec != 0 || t.value_sec != 0 || t.value_usec != 0
        })
    {
        let _ = writeln!(o, "\ntimers");
        for t in img.timers().iter() {
            let _ = writeln!(
                o,
                "  posix timer {} clock {} signal {} interval {}.{:09}s next {}.{:09}s",
                t.id,
                t.clock,
                signame(t.signo as u32),
                t.interval_sec,
                t.interval_nsec,
                t.value_sec,
                t.value_nsec
            );
        }
        for t in img.itimers().iter() {
            if t.interval_sec != 0 || t.interval_usec != 0 || t.value_sec != 0 || t.value_usec != 0
            {
                let which = ["ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"];
                let _ = writeln!(
                    o,
                    "  {} interval {}.{:06}s next {}.{:06}s",
                    which.get(t.which as usize).unwrap_or(&"?"),
                    t.interval_sec,
                    t.interval_usec,
                    t.value_sec,
                    t.value_usec
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\nmm        code {:#x}-{:#x} data {:#x}-{:#x} brk {:#x}-{:#x} stack {:#x}",
        p.mm.start_code,
        p.mm.end_code,
        p.mm.start_data,
        p.mm.end_data,
        p.mm.start_brk,
        p.mm.brk,
        p.mm.start_stack
    );
    let _ = writeln!(
        o,
        "          args {:#x}-{:#x} env {:#x}-{:#x} auxv {} entries; umask {:03o} personality {:#x}",
        p.mm.arg_start,
        p.mm.arg_end,
        p.mm.env_start,
        p.mm.env_end,
        img.auxv().len(),
        p.umask,
        p.personality
    );
    o
}

/// The state of an eventfd, timerfd, signalfd, epoll or fanotify fd, for the text
/// listing ("" for other kinds).
fn anon_state(img: &Image, f: &cryo_image::Fd) -> String {
    let o = f.object as usize;
    match f.kind {
        fd_kind::EVENTFD => img.eventfds().get(o).map_or(String::new(), |e| {
            format!(
                " [count {}{}]",
                e.count,
                if e.semaphore != 0 { ", semaphore" } else { "" }
            )
        }),
        fd_kind::TIMERFD => img.timerfds().get(o).map_or(String::new(), |t| {
            format!(
                " [clock {}, next in {}.{:09} s, every {}.{:09} s, {} expirations unread]",
                t.clock, t.value_sec, t.value_nsec, t.interval_sec, t.interval_nsec, t.ticks
            )
        }),
        fd_kind::SIGNALFD => img
            .signalfds()
            .get(o)
            .map_or(String::new(), |s| format!(" [mask {}]", sigset(s.mask))),
        fd_kind::EPOLL => {
            let items = img.epoll_items();
            let mine = || items.iter().filter(|e| e.desc == f.desc);
            let elsewhere =
                |e: &cryo_image::fds::EpollItem| e.via == cryo_image::fds::EPOLL_VIA_ELSEWHERE;
            let (n, closed, away) = (
                mine().count(),
                mine().filter(|e| e.via != 0 && !elsewhere(e)).count(),
                mine().filter(|e| elsewhere(e)).count(),
            );
            let mut t = format!(" [{n} watched");
            if closed > 0 {
                t += &format!(", {closed} under an fd number closed or reused since");
            }
            if away > 0 {
                t += &format!(", {away} on files only another process of the tree holds (that process makes this epoll set)");
            }
            t + "]"
        }
        fd_kind::FANOTIFY => {
            let marks: Vec<String> = img
                .fanotify_marks()
                .iter()
                .filter(|m| m.desc == f.desc)
                .map(|m| format!("{} mask {:#x}", s(img, m.path), m.mask))
                .collect();
            format!(" [{} marks: {}]", marks.len(), marks.join(", "))
        }
        fd_kind::SOCKET => img.sockets().get(o).map_or(String::new(), |k| {
            use cryo_image::fds::{sockaddr_bytes, sockaddr_display, socket_state};
            let kind = match (k.family as i32, k.sock_type as i32) {
                (libc::AF_UNIX, libc::SOCK_STREAM) => "unix stream",
                (libc::AF_UNIX, libc::SOCK_DGRAM) => "unix dgram",
                (libc::AF_UNIX, _) => "unix seqpacket",
                (libc::AF_INET, libc::SOCK_STREAM) => "tcp",
                (libc::AF_INET6, libc::SOCK_STREAM) => "tcp6",
                (libc::AF_INET, _) => "udp",
                (libc::AF_NETLINK, _) => "netlink",
                _ => "udp6",
            };
            let (a, n) = sockaddr_bytes(&k.addr, k.addr_len);
            let (pa, pn) = sockaddr_bytes(&k.peer, k.peer_len);
            let mut out = format!(" [{kind} {}", socket_state::name(k.state));
            if n > 2 && k.state != socket_state::UNBOUND {
                out += &format!(" {}", sockaddr_display(&a[..n]));
            }
            // Its socket file's path (a relative name's, or the name a
            // renamed one has now).
            let file = || {
                img.files()
                    .get(f.file as usize)
                    .and_then(|id| img.str(id.path))
                    .unwrap_or("?")
            };
            if k.flags & cryo_image::fds::socket_flags::RELATIVE != 0 {
                out += &format!(" (a relative name: {})", file());
            }
            if k.flags & cryo_image::fds::socket_flags::GHOST != 0 {
                out += " (its file was gone: bound, then removed)";
            }
            if k.flags & cryo_image::fds::socket_flags::RENAMED != 0 {
                out += &format!(" (its file renamed {} since the bind)", file());
            }
            match k.state {
                socket_state::CONNECTED
                    if k.flags & cryo_image::fds::socket_flags::GHOST_PEER != 0 =>
                {
                    let g = img
                        .fds()
                        .iter()
                        .find(|g| g.kind == fd_kind::SOCKET && g.object == k.pair)
                        .map_or("in another process of the tree".to_owned(), |g| {
                            format!("fd {}", g.fd)
                        });
                    out += &format!(
                        " -> {} ({g}, whose file was gone: connected while it is bound)",
                        sockaddr_display(&pa[..pn])
                    )
                }
                socket_state::LISTENING => out += &format!(", backlog {}", k.backlog),
                socket_state::PENDING => {
                    let l = img
                        .fds()
                        .iter()
                        .find(|g| g.kind == fd_kind::SOCKET && g.object == k.pair)
                        .map_or(
                            "a listener of another process of the tree".to_owned(),
                            |g| format!("fd {}", g.fd),
                        );
                    out += &format!(
                        " -> {}, place {} in the queue of {l}",
                        sockaddr_display(&pa[..pn]),
                        k.backlog
                    )
                }
                socket_state::CONNECTED => out += &format!(" -> {}", sockaddr_display(&pa[..pn])),
                socket_state::REPAIRED => {
                    out += &format!(" -> {}", sockaddr_display(&pa[..pn]));
                    if let Some(t) = img.tcp_conns().iter().find(|t| t.sock == f.object) {
                        out += &format!(
                            ", {} bytes to send ({} never sent), {} to read{}",
                            t.sendq.len,
                            t.unsent,
                            t.recvq.len,
                            if t.options & cryo_image::fds::tcp_opts::LOCKED != 0 {
                                ", locked until restored (nftables)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                socket_state::WIDOWED if k.data.len > 0 => {
                    out += &format!(", {} bytes left to read", k.data.len)
                }
                socket_state::PAIR => {
                    let other = img
                        .fds()
                        .iter()
                        .find(|g| g.kind == fd_kind::SOCKET && g.object == k.pair);
                    match other {
                        Some(g) => out += &format!(" with fd {}", g.fd),
                        None => out += " with another process of the tree",
                    }
                    if k.flags & cryo_image::fds::socket_flags::FRAMED != 0 {
                        out += &format!(
                            ", a queue with files in flight ({} bytes framed as messages)",
                            k.data.len
                        );
                    } else if k.data.len > 0 {
                        out += &format!(", {} bytes queued", k.data.len);
                    }
                }
                _ => {}
            }
            match k.shutdown & 3 {
                1 => out += ", shut down for reading",
                2 => out += ", shut down for writing",
                3 => out += ", shut down",
                _ => {}
            }
            let filter: Vec<_> = img
                .sock_filters()
                .iter()
                .filter(|x| x.sock == f.object)
                .collect();
            if let Some(i) = filter.first() {
                out += &format!(
                    ", a {}-instruction socket filter{}",
                    filter.len(),
                    if i.flags & cryo_image::fds::filter_flags::LOCKED != 0 {
                        " (locked)"
                    } else {
                        ""
                    }
                );
            }
            let opts = img.sockopts().iter().filter(|x| x.sock == f.object).count();
            let groups: Vec<String> = img
                .mcast_groups()
                .iter()
                .filter(|g| g.sock == f.object)
                .map(|g| g.display())
                .collect();
            if !groups.is_empty() {
                out += &format!(", multicast {}", groups.join(", "));
            }
            out + &format!(", {opts} options]")
        }),
        fd_kind::PTY => img.ptys().get(o).map_or(String::new(), |t| {
            use cryo_image::fds::{pty_flags, pty_replay};
            let mut out = format!(
                " [/dev/pts/{}, {}x{}, {}",
                t.index,
                t.rows,
                t.cols,
                if t.lflag & pty_replay::ICANON != 0 {
                    "canonical"
                } else {
                    "raw"
                }
            );
            if t.sid != 0 {
                out += &format!(", controls session {} (foreground {})", t.sid, t.fg_pgrp);
            }
            for (bit, name) in [
                (pty_flags::LOCKED, "locked"),
                (pty_flags::PACKET, "packet mode"),
                (pty_flags::EXCLUSIVE, "exclusive"),
            ] {
                if t.flags & bit != 0 {
                    out += &format!(", {name}");
                }
            }
            if t.input.len + t.output.len > 0 {
                out += &format!(
                    ", {} bytes typed and {} of output unread",
                    t.input.len, t.output.len
                );
            }
            out + ", made again with a new number]"
        }),
        fd_kind::MQUEUE => format!(
            " [POSIX message queue: {} messages of {} bytes at most; opened again by name, its messages as they are then]",
            f.rdev >> 32,
            f.rdev & 0xffff_ffff
        ),
        fd_kind::PTY_SLAVE => match cryo_image::fds::Pty::index_of_rdev(f.rdev) {
            Some(n) => {
                format!(" [slave of /dev/pts/{n}, whose master is captured: made again with it]")
            }
            None => String::new(),
        },
        fd_kind::TTY => match img.terminal().filter(|t| t.fd == f.fd as u32) {
            Some(t) => format!(
                " [its terminal: {}x{}, {}, echo {}; these modes go on the restore's terminal when it runs in its foreground]",
                t.rows,
                t.cols,
                if t.lflag & libc::ICANON != 0 {
                    "canonical"
                } else {
                    "raw"
                },
                if t.lflag & libc::ECHO != 0 { "on" } else { "off" }
            ),
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// The seccomp filters, one line each: instructions, flags; and whether
/// they go in before the credentials.
/// System V semaphore sets and message queues the process could use
/// (made again by restore if gone).
fn sysv_lines(o: &mut String, img: &Image, loaded: &LoadedImage) {
    if img.sysv_sem().is_empty() && img.sysv_msq().is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nSystem V objects it may use (made again if gone, as they were)"
    );
    for s in img.sysv_sem().iter() {
        let values = loaded.read_blob(&s.values, false).map_or_else(
            |e| format!("(unreadable: {e})"),
            |b| {
                let v: Vec<String> = b
                    .chunks_exact(2)
                    .take(16)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]).to_string())
                    .collect();
                let more = if s.nsems > 16 { ", ..." } else { "" };
                format!("[{}{more}]", v.join(", "))
            },
        );
        let _ = writeln!(
            o,
            "  semaphore set {} key {:#x} mode {:o} owner {}:{}  values {values}",
            s.id, s.key as u32, s.mode, s.uid, s.gid
        );
    }
    for q in img.sysv_msq().iter() {
        let _ = writeln!(
            o,
            "  message queue {} key {:#x} mode {:o} owner {}:{}  {} message(s), {} bytes stored, limit {}",
            q.id, q.key as u32, q.mode, q.uid, q.gid, q.count, q.messages.len, q.qbytes
        );
    }
}

fn seccomp_lines(o: &mut String, img: &Image) {
    use cryo_image::task::seccomp_flags;
    if img.task().is_some_and(|t| t.seccomp_strict == 1) {
        let _ = writeln!(o, "seccomp   strict mode (main thread), entered again last");
    }
    let insns: Vec<_> = img.seccomp().iter().collect();
    let mut threads: Vec<u32> = insns.iter().map(|i| i.thread).collect();
    threads.dedup();
    for t in threads {
        let chain: Vec<_> = insns.iter().filter(|i| i.thread == t).collect();
        let n = chain.last().map_or(0, |i| i.filter + 1);
        let whose = match t {
            cryo_image::task::EVERY_THREAD => "for every thread".to_owned(),
            0 => "of the main thread".to_owned(),
            k => format!(
                "of thread {}",
                img.threads().get(k as usize - 1).map_or(0, |th| th.tid)
            ),
        };
        let _ = writeln!(
            o,
            "seccomp   {n} filter(s) {whose}, installed {}",
            if img.seccomp_before_creds() && t != cryo_image::task::EVERY_THREAD && t > 0 {
                "last by the thread"
            } else if img.seccomp_before_creds() {
                "before the credentials (through the tracer, which suspends them)"
            } else {
                "last"
            }
        );
        for f in 0..n {
            let fi: Vec<_> = chain.iter().filter(|i| i.filter == f).collect();
            let flags = fi.first().map_or(0, |i| i.flags);
            let mut names = Vec::new();
            if flags & seccomp_flags::LOG != 0 {
                names.push("log");
            }
            if flags & seccomp_flags::SPEC_ALLOW != 0 {
                names.push("spec_allow");
            }
            let _ = writeln!(
                o,
                "          filter {f}: {} instructions [{}]",
                fi.len(),
                names.join(",")
            );
        }
    }
}

/// A boot id as the kernel prints it.
pub(crate) fn boot_id_text(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
