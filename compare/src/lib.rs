//! cryo compare: how a GHC program gets to its first answer, measured side
//! by side in one run — a cold start, a closure-level thaw (GHC compact
//! region read back with importCompact), cryo restore (eager, lazy, lazy
//! with a prefetched working set) and CRIU.
//!
//! Every method runs the same executable, built here from the bundled
//! sources (`workloads/`), and must print the cold start's checksum or its
//! timings are withheld. Runs of the methods are interleaved so drift in
//! the machine's state hits them alike.

pub mod proc;
pub mod report;
pub mod stats;

use proc::{now_ns, parse_stamps};
use report::{Environment, Report, Row, Sample};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const BENCH_HS: &str = include_str!("../workloads/Bench.hs");
const HELLO_HS: &str = include_str!("../workloads/Hello.hs");
const HELLO_MAIN_C: &str = include_str!("../workloads/hello_main.c");
const STAMP_C: &str = include_str!("../workloads/stamp.c");
const BUILD_CRIU_SH: &str = include_str!("../../scripts/build-criu.sh");

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("building the GHC workloads: {0}")]
    Ghc(String),
    #[error("no workload matches --only {0:?}")]
    NoWorkload(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CompareError {
    let what = what.into();
    move |source| CompareError::Io { what, source }
}

/// The ways to get to the first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Cold,
    Thaw,
    CryoEager,
    CryoLazy,
    CryoLazyPrefetch,
    Criu,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Cold,
        Method::Thaw,
        Method::CryoEager,
        Method::CryoLazy,
        Method::CryoLazyPrefetch,
        Method::Criu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Cold => "cold",
            Method::Thaw => "thaw",
            Method::CryoEager => "cryo-eager",
            Method::CryoLazy => "cryo-lazy",
            Method::CryoLazyPrefetch => "cryo-lazy-prefetch",
            Method::Criu => "criu",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// What a workload program computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// GHC hello world: hs_init, putStrLn, hs_exit (with or without -V0).
    Hello { v0: bool },
    /// `bench STRUCTURE N ANSWER`: build a Data.Map ("map") or an array of
    /// Text ("text") from N entries, then answer by a few lookups or a
    /// full fold. `threaded`: built with GHC's threaded RTS and run on two
    /// capabilities (`-threaded -with-rtsopts=-N2`, otherwise the default
    /// RTS flags): worker threads, the IO manager and the timerfd ticker.
    Bench {
        structure: &'static str,
        n: u64,
        answer: &'static str,
        threaded: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub kind: Kind,
}

/// "1e5" for powers of ten, the number otherwise.
fn short(n: u64) -> String {
    let mut e = 0;
    let mut m = n;
    while m >= 10 && m.is_multiple_of(10) {
        m /= 10;
        e += 1;
    }
    if m == 1 && e > 0 {
        format!("1e{e}")
    } else {
        n.to_string()
    }
}

impl Workload {
    fn bench(structure: &'static str, n: u64, answer: &'static str) -> Workload {
        Workload {
            name: format!("{structure}-{}-{answer}", short(n)),
            kind: Kind::Bench {
                structure,
                n,
                answer,
                threaded: false,
            },
        }
    }

    /// The same, on the threaded RTS with +RTS -N2.
    fn bench_threaded(structure: &'static str, n: u64, answer: &'static str) -> Workload {
        Workload {
            name: format!("{structure}-{}-{answer}-threaded", short(n)),
            kind: Kind::Bench {
                structure,
                n,
                answer,
                threaded: true,
            },
        }
    }

    /// argv of the workload in MODE (cold, stop, save, thaw).
    fn argv(&self, b: &Built, mode: &str, file: Option<&Path>) -> Vec<OsString> {
        let mut v: Vec<OsString> = match &self.kind {
            Kind::Hello { v0 } => {
                vec![if *v0 { &b.hello_v0 } else { &b.hello }.into(), mode.into()]
            }
            Kind::Bench {
                structure,
                n,
                answer,
                threaded,
            } => vec![
                if *threaded {
                    &b.bench_threaded
                } else {
                    &b.bench
                }
                .clone()
                .into(),
                (*structure).into(),
                n.to_string().into(),
                (*answer).into(),
                mode.into(),
            ],
        };
        if let Some(f) = file {
            v.push(f.into());
        }
        v
    }
}

/// The workload set: `--quick` keeps the heaps small (about 1 and 8 MB of
/// map, 14 MB of text); the full sweep takes the map from about 1 MB to
/// about 1 GB of heap and adds ghc-fastboot's 1M-entry vector of Text.
/// `sizes` replaces the map sizes.
pub fn workloads(quick: bool, sizes: Option<&[u64]>) -> Vec<Workload> {
    let mut v = vec![
        Workload {
            name: "hello".into(),
            kind: Kind::Hello { v0: false },
        },
        Workload {
            name: "hello-v0".into(),
            kind: Kind::Hello { v0: true },
        },
    ];
    let default: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000, 10_000_000]
    };
    for &n in sizes.unwrap_or(default) {
        for answer in ["lookups", "fold"] {
            v.push(Workload::bench("map", n, answer));
        }
        v.push(Workload::bench_threaded("map", n, "lookups"));
    }
    let text_n = if quick { 100_000 } else { 1_000_000 };
    for answer in ["lookups", "fold"] {
        v.push(Workload::bench("text", text_n, answer));
    }
    v
}

/// The CRIU to compare against.
#[derive(Clone, Debug, PartialEq)]
pub enum CriuChoice {
    /// A criu built by --build-criu beside cryo, else `criu` on PATH.
    Auto,
    Path(PathBuf),
    /// Build CRIU 4.1 from Debian trixie's source first (scripts/build-criu.sh).
    Build,
    Off,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub out: PathBuf,
    pub quick: bool,
    /// The cryo binary to capture and restore with.
    pub cryo: PathBuf,
    pub criu: CriuChoice,
    /// Only workloads whose name is in this list (all if empty).
    pub only: Vec<String>,
    pub methods: Vec<Method>,
    pub warmup: usize,
    pub runs: usize,
    /// Runs with the page cache dropped before each (0: none).
    pub cold_cache_runs: usize,
    pub sizes: Option<Vec<u64>>,
    /// The command line, for the record.
    pub command: String,
    /// Keep each workload's images and outputs under OUT/work.
    pub keep: bool,
    /// A run (program, restore, restored program) still going after this
    /// is killed and its method marked failed for the workload.
    pub run_timeout: std::time::Duration,
}

/// The run timeout of the comparison in progress (set by [`run`]).
static RUN_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(120_000);

fn run_timeout() -> Option<std::time::Duration> {
    Some(std::time::Duration::from_millis(
        RUN_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

struct Built {
    bench: PathBuf,
    bench_threaded: PathBuf,
    hello: PathBuf,
    hello_v0: PathBuf,
    ghc_version: String,
}

fn mkdir_private(p: &Path) -> Result<(), CompareError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err(format!("creating {}", p.display())))
}

/// Write a file through a temporary name, 0600.
fn write_private(p: &Path, data: &[u8]) -> Result<(), CompareError> {
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
        .and_then(|_| fs::rename(&tmp, p))
        .map_err(io_err(format!("writing {}", p.display())))
}

/// An argv from strings and paths alike.
fn os_args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

fn output_of(cmd: &mut Command) -> Result<String, String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{prog} failed ({}): {}",
            o.status,
            last_lines(&String::from_utf8_lossy(&o.stderr), 12)
        )),
        Err(e) => Err(format!("cannot run {prog}: {e}")),
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(n)..].join(" / ")
}

/// Build the workloads with apt's ghc (-O2, non-threaded RTS, -V0), unless
/// an earlier build of the same sources with the same ghc is there.
fn build(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<Built, CompareError> {
    let ghc_version = output_of(Command::new("ghc").arg("--numeric-version"))
        .map_err(|e| CompareError::Ghc(format!("{e} (install it: apt-get install ghc)")))?
        .trim()
        .to_string();
    let src = dir.join("src");
    mkdir_private(&src)?;
    let b = Built {
        bench: dir.join("bench"),
        bench_threaded: dir.join("bench-threaded"),
        hello: dir.join("hello"),
        hello_v0: dir.join("hello-v0"),
        ghc_version,
    };
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (BENCH_HS, HELLO_HS, HELLO_MAIN_C, STAMP_C, &b.ghc_version).hash(&mut h);
        format!("{:016x}\n", h.finish())
    };
    let stamp = dir.join("built-from");
    let fresh = fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str())
        && [&b.bench, &b.bench_threaded, &b.hello, &b.hello_v0]
            .iter()
            .all(|p| p.exists());
    if fresh {
        log(&format!("workloads: up to date (GHC {})", b.ghc_version));
        return Ok(b);
    }
    for (name, text) in [
        ("Bench.hs", BENCH_HS),
        ("Hello.hs", HELLO_HS),
        ("hello_main.c", HELLO_MAIN_C),
        ("stamp.c", STAMP_C),
    ] {
        write_private(&src.join(name), text.as_bytes())?;
    }
    let jobs: [(&Path, &str, Vec<&str>); 4] = [
        (
            &b.bench,
            "o-bench",
            vec!["-with-rtsopts=-V0", "Bench.hs", "stamp.c"],
        ),
        (
            &b.bench_threaded,
            "o-bench-threaded",
            vec!["-threaded", "-with-rtsopts=-N2", "Bench.hs", "stamp.c"],
        ),
        (
            &b.hello,
            "o-hello",
            vec!["-no-hs-main", "Hello.hs", "hello_main.c", "stamp.c"],
        ),
        (
            &b.hello_v0,
            "o-hello-v0",
            vec![
                "-no-hs-main",
                "-optc-DBENCH_V0",
                "Hello.hs",
                "hello_main.c",
                "stamp.c",
            ],
        ),
    ];
    for (exe, odir, args) in jobs {
        log(&format!(
            "workloads: ghc -O2 {} (GHC {})",
            args.join(" "),
            b.ghc_version
        ));
        let mut c = Command::new("ghc");
        c.current_dir(&src)
            .args(["-O2", "-outputdir", odir, "-o"])
            .arg(exe)
            .args(&args);
        output_of(&mut c).map_err(CompareError::Ghc)?;
    }
    write_private(&stamp, key.as_bytes())?;
    Ok(b)
}

/// "4.1.1" from `criu --version`, or why that criu will not do.
fn criu_version(criu: &Path) -> Result<String, String> {
    let out = output_of(Command::new(criu).arg("--version"))?;
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{}: no version in `criu --version`", criu.display()))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (4, 1) {
        return Err(format!(
            "{} is CRIU {v}, which fails on kernels with [vvar_vclock] (fixed in 4.1); \
             run `cryo compare --build-criu` or pass --criu PATH",
            criu.display()
        ));
    }
    Ok(v)
}

/// Copy `cryo` and the `cryo-shim` beside it into `dir`: the copy is what
/// the runs execute (see `Ctx::cryo`).
fn private_cryo(cryo: &Path, dir: &Path) -> Result<PathBuf, CompareError> {
    mkdir_private(dir)?;
    let shim = cryo.with_file_name("cryo-shim");
    let alias = cryo.with_file_name("cryo-shim.text");
    for (from, name) in [
        (cryo, "cryo"),
        (shim.as_path(), "cryo-shim"),
        (alias.as_path(), "cryo-shim.text"),
    ] {
        if name == "cryo-shim.text" && !from.exists() {
            continue;
        }
        let to = dir.join(name);
        let tmp = to.with_extension("tmp");
        fs::copy(from, &tmp)
            .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)))
            .and_then(|_| fs::rename(&tmp, &to))
            .map_err(io_err(format!("copying {}", from.display())))?;
    }
    Ok(dir.join("cryo"))
}

/// The criu binary and its version, or the reason there is none.
fn find_criu(
    cfg: &Config,
    build_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, String), String> {
    // target/criu, beside target/<triple>/<profile>/cryo (or, without an
    // explicit target, target/<profile>/cryo): where scripts/build-criu.sh
    // builds by default.
    let beside = cfg
        .cryo
        .parent()
        .and_then(Path::parent)
        .map(|t| match t.file_name() {
            Some(n) if n == "x86_64-unknown-linux-gnu" => t.parent().unwrap_or(t),
            _ => t,
        })
        .map(|t| t.join("criu"))
        .unwrap_or_else(|| PathBuf::from("criu-build"));
    let built = |dir: &Path| -> Option<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("criu/criu")))
            .filter(|p| p.exists())
            .collect();
        v.sort();
        v.pop()
    };
    match &cfg.criu {
        CriuChoice::Off => Err("not run (--no-criu)".into()),
        CriuChoice::Path(p) => criu_version(p).map(|v| (p.clone(), v)),
        CriuChoice::Build => {
            let script = build_dir.join("build-criu.sh");
            write_private(&script, BUILD_CRIU_SH.as_bytes()).map_err(|e| e.to_string())?;
            log(&format!(
                "criu: building CRIU 4.1 from Debian trixie's source into {}",
                beside.display()
            ));
            let out = output_of(Command::new("bash").arg(&script).arg(&beside))?;
            let p = PathBuf::from(out.lines().last().unwrap_or("").trim());
            criu_version(&p).map(|v| (p, v))
        }
        CriuChoice::Auto => {
            if let Some(p) = built(&beside) {
                return criu_version(&p).map(|v| (p, v));
            }
            let on_path = std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("criu"))
                        .find(|c| c.exists())
                })
                .unwrap_or_default();
            match on_path {
                Some(p) => criu_version(&p).map(|v| (p, v)),
                None => Err("criu not found (run `cryo compare --build-criu` to build CRIU 4.1, or pass --criu PATH)".into()),
            }
        }
    }
}

/// Drop the page cache (and dentries, inodes) so the next run reads its
/// files from disk.
fn drop_caches() -> io::Result<()> {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3")
}

/// How a prepared method is run once.
enum Runner {
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

struct Ctx<'a> {
    /// A private copy of the cryo binary (and its shim) to time: the
    /// running harness keeps its own binary mapped, which dropping the page
    /// cache cannot evict, so restoring with it would make "cold cache"
    /// runs warm for cryo.
    cryo: PathBuf,
    built: &'a Built,
    criu: &'a Result<(PathBuf, String), String>,
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
fn criu_dump(criu: &Path, w: &Workload, cx: &Ctx, dir: &Path) -> Result<Runner, String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let images = dir.join("criu-img");
    let _ = fs::remove_dir_all(&images);
    mkdir_private(&images).map_err(|e| e.to_string())?;
    let out = dir.join("criu-program.out");
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

/// Prepare `m` for `w`: compact file, images, working set.
fn prepare(
    cx: &Ctx,
    w: &Workload,
    m: Method,
    dir: &Path,
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
        Method::CryoLazy => Ok(cryo(&["--lazy=on-demand", "--no-prefetch"], &image()?)),
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
        Method::Criu => match cx.criu {
            Ok((criu, _)) => criu_dump(criu, w, cx, dir),
            Err(why) => Err(why.clone()),
        },
    }
}

/// Run a prepared method once.
fn sample(r: &Runner, dir: &Path, name: &str) -> Result<Sample, String> {
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
                &"restore.log",
                &"--pidfile",
                &pidfile,
                &"-D",
                images,
            ]);
            let log = dir.join("criu-restore.err");
            let (t0, code, u1) =
                spawn_logged_reap(&argv, &dir.join("criu-restore.out"), &log, false)?;
            if code != 0 {
                let rl = fs::read_to_string(images.join("restore.log")).unwrap_or_default();
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
            let (code, u2) = proc::wait4_within(pid, run_timeout())
                .map_err(|e| format!("the process criu restored: {e}"))?;
            if code != 0 {
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
        exit_ms: ms(t1),
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

fn env_facts() -> (String, String) {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (kernel, format!("{cpu} ({n} CPUs)"))
}

/// Run the comparison; `log` receives progress lines.
pub fn run(cfg: &Config, log: &mut dyn FnMut(&str)) -> Result<Report, CompareError> {
    RUN_TIMEOUT_MS.store(
        cfg.run_timeout.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let started = Instant::now();
    proc::cloexec_inherited_fds();
    // absolute: ghc runs in OUT/build/src
    let out = std::path::absolute(&cfg.out).map_err(io_err(format!("{}", cfg.out.display())))?;
    mkdir_private(&out)?;
    let build_dir = out.join("build");
    mkdir_private(&build_dir)?;
    let built = build(&build_dir, log)?;
    let criu = if cfg.methods.contains(&Method::Criu) {
        find_criu(cfg, &build_dir, log)
    } else {
        Err("not run (not in --methods)".into())
    };
    match &criu {
        Ok((p, v)) => log(&format!("criu: CRIU {v} at {}", p.display())),
        Err(why) => log(&format!("criu: unavailable: {why}")),
    }
    // The restored process of `criu restore -d` is reparented to us, so we
    // can reap it and read its rusage.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| io_err("PR_SET_CHILD_SUBREAPER")(e.into()))?;
    let cold_cache = if cfg.cold_cache_runs == 0 {
        Err("not run (--cold-cache-runs 0)".to_string())
    } else {
        drop_caches().map_err(|e| format!("cannot drop the page cache ({e}); needs root"))
    };
    let all = workloads(cfg.quick, cfg.sizes.as_deref());
    let chosen: Vec<Workload> = all
        .into_iter()
        .filter(|w| cfg.only.is_empty() || cfg.only.contains(&w.name))
        .collect();
    if chosen.is_empty() {
        return Err(CompareError::NoWorkload(cfg.only.join(",")));
    }
    let work = out.join("work");
    let (kernel, cpu) = env_facts();
    let cryo = private_cryo(&cfg.cryo, &build_dir.join("bin"))?;
    let cx = Ctx {
        cryo,
        built: &built,
        criu: &criu,
    };
    let mut rows = Vec::new();
    for (wi, w) in chosen.iter().enumerate() {
        let dir = work.join(&w.name);
        let _ = fs::remove_dir_all(&dir);
        mkdir_private(&dir)?;
        log(&format!(
            "[{}/{}] {}: preparing",
            wi + 1,
            chosen.len(),
            w.name
        ));
        let mut img = None;
        let mut prepared: Vec<(Method, Result<Runner, String>)> = Vec::new();
        for &m in &cfg.methods {
            prepared.push((m, prepare(&cx, w, m, &dir, &mut img)));
        }
        // The reference answer: the cold start's (run once, untimed).
        let reference = match sample(
            &Runner::Direct(w.argv(&built, "cold", None)),
            &dir,
            "reference",
        ) {
            Ok(s) => s.checksum,
            Err(e) => {
                log(&format!("  cold start failed: {e}"));
                None
            }
        };
        let mut warm: Vec<Vec<Sample>> = prepared.iter().map(|_| Vec::new()).collect();
        let mut cold: Vec<Vec<Sample>> = prepared.iter().map(|_| Vec::new()).collect();
        let mut failed: Vec<Option<String>> = prepared
            .iter()
            .map(|(_, p)| p.as_ref().err().cloned())
            .collect();
        let phases: [(&str, usize); 3] = [
            ("warm-up", cfg.warmup),
            ("warm", cfg.runs),
            ("cold", cfg.cold_cache_runs),
        ];
        for (phase, count) in phases {
            if phase == "cold" && cold_cache.is_err() {
                continue;
            }
            for i in 0..count {
                for (k, (m, p)) in prepared.iter().enumerate() {
                    let (Ok(r), None) = (p, &failed[k]) else {
                        continue;
                    };
                    if phase == "cold" {
                        let _ = drop_caches();
                    }
                    match sample(r, &dir, m.name()) {
                        Ok(s) => match phase {
                            "warm" => warm[k].push(s),
                            "cold" => cold[k].push(s),
                            _ => {}
                        },
                        Err(e) => {
                            log(&format!("  {} failed: {e}", m.name()));
                            failed[k] = Some(e);
                        }
                    }
                }
                if phase != "warm-up" {
                    log(&format!("  {} {}/{}", phase, i + 1, count));
                }
            }
        }
        for (k, (m, _)) in prepared.iter().enumerate() {
            for (cache, samples) in [("warm", &warm[k]), ("cold", &cold[k])] {
                if cache == "cold" && cfg.cold_cache_runs == 0 {
                    continue;
                }
                let row = match (&failed[k], cache, &cold_cache) {
                    (Some(why), _, _) => Row::unavailable(&w.name, m.name(), cache, why.clone()),
                    (None, "cold", Err(why)) => {
                        Row::unavailable(&w.name, m.name(), cache, why.clone())
                    }
                    _ => Row::from_samples(&w.name, m.name(), cache, reference.as_deref(), samples),
                };
                if cache == "warm" {
                    log(&format!(
                        "  {:<20} {}",
                        m.name(),
                        match row.median_ms {
                            Some(v) => format!(
                                "{v:.2} ms (p10 {:.2}, p90 {:.2})",
                                row.p10_ms.unwrap_or(v),
                                row.p90_ms.unwrap_or(v)
                            ),
                            None => row.note.clone().unwrap_or_default(),
                        }
                    ));
                }
                rows.push(row);
            }
        }
        if !cfg.keep {
            let _ = fs::remove_dir_all(&dir);
        }
    }
    let ratios = report::ratios(&rows);
    let environment = Environment {
        command: cfg.command.clone(),
        cryo_version: env!("CARGO_PKG_VERSION").into(),
        cryo_build: if cfg!(debug_assertions) {
            "debug (timings are not comparable; use a release build)".into()
        } else {
            "release".into()
        },
        ghc_version: built.ghc_version.clone(),
        criu: match &criu {
            Ok((_, v)) => format!("CRIU {v}"),
            Err(why) => format!("no CRIU ({why})"),
        },
        kernel,
        cpu,
        quick: cfg.quick,
        warmup_runs: cfg.warmup,
        runs: cfg.runs,
        cold_cache_runs: if cold_cache.is_ok() {
            cfg.cold_cache_runs
        } else {
            0
        },
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(started.elapsed().as_secs()),
        duration_s: started.elapsed().as_secs_f64(),
    };
    let rep = Report {
        results: rows,
        ratios,
        environment,
    };
    write_private(&out.join("compare.json"), rep.to_json().as_bytes())?;
    write_private(&out.join("compare.md"), rep.to_markdown().as_bytes())?;
    write_private(&out.join("compare.svg"), rep.to_svg().as_bytes())?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_and_sets() {
        let q = workloads(true, None);
        let names: Vec<&str> = q.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hello",
                "hello-v0",
                "map-1e4-lookups",
                "map-1e4-fold",
                "map-1e4-lookups-threaded",
                "map-1e5-lookups",
                "map-1e5-fold",
                "map-1e5-lookups-threaded",
                "text-1e5-lookups",
                "text-1e5-fold"
            ]
        );
        let full = workloads(false, None);
        assert!(full.iter().any(|w| w.name == "map-1e7-fold"));
        assert!(full.iter().any(|w| w.name == "text-1e6-lookups"));
        let custom = workloads(true, Some(&[2500]));
        assert!(custom.iter().any(|w| w.name == "map-2500-lookups"));
        assert_eq!(short(1), "1");
        assert_eq!(short(3_000_000), "3000000");
    }

    #[test]
    fn time_namespace_offsets() {
        let s = "monotonic         -15 247891585\nboottime          -15 247880615\n";
        assert_eq!(monotonic_offset_ns(s), Some(-15_000_000_000 + 247_891_585));
        assert_eq!(monotonic_offset_ns("monotonic 0 0\n"), Some(0));
        assert_eq!(monotonic_offset_ns("boottime 1 2\n"), None);
    }

    #[test]
    fn methods_round_trip_their_names() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(m));
        }
        assert_eq!(Method::parse("criu-lazy"), None);
    }
}
