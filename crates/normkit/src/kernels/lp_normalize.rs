//! Lp normalization of vectors along an axis (`torch.nn.functional.normalize`,
//! ONNX `LpNormalization`), p = 1 or 2.
//!
//! The input is viewed as `[outer, n, inner]` (a [`ChannelLayout`] whose
//! "channels" are the `n` positions along the normalized axis): each of the
//! `outer · inner` vectors `x[o, :, i]` is normalized on its own,
//!
//! ```text
//! y = x / max(‖x‖_p, eps)
//! ```
//!
//! The passes sweep `x` in memory order into per-vector accumulators, so every
//! axis reads memory contiguously:
//!
//! 1. [`lp_norms`]: `‖x‖_p`, scaled by the vector's largest magnitude so that a
//!    norm that is finite is computed finitely (values near 1e200 in f64 do not
//!    overflow `Σ x²`, and tiny values do not underflow it);
//! 2. [`lp_normalize_apply`]: `y = x / max(norm, eps)`;
//! 3. [`lp_normalize_backward`]: the gradient, as PyTorch's autograd takes it
//!    through `x / norm.clamp_min(eps)`.

use super::{check_buf, ChannelLayout};
use crate::error::{Error, Result};
use crate::float::Float;
use num_traits::{Float as _, Zero as _};

/// Checks `p` (1 or 2).
fn check_p(p: u32) -> Result<()> {
    if p == 1 || p == 2 {
        Ok(())
    } else {
        Err(Error::invalid("p", format!("{p} is not supported: Lp normalization takes p = 1 or p = 2")))
    }
}

/// Number of vectors, `outer · inner`: the length of the norms.
fn num_vectors(layout: ChannelLayout) -> Result<usize> {
    layout
        .outer
        .checked_mul(layout.inner)
        .ok_or_else(|| Error::invalid("layout", format!("{layout:?} has more vectors than usize holds")))
}

/// For each run `x[o, c, :]` in memory order: the index of its first vector
/// (`o · inner`) and the run.
fn runs<T>(x: &[T], layout: ChannelLayout) -> impl Iterator<Item = (usize, &[T])> {
    let (n, inner) = (layout.channels.max(1), layout.inner.max(1));
    x.chunks_exact(inner).enumerate().map(move |(k, run)| ((k / n) * inner, run))
}

/// Pass 1: the p-norm of each vector `x[o, :, i]`, written to `out[o · inner + i]`.
///
/// ```text
/// a      = max_k |x_k|                                    (sweep 1; NaN if any x_k is NaN)
/// ‖x‖_1  = a · Σ_k |x_k| / a        ‖x‖_2 = a · sqrt(Σ_k (x_k / a)²)      (sweep 2)
/// ```
///
/// with `‖x‖ = a` when `a` is 0, infinite or NaN. Dividing by `a` first keeps
/// every term in [0, 1], so the sum neither overflows nor underflows.
pub fn lp_norms<T: Float>(x: &[T], layout: ChannelLayout, p: u32, out: &mut [T::Acc]) -> Result<()> {
    check_p(p)?;
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("norms", out.len(), num_vectors(layout)?)?;
    let zero = T::Acc::zero();
    out.fill(zero);
    if layout.is_empty() {
        return Ok(());
    }
    // Sweep 1: the largest magnitude, NaN-propagating.
    let mut amax = vec![zero; out.len()];
    for (v0, run) in runs(x, layout) {
        for (a, &xv) in amax[v0..v0 + run.len()].iter_mut().zip(run) {
            let m = xv.to_acc().abs();
            if m.is_nan() || m > *a {
                *a = if a.is_nan() { *a } else { m };
            }
        }
    }
    // Sweep 2: the scaled sum.
    let mut acc = vec![zero; out.len()];
    for (v0, run) in runs(x, layout) {
        let vectors = acc[v0..v0 + run.len()].iter_mut().zip(&amax[v0..v0 + run.len()]);
        for ((s, &a), &xv) in vectors.zip(run) {
            if a.is_finite() && a > zero {
                let u = xv.to_acc().abs() / a;
                *s = *s + if p == 1 { u } else { u * u };
            }
        }
    }
    for ((o, &a), &s) in out.iter_mut().zip(&amax).zip(&acc) {
        *o = if a.is_finite() && a > zero {
            if p == 1 {
                a * s
            } else {
                a * s.sqrt()
            }
        } else {
            a
        };
    }
    Ok(())
}

/// `max(norm, eps)`, NaN-propagating as PyTorch's `clamp_min`.
#[inline]
fn clamp_min<A: num_traits::Float>(norm: A, eps: A) -> A {
    if norm < eps {
        eps
    } else {
        norm
    }
}

/// Pass 2: `y[o, k, i] = x[o, k, i] / max(norm[o · inner + i], eps)`.
pub fn lp_normalize_apply<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    norms: &[T::Acc],
    eps: f64,
    y: &mut [T],
) -> Result<()> {
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("norms", norms.len(), num_vectors(layout)?)?;
    let eps = super::check_eps::<T::Acc>(eps)?;
    if layout.is_empty() {
        return Ok(());
    }
    let inner = layout.inner;
    for ((v0, xr), yr) in runs(x, layout).zip(y.chunks_exact_mut(inner)) {
        for ((yv, &xv), &nrm) in yr.iter_mut().zip(xr).zip(&norms[v0..v0 + inner]) {
            *yv = T::from_acc(xv.to_acc() / clamp_min(nrm, eps));
        }
    }
    Ok(())
}

/// Lp normalization forward: passes 1 and 2.
pub fn lp_normalize_forward<T: Float>(x: &[T], layout: ChannelLayout, p: u32, eps: f64, y: &mut [T]) -> Result<()> {
    check_p(p)?;
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("y", y.len(), x.len())?;
    super::check_eps::<T::Acc>(eps)?;
    if layout.is_empty() {
        return Ok(());
    }
    let mut norms = vec![T::Acc::zero(); num_vectors(layout)?];
    lp_norms(x, layout, p, &mut norms)?;
    lp_normalize_apply(x, layout, &norms, eps, y)
}

/// Lp normalization backward: the gradient of `L = Σ y · dy` for
/// `y = x / d`, `d = max(‖x‖_p, eps)`, per vector:
///
/// ```text
/// s    = Σ_k dy_k · y_k                       (so dL/dd = -s / d)
/// dx_j = (dy_j - s · ∂‖x‖/∂x_j) / d           if ‖x‖ >= eps
/// dx_j = dy_j / d                             if ‖x‖ <  eps (the clamp passes no gradient)
/// ∂‖x‖_2/∂x_j = x_j / ‖x‖ (0 when ‖x‖ = 0)    ∂‖x‖_1/∂x_j = sign(x_j) (0 at 0)
/// ```
///
/// as PyTorch's autograd computes it through `x / x.norm(p).clamp_min(eps)`. The
/// norms are recomputed from `x` (one sweep more, no saved state).
pub fn lp_normalize_backward<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    p: u32,
    eps: f64,
    dx: &mut [T],
) -> Result<()> {
    check_buf("dy", dy.len(), x.len())?;
    check_buf("dx", dx.len(), x.len())?;
    check_p(p)?;
    check_buf("x", x.len(), layout.len()?)?;
    let eps = super::check_eps::<T::Acc>(eps)?;
    if layout.is_empty() {
        return Ok(());
    }
    let zero = T::Acc::zero();
    let mut norms = vec![zero; num_vectors(layout)?];
    lp_norms(x, layout, p, &mut norms)?;
    let inner = layout.inner;
    // Sweep 1: s = Σ dy · y per vector.
    let mut s = vec![zero; norms.len()];
    for ((v0, xr), dyr) in runs(x, layout).zip(dy.chunks_exact(inner)) {
        for (k, (&xv, &dyv)) in xr.iter().zip(dyr).enumerate() {
            let d = clamp_min(norms[v0 + k], eps);
            s[v0 + k] = s[v0 + k] + dyv.to_acc() * (xv.to_acc() / d);
        }
    }
    // Sweep 2: dx.
    for (((v0, xr), dyr), dxr) in runs(x, layout).zip(dy.chunks_exact(inner)).zip(dx.chunks_exact_mut(inner)) {
        for (k, ((&xv, &dyv), dxv)) in xr.iter().zip(dyr).zip(dxr.iter_mut()).enumerate() {
            let nrm = norms[v0 + k];
            let d = clamp_min(nrm, eps);
            let xa = xv.to_acc();
            // The clamp passes the gradient where norm >= eps (PyTorch: self >= min).
            let dnorm = if nrm >= eps && nrm > zero {
                if p == 1 {
                    sign(xa)
                } else {
                    xa / nrm
                }
            } else {
                zero
            };
            *dxv = T::from_acc((dyv.to_acc() - s[v0 + k] * dnorm) / d);
        }
    }
    Ok(())
}

/// `sign(x)`: -1, 0 or 1 (NaN for NaN), as `torch.sgn` for reals.
fn sign<A: num_traits::Float>(x: A) -> A {
    if x > A::zero() {
        A::one()
    } else if x < A::zero() {
        -A::one()
    } else {
        x
    }
}
