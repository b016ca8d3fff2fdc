//! Pseudo-terminal pairs whose every end is in the captured processes
//! (a program running another under a pty: `script`, `expect`, a test
//! harness, a terminal multiplexer).
//!
//! The master's state is read through our own copy of it (pidfd_getfd)
//! and a new description of its slave (TIOCGPTPEER): termios, window
//! size, packet and lock state, the session it controls and that
//! session's foreground group. A terminal cannot be peeked: the bytes
//! waiting in it are read, then written back at once, under termios that
//! keep every byte as it was ([`cryo_image::fds::pty_replay`]); the
//! terminal's own termios are set again after. Input waiting in
//! canonical mode is only readable as a whole line, so canonical mode is
//! turned off for the read (which makes the partial line readable) and
//! on again for the write-back (which makes each line a line again).
//!
//! A pty whose master or slave a process outside the captured ones holds
//! is refused by name: after a restore it would hold the old pty, which
//! no one answers any more. A slave whose master is outside (the shell's
//! terminal) stays a plain terminal (`fd_kind::TTY`).

use crate::pipes::Scope;
use crate::stored::{BlobOwner, PendingBlob, StoredFiles};
use crate::sys::{self, tty};
use cryo_image::fds::{pty_flags, pty_replay, Pty};
use cryo_image::write::ImageBuilder;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

/// Most bytes a terminal's line discipline holds (N_TTY_BUF_SIZE is
/// 4096; more waits behind it, throttled, where it cannot be read back
/// in order).
const MAX_QUEUED: usize = 4000;

/// Who holds each pty, among every process we can see: index -> PIDs.
#[derive(Debug, Default)]
pub struct Holders {
    masters: HashMap<u32, Vec<i32>>,
    slaves: HashMap<u32, Vec<i32>>,
}

impl Holders {
    /// Of the processes `pids` (None: every process we can see).
    fn scan(pids: Option<&[i32]>) -> Holders {
        let mut h = Holders::default();
        crate::pipes::each_fd(pids, |pid, path, t| {
            let (map, index) = if t == "/dev/ptmx" || t == "/dev/pts/ptmx" {
                let info = path.to_string_lossy().replacen("/fd/", "/fdinfo/", 1);
                let info = std::fs::read_to_string(info).unwrap_or_default();
                (&mut h.masters, master_index(&info))
            } else {
                let n = t.strip_prefix("/dev/pts/").and_then(|n| n.parse().ok());
                (&mut h.slaves, n)
            };
            if let Some(n) = index {
                let v = map.entry(n).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        });
        h
    }
}

/// The pty index of a master, from its fdinfo.
pub fn master_index(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Scope {
    /// Who holds each pty among the processes captured: a scan of their
    /// fds only (a terminal is common; most are not ptys of theirs).
    fn pty_holders_inside(&mut self) -> &Holders {
        let pids = &self.pids;
        self.pty_inside
            .get_or_insert_with(|| Holders::scan(Some(pids)))
    }

    /// Whether a process captured with `pid` holds the master of pty
    /// `index` (its slave is then one end of a pair restored as a pair).
    pub fn pty_master_inside(&mut self, index: u32) -> bool {
        self.pty_holders_inside().masters.contains_key(&index)
    }

    /// Processes outside the scope holding pty `index`'s master or slave.
    fn pty_outside(&mut self, index: u32) -> Vec<i32> {
        // Every process's fds: scanned only once a master is captured.
        let pids = self.pids.clone();
        let h = self.ptys.get_or_insert_with(|| Holders::scan(None));
        let mut out: Vec<i32> = h
            .masters
            .get(&index)
            .into_iter()
            .chain(h.slaves.get(&index))
            .flatten()
            .copied()
            .filter(|p| !pids.contains(p))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The master `f` (the first fd of its description in its process):
/// its pty's record in `b.ptys`, whose index is returned.
pub fn capture(
    pidfd: Option<&OwnedFd>,
    f: &crate::procinfo::OpenFd,
    scope: &mut Scope,
    b: &mut ImageBuilder,
    stored: &mut StoredFiles,
) -> Result<u32, String> {
    let Some(index) = master_index(&f.info) else {
        return Err(format!(
            "fd {} is a pseudo-terminal master whose number its fdinfo does not show",
            f.fd
        ));
    };
    let name = format!("fd {} (the master of /dev/pts/{index})", f.fd);
    let outside = scope.pty_outside(index);
    if !outside.is_empty() {
        let who: Vec<String> = outside
            .iter()
            .map(|p| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                format!("{p} ({})", comm.trim())
            })
            .collect();
        return Err(format!(
            "{name}: the pty is also held by {}, outside the captured processes; capture {} with it, or close it there",
            who.join(", "),
            if who.len() == 1 { "that process" } else { "those processes" }
        ));
    }
    let at = b.ptys.len();
    if let Some(done) = scope.pty_state.get(&index) {
        // Another process of the tree holds this master too: its image
        // has the bytes.
        b.ptys.push(Pty {
            input: Default::default(),
            output: Default::default(),
            ..*done
        });
        return Ok(at as u32);
    }
    let pidfd = pidfd.ok_or_else(|| format!("{name}: cannot reach it (pidfd_open failed)"))?;
    let master =
        File::from(sys::pidfd_getfd(pidfd, f.fd).map_err(|e| format!("{name}: pidfd_getfd: {e}"))?);
    let slave_held = scope.pty_holders_inside().slaves.contains_key(&index);
    let (rec, input, output) =
        read(&master, index, slave_held).map_err(|e| format!("{name}: {e}"))?;
    scope.pty_state.insert(index, rec);
    b.ptys.push(rec);
    for (bytes, to) in [
        (input, BlobOwner::PtyInput(at)),
        (output, BlobOwner::PtyOutput(at)),
    ] {
        if !bytes.is_empty() {
            stored.blobs.push(PendingBlob { to, bytes });
        }
    }
    Ok(at as u32)
}

/// Everything about pty `index`, through our copy of its master: its
/// record, and the bytes waiting on each side (put back already).
/// `slave_held`: a process has its slave open.
fn read(master: &File, index: u32, slave_held: bool) -> Result<(Pty, Vec<u8>, Vec<u8>), String> {
    let int = |req, what: &str| tty::get_int(master, req).map_err(|e| format!("{what}: {e}"));
    let mut flags = 0;
    if int(libc::TIOCGPTLCK, "TIOCGPTLCK")? != 0 {
        flags |= pty_flags::LOCKED;
    }
    let packet = int(libc::TIOCGPKT, "TIOCGPKT")? != 0;
    if packet {
        flags |= pty_flags::PACKET;
    }
    // No session: ENOTTY.
    let sid = tty::get_int(master, libc::TIOCGSID).unwrap_or(0).max(0) as u32;
    let fg_pgrp = if sid == 0 {
        0
    } else {
        int(libc::TIOCGPGRP, "TIOCGPGRP")?.max(0) as u32
    };
    let t = tty::termios(master).map_err(|e| format!("TCGETS2: {e}"))?;
    let w = tty::winsize(master).map_err(|e| format!("TIOCGWINSZ: {e}"))?;
    let mut cc = [0u8; 32];
    cc[..t.c_cc.len()].copy_from_slice(&t.c_cc);
    let mut rec = Pty {
        index,
        flags,
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: u32::from(t.c_line),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
        cc,
        rows: u32::from(w.ws_row),
        cols: u32::from(w.ws_col),
        xpixel: u32::from(w.ws_xpixel),
        ypixel: u32::from(w.ws_ypixel),
        sid,
        fg_pgrp,
        ..Default::default()
    };
    if flags & pty_flags::LOCKED != 0 {
        // Its slave was never opened: nothing was written either way.
        return Ok((rec, Vec::new(), Vec::new()));
    }
    // Opening its slave and closing it again leaves the pty as it was
    // when someone holds the slave, or held it (the master hangs up
    // then): not when no one ever opened it, which our close would hang
    // up.
    let hung_up = sys::poll_now(master, libc::POLLIN).unwrap_or(0) & libc::POLLHUP != 0;
    if !slave_held && !hung_up {
        return Err(
            "its slave was never opened (capture it once its program has the slave)".into(),
        );
    }
    if packet && t.c_lflag & pty_replay::EXTPROC != 0 {
        return Err(
            "the master is in packet mode with EXTPROC, where reading its state would send its reader a notice".into(),
        );
    }
    let slave = File::from(
        tty::peer(
            master,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
        .map_err(|e| format!("opening its slave (TIOCGPTPEER): {e}"))?,
    );
    if tty::get_int(&slave, libc::TIOCGEXCL).unwrap_or(0) != 0 {
        rec.flags |= pty_flags::EXCLUSIVE;
    }
    let md = slave
        .metadata()
        .map_err(|e| format!("fstat of its slave: {e}"))?;
    (rec.uid, rec.gid, rec.mode) = (md.uid(), md.gid(), md.mode() & 0o7777);
    let output = output(master, &slave, &t, packet)?;
    let input = input(master, &slave, &t)?;
    Ok((rec, input, output))
}

/// The bytes the slave side wrote that the master has not read, read and
/// written back.
fn output(
    master: &File,
    slave: &File,
    t: &libc::termios2,
    packet: bool,
) -> Result<Vec<u8>, String> {
    // poll runs the line discipline's pending work first.
    let _ = sys::poll_now(master, libc::POLLIN);
    let n = sys::fionread(master).map_err(|e| format!("FIONREAD: {e}"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if packet {
        return Err(format!(
            "the master is in packet mode with {n} bytes of output waiting; not supported yet"
        ));
    }
    if n > MAX_QUEUED {
        return Err(format!(
            "{n} bytes of output wait in it, more than cryo restores ({MAX_QUEUED})"
        ));
    }
    // They are written back through the slave: it must take them now
    // (not stopped by ^S), or they would be lost.
    if sys::poll_now(slave, libc::POLLOUT).unwrap_or(0) & libc::POLLOUT == 0 {
        return Err(format!(
            "{n} bytes of output wait in it and its output is stopped (^S); cryo cannot copy them"
        ));
    }
    let mut data = vec![0u8; n];
    (&*master)
        .read_exact(&mut data)
        .map_err(|e| format!("reading the output waiting in it: {e}"))?;
    let mut w = *t;
    w.c_oflag = pty_replay::output_flags(t.c_oflag);
    let put_back = tty::set_termios(slave, &w)
        .and_then(|()| (&*slave).write_all(&data))
        .and_then(|()| sys::poll_now(master, libc::POLLIN).map(drop));
    let reset = tty::set_termios(slave, t);
    put_back
        .and(reset)
        .map_err(|e| format!("putting back the {n} bytes of output read from it: {e}"))?;
    Ok(data)
}

/// The bytes typed into the master that the slave side has not read
/// (after input processing), read and written back.
fn input(master: &File, slave: &File, t: &libc::termios2) -> Result<Vec<u8>, String> {
    let canonical = t.c_lflag & pty_replay::ICANON != 0;
    if !canonical {
        let _ = sys::poll_now(slave, libc::POLLIN);
        if sys::fionread(slave).map_err(|e| format!("FIONREAD: {e}"))? == 0 {
            return Ok(Vec::new());
        }
    }
    // Canonical mode off (a partial line becomes readable), read it all.
    let mut r = *t;
    r.c_lflag &= !pty_replay::ICANON;
    r.c_cc[pty_replay::VMIN] = 0;
    r.c_cc[pty_replay::VTIME] = 0;
    tty::set_termios(slave, &r).map_err(|e| format!("TCSETS2: {e}"))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = loop {
        match (&*slave).read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => data.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // Back, whatever happened, as the line discipline kept them.
    let mut cc = [0u8; 32];
    cc[..t.c_cc.len()].copy_from_slice(&t.c_cc);
    let replay = pty_replay::input(t.c_iflag, t.c_lflag, &cc, &data);
    let mut w = *t;
    (w.c_iflag, w.c_lflag) = pty_replay::input_flags(t.c_iflag, t.c_lflag, replay.iexten);
    let put_back = tty::set_termios(slave, &w)
        .and_then(|()| (&*master).write_all(&replay.bytes))
        .and_then(|()| sys::poll_now(slave, libc::POLLIN).map(drop));
    let reset = tty::set_termios(slave, t);
    read.map_err(|e| format!("reading the input waiting in it: {e}"))?;
    put_back.and(reset).map_err(|e| {
        format!(
            "putting back the {} bytes of input read from it: {e}",
            data.len()
        )
    })?;
    if data.len() > MAX_QUEUED {
        return Err(format!(
            "{} bytes of input wait in it, more than cryo restores ({MAX_QUEUED})",
            data.len()
        ));
    }
    if !replay.exact {
        return Err(
            "its unread input holds a NUL (an end-of-file mark, or a NUL typed) or a character it would act on with no literal-next character to quote it; cryo cannot tell it would come back as it was".into(),
        );
    }
    Ok(data)
}
