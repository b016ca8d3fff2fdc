#!/usr/bin/env bash
# The main job: build cryo, start a program with a slow start, capture it
# right after initialisation, show the image, and restore it three times,
# timing a cold start against a restore.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo program must not inherit stray fds of whoever started us: a pipe
# at fd 3+ is captured as such and then needs --inherit-fd at restore.
for fd in $(ls /proc/$$/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
command -v cc >/dev/null || { echo "demo: needs a C compiler (apt-get install gcc)" >&2; exit 1; }
echo "== building cryo (release)"
cargo build --release --workspace --quiet
CRYO=target/x86_64-unknown-linux-gnu/release/cryo
work=$(mktemp -d /tmp/cryo-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/slowinit" examples/slowinit.c
echo "== cryo check"
"$CRYO" check || true
echo "== cold start (computes its table, then answers)"
time "$work/slowinit" --no-stop
echo "== cryo run --capture-on-stop: start it, capture it when it stops itself"
"$CRYO" run --capture-on-stop "$work/img" --then kill -- "$work/slowinit"
echo "== cryo inspect (first lines)"
"$CRYO" inspect "$work/img" | head -n 30
echo "== cryo restore --dry-run (every check, no restore)"
"$CRYO" restore --dry-run "$work/img"
echo "== cryo restore (three times from one image; each answers at once)"
for i in 1 2 3; do time "$CRYO" restore "$work/img"; done
echo "== cryo restore --map (memory mapped from the image in the page cache, not copied)"
time "$CRYO" restore --map "$work/img"
echo "== cryo pack: one executable that restores the image (one exec, no cryo restore)"
"$CRYO" pack --map "$work/img" -o "$work/slowinit.restored"
for i in 1 2 3; do time "$work/slowinit.restored"; done
