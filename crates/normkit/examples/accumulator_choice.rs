//! Measures the choice of accumulator for `f32` data (issue "Core foundation"):
//! the row statistics of LayerNorm computed by the same blocked, shifted,
//! corrected two-pass algorithm as `Moments::from_slice`, once accumulating in
//! `f32` and once in `f64`. Prints the worst relative error of the variance
//! against an exact reference and the time per element, and the same error of
//! the kernels' own row statistics (`kernels::group_norm_stats`, which shares
//! LayerNorm's: a first sweep in `f32` for a centre, then `f64`).
//!
//! Run: `cargo run --release -p normkit --example accumulator_choice`

// The tests' helpers, for their compensated sum.
#[path = "../tests/layers_support/mod.rs"]
mod layers_support;

use std::hint::black_box;
use std::time::Instant;

/// Blocked corrected two-pass statistics of `xs` (shifted by `xs[0]`), with
/// every operation in the accumulator type `A`, returning (mean, M2) in `f64`.
macro_rules! stats_in {
    ($name:ident, $acc:ty) => {
        fn $name(xs: &[f32]) -> (f64, f64) {
            let shift = xs[0] as $acc;
            let (mut n, mut mean, mut m2) = (0.0 as $acc, 0.0 as $acc, 0.0 as $acc);
            for block in xs.chunks(256) {
                let k = block.len() as $acc;
                let m = block.iter().map(|&x| x as $acc - shift).sum::<$acc>() / k;
                let (mut ds, mut dq) = (0.0 as $acc, 0.0 as $acc);
                for &x in block {
                    let d = (x as $acc - shift) - m;
                    ds += d;
                    dq += d * d;
                }
                let (bm, bm2) = (m + ds / k, dq - ds * ds / k);
                let tot = n + k;
                let delta = bm - mean;
                mean += delta * (k / tot);
                m2 += bm2 + delta * delta * (n * (k / tot));
                n = tot;
            }
            ((mean + shift) as f64, m2 as f64)
        }
    };
}
stats_in!(stats_f32, f32);
stats_in!(stats_f64, f64);

/// Reference: two-pass with compensated (Neumaier) sums in f64, accurate to
/// a few ulps of the result, well below the errors measured here.
fn reference(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = layers_support::sum(xs.iter().map(|&x| x as f64)) / n;
    let m2 = layers_support::sum(xs.iter().map(|&x| (x as f64 - mean) * (x as f64 - mean)));
    (mean, m2)
}

/// M2 as the kernels compute it (`group_norm_stats` over one group: the
/// row statistics LayerNorm, GroupNorm and InstanceNorm share).
fn kernel_m2(xs: &[f32]) -> f64 {
    let layout = normkit::kernels::GroupLayout::new(1, 1, xs.len(), 1).expect("a valid layout");
    let stats = normkit::kernels::group_norm_stats(xs, layout, 0.0).expect("valid sizes");
    let rstd = stats[0].1;
    xs.len() as f64 / (rstd * rstd)
}

fn main() {
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    println!("{:>28} {:>8} {:>14} {:>14} {:>14}", "data", "n", "f32 acc err", "f64 acc err", "kernel err");
    for (label, offset, spread) in [
        ("mean 0, spread 1", 0.0, 1.0),
        ("mean 1e3, spread 1", 1e3, 1.0),
        ("mean 1e4, spread 1e-1", 1e4, 0.1),
        ("mean 1e7, spread 3", 1e7, 3.0),
    ] {
        for n in [768usize, 4096, 65536] {
            let mut worst = (0.0f64, 0.0f64, 0.0f64);
            for _ in 0..20 {
                let xs: Vec<f32> = (0..n).map(|_| (offset + spread * uniform()) as f32).collect();
                let (_, r) = reference(&xs);
                let e32 = ((stats_f32(&xs).1 - r) / r).abs();
                let e64 = ((stats_f64(&xs).1 - r) / r).abs();
                let ek = ((kernel_m2(&xs) - r) / r).abs();
                worst = (worst.0.max(e32), worst.1.max(e64), worst.2.max(ek));
            }
            println!("{label:>28} {n:>8} {:>14.2e} {:>14.2e} {:>14.2e}", worst.0, worst.1, worst.2);
        }
    }
    let xs: Vec<f32> = (0..1 << 20).map(|_| uniform() as f32).collect();
    for (name, f) in [("f32", stats_f32 as fn(&[f32]) -> (f64, f64)), ("f64", stats_f64)] {
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            black_box(f(black_box(&xs)));
            times.push(t.elapsed().as_secs_f64() / xs.len() as f64 * 1e9);
        }
        times.sort_by(f64::total_cmp);
        println!("scalar {name} accumulation: {:.3} ns/element (median of 21, 1 Mi elements, in cache)", times[10]);
    }
}
