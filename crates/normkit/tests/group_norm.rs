//! GroupNorm and InstanceNorm checked against a plain f64 reference written from
//! the formulas, on random `(N, C, *)` shapes (sizes 1 and primes, every divisor
//! of C as the group count), fresh seeds, hostile values; finite differences for
//! every backward; InstanceNorm's running statistics and eval mode; LayerNorm over
//! `(C, H, W)` against GroupNorm with one group; every error path.

mod layers_support;

use layers_support::*;
use normkit::kernels::{self, Affine, Grads, GroupLayout};
use normkit::{ops, Error, GroupNorm, InstanceNorm, Tensor, TensorRef};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- reference

/// GroupNorm from the formula in f64. The flat index `i` of an `(N, C, S)` input
/// has `n = i / (C·S)`, `c = (i / S) mod C`, group `g = c / (C/G)`; each `(n, g)`
/// is normalized by its mean and biased variance.
struct RefGn {
    y: Vec<f64>,
    /// Per `(n, g)`, `n·G + g`.
    mean: Vec<f64>,
    var_biased: Vec<f64>,
    var_unbiased: Vec<f64>,
    rstd: Vec<f64>,
}

/// `(group key n·G + g, channel c)` of every flat index.
fn group_keys(shape: &[usize], groups: usize) -> Vec<(usize, usize)> {
    let (c, s) = (shape[1], numel(&shape[2..]));
    let cpg = c / groups;
    (0..numel(shape)).map(|i| (i / (c * s) * groups + (i / s) % c / cpg, (i / s) % c)).collect()
}

fn ref_group_norm(x: &[f64], shape: &[usize], groups: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> RefGn {
    let keys = group_keys(shape, groups);
    let stats = shape[0] * groups;
    let values = |k: usize| x.iter().zip(&keys).filter(move |(_, key)| key.0 == k).map(|(v, _)| *v);
    let mut r = RefGn { y: vec![], mean: vec![], var_biased: vec![], var_unbiased: vec![], rstd: vec![] };
    for k in 0..stats {
        let n = values(k).count() as f64;
        let mean = sum(values(k)) / n;
        // Corrected two-pass (see batch_norm.rs's reference): without the
        // second term the mean's rounding adds n·δ² to M2.
        let dev = sum(values(k).map(|v| v - mean));
        let m2 = sum(values(k).map(|v| (v - mean) * (v - mean))) - dev * dev / n;
        r.mean.push(mean);
        r.var_biased.push(m2 / n);
        r.var_unbiased.push(m2 / (n - 1.0));
        r.rstd.push(1.0 / (m2 / n + eps).sqrt());
    }
    r.y = x
        .iter()
        .zip(&keys)
        .map(|(v, &(k, c))| (v - r.mean[k]) * r.rstd[k] * w.map_or(1.0, |w| w[c]) + b.map_or(0.0, |b| b[c]))
        .collect();
    r
}

/// Backward by the chain rule through each group's mean and variance:
/// `g = dy·w_c`, `dvar = Σ g·(x - m)·(-½)·rstd³`, `dmean = -rstd·Σ g + dvar·(-2/m)·Σ(x - m)`,
/// `dx = g·rstd + dvar·2(x - m)/m + dmean/m`.
fn ref_group_norm_backward(
    x: &[f64],
    dy: &[f64],
    shape: &[usize],
    groups: usize,
    w: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let fwd = ref_group_norm(x, shape, groups, None, None, eps);
    let keys = group_keys(shape, groups);
    let c = shape[1];
    let wc = |ch: usize| w.map_or(1.0, |w| w[ch]);
    let stats = shape[0] * groups;
    let (mut dvar, mut dmean, mut count) = (vec![0.0; stats], vec![0.0; stats], vec![0.0; stats]);
    for k in 0..stats {
        let (m, r) = (fwd.mean[k], fwd.rstd[k]);
        let keys = &keys;
        let idx = || (0..x.len()).filter(move |&i| keys[i].0 == k);
        count[k] = idx().count() as f64;
        dvar[k] = sum(idx().map(|i| dy[i] * wc(keys[i].1) * (x[i] - m))) * -0.5 * r.powi(3);
        dmean[k] =
            -r * sum(idx().map(|i| dy[i] * wc(keys[i].1))) + dvar[k] * -2.0 * sum(idx().map(|i| x[i] - m)) / count[k];
    }
    let dx = (0..x.len())
        .map(|i| {
            let (k, ch) = keys[i];
            dy[i] * wc(ch) * fwd.rstd[k] + dvar[k] * 2.0 * (x[i] - fwd.mean[k]) / count[k] + dmean[k] / count[k]
        })
        .collect();
    let dw = (0..c)
        .map(|ch| {
            sum((0..x.len())
                .filter(|&i| keys[i].1 == ch)
                .map(|i| dy[i] * (x[i] - fwd.mean[keys[i].0]) * fwd.rstd[keys[i].0]))
        })
        .collect();
    let db = (0..c).map(|ch| sum((0..x.len()).filter(|&i| keys[i].1 == ch).map(|i| dy[i]))).collect();
    (dx, dw, db)
}

/// Per-element tolerance of an f64 output: a rounding of x or of the mean moves y
/// by eps·(|x| + |mean|)·rstd·|w|; the variance's relative error (about
/// sqrt(m)·eps for m values) moves it by that times |x̂·w|.
fn y_tol(x: &[f64], shape: &[usize], groups: usize, r: &RefGn, w: Option<&[f64]>, b: Option<&[f64]>) -> Vec<f64> {
    let keys = group_keys(shape, groups);
    let m = (numel(&shape[1..]) / groups) as f64;
    let e = f64::EPSILON;
    x.iter()
        .zip(&keys)
        .map(|(v, &(k, c))| {
            let wk = w.map_or(1.0, |w| w[c].abs()).max(1.0);
            let bk = b.map_or(0.0, |b| b[c].abs());
            let cond = (v.abs() + r.mean[k].abs()) * r.rstd[k];
            32.0 * e * (1.0 + m.sqrt()) * (cond + 1.0) * wk + 4.0 * e * bk
        })
        .collect()
}

struct Problem {
    shape: Vec<usize>,
    groups: usize,
    x: Vec<f64>,
    dy: Vec<f64>,
    w: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    eps: f64,
}

/// A random `(N, C, *)` problem of rank 2 to 5 with at most `max_len` values: C
/// is `G · (C/G)` with both factors drawn from sizes including 1 and primes.
fn problem(seed: u64, kinds: &[(f64, f64)], max_len: usize) -> Problem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (shape, groups) = loop {
        let rank = rng.random_range(2..=5);
        let mut shape = random_shape(&mut rng, rank);
        let dims = random_shape(&mut rng, 2);
        let (groups, cpg) = (dims[0], dims[1]);
        shape[1] = groups * cpg;
        if numel(&shape) <= max_len {
            break (shape, groups);
        }
    };
    let (offset, scale) = kinds[rng.random_range(0..kinds.len())];
    let len = numel(&shape);
    let c = shape[1];
    let x = random_vec(len, rng.random(), offset, scale);
    let dy = random_vec(len, rng.random(), 0.0, 1.0);
    let w = rng.random_bool(0.7).then(|| random_vec(c, rng.random(), 1.0, 0.5));
    let b = rng.random_bool(0.7).then(|| random_vec(c, rng.random(), 0.0, 1.0));
    let eps = [1e-5, 1e-3, 0.1][rng.random_range(0..3)];
    Problem { shape, groups, x, dy, w, b, eps }
}

fn t64(shape: &[usize], v: &[f64]) -> Tensor<f64> {
    Tensor::new(shape, v.to_vec()).unwrap()
}

fn opt_view<T: Copy>(t: &Option<Tensor<T>>) -> Option<TensorRef<'_, T>> {
    t.as_ref().map(Tensor::view)
}

fn params(p: &Problem) -> (Option<Tensor<f64>>, Option<Tensor<f64>>) {
    let c = p.shape[1];
    (p.w.as_ref().map(|v| t64(&[c], v)), p.b.as_ref().map(|v| t64(&[c], v)))
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn group_norm_f64_matches_reference(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS, 6000);
        let x = t64(&p.shape, &p.x);
        let (w, b) = params(&p);
        let out = ops::group_norm(x.view(), p.groups, opt_view(&w), opt_view(&b), p.eps).unwrap();
        let want = ref_group_norm(&p.x, &p.shape, p.groups, p.w.as_deref(), p.b.as_deref(), p.eps);
        let tol = y_tol(&p.x, &p.shape, p.groups, &want, p.w.as_deref(), p.b.as_deref());
        assert_within("y", out.y.data(), &want.y, &tol);
        prop_assert_eq!(out.mean.shape(), &[p.shape[0], p.groups][..]);
        let mean_tol: Vec<f64> = want.mean.iter().zip(&want.var_biased)
            .map(|(m, v)| 8.0 * f64::EPSILON * (m.abs() + v.sqrt())).collect();
        assert_within("mean", out.mean.data(), &want.mean, &mean_tol);
        // A group of one value has variance exactly 0 (rstd = 1/sqrt(eps)).
        assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-9);
    }

    #[test]
    fn group_norm_f32_is_within_its_bound_of_the_f64_result(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS, 6000);
        let (x32, w32, b32) = (narrow(&p.x), p.w.as_deref().map(narrow), p.b.as_deref().map(narrow));
        let c = p.shape[1];
        let layout = GroupLayout::new(p.shape[0], c, numel(&p.shape[2..]), p.groups).unwrap();
        let stats = p.shape[0] * p.groups;
        let (mut y, mut m, mut r) = (vec![0f32; x32.len()], vec![0f32; stats], vec![0f32; stats]);
        let affine = Affine { weight: w32.as_deref(), bias: b32.as_deref() };
        kernels::group_norm_forward(&x32, layout, affine, p.eps, &mut y, &mut m, &mut r).unwrap();
        let (xw, ww, bw) = (widen(&x32), w32.as_deref().map(widen), b32.as_deref().map(widen));
        let want = ref_group_norm(&xw, &p.shape, p.groups, ww.as_deref(), bw.as_deref(), p.eps);
        let tol64 = y_tol(&xw, &p.shape, p.groups, &want, ww.as_deref(), bw.as_deref());
        // The bound of the f32 elementwise pass (f32_normalize_tol) on top of
        // the f64-accurate statistics' own tolerance.
        let keys = group_keys(&p.shape, p.groups);
        let tol: Vec<f64> = (0..want.y.len())
            .map(|i| {
                let (k, ch) = keys[i];
                let (wc, bc) = (ww.as_ref().map_or(1.0, |w| w[ch]), bw.as_ref().map_or(0.0, |b| b[ch]));
                f32_normalize_tol(want.y[i], bc, want.mean[k], want.rstd[k], wc) + tol64[i]
            })
            .collect();
        assert_within("y", &widen(&y), &want.y, &tol);
        assert_close("rstd", &widen(&r), &want.rstd, 0.0, f32::EPSILON as f64);
    }

    /// The f32 backward (GroupNorm, and InstanceNorm where a group is one
    /// channel) against the formulas in f64 on the same f32 inputs and saved
    /// statistics, within the bound derived for LayerNorm's backward in
    /// `kernels/row_backward.rs` (`u = f32::EPSILON`, per group of `M` values):
    /// `|dx − exact| ≤ u·|dx| + u·rstd·(2|g| + 10·mean|g| + 13|x̂|·mean|g·x̂|)`
    /// plus `u²/4·|mean|·rstd²·(mean|g·x̂| + 2|x̂|·mean|g|)`; `dweight` within
    /// `u/2·|dweight| + Σ (10u·|dy·x̂| + u²/4·|dy|·|mean|·rstd)`, `dbias` within
    /// `u/2·|dbias| + 8u·Σ|dy|`.
    #[test]
    fn group_norm_f32_backward_is_within_its_bound(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS, 6000);
        let (x32, dy32, w32) = (narrow(&p.x), narrow(&p.dy), p.w.as_deref().map(narrow));
        let c = p.shape[1];
        let layout = GroupLayout::new(p.shape[0], c, numel(&p.shape[2..]), p.groups).unwrap();
        let stats = p.shape[0] * p.groups;
        let (mut y, mut m, mut r) = (vec![0f32; x32.len()], vec![0f32; stats], vec![0f32; stats]);
        let affine = Affine { weight: w32.as_deref(), bias: None };
        kernels::group_norm_forward(&x32, layout, affine, p.eps, &mut y, &mut m, &mut r).unwrap();
        let (mut dx, mut dw, mut db) = (vec![0f32; x32.len()], vec![0f32; c], vec![0f32; c]);
        let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
        kernels::group_norm_backward(&dy32, &x32, layout, &m, &r, w32.as_deref(), grads).unwrap();

        let u = f32::EPSILON as f64;
        let keys = group_keys(&p.shape, p.groups);
        let wc = |ch: usize| w32.as_ref().map_or(1.0, |w| w[ch] as f64);
        let xhat = |i: usize| (x32[i] as f64 - m[keys[i].0] as f64) * r[keys[i].0] as f64;
        let g = |i: usize| dy32[i] as f64 * wc(keys[i].1);
        // Per group: mean(g), mean(g·x̂), mean|g|, mean|g·x̂|, over its M values.
        let mut per_group = vec![[0.0f64; 5]; stats];
        for i in 0..x32.len() {
            let s = &mut per_group[keys[i].0];
            let (gi, xi) = (g(i), xhat(i));
            s[0] += gi;
            s[1] += gi * xi;
            s[2] += gi.abs();
            s[3] += (gi * xi).abs();
            s[4] += 1.0;
        }
        let (mut ref_dw, mut ref_db, mut tol_dw, mut tol_db) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for i in 0..x32.len() {
            let (k, ch) = keys[i];
            let s = per_group[k];
            let (mean_g, mean_gx, abs_g, abs_gx) = (s[0] / s[4], s[1] / s[4], s[2] / s[4], s[3] / s[4]);
            let (mk, rk) = (m[k] as f64, r[k] as f64);
            let (gi, xi, dyi) = (g(i), xhat(i), dy32[i] as f64);
            let want = rk * (gi - mean_g - xi * mean_gx);
            let tol = u * want.abs()
                + u * rk * (2.0 * gi.abs() + 10.0 * abs_g + 13.0 * xi.abs() * abs_gx)
                + u * u / 4.0 * mk.abs() * rk * rk * (abs_gx + 2.0 * xi.abs() * abs_g);
            let got = dx[i] as f64;
            prop_assert!((got - want).abs() <= tol, "dx[{}] {} vs {} (tol {:e})", i, got, want, tol);
            ref_dw[ch] += dyi * xi;
            ref_db[ch] += dyi;
            tol_dw[ch] += 10.0 * u * (dyi * xi).abs() + u * u / 4.0 * dyi.abs() * mk.abs() * rk;
            tol_db[ch] += 8.0 * u * dyi.abs();
        }
        for ch in 0..c {
            let (gw, gb) = (dw[ch] as f64, db[ch] as f64);
            let tw = 0.5 * u * ref_dw[ch].abs() + tol_dw[ch];
            prop_assert!((gw - ref_dw[ch]).abs() <= tw, "dweight[{}] {} vs {} (tol {:e})", ch, gw, ref_dw[ch], tw);
            let tb = 0.5 * u * ref_db[ch].abs() + tol_db[ch];
            prop_assert!((gb - ref_db[ch]).abs() <= tb, "dbias[{}] {} vs {} (tol {:e})", ch, gb, ref_db[ch], tb);
        }
    }

    #[test]
    fn group_norm_backward_f64_matches_reference(seed in any::<u64>()) {
        let p = problem(seed, &[(0.0, 1.0), (5.0, 3.0), (-20.0, 100.0)], 3000);
        let x = t64(&p.shape, &p.x);
        let (w, b) = params(&p);
        let out = ops::group_norm(x.view(), p.groups, opt_view(&w), opt_view(&b), p.eps).unwrap();
        let dy = t64(&p.shape, &p.dy);
        let g = ops::group_norm_backward(dy.view(), x.view(), p.groups, (out.mean.view(), out.rstd.view()),
            opt_view(&w), b.is_some()).unwrap();
        let (dx, dw, db) = ref_group_norm_backward(&p.x, &p.dy, &p.shape, p.groups, p.w.as_deref(), p.eps);
        let m = (numel(&p.shape[1..]) / p.groups) as f64;
        let rmax = out.rstd.data().iter().fold(1.0f64, |a, v| a.max(*v));
        let wmax = p.w.as_ref().map_or(1.0, |w| w.iter().fold(1.0f64, |a, v| a.max(v.abs())));
        assert_close("dx", g.dx.data(), &dx, 1e-12 * rmax * wmax * m, 1e-9);
        let per_channel = (p.x.len() / p.shape[1]) as f64;
        if let Some(gw) = &g.dweight { assert_close("dweight", gw.data(), &dw, 1e-12 * per_channel, 1e-9); }
        if let Some(gb) = &g.dbias { assert_close("dbias", gb.data(), &db, 1e-13 * per_channel, 1e-12); }
        prop_assert_eq!(g.dweight.is_some(), p.w.is_some());
        prop_assert_eq!(g.dbias.is_some(), p.b.is_some());
    }

    #[test]
    fn instance_norm_f64_matches_reference(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS, 6000);
        let c = p.shape[1];
        let x = t64(&p.shape, &p.x);
        let (w, b) = params(&p);
        let res = ops::instance_norm(x.view(), opt_view(&w), opt_view(&b), p.eps);
        if numel(&p.shape[2..]) < 2 {
            prop_assert!(res.is_err(), "one value per instance must be refused, shape {:?}", p.shape);
            return Ok(());
        }
        let out = res.unwrap();
        let want = ref_group_norm(&p.x, &p.shape, c, p.w.as_deref(), p.b.as_deref(), p.eps);
        let tol = y_tol(&p.x, &p.shape, c, &want, p.w.as_deref(), p.b.as_deref());
        assert_within("y", out.y.data(), &want.y, &tol);
        prop_assert_eq!(out.mean.shape(), &[p.shape[0], c][..]);
        assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-9);
        // Backward against the chain-rule reference with one group per channel.
        let dy = t64(&p.shape, &p.dy);
        let g = ops::instance_norm_backward(dy.view(), x.view(), (out.mean.view(), out.rstd.view()),
            opt_view(&w), b.is_some()).unwrap();
        if p.x.iter().all(|v| v.abs() < 1e3) {
            let (dx, _, _) = ref_group_norm_backward(&p.x, &p.dy, &p.shape, c, p.w.as_deref(), p.eps);
            let rmax = out.rstd.data().iter().fold(1.0f64, |a, v| a.max(*v));
            let wmax = p.w.as_ref().map_or(1.0, |w| w.iter().fold(1.0f64, |a, v| a.max(v.abs())));
            assert_close("dx", g.dx.data(), &dx, 1e-12 * rmax * wmax * numel(&p.shape[2..]) as f64, 1e-9);
        }
    }

    #[test]
    fn instance_norm_running_statistics_follow_the_formula(seed in any::<u64>(),
            momentum in prop::sample::select(vec![0.1, 0.0, 1.0, 0.37])) {
        let p = problem(seed, &[(0.0, 1.0), (5.0, 3.0)], 4000);
        let c = p.shape[1];
        if numel(&p.shape[2..]) < 2 { return Ok(()); }
        let (rm0, rv0) = (random_vec(c, seed ^ 3, 0.0, 1.0), random_vec(c, seed ^ 4, 1.0, 0.5));
        let (mut rm, mut rv) = (t64(&[c], &rm0), t64(&[c], &rv0));
        ops::instance_norm_update_running(t64(&p.shape, &p.x).view(), &mut rm, &mut rv, momentum).unwrap();
        let want = ref_group_norm(&p.x, &p.shape, c, None, None, p.eps);
        let n = p.shape[0];
        let avg = |v: &[f64], ch: usize| sum((0..n).map(|s| v[s * c + ch])) / n as f64;
        let wm: Vec<f64> = (0..c).map(|k| momentum * avg(&want.mean, k) + (1.0 - momentum) * rm0[k]).collect();
        let wv: Vec<f64> = (0..c).map(|k| momentum * avg(&want.var_unbiased, k) + (1.0 - momentum) * rv0[k]).collect();
        assert_close("running_mean", rm.data(), &wm, 1e-14, 1e-13);
        assert_close("running_var", rv.data(), &wv, 1e-14, 1e-12);
    }
}

/// Inputs large enough for the kernels' threaded, multi-task paths (more than
/// 2^16 values) and groups longer than one statistics block, f64 and f32,
/// forward and backward against the reference.
#[test]
fn large_inputs_match_the_reference() {
    let seed = rand::random::<u32>() as u64;
    let (shape, groups) = ([3usize, 8, 9001], 4usize);
    let len = numel(&shape);
    let (x, dy) = (random_vec(len, seed, 2.0, 3.0), random_vec(len, seed + 1, 0.0, 1.0));
    let (w, b) = (random_vec(8, seed + 2, 1.0, 0.5), random_vec(8, seed + 3, 0.0, 1.0));
    let (wt, bt) = (t64(&[8], &w), t64(&[8], &b));
    let out = ops::group_norm(t64(&shape, &x).view(), groups, Some(wt.view()), Some(bt.view()), 1e-5).unwrap();
    let want = ref_group_norm(&x, &shape, groups, Some(&w), Some(&b), 1e-5);
    assert_within("y", out.y.data(), &want.y, &y_tol(&x, &shape, groups, &want, Some(&w), Some(&b)));
    assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-12);
    let g = ops::group_norm_backward(
        t64(&shape, &dy).view(),
        t64(&shape, &x).view(),
        groups,
        (out.mean.view(), out.rstd.view()),
        Some(wt.view()),
        true,
    )
    .unwrap();
    let (dx, dw, db) = ref_group_norm_backward(&x, &dy, &shape, groups, Some(&w), 1e-5);
    let m = (len / shape[0] / groups) as f64;
    assert_close("dx", g.dx.data(), &dx, 1e-12 * 1.5 * m.sqrt(), 1e-9);
    assert_close("dweight", g.dweight.unwrap().data(), &dw, 1e-12 * (len / 8) as f64, 1e-9);
    assert_close("dbias", g.dbias.unwrap().data(), &db, 1e-13 * (len / 8) as f64, 1e-12);

    let x32 = narrow(&x);
    let out = ops::group_norm(Tensor::new(&shape, x32.clone()).unwrap().view(), groups, None, None, 1e-5).unwrap();
    let xw = widen(&x32);
    let want = ref_group_norm(&xw, &shape, groups, None, None, 1e-5);
    let keys = group_keys(&shape, groups);
    let tol: Vec<f64> = (want.y.iter().zip(&keys))
        .zip(y_tol(&xw, &shape, groups, &want, None, None))
        .map(|((&v, &(k, _)), t)| f32_normalize_tol(v, 0.0, want.mean[k], want.rstd[k], 1.0) + t)
        .collect();
    assert_within("y f32", &widen(out.y.data()), &want.y, &tol);
}

// ---------------------------------------------------------------- LayerNorm agreement

/// LayerNorm over `(C, H, W)` is GroupNorm with one group, once GroupNorm's
/// per-channel weight and bias are spread over each channel's H·W elements;
/// GroupNorm's parameter gradients are LayerNorm's summed over H·W.
#[test]
fn layer_norm_over_chw_is_group_norm_with_one_group() {
    for (k, shape) in [vec![3usize, 4, 5, 2], vec![2, 7, 3], vec![1, 1, 13], vec![5, 3, 1, 1], vec![2, 11, 2, 3]]
        .into_iter()
        .enumerate()
    {
        let seed = rand::random::<u32>() as u64 + 10 * k as u64;
        let (c, s) = (shape[1], numel(&shape[2..]));
        let len = numel(&shape);
        let (x, dy) = (random_vec(len, seed, 3.0, 2.0), random_vec(len, seed + 1, 0.0, 1.0));
        let (w, b) = (random_vec(c, seed + 2, 1.0, 0.5), random_vec(c, seed + 3, 0.0, 1.0));
        let spread = |v: &[f64]| v.iter().flat_map(|&a| std::iter::repeat_n(a, s)).collect::<Vec<f64>>();
        let (xt, dyt) = (t64(&shape, &x), t64(&shape, &dy));
        let (wg, bg) = (t64(&[c], &w), t64(&[c], &b));
        let (wl, bl) = (t64(&shape[1..], &spread(&w)), t64(&shape[1..], &spread(&b)));

        let gn = ops::group_norm(xt.view(), 1, Some(wg.view()), Some(bg.view()), 1e-5).unwrap();
        let ln = ops::layer_norm(xt.view(), &shape[1..], Some(wl.view()), Some(bl.view()), 1e-5).unwrap();
        let msg = format!("shape {shape:?}, seed {seed}");
        assert_close(&format!("y {msg}"), gn.y.data(), ln.y.data(), 1e-14, 1e-13);
        assert_close(&format!("mean {msg}"), gn.mean.data(), ln.mean.data(), 1e-15, 1e-14);
        assert_close(&format!("rstd {msg}"), gn.rstd.data(), ln.rstd.data(), 0.0, 1e-13);

        let ggn =
            ops::group_norm_backward(dyt.view(), xt.view(), 1, (gn.mean.view(), gn.rstd.view()), Some(wg.view()), true)
                .unwrap();
        let gln = ops::layer_norm_backward(
            dyt.view(),
            xt.view(),
            &shape[1..],
            (ln.mean.view(), ln.rstd.view()),
            Some(wl.view()),
            true,
        )
        .unwrap();
        assert_close(&format!("dx {msg}"), ggn.dx.data(), gln.dx.data(), 1e-13, 1e-11);
        let fold = |v: &[f64]| (0..c).map(|ch| sum(v[ch * s..(ch + 1) * s].iter().copied())).collect::<Vec<f64>>();
        let lw = gln.dweight.unwrap();
        let lb = gln.dbias.unwrap();
        assert_close(&format!("dweight {msg}"), ggn.dweight.unwrap().data(), &fold(lw.data()), 1e-13, 1e-11);
        assert_close(&format!("dbias {msg}"), ggn.dbias.unwrap().data(), &fold(lb.data()), 1e-13, 1e-12);
    }
}

/// InstanceNorm is GroupNorm with one group per channel.
#[test]
fn instance_norm_is_group_norm_with_c_groups() {
    let shape = [3usize, 5, 7];
    let x = t64(&shape, &random_vec(105, rand::random(), -2.0, 3.0));
    let w = t64(&[5], &random_vec(5, rand::random(), 1.0, 0.5));
    let a = ops::instance_norm(x.view(), Some(w.view()), None, 1e-5).unwrap();
    let b = ops::group_norm(x.view(), 5, Some(w.view()), None, 1e-5).unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------- finite differences

#[test]
fn group_norm_backward_matches_finite_differences() {
    let cases = [(vec![2usize, 6, 3], 3usize), (vec![3, 4], 2), (vec![1, 6, 2, 2], 1), (vec![2, 5, 3], 5)];
    for (i, (shape, groups)) in cases.into_iter().enumerate() {
        let seed = i as u64 + rand::random::<u32>() as u64;
        let c = shape[1];
        let len = numel(&shape);
        let (x, dy) = (random_vec(len, seed, 0.5, 1.0), random_vec(len, seed + 1, 0.0, 1.0));
        let (w, b) = (random_vec(c, seed + 2, 1.0, 0.5), random_vec(c, seed + 3, 0.0, 1.0));
        let eps = 1e-3;
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let (wt, bt) = (t64(&[c], w), t64(&[c], b));
            dot(
                ops::group_norm(t64(&shape, x).view(), groups, Some(wt.view()), Some(bt.view()), eps).unwrap().y.data(),
                &dy,
            )
        };
        let mut gn = GroupNorm::<f64>::new(groups, c).unwrap().eps(eps);
        gn.weight = Some(t64(&[c], &w));
        gn.bias = Some(t64(&[c], &b));
        let xt = t64(&shape, &x);
        let (_, saved) = gn.forward(xt.view()).unwrap();
        let g = gn.backward(t64(&shape, &dy).view(), xt.view(), &saved).unwrap();
        let msg = format!("seed {seed}, shape {shape:?}, groups {groups}");
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
fn instance_norm_backward_matches_finite_differences_in_training_and_eval() {
    let seed = rand::random::<u32>() as u64;
    let (shape, c) = ([2usize, 3, 4], 3usize);
    let len = numel(&shape);
    let (x, dy) = (random_vec(len, seed, 0.5, 1.0), random_vec(len, seed + 1, 0.0, 1.0));
    let (w, b) = (random_vec(c, seed + 2, 1.0, 0.5), random_vec(c, seed + 3, 0.0, 1.0));
    let mut base = InstanceNorm::<f64>::new(c).affine(true).track_running_stats(true).eps(1e-3);
    base.weight = Some(t64(&[c], &w));
    base.bias = Some(t64(&[c], &b));
    base.running_mean = Some(t64(&[c], &random_vec(c, seed + 4, 0.0, 1.0)));
    base.running_var = Some(t64(&[c], &random_vec(c, seed + 5, 1.5, 1.0)));
    for training in [true, false] {
        let mut m = base.clone();
        if !training {
            m.eval();
        }
        let loss =
            |m: &InstanceNorm<f64>, x: &[f64]| dot(m.clone().forward(t64(&shape, x).view()).unwrap().0.data(), &dy);
        let xt = t64(&shape, &x);
        let (_, saved) = m.clone().forward(xt.view()).unwrap();
        assert_eq!(saved.input_stats, training);
        let g = m.backward(t64(&shape, &dy).view(), xt.view(), &saved).unwrap();
        let msg = format!("training {training}, seed {seed}");
        assert_close(&format!("dx {msg}"), g.dx.data(), &finite_diff(&x, |x| loss(&m, x)), 1e-7, 1e-6);
        let dw = finite_diff(&w, |w| {
            let mut m2 = m.clone();
            m2.weight = Some(t64(&[c], w));
            loss(&m2, &x)
        });
        assert_close(&format!("dw {msg}"), g.dweight.unwrap().data(), &dw, 1e-7, 1e-6);
        let db = finite_diff(&b, |b| {
            let mut m2 = m.clone();
            m2.bias = Some(t64(&[c], b));
            loss(&m2, &x)
        });
        assert_close(&format!("db {msg}"), g.dbias.unwrap().data(), &db, 1e-7, 1e-6);
    }
}

// ---------------------------------------------------------------- module semantics

#[test]
fn group_norm_module_matches_ops_and_affine_false_has_no_parameters() {
    let x = t64(&[2, 6, 5], &random_vec(60, rand::random(), 1.0, 2.0));
    let gn = GroupNorm::<f64>::new(3, 6).unwrap();
    assert_eq!((gn.num_groups(), gn.num_channels(), gn.eps_value()), (3, 6, 1e-5));
    assert_eq!(gn.weight.as_ref().unwrap().data(), &[1.0; 6]);
    assert_eq!(gn.bias.as_ref().unwrap().data(), &[0.0; 6]);
    let (y, saved) = gn.forward(x.view()).unwrap();
    let want = ops::group_norm(x.view(), 3, None, None, 1e-5).unwrap();
    assert_eq!((y, saved.mean), (want.y, want.mean));
    let plain = GroupNorm::<f64>::new(3, 6).unwrap().affine(false);
    assert!(plain.weight.is_none() && plain.bias.is_none());
    let (_, saved) = plain.forward(x.view()).unwrap();
    let g = plain.backward(x.view(), x.view(), &saved).unwrap();
    assert!(g.dweight.is_none() && g.dbias.is_none());
}

#[test]
fn instance_norm_running_statistics_over_training_then_eval() {
    let (shape, c) = ([4usize, 3, 6], 3usize);
    let mut m = InstanceNorm::<f64>::new(c).track_running_stats(true).momentum(Some(0.25));
    assert!(m.weight.is_none() && m.bias.is_none(), "PyTorch's default is affine=False");
    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let seed = rand::random::<u32>() as u64;
    for k in 0..3 {
        let x = random_vec(72, seed + k, k as f64, 1.0 + k as f64);
        m.forward(t64(&shape, &x).view()).unwrap();
        let r = ref_group_norm(&x, &shape, c, None, None, 1e-5);
        for ch in 0..c {
            let mean = (0..4).map(|n| r.mean[n * c + ch]).sum::<f64>() / 4.0;
            let var = (0..4).map(|n| r.var_unbiased[n * c + ch]).sum::<f64>() / 4.0;
            rm[ch] = 0.25 * mean + 0.75 * rm[ch];
            rv[ch] = 0.25 * var + 0.75 * rv[ch];
        }
    }
    assert_eq!(m.num_batches_tracked, 0, "PyTorch's InstanceNorm does not advance it");
    assert_close("running_mean", m.running_mean.as_ref().unwrap().data(), &rm, 1e-14, 1e-13);
    assert_close("running_var", m.running_var.as_ref().unwrap().data(), &rv, 1e-14, 1e-13);

    // Eval: the running statistics normalize and stay.
    m.eval();
    let before = m.clone();
    let x = random_vec(72, seed + 7, 2.0, 3.0);
    let (y, saved) = m.forward(t64(&shape, &x).view()).unwrap();
    assert!(!saved.input_stats);
    assert_eq!(m, before);
    let want: Vec<f64> =
        x.iter().enumerate().map(|(i, v)| (v - rm[(i / 6) % c]) / (rv[(i / 6) % c] + 1e-5).sqrt()).collect();
    assert_close("y eval", y.data(), &want, 1e-13, 1e-12);
    // Eval accepts one value per instance with running statistics (no input statistics).
    assert!(m.forward(t64(&[2, 3], &[1.0; 6]).view()).is_ok());

    // momentum None means 0 for InstanceNorm, as in PyTorch.
    let mut frozen = InstanceNorm::<f64>::new(c).track_running_stats(true).momentum(None);
    frozen.forward(t64(&shape, &x).view()).unwrap();
    assert_eq!(frozen.running_mean.as_ref().unwrap().data(), &[0.0; 3]);
    assert_eq!(frozen.running_var.as_ref().unwrap().data(), &[1.0; 3]);
}

#[test]
fn instance_norm_without_running_statistics_uses_the_input_in_eval() {
    let mut m = InstanceNorm::<f64>::new(2).affine(true);
    assert!(m.running_mean.is_none());
    let x = t64(&[3, 2, 4], &random_vec(24, rand::random(), 1.0, 2.0));
    let (y_train, _) = m.forward(x.view()).unwrap();
    m.eval();
    let (y_eval, saved) = m.forward(x.view()).unwrap();
    assert!(saved.input_stats);
    assert_eq!(y_train, y_eval);
}

#[test]
fn empty_batch_gives_an_empty_output() {
    let x = Tensor::<f64>::new(&[0, 4, 3], vec![]).unwrap();
    let out = ops::group_norm(x.view(), 2, None, None, 1e-5).unwrap();
    assert_eq!((out.y.shape(), out.mean.shape()), (&[0usize, 4, 3][..], &[0usize, 2][..]));
    let g = ops::group_norm_backward(x.view(), x.view(), 2, (out.mean.view(), out.rstd.view()), None, false).unwrap();
    assert_eq!(g.dx.shape(), &[0, 4, 3]);
    let mut m = InstanceNorm::<f64>::new(4).track_running_stats(true);
    assert_eq!(m.forward(x.view()).unwrap().0.shape(), &[0, 4, 3]);
    assert_eq!(m.running_mean.as_ref().unwrap().data(), &[0.0; 4], "an empty batch changes nothing");
}

// ---------------------------------------------------------------- hostile values

#[test]
fn large_offset_keeps_its_variance() {
    // mean 1e6, spread 1e-3, f64: the two-pass statistics keep rstd to about 1e-12.
    let shape = [2usize, 4, 1031];
    let x: Vec<f64> = random_vec(numel(&shape), rand::random(), 0.0, 1.0).iter().map(|v| 1e6 + 1e-3 * v).collect();
    let out = ops::group_norm(t64(&shape, &x).view(), 2, None, None, 0.0).unwrap();
    let want = ref_group_norm(&x, &shape, 2, None, None, 0.0);
    assert_close("rstd", out.rstd.data(), &want.rstd, 0.0, 1e-9);
    assert_close("mean", out.mean.data(), &want.mean, 0.0, 2.0 * f64::EPSILON);
    let tol = y_tol(&x, &shape, 2, &want, None, None);
    assert_within("y", out.y.data(), &want.y, &tol);
    let inst = ops::instance_norm(t64(&shape, &x).view(), None, None, 0.0).unwrap();
    let want = ref_group_norm(&x, &shape, 4, None, None, 0.0);
    assert_close("instance rstd", inst.rstd.data(), &want.rstd, 0.0, 1e-9);
}

#[test]
fn huge_values_nan_and_inf_stay_in_their_group() {
    // f32 values near 1e30: the f64 statistics do not overflow.
    let big: Vec<f32> = random_vec(2 * 6 * 5, rand::random(), 0.0, 1e30).iter().map(|&v| v as f32).collect();
    let out = ops::group_norm(Tensor::new(&[2, 6, 5], big).unwrap().view(), 3, None, None, 1e-5).unwrap();
    assert!(out.y.data().iter().all(|v| v.is_finite() && v.abs() < 4.0), "{:?}", out.y.data());

    let shape = [2usize, 4, 5];
    let mut x = random_vec(40, rand::random(), 0.0, 1.0);
    x[3] = f64::NAN; // sample 0, channel 0 -> group (0, 0)
    x[20 + 2 * 5 + 1] = f64::INFINITY; // sample 1, channel 2 -> group (1, 1)
    let out = ops::group_norm(t64(&shape, &x).view(), 2, None, None, 1e-5).unwrap();
    let keys = group_keys(&shape, 2);
    for (i, (&v, &(k, _))) in out.y.data().iter().zip(&keys).enumerate() {
        if k == 0 || k == 3 {
            assert!(v.is_nan(), "y[{i}] = {v}");
        } else {
            assert!(v.is_finite(), "y[{i}] = {v}");
        }
    }
    let dy = t64(&shape, &[1.0; 40]);
    let g =
        ops::group_norm_backward(dy.view(), t64(&shape, &x).view(), 2, (out.mean.view(), out.rstd.view()), None, false)
            .unwrap();
    for (i, (&v, &(k, _))) in g.dx.data().iter().zip(&keys).enumerate() {
        assert_eq!(v.is_finite(), k == 1 || k == 2, "dx[{i}] = {v}");
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let x = t64(&[2, 6, 3], &[0.5; 36]);
    let c6 = t64(&[6], &[1.0; 6]);
    let c4 = t64(&[4], &[1.0; 4]);
    // num_groups 0 or not dividing C.
    for g in [0usize, 4, 7] {
        let e = ops::group_norm(x.view(), g, None, None, 1e-5).unwrap_err();
        assert!(e.to_string().contains("num_groups") && e.to_string().contains('6'), "{e}");
    }
    assert!(GroupNorm::<f32>::new(4, 6).is_err());
    assert!(GroupNorm::<f32>::new(0, 6).is_err());
    assert!(GroupNorm::<f32>::new(1, 0).is_err(), "a GroupNorm over no channels is meaningless");
    // Wrong parameter lengths.
    assert!(matches!(ops::group_norm(x.view(), 3, Some(c4.view()), None, 1e-5), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(ops::group_norm(x.view(), 3, None, Some(c4.view()), 1e-5), Err(Error::ShapeMismatch { .. })));
    assert!(ops::instance_norm(x.view(), Some(c4.view()), None, 1e-5).is_err());
    // Rank, zero-size dims where there is nothing to normalize.
    assert!(ops::group_norm(t64(&[6], &[1.0; 6]).view(), 1, None, None, 1e-5).is_err());
    assert!(ops::group_norm(Tensor::<f64>::new(&[2, 6, 0], vec![]).unwrap().view(), 3, None, None, 1e-5).is_err());
    assert!(ops::group_norm(Tensor::<f64>::new(&[2, 0, 3], vec![]).unwrap().view(), 1, None, None, 1e-5).is_err());
    // InstanceNorm needs more than one spatial value per instance.
    let e = ops::instance_norm(t64(&[4, 3], &[1.0; 12]).view(), None, None, 1e-5).unwrap_err();
    assert!(e.to_string().contains("more than one spatial element"), "{e}");
    assert!(ops::instance_norm(t64(&[4, 3, 1, 1], &[1.0; 12]).view(), None, None, 1e-5).is_err());
    // eps.
    assert!(ops::group_norm(x.view(), 3, None, None, -1.0).is_err());
    assert!(ops::group_norm(x.view(), 3, None, None, f64::INFINITY).is_err());
    // Backward shapes.
    let out = ops::group_norm(x.view(), 3, Some(c6.view()), None, 1e-5).unwrap();
    let saved = (out.mean.view(), out.rstd.view());
    assert!(ops::group_norm_backward(t64(&[2, 6, 2], &[1.0; 24]).view(), x.view(), 3, saved, None, false).is_err());
    assert!(ops::group_norm_backward(x.view(), x.view(), 2, saved, None, false).is_err(), "saved stats are [2, 3]");
    assert!(ops::group_norm_backward(x.view(), x.view(), 3, saved, Some(c4.view()), false).is_err());
    assert!(ops::group_norm_backward(x.view(), x.view(), 3, (out.mean.view(), c6.view()), None, false).is_err());
    // Running statistics: wrong shape, momentum out of range; a refused update changes nothing.
    let (mut rm, mut rv) = (t64(&[6], &[0.0; 6]), t64(&[6], &[1.0; 6]));
    let mut bad = t64(&[5], &[1.0; 5]);
    assert!(ops::instance_norm_update_running(x.view(), &mut rm, &mut bad, 0.1).is_err());
    assert!(ops::instance_norm_update_running(x.view(), &mut rm, &mut rv, 1.5).is_err());
    assert!(ops::instance_norm_update_running(x.view(), &mut rm, &mut rv, f64::NAN).is_err());
    assert_eq!(rm.data(), &[0.0; 6]);
    // Kernel buffers.
    let layout = GroupLayout::new(2, 6, 3, 3).unwrap();
    let (mut y, mut m, mut r) = (vec![0.0; 35], vec![0.0; 6], vec![0.0; 6]);
    assert!(kernels::group_norm_forward(x.data(), layout, Affine::none(), 1e-5, &mut y, &mut m, &mut r).is_err());
    let mut y = vec![0.0; 36];
    assert!(kernels::group_norm_forward(x.data(), layout, Affine::none(), 1e-5, &mut y, &mut m[..5], &mut r).is_err());
    assert!(kernels::group_norm_forward(&x.data()[1..], layout, Affine::none(), 1e-5, &mut y, &mut m, &mut r).is_err());
    let mut dx = vec![0.0; 36];
    let grads = Grads { dx: &mut dx, dweight: Some(&mut [0.0; 5]), dbias: None };
    assert!(kernels::group_norm_backward(x.data(), x.data(), layout, &m, &r, None, grads).is_err());
    // Layouts built by hand (the fields are public) are checked by every kernel.
    for bad in [
        GroupLayout { batch: 2, channels: 6, spatial: 3, groups: 4 },
        GroupLayout { batch: 2, channels: 6, spatial: 3, groups: 0 },
        GroupLayout { batch: 6, channels: 0, spatial: 6, groups: 1 },
        GroupLayout { batch: 2, channels: 18, spatial: 0, groups: 3 },
    ] {
        let n = bad.batch * bad.channels * bad.spatial;
        let (xb, mut yb) = (vec![1.0f64; n], vec![0.0f64; n]);
        let (mut m, mut r) = (vec![0.0; 24], vec![0.0; 24]);
        let e = kernels::group_norm_forward(&xb, bad, Affine::none(), 1e-5, &mut yb, &mut m, &mut r).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. } | Error::Empty { .. }), "{bad:?}: {e}");
        assert!(kernels::group_norm_stats(&xb, bad, 1e-5).is_err());
        assert!(kernels::group_norm_apply(&xb, bad, &[(0.0, 1.0); 24], Affine::none(), &mut yb).is_err());
        let grads = Grads { dx: &mut yb, dweight: None, dbias: None };
        assert!(kernels::group_norm_backward(&xb, &xb, bad, &m, &r, None, grads).is_err());
    }
    // An empty batch of huge groups holds nothing and is fine.
    let big = 1usize << 40;
    let empty = Tensor::<f64>::new(&[0, big, big], vec![]).unwrap();
    assert_eq!(ops::group_norm(empty.view(), 1, None, None, 1e-5).unwrap().y.shape(), &[0, big, big]);
    assert_eq!(ops::instance_norm(empty.view(), None, None, 1e-5).unwrap().y.shape(), &[0, big, big]);

    // Modules: wrong channel count; a failed forward changes nothing.
    let gn = GroupNorm::<f64>::new(2, 4).unwrap();
    let e = gn.forward(x.view()).unwrap_err();
    assert!(e.to_string().contains("4 channels"), "{e}");
    let mut inst = InstanceNorm::<f64>::new(6).track_running_stats(true);
    inst.weight = Some(c4.clone());
    assert!(inst.forward(x.view()).is_err());
    assert_eq!(inst.running_mean.as_ref().unwrap().data(), &[0.0; 6]);
    let mut inst = InstanceNorm::<f64>::new(6).track_running_stats(true);
    inst.running_var = None;
    assert!(inst.forward(x.view()).is_err(), "running_mean without running_var");
    assert!(InstanceNorm::<f64>::new(5).forward(x.view()).is_err());
}

/// `dy` near 3e37: sums of 16 such values overflow `f32`, so the `f32` backward
/// of GroupNorm and of LayerNorm must fall back to `f64` sums, and `dx` stays
/// finite and close to the f64 result (which is of the order of the spread of
/// `dy`, not of `dy` itself).
#[test]
fn f32_backward_with_dy_whose_f32_sums_overflow() {
    let (c, s) = (2usize, 512usize);
    let len = c * s;
    let x: Vec<f32> = (0..len).map(|i| ((i * 37) % 11) as f32 * 0.25 - 1.0).collect();
    let dy: Vec<f32> = (0..len).map(|i| 3e37 * (1.0 + ((i * 13) % 7) as f32 * 1e-3)).collect();
    let layout = GroupLayout::new(1, c, s, 1).unwrap();
    let (mut y, mut m, mut r) = (vec![0f32; len], vec![0f32; 1], vec![0f32; 1]);
    kernels::group_norm_forward(&x, layout, Affine::none(), 1e-5, &mut y, &mut m, &mut r).unwrap();
    let (mean, rstd) = (m[0] as f64, r[0] as f64);
    let xhat: Vec<f64> = x.iter().map(|&v| (v as f64 - mean) * rstd).collect();
    let g: Vec<f64> = dy.iter().map(|&v| v as f64).collect();
    let mean_g = g.iter().sum::<f64>() / len as f64;
    let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / len as f64;
    let want: Vec<f64> = (0..len).map(|i| rstd * (g[i] - mean_g - xhat[i] * mean_gx)).collect();
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let check = |what: &str, dx: &[f32]| {
        for (i, (&got, &w)) in dx.iter().zip(&want).enumerate() {
            assert!(got.is_finite(), "{what} dx[{i}] = {got}");
            assert!((got as f64 - w).abs() <= 1e-4 * scale, "{what} dx[{i}] {got} vs {w}");
        }
    };
    let mut dx = vec![0f32; len];
    let grads = Grads { dx: &mut dx, dweight: None, dbias: None };
    kernels::group_norm_backward(&dy, &x, layout, &m, &r, None, grads).unwrap();
    check("group_norm", &dx);
    let mut dx = vec![0f32; len];
    let grads = Grads { dx: &mut dx, dweight: None, dbias: None };
    kernels::layer_norm_backward(&dy, &x, len, &m, &r, None, grads).unwrap();
    check("layer_norm", &dx);
}

/// `f64` groups whose squared deviations leave `f64`'s range (spreads beyond
/// about 1e154, or below about 1e-154 with `eps` below 2^-960): scaled by a
/// power of two `s` (and `eps` by `s²`, see `SCALES_AND_EPS`), each
/// normalizes as the unscaled group does (mean and `rstd` scaled, `y` the
/// same, `dx` scaled as `rstd`), and `group_norm_stats` gives the forward's
/// statistics. GroupNorm and InstanceNorm; until 2026-12-04 they gave NaN
/// above and ±inf below.
#[test]
fn f64_groups_beyond_the_range_of_squares_normalize_as_scaled_copies() {
    let seed: u64 = rand::random();
    let shape = [2usize, 6, 37];
    let len = shape.iter().product();
    let mut x0 = random_vec(len, seed, 0.0, 1.0);
    x0[6 * 37..].iter_mut().for_each(|v| *v += 1e6); // sample 1 far from zero
    let dy = t64(&shape, &random_vec(len, seed ^ 1, 0.25, 1.0));
    let w = t64(&[6], &random_vec(6, seed ^ 2, 1.0, 0.5));
    let run = |x: &[f64], groups: usize, eps: f64| {
        let xt = t64(&shape, x);
        let out = ops::group_norm(xt.view(), groups, Some(w.view()), Some(w.view()), eps).unwrap();
        let layout = GroupLayout::new(2, 6, 37, groups).unwrap();
        let stats = kernels::group_norm_stats(x, layout, eps).unwrap();
        let (mean, rstd): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
        assert_eq!((&mean[..], &rstd[..]), (out.mean.data(), out.rstd.data()), "group_norm_stats, seed {seed}");
        let saved = (out.mean.view(), out.rstd.view());
        let g = ops::group_norm_backward(dy.view(), xt.view(), groups, saved, Some(w.view()), true).unwrap();
        NormRun::of(&out.y, [&out.mean, &out.rstd], g)
    };
    for groups in [2, 6] {
        for (k, eps) in SCALES_AND_EPS {
            let s = 2f64.powi(k);
            let base = run(&x0, groups, eps);
            let got = run(&x0.iter().map(|v| v * s).collect::<Vec<_>>(), groups, eps * s * s);
            assert_scaled_copy(&format!("{groups} groups, 2^{k}, eps {eps}, seed {seed}"), &got, &base, s, 1e-14);
        }
    }
}
