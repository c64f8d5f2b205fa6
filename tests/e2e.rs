//! Clew's end-to-end suites, linked as one test binary (one link instead of
//! one per suite). Each module is a suite over the real `clew` binary and
//! the real components it names; `tests/README.md` says what each covers and
//! what it needs. Run one suite with `cargo test -p clew --test e2e <suite>::`.

mod support;

mod access_requests;
mod api_access;
mod api_e2e;
mod blob_store;
mod catalog_cli;
mod chart;
mod crash_safety;
mod fuzz;
mod hostile;
mod ingest_dicom;
mod ingest_dicomweb;
mod kafka_e2e;
mod ledger_cli;
mod outside_verifier;
mod proven_answers;
mod standards;
mod web;
mod witness;
