//! RMSNorm over the last dimension as a candle `CustomOp2` (x, weight) whose CPU
//! forward and backward are normkit's kernels.

use super::layer_norm::{affine_last, check_eps, check_float_input, check_param, internal_dtype, op_param, widened};
use crate::cpu::{contiguous, has_kernel, narrow, nk, to_vec, widen, Elem};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use normkit::kernels::{rms_norm_backward, rms_norm_forward};
use std::sync::Mutex;

/// `y = x · rstd · weight` over rows of `n`; one instance per application.
struct RmsNormOp {
    n: usize,
    eps: f64,
    has_weight: bool,
    /// The forward's per-row rstd, widened to `f64` (exact).
    rstd: Mutex<Option<Vec<f64>>>,
}

impl RmsNormOp {
    fn fwd<T: Elem>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>("rms_norm", s1, l1)?;
        let weight = if self.has_weight { Some(contiguous::<T>("rms_norm", s2, l2)?) } else { None };
        if self.n == 0 {
            bail!("normkit rms_norm: the normalized dimension of shape {:?} is empty", l1.dims())
        }
        let mut y = vec![T::default(); x.len()];
        let mut rstd = vec![T::default(); x.len() / self.n];
        nk(rms_norm_forward(x, self.n, weight, self.eps, &mut y, &mut rstd))?;
        match self.rstd.lock() {
            Ok(mut slot) => *slot = Some(widen(&rstd)),
            Err(_) => bail!("normkit rms_norm: the statistics slot is poisoned"),
        }
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }

    fn bwd_t<T: Elem>(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rstd = match self.rstd.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => bail!("normkit rms_norm: the statistics slot is poisoned"),
        };
        let Some(rstd) = rstd else { bail!("normkit rms_norm: backward called before forward") };
        let xv = to_vec::<T>(x)?;
        let dyv = to_vec::<T>(dy)?;
        let wv = if self.has_weight { Some(to_vec::<T>(w)?) } else { None };
        let mut dx = vec![T::default(); xv.len()];
        let mut dw = if self.has_weight { Some(vec![T::default(); self.n]) } else { None };
        nk(rms_norm_backward(&dyv, &xv, self.n, &narrow::<T>(&rstd), wv.as_deref(), &mut dx, dw.as_deref_mut()))?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = dw.map(|v| Tensor::from_vec(v, w.shape(), x.device())).transpose()?;
        Ok((Some(dx), dw))
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "normkit-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.fwd::<f32>(s1, l1, s2, l2),
            DType::F64 => self.fwd::<f64>(s1, l1, s2, l2),
            d => bail!("normkit rms_norm: no CPU kernel for dtype {d:?}"),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, dy),
            DType::F64 => self.bwd_t::<f64>(x, w, dy),
            d => bail!("normkit rms_norm: no CPU kernel for dtype {d:?}"),
        }
    }
}

/// RMSNorm over the last dimension of `x`, differentiable:
///
/// ```text
/// y_j = x_j / sqrt((1/n) Σ_k x_k² + eps) · weight_j
/// ```
///
/// `weight`, when given, has shape `[n]`. On the CPU with `f32`/`f64` forward and
/// backward are normkit's kernels; elsewhere [`rms_norm_composed`]. Unlike
/// `candle_nn::ops::rms_norm`, the gradient is never cut.
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let n = check_rms_norm(x, weight, eps)?;
    if !has_kernel(x) {
        return rms_norm_composed(x, weight, eps);
    }
    let x = x.contiguous()?;
    let w = op_param(weight, &x)?;
    let op = RmsNormOp { n, eps, has_weight: weight.is_some(), rstd: Mutex::new(None) };
    x.apply_op2(&w, op)
}

/// Checks RMSNorm's arguments and returns `n`, the last dimension.
fn check_rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<usize> {
    check_float_input("rms_norm", x)?;
    let n = x.dim(D::Minus1)?;
    check_param("rms_norm", "weight", weight, n, x)?;
    check_eps("rms_norm", eps)?;
    Ok(n)
}

/// RMSNorm over the last dimension composed of candle tensor ops (fallback path
/// and test reference); half-precision inputs compute in `f32`, the weight
/// included, rounded once at the end (as [`super::layer_norm_composed`]).
pub fn rms_norm_composed(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    check_rms_norm(x, weight, eps)?;
    let f = internal_dtype(x.dtype());
    let xf = x.to_dtype(f)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    affine_last(y, widened(weight, f)?.as_ref(), None)?.to_dtype(x.dtype())
}
