use crate::error::Result;
use crate::float::Float;
use crate::ops::{self, NormGrads};
use crate::tensor::{numel, Tensor, TensorRef};

/// `torch.nn.RMSNorm`: scales the trailing `normalized_shape` dims by their root
/// mean square, then by the optional elementwise weight.
///
/// ```text
/// y = x / sqrt(mean(x²) + eps) · weight
/// ```
///
/// `eps` defaults, as in PyTorch, to the machine epsilon of `T`.
///
/// ```
/// use normkit::{RmsNorm, Tensor};
/// let rms = RmsNorm::<f32>::new(&[2])?;
/// let x = Tensor::new(&[1, 2], vec![3.0f32, 4.0])?;
/// let (y, _saved) = rms.forward(x.view())?;
/// assert!((y.data()[1] - 4.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), normkit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm<T> {
    normalized_shape: Vec<usize>,
    eps: f64,
    /// Elementwise scale, shape `normalized_shape`; `None` without affine.
    pub weight: Option<Tensor<T>>,
}

/// What [`RmsNorm::forward`] saves for [`RmsNorm::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNormSaved<T> {
    /// Per-row `1 / sqrt(mean(x²) + eps)`.
    pub rstd: Tensor<T>,
}

impl<T: Float> RmsNorm<T> {
    /// An RMSNorm with PyTorch's defaults: `eps` = machine epsilon of `T`, weight
    /// (ones). Errors if `normalized_shape` is empty or has no elements.
    pub fn new(normalized_shape: &[usize]) -> Result<Self> {
        let n = numel(normalized_shape)?;
        if normalized_shape.is_empty() || n == 0 {
            return Err(crate::Error::Empty { what: "normalized_shape".into(), shape: normalized_shape.to_vec() });
        }
        Ok(RmsNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps: T::EPSILON,
            weight: Some(Tensor::full(normalized_shape, T::from_f64(1.0))?),
        })
    }

    /// Sets `eps`, the value added to the mean square.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// With `false`, no weight (`elementwise_affine=False`).
    pub fn elementwise_affine(mut self, affine: bool) -> Self {
        if !affine {
            self.weight = None;
        } else if self.weight.is_none() {
            let n = self.normalized_shape.iter().product();
            self.weight = Some(Tensor::from_parts(self.normalized_shape.clone(), vec![T::from_f64(1.0); n]));
        }
        self
    }

    /// The normalized (trailing) dims.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The `eps` in use.
    pub fn eps_value(&self) -> f64 {
        self.eps
    }

    /// Normalizes `x`, whose trailing dims must equal `normalized_shape`.
    pub fn forward(&self, x: TensorRef<'_, T>) -> Result<(Tensor<T>, RmsNormSaved<T>)> {
        let out = ops::rms_norm(x, &self.normalized_shape, self.weight.as_ref().map(Tensor::view), self.eps)?;
        Ok((out.y, RmsNormSaved { rstd: out.rstd }))
    }

    /// Gradients of `Σ y · dy` for the forward call that took `x` and returned `saved`.
    pub fn backward(&self, dy: TensorRef<'_, T>, x: TensorRef<'_, T>, saved: &RmsNormSaved<T>) -> Result<NormGrads<T>> {
        ops::rms_norm_backward(dy, x, &self.normalized_shape, saved.rstd.view(), self.weight.as_ref().map(Tensor::view))
    }
}
