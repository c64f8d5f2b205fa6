//! The `clew` command line: one binary for every way of running Clew.
//!
//! This crate owns no domain logic. It wires the lower crates together:
//! key files ([`keyfiles`]) and the data-directory layout ([`datadir`]) feed
//! the ledger; [`local`] opens a data directory's ledger and catalogue and
//! starts the spine (`clew-node`) over them — how `clew ingest` and
//! `clew demo` record events, with no HTTP stack; [`server`] adds bearer
//! tokens and the API (`clew serve`); [`distributed`] runs the same parts on
//! Kafka (`clew ledger`, `clew replica`, `clew submit`). [`demo`] loads the
//! national scenario from data and records it; [`ingest`] turns a folder of
//! DICOM files into a dataset version (the ingest crate scans and gates;
//! this publishes). Stream files ([`stream`]) are an input source for the
//! sequencer, [`synthetic`] writes realistic ones (`clew sample-stream`, the
//! end-to-end tests and the benchmarks use it); [`export`] writes a static
//! tlog-tiles mirror; [`memory`] says when the allocator gives freed memory
//! back (later in a server, not while a catalogue is rebuilt);
//! [`witnessing`] sends every new checkpoint to the configured witnesses
//! (`clew serve --witness`) and [`monitor`] is a partner's monitor of a
//! remote ledger (`clew monitor`). [`cli`] parses arguments (one module per
//! command family) and reports with progress bars and a one-line summary; errors
//! surface through anyhow with the context of what was tried. The
//! benchmarks are a separate binary, `clew-bench` (`services/bench`).

pub mod cli;
pub mod datadir;
pub mod demo;
pub mod distributed;
pub mod export;
pub mod ingest;
pub mod keyfiles;
pub mod local;
pub mod memory;
pub mod monitor;
pub mod server;
pub mod stream;
pub mod synthetic;
pub mod witnessing;

/// The page cache a full projection (`clew reindex`) runs with: a large
/// cache made reindexing a million events a sixth faster.
pub const PROJECTION_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}
