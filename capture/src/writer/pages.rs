//! pages.img: the page writer, its buffer pool and its writer thread.

use super::{io_at, WriteError};
use crate::sys::{self, buf::AlignedBuf};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

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
    pub(super) file: Arc<File>,
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
    pub(super) fn create(path: &Path, direct: bool, expect: u64) -> Result<Self, WriteError> {
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
            .map_err(|source| WriteError::Thread {
                path: path.to_owned(),
                source,
            })?;
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
            let Ok(flags) = sys::fcntl_int(f, libc::F_GETFL, 0) else {
                return Err(e);
            };
            if flags & libc::O_DIRECT == 0
                || sys::fcntl_int(f, libc::F_SETFL, flags & !libc::O_DIRECT).is_err()
            {
                return Err(e);
            }
            f.write_all_at(data, offset)
        }
        r => r,
    }
}
