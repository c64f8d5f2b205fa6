//! Imaging ingest.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::args::*;
use crate::ingest::{IngestReport, IngestRequest, PacsRequest, Publisher};

/// Runs one command of this family.
pub(super) fn run(command: IngestCommand) -> Result<ExitCode> {
    let IngestCommand::Ingest { kind } = command;
    let (report, status) = match kind {
        IngestKind::Dicom { folder, publish } => {
            let (req, data) = (request(&publish), publish.dir.data());
            crate::ingest::run(&req, &folder, publisher(&publish, &data)?)?
        }
        IngestKind::Dicomweb {
            base_url,
            pacs,
            publish,
        } => {
            let (req, data) = (request(&publish), publish.dir.data());
            let pacs = pacs_request(&base_url, *pacs)?;
            crate::ingest::run_dicomweb(&req, &pacs, publisher(&publish, &data)?)?
        }
    };
    print_summary(&report);
    Ok(ExitCode::from(status))
}

fn request(p: &PublishArgs) -> IngestRequest {
    IngestRequest {
        dataset_id: p.dataset.clone(),
        version: p.version.clone(),
        site: p.site.clone(),
        derived_from: p.derived_from.clone(),
        release_notes: p.notes.clone(),
        report: p.report.clone(),
        dry_run: p.dry_run,
    }
}

fn publisher<'a>(p: &PublishArgs, data: &'a crate::datadir::DataDir) -> Result<Publisher<'a>> {
    Ok(match (&p.server, &p.token_file) {
        (Some(url), Some(file)) => Publisher::Server {
            url: url.clone(),
            token: read_secret(file)?,
        },
        (Some(_), None) => bail!("--server needs --token-file"),
        _ => Publisher::Local {
            dir: data,
            actor: p.actor.clone(),
        },
    })
}

fn read_secret(file: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_string())
}

fn pacs_request(base_url: &str, a: PacsArgs) -> Result<PacsRequest> {
    let mut endpoint = clew_dicomweb::Endpoint::new(base_url, a.source_name.as_deref())?;
    endpoint.credentials = if let Some(file) = &a.pacs_token_file {
        clew_dicomweb::Credentials::Bearer(read_secret(file)?)
    } else if let Some(file) = &a.pacs_basic_auth_file {
        let text = read_secret(file)?;
        let Some((user, password)) = text.split_once(':') else {
            bail!("{} does not hold user:password", file.display());
        };
        clew_dicomweb::Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }
    } else {
        match (
            std::env::var("CLEW_PACS_USER"),
            std::env::var("CLEW_PACS_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => clew_dicomweb::Credentials::Basic { user, password },
            (Ok(_), Err(_)) => bail!("CLEW_PACS_USER is set but CLEW_PACS_PASSWORD is not"),
            _ => clew_dicomweb::Credentials::None,
        }
    };
    if let Some(ca) = &a.pacs_ca {
        endpoint.ca_pem =
            Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    endpoint.concurrency = a.concurrency;
    endpoint.timeout = Duration::from_secs(a.timeout_s.max(1));
    endpoint.retries = a.retries;
    endpoint.max_metadata_bytes = a.max_metadata_mib << 20;
    endpoint.max_instance_bytes = a.max_instance_mib << 20;
    for uid in &a.study_uids {
        if !clew_dicomweb::client::is_uid(uid) {
            bail!("--study-uid {uid:?} is not a DICOM UID");
        }
    }
    Ok(PacsRequest {
        endpoint,
        selection: clew_dicomweb::Selection {
            study_uids: a.study_uids,
            modalities: a.modalities,
            study_date: a.study_date,
            query: a.query,
            page_size: a.page_size.max(1),
        },
        digests: a.digests,
        scan_state: a.scan_state,
    })
}

fn print_summary(report: &IngestReport) {
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
}
