//! Everything `cryo restore` checks before the point of no return, one
//! check per resource; each refusal is one line saying what differs.

use crate::{IntoSys, RestoreError};
use cryo_image::load::LoadedImage;
use cryo_image::{vma_kind, Image, Process, NO_INDEX, SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::os::unix::fs::MetadataExt;

/// The shim's window must be free in the captured layout.
pub fn window(img: &Image) -> Result<(), RestoreError> {
    for v in img.vmas().iter() {
        if v.kind != vma_kind::VSYSCALL
            && v.start < SHIM_WINDOW + SHIM_WINDOW_LEN
            && v.end > SHIM_WINDOW
        {
            return Err(RestoreError::WindowOverlap {
                start: v.start,
                end: v.end,
                name: img.str(v.name).unwrap_or("").to_owned(),
            });
        }
    }
    Ok(())
}

/// The same CPU state layout (xsave size and XCR0).
pub fn xsave(p: &Process) -> Result<(), RestoreError> {
    let size = std::arch::x86_64::__cpuid_count(0xd, 0).ebx;
    let xcr0 = xgetbv0();
    if size != p.xsave_size || xcr0 != p.xcr0 {
        return Err(RestoreError::XsaveDiffers {
            what: format!(
                "xsave size {} vs {}, XCR0 {:#x} vs {:#x} here",
                p.xsave_size, size, p.xcr0, xcr0
            ),
        });
    }
    Ok(())
}

/// The same vDSO (bytes, and the vvar/vvar_vclock/vdso arrangement: the
/// same kernel). Returns the address of a `syscall` instruction in it, as
/// the restored program will have it (for the tracer).
pub fn vdso(img: &Image) -> Result<u64, RestoreError> {
    let p = img.process();
    let kernel = img.str(p.kernel).unwrap_or("?").to_owned();
    let own = own_special_maps()?;
    let vdso = own
        .iter()
        .find(|m| m.2 == "[vdso]")
        .ok_or_else(|| RestoreError::VdsoDiffers {
            what: "this process has no [vdso]".into(),
            kernel: kernel.clone(),
        })?;
    let bytes = own_vdso_bytes(vdso.0, vdso.1);
    if bytes.len() as u64 != p.vdso_len || cryo_image::checksum(bytes) != p.vdso_hash {
        return Err(RestoreError::VdsoDiffers {
            what: format!(
                "{} bytes, hash {:#x} here vs {} bytes, hash {:#x} captured",
                bytes.len(),
                cryo_image::checksum(bytes),
                p.vdso_len,
                p.vdso_hash
            ),
            kernel,
        });
    }
    for name in ["[vvar]", "[vvar_vclock]"] {
        let here = own.iter().find(|m| m.2 == name);
        let there = img.vmas().iter().find(|v| img.str(v.name) == Some(name));
        let ok = match (here, there) {
            (Some(h), Some(t)) => {
                h.1 - h.0 == t.end - t.start
                    && vdso.0.wrapping_sub(h.0) == p.vdso_start.wrapping_sub(t.start)
            }
            (None, None) => true,
            _ => false,
        };
        if !ok {
            return Err(RestoreError::VdsoDiffers {
                what: format!("{name} size or position relative to [vdso] differs"),
                kernel,
            });
        }
    }
    bytes
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|off| p.vdso_start + off as u64)
        .ok_or_else(|| RestoreError::VdsoDiffers {
            what: "no `syscall` instruction in the vDSO".into(),
            kernel: kernel.clone(),
        })
}

/// The files behind mappings and the executable: the very same files.
pub fn mapped_files(img: &Image) -> Result<(), RestoreError> {
    let p = img.process();
    let mut checked = vec![false; img.files().len()];
    let mut want: Vec<u32> = img
        .vmas()
        .iter()
        .filter(|v| v.file != NO_INDEX)
        .map(|v| v.file)
        .collect();
    if p.exe_file != NO_INDEX {
        want.push(p.exe_file);
    }
    for idx in want {
        if std::mem::replace(&mut checked[idx as usize], true) {
            continue;
        }
        let f = img.files().get(idx as usize).expect("validated index");
        if f.flags & cryo_image::fds::file_flags::DELETED != 0 {
            continue; // made again from the image (fds::plan checks it)
        }
        let path = img.str(f.path).unwrap_or("").to_owned();
        let md = std::fs::metadata(&path).map_err(|source| RestoreError::FileMissing {
            path: path.clone(),
            source,
        })?;
        let mut what = Vec::new();
        if md.dev() != f.dev || md.ino() != f.ino {
            what.push("a different file now (device/inode)".to_owned());
        }
        if md.size() != f.size {
            what.push(format!("size {} → {}", f.size, md.size()));
        }
        if md.mtime() != f.mtime_sec || md.mtime_nsec() as u32 != f.mtime_nsec {
            what.push("modification time".to_owned());
        }
        if !what.is_empty() {
            return Err(RestoreError::FileChanged {
                path,
                what: what.join(", "),
            });
        }
    }
    Ok(())
}

/// POSIX timers come back with their ids (PR_TIMER_CREATE_RESTORE_IDS).
pub fn timers(img: &Image) -> Result<(), RestoreError> {
    if !img.timers().is_empty() {
        // SAFETY: PR_TIMER_CREATE_RESTORE_IDS_GET (2) only reads a flag.
        if unsafe { libc::prctl(77, 2, 0, 0, 0) } < 0 {
            return Err(RestoreError::NoTimerIds);
        }
    }
    Ok(())
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 reads XCR0; the OS enables OSXSAVE on every
    // x86_64 CPU this runs on (the capture side read XCR0 the same way).
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    ((hi as u64) << 32) | lo as u64
}

/// This process's own vDSO bytes, [start, end) as /proc/self/maps names it.
fn own_vdso_bytes(start: u64, end: u64) -> &'static [u8] {
    // SAFETY: [vdso] is mapped readable in this process for its whole
    // length and is never unmapped while cryo runs.
    unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) }
}

/// [vvar], [vvar_vclock] and [vdso] of this process: (start, end, name).
fn own_special_maps() -> Result<Vec<(u64, u64, String)>, RestoreError> {
    let text = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| e.into_sys("reading /proc/self/maps"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]") {
            continue;
        }
        let range = line.split_whitespace().next().unwrap_or("");
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push((a, b, name.to_owned()));
    }
    Ok(out)
}

/// Offset of glibc's cached TID in the TCB, found in this process's own
/// TCB (the restored program almost always uses the same glibc; the shim
/// verifies the word before rewriting it). 0 if not found exactly once.
pub fn own_tid_offset() -> usize {
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64) };
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    if fs == 0 {
        return 0;
    }
    // Read through /proc/self/mem: a short read at the end of the TCB's
    // mapping is an error there, not a fault.
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open("/proc/self/mem")
        .and_then(|f| f.read_at(&mut buf, fs))
        .unwrap_or(0);
    let hits: Vec<usize> = (0x10..n.saturating_sub(3))
        .step_by(4)
        .filter(|&off| u32::from_le_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) == tid)
        .collect();
    if hits.len() == 1 {
        hits[0]
    } else {
        0
    }
}

const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

pub fn rlimit_name(r: u32) -> &'static str {
    RLIMIT_NAMES.get(r as usize).copied().unwrap_or("RLIMIT_?")
}

fn lim_str(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Every captured limit must be settable: raising a hard limit needs
/// CAP_SYS_RESOURCE, which this machine's root lacks.
/// Returns the captured limits that differ from ours (the ones to set).
pub fn rlimits(img: &Image, cap: bool) -> Result<Vec<cryo_image::Rlimit>, RestoreError> {
    let mut differ = Vec::new();
    for r in img.rlimits().iter() {
        let mut ours = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one struct rlimit.
        if unsafe { libc::getrlimit(r.resource as _, &mut ours) } < 0 {
            continue;
        }
        if (r.max > ours.rlim_max && !cap) || r.cur > r.max {
            return Err(RestoreError::Rlimit {
                name: rlimit_name(r.resource),
                cur: lim_str(r.cur),
                max: lim_str(r.max),
                our_cur: lim_str(ours.rlim_cur),
                our_max: lim_str(ours.rlim_max),
            });
        }
        if (r.cur, r.max) != (ours.rlim_cur, ours.rlim_max) {
            differ.push(r);
        }
    }
    Ok(differ)
}

/// Whether the image's gadgets are there and hold the expected code in the
/// image itself (the page's stored copy, or the mapped file's bytes).
pub fn gadgets_in_image(loaded: &LoadedImage, img: &Image) -> bool {
    use cryo_image::gadget;
    let Some(g) = img.gadgets() else {
        return false;
    };
    let ok = |addr: u64, len: usize, is: fn(&[u8]) -> bool| {
        image_bytes(loaded, img, addr, len).is_some_and(|b| is(&b))
    };
    ok(
        g.syscall_ret,
        gadget::SYSCALL_RET_MAX,
        gadget::is_syscall_ret,
    ) && ok(g.sigreturn, gadget::SIGRETURN_MAX, gadget::is_sigreturn)
}

/// `len` bytes at `addr` of the captured process as a restore will rebuild
/// them (within one page, or two for a sequence that crosses a boundary):
/// from pages.img where a DATA run covers the page, else from the file
/// behind the mapping; None where the bytes are not known here.
fn image_bytes(loaded: &LoadedImage, img: &Image, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let ps = cryo_image::PAGE_SIZE;
    let mut out = Vec::with_capacity(len);
    let mut a = addr;
    while out.len() < len {
        let page = a & !(ps - 1);
        let n = ((page + ps - a) as usize).min(len - out.len());
        let mut buf = vec![0u8; n];
        let v = img.vmas().iter().find(|v| v.start <= a && a < v.end)?;
        let runs = img.page_runs();
        let run = (v.first_run..v.first_run + v.run_count)
            .filter_map(|j| runs.get(j as usize))
            .find(|r| r.vaddr <= a && a < r.vaddr + r.len());
        match run {
            Some(r) if r.kind == cryo_image::run_kind::DATA => {
                let f = std::fs::File::open(loaded.pages_path()).ok()?;
                f.read_exact_at(&mut buf, r.offset + (a - r.vaddr)).ok()?;
            }
            Some(_) => {} // a ZERO run
            None if v.file != NO_INDEX => {
                let fid = img.files().get(v.file as usize)?;
                let f = std::fs::File::open(img.str(fid.path)?).ok()?;
                f.read_exact_at(&mut buf, v.pgoff + (a - v.start)).ok()?;
            }
            None => return None,
        }
        out.extend_from_slice(&buf);
        a += n as u64;
    }
    Some(out)
}
