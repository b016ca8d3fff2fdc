#!/usr/bin/env bash
# cryo's one test command: installs what the tests need, then runs format,
# lint and the whole test suite (real processes; needs root for ptrace and
# userfaultfd). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== installing test dependencies"
./scripts/install-test-deps.sh
echo "== CRIU 4.1 for cryo compare's end-to-end test (optional: without it the test checks the other methods)"
./scripts/build-criu.sh || echo "test: CRIU could not be built; cryo compare will report it unavailable"
echo "== cargo fmt --check"
cargo fmt --all -- --check
(cd shim && cargo fmt -- --check)
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The shim is its own cargo workspace (see shim/Cargo.toml).
(cd shim && CARGO_ENCODED_RUSTFLAGS= cargo clippy --release --offline --target x86_64-unknown-linux-gnu --target-dir ../target/shim -- -D warnings)
echo "== cargo build (cryo, and cryo-shim through build.rs)"
cargo build --workspace
echo "== cargo test"
cargo test --workspace "$@"
