//! Neural-network cases: one function per op, generic over the element type.

use super::case::{Case, Dtype};
use super::produced::{Produced, RunError};
use normkit::{ops, Float, Tensor};
use serde_json::Value;

/// Runs an nn case in its dtype.
pub fn run(case: &Case) -> Result<Produced, RunError> {
    match case.dtype {
        Dtype::F32 => run_typed::<f32>(case),
        Dtype::F64 => run_typed::<f64>(case),
    }
}

fn run_typed<T: Float>(case: &Case) -> Result<Produced, RunError> {
    match super::case_op(case) {
        "layer_norm" => layer_norm::<T>(case),
        "rms_norm" => rms_norm::<T>(case),
        other => Err(RunError::Unsupported(other.to_owned())),
    }
}

fn layer_norm<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let x = required::<T>(c, "x")?;
    let ns = attr_dims(c, "normalized_shape")?;
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-5);
    let (w, b) = (optional::<T>(c, "weight")?, optional::<T>(c, "bias")?);
    let out = ops::layer_norm(x.view(), &ns, w.as_ref().map(Tensor::view), b.as_ref().map(Tensor::view), eps)?;
    let mut p = Produced::default();
    p.put("y", &out.y);
    p.put("mean", &out.mean);
    p.put("rstd", &out.rstd);
    if let Some(dy) = grad_output::<T>(c)? {
        let saved = (out.mean.view(), out.rstd.view());
        let g = ops::layer_norm_backward(dy.view(), x.view(), &ns, saved, w.as_ref().map(Tensor::view), b.is_some())?;
        p.put("dx", &g.dx);
        p.put_opt("dweight", g.dweight.as_ref());
        p.put_opt("dbias", g.dbias.as_ref());
    }
    Ok(p)
}

fn rms_norm<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let x = required::<T>(c, "x")?;
    let ns = attr_dims(c, "normalized_shape")?;
    let eps = attr_f64(c, "eps")?.unwrap_or_else(ops::default_rms_eps::<T>);
    let w = optional::<T>(c, "weight")?;
    let out = ops::rms_norm(x.view(), &ns, w.as_ref().map(Tensor::view), eps)?;
    let mut p = Produced::default();
    p.put("y", &out.y);
    p.put("rstd", &out.rstd);
    if let Some(dy) = grad_output::<T>(c)? {
        let g = ops::rms_norm_backward(dy.view(), x.view(), &ns, out.rstd.view(), w.as_ref().map(Tensor::view))?;
        p.put("dx", &g.dx);
        p.put_opt("dweight", g.dweight.as_ref());
    }
    Ok(p)
}

// --- reading inputs and attributes -------------------------------------------

fn to_tensor<T: Float>(t: &super::case::CaseTensor) -> Result<Tensor<T>, RunError> {
    Tensor::new(&t.shape, t.to_vec::<T>()).map_err(|e| RunError::BadCase(e.to_string()))
}

fn optional<T: Float>(c: &Case, name: &str) -> Result<Option<Tensor<T>>, RunError> {
    c.inputs.get(name).map(to_tensor).transpose()
}

fn required<T: Float>(c: &Case, name: &str) -> Result<Tensor<T>, RunError> {
    optional(c, name)?.ok_or_else(|| RunError::BadCase(format!("missing input {name}")))
}

fn grad_output<T: Float>(c: &Case) -> Result<Option<Tensor<T>>, RunError> {
    c.grad_output.as_ref().map(to_tensor).transpose()
}

/// A float attribute; `None` when absent or `null`.
fn attr_f64(c: &Case, name: &str) -> Result<Option<f64>, RunError> {
    match c.attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| RunError::BadCase(format!("attribute {name} is not a number"))),
    }
}

/// A list of dimensions (a single number is taken as a list of one).
fn attr_dims(c: &Case, name: &str) -> Result<Vec<usize>, RunError> {
    let bad = || RunError::BadCase(format!("attribute {name} is not a list of dimensions"));
    let as_dim = |v: &Value| v.as_u64().and_then(|d| usize::try_from(d).ok()).ok_or_else(bad);
    match c.attrs.get(name) {
        Some(Value::Array(a)) => a.iter().map(as_dim).collect(),
        Some(v @ Value::Number(_)) => Ok(vec![as_dim(v)?]),
        _ => Err(bad()),
    }
}
