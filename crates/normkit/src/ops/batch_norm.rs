//! BatchNorm on shaped tensors: `torch.nn.functional.batch_norm` split into its
//! training and eval forms, with the channel on any axis.

use super::{check_param_shape, check_same_shape, NormGrads};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::{self, Affine, ChannelLayout, Grads};
use crate::moments::Moments;
use crate::tensor::{Tensor, TensorRef};

/// What [`batch_norm_train`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormOutput<T: Float> {
    /// Normalized output, shape of the input.
    pub y: Tensor<T>,
    /// Per-channel batch mean, shape `[C]` (PyTorch's `save_mean`).
    pub save_mean: Tensor<T>,
    /// Per-channel `1 / sqrt(var + eps)` of the batch (biased var), shape `[C]`
    /// (PyTorch's `save_invstd`).
    pub save_rstd: Tensor<T>,
    /// Per-channel count, mean and M2 of the batch, in the accumulation type: what
    /// [`batch_norm_update_running`] needs, and what batches computed apart merge.
    pub batch_stats: Vec<Moments<T::Acc>>,
}

/// Resolves a channel `axis` of an input of rank `rank >= 2` (negative axes count
/// from the end) and returns the `[outer, C, inner]` layout.
pub fn batch_norm_layout(shape: &[usize], axis: isize) -> Result<ChannelLayout> {
    if shape.len() < 2 {
        return Err(Error::invalid(
            "x",
            format!("BatchNorm needs an input of rank 2 or more (N, C, ...), got shape {shape:?}"),
        ));
    }
    let a = resolve_axis(axis, shape.len())?;
    ChannelLayout::of_shape(shape, a)
}

/// `axis` in `-rank..rank` as a non-negative index.
pub fn resolve_axis(axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(Error::invalid("axis", format!("{axis} is out of range for an input of rank {rank}")));
    }
    Ok(a as usize)
}

fn check_channel_param<T>(name: &str, p: Option<TensorRef<'_, T>>, channels: usize) -> Result<()> {
    check_param_shape(name, p, &[channels])
}

/// Training-mode BatchNorm: normalizes each channel by its batch mean and biased
/// variance; see [`kernels::batch_norm_forward_train`] for the math.
///
/// `axis` is the channel axis (1 for PyTorch's `(N, C, ...)`, -1 for channels-last
/// as Keras uses); `weight` and `bias`, when given, have shape `[C]`. Errors when a
/// channel has fewer than two values. Running statistics are not touched here:
/// pass `batch_stats` to [`batch_norm_update_running`].
pub fn batch_norm_train<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<BatchNormOutput<T>> {
    let c = batch_norm_layout(x.shape(), axis)?.channels;
    let mut y = super::buffer::output_buffer(x.data().len());
    let (mut mean, mut rstd) = (vec![T::default(); c], vec![T::default(); c]);
    let mut stats = vec![Moments::new(); c];
    let out = BatchNormOutMut { y: &mut y, save_mean: &mut mean, save_rstd: &mut rstd, batch_stats: &mut stats };
    batch_norm_train_into(x, axis, weight, bias, eps, out)?;
    Ok(BatchNormOutput {
        y: Tensor::from_output(x.shape().to_vec(), y),
        save_mean: Tensor::from_parts(vec![c], mean),
        save_rstd: Tensor::from_parts(vec![c], rstd),
        batch_stats: stats,
    })
}

/// Caller-provided output buffers of [`batch_norm_train_into`].
#[derive(Debug)]
pub struct BatchNormOutMut<'a, T: Float> {
    /// Normalized output, as many elements as the input.
    pub y: &'a mut [T],
    /// Per-channel batch mean, `C` elements.
    pub save_mean: &'a mut [T],
    /// Per-channel `1 / sqrt(var + eps)`, `C` elements.
    pub save_rstd: &'a mut [T],
    /// Per-channel count, mean and M2, `C` elements.
    pub batch_stats: &'a mut [Moments<T::Acc>],
}

/// [`batch_norm_train`] writing into caller-provided buffers (lengths checked);
/// beyond them it allocates only per-channel scratch.
pub fn batch_norm_train_into<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
    out: BatchNormOutMut<'_, T>,
) -> Result<()> {
    let layout = batch_norm_layout(x.shape(), axis)?;
    check_channel_param("weight", weight, layout.channels)?;
    check_channel_param("bias", bias, layout.channels)?;
    let affine = Affine { weight: weight.map(|w| w.data()), bias: bias.map(|b| b.data()) };
    let BatchNormOutMut { y, save_mean, save_rstd, batch_stats } = out;
    kernels::batch_norm_forward_train(x.data(), layout, affine, eps, y, save_mean, save_rstd, batch_stats)
}

/// Eval-mode BatchNorm: normalizes with fixed `running_mean` and `running_var`
/// (shape `[C]`), which are not changed:
///
/// ```text
/// y = (x - running_mean_c) / sqrt(running_var_c + eps) · weight_c + bias_c
/// ```
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    running_mean: TensorRef<'_, T>,
    running_var: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
) -> Result<Tensor<T>> {
    let mut y = super::buffer::output_buffer(x.data().len());
    batch_norm_eval_into(x, axis, running_mean, running_var, weight, bias, eps, &mut y)?;
    Ok(Tensor::from_output(x.shape().to_vec(), y))
}

/// [`batch_norm_eval`] writing into `y` (as many elements as `x`), one pass.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval_into<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    running_mean: TensorRef<'_, T>,
    running_var: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    bias: Option<TensorRef<'_, T>>,
    eps: f64,
    y: &mut [T],
) -> Result<()> {
    let layout = batch_norm_layout(x.shape(), axis)?;
    let c = layout.channels;
    check_running(running_mean, running_var, c)?;
    check_channel_param("weight", weight, c)?;
    check_channel_param("bias", bias, c)?;
    let affine = Affine { weight: weight.map(|w| w.data()), bias: bias.map(|b| b.data()) };
    kernels::batch_norm_forward_eval(x.data(), layout, running_mean.data(), running_var.data(), affine, eps, y)
}

/// A BatchNorm folded into one per-channel affine map (see
/// `BatchNorm::fold_into_affine`), applied in one multiply-add pass:
///
/// ```text
/// y = x · scale_c + shift_c
/// ```
///
/// `scale` and `shift` have shape `[C]`, `axis` is the channel axis.
pub fn batch_norm_folded<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    scale: TensorRef<'_, T>,
    shift: TensorRef<'_, T>,
) -> Result<Tensor<T>> {
    let mut y = super::buffer::output_buffer(x.data().len());
    batch_norm_folded_into(x, axis, scale, shift, &mut y)?;
    Ok(Tensor::from_output(x.shape().to_vec(), y))
}

/// [`batch_norm_folded`] writing into `y` (as many elements as `x`).
pub fn batch_norm_folded_into<T: Float>(
    x: TensorRef<'_, T>,
    axis: isize,
    scale: TensorRef<'_, T>,
    shift: TensorRef<'_, T>,
    y: &mut [T],
) -> Result<()> {
    let layout = batch_norm_layout(x.shape(), axis)?;
    check_channel_param("scale", Some(scale), layout.channels)?;
    check_channel_param("shift", Some(shift), layout.channels)?;
    let zero = vec![<T::Acc as num_traits::Zero>::zero(); layout.channels];
    let scale: Vec<T::Acc> = scale.data().iter().map(|s| s.to_acc()).collect();
    // (x - 0) · scale + shift is x · scale + shift exactly.
    kernels::batch_norm_apply(x.data(), layout, &zero, &scale, Some(shift.data()), y)
}

fn check_running<T>(running_mean: TensorRef<'_, T>, running_var: TensorRef<'_, T>, channels: usize) -> Result<()> {
    for (name, t) in [("running_mean", running_mean), ("running_var", running_var)] {
        if t.shape() != [channels] {
            return Err(Error::invalid(
                name,
                format!("running statistics have shape {:?}, the input has {channels} channels", t.shape()),
            ));
        }
    }
    Ok(())
}

/// The running statistics' update after a training batch, as PyTorch's
/// `_BatchNorm.forward` does it: `num_batches_tracked += 1`, then with
/// `factor = momentum`, or `1 / num_batches_tracked` when `momentum` is `None`
/// (a cumulative average of every batch seen),
///
/// ```text
/// running_mean = factor · batch_mean + (1 - factor) · running_mean
/// running_var  = factor · batch_var  + (1 - factor) · running_var
/// ```
///
/// `batch_var` is unbiased (`M2 / (n - 1)`, PyTorch) when `unbiased`, else biased
/// (`M2 / n`, ONNX and Keras). `momentum` must lie in `[0, 1]`. On error nothing
/// is changed.
pub fn batch_norm_update_running<T: Float>(
    running_mean: &mut Tensor<T>,
    running_var: &mut Tensor<T>,
    num_batches_tracked: &mut u64,
    batch_stats: &[Moments<T::Acc>],
    momentum: Option<f64>,
    unbiased: bool,
) -> Result<()> {
    check_running(running_mean.view(), running_var.view(), batch_stats.len())?;
    let tracked = num_batches_tracked.saturating_add(1);
    let factor = match momentum {
        Some(m) => m,
        None => 1.0 / tracked as f64,
    };
    kernels::batch_norm_update_running(batch_stats, factor, unbiased, running_mean.data_mut(), running_var.data_mut())?;
    *num_batches_tracked = tracked;
    Ok(())
}

/// Backward of [`batch_norm_train`]: gradients of `Σ y · dy` through the batch
/// statistics. `save_mean` and `save_rstd` are the forward's; `has_bias` says
/// whether the forward had a bias (its value is not needed). See
/// [`kernels::batch_norm_backward`] for the math.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    save_mean: TensorRef<'_, T>,
    save_rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
) -> Result<NormGrads<T>> {
    backward(dy, x, axis, save_mean, save_rstd.data().to_vec(), weight, has_bias, true)
}

/// [`batch_norm_backward`] writing into caller-provided gradient buffers:
/// `grads.dx` as many elements as `x`, `grads.dweight`/`grads.dbias` `C` each
/// or `None` to skip them.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    save_mean: TensorRef<'_, T>,
    save_rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    grads: Grads<'_, T>,
) -> Result<()> {
    backward_into(dy, x, axis, save_mean, save_rstd.data(), weight, true, grads)
}

/// [`batch_norm_fixed_backward`] writing into caller-provided gradient buffers
/// (as [`batch_norm_backward_into`]): one sweep over `x` and `dy`.
pub fn batch_norm_fixed_backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    mean: TensorRef<'_, T>,
    rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    grads: Grads<'_, T>,
) -> Result<()> {
    backward_into(dy, x, axis, mean, rstd.data(), weight, false, grads)
}

/// Backward of [`batch_norm_eval`]: with the statistics fixed, `dx` is `dy` scaled
/// per channel by `weight_c / sqrt(running_var_c + eps)`; `dweight` and `dbias`
/// as in training.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    running_mean: TensorRef<'_, T>,
    running_var: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
    eps: f64,
) -> Result<NormGrads<T>> {
    let layout = batch_norm_layout(x.shape(), axis)?;
    check_running(running_mean, running_var, layout.channels)?;
    let eps = kernels::check_eps::<f64>(eps)?;
    let rstd = running_var.data().iter().map(|v| T::from_f64(1.0 / (v.to_f64() + eps).sqrt())).collect();
    backward(dy, x, axis, running_mean, rstd, weight, has_bias, false)
}

/// Backward with fixed statistics given as `mean` and `rstd` (shape `[C]`), e.g.
/// the running statistics an eval-mode forward used:
/// `dx = dy · weight_c · rstd_c`, `dweight`, `dbias` as in training.
pub fn batch_norm_fixed_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    mean: TensorRef<'_, T>,
    rstd: TensorRef<'_, T>,
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
) -> Result<NormGrads<T>> {
    backward(dy, x, axis, mean, rstd.data().to_vec(), weight, has_bias, false)
}

#[allow(clippy::too_many_arguments)]
fn backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    mean: TensorRef<'_, T>,
    rstd: Vec<T>,
    weight: Option<TensorRef<'_, T>>,
    has_bias: bool,
    training: bool,
) -> Result<NormGrads<T>> {
    let c = batch_norm_layout(x.shape(), axis)?.channels;
    let mut dx = super::buffer::output_buffer(x.data().len());
    let mut dweight = weight.map(|_| vec![T::default(); c]);
    let mut dbias = has_bias.then(|| vec![T::default(); c]);
    let grads = Grads { dx: &mut dx, dweight: dweight.as_deref_mut(), dbias: dbias.as_deref_mut() };
    backward_into(dy, x, axis, mean, &rstd, weight, training, grads)?;
    Ok(NormGrads {
        dx: Tensor::from_output(x.shape().to_vec(), dx),
        dweight: dweight.map(|d| Tensor::from_parts(vec![c], d)),
        dbias: dbias.map(|d| Tensor::from_parts(vec![c], d)),
    })
}

#[allow(clippy::too_many_arguments)]
fn backward_into<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axis: isize,
    mean: TensorRef<'_, T>,
    rstd: &[T],
    weight: Option<TensorRef<'_, T>>,
    training: bool,
    grads: Grads<'_, T>,
) -> Result<()> {
    let layout = batch_norm_layout(x.shape(), axis)?;
    let c = layout.channels;
    check_same_shape("dy", dy, x)?;
    check_channel_param("mean", Some(mean), c)?;
    kernels::check_param("rstd", Some(rstd), c)?;
    check_channel_param("weight", weight, c)?;
    let w = weight.map(|w| w.data());
    kernels::batch_norm_backward(dy.data(), x.data(), layout, mean.data(), rstd, w, training, grads)
}
