//! # normkit
//!
//! Normalization layers for machine learning with fused forward and backward CPU
//! kernels: LayerNorm, RMSNorm, BatchNorm (any channel axis, running statistics,
//! eval mode, folding), GroupNorm, InstanceNorm, Lp normalization and ONNX's
//! mean-variance normalization, with PyTorch's semantics, numerically robust
//! statistics (never `E[x²] - E[x]²`) and typed errors for every bad input.
//!
//! The crate has three layers, each built on the one below:
//!
//! - [`kernels`]: slice-based forward and backward kernels over `[rows, n]` and
//!   `[outer, channels, inner]` views, writing into caller-provided buffers (SIMD
//!   by run-time dispatch, rayon threads, results independent of the thread
//!   count);
//! - [`ops`]: the functional API on shaped tensors ([`Tensor`], [`TensorRef`]), like
//!   `torch.nn.functional`;
//! - [`modules`]: stateful layers ([`LayerNorm`], [`RmsNorm`], [`BatchNorm`],
//!   [`GroupNorm`], [`InstanceNorm`]) holding parameters and running statistics,
//!   saved and loaded under PyTorch's names ([`Stateful`]).
//!
//! Statistics are [`Moments`] (count, mean, M2), mergeable by Chan's formula;
//! `f32` data accumulates in `f64` (see [`Float::Acc`]).
//!
//! ```
//! use normkit::{LayerNorm, Tensor};
//!
//! // A batch of 2 tokens with 3 features each.
//! let x = Tensor::new(&[2, 3], vec![1.0f32, 2.0, 3.0, -4.0, 0.0, 4.0])?;
//! let ln = LayerNorm::<f32>::new(&[3])?;
//! let (y, saved) = ln.forward(x.view())?;
//! // Each row now has mean 0 and (biased) variance 1 (up to eps).
//! let row0: f32 = y.data()[..3].iter().sum();
//! assert!(row0.abs() < 1e-6);
//!
//! // Backward of L = Σ y · dy.
//! let dy = Tensor::new(&[2, 3], vec![0.1f32, -0.2, 0.3, 0.0, 1.0, 0.0])?;
//! let grads = ln.backward(dy.view(), x.view(), &saved)?;
//! assert_eq!(grads.dx.shape(), &[2, 3]);
//! assert!(grads.dweight.is_some() && grads.dbias.is_some());
//!
//! // Bad input is an error, never a panic.
//! let wrong = Tensor::new(&[2, 4], vec![0.0f32; 8])?;
//! assert!(ln.forward(wrong.view()).is_err());
//! # Ok::<(), normkit::Error>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod float;
pub mod kernels;
pub mod modules;
pub mod moments;
pub mod ops;
pub mod state;
pub mod tensor;

pub use error::{Error, Result};
pub use float::{AccFloat, Float};
pub use modules::{
    BatchNorm, BatchNormSaved, GroupNorm, GroupNormSaved, InstanceNorm, InstanceNormSaved, LayerNorm, LayerNormSaved,
    RmsNorm, RmsNormSaved,
};
pub use moments::Moments;
pub use state::{StateDict, StateTensor, Stateful};
pub use tensor::{Tensor, TensorRef};
