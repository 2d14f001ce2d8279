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
///
/// A large output of an op, once dropped, leaves its buffer for the next op to
/// reuse (see [`crate::ops::release_output_cache`]).
#[derive(Clone)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
    /// Where the buffer goes when the tensor is dropped: the output cache for
    /// the outputs of ops, nowhere (the allocator) for other tensors.
    recycle: Option<fn(Vec<T>)>,
}

impl<T> Drop for Tensor<T> {
    fn drop(&mut self) {
        if let Some(recycle) = self.recycle {
            recycle(std::mem::take(&mut self.data));
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor").field("shape", &self.shape).field("data", &self.data).finish()
    }
}

/// Equal shapes and elements (where the buffer goes on drop does not count).
impl<T: PartialEq> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

impl<T: Copy> Tensor<T> {
    /// A tensor from its shape and row-major data; an error if the lengths disagree.
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Self> {
        check_len("tensor", shape, data.len())?;
        Ok(Tensor { shape: shape.to_vec(), data, recycle: None })
    }

    /// A tensor of the given shape with every element equal to `value`.
    pub fn full(shape: &[usize], value: T) -> Result<Self> {
        Ok(Tensor { shape: shape.to_vec(), data: vec![value; numel(shape)?], recycle: None })
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
    pub fn into_data(mut self) -> Vec<T> {
        std::mem::take(&mut self.data)
    }

    /// A borrowed view of the whole tensor.
    pub fn view(&self) -> TensorRef<'_, T> {
        TensorRef { shape: &self.shape, data: &self.data }
    }

    /// Shape and data from already-checked parts.
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<T>) -> Self {
        debug_assert_eq!(numel(&shape).ok(), Some(data.len()));
        Tensor { shape, data, recycle: None }
    }
}

impl<T: crate::Float> Tensor<T> {
    /// An op's output from already-checked parts: its buffer (from
    /// `ops::buffer::output_buffer`) goes to the output cache when dropped.
    pub(crate) fn from_output(shape: Vec<usize>, data: Vec<T>) -> Self {
        let mut t = Self::from_parts(shape, data);
        t.recycle = Some(crate::ops::recycle_buffer::<T>);
        t
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
