#!/usr/bin/env bash
# cryo's one test command: installs what the tests need, then runs format,
# lint and the whole test suite (real processes; needs root for ptrace and
# userfaultfd). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== installing test dependencies"
./scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (debug and release binaries used by the tests)"
cargo build --workspace
echo "== cargo test"
cargo test --workspace "$@"
