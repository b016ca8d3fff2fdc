//! The JSON document of `cryo inspect --json`: every table of the image.

use super::names::{flag_names, perms, signame, vmflags};
use super::{comm, s, vma_pages};
use cryo_image::fds::{file_flags, lock_kind, pipe_flags};
use cryo_image::load::LoadedImage;
use cryo_image::{fd_kind, process_flags, vma_kind, Image};
use serde_json::{json, Value};

pub(super) fn to_json(img: &Image, loaded: &LoadedImage) -> Value {
    let p = img.process();
    let vmas: Vec<Value> = img
        .vmas()
        .iter()
        .map(|v| {
            let (d, z) = vma_pages(img, &v);
            json!({
                "start": v.start, "end": v.end, "pgoff": v.pgoff, "perms": perms(&v),
                "kind": vma_kind::name(v.kind), "name": s(img, v.name),
                "flags": flag_names(&v), "vmflags": vmflags(&v),
                "file": (v.file != cryo_image::NO_INDEX).then_some(v.file),
                "resident_pages": v.resident_pages, "dumped_pages": d, "zero_pages": z,
            })
        })
        .collect();
    let files: Vec<Value> = img
        .files()
        .iter()
        .map(|f| {
            json!({"path": s(img, f.path), "dev": f.dev, "ino": f.ino, "size": f.size,
                   "mtime_sec": f.mtime_sec, "mtime_nsec": f.mtime_nsec, "mode": f.mode,
                   "unlinked": f.flags & file_flags::DELETED != 0,
                   "kept": f.flags & file_flags::KEPT != 0,
                   "memfd": f.flags & file_flags::MEMFD != 0, "seals": f.seals,
                   "by_handle": f.flags & file_flags::HANDLE != 0,
                   "uid": f.uid, "gid": f.gid,
                   "extents": img.extents().iter().skip(f.first_extent as usize)
                       .take(f.extent_count as usize)
                       .map(|e| json!({"file_off": e.file_off, "len": e.data.len}))
                       .collect::<Vec<_>>()})
        })
        .collect();
    let fdt: Vec<cryo_image::Fd> = img.fds().iter().collect();
    let fds: Vec<Value> = fdt
        .iter()
        .map(|f| {
            json!({"fd": f.fd, "kind": fd_kind::name(f.kind), "flags": f.flags,
                   "cloexec": f.cloexec != 0, "pos": f.pos, "target": s(img, f.target),
                   "rdev": f.rdev, "ino": f.ino, "dev": f.dev, "mode": f.mode,
                   "same_description_as": fdt[f.desc as usize].fd,
                   "in_flight": f.in_flight != 0,
                   "object": (f.object != cryo_image::NO_INDEX).then_some(f.object),
                   "file": (f.file != cryo_image::NO_INDEX).then_some(f.file)})
        })
        .collect();
    let ptys: Vec<cryo_image::fds::Pty> = img.ptys().iter().collect();
    let (mut data, mut zero) = (0u64, 0u64);
    for v in img.vmas().iter() {
        let (d, z) = vma_pages(img, &v);
        data += d;
        zero += z;
    }
    let mut v = json!({
        "dir": loaded.dir,
        "format": {"major": img.header.major, "minor": img.header.minor},
        "meta_bytes": img.header.meta_len,
        "pages_bytes": img.header.pages_len,
        "sums_bytes": img.header.pages_len / cryo_image::PAGE_SIZE * 8,
        "sum_blocks": img.page_sums().len(),
        "pages_stored": data,
        "pages_zero": zero,
        "process": {
            "pid": p.pid, "comm": comm(img), "exe": s(img, p.exe), "cwd": s(img, p.cwd),
            "kernel": s(img, p.kernel), "captured_at": p.captured_at,
            "boot_id": img.task().filter(|t| t.boot_id != [0; 16]).map(|t| super::text::boot_id_text(&t.boot_id)),
            "monotonic_ns": img.task().map(|t| t.monotonic_ns),
            "boottime_ns": img.task().map(|t| t.boottime_ns),
            "was_stopped": p.flags & process_flags::WAS_STOPPED != 0,
            "stop_signal": p.stop_signal,
            "in_syscall": p.flags & process_flags::IN_SYSCALL != 0,
            "leads_session": p.flags & process_flags::SESSION_LEADER != 0,
            "leads_group": p.flags & process_flags::GROUP_LEADER != 0,
            "shares_parent_fds": p.flags & process_flags::SHARES_PARENT_FDS != 0,
            "personality": p.personality, "umask": p.umask, "rss_kib": p.rss_kib,
            "mm": p.mm, "regs": p.regs, "raw_regs": p.raw_regs,
            "sig_blocked": p.sig_blocked, "sig_pending": p.sig_pending,
            "sig_shared_pending": p.sig_shared_pending,
            "sigaltstack": {"sp": p.sigaltstack_sp, "size": p.sigaltstack_size, "flags": p.sigaltstack_flags},
            "rseq": (p.flags & process_flags::HAS_RSEQ != 0).then(|| json!({
                "addr": p.rseq_addr, "size": p.rseq_size, "sig": p.rseq_sig, "flags": p.rseq_flags})),
            "xsave_size": p.xsave_size, "xcr0": p.xcr0,
            "frame_xsave": img.task().map_or(0, |t| t.frame_xsave),
            "tls": {"canary": p.tls_canary, "pointer_guard": p.tls_pointer_guard,
                    "tid_offset": p.tid_offset},
            "clear_child_tid": p.clear_child_tid,
            "pid_refs": img.pid_refs().iter()
                .filter(|r| r.kind == cryo_image::task::pid_ref::VALUE)
                .map(|r| r.addr).collect::<Vec<u64>>(),
            "held_mutexes": img.pid_refs().iter()
                .filter(|r| r.kind != cryo_image::task::pid_ref::VALUE)
                .map(|r| json!({"owner": r.addr, "thread": r.owner,
                                "pi": r.kind == cryo_image::task::pid_ref::PI_MUTEX_OWNER}))
                .collect::<Vec<_>>(),
            "seccomp": seccomp_json(img),
            "vdso": {"start": p.vdso_start, "len": p.vdso_len, "hash": p.vdso_hash},
        },
        "vmas": vmas,
        "files": files,
        "page_runs": img.page_runs().len(),
        "auxv": img.auxv().iter().map(|a| json!([a.key, a.val])).collect::<Vec<_>>(),
        "sigactions": img.sigactions().iter().map(|a| json!({
            "signo": a.signo, "name": signame(a.signo), "handler": a.handler, "flags": a.flags,
            "restorer": a.restorer, "mask": a.mask})).collect::<Vec<_>>(),
        "rlimits": img.rlimits().iter().map(|r| json!({"resource": r.resource, "cur": r.cur, "max": r.max})).collect::<Vec<_>>(),
        "fds": fds,
        "timers": img.timers().iter().collect::<Vec<_>>(),
        "itimers": img.itimers().iter().collect::<Vec<_>>(),
        "gadgets": img.gadgets(),
        "pipes": img.pipes().iter().map(|p| json!({
            "ino": p.ino, "capacity": p.size, "buffered": p.data.len,
            "inside": p.flags & pipe_flags::INSIDE != 0,
            "packet": p.flags & pipe_flags::PACKET != 0,
            "no_writer": p.flags & pipe_flags::NO_WRITER != 0,
            "no_reader": p.flags & pipe_flags::NO_READER != 0})).collect::<Vec<_>>(),
        "locks": img.locks().iter().map(|l| json!({
            "fd": (l.kind != lock_kind::FLOCK_MAPPING).then_some(l.fd),
            "file": (l.kind == lock_kind::FLOCK_MAPPING).then_some(l.fd),
            "kind": lock_kind::name(l.kind), "write": l.write != 0,
            "start": l.start, "end": (l.end != u64::MAX).then_some(l.end)})).collect::<Vec<_>>(),
        "creds": img.creds().map(|c| json!({
            "uid": c.uid, "gid": c.gid,
            "groups": img.groups().iter().map(|g| g.gid).collect::<Vec<_>>(),
            "cap_eff": c.cap_eff, "cap_prm": c.cap_prm, "cap_inh": c.cap_inh,
            "cap_bnd": c.cap_bnd, "cap_amb": c.cap_amb, "securebits": c.securebits})),
        "task": img.task(),
        "inotify": img.inotify().iter().map(|w| json!({
            "fd": fdt.get(w.desc as usize).map(|f| f.fd), "wd": w.wd, "mask": w.mask,
            "dev": w.dev, "ino": w.ino, "path": s(img, w.path)})).collect::<Vec<_>>(),
        "threads": img.threads().iter().enumerate().map(|(k, t)| json!({
            "tid": t.tid,
            "creds": img.thread_creds().get(k),
            "comm": String::from_utf8_lossy(&t.comm).trim_end_matches('\0'),
            "in_syscall": t.flags & process_flags::IN_SYSCALL != 0,
            "regs": t.regs, "raw_regs": t.raw_regs, "sig_blocked": t.sig_blocked,
            "sigaltstack": {"sp": t.sigaltstack_sp, "size": t.sigaltstack_size, "flags": t.sigaltstack_flags},
            "rseq": (t.flags & process_flags::HAS_RSEQ != 0).then(|| json!({
                "addr": t.rseq_addr, "size": t.rseq_size, "sig": t.rseq_sig, "flags": t.rseq_flags})),
            "robust_list": t.robust_list, "clear_child_tid": t.clear_child_tid,
            "sched_policy": t.sched_policy, "sched_priority": t.sched_priority, "nice": t.nice,
            "timer_slack_ns": t.timer_slack_ns})).collect::<Vec<_>>(),
        "eventfds": img.eventfds().iter().collect::<Vec<_>>(),
        "timerfds": img.timerfds().iter().collect::<Vec<_>>(),
        "signalfds": img.signalfds().iter().collect::<Vec<_>>(),
        "epoll_items": img.epoll_items().iter().collect::<Vec<_>>(),
        "fanotify": img.fanotify().iter().collect::<Vec<_>>(),
        "fanotify_marks": img.fanotify_marks().iter().map(|m| json!({
            "fd": fdt.get(m.desc as usize).map(|f| f.fd), "kind": m.kind, "mflags": m.mflags,
            "mask": m.mask, "ignored_mask": m.ignored_mask, "dev": m.dev, "ino": m.ino,
            "path": s(img, m.path)})).collect::<Vec<_>>(),
        "sockets": sockets(img),
        "tree": tree(img),
        "queued_signals": img.signals().iter().map(|q| json!({
            "thread": match (q.shared, q.thread) {
                (1, _) => None,
                (_, 0) => Some(p.pid),
                (_, k) => img.threads().get(k as usize - 1).map(|t| t.tid),
            },
            "signo": q.signo, "name": signame(q.signo), "shared": q.shared != 0,
            "code": q.info[1] as u32 as i32, "value": q.info[3]})).collect::<Vec<_>>(),
    });
    // (Past the json! macro's recursion limit.)
    v["ptys"] = json!(ptys);
    v["sysv_shm"] = json!(img.sysv_shm().iter().collect::<Vec<_>>());
    v["sysv_sem"] = json!(img.sysv_sem().iter().collect::<Vec<_>>());
    v["sysv_msq"] = json!(img.sysv_msq().iter().collect::<Vec<_>>());
    v["fd_owners"] = json!(img.fd_owners().iter().collect::<Vec<_>>());
    v["taken_stops"] = json!(img.taken_stops().iter().map(|t| t.pid).collect::<Vec<_>>());
    v["terminal"] = json!(img.terminal());
    v["aio_rings"] = json!(img.aio_rings().iter().collect::<Vec<_>>());
    v["root"] = json!(img
        .task()
        .and_then(|t| img.str(t.root))
        .filter(|r| !r.is_empty())
        .unwrap_or("/"));
    v
}

/// The processes of a tree and what they share.
fn tree(img: &Image) -> serde_json::Value {
    let root = img.process().pid;
    let procs: Vec<Value> = img
        .tree()
        .iter()
        .map(|t| {
            let zombie = t.state == cryo_image::tree::proc_state::ZOMBIE;
            json!({
                "pid": t.pid, "ppid": t.ppid, "pgid": t.pgid, "sid": t.sid,
                "state": super::tree_state(&t),
                "exit_status": zombie.then_some(t.exit_status),
                "image": (!zombie && t.pid != root).then(|| cryo_image::tree::proc_dir(t.pid)),
            })
        })
        .collect();
    json!({
        "processes": procs,
        "shared_fds": img.tree_fds().iter().collect::<Vec<_>>(),
        "shared_files": img.tree_files().iter().collect::<Vec<_>>(),
    })
}

/// The sockets table, addresses shown as text.
fn sockets(img: &Image) -> serde_json::Value {
    serde_json::Value::Array(img.sockets().iter().enumerate().map(|(i, k)| {
            let (a, n) = cryo_image::fds::sockaddr_bytes(&k.addr, k.addr_len);
            let (pa, pn) = cryo_image::fds::sockaddr_bytes(&k.peer, k.peer_len);
            json!({
            "family": k.family, "type": k.sock_type, "protocol": k.protocol,
            "state": cryo_image::fds::socket_state::name(k.state), "backlog": k.backlog,
            "address": (n > 0).then(|| cryo_image::fds::sockaddr_display(&a[..n])),
            "peer": (pn > 0).then(|| cryo_image::fds::sockaddr_display(&pa[..pn])),
            "pair": (k.pair != cryo_image::NO_INDEX).then_some(k.pair),
            "relative_name": k.flags & cryo_image::fds::socket_flags::RELATIVE != 0,
            "file_gone": k.flags & cryo_image::fds::socket_flags::GHOST != 0,
            "file_renamed": k.flags & cryo_image::fds::socket_flags::RENAMED != 0,
            "connected_to_file_gone": k.flags & cryo_image::fds::socket_flags::GHOST_PEER != 0,
            "queued_bytes": k.data.len,
            "queue_framed": k.sock_type as i32 != libc::SOCK_STREAM
                || k.flags & cryo_image::fds::socket_flags::FRAMED != 0,
            "multicast_groups": img.mcast_groups().iter().filter(|g| g.sock as usize == i)
                .map(|g| g.display()).collect::<Vec<_>>(),
            "options": img.sockopts().iter().filter(|o| o.sock as usize == i).map(|o| json!({
                "level": o.level, "name": o.name, "len": o.len, "value": o.val})).collect::<Vec<_>>(),
            "filter": img.sock_filters().iter().filter(|x| x.sock as usize == i).map(|x| json!({
                "code": x.code, "jt": x.jt, "jf": x.jf, "k": x.k})).collect::<Vec<_>>(),
            "tcp_repair": img.tcp_conns().iter().find(|t| t.sock as usize == i).map(|t| json!({
                "snd_seq": t.snd_seq, "rcv_seq": t.rcv_seq, "mss": t.mss, "options": t.options,
                "snd_wscale": t.snd_wscale, "rcv_wscale": t.rcv_wscale, "timestamp": t.timestamp,
                "window": t.window, "send_queue_bytes": t.sendq.len, "unsent_bytes": t.unsent,
                "receive_queue_bytes": t.recvq.len,
                "locked": t.options & cryo_image::fds::tcp_opts::LOCKED != 0})),
            "filter_locked": img.sock_filters().iter().any(|x| x.sock as usize == i
                && x.flags & cryo_image::fds::filter_flags::LOCKED != 0),
        })}).collect::<Vec<_>>())
}

/// The seccomp filters, oldest first: flags and instructions
/// (`[code, jt, jf, k]`), and whether they go in before the credentials.
fn seccomp_json(img: &Image) -> serde_json::Value {
    let insns: Vec<_> = img.seccomp().iter().collect();
    let mut threads: Vec<u32> = insns.iter().map(|i| i.thread).collect();
    threads.dedup();
    let chains: Vec<_> = threads
        .iter()
        .map(|&t| {
            let chain: Vec<_> = insns.iter().filter(|i| i.thread == t).collect();
            let n = chain.last().map_or(0, |i| i.filter + 1);
            let filters: Vec<_> = (0..n)
                .map(|k| {
                    let f: Vec<_> = chain.iter().filter(|i| i.filter == k).collect();
                    json!({
                        "flags": f.first().map_or(0, |i| i.flags),
                        "insns": f.iter().map(|i| [i.code, i.jt, i.jf, i.k]).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                // null: every thread shares it; 0 the main thread, k + 1
                // the k-th of `threads`.
                "thread": (t != cryo_image::task::EVERY_THREAD).then_some(t),
                "filters": filters,
            })
        })
        .collect();
    json!({
        "chains": chains,
        "before_creds": img.seccomp_before_creds(),
        "strict": img.task().is_some_and(|t| t.seccomp_strict == 1),
    })
}
