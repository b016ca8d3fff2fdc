//! cryo capture: freeze a single-threaded process with ptrace and write its
//! image (see `capture::capture`).

pub mod capture;
pub mod fds;
pub mod obstacles;
pub mod pages;
pub mod procinfo;
pub mod remote;
mod sys;
pub mod task;
pub mod tracee;
pub mod writer;

pub use capture::{capture, check, After, CaptureError, Options, Progress, Summary};
