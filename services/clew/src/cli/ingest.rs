//! Imaging ingest.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::args::*;

/// Runs one command of this family.
pub(super) fn run(command: IngestCommand) -> Result<ExitCode> {
    match command {
        IngestCommand::Ingest {
            kind:
                IngestKind::Dicom {
                    folder,
                    dataset,
                    version,
                    site,
                    derived_from,
                    notes,
                    report,
                    dry_run,
                    dir,
                    actor,
                    server,
                    token_file,
                },
        } => {
            let req = crate::ingest::IngestRequest {
                folder,
                dataset_id: dataset,
                version,
                site,
                derived_from,
                release_notes: notes,
                report,
                dry_run,
            };
            let data = dir.data();
            let publisher = match (server, token_file) {
                (Some(url), Some(file)) => crate::ingest::Publisher::Server {
                    url,
                    token: std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                        .trim()
                        .to_string(),
                },
                (Some(_), None) => bail!("--server needs --token-file"),
                _ => crate::ingest::Publisher::Local { dir: &data, actor },
            };
            let (report, status) = crate::ingest::run(&req, publisher)?;
            println!(
                "{}",
                serde_json::json!({
                    "outcome": report.outcome,
                    "datasetVersion": format!("{}@{}", report.dataset_id, report.version),
                    "manifestDigest": report.manifest_digest,
                    "leafIndex": report.leaf_index,
                    "instances": report.instances,
                    "series": report.series,
                    "refusedFiles": report.refused_files.len(),
                    "skippedFiles": report.skipped_files.len(),
                    "detail": report.detail,
                })
            );
            Ok(ExitCode::from(status))
        }
    }
}
