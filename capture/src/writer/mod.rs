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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

mod pages;
pub use pages::{PageWriter, BUF_MAX};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: already exists and is not an empty directory or a cryo image", .0.display())]
    ExistsNotImage(PathBuf),
    #[error("{}: already holds a cryo image (use --force to replace it)", .0.display())]
    ExistsImage(PathBuf),
    #[error("{}: parent directory does not exist", .0.display())]
    NoParent(PathBuf),
    #[error("{}: a mount point, which the image (written beside it, then renamed into place) cannot replace: capture into a directory inside it", .0.display())]
    MountPoint(PathBuf),
    #[error("{}: the current directory, which the image (written beside it, then renamed into place) would replace: capture into a directory inside it, or a new one", .0.display())]
    OwnCwd(PathBuf),
    #[error("{}: on a read-only file system, where no image can be written", .0.display())]
    ReadOnly(PathBuf),
    #[error("{}: its file system has no space left for an image", .0.display())]
    NoSpace(PathBuf),
    /// (A sweep of stop 52: a user's capture into a directory it cannot
    /// write said "writing .NAME.cryo-tmp-PID: Permission denied".)
    #[error("{}: this user cannot write there (the image is written beside its name, then renamed into place)", .0.display())]
    NotWritable(PathBuf),
    #[error("writing {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    /// (EAGAIN from clone: a sweep of stop 51 read "writing pages.img:
    /// Resource temporarily unavailable".)
    #[error("cannot start the thread that writes {}: {source} (is its cgroup at pids.max? a capture runs two tasks: itself and this writer)", .path.display())]
    Thread { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `dest` may receive an image (as [`ImageDirWriter::create`]
/// will find it), before any work: `cryo run` asks before it starts its
/// program (it ran the program's whole start-up, then found DIR already
/// held an image: a sweep of stop 47).
pub fn check_dest(dest: &Path, force: bool) -> Result<(), WriteError> {
    checked_dest(dest, force).map(|_| ())
}

/// [`check_dest`]: the destination by its real path, its name and its
/// parent.
fn checked_dest(dest: &Path, force: bool) -> Result<(PathBuf, String, PathBuf), WriteError> {
    // An existing directory by its real path: `.` has no name to write
    // beside ("parent directory does not exist"), and a symbolic link
    // to a directory was replaced by the image, the directory it named
    // left empty (a survey of stop 36).
    let dest = if dest.is_dir() {
        fs::canonicalize(dest).map_err(io_at(dest))?
    } else {
        dest.to_owned()
    };
    if dest.exists() {
        let is_image = dest.join(META_FILE).exists();
        let empty = fs::read_dir(&dest)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if is_image && !force {
            return Err(WriteError::ExistsImage(dest));
        }
        if !is_image && !empty {
            return Err(WriteError::ExistsNotImage(dest));
        }
        // The image is renamed into place, so an empty directory is
        // replaced: never this process's own working directory (`cryo
        // capture PID .` left the shell in a removed directory, a sweep
        // of stop 47).
        if std::env::current_dir()
            .and_then(fs::canonicalize)
            .is_ok_and(|c| c == dest)
        {
            return Err(WriteError::OwnCwd(dest));
        }
        // A mount point cannot be replaced (EBUSY, a sweep of stop 47).
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        if dest
            .parent()
            .is_some_and(|p| dev(p).is_some() && dev(p) != dev(&dest))
        {
            return Err(WriteError::MountPoint(dest));
        }
    }
    let name = dest
        .file_name()
        .ok_or_else(|| WriteError::NoParent(dest.clone()))?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_owned(),
        None => return Err(WriteError::NoParent(dest.clone())),
    };
    if !parent.is_dir() {
        return Err(WriteError::NoParent(dest));
    }
    if crate::sys::cannot_write_in(&parent) {
        return Err(WriteError::NotWritable(parent));
    }
    // A read-only or full file system: found before any work (`cryo run`
    // ran its program's whole start-up first: a sweep of stop 51).
    match crate::sys::fs_space(&parent) {
        Some((true, _)) => return Err(WriteError::ReadOnly(parent)),
        Some((false, 0)) => return Err(WriteError::NoSpace(parent)),
        _ => {}
    }
    Ok((dest, name, parent))
}

/// An image directory being written.
#[derive(Debug)]
pub struct ImageDirWriter {
    tmp: PathBuf,
    dest: PathBuf,
    pages: PageWriter,
    committed: bool,
    /// `--force`: an image at `dest` may be replaced (else one that
    /// appeared there since `create` is refused at `commit`).
    force: bool,
}

impl ImageDirWriter {
    /// Prepare to write an image to `dest`. `dest` must not exist, or be an
    /// empty directory, or (with `force`) hold a cryo image. `direct`: write
    /// pages.img with O_DIRECT where the filesystem allows it; `expect`: the
    /// page bytes expected, to size the buffers allocated now (see
    /// [`PageWriter`]).
    pub fn create(dest: &Path, force: bool, direct: bool, expect: u64) -> Result<Self, WriteError> {
        let (dest, name, parent) = checked_dest(dest, force)?;
        let dest = dest.as_path();
        let tmp = parent.join(format!(".{name}.cryo-tmp-{}", std::process::id()));
        remove_leftovers(&parent, &name);
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
            force,
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
    pub fn commit(self, meta: &[u8], sums: &[u8]) -> Result<PathBuf, WriteError> {
        self.commit_tree(meta, sums, &[])
    }

    /// [`ImageDirWriter::commit`] for a process tree: `others` are the
    /// other processes' meta.img, each in its directory inside this one
    /// (e.g. `procs/1234`) beside hard links of this pages.img and
    /// sums.img, which hold every process's pages.
    pub fn commit_tree(
        mut self,
        meta: &[u8],
        sums: &[u8],
        others: &[(String, &[u8])],
    ) -> Result<PathBuf, WriteError> {
        self.pages.drain()?;
        let pages_path = self.tmp.join(PAGES_FILE);
        self.pages.file.sync_all().map_err(io_at(&pages_path))?;
        for (name, bytes) in [(SUMS_FILE, sums), (META_FILE, meta)] {
            let path = self.tmp.join(name);
            let mut m = new_file(&path)?;
            m.write_all(bytes).map_err(io_at(&path))?;
            m.sync_all().map_err(io_at(&path))?;
        }
        for (rel, meta) in others {
            let mut at = self.tmp.clone();
            for part in rel.split('/') {
                at = at.join(part);
                if !at.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&at)
                        .map_err(io_at(&at))?;
                }
            }
            let path = at.join(META_FILE);
            let mut m = new_file(&path)?;
            m.write_all(meta).map_err(io_at(&path))?;
            m.sync_all().map_err(io_at(&path))?;
            for name in [PAGES_FILE, SUMS_FILE] {
                let link = at.join(name);
                fs::hard_link(self.tmp.join(name), &link).map_err(io_at(&link))?;
            }
            File::open(&at)
                .and_then(|d| d.sync_all())
                .map_err(io_at(&at))?;
        }
        // The stamp that every page matches sums.img (restore then skips
        // checking them all again): the sums were computed from these very
        // bytes. Taken after the last hard link (which changes the change
        // time it records). Best effort: without it the first restore checks.
        if let Some(line) = cryo_image::verified::stamp(&self.tmp, meta) {
            let _ = cryo_image::verified::write(&self.tmp, &line);
        }
        if let Some(procs) = others.first().and_then(|(rel, _)| rel.split('/').next()) {
            let procs = self.tmp.join(procs);
            File::open(&procs)
                .and_then(|d| d.sync_all())
                .map_err(io_at(&procs))?;
        }
        File::open(&self.tmp)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.tmp))?;
        // Another capture into the same directory that finished since
        // create() looked: refused, not replaced (two captures into one
        // new directory both said they had written it, and the first
        // one's image was gone: a sweep of stop 47).
        if !self.force && self.dest.join(META_FILE).exists() {
            return Err(WriteError::ExistsImage(self.dest.clone()));
        }
        if self.dest.exists() {
            // Checked in create(): an empty directory or (forced) an image.
            // Swapped with the new one at once (a valid image at every
            // instant), then removed from our temporary name. (Until stop
            // 36 it was moved aside to a fixed `.NAME.old` first: a
            // capture killed before it was removed left it there, and
            // every later --force failed "Directory not empty".)
            match crate::sys::rename_exchange(&self.tmp, &self.dest) {
                Ok(()) => {
                    let _ = fs::remove_dir_all(&self.tmp);
                }
                // (A filesystem without RENAME_EXCHANGE: aside first, to
                // a name of this capture's.)
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let old = PathBuf::from(format!("{}-old", self.tmp.display()));
                    fs::rename(&self.dest, &old).map_err(io_at(&self.dest))?;
                    fs::rename(&self.tmp, &self.dest).map_err(io_at(&self.dest))?;
                    let _ = fs::remove_dir_all(&old);
                }
                Err(e) => return Err(io_at(&self.dest)(e)),
            }
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

/// Remove what killed captures left in `parent`: their temporary
/// directories `.NAME.cryo-tmp-PID` (a SIGKILL of `cryo capture` left one
/// full of pages: a survey of stop 36) whose PID is no longer a cryo,
/// those of other names too if they hold nothing but an image's files
/// and were last changed an hour ago or more (a capture in another PID
/// namespace or on another host may be writing one: its PID says
/// nothing here; until stop 49 only `name`'s went, and 20 killed
/// captures under as many names left 5.6 GB, a sweep), and an old image
/// moved aside to `.NAME.old` by an earlier version.
fn remove_leftovers(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let old = |e: &fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= std::time::Duration::from_secs(3600))
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let ours = file.starts_with(&format!(".{name}.cryo-tmp-"));
        let tail = file
            .strip_prefix('.')
            .and_then(|f| f.rsplit_once(".cryo-tmp-"))
            .map(|(_, t)| t)
            .filter(|_| ours || (old(&e) && only_image_files(&e.path())));
        let stale = match tail {
            // (PID, or PID-old: an image moved aside.)
            Some(pid) => match pid.split('-').next().unwrap_or("").parse::<u32>() {
                // (Ours: a crashed capture by a process with our PID;
                // another name's may be another thread's, live.)
                Ok(p) if p == std::process::id() => ours,
                Ok(p) => fs::read_to_string(format!("/proc/{p}/comm"))
                    .map_or(true, |c| c.trim() != "cryo"),
                Err(_) => false,
            },
            None => file == format!(".{name}.old"),
        };
        if stale && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Whether directory `dir` holds nothing but what an image being written
/// holds (its files, a tree's procs/, temporaries of its own).
fn only_image_files(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        matches!(
            n.as_ref(),
            cryo_image::META_FILE | cryo_image::PAGES_FILE | cryo_image::SUMS_FILE | "procs"
        ) || n.ends_with(".tmp")
    })
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

    /// What killed captures left beside an image (a temporary directory
    /// of a PID that is no cryo, an old image moved aside to the fixed
    /// name earlier versions used) is removed by the next capture there;
    /// another live capture's is not (a survey of stop 36: a `.img.old`
    /// left by a killed capture failed every later --force).
    #[test]
    fn leftovers_of_killed_captures_are_removed() {
        let base = tmpdir("leftovers");
        let dest = base.join("img");
        let w = ImageDirWriter::create(&dest, false, false, 0).unwrap();
        w.commit(b"meta", b"").unwrap();
        // PID 1 is init, not a cryo; a PID above pid_max is no process.
        // (Another name's too, since stop 49, when it holds nothing but
        // an image's files.)
        for stale in [
            ".img.cryo-tmp-1",
            ".img.cryo-tmp-99999999-old",
            ".img.old",
            ".other.cryo-tmp-1",
            ".kept.cryo-tmp-1",
        ] {
            fs::create_dir(base.join(stale)).unwrap();
            fs::write(base.join(stale).join(META_FILE), b"old").unwrap();
        }
        fs::write(base.join(".kept.cryo-tmp-1").join("notes.txt"), b"mine").unwrap();
        // (Another name's, changed an hour ago; one changed just now,
        // which may be a live capture's elsewhere, stays.)
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3700);
        for d in [".other.cryo-tmp-1", ".kept.cryo-tmp-1"] {
            fs::File::open(base.join(d))
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        fs::create_dir(base.join(".new.cryo-tmp-1")).unwrap();
        let w = ImageDirWriter::create(&dest, true, false, 0).unwrap();
        w.commit(b"meta2", b"").unwrap();
        assert_eq!(fs::read(dest.join(META_FILE)).unwrap(), b"meta2");
        let mut left: Vec<String> = fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".kept.cryo-tmp-1", ".new.cryo-tmp-1", "img"],
            "{left:?}"
        );
        fs::remove_dir_all(&base).unwrap();
    }

    /// DIR a symbolic link to an empty directory: the image goes into the
    /// directory, the link stays (it was replaced by the image).
    #[test]
    fn a_link_to_a_directory_is_written_through() {
        let base = tmpdir("link");
        fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let w = ImageDirWriter::create(&base.join("link"), false, false, 0).unwrap();
        w.commit(b"meta", b"").unwrap();
        assert!(fs::symlink_metadata(base.join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read(base.join("real").join(META_FILE)).unwrap(),
            b"meta"
        );
        fs::remove_dir_all(&base).unwrap();
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
