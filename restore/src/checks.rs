//! Everything `cryo restore` checks before the point of no return, one
//! check per resource; each refusal is one line saying what differs.

use crate::{sys, IntoSys, RestoreError};
use cryo_image::load::LoadedImage;
use cryo_image::{vma_kind, Image, NO_INDEX, SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The shim's window must be free in the captured layout.
pub fn window(img: &Image) -> Result<(), RestoreError> {
    for v in img.vmas().iter() {
        if v.kind != vma_kind::VSYSCALL
            && v.start < SHIM_WINDOW + SHIM_WINDOW_LEN
            && v.end > SHIM_WINDOW
        {
            return Err(RestoreError::WindowOverlap {
                start: v.start,
                end: v.end,
                name: img.str(v.name).unwrap_or("").to_owned(),
            });
        }
    }
    Ok(())
}

/// The same CPU state layout (xsave size and XCR0), and AMX tile data
/// offered where the process had it (the shim asks for it again).
pub fn xsave(img: &Image) -> Result<(), RestoreError> {
    let p = img.process();
    if img
        .task()
        .is_some_and(|t| t.xcomp_perm & cryo_image::task::XCOMP_TILEDATA != 0)
        && sys::xcomp_supported() & cryo_image::task::XCOMP_TILEDATA as u64 == 0
    {
        return Err(RestoreError::XsaveDiffers {
            what: "the process had AMX tile data, which this kernel does not offer".into(),
        });
    }
    let size = sys::xsave_size() as u32;
    let xcr0 = sys::xcr0();
    if size != p.xsave_size || xcr0 != p.xcr0 {
        return Err(RestoreError::XsaveDiffers {
            what: format!(
                "xsave size {} vs {}, XCR0 {:#x} vs {:#x} here",
                p.xsave_size, size, p.xcr0, xcr0
            ),
        });
    }
    Ok(())
}

/// The same vDSO (bytes, and the vvar/vvar_vclock/vdso arrangement: the
/// same kernel). Returns the address of a `syscall` instruction in it, as
/// the restored program will have it (for the tracer).
pub fn vdso(img: &Image) -> Result<u64, RestoreError> {
    let p = img.process();
    let kernel = img.str(p.kernel).unwrap_or("?").to_owned();
    let own = sys::own_special_maps().map_err(|e| e.into_sys("reading /proc/self/maps"))?;
    let vdso = own.iter().find_map(|m| Some((m.start(), m.vdso_bytes()?)));
    let special = |name: &str| {
        own.iter()
            .find(|m| m.name() == name)
            .map(|m| (m.start(), m.end()))
    };
    if let Some(d) = cryo_image::vdso::differs(img, vdso, special) {
        return Err(RestoreError::VdsoDiffers {
            what: d.to_string(),
            kernel,
        });
    }
    // Without a vDSO the tracer injects through the program's own
    // `syscall; ret`.
    if p.vdso_len == 0 {
        return img
            .gadgets()
            .map(|g| g.syscall_ret)
            .ok_or_else(|| RestoreError::VdsoDiffers {
                what: "the process had no vDSO, and the image no `syscall; ret` code".into(),
                kernel: kernel.clone(),
            });
    }
    let bytes = vdso.map_or(&[][..], |(_, b)| b);
    bytes
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|off| p.vdso_start + off as u64)
        .ok_or_else(|| RestoreError::VdsoDiffers {
            what: "no `syscall` instruction in the vDSO".into(),
            kernel: kernel.clone(),
        })
}

/// The files behind mappings and the executable: the very same files.
pub fn mapped_files(img: &Image) -> Result<(), RestoreError> {
    let mut errs = Vec::new();
    let p = img.process();
    let mut checked = vec![false; img.files().len()];
    let mut want: Vec<u32> = img
        .vmas()
        .iter()
        .filter(|v| v.file != NO_INDEX)
        .map(|v| v.file)
        .collect();
    if p.exe_file != NO_INDEX {
        want.push(p.exe_file);
    }
    for idx in want {
        if std::mem::replace(&mut checked[idx as usize], true) {
            continue;
        }
        let f = img.files().get(idx as usize).expect("validated index");
        if f.flags & cryo_image::fds::file_flags::DELETED != 0 {
            continue; // made again from the image (fds::plan checks it)
        }
        if f.flags & cryo_image::fds::file_flags::HANDLE != 0 {
            continue; // opened by its handle (stored::make, the shim checks it)
        }
        let path = img.str(f.path).unwrap_or("").to_owned();
        if f.flags & cryo_image::fds::file_flags::KEPT != 0 && crate::stored::made_here(&path) {
            // Gone, and made again by this restore from its kept bytes
            // for another process of the tree (a sweep of stop 50: the
            // second holder took it for a file changed since capture).
            continue;
        }
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            // Made again from its kept bytes (stored::make).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && f.flags & cryo_image::fds::file_flags::KEPT != 0 =>
            {
                continue
            }
            Err(source) => {
                errs.push(RestoreError::FileMissing {
                    path: path.clone(),
                    source,
                });
                continue;
            }
        };
        let mut what = Vec::new();
        let other = md.dev() != f.dev || md.ino() != f.ino;
        if other {
            what.push("a different file now (device/inode)".to_owned());
        }
        if md.size() != f.size {
            what.push(format!("size {} → {}", f.size, md.size()));
        }
        if md.mtime() != f.mtime_sec || md.mtime_nsec() as u32 != f.mtime_nsec {
            what.push("modification time".to_owned());
        }
        if !other && !f.same_birth(crate::sys::born(&md)) {
            what.push("a different file now (made again: birth time)".to_owned());
        }
        if !what.is_empty() {
            if f.flags & cryo_image::fds::file_flags::KEPT != 0 {
                // Left by an earlier run or restore that ended without
                // removing it (Mono removes /dev/shm/mono.PID by the PID
                // it has *now*; a killed JVM leaves its hsperfdata file),
                // or changed by a user: never replaced without a word
                // (that loses the user's change). Who holds it, if anyone,
                // says which.
                let held = holders(md.dev(), md.ino());
                what.push(if held.is_empty() {
                    "no process cryo can see holds it now (a leftover? Mono, restored under another PID, leaves its /dev/shm/mono.PID behind): remove it if nothing uses it, and cryo makes it again from the image".to_owned()
                } else {
                    format!(
                        "held by {} (another restore of this image?); cryo makes it again only where it is gone",
                        held.iter()
                            .map(|p| format!("process {p} ({})", comm_of(*p)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
            errs.push(RestoreError::FileChanged {
                path,
                what: what.join(", "),
            });
        }
    }
    RestoreError::all(errs)
}

/// The processes that map or hold an fd of the file (`dev`, `ino`), as
/// far as /proc shows them (those of other users too: cryo restore runs
/// as root or as the file's owner).
pub(crate) fn holders(dev: u64, ino: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let dev_field = format!("{major:02x}:{minor:02x}");
    let ino_field = ino.to_string();
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mapped = maps.lines().any(|l| {
            let mut w = l.split_ascii_whitespace().skip(3);
            w.next() == Some(dev_field.as_str()) && w.next() == Some(ino_field.as_str())
        });
        let held = mapped
            || std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
                })
            });
        if held {
            out.push(pid);
        }
    }
    out
}

/// A process's name, for messages.
fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// POSIX timers come back with their ids (PR_TIMER_CREATE_RESTORE_IDS).
/// Every timer on a CPU-time clock names the process or one of its
/// threads (images from before stop 37 may name others: the shim's
/// timer_create would fail past the point of no return).
pub fn timers(img: &Image) -> Result<(), RestoreError> {
    if !img.timers().is_empty() && sys::timer_restore_ids().is_err() {
        return Err(RestoreError::NoTimerIds);
    }
    let pid = img.process().pid as i32;
    let mut tids = vec![pid];
    tids.extend(img.threads().iter().map(|t| t.tid as i32));
    let why: Vec<String> = img
        .timers()
        .iter()
        .filter_map(|t| {
            cryo_image::timer_clock_obstacle(t.clock, pid, &tids)
                .map(|w| format!("POSIX timer {} {w}", t.id))
        })
        .collect();
    if !why.is_empty() {
        return Err(RestoreError::Task(format!(
            "process {pid}: {}; this cryo cannot restore it (an image from an earlier version: a capture by this one refuses it)",
            why.join("; ")
        )));
    }
    Ok(())
}

/// The clocks the process saw go on here: the same boot, CLOCK_MONOTONIC
/// not behind what it saw (another time namespace), unless `allow`
/// (`--clock-jump`). Restored in another boot, its deadlines on the
/// monotonic clocks lay hours ahead: a C loop on clock_nanosleep
/// TIMER_ABSTIME, pthread_cond_timedwait, a Go ticker, node's setInterval
/// and asyncio's call_later all slept on, without a word (a sweep of stop
/// 51, in a time namespace 60 000 s behind).
pub fn clocks(img: &Image, allow: bool) -> Result<(), RestoreError> {
    let (Some(t), false) = (img.task(), allow) else {
        return Ok(());
    };
    let Some(id) = std::fs::read("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|b| cryo_image::task::parse_boot_id(&b))
    else {
        return Ok(());
    };
    match cryo_image::task::clock_jump(&t, &id, sys::monotonic_ns()) {
        Some(why) => Err(RestoreError::Task(format!(
            "process {}: {why}",
            img.process().pid
        ))),
        None => Ok(()),
    }
}

/// Every AIO context can be made again here, all at once, with a ring of
/// its size (the kernel sizes a ring by the machine's possible CPUs;
/// fs.aio-max-nr bounds their sum) that takes as many requests unreaped
/// as it held: a trial of each, as the shim makes them, destroyed again.
pub fn aio(img: &Image) -> Result<(), RestoreError> {
    let rings: Vec<_> = img.aio_rings().iter().collect();
    let trial: Vec<(u32, u32, u32)> = rings.iter().map(|r| (r.nr, r.head, r.unreaped())).collect();
    sys::aio_trial(&trial).map_err(|(k, why)| {
        RestoreError::Task(format!(
            "the AIO context at {:#x}: {why}",
            rings.get(k).map_or(0, |r| r.start)
        ))
    })
}

/// Offset of glibc's cached TID in the TCB, found in this process's own
/// TCB (the restored program almost always uses the same glibc; the shim
/// verifies the word before rewriting it). 0 if not found exactly once.
pub fn own_tid_offset() -> usize {
    let fs = sys::fs_base().unwrap_or(0);
    let tid = sys::gettid() as u32;
    if fs == 0 {
        return 0;
    }
    // Read through /proc/self/mem: a short read at the end of the TCB's
    // mapping is an error there, not a fault.
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open("/proc/self/mem")
        .and_then(|f| f.read_at(&mut buf, fs))
        .unwrap_or(0);
    let hits: Vec<usize> = (0x10..n.saturating_sub(3))
        .step_by(4)
        .filter(|&off| u32::from_le_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) == tid)
        .collect();
    if hits.len() == 1 {
        hits[0]
    } else {
        0
    }
}

pub use cryo_image::rlimit_name;

fn lim_str(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Every captured limit must be settable: raising a hard limit needs
/// CAP_SYS_RESOURCE, which this machine's root lacks.
/// Returns the captured limits that differ from ours (the ones to set).
pub fn rlimits(img: &Image, cap: bool) -> Result<Vec<cryo_image::Rlimit>, RestoreError> {
    let mut differ = Vec::new();
    for r in img.rlimits().iter() {
        let Ok((our_cur, our_max)) = sys::getrlimit(r.resource) else {
            continue;
        };
        if (r.max > our_max && !cap) || r.cur > r.max {
            return Err(RestoreError::Rlimit {
                name: rlimit_name(r.resource),
                cur: lim_str(r.cur),
                max: lim_str(r.max),
                our_cur: lim_str(our_cur),
                our_max: lim_str(our_max),
            });
        }
        if (r.cur, r.max) != (our_cur, our_max) {
            differ.push(r);
        }
    }
    Ok(differ)
}

/// Whether the image's gadgets are there and hold the expected code in the
/// image itself (the page's stored copy, or the mapped file's bytes).
pub fn gadgets_in_image(loaded: &LoadedImage, img: &Image) -> bool {
    use cryo_image::gadget;
    let Some(g) = img.gadgets() else {
        return false;
    };
    let ok = |addr: u64, len: usize, is: fn(&[u8]) -> bool| {
        image_bytes(loaded, img, addr, len).is_some_and(|b| is(&b))
    };
    ok(
        g.syscall_ret,
        gadget::SYSCALL_RET_MAX,
        gadget::is_syscall_ret,
    ) && ok(g.sigreturn, gadget::SIGRETURN_MAX, gadget::is_sigreturn)
}

/// `len` bytes at `addr` of the captured process as a restore will rebuild
/// them (within one page, or two for a sequence that crosses a boundary):
/// from pages.img where a DATA run covers the page, else from the file
/// behind the mapping; None where the bytes are not known here.
fn image_bytes(loaded: &LoadedImage, img: &Image, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let ps = cryo_image::PAGE_SIZE;
    let mut out = Vec::with_capacity(len);
    let mut a = addr;
    while out.len() < len {
        let page = a & !(ps - 1);
        let n = ((page + ps - a) as usize).min(len - out.len());
        let mut buf = vec![0u8; n];
        let v = img.vmas().iter().find(|v| v.start <= a && a < v.end)?;
        let runs = img.page_runs();
        let run = (v.first_run..v.first_run + v.run_count)
            .filter_map(|j| runs.get(j as usize))
            .find(|r| r.vaddr <= a && a < r.vaddr + r.len());
        match run {
            Some(r) if r.kind == cryo_image::run_kind::DATA => {
                let f = loaded.reopen(cryo_image::load::ImageFile::Pages).ok()?;
                f.read_exact_at(&mut buf, r.offset + (a - r.vaddr)).ok()?;
            }
            Some(_) => {} // a ZERO run
            None if v.file != NO_INDEX => {
                let fid = img.files().get(v.file as usize)?;
                let f = std::fs::File::open(img.str(fid.path)?).ok()?;
                f.read_exact_at(&mut buf, v.pgoff + (a - v.start)).ok()?;
            }
            None => return None,
        }
        out.extend_from_slice(&buf);
        a += n as u64;
    }
    Some(out)
}

/// Allocators known to take memory dropped with MADV_DONTNEED for zeros
/// (jemalloc's forced purge says so; mimalloc and tcmalloc reuse it the
/// same way): a mapped restore would give them back the captured bytes
/// instead (`cryo_image::mapped`, docs/pitfalls.md).
const ZERO_TRUSTING_ALLOCATORS: [&str; 3] = ["libjemalloc", "libmimalloc", "libtcmalloc"];

/// Can this image be restored with `--map`? Refuses, naming it, a process
/// whose memory is managed by an allocator that expects zeros after
/// MADV_DONTNEED.
pub fn mappable(img: &Image) -> Result<(), RestoreError> {
    let p = img.process();
    let mut names: Vec<&str> = img
        .vmas()
        .iter()
        .filter(|v| v.file != NO_INDEX)
        .map(|v| v.file)
        .chain((p.exe_file != NO_INDEX).then_some(p.exe_file))
        .filter_map(|i| img.files().get(i as usize))
        .filter_map(|f| img.str(f.path))
        .filter(|path| {
            let base = path.rsplit('/').next().unwrap_or(path);
            ZERO_TRUSTING_ALLOCATORS.iter().any(|a| base.starts_with(a))
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    match names.first() {
        None => Ok(()),
        Some(path) => Err(RestoreError::NotMappable(format!(
            "the program uses {path}, an allocator that takes memory it dropped with MADV_DONTNEED for zeros; mapped from pages.img it would read the captured bytes instead. Restore or pack it without --map"
        ))),
    }
}

/// Can pages.img be mapped here, as `--map` would? Its filesystem must
/// allow executable mappings (a private mapping of a file on a `noexec`
/// mount can never be made executable: a JIT's later
/// mprotect(PROT_EXEC) of its memory would fail), and the mappings the
/// parts of pages.img add must stay under vm.max_map_count (the shim
/// would otherwise fail half-way, after the point of no return).
pub fn mappable_here(loaded: &LoadedImage, img: &Image) -> Result<(), RestoreError> {
    let pages = loaded.pages_path();
    let noexec = nix::sys::statvfs::statvfs(&pages)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .unwrap_or(false);
    if noexec {
        return Err(RestoreError::NotMappable(format!(
            "{} is on a filesystem mounted noexec: memory mapped from it could never be made executable again (mprotect(PROT_EXEC)); restore or pack without --map, or keep the image on another filesystem",
            pages.display()
        )));
    }
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65_530);
    let parts = cryo_image::mapped::mapped_parts(img);
    let want = img.vmas().len() as u64 + 2 * parts;
    // Room for what the program maps later.
    if want + 1024 > max {
        return Err(RestoreError::NotMappable(format!(
            "its memory would be {want} mappings ({parts} parts of pages.img), too close to vm.max_map_count ({max}); restore or pack without --map"
        )));
    }
    Ok(())
}

/// CPUs as a list of ranges ("0-3,6").
fn cpu_list(mask: &[u64; 16]) -> String {
    let on = |c: usize| mask[c / 64] & (1 << (c % 64)) != 0;
    let mut out: Vec<String> = Vec::new();
    let mut c = 0;
    while c < 1024 {
        if !on(c) {
            c += 1;
            continue;
        }
        let first = c;
        while c + 1 < 1024 && on(c + 1) {
            c += 1;
        }
        out.push(if c == first {
            format!("{first}")
        } else {
            format!("{first}-{c}")
        });
        c += 1;
    }
    out.join(",")
}

/// Every captured CPU affinity (the process's, each thread's) names a CPU
/// the restored process may run on: one that is online and in this
/// restore's cpuset. One that names none was refused by the kernel
/// (EINVAL) as the restore set it, with no word of which CPUs (a sweep
/// of stop 51: a process pinned to CPU 1 restored in a cpuset of CPU 0).
/// One that names some of them comes back narrowed to those, as the
/// kernel narrows a running process's affinity when its cpuset shrinks.
pub fn affinity(img: &Image) -> Result<(), RestoreError> {
    let Some(t) = img.task() else {
        return Ok(());
    };
    let pid = img.process().pid;
    let mut masks = vec![(format!("process {pid}"), t.affinity)];
    masks.extend(
        img.threads()
            .iter()
            .map(|th| (format!("thread {} of process {pid}", th.tid), th.affinity)),
    );
    masks.retain(|(_, m)| *m != [0; 16]);
    // (Most images: bound where this restore is, or nowhere.)
    let own = sys::affinity().ok().map(|set| sys::mask_of(&set));
    masks.retain(|(_, m)| Some(*m) != own);
    if masks.is_empty() {
        return Ok(());
    }
    let Some(allowed) = sys::cpus_allowed() else {
        return Ok(());
    };
    let why: Vec<String> = masks
        .iter()
        .filter(|(_, m)| m.iter().zip(allowed.iter()).all(|(a, b)| a & b == 0))
        .map(|(who, m)| format!("{who} was bound to CPUs {}", cpu_list(m)))
        .collect();
    if why.is_empty() {
        return Ok(());
    }
    Err(RestoreError::Task(format!(
        "{}, and none of them is here to run on (online and in this restore's cpuset: CPUs {}): restore it where one of them is",
        why.join("; "),
        cpu_list(&allowed)
    )))
}

/// The `tasks` the restore makes (processes and threads) fit in the
/// pids controller's limits of this restore's cgroup and its ancestors.
/// One that did not failed as the shim made a thread or a child
/// ("clone3 of thread N: errno 11", status 125): a tree's child died
/// past its point of no return while its root ran on (a sweep of stop
/// 51, a slot of `pids.max` taken after the capture). This restore's
/// own threads count as free: its main thread becomes the root's and the
/// others end with its exec (a bound that is certain, not a guess: the
/// restore's helpers need slots too).
pub fn pids(tasks: usize) -> Result<(), RestoreError> {
    // (One task, the restore's own: nothing to read on the restore path.)
    if tasks <= 1 {
        return Ok(());
    }
    let (Ok(mounts), Ok(groups)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Ok(());
    };
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .unwrap_or(1);
    let need = tasks.saturating_sub(own);
    for g in cryo_image::mountinfo::cgroups(&mounts, &groups) {
        if !g.has("pids") && !g.has("") {
            continue;
        }
        // (The hierarchy's top too: in a cgroup namespace it is the
        // namespace's root, whose limit counts; the real root has no
        // pids.max.)
        let mut dir = Path::new(&g.dir);
        while dir.starts_with(&g.mount) {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            let max = read("pids.max").and_then(|v| v.trim().parse::<usize>().ok());
            let cur = read("pids.current").and_then(|v| v.trim().parse::<usize>().ok());
            if let (Some(max), Some(cur)) = (max, cur) {
                let room = max.saturating_sub(cur);
                if need > room {
                    return Err(RestoreError::Task(format!(
                        "the image's {tasks} tasks (processes and threads) do not fit in this restore's cgroup: {} allows {room} more (pids.max {max}, pids.current {cur})",
                        dir.display()
                    )));
                }
            }
            if dir == Path::new(&g.mount) {
                break;
            }
            let Some(up) = dir.parent() else { break };
            dir = up;
        }
    }
    Ok(())
}

/// Every mapping's NUMA policy (`Vma::mempolicy`) can be set here: the
/// nodes it names online (mbind refuses another, EINVAL), and mbind
/// itself allowed; the shim sets them past its point of no return.
pub fn numa_nodes(img: &Image) -> Result<(), RestoreError> {
    nodes_online(img)?;
    // Each policy tried on a page of ours first (a review of stop 52: a
    // kernel without NUMA, or a container's seccomp filter, would fail
    // the shim's mbind past its point of no return).
    let mut tried: Vec<(u32, u64)> = Vec::new();
    for v in img.vmas().iter().filter(|v| v.mempolicy != 0) {
        let p = (v.mempolicy, v.mempolicy_nodes);
        if tried.contains(&p) {
            continue;
        }
        tried.push(p);
        if let Err(e) = sys::mbind_probe(p.0, p.1) {
            return Err(RestoreError::Task(format!(
                "process {}: the mapping at {:#x} has a NUMA memory policy of its own (mbind mode {:#x}, nodes {:#x}), which cannot be set here: {e}",
                img.process().pid,
                v.start,
                p.0,
                p.1
            )));
        }
    }
    Ok(())
}

/// [`numa_nodes`]: every node named is online.
fn nodes_online(img: &Image) -> Result<(), RestoreError> {
    let named = img
        .vmas()
        .iter()
        .filter(|v| v.mempolicy != 0)
        .fold(0u64, |m, v| m | v.mempolicy_nodes);
    if named == 0 {
        return Ok(());
    }
    let text = std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_default();
    // (Nodes past 63 are left to the mbind tried next.)
    let online = cryo_image::node_mask(text.trim()).unwrap_or(u64::MAX);
    let missing = named & !online;
    if missing == 0 {
        return Ok(());
    }
    let list: Vec<String> = (0..64)
        .filter(|n| missing & (1 << n) != 0)
        .map(|n| n.to_string())
        .collect();
    Err(RestoreError::Task(format!(
        "process {}: a mapping's NUMA memory policy (mbind) names node {}, which this machine does not have online ({})",
        img.process().pid,
        list.join(","),
        if text.trim().is_empty() { "no NUMA" } else { text.trim() }
    )))
}
