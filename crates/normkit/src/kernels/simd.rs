//! The machinery the fast LayerNorm/RMSNorm kernels share: runtime SIMD dispatch,
//! fixed-lane reductions, non-temporal stores and a thread-count-independent
//! split of the work.
//!
//! # SIMD, written once
//!
//! Every kernel body is plain Rust over fixed arrays of [`LANES`] accumulators,
//! marked `#[inline(always)]` and run through [`vectorized`], which calls it
//! inside a function compiled for the best instruction set the CPU has (pulp's
//! run-time dispatch: AVX-512 (`x86-v4`), AVX2+FMA (`x86-v3`), NEON on aarch64,
//! or plain scalar code). The compiler vectorizes the lane arrays for that
//! instruction set, widening `f32` to `f64` with one instruction per vector.
//!
//! The lane count is fixed, and fused multiply-adds appear only where the code
//! writes `mul_add` (one rounding on every instruction set; the compiler never
//! fuses on its own), so the order of every floating-point operation is set by
//! this code, not by the instruction set or the number of threads: results are
//! bitwise the same on AVX-512, AVX2 and scalar code, and with 1, 2 or 16
//! threads.
//!
//! # Threads
//!
//! Rows are independent, so forward passes and `dx` split rows into tasks of
//! about [`TASK_ELEMS`] elements, a size that depends on the shape only. The
//! parameter gradients (`dweight`, `dbias`) are sums over rows: each of
//! [`param_blocks`] fixed blocks of rows sums its rows in order into its own
//! partial, and the partials are then added in block order. Neither split looks
//! at the thread count.

use crate::float::{AccFloat, Float};
#[cfg(doc)]
use crate::moments::BLOCK;
use crate::moments::{corrected_m2, Moments};
use num_traits::Zero as _;

/// Accumulator lanes of every reduction: 16 `f64` lanes fill two AVX-512
/// registers (four AVX2 registers), enough independent additions to hide the
/// adder's latency.
pub(crate) const LANES: usize = 16;

/// Elements per chunk of a row in the elementwise passes: a chunk of `x`, `dy`
/// and the output stays in L1 while all the work on it is done.
pub(crate) const CHUNK: usize = 256;

/// Elements of work per rayon task (rows are grouped until a task holds about
/// this many): large enough that scheduling costs nothing measurable, small
/// enough to balance two to sixteen threads on the benchmark shapes.
pub(crate) const TASK_ELEMS: usize = 1 << 15;

/// Outputs of at least this many bytes are written with non-temporal stores.
/// Below it the output probably stays in cache for whatever reads it next, and
/// bypassing the cache would hurt that reader; above it (half the 32 MiB L3 of
/// the machines we measure on) the output cannot stay in cache anyway, and a
/// non-temporal store saves the read-for-ownership of each output line, a third
/// of the traffic of a forward pass.
pub(crate) const STREAM_MIN_BYTES: usize = 16 << 20;

/// Upper bound on the bytes of per-block `dweight`/`dbias` partials a backward
/// pass allocates; see [`param_blocks`].
const PARTIALS_MAX_BYTES: usize = 8 << 20;

/// Most blocks of rows the parameter gradients are split into.
const MAX_PARAM_BLOCKS: usize = 64;

/// Runs `f` compiled for the best instruction set this CPU has (see the module
/// docs). `f` and everything it calls on the hot path must be
/// `#[inline(always)]` so that it is compiled inside the dispatched function.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(Inline(f))
}

struct Inline<F>(F);

impl<R, F: FnOnce() -> R> pulp::WithSimd for Inline<F> {
    type Output = R;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> R {
        (self.0)()
    }
}

/// How far ahead of a sweep from memory [`prefetch_ahead`] asks for data.
const PREFETCH_AHEAD: usize = 4096;

/// Asks the CPU to bring into L1 the cache lines [`PREFETCH_AHEAD`] bytes past
/// those of `values`, which a pass reading memory once will read soon (the
/// values after a row are, in every caller, the next row's). A hint only.
/// The sweeps call it per group of [`LANES`] values, the elementwise passes
/// per chunk.
///
/// The hardware prefetcher alone keeps too few lines in flight for one core
/// once the sweep's arithmetic fills the reorder buffer: the statistics sweep
/// of RMSNorm (`f32` widened to `f64`) read memory at 14.3 GB/s with a 1 KiB
/// staging buffer, 17.2 GB/s with this (`y = a·x + b` after a sum of squares,
/// rows of 4096 `f32`, 256 MiB, one thread, Xeon of 2026-12-02; 16.5 at 1 KiB
/// ahead, 16.8 at 16 KiB).
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(values: &[T]) {
    // `wrapping_add` computes the address without claiming it is in bounds.
    let p = values.as_ptr().cast::<u8>().wrapping_add(PREFETCH_AHEAD);
    for off in (0..std::mem::size_of_val(values)).step_by(LINE) {
        prefetch(p.wrapping_add(off));
    }
}

/// Adds the lanes in a fixed pairwise tree: `(l, l+8)`, then `(l, l+4)`, ...
#[inline(always)]
pub(crate) fn reduce_lanes<A: Copy + std::ops::Add<Output = A>>(mut acc: [A; LANES]) -> A {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] = acc[l] + acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `xs` as whole groups of [`LANES`] values (as arrays, so that the compiler
/// sees [`LANES`] independent operations per group) and the remainder.
#[inline(always)]
fn lane_groups<T>(xs: &[T]) -> (impl Iterator<Item = &[T; LANES]>, &[T]) {
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    (chunks.filter_map(|c| <&[T; LANES]>::try_from(c).ok()), tail)
}

/// `(Σ_i f(x_i, y_i).0, Σ_i f(x_i, y_i).1)` over two slices of equal length,
/// element `i` in lane `i mod LANES`, each group of [`LANES`] added as two halves of
/// eight lanes straight from registers, as [`lane_sum2_zip3`]. Measured in
/// cache (f32, one thread, best of 600 calls) against the earlier version that
/// went through L1 arrays: BatchNorm training backward 0.80 -> 0.57 ns per
/// element, GroupNorm backward 0.73 -> 0.54, BatchNorm eval backward 0.64 -> 0.38.
#[inline(always)]
pub(crate) fn lane_sum2_zip<T: Float>(
    xs: &[T],
    ys: &[T],
    f: impl Fn(T::Acc, T::Acc) -> (T::Acc, T::Acc),
) -> (T::Acc, T::Acc) {
    const HALF: usize = LANES / 2;
    let z = T::Acc::zero();
    let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = ([z; HALF], [z; HALF], [z; HALF], [z; HALF]);
    let ((xg, xt), (yg, yt)) = (lane_groups(xs), lane_groups(ys));
    for (cx, cy) in xg.zip(yg) {
        prefetch_ahead(&cx[..]);
        prefetch_ahead(&cy[..]);
        for l in 0..HALF {
            let (p, q) = f(cx[l].to_acc(), cy[l].to_acc());
            a_lo[l] = a_lo[l] + p;
            b_lo[l] = b_lo[l] + q;
        }
        for l in 0..HALF {
            let (p, q) = f(cx[HALF + l].to_acc(), cy[HALF + l].to_acc());
            a_hi[l] = a_hi[l] + p;
            b_hi[l] = b_hi[l] + q;
        }
    }
    let mut a0: [T::Acc; LANES] = std::array::from_fn(|l| if l < HALF { a_lo[l] } else { a_hi[l - HALF] });
    let mut a1: [T::Acc; LANES] = std::array::from_fn(|l| if l < HALF { b_lo[l] } else { b_hi[l - HALF] });
    for (l, (&x, &y)) in xt.iter().zip(yt).enumerate().take(LANES) {
        let (v0, v1) = f(x.to_acc(), y.to_acc());
        a0[l] = a0[l] + v0;
        a1[l] = a1[l] + v1;
    }
    (reduce_lanes(a0), reduce_lanes(a1))
}

/// `(Σ_i f(x_i, y_i, z_i).0, Σ_i f(x_i, y_i, z_i).1)` over three slices of equal
/// length, element `i` in lane `i mod LANES`, each group of [`LANES`] added as two
/// halves of eight lanes straight from registers (no L1 round trip: stores of
/// 512-bit registers cost two cycles each on Zen 4).
#[inline(always)]
pub(crate) fn lane_sum2_zip3<T: Float>(
    xs: &[T],
    ys: &[T],
    zs: &[T],
    f: impl Fn(T::Acc, T::Acc, T::Acc) -> (T::Acc, T::Acc),
) -> (T::Acc, T::Acc) {
    const HALF: usize = LANES / 2;
    let z = T::Acc::zero();
    let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = ([z; HALF], [z; HALF], [z; HALF], [z; HALF]);
    let ((xg, xt), (yg, yt), (zg, zt)) = (lane_groups(xs), lane_groups(ys), lane_groups(zs));
    for ((cx, cy), cz) in xg.zip(yg).zip(zg) {
        prefetch_ahead(&cx[..]);
        prefetch_ahead(&cy[..]);
        for l in 0..HALF {
            let (p, q) = f(cx[l].to_acc(), cy[l].to_acc(), cz[l].to_acc());
            a_lo[l] = a_lo[l] + p;
            b_lo[l] = b_lo[l] + q;
        }
        for l in 0..HALF {
            let (p, q) = f(cx[HALF + l].to_acc(), cy[HALF + l].to_acc(), cz[HALF + l].to_acc());
            a_hi[l] = a_hi[l] + p;
            b_hi[l] = b_hi[l] + q;
        }
    }
    let mut a0: [T::Acc; LANES] = std::array::from_fn(|l| if l < HALF { a_lo[l] } else { a_hi[l - HALF] });
    let mut a1: [T::Acc; LANES] = std::array::from_fn(|l| if l < HALF { b_lo[l] } else { b_hi[l - HALF] });
    for (l, ((&x, &y), &z)) in xt.iter().zip(yt).zip(zt).enumerate().take(LANES) {
        let (v0, v1) = f(x.to_acc(), y.to_acc(), z.to_acc());
        a0[l] = a0[l] + v0;
        a1[l] = a1[l] + v1;
    }
    (reduce_lanes(a0), reduce_lanes(a1))
}

/// Values per block in [`row_moments`]. [`Moments::from_slice`]'s 256 is too
/// small here: each block ends in lane reductions, divisions and a Chan merge,
/// about 130 cycles of latency, as long as the vectorized sweep over 256
/// values itself; 2048 makes that overhead about a sixth. Larger blocks would
/// loosen the worst case of [`shifted_moments`] (it grows as the square of
/// the block).
pub(crate) const MOMENTS_BLOCK: usize = 2048;

/// The [`Moments`] of a row, shifted by its first value, from blocks of
/// [`MOMENTS_BLOCK`] values each summarised in one sweep about its first value
/// ([`shifted_moments`]) and merged left to right by Chan's formula.
#[inline(always)]
pub(crate) fn row_moments<T: Float>(xs: &[T]) -> Moments<T::Acc> {
    let Some(shift) = xs.first().map(|x| x.to_acc()) else {
        return Moments::new();
    };
    let acc = shifted_moments(xs, shift);
    Moments::from_parts(acc.count(), acc.mean() + shift, acc.m2())
}

/// The statistics sweep of [`row_moments`]: the moments of a row about its
/// first value (add [`first_value`] to the mean), fed a chunk at a time.
#[inline(always)]
pub(crate) fn moments_sweep<T: Float>(row: &[T]) -> MomentsSweep<T::Acc> {
    MomentsSweep::new(first_value(row))
}

/// A row's first value in `T::Acc` (0 for an empty row).
#[inline(always)]
pub(crate) fn first_value<T: Float>(row: &[T]) -> T::Acc {
    row.first().map_or(T::Acc::zero(), |v| v.to_acc())
}

/// The [`Moments`] of `x_i - shift`, as [`row_moments`] computes them. Callers
/// that merge the moments of many rows of one channel shift them all by the
/// same value, so that the merge's mean differences are not rounded at the
/// scale of a large common offset.
///
/// Per block of `k` values, one sweep (from memory):
///
/// ```text
/// c      = x_0                  the block's first value, exact in T::Acc
/// d_i    = x_i - c              in T::Acc
/// mean   = (c - shift) + Σ d_i / k
/// M2     = Σ d_i² - (Σ d_i)² / k
/// ```
///
/// The last line is the corrected two-pass formula, exact for any centre `c`
/// in exact arithmetic; in floating point its relative error is at most about
/// `2⁻⁵³ · (k/16) · (1 + ((c - mean)/σ)²)` (the sums run in 16 lanes). Any one
/// value of a block lies within `σ·sqrt(k-1)` of the block's mean (Samuelson's
/// inequality), so with `c = x_0` the worst case is `2⁻⁵³ · (k/16) · k`, about
/// 3e-11 relative for blocks of 2048, far below what `f32` data resolves;
/// measured errors are near 1e-15 (README "Numerics"). A constant block has
/// `d_i = 0` exactly and so `M2 = 0`.
///
/// Earlier versions swept each block twice: first a sum in `T` (16 `f32` per
/// 512-bit add) for the block's mean as the centre, then the deviations from
/// L1; a better centre, but the row was read from memory by the cheap sweep
/// and the arithmetic all came after it. One sweep measured (kernel_probe, f32,
/// one thread, 2026-12-02): see `docs/performance-history.md`.
#[inline(always)]
pub(crate) fn shifted_moments<T: Float>(xs: &[T], shift: T::Acc) -> Moments<T::Acc> {
    sweep_row(xs, MomentsSweep::new(shift))
}

/// A sweep over one row that computes its statistics, fed the row a chunk at
/// a time: [`CHUNK`] values from the row's start, the last chunk shorter.
/// Fed this way by [`sweep_row`] and by [`SweepAhead`] alike, a sweep gives the
/// same bits either way.
pub(crate) trait RowSweep<T> {
    type Stats;
    /// The row's next chunk.
    fn feed(&mut self, chunk: &[T]);
    /// The statistics of everything fed.
    fn finish(self) -> Self::Stats;
}

/// The statistics of `row` by the sweep `sweep`, in one go.
#[inline(always)]
pub(crate) fn sweep_row<T, S: RowSweep<T>>(row: &[T], mut sweep: S) -> S::Stats {
    for chunk in row.chunks(CHUNK) {
        sweep.feed(chunk);
    }
    sweep.finish()
}

/// The sweep of the *next* row, advanced one chunk at a time between the
/// chunks of the normalizing sweep of this one (software pipelining): reading
/// memory (the next row) and writing it (this row's output) then overlap, as
/// in a copy, where they had alternated row by row.
///
/// Measured on the Xeon of 2026-12-02 (rows of `f32`, a sum of squares in
/// `f64` then `y = a·x + b` through a 1 KiB buffer, 256 MiB, one thread):
/// 17.0 -> 19.0 GB/s at rows of 4096, 14.4 -> 19.4 at 768; interleaving
/// 8 KiB at a time instead of 1 KiB gained nothing (16.5).
pub(crate) struct SweepAhead<'a, T, S> {
    row: &'a [T],
    done: usize,
    sweep: S,
}

impl<'a, T, S: RowSweep<T>> SweepAhead<'a, T, S> {
    #[inline(always)]
    pub(crate) fn new(row: &'a [T], sweep: S) -> Self {
        SweepAhead { row, done: 0, sweep }
    }

    /// Feeds the row's next chunk, if any is left.
    #[inline(always)]
    pub(crate) fn step(&mut self) {
        if self.done < self.row.len() {
            let end = (self.done + CHUNK).min(self.row.len());
            self.sweep.feed(&self.row[self.done..end]);
            self.done = end;
        }
    }

    /// Feeds the rest of the row; its statistics.
    #[inline(always)]
    pub(crate) fn finish(mut self) -> S::Stats {
        while self.done < self.row.len() {
            self.step();
        }
        self.sweep.finish()
    }
}

/// The sweep of [`shifted_moments`] (see there for the arithmetic): blocks of
/// [`MOMENTS_BLOCK`] values, each summed in [`LANES`] lanes about its first
/// value and merged into `acc` when it is complete.
///
/// A chunk's lane groups go in pairs: lane `l` adds `d + d'` and
/// `d·d + d'·d'` (the latter one fused multiply-add) of the two values it
/// holds in a pair, so each accumulator register waits on one addition per 32
/// values rather than one per 16 (an unpaired group and the padded tail add
/// as before). Measured on the AMD EPYC (Zen 5) of 2026-12-04, `f32`, one
/// thread: in cache (`kernel_probe`, `n = 4096`, four alternating runs)
/// LayerNorm forward 0.165-0.171 -> 0.151-0.153 ns per element, GroupNorm
/// forward 0.169-0.175 -> 0.149-0.151, BatchNorm statistics 0.117-0.147 ->
/// 0.108-0.132; from memory (`normkit bench --quick`, `into`, eight
/// alternating rounds) LayerNorm forward 2-4% faster at all three shapes
/// (faster in 6 of 8 rounds each), the other forward passes within 4% either
/// way. Two separate sets of lanes instead (16 more registers of state)
/// made the interleaved LayerNorm and GroupNorm sweeps spill: 0.16 -> 0.24.
pub(crate) struct MomentsSweep<A> {
    shift: A,
    acc: Moments<A>,
    centre: A,
    in_block: usize,
    sum: [A; LANES],
    sum_sq: [A; LANES],
}

impl<A: AccFloat> MomentsSweep<A> {
    #[inline(always)]
    pub(crate) fn new(shift: A) -> Self {
        let z = A::zero();
        MomentsSweep { shift, acc: Moments::new(), centre: z, in_block: 0, sum: [z; LANES], sum_sq: [z; LANES] }
    }

    /// Merges the block summed so far into `acc` and starts the next.
    #[inline(always)]
    fn close_block(&mut self) {
        if self.in_block == 0 {
            return;
        }
        // The lanes pass through `black_box` before their reduction: without
        // it the compiler's straight-line vectorizer paired lane 15 with lane 0
        // (for the reduction tree that follows) and built the whole sweep from
        // 128-bit operations (LayerNorm forward in cache 0.67 ns per element,
        // against 0.52 with it; `kernel_probe`, 2026-12-01).
        let (sum, sum_sq) = std::hint::black_box((self.sum, self.sum_sq));
        let (dev_sum, dev_sq) = (reduce_lanes(sum), reduce_lanes(sum_sq));
        let k = A::from_count(self.in_block as u64);
        let m2 = corrected_m2(dev_sq, dev_sum, k);
        let mean = (self.centre - self.shift) + dev_sum / k;
        self.acc = self.acc.merge(&Moments::from_parts(self.in_block as u64, mean, m2));
        (self.sum, self.sum_sq, self.in_block) = ([A::zero(); LANES], [A::zero(); LANES], 0);
    }
}

impl<T: Float> RowSweep<T> for MomentsSweep<T::Acc> {
    type Stats = Moments<T::Acc>;

    #[inline(always)]
    fn feed(&mut self, chunk: &[T]) {
        let Some(first) = chunk.first() else { return };
        if self.in_block == 0 {
            self.centre = first.to_acc();
        }
        let centre = self.centre;
        let (mut a, mut b) = (self.sum, self.sum_sq);
        let pairs = chunk.chunks_exact(2 * LANES);
        let (single, tail) = lane_groups(pairs.remainder());
        for p in pairs {
            prefetch_ahead(&p[..LANES]);
            prefetch_ahead(&p[LANES..]);
            for l in 0..LANES {
                let (d, d2) = (p[l].to_acc() - centre, p[LANES + l].to_acc() - centre);
                a[l] = a[l] + (d + d2);
                b[l] = b[l] + num_traits::Float::mul_add(d, d, d2 * d2);
            }
        }
        for g in single {
            prefetch_ahead(&g[..]);
            for l in 0..LANES {
                let d = g[l].to_acc() - centre;
                a[l] = a[l] + d;
                b[l] = b[l] + d * d;
            }
        }
        if !tail.is_empty() {
            // The tail as a whole group whose missing values add `+0` exactly
            // (a lane, which starts at `+0`, is never `-0`): the lanes stay in
            // registers, where a loop over the tail alone kept them in memory
            // and the sweep ran on scalars.
            let mut pad = [T::default(); LANES];
            pad[..tail.len()].copy_from_slice(tail);
            for l in 0..LANES {
                let d = if l < tail.len() { pad[l].to_acc() - centre } else { T::Acc::zero() };
                a[l] = a[l] + d;
                b[l] = b[l] + d * d;
            }
        }
        // Through `black_box`: see `close_block`.
        (self.sum, self.sum_sq) = std::hint::black_box((a, b));
        self.in_block += chunk.len();
        // Chunks are CHUNK values from the row's start, and CHUNK divides
        // MOMENTS_BLOCK: a block ends on a chunk's end, a tail only at the
        // row's end.
        if self.in_block >= MOMENTS_BLOCK || !tail.is_empty() {
            self.close_block();
        }
    }

    #[inline(always)]
    fn finish(mut self) -> Moments<T::Acc> {
        self.close_block();
        self.acc
    }
}

/// The sweep of RMSNorm: `Σ x²` in [`LANES`] lanes (element `i` in lane
/// `i mod LANES`), reduced by [`reduce_lanes`].
pub(crate) struct SumSquaresSweep<A>([A; LANES]);

impl<A: AccFloat> SumSquaresSweep<A> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        SumSquaresSweep([A::zero(); LANES])
    }
}

impl<T: Float> RowSweep<T> for SumSquaresSweep<T::Acc> {
    type Stats = T::Acc;

    #[inline(always)]
    fn feed(&mut self, chunk: &[T]) {
        let mut acc = self.0;
        let (groups, tail) = lane_groups(chunk);
        for g in groups {
            prefetch_ahead(&g[..]);
            for l in 0..LANES {
                let x = g[l].to_acc();
                acc[l] = acc[l] + x * x;
            }
        }
        if !tail.is_empty() {
            // The tail as a whole group padded with zeros, which add `+0`
            // exactly (as in `MomentsSweep::feed`).
            let mut pad = [T::default(); LANES];
            pad[..tail.len()].copy_from_slice(tail);
            for l in 0..LANES {
                let x = pad[l].to_acc();
                acc[l] = acc[l] + x * x;
            }
        }
        // Through `black_box`, as the lanes of `MomentsSweep`.
        self.0 = std::hint::black_box(acc);
    }

    #[inline(always)]
    fn finish(self) -> T::Acc {
        reduce_lanes(self.0)
    }
}

/// The L1 buffer a streaming kernel computes each chunk into before copying it
/// out with [`stream_copy`]: 3 KiB past a 4 KiB boundary.
///
/// Where this buffer sat mattered, by up to 2x, for reasons not found (this
/// guest exposes no hardware counters). `examples/stack_probe.rs` calls a
/// kernel on one thread of a rayon pool (whose stack, unlike the main
/// thread's, sits at the same place in every process) at 32 stack depths,
/// 128 bytes apart, with the tensors starting 16 bytes into their pages as
/// large allocations do (one thread, medians of 24 calls, 2026-12-02):
/// - an unaligned buffer: BatchNorm training forward `[32,64,56,56]` 2.6-3.5
///   ms at most depths and 5-7.5 ms in bands about 1 KiB wide in every 4 KiB;
///   LayerNorm forward `[8192,784]` 3.6-6.7 ms depending on the depth;
/// - 4 KiB-aligned at offset 0: BatchNorm fast at every depth, LayerNorm slow
///   at every depth (5.7-6.0 ms);
/// - at offset 2048 or 3072: both fast at every depth (BatchNorm 2.7-3.1,
///   LayerNorm 3.2-3.5).
///
/// With the tensors at other offsets in their pages the fast offsets move
/// (LayerNorm with the tensors 2 KiB further in: 3072 slow, 1024 fast), so
/// this fixes the common case, not the effect. Choosing the offset from the
/// output's address was tried and not kept: in a larger aligned area, at the
/// same page offset as here, LayerNorm was slow at every depth, so the rest of
/// the frame matters too. It is the "per-process effect" of the earlier runs
/// in `docs/performance-history.md`.
#[repr(C, align(4096))]
pub(crate) struct StagingBuffer<T>([u8; STAGING_OFFSET], [T; CHUNK]);

/// Where a staging buffer starts within its 4 KiB (see [`StagingBuffer`]).
const STAGING_OFFSET: usize = 3072;

impl<T: Float> StagingBuffer<T> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        StagingBuffer([0; STAGING_OFFSET], [T::default(); CHUNK])
    }
}

/// Two staging buffers for kernels that compute two rows' chunks at once, at
/// offsets 2048 and 3072 of their 4 KiB for `f32` (the two offsets found fast
/// for [`StagingBuffer`]; for `f64` the second starts a 4 KiB further on).
#[repr(C, align(4096))]
pub(crate) struct StagingPair<T>([u8; 2048], [T; CHUNK], [T; CHUNK]);

impl<T: Float> StagingPair<T> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        StagingPair([0; 2048], [T::default(); CHUNK], [T::default(); CHUNK])
    }

    /// The two buffers.
    #[inline(always)]
    pub(crate) fn split(&mut self) -> (&mut [T; CHUNK], &mut [T; CHUNK]) {
        (&mut self.1, &mut self.2)
    }
}

impl<T> std::ops::Deref for StagingBuffer<T> {
    type Target = [T; CHUNK];
    #[inline(always)]
    fn deref(&self) -> &[T; CHUNK] {
        &self.1
    }
}

impl<T> std::ops::DerefMut for StagingBuffer<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T; CHUNK] {
        &mut self.1
    }
}

/// Where a chunk of an output is computed: `buf` when streaming (then copied
/// out by [`stream_copy`]), else the output chunk `out` itself, whose lines
/// [`PREFETCH_AHEAD`] bytes on are asked for now. An ordinary store to a line
/// not in cache waits for the line to be read; asked for early, the reads of
/// the output overlap those of the input. Measured on the AMD EPYC (Zen 5)
/// of 2026-12-04 (`normkit bench --quick`, `into`: outputs of 6.4 MiB, below
/// [`STREAM_MIN_BYTES`], in caller buffers not in cache; six alternating
/// rounds, medians, `[8,256,28,28]`): one thread GroupNorm forward 0.463 ->
/// 0.380 ms (faster in 6 of 6), backward 0.705 -> 0.640 (6 of 6),
/// InstanceNorm forward 0.411 -> 0.356 (5 of 6), BatchNorm training forward
/// 0.530 -> 0.482 (5 of 6), the other passes within 4% either way; two
/// threads every pass 12-23% faster (GroupNorm forward 0.376 -> 0.298,
/// BatchNorm training backward 0.676 -> 0.521, both 6 of 6).
#[inline(always)]
pub(crate) fn out_chunk<'a, T>(out: &'a mut [T], buf: &'a mut [T; CHUNK], stream: bool) -> &'a mut [T] {
    if stream {
        let len = out.len().min(CHUNK);
        &mut buf[..len]
    } else {
        prefetch_ahead(out);
        out
    }
}

/// Whether an output of `len` elements of `T` is written with non-temporal
/// stores (see [`STREAM_MIN_BYTES`]).
#[inline]
pub(crate) fn should_stream<T>(len: usize) -> bool {
    len.saturating_mul(std::mem::size_of::<T>()) >= STREAM_MIN_BYTES
}

/// Bytes in a cache line.
const LINE: usize = 64;

/// The chunks, as ranges, in which a pass walks `0..out.len()` when it writes
/// `out` through a staging buffer: at most [`CHUNK`] values each, with every
/// boundary between two chunks on a cache-line boundary of `out`. Then
/// [`stream_copy`] writes each line of `out` whole, in one chunk, but for
/// the first and last line of `out` itself.
///
/// Chunks of exactly [`CHUNK`] from the start of a row put every boundary 16
/// bytes into a line for tensors that start 16 bytes into a page (as large
/// allocations do): each such line was then written in two parts, by
/// non-temporal stores some hundred nanoseconds apart. Measured on the Xeon of
/// 2026-12-02 (`y = a·x + b` over 256 MiB through a 1 KiB buffer, one thread):
/// 17.3 GB/s with boundaries 16 bytes into a line, 20.1 with boundaries on lines
/// (writing the split lines with ordinary stores instead: 17.3).
#[inline(always)]
pub(crate) fn line_chunks<T>(out: &[T]) -> impl Iterator<Item = std::ops::Range<usize>> {
    let len = out.len();
    let line = (LINE / std::mem::size_of::<T>().max(1)).max(1);
    // Values before the first line boundary of `out` (0 when it starts on one,
    // or when no boundary can be reached by whole values).
    let lead = out.as_ptr().align_offset(LINE);
    let first = if lead == 0 || lead >= line { CHUNK } else { lead + CHUNK - line };
    let start = (len > 0).then_some(0..first.min(len));
    prefetch_partial_end(out);
    std::iter::successors(start, move |r| (r.end < len).then(|| r.end..(r.end + CHUNK).min(len)))
}

/// Asks for the last cache line of `out` when `out` ends inside it: that line
/// is written with ordinary stores ([`stream_copy`]), which must first read it
/// from memory, and a store waiting for that read holds up the non-temporal
/// stores behind it. Asked for when the pass starts on `out`, the line is in
/// cache by the time it is written. The next row's first line is the same
/// line, written soon after, and so in cache too.
///
/// Measured on the Xeon of 2026-12-02 (LayerNorm forward `[8192,768]`, rows
/// 16 bytes into a line, one thread, `normkit bench --quick`): see
/// `docs/performance-history.md`.
#[inline(always)]
fn prefetch_partial_end<T>(out: &[T]) {
    let end = out.as_ptr_range().end.cast::<u8>();
    if !out.is_empty() && end.align_offset(LINE) != 0 {
        prefetch(end.wrapping_sub(1));
    }
}

/// Asks the CPU to bring the cache line holding `p` into L1 (and the levels
/// below it). A hint only.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no program state, whatever
    // the address. SSE, which it needs, is part of every x86_64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Copies `src` into `dst` (of equal length; a shorter one bounds the copy),
/// every whole cache line of `dst` with non-temporal stores, which write the
/// line to memory without first reading it into the cache; the partial lines
/// at either end with ordinary stores. Call [`stream_fence`] before another
/// thread may read `dst`. On targets without them this is a plain copy.
///
/// The stores are as wide as the CPU has: a 64-byte store writes a line in one
/// instruction. Measured on the Xeon of 2026-12-02 (`y = a·x + b` over 256 MiB
/// through a 1 KiB buffer, lines whole, one thread): 18.1 GB/s with 16-byte
/// stores, 20.6 with 64-byte ones.
#[inline(always)]
pub(crate) fn stream_copy<T: Float>(dst: &mut [T], src: &[T]) {
    let len = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..len], &src[..len]);
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(dst);
        let d = dst.as_mut_ptr().cast::<u8>();
        let s = src.as_ptr().cast::<u8>();
        // Bytes before the first line boundary of `dst`, then whole lines, then
        // the rest.
        let head = d.align_offset(LINE).min(bytes);
        let lines = (bytes - head) / LINE;
        let done = head + lines * LINE;
        // SAFETY: `d` and `s` point to `bytes` bytes of two distinct slices of
        // the same plain-data type (`T: Float` is `f32` or `f64`, no padding,
        // every bit pattern valid), so any byte range of them may be copied.
        // Every access stays within `0..bytes`: `head <= done <= bytes`.
        // `d + head` is line-aligned by the choice of `head`, as
        // `stream_lines` needs.
        //
        // The partial lines are copied only when there are any: a chunk of
        // `line_chunks` has none but at the ends of `dst`, and each
        // `copy_nonoverlapping` of a length unknown here is a call to
        // `memcpy`, two per chunk even for zero bytes.
        unsafe {
            if head > 0 {
                std::ptr::copy_nonoverlapping(s, d, head);
            }
            stream_lines(d.add(head), s.add(head), lines);
            if done < bytes {
                std::ptr::copy_nonoverlapping(s.add(done), d.add(done), bytes - done);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Copies `lines` cache lines from `src` to `dst` with the widest non-temporal
/// stores this CPU has.
///
/// # Safety
/// `dst` is line-aligned; `src` and `dst` are valid for `lines · LINE` bytes
/// and do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stream_lines(dst: *mut u8, src: *const u8, lines: usize) {
    // SAFETY (all three calls): the caller's contract, and each function's
    // instruction set was detected on this CPU (SSE2 is part of every x86_64).
    unsafe {
        if std::arch::is_x86_feature_detected!("avx512f") {
            stream_lines_512(dst, src, lines)
        } else if std::arch::is_x86_feature_detected!("avx") {
            stream_lines_256(dst, src, lines)
        } else {
            stream_lines_128(dst, src, lines)
        }
    }
}

/// [`stream_lines`] with one 64-byte store per line.
///
/// # Safety
/// As [`stream_lines`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn stream_lines_512(dst: *mut u8, src: *const u8, lines: usize) {
    use std::arch::x86_64::{_mm512_loadu_si512, _mm512_stream_si512};
    for i in 0..lines {
        // SAFETY: within the caller's `lines · LINE` bytes; `dst + i·LINE` is
        // 64-byte aligned as the store needs, the load is unaligned.
        unsafe { _mm512_stream_si512(dst.add(i * LINE).cast(), _mm512_loadu_si512(src.add(i * LINE).cast())) }
    }
}

/// [`stream_lines`] with two 32-byte stores per line.
///
/// # Safety
/// As [`stream_lines`], and the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn stream_lines_256(dst: *mut u8, src: *const u8, lines: usize) {
    use std::arch::x86_64::{_mm256_loadu_si256, _mm256_stream_si256};
    for off in (0..lines * LINE).step_by(32) {
        // SAFETY: within the caller's bytes; `dst + off` is 32-byte aligned.
        unsafe { _mm256_stream_si256(dst.add(off).cast(), _mm256_loadu_si256(src.add(off).cast())) }
    }
}

/// [`stream_lines`] with four 16-byte stores per line (SSE2).
///
/// # Safety
/// As [`stream_lines`].
#[cfg(target_arch = "x86_64")]
unsafe fn stream_lines_128(dst: *mut u8, src: *const u8, lines: usize) {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_stream_si128};
    for off in (0..lines * LINE).step_by(16) {
        // SAFETY: within the caller's bytes; `dst + off` is 16-byte aligned.
        unsafe { _mm_stream_si128(dst.add(off).cast(), _mm_loadu_si128(src.add(off).cast())) }
    }
}

/// Orders this thread's earlier non-temporal stores before its later stores, so
/// that a thread that synchronises with it afterwards (rayon's join) sees them.
#[inline]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no operands and no preconditions; SSE is part of
    // every x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

/// Adds the partial sums of consecutive blocks of `len` accumulators
/// (`partials = [block 0 | block 1 | ...]`) elementwise, in block order, into
/// block 0, and returns it. `partials` must hold at least one block.
pub(crate) fn sum_blocks<A: AccFloat>(partials: &mut [A], len: usize) -> &[A] {
    let (first, rest) = partials.split_at_mut(len.min(partials.len()));
    vectorized(
        #[inline(always)]
        || add_blocks(first, rest),
    );
    first
}

#[inline(always)]
fn add_blocks<A: AccFloat>(first: &mut [A], rest: &[A]) {
    for block in rest.chunks(first.len().max(1)) {
        for (a, &b) in first.iter_mut().zip(block) {
            *a = *a + b;
        }
    }
}

/// Rows per forward (or `dx`-only) task for rows of `n` elements: about
/// [`TASK_ELEMS`] elements, at least one row. Depends on `n` only.
pub(crate) fn rows_per_task(n: usize) -> usize {
    TASK_ELEMS.div_ceil(n.max(1)).max(1)
}

/// Rows per task of a forward pass that computes each row's statistics while
/// it normalizes the row before ([`SweepAhead`]): [`rows_per_task`], but at
/// least [`PIPELINE_MIN_ROWS`], since a task's first row has no row before it
/// to overlap with (at rows of 65536 `f32`, [`rows_per_task`] gives one row per
/// task, and nothing overlapped). Depends on `n` only; the outputs do not
/// depend on it at all. Measured (`normkit bench --quick`, `into`, 2026-12-03,
/// a host so loaded that the same row varied by 2x): with two threads
/// LayerNorm forward `[256,65536]` 14.2, 20.4, 10.6, 14.6 -> 9.0, 8.5, 11.5,
/// 11.9 ms and RMSNorm 7.9, 16.0, 8.3, 11.7 -> 7.6, 6.6, 10.9, 6.8 (four
/// alternating pairs); with one thread no change (`kernel_probe`, `MEM=1`,
/// n = 65536, three pairs: 0.69-0.81 against 0.74-0.82 ns per element).
pub(crate) fn pipelined_rows_per_task(n: usize) -> usize {
    rows_per_task(n).max(PIPELINE_MIN_ROWS)
}

/// Fewest rows per task of [`pipelined_rows_per_task`].
const PIPELINE_MIN_ROWS: usize = 8;

/// The number of fixed blocks of rows whose `dweight`/`dbias` partials a
/// backward pass over `[rows, n]` sums separately before adding them in order:
/// as many as [`MAX_PARAM_BLOCKS`] so that up to that many threads have work,
/// each of at least [`rows_per_task`] rows (about [`TASK_ELEMS`] values: fewer
/// would spend more time zeroing and adding partials than summing into them;
/// 16 rows of 4096 as 16 blocks took 1.5 ns per element in cache, as 2 blocks
/// 0.9), and few enough that `partials` arrays of `n` accumulators
/// each stay within [`PARTIALS_MAX_BYTES`]. Depends on the shape only.
pub(crate) fn param_blocks<A>(rows: usize, n: usize, partials: usize) -> usize {
    let per_block = n.saturating_mul(partials.max(1)).saturating_mul(std::mem::size_of::<A>()).max(1);
    let by_work = rows.div_ceil(rows_per_task(n)).max(1);
    (PARTIALS_MAX_BYTES / per_block).clamp(1, MAX_PARAM_BLOCKS).min(by_work)
}

/// Whether a pass over `elems` elements is worth handing to rayon.
pub(crate) fn worth_threads(elems: usize) -> bool {
    elems >= 2 * TASK_ELEMS && rayon::current_num_threads() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_copy_copies_every_offset_and_length() {
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        // Every offset within a cache line, lengths around 16-byte units and lines.
        for start in 0..17 {
            for len in [0, 1, 3, 4, 5, 11, 12, 13, 16, 17, 28, 31, 32, 33, 63, 64, 65, 250, 283] {
                let mut dst = vec![0.0f32; 300];
                stream_copy(&mut dst[start..start + len], &src[..len]);
                stream_fence();
                assert_eq!(&dst[start..start + len], &src[..len]);
                assert!(dst[..start].iter().chain(&dst[start + len..]).all(|&v| v == 0.0));
            }
        }
        let src64: Vec<f64> = (0..37).map(|i| i as f64).collect();
        let mut dst64 = vec![0.0f64; 38];
        stream_copy(&mut dst64[1..], &src64);
        assert_eq!(&dst64[1..], &src64[..]);
    }

    #[test]
    fn line_chunks_cover_the_output_with_boundaries_on_its_lines() {
        let buf = vec![0f32; 2000];
        let buf64 = vec![0f64; 700];
        for start in 0..17 {
            for len in [0, 1, 15, 16, 17, 255, 256, 257, 600, 1021] {
                check_line_chunks(&buf[start..start + len]);
                check_line_chunks(&buf64[start..start + len / 2]);
            }
        }
    }

    fn check_line_chunks<T>(out: &[T]) {
        let ranges: Vec<_> = line_chunks(out).collect();
        let mut next = 0;
        for (i, r) in ranges.iter().enumerate() {
            assert_eq!(r.start, next, "chunks must be consecutive");
            assert!(!r.is_empty() && r.len() <= CHUNK, "chunk {r:?} of {}", out.len());
            if i > 0 {
                assert_eq!(out[r.start..].as_ptr() as usize % LINE, 0, "boundary {} off a line", r.start);
            }
            next = r.end;
        }
        assert_eq!(next, out.len());
    }

    #[test]
    fn lane_sums_match_plain_sums_on_small_integers() {
        // Small integers add exactly in any order, so the lane layout must give
        // the plain sum for every length, including the tails.
        for len in 0..70 {
            let xs: Vec<f64> = (0..len).map(|i| (i % 7) as f64).collect();
            let plain: f64 = xs.iter().sum();
            let plain_sq: f64 = xs.iter().map(|v| v * v).sum();
            assert_eq!(sweep_row(&xs, SumSquaresSweep::new()), plain_sq);
            let m = sweep_row(&xs, MomentsSweep::new(0.0));
            if len > 0 {
                let mean = plain / len as f64;
                assert!((m.mean() - mean).abs() <= 1e-15 * mean, "len {len}: mean {} vs {mean}", m.mean());
                let dev: f64 = xs.iter().map(|v| (v - mean).powi(2)).sum();
                assert!((m.m2() - dev).abs() <= 1e-12 * dev.max(1.0), "len {len}: m2 {} vs {dev}", m.m2());
            }
            let (a, b) = lane_sum2_zip(&xs, &xs, |x, y| (x * y, x + y));
            assert_eq!((a, b), (xs.iter().map(|v| v * v).sum(), 2.0 * plain));
        }
    }

    #[test]
    fn splits_depend_on_the_shape_only() {
        assert_eq!(rows_per_task(768), 43);
        assert_eq!(rows_per_task(1 << 20), 1);
        assert_eq!(param_blocks::<f64>(8192, 768, 2), 64);
        assert_eq!(param_blocks::<f64>(256, 65536, 2), 8);
        assert_eq!(param_blocks::<f64>(3, 5, 2), 1);
        assert_eq!(param_blocks::<f64>(16, 4096, 2), 2);
        assert_eq!(param_blocks::<f64>(0, 5, 0), 1);
    }
}
