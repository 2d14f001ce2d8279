//! The fast bodies of GroupNorm's (and so InstanceNorm's) passes: each group
//! `x[n, g·cpg .. (g+1)·cpg, :]` is a contiguous row, read from memory once
//! while its statistics are computed, then normalized while it is still in
//! L1/L2 (a group of `[32, 64, 56, 56]` with 32 groups is 25 KiB of `f32`).
//! SIMD by run-time dispatch, groups over rayon's threads in tasks fixed by the
//! shape, non-temporal stores for large outputs (see [`super::simd`]);
//! [`super::group_norm`] checks the arguments and calls these.
//!
//! Groups are independent, so any split over threads gives the same results;
//! the parameter gradients are per-run sums (one run `x[n, c, :]` each) added
//! over the batch in sample order, so they do not depend on the split either.

use super::group_norm::GroupLayout;
use super::rescale::mean_rstd;
use super::{normalize_run, row_backward, simd, Affine, Standardize};
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, One as _, Zero as _};
use rayon::prelude::*;

/// Runs `task(first_group, x_chunk, y_chunk, stats_chunk)` over consecutive
/// chunks of groups (about [`simd::TASK_ELEMS`] values each; a split fixed by
/// the shape), on rayon's threads when worth it. `y` holds `glen` values per
/// group, `stats` holds `per_stat` values per group.
fn for_each_group_chunk<T: Float, U: Send, S: Send>(
    x: &[T],
    y: &mut [U],
    stats: &mut [S],
    (glen, per_stat): (usize, usize),
    task: impl Fn(usize, &[T], &mut [U], &mut [S]) + Sync + Send,
) {
    let gpt = simd::rows_per_task(glen);
    let (len, s_len) = (gpt * glen, gpt * per_stat);
    if simd::worth_threads(x.len()) {
        let it = x.par_chunks(len).zip(y.par_chunks_mut(len)).zip(stats.par_chunks_mut(s_len));
        it.enumerate().for_each(|(i, ((x, y), s))| task(i * gpt, x, y, s));
    } else {
        let it = x.chunks(len).zip(y.chunks_mut(len)).zip(stats.chunks_mut(s_len));
        it.enumerate().for_each(|(i, ((x, y), s))| task(i * gpt, x, y, s));
    }
}

/// Each group's `(mean, rstd)`; `layout` not empty, `out` of `batch · groups`.
pub(crate) fn stats<T: Float>(x: &[T], layout: GroupLayout, eps: T::Acc, out: &mut [(T::Acc, T::Acc)]) {
    let glen = layout.group_len();
    let task = |x: &[T], out: &mut [(T::Acc, T::Acc)]| {
        simd::vectorized(
            #[inline(always)]
            || {
                for (g, o) in x.chunks_exact(glen).zip(out.iter_mut()) {
                    let m = simd::row_moments(g);
                    *o = mean_rstd(g, m.mean(), m.var_biased(), eps);
                }
            },
        )
    };
    let gpt = simd::rows_per_task(glen);
    if simd::worth_threads(x.len()) {
        x.par_chunks(gpt * glen).zip(out.par_chunks_mut(gpt)).for_each(|(x, o)| task(x, o));
    } else {
        task(x, out);
    }
}

/// The fused forward: per group, `mean` and `rstd` from one read of the group,
/// then `y = (x - mean) · (rstd · weight_c) + bias_c` from cache. Writes the
/// statistics into `stats` (`(mean, rstd)` per group). `layout` not empty,
/// sizes checked by the caller.
pub(crate) fn forward<T: Float>(
    x: &[T],
    layout: GroupLayout,
    affine: Affine<'_, T>,
    eps: T::Acc,
    y: &mut [T],
    stats: &mut [(T::Acc, T::Acc)],
) {
    let (glen, spatial, groups) = (layout.group_len(), layout.spatial, layout.groups);
    let cpg = layout.channels / groups;
    let stream = simd::should_stream::<T>(y.len());
    for_each_group_chunk(x, y, stats, (glen, 1), |first, x, y, stats| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                // Each group's statistics after the first are computed while
                // the group before it is normalized, as LayerNorm's rows.
                let Some(first_group) = x.get(..glen) else { return };
                let mut m = simd::sweep_row(first_group, simd::moments_sweep(first_group));
                for (j, (yg, st)) in y.chunks_exact_mut(glen).zip(stats.iter_mut()).enumerate() {
                    let xg = &x[j * glen..(j + 1) * glen];
                    let (mu, rs) = mean_rstd(xg, m.mean() + simd::first_value(xg), m.var_biased(), eps);
                    *st = (mu, rs);
                    let next = x.get((j + 1) * glen..(j + 2) * glen);
                    let mut ahead = next.map(|g| simd::SweepAhead::new(g, simd::moments_sweep(g)));
                    let c0 = ((first + j) % groups) * cpg;
                    for (k, (xr, yr)) in xg.chunks_exact(spatial).zip(yg.chunks_exact_mut(spatial)).enumerate() {
                        let c = c0 + k;
                        let scale = rs * super::param_at(affine.weight, c, T::Acc::one());
                        let shift = super::param_at(affine.bias, c, T::Acc::zero());
                        let fast = Standardize::<T>::new(mu, rs, scale);
                        for range in simd::line_chunks(yr) {
                            let (xc, yc) = (&xr[range.clone()], &mut yr[range]);
                            let out = simd::out_chunk(&mut *yc, &mut buf, stream);
                            normalize_run(xc, out, fast, (mu, scale, shift));
                            if stream {
                                simd::stream_copy(yc, &buf[..xc.len()]);
                            }
                            if let Some(a) = ahead.as_mut() {
                                a.step();
                            }
                        }
                    }
                    if let Some(a) = ahead {
                        m = a.finish();
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    });
}

/// The fused backward. Per group, with `x̂ = (x - mean) · rstd`:
///
/// 1. one sweep from memory over each run `(n, c)` of the group gives
///    `Σ dy` and `Σ dy · x̂` (written to `run_sums`, `[batch · channels][2]`),
///    whose `weight_c`-weighted sums over the group are `Σ g` and `Σ g · x̂`;
/// 2. a sweep from cache writes `dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))`.
///
/// For `f32` data both sweeps compute in `f32` when [`Standardize`] accepts the
/// group's statistics, as LayerNorm's backward does (`row_backward.rs`, which
/// derives the bound; `tests/group_norm.rs` checks it): the run sums in `f32`
/// lanes of at most 16 values widened into `f64`, `dx` with one fused
/// multiply-add. Otherwise in `T::Acc`, each `dx` rounded once. In cache
/// (GroupNorm backward `[2,64,512]`, one thread, fastest of 300 batches, three
/// runs each) 0.50-0.54 -> 0.27-0.38 ns per element; from memory (`normkit
/// bench --quick`, three alternating runs) no consistent change.
///
/// `layout` not empty, sizes checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    dy: &[T],
    x: &[T],
    layout: GroupLayout,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    dx: &mut [T],
    run_sums: &mut [T::Acc],
) {
    let (glen, spatial, groups) = (layout.group_len(), layout.spatial, layout.groups);
    let cpg = layout.channels / groups;
    let stream = simd::should_stream::<T>(dx.len());
    let inv = T::Acc::from_count(glen as u64).recip();
    let task = |first: usize, x: &[T], dy: &[T], dx: &mut [T], sums: &mut [T::Acc]| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                let ones = [T::from_f64(1.0); simd::CHUNK];
                let groups_it = x.chunks_exact(glen).zip(dy.chunks_exact(glen)).zip(dx.chunks_exact_mut(glen));
                for (j, (((xg, dyg), dxg), sums)) in groups_it.zip(sums.chunks_exact_mut(2 * cpg)).enumerate() {
                    let gi = first + j;
                    let (m, r) = (mean[gi].to_acc(), rstd[gi].to_acc());
                    let c0 = (gi % groups) * cpg;
                    // Sweep 1, in the element type when it can carry the group.
                    let sweep1 = (xg, dyg, spatial, &ones);
                    let (params, stats) = ((weight, c0), (m, r, inv));
                    let mut narrow = Standardize::<T>::new(m, r, r);
                    let (mut mean_g, mut mean_gx) = group_sums(sweep1, params, stats, narrow, sums);
                    let coef = (T::from_acc(r), T::from_acc(mean_g), T::from_acc(-mean_gx));
                    if narrow.is_some() && !(coef.1.is_finite() && coef.2.is_finite()) {
                        // Sums that overflow the element type: all in T::Acc.
                        narrow = None;
                        (mean_g, mean_gx) = group_sums(sweep1, params, stats, None, sums);
                    }
                    let runs =
                        xg.chunks_exact(spatial).zip(dyg.chunks_exact(spatial)).zip(dxg.chunks_exact_mut(spatial));
                    for (k, ((xr, dyr), dxr)) in runs.enumerate() {
                        let w = super::param_at(weight, c0 + k, T::Acc::one());
                        for range in simd::line_chunks(dxr) {
                            let (xc, dyc, dxc) = (&xr[range.clone()], &dyr[range.clone()], &mut dxr[range]);
                            let out = simd::out_chunk(&mut *dxc, &mut buf, stream);
                            match narrow {
                                Some(xhat) => {
                                    let w = T::from_acc(w);
                                    for ((o, &v), &g) in out.iter_mut().zip(xc).zip(dyc) {
                                        *o = row_backward::narrow_dx(xhat.apply(v), w * g, coef);
                                    }
                                }
                                None => {
                                    for ((o, &v), &g) in out.iter_mut().zip(xc).zip(dyc) {
                                        let xhat = (v.to_acc() - m) * r;
                                        *o = T::from_acc(r * (w * g.to_acc() - mean_g - xhat * mean_gx));
                                    }
                                }
                            }
                            if stream {
                                simd::stream_copy(dxc, &buf[..xc.len()]);
                            }
                        }
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    };
    let gpt = simd::rows_per_task(glen);
    let len = gpt * glen;
    if simd::worth_threads(x.len()) {
        let it = x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len));
        let it = it.zip(run_sums.par_chunks_mut(gpt * 2 * cpg)).enumerate();
        it.for_each(|(i, (((x, dy), dx), s))| task(i * gpt, x, dy, dx, s));
    } else {
        task(0, x, dy, dx, run_sums);
    }
}

/// Sweep 1 of the backward over one group: each run's `Σ dy` and `Σ dy·x̂`
/// into `sums` (`[cpg][2]`), and the means over the group of their
/// `weight_c`-weighted totals, `mean(g)` and `mean(g·x̂)`. In the element type
/// when `narrow` is `Some` (as LayerNorm's backward, `row_backward.rs`, with
/// the same bound), else in `T::Acc`.
///
/// A function, not a closure inside [`backward`]'s task: a closure called
/// twice was compiled on its own, without the dispatched function's
/// instruction set, and each `mul_add` became a call to libm's `fmaf`
/// (backward `[32,64,56,56]`, one thread: 20-25 ms, and 5.4-6.1 ms as this
/// function, 2026-12-02). `scripts/check_dispatch.sh` looks for such code.
#[inline(always)]
fn group_sums<T: Float>(
    (xg, dyg, spatial, ones): (&[T], &[T], usize, &[T; simd::CHUNK]),
    (weight, c0): (Option<&[T]>, usize),
    (m, r, inv): (T::Acc, T::Acc, T::Acc),
    narrow: Option<Standardize<T>>,
    sums: &mut [T::Acc],
) -> (T::Acc, T::Acc) {
    let (mut sum_g, mut sum_gx) = (T::Acc::zero(), T::Acc::zero());
    let runs = xg.chunks_exact(spatial).zip(dyg.chunks_exact(spatial));
    for (k, ((xr, dyr), s)) in runs.zip(sums.chunks_exact_mut(2)).enumerate() {
        let (sdy, sdyx) = match narrow {
            Some(xhat) => row_backward::narrow_sums(xr, dyr, None, ones, xhat),
            None => simd::lane_sum2_zip(xr, dyr, |x, dy| (dy, dy * ((x - m) * r))),
        };
        (s[0], s[1]) = (sdy, sdyx);
        let w = super::param_at(weight, c0 + k, T::Acc::one());
        sum_g = sum_g + w * sdy;
        sum_gx = sum_gx + w * sdyx;
    }
    (sum_g * inv, sum_gx * inv)
}
