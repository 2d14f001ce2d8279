//! The mergeable state of a fit: per column, the [`Moments`] of the values, their
//! minimum and maximum, and the number of rows seen. Fitting is a fold of record
//! batches into a [`FitState`]; states of disjoint parts of the data (batches,
//! threads, files, machines) combine with [`FitState::merge`]. The state is
//! serializable (serde) so that parts fitted apart can be merged later.
//!
//! Missing values (NaN) are skipped by every statistic, as in scikit-learn.

use normkit::Moments;
use serde::{Deserialize, Serialize};

/// Moments of `x - shift` for a fixed `shift` (the column's first value seen).
///
/// Data far from zero (1e15 with spread 1) would lose the low digits of its
/// deviations if each piece kept moments about zero: a piece's mean is rounded to
/// an ulp of 1e15 (0.125) and Chan's merge squares the difference of two such
/// means. Shifting by a value of the data keeps every piece's mean small, so
/// merged pieces agree with one pass to the accuracy of the spread.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftedMoments {
    /// The value subtracted from every datum (NaN until the first value is seen).
    pub shift: f64,
    /// Moments of the shifted values.
    pub moments: Moments<f64>,
}

impl Default for ShiftedMoments {
    fn default() -> Self {
        ShiftedMoments { shift: f64::NAN, moments: Moments::new() }
    }
}

impl ShiftedMoments {
    /// Adds the non-missing values of `xs` (NaN is skipped). `scratch` is reused
    /// between calls to hold the shifted values.
    pub fn extend_from(&mut self, xs: &[f64], scratch: &mut Vec<f64>) {
        scratch.clear();
        for &x in xs {
            if x.is_nan() {
                continue;
            }
            if self.shift.is_nan() {
                self.shift = x;
            }
            scratch.push(x - self.shift);
        }
        self.moments = self.moments.merge(&Moments::from_slice(scratch));
    }

    /// The moments of the union of two disjoint sets (Chan's formula after moving
    /// `other` onto this shift: its mean grows by `other.shift - self.shift`, its
    /// M2 is unchanged).
    pub fn merge(&self, other: &Self) -> Self {
        if other.moments.count() == 0 {
            return *self;
        }
        if self.moments.count() == 0 {
            return *other;
        }
        let o = other.moments;
        let moved = Moments::from_parts(o.count(), o.mean() + (other.shift - self.shift), o.m2());
        ShiftedMoments { shift: self.shift, moments: self.moments.merge(&moved) }
    }

    /// Number of values seen.
    pub fn count(&self) -> u64 {
        self.moments.count()
    }

    /// Mean of the values (NaN for none).
    pub fn mean(&self) -> f64 {
        if self.count() == 0 {
            return f64::NAN;
        }
        self.shift + self.moments.mean()
    }

    /// Biased variance `M2 / n` (NaN for none).
    pub fn var_biased(&self) -> f64 {
        self.moments.var_biased()
    }
}

/// The statistics of one column.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Count, mean and M2 of the non-missing values.
    pub moments: ShiftedMoments,
    /// Smallest non-missing value (+inf for none).
    pub min: f64,
    /// Largest non-missing value (-inf for none).
    pub max: f64,
}

impl Default for ColumnStats {
    fn default() -> Self {
        ColumnStats { moments: ShiftedMoments::default(), min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl ColumnStats {
    /// Folds a slice of values (NaN = missing) into the statistics.
    pub fn extend_from(&mut self, xs: &[f64], scratch: &mut Vec<f64>) {
        for &x in xs {
            // NaN compares false both ways, so it never moves min or max.
            if x < self.min {
                self.min = x;
            }
            if x > self.max {
                self.max = x;
            }
        }
        self.moments.extend_from(xs, scratch);
    }

    /// The statistics of the union of two disjoint sets.
    pub fn merge(&self, other: &Self) -> Self {
        ColumnStats {
            moments: self.moments.merge(&other.moments),
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// The mergeable state of a fit over several columns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// Rows seen (missing values included), scikit-learn's `n_samples_seen_` for
    /// the min-max and max-abs scalers.
    pub rows: u64,
    /// One entry per selected column.
    pub columns: Vec<ColumnStats>,
}

impl FitState {
    /// The empty state of `n_columns` columns.
    pub fn new(n_columns: usize) -> Self {
        FitState { rows: 0, columns: vec![ColumnStats::default(); n_columns] }
    }

    /// Folds one batch, given column by column (each slice one column's values for
    /// the batch's rows, NaN = missing; all slices of one length).
    pub fn update(&mut self, columns: &[Vec<f64>]) {
        let mut scratch = Vec::new();
        let rows = columns.first().map_or(0, Vec::len);
        for (stats, xs) in self.columns.iter_mut().zip(columns) {
            stats.extend_from(xs, &mut scratch);
        }
        self.rows += rows as u64;
    }

    /// The state of the union of two disjoint parts of the data (same columns).
    pub fn merge(&self, other: &Self) -> Self {
        FitState {
            rows: self.rows + other.rows,
            columns: self.columns.iter().zip(&other.columns).map(|(a, b)| a.merge(b)).collect(),
        }
    }
}
