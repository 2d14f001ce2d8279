//! [`Moments`]: the one mergeable statistic (count, mean, M2) behind every kernel,
//! running statistic and scaler in normkit.
//!
//! For a set of values `x_1..x_n`:
//!
//! ```text
//! count = n
//! mean  = (1/n) Σ x_i
//! M2    = Σ (x_i - mean)²          biased variance = M2 / n, unbiased = M2 / (n - 1)
//! ```
//!
//! `E[x²] - E[x]²` is never used: it loses every digit of the variance when the mean
//! is large against the spread (mean 1e6, spread 1e-3 in f64). Instead:
//!
//! - [`Moments::push`] is Welford's update, one value at a time;
//! - [`Moments::merge`] is Chan et al.'s pairwise combination of two disjoint sets,
//!   so chunks computed apart (blocks of a row, threads, files, machines) combine
//!   into the statistics of their union;
//! - [`Moments::from_slice`] walks a slice, shifted by its first value, in fixed
//!   blocks of [`BLOCK`] values, each summarised by the corrected two-pass
//!   algorithm while it is in cache, and merges the blocks left to right. The block split depends only on the slice length,
//!   so the result never depends on how work is scheduled.

use crate::float::{AccFloat, Float};

/// Values per block in [`Moments::from_slice`]: small enough to stay in L1 for the
/// second pass, large enough that the merge cost is negligible.
pub const BLOCK: usize = 256;

/// Count, mean and sum of squared deviations (M2) of a set of values, accumulated
/// in `A` (`f64` for both `f32` and `f64` data; see [`crate::Float::Acc`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Moments<A> {
    count: u64,
    mean: A,
    m2: A,
}

impl<A: AccFloat> Default for Moments<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: AccFloat> Moments<A> {
    /// The statistics of the empty set: count 0, mean 0, M2 0.
    pub fn new() -> Self {
        Moments { count: 0, mean: A::zero(), m2: A::zero() }
    }

    /// Statistics from their parts, e.g. read back from a file. `m2` is the sum of
    /// squared deviations from `mean`, not a variance.
    pub fn from_parts(count: u64, mean: A, m2: A) -> Self {
        Moments { count, mean, m2 }
    }

    /// Welford's update with one value:
    ///
    /// ```text
    /// n' = n + 1;   δ = x - mean;   mean' = mean + δ / n';   M2' = M2 + δ (x - mean')
    /// ```
    ///
    /// Each update rounds the mean, so after n values M2's relative error can reach
    /// about n·eps·|mean|/sd (Chan, Golub & LeVeque): 1e-9 at mean 1e6, spread 1e-3,
    /// n = 1e4. Prefer [`Moments::from_slice`] where the values come as a slice.
    #[inline]
    pub fn push(&mut self, x: A) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean = self.mean + delta / A::from_count(self.count);
        self.m2 = self.m2 + delta * (x - self.mean);
    }

    /// Chan, Golub and LeVeque's combination of two disjoint sets a and b:
    ///
    /// ```text
    /// n = n_a + n_b;   δ = mean_b - mean_a
    /// mean = mean_a + δ n_b / n
    /// M2   = M2_a + M2_b + δ² n_a n_b / n
    /// ```
    #[inline]
    pub fn merge(&self, other: &Self) -> Self {
        if other.count == 0 {
            return *self;
        }
        if self.count == 0 {
            return *other;
        }
        let count = self.count + other.count;
        let (na, nb, n) = (A::from_count(self.count), A::from_count(other.count), A::from_count(count));
        let delta = other.mean - self.mean;
        let mean = self.mean + delta * (nb / n);
        let m2 = self.m2 + other.m2 + delta * delta * (na * (nb / n));
        Moments { count, mean, m2 }
    }

    /// The statistics of a slice, accumulated in `A`. Values are first shifted by
    /// the slice's first value `s` (an exact subtraction for values near it), so
    /// that means far from zero do not cost the deviations their low digits. Then
    /// fixed blocks of [`BLOCK`] shifted values `u_i = x_i - s` are each summarised
    /// by the corrected two-pass algorithm
    ///
    /// ```text
    /// m    = (1/k) Σ u_i                              (first pass)
    /// M2   = Σ (u_i - m)² - (Σ (u_i - m))² / k         (second pass; the last term and
    /// mean = s + m + Σ (u_i - m) / k                   the mean's correct the rounding of m)
    /// ```
    ///
    /// and merged left to right with [`Moments::merge`].
    pub fn from_slice<T: Float<Acc = A>>(xs: &[T]) -> Self {
        let Some(shift) = xs.first().map(|x| x.to_acc()) else {
            return Self::new();
        };
        let shifted = xs.chunks(BLOCK).fold(Self::new(), |acc, block| acc.merge(&Self::from_block(block, shift)));
        Moments { mean: shifted.mean + shift, ..shifted }
    }

    fn from_block<T: Float<Acc = A>>(block: &[T], shift: A) -> Self {
        let k = A::from_count(block.len() as u64);
        let sum = block.iter().fold(A::zero(), |s, &x| s + (x.to_acc() - shift));
        let m = sum / k;
        let (mut dev_sum, mut dev_sq) = (A::zero(), A::zero());
        for &x in block {
            let d = (x.to_acc() - shift) - m;
            dev_sum = dev_sum + d;
            dev_sq = dev_sq + d * d;
        }
        let m2 = corrected_m2(dev_sq, dev_sum, k);
        Moments { count: block.len() as u64, mean: m + dev_sum / k, m2 }
    }

    /// Number of values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of the values seen (0 for the empty set).
    pub fn mean(&self) -> A {
        self.mean
    }

    /// Sum of squared deviations from the mean.
    pub fn m2(&self) -> A {
        self.m2
    }

    /// Biased (population) variance `M2 / n`; NaN for the empty set.
    pub fn var_biased(&self) -> A {
        self.m2 / A::from_count(self.count)
    }

    /// Unbiased (sample) variance `M2 / (n - 1)`; NaN for fewer than two values.
    pub fn var_unbiased(&self) -> A {
        if self.count < 2 {
            return A::nan();
        }
        self.m2 / A::from_count(self.count - 1)
    }
}

impl<A: AccFloat> Extend<A> for Moments<A> {
    fn extend<I: IntoIterator<Item = A>>(&mut self, iter: I) {
        for x in iter {
            self.push(x);
        }
    }
}

impl<A: AccFloat> FromIterator<A> for Moments<A> {
    fn from_iter<I: IntoIterator<Item = A>>(iter: I) -> Self {
        let mut m = Self::new();
        m.extend(iter);
        m
    }
}

/// `M2 = Σd² - (Σd)²/k` of `k` deviations `d` from any centre (the corrected
/// two-pass formula). Exact arithmetic never makes it negative (Cauchy-Schwarz),
/// but rounding can when the deviations are all nearly equal (a constant block
/// about an inexact centre): that is clamped to 0, so that a constant input
/// has variance 0 (and `rstd = inf` with `eps = 0`), not NaN. NaN stays NaN.
/// The correction is computed as `Σd · (Σd/k)`, which by the same inequality
/// cannot overflow before `Σd²` does (`(Σd)²` overflowed for `f64` deviations
/// near 1e152 while `Σd²` did not, and the clamp then made the variance 0); an
/// overflowed correction (`-inf`) gives NaN, never a silent 0.
///
/// A block that is constant (or nearly) about an inexact centre leaves a tiny
/// positive residue instead; callers recentre such blocks on the refined mean
/// and sum again ([`needs_recentring`]), which makes a constant block's M2
/// exactly 0.
#[inline(always)]
pub(crate) fn corrected_m2<A: AccFloat>(dev_sq: A, dev_sum: A, k: A) -> A {
    let m2 = dev_sq - dev_sum * (dev_sum / k);
    if m2 >= A::zero() || m2.is_nan() {
        m2
    } else if m2.is_finite() {
        A::zero()
    } else {
        A::nan()
    }
}

/// Whether an `m2` from [`corrected_m2`] is at or below that formula's rounding
/// noise, about `k · ε · Σd²`: the deviations are then all nearly equal, the
/// block (nearly) constant about an inexact centre, and the caller should
/// recentre on the refined mean `centre + Σd/k` and sum the deviations again.
/// Blocks whose centre is within `σ · 10⁶` of their mean (every centre the
/// kernels compute, short of a constant block) never qualify. NaN never does.
#[inline(always)]
pub(crate) fn needs_recentring<A: AccFloat>(m2: A, dev_sq: A, k: A) -> bool {
    dev_sq > A::zero() && m2 <= k * A::epsilon() * dev_sq
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact-as-possible reference: mean and M2 of f64 values by two passes, each
    /// sum compensated (Neumaier).
    fn reference(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = neumaier(xs.iter().copied()) / n;
        let m2 = neumaier(xs.iter().map(|x| (x - mean) * (x - mean)));
        (mean, m2)
    }

    fn neumaier(it: impl Iterator<Item = f64>) -> f64 {
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for x in it {
            let t = s + x;
            c += if s.abs() >= x.abs() { (s - t) + x } else { (x - t) + s };
            s = t;
        }
        s + c
    }

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn empty_and_single() {
        let m = Moments::<f64>::new();
        assert_eq!(m.count(), 0);
        assert!(m.var_biased().is_nan());
        let one = Moments::from_slice(&[3.5f64]);
        assert_eq!((one.count(), one.mean(), one.m2()), (1, 3.5, 0.0));
        assert!(one.var_unbiased().is_nan());
        assert_eq!(one.merge(&m), one);
        assert_eq!(m.merge(&one), one);
    }

    #[test]
    fn large_offset_f64_keeps_full_relative_accuracy() {
        // mean 1e6, spread 1e-3: E[x²]-E[x]² would keep no correct digit here.
        let xs: Vec<f64> = (0..10_007).map(|i| 1e6 + 1e-3 * (((i * 7919) % 1000) as f64 / 500.0 - 1.0)).collect();
        let (mean, m2) = reference(&xs);
        let blocked = Moments::from_slice(&xs);
        assert!(rel(blocked.mean(), mean) <= 2.0 * f64::EPSILON, "mean {} vs {}", blocked.mean(), mean);
        assert!(rel(blocked.m2(), m2) < 1e-12, "m2 {} vs {}", blocked.m2(), m2);
        // Merging pieces meets the issue's bar of 1e-9. It cannot keep 1e-12: each
        // piece's mean is rounded to f64 (ulp 1.2e-10 at 1e6), and the merge
        // squares the difference of two such means.
        let merged = Moments::from_slice(&xs[..5000]).merge(&Moments::from_slice(&xs[5000..]));
        assert!(rel(merged.mean(), mean) <= 2.0 * f64::EPSILON);
        assert!(rel(merged.m2(), m2) < 1e-9, "m2 {} vs {}", merged.m2(), m2);
    }

    #[test]
    fn large_offset_f32_keeps_full_relative_accuracy() {
        // mean 1e3, spread 1 in f32 data: the f64 accumulator keeps f64 accuracy of
        // the (exactly representable) f32 inputs.
        let xs: Vec<f32> = (0..4099).map(|i| 1e3 + (((i * 104729) % 2001) as f32 / 1000.0 - 1.0)).collect();
        let wide: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let (mean, m2) = reference(&wide);
        let m = Moments::from_slice(&xs);
        assert!(rel(m.mean(), mean) < 1e-15);
        assert!(rel(m.m2(), m2) < 1e-12, "m2 {} vs {}", m.m2(), m2);
    }

    #[test]
    fn huge_f32_values_do_not_overflow() {
        let xs = [1e30f32, -1e30, 3e30, 2e30];
        let m = Moments::from_slice(&xs);
        assert!(m.var_biased().is_finite());
        assert!(rel(m.mean(), 1.25e30) < 1e-7);
    }

    #[test]
    fn nan_propagates() {
        let m = Moments::from_slice(&[1.0f64, f64::NAN, 2.0]);
        assert!(m.mean().is_nan() && m.m2().is_nan());
    }

    use proptest::prelude::*;

    proptest! {
        /// Merging the chunks of any split equals one pass over the whole.
        #[test]
        fn merge_of_any_split_equals_one_pass(
            xs in prop::collection::vec(-1e3f64..1e3, 1..700),
            offset in prop::sample::select(vec![0.0, 1e6, -1e9]),
            cuts in prop::collection::vec(0usize..700, 0..6),
        ) {
            let xs: Vec<f64> = xs.iter().map(|x| x + offset).collect();
            let (mean, m2) = reference(&xs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (xs.len() + 1)).collect();
            cuts.push(0);
            cuts.push(xs.len());
            cuts.sort_unstable();
            let merged = cuts.windows(2).fold(Moments::new(), |acc, w| {
                acc.merge(&Moments::from_slice(&xs[w[0]..w[1]]))
            });
            let welford: Moments<f64> = xs.iter().copied().collect();
            for m in [merged, welford, Moments::from_slice(&xs)] {
                prop_assert_eq!(m.count(), xs.len() as u64);
                // Welford's running mean rounds at each of n steps.
                prop_assert!((m.mean() - mean).abs() <= xs.len() as f64 * f64::EPSILON * (mean.abs() + 1e3));
                // Welford's error bound (Chan, Golub & LeVeque 1983) is about
                // n·eps·κ·M2 = n²·eps·|mean|·sd, κ = |mean| / sd the condition
                // number, plus n·(eps·|mean|)² from rounding the mean itself; the
                // blocked two-pass is far tighter, so the bound covers all three.
                let n = xs.len() as f64;
                let (sd, e) = ((m2 / n).sqrt(), f64::EPSILON);
                let tol = 2.0 * n * e * (n * mean.abs() * sd + m2) + 2.0 * n * (e * (mean.abs() + sd)).powi(2);
                prop_assert!((m.m2() - m2).abs() <= tol, "m2 {:e} vs {:e}", m.m2(), m2);
            }
        }
    }
}
