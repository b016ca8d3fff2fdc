//! Capture benchmark (not a test): throughput of dumped pages, time the
//! target stays frozen, and image size against RSS, for heaps from 16 MiB
//! to 4 GiB; side by side with the raw write speed of the same directory.
//!
//!     cargo bench --bench capture                 # 16 MiB .. 4 GiB
//!     CRYO_BENCH_SIZES=16,256 cargo bench --bench capture
//!     CRYO_BENCH_DIR=/some/disk cargo bench --bench capture   # default: $TMPDIR
//!     CRYO_BENCH_BASELINE=/path/to/other/cryo cargo bench --bench capture
//!
//! With CRYO_BENCH_BASELINE, each round also captures with that cryo binary
//! (an older build, say; O_DIRECT), for a side-by-side ratio.
//!
//! The target is `tests/programs/bigheap.c`: it fills a malloc'd heap with
//! a non-zero pattern and stops itself. Each round captures it once with
//! O_DIRECT (cryo's default) and once `--buffered`, then writes the same
//! number of bytes raw (O_DIRECT, then buffered) for the ceiling; the first
//! round is a warm-up; medians with min and max.

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

/// The ceiling: write `bytes` in 8 MiB writes from one warm buffer to a
/// file in `dir` (O_DIRECT or through the page cache, no fsync), the way
/// cryo's page writer does, but with nothing to read. GiB/s.
fn raw_write(dir: &Path, bytes: u64, direct: bool) -> f64 {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const CHUNK: usize = 8 << 20;
    let path = dir.join("ceiling");
    let _ = std::fs::remove_file(&path);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(&path)
        .expect("open ceiling file");
    // A 2 MiB-aligned buffer on transparent huge pages, as cryo's own.
    const HUGE: usize = 2 << 20;
    let mut raw = vec![0u8; CHUNK + HUGE];
    let skip = raw.as_ptr().align_offset(HUGE);
    let buf = &mut raw[skip..skip + CHUNK];
    // SAFETY: advice on memory this function owns (not yet touched: the
    // zeroed Vec of this size comes fresh from mmap).
    unsafe { libc::madvise(buf.as_mut_ptr().cast(), CHUNK, libc::MADV_HUGEPAGE) };
    buf.fill(0x5a);
    let t = std::time::Instant::now();
    let mut off = 0u64;
    while off < bytes {
        let n = (bytes - off).min(CHUNK as u64) as usize;
        f.write_all_at(&buf[..n], off).expect("ceiling write");
        off += n as u64;
    }
    let s = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    bytes as f64 / s / (1u64 << 30) as f64
}

fn capture_once(cryo: &Path, pid: u32, dir: &Path, buffered: bool) -> serde_json::Value {
    let _ = std::fs::remove_dir_all(dir);
    let mut cmd = Command::new(cryo);
    cmd.args(["capture", "--json", "--quiet"]);
    if buffered {
        cmd.arg("--buffered");
    }
    let out = cmd
        .arg(pid.to_string())
        .arg(dir)
        .output()
        .expect("cryo capture");
    assert!(
        out.status.success(),
        "capture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn main() {
    // cargo bench passes --bench; ignore arguments.
    let cryo = root().join("target/x86_64-unknown-linux-gnu/release/cryo");
    let st = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "cryo"])
        .current_dir(root())
        .status()
        .expect("cargo build");
    assert!(st.success());
    let work = std::env::var_os("CRYO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("cryo-bench-capture-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let bigheap = build_bigheap(&work);
    let baseline = std::env::var_os("CRYO_BENCH_BASELINE").map(PathBuf::from);
    let sizes: Vec<u64> = std::env::var("CRYO_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64, 256, 1024, 4096]);
    println!(
        "Capture of a stopped heap, to {} (median, min–max; runs interleaved).",
        work.display()
    );
    println!(
        "cryo = `cryo capture` (O_DIRECT, the default); buffered = `cryo capture --buffered`;"
    );
    println!("raw direct / raw buffered = 8 MiB writes of the same bytes from a warm buffer, nothing read.\n");
    println!("| heap MiB | runs | cryo GiB/s | raw direct GiB/s | cryo / raw direct | buffered GiB/s | raw buffered GiB/s | frozen ms (cryo) | frozen ms (buffered) | image MiB | RSS MiB | image / stored non-zero pages |");
    println!("|---:|---:|---|---|---:|---|---|---|---|---:|---:|---:|");
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
        let runs = if mib >= 1024 { 5 } else { 9 };
        let dir = work.join("img");
        let mut v: [Vec<f64>; 6] = Default::default();
        let mut vs_base: Vec<f64> = Vec::new();
        let mut last = serde_json::Value::Null;
        for i in 0..runs {
            let d = capture_once(&cryo, pid, &dir, false);
            let base = baseline
                .as_ref()
                .map(|c| capture_once(c, pid, &dir, false)["throughput_gib_s"].as_f64());
            let b = capture_once(&cryo, pid, &dir, true);
            let bytes = d["pages_bytes"].as_u64().unwrap_or(0);
            let _ = std::fs::remove_dir_all(&dir);
            let rd = raw_write(&work, bytes, true);
            let rb = raw_write(&work, bytes, false);
            if i > 0 {
                // The first round is a warm-up.
                v[0].push(d["throughput_gib_s"].as_f64().unwrap_or(0.0));
                v[1].push(rd);
                v[2].push(b["throughput_gib_s"].as_f64().unwrap_or(0.0));
                v[3].push(rb);
                v[4].push(d["frozen_ms"].as_f64().unwrap_or(0.0));
                v[5].push(b["frozen_ms"].as_f64().unwrap_or(0.0));
                if let Some(Some(t)) = base {
                    vs_base.push(d["throughput_gib_s"].as_f64().unwrap_or(0.0) / t);
                }
            }
            last = d;
        }
        let ratio = {
            let mut r: Vec<f64> = v[0].iter().zip(&v[1]).map(|(c, w)| c / w).collect();
            median(&mut r).0
        };
        let m: Vec<(f64, f64, f64)> = v.iter_mut().map(|x| median(x)).collect();
        let image = last["pages_bytes"].as_f64().unwrap_or(0.0)
            + last["meta_bytes"].as_f64().unwrap_or(0.0)
            + last["sums_bytes"].as_f64().unwrap_or(0.0);
        let stored = last["pages_stored"].as_f64().unwrap_or(0.0) * 4096.0;
        let rss = last["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0;
        let f = |(a, b, c): (f64, f64, f64), p: usize| format!("{a:.p$} ({b:.p$}–{c:.p$})");
        println!(
            "| {mib} | {} | {} | {} | {ratio:.2} | {} | {} | {} | {} | {:.1} | {rss:.1} | {:.4} |",
            runs - 1,
            f(m[0], 2),
            f(m[1], 2),
            f(m[2], 2),
            f(m[3], 2),
            f(m[4], 0),
            f(m[5], 0),
            image / 1048576.0,
            image / stored.max(1.0)
        );
        if !vs_base.is_empty() {
            let (med, lo, hi) = median(&mut vs_base);
            println!("|   | cryo / baseline GiB/s: {med:.3} ({lo:.3}–{hi:.3}) |");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&work);
}
