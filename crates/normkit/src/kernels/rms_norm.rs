//! RMSNorm over rows of `n` values (Zhang & Sennrich, 2019).
//!
//! Built like [`super::layer_norm`]: one sweep of each row from memory for its
//! statistic, a second from cache for the output, SIMD by run-time dispatch,
//! rows over rayon, non-temporal stores for outputs larger than half the L3,
//! and `dweight` partials per fixed block of rows added in block order.

use super::rescale::rms_rstd;
use super::row_backward::row_norm_backward;
use super::simd;
use super::{check_buf, check_eps, rows_of, Grads, Standardize};
use crate::error::Result;
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, Zero as _};
use rayon::prelude::*;

/// RMSNorm forward over `x` viewed as `[rows, n]`:
///
/// ```text
/// rstd = 1 / sqrt((1/n) Σ_j x_j² + eps)
/// y_j  = x_j · rstd · weight_j
/// ```
///
/// Writes `y` (`[rows, n]`) and the per-row `rstd` (`[rows]`) into the caller's
/// buffers; nothing is allocated. The mean square is a sum of non-negative terms
/// in `T::Acc`, well conditioned without centring; for `f32` data the `f64` sum
/// cannot overflow (PyTorch's `f32` sum does above ~1e19). Results are bitwise
/// identical with any number of threads.
pub fn rms_norm_forward<T: Float>(
    x: &[T],
    n: usize,
    weight: Option<&[T]>,
    eps: f64,
    y: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    super::check_param("weight", weight, n)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("rstd", rstd.len(), rows)?;
    let eps = check_eps::<T::Acc>(eps)?;
    let stream = simd::should_stream::<T>(y.len());

    let task = |x: &[T], y: &mut [T], rstd: &mut [T]| {
        simd::vectorized(
            #[inline(always)]
            || forward_rows(x, n, weight, eps, y, rstd, stream),
        );
        if stream {
            simd::stream_fence();
        }
    };
    if simd::worth_threads(x.len()) {
        let rpt = simd::pipelined_rows_per_task(n);
        let tasks = x.par_chunks(rpt * n).zip(y.par_chunks_mut(rpt * n)).zip(rstd.par_chunks_mut(rpt));
        tasks.for_each(|((xt, y), r)| task(xt, y, r));
    } else {
        task(x, y, rstd);
    }
    Ok(())
}

#[inline(always)]
fn forward_rows<T: Float>(
    x: &[T],
    n: usize,
    weight: Option<&[T]>,
    eps: T::Acc,
    y: &mut [T],
    rstd: &mut [T],
    stream: bool,
) {
    let inv_n = T::Acc::from_count(n as u64).recip();
    let mut buf = simd::StagingBuffer::<T>::new();
    // `Σ x²` of each row after the first while the row before it is
    // normalized ([`simd::SweepAhead`]).
    let Some(first) = x.get(..n) else { return };
    let mut sum_sq = simd::sweep_row(first, simd::SumSquaresSweep::new());
    for (i, (yr, r)) in y.chunks_exact_mut(n).zip(rstd.iter_mut()).enumerate() {
        let xr = &x[i * n..(i + 1) * n];
        let rs = rms_rstd(xr, sum_sq * inv_n, eps);
        // `x̂ = x · rstd` in the element type when `rstd` is in its range
        // (RMSNorm's `x̂` is LayerNorm's about a mean of 0).
        let fast = Standardize::<T>::new(T::Acc::zero(), rs, rs);
        let mut ahead =
            x.get((i + 1) * n..(i + 2) * n).map(|next| simd::SweepAhead::new(next, simd::SumSquaresSweep::new()));
        for range in simd::line_chunks(yr) {
            let (xc, yc) = (&xr[range.clone()], &mut yr[range.clone()]);
            let out = simd::out_chunk(&mut *yc, &mut buf, stream);
            // The weight was checked to hold `n` values.
            let wc = weight.map(|w| &w[range]);
            normalize_chunk(xc, out, wc, fast, rs);
            if stream {
                simd::stream_copy(yc, &buf[..xc.len()]);
            }
            if let Some(a) = ahead.as_mut() {
                a.step();
            }
        }
        if let Some(a) = ahead {
            sum_sq = a.finish();
        }
        *r = T::from_acc(rs);
    }
}

/// One chunk of `y = x · rstd · weight`: in the element type `T` when `fast`
/// (from [`Standardize::new`] with mean 0) is `Some`, as `(x · rstd_T) · w`
/// (three roundings with `rstd_T`'s: `|y − y_exact| ≤ 1.5u·|y|` with
/// `u = T::EPSILON`, and `u·|y|` without a weight), in `T::Acc` with one
/// rounding otherwise (`rstd` outside `T`'s comfortable range: data near the
/// smallest or largest values, or `eps = 0` on a zero row). PyTorch computes
/// `x · rstd · w` in `f32` too. Until 2026-12-02 this computed in `f64` and
/// rounded once (`u/2·|y|`); `kernel_probe`, `f32`, one thread: in cache
/// 0.26-0.28 -> 0.17-0.21 ns per element at `n` = 4096, from memory (median
/// of 8 alternating runs) 0.59 -> 0.36 at 768 and 0.50 -> 0.48 at 4096.
#[inline(always)]
fn normalize_chunk<T: Float>(x: &[T], y: &mut [T], w: Option<&[T]>, fast: Option<Standardize<T>>, rstd: T::Acc) {
    match (fast, w) {
        (Some(s), Some(w)) => {
            for ((o, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *o = s.apply(x) * w;
            }
        }
        (Some(s), None) => {
            for (o, &x) in y.iter_mut().zip(x) {
                *o = s.apply(x);
            }
        }
        (None, Some(w)) => {
            for ((o, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *o = T::from_acc(x.to_acc() * rstd * w.to_acc());
            }
        }
        (None, None) => {
            for (o, &x) in y.iter_mut().zip(x) {
                *o = T::from_acc(x.to_acc() * rstd);
            }
        }
    }
}

/// RMSNorm backward: the gradients of `L = Σ y · dy` given the forward's saved
/// `rstd`. With `x̂ = x · rstd` and `g = dy · weight` per row:
///
/// ```text
/// dx_j      = rstd · (g_j - x̂_j · mean_k(g_k x̂_k))
/// dweight_j = Σ_rows dy_j · x̂_j
/// ```
///
/// Computed by the kernel it shares with LayerNorm (`row_backward.rs`: the
/// mean taken as zero and no `mean(g)` term), with its sweeps, its error bound
/// for `f32` data and its split over threads: results are bitwise identical
/// with any number of threads. Beyond the outputs this allocates only the
/// `dweight` partials (at most 8 MiB and, for rows of more than 128 KiB of `x`
/// and `dy`, two rows per block; none without `dweight`).
pub fn rms_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    n: usize,
    rstd: &[T],
    weight: Option<&[T]>,
    dx: &mut [T],
    dweight: Option<&mut [T]>,
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("rstd", rstd.len(), rows)?;
    super::check_param("weight", weight, n)?;
    check_buf("dx", dx.len(), x.len())?;
    super::check_param("dweight", dweight.as_deref(), n)?;

    row_norm_backward(dy, x, n, None, rstd, weight, Grads { dx, dweight, dbias: None });
    Ok(())
}
