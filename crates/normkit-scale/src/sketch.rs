//! Approximate quantiles in one pass (`--approx`): a KLL sketch per column, from
//! Apache DataSketches (crate `datasketches`, Apache-2.0, pure Rust).
//!
//! # The sketch and its error
//!
//! A KLL sketch (Karnin, Lang & Liberty, "Optimal Quantile Approximation in
//! Streams", 2016) of parameter `k` keeps about `3k` of the values it has seen
//! (with weights `2^level`), whatever their number `n`; sketches of disjoint
//! parts of the data merge into a sketch of the whole. DataSketches documents
//! its error as a *normalized rank error* `eps`: the value the sketch returns
//! for normalized rank `r` has a true rank (among the `n` values) within
//! `eps · n` of `r · n`, with a confidence of 99%. For a single-sided query
//! (a quantile or a rank, what we use)
//!
//! ```text
//! eps(k) = 2.296 / k^0.9723        k = 200 (the default): eps = 0.0133 (1.33%)
//! ```
//!
//! (DataSketches' empirical fit, [`ColumnSketch::normalized_rank_error`]; for
//! `n <= k` the sketch keeps every value and is exact). The error
//! is random (compaction keeps the odd or the even items by a coin toss), so
//! two fits of the same data may differ slightly.
//!
//! # From the sketch to numpy's percentile
//!
//! numpy's linear percentile of `n` sorted values `v_0 <= ... <= v_{n-1}` is
//! `lerp(v_i, v_{i+1}, t)` with `h = (n - 1) q / 100`, `i = floor(h)`,
//! `t = h - i` (see [`crate::quantile`]). [`ColumnSketch::percentile`] does the
//! same with each order statistic `v_i` replaced by the sketch's value at
//! normalized rank `(i + 1/2) / n` (inclusive search: the first retained value
//! whose cumulative weight reaches `i + 1`), and `v_0`, `v_{n-1}` by the exact
//! minimum and maximum, which the sketch keeps. So:
//!
//! - while the sketch is exact (small `n`), the result is numpy's, bit for bit;
//! - otherwise the result lies between two values whose ranks are each within
//!   `eps · n` of `i` and `i + 1` (99% confidence each): it is the value at a
//!   rank within `eps · n` (+1) of the wanted rank `h`;
//! - the median is the mean of the one or two middle order statistics, as in
//!   numpy's `nanmedian`, each approximated the same way.

use crate::error::{Result, ScaleError};
use crate::quantile::{median_ranks, numpy_lerp, percentile_ranks};
use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch, SortedView};
use serde::{Deserialize, Serialize};

/// The KLL parameter `k` used by default (DataSketches' default: `eps` = 1.33%
/// at 99% confidence, about 600 retained values, under 10 KiB per column).
pub const DEFAULT_K: u16 = 200;

/// The confidence of the documented rank-error bound.
pub const CONFIDENCE: f64 = 0.99;

/// DataSketches' single-sided normalized rank error of a KLL sketch of
/// parameter `k`, at 99% confidence: `2.296 / k^0.9723`.
pub fn normalized_rank_error(k: u16) -> f64 {
    2.296 / f64::from(k).powf(0.9723)
}

/// A KLL sketch of one column's non-missing values (NaN is skipped).
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSketch {
    inner: KllSketch<KllFloat<f64>>,
}

impl ColumnSketch {
    /// An empty sketch of parameter `k` (8 to 65535; larger is more accurate:
    /// see [`normalized_rank_error`]).
    pub fn new(k: u16) -> Result<Self> {
        let inner = KllSketch::new(k).map_err(|e| ScaleError::InvalidParam {
            name: "sketch k".into(),
            reason: format!("{k}: {e} (the KLL sketch takes 8 to 65535)"),
        })?;
        Ok(ColumnSketch { inner })
    }

    /// Adds the non-missing values of `xs` (NaN is skipped).
    pub fn extend_from(&mut self, xs: &[f64]) {
        for &x in xs {
            // `KllFloat::new` refuses NaN only: missing values are skipped.
            if let Ok(v) = KllFloat::<f64>::new(x) {
                self.inner.update(v);
            }
        }
    }

    /// Adds the values seen by `other` (a sketch of a disjoint part of the data:
    /// another batch, thread, file or machine). The merged sketch's error bound
    /// is that of the smaller `k` of the two.
    pub fn merge(&mut self, other: &ColumnSketch) -> Result<()> {
        self.inner.merge(&other.inner).map_err(|e| ScaleError::Mismatch(format!("cannot merge quantile sketches: {e}")))
    }

    /// Number of values seen.
    pub fn count(&self) -> u64 {
        self.inner.n()
    }

    /// The sketch's parameter `k`.
    pub fn k(&self) -> u16 {
        self.inner.k()
    }

    /// Values the sketch holds now (its memory is about 8 bytes each).
    pub fn retained(&self) -> usize {
        self.inner.num_retained()
    }

    /// The sketch's single-sided normalized rank error at 99% confidence (for
    /// the smallest `k` of the sketches merged into it).
    pub fn normalized_rank_error(&self) -> f64 {
        self.inner.normalized_rank_error()
    }

    /// numpy's `nanpercentile(x, q)` (linear), approximately: see the module's
    /// doc. NaN when no value was seen.
    pub fn percentile(&self, q: f64) -> f64 {
        self.percentiles(&[q]).first().copied().unwrap_or(f64::NAN)
    }

    /// [`ColumnSketch::percentile`] of each of `qs` (0 to 100), sorting the
    /// sketch once.
    pub fn percentiles(&self, qs: &[f64]) -> Vec<f64> {
        let n = self.count();
        if n == 0 {
            return vec![f64::NAN; qs.len()];
        }
        let view = self.inner.sorted_view();
        qs.iter()
            .map(|&q| {
                let (i, j, t) = percentile_ranks(n, q);
                numpy_lerp(self.order_statistic(&view, i), self.order_statistic(&view, j), t)
            })
            .collect()
    }

    /// numpy's `nanmedian(x)`, approximately: the middle order statistic, or
    /// the mean of the two middle ones (each approximated as in
    /// [`ColumnSketch::percentile`]). NaN when no value was seen.
    pub fn median(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return f64::NAN;
        }
        let view = self.inner.sorted_view();
        let (i, j) = median_ranks(n);
        (self.order_statistic(&view, i) + self.order_statistic(&view, j)) / 2.0
    }

    /// The approximate value of 0-based rank `i` (of `n = count()`): the exact
    /// minimum and maximum at the ends, else the first retained value whose
    /// cumulative weight reaches `i + 1`.
    fn order_statistic(&self, view: &SortedView<KllFloat<f64>>, i: u64) -> f64 {
        let n = self.count();
        let exact_end = if i == 0 {
            self.inner.min_item()
        } else if i + 1 >= n {
            self.inner.max_item()
        } else {
            None
        };
        if let Some(v) = exact_end {
            return v.into_inner();
        }
        // (i + 1/2) / n: the inclusive search asks for weight ceil(rank · n) =
        // i + 1, with half a unit of margin against rounding.
        let rank = (i as f64 + 0.5) / n as f64;
        match view.quantile(rank.clamp(0.0, 1.0), SearchCriteria::Inclusive) {
            Ok(Some(v)) => v.into_inner(),
            _ => f64::NAN,
        }
    }

    /// The sketch in DataSketches' compact binary format (readable by the Java,
    /// C++ and Python libraries' `double` KLL sketch).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.serialize()
    }

    /// A sketch from [`ColumnSketch::to_bytes`]' format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = KllSketch::deserialize(bytes)
            .map_err(|e| ScaleError::Mismatch(format!("not a KLL sketch of f64 values: {e}")))?;
        Ok(ColumnSketch { inner })
    }
}

/// How a robust fit's quantiles were approximated: written as `"quantiles"`
/// in the parameters file (absent when they are exact).
///
/// ```json
/// "quantiles": {"method": "approximate", "sketch": "kll", "k": 200,
///               "normalized_rank_error": 0.013292, "confidence": 0.99}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApproxQuantiles {
    /// `"approximate"`.
    pub method: String,
    /// `"kll"`: Apache DataSketches' KLL sketch.
    pub sketch: String,
    /// The sketch's parameter `k`.
    pub k: u16,
    /// `eps`: each quantile is the value at a rank within `eps · n` (+1) of
    /// numpy's, with probability [`ApproxQuantiles::confidence`] (`n` the
    /// column's count of non-missing values).
    pub normalized_rank_error: f64,
    /// The confidence of that bound, 0.99.
    pub confidence: f64,
}

impl ApproxQuantiles {
    /// The record of a fit with KLL sketches whose smallest `k` was `k`.
    pub fn kll(k: u16) -> Self {
        ApproxQuantiles {
            method: "approximate".into(),
            sketch: "kll".into(),
            k,
            normalized_rank_error: normalized_rank_error(k),
            confidence: CONFIDENCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantile::{nanmedian, nanpercentile};

    #[test]
    fn exact_while_the_sketch_keeps_every_value() {
        // 200 values, k = 200: no compaction yet, so numpy's result exactly.
        let xs: Vec<f64> = (0..200).map(|i| ((i * 37) % 200) as f64 * 0.25 - 3.0).collect();
        let mut s = ColumnSketch::new(200).unwrap();
        s.extend_from(&xs);
        s.extend_from(&[f64::NAN]);
        assert_eq!((s.count(), s.retained()), (200, 200));
        for q in [0.0, 1.0, 10.0, 25.0, 33.3, 50.0, 75.0, 99.9, 100.0] {
            assert_eq!(s.percentile(q), nanpercentile(&xs, q), "q = {q}");
        }
        assert_eq!(s.median(), nanmedian(&xs));
        let mut one = ColumnSketch::new(200).unwrap();
        one.extend_from(&[7.5]);
        assert_eq!(one.percentiles(&[0.0, 50.0, 100.0]), vec![7.5, 7.5, 7.5]);
        assert!(ColumnSketch::new(200).unwrap().median().is_nan());
        // The 201st value compacts: the sketch then holds fewer values than it saw.
        s.extend_from(&[1.0]);
        assert!(s.retained() < 201);
    }

    #[test]
    fn documented_error_of_k_200() {
        // DataSketches: "k = 200 yields a single-sided epsilon of about 1.33%".
        assert!((normalized_rank_error(200) - 0.0133).abs() < 5e-5);
        let s = ColumnSketch::new(200).unwrap();
        assert_eq!(s.normalized_rank_error(), normalized_rank_error(200));
        assert!(ColumnSketch::new(3).is_err());
    }

    #[test]
    fn bytes_round_trip() {
        let mut s = ColumnSketch::new(64).unwrap();
        s.extend_from(&(0..10_000).map(|i| (i as f64).sin() * 1e15).collect::<Vec<_>>());
        let back = ColumnSketch::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.count(), s.count());
        assert_eq!(back.percentiles(&[5.0, 50.0, 95.0]), s.percentiles(&[5.0, 50.0, 95.0]));
        assert!(ColumnSketch::from_bytes(&[1, 2, 3]).is_err());
    }
}
