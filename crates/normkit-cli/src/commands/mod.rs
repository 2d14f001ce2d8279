//! One module per `normkit` subcommand: its clap `Args` and its `run`, which
//! returns the process exit code.

pub mod bench;
pub mod conformance;
pub mod scale;
pub mod train;
