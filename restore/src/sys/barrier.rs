//! A barrier for the processes of a tree being restored: words in a
//! shared anonymous mapping, made before the first fork and gone with
//! each process's exec (nothing of it reaches a restored program), waited
//! on with futexes.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The steps every process of the tree passes together.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Every process exists (with its PID, session and own group).
    Forked = 0,
    /// Every process has its fds and is about to exec its shim.
    Ready = 1,
}

const ABORT: usize = 4;

pub struct Barrier {
    words: &'static [AtomicU32; 8],
}

impl Barrier {
    pub fn new() -> io::Result<Barrier> {
        // SAFETY: a fresh anonymous mapping of one page, which nothing else
        // refers to; it is never unmapped (it goes with the exec), so the
        // 'static reference stays valid. Zeroed memory is a valid
        // [AtomicU32; 8], and atomics make the sharing across processes
        // sound.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above.
        let words = unsafe { &*(p as *const [AtomicU32; 8]) };
        Ok(Barrier { words })
    }

    fn arrived(&self, s: Step) -> &AtomicU32 {
        &self.words[s as usize * 2]
    }
    fn go_word(&self, s: Step) -> &AtomicU32 {
        &self.words[s as usize * 2 + 1]
    }

    /// This process is at step `s`.
    pub fn arrive(&self, s: Step) {
        self.arrived(s).fetch_add(1, Ordering::SeqCst);
        wake(self.arrived(s));
    }

    /// Something failed: every waiting process gives up.
    pub fn abort(&self) {
        self.words[ABORT].store(1, Ordering::SeqCst);
        for w in self.words.iter() {
            wake(w);
        }
    }

    pub fn aborted(&self) -> bool {
        self.words[ABORT].load(Ordering::SeqCst) != 0
    }

    /// Wait until `n` processes arrived at `s`; `alive` is asked between
    /// waits (false: give up).
    pub fn wait_arrived(&self, s: Step, n: u32, alive: &mut dyn FnMut() -> bool) -> bool {
        loop {
            let v = self.arrived(s).load(Ordering::SeqCst);
            if v >= n {
                return true;
            }
            if self.aborted() || !alive() {
                return false;
            }
            wait(self.arrived(s), v);
        }
    }

    /// Let every process past `s`.
    pub fn go(&self, s: Step) {
        self.go_word(s).store(1, Ordering::SeqCst);
        wake(self.go_word(s));
    }

    /// Wait to be let past `s`; `alive` is asked between waits.
    pub fn wait_go(&self, s: Step, alive: &mut dyn FnMut() -> bool) -> bool {
        loop {
            if self.go_word(s).load(Ordering::SeqCst) != 0 {
                return true;
            }
            if self.aborted() || !alive() {
                return false;
            }
            wait(self.go_word(s), 0);
        }
    }
}

/// FUTEX_WAIT (shared: the word is in a MAP_SHARED mapping) while `w` is
/// `v`, at most 20 ms.
fn wait(w: &AtomicU32, v: u32) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: Duration::from_millis(20).as_nanos() as i64,
    };
    // SAFETY: the futex word is a live AtomicU32; the kernel only reads it
    // and the timespec we own.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            v,
            &ts as *const libc::timespec,
        )
    };
}

fn wake(w: &AtomicU32) {
    // SAFETY: as for `wait`; FUTEX_WAKE reads nothing but the address.
    unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}
