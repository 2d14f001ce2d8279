use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::{self, NormGrads};
use crate::tensor::{Tensor, TensorRef};

/// `torch.nn.GroupNorm`: the channels of each sample of an `(N, C, *)` input
/// split into `num_groups` groups of consecutive channels, each normalized on its
/// own, then a per-channel affine transform.
///
/// ```text
/// y[n, c, s] = (x[n, c, s] - mean_{n,g(c)}) / sqrt(var_{n,g(c)} + eps) · weight_c + bias_c
/// ```
///
/// With one group this is LayerNorm over `(C, *)` with a per-channel (not
/// per-element) affine transform; with `C` groups it is InstanceNorm.
///
/// ```
/// use normkit::{GroupNorm, Tensor};
/// let gn = GroupNorm::<f32>::new(2, 4)?;
/// let x = Tensor::new(&[1, 4, 2], vec![1.0f32, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0])?;
/// let (y, saved) = gn.forward(x.view())?;
/// assert_eq!(saved.mean.data(), &[2.5, 25.0]);
/// assert!((y.data()[0] + 1.3416).abs() < 1e-3);
/// # Ok::<(), normkit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNorm<T> {
    num_groups: usize,
    num_channels: usize,
    eps: f64,
    /// Per-channel scale, shape `[C]`; `None` without affine.
    pub weight: Option<Tensor<T>>,
    /// Per-channel shift, shape `[C]`; `None` without affine.
    pub bias: Option<Tensor<T>>,
}

/// What [`GroupNorm::forward`] saves for [`GroupNorm::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormSaved<T> {
    /// Per-group mean, shape `[N, G]`.
    pub mean: Tensor<T>,
    /// Per-group `1 / sqrt(var + eps)`, shape `[N, G]`.
    pub rstd: Tensor<T>,
}

fn ones_zeros<T: Float>(c: usize) -> (Tensor<T>, Tensor<T>) {
    (Tensor::from_parts(vec![c], vec![T::from_f64(1.0); c]), Tensor::from_parts(vec![c], vec![T::from_f64(0.0); c]))
}

impl<T: Float> GroupNorm<T> {
    /// A GroupNorm with PyTorch's defaults (`eps = 1e-5`, affine: weight 1, bias
    /// 0). Errors when `num_groups` is 0 or does not divide `num_channels`.
    pub fn new(num_groups: usize, num_channels: usize) -> Result<Self> {
        crate::kernels::GroupLayout::new(0, num_channels, 1, num_groups)?;
        let (w, b) = ones_zeros(num_channels);
        Ok(GroupNorm { num_groups, num_channels, eps: 1e-5, weight: Some(w), bias: Some(b) })
    }

    /// Sets `eps`, the value added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// With `false`, no weight and no bias (`affine=False`); with `true`, weight 1, bias 0.
    pub fn affine(mut self, affine: bool) -> Self {
        let (w, b) = ones_zeros(self.num_channels);
        self.weight = affine.then_some(w);
        self.bias = affine.then_some(b);
        self
    }

    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.num_channels
    }

    /// The `eps` in use.
    pub fn eps_value(&self) -> f64 {
        self.eps
    }

    fn check_channels(&self, x: TensorRef<'_, T>) -> Result<()> {
        check_channels(x, self.num_channels, "GroupNorm")
    }

    /// Normalizes `x` (`(N, C, *)`, C = `num_channels`); returns `y` and the
    /// per-group statistics for [`GroupNorm::backward`].
    pub fn forward(&self, x: TensorRef<'_, T>) -> Result<(Tensor<T>, GroupNormSaved<T>)> {
        self.check_channels(x)?;
        let (w, b) = (self.weight.as_ref().map(Tensor::view), self.bias.as_ref().map(Tensor::view));
        let out = ops::group_norm(x, self.num_groups, w, b, self.eps)?;
        Ok((out.y, GroupNormSaved { mean: out.mean, rstd: out.rstd }))
    }

    /// Gradients of `Σ y · dy` for the forward call that took `x` and returned `saved`.
    pub fn backward(
        &self,
        dy: TensorRef<'_, T>,
        x: TensorRef<'_, T>,
        saved: &GroupNormSaved<T>,
    ) -> Result<NormGrads<T>> {
        self.check_channels(x)?;
        let w = self.weight.as_ref().map(Tensor::view);
        ops::group_norm_backward(dy, x, self.num_groups, (saved.mean.view(), saved.rstd.view()), w, self.bias.is_some())
    }
}

fn check_channels<T>(x: TensorRef<'_, T>, channels: usize, what: &str) -> Result<()> {
    match x.shape().get(1) {
        Some(&c) if c == channels => Ok(()),
        _ => Err(Error::invalid(
            "x",
            format!("input of shape {:?} does not have the {channels} channels (axis 1) of the {what}", x.shape()),
        )),
    }
}

/// `torch.nn.InstanceNorm1d/2d/3d`: each channel of each sample of an
/// `(N, C, *)` input normalized on its own, optionally followed by a per-channel
/// affine transform and optionally tracking running statistics.
///
/// ```text
/// y[n, c, s] = (x[n, c, s] - mean_{n,c}) / sqrt(var_{n,c} + eps) · weight_c + bias_c
/// ```
///
/// PyTorch's defaults: no affine, no running statistics, `eps = 1e-5`. With
/// [`InstanceNorm::track_running_stats`]`(true)`, training updates
///
/// ```text
/// running_mean_c = momentum · mean_n(mean_{n,c})  + (1 - momentum) · running_mean_c
/// running_var_c  = momentum · mean_n(var'_{n,c})  + (1 - momentum) · running_var_c    (var' unbiased)
/// ```
///
/// and eval mode normalizes with the running statistics (PyTorch's
/// `use_input_stats = training or not track_running_stats`). As in PyTorch, a
/// momentum of `None` means 0 here (InstanceNorm has no cumulative average) and
/// `num_batches_tracked` is kept for the state but not advanced.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceNorm<T> {
    num_features: usize,
    eps: f64,
    momentum: Option<f64>,
    training: bool,
    /// Per-channel scale, shape `[C]`; `None` without affine (the default).
    pub weight: Option<Tensor<T>>,
    /// Per-channel shift, shape `[C]`; `None` without affine (the default).
    pub bias: Option<Tensor<T>>,
    /// Running mean, shape `[C]`; `None` unless tracking running statistics.
    pub running_mean: Option<Tensor<T>>,
    /// Running variance, shape `[C]`; `None` unless tracking running statistics.
    pub running_var: Option<Tensor<T>>,
    /// Kept for PyTorch's state layout; InstanceNorm does not advance it.
    pub num_batches_tracked: u64,
}

/// What [`InstanceNorm::forward`] saves for [`InstanceNorm::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceNormSaved<T> {
    /// Mean used: `[N, C]` from the input, or `[C]` running.
    pub mean: Tensor<T>,
    /// `1 / sqrt(var + eps)` used, same shape as `mean`.
    pub rstd: Tensor<T>,
    /// `true` when the input's statistics normalized (the gradient flows through them).
    pub input_stats: bool,
}

impl<T: Float> InstanceNorm<T> {
    /// An InstanceNorm over `num_features` channels with PyTorch's defaults:
    /// `eps = 1e-5`, `momentum = 0.1`, no affine, no running statistics, training.
    pub fn new(num_features: usize) -> Self {
        InstanceNorm {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            training: true,
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            num_batches_tracked: 0,
        }
    }

    /// Sets `eps`, the value added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the momentum (weight of the new statistic); `None` means 0, as in PyTorch.
    pub fn momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }

    /// With `true`, weight 1 and bias 0 (`affine=True`); with `false`, none.
    pub fn affine(mut self, affine: bool) -> Self {
        let (w, b) = ones_zeros(self.num_features);
        self.weight = affine.then_some(w);
        self.bias = affine.then_some(b);
        self
    }

    /// With `true`, running mean 0 and variance 1, updated in training and used in
    /// eval; with `false` (the default), the input's statistics always.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        let (ones, zeros) = ones_zeros(self.num_features);
        self.running_mean = track.then_some(zeros);
        self.running_var = track.then_some(ones);
        self.num_batches_tracked = 0;
        self
    }

    /// Training mode.
    pub fn train(&mut self) -> &mut Self {
        self.training = true;
        self
    }

    /// Eval mode.
    pub fn eval(&mut self) -> &mut Self {
        self.training = false;
        self
    }

    /// Whether the module is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// The `eps` in use.
    pub fn eps_value(&self) -> f64 {
        self.eps
    }

    /// The momentum in use.
    pub fn momentum_value(&self) -> Option<f64> {
        self.momentum
    }

    fn running(&self) -> Option<(&Tensor<T>, &Tensor<T>)> {
        self.running_mean.as_ref().zip(self.running_var.as_ref())
    }

    /// Checks that the running statistics are both present or both absent (the
    /// fields are public, so a caller may have replaced one); their shapes and
    /// the parameters' are checked by the ops.
    fn check_state(&self) -> Result<()> {
        if self.running_mean.is_some() != self.running_var.is_some() {
            return Err(Error::invalid(
                "InstanceNorm",
                "running_mean and running_var must be both present or both absent",
            ));
        }
        Ok(())
    }

    /// Normalizes `x` (`(N, C, *)`): with the input's statistics in training
    /// mode or without running statistics (updating them in training), with the
    /// running statistics otherwise. On error nothing is changed.
    pub fn forward(&mut self, x: TensorRef<'_, T>) -> Result<(Tensor<T>, InstanceNormSaved<T>)> {
        self.check_state()?;
        check_channels(x, self.num_features, "InstanceNorm")?;
        let (w, b) = (self.weight.as_ref().map(Tensor::view), self.bias.as_ref().map(Tensor::view));
        if let (false, Some((rm, rv))) = (self.training, self.running()) {
            let y = ops::batch_norm_eval(x, 1, rm.view(), rv.view(), w, b, self.eps)?;
            let eps = self.eps;
            let rstd = rv.data().iter().map(|v| T::from_f64(1.0 / (v.to_f64() + eps).sqrt())).collect();
            let rstd = Tensor::from_parts(vec![self.num_features], rstd);
            return Ok((y, InstanceNormSaved { mean: rm.clone(), rstd, input_stats: false }));
        }
        let out = ops::instance_norm(x, w, b, self.eps)?;
        if self.training {
            if let (Some(rm), Some(rv)) = (self.running_mean.as_mut(), self.running_var.as_mut()) {
                ops::instance_norm_update_running(x, rm, rv, self.momentum.unwrap_or(0.0))?;
            }
        }
        Ok((out.y, InstanceNormSaved { mean: out.mean, rstd: out.rstd, input_stats: true }))
    }

    /// Gradients of `Σ y · dy` for the forward call that took `x` and returned `saved`.
    pub fn backward(
        &self,
        dy: TensorRef<'_, T>,
        x: TensorRef<'_, T>,
        saved: &InstanceNormSaved<T>,
    ) -> Result<NormGrads<T>> {
        check_channels(x, self.num_features, "InstanceNorm")?;
        let w = self.weight.as_ref().map(Tensor::view);
        let has_bias = self.bias.is_some();
        if saved.input_stats {
            ops::instance_norm_backward(dy, x, (saved.mean.view(), saved.rstd.view()), w, has_bias)
        } else {
            ops::batch_norm_fixed_backward(dy, x, 1, saved.mean.view(), saved.rstd.view(), w, has_bias)
        }
    }
}
