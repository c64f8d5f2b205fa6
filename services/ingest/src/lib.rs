//! DICOM ingest: what a folder of DICOM files from a hospital trust contains,
//! whether it is de-identified, and the record Clew publishes about it.
//! Clew never stores images.
//!
//! Data flow of [`scan_folder`]:
//! 1. the folder is walked (symlinks not followed) and every regular file is
//!    read in parallel on the rayon pool ([`scan::scan_file`]): its SHA-256
//!    over all its bytes, then its whole data set parsed with `dicom-object`
//!    (what follows Pixel Data (7FE0,0010) too: private groups, padding and
//!    signatures sit there, and the gate must see them). Files that are not DICOM Part 10,
//!    truncated or malformed are skipped and reported, never fatal;
//! 2. each instance goes through the de-identification gate ([`scan::gate`],
//!    DICOM PS3.15 Annex E with Table E.1-1 compiled in from
//!    `data/ps3.15-table-e.1-1.csv`, see [`table`]): it must declare
//!    PatientIdentityRemoved (0012,0062) = YES and a method, and hold no
//!    attribute the Basic Profile removes (X) unless a declared option keeps
//!    it, and no private attribute without Retain Safe Private;
//! 3. instances are grouped into series and written as a canonical JSON
//!    [`Manifest`] whose SHA-256 is the manifest digest; [`imaging_summary`]
//!    derives the searchable summary.
//!
//! The caller (the `clew ingest dicom` command) refuses the whole folder when
//! any file fails the gate, stores the manifest in the blob store (`clew-blobs`) and
//! publishes one signed dataset-version-published event carrying the digest.

pub mod dicom_json;
pub mod manifest;
pub mod scan;
pub mod table;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

pub use dicom_json::{object_from_json, scan_json, JsonModelError};
pub use manifest::{digest_of, imaging_summary, Manifest, ManifestSource, MANIFEST_FORMAT};
pub use scan::{FileOutcome, Finding, InstanceHeader};
pub use table::{ConfidentialityTable, ProfileOption};

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("confidentiality profile table: {0}")]
    Table(String),
}

/// A file (or a PACS instance, named by its WADO-RS path) refused by the
/// de-identification gate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RefusedFile {
    pub path: String,
    pub findings: Vec<Finding>,
}

/// A file skipped as not DICOM, truncated or malformed.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// Everything a scan of one folder (or a PACS) found.
#[derive(Debug, Clone, Default)]
pub struct FolderScan {
    /// Instances that passed the gate, sorted by path.
    pub accepted: Vec<InstanceHeader>,
    /// Instances that failed it, sorted by path.
    pub refused: Vec<RefusedFile>,
    pub skipped: Vec<SkippedFile>,
    /// Bytes read.
    pub bytes: u64,
}

/// Lists the regular files under `dir` (relative `/`-separated path, full path), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, IngestError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            IngestError::Io {
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            }
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap_or(entry.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        files.push((rel, entry.into_path()));
    }
    files.sort();
    Ok(files)
}

/// Reads and checks every file in `files` in parallel; `progress` is called
/// once per file (from pool threads).
pub fn scan_files(
    files: &[(String, PathBuf)],
    table: &ConfidentialityTable,
    progress: &(dyn Fn() + Sync),
) -> FolderScan {
    let outcomes: Vec<FileOutcome> = files
        .par_iter()
        .map(|(rel, path)| {
            let o = scan::scan_file(path, rel, table);
            progress();
            o
        })
        .collect();
    let mut scan = FolderScan::default();
    for o in outcomes {
        match o {
            FileOutcome::Instance { header, findings } => {
                scan.bytes += header.size;
                if findings.is_empty() {
                    scan.accepted.push(*header);
                } else {
                    scan.refused.push(RefusedFile {
                        path: header.path,
                        findings,
                    });
                }
            }
            FileOutcome::Skipped { path, reason } => {
                scan.skipped.push(SkippedFile { path, reason })
            }
        }
    }
    scan
}

/// [`list_files`] then [`scan_files`].
pub fn scan_folder(
    dir: &Path,
    table: &ConfidentialityTable,
    progress: &(dyn Fn() + Sync),
) -> Result<FolderScan, IngestError> {
    Ok(scan_files(&list_files(dir)?, table, progress))
}
