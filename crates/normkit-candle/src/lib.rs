//! # normkit-candle
//!
//! normkit's normalization layers for the [candle] framework, differentiable.
//!
//! candle's fused `candle_nn::ops::layer_norm` and `rms_norm` have no backward
//! (they are applied with `apply_op*_no_bwd`, so gradients are silently cut), and
//! its BatchNorm and GroupNorm are composed of many tensor ops. This crate gives
//! candle custom ops whose CPU forward **and** backward are normkit's kernels, for
//! `f32` and `f64` ([`ops`]), and modules shaped like `candle_nn`'s ([`layer_norm`],
//! [`rms_norm`], [`batch_norm`], [`group_norm`], [`instance_norm`]), so that switching
//! is a one-line change.
//!
//! On a device or dtype normkit has no kernel for (CUDA, Metal, `f16`, `bf16`), the
//! same functions compute with candle's tensor ops, whose backward is candle's
//! autograd: never a gradient-free path.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! // Was: candle_nn::layer_norm(4, 1e-5, vb.pp("ln"))
//! let ln = normkit_candle::layer_norm(4, 1e-5, vb.pp("ln"))?;
//! let x = Tensor::new(&[[1f32, 2., 3., 4.], [0., 0., 1., -1.]], &Device::Cpu)?;
//! let loss = ln.forward(&x)?.sqr()?.sum_all()?;
//! let grads = loss.backward()?;
//! // The gradient reaches the input and both parameters.
//! assert!(grads.get(&x).is_some());
//! assert!(grads.get(ln.weight()).is_some());
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

#![warn(missing_docs)]

mod cpu;
pub mod modules;
pub mod ops;

pub use modules::{
    batch_norm, group_norm, instance_norm, layer_norm, layer_norm_no_bias, rms_norm, BatchNorm, GroupNorm,
    InstanceNorm, LayerNorm, RmsNorm,
};
pub use ops::BatchStats;
