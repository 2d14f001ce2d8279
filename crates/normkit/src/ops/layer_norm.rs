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

/// Caller-provided output buffers of [`layer_norm_into`].
#[derive(Debug)]
pub struct LayerNormOutMut<'a, T> {
    /// Normalized output, as many elements as the input.
    pub y: &'a mut [T],
    /// Per-row mean, one element per row (the product of the leading dims).
    pub mean: &'a mut [T],
    /// Per-row `1 / sqrt(var + eps)`, one element per row.
    pub rstd: &'a mut [T],
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
    let rows = x.data().len() / n;
    let mut y = super::buffer::output_buffer(x.data().len());
    let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
    let out = LayerNormOutMut { y: &mut y, mean: &mut mean, rstd: &mut rstd };
    layer_norm_into(x, normalized_shape, weight, bias, eps, out)?;
    Ok(LayerNormOutput {
        y: Tensor::from_output(x.shape().to_vec(), y),
        mean: Tensor::from_parts(lead.to_vec(), mean),
        rstd: Tensor::from_parts(lead.to_vec(), rstd),
    })
}

/// [`layer_norm`] writing into caller-provided buffers, allocating nothing: for
/// loops that normalize many batches of one shape. The buffers' lengths are
/// checked (`y` as many elements as `x`, `mean` and `rstd` one per row).
pub fn layer_norm_into<T: Float>(
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
    out: LayerNormOutMut<'_, T>,
) -> Result<()> {
    let (_, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_param_shape("weight", weight, normalized_shape)?;
    check_param_shape("bias", bias, normalized_shape)?;
    let affine = Affine { weight: weight.map(|w| w.data()), bias: bias.map(|b| b.data()) };
    kernels::layer_norm_forward(x.data(), n, affine, eps, out.y, out.mean, out.rstd)
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
    let mut dx = super::buffer::output_buffer(x.data().len());
    let mut dweight = weight.map(|_| vec![T::default(); n]);
    let mut dbias = has_bias.then(|| vec![T::default(); n]);
    let grads = Grads { dx: &mut dx, dweight: dweight.as_deref_mut(), dbias: dbias.as_deref_mut() };
    layer_norm_backward_into(dy, x, normalized_shape, saved, weight, grads)?;
    Ok(NormGrads {
        dx: Tensor::from_output(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
        dbias: dbias.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
    })
}

/// [`layer_norm_backward`] writing into caller-provided buffers: `grads.dx` as
/// many elements as `x`; `grads.dweight` and `grads.dbias`, each of
/// `normalized_shape`'s element count, or `None` to skip that gradient. Beyond
/// the outputs it allocates only the kernel's per-block partial sums (see
/// [`kernels::layer_norm_backward`]).
pub fn layer_norm_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    normalized_shape: &[usize],
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    grads: Grads<'_, T>,
) -> Result<()> {
    let (lead, n) = split_normalized_shape(x.shape(), normalized_shape)?;
    check_same_shape("dy", dy, x)?;
    let (mean, rstd) = saved;
    check_param_shape("mean", Some(mean), lead)?;
    check_param_shape("rstd", Some(rstd), lead)?;
    check_param_shape("weight", weight, normalized_shape)?;
    kernels::layer_norm_backward(dy.data(), x.data(), n, mean.data(), rstd.data(), weight.map(|w| w.data()), grads)
}
