//! Modules shaped like `candle_nn`'s, so that switching is a one-line change:
//! `candle_nn::layer_norm(size, config, vb)` becomes
//! `normkit_candle::layer_norm(size, config, vb)`, with the same configuration
//! types, the same parameter names in the `VarBuilder` (`weight`, `bias`,
//! `running_mean`, `running_var`) and the same defaults.

use crate::ops;
use candle_core::{bail, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{BatchNormConfig, Init, LayerNormConfig, VarBuilder};

/// LayerNorm (or RMSNorm, when `remove_mean` is false) over the last dimension,
/// with a learned weight and an optional learned bias:
/// `y = (x - mean) / sqrt(var + eps) · weight + bias`. Its backward reaches `x`,
/// `weight` and `bias` (candle_nn's fused forward has none).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    remove_mean: bool,
    eps: f64,
}

impl LayerNorm {
    /// A LayerNorm with the given weight and bias (each `[n]`).
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias: Some(bias), remove_mean: true, eps }
    }

    /// A LayerNorm without bias.
    pub fn new_no_bias(weight: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias: None, remove_mean: true, eps }
    }

    /// The learned scale, `[n]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The learned shift, `[n]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The `eps` added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.remove_mean {
            ops::layer_norm(x, Some(&self.weight), self.bias.as_ref(), self.eps)
        } else {
            let y = ops::rms_norm(x, Some(&self.weight), self.eps)?;
            match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        }
    }
}

/// Builds a [`LayerNorm`] of `size` features: `weight` initialised to 1 and, when
/// `config.affine`, `bias` to 0, read from or created in `vb` (as
/// `candle_nn::layer_norm`).
pub fn layer_norm<C: Into<LayerNormConfig>>(size: usize, config: C, vb: VarBuilder) -> Result<LayerNorm> {
    let config = config.into();
    let weight = vb.get_with_hints(size, "weight", Init::Const(1.))?;
    let bias = if config.affine { Some(vb.get_with_hints(size, "bias", Init::Const(0.))?) } else { None };
    Ok(LayerNorm { weight, bias, remove_mean: config.remove_mean, eps: config.eps })
}

/// Builds a [`LayerNorm`] without bias (as `candle_nn::layer_norm_no_bias`).
pub fn layer_norm_no_bias(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    layer_norm(size, LayerNormConfig { eps, remove_mean: true, affine: false }, vb)
}

/// RMSNorm over the last dimension with a learned weight:
/// `y = x / sqrt(mean(x²) + eps) · weight`.
#[derive(Clone, Debug)]
pub struct RmsNorm(LayerNorm);

impl RmsNorm {
    /// An RMSNorm with the given weight (`[n]`).
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm(LayerNorm { weight, bias: None, remove_mean: false, eps })
    }

    /// The learned scale, `[n]`.
    pub fn weight(&self) -> &Tensor {
        &self.0.weight
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// Builds an [`RmsNorm`] of `size` features, weight initialised to 1 (as
/// `candle_nn::rms_norm`).
pub fn rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    let ln = layer_norm(size, LayerNormConfig { eps, remove_mean: false, affine: false }, vb)?;
    Ok(RmsNorm(ln))
}

/// BatchNorm over the channel axis (1) of `[N, C, *]` inputs, PyTorch's
/// semantics. Training mode normalizes with the batch statistics and updates the
/// running ones:
///
/// ```text
/// running_mean ← (1 - momentum) · running_mean + momentum · mean_batch
/// running_var  ← (1 - momentum) · running_var  + momentum · var_batch · m/(m - 1)
/// ```
///
/// (`m` values per channel; the unbiased variance, as PyTorch). Evaluation mode
/// normalizes with the running statistics. The running statistics are `Var`s of
/// the `VarBuilder`'s `VarMap` (`running_mean`, `running_var`), so they save to
/// and load from safetensors with the rest of the model; they never receive a
/// gradient, so optimizers leave them alone.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    running_mean: Var,
    running_var: Var,
    weight_and_bias: Option<(Tensor, Tensor)>,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// A BatchNorm over `num_features` channels from its running statistics and
    /// optional `(weight, bias)`, each `[num_features]`. `momentum` in `[0, 1]` is
    /// PyTorch's (the weight of the new batch).
    pub fn new(
        num_features: usize,
        running_mean: Tensor,
        running_var: Tensor,
        weight_and_bias: Option<(Tensor, Tensor)>,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        if !(eps.is_finite() && eps >= 0.0) {
            bail!("normkit batch_norm: eps {eps} must be finite and not negative")
        }
        if !(0.0..=1.0).contains(&momentum) {
            bail!("normkit batch_norm: momentum {momentum} must lie in [0, 1]")
        }
        let mut named = vec![("running_mean", &running_mean), ("running_var", &running_var)];
        if let Some((w, b)) = &weight_and_bias {
            named.extend([("weight", w), ("bias", b)]);
        }
        for (name, t) in named {
            if t.dims() != [num_features] {
                bail!("normkit batch_norm: {name} has shape {:?}, expected [{num_features}]", t.dims())
            }
        }
        Ok(BatchNorm {
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            weight_and_bias,
            eps,
            momentum,
        })
    }

    /// The running mean, `[C]`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance, `[C]`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// The learned `(weight, bias)`, if affine.
    pub fn weight_and_bias(&self) -> Option<(&Tensor, &Tensor)> {
        self.weight_and_bias.as_ref().map(|(w, b)| (w, b))
    }

    /// Checks that `x` has this module's channels on axis 1 and its statistics'
    /// dtype.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = self.running_mean.dims().first().copied().unwrap_or(0);
        if x.rank() < 2 || x.dims()[1] != c {
            bail!("normkit batch_norm: input of shape {:?} does not have {c} channels on axis 1", x.dims())
        }
        let dtype = self.running_mean.dtype();
        if x.dtype() != dtype {
            bail!("normkit batch_norm: input has dtype {:?} but the module's statistics are {dtype:?}", x.dtype())
        }
        Ok(())
    }

    fn params(&self) -> (Option<&Tensor>, Option<&Tensor>) {
        match &self.weight_and_bias {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        }
    }

    /// Training-mode forward: normalizes with the batch statistics and updates
    /// the running statistics. Refuses a batch with one value per channel (its
    /// unbiased variance is undefined), as PyTorch does.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = self.params();
        self.check_input(x)?;
        // Refuses one value per channel (`ops::batch_norm_train` checks it).
        let (y, stats) = ops::batch_norm_train(x, w, b, self.eps)?;
        let m = self.momentum;
        let unbias = stats.count as f64 / (stats.count as f64 - 1.0);
        let mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (stats.mean * m)?)?;
        let var = ((self.running_var.as_detached_tensor() * (1.0 - m))? + (stats.var * (m * unbias))?)?;
        self.running_mean.set(&mean)?;
        self.running_var.set(&var)?;
        Ok(y)
    }

    /// Evaluation-mode forward: normalizes with the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let (w, b) = self.params();
        let (rm, rv) = (self.running_mean.as_detached_tensor(), self.running_var.as_detached_tensor());
        ops::batch_norm_eval(x, &rm, &rv, w, b, self.eps)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }
}

/// Builds a [`BatchNorm`] over `num_features` channels (as `candle_nn::batch_norm`):
/// `running_mean` 0, `running_var` 1 and, when `config.affine`, `weight` 1 and
/// `bias` 0, read from or created in `vb`. `config.remove_mean = false` is
/// refused (normkit's BatchNorm always centres).
pub fn batch_norm<C: Into<BatchNormConfig>>(num_features: usize, config: C, vb: VarBuilder) -> Result<BatchNorm> {
    let config = config.into();
    if !config.remove_mean {
        bail!("normkit batch_norm: remove_mean = false is not supported")
    }
    let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.))?;
    let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.))?;
    let weight_and_bias = if config.affine {
        let w = vb.get_with_hints(num_features, "weight", Init::Const(1.))?;
        let b = vb.get_with_hints(num_features, "bias", Init::Const(0.))?;
        Some((w, b))
    } else {
        None
    };
    BatchNorm::new(num_features, running_mean, running_var, weight_and_bias, config.eps, config.momentum)
}

/// GroupNorm over `[N, C, *]` inputs: `num_groups` groups of consecutive
/// channels, each (sample, group) normalized over its values, then
/// `· weight_c + bias_c`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// A GroupNorm with the given per-channel weight and bias (`[C]`).
    pub fn new(weight: Tensor, bias: Tensor, num_channels: usize, num_groups: usize, eps: f64) -> Result<Self> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            bail!("normkit group_norm: {num_channels} channels cannot be split into {num_groups} groups")
        }
        Ok(GroupNorm { weight, bias, num_groups, eps })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::group_norm(x, self.num_groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

/// Builds a [`GroupNorm`] (as `candle_nn::group_norm`): weight 1, bias 0.
pub fn group_norm(num_groups: usize, num_channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(num_channels, "weight", Init::Const(1.))?;
    let bias = vb.get_with_hints(num_channels, "bias", Init::Const(0.))?;
    GroupNorm::new(weight, bias, num_channels, num_groups, eps)
}

/// InstanceNorm over `[N, C, L, ...]` inputs: each (sample, channel) normalized
/// over its spatial values, then, when affine, `· weight_c + bias_c`. Like
/// PyTorch's `InstanceNorm*d` with `track_running_stats=False`.
#[derive(Clone, Debug)]
pub struct InstanceNorm {
    weight_and_bias: Option<(Tensor, Tensor)>,
    eps: f64,
}

impl Module for InstanceNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = match &self.weight_and_bias {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        };
        ops::instance_norm(x, w, b, self.eps)
    }
}

/// Builds an [`InstanceNorm`] of `num_channels`; with `affine` (PyTorch's default
/// is `false`) a weight (1) and bias (0) from `vb`.
pub fn instance_norm(num_channels: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<InstanceNorm> {
    let weight_and_bias = if affine {
        let w = vb.get_with_hints(num_channels, "weight", Init::Const(1.))?;
        let b = vb.get_with_hints(num_channels, "bias", Init::Const(0.))?;
        Some((w, b))
    } else {
        None
    };
    Ok(InstanceNorm { weight_and_bias, eps })
}
