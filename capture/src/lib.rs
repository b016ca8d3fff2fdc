//! cryo capture: freeze a single-threaded process with ptrace and write its
//! image (see `capture::capture`).

pub mod capture;
pub mod pages;
pub mod procinfo;
pub mod remote;
pub mod tracee;
pub mod writer;

pub use capture::{capture, After, CaptureError, Options, Progress, Summary};
