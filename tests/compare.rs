//! End to end: a small `cryo compare --quick` run, where every available
//! method must print the cold start's checksum.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn quick_compare_agrees_on_every_available_method() {
    support::sanitize_fds();
    let scratch = support::scratch("compare");
    let out = scratch.join("results");
    // In a pid namespace of its own, whose session leader (this test's
    // shell) lies outside it, as in a CI container: CRIU refuses such a
    // workload unless the harness makes it lead its own session.
    let in_pidns = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if in_pidns {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc"])
            .arg(support::cryo());
        c
    } else {
        eprintln!("unshare --pid is unavailable: running cryo compare in this pid namespace");
        Command::new(support::cryo())
    };
    let before = shm_outputs();
    let o = cmd
        .args([
            "compare",
            "--quick",
            "--only",
            "hello-v0,map-1e4-lookups,map-1e4-lookups-threaded",
            "--warmup",
            "0",
            "--runs",
            "2",
            "--cold-cache-runs",
            "1",
            "--run-timeout",
            "20",
            "--json",
            "--keep",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run cryo compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "cryo compare failed:\n{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    let rows = v["results"].as_array().expect("results");
    let criu_available = v["environment"]["criu"]
        .as_str()
        .unwrap_or("")
        .starts_with("CRIU ");
    let row = |w: &str, m: &str, cache: &str| {
        rows.iter()
            .find(|r| r["workload"] == w && r["method"] == m && r["cache"] == cache)
            .unwrap_or_else(|| panic!("no row {w} {m} {cache}"))
    };
    let mut methods = vec![
        "cold",
        "cryo-eager",
        "cryo-lazy",
        "cryo-lazy-on-demand",
        "cryo-lazy-prefetch",
        "cryo-map",
    ];
    if criu_available {
        methods.push("criu");
    } else {
        eprintln!("criu unavailable: {}", v["environment"]["criu"]);
        assert!(row("hello-v0", "criu", "warm")["note"].as_str().is_some());
    }
    for w in ["hello-v0", "map-1e4-lookups", "map-1e4-lookups-threaded"] {
        for m in &methods {
            for cache in ["warm", "cold"] {
                let r = row(w, m, cache);
                // CRIU 4.1 restores the threaded RTS with its ticker's
                // timerfd disarmed: the program answers, then hangs at
                // exit. Its answer is timed, its exit not, and the row
                // says so.
                let note = r["note"].as_str().unwrap_or("");
                if *m == "criu" && w.ends_with("-threaded") && note.contains("hung at exit") {
                    eprintln!("criu on {w} ({cache}): {note}");
                } else {
                    // Everything else exits, and is timed to its exit.
                    assert!(!note.contains("hung"), "{w} {m} {cache}: {r}");
                    assert!(
                        r["exit_median_ms"].as_f64().is_some(),
                        "{w} {m} {cache}: {r}"
                    );
                }
                assert_eq!(r["checksum_ok"], true, "{w} {m} {cache}: {r}\n{stderr}");
                assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
                assert!(
                    r["p10_ms"].as_f64().unwrap() <= r["p90_ms"].as_f64().unwrap(),
                    "{r}"
                );
                assert!(r["page_faults"].as_u64().unwrap() > 0, "{r}");
                assert!(r["max_rss_kb"].as_u64().unwrap() > 0, "{r}");
                assert_eq!(r["runs"], if cache == "warm" { 2 } else { 1 });
            }
        }
    }
    // A packed restorer restores every program in one exec, the threaded
    // RTS's epoll sets, eventfds, timerfd and pipes made by itself.
    for w in ["hello-v0", "map-1e4-lookups", "map-1e4-lookups-threaded"] {
        for cache in ["warm", "cold"] {
            let r = row(w, "cryo-pack", cache);
            assert_eq!(
                r["checksum_ok"], true,
                "{w} cryo-pack {cache}: {r}\n{stderr}"
            );
        }
    }
    // thaw applies to the map, not to a hello world
    assert_eq!(row("map-1e4-lookups", "thaw", "warm")["checksum_ok"], true);
    assert_eq!(
        row("map-1e4-lookups-threaded", "thaw", "warm")["checksum_ok"],
        true
    );
    let h = row("hello-v0", "thaw", "warm");
    assert_eq!(h["checksum_ok"], false);
    assert!(h["note"].as_str().unwrap().contains("not applicable"));
    // hs_init and hs_exit are timed apart on a cold start
    let phases = &row("hello-v0", "cold", "warm")["phases_ms"];
    assert!(
        phases["hs_init_ms"].as_f64().unwrap() > 0.0
            && phases["hs_exit_ms"].as_f64().unwrap() > 0.0
    );
    // Each timed run after an untimed one of its method; the runs wrote to
    // tmpfs where there is one, removed after, their outputs kept (--keep).
    assert_eq!(v["environment"]["paired"], true);
    let shm_is_tmpfs = Command::new("stat")
        .args(["-f", "-c", "%T", "/dev/shm"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs");
    assert_eq!(v["environment"]["outputs_on_tmpfs"], shm_is_tmpfs);
    let left: Vec<_> = shm_outputs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.is_empty(), "left on tmpfs: {left:?}");
    for (w, m) in [("hello-v0", "cold"), ("map-1e4-lookups", "cryo-pack")] {
        let kept = out.join("work").join(w).join(format!("{m}.out"));
        let text = std::fs::read_to_string(&kept).unwrap_or_else(|e| panic!("{kept:?}: {e}"));
        assert!(text.contains("cryo-bench answer="), "{kept:?}: {text}");
    }
    for f in ["compare.md", "compare.json", "compare.svg"] {
        let m = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
    }
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(
        md.contains("| map-1e4-lookups | cryo-eager | warm |"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The output directories of `cryo compare` runs on tmpfs.
fn shm_outputs() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cryo-compare."))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
