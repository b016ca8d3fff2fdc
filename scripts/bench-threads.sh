#!/usr/bin/env bash
# Threads benchmark (issue 12): capture and restore-to-exit of a small C
# program with 1, 2, 8 and 64 threads (each blocked on a condition
# variable at the capture point; after the restore they are woken and
# joined), eager and lazy, side by side in one hyperfine run per count;
# the slope between 1 and 64 threads is the cost of one more thread. Then
# the threaded GHC program (Data.Map, +RTS -N2, default RTS flags):
# restore to its first answer against its cold start. Output: markdown on
# stdout, JSON under target/bench-threads/.
set -euo pipefail
cd "$(dirname "$0")/.."
for fd in $(ls /proc/$$/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
./scripts/install-test-deps.sh >/dev/null
cargo build --release -q
out=target/bench-threads
rm -rf "$out" && mkdir -p "$out" && chmod 700 "$out"
cryo=target/x86_64-unknown-linux-gnu/release/cryo
runs=${RUNS:-60}

cat >"$out/nthreads.c" <<'EOF'
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go, up;
static void *wait_go(void *a) {
    pthread_mutex_lock(&m);
    up++;
    pthread_cond_broadcast(&c);
    while (!go) pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    return a;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    pthread_t t[1024];
    for (int i = 1; i < n; i++) pthread_create(&t[i], NULL, wait_go, NULL);
    pthread_mutex_lock(&m);
    while (up < n - 1) pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    if (argc > 2) raise(SIGSTOP);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    for (int i = 1; i < n; i++) pthread_join(t[i], NULL);
    printf("PASS %d\n", n);
    return 0;
}
EOF
cc -O2 -pthread -o "$out/nthreads" "$out/nthreads.c"
ghc -O2 -v0 -threaded -rtsopts -with-rtsopts=-N2 -outputdir "$out/hs" -o "$out/hs-threaded" tests/programs/DataMap.hs

capture() { # NAME CMD... : start CMD (it stops itself), capture it, kill it
    local name=$1; shift
    "$@" >/dev/null 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 500); do
        [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" = T ] && break
        sleep 0.01
    done
    "$cryo" capture -q --json --kill "$pid" "$out/$name.img" >"$out/$name.capture.json"
    wait "$pid" 2>/dev/null || true
}

echo "## Restore to exit by thread count (hyperfine -N, $runs runs each)"
echo
for n in 1 2 8 64; do
    for k in 1 2 3; do capture "t$n-$k" "$out/nthreads" "$n" stop; done
    hyperfine -N --warmup 5 --runs "$runs" --export-json "$out/t$n.json" \
        -n "cold $n" "$out/nthreads $n" \
        -n "eager $n" "$cryo restore $out/t$n-1.img" \
        -n "lazy $n" "$cryo restore --lazy $out/t$n-1.img" >/dev/null
done
python3 - "$out" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
rows = {}
for n in (1, 2, 8, 64):
    for r in json.load(open(f"{out}/t{n}.json"))["results"]:
        kind = r["command"].split()[0]
        t = sorted(x * 1e3 for x in r["times"])
        q = lambda f: t[int((len(t) - 1) * f)]
        rows[(kind, n)] = (statistics.median(t), q(0.1), q(0.9))
    caps = [json.load(open(f"{out}/t{n}-{k}.capture.json")) for k in (1, 2, 3)]
    rows[("frozen", n)] = tuple(sorted(c["frozen_ms"] for c in caps)[i] for i in (1, 0, 2))
print("| threads | cold | cryo eager | cryo lazy | capture: frozen |")
print("|---:|---:|---:|---:|---:|")
for n in (1, 2, 8, 64):
    cell = lambda k: "%.2f ms (%.2f–%.2f)" % rows[(k, n)]
    print(f"| {n} | {cell('cold')} | {cell('eager')} | {cell('lazy')} | {cell('frozen')} |")
for k in ("eager", "lazy", "frozen"):
    per = (rows[(k, 64)][0] - rows[(k, 1)][0]) / 63 * 1000
    print(f"\n{k}: {per:.0f} µs per extra thread (median 64 threads − median 1 thread, / 63)", end="")
print()
EOF

echo
echo "## Threaded GHC program (Data.Map 20000 keys, +RTS -N2): first answer"
echo
capture hs "$out/hs-threaded" stop 20000
hyperfine -N --warmup 5 --runs "$runs" --export-json "$out/hs.json" \
    -n "cold start" "$out/hs-threaded run 20000" \
    -n "cryo restore" "$cryo restore $out/hs.img" \
    -n "cryo restore --lazy" "$cryo restore --lazy $out/hs.img" >/dev/null
python3 - "$out/hs.json" <<'EOF'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
med = {}
for r in res:
    t = sorted(x * 1e3 for x in r["times"])
    med[r["command"]] = statistics.median(t)
    print("- %s: %.2f ms median (p10 %.2f, p90 %.2f)" % (r["command"], med[r["command"]], t[len(t) // 10], t[len(t) * 9 // 10]))
cold = med["cold start"]
for k in ("cryo restore", "cryo restore --lazy"):
    print("- %s is %.1fx faster than the cold start" % (k, cold / med[k]))
EOF
