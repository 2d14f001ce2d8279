//! Helpers shared by the tests of BatchNorm, GroupNorm, InstanceNorm, Lp and
//! mean-variance normalization: compensated sums for the references, the pass
//! rule, finite differences and seeded random data.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Compensated (Neumaier) sum: the references' sums carry no rounding to speak of.
pub fn sum(it: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for x in it {
        let t = s + x;
        c += if s.abs() >= x.abs() { (s - t) + x } else { (x - t) + s };
        s = t;
    }
    s + c
}

/// `|got - want| <= atol + rtol·|want|`, NaN matches NaN, an infinity itself.
pub fn close(g: f64, w: f64, atol: f64, rtol: f64) -> bool {
    if w.is_nan() {
        g.is_nan()
    } else if w.is_infinite() {
        g == w
    } else {
        (g - w).abs() <= atol + rtol * w.abs()
    }
}

pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w, atol, rtol), "{what}[{i}]: got {g:e}, want {w:e} (atol {atol:e}, rtol {rtol:e})");
    }
}

/// Like [`assert_close`] with a tolerance per element.
pub fn assert_within(what: &str, got: &[f64], want: &[f64], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!(close(*g, *w, *t, 0.0), "{what}[{i}]: got {g:e}, want {w:e} (tol {t:e})");
    }
}

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central differences of a loss at `theta`, step relative to |θ|.
pub fn finite_diff(theta: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
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

/// `len` values `offset + scale·u`, `u` uniform in [-1, 1), from `seed`.
pub fn random_vec(len: usize, seed: u64, offset: f64, scale: f64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| offset + scale * rng.random_range(-1.0..1.0)).collect()
}

/// A random shape of rank `rank` with dims drawn from sizes including 1 and primes.
pub fn random_shape(rng: &mut impl Rng, rank: usize) -> Vec<usize> {
    const DIMS: [usize; 8] = [1, 2, 3, 4, 5, 7, 11, 13];
    (0..rank).map(|_| DIMS[rng.random_range(0..DIMS.len())]).collect()
}

/// Product of dims.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The channel coordinate of each flat (row-major) index for the channel on `axis`.
pub fn channel_of(shape: &[usize], axis: usize) -> Vec<usize> {
    let inner: usize = shape[axis + 1..].iter().product();
    (0..numel(shape)).map(|i| (i / inner) % shape[axis]).collect()
}

/// Value distributions for property tests: (offset, scale) pairs, from ordinary
/// to hostile (large offset with small spread, huge magnitudes).
pub const VALUE_KINDS: [(f64, f64); 5] = [(0.0, 1.0), (5.0, 3.0), (1e6, 1e-3), (0.0, 1e30), (-20.0, 100.0)];

/// The documented error bound of an f32 output `y = x̂·w + b` of a normalizing
/// pass, which computes in f32 about a two-part mean (`Standardize` in
/// `kernels/mod.rs`): with `u = f32::EPSILON`,
/// `u/2·|y| + 2u·|x̂·w| + u²/4·|mean|·rstd·|w|`, against the exact result on the
/// same f32 inputs. It does not grow with the data's offset: the usual f32
/// formula `x·(rstd·w) + (b − mean·rstd·w)` errs by about `u·|x|·rstd·|w|`,
/// which at mean 1e3 and spread 1e-3 is a million times this.
pub fn f32_normalize_tol(y: f64, b: f64, mean: f64, rstd: f64, w: f64) -> f64 {
    let u = f32::EPSILON as f64;
    0.5 * u * y.abs() + 2.0 * u * (y - b).abs() + 0.25 * u * u * mean.abs() * rstd * w.abs()
}

/// Scales `2^k` and base `eps` for the tests of rows, groups and channels
/// whose variance leaves `f64`'s range (the scaled run takes `eps · 4^k`):
/// `eps = 0` at `2^±600` and `2^±1000`; `eps = 2^-10`, which moves `y` by
/// about a thousandth, at `2^515` (variance beyond `2^1024`, `eps · 4^k =
/// 2^1020`) and `2^-520` (variance below `2^-1022`, `eps · 4^k = 2^-1050`).
pub const SCALES_AND_EPS: [(i32, f64); 6] =
    [(600, 0.0), (1000, 0.0), (-600, 0.0), (-1000, 0.0), (515, 1.0 / 1024.0), (-520, 1.0 / 1024.0)];

/// A forward and backward pass's outputs, for [`assert_scaled_copy`].
pub struct NormRun {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
    pub dx: Vec<f64>,
    pub dweight: Vec<f64>,
}

impl NormRun {
    /// From an op's output `y`, its saved `mean` and `rstd`, and its backward.
    pub fn of(y: &normkit::Tensor<f64>, saved: [&normkit::Tensor<f64>; 2], g: normkit::ops::NormGrads<f64>) -> Self {
        NormRun {
            y: y.data().to_vec(),
            mean: saved[0].data().to_vec(),
            rstd: saved[1].data().to_vec(),
            dx: g.dx.data().to_vec(),
            dweight: g.dweight.map(|t| t.data().to_vec()).unwrap_or_default(),
        }
    }
}

/// `got` is the run of `base`'s input scaled by `s` (a power of two): the same
/// `y` and `dweight`, `mean` times `s` (to `mean_atol` absolute, in `base`'s
/// units: a mean that cancels carries the rounding of the values), `rstd` and
/// `dx` divided by `s`.
pub fn assert_scaled_copy(what: &str, got: &NormRun, base: &NormRun, s: f64, mean_atol: f64) {
    let scaled = |v: &[f64], by: f64| v.iter().map(|a| a * by).collect::<Vec<_>>();
    assert_close(&format!("{what}: y"), &got.y, &base.y, 1e-12, 1e-12);
    assert_close(&format!("{what}: mean / s"), &scaled(&got.mean, 1.0 / s), &base.mean, mean_atol, 1e-14);
    assert_close(&format!("{what}: rstd * s"), &scaled(&got.rstd, s), &base.rstd, 0.0, 1e-12);
    let dx_scale = base.dx.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert_close(&format!("{what}: dx * s"), &scaled(&got.dx, s), &base.dx, 1e-12 * dx_scale, 1e-11);
    assert_close(&format!("{what}: dweight"), &got.dweight, &base.dweight, 1e-10, 1e-11);
}
