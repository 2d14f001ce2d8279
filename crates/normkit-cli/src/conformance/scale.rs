//! Scaler cases (`"scaler"` in the file): fit normkit-scale's scaler on `fit`,
//! apply it to `transform`, invert the output, and report `fitted.ATTR`,
//! `output` and `inverse`. The fit streams the matrix in batches of a few rows,
//! so the cases check the out-of-core path.

use super::case::{Case, CaseTensor};
use super::produced::{Produced, RunError};
use normkit_scale::{fit, FitOptions, MemorySource, Norm, ScalerSpec};
use serde_json::{Map, Value};

/// Rows per batch when fitting a case: small, so that merging is exercised.
const BATCH_ROWS: usize = 7;

/// Runs a scaler case.
pub fn run(case: &Case, scaler: &str) -> Result<Produced, RunError> {
    let spec = spec_from_params(scaler, &case.attrs)?;
    let fit_t = case.inputs.get("fit").ok_or_else(|| RunError::BadCase("missing \"fit\"".into()))?;
    let (rows, cols) = matrix_dims(fit_t, "fit")?;
    let mut source = MemorySource::from_row_major(&fit_t.data, cols, BATCH_ROWS);
    let _ = rows;
    let (fitted, _) = fit(&spec, &mut source, FitOptions::default()).map_err(|e| RunError::Refused(e.to_string()))?;
    let mut out = Produced::default();
    for (name, values) in fitted.attrs.arrays() {
        out.put_raw(&format!("fitted.{name}"), vec![values.len()], values.clone());
    }
    if let Some(seen) = &fitted.attrs.n_samples_seen_ {
        let (shape, values) = seen.to_f64();
        out.put_raw("fitted.n_samples_seen_", shape, values);
    }
    if let Some(t) = case.inputs.get("transform") {
        let (trows, tcols) = matrix_dims(t, "transform")?;
        let mut columns = to_columns(&t.data, trows, tcols);
        fitted.transform(&mut columns).map_err(|e| RunError::Refused(e.to_string()))?;
        out.put_raw("output", vec![trows, tcols], to_row_major(&columns, trows));
        if spec.needs_fit() {
            fitted.inverse_transform(&mut columns).map_err(|e| RunError::Refused(e.to_string()))?;
            out.put_raw("inverse", vec![trows, tcols], to_row_major(&columns, trows));
        }
    }
    Ok(out)
}

/// The scaler's specification from a case's `params` (scikit-learn's
/// constructor arguments; absent keys take scikit-learn's defaults).
pub fn spec_from_params(scaler: &str, p: &Map<String, Value>) -> Result<ScalerSpec, RunError> {
    let flag = |k: &str, default: bool| p.get(k).and_then(Value::as_bool).unwrap_or(default);
    let pair = |k: &str, default: (f64, f64)| -> Result<(f64, f64), RunError> {
        match p.get(k) {
            None => Ok(default),
            Some(v) => match v.as_array().map(|a| a.iter().map(Value::as_f64).collect::<Vec<_>>()) {
                Some(a) if a.len() == 2 && a.iter().all(Option::is_some) => {
                    Ok((a[0].unwrap_or(f64::NAN), a[1].unwrap_or(f64::NAN)))
                }
                _ => Err(RunError::Refused(format!("{k} must be a pair of numbers, got {v}"))),
            },
        }
    };
    let spec = match scaler {
        "standard" => ScalerSpec::Standard { with_mean: flag("with_mean", true), with_std: flag("with_std", true) },
        "minmax" => ScalerSpec::MinMax { feature_range: pair("feature_range", (0.0, 1.0))?, clip: flag("clip", false) },
        "maxabs" => ScalerSpec::MaxAbs,
        "robust" => ScalerSpec::Robust {
            with_centering: flag("with_centering", true),
            with_scaling: flag("with_scaling", true),
            quantile_range: pair("quantile_range", (25.0, 75.0))?,
            unit_variance: flag("unit_variance", false),
        },
        "normalizer" => ScalerSpec::Normalizer {
            norm: match p.get("norm").and_then(Value::as_str).unwrap_or("l2") {
                "l1" => Norm::L1,
                "l2" => Norm::L2,
                "max" => Norm::Max,
                other => return Err(RunError::Refused(format!("unknown norm {other:?}"))),
            },
        },
        other => return Err(RunError::Unsupported(format!("scaler {other}"))),
    };
    spec.validate().map_err(|e| RunError::Refused(e.to_string()))?;
    Ok(spec)
}

fn matrix_dims(t: &CaseTensor, what: &str) -> Result<(usize, usize), RunError> {
    match t.shape.as_slice() {
        [r, c] => Ok((*r, *c)),
        s => Err(RunError::Refused(format!("{what} must be a matrix (rows, columns), got shape {s:?}"))),
    }
}

fn to_columns(data: &[f64], rows: usize, cols: usize) -> Vec<Vec<f64>> {
    (0..cols).map(|j| (0..rows).map(|i| data[i * cols + j]).collect()).collect()
}

fn to_row_major(columns: &[Vec<f64>], rows: usize) -> Vec<f64> {
    (0..rows).flat_map(|i| columns.iter().map(move |c| c[i])).collect()
}
