//! Fitted parameters under scikit-learn's attribute names, and the transforms
//! they define.

use crate::error::{first_refused, Result, ScaleError};
use crate::quantile::norm_ppf;
use crate::sketch::ApproxQuantiles;
use crate::spec::{Norm, ScalerSpec};
use crate::stats::FitState;
use serde::{Deserialize, Serialize};

/// scikit-learn's `n_samples_seen_`: one number when every column saw as many
/// values, one per column otherwise (the standard scaler with missing values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SamplesSeen {
    /// The same count for every column.
    All(u64),
    /// A count per column.
    PerColumn(Vec<u64>),
}

impl SamplesSeen {
    /// From per-column counts, collapsed to one number when they agree (as
    /// scikit-learn's `StandardScaler.partial_fit` does).
    pub fn from_counts(counts: Vec<u64>) -> Self {
        match counts.first() {
            Some(&c) if counts.iter().all(|&x| x == c) => SamplesSeen::All(c),
            None => SamplesSeen::All(0),
            _ => SamplesSeen::PerColumn(counts),
        }
    }

    /// The values as floats, with scikit-learn's shape (`[]` or `[n_columns]`).
    pub fn to_f64(&self) -> (Vec<usize>, Vec<f64>) {
        match self {
            SamplesSeen::All(n) => (vec![], vec![*n as f64]),
            SamplesSeen::PerColumn(v) => (vec![v.len()], v.iter().map(|&n| n as f64).collect()),
        }
    }
}

/// The fitted attributes of a scaler, each present exactly when scikit-learn sets
/// it (not `None`). Missing statistics (a column with no value) are NaN, written
/// as `null` in JSON; infinite ones (a variance that overflows) as `"inf"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    /// Per-column mean (standard).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub mean_: Option<Vec<f64>>,
    /// Per-column biased variance (standard, `with_std`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub var_: Option<Vec<f64>>,
    /// Per-column scale: the divisor (standard, max-abs, robust) or multiplier (min-max).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub scale_: Option<Vec<f64>>,
    /// Per-column offset added after scaling (min-max).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub min_: Option<Vec<f64>>,
    /// Per-column minimum seen (min-max).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub data_min_: Option<Vec<f64>>,
    /// Per-column maximum seen (min-max).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub data_max_: Option<Vec<f64>>,
    /// Per-column `data_max_ - data_min_` (min-max).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub data_range_: Option<Vec<f64>>,
    /// Per-column maximum absolute value (max-abs).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub max_abs_: Option<Vec<f64>>,
    /// Per-column median (robust, `with_centering`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_null")]
    pub center_: Option<Vec<f64>>,
    /// Samples seen (standard: non-missing per column; min-max and max-abs: rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_samples_seen_: Option<SamplesSeen>,
}

impl Attributes {
    /// The attributes as (name, values) pairs, in a fixed order, present ones only.
    pub fn arrays(&self) -> Vec<(&'static str, &Vec<f64>)> {
        [
            ("mean_", &self.mean_),
            ("var_", &self.var_),
            ("scale_", &self.scale_),
            ("min_", &self.min_),
            ("data_min_", &self.data_min_),
            ("data_max_", &self.data_max_),
            ("data_range_", &self.data_range_),
            ("max_abs_", &self.max_abs_),
            ("center_", &self.center_),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
        .collect()
    }
}

/// Quantile statistics a robust fit needs, per column (NaN for a column with no value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RobustStats {
    /// numpy's `nanmedian`.
    pub median: Vec<f64>,
    /// numpy's `nanpercentile` at `quantile_range.0`.
    pub q_lo: Vec<f64>,
    /// numpy's `nanpercentile` at `quantile_range.1`.
    pub q_hi: Vec<f64>,
}

/// scikit-learn's `_handle_zeros_in_scale` without a mask: a scale below
/// `10 · eps` is 1 (NaN stays NaN).
fn handle_zeros(s: f64) -> f64 {
    if s < 10.0 * f64::EPSILON {
        1.0
    } else {
        s
    }
}

/// scikit-learn's `_is_constant_feature`: the variance is within the error
/// bound of the two-pass algorithm for a constant column,
/// `var <= n·eps·var + (n·mean·eps)²` (Chan, Golub & LeVeque).
fn is_constant_feature(var: f64, mean: f64, n: u64) -> bool {
    let (n, eps) = (n as f64, f64::EPSILON);
    var <= n * eps * var + (n * mean * eps).powi(2)
}

/// A fitted scaler: its specification and its attributes. Transforms work on a
/// batch given column by column (each `Vec` one selected column, NaN = missing,
/// which stays NaN).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// The scaler and its parameters.
    pub spec: ScalerSpec,
    /// Number of selected columns (scikit-learn's `n_features_in_`).
    pub n_features_in_: usize,
    /// What the fit learned.
    pub attrs: Attributes,
    /// How the robust scaler's quantiles were approximated (`None`: exact, or
    /// no quantiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<ApproxQuantiles>,
}

impl Fitted {
    /// The fitted attributes for `spec` from the statistics of a fold and, for the
    /// robust scaler, its quantiles.
    pub fn from_stats(spec: &ScalerSpec, state: &FitState, robust: Option<&RobustStats>) -> Result<Self> {
        spec.validate()?;
        let n = state.columns.len();
        let nan_if_empty = |v: f64| if v.is_finite() { v } else { f64::NAN };
        let mut a = Attributes::default();
        match *spec {
            ScalerSpec::Standard { with_mean, with_std } => {
                let counts: Vec<u64> = state.columns.iter().map(|c| c.moments.count()).collect();
                // Finite values always have a finite mean, but the differences
                // the statistics are summed from overflow near ±f64::MAX (where
                // scikit-learn's plain sum may or may not): refused, not NaN.
                if let Some(j) =
                    state.columns.iter().position(|c| c.moments.count() > 0 && !c.moments.mean().is_finite())
                {
                    return Err(ScaleError::Overflow { column: j });
                }
                if with_mean || with_std {
                    a.mean_ = Some(state.columns.iter().map(|c| c.moments.mean()).collect());
                }
                if with_std {
                    let var: Vec<f64> = state.columns.iter().map(|c| c.moments.var_biased()).collect();
                    let scale =
                        state
                            .columns
                            .iter()
                            .zip(&var)
                            .map(|(c, &v)| {
                                if is_constant_feature(v, c.moments.mean(), c.moments.count()) {
                                    1.0
                                } else {
                                    v.sqrt()
                                }
                            })
                            .collect();
                    a.var_ = Some(var);
                    a.scale_ = Some(scale);
                }
                a.n_samples_seen_ = Some(SamplesSeen::from_counts(counts));
            }
            ScalerSpec::MinMax { feature_range: (lo, hi), .. } => {
                let dmin: Vec<f64> = state.columns.iter().map(|c| nan_if_empty(c.min)).collect();
                let dmax: Vec<f64> = state.columns.iter().map(|c| nan_if_empty(c.max)).collect();
                let range: Vec<f64> = dmin.iter().zip(&dmax).map(|(a, b)| b - a).collect();
                let scale: Vec<f64> = range.iter().map(|&r| (hi - lo) / handle_zeros(r)).collect();
                a.min_ = Some(dmin.iter().zip(&scale).map(|(m, s)| lo - m * s).collect());
                a.scale_ = Some(scale);
                a.data_min_ = Some(dmin);
                a.data_max_ = Some(dmax);
                a.data_range_ = Some(range);
                a.n_samples_seen_ = Some(SamplesSeen::All(state.rows));
            }
            ScalerSpec::MaxAbs => {
                let max_abs: Vec<f64> =
                    state.columns.iter().map(|c| nan_if_empty(c.min.abs().max(c.max.abs()))).collect();
                a.scale_ = Some(max_abs.iter().map(|&m| handle_zeros(m)).collect());
                a.max_abs_ = Some(max_abs);
                a.n_samples_seen_ = Some(SamplesSeen::All(state.rows));
            }
            ScalerSpec::Robust { with_centering, with_scaling, quantile_range: (qlo, qhi), unit_variance } => {
                let r = robust.ok_or_else(|| ScaleError::Empty("the robust scaler needs its quantiles".into()))?;
                if with_centering {
                    a.center_ = Some(r.median.clone());
                }
                if with_scaling {
                    let mut scale: Vec<f64> = r.q_lo.iter().zip(&r.q_hi).map(|(l, h)| handle_zeros(h - l)).collect();
                    if unit_variance {
                        let adjust = norm_ppf(qhi / 100.0) - norm_ppf(qlo / 100.0);
                        scale.iter_mut().for_each(|s| *s /= adjust);
                    }
                    a.scale_ = Some(scale);
                }
            }
            ScalerSpec::Normalizer { .. } => {}
        }
        Ok(Fitted { spec: spec.clone(), n_features_in_: n, attrs: a, quantiles: None })
    }

    /// The stateless normalizer for `n` columns.
    pub fn normalizer(norm: Norm, n: usize) -> Self {
        Fitted {
            spec: ScalerSpec::Normalizer { norm },
            n_features_in_: n,
            attrs: Attributes::default(),
            quantiles: None,
        }
    }

    fn check_width(&self, columns: &[Vec<f64>]) -> Result<()> {
        if columns.len() != self.n_features_in_ {
            return Err(ScaleError::Mismatch(format!(
                "the scaler was fitted on {} columns, the data has {}",
                self.n_features_in_,
                columns.len()
            )));
        }
        Ok(())
    }

    /// Scales a batch in place (scikit-learn's `transform`).
    ///
    /// Refuses infinity (scikit-learn's "Input X contains infinity") and, for
    /// the normalizer, NaN ("Input X contains NaN"), with
    /// [`ScaleError::NonFinite`] naming the row within this batch and the column;
    /// the batch is left untouched then.
    pub fn transform(&self, columns: &mut [Vec<f64>]) -> Result<()> {
        self.check_width(columns)?;
        if matches!(self.spec, ScalerSpec::Normalizer { .. }) {
            first_refused(columns, 1, |x| !x.is_finite())?;
        } else {
            first_refused(columns, 1, f64::is_infinite)?;
        }
        let a = &self.attrs;
        match self.spec {
            ScalerSpec::Standard { with_mean, with_std } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let m = if with_mean { a.mean_.as_ref().and_then(|v| v.get(j)).copied() } else { None };
                    let s = if with_std { a.scale_.as_ref().and_then(|v| v.get(j)).copied() } else { None };
                    apply(col, |x| {
                        let x = m.map_or(x, |m| x - m);
                        s.map_or(x, |s| x / s)
                    });
                }
            }
            ScalerSpec::MinMax { feature_range: (lo, hi), clip } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let (s, m) = (at(&a.scale_, j), at(&a.min_, j));
                    apply(col, |x| {
                        let y = x * s + m;
                        if clip {
                            // NaN stays NaN (scikit-learn's `np.clip` keeps it);
                            // `max(lo)` alone would turn it into `lo`. Not `clamp`:
                            // it panics on a bad range from a hand-edited file.
                            if y.is_nan() {
                                y
                            } else {
                                y.max(lo).min(hi)
                            }
                        } else {
                            y
                        }
                    });
                }
            }
            ScalerSpec::MaxAbs => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let s = at(&a.scale_, j);
                    apply(col, |x| x / s);
                }
            }
            ScalerSpec::Robust { .. } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let c = a.center_.as_ref().and_then(|v| v.get(j)).copied();
                    let s = a.scale_.as_ref().and_then(|v| v.get(j)).copied();
                    apply(col, |x| {
                        let x = c.map_or(x, |c| x - c);
                        s.map_or(x, |s| x / s)
                    });
                }
            }
            ScalerSpec::Normalizer { norm } => normalize_rows(columns, norm),
        }
        Ok(())
    }

    /// Undoes [`Fitted::transform`] (scikit-learn's `inverse_transform`); the
    /// normalizer has none. Like scikit-learn's, it keeps NaN (missing) and
    /// refuses infinity ([`ScaleError::NonFinite`]).
    pub fn inverse_transform(&self, columns: &mut [Vec<f64>]) -> Result<()> {
        self.check_width(columns)?;
        first_refused(columns, 1, f64::is_infinite)?;
        let a = &self.attrs;
        match self.spec {
            ScalerSpec::Standard { with_mean, with_std } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let m = if with_mean { a.mean_.as_ref().and_then(|v| v.get(j)).copied() } else { None };
                    let s = if with_std { a.scale_.as_ref().and_then(|v| v.get(j)).copied() } else { None };
                    apply(col, |x| {
                        let x = s.map_or(x, |s| x * s);
                        m.map_or(x, |m| x + m)
                    });
                }
            }
            ScalerSpec::MinMax { .. } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let (s, m) = (at(&a.scale_, j), at(&a.min_, j));
                    apply(col, |x| (x - m) / s);
                }
            }
            ScalerSpec::MaxAbs => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let s = at(&a.scale_, j);
                    apply(col, |x| x * s);
                }
            }
            ScalerSpec::Robust { .. } => {
                for (j, col) in columns.iter_mut().enumerate() {
                    let c = a.center_.as_ref().and_then(|v| v.get(j)).copied();
                    let s = a.scale_.as_ref().and_then(|v| v.get(j)).copied();
                    apply(col, |x| {
                        let x = s.map_or(x, |s| x * s);
                        c.map_or(x, |c| x + c)
                    });
                }
            }
            ScalerSpec::Normalizer { .. } => {
                return Err(ScaleError::param(
                    "scaler",
                    "the normalizer has no inverse transform (row norms are not kept)",
                ))
            }
        }
        Ok(())
    }
}

/// The `j`-th value of a fitted vector, NaN if absent (only a corrupted
/// parameters file lacks it; [`crate::params`] checks lengths on load).
fn at(v: &Option<Vec<f64>>, j: usize) -> f64 {
    v.as_ref().and_then(|v| v.get(j)).copied().unwrap_or(f64::NAN)
}

/// Applies `f` to every non-missing value of `col`.
#[inline]
fn apply(col: &mut [f64], f: impl Fn(f64) -> f64) {
    for x in col.iter_mut() {
        if !x.is_nan() {
            *x = f(*x);
        }
    }
}

/// scikit-learn's `normalize`: each row divided by its norm over the columns,
/// a norm below `10 · eps` taken as 1 (zero rows unchanged). [`Fitted::transform`]
/// refuses NaN before this runs, as scikit-learn does.
fn normalize_rows(columns: &mut [Vec<f64>], norm: Norm) {
    let rows = columns.first().map_or(0, Vec::len);
    for i in 0..rows {
        let mut acc = 0.0f64;
        for col in columns.iter() {
            let x = col.get(i).copied().unwrap_or(f64::NAN);
            if x.is_nan() {
                continue;
            }
            match norm {
                Norm::L1 => acc += x.abs(),
                Norm::L2 => acc += x * x,
                Norm::Max => acc = acc.max(x.abs()),
            }
        }
        let n = handle_zeros(if norm == Norm::L2 { acc.sqrt() } else { acc });
        for col in columns.iter_mut() {
            if let Some(x) = col.get_mut(i) {
                *x /= n;
            }
        }
    }
}

/// nan_null: `Option<Vec<f64>>` with NaN written as JSON `null`, and the
/// infinities (which JSON numbers cannot hold) as the strings `"inf"` and
/// `"-inf"` (Python's `float()` reads them); read back the same way.
mod nan_null {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    /// One value as written.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Written {
        Number(f64),
        Text(&'static str),
        Null(()),
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<f64>>, s: S) -> Result<S::Ok, S::Error> {
        let written = |x: f64| match x {
            x if x.is_nan() => Written::Null(()),
            f64::INFINITY => Written::Text("inf"),
            f64::NEG_INFINITY => Written::Text("-inf"),
            x => Written::Number(x),
        };
        v.as_ref().map(|v| v.iter().map(|&x| written(x)).collect::<Vec<_>>()).serialize(s)
    }

    /// Through `serde_json::Value`: an untagged enum would not read numbers
    /// when serde_json keeps them in arbitrary precision.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
        let v: Option<Vec<Value>> = Option::deserialize(d)?;
        let read = |w: Value| match &w {
            Value::Null => Ok(f64::NAN),
            Value::Number(n) => n.as_f64().ok_or_else(|| D::Error::custom(format!("{n} is not an f64"))),
            Value::String(t) => match t.as_str() {
                "inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                "nan" | "NaN" => Ok(f64::NAN),
                _ => Err(D::Error::custom(format!("{t:?} is not a number"))),
            },
            other => Err(D::Error::custom(format!("{other} is not a number"))),
        };
        v.map(|v| v.into_iter().map(read).collect()).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::{fit, FitOptions, MemorySource};

    /// Every scaler, with non-default parameters where they matter.
    fn all_specs() -> Vec<ScalerSpec> {
        vec![
            ScalerSpec::standard(),
            ScalerSpec::MinMax { feature_range: (-1.0, 1.0), clip: true },
            ScalerSpec::MaxAbs,
            ScalerSpec::Robust {
                with_centering: true,
                with_scaling: true,
                quantile_range: (25.0, 75.0),
                unit_variance: false,
            },
            ScalerSpec::Normalizer { norm: Norm::L2 },
        ]
    }

    fn columns() -> Vec<Vec<f64>> {
        vec![vec![1.0, -2.0, 3.0, 4.0, 0.5], vec![10.0, 20.0, -30.0, 1e15, 7.0], vec![0.0, 1.0, 2.0, 3.0, 4.0]]
    }

    fn is_non_finite(e: &ScaleError, row: u64, column: usize, inf: bool) -> bool {
        matches!(*e, ScaleError::NonFinite { row: r, column: c, value }
            if r == row && c == column && (if inf { value.is_infinite() } else { value.is_nan() }))
    }

    #[test]
    fn minmax_clip_keeps_nan_of_an_all_missing_column() {
        let cols = vec![vec![f64::NAN; 4], vec![1.0, 2.0, f64::NAN, 5.0]];
        let spec = ScalerSpec::MinMax { feature_range: (-1.0, 1.0), clip: true };
        let (f, _) = fit(&spec, &mut MemorySource::from_columns(cols.clone(), 3), FitOptions::default()).unwrap();
        let mut out = vec![vec![0.0, f64::NAN, 1e300, -1e300], vec![1.0, 9.0, f64::NAN, -9.0]];
        f.transform(&mut out).unwrap();
        // The all-NaN column has NaN scale_ and min_: every output is NaN, never a bound.
        assert!(out[0].iter().all(|x| x.is_nan()), "{:?}", out[0]);
        // Reference from the formula: x * 2 / 4 - 1 - 2/4, clipped to [-1, 1]; NaN kept.
        let want = [-1.0, 1.0, f64::NAN, -1.0];
        for (y, w) in out[1].iter().zip(want) {
            assert!(y.to_bits() == w.to_bits() || (y.is_nan() && w.is_nan()), "{:?} vs {want:?}", out[1]);
        }
    }

    #[test]
    fn infinity_is_refused_in_fit_by_every_scaler() {
        for spec in all_specs() {
            for (bad, batch) in [(f64::INFINITY, 1), (f64::NEG_INFINITY, 2), (f64::INFINITY, 1000)] {
                let mut cols = columns();
                cols[1][3] = bad;
                // A later row of an earlier column and an earlier row of a later
                // column: the first in row order is named.
                cols[0][4] = f64::INFINITY;
                let e = fit(&spec, &mut MemorySource::from_columns(cols, batch), FitOptions::default()).unwrap_err();
                assert!(is_non_finite(&e, 4, 1, true), "{spec:?} batch {batch}: {e:?}");
                let msg = e.to_string();
                assert!(msg.contains("row 4") && msg.contains("column 1") && msg.contains("infinite"), "{msg}");
            }
        }
    }

    #[test]
    fn infinity_is_refused_in_transform_and_inverse_and_the_batch_is_untouched() {
        for spec in all_specs() {
            let (f, _) = fit(&spec, &mut MemorySource::from_columns(columns(), 2), FitOptions::default()).unwrap();
            let mut cols = columns();
            cols[2][0] = f64::NEG_INFINITY;
            let before = cols.clone();
            let e = f.transform(&mut cols).unwrap_err();
            assert!(is_non_finite(&e, 1, 2, true), "{spec:?}: {e:?}");
            assert_eq!(cols, before, "{spec:?}: a refused batch must stay as it was");
            if spec.needs_fit() {
                let e = f.inverse_transform(&mut cols).unwrap_err();
                assert!(is_non_finite(&e, 1, 2, true), "{spec:?} inverse: {e:?}");
                assert_eq!(cols, before);
            }
        }
    }

    #[test]
    fn nan_is_missing_except_for_the_normalizer() {
        for spec in all_specs() {
            let mut cols = columns();
            cols[1][2] = f64::NAN;
            let fitted = fit(&spec, &mut MemorySource::from_columns(cols.clone(), 3), FitOptions::default());
            if spec.needs_fit() {
                let (f, _) = fitted.unwrap();
                let mut t = cols.clone();
                f.transform(&mut t).unwrap();
                assert!(t[1][2].is_nan(), "{spec:?}");
                // scikit-learn's inverse_transform also keeps NaN.
                f.inverse_transform(&mut t).unwrap();
                assert!(t[1][2].is_nan(), "{spec:?}");
            } else {
                // scikit-learn's Normalizer: "Input X contains NaN", in fit and transform.
                let e = fitted.unwrap_err();
                assert!(is_non_finite(&e, 3, 1, false), "{e:?}");
                assert!(e.to_string().contains("NaN"), "{e}");
                let e = Fitted::normalizer(Norm::L1, 3).transform(&mut cols).unwrap_err();
                assert!(is_non_finite(&e, 3, 1, false), "{e:?}");
            }
        }
    }
}
