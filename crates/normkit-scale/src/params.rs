//! The file of fitted parameters: versioned JSON that a Python user reads with
//! `json.load`, under scikit-learn's names.
//!
//! ```json
//! {
//!   "format": "normkit-scale-params",
//!   "version": 1,
//!   "normkit_version": "0.1.0",
//!   "scaler": "standard",
//!   "params": {"with_mean": true, "with_std": true},
//!   "n_features_in_": 2,
//!   "feature_names_in_": ["price", "weight"],
//!   "dtypes": ["float64", "int64"],
//!   "attributes": {"mean_": [3.5, 12.0], "var_": [1.25, 4.0], "scale_": [1.118033988749895, 2.0],
//!                  "n_samples_seen_": 1000}
//! }
//! ```
//!
//! `params` holds the scaler's constructor arguments, `attributes` its fitted
//! attributes (each present exactly when scikit-learn sets it; a statistic of a
//! column with no value is `null`, an infinite one `"inf"` or `"-inf"` (JSON
//! has no number for it); `n_samples_seen_` is a number, or a list when
//! the columns saw different counts). A robust fit with approximate quantiles
//! (`--approx`) adds a key `quantiles` naming the sketch and its rank-error
//! bound, for example `{"method": "approximate", "sketch": "kll", "k": 200,
//! "normalized_rank_error": 0.0133, "confidence": 0.99}` (see
//! [`ApproxQuantiles`]); without it the quantiles are exact. Readers that do not
//! know the key ignore it. Numbers are written in the shortest form
//! that reads back to the same `f64`. A reader refuses another `format`, a newer
//! `version`, and attributes whose lengths differ from `n_features_in_`.

use crate::atomic::AtomicFile;
use crate::error::{Result, ScaleError};
use crate::fitted::{Attributes, Fitted, SamplesSeen};
use crate::io::Table;
use crate::sketch::ApproxQuantiles;
use crate::spec::ScalerSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::Path;

/// The value of the file's `format` key.
pub const FORMAT: &str = "normkit-scale-params";
/// The version this code writes and the newest it reads.
pub const VERSION: u32 = 1;

/// A fitted scaler with the names and types of the columns it was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file format's version ([`VERSION`]).
    pub version: u32,
    /// The normkit that wrote it.
    pub normkit_version: String,
    /// `standard`, `minmax`, `maxabs`, `robust` or `normalizer`.
    pub scaler: String,
    /// The constructor arguments (scikit-learn's names).
    pub params: Map<String, Value>,
    /// Number of columns fitted.
    pub n_features_in_: usize,
    /// The columns' names, in the order of the attributes.
    pub feature_names_in_: Vec<String>,
    /// The columns' types (numpy's names) in the fitted file.
    pub dtypes: Vec<String>,
    /// The fitted attributes.
    pub attributes: Attributes,
    /// Present when the robust scaler's quantiles are approximate (`--approx`):
    /// the sketch and its rank-error bound. Absent: exact quantiles (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<ApproxQuantiles>,
}

fn params_err(path: &Path, reason: impl Into<String>) -> ScaleError {
    ScaleError::Params { file: path.display().to_string(), reason: reason.into() }
}

impl ParamsFile {
    /// The file's content for `fitted`, fitted on the columns `names` of types `dtypes`.
    pub fn new(fitted: &Fitted, names: Vec<String>, dtypes: Vec<String>) -> Result<Self> {
        let mut params = match serde_json::to_value(&fitted.spec) {
            Ok(Value::Object(m)) => m,
            _ => return Err(ScaleError::Mismatch("the scaler's parameters cannot be written as JSON".into())),
        };
        params.remove("scaler");
        Ok(ParamsFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            normkit_version: env!("CARGO_PKG_VERSION").to_owned(),
            scaler: fitted.spec.name().to_owned(),
            params,
            n_features_in_: fitted.n_features_in_,
            feature_names_in_: names,
            dtypes,
            attributes: fitted.attrs.clone(),
            quantiles: fitted.quantiles.clone(),
        })
    }

    /// The fitted scaler, after checking the file is complete and consistent
    /// (`path` names the file in errors).
    pub fn fitted(&self, path: &Path) -> Result<Fitted> {
        if self.format != FORMAT {
            return Err(params_err(path, format!("\"format\" is {:?}, not {FORMAT:?}", self.format)));
        }
        if self.version > VERSION {
            return Err(params_err(
                path,
                format!("version {} is newer than this normkit reads ({VERSION})", self.version),
            ));
        }
        let mut spec_obj = self.params.clone();
        spec_obj.insert("scaler".into(), Value::String(self.scaler.clone()));
        let spec: ScalerSpec = serde_json::from_value(Value::Object(spec_obj))
            .map_err(|e| params_err(path, format!("scaler {:?} with params: {e}", self.scaler)))?;
        spec.validate().map_err(|e| params_err(path, e.to_string()))?;
        let n = self.n_features_in_;
        if self.feature_names_in_.len() != n || self.dtypes.len() != n {
            return Err(params_err(
                path,
                format!(
                    "n_features_in_ is {n} but there are {} feature_names_in_ and {} dtypes",
                    self.feature_names_in_.len(),
                    self.dtypes.len()
                ),
            ));
        }
        let a = &self.attributes;
        for (name, v) in a.arrays() {
            if v.len() != n {
                return Err(params_err(path, format!("{name} has {} values, n_features_in_ is {n}", v.len())));
            }
        }
        if let Some(SamplesSeen::PerColumn(v)) = &a.n_samples_seen_ {
            if v.len() != n {
                return Err(params_err(path, format!("n_samples_seen_ has {} values, n_features_in_ is {n}", v.len())));
            }
        }
        let need: &[(&str, bool)] = match spec {
            ScalerSpec::Standard { with_mean, with_std } => &[("mean_", with_mean), ("scale_", with_std)],
            ScalerSpec::MinMax { .. } => &[("scale_", true), ("min_", true)],
            ScalerSpec::MaxAbs => &[("scale_", true)],
            ScalerSpec::Robust { with_centering, with_scaling, .. } => {
                &[("center_", with_centering), ("scale_", with_scaling)]
            }
            ScalerSpec::Normalizer { .. } => &[],
        };
        let present: Vec<&str> = a.arrays().into_iter().map(|(name, _)| name).collect();
        for &(name, needed) in need {
            if needed && !present.contains(&name) {
                return Err(params_err(path, format!("the {} scaler needs {name}, which is missing", self.scaler)));
            }
        }
        Ok(Fitted { spec, n_features_in_: n, attrs: a.clone(), quantiles: self.quantiles.clone() })
    }

    /// Reads a parameters file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScaleError::Io { path: path.to_path_buf(), source })?;
        serde_json::from_str(&text).map_err(|e| params_err(path, format!("not a normkit parameters file: {e}")))
    }

    /// Writes the file atomically (temporary file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| ScaleError::Io { path: path.to_path_buf(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| params_err(path, e.to_string()))?;
        let out = AtomicFile::new(path).map_err(io)?;
        let mut file = out.file();
        file.write_all(text.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        out.commit().map_err(io)
    }

    /// The indices in `table` of the columns the parameters were fitted on (in
    /// fitting order). A column the file lacks, or one that is not numeric where
    /// it was, is an error naming both files (`params_path` is this file).
    pub fn columns_in(&self, table: &Table, params_path: &Path) -> Result<Vec<usize>> {
        let mut sel = Vec::with_capacity(self.feature_names_in_.len());
        for name in &self.feature_names_in_ {
            let j = table.index_of(name).map_err(|e| {
                ScaleError::Mismatch(format!(
                    "{e}; the parameters in {} were fitted on columns {}",
                    params_path.display(),
                    self.feature_names_in_.join(", ")
                ))
            })?;
            sel.push(j);
        }
        // A CSV column is checked value by value as it is read; Parquet has types.
        if table.format() == crate::io::Format::Parquet {
            for &j in &sel {
                let c = &table.columns()[j];
                if !c.numeric {
                    return Err(ScaleError::NotNumeric {
                        file: table.path().display().to_string(),
                        column: c.name.clone(),
                        dtype: c.dtype.clone(),
                    });
                }
            }
        }
        Ok(sel)
    }
}
