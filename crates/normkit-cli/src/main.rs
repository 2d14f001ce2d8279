//! `normkit`: the command-line tool. Each subcommand lives in its own module
//! under `commands/`.

use clap::{Parser, Subcommand};
use normkit_cli::commands;
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
    Conformance(commands::conformance::Args),
    /// Measure each op's effective memory bandwidth beside the machine's copy
    /// bandwidth (and peers' times with --compare).
    Bench(commands::bench::Args),
    /// Train a classifier on MNIST-format data with normkit's normalization
    /// layers in candle; compare configurations (--compare norm=none,batch).
    Train(Box<commands::train::Args>),
    /// Scale numeric columns of CSV/Parquet files with scikit-learn's scalers,
    /// streamed: fit, transform, fit-transform, inverse.
    Scale(Box<commands::scale::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Conformance(args) => commands::conformance::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Scale(args) => commands::scale::run(args),
    }
}
