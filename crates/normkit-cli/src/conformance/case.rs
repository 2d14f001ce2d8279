//! Reading case files: the JSON format of `shared/conformance/README.md`.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The two element types a case can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
}

impl Dtype {
    /// The name the format uses.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

/// A tensor read from a case. Values are kept as `f64`; an `f32` tensor's values
/// are parsed as `f32` first, so each is exactly the `f32` the file denotes.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

impl CaseTensor {
    /// The values converted to `T` (exact: they were parsed as `T`).
    pub fn to_vec<T: normkit::Float>(&self) -> Vec<T> {
        self.data.iter().map(|&v| T::from_f64(v)).collect()
    }
}

/// A test case: the parts the runner needs, the rest left as JSON.
#[derive(Clone, Debug)]
pub struct Case {
    /// `name`, or the file name when absent.
    pub name: String,
    /// What the case checks: an nn op (`layer_norm`, ...) or a scaler.
    pub kind: CaseKind,
    /// The element type all tensors share.
    pub dtype: Dtype,
    /// `attrs` (nn) or `params` (scalers).
    pub attrs: Map<String, Value>,
    /// Named input tensors (`inputs`, or `fit`/`transform` for scalers).
    pub inputs: BTreeMap<String, CaseTensor>,
    /// `grad_output`, present in backward cases.
    pub grad_output: Option<CaseTensor>,
    /// What the implementation must produce or refuse.
    pub expected: Expected,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Whether the file gave a `tolerance` (without one, values must match exactly).
    pub tolerance_given: bool,
}

/// The family and name of a case's operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseKind {
    /// A neural-network op (`"op"` in the file).
    Op(String),
    /// A dataset scaler (`"scaler"` in the file).
    Scaler(String),
}

/// The expected outcome of a case.
#[derive(Clone, Debug)]
pub enum Expected {
    /// Tensors to match, by name. Scaler cases flatten `fitted` into `fitted.NAME`.
    Tensors(BTreeMap<String, CaseTensor>),
    /// The call must return an error; the text says why.
    Error(String),
}

/// Reads and parses one case file.
pub fn read_case(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        // Python's json module writes non-finite floats as bare NaN, Infinity and
        // -Infinity (not JSON): read such a file as if they were the format's strings.
        Err(e) => serde_json::from_str(&quote_bare_non_finite(&text)).map_err(|_| format!("not valid JSON: {e}"))?,
    };
    parse_case(&v, path)
}

/// `text` with every bare `NaN`, `Infinity` and `-Infinity` token outside JSON
/// strings put in quotes, so that it parses as the format's `"nan"`, `"inf"`, `"-inf"`.
pub fn quote_bare_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if in_string {
            match (escaped, ch) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
        } else if ch == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

fn parse_case(v: &Value, path: &Path) -> Result<Case, String> {
    let obj = v.as_object().ok_or("a case must be a JSON object")?;
    let default_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = obj.get("name").and_then(Value::as_str).map_or(default_name, str::to_owned);
    let kind = match (obj.get("op").and_then(Value::as_str), obj.get("scaler").and_then(Value::as_str)) {
        (Some(op), _) => CaseKind::Op(op.to_owned()),
        (None, Some(s)) => CaseKind::Scaler(s.to_owned()),
        _ => return Err("a case needs \"op\" or \"scaler\"".into()),
    };
    let attrs = obj.get("attrs").or_else(|| obj.get("params")).and_then(Value::as_object).cloned().unwrap_or_default();

    let mut inputs = BTreeMap::new();
    if let Some(ins) = obj.get("inputs").and_then(Value::as_object) {
        for (k, t) in ins {
            inputs.insert(k.clone(), parse_tensor(t).map_err(|e| format!("inputs.{k}: {e}"))?);
        }
    }
    for key in ["fit", "transform"] {
        if let Some(t) = obj.get(key) {
            inputs.insert(key.to_owned(), parse_tensor(t).map_err(|e| format!("{key}: {e}"))?);
        }
    }
    let grad_output = obj.get("grad_output").map(parse_tensor).transpose().map_err(|e| format!("grad_output: {e}"))?;
    let expected = match (obj.get("error"), obj.get("expected")) {
        (Some(why), _) => Expected::Error(why.as_str().unwrap_or("").to_owned()),
        (None, Some(ex)) => Expected::Tensors(parse_expected(ex)?),
        (None, None) => return Err("a case needs \"expected\" or \"error\"".into()),
    };
    let tol = match obj.get("tolerance") {
        None => None,
        Some(t) => Some(t.as_object().ok_or("\"tolerance\" must be an object")?),
    };
    let tol_of = |k: &str| match tol.and_then(|t| t.get(k)) {
        None => Ok(0.0),
        Some(v) => v.as_f64().filter(|t| *t >= 0.0).ok_or(format!("tolerance.{k} must be a number >= 0")),
    };
    let (atol, rtol) = (tol_of("atol")?, tol_of("rtol")?);
    let dtype = common_dtype(&inputs, grad_output.as_ref(), &expected)?;
    Ok(Case { name, kind, dtype, attrs, inputs, grad_output, expected, atol, rtol, tolerance_given: tol.is_some() })
}

/// The one dtype that every tensor of a case has (the format says they share
/// one), or an error naming the first tensor that differs.
fn common_dtype(
    inputs: &BTreeMap<String, CaseTensor>,
    grad_output: Option<&CaseTensor>,
    expected: &Expected,
) -> Result<Dtype, String> {
    let named_inputs = inputs.iter().map(|(k, t)| (format!("inputs.{k}"), t));
    let grad = grad_output.map(|t| ("grad_output".to_owned(), t));
    let outputs: Vec<(String, &CaseTensor)> = match expected {
        Expected::Tensors(want) => want.iter().map(|(k, t)| (format!("expected.{k}"), t)).collect(),
        Expected::Error(_) => Vec::new(),
    };
    let mut all = named_inputs.chain(grad).chain(outputs);
    let (first_name, first) = all.next().ok_or("a case needs at least one input tensor")?;
    match all.find(|(_, t)| t.dtype != first.dtype) {
        Some((name, t)) => Err(format!(
            "all tensors of a case must share one dtype: {first_name} is {}, {name} is {}",
            first.dtype.name(),
            t.dtype.name()
        )),
        None => Ok(first.dtype),
    }
}

fn parse_expected(ex: &Value) -> Result<BTreeMap<String, CaseTensor>, String> {
    let obj = ex.as_object().ok_or("\"expected\" must be an object")?;
    let mut out = BTreeMap::new();
    if obj.is_empty() {
        return Err("\"expected\" holds no tensors: nothing would be checked".into());
    }
    for (k, v) in obj {
        if k == "fitted" {
            for (fk, fv) in v.as_object().ok_or("\"fitted\" must be an object")? {
                out.insert(format!("fitted.{fk}"), parse_tensor(fv).map_err(|e| format!("fitted.{fk}: {e}"))?);
            }
        } else {
            out.insert(k.clone(), parse_tensor(v).map_err(|e| format!("expected.{k}: {e}"))?);
        }
    }
    Ok(out)
}

/// Parses `{"dtype", "shape", "data"}` with `"nan"`, `"inf"`, `"-inf"` strings.
pub fn parse_tensor(v: &Value) -> Result<CaseTensor, String> {
    let dtype = match v.get("dtype").and_then(Value::as_str) {
        Some("f32" | "float32") => Dtype::F32,
        Some("f64" | "float64") => Dtype::F64,
        other => return Err(format!("unknown dtype {other:?}")),
    };
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing shape")?
        .iter()
        .map(|d| {
            // A dimension written as 3 or as 3.0.
            let whole = d
                .as_u64()
                .or_else(|| d.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15).map(|f| f as u64));
            whole.and_then(|d| usize::try_from(d).ok()).ok_or("a dimension is not a whole number")
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("missing data")?
        .iter()
        .map(|d| parse_value(d, dtype))
        .collect::<Result<Vec<f64>, _>>()?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    if n != data.len() {
        return Err(format!("shape {shape:?} needs {n} values, data holds {}", data.len()));
    }
    Ok(CaseTensor { dtype, shape, data })
}

fn parse_value(v: &Value, dtype: Dtype) -> Result<f64, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(format!("{other} is not a number")),
    };
    let parsed = match text.as_str() {
        "nan" | "NaN" => Some(f64::NAN),
        "inf" | "Infinity" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        t => match dtype {
            Dtype::F32 => t.parse::<f32>().ok().map(f64::from),
            Dtype::F64 => t.parse::<f64>().ok(),
        },
    };
    parsed.ok_or_else(|| format!("{text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_non_finite_values_are_quoted_outside_strings_only() {
        let text = r#"{"name": "a NaN \" Infinity", "data": [NaN, -Infinity, Infinity, 1.5]}"#;
        let fixed = quote_bare_non_finite(text);
        assert_eq!(fixed, r#"{"name": "a NaN \" Infinity", "data": ["NaN", "-Infinity", "Infinity", 1.5]}"#);
        let v: Value = serde_json::from_str(&fixed).unwrap();
        let t = parse_tensor(&serde_json::json!({"dtype": "f64", "shape": [4], "data": v["data"]})).unwrap();
        assert!(t.data[0].is_nan());
        assert_eq!(&t.data[1..], &[f64::NEG_INFINITY, f64::INFINITY, 1.5]);
    }

    #[test]
    fn numpy_dtype_names_and_whole_float_dims_are_read() {
        let t = parse_tensor(&serde_json::json!({"dtype": "float32", "shape": [2.0, 1], "data": [1, 2]})).unwrap();
        assert_eq!((t.dtype, t.shape.as_slice()), (Dtype::F32, [2usize, 1].as_slice()));
        assert!(parse_tensor(&serde_json::json!({"dtype": "f64", "shape": [1.5], "data": [1]})).is_err());
        assert!(parse_tensor(&serde_json::json!({"dtype": "f64", "shape": [-1.0], "data": [1]})).is_err());
    }
}
