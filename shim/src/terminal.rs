//! The modes of the terminal at the program's fds 0-2 (`fds::Terminal`):
//! set on the restore's terminal when the restore runs in its
//! foreground, and SIGWINCH when its size is not the captured one.

use crate::sys::*;
use core::sync::atomic::{AtomicBool, Ordering};
use cryo_image::Image;

/// The modes were set already (a tree's root, at the barrier).
static MODES_SET: AtomicBool = AtomicBool::new(false);

const TIOCGPGRP: usize = 0x540f;
const TIOCSPGRP: usize = 0x5410;
const TIOCGWINSZ: usize = 0x5413;
const TCSETS2: usize = 0x402c_542b;
const TCGETS2: usize = 0x802c_542a;
const SIGWINCH: usize = 28;
const SYS_GETPGRP: usize = 111;

/// The kernel's struct termios2 (asm-generic/termbits.h).
#[repr(C)]
struct Termios2 {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
    ispeed: u32,
    ospeed: u32,
}

/// The foreground process group of the terminal at `fd` is this
/// process's: what may set its modes (from the background it would take
/// a SIGTTOU, which the shim, all signals blocked, would not feel). For
/// the packed restorer, asked before it changes its session or group.
pub fn foreground(img: &Image) -> bool {
    let Some(t) = img.terminal() else {
        return false;
    };
    let mut pg: i32 = 0;
    let r = syscall3(
        SYS_IOCTL,
        t.fd as usize,
        TIOCGPGRP,
        &mut pg as *mut i32 as usize,
    );
    r == 0 && pg > 0 && pg as isize == syscall3(SYS_GETPGRP, 0, 0, 0)
}

/// A tree whose foreground at capture was another group than its root's
/// (less under an interactive bash) gets that group made the foreground
/// again, by the root at the tree's barrier: every group exists then, and
/// no process has run its program yet (less, run first, read the terminal
/// from the background and stopped). Refused from another session: left
/// as it is.
pub fn foreground_group(img: &Image) {
    let Some(t) = img.terminal() else {
        return;
    };
    if let Some(fg) = t.other_foreground(img.tree().iter()) {
        syscall3(
            SYS_IOCTL,
            t.fd as usize,
            TIOCSPGRP,
            &fg as *const u32 as usize,
        );
    }
}

/// The captured modes on the terminal, now (not waiting for output, not
/// flushing what was typed ahead); SIGWINCH to this process when the
/// terminal's size differs, or when the program had turned canonical
/// input off (a full-screen program, a line editor: the screen is the
/// restore's, not what it drew), blocked until the program's mask is in
/// place, so that it draws itself again for this terminal.
/// When the foreground is another group of the tree ([`foreground_group`]),
/// the root, in the background, gets no SIGWINCH: the group does (handoff
/// `WINCH`, from `cryo restore`).
pub fn restore(img: &Image) {
    let Some(t) = img.terminal() else {
        return;
    };
    if !MODES_SET.load(Ordering::Relaxed) {
        set_modes(img);
    }
    let fd = t.fd as usize;
    let other = t.other_foreground(img.tree().iter());
    let mut ws = [0u16; 4];
    if syscall3(SYS_IOCTL, fd, TIOCGWINSZ, ws.as_mut_ptr() as usize) == 0 {
        let captured = [t.rows, t.cols, t.xpixel, t.ypixel];
        let differs = ws.iter().zip(captured).any(|(&a, b)| u32::from(a) != b);
        if other.is_none() && (differs || t.draws_itself()) {
            winch();
        }
    }
}

/// The captured input, output and local modes and control characters on
/// the terminal, now (not waiting for output, not flushing what was
/// typed ahead). Its line settings (speeds, character size, parity, flow
/// control by wire) and line discipline are the terminal's own, as
/// they are: a capture on a pty must not set a serial line's speed. A
/// terminal that will not take them (hung up since the check) leaves the
/// program with the terminal as it is: nothing else can be done past the
/// point of no return. In a tree, set by the root at the barrier too,
/// before any process runs its program.
pub fn set_modes(img: &Image) {
    let Some(t) = img.terminal() else {
        return;
    };
    MODES_SET.store(true, Ordering::Relaxed);
    let fd = t.fd as usize;
    let mut modes = Termios2 {
        iflag: 0,
        oflag: 0,
        cflag: 0,
        lflag: 0,
        line: 0,
        cc: [0; 19],
        ispeed: 0,
        ospeed: 0,
    };
    if syscall3(SYS_IOCTL, fd, TCGETS2, &mut modes as *mut Termios2 as usize) != 0 {
        return;
    }
    modes.iflag = t.iflag;
    modes.oflag = t.oflag;
    modes.lflag = t.lflag;
    modes.cc.copy_from_slice(&t.cc[..19]);
    syscall3(SYS_IOCTL, fd, TCSETS2, &modes as *const Termios2 as usize);
}

/// A SIGWINCH to this process, pending until the program's mask is in
/// place (a call it was captured in returns EINTR for it, as for a
/// resize: `frame::resume_regs`). To the process, not its group: a
/// supervising `cryo restore` (--same-pid) would pass it on a second
/// time; the others of the group get handoff `WINCH` and queue their own.
pub fn winch() {
    let me = syscall3(SYS_GETPID, 0, 0, 0) as usize;
    syscall3(SYS_KILL, me, SIGWINCH, 0);
}
