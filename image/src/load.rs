//! Reading an image directory from disk (std only, plain file I/O).

use crate::{
    Image, ImageError, MAX_META_LEN, META_FILE, PAGES_FILE, PAGE_SIZE, SUMS_FILE, SUMS_PER_BLOCK,
};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why an image directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: no such image directory", .0.display())]
    NoDir(PathBuf),
    /// (A sweep of stop 52: a file, or an image's meta.img, given for
    /// its directory was "no such image directory".)
    #[error("{}: not a directory; an image is the directory `cryo capture` wrote{}", .0.display(), .1)]
    NotDir(PathBuf, String),
    /// An image file missing beside a meta.img (a copy cut short).
    #[error("{}: an incomplete image (no {})", .0.display(), .1)]
    Incomplete(PathBuf, &'static str),
    #[error("{}: not a cryo image directory (no {META_FILE})", .0.display())]
    NotImage(PathBuf),
    #[error("reading {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", .path.display())]
    Image { path: PathBuf, source: ImageError },
    /// An image file is another file than the one checked (the directory
    /// was replaced, `cryo capture --force`, while this restore ran).
    #[error("{} is another file than the one checked a moment ago: the image was replaced while it was being restored; restore it again", .0.display())]
    Replaced(PathBuf),
}

/// The files of an image directory ([`LoadedImage::reopen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFile {
    Meta,
    Pages,
    Sums,
}

impl ImageFile {
    pub fn name(self) -> &'static str {
        match self {
            ImageFile::Meta => META_FILE,
            ImageFile::Pages => PAGES_FILE,
            ImageFile::Sums => SUMS_FILE,
        }
    }
}

/// A file's device and inode.
pub type FileId = (u64, u64);

fn file_id(f: &File) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let md = f.metadata()?;
    Ok((md.dev(), md.ino()))
}

/// meta.img read into memory, parsed and validated.
#[derive(Debug)]
pub struct LoadedImage {
    pub dir: PathBuf,
    /// Private: [`LoadedImage::image`] trusts these bytes to be the ones
    /// `open` verified.
    meta: Vec<u8>,
    /// meta.img's, pages.img's and sums.img's device and inode as `open`
    /// found them: every later open by path is checked against them
    /// ([`LoadedImage::reopen`]). Opened again by path without, a
    /// restore running while the directory was captured again (`capture
    /// --force`) mixed two captures' files and died of SIGSEGV in the
    /// program, or a lazy one hung in a fault (a sweep of stop 47).
    ids: [Option<FileId>; 3],
}

impl LoadedImage {
    /// Read, parse and validate meta.img (pages are not read; see
    /// [`LoadedImage::verify_pages`]).
    pub fn open(dir: &Path) -> Result<LoadedImage, LoadError> {
        if !dir.is_dir() {
            if !dir.exists() {
                return Err(LoadError::NoDir(dir.to_owned()));
            }
            let parent = dir.parent().filter(|p| p.join(META_FILE).is_file());
            let hint = match parent {
                Some(p) if !p.as_os_str().is_empty() => {
                    format!(" (this is a file of {})", p.display())
                }
                Some(_) => " (this is a file of the current directory's image: give `.`)".into(),
                None => String::new(),
            };
            return Err(LoadError::NotDir(dir.to_owned(), hint));
        }
        let path = dir.join(META_FILE);
        // Each of the image's files a regular file, looked at before it is
        // opened: a FIFO in its place hung every command (a survey of
        // stop 36). meta.img not there, or not to be looked at: a user
        // without access to a root's 0700 image was told it was no image.
        let not_regular = |path: PathBuf| LoadError::Io {
            path,
            source: std::io::Error::other("not a regular file"),
        };
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::NotImage(dir.to_owned()));
            }
            Err(source) => return Err(LoadError::Io { path, source }),
            Ok(md) if !md.is_file() => return Err(not_regular(path)),
            Ok(_) => {}
        }
        let sums = dir.join(SUMS_FILE);
        let sums_md = std::fs::metadata(&sums).ok();
        if sums_md.as_ref().is_some_and(|md| !md.is_file()) {
            return Err(not_regular(sums));
        }
        let io_err = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::open(&path).map_err(io_err)?;
        let meta_id = file_id(&f).map_err(io_err)?;
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
        let img = Image::parse(&meta).map_err(img_err)?;
        img.validate().map_err(img_err)?;
        // pages.img as long as meta.img says, whatever the verification
        // asked for: a restore with --no-verify of a pages.img of another
        // length died in the shim (SIGSEGV, or an I/O error past the point
        // of no return).
        let pages = dir.join(PAGES_FILE);
        let md = std::fs::metadata(&pages).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                LoadError::Incomplete(dir.to_owned(), PAGES_FILE)
            } else {
                LoadError::Io {
                    path: pages.clone(),
                    source,
                }
            }
        })?;
        if !md.is_file() {
            return Err(not_regular(pages));
        }
        use std::os::unix::fs::MetadataExt;
        let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
        let ids = [Some(meta_id), Some(id(&md)), sums_md.as_ref().map(id)];
        let actual = md.len();
        if actual != img.header.pages_len {
            return Err(LoadError::Image {
                path: pages,
                source: ImageError::PagesLength {
                    expected: img.header.pages_len,
                    actual,
                },
            });
        }
        Ok(LoadedImage {
            dir: dir.to_owned(),
            meta,
            ids,
        })
    }

    /// The device and inode `open` found `which` at, if it was there.
    pub fn id(&self, which: ImageFile) -> Option<FileId> {
        self.ids[which as usize]
    }

    /// Open `which` of the image directory again, refusing another file
    /// than the one `open` checked ([`LoadError::Replaced`]).
    pub fn reopen(&self, which: ImageFile) -> Result<File, LoadError> {
        reopen_checked(&self.dir.join(which.name()), self.id(which)).map_err(|e| match e {
            LoadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                LoadError::Incomplete(self.dir.clone(), which.name())
            }
            e => e,
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

    pub fn sums_path(&self) -> PathBuf {
        self.dir.join(SUMS_FILE)
    }

    /// Check pages.img's and sums.img's lengths and every stored page
    /// against its checksum, streaming pages.img in 256 KiB reads. `progress`
    /// is called with bytes checked so far.
    pub fn verify_pages(&self, progress: impl FnMut(u64)) -> Result<(), LoadError> {
        self.verify(progress, |_| Some((0, u64::MAX)))?;
        let img = self.image()?;
        for b in img.blobs() {
            self.read_blob(&b, true)?;
        }
        Ok(())
    }

    /// The bytes of a blob (pipe data, file contents) from pages.img,
    /// each page checked against sums.img when `verify`.
    pub fn read_blob(&self, b: &crate::fds::Blob, verify: bool) -> Result<Vec<u8>, LoadError> {
        let img = self.image()?;
        let path = self.pages_path();
        let io_err = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let f = self.reopen(ImageFile::Pages)?;
        let mut buf = vec![0u8; (b.pages() * PAGE_SIZE) as usize];
        f.read_exact_at(&mut buf, b.off).map_err(io_err)?;
        if verify {
            let mut sums = Sums::open(self, &img)?;
            for (k, page) in buf.chunks_exact(PAGE_SIZE as usize).enumerate() {
                let i = b.off / PAGE_SIZE + k as u64;
                if crate::checksum(page) != sums.get(&img, i)? {
                    return Err(LoadError::Image {
                        path: path.clone(),
                        source: ImageError::BlobChecksum {
                            offset: i * PAGE_SIZE,
                        },
                    });
                }
            }
        }
        buf.truncate(b.len as usize);
        Ok(buf)
    }

    /// Check the lengths, and the pages of each mapping in the address
    /// range `want` gives for it (none: skip the mapping).
    pub fn verify_pages_where(
        &self,
        want: impl Fn(&crate::Vma) -> Option<(u64, u64)>,
    ) -> Result<(), LoadError> {
        self.verify(|_| {}, want)
    }

    fn verify(
        &self,
        mut progress: impl FnMut(u64),
        want: impl Fn(&crate::Vma) -> Option<(u64, u64)>,
    ) -> Result<(), LoadError> {
        let img = self.image()?;
        let path = self.pages_path();
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LoadError::Io { path, source }
        };
        let img_err = |path: &Path, source| LoadError::Image {
            path: path.to_owned(),
            source,
        };
        let f = self.reopen(ImageFile::Pages)?;
        let actual = f.metadata().map_err(io_err(&path))?.len();
        if actual != img.header.pages_len {
            return Err(img_err(
                &path,
                ImageError::PagesLength {
                    expected: img.header.pages_len,
                    actual,
                },
            ));
        }
        let mut sums = Sums::open(self, &img)?;
        let mut buf = Vec::new();
        let mut done = 0u64;
        let runs = img.page_runs();
        for v in img.vmas().iter() {
            let Some((lo, hi)) = want(&v) else {
                continue;
            };
            for j in v.first_run..v.first_run + v.run_count {
                let Some(r) = runs.get(j as usize) else {
                    break;
                };
                let (a0, a1) = (r.vaddr.max(lo), (r.vaddr + r.len()).min(hi));
                if r.kind != crate::run_kind::DATA || a0 >= a1 {
                    continue;
                }
                if buf.is_empty() {
                    buf = vec![0u8; VERIFY_BUF];
                }
                let mut a = a0;
                while a < a1 {
                    let n = (a1 - a).min(buf.len() as u64) as usize;
                    let off = r.offset + (a - r.vaddr);
                    f.read_exact_at(&mut buf[..n], off).map_err(io_err(&path))?;
                    for (k, page) in buf[..n].chunks_exact(PAGE_SIZE as usize).enumerate() {
                        let i = off / PAGE_SIZE + k as u64;
                        if crate::checksum(page) != sums.get(&img, i)? {
                            let vaddr = a + k as u64 * PAGE_SIZE;
                            return Err(img_err(&path, ImageError::PageChecksum { vaddr }));
                        }
                    }
                    a += n as u64;
                    done += n as u64;
                }
                progress(done);
            }
        }
        Ok(())
    }
}

/// How much of pages.img `verify` reads at a time. Small enough to stay
/// mapped and hot: an 8 MiB buffer cost a page fault per fresh 4 KiB of it
/// on every restore (~3 ms of a 30 MiB image's eager restore here).
const VERIFY_BUF: usize = 256 << 10;

/// sums.img read block by block, each block checked against `page_sums`
/// when it is first read.
struct Sums {
    path: PathBuf,
    file: File,
    block: Option<u64>,
    bytes: Vec<u8>,
}

/// Open `path`, refusing another file than `want` (device, inode), where
/// `want` is known.
pub fn reopen_checked(path: &Path, want: Option<FileId>) -> Result<File, LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let f = File::open(path).map_err(io_err)?;
    if want.is_some_and(|w| file_id(&f).map_err(io_err).is_ok_and(|id| id != w)) {
        return Err(LoadError::Replaced(path.to_owned()));
    }
    Ok(f)
}

impl Sums {
    fn open(loaded: &LoadedImage, img: &Image) -> Result<Sums, LoadError> {
        let path = &loaded.sums_path();
        let io_err = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        let file = loaded.reopen(ImageFile::Sums)?;
        let actual = file.metadata().map_err(io_err)?.len();
        let expected = img.header.pages_len / PAGE_SIZE * 8;
        if actual != expected {
            return Err(LoadError::Image {
                path: path.to_owned(),
                source: ImageError::SumsLength { expected, actual },
            });
        }
        Ok(Sums {
            path: path.to_owned(),
            file,
            block: None,
            bytes: Vec::new(),
        })
    }

    /// The checksum of page `i` of pages.img.
    fn get(&mut self, img: &Image, i: u64) -> Result<u64, LoadError> {
        let k = i / SUMS_PER_BLOCK;
        if self.block != Some(k) {
            let bad = |source| LoadError::Image {
                path: self.path.clone(),
                source,
            };
            let b = img
                .page_sums()
                .get(k as usize)
                .ok_or(bad(ImageError::SumsChecksum { block: k }))?;
            let len = (img.header.pages_len / PAGE_SIZE)
                .saturating_sub(k * SUMS_PER_BLOCK)
                .min(SUMS_PER_BLOCK);
            self.bytes.resize(len as usize * 8, 0);
            self.file
                .read_exact_at(&mut self.bytes, k * SUMS_PER_BLOCK * 8)
                .map_err(|source| LoadError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if !crate::sum_block_ok(&b, &self.bytes) {
                self.block = None;
                return Err(bad(ImageError::SumsChecksum { block: k }));
            }
            self.block = Some(k);
        }
        Ok(crate::page_sum(&self.bytes, i % SUMS_PER_BLOCK).unwrap_or(0))
    }
}
