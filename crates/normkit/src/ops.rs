//! The functional API: normalization ops on shaped tensors, in the spirit of
//! `torch.nn.functional`. Each op checks shapes, allocates its outputs and calls a
//! kernel from [`crate::kernels`].
//!
//! ```
//! use normkit::{ops, Tensor};
//! let x = Tensor::new(&[2, 3], vec![1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0])?;
//! let out = ops::layer_norm(x.view(), &[3], None, None, 1e-5)?;
//! assert_eq!(out.y.shape(), &[2, 3]);
//! assert!((out.y.data()[0] + 1.2247).abs() < 1e-3);
//! assert_eq!(out.mean.data(), &[2.0, 20.0]);
//! # Ok::<(), normkit::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::{self, Affine, Grads};
use crate::tensor::{numel, Tensor, TensorRef};

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

/// What [`rms_norm`] returns: the output and the statistic backward needs.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNormOutput<T> {
    /// Normalized output, shape of the input.
    pub y: Tensor<T>,
    /// Per-row `1 / sqrt(mean(x²) + eps)`, shape of the input's leading dims.
    pub rstd: Tensor<T>,
}

/// Gradients from a backward pass. `dweight`/`dbias` are `Some` exactly when the
/// forward had that parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct NormGrads<T> {
    /// Gradient with respect to the input, shape of the input.
    pub dx: Tensor<T>,
    /// Gradient with respect to the weight, shape of the weight.
    pub dweight: Option<Tensor<T>>,
    /// Gradient with respect to the bias, shape of the bias.
    pub dbias: Option<Tensor<T>>,
}

/// Splits `input` into (leading dims, normalized size) for a `normalized_shape`
/// that must equal its trailing dims, as `torch.nn.functional.layer_norm` requires.
pub fn split_normalized_shape<'a>(input: &'a [usize], normalized_shape: &[usize]) -> Result<(&'a [usize], usize)> {
    let bad = || Error::NormalizedShape { normalized_shape: normalized_shape.to_vec(), input: input.to_vec() };
    if normalized_shape.is_empty() || normalized_shape.len() > input.len() {
        return Err(bad());
    }
    let (lead, tail) = input.split_at(input.len() - normalized_shape.len());
    if tail != normalized_shape {
        return Err(bad());
    }
    let n = numel(normalized_shape)?;
    if n == 0 {
        return Err(Error::Empty { what: "normalized_shape".into(), shape: normalized_shape.to_vec() });
    }
    Ok((lead, n))
}

fn check_param_shape<T>(name: &str, p: Option<TensorRef<'_, T>>, shape: &[usize]) -> Result<()> {
    match p {
        Some(p) if p.shape() != shape => Err(Error::shape(name, shape, p.shape())),
        _ => Ok(()),
    }
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
    let mut y = vec![T::default(); x.data().len()];
    let mut rstd = vec![T::default(); rows];
    kernels::rms_norm_forward(x.data(), n, weight.map(|w| w.data()), eps, &mut y, &mut rstd)?;
    Ok(RmsNormOutput { y: Tensor::from_parts(x.shape().to_vec(), y), rstd: Tensor::from_parts(lead.to_vec(), rstd) })
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
    let mut dx = vec![T::default(); x.data().len()];
    let mut dweight = weight.map(|_| vec![T::default(); n]);
    kernels::rms_norm_backward(
        dy.data(),
        x.data(),
        n,
        rstd.data(),
        weight.map(|w| w.data()),
        &mut dx,
        dweight.as_deref_mut(),
    )?;
    Ok(NormGrads {
        dx: Tensor::from_parts(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(normalized_shape.to_vec(), d)),
        dbias: None,
    })
}

/// PyTorch's RMSNorm `eps` when none is given: the machine epsilon of `T`
/// (`torch.finfo(dtype).eps`).
pub fn default_rms_eps<T: Float>() -> f64 {
    T::EPSILON
}

fn check_same_shape<T>(what: &str, a: TensorRef<'_, T>, x: TensorRef<'_, T>) -> Result<()> {
    if a.shape() != x.shape() {
        return Err(Error::shape(what, x.shape(), a.shape()));
    }
    Ok(())
}
