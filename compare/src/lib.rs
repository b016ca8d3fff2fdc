//! cryo compare: how a GHC program gets to its first answer, measured side
//! by side in one run — a cold start, a closure-level thaw (GHC compact
//! region read back with importCompact), cryo restore (eager, lazy, lazy
//! with a prefetched working set) and CRIU.
//!
//! Every method runs the same executable, built here from the bundled
//! sources (`workloads/`), and must print the cold start's checksum or its
//! timings are withheld. Runs of the methods are interleaved, in a new
//! order each round, so drift in the machine's state, and what one run
//! leaves to the next, hit them alike.
//!
//! This file is the public API and [`run`], the loop over workloads and
//! methods. The parts: `workloads` (what each program computes), `build`
//! (the GHC programs, cryo's private copy, CRIU), `runners` (each method
//! prepared and sampled), `proc` (one timed process), `stats`, `report`
//! (rows, ratios, JSON/markdown/SVG) and `util`.

mod build;
pub mod proc;
pub mod report;
mod runners;
pub mod stats;
mod util;
mod workloads;

pub use workloads::{workloads, Kind, Workload};

use build::{build, find_criu, private_cryo};
use report::{Environment, Report, Row, Sample};
use runners::{prepare, sample, Ctx, Runner};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Instant;
use util::{drop_caches, mkdir_private, write_private};

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
    CryoLazyOnDemand,
    CryoLazyPrefetch,
    CryoMap,
    CryoPack,
    Criu,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Cold,
        Method::Thaw,
        Method::CryoEager,
        Method::CryoLazy,
        Method::CryoLazyOnDemand,
        Method::CryoLazyPrefetch,
        Method::CryoMap,
        Method::CryoPack,
        Method::Criu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Cold => "cold",
            Method::Thaw => "thaw",
            Method::CryoEager => "cryo-eager",
            Method::CryoLazy => "cryo-lazy",
            Method::CryoLazyOnDemand => "cryo-lazy-on-demand",
            Method::CryoLazyPrefetch => "cryo-lazy-prefetch",
            Method::CryoMap => "cryo-map",
            Method::CryoPack => "cryo-pack",
            Method::Criu => "criu",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s)
    }
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
    /// Each timed warm run follows an untimed run of the same method, so
    /// that no timed run follows another method's (CRIU's restore slowed
    /// the next run of a packed restorer by 0.08 ms at stop 54).
    pub paired: bool,
}

/// The run timeout of the comparison in progress (set by [`run`]).
static RUN_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(120_000);

fn run_timeout() -> Option<std::time::Duration> {
    Some(std::time::Duration::from_millis(
        RUN_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed),
    ))
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
    let outputs = util::Outputs::new();
    let mut rows = Vec::new();
    for (wi, w) in chosen.iter().enumerate() {
        let dir = work.join(&w.name);
        let _ = fs::remove_dir_all(&dir);
        mkdir_private(&dir)?;
        let outs = outputs.for_workload(&w.name, &dir)?;
        log(&format!(
            "[{}/{}] {}: preparing",
            wi + 1,
            chosen.len(),
            w.name
        ));
        let mut img = None;
        let mut prepared: Vec<(Method, Result<Runner, String>)> = Vec::new();
        for &m in &cfg.methods {
            prepared.push((m, prepare(&cx, w, m, &dir, &outs, &mut img)));
        }
        // What the preparation wrote (images, packed restorers, compact
        // files) reaches the disk now, not by the flusher during the
        // timed runs.
        nix::unistd::sync();
        // The reference answer: the cold start's (run once, untimed).
        let reference = match sample(
            &Runner::Direct(w.argv(&built, "cold", None)),
            &outs,
            "reference",
        ) {
            Ok(s) => s.checksum,
            Err(e) => {
                log(&format!("  cold start failed: {e}"));
                None
            }
        };
        let notes: Vec<Option<String>> = prepared
            .iter()
            .map(|(_, p)| p.as_ref().ok().and_then(runners::eager_fill_note))
            .collect();
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
        // Each round runs the methods in a new order (the same for every
        // run of cryo compare): in a fixed order, one method measured
        // 0.1-0.2 ms apart by its place alone (docs/pitfalls.md, "A/B
        // timing").
        let mut order_seed = 0x9e37_79b9_7f4a_7c15_u64;
        for (phase, count) in phases {
            if phase == "cold" && cold_cache.is_err() {
                continue;
            }
            for i in 0..count {
                for k in round_order(prepared.len(), &mut order_seed) {
                    let (m, p) = &prepared[k];
                    let (Ok(r), None) = (p, &failed[k]) else {
                        continue;
                    };
                    if phase == "cold" {
                        let _ = drop_caches();
                    }
                    if phase == "warm" && cfg.paired {
                        if let Err(e) = sample(r, &outs, m.name()) {
                            log(&format!("  {} failed: {e}", m.name()));
                            failed[k] = Some(e);
                            continue;
                        }
                    }
                    match sample(r, &outs, m.name()) {
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
                    _ => {
                        let mut row = Row::from_samples(
                            &w.name,
                            m.name(),
                            cache,
                            reference.as_deref(),
                            samples,
                        );
                        if row.note.is_none() {
                            row.note = notes[k].clone();
                        }
                        row
                    }
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
        outputs.finish(&outs, &dir, cfg.keep);
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
        paired: cfg.paired,
        outputs_on_tmpfs: outputs.on_tmpfs(),
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

/// The indices 0..n in a new pseudo-random order each call (Fisher-Yates
/// driven by xorshift64 from `seed`, which it advances): which method runs
/// first in a round, and after which, changes from round to round.
fn round_order(n: usize, seed: &mut u64) -> Vec<usize> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut v: Vec<usize> = (0..n).collect();
    for a in (1..n).rev() {
        let b = (next() % (a as u64 + 1)) as usize;
        v.swap(a, b);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_their_names() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(m));
        }
        assert_eq!(Method::parse("criu-lazy"), None);
    }

    #[test]
    fn each_round_is_a_new_order_of_every_method() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut firsts = [0usize; 4];
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            let o = round_order(4, &mut seed);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
            firsts[o[0]] += 1;
            orders.insert(o);
        }
        // All 24 orders come up, and each method leads about a quarter of
        // the rounds.
        assert_eq!(orders.len(), 24);
        assert!(firsts.iter().all(|&f| (30..=70).contains(&f)), "{firsts:?}");
    }
}
