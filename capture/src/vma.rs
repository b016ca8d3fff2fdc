//! Mappings: what each one is (or why it cannot be restored), which file
//! is behind it, and its pages, read into the image writer (pagemap says
//! which pages a private mapping has; a shared anonymous mapping's data
//! comes from its object).

use crate::capture::{CaptureError, Progress};
use crate::fds::{Limits, StoredFiles};
use crate::obstacles::Obstacles;
use crate::pages::{self, CowPages, MemError, RunBuilder, BATCH};
use crate::procinfo::Mapping;
use crate::writer::ImageDirWriter;
use cryo_image::write::ImageBuilder;
use cryo_image::*;

/// A mapping with what capture decided about it.
pub struct Classified<'a> {
    pub m: &'a Mapping,
    pub kind: u32,
    pub flags: u32,
    /// Index in the files table, or NO_INDEX.
    pub file: u32,
}

/// An outside process's shared mapping: device ("MM:mm"), inode, name,
/// PID (`crate::pipes::Scope::outside_shared`).
pub type OutsideShared = (String, u64, String, i32);

/// Classify every mapping, storing the contents of files that exist
/// nowhere else (unlinked, memfd); what cannot be restored goes to `obs`.
/// `captured`: the processes captured; with others, a process may map
/// the same shared anonymous memory as they do: each such mapping is
/// stored as the shmem file it is (a memfd at restore, made once for the
/// tree), not as memory of its own. `outside`: the other processes'
/// shared mappings, read at the first need.
#[allow(clippy::too_many_arguments)]
pub fn classify_all<'a>(
    pid: i32,
    maps: &'a [Mapping],
    (captured, outside): (&[i32], &mut Option<Vec<OutsideShared>>),
    aio_idle: bool,
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
    limits: &Limits,
    obs: &mut Obstacles,
) -> Vec<Classified<'a>> {
    let in_tree = captured.len() > 1;
    let mut out = Vec::with_capacity(maps.len());
    // Shared memory made again at restore (its object's identity is not
    // kept): another process mapping it too would lose the link.
    let mut made_again: Vec<&Mapping> = Vec::new();
    shim_window(pid, maps, obs);
    let served = served_by_another(pid, maps, obs);
    for m in maps {
        let (kind, flags) = match classify(m, served, aio_idle) {
            Ok(k) => k,
            Err(why) => {
                obs.push(why);
                (vma_kind::ANON_PRIVATE, 0)
            }
        };
        // Shared anonymous memory mapped more than once (or opened
        // through map_files and mapped again), or at an offset into its
        // object: one object, stored as the shmem file it is and mapped
        // again from one file, as for a tree.
        let many = kind == vma_kind::ANON_SHARED
            && (m.offset != 0
                || maps.iter().any(|o| {
                    !std::ptr::eq(o, m)
                        && o.inode == m.inode
                        && m.inode != 0
                        && o.dev_major == m.dev_major
                        && o.dev_minor == m.dev_minor
                }));
        if kind == vma_kind::ANON_SHARED {
            made_again.push(m);
        }
        if (in_tree || many) && kind == vma_kind::ANON_SHARED {
            let shm = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            let what = format!("mapping {:x}-{:x}", m.start, m.end);
            let file = stored.file(b, &shm, SHARED_ANON_NAME, &what, limits, obs);
            out.push(Classified {
                m,
                kind: vma_kind::FILE_SHARED,
                flags,
                file: file.unwrap_or(NO_INDEX),
            });
            continue;
        }
        let map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let relinked = (matches!(kind, vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED)
            && m.deleted())
        .then(|| other_link(&map_files, &m.path))
        .flatten();
        // Its other link in another directory: reopened by its file
        // handle, as an fd on it is.
        let handled = (matches!(kind, vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED)
            && m.deleted()
            && relinked.is_none())
        .then(|| by_handle(b, &map_files, &m.path))
        .flatten();
        let file = match kind {
            _ if relinked.is_some() => file_id(b, relinked.as_deref().unwrap_or_default()),
            _ if handled.is_some() => handled.unwrap_or(NO_INDEX),
            // (Held by another process too: `stored::held_outside`.)
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED if m.deleted() => stored
                .file(
                    b,
                    &map_files,
                    &m.path,
                    &format!("mapping {:x}-{:x}", m.start, m.end),
                    limits,
                    obs,
                )
                .unwrap_or(NO_INDEX),
            // Written through: the process uses the file as shared
            // memory, and it may be gone at restore (see `keep`). A
            // read-only shared mapping (glibc's gconv cache, say) is a
            // file of the system: never made again.
            vma_kind::FILE_SHARED if m.write => {
                let i = file_id(b, &m.path);
                stored.keep(b, i, &map_files);
                i
            }
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED => file_id(b, &m.path),
            _ => NO_INDEX,
        };
        out.push(Classified {
            m,
            kind,
            flags,
            file,
        });
    }
    shared_outside(&made_again, captured, outside, obs);
    // Shared anonymous memory is restored as one fresh object per mapping:
    // an object mapped twice, or at an offset, would not be one object again.
    for (i, c) in out.iter().enumerate() {
        if c.kind != vma_kind::ANON_SHARED {
            continue;
        }
        let m = c.m;
        let twice = maps
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.inode == m.inode && o.inode != 0 && o.path == m.path);
        if m.offset != 0 || twice {
            obs.push(format!(
                "mapping {:x}-{:x} is shared anonymous memory {} (split by mremap, or mapped again); cryo restores one object per mapping, not yet this",
                m.start,
                m.end,
                if twice { "mapped more than once" } else { "at an offset into its object" }
            ));
        }
    }
    out
}

/// Anonymous shared memory, which restore makes again, is a new object
/// then (a deleted file or memfd, mapped or not: `stored::held_outside`):
/// a process outside the captured ones mapping the same object would no
/// longer see what the restored process writes, nor it that one's. Refused, each such process named. (A forked child captured
/// without its parent restored with the memory it shared copied, without
/// a word: a sweep of stop 50, with PostgreSQL's and apache's workers in
/// mind.) Every other process's maps are read once, only when there is
/// such memory.
fn shared_outside(
    made_again: &[&Mapping],
    captured: &[i32],
    outside: &mut Option<Vec<OutsideShared>>,
    obs: &mut Obstacles,
) {
    if made_again.is_empty() {
        return;
    }
    // (Read once per capture, not once per process of a tree that has
    // such memory, all frozen meanwhile: a review of stop 50.)
    let outside = outside.get_or_insert_with(|| outside_shared_maps(captured));
    // (By device, inode and name: on the shmem device a System V
    // segment's inode number is its id, which an anonymous object's may
    // equal; a review of stop 50.)
    let mut found: Vec<(u64, u64, i32)> = Vec::new();
    for (dev, inode, path, other) in outside.iter() {
        let m = made_again.iter().find(|m| {
            m.inode == *inode
                && m.inode != 0
                && m.path == *path
                && *dev == format!("{:02x}:{:02x}", m.dev_major, m.dev_minor)
        });
        if let Some(m) = m {
            if !found.iter().any(|&(s, _, p)| s == m.start && p == *other) {
                found.push((m.start, m.end, *other));
            }
        }
    }
    for (start, end, other) in found {
        let comm = std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
        obs.push(format!(
            "mapping {start:x}-{end:x} is shared memory also mapped by pid {other} ({}), which is not captured: restored, it would be an object of its own, and neither would see what the other writes; capture them together (a common parent with its tree: `cryo capture --help`)",
            comm.trim()
        ));
    }
}

/// Every shared mapping of the processes not in `captured` that has an
/// inode (device, inode, name, PID), from their /proc/PID/maps.
pub(crate) fn outside_shared_maps(captured: &[i32]) -> Vec<OutsideShared> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if captured.contains(&other) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{other}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(_), Some(perms), Some(_), Some(dev), Some(inode)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            match inode.parse::<u64>() {
                Ok(inode) if inode != 0 && perms.ends_with('s') => {
                    let path = f.collect::<Vec<_>>().join(" ");
                    out.push((dev.to_owned(), inode, path, other));
                }
                _ => {}
            }
        }
    }
    out
}

/// Whether a mapping lies (in part) in cryo-shim's window.
fn in_shim_window(m: &Mapping) -> bool {
    m.start < SHIM_WINDOW + SHIM_WINDOW_LEN && m.end > SHIM_WINDOW
}

/// Whether code runs in cryo-shim's window: the process is still being
/// restored (`shim_window` says so).
pub(crate) fn being_restored(maps: &[Mapping]) -> bool {
    maps.iter()
        .any(|m| (m.exec && in_shim_window(m)) || restoring_area(m))
}

/// The mapping the shim's last steps run in, its window gone already
/// (`cryo_image::RESTORING_AT`).
fn restoring_area(m: &Mapping) -> bool {
    m.start == cryo_image::RESTORING_AT
        && m.end - m.start <= cryo_image::RESTORING_MAX
        && m.path.is_empty()
        && !m.exec
}

/// Memory in cryo-shim's window cannot be restored: the shim runs there.
/// Above all, a process still inside `cryo restore` (or a packed
/// restorer: its shim filling memory, before the program runs again) has
/// its restorer there; its image would be refused by every restore, and
/// `--kill` would lose the process. One obstacle for all of it, before
/// the mappings are classified (which skips them).
fn shim_window(pid: i32, maps: &[Mapping], obs: &mut Obstacles) {
    if let Some(m) = maps.iter().find(|m| restoring_area(m)) {
        obs.push(format!(
            "the process is still being restored by cryo (its last steps run at {:x}-{:x}, right above cryo-shim's window); capture it once its program runs again",
            m.start, m.end
        ));
        return;
    }
    let inside: Vec<&Mapping> = maps.iter().filter(|m| in_shim_window(m)).collect();
    if inside.is_empty() {
        return;
    }
    let window = format!("{SHIM_WINDOW:#x}-{:#x}", SHIM_WINDOW + SHIM_WINDOW_LEN);
    // The restorer's code: the shim (mapped through its hard link
    // cryo-shim.text while /proc/PID/exe says cryo-shim) or a packed
    // restorer's shim (copied into anonymous memory there). Programs do
    // not put code in the window.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(m) = inside.iter().find(|m| m.exec) {
        obs.push(format!(
            "the process is still being restored by cryo ({exe} runs at {:x}-{:x}, in cryo-shim's window {window}); capture it once its program runs again",
            m.start, m.end
        ));
        return;
    }
    let list: Vec<String> = inside
        .iter()
        .map(|m| {
            let name = if m.path.is_empty() {
                "anonymous"
            } else {
                &m.path
            };
            format!("{:x}-{:x} ({name})", m.start, m.end)
        })
        .collect();
    obs.push(format!(
        "mapping {} lies in cryo-shim's window {window}, where cryo restore runs its shim: memory there cannot be restored",
        list.join(", ")
    ));
}

/// The other name, in the same directory, of a mapped file whose name was
/// removed but that still has a link (Python's multiprocessing makes a
/// semaphore under a temporary name, links it to its real name and
/// removes the first): the file is mapped again by that name.
pub(crate) fn other_link(map_files: &str, deleted: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(map_files).ok()?;
    if md.nlink() == 0 || !md.is_file() {
        return None;
    }
    let dir = std::path::Path::new(deleted.trim_end_matches(" (deleted)")).parent()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let m = e.metadata().ok()?;
        ((m.dev(), m.ino()) == (md.dev(), md.ino()))
            .then(|| e.path().to_string_lossy().into_owned())
    })
}

/// A file whose opened name was removed and that has a link elsewhere
/// (not in the same directory: [`other_link`] looks there), as a files
/// entry reopened through its file handle (`file_flags::HANDLE`); None
/// if it has no link, is not a regular file, or its file system gives no
/// handles (then it is stored or refused as an unlinked file).
pub(crate) fn by_handle(b: &mut ImageBuilder, fd_path: &str, shown: &str) -> Option<u32> {
    use cryo_image::fds::{file_flags, FileHandle};
    use std::os::unix::fs::MetadataExt;
    if shown.starts_with("/memfd:") {
        return None;
    }
    let md = std::fs::metadata(fd_path).ok()?;
    if md.nlink() == 0 || !md.is_file() {
        return None;
    }
    let (kind, bytes) = crate::sys::name_to_handle(fd_path).ok()?;
    let index = b.files.len() as u32;
    let handle = FileHandle::new(index, kind, &bytes)?;
    if let Some(i) = b
        .files
        .iter()
        .position(|f| f.flags & file_flags::HANDLE != 0 && (f.dev, f.ino) == (md.dev(), md.ino()))
    {
        return Some(i as u32);
    }
    b.files.push(FileId {
        path: b.strings.add(""),
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        mode: md.mode(),
        flags: file_flags::HANDLE,
        uid: md.uid(),
        gid: md.gid(),
        btime_sec: born(&md).0,
        btime_nsec: born(&md).1,
        ..Default::default()
    });
    b.file_handles.push(handle);
    Some(index)
}

/// The file handle of each regular file an fd of the process holds open
/// by its name: a restore finds the very inode by it if the name was
/// moved since (a log rotated; a sweep of stop 52 found it refused as "a
/// different file now"). Read by the file's path once the process is let
/// go (each costs ~40 µs here, ~200 ms while frozen for 5000 files), and
/// kept only if the path still names the inode the fd held: one moved in
/// the meantime has none, and is looked for by its name, as before.
pub(crate) fn note_handles(b: &mut ImageBuilder) {
    use cryo_image::fds::FileHandle;
    use std::os::unix::fs::MetadataExt;
    let mut want: Vec<u32> = b
        .fds
        .iter()
        .filter(|f| f.kind == cryo_image::fd_kind::REGULAR && f.file != NO_INDEX)
        .map(|f| f.file)
        .collect();
    want.sort_unstable();
    want.dedup();
    for index in want {
        if b.file_handles.iter().any(|h| h.file == index) {
            continue;
        }
        let Some(f) = b.files.get(index as usize) else {
            continue;
        };
        let path = b.strings.text(f.path);
        let (dev, ino) = (f.dev, f.ino);
        let handle = crate::sys::name_to_handle(&path).ok();
        let same = std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino));
        if let (Some((kind, bytes)), true) = (handle, same) {
            if let Some(h) = FileHandle::new(index, kind, &bytes) {
                b.file_handles.push(h);
            }
        }
    }
}

/// What a shared anonymous mapping of a tree is restored as: a memfd of
/// this name (/proc/PID/maps then shows `/memfd:dev/zero (deleted)`).
pub const SHARED_ANON_NAME: &str = "/memfd:dev/zero (deleted)";

/// The userfaultfd flags of a mapping (VmFlags um, uw, ui).
const UFFD_FLAGS: [&str; 3] = ["um", "uw", "ui"];

/// Mappings registered with a userfaultfd the process does not hold
/// (another process's: above all the page server of a lazy `cryo
/// restore` still serving it). One obstacle for all of them, which says
/// so, rather than one per mapping blaming the program's own userfaultfd
/// (a survey of stop 36). Whether that is so.
fn served_by_another(pid: i32, maps: &[Mapping], obs: &mut Obstacles) -> bool {
    let registered: Vec<&Mapping> = maps
        .iter()
        .filter(|m| m.vmflags.iter().any(|f| UFFD_FLAGS.contains(&f.as_str())))
        .collect();
    let Some(first) = registered.first() else {
        return false;
    };
    let holds_one = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[userfaultfd]")
        });
    if holds_one {
        return false;
    }
    obs.push(format!(
        "{} of its mappings (the first {:x}-{:x} {}) are registered with a userfaultfd the process does not hold: another process serves their pages, as the page server of a lazy `cryo restore` does until every page is in (`--lazy` streams them all, then lets go; `--lazy=on-demand` never does); capture it once that is done, or restore it eagerly or with --map to capture it again",
        registered.len(),
        first.start,
        first.end,
        first.path
    ));
    true
}

/// Classify a mapping, or say why cryo cannot restore it. `served`: its
/// userfaultfd flags were refused already ([`served_by_another`]).
/// `aio_idle`: the user says no AIO request is in flight
/// (`--aio-idle`), so AIO contexts are captured (`crate::aio`).
fn classify(m: &Mapping, served: bool, aio_idle: bool) -> Result<(u32, u32), String> {
    let range = format!("{:x}-{:x}", m.start, m.end);
    if in_shim_window(m) {
        // Refused once for all of them (`shim_window`).
        return Ok((vma_kind::ANON_PRIVATE, 0));
    }
    let special = matches!(
        m.path.as_str(),
        "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
    );
    if m.path == AIO_PATH {
        // (Made by io_setup with the flags the kernel gives it.)
        return if aio_idle {
            Ok((vma_kind::AIO, 0))
        } else {
            Err(format!(
                "mapping {range} is the ring of an AIO context (io_setup): a request in flight cannot be seen from outside the kernel, and would be lost; if the program has none (every request it submitted has completed: io_getevents or the ring shows it), `--aio-idle` captures it"
            ))
        };
    }
    // Every VmFlag is derived from how the mapping is made, set again by
    // the shim, or a reason to refuse (cryo_image::vmflag_rule).
    let mut why: Vec<String> = Vec::new();
    for f in &m.vmflags {
        if served && UFFD_FLAGS.contains(&f.as_str()) {
            continue;
        }
        if let VmFlagRule::Refused(r) = vmflag_rule(f, special) {
            let r = format!("{r} (VmFlags '{f}')");
            if !why.contains(&r) {
                why.push(r);
            }
        }
    }
    if !why.is_empty() {
        return Err(format!("mapping {range} {} is {}", m.path, why.join(", ")));
    }
    let mut flags = 0;
    let vf = [
        ("gd", vma_flags::GROWSDOWN),
        ("lo", vma_flags::LOCKED),
        ("dc", vma_flags::DONTFORK),
        ("dd", vma_flags::DONTDUMP),
        ("wf", vma_flags::WIPEONFORK),
        ("hg", vma_flags::HUGEPAGE),
        ("nh", vma_flags::NOHUGEPAGE),
    ];
    for (f, b) in vf {
        if m.has_flag(f) {
            flags |= b;
        }
    }
    if !m.read && !m.write && !m.exec {
        flags |= vma_flags::GUARD;
    }
    if m.deleted() {
        flags |= vma_flags::DELETED;
    }
    let kind = match m.path.as_str() {
        "[heap]" => vma_kind::HEAP,
        "[stack]" => vma_kind::STACK,
        "[vdso]" => vma_kind::VDSO,
        "[vvar]" => vma_kind::VVAR,
        "[vvar_vclock]" => vma_kind::VVAR_VCLOCK,
        "[vsyscall]" => vma_kind::VSYSCALL,
        "/dev/zero (deleted)" if m.shared => vma_kind::ANON_SHARED,
        p if m.inode == 0
            && (p.is_empty() || p.starts_with("[anon:") || p.starts_with("[anon_shmem:")) =>
        {
            if m.shared {
                vma_kind::ANON_SHARED
            } else {
                vma_kind::ANON_PRIVATE
            }
        }
        // (The inode is the segment's id: `crate::sysv`.)
        p if p.starts_with("/SYSV") => vma_kind::SYSV,
        // A regular file under /dev (a POSIX shared memory object or
        // named semaphore in /dev/shm) is a file like any other.
        p if p.starts_with("/dev/")
            && p != "/dev/zero"
            && !m.deleted()
            && !std::fs::metadata(p).is_ok_and(|md| md.is_file()) =>
        {
            return Err(format!("mapping {range} {p} maps a device"))
        }
        p if p.starts_with('[') => {
            return Err(format!(
                "mapping {range} {p} is a special mapping cryo does not know"
            ))
        }
        _ if m.shared => vma_kind::FILE_SHARED,
        _ => vma_kind::FILE_PRIVATE,
    };
    Ok((kind, flags))
}

/// The maps name of an AIO context's ring.
pub(crate) const AIO_PATH: &str = "/[aio] (deleted)";

/// Whether pages of this kind of mapping are stored in the image.
fn dumps(kind: u32) -> bool {
    !matches!(
        kind,
        vma_kind::AIO
            | vma_kind::VDSO
            | vma_kind::VVAR
            | vma_kind::VVAR_VCLOCK
            | vma_kind::VSYSCALL
            | vma_kind::FILE_SHARED
            | vma_kind::SYSV
    )
}

pub(crate) fn file_id(b: &mut ImageBuilder, path: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    if let Some(i) = b.files.iter().position(|f| {
        b.strings
            .bytes()
            .get(f.path.off as usize..(f.path.off + f.path.len) as usize)
            == Some(path.as_bytes())
    }) {
        return i as u32;
    }
    let md = std::fs::metadata(path).ok();
    let r = b.strings.add(path);
    b.files.push(FileId {
        path: r,
        dev: md.as_ref().map_or(0, |m| m.dev()),
        ino: md.as_ref().map_or(0, |m| m.ino()),
        size: md.as_ref().map_or(0, |m| m.size()),
        mtime_sec: md.as_ref().map_or(0, |m| m.mtime()),
        mtime_nsec: md.as_ref().map_or(0, |m| m.mtime_nsec() as u32),
        mode: md.as_ref().map_or(0, |m| m.mode()),
        uid: md.as_ref().map_or(0, |m| m.uid()),
        gid: md.as_ref().map_or(0, |m| m.gid()),
        btime_sec: md.as_ref().map_or(0, |m| born(m).0),
        btime_nsec: md.as_ref().map_or(0, |m| born(m).1),
        ..Default::default()
    });
    (b.files.len() - 1) as u32
}

/// A file's birth time (statx STATX_BTIME, through std), (0, 0) where the
/// file system does not tell.
pub(crate) fn born(md: &std::fs::Metadata) -> (i64, u32) {
    md.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos()))
}

/// What [`dump`] wrote.
pub struct Dumped {
    pub stored_pages: u64,
    pub zero_pages: u64,
    /// Pages referring to another process's stored copy ([`CowPages`]).
    pub shared_pages: u64,
    /// The checksum of each page this process added to pages.img.
    pub sums: Vec<u64>,
}

/// Pages and the Vma records, mapping by mapping, into the writer (after
/// what it holds already: a tree's processes share one pages.img); then
/// the bytes that are not memory (`blobs`: pipe data, file contents).
/// `cow`: pages shared copy-on-write with a process dumped before are
/// not stored again.
#[allow(clippy::too_many_arguments)]
pub fn dump(
    pid: i32,
    maps: &[Classified],
    w: &mut ImageDirWriter,
    b: &mut ImageBuilder,
    stored: &StoredFiles,
    mut cow: Option<&mut CowPages>,
    progress: &mut dyn FnMut(Progress),
    stop: Option<fn() -> bool>,
) -> Result<Dumped, CaptureError> {
    // smaps tells which mappings hold anything at all (GHC reserves a
    // terabyte of PROT_NONE address space: its pagemap alone would be
    // 2 GiB), and pagemap is read batch by batch alongside the pages.
    let total_bytes: u64 = maps
        .iter()
        .filter(|c| dumps(c.kind))
        .map(|c| (c.m.rss_kib + c.m.swap_kib) * 1024)
        .sum();
    let mut runs = RunBuilder::starting_at(w.pages_len());
    let mut pagemap = pages::Pagemap::open(pid)?;
    let mut mem: Option<std::fs::File> = None;
    let mut done_bytes = 0u64;
    for c in maps {
        let m = c.m;
        let first_run = runs.len() as u32;
        let has_pages = m.rss_kib + m.swap_kib > 0 || !m.image_pages.is_empty();
        let resident = if c.kind == vma_kind::ANON_SHARED {
            // The shared memory object's own data, not what this process
            // has mapped: a page dropped here (MADV_DONTNEED) or faulted in
            // through another mapping is still the object's.
            let mut counter = Counter {
                done_bytes: &mut done_bytes,
                total_bytes,
                progress: &mut *progress,
                stop,
            };
            dump_shmem(pid, m, w, &mut runs, &mut counter)?
        } else if dumps(c.kind) && has_pages {
            let mut counter = Counter {
                done_bytes: &mut done_bytes,
                total_bytes,
                progress: &mut *progress,
                stop,
            };
            dump_private(
                pid,
                m,
                c.kind,
                w,
                &mut runs,
                &mut pagemap,
                &mut mem,
                cow.as_deref_mut(),
                &mut counter,
            )?
        } else if has_pages && !m.has_flag("io") {
            (m.rss_kib + m.swap_kib) / 4
        } else {
            0
        };
        let name = if m.path.is_empty() {
            StrRef::NONE
        } else {
            b.strings.add(&m.path)
        };
        let mut vmflags = 0u64;
        for f in &m.vmflags {
            if let Some(bit) = vmflag_bit(f) {
                vmflags |= 1 << bit;
            }
        }
        b.vmas.push(Vma {
            start: m.start,
            end: m.end,
            pgoff: m.offset,
            prot: [
                (m.read, prot::READ),
                (m.write, prot::WRITE),
                (m.exec, prot::EXEC),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit),
            kind: c.kind,
            flags: c.flags,
            file: c.file,
            vmflags,
            name,
            first_run,
            run_count: runs.len() as u32 - first_run,
            resident_pages: resident,
            // (Its NUMA policy, if any, set by `capture` from numa_maps.)
            mempolicy: 0,
            _pad: 0,
            mempolicy_nodes: 0,
        });
    }
    // Bytes that are not memory (pipe data, file contents), read during
    // the freeze: after the memory, each page-aligned with its checksums.
    for blob in &stored.blobs {
        let padded = blob.bytes.len().next_multiple_of(PAGE_SIZE as usize);
        let mut bytes = blob.bytes.clone();
        bytes.resize(padded, 0);
        let off = w.append_pages(&bytes)?;
        runs.add_blob(&bytes, off);
        blob.place(b, off);
    }
    let (stored_pages, zero_pages, shared_pages) =
        (runs.stored_pages, runs.zero_pages, runs.shared_pages);
    let (page_runs, sums) = runs.finish();
    b.page_runs = page_runs;
    Ok(Dumped {
        stored_pages,
        zero_pages,
        shared_pages,
        sums,
    })
}

/// Progress of the page dump.
struct Counter<'p> {
    done_bytes: &'p mut u64,
    total_bytes: u64,
    progress: &'p mut dyn FnMut(Progress),
    /// `Options::stop`: asked after each batch.
    stop: Option<fn() -> bool>,
}

impl Counter<'_> {
    fn add(&mut self, n: u64) -> Result<(), CaptureError> {
        // (Asked once per 16 MiB: a page at a time, as pages shared with
        // a process dumped before are counted, it would be a system call
        // per page.)
        const STOP_EVERY: u64 = 16 << 20;
        let before = *self.done_bytes / STOP_EVERY;
        *self.done_bytes += n;
        (self.progress)(Progress {
            done_bytes: *self.done_bytes,
            total_bytes: self.total_bytes.max(*self.done_bytes),
        });
        match self.stop {
            Some(f) if *self.done_bytes / STOP_EVERY != before && f() => Err(CaptureError::Stopped),
            _ => Ok(()),
        }
    }
}

/// The pages of a private (or file) mapping that pagemap says it has,
/// read straight into the page writer's buffers. Returns its resident
/// pages. In private anonymous memory a page that starts a block glibc's
/// malloc mmapped for itself starts a run of its own, so marked
/// (`run_flags::MALLOC_HEAD`).
#[allow(clippy::too_many_arguments)]
fn dump_private(
    pid: i32,
    m: &Mapping,
    kind: u32,
    w: &mut ImageDirWriter,
    runs: &mut RunBuilder,
    pagemap: &mut pages::Pagemap,
    mem: &mut Option<std::fs::File>,
    mut cow: Option<&mut CowPages>,
    counter: &mut Counter,
) -> Result<u64, CaptureError> {
    let private_file = kind == vma_kind::FILE_PRIVATE;
    let anon = kind == vma_kind::ANON_PRIVATE;
    let batch_pages = BATCH / PAGE_SIZE as usize;
    let mut resident = 0u64;
    // A sparse mapping (a few pages in a large one): only the ranges that
    // hold pages are walked (parts mapped from a pages.img are read whole,
    // held or not).
    let held_pages = (m.rss_kib + m.swap_kib) / 4;
    let sparse = m.image_pages.is_empty() && (m.end - m.start) / PAGE_SIZE > 64 * held_pages + 4096;
    let ranges = sparse
        .then(|| pagemap.holding(m.start, m.end))
        .flatten()
        .unwrap_or_else(|| vec![(m.start, m.end)]);
    for (range_start, range_end) in ranges {
        let mut chunk_start = range_start;
        while chunk_start < range_end {
            let chunk_end = (chunk_start + BATCH as u64).min(range_end);
            let pm = pagemap.read(chunk_start, chunk_end)?;
            resident += pm.iter().filter(|e| pages::resident(**e)).count() as u64;
            // Every page of a part that was mapped from a pages.img (even
            // one never touched: it holds that image's bytes).
            // (The ranges are in address order: a binary search, not a scan,
            // for each page of a heap mapped in thousands of parts.)
            let wanted = |k: usize| {
                let addr = chunk_start + k as u64 * PAGE_SIZE;
                pages::wanted(pm[k], private_file) || {
                    let i = m.image_pages.partition_point(|&(s, _)| s <= addr);
                    i > 0 && addr < m.image_pages[i - 1].1
                }
            };
            // A page shared copy-on-write with a process dumped before, which
            // stored it: referred to, not stored again.
            let elsewhere = |k: usize, cow: &Option<&mut CowPages>| {
                cow.as_ref().and_then(|c| {
                    pages::cow_shared(pm[k])
                        .then(|| c.stored_elsewhere(pages::pfn(pm[k])))
                        .flatten()
                })
            };
            let mut i = 0usize;
            while i < pm.len() {
                if !wanted(i) {
                    runs.close();
                    i += 1;
                    continue;
                }
                if let Some(off) = elsewhere(i, &cow) {
                    let mut head = false;
                    if let Some(c) = cow.as_deref_mut() {
                        c.refer(off);
                        head = anon && c.malloc_head(pages::pfn(pm[i]));
                    }
                    runs.add_existing(chunk_start + i as u64 * PAGE_SIZE, off, head);
                    counter.add(PAGE_SIZE)?;
                    i += 1;
                    continue;
                }
                let mut j = i;
                while j < pm.len()
                    && j - i < batch_pages
                    && wanted(j)
                    && elsewhere(j, &cow).is_none()
                {
                    j += 1;
                }
                // Read straight into the page writer's buffer (no copy on the
                // way to pages.img); it may take fewer pages.
                let addr = chunk_start + i as u64 * PAGE_SIZE;
                let offset = w.pages_len();
                let room = w.pages().spare((j - i) * PAGE_SIZE as usize)?;
                let len = room.len();
                // Pages shared copy-on-write must not be pinned (the kernel
                // would unshare them in the target): read those unpinned.
                let n = len / PAGE_SIZE as usize;
                let read = if pm[i..i + n].iter().any(|e| pages::cow_shared(*e)) {
                    pages::read_unpinned(mem, pid, addr, room)
                } else {
                    pages::read_remote(pid, addr, room)
                };
                read.map_err(|source| {
                    // A part mapped from a pages.img cut short (SIGBUS to the
                    // program, EIO to a reader): named (a sweep saw only
                    // "Input/output error").
                    let end = addr + len as u64;
                    let image = m.image_pages.iter().any(|&(s, e)| s < end && addr < e);
                    if image && source.raw_os_error() == Some(libc::EIO) {
                        MemError::ImageChanged { pid, addr, source }
                    } else {
                        MemError::Read { pid, addr, source }
                    }
                })?;
                // Which pages start a block malloc mmapped.
                let ps = PAGE_SIZE as usize;
                // (Only in private anonymous memory: elsewhere none.)
                let heads: Vec<bool> = if anon {
                    (0..n)
                        .map(|k| {
                            cryo_image::malloc_mmapped_head(
                                &room[k * ps..(k + 1) * ps],
                                addr + (k * ps) as u64,
                                m.end,
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let first = i;
                let kept = runs.add_each(addr, room, offset, &heads, |k, at| {
                    if let (Some(c), Some(at)) = (cow.as_deref_mut(), at) {
                        if pages::cow_shared(pm[first + k]) {
                            let vaddr = addr + (k as u64) * PAGE_SIZE;
                            let h = heads.get(k).copied().unwrap_or(false);
                            c.note(pages::pfn(pm[first + k]), pid, vaddr, at, h);
                        }
                    }
                });
                w.pages().advance(kept);
                counter.add(len as u64)?;
                i += len / PAGE_SIZE as usize;
            }
            chunk_start = chunk_end;
        }
        runs.close();
    }
    Ok(resident)
}

/// The data of a shared anonymous mapping's object, read through
/// /proc/PID/map_files (SEEK_DATA/SEEK_HOLE, then pread), as DATA and
/// ZERO runs at the addresses that map it. Returns its data pages.
fn dump_shmem(
    pid: i32,
    m: &Mapping,
    w: &mut ImageDirWriter,
    runs: &mut RunBuilder,
    counter: &mut Counter,
) -> Result<u64, CaptureError> {
    use std::os::unix::fs::FileExt;
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let read_err = |addr, source| MemError::Read { pid, addr, source };
    let f = std::fs::File::open(&path).map_err(|e| read_err(m.start, e))?;
    let len = m.end - m.start;
    let mut pages = 0u64;
    for (a, b) in crate::stored::data_ranges_in(&f, m.offset, m.offset + len) {
        let mut off = a;
        while off < b {
            let want = ((b - off) as usize).min(BATCH);
            let offset = w.pages_len();
            let room = w.pages().spare(want)?;
            let n = room.len();
            let addr = m.start + (off - m.offset);
            f.read_exact_at(room, off).map_err(|e| read_err(addr, e))?;
            let kept = runs.add(addr, room, offset);
            w.pages().advance(kept);
            off += n as u64;
            pages += n as u64 / PAGE_SIZE;
            counter.add(n as u64)?;
        }
        runs.close();
    }
    Ok(pages)
}
