//! `cryo restore DIR`: this process becomes the captured one.

use anyhow::Context;
use std::path::PathBuf;

/// Bring a captured process back in place of this `cryo` process.
///
/// Everything is checked before the point of no return: page checksums,
/// the files behind mappings (same inode, size, mtime), the vDSO (same
/// bytes and layout: same kernel), the CPU's xsave layout, the shim's
/// address window, fds and rlimits. A refusal is one line saying what
/// differs. Then cryo execs `cryo-shim` in this very process, so the
/// restored program keeps this PID, terminal and job control, and its exit
/// status is this command's.
///
/// fds 0-2 of the restored program are this command's (like CRIU's
/// --shell-job); regular files, directories and devices are reopened at
/// their captured offsets; pipes and terminals at fd 3+ need --inherit-fd.
/// A process captured while stopped is resumed unless --keep-stopped.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct RestoreArgs {
    /// Image directory written by `cryo capture`.
    pub dir: PathBuf,
    /// Leave the restored process stopped (SIGSTOP); `kill -CONT` resumes it.
    #[arg(long)]
    pub keep_stopped: bool,
    /// Fill every page before the program runs (the default; lazy restore
    /// through userfaultfd is a separate mode).
    #[arg(long)]
    pub eager: bool,
    /// Give restored fd N our fd M (`N=M`, or `N` for the same number).
    /// Needed for pipes and terminals at fd 3 and up.
    #[arg(long = "inherit-fd", value_name = "N[=M]", value_parser = parse_inherit)]
    pub inherit_fd: Vec<(i32, i32)>,
    /// Skip the checksum pass over pages.img (the tables are still checked).
    #[arg(long)]
    pub no_verify: bool,
    /// Check everything and report, but do not restore.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the shim's phase times (exec, image, unmap, map+fill, state)
    /// on stderr, for benchmarks.
    #[arg(long)]
    pub phases: bool,
}

fn parse_inherit(s: &str) -> Result<(i32, i32), String> {
    let (a, b) = s.split_once('=').unwrap_or((s, s));
    let n = a
        .parse::<i32>()
        .map_err(|_| format!("bad fd number {a:?}"))?;
    let m = b
        .parse::<i32>()
        .map_err(|_| format!("bad fd number {b:?}"))?;
    if n < 0 || m < 0 {
        return Err("fd numbers are not negative".into());
    }
    Ok((n, m))
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let opts = cryo_restore::Options {
        keep_stopped: args.keep_stopped,
        inherit_fds: args.inherit_fd.clone(),
        shim: crate::cmd::check::shim_path(),
        no_verify: args.no_verify,
        phases: args.phases,
    };
    let plan = cryo_restore::prepare(&args.dir, opts)
        .with_context(|| format!("cannot restore {}", args.dir.display()))?;
    if args.dry_run {
        let img = plan.image();
        let p = img.process();
        println!(
            "{}: pid {} ({}) can be restored here: {} mappings, {} fds",
            args.dir.display(),
            p.pid,
            img.str(p.exe).unwrap_or("?"),
            img.vmas().len(),
            plan.fds().len()
        );
        return Ok(0);
    }
    let e = plan.exec();
    Err(anyhow::Error::new(e).context(format!("restoring {}", args.dir.display())))
}
