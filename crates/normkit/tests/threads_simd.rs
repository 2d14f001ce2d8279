//! The SIMD and threaded LayerNorm/RMSNorm kernels: results bitwise identical
//! with any number of threads, the non-temporal-store path equal to the plain
//! one, and agreement with a plain f64 reference at sizes that cross every lane,
//! chunk and block boundary of the kernels.

use normkit::kernels::{self, Affine, Grads};
use normkit::Float;

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
}

#[test]
fn streamed_outputs_equal_the_plain_ones_row_by_row() {
    // 17 MiB of f32 output: written with non-temporal stores and over threads.
    // Each row's computation does not depend on how it is stored, so the first
    // rows must equal, bit for bit, a run on those rows alone (small: plain
    // stores, one thread).
    let (rows, n) = (4200, 1024);
    let x: Vec<f32> = cast(&values(rows * n, 9).iter().map(|v| 2.0 * v - 1.0).collect::<Vec<_>>());
    let dy: Vec<f32> = cast(&values(rows * n, 10));
    let w: Vec<f32> = cast(&values(n, 11).iter().map(|v| 1.0 + v).collect::<Vec<_>>());
    let b: Vec<f32> = cast(&values(n, 12));
    let big = with_threads(2, || run_all(&x, &dy, &w, &b, n));
    let k = 7;
    let small = run_all(&x[..k * n], &dy[..k * n], &w, &b, n);
    // Row outputs (y, dx, dx_only, rms y, rms dx) and per-row statistics.
    for (out, per_row) in [(0, n), (1, 1), (2, 1), (3, n), (6, n), (7, n), (8, 1), (9, n)] {
        assert!(big[out][..k * per_row] == small[out][..], "output {out} differs when streamed");
    }
}

/// A compensated (Neumaier) sum: the reference's sums must be more accurate
/// than the kernel's for the comparison to mean anything.
fn neumaier(it: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for x in it {
        let t = s + x;
        c += if s.abs() >= x.abs() { (s - t) + x } else { (x - t) + s };
        s = t;
    }
    s + c
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
