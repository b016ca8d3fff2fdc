#!/usr/bin/env bash
# Restore benchmark (issue 3): restore-to-exit of a tiny C program and a
# small GHC program (-V0, Data.Map of 1000 keys) vs a cold exec of the same
# programs, side by side with hyperfine -N (no shell in the timed path),
# then the shim's phase breakdown. Output: a markdown table on stdout and
# JSON under target/bench-restore/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Targets must not inherit stray fds of whoever started us (a pipe at fd 3+
# is captured and then needs --inherit-fd at restore).
for fd in $(ls /proc/$$/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
./scripts/install-test-deps.sh >/dev/null
cargo build --release -q
out=target/bench-restore
rm -rf "$out" && mkdir -p "$out" && chmod 700 "$out"
cc -O2 -o "$out/tiny" examples/tiny.c
ghc -O2 -v0 -rtsopts -with-rtsopts=-V0 -outputdir "$out/hs" -o "$out/hs-map" tests/programs/DataMap.hs
cryo=target/x86_64-unknown-linux-gnu/release/cryo

capture() { # NAME CMD... : start CMD (it stops itself), capture it, kill it
    local name=$1; shift
    "$@" >/dev/null 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 200); do
        [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" = T ] && break
        sleep 0.01
    done
    "$cryo" capture -q --kill "$pid" "$out/$name.img"
    wait "$pid" 2>/dev/null || true
}
capture tiny "$out/tiny" stop
capture hs "$out/hs-map" stop 1000

# Floors, in the same run: the cheapest possible process (static, no libc:
# exec + exit), and a static glibc program that does nothing (glibc's
# start-up, which every cryo invocation pays too).
printf 'void _start(void){__asm__ volatile("mov $60,%%eax; xor %%edi,%%edi; syscall");}\n' >"$out/nop.c"
cc -O2 -nostdlib -static -no-pie -o "$out/nop" "$out/nop.c"
printf 'int main(void){return 0;}\n' >"$out/empty.c"
cc -O2 -static -o "$out/empty-static" "$out/empty.c"

hyperfine -N --warmup 20 --runs 300 --export-json "$out/tiny.json" \
    -n "floor: static no-libc exec+exit" "$out/nop" \
    -n "floor: static glibc, empty main" "$out/empty-static" \
    -n "cold: tiny" "$out/tiny run" \
    -n "cryo restore (verify pages)" "$cryo restore $out/tiny.img" \
    -n "cryo restore --no-verify" "$cryo restore --no-verify $out/tiny.img" \
    -n "cryo restore --use-tracer" "$cryo restore --use-tracer $out/tiny.img"
hyperfine -N --warmup 20 --runs 200 --export-json "$out/hs.json" \
    -n "cold: GHC Data.Map 1000 (-V0)" "$out/hs-map run 1000" \
    -n "cryo restore (verify pages)" "$cryo restore $out/hs.img" \
    -n "cryo restore --no-verify" "$cryo restore --no-verify $out/hs.img" \
    -n "cryo restore --use-tracer" "$cryo restore --use-tracer $out/hs.img"

echo
echo "shim phases (median of 50 restores, microseconds):"
for img in tiny hs; do
    for _ in $(seq 50); do "$cryo" restore --phases --no-verify "$out/$img.img" 2>&1 >/dev/null | grep phases; done |
        python3 -c '
import sys, statistics, re
rows = [list(map(int, re.findall(r"(\d+)", l))) for l in sys.stdin]
names = ["exec", "image+files", "unmap+vdso", "map+fill", "state", "threads+frame", "shim total"]
med = [statistics.median(c) for c in zip(*rows)]
print("  '"$img"':", ", ".join(f"{n} {m:g}" for n, m in zip(names, med)))'
done
