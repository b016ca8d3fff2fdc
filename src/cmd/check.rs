//! `cryo check`: like `criu check`, which kernel features and privileges cryo
//! needs are present here, each tested for real (not inferred from versions),
//! with a hint when something is missing.

use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

/// Check that this kernel and machine have what cryo needs.
///
/// Each check exercises the feature itself (ptrace-seizes a child, opens a
/// userfaultfd, calls PR_SET_MM_MAP in a child) and prints ok, warn or FAIL
/// with a hint. Exit status 0 when every required check passes.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Print the results as JSON.
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Serialize, Debug)]
struct Check {
    name: &'static str,
    status: Status,
    /// Needed by capture or restore (a failure makes `cryo check` exit 1).
    required: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'static str>,
}

fn check(
    name: &'static str,
    required: bool,
    r: std::result::Result<String, String>,
    hint: &'static str,
) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            status: Status::Ok,
            required,
            detail,
            hint: None,
        },
        Err(detail) => Check {
            name,
            status: if required { Status::Fail } else { Status::Warn },
            required,
            detail,
            hint: Some(hint),
        },
    }
}

pub fn run(a: CheckArgs) -> Result<i32> {
    let checks = vec![
        check("architecture", true, arch(), "cryo supports x86_64 only"),
        check(
            "kernel",
            true,
            kernel(),
            "cryo needs Linux >= 5.13 (PTRACE_GET_RSEQ_CONFIGURATION, UFFD events)",
        ),
        check(
            "ptrace",
            true,
            ptrace_probe(),
            "run as root or with CAP_SYS_PTRACE; check /proc/sys/kernel/yama/ptrace_scope (0 or 1 with root)",
        ),
        check(
            "capabilities",
            false,
            caps(),
            "restore names the program's executable (/proc/PID/exe) and a tree's PIDs, which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE: restore as root",
        ),
        check(
            "userfaultfd",
            false,
            uffd(),
            "lazy restore needs userfaultfd: run as root or set vm.unprivileged_userfaultfd=1",
        ),
        check(
            "pr_set_mm_map",
            true,
            mm_map(),
            "restore needs prctl(PR_SET_MM, PR_SET_MM_MAP): kernel with CONFIG_CHECKPOINT_RESTORE",
        ),
        check(
            "xsave",
            true,
            xsave(),
            "the CPU must support XSAVE; images restore only on a CPU with the same XCR0 and xsave size",
        ),
        check(
            "vdso",
            true,
            vdso(),
            "cryo expects [vdso] (and [vvar]) mappings; booting with vdso=0 is unsupported",
        ),
        check(
            "shim",
            false,
            shim(),
            "build it with `cargo build` (binary cryo-shim next to cryo) or set CRYO_SHIM",
        ),
    ];
    let ok = checks.iter().all(|c| !c.required || c.status == Status::Ok);
    // Capture works without them (a user's own processes); restore not
    // (nor without its shim: "can capture and restore" was said with the
    // shim missing, a sweep of stop 47).
    let restores = checks
        .iter()
        .filter(|c| c.name == "capabilities" || c.name == "shim")
        .all(|c| c.status == Status::Ok);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "checks": checks}))?
        );
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{tag} {:<14} {}", c.name, c.detail);
            if let Some(h) = c.hint {
                println!("     {:<14} fix: {h}", "");
            }
        }
        println!(
            "{}",
            if ok && restores {
                "cryo can capture and restore on this machine"
            } else if ok {
                "cryo can capture on this machine, but cannot restore here (see capabilities and shim)"
            } else {
                "cryo cannot work here: see FAIL lines above"
            }
        );
    }
    Ok(if ok { 0 } else { 1 })
}

type R = std::result::Result<String, String>;

fn arch() -> R {
    if cfg!(target_arch = "x86_64") {
        Ok("x86_64".into())
    } else {
        Err(std::env::consts::ARCH.into())
    }
}

fn kernel() -> R {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("cannot read kernel release: {e}"))?;
    let rel = rel.trim().to_string();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if (major, minor) >= (5, 13) {
        Ok(format!("Linux {rel}"))
    } else {
        Err(format!("Linux {rel} is older than 5.13"))
    }
}

/// Seize and interrupt a real child, read its registers and rseq
/// configuration, then let it go.
fn ptrace_probe() -> R {
    use nix::sys::ptrace;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("10")
        .spawn()
        .map_err(|e| format!("cannot start a probe child: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Wait until the child sleeps (past glibc start-up, which registers rseq).
    for _ in 0..200 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if st
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('S'))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let res = (|| -> R {
        ptrace::seize(pid, ptrace::Options::empty()).map_err(|e| format!("PTRACE_SEIZE: {e}"))?;
        ptrace::interrupt(pid).map_err(|e| format!("PTRACE_INTERRUPT: {e}"))?;
        match waitpid(pid, None) {
            Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::Stopped(..)) => {}
            other => return Err(format!("unexpected wait status {other:?}")),
        }
        let regs = ptrace::getregs(pid).map_err(|e| format!("PTRACE_GETREGS: {e}"))?;
        let rseq = rseq_config(pid);
        ptrace::detach(pid, None).map_err(|e| format!("PTRACE_DETACH: {e}"))?;
        Ok(format!(
            "seize/interrupt/getregs work (child rip {:#x}); {}",
            regs.rip, rseq
        ))
    })();
    let _ = kill(pid, Signal::SIGKILL);
    let _ = child.wait();
    res
}

fn rseq_config(pid: nix::unistd::Pid) -> String {
    let mut conf = libc::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
    // SAFETY: the request writes at most `size_of(conf)` bytes into `conf`,
    // which we own; pid is a tracee stopped by us.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid.as_raw(),
            std::mem::size_of_val(&conf),
            &mut conf as *mut _,
        )
    };
    if r < 0 {
        format!(
            "PTRACE_GET_RSEQ_CONFIGURATION failed: {}",
            std::io::Error::last_os_error()
        )
    } else if conf.rseq_abi_size == 0 {
        "glibc does not register rseq here".into()
    } else {
        format!(
            "rseq registered by glibc (size {}, signature {:#x})",
            conf.rseq_abi_size, conf.signature
        )
    }
}

fn caps() -> R {
    use caps::{CapSet, Capability};
    let eff = caps::read(None, CapSet::Effective).map_err(|e| e.to_string())?;
    let names = [
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_SYS_RESOURCE,
        Capability::CAP_CHECKPOINT_RESTORE,
    ];
    let have: Vec<String> = names
        .iter()
        .map(|c| format!("{}{c}", if eff.contains(c) { "+" } else { "-" }))
        .collect();
    let line = have.join(" ");
    if eff.contains(&Capability::CAP_SYS_ADMIN) || eff.contains(&Capability::CAP_CHECKPOINT_RESTORE)
    {
        Ok(line)
    } else {
        Err(line)
    }
}

/// Open a userfaultfd and negotiate the API; report the features cryo uses.
fn uffd() -> R {
    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }
    const UFFDIO_API: libc::c_ulong = cryo_image::handoff::uffd::UFFDIO_API as libc::c_ulong;
    // SAFETY: userfaultfd(2) takes only flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(format!(
            "userfaultfd(2): {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = fd as libc::c_int;
    let mut api = UffdioApi {
        api: cryo_image::handoff::uffd::UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes exactly one `uffdio_api` struct,
    // which `api` is (repr(C), three u64 fields as in linux/userfaultfd.h).
    let r = unsafe { libc::ioctl(fd, UFFDIO_API, &mut api as *mut UffdioApi) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(format!("UFFDIO_API: {err}"));
    }
    // Named from the one table of kernel bit values (cryo_image::handoff).
    let names: Vec<&str> = cryo_image::handoff::uffd::FEATURE_NAMES
        .iter()
        .filter(|(b, _)| api.features & b != 0)
        .map(|(_, n)| *n)
        .collect();
    Ok(format!(
        "features {:#x} ({})",
        api.features,
        names.join(" ")
    ))
}

/// PR_SET_MM_MAP in a forked child, with the child's own current values.
fn mm_map() -> R {
    const PR_SET_MM: libc::c_int = 35;
    const PR_SET_MM_MAP: libc::c_ulong = 14;
    const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE writes one unsigned int to the pointer.
    let r = unsafe {
        libc::prctl(
            PR_SET_MM,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut libc::c_uint,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(format!(
            "PR_SET_MM_MAP_SIZE: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Build the map from /proc/self before forking (no allocation after fork).
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let after = stat.rsplit_once(") ").ok_or("bad /proc/self/stat")?.1;
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse::<i64>().unwrap_or(0) as u64)
        .collect();
    // fields after ") " start at field 3 (state); field n is f[n-3].
    let g = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let mut auxv = std::fs::read("/proc/self/auxv").map_err(|e| e.to_string())?;
    #[repr(C)]
    struct PrctlMmMap {
        start_code: u64,
        end_code: u64,
        start_data: u64,
        end_data: u64,
        start_brk: u64,
        brk: u64,
        start_stack: u64,
        arg_start: u64,
        arg_end: u64,
        env_start: u64,
        env_end: u64,
        auxv: *mut u8,
        auxv_size: u32,
        exe_fd: u32,
    }
    // SAFETY: sbrk(0) only reads the current break.
    let brk = unsafe { libc::sbrk(0) } as u64;
    let map = PrctlMmMap {
        start_code: g(26),
        end_code: g(27),
        start_data: g(45),
        end_data: g(46),
        start_brk: g(47),
        brk,
        start_stack: g(28),
        arg_start: g(48),
        arg_end: g(49),
        env_start: g(50),
        env_end: g(51),
        auxv: auxv.as_mut_ptr(),
        auxv_size: auxv.len() as u32,
        exe_fd: u32::MAX,
    };
    // SAFETY: the child only calls async-signal-safe prctl and _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: `map` is a valid prctl_mm_map of `size_of` bytes and
            // `auxv` points at its buffer; the child exits right after.
            let r = unsafe {
                libc::prctl(
                    PR_SET_MM,
                    PR_SET_MM_MAP,
                    &map as *const PrctlMmMap,
                    std::mem::size_of::<PrctlMmMap>(),
                    0,
                )
            };
            let code = if r == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
            };
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => {
                    Ok(format!("works (struct prctl_mm_map is {size} bytes)"))
                }
                Ok(nix::sys::wait::WaitStatus::Exited(_, e)) => Err(format!(
                    "PR_SET_MM_MAP failed: {}",
                    std::io::Error::from_raw_os_error(e)
                )),
                other => Err(format!("probe child ended oddly: {other:?}")),
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

fn xgetbv0() -> u64 {
    let (eax, edx): (u32, u32);
    // SAFETY: xgetbv with ecx=0 reads XCR0; it is valid whenever
    // CPUID.1:ECX.OSXSAVE is set, which the caller checked.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") eax, out("edx") edx, options(nomem, nostack));
    }
    ((edx as u64) << 32) | eax as u64
}

fn xsave() -> R {
    let l1 = std::arch::x86_64::__cpuid(1);
    if l1.ecx & (1 << 27) == 0 {
        return Err("OSXSAVE not enabled: no XSAVE".into());
    }
    let d = std::arch::x86_64::__cpuid_count(0xd, 0);
    Ok(format!(
        "xsave area {} bytes for XCR0 {:#x}",
        d.ebx,
        xgetbv0()
    ))
}

fn vdso() -> R {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let mut found = vec![];
    for l in maps.lines() {
        for n in ["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"] {
            if l.ends_with(n) {
                let range = l.split_whitespace().next().unwrap_or("");
                let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
                let len = u64::from_str_radix(b, 16)
                    .unwrap_or(0)
                    .saturating_sub(u64::from_str_radix(a, 16).unwrap_or(0));
                found.push(format!("{n} {} KiB", len / 1024));
            }
        }
    }
    if found.iter().any(|f| f.starts_with("[vdso]")) {
        Ok(found.join(", "))
    } else {
        Err("no [vdso] mapping".into())
    }
}

fn shim() -> R {
    let p = shim_path();
    if !p.is_file() {
        return Err(format!("{} not found", p.display()));
    }
    verify_shim(&p)?;
    Ok(p.display().to_string())
}

/// The size and xxh3-64 of the shim this cryo was built with (build.rs).
pub fn built_shim() -> (u64, u64) {
    let len = env!("CRYO_SHIM_LEN").parse().unwrap_or(0);
    let sum = u64::from_str_radix(env!("CRYO_SHIM_XXH3"), 16).unwrap_or(0);
    (len, sum)
}

/// Whether the shim at `p` is, byte for byte, the one this cryo was built
/// with (another build's, or a truncated copy, would be exec'd at the
/// point of no return).
pub fn verify_shim(p: &std::path::Path) -> Result<(), String> {
    let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let (len, sum) = built_shim();
    if bytes.len() as u64 != len || cryo_image::checksum(&bytes) != sum {
        return Err(format!(
            "{} is not the shim this cryo was built with ({} bytes, checksum {:016x}; built with {len} bytes, {sum:016x}): install cryo and cryo-shim together, from one build",
            p.display(),
            bytes.len(),
            cryo_image::checksum(&bytes)
        ));
    }
    Ok(())
}

/// Where `cryo restore` looks for the shim binary.
pub fn shim_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CRYO_SHIM") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("cryo-shim")))
        .unwrap_or_else(|| PathBuf::from("cryo-shim"))
}
