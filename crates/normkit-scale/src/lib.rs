//! # normkit-scale
//!
//! Dataset feature scaling with scikit-learn's semantics, on data larger than
//! memory: the `standard`, `minmax`, `maxabs`, `robust` and `normalizer` scalers,
//! with scikit-learn's parameter and attribute names, fitted as a fold over record
//! batches into mergeable state ([`FitState`], built on [`normkit::Moments`]) and
//! applied batch by batch.
//!
//! - [`spec`]: which scaler, with which parameters ([`ScalerSpec`]);
//! - [`stats`]: the mergeable, serializable fit state;
//! - [`quantile`]: exact quantiles out of core (radix selection on float bits)
//!   with numpy's interpolation;
//! - [`sketch`]: approximate quantiles in one pass (a KLL sketch per column,
//!   with a documented rank error), for `FitOptions::approx`;
//! - [`fit`](mod@fit): the fold over batches ([`BatchSource`]);
//! - [`fitted`]: the fitted attributes and the transforms ([`Fitted`]);
//! - [`params`]: the versioned JSON file of fitted parameters;
//! - [`io`]: CSV and Parquet readers and writers (arrow-rs), column selection,
//!   atomic output.
//!
//! ```
//! use normkit_scale::{fit, FitOptions, MemorySource, ScalerSpec};
//!
//! // 3 rows, 2 columns; NaN is a missing value.
//! let mut src = MemorySource::from_row_major(&[1.0, 10.0, 2.0, f64::NAN, 3.0, 30.0], 2, 2);
//! let (fitted, _) = fit(&ScalerSpec::standard(), &mut src, FitOptions::default())?;
//! assert_eq!(fitted.attrs.mean_, Some(vec![2.0, 20.0]));
//! let mut batch = vec![vec![1.0, 3.0], vec![f64::NAN, 10.0]];
//! fitted.transform(&mut batch)?;
//! assert!(batch[1][0].is_nan()); // missing stays missing
//! # Ok::<(), normkit_scale::ScaleError>(())
//! ```

#![warn(missing_docs)]

pub mod atomic;
pub mod error;
pub mod fit;
pub mod fitted;
pub mod io;
pub mod params;
pub mod quantile;
pub mod sketch;
pub mod spec;
pub mod stats;

pub use error::{Result, ScaleError};
pub use fit::{fit, BatchSource, FitOptions, FitReport, MemorySource};
pub use fitted::{Attributes, Fitted, RobustStats, SamplesSeen};
pub use io::{ColumnInfo, Direction, Format, Progress, Table};
pub use params::ParamsFile;
pub use sketch::{ApproxQuantiles, ColumnSketch};
pub use spec::{Norm, ScalerSpec};
pub use stats::{ColumnStats, FitState, ShiftedMoments};
