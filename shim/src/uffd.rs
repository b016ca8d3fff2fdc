//! Lazy restore's side of the shim: the userfaultfd of the rebuilt
//! address space, handed to the page server, and the server's go-ahead.

use crate::sys::*;
use crate::{check, die};
use cryo_image::handoff;
use cryo_image::Image;

/// Create the userfaultfd of the rebuilt address space, register every
/// lazy mapping in MISSING mode and send the fd to the page server twice
/// over `sock`: one copy for the server, one that stays queued in the
/// socket so the fd outlives a dead server (its watchdog then kills us:
/// faults wait instead of reading zeros).
pub fn hand_to_page_server(img: &Image, sock: usize) {
    let uffd = check(
        syscall3(SYS_USERFAULTFD, O_CLOEXEC | 0o4000, 0, 0),
        format_args!("userfaultfd"),
    );
    let mut api: [u64; 3] = [handoff::uffd::UFFD_API, handoff::uffd::CRYO_FEATURES, 0];
    check(
        syscall3(
            SYS_IOCTL,
            uffd,
            handoff::uffd::UFFDIO_API as usize,
            api.as_mut_ptr() as usize,
        ),
        format_args!("UFFDIO_API"),
    );
    for v in img.vmas().iter() {
        if !cryo_image::lazy::is_lazy(&v) {
            continue;
        }
        let mut reg: [u64; 4] = [
            v.start,
            v.len(),
            handoff::uffd::UFFDIO_REGISTER_MODE_MISSING,
            0,
        ];
        check(
            syscall3(
                SYS_IOCTL,
                uffd,
                handoff::uffd::UFFDIO_REGISTER as usize,
                reg.as_mut_ptr() as usize,
            ),
            format_args!("UFFDIO_REGISTER {:#x}-{:#x}", v.start, v.end),
        );
    }
    for _ in 0..2 {
        let byte = [b'U'];
        let iov: [usize; 2] = [byte.as_ptr() as usize, 1];
        // struct cmsghdr { len: u64, level: i32, type: i32 } + one int fd.
        let mut cmsg = [0u64; 3];
        cmsg[0] = 20; // CMSG_LEN(sizeof(int))
        cmsg[1] = 1 | (1 << 32); // SOL_SOCKET, SCM_RIGHTS
        cmsg[2] = uffd as u64;
        // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
        let msg: [usize; 7] = [
            0,
            0,
            iov.as_ptr() as usize,
            1,
            cmsg.as_ptr() as usize,
            24,
            0,
        ];
        check(
            syscall3(SYS_SENDMSG, sock, msg.as_ptr() as usize, 0),
            format_args!("sending the userfaultfd to the page server"),
        );
    }
    syscall3(SYS_CLOSE, uffd, 0, 0);
}

/// Wait for the page server's go byte (sent after it prefetched the
/// recorded working set, if any). It never says no: if it dies, its
/// watchdog kills us.
pub fn wait_go(sock: usize) {
    let mut b = [0u8; 1];
    loop {
        let r = syscall3(SYS_READ, sock, b.as_mut_ptr() as usize, 1);
        if r == -EINTR {
            continue;
        }
        if r != 1 || b[0] != handoff::GO {
            die(format_args!("the page server did not start (read {r})"));
        }
        break;
    }
    syscall3(SYS_CLOSE, sock, 0, 0);
}
