//! The process record's layout and identity: mm fields, auxv, the
//! executable, working directory, name, personality, umask, limits, the
//! vDSO it was captured with.

use crate::capture::CaptureError;
use crate::obstacles::Obstacles;
use crate::procinfo::{self, Mapping, Status};
use crate::tracee::Tracee;
use cryo_image::write::ImageBuilder;
use cryo_image::{process_flags, AuxvEntry, MmFields, Rlimit, NO_INDEX};

/// The vDSO's address and bytes: hashed for restore's check, and where
/// syscall injection finds a `syscall` instruction.
pub fn vdso(t: &Tracee, maps: &[Mapping]) -> Result<Option<(u64, Vec<u8>)>, CaptureError> {
    let Some(v) = maps.iter().find(|m| m.path == "[vdso]") else {
        return Ok(None);
    };
    let mut bytes = vec![0u8; (v.end - v.start) as usize];
    t.read_mem(v.start, &mut bytes)?;
    Ok(Some((v.start, bytes)))
}

pub fn capture(
    t: &Tracee,
    maps: &[Mapping],
    status: &Status,
    vdso: Option<&(u64, Vec<u8>)>,
    b: &mut ImageBuilder,
    obs: &mut Obstacles,
) -> Result<(), CaptureError> {
    let pid = t.pid();
    let exe = procinfo::link(pid, "exe")?;
    let cwd = procinfo::link(pid, "cwd")?;
    let comm = procinfo::comm(pid)?;
    let cwd_deleted = cwd.ends_with(" (deleted)");
    if cwd_deleted {
        // (Made again at restore, with the directories above it that
        // were removed too, for a moment.)
        // A dead process's /proc/PID itself (zdtm unhashed_proc) is made
        // again from a process with that PID, ended at once; anything
        // deeper in one is not.
        let path = cwd.trim_end_matches(" (deleted)");
        if std::path::Path::new(path).starts_with("/proc")
            && cryo_image::types::dead_proc_dir(path).is_none()
        {
            obs.push(format!(
                "its working directory {cwd} is in a dead process's /proc directory; cryo makes /proc/PID of a dead process again, nothing deeper in it"
            ));
        }
    }
    let mm = procinfo::stat_mm(pid)?;
    let p = &mut b.process;
    p.pid = pid as u32;
    if t.was_stopped() {
        p.flags |= process_flags::WAS_STOPPED;
        p.stop_signal = t.stop_signal() as u32;
    }
    if cwd_deleted {
        p.flags |= process_flags::CWD_DELETED;
    }
    // A session of its own without a terminal (a daemon's setsid): led
    // again at restore.
    let st = crate::tree::stat(pid);
    if st
        .as_ref()
        .is_some_and(|s| s.sid == pid as u32 && s.tty_nr == 0)
    {
        p.flags |= process_flags::SESSION_LEADER;
    }
    if st.is_some_and(|s| s.pgid == pid as u32) {
        p.flags |= process_flags::GROUP_LEADER;
    }
    p.personality = procinfo::personality(pid)?;
    p.umask = status.umask;
    let cb = comm.as_bytes();
    let n = cb.len().min(15);
    p.comm[..n].copy_from_slice(&cb[..n]);
    p.captured_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    p.mm = MmFields {
        start_code: mm.start_code,
        end_code: mm.end_code,
        start_data: mm.start_data,
        end_data: mm.end_data,
        start_brk: mm.start_brk,
        brk: heap_end(maps, mm.start_brk),
        start_stack: mm.start_stack,
        arg_start: mm.arg_start,
        arg_end: mm.arg_end,
        env_start: mm.env_start,
        env_end: mm.env_end,
    };
    p.sig_pending = status.sig_pending;
    p.sig_shared_pending = status.shd_pending;
    // (None: the program unmapped its vDSO; all three stay 0.)
    if let Some(vdso) = vdso {
        p.vdso_start = vdso.0;
        p.vdso_len = vdso.1.len() as u64;
        p.vdso_hash = cryo_image::checksum(&vdso.1);
    }
    p.rss_kib = status.vm_rss_kib;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    b.process.kernel = b.strings.add(kernel.trim());
    b.process.exe = b.strings.add(&exe);
    b.process.cwd = b.strings.add(cwd.trim_end_matches(" (deleted)"));
    b.process.exe_file = if exe.ends_with(" (deleted)") {
        NO_INDEX
    } else {
        crate::vma::file_id(b, &exe)
    };
    for (k, v) in procinfo::auxv(pid)? {
        b.auxv.push(AuxvEntry { key: k, val: v });
    }
    for (res, cur, max) in procinfo::rlimits(pid)? {
        b.rlimits.push(Rlimit {
            resource: res,
            _pad: 0,
            cur,
            max,
        });
    }
    Ok(())
}

/// The end of the heap (brk, page-aligned): of the [heap] mappings that
/// follow each other from the first (one, unless parts of it were mapped
/// from a pages.img and not folded back: `procinfo::fold_image_pages`).
fn heap_end(maps: &[Mapping], start_brk: u64) -> u64 {
    maps.iter()
        .skip_while(|m| m.path != "[heap]")
        .scan(None, |end: &mut Option<u64>, m| {
            let go_on = m.path == "[heap]" && end.is_none_or(|e| e == m.start);
            go_on.then(|| {
                *end = Some(m.end);
                m.end
            })
        })
        .last()
        .unwrap_or(start_brk)
}

#[cfg(test)]
mod heap_tests {
    use super::*;

    #[test]
    fn brk_is_the_end_of_the_heaps_parts() {
        let m = |start: u64, end: u64, path: &str| Mapping {
            start,
            end,
            path: path.into(),
            ..Default::default()
        };
        let maps = [
            m(0x1000, 0x2000, "/bin/x"),
            m(0x5000, 0x6000, "[heap]"),
            m(0x6000, 0x8000, "[heap]"),
            m(0x9000, 0xa000, ""),
        ];
        assert_eq!(heap_end(&maps, 0x5000), 0x8000);
        assert_eq!(
            heap_end(&maps[..1], 0x5000),
            0x5000,
            "no heap: brk = start_brk"
        );
    }
}
