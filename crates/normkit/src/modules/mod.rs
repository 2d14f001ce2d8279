//! Stateful modules in the style of `torch.nn`: each owns its configuration and
//! parameters, initialised as PyTorch does (weight 1, bias 0), and offers
//! `forward` (returning the output and what `backward` needs) and `backward`.
//!
//! The caller keeps the input alive between the two calls and passes it to
//! `backward` again, so no module copies its input.

mod batch_norm;
mod group_norm;
mod layer_norm;
mod rms_norm;

pub use batch_norm::{BatchNorm, BatchNormSaved, FoldedAffine};
pub use group_norm::{GroupNorm, GroupNormSaved, InstanceNorm, InstanceNormSaved};
pub use layer_norm::{LayerNorm, LayerNormSaved};
pub use rms_norm::{RmsNorm, RmsNormSaved};
