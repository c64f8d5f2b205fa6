//! The `clew` command line: argument types in [`args`], one module per
//! command family ([`ledger`], [`catalog`], [`serve`], [`ingest`],
//! [`access`], [`blobs`], [`witness`]), and the
//! entry point that sets up logging and dispatches.

mod access;
mod args;
mod blobs;
mod catalog;
mod ingest;
mod ledger;
mod serve;
mod witness;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

pub use args::Cli;
use args::Command;

use crate::keyfiles;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Everything Clew writes — ledger, catalogue, keys, tokens, manifests,
    // reports — holds restricted metadata or secrets: the operator's alone.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLEW_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,dicom_object=error,dicom_parser=error,clew=info,clew_node=info,clew_api=info,clew_sequencer=info,clew_bus=info",
                )
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // The shared pool (node records read for an answer, signature checks,
    // scans) is built on first use, and a thread spawned without a name
    // takes its creator's: left alone, its threads carried the name of
    // whichever thread used it first ("sequencer" in a server), so the
    // server's CPU by thread put query reads on the sequencer.
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("parallel-{i}"))
        .build_global()
    {
        tracing::warn!("the shared thread pool was already built: {e}");
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A key given as a file path or as the key text itself.
pub(crate) fn key_arg(value: &str) -> Result<String> {
    let p = Path::new(value);
    if p.is_file() {
        keyfiles::read(p)
    } else {
        Ok(value.trim().to_string())
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ledger(c) => ledger::run(c),
        Command::Catalog(c) => catalog::run(c),
        Command::Serve(c) => serve::run(c),
        Command::Ingest(c) => ingest::run(c),
        Command::Access(c) => access::run(c),
        Command::Blobs(c) => blobs::run(c),
        Command::Witness(c) => witness::run(c),
    }
}
