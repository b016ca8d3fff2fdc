//! `cryo restore`: everything before the point of no return, then the exec.
//!
//! [`prepare`] loads the image and checks, without changing anything, that
//! it can be restored here: page checksums, files behind mappings, the vDSO
//! bytes and layout, the CPU's xsave layout, the shim's window, fds, rlimits
//! and kernel support. [`Plan::exec`] then starts the tracer, installs fds,
//! cwd, umask, rlimits and personality, and execs `cryo-shim`, which turns
//! this process into the captured one.

mod fds;
pub mod lazy;
mod task;
mod tracer;
mod uffd;

use cryo_image::load::{LoadError, LoadedImage};
use cryo_image::{vma_kind, Image, NO_INDEX, SHIM_WINDOW, SHIM_WINDOW_LEN};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use fds::FdPlan;

/// Why an image cannot be restored here (nothing has been changed yet).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path} changed since capture ({what}); restore needs the very same file")]
    FileChanged { path: String, what: String },
    #[error("{path} is gone ({source}); restore needs the file that was mapped")]
    FileMissing {
        path: String,
        source: std::io::Error,
    },
    #[error("this kernel's vDSO differs from the captured one ({what}); restore on the kernel that captured the image ({kernel})")]
    VdsoDiffers { what: String, kernel: String },
    #[error("this CPU's xsave layout differs from the captured one ({what}); restore on the same kind of CPU")]
    XsaveDiffers { what: String },
    #[error("mapping {start:#x}-{end:#x} ({name}) overlaps cryo-shim's window {SHIM_WINDOW:#x}-{:#x}; this image cannot be restored", SHIM_WINDOW + SHIM_WINDOW_LEN)]
    WindowOverlap { start: u64, end: u64, name: String },
    #[error("the restore shim {} is missing or not executable (set CRYO_SHIM or build it with `cargo build -p cryo-shim`)", .0.display())]
    NoShim(PathBuf),
    #[error("fd {fd} ({what}) cannot be restored: {why}")]
    Fd { fd: i32, what: String, why: String },
    #[error("{path} (unlinked or memfd) cannot be made again: {why}")]
    Stored { path: String, why: String },
    #[error("{0}")]
    Task(String),
    #[error("cannot set {name} to {cur}/{max} (ours: {our_cur}/{our_max}): raising a hard limit needs CAP_SYS_RESOURCE; restore from a shell with the captured limits")]
    Rlimit {
        name: &'static str,
        cur: String,
        max: String,
        our_cur: String,
        our_max: String,
    },
    #[error("the image has POSIX timers but this kernel cannot create timers with given ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+)")]
    NoTimerIds,
    #[error("lazy restore is not possible here: {0}")]
    NoLazy(String),
    #[error("{0}")]
    WorkingSet(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> RestoreError {
    RestoreError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave the restored process stopped (SIGSTOP) instead of running.
    pub keep_stopped: bool,
    /// (restored fd, our fd): give the restored process our fd.
    pub inherit_fds: Vec<(i32, i32)>,
    /// Path of the cryo-shim binary.
    pub shim: PathBuf,
    /// Skip the pages checksum pass (the shim still checks the tables).
    pub no_verify: bool,
    /// The shim prints its phase times on stderr.
    pub phases: bool,
    /// Serve private anonymous memory on demand through userfaultfd.
    pub lazy: Option<LazyOptions>,
    /// Finish with the tracer even where the image's gadgets would do.
    pub use_tracer: bool,
    /// Accept losing bytes that were unread in a pipe the restored fd
    /// does not get back (fds 0-2, --inherit-fd).
    pub drop_pipe_data: bool,
    /// Which of fds 0-2 to restore like every other fd (files reopened at
    /// their offsets, pipes made again...) instead of giving the program
    /// this process's own; terminals are still this process's.
    pub restore_stdio: Vec<i32>,
}

/// How the restore ends once the shim has rebuilt the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The shim unmaps its window through the program's own code and
    /// `rt_sigreturn`s (eager restore, image with gadgets): no other process.
    Gadgets,
    /// A ptrace tracer forked before the exec does it (lazy restore,
    /// --keep-stopped, or no usable gadgets).
    Tracer,
}

/// Lazy restore settings.
#[derive(Debug, Clone)]
pub struct LazyOptions {
    pub mode: lazy::Mode,
    /// Record the pages touched first into the image's working-set file
    /// (serves on demand while recording).
    pub record_working_set: bool,
    /// Do not prefetch a recorded working set.
    pub no_prefetch: bool,
    /// Write the page server's statistics (JSON) here when it exits.
    pub stats: Option<PathBuf>,
}

/// A restore that passed every check and is ready to exec.
pub struct Plan {
    image: LoadedImage,
    opts: Options,
    fds: fds::Plan,
    gadget: u64,
    tid_offset: usize,
    setup: Setup,
    lazy: Option<lazy::Config>,
    finish: Finish,
}

/// Process state `exec` applies before the shim runs, read from the image
/// once at `prepare`.
struct Setup {
    checked: task::Checked,
    cwd: String,
    /// The working directory had been removed: make it again, enter it,
    /// remove it.
    cwd_deleted: bool,
    /// Signals this process ignores (reset to SIG_DFL before the exec).
    ignored: u64,
    umask: u32,
    personality: u32,
    /// The captured limits that differ from ours.
    rlimits: Vec<cryo_image::Rlimit>,
}

impl Plan {
    pub fn image(&self) -> Image<'_> {
        self.image.image().expect("validated at prepare")
    }
    pub fn fds(&self) -> &[FdPlan] {
        &self.fds.fds
    }
    /// The page server's settings (lazy restore), e.g. the prefetch size.
    pub fn lazy(&self) -> Option<&lazy::Config> {
        self.lazy.as_ref()
    }
    /// How the restore will end.
    pub fn finish(&self) -> Finish {
        self.finish
    }
}

/// Load and check everything; change nothing.
pub fn prepare(dir: &Path, opts: Options) -> Result<Plan, RestoreError> {
    let image = LoadedImage::open(dir)?;
    let img = image.image()?;
    let p = img.process();
    let lazy_cfg = match &opts.lazy {
        None => {
            if !opts.no_verify {
                image.verify_pages(|_| {})?;
            }
            None
        }
        Some(l) => {
            uffd::probe().map_err(RestoreError::NoLazy)?;
            // Only what the shim reads is verified now (and the lengths of
            // pages.img and sums.img); the page server verifies each page
            // before it serves it, so the time to resume does not grow with
            // the image.
            let window = cryo_image::lazy::eager_window(&p);
            image.verify_pages_where(|v| match () {
                _ if opts.no_verify => None,
                _ if cryo_image::lazy::is_lazy(v) => Some(window),
                _ => Some((0, u64::MAX)),
            })?;
            let image_id = cryo_image::checksum(image.meta());
            let ws_path = dir.join(lazy::WORKING_SET_FILE);
            let prefetch = if l.record_working_set || l.no_prefetch {
                Vec::new()
            } else {
                lazy::read_working_set(&ws_path, image_id)
                    .map_err(|e| {
                        RestoreError::WorkingSet(format!(
                            "{e}; delete it or record it again with --record-working-set"
                        ))
                    })?
                    .unwrap_or_default()
            };
            Some(lazy::Config {
                mode: l.mode,
                record: l.record_working_set.then_some(ws_path),
                prefetch,
                stats: l.stats.clone(),
                image_id,
                verify: !opts.no_verify,
            })
        }
    };

    // The shim's window must be free in the captured layout.
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

    // Same CPU state layout.
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

    // Same vDSO: bytes, and the vvar/vvar_vclock/vdso arrangement.
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
    let gadget = bytes
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|off| p.vdso_start + off as u64)
        .ok_or_else(|| RestoreError::VdsoDiffers {
            what: "no `syscall` instruction in the vDSO".into(),
            kernel: kernel.clone(),
        })?;

    // Files behind mappings and the executable: the very same files.
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

    if !img.timers().is_empty() {
        // SAFETY: PR_TIMER_CREATE_RESTORE_IDS_GET (2) only reads a flag.
        if unsafe { libc::prctl(77, 2, 0, 0, 0) } < 0 {
            return Err(RestoreError::NoTimerIds);
        }
    }

    let own_status = OwnStatus::read();
    let rlimits = check_rlimits(&img, own_status.cap_sys_resource)?;

    let fds = fds::plan(
        &image,
        &img,
        &opts.inherit_fds,
        opts.drop_pipe_data,
        &opts.restore_stdio,
        !opts.no_verify,
    )?;
    let checked = task::check(&img, &own_status)?;
    let setup = Setup {
        checked,
        cwd: img.str(p.cwd).unwrap_or("/").to_owned(),
        cwd_deleted: p.flags & cryo_image::process_flags::CWD_DELETED != 0,
        ignored: own_status.sig_ignored,
        umask: p.umask,
        personality: p.personality,
        rlimits,
    };

    let finish = if opts.lazy.is_none()
        && !opts.keep_stopped
        && !opts.use_tracer
        && gadgets_in_image(&image, &img)
    {
        Finish::Gadgets
    } else {
        Finish::Tracer
    };

    let shim_ok = std::fs::metadata(&opts.shim)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false);
    if !shim_ok {
        return Err(RestoreError::NoShim(opts.shim.clone()));
    }
    Ok(Plan {
        image,
        opts,
        fds,
        gadget,
        tid_offset: own_tid_offset(),
        setup,
        lazy: lazy_cfg,
        finish,
    })
}

/// Whether the image's gadgets are there and hold the expected code in the
/// image itself (the page's stored copy, or the mapped file's bytes).
fn gadgets_in_image(loaded: &LoadedImage, img: &Image) -> bool {
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

impl Plan {
    /// Start the tracer, set up this process and exec the shim. Returns
    /// only on failure (the process may then be half set up: fds moved).
    pub fn exec(self) -> RestoreError {
        let Setup {
            checked,
            cwd,
            cwd_deleted,
            umask,
            ignored: _,
            personality,
            rlimits,
        } = &self.setup;
        let (umask, personality) = (*umask, *personality);

        let meta = match std::fs::File::open(self.image.dir.join(cryo_image::META_FILE)) {
            Ok(f) => f,
            Err(e) => return e.into_sys("opening meta.img"),
        };
        let pages = match std::fs::File::open(self.image.pages_path()) {
            Ok(f) => f,
            Err(e) => return e.into_sys("opening pages.img"),
        };

        let socks = match self.lazy.as_ref().map(|_| lazy::socketpair()).transpose() {
            Ok(v) => v,
            Err(e) => return e.into_sys("socketpair for the page server"),
        };
        let server = match (&self.lazy, socks) {
            (Some(cfg), Some((shim_end, server_end))) => Some(tracer::ServerStart {
                img: self.image(),
                pages: self.image.pages_path(),
                sums: self.image.sums_path(),
                cfg: cfg.clone(),
                server_end,
                shim_end,
            }),
            _ => None,
        };
        if self.finish == Finish::Tracer {
            if let Err(e) = tracer::start(self.gadget, self.opts.keep_stopped, server.as_ref()) {
                return e;
            }
        }
        // The shim under another name (a hard link): it maps itself from
        // it before it replaces the executable (cryo-shim's remap_self).
        let alias = shim_alias(&self.opts.shim);
        let mut extra = vec![meta.as_raw_fd(), pages.as_raw_fd()];
        if let Some(s) = &server {
            // SAFETY: the server's end belongs to the tracer now.
            unsafe { libc::close(s.server_end) };
            extra.push(s.shim_end);
        }
        if let Some(f) = &alias {
            extra.push(f.as_raw_fd());
        }
        let img = self.image();
        let (installed, files_fd) =
            match fds::install(&self.image, &img, &self.fds, &extra, !self.opts.no_verify) {
                Ok(v) => v,
                Err(e) => return e,
            };
        let (meta_fd, pages_fd) = (installed[0], installed[1]);
        let sock_fd = if server.is_some() { installed[2] } else { -1 };
        let alias_fd = if alias.is_some() {
            installed[installed.len() - 1]
        } else {
            -1
        };
        use cryo_image::handoff::{self, Handoff};
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        let flags = bit(self.opts.phases, handoff::flags::PHASES)
            | bit(server.is_some(), handoff::flags::LAZY)
            | bit(self.finish == Finish::Gadgets, handoff::flags::SELF_UNMAP)
            | bit(checked.same_creds, handoff::flags::SAME_CREDS);
        let cwd_done = if *cwd_deleted {
            fds::enter_removed_dir(&self.fds, cwd)
        } else {
            std::env::set_current_dir(cwd).map_err(|e| e.into_sys(format!("chdir {cwd}")))
        };
        if let Err(e) = cwd_done {
            return e;
        }
        // SAFETY: umask and personality take plain integers.
        unsafe {
            libc::umask(umask as libc::mode_t);
            libc::personality(personality as libc::c_ulong);
        }
        for r in rlimits {
            let lim = libc::rlimit {
                rlim_cur: r.cur,
                rlim_max: r.max,
            };
            // SAFETY: setrlimit reads one struct rlimit.
            if unsafe { libc::setrlimit(r.resource as _, &lim) } < 0 {
                return sys(format!("setrlimit({})", rlimit_name(r.resource)));
            }
        }
        if let Err(e) = task::apply_before_exec(&img, checked) {
            return e;
        }
        let shim = match CString::new(self.opts.shim.as_os_str().as_bytes()) {
            Ok(s) => s,
            Err(_) => return RestoreError::NoShim(self.opts.shim.clone()),
        };
        // The shim sets only the captured dispositions: everything else must
        // be SIG_DFL after the exec, which keeps SIG_IGN (Rust ignores
        // SIGPIPE; nohup, SIGHUP). All signals are blocked first: one that
        // arrives from here on stays pending for the restored program.
        let all = !0u64;
        // SAFETY: rt_sigprocmask reads one 8-byte mask we own.
        unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all, 0usize, 8) };
        for sig in 1..=64 {
            if self.setup.ignored & (1u64 << (sig - 1)) != 0 {
                // SAFETY: resetting a disposition to SIG_DFL; no handler runs.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
        }
        let fd = |v: i32| if v < 0 { handoff::NONE } else { v as u64 };
        let h = Handoff {
            meta_fd: meta_fd as u64,
            pages_fd: pages_fd as u64,
            tid_offset: self.tid_offset as u64,
            flags,
            exec_ns: monotonic_ns(),
            sock_fd: fd(sock_fd),
            alias_fd: fd(alias_fd),
            files_fd: files_fd.map_or(handoff::NONE, |f| f as u64),
        };
        let args: Vec<CString> = std::iter::once("cryo-shim".to_owned())
            .chain(h.encode())
            .map(|s| CString::new(s).expect("no NUL"))
            .collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: argv and envp are NULL-terminated arrays of C strings that
        // outlive the call; execve only returns on failure.
        unsafe { libc::execve(shim.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        sys(format!("exec {}", self.opts.shim.display()))
    }
}

/// `SHIM.text`, if it is the shim's own file under another name (a hard
/// link: same device and inode) or a byte-identical copy.
fn shim_alias(shim: &Path) -> Option<std::fs::File> {
    let path = shim.with_extension("text");
    let f = std::fs::File::open(&path).ok()?;
    let (a, b) = (f.metadata().ok()?, std::fs::metadata(shim).ok()?);
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return Some(f);
    }
    (a.len() == b.len() && std::fs::read(&path).ok()? == std::fs::read(shim).ok()?).then_some(f)
}

trait IntoSys {
    fn into_sys(self, what: impl Into<String>) -> RestoreError;
}
impl IntoSys for std::io::Error {
    fn into_sys(self, what: impl Into<String>) -> RestoreError {
        RestoreError::Sys {
            what: what.into(),
            source: self,
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
fn own_tid_offset() -> usize {
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

fn rlimit_name(r: u32) -> &'static str {
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
fn check_rlimits(img: &Image, cap: bool) -> Result<Vec<cryo_image::Rlimit>, RestoreError> {
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

/// What cryo restore needs from /proc/self/status, read once.
pub(crate) struct OwnStatus {
    cap_sys_resource: bool,
    /// SigIgn: the signals this process ignores.
    sig_ignored: u64,
    /// The whole file, for the task checks.
    text: String,
}

impl OwnStatus {
    fn read() -> OwnStatus {
        const CAP_SYS_RESOURCE: u32 = 24;
        let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let hex = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        OwnStatus {
            cap_sys_resource: hex("CapEff:") & (1 << CAP_SYS_RESOURCE) != 0,
            sig_ignored: hex("SigIgn:"),
            text,
        }
    }
}
