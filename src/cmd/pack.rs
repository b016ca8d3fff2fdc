//! `cryo pack DIR -o FILE`: one executable that restores DIR when run.

use anyhow::{bail, Context};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Write a packed restorer: one static executable that restores the image
/// when run, with no `cryo restore` and no second exec.
///
/// `./FILE` behaves like `cryo restore DIR`: the restored program gets
/// its PID, terminal and fds 0-2, and its exit status is FILE's. FILE is
/// cryo's restore shim with a record naming DIR (absolute) and the
/// identity of its pages.img and sums.img; it is small and holds no
/// memory of the program: DIR must stay where it is. A restorer of a
/// program holding CAP_SYS_ADMIN (root's, say) names the program's
/// executable in its last system calls and never leaves its own file;
/// for others (a seccomp filter, a POSIX lock, no such capability: the
/// executable is replaced while no mapping has the
/// restorer's path) pack gives FILE a second name in DIR,
/// `packed-INO.text` (a hard link, INO its inode), from which it maps its
/// own code when run instead of copying it into fresh memory; a copy of
/// FILE, or FILE on another file system than DIR, works without it (pack
/// says so). The next pack removes the names of restorers deleted since.
///
/// What `cryo restore` checks before the point of no return is checked
/// by FILE itself when run, before it touches anything: the image's
/// meta.img (checksums), the files behind mappings (same inode, size,
/// mtime), the vDSO (same kernel), the xsave layout (same kind of CPU),
/// the CPU affinity and NUMA policies (settable here), and that pages.img
/// and sums.img are the very files packed (same inode, size,
/// modification and change times: any write changes them). A failed
/// check prints `cryo: cannot restore DIR: ...` and exits 1, the process
/// untouched. Pages are checked against sums.img once, here. A threaded
/// image's threads must fit in its cgroups' pids.max (read on every
/// threaded restore; mountinfo too where a hierarchy is not at its
/// usual place).
///
/// A packed restorer opens the program's files, directories and devices
/// under /dev again (the same inode, at their offsets), and makes its
/// eventfds, timerfds, signalfds, epoll sets (with what they watch) and
/// pipes whose every end is in the process (with their bytes) itself, at
/// their numbers; fds 0-2 are its invoker's, as with `cryo restore`.
///
/// Not every image can be packed: a packed restorer restores one process
/// and finishes through the program's own code. Pack refuses, naming
/// every obstacle, an image with other fds (locked or removed files,
/// FIFOs, sockets, ptys, ...), a tree, unlinked files or memfds to make again, a removed
/// working directory, or no usable gadgets; `cryo restore` restores
/// those.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct PackArgs {
    /// Image directory written by `cryo capture`.
    pub dir: PathBuf,
    /// The executable to write (a regular file there is replaced; not a
    /// file in DIR, nor a device, directory or symbolic link).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Restore with private anonymous memory mapped from pages.img, as
    /// `cryo restore --map` (see its help for what differs).
    #[arg(long)]
    pub map: bool,
    /// Accept losing bytes that were unread in a pipe at fds 0-2 at
    /// capture: the packed restorer gives the program its invoker's fds
    /// 0-2, never that pipe, and pack refuses by default when it still
    /// held data (as `cryo restore --drop-pipe-data`).
    #[arg(long)]
    pub drop_pipe_data: bool,
    /// Let the restorer restore in another boot than the capture's, or
    /// where CLOCK_MONOTONIC is behind, as `cryo restore --clock-jump`
    /// (see its help): without it the restorer refuses there (and pack
    /// refuses to pack such an image).
    #[arg(long)]
    pub clock_jump: bool,
    /// Print what was written as JSON.
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
}

/// The output may replace a regular file only, and none in the image
/// directory: `-o DIR/meta.img` wrote the restorer over the image it
/// restores, and `-o /dev/null` replaced the device with a file, each
/// with status 0 (a sweep of stop 47).
fn refuse_output(out: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    let shown = out.display();
    if let Ok(md) = std::fs::symlink_metadata(out) {
        if !md.file_type().is_file() {
            bail!("cannot pack {}: {shown} exists and is not a regular file (a {}); pack writes a new file there, and would replace it", dir.display(), kind_of(&md));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot pack {}: {}: no such directory to write {shown} in",
            dir.display(),
            parent.display()
        );
    }
    if std::fs::canonicalize(parent).is_ok_and(|p| p == dir) {
        bail!(
            "cannot pack {}: {shown} is in the image directory, whose files pack must not replace; write it elsewhere",
            dir.display()
        );
    }
    Ok(())
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

pub fn run(args: PackArgs) -> anyhow::Result<i32> {
    // (A missing or wrong directory said as `cryo restore` says it, not
    // as a bare "No such file or directory": a sweep of stop 52.)
    if let Err(e) = cryo_image::load::LoadedImage::open(&args.dir) {
        if !args.dir.is_dir() {
            return Err(
                anyhow::Error::new(e).context(format!("cannot pack {}", args.dir.display()))
            );
        }
    }
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("cannot pack {}", args.dir.display()))?;
    refuse_output(&args.output, &dir)?;
    let shim = crate::cmd::check::shim_path();
    // (Its code goes into the packed restorer.)
    crate::cmd::check::verify_shim(&shim).map_err(|e| anyhow::anyhow!("cannot pack: {e}"))?;
    // (An empty or foreign directory is said as `cryo restore` says it, not
    // as a missing pages.img: a sweep of stop 49.)
    cryo_image::load::LoadedImage::open(&dir)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    // Read before the pages are checked: a write during the check shows.
    let ids = cryo_restore::pack::identities(&dir)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    let opts = cryo_restore::Options {
        shim: shim.clone(),
        verify: true,
        map: args.map,
        drop_pipe_data: args.drop_pipe_data,
        clock_jump: args.clock_jump,
        ..Default::default()
    };
    let plan = match cryo_restore::prepare(&dir, opts) {
        Ok(p) => p,
        // (Pack has no --inherit-fd: the advice is cryo restore's.)
        Err(e) if e.to_string().contains("--inherit-fd") => bail!(
            "cannot pack {}: {e}; a packed restorer cannot be given fds: restore it with cryo restore",
            dir.display()
        ),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot pack {}", dir.display()))),
    };
    // Pack restores nothing: a kept file a tree maps, gone since the
    // capture, that the checks made again goes again at once (a review of
    // stop 50: left there, every later restore refused it).
    cryo_restore::remove_made_again();
    let obstacles = cryo_restore::pack::obstacles(&plan);
    if !obstacles.is_empty() {
        bail!(
            "cannot pack {}: {}; restore it with cryo restore",
            dir.display(),
            obstacles.join("; ")
        );
    }
    let record = cryo_restore::pack::record(&plan, &dir, ids);
    let shim_bytes = std::fs::read(&shim).with_context(|| format!("reading {}", shim.display()))?;
    let bytes = cryo_restore::pack::packed_binary(&shim_bytes, &record)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    // A temporary name beside the output, then rename: never half-written.
    let out = &args.output;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .with_context(|| format!("{} is not a file name", out.display()))?;
    let tmp = parent.join(format!(
        ".{}.cryo-pack.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, out));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    let alias = link_alias(&dir, out);
    let img = plan.image();
    let p = img.process();
    let note = cryo_restore::own_pid_note(&img);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "image": dir,
                "output": out,
                "bytes": bytes.len(),
                "pid": p.pid,
                "map": args.map,
                "alias": alias.as_ref().ok(),
                "own_pid_note": note,
            })
        );
    } else {
        println!(
            "packed {} (pid {}) into {} ({} KiB{}): run it to restore; it needs {} unchanged",
            dir.display(),
            p.pid,
            out.display(),
            bytes.len().div_ceil(1024),
            if args.map { ", mapped" } else { "" },
            dir.display()
        );
        if let Some(n) = note {
            eprintln!("note: {n}; a packed restorer runs it under the PID of whoever runs it");
        }
        if let Err(why) = &alias {
            eprintln!(
                "note: no second name for {} in {} ({why}): when run, a restorer that must leave its own file (its program has threads or a seccomp filter, or holds neither CAP_SYS_ADMIN nor CAP_CHECKPOINT_RESTORE) copies its code into fresh memory (~0.1 ms here); a restorer on the image's file system avoids that",
                out.display(),
                dir.display()
            );
        }
    }
    Ok(0)
}

/// A second name for the restorer `out` in the image directory
/// (`cryo_image::pack::AliasName`: by its inode), which it maps its code
/// from when run instead of copying it (docs/design.md, "Packed
/// restorer"). Names left by restorers removed or packed again since
/// (no other link) go first. Err: why there is none (another file
/// system, say); the restorer works without it.
fn link_alias(dir: &std::path::Path, out: &std::path::Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ours = name
                .strip_prefix("packed-")
                .and_then(|n| n.strip_suffix(".text"));
            if ours.is_some_and(|n| n.parse::<u64>().is_ok())
                && e.metadata().is_ok_and(|m| m.is_file() && m.nlink() == 1)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let ino = std::fs::metadata(out).map_err(|e| e.to_string())?.ino();
    let alias = dir.join(cryo_image::pack::AliasName(ino).to_string());
    match std::fs::hard_link(out, &alias) {
        Ok(()) => Ok(alias),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let same = std::fs::metadata(&alias).is_ok_and(|m| m.ino() == ino);
            if same {
                Ok(alias)
            } else {
                Err(format!("{} is taken", alias.display()))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}
