//! The functional API: differentiable normalization functions on candle tensors.
//!
//! Each function checks its arguments, then on the CPU with `f32`/`f64` applies a
//! candle custom op whose forward and backward are normkit's kernels; on any other
//! device or dtype it computes the same function with candle's tensor ops, whose
//! backward is candle's autograd. No path cuts the gradient. The `*_composed`
//! functions are the candle-only versions, public so they can serve as references.

mod channel_norm;
mod layer_norm;
mod rms_norm;

pub use channel_norm::{
    batch_norm_eval, batch_norm_eval_composed, batch_norm_train, batch_norm_train_composed, group_norm,
    group_norm_composed, instance_norm, instance_norm_composed, BatchStats,
};
pub use layer_norm::{layer_norm, layer_norm_composed};
pub use rms_norm::{rms_norm, rms_norm_composed};
