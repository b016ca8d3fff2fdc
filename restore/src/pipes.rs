//! Pipes and FIFOs whose every end was in the process, made again with
//! their capacity and the bytes that were in them.

use crate::fds::{set_status_flags, FdErr, Plan, Source};
use crate::{sys, RestoreError, Why};
use cryo_image::fd_kind;
use cryo_image::fds::pipe_flags;
use cryo_image::load::LoadedImage;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

#[derive(Debug, Clone)]
pub struct PipeMake {
    pub index: usize,
    /// A FIFO: its path and identity (or, `removed`, the path it had).
    pub fifo: Option<(String, u64, u64)>,
    /// The FIFO's path was removed: a new FIFO is made there (or beside
    /// it, if that name is taken again) and removed again.
    pub removed: bool,
    pub size: u32,
    pub packet: bool,
    pub data: Vec<u8>,
    /// Keep the write end open (someone holds it).
    pub keep_write: bool,
    /// A FIFO no writer opened yet (`pipe_flags::NO_WRITER_YET`): opened
    /// for reading alone.
    pub reader_only: bool,
}

/// A pipe or FIFO end whose every end was in the process: the pipe is
/// made again once (its bytes read from the image), each end takes its
/// side of it; a FIFO fd open read-write opens the path so again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_fd(
    loaded: &LoadedImage,
    fds: &[cryo_image::Fd],
    f: &cryo_image::Fd,
    p: &cryo_image::fds::Pipe,
    target: &str,
    flags: i32,
    verify: bool,
    err: &FdErr,
    out: &mut Plan,
) -> Result<Source, RestoreError> {
    // (One whose other end was outside: `fds::source_of` refuses it.)
    debug_assert!(p.flags & pipe_flags::INSIDE != 0);
    let index = f.object as usize;
    let removed = f.kind == fd_kind::FIFO && target.ends_with(" (deleted)");
    if !out.pipes.iter().any(|m| m.index == index) {
        let fifo = if removed {
            Some((target.trim_end_matches(" (deleted)").to_owned(), 0, 0))
        } else if f.kind == fd_kind::FIFO {
            let md = std::fs::metadata(target).map_err(|e| err.why(format!("{target}: {e}")))?;
            if (md.dev(), md.ino()) != (f.dev, f.ino) {
                return Err(err.why(format!("{target} is a different file now (device/inode)")));
            }
            Some((target.to_owned(), f.dev, f.ino))
        } else {
            None
        };
        let data = if p.data.len > 0 {
            loaded.read_blob(&p.data, verify)?
        } else {
            Vec::new()
        };
        let keep_write = fds.iter().any(|g| {
            matches!(g.kind, fd_kind::PIPE | fd_kind::FIFO)
                && g.object == f.object
                && g.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
        });
        out.pipes.push(PipeMake {
            index,
            fifo,
            removed,
            size: p.size,
            packet: p.flags & pipe_flags::PACKET != 0,
            data,
            keep_write,
            reader_only: p.flags & pipe_flags::NO_WRITER_YET != 0,
        });
    }
    let acc = f.flags as i32 & libc::O_ACCMODE;
    if acc == libc::O_RDWR && f.kind == fd_kind::PIPE {
        return Err(err.why("a pipe end open for both reading and writing"));
    }
    if acc == libc::O_RDWR && removed {
        // The same, through the made FIFO's read end (it has no name).
        return Ok(Source::FifoReadWrite { pipe: index, flags });
    }
    if acc == libc::O_RDWR {
        // A FIFO opened read-write: its own description, opened so again
        // (never blocks), while the ends made with its bytes are open.
        return Ok(Source::Open {
            path: target.to_owned(),
            flags,
            pos: 0,
            dev_ino: Some((f.dev, f.ino)),
            rdev: None,
        });
    }
    Ok(Source::PipeEnd {
        pipe: index,
        write: acc != libc::O_RDONLY,
        flags,
    })
}

/// A made pipe: its two ends (we own them).
pub(crate) struct MadePipe {
    pub index: usize,
    pub read: OwnedFd,
    pub write: Option<OwnedFd>,
}

pub(crate) fn make(m: &PipeMake) -> Result<MadePipe, Why> {
    let (r, w) = match &m.fifo {
        None => {
            let fl = libc::O_CLOEXEC | if m.packet { libc::O_DIRECT } else { 0 };
            sys::pipe2(fl).map_err(|e| Why::sys("pipe2", e))?
        }
        Some((path, _, _)) if m.removed => made_removed_fifo(path, m.index)?,
        Some((path, dev, ino)) => {
            let open = |flags: i32| -> Result<OwnedFd, Why> {
                let f = std::fs::OpenOptions::new()
                    .read(flags & libc::O_ACCMODE == libc::O_RDONLY)
                    .write(flags & libc::O_ACCMODE == libc::O_WRONLY)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| Why::sys(path, e))?;
                let md = f.metadata()?;
                if (md.dev(), md.ino()) != (*dev, *ino) {
                    return Err(format!("{path} was replaced while restoring").into());
                }
                Ok(OwnedFd::from(f))
            };
            if m.reader_only {
                // Its bytes (a writer came and went before this reader
                // opened it) put back through a reader of the moment,
                // and the reader itself opened after the writer is
                // gone: it sees no hang-up, as the captured one did not
                // (a review: such a FIFO with bytes was refused).
                let keep = open(libc::O_RDONLY)?;
                sys::set_pipe_size(keep.as_fd(), m.size as i32)
                    .map_err(|e| Why::sys("giving the FIFO its capacity", e))?;
                if !m.data.is_empty() {
                    let w = open(libc::O_WRONLY)?;
                    write_all(w.as_fd(), &m.data)
                        .map_err(|e| Why::sys("putting the buffered bytes back", e))?;
                }
                let r = open(libc::O_RDONLY)?;
                drop(keep);
                return Ok(MadePipe {
                    index: m.index,
                    read: r,
                    write: None,
                });
            }
            let r = open(libc::O_RDONLY)?;
            let w = open(libc::O_WRONLY)?;
            (r, w)
        }
    };
    let too_small = |e: std::io::Error| -> Why {
        format!(
            "cannot give the pipe its capacity of {} bytes ({e}); raising it past /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE",
            m.size,
        )
        .into()
    };
    match sys::set_pipe_size(w.as_fd(), m.size as i32) {
        Err(e) => return Err(too_small(e)),
        // (Never: the kernel rounds up. The errno shown is the last one.)
        Ok(got) if (got as u32) < m.size => return Err(too_small(std::io::Error::last_os_error())),
        Ok(_) => {}
    }
    set_status_flags(w.as_raw_fd(), libc::O_NONBLOCK)?;
    write_all(w.as_fd(), &m.data).map_err(|e| Why::sys("putting the buffered bytes back", e))?;
    Ok(MadePipe {
        index: m.index,
        read: r,
        write: m.keep_write.then_some(w),
    })
}

/// A FIFO whose path was removed, made again: at its old path if that is
/// free (so /proc/PID/fd names it as the program saw it, `PATH
/// (deleted)`), else beside it; opened at both ends, then removed. Its
/// mode was not captured: 0600.
fn made_removed_fifo(path: &str, index: usize) -> Result<(OwnedFd, OwnedFd), Why> {
    let at = std::path::Path::new(path);
    let beside = at.with_file_name(format!(".cryo-fifo.{}.{index}", std::process::id()));
    let name = if sys::mkfifo(at, 0o600).is_ok() {
        at.to_path_buf()
    } else {
        sys::mkfifo(&beside, 0o600)
            .map_err(|e| Why::sys(format!("mkfifo {}", beside.display()), e))?;
        beside
    };
    let open = |read: bool| {
        std::fs::OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&name)
            .map(OwnedFd::from)
            .map_err(|e| Why::sys(name.display().to_string(), e))
    };
    let ends = open(true).and_then(|r| Ok((r, open(false)?)));
    let removed = std::fs::remove_file(&name);
    let ends = ends?;
    removed.map_err(|e| Why::sys(format!("removing {}", name.display()), e))?;
    Ok(ends)
}

fn write_all(fd: BorrowedFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match sys::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
