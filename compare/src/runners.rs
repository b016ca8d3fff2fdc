//! The methods, prepared (capture, dump, compact file, working set) and
//! run once each: a sample of how long the program took to its answer.

use crate::build::Built;
use crate::proc::{self, now_ns, parse_stamps};
use crate::report::Sample;
use crate::util::{last_lines, mkdir_private, os_args, output_of};
use crate::{run_timeout, Kind, Method, Workload};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a prepared method is run once.
pub(crate) enum Runner {
    /// Spawn argv; the answer is on its stdout.
    Direct(Vec<OsString>),
    /// `criu restore -d` the image, SIGCONT the restored (stopped) process
    /// and reap it (we are its subreaper); the answer is in the file its
    /// stdout was at dump time.
    Criu {
        criu: PathBuf,
        images: PathBuf,
        out: PathBuf,
    },
}

pub(crate) struct Ctx<'a> {
    /// A private copy of the cryo binary (and its shim) to time: the
    /// running harness keeps its own binary mapped, which dropping the page
    /// cache cannot evict, so restoring with it would make "cold cache"
    /// runs warm for cryo.
    pub(crate) cryo: PathBuf,
    pub(crate) built: &'a Built,
    pub(crate) criu: &'a Result<(PathBuf, String), String>,
}

/// Spawn argv (stdin null, stdout and stderr to files), wait for it, and
/// reap what it left behind (see [`proc::reap_orphans`]), counting it in
/// the usage.
fn spawn_logged(
    argv: &[OsString],
    stdout: &Path,
    stderr: &Path,
) -> Result<(u64, i32, proc::Usage), String> {
    spawn_logged_reap(argv, stdout, stderr, true)
}

/// As [`spawn_logged`]; `reap: false` leaves other children alone (`criu
/// restore -d` leaves the restored process, which the caller reaps).
fn spawn_logged_reap(
    argv: &[OsString],
    stdout: &Path,
    stderr: &Path,
    reap: bool,
) -> Result<(u64, i32, proc::Usage), String> {
    let out = fs::File::create(stdout).map_err(|e| format!("{}: {e}", stdout.display()))?;
    let err = fs::File::create(stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
    let t0 = now_ns();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0].to_string_lossy()))?;
    let (code, mut usage) = proc::wait4_within(child.id() as i32, run_timeout())
        .map_err(|e| format!("{}: {e}", argv[0].to_string_lossy()))?;
    if reap {
        // What the run left behind (cryo's lazy page server and watchdog)
        // is part of the run: reap it and count it.
        let rest = proc::reap_orphans(std::time::Duration::from_secs(10));
        usage.faults += rest.faults;
        usage.max_rss_kb = usage.max_rss_kb.max(rest.max_rss_kb);
    }
    Ok((t0, code, usage))
}

fn failure(what: &str, code: i32, log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    format!("{what} exited with status {code}: {}", last_lines(&text, 3))
}

/// Capture the workload at its self-stop with `cryo run --capture-on-stop`.
fn cryo_capture(cx: &Ctx, w: &Workload, dir: &Path) -> Result<PathBuf, String> {
    let img = dir.join("cryo-img");
    let mut argv = os_args(&[
        &cx.cryo,
        &"run",
        &"--quiet",
        &"--force",
        &"--then",
        &"kill",
        &"--capture-on-stop",
        &img,
    ]);
    argv.push("--".into());
    argv.extend(w.argv(cx.built, "stop", None));
    let log = dir.join("cryo-capture.log");
    let (_, code, _) = spawn_logged(&argv, &dir.join("cryo-capture.out"), &log)?;
    // --then kill: the workload dies by SIGKILL after the capture
    if code != 0 && code != 137 {
        return Err(failure("cryo run --capture-on-stop", code, &log));
    }
    if !img.join("meta.img").exists() {
        return Err(failure("cryo run --capture-on-stop (no image)", code, &log));
    }
    Ok(img)
}

/// Start the workload in stop mode, wait for its self-stop, `criu dump` it.
/// Its stdout is a file in `outs`, where every restore of it writes.
fn criu_dump(
    criu: &Path,
    w: &Workload,
    cx: &Ctx,
    dir: &Path,
    outs: &Path,
) -> Result<Runner, String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let images = dir.join("criu-img");
    let _ = fs::remove_dir_all(&images);
    mkdir_private(&images).map_err(|e| e.to_string())?;
    let out = outs.join("criu-program.out");
    let argv = w.argv(cx.built, "stop", None);
    let mut cmd = Command::new(&argv[0]);
    let child = proc::new_session(&mut cmd)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the workload: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(..)) => {}
        other => return Err(format!("the workload did not stop itself: {other:?}")),
    }
    let mut c = Command::new(criu);
    c.args(["dump", "--shell-job", "-v2", "-o", "dump.log", "-t"])
        .arg(pid.to_string())
        .arg("-D")
        .arg(&images);
    let dumped = output_of(&mut c);
    if dumped.is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waitpid(pid, None);
    dumped.map_err(|e| {
        let log = fs::read_to_string(images.join("dump.log")).unwrap_or_default();
        let errs: String = log
            .lines()
            .filter(|l| l.starts_with("Error"))
            .collect::<Vec<_>>()
            .join(" / ");
        format!("criu dump failed: {e} {errs}")
    })?;
    Ok(Runner::Criu {
        criu: criu.to_path_buf(),
        images,
        out,
    })
}

/// Prepare `m` for `w`: compact file, images, working set (in `dir`;
/// the timed runs write to `outs`).
pub(crate) fn prepare(
    cx: &Ctx,
    w: &Workload,
    m: Method,
    dir: &Path,
    outs: &Path,
    img: &mut Option<Result<PathBuf, String>>,
) -> Result<Runner, String> {
    let cryo = |args: &[&str], img: &Path| -> Runner {
        let mut v: Vec<OsString> = vec![cx.cryo.clone().into(), "restore".into(), img.into()];
        v.extend(args.iter().map(OsString::from));
        Runner::Direct(v)
    };
    let mut image = || -> Result<PathBuf, String> {
        img.get_or_insert_with(|| cryo_capture(cx, w, dir)).clone()
    };
    match m {
        Method::Cold => Ok(Runner::Direct(w.argv(cx.built, "cold", None))),
        Method::Thaw => {
            if matches!(w.kind, Kind::Hello { .. }) {
                return Err("not applicable: a hello world has no structure to thaw".into());
            }
            let file = dir.join("compact.bin");
            let (_, code, _) = spawn_logged(
                &w.argv(cx.built, "save", Some(&file)),
                &dir.join("save.out"),
                &dir.join("save.err"),
            )?;
            if code != 0 {
                return Err(failure(
                    "saving the compact region",
                    code,
                    &dir.join("save.err"),
                ));
            }
            Ok(Runner::Direct(w.argv(cx.built, "thaw", Some(&file))))
        }
        Method::CryoEager => Ok(cryo(&["--eager"], &image()?)),
        Method::CryoLazy => Ok(cryo(&["--lazy", "--no-prefetch"], &image()?)),
        Method::CryoLazyOnDemand => Ok(cryo(&["--lazy=on-demand", "--no-prefetch"], &image()?)),
        Method::CryoLazyPrefetch => {
            let img = image()?;
            let rec = cryo(&["--lazy=on-demand", "--record-working-set"], &img);
            let Runner::Direct(argv) = rec else {
                unreachable!()
            };
            let log = dir.join("record.err");
            let (_, code, _) = spawn_logged(&argv, &dir.join("record.out"), &log)?;
            if code != 0 {
                return Err(failure("recording the working set", code, &log));
            }
            Ok(cryo(&["--lazy=on-demand"], &img))
        }
        Method::CryoMap => Ok(cryo(&["--map"], &image()?)),
        Method::CryoPack => {
            // One exec: the image packed (mapped) into a restorer of its own.
            let img = image()?;
            let exe = dir.join("restorer");
            let argv: Vec<OsString> = vec![
                cx.cryo.clone().into(),
                "pack".into(),
                "--map".into(),
                img.into(),
                "-o".into(),
                exe.clone().into(),
            ];
            let log = dir.join("pack.err");
            let (_, code, _) = spawn_logged(&argv, &dir.join("pack.out"), &log)?;
            if code != 0 {
                return Err(failure("cryo pack", code, &log));
            }
            Ok(Runner::Direct(vec![exe.into()]))
        }
        Method::Criu => match cx.criu {
            Ok((criu, _)) => criu_dump(criu, w, cx, dir, outs),
            Err(why) => Err(why.clone()),
        },
    }
}

/// What to say beside a lazy method's numbers when `cryo restore` fills
/// the image eagerly instead (too few lazy pages: `--lazy-min-mib`), from
/// its `--dry-run --json`.
pub(crate) fn eager_fill_note(r: &Runner) -> Option<String> {
    let Runner::Direct(argv) = r else { return None };
    if !argv
        .iter()
        .any(|a| a.to_string_lossy().starts_with("--lazy"))
    {
        return None;
    }
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--dry-run", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let f = v.get("eager_fill")?.as_object()?;
    Some(format!(
        "filled eagerly: {} lazy pages, fewer than --lazy-min-mib's {}",
        f.get("lazy_pages")?.as_u64()?,
        f.get("lazy_min_pages")?.as_u64()?
    ))
}

/// How long a run that has printed its answer may use no CPU time before
/// it is killed as hung at exit (one exiting, even from gigabytes of
/// heap, uses CPU the whole while).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Run a prepared method once, its output and logs in `dir`.
pub(crate) fn sample(r: &Runner, dir: &Path, name: &str) -> Result<Sample, String> {
    // (A run that answered but never exited: its answer counts, its exit
    // is not timed.)
    let mut hung_at_exit = false;
    let (t0, usage, out_file, clock_offset) = match r {
        Runner::Direct(argv) => {
            let (out, err) = (
                dir.join(format!("{name}.out")),
                dir.join(format!("{name}.err")),
            );
            let (t0, code, usage) = spawn_logged(argv, &out, &err)?;
            if code != 0 {
                return Err(failure(name, code, &err));
            }
            (t0, usage, out, 0)
        }
        Runner::Criu { criu, images, out } => {
            let pidfile = dir.join("criu.pid");
            let _ = fs::remove_file(&pidfile);
            // Its log beside the other runs' output (on tmpfs), not in its
            // images' directory: every method's writes go to one place.
            let restore_log = dir.join("criu-restore.log");
            // the restored program reopens its stdout by path; CRIU checks
            // the size it had at dump time (empty: nothing printed before the stop)
            fs::File::create(out).map_err(|e| e.to_string())?;
            let argv = os_args(&[
                criu,
                &"restore",
                &"--shell-job",
                &"-d",
                &"-v2",
                &"-o",
                &restore_log,
                &"--pidfile",
                &pidfile,
                &"-D",
                images,
            ]);
            let log = dir.join("criu-restore.err");
            let (t0, code, u1) =
                spawn_logged_reap(&argv, &dir.join("criu-restore.out"), &log, false)?;
            if code != 0 {
                let rl = fs::read_to_string(&restore_log).unwrap_or_default();
                let errs: Vec<&str> = rl.lines().filter(|l| l.starts_with("Error")).collect();
                return Err(format!(
                    "criu restore exited with status {code}: {}",
                    last_lines(&errs.join("\n"), 3)
                ));
            }
            let pid: i32 = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("criu restore wrote no pidfile")?;
            // CRIU restores into a new time namespace whose CLOCK_MONOTONIC
            // goes on from the dump's: the program's stamps need its offset.
            let offset = fs::read_to_string(format!("/proc/{pid}/timens_offsets"))
                .ok()
                .and_then(|s| monotonic_offset_ns(&s))
                .unwrap_or(0);
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGCONT);
            let answered = || {
                parse_stamps(&fs::read_to_string(out).unwrap_or_default())
                    .answer_at
                    .is_some()
            };
            let (code, u2, killed) =
                proc::wait4_after_answer(pid, run_timeout(), EXIT_GRACE, &answered)
                    .map_err(|e| format!("the process criu restored: {e}"))?;
            hung_at_exit = killed;
            if code != 0 && !killed {
                return Err(format!(
                    "the process criu restored exited with status {code}"
                ));
            }
            let u3 = proc::reap_orphans(std::time::Duration::from_secs(10));
            let usage = proc::Usage {
                faults: u1.faults + u2.faults + u3.faults,
                max_rss_kb: u1.max_rss_kb.max(u2.max_rss_kb).max(u3.max_rss_kb),
            };
            (t0, usage, out.clone(), offset)
        }
    };
    let t1 = now_ns();
    let text = fs::read_to_string(&out_file).unwrap_or_default();
    let st = parse_stamps(&text);
    let at = st
        .answer_at
        .ok_or_else(|| format!("{name} printed no answer stamp: {}", last_lines(&text, 2)))?;
    // a stamp from inside the program, on this process's clock
    let host = |t: u64| (t as i128 - clock_offset as i128).max(0) as u64;
    let ms = |t: u64| t.saturating_sub(t0) as f64 / 1e6;
    let mut phases_ms = BTreeMap::new();
    for (k, v) in &st.other {
        if k == "built" {
            phases_ms.insert("build_ms".to_string(), ms(host(*v)));
        } else if let Some(base) = k.strip_suffix("_ns") {
            phases_ms.insert(format!("{base}_ms"), *v as f64 / 1e6);
        }
    }
    Ok(Sample {
        answer_ms: ms(host(at)),
        exit_ms: if hung_at_exit { f64::NAN } else { ms(t1) },
        exited: !hung_at_exit,
        faults: usage.faults,
        max_rss_kb: usage.max_rss_kb,
        checksum: st.checksum,
        phases_ms,
    })
}

/// The CLOCK_MONOTONIC offset of a time namespace, in ns, from
/// /proc/PID/timens_offsets ("monotonic SECS NSECS" lines).
fn monotonic_offset_ns(s: &str) -> Option<i64> {
    s.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        if f.next()? != "monotonic" {
            return None;
        }
        let secs: i64 = f.next()?.parse().ok()?;
        let nsecs: i64 = f.next()?.parse().ok()?;
        Some(secs * 1_000_000_000 + nsecs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_namespace_offsets() {
        let s = "monotonic         -15 247891585\nboottime          -15 247880615\n";
        assert_eq!(monotonic_offset_ns(s), Some(-15_000_000_000 + 247_891_585));
        assert_eq!(monotonic_offset_ns("monotonic 0 0\n"), Some(0));
        assert_eq!(monotonic_offset_ns("boottime 1 2\n"), None);
    }
}
