//! [`StateDict`]s as safetensors files (feature `safetensors`).
//!
//! The format: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the little-endian data. Float
//! tensors are written in the module's element type (`F32` for `f32`, `F64` for
//! `f64`), counters as `I64`, exactly as `safetensors.torch.save_file` writes a
//! PyTorch `state_dict()`.

use super::{StateDict, StateTensor};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::tensor::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

fn file_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// The safetensors dtype of `T`'s elements.
fn float_dtype<T: Float>() -> Result<Dtype> {
    match T::NAME {
        "f32" => Ok(Dtype::F32),
        "f64" => Ok(Dtype::F64),
        other => Err(Error::invalid("dtype", format!("{other} has no safetensors encoding in normkit"))),
    }
}

/// The little-endian bytes of one tensor.
fn encode<T: Float>(tensor: &StateTensor<T>, dtype: Dtype) -> Vec<u8> {
    match tensor {
        StateTensor::Float(t) if dtype == Dtype::F32 => {
            t.data().iter().flat_map(|v| (v.to_f64() as f32).to_le_bytes()).collect()
        }
        StateTensor::Float(t) => t.data().iter().flat_map(|v| v.to_f64().to_le_bytes()).collect(),
        StateTensor::I64(t) => t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `state` to a safetensors file at `path`, with metadata `format: pt`
/// as PyTorch writes it: first to a temporary file in the same directory, then
/// renamed over `path`, so that a failed write leaves no partial file.
pub fn write_safetensors<T: Float, P: AsRef<Path>>(path: P, state: &StateDict<T>) -> Result<()> {
    let path = path.as_ref();
    let fdtype = float_dtype::<T>()?;
    let mut encoded = Vec::with_capacity(state.len());
    for (name, tensor) in state.iter() {
        let dtype = if matches!(tensor, StateTensor::I64(_)) { Dtype::I64 } else { fdtype };
        encoded.push((name.to_owned(), dtype, tensor.shape().to_vec(), encode(tensor, dtype)));
    }
    let mut views = Vec::with_capacity(encoded.len());
    for (name, dtype, shape, bytes) in &encoded {
        let view =
            TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| file_error(path, format!("{name}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| file_error(path, e))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it to
/// `path`; the temporary file is removed if anything fails.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| file_error(path, "is not a file path"))?;
    // Unique per process and call, so concurrent saves never share a temporary file.
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let n = SAVES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{}.tmp{}-{n}", name.to_string_lossy(), std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_error(path, format!("cannot write: {e}"))
    })
}

/// Reads the tensors whose names start with `prefix` (all with `""`) from a
/// safetensors file, such as one PyTorch wrote with `safetensors.torch.save_file`.
/// Float tensors must have `T`'s dtype (`F32` for `f32`) and integer tensors
/// `I64`; tensors outside `prefix` are not decoded. The result's
/// [`origin`](StateDict::origin) is the path, so later errors name the file.
pub fn read_safetensors<T: Float, P: AsRef<Path>>(path: P, prefix: &str) -> Result<StateDict<T>> {
    let path = path.as_ref();
    let fdtype = float_dtype::<T>()?;
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| file_error(path, format!("is not a valid safetensors file: {e}")))?;
    let mut names: Vec<&str> = file.names().into_iter().filter(|n| n.starts_with(prefix)).collect();
    names.sort_unstable();
    let mut state = StateDict::new();
    state.set_origin(path.display().to_string());
    for name in names {
        let view = file.tensor(name).map_err(|e| file_error(path, e))?;
        let shape = view.shape().to_vec();
        let data = view.data();
        let bad_length = |e: Error| file_error(path, format!("tensor {name:?}: {e}"));
        let tensor = match view.dtype() {
            Dtype::F32 if fdtype == Dtype::F32 => {
                let values = data.chunks_exact(4).map(|b| T::from_f64(f32::from_le_bytes(le(b)) as f64)).collect();
                StateTensor::Float(Tensor::new(&shape, values).map_err(bad_length)?)
            }
            Dtype::F64 if fdtype == Dtype::F64 => {
                let values = data.chunks_exact(8).map(|b| T::from_f64(f64::from_le_bytes(le(b)))).collect();
                StateTensor::Float(Tensor::new(&shape, values).map_err(bad_length)?)
            }
            Dtype::I64 => {
                let values = data.chunks_exact(8).map(|b| i64::from_le_bytes(le(b))).collect();
                StateTensor::I64(Tensor::new(&shape, values).map_err(bad_length)?)
            }
            other => {
                return Err(Error::TensorDtype {
                    name: name.to_owned(),
                    origin: path.display().to_string(),
                    expected: format!("{fdtype} or I64"),
                    got: other.to_string(),
                })
            }
        };
        state.insert(name, tensor);
    }
    Ok(state)
}

/// The bytes of a `chunks_exact(N)` chunk as an array (always `N` long).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}
