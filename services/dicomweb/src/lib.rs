//! Reading a hospital's PACS over DICOMweb (DICOM PS3.18) for ingest: what
//! a dataset version holds is found where the images live, checked by the
//! same de-identification gate as a folder, and recorded with where it can
//! be retrieved. Clew reads metadata (and, with `--digests`, each instance
//! once, to hash it); it stores no pixels.
//!
//! Data flow of [`scan`]:
//! 1. the [`Selection`] becomes QIDO-RS study searches (`GET {base}/studies`
//!    with StudyDate, ModalitiesInStudy, StudyInstanceUID and any other
//!    attribute), each paged with `limit` / `offset` until the server sends
//!    an empty page ([`scan::scan`]);
//! 2. each study's series are searched (`GET studies/{uid}/series`), with
//!    the instance count the PACS reports;
//! 3. each series' instance metadata is read with WADO-RS
//!    (`GET studies/{uid}/series/{uid}/metadata`, `application/dicom+json`),
//!    every object is read as a DICOM data set (`clew_ingest::dicom_json`)
//!    and put through the PS3.15 gate; with `digests`, every instance is
//!    retrieved (`multipart/related; type="application/dicom"`, its stored
//!    transfer syntax) and hashed and gated as the file it is, so the
//!    manifest is the one a folder of the same files gives;
//! 4. each series read is appended to the [`ScanState`] file before the next
//!    is taken, so an interrupted run's successor reads only the rest.
//!
//! Every request goes through one [`Client`]: bounded concurrency, a time-out,
//! retries with back-off for what may pass (no answer, 5xx, 429), and checks
//! on every answer — status, media type, size, JSON, UIDs — that refuse a
//! hostile or broken one with [`DicomWebError::Hostile`], naming the URL and
//! the problem. Redirects are refused, never followed.
//!
//! The caller (`clew ingest dicomweb`) publishes only when the whole scan
//! completed and every instance passed: the manifest and the event are
//! built exactly as for a folder.

pub mod client;
pub mod scan;
pub mod state;

use std::path::PathBuf;

pub use client::{Client, Credentials, Endpoint, Traffic};
pub use scan::{scan, PacsScan, ScanProgress, Selection};
pub use state::{ScanState, STATE_FORMAT};

/// Errors of reading a PACS.
#[derive(Debug, thiserror::Error)]
pub enum DicomWebError {
    /// The endpoint's settings cannot be used.
    #[error("{0}")]
    Config(String),
    /// No usable answer after every attempt (network, time-out, 5xx, 429).
    #[error("{url}: no usable answer after {attempts} attempts: {detail}")]
    Unreachable {
        url: String,
        attempts: u32,
        detail: String,
    },
    /// The PACS said no (401, 403, 404, …).
    #[error("{url}: the PACS answered {status}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    /// An answer Clew will not believe: wrong media type, broken or oversized
    /// body, malformed DICOM JSON or Part 10, a redirect, UIDs that do not fit.
    #[error("{url}: answer refused: {problem}")]
    Hostile { url: String, problem: String },
    /// The scan state file cannot be kept.
    #[error("scan state {}: {detail}", path.display())]
    State { path: PathBuf, detail: String },
}
