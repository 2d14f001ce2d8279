//! Slice-based kernels: the computational core, one function per pass.
//!
//! A kernel sees its input as `[rows, n]`: `rows` independent rows of `n`
//! contiguous values, normalized each on its own. Callers with shapes go through
//! [`crate::ops`], which checks shapes and calls these. Every kernel checks the
//! lengths of what it is given and returns an [`Error`] rather than panicking.
//!
//! Statistics accumulate in [`Float::Acc`] and outputs round once, at the end.
//! LayerNorm and RMSNorm run SIMD code chosen at run time, over rayon's threads,
//! with results that do not depend on the thread count (see `simd.rs`).

mod batch_norm;
mod group_norm;
mod layer_norm;
mod lp_normalize;
mod per_channel;
mod per_group;
mod rms_norm;
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
    if len % n != 0 {
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
