//! The conformance runner: checks normkit against test vectors produced by other
//! implementations (ONNX's backend tests, PyTorch, scikit-learn), in the format of
//! `shared/conformance/README.md`. It takes any directory of such files.
//!
//! Each case file is read, run on normkit and judged: every expected tensor must
//! be produced and match within the case's tolerance; a case holding `"error"`
//! passes only when the call returns an error. A panic fails the case. Cases of
//! ops that normkit does not implement fail with the reason `unsupported op`.

pub mod case;
pub mod compare;
mod nn;
mod produced;
mod scale;

use case::{Case, CaseKind, Expected};
use produced::{Produced, RunError};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Everything expected was produced and matched, or the expected error came.
    Pass,
    /// What went wrong, in one line.
    Fail(String),
}

/// One case's name and verdict.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name (or its file's path if it could not be read).
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
}

/// Every `*.json` file under the given paths (files are taken as they are,
/// directories walked recursively), sorted, or an error naming an unreadable path.
/// Each directory is walked once, however many links lead to it, so a link
/// loop ends.
pub fn collect_case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let (mut files, mut seen_dirs) = (Vec::new(), HashSet::new());
    for p in paths {
        walk(p, &mut files, &mut seen_dirs)?;
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(p: &Path, out: &mut Vec<PathBuf>, seen_dirs: &mut HashSet<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let real = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !seen_dirs.insert(real) {
        return Ok(());
    }
    let entries = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", p.display()))?.path();
        if path.is_dir() {
            walk(&path, out, seen_dirs)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// The name of the op or scaler a case exercises.
pub fn case_op(case: &Case) -> &str {
    match &case.kind {
        CaseKind::Op(op) | CaseKind::Scaler(op) => op,
    }
}

/// Reads and judges one case file. `only_op` skips (returns `None` for) cases of
/// other ops.
pub fn run_file(path: &Path, only_op: Option<&str>) -> Option<CaseResult> {
    let case = match case::read_case(path) {
        Ok(c) => c,
        Err(e) => {
            // A file that cannot be read is a failure unless it is filtered out
            // by name, which we cannot know: report it either way.
            return Some(CaseResult { name: path.display().to_string(), verdict: Verdict::Fail(e) });
        }
    };
    if only_op.is_some_and(|op| op != case_op(&case)) {
        return None;
    }
    Some(CaseResult { name: case.name.clone(), verdict: judge(&case) })
}

/// Runs a case on normkit and compares what it produced with what is expected.
pub fn judge(case: &Case) -> Verdict {
    let produced = match catch_unwind(AssertUnwindSafe(|| run_case(case))) {
        Ok(r) => r,
        Err(payload) => return Verdict::Fail(format!("panicked: {}", panic_message(&payload))),
    };
    match (&case.expected, produced) {
        (_, Err(RunError::Unsupported(what))) => Verdict::Fail(format!("unsupported op ({what})")),
        (_, Err(RunError::BadCase(why))) => Verdict::Fail(format!("bad case: {why}")),
        (Expected::Error(_), Err(RunError::Refused(_))) => Verdict::Pass,
        (Expected::Error(why), Ok(_)) => Verdict::Fail(format!("returned a result, expected an error ({why})")),
        (Expected::Tensors(_), Err(RunError::Refused(e))) => Verdict::Fail(format!("returned an error: {e}")),
        (Expected::Tensors(want), Ok(got)) => compare_all(case, want, &got),
    }
}

fn run_case(case: &Case) -> Result<Produced, RunError> {
    match &case.kind {
        CaseKind::Op(_) => nn::run(case),
        CaseKind::Scaler(name) => scale::run(case, name),
    }
}

fn compare_all(case: &Case, want: &std::collections::BTreeMap<String, case::CaseTensor>, got: &Produced) -> Verdict {
    for (name, w) in want {
        let Some((shape, values)) = got.get(name) else {
            return Verdict::Fail(format!("{name}: not produced"));
        };
        if shape != w.shape.as_slice() {
            return Verdict::Fail(format!("{name}: shape {shape:?}, expected {:?}", w.shape));
        }
        if let Some(m) = compare::worst_mismatch(values, &w.data, case.atol, case.rtol) {
            let exact = if case.tolerance_given { "" } else { " (the case gives no tolerance: exact match)" };
            return Verdict::Fail(format!("{name}[{}]: got {:e}, want {:e}{exact}", m.index, m.got, m.want));
        }
    }
    Verdict::Pass
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
}

/// Runs every case under `paths`, calling `report` with each result, and returns
/// the counts. Panics inside cases are caught and reported as failures, with
/// the default panic message silenced meanwhile.
pub fn run_paths(
    paths: &[PathBuf],
    only_op: Option<&str>,
    mut report: impl FnMut(&CaseResult),
) -> Result<Summary, String> {
    let files = collect_case_files(paths)?;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut summary = Summary::default();
    for f in &files {
        if let Some(r) = run_file(f, only_op) {
            match r.verdict {
                Verdict::Pass => summary.passed += 1,
                Verdict::Fail(_) => summary.failed += 1,
            }
            report(&r);
        }
    }
    std::panic::set_hook(hook);
    Ok(summary)
}
