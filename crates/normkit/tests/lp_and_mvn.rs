//! Lp normalization (p = 1, 2, any axis) and mean-variance normalization (any
//! list of axes) checked against plain f64 references written from the formulas,
//! on random shapes (sizes 1 and primes), fresh seeds and hostile values (zero
//! vectors, norms below eps, 1e±200, mean 1e6 with spread 1e-3, NaN, inf);
//! finite differences for both backwards; every error path.

mod layers_support;

use layers_support::*;
use normkit::kernels::{self, ChannelLayout};
use normkit::{ops, Error, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn t64(shape: &[usize], v: &[f64]) -> Tensor<f64> {
    Tensor::new(shape, v.to_vec()).unwrap()
}

/// The axis as the caller may write it: non-negative or counted from the end.
fn spelled(axis: usize, rank: usize, negative: bool) -> isize {
    if negative {
        axis as isize - rank as isize
    } else {
        axis as isize
    }
}

/// A random shape of rank 1 to 5 with at most `max_len` elements.
fn shape_upto(rng: &mut impl Rng, max_len: usize) -> Vec<usize> {
    loop {
        let rank = rng.random_range(1..=5);
        let shape = random_shape(rng, rank);
        if numel(&shape) <= max_len {
            return shape;
        }
    }
}

// ---------------------------------------------------------------- Lp reference

/// For the vector along `axis` through flat index `i`: its key `o·inner + i_inner`.
fn vector_keys(shape: &[usize], axis: usize) -> Vec<usize> {
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    (0..numel(shape)).map(|i| i / (n * inner) * inner + i % inner).collect()
}

/// `‖v‖_p = (Σ |v_k|^p)^(1/p)`, the values first scaled by an exact power of two
/// (so that 1e±200 neither overflows nor underflows the sum of squares).
fn ref_norm(v: &[f64], p: u32) -> f64 {
    let amax = v.iter().fold(0.0f64, |a, x| if x.is_nan() || a.is_nan() { f64::NAN } else { a.max(x.abs()) });
    if amax == 0.0 || !amax.is_finite() {
        return amax;
    }
    let s = 2f64.powi(-(amax.log2().floor() as i32));
    let total = sum(v.iter().map(|x| (x * s).abs().powi(p as i32)));
    if p == 1 {
        total / s
    } else {
        total.sqrt() / s
    }
}

/// `y = x / max(‖x‖_p, eps)` per vector, and the norms.
fn ref_lp(x: &[f64], shape: &[usize], axis: usize, p: u32, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let keys = vector_keys(shape, axis);
    let vectors = numel(shape) / shape[axis].max(1);
    let norms: Vec<f64> = (0..vectors)
        .map(|k| ref_norm(&x.iter().zip(&keys).filter(|(_, &kk)| kk == k).map(|(v, _)| *v).collect::<Vec<_>>(), p))
        .collect();
    let y = x.iter().zip(&keys).map(|(v, &k)| v / if norms[k] < eps { eps } else { norms[k] }).collect();
    (y, norms)
}

/// The gradient of `Σ dy · y` for `y = x / d`, `d = max(N, eps)`, from the
/// Jacobian `∂y_j/∂x_k = δ_jk / d - x_j / d² · ∂d/∂x_k`, with `∂d/∂x_k = ∂N/∂x_k`
/// where `N >= eps` (0 where the clamp holds), `∂N/∂x_k = x_k / N` (p = 2) or
/// `sign(x_k)` (p = 1).
fn ref_lp_backward(x: &[f64], dy: &[f64], shape: &[usize], axis: usize, p: u32, eps: f64) -> Vec<f64> {
    let (_, norms) = ref_lp(x, shape, axis, p, eps);
    let keys = vector_keys(shape, axis);
    (0..x.len())
        .map(|k| {
            let v = keys[k];
            let nrm = norms[v];
            let d = if nrm < eps { eps } else { nrm };
            let dn = if nrm >= eps && nrm > 0.0 {
                if p == 2 {
                    x[k] / nrm
                } else {
                    x[k].signum() * (x[k] != 0.0) as u8 as f64
                }
            } else {
                0.0
            };
            let jac_col = (0..x.len()).filter(|&j| keys[j] == v).map(|j| {
                let delta = if j == k { 1.0 / d } else { 0.0 };
                dy[j] * (delta - x[j] / (d * d) * dn)
            });
            sum(jac_col)
        })
        .collect()
}

struct LpProblem {
    shape: Vec<usize>,
    axis: usize,
    p: u32,
    eps: f64,
    x: Vec<f64>,
    dy: Vec<f64>,
}

/// Value kinds for Lp: ordinary, large offset, huge and tiny magnitudes.
const LP_KINDS: [(f64, f64); 6] = [(0.0, 1.0), (5.0, 3.0), (1e6, 1e-3), (0.0, 1e30), (0.0, 1e200), (0.0, 1e-200)];

fn lp_problem(seed: u64, kinds: &[(f64, f64)], max_len: usize) -> LpProblem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = shape_upto(&mut rng, max_len);
    let axis = rng.random_range(0..shape.len());
    let (offset, scale) = kinds[rng.random_range(0..kinds.len())];
    let mut x = random_vec(numel(&shape), rng.random(), offset, scale);
    // Some vectors are zero (norm 0 < eps: the output is 0, the gradient dy / eps).
    if rng.random_bool(0.3) {
        let keys = vector_keys(&shape, axis);
        let zero = rng.random_range(0..numel(&shape) / shape[axis]);
        for (v, &k) in x.iter_mut().zip(&keys) {
            if k == zero {
                *v = 0.0;
            }
        }
    }
    let dy = random_vec(numel(&shape), rng.random(), 0.0, 1.0);
    let p = rng.random_range(1..=2);
    let eps = [1e-12, 1e-3, 0.5][rng.random_range(0..3)];
    LpProblem { shape, axis, p, eps, x, dy }
}

/// A summation of n terms in [0, 1] is good to n·eps relative; the division and
/// the root add a few roundings more.
fn lp_tol(y: &[f64], n: usize) -> Vec<f64> {
    y.iter().map(|v| 2.0 * (n as f64 + 4.0) * f64::EPSILON * v.abs()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn lp_f64_matches_reference(seed in any::<u64>(), negative in any::<bool>()) {
        let p = lp_problem(seed, &LP_KINDS, 4000);
        let axis = spelled(p.axis, p.shape.len(), negative);
        let y = ops::lp_normalize(t64(&p.shape, &p.x).view(), p.p, axis, p.eps).unwrap();
        let (want, _) = ref_lp(&p.x, &p.shape, p.axis, p.p, p.eps);
        prop_assert_eq!(y.shape(), &p.shape[..]);
        assert_within("y", y.data(), &want, &lp_tol(&want, p.shape[p.axis]));
    }

    #[test]
    fn lp_f32_is_the_rounded_f64_result(seed in any::<u64>()) {
        let p = lp_problem(seed, &[(0.0, 1.0), (5.0, 3.0), (0.0, 1e30), (0.0, 1e-30)], 4000);
        let x32 = narrow(&p.x);
        let y = ops::lp_normalize(Tensor::new(&p.shape, x32.clone()).unwrap().view(), p.p, p.axis as isize, p.eps)
            .unwrap();
        let (want, _) = ref_lp(&widen(&x32), &p.shape, p.axis, p.p, p.eps);
        // One rounding to f32 of an f64-accurate result (f32 subnormals round absolutely).
        let tol: Vec<f64> = want.iter().zip(lp_tol(&want, p.shape[p.axis]))
            .map(|(v, t)| f32::EPSILON as f64 * v.abs() + t + f32::from_bits(1) as f64).collect();
        assert_within("y", &widen(y.data()), &want, &tol);
    }

    #[test]
    fn lp_backward_f64_matches_reference(seed in any::<u64>()) {
        let p = lp_problem(seed, &[(0.0, 1.0), (5.0, 3.0), (0.0, 1e30), (0.0, 1e-200)], 600);
        let g = ops::lp_normalize_backward(t64(&p.shape, &p.dy).view(), t64(&p.shape, &p.x).view(), p.p,
            p.axis as isize, p.eps).unwrap();
        let want = ref_lp_backward(&p.x, &p.dy, &p.shape, p.axis, p.p, p.eps);
        // Each dx_k is dy_k / d minus a sum of n terms |dy_j·y_j| / d · |∂N/∂x_k|.
        let (_, norms) = ref_lp(&p.x, &p.shape, p.axis, p.p, p.eps);
        let keys = vector_keys(&p.shape, p.axis);
        let n = p.shape[p.axis] as f64;
        let tol: Vec<f64> = (0..p.x.len()).map(|k| {
            let d = norms[keys[k]].max(p.eps);
            let mag: f64 = (0..p.x.len()).filter(|&j| keys[j] == keys[k]).map(|j| (p.dy[j] * p.x[j] / d).abs()).sum();
            8.0 * (n + 4.0) * f64::EPSILON * (p.dy[k].abs() + mag) / d
        }).collect();
        assert_within("dx", g.data(), &want, &tol);
    }
}

#[test]
fn lp_backward_matches_finite_differences() {
    let cases = [(vec![3usize, 4], 1usize, 2u32), (vec![3, 4], 0, 1), (vec![2, 5, 3], 1, 2), (vec![2, 3, 3], 2, 1)];
    for (i, (shape, axis, p)) in cases.into_iter().enumerate() {
        for eps in [1e-12, 50.0] {
            // eps 50 is above every norm here: the clamp holds and passes no gradient to the norm.
            let seed = i as u64 + rand::random::<u32>() as u64;
            let len = numel(&shape);
            // |x| >= 0.25 keeps the L1 norm differentiable within the step.
            let x: Vec<f64> = random_vec(len, seed, 0.0, 1.0).iter().map(|v| v.signum() * (0.25 + v.abs())).collect();
            let dy = random_vec(len, seed + 1, 0.0, 1.0);
            let loss =
                |x: &[f64]| dot(ops::lp_normalize(t64(&shape, x).view(), p, axis as isize, eps).unwrap().data(), &dy);
            let g = ops::lp_normalize_backward(t64(&shape, &dy).view(), t64(&shape, &x).view(), p, axis as isize, eps)
                .unwrap();
            let msg = format!("seed {seed}, shape {shape:?}, axis {axis}, p {p}, eps {eps}");
            assert_close(&format!("dx {msg}"), g.data(), &finite_diff(&x, loss), 1e-8, 1e-6);
        }
    }
}

#[test]
fn lp_zero_vectors_nan_and_inf() {
    // Zero vectors give zeros, and the gradient dy / eps (PyTorch's).
    let x = t64(&[2, 3], &[0.0, 0.0, 0.0, 3.0, 0.0, -4.0]);
    for p in [1u32, 2] {
        let y = ops::lp_normalize(x.view(), p, 1, 1e-12).unwrap();
        let n = if p == 1 { 7.0 } else { 5.0 };
        assert_eq!(y.data(), &[0.0, 0.0, 0.0, 3.0 / n, 0.0, -4.0 / n]);
        let dy = t64(&[2, 3], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
        let g = ops::lp_normalize_backward(dy.view(), x.view(), p, 1, 1e-12).unwrap();
        assert_eq!(&g.data()[..3], &[1e12, 2e12, 3e12]);
    }
    // A norm below eps divides by eps.
    let y = ops::lp_normalize(t64(&[1, 2], &[3e-4, 4e-4]).view(), 2, -1, 1e-3).unwrap();
    assert_close("clamped", y.data(), &[0.3, 0.4], 0.0, 4.0 * f64::EPSILON);
    // eps 0 with a zero vector: 0 / 0, as torch gives.
    assert!(ops::lp_normalize(t64(&[2], &[0.0, 0.0]).view(), 2, 0, 0.0).unwrap().data()[0].is_nan());
    // NaN poisons its vector only; an infinity gives x / inf (0, and NaN for itself).
    let x = t64(&[3, 2], &[1.0, f64::NAN, 1.0, 2.0, f64::INFINITY, 5.0]);
    for p in [1u32, 2] {
        let y = ops::lp_normalize(x.view(), p, 1, 1e-12).unwrap();
        let d = y.data();
        assert!(d[0].is_nan() && d[1].is_nan(), "{d:?}");
        assert!(d[2].is_finite() && d[3].is_finite(), "{d:?}");
        assert!(d[4].is_nan() && d[5] == 0.0, "{d:?}");
    }
    // Values near 1e200 (f64) and 1e30 (f32) do not overflow the sum of squares,
    // nor 1e-200 underflow it.
    for s in [1e200, 1e-200] {
        let y = ops::lp_normalize(t64(&[2], &[3.0 * s, 4.0 * s]).view(), 2, 0, 0.0).unwrap();
        assert_close("scaled", y.data(), &[0.6, 0.8], 0.0, 4.0 * f64::EPSILON);
    }
    let x32 = [3e30f32, 4e30];
    let y = ops::lp_normalize(Tensor::new(&[2], x32.to_vec()).unwrap().view(), 2, 0, 1e-12).unwrap();
    let (a, b) = (x32[0] as f64, x32[1] as f64);
    let n = (a * a + b * b).sqrt();
    assert_close("f32 1e30", &widen(y.data()), &[a / n, b / n], 0.0, f32::EPSILON as f64);
}

#[test]
fn lp_bad_input_is_an_error_not_a_panic() {
    let x = t64(&[2, 3], &[1.0; 6]);
    for p in [0u32, 3, u32::MAX] {
        let e = ops::lp_normalize(x.view(), p, 1, 1e-12).unwrap_err();
        assert!(e.to_string().contains(&p.to_string()), "{e}");
        assert!(ops::lp_normalize_backward(x.view(), x.view(), p, 1, 1e-12).is_err());
    }
    for axis in [2isize, -3, isize::MAX, isize::MIN] {
        let e = ops::lp_normalize(x.view(), 2, axis, 1e-12).unwrap_err();
        assert!(e.to_string().contains("axis"), "{e}");
    }
    assert!(ops::lp_normalize(t64(&[], &[1.0]).view(), 2, 0, 1e-12).is_err(), "a scalar has no axis");
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(ops::lp_normalize(x.view(), 2, 1, eps).is_err());
        assert!(ops::lp_normalize_backward(x.view(), x.view(), 2, 1, eps).is_err());
    }
    assert!(matches!(
        ops::lp_normalize_backward(t64(&[3, 2], &[1.0; 6]).view(), x.view(), 2, 1, 1e-12),
        Err(Error::ShapeMismatch { .. })
    ));
    // Kernel buffers.
    let layout = ChannelLayout { outer: 2, channels: 3, inner: 1 };
    assert!(kernels::lp_normalize_forward(&x.data()[..5], layout, 2, 1e-12, &mut [0.0; 6]).is_err());
    assert!(kernels::lp_normalize_forward(x.data(), layout, 2, 1e-12, &mut [0.0; 5]).is_err());
    assert!(kernels::lp_norms(x.data(), layout, 2, &mut [0.0; 3]).is_err());
    assert!(kernels::lp_normalize_backward(x.data(), x.data(), layout, 2, 1e-12, &mut [0.0; 7]).is_err());
    let huge = ChannelLayout { outer: 1 << 40, channels: 0, inner: 1 << 40 };
    assert!(kernels::lp_norms::<f64>(&[], huge, 2, &mut []).is_err(), "2^80 norms cannot be held");
    assert!(kernels::lp_normalize_forward::<f64>(&[], huge, 2, 1e-12, &mut []).is_ok());
    // Empty inputs are empty outputs (there is no vector to normalize).
    for shape in [[0usize, 3], [3, 0]] {
        let e = Tensor::<f64>::new(&shape, vec![]).unwrap();
        assert_eq!(ops::lp_normalize(e.view(), 2, 1, 1e-12).unwrap().shape(), &shape);
        assert_eq!(ops::lp_normalize_backward(e.view(), e.view(), 1, 0, 1e-12).unwrap().shape(), &shape);
    }
}

// ---------------------------------------------------------------- MVN reference

/// For each flat index, the key of its group: its coordinates on the axes not
/// reduced, as one row-major number.
fn mvn_keys(shape: &[usize], reduced: &[usize]) -> Vec<usize> {
    (0..numel(shape))
        .map(|i| {
            let (mut rest, mut key) = (i, 0usize);
            let mut coords = vec![0usize; shape.len()];
            for a in (0..shape.len()).rev() {
                coords[a] = rest % shape[a];
                rest /= shape[a];
            }
            for a in 0..shape.len() {
                if !reduced.contains(&a) {
                    key = key * shape[a] + coords[a];
                }
            }
            key
        })
        .collect()
}

struct RefMvn {
    y: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
    keys: Vec<usize>,
}

fn ref_mvn(x: &[f64], shape: &[usize], reduced: &[usize], eps: f64) -> RefMvn {
    let keys = mvn_keys(shape, reduced);
    let groups = keys.iter().max().map_or(0, |k| k + 1);
    let values = |k: usize| x.iter().zip(&keys).filter(move |(_, &kk)| kk == k).map(|(v, _)| *v);
    let (mut mean, mut rstd) = (vec![], vec![]);
    for k in 0..groups {
        let n = values(k).count() as f64;
        let m = sum(values(k)) / n;
        let v = sum(values(k).map(|x| (x - m) * (x - m))) / n;
        mean.push(m);
        rstd.push(1.0 / (v + eps).sqrt());
    }
    let y = x.iter().zip(&keys).map(|(v, &k)| (v - mean[k]) * rstd[k]).collect();
    RefMvn { y, mean, rstd, keys }
}

/// Chain rule through each group's mean and biased variance (see GroupNorm's).
fn ref_mvn_backward(x: &[f64], dy: &[f64], shape: &[usize], reduced: &[usize], eps: f64) -> Vec<f64> {
    let r = ref_mvn(x, shape, reduced, eps);
    let groups = r.mean.len();
    let (mut dvar, mut dmean, mut count) = (vec![0.0; groups], vec![0.0; groups], vec![0.0; groups]);
    for k in 0..groups {
        let keys = &r.keys;
        let idx = || (0..x.len()).filter(move |&i| keys[i] == k);
        count[k] = idx().count() as f64;
        dvar[k] = sum(idx().map(|i| dy[i] * (x[i] - r.mean[k]))) * -0.5 * r.rstd[k].powi(3);
        dmean[k] =
            -r.rstd[k] * sum(idx().map(|i| dy[i])) + dvar[k] * -2.0 * sum(idx().map(|i| x[i] - r.mean[k])) / count[k];
    }
    (0..x.len())
        .map(|i| {
            let k = r.keys[i];
            dy[i] * r.rstd[k] + dvar[k] * 2.0 * (x[i] - r.mean[k]) / count[k] + dmean[k] / count[k]
        })
        .collect()
}

struct MvnProblem {
    shape: Vec<usize>,
    /// Reduced axes, sorted, non-negative.
    reduced: Vec<usize>,
    /// The same axes as the caller writes them: any order, some negative.
    axes: Vec<isize>,
    eps: f64,
    x: Vec<f64>,
    dy: Vec<f64>,
}

fn mvn_problem(seed: u64, kinds: &[(f64, f64)], max_len: usize) -> MvnProblem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = shape_upto(&mut rng, max_len);
    let rank = shape.len();
    let mut reduced: Vec<usize> = (0..rank).filter(|_| rng.random_bool(0.5)).collect();
    if reduced.is_empty() {
        reduced.push(rng.random_range(0..rank));
    }
    let mut axes: Vec<isize> = reduced.iter().map(|&a| spelled(a, rank, rng.random_bool(0.5))).collect();
    let rot = rng.random_range(0..axes.len());
    axes.rotate_left(rot);
    let (offset, scale) = kinds[rng.random_range(0..kinds.len())];
    let x = random_vec(numel(&shape), rng.random(), offset, scale);
    let dy = random_vec(numel(&shape), rng.random(), 0.0, 1.0);
    let eps = [1e-9, 1e-5, 0.1][rng.random_range(0..3)];
    MvnProblem { shape, reduced, axes, eps, x, dy }
}

/// As GroupNorm's: a rounding of x or of the mean moves y by
/// eps·(|x| + |mean|)·rstd; the variance's relative error (about sqrt(m)·eps for m
/// values) moves it by that times |x̂|.
fn mvn_tol(x: &[f64], r: &RefMvn, m: usize) -> Vec<f64> {
    let e = f64::EPSILON;
    x.iter()
        .zip(&r.keys)
        .map(|(v, &k)| 32.0 * e * (1.0 + (m as f64).sqrt()) * ((v.abs() + r.mean[k].abs()) * r.rstd[k] + 1.0))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mvn_f64_matches_reference(seed in any::<u64>()) {
        let p = mvn_problem(seed, &VALUE_KINDS, 4000);
        let y = ops::mean_variance_normalization(t64(&p.shape, &p.x).view(), &p.axes, p.eps).unwrap();
        let want = ref_mvn(&p.x, &p.shape, &p.reduced, p.eps);
        let m: usize = p.reduced.iter().map(|&a| p.shape[a]).product();
        prop_assert_eq!(y.shape(), &p.shape[..]);
        assert_within("y", y.data(), &want.y, &mvn_tol(&p.x, &want, m));
    }

    #[test]
    fn mvn_f32_is_within_its_bound_of_the_f64_result(seed in any::<u64>()) {
        let p = mvn_problem(seed, &VALUE_KINDS, 4000);
        let x32 = narrow(&p.x);
        let y = ops::mean_variance_normalization(Tensor::new(&p.shape, x32.clone()).unwrap().view(), &p.axes, p.eps)
            .unwrap();
        let xw = widen(&x32);
        let want = ref_mvn(&xw, &p.shape, &p.reduced, p.eps);
        let m: usize = p.reduced.iter().map(|&a| p.shape[a]).product();
        // MVN runs through the channel kernels' f32 elementwise pass.
        let tol: Vec<f64> = (want.y.iter().zip(&want.keys)).zip(mvn_tol(&xw, &want, m))
            .map(|((&v, &k), t)| f32_normalize_tol(v, 0.0, want.mean[k], want.rstd[k], 1.0) + t).collect();
        assert_within("y", &widen(y.data()), &want.y, &tol);
    }

    #[test]
    fn mvn_backward_f64_matches_reference(seed in any::<u64>()) {
        let p = mvn_problem(seed, &[(0.0, 1.0), (5.0, 3.0), (-20.0, 100.0)], 1500);
        let g = ops::mean_variance_normalization_backward(t64(&p.shape, &p.dy).view(), t64(&p.shape, &p.x).view(),
            &p.axes, p.eps).unwrap();
        let want = ref_mvn_backward(&p.x, &p.dy, &p.shape, &p.reduced, p.eps);
        let r = ref_mvn(&p.x, &p.shape, &p.reduced, p.eps);
        let m: usize = p.reduced.iter().map(|&a| p.shape[a]).product();
        let rmax = r.rstd.iter().fold(1.0f64, |a, v| a.max(*v));
        assert_close("dx", g.data(), &want, 1e-12 * rmax * m as f64, 1e-9);
    }
}

#[test]
fn mvn_backward_matches_finite_differences() {
    let cases: [(Vec<usize>, Vec<isize>); 4] =
        [(vec![2, 3, 4], vec![0, 2]), (vec![3, 5], vec![-1]), (vec![2, 2, 3, 2], vec![3, 1]), (vec![4, 3], vec![0, 1])];
    for (i, (shape, axes)) in cases.into_iter().enumerate() {
        let seed = i as u64 + rand::random::<u32>() as u64;
        let len = numel(&shape);
        let (x, dy) = (random_vec(len, seed, 0.5, 1.0), random_vec(len, seed + 1, 0.0, 1.0));
        let eps = 1e-3;
        let loss =
            |x: &[f64]| dot(ops::mean_variance_normalization(t64(&shape, x).view(), &axes, eps).unwrap().data(), &dy);
        let g = ops::mean_variance_normalization_backward(t64(&shape, &dy).view(), t64(&shape, &x).view(), &axes, eps)
            .unwrap();
        let msg = format!("seed {seed}, shape {shape:?}, axes {axes:?}");
        assert_close(&format!("dx {msg}"), g.data(), &finite_diff(&x, loss), 1e-7, 1e-6);
    }
}

#[test]
fn mvn_large_offset_keeps_its_variance() {
    // mean 1e6, spread 1e-3 in f64, eps 0: every group of y must have variance 1
    // to 1e-9 (the mean's last-bit rounding shifts y by about 1e-7, uniformly,
    // which the variance does not see) and mean about 0.
    let shape = [3usize, 257, 4];
    let x: Vec<f64> = random_vec(numel(&shape), rand::random(), 0.0, 1.0).iter().map(|v| 1e6 + 1e-3 * v).collect();
    let y = ops::mean_variance_normalization(t64(&shape, &x).view(), &[0, 1], 0.0).unwrap();
    let r = ref_mvn(&x, &shape, &[0, 1], 0.0);
    for k in 0..4 {
        let g: Vec<f64> = y.data().iter().zip(&r.keys).filter(|(_, &kk)| kk == k).map(|(v, _)| *v).collect();
        let n = g.len() as f64;
        let mean = sum(g.iter().copied()) / n;
        let var = sum(g.iter().map(|v| (v - mean) * (v - mean))) / n;
        assert!((var - 1.0).abs() <= 1e-9, "group {k}: variance {var}");
        assert!(mean.abs() <= 4.0 * f64::EPSILON * r.mean[k].abs() * r.rstd[k], "group {k}: mean {mean}");
    }
}

#[test]
fn mvn_hostile_values() {
    // f32 values near 1e30: the f64 statistics do not overflow.
    let big: Vec<f32> = random_vec(60, rand::random(), 0.0, 1e30).iter().map(|&v| v as f32).collect();
    let y = ops::mean_variance_normalization(Tensor::new(&[3, 4, 5], big).unwrap().view(), &[0, 2], 1e-9).unwrap();
    assert!(y.data().iter().all(|v| v.is_finite() && v.abs() < 4.0), "{:?}", y.data());
    // NaN and inf poison their own group only (groups here: the index on axis 1).
    let mut x = random_vec(24, rand::random(), 0.0, 1.0);
    x[4] = f64::NAN; // (0, 1, 0)
    x[12 + 8 + 3] = f64::NEG_INFINITY; // (1, 2, 3)
    let y = ops::mean_variance_normalization(t64(&[2, 3, 4], &x).view(), &[0, 2], 1e-9).unwrap();
    for (i, v) in y.data().iter().enumerate() {
        assert_eq!(v.is_finite(), (i / 4) % 3 == 0, "y[{i}] = {v}");
    }
    // A constant group normalizes to 0 (variance 0 + eps).
    let y = ops::mean_variance_normalization(t64(&[2, 2], &[7.0, 7.0, 1.0, 3.0]).view(), &[1], 1e-9).unwrap();
    assert_eq!(&y.data()[..2], &[0.0, 0.0]);
}

#[test]
fn mvn_bad_input_is_an_error_not_a_panic() {
    let x = t64(&[2, 3, 4], &[1.0; 24]);
    let e = ops::mean_variance_normalization(x.view(), &[], 1e-9).unwrap_err();
    assert!(e.to_string().contains("axis"), "{e}");
    let e = ops::mean_variance_normalization(x.view(), &[1, -2], 1e-9).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    for axes in [[0isize, 3], [-4, 1], [isize::MAX, 0], [isize::MIN, 0]] {
        assert!(ops::mean_variance_normalization(x.view(), &axes, 1e-9).is_err(), "{axes:?}");
        assert!(ops::mean_variance_normalization_backward(x.view(), x.view(), &axes, 1e-9).is_err());
    }
    assert!(ops::mean_variance_normalization(t64(&[], &[1.0]).view(), &[0], 1e-9).is_err(), "a scalar has no axis");
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(ops::mean_variance_normalization(x.view(), &[0], eps).is_err());
        assert!(ops::mean_variance_normalization_backward(x.view(), x.view(), &[0], eps).is_err());
    }
    assert!(matches!(
        ops::mean_variance_normalization_backward(t64(&[2, 4, 3], &[1.0; 24]).view(), x.view(), &[0], 1e-9),
        Err(Error::ShapeMismatch { .. })
    ));
    // Empty inputs are empty outputs.
    let big = 1usize << 40;
    for shape in [[2usize, 0, 3], [big, 0, big]] {
        let e = Tensor::<f64>::new(&shape, vec![]).unwrap();
        for axes in [[1isize, 2], [0, 2], [2, 1]] {
            assert_eq!(ops::mean_variance_normalization(e.view(), &axes, 1e-9).unwrap().shape(), &shape);
            let g = ops::mean_variance_normalization_backward(e.view(), e.view(), &axes, 1e-9).unwrap();
            assert_eq!(g.shape(), &shape);
        }
    }
}
