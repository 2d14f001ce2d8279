#!/usr/bin/env bash
# Checks that no kernel body was split out of its dispatched SIMD function.
#
# Each kernel's body runs inside `simd::vectorized`, compiled for the CPU's
# best instruction set. Code the compiler leaves out of line there (a closure
# called twice, say) is compiled for the baseline instead: its `mul_add`s
# become calls to libm's `fma`. That made GroupNorm backward 5x slower once
# (2026-12-02), and LayerNorm forward 1.2x once (a closure of an
# `#[inline(always)]` function, 2026-12-02). Such code appears as a symbol of a
# closure nested in a kernel's closure, or of a closure of an
# `#[inline(always)]` kernel function; this builds `examples/dispatch_audit.rs`
# (every kernel, f32 and f64) in release and fails if it finds one.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nm >/dev/null 2>&1; then
  echo "check_dispatch: nm not found (binutils); skipped"
  exit 0
fi
cargo build --release --locked --quiet -p normkit --example dispatch_audit
bin="${CARGO_TARGET_DIR:-target}/release/examples/dispatch_audit"
"$bin" >/dev/null
symbols="$(nm -C "$bin" | sed -E 's/^[0-9a-f]+ [a-zA-Z] //' | grep -E '^normkit::kernels::' || true)"
# A closure nested in a kernel's closure, or a closure of a function that is
# meant to be inlined into the dispatched one (`#[inline(always)]`).
inlined="$(for f in crates/normkit/src/kernels/*.rs; do
  m="$(basename "$f" .rs)"; [ "$m" = mod ] && m="" || m="$m::"
  grep -A3 -E '^\s*#\[inline\(always\)\]' "$f" | grep -oE '^\s*(pub(\([a-z]+\))? )?fn [a-z_0-9]+' \
    | sed -E "s/.*fn /$m/"
done | sort -u | paste -sd'|' -)"
nested="$(echo "$symbols" | grep -E "\{\{closure\}\}::\{\{closure\}\}|^normkit::kernels::($inlined)(<[^:]*>)?::\{\{closure\}\}" | sort -u || true)"
if [ -n "$nested" ]; then
  echo "check_dispatch: kernel code compiled outside its dispatched SIMD function:"
  echo "$nested"
  echo "Make these #[inline(always)] functions (closures cannot be), see simd::vectorized."
  exit 1
fi
echo "check_dispatch: every kernel body is inside its dispatched function"
