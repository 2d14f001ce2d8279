//! What running a case produced: named tensors as (shape, f64 values).

use normkit::{Float, Tensor};
use std::collections::BTreeMap;

/// Named outputs of a case run.
#[derive(Clone, Debug, Default)]
pub struct Produced(BTreeMap<String, (Vec<usize>, Vec<f64>)>);

impl Produced {
    /// Records an output tensor under `name`, widened to `f64`.
    pub fn put<T: Float>(&mut self, name: &str, t: &Tensor<T>) {
        self.0.insert(name.to_owned(), (t.shape().to_vec(), t.data().iter().map(|v| v.to_f64()).collect()));
    }

    /// Records an output given as its shape and `f64` values.
    pub fn put_raw(&mut self, name: &str, shape: Vec<usize>, values: Vec<f64>) {
        self.0.insert(name.to_owned(), (shape, values));
    }

    /// Records an optional output.
    pub fn put_opt<T: Float>(&mut self, name: &str, t: Option<&Tensor<T>>) {
        if let Some(t) = t {
            self.put(name, t);
        }
    }

    /// The output named `name`.
    pub fn get(&self, name: &str) -> Option<(&[usize], &[f64])> {
        self.0.get(name).map(|(s, v)| (s.as_slice(), v.as_slice()))
    }
}

/// Why a case produced no outputs.
#[derive(Debug)]
pub enum RunError {
    /// normkit does not implement this op (or attribute) yet.
    Unsupported(String),
    /// normkit refused the input with an error: right for `"error"` cases.
    Refused(String),
    /// The case itself is malformed (a missing input or attribute).
    BadCase(String),
}

impl From<normkit::Error> for RunError {
    fn from(e: normkit::Error) -> Self {
        RunError::Refused(e.to_string())
    }
}
