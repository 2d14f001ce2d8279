//! LayerNorm on shaped tensors.

use super::{check_param_shape, check_same_shape, split_normalized_shape, NormGrads};
use crate::error::Result;
use crate::float::Float;
use crate::kernels::{self, Affine, Grads};
use crate::tensor::{Tensor, TensorRef};

/// What [`layer_norm`] returns: the output and the statistics backward needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormOutput<T> {
    /// Normalized output, shape of the input.
    pub y: Tensor<T>,
    /// Per-row mean, shape of the input's leading (not normalized) dims.
    pub mean: Tensor<T>,
    /// Per-row `1 / sqrt(var + eps)`, same shape as `mean`.
    pub rstd: Tensor<T>,
}

/// `torch.nn.functional.layer_norm`: normalizes over the trailing
/// `normalized_shape` dims of `x`; see [`kernels::layer_norm_forward`] for the math.
/// `weight` and `bias`, when given, have shape `normalized_shape`.
pub fn layer_norm<T: Float>(
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<LayerNormOutput<T>> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_param_shape("weight", weight, normalized_shape)?;
    check_param_shape("bias", bias, normalized_shape)?;
    let rows = x.data().len() / n;
    let mut y = vec![T::default(); x.data().len()];
    let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
    let affine = Affine { weight: weight.map(|w| w.data()), bias: bias.map(|b| b.data()) };
    kernels::layer_norm_forward(x.data(), n, affine, eps, &mut y, &mut mean, &mut rstd)?;
    Ok(LayerNormOutput {
        y: Tensor::from_parts(x.shape().to_vec(), y),
        mean: Tensor::from_parts(lead.to_vec(), mean),
        rstd: Tensor::from_parts(lead.to_vec(), rstd),
    })
}

/// Backward of [`layer_norm`]: gradients of `Σ y · dy` with respect to `x`, and to
/// `weight` and `bias` when the forward had them (`has_bias` says whether it had
/// a bias; the bias's value is not needed). `mean` and `rstd` are the forward's.
pub fn layer_norm_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
) -> Result<NormGrads<T>> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_same_shape("dy", dy, x)?;
    let (mean, rstd) = saved;
    check_param_shape("mean", Some(mean), lead)?;
    check_param_shape("rstd", Some(rstd), lead)?;
    check_param_shape("weight", weight, normalized_shape)?;
    let mut dx = vec![T::default(); x.data().len()];
    let mut dweight = weight.map(|_| vec![T::default(); n]);
    let mut dbias = has_bias.then(|| vec![T::default(); n]);
    let grads = Grads { dx: &mut dx, dweight: dweight.as_deref_mut(), dbias: dbias.as_deref_mut() };
    kernels::layer_norm_backward(dy.data(), x.data(), n, mean.data(), rstd.data(), weight.map(|w| w.data()), grads)?;
    Ok(NormGrads {
        dx: Tensor::from_parts(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
        dbias: dbias.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
    })
}
