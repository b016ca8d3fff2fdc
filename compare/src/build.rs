//! What the runs execute: the GHC workloads built from the bundled sources,
//! a private copy of cryo, and the CRIU to compare against (found, or
//! built by scripts/build-criu.sh).

use crate::util::{mkdir_private, output_of, write_private};
use crate::{io_err, CompareError, Config, CriuChoice};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BENCH_HS: &str = include_str!("../workloads/Bench.hs");
const HELLO_HS: &str = include_str!("../workloads/Hello.hs");
const HELLO_MAIN_C: &str = include_str!("../workloads/hello_main.c");
const STAMP_C: &str = include_str!("../workloads/stamp.c");
const BUILD_CRIU_SH: &str = include_str!("../../scripts/build-criu.sh");

pub(crate) struct Built {
    pub(crate) bench: PathBuf,
    pub(crate) bench_threaded: PathBuf,
    pub(crate) hello: PathBuf,
    pub(crate) hello_v0: PathBuf,
    pub(crate) ghc_version: String,
}

/// Build the workloads with apt's ghc (-O2, non-threaded RTS, -V0), unless
/// an earlier build of the same sources with the same ghc is there.
pub(crate) fn build(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<Built, CompareError> {
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
pub(crate) fn private_cryo(cryo: &Path, dir: &Path) -> Result<PathBuf, CompareError> {
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
pub(crate) fn find_criu(
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
