//! Slice-based kernels: the computational core, one function per pass.
//!
//! A kernel sees its input as `[rows, n]`: `rows` independent rows of `n`
//! contiguous values, normalized each on its own. Callers with shapes go through
//! [`crate::ops`], which checks shapes and calls these. Every kernel checks the
//! lengths of what it is given and returns an [`Error`] rather than panicking.
//!
//! Statistics accumulate in [`Float::Acc`]. The normalizing sweeps of `f32`
//! data compute in `f32` about a two-part mean (`Standardize`, with its error
//! bound), and so do RMSNorm forward (`rms_norm.rs`, `1.5u·|y|`), the
//! LayerNorm/RMSNorm backward (`row_backward.rs`, with its bound) and the
//! GroupNorm/InstanceNorm backward (the same bound); the BatchNorm backward
//! passes and eval-mode BatchNorm compute in `Float::Acc` and round each
//! output once.
//! LayerNorm and RMSNorm run SIMD code chosen at run time, over rayon's threads,
//! with results that do not depend on the thread count (see `simd.rs`).

mod batch_norm;
mod group_norm;
mod layer_norm;
mod lp_normalize;
mod per_channel;
mod per_group;
mod rescale;
mod rms_norm;
mod row_backward;
mod simd;

pub use batch_norm::{
    batch_norm_apply, batch_norm_backward, batch_norm_backward_dx, batch_norm_backward_reduce,
    batch_norm_channel_moments, batch_norm_forward_eval, batch_norm_forward_train, batch_norm_update_running,
    blend_running, ChannelLayout, ChannelSums,
};
pub use group_norm::{
    group_norm_apply, group_norm_backward, group_norm_forward, group_norm_moments, group_norm_stats, GroupLayout,
};
pub use layer_norm::{layer_norm_backward, layer_norm_forward};
pub use lp_normalize::{lp_normalize_apply, lp_normalize_backward, lp_normalize_forward, lp_norms};
pub use rms_norm::{rms_norm_backward, rms_norm_forward};

use crate::error::{Error, Result};
use crate::float::{AccFloat, Float};

/// The optional elementwise affine transform `y = x̂ · weight + bias`, each of
/// length `n` (the normalized size) when present.
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a, T> {
    /// Per-element scale (γ); `None` means 1.
    pub weight: Option<&'a [T]>,
    /// Per-element shift (β); `None` means 0.
    pub bias: Option<&'a [T]>,
}

impl<T> Default for Affine<'_, T> {
    fn default() -> Self {
        Affine { weight: None, bias: None }
    }
}

impl<'a, T> Affine<'a, T> {
    /// No weight and no bias.
    pub fn none() -> Self {
        Self::default()
    }

    /// Weight and bias both given.
    pub fn new(weight: &'a [T], bias: &'a [T]) -> Self {
        Affine { weight: Some(weight), bias: Some(bias) }
    }

    pub(crate) fn check(&self, n: usize) -> Result<()> {
        check_param("weight", self.weight, n)?;
        check_param("bias", self.bias, n)
    }
}

/// Gradient buffers of a backward pass over `[rows, n]`: `dx` always, `dweight`
/// and `dbias` (length `n`) when asked for. They are overwritten, not accumulated.
#[derive(Debug)]
pub struct Grads<'a, T> {
    /// Gradient with respect to the input, `[rows, n]`.
    pub dx: &'a mut [T],
    /// Gradient with respect to the weight, `[n]`, or `None` to skip it.
    pub dweight: Option<&'a mut [T]>,
    /// Gradient with respect to the bias, `[n]`, or `None` to skip it.
    pub dbias: Option<&'a mut [T]>,
}

/// Checks an optional per-element parameter's length.
pub(crate) fn check_param<T>(name: &str, p: Option<&[T]>, n: usize) -> Result<()> {
    match p {
        Some(p) if p.len() != n => Err(Error::shape(name, &[n], &[p.len()])),
        _ => Ok(()),
    }
}

/// Checks a `[rows, n]` view: `n > 0`, `len` a multiple of `n`; returns `rows`.
pub(crate) fn rows_of(what: &str, len: usize, n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::Empty { what: format!("the normalized size of {what}"), shape: vec![0] });
    }
    if !len.is_multiple_of(n) {
        return Err(Error::invalid(what, format!("{len} elements do not form rows of {n}")));
    }
    Ok(len / n)
}

/// Checks that a buffer holds exactly `expected` elements.
pub(crate) fn check_buf(what: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::shape(what, &[expected], &[len]));
    }
    Ok(())
}

/// Checks `eps` (finite, not negative) and converts it to the accumulator type.
pub(crate) fn check_eps<A: AccFloat>(eps: f64) -> Result<A> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid("eps", format!("{eps} must be finite and not negative")));
    }
    Ok(A::from_f64_lossy(eps))
}

/// The value of an optional per-element parameter at `i`, widened; `default` when
/// the parameter is absent.
#[inline]
pub(crate) fn param_at<T: Float>(p: Option<&[T]>, i: usize, default: T::Acc) -> T::Acc {
    p.map_or(default, |p| p[i].to_acc())
}

/// Adds each row's contribution to `dweight` and `dbias` accumulators, then rounds
/// them into the caller's buffers. Rows are reduced in order, so the result does
/// not depend on scheduling.
pub(crate) fn write_param_grads<T: Float>(dacc: &[T::Acc], out: Option<&mut [T]>) {
    if let Some(out) = out {
        for (o, &a) in out.iter_mut().zip(dacc) {
            *o = T::from_acc(a);
        }
    }
}

/// `(x − mean) · scale` evaluated in the element type itself, for the
/// elementwise passes, whose statistics were accumulated in [`Float::Acc`].
/// `scale` is `rstd` (LayerNorm) or `rstd · weight_c` (a channel's run).
///
/// ```text
/// mean = head + tail            (head = mean rounded to T, tail = the rest rounded to T)
/// out  = ((x − head) − tail) · scale_T
/// ```
///
/// `x − head` is exact when `x` is within a factor of two of `head` (Sterbenz)
/// and otherwise rounds relative to `|x − mean|`, so the result carries four
/// roundings of the element type relative to itself, whatever the offset of
/// the data: with `u = T::EPSILON`,
/// `|out − out_exact| ≤ 2u·|out| + u²/4·|mean|·|scale|`. Computing in `f64`
/// and rounding once would give `u/2·|out|` for about twice the arithmetic on
/// `f32` data (every value widened and narrowed); the usual
/// `x · (rstd·w) + (b − mean·rstd·w)` in `f32` (PyTorch, ONNX Runtime) errs by
/// about `u·|x|·rstd·|w|`, which grows with the offset (a million times more
/// at mean 1e3 and spread 1e-3).
///
/// [`Standardize::new`] refuses (`None`) statistics for which the element type
/// could overflow or lose range: a non-finite mean, `rstd` outside
/// `2^±(3/4·MAX_EXP)` (then `|x − mean| ≤ sqrt(n)/rstd` could approach the
/// largest value), or a non-zero `scale` outside that range. Callers then
/// compute in `T::Acc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Standardize<T> {
    head: T,
    tail: T,
    scale: T,
}

impl<T: Float> Standardize<T> {
    #[inline(always)]
    pub(crate) fn new(mean: T::Acc, rstd: T::Acc, scale: T::Acc) -> Option<Self> {
        use num_traits::{Float as _, Zero as _};
        let head = T::from_acc(mean);
        let limit = T::Acc::from_f64_lossy(2f64.powi(T::MAX_EXP * 3 / 4));
        let in_range = |v: T::Acc| v.abs() >= limit.recip() && v.abs() <= limit;
        let ok = mean.is_finite() && head.is_finite() && in_range(rstd) && (scale.is_zero() || in_range(scale));
        ok.then(|| Standardize { head, tail: T::from_acc(mean - head.to_acc()), scale: T::from_acc(scale) })
    }

    /// `(x − mean) · scale` of one value.
    #[inline(always)]
    pub(crate) fn apply(self, x: T) -> T {
        ((x - self.head) - self.tail) * self.scale
    }

    /// `(x − mean) · scale + shift` of one value, the last step fused (one
    /// more rounding, of the result).
    #[inline(always)]
    pub(crate) fn apply_shift(self, x: T, shift: T) -> T {
        ((x - self.head) - self.tail).mul_add(self.scale, shift)
    }
}

/// Many [`Standardize`]s, one per column of channels-last rows, stored as
/// separate arrays of heads, tails and scales so that a row's loop vectorizes
/// across the columns (an array of the structs compiled to scalar code:
/// channels-last BatchNorm training forward in cache 0.45 -> 0.41 ns per
/// element, `kernel_probe`).
pub(crate) struct StandardizeColumns<T> {
    head: Vec<T>,
    tail: Vec<T>,
    scale: Vec<T>,
}

impl<T: Float> StandardizeColumns<T> {
    pub(crate) fn new(columns: &[Standardize<T>]) -> Self {
        StandardizeColumns {
            head: columns.iter().map(|s| s.head).collect(),
            tail: columns.iter().map(|s| s.tail).collect(),
            scale: columns.iter().map(|s| s.scale).collect(),
        }
    }

    /// `y_i = (x_i − mean_{first+i}) · scale_{first+i} + shift_i` over
    /// consecutive columns from column `first` on, as
    /// [`Standardize::apply_shift`] per column; `shift` starts at `first`.
    #[inline(always)]
    pub(crate) fn apply_shift_from(&self, first: usize, x: &[T], shift: &[T], y: &mut [T]) {
        let parts = self.head[first..].iter().zip(&self.tail[first..]).zip(&self.scale[first..]).zip(shift);
        for ((o, &v), (((&h, &t), &s), &b)) in y.iter_mut().zip(x).zip(parts) {
            *o = Standardize { head: h, tail: t, scale: s }.apply_shift(v, b);
        }
    }
}

/// `y = (x − mean) · scale + shift` over a run of values that share their
/// statistics and parameters (a channel's run in GroupNorm, InstanceNorm and
/// BatchNorm), with `fast = Standardize::new(mean, rstd, scale)`: in the
/// element type when it is `Some` (`|y − y_exact| ≤ 1.5u·|(x − mean)·scale| +
/// u/2·(|y| + |shift|)` plus Standardize's offset term), in `T::Acc` with one
/// rounding to `T` otherwise (`x − mean`, then one fused multiply-add: in
/// cache, BatchNorm eval forward `f32` 0.234-0.245 -> 0.191-0.196 ns per
/// element against a multiplication and an addition, `kernel_probe`, one
/// thread, three alternating pairs, 2026-12-03; from memory within noise).
#[inline(always)]
pub(crate) fn normalize_run<T: Float>(
    x: &[T],
    y: &mut [T],
    fast: Option<Standardize<T>>,
    (mean, scale, shift): (T::Acc, T::Acc, T::Acc),
) {
    match fast {
        Some(s) => {
            let shift = T::from_acc(shift);
            for (o, &v) in y.iter_mut().zip(x) {
                *o = s.apply_shift(v, shift);
            }
        }
        None => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = T::from_acc(num_traits::Float::mul_add(v.to_acc() - mean, scale, shift));
            }
        }
    }
}
