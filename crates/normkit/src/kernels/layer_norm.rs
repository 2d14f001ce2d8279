//! LayerNorm over rows of `n` values (Ba, Kiros & Hinton, 2016).
//!
//! Both passes are single sweeps over memory: a row is read from memory once,
//! while its statistics are computed, and the normalizing sweep then finds it in
//! L1/L2 (a row of up to 256 Ki `f32` fits in a 1 MiB L2). See [`super::simd`]
//! for the SIMD dispatch, the thread split and the non-temporal stores.
//!
//! Variants, in the manner of llm.c (measured with `normkit bench --quick`,
//! f32, `[8192, 4096]`, on the 2-core Zen 4 described in the README; fraction of
//! the machine's copy bandwidth, one thread):
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
//!    `backward_group`).
//!
//! The rest of the gap to the memory floor: in cache the kernel costs 0.41-0.45
//! ns per element against 0.36 ns to move its bytes at 22 GB/s, and with one
//! thread the reading sweep (statistics) and the writing sweep (normalize) of a
//! row alternate rather than overlap; see the README's "Performance".

use super::simd::{self, CHUNK};
use super::{check_buf, check_eps, rows_of, write_param_grads, Affine, Grads, Standardize};
use crate::error::Result;
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, Zero as _};
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
        let rpt = simd::rows_per_task(n);
        let x_tasks = x.par_chunks(rpt * n).zip(y.par_chunks_mut(rpt * n));
        let stat_tasks = mean.par_chunks_mut(rpt).zip(rstd.par_chunks_mut(rpt));
        x_tasks.zip(stat_tasks).for_each(|((xt, y), (m, r))| task(xt, y, m, r));
    } else {
        task(x, y, mean, rstd);
    }
    Ok(())
}

/// The forward pass over whole rows; `x.len() == y.len() == n · mean.len()`.
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
    let rows = x.chunks_exact(n).zip(y.chunks_exact_mut(n));
    for ((xr, yr), (m, r)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
        let stats = simd::row_moments(xr);
        let mu = stats.mean();
        let rs = (stats.var_biased() + eps).sqrt().recip();
        normalize_row(xr, yr, mu, rs, affine, stream);
        *m = T::from_acc(mu);
        *r = T::from_acc(rs);
    }
}

/// `y_j = (x_j - mean) · rstd · weight_j + bias_j` for one row, chunk by chunk;
/// with `stream`, each chunk is computed into an L1 buffer and written out with
/// non-temporal stores.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_row<T: Float>(x: &[T], y: &mut [T], mean: T::Acc, rstd: T::Acc, affine: Affine<'_, T>, stream: bool) {
    let mut buf = [T::default(); CHUNK];
    for (c, (xc, yc)) in x.chunks(CHUNK).zip(y.chunks_mut(CHUNK)).enumerate() {
        // The weight and bias were checked to hold `n >= c·CHUNK + xc.len()` values.
        let range = c * CHUNK..c * CHUNK + xc.len();
        let (w, b) = (affine.weight.map(|w| &w[range.clone()]), affine.bias.map(|b| &b[range]));
        if stream {
            let out = &mut buf[..xc.len()];
            normalize_chunk(xc, out, w, b, mean, rstd);
            simd::stream_copy(yc, out);
        } else {
            normalize_chunk(xc, yc, w, b, mean, rstd);
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
/// One sweep over each row of `(x, dy)` from memory gathers the two means; a
/// second sweep over the same row, now in cache, writes `dx` and adds the row's
/// `dweight`/`dbias` terms into the partial sums of its block of rows (rows
/// go in small groups, the second sweep chunk by chunk over the group, so
/// that the partials of a chunk stay in L1; rows still add in order). The
/// blocks are fixed by the shape (`param_blocks` in the SIMD module) and their partials are
/// added in block order, so the gradients are bitwise identical with any number
/// of threads. Beyond the outputs, this allocates only those partials (at most
/// 8 MiB, none when neither `dweight` nor `dbias` is asked for).
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

    let Grads { dx, dweight, dbias } = grads;
    let (want_dw, want_db) = (dweight.is_some(), dbias.is_some());
    let stream = simd::should_stream::<T>(dx.len());
    // Each block of rows sums its parameter terms into its own partials:
    // [dweight (n) if wanted, dbias (n) if wanted], or one unused accumulator.
    let wanted = usize::from(want_dw) + usize::from(want_db);
    let part_len = (n * wanted).max(1);
    let block_rows = match wanted {
        0 => simd::rows_per_task(n),
        _ => rows.div_ceil(simd::param_blocks::<T::Acc>(rows, n, wanted)).max(1),
    };
    let blocks = rows.div_ceil(block_rows).max(1);
    let mut partials = vec![T::Acc::zero(); blocks * part_len];

    let task = |(((x, dy), dx), ((mean, rstd), part)): BlockRefs<'_, T>| {
        let (dw, db) = part.split_at_mut(if want_dw { n } else { 0 });
        let (dw, db) = (want_dw.then_some(dw), want_db.then_some(db));
        simd::vectorized(
            #[inline(always)]
            || backward_rows(x, dy, n, mean, rstd, weight, dx, dw, db, stream),
        );
        if stream {
            simd::stream_fence();
        }
    };
    let (len, stats_len) = (block_rows * n, block_rows);
    if simd::worth_threads(x.len()) {
        let rows_it = x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len));
        let stats_it = mean.par_chunks(stats_len).zip(rstd.par_chunks(stats_len));
        rows_it.zip(stats_it.zip(partials.par_chunks_mut(part_len))).for_each(task);
    } else {
        let rows_it = x.chunks(len).zip(dy.chunks(len)).zip(dx.chunks_mut(len));
        let stats_it = mean.chunks(stats_len).zip(rstd.chunks(stats_len));
        rows_it.zip(stats_it.zip(partials.chunks_mut(part_len))).for_each(task);
    }

    let total = simd::sum_blocks(&mut partials, part_len);
    let (dw_total, db_total) = total.split_at(if want_dw { n } else { 0 });
    write_param_grads::<T>(dw_total, dweight);
    write_param_grads::<T>(db_total, dbias);
    Ok(())
}

/// One block's slices: `((x, dy), dx)` and `((mean, rstd), partials)`.
type BlockRefs<'a, T> = (((&'a [T], &'a [T]), &'a mut [T]), ((&'a [T], &'a [T]), &'a mut [<T as Float>::Acc]));

/// The backward pass over a block of whole rows, adding each row's parameter
/// gradient terms, in row order, into the block's partials `dw` and `db`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows<T: Float>(
    x: &[T],
    dy: &[T],
    n: usize,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    dx: &mut [T],
    mut dw: Option<&mut [T::Acc]>,
    mut db: Option<&mut [T::Acc]>,
    stream: bool,
) {
    let inv_n = T::Acc::from_count(n as u64).recip();
    let mut buf = [T::default(); CHUNK];
    // Rows go in groups of `group` rows: sweep 1 over each row of the group,
    // then sweep 2 chunk by chunk, each chunk over every row of the group, so
    // that a chunk's `dweight`/`dbias` partials stay in L1 while the group's
    // rows add to them (in row order, as one row at a time would).
    let group = backward_group::<T>(n);
    let mut coef = [(T::Acc::zero(), T::Acc::zero(), T::Acc::zero(), T::Acc::zero()); MAX_GROUP];
    let groups = x.chunks(group * n).zip(dy.chunks(group * n)).zip(dx.chunks_mut(group * n));
    for (((xg, dyg), dxg), (mg, rg)) in groups.zip(mean.chunks(group).zip(rstd.chunks(group))) {
        // Sweep 1, from memory: mean(g) and mean(g · x̂) of each row.
        for (((xr, dyr), (&m, &r)), cf) in
            xg.chunks_exact(n).zip(dyg.chunks_exact(n)).zip(mg.iter().zip(rg)).zip(&mut coef)
        {
            let (m, r) = (m.to_acc(), r.to_acc());
            let xhat = |x: T::Acc| (x - m) * r;
            let (sum_g, sum_gx) = match weight {
                Some(w) => simd::lane_sum2_zip3(xr, dyr, w, |x, dy, w| {
                    let g = w * dy;
                    (g, g * xhat(x))
                }),
                None => simd::lane_sum2_zip(xr, dyr, |x, dy| (dy, dy * xhat(x))),
            };
            *cf = (m, r, sum_g * inv_n, sum_gx * inv_n);
        }
        // Sweep 2, from cache: dx and the parameter terms, chunk by chunk.
        for start in (0..n).step_by(CHUNK) {
            let range = start..(start + CHUNK).min(n);
            let rows = xg.chunks_exact(n).zip(dyg.chunks_exact(n)).zip(dxg.chunks_exact_mut(n));
            for (((xr, dyr), dxr), &cf) in rows.zip(&coef) {
                let (xc, dyc, dxc) = (&xr[range.clone()], &dyr[range.clone()], &mut dxr[range.clone()]);
                let params = (weight, dw.as_deref_mut(), db.as_deref_mut());
                if stream {
                    let out = &mut buf[..xc.len()];
                    backward_chunk(xc, dyc, out, range.clone(), params, cf);
                    simd::stream_copy(dxc, out);
                } else {
                    backward_chunk(xc, dyc, dxc, range.clone(), params, cf);
                }
            }
        }
    }
}

/// Rows of `x` and `dy` (together) that a group of rows in the backward pass
/// may span: well inside a 1 MiB L2, so that sweep 2 finds them there.
const GROUP_BYTES: usize = 256 << 10;

/// Most rows in a group of the backward pass.
const MAX_GROUP: usize = 16;

/// Rows per group of the backward pass for rows of `n`: as many as fit
/// [`GROUP_BYTES`], 1 to [`MAX_GROUP`]. A function of the shape only, like
/// every split (and the rows of a group still add to the parameter partials
/// in row order, so grouping changes no result). Measured in cache
/// (`kernel_probe`, fastest / median of 7 runs): 0.74 / 0.86 -> 0.69 / 0.78 ns
/// per element at `n` = 768, 0.83 / 0.88 -> 0.77 / 0.78 at 4096. The same
/// grouping gave RMSNorm's backward nothing (0.72 either way), so it has none.
fn backward_group<T>(n: usize) -> usize {
    (GROUP_BYTES / (2 * n * std::mem::size_of::<T>()).max(1)).clamp(1, MAX_GROUP)
}

/// The weight, and the `dweight`/`dbias` partials, each when present.
type ParamRefs<'a, T> = (Option<&'a [T]>, Option<&'a mut [<T as Float>::Acc]>, Option<&'a mut [<T as Float>::Acc]>);

/// Sweep 2 of [`backward_rows`] over one chunk of one row: `dx` into `out`,
/// then the row's `dweight`/`dbias` terms added into the partials at `range`.
/// `cf` is the row's `(mean, rstd, mean(g), mean(g·x̂))`.
#[inline(always)]
fn backward_chunk<T: Float>(
    xc: &[T],
    dyc: &[T],
    out: &mut [T],
    range: std::ops::Range<usize>,
    (weight, dw, db): ParamRefs<'_, T>,
    (m, r, mean_g, mean_gx): (T::Acc, T::Acc, T::Acc, T::Acc),
) {
    let xhat = |x: T::Acc| (x - m) * r;
    // `weight`, `dw` and `db` were checked to hold `n` values, so `range` fits.
    match (weight, dw, db) {
        // The usual case, in one loop: each input widened once.
        (Some(w), Some(dw), Some(db)) => {
            let params = w[range.clone()].iter().zip(dw[range.clone()].iter_mut()).zip(db[range].iter_mut());
            for (((o, &x), &dy), ((&w, dw), db)) in out.iter_mut().zip(xc).zip(dyc).zip(params) {
                let (xh, dy) = (xhat(x.to_acc()), dy.to_acc());
                *o = T::from_acc(r * (w.to_acc() * dy - mean_g - xh * mean_gx));
                *dw = *dw + dy * xh;
                *db = *db + dy;
            }
        }
        (weight, dw, db) => {
            match weight {
                Some(w) => {
                    for (((o, &x), &dy), &w) in out.iter_mut().zip(xc).zip(dyc).zip(&w[range.clone()]) {
                        let g = w.to_acc() * dy.to_acc();
                        *o = T::from_acc(r * (g - mean_g - xhat(x.to_acc()) * mean_gx));
                    }
                }
                None => {
                    for ((o, &x), &dy) in out.iter_mut().zip(xc).zip(dyc) {
                        *o = T::from_acc(r * (dy.to_acc() - mean_g - xhat(x.to_acc()) * mean_gx));
                    }
                }
            }
            if let Some(dw) = dw {
                for ((a, &x), &dy) in dw[range.clone()].iter_mut().zip(xc).zip(dyc) {
                    *a = *a + dy.to_acc() * xhat(x.to_acc());
                }
            }
            if let Some(db) = db {
                for (a, &dy) in db[range].iter_mut().zip(dyc) {
                    *a = *a + dy.to_acc();
                }
            }
        }
    }
}
