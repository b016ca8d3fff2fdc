//! Files that exist nowhere else — unlinked files and memfds, mapped or
//! open — with their bytes (data extents only: holes are not stored), and
//! the bytes capture reads during the freeze that go to pages.img after
//! the memory (pipe data, file contents).

use crate::obstacles::Obstacles;
use crate::sys;
use cryo_image::fds::{file_flags, Blob, Extent};
use cryo_image::write::ImageBuilder;
use cryo_image::FileId;
use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bytes read while the target is frozen, to be appended to pages.img
/// once its memory is written; `to` says which record gets the offset.
pub struct PendingBlob {
    pub to: BlobOwner,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
pub enum BlobOwner {
    Pipe(usize),
    Extent(usize),
    Socket(usize),
    PtyInput(usize),
    PtyOutput(usize),
    Sysv(usize),
    Sem(usize),
    Msq(usize),
    TcpSend(usize),
    TcpRecv(usize),
    Aio(usize),
}

impl PendingBlob {
    /// Record where the bytes landed in pages.img.
    pub fn place(&self, b: &mut ImageBuilder, off: u64) {
        let blob = Blob {
            off,
            len: self.bytes.len() as u64,
        };
        match self.to {
            BlobOwner::Pipe(i) => b.pipes[i].data = blob,
            BlobOwner::Extent(i) => b.extents[i].data = blob,
            BlobOwner::Socket(i) => b.sockets[i].data = blob,
            BlobOwner::PtyInput(i) => b.ptys[i].input = blob,
            BlobOwner::PtyOutput(i) => b.ptys[i].output = blob,
            BlobOwner::Sysv(i) => b.sysv_shm[i].data = blob,
            BlobOwner::Sem(i) => b.sysv_sem[i].values = blob,
            BlobOwner::Msq(i) => b.sysv_msq[i].messages = blob,
            BlobOwner::TcpSend(i) => b.tcp_conns[i].sendq = blob,
            BlobOwner::TcpRecv(i) => b.tcp_conns[i].recvq = blob,
            BlobOwner::Aio(i) => b.aio_rings[i].events = blob,
        }
    }
}

/// Limits on what capture stores besides memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest unlinked file or memfd whose bytes are stored.
    pub max_file_data: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_data: 256 << 20,
        }
    }
}

/// The stored files of one capture: FileIds of unlinked files and memfds
/// keyed by (dev, ino), so an fd and a mapping of one file share it.
#[derive(Default)]
pub struct StoredFiles {
    by_inode: HashMap<(u64, u64), u32>,
    pub blobs: Vec<PendingBlob>,
    /// Each unlinked file and memfd stored (device, inode, what holds it,
    /// its name), for [`held_outside`]; not anonymous shared memory
    /// (`vma::shared_outside` looks at that).
    made: Vec<(u64, u64, String, String)>,
}

impl StoredFiles {
    /// The FileId of an unlinked file or memfd (`open_path` opens it, e.g.
    /// /proc/PID/fd/N or /proc/PID/map_files/A-B), its bytes read and
    /// stored; None (and an obstacle) if it cannot be.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        &mut self,
        b: &mut ImageBuilder,
        open_path: &str,
        shown: &str,
        what: &str,
        limits: &Limits,
        obs: &mut Obstacles,
    ) -> Option<u32> {
        let f = match std::fs::File::open(open_path) {
            Ok(f) => f,
            Err(e) => {
                // memfd_secret: its pages are out of the kernel's own
                // reach, by design (a sweep, stop 46, got a bare ENXIO).
                let secret = if shown.starts_with("/secretmem") {
                    ", as secret memory (memfd_secret) is made to be: no other process, nor the kernel, can read it"
                } else {
                    ""
                };
                obs.push(format!(
                    "{what} ({shown}): cannot open it to store its contents: {e}{secret}"
                ));
                return None;
            }
        };
        let md = match f.metadata() {
            Ok(m) => m,
            Err(e) => {
                obs.push(format!("{what} ({shown}): {e}"));
                return None;
            }
        };
        if let Some(&i) = self.by_inode.get(&(md.dev(), md.ino())) {
            self.note_made(md.dev(), md.ino(), what, shown);
            return Some(i);
        }
        let memfd = shown.starts_with("/memfd:");
        if !memfd && md.nlink() > 0 {
            obs.push(format!(
                "{what} ({shown}): its name was removed but the file has {} other link(s); cryo cannot reopen that inode by name",
                md.nlink()
            ));
            return None;
        }
        let base = shown.trim_end_matches(" (deleted)");
        let path = if memfd {
            base.trim_start_matches('/').to_owned()
        } else {
            base.to_owned()
        };
        // Only data is stored (holes are not): the limit is on that.
        let ranges = data_ranges(&f, md.len());
        let stored: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        if md.is_file() && stored > limits.max_file_data {
            obs.push(format!(
                "{what} ({shown}) holds {stored} bytes of data, over the {} bytes cryo stores for a file that exists nowhere else (--max-file-data)",
                limits.max_file_data
            ));
            return None;
        }
        let seals = if memfd {
            sys::fcntl_int(&f, libc::F_GET_SEALS, 0).unwrap_or(0) as u32
        } else {
            0
        };
        let first_extent = b.extents.len() as u32;
        if md.is_file() {
            match read_ranges(&f, &ranges) {
                Ok(ext) => self.push_extents(b, ext),
                Err(e) => {
                    obs.push(format!("{what} ({shown}): reading its contents: {e}"));
                    return None;
                }
            }
        }
        let r = b.strings.add(&path);
        b.files.push(FileId {
            path: r,
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            mode: md.mode(),
            flags: file_flags::DELETED | if memfd { file_flags::MEMFD } else { 0 },
            seals,
            first_extent,
            extent_count: b.extents.len() as u32 - first_extent,
            uid: md.uid(),
            gid: md.gid(),
            // (Made again at restore: a new birth.)
            ..Default::default()
        });
        let idx = (b.files.len() - 1) as u32;
        self.by_inode.insert((md.dev(), md.ino()), idx);
        self.note_made(md.dev(), md.ino(), what, shown);
        Some(idx)
    }

    /// For [`held_outside`]: a stored file held by `what`, once per file;
    /// not anonymous shared memory, nor a file held at fds 0-2 only (a
    /// restore gives its own fds there: pytest's captured output, a
    /// shell's log removed after `exec >log`, were refused by a first
    /// version, a review of stop 51).
    fn note_made(&mut self, dev: u64, ino: u64, what: &str, shown: &str) {
        let stdio = matches!(what, "fd 0" | "fd 1" | "fd 2");
        if shown == crate::vma::SHARED_ANON_NAME
            || stdio
            || self.made.iter().any(|m| (m.0, m.1) == (dev, ino))
        {
            return;
        }
        self.made
            .push((dev, ino, what.to_owned(), shown.to_owned()));
    }
}

/// A file restore makes again (unlinked, or a memfd: its bytes stored) is
/// a new file then: a process outside the captured ones holding the same
/// file (an fd on it, or a shared mapping) would no longer see what the
/// restored process writes there, nor it that one's. Refused, each such
/// process named. (A child captured without its parent, both holding a
/// memfd or an unlinked temporary file the parent made before the fork,
/// came back with a copy of its own, without a word: stop 51.) Every
/// other process's fds and maps are read once per capture, only when
/// there is such a file (`outside`: that reading).
pub fn held_outside(
    stored: &StoredFiles,
    captured: &[i32],
    maps: &mut Option<Vec<crate::vma::OutsideShared>>,
    outside: &mut Option<Vec<(u64, u64, i32)>>,
    obs: &mut Obstacles,
) {
    if stored.made.is_empty() {
        return;
    }
    let outside = outside.get_or_insert_with(|| outside_unlinked(captured, maps));
    for (dev, ino, what, shown) in &stored.made {
        let mut others: Vec<i32> = outside
            .iter()
            .filter(|&&(d, i, _)| (d, i) == (*dev, *ino))
            .map(|&(_, _, p)| p)
            .collect();
        others.sort_unstable();
        others.dedup();
        for other in others {
            let comm = std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
            obs.push(format!(
                "{what} ({shown}) exists nowhere else (restore makes it again from the bytes stored) and is also held by pid {other} ({}), which is not captured: restored, each would have a file of its own, and neither would see what the other writes; capture them together (a common parent with its tree: `cryo capture --help`), or close it in one of them first",
                comm.trim()
            ));
        }
    }
}

/// (device, inode, PID) of every unlinked file and memfd that a process
/// other than the captured ones (and this one) holds open or maps shared
/// (the other processes' shared mappings read once per capture, for this
/// and `vma::shared_outside` both: `maps`). (Mapped privately, as the
/// unlinked libraries of an upgrade are in every process that ran before
/// it, the file is only read.)
fn outside_unlinked(
    captured: &[i32],
    maps: &mut Option<Vec<crate::vma::OutsideShared>>,
) -> Vec<(u64, u64, i32)> {
    let mut out = Vec::new();
    crate::pipes::each_fd(None, |pid, path, t| {
        if captured.contains(&pid) || !(t.ends_with(" (deleted)") || t.starts_with("/memfd:")) {
            return;
        }
        if let Ok(md) = std::fs::metadata(path) {
            out.push((md.dev(), md.ino(), pid));
        }
    });
    let maps = maps.get_or_insert_with(|| crate::vma::outside_shared_maps(captured));
    for (dev, inode, path, other) in maps.iter() {
        if !(path.ends_with(" (deleted)") || path.starts_with("/memfd:")) {
            continue;
        }
        let parsed = dev.split_once(':').and_then(|(major, minor)| {
            Some((
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ))
        });
        if let Some((major, minor)) = parsed {
            out.push((libc::makedev(major, minor), *inode, *other));
        }
    }
    out
}

/// Largest file mapped shared whose bytes are kept (`file_flags::KEPT`).
pub const MAX_KEPT: u64 = 1 << 20;

impl StoredFiles {
    /// Data extents of a file into the extents table, their bytes to
    /// pages.img after the memory.
    fn push_extents(&mut self, b: &mut ImageBuilder, ext: Vec<(u64, Vec<u8>)>) {
        for (off, bytes) in ext {
            b.extents.push(Extent {
                file_off: off,
                data: Blob::default(),
            });
            self.blobs.push(PendingBlob {
                to: BlobOwner::Extent(b.extents.len() - 1),
                bytes,
            });
        }
    }

    /// A file on disk that the process maps shared and writable (`index` in the files
    /// table, opened through `open_path`): its bytes kept, to make it
    /// again at its path if it is gone at restore, when it is a regular
    /// file of at most [`MAX_KEPT`] bytes of data still the one at its
    /// path. Nothing is kept otherwise (the restore then needs the file).
    pub fn keep(&mut self, b: &mut ImageBuilder, index: u32, open_path: &str) {
        let Some(id) = b.files.get(index as usize) else {
            return;
        };
        if id.flags != 0 {
            return;
        }
        let Ok(f) = std::fs::File::open(open_path) else {
            return;
        };
        let Ok(md) = f.metadata() else {
            return;
        };
        let same = md.dev() == id.dev
            && md.ino() == id.ino
            && md.len() == id.size
            && md.mtime() == id.mtime_sec
            && md.mtime_nsec() as u32 == id.mtime_nsec;
        let ranges = data_ranges(&f, md.len());
        let small = ranges.iter().map(|(a, b)| b - a).sum::<u64>() <= MAX_KEPT;
        if !md.is_file() || !same || !small {
            return;
        }
        let Ok(ext) = read_ranges(&f, &ranges) else {
            return;
        };
        let first_extent = b.extents.len() as u32;
        self.push_extents(b, ext);
        let id = &mut b.files[index as usize];
        id.flags = file_flags::KEPT;
        id.first_extent = first_extent;
        id.extent_count = b.extents.len() as u32 - first_extent;
    }
}

impl StoredFiles {
    /// A file an fd refers to is not made again (the fd reopens its
    /// path), so a kept copy of it is dropped (its extents stay, empty):
    /// only mappings are made from one.
    pub fn not_kept(&mut self, b: &mut ImageBuilder, index: u32) {
        let Some(id) = b.files.get_mut(index as usize) else {
            return;
        };
        if id.flags != file_flags::KEPT {
            return;
        }
        let range = id.first_extent as usize..(id.first_extent + id.extent_count) as usize;
        id.flags = 0;
        id.extent_count = 0;
        for blob in &mut self.blobs {
            if matches!(blob.to, BlobOwner::Extent(i) if range.contains(&i)) {
                blob.bytes = Vec::new();
            }
        }
    }
}

/// The data ranges [start, end) of a file (SEEK_DATA / SEEK_HOLE).
fn data_ranges(f: &std::fs::File, size: u64) -> Vec<(u64, u64)> {
    data_ranges_in(f, 0, size)
}

/// The data ranges of a file within [from, to), page aligned.
pub(crate) fn data_ranges_in(f: &std::fs::File, from: u64, to: u64) -> Vec<(u64, u64)> {
    let size = to;
    let seek = |off: u64, whence: i32| crate::sys::lseek(f, off, whence).ok();
    let mut out = Vec::new();
    let mut off = from;
    while off < size {
        let Some(start) = seek(off, libc::SEEK_DATA) else {
            break; // ENXIO: only a hole remains
        };
        if start >= size {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE).unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        let ps = cryo_image::PAGE_SIZE;
        out.push((start / ps * ps, (end.div_ceil(ps) * ps).min(size)));
        off = end;
    }
    out
}

/// The data ranges of a file, read in full.
fn read_ranges(f: &std::fs::File, ranges: &[(u64, u64)]) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        out.push((start, buf));
    }
    Ok(out)
}
