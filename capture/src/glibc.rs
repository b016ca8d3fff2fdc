//! What cryo needs to know about the glibc a process runs: where each
//! thread's `struct pthread` keeps its cached TID. glibc describes its own
//! layout for debuggers in `_thread_db_*` symbols (the descriptors
//! libthread_db reads): `_thread_db_pthread_tid` is three 32-bit words,
//! the field's size in bits, its element count and its offset from the
//! thread pointer. cryo reads that descriptor from the libc the target has
//! mapped (goblin for the ELF), so no offset is hard-coded and a glibc
//! whose layout differs is read correctly.

use crate::procinfo::Mapping;
use goblin::elf::Elf;
use std::os::unix::fs::FileExt;

/// Why the descriptor could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GlibcError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an ELF file cryo can read ({why})")]
    Elf { path: String, why: String },
    #[error(
        "{path} has no _thread_db_pthread_tid descriptor (a glibc without libthread_db support?)"
    )]
    NoDescriptor { path: String },
    #[error("{path}: _thread_db_pthread_tid says a {bits}-bit field x{count} at {offset}, not one 32-bit tid")]
    Odd {
        path: String,
        bits: u32,
        count: u32,
        offset: u32,
    },
}

/// The mapped libc of a process (by file name: `libc.so.6`, `libc-2.x.so`),
/// if any.
pub fn mapped_libc(maps: &[Mapping]) -> Option<&Mapping> {
    maps.iter().find(|m| {
        let name = m.path.rsplit('/').next().unwrap_or("");
        m.path.starts_with('/')
            && (name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so")))
    })
}

/// The offset of the cached TID from the thread pointer, read from the
/// descriptor in `libc` (opened through /proc/PID/map_files, so it is
/// the very file mapped, even if replaced on disk since).
pub fn tid_offset(pid: i32, libc: &Mapping) -> Result<u64, GlibcError> {
    let path = libc.path.clone();
    let io = |source| GlibcError::Io {
        path: path.clone(),
        source,
    };
    let f = std::fs::File::open(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        libc.start, libc.end
    ))
    .or_else(|_| std::fs::File::open(&libc.path))
    .map_err(io)?;
    let bytes = read_whole(&f).map_err(io)?;
    let elf = Elf::parse(&bytes).map_err(|e| GlibcError::Elf {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let sym = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some("_thread_db_pthread_tid"))
        .or_else(|| {
            elf.syms
                .iter()
                .find(|s| elf.strtab.get_at(s.st_name) == Some("_thread_db_pthread_tid"))
        })
        .ok_or_else(|| GlibcError::NoDescriptor { path: path.clone() })?;
    // The symbol's address to a file offset, through its PT_LOAD segment.
    let off = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == goblin::elf::program_header::PT_LOAD)
        .find(|ph| ph.p_vaddr <= sym.st_value && sym.st_value + 12 <= ph.p_vaddr + ph.p_filesz)
        .map(|ph| sym.st_value - ph.p_vaddr + ph.p_offset)
        .ok_or_else(|| GlibcError::NoDescriptor { path: path.clone() })?;
    let w = |i: usize| -> Option<u32> {
        let a = off as usize + i * 4;
        Some(u32::from_le_bytes(bytes.get(a..a + 4)?.try_into().ok()?))
    };
    let (bits, count, offset) = match (w(0), w(1), w(2)) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(GlibcError::NoDescriptor { path }),
    };
    if bits != 32 || count != 1 || offset == 0 || offset >= 4096 {
        return Err(GlibcError::Odd {
            path,
            bits,
            count,
            offset,
        });
    }
    Ok(offset as u64)
}

fn read_whole(f: &std::fs::File) -> std::io::Result<Vec<u8>> {
    let len = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system's libc (as a dynamically linked program maps it)
    /// describes its tid field at the offset where this (statically
    /// linked, same glibc) thread's TCB holds this thread's id.
    #[test]
    fn libc_descriptor_matches_own_tcb() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let mut off = None;
        for _ in 0..200 {
            let maps = crate::procinfo::smaps(pid).unwrap_or_default();
            if let Some(libc) = mapped_libc(&maps) {
                off = Some(tid_offset(pid, libc).unwrap());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        let off = off.expect("sleep maps the system's libc");
        let fs = crate::sys::own_fs_base().unwrap();
        let mut word = [0u8; 4];
        let n =
            crate::sys::process_vm_read(std::process::id() as i32, fs + off, &mut word).unwrap();
        assert_eq!(n, 4);
        assert_eq!(u32::from_le_bytes(word), crate::sys::gettid() as u32);
    }
}
