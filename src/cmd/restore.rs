//! `cryo restore`: bring a captured process back (owned by the restore work).

use std::path::PathBuf;

/// Restore a captured process from an image directory.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Image directory written by `cryo capture`.
    pub dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    anyhow::bail!("restore of {} is not implemented yet", args.dir.display())
}
