//! Exact quantiles of columns too large for memory, with numpy's definitions.
//!
//! numpy's `nanpercentile(x, q)` (method `linear`) over the `n` sorted
//! non-missing values `v_0 <= ... <= v_{n-1}`:
//!
//! ```text
//! h = (n - 1) · (q / 100);   i = floor(h);   t = h - i
//! p = v_i + (v_{i+1} - v_i) · t          if t <  0.5
//! p = v_{i+1} - (v_{i+1} - v_i) · (1-t)  if t >= 0.5   (numpy's _lerp, for monotonicity)
//! ```
//!
//! and `nanmedian` is `v_{(n-1)/2}` for odd `n`, `(v_{n/2-1} + v_{n/2}) / 2` for even.
//! So a quantile needs at most two order statistics (values of given rank).
//!
//! # Selecting order statistics out of core
//!
//! [`RankSelector`] finds values of given ranks in passes over the data, with
//! bounded memory, by radix selection on the bits of the floats. A non-NaN `f64`
//! maps to a `u64` key whose unsigned order is the numeric order
//! ([`order_key`]). Each pass either
//!
//! - counts the keys that share a known prefix in 2^16 buckets of their next 16
//!   bits (a histogram: 512 KiB), which tells which bucket holds each wanted rank
//!   and the rank inside it; or
//! - when the bucket that holds a rank is small enough, collects its values,
//!   sorts them and reads the rank off exactly. The smallest buckets collect
//!   first, while the values collected by all columns together stay within a
//!   budget (`cap`, 16 Mi values = 128 MiB by default).
//!
//! The first pass is a histogram over the top 16 bits (sign, exponent, 4 bits of
//! mantissa); on most data the second pass collects. Data packed into a narrow
//! range (1e15 + small integers) needs more histogram passes, at most four in all,
//! since 64 bits are fixed 16 at a time; so does data whose buckets together
//! exceed the budget. Memory: one histogram per pending group plus at most
//! `cap` collected values, whatever the file's size.

use serde::{Deserialize, Serialize};

/// Keys per histogram level.
const BITS: u32 = 16;
const BUCKETS: usize = 1 << BITS;

/// Maps a non-NaN float to a key whose unsigned order is the float order
/// (-0.0 sorts just below +0.0).
#[inline]
pub fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// The inverse of [`order_key`].
#[inline]
pub fn from_order_key(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// numpy's linear interpolation between `a` and `b` at fraction `t` (`_lerp`).
#[inline]
pub fn numpy_lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// The ranks (0-based, into the sorted non-missing values) that percentile `q`
/// (0..=100) of `n > 0` values needs, and the interpolation fraction:
/// `(i, i + 1 clamped to n - 1, t)`.
pub fn percentile_ranks(n: u64, q: f64) -> (u64, u64, f64) {
    let h = (n - 1) as f64 * (q / 100.0);
    if h >= (n - 1) as f64 {
        return (n - 1, n - 1, 0.0);
    }
    if h <= 0.0 {
        return (0, 0, 0.0);
    }
    let i = h.floor();
    ((i as u64), (i as u64 + 1).min(n - 1), h - i)
}

/// The ranks the median of `n > 0` values needs.
pub fn median_ranks(n: u64) -> (u64, u64) {
    if n % 2 == 1 {
        ((n - 1) / 2, (n - 1) / 2)
    } else {
        (n / 2 - 1, n / 2)
    }
}

/// numpy's `nanpercentile(xs, q)` with method linear, in memory (NaN skipped;
/// NaN when every value is missing).
pub fn nanpercentile(xs: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let (i, j, t) = percentile_ranks(v.len() as u64, q);
    numpy_lerp(v[i as usize], v[j as usize], t)
}

/// numpy's `nanmedian(xs)`, in memory.
pub fn nanmedian(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let (i, j) = median_ranks(v.len() as u64);
    (v[i as usize] + v[j as usize]) / 2.0
}

/// A group of the next pass before its step is chosen: (column, level, prefix,
/// values in the bucket, ranks).
type Planned = (usize, u32, u64, u64, Vec<(u64, u64)>);

/// Where a search for some ranks of one column stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Step {
    /// Count the next 16 bits of keys whose top `level * 16` bits equal `prefix`.
    Histogram { level: u32, prefix: u64, counts: Vec<u64> },
    /// Collect every key whose top `level * 16` bits equal `prefix`.
    Collect { level: u32, prefix: u64, keys: Vec<u64> },
}

/// Ranks of one column that share a search step; `ranks` holds (rank in the whole
/// column, rank among the keys that match the step's prefix).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    step: Step,
    ranks: Vec<(u64, u64)>,
}

/// Exact order statistics of several columns, found in passes over data that
/// need not fit in memory (see the module's doc).
///
/// Use: [`RankSelector::new`] with the count of non-missing values of each column
/// and the ranks wanted; then, while [`RankSelector::done`] is false, make one
/// pass over all the data calling [`RankSelector::observe`] with each batch of
/// each column, and [`RankSelector::finish_pass`] after it. Then
/// [`RankSelector::value`] answers each rank.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RankSelector {
    columns: Vec<Vec<Group>>,
    found: Vec<Vec<(u64, f64)>>,
    cap: u64,
    passes: u32,
}

impl RankSelector {
    /// Default number of values all groups together may collect in one pass
    /// (16 Mi values, 128 MiB).
    pub const DEFAULT_CAP: u64 = 16 << 20;

    /// A search for `ranks[c]` (0-based, each `< counts[c]`) of column `c`, whose
    /// non-missing values number `counts[c]`. `cap` bounds the values collected
    /// in one pass by all groups together (memory `8 · cap` bytes), beside one
    /// 512 KiB histogram per group still counting.
    pub fn new(ranks: &[Vec<u64>], cap: u64) -> Self {
        let cap = cap.max(1);
        let columns = ranks
            .iter()
            .map(|rs| {
                let mut rs: Vec<u64> = rs.clone();
                rs.sort_unstable();
                rs.dedup();
                if rs.is_empty() {
                    Vec::new()
                } else {
                    vec![Group {
                        step: Step::Histogram { level: 0, prefix: 0, counts: vec![0; BUCKETS] },
                        ranks: rs.iter().map(|&r| (r, r)).collect(),
                    }]
                }
            })
            .collect();
        RankSelector { columns, found: vec![Vec::new(); ranks.len()], cap, passes: 0 }
    }

    /// A search whose first pass (the histogram of the top 16 bits of each
    /// column's keys, see [`KeyHistogram`]) was made alongside another fold,
    /// before the ranks were known. Ends that pass.
    pub fn after_first_pass(hists: Vec<KeyHistogram>, ranks: &[Vec<u64>], cap: u64) -> Self {
        let mut sel = RankSelector::new(ranks, cap);
        for (groups, h) in sel.columns.iter_mut().zip(hists) {
            if let Some(Group { step: Step::Histogram { counts, .. }, .. }) = groups.first_mut() {
                *counts = h.counts;
            }
        }
        sel.finish_pass();
        sel
    }

    /// Feeds one batch of every column (`columns[c]` is column `c`'s values),
    /// the columns in parallel.
    pub fn observe_batch(&mut self, columns: &[Vec<f64>]) {
        use rayon::prelude::*;
        let mut cols = std::mem::take(&mut self.columns);
        cols.par_iter_mut().zip(columns.par_iter()).for_each(|(groups, xs)| observe_groups(groups, xs));
        self.columns = cols;
    }

    /// Whether every rank has been found.
    pub fn done(&self) -> bool {
        self.columns.iter().all(Vec::is_empty)
    }

    /// Passes made so far.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Feeds one batch of column `c`'s values (NaN = missing, skipped).
    pub fn observe(&mut self, c: usize, xs: &[f64]) {
        if let Some(groups) = self.columns.get_mut(c) {
            observe_groups(groups, xs);
        }
    }
}

fn observe_groups(groups: &mut [Group], xs: &[f64]) {
    for g in groups.iter_mut() {
        match &mut g.step {
            Step::Histogram { level, prefix, counts } => {
                let (level, prefix) = (*level, *prefix);
                for &x in xs {
                    if x.is_nan() {
                        continue;
                    }
                    let k = order_key(x);
                    if level == 0 || k >> (64 - BITS * level) == prefix {
                        let bucket = (k << (BITS * level)) >> (64 - BITS);
                        counts[bucket as usize] += 1;
                    }
                }
            }
            Step::Collect { level, prefix, keys } => {
                let (level, prefix) = (*level, *prefix);
                for &x in xs {
                    if x.is_nan() {
                        continue;
                    }
                    let k = order_key(x);
                    if k >> (64 - BITS * level) == prefix {
                        keys.push(k);
                    }
                }
            }
        }
    }
}

impl RankSelector {
    /// Merges the observations of another selector that made the same pass over
    /// a disjoint part of the data (threads).
    pub fn merge_pass(&mut self, other: &RankSelector) {
        for (ga, gb) in self.columns.iter_mut().zip(&other.columns) {
            for (a, b) in ga.iter_mut().zip(gb) {
                match (&mut a.step, &b.step) {
                    (Step::Histogram { counts: ca, .. }, Step::Histogram { counts: cb, .. }) => {
                        for (x, y) in ca.iter_mut().zip(cb) {
                            *x += *y;
                        }
                    }
                    (Step::Collect { keys: ka, .. }, Step::Collect { keys: kb, .. }) => ka.extend_from_slice(kb),
                    _ => {}
                }
            }
        }
    }

    /// An empty copy for the same pass (to observe a disjoint part of the data).
    pub fn fresh_copy(&self) -> RankSelector {
        let columns = self
            .columns
            .iter()
            .map(|gs| {
                gs.iter()
                    .map(|g| Group {
                        step: match &g.step {
                            Step::Histogram { level, prefix, .. } => {
                                Step::Histogram { level: *level, prefix: *prefix, counts: vec![0; BUCKETS] }
                            }
                            Step::Collect { level, prefix, .. } => {
                                Step::Collect { level: *level, prefix: *prefix, keys: Vec::new() }
                            }
                        },
                        ranks: g.ranks.clone(),
                    })
                    .collect()
            })
            .collect();
        RankSelector { columns, found: vec![Vec::new(); self.found.len()], cap: self.cap, passes: self.passes }
    }

    /// Ends a pass: resolves the ranks that collected groups hold and plans the
    /// next pass for the others. The groups whose buckets are smallest collect
    /// their values, as long as the values collected by all groups together stay
    /// within the budget `cap` given to [`RankSelector::new`]; the others count
    /// the next 16 bits.
    pub fn finish_pass(&mut self) {
        self.passes += 1;
        let mut planned: Vec<Planned> = Vec::new();
        for (c, groups) in self.columns.iter_mut().enumerate() {
            for g in groups.drain(..) {
                match g.step {
                    Step::Collect { mut keys, .. } => {
                        keys.sort_unstable();
                        for (rank, local) in g.ranks {
                            // The histogram pass counted exactly these keys, so
                            // `local` is in range; stay total all the same.
                            let k = keys.get(local as usize).or(keys.last()).copied().unwrap_or(0);
                            self.found[c].push((rank, from_order_key(k)));
                        }
                    }
                    Step::Histogram { level, prefix, counts } => {
                        for (rank, local) in g.ranks {
                            let (bucket, below) = locate(&counts, local);
                            let new_prefix = (prefix << BITS) | bucket as u64;
                            let new_level = level + 1;
                            if new_level >= 4 {
                                // All 64 bits are fixed: every key in the bucket is this value.
                                self.found[c].push((rank, from_order_key(new_prefix)));
                                continue;
                            }
                            match planned.iter_mut().find(|p| p.0 == c && p.1 == new_level && p.2 == new_prefix) {
                                Some(p) => p.4.push((rank, local - below)),
                                None => planned.push((
                                    c,
                                    new_level,
                                    new_prefix,
                                    counts[bucket],
                                    vec![(rank, local - below)],
                                )),
                            }
                        }
                    }
                }
            }
        }
        // Smallest buckets first: they resolve the most ranks per byte.
        planned.sort_by_key(|p| p.3);
        let mut budget = self.cap;
        for (c, level, prefix, in_bucket, ranks) in planned {
            let step = if in_bucket <= budget {
                budget -= in_bucket;
                Step::Collect { level, prefix, keys: Vec::with_capacity(in_bucket as usize) }
            } else {
                Step::Histogram { level, prefix, counts: vec![0; BUCKETS] }
            };
            if let Some(groups) = self.columns.get_mut(c) {
                groups.push(Group { step, ranks });
            }
        }
    }

    /// The value of rank `rank` of column `c`, once found.
    pub fn value(&self, c: usize, rank: u64) -> Option<f64> {
        self.found.get(c)?.iter().find(|(r, _)| *r == rank).map(|&(_, v)| v)
    }
}

/// Counts of the top 16 bits of the order keys of one column's non-missing
/// values: the first pass of a [`RankSelector`], made before the ranks are known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistogram {
    counts: Vec<u64>,
}

impl Default for KeyHistogram {
    fn default() -> Self {
        KeyHistogram { counts: vec![0; BUCKETS] }
    }
}

impl KeyHistogram {
    /// Counts the non-missing values of `xs`.
    pub fn extend_from(&mut self, xs: &[f64]) {
        for &x in xs {
            if !x.is_nan() {
                self.counts[(order_key(x) >> (64 - BITS)) as usize] += 1;
            }
        }
    }

    /// The counts of the union of two disjoint sets.
    pub fn merge(&mut self, other: &KeyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
    }
}

/// The bucket holding the `local`-th key (0-based) and the keys in buckets below it.
fn locate(counts: &[u64], local: u64) -> (usize, u64) {
    let mut below = 0u64;
    for (b, &n) in counts.iter().enumerate() {
        if local < below + n {
            return (b, below);
        }
        below += n;
    }
    (counts.len() - 1, below - counts.last().copied().unwrap_or(0))
}

/// The standard normal distribution's quantile function Φ⁻¹(p) (scipy's
/// `stats.norm.ppf`), by Wichura's algorithm AS 241 (PPND16), accurate to about
/// 1e-16 relative. `p` outside (0, 1) gives ∓inf at the ends, NaN beyond.
// The coefficients are AS 241's, digit for digit as published.
#[allow(clippy::excessive_precision)]
pub fn norm_ppf(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((2509.0809287301226727 * r + 33430.575583588128105) * r + 67265.770927008700853) * r
                + 45921.953931549871457)
                * r
                + 13731.693765509461125)
                * r
                + 1971.5909503065514427)
                * r
                + 133.14166789178437745)
                * r
                + 3.387132872796366608)
            / (((((((5226.495278852545925 * r + 28729.085735721942674) * r + 39307.89580009271061) * r
                + 21213.794301586595867)
                * r
                + 5394.1960214247511077)
                * r
                + 687.1870074920579083)
                * r
                + 42.313330701600911252)
                * r
                + 1.0);
    }
    let mut r = if q < 0.0 { p } else { 1.0 - p };
    r = (-r.ln()).sqrt();
    let val = if r <= 5.0 {
        r -= 1.6;
        (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r + 0.24178072517745061177) * r
            + 1.27045825245236838258)
            * r
            + 3.64784832476320460504)
            * r
            + 5.7694972214606914055)
            * r
            + 4.6303378461565452959)
            * r
            + 1.42343711074968357734)
            / (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r
                + 0.14810397642748007459)
                * r
                + 0.68976733498510000455)
                * r
                + 1.6763848301838038494)
                * r
                + 2.05319162663775882187)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r + 0.0012426609473880784386) * r
            + 0.026532189526576123093)
            * r
            + 0.29656057182850489123)
            * r
            + 1.7848265399172913358)
            * r
            + 5.4637849111641143699)
            * r
            + 6.6579046435011037772)
            / (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) * r
                + 7.868691311456132591e-4)
                * r
                + 0.0148753612908506148525)
                * r
                + 0.13692988092273580531)
                * r
                + 0.59983220655588793769)
                * r
                + 1.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_key_is_monotone_and_invertible() {
        let xs = [f64::NEG_INFINITY, -1e300, -1.5, -f64::MIN_POSITIVE, -0.0, 0.0, 5e-324, 1.0, 1e15, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn norm_ppf_matches_scipy() {
        // scipy.stats.norm.ppf values.
        assert!((norm_ppf(0.75) - 0.6744897501960817).abs() < 1e-15);
        assert!((norm_ppf(0.9) - 1.2815515655446004).abs() < 1e-15);
        assert!((norm_ppf(0.1) + 1.2815515655446004).abs() < 1e-15);
        assert!((norm_ppf(0.999) - 3.090232306167813).abs() < 1e-14);
        assert!((norm_ppf(1e-10) + 6.361340902404056).abs() < 1e-13);
        assert_eq!(norm_ppf(0.5), 0.0);
    }

    fn select_in_passes(cols: &[Vec<f64>], ranks: &[Vec<u64>], cap: u64, batch: usize) -> RankSelector {
        let mut sel = RankSelector::new(ranks, cap);
        while !sel.done() {
            for (c, col) in cols.iter().enumerate() {
                for chunk in col.chunks(batch.max(1)) {
                    sel.observe(c, chunk);
                }
            }
            sel.finish_pass();
            assert!(sel.passes() <= 5);
        }
        sel
    }

    #[test]
    fn selects_exact_ranks_on_narrow_and_wide_data() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let narrow: Vec<f64> = (0..5000).map(|_| 1e15 + rng.random_range(0..50) as f64).collect();
        let wide: Vec<f64> = (0..5001).map(|_| rng.random_range(-1e6..1e6) * rng.random::<f64>().powi(30)).collect();
        let mut with_nan = wide.clone();
        with_nan[7] = f64::NAN;
        for cap in [1, 10, 1 << 20] {
            let cols = vec![narrow.clone(), wide.clone(), with_nan.clone()];
            let counts = [5000u64, 5001, 5000];
            let ranks: Vec<Vec<u64>> = counts.iter().map(|&n| vec![0, n / 4, n / 2, n / 2 + 1, n - 1]).collect();
            let sel = select_in_passes(&cols, &ranks, cap, 97);
            for (c, col) in cols.iter().enumerate() {
                let mut sorted: Vec<f64> = col.iter().copied().filter(|x| !x.is_nan()).collect();
                sorted.sort_unstable_by(f64::total_cmp);
                for &r in &ranks[c] {
                    assert_eq!(sel.value(c, r), Some(sorted[r as usize]), "column {c} rank {r} cap {cap}");
                }
            }
        }
    }

    #[test]
    fn percentile_matches_numpy_examples() {
        // numpy.percentile([1, 2, 3, 4], [25, 50, 75, 10]) = [1.75, 2.5, 3.25, 1.3]
        let xs = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(nanpercentile(&xs, 25.0), 1.75);
        assert_eq!(nanpercentile(&xs, 50.0), 2.5);
        assert_eq!(nanpercentile(&xs, 75.0), 3.25);
        assert!((nanpercentile(&xs, 10.0) - 1.3).abs() < 1e-15);
        assert_eq!(nanpercentile(&[f64::NAN, 7.0], 90.0), 7.0);
        assert!(nanpercentile(&[f64::NAN], 50.0).is_nan());
        assert_eq!(nanmedian(&xs), 2.5);
        assert_eq!(nanmedian(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
    }
}
