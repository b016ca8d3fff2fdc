#!/usr/bin/env bash
# The main job: build cryo, start a program with a slow start, capture it
# right after initialisation, show the image, and restore it (when restore is
# available), timing a cold start against a restore.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null || { echo "demo: needs a C compiler (apt-get install gcc)" >&2; exit 1; }
echo "== building cryo (release)"
cargo build --release --workspace --quiet
CRYO=target/release/cryo
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
if "$CRYO" restore --help >/dev/null 2>&1 && [ -x target/release/cryo-shim ] && "$CRYO" restore "$work/img" >/dev/null 2>&1; then
  echo "== cryo restore (three times from one image)"
  for i in 1 2 3; do time "$CRYO" restore "$work/img"; done
else
  echo "== cryo restore is not available in this build yet"
fi
