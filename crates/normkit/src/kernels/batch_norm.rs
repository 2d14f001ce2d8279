//! BatchNorm over the channels of `x` viewed as `[outer, channels, inner]`
//! (Ioffe & Szegedy, 2015).
//!
//! The channel axis may be anywhere: for an input of shape `(d_0, ..., d_{r-1})`
//! with the channel on axis `a`, `outer = d_0 ⋯ d_{a-1}` and `inner = d_{a+1} ⋯ d_{r-1}`.
//! `(N, C)` is `[N, C, 1]`, `(N, C, H, W)` is `[N, C, H·W]`, and channels-last
//! `(N, H, W, C)` is `[N·H·W, C, 1]`. Channel `c` owns the `outer · inner` values
//! `x[o, c, i]`. The passes run SIMD code over rayon's threads in an order fixed
//! by the shape (see `per_channel.rs`), so results do not depend on the number
//! of threads.
//!
//! The passes, each a separate function so that each can be made faster alone:
//!
//! 1. [`batch_norm_channel_moments`]: per-channel count, mean, M2 (training);
//! 2. [`batch_norm_apply`]: `y = (x - mean_c) · scale_c + bias_c`;
//! 3. [`batch_norm_update_running`]: the running statistics' momentum update;
//! 4. [`batch_norm_backward_reduce`]: per-channel `Σ dy` and `Σ dy · x̂`;
//! 5. [`batch_norm_backward_dx`]: the input gradient from those sums.
//!
//! [`batch_norm_forward_train`], [`batch_norm_forward_eval`] and
//! [`batch_norm_backward`] compose them; in training mode, where a channel's
//! values fit in L2 and more than one thread works, they run passes 1 and 2
//! (4 and 5) channel by channel instead, one read of `x` (and `dy`) from
//! memory, with the same bits.

use super::per_channel;
use super::rescale::mean_rstd_of;
use super::{check_buf, check_eps, check_param, write_param_grads, Affine, Grads};
use crate::error::{Error, Result};
use crate::float::{AccFloat, Float};
use crate::moments::Moments;
use num_traits::{Float as _, One as _, Zero as _};

/// The `[outer, channels, inner]` view of a tensor normalized per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    /// Product of the dims before the channel axis.
    pub outer: usize,
    /// Number of channels (the channel axis's size).
    pub channels: usize,
    /// Product of the dims after the channel axis.
    pub inner: usize,
}

impl ChannelLayout {
    /// The layout of `shape` with the channel on `axis` (already non-negative);
    /// an error when the axis is out of range or the element count overflows.
    pub fn of_shape(shape: &[usize], axis: usize) -> Result<Self> {
        let (Some(&channels), Some(after)) = (shape.get(axis), shape.get(axis + 1..)) else {
            return Err(Error::invalid("axis", format!("axis {axis} is out of range for shape {shape:?}")));
        };
        let outer = crate::tensor::numel(&shape[..axis])?;
        let inner = crate::tensor::numel(after)?;
        let layout = ChannelLayout { outer, channels, inner };
        layout.len()?;
        Ok(layout)
    }

    /// Number of elements, `outer · channels · inner`.
    pub fn len(&self) -> Result<usize> {
        self.outer
            .checked_mul(self.channels)
            .and_then(|v| v.checked_mul(self.inner))
            .ok_or_else(|| Error::invalid("layout", format!("{self:?} has more elements than usize holds")))
    }

    /// Whether the layout holds no element.
    pub fn is_empty(&self) -> bool {
        self.outer == 0 || self.channels == 0 || self.inner == 0
    }

    /// Values per channel, `outer · inner` (saturating: with no channels the
    /// product may exceed `usize` while the layout holds no element).
    pub fn per_channel(&self) -> usize {
        self.outer.saturating_mul(self.inner)
    }

    fn check(&self, what: &str, len: usize) -> Result<()> {
        check_buf(what, len, self.len()?)
    }
}

/// Pass 1 (training): the statistics of each channel's `n = outer · inner`
/// values, `mean_c = (1/n) Σ x` and `M2_c = Σ (x - mean_c)²`, in one read of `x`
/// from memory: blocks of values small enough to stay in cache are each
/// summarised by the corrected two-pass algorithm
///
/// ```text
/// m   = (1/k) Σ_block x                         (sweep 1, from memory)
/// d   = x - m
/// M2  = Σ d² - (Σ d)² / k,  mean = m + (Σ d)/k   (sweep 2, from cache)
/// ```
///
/// and merged by Chan's formula in an order fixed by the shape (see
/// `per_channel.rs`: whole runs `x[o, c, ..]` for NCHW-like layouts, blocks of
/// rows vectorized across channels for channels-last ones). Never
/// `E[x²] - E[x]²`. The result is a [`Moments`] per channel, so statistics of
/// batches computed apart (threads, processes) merge by Chan's formula.
pub fn batch_norm_channel_moments<T: Float>(x: &[T], layout: ChannelLayout, out: &mut [Moments<T::Acc>]) -> Result<()> {
    layout.check("x", x.len())?;
    check_buf("moments", out.len(), layout.channels)?;
    let n = layout.per_channel();
    if n == 0 {
        out.fill(Moments::new());
        return Ok(());
    }
    if layout.is_empty() {
        return Ok(());
    }
    per_channel::channel_moments(x, layout, out);
    Ok(())
}

/// Pass 2: `y[o,c,i] = (x[o,c,i] - mean_c) · scale_c + bias_c` with
/// `scale_c = rstd_c · weight_c`, computed in `T::Acc` and rounded once: one
/// pass over `x` (SIMD, threads, non-temporal stores for large outputs). With
/// `mean = 0` it is the folded affine map `y = x · scale_c + bias_c` exactly.
pub fn batch_norm_apply<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    mean: &[T::Acc],
    scale: &[T::Acc],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<()> {
    layout.check("x", x.len())?;
    check_buf("y", y.len(), x.len())?;
    check_buf("mean", mean.len(), layout.channels)?;
    check_buf("scale", scale.len(), layout.channels)?;
    check_param("bias", bias, layout.channels)?;
    if layout.is_empty() {
        return Ok(());
    }
    let shift = shift_of(bias, layout.channels);
    per_channel::apply(x, layout, (mean, scale, &shift), None, y);
    Ok(())
}

/// Training-mode forward: passes 1 and 2. With the batch statistics of each
/// channel (biased variance),
///
/// ```text
/// rstd_c = 1 / sqrt(var_c + eps)
/// y      = (x - mean_c) · rstd_c · weight_c + bias_c
/// ```
///
/// writes `y`, `save_mean` and `save_rstd` (`[channels]`, for
/// [`batch_norm_backward`]) and the channels' [`Moments`] into `moments` (for
/// [`batch_norm_update_running`]). A channel with fewer than two values is an
/// error, as in PyTorch ("Expected more than 1 value per channel when training"):
/// its variance is 0 and the output would be `bias` whatever the input.
///
/// When each channel's values fit in L2 (runs layout, e.g. NCHW `[32,64,56,56]`
/// `f32`: 392 KiB a channel) and more than one thread works on the input, the
/// two passes go channel by channel, so that `x` is read from memory once
/// (`per_channel::train_forward_by_channel`; the same bits; why not with one
/// thread: `per_channel::train_by_channel`). On the Xeon of 2026-12-03 it
/// paid with one thread too: `normkit bench --quick --threads 1 --op
/// batch_norm_train`, four alternating pairs, `into`: `[32,64,56,56]`
/// 5.87-6.41 -> 3.93-5.31 ms (fraction of copy bandwidth 0.50-0.57 ->
/// 0.63-0.71), `[8,256,28,28]` 1.84-2.14 -> 1.31-1.66 ms.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
    save_mean: &mut [T],
    save_rstd: &mut [T],
    moments: &mut [Moments<T::Acc>],
) -> Result<()> {
    layout.check("x", x.len())?;
    affine.check(layout.channels)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("save_mean", save_mean.len(), layout.channels)?;
    check_buf("save_rstd", save_rstd.len(), layout.channels)?;
    let eps = check_eps::<T::Acc>(eps)?;
    if layout.channels > 0 && layout.per_channel() < 2 {
        return Err(Error::invalid(
            "x",
            format!(
                "training needs more than one value per channel, got {} ({} before the channel axis times {} after it)",
                layout.per_channel(),
                layout.outer,
                layout.inner
            ),
        ));
    }
    check_buf("moments", moments.len(), layout.channels)?;
    // Channel `c`'s `[mean, rstd, scale, shift]` from its moments (rescued
    // from the values when the variance left `T::Acc`'s range: `rescale`).
    let params = |c: usize, m: &Moments<T::Acc>| {
        let (mean, rstd) = mean_rstd_of(|| channel_values(x, layout, c), m.mean(), m.var_biased(), eps);
        let scale = rstd * super::param_at(affine.weight, c, T::Acc::one());
        [mean, rstd, scale, super::param_at(affine.bias, c, T::Acc::zero())]
    };
    if !layout.is_empty() && per_channel::train_by_channel::<T>(layout) {
        // Statistics and normalization channel by channel, `x` read once.
        per_channel::train_forward_by_channel(x, layout, params, y, moments);
    } else {
        batch_norm_channel_moments(x, layout, moments)?;
        let [mean, rstd, scale, shift] = columns(moments.iter().enumerate().map(|(c, m)| params(c, m)));
        if !layout.is_empty() {
            per_channel::apply(x, layout, (&mean, &scale, &shift), Some(&rstd), y);
        }
    }
    for (c, ((m, r), moments)) in save_mean.iter_mut().zip(save_rstd.iter_mut()).zip(moments.iter()).enumerate() {
        let [mean, rstd, ..] = params(c, moments);
        *m = T::from_acc(mean);
        *r = T::from_acc(rstd);
    }
    Ok(())
}

/// The values of channel `c`, run by run (`outer` runs of `inner` values).
fn channel_values<T: Float>(x: &[T], layout: ChannelLayout, c: usize) -> impl Iterator<Item = T> + '_ {
    let (stride, inner) = (layout.channels * layout.inner, layout.inner);
    (0..layout.outer).flat_map(move |o| x[o * stride + c * inner..][..inner].iter().copied())
}

/// Eval-mode forward with fixed (running) statistics:
///
/// ```text
/// y = (x - running_mean_c) / sqrt(running_var_c + eps) · weight_c + bias_c
/// ```
///
/// Pass 2 alone; the statistics are not changed.
pub fn batch_norm_forward_eval<T: Float>(
    x: &[T],
    layout: ChannelLayout,
    running_mean: &[T],
    running_var: &[T],
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
) -> Result<()> {
    layout.check("x", x.len())?;
    affine.check(layout.channels)?;
    check_param("running_mean", Some(running_mean), layout.channels)?;
    check_param("running_var", Some(running_var), layout.channels)?;
    let eps = check_eps::<T::Acc>(eps)?;
    let mean: Vec<T::Acc> = running_mean.iter().map(|m| m.to_acc()).collect();
    let rstd = rstd_of::<T>(running_var, eps);
    batch_norm_apply(x, layout, &mean, &scale_of(&rstd, affine.weight), affine.bias, y)
}

/// Values widened to `T::Acc`.
fn widen<T: Float>(v: &[T]) -> Vec<T::Acc> {
    v.iter().map(|v| v.to_acc()).collect()
}

/// Per-channel arrays from per-channel arrays of `N` values:
/// `[[a_0, b_0], [a_1, b_1], ...]` -> `[[a_0, a_1, ...], [b_0, b_1, ...]]`.
fn columns<A: Copy, const N: usize>(per_channel: impl Iterator<Item = [A; N]>) -> [Vec<A>; N] {
    let mut out: [Vec<A>; N] = std::array::from_fn(|_| Vec::new());
    for values in per_channel {
        for (column, v) in out.iter_mut().zip(values) {
            column.push(v);
        }
    }
    out
}

/// Channel `c`'s coefficients `[mean, slope, k, mean_dy]` of the training
/// `dx` (see `per_channel::train_dx`) from its sums `Σ dy` and `Σ dy·x̂`:
/// `slope = rstd · Σ dy·x̂ / n`, `k = rstd · weight`, `mean_dy = Σ dy / n`.
fn train_dx_coef<'a, T: Float>(
    layout: ChannelLayout,
    mean: &'a [T::Acc],
    rstd: &'a [T::Acc],
    weight: Option<&'a [T]>,
) -> impl Fn(usize, T::Acc, T::Acc) -> [T::Acc; 4] + Sync + 'a {
    let inv_n = T::Acc::from_count(layout.per_channel().max(1) as u64).recip();
    move |c, s, sx| {
        let r = rstd[c];
        [mean[c], r * (sx * inv_n), r * super::param_at(weight, c, T::Acc::one()), s * inv_n]
    }
}

/// `rstd_c = 1 / sqrt(var_c + eps)` in `T::Acc`.
fn rstd_of<T: Float>(var: &[T], eps: T::Acc) -> Vec<T::Acc> {
    var.iter().map(|v| (v.to_acc() + eps).sqrt().recip()).collect()
}

/// `scale_c = rstd_c · weight_c` (weight 1 when absent).
fn scale_of<T: Float>(rstd: &[T::Acc], weight: Option<&[T]>) -> Vec<T::Acc> {
    rstd.iter().enumerate().map(|(c, &r)| r * super::param_at(weight, c, T::Acc::one())).collect()
}

/// `shift_c = bias_c` widened (0 when absent), for `channels` channels.
fn shift_of<T: Float>(bias: Option<&[T]>, channels: usize) -> Vec<T::Acc> {
    (0..channels).map(|c| super::param_at(bias, c, T::Acc::zero())).collect()
}

/// Pass 3: the running statistics' update with `factor`, the weight of the new
/// batch statistic (PyTorch's `momentum`, or `1 / num_batches_tracked` for a
/// cumulative average), computed in `T::Acc` as PyTorch writes it:
///
/// ```text
/// running_mean_c = factor · mean_c + (1 - factor) · running_mean_c
/// running_var_c  = factor · var_c  + (1 - factor) · running_var_c
/// var_c = M2_c / (n - 1)   if unbiased (PyTorch)
///       = M2_c / n         otherwise (ONNX, Keras)
/// ```
pub fn batch_norm_update_running<T: Float>(
    moments: &[Moments<T::Acc>],
    factor: f64,
    unbiased: bool,
    running_mean: &mut [T],
    running_var: &mut [T],
) -> Result<()> {
    let mean: Vec<T::Acc> = moments.iter().map(Moments::mean).collect();
    let var: Vec<T::Acc> = moments.iter().map(|m| if unbiased { m.var_unbiased() } else { m.var_biased() }).collect();
    blend_running(&mean, &var, factor, running_mean, running_var)
}

/// The momentum blend itself, for statistics already reduced to a mean and a
/// variance per channel (InstanceNorm averages them over the samples first):
///
/// ```text
/// running_mean_c = factor · mean_c + (1 - factor) · running_mean_c
/// running_var_c  = factor · var_c  + (1 - factor) · running_var_c
/// ```
///
/// `factor` must lie in `[0, 1]`; on error nothing is written.
pub fn blend_running<T: Float>(
    mean: &[T::Acc],
    var: &[T::Acc],
    factor: f64,
    running_mean: &mut [T],
    running_var: &mut [T],
) -> Result<()> {
    check_buf("running_mean", running_mean.len(), mean.len())?;
    check_buf("running_var", running_var.len(), mean.len())?;
    check_buf("batch variance", var.len(), mean.len())?;
    if !(factor.is_finite() && (0.0..=1.0).contains(&factor)) {
        return Err(Error::invalid("momentum", format!("{factor} must lie in [0, 1]")));
    }
    let f = T::Acc::from_f64_lossy(factor);
    let keep = T::Acc::one() - f;
    for (c, (rm, rv)) in running_mean.iter_mut().zip(running_var.iter_mut()).enumerate() {
        *rm = T::from_acc(f * mean[c] + keep * rm.to_acc());
        *rv = T::from_acc(f * var[c] + keep * rv.to_acc());
    }
    Ok(())
}

/// Pass 4: per-channel sums for backward, with `x̂ = (x - mean_c) · rstd_c`:
///
/// ```text
/// sum_dy_c      = Σ_{o,i} dy[o,c,i]
/// sum_dy_xhat_c = Σ_{o,i} dy[o,c,i] · x̂[o,c,i]
/// ```
///
/// These are `dbias` and `dweight`, and the two means the training-mode `dx` needs.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_reduce<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    mean: &[T],
    rstd: &[T],
    sum_dy: &mut [T::Acc],
    sum_dy_xhat: &mut [T::Acc],
) -> Result<()> {
    layout.check("x", x.len())?;
    check_buf("dy", dy.len(), x.len())?;
    for (name, len) in [("mean", mean.len()), ("rstd", rstd.len()), ("sum_dy", sum_dy.len())] {
        check_buf(name, len, layout.channels)?;
    }
    check_buf("sum_dy_xhat", sum_dy_xhat.len(), layout.channels)?;
    sum_dy.fill(T::Acc::zero());
    sum_dy_xhat.fill(T::Acc::zero());
    if layout.is_empty() {
        return Ok(());
    }
    let (mean, rstd) = (widen(mean), widen(rstd));
    per_channel::backward_sums(dy, x, layout, &mean, &rstd, sum_dy, sum_dy_xhat, None);
    Ok(())
}

/// The per-channel sums of [`batch_norm_backward_reduce`]: `(sum_dy, sum_dy_xhat)`.
pub type ChannelSums<'a, A> = (&'a [A], &'a [A]);

/// Pass 5: the input gradient. With `n = outer · inner` values per channel and
/// the sums of [`batch_norm_backward_reduce`]:
///
/// ```text
/// training (mean, rstd are the batch's, so they depend on x):
///   dx = weight_c · rstd_c · (dy - sum_dy_c / n - x̂ · sum_dy_xhat_c / n)
/// eval (mean, rstd fixed):
///   dx = weight_c · rstd_c · dy
/// ```
///
/// In eval mode the sums are not read (pass empty slices).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_dx<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    training_sums: Option<ChannelSums<'_, T::Acc>>,
    dx: &mut [T],
) -> Result<()> {
    layout.check("x", x.len())?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("dx", dx.len(), x.len())?;
    check_buf("mean", mean.len(), layout.channels)?;
    check_buf("rstd", rstd.len(), layout.channels)?;
    check_param("weight", weight, layout.channels)?;
    if let Some((s, sx)) = training_sums {
        check_buf("sum_dy", s.len(), layout.channels)?;
        check_buf("sum_dy_xhat", sx.len(), layout.channels)?;
    }
    if layout.is_empty() {
        return Ok(());
    }
    let zero = T::Acc::zero();
    let (mean, rstd) = (widen(mean), widen(rstd));
    match training_sums {
        Some((s, sx)) => {
            let coef = train_dx_coef::<T>(layout, &mean, &rstd, weight);
            let [mean, slope, k, mean_dy] = columns((0..layout.channels).map(|c| coef(c, s[c], sx[c])));
            per_channel::train_dx(dy, x, layout, [&mean, &slope, &k, &mean_dy], dx);
        }
        // dx = (dy - 0) · k_c + 0 = k_c · dy.
        None => {
            let k = scale_of(&rstd, weight);
            per_channel::apply(dy, layout, (&vec![zero; layout.channels], &k, &vec![zero; layout.channels]), None, dx)
        }
    }
    Ok(())
}

/// BatchNorm backward: the gradients of `L = Σ y · dy`, passes 4 and 5.
///
/// `mean` and `rstd` are the statistics the forward normalized with: with
/// `training = true` the batch's (`save_mean`, `save_rstd`), through which the
/// gradient flows; with `training = false` the fixed running statistics
/// (`rstd = 1 / sqrt(running_var + eps)`), a per-channel scale. Both modes:
///
/// ```text
/// dweight_c = Σ_{o,i} dy · x̂        dbias_c = Σ_{o,i} dy
/// ```
///
/// In training mode, when each channel's values fit in L2 and more than one
/// thread works on the input (as for [`batch_norm_forward_train`]), the two
/// passes go channel by channel, so that `x` and `dy` are read from memory
/// once (`per_channel::train_backward_by_channel`; the same bits). On the
/// Xeon of 2026-12-03 it paid with one thread too: `normkit bench --quick
/// --threads 1 --op batch_norm_train`, four alternating pairs (host copy
/// bandwidth 11-16 GB/s), `into`:
/// `[32,64,56,56]` 11.85-12.88 -> 7.92-10.10 ms, `[8,256,28,28]` 2.70-4.18
/// -> 2.11-2.94 ms.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    layout: ChannelLayout,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    training: bool,
    grads: Grads<'_, T>,
) -> Result<()> {
    check_param("dweight", grads.dweight.as_deref(), layout.channels)?;
    check_param("dbias", grads.dbias.as_deref(), layout.channels)?;
    let zero = T::Acc::zero();
    let (mut sum_dy, mut sum_dy_xhat) = (vec![zero; layout.channels], vec![zero; layout.channels]);
    layout.check("x", x.len())?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("dx", grads.dx.len(), x.len())?;
    check_buf("mean", mean.len(), layout.channels)?;
    check_buf("rstd", rstd.len(), layout.channels)?;
    check_param("weight", weight, layout.channels)?;
    if training && !layout.is_empty() && per_channel::train_by_channel::<T>(layout) {
        // Both passes channel by channel, `x` and `dy` read from memory once:
        // the same bits as the two passes below.
        let (mean, rstd) = (widen(mean), widen(rstd));
        let coef = train_dx_coef::<T>(layout, &mean, &rstd, weight);
        let mean_rstd = |c: usize| (mean[c], rstd[c]);
        per_channel::train_backward_by_channel(dy, x, layout, mean_rstd, coef, grads.dx, &mut sum_dy, &mut sum_dy_xhat);
    } else if training {
        batch_norm_backward_reduce(dy, x, layout, mean, rstd, &mut sum_dy, &mut sum_dy_xhat)?;
        let sums = Some((sum_dy.as_slice(), sum_dy_xhat.as_slice()));
        batch_norm_backward_dx(dy, x, layout, mean, rstd, weight, sums, grads.dx)?;
    } else {
        // Fixed statistics: dx = weight_c · rstd_c · dy and the sums in one sweep.
        if !layout.is_empty() {
            let (mean, rstd) = (widen(mean), widen(rstd));
            let k = scale_of(&rstd, weight);
            let eval_dx = Some((&mut *grads.dx, k.as_slice()));
            per_channel::backward_sums(dy, x, layout, &mean, &rstd, &mut sum_dy, &mut sum_dy_xhat, eval_dx);
        }
    }
    write_param_grads::<T>(&sum_dy_xhat, grads.dweight);
    write_param_grads::<T>(&sum_dy, grads.dbias);
    Ok(())
}
