//! LayerNorm over the last dimension as a candle `CustomOp3` (x, weight, bias)
//! whose CPU forward and backward are normkit's kernels.

use crate::cpu::{contiguous, has_kernel, narrow, nk, to_vec, widen, Elem};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use normkit::kernels::{layer_norm_backward, layer_norm_forward, Affine, Grads};
use std::sync::{Arc, Mutex};

/// What the forward saves for the backward: per-row mean and rstd, widened to
/// `f64` (exact), and, when asked for, the biased variance of each row.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowStats {
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
    /// `(1/n) Σ (x - mean)²` per row, filled only when the op was built with
    /// `keep_var` (BatchNorm needs it for its running variance).
    pub var: Vec<f64>,
}

/// Shared slot for the statistics of one application of the op.
pub(crate) type StatsSlot = Arc<Mutex<Option<RowStats>>>;

/// `y = (x - mean) · rstd · weight + bias` over rows of `n` (see
/// [`normkit::kernels::layer_norm_forward`]); one instance per application, so
/// that its saved statistics belong to that forward alone.
pub(crate) struct LayerNormOp {
    pub n: usize,
    pub eps: f64,
    pub has_weight: bool,
    pub has_bias: bool,
    pub keep_var: bool,
    pub saved: StatsSlot,
}

impl LayerNormOp {
    fn fwd<T: Elem>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>("layer_norm", s1, l1)?;
        let weight = if self.has_weight { Some(contiguous::<T>("layer_norm", s2, l2)?) } else { None };
        let bias = if self.has_bias { Some(contiguous::<T>("layer_norm", s3, l3)?) } else { None };
        if self.n == 0 {
            bail!("normkit layer_norm: the normalized dimension of shape {:?} is empty", l1.dims())
        }
        let rows = x.len() / self.n;
        let mut y = vec![T::default(); x.len()];
        let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
        nk(layer_norm_forward(x, self.n, Affine { weight, bias }, self.eps, &mut y, &mut mean, &mut rstd))?;
        let var = if self.keep_var {
            x.chunks_exact(self.n)
                .map(|r| normkit::Float::to_f64(T::from_acc(normkit::Moments::from_slice(r).var_biased())))
                .collect()
        } else {
            Vec::new()
        };
        let stats = RowStats { mean: widen(&mean), rstd: widen(&rstd), var };
        match self.saved.lock() {
            Ok(mut slot) => *slot = Some(stats),
            Err(_) => bail!("normkit layer_norm: the statistics slot is poisoned"),
        }
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }

    fn bwd_t<T: Elem>(&self, x: &Tensor, w: &Tensor, b: &Tensor, dy: &Tensor) -> Result<Grad3> {
        let stats = match self.saved.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => bail!("normkit layer_norm: the statistics slot is poisoned"),
        };
        let Some(stats) = stats else { bail!("normkit layer_norm: backward called before forward") };
        let xv = to_vec::<T>(x)?;
        let dyv = to_vec::<T>(dy)?;
        let wv = if self.has_weight { Some(to_vec::<T>(w)?) } else { None };
        let mut dx = vec![T::default(); xv.len()];
        let mut dw = if self.has_weight { Some(vec![T::default(); self.n]) } else { None };
        let mut db = if self.has_bias { Some(vec![T::default(); self.n]) } else { None };
        let grads = Grads { dx: &mut dx, dweight: dw.as_deref_mut(), dbias: db.as_deref_mut() };
        let (mean, rstd) = (narrow::<T>(&stats.mean), narrow::<T>(&stats.rstd));
        nk(layer_norm_backward(&dyv, &xv, self.n, &mean, &rstd, wv.as_deref(), grads))?;
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        let dw = dw.map(|v| Tensor::from_vec(v, w.shape(), dev)).transpose()?;
        let db = db.map(|v| Tensor::from_vec(v, b.shape(), dev)).transpose()?;
        Ok((Some(dx), dw, db))
    }
}

/// The gradients a `CustomOp3`'s backward returns, one per argument.
pub(crate) type Grad3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// An optional parameter as a custom op's argument: contiguous, or, when
/// absent, a 1-element placeholder of `x`'s dtype that the op ignores (a
/// constant, so no gradient flows to it).
pub(crate) fn op_param(p: Option<&Tensor>, x: &Tensor) -> Result<Tensor> {
    match p {
        Some(p) => p.contiguous(),
        None => Tensor::zeros(1, x.dtype(), x.device()),
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "normkit-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.fwd::<f32>(s1, l1, s2, l2, s3, l3),
            DType::F64 => self.fwd::<f64>(s1, l1, s2, l2, s3, l3),
            d => bail!("normkit layer_norm: no CPU kernel for dtype {d:?}"),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Grad3> {
        match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, b, dy),
            DType::F64 => self.bwd_t::<f64>(x, w, b, dy),
            d => bail!("normkit layer_norm: no CPU kernel for dtype {d:?}"),
        }
    }
}

/// Checks an optional per-feature parameter against `[n]` and the input's dtype.
pub(crate) fn check_param(op: &str, name: &str, p: Option<&Tensor>, n: usize, x: &Tensor) -> Result<()> {
    if let Some(p) = p {
        if p.dims() != [n] {
            bail!("normkit {op}: {name} has shape {:?}, expected [{n}] for input shape {:?}", p.dims(), x.dims())
        }
        if p.dtype() != x.dtype() {
            bail!("normkit {op}: {name} has dtype {:?} but the input has {:?}", p.dtype(), x.dtype())
        }
    }
    Ok(())
}

/// Applies the kernel op to `x` with rows of its last dimension; returns the
/// output and the slot the forward filled with its row statistics.
pub(crate) fn apply_layer_norm_op(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    keep_var: bool,
) -> Result<(Tensor, StatsSlot)> {
    let n = x.dim(D::Minus1)?;
    let x = x.contiguous()?;
    let (w, b) = (op_param(weight, &x)?, op_param(bias, &x)?);
    let saved = StatsSlot::default();
    let op =
        LayerNormOp { n, eps, has_weight: weight.is_some(), has_bias: bias.is_some(), keep_var, saved: saved.clone() };
    Ok((x.apply_op3(&w, &b, op)?, saved))
}

/// LayerNorm over the last dimension of `x`, differentiable:
///
/// ```text
/// mean = (1/n) Σ_j x_j,   var = (1/n) Σ_j (x_j - mean)²
/// y_j  = (x_j - mean) / sqrt(var + eps) · weight_j + bias_j
/// ```
///
/// `weight` and `bias`, when given, have shape `[n]` (`n` = the last dimension).
/// On the CPU with `f32`/`f64` the forward and the backward (for `x`, `weight` and
/// `bias`) are normkit's fused kernels; on any other device or dtype it is
/// [`layer_norm_composed`], whose backward is candle's autograd. Unlike
/// `candle_nn::ops::layer_norm`, the gradient is never cut.
pub fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    check_layer_norm(x, weight, bias, eps)?;
    if has_kernel(x) {
        Ok(apply_layer_norm_op(x, weight, bias, eps, false)?.0)
    } else {
        layer_norm_composed(x, weight, bias, eps)
    }
}

/// Checks LayerNorm's arguments: a floating-point input, parameters of
/// `[n]` in its dtype, a finite `eps` that is not negative.
fn check_layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<()> {
    check_float_input("layer_norm", x)?;
    let n = x.dim(D::Minus1)?;
    check_param("layer_norm", "weight", weight, n, x)?;
    check_param("layer_norm", "bias", bias, n, x)?;
    check_eps("layer_norm", eps)
}

/// LayerNorm over the last dimension composed of candle tensor ops (the fallback
/// path, and the reference the kernel path is tested against). Half-precision
/// inputs compute in `f32`, the affine part included (so that the sums of
/// `weight`'s and `bias`'s gradients run in `f32` too), rounded once at the end.
pub fn layer_norm_composed(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    check_layer_norm(x, weight, bias, eps)?;
    let f = internal_dtype(x.dtype());
    let y = standardize_last(&x.to_dtype(f)?, eps)?;
    affine_last(y, widened(weight, f)?.as_ref(), widened(bias, f)?.as_ref())?.to_dtype(x.dtype())
}

/// `(x - mean) / sqrt(var + eps)` over the last dimension, in `x`'s dtype.
pub(crate) fn standardize_last(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// An optional parameter converted to `dtype` (differentiably).
pub(crate) fn widened(p: Option<&Tensor>, dtype: DType) -> Result<Option<Tensor>> {
    p.map(|p| p.to_dtype(dtype)).transpose()
}

/// Refuses an input whose dtype is not one of candle's floating-point types
/// that its ops compute on (candle panics on `sqrt` of integers).
pub(crate) fn check_float_input(op: &str, x: &Tensor) -> Result<()> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        d => bail!("normkit {op}: input has dtype {d:?}; normalization needs f16, bf16, f32 or f64"),
    }
}

/// Refuses an `eps` that is negative or not finite.
pub(crate) fn check_eps(op: &str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("normkit {op}: eps {eps} must be finite and not negative")
    }
    Ok(())
}

/// `y · weight + bias` with both broadcast along the last dimension.
pub(crate) fn affine_last(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = match weight {
        Some(w) => y.broadcast_mul(w)?,
        None => y,
    };
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The dtype statistics are computed in on the composed path.
pub(crate) fn internal_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}
