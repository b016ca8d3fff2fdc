//! Capture benchmark (not a test): throughput of dumped pages to the page
//! cache, time the target stays frozen, and image size against RSS, for heaps
//! from 16 MiB to 4 GiB.
//!
//!     cargo bench --bench capture                 # 16 MiB .. 4 GiB
//!     CRYO_BENCH_SIZES=16,256 cargo bench --bench capture
//!
//! The target is `tests/programs/bigheap.c`: it fills a malloc'd heap with
//! a non-zero pattern and stops itself. Each size is captured several times
//! (the first run is a warm-up, not counted); medians with min and max.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_bigheap(out: &Path) -> PathBuf {
    let exe = out.join("bench-bigheap");
    let src = root().join("tests/programs/bigheap.c");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "building {}", src.display());
    exe
}

fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| r.chars().next().unwrap_or('?'))
        })
        .unwrap_or('?')
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

fn main() {
    // cargo bench passes --bench; ignore arguments.
    let cryo = root().join("target/release/cryo");
    let st = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "cryo"])
        .current_dir(root())
        .status()
        .expect("cargo build");
    assert!(st.success());
    let work = std::env::temp_dir().join(format!("cryo-bench-capture-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let bigheap = build_bigheap(&work);
    let sizes: Vec<u64> = std::env::var("CRYO_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64, 256, 1024, 4096]);
    println!("| heap MiB | runs | throughput GiB/s median (min–max) | frozen ms median (min–max) | image MiB | RSS MiB | image / stored non-zero pages |");
    println!("|---:|---:|---|---|---:|---:|---:|");
    for mib in sizes {
        let mut child = Command::new(&bigheap)
            .args(["stop", &mib.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bigheap");
        let pid = child.id();
        let t0 = std::time::Instant::now();
        while state(pid) != 'T' {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "bigheap did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let runs = if mib >= 1024 { 4 } else { 8 };
        let (mut tput, mut frozen) = (vec![], vec![]);
        let mut last = serde_json::Value::Null;
        for i in 0..runs {
            let dir = work.join("img");
            let _ = std::fs::remove_dir_all(&dir);
            let out = Command::new(&cryo)
                .args(["capture", "--json", "--quiet"])
                .arg(pid.to_string())
                .arg(&dir)
                .output()
                .expect("cryo capture");
            assert!(
                out.status.success(),
                "capture failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if i > 0 {
                tput.push(j["throughput_gib_s"].as_f64().unwrap_or(0.0));
                frozen.push(j["frozen_ms"].as_f64().unwrap_or(0.0));
            }
            last = j;
        }
        let _ = std::fs::remove_dir_all(work.join("img"));
        let (tm, tl, th) = median(&mut tput);
        let (fm, fl, fh) = median(&mut frozen);
        let image = last["pages_bytes"].as_f64().unwrap_or(0.0)
            + last["meta_bytes"].as_f64().unwrap_or(0.0);
        let stored = last["pages_stored"].as_f64().unwrap_or(0.0) * 4096.0;
        let rss = last["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0;
        println!(
            "| {mib} | {} | {tm:.2} ({tl:.2}–{th:.2}) | {fm:.1} ({fl:.1}–{fh:.1}) | {:.1} | {rss:.1} | {:.4} |",
            runs - 1,
            image / 1048576.0,
            image / stored.max(1.0)
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&work);
}
