//! This process's own state: what restore checks against the image and
//! sets before the exec (umask, personality, limits, scheduling, prctl
//! flags), and what it reads of itself (CPU state layout, TLS, vDSO, clocks).

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use nix::sched::CpuSet;

/// umask(mask).
pub fn umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_retain(mask));
}

/// getpid().
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// Whether this process is a child subreaper (orphans below it are
/// reparented to it).
pub fn is_child_subreaper() -> bool {
    let mut on: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int, `on`, which we own.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut on as *mut libc::c_int) };
    r == 0 && on != 0
}

/// personality(persona).
pub fn personality(persona: u32) -> io::Result<()> {
    // SAFETY: personality takes an integer.
    cvt(unsafe { libc::personality(persona as libc::c_ulong) })?;
    Ok(())
}

/// getrlimit(resource): (soft, hard).
pub fn getrlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit, `lim`, which we own.
    cvt(unsafe { libc::getrlimit(resource as _, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// setrlimit(resource, {soft, hard}).
pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one struct rlimit, `lim`.
    cvt(unsafe { libc::setrlimit(resource as _, &lim) })?;
    Ok(())
}

/// sched_getscheduler(0): this process's scheduling policy.
pub fn sched_policy() -> io::Result<i32> {
    // SAFETY: sched_getscheduler takes an integer.
    cvt(unsafe { libc::sched_getscheduler(0) })
}

/// sched_getparam(0): this process's static priority.
pub fn sched_priority() -> io::Result<i32> {
    let mut p = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getparam writes one sched_param, `p`, which we own.
    cvt(unsafe { libc::sched_getparam(0, &mut p) })?;
    Ok(p.sched_priority)
}

/// sched_setscheduler(0, policy, {priority}).
pub fn set_scheduler(policy: i32, priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads one sched_param, `p`.
    cvt(unsafe { libc::sched_setscheduler(0, policy, &p) })?;
    Ok(())
}

/// getpriority(PRIO_PROCESS, 0): the nice value (-1 is one; errno tells).
pub fn nice() -> io::Result<i32> {
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes integers only.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if n == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// setpriority(PRIO_PROCESS, 0, nice).
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers only.
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) })?;
    Ok(())
}

/// sched_getaffinity(0).
pub fn affinity() -> io::Result<CpuSet> {
    Ok(nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(
        0,
    ))?)
}

/// sched_setaffinity(0, set).
pub fn set_affinity(set: &CpuSet) -> io::Result<()> {
    Ok(nix::sched::sched_setaffinity(
        nix::unistd::Pid::from_raw(0),
        set,
    )?)
}

const IOPRIO_WHO_PROCESS: i64 = 1;

/// ioprio_get(IOPRIO_WHO_PROCESS, 0).
pub fn ioprio() -> io::Result<i64> {
    // SAFETY: ioprio_get takes integers only.
    cvt(unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0i64) })
}

/// ioprio_set(IOPRIO_WHO_PROCESS, 0, prio).
pub fn set_ioprio(prio: i64) -> io::Result<()> {
    // SAFETY: ioprio_set takes integers only.
    cvt(unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0i64, prio) })?;
    Ok(())
}

/// PR_GET_MDWE: this process's memory-deny-write-execute flags.
pub fn mdwe() -> io::Result<i32> {
    const PR_GET_MDWE: i32 = 66;
    // SAFETY: PR_GET_MDWE takes no pointer.
    cvt(unsafe { libc::prctl(PR_GET_MDWE, 0, 0, 0, 0) })
}

/// PR_TIMER_CREATE_RESTORE_IDS_GET: fails where the kernel cannot create
/// POSIX timers with given ids (before Linux 6.16).
pub fn timer_restore_ids() -> io::Result<i32> {
    const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
    const GET: libc::c_ulong = 2;
    // SAFETY: the GET operation only reads a flag; no pointer.
    cvt(unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, GET, 0, 0, 0) })
}

/// A trial of the AIO contexts of an image, as the shim will make them
/// (`shim/src/aio.rs`): each `(nr, head, unreaped)` a context with a ring
/// of `nr` events, asked for as little as gives it (fs.aio-max-nr counts
/// what is asked; all are kept until the end, as their sum counts), its
/// head reached with requests that complete at once and are reaped, then
/// `unreaped` more left in it, all on one CPU (a context hands requests
/// out in per-CPU batches). The first that fails: its index and why.
/// Every trial context is destroyed again.
pub fn aio_trial(rings: &[(u32, u32, u32)]) -> Result<(), (usize, String)> {
    if rings.is_empty() {
        return Ok(());
    }
    // SAFETY: memfd_create takes a C string; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"cryo-aio".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err((0, format!("memfd_create: {}", io::Error::last_os_error())));
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let had = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    // SAFETY: sched_getcpu takes nothing.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu >= 0 {
        let mut one = nix::sched::CpuSet::new();
        if one.set(cpu as usize).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one);
        }
    }
    let mut made: Vec<u64> = Vec::new();
    let mut verdict = Ok(());
    for (k, &(nr, head, unreaped)) in rings.iter().enumerate() {
        let r = aio_setup(nr).and_then(|ctx| {
            made.push(ctx);
            aio_place(ctx, head, unreaped, fd.as_raw_fd())
        });
        if let Err(why) = r {
            verdict = Err((k, why));
            break;
        }
    }
    for ctx in made {
        // SAFETY: io_destroy takes the id of a context made above.
        unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    }
    if let Some(had) = had {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &had);
    }
    verdict
}

/// The events the ring at `ctx` (its address) holds.
fn aio_ring_nr(ctx: u64) -> u32 {
    // SAFETY: the id of a context is the address of the ring the kernel
    // mapped into this process; the second word of its header is its size.
    unsafe { std::ptr::read_volatile((ctx as *const u32).add(1)) }
}

/// A context whose ring holds `nr` events, asked for as little as gives
/// it (1, else what just fills its pages: the kernel doubles a request,
/// adds two, takes at least 4 per possible CPU, rounds up to pages).
fn aio_setup(nr: u32) -> Result<u64, String> {
    let pages = (nr as i64 + 1) / 128;
    let least = (64 * (pages - 1) - 1).max(1);
    for want in [1, least] {
        let mut ctx: u64 = 0;
        // SAFETY: io_setup writes the new context's id to `ctx`, ours.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, want, &mut ctx as *mut u64) };
        if r < 0 {
            return Err(format!(
                "io_setup refused it here: {} (fs.aio-max-nr?)",
                io::Error::last_os_error()
            ));
        }
        if aio_ring_nr(ctx) == nr {
            return Ok(ctx);
        }
        let got = aio_ring_nr(ctx);
        // SAFETY: io_destroy takes the id of the context made above.
        unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
        if want == least {
            return Err(format!("its ring would hold {got} events here, not {nr}"));
        }
    }
    unreachable!("the loop returns")
}

/// Bring the context `ctx`'s head to `head` (requests to `fd` reaped) and
/// leave `unreaped` more in it.
fn aio_place(ctx: u64, head: u32, unreaped: u32, fd: i32) -> Result<(), String> {
    let byte = 0u8;
    // struct iocb: data, key, rw_flags, opcode, reqprio, fildes, buf,
    // nbytes, offset, reserved2, flags, resfd.
    let mut iocb = [0u8; 64];
    iocb[16..18].copy_from_slice(&1u16.to_ne_bytes()); // IOCB_CMD_PWRITE
    iocb[20..24].copy_from_slice(&(fd as u32).to_ne_bytes());
    iocb[24..32].copy_from_slice(&(&byte as *const u8 as u64).to_ne_bytes());
    iocb[32..40].copy_from_slice(&1u64.to_ne_bytes());
    let ptrs = [iocb.as_ptr(); 32];
    let mut events = [0u8; 32 * 32];
    let submit = |k: usize| {
        let (k, list) = (k as libc::c_long, ptrs.as_ptr());
        // SAFETY: `list` holds `k` pointers to one valid iocb, whose buffer
        // `byte` outlives the call; the writes complete within it.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, ctx, k, list) };
        n == k
    };
    let mut reap = |k: usize| {
        let (k, wait) = (k as libc::c_long, std::ptr::null::<libc::timespec>());
        let into = events.as_mut_ptr();
        // SAFETY: io_getevents writes at most `k` (32 or fewer) events of
        // 32 bytes into `events`, ours, room for 32.
        let n = unsafe { libc::syscall(libc::SYS_io_getevents, ctx, k, k, into, wait) };
        n == k
    };
    let mut left = head as usize;
    while left > 0 {
        let k = left.min(32);
        let ok = submit(k) && reap(k);
        if !ok {
            return Err("its head could not be brought to its place here".into());
        }
        left -= k;
    }
    let mut left = unreaped as usize;
    while left > 0 {
        let k = left.min(32);
        if !submit(k) {
            return Err(format!(
                "a context here takes fewer than the {unreaped} requests its ring held unreaped (another number of CPUs?)"
            ));
        }
        left -= k;
    }
    Ok(())
}

/// clock_gettime(clock): (seconds, nanoseconds).
pub fn clock_gettime(clock: i32) -> io::Result<(i64, i64)> {
    let t = nix::time::clock_gettime(nix::time::ClockId::from_raw(clock))?;
    Ok((t.tv_sec(), t.tv_nsec()))
}

/// gettid(2).
pub fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// The kernel's signal frame size (AT_MINSIGSTKSZ: made of the xsave
/// size of the features XCR0 enables), or 0 where it gives none.
pub fn signal_frame_size() -> u64 {
    // SAFETY: getauxval only reads this process's auxiliary vector.
    unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) }
}

/// The xsave area's size for the features XCR0 enables (CPUID leaf 0xD,
/// sub-leaf 0, EBX).
pub fn xsave_size() -> u64 {
    std::arch::x86_64::__cpuid_count(0xd, 0).ebx as u64
}

/// XCR0, the state components XSAVE handles here; 0 where the kernel left
/// xsave off (booted `noxsave`), where xgetbv would fault.
pub fn xcr0() -> u64 {
    // (std's "xsave" is CPUID's XSAVE and OSXSAVE both, asked once.)
    if !std::is_x86_feature_detected!("xsave") {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 reads XCR0, valid where the kernel enabled
    // OSXSAVE, checked above.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    ((hi as u64) << 32) | lo as u64
}

/// arch_prctl(ARCH_GET_XCOMP_SUPP): the dynamic xsave features this
/// kernel offers (0 where it does not tell).
pub fn xcomp_supported() -> u64 {
    const ARCH_GET_XCOMP_SUPP: i32 = 0x1021;
    let mut supp = 0u64;
    // SAFETY: the kernel writes one u64 at the address given, which we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_SUPP,
            &mut supp as *mut u64,
        )
    };
    if r == 0 {
        supp
    } else {
        0
    }
}

/// arch_prctl(ARCH_GET_FS): this thread's TLS base.
pub fn fs_base() -> io::Result<u64> {
    const ARCH_GET_FS: i32 = 0x1003;
    let mut fs: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64, `fs`, which we own.
    cvt(unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut fs as *mut u64) })?;
    Ok(fs)
}

/// One of this process's own kernel mappings, [vvar], [vvar_vclock] or
/// [vdso], as /proc/self/maps lists it. Only [`own_special_maps`] makes
/// one, which is what makes [`SpecialMap::vdso_bytes`] sound.
pub struct SpecialMap {
    start: u64,
    end: u64,
    name: String,
}

impl SpecialMap {
    pub fn start(&self) -> u64 {
        self.start
    }
    pub fn end(&self) -> u64 {
        self.end
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The bytes of the [vdso] (None for the others: [vvar] can have pages
    /// that fault when read).
    pub fn vdso_bytes(&self) -> Option<&'static [u8]> {
        if self.name != "[vdso]" {
            return None;
        }
        // SAFETY: this is this process's [vdso], as /proc/self/maps
        // listed it: mapped readable for its whole length, and never
        // unmapped while cryo runs.
        Some(unsafe {
            std::slice::from_raw_parts(self.start as *const u8, (self.end - self.start) as usize)
        })
    }
}

/// [vvar], [vvar_vclock] and [vdso] of this process.
pub fn own_special_maps() -> io::Result<Vec<SpecialMap>> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
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
        out.push(SpecialMap {
            start: a,
            end: b,
            name: name.to_owned(),
        });
    }
    Ok(out)
}

/// The CPUs a thread of this process may be bound to: online and in its
/// cpuset (sched_setaffinity narrows a mask to them, and fails EINVAL
/// for a mask with none of them). Asked by a short-lived thread that asks
/// for every CPU and reads back what it got, so this process's own
/// affinity stays as it is. None if that could not be asked.
pub fn cpus_allowed() -> Option<[u64; 16]> {
    // (A thread that cannot start, at the cgroup's pids.max, asks
    // nothing: `spawn` would panic, a review found.)
    std::thread::Builder::new()
        .spawn(|| {
            let mut all = CpuSet::new();
            for c in 0..CpuSet::count() {
                let _ = all.set(c);
            }
            set_affinity(&all).ok()?;
            Some(mask_of(&affinity().ok()?))
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

/// A CPU set as the image records one (CPUs 0-1023, one bit each).
pub fn mask_of(set: &CpuSet) -> [u64; 16] {
    let mut mask = [0u64; 16];
    for c in 0..CpuSet::count().min(1024) {
        if set.is_set(c).unwrap_or(false) {
            mask[c / 64] |= 1 << (c % 64);
        }
    }
    mask
}

/// Whether mbind takes policy `mode` (mbind's mode with its flags) on
/// nodes `nodes` here: tried on a page of our own, unmapped again. (Not
/// where the kernel has no NUMA, ENOSYS, or a seccomp filter forbids it,
/// as a container's may: the shim would fail past its point of no
/// return.)
pub fn mbind_probe(mode: u32, nodes: u64) -> io::Result<()> {
    const MPOL_LOCAL: u32 = 4;
    // SAFETY: a new private anonymous page, ours alone.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mask = [nodes];
    let (ptr, maxnode) = if mode & 0xff == MPOL_LOCAL {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), 65)
    };
    // SAFETY: mbind on the page mapped above; it reads `maxnode - 1` bits
    // of `mask` (one word) or none.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            at,
            4096usize,
            mode as usize,
            ptr,
            maxnode,
            0usize,
        )
    };
    let e = io::Error::last_os_error();
    // SAFETY: the page mapped above, used by nothing else.
    unsafe { libc::munmap(at, 4096) };
    if r != 0 {
        return Err(e);
    }
    Ok(())
}
