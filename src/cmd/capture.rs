//! `cryo capture` / `cryo dump`: freeze a process and write its image.

use anyhow::Result;
use std::path::PathBuf;

/// What happens to the target after a successful capture.
#[derive(clap::Args, Debug, Clone)]
pub struct AfterCapture {
    /// Leave the target stopped after capture (default: as it was).
    #[arg(long, conflicts_with = "kill")]
    pub leave_stopped: bool,
    /// Kill the target after a successful capture.
    #[arg(long)]
    pub kill: bool,
}

/// Freeze a process with ptrace and write its image to DIR.
#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// PID of a single-threaded process.
    pub pid: i32,
    /// Image directory to create (must not exist, or be empty; see --force).
    pub dir: PathBuf,
    #[command(flatten)]
    pub after: AfterCapture,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary of the capture on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// CRIU-style spelling: `cryo dump -t PID -D DIR`. Unlike CRIU, the target
/// keeps running unless --kill is given.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// PID of the process to capture.
    #[arg(short = 't', long = "tree")]
    pub pid: i32,
    /// Image directory.
    #[arg(short = 'D', long = "images-dir")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub after: AfterCapture,
    /// Accepted for CRIU compatibility (cryo leaves the target running by default).
    #[arg(long, hide = true)]
    pub leave_running: bool,
    /// Accepted for CRIU compatibility (terminals are always recorded as such).
    #[arg(long, hide = true)]
    pub shell_job: bool,
    /// Replace DIR if it already holds a cryo image.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: CaptureArgs) -> Result<i32> {
    anyhow::bail!(
        "capture of pid {} into {} is not wired yet",
        a.pid,
        a.dir.display()
    )
}

pub fn run_dump(a: DumpArgs) -> Result<i32> {
    run(CaptureArgs {
        pid: a.pid,
        dir: a.dir,
        after: a.after,
        force: a.force,
        json: false,
        quiet: false,
    })
}
