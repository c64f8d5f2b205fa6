//! The `clew` command line: one binary for every way of running Clew.
//!
//! This crate owns no domain logic. It wires the lower crates together:
//! key files ([`keyfiles`]) and the data-directory layout ([`datadir`]) feed
//! the ledger; stream files ([`stream`]) are an input source for the
//! sequencer; [`synthetic`] makes realistic signed event streams for
//! [`bench`] and tests; [`export`] writes a static tlog-tiles mirror.
//! [`cli`] parses arguments and reports with progress bars and a one-line
//! summary; errors surface through anyhow with the context of what was tried.

pub mod bench;
pub mod cli;
pub mod datadir;
pub mod export;
pub mod keyfiles;
pub mod stream;
pub mod synthetic;
