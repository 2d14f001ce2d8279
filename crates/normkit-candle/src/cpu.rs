//! Glue between candle's CPU storage and normkit's slice kernels.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor, WithDType};

/// An element type that both normkit's kernels and candle's CPU backend handle:
/// `f32` and `f64`.
pub(crate) trait Elem: normkit::Float + WithDType {}
impl Elem for f32 {}
impl Elem for f64 {}

/// Whether normkit has a kernel for a tensor of this dtype on this device: CPU,
/// `f32` or `f64`. Everything else takes candle's composed (autograd) path.
pub(crate) fn has_kernel(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The contiguous elements of a CPU storage seen through `layout` (which may
/// start at an offset). A strided layout is refused: the public functions make
/// their inputs contiguous before applying an op, so this is a logic check.
pub(crate) fn contiguous<'a, T: WithDType>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("normkit {op}: the CPU kernel needs a contiguous input, got strides {:?}", layout.stride())
    };
    match data.get(start..end) {
        Some(s) => Ok(s),
        None => bail!("normkit {op}: layout {start}..{end} is outside a storage of {} elements", data.len()),
    }
}

/// A tensor's elements in row-major order (a copy).
pub(crate) fn to_vec<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// Converts normkit's error into candle's, keeping its message.
pub(crate) fn nk<T>(r: normkit::Result<T>) -> Result<T> {
    r.map_err(candle_core::Error::wrap)
}

/// Widens a slice of elements to `f64` (exact for `f32` and `f64`).
pub(crate) fn widen<T: normkit::Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Rounds `f64` values to elements (exact when they were widened from `T`).
pub(crate) fn narrow<T: normkit::Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}
