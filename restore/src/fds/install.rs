//! Installing the planned fds: pipes and files made, every source opened
//! and parked above the highest target, then each put at its number,
//! flock/OFD locks taken, everything else closed, and the fds the shim
//! needs put at consecutive numbers right above the program's.

use super::*;
use crate::stored;

/// Install the planned fds at their numbers, close every other fd, and
/// put the `extra` fds (for the shim) and the made files at consecutive
/// numbers above them. Returns (extra fds in order, first made file's fd).
pub fn install(
    loaded: &LoadedImage,
    img: &Image,
    plan: &Plan,
    extra: &[i32],
    verify: bool,
) -> Result<(Vec<i32>, Option<i32>), RestoreError> {
    // (Put back however install ends: the limits the restored process
    // gets are set from the image before the exec.)
    struct Back(Option<(u64, u64)>);
    impl Drop for Back {
        fn drop(&mut self) {
            if let Some((soft, hard)) = self.0 {
                let _ = sys::setrlimit(libc::RLIMIT_NOFILE, soft, hard);
            }
        }
    }
    let _back = Back(super::raise_limit_for(plan));
    let plans = &plan.fds;
    let high = plans.iter().map(|p| p.fd).max().unwrap_or(2).max(2) + 1;
    // Other ends of pairs whose queues this process sends (inherited, at
    // numbers its own fds may take): parked above them first.
    let mut peers = Vec::with_capacity(plan.peers.len());
    for &(n, ours, bits) in &plan.peers {
        peers.push((n, dup_above(ours, high)?, bits));
    }
    // 0. Pipes and stored files.
    let mut pipes = Vec::new();
    for m in &plan.pipes {
        let made = crate::pipes::make(m).map_err(|why| {
            let p = plans
                .iter()
                .find(|p| matches!(p.source, Source::PipeEnd { pipe, .. } if pipe == m.index));
            match p {
                Some(p) => fd_err(p, why),
                None => RestoreError::Sys {
                    what: why.to_string(),
                    source: std::io::Error::other("pipe"),
                },
            }
        })?;
        pipes.push(made);
    }
    let mut stored = Vec::new();
    for &idx in &plan.stored {
        let made = match plan.premade.iter().find(|(i, _)| *i == idx) {
            Some(&(_, ours)) => sys::adopt(dup_above(ours, high)?),
            None => stored::make(loaded, img, idx, verify)?,
        };
        stored.push((idx, made));
    }
    // 1. Every source, opened and parked above the highest target.
    let mut parked: Vec<i32> = Vec::with_capacity(plans.len());
    // (The processes made to end for dead pidfds: waited for below.)
    let mut dead: Vec<(u64, i32)> = Vec::new();
    let mut given: Vec<u32> = Vec::new();
    let mut remade: Vec<(String, i32)> = Vec::new();
    let mut pairs = Vec::new();
    // Socket pairs first: one that was connected through a named socket
    // is connected again through a listener made for the moment at that
    // name, which the program's own listener, made later, then takes over.
    let mut early: Vec<(usize, i32)> = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        if let Source::Socket { sock, flags } = &p.source {
            if crate::sockets::is_pair(img, *sock) {
                let fd = crate::sockets::make(loaded, img, p, *sock, *flags, &mut pairs, verify)?;
                early.push((k, park(fd, high)?));
            }
        }
    }
    for (k, p) in plans.iter().enumerate() {
        let src = match &p.source {
            Source::Keep => -1,
            Source::SameAs(i) => parked[*i],
            Source::Inherit(ours) => dup_above(*ours, high)?,
            Source::Open {
                path,
                flags,
                pos,
                dev_ino,
                rdev,
            } => park(open_path(p, path, *flags, *pos, *dev_ino, *rdev)?, high)?,
            Source::Handle { .. } | Source::Relinked { .. } => park(open_removed(p)?, high)?,
            Source::PipeEnd { pipe, write, flags } => {
                let m = pipes
                    .iter()
                    .find(|m| m.index == *pipe)
                    .expect("every planned pipe was made");
                let end = if *write {
                    m.write.as_ref()
                } else {
                    Some(&m.read)
                };
                let Some(end) = end else {
                    return Err(fd_err(p, "its pipe's write end was not made"));
                };
                // Another description of an end we already installed
                // (opened again through /proc, as the program did).
                let first_of_end = parked.iter().zip(plans).any(|(_, q)| {
                    matches!(q.source, Source::PipeEnd { pipe: pp, write: ww, .. } if pp == *pipe && ww == *write)
                });
                let d = if first_of_end {
                    let path = format!("/proc/self/fd/{}", end.as_raw_fd());
                    let f = std::fs::OpenOptions::new()
                        .read(!*write)
                        .write(*write)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&path)
                        .map_err(|e| fd_err(p, e))?;
                    park(f.into_raw_fd(), high)?
                } else {
                    dup_above(end.as_raw_fd(), high)?
                };
                set_status_flags(d, *flags).map_err(|e| fd_err(p, e))?;
                d
            }
            Source::FifoReadWrite { pipe, flags } => {
                let m = pipes
                    .iter()
                    .find(|m| m.index == *pipe)
                    .expect("every planned pipe was made");
                let path = format!("/proc/self/fd/{}", m.read.as_raw_fd());
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                    .map_err(|e| fd_err(p, e))?;
                let d = park(f.into_raw_fd(), high)?;
                set_status_flags(d, *flags).map_err(|e| fd_err(p, e))?;
                d
            }
            Source::Stored { file, flags, pos }
                if *flags & libc::O_ACCMODE == libc::O_RDWR
                    && !given.contains(file)
                    && !plan.premade.iter().any(|(i, _)| i == file) =>
            {
                // The made file itself (opened read-write) for the first
                // read-write description: a memfd reopened for writing
                // through /proc counts as one more writer, and the
                // program's own execveat of it then fails (ETXTBSY).
                given.push(*file);
                let (_, fd) = stored
                    .iter()
                    .find(|(i, _)| i == file)
                    .expect("every planned file was made");
                let d = dup_above(fd.as_raw_fd(), high)?;
                set_status_flags(d, *flags).map_err(|e| fd_err(p, e))?;
                seek(p, d, *pos)?;
                d
            }
            Source::Stored { file, flags, pos } => {
                let (_, fd) = stored
                    .iter()
                    .find(|(i, _)| i == file)
                    .expect("every planned file was made");
                park(
                    crate::stored::reopen(p, fd.as_raw_fd(), *flags, *pos)?,
                    high,
                )?
            }
            Source::Anon {
                kind,
                object,
                flags,
            } => park(crate::anonfds::make(img, p, *kind, *object, *flags)?, high)?,
            // (A stand-in, /dev/null, until `take_from_peers`.)
            Source::FromPeer { .. } => park(
                open_path(p, "/dev/null", libc::O_RDONLY, 0, None, None)?,
                high,
            )?,
            Source::Socket { sock, flags } => match early.iter().find(|(j, _)| *j == k) {
                Some(&(_, fd)) => fd,
                None => park(
                    crate::sockets::make(loaded, img, p, *sock, *flags, &mut pairs, verify)?,
                    high,
                )?,
            },
            Source::DeadPidfd { process, flags } => park(
                dead_pidfd(p, &mut dead, *process, *flags)?.into_raw_fd(),
                high,
            )?,
            Source::Proc {
                path,
                pid,
                start,
                flags,
                pos,
            } => {
                let own = img.process().pid as i32;
                park(
                    super::open_proc(p, path, *pid, *start, own, *flags, *pos)?,
                    high,
                )?
            }
            Source::Namespace { kind, ino, flags } => {
                let path = super::namespace_path(kind, *ino).map_err(|e| fd_err(p, e))?;
                park(open_path(p, &path, *flags, 0, None, None)?, high)?
            }
            Source::HungUpTty { dev, rdev, flags } => {
                park(crate::ptys::hung_up(p, (*dev, *rdev), *flags)?, high)?
            }
            Source::MQueue { name, flags, sizes } => {
                let fd = super::mqueue_check(name, *flags, *sizes).map_err(|e| fd_err(p, e))?;
                park(fd.into_raw_fd(), high)?
            }
            Source::Pidfd { pid, flags, start } => {
                let pid = if *start != 0 {
                    *pid
                } else {
                    crate::tree::pid_now(*pid, img.process().pid as i32)
                };
                let fd = sys::pidfd_open_flags(pid, flags & libc::O_NONBLOCK)
                    .map_err(|e| fd_err(p, Why::sys(format!("pidfd_open({pid})"), e)))?;
                // (After the open, which holds the process: the one
                // captured, not another that took its PID since.)
                if *start != 0 && cryo_image::fds::proc_start_time(pid) != Some(*start) {
                    return Err(fd_err(
                        p,
                        format!("process {pid}, outside the captured tree, is gone (or its PID now another's)"),
                    ));
                }
                park(fd.into_raw_fd(), high)?
            }
            Source::Inotify { desc, flags } => {
                park(crate::inotify::make(img, p, *desc, *flags, &stored)?, high)?
            }
            Source::Fanotify { desc, flags } => {
                park(crate::fanotify::make(img, p, *desc, *flags)?, high)?
            }
            Source::Remade {
                path,
                mode,
                rdev,
                flags,
                link,
            } => {
                // One object per removed path: another fd on it (its own
                // description) opens the one already made.
                let raw = match remade.iter().find(|(q, _)| q == path) {
                    Some((_, first)) => {
                        let c = CString::new(format!("/proc/self/fd/{first}")).unwrap_or_default();
                        sys::open(&c, *flags | libc::O_CLOEXEC)
                            .map_err(|e| fd_err(p, e))?
                            .into_raw_fd()
                    }
                    None => stored::make_removed(p, path, *mode, *rdev, *flags, link.as_deref())?,
                };
                let d = park(raw, high)?;
                if !remade.iter().any(|(q, _)| q == path) {
                    remade.push((path.clone(), d));
                }
                d
            }
        };
        parked.push(src);
    }
    let mut extra: Vec<i32> = extra
        .iter()
        .map(|&fd| dup_above(fd, high))
        .collect::<Result<Vec<i32>, _>>()?;
    let nextra = extra.len();
    for (_, fd) in &stored {
        extra.push(dup_above(fd.as_raw_fd(), high)?);
    }
    // Everything made is parked (dup'ed) now: close the originals before
    // installing, as they may sit at numbers the program's fds take.
    drop(pipes);
    drop(stored);
    // Hung-up terminals hang up: their masters close.
    crate::ptys::hang_up();

    // The processes of dead pidfds end now (waited for: no child of
    // ours is left for the restored program to find).
    for &(_, pid) in &dead {
        let _ = sys::waitpid(pid, libc::__WALL);
    }
    // 2. Down to their numbers.
    for (p, &src) in plans.iter().zip(&parked) {
        if src >= 0 {
            sys::dup2(src, p.fd).map_err(|e| e.into_sys(format!("installing fd {}", p.fd)))?;
        }
        // Every fd crosses the exec of the shim, which sets FD_CLOEXEC
        // again where the image has it (the exec would close them).
        let _ = sys::clear_cloexec(p.fd);
    }
    // 3. What the epoll instances watch (by fd number: every fd is at its
    //    own now), flock and OFD locks on the installed descriptions.
    crate::anonfds::fill_epolls(img, plan)?;
    for l in &plan.locks {
        let l = cryo_image::fds::Lock {
            fd: split_copy(img, l.fd),
            ..*l
        };
        crate::locks::take(plans, &l)?;
    }
    // Who gets SIGIO (after the leases, whose taking set their holder).
    for o in img.fd_owners().iter() {
        let Some(f) = img.fds().get(o.desc as usize) else {
            continue;
        };
        let own = img.process().pid as i32;
        let pid = match o.kind {
            // (The process's own group, as capture allowed.)
            2 if o.pid != 0 => sys::getpgid(0).unwrap_or(0),
            _ if o.pid != 0 => crate::tree::pid_now(o.pid, own),
            _ => 0,
        };
        if o.start != 0 && cryo_image::fds::proc_start_time(pid) != Some(o.start) {
            return Err(RestoreError::Fd {
                fd: f.fd,
                what: "SIGIO owner".into(),
                why: Why::Said(format!(
                    "process {pid}, which got its SIGIO, is no longer the one captured"
                )),
            });
        }
        let at = split_copy(img, f.fd);
        sys::set_owner(at, o.kind, pid, o.sig).map_err(|e| RestoreError::Fd {
            fd: at,
            what: "SIGIO owner".into(),
            why: Why::sys(format!("F_SETOWN_EX to {pid}, F_SETSIG {}", o.sig), e),
        })?;
    }
    // Connections that waited in a listener, waiting there again (before
    // a socket in flight among them is closed below).
    // (Not one given to us already connected: made by a tree's restore,
    // or --inherit-fd.)
    let given: Vec<i32> = plans
        .iter()
        .filter(|p| matches!(p.source, Source::Inherit(_)))
        .map(|p| p.fd)
        .collect();
    crate::sockets::connect_waiting(img, &given)?;
    // Datagrams that waited in named sockets, sent to them again.
    crate::sockets::send_datagrams(loaded, img, verify)?;
    // Queues with files in flight, sent again now that those files are
    // at their numbers; the numbers are closed then.
    crate::sockets::send_in_flight(loaded, img, verify, &peers)?;

    // 4. Everything else goes (parked copies, our own files, inherited
    //    extras), except the fds for the shim.
    let keep: Vec<i32> = plans
        .iter()
        .map(|p| p.fd)
        .chain(extra.iter().copied())
        .collect();
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| crate::IntoSys::into_sys(e, "listing /proc/self/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if !keep.contains(&fd) {
            sys::close(fd);
        }
    }
    // 5. The shim's fds at consecutive numbers right above the program's:
    //    first out of the way, then down into place.
    let n = extra.len() as i32;
    let mut tmp = Vec::with_capacity(extra.len());
    for &fd in &extra {
        tmp.push(dup_above(fd, high + n)?);
        sys::close(fd);
    }
    let mut placed = Vec::with_capacity(tmp.len());
    for (i, fd) in tmp.into_iter().enumerate() {
        let want = high + i as i32;
        // `want` is free: everything else above the program's fds is closed.
        sys::dup2(fd, want).map_err(|e| e.into_sys("placing the shim's fds"))?;
        sys::close(fd);
        // The shim must inherit these.
        let _ = sys::clear_cloexec(want);
        placed.push(want);
    }
    let files_fd = (placed.len() > nextra).then(|| placed[nextra]);
    placed.truncate(nextra);
    Ok((placed, files_fd))
}

/// Open `path` for fd plan `p`: its flags, the same file (device and
/// inode, or device number), at `pos`. Returns our fd.
pub(crate) fn open_path(
    p: &FdPlan,
    path: &str,
    flags: i32,
    pos: u64,
    dev_ino: Option<(u64, u64)>,
    rdev: Option<u64>,
) -> Result<RawFd, RestoreError> {
    let acc = flags & libc::O_ACCMODE;
    let file = std::fs::OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(path)
        .map_err(|e| fd_err(p, e))?;
    let md = file.metadata().map_err(|e| fd_err(p, e))?;
    if dev_ino.is_some_and(|(d, i)| (md.dev(), md.ino()) != (d, i))
        || rdev.is_some_and(|r| md.rdev() != r)
    {
        return Err(fd_err(p, "replaced while restoring"));
    }
    seek(p, file.as_raw_fd(), pos)?;
    Ok(file.into_raw_fd())
}

/// A file whose opened name was removed but that has another link
/// (`Source::Handle`: elsewhere, found by its file handle;
/// `Source::Relinked`: beside it, by that name), opened with its flags at
/// its offset: at its removed name, linked there for the moment and
/// removed again, so that the fd reads `NAME (deleted)` as the captured
/// one did; through the other link itself where that name is taken or its
/// directory gone.
pub(crate) fn open_removed(p: &FdPlan) -> Result<RawFd, RestoreError> {
    let (by, name, flags, pos, dev_ino) = match &p.source {
        Source::Handle {
            dev,
            ino,
            kind,
            bytes,
            name,
            flags,
            pos,
        } => (
            sys::open_by_handle(*dev, *kind, bytes).map_err(|e| fd_err(p, e))?,
            name,
            *flags,
            *pos,
            (*dev, *ino),
        ),
        Source::Relinked {
            other,
            name,
            flags,
            pos,
            dev_ino,
        } => (
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(other)
                .map(std::os::fd::OwnedFd::from)
                .map_err(|e| fd_err(p, Why::sys(other, e)))?,
            name,
            *flags,
            *pos,
            *dev_ino,
        ),
        _ => return Err(fd_err(p, "not a file found by another link")),
    };
    if let Some(c) = std::ffi::CString::new(name.as_str())
        .ok()
        .filter(|_| !name.is_empty())
    {
        if sys::link_fd(by.as_raw_fd(), &c).is_ok() {
            let r = open_path(p, name, flags, pos, Some(dev_ino), None);
            let removed = sys::unlink(&c);
            let fd = r?;
            if let Err(e) = removed {
                sys::close(fd);
                return Err(fd_err(p, Why::sys(format!("removing {name} again"), e)));
            }
            return Ok(fd);
        }
    }
    let path = format!("/proc/self/fd/{}", by.as_raw_fd());
    open_path(p, &path, flags, pos, Some(dev_ino), None)
}

/// A pidfd of the ended process captured as `process` (its pidfs inode):
/// on the child made to end for it in `ended` (capture inode, PID), made
/// now if there is none yet. Such a child sends no SIGCHLD, and nothing
/// reaps it until its caller waits for every one of `ended` (`__WALL`),
/// once all their pidfds are open.
pub(crate) fn dead_pidfd(
    p: &FdPlan,
    ended: &mut Vec<(u64, i32)>,
    process: u64,
    flags: i32,
) -> Result<std::os::fd::OwnedFd, RestoreError> {
    let pid = match ended.iter().find(|(k, _)| *k == process) {
        Some(&(_, pid)) => pid,
        None => {
            let pid = sys::ended_child().map_err(|e| e.into_sys("clone3 of a child to end"))?;
            ended.push((process, pid));
            pid
        }
    };
    // (An ended, not yet waited-for child: pidfd_open works.)
    sys::pidfd_open_flags(pid, flags & libc::O_NONBLOCK)
        .map_err(|e| fd_err(p, Why::sys("pidfd_open of an ended process", e)))
}

/// Move a made fd (ours) above the highest target number: its duplicate
/// there; the original is closed.
fn park(raw: RawFd, high: i32) -> Result<i32, RestoreError> {
    let d = dup_above(raw, high);
    sys::close(raw);
    d
}

/// Where what belongs to the description at fd `n` is set: `n`, unless
/// `n` is one of fds 0-2 that is ours now (not the captured file) while
/// the description's first copy at 3 and up is that file, opened again
/// (`fds::source_of`, a tree's `Source::Keep` branch): then that copy,
/// which the program holds (a lock, a SIGIO owner, taken there and not
/// on our stdio). Told by what is open at each number now.
fn split_copy(img: &Image, n: i32) -> i32 {
    if n > 2 {
        return n;
    }
    let fds = img.fds();
    let Some(f) = fds.iter().find(|f| f.fd == n) else {
        return n;
    };
    let is_file = |fd: i32| sys::fstat(fd).is_ok_and(|st| (st.st_dev, st.st_ino) == (f.dev, f.ino));
    if is_file(n) {
        return n;
    }
    fds.iter()
        .find(|g| g.desc == f.desc && g.fd > 2)
        .filter(|g| is_file(g.fd))
        .map_or(n, |g| g.fd)
}
