//! The functional API: normalization ops on shaped tensors, in the spirit of
//! `torch.nn.functional`. Each op checks shapes, allocates its outputs and calls a
//! kernel from [`crate::kernels`].
//!
//! ```
//! use normkit::{ops, Tensor};
//! let x = Tensor::new(&[2, 3], vec![1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0])?;
//! let out = ops::layer_norm(x.view(), &[3], None, None, 1e-5)?;
//! assert_eq!(out.y.shape(), &[2, 3]);
//! assert!((out.y.data()[0] + 1.2247).abs() < 1e-3);
//! assert_eq!(out.mean.data(), &[2.0, 20.0]);
//! # Ok::<(), normkit::Error>(())
//! ```

mod batch_norm;
mod buffer;
mod group_norm;
mod layer_norm;
mod lp_normalize;
mod mean_variance;
mod rms_norm;

pub use batch_norm::{
    batch_norm_backward, batch_norm_backward_into, batch_norm_eval, batch_norm_eval_backward, batch_norm_eval_into,
    batch_norm_fixed_backward, batch_norm_fixed_backward_into, batch_norm_folded, batch_norm_folded_into,
    batch_norm_layout, batch_norm_train, batch_norm_train_into, batch_norm_update_running, resolve_axis,
    BatchNormOutMut, BatchNormOutput,
};
pub(crate) use buffer::recycle as recycle_buffer;
pub use buffer::{release_output_cache, zeroed_buffer};
pub use group_norm::{
    group_layout, group_norm, group_norm_backward, group_norm_backward_into, group_norm_into, instance_norm,
    instance_norm_backward, instance_norm_backward_into, instance_norm_into, instance_norm_update_running,
    GroupNormOutput,
};
pub use layer_norm::{
    layer_norm, layer_norm_backward, layer_norm_backward_into, layer_norm_into, LayerNormOutMut, LayerNormOutput,
};
pub use lp_normalize::{lp_normalize, lp_normalize_backward};
pub use mean_variance::{mean_variance_normalization, mean_variance_normalization_backward};
pub use rms_norm::{
    default_rms_eps, rms_norm, rms_norm_backward, rms_norm_backward_into, rms_norm_into, RmsNormOutput,
};

use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor, TensorRef};

/// Gradients from a backward pass. `dweight`/`dbias` are `Some` exactly when the
/// forward had that parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct NormGrads<T> {
    /// Gradient with respect to the input, shape of the input.
    pub dx: Tensor<T>,
    /// Gradient with respect to the weight, shape of the weight.
    pub dweight: Option<Tensor<T>>,
    /// Gradient with respect to the bias, shape of the bias.
    pub dbias: Option<Tensor<T>>,
}

/// Splits `input` into (leading dims, normalized size) for a `normalized_shape`
/// that must equal its trailing dims, as `torch.nn.functional.layer_norm` requires.
pub fn split_normalized_shape<'a>(input: &'a [usize], normalized_shape: &[usize]) -> Result<(&'a [usize], usize)> {
    let bad = || Error::NormalizedShape { normalized_shape: normalized_shape.to_vec(), input: input.to_vec() };
    if normalized_shape.is_empty() || normalized_shape.len() > input.len() {
        return Err(bad());
    }
    let (lead, tail) = input.split_at(input.len() - normalized_shape.len());
    if tail != normalized_shape {
        return Err(bad());
    }
    let n = numel(normalized_shape)?;
    if n == 0 {
        return Err(Error::Empty { what: "normalized_shape".into(), shape: normalized_shape.to_vec() });
    }
    Ok((lead, n))
}

pub(crate) fn check_param_shape<T>(name: &str, p: Option<TensorRef<'_, T>>, shape: &[usize]) -> Result<()> {
    match p {
        Some(p) if p.shape() != shape => Err(Error::shape(name, shape, p.shape())),
        _ => Ok(()),
    }
}

pub(crate) fn check_same_shape<T>(what: &str, a: TensorRef<'_, T>, x: TensorRef<'_, T>) -> Result<()> {
    if a.shape() != x.shape() {
        return Err(Error::shape(what, x.shape(), a.shape()));
    }
    Ok(())
}
