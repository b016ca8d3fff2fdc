//! Writing an image directory atomically.
//!
//! Everything goes into a temporary directory `.NAME.cryo-tmp-PID` next to
//! the destination (mode 0700, files 0600: memory holds secrets). Only when
//! both files are written and fsynced is it renamed into place. Dropping the
//! writer before [`ImageDirWriter::commit`] removes the temporary directory,
//! so an error anywhere (disk full, target gone) leaves nothing that looks
//! like an image.

use cryo_image::{META_FILE, PAGES_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    pages: File,
    pages_len: u64,
    committed: bool,
}

impl ImageDirWriter {
    /// Prepare to write an image to `dest`. `dest` must not exist, or be an
    /// empty directory, or (with `force`) hold a cryo image.
    pub fn create(dest: &Path, force: bool) -> Result<Self, WriteError> {
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
        let pages = match new_file(&pages_path) {
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
            pages_len: 0,
            committed: false,
        })
    }

    /// Append page data (a whole number of pages); returns its offset.
    pub fn append_pages(&mut self, data: &[u8]) -> Result<u64, WriteError> {
        let off = self.pages_len;
        self.pages
            .write_all(data)
            .map_err(io_at(&self.tmp.join(PAGES_FILE)))?;
        self.pages_len += data.len() as u64;
        Ok(off)
    }

    /// Bytes written to pages.img so far.
    pub fn pages_len(&self) -> u64 {
        self.pages_len
    }

    /// Write meta.img, fsync everything and rename the directory into place.
    pub fn commit(mut self, meta: &[u8]) -> Result<PathBuf, WriteError> {
        let pages_path = self.tmp.join(PAGES_FILE);
        self.pages.sync_all().map_err(io_at(&pages_path))?;
        let meta_path = self.tmp.join(META_FILE);
        let mut m = new_file(&meta_path)?;
        m.write_all(meta).map_err(io_at(&meta_path))?;
        m.sync_all().map_err(io_at(&meta_path))?;
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
        let mut w = ImageDirWriter::create(&dest, false).unwrap();
        assert_eq!(w.append_pages(&[1u8; 4096]).unwrap(), 0);
        assert_eq!(w.append_pages(&[2u8; 4096]).unwrap(), 4096);
        w.commit(b"meta").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dest), 0o700);
        assert_eq!(mode(&dest.join(META_FILE)), 0o600);
        assert_eq!(mode(&dest.join(PAGES_FILE)), 0o600);
        assert_eq!(fs::read(dest.join(PAGES_FILE)).unwrap().len(), 8192);

        // An existing image is refused without force, replaced with it.
        assert!(matches!(
            ImageDirWriter::create(&dest, false),
            Err(WriteError::ExistsImage(_))
        ));
        let w = ImageDirWriter::create(&dest, true).unwrap();
        w.commit(b"meta2").unwrap();
        assert_eq!(fs::read(dest.join(META_FILE)).unwrap(), b"meta2");

        // Dropped without commit: nothing left behind.
        let dest2 = base.join("img2");
        let mut w = ImageDirWriter::create(&dest2, false).unwrap();
        w.append_pages(&[0u8; 4096]).unwrap();
        drop(w);
        assert!(!dest2.exists());
        let leftovers: Vec<_> = fs::read_dir(&base).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the first image remains");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refuses_non_image_directories() {
        let base = tmpdir("refuse");
        fs::write(base.join("x"), b"x").unwrap();
        assert!(matches!(
            ImageDirWriter::create(&base, true),
            Err(WriteError::ExistsNotImage(_))
        ));
        fs::remove_dir_all(&base).unwrap();
    }
}
