#!/usr/bin/env python3
"""Lazy vs eager restore, side by side in one run.

For each heap size, tests/programs/lazy.c fills a heap, stops, and is
captured once. Each restore then touches PCT % of the heap (read from a
file after the restore, so one image serves every percentage) and exits.
Methods: eager, lazy (background streaming), lazy on-demand, and lazy with
a prefetched working set (recorded by one on-demand run per percentage).

Per run: time to resume (the program's first stamp after the restore minus
the launch stamp, both CLOCK_MONOTONIC), time to exit, page-server faults,
the process's minor faults. Medians with p10-p90 over --runs runs.

  scripts/bench-lazy.py [--sizes 16,256,1024,4096] [--pcts 1,10,100]
                        [--runs 5] [--out docs/bench-lazy]
                        [--methods eager,lazy,lazy-on-demand,lazy-prefetch]
                        [--baseline OTHER_CRYO]

--baseline adds "baseline-on-demand": the same on-demand restore by another
cryo binary (an older build, say) from an image it captured itself, in the
same rounds. The fault service time (server side, from reading a fault to
the end of its copy) comes from the page server's --lazy-stats; the floor
of this machine for it (scripts/uffd-floor.c: one page UFFDIO_COPY from a
populated file mapping, nothing else) is measured before and after.

Writes OUT.json, OUT.md (table) and OUT.svg (time to resume and to exit vs
heap size). Needs: cc, a release build (cargo build --release).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRYO = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/cryo")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, close_fds=True, **kw)


def build(work):
    lazy = os.path.join(work, "lazy")
    launch = os.path.join(work, "launch")
    sh(["cc", "-O2", "-o", lazy, os.path.join(ROOT, "tests/programs/lazy.c")])
    sh(["cc", "-O2", "-o", launch, os.path.join(ROOT, "scripts/launch.c")])
    return lazy, launch


def capture(lazy, work, mib, pct_file, cryo=CRYO, tag=""):
    img = os.path.join(work, f"img-{mib}{tag}")
    shutil.rmtree(img, ignore_errors=True)
    sh([cryo, "run", "--capture-on-stop", img, "--then", "kill", "--",
        lazy, "touch", str(mib), "@" + pct_file],
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return img


def restore(launch, img, args, stats, cryo=CRYO):
    if os.path.exists(stats):
        os.unlink(stats)
    cmd = [launch, cryo, "restore"] + args
    if any(a.startswith("--lazy") for a in args):
        cmd += ["--lazy-stats", stats]
    cmd.append(img)
    p = subprocess.run(cmd, capture_output=True, text=True, close_fds=True)
    out, err = p.stdout, p.stderr
    launch_line = [l for l in err.splitlines() if l.startswith("LAUNCH ")]
    if not launch_line or "PASS" not in out:
        raise SystemExit(f"restore {args} of {img} failed:\n{out}\n{err}")
    t0, t1, minflt, _maj, status = map(int, launch_line[-1].split()[1:])
    resumed = int([l for l in out.splitlines() if l.startswith("RESUMED ")][0].split()[1])
    faults = service = None
    # The page server writes its stats when it exits, just after the program.
    for _ in range(200):
        if os.path.exists(stats):
            try:
                st = json.load(open(stats))
                faults = st["faults"]
                if faults:
                    service = st["fault_service_ns_median"] / 1e3
                break
            except ValueError:
                pass
        if faults is None and not any(a.startswith("--lazy") for a in args):
            break
        import time
        time.sleep(0.01)
    settle()
    return {
        "resume_ms": (resumed - t0) / 1e6,
        "exit_ms": (t1 - t0) / 1e6,
        "minflt": minflt,
        "uffd_faults": faults,
        "service_us": service,
        "status": status,
    }


def settle():
    """Wait until the last run's page server and watchdog are gone: a
    server that mapped all of a 4 GiB pages.img takes a moment to unmap it
    after the program exits, and the next run would pay for that."""
    import time
    for _ in range(1000):
        if subprocess.run(["pgrep", "-x", "cryo"], capture_output=True).returncode != 0:
            return
        time.sleep(0.01)


def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * f)))]


def summary(rows, key):
    xs = [r[key] for r in rows if r[key] is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "p10": q(xs, 0.1), "p90": q(xs, 0.9)}


METHODS = [
    ("eager", ["--eager"]),
    ("lazy", ["--lazy"]),
    ("lazy-on-demand", ["--lazy=on-demand"]),
    ("lazy-prefetch", ["--lazy=on-demand"]),
    ("baseline-on-demand", ["--lazy=on-demand"]),
]


def floor(work):
    """This machine's fault service floor now: median µs per UFFDIO_COPY."""
    exe = os.path.join(work, "uffd-floor")
    if not os.path.exists(exe):
        sh(["cc", "-O2", "-pthread", "-o", exe, os.path.join(ROOT, "scripts/uffd-floor.c")])
    out = subprocess.run([exe, work], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,256,1024,4096", help="heap sizes in MiB")
    ap.add_argument("--pcts", default="1,10,100", help="percentages of the heap touched")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/bench-lazy"))
    ap.add_argument("--methods", default="eager,lazy,lazy-on-demand,lazy-prefetch")
    ap.add_argument("--baseline", help="another cryo binary, restored on demand side by side")
    a = ap.parse_args()
    methods = [m for m in METHODS if m[0] in a.methods.split(",")]
    if a.baseline:
        methods.append(METHODS[-1])
    if not os.access(CRYO, os.X_OK):
        raise SystemExit("build first: cargo build --release")
    work = tempfile.mkdtemp(prefix="cryo-bench-lazy-")
    lazy, launch = build(work)
    pct_file = os.path.join(work, "pct")
    results = []
    floors = [floor(work)]
    print(f"fault service floor: {floors[0]}", file=sys.stderr, flush=True)
    try:
        for mib in [int(x) for x in a.sizes.split(",")]:
            open(pct_file, "w").write("1\n")
            print(f"[{mib} MiB] capturing...", file=sys.stderr, flush=True)
            img = capture(lazy, work, mib, pct_file)
            base_img = capture(lazy, work, mib, pct_file, a.baseline, "-base") if a.baseline else None
            for pct in [float(x) for x in a.pcts.split(",")]:
                open(pct_file, "w").write(f"{pct}\n")
                ws = os.path.join(img, "working-set")
                if os.path.exists(ws):
                    os.unlink(ws)
                stats = os.path.join(work, "stats.json")
                for name, args in methods:
                    cryo, im = (a.baseline, base_img) if name.startswith("baseline") else (CRYO, img)
                    if name == "lazy-prefetch":
                        restore(launch, img, ["--lazy=on-demand", "--record-working-set"], stats)
                    elif name != "eager":
                        args = args + ["--no-prefetch"]
                    restore(launch, im, args, stats, cryo)  # warm-up
                    rows = [restore(launch, im, args, stats, cryo) for _ in range(a.runs)]
                    rec = {"heap_mib": mib, "touched_pct": pct, "method": name, "runs": a.runs}
                    for k in ("resume_ms", "exit_ms", "minflt", "uffd_faults", "service_us"):
                        rec[k] = summary(rows, k)
                    results.append(rec)
                    r, e = rec["resume_ms"], rec["exit_ms"]
                    sv = rec["service_us"]
                    print(f"  {pct:>5}% {name:<18} resume {r['median']:8.2f} ms  exit {e['median']:9.2f} ms  "
                          f"uffd faults {rec['uffd_faults']['median'] if rec['uffd_faults'] else '-'}  "
                          f"service {sv['median'] if sv else '-'} us",
                          file=sys.stderr, flush=True)
            shutil.rmtree(img, ignore_errors=True)
            if base_img:
                shutil.rmtree(base_img, ignore_errors=True)
        floors.append(floor(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json.dump({"results": results, "fault_service_floor": floors}, open(a.out + ".json", "w"), indent=1)
    write_md(results, a.out + ".md", floors)
    write_svg(results, a.out + ".svg")
    print(open(a.out + ".md").read())


def fmt(s, d=2):
    if s is None:
        return "-"
    return f"{s['median']:.{d}f} ({s['p10']:.{d}f}–{s['p90']:.{d}f})"


def write_md(results, path, floors):
    lines = ["Fault service floor (scripts/uffd-floor.c, median µs, before and after): "
             + ", ".join(f"{f['populated_us']:.2f} (populated file mapping) / {f['hot_us']:.2f} (hot buffer)"
                         for f in floors), "",
             "| heap MiB | touched % | method | resume ms | exit ms | uffd faults | fault service µs | minor faults |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['heap_mib']} | {r['touched_pct']:g} | {r['method']} | {fmt(r['resume_ms'])} | "
                     f"{fmt(r['exit_ms'])} | {fmt(r['uffd_faults'], 0)} | {fmt(r.get('service_us'), 1)} | "
                     f"{fmt(r['minflt'], 0)} |")
    open(path, "w").write("\n".join(lines) + "\n")


def write_svg(results, path):
    """Two panels (1 % touched): time to resume and time to exit vs heap size, log-log."""
    import math
    W, H, M = 900, 380, 60
    colors = {"eager": "#d62728", "lazy": "#1f77b4", "lazy-on-demand": "#2ca02c", "lazy-prefetch": "#9467bd",
              "baseline-on-demand": "#7f7f7f"}
    pct = min(r["touched_pct"] for r in results)
    sizes = sorted({r["heap_mib"] for r in results})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for panel, key in enumerate(["resume_ms", "exit_ms"]):
        x0 = M + panel * (W // 2)
        pw, ph = W // 2 - M - 20, H - 2 * M
        vals = [r[key]["median"] for r in results if r["touched_pct"] == pct]
        lo, hi = math.log10(max(min(vals), 1e-3)), math.log10(max(vals))
        lo, hi = math.floor(lo), math.ceil(hi) if hi > lo else lo + 1
        sx = lambda s: x0 + (sizes.index(s) / max(1, len(sizes) - 1)) * pw
        sy = lambda v: M + ph - (math.log10(max(v, 1e-3)) - lo) / (hi - lo) * ph
        out.append(f'<text x="{x0}" y="{M - 25}" font-weight="bold">{"time to resume" if key == "resume_ms" else "time to exit"} (ms, log), {pct:g} % touched</text>')
        out.append(f'<line x1="{x0}" y1="{M + ph}" x2="{x0 + pw}" y2="{M + ph}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{M}" x2="{x0}" y2="{M + ph}" stroke="black"/>')
        for d in range(lo, hi + 1):
            y = sy(10 ** d)
            out.append(f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end">{10 ** d:g}</text>')
            out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + pw}" y2="{y}" stroke="#ddd"/>')
        for s in sizes:
            out.append(f'<text x="{sx(s)}" y="{M + ph + 16}" text-anchor="middle">{s} MiB</text>')
        for li, (m, c) in enumerate(colors.items()):
            pts = [(sx(r["heap_mib"]), sy(r[key]["median"])) for r in results
                   if r["method"] == m and r["touched_pct"] == pct]
            if pts:
                out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
            if panel == 0:
                out.append(f'<text x="{x0 + 10 + li * 100}" y="{H - 12}" fill="{c}">{m}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
