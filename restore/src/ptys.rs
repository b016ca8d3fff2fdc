//! Pseudo-terminal pairs made again: one new pair (from /dev/ptmx) per
//! captured pty, before anything else, with its termios, window size,
//! packet, exclusive and lock state, and the bytes that waited in it,
//! written back as capture put them back (`cryo_image::fds::pty_replay`).
//! devpts numbers the new pair: /dev/pts/N may differ from the captured
//! one (what a program kept of its name, from ptsname, is stale).
//!
//! Master fds (PTY) come from our master, slave fds (PTY_SLAVE) are
//! opened again from the new /dev/pts/N, each a description of its own as
//! they were. The session whose controlling terminal it was takes it
//! again: its leader, forked by the tree's
//! restore, makes it its controlling terminal right after setsid (so
//! every process it forks after has it), and gives the foreground to the
//! captured group once every group exists.

use crate::fds::{FdErr, Source};
use crate::sys::{self, tty};
use crate::RestoreError;
use cryo_image::fds::{pty_flags, pty_replay, Pty};
use cryo_image::load::LoadedImage;
use cryo_image::{fd_kind, Image};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// One pair made again.
pub(crate) struct MadePty {
    /// The captured pty's number.
    pub index: u32,
    pub master: OwnedFd,
    /// Ours: kept open until the restored slaves are, and the one the
    /// session leader takes as its controlling terminal.
    pub slave: OwnedFd,
    /// The new pair's /dev/pts/N and device number.
    pub path: String,
    pub rdev: u64,
    pub sid: u32,
    pub fg_pgrp: u32,
}

/// Every pair a restore made.
#[derive(Default)]
pub(crate) struct Ptys(Vec<MadePty>);

impl Ptys {
    /// Whether one of the pairs is some session's controlling terminal
    /// (made so again by that session's leader).
    pub(crate) fn controls_a_session(&self) -> bool {
        self.0.iter().any(|m| m.sid != 0)
    }

    /// Make every pty of `images` (a tree's live processes, the root
    /// first) once; `tree_pids`: the processes a tree's restore forks (a
    /// session that had a pty as its controlling terminal must be led by
    /// one of them).
    /// `opts_fork_root`: the root is forked (--same-pid, --pidns), so it
    /// can always make a session of its own.
    pub fn make(
        images: &[(&LoadedImage, Image)],
        tree_pids: &[u32],
        opts_fork_root: bool,
        verify: bool,
    ) -> Result<Ptys, RestoreError> {
        let mut out: Vec<MadePty> = Vec::new();
        for (k, (_, img)) in images.iter().enumerate() {
            for rec in img.ptys().iter() {
                if out.iter().any(|m| m.index == rec.index) {
                    continue;
                }
                // The holder with its bytes (every holder has the state).
                let (loaded, rec) = images[k..]
                    .iter()
                    .flat_map(|(l, i)| i.ptys().iter().map(move |r| (*l, r)))
                    .filter(|(_, r)| r.index == rec.index)
                    .find(|(_, r)| r.input.len + r.output.len > 0)
                    .unwrap_or((images[k].0, rec));
                let name = || format!("pty master /dev/pts/{} (captured)", rec.index);
                let root = images[0].1.process().pid;
                if rec.sid != 0 && !tree_pids.contains(&rec.sid) && rec.sid != root {
                    return Err(RestoreError::Tree(format!(
                        "{} was the controlling terminal of session {}, which no process of the image led",
                        name(),
                        rec.sid,
                    )));
                }
                if rec.sid == root && !opts_fork_root {
                    can_lead_session().map_err(|why| {
                        RestoreError::Tree(format!(
                            "{} was the controlling terminal of the session the restored process led, and {why}",
                            name()
                        ))
                    })?;
                }
                let blob = |b: &cryo_image::fds::Blob| -> Result<Vec<u8>, RestoreError> {
                    if b.len == 0 {
                        return Ok(Vec::new());
                    }
                    Ok(loaded.read_blob(b, verify)?)
                };
                let (input, output) = (blob(&rec.input)?, blob(&rec.output)?);
                let made = make_one(&rec, &input, &output).map_err(|e| RestoreError::Fd {
                    fd: -1,
                    what: name(),
                    why: crate::Why::sys("making it again", e),
                })?;
                out.push(made);
            }
        }
        Ok(Ptys(out))
    }

    fn get(&self, index: u32) -> Option<&MadePty> {
        self.0.iter().find(|m| m.index == index)
    }
}

/// Where a PTY or PTY_SLAVE fd comes from.
pub(crate) fn source(
    ptys: Option<&Ptys>,
    f: &cryo_image::Fd,
    img: &Image,
    flags: i32,
    err: &FdErr,
) -> Result<Source, RestoreError> {
    let index = if f.kind == fd_kind::PTY {
        img.ptys().get(f.object as usize).map(|r| r.index)
    } else {
        Pty::index_of_rdev(f.rdev)
    };
    let made = index
        .and_then(|n| ptys.and_then(|p| p.get(n)))
        .ok_or_else(|| err.why("its pty pair was not made (the image has no record of it)"))?;
    Ok(if f.kind == fd_kind::PTY {
        // Every fd of the master is its one description: its status
        // flags (O_NONBLOCK, O_ASYNC) as the image has them.
        crate::fds::set_status_flags(made.master.as_raw_fd(), flags)
            .map_err(|e| err.why(crate::Why::sys("setting its file status flags", e)))?;
        Source::Inherit(made.master.as_raw_fd())
    } else {
        Source::Open {
            path: made.path.clone(),
            flags: flags | libc::O_NOCTTY,
            pos: 0,
            dev_ino: None,
            rdev: Some(made.rdev),
        }
    })
}

/// A new pair set as `rec` says, with `input` waiting on its slave side
/// and `output` on its master side.
fn make_one(rec: &Pty, input: &[u8], output: &[u8]) -> std::io::Result<MadePty> {
    let master = sys::open(
        c"/dev/ptmx",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
    )?;
    let m = master.as_fd();
    tty::set_int(m, libc::TIOCSPTLCK, 0)?;
    let n = tty::get_int(m, libc::TIOCGPTN)?;
    let slave = tty::peer(
        m,
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    )?;
    let s = slave.as_fd();
    let mut t = tty::termios(s)?;
    t.c_iflag = rec.iflag;
    t.c_oflag = rec.oflag;
    t.c_cflag = rec.cflag;
    t.c_lflag = rec.lflag;
    t.c_line = rec.line as u8;
    t.c_ispeed = rec.ispeed;
    t.c_ospeed = rec.ospeed;
    let ncc = t.c_cc.len();
    t.c_cc.copy_from_slice(&rec.cc[..ncc]);
    tty::set_winsize(
        m,
        &libc::winsize {
            ws_row: rec.rows as u16,
            ws_col: rec.cols as u16,
            ws_xpixel: rec.xpixel as u16,
            ws_ypixel: rec.ypixel as u16,
        },
    )?;
    if !output.is_empty() {
        let mut w = t;
        w.c_oflag = pty_replay::output_flags(t.c_oflag);
        tty::set_termios(s, &w)?;
        write_all(s, output)?;
        tty::poll_now(m, libc::POLLIN)?;
    }
    if !input.is_empty() {
        let replay = pty_replay::input(t.c_iflag, t.c_lflag, &rec.cc, input);
        let mut w = t;
        (w.c_iflag, w.c_lflag) = pty_replay::input_flags(t.c_iflag, t.c_lflag, replay.iexten);
        tty::set_termios(s, &w)?;
        write_all(m, &replay.bytes)?;
        tty::poll_now(s, libc::POLLIN)?;
    }
    tty::set_termios(s, &t)?;
    let got = tty::termios(s)?;
    let same = (got.c_iflag, got.c_oflag, got.c_cflag, got.c_lflag, got.c_cc)
        == (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc);
    if !same {
        return Err(std::io::Error::other(
            "the terminal did not take the captured termios",
        ));
    }
    let queued = tty::get_int(m, libc::FIONREAD)? as usize;
    if queued != output.len() {
        return Err(std::io::Error::other(format!(
            "{queued} bytes of output wait in it, not the {} captured",
            output.len()
        )));
    }
    if rec.mode != 0 {
        sys::fchown(s, rec.uid, rec.gid)?;
        sys::fchmod(s, rec.mode)?;
    }
    if rec.flags & pty_flags::EXCLUSIVE != 0 {
        tty::arg(s, libc::TIOCEXCL, 0)?;
    }
    if rec.flags & pty_flags::PACKET != 0 {
        tty::set_int(m, libc::TIOCPKT, 1)?;
    }
    if rec.flags & pty_flags::LOCKED != 0 {
        tty::set_int(m, libc::TIOCSPTLCK, 1)?;
    }
    let path = format!("/dev/pts/{n}");
    let rdev = std::fs::metadata(&path)?.rdev();
    Ok(MadePty {
        index: rec.index,
        master,
        slave,
        path,
        rdev,
        sid: rec.sid,
        fg_pgrp: rec.fg_pgrp,
    })
}

fn write_all(fd: BorrowedFd, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = sys::write(fd, buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Whether this process can lead a session with a terminal of its own:
/// it leads one with no terminal, or it can make one (setsid fails for
/// a process group leader, as a command started by an interactive shell
/// is).
fn can_lead_session() -> Result<(), String> {
    let me = std::process::id() as i32;
    if sys::getsid().ok() == Some(me) {
        if std::fs::File::open("/dev/tty").is_ok() {
            return Err("cryo restore leads a session that has a terminal already; run it as `setsid cryo restore ...`, or with --same-pid or --pidns".into());
        }
        return Ok(());
    }
    if sys::getpgid(0).ok() == Some(me) {
        return Err("cryo restore leads a process group (as a command of an interactive shell does), so it cannot make a session; run it as `setsid cryo restore ...`, or with --same-pid or --pidns".into());
    }
    Ok(())
}

/// The root led the session of one of the ptys (`root`: its captured
/// PID): lead a session again (this process is the root, before it forks
/// any other process of the tree), with that pty as its terminal.
pub(crate) fn lead_session(ptys: &Ptys, root: u32) -> Result<(), RestoreError> {
    let Some(m) = ptys.0.iter().find(|m| m.sid == root) else {
        return Ok(());
    };
    let me = std::process::id() as i32;
    if sys::getsid().ok() != Some(me) {
        sys::setsid().map_err(|e| {
            crate::IntoSys::into_sys(e, "setsid (the restored process led a session)")
        })?;
    }
    tty::arg(m.slave.as_fd(), libc::TIOCSCTTY, 0).map_err(|e| {
        crate::IntoSys::into_sys(e, format!("taking {} as the controlling terminal", m.path))
    })
}

/// Make the pty whose session `sid` led this process's controlling
/// terminal (right after its setsid), if there is one.
pub(crate) fn take_controlling(ptys: &Ptys, sid: u32) -> std::io::Result<()> {
    if let Some(m) = ptys.0.iter().find(|m| m.sid == sid) {
        tty::arg(m.slave.as_fd(), libc::TIOCSCTTY, 0)?;
    }
    Ok(())
}

/// Give the foreground of the terminal this process (a session leader)
/// controls to the captured group, once every group exists.
pub(crate) fn give_foreground(ptys: &Ptys, sid: u32) -> std::io::Result<()> {
    if let Some(m) = ptys.0.iter().find(|m| m.sid == sid) {
        if m.fg_pgrp != 0 && m.fg_pgrp != sid {
            tty::set_int(m.slave.as_fd(), libc::TIOCSPGRP, m.fg_pgrp as i32)?;
        }
    }
    Ok(())
}

/// Masters of the pairs made for hung-up terminals, by the captured
/// terminal's device number, until [`hang_up`] closes them.
fn hung_up_masters() -> std::sync::MutexGuard<'static, Vec<((u64, u64), OwnedFd)>> {
    static M: std::sync::Mutex<Vec<((u64, u64), OwnedFd)>> = std::sync::Mutex::new(Vec::new());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// A description of a terminal that was hung up at capture (its master
/// closed; `fd_kind::HUNG_UP_TTY`): the slave of a new pair, one pair per
/// captured terminal (`tty`: its devpts instance's device and its own
/// device number), so that several descriptions of one are one terminal
/// again, with its status flags. Hung up by [`hang_up`], which closes the
/// masters.
pub(crate) fn hung_up(
    p: &crate::fds::FdPlan,
    tty: (u64, u64),
    flags: i32,
) -> Result<std::os::fd::RawFd, RestoreError> {
    use std::os::fd::IntoRawFd;
    let err = |what: &str, e: std::io::Error| {
        crate::fds::fd_err(p, crate::Why::sys(format!("a hung-up terminal: {what}"), e))
    };
    let mut masters = hung_up_masters();
    if !masters.iter().any(|(r, _)| *r == tty) {
        let m = sys::open(
            c"/dev/ptmx",
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
        .map_err(|e| err("opening /dev/ptmx", e))?;
        tty::set_int(m.as_fd(), libc::TIOCSPTLCK, 0).map_err(|e| err("TIOCSPTLCK", e))?;
        masters.push((tty, m));
    }
    let (_, m) = masters.iter().find(|(r, _)| *r == tty).expect("just made");
    let access = flags & libc::O_ACCMODE;
    let slave = tty::peer(m.as_fd(), access | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(|e| err("TIOCGPTPEER", e))?;
    crate::fds::set_status_flags(slave.as_raw_fd(), flags)
        .map_err(|e| err("setting its status flags", e))?;
    Ok(slave.into_raw_fd())
}

/// Close the masters [`hung_up`] made: their slaves hang up, as the
/// captured ones were. (Before anything forks: a copy of a master
/// would keep its slaves up.)
pub(crate) fn hang_up() {
    hung_up_masters().clear();
}
