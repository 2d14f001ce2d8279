//! `normkit conformance DIR...`: checks normkit against conformance cases.

use crate::conformance::{self, CaseResult, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

/// Check normkit against conformance cases (ONNX, PyTorch, scikit-learn test
/// vectors): one line per failing case, then "N passed, M failed".
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directories (searched recursively for *.json) or case files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Run only the cases of this op or scaler (e.g. layer_norm, rms_norm).
    #[arg(long)]
    pub op: Option<String>,
    /// Also print a line for each passing case.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Runs the cases; exit status 0 when all passed, 1 when any failed or none
/// ran, 2 when a path cannot be read.
pub fn run(args: &Args) -> ExitCode {
    let report = |r: &CaseResult| match &r.verdict {
        Verdict::Fail(why) => println!("FAIL {}: {why}", r.name),
        Verdict::Pass if args.verbose => println!("ok   {}", r.name),
        Verdict::Pass => {}
    };
    match conformance::run_paths(&args.paths, args.op.as_deref(), report) {
        Ok(s) => {
            println!("{} passed, {} failed", s.passed, s.failed);
            if s.failed > 0 || s.passed == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("normkit conformance: {e}");
            ExitCode::from(2)
        }
    }
}
