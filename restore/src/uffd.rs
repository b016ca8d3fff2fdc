//! Small wrappers around a userfaultfd received from the shim, fd passing
//! over unix sockets, the mapping of pages.img, and the few plain system
//! calls of the page server's loop. Every `unsafe` of the page server is
//! here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use cryo_image::handoff::uffd as abi;
const UFFDIO_COPY: libc::c_ulong = abi::UFFDIO_COPY as libc::c_ulong;
const UFFDIO_ZEROPAGE: libc::c_ulong = abi::UFFDIO_ZEROPAGE as libc::c_ulong;
const UFFDIO_WAKE: libc::c_ulong = abi::UFFDIO_WAKE as libc::c_ulong;
/// uffdio_copy.mode: do not wake the range's waiters.
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;
const UFFDIO_API: libc::c_ulong = abi::UFFDIO_API as libc::c_ulong;
/// The features the shim asks for (the same constant it uses).
pub const FEATURES: u64 = abi::CRYO_FEATURES;

pub const EVENT_PAGEFAULT: u8 = 0x12;
pub const EVENT_FORK: u8 = 0x13;
pub const EVENT_REMAP: u8 = 0x14;
pub const EVENT_REMOVE: u8 = 0x15;
pub const EVENT_UNMAP: u8 = 0x16;

/// One `struct uffd_msg` (32 bytes), decoded.
#[derive(Debug, Clone, Copy)]
pub enum Msg {
    Fault { addr: u64 },
    Fork { ufd: RawFd },
    Remap { from: u64, to: u64, len: u64 },
    Remove { start: u64, end: u64 },
    Unmap { start: u64, end: u64 },
    Other,
}

impl Msg {
    fn decode(b: &[u8; 32]) -> Msg {
        let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        match b[0] {
            EVENT_PAGEFAULT => Msg::Fault { addr: u(16) },
            EVENT_FORK => Msg::Fork {
                ufd: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as RawFd,
            },
            EVENT_REMAP => Msg::Remap {
                from: u(8),
                to: u(16),
                len: u(24),
            },
            EVENT_REMOVE => Msg::Remove {
                start: u(8),
                end: u(16),
            },
            EVENT_UNMAP => Msg::Unmap {
                start: u(8),
                end: u(16),
            },
            _ => Msg::Other,
        }
    }
}

/// A userfaultfd (non-blocking).
pub struct Uffd(pub OwnedFd);

/// Result of a fill ioctl.
pub enum Fill {
    /// All bytes in place.
    Done,
    /// Some page was already there (filled concurrently): nothing to do.
    Exists,
    /// The address space is changing (an event is waiting to be read):
    /// read events, then retry.
    Again,
    /// The process is gone.
    Gone,
    /// No registered mapping there any more.
    NoVma,
    /// Anything else (errno).
    Failed(i32),
}

impl Uffd {
    /// Receive one userfaultfd over `sock` (blocking).
    pub fn recv(sock: RawFd) -> io::Result<Option<Uffd>> {
        Ok(recv_fd(sock)?.map(Uffd))
    }

    /// Adopt a fork event's fd (installed in our table by read(2)).
    pub fn adopt(fd: RawFd) -> Uffd {
        // SAFETY: the kernel installed `fd` in this process for us when it
        // delivered the fork event; nothing else owns it.
        Uffd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Read pending messages (non-blocking); empty when none.
    pub fn read_msgs(&self, out: &mut Vec<Msg>) -> io::Result<()> {
        let mut buf = [[0u8; 32]; 64];
        loop {
            // SAFETY: read into a buffer we own, of the size we pass.
            let n = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            let n = n as usize / 32;
            out.extend(buf[..n].iter().map(Msg::decode));
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    /// `arg` is the uffdio struct `req` expects (callers pass the right
    /// length); a source address in it points into a slice the caller
    /// borrows for the call.
    fn ioctl_fill(&self, req: libc::c_ulong, arg: &mut [u64], res_idx: usize) -> (Fill, u64) {
        // SAFETY: the kernel reads `arg` (and, for UFFDIO_COPY, the source
        // bytes it names, alive for the call) and writes only its result
        // field.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg.as_mut_ptr()) };
        let done = arg[res_idx] as i64;
        if r == 0 {
            return (Fill::Done, done as u64);
        }
        let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let partial = done.max(0) as u64;
        // A partial copy fails with EAGAIN and reports the bytes it did.
        let f = match e {
            libc::EEXIST => Fill::Exists,
            libc::EAGAIN => Fill::Again,
            libc::ESRCH => Fill::Gone,
            libc::ENOENT => Fill::NoVma,
            e => Fill::Failed(e),
        };
        (f, partial)
    }

    /// UFFDIO_COPY the bytes of `src` to `dst` in the process. Returns the
    /// outcome and the bytes copied.
    /// `wake`: wake what waits on the range (else its fault, read later,
    /// finds the page there and wakes it then).
    pub fn copy(&self, dst: u64, src: &[u8], wake: bool) -> (Fill, u64) {
        let mode = if wake { 0 } else { UFFDIO_COPY_MODE_DONTWAKE };
        let mut a = [dst, src.as_ptr() as u64, src.len() as u64, mode, 0];
        self.ioctl_fill(UFFDIO_COPY, &mut a, 4)
    }

    /// UFFDIO_ZEROPAGE one range.
    pub fn zero(&self, dst: u64, len: u64) -> (Fill, u64) {
        let mut a = [dst, len, 0, 0];
        self.ioctl_fill(UFFDIO_ZEROPAGE, &mut a, 3)
    }

    /// Wake whatever waits on [dst, dst+len) (after EEXIST).
    pub fn wake(&self, dst: u64, len: u64) {
        let mut a = [dst, len];
        // SAFETY: UFFDIO_WAKE reads one struct uffdio_range we own.
        unsafe { libc::ioctl(self.0.as_raw_fd(), UFFDIO_WAKE, a.as_mut_ptr()) };
    }

    /// Whether a read would find something (a message, or an error):
    /// poll without waiting.
    pub fn readable(&self) -> bool {
        let mut p = [libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        }];
        poll(&mut p, 0) != 0
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Used by `cryo restore` before exec: a socketpair for the shim and the
/// server (SOCK_SEQPACKET keeps the two fd messages apart).
pub fn socketpair() -> io::Result<(RawFd, RawFd)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair writes two fds into sv.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((sv[0], sv[1]))
}

/// write(2) of `b` to `fd`, once: a short write is not continued (the
/// page server's messages and its go-ahead are one small write each).
pub fn write(fd: RawFd, b: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads `b.len()` bytes of a slice we borrow.
    let n = unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pidfd for `pid` (readable once it exits), or -1 if there is none.
/// Never closed: the page server keeps it for its whole life.
pub fn pidfd_open(pid: i32) -> RawFd {
    // SAFETY: pidfd_open takes a pid and flags.
    unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) as RawFd }
}

/// poll(2) over `fds` for at most `timeout_ms`: the number ready, 0 on
/// timeout, -1 on error.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> i32 {
    // SAFETY: the kernel reads and writes `fds.len()` entries of a slice
    // we borrow mutably.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }
}

/// A msghdr for one byte of payload (`iov`) and the control buffer `cbuf`.
fn msghdr(iov: &mut libc::iovec, cbuf: &mut [u64; 8]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(cbuf);
    msg
}

/// Receive one fd sent with SCM_RIGHTS; None at EOF.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let mut cbuf = [0u64; 8];
    let mut msg = msghdr(&mut iov, &mut cbuf);
    loop {
        // SAFETY: msg points at buffers we own, sized as declared.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        break;
    }
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled,
    // bounded by msg_controllen.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message without an fd",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// Send `fd` with SCM_RIGHTS (one byte of payload).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let mut cbuf = [0u64; 8];
    let mut msg = msghdr(&mut iov, &mut cbuf);
    // SAFETY: CMSG_SPACE/LEN compute sizes; CMSG_FIRSTHDR/DATA point into
    // cbuf, which is large enough for one int.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
    }
    // SAFETY: msg points at buffers we own.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A read-only private mapping of a whole file (pages.img).
pub struct Mapped {
    ptr: *const u8,
    len: usize,
}

impl Mapped {
    pub fn open(file: &std::fs::File, len: u64) -> io::Result<Mapped> {
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only mapping of a file we hold open; the
        // kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped {
            ptr: p as *const u8,
            len: len as usize,
        })
    }

    /// Map the page-cache pages of [off, off+len) in one call (instead of
    /// a page fault per 4 KiB on first read). Best effort.
    pub fn populate(&self, off: u64, len: u64) {
        const MADV_POPULATE_READ: i32 = 22;
        if let Some(b) = self.get(off, len) {
            // SAFETY: advice on a range inside our own mapping; no memory
            // is written.
            unsafe { libc::madvise(b.as_ptr() as *mut libc::c_void, b.len(), MADV_POPULATE_READ) };
        }
    }

    /// The whole mapping.
    pub fn bytes(&self) -> &[u8] {
        self.get(0, self.len as u64).unwrap_or(&[])
    }

    /// The bytes [off, off+len), if inside the file.
    pub fn get(&self, off: u64, len: u64) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        // pages.img and sums.img are never written while an image is
        // restored (pages are checked against their checksums before use).
        // SAFETY: [off, end) lies inside the mapping, which lives as long as self.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off as usize), len as usize) })
    }
}

// SAFETY: the mapping is read-only (PROT_READ, never remapped while this
// value lives) and `Drop` unmaps it once; reading it from several threads
// (the page server's second streamer) is reading shared immutable memory.
unsafe impl Send for Mapped {}
// SAFETY: as for Send: nothing writes through it.
unsafe impl Sync for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what open mapped.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

/// Can this process create a userfaultfd with the features lazy restore
/// needs, with kernel-mode faults handled (no UFFD_USER_MODE_ONLY)?
pub fn probe() -> Result<(), String> {
    // SAFETY: userfaultfd takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EPERM) {
            "creating a userfaultfd is not allowed (run as root or with CAP_SYS_PTRACE, \
             or set vm.unprivileged_userfaultfd=1)"
                .into()
        } else {
            format!("userfaultfd: {e}")
        });
    }
    // SAFETY: we own fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut api = [abi::UFFD_API, FEATURES, 0];
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()) };
    if r < 0 {
        return Err(format!(
            "UFFDIO_API with fork/remap/remove/unmap events: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}
