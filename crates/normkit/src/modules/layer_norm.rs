use crate::error::Result;
use crate::float::Float;
use crate::ops::{self, NormGrads};
use crate::tensor::{numel, Tensor, TensorRef};

/// `torch.nn.LayerNorm`: normalizes over the trailing `normalized_shape` dims,
/// then applies the optional elementwise affine transform.
///
/// ```text
/// y = (x - mean) / sqrt(var + eps) · weight + bias      (mean, biased var over the trailing dims)
/// ```
///
/// ```
/// use normkit::{LayerNorm, Tensor};
/// let ln = LayerNorm::<f64>::new(&[4])?.eps(1e-6);
/// let x = Tensor::new(&[2, 4], vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 8.0])?;
/// let (y, saved) = ln.forward(x.view())?;
/// let dy = Tensor::full(&[2, 4], 1.0)?;
/// let grads = ln.backward(dy.view(), x.view(), &saved)?;
/// assert_eq!(grads.dbias.unwrap().data(), &[2.0; 4]);
/// # Ok::<(), normkit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm<T> {
    normalized_shape: Vec<usize>,
    eps: f64,
    /// Elementwise scale, shape `normalized_shape`; `None` without affine.
    pub weight: Option<Tensor<T>>,
    /// Elementwise shift, shape `normalized_shape`; `None` without affine or bias.
    pub bias: Option<Tensor<T>>,
}

/// What [`LayerNorm::forward`] saves for [`LayerNorm::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormSaved<T> {
    /// Per-row mean.
    pub mean: Tensor<T>,
    /// Per-row `1 / sqrt(var + eps)`.
    pub rstd: Tensor<T>,
}

impl<T: Float> LayerNorm<T> {
    /// A LayerNorm with PyTorch's defaults: `eps = 1e-5`, weight (ones) and bias
    /// (zeros). Errors if `normalized_shape` is empty or has no elements.
    pub fn new(normalized_shape: &[usize]) -> Result<Self> {
        let n = numel(normalized_shape)?;
        if normalized_shape.is_empty() || n == 0 {
            return Err(crate::Error::Empty { what: "normalized_shape".into(), shape: normalized_shape.to_vec() });
        }
        let module = LayerNorm { normalized_shape: normalized_shape.to_vec(), eps: 1e-5, weight: None, bias: None };
        Ok(module.with_params(true, true))
    }

    /// Sets `eps`, the value added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// With `false`, no weight and no bias (`elementwise_affine=False`); with
    /// `true`, a weight of ones and, unless [`LayerNorm::bias`] turned it off, a
    /// bias of zeros.
    pub fn elementwise_affine(self, affine: bool) -> Self {
        let bias = self.bias.is_some() || self.weight.is_none();
        self.with_params(affine, bias)
    }

    /// With `false`, no bias (`bias=False`); with `true`, a bias of zeros when the
    /// module is affine.
    pub fn bias(self, bias: bool) -> Self {
        let affine = self.weight.is_some();
        self.with_params(affine, bias)
    }

    /// Resets the parameters to PyTorch's initial values for these flags.
    fn with_params(mut self, affine: bool, bias: bool) -> Self {
        let n = self.normalized_shape.iter().product();
        let fill = |v: f64| Tensor::from_parts(self.normalized_shape.clone(), vec![T::from_f64(v); n]);
        self.weight = affine.then(|| fill(1.0));
        self.bias = (affine && bias).then(|| fill(0.0));
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
    /// Returns `y` and the statistics that [`LayerNorm::backward`] needs.
    pub fn forward(&self, x: TensorRef<'_, T>) -> Result<(Tensor<T>, LayerNormSaved<T>)> {
        let out = ops::layer_norm(
            x,
            &self.normalized_shape,
            self.weight.as_ref().map(Tensor::view),
            self.bias.as_ref().map(Tensor::view),
            self.eps,
        )?;
        Ok((out.y, LayerNormSaved { mean: out.mean, rstd: out.rstd }))
    }

    /// Gradients of `Σ y · dy` for the forward call that took `x` and returned `saved`.
    pub fn backward(
        &self,
        dy: TensorRef<'_, T>,
        x: TensorRef<'_, T>,
        saved: &LayerNormSaved<T>,
    ) -> Result<NormGrads<T>> {
        ops::layer_norm_backward(
            dy,
            x,
            &self.normalized_shape,
            (saved.mean.view(), saved.rstd.view()),
            self.weight.as_ref().map(Tensor::view),
            self.bias.is_some(),
        )
    }
}
