//! The semantic checks of an image ([`Image::validate`]) and the checks of
//! pages.img and sums.img against their checksums.

use crate::*;

impl<'a> Image<'a> {
    fn check_str(&self, r: StrRef, section: &'static str, index: usize) -> Result<(), ImageError> {
        if r.is_none() || self.str(r).is_some() {
            Ok(())
        } else {
            Err(ImageError::BadString {
                section,
                index: index as u64,
            })
        }
    }

    /// Semantic checks the shim relies on: mappings sorted, page aligned and
    /// disjoint; page runs inside their mapping and inside pages.img; indices
    /// and strings in range. Allocation-free and linear in the image size.
    pub fn validate(&self) -> Result<(), ImageError> {
        let p = self.process();
        let files = self.files();
        let runs = self.page_runs();
        let nfiles = files.len() as u32;
        self.check_str(p.exe, "process", 0)?;
        self.check_str(p.cwd, "process", 0)?;
        self.check_str(p.kernel, "process", 0)?;
        if let Some(t) = self.task() {
            self.check_str(t.cgroups, "task", 0)?;
        }
        if p.exe_file != NO_INDEX && p.exe_file >= nfiles {
            return Err(ImageError::BadIndex {
                section: "process",
                index: 0,
                why: "executable file index out of range",
            });
        }
        let areas = 1 + self.threads().len();
        if (p.xsave_size as usize).checked_mul(areas) != Some(self.blob(SectionKind::Xsave).len()) {
            return Err(ImageError::Invalid(
                "xsave section is not one area of xsave_size per thread",
            ));
        }
        if p.xsave_size < 576 {
            return Err(ImageError::Invalid(
                "xsave area smaller than the legacy 576 bytes",
            ));
        }
        for (i, f) in files.iter().enumerate() {
            self.check_str(f.path, "files", i)?;
        }
        let mut prev_end = 0u64;
        let mut next_run = 0u64;
        for (i, v) in self.vmas().iter().enumerate() {
            let bad = |why| ImageError::BadVma {
                index: i as u64,
                why,
            };
            if !v.start.is_multiple_of(PAGE_SIZE) || !v.end.is_multiple_of(PAGE_SIZE) {
                return Err(bad("not page aligned"));
            }
            if v.end <= v.start {
                return Err(bad("empty or inverted range"));
            }
            // (A kind of a newer version is something this one would
            // make as memory of its own: refused, 11.11.)
            if v.kind == 0 || v.kind > vma_kind::LAST {
                return Err(bad("a kind of mapping this cryo does not know"));
            }
            if v.start < prev_end {
                return Err(bad("overlaps or is out of order"));
            }
            // vsyscall lives in the kernel half; everything else must be user space.
            if v.kind != vma_kind::VSYSCALL && v.end > 0x0000_8000_0000_0000 {
                return Err(bad("outside user space"));
            }
            prev_end = v.end;
            if v.file != NO_INDEX && v.file >= nfiles {
                return Err(bad("file index out of range"));
            }
            self.check_str(v.name, "vmas", i)?;
            if v.first_run as u64 != next_run {
                return Err(bad("page runs not in order"));
            }
            let last = v.first_run as u64 + v.run_count as u64;
            if last > runs.len() as u64 {
                return Err(bad("page run range out of bounds"));
            }
            next_run = last;
            let mut run_prev = v.start;
            for j in v.first_run as usize..last as usize {
                let r = runs.get(j).ok_or(bad("page run missing"))?;
                let rbad = |why| ImageError::BadPageRun {
                    index: j as u64,
                    why,
                };
                if r.npages == 0 || !r.vaddr.is_multiple_of(PAGE_SIZE) {
                    return Err(rbad("empty or unaligned"));
                }
                let rend = r
                    .vaddr
                    .checked_add(r.len())
                    .ok_or(rbad("address overflow"))?;
                if r.vaddr < run_prev || rend > v.end {
                    return Err(rbad("outside its mapping or out of order"));
                }
                run_prev = rend;
                match r.kind {
                    run_kind::DATA => {
                        let e = r
                            .offset
                            .checked_add(r.len())
                            .ok_or(rbad("offset overflow"))?;
                        if !r.offset.is_multiple_of(PAGE_SIZE) || e > self.header.pages_len {
                            return Err(rbad("data outside pages.img"));
                        }
                    }
                    run_kind::ZERO => {}
                    _ => return Err(rbad("unknown kind")),
                }
            }
        }
        if next_run != runs.len() as u64 {
            return Err(ImageError::Invalid("page runs not owned by any mapping"));
        }
        if self.page_sums().len() as u64 != sum_blocks(self.header.pages_len) {
            return Err(ImageError::Invalid(
                "page_sums does not cover pages.img (one block per 2 MiB)",
            ));
        }
        for (i, a) in self.sigactions().iter().enumerate() {
            if a.signo == 0 || a.signo > 64 {
                return Err(ImageError::BadIndex {
                    section: "sigactions",
                    index: i as u64,
                    why: "signal number out of range",
                });
            }
        }
        if let Some(g) = self.gadgets() {
            // Each inside one executable mapping (the shim jumps there).
            for (addr, len) in [
                (g.syscall_ret, gadget::SYSCALL_RET_MAX),
                (g.sigreturn, gadget::SIGRETURN_MAX),
            ] {
                let inside = self.vmas().iter().any(|v| {
                    v.prot & prot::EXEC != 0
                        && v.kind != vma_kind::VSYSCALL
                        && addr >= v.start
                        && addr.saturating_add(len as u64) <= v.end
                });
                if !inside {
                    return Err(ImageError::BadIndex {
                        section: "gadgets",
                        index: 0,
                        why: "address outside an executable mapping",
                    });
                }
            }
        }
        let fdt = self.fds();
        let npipes = self.pipes().len() as u32;
        for (i, f) in fdt.iter().enumerate() {
            self.check_str(f.target, "fds", i)?;
            let bad = |why| ImageError::BadIndex {
                section: "fds",
                index: i as u64,
                why,
            };
            // (A file in flight is held above the process's fds, never at
            // 0-2, which a restore gives the invoker's.)
            let flying_ok = f.in_flight == 0 || (f.in_flight == 1 && f.fd > 2);
            if f.fd < 0 || (f.file != NO_INDEX && f.file >= nfiles) || !flying_ok {
                return Err(bad("bad fd number, file index or in-flight mark"));
            }
            // The description's first fd comes first and names itself.
            let first = fdt.get(f.desc as usize);
            if f.desc as usize > i || first.is_none_or(|d| d.desc != f.desc) {
                return Err(bad("bad open file description index"));
            }
            let objects = match f.kind {
                fd_kind::PIPE | fd_kind::FIFO => Some(npipes),
                fd_kind::EVENTFD => Some(self.eventfds().len() as u32),
                fd_kind::TIMERFD => Some(self.timerfds().len() as u32),
                fd_kind::SIGNALFD => Some(self.signalfds().len() as u32),
                fd_kind::SOCKET => Some(self.sockets().len() as u32),
                fd_kind::PTY => Some(self.ptys().len() as u32),
                _ => None,
            };
            let ok = match objects {
                // A pidfd's object is a PID.
                _ if f.kind == fd_kind::PIDFD => f.object != 0,
                Some(n) => f.object < n,
                None => f.object == NO_INDEX,
            };
            if !ok {
                return Err(bad("bad index of its kind's state"));
            }
        }
        let nsocks = self.sockets().len() as u32;
        for (i, s) in self.sockets().iter().enumerate() {
            let ok = (s.pair == NO_INDEX || (s.pair < nsocks && s.pair != i as u32))
                && s.shutdown <= 3
                && s.addr_len <= 128
                && s.peer_len <= 128
                && s.flags & !crate::fds::socket_flags::ALL == 0;
            // Connected to a ghost of the process (that socket is one), or
            // of another process of the tree (NO_INDEX).
            let ghost_peer = s.flags & crate::fds::socket_flags::GHOST_PEER == 0
                || (s.state == crate::fds::socket_state::CONNECTED
                    && (s.pair == NO_INDEX
                        || self
                            .sockets()
                            .get(s.pair as usize)
                            .is_some_and(|g| g.flags & crate::fds::socket_flags::GHOST != 0)));
            if !(ok && ghost_peer) {
                return Err(ImageError::BadIndex {
                    section: "sockets",
                    index: i as u64,
                    why: "bad pair index, shutdown, address length or flags",
                });
            }
        }
        // Each attach of System V memory: page aligned, and exactly the
        // SYSV mappings from its start (so the shim's shmat covers them).
        let vmas = self.vmas();
        for (i, s) in self.sysv_shm().iter().enumerate() {
            let end = s
                .size
                .div_ceil(PAGE_SIZE)
                .saturating_mul(PAGE_SIZE)
                .saturating_add(s.start);
            let covered = s.start.is_multiple_of(PAGE_SIZE)
                && s.size > 0
                && s.id >= 0
                && s.flags & !7 == 0
                && s.data.len <= s.size
                && vmas
                    .iter()
                    .any(|v| v.start == s.start && v.kind == crate::vma_kind::SYSV && v.pgoff == 0)
                && vmas
                    .iter()
                    .filter(|v| v.start >= s.start && v.start < end)
                    .all(|v| {
                        v.kind == crate::vma_kind::SYSV
                            && v.end <= end
                            && v.pgoff == v.start - s.start
                    })
                && vmas
                    .iter()
                    .filter(|v| v.start >= s.start && v.start < end)
                    .map(|v| v.len())
                    .sum::<u64>()
                    == end - s.start;
            if !covered {
                return Err(ImageError::BadIndex {
                    section: "sysv_shm",
                    index: i as u64,
                    why: "not the System V mappings at its address",
                });
            }
        }
        // System V semaphore sets and message queues: each id once, the
        // blobs of the sizes their records say (the messages' layout is
        // checked where they are read).
        for (i, s) in self.sysv_sem().iter().enumerate() {
            let dup = self.sysv_sem().iter().take(i).any(|o| o.id == s.id);
            if s.id < 0 || dup || s.nsems == 0 || s.values.len != 2 * u64::from(s.nsems) {
                return Err(ImageError::BadIndex {
                    section: "sysv_sem",
                    index: i as u64,
                    why: "bad id, repeated id, or values not two bytes per semaphore",
                });
            }
        }
        for (i, q) in self.sysv_msq().iter().enumerate() {
            let dup = self.sysv_msq().iter().take(i).any(|o| o.id == q.id);
            if q.id < 0 || dup || (q.count == 0) != (q.messages.len == 0) {
                return Err(ImageError::BadIndex {
                    section: "sysv_msq",
                    index: i as u64,
                    why: "bad id, repeated id, or messages not as counted",
                });
            }
        }
        for (i, t) in self.taken_stops().iter().enumerate() {
            let dup = self.taken_stops().iter().take(i).any(|o| o.pid == t.pid);
            if t.pid == 0 || t.pid > i32::MAX as u32 || dup || t.pid == self.process().pid {
                return Err(ImageError::BadIndex {
                    section: "taken_stops",
                    index: i as u64,
                    why: "no PID, a repeated one, or the process's own",
                });
            }
        }
        if let Some(t) = self.terminal() {
            if t.fd > 2 || t.flags != 0 {
                return Err(ImageError::BadIndex {
                    section: "terminal",
                    index: 0,
                    why: "not at fds 0-2, or unknown flags",
                });
            }
        }
        // AIO contexts: one ring record per AIO mapping, of its size, a
        // ring the kernel makes (events filling its pages), head and
        // tail in it, every event stored, no pages of memory.
        let rings = self.aio_rings();
        for (i, r) in rings.iter().enumerate() {
            use crate::fds::{AIO_EVENT, AIO_RING_HEADER};
            let one = vmas
                .iter()
                .filter(|v| v.kind == crate::vma_kind::AIO && v.start == r.start)
                .count()
                == 1;
            let ok = one
                && r.start.is_multiple_of(PAGE_SIZE)
                && r.len.is_multiple_of(PAGE_SIZE)
                && r.len > AIO_RING_HEADER
                && u64::from(r.nr) == (r.len - AIO_RING_HEADER) / AIO_EVENT
                && r.head < r.nr
                && r.tail < r.nr
                && r.flags == 0
                && r.events.len == r.len - AIO_RING_HEADER
                && vmas
                    .iter()
                    .any(|v| v.start == r.start && v.end == r.start.saturating_add(r.len))
                && !rings.iter().take(i).any(|o| o.start == r.start);
            if !ok {
                return Err(ImageError::BadIndex {
                    section: "aio_rings",
                    index: i as u64,
                    why: "not a ring the kernel makes, or not at an AIO mapping of its size",
                });
            }
        }
        for (i, v) in vmas.iter().enumerate() {
            if v.kind == crate::vma_kind::AIO
                && (v.run_count != 0 || !rings.iter().any(|r| r.start == v.start))
            {
                return Err(ImageError::BadIndex {
                    section: "vmas",
                    index: i as u64,
                    why: "an AIO ring without its context, or with pages",
                });
            }
        }
        for (i, v) in vmas.iter().enumerate() {
            if v.kind == crate::vma_kind::SYSV
                && !self
                    .sysv_shm()
                    .iter()
                    .any(|s| s.start == v.start - v.pgoff.min(v.start))
            {
                return Err(ImageError::BadIndex {
                    section: "vmas",
                    index: i as u64,
                    why: "System V memory without its segment",
                });
            }
        }
        // File handles: one per file at most (a HANDLE file's, or since
        // 11.17 a file held open by its name), within MAX_HANDLE.
        let files = self.files();
        for (i, h) in self.file_handles().iter().enumerate() {
            let ok = files.get(h.file as usize).is_some()
                && h.len as usize <= crate::fds::MAX_HANDLE
                && self
                    .file_handles()
                    .iter()
                    .filter(|g| g.file == h.file)
                    .count()
                    == 1;
            if !ok {
                return Err(ImageError::BadIndex {
                    section: "file_handles",
                    index: i as u64,
                    why: "not one file's, or longer than MAX_HANDLE_SZ",
                });
            }
        }
        for (i, f) in files.iter().enumerate() {
            if f.flags & crate::fds::file_flags::HANDLE != 0
                && !self.file_handles().iter().any(|h| h.file as usize == i)
            {
                return Err(ImageError::BadIndex {
                    section: "files",
                    index: i as u64,
                    why: "a file to reopen by handle without its handle",
                });
            }
        }
        // TCP repair: one per REPAIRED socket, each of a REPAIRED one.
        let socks = self.sockets();
        for (i, t) in self.tcp_conns().iter().enumerate() {
            let ok = socks
                .get(t.sock as usize)
                .is_some_and(|s| s.state == crate::fds::socket_state::REPAIRED)
                && t.options & !(7 | crate::fds::tcp_opts::LOCKED) == 0
                && t.snd_wscale <= 14
                && t.rcv_wscale <= 14
                && u64::from(t.unsent) <= t.sendq.len
                && self.tcp_conns().iter().filter(|u| u.sock == t.sock).count() == 1;
            if !ok {
                return Err(ImageError::BadIndex {
                    section: "tcp_conns",
                    index: i as u64,
                    why: "not one REPAIRED socket's, or bad options, scale or unsent length",
                });
            }
        }
        for (i, s) in socks.iter().enumerate() {
            if s.state == crate::fds::socket_state::REPAIRED
                && !self.tcp_conns().iter().any(|t| t.sock as usize == i)
            {
                return Err(ImageError::BadIndex {
                    section: "sockets",
                    index: i as u64,
                    why: "a repaired TCP connection without its state",
                });
            }
        }
        // Filters: each socket's instructions consecutive, sockets in
        // order, one flags value each, at most BPF_MAXINSNS.
        let nsockets = self.sockets().len() as u32;
        let mut run: Option<(u32, u32, usize)> = None;
        for (i, f) in self.sock_filters().iter().enumerate() {
            let ok = f.sock < nsockets
                && f.flags & !crate::fds::filter_flags::LOCKED == 0
                && f.code <= 0xffff
                && f.jt <= 0xff
                && f.jf <= 0xff;
            let next = match run {
                Some((s, fl, n)) if s == f.sock => {
                    (fl == f.flags && n < crate::fds::MAX_FILTER_INSNS).then_some((s, fl, n + 1))
                }
                Some((s, _, _)) => (f.sock > s).then_some((f.sock, f.flags, 1)),
                None => Some((f.sock, f.flags, 1)),
            };
            match next {
                Some(r) if ok => run = Some(r),
                _ => {
                    return Err(ImageError::BadIndex {
                        section: "sock_filters",
                        index: i as u64,
                        why: "bad socket index, flags or instruction, or a filter out of order or too long",
                    })
                }
            }
        }
        // Threads' own credentials: none, or one per thread, each with the
        // main thread's groups.
        let tc = self.thread_creds();
        if !tc.is_empty() {
            let ngroups = self.groups().len() as u32;
            if tc.len() != self.threads().len() || tc.iter().any(|c| c.ngroups != ngroups) {
                return Err(ImageError::BadIndex {
                    section: "thread_creds",
                    index: 0,
                    why: "not one per thread, or other groups than the main thread's",
                });
            }
        }
        // The frame's xsave size: unknown, or within the captured area.
        if let Some(t) = self.task() {
            let x = self.process().xsave_size as u64;
            if t.frame_xsave != 0 && !(576..=x).contains(&t.frame_xsave) {
                return Err(ImageError::Invalid(
                    "task: frame_xsave outside the captured xsave area",
                ));
            }
        }
        // Places of the PID and held mutexes: a known kind, a mutex's
        // holder one of the threads, a value the main thread's.
        for (i, r) in self.pid_refs().iter().enumerate() {
            use crate::task::pid_ref;
            let ok = match r.kind {
                pid_ref::VALUE => r.owner == 0,
                pid_ref::MUTEX_OWNER | pid_ref::PI_MUTEX_OWNER => {
                    r.owner <= self.threads().len() as u64
                }
                _ => false,
            };
            if !ok {
                return Err(ImageError::BadIndex {
                    section: "pid_refs",
                    index: i as u64,
                    why: "unknown kind, or a holder that is not one of the threads",
                });
            }
        }
        // Seccomp filters: chains in thread order (one shared by every
        // thread, alone), each numbered from 0 in order, each filter 1 to
        // BPF_MAXINSNS instructions with one flags value.
        let nthreads = self.threads().len() as u32;
        let mut run: Option<(u32, u32, u32, usize)> = None;
        let insns = self.seccomp();
        let shared = insns
            .get(0)
            .is_some_and(|i| i.thread == crate::task::EVERY_THREAD);
        for (i, f) in insns.iter().enumerate() {
            use crate::task::{seccomp_flags, MAX_SECCOMP_FILTER_INSNS};
            let ok = f.flags & !seccomp_flags::ALL == 0
                && f.code <= 0xffff
                && f.jt <= 0xff
                && f.jf <= 0xff
                && (f.thread == crate::task::EVERY_THREAD) == shared
                && (shared || f.thread <= nthreads);
            let next = match run {
                Some((t, n, fl, len)) if t == f.thread && n == f.filter => {
                    (fl == f.flags && len < MAX_SECCOMP_FILTER_INSNS).then_some((t, n, fl, len + 1))
                }
                Some((t, n, _, _)) if t == f.thread => {
                    (f.filter == n + 1).then_some((t, f.filter, f.flags, 1))
                }
                Some((t, _, _, _)) => {
                    (f.thread > t && f.filter == 0).then_some((f.thread, 0, f.flags, 1))
                }
                None => (f.filter == 0).then_some((f.thread, 0, f.flags, 1)),
            };
            match next {
                Some(r) if ok => run = Some(r),
                _ => {
                    return Err(ImageError::BadIndex {
                        section: "seccomp",
                        index: i as u64,
                        why:
                            "bad thread, flags or instruction, or a filter out of order or too long",
                    })
                }
            }
        }
        let nfds = self.fds().len() as u32;
        for (i, o) in self.fd_owners().iter().enumerate() {
            if o.desc >= nfds
                || !(0..=2).contains(&o.kind)
                || o.pid < 0
                || !(0..=64).contains(&o.sig)
            {
                return Err(ImageError::BadIndex {
                    section: "fd_owners",
                    index: i as u64,
                    why: "no such fd, owner kind or signal",
                });
            }
        }
        for (i, t) in self.ptys().iter().enumerate() {
            // A line discipline's buffer holds at most 4096 bytes.
            if t.input.len > 4096 || t.output.len > 4096 {
                return Err(ImageError::BadIndex {
                    section: "ptys",
                    index: i as u64,
                    why: "more queued bytes than a terminal holds",
                });
            }
        }
        let tree = self.tree();
        for (i, t) in tree.iter().enumerate() {
            // The root first (this process), every other after its parent.
            let ok = if i == 0 {
                t.pid == self.process().pid && t.state == crate::tree::proc_state::LIVE
            } else {
                t.state <= crate::tree::proc_state::ZOMBIE
                    && t.pid != 0
                    && tree.iter().take(i).any(|p| p.pid == t.ppid)
                    && !tree.iter().take(i).any(|p| p.pid == t.pid)
            };
            if !ok {
                return Err(ImageError::BadIndex {
                    section: "tree",
                    index: i as u64,
                    why: "not after its parent, a duplicate, or a bad state",
                });
            }
        }
        for (i, t) in self.tree_fds().iter().enumerate() {
            if !tree.iter().any(|p| p.pid == t.pid) || t.fd < 0 || t.pipe_end > 1 {
                return Err(ImageError::BadIndex {
                    section: "tree_fds",
                    index: i as u64,
                    why: "a process not in the tree, or a bad fd",
                });
            }
        }
        for (i, t) in self.tree_files().iter().enumerate() {
            if !tree.iter().any(|p| p.pid == t.pid) {
                return Err(ImageError::BadIndex {
                    section: "tree_files",
                    index: i as u64,
                    why: "a process not in the tree",
                });
            }
        }
        for (i, o) in self.sockopts().iter().enumerate() {
            if o.sock >= nsocks || o.len > 16 {
                return Err(ImageError::BadIndex {
                    section: "sockopts",
                    index: i as u64,
                    why: "bad socket index or length",
                });
            }
        }
        for (i, g) in self.mcast_groups().iter().enumerate() {
            let family = g.family as i32;
            if g.sock >= nsocks || !(family == 2 || family == 10) || g.dev[15] != 0 {
                return Err(ImageError::BadIndex {
                    section: "mcast_groups",
                    index: i as u64,
                    why: "bad socket index, family or device name",
                });
            }
        }
        for (i, b) in self.blobs().enumerate() {
            let end = b.off.checked_add(b.pages() * PAGE_SIZE);
            if !b.off.is_multiple_of(PAGE_SIZE) || end.is_none_or(|e| e > self.header.pages_len) {
                return Err(ImageError::BadIndex {
                    section: "pipes/extents/sockets/ptys",
                    index: i as u64,
                    why: "stored bytes outside pages.img",
                });
            }
        }
        let next = self.extents().len() as u64;
        for (i, f) in files.iter().enumerate() {
            if f.first_extent as u64 + f.extent_count as u64 > next {
                return Err(ImageError::BadIndex {
                    section: "files",
                    index: i as u64,
                    why: "extent range out of bounds",
                });
            }
        }
        for (i, l) in self.locks().iter().enumerate() {
            let held = if l.kind == crate::fds::lock_kind::FLOCK_MAPPING {
                // (A file index: a mapped file's.)
                self.vmas()
                    .iter()
                    .any(|v| v.file == l.fd as u32 && l.fd >= 0)
            } else {
                fdt.iter().any(|f| f.fd == l.fd)
            };
            if !held || l.end < l.start || !(1..=5).contains(&l.kind) {
                return Err(ImageError::BadIndex {
                    section: "locks",
                    index: i as u64,
                    why: "lock on an fd the image does not have, or an empty range",
                });
            }
        }
        if let Some(c) = self.creds() {
            if c.ngroups as usize != self.groups().len() {
                return Err(ImageError::Invalid(
                    "creds: group count differs from 'groups'",
                ));
            }
        }
        for (i, w) in self.inotify().iter().enumerate() {
            self.check_str(w.path, "inotify", i)?;
            if fdt
                .get(w.desc as usize)
                .is_none_or(|f| f.kind != fd_kind::INOTIFY)
                || w.wd <= 0
                || w.handle_len as usize > crate::fds::MAX_HANDLE
            {
                return Err(ImageError::BadIndex {
                    section: "inotify",
                    index: i as u64,
                    why: "watch of no inotify fd, a bad watch descriptor or too long a file handle",
                });
            }
        }
        let is_fanotify = |desc: u32| {
            fdt.get(desc as usize)
                .is_some_and(|f| f.kind == fd_kind::FANOTIFY && f.desc == desc)
        };
        for (i, g) in self.fanotify().iter().enumerate() {
            if !is_fanotify(g.desc) {
                return Err(ImageError::BadIndex {
                    section: "fanotify",
                    index: i as u64,
                    why: "group of no fanotify fd",
                });
            }
        }
        for (i, m) in self.fanotify_marks().iter().enumerate() {
            self.check_str(m.path, "fanotify_marks", i)?;
            if !is_fanotify(m.desc)
                || !(1..=3).contains(&m.kind)
                || m.handle_len as usize > crate::fds::MAX_HANDLE
            {
                return Err(ImageError::BadIndex {
                    section: "fanotify_marks",
                    index: i as u64,
                    why:
                        "mark of no fanotify fd, of an unknown kind, or with too long a file handle",
                });
            }
        }
        for (i, e) in self.epoll_items().iter().enumerate() {
            let on_epoll = fdt
                .get(e.desc as usize)
                .is_some_and(|f| f.kind == fd_kind::EPOLL);
            // Registered through its own number, or (`via`) through
            // another fd of the image, at a number that is not negative,
            // or by another process of the tree.
            let reachable = if e.via == 0 {
                fdt.iter().any(|f| f.fd == e.tfd)
            } else if e.via == crate::fds::EPOLL_VIA_ELSEWHERE {
                e.tfd >= 0
            } else {
                e.tfd >= 0 && fdt.iter().any(|f| f.fd as i64 == i64::from(e.via) - 1)
            };
            if !on_epoll || !reachable {
                return Err(ImageError::BadIndex {
                    section: "epoll_items",
                    index: i as u64,
                    why: "item of no epoll fd, or on an fd the image does not have",
                });
            }
        }
        let nthreads = self.threads().len() as u32;
        for (i, q) in self.signals().iter().enumerate() {
            if q.signo == 0 || q.signo > 64 || q.shared > 1 || q.thread > nthreads {
                return Err(ImageError::BadIndex {
                    section: "signals",
                    index: i as u64,
                    why: "signal number out of range",
                });
            }
        }
        self.validate_task_values()
    }

    /// Values the shim hands to the kernel as they are, which the kernel
    /// would refuse past the point of no return: an image whose
    /// checksums were made again over a changed value (a sweep of stop
    /// 52: a dry run said yes, and the shim died on setitimer,
    /// PR_SET_SECUREBITS, PR_SET_MM_MAP or rseq).
    fn validate_task_values(&self) -> Result<(), ImageError> {
        for t in self.itimers().iter() {
            let usec_ok = |u: i64| (0..1_000_000).contains(&u);
            if !(0..=2).contains(&t.which)
                || t.interval_sec < 0
                || t.value_sec < 0
                || !usec_ok(t.interval_usec)
                || !usec_ok(t.value_usec)
            {
                return Err(ImageError::Invalid(
                    "an interval timer out of range (its microseconds, seconds or kind)",
                ));
            }
        }
        // SECBIT_NOROOT .. SECBIT_EXEC_DENY_INTERACTIVE_LOCKED.
        if self.creds().is_some_and(|c| c.securebits & !0xfff != 0) {
            return Err(ImageError::Invalid("securebits the kernel does not have"));
        }
        // What prctl(PR_SET_MM_MAP) checks: in the address space, each
        // pair in order.
        let m = self.process().mm;
        let fields = [
            m.start_code,
            m.end_code,
            m.start_data,
            m.end_data,
            m.start_brk,
            m.brk,
            m.start_stack,
            m.arg_start,
            m.arg_end,
            m.env_start,
            m.env_end,
        ];
        let in_space = fields.iter().all(|&a| a != 0 && a < 1 << 56);
        let ordered = m.start_code < m.end_code
            && m.start_data <= m.end_data
            && m.start_brk <= m.brk
            && m.arg_start <= m.arg_end
            && m.env_start <= m.env_end;
        if !in_space || !ordered {
            return Err(ImageError::Invalid(
                "the memory layout fields (code, data, brk, arguments, environment) out of order or out of the address space",
            ));
        }
        // A registered rseq area: aligned, and inside writable memory of
        // the image (the kernel's registration reads and writes it).
        let p = self.process();
        let areas = core::iter::once((p.rseq_addr, p.rseq_size))
            .chain(self.threads().iter().map(|t| (t.rseq_addr, t.rseq_size)));
        for (addr, size) in areas {
            if size == 0 {
                continue;
            }
            let end = addr.checked_add(u64::from(size));
            let inside = end.is_some_and(|end| {
                self.vmas()
                    .iter()
                    .any(|v| v.start <= addr && end <= v.end && v.prot & crate::prot::WRITE != 0)
            });
            if !addr.is_multiple_of(32) || size < 32 || !inside {
                return Err(ImageError::Invalid(
                    "an rseq area not aligned, too short, or outside the image's writable memory",
                ));
            }
        }
        Ok(())
    }

    /// Check sums.img (the whole file) against the `page_sums` blocks.
    pub fn verify_sums(&self, sums: &[u8]) -> Result<(), ImageError> {
        let expected = self.header.pages_len / PAGE_SIZE * 8;
        if sums.len() as u64 != expected {
            return Err(ImageError::SumsLength {
                expected,
                actual: sums.len() as u64,
            });
        }
        for (k, b) in self.page_sums().iter().enumerate() {
            if !sum_block_ok(&b, sums_block(sums, k as u64)) {
                return Err(ImageError::SumsChecksum { block: k as u64 });
            }
        }
        Ok(())
    }

    /// Check pages.img's and sums.img's lengths, sums.img's blocks, and
    /// every stored page against its checksum. `pages` and `sums` are the
    /// whole files (e.g. mmapped).
    pub fn verify_pages(&self, pages: &[u8], sums: &[u8]) -> Result<(), ImageError> {
        if pages.len() as u64 != self.header.pages_len {
            return Err(ImageError::PagesLength {
                expected: self.header.pages_len,
                actual: pages.len() as u64,
            });
        }
        self.verify_sums(sums)?;
        // (Offsets from a damaged image may be anything: checked
        // arithmetic, and an offset past the end is a bad page.)
        let page_ok = |off: Option<u64>| {
            off.and_then(|off| {
                let end = off.checked_add(PAGE_SIZE)?;
                let data = pages.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)?;
                Some(checksum(data) == page_sum(sums, off / PAGE_SIZE)?)
            })
            .unwrap_or(false)
        };
        for b in self.blobs() {
            for p in 0..b.pages() {
                let off = b.off.checked_add(p * PAGE_SIZE);
                let ok = page_ok(off);
                let off = off.unwrap_or(u64::MAX);
                if !ok {
                    return Err(ImageError::BlobChecksum { offset: off });
                }
            }
        }
        for r in self.page_runs().iter() {
            if r.kind != run_kind::DATA {
                continue;
            }
            for p in 0..r.npages as u64 {
                if !page_ok(r.offset.checked_add(p * PAGE_SIZE)) {
                    return Err(ImageError::PageChecksum {
                        vaddr: r.vaddr.wrapping_add(p * PAGE_SIZE),
                    });
                }
            }
        }
        Ok(())
    }
}
