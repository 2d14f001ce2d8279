//! BatchNorm checked against a plain f64 reference written from the formulas, on
//! random shapes of rank 2 to 5 with the channel on every axis, fresh seeds,
//! hostile values; finite differences for both backward modes; running
//! statistics (momentum, cumulative average, biased or unbiased), eval mode,
//! Keras's conventions, folding, and every error path.

mod layers_support;

use layers_support::*;
use normkit::kernels::{self, Affine, ChannelLayout};
use normkit::{ops, BatchNorm, Error, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- reference

/// BatchNorm from the formula in f64: per channel (the values at every index whose
/// coordinate on `axis` is c), the mean, the biased and unbiased variance, rstd
/// and y.
struct RefBn {
    y: Vec<f64>,
    mean: Vec<f64>,
    var_biased: Vec<f64>,
    var_unbiased: Vec<f64>,
    rstd: Vec<f64>,
}

fn ref_batch_norm(x: &[f64], shape: &[usize], axis: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> RefBn {
    let ch = channel_of(shape, axis);
    let c = shape[axis];
    let values = |k: usize| x.iter().zip(&ch).filter(move |(_, &cc)| cc == k).map(|(v, _)| *v);
    let mut r = RefBn { y: vec![], mean: vec![], var_biased: vec![], var_unbiased: vec![], rstd: vec![] };
    for k in 0..c {
        let n = values(k).count() as f64;
        let mean = sum(values(k)) / n;
        // Corrected two-pass: the plain Σ(v - mean)² keeps an error n·δ² from
        // the rounding δ of the mean, which for two values at 1e6 about 1e-6
        // apart is 3e-9 relative, above the 1e-9 these tests ask of normkit
        // (the exact variance of seed 10432853583450978135 is normkit's).
        let dev = sum(values(k).map(|v| v - mean));
        let m2 = sum(values(k).map(|v| (v - mean) * (v - mean))) - dev * dev / n;
        r.mean.push(mean);
        r.var_biased.push(m2 / n);
        r.var_unbiased.push(m2 / (n - 1.0));
        r.rstd.push(1.0 / (m2 / n + eps).sqrt());
    }
    r.y = x
        .iter()
        .zip(&ch)
        .map(|(v, &k)| (v - r.mean[k]) * r.rstd[k] * w.map_or(1.0, |w| w[k]) + b.map_or(0.0, |b| b[k]))
        .collect();
    r
}

/// Training-mode backward by the chain rule through mean and variance, per channel.
fn ref_batch_norm_backward(
    x: &[f64],
    dy: &[f64],
    shape: &[usize],
    axis: usize,
    w: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let fwd = ref_batch_norm(x, shape, axis, None, None, eps);
    let ch = channel_of(shape, axis);
    let c = shape[axis];
    let n = (x.len() / c) as f64;
    let (mut dvar, mut dmean, mut dw, mut db) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    for k in 0..c {
        let (m, r, wk) = (fwd.mean[k], fwd.rstd[k], w.map_or(1.0, |w| w[k]));
        let ch = &ch;
        let idx = || (0..x.len()).filter(move |&i| ch[i] == k);
        dvar[k] = sum(idx().map(|i| dy[i] * wk * (x[i] - m))) * -0.5 * r.powi(3);
        dmean[k] = -r * sum(idx().map(|i| dy[i] * wk)) + dvar[k] * -2.0 * sum(idx().map(|i| x[i] - m)) / n;
        dw[k] = sum(idx().map(|i| dy[i] * (x[i] - m) * r));
        db[k] = sum(idx().map(|i| dy[i]));
    }
    let dx = (0..x.len())
        .map(|i| {
            let k = ch[i];
            dy[i] * w.map_or(1.0, |w| w[k]) * fwd.rstd[k] + dvar[k] * 2.0 * (x[i] - fwd.mean[k]) / n + dmean[k] / n
        })
        .collect();
    (dx, dw, db)
}

/// Per-element tolerance of an f64 output against the reference: a rounding of
/// x or of the mean (relative eps) moves y by eps·(|x| + |mean|)·rstd·|w|; the
/// variance's relative error (about sqrt(n)·eps) moves it by that times |x̂·w|.
fn y_tol(x: &[f64], shape: &[usize], axis: usize, r: &RefBn, w: Option<&[f64]>, b: Option<&[f64]>) -> Vec<f64> {
    let ch = channel_of(shape, axis);
    let n = (x.len() / shape[axis]) as f64;
    let e = f64::EPSILON;
    x.iter()
        .zip(&ch)
        .map(|(v, &k)| {
            let wk = w.map_or(1.0, |w| w[k].abs()).max(1.0);
            let bk = b.map_or(0.0, |b| b[k].abs());
            let cond = (v.abs() + r.mean[k].abs()) * r.rstd[k];
            32.0 * e * (1.0 + n.sqrt()) * (cond + 1.0) * wk + 4.0 * e * bk
        })
        .collect()
}

struct Problem {
    shape: Vec<usize>,
    axis: usize,
    x: Vec<f64>,
    dy: Vec<f64>,
    w: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    eps: f64,
}

fn problem(seed: u64, kinds: &[(f64, f64)]) -> Problem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rank = rng.random_range(2..=5);
    let shape = random_shape(&mut rng, rank);
    let axis = rng.random_range(0..rank);
    let (offset, scale) = kinds[rng.random_range(0..kinds.len())];
    let len = numel(&shape);
    let c = shape[axis];
    let x = random_vec(len, rng.random(), offset, scale);
    let dy = random_vec(len, rng.random(), 0.0, 1.0);
    let w = rng.random_bool(0.7).then(|| random_vec(c, rng.random(), 1.0, 0.5));
    let b = rng.random_bool(0.7).then(|| random_vec(c, rng.random(), 0.0, 1.0));
    let eps = [1e-5, 1e-3, 0.1][rng.random_range(0..3)];
    Problem { shape, axis, x, dy, w, b, eps }
}

fn t64(shape: &[usize], v: &[f64]) -> Tensor<f64> {
    Tensor::new(shape, v.to_vec()).unwrap()
}

fn opt_view<T: Copy>(t: &Option<Tensor<T>>) -> Option<normkit::TensorRef<'_, T>> {
    t.as_ref().map(Tensor::view)
}

/// The axis as the caller may write it: non-negative or counted from the end.
fn spelled(axis: usize, rank: usize, negative: bool) -> isize {
    if negative {
        axis as isize - rank as isize
    } else {
        axis as isize
    }
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn train_f64_matches_reference(seed in any::<u64>(), negative in any::<bool>()) {
        let p = problem(seed, &VALUE_KINDS);
        let axis = spelled(p.axis, p.shape.len(), negative);
        let x = t64(&p.shape, &p.x);
        let c = p.shape[p.axis];
        let (w, b) = (p.w.as_ref().map(|v| t64(&[c], v)), p.b.as_ref().map(|v| t64(&[c], v)));
        let res = ops::batch_norm_train(x.view(), axis, opt_view(&w), opt_view(&b), p.eps);
        if p.x.len() / c < 2 {
            prop_assert!(res.is_err(), "one value per channel must be refused");
            return Ok(());
        }
        let out = res.unwrap();
        let want = ref_batch_norm(&p.x, &p.shape, p.axis, p.w.as_deref(), p.b.as_deref(), p.eps);
        let tol = y_tol(&p.x, &p.shape, p.axis, &want, p.w.as_deref(), p.b.as_deref());
        assert_within("y", out.y.data(), &want.y, &tol);
        let mean_tol: Vec<f64> = want.mean.iter().zip(&want.var_biased)
            .map(|(m, v)| 8.0 * f64::EPSILON * (m.abs() + v.sqrt())).collect();
        assert_within("save_mean", out.save_mean.data(), &want.mean, &mean_tol);
        assert_close("save_rstd", out.save_rstd.data(), &want.rstd, 0.0, 1e-9);
        for (k, m) in out.batch_stats.iter().enumerate() {
            prop_assert_eq!(m.count() as usize, p.x.len() / c);
            prop_assert!(close(m.var_unbiased(), want.var_unbiased[k], 0.0, 1e-9));
        }
    }

    #[test]
    fn train_f32_is_within_its_bound_of_the_f64_result(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS);
        let c = p.shape[p.axis];
        if p.x.len() / c < 2 { return Ok(()); }
        // Work on the f32 values, widened exactly, in the reference.
        let (x32, w32, b32) = (narrow(&p.x), p.w.as_deref().map(narrow), p.b.as_deref().map(narrow));
        let layout = ChannelLayout::of_shape(&p.shape, p.axis).unwrap();
        let (mut y, mut m, mut r) = (vec![0f32; x32.len()], vec![0f32; c], vec![0f32; c]);
        let mut stats = vec![normkit::Moments::new(); c];
        let affine = Affine { weight: w32.as_deref(), bias: b32.as_deref() };
        kernels::batch_norm_forward_train(&x32, layout, affine, p.eps, &mut y, &mut m, &mut r, &mut stats).unwrap();
        let (xw, ww, bw) = (widen(&x32), w32.as_deref().map(widen), b32.as_deref().map(widen));
        let want = ref_batch_norm(&xw, &p.shape, p.axis, ww.as_deref(), bw.as_deref(), p.eps);
        let tol64 = y_tol(&xw, &p.shape, p.axis, &want, ww.as_deref(), bw.as_deref());
        // The bound of the f32 elementwise pass (f32_normalize_tol) on top of
        // the f64-accurate statistics' own tolerance.
        let ch = channel_of(&p.shape, p.axis);
        let tol: Vec<f64> = (0..want.y.len())
            .map(|i| {
                let k = ch[i];
                let (wk, bk) = (ww.as_ref().map_or(1.0, |w| w[k]), bw.as_ref().map_or(0.0, |b| b[k]));
                f32_normalize_tol(want.y[i], bk, want.mean[k], want.rstd[k], wk) + tol64[i]
            })
            .collect();
        assert_within("y", &widen(&y), &want.y, &tol);
        assert_close("save_rstd", &widen(&r), &want.rstd, 0.0, f32::EPSILON as f64);
    }

    #[test]
    fn train_backward_f64_matches_reference(seed in any::<u64>()) {
        let p = problem(seed, &[(0.0, 1.0), (5.0, 3.0), (-20.0, 100.0)]);
        let c = p.shape[p.axis];
        if p.x.len() / c < 2 { return Ok(()); }
        let x = t64(&p.shape, &p.x);
        let (w, b) = (p.w.as_ref().map(|v| t64(&[c], v)), p.b.as_ref().map(|v| t64(&[c], v)));
        let axis = p.axis as isize;
        let out = ops::batch_norm_train(x.view(), axis, opt_view(&w), opt_view(&b), p.eps).unwrap();
        let dy = t64(&p.shape, &p.dy);
        let g = ops::batch_norm_backward(dy.view(), x.view(), axis, out.save_mean.view(), out.save_rstd.view(),
            opt_view(&w), b.is_some()).unwrap();
        let (dx, dw, db) = ref_batch_norm_backward(&p.x, &p.dy, &p.shape, p.axis, p.w.as_deref(), p.eps);
        let n = (p.x.len() / c) as f64;
        let rmax = out.save_rstd.data().iter().fold(1.0f64, |a, v| a.max(*v));
        assert_close("dx", g.dx.data(), &dx, 1e-12 * rmax * n, 1e-9);
        if let Some(gw) = &g.dweight { assert_close("dweight", gw.data(), &dw, 1e-12 * n, 1e-9); }
        if let Some(gb) = &g.dbias { assert_close("dbias", gb.data(), &db, 1e-13 * n, 1e-12); }
        prop_assert_eq!(g.dweight.is_some(), p.w.is_some());
        prop_assert_eq!(g.dbias.is_some(), p.b.is_some());
    }

    #[test]
    fn eval_f64_matches_reference_and_its_backward(seed in any::<u64>()) {
        let p = problem(seed, &VALUE_KINDS);
        let c = p.shape[p.axis];
        let rm = random_vec(c, seed ^ 1, 0.0, 2.0);
        let rv = random_vec(c, seed ^ 2, 1.5, 1.0);
        let x = t64(&p.shape, &p.x);
        let (w, b) = (p.w.as_ref().map(|v| t64(&[c], v)), p.b.as_ref().map(|v| t64(&[c], v)));
        let axis = spelled(p.axis, p.shape.len(), seed % 2 == 0);
        let y = ops::batch_norm_eval(x.view(), axis, t64(&[c], &rm).view(), t64(&[c], &rv).view(),
            opt_view(&w), opt_view(&b), p.eps).unwrap();
        let ch = channel_of(&p.shape, p.axis);
        let wk = |k: usize| p.w.as_ref().map_or(1.0, |w| w[k]);
        let bk = |k: usize| p.b.as_ref().map_or(0.0, |b| b[k]);
        let rstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v + p.eps).sqrt()).collect();
        let want: Vec<f64> = p.x.iter().zip(&ch).map(|(v, &k)| (v - rm[k]) * rstd[k] * wk(k) + bk(k)).collect();
        let tol: Vec<f64> = p.x.iter().zip(&ch)
            .map(|(v, &k)| 8.0 * f64::EPSILON * ((v.abs() + rm[k].abs()) * rstd[k] * wk(k).abs() + bk(k).abs())).collect();
        assert_within("y", y.data(), &want, &tol);

        let dy = t64(&p.shape, &p.dy);
        let g = ops::batch_norm_eval_backward(dy.view(), x.view(), axis, t64(&[c], &rm).view(), t64(&[c], &rv).view(),
            opt_view(&w), b.is_some(), p.eps).unwrap();
        let dx: Vec<f64> = p.dy.iter().zip(&ch).map(|(d, &k)| d * wk(k) * rstd[k]).collect();
        assert_close("dx", g.dx.data(), &dx, 0.0, 4.0 * f64::EPSILON);
        if let Some(gw) = &g.dweight {
            let dw: Vec<f64> = (0..c).map(|k| sum((0..p.x.len()).filter(|&i| ch[i] == k)
                .map(|i| p.dy[i] * (p.x[i] - rm[k]) * rstd[k]))).collect();
            let scale = p.x.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            assert_close("dweight", gw.data(), &dw, 1e-14 * scale * p.x.len() as f64, 1e-12);
        }
    }

    #[test]
    fn running_statistics_follow_the_formula(seed in any::<u64>(), unbiased in any::<bool>(),
            momentum in prop::sample::select(vec![Some(0.1), Some(0.0), Some(1.0), Some(0.37), None]),
            tracked in 0u64..5) {
        let p = problem(seed, &[(0.0, 1.0), (5.0, 3.0)]);
        let c = p.shape[p.axis];
        if p.x.len() / c < 2 { return Ok(()); }
        let out = ops::batch_norm_train(t64(&p.shape, &p.x).view(), p.axis as isize, None, None, p.eps).unwrap();
        let (rm0, rv0) = (random_vec(c, seed ^ 3, 0.0, 1.0), random_vec(c, seed ^ 4, 1.0, 0.5));
        let (mut rm, mut rv, mut nbt) = (t64(&[c], &rm0), t64(&[c], &rv0), tracked);
        ops::batch_norm_update_running(&mut rm, &mut rv, &mut nbt, &out.batch_stats, momentum, unbiased).unwrap();
        prop_assert_eq!(nbt, tracked + 1);
        let f = momentum.unwrap_or(1.0 / (tracked + 1) as f64);
        let want = ref_batch_norm(&p.x, &p.shape, p.axis, None, None, p.eps);
        let var = if unbiased { &want.var_unbiased } else { &want.var_biased };
        let wm: Vec<f64> = (0..c).map(|k| f * want.mean[k] + (1.0 - f) * rm0[k]).collect();
        let wv: Vec<f64> = (0..c).map(|k| f * var[k] + (1.0 - f) * rv0[k]).collect();
        assert_close("running_mean", rm.data(), &wm, 1e-14, 1e-13);
        assert_close("running_var", rv.data(), &wv, 1e-14, 1e-12);
    }
}

// ---------------------------------------------------------------- finite differences

#[test]
fn train_backward_matches_finite_differences() {
    for (i, (shape, axis)) in [(vec![4usize, 3], 1usize), (vec![2, 3, 5], 1), (vec![3, 2, 2, 4], 3), (vec![2, 2, 3], 0)]
        .into_iter()
        .enumerate()
    {
        let seed = i as u64 + rand::random::<u32>() as u64;
        let c = shape[axis];
        let len = numel(&shape);
        let (x, dy) = (random_vec(len, seed, 0.5, 1.0), random_vec(len, seed + 1, 0.0, 1.0));
        let (w, b) = (random_vec(c, seed + 2, 1.0, 0.5), random_vec(c, seed + 3, 0.0, 1.0));
        let eps = 1e-3;
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let (wt, bt) = (t64(&[c], w), t64(&[c], b));
            let out =
                ops::batch_norm_train(t64(&shape, x).view(), axis as isize, Some(wt.view()), Some(bt.view()), eps)
                    .unwrap();
            dot(out.y.data(), &dy)
        };
        let mut bn = BatchNorm::<f64>::new(c).axis(axis as isize).eps(eps);
        bn.weight = Some(t64(&[c], &w));
        bn.bias = Some(t64(&[c], &b));
        let xt = t64(&shape, &x);
        let (_, saved) = bn.forward(xt.view()).unwrap();
        let g = bn.backward(t64(&shape, &dy).view(), xt.view(), &saved).unwrap();
        let msg = format!("seed {seed}, shape {shape:?}, axis {axis}");
        assert_close(&format!("dx {msg}"), g.dx.data(), &finite_diff(&x, |x| loss(x, &w, &b)), 1e-7, 1e-6);
        let gw = g.dweight.unwrap();
        assert_close(&format!("dw {msg}"), gw.data(), &finite_diff(&w, |w| loss(&x, w, &b)), 1e-7, 1e-6);
        let gb = g.dbias.unwrap();
        assert_close(&format!("db {msg}"), gb.data(), &finite_diff(&b, |b| loss(&x, &w, b)), 1e-7, 1e-6);
    }
}

#[test]
fn eval_backward_matches_finite_differences() {
    let seed = rand::random::<u32>() as u64;
    let (shape, c) = (vec![3usize, 4, 5], 4usize);
    let len = numel(&shape);
    let (x, dy) = (random_vec(len, seed, 0.5, 1.0), random_vec(len, seed + 1, 0.0, 1.0));
    let (w, b) = (random_vec(c, seed + 2, 1.0, 0.5), random_vec(c, seed + 3, 0.0, 1.0));
    let (rm, rv) = (random_vec(c, seed + 4, 0.0, 1.0), random_vec(c, seed + 5, 1.5, 1.0));
    let mut bn = BatchNorm::<f64>::new(c).eps(1e-4);
    bn.weight = Some(t64(&[c], &w));
    bn.bias = Some(t64(&[c], &b));
    bn.running_mean = Some(t64(&[c], &rm));
    bn.running_var = Some(t64(&[c], &rv));
    bn.eval();
    let loss = |bn: &BatchNorm<f64>, x: &[f64]| {
        let mut bn = bn.clone();
        dot(bn.forward(t64(&shape, x).view()).unwrap().0.data(), &dy)
    };
    let xt = t64(&shape, &x);
    let (_, saved) = bn.clone().forward(xt.view()).unwrap();
    assert!(!saved.batch_stats);
    let g = bn.backward(t64(&shape, &dy).view(), xt.view(), &saved).unwrap();
    assert_close("dx", g.dx.data(), &finite_diff(&x, |x| loss(&bn, x)), 1e-7, 1e-6);
    let dw = finite_diff(&w, |w| {
        let mut m = bn.clone();
        m.weight = Some(t64(&[c], w));
        loss(&m, &x)
    });
    assert_close("dw", g.dweight.unwrap().data(), &dw, 1e-7, 1e-6);
    let db = finite_diff(&b, |b| {
        let mut m = bn.clone();
        m.bias = Some(t64(&[c], b));
        loss(&m, &x)
    });
    assert_close("db", g.dbias.unwrap().data(), &db, 1e-7, 1e-6);
}

// ---------------------------------------------------------------- module semantics

#[test]
fn cumulative_average_is_the_mean_of_the_batch_statistics() {
    let mut bn = BatchNorm::<f64>::new(3).momentum(None).running_var_unbiased(true);
    let seed = rand::random::<u32>() as u64;
    let (mut means, mut vars) = (vec![0.0; 3], vec![0.0; 3]);
    for k in 0..4 {
        let x = random_vec(5 * 3 * 2, seed + k, k as f64, 1.0 + k as f64);
        bn.forward(t64(&[5, 3, 2], &x).view()).unwrap();
        let r = ref_batch_norm(&x, &[5, 3, 2], 1, None, None, 1e-5);
        for c in 0..3 {
            means[c] += r.mean[c] / 4.0;
            vars[c] += r.var_unbiased[c] / 4.0;
        }
    }
    assert_eq!(bn.num_batches_tracked, 4);
    assert_close("running_mean", bn.running_mean.as_ref().unwrap().data(), &means, 1e-14, 1e-13);
    assert_close("running_var", bn.running_var.as_ref().unwrap().data(), &vars, 1e-14, 1e-13);
}

#[test]
fn keras_constructor_gives_keras_numbers() {
    // keras.layers.BatchNormalization(): axis -1, epsilon 1e-3, momentum 0.99 (the
    // moving average keeps 0.99 of itself), biased moving variance.
    let mut bn = BatchNorm::<f64>::keras(2);
    assert_eq!(bn.axis_value(), -1);
    assert_eq!(bn.eps_value(), 1e-3);
    assert!(!bn.is_running_var_unbiased());
    let x = [1.0, 10.0, 2.0, 20.0, 4.0, 40.0, 5.0, 30.0]; // (4, 2), channels last
    let (y, _) = bn.forward(t64(&[4, 2], &x).view()).unwrap();
    let (m0, m1) = (3.0, 25.0);
    let (v0, v1) = ((4.0 + 1.0 + 1.0 + 4.0) / 4.0, (225.0 + 25.0 + 225.0 + 25.0) / 4.0);
    assert_close("y0", &[y.data()[0]], &[(1.0 - m0) / (v0 + 1e-3f64).sqrt()], 1e-14, 1e-14);
    let rm = bn.running_mean.as_ref().unwrap().data().to_vec();
    let rv = bn.running_var.as_ref().unwrap().data().to_vec();
    assert_close("moving_mean", &rm, &[0.01 * m0, 0.01 * m1], 1e-15, 1e-12);
    assert_close("moving_variance", &rv, &[0.99 + 0.01 * v0, 0.99 + 0.01 * v1], 1e-15, 1e-12);
}

#[test]
fn eval_uses_running_statistics_and_leaves_them() {
    let mut bn = BatchNorm::<f32>::new(3);
    let x = Tensor::new(&[4, 3], (0..12).map(|v| v as f32).collect()).unwrap();
    bn.forward(x.view()).unwrap();
    let before = bn.clone();
    bn.eval();
    let (y, saved) = bn.forward(x.view()).unwrap();
    assert!(!saved.batch_stats);
    assert_eq!(bn.running_mean, before.running_mean);
    assert_eq!(bn.running_var, before.running_var);
    assert_eq!(bn.num_batches_tracked, 1);
    let rm = before.running_mean.unwrap();
    let rv = before.running_var.unwrap();
    let want = ops::batch_norm_eval(x.view(), 1, rm.view(), rv.view(), None, None, 1e-5).unwrap();
    assert_eq!(y, want);
}

#[test]
fn eval_without_running_statistics_uses_the_batch() {
    let mut bn = BatchNorm::<f64>::new(2).track_running_stats(false);
    assert!(bn.running_mean.is_none() && bn.running_var.is_none());
    let x = t64(&[3, 2, 2], &random_vec(12, rand::random(), 1.0, 2.0));
    let (y_train, _) = bn.forward(x.view()).unwrap();
    bn.eval();
    let (y_eval, saved) = bn.forward(x.view()).unwrap();
    assert!(saved.batch_stats);
    assert_eq!(y_train, y_eval);
    assert_eq!(bn.num_batches_tracked, 0);
    assert!(bn.fold_into_affine().is_err());
}

#[test]
fn fold_into_affine_reproduces_eval() {
    let c = 4;
    let mut bn = BatchNorm::<f64>::new(c).axis(-1);
    let seed = rand::random::<u32>() as u64;
    bn.weight = Some(t64(&[c], &random_vec(c, seed, 1.0, 0.5)));
    bn.bias = Some(t64(&[c], &random_vec(c, seed + 1, 0.0, 1.0)));
    for k in 0..3 {
        bn.forward(t64(&[6, 2, c], &random_vec(48, seed + 2 + k, 3.0, 2.0)).view()).unwrap();
    }
    bn.eval();
    let x = random_vec(48, seed + 9, 3.0, 2.0);
    let (y, _) = bn.forward(t64(&[6, 2, c], &x).view()).unwrap();
    let f = bn.fold_into_affine().unwrap();
    let folded: Vec<f64> =
        x.iter().enumerate().map(|(i, v)| v * f.scale.data()[i % c] + f.shift.data()[i % c]).collect();
    assert_close("folded", &folded, y.data(), 1e-13, 1e-13);
}

#[test]
fn momentum_zero_keeps_statistics_and_counts_the_batch() {
    let mut bn = BatchNorm::<f64>::new(2).momentum(Some(0.0));
    bn.forward(t64(&[3, 2], &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0]).view()).unwrap();
    assert_eq!(bn.running_mean.as_ref().unwrap().data(), &[0.0, 0.0]);
    assert_eq!(bn.running_var.as_ref().unwrap().data(), &[1.0, 1.0]);
    assert_eq!(bn.num_batches_tracked, 1);
}

// ---------------------------------------------------------------- hostile values

#[test]
fn channels_last_large_offset_keeps_two_pass_accuracy() {
    // mean 1e6, spread 1e-3, channel on the last axis (inner = 1): a value-by-value
    // Welford update would lose about n·eps·|mean|/sd of the variance here.
    let (n, c) = (4099usize, 3usize);
    let x: Vec<f64> = random_vec(n * c, rand::random(), 0.0, 1.0).iter().map(|v| 1e6 + 1e-3 * v).collect();
    let out = ops::batch_norm_train(t64(&[n, c], &x).view(), -1, None, None, 0.0).unwrap();
    let want = ref_batch_norm(&x, &[n, c], 1, None, None, 0.0);
    assert_close("save_rstd", out.save_rstd.data(), &want.rstd, 0.0, 1e-11);
    assert_close("save_mean", out.save_mean.data(), &want.mean, 0.0, 2.0 * f64::EPSILON);
}

#[test]
fn f32_channel_sums_that_overflow_or_sit_far_from_zero() {
    // The statistics' first sweep sums each channel in f32 for a centre that
    // the f64 sweep corrects: values near f32::MAX overflow that sum (the
    // kernel falls back to a value of the channel), and values at 1e7 with
    // spread 3 put the centre many ulps off. Channels-last (the columns path)
    // and NCHW (the runs path), over several sub-blocks and a ragged tail.
    let seed: u64 = rand::random();
    let (n, c, hw) = (5usize, 3usize, 1031usize);
    let near_max: Vec<f64> = random_vec(n * c * hw, seed, 0.0, 1.0).iter().map(|v| 3.0e38 + 3.0e37 * v).collect();
    let far: Vec<f64> = random_vec(n * c * hw, seed ^ 1, 0.0, 1.0).iter().map(|v| 1e7 + 3.0 * v).collect();
    for (label, x) in [("near f32::MAX", near_max), ("mean 1e7", far)] {
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        for (shape, axis) in [([n, hw, c], 2usize), ([n, c, hw], 1)] {
            let t = Tensor::new(&shape, x32.clone()).unwrap();
            let out = ops::batch_norm_train(t.view(), axis as isize, None, None, 0.0).unwrap();
            let want = ref_batch_norm(&x64, &shape, axis, None, None, 0.0);
            let got_mean: Vec<f64> = out.save_mean.data().iter().map(|&v| f64::from(v)).collect();
            let got_rstd: Vec<f64> = out.save_rstd.data().iter().map(|&v| f64::from(v)).collect();
            let msg = format!("{label}, axis {axis}, seed {seed}");
            assert_close(&format!("save_mean {msg}"), &got_mean, &want.mean, 0.0, f32::EPSILON as f64);
            assert_close(&format!("save_rstd {msg}"), &got_rstd, &want.rstd, 0.0, f32::EPSILON as f64);
            for (k, m) in out.batch_stats.iter().enumerate() {
                let (got, exact) = (m.var_biased(), want.var_biased[k]);
                assert!(close(got, exact, 0.0, 1e-12), "variance {msg}, channel {k}: {got} vs {exact}");
            }
        }
    }
}

#[test]
fn constant_channels_have_zero_variance_not_nan() {
    // As for LayerNorm's rows: a constant channel about an inexact centre must
    // give variance 0 (rstd inf with eps = 0), in both layouts.
    for value in [0.1f32, 7.7, -2.5e6] {
        for (shape, axis) in [([300usize, 7, 3], 2isize), ([3, 7, 300], 1)] {
            let t = Tensor::new(&shape, vec![value; 300 * 7 * 3]).unwrap();
            let out = ops::batch_norm_train(t.view(), axis, None, None, 0.0).unwrap();
            let rstd = out.save_rstd.data();
            assert!(rstd.iter().all(|r| r.is_infinite() && *r > 0.0), "{value}, axis {axis}: rstd {rstd:?}");
            assert!(out.batch_stats.iter().all(|m| m.m2() == 0.0), "{value}, axis {axis}");
        }
    }
}

#[test]
fn nan_and_inf_stay_in_their_channel() {
    let shape = [4usize, 3, 5];
    let mut x = random_vec(60, rand::random(), 0.0, 1.0);
    x[5 + 2] = f64::NAN; // channel 1
    x[15 * 2 + 10 + 3] = f64::INFINITY; // channel 2
    let out = ops::batch_norm_train(t64(&shape, &x).view(), 1, None, None, 1e-5).unwrap();
    let ch = channel_of(&shape, 1);
    for (i, (&v, &k)) in out.y.data().iter().zip(&ch).enumerate() {
        match k {
            0 => assert!(v.is_finite(), "y[{i}] = {v}"),
            _ => assert!(v.is_nan(), "y[{i}] = {v}"),
        }
    }
    assert!(out.save_rstd.data()[0].is_finite() && out.save_rstd.data()[1].is_nan());
    // f32 data near 1e30: the f64 statistics do not overflow.
    let big: Vec<f32> = random_vec(24, rand::random(), 0.0, 1e30).iter().map(|&v| v as f32).collect();
    let out = ops::batch_norm_train(Tensor::new(&[8, 3], big).unwrap().view(), 1, None, None, 1e-5).unwrap();
    assert!(out.y.data().iter().all(|v| v.is_finite() && v.abs() < 3.0));
}

#[test]
fn empty_batch_in_eval_gives_an_empty_output_and_in_training_an_error() {
    let x = Tensor::<f64>::new(&[0, 3, 4], vec![]).unwrap();
    let (rm, rv) = (t64(&[3], &[0.0; 3]), t64(&[3], &[1.0; 3]));
    let y = ops::batch_norm_eval(x.view(), 1, rm.view(), rv.view(), None, None, 1e-5).unwrap();
    assert_eq!(y.shape(), &[0, 3, 4]);
    assert!(ops::batch_norm_train(x.view(), 1, None, None, 1e-5).is_err());
    let mut bn = BatchNorm::<f64>::new(3);
    assert!(bn.forward(x.view()).is_err());
    bn.eval();
    assert_eq!(bn.forward(x.view()).unwrap().0.shape(), &[0, 3, 4]);
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let x = t64(&[4, 3], &[0.5; 12]);
    let one = t64(&[1, 3], &[1.0, 2.0, 3.0]);
    let c3 = t64(&[3], &[1.0; 3]);
    let c4 = t64(&[4], &[1.0; 4]);
    // One value per channel in training, as PyTorch refuses.
    let e = ops::batch_norm_train(one.view(), 1, None, None, 1e-5).unwrap_err();
    assert!(e.to_string().contains("more than one value per channel"), "{e}");
    assert!(ops::batch_norm_train(t64(&[1, 4, 1, 1], &[1.0; 4]).view(), 1, None, None, 1e-5).is_err());
    // ... but eval with running statistics is fine.
    assert!(ops::batch_norm_eval(one.view(), 1, c3.view(), c3.view(), None, None, 1e-5).is_ok());
    // Wrong parameter lengths.
    assert!(matches!(
        ops::batch_norm_train(x.view(), 1, Some(c4.view()), None, 1e-5),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(ops::batch_norm_train(x.view(), 1, None, Some(c4.view()), 1e-5).is_err());
    let e =
        ops::batch_norm_eval(x.view(), 1, t64(&[2], &[0.0; 2]).view(), t64(&[2], &[1.0; 2]).view(), None, None, 1e-5)
            .unwrap_err();
    assert!(e.to_string().contains("3 channels"), "{e}");
    // Axis and rank.
    assert!(ops::batch_norm_train(x.view(), 2, None, None, 1e-5).is_err());
    assert!(ops::batch_norm_train(x.view(), -3, None, None, 1e-5).is_err());
    assert!(ops::batch_norm_train(t64(&[5], &[1.0; 5]).view(), 0, None, None, 1e-5).is_err());
    // eps and momentum.
    assert!(ops::batch_norm_train(x.view(), 1, None, None, -1.0).is_err());
    assert!(ops::batch_norm_train(x.view(), 1, None, None, f64::NAN).is_err());
    let out = ops::batch_norm_train(x.view(), 1, None, None, 1e-5).unwrap();
    let (mut rm, mut rv, mut n) = (t64(&[3], &[0.0; 3]), c3.clone(), 0u64);
    assert!(ops::batch_norm_update_running(&mut rm, &mut rv, &mut n, &out.batch_stats, Some(1.5), true).is_err());
    assert_eq!((n, rm.data()), (0, &[0.0; 3][..]), "a refused update changes nothing");
    // Backward shapes.
    let dy_bad = t64(&[4, 4], &[1.0; 16]);
    assert!(ops::batch_norm_backward(
        dy_bad.view(),
        x.view(),
        1,
        out.save_mean.view(),
        out.save_rstd.view(),
        None,
        false
    )
    .is_err());
    assert!(ops::batch_norm_backward(x.view(), x.view(), 1, c4.view(), out.save_rstd.view(), None, false).is_err());
    // Kernel buffers.
    let layout = ChannelLayout { outer: 4, channels: 3, inner: 1 };
    let mut y = vec![0.0; 11];
    assert!(kernels::batch_norm_apply(x.data(), layout, &[0.0; 3], &[1.0; 3], None, &mut y).is_err());
    // Module: wrong channel count, and a failed forward changes nothing.
    let mut bn = BatchNorm::<f64>::new(4);
    let e = bn.forward(x.view()).unwrap_err();
    assert!(e.to_string().contains("4"), "{e}");
    let mut bn = BatchNorm::<f64>::new(3);
    assert!(bn.forward(one.view()).is_err());
    assert_eq!(bn.num_batches_tracked, 0);
    bn.weight = Some(c4);
    assert!(bn.forward(x.view()).is_err());
    assert!(bn.fold_into_affine().is_err());
}

#[test]
fn empty_input_whose_outer_and_inner_dims_multiply_past_usize() {
    // No channels: nothing to normalize, and outer · inner (2^80) must not overflow.
    let big = 1usize << 40;
    let x = Tensor::<f64>::new(&[big, 0, big], vec![]).unwrap();
    let out = ops::batch_norm_train(x.view(), 1, None, None, 1e-5).unwrap();
    assert_eq!((out.y.shape(), out.save_mean.shape()), (&[big, 0, big][..], &[0usize][..]));
    let none = Tensor::<f64>::new(&[0], vec![]).unwrap();
    let g = ops::batch_norm_backward(x.view(), x.view(), 1, none.view(), none.view(), None, false).unwrap();
    assert_eq!(g.dx.shape(), &[big, 0, big]);
}

#[test]
fn training_backward_equals_its_two_passes_bit_for_bit() {
    // `batch_norm_backward` runs NCHW layouts channel by channel (x and dy read
    // once); `batch_norm_backward_reduce` then `batch_norm_backward_dx` always
    // run the two passes. Both must give the same bits, with and without a
    // weight, and with channels-last data (two passes either way).
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for (shape, axis) in [(vec![4usize, 6, 300], 1usize), (vec![3, 5, 7, 11], 1), (vec![50, 9], 1)] {
        let layout = ChannelLayout::of_shape(&shape, axis).unwrap();
        let (len, c) = (numel(&shape), shape[axis]);
        let x: Vec<f32> = random_vec(len, rng.random(), 3.0, 2.0).iter().map(|&v| v as f32).collect();
        let dy: Vec<f32> = random_vec(len, rng.random(), 0.0, 1.0).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = random_vec(c, rng.random(), 1.0, 0.5).iter().map(|&v| v as f32).collect();
        let (mut y, mut mean, mut rstd) = (vec![0f32; len], vec![0f32; c], vec![0f32; c]);
        let mut stats = vec![normkit::Moments::new(); c];
        kernels::batch_norm_forward_train(
            &x,
            layout,
            Affine::new(&w, &w),
            1e-5,
            &mut y,
            &mut mean,
            &mut rstd,
            &mut stats,
        )
        .unwrap();
        for weight in [Some(&w[..]), None] {
            let (mut dx, mut dw, mut db) = (vec![0f32; len], vec![0f32; c], vec![0f32; c]);
            let grads = kernels::Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
            kernels::batch_norm_backward(&dy, &x, layout, &mean, &rstd, weight, true, grads).unwrap();

            let (mut s, mut sx) = (vec![0f64; c], vec![0f64; c]);
            kernels::batch_norm_backward_reduce(&dy, &x, layout, &mean, &rstd, &mut s, &mut sx).unwrap();
            let mut dx2 = vec![0f32; len];
            let sums = Some((s.as_slice(), sx.as_slice()));
            kernels::batch_norm_backward_dx(&dy, &x, layout, &mean, &rstd, weight, sums, &mut dx2).unwrap();

            let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
            let narrow = |v: &[f64]| v.iter().map(|&t| t as f32).collect::<Vec<_>>();
            assert_eq!(bits(&dx), bits(&dx2), "dx of {shape:?}, weight {}", weight.is_some());
            assert_eq!(bits(&dw), bits(&narrow(&sx)), "dweight of {shape:?}");
            assert_eq!(bits(&db), bits(&narrow(&s)), "dbias of {shape:?}");
        }
    }
}

#[test]
fn training_forward_refuses_a_moments_buffer_of_the_wrong_length() {
    // NCHW runs of 300 values: the channel-by-channel path, which checks the
    // buffer before it writes anything.
    let layout = ChannelLayout::of_shape(&[2, 3, 300], 1).unwrap();
    let x = vec![1f32; 1800];
    let (mut y, mut m, mut r) = (vec![0f32; 1800], vec![0f32; 3], vec![0f32; 3]);
    let mut stats = vec![normkit::Moments::new(); 2];
    let none = Affine { weight: None, bias: None };
    let err = kernels::batch_norm_forward_train(&x, layout, none, 1e-5, &mut y, &mut m, &mut r, &mut stats);
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("moments"), "{msg}");
    assert!(y.iter().all(|&v| v == 0.0), "nothing written on error");
}

/// Found by an outside review (2026-12-03): `f64` statistics whose squared
/// deviations lie near the top of `f64`'s range. A row alternating ±1e152
/// (variance 1e304): the correction `(Σd)²/k` overflowed where `Σd²` did not
/// and the variance came out 0 (`rstd = 1/sqrt(eps)`, outputs ±3e154). A
/// constant channels-last column of 1e300: deviations about an inexact centre
/// squared to infinity, and M2 was NaN.
#[test]
fn f64_statistics_near_the_top_of_the_range_are_right() {
    let row: Vec<f64> = (0..256).map(|i| if i % 2 == 0 { 1e152 } else { -1e152 }).collect();
    let x = Tensor::new(&[1, 256], row.clone()).unwrap();
    let ln = normkit::ops::layer_norm(x.view(), &[256], None, None, 1e-5).unwrap();
    assert!((ln.rstd.data()[0] * 1e152 - 1.0).abs() < 1e-12, "rstd {}", ln.rstd.data()[0]);
    for (y, x) in ln.y.data().iter().zip(&row) {
        assert!((y - x.signum()).abs() < 1e-12, "{y}");
    }
    let x3 = Tensor::new(&[1, 1, 256], row).unwrap();
    let bn = normkit::ops::batch_norm_train(x3.view(), 1, None, None, 1e-5).unwrap();
    assert!((bn.save_rstd.data()[0] * 1e152 - 1.0).abs() < 1e-12, "rstd {}", bn.save_rstd.data()[0]);

    let bias = Tensor::new(&[1], vec![0.25]).unwrap();
    for v in [1e300, -3e200, 7e170] {
        let x = Tensor::new(&[97, 1], vec![v; 97]).unwrap();
        let out = normkit::ops::batch_norm_train(x.view(), -1, None, Some(bias.view()), 1e-5).unwrap();
        assert_eq!(out.batch_stats[0].m2(), 0.0, "constant column of {v}");
        assert!(out.y.data().iter().all(|&y| y == 0.25), "{v}: {:?}", &out.y.data()[..3]);
    }
}

#[test]
fn folding_refuses_a_bad_eps() {
    for eps in [-1.0, f64::NAN] {
        let bn = normkit::BatchNorm::<f32>::new(2).eps(eps);
        assert!(bn.fold_into_affine().is_err(), "eps {eps}");
    }
}

/// `f64` channels whose squared deviations leave `f64`'s range (spreads
/// beyond about 1e154, or below about 1e-154 with `eps` below 2^-960),
/// channel axis 1 (runs) and last (columns), and a shape large enough that,
/// with two threads, the runs go channel by channel: scaled by a power of two
/// `s` (and `eps` by `s²`, see `SCALES_AND_EPS`), each normalizes as the
/// unscaled input does (the saved mean and `rstd` scaled, `y` the same, `dx`
/// scaled as `rstd`). Until 2026-12-04: NaN above, ±inf below. The batch's
/// moments (and so the running variance) cannot hold such a variance.
#[test]
fn f64_channels_beyond_the_range_of_squares_normalize_as_scaled_copies() {
    let seed: u64 = rand::random();
    let two_threads = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (shape, axis) in [(vec![4usize, 3, 29], 1isize), (vec![4, 29, 3], -1), (vec![4, 3, 8192], 1)] {
        let len = shape.iter().product();
        // About 1e3 with spread 1: the mean far from 0, and eps = 2^-10 moves y.
        let mut x0 = random_vec(len, seed, 1e3, 1.0);
        x0.iter_mut().step_by(7).for_each(|v| *v += 2.0);
        let dy = t64(&shape, &random_vec(len, seed ^ 1, 0.25, 1.0));
        let w = t64(&[3], &[0.5, 1.25, -2.0]);
        let run = |x: &[f64], eps: f64| {
            let xt = t64(&shape, x);
            let out = ops::batch_norm_train(xt.view(), axis, Some(w.view()), Some(w.view()), eps).unwrap();
            let (m, r) = (out.save_mean.view(), out.save_rstd.view());
            let g = ops::batch_norm_backward(dy.view(), xt.view(), axis, m, r, Some(w.view()), true).unwrap();
            NormRun::of(&out.y, [&out.save_mean, &out.save_rstd], g)
        };
        for (k, eps) in SCALES_AND_EPS {
            let s = 2f64.powi(k);
            let (base, got) = two_threads
                .install(|| (run(&x0, eps), run(&x0.iter().map(|v| v * s).collect::<Vec<_>>(), eps * s * s)));
            // The mean to 1e-14 of the values (1e3).
            assert_scaled_copy(&format!("{shape:?} axis {axis}, 2^{k}, eps {eps}, seed {seed}"), &got, &base, s, 1e-11);
        }
    }
}
