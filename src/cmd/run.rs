//! `cryo run --capture-on-stop DIR -- PROG`: start a program, capture it when
//! it stops itself.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Let the program go on running; `cryo run` exits with its status.
    Continue,
    /// Kill the program after the capture; `cryo run` exits 0.
    Kill,
}

/// Start PROG; when it stops itself (raise(SIGSTOP); in Haskell
/// `raiseSignal sigSTOP`), capture it into DIR.
///
/// This is how a program marks "initialised, snapshot me now". The program's
/// stdin/stdout/stderr are this terminal's.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Image directory to write when the program stops itself.
    #[arg(long, value_name = "DIR")]
    pub capture_on_stop: PathBuf,
    /// What happens to the program after the capture.
    #[arg(long, value_enum, default_value = "continue")]
    pub then: Then,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(a: RunArgs) -> Result<i32> {
    anyhow::bail!("run of {:?} is not wired yet", a.command)
}
