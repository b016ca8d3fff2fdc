//! Writing an image directory atomically.
//!
//! Everything goes into a temporary directory `.NAME.cryo-tmp-PID` next to
//! the destination (mode 0700, files 0600: memory holds secrets). Only when
//! both files are written and fsynced is it renamed into place. Dropping the
//! writer before [`ImageDirWriter::commit`] removes the temporary directory,
//! so an error anywhere (disk full, target gone) leaves nothing that looks
//! like an image.

use cryo_image::{META_FILE, PAGES_FILE, SUMS_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: already exists and is not an empty directory or a cryo image", .0.display())]
    ExistsNotImage(PathBuf),
    #[error("{}: already holds a cryo image (use --force to replace it)", .0.display())]
    ExistsImage(PathBuf),
    #[error("{}: parent directory does not exist", .0.display())]
    NoParent(PathBuf),
    #[error("writing {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An image directory being written.
#[derive(Debug)]
pub struct ImageDirWriter {
    tmp: PathBuf,
    dest: PathBuf,
    pages: PageWriter,
    committed: bool,
}

impl ImageDirWriter {
    /// Prepare to write an image to `dest`. `dest` must not exist, or be an
    /// empty directory, or (with `force`) hold a cryo image. `direct`: write
    /// pages.img with O_DIRECT where the filesystem allows it; `expect`: the
    /// page bytes expected, to size the buffers allocated now (see
    /// [`PageWriter`]).
    pub fn create(dest: &Path, force: bool, direct: bool, expect: u64) -> Result<Self, WriteError> {
        if dest.exists() {
            let is_image = dest.join(META_FILE).exists();
            let empty = fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if is_image && !force {
                return Err(WriteError::ExistsImage(dest.to_owned()));
            }
            if !is_image && !empty {
                return Err(WriteError::ExistsNotImage(dest.to_owned()));
            }
        }
        let name = dest
            .file_name()
            .ok_or_else(|| WriteError::NoParent(dest.to_owned()))?
            .to_string_lossy()
            .into_owned();
        let parent = match dest.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_owned(),
            None => return Err(WriteError::NoParent(dest.to_owned())),
        };
        if !parent.is_dir() {
            return Err(WriteError::NoParent(dest.to_owned()));
        }
        let tmp = parent.join(format!(".{name}.cryo-tmp-{}", std::process::id()));
        if tmp.exists() {
            // A leftover of a crashed capture by a process with our PID.
            let _ = fs::remove_dir_all(&tmp);
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_at(&tmp))?;
        let pages_path = tmp.join(PAGES_FILE);
        let pages = match PageWriter::create(&pages_path, direct, expect) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        Ok(ImageDirWriter {
            tmp,
            dest: dest.to_owned(),
            pages,
            committed: false,
        })
    }

    /// The page data stream (pages.img).
    pub fn pages(&mut self) -> &mut PageWriter {
        &mut self.pages
    }

    /// Append page data (a whole number of pages); returns its offset.
    pub fn append_pages(&mut self, data: &[u8]) -> Result<u64, WriteError> {
        let off = self.pages.len();
        let mut rest = data;
        while !rest.is_empty() {
            let spare = self.pages.spare(rest.len())?;
            let n = spare.len();
            spare.copy_from_slice(&rest[..n]);
            self.pages.advance(n);
            rest = &rest[n..];
        }
        Ok(off)
    }

    /// Bytes appended to pages.img so far.
    pub fn pages_len(&self) -> u64 {
        self.pages.len()
    }

    /// Wait until every page appended so far is written (to the page cache,
    /// or to the device with O_DIRECT); nothing is fsynced yet.
    pub fn drain(&mut self) -> Result<(), WriteError> {
        self.pages.drain()
    }

    /// Write sums.img and meta.img, fsync everything and rename the
    /// directory into place.
    pub fn commit(mut self, meta: &[u8], sums: &[u8]) -> Result<PathBuf, WriteError> {
        self.pages.drain()?;
        let pages_path = self.tmp.join(PAGES_FILE);
        self.pages.file.sync_all().map_err(io_at(&pages_path))?;
        for (name, bytes) in [(SUMS_FILE, sums), (META_FILE, meta)] {
            let path = self.tmp.join(name);
            let mut m = new_file(&path)?;
            m.write_all(bytes).map_err(io_at(&path))?;
            m.sync_all().map_err(io_at(&path))?;
        }
        File::open(&self.tmp)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.tmp))?;
        if self.dest.exists() {
            // Checked in create(): an empty directory or (forced) an image.
            // Move it aside first so that a valid image exists at every instant.
            let old = self.tmp.with_extension("old");
            fs::rename(&self.dest, &old).map_err(io_at(&self.dest))?;
            fs::rename(&self.tmp, &self.dest).map_err(io_at(&self.dest))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.tmp, &self.dest).map_err(io_at(&self.dest))?;
        }
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        self.committed = true;
        Ok(self.dest.clone())
    }
}

/// Page buffers grow from 2 MiB (one transparent huge page) to 8 MiB, one
/// size step per buffer: a small capture needs little buffer memory, a
/// large one writes 8 MiB at a time (2.3–2.9 GiB/s for a 1 GiB heap here,
/// against 1.7–2.5 with 2 MiB buffers only). As many as the expected page
/// bytes need are allocated and faulted in when the writer is created,
/// before the target is frozen: fresh memory costs ~0.5 ms per MiB in this
/// VM, which was half of a 16 MiB capture's frozen time.
const BUF_MIN: usize = 2 << 20;
pub const BUF_MAX: usize = 8 << 20;
/// Buffers in the pool: one being filled while the others wait for or are
/// in the writer.
const POOL: usize = 4;

/// pages.img, written by a thread of its own from a small pool of
/// page-aligned buffers, so that reading the target (the caller, filling
/// one buffer) and writing the file (the thread, emptying another) overlap.
///
/// With `direct`, the file is opened with O_DIRECT and the data goes from
/// the buffers to the device without passing through the page cache: in
/// this VM every fresh page-cache page is memory the host must back first,
/// which made buffered writes run anywhere from 0.4 to 4 GiB/s (see
/// docs/pitfalls.md), while direct writes of 8 MiB keep a steady 2.8–3.3 GiB/s,
/// and the fsync at commit has nothing left to write back. A filesystem that
/// refuses O_DIRECT (at open or at the first write) gets buffered writes.
#[derive(Debug)]
pub struct PageWriter {
    file: Arc<File>,
    path: PathBuf,
    /// The buffer being filled, its used bytes, and its offset in the file.
    cur: Option<AlignedBuf>,
    used: usize,
    cur_offset: u64,
    /// Buffers back from the writer.
    free: Vec<AlignedBuf>,
    /// Buffers allocated in advance and not used yet, smallest first.
    unused: std::collections::VecDeque<AlignedBuf>,
    allocated: usize,
    in_flight: usize,
    jobs: Option<mpsc::Sender<(AlignedBuf, usize, u64)>>,
    done: mpsc::Receiver<(AlignedBuf, io::Result<()>)>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Option<io::Error>,
    direct: bool,
}

impl PageWriter {
    fn create(path: &Path, direct: bool, expect: u64) -> Result<Self, WriteError> {
        let mut direct = direct;
        let file = match open_pages(path, direct) {
            Err(WriteError::Io { source, .. })
                if direct && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                direct = false;
                open_pages(path, false)?
            }
            r => r?,
        };
        let file = Arc::new(file);
        let (jobs, rx) = mpsc::channel::<(AlignedBuf, usize, u64)>();
        let (tx, done) = mpsc::channel();
        let f = Arc::clone(&file);
        // One writer thread: with O_DIRECT the device is the limit (two
        // writers measured no faster here), and buffered writes are bound
        // by page allocation, which a second thread would only contend on.
        let thread = std::thread::Builder::new()
            .name("cryo-pages-writer".into())
            .spawn(move || {
                for (buf, len, offset) in rx {
                    let r = write_pages(&f, &buf[..len], offset);
                    if tx.send((buf, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(io_at(path))?;
        let mut w = PageWriter {
            file,
            path: path.to_owned(),
            cur: None,
            used: 0,
            cur_offset: 0,
            free: Vec::new(),
            unused: std::collections::VecDeque::new(),
            allocated: 0,
            in_flight: 0,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            failed: None,
            direct,
        };
        let mut have = 0u64;
        while w.allocated < POOL && (have < expect || w.allocated == 0) {
            let b = w.new_buffer()?;
            have += b.len() as u64;
            w.unused.push_back(b);
        }
        Ok(w)
    }

    /// The next buffer of the growing sequence, faulted in.
    fn new_buffer(&mut self) -> Result<AlignedBuf, WriteError> {
        let size = (BUF_MIN << self.allocated).min(BUF_MAX);
        let b = AlignedBuf::new(size).map_err(|e| self.error(e))?;
        self.allocated += 1;
        Ok(b)
    }

    /// Whether pages.img is written with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Bytes appended so far (the offset of the next byte).
    pub fn len(&self) -> u64 {
        self.cur_offset + self.used as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room to append up to `max` bytes, at offset [`len`](Self::len): fill
    /// (a prefix of) it, then [`advance`](Self::advance). Never empty
    /// when `max > 0`; at most [`BUF_MAX`] long.
    pub fn spare(&mut self, max: usize) -> Result<&mut [u8], WriteError> {
        self.check()?;
        if self.cur.as_ref().is_some_and(|b| self.used == b.len()) {
            self.submit()?;
        }
        if self.cur.is_none() {
            let buf = self.take_buffer()?;
            self.cur = Some(buf);
            self.used = 0;
        }
        let used = self.used;
        match self.cur.as_mut() {
            Some(buf) => {
                let n = max.min(buf.len() - used);
                Ok(&mut buf[used..used + n])
            }
            None => unreachable!("a buffer was just installed"),
        }
    }

    /// Keep `n` bytes of what [`spare`](Self::spare) returned.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(self.cur.as_ref().is_some_and(|b| self.used + n <= b.len()));
        self.used += n;
    }

    /// Hand every appended byte to the writer and wait until all are written.
    pub fn drain(&mut self) -> Result<(), WriteError> {
        self.check()?;
        if self.used > 0 {
            self.submit()?;
        }
        while self.in_flight > 0 {
            self.reap_one()?;
        }
        self.check()
    }

    fn submit(&mut self) -> Result<(), WriteError> {
        let Some(buf) = self.cur.take() else {
            return Ok(());
        };
        let (len, offset) = (self.used, self.cur_offset);
        self.cur_offset += len as u64;
        self.used = 0;
        let sent = self.jobs.as_ref().map(|j| j.send((buf, len, offset)));
        match sent {
            Some(Ok(())) => {
                self.in_flight += 1;
                Ok(())
            }
            _ => Err(self.error(io::Error::other("the page writer thread stopped"))),
        }
    }

    fn take_buffer(&mut self) -> Result<AlignedBuf, WriteError> {
        // The largest buffer that is back (fewer, larger writes), unless the
        // next never-used one is larger: used in ascending order, so the
        // first write starts after 2 MiB are read, not 8.
        let best = (0..self.free.len()).max_by_key(|&i| self.free[i].len());
        let best_len = best.map_or(0, |i| self.free[i].len());
        if self.unused.front().is_some_and(|b| b.len() > best_len) {
            if let Some(b) = self.unused.pop_front() {
                return Ok(b);
            }
        }
        if let Some(i) = best {
            return Ok(self.free.swap_remove(i));
        }
        if self.allocated < POOL {
            return self.new_buffer();
        }
        self.reap_one()?;
        self.check()?;
        self.free
            .pop()
            .ok_or_else(|| self.error(io::Error::other("no page buffer came back")))
    }

    fn reap_one(&mut self) -> Result<(), WriteError> {
        match self.done.recv() {
            Ok((buf, r)) => {
                self.in_flight -= 1;
                self.free.push(buf);
                if let Err(e) = r {
                    self.failed.get_or_insert(e);
                }
                Ok(())
            }
            Err(_) => Err(self.error(io::Error::other("the page writer thread stopped"))),
        }
    }

    /// The first write error, again at every later call: the file has a
    /// hole from then on.
    fn check(&self) -> Result<(), WriteError> {
        match &self.failed {
            Some(e) => Err(self.error(match e.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(e.kind(), e.to_string()),
            })),
            None => Ok(()),
        }
    }

    fn error(&self, source: io::Error) -> WriteError {
        WriteError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for PageWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_pages(path: &Path, direct: bool) -> Result<File, WriteError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
        .map_err(io_at(path))
}

/// Write all of `data` at `offset`. If the file is open with O_DIRECT and
/// the filesystem refuses it only now (EINVAL), drop O_DIRECT and go on
/// buffered.
fn write_pages(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    match f.write_all_at(data, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let fd = f.as_raw_fd();
            // SAFETY: F_GETFL/F_SETFL on an fd we own; no memory is involved.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0 || flags & libc::O_DIRECT == 0 {
                return Err(e);
            }
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
                return Err(e);
            }
            f.write_all_at(data, offset)
        }
        r => r,
    }
}

/// A zeroed anonymous buffer, 2 MiB-aligned and backed by a transparent
/// huge page where the kernel allows. O_DIRECT needs aligned memory, and
/// pinning one huge page per write instead of 512 small ones is what lets
/// direct writes run at 2.9–3.4 GiB/s here instead of 1.8–2.1.
struct AlignedBuf {
    /// The whole mapping (with alignment slack), for munmap.
    map: *mut libc::c_void,
    map_len: usize,
    /// The aligned buffer inside it.
    ptr: *mut u8,
    len: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl AlignedBuf {
    const ALIGN: usize = 2 << 20;

    fn new(len: usize) -> io::Result<Self> {
        let map_len = len + Self::ALIGN;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched. Failure is MAP_FAILED, checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let skip = (map as usize).next_multiple_of(Self::ALIGN) - map as usize;
        // SAFETY: skip < ALIGN, so [ptr, ptr + len) lies inside the mapping.
        let ptr = unsafe { (map as *mut u8).add(skip) };
        // SAFETY: advice on memory this buffer owns. Failure of the first
        // (no THP) only means 4 KiB pages; of the second (before Linux
        // 5.14), that the pages are faulted in on first use instead.
        unsafe {
            libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
            libc::madvise(ptr.cast(), len, libc::MADV_POPULATE_WRITE);
        }
        Ok(AlignedBuf {
            map,
            map_len,
            ptr,
            len,
        })
    }
}

// SAFETY: the buffer is uniquely owned memory, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to `len` bytes of our mapping, initialised
        // (anonymous memory reads as zeros), alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

fn new_file(path: &Path) -> Result<File, WriteError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))
}

impl Drop for ImageDirWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cryo-writer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn commit_creates_private_image_and_drop_cleans_up() {
        let base = tmpdir("commit");
        let dest = base.join("img");
        let mut w = ImageDirWriter::create(&dest, false, true, 0).unwrap();
        assert_eq!(w.append_pages(&[1u8; 4096]).unwrap(), 0);
        assert_eq!(w.append_pages(&[2u8; 4096]).unwrap(), 4096);
        w.commit(b"meta", b"sums").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dest), 0o700);
        assert_eq!(mode(&dest.join(META_FILE)), 0o600);
        assert_eq!(mode(&dest.join(PAGES_FILE)), 0o600);
        assert_eq!(mode(&dest.join(SUMS_FILE)), 0o600);
        assert_eq!(fs::read(dest.join(SUMS_FILE)).unwrap(), b"sums");
        assert_eq!(fs::read(dest.join(PAGES_FILE)).unwrap().len(), 8192);

        // An existing image is refused without force, replaced with it.
        assert!(matches!(
            ImageDirWriter::create(&dest, false, true, 0),
            Err(WriteError::ExistsImage(_))
        ));
        let w = ImageDirWriter::create(&dest, true, false, 0).unwrap();
        w.commit(b"meta2", b"").unwrap();
        assert_eq!(fs::read(dest.join(META_FILE)).unwrap(), b"meta2");

        // Dropped without commit: nothing left behind.
        let dest2 = base.join("img2");
        let mut w = ImageDirWriter::create(&dest2, false, true, 0).unwrap();
        w.append_pages(&[0u8; 4096]).unwrap();
        drop(w);
        assert!(!dest2.exists());
        let leftovers: Vec<_> = fs::read_dir(&base).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the first image remains");
        fs::remove_dir_all(&base).unwrap();
    }

    /// Page data appended in pieces of every size, across buffer
    /// boundaries of the growing pool, lands at the offsets returned, both
    /// with O_DIRECT and through the page cache.
    #[test]
    fn pages_cross_buffers_intact() {
        for direct in [true, false] {
            let base = tmpdir(&format!("pages-{direct}"));
            let dest = base.join("img");
            let mut w = ImageDirWriter::create(&dest, false, direct, 3 << 20).unwrap();
            let mut expect = Vec::new();
            let mut n = 0u32;
            // 1..=37 pages at a time, 30 MiB in all: every buffer size is
            // filled, split at its end and reused.
            while expect.len() < 30 << 20 {
                let pages = (n % 37 + 1) as usize;
                let piece: Vec<u8> = (0..pages * 4096)
                    .map(|i| (i as u32 ^ n.wrapping_mul(0x9e37_79b9)) as u8)
                    .collect();
                let off = w.append_pages(&piece).unwrap();
                assert_eq!(off, expect.len() as u64);
                expect.extend_from_slice(&piece);
                n += 1;
            }
            assert_eq!(w.pages_len(), expect.len() as u64);
            w.commit(b"meta", b"").unwrap();
            let got = fs::read(dest.join(PAGES_FILE)).unwrap();
            assert!(got == expect, "pages.img differs (direct: {direct})");
            fs::remove_dir_all(&base).unwrap();
        }
    }

    /// A write error (disk full) is reported, at the latest by commit, and
    /// nothing is left behind.
    #[test]
    fn write_error_is_reported() {
        let base = tmpdir("enospc");
        let mnt = base.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Not root: the end-to-end full-disk test covers this too.
            fs::remove_dir_all(&base).ok();
            return;
        }
        let dest = mnt.join("img");
        let mut w = ImageDirWriter::create(&dest, false, true, 0).unwrap();
        let page = vec![7u8; 4096];
        let mut failed = None;
        for _ in 0..2048 {
            if let Err(e) = w.append_pages(&page) {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => w.commit(b"meta", b"").unwrap_err(),
        };
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert!(!dest.exists());
        let left = fs::read_dir(&mnt).unwrap().count();
        std::process::Command::new("umount").arg(&mnt).status().ok();
        assert_eq!(left, 0, "the temporary directory is removed");
        fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn refuses_non_image_directories() {
        let base = tmpdir("refuse");
        fs::write(base.join("x"), b"x").unwrap();
        assert!(matches!(
            ImageDirWriter::create(&base, true, true, 0),
            Err(WriteError::ExistsNotImage(_))
        ));
        fs::remove_dir_all(&base).unwrap();
    }
}
