//! One training configuration, parsed from the command line's strings so that
//! every bad value gets a one-line error naming the option and the choices.

use super::TrainError;

/// The network's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Fully connected hidden layers.
    Mlp,
    /// 3x3 convolutions (padding 1), each followed by a 2x2 max-pool.
    Cnn,
}

/// The normalization before each hidden nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// None.
    None,
    /// BatchNorm (batch statistics in training, running statistics in evaluation).
    Batch,
    /// LayerNorm over each sample's features (for a CNN: over C, H, W).
    Layer,
    /// RMSNorm over each sample's features (for a CNN: over channels at each position).
    Rms,
    /// GroupNorm with `--groups` groups.
    Group,
}

/// The hidden nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimizer {
    /// Plain minibatch SGD: `θ ← θ - lr · g`.
    Sgd,
    /// Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay).
    Adam,
}

/// Everything one training run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Network shape.
    pub arch: Arch,
    /// Hidden widths (MLP) or channel counts (CNN).
    pub hidden: Vec<usize>,
    /// Normalization layer.
    pub norm: Norm,
    /// Nonlinearity.
    pub activation: Activation,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Learning rate.
    pub lr: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Training steps (minibatches).
    pub steps: usize,
    /// Steps between evaluations.
    pub eval_every: usize,
    /// Standard deviation of the Gaussian initial weights.
    pub init_std: f64,
    /// Seed of the initial weights, the minibatch order and dropout.
    pub seed: u64,
    /// Dropout probability after each hidden nonlinearity.
    pub dropout: f64,
    /// Groups of GroupNorm.
    pub groups: usize,
}

/// The raw option values of one configuration, as strings; `--compare` replaces
/// one of them per run before parsing.
#[derive(Clone, Debug)]
pub struct Raw {
    /// `(option name, value)` pairs, option names without the dashes.
    pub values: Vec<(&'static str, String)>,
}

/// The options `--compare` can vary.
pub const COMPARABLE: &[&str] = &[
    "arch",
    "hidden",
    "norm",
    "activation",
    "optimizer",
    "lr",
    "batch-size",
    "steps",
    "init-std",
    "seed",
    "dropout",
    "groups",
];

impl Raw {
    /// The value of option `name`.
    fn get(&self, name: &str) -> &str {
        self.values.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }

    /// Replaces option `name`'s value; an error if `--compare` cannot vary it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), TrainError> {
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) if COMPARABLE.contains(&name) => {
                slot.1 = value.to_string();
                Ok(())
            }
            _ => {
                Err(TrainError::Usage(format!("--compare: unknown option '{name}' (one of {})", COMPARABLE.join(", "))))
            }
        }
    }

    /// Parses every value into a [`Config`].
    pub fn parse(&self) -> Result<Config, TrainError> {
        let cfg = Config {
            arch: choice("arch", self.get("arch"), &[("mlp", Arch::Mlp), ("cnn", Arch::Cnn)])?,
            hidden: hidden(self.get("hidden"))?,
            norm: choice(
                "norm",
                self.get("norm"),
                &[
                    ("none", Norm::None),
                    ("batch", Norm::Batch),
                    ("layer", Norm::Layer),
                    ("rms", Norm::Rms),
                    ("group", Norm::Group),
                ],
            )?,
            activation: choice(
                "activation",
                self.get("activation"),
                &[("sigmoid", Activation::Sigmoid), ("relu", Activation::Relu), ("tanh", Activation::Tanh)],
            )?,
            optimizer: choice(
                "optimizer",
                self.get("optimizer"),
                &[("sgd", Optimizer::Sgd), ("adam", Optimizer::Adam)],
            )?,
            lr: positive_f64("lr", self.get("lr"))?,
            batch_size: positive_usize("batch-size", self.get("batch-size"))?,
            steps: positive_usize("steps", self.get("steps"))?,
            eval_every: positive_usize("eval-every", self.get("eval-every"))?,
            init_std: positive_f64("init-std", self.get("init-std"))?,
            seed: number("seed", self.get("seed"))?,
            dropout: number("dropout", self.get("dropout"))?,
            groups: positive_usize("groups", self.get("groups"))?,
        };
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(TrainError::Usage(format!("--dropout {}: must lie in [0, 1)", cfg.dropout)));
        }
        if cfg.batch_size < 2 && cfg.norm == Norm::Batch {
            return Err(TrainError::Usage("--batch-size 1: BatchNorm needs at least 2 samples per batch".into()));
        }
        if cfg.norm == Norm::Group {
            if let Some(&w) = cfg.hidden.iter().find(|&&w| w % cfg.groups != 0) {
                return Err(TrainError::Usage(format!(
                    "--groups {}: hidden width {w} is not divisible by it",
                    cfg.groups
                )));
            }
        }
        Ok(cfg)
    }
}

fn choice<T: Copy>(option: &str, value: &str, choices: &[(&str, T)]) -> Result<T, TrainError> {
    choices.iter().find(|(name, _)| *name == value).map(|&(_, v)| v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        TrainError::Usage(format!("--{option} '{value}': unknown value (one of {})", names.join(", ")))
    })
}

fn number<T: std::str::FromStr>(option: &str, value: &str) -> Result<T, TrainError> {
    value.trim().parse().map_err(|_| TrainError::Usage(format!("--{option} '{value}': not a valid number")))
}

fn positive_usize(option: &str, value: &str) -> Result<usize, TrainError> {
    match number::<usize>(option, value)? {
        0 => Err(TrainError::Usage(format!("--{option} 0: must be at least 1"))),
        n => Ok(n),
    }
}

fn positive_f64(option: &str, value: &str) -> Result<f64, TrainError> {
    let v: f64 = number(option, value)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(TrainError::Usage(format!("--{option} {value}: must be a positive number")));
    }
    Ok(v)
}

/// Hidden sizes separated by `,` (or `x` or `/`, for use inside `--compare`).
fn hidden(value: &str) -> Result<Vec<usize>, TrainError> {
    let parts: Vec<&str> = value.split([',', 'x', '/']).collect();
    let mut sizes = Vec::with_capacity(parts.len());
    for p in parts {
        let n: usize = p.trim().parse().map_err(|_| {
            TrainError::Usage(format!("--hidden '{value}': '{p}' is not a layer size (e.g. --hidden 100,100,100)"))
        })?;
        if n == 0 {
            return Err(TrainError::Usage(format!("--hidden '{value}': a hidden size of 0")));
        }
        sizes.push(n);
    }
    Ok(sizes)
}
