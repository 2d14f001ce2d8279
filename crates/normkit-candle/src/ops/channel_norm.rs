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

use super::layer_norm::{
    apply_layer_norm_op, check_eps, check_float_input, internal_dtype, layer_norm, op_param, standardize_last, widened,
    Grad3,
};
use crate::cpu::{contiguous, has_kernel, nk, to_vec, Elem};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use normkit::TensorRef;

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
    check_float_input(op, x)?;
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
    check_eps("batch_norm", eps)?;
    Ok(c)
}

/// Checks BatchNorm training's arguments, which need more than one value per
/// channel (as PyTorch), and returns `C`.
fn check_batch_norm_train(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<usize> {
    let c = check_batch_norm(x, weight, bias, eps)?;
    if x.elem_count() / c < 2 {
        bail!("normkit batch_norm: training needs more than 1 value per channel, got input shape {:?}", x.dims())
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

/// Checks InstanceNorm's input (`[N, C, L, ...]` with more than one spatial
/// value per channel, as PyTorch) and returns `C`.
fn check_instance_norm(x: &Tensor) -> Result<usize> {
    let c = channels("instance_norm", x)?;
    if x.rank() < 3 {
        bail!("normkit instance_norm: input must have shape [N, C, L, ...] with spatial dimensions, got {:?}", x.dims())
    }
    if x.dims()[2..].iter().product::<usize>() < 2 {
        bail!("normkit instance_norm: needs more than one spatial value per channel, got input shape {:?}", x.dims())
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
    let c = check_batch_norm_train(x, weight, bias, eps)?;
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
/// a test reference. Half-precision inputs compute in `f32`, the affine part
/// included (so the sums of `weight`'s and `bias`'s gradients run in `f32`),
/// rounded once at the end.
pub fn batch_norm_train_composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let c = check_batch_norm_train(x, weight, bias, eps)?;
    let m = x.elem_count() / c;
    let (dtype, f) = (x.dtype(), internal_dtype(x.dtype()));
    let (rows, tdims) = channel_rows(x, c)?;
    let rows = rows.to_dtype(f)?;
    let mean = rows.mean_keepdim(1)?;
    let xc = rows.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(1)?;
    let y = from_channel_rows(&xc.broadcast_div(&(&var + eps)?.sqrt()?)?, tdims)?;
    let y = channel_affine(y, widened(weight, f)?.as_ref(), widened(bias, f)?.as_ref())?.to_dtype(dtype)?;
    let stats = BatchStats {
        mean: mean.flatten_all()?.detach().to_dtype(dtype)?,
        var: var.flatten_all()?.detach().to_dtype(dtype)?,
        count: m,
    };
    Ok((y, stats))
}

/// BatchNorm in evaluation mode: normalizes each channel with the given (running)
/// statistics, which receive no gradient:
///
/// ```text
/// y_{n,c,s} = (x_{n,c,s} - running_mean_c) / sqrt(running_var_c + eps) · weight_c + bias_c
/// ```
///
/// On the CPU with `f32`/`f64`, forward and backward (for `x`, `weight` and
/// `bias`) are normkit's kernels (`normkit::ops::batch_norm_eval`, computed in
/// `f64` and rounded once); otherwise [`batch_norm_eval_composed`]. The mean is
/// subtracted before scaling: the folded form `x · scale_c + shift_c` loses
/// `|x|·scale` to rounding, which is most of `y` when the mean is large against
/// the spread.
pub fn batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_batch_norm_eval(x, running_mean, running_var, weight, bias, eps)?;
    if !has_kernel(x) {
        return batch_norm_eval_composed(x, running_mean, running_var, weight, bias, eps);
    }
    // As `[N, C, S]`: normkit's BatchNorm takes ranks 2 to 5, candle's any.
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let x3 = x.reshape((n, c, x.elem_count() / (n * c)))?.contiguous()?;
    let (w, b) = (op_param(weight, x)?, op_param(bias, x)?);
    let op = BatchNormEvalOp {
        running_mean: running_mean.detach().contiguous()?,
        running_var: running_var.detach().contiguous()?,
        eps,
        has_weight: weight.is_some(),
        has_bias: bias.is_some(),
    };
    x3.apply_op3(&w, &b, op)?.reshape(x.dims())
}

/// Checks BatchNorm eval's arguments: those of training and running statistics
/// of `[C]` in the input's dtype.
fn check_batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<()> {
    let c = check_batch_norm(x, weight, bias, eps)?;
    let stats = [("running_mean", Some(running_mean)), ("running_var", Some(running_var))];
    check_channel_params("batch_norm", x, c, &stats)
}

/// [`batch_norm_eval`] composed of candle ops only (other devices and dtypes,
/// and a test reference); half-precision inputs compute in `f32` and round
/// once at the end.
pub fn batch_norm_eval_composed(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_batch_norm_eval(x, running_mean, running_var, weight, bias, eps)?;
    let f = internal_dtype(x.dtype());
    let mean = running_mean.detach().to_dtype(f)?;
    let rstd = (running_var.detach().to_dtype(f)? + eps)?.sqrt()?.recip()?;
    let xc = channel_affine(x.to_dtype(f)?, None, Some(&mean.neg()?))?;
    let y = channel_affine(xc, Some(&rstd), None)?;
    channel_affine(y, widened(weight, f)?.as_ref(), widened(bias, f)?.as_ref())?.to_dtype(x.dtype())
}

/// Eval-mode BatchNorm on `[N, C, S]` as a candle `CustomOp3` (x, weight, bias)
/// whose CPU forward and backward are normkit's; the running statistics are
/// constants of the op.
struct BatchNormEvalOp {
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
    has_weight: bool,
    has_bias: bool,
}

impl BatchNormEvalOp {
    fn fwd<T: Elem>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>("batch_norm", s1, l1)?;
        let (mean, var) = (to_vec::<T>(&self.running_mean)?, to_vec::<T>(&self.running_var)?);
        let c = [mean.len()];
        let (weight, bias) = (channel_param(self.has_weight, &c, w)?, channel_param(self.has_bias, &c, b)?);
        let x = nk(TensorRef::new(l1.dims(), x))?;
        let (mean, var) = (nk(TensorRef::new(&c, &mean))?, nk(TensorRef::new(&c, &var))?);
        let y = nk(normkit::ops::batch_norm_eval(x, 1, mean, var, weight, bias, self.eps))?;
        Ok((T::to_cpu_storage_owned(y.into_data()), l1.shape().clone()))
    }

    fn bwd_t<T: Elem>(&self, x: &Tensor, w: &Tensor, b: &Tensor, dy: &Tensor) -> Result<Grad3> {
        let (xv, dyv) = (to_vec::<T>(x)?, to_vec::<T>(dy)?);
        let (mean, var) = (to_vec::<T>(&self.running_mean)?, to_vec::<T>(&self.running_var)?);
        let wv = if self.has_weight { Some(to_vec::<T>(w)?) } else { None };
        let c = [mean.len()];
        let weight = wv.as_deref().map(|w| nk(TensorRef::new(&c, w))).transpose()?;
        let (xr, dyr) = (nk(TensorRef::new(x.dims(), &xv))?, nk(TensorRef::new(x.dims(), &dyv))?);
        let (mean, var) = (nk(TensorRef::new(&c, &mean))?, nk(TensorRef::new(&c, &var))?);
        let grads = nk(normkit::ops::batch_norm_eval_backward(dyr, xr, 1, mean, var, weight, self.has_bias, self.eps))?;
        let dev = x.device();
        let dx = Tensor::from_vec(grads.dx.into_data(), x.shape(), dev)?;
        let dw = grads.dweight.map(|g| Tensor::from_vec(g.into_data(), w.shape(), dev)).transpose()?;
        let db = grads.dbias.map(|g| Tensor::from_vec(g.into_data(), b.shape(), dev)).transpose()?;
        // `dweight` is `None` without a weight, `dbias` without `has_bias`.
        Ok((Some(dx), dw, db))
    }
}

/// An optional per-channel parameter of a custom op as normkit's tensor of
/// shape `c` (`None` when the op was built without it).
fn channel_param<'a, T: Elem>(
    on: bool,
    c: &'a [usize],
    (storage, layout): (&'a CpuStorage, &Layout),
) -> Result<Option<TensorRef<'a, T>>> {
    if !on {
        return Ok(None);
    }
    let data = contiguous::<T>("batch_norm", storage, layout)?;
    nk(TensorRef::new(c, data)).map(Some)
}

impl CustomOp3 for BatchNormEvalOp {
    fn name(&self) -> &'static str {
        "normkit-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.fwd::<f32>((s1, l1), (s2, l2), (s3, l3)),
            DType::F64 => self.fwd::<f64>((s1, l1), (s2, l2), (s3, l3)),
            d => bail!("normkit batch_norm: no CPU kernel for dtype {d:?}"),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Grad3> {
        match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, b, dy),
            DType::F64 => self.bwd_t::<f64>(x, w, b, dy),
            d => bail!("normkit batch_norm: no CPU kernel for dtype {d:?}"),
        }
    }
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
/// Other devices and dtypes take [`group_norm_composed`].
pub fn group_norm(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_group_norm(x, num_groups, weight, bias)?;
    if !has_kernel(x) {
        return group_norm_composed(x, num_groups, weight, bias, eps);
    }
    let rows = x.reshape((x.dims()[0] * num_groups, ()))?;
    let y = layer_norm(&rows, None, None, eps)?.reshape(x.dims())?;
    channel_affine(y, weight, bias)
}

/// [`group_norm`] composed of candle ops only (fallback path and test reference);
/// half-precision inputs compute in `f32`, the affine part included, rounded
/// once at the end.
pub fn group_norm_composed(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_group_norm(x, num_groups, weight, bias)?;
    check_eps("group_norm", eps)?;
    let f = internal_dtype(x.dtype());
    let rows = x.to_dtype(f)?.reshape((x.dims()[0] * num_groups, ()))?;
    let y = standardize_last(&rows, eps)?.reshape(x.dims())?;
    channel_affine(y, widened(weight, f)?.as_ref(), widened(bias, f)?.as_ref())?.to_dtype(x.dtype())
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
