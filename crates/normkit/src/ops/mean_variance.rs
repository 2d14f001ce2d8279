//! Mean-variance normalization over any set of axes (ONNX
//! `MeanVarianceNormalization`).
//!
//! The reduced axes need not be trailing or contiguous, so the input is first
//! permuted to `(kept axes..., reduced axes...)`: each group of values sharing
//! the kept coordinates becomes one contiguous row, which the LayerNorm kernels
//! normalize (no affine). The result is permuted back.

use super::check_same_shape;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::{self, Affine, Grads};
use crate::tensor::{Tensor, TensorRef};

/// The permutation `(kept..., reduced...)` of the axes of a rank-`rank` input and
/// the number of values per group; an error for an axis out of range, a repeated
/// axis, or no axis.
fn mvn_permutation(shape: &[usize], axes: &[isize]) -> Result<(Vec<usize>, usize)> {
    if axes.is_empty() {
        return Err(Error::invalid("axes", "mean-variance normalization needs at least one axis"));
    }
    let mut reduced = Vec::with_capacity(axes.len());
    for &a in axes {
        let r = super::resolve_axis(a, shape.len())?;
        if reduced.contains(&r) {
            return Err(Error::invalid("axes", format!("{axes:?} names axis {r} twice")));
        }
        reduced.push(r);
    }
    reduced.sort_unstable();
    let mut perm: Vec<usize> = (0..shape.len()).filter(|a| !reduced.contains(a)).collect();
    // Saturating: with a kept dim of 0 the product may exceed usize, and then
    // there is nothing to normalize (the callers return early on empty data).
    let n = reduced.iter().fold(1usize, |acc, &a| acc.saturating_mul(shape[a]));
    perm.extend(reduced);
    Ok((perm, n))
}

/// `out[j] = data[offset of the j-th index of the permuted shape]`: the data of
/// `shape` with its axes reordered as `perm` (row-major both sides).
fn permute<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) || data.is_empty() {
        return data.to_vec();
    }
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let pshape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let pstrides: Vec<usize> = perm.iter().map(|&a| strides[a]).collect();
    let mut idx = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(data.len());
    let mut offset = 0usize;
    for _ in 0..data.len() {
        out.push(data[offset]);
        // Odometer increment over the permuted shape, tracking the source offset.
        for d in (0..pshape.len()).rev() {
            idx[d] += 1;
            offset += pstrides[d];
            if idx[d] < pshape[d] {
                break;
            }
            offset -= pstrides[d] * pshape[d];
            idx[d] = 0;
        }
    }
    out
}

/// The inverse of `perm`.
fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// ONNX `MeanVarianceNormalization`: normalizes `x` over `axes` (negative axes
/// count from the end), each group of values sharing the other coordinates on its
/// own, with the biased variance:
///
/// ```text
/// y = (x - mean) / sqrt(var + eps)
/// ```
///
/// (ONNX's default is `axes = [0, 2, 3]`, `eps = 1e-9`.) An empty input gives an
/// empty output.
pub fn mean_variance_normalization<T: Float>(x: TensorRef<'_, T>, axes: &[isize], eps: f64) -> Result<Tensor<T>> {
    let (perm, n) = mvn_permutation(x.shape(), axes)?;
    kernels::check_eps::<f64>(eps)?;
    if x.data().is_empty() {
        return Ok(Tensor::from_parts(x.shape().to_vec(), vec![]));
    }
    let xp = permute(x.data(), x.shape(), &perm);
    let rows = xp.len() / n;
    let mut yp = vec![T::default(); xp.len()];
    let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
    kernels::layer_norm_forward(&xp, n, Affine::none(), eps, &mut yp, &mut mean, &mut rstd)?;
    let pshape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
    Ok(Tensor::from_parts(x.shape().to_vec(), permute(&yp, &pshape, &inverse(&perm))))
}

/// Backward of [`mean_variance_normalization`]: the gradient of `Σ y · dy` with
/// respect to `x` (LayerNorm's, per group, without affine):
///
/// ```text
/// dx = rstd · (dy - mean_group(dy) - x̂ · mean_group(dy · x̂))
/// ```
pub fn mean_variance_normalization_backward<T: Float>(
    dy: TensorRef<'_, T>,
    x: TensorRef<'_, T>,
    axes: &[isize],
    eps: f64,
) -> Result<Tensor<T>> {
    let (perm, n) = mvn_permutation(x.shape(), axes)?;
    check_same_shape("dy", dy, x)?;
    kernels::check_eps::<f64>(eps)?;
    if x.data().is_empty() {
        return Ok(Tensor::from_parts(x.shape().to_vec(), vec![]));
    }
    let (xp, dyp) = (permute(x.data(), x.shape(), &perm), permute(dy.data(), x.shape(), &perm));
    let rows = xp.len() / n;
    let mut yp = vec![T::default(); xp.len()];
    let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
    kernels::layer_norm_forward(&xp, n, Affine::none(), eps, &mut yp, &mut mean, &mut rstd)?;
    let mut dxp = vec![T::default(); xp.len()];
    let grads = Grads { dx: &mut dxp, dweight: None, dbias: None };
    kernels::layer_norm_backward(&dyp, &xp, n, &mean, &rstd, None, grads)?;
    let pshape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
    Ok(Tensor::from_parts(x.shape().to_vec(), permute(&dxp, &pshape, &inverse(&perm))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_and_back() {
        let shape = [2usize, 3, 4];
        let data: Vec<usize> = (0..24).collect();
        let perm = [1usize, 2, 0];
        let p = permute(&data, &shape, &perm);
        // p has shape [3, 4, 2]; p[c, k, a] = data[a, c, k].
        assert_eq!(p[0..4], [0, 12, 1, 13]);
        assert_eq!(p[8], 4);
        let back = permute(&p, &[3, 4, 2], &inverse(&perm));
        assert_eq!(back, data);
    }
}
