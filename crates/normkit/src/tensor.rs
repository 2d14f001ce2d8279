//! A minimal dense tensor: a shape and row-major (C order) data. normkit needs no
//! more than this to take and return whole inputs; the kernels work on slices.

use crate::error::{Error, Result};

/// Number of elements of a shape (1 for the scalar shape `[]`), or an error when
/// the product overflows `usize`.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::invalid("shape", format!("the number of elements of {shape:?} overflows usize")))
}

/// An owned tensor: shape plus row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Copy> Tensor<T> {
    /// A tensor from its shape and row-major data; an error if the lengths disagree.
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Self> {
        check_len("tensor", shape, data.len())?;
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// A tensor of the given shape with every element equal to `value`.
    pub fn full(shape: &[usize], value: T) -> Result<Self> {
        Ok(Tensor { shape: shape.to_vec(), data: vec![value; numel(shape)?] })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements in row-major order, mutably.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements, giving up the shape.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// A borrowed view of the whole tensor.
    pub fn view(&self) -> TensorRef<'_, T> {
        TensorRef { shape: &self.shape, data: &self.data }
    }

    /// Shape and data from already-checked parts.
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<T>) -> Self {
        debug_assert_eq!(numel(&shape).ok(), Some(data.len()));
        Tensor { shape, data }
    }
}

/// A borrowed tensor: a shape and a row-major slice of exactly that many elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRef<'a, T> {
    shape: &'a [usize],
    data: &'a [T],
}

impl<'a, T> TensorRef<'a, T> {
    /// A view of `data` with `shape`; an error if the lengths disagree.
    pub fn new(shape: &'a [usize], data: &'a [T]) -> Result<Self> {
        check_len("tensor", shape, data.len())?;
        Ok(TensorRef { shape, data })
    }

    /// The dimensions.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

impl<'a, T: Copy> From<&'a Tensor<T>> for TensorRef<'a, T> {
    fn from(t: &'a Tensor<T>) -> Self {
        t.view()
    }
}

/// Checks that `len` elements fill `shape`.
pub(crate) fn check_len(what: &str, shape: &[usize], len: usize) -> Result<()> {
    let expected = numel(shape)?;
    if expected != len {
        return Err(Error::DataLength { what: what.to_owned(), shape: shape.to_vec(), expected, got: len });
    }
    Ok(())
}
