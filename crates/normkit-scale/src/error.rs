//! The error type of normkit-scale: every message names what to fix (the file,
//! the line and the column where there is one).

use std::path::PathBuf;

/// What went wrong while fitting, transforming, reading or writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// A scaler parameter is out of its domain (`feature_range` with min >= max, ...).
    #[error("invalid {name}: {reason}")]
    InvalidParam {
        /// The parameter's name (scikit-learn's).
        name: String,
        /// Why its value is refused.
        reason: String,
    },

    /// A value in the data cannot be used: not a number, or infinite.
    #[error("{file}: {unit} {line}, column {column:?}: {reason}")]
    BadValue {
        /// The file read (`<memory>` for in-memory data).
        file: String,
        /// `line` for a CSV, `row` for Parquet.
        unit: &'static str,
        /// The 1-based line of the file (the header is line 1 in a CSV with a header;
        /// the 1-based row in Parquet and in memory).
        line: u64,
        /// The column's name.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },

    /// A value refused in data handed over in memory (a batch given to
    /// [`crate::Fitted::transform`] or read from a [`crate::BatchSource`]):
    /// infinity anywhere (scikit-learn: "Input X contains infinity or a value too
    /// large"), NaN for the normalizer (scikit-learn: "Input X contains NaN").
    /// The file readers turn it into [`ScaleError::BadValue`] naming file, line
    /// and column.
    #[error("row {row}, column {column} (0-based index among the scaled columns): {}", refusal(*.value))]
    NonFinite {
        /// The 1-based row: since the start of the pass in a fit, within the
        /// batch in a transform.
        row: u64,
        /// The 0-based index of the column among the scaled ones.
        column: usize,
        /// The value (an infinity, or NaN).
        value: f64,
    },

    /// A column's statistics overflow `f64`: values within a factor of about
    /// two of its largest finite value (1.8e308) whose differences overflow.
    /// The file readers turn it into [`ScaleError::Format`] naming the column.
    #[error("column {column} (0-based index among the scaled columns): {OVERFLOW_REASON}")]
    Overflow {
        /// The 0-based index of the column among the scaled ones.
        column: usize,
    },

    /// A CSV row with a different number of fields from the header.
    #[error("{file}: line {line}: {reason}")]
    Ragged {
        /// The file read.
        file: String,
        /// The 1-based line.
        line: u64,
        /// What the reader saw.
        reason: String,
    },

    /// A column named by the user (or by saved parameters) is not in the file.
    #[error("{file}: {place}: no column {column:?} (the file has: {available})")]
    UnknownColumn {
        /// The file read.
        file: String,
        /// Where the columns are listed (`line 1 (the header)` in a CSV).
        place: &'static str,
        /// The name asked for.
        column: String,
        /// The columns the file has, comma separated.
        available: String,
    },

    /// A selected column is not numeric.
    #[error("{file}: column {column:?} is {dtype}, not numeric")]
    NotNumeric {
        /// The file read.
        file: String,
        /// The column.
        column: String,
        /// Its type.
        dtype: String,
    },

    /// Saved parameters do not fit the data or the request.
    #[error("{0}")]
    Mismatch(String),

    /// Nothing to scale: no numeric column, or no data where some is needed.
    #[error("{0}")]
    Empty(String),

    /// The parameters file cannot be read or is not in the expected format.
    #[error("{file}: {reason}")]
    Params {
        /// The parameters file.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A file cannot be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },

    /// The CSV or Parquet layer reported an error.
    #[error("{file}: {reason}")]
    Format {
        /// The file involved.
        file: String,
        /// The reader's or writer's message.
        reason: String,
    },
}

/// What [`ScaleError::Overflow`] says of the column.
pub const OVERFLOW_REASON: &str =
    "its mean overflows f64 (values near ±1.8e308); divide the column by a power of ten first";

/// `Result` with [`ScaleError`].
pub type Result<T, E = ScaleError> = std::result::Result<T, E>;

impl ScaleError {
    pub(crate) fn param(name: &str, reason: impl Into<String>) -> Self {
        ScaleError::InvalidParam { name: name.to_owned(), reason: reason.into() }
    }
}

/// Why a non-finite value is refused, in words a user can act on.
pub(crate) fn refusal(value: f64) -> String {
    if value.is_nan() {
        "NaN (a missing value): the normalizer refuses missing values, as scikit-learn's \"Input X contains NaN\""
            .to_owned()
    } else {
        format!("{value} is infinite (scikit-learn refuses infinity)")
    }
}

/// The first value of `columns` that `refused` flags, in row order (then column
/// order), as [`ScaleError::NonFinite`] with rows counted from `first_row` (1-based).
pub(crate) fn first_refused(columns: &[Vec<f64>], first_row: u64, refused: impl Fn(f64) -> bool) -> Result<()> {
    let mut worst: Option<(usize, usize, f64)> = None;
    for (j, col) in columns.iter().enumerate() {
        // Only rows before the best hit so far can beat it.
        let limit = worst.map_or(col.len(), |(i, _, _)| i);
        if let Some(i) = col.get(..limit).and_then(|c| c.iter().position(|&x| refused(x))) {
            worst = Some((i, j, col.get(i).copied().unwrap_or(f64::NAN)));
        }
    }
    match worst {
        Some((i, j, value)) => Err(ScaleError::NonFinite { row: first_row + i as u64, column: j, value }),
        None => Ok(()),
    }
}
