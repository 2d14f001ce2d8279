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

# Conformance: every op implemented so far, on the cases beside the repository.
CONFORMANCE_DIR="${CONFORMANCE_DIR:-../shared/conformance}"
if [ -d "$CONFORMANCE_DIR" ]; then
  normkit() { cargo run --release --locked --quiet -p normkit-cli -- "$@"; }
  for op in layer_norm rms_norm; do
    echo "== normkit conformance --op $op $CONFORMANCE_DIR"
    normkit conformance --op "$op" "$CONFORMANCE_DIR"
  done
else
  echo "== conformance skipped: $CONFORMANCE_DIR not found"
fi
