#!/usr/bin/env bash
# A/B of two cryo builds side by side in one run: restore time of a small
# C program (N interleaved runs each) and the time capture holds it frozen
# (R interleaved captures each). Each build restores an image it captured.
#
#   scripts/bench-ab.sh OLD_CRYO NEW_CRYO [N=1000] [R=20]
#
# An older build: git worktree add /tmp/old REV && (cd /tmp/old && cargo
# build --release), then /tmp/old/target/x86_64-unknown-linux-gnu/release/cryo.
set -euo pipefail
old=$1 new=$2 n=${3:-1000} r=${4:-20}
# fds the calling shell may hold (a pipe to a terminal tool...) would be
# captured as the target's, and cost a scan of every process's fds.
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done
root=$(cd "$(dirname "$0")/.." && pwd)
w=$(mktemp -d /tmp/cryo-ab.XXXXXX)
trap 'rm -rf "$w"' EXIT
cc -O2 -o "$w/ab" "$root/scripts/ab.c"
cc -O2 -o "$w/target" "$root/tests/programs/bigheap.c"
state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null; }
start() { "$w/target" stop 1 </dev/null >/dev/null & p=$!; while [ "$(state $p)" != T ]; do sleep 0.01; done; }
for v in old new; do
  c=${!v}; start; "$c" capture -q --kill "$p" "$w/img-$v"; wait "$p" 2>/dev/null || true
done
echo "== restore to exit, ms ($n interleaved runs each)"
"$w/ab" "$n" "$old restore $w/img-old" "$new restore $w/img-new"
echo "== capture, ms frozen ($r interleaved captures each)"
for i in $(seq "$r"); do
  for v in old new; do
    c=${!v}; start; rm -rf "$w/c"
    f=$("$c" capture --json --kill "$p" "$w/c" | sed -n 's/.*"frozen_ms": *\([0-9.]*\).*/\1/p')
    wait "$p" 2>/dev/null || true; echo "$v $f"
  done
done | python3 -c '
import sys, statistics as s
d = {}
for l in sys.stdin:
    k, v = l.split(); d.setdefault(k, []).append(float(v))
for k in ("old", "new"):
    v = sorted(d[k]); print(f"{k}: median {s.median(v):.2f} p25 {v[len(v)//4]:.2f} p75 {v[3*len(v)//4]:.2f}")
'
