//! cryo capture: freeze a process (every thread, and every descendant)
//! with ptrace and write its image (see `capture::capture`).

mod aio;
mod anonfds;
pub mod capture;
mod fanotify;
pub mod fds;
mod gadget;
pub mod glibc;
mod inflight;
mod inotify;
mod locks;
mod mcast;
mod mm;
pub mod obstacles;
pub mod pages;
mod pidrefs;
pub mod pipes;
pub mod procinfo;
mod ptys;
pub mod regs;
pub mod remote;
mod seccomp;
mod signals;
pub mod sockets;
pub mod stored;
mod sys;
mod sysv;
pub mod task;
pub mod threads;
mod timers;
pub mod tracee;
pub mod tree;
mod vma;
pub mod writer;

pub use capture::{capture, check, After, CaptureError, Options, Progress, Summary};
