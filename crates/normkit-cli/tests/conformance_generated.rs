//! Regression cases made by `scripts/gen_conformance.py` (numpy re-implementations
//! of PyTorch's formulas) that once failed: group_norm and instance_norm with the
//! channel axis given by `axis` (channels-last, as Keras' GroupNormalization), forward
//! and backward, and the batch axis refused as a channel axis; batch_norm refusing a
//! running mean without a running variance. The `regression/` cases are generated
//! ones with attributes written as other converters write them: `training` as 1,
//! `axis` and `num_groups` as floats (`1.0`), `axes` as one integer, and a negative
//! `num_groups` that must be refused.

use std::path::Path;
use std::process::Command;

#[test]
fn generated_regression_cases_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let out = Command::new(env!("CARGO_BIN_EXE_normkit"))
        .args(["conformance", "--verbose"])
        .arg(&dir)
        .output()
        .expect("run normkit");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("9 passed, 0 failed"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}
