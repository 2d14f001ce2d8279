//! The backward pass of LayerNorm and RMSNorm, one kernel for both: RMSNorm's
//! is LayerNorm's with the mean taken as zero and no `mean(g)` term.
//!
//! With `x̂ = (x − mean) · rstd` (`mean = 0` for RMSNorm) and `g = dy · weight`
//! per row of `n`:
//!
//! ```text
//! dx_j      = rstd · (g_j − mean_k(g_k) − x̂_j · mean_k(g_k x̂_k))   (no mean_k(g_k) for RMSNorm)
//! dweight_j = Σ_rows dy_j · x̂_j
//! dbias_j   = Σ_rows dy_j
//! ```
//!
//! Each row takes two sweeps: the first reads `(x, dy)` from memory and sums
//! `g` and `g·x̂`; the second, over the same row in cache, writes `dx` and adds
//! the row's `dweight`/`dbias` terms into the partials of its fixed block of
//! rows. Rows go in groups that fit in L2, and the second sweep runs chunk by
//! chunk over the whole group, so that a chunk's partials stay in L1 while the
//! group's rows add to them, two rows at a time ([`narrow_pair_chunk`]);
//! sweep 1 of a group runs before its sweep 2 (see
//! `backward_rows` for why not interleaved). Rows too wide for a group to fit
//! in L2 take sweep 2 row by row instead, their parameter terms summed in
//! row-long arrays, with sweep 1 of the next row interleaved chunk by chunk
//! ([`CoefAhead`], [`backward_wide_rows`]). Blocks
//! are fixed by the shape and their partials added in block order: results
//! are bitwise identical with any number of threads.
//!
//! # Arithmetic, and its error bound
//!
//! A row whose statistics the element type can carry ([`Standardize::new`]
//! accepts them; otherwise the row takes the wide path below) is computed in
//! the element type `T`, with `u = T::EPSILON` (a rounding errs by at most
//! `u/2` of its result):
//! - sweep 1 sums `g` and `g·x̂` in [`LANES`] lanes of `T`, each lane over the
//!   16 values it meets in a chunk of [`CHUNK`], then widens each lane's chunk
//!   sum to `T::Acc`: `|err Σg| ≤ 8u·Σ|g|` and
//!   `|err Σg·x̂| ≤ 10u·Σ|g·x̂| + u²/4·|mean|·rstd·Σ|g|`;
//! - sweep 2 computes `dx = (x̂·(−mean(g·x̂)) + (g − mean(g))) · rstd` with one
//!   fused multiply-add, `x̂` by [`Standardize`]; all told
//!   `|dx − dx_exact| ≤ u·|dx| + u·rstd·(2|g| + 10·mean|g| + 13|x̂|·mean|g·x̂|)`
//!   plus `u²/4·|mean|·rstd²·(mean|g·x̂| + 2|x̂|·mean|g|)`, terms proportional to
//!   the row's gradient and never to its offset;
//! - a group's (at most [`MAX_GROUP`] rows) `dweight`/`dbias` terms add in `T`,
//!   then into the block's partials in `T::Acc`:
//!   `|err dweight| ≤ u/2·|dweight| + 10u·Σ_rows|dy·x̂| + u²/4·Σ_rows|dy|·|mean|·rstd`,
//!   `|err dbias| ≤ u/2·|dbias| + 8u·Σ_rows|dy|`: the error of a sum of at most
//!   16 terms, whatever the number of rows (PyTorch sums every row in `f32`).
//!
//! `tests/row_norms.rs` checks these bounds against an `f64` reference. A row
//! whose statistics `Standardize` refuses, or whose means of `g` overflow `T`,
//! is computed in `T::Acc` and each `dx` rounded once, its parameter terms
//! added straight into the `T::Acc` partials.
//!
//! Measured (`kernel_probe`, `f32`, one thread, `n = 4096`): computing in `f32`
//! rather than `f64` with one rounding, 0.82-0.90 -> 0.45-0.6 ns per element in
//! cache; see `backward_group` for the grouping and `backward_rows` for the
//! order of the sweeps.

use super::simd::{self, CHUNK, LANES};
use super::{write_param_grads, Grads, Standardize};
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, Zero as _};
use rayon::prelude::*;

/// The backward pass over `x` and `dy` viewed as `[rows, n]`, given the
/// forward's per-row `rstd` and, for LayerNorm, `mean` (`None`: RMSNorm).
/// Lengths were checked by the caller. Beyond the outputs, this allocates only
/// the parameter partials (at most 8 MiB, plus two rows of `T` per block for
/// rows wider than [`wide_rows`] allows; none when neither `dweight` nor
/// `dbias` is asked for).
pub(super) fn row_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    n: usize,
    mean: Option<&[T]>,
    rstd: &[T],
    weight: Option<&[T]>,
    grads: Grads<'_, T>,
) {
    let rows = rstd.len();
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

    let task = |(((x, dy), dx), ((rs, i), part)): BlockRefs<'_, T>| {
        let (dw, db) = part.split_at_mut(if want_dw { n } else { 0 });
        let (dw, db) = (want_dw.then_some(dw), want_db.then_some(db));
        let mean = mean.map(|m| &m[i * block_rows..i * block_rows + rs.len()]);
        let block = Block { x, dy, n, mean, rstd: rs, weight };
        simd::vectorized(
            #[inline(always)]
            || {
                if wide_rows::<T>(n) && (want_dw || want_db) {
                    backward_wide_rows(block, dx, dw, db, stream)
                } else {
                    backward_rows(block, dx, dw, db, stream)
                }
            },
        );
        if stream {
            simd::stream_fence();
        }
    };
    let len = block_rows * n;
    if simd::worth_threads(x.len()) {
        let rows_it = x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len));
        let stats_it = rstd.par_chunks(block_rows).zip(0..blocks);
        rows_it.zip(stats_it.zip(partials.par_chunks_mut(part_len))).for_each(task);
    } else {
        let rows_it = x.chunks(len).zip(dy.chunks(len)).zip(dx.chunks_mut(len));
        let stats_it = rstd.chunks(block_rows).zip(0..blocks);
        rows_it.zip(stats_it.zip(partials.chunks_mut(part_len))).for_each(task);
    }

    let total = simd::sum_blocks(&mut partials, part_len);
    let (dw_total, db_total) = total.split_at(if want_dw { n } else { 0 });
    write_param_grads::<T>(dw_total, dweight);
    write_param_grads::<T>(db_total, dbias);
}

/// One block's slices: `((x, dy), dx)` and `((rstd, block index), partials)`.
type BlockRefs<'a, T> = (((&'a [T], &'a [T]), &'a mut [T]), ((&'a [T], usize), &'a mut [<T as Float>::Acc]));

/// The inputs of one block of whole rows.
#[derive(Clone, Copy)]
struct Block<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    n: usize,
    /// `None` for RMSNorm.
    mean: Option<&'a [T]>,
    rstd: &'a [T],
    weight: Option<&'a [T]>,
}

/// What sweep 2 needs of one row.
#[derive(Clone, Copy)]
enum RowCoef<T: Float> {
    /// In the element type: `x̂` by [`Standardize`], and `rstd`, `mean(g)`,
    /// `−mean(g·x̂)` rounded to `T`.
    Narrow { xhat: Standardize<T>, rstd: T, mean_g: T, neg_mean_gx: T },
    /// In `T::Acc`: `mean`, `rstd`, `mean(g)`, `mean(g·x̂)`.
    Wide { mean: T::Acc, rstd: T::Acc, mean_g: T::Acc, mean_gx: T::Acc },
}

/// The backward pass over a block of whole rows, adding each row's parameter
/// gradient terms into the block's partials `dw` and `db`: per group of rows,
/// sweep 1 from memory, then sweep 2 from cache.
///
/// Sweep 1 of the next group used to run interleaved with sweep 2 of this
/// one, a chunk of a row after each chunk of a row ([`CoefAhead`] stepped
/// from sweep 2), so that reading memory and writing `dx` would overlap: on
/// the Xeon of 2026-12-02 LayerNorm `[8192, 4096]` 30.8-31.6 -> 28.8-29.3 ms
/// and `[8192, 768]` 6.2-8.3 -> 5.7-6.9 (`normkit bench --quick`, one thread,
/// four alternating pairs). On the AMD EPYC (Zen 5) of 2026-12-04 it cost
/// more than it saved: without it, `normkit bench --quick --op norm`, `into`,
/// three alternating pairs, ms, one thread: LayerNorm `[8192, 4096]`
/// 18.9-20.2 -> 14.0-16.5, RMSNorm 18.1-18.8 -> 13.9-15.2, `[8192, 768]` and
/// `[256, 65536]` (the wide path, unchanged) within the noise; two threads:
/// LayerNorm `[8192, 4096]` 10.9-11.8 -> 9.3-10.4, RMSNorm 10.3-13.6 ->
/// 9.2-9.6. The same bits either way.
#[inline(always)]
fn backward_rows<T: Float>(
    b: Block<'_, T>,
    dx: &mut [T],
    mut dw: Option<&mut [T::Acc]>,
    mut db: Option<&mut [T::Acc]>,
    stream: bool,
) {
    let n = b.n;
    let mut bufs = simd::StagingPair::<T>::new();
    let ones = [T::from_f64(1.0); CHUNK];
    let group = backward_group::<T>(n);
    let groups = b.x.chunks(group * n).zip(b.dy.chunks(group * n)).zip(dx.chunks_mut(group * n));
    // The group's dweight and dbias terms of one chunk, in T (zero between
    // chunks).
    let (mut sum_dw, mut sum_db) = ([T::default(); CHUNK], [T::default(); CHUNK]);
    for (gi, ((xg, dyg), dxg)) in groups.enumerate() {
        // Sweep 1, from memory: the group's coefficients.
        let coef = CoefAhead::new(b, gi * group, group).finish();
        let narrow = coef.map(narrow_parts);
        let rows_in_group = xg.len() / n;
        // Sweep 2, from cache: dx and the parameter terms, chunk by chunk.
        // Chunks on the cache lines of the group's first `dx` row (of every
        // row when a row is whole lines).
        for range in simd::line_chunks(&dxg[..n]) {
            let w = b.weight.map_or(&ones[..range.len()], |w| &w[range.clone()]);
            // Two narrow rows at a time: their parameter terms go through the
            // sums with one load and one store (`narrow_pair_chunk`).
            let mut i = 0;
            while i < rows_in_group {
                let (x0, dy0) = (&xg[i * n..][range.clone()], &dyg[i * n..][range.clone()]);
                let sums = (&mut sum_dw[..range.len()], &mut sum_db[..range.len()]);
                let (buf, buf2) = bufs.split();
                let next = if i + 1 < rows_in_group { narrow[i + 1] } else { None };
                if let (Some(c0), Some(c1)) = (narrow[i], next) {
                    let (dx0, dx1) = dxg[i * n..(i + 2) * n].split_at_mut(n);
                    let (x1, dy1) = (&xg[(i + 1) * n..][range.clone()], &dyg[(i + 1) * n..][range.clone()]);
                    let rows = ((x0, dy0, &mut dx0[range.clone()]), (x1, dy1, &mut dx1[range.clone()]));
                    sweep2_pair(rows, w, [c0, c1], sums, stream.then_some((buf, buf2)));
                    i += 2;
                } else {
                    let chunk = (x0, dy0, &mut dxg[i * n..][range.clone()]);
                    let params = (w, dw.as_deref_mut(), db.as_deref_mut());
                    sweep2_chunk(chunk, range.clone(), coef[i], sums, params, stream.then_some(buf));
                    i += 1;
                }
            }
            // `dw` and `db` were checked to hold `n` values.
            widen_add_clear(dw.as_deref_mut().map(|dw| &mut dw[range.clone()]), &mut sum_dw[..range.len()]);
            widen_add_clear(db.as_deref_mut().map(|db| &mut db[range.clone()]), &mut sum_db[..range.len()]);
        }
    }
}

/// [`backward_rows`] for rows so wide that a group of them spills from L2
/// ([`wide_rows`]): sweep 2 runs row by row, each row's `dweight`/`dbias`
/// terms added into two row-long sums in `T` (`2n` values, allocated per
/// block) that are widened into the block's partials after every
/// [`MAX_GROUP`] rows (a group's sums in `T`, as in [`backward_rows`], so the
/// error bound of the module docs holds). Sweep 1 of the next row runs
/// interleaved with sweep 2 of this one: L2 holds two rows of `x` and `dy`
/// and the sums, not two groups.
///
/// Measured (`kernel_probe`, `MEM=1`, `f32`, one thread, fastest of 9,
/// 2026-12-03, alternating pairs on a noisy host): against groups of four
/// rows swept chunk-major, `n = 65536` LayerNorm 1.94-2.51 -> 1.47-1.94 ns per
/// element (faster in 5 of 6 pairs), RMSNorm 1.87-2.19 -> 1.72-2.46 (4 of 6),
/// `n = 32768` 1.70-2.00 -> 1.51-1.83 (6 of 6); the same row by row with
/// groups of four rows gained nothing (the `f64` partials, 1 MiB at `n =
/// 65536`, were then read and written every four rows).
#[inline(always)]
fn backward_wide_rows<T: Float>(
    b: Block<'_, T>,
    dx: &mut [T],
    mut dw: Option<&mut [T::Acc]>,
    mut db: Option<&mut [T::Acc]>,
    stream: bool,
) {
    let n = b.n;
    let mut buf = simd::StagingBuffer::<T>::new();
    let ones = [T::from_f64(1.0); CHUNK];
    let rows = b.rstd.len();
    let mut sums = vec![T::default(); 2 * n];
    let (sum_dw, sum_db) = sums.split_at_mut(n);
    let mut coef = CoefAhead::new(b, 0, 1).finish()[0];
    let row_refs = b.x.chunks_exact(n).zip(b.dy.chunks_exact(n)).zip(dx.chunks_exact_mut(n));
    for (i, ((xr, dyr), dxr)) in row_refs.enumerate() {
        let mut ahead = CoefAhead::new(b, i + 1, 1);
        for range in simd::line_chunks(dxr) {
            let w = b.weight.map_or(&ones[..range.len()], |w| &w[range.clone()]);
            let chunk = (&xr[range.clone()], &dyr[range.clone()], &mut dxr[range.clone()]);
            let sums = (&mut sum_dw[range.clone()], &mut sum_db[range.clone()]);
            let params = (w, dw.as_deref_mut(), db.as_deref_mut());
            let staging = stream.then_some(&mut *buf);
            sweep2_chunk(chunk, range.clone(), coef, sums, params, staging);
            ahead.step();
        }
        if (i + 1) % MAX_GROUP == 0 || i + 1 == rows {
            // `dw` and `db` were checked to hold `n` values.
            widen_add_clear(dw.as_deref_mut(), sum_dw);
            widen_add_clear(db.as_deref_mut(), sum_db);
        }
        coef = ahead.finish()[0];
    }
}

/// Sweep 1 over the rows of one group, advanced a chunk of one row at a time
/// (software pipelining, as [`simd::SweepAhead`] in the forward passes): in
/// [`backward_wide_rows`], the row after the one in sweep 2 is read from
/// memory between the chunks of that sweep, so that reading memory and
/// writing `dx` overlap; [`backward_rows`] runs it to the end at once. Each row's
/// sums see the same chunks in the same order as [`narrow_sums`] over the whole
/// row: the same bits. A row that needs the wide path is swept whole, at once.
struct CoefAhead<'a, T: Float> {
    b: Block<'a, T>,
    /// The group's first row and its end, within the block.
    row: usize,
    end: usize,
    /// Values of row `row` fed so far.
    done: usize,
    /// The narrow sums of row `row` (`None` before its first chunk).
    sums: Option<NarrowSums<T>>,
    coef: [RowCoef<T>; MAX_GROUP],
    /// Rows of the group finished.
    finished: usize,
    /// Stands for an absent weight (a product with 1 is exact).
    ones: [T; CHUNK],
}

impl<'a, T: Float> CoefAhead<'a, T> {
    /// The sweep over rows `first..first + group` of the block (fewer at the
    /// block's end, none past it).
    #[inline(always)]
    fn new(b: Block<'a, T>, first: usize, group: usize) -> Self {
        let rows = b.rstd.len();
        let zero = T::Acc::zero();
        let wide = RowCoef::<T>::Wide { mean: zero, rstd: zero, mean_g: zero, mean_gx: zero };
        let (row, end) = (first.min(rows), (first + group).min(rows));
        CoefAhead {
            b,
            row,
            end,
            done: 0,
            sums: None,
            coef: [wide; MAX_GROUP],
            finished: 0,
            ones: [T::from_f64(1.0); CHUNK],
        }
    }

    /// The mean (zero for RMSNorm) and `rstd` of row `row`, in `T::Acc`.
    #[inline(always)]
    fn stats(&self) -> (T::Acc, T::Acc) {
        let mean = self.b.mean.map_or(T::Acc::zero(), |m| m[self.row].to_acc());
        (mean, self.b.rstd[self.row].to_acc())
    }

    /// Feeds the next chunk of the current row, if any row is left.
    #[inline(always)]
    fn step(&mut self) {
        if self.row == self.end {
            return;
        }
        let n = self.b.n;
        let (xr, dyr) = (&self.b.x[self.row * n..][..n], &self.b.dy[self.row * n..][..n]);
        let (mean, rstd) = self.stats();
        let sums = match self.sums.as_mut() {
            Some(s) => s,
            None => match Standardize::<T>::new(mean, rstd, rstd) {
                Some(xhat) => self.sums.insert(NarrowSums::new(xhat)),
                None => {
                    self.end_row(wide_coef(xr, dyr, self.b.weight, mean, rstd, self.b.mean.is_some()));
                    return;
                }
            },
        };
        let c = self.done..(self.done + CHUNK).min(n);
        // The weight was checked to hold `n` values.
        let wc = self.b.weight.map_or(&self.ones[..c.len()], |w| &w[c.clone()]);
        sums.feed(&xr[c.clone()], &dyr[c.clone()], wc);
        self.done = c.end;
        if self.done == n {
            let sums = self.sums.take().expect("the row's sums were started above");
            let centered = self.b.mean.is_some();
            let coef = narrow_coef(sums, n, rstd, centered)
                .unwrap_or_else(|| wide_coef(xr, dyr, self.b.weight, mean, rstd, centered));
            self.end_row(coef);
        }
    }

    /// Stores the current row's coefficients and moves to the next row.
    #[inline(always)]
    fn end_row(&mut self, coef: RowCoef<T>) {
        self.coef[self.finished] = coef;
        (self.finished, self.row, self.done, self.sums) = (self.finished + 1, self.row + 1, 0, None);
    }

    /// Feeds the rest of the group; the coefficients of its rows, in order.
    #[inline(always)]
    fn finish(mut self) -> [RowCoef<T>; MAX_GROUP] {
        while self.row < self.end {
            self.step();
        }
        self.coef
    }
}

/// A row's [`RowCoef::Narrow`] from its finished narrow sums, or `None` when
/// `mean(g)` or `mean(g·x̂)` overflows the element type (see the module docs).
#[inline(always)]
fn narrow_coef<T: Float>(sums: NarrowSums<T>, n: usize, rstd: T::Acc, centered: bool) -> Option<RowCoef<T>> {
    let inv_n = T::Acc::from_count(n as u64).recip();
    let xhat = sums.xhat;
    let (sum_g, sum_gx) = sums.finish();
    let mean_g = if centered { sum_g * inv_n } else { T::Acc::zero() };
    let (mean_g, neg_mean_gx) = (T::from_acc(mean_g), T::from_acc(-(sum_gx * inv_n)));
    (mean_g.is_finite() && neg_mean_gx.is_finite()).then(|| RowCoef::Narrow {
        xhat,
        rstd: T::from_acc(rstd),
        mean_g,
        neg_mean_gx,
    })
}

/// Sweep 1 over one row in `T::Acc`: its [`RowCoef::Wide`], for a row that
/// the element type cannot carry.
#[inline(always)]
fn wide_coef<T: Float>(
    xr: &[T],
    dyr: &[T],
    weight: Option<&[T]>,
    mean: T::Acc,
    rstd: T::Acc,
    centered: bool,
) -> RowCoef<T> {
    let inv_n = T::Acc::from_count(xr.len() as u64).recip();
    let xhat = |x: T::Acc| (x - mean) * rstd;
    let (sum_g, sum_gx) = match weight {
        Some(w) => simd::lane_sum2_zip3(xr, dyr, w, |x, dy, w| {
            let g = w * dy;
            (g, g * xhat(x))
        }),
        None => simd::lane_sum2_zip(xr, dyr, |x, dy| (dy, dy * xhat(x))),
    };
    let mean_g = if centered { sum_g * inv_n } else { T::Acc::zero() };
    RowCoef::Wide { mean, rstd, mean_g, mean_gx: sum_gx * inv_n }
}

/// `(Σ g, Σ g·x̂)` over one row in [`LANES`] lanes of `T`, each lane's sum over a
/// chunk of [`CHUNK`] values widened into `T::Acc` lanes (so a lane sums at most
/// 16 values in `T`), reduced by [`simd::reduce_lanes`]: [`NarrowSums`] fed the
/// row's chunks from its start.
#[inline(always)]
pub(super) fn narrow_sums<T: Float>(
    x: &[T],
    dy: &[T],
    weight: Option<&[T]>,
    ones: &[T; CHUNK],
    xhat: Standardize<T>,
) -> (T::Acc, T::Acc) {
    let mut sums = NarrowSums::new(xhat);
    for (c, (xc, dyc)) in x.chunks(CHUNK).zip(dy.chunks(CHUNK)).enumerate() {
        // The weight was checked to hold `n` values.
        let wc = weight.map_or(&ones[..xc.len()], |w| &w[c * CHUNK..c * CHUNK + xc.len()]);
        sums.feed(xc, dyc, wc);
    }
    sums.finish()
}

/// The sums of [`narrow_sums`], fed a chunk of [`CHUNK`] values at a time.
#[derive(Clone, Copy)]
pub(super) struct NarrowSums<T: Float> {
    xhat: Standardize<T>,
    wide_g: [T::Acc; LANES],
    wide_gx: [T::Acc; LANES],
}

impl<T: Float> NarrowSums<T> {
    #[inline(always)]
    fn new(xhat: Standardize<T>) -> Self {
        NarrowSums { xhat, wide_g: [T::Acc::zero(); LANES], wide_gx: [T::Acc::zero(); LANES] }
    }

    /// One chunk of `x`, `dy` and the weight (ones when absent).
    #[inline(always)]
    fn feed(&mut self, xc: &[T], dyc: &[T], wc: &[T]) {
        let xhat = self.xhat;
        let (mut sum_g, mut sum_gx) = ([T::default(); LANES], [T::default(); LANES]);
        let groups = xc.chunks_exact(LANES).zip(dyc.chunks_exact(LANES)).zip(wc.chunks_exact(LANES));
        for ((xs, dys), ws) in groups {
            simd::prefetch_ahead(xs);
            simd::prefetch_ahead(dys);
            for l in 0..LANES {
                let g = ws[l] * dys[l];
                sum_g[l] = sum_g[l] + g;
                sum_gx[l] = g.mul_add(xhat.apply(xs[l]), sum_gx[l]);
            }
        }
        // Through `black_box`, or the compiler's straight-line vectorizer builds
        // the loop above from 128-bit operations (as in `simd::MomentsSweep`).
        let (sum_g, sum_gx) = std::hint::black_box((sum_g, sum_gx));
        let (wide_g, wide_gx) = (&mut self.wide_g, &mut self.wide_gx);
        for l in 0..LANES {
            wide_g[l] = wide_g[l] + sum_g[l].to_acc();
            wide_gx[l] = wide_gx[l] + sum_gx[l].to_acc();
        }
        // The chunk's last values (fewer than LANES), straight into T::Acc.
        let done = xc.len() / LANES * LANES;
        let tail = xc[done..].iter().zip(&dyc[done..]).zip(&wc[done..]);
        for (l, ((&x, &dy), &w)) in tail.enumerate() {
            let g = w * dy;
            wide_g[l] = wide_g[l] + g.to_acc();
            wide_gx[l] = wide_gx[l] + (g * xhat.apply(x)).to_acc();
        }
    }

    #[inline(always)]
    fn finish(self) -> (T::Acc, T::Acc) {
        (simd::reduce_lanes(self.wide_g), simd::reduce_lanes(self.wide_gx))
    }
}

/// Sweep 2 of one row over the chunk `range` of its `(x, dy, dx)`: `dx`,
/// written through the `staging` buffer with non-temporal stores when given,
/// and the row's `dweight`/`dbias` terms, added into the group's `sums` in `T`
/// for a [`RowCoef::Narrow`] row or straight into the partials for a
/// [`RowCoef::Wide`] one.
#[inline(always)]
fn sweep2_chunk<T: Float>(
    (xc, dyc, dxc): (&[T], &[T], &mut [T]),
    range: std::ops::Range<usize>,
    coef: RowCoef<T>,
    sums: (&mut [T], &mut [T]),
    params: ParamRefs<'_, T>,
    staging: Option<&mut [T; CHUNK]>,
) {
    match staging {
        Some(buf) => {
            let out = &mut buf[..xc.len()];
            row_chunk_grads((xc, dyc, &mut *out), range, coef, sums, params);
            simd::stream_copy(dxc, out);
        }
        None => row_chunk_grads((xc, dyc, dxc), range, coef, sums, params),
    }
}

/// [`sweep2_chunk`]'s arithmetic: `dx` into `out` and the parameter terms, by
/// the row's kind.
#[inline(always)]
fn row_chunk_grads<T: Float>(
    (xc, dyc, out): (&[T], &[T], &mut [T]),
    range: std::ops::Range<usize>,
    coef: RowCoef<T>,
    sums: (&mut [T], &mut [T]),
    params: ParamRefs<'_, T>,
) {
    match coef {
        RowCoef::Narrow { xhat, rstd, mean_g, neg_mean_gx } => {
            narrow_chunk(xc, dyc, params.0, out, sums, (xhat, rstd, mean_g, neg_mean_gx));
        }
        RowCoef::Wide { mean, rstd, mean_g, mean_gx } => {
            wide_chunk(xc, dyc, out, range, params, (mean, rstd, mean_g, mean_gx));
        }
    }
}

/// Sweep 2 of a [`RowCoef::Narrow`] row over one chunk, in `T`: `dx` into
/// `out`, and the row's `dweight`/`dbias` terms added into the group's sums.
#[inline(always)]
fn narrow_chunk<T: Float>(
    x: &[T],
    dy: &[T],
    w: &[T],
    out: &mut [T],
    (sum_dw, sum_db): (&mut [T], &mut [T]),
    (xhat, rstd, mean_g, neg_mean_gx): (Standardize<T>, T, T, T),
) {
    let sums = sum_dw.iter_mut().zip(sum_db.iter_mut());
    for ((((o, &x), &dy), &w), (sdw, sdb)) in out.iter_mut().zip(x).zip(dy).zip(w).zip(sums) {
        let xh = xhat.apply(x);
        *o = narrow_dx(xh, w * dy, (rstd, mean_g, neg_mean_gx));
        *sdw = dy.mul_add(xh, *sdw);
        *sdb = *sdb + dy;
    }
}

/// The coefficients of a [`RowCoef::Narrow`] row: `(x̂, rstd, mean(g), −mean(g·x̂))`.
type NarrowCoef<T> = (Standardize<T>, T, T, T);

/// A row's [`NarrowCoef`], if it is narrow.
#[inline(always)]
fn narrow_parts<T: Float>(coef: RowCoef<T>) -> Option<NarrowCoef<T>> {
    match coef {
        RowCoef::Narrow { xhat, rstd, mean_g, neg_mean_gx } => Some((xhat, rstd, mean_g, neg_mean_gx)),
        RowCoef::Wide { .. } => None,
    }
}

/// The same chunk of two rows' `(x, dy, dx)`.
type PairRefs<'a, T> = ((&'a [T], &'a [T], &'a mut [T]), (&'a [T], &'a [T], &'a mut [T]));

/// [`sweep2_chunk`] for two consecutive [`RowCoef::Narrow`] rows of a group
/// over the same chunk, through one staging buffer each when streaming.
#[inline(always)]
fn sweep2_pair<T: Float>(
    ((x0, dy0, dx0), (x1, dy1, dx1)): PairRefs<'_, T>,
    w: &[T],
    coefs: [NarrowCoef<T>; 2],
    sums: (&mut [T], &mut [T]),
    staging: Option<(&mut [T; CHUNK], &mut [T; CHUNK])>,
) {
    match staging {
        Some((buf0, buf1)) => {
            let (out0, out1) = (&mut buf0[..x0.len()], &mut buf1[..x1.len()]);
            narrow_pair_chunk([(x0, dy0, &mut *out0), (x1, dy1, &mut *out1)], w, sums, coefs);
            simd::stream_copy(dx0, out0);
            simd::stream_copy(dx1, out1);
        }
        None => narrow_pair_chunk([(x0, dy0, dx0), (x1, dy1, dx1)], w, sums, coefs),
    }
}

/// [`narrow_chunk`] of two rows in one loop: each row's `dx` as there, and
/// the two rows' parameter terms added into the sums in row order, so the
/// same bits as two calls of [`narrow_chunk`], with the sums loaded and
/// stored once for both.
///
/// Sweep 2 is bound by its stores: per 16 values of a row, `dx` into the
/// staging buffer and out of it, and both sums. A copy of the loop (`f32`,
/// 16 rows of 4096 in cache, one thread, fastest of 500): 0.157-0.213 ->
/// 0.137-0.190 ns per value. `normkit bench --quick`, `into`, one thread,
/// eight alternating rounds on the AMD EPYC (Zen 5) of 2026-12-04, medians:
/// LayerNorm backward `[8192,4096]` 15.2 -> 14.1 ms and `[8192,768]` 2.70 ->
/// 2.50 (faster in 7 of 8 rounds each), RMSNorm 14.7 -> 13.5 (6 of 8) and
/// 2.87 -> 2.79 (5 of 8); two threads within the noise but for LayerNorm
/// `[8192,4096]` 9.87 -> 9.32 (6 of 8).
#[inline(always)]
fn narrow_pair_chunk<T: Float>(
    [(x0, dy0, out0), (x1, dy1, out1)]: [(&[T], &[T], &mut [T]); 2],
    w: &[T],
    (sum_dw, sum_db): (&mut [T], &mut [T]),
    [c0, c1]: [NarrowCoef<T>; 2],
) {
    let n = x0.len();
    let (x0, dy0, out0, x1, dy1, out1) = (&x0[..n], &dy0[..n], &mut out0[..n], &x1[..n], &dy1[..n], &mut out1[..n]);
    let (w, sum_dw, sum_db) = (&w[..n], &mut sum_dw[..n], &mut sum_db[..n]);
    for i in 0..n {
        let (xh0, xh1) = (c0.0.apply(x0[i]), c1.0.apply(x1[i]));
        out0[i] = narrow_dx(xh0, w[i] * dy0[i], (c0.1, c0.2, c0.3));
        out1[i] = narrow_dx(xh1, w[i] * dy1[i], (c1.1, c1.2, c1.3));
        sum_dw[i] = dy1[i].mul_add(xh1, dy0[i].mul_add(xh0, sum_dw[i]));
        sum_db[i] = (sum_db[i] + dy0[i]) + dy1[i];
    }
}

/// One `dx` in `T`, from `x̂` and `g = dy·w` of one value and the row's (or
/// group's) `(rstd, mean(g), −mean(g·x̂))`: `(x̂·(−mean(g·x̂)) + (g − mean(g)))·rstd`,
/// the first step one fused multiply-add (the bound in the module docs).
#[inline(always)]
pub(super) fn narrow_dx<T: Float>(xhat: T, g: T, (rstd, mean_g, neg_mean_gx): (T, T, T)) -> T {
    xhat.mul_add(neg_mean_gx, g - mean_g) * rstd
}

/// The weight of a chunk (ones when absent), and the `dweight`/`dbias`
/// partials of the block, each when present.
type ParamRefs<'a, T> = (&'a [T], Option<&'a mut [<T as Float>::Acc]>, Option<&'a mut [<T as Float>::Acc]>);

/// Sweep 2 of a [`RowCoef::Wide`] row over one chunk, in `T::Acc`: `dx` into
/// `out` (each rounded once), then the row's `dweight`/`dbias` terms added into
/// the partials at `range`.
#[inline(always)]
fn wide_chunk<T: Float>(
    xc: &[T],
    dyc: &[T],
    out: &mut [T],
    range: std::ops::Range<usize>,
    (w, dw, db): ParamRefs<'_, T>,
    (m, r, mean_g, mean_gx): (T::Acc, T::Acc, T::Acc, T::Acc),
) {
    let xhat = |x: T::Acc| (x - m) * r;
    for (((o, &x), &dy), &w) in out.iter_mut().zip(xc).zip(dyc).zip(w) {
        let g = w.to_acc() * dy.to_acc();
        *o = T::from_acc(r * (g - mean_g - xhat(x.to_acc()) * mean_gx));
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

/// `acc_j += sums_j` (widened) where the partials `acc` are wanted, then
/// `sums_j = 0`: a group's sums in `T` moved into the block's partials, ready
/// for the next group, in one pass (a second pass to zero them had cost a
/// sweep over `2n` values in L2 every [`MAX_GROUP`] rows of wide rows).
#[inline(always)]
fn widen_add_clear<T: Float>(acc: Option<&mut [T::Acc]>, sums: &mut [T]) {
    let Some(acc) = acc else {
        sums.fill(T::default());
        return;
    };
    for (a, s) in acc.iter_mut().zip(sums) {
        *a = *a + s.to_acc();
        *s = T::default();
    }
}

/// Whether rows of `n` are so wide that a group of [`MIN_GROUP`] rows of `x`
/// and `dy` (more than 512 KiB), with the next group read while it is swept,
/// would not stay in L2: more than [`WIDE_ROW_BYTES`] of `x` and `dy` per
/// row (`n > 16384` for `f32`). Such rows take [`backward_wide_rows`]. A
/// function of the shape only.
fn wide_rows<T>(n: usize) -> bool {
    2 * n * std::mem::size_of::<T>() > WIDE_ROW_BYTES
}

/// Bytes of `x` and `dy` in one row above which [`wide_rows`] holds.
const WIDE_ROW_BYTES: usize = 128 << 10;

/// Rows of `x` and `dy` (together) that a group of rows in the backward pass
/// may span: well inside a 1 MiB L2, so that sweep 2 finds them there.
const GROUP_BYTES: usize = 256 << 10;

/// Fewest rows in a group of the backward pass, even when they spill from L2
/// into L3: each group reads and writes the block's `T::Acc` partials once.
const MIN_GROUP: usize = 4;

/// Most rows in a group of the backward pass (and so most terms a parameter
/// gradient sums in `T` before widening).
const MAX_GROUP: usize = 16;

/// Rows per group of the backward pass for rows of `n`: as many as fit
/// [`GROUP_BYTES`], [`MIN_GROUP`] to [`MAX_GROUP`]. A function of the shape
/// only, like every split. Rows wider than [`wide_rows`] allows are not
/// grouped this way (see [`backward_wide_rows`]).
///
/// Measured: in cache (`kernel_probe`, fastest / median of 7 runs, in `f64`
/// arithmetic, before the `f32` sweeps), one row at a time against groups:
/// 0.74 / 0.86 -> 0.69 / 0.78 ns per element at `n` = 768, 0.83 / 0.88 ->
/// 0.77 / 0.78 at 4096. At `[256, 65536]` (`normkit bench --quick`, one
/// thread, `f32`, 2026-12-02), where a row alone fills a quarter of L2, groups
/// of one row reached 0.27-0.44 of copy bandwidth, groups of four 0.49-0.72
/// (each row's terms had gone through the 1 MiB of `f64` partials).
fn backward_group<T>(n: usize) -> usize {
    (GROUP_BYTES / (2 * n * std::mem::size_of::<T>()).max(1)).clamp(MIN_GROUP, MAX_GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Two narrow rows through [`narrow_pair_chunk`] give the bits of two
    /// calls of [`narrow_chunk`]: both rows' `dx` and the parameter sums.
    #[test]
    fn narrow_pair_chunk_gives_the_bits_of_two_rows_one_at_a_time() {
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for n in [1, 15, 16, 17, 203, CHUNK] {
            let mut v = |scale: f32, offset: f32| -> Vec<f32> {
                (0..n).map(|_| offset + scale * rng.random_range(-1.0f32..1.0)).collect()
            };
            let (x0, x1, dy0, dy1, w) = (v(2.0, 1e3), v(0.5, -3.0), v(1.0, 0.0), v(1.0, 0.1), v(0.5, 1.0));
            let (sdw, sdb) = (v(1.0, 0.0), v(1.0, 0.0));
            let coef = |mean: f64, rstd: f64, mean_g: f32, neg_mean_gx: f32| {
                let xhat = Standardize::<f32>::new(mean, rstd, rstd).expect("statistics in range");
                (xhat, rstd as f32, mean_g, neg_mean_gx)
            };
            let (c0, c1) = (coef(1000.1, 0.87, 0.03, -0.2), coef(-2.9, 3.4, -0.01, 0.05));

            let (mut one0, mut one1) = (vec![0f32; n], vec![0f32; n]);
            let (mut one_dw, mut one_db) = (sdw.clone(), sdb.clone());
            narrow_chunk(&x0, &dy0, &w, &mut one0, (&mut one_dw, &mut one_db), c0);
            narrow_chunk(&x1, &dy1, &w, &mut one1, (&mut one_dw, &mut one_db), c1);

            let (mut two0, mut two1) = (vec![0f32; n], vec![0f32; n]);
            let (mut two_dw, mut two_db) = (sdw.clone(), sdb.clone());
            let rows = [(&x0[..], &dy0[..], &mut two0[..]), (&x1[..], &dy1[..], &mut two1[..])];
            narrow_pair_chunk(rows, &w, (&mut two_dw, &mut two_db), [c0, c1]);

            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one0), bits(&two0), "dx of the first row, n = {n}, seed {seed}");
            assert_eq!(bits(&one1), bits(&two1), "dx of the second row, n = {n}, seed {seed}");
            assert_eq!(bits(&one_dw), bits(&two_dw), "dweight sums, n = {n}, seed {seed}");
            assert_eq!(bits(&one_db), bits(&two_db), "dbias sums, n = {n}, seed {seed}");
        }
    }
}
