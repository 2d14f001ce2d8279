//! LayerNorm over rows of `n` values (Ba, Kiros & Hinton, 2016).
//!
//! Both passes are single sweeps over memory: a row is read from memory once,
//! while its statistics are computed, and the normalizing sweep then finds it in
//! L1/L2 (a row of up to 256 Ki `f32` fits in a 1 MiB L2). See [`super::simd`]
//! for the SIMD dispatch, the thread split and the non-temporal stores.
//!
//! Variants, in the manner of llm.c (measured with `normkit bench --quick`,
//! f32, `[8192, 4096]`, on the 2-core Zen 4 described in
//! `docs/performance-history.md`; fraction of the machine's copy bandwidth,
//! one thread):
//! 1. plain scalar code, Welford-free blocked moments then a normalizing sweep:
//!    0.36 forward, 0.30 backward;
//! 2. the same sweeps in 16 `f64` lanes under run-time AVX-512 dispatch, rows
//!    over rayon tasks: about 0.6 forward (the store's read-for-ownership now
//!    dominates);
//! 3. outputs larger than half the L3 written through an L1 chunk buffer with
//!    non-temporal stores;
//! 4. the deviation sweep of the statistics in 512-bit code (a `black_box`
//!    before the lane reduction; it had compiled to 128-bit operations) and its
//!    first sweep summed in the element type: in cache 0.67 -> 0.50 ns per
//!    element (`cargo run --release -p normkit --example kernel_probe`);
//! 5. the next row prefetched while this one is normalized from cache: from
//!    memory 31 -> 24 ms, about 0.53 of copy bandwidth (2026-12-01);
//! 6. the normalizing sweep in `f32` about a two-part mean ([`Standardize`]):
//!    in cache 0.47-0.52 -> 0.41-0.45 ns per element;
//! 7. with 6, the prefetch of 5 removed: it now cost more than it saved (from
//!    memory, fastest of 7 runs: 0.62 -> 0.55 ns per element at `n = 4096`,
//!    0.69 -> 0.56 at 65536; `normkit bench`, one thread: fraction 0.46-0.54
//!    -> 0.58-0.70 at `[8192, 4096]`, 2026-12-02);
//! 8. backward: rows in groups that fit in L2, sweep 2 chunk-major over the
//!    group so that the `dweight`/`dbias` partials stay in L1: in cache
//!    0.83-0.88 -> 0.77-0.78 ns per element at `n = 4096` (see
//!    `backward_group`);
//! 9. backward in `f32` for `f32` data, one kernel with RMSNorm
//!    (`row_backward.rs`, with the error bound): in cache 0.82-0.90 -> 0.45-0.6
//!    ns per element at `n = 4096`, 0.69-0.77 -> 0.37-0.55 at 768; `normkit
//!    bench --quick`, one thread, `[8192, 4096]`: fraction 0.28-0.41 -> 0.43-0.68;
//! 10. the statistics in one sweep per block from memory, about the block's
//!     first value, instead of an `f32` sweep for a centre and a second sweep
//!     from L1 (`simd::shifted_moments`): forward in cache 0.37 -> 0.31 ns per
//!     element, from memory 0.55 -> 0.46-0.50 at `n = 4096`.
//!
//! Measured on the Xeon (Emerald Rapids) of 2026-12-02 onwards, `normkit bench
//! --quick`, one thread, `[8192, 4096]`:
//! 11. chunk boundaries on the output's cache lines and 64-byte non-temporal
//!     stores (`simd::line_chunks`, `simd::stream_copy`): 35.1 -> 24.5 ms;
//! 12. the statistics sweep prefetching 4 KiB ahead (`simd::prefetch_ahead`;
//!     unlike 5, the reading sweep asks, not the normalizing one): 24.9 ->
//!     20.2-20.5 ms, `[8192, 768]` 4.4 -> 3.7 ms;
//! 13. the next row's statistics sweep interleaved chunk by chunk with this
//!     row's normalizing sweep (`simd::SweepAhead`; unlike the attempt listed
//!     in `docs/performance-history.md` for the Zen 4, which was slower there), and the partial
//!     last line of each row prefetched before its ordinary store: 20.1 ->
//!     17.8-18.4 ms, `[8192, 768]` 3.70 -> 3.27-3.59 ms;
//! 14. backward: sweep 1 of the next group of rows interleaved with sweep 2
//!     of this one in the same way (`row_backward.rs`): 30.8-31.6 -> 28.8-29.3
//!     ms.
//!
//! Measured on the AMD EPYC (Zen 5) of 2026-12-04:
//! 15. the statistics sweep adding lane groups in pairs, one accumulator
//!     step per 32 values (`simd::MomentsSweep`): in cache 0.165-0.171 ->
//!     0.151-0.153 ns per element at `n = 4096`; `normkit bench --quick`,
//!     one thread, eight alternating rounds, 2-4% faster at each shape;
//! 16. backward: sweep 2 over two rows of a group at a time, the parameter
//!     sums loaded and stored once per pair (`row_backward::narrow_pair_chunk`,
//!     the same bits): one thread `[8192,4096]` 15.2 -> 14.1 ms, `[8192,768]`
//!     2.70 -> 2.50 (medians of eight alternating rounds).
//!
//! The rest of the gap to the memory floor: see the README's "Performance".

use super::rescale::mean_rstd;
use super::row_backward::row_norm_backward;
use super::simd::{self, CHUNK};
use super::{check_buf, check_eps, rows_of, Affine, Grads, Standardize};
use crate::error::Result;
use crate::float::Float;
use rayon::prelude::*;

/// LayerNorm forward over `x` viewed as `[rows, n]`:
///
/// ```text
/// mean = (1/n) Σ_j x_j
/// var  = (1/n) Σ_j (x_j - mean)²             (biased; by Moments, never E[x²]-E[x]²)
/// rstd = 1 / sqrt(var + eps)
/// y_j  = (x_j - mean) · rstd · weight_j + bias_j
/// ```
///
/// Writes `y` (`[rows, n]`) and the per-row `mean` and `rstd` (`[rows]`) that
/// [`layer_norm_backward`] needs, into the caller's buffers; nothing is
/// allocated. Statistics accumulate in `T::Acc`; `y` is computed in the element
/// type about a two-part mean (its error bound: `normalize_chunk` below).
///
/// Rows are spread over the current rayon thread pool; every row is computed the
/// same way whatever the number of threads, so the results are bitwise
/// identical with any thread count.
pub fn layer_norm_forward<T: Float>(
    x: &[T],
    n: usize,
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    affine.check(n)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("mean", mean.len(), rows)?;
    check_buf("rstd", rstd.len(), rows)?;
    let eps = check_eps::<T::Acc>(eps)?;
    let stream = simd::should_stream::<T>(y.len());

    let task = |x: &[T], y: &mut [T], mean: &mut [T], rstd: &mut [T]| {
        simd::vectorized(
            #[inline(always)]
            || forward_rows(x, n, affine, eps, y, mean, rstd, stream),
        );
        if stream {
            simd::stream_fence();
        }
    };
    if simd::worth_threads(x.len()) {
        let rpt = simd::pipelined_rows_per_task(n);
        let x_tasks = x.par_chunks(rpt * n).zip(y.par_chunks_mut(rpt * n));
        let stat_tasks = mean.par_chunks_mut(rpt).zip(rstd.par_chunks_mut(rpt));
        x_tasks.zip(stat_tasks).for_each(|((xt, y), (m, r))| task(xt, y, m, r));
    } else {
        task(x, y, mean, rstd);
    }
    Ok(())
}

/// The forward pass over whole rows; `x.len() == y.len() == n · mean.len()`.
/// The statistics of each row after the first are computed while the row
/// before it is normalized ([`simd::SweepAhead`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows<T: Float>(
    x: &[T],
    n: usize,
    affine: Affine<'_, T>,
    eps: T::Acc,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    stream: bool,
) {
    let mut buf = simd::StagingBuffer::<T>::new();
    let Some(first) = x.get(..n) else { return };
    let mut stats = simd::sweep_row(first, simd::moments_sweep(first));
    let rows = y.chunks_exact_mut(n).zip(mean.iter_mut().zip(rstd.iter_mut()));
    for (i, (yr, (m, r))) in rows.enumerate() {
        let xr = &x[i * n..(i + 1) * n];
        let (mu, rs) = mean_rstd(xr, stats.mean() + simd::first_value(xr), stats.var_biased(), eps);
        let mut ahead =
            x.get((i + 1) * n..(i + 2) * n).map(|next| simd::SweepAhead::new(next, simd::moments_sweep(next)));
        let staging = stream.then_some(&mut *buf);
        normalize_row(xr, yr, (mu, rs), affine, staging, ahead.as_mut());
        if let Some(a) = ahead {
            stats = a.finish();
        }
        *m = T::from_acc(mu);
        *r = T::from_acc(rs);
    }
}

/// `y_j = (x_j - mean) · rstd · weight_j + bias_j` for one row, chunk by chunk,
/// advancing the next row's statistics sweep `ahead` a chunk after each; with
/// a `staging` buffer, each chunk is computed into it and written out with
/// non-temporal stores.
#[inline(always)]
fn normalize_row<T: Float>(
    x: &[T],
    y: &mut [T],
    (mean, rstd): (T::Acc, T::Acc),
    affine: Affine<'_, T>,
    mut staging: Option<&mut [T; CHUNK]>,
    mut ahead: Option<&mut simd::SweepAhead<'_, T, simd::MomentsSweep<T::Acc>>>,
) {
    for range in simd::line_chunks(y) {
        let (xc, yc) = (&x[range.clone()], &mut y[range.clone()]);
        // The weight and bias were checked to hold `n` values.
        let (w, b) = (affine.weight.map(|w| &w[range.clone()]), affine.bias.map(|b| &b[range]));
        if let Some(buf) = staging.as_deref_mut() {
            let out = &mut buf[..xc.len()];
            normalize_chunk(xc, out, w, b, mean, rstd);
            simd::stream_copy(yc, out);
        } else {
            normalize_chunk(xc, yc, w, b, mean, rstd);
        }
        if let Some(a) = ahead.as_deref_mut() {
            a.step();
        }
    }
}

/// One chunk of `y = x̂ · weight + bias`, in the element type when
/// [`Standardize`] accepts the row's statistics (a fused multiply-add for the
/// affine part; `|y − y_exact| ≤ 2u·|x̂·w| + u/2·|y|` plus Standardize's offset
/// term, with `u = T::EPSILON`), in `T::Acc` with one rounding otherwise.
#[inline(always)]
fn normalize_chunk<T: Float>(x: &[T], y: &mut [T], w: Option<&[T]>, b: Option<&[T]>, mean: T::Acc, rstd: T::Acc) {
    match Standardize::<T>::new(mean, rstd, rstd) {
        Some(s) => affine_loop(x, y, w, b, |x, w, b| {
            let xhat = s.apply(x);
            match (w, b) {
                (Some(w), Some(b)) => xhat.mul_add(w, b),
                (Some(w), None) => xhat * w,
                (None, Some(b)) => xhat + b,
                (None, None) => xhat,
            }
        }),
        // Statistics outside the element type's comfortable range: every
        // output computed in `T::Acc` and rounded once.
        None => affine_loop(x, y, w, b, |x, w, b| {
            let xhat = (x.to_acc() - mean) * rstd;
            T::from_acc(match (w, b) {
                (Some(w), Some(b)) => xhat * w.to_acc() + b.to_acc(),
                (Some(w), None) => xhat * w.to_acc(),
                (None, Some(b)) => xhat + b.to_acc(),
                (None, None) => xhat,
            })
        }),
    }
}

/// `y_j = f(x_j, w_j, b_j)` with `None` for an absent weight or bias: one loop
/// per case, so that each compiles to a loop without branches.
#[inline(always)]
fn affine_loop<T: Float>(
    x: &[T],
    y: &mut [T],
    w: Option<&[T]>,
    b: Option<&[T]>,
    f: impl Fn(T, Option<T>, Option<T>) -> T,
) {
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = f(x, Some(w), Some(b));
            }
        }
        (Some(w), None) => {
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = f(x, Some(w), None);
            }
        }
        (None, Some(b)) => {
            for ((y, &x), &b) in y.iter_mut().zip(x).zip(b) {
                *y = f(x, None, Some(b));
            }
        }
        (None, None) => {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x, None, None);
            }
        }
    }
}

/// LayerNorm backward: the gradients of `L = Σ y · dy` given the forward's saved
/// `mean` and `rstd`. With `x̂ = (x - mean) · rstd` and `g = dy · weight` per row:
///
/// ```text
/// dx_j      = rstd · (g_j - mean_k(g_k) - x̂_j · mean_k(g_k x̂_k))
/// dweight_j = Σ_rows dy_j · x̂_j
/// dbias_j   = Σ_rows dy_j
/// ```
///
/// Computed by the kernel it shares with RMSNorm (`row_backward.rs`, with the
/// sweeps, the split over threads and the error bound of its `f32`
/// arithmetic): one sweep over each row from memory, a second from cache, and
/// the parameter gradients summed per fixed block of rows, so the results are
/// bitwise identical with any number of threads. Beyond the outputs, this
/// allocates only those partials (at most 8 MiB and, for rows of more than
/// 128 KiB of `x` and `dy`, two rows per block; none when neither `dweight`
/// nor `dbias` is asked for).
pub fn layer_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    n: usize,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    grads: Grads<'_, T>,
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("mean", mean.len(), rows)?;
    check_buf("rstd", rstd.len(), rows)?;
    super::check_param("weight", weight, n)?;
    check_buf("dx", grads.dx.len(), x.len())?;
    super::check_param("dweight", grads.dweight.as_deref(), n)?;
    super::check_param("dbias", grads.dbias.as_deref(), n)?;
    row_norm_backward(dy, x, n, Some(mean), rstd, weight, grads);
    Ok(())
}
