//! GroupNorm and InstanceNorm on shaped `(N, C, *)` tensors.

use super::{check_param_shape, check_same_shape, LayerNormOutMut, NormGrads};
use crate::error::{Error, Result};
use crate::float::{AccFloat, Float};
use crate::kernels::{self, Affine, Grads, GroupLayout};
use crate::moments::Moments;
use crate::tensor::{numel, Tensor, TensorRef};
use num_traits::{Float as _, Zero as _};

/// What [`group_norm`] and [`instance_norm`] return.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormOutput<T> {
    /// Normalized output, shape of the input.
    pub y: Tensor<T>,
    /// Per-group mean, shape `[N, G]` (`[N, C]` for InstanceNorm).
    pub mean: Tensor<T>,
    /// Per-group `1 / sqrt(var + eps)`, same shape as `mean`.
    pub rstd: Tensor<T>,
}

/// The `[N, C, spatial]` layout of an `(N, C, *)` input with `num_groups` groups.
pub fn group_layout(shape: &[usize], num_groups: usize) -> Result<GroupLayout> {
    let [batch, channels, rest @ ..] = shape else {
        return Err(Error::invalid("x", format!("GroupNorm needs an input of shape (N, C, *), got {shape:?}")));
    };
    GroupLayout::new(*batch, *channels, numel(rest)?, num_groups)
}

/// `torch.nn.functional.group_norm`: normalizes each of `num_groups` groups of
/// consecutive channels of each sample of `x` (`(N, C, *)`), then applies the
/// per-channel `weight` and `bias` (shape `[C]`). See
/// [`kernels::group_norm_forward`] for the math. Errors when `num_groups` does
/// not divide C.
pub fn group_norm<T: Float>(
    x: TensorRef<'_, T>,
    num_groups: usize,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<GroupNormOutput<T>> {
    let layout = group_layout(x.shape(), num_groups)?;
    let mut y = super::buffer::output_buffer(x.data().len());
    let (mut mean, mut rstd) = (vec![T::default(); layout.num_stats()], vec![T::default(); layout.num_stats()]);
    let out = LayerNormOutMut { y: &mut y, mean: &mut mean, rstd: &mut rstd };
    group_norm_into(x, num_groups, weight, bias, eps, out)?;
    let stats_shape = vec![layout.batch, layout.groups];
    Ok(GroupNormOutput {
        y: Tensor::from_output(x.shape().to_vec(), y),
        mean: Tensor::from_parts(stats_shape.clone(), mean),
        rstd: Tensor::from_parts(stats_shape, rstd),
    })
}

/// [`group_norm`] writing into caller-provided buffers (lengths checked: `y` as
/// many elements as `x`, `mean` and `rstd` `N · G` each); beyond them it
/// allocates only per-group scratch.
pub fn group_norm_into<T: Float>(
    x: TensorRef<'_, T>,
    num_groups: usize,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
    out: LayerNormOutMut<'_, T>,
) -> Result<()> {
    let layout = group_layout(x.shape(), num_groups)?;
    check_param_shape("weight", weight, &[layout.channels])?;
    check_param_shape("bias", bias, &[layout.channels])?;
    let affine = Affine { weight: weight.map(|w| w.data()), bias: bias.map(|b| b.data()) };
    kernels::group_norm_forward(x.data(), layout, affine, eps, out.y, out.mean, out.rstd)
}

/// Backward of [`group_norm`]: gradients of `Σ y · dy` with respect to `x`, and to
/// `weight` and `bias` when the forward had them. `mean` and `rstd` (shape
/// `[N, G]`) are the forward's.
pub fn group_norm_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    num_groups: usize,
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
) -> Result<NormGrads<T>> {
    let c = group_layout(x.shape(), num_groups)?.channels;
    let mut dx = super::buffer::output_buffer(x.data().len());
    let mut dweight = weight.map(|_| vec![T::default(); c]);
    let mut dbias = has_bias.then(|| vec![T::default(); c]);
    let grads = Grads { dx: &mut dx, dweight: dweight.as_deref_mut(), dbias: dbias.as_deref_mut() };
    group_norm_backward_into(dy, x, num_groups, saved, weight, grads)?;
    Ok(NormGrads {
        dx: Tensor::from_output(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(vec![c], d)),
        dbias: dbias.map(|d| Tensor::from_parts(vec![c], d)),
    })
}

/// [`group_norm_backward`] writing into caller-provided gradient buffers:
/// `grads.dx` as many elements as `x`, `grads.dweight`/`grads.dbias` `C` each or
/// `None` to skip them.
pub fn group_norm_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    num_groups: usize,
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    grads: Grads<'_, T>,
) -> Result<()> {
    let layout = group_layout(x.shape(), num_groups)?;
    check_same_shape("dy", dy, x)?;
    let (mean, rstd) = saved;
    let stats_shape = [layout.batch, layout.groups];
    check_param_shape("mean", Some(mean), &stats_shape)?;
    check_param_shape("rstd", Some(rstd), &stats_shape)?;
    check_param_shape("weight", weight, &[layout.channels])?;
    let w = weight.map(|w| w.data());
    kernels::group_norm_backward(dy.data(), x.data(), layout, mean.data(), rstd.data(), w, grads)
}

/// Checks that an InstanceNorm input `(N, C, *)` has more than one spatial
/// element, as PyTorch requires when normalizing by the input's statistics.
fn check_instance_spatial(shape: &[usize]) -> Result<GroupLayout> {
    let channels = shape.get(1).copied().unwrap_or(0);
    let layout = group_layout(shape, channels.max(1))?;
    if layout.spatial < 2 {
        return Err(Error::invalid(
            "x",
            format!("InstanceNorm needs more than one spatial element per channel, got input shape {shape:?}"),
        ));
    }
    Ok(layout)
}

/// `torch.nn.functional.instance_norm` with the input's statistics: each channel
/// of each sample of `x` (`(N, C, *)`) normalized on its own (GroupNorm with
/// one group per channel), then the optional per-channel `weight` and `bias`:
///
/// ```text
/// y[n, c, s] = (x[n, c, s] - mean_{n,c}) / sqrt(var_{n,c} + eps) · weight_c + bias_c
/// ```
///
/// `mean` and `rstd` have shape `[N, C]`. Errors with fewer than two spatial
/// elements per channel, as PyTorch does.
pub fn instance_norm<T: Float>(
    x: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<GroupNormOutput<T>> {
    let layout = check_instance_spatial(x.shape())?;
    group_norm(x, layout.groups, weight, bias, eps)
}

/// [`instance_norm`] writing into caller-provided buffers (`mean` and `rstd`
/// `N · C` each).
pub fn instance_norm_into<T: Float>(
    x: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
    out: LayerNormOutMut<'_, T>,
) -> Result<()> {
    let layout = check_instance_spatial(x.shape())?;
    group_norm_into(x, layout.groups, weight, bias, eps, out)
}

/// Backward of [`instance_norm`]; `saved` is its `(mean, rstd)`, shape `[N, C]`.
pub fn instance_norm_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
) -> Result<NormGrads<T>> {
    let layout = check_instance_spatial(x.shape())?;
    group_norm_backward(dy, x, layout.groups, saved, weight, has_bias)
}

/// [`instance_norm_backward`] writing into caller-provided gradient buffers.
pub fn instance_norm_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    saved: (TensorRef<'_, T>, TensorRef<'_, T>),
    weight: Option<TensorRef<'_, T>>,
    grads: Grads<'_, T>,
) -> Result<()> {
    let layout = check_instance_spatial(x.shape())?;
    group_norm_backward_into(dy, x, layout.groups, saved, weight, grads)
}

/// The running statistics' update of PyTorch's InstanceNorm with
/// `track_running_stats=True`, after a training batch `x` (`(N, C, *)`): each
/// channel's statistic is averaged over the samples, then blended with weight
/// `momentum`:
///
/// ```text
/// running_mean_c = momentum · (1/N) Σ_n mean_{n,c}      + (1 - momentum) · running_mean_c
/// running_var_c  = momentum · (1/N) Σ_n var'_{n,c}      + (1 - momentum) · running_var_c
/// ```
///
/// where `var'` is the unbiased variance over the spatial elements (PyTorch).
/// An empty batch changes nothing.
pub fn instance_norm_update_running<T: Float>(
    x: TensorRef<'_, T>,
    running_mean: &mut Tensor<T>,
    running_var: &mut Tensor<T>,
    momentum: f64,
) -> Result<()> {
    let layout = check_instance_spatial(x.shape())?;
    let c = layout.channels;
    check_param_shape("running_mean", Some(running_mean.view()), &[c])?;
    check_param_shape("running_var", Some(running_var.view()), &[c])?;
    if layout.batch == 0 {
        return Ok(());
    }
    let mut per_instance = vec![Moments::new(); layout.num_stats()];
    kernels::group_norm_moments(x.data(), layout, &mut per_instance)?;
    // Average each channel's mean and unbiased variance over the samples.
    let inv_n = T::Acc::from_count(layout.batch as u64).recip();
    let zero = T::Acc::zero();
    let (mut mean, mut var) = (vec![zero; c], vec![zero; c]);
    for (k, m) in per_instance.iter().enumerate() {
        mean[k % c] = mean[k % c] + m.mean() * inv_n;
        var[k % c] = var[k % c] + m.var_unbiased() * inv_n;
    }
    kernels::blend_running(&mean, &var, momentum, running_mean.data_mut(), running_var.data_mut())
}
