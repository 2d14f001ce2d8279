//! Lp normalization and mean-variance normalization on shaped tensors.

use super::check_same_shape;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::{self, ChannelLayout};
use crate::tensor::{Tensor, TensorRef};

fn lp_layout(shape: &[usize], axis: isize) -> Result<ChannelLayout> {
    if shape.is_empty() {
        return Err(Error::invalid("x", "Lp normalization needs an input with at least one dimension"));
    }
    ChannelLayout::of_shape(shape, super::resolve_axis(axis, shape.len())?)
}

/// `torch.nn.functional.normalize(x, p, dim=axis, eps)` (ONNX `LpNormalization`):
/// each vector along `axis` divided by its p-norm, `p` = 1 or 2:
///
/// ```text
/// y = x / max(‖x‖_p, eps)
/// ```
///
/// The norm is computed scaled by the vector's largest magnitude, so it does not
/// overflow where it is finite. A zero vector (norm below `eps`) gives zeros.
/// See [`kernels::lp_normalize_forward`].
pub fn lp_normalize<T: Float>(x: TensorRef<'_, T>, p: u32, axis: isize, eps: f64) -> Result<Tensor<T>> {
    let layout = lp_layout(x.shape(), axis)?;
    let mut y = super::buffer::output_buffer(x.data().len());
    kernels::lp_normalize_forward(x.data(), layout, p, eps, &mut y)?;
    Ok(Tensor::from_output(x.shape().to_vec(), y))
}

/// Backward of [`lp_normalize`]: the gradient of `Σ y · dy` with respect to `x`,
/// as PyTorch's autograd computes it (see [`kernels::lp_normalize_backward`]).
pub fn lp_normalize_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    p: u32,
    axis: isize,
    eps: f64,
) -> Result<Tensor<T>> {
    let layout = lp_layout(x.shape(), axis)?;
    check_same_shape("dy", dy, x)?;
    let mut dx = super::buffer::output_buffer(x.data().len());
    kernels::lp_normalize_backward(dy.data(), x.data(), layout, p, eps, &mut dx)?;
    Ok(Tensor::from_output(x.shape().to_vec(), dx))
}
