//! `clew ingest dicom` and `clew ingest dicomweb`: scan a folder or a PACS,
//! gate it, store its manifest and publish one signed
//! dataset-version-published event — into the local data directory
//! (embedded default) or through a running server's API. Both sources end in
//! the same [`decide`]: the same gate verdict, manifest and event.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clew_events::proto::{self, event::Body};
use clew_ingest::{
    imaging_summary, ConfidentialityTable, FolderScan, Manifest, ManifestSource, RefusedFile,
    SkippedFile,
};
use serde::Serialize;
use serde_json::json;

use crate::datadir::DataDir;

/// What to publish, whatever the source.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub dataset_id: String,
    pub version: String,
    pub site: Option<String>,
    pub derived_from: Vec<String>,
    pub release_notes: String,
    pub report: PathBuf,
    pub dry_run: bool,
}

/// A PACS to read and what to read from it.
#[derive(Debug, Clone)]
pub struct PacsRequest {
    pub endpoint: clew_dicomweb::Endpoint,
    pub selection: clew_dicomweb::Selection,
    pub digests: bool,
    pub scan_state: PathBuf,
}

/// Where the event goes.
pub enum Publisher<'a> {
    /// This process opens the data directory (no server may hold it).
    Local { dir: &'a DataDir, actor: String },
    /// A running `clew serve` / replica, with a bearer token.
    Server { url: String, token: String },
}

/// What a DICOMweb run read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DicomWebReport {
    pub name: String,
    pub base_url: String,
    pub studies: usize,
    pub series: usize,
    /// Series carried over from an interrupted run's scan state.
    pub resumed_series: usize,
    pub requests: u64,
    pub retries: u64,
    /// Bytes of answers read.
    pub bytes_read: u64,
    pub digests: bool,
}

/// The JSON report written for every run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicomweb: Option<DicomWebReport>,
    pub dataset_id: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// published, refused-identifiable, refused-by-ledger, no-instances,
    /// dry-run, pacs-error, interrupted.
    pub outcome: String,
    pub detail: String,
    pub profile: String,
    pub files: usize,
    pub instances: usize,
    pub series: usize,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_index: Option<u64>,
    /// Files (or PACS instances, by WADO-RS path) refused by the gate.
    pub refused_files: Vec<RefusedFile>,
    pub skipped_files: Vec<SkippedFile>,
}

/// Exit status of a refusal by the de-identification gate.
pub const EXIT_IDENTIFIABLE: u8 = 2;
/// Exit status of a refusal by the ledger (duplicate, conflict, …).
pub const EXIT_REFUSED: u8 = 3;

/// `clew ingest dicom`: returns the report (already written) and the exit status.
pub fn run(
    req: &IngestRequest,
    folder: &Path,
    publisher: Publisher<'_>,
) -> Result<(IngestReport, u8)> {
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    let table = ConfidentialityTable::standard()?;
    let files = clew_ingest::list_files(folder)?;
    let pb = crate::progress_bar(files.len() as u64, "scanning");
    let started = std::time::Instant::now();
    let scan = clew_ingest::scan_files(&files, &table, &|| pb.inc(1));
    pb.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = report_of(req, &scan, files.len());
    report.folder = Some(folder.display().to_string());
    let status = decide(
        req,
        &folder.display().to_string(),
        &scan,
        None,
        &mut report,
        publisher,
    )?;
    write_report(&req.report, &report)?;
    eprintln!(
        "{}: {} files in {:.1} s ({:.0} files/s): {} instances in {} series, {} refused, {} skipped; report {}",
        report.outcome,
        files.len(),
        elapsed,
        files.len() as f64 / elapsed.max(1e-9),
        report.instances,
        report.series,
        report.refused_files.len(),
        report.skipped_files.len(),
        req.report.display()
    );
    Ok((report, status))
}

/// `clew ingest dicomweb`: returns the report (already written) and the
/// exit status. A PACS that cannot be read (or an interruption) ends the run
/// with status 1, nothing published and the scan state kept for the next run.
pub fn run_dicomweb(
    req: &IngestRequest,
    pacs: &PacsRequest,
    publisher: Publisher<'_>,
) -> Result<(IngestReport, u8)> {
    let table = ConfidentialityTable::standard()?;
    let client = clew_dicomweb::Client::new(pacs.endpoint.clone())?;
    let key = pacs.selection.key(&pacs.endpoint.base_url, pacs.digests);
    let mut state = clew_dicomweb::ScanState::open(&pacs.scan_state, &key)?;
    let kept = state.len();
    let pb = crate::progress_bar(0, "series");
    if kept > 0 {
        eprintln!(
            "continuing from {}: {kept} series already read",
            pacs.scan_state.display()
        );
    }
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scanned = rt.block_on(async {
        let progress = |p: clew_dicomweb::ScanProgress| {
            pb.set_length(p.series);
            pb.set_position(p.series_read);
            pb.set_message(format!("{} studies, {} instances", p.studies, p.instances));
        };
        tokio::select! {
            r = clew_dicomweb::scan(&client, &pacs.selection, &table, pacs.digests, &mut state, &progress) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    drop(rt);
    pb.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let traffic = client.traffic();
    let ordering = std::sync::atomic::Ordering::Relaxed;
    let mut dicomweb = DicomWebReport {
        name: pacs.endpoint.name.clone(),
        base_url: pacs.endpoint.base_url.clone(),
        studies: 0,
        series: 0,
        resumed_series: 0,
        requests: traffic.requests.load(ordering),
        retries: traffic.retries.load(ordering),
        bytes_read: traffic.bytes.load(ordering),
        digests: pacs.digests,
    };
    let empty = FolderScan::default();
    let stopped =
        |outcome: &str, detail: String, dicomweb: DicomWebReport| -> Result<(IngestReport, u8)> {
            let mut report = report_of(req, &empty, 0);
            report.outcome = outcome.into();
            report.detail = detail;
            report.dicomweb = Some(dicomweb);
            write_report(&req.report, &report)?;
            eprintln!("error: {}", report.detail);
            Ok((report, 1))
        };
    let scanned = match scanned {
        None => {
            let detail = format!(
                "interrupted; nothing was published; {} series are kept in {} and a rerun continues from there",
                state.len(),
                pacs.scan_state.display()
            );
            return stopped("interrupted", detail, dicomweb);
        }
        Some(Err(e)) => {
            let detail = format!(
                "{e}; nothing was published; {} series read so far are kept in {} and a rerun continues from there",
                state.len(),
                pacs.scan_state.display()
            );
            return stopped("pacs-error", detail, dicomweb);
        }
        Some(Ok(s)) => s,
    };
    dicomweb.studies = scanned.studies;
    dicomweb.series = scanned.series;
    dicomweb.resumed_series = scanned.resumed_series;
    let scan = scanned.scan;
    let instances = scan.accepted.len() + scan.refused.len();
    let mut report = report_of(req, &scan, 0);
    report.dicomweb = Some(dicomweb);
    let source = ManifestSource {
        kind: "dicomweb".into(),
        name: pacs.endpoint.name.clone(),
        base_url: pacs.endpoint.base_url.clone(),
    };
    let status = decide(
        req,
        &pacs.endpoint.base_url,
        &scan,
        Some(source),
        &mut report,
        publisher,
    )?;
    write_report(&req.report, &report)?;
    // An outcome was reached: what the scan state kept is no longer needed.
    state.discard()?;
    eprintln!(
        "{}: {} studies, {} series, {} instances read from {} in {:.1} s ({:.0} instances/s, {} series carried over): {} accepted, {} refused; report {}",
        report.outcome,
        scanned.studies,
        scanned.series,
        instances,
        pacs.endpoint.name,
        elapsed,
        instances as f64 / elapsed.max(1e-9),
        scanned.resumed_series,
        report.instances,
        report.refused_files.len(),
        req.report.display()
    );
    Ok((report, status))
}

fn report_of(req: &IngestRequest, scan: &FolderScan, files: usize) -> IngestReport {
    IngestReport {
        folder: None,
        dicomweb: None,
        dataset_id: req.dataset_id.clone(),
        version: req.version.clone(),
        site: req.site.clone(),
        outcome: String::new(),
        detail: String::new(),
        profile:
            "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, Table E.1-1 \
                  (Basic Profile column from PS3.15 2026c)"
                .into(),
        files,
        instances: scan.accepted.len(),
        series: 0,
        bytes: scan.bytes,
        manifest_digest: None,
        event_id: None,
        leaf_index: None,
        refused_files: scan.refused.clone(),
        skipped_files: scan.skipped.clone(),
    }
}

fn write_report(path: &Path, report: &IngestReport) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn decide(
    req: &IngestRequest,
    from: &str,
    scan: &FolderScan,
    source: Option<ManifestSource>,
    report: &mut IngestReport,
    publisher: Publisher<'_>,
) -> Result<u8> {
    for s in &scan.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    if !scan.refused.is_empty() {
        for f in &scan.refused {
            for x in &f.findings {
                let name = if x.keyword.is_empty() {
                    String::new()
                } else {
                    format!(" {}", x.keyword)
                };
                eprintln!(
                    "refused {}: {}{name} at {}: {}",
                    f.path, x.tag, x.at, x.problem
                );
            }
        }
        report.outcome = "refused-identifiable".into();
        report.detail = format!(
            "{} of {} DICOM instances are not de-identified; nothing was published",
            scan.refused.len(),
            scan.refused.len() + scan.accepted.len()
        );
        return Ok(EXIT_IDENTIFIABLE);
    }
    if scan.accepted.is_empty() {
        report.outcome = "no-instances".into();
        report.detail = format!(
            "no DICOM instances in {} ({} files skipped); nothing was published",
            from,
            scan.skipped.len()
        );
        eprintln!("error: {}", report.detail);
        return Ok(1);
    }
    let mut manifest = Manifest::build(&scan.accepted);
    if let Some(source) = source {
        manifest = manifest.with_source(source);
    }
    let bytes = manifest.canonical_bytes();
    let digest = clew_ingest::digest_of(&bytes);
    report.series = manifest.series.len();
    report.manifest_digest = Some(digest.clone());
    let body = Body::DatasetVersionPublished(proto::DatasetVersionPublished {
        dataset_id: req.dataset_id.clone(),
        version: req.version.clone(),
        manifest_digest: digest.clone(),
        imaging_summary: Some(imaging_summary(&manifest, &scan.accepted)),
        was_derived_from: req.derived_from.clone(),
        release_notes: req.release_notes.clone(),
    });
    if req.dry_run {
        report.outcome = "dry-run".into();
        report.detail = "scanned and gated; nothing stored or published".into();
        return Ok(0);
    }
    let outcome = match publisher {
        Publisher::Local { dir, actor } => publish_local(dir, &actor, req, &bytes, body)?,
        Publisher::Server { url, token } => {
            publish_remote(&url, &token, req, &digest, &bytes, body)?
        }
    };
    match outcome {
        Published::Accepted {
            event_id,
            leaf_index,
        } => {
            report.outcome = "published".into();
            report.detail = format!(
                "dataset-version/{}@{} is leaf {leaf_index}",
                req.dataset_id, req.version
            );
            report.event_id = Some(event_id);
            report.leaf_index = Some(leaf_index);
            Ok(0)
        }
        Published::Refused { reason, detail } => {
            eprintln!("refused by the ledger: {reason}: {detail}");
            report.outcome = "refused-by-ledger".into();
            report.detail = format!("{reason}: {detail}");
            Ok(EXIT_REFUSED)
        }
    }
}

enum Published {
    Accepted { event_id: String, leaf_index: u64 },
    Refused { reason: String, detail: String },
}

fn publish_local(
    dir: &DataDir,
    actor: &str,
    req: &IngestRequest,
    manifest: &[u8],
    body: Body,
) -> Result<Published> {
    if !dir.has_ledger() {
        bail!(
            "{} holds no ledger; start one with `clew serve --data-dir {}` (or `clew init`), or publish to a running server with --server",
            dir.root().display(),
            dir.root().display()
        );
    }
    let origin = "unused: the ledger exists";
    let store = dir.manifest_store()?;
    let (node, _) = crate::local::start(dir, origin, &store).with_context(|| {
        format!(
            "opening {} (if `clew serve` is running on it, ingest through it with --server)",
            dir.root().display()
        )
    })?;
    let result = (|| -> Result<Published> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            while !node.ready() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            check_custodian_local(&node, req)?;
            // The manifest is stored before the event that cites it exists.
            store.put(bytes::Bytes::copy_from_slice(manifest)).await?;
            Ok(match node.record(actor, body, None).await? {
                clew_node::Outcome::Accepted(s) => Published::Accepted {
                    event_id: s.event_id,
                    leaf_index: s.leaf_index,
                },
                clew_node::Outcome::Rejected(r) => Published::Refused {
                    reason: r.reason.as_str_name().to_string(),
                    detail: r.detail,
                },
            })
        })
    })();
    node.shutdown();
    result
}

fn check_custodian_local(node: &Arc<clew_node::Node>, req: &IngestRequest) -> Result<()> {
    let Some(site) = &req.site else {
        return Ok(());
    };
    let Some(ds) = node
        .catalog()
        .node(&format!("dataset/{}", req.dataset_id))?
    else {
        bail!("dataset/{} is not registered", req.dataset_id);
    };
    let custodian = ds.attributes()["custodianSiteId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if &custodian != site {
        bail!(
            "dataset/{} is held by site {custodian:?}, not {site:?}",
            req.dataset_id
        );
    }
    Ok(())
}

fn publish_remote(
    url: &str,
    token: &str,
    req: &IngestRequest,
    digest: &str,
    manifest: &[u8],
    body: Body,
) -> Result<Published> {
    let Body::DatasetVersionPublished(v) = body else {
        bail!("only dataset versions are published by ingest");
    };
    let base = url.trim_end_matches('/');
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::new();
        let graphql = |query: &'static str, variables: serde_json::Value| {
            let http = http.clone();
            async move {
                let resp = http
                    .post(format!("{base}/graphql"))
                    .bearer_auth(token)
                    .json(&json!({"query": query, "variables": variables}))
                    .send()
                    .await
                    .with_context(|| format!("POST {base}/graphql"))?;
                let status = resp.status();
                let answer: serde_json::Value = resp
                    .json()
                    .await
                    .with_context(|| format!("answer of {base}/graphql ({status})"))?;
                anyhow::Ok(answer)
            }
        };
        if let Some(site) = &req.site {
            let answer = graphql(
                "query($s: String!) { entity(subject: $s) { attributes } }",
                json!({"s": format!("dataset/{}", req.dataset_id)}),
            )
            .await?;
            let Some(attrs) = answer["data"]["entity"]["attributes"].as_object() else {
                bail!("dataset/{} is not registered (or not visible to this token): {answer}", req.dataset_id);
            };
            let custodian = attrs
                .get("custodianSiteId")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if custodian != site {
                bail!("dataset/{} is held by site {custodian:?}, not {site:?}", req.dataset_id);
            }
        }
        let resp = http
            .put(format!("{base}/manifests/{digest}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(manifest.to_vec())
            .send()
            .await
            .with_context(|| format!("PUT {base}/manifests/{digest}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("storing the manifest: {status}: {}", resp.text().await.unwrap_or_default());
        }
        let input = serde_json::to_value(pbjson_input(&v)?)?;
        let answer = graphql(
            "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { eventId leafIndex } }",
            json!({"i": input}),
        )
        .await?;
        if let Some(r) = answer["data"]["publishDatasetVersion"].as_object() {
            return Ok(Published::Accepted {
                event_id: r["eventId"].as_str().unwrap_or_default().to_string(),
                leaf_index: r["leafIndex"].as_u64().unwrap_or_default(),
            });
        }
        let err = &answer["errors"][0];
        let reason = err["extensions"]["reason"]
            .as_str()
            .or(err["extensions"]["code"].as_str())
            .unwrap_or("ERROR")
            .to_string();
        let detail = err["message"].as_str().unwrap_or("no answer").to_string();
        Ok(Published::Refused { reason, detail })
    })
}

/// The proto3 JSON of the event body (what the GraphQL input takes).
fn pbjson_input(v: &proto::DatasetVersionPublished) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(v)?)
}
