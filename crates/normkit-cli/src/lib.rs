//! The library behind the `normkit` command, so that its parts can be tested.

pub mod commands;
pub mod conformance;
pub mod signals;
