#!/usr/bin/env bash
# The main job: build cryo (release) and CRIU 4.1, then time GHC programs to
# their first answer by cold start, compact-region thaw, cryo restore and
# CRIU, side by side (`cryo compare --quick`, a few minutes). Results in
# ./compare-results (compare.md, compare.json, compare.svg). Extra arguments
# go to `cryo compare` (e.g. drop --quick with `scripts/compare.sh --full`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
echo "== building cryo (release)"
cargo build --release --quiet
echo "== building CRIU 4.1 (Debian 12's criu fails on this kernel)"
./scripts/build-criu.sh || echo "compare: no CRIU; its rows will say why"
quick=(--quick)
if [ "${1:-}" = --full ]; then quick=(); shift; fi
exec target/x86_64-unknown-linux-gnu/release/cryo compare "${quick[@]}" --out compare-results "$@"
