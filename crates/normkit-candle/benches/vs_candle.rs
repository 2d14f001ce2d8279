//! LayerNorm and RMSNorm forward on the CPU: candle's fused
//! `candle_nn::ops::layer_norm` / `rms_norm` (forward only: they have no
//! backward) against normkit's, called the way a candle user calls each
//! (`normkit_candle::ops::layer_norm` / `rms_norm`, which allocate a new
//! tensor as candle's do), at `normkit bench`'s row shapes, f32. A third row,
//! `normkit_into`, is normkit's kernel writing into a caller's buffer
//! (`normkit::ops::layer_norm_into` / `rms_norm_into` on plain slices): the
//! difference to the `normkit` row is the cost of allocating the output.
//!
//! ```text
//! cargo bench -p normkit-candle --bench vs_candle
//! ```
//!
//! Inputs rotate among enough tensors that together they exceed 64 MiB (twice
//! the 32 MiB L3 of the machine in the README), so the figures measure memory,
//! not cache. Threads: whatever rayon (normkit) and candle's own pool use by
//! default, i.e. every core; set `RAYON_NUM_THREADS=1` for one thread (candle's
//! CPU kernels use rayon too).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use normkit::ops::LayerNormOutMut;
use normkit::TensorRef;
use std::hint::black_box;

/// `[rows, n]` shapes of `normkit bench`.
const SHAPES: [(usize, usize); 3] = [(8192, 768), (8192, 4096), (256, 65536)];

/// Bytes the rotating inputs must exceed together.
const ROTATE_BYTES: usize = 64 << 20;

fn inputs(rows: usize, n: usize) -> candle_core::Result<(Vec<Tensor>, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let sets = ROTATE_BYTES.div_ceil(rows * n * 4).max(2);
    let xs = (0..sets).map(|_| Tensor::randn(0.5f32, 2.0, (rows, n), &dev)).collect::<candle_core::Result<Vec<_>>>()?;
    let w = Tensor::randn(1.0f32, 0.25, n, &dev)?;
    let b = Tensor::randn(0.0f32, 0.1, n, &dev)?;
    Ok((xs, w, b))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_f32");
    group.sample_size(20);
    for (rows, n) in SHAPES {
        let Ok((xs, w, b)) = inputs(rows, n) else {
            eprintln!("vs_candle: could not make inputs for [{rows}, {n}]");
            continue;
        };
        // Minimal bytes of a forward: x read and y written once.
        group.throughput(Throughput::Bytes((2 * rows * n * 4) as u64));
        let id = format!("{rows}x{n}");
        let mut i = 0;
        let mut next = || {
            i += 1;
            &xs[i % xs.len()]
        };
        group.bench_function(BenchmarkId::new("layer_norm/candle_nn", &id), |bch| {
            bch.iter(|| black_box(candle_nn::ops::layer_norm(next(), &w, &b, 1e-5)))
        });
        group.bench_function(BenchmarkId::new("layer_norm/normkit", &id), |bch| {
            bch.iter(|| black_box(normkit_candle::ops::layer_norm(next(), Some(&w), Some(&b), 1e-5)))
        });
        let mut plain: Vec<(Vec<f32>, Vec<f32>)> = xs
            .iter()
            .filter_map(|x| x.flatten_all().and_then(|f| f.to_vec1::<f32>()).ok())
            .map(|x| (x, vec![0f32; rows * n]))
            .collect();
        let (Ok(wv), Ok(bv)) = (w.to_vec1::<f32>(), b.to_vec1::<f32>()) else { continue };
        let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
        let (shape, ns) = ([rows, n], [n]);
        let mut k = 0;
        group.bench_function(BenchmarkId::new("layer_norm/normkit_into", &id), |bch| {
            bch.iter(|| {
                k += 1;
                let sets = plain.len().max(1);
                let Some((x, y)) = plain.get_mut(k % sets) else { return };
                let (Ok(xt), Ok(wt), Ok(bt)) =
                    (TensorRef::new(&shape, x), TensorRef::new(&ns, &wv), TensorRef::new(&ns, &bv))
                else {
                    return;
                };
                let out = LayerNormOutMut { y, mean: &mut mean, rstd: &mut rstd };
                black_box(normkit::ops::layer_norm_into(xt, &ns, Some(wt), Some(bt), 1e-5, out)).ok();
            })
        });
        group.bench_function(BenchmarkId::new("rms_norm/candle_nn", &id), |bch| {
            bch.iter(|| black_box(candle_nn::ops::rms_norm(next(), &w, 1e-5)))
        });
        group.bench_function(BenchmarkId::new("rms_norm/normkit", &id), |bch| {
            bch.iter(|| black_box(normkit_candle::ops::rms_norm(next(), Some(&w), 1e-5)))
        });
        group.bench_function(BenchmarkId::new("rms_norm/normkit_into", &id), |bch| {
            bch.iter(|| {
                k += 1;
                let sets = plain.len().max(1);
                let Some((x, y)) = plain.get_mut(k % sets) else { return };
                let (Ok(xt), Ok(wt)) = (TensorRef::new(&shape, x), TensorRef::new(&ns, &wv)) else { return };
                black_box(normkit::ops::rms_norm_into(xt, &ns, Some(wt), 1e-5, y, &mut rstd)).ok();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
