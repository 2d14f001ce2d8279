//! LayerNorm over rows of `n` values (Ba, Kiros & Hinton, 2016).

use super::{check_buf, check_eps, rows_of, write_param_grads, Affine, Grads};
use crate::error::Result;
use crate::float::{AccFloat, Float};
use crate::moments::Moments;
use num_traits::{Float as _, One as _, Zero as _};

/// LayerNorm forward over `x` viewed as `[rows, n]`:
///
/// ```text
/// mean = (1/n) Σ_j x_j
/// var  = (1/n) Σ_j (x_j - mean)²             (biased; by Moments, never E[x²]-E[x]²)
/// rstd = 1 / sqrt(var + eps)
/// y_j  = (x_j - mean) · rstd · weight_j + bias_j
/// ```
///
/// Writes `y` (`[rows, n]`) and the per-row `mean` and `rstd` (`[rows]`) that
/// [`layer_norm_backward`] needs. Statistics accumulate in `T::Acc`.
pub fn layer_norm_forward<T: Float>(
    x: &[T],
    n: usize,
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    affine.check(n)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("mean", mean.len(), rows)?;
    check_buf("rstd", rstd.len(), rows)?;
    let eps = check_eps::<T::Acc>(eps)?;

    let rows_out = x.chunks_exact(n).zip(y.chunks_exact_mut(n));
    for ((xr, yr), (m, r)) in rows_out.zip(mean.iter_mut().zip(rstd.iter_mut())) {
        let stats = Moments::from_slice(xr);
        let mu = stats.mean();
        let rs = (stats.var_biased() + eps).sqrt().recip();
        normalize_row(xr, yr, mu, rs, affine);
        *m = T::from_acc(mu);
        *r = T::from_acc(rs);
    }
    Ok(())
}

/// `y_j = (x_j - mean) · rstd · weight_j + bias_j` for one row.
fn normalize_row<T: Float>(x: &[T], y: &mut [T], mean: T::Acc, rstd: T::Acc, affine: Affine<'_, T>) {
    for (j, (yj, &xj)) in y.iter_mut().zip(x).enumerate() {
        let mut v = (xj.to_acc() - mean) * rstd;
        if let Some(w) = affine.weight {
            v = v * w[j].to_acc();
        }
        if let Some(b) = affine.bias {
            v = v + b[j].to_acc();
        }
        *yj = T::from_acc(v);
    }
}

/// LayerNorm backward: the gradients of `L = Σ y · dy` given the forward's saved
/// `mean` and `rstd`. With `x̂ = (x - mean) · rstd` and `g = dy · weight` per row:
///
/// ```text
/// dx_j      = rstd · (g_j - mean_k(g_k) - x̂_j · mean_k(g_k x̂_k))
/// dweight_j = Σ_rows dy_j · x̂_j
/// dbias_j   = Σ_rows dy_j
/// ```
///
/// One pass over each row of `(x, dy)` gathers the two means, a second pass over
/// the same (cached) row writes `dx` and the parameter-gradient terms, which
/// accumulate in `T::Acc` in row order (a deterministic reduction).
pub fn layer_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    n: usize,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    grads: Grads<'_, T>,
) -> Result<()> {
    let rows = rows_of("x", x.len(), n)?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("mean", mean.len(), rows)?;
    check_buf("rstd", rstd.len(), rows)?;
    super::check_param("weight", weight, n)?;
    check_buf("dx", grads.dx.len(), x.len())?;
    super::check_param("dweight", grads.dweight.as_deref(), n)?;
    super::check_param("dbias", grads.dbias.as_deref(), n)?;

    let zero = T::Acc::zero();
    let mut dweight = vec![zero; if grads.dweight.is_some() { n } else { 0 }];
    let mut dbias = vec![zero; if grads.dbias.is_some() { n } else { 0 }];
    let inv_n = T::Acc::from_count(n as u64).recip();

    let rows_iter = x.chunks_exact(n).zip(dy.chunks_exact(n)).zip(grads.dx.chunks_exact_mut(n));
    for (((xr, dyr), dxr), (&m, &r)) in rows_iter.zip(mean.iter().zip(rstd)) {
        let (m, r) = (m.to_acc(), r.to_acc());
        let xhat = |xj: T| (xj.to_acc() - m) * r;
        let g = |j: usize, dyj: T| super::param_at(weight, j, T::Acc::one()) * dyj.to_acc();

        // Pass 1: mean(g) and mean(g · x̂).
        let (mut sum_g, mut sum_gx) = (zero, zero);
        for (j, (&xj, &dyj)) in xr.iter().zip(dyr).enumerate() {
            let gj = g(j, dyj);
            sum_g = sum_g + gj;
            sum_gx = sum_gx + gj * xhat(xj);
        }
        let (mean_g, mean_gx) = (sum_g * inv_n, sum_gx * inv_n);

        // Pass 2: dx and the parameter-gradient terms.
        for (j, ((&xj, &dyj), dxj)) in xr.iter().zip(dyr).zip(dxr.iter_mut()).enumerate() {
            let xh = xhat(xj);
            *dxj = T::from_acc(r * (g(j, dyj) - mean_g - xh * mean_gx));
            if let Some(dw) = dweight.get_mut(j) {
                *dw = *dw + dyj.to_acc() * xh;
            }
            if let Some(db) = dbias.get_mut(j) {
                *db = *db + dyj.to_acc();
            }
        }
    }
    write_param_grads::<T>(&dweight, grads.dweight);
    write_param_grads::<T>(&dbias, grads.dbias);
    Ok(())
}
