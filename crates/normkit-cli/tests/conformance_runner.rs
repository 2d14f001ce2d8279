//! The conformance runner as a user runs it: the `normkit conformance` binary on
//! directories of cases, judged by its output lines and exit status.

use std::path::{Path, PathBuf};
use std::process::Command;

fn normkit(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_normkit")).args(args).output().expect("run normkit");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("normkit-conf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const X: &str = r#""x": {"dtype": "f64", "shape": [2, 2], "data": [1.0, 3.0, "nan", 2.0]}"#;

fn layer_norm_case(name: &str, y: &str) -> String {
    format!(
        r#"{{"name": "{name}", "op": "layer_norm", "attrs": {{"normalized_shape": [2], "eps": 0.0}},
            "inputs": {{ {X} }},
            "expected": {{"y": {{"dtype": "f64", "shape": [2, 2], "data": {y}}}}},
            "tolerance": {{"rtol": 1e-12, "atol": 1e-12}}}}"#
    )
}

#[test]
fn passing_failing_error_and_unsupported_cases() {
    let dir = temp_dir("mixed");
    write(&dir, "a_pass.json", &layer_norm_case("mine/pass", r#"[-1.0, 1.0, "nan", "nan"]"#));
    write(&dir, "b_wrong.json", &layer_norm_case("mine/wrong", r#"[-1.0, 1.5, "nan", "nan"]"#));
    write(&dir, "c_nan_mismatch.json", &layer_norm_case("mine/nan", r#"[-1.0, 1.0, 0.0, "nan"]"#));
    // An error case whose input is fine: a result is a failure.
    write(
        &dir,
        "d_error.json",
        &format!(
            r#"{{"name": "mine/should_refuse", "op": "layer_norm", "attrs": {{"normalized_shape": [2], "eps": 1e-5}},
                "inputs": {{ {X} }}, "error": "made up"}}"#
        ),
    );
    // An error case with a wrong weight length: refusing it passes.
    write(
        &dir,
        "e_refused.json",
        &format!(
            r#"{{"name": "mine/refused", "op": "rms_norm", "attrs": {{"normalized_shape": [2], "eps": 1e-5}},
                "inputs": {{ {X}, "weight": {{"dtype": "f64", "shape": [3], "data": [1, 1, 1]}} }}, "error": "weight length"}}"#
        ),
    );
    write(
        &dir,
        "f_unsupported.json",
        &format!(
            r#"{{"name": "mine/unknown", "op": "frobnicate", "attrs": {{}}, "inputs": {{ {X} }},
                "expected": {{"y": {{"dtype": "f64", "shape": [1], "data": [0]}}}}}}"#
        ),
    );
    write(&dir, "g_broken.json", "{ not json");
    // An expected tensor the op cannot produce is a failure, not a skip.
    write(
        &dir,
        "h_extra.json",
        &format!(
            r#"{{"name": "mine/extra", "op": "rms_norm", "attrs": {{"normalized_shape": [2], "eps": 1e-5}},
                "inputs": {{ {X} }}, "expected": {{"mean": {{"dtype": "f64", "shape": [2], "data": [0, 0]}}}}}}"#
        ),
    );

    let (code, out) = normkit(&["conformance", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().last(), Some("2 passed, 6 failed"), "{out}");
    assert!(out.contains("FAIL mine/wrong: y[1]: got 1e0, want 1.5e0"), "{out}");
    assert!(out.contains("FAIL mine/nan: y[2]: got NaN, want 0e0"), "{out}");
    assert!(out.contains("FAIL mine/should_refuse: returned a result, expected an error"), "{out}");
    assert!(out.contains("FAIL mine/unknown: unsupported op"), "{out}");
    assert!(out.contains("g_broken.json: not valid JSON"), "{out}");
    assert!(out.contains("FAIL mine/extra: mean: not produced"), "{out}");
    assert!(!out.contains("mine/pass") && !out.contains("mine/refused"), "{out}");

    // --op restricts to one op.
    let (code, out) = normkit(&["conformance", "--op", "rms_norm", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("1 passed, 2 failed"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Cases that break the format are failures with a message that says how,
/// never silently passed or run with a part left out.
#[test]
fn malformed_cases_fail_with_the_reason() {
    let dir = temp_dir("malformed");
    let y = r#""y": {"dtype": "f64", "shape": [2, 2], "data": [-1.0, 1.0, "nan", "nan"]}"#;
    let tol = r#""tolerance": {"rtol": 1e-12, "atol": 1e-12}"#;
    let ln = r#""op": "layer_norm", "attrs": {"normalized_shape": [2], "eps": 0.0}"#;
    let case = |name: &str, inputs: &str, rest: &str| {
        format!(r#"{{"name": "{name}", {ln}, "inputs": {{ {inputs} }}, {rest}}}"#)
    };
    let w32 = r#""weight": {"dtype": "f32", "shape": [2], "data": [1, 1]}"#;
    let w64_typo = r#""wieght": {"dtype": "f64", "shape": [2], "data": [1, 1]}"#;
    let bool_x = r#""x": {"dtype": "f64", "shape": [2, 2], "data": [1.0, 3.0, true, 2.0]}"#;
    write(&dir, "a.json", &case("mine/mixed", &format!("{X}, {w32}"), &format!(r#""expected": {{ {y} }}, {tol}"#)));
    write(&dir, "b.json", &case("mine/typo", &format!("{X}, {w64_typo}"), &format!(r#""expected": {{ {y} }}, {tol}"#)));
    write(&dir, "c.json", &case("mine/bool", bool_x, &format!(r#""expected": {{ {y} }}, {tol}"#)));
    write(&dir, "d.json", &case("mine/empty", X, &format!(r#""expected": {{}}, {tol}"#)));
    let y_off = r#""y": {"dtype": "f64", "shape": [2, 2], "data": [-1.0, 1.0000001, "nan", "nan"]}"#;
    write(&dir, "e.json", &case("mine/exact", X, &format!(r#""expected": {{ {y_off} }}"#)));
    // A link back to the directory itself: walked once, not until the path is too long.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();

    let (code, out) = normkit(&["conformance", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().last(), Some("0 passed, 5 failed"), "{out}");
    assert!(
        out.contains("a.json: all tensors of a case must share one dtype: inputs.weight is f32, inputs.x is f64"),
        "{out}"
    );
    assert!(out.contains("FAIL mine/typo: bad case: layer_norm takes no input \"wieght\""), "{out}");
    assert!(out.contains("c.json: inputs.x: true is not a number"), "{out}");
    assert!(out.contains("d.json: \"expected\" holds no tensors"), "{out}");
    assert!(
        out.contains("FAIL mine/exact: y[1]: got 1e0, want 1.0000001e0 (the case gives no tolerance: exact match)"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In eval mode the running statistics are left as given, and a case may
/// expect them (with `num_batches_tracked`) among the outputs.
#[test]
fn eval_batch_norm_reports_its_running_statistics_unchanged() {
    let dir = temp_dir("bn-eval");
    let t = |shape: &str, data: &str| format!(r#"{{"dtype": "f64", "shape": {shape}, "data": {data}}}"#);
    let (rm, rv, nbt) = (t("[2]", "[0.5, -1.0]"), t("[2]", "[4.0, 0.25]"), t("[]", "[7]"));
    let x = t("[2, 2]", "[2.5, 0.0, -1.5, -2.0]");
    // y = (x - running_mean) / sqrt(running_var) with eps 0.
    let y = t("[2, 2]", "[1.0, 2.0, -1.0, -2.0]");
    let case = |name: &str, expected_rm: &str| {
        format!(
            r#"{{"name": "{name}", "op": "batch_norm", "attrs": {{"training": false, "momentum": 0.1, "eps": 0.0}},
                "inputs": {{"x": {x}, "running_mean": {rm}, "running_var": {rv}, "num_batches_tracked": {nbt}}},
                "expected": {{"y": {y}, "running_mean": {expected_rm}, "running_var": {rv}, "num_batches_tracked": {nbt}}},
                "tolerance": {{"rtol": 1e-15, "atol": 0}}}}"#
        )
    };
    write(&dir, "a.json", &case("mine/bn_eval", &rm));
    write(&dir, "b.json", &case("mine/bn_eval_changed", &t("[2]", "[0.5, -1.5]")));
    let (code, out) = normkit(&["conformance", dir.to_str().unwrap()]);
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"), "{out}");
    assert!(out.contains("FAIL mine/bn_eval_changed: running_mean[1]: got -1e0, want -1.5e0"), "{out}");
    assert_eq!(code, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn all_passing_exits_zero_and_bad_paths_exit_two() {
    let dir = temp_dir("ok");
    write(&dir, "a.json", &layer_norm_case("mine/pass", r#"[-1.0, 1.0, "nan", "nan"]"#));
    let (code, out) = normkit(&["conformance", dir.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, "1 passed, 0 failed"));
    let (code, out) = normkit(&["conformance", "/no/such/dir"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/no/such/dir"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shared cases beside the repository, when present (in CI they are).
fn shared_conformance() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    d.is_dir().then_some(d)
}

#[test]
fn shared_layer_norm_and_rms_norm_cases_pass() {
    let dirs = [shared_conformance(), Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance"))];
    for dir in dirs.into_iter().flatten() {
        for op in ["layer_norm", "rms_norm"] {
            let (code, out) = normkit(&["conformance", "--op", op, dir.to_str().unwrap()]);
            assert_eq!(code, 0, "{op} in {}: {out}", dir.display());
        }
    }
}
