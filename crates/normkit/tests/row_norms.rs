//! LayerNorm and RMSNorm checked against plain f64 references written from the
//! formulas, on random shapes (sizes 1, primes, empty batches), fresh seeds,
//! hostile values, finite differences for every backward, and every error path.

use normkit::kernels::{self, Affine, Grads};
use normkit::{ops, Error, LayerNorm, RmsNorm, Tensor};
use proptest::prelude::*;

mod layers_support;
// Compensated (Neumaier) sum: the reference's sums carry no rounding to speak of.
use layers_support::{assert_scaled_copy, f32_normalize_tol, sum, NormRun, SCALES_AND_EPS};

// ---------------------------------------------------------------- references

struct RefOut {
    y: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
}

/// LayerNorm from the formula, in f64, row by row.
fn ref_layer_norm(x: &[f64], n: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> RefOut {
    let mut out = RefOut { y: vec![], mean: vec![], rstd: vec![] };
    for row in x.chunks(n) {
        let mean = sum(row.iter().copied()) / n as f64;
        // Corrected two-pass: without the second term the mean's rounding δ
        // adds δ² to the variance (3e-9 relative at 1e6 ± 1e-6).
        let dev = sum(row.iter().map(|v| v - mean));
        let var = (sum(row.iter().map(|v| (v - mean) * (v - mean))) - dev * dev / n as f64) / n as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter().enumerate() {
            let wj = w.map_or(1.0, |w| w[j]);
            let bj = b.map_or(0.0, |b| b[j]);
            out.y.push((v - mean) * rstd * wj + bj);
        }
        out.mean.push(mean);
        out.rstd.push(rstd);
    }
    out
}

/// RMSNorm from the formula, in f64.
fn ref_rms_norm(x: &[f64], n: usize, w: Option<&[f64]>, eps: f64) -> RefOut {
    let mut out = RefOut { y: vec![], mean: vec![], rstd: vec![] };
    for row in x.chunks(n) {
        let rstd = 1.0 / (sum(row.iter().map(|v| v * v)) / n as f64 + eps).sqrt();
        for (j, v) in row.iter().enumerate() {
            out.y.push(v * rstd * w.map_or(1.0, |w| w[j]));
        }
        out.rstd.push(rstd);
    }
    out
}

/// Backward references: dx, dweight, dbias of L = Σ y·dy by the formulas
/// (derived independently of the kernels, from the chain rule through mean and
/// variance).
fn ref_layer_norm_backward(
    x: &[f64],
    dy: &[f64],
    n: usize,
    w: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let fwd = ref_layer_norm(x, n, None, None, eps);
    let (mut dx, mut dw, mut db) = (vec![], vec![0.0; n], vec![0.0; n]);
    for (r, (xr, dyr)) in x.chunks(n).zip(dy.chunks(n)).enumerate() {
        let (mean, rstd) = (fwd.mean[r], fwd.rstd[r]);
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
        let g: Vec<f64> = dyr.iter().enumerate().map(|(j, d)| d * w.map_or(1.0, |w| w[j])).collect();
        // dL/dvar and dL/dmean, then dx = g·rstd + dvar·2(x-mean)/n + dmean/n.
        let dvar = sum((0..n).map(|j| g[j] * (xr[j] - mean))) * -0.5 * rstd.powi(3);
        let dmean = -rstd * sum(g.iter().copied()) + dvar * -2.0 * sum(xr.iter().map(|v| v - mean)) / n as f64;
        for j in 0..n {
            dx.push(g[j] * rstd + dvar * 2.0 * (xr[j] - mean) / n as f64 + dmean / n as f64);
            dw[j] += dyr[j] * xhat[j];
            db[j] += dyr[j];
        }
    }
    (dx, dw, db)
}

fn ref_rms_norm_backward(x: &[f64], dy: &[f64], n: usize, w: Option<&[f64]>, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let fwd = ref_rms_norm(x, n, None, eps);
    let (mut dx, mut dw) = (vec![], vec![0.0; n]);
    for (r, (xr, dyr)) in x.chunks(n).zip(dy.chunks(n)).enumerate() {
        let rstd = fwd.rstd[r];
        let g: Vec<f64> = dyr.iter().enumerate().map(|(j, d)| d * w.map_or(1.0, |w| w[j])).collect();
        // d rstd / d x_j = -rstd³ x_j / n
        let gx = sum((0..n).map(|j| g[j] * xr[j]));
        for j in 0..n {
            dx.push(g[j] * rstd - gx * rstd.powi(3) * xr[j] / n as f64);
            dw[j] += dyr[j] * xr[j] * rstd;
        }
    }
    (dx, dw)
}

// ---------------------------------------------------------------- helpers

fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        assert!(ok, "{what}[{i}]: got {g:e}, want {w:e} (atol {atol:e}, rtol {rtol:e})");
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Sizes that exercise 1, primes, a power of two, block boundaries (256) and
/// sizes just past them.
fn sizes() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 5, 7, 13, 31, 64, 97, 255, 256, 257, 1021])
}

fn values(len: usize, scale: f64, offset: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-1.0f64..1.0, len).prop_map(move |v| v.into_iter().map(|x| offset + scale * x).collect())
}

/// A random problem: rows, n, x, dy, weight, bias, eps.
#[derive(Debug, Clone)]
struct Problem {
    rows: usize,
    n: usize,
    x: Vec<f64>,
    dy: Vec<f64>,
    w: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    eps: f64,
}

fn problem() -> impl Strategy<Value = Problem> {
    problem_with_rows(10)
}

/// As [`problem`], with fewer than `max_rows` rows.
fn problem_with_rows(max_rows: usize) -> impl Strategy<Value = Problem> {
    problem_from(max_rows, vec![(1.0, 0.0), (3.0, 5.0), (1e-3, 1e3), (100.0, -20.0)])
}

/// As [`problem`], with rows at offsets up to 1e6 (spread 1e-3 there), for
/// the `f32` error bounds, which hold whatever the offset.
fn problem_far_from_zero() -> impl Strategy<Value = Problem> {
    problem_from(10, vec![(1.0, 0.0), (1e-3, 1e3), (1e-3, 1e6), (0.5, -1e6)])
}

/// Rows of values `offset + scale · u` (`u` in [-1, 1)) for a `(scale,
/// offset)` drawn from `spreads`, with fewer than `max_rows` rows.
fn problem_from(max_rows: usize, spreads: Vec<(f64, f64)>) -> impl Strategy<Value = Problem> {
    (0usize..max_rows, sizes(), prop::sample::select(spreads))
        .prop_flat_map(|(rows, n, (scale, offset))| {
            (
                Just(rows),
                Just(n),
                values(rows * n, scale, offset),
                values(rows * n, 1.0, 0.0),
                prop::option::of(values(n, 1.0, 1.0)),
                prop::option::of(values(n, 1.0, 0.0)),
                prop::sample::select(vec![1e-5, 1e-3, 0.1, 0.0]),
            )
        })
        .prop_map(|(rows, n, x, dy, w, b, eps)| Problem { rows, n, x, dy, w, b, eps })
}

/// Tolerance of an f64 LayerNorm output against the reference: the kernel's
/// sums round differently, so each y may differ by a few eps times the
/// condition of the row, |x|max·rstd (how much a rounding of x moves y).
fn f64_tol(x: &[f64], rstd: f64, n: usize) -> f64 {
    let xmax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    16.0 * (n as f64).sqrt() * f64::EPSILON * (1.0 + xmax * rstd)
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn layer_norm_f64_matches_reference(p in problem()) {
        let shape = [p.rows, p.n];
        let x = Tensor::new(&shape, p.x.clone()).unwrap();
        let w = p.w.as_ref().map(|w| Tensor::new(&[p.n], w.clone()).unwrap());
        let b = p.b.as_ref().map(|b| Tensor::new(&[p.n], b.clone()).unwrap());
        let out = ops::layer_norm(x.view(), &[p.n], w.as_ref().map(Tensor::view), b.as_ref().map(Tensor::view), p.eps).unwrap();
        let want = ref_layer_norm(&p.x, p.n, p.w.as_deref(), p.b.as_deref(), p.eps);
        for r in 0..p.rows {
            let tol = f64_tol(&p.x[r * p.n..(r + 1) * p.n], want.rstd[r], p.n);
            let wmax = 1.0 + p.w.as_ref().map_or(0.0, |w| w.iter().fold(0.0, |m: f64, v| m.max(v.abs())));
            assert_close("y", &out.y.data()[r * p.n..(r + 1) * p.n], &want.y[r * p.n..(r + 1) * p.n], tol * wmax, 0.0);
        }
        // The mean's rounding is relative to the values summed, not to the mean,
        // which may cancel to near zero.
        let xmax = p.x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close("mean", out.mean.data(), &want.mean, 4.0 * f64::EPSILON * xmax, 1e-13);
        assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-9);

        // Backward against the chain-rule reference.
        let dy = Tensor::new(&shape, p.dy.clone()).unwrap();
        let g = ops::layer_norm_backward(dy.view(), x.view(), &[p.n], (out.mean.view(), out.rstd.view()),
            w.as_ref().map(Tensor::view), b.is_some()).unwrap();
        let (dx, dw, db) = ref_layer_norm_backward(&p.x, &p.dy, p.n, p.w.as_deref(), p.eps);
        // Rounding x - mean costs x̂ a relative eps·|x|·rstd (the row's condition
        // number); dx amplifies that by rstd·|g|, dweight sums it over rows.
        let wmax = 1.0 + p.w.as_ref().map_or(0.0, |w| w.iter().fold(0.0, |m: f64, v| m.max(v.abs())));
        let gmax = p.dy.iter().fold(0.0f64, |m, v| m.max(v.abs())) * wmax;
        for r in 0..p.rows {
            let row = r * p.n..(r + 1) * p.n;
            let cond = 1.0 + p.x[row.clone()].iter().fold(0.0f64, |m, v| m.max(v.abs())) * want.rstd[r];
            let tol = 32.0 * (p.n as f64).sqrt() * f64::EPSILON * cond * want.rstd[r] * gmax;
            assert_close("dx", &g.dx.data()[row.clone()], &dx[row], tol, 1e-9);
        }
        let cond = (0..p.rows).fold(1.0f64, |m, r| {
            m.max(1.0 + p.x[r * p.n..(r + 1) * p.n].iter().fold(0.0f64, |m, v| m.max(v.abs())) * want.rstd[r])
        });
        let tol_dw = 32.0 * f64::EPSILON * cond * gmax * (p.rows as f64 + 1.0);
        if let Some(gw) = &g.dweight { assert_close("dweight", gw.data(), &dw, tol_dw, 1e-9); }
        if let Some(gb) = &g.dbias { assert_close("dbias", gb.data(), &db, 1e-12 * (p.rows as f64 + 1.0), 1e-12); }
        prop_assert_eq!(g.dweight.is_some(), p.w.is_some());
        prop_assert_eq!(g.dbias.is_some(), p.b.is_some());
    }

    #[test]
    fn layer_norm_f32_is_within_its_bound_of_the_f64_result(p in problem_far_from_zero()) {
        // Statistics accumulate in f64; y is computed in f32 about a two-part
        // mean, within `f32_normalize_tol` of the f64 reference computed on the
        // same f32 inputs (whatever the offset of the row), plus a sliver for
        // the rounding of the f64 statistics themselves.
        let x32: Vec<f32> = p.x.iter().map(|&v| v as f32).collect();
        let w32: Option<Vec<f32>> = p.w.as_ref().map(|w| w.iter().map(|&v| v as f32).collect());
        let b32: Option<Vec<f32>> = p.b.as_ref().map(|b| b.iter().map(|&v| v as f32).collect());
        let (mut y, mut mean, mut rstd) = (vec![0f32; x32.len()], vec![0f32; p.rows], vec![0f32; p.rows]);
        let affine = Affine { weight: w32.as_deref(), bias: b32.as_deref() };
        kernels::layer_norm_forward(&x32, p.n, affine, p.eps, &mut y, &mut mean, &mut rstd).unwrap();
        let want = ref_layer_norm(&widen(&x32), p.n, w32.as_ref().map(|w| widen(w)).as_deref(), b32.as_ref().map(|b| widen(b)).as_deref(), p.eps);
        let u = f32::EPSILON as f64;
        let wmax = w32.as_ref().map_or(1.0, |w| w.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64);
        for (i, (g, w)) in widen(&y).iter().zip(&want.y).enumerate() {
            let (r, j) = (i / p.n, i % p.n);
            let (wj, bj) = (w32.as_ref().map_or(1.0, |w| w[j] as f64), b32.as_ref().map_or(0.0, |b| b[j] as f64));
            let xhat_bound = (p.n as f64).sqrt() * wmax + bj.abs();
            let tol = f32_normalize_tol(*w, bj, want.mean[r], want.rstd[r], wj) + 1e-6 * u * xhat_bound;
            // eps = 0 on a constant row gives 0·inf = NaN in both.
            let ok = if w.is_nan() { g.is_nan() } else { (g - w).abs() <= tol };
            prop_assert!(ok, "y[{}] {} vs {} (tol {:e})", i, g, w, tol);
        }
        let xmax = p.x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close("mean", &widen(&mean), &want.mean, 4.0 * f64::EPSILON * xmax, u);
        assert_close("rstd", &widen(&rstd), &want.rstd, 0.0, u);
    }

    #[test]
    fn rms_norm_matches_reference_f64_and_f32(p in problem()) {
        let x = Tensor::new(&[p.rows, p.n], p.x.clone()).unwrap();
        let w = p.w.as_ref().map(|w| Tensor::new(&[p.n], w.clone()).unwrap());
        let out = ops::rms_norm(x.view(), &[p.n], w.as_ref().map(Tensor::view), p.eps).unwrap();
        let want = ref_rms_norm(&p.x, p.n, p.w.as_deref(), p.eps);
        assert_close("y", out.y.data(), &want.y, 0.0, 8.0 * (p.n as f64).sqrt() * f64::EPSILON);
        assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 4.0 * (p.n as f64).sqrt() * f64::EPSILON);

        let dy = Tensor::new(&[p.rows, p.n], p.dy.clone()).unwrap();
        let g = ops::rms_norm_backward(dy.view(), x.view(), &[p.n], out.rstd.view(), w.as_ref().map(Tensor::view)).unwrap();
        let (dx, dw) = ref_rms_norm_backward(&p.x, &p.dy, p.n, p.w.as_deref(), p.eps);
        let scale = want.rstd.iter().fold(1.0f64, |m, v| m.max(*v));
        assert_close("dx", g.dx.data(), &dx, 1e-10 * scale * (p.n as f64), 1e-9);
        if let Some(gw) = &g.dweight { assert_close("dweight", gw.data(), &dw, 1e-10 * (p.rows as f64 + 1.0), 1e-10); }
        prop_assert_eq!(g.dweight.is_some(), p.w.is_some());
        prop_assert!(g.dbias.is_none());

        // f32: `y = (x · rstd_f32) · w` in f32 (three roundings, `rstd` from
        // f64 statistics): within 1.5u·|y| of the f64 reference, u·|y| without
        // a weight (u = f32::EPSILON; the bound in `rms_norm.rs`), plus 1e-6·u
        // for the reference's own statistics.
        let x32: Vec<f32> = p.x.iter().map(|&v| v as f32).collect();
        let w32: Option<Vec<f32>> = p.w.as_ref().map(|w| w.iter().map(|&v| v as f32).collect());
        let (mut y, mut rstd) = (vec![0f32; x32.len()], vec![0f32; p.rows]);
        kernels::rms_norm_forward(&x32, p.n, w32.as_deref(), p.eps, &mut y, &mut rstd).unwrap();
        let want32 = ref_rms_norm(&widen(&x32), p.n, w32.as_ref().map(|w| widen(w)).as_deref(), p.eps);
        let u = f32::EPSILON as f64;
        let roundings = if w32.is_some() { 1.5 } else { 1.0 };
        assert_close("y32", &widen(&y), &want32.y, 1e-30, roundings * u + 1e-6 * u);
        assert_close("rstd32", &widen(&rstd), &want32.rstd, 0.0, f32::EPSILON as f64);
    }
}

/// Runs the f32 backward of LayerNorm (`centered`) or RMSNorm on `p`, after the
/// f32 forward for the saved statistics, and checks it against the formulas in
/// f64 on the same f32 inputs and statistics, within the bound derived in
/// `kernels/row_backward.rs` (`u = f32::EPSILON`; `mean|g|` and `mean|g·x̂|`
/// are the row's means of absolute values):
///
/// ```text
/// |dx − dx_exact|       ≤ u·|dx| + u·rstd·(2|g| + 10·mean|g| + 13|x̂|·mean|g·x̂|)
///                         + u²/4·|mean|·rstd²·(mean|g·x̂| + 2|x̂|·mean|g|)
/// |dweight − exact|     ≤ u/2·|dweight| + Σ_rows (10u·|dy·x̂| + u²/4·|dy|·|mean|·rstd)
/// |dbias − exact|       ≤ u/2·|dbias| + 8u·Σ_rows |dy|
/// ```
fn check_f32_backward(p: &Problem, centered: bool) -> Result<(), TestCaseError> {
    let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let (x, dy, w) = (narrow(&p.x), narrow(&p.dy), p.w.as_deref().map(narrow));
    let (rows, n) = (p.rows, p.n);
    let (mut y, mut mean, mut rstd) = (vec![0f32; x.len()], vec![0f32; rows], vec![0f32; rows]);
    let (mut dx, mut dw, mut db) = (vec![0f32; x.len()], vec![0f32; n], vec![0f32; n]);
    if centered {
        let affine = Affine { weight: w.as_deref(), bias: None };
        kernels::layer_norm_forward(&x, n, affine, p.eps, &mut y, &mut mean, &mut rstd).unwrap();
        let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
        kernels::layer_norm_backward(&dy, &x, n, &mean, &rstd, w.as_deref(), grads).unwrap();
    } else {
        kernels::rms_norm_forward(&x, n, w.as_deref(), p.eps, &mut y, &mut rstd).unwrap();
        kernels::rms_norm_backward(&dy, &x, n, &rstd, w.as_deref(), &mut dx, Some(&mut dw)).unwrap();
    }
    let u = f32::EPSILON as f64;
    let within =
        |got: f32, want: f64, tol: f64| if want.is_nan() { got.is_nan() } else { (got as f64 - want).abs() <= tol };
    let (mut ref_dw, mut ref_db) = (vec![0.0; n], vec![0.0; n]);
    let (mut tol_dw, mut tol_db) = (vec![0.0; n], vec![0.0; n]);
    for r in 0..rows {
        let row = r * n..(r + 1) * n;
        let (m, rs) = (if centered { mean[r] as f64 } else { 0.0 }, rstd[r] as f64);
        let xh: Vec<f64> = x[row.clone()].iter().map(|&v| (v as f64 - m) * rs).collect();
        let dyr: Vec<f64> = dy[row.clone()].iter().map(|&v| v as f64).collect();
        let g: Vec<f64> = (0..n).map(|j| dyr[j] * w.as_ref().map_or(1.0, |w| w[j] as f64)).collect();
        let mean_of = |f: &dyn Fn(usize) -> f64| sum((0..n).map(f)) / n as f64;
        let mean_g = if centered { mean_of(&|j| g[j]) } else { 0.0 };
        let mean_gx = mean_of(&|j| g[j] * xh[j]);
        let (abs_g, abs_gx) = (mean_of(&|j| g[j].abs()), mean_of(&|j| (g[j] * xh[j]).abs()));
        for j in 0..n {
            let want = rs * (g[j] - mean_g - xh[j] * mean_gx);
            let tol = u * want.abs()
                + u * rs * (2.0 * g[j].abs() + 10.0 * abs_g + 13.0 * xh[j].abs() * abs_gx)
                + u * u / 4.0 * m.abs() * rs * rs * (abs_gx + 2.0 * xh[j].abs() * abs_g);
            let got = dx[r * n + j];
            prop_assert!(within(got, want, tol), "dx[{}][{}] {} vs {} (tol {:e})", r, j, got, want, tol);
            ref_dw[j] += dyr[j] * xh[j];
            ref_db[j] += dyr[j];
            tol_dw[j] += 10.0 * u * (dyr[j] * xh[j]).abs() + u * u / 4.0 * dyr[j].abs() * m.abs() * rs;
            tol_db[j] += 8.0 * u * dyr[j].abs();
        }
    }
    for j in 0..n {
        let tol = 0.5 * u * ref_dw[j].abs() + tol_dw[j];
        prop_assert!(within(dw[j], ref_dw[j], tol), "dweight[{}] {} vs {} (tol {:e})", j, dw[j], ref_dw[j], tol);
        if centered {
            let tol = 0.5 * u * ref_db[j].abs() + tol_db[j];
            prop_assert!(within(db[j], ref_db[j], tol), "dbias[{}] {} vs {} (tol {:e})", j, db[j], ref_db[j], tol);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Up to 39 rows: more than a group's 16, so that the groups' sums in f32
    /// and their widening are both exercised.
    #[test]
    fn f32_backward_is_within_its_bound(p in problem_with_rows(40), centered in any::<bool>()) {
        check_f32_backward(&p, centered)?;
    }
}

/// Rows wider than 16384 `f32` (more than 128 KiB of `x` and `dy`) take
/// sweep 2 row by row, their parameter terms summed per 16 rows in row-long
/// `f32` arrays: within the same bounds, over 37 rows (a partial last group),
/// with and without a large offset, LayerNorm and RMSNorm.
#[test]
fn f32_backward_of_wide_rows_is_within_its_bound() {
    let (rows, n) = (37, 16411);
    let seed: u64 = rand::random();
    for (k, offset) in [0.0, 1e3].into_iter().enumerate() {
        let s = seed.wrapping_add(k as u64);
        let p = Problem {
            rows,
            n,
            x: random_vec(rows * n, s, offset),
            dy: random_vec(rows * n, s ^ 5, 0.0),
            w: Some(random_vec(n, s ^ 6, 1.0)),
            b: None,
            eps: 1e-5,
        };
        for centered in [true, false] {
            check_f32_backward(&p, centered).unwrap_or_else(|e| panic!("seed {s}, offset {offset}: {e}"));
        }
    }
}

// ---------------------------------------------------------------- finite differences

/// Central differences of L(θ) = Σ y(θ)·dy, with step h relative to |θ|.
fn finite_diff(theta: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut t = theta.to_vec();
    (0..theta.len())
        .map(|i| {
            let h = 1e-6 * (1.0 + theta[i].abs());
            t[i] = theta[i] + h;
            let up = loss(&t);
            t[i] = theta[i] - h;
            let down = loss(&t);
            t[i] = theta[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn random_vec(len: usize, seed: u64, offset: f64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| offset + rng.random_range(-1.0..1.0)).collect()
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    for (seed, (rows, n)) in [(3usize, 7usize), (1, 1), (2, 13), (4, 2)].into_iter().enumerate() {
        let seed = seed as u64 + rand::random::<u32>() as u64;
        let (x, dy) = (random_vec(rows * n, seed, 0.5), random_vec(rows * n, seed + 1, 0.0));
        let (w, b) = (random_vec(n, seed + 2, 1.0), random_vec(n, seed + 3, 0.0));
        let eps = 1e-3;
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let out = ops::layer_norm(
                Tensor::new(&[rows, n], x.to_vec()).unwrap().view(),
                &[n],
                Some(Tensor::new(&[n], w.to_vec()).unwrap().view()),
                Some(Tensor::new(&[n], b.to_vec()).unwrap().view()),
                eps,
            )
            .unwrap();
            dot(out.y.data(), &dy)
        };
        let mut ln = LayerNorm::<f64>::new(&[n]).unwrap().eps(eps);
        ln.weight = Some(Tensor::new(&[n], w.clone()).unwrap());
        ln.bias = Some(Tensor::new(&[n], b.clone()).unwrap());
        let xt = Tensor::new(&[rows, n], x.clone()).unwrap();
        let (_, saved) = ln.forward(xt.view()).unwrap();
        let g = ln.backward(Tensor::new(&[rows, n], dy.clone()).unwrap().view(), xt.view(), &saved).unwrap();
        let msg = format!("seed {seed}, shape [{rows}, {n}]");
        assert_close(&format!("dx {msg}"), g.dx.data(), &finite_diff(&x, |x| loss(x, &w, &b)), 1e-7, 1e-6);
        assert_close(
            &format!("dw {msg}"),
            g.dweight.unwrap().data(),
            &finite_diff(&w, |w| loss(&x, w, &b)),
            1e-7,
            1e-6,
        );
        assert_close(&format!("db {msg}"), g.dbias.unwrap().data(), &finite_diff(&b, |b| loss(&x, &w, b)), 1e-7, 1e-6);
    }
}

#[test]
fn rms_norm_backward_matches_finite_differences() {
    for (seed, (rows, n)) in [(3usize, 7usize), (1, 1), (2, 13)].into_iter().enumerate() {
        let seed = seed as u64 + rand::random::<u32>() as u64;
        let (x, dy, w) =
            (random_vec(rows * n, seed, 0.3), random_vec(rows * n, seed + 1, 0.0), random_vec(n, seed + 2, 1.0));
        let eps = 1e-4;
        let loss = |x: &[f64], w: &[f64]| {
            let out = ops::rms_norm(
                Tensor::new(&[rows, n], x.to_vec()).unwrap().view(),
                &[n],
                Some(Tensor::new(&[n], w.to_vec()).unwrap().view()),
                eps,
            )
            .unwrap();
            dot(out.y.data(), &dy)
        };
        let mut rms = RmsNorm::<f64>::new(&[n]).unwrap().eps(eps);
        rms.weight = Some(Tensor::new(&[n], w.clone()).unwrap());
        let xt = Tensor::new(&[rows, n], x.clone()).unwrap();
        let (_, saved) = rms.forward(xt.view()).unwrap();
        let g = rms.backward(Tensor::new(&[rows, n], dy.clone()).unwrap().view(), xt.view(), &saved).unwrap();
        let msg = format!("seed {seed}, shape [{rows}, {n}]");
        assert_close(&format!("dx {msg}"), g.dx.data(), &finite_diff(&x, |x| loss(x, &w)), 1e-7, 1e-6);
        assert_close(&format!("dw {msg}"), g.dweight.unwrap().data(), &finite_diff(&w, |w| loss(&x, w)), 1e-7, 1e-6);
    }
}

// ---------------------------------------------------------------- hostile values

#[test]
fn large_offset_f64_statistics_at_rtol_1e9() {
    // mean 1e6, spread 1e-3: E[x²]-E[x]² would return garbage (even negative) here.
    let n = 1021;
    let x: Vec<f64> = random_vec(3 * n, rand::random(), 0.0).iter().map(|v| 1e6 + 1e-3 * v).collect();
    let out = ops::layer_norm(Tensor::new(&[3, n], x.clone()).unwrap().view(), &[n], None, None, 0.0).unwrap();
    let want = ref_layer_norm(&x, n, None, None, 0.0);
    assert_close("mean", out.mean.data(), &want.mean, 0.0, 1e-15);
    assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-9);
    // y: a rounding of x (ulp 1.2e-10 at 1e6) moves y by 1.2e-10·rstd ≈ 2e-7,
    // so that, not 1e-9, is the accuracy any f64 implementation can give.
    let cond = 1e6 * want.rstd[0] * f64::EPSILON;
    assert_close("y", out.y.data(), &want.y, 4.0 * cond, 0.0);
}

#[test]
fn large_offset_f32_statistics() {
    // mean 1e3, spread 1 in f32.
    let n = 4099;
    let x: Vec<f32> = random_vec(2 * n, rand::random(), 0.0).iter().map(|v| (1e3 + v) as f32).collect();
    let (mut y, mut mean, mut rstd) = (vec![0f32; 2 * n], vec![0f32; 2], vec![0f32; 2]);
    kernels::layer_norm_forward(&x, n, Affine::none(), 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
    let want = ref_layer_norm(&widen(&x), n, None, None, 1e-5);
    assert_close("mean", &widen(&mean), &want.mean, 0.0, f32::EPSILON as f64);
    assert_close("rstd", &widen(&rstd), &want.rstd, 0.0, f32::EPSILON as f64);
}

#[test]
fn f32_rows_whose_f32_sum_overflows_or_sits_far_from_zero() {
    // The statistics' first sweep sums in f32 for a mean estimate that the f64
    // sweep then corrects: values near f32::MAX overflow that sum (the kernel
    // falls back to the block's first value), and rows at 1e7 with spread 3
    // put the estimate many ulps off. Both must still give mean and rstd to
    // within one f32 rounding, over several blocks and a ragged tail.
    let n = 4099;
    let seed = rand::random();
    let near_max: Vec<f32> = random_vec(2 * n, seed, 0.0).iter().map(|v| (3.0e38 + 3.0e37 * v) as f32).collect();
    let far: Vec<f32> = random_vec(2 * n, seed ^ 1, 0.0).iter().map(|v| (1e7 + 3.0 * v) as f32).collect();
    for (label, x) in [("near f32::MAX", near_max), ("mean 1e7", far)] {
        assert!(x.iter().all(|v| v.is_finite()), "{label}: inputs finite");
        let (mut y, mut mean, mut rstd) = (vec![0f32; 2 * n], vec![0f32; 2], vec![0f32; 2]);
        kernels::layer_norm_forward(&x, n, Affine::none(), 0.0, &mut y, &mut mean, &mut rstd).unwrap();
        let want = ref_layer_norm(&widen(&x), n, None, None, 0.0);
        let msg = format!("{label}, seed {seed}");
        assert_close(&format!("mean {msg}"), &widen(&mean), &want.mean, 0.0, f32::EPSILON as f64);
        assert_close(&format!("rstd {msg}"), &widen(&rstd), &want.rstd, 0.0, f32::EPSILON as f64);
    }
}

#[test]
fn constant_rows_have_zero_variance_not_nan() {
    // A constant row about an inexact centre (0.1 summed in f32 is not 0.1·k)
    // gives deviations that are all nearly equal, and the corrected two-pass
    // formula can round below zero: with eps = 0 that was rstd = NaN instead
    // of PyTorch's inf (a generated conformance case found it).
    for value in [0.1f64, 1.0 / 3.0, 7.7, -2.5e6, 1e7 + 1.0] {
        for n in [1usize, 5, 6, 2049, 4099] {
            let x32 = vec![value as f32; 2 * n];
            let (mut y, mut mean, mut rstd) = (vec![0f32; 2 * n], vec![0f32; 2], vec![0f32; 2]);
            kernels::layer_norm_forward(&x32, n, Affine::none(), 0.0, &mut y, &mut mean, &mut rstd).unwrap();
            assert!(rstd.iter().all(|r| r.is_infinite() && *r > 0.0), "f32 {value} x {n}: rstd {rstd:?}");
            assert!(mean.iter().all(|&m| m == value as f32), "f32 {value} x {n}: mean {mean:?}");
            let x64 = vec![value; 2 * n];
            let (mut y, mut mean, mut rstd) = (vec![0f64; 2 * n], vec![0f64; 2], vec![0f64; 2]);
            kernels::layer_norm_forward(&x64, n, Affine::none(), 0.0, &mut y, &mut mean, &mut rstd).unwrap();
            assert!(rstd.iter().all(|r| r.is_infinite() && *r > 0.0), "f64 {value} x {n}: rstd {rstd:?}");
            assert!(mean.iter().all(|&m| m == value), "f64 {value} x {n}: mean {mean:?}");
        }
    }
}

#[test]
fn huge_f32_values_normalize_without_overflow() {
    // 1e30² overflows f32; the f64 accumulator does not, so rows of values near
    // 1e30 normalize like any others (PyTorch's f32 kernels return NaN/0 here).
    let x: Vec<f32> = random_vec(64, rand::random(), 0.0).iter().map(|v| (1e30 * v) as f32).collect();
    let (mut y, mut mean, mut rstd) = (vec![0f32; 64], vec![0f32; 2], vec![0f32; 2]);
    kernels::layer_norm_forward(&x, 32, Affine::none(), 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
    let want = ref_layer_norm(&widen(&x), 32, None, None, 1e-5);
    assert_close("y", &widen(&y), &want.y, 1e-6, 1e-6);
    let mut rs = vec![0f32; 2];
    kernels::rms_norm_forward(&x, 32, None, 1e-5, &mut y, &mut rs).unwrap();
    let want = ref_rms_norm(&widen(&x), 32, None, 1e-5);
    assert_close("rms y", &widen(&y), &want.y, 1e-6, 1e-6);
}

#[test]
fn backward_rows_of_every_kind_pipelined_equal_each_row_alone() {
    // The backward pass sums a group of rows while it writes `dx` for the
    // group before, and a row the element type cannot carry takes the wide
    // path: at its first chunk (statistics `Standardize` refuses) or after
    // its last (sums that overflow f32). Rows of each kind, mixed over 53
    // rows of 300 (groups of 16, the last of 5), must give the `dx` they give
    // alone, bit for bit, and match the f64 reference. Rows of 16411 (more
    // than 128 KiB of x and dy) take sweep 2 row by row.
    check_backward_rows_of_every_kind(53, 300);
    check_backward_rows_of_every_kind(19, 16411);
}

fn check_backward_rows_of_every_kind(rows: usize, n: usize) {
    let seed: u64 = rand::random();
    let base = random_vec(rows * n, seed, 0.0);
    let dy_base = random_vec(rows * n, seed ^ 7, 0.0);
    let kind = |r: usize| (r * 7 + seed as usize) % 4;
    let x: Vec<f32> =
        base.iter().enumerate().map(|(i, v)| if kind(i / n) == 1 { (1e32 * v) as f32 } else { *v as f32 }).collect();
    let dy: Vec<f32> = dy_base
        .iter()
        .enumerate()
        .map(|(i, v)| match kind(i / n) {
            2 => (3e37 * (1.0 + v)) as f32, // g = w·dy > 0 near 1e38: the f32 sums overflow
            3 => (1e-30 * v) as f32,        // tiny gradients
            _ => *v as f32,
        })
        .collect();
    let w: Vec<f32> = random_vec(n, seed ^ 9, 1.5).iter().map(|&v| v as f32).collect();
    let (mut y, mut mean, mut rstd) = (vec![0f32; x.len()], vec![0f32; rows], vec![0f32; rows]);
    kernels::layer_norm_forward(&x, n, Affine { weight: Some(&w), bias: None }, 1e-5, &mut y, &mut mean, &mut rstd)
        .unwrap();
    let mut rms_rstd = vec![0f32; rows];
    kernels::rms_norm_forward(&x, n, Some(&w), 1e-5, &mut y, &mut rms_rstd).unwrap();
    let (mut dx, mut dw, mut db) = (vec![0f32; x.len()], vec![0f32; n], vec![0f32; n]);
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
    kernels::layer_norm_backward(&dy, &x, n, &mean, &rstd, Some(&w), grads).unwrap();
    let mut rms_dx = vec![0f32; x.len()];
    kernels::rms_norm_backward(&dy, &x, n, &rms_rstd, Some(&w), &mut rms_dx, None).unwrap();
    let want_dx = ref_layer_norm_backward(&widen(&x), &widen(&dy), n, Some(&widen(&w)), 1e-5).0;
    let want_rms = ref_rms_norm_backward(&widen(&x), &widen(&dy), n, Some(&widen(&w)), 1e-5).0;
    for r in 0..rows {
        let row = r * n..(r + 1) * n;
        let mut alone = vec![0f32; n];
        let grads = Grads { dx: &mut alone, dweight: None, dbias: None };
        kernels::layer_norm_backward(&dy[row.clone()], &x[row.clone()], n, &mean[r..=r], &rstd[r..=r], Some(&w), grads)
            .unwrap();
        let msg = format!("row {r} (kind {}), seed {seed}", kind(r));
        assert!(dx[row.clone()] == alone[..], "LayerNorm dx of {msg} differs from the row alone");
        let mut rms_alone = vec![0f32; n];
        kernels::rms_norm_backward(
            &dy[row.clone()],
            &x[row.clone()],
            n,
            &rms_rstd[r..=r],
            Some(&w),
            &mut rms_alone,
            None,
        )
        .unwrap();
        assert!(rms_dx[row.clone()] == rms_alone[..], "RMSNorm dx of {msg} differs from the row alone");
        // Against f64: each row's dx to a few f32 roundings of its largest
        // term (the statistics themselves are f32 roundings).
        for (got, want, what) in [(&dx, &want_dx, "LayerNorm"), (&rms_dx, &want_rms, "RMSNorm")] {
            let scale = want[row.clone()].iter().fold(0f64, |m, v| m.max(v.abs()));
            let (g, t) = (widen(&got[row.clone()]), &want[row.clone()]);
            assert_close(&format!("{what} dx of {msg}"), &g, t, 64.0 * f32::EPSILON as f64 * scale, 0.0);
        }
    }
}

#[test]
fn nan_and_inf_stay_in_their_row() {
    let n = 5;
    let mut x = random_vec(4 * n, rand::random(), 0.0);
    x[n + 2] = f64::NAN; // row 1
    x[2 * n] = f64::INFINITY; // row 2
    let dy = random_vec(4 * n, rand::random(), 0.0);
    let xt = Tensor::new(&[4, n], x.clone()).unwrap();
    let out = ops::layer_norm(xt.view(), &[n], None, None, 1e-5).unwrap();
    let y = out.y.data();
    assert!(y[..n].iter().chain(&y[3 * n..]).all(|v| v.is_finite()), "rows 0 and 3 untouched");
    assert!(y[n..3 * n].iter().all(|v| v.is_nan()), "a NaN or inf row is NaN throughout");
    assert!(out.rstd.data()[1].is_nan() && out.rstd.data()[2].is_nan());
    let g = ops::layer_norm_backward(
        Tensor::new(&[4, n], dy.clone()).unwrap().view(),
        xt.view(),
        &[n],
        (out.mean.view(), out.rstd.view()),
        None,
        false,
    )
    .unwrap();
    assert!(g.dx.data()[..n].iter().all(|v| v.is_finite()) && g.dx.data()[n..2 * n].iter().all(|v| v.is_nan()));

    // RMSNorm: an inf makes the mean square inf, so rstd = 0: finite values map
    // to 0 and the inf to NaN (inf·0), as PyTorch gives.
    let out = ops::rms_norm(xt.view(), &[n], None, 1e-5).unwrap();
    assert_eq!(out.rstd.data()[2], 0.0);
    assert!(out.y.data()[2 * n].is_nan() && out.y.data()[2 * n + 1..3 * n].iter().all(|&v| v == 0.0));
    assert!(out.rstd.data()[1].is_nan() && out.y.data()[n..2 * n].iter().all(|v| v.is_nan()));
    assert!(out.y.data()[3 * n..].iter().all(|v| v.is_finite()));
}

#[test]
fn empty_batch_gives_empty_outputs() {
    let x = Tensor::<f64>::new(&[0, 8], vec![]).unwrap();
    let out = ops::layer_norm(x.view(), &[8], None, None, 1e-5).unwrap();
    assert_eq!((out.y.shape(), out.mean.shape()), (&[0usize, 8][..], &[0usize][..]));
    let out = ops::rms_norm(x.view(), &[8], None, 1e-5).unwrap();
    assert_eq!(out.rstd.shape(), &[0]);
}

#[test]
fn whole_tensor_normalization_has_scalar_statistics() {
    let x = Tensor::new(&[2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let out = ops::layer_norm(x.view(), &[2, 3], None, None, 0.0).unwrap();
    assert_eq!(out.mean.shape(), &[] as &[usize]);
    assert_eq!(out.mean.data(), &[3.5]);
}

// ---------------------------------------------------------------- errors

fn is_err<T>(r: Result<T, Error>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error mentioning {needle:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{e} does not mention {needle:?}"),
    }
}

#[test]
fn every_bad_input_is_an_error() {
    let x = Tensor::new(&[3, 5], vec![0.5f64; 15]).unwrap();
    let w4 = Tensor::new(&[4], vec![1.0f64; 4]).unwrap();
    let w5 = Tensor::new(&[5], vec![1.0f64; 5]).unwrap();
    // Shapes and data.
    is_err(Tensor::new(&[2, 3], vec![0.0f64; 5]), "needs 6 elements");
    is_err(ops::layer_norm(x.view(), &[4], None, None, 1e-5), "not the trailing dimensions");
    is_err(ops::layer_norm(x.view(), &[3, 5, 1], None, None, 1e-5), "not the trailing dimensions");
    is_err(ops::layer_norm(x.view(), &[], None, None, 1e-5), "not the trailing dimensions");
    is_err(ops::layer_norm(x.view(), &[5], Some(w4.view()), None, 1e-5), "weight has shape [4], expected [5]");
    is_err(ops::layer_norm(x.view(), &[5], Some(w5.view()), Some(w4.view()), 1e-5), "bias has shape [4]");
    is_err(ops::rms_norm(x.view(), &[5], Some(w4.view()), 1e-5), "weight has shape [4], expected [5]");
    let empty = Tensor::<f64>::new(&[3, 0], vec![]).unwrap();
    is_err(ops::layer_norm(empty.view(), &[0], None, None, 1e-5), "is empty");
    is_err(ops::rms_norm(empty.view(), &[0], None, 1e-5), "is empty");
    // eps.
    for eps in [-1e-5, f64::NAN, f64::INFINITY] {
        is_err(ops::layer_norm(x.view(), &[5], None, None, eps), "invalid eps");
        is_err(ops::rms_norm(x.view(), &[5], None, eps), "invalid eps");
    }
    // Backward: dy and saved statistics must match.
    let out = ops::layer_norm(x.view(), &[5], None, None, 1e-5).unwrap();
    let dy_bad = Tensor::new(&[5, 3], vec![0.0f64; 15]).unwrap();
    is_err(
        ops::layer_norm_backward(dy_bad.view(), x.view(), &[5], (out.mean.view(), out.rstd.view()), None, false),
        "dy has shape [5, 3], expected [3, 5]",
    );
    let mean_bad = Tensor::new(&[2], vec![0.0f64; 2]).unwrap();
    is_err(
        ops::layer_norm_backward(x.view(), x.view(), &[5], (mean_bad.view(), out.rstd.view()), None, false),
        "mean has shape [2], expected [3]",
    );
    is_err(ops::rms_norm_backward(x.view(), x.view(), &[5], mean_bad.view(), None), "rstd has shape [2], expected [3]");
    // Kernels check their buffers.
    let (xs, mut y, mut m, mut r) = (vec![0.0f64; 15], vec![0.0f64; 15], vec![0.0f64; 3], vec![0.0f64; 3]);
    is_err(kernels::layer_norm_forward(&xs, 4, Affine::none(), 1e-5, &mut y, &mut m, &mut r), "do not form rows of 4");
    is_err(kernels::layer_norm_forward(&xs, 0, Affine::none(), 1e-5, &mut y, &mut m, &mut r), "is empty");
    is_err(
        kernels::layer_norm_forward(&xs, 5, Affine::none(), 1e-5, &mut y[..14], &mut m, &mut r),
        "y has shape [14], expected [15]",
    );
    is_err(
        kernels::layer_norm_forward(&xs, 5, Affine::none(), 1e-5, &mut y, &mut m[..2], &mut r),
        "mean has shape [2], expected [3]",
    );
    is_err(kernels::rms_norm_forward(&xs, 5, None, 1e-5, &mut y, &mut r[..1]), "rstd has shape [1], expected [3]");
    let mut dx = vec![0.0f64; 15];
    let mut dw = vec![0.0f64; 4];
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: None };
    is_err(kernels::layer_norm_backward(&xs, &xs, 5, &m, &r, None, grads), "dweight has shape [4], expected [5]");
    is_err(
        kernels::rms_norm_backward(&xs[..10], &xs[..10], 5, &r, None, &mut dx[..10], None),
        "rstd has shape [3], expected [2]",
    );
    // Modules.
    is_err(LayerNorm::<f32>::new(&[]), "is empty");
    is_err(LayerNorm::<f32>::new(&[4, 0]), "is empty");
    is_err(RmsNorm::<f32>::new(&[0]), "is empty");
    let ln = LayerNorm::<f64>::new(&[4]).unwrap();
    is_err(ln.forward(x.view()), "not the trailing dimensions");
}

#[test]
fn module_options_follow_pytorch() {
    let ln = LayerNorm::<f32>::new(&[3, 2]).unwrap();
    assert_eq!(ln.eps_value(), 1e-5);
    assert_eq!(ln.weight.as_ref().unwrap().data(), &[1.0; 6]);
    assert_eq!(ln.bias.as_ref().unwrap().data(), &[0.0; 6]);
    assert_eq!(ln.weight.as_ref().unwrap().shape(), &[3, 2]);
    let plain = LayerNorm::<f32>::new(&[3]).unwrap().elementwise_affine(false);
    assert!(plain.weight.is_none() && plain.bias.is_none());
    let no_bias = LayerNorm::<f32>::new(&[3]).unwrap().bias(false);
    assert!(no_bias.weight.is_some() && no_bias.bias.is_none());
    // Order of the builder calls does not matter.
    let a = LayerNorm::<f32>::new(&[3]).unwrap().bias(false).elementwise_affine(true);
    let b = LayerNorm::<f32>::new(&[3]).unwrap().elementwise_affine(true).bias(false);
    assert_eq!(a, b);
    let rms = RmsNorm::<f32>::new(&[4]).unwrap();
    assert_eq!(rms.eps_value(), f32::EPSILON as f64);
    assert_eq!(RmsNorm::<f64>::new(&[4]).unwrap().eps_value(), f64::EPSILON);
    assert!(RmsNorm::<f64>::new(&[4]).unwrap().elementwise_affine(false).weight.is_none());
}

/// `f64` rows whose squared deviations leave `f64`'s range: spreads beyond
/// about 1e154 (the squares overflow) or, with `eps` below 2^-960, below about
/// 1e-154 (they underflow). Scaling a row by `s`, a power of two, and `eps` by
/// `s²` scales its mean by `s`, its `rstd` by `1/s` and leaves `y` as it was
/// (to rounding), so each scaled row is checked against the unscaled one; the
/// backward's `dx` scales as `rstd`, `dweight` and `dbias` not at all. `eps`
/// is 0, or `2^-10` (it moves `y` by about a thousandth) where `eps·s²` is
/// representable. Until 2026-12-04 LayerNorm gave NaN above and ±inf below,
/// RMSNorm 0 above.
#[test]
fn f64_rows_beyond_the_range_of_squares_normalize_as_scaled_copies() {
    let seed: u64 = rand::random();
    let (rows, n) = (3, 257);
    // Rows about 0, about 1e6 (spread 1) and a row with one outlier.
    let mut x0 = random_vec(rows * n, seed, 0.0);
    x0[n..2 * n].iter_mut().for_each(|v| *v += 1e6);
    x0[2 * n + 5] = 1e4;
    let dy = random_vec(rows * n, seed ^ 1, 0.25);
    let w = random_vec(n, seed ^ 2, 1.0);
    let ln = |x: &[f64], eps: f64| {
        let (mut y, mut mean, mut rstd) = (vec![0.0; rows * n], vec![0.0; rows], vec![0.0; rows]);
        kernels::layer_norm_forward(x, n, Affine::new(&w, &w), eps, &mut y, &mut mean, &mut rstd).unwrap();
        let (mut dx, mut dweight, mut db) = (vec![0.0; rows * n], vec![0.0; n], vec![0.0; n]);
        let g = Grads { dx: &mut dx, dweight: Some(&mut dweight), dbias: Some(&mut db) };
        kernels::layer_norm_backward(&dy, x, n, &mean, &rstd, Some(&w), g).unwrap();
        (NormRun { y, mean, rstd, dx, dweight }, db)
    };
    let rms = |x: &[f64], eps: f64| {
        let (mut y, mut rstd) = (vec![0.0; rows * n], vec![0.0; rows]);
        kernels::rms_norm_forward(x, n, Some(&w), eps, &mut y, &mut rstd).unwrap();
        let (mut dx, mut dweight) = (vec![0.0; rows * n], vec![0.0; n]);
        kernels::rms_norm_backward(&dy, x, n, &rstd, Some(&w), &mut dx, Some(&mut dweight)).unwrap();
        NormRun { y, mean: Vec::new(), rstd, dx, dweight }
    };
    for (k, eps) in SCALES_AND_EPS {
        let s = 2f64.powi(k);
        let ((ln0, db0), rms0) = (ln(&x0, eps), rms(&x0, eps));
        let xs: Vec<f64> = x0.iter().map(|v| v * s).collect();
        let (got, db) = ln(&xs, eps * s * s);
        let what = |op: &str| format!("{op}, 2^{k}, eps {eps}, seed {seed}");
        // The mean to 1e-14 of the row's largest value (1e4, the outlier's).
        assert_scaled_copy(&what("LayerNorm"), &got, &ln0, s, 1e-10);
        assert_eq!(db, db0, "{}", what("LayerNorm dbias"));
        assert_scaled_copy(&what("RMSNorm"), &rms(&xs, eps * s * s), &rms0, s, 0.0);
    }
}
