//! The SIMD and threaded kernels (LayerNorm/RMSNorm, and BatchNorm, GroupNorm
//! and InstanceNorm below): results bitwise identical
//! with any number of threads, the non-temporal-store path equal to the plain
//! one, and agreement with a plain f64 reference at sizes that cross every lane,
//! chunk and block boundary of the kernels.

use normkit::kernels::{self, Affine, Grads};
use normkit::Float;

mod layers_support;
// A compensated (Neumaier) sum: the reference's sums must be more accurate
// than the kernel's for the comparison to mean anything.
use layers_support::sum as neumaier;

/// Deterministic values in [-1, 1) (splitmix64), so that failures reproduce.
fn values(len: usize, seed: u64) -> Vec<f64> {
    (0..len as u64)
        .map(|i| {
            let mut z = (i ^ (seed << 32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

/// Every output of the four kernels on one problem, as bit patterns.
fn run_all<T: Float>(x: &[T], dy: &[T], w: &[T], b: &[T], n: usize) -> Vec<Vec<u64>> {
    let rows = x.len() / n;
    let (mut y, mut mean, mut rstd) = (vec![T::default(); x.len()], vec![T::default(); rows], vec![T::default(); rows]);
    kernels::layer_norm_forward(x, n, Affine::new(w, b), 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
    let (mut dx, mut dw, mut db) = (vec![T::default(); x.len()], vec![T::default(); n], vec![T::default(); n]);
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
    kernels::layer_norm_backward(dy, x, n, &mean, &rstd, Some(w), grads).unwrap();
    // Backward without parameter gradients takes the other split.
    let mut dx_only = vec![T::default(); x.len()];
    let grads = Grads { dx: &mut dx_only, dweight: None, dbias: None };
    kernels::layer_norm_backward(dy, x, n, &mean, &rstd, None, grads).unwrap();
    let (mut ry, mut rrstd) = (vec![T::default(); x.len()], vec![T::default(); rows]);
    kernels::rms_norm_forward(x, n, Some(w), 1e-6, &mut ry, &mut rrstd).unwrap();
    let (mut rdx, mut rdw) = (vec![T::default(); x.len()], vec![T::default(); n]);
    kernels::rms_norm_backward(dy, x, n, &rrstd, Some(w), &mut rdx, Some(&mut rdw)).unwrap();
    [y, mean, rstd, dx, dw, db, dx_only, ry, rrstd, rdx, rdw]
        .iter()
        .map(|v| v.iter().map(|&t| t.to_f64().to_bits()).collect())
        .collect()
}

fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn check_thread_independence<T: Float>(rows: usize, n: usize, seed: u64) {
    let x: Vec<T> = cast(&values(rows * n, seed).iter().map(|v| 3.0 * v + 0.5).collect::<Vec<_>>());
    let dy: Vec<T> = cast(&values(rows * n, seed + 1));
    let w: Vec<T> = cast(&values(n, seed + 2).iter().map(|v| 1.0 + 0.5 * v).collect::<Vec<_>>());
    let b: Vec<T> = cast(&values(n, seed + 3));
    let one = with_threads(1, || run_all(&x, &dy, &w, &b, n));
    for threads in [2, 3, 16] {
        let many = with_threads(threads, || run_all(&x, &dy, &w, &b, n));
        for (k, (a, m)) in one.iter().zip(&many).enumerate() {
            assert!(a == m, "{} [{rows}, {n}] output {k} differs between 1 and {threads} threads", T::NAME);
        }
    }
}

#[test]
fn outputs_are_bitwise_identical_with_1_2_3_and_16_threads() {
    // Large enough to be split over threads (more than 2^16 elements), with
    // rows that do and do not fill whole lanes, chunks and moment blocks.
    check_thread_independence::<f32>(600, 768, 1);
    check_thread_independence::<f64>(600, 768, 2);
    check_thread_independence::<f32>(61, 5003, 3);
    check_thread_independence::<f64>(3, 70_001, 4);
    check_thread_independence::<f32>(70_000, 1, 5);
    // Rows of more than 128 KiB of x and dy: sweep 2 row by row.
    check_thread_independence::<f32>(40, 20_011, 6);
}

#[test]
fn streamed_outputs_equal_the_plain_ones_row_by_row() {
    // 17 MiB of f32 output: written with non-temporal stores and over threads.
    // Each row's computation does not depend on how it is stored, so any run
    // of rows must equal, bit for bit, a run on those rows alone (small: plain
    // stores, one thread). Rows of a prime length start at every offset within
    // a cache line, so the chunks that follow the output's lines differ from
    // row to row, and from the small runs' (other addresses).
    let (rows, n) = (4200, 1021);
    let x: Vec<f32> = cast(&values(rows * n, 9).iter().map(|v| 2.0 * v - 1.0).collect::<Vec<_>>());
    let dy: Vec<f32> = cast(&values(rows * n, 10));
    let w: Vec<f32> = cast(&values(n, 11).iter().map(|v| 1.0 + v).collect::<Vec<_>>());
    let b: Vec<f32> = cast(&values(n, 12));
    let big = with_threads(2, || run_all(&x, &dy, &w, &b, n));
    for (start, end) in [(0, 7), (2000, 2019), (rows - 5, rows)] {
        let small = run_all(&x[start * n..end * n], &dy[start * n..end * n], &w, &b, n);
        // Row outputs (y, dx, dx_only, rms y, rms dx) and per-row statistics.
        for (out, per_row) in [(0, n), (1, 1), (2, 1), (3, n), (6, n), (7, n), (8, 1), (9, n)] {
            let streamed = &big[out][start * per_row..end * per_row];
            assert!(streamed == small[out], "output {out}, rows {start}..{end}, differs when streamed");
        }
    }
}

/// Plain f64 LayerNorm of one row, from the formula (two compensated passes).
fn ref_layer_norm_row(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> (Vec<f64>, f64, f64) {
    let n = x.len() as f64;
    let mean = neumaier(x.iter().copied()) / n;
    let var = neumaier(x.iter().map(|v| (v - mean) * (v - mean))) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    let y = x.iter().zip(w).zip(b).map(|((v, w), b)| (v - mean) * rstd * w + b).collect();
    (y, mean, rstd)
}

#[test]
fn layer_norm_and_rms_norm_match_the_f64_reference_across_boundaries() {
    for (i, n) in [1usize, 2, 15, 16, 17, 255, 256, 257, 2047, 2048, 2049, 4099, 10_007].into_iter().enumerate() {
        let rows = 3;
        let x: Vec<f64> = values(rows * n, 100 + i as u64).iter().map(|v| 1e3 + 5.0 * v).collect();
        let w: Vec<f64> = values(n, 200 + i as u64).iter().map(|v| 1.0 + 0.5 * v).collect();
        let b: Vec<f64> = values(n, 300 + i as u64);
        let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
        kernels::layer_norm_forward(&x, n, Affine::new(&w, &b), 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
        let (mut ry, mut rrstd) = (vec![0.0; x.len()], vec![0.0; rows]);
        kernels::rms_norm_forward(&x, n, Some(&w), 1e-5, &mut ry, &mut rrstd).unwrap();
        for r in 0..rows {
            let xr = &x[r * n..(r + 1) * n];
            let (want_y, want_mean, want_rstd) = ref_layer_norm_row(xr, &w, &b, 1e-5);
            assert!((mean[r] - want_mean).abs() <= 4.0 * f64::EPSILON * 1e3, "n {n}: mean {} vs {want_mean}", mean[r]);
            // rstd is 1/sqrt(var + eps) with var ~ 8 against mean² ~ 1e6: the
            // shifted, corrected two-pass keeps it to a few ulps.
            assert!((rstd[r] / want_rstd - 1.0).abs() <= 1e-12, "n {n}: rstd {} vs {want_rstd}", rstd[r]);
            for (j, (g, e)) in y[r * n..(r + 1) * n].iter().zip(&want_y).enumerate() {
                assert!((g - e).abs() <= 1e-11 * (1.0 + e.abs()), "n {n}: y[{r},{j}] {g} vs {e}");
            }
            let ms = neumaier(xr.iter().map(|v| v * v)) / n as f64;
            let want_rs = 1.0 / (ms + 1e-5).sqrt();
            assert!((rrstd[r] / want_rs - 1.0).abs() <= 1e-13, "n {n}: rms rstd {} vs {want_rs}", rrstd[r]);
            for (j, ((g, v), wj)) in ry[r * n..(r + 1) * n].iter().zip(xr).zip(&w).enumerate() {
                let e = v * want_rs * wj;
                assert!((g - e).abs() <= 1e-13 * (1.0 + e.abs()), "n {n}: rms y[{r},{j}] {g} vs {e}");
            }
        }
    }
}

#[test]
fn parameter_gradients_sum_over_every_block_of_rows() {
    // 300 rows of 2000 f64 split into several fixed blocks (and over threads):
    // dweight and dbias must be the full sums over rows, as in the reference.
    let (rows, n) = (300, 2000);
    let x = values(rows * n, 41);
    let dy = values(rows * n, 42);
    let w: Vec<f64> = values(n, 43).iter().map(|v| 1.0 + 0.5 * v).collect();
    let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
    kernels::layer_norm_forward(&x, n, Affine::new(&w, &w), 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; n], vec![0.0; n]);
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
    with_threads(2, || kernels::layer_norm_backward(&dy, &x, n, &mean, &rstd, Some(&w), grads)).unwrap();
    for j in [0, 1, 999, 1999] {
        let (mut want_dw, mut want_db) = (0.0, 0.0);
        for r in 0..rows {
            want_dw += dy[r * n + j] * (x[r * n + j] - mean[r]) * rstd[r];
            want_db += dy[r * n + j];
        }
        assert!((dw[j] - want_dw).abs() <= 1e-12 * rows as f64, "dweight[{j}] {} vs {want_dw}", dw[j]);
        assert!((db[j] - want_db).abs() <= 1e-12 * rows as f64, "dbias[{j}] {} vs {want_db}", db[j]);
    }
    let mut rdw = vec![0.0; n];
    let mut rdx = vec![0.0; x.len()];
    kernels::rms_norm_backward(&dy, &x, n, &rstd, Some(&w), &mut rdx, Some(&mut rdw)).unwrap();
    for j in [0, 1, 999, 1999] {
        let want: f64 = (0..rows).map(|r| dy[r * n + j] * x[r * n + j] * rstd[r]).sum();
        assert!((rdw[j] - want).abs() <= 1e-12 * rows as f64, "rms dweight[{j}] {} vs {want}", rdw[j]);
    }
}

/// Every output of the BatchNorm (training, eval, folded; forward and
/// backward), GroupNorm and InstanceNorm ops on one `(N, C, *)` input with the
/// channel on `axis`, as bit patterns.
fn run_channel_ops(shape: &[usize], axis: isize, groups: usize, seed: u64) -> Vec<Vec<u64>> {
    use normkit::ops;
    use normkit::Tensor;
    let numel: usize = shape.iter().product();
    let c = shape[if axis < 0 { shape.len() - 1 } else { axis as usize }];
    let t = |v: Vec<f64>, s: &[usize]| Tensor::new(s, cast::<f32>(&v)).unwrap();
    let x = t(values(numel, seed).iter().map(|v| 3.0 * v + 0.5).collect(), shape);
    let dy = t(values(numel, seed + 1), shape);
    let w = t(values(c, seed + 2).iter().map(|v| 1.0 + 0.5 * v).collect(), &[c]);
    let b = t(values(c, seed + 3), &[c]);
    let var = t(values(c, seed + 4).iter().map(|v| 1.5 + v).collect(), &[c]);
    let bits = |v: &[f32]| v.iter().map(|&t| f64::from(t).to_bits()).collect::<Vec<u64>>();
    let mut out = Vec::new();
    let tr = ops::batch_norm_train(x.view(), axis, Some(w.view()), Some(b.view()), 1e-5).unwrap();
    let stats: Vec<u64> = tr.batch_stats.iter().flat_map(|m| [m.mean().to_bits(), m.m2().to_bits()]).collect();
    out.extend([bits(tr.y.data()), bits(tr.save_mean.data()), bits(tr.save_rstd.data()), stats]);
    let g = ops::batch_norm_backward(
        dy.view(),
        x.view(),
        axis,
        tr.save_mean.view(),
        tr.save_rstd.view(),
        Some(w.view()),
        true,
    )
    .unwrap();
    out.extend([bits(g.dx.data()), bits(g.dweight.unwrap().data()), bits(g.dbias.unwrap().data())]);
    let ev = ops::batch_norm_eval(x.view(), axis, b.view(), var.view(), Some(w.view()), Some(b.view()), 1e-5).unwrap();
    out.push(bits(ev.data()));
    let g =
        ops::batch_norm_fixed_backward(dy.view(), x.view(), axis, b.view(), var.view(), Some(w.view()), true).unwrap();
    out.extend([bits(g.dx.data()), bits(g.dweight.unwrap().data()), bits(g.dbias.unwrap().data())]);
    out.push(bits(ops::batch_norm_folded(x.view(), axis, w.view(), b.view()).unwrap().data()));
    if axis == 1 {
        for gn in [groups, c] {
            let f = ops::group_norm(x.view(), gn, Some(w.view()), Some(b.view()), 1e-5).unwrap();
            let saved = (f.mean.view(), f.rstd.view());
            let g = ops::group_norm_backward(dy.view(), x.view(), gn, saved, Some(w.view()), true).unwrap();
            out.extend([bits(f.y.data()), bits(f.mean.data()), bits(f.rstd.data()), bits(g.dx.data())]);
            out.extend([bits(g.dweight.unwrap().data()), bits(g.dbias.unwrap().data())]);
        }
        let f = ops::instance_norm(x.view(), Some(w.view()), Some(b.view()), 1e-5).unwrap();
        out.push(bits(f.y.data()));
    }
    out
}

#[test]
fn channel_and_group_ops_are_bitwise_identical_with_1_2_and_3_threads() {
    // NCHW (runs of 1089 values; BatchNorm training goes channel by channel
    // with 2 and 3 threads and in two passes with 1, so this also checks that
    // both give the same bits), channels-last (one value per run: the column
    // path, several blocks of rows) and a narrow middle axis (runs of 40: the
    // column path with channels spread over several columns); all large
    // enough to be split over threads.
    let cases: [(&[usize], isize, usize); 4] =
        [(&[8, 16, 33, 33], 1, 4), (&[4096, 24], -1, 1), (&[500, 7, 40], 1, 7), (&[64, 47, 47, 3], -1, 1)];
    for (k, (shape, axis, groups)) in cases.into_iter().enumerate() {
        let one = with_threads(1, || run_channel_ops(shape, axis, groups, 50 + k as u64));
        for threads in [2, 3] {
            let many = with_threads(threads, || run_channel_ops(shape, axis, groups, 50 + k as u64));
            for (i, (a, m)) in one.iter().zip(&many).enumerate() {
                assert!(a == m, "{shape:?} axis {axis}: output {i} differs between 1 and {threads} threads");
            }
        }
    }
}

#[test]
fn large_batch_norm_and_group_norm_match_the_f64_reference() {
    // 4.7 M f32 values: outputs written with non-temporal stores, statistics
    // merged over many runs, work split over two threads; NCHW and
    // channels-last. Checked per channel against compensated f64 sums.
    use normkit::ops;
    use normkit::Tensor;
    let (n, c, hw) = (8usize, 64usize, 96 * 96);
    let xs: Vec<f64> = values(n * c * hw, 77).iter().map(|v| 100.0 + 2.0 * v).collect();
    let x = Tensor::new(&[n, c, hw], cast::<f32>(&xs)).unwrap();
    let x64: Vec<f64> = x.data().iter().map(|&v| f64::from(v)).collect();
    let tr = with_threads(2, || ops::batch_norm_train(x.view(), 1, None, None, 1e-5)).unwrap();
    let gn = with_threads(2, || ops::group_norm(x.view(), 32, None, None, 1e-5)).unwrap();
    // The same data channels-last: x_nhwc[o, ch] = x[o / hw, ch, o % hw].
    let nhwc: Vec<f32> = (0..n * hw)
        .flat_map(|o| (0..c).map(move |ch| (o, ch)))
        .map(|(o, ch)| x.data()[(o / hw * c + ch) * hw + o % hw])
        .collect();
    let xl = Tensor::new(&[n * hw, c], nhwc).unwrap();
    let trl = with_threads(2, || ops::batch_norm_train(xl.view(), -1, None, None, 1e-5)).unwrap();
    for ch in [0, 1, 31, 63] {
        let vals = || (0..n).flat_map(|i| x64[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter().copied());
        let mean = neumaier(vals()) / (n * hw) as f64;
        let var = neumaier(vals().map(|v| (v - mean) * (v - mean))) / (n * hw) as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        for out in [&tr, &trl] {
            let m = out.batch_stats[ch];
            assert!((m.mean() - mean).abs() <= 1e-13 * 100.0, "channel {ch}: mean {} vs {mean}", m.mean());
            assert!((m.var_biased() / var - 1.0).abs() <= 1e-12, "channel {ch}: var {} vs {var}", m.var_biased());
        }
        for i in [0, n - 1] {
            for s in [0, 1, hw - 1] {
                let want = (x64[(i * c + ch) * hw + s] - mean) * rstd;
                let got = f64::from(tr.y.data()[(i * c + ch) * hw + s]);
                let got_l = f64::from(trl.y.data()[(i * hw + s) * c + ch]);
                // One f32 rounding of the output, |y| < 2: 2^-23 relative.
                assert!((got - want).abs() <= 2.5e-7, "y[{i},{ch},{s}] {got} vs {want}");
                assert!((got_l - want).abs() <= 2.5e-7, "nhwc y[{i},{s},{ch}] {got_l} vs {want}");
            }
        }
    }
    for gi in [0, 5, n * 32 - 1] {
        let grp = &x64[gi * 2 * hw..(gi + 1) * 2 * hw];
        let mean = neumaier(grp.iter().copied()) / grp.len() as f64;
        let var = neumaier(grp.iter().map(|v| (v - mean) * (v - mean))) / grp.len() as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        assert!((f64::from(gn.mean.data()[gi]) - mean).abs() <= 1e-5, "group {gi} mean");
        assert!((f64::from(gn.rstd.data()[gi]) / rstd - 1.0).abs() <= 2e-7, "group {gi} rstd");
        for s in [0, hw, 2 * hw - 1] {
            let want = (grp[s] - mean) * rstd;
            let got = f64::from(gn.y.data()[gi * 2 * hw + s]);
            assert!((got - want).abs() <= 2.5e-7, "group {gi} y[{s}] {got} vs {want}");
        }
    }
}

/// BatchNorm's elementwise passes over a `[rows, channels, inner]` input, as
/// bit patterns: eval forward, `batch_norm_apply`, the training-mode `dx` from
/// given sums, the fixed-statistics `dx`. Each output value depends only on
/// its own inputs and the per-channel values, so any run of rows computed
/// alone must give the same bits (given the same means of the sums: `rows ·
/// inner` must be a power of two).
fn run_elementwise_channel_ops(x: &[f32], dy: &[f32], channels: usize, inner: usize) -> Vec<Vec<u32>> {
    let rows = x.len() / (channels * inner);
    let layout = kernels::ChannelLayout::of_shape(&[rows, channels, inner], 1).unwrap();
    let per_c =
        |seed: u64, lo: f64| -> Vec<f32> { cast(&values(channels, seed).iter().map(|v| lo + v).collect::<Vec<_>>()) };
    let (mean, rstd, w, b) = (per_c(20, 0.0), per_c(21, 1.5), per_c(22, 1.0), per_c(23, 0.0));
    let wide = |v: &[f32]| v.iter().map(|&t| f64::from(t)).collect::<Vec<f64>>();
    // Sums of `n = rows · inner` values whose means (`sum · (1/n)`, all the
    // training `dx` uses) are the same f32 values for every run of rows: exact
    // when `n` is a power of two.
    let n = (rows * inner) as f64;
    let (sums, sums_x) = (wide(&per_c(24, 0.0)), wide(&per_c(25, 0.0)));
    let (sums, sums_x): (Vec<f64>, Vec<f64>) =
        (sums.iter().map(|s| s * n).collect(), sums_x.iter().map(|s| s * n).collect());
    let mut out = vec![vec![0f32; x.len()]; 4];
    kernels::batch_norm_forward_eval(x, layout, &mean, &rstd, Affine::new(&w, &b), 1e-5, &mut out[0]).unwrap();
    kernels::batch_norm_apply(x, layout, &wide(&mean), &wide(&w), Some(&b), &mut out[1]).unwrap();
    let sums = Some((sums.as_slice(), sums_x.as_slice()));
    kernels::batch_norm_backward_dx(dy, x, layout, &mean, &rstd, Some(&w), sums, &mut out[2]).unwrap();
    let grads = Grads { dx: &mut out[3], dweight: None, dbias: None };
    kernels::batch_norm_backward(dy, x, layout, &mean, &rstd, Some(&w), false, grads).unwrap();
    out.iter().map(|v| v.iter().map(|t| t.to_bits()).collect()).collect()
}

#[test]
fn channels_last_streamed_outputs_equal_the_plain_ones_row_by_row() {
    // More than 16 MiB of f32 output: written with non-temporal stores in
    // chunks that start at any column of a row (rows of 67 and of 13·4 values,
    // not multiples of a cache line), over two threads. A run of rows alone
    // (small: plain stores, one thread) must give the same bits.
    for (channels, inner, rows) in [(67usize, 1usize, 1usize << 16), (13, 4, 1 << 17)] {
        let cols = channels * inner;
        let x: Vec<f32> = cast(&values(rows * cols, 30).iter().map(|v| 2.0 * v + 0.25).collect::<Vec<_>>());
        let dy: Vec<f32> = cast(&values(rows * cols, 31));
        let big = with_threads(2, || run_elementwise_channel_ops(&x, &dy, channels, inner));
        for (start, end) in [(0, 4), (31_000, 31_016), (rows - 8, rows)] {
            let (xs, dys) = (&x[start * cols..end * cols], &dy[start * cols..end * cols]);
            let small = run_elementwise_channel_ops(xs, dys, channels, inner);
            for (k, (b, s)) in big.iter().zip(&small).enumerate() {
                let streamed = &b[start * cols..end * cols];
                assert!(streamed == s.as_slice(), "[{rows},{channels},{inner}] output {k}, rows {start}..{end}");
            }
        }
    }
}

#[test]
fn channels_last_streamed_training_forward_matches_its_statistics() {
    // The training forward's elementwise pass runs in f32 (`Standardize`):
    // every value, streamed from chunks at any column, against the formula in
    // f64 with the statistics it returns, within its error bound
    // (2u·|x̂·w| + u·|b| for the f32 arithmetic and the saved rstd's rounding).
    let (rows, channels) = (65_000usize, 67usize);
    let x: Vec<f32> = cast(&values(rows * channels, 40).iter().map(|v| 50.0 + 3.0 * v).collect::<Vec<_>>());
    let w: Vec<f32> = cast(&values(channels, 41).iter().map(|v| 1.0 + 0.5 * v).collect::<Vec<_>>());
    let b: Vec<f32> = cast(&values(channels, 42));
    let layout = kernels::ChannelLayout::of_shape(&[rows, channels], 1).unwrap();
    let mut y = vec![0f32; x.len()];
    let (mut mean, mut rstd) = (vec![0f32; channels], vec![0f32; channels]);
    let mut moments = vec![normkit::Moments::new(); channels];
    with_threads(2, || {
        let aff = Affine::new(&w, &b);
        kernels::batch_norm_forward_train(&x, layout, aff, 1e-5, &mut y, &mut mean, &mut rstd, &mut moments)
    })
    .unwrap();
    let u = f64::from(f32::EPSILON);
    for (i, (&v, &got)) in x.iter().zip(&y).enumerate() {
        let c = i % channels;
        let m = moments[c].mean();
        let r = 1.0 / (moments[c].var_biased() + 1e-5).sqrt();
        let core = (f64::from(v) - m) * r * f64::from(w[c]);
        let want = core + f64::from(b[c]);
        let tol = 2.0 * u * core.abs() + u * f64::from(b[c]).abs() + u * u * (m * r * f64::from(w[c])).abs();
        assert!((f64::from(got) - want).abs() <= tol, "y[{}, {c}] {got} vs {want}", i / channels);
    }
}
