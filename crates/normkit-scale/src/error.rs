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

/// `Result` with [`ScaleError`].
pub type Result<T, E = ScaleError> = std::result::Result<T, E>;

impl ScaleError {
    pub(crate) fn param(name: &str, reason: impl Into<String>) -> Self {
        ScaleError::InvalidParam { name: name.to_owned(), reason: reason.into() }
    }
}
