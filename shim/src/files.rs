//! The files behind the program's mappings and its executable: opened
//! (and checked to be the very files captured) before anything is torn
//! down, so a changed file fails the restore while nothing is lost yet;
//! closed again once everything is mapped. Files `cryo restore` made
//! again (unlinked files, memfds) are at consecutive fds from FILES_FD.

use crate::sys::*;
use crate::{check, die, scratch, Args};
use cryo_image::fds::file_flags;
use cryo_image::{vma_kind, Image, NO_INDEX};

/// Whether `cryo restore` made (or opened) the file and passes it at
/// FILES_FD: an unlinked file or memfd, a file opened by its handle (its
/// name removed, its other link elsewhere), and a kept file (which a
/// packed restorer, with no FILES_FD, opens by its path like any other).
fn made_by_restore(flags: u32, files_fd: usize) -> bool {
    flags & (file_flags::DELETED | file_flags::HANDLE) != 0
        || (flags & file_flags::KEPT != 0 && files_fd != usize::MAX)
}

/// Where the files `cryo restore` made are, when not at consecutive fds
/// from FILES_FD: the address of an i32 table, the k-th made file's fd
/// at index k (0: at FILES_FD + k). A child sharing its parent's fd table
/// finds them where its parent's shim took them from its stand-in.
static MADE_AT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The made files are listed at `table` (see [`MADE_AT`]).
pub fn made_files_at(table: usize) {
    MADE_AT.store(table, core::sync::atomic::Ordering::Relaxed);
}

/// One fd per files-table entry (or -1), kept in the shim's scratch
/// pages (there is no allocator).
pub struct Files<'a> {
    img: &'a Image<'a>,
    fds: *mut i32,
    need_rw: *mut u8,
    n: usize,
    files_fd: usize,
}

impl<'a> Files<'a> {
    /// Open every mapped file and the executable. Returns the table and
    /// the executable's fd (u32::MAX if none).
    pub fn open_all(img: &'a Image<'a>, a: &Args) -> (Files<'a>, u32) {
        let n = img.files().len();
        if scratch::FILES_OFF + n * 5 > scratch::FILES_END {
            die(format_args!("too many files ({n})"));
        }
        let fds = scratch::FILES as *mut i32;
        let need_rw = (scratch::FILES + n * 4) as *mut u8;
        for i in 0..n {
            // SAFETY: i < n and both tables fit in scratch (checked above).
            unsafe {
                *fds.add(i) = -1;
                *need_rw.add(i) = 0;
            }
        }
        for v in img.vmas().iter() {
            // A shared mapping that may be made writable (VM_MAYWRITE,
            // 'mw') was of a file open for writing: mprotect(PROT_WRITE)
            // must work again, so the file is opened read-write.
            if v.kind == vma_kind::FILE_SHARED
                && (v.prot & 2 != 0 || v.vmflags & cryo_image::vmflag("mw") != 0)
                && v.file != NO_INDEX
            {
                // SAFETY: file < n (validated) and need_rw has n bytes.
                unsafe { *need_rw.add(v.file as usize) = 1 };
            }
        }
        let mut f = Files {
            img,
            fds,
            need_rw,
            n,
            files_fd: a.files_fd,
        };
        for v in img.vmas().iter() {
            if v.file != NO_INDEX
                && matches!(v.kind, vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED)
            {
                f.open(v.file);
            }
        }
        let p = img.process();
        let exe = if p.exe_file != NO_INDEX {
            f.open(p.exe_file) as u32
        } else {
            u32::MAX
        };
        (f, exe)
    }

    /// Whether file `idx` was made (or opened) by `cryo restore`.
    pub fn made_by_restore(&self, idx: u32) -> bool {
        self.img
            .files()
            .get(idx as usize)
            .is_some_and(|f| made_by_restore(f.flags, self.files_fd))
    }

    /// Leave file `idx`'s fd open past [`Files::close_all`] (its owner
    /// closes it): the executable the finishing chain names.
    pub fn leave_open(&mut self, idx: u32) {
        if (idx as usize) < self.n {
            // SAFETY: idx < n.
            unsafe { *self.fds.add(idx as usize) = -1 };
        }
    }

    /// The fd of the k-th file `cryo restore` made.
    fn made_fd(&self, k: usize) -> usize {
        match MADE_AT.load(core::sync::atomic::Ordering::Relaxed) {
            0 => self.files_fd + k,
            // SAFETY: a table set up by the forked child's shim, with an
            // entry for every fd taken at FILES_FD or above (-1 where
            // none: close and fstat then fail on it).
            at => (unsafe { *(at as *const i32).add(k) }) as usize,
        }
    }

    /// The fd of file `idx`, opened and checked the first time.
    pub fn open(&mut self, idx: u32) -> usize {
        if idx as usize >= self.n {
            die(format_args!("file index {idx} out of range"));
        }
        // SAFETY: idx < n.
        let slot = unsafe { &mut *self.fds.add(idx as usize) };
        if *slot >= 0 {
            return *slot as usize;
        }
        let img = self.img;
        let Some(f) = img.files().get(idx as usize) else {
            die(format_args!("file index {idx} out of range"));
        };
        if made_by_restore(f.flags, self.files_fd) {
            // Made again (unlinked file, memfd) or opened (a kept file) by
            // `cryo restore`: the k-th such file of the table is at
            // FILES_FD + k.
            if self.files_fd == usize::MAX {
                die(format_args!(
                    "file {idx} was not made again by cryo restore"
                ));
            }
            let k = img
                .files()
                .iter()
                .take(idx as usize)
                .filter(|g| made_by_restore(g.flags, self.files_fd))
                .count();
            let fd = self.made_fd(k);
            let mut st = [0u64; 18];
            check(
                syscall3(SYS_FSTAT, fd, st.as_mut_ptr() as usize, 0),
                format_args!("fstat of the made file {idx}"),
            );
            if st[6] != f.size {
                die(format_args!(
                    "the made file {idx} has size {} not {}",
                    st[6], f.size
                ));
            }
            *slot = fd as i32;
            return fd;
        }
        let path = img.str(f.path).unwrap_or("");
        if path.is_empty() || path.len() >= scratch::PATH_LEN {
            die(format_args!("file {idx} has no usable path"));
        }
        let buf = {
            // SAFETY: the scratch mapping holds PATH_LEN bytes at PATH,
            // used by nothing else while this file is opened.
            unsafe { core::slice::from_raw_parts_mut(scratch::PATH as *mut u8, scratch::PATH_LEN) }
        };
        let path_buf = crate::c_path(path, buf);
        // SAFETY: need_rw has n bytes.
        let rw = unsafe { *self.need_rw.add(idx as usize) } != 0;
        let fd = syscall3(
            SYS_OPEN,
            path_buf,
            // (Not blocking: a FIFO in its place would wait for ever;
            // the identity check below refuses it.)
            if rw { O_RDWR } else { O_RDONLY } | O_CLOEXEC | O_NONBLOCK,
            0,
        );
        if fd < 0 {
            die(format_args!(
                "{path} cannot be opened ({}); restore needs the file that was mapped",
                crate::packed::errno_name(-fd)
            ));
        }
        let id = match identify(fd as usize) {
            Ok(id) => id,
            Err(e) => die(format_args!("fstat {path}: errno {}", -e)),
        };
        if id.dev != f.dev
            || id.ino != f.ino
            || id.size != f.size
            || id.mtime != (f.mtime_sec, f.mtime_nsec)
            || !f.same_birth(id.born)
        {
            // (Worded as `cryo restore`'s refusal: a packed restorer
            // checks here what it checks before its exec.)
            die(format_args!(
                "{path} changed since capture (device/inode, size, modification or birth time); restore needs the very same file"
            ));
        }
        *slot = fd as i32;
        fd as usize
    }

    /// What waits for the mappings of the files: flock locks held through
    /// a mapping alone, then memfd seals.
    pub fn after_mapping(&mut self) {
        self.lock_after_mapping();
        self.seal_after_mapping();
    }

    /// Each memfd's seals that wait for its mappings
    /// (`Image::seals_after_mapping`: F_SEAL_FUTURE_WRITE, then
    /// F_SEAL_SEAL), added now that they are made. Another process of a
    /// tree sharing it may have added them first: what is there already
    /// is not added again (a second F_SEAL_SEAL fails EPERM).
    fn seal_after_mapping(&mut self) {
        const F_ADD_SEALS: usize = 1033;
        const F_GET_SEALS: usize = 1034;
        for idx in 0..self.n as u32 {
            let want = self.img.seals_after_mapping(idx);
            if want == 0 {
                continue;
            }
            let fd = self.open(idx);
            for s in [want & !1, want & 1] {
                let have = syscall3(SYS_FCNTL, fd, F_GET_SEALS, 0);
                if s == 0 || (have >= 0 && have as u32 & s == s) {
                    continue;
                }
                check(
                    syscall3(SYS_FCNTL, fd, F_ADD_SEALS, s as usize),
                    format_args!("sealing memfd {idx} ({s:#x}) after its mappings"),
                );
            }
        }
    }

    /// flock locks held through a mapping alone
    /// (`lock_kind::FLOCK_MAPPING`: a JVM's hsperfdata file), taken on the
    /// description the file was mapped with: the mapping keeps it, and
    /// the lock, once the fd is closed. (`cryo restore` found them free.)
    fn lock_after_mapping(&mut self) {
        const LOCK_SH: usize = 1;
        const LOCK_EX: usize = 2;
        const LOCK_NB: usize = 4;
        for l in self.img.locks().iter() {
            if l.kind != cryo_image::fds::lock_kind::FLOCK_MAPPING {
                continue;
            }
            let fd = self.open(l.fd as u32);
            let op = if l.write != 0 { LOCK_EX } else { LOCK_SH };
            check(
                syscall3(SYS_FLOCK, fd, op | LOCK_NB, 0),
                format_args!(
                    "taking the flock lock of file {} again (through its mapping)",
                    l.fd
                ),
            );
        }
    }

    /// Close every fd the shim opened itself, leaving the made files' fds
    /// (a stand-in's, which the child forked in its place takes).
    pub fn close_opened(&self) {
        for (i, f) in self.img.files().iter().enumerate().take(self.n) {
            // SAFETY: i < n.
            let fd = unsafe { *self.fds.add(i) };
            if fd >= 0 && !made_by_restore(f.flags, self.files_fd) {
                syscall3(SYS_CLOSE, fd as usize, 0, 0);
            }
        }
    }

    /// Close every fd the shim opened, and the made files' fds (the
    /// program's own fds were installed by `cryo restore` at their numbers
    /// and are untouched).
    pub fn close_all(self) {
        // Each fd once: a made file's slot holds its FILES_FD + k, closed
        // below with the others. (A second close of a number is never
        // harmless: a child sharing this fd table may have been given it
        // in between, found by a review of stop 36.)
        self.close_opened();
        if self.files_fd != usize::MAX {
            let made = self
                .img
                .files()
                .iter()
                .filter(|f| made_by_restore(f.flags, self.files_fd))
                .count();
            for k in 0..made {
                syscall3(SYS_CLOSE, self.made_fd(k), 0, 0);
            }
        }
    }
}
