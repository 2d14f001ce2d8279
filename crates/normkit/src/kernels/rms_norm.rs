//! RMSNorm over rows of `n` values (Zhang & Sennrich, 2019).

use super::{check_buf, check_eps, rows_of, write_param_grads};
use crate::error::Result;
use crate::float::{AccFloat, Float};
use num_traits::{Float as _, One as _, Zero as _};

/// RMSNorm forward over `x` viewed as `[rows, n]`:
///
/// ```text
/// rstd = 1 / sqrt((1/n) Σ_j x_j² + eps)
/// y_j  = x_j · rstd · weight_j
/// ```
///
/// Writes `y` (`[rows, n]`) and the per-row `rstd` (`[rows]`). The mean square is a
/// sum of non-negative terms in `T::Acc`, well conditioned without centring; for
/// `f32` data the `f64` sum cannot overflow (PyTorch's `f32` sum does above ~1e19).
pub fn rms_norm_forward<T: Float>(
    x: &[T],
    n: usize,
    weight: Option<&[T]>,
    eps: f64,
    y: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    super::check_param("weight", weight, n)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("rstd", rstd.len(), rows)?;
    let eps = check_eps::<T::Acc>(eps)?;
    let inv_n = T::Acc::from_count(n as u64).recip();

    for ((xr, yr), r) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).zip(rstd.iter_mut()) {
        let sum_sq = xr.iter().fold(T::Acc::zero(), |s, &xj| s + xj.to_acc() * xj.to_acc());
        let rs = (sum_sq * inv_n + eps).sqrt().recip();
        for (j, (yj, &xj)) in yr.iter_mut().zip(xr).enumerate() {
            *yj = T::from_acc(xj.to_acc() * rs * super::param_at(weight, j, T::Acc::one()));
        }
        *r = T::from_acc(rs);
    }
    Ok(())
}

/// RMSNorm backward: the gradients of `L = Σ y · dy` given the forward's saved
/// `rstd`. With `x̂ = x · rstd` and `g = dy · weight` per row:
///
/// ```text
/// dx_j      = rstd · (g_j - x̂_j · mean_k(g_k x̂_k))
/// dweight_j = Σ_rows dy_j · x̂_j
/// ```
///
/// Two passes over each (cached) row, the parameter gradient reduced in row order.
pub fn rms_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    n: usize,
    rstd: &[T],
    weight: Option<&[T]>,
    dx: &mut [T],
    dweight: Option<&mut [T]>,
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("rstd", rstd.len(), rows)?;
    super::check_param("weight", weight, n)?;
    check_buf("dx", dx.len(), x.len())?;
    super::check_param("dweight", dweight.as_deref(), n)?;

    let zero = T::Acc::zero();
    let mut dw_acc = vec![zero; if dweight.is_some() { n } else { 0 }];
    let inv_n = T::Acc::from_count(n as u64).recip();

    let rows_iter = x.chunks_exact(n).zip(dy.chunks_exact(n)).zip(dx.chunks_exact_mut(n));
    for (((xr, dyr), dxr), &r) in rows_iter.zip(rstd) {
        let r = r.to_acc();
        let g = |j: usize, dyj: T| super::param_at(weight, j, T::Acc::one()) * dyj.to_acc();

        let mut sum_gx = zero;
        for (j, (&xj, &dyj)) in xr.iter().zip(dyr).enumerate() {
            sum_gx = sum_gx + g(j, dyj) * xj.to_acc() * r;
        }
        let mean_gx = sum_gx * inv_n;

        for (j, ((&xj, &dyj), dxj)) in xr.iter().zip(dyr).zip(dxr.iter_mut()).enumerate() {
            let xh = xj.to_acc() * r;
            *dxj = T::from_acc(r * (g(j, dyj) - xh * mean_gx));
            if let Some(dw) = dw_acc.get_mut(j) {
                *dw = *dw + dyj.to_acc() * xh;
            }
        }
    }
    write_param_grads::<T>(&dw_acc, dweight);
    Ok(())
}
