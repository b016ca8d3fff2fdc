//! Reading an image directory from disk (std only, plain file I/O).

use crate::{Image, ImageError, MAX_META_LEN, META_FILE, PAGES_FILE};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Why an image directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: no such image directory", .0.display())]
    NoDir(PathBuf),
    #[error("{}: not a cryo image directory (no {META_FILE})", .0.display())]
    NotImage(PathBuf),
    #[error("reading {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", .path.display())]
    Image { path: PathBuf, source: ImageError },
}

/// meta.img read into memory, parsed and validated.
#[derive(Debug)]
pub struct LoadedImage {
    pub dir: PathBuf,
    /// Private: [`LoadedImage::image`] trusts these bytes to be the ones
    /// `open` verified.
    meta: Vec<u8>,
}

impl LoadedImage {
    /// Read, parse and validate meta.img (pages are not read; see
    /// [`LoadedImage::verify_pages`]).
    pub fn open(dir: &Path) -> Result<LoadedImage, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::NoDir(dir.to_owned()));
        }
        let path = dir.join(META_FILE);
        if !path.exists() {
            return Err(LoadError::NotImage(dir.to_owned()));
        }
        let io_err = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::open(&path).map_err(io_err)?;
        let len = f.metadata().map_err(io_err)?.len();
        if len > MAX_META_LEN {
            return Err(LoadError::Image {
                path,
                source: ImageError::TooLarge { len },
            });
        }
        let mut meta = Vec::with_capacity(len as usize);
        f.read_to_end(&mut meta).map_err(io_err)?;
        let img_err = |source| LoadError::Image {
            path: path.clone(),
            source,
        };
        Image::parse(&meta)
            .and_then(|i| i.validate())
            .map_err(img_err)?;
        Ok(LoadedImage {
            dir: dir.to_owned(),
            meta,
        })
    }

    /// meta.img's bytes, as verified by `open`.
    pub fn meta(&self) -> &[u8] {
        &self.meta
    }

    /// The parsed view. `open` checked every checksum of these bytes, which
    /// this value owns and never changes: they are not hashed again.
    pub fn image(&self) -> Result<Image<'_>, LoadError> {
        Image::parse_verified(&self.meta).map_err(|source| LoadError::Image {
            path: self.dir.join(META_FILE),
            source,
        })
    }

    pub fn pages_path(&self) -> PathBuf {
        self.dir.join(PAGES_FILE)
    }

    /// Check pages.img's length and every DATA run's checksum, streaming the
    /// file in 8 MiB reads. `progress` is called with bytes checked so far.
    pub fn verify_pages(&self, progress: impl FnMut(u64)) -> Result<(), LoadError> {
        self.verify(progress, |_, _| true)
    }

    /// Check pages.img's length and the checksums of the DATA runs `want`
    /// selects (given the run and its mapping).
    pub fn verify_pages_where(
        &self,
        want: impl Fn(&crate::Vma, &crate::PageRun) -> bool,
    ) -> Result<(), LoadError> {
        self.verify(|_| {}, want)
    }

    fn verify(
        &self,
        mut progress: impl FnMut(u64),
        want: impl Fn(&crate::Vma, &crate::PageRun) -> bool,
    ) -> Result<(), LoadError> {
        let img = self.image()?;
        let path = self.pages_path();
        let io_err = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let img_err = |source| LoadError::Image {
            path: path.clone(),
            source,
        };
        let mut f = File::open(&path).map_err(io_err)?;
        let actual = f.metadata().map_err(io_err)?.len();
        if actual != img.header.pages_len {
            return Err(img_err(ImageError::PagesLength {
                expected: img.header.pages_len,
                actual,
            }));
        }
        let mut buf = Vec::new();
        let mut done = 0u64;
        let runs = img.page_runs();
        let want = &want;
        let selected = img.vmas().iter().flat_map(|v| {
            (v.first_run..v.first_run + v.run_count).filter_map(move |j| {
                let r = runs.get(j as usize)?;
                (r.kind == crate::run_kind::DATA && want(&v, &r)).then_some(r)
            })
        });
        for r in selected {
            if buf.is_empty() {
                buf = vec![0u8; 8 << 20];
            }
            f.seek(SeekFrom::Start(r.offset)).map_err(io_err)?;
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            let mut left = r.len();
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                f.read_exact(&mut buf[..n]).map_err(io_err)?;
                h.update(&buf[..n]);
                left -= n as u64;
                done += n as u64;
            }
            if h.digest() != r.checksum {
                return Err(img_err(ImageError::PageChecksum { vaddr: r.vaddr }));
            }
            progress(done);
        }
        Ok(())
    }
}
