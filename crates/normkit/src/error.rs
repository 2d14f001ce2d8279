//! The error type of every fallible call in normkit.

/// What went wrong, with the shapes involved, so that the message alone says what
/// to fix. Every bad input to a normkit function returns one of these; none panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's data does not hold as many elements as its shape says.
    #[error("{what}: shape {shape:?} needs {expected} elements, but the data holds {got}")]
    DataLength {
        /// Which tensor.
        what: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements the data holds.
        got: usize,
    },

    /// A tensor has a different shape from the one required.
    #[error("{what} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Which tensor or parameter.
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },

    /// `normalized_shape` is not the trailing dimensions of the input.
    #[error("normalized_shape {normalized_shape:?} is not the trailing dimensions of input shape {input:?}")]
    NormalizedShape {
        /// The `normalized_shape` given.
        normalized_shape: Vec<usize>,
        /// The input's shape.
        input: Vec<usize>,
    },

    /// A dimension that must hold values is empty.
    #[error("{what} is empty (shape {shape:?}): there is nothing to normalize over")]
    Empty {
        /// What is empty.
        what: String,
        /// Its shape.
        shape: Vec<usize>,
    },

    /// A parameter is out of its domain (a negative eps, an axis out of range, ...).
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The parameter's name.
        name: String,
        /// Why its value is refused.
        reason: String,
    },

    /// A saved state lacks a tensor that the module has.
    #[error("{origin}: tensor {name:?} is missing (the module expects {expected:?})")]
    MissingTensor {
        /// The tensor's full name, prefix included (`"bn1.running_var"`).
        name: String,
        /// Where the state came from: a file's path, or `"state dict"`.
        origin: String,
        /// Every name the module expects.
        expected: Vec<String>,
    },

    /// A saved state holds, under the module's prefix, a tensor the module does
    /// not have (loading is strict, as PyTorch's `load_state_dict` by default).
    #[error("{origin}: unexpected tensor {name:?} (the module expects {expected:?})")]
    UnexpectedTensor {
        /// The tensor's full name.
        name: String,
        /// Where the state came from.
        origin: String,
        /// Every name the module expects.
        expected: Vec<String>,
    },

    /// A saved tensor has another element type than the one required.
    #[error("{origin}: tensor {name:?} has dtype {got}, expected {expected}")]
    TensorDtype {
        /// The tensor's full name.
        name: String,
        /// Where the state came from.
        origin: String,
        /// The dtype required (`"F32"`, `"I64"`, ...).
        expected: String,
        /// The dtype found.
        got: String,
    },

    /// A file could not be read, written or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// `Result` with normkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.to_owned(), reason: reason.into() }
    }

    pub(crate) fn shape(what: &str, expected: &[usize], got: &[usize]) -> Self {
        Error::ShapeMismatch { what: what.to_owned(), expected: expected.to_vec(), got: got.to_vec() }
    }
}
