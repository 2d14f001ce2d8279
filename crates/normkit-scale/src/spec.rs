//! Which scaler, with which parameters: scikit-learn's constructor arguments,
//! under the same names and defaults.

use crate::error::{Result, ScaleError};
use serde::{Deserialize, Serialize};

/// The norm of [`ScalerSpec::Normalizer`] (scikit-learn's `norm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `Σ |x_j|`.
    L1,
    /// `sqrt(Σ x_j²)`.
    L2,
    /// `max |x_j|`.
    Max,
}

/// A scaler and its parameters, as scikit-learn's constructors take them.
///
/// | scaler | scikit-learn | transform of a value `x` of column `j` |
/// |---|---|---|
/// | `Standard` | `StandardScaler` | `(x - mean_j) / scale_j`, `scale_j = sqrt(var_j)` (biased) |
/// | `MinMax` | `MinMaxScaler` | `x * scale_j + min_j`, `scale_j = (hi - lo) / (max_j - min_j)` |
/// | `MaxAbs` | `MaxAbsScaler` | `x / max_j |x|` |
/// | `Robust` | `RobustScaler` | `(x - median_j) / (q_hi_j - q_lo_j)` |
/// | `Normalizer` | `Normalizer` | each row divided by its norm over the selected columns |
///
/// A scale that would be zero (a constant column, a zero row) is 1 instead, as in
/// scikit-learn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scaler", rename_all = "lowercase")]
pub enum ScalerSpec {
    /// Standardization: remove the mean, divide by the standard deviation.
    Standard {
        /// Subtract the mean (default true).
        with_mean: bool,
        /// Divide by the standard deviation (default true).
        with_std: bool,
    },
    /// Map `[min, max]` of each column onto `feature_range`.
    #[serde(rename = "minmax")]
    MinMax {
        /// The target range `(lo, hi)`, `lo < hi` (default `(0, 1)`).
        feature_range: (f64, f64),
        /// Clip transformed values into `feature_range` (default false).
        clip: bool,
    },
    /// Divide each column by its maximum absolute value.
    #[serde(rename = "maxabs")]
    MaxAbs,
    /// Remove the median, divide by an inter-quantile range.
    Robust {
        /// Subtract the median (default true).
        with_centering: bool,
        /// Divide by the quantile range (default true).
        with_scaling: bool,
        /// Percentiles `(q_lo, q_hi)`, `0 <= q_lo <= q_hi <= 100` (default `(25, 75)`).
        quantile_range: (f64, f64),
        /// Divide the scale further by the normal distribution's range between
        /// the same quantiles, so that normal data ends with unit variance.
        unit_variance: bool,
    },
    /// Scale each row (over the selected columns) to unit norm. Stateless.
    Normalizer {
        /// Which norm (default `l2`).
        norm: Norm,
    },
}

impl ScalerSpec {
    /// `StandardScaler()` with its defaults.
    pub fn standard() -> Self {
        ScalerSpec::Standard { with_mean: true, with_std: true }
    }

    /// `MinMaxScaler()` with its defaults.
    pub fn minmax() -> Self {
        ScalerSpec::MinMax { feature_range: (0.0, 1.0), clip: false }
    }

    /// `RobustScaler()` with its defaults.
    pub fn robust() -> Self {
        ScalerSpec::Robust {
            with_centering: true,
            with_scaling: true,
            quantile_range: (25.0, 75.0),
            unit_variance: false,
        }
    }

    /// `Normalizer()` with its defaults.
    pub fn normalizer() -> Self {
        ScalerSpec::Normalizer { norm: Norm::L2 }
    }

    /// The scaler's name as the CLI and the parameters file spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ScalerSpec::Standard { .. } => "standard",
            ScalerSpec::MinMax { .. } => "minmax",
            ScalerSpec::MaxAbs => "maxabs",
            ScalerSpec::Robust { .. } => "robust",
            ScalerSpec::Normalizer { .. } => "normalizer",
        }
    }

    /// Checks the parameters as scikit-learn does, with its messages.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ScalerSpec::MinMax { feature_range: (lo, hi), .. } => {
                if !(lo.is_finite() && hi.is_finite()) {
                    return Err(ScaleError::param("feature_range", format!("({lo}, {hi}) must be finite")));
                }
                if lo >= hi {
                    return Err(ScaleError::param(
                        "feature_range",
                        format!("minimum of desired feature range must be smaller than maximum, got ({lo}, {hi})"),
                    ));
                }
            }
            ScalerSpec::Robust { quantile_range: (lo, hi), .. }
                if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo > hi =>
            {
                return Err(ScaleError::param(
                    "quantile_range",
                    format!("({lo}, {hi}) must satisfy 0 <= q_min <= q_max <= 100"),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether fitting needs exact quantiles (the robust scaler with centering or scaling).
    pub fn needs_quantiles(&self) -> bool {
        matches!(self, ScalerSpec::Robust { with_centering, with_scaling, .. } if *with_centering || *with_scaling)
    }

    /// Whether fitting reads the data at all (the normalizer has nothing to fit).
    pub fn needs_fit(&self) -> bool {
        !matches!(self, ScalerSpec::Normalizer { .. })
    }
}
