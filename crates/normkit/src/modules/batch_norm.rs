use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::{self, NormGrads};
use crate::tensor::{Tensor, TensorRef};

/// `torch.nn.BatchNorm1d/2d/3d` in one module, with the channel on any axis and
/// Keras's conventions available ([`BatchNorm::keras`]).
///
/// Training mode (the default, as in PyTorch) normalizes each channel by the
/// batch's mean and biased variance and updates the running statistics:
///
/// ```text
/// y = (x - mean_batch) / sqrt(var_batch + eps) · weight + bias
/// num_batches_tracked += 1
/// running_mean = f · mean_batch + (1 - f) · running_mean      f = momentum, or
/// running_var  = f · var_batch' + (1 - f) · running_var           1/num_batches_tracked if None
/// ```
///
/// where `var_batch'` is the unbiased batch variance (PyTorch) or the biased one
/// ([`BatchNorm::running_var_unbiased`]`(false)`: ONNX, Keras). Eval mode
/// normalizes with the running statistics and leaves them unchanged; without
/// running statistics (`track_running_stats(false)`) it uses the batch's, as
/// PyTorch does.
///
/// ```
/// use normkit::{BatchNorm, Tensor};
/// let mut bn = BatchNorm::<f32>::new(2);
/// let x = Tensor::new(&[3, 2], vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0])?;
/// let (y, saved) = bn.forward(x.view())?;          // training: batch statistics
/// assert!((y.data()[0] + 1.2247).abs() < 1e-3);
/// assert_eq!(bn.num_batches_tracked, 1);
/// let rm = bn.running_mean.as_ref().unwrap().data();
/// assert!((rm[1] - 2.0).abs() < 1e-6);               // 0.9 · 0 + 0.1 · 20
/// let grads = bn.backward(Tensor::full(&[3, 2], 1.0f32)?.view(), x.view(), &saved)?;
/// assert_eq!(grads.dbias.unwrap().data(), &[3.0, 3.0]);
/// bn.eval();
/// let (y_eval, _) = bn.forward(x.view())?;          // running statistics
/// assert_eq!(y_eval.shape(), &[3, 2]);
/// # Ok::<(), normkit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm<T> {
    num_features: usize,
    eps: f64,
    momentum: Option<f64>,
    axis: isize,
    running_var_unbiased: bool,
    training: bool,
    /// Per-channel scale (γ), shape `[C]`; `None` without affine.
    pub weight: Option<Tensor<T>>,
    /// Per-channel shift (β), shape `[C]`; `None` without affine.
    pub bias: Option<Tensor<T>>,
    /// Running mean, shape `[C]`, initially 0; `None` without running statistics.
    pub running_mean: Option<Tensor<T>>,
    /// Running variance, shape `[C]`, initially 1; `None` without running statistics.
    pub running_var: Option<Tensor<T>>,
    /// Training batches seen while tracking running statistics.
    pub num_batches_tracked: u64,
}

/// What [`BatchNorm::forward`] saves for [`BatchNorm::backward`]: the statistics
/// the output was normalized with and whether they were the batch's.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormSaved<T> {
    /// Per-channel mean used (batch or running).
    pub mean: Tensor<T>,
    /// Per-channel `1 / sqrt(var + eps)` used.
    pub rstd: Tensor<T>,
    /// `true` when `mean`/`rstd` are the batch's (the gradient flows through them).
    pub batch_stats: bool,
}

/// An eval-mode BatchNorm as one per-channel affine map, `y = x · scale + shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedAffine<T> {
    /// `weight / sqrt(running_var + eps)`, shape `[C]`.
    pub scale: Tensor<T>,
    /// `bias - running_mean · scale`, shape `[C]`.
    pub shift: Tensor<T>,
}

impl<T: Float> BatchNorm<T> {
    /// A BatchNorm over `num_features` channels with PyTorch's defaults: `eps =
    /// 1e-5`, `momentum = 0.1`, channel axis 1, affine (weight 1, bias 0), running
    /// statistics tracked (mean 0, var 1) with an unbiased running variance,
    /// training mode.
    pub fn new(num_features: usize) -> Self {
        let fill = |v: f64| Tensor::from_parts(vec![num_features], vec![T::from_f64(v); num_features]);
        BatchNorm {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            axis: 1,
            running_var_unbiased: true,
            training: true,
            weight: Some(fill(1.0)),
            bias: Some(fill(0.0)),
            running_mean: Some(fill(0.0)),
            running_var: Some(fill(1.0)),
            num_batches_tracked: 0,
        }
    }

    /// Keras's `BatchNormalization()` defaults: channels last (`axis = -1`),
    /// `epsilon = 1e-3`, `momentum = 0.99` as Keras means it (the decay of the
    /// moving average: the new batch statistic weighs `1 - 0.99 = 0.01`), and a
    /// biased moving variance, as Keras computes it. Weight 1, bias 0, moving
    /// mean 0 and moving variance 1, as Keras initialises them.
    pub fn keras(num_features: usize) -> Self {
        Self::new(num_features).axis(-1).eps(1e-3).keras_momentum(0.99).running_var_unbiased(false)
    }

    /// Sets `eps`, the value added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets PyTorch's `momentum`: the weight of the new batch statistic in the
    /// running average (0.1 by default), or `None` for a cumulative average
    /// (weight `1 / num_batches_tracked`).
    pub fn momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the momentum as Keras means it, the decay of the running average
    /// (`running = decay · running + (1 - decay) · batch`): PyTorch's momentum is
    /// `1 - decay`.
    pub fn keras_momentum(mut self, decay: f64) -> Self {
        self.momentum = Some(1.0 - decay);
        self
    }

    /// Sets the channel axis: 1 (PyTorch's `(N, C, ...)`, the default) or any
    /// other; negative axes count from the end (-1: channels last).
    pub fn axis(mut self, axis: isize) -> Self {
        self.axis = axis;
        self
    }

    /// With `true` (PyTorch, the default) the running variance averages the
    /// unbiased batch variance `M2 / (n - 1)`; with `false` the biased `M2 / n`, as
    /// ONNX and Keras do. Normalization always uses the biased batch variance.
    pub fn running_var_unbiased(mut self, unbiased: bool) -> Self {
        self.running_var_unbiased = unbiased;
        self
    }

    /// With `false`, no weight and no bias (`affine=False`); with `true`, weight 1
    /// and bias 0.
    pub fn affine(mut self, affine: bool) -> Self {
        let c = self.num_features;
        self.weight = affine.then(|| Tensor::from_parts(vec![c], vec![T::from_f64(1.0); c]));
        self.bias = affine.then(|| Tensor::from_parts(vec![c], vec![T::from_f64(0.0); c]));
        self
    }

    /// With `false`, no running statistics (`track_running_stats=False`): the
    /// batch's statistics normalize in eval mode too. With `true`, running mean 0,
    /// running variance 1 and `num_batches_tracked` 0.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        let c = self.num_features;
        self.running_mean = track.then(|| Tensor::from_parts(vec![c], vec![T::from_f64(0.0); c]));
        self.running_var = track.then(|| Tensor::from_parts(vec![c], vec![T::from_f64(1.0); c]));
        self.num_batches_tracked = 0;
        self
    }

    /// Training mode: batch statistics, running statistics updated.
    pub fn train(&mut self) -> &mut Self {
        self.training = true;
        self
    }

    /// Eval mode: running statistics (when tracked), unchanged.
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

    /// The momentum in use (PyTorch's convention; `None`: cumulative average).
    pub fn momentum_value(&self) -> Option<f64> {
        self.momentum
    }

    /// The channel axis.
    pub fn axis_value(&self) -> isize {
        self.axis
    }

    /// Whether the running variance is unbiased.
    pub fn is_running_var_unbiased(&self) -> bool {
        self.running_var_unbiased
    }

    fn check_channels(&self, x: TensorRef<'_, T>) -> Result<()> {
        let layout = ops::batch_norm_layout(x.shape(), self.axis)?;
        if layout.channels != self.num_features {
            return Err(Error::invalid(
                "x",
                format!(
                    "input of shape {:?} has {} channels on axis {}, the BatchNorm has {}",
                    x.shape(),
                    layout.channels,
                    self.axis,
                    self.num_features
                ),
            ));
        }
        Ok(())
    }

    /// Checks that every parameter and statistic has shape `[num_features]` (the
    /// fields are public, so a caller may have replaced one).
    fn check_state(&self) -> Result<()> {
        let c = [self.num_features];
        let fields = [("weight", &self.weight), ("bias", &self.bias)];
        let stats = [("running_mean", &self.running_mean), ("running_var", &self.running_var)];
        for (name, t) in fields.into_iter().chain(stats) {
            if let Some(t) = t {
                if t.shape() != c {
                    return Err(Error::shape(name, &c, t.shape()));
                }
            }
        }
        if self.running_mean.is_some() != self.running_var.is_some() {
            return Err(Error::invalid(
                "BatchNorm",
                "running_mean and running_var must be both present or both absent",
            ));
        }
        Ok(())
    }

    fn running(&self) -> Option<(&Tensor<T>, &Tensor<T>)> {
        self.running_mean.as_ref().zip(self.running_var.as_ref())
    }

    /// Normalizes `x` (channel on the module's axis). In training mode, or in eval
    /// mode without running statistics, with the batch's statistics (and, in
    /// training mode with running statistics, updates them); in eval mode with the
    /// running statistics. Returns `y` and what [`BatchNorm::backward`] needs.
    /// On error nothing is changed.
    pub fn forward(&mut self, x: TensorRef<'_, T>) -> Result<(Tensor<T>, BatchNormSaved<T>)> {
        self.check_state()?;
        self.check_channels(x)?;
        let (w, b) = (self.weight.as_ref().map(Tensor::view), self.bias.as_ref().map(Tensor::view));
        if let (false, Some((rm, rv))) = (self.training, self.running()) {
            let y = ops::batch_norm_eval(x, self.axis, rm.view(), rv.view(), w, b, self.eps)?;
            let rstd = rv.data().iter().map(|v| T::from_f64(1.0 / (v.to_f64() + self.eps).sqrt())).collect();
            let saved = BatchNormSaved {
                mean: rm.clone(),
                rstd: Tensor::from_parts(vec![self.num_features], rstd),
                batch_stats: false,
            };
            return Ok((y, saved));
        }
        let out = ops::batch_norm_train(x, self.axis, w, b, self.eps)?;
        if self.training {
            if let (Some(rm), Some(rv)) = (self.running_mean.as_mut(), self.running_var.as_mut()) {
                ops::batch_norm_update_running(
                    rm,
                    rv,
                    &mut self.num_batches_tracked,
                    &out.batch_stats,
                    self.momentum,
                    self.running_var_unbiased,
                )?;
            }
        }
        Ok((out.y, BatchNormSaved { mean: out.save_mean, rstd: out.save_rstd, batch_stats: true }))
    }

    /// Gradients of `Σ y · dy` for the forward call that took `x` and returned
    /// `saved`: through the batch statistics when they normalized, else a
    /// per-channel scale.
    pub fn backward(
        &self,
        dy: TensorRef<'_, T>,
        x: TensorRef<'_, T>,
        saved: &BatchNormSaved<T>,
    ) -> Result<NormGrads<T>> {
        self.check_channels(x)?;
        let w = self.weight.as_ref().map(Tensor::view);
        let has_bias = self.bias.is_some();
        if saved.batch_stats {
            return ops::batch_norm_backward(dy, x, self.axis, saved.mean.view(), saved.rstd.view(), w, has_bias);
        }
        ops::batch_norm_fixed_backward(dy, x, self.axis, saved.mean.view(), saved.rstd.view(), w, has_bias)
    }

    /// The eval-mode transform as one per-channel affine map:
    ///
    /// ```text
    /// scale_c = weight_c / sqrt(running_var_c + eps)
    /// shift_c = bias_c - running_mean_c · scale_c
    /// y       = x · scale_c + shift_c
    /// ```
    ///
    /// computed in `f64` and rounded once: the basis for folding a BatchNorm into
    /// the linear or convolution before it. An error without running statistics
    /// (their eval output depends on the batch, so no fixed map exists).
    pub fn fold_into_affine(&self) -> Result<FoldedAffine<T>> {
        let (rm, rv) = self.running().ok_or_else(|| {
            Error::invalid("BatchNorm", "has no running statistics (track_running_stats=false): nothing to fold")
        })?;
        self.check_state()?;
        let eps: f64 = crate::kernels::check_eps(self.eps)?;
        let c = self.num_features;
        let at = |p: &Option<Tensor<T>>, i: usize, d: f64| p.as_ref().map_or(d, |t| t.data()[i].to_f64());
        let (mut scale, mut shift) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for i in 0..c {
            let s = at(&self.weight, i, 1.0) / (rv.data()[i].to_f64() + eps).sqrt();
            scale.push(T::from_f64(s));
            shift.push(T::from_f64(at(&self.bias, i, 0.0) - rm.data()[i].to_f64() * s));
        }
        Ok(FoldedAffine { scale: Tensor::from_parts(vec![c], scale), shift: Tensor::from_parts(vec![c], shift) })
    }
}
