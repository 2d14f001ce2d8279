//! `normkit`: the command-line tool.

use clap::{Parser, Subcommand};
use normkit_cli::conformance::{self, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "normkit", version, about = "Normalization layers and tools for machine learning")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check normkit against conformance cases (ONNX, PyTorch, scikit-learn test
    /// vectors): one line per failing case, then "N passed, M failed".
    Conformance {
        /// Directories (searched recursively for *.json) or case files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Run only the cases of this op (e.g. layer_norm, rms_norm).
        #[arg(long)]
        op: Option<String>,
        /// Also print a line for each passing case.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Conformance { paths, op, verbose } => run_conformance(&paths, op.as_deref(), verbose),
    }
}

fn run_conformance(paths: &[PathBuf], op: Option<&str>, verbose: bool) -> ExitCode {
    let report = |r: &conformance::CaseResult| match &r.verdict {
        Verdict::Fail(why) => println!("FAIL {}: {why}", r.name),
        Verdict::Pass if verbose => println!("ok   {}", r.name),
        Verdict::Pass => {}
    };
    match conformance::run_paths(paths, op, report) {
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
