//! Norms over channels of `[N, C, *]` inputs: BatchNorm (training and eval),
//! GroupNorm and InstanceNorm.
//!
//! Each statistic is a row statistic of a reshaped view, so the CPU path runs
//! normkit's LayerNorm kernel (forward and backward) on those rows and applies the
//! per-channel affine transform with candle ops:
//!
//! - BatchNorm (training): rows are channels, `[C, N·S]` (the input transposed);
//! - GroupNorm: rows are (sample, group) pairs, `[N·G, (C/G)·S]`;
//! - InstanceNorm: GroupNorm with one channel per group.

use super::layer_norm::{apply_layer_norm_op, internal_dtype, layer_norm, layer_norm_composed};
use crate::cpu::has_kernel;
use candle_core::{bail, Result, Tensor};

/// The batch statistics of one BatchNorm training forward, per channel, detached
/// from the graph: what the running statistics are updated with.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean of each channel over the batch and spatial positions, `[C]`.
    pub mean: Tensor,
    /// Biased variance `(1/m) Σ (x - mean)²` of each channel, `[C]`.
    pub var: Tensor,
    /// Values per channel, `m = N · S`.
    pub count: usize,
}

/// Checks a `[N, C, *]` input and returns `C`.
fn channels(op: &str, x: &Tensor) -> Result<usize> {
    if x.rank() < 2 {
        bail!("normkit {op}: input must have shape [N, C, *], got {:?}", x.dims())
    }
    let c = x.dims()[1];
    if c == 0 || x.elem_count() == 0 {
        bail!("normkit {op}: input of shape {:?} is empty", x.dims())
    }
    Ok(c)
}

/// Checks optional per-channel parameters against `[c]` and the input's dtype.
fn check_channel_params(op: &str, x: &Tensor, c: usize, params: &[(&str, Option<&Tensor>)]) -> Result<()> {
    for &(name, p) in params {
        super::layer_norm::check_param(op, name, p, c, x)?;
    }
    Ok(())
}

/// Checks BatchNorm's arguments (input, per-channel parameters, `eps`) and
/// returns `C`.
fn check_batch_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<usize> {
    let c = channels("batch_norm", x)?;
    check_channel_params("batch_norm", x, c, &[("weight", weight), ("bias", bias)])?;
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("normkit batch_norm: eps {eps} must be finite and not negative")
    }
    Ok(c)
}

/// Checks GroupNorm's arguments: `num_groups` divides `C`, parameters of `[C]`.
fn check_group_norm(x: &Tensor, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<()> {
    let c = channels("group_norm", x)?;
    if num_groups == 0 || c % num_groups != 0 {
        bail!("normkit group_norm: {c} channels cannot be split into {num_groups} groups")
    }
    check_channel_params("group_norm", x, c, &[("weight", weight), ("bias", bias)])
}

/// Checks InstanceNorm's input (`[N, C, L, ...]`) and returns `C`.
fn check_instance_norm(x: &Tensor) -> Result<usize> {
    let c = channels("instance_norm", x)?;
    if x.rank() < 3 {
        bail!("normkit instance_norm: input must have shape [N, C, L, ...] with spatial dimensions, got {:?}", x.dims())
    }
    Ok(c)
}

/// `x` of shape `[N, C, *]` as `C` rows of `m = N·S` values, and the dims that
/// [`from_channel_rows`] brings such rows back with.
fn channel_rows(x: &Tensor, c: usize) -> Result<(Tensor, Vec<usize>)> {
    let mut tdims = x.dims().to_vec();
    tdims.swap(0, 1);
    Ok((x.transpose(0, 1)?.reshape((c, x.elem_count() / c))?, tdims))
}

/// The inverse of [`channel_rows`]: `[C, N·S]` back to `[N, C, *]`.
fn from_channel_rows(y: &Tensor, tdims: Vec<usize>) -> Result<Tensor> {
    y.reshape(tdims)?.transpose(0, 1)
}

/// `y · weight[c] + bias[c]` for `y` of shape `[N, C, *]`.
pub(crate) fn channel_affine(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut shape = vec![1; y.rank()];
    shape[1] = y.dims()[1];
    let y = match weight {
        Some(w) => y.broadcast_mul(&w.reshape(shape.as_slice())?)?,
        None => y,
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape(shape.as_slice())?),
        None => Ok(y),
    }
}

/// BatchNorm in training mode over `x` of shape `[N, C, *]`, differentiable:
///
/// ```text
/// mean_c = (1/m) Σ_{n,s} x_{n,c,s},   var_c = (1/m) Σ_{n,s} (x_{n,c,s} - mean_c)²,   m = N·S
/// y_{n,c,s} = (x_{n,c,s} - mean_c) / sqrt(var_c + eps) · weight_c + bias_c
/// ```
///
/// Returns `y` and the batch statistics (for the running statistics; see
/// [`crate::BatchNorm`]). On the CPU with `f32`/`f64` the normalization and its
/// backward are normkit's kernels on the channel rows; otherwise candle ops.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let c = check_batch_norm(x, weight, bias, eps)?;
    if !has_kernel(x) {
        return batch_norm_train_composed(x, weight, bias, eps);
    }
    let m = x.elem_count() / c;
    let (rows, tdims) = channel_rows(x, c)?;
    let (y, slot) = apply_layer_norm_op(&rows, None, None, eps, true)?;
    let stats = match slot.lock() {
        Ok(s) => s.clone(),
        Err(_) => bail!("normkit batch_norm: the statistics slot is poisoned"),
    };
    let Some(stats) = stats else { bail!("normkit batch_norm: the forward saved no statistics") };
    let mean = Tensor::new(stats.mean, x.device())?.to_dtype(x.dtype())?;
    let var = Tensor::new(stats.var, x.device())?.to_dtype(x.dtype())?;
    let y = from_channel_rows(&y, tdims)?;
    Ok((channel_affine(y, weight, bias)?, BatchStats { mean, var, count: m }))
}

/// [`batch_norm_train`] composed of candle ops only: the path taken on devices
/// and dtypes normkit has no kernel for (its backward is candle's autograd), and
/// a test reference. Half-precision inputs compute their statistics in `f32`.
pub fn batch_norm_train_composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let c = check_batch_norm(x, weight, bias, eps)?;
    let m = x.elem_count() / c;
    let dtype = x.dtype();
    let (rows, tdims) = channel_rows(x, c)?;
    let rows = rows.to_dtype(internal_dtype(dtype))?;
    let mean = rows.mean_keepdim(1)?;
    let xc = rows.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(1)?;
    let y = xc.broadcast_div(&(&var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    let y = from_channel_rows(&y, tdims)?;
    let stats = BatchStats {
        mean: mean.flatten_all()?.detach().to_dtype(dtype)?,
        var: var.flatten_all()?.detach().to_dtype(dtype)?,
        count: m,
    };
    Ok((channel_affine(y, weight, bias)?, stats))
}

/// BatchNorm in evaluation mode: normalizes each channel with the given (running)
/// statistics, which receive no gradient:
///
/// ```text
/// scale_c = weight_c / sqrt(running_var_c + eps),   shift_c = bias_c - running_mean_c · scale_c
/// y_{n,c,s} = x_{n,c,s} · scale_c + shift_c
/// ```
///
/// A per-channel affine map, computed with candle ops (its gradient with respect
/// to `x`, `weight` and `bias` is candle's autograd).
pub fn batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let c = check_batch_norm(x, weight, bias, eps)?;
    let stats = [("running_mean", Some(running_mean)), ("running_var", Some(running_var))];
    check_channel_params("batch_norm", x, c, &stats)?;
    let inv = (running_var.detach() + eps)?.sqrt()?.recip()?;
    let scale = match weight {
        Some(w) => (w * inv)?,
        None => inv,
    };
    let shift = (running_mean.detach() * &scale)?.neg()?;
    let shift = match bias {
        Some(b) => (b + shift)?,
        None => shift,
    };
    channel_affine(x.clone(), Some(&scale), Some(&shift))
}

/// GroupNorm over `x` of shape `[N, C, *]` with `num_groups` groups of `C/G`
/// consecutive channels, differentiable:
///
/// ```text
/// for each sample n and group g, over its (C/G)·S values:
/// y = (x - mean_{n,g}) / sqrt(var_{n,g} + eps) · weight_c + bias_c
/// ```
///
/// The normalization is normkit's LayerNorm kernel on `[N·G, (C/G)·S]` rows (CPU,
/// `f32`/`f64`), forward and backward; the per-channel affine map is candle ops.
pub fn group_norm(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_group_norm(x, num_groups, weight, bias)?;
    let rows = x.reshape((x.dims()[0] * num_groups, ()))?;
    let y = layer_norm(&rows, None, None, eps)?.reshape(x.dims())?;
    channel_affine(y, weight, bias)
}

/// [`group_norm`] composed of candle ops only (fallback path and test reference).
pub fn group_norm_composed(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_group_norm(x, num_groups, weight, bias)?;
    let rows = x.reshape((x.dims()[0] * num_groups, ()))?;
    let y = layer_norm_composed(&rows, None, None, eps)?.reshape(x.dims())?;
    channel_affine(y, weight, bias)
}

/// InstanceNorm over `x` of shape `[N, C, *]`: each (sample, channel) normalized
/// over its `S` spatial values, then `· weight_c + bias_c`. GroupNorm with one
/// channel per group (see [`group_norm`]).
pub fn instance_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    group_norm(x, check_instance_norm(x)?, weight, bias, eps)
}

/// [`instance_norm`] composed of candle ops only (fallback path and test reference).
pub fn instance_norm_composed(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    group_norm_composed(x, check_instance_norm(x)?, weight, bias, eps)
}
