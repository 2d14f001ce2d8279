//! The classifiers `normkit train` builds: an MLP or a small CNN, with one of
//! normkit's normalization layers (through `normkit_candle`) before each
//! hidden nonlinearity, as in Ioffe & Szegedy (2015): `act(norm(W·u))`.

use super::config::{Activation, Arch, Config, Norm};
use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, Var, D};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::Rng;

/// A normalization layer of one hidden layer.
enum NormLayer {
    None,
    Batch(normkit_candle::BatchNorm),
    Layer(normkit_candle::LayerNorm),
    /// RMSNorm over the last axis; for convolutions over channels at each position.
    Rms(normkit_candle::RmsNorm),
    Group(normkit_candle::GroupNorm),
}

/// A hidden layer's affine (or convolutional) map.
enum Map {
    Linear(Linear),
    Conv(Conv2d),
}

struct Hidden {
    map: Map,
    norm: NormLayer,
}

/// A classifier: hidden layers `act(norm(map(h)))`, then a linear output layer
/// giving logits.
pub struct Model {
    hidden: Vec<Hidden>,
    out: Linear,
    activation: Activation,
    arch: Arch,
    dropout: f64,
    /// Every parameter and running statistic, by name (saved by `--save`).
    pub varmap: VarMap,
}

/// Samples `n` values of N(0, std²) with the Box–Muller transform (the `rand`
/// crate has no normal distribution without `rand_distr`).
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A weight created in the `VarMap` under `vb`'s prefix, then filled with
/// N(0, std²) from the run's seeded generator.
fn gaussian(vb: &VarBuilder, shape: &[usize], std: f64, rng: &mut StdRng) -> Result<Tensor> {
    let w = vb.get_with_hints(shape, "weight", Init::Const(0.0))?;
    let n = shape.iter().product();
    let values = Tensor::from_vec(normal(rng, n, std), shape, &Device::Cpu)?;
    Var::from_tensor(&w)?.set(&values)?;
    Ok(w)
}

impl Model {
    /// Builds the model of `cfg` for `rows × cols` images and `classes` classes,
    /// weights drawn from `rng`.
    pub fn new(cfg: &Config, rows: usize, cols: usize, classes: usize, rng: &mut StdRng) -> Result<Model> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        // Norms with a bias make the map's own bias redundant (Ioffe & Szegedy, 3.2).
        let map_bias = matches!(cfg.norm, Norm::None | Norm::Rms);
        let mut hidden = Vec::new();
        let (mut features, mut h, mut w, mut channels) = (rows * cols, rows, cols, 1);
        for (i, &width) in cfg.hidden.iter().enumerate() {
            let vb = vb.pp(format!("hidden{i}"));
            let map = match cfg.arch {
                Arch::Mlp => {
                    let weight = gaussian(&vb, &[width, features], cfg.init_std, rng)?;
                    let bias = if map_bias { Some(vb.get_with_hints(width, "bias", Init::Const(0.0))?) } else { None };
                    features = width;
                    Map::Linear(Linear::new(weight, bias))
                }
                Arch::Cnn => {
                    let weight = gaussian(&vb, &[width, channels, 3, 3], cfg.init_std, rng)?;
                    let bias = if map_bias { Some(vb.get_with_hints(width, "bias", Init::Const(0.0))?) } else { None };
                    let conv = Conv2dConfig { padding: 1, ..Default::default() };
                    channels = width;
                    // Each convolution keeps the size (padding 1); a 2x2 max-pool halves it.
                    if h >= 2 && w >= 2 {
                        (h, w) = (h / 2, w / 2);
                    }
                    features = channels * h * w;
                    Map::Conv(Conv2d::new(weight, bias, conv))
                }
            };
            let vbn = vb.pp("norm");
            let norm = match cfg.norm {
                Norm::None => NormLayer::None,
                Norm::Batch => NormLayer::Batch(normkit_candle::batch_norm(width, 1e-5, vbn)?),
                Norm::Layer if cfg.arch == Arch::Cnn => {
                    // LayerNorm over (C, H, W) = GroupNorm with one group.
                    NormLayer::Group(normkit_candle::group_norm(1, width, 1e-5, vbn)?)
                }
                Norm::Layer => NormLayer::Layer(normkit_candle::layer_norm(width, 1e-5, vbn)?),
                Norm::Rms => NormLayer::Rms(normkit_candle::rms_norm(width, 1e-5, vbn)?),
                Norm::Group => NormLayer::Group(normkit_candle::group_norm(cfg.groups, width, 1e-5, vbn)?),
            };
            hidden.push(Hidden { map, norm });
        }
        let vbo = vb.pp("out");
        let out_w = gaussian(&vbo, &[classes, features], cfg.init_std, rng)?;
        let out_b = vbo.get_with_hints(classes, "bias", Init::Const(0.0))?;
        Ok(Model {
            hidden,
            out: Linear::new(out_w, Some(out_b)),
            activation: cfg.activation,
            arch: cfg.arch,
            dropout: cfg.dropout,
            varmap,
        })
    }

    /// The trainable parameters (everything but BatchNorm's running statistics),
    /// in name order.
    pub fn trainable(&self) -> Vec<Var> {
        let data = match self.varmap.data().lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut named: Vec<(&String, &Var)> =
            data.iter().filter(|(name, _)| !name.ends_with("running_mean") && !name.ends_with("running_var")).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// Logits for a batch `x` (`[B, rows·cols]`), and the input to the first unit's
    /// nonlinearity in the last hidden layer (`[B]`; for a CNN, channel 0 at the
    /// centre of the map). `rng` draws dropout masks in training mode.
    pub fn forward(&self, x: &Tensor, train: bool, rng: Option<&mut StdRng>, rows: usize) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let mut h = match self.arch {
            Arch::Mlp => x.clone(),
            Arch::Cnn => x.reshape((b, 1, rows, ()))?,
        };
        let mut rng = rng;
        let mut probe = None;
        let last = self.hidden.len().saturating_sub(1);
        for (i, layer) in self.hidden.iter().enumerate() {
            let z = match &layer.map {
                Map::Linear(l) => l.forward(&h)?,
                Map::Conv(c) => c.forward(&h)?,
            };
            let z = match &layer.norm {
                NormLayer::None => z,
                NormLayer::Batch(bn) => bn.forward_t(&z, train)?,
                NormLayer::Layer(ln) => ln.forward(&z)?,
                NormLayer::Rms(rms) if z.rank() == 4 => {
                    rms.forward(&z.permute((0, 2, 3, 1))?)?.permute((0, 3, 1, 2))?
                }
                NormLayer::Rms(rms) => rms.forward(&z)?,
                NormLayer::Group(gn) => gn.forward(&z)?,
            };
            if i == last {
                probe = Some(match z.rank() {
                    4 => {
                        let (hh, ww) = (z.dim(2)?, z.dim(3)?);
                        z.narrow(1, 0, 1)?.narrow(2, hh / 2, 1)?.narrow(3, ww / 2, 1)?.flatten_all()?
                    }
                    _ => z.narrow(D::Minus1, 0, 1)?.flatten_all()?,
                });
            }
            let mut a = match self.activation {
                Activation::Sigmoid => candle_nn::ops::sigmoid(&z)?,
                Activation::Relu => z.relu()?,
                Activation::Tanh => z.tanh()?,
            };
            if matches!(layer.map, Map::Conv(_)) && a.dim(2)? >= 2 && a.dim(3)? >= 2 {
                a = a.max_pool2d(2)?;
            }
            if train && self.dropout > 0.0 {
                if let Some(r) = rng.as_deref_mut() {
                    a = dropout(&a, self.dropout, r)?;
                }
            }
            h = a;
        }
        let h = if h.rank() > 2 { h.flatten_from(1)? } else { h };
        let logits = self.out.forward(&h)?;
        let probe = match probe {
            Some(p) => p,
            None => logits.narrow(1, 0, 1)?.flatten_all()?,
        };
        Ok((logits, probe))
    }
}

/// Inverted dropout: zeroes each value with probability `p` and scales the rest
/// by `1/(1-p)`, the mask drawn from the run's seeded generator.
fn dropout(a: &Tensor, p: f64, rng: &mut StdRng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..a.elem_count()).map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 }).collect();
    a * Tensor::from_vec(mask, a.shape(), a.device())?
}
