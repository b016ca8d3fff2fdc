//! `cryo compare`: the comparison harness (cryo-compare).

use anyhow::{bail, Context, Result};
use cryo_compare::{Config, CriuChoice, Method};
use std::path::PathBuf;

/// Time GHC programs to their first answer by every way below, side by side.
///
/// Builds the bundled GHC workloads (apt's ghc, -O2, non-threaded RTS,
/// -V0), then times each by every method, interleaving the methods' runs
/// (in a new order each round; each timed warm run right after an untimed
/// run of its own method, unless --unpaired; outputs on tmpfs):
///
///   cold                 compute from scratch
///   thaw                 closure level: the structure saved as a GHC compact
///                        region, read back with importCompact
///   cryo-eager           cryo restore --eager of the process captured at its
///                        self-stop right after the build
///   cryo-lazy            cryo restore --lazy --no-prefetch: served on first
///                        touch, the rest streamed in the background
///   cryo-lazy-on-demand  cryo restore --lazy=on-demand --no-prefetch: only
///                        what is touched (and read ahead of dense walks)
///   cryo-lazy-prefetch   cryo restore --lazy=on-demand with a working set
///                        recorded by one earlier restore
///   cryo-map             cryo restore --map: the heap mapped from pages.img
///                        (page cache), copied only where written
///   cryo-pack            the image packed (cryo pack --map) into a restorer
///                        of its own, run directly: one exec
///   criu                 criu dump at the same stop, criu restore -d, SIGCONT
///
/// Workloads: hello (and hello-v0): RTS start-up and shutdown, hs_init and
/// hs_exit timed apart; map-N-lookups / map-N-fold: a Data.Map of N
/// scattered keys answered by 8 lookups or a full fold; text-N-*: an array
/// of N Text values (ghc-fastboot's published case at N = 1e6).
///
/// Every method must print the cold start's checksum or its timings are not
/// reported (checksum_ok false). Times run from spawn to the program's own
/// CLOCK_MONOTONIC stamp at its answer; page faults and max RSS come from
/// wait4 on the whole process tree. Warm runs, then runs with the page
/// cache dropped before each (root). Writes OUT/compare.md, compare.json and
/// compare.svg.
///
/// Goals (issue 14, warm medians): the best cryo method at most 0.5 x thaw
/// (0.8 x on a fold), criu at least 50 x slower on hello (20 x elsewhere),
/// cryo-lazy at most 1.2 x cryo-eager (a last line on stderr counts them
/// and names each not surely met). Each ratio comes with a 90 %
/// bootstrap interval from the runs; met is yes or no only where the whole
/// interval agrees, else edge: more --runs (at least 3 for an interval),
/// or the goal sits in the noise.
///
/// CRIU: Debian 12's criu 3.17 fails on this kernel; --build-criu builds
/// CRIU 4.1 from Debian trixie's source (apt, about a minute) beside cryo's
/// target dir, where later runs find it. Without a usable criu its rows say
/// why and the rest is reported.
///
/// --quick (small heaps, 15 runs) takes about two minutes on 2 CPUs with
/// CRIU; the full sweep takes the map to about 1 GB of heap and takes much
/// longer.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CompareArgs {
    /// Small heaps, 15 runs a method (about two minutes on 2 CPUs).
    #[arg(long)]
    pub quick: bool,
    /// Where to write compare.md, compare.json, compare.svg (and build/,
    /// work/).
    #[arg(long, value_name = "DIR", default_value = "cryo-compare")]
    pub out: PathBuf,
    /// Print the JSON report on stdout (progress stays on stderr).
    /// On an error: `{"ok": false, "error": MESSAGE}` on stdout, status 1.
    #[arg(long)]
    pub json: bool,
    /// Use this criu binary.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["build_criu", "no_criu"])]
    pub criu: Option<PathBuf>,
    /// Build CRIU 4.1 from Debian trixie's source first (needs root, apt).
    #[arg(long, conflicts_with = "no_criu")]
    pub build_criu: bool,
    /// Leave CRIU out.
    #[arg(long)]
    pub no_criu: bool,
    /// Only these workloads (comma-separated names, e.g. hello,map-1e4-fold).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Only these methods (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_name = "METHODS")]
    pub methods: Vec<String>,
    /// Map sizes N (comma-separated), replacing the default sweep.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    pub sizes: Vec<u64>,
    /// Timed runs per method with a warm page cache (default 15 quick, 10 full).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Untimed runs first (default 1 quick, 2 full).
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Timed runs with the page cache dropped before each (default 3; 0:
    /// none). Needs root; drops the whole machine's page cache.
    #[arg(long, value_name = "N")]
    pub cold_cache_runs: Option<usize>,
    /// Keep each workload's images and outputs under OUT/work.
    #[arg(long)]
    pub keep: bool,
    /// A run still going after this many seconds is killed and its method
    /// marked failed for that workload ("hung"), instead of hanging the
    /// comparison. (A CRIU run that has printed its answer and then uses
    /// no CPU for 1 s is killed, its answer timed and its row saying so:
    /// CRIU 4.1's restore of a threaded GHC program never exits.)
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub run_timeout: u64,
    /// Time runs as they come in each round's order, not each after an
    /// untimed run of its own method (the default: CRIU's restore slowed
    /// the next method's run by ~0.08 ms, a packed restore's 13 %).
    #[arg(long)]
    pub unpaired: bool,
}

pub fn run(a: CompareArgs) -> Result<i32> {
    let methods = if a.methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        a.methods
            .iter()
            .map(|s| {
                Method::parse(s).with_context(|| {
                    let all: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                    format!("unknown method {s:?} (one of {})", all.join(", "))
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    if !methods.contains(&Method::Cold) && !a.methods.is_empty() {
        eprintln!(
            "cryo compare: note: cold still runs once per workload for the reference checksum"
        );
    }
    let runs = a.runs.unwrap_or(if a.quick { 15 } else { 10 });
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let cfg = Config {
        out: a.out.clone(),
        quick: a.quick,
        cryo: std::env::current_exe().context("locating the cryo binary")?,
        criu: match (&a.criu, a.build_criu, a.no_criu) {
            (Some(p), _, _) => CriuChoice::Path(p.clone()),
            (None, true, _) => CriuChoice::Build,
            (None, false, true) => CriuChoice::Off,
            _ => CriuChoice::Auto,
        },
        only: a.only.clone(),
        methods,
        warmup: a.warmup.unwrap_or(if a.quick { 1 } else { 2 }),
        runs,
        cold_cache_runs: a.cold_cache_runs.unwrap_or(3),
        sizes: (!a.sizes.is_empty()).then(|| a.sizes.clone()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        keep: a.keep,
        run_timeout: std::time::Duration::from_secs(a.run_timeout.max(1)),
        paired: !a.unpaired,
    };
    let rep = cryo_compare::run(&cfg, &mut |line| eprintln!("{line}"))?;
    if a.json {
        println!("{}", rep.to_json());
    } else {
        println!("{}", rep.to_markdown());
    }
    eprintln!(
        "cryo compare: wrote {0}/compare.md, {0}/compare.json, {0}/compare.svg",
        a.out.display()
    );
    if let Some(line) = goals_line(&rep.ratios) {
        eprintln!("{line}");
    }
    Ok(0)
}

/// One line on how the goals came out, naming each not met with its whole
/// interval (the table in compare.md has them all).
fn goals_line(ratios: &[cryo_compare::report::Ratio]) -> Option<String> {
    if ratios.is_empty() {
        return None;
    }
    let count = |v: &str| ratios.iter().filter(|r| r.verdict == v).count();
    let name = |v: &str| {
        ratios
            .iter()
            .filter(|r| r.verdict == v)
            .map(|r| {
                let interval = match (r.lo, r.hi) {
                    (Some(lo), Some(hi)) => format!(" ({lo:.3}-{hi:.3})"),
                    _ => String::new(),
                };
                format!(
                    "{} {} {:.3}{interval} {}",
                    r.workload, r.what, r.value, r.goal
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut line = format!("cryo compare: goals: {} met", count("yes"));
    for (v, what) in [
        ("edge", "at the edge (the runs cannot tell)"),
        ("no", "not met"),
    ] {
        if count(v) > 0 {
            line.push_str(&format!(", {} {what}: {}", count(v), name(v)));
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_compare::report::Ratio;

    fn ratio(w: &str, value: f64, interval: Option<(f64, f64)>, verdict: &str) -> Ratio {
        Ratio {
            workload: w.into(),
            what: "criu / cryo-pack".into(),
            value,
            lo: interval.map(|i| i.0),
            hi: interval.map(|i| i.1),
            goal: "≥ 50".into(),
            met: value >= 50.0,
            verdict: verdict.into(),
        }
    }

    #[test]
    fn the_goals_line_counts_and_names_every_goal_not_surely_met() {
        assert_eq!(goals_line(&[]), None);
        let line = goals_line(&[
            ratio("a", 60.0, Some((55.0, 65.0)), "yes"),
            ratio("hello", 51.4, Some((47.3, 52.9)), "edge"),
            ratio("b", 40.0, None, "no"),
        ])
        .unwrap();
        assert_eq!(
            line,
            "cryo compare: goals: 1 met, 1 at the edge (the runs cannot tell): hello criu / cryo-pack 51.400 (47.300-52.900) ≥ 50, 1 not met: b criu / cryo-pack 40.000 ≥ 50"
        );
        let all = goals_line(&[ratio("a", 60.0, Some((55.0, 65.0)), "yes")]).unwrap();
        assert_eq!(all, "cryo compare: goals: 1 met");
    }
}
