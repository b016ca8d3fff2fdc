#!/usr/bin/env bash
# `cryo restore --map` benchmark: private anonymous memory mapped
# MAP_PRIVATE from pages.img vs copied (eager, the default) vs served by
# userfaultfd (--lazy), side by side in one run.
#
# 1. Restore to exit of a 1 GiB heap (malloc, filled with a non-zero
#    pattern, captured while stopped) that then reads all of it and checks
#    a checksum (full), or reads one word per 64 KiB (sparse).
# 2. Density: CLONES (default 100) concurrent --map restores of that image,
#    each writing 1 % of its heap's pages (every 100th) and then waiting,
#    vs EAGER_CLONES (default 10) eager ones: system memory (MemAvailable)
#    and summed PSS, per extra clone.
# 3. Restore to exit of a tiny C program and a GHC hello world, eager vs
#    --map vs packed restorers (cryo pack, one exec; copied and mapped) vs
#    a cold start of the same program vs the floor (a static no-libc
#    exec+exit), with hyperfine -N.
#
# One image serves every heap mode: after it is continued the heap program
# reads its mode (full, sparse, write) from stdin. Each image is restored
# once (untimed) before timing: the first restore verifies every page and
# writes DIR/verified, and brings pages.img into the page cache.
# Medians with min-max over RUNS (default 5) runs; part 3 (milliseconds
# programs) uses SMALL_RUNS (default 20 x RUNS). Markdown on stdout,
# everything else under target/bench-map/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Targets must not inherit stray fds of whoever started us (a pipe at fd 3+
# is captured and then needs --inherit-fd at restore).
for fd in $(ls /proc/$$/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
cargo build --release -q
out=target/bench-map
rm -rf "$out" && mkdir -p "$out" && chmod 700 "$out"
cryo=$PWD/target/x86_64-unknown-linux-gnu/release/cryo
runs=${RUNS:-5}
small_runs=${SMALL_RUNS:-$((runs * 20))}
clones=${CLONES:-100}
eager_clones=${EAGER_CLONES:-10}

# Every background process this script starts runs in its own session
# (setsid execs in place: same PID), so that it, and whatever a restore
# forks (a lazy restore's tracer and page server), dies with its group.
started=()
cleanup() {
    local p
    for p in "${started[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; done
    for p in "${started[@]}"; do { wait "$p"; } 2>/dev/null || true; done
    for p in "${started[@]}"; do
        while pgrep -s "$p" >/dev/null 2>&1; do sleep 0.01; done
    done
    started=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { # ms values on stdin: "median (min-max)"
    sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f (%.1f-%.1f)", m, a[1], a[NR]}'
}
med() { sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
wait_stopped() { # PID
    for _ in $(seq 3000); do
        [ "$(awk '{print $3}' /proc/$1/stat 2>/dev/null)" = T ] && return 0
        sleep 0.01
    done
    echo "pid $1 did not stop" >&2
    exit 1
}
session_gone() { # SID: wait until nothing of that session is left
    for _ in $(seq 1000); do
        pgrep -s "$1" >/dev/null 2>&1 || return 0
        sleep 0.01
    done
    echo "session $1 still has processes: $(pgrep -s "$1" | tr '\n' ' ')" >&2
    exit 1
}
mem_avail() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; } # KiB
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; } # KiB
pte() { awk '/^VmPTE:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; } # KiB

# ---------------------------------------------------------------- programs
cat >"$out/heap.c" <<'EOF'
/* heap: a 1 GiB heap filled with a non-zero pattern; READY PID, then
 * SIGSTOP (the capture point). Once continued it reads its mode from
 * stdin: "full" sums the whole heap, "sparse" one word per 64 KiB; each
 * checks its sum against the one computed before the stop and prints
 * PASS (exit 0) or FAIL (exit 1). "write" writes every 100th page, prints
 * WROTE and waits to be killed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define SIZE (1UL << 30)
#define WORDS (SIZE / sizeof(unsigned long))
#define STRIDE (65536 / sizeof(unsigned long))
#define PAGE_WORDS (4096 / sizeof(unsigned long))
static unsigned long full(const volatile unsigned long *h) {
  unsigned long s = 0;
  for (size_t i = 0; i < WORDS; i++) s += h[i] * (i | 1);
  return s;
}
static unsigned long sparse(const volatile unsigned long *h) {
  unsigned long s = 0;
  for (size_t i = 0; i < WORDS; i += STRIDE) s += h[i] * (i | 1);
  return s;
}
int main(void) {
  unsigned long *h = malloc(SIZE);
  if (!h) return 2;
  for (size_t i = 0; i < WORDS; i++) h[i] = (i * 2654435761u) | 1;
  unsigned long want_full = full(h), want_sparse = sparse(h);
  printf("READY %d\n", getpid());
  fflush(stdout);
  raise(SIGSTOP);
  char mode[32];
  if (!fgets(mode, sizeof mode, stdin)) { printf("FAIL no mode\n"); return 1; }
  if (!strncmp(mode, "full", 4)) {
    int ok = full(h) == want_full;
    printf(ok ? "PASS\n" : "FAIL\n");
    return !ok;
  }
  if (!strncmp(mode, "sparse", 6)) {
    int ok = sparse(h) == want_sparse;
    printf(ok ? "PASS\n" : "FAIL\n");
    return !ok;
  }
  if (!strncmp(mode, "write", 5)) {
    for (size_t p = 0; p < WORDS / PAGE_WORDS; p += 100) h[p * PAGE_WORDS] += 2;
    printf("WROTE %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
  }
  printf("FAIL mode %s", mode);
  return 1;
}
EOF
cc -O2 -o "$out/heap" "$out/heap.c"
for m in full sparse write; do echo "$m" >"$out/mode.$m"; done

cat >"$out/tiny.c" <<'EOF'
/* tiny: READY, SIGSTOP (the capture point; "run": no stop, the cold
 * start), PASS, exit 0. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  printf("READY %d\n", getpid());
  fflush(stdout);
  if (!(argc > 1 && !strcmp(argv[1], "run"))) raise(SIGSTOP);
  printf("PASS\n");
  return 0;
}
EOF
cc -O2 -o "$out/tiny" "$out/tiny.c"

mkdir -p "$out/hs"
cat >"$out/hs/Hello.hs" <<'EOF'
-- GHC hello world (non-threaded RTS, -V0: no timer signal): READY and the
-- PID, then raiseSignal sigSTOP (the capture point; "run": no stop, the
-- cold start), then PASS.
import System.Environment (getArgs)
import System.IO
import System.Posix.Process (getProcessID)
import System.Posix.Signals (raiseSignal, sigSTOP)

main :: IO ()
main = do
  args <- getArgs
  pid <- getProcessID
  putStrLn ("READY " ++ show pid)
  hFlush stdout
  if args == ["run"] then pure () else raiseSignal sigSTOP
  putStrLn "PASS"
EOF
ghc -O2 -v0 -rtsopts -with-rtsopts=-V0 -outputdir "$out/hs" -o "$out/hello" "$out/hs/Hello.hs"

# The floor: the cheapest possible process (static, no libc: exec + exit).
printf 'void _start(void){__asm__ volatile("mov $60,%%eax; xor %%edi,%%edi; syscall");}\n' >"$out/nop.c"
cc -O2 -nostdlib -static -no-pie -o "$out/nop" "$out/nop.c"

# ---------------------------------------------------------------- images
capture() { # NAME CMD... : start CMD (it stops itself), capture it, kill it
    local name=$1; shift
    setsid "$@" </dev/null >"$out/$name.start" 2>&1 &
    local pid=$!
    started+=("$pid")
    disown "$pid" # no "Killed" notice from the shell for --kill
    wait_stopped "$pid"
    grep -q READY "$out/$name.start"
    "$cryo" capture -q --kill "$pid" "$out/$name.img"
    session_gone "$pid"
    started=() # gone: never signal a PID that may be reused
}
capture heap "$out/heap"
capture tiny "$out/tiny"
capture hello "$out/hello"

restore_check() { # IMG MODEFILE OPTS... : one restore, which must print PASS
    local img=$1 in=$2; shift 2
    if ! "$cryo" restore "$@" "$img" <"$in" >"$out/check.out" 2>&1 || ! grep -q PASS "$out/check.out"; then
        echo "cryo restore $* $img: $(cat "$out/check.out")" >&2
        exit 1
    fi
}
# Warm-up (untimed): verifies the pages once (DIR/verified), page cache.
restore_check "$out/heap.img" "$out/mode.sparse"
restore_check "$out/tiny.img" /dev/null
restore_check "$out/hello.img" /dev/null
restore_check "$out/tiny.img" /dev/null --map
restore_check "$out/hello.img" /dev/null --map
# Packed restorers (one exec, cryo pack), copied and mapped.
for n in tiny hello; do
    "$cryo" pack "$out/$n.img" -o "$out/$n.packed" >/dev/null
    "$cryo" pack --map "$out/$n.img" -o "$out/$n.packed-map" >/dev/null
    for p in "$out/$n.packed" "$out/$n.packed-map"; do
        if ! "$p" </dev/null >"$out/check.out" 2>&1 || ! grep -q PASS "$out/check.out"; then
            echo "$p: $(cat "$out/check.out")" >&2
            exit 1
        fi
    done
done

mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
echo "# cryo restore --map ($(date -u +%Y-%m-%d), $(uname -r), $(nproc) CPUs, $(mib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)") MiB RAM)"
echo
echo "heap image: $(du -sm "$out/heap.img" | cut -f1) MiB on disk (pages.img $(($(stat -c %s "$out/heap.img/pages.img") >> 20)) MiB)"

# ---------------------------------------------------------------- 1. heap
# Per run the three ways one after another (interleaved, so that drift
# hits all of them); run 0 is an untimed warm-up.
methods="eager map lazy"
opts_eager=""
opts_map="--map"
opts_lazy="--lazy"
for mode in full sparse; do
    for m in $methods; do : >"$out/t1.$mode.$m"; done
    for r in $(seq 0 "$runs"); do
        for m in $methods; do
            o=opts_$m
            t0=$(date +%s%N)
            # shellcheck disable=SC2086
            setsid "$cryo" restore ${!o} "$out/heap.img" <"$out/mode.$mode" >"$out/r1.out" 2>&1 &
            pid=$!
            started+=("$pid")
            st=0
            wait "$pid" || st=$?
            t1=$(date +%s%N)
            if [ "$st" != 0 ] || ! grep -q PASS "$out/r1.out"; then
                echo "$m restore ($mode, run $r) exited $st: $(cat "$out/r1.out")" >&2
                exit 1
            fi
            session_gone "$pid" # a lazy restore's page server and tracer
            started=()
            [ "$r" = 0 ] || echo "$(( (t1 - t0) / 1000 ))" | awk '{print $1/1000}' >>"$out/t1.$mode.$m"
        done
    done
done
echo
echo "## 1. Restore to exit, 1 GiB heap ($runs runs, ms: median (min-max))"
echo
echo "| reads after restore | eager | --map | --lazy | eager / map | lazy / map |"
echo "|---|---|---|---|---|---|"
for mode in full sparse; do
    e=$(med <"$out/t1.$mode.eager"); mp=$(med <"$out/t1.$mode.map"); l=$(med <"$out/t1.$mode.lazy")
    case $mode in full) what="all of it (1 GiB)";; sparse) what="one word per 64 KiB";; esac
    echo "| $what | $(median <"$out/t1.$mode.eager") | $(median <"$out/t1.$mode.map") | $(median <"$out/t1.$mode.lazy") | $(awk -v a="$e" -v b="$mp" 'BEGIN {printf "%.2f", a / b}') | $(awk -v a="$l" -v b="$mp" 'BEGIN {printf "%.2f", a / b}') |"
done

# ---------------------------------------------------------------- 2. density
# One run: start one clone, wait for WROTE, measure; start N-1 more, wait
# for all, measure; kill all. Per extra clone = (after 1 - after N) / (N-1).
# Two system-wide measures: MemAvailable, and the kernel's own counters of
# what processes hold (AnonPages + PageTables + KernelStack + Slab):
# MemFree, hence MemAvailable, is skewed on VMs whose free pages are
# reported to the host (here it drops ~0.6 GiB for 1 GiB of AnonPages).
wait_wrote() { # FROM TO
    local i p deadline=$(( $(date +%s) + 300 ))
    for i in $(seq "$1" "$2"); do
        p=${cpid[$i]}
        until grep -q WROTE "$out/c.$i.out" 2>/dev/null; do
            if [ ! -e "/proc/$p" ] || [ "$(date +%s)" -gt "$deadline" ]; then
                echo "clone $i (pid $p) did not write: $(cat "$out/c.$i.out")" >&2
                exit 1
            fi
            sleep 0.02
        done
    done
}
settle() { sync; sleep 1; }
held() { awk '/^(AnonPages|PageTables|KernelStack|Slab):/ {k += $2} END {print k}' /proc/meminfo; } # KiB
start_clone() { # OPTS I
    # shellcheck disable=SC2086
    setsid "$cryo" restore $1 "$out/heap.img" <"$out/mode.write" >"$out/c.$2.out" 2>&1 &
    cpid[$2]=$!
    started+=("$!")
}
density() { # OPTS N: one run, a line of KiB (and ms) appended to $out/d.OPTS
    local opts=$1 n=$2 i a0 a1 an h0 h1 hn p1 pn e1 en t0 t1
    cpid=()
    settle
    a0=$(mem_avail); h0=$(held); cp /proc/meminfo "$out/meminfo.${opts:-eager}.0"
    start_clone "$opts" 1
    wait_wrote 1 1
    settle
    a1=$(mem_avail); h1=$(held); cp /proc/meminfo "$out/meminfo.${opts:-eager}.1"
    p1=$(pss "${cpid[1]}"); e1=$(pte "${cpid[1]}")
    t0=$(date +%s%N)
    for i in $(seq 2 "$n"); do start_clone "$opts" "$i"; done
    wait_wrote 2 "$n"
    t1=$(date +%s%N)
    settle
    an=$(mem_avail); hn=$(held); cp /proc/meminfo "$out/meminfo.${opts:-eager}.n"
    pn=0; en=0
    for i in $(seq 1 "$n"); do
        pn=$((pn + $(pss "${cpid[$i]}"))); en=$((en + $(pte "${cpid[$i]}")))
    done
    for i in $(seq 1 "$n"); do
        [ -e "/proc/${cpid[$i]}" ] || { echo "clone $i died: $(cat "$out/c.$i.out")" >&2; exit 1; }
    done
    cleanup 2>/dev/null
    # 1 first clone (MemAvailable)  2 per extra (MemAvailable)
    # 3 first clone (counters)      4 per extra (counters)
    # 5 PSS sum of all              6 PSS per extra   7 ms to start N-1
    # 8 VmPTE sum of all             9 PSS + VmPTE per extra
    echo "$((a0 - a1)) $(((a1 - an) / (n - 1))) $((h1 - h0)) $(((hn - h1) / (n - 1))) $pn $(((pn - p1) / (n - 1))) $(((t1 - t0) / 1000000)) $en $(((pn + en - p1 - e1) / (n - 1)))" >>"$out/d.${opts:-eager}"
}
: >"$out/d.--map"; : >"$out/d.eager"
for r in $(seq 1 "$runs"); do
    density --map "$clones"
    density "" "$eager_clones"
done
echo
echo "## 2. Density: concurrent clones of the 1 GiB image, each writing 1 % of its pages ($runs runs, MiB: median (min-max))"
echo
echo "Per extra clone = (after 1 clone - after all N) / (N - 1). System-wide: MemAvailable, and counters = AnonPages + PageTables + KernelStack + Slab from /proc/meminfo (both also see whatever else the machine does meanwhile). Per process: PSS (smaps_rollup) and page tables (VmPTE)."
echo
echo "| MiB | --map, $clones clones | eager (default), $eager_clones clones |"
echo "|---|---|---|"
col() { awk -v c="$1" '{printf "%.1f\n", $c / 1024}' "$2" | median; }
row() { echo "| $1 | $(col "$2" "$out/d.--map") | $(col "$2" "$out/d.eager") |"; }
row "per extra clone: MemAvailable" 2
row "per extra clone: counters" 4
row "per extra clone: PSS" 6
row "per extra clone: PSS + VmPTE" 9
row "first clone: MemAvailable" 1
row "first clone: counters" 3
row "all clones: PSS sum" 5
row "all clones: VmPTE sum" 8
echo "| ms from starting clone 2 until all wrote | $(awk '{print $7}' "$out/d.--map" | median) | $(awk '{print $7}' "$out/d.eager" | median) |"
gib() { awk -v c="$1" '{print $c}' "$2" | med | awk '{printf "%.3f", $1 / 1048576}'; }
echo
echo "--map per extra clone (medians): $(gib 2 "$out/d.--map") GiB (MemAvailable), $(gib 4 "$out/d.--map") GiB (counters), $(gib 9 "$out/d.--map") GiB (PSS + VmPTE); goal <= 0.1 GiB. Eager: $(gib 2 "$out/d.eager") / $(gib 4 "$out/d.eager") / $(gib 9 "$out/d.eager") GiB."

# ---------------------------------------------------------------- 3. small programs
hyperfine -N --style none --warmup 10 --runs "$small_runs" --export-json "$out/tiny.json" \
    -n "floor: static no-libc exec+exit" "$out/nop" \
    -n "cold: tiny run" "$out/tiny run" \
    -n "cryo restore" "$cryo restore $out/tiny.img" \
    -n "cryo restore --map" "$cryo restore --map $out/tiny.img" \
    -n "packed (cryo pack)" "$out/tiny.packed" \
    -n "packed --map" "$out/tiny.packed-map" >/dev/null 2>"$out/tiny.hf.err" ||
    { cat "$out/tiny.hf.err" >&2; exit 1; }
hyperfine -N --style none --warmup 10 --runs "$small_runs" --export-json "$out/hello.json" \
    -n "floor: static no-libc exec+exit" "$out/nop" \
    -n "cold: hello run" "$out/hello run" \
    -n "cryo restore" "$cryo restore $out/hello.img" \
    -n "cryo restore --map" "$cryo restore --map $out/hello.img" \
    -n "packed (cryo pack)" "$out/hello.packed" \
    -n "packed --map" "$out/hello.packed-map" >/dev/null 2>"$out/hello.hf.err" ||
    { cat "$out/hello.hf.err" >&2; exit 1; }
echo
echo "## 3. Restore to exit of small programs (hyperfine -N, $small_runs runs, ms: median (min-max))"
python3 - "$out/tiny.json" "$out/hello.json" <<'EOF'
import json, statistics, sys
for path, title in zip(sys.argv[1:], ["tiny C program", "GHC hello world (-V0)"]):
    res = json.load(open(path))["results"]
    med = {r["command"]: statistics.median(r["times"]) * 1000 for r in res}
    floor = next(m for c, m in med.items() if c.startswith("floor"))
    cold = next(m for c, m in med.items() if c.startswith("cold"))
    print(f"\n{title}:\n")
    print("| command | ms | / cold | / floor |")
    print("|---|---|---|---|")
    for r in res:
        t = [x * 1000 for x in r["times"]]
        m = statistics.median(t)
        print(f"| {r['command']} | {m:.2f} ({min(t):.2f}-{max(t):.2f}) | {m / cold:.2f} | {m / floor:.1f} |")
    print(f"\neager / map: {med['cryo restore'] / med['cryo restore --map']:.2f}; "
          f"cryo restore / packed: {med['cryo restore'] / med['packed (cryo pack)']:.2f}")
EOF
