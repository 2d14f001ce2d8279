//! `rstd` for rows whose squared deviations leave the accumulator's range.
//!
//! The statistics sweeps sum `d = x − c` and `d²` in `T::Acc` (`f64`). For
//! `f64` data that fails at both ends: deviations beyond about 1e154 square
//! to infinity (the variance overflows, LayerNorm's outputs turn NaN and
//! RMSNorm's 0), and deviations below about 1e-154 square into subnormals or
//! to nothing (the variance underflows; with `eps = 0`, `rstd` turns
//! infinite). `rstd` itself is representable for spreads from about 2^-1023
//! up (below that, `1/σ` overflows) and `x − mean` for values within
//! `f64::MAX` of the mean. A row or group whose sums show either trouble is
//! summed again here from its values scaled by a power of two, which is
//! exact, so that the largest is near 1:
//!
//! ```text
//! x' = x · 2^-a                  (the largest |x'| in [1, 2))
//! (mean', var') = the statistics of x' (`simd::row_moments`, as any row's)
//! mean = mean' · 2^a,   rstd = 2^-a / sqrt(var' + eps · 2^-2a)
//! ```
//!
//! Scaling by the largest value suffices at both ends: distinct values near
//! the largest differ by at least its ulp, so a row that is not constant has
//! `var' >= 2^-106 / n`, far above where squares underflow, and `|x'| < 2`
//! keeps them far below overflow. The scaled copy is allocated (`n` values):
//! this path runs only for rows that need it.
//!
//! The rescue is taken only when the sweep's sums show the trouble (a variance
//! not finite, or below 2^-1022 with `eps` below 2^-960), so rows inside the
//! range keep their bits; a row with a NaN or an infinity keeps the formula's
//! result (NaN stays NaN); a row whose deviations are all zero keeps
//! `rstd = 1/sqrt(eps)` (infinite when `eps = 0`, as in PyTorch). The check
//! is one comparison per row: `kernel_probe` in cache, fastest of four runs,
//! LayerNorm forward 0.152 -> 0.153 ns per element at `n = 768`, 0.132 ->
//! 0.129 at 4096, RMSNorm 0.099 -> 0.098, GroupNorm 0.148 -> 0.146.

use super::simd;
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, Zero as _};

/// `(mean, rstd)` of a row or group (`values`) from its swept `mean` and
/// biased variance `var`: `rstd = 1/sqrt(var + eps)`, unless `var` overflowed
/// or lost its bits to underflow (see the module docs).
#[inline(always)]
pub(crate) fn mean_rstd<T: Float>(values: &[T], mean: T::Acc, var: T::Acc, eps: T::Acc) -> (T::Acc, T::Acc) {
    mean_rstd_of(|| values.iter().copied(), mean, var, eps)
}

/// [`mean_rstd`] of values that are not one slice (a BatchNorm channel):
/// `values()` visits them, and is called only when the rescue is needed.
#[inline(always)]
pub(crate) fn mean_rstd_of<T: Float, I: Iterator<Item = T>>(
    values: impl Fn() -> I,
    mean: T::Acc,
    var: T::Acc,
    eps: T::Acc,
) -> (T::Acc, T::Acc) {
    if out_of_range(mean, var, eps) {
        if let Some((m, r)) = rescaled(values, true, acc_to_f64(eps)) {
            return (T::Acc::from_f64_lossy(m), T::Acc::from_f64_lossy(r));
        }
    }
    (mean, (var + eps).sqrt().recip())
}

/// RMSNorm's `rstd = 1/sqrt(mean(x²) + eps)` of a row from its swept mean
/// square `ms`, rescued as [`mean_rstd`] when `ms` overflowed or underflowed.
#[inline(always)]
pub(crate) fn rms_rstd<T: Float>(values: &[T], ms: T::Acc, eps: T::Acc) -> T::Acc {
    if out_of_range(T::Acc::zero(), ms, eps) {
        if let Some((_, r)) = rescaled(|| values.iter().copied(), false, acc_to_f64(eps)) {
            return T::Acc::from_f64_lossy(r);
        }
    }
    (ms + eps).sqrt().recip()
}

fn acc_to_f64<A: AccFloat>(v: A) -> f64 {
    num_traits::ToPrimitive::to_f64(&v).unwrap_or(f64::NAN)
}

/// Whether `var` cannot be trusted: not finite (overflow, or a NaN to be
/// kept), or below `2^-1022` (the smallest normal `f64`) while `eps` is below
/// `2^-960` and so does not swamp it. Above `2^-1022` the squares that fell
/// into subnormals err by at most `2^-1075` each, `n·2^-1075` in all, under
/// one rounding (`2^-53`) of `n·var`: the sweep's variance stands.
#[inline(always)]
fn out_of_range<A: AccFloat>(mean: A, var: A, eps: A) -> bool {
    let tiny_var = A::from_f64_lossy(2f64.powi(-1022));
    let tiny_eps = A::from_f64_lossy(2f64.powi(-960));
    !(mean.is_finite() && var.is_finite()) || (var < tiny_var && eps < tiny_eps)
}

/// The module docs' recomputation in `f64`: `(mean, rstd)`, about the row's
/// mean when `centered` and about 0 (RMSNorm) otherwise; `None` for a row
/// with a non-finite value or no spread, whose formula result stands.
#[cold]
fn rescaled<T: Float, I: Iterator<Item = T>>(values: impl Fn() -> I, centered: bool, eps: f64) -> Option<(f64, f64)> {
    let mut largest = 0f64;
    for v in values() {
        let v = v.to_f64();
        if !v.is_finite() {
            return None; // (`f64::max` would pass over a NaN)
        }
        largest = largest.max(v.abs());
    }
    if largest == 0.0 {
        return None;
    }
    let a = exponent(largest);
    let scaled: Vec<f64> = values().map(|v| ldexp(v.to_f64(), -a)).collect();
    let (mean, var) = if centered {
        let m = simd::row_moments(&scaled);
        (m.mean(), m.var_biased())
    } else {
        (0.0, simd::sweep_row(&scaled, simd::SumSquaresSweep::new()) / scaled.len() as f64)
    };
    if var == 0.0 {
        return None;
    }
    // eps in the scaled units; so large that it swamps var' (< 4): eps alone.
    let eps_s = ldexp(eps, -2 * a);
    let rstd = if eps_s.is_finite() { ldexp((var + eps_s).sqrt().recip(), -a) } else { eps.sqrt().recip() };
    Some((ldexp(mean, a), rstd))
}

/// `e` with `2^e <= v < 2^(e+1)`, for a finite `v > 0` (from its bits:
/// `log2` rounds up just below a power of two).
fn exponent(v: f64) -> i32 {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: the value is its mantissa times 2^-1074.
        let mantissa = bits & ((1 << 52) - 1);
        -1074 + (63 - mantissa.leading_zeros() as i32)
    } else {
        biased - 1023
    }
}

/// `v · 2^k` for the exponents here (`|k|` up to about 2150), in steps of
/// at most `2^±1000`: exact while the result stays normal; a result below
/// `2^-1022` is rounded, possibly twice when `k < -1000`.
fn ldexp(mut v: f64, mut k: i32) -> f64 {
    while k > 1000 {
        v *= 2f64.powi(1000);
        k -= 1000;
    }
    while k < -1000 {
        v *= 2f64.powi(-1000);
        k += 1000;
    }
    v * 2f64.powi(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_with_a_nan_or_an_infinity_keeps_the_formula() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let row = [1e200, -1e200, bad, 3e199];
            assert!(rescaled(|| row.iter().copied(), true, 0.0).is_none(), "{bad}");
            let (mean, rstd) = mean_rstd(&row, f64::NAN, f64::NAN, 0.0);
            assert!(mean.is_nan() && rstd.is_nan(), "{bad}: {mean} {rstd}");
        }
        // A constant row, and one of zeros, keep rstd = 1/sqrt(eps).
        assert_eq!(mean_rstd(&[1e-300; 5], 1e-300, 0.0, 0.0), (1e-300, f64::INFINITY));
        assert_eq!(rms_rstd(&[0.0f64; 5], 0.0, 0.0), f64::INFINITY);
    }

    #[test]
    fn ldexp_and_exponent_cover_the_whole_range() {
        assert_eq!(ldexp(1.0, 1500), f64::INFINITY);
        assert_eq!(ldexp(ldexp(1.0, 1023), -2046), 2f64.powi(-1023));
        assert_eq!(ldexp(3.0, -1074 - 1), 5e-324 * 2.0); // 1.5 · 2^-1074 rounds to even
        for v in [5e-324, 3e-320, 2.2e-308, 0.75, 1.0, 1.5, 2.0 - 1e-16, 1e300, f64::MAX] {
            let e = exponent(v);
            assert!(ldexp(1.0, e) <= v && v < ldexp(2.0, e), "{v}: {e}");
        }
    }
}
