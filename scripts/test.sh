#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, the test suites and the
# conformance cases in ../shared/conformance. `.ci/run` calls this after
# installing what it needs; run it yourself with `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== kernels compiled inside their dispatched SIMD functions"
bash scripts/check_dispatch.sh

# Conformance: every case beside the repository (ONNX, PyTorch, scikit-learn),
# no op excluded. The binary is the one `cargo test` just built (its
# integration tests run it); `cargo run -p normkit-cli` would resolve the
# dependencies' features for that package alone and compile candle-core a
# second time (164 s of a 20-minute CI run, 2026-12-03).
CONFORMANCE_DIR="${CONFORMANCE_DIR:-../shared/conformance}"
if [ -d "$CONFORMANCE_DIR" ]; then
  echo "== normkit conformance $CONFORMANCE_DIR"
  "${CARGO_TARGET_DIR:-target}/debug/normkit" conformance "$CONFORMANCE_DIR"
else
  echo "== conformance skipped: $CONFORMANCE_DIR not found"
fi
