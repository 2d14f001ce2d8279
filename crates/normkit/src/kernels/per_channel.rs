//! The fast bodies of BatchNorm's passes: SIMD by run-time dispatch, rayon
//! threads over a split fixed by the shape, non-temporal stores for large
//! outputs (see [`super::simd`]). [`super::batch_norm`] checks its arguments and
//! calls these.
//!
//! A `[outer, channels, inner]` tensor is walked one of two ways, chosen by the
//! shape alone:
//!
//! - **runs** (`inner >= RUN_MIN`, e.g. NCHW): each contiguous run
//!   `x[o, c, ..]` of `inner` values has one channel, so a run is a row as in
//!   LayerNorm: its statistics come from [`simd::shifted_moments`] (about the
//!   channel's first value) in one read from memory, its elementwise work uses
//!   per-run scalars. Runs are independent, so
//!   any split over threads gives the same per-run results; they are then merged
//!   per channel in `o` order. The training passes go channel by channel
//!   when a channel's runs fit in L2 and more than one thread works on them
//!   ([`train_by_channel`]): its statistics, then its normalization from
//!   cache.
//! - **columns** (`inner < RUN_MIN`, e.g. channels-last `(N, H, W, C)`): each row
//!   `x[o, .., ..]` of `cols = channels · inner` values is processed as one
//!   vector op across the columns (one accumulator per column). Statistics go
//!   sub-block by sub-block of rows (for `f32` one sweep each, about the
//!   sub-block's first row; for `f64` two, about a centre near the mean;
//!   merged by Chan's formula), within fixed blocks of rows
//!   ([`simd::param_blocks`]) whose partials are merged in block order; then the
//!   columns of a channel are merged in order.
//!
//! Neither split looks at the thread count, so results are bitwise identical
//! with any number of threads.
//!
//! Measured with `normkit bench` (f32, one thread, on the 2-core Zen 4 of
//! `docs/performance-history.md`): the previous scalar passes ran training
//! forward at about 0.2 of copy bandwidth; see the README's table for these.

use super::batch_norm::ChannelLayout;
use super::{normalize_run, simd, Standardize, StandardizeColumns};
use crate::float::{AccFloat, Float};
use crate::moments::{corrected_m2, needs_recentring, Moments};
use num_traits::{Float as _, Zero as _};
use rayon::prelude::*;

/// Layouts with runs of at least this many values go run by run, the others
/// row by row across columns (see the module docs).
const RUN_MIN: usize = 64;

/// Values per sub-block of rows in the columns path's statistics (64 KiB of
/// `f32`): each is summed about its centres, then merged into the columns'
/// moments (see [`column_moments`]).
const SUB_ELEMS: usize = 1 << 14;

/// Most rows one column sum of [`column_centres`] adds in the element type.
const NATIVE_ROWS: usize = 128;

fn use_runs(layout: ChannelLayout) -> bool {
    layout.inner >= RUN_MIN
}

/// A per-channel value expanded to one per column (`cols = channels · inner`).
fn per_column<A: Copy>(per_channel: &[A], inner: usize) -> Vec<A> {
    per_channel.iter().flat_map(|&v| std::iter::repeat_n(v, inner)).collect()
}

/// [`per_column`] repeated on to `cols + CHUNK` values, so that a chunk of at
/// most [`simd::CHUNK`] values that starts in column `j` finds its columns'
/// values, in order, at `tiled[j..]`. With it the channels-last elementwise
/// passes walk a block of whole rows in [`simd::line_chunks`], as the runs
/// path walks a run, whatever the row width. They used to go in chunks of
/// whole rows (16 rows of 64 `f32`, 4 KiB), which for outputs 16 bytes into a
/// page split a line between two chunks at every chunk boundary, written in
/// two parts with ordinary stores that must read the line first. From memory,
/// one thread (`kernel_probe` with `MEM=1`, ns per element, two alternating
/// pairs, Xeon of 2026-12-03): eval forward 0.92-0.96 -> 0.55-0.56, backward
/// sums 0.78-0.84 -> 0.59-0.60 (with [`column_grad_sums`]), training `dx`
/// 1.31-1.49 -> 0.88-0.90.
fn tiled_columns<A: Copy>(per_channel: &[A], inner: usize) -> Vec<A> {
    let cols = per_channel.len() * inner;
    per_column(per_channel, inner).into_iter().cycle().take(cols + simd::CHUNK).collect()
}

/// Runs `task(first_unit, x_chunk, y_chunk)` over consecutive chunks of units
/// (runs or rows) of `unit` values each, about [`simd::TASK_ELEMS`] values per
/// chunk, on rayon's threads when worth it. The split depends on the shape only.
/// `y` holds `y_unit` values per unit.
fn for_each_unit_chunk<T: Float, U: Send>(
    x: &[T],
    y: &mut [U],
    (unit, y_unit): (usize, usize),
    task: impl Fn(usize, &[T], &mut [U]) + Sync + Send,
) {
    let upt = simd::rows_per_task(unit);
    let (len, y_len) = (upt * unit, upt * y_unit);
    if simd::worth_threads(x.len()) {
        x.par_chunks(len).zip(y.par_chunks_mut(y_len)).enumerate().for_each(|(i, (x, y))| task(i * upt, x, y));
    } else {
        x.chunks(len).zip(y.chunks_mut(y_len)).enumerate().for_each(|(i, (x, y))| task(i * upt, x, y));
    }
}

/// Each channel's [`Moments`]; `layout` is not empty and `out` holds `channels`.
pub(crate) fn channel_moments<T: Float>(x: &[T], layout: ChannelLayout, out: &mut [Moments<T::Acc>]) {
    let ChannelLayout { outer, channels, inner } = layout;
    // Every value of channel `c` is shifted by its first value `x[0, c, 0]`, so
    // that a large common offset does not round the merges' mean differences.
    let shift: Vec<T::Acc> = x.chunks_exact(inner).take(channels).map(|run| run[0].to_acc()).collect();
    let unshift = |m: Moments<T::Acc>, s: T::Acc| Moments::from_parts(m.count(), m.mean() + s, m.m2());
    if use_runs(layout) {
        let mut per_run = vec![Moments::new(); outer * channels];
        for_each_unit_chunk(x, &mut per_run, (inner, 1), |first, x, out| {
            simd::vectorized(
                #[inline(always)]
                || {
                    for (k, (run, o)) in x.chunks_exact(inner).zip(out.iter_mut()).enumerate() {
                        *o = simd::shifted_moments(run, shift[(first + k) % channels]);
                    }
                },
            )
        });
        for (c, o) in out.iter_mut().enumerate() {
            let m = per_run.iter().skip(c).step_by(channels).fold(Moments::new(), |acc, m| acc.merge(m));
            *o = unshift(m, shift[c]);
        }
        return;
    }
    let cols = channels * inner;
    let col_shift = per_column(&shift, inner);
    let block_rows = outer.div_ceil(column_blocks::<T::Acc>(outer, cols)).max(1);
    // Per block: [mean of each column | M2 of each column], of the shifted values.
    let mut part = vec![T::Acc::zero(); outer.div_ceil(block_rows) * 2 * cols];
    let task = |x: &[T], part: &mut [T::Acc]| {
        simd::vectorized(
            #[inline(always)]
            || column_moments(x, &col_shift, part),
        )
    };
    if simd::worth_threads(x.len()) {
        x.par_chunks(block_rows * cols).zip(part.par_chunks_mut(2 * cols)).for_each(|(x, p)| task(x, p));
    } else {
        x.chunks(block_rows * cols).zip(part.chunks_mut(2 * cols)).for_each(|(x, p)| task(x, p));
    }
    let mut col = vec![Moments::new(); cols];
    for (b, p) in part.chunks_exact(2 * cols).enumerate() {
        let count = block_rows.min(outer - b * block_rows) as u64;
        let (mean, m2) = p.split_at(cols);
        for ((acc, &m), &q) in col.iter_mut().zip(mean).zip(m2) {
            *acc = acc.merge(&Moments::from_parts(count, m, q));
        }
    }
    for ((o, run), &s) in out.iter_mut().zip(col.chunks_exact(inner)).zip(&shift) {
        *o = unshift(run.iter().fold(Moments::new(), |acc, m| acc.merge(m)), s);
    }
}

/// The number of fixed blocks of rows whose column partials the columns path
/// computes apart and merges in order: [`simd::param_blocks`], but no more than
/// one per [`simd::TASK_ELEMS`] values, so that a small input is not cut into
/// blocks of a few rows whose per-column merges would cost more than the sweep.
fn column_blocks<A>(rows: usize, cols: usize) -> usize {
    let by_size = rows.saturating_mul(cols).div_ceil(simd::TASK_ELEMS).max(1);
    simd::param_blocks::<A>(rows, cols, 2).min(by_size)
}

/// The mean and M2 of each column `j` of the rows `x` (of `shift.len()`
/// columns), less `shift_j`, into `out = [mean | M2]`: sub-block by sub-block
/// of `k` rows, each by the corrected two-pass formula about a centre `c_j`,
///
/// ```text
/// d_ij   = x[i, j] - c_j                  in T::Acc
/// mean_j = (c_j - shift_j) + Σ_i d_ij / k
/// M2_j   = Σ_i d_ij² - (Σ_i d_ij)² / k
/// ```
///
/// merged left to right by Chan's formula. Each column's sums run in one
/// accumulator, so the relative error of `M2_j` is at most about
/// `2⁻⁵³ · k · (1 + ((c_j - mean_j)/σ_j)²)`, and that of the mean grows with
/// `|c_j - mean_j|` too. The centre is chosen by the element type:
///
/// - `T::Acc` much wider than `T` (`f32` data): `c_j = x[0, j]`, the
///   sub-block's first row, in one sweep from memory, as
///   [`simd::shifted_moments`] sums a block of a run. `d_ij` is exact, and by
///   Samuelson's inequality the bound is `2⁻⁵³ · k²` at worst, below 5e-10
///   with at most [`simd::MOMENTS_BLOCK`] rows: far below what `f32` resolves.
///   This replaced the sweeps of the other case, whose arithmetic came after
///   the read from memory instead of overlapping it (from memory, one thread,
///   `kernel_probe` with `MEM=1`: see `docs/performance-history.md`).
/// - otherwise (`f64` data, whose mean is checked to a few units of its last
///   place): a first sweep from memory sums each column for `c_j` near its
///   mean ([`column_centres`]), and the deviations are summed from L2; once
///   more about the refined mean if a column is (nearly) constant about an
///   inexact centre.
#[inline(always)]
fn column_moments<T: Float>(x: &[T], shift: &[T::Acc], out: &mut [T::Acc]) {
    let zero = T::Acc::zero();
    let cols = shift.len();
    let (mean, m2) = out.split_at_mut(cols);
    let (mut centre, mut dsum, mut dsq) = (vec![zero; cols], vec![zero; cols], vec![zero; cols]);
    let one_sweep = acc_is_wider::<T>();
    let sub_rows = (SUB_ELEMS / cols).max(1);
    let sub_rows = if one_sweep { sub_rows.min(simd::MOMENTS_BLOCK) } else { sub_rows };
    let mut count = 0usize;
    for sub in x.chunks(sub_rows * cols) {
        let r = sub.len() / cols;
        let (k, inv) = (T::Acc::from_count(r as u64), T::Acc::from_count(r as u64).recip());
        if one_sweep {
            for (c, &first) in centre.iter_mut().zip(&sub[..cols]) {
                *c = first.to_acc();
            }
            column_deviations(sub, &centre, (&mut dsum, &mut dsq));
        } else {
            column_centres(sub, &mut centre);
            column_deviations(sub, &centre, (&mut dsum, &mut dsq));
            let at_noise = dsum.iter().zip(&dsq).any(|(&p, &q)| needs_recentring(corrected_m2(q, p, k), q, k));
            if at_noise {
                for (c, &p) in centre.iter_mut().zip(&dsum) {
                    *c = *c + p * inv;
                }
                column_deviations(sub, &centre, (&mut dsum, &mut dsq));
            }
            // Squares that overflowed about a centre a few ulps off a huge
            // column's mean (a constant column of 1e300: deviations of 1e284):
            // about the first row instead, as the one-sweep path, which gives
            // a constant column deviations of exactly 0.
            if dsq.iter().any(|q| q.is_infinite()) {
                for (c, &first) in centre.iter_mut().zip(&sub[..cols]) {
                    *c = first.to_acc();
                }
                column_deviations(sub, &centre, (&mut dsum, &mut dsq));
            }
        }
        // Chan's merge of (count, mean, m2) with this sub-block's (r, mb, m2b).
        let (na, n) = (T::Acc::from_count(count as u64), T::Acc::from_count((count + r) as u64));
        let fb = k / n;
        let fab = na * fb;
        let first = count == 0;
        let acc = mean.iter_mut().zip(m2.iter_mut());
        let sub_stats = centre.iter().zip(shift).zip(dsum.iter().zip(&dsq));
        for ((mean, m2), ((&c, &s), (&p, &q))) in acc.zip(sub_stats) {
            let mb = (c - s) + p * inv;
            let m2b = corrected_m2(q, p, k);
            if first {
                (*mean, *m2) = (mb, m2b);
            } else {
                let delta = mb - *mean;
                *mean = *mean + delta * fb;
                *m2 = *m2 + m2b + delta * delta * fab;
            }
        }
        count += r;
    }
}

/// Whether `T::Acc` carries at least 20 more significant bits than `T` (as
/// `f64` does for `f32`): then a difference of two values of `T` of like
/// magnitude is exact in `T::Acc`, and the rounding of its sums stays far below
/// what `T` resolves.
fn acc_is_wider<T: Float>() -> bool {
    use num_traits::ToPrimitive as _;
    let acc_eps = T::Acc::epsilon().to_f64().unwrap_or(f64::INFINITY);
    T::EPSILON >= acc_eps * f64::from(1u32 << 20)
}

/// Each column's mean of the rows `x` into `centre` (the first row's value
/// where it is not finite), by sums in `T` over at most [`NATIVE_ROWS`] rows
/// at a time, then in `T::Acc`: a centre within about `128 · u · |mean|` of
/// the mean (`u` the unit roundoff of `T`).
#[inline(always)]
fn column_centres<T: Float>(x: &[T], centre: &mut [T::Acc]) {
    let cols = centre.len();
    let mut sums = vec![T::default(); cols];
    centre.fill(T::Acc::zero());
    for rows in x.chunks(NATIVE_ROWS * cols) {
        sums.fill(T::default());
        // Four rows per pass over the sums, added in row order.
        let quads = rows.chunks_exact(4 * cols);
        let rest = quads.remainder();
        for q in quads {
            let (r0, r1, r2, r3) = four_rows(q, cols);
            for ((((a, &v0), &v1), &v2), &v3) in sums.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *a = *a + v0 + v1 + v2 + v3;
            }
        }
        for row in rest.chunks_exact(cols) {
            for (a, &v) in sums.iter_mut().zip(row) {
                *a = *a + v;
            }
        }
        for (c, &part) in centre.iter_mut().zip(&sums) {
            *c = *c + part.to_acc();
        }
    }
    let inv = T::Acc::from_count((x.len() / cols) as u64).recip();
    for (c, &first) in centre.iter_mut().zip(x) {
        *c = if c.is_finite() { *c * inv } else { first.to_acc() };
    }
}

/// `(Σ d, Σ d²)` per column of the rows `x`, with `d = x - centre` in `T::Acc`,
/// rows added in order, reading `x` from memory. Four rows go through the
/// accumulators at a time, which then stay in registers for four additions
/// each rather than making a round trip through L1 per row (in cache,
/// channels-last BatchNorm training forward 0.66 -> 0.45 ns per element,
/// `kernel_probe`), and each quad asks for the values [`simd::prefetch_ahead`]
/// puts 4 KiB ahead.
#[inline(always)]
fn column_deviations<T: Float>(x: &[T], centre: &[T::Acc], (dsum, dsq): (&mut [T::Acc], &mut [T::Acc])) {
    let cols = centre.len();
    dsum.fill(T::Acc::zero());
    dsq.fill(T::Acc::zero());
    let quads = x.chunks_exact(4 * cols);
    let rest = quads.remainder();
    for q in quads {
        simd::prefetch_ahead(q);
        let (r0, r1, r2, r3) = four_rows(q, cols);
        let acc = dsum.iter_mut().zip(dsq.iter_mut()).zip(centre);
        for ((((p, q), &c), (&v0, &v1)), (&v2, &v3)) in acc.zip(r0.iter().zip(r1)).zip(r2.iter().zip(r3)) {
            let (d0, d1, d2, d3) = (v0.to_acc() - c, v1.to_acc() - c, v2.to_acc() - c, v3.to_acc() - c);
            *p = *p + d0 + d1 + d2 + d3;
            *q = *q + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
        }
    }
    for row in rest.chunks_exact(cols) {
        for (((p, q), &c), &v) in dsum.iter_mut().zip(dsq.iter_mut()).zip(centre).zip(row) {
            let d = v.to_acc() - c;
            *p = *p + d;
            *q = *q + d * d;
        }
    }
}

/// `s_j += Σ dy_j` and `sx_j += Σ dy_j · (x_j - mean_j)` per column `j` of
/// the rows of `x` and `dy`, in `T::Acc`, rows added in order (the caller
/// multiplies `sx` by `rstd_j` once, at the end, for `Σ dy · x̂`). As in
/// [`column_deviations`], four rows go through the accumulators at a time (the
/// same sums, bit for bit, as one row at a time).
#[inline(always)]
fn column_grad_sums<T: Float>(x: &[T], dy: &[T], mean: &[T::Acc], s: &mut [T::Acc], sx: &mut [T::Acc]) {
    let cols = mean.len();
    let (s, sx) = (&mut s[..cols], &mut sx[..cols]);
    let quads = x.chunks_exact(4 * cols).zip(dy.chunks_exact(4 * cols));
    for (xq, gq) in quads {
        let (x0, x1, x2, x3) = four_rows(xq, cols);
        let (g0, g1, g2, g3) = four_rows(gq, cols);
        for j in 0..cols {
            let m = mean[j];
            let g = [g0[j], g1[j], g2[j], g3[j]].map(|g| g.to_acc());
            let d = [x0[j], x1[j], x2[j], x3[j]].map(|v| v.to_acc() - m);
            s[j] = s[j] + g[0] + g[1] + g[2] + g[3];
            sx[j] = sx[j] + g[0] * d[0] + g[1] * d[1] + g[2] * d[2] + g[3] * d[3];
        }
    }
    let rest = x.len() / (4 * cols) * 4 * cols;
    for (xr, gr) in x[rest..].chunks_exact(cols).zip(dy[rest..].chunks_exact(cols)) {
        for j in 0..cols {
            let g = gr[j].to_acc();
            s[j] = s[j] + g;
            sx[j] = sx[j] + g * (xr[j].to_acc() - mean[j]);
        }
    }
}

/// The four rows of `cols` values each that make up `quad` (of `4·cols`
/// values), for the sums that take four rows per pass.
#[inline(always)]
fn four_rows<T>(quad: &[T], cols: usize) -> (&[T], &[T], &[T], &[T]) {
    let (r0, rest) = quad.split_at(cols);
    let (r1, rest) = rest.split_at(cols);
    let (r2, r3) = rest.split_at(cols);
    (r0, r1, r2, r3)
}

/// Most bytes of `x` per channel for [`train_forward_by_channel`]: a
/// channel's runs must stay in L2 between its statistics and its
/// normalization (1 MiB on the Zen 4 and the Zen 5, 2 MiB on the Xeons).
const CHANNEL_IN_CACHE_BYTES: usize = 512 << 10;

/// Whether the training passes go channel by channel
/// ([`train_forward_by_channel`], [`train_backward_by_channel`]): the runs
/// layout, with each channel's values in L2, and the work split over more
/// than one thread. Either way the results are the same bits, so choosing by
/// the thread count keeps them independent of it.
///
/// Why the thread count: channel by channel reads `x` (and `dy`) from memory
/// once, but as `outer` short runs per channel, strided; the two passes read
/// it twice, each time in one linear sweep. On the AMD EPYC (Zen 5) of
/// 2026-12-04 one core streams linear sweeps faster than the shared memory
/// bus lets two, and the two passes won with one thread; with two threads,
/// reading once won. `normkit bench --quick --op batch_norm_train`, `into`,
/// ms, three alternating pairs, two passes against channel by channel: one
/// thread, backward `[32,64,56,56]` 2.77-2.85 against 3.84-4.17,
/// `[8,256,28,28]` 0.82-0.89 against 1.11-1.17, forward `[8,256,28,28]`
/// 0.48-0.60 against 0.79-0.87, `[32,64,56,56]` 1.79-1.87 against 1.78-2.05;
/// two threads (two pairs), forward `[32,64,56,56]` 1.65-1.69 against
/// 1.35-1.43, backward 2.73-3.12 against 2.47-2.58, `[8,256,28,28]`
/// backward 0.78-0.80 against 0.62-0.71. On the Xeon of 2026-12-03 channel by
/// channel was faster with one thread too (see `batch_norm_forward_train`):
/// this choice is tuned to the Zen 5.
pub(crate) fn train_by_channel<T>(layout: ChannelLayout) -> bool {
    let ChannelLayout { outer, channels, inner } = layout;
    channels_fit_in_cache::<T>(layout) && simd::worth_threads(outer.saturating_mul(channels).saturating_mul(inner))
}

/// The runs layout, with each channel's values in L2: what the training
/// passes need to go channel by channel.
fn channels_fit_in_cache<T>(layout: ChannelLayout) -> bool {
    use_runs(layout) && layout.per_channel().saturating_mul(std::mem::size_of::<T>()) <= CHANNEL_IN_CACHE_BYTES
}

/// BatchNorm's training forward over the runs layout, one channel at a time:
/// the channel's [`Moments`] from its runs, the channel's normalization
/// `(mean, rstd, scale, shift) = params(c, moments)`, then its runs
/// normalized while they are still in L2, so `x` is read from memory once
/// instead of twice; the next channel's statistics are swept from memory
/// chunk by chunk between the chunks of this channel's normalization
/// ([`ChannelSweep`]), so that reading and writing memory overlap, as in
/// LayerNorm's forward. The same bits as [`channel_moments`] then [`apply`]
/// (the same per-run sums, merged in the same order, and the same
/// elementwise arithmetic); channels are independent, so the split over
/// threads (blocks of channels, by the shape) changes nothing.
pub(crate) fn train_forward_by_channel<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    params: impl Fn(usize, &Moments<T::Acc>) -> [T::Acc; 4] + Sync,
    y: &mut [T],
    moments: &mut [Moments<T::Acc>],
) {
    let ChannelLayout { outer, channels, inner } = layout;
    let stream = simd::should_stream::<T>(y.len());
    for_each_channel_block(y, layout, moments, |first, runs, moments| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                let task_channels = moments.len();
                let mut stats = ChannelSweep::new(x, layout, first).finish();
                for (k, (y_runs, m)) in runs.chunks_mut(outer).zip(moments.iter_mut()).enumerate() {
                    let c = first + k;
                    *m = stats;
                    let [mean, rstd, scale, bias] = params(c, m);
                    let fast = Standardize::new(mean, rstd, scale);
                    let mut ahead = (k + 1 < task_channels).then(|| ChannelSweep::new(x, layout, c + 1));
                    for (o, yr) in y_runs.iter_mut().enumerate() {
                        let xr = &x[(o * channels + c) * inner..][..inner];
                        for range in simd::line_chunks(yr) {
                            let (xc, yc) = (&xr[range.clone()], &mut yr[range]);
                            let out = simd::out_chunk(&mut *yc, &mut buf, stream);
                            normalize_run(xc, out, fast, (mean, scale, bias));
                            if stream {
                                simd::stream_copy(yc, &buf[..xc.len()]);
                            }
                            if let Some(a) = ahead.as_mut() {
                                a.step();
                            }
                        }
                    }
                    if let Some(a) = ahead {
                        stats = a.finish();
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    });
}

/// Runs `task(first, runs, results)` over blocks of consecutive channels of
/// the runs layout: `first` the block's first channel, `runs` the block's
/// runs of `out`, channel by channel (each channel's `outer` runs in `o`
/// order), `results` the block's entries of `per_channel`. Blocks hold
/// [`simd::pipelined_rows_per_task`] channels (by the shape alone), on
/// rayon's threads when worth it.
fn for_each_channel_block<T: Float, U: Send>(
    out: &mut [T],
    layout: ChannelLayout,
    per_channel: &mut [U],
    task: impl Fn(usize, &mut [&mut [T]], &mut [U]) + Sync,
) {
    let ChannelLayout { outer, channels, inner } = layout;
    let worth_threads = simd::worth_threads(out.len());
    let mut runs: Vec<(usize, &mut [T])> =
        out.chunks_exact_mut(inner).enumerate().map(|(k, r)| (k % channels, r)).collect();
    // A stable sort: each channel's runs stay in `o` order.
    runs.sort_by_key(|&(c, _)| c);
    let mut runs: Vec<&mut [T]> = runs.into_iter().map(|(_, r)| r).collect();
    let cpt = simd::pipelined_rows_per_task(outer * inner);
    if worth_threads {
        let tasks = runs.par_chunks_mut(cpt * outer).zip(per_channel.par_chunks_mut(cpt));
        tasks.enumerate().for_each(|(i, (r, u))| task(i * cpt, r, u));
    } else {
        let tasks = runs.chunks_mut(cpt * outer).zip(per_channel.chunks_mut(cpt));
        tasks.enumerate().for_each(|(i, (r, u))| task(i * cpt, r, u));
    }
}

/// The statistics sweep of one channel's runs `x[o, c, ..]`, fed a chunk at
/// a time (as [`simd::SweepAhead`] feeds a row): each run summed by its own
/// [`simd::MomentsSweep`] about the channel's first value `x[0, c, 0]`, the
/// runs merged in `o` order, as [`channel_moments`] does.
struct ChannelSweep<'a, T: Float> {
    x: &'a [T],
    layout: ChannelLayout,
    c: usize,
    shift: T::Acc,
    /// The run being swept, and how much of it has been.
    run: usize,
    done: usize,
    sweep: simd::MomentsSweep<T::Acc>,
    merged: Moments<T::Acc>,
}

impl<'a, T: Float> ChannelSweep<'a, T> {
    #[inline(always)]
    fn new(x: &'a [T], layout: ChannelLayout, c: usize) -> Self {
        let shift = x[c * layout.inner].to_acc();
        let sweep = simd::MomentsSweep::new(shift);
        ChannelSweep { x, layout, c, shift, run: 0, done: 0, sweep, merged: Moments::new() }
    }

    /// Feeds the next chunk of the channel, if any is left.
    #[inline(always)]
    fn step(&mut self) {
        let ChannelLayout { outer, channels, inner } = self.layout;
        if self.run == outer {
            return;
        }
        let run = &self.x[(self.run * channels + self.c) * inner..][..inner];
        let end = (self.done + simd::CHUNK).min(inner);
        simd::RowSweep::feed(&mut self.sweep, &run[self.done..end]);
        self.done = end;
        if end == inner {
            let sweep = std::mem::replace(&mut self.sweep, simd::MomentsSweep::new(self.shift));
            self.merged = self.merged.merge(&simd::RowSweep::<T>::finish(sweep));
            (self.run, self.done) = (self.run + 1, 0);
        }
    }

    /// Feeds the rest; the channel's moments.
    #[inline(always)]
    fn finish(mut self) -> Moments<T::Acc> {
        while self.run < self.layout.outer {
            self.step();
        }
        let m = self.merged;
        Moments::from_parts(m.count(), m.mean() + self.shift, m.m2())
    }
}

/// BatchNorm's training backward over the runs layout, one channel at a
/// time, as [`train_forward_by_channel`] goes forward: the channel's
/// `(Σ dy, Σ dy·x̂)` from its runs of `x` and `dy` (read from memory, swept
/// between the chunks of the previous channel's `dx`), then
/// `coef(c, sums) = [mean, slope, k, mean_dy]` and its runs' `dx` while they
/// are still in L2; writes the sums into `sum_dy` and `sum_dy_xhat`. The same
/// bits as [`backward_sums`] then [`train_dx`]. `mean_rstd(c)` gives the
/// channel's saved `(mean, rstd)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_backward_by_channel<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    mean_rstd: impl Fn(usize) -> (T::Acc, T::Acc) + Sync,
    coef: impl Fn(usize, T::Acc, T::Acc) -> [T::Acc; 4] + Sync,
    dx: &mut [T],
    sum_dy: &mut [T::Acc],
    sum_dy_xhat: &mut [T::Acc],
) {
    let ChannelLayout { outer, channels, inner } = layout;
    let stream = simd::should_stream::<T>(dx.len());
    let mut sums = vec![(T::Acc::zero(), T::Acc::zero()); channels];
    for_each_channel_block(dx, layout, &mut sums, |first, runs, out| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                let task_channels = out.len();
                let sweep = |c: usize| ChannelGradSweep::new(x, dy, layout, c, mean_rstd(c));
                let mut sums = sweep(first).finish();
                for (k, (dx_runs, out)) in runs.chunks_mut(outer).zip(out.iter_mut()).enumerate() {
                    let c = first + k;
                    *out = sums;
                    let p = coef(c, sums.0, sums.1);
                    let mut ahead = (k + 1 < task_channels).then(|| sweep(c + 1));
                    for (o, dxr) in dx_runs.iter_mut().enumerate() {
                        let at = (o * channels + c) * inner;
                        let (xr, dyr) = (&x[at..at + inner], &dy[at..at + inner]);
                        for range in simd::line_chunks(dxr) {
                            let (xc, dyc, dxc) = (&xr[range.clone()], &dyr[range.clone()], &mut dxr[range]);
                            let out = simd::out_chunk(&mut *dxc, &mut buf, stream);
                            for ((o, &v), &g) in out.iter_mut().zip(xc).zip(dyc) {
                                *o = T::from_acc(grad(v.to_acc(), g.to_acc(), p));
                            }
                            if stream {
                                simd::stream_copy(dxc, &buf[..xc.len()]);
                            }
                            if let Some(a) = ahead.as_mut() {
                                a.step();
                            }
                        }
                    }
                    if let Some(a) = ahead {
                        sums = a.finish();
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    });
    for ((s, sx), (a, b)) in sum_dy.iter_mut().zip(sum_dy_xhat.iter_mut()).zip(sums) {
        (*s, *sx) = (a, b);
    }
}

/// The sweep of one channel's runs of `x` and `dy` for `(Σ dy, Σ dy·x̂)`, fed
/// a chunk at a time: per run, `Σ dy` and `Σ dy·(x - mean)` in [`simd::LANES`]
/// lanes (value `i` in lane `i mod LANES`, the tail added last, then
/// [`simd::reduce_lanes`]), the second times `rstd`, added over the runs in
/// `o` order: the arithmetic of [`simd::lane_sum2_zip`] in [`backward_sums`].
struct ChannelGradSweep<'a, T: Float> {
    x: &'a [T],
    dy: &'a [T],
    layout: ChannelLayout,
    c: usize,
    mean: T::Acc,
    rstd: T::Acc,
    run: usize,
    done: usize,
    lanes: [[T::Acc; simd::LANES]; 2],
    sums: (T::Acc, T::Acc),
}

impl<'a, T: Float> ChannelGradSweep<'a, T> {
    #[inline(always)]
    fn new(x: &'a [T], dy: &'a [T], layout: ChannelLayout, c: usize, (mean, rstd): (T::Acc, T::Acc)) -> Self {
        let z = T::Acc::zero();
        let lanes = [[z; simd::LANES]; 2];
        ChannelGradSweep { x, dy, layout, c, mean, rstd, run: 0, done: 0, lanes, sums: (z, z) }
    }

    /// Feeds the next chunk of the channel, if any is left.
    #[inline(always)]
    fn step(&mut self) {
        let ChannelLayout { outer, channels, inner } = self.layout;
        if self.run == outer {
            return;
        }
        let at = (self.run * channels + self.c) * inner;
        let end = (self.done + simd::CHUNK).min(inner);
        let (xc, dyc) = (&self.x[at + self.done..at + end], &self.dy[at + self.done..at + end]);
        let m = self.mean;
        let [mut a, mut b] = self.lanes;
        let (xg, dyg) = (xc.chunks_exact(simd::LANES), dyc.chunks_exact(simd::LANES));
        let (xt, dyt) = (xg.remainder(), dyg.remainder());
        for (gx, gdy) in xg.zip(dyg) {
            simd::prefetch_ahead(gx);
            simd::prefetch_ahead(gdy);
            for l in 0..simd::LANES {
                let g = gdy[l].to_acc();
                a[l] = a[l] + g;
                b[l] = b[l] + g * (gx[l].to_acc() - m);
            }
        }
        for (l, (&v, &g)) in xt.iter().zip(dyt).enumerate() {
            let g = g.to_acc();
            a[l] = a[l] + g;
            b[l] = b[l] + g * (v.to_acc() - m);
        }
        // Through `black_box`, as the lanes of `simd::MomentsSweep`.
        self.lanes = std::hint::black_box([a, b]);
        self.done = end;
        if end == inner {
            let (s, sx) = (simd::reduce_lanes(a), simd::reduce_lanes(b));
            self.sums = (self.sums.0 + s, self.sums.1 + sx * self.rstd);
            let z = T::Acc::zero();
            (self.lanes, self.run, self.done) = ([[z; simd::LANES]; 2], self.run + 1, 0);
        }
    }

    /// Feeds the rest; the channel's `(Σ dy, Σ dy·x̂)`.
    #[inline(always)]
    fn finish(mut self) -> (T::Acc, T::Acc) {
        while self.run < self.layout.outer {
            self.step();
        }
        self.sums
    }
}

/// Per-channel `(mean, scale, shift)` of [`apply`].
type ChannelParams<'a, A> = (&'a [A], &'a [A], &'a [A]);

/// `y = (x - mean_c) · scale_c + shift_c`, one pass; sizes checked by the
/// caller, `layout` not empty. With `rstd = Some(_)` the statistics are the
/// batch's own, which bounds `|x - mean_c|` by `sqrt(count)/rstd_c`, and each
/// channel that [`Standardize`] accepts is computed in the element type (see
/// [`normalize_run`]); otherwise (eval mode: running statistics say nothing
/// of `x`) every value is computed in `T::Acc` and rounds once.
pub(crate) fn apply<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    (mean, scale, shift): ChannelParams<'_, T::Acc>,
    rstd: Option<&[T::Acc]>,
    y: &mut [T],
) {
    let fast: Vec<Option<Standardize<T>>> = match rstd {
        Some(rstd) => (0..layout.channels).map(|c| Standardize::new(mean[c], rstd[c], scale[c])).collect(),
        None => vec![None; layout.channels],
    };
    let stream = simd::should_stream::<T>(y.len());
    let ChannelLayout { channels, inner, .. } = layout;
    if use_runs(layout) {
        for_each_unit_chunk(x, y, (inner, inner), |first, x, y| {
            simd::vectorized(
                #[inline(always)]
                || {
                    let mut buf = simd::StagingBuffer::<T>::new();
                    for (k, (xr, yr)) in x.chunks_exact(inner).zip(y.chunks_exact_mut(inner)).enumerate() {
                        let c = (first + k) % channels;
                        let params = (mean[c], scale[c], shift[c]);
                        for range in simd::line_chunks(yr) {
                            let (xc, yc) = (&xr[range.clone()], &mut yr[range]);
                            simd::prefetch_ahead(xc);
                            let out = simd::out_chunk(&mut *yc, &mut buf, stream);
                            normalize_run(xc, out, fast[c], params);
                            if stream {
                                simd::stream_copy(yc, &buf[..xc.len()]);
                            }
                        }
                    }
                },
            );
            if stream {
                simd::stream_fence();
            }
        });
        return;
    }
    let cols = channels * inner;
    // Channels-last: the parameters vary along the row, so they are laid out
    // per column; in the element type when every channel is accepted.
    let fast: Option<Vec<Standardize<T>>> = fast.into_iter().collect();
    let fast_cols = fast.as_deref().map(|f| StandardizeColumns::new(&tiled_columns(f, inner)));
    let (cm, cs) = (tiled_columns(mean, inner), tiled_columns(scale, inner));
    let cb = tiled_columns(shift, inner);
    let cb_t: Vec<T> = cb.iter().map(|&b| T::from_acc(b)).collect();
    for_each_unit_chunk(x, y, (cols, cols), |_, x, y| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                for range in simd::line_chunks(y) {
                    let j = range.start % cols;
                    let (xc, yc) = (&x[range.clone()], &mut y[range]);
                    simd::prefetch_ahead(xc);
                    let out = simd::out_chunk(&mut *yc, &mut buf, stream);
                    match &fast_cols {
                        Some(f) => f.apply_shift_from(j, xc, &cb_t[j..], out),
                        None => {
                            let params = cm[j..].iter().zip(&cs[j..]).zip(&cb[j..]);
                            for ((o, &v), ((&m, &s), &b)) in out.iter_mut().zip(xc).zip(params) {
                                *o = T::from_acc(num_traits::Float::mul_add(v.to_acc() - m, s, b));
                            }
                        }
                    }
                    if stream {
                        simd::stream_copy(yc, &buf[..xc.len()]);
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    });
}

/// Per-channel `Σ dy` and `Σ dy · x̂` with `x̂ = (x - mean_c) · rstd_c`, into
/// `sum_dy` and `sum_dy_xhat`; with `eval_dx = Some((dx, k))` also writes the
/// fixed-statistics input gradient `dx = k_c · dy` in the same sweep (the data
/// are read once). Sizes checked by the caller, `layout` not empty.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sums<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    mean: &[T::Acc],
    rstd: &[T::Acc],
    sum_dy: &mut [T::Acc],
    sum_dy_xhat: &mut [T::Acc],
    eval_dx: Option<(&mut [T], &[T::Acc])>,
) {
    let ChannelLayout { outer, channels, inner } = layout;
    let zero = T::Acc::zero();
    let stream = eval_dx.as_ref().is_some_and(|(dx, _)| simd::should_stream::<T>(dx.len()));
    let (dx, k) = match eval_dx {
        Some((dx, k)) => (dx, Some(k)),
        None => (&mut [][..], None),
    };
    if use_runs(layout) {
        // Per run: (Σ dy, Σ dy · x̂), then summed per channel in `o` order.
        let mut per_run = vec![zero; 2 * outer * channels];
        let upt = simd::rows_per_task(inner);
        let task = |first: usize, x: &[T], dy: &[T], dx: &mut [T], part: &mut [T::Acc]| {
            simd::vectorized(
                #[inline(always)]
                || {
                    let mut buf = simd::StagingBuffer::<T>::new();
                    let runs = x.chunks_exact(inner).zip(dy.chunks_exact(inner));
                    for (j, ((xr, dyr), p)) in runs.zip(part.chunks_exact_mut(2)).enumerate() {
                        let c = (first + j) % channels;
                        let (m, r) = (mean[c], rstd[c]);
                        // Σ dy · x̂ = rstd · Σ dy · (x - mean): one multiplication
                        // per run instead of one per value.
                        let (s, sx) = simd::lane_sum2_zip(xr, dyr, |x, dy| (dy, dy * (x - m)));
                        p[0] = s;
                        p[1] = sx * r;
                        if let (Some(k), Some(dxr)) = (k, dx.get_mut(j * inner..(j + 1) * inner)) {
                            scale_into(dxr, dyr, k[c], &mut buf, stream);
                        }
                    }
                },
            );
            if stream {
                simd::stream_fence();
            }
        };
        let len = upt * inner;
        let dx_len = if k.is_some() { len } else { 0 };
        if simd::worth_threads(x.len()) {
            let data = x.par_chunks(len).zip(dy.par_chunks(len)).zip(per_run.par_chunks_mut(2 * upt));
            if k.is_some() {
                data.zip(dx.par_chunks_mut(dx_len))
                    .enumerate()
                    .for_each(|(i, (((x, dy), p), dx))| task(i * upt, x, dy, dx, p));
            } else {
                data.enumerate().for_each(|(i, ((x, dy), p))| task(i * upt, x, dy, &mut [], p));
            }
        } else {
            task(0, x, dy, dx, &mut per_run);
        }
        for (c, (s, sx)) in sum_dy.iter_mut().zip(sum_dy_xhat.iter_mut()).enumerate() {
            let runs = per_run.chunks_exact(2).skip(c).step_by(channels);
            (*s, *sx) = runs.fold((zero, zero), |(a, b), p| (a + p[0], b + p[1]));
        }
        return;
    }
    let cols = channels * inner;
    let cm = per_column(mean, inner);
    let ck = k.map(|k| tiled_columns(k, inner));
    let block_rows = outer.div_ceil(column_blocks::<T::Acc>(outer, cols)).max(1);
    let mut part = vec![zero; outer.div_ceil(block_rows) * 2 * cols];
    let task = |x: &[T], dy: &[T], dx: &mut [T], part: &mut [T::Acc]| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                let (ps, psx) = part.split_at_mut(cols);
                // Chunk by chunk (on the lines of `dx` when it is written): the
                // sums of the rows that end in this chunk, then its `dx`.
                let mut rows_done = 0;
                let chunks = if dx.is_empty() { simd::line_chunks(x) } else { simd::line_chunks(dx) };
                for range in chunks {
                    let (xc, dyc) = (&x[range.clone()], &dy[range.clone()]);
                    simd::prefetch_ahead(xc);
                    simd::prefetch_ahead(dyc);
                    let rows = rows_done * cols..range.end.div_ceil(cols) * cols;
                    rows_done = rows.end / cols;
                    column_grad_sums(&x[rows.clone()], &dy[rows], &cm, ps, psx);
                    let Some((ck, dxc)) = ck.as_ref().zip(dx.get_mut(range.clone())) else {
                        continue;
                    };
                    let (k, out) = (&ck[range.start % cols..], simd::out_chunk(&mut *dxc, &mut buf, stream));
                    for ((o, &g), &k) in out.iter_mut().zip(dyc).zip(k) {
                        *o = T::from_acc(k * g.to_acc());
                    }
                    if stream {
                        simd::stream_copy(dxc, &buf[..xc.len()]);
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    };
    let len = block_rows * cols;
    if simd::worth_threads(x.len()) {
        let data = x.par_chunks(len).zip(dy.par_chunks(len)).zip(part.par_chunks_mut(2 * cols));
        if ck.is_some() {
            data.zip(dx.par_chunks_mut(len)).for_each(|(((x, dy), p), dx)| task(x, dy, dx, p));
        } else {
            data.for_each(|((x, dy), p)| task(x, dy, &mut [], p));
        }
    } else if ck.is_some() {
        let data = x.chunks(len).zip(dy.chunks(len)).zip(part.chunks_mut(2 * cols));
        data.zip(dx.chunks_mut(len)).for_each(|(((x, dy), p), dx)| task(x, dy, dx, p));
    } else {
        let data = x.chunks(len).zip(dy.chunks(len)).zip(part.chunks_mut(2 * cols));
        data.for_each(|((x, dy), p)| task(x, dy, &mut [], p));
    }
    let total = simd::sum_blocks(&mut part, 2 * cols);
    let (ts, tsx) = total.split_at(cols);
    for (c, (s, sx)) in sum_dy.iter_mut().zip(sum_dy_xhat.iter_mut()).enumerate() {
        let range = c * inner..(c + 1) * inner;
        *s = ts[range.clone()].iter().fold(zero, |a, &v| a + v);
        // Σ dy · x̂ = rstd · Σ dy · (x - mean), per channel.
        *sx = rstd[c] * tsx[range].iter().fold(zero, |a, &v| a + v);
    }
}

/// `dx = k · dy` for one run, through the L1 buffer `buf` when streaming.
#[inline(always)]
fn scale_into<T: Float>(dx: &mut [T], dy: &[T], k: T::Acc, buf: &mut [T; simd::CHUNK], stream: bool) {
    for range in simd::line_chunks(dx) {
        let (dxc, dyc) = (&mut dx[range.clone()], &dy[range]);
        simd::prefetch_ahead(dyc);
        let out = simd::out_chunk(&mut *dxc, buf, stream);
        for (o, &g) in out.iter_mut().zip(dyc) {
            *o = T::from_acc(k * g.to_acc());
        }
        if stream {
            simd::stream_copy(dxc, &buf[..dyc.len()]);
        }
    }
}

/// One value of [`train_dx`]: `k · (dy - mean_dy - (x - mean) · slope)` with
/// `coef = [mean, slope, k, mean_dy]`.
#[inline(always)]
fn grad<A: AccFloat>(v: A, g: A, [m, slope, k, md]: [A; 4]) -> A {
    k * num_traits::Float::mul_add(m - v, slope, g - md)
}

/// The training-mode input gradient, elementwise:
/// `dx = k_c · (dy - mean_dy_c - x̂ · mean_dy_xhat_c)`, `x̂ = (x - mean_c) · rstd_c`,
/// computed as `k_c · (dy - mean_dy_c - (x - mean_c) · slope_c)` with
/// `slope_c = rstd_c · mean_dy_xhat_c`, one multiplication and (channels-last)
/// one array of coefficients fewer per value.
/// `coef = [mean, slope, k, mean_dy]` per channel. Sizes checked by the caller,
/// `layout` not empty.
pub(crate) fn train_dx<T: Float>(dy: &[T], x: &[T], layout: ChannelLayout, coef: [&[T::Acc]; 4], dx: &mut [T]) {
    let stream = simd::should_stream::<T>(dx.len());
    let ChannelLayout { channels, inner, .. } = layout;
    if use_runs(layout) {
        let upt = simd::rows_per_task(inner);
        let task = |first: usize, x: &[T], dy: &[T], dx: &mut [T]| {
            simd::vectorized(
                #[inline(always)]
                || {
                    let mut buf = simd::StagingBuffer::<T>::new();
                    let runs = x.chunks_exact(inner).zip(dy.chunks_exact(inner)).zip(dx.chunks_exact_mut(inner));
                    for (j, ((xr, dyr), dxr)) in runs.enumerate() {
                        let c = (first + j) % channels;
                        let p = coef.map(|a| a[c]);
                        for range in simd::line_chunks(dxr) {
                            let (xc, dyc, dxc) = (&xr[range.clone()], &dyr[range.clone()], &mut dxr[range]);
                            simd::prefetch_ahead(xc);
                            simd::prefetch_ahead(dyc);
                            let out = simd::out_chunk(&mut *dxc, &mut buf, stream);
                            for ((o, &v), &g) in out.iter_mut().zip(xc).zip(dyc) {
                                *o = T::from_acc(grad(v.to_acc(), g.to_acc(), p));
                            }
                            if stream {
                                simd::stream_copy(dxc, &buf[..xc.len()]);
                            }
                        }
                    }
                },
            );
            if stream {
                simd::stream_fence();
            }
        };
        let len = upt * inner;
        if simd::worth_threads(x.len()) {
            let data = x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len));
            data.enumerate().for_each(|(i, ((x, dy), dx))| task(i * upt, x, dy, dx));
        } else {
            task(0, x, dy, dx);
        }
        return;
    }
    let cols = channels * inner;
    // One array per coefficient (not an array of tuples), so that each loads
    // as whole vectors (channels-last training backward, in cache, f32, one
    // thread: 1.39 -> 0.67 ns per element).
    let [cm, cs, ck, cmd] = coef.map(|a| tiled_columns(a, inner));
    let task = |x: &[T], dy: &[T], dx: &mut [T]| {
        simd::vectorized(
            #[inline(always)]
            || {
                let mut buf = simd::StagingBuffer::<T>::new();
                for range in simd::line_chunks(dx) {
                    let j = range.start % cols;
                    let (xc, dyc, dxc) = (&x[range.clone()], &dy[range.clone()], &mut dx[range]);
                    simd::prefetch_ahead(xc);
                    simd::prefetch_ahead(dyc);
                    let n = xc.len();
                    let out = simd::out_chunk(&mut *dxc, &mut buf, stream);
                    let (out, dyc) = (&mut out[..n], &dyc[..n]);
                    let (cm, cs, ck, cmd) = (&cm[j..j + n], &cs[j..j + n], &ck[j..j + n], &cmd[j..j + n]);
                    for i in 0..n {
                        let p = [cm[i], cs[i], ck[i], cmd[i]];
                        out[i] = T::from_acc(grad(xc[i].to_acc(), dyc[i].to_acc(), p));
                    }
                    if stream {
                        simd::stream_copy(dxc, &buf[..n]);
                    }
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    };
    let len = simd::rows_per_task(cols) * cols;
    if simd::worth_threads(x.len()) {
        x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len)).for_each(|((x, dy), dx)| task(x, dy, dx));
    } else {
        task(x, dy, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The channel-by-channel training forward against the two passes it
    /// replaces, bit for bit: NCHW shapes (runs of 64 values and more), with
    /// and without the streaming threshold's non-temporal stores, with
    /// constant channels, a large offset and an infinite value.
    #[test]
    fn train_forward_by_channel_gives_the_bits_of_the_two_passes() {
        let shapes: [[usize; 3]; 4] = [[3, 5, 64], [7, 3, 1021], [2, 4, 4099], [9, 64, 7300]];
        for (k, [outer, channels, inner]) in shapes.into_iter().enumerate() {
            let layout = ChannelLayout::of_shape(&[outer, channels, inner], 1).unwrap();
            assert!(channels_fit_in_cache::<f32>(layout));
            let mut x: Vec<f32> = (0..outer * channels * inner)
                .map(|i| ((i * 7919 + k * 13) % 1009) as f32 * 0.01 + if i / inner % channels == 1 { 1e6 } else { 0.0 })
                .collect();
            // Channel 2 constant; in the second shape one value infinite.
            for o in 0..outer {
                x[(o * channels + 2) * inner..][..inner].fill(-3.5);
            }
            if k == 1 {
                x[inner * 4 + 17] = f32::INFINITY;
            }
            let weight: Vec<f64> = (0..channels).map(|c| 1.0 + c as f64 * 0.25).collect();
            let params = |c: usize, m: &Moments<f64>| {
                let rstd = (m.var_biased() + 1e-5).sqrt().recip();
                [m.mean(), rstd, rstd * weight[c], 0.5 - c as f64]
            };
            let mut fused = vec![0f32; x.len()];
            let mut fused_moments = vec![Moments::new(); channels];
            train_forward_by_channel(&x, layout, params, &mut fused, &mut fused_moments);

            let mut moments = vec![Moments::new(); channels];
            channel_moments(&x, layout, &mut moments);
            let p: Vec<[f64; 4]> = moments.iter().enumerate().map(|(c, m)| params(c, m)).collect();
            let column = |i: usize| p.iter().map(|q| q[i]).collect::<Vec<f64>>();
            let (mean, rstd, scale, shift) = (column(0), column(1), column(2), column(3));
            let mut plain = vec![0f32; x.len()];
            apply(&x, layout, (&mean, &scale, &shift), Some(&rstd), &mut plain);

            let bits = |m: &[Moments<f64>]| {
                m.iter().map(|m| (m.count(), m.mean().to_bits(), m.m2().to_bits())).collect::<Vec<_>>()
            };
            assert_eq!(bits(&fused_moments), bits(&moments), "moments of {outer}x{channels}x{inner}");
            let same = fused.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "y of {outer}x{channels}x{inner}");
        }
    }
    /// The channel-by-channel training backward against the two passes it
    /// replaces ([`backward_sums`], then [`train_dx`]), bit for bit, on the
    /// shapes of the forward's test (runs with tails of every length mod 16).
    #[test]
    fn train_backward_by_channel_gives_the_bits_of_the_two_passes() {
        let shapes: [[usize; 3]; 4] = [[3, 5, 64], [7, 3, 1021], [2, 4, 4099], [9, 64, 7300]];
        for (k, [outer, channels, inner]) in shapes.into_iter().enumerate() {
            let layout = ChannelLayout::of_shape(&[outer, channels, inner], 1).unwrap();
            let len = outer * channels * inner;
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919 + k) % 1009) as f32 * 0.01 + 100.0).collect();
            let dy: Vec<f32> = (0..len).map(|i| ((i * 104729 + k) % 997) as f32 * 1e-3 - 0.5).collect();
            let mean: Vec<f64> = (0..channels).map(|c| 105.0 + c as f64 * 0.125).collect();
            let rstd: Vec<f64> = (0..channels).map(|c| 0.3 + c as f64 * 0.01).collect();
            let inv_n = 1.0 / (outer * inner) as f64;
            let coef = |c: usize, s: f64, sx: f64| [mean[c], rstd[c] * (sx * inv_n), rstd[c] * 1.5, s * inv_n];
            let (mut s, mut sx) = (vec![0.0; channels], vec![0.0; channels]);
            let mut fused = vec![0f32; len];
            let mean_rstd = |c: usize| (mean[c], rstd[c]);
            train_backward_by_channel(&dy, &x, layout, mean_rstd, coef, &mut fused, &mut s, &mut sx);

            let (mut s2, mut sx2) = (vec![0.0; channels], vec![0.0; channels]);
            backward_sums(&dy, &x, layout, &mean, &rstd, &mut s2, &mut sx2, None);
            let p: Vec<[f64; 4]> = (0..channels).map(|c| coef(c, s2[c], sx2[c])).collect();
            let column = |i: usize| p.iter().map(|q| q[i]).collect::<Vec<f64>>();
            let (m, slope, kk, md) = (column(0), column(1), column(2), column(3));
            let mut plain = vec![0f32; len];
            train_dx(&dy, &x, layout, [&m, &slope, &kk, &md], &mut plain);

            let bits = |v: &[f64]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&s), bits(&s2), "sum_dy of {outer}x{channels}x{inner}");
            assert_eq!(bits(&sx), bits(&sx2), "sum_dy_xhat of {outer}x{channels}x{inner}");
            let same = fused.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "dx of {outer}x{channels}x{inner}");
        }
    }
}
