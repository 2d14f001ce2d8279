//! RMSNorm on shaped tensors.

use super::{check_param_shape, check_same_shape, split_normalized_shape, NormGrads};
use crate::error::Result;
use crate::float::Float;
use crate::kernels;
use crate::tensor::{Tensor, TensorRef};

/// What [`rms_norm`] returns: the output and the statistic backward needs.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNormOutput<T> {
    /// Normalized output, shape of the input.
    pub y: Tensor<T>,
    /// Per-row `1 / sqrt(mean(x²) + eps)`, shape of the input's leading dims.
    pub rstd: Tensor<T>,
}

/// `torch.nn.functional.rms_norm`: normalizes over the trailing `normalized_shape`
/// dims by the root mean square; see [`kernels::rms_norm_forward`]. PyTorch's
/// default `eps` (when it is `None`) is the machine epsilon of `T`: pass
/// [`default_rms_eps`] to get it.
pub fn rms_norm<T: Float>(
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    weight: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<RmsNormOutput<T>> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_param_shape("weight", weight, normalized_shape)?;
    let rows = x.data().len() / n;
    let mut y = super::buffer::output_buffer(x.data().len());
    let mut rstd = vec![T::default(); rows];
    rms_norm_into(x, normalized_shape, weight, eps, &mut y, &mut rstd)?;
    Ok(RmsNormOutput { y: Tensor::from_output(x.shape().to_vec(), y), rstd: Tensor::from_parts(lead.to_vec(), rstd) })
}

/// [`rms_norm`] writing into caller-provided buffers, allocating nothing: `y` as
/// many elements as `x`, `rstd` one per row (the product of the leading dims).
pub fn rms_norm_into<T: Float>(
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    weight: Option<TensorRef<'_, T>>,
    eps: f64,
    y: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let (_, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_param_shape("weight", weight, normalized_shape)?;
    kernels::rms_norm_forward(x.data(), n, weight.map(|w| w.data()), eps, y, rstd)
}

/// Backward of [`rms_norm`]: gradients of `Σ y · dy` with respect to `x`, and to
/// `weight` when the forward had one. `rstd` is the forward's.
pub fn rms_norm_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
) -> Result<NormGrads<T>> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_same_shape("dy", dy, x)?;
    check_param_shape("rstd", Some(rstd), lead)?;
    check_param_shape("weight", weight, normalized_shape)?;
    let mut dx = super::buffer::output_buffer(x.data().len());
    let mut dweight = weight.map(|_| vec![T::default(); n]);
    rms_norm_backward_into(dy, x, normalized_shape, rstd, weight, &mut dx, dweight.as_deref_mut())?;
    Ok(NormGrads {
        dx: Tensor::from_output(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
        dbias: None,
    })
}

/// [`rms_norm_backward`] writing into caller-provided buffers: `dx` as many
/// elements as `x`, `dweight` of `normalized_shape`'s element count or `None`.
/// Beyond the outputs it allocates only the kernel's per-block partial sums.
pub fn rms_norm_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    dx: &mut [T],
    dweight: Option<&mut [T]>,
) -> Result<()> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_same_shape("dy", dy, x)?;
    check_param_shape("rstd", Some(rstd), lead)?;
    check_param_shape("weight", weight, normalized_shape)?;
    kernels::rms_norm_backward(dy.data(), x.data(), n, rstd.data(), weight.map(|w| w.data()), dx, dweight)
}

/// PyTorch's RMSNorm `eps` when none is given: the machine epsilon of `T`
/// (`torch.finfo(dtype).eps`).
pub fn default_rms_eps<T: Float>() -> f64 {
    T::EPSILON
}
