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

/// The inputs each op takes (the format's table); any other name is a bad case
/// (a misspelt `weight` would otherwise be silently left out).
fn known_inputs(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "layer_norm" | "group_norm" | "instance_norm" => &["x", "weight", "bias"],
        "rms_norm" => &["x", "weight"],
        "batch_norm" => &["x", "weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
        "lp_normalize" | "mean_variance_normalization" => &["x"],
        _ => return None,
    })
}

fn run_typed<T: Float>(case: &Case) -> Result<Produced, RunError> {
    let op = super::case_op(case);
    if let Some(known) = known_inputs(op) {
        if let Some(name) = case.inputs.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(RunError::BadCase(format!("{op} takes no input {name:?} (it takes {})", known.join(", "))));
        }
    }
    match op {
        "layer_norm" => layer_norm::<T>(case),
        "rms_norm" => rms_norm::<T>(case),
        "batch_norm" => batch_norm::<T>(case),
        "group_norm" => group_norm::<T>(case),
        "instance_norm" => instance_norm::<T>(case),
        "lp_normalize" => lp_normalize::<T>(case),
        "mean_variance_normalization" => mean_variance_normalization::<T>(case),
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

fn batch_norm<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let x = required::<T>(c, "x")?;
    let training = attr_bool(c, "training")?.unwrap_or(false);
    let momentum = match c.attrs.get("momentum") {
        None => Some(0.1),
        Some(_) => attr_f64(c, "momentum")?,
    };
    let unbiased = attr_bool(c, "running_var_unbiased")?.unwrap_or(true);
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-5);
    let axis = attr_axis(c, "axis")?.unwrap_or(1);
    let (w, b) = (optional::<T>(c, "weight")?, optional::<T>(c, "bias")?);
    let (wv, bv) = (w.as_ref().map(Tensor::view), b.as_ref().map(Tensor::view));
    let running = match (optional::<T>(c, "running_mean")?, optional::<T>(c, "running_var")?) {
        (Some(m), Some(v)) => Some((m, v)),
        (None, None) => None,
        // PyTorch refuses one running statistic without the other: a refusal, so
        // that a case expecting an error passes.
        _ => return Err(RunError::Refused("running_mean and running_var must be given together".into())),
    };
    let mut p = Produced::default();
    let dy = grad_output::<T>(c)?;
    if let (false, Some((rm, rv))) = (training, running.as_ref()) {
        // Eval with running statistics: fixed statistics, left unchanged (the
        // ops borrow them immutably), so the statistics after the call are
        // the ones given.
        p.put("y", &ops::batch_norm_eval(x.view(), axis, rm.view(), rv.view(), wv, bv, eps)?);
        if let Some(dy) = dy {
            let g =
                ops::batch_norm_eval_backward(dy.view(), x.view(), axis, rm.view(), rv.view(), wv, b.is_some(), eps)?;
            put_grads(&mut p, &g);
        }
        p.put("running_mean", rm);
        p.put("running_var", rv);
        if let Some(nbt) = optional::<T>(c, "num_batches_tracked")? {
            p.put("num_batches_tracked", &nbt);
        }
        return Ok(p);
    }
    // Batch statistics: training mode, or eval without running statistics.
    let out = ops::batch_norm_train(x.view(), axis, wv, bv, eps)?;
    p.put("y", &out.y);
    p.put("save_mean", &out.save_mean);
    p.put("save_rstd", &out.save_rstd);
    if let (true, Some((mut rm, mut rv))) = (training, running) {
        let nbt = optional::<T>(c, "num_batches_tracked")?;
        let mut tracked = match nbt.as_ref().and_then(|t| t.data().first()) {
            Some(v) if v.to_f64() >= 0.0 && v.to_f64().fract() == 0.0 => v.to_f64() as u64,
            Some(v) => return Err(RunError::BadCase(format!("num_batches_tracked {v} is not a count"))),
            None => 0,
        };
        ops::batch_norm_update_running(&mut rm, &mut rv, &mut tracked, &out.batch_stats, momentum, unbiased)?;
        p.put("running_mean", &rm);
        p.put("running_var", &rv);
        let shape = nbt.as_ref().map_or(vec![], |t| t.shape().to_vec());
        let count =
            Tensor::new(&shape, vec![T::from_f64(tracked as f64)]).map_err(|e| RunError::BadCase(e.to_string()))?;
        p.put("num_batches_tracked", &count);
    }
    if let Some(dy) = dy {
        let saved = (out.save_mean.view(), out.save_rstd.view());
        let g = ops::batch_norm_backward(dy.view(), x.view(), axis, saved.0, saved.1, wv, b.is_some())?;
        put_grads(&mut p, &g);
    }
    Ok(p)
}

fn group_norm<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let (x, channels) = channels_first::<T>(c, required::<T>(c, "x")?)?;
    let groups = attr_count(c, "num_groups")?;
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-5);
    let (w, b) = (optional::<T>(c, "weight")?, optional::<T>(c, "bias")?);
    let (wv, bv) = (w.as_ref().map(Tensor::view), b.as_ref().map(Tensor::view));
    let out = ops::group_norm(x.view(), groups, wv, bv, eps)?;
    let mut p = Produced::default();
    p.put("y", &channels.restore(out.y)?);
    p.put("mean", &out.mean);
    p.put("rstd", &out.rstd);
    if let Some(dy) = grad_output::<T>(c)? {
        let dy = channels.apply(dy)?;
        let saved = (out.mean.view(), out.rstd.view());
        let g = ops::group_norm_backward(dy.view(), x.view(), groups, saved, wv, b.is_some())?;
        put_grads(&mut p, &channels.restore_grads(g)?);
    }
    Ok(p)
}

fn instance_norm<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let (x, channels) = channels_first::<T>(c, required::<T>(c, "x")?)?;
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-5);
    let (w, b) = (optional::<T>(c, "weight")?, optional::<T>(c, "bias")?);
    let (wv, bv) = (w.as_ref().map(Tensor::view), b.as_ref().map(Tensor::view));
    let out = ops::instance_norm(x.view(), wv, bv, eps)?;
    let mut p = Produced::default();
    p.put("y", &channels.restore(out.y)?);
    p.put("mean", &out.mean);
    p.put("rstd", &out.rstd);
    if let Some(dy) = grad_output::<T>(c)? {
        let dy = channels.apply(dy)?;
        let saved = (out.mean.view(), out.rstd.view());
        let g = ops::instance_norm_backward(dy.view(), x.view(), saved, wv, b.is_some())?;
        put_grads(&mut p, &channels.restore_grads(g)?);
    }
    Ok(p)
}

/// Where a case's channel axis is, for ops whose kernels take `(N, C, *)`: the
/// README's "channel axis 1 unless `axis` says otherwise" (Keras' GroupNormalization
/// uses `axis=-1`). The runner moves that axis to position 1 and back.
#[derive(Clone, Copy, Debug)]
struct ChannelAxis {
    /// The channel axis in the case's layout, in `1..rank`.
    axis: usize,
}

/// `x` with its channel axis moved to position 1, and the axis to move back.
fn channels_first<T: Float>(c: &Case, x: Tensor<T>) -> Result<(Tensor<T>, ChannelAxis), RunError> {
    let rank = x.shape().len();
    let axis = match attr_axis(c, "axis")? {
        None => 1,
        Some(a) => {
            let r = isize::try_from(rank).map_err(|_| RunError::BadCase("rank overflows".into()))?;
            let resolved = if a < 0 { a + r } else { a };
            match usize::try_from(resolved) {
                Ok(v) if v >= 1 && v < rank => v,
                _ => {
                    return Err(RunError::Refused(format!(
                        "channel axis {a} is not a non-batch axis of x with shape {:?}",
                        x.shape()
                    )))
                }
            }
        }
    };
    let ch = ChannelAxis { axis };
    Ok((ch.apply(x)?, ch))
}

impl ChannelAxis {
    /// Moves the channel axis to position 1: `(N, A.., C, B..)` to `(N, C, A.., B..)`.
    fn apply<T: Float>(self, t: Tensor<T>) -> Result<Tensor<T>, RunError> {
        self.permute(t, true)
    }

    /// The inverse of [`ChannelAxis::apply`].
    fn restore<T: Float>(self, t: Tensor<T>) -> Result<Tensor<T>, RunError> {
        self.permute(t, false)
    }

    fn restore_grads<T: Float>(self, g: ops::NormGrads<T>) -> Result<ops::NormGrads<T>, RunError> {
        Ok(ops::NormGrads { dx: self.restore(g.dx)?, ..g })
    }

    fn permute<T: Float>(self, t: Tensor<T>, to_front: bool) -> Result<Tensor<T>, RunError> {
        let a = self.axis;
        if a == 1 || t.shape().len() <= 2 {
            return Ok(t);
        }
        // Case layout (n, mid, c, inner); channels-first layout (n, c, mid, inner).
        let s = t.shape().to_vec();
        let (cf_c, cf_mid) = if to_front { (s[a], &s[1..a]) } else { (s[1], &s[2..=a]) };
        let mid: usize = cf_mid.iter().product();
        let inner: usize = s[a + 1..].iter().product();
        let n = s[0];
        let c = cf_c;
        let (case_shape, cf_shape) = {
            let mut case_shape = vec![n];
            let mut cf_shape = vec![n, c];
            case_shape.extend_from_slice(cf_mid);
            case_shape.push(c);
            case_shape.extend_from_slice(&s[a + 1..]);
            cf_shape.extend_from_slice(cf_mid);
            cf_shape.extend_from_slice(&s[a + 1..]);
            (case_shape, cf_shape)
        };
        let src = t.data();
        let mut out = Vec::with_capacity(src.len());
        if to_front {
            for i0 in 0..n {
                for ch in 0..c {
                    for m in 0..mid {
                        let base = ((i0 * mid + m) * c + ch) * inner;
                        out.extend_from_slice(src.get(base..base + inner).unwrap_or(&[]));
                    }
                }
            }
        } else {
            for i0 in 0..n {
                for m in 0..mid {
                    for ch in 0..c {
                        let base = ((i0 * c + ch) * mid + m) * inner;
                        out.extend_from_slice(src.get(base..base + inner).unwrap_or(&[]));
                    }
                }
            }
        }
        let shape = if to_front { cf_shape } else { case_shape };
        Tensor::new(&shape, out).map_err(|e| RunError::BadCase(e.to_string()))
    }
}

fn lp_normalize<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let x = required::<T>(c, "x")?;
    let p_attr = attr_f64(c, "p")?.unwrap_or(2.0);
    let order = match p_attr {
        1.0 => 1,
        2.0 => 2,
        // ONNX's LpNormalization, like normkit, takes p = 1 or 2 only.
        v => return Err(RunError::Refused(format!("lp_normalize takes p = 1 or 2, not {v}"))),
    };
    let axis = attr_axis(c, "axis")?.unwrap_or(-1);
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-12);
    let mut p = Produced::default();
    p.put("y", &ops::lp_normalize(x.view(), order, axis, eps)?);
    if let Some(dy) = grad_output::<T>(c)? {
        p.put("dx", &ops::lp_normalize_backward(dy.view(), x.view(), order, axis, eps)?);
    }
    Ok(p)
}

fn mean_variance_normalization<T: Float>(c: &Case) -> Result<Produced, RunError> {
    let x = required::<T>(c, "x")?;
    let axes = match c.attrs.get("axes") {
        None | Some(Value::Null) => vec![0, 2, 3],
        Some(v @ Value::Number(_)) => vec![whole(v)
            .and_then(|a| isize::try_from(a).ok())
            .ok_or_else(|| RunError::BadCase("attribute axes is not an integer".into()))?],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| whole(v).and_then(|a| isize::try_from(a).ok()))
            .collect::<Option<Vec<isize>>>()
            .ok_or_else(|| RunError::BadCase("attribute axes is not a list of integers".into()))?,
        Some(_) => return Err(RunError::BadCase("attribute axes is not a list".into())),
    };
    let eps = attr_f64(c, "eps")?.unwrap_or(1e-9);
    let mut p = Produced::default();
    p.put("y", &ops::mean_variance_normalization(x.view(), &axes, eps)?);
    if let Some(dy) = grad_output::<T>(c)? {
        p.put("dx", &ops::mean_variance_normalization_backward(dy.view(), x.view(), &axes, eps)?);
    }
    Ok(p)
}

fn put_grads<T: Float>(p: &mut Produced, g: &ops::NormGrads<T>) {
    p.put("dx", &g.dx);
    p.put_opt("dweight", g.dweight.as_ref());
    p.put_opt("dbias", g.dbias.as_ref());
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
    let as_dim = |v: &Value| whole(v).and_then(|d| usize::try_from(d).ok()).ok_or_else(bad);
    match c.attrs.get(name) {
        Some(Value::Array(a)) => a.iter().map(as_dim).collect(),
        Some(v @ Value::Number(_)) => Ok(vec![as_dim(v)?]),
        _ => Err(bad()),
    }
}

/// A boolean attribute; `None` when absent or `null`.
fn attr_bool(c: &Case, name: &str) -> Result<Option<bool>, RunError> {
    match c.attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        // ONNX writes flags such as training_mode as 0 or 1.
        Some(v) => match (v.as_bool(), whole(v)) {
            (Some(b), _) => Ok(Some(b)),
            (None, Some(0)) => Ok(Some(false)),
            (None, Some(1)) => Ok(Some(true)),
            _ => Err(RunError::BadCase(format!("attribute {name} is not a boolean"))),
        },
    }
}

/// An axis attribute (may be negative); `None` when absent or `null`.
fn attr_axis(c: &Case, name: &str) -> Result<Option<isize>, RunError> {
    match c.attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => whole(v)
            .and_then(|a| isize::try_from(a).ok())
            .map(Some)
            .ok_or_else(|| RunError::BadCase(format!("attribute {name} is not an integer"))),
    }
}

/// A whole-number attribute (a count); a negative count is refused like any bad
/// argument, so that a case expecting an error passes.
fn attr_count(c: &Case, name: &str) -> Result<usize, RunError> {
    let v = c
        .attrs
        .get(name)
        .and_then(whole)
        .ok_or_else(|| RunError::BadCase(format!("attribute {name} is missing or not a whole number")))?;
    usize::try_from(v).map_err(|_| RunError::Refused(format!("{name} = {v} is negative")))
}

/// An integer written as an integer or as a float with no fraction (`2` or `2.0`).
fn whole(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}
