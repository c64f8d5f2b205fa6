//! A scan of a PACS: the studies a selection picks (QIDO-RS, paged), their
//! series, and each series' instance metadata (WADO-RS), every instance put
//! through the same de-identification gate as a file on disk.

use std::collections::HashSet;

use clew_ingest::scan::{scan_bytes, FileOutcome};
use clew_ingest::{scan_json, ConfidentialityTable, FolderScan, RefusedFile};
use futures_util::stream::FuturesUnordered;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::client::{is_uid, Client};
use crate::state::{InstanceRecord, ScanState, SeriesRecord};
use crate::DicomWebError;

/// Which studies to read: every combination of the listed study UIDs and
/// modalities (each list may be empty), each with the date range and the
/// further attributes, as QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// StudyInstanceUID (0020,000D) values; empty: any.
    pub study_uids: Vec<String>,
    /// ModalitiesInStudy (0008,0061) values; empty: any.
    pub modalities: Vec<String>,
    /// StudyDate (0008,0020): a date or a range, "20200101-20201231".
    pub study_date: Option<String>,
    /// Any other attribute matches, keyword or tag, e.g. ("AccessionNumber", "A123").
    pub query: Vec<(String, String)>,
    /// Results asked for per search request (`limit`).
    pub page_size: usize,
}

impl Selection {
    /// The QIDO-RS queries of the selection (one per UID × modality).
    pub fn queries(&self) -> Vec<Vec<(String, String)>> {
        let uids: Vec<Option<&String>> = if self.study_uids.is_empty() {
            vec![None]
        } else {
            self.study_uids.iter().map(Some).collect()
        };
        let modalities: Vec<Option<&String>> = if self.modalities.is_empty() {
            vec![None]
        } else {
            self.modalities.iter().map(Some).collect()
        };
        let mut out = Vec::new();
        for uid in &uids {
            for modality in &modalities {
                let mut q = self.query.clone();
                if let Some(d) = &self.study_date {
                    q.push(("StudyDate".into(), d.clone()));
                }
                if let Some(m) = modality {
                    q.push(("ModalitiesInStudy".into(), (*m).clone()));
                }
                if let Some(u) = uid {
                    q.push(("StudyInstanceUID".into(), (*u).clone()));
                }
                out.push(q);
            }
        }
        out
    }

    /// The key of a run over `base_url` with this selection (see [`ScanState`]).
    pub fn key(&self, base_url: &str, digests: bool) -> String {
        let mut queries = self.queries();
        for q in &mut queries {
            q.sort();
        }
        queries.sort();
        let text = json!({"baseUrl": base_url, "queries": queries, "digests": digests});
        hex::encode(Sha256::digest(text.to_string().as_bytes()))
    }
}

/// How far a scan has come (passed to the progress callback).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanProgress {
    pub studies: u64,
    /// Series found so far.
    pub series: u64,
    /// Series read (or carried over from the scan state).
    pub series_read: u64,
    pub instances: u64,
}

/// Everything a scan of a PACS found.
#[derive(Debug, Clone)]
pub struct PacsScan {
    /// Instances that passed the gate (empty paths) and those that did not
    /// (named by their WADO-RS path); nothing is skipped: an answer Clew
    /// cannot read ends the scan with an error instead.
    pub scan: FolderScan,
    pub studies: usize,
    pub series: usize,
    /// Series carried over from an interrupted run's scan state.
    pub resumed_series: usize,
}

/// A value of `tag` in a DICOM JSON object as text (the first value).
fn first_text(item: &Json, tag: &str) -> Option<String> {
    match item.get(tag)?.get("Value")?.get(0)? {
        Json::String(s) => Some(s.trim().to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every result of a QIDO-RS search, paged with `limit` / `offset`
/// (PS3.18 8.3.4.4) until a page brings nothing. Returns each result's UID
/// (of `uid_tag`, checked) with the result.
///
/// Some servers take `limit` as the end of the window rather than its size
/// on a search they filter themselves (Orthanc 1.10 with ModalitiesInStudy
/// answers `offset=40&limit=40` with nothing though more match). So when a
/// full page is followed by an empty one, the window is asked for once more
/// as `limit = offset + page`: a server that pages by the standard answers
/// nothing again, one that does not answers the next page, and from then on
/// every request is asked that way.
async fn search(
    client: &Client,
    path: &str,
    query: &[(String, String)],
    page_size: usize,
    uid_tag: &str,
) -> Result<Vec<(String, Json)>, DicomWebError> {
    let page_size = page_size.max(1);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut offset = 0usize;
    let mut last_page = 0usize;
    let mut limit_is_end = false;
    let mut first_page = 0usize;
    loop {
        let ask = |limit: usize| {
            let mut q = query.to_vec();
            q.push(("limit".into(), limit.to_string()));
            q.push(("offset".into(), offset.to_string()));
            q
        };
        let limit = if limit_is_end {
            offset + page_size
        } else {
            page_size
        };
        let mut page = client.get_json_array(path, &ask(limit)).await?;
        if page.is_empty() && !limit_is_end && offset > 0 && last_page >= page_size {
            page = client
                .get_json_array(path, &ask(offset + page_size))
                .await?;
            if !page.is_empty() {
                tracing::warn!(
                    pacs = %client.endpoint().name,
                    url = %client.url(path),
                    "the server takes `limit` as the end of the window; paging accordingly"
                );
                limit_is_end = true;
            }
        }
        if page.is_empty() {
            return Ok(out);
        }
        if offset == 0 {
            first_page = page.len();
        }
        let mut new = 0;
        let n = page.len();
        for item in page {
            let uid = first_text(&item, uid_tag).unwrap_or_default();
            if !is_uid(&uid) {
                return Err(DicomWebError::Hostile {
                    url: client.url(path),
                    problem: format!("a search result's ({uid_tag}) {uid:?} is not a UID"),
                });
            }
            if seen.insert(uid.clone()) {
                new += 1;
                out.push((uid, item));
            }
        }
        if new == 0 {
            // A server that ignores `limit` sent everything at once.
            if first_page > page_size {
                return Ok(out);
            }
            return Err(DicomWebError::Hostile {
                url: client.url(path),
                problem: format!(
                    "the page at offset {offset} repeats earlier results: the server does not page with limit/offset"
                ),
            });
        }
        offset += n;
        last_page = n;
    }
}

/// Reads one series: its instance metadata, each instance gated; with
/// `digests`, each instance retrieved too, hashed and gated as the file it is.
async fn read_series(
    client: &Client,
    table: &ConfidentialityTable,
    digests: bool,
    study: &str,
    series: &str,
    reported: Option<u64>,
) -> Result<SeriesRecord, DicomWebError> {
    let path = format!("studies/{study}/series/{series}/metadata");
    let items = client.get_json_array(&path, &[]).await?;
    let hostile = |problem: String| DicomWebError::Hostile {
        url: client.url(&path),
        problem,
    };
    if items.is_empty() {
        return Err(hostile(
            "the metadata of a series the search listed holds no instance".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut listed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let outcome =
            scan_json(item, &path, table).map_err(|e| hostile(format!("instance {i}: {e}")))?;
        let FileOutcome::Instance { header, findings } = outcome else {
            return Err(hostile(format!("instance {i} could not be read")));
        };
        if header.study_instance_uid != study || header.series_instance_uid != series {
            return Err(hostile(format!(
                "instance {i} belongs to study {} series {}, not the series asked for",
                header.study_instance_uid, header.series_instance_uid
            )));
        }
        let sop = header.sop_instance_uid.clone();
        if !is_uid(&sop) {
            return Err(hostile(format!(
                "instance {i}: SOPInstanceUID {sop:?} is not a UID"
            )));
        }
        if !seen.insert(sop.clone()) {
            return Err(hostile(format!("SOPInstanceUID {sop} is listed twice")));
        }
        listed.push((sop, *header, findings));
    }
    let instances: Vec<InstanceRecord> = if digests {
        stream::iter(listed)
            .map(|(sop, _, _)| async move {
                let location = format!("studies/{study}/series/{series}/instances/{sop}");
                let bytes = client.get_instance(study, series, &sop).await?;
                let hostile = |problem: String| DicomWebError::Hostile {
                    url: client.url(&location),
                    problem,
                };
                match scan_bytes(&bytes, &location, table) {
                    FileOutcome::Instance { header, findings } => {
                        if header.sop_instance_uid != sop
                            || header.series_instance_uid != series
                            || header.study_instance_uid != study
                        {
                            return Err(hostile(format!(
                                "the file retrieved is instance {} of series {}, not the one asked for",
                                header.sop_instance_uid, header.series_instance_uid
                            )));
                        }
                        let mut header = *header;
                        header.path.clear();
                        Ok(record(location, header, findings))
                    }
                    FileOutcome::Skipped { reason, .. } => Err(hostile(format!(
                        "the instance retrieved is not a readable Part 10 file: {reason}"
                    ))),
                }
            })
            .buffer_unordered(client.endpoint().concurrency.max(1))
            .try_collect()
            .await?
    } else {
        listed
            .into_iter()
            .map(|(sop, header, findings)| {
                record(
                    format!("studies/{study}/series/{series}/instances/{sop}"),
                    header,
                    findings,
                )
            })
            .collect()
    };
    Ok(SeriesRecord {
        study_instance_uid: study.to_string(),
        series_instance_uid: series.to_string(),
        reported_instances: reported,
        instances,
    })
}

fn record(
    location: String,
    header: clew_ingest::InstanceHeader,
    findings: Vec<clew_ingest::Finding>,
) -> InstanceRecord {
    InstanceRecord {
        location,
        // A refused instance keeps only its findings: no identifying value
        // is written to the scan state.
        header: findings.is_empty().then_some(header),
        findings,
    }
}

/// Scans what `selection` picks on the PACS behind `client`. Series already
/// in `state` (unchanged) are not read again; each series read is recorded
/// there before the next result is taken. `progress` is called as the scan
/// goes.
pub async fn scan(
    client: &Client,
    selection: &Selection,
    table: &ConfidentialityTable,
    digests: bool,
    state: &mut ScanState,
    progress: &(dyn Fn(ScanProgress) + Sync),
) -> Result<PacsScan, DicomWebError> {
    let mut p = ScanProgress::default();
    // Studies (0020,000D), the union of every query's results.
    let mut studies: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for q in selection.queries() {
        for (uid, _) in search(client, "studies", &q, selection.page_size, "0020000D").await? {
            if seen.insert(uid.clone()) {
                studies.push(uid);
                p.studies += 1;
                progress(p);
            }
        }
    }
    studies.sort();
    // Their series (0020,000E), with the instance counts the PACS reports;
    // each series is read as soon as its study is listed (the client's
    // permits bound the requests in flight, listings and reads together).
    let concurrency = client.endpoint().concurrency.max(1);
    let mut listing = stream::iter(studies.iter())
        .map(|study| async move {
            let found = search(
                client,
                &format!("studies/{study}/series"),
                &[],
                selection.page_size,
                "0020000E",
            )
            .await?;
            let series: Vec<(String, String, Option<u64>)> = found
                .into_iter()
                .map(|(uid, item)| {
                    let reported = first_text(&item, "00201209").and_then(|n| n.parse().ok());
                    (study.clone(), uid, reported)
                })
                .collect();
            Ok::<_, DicomWebError>(series)
        })
        .buffer_unordered(concurrency);
    let mut reading = FuturesUnordered::new();
    let mut records: Vec<SeriesRecord> = Vec::new();
    let (mut listed, mut resumed_series) = (false, 0usize);
    loop {
        tokio::select! {
            found = listing.next(), if !listed => {
                let Some(found) = found else {
                    listed = true;
                    continue;
                };
                for (study, series, reported) in found? {
                    p.series += 1;
                    if let Some(r) = state.series(&study, &series, reported) {
                        resumed_series += 1;
                        p.series_read += 1;
                        p.instances += r.instances.len() as u64;
                        records.push(r.clone());
                    } else {
                        reading.push(async move {
                            read_series(client, table, digests, &study, &series, reported).await
                        });
                    }
                }
                progress(p);
            }
            Some(r) = reading.next(), if !reading.is_empty() => {
                let r = r?;
                state.record(r.clone())?;
                p.series_read += 1;
                p.instances += r.instances.len() as u64;
                progress(p);
                records.push(r);
            }
            else => break,
        }
    }
    drop(listing);
    let mut scan = FolderScan::default();
    for r in records {
        for i in r.instances {
            match i.header {
                Some(h) if i.findings.is_empty() => {
                    scan.bytes += h.size;
                    scan.accepted.push(h);
                }
                _ => scan.refused.push(RefusedFile {
                    path: i.location,
                    findings: i.findings,
                }),
            }
        }
    }
    scan.refused.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(PacsScan {
        scan,
        studies: studies.len(),
        series: p.series as usize,
        resumed_series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_is_every_uid_by_every_modality_and_its_key_ignores_order() {
        let s = Selection {
            study_uids: vec!["1.2".into(), "1.3".into()],
            modalities: vec!["CT".into(), "MR".into()],
            study_date: Some("20200101-20201231".into()),
            query: vec![("AccessionNumber".into(), "A1".into())],
            page_size: 50,
        };
        let q = s.queries();
        assert_eq!(q.len(), 4);
        assert!(q[0].contains(&("StudyDate".into(), "20200101-20201231".into())));
        assert!(q[3].contains(&("StudyInstanceUID".into(), "1.3".into())));
        assert!(q[3].contains(&("ModalitiesInStudy".into(), "MR".into())));
        let mut r = s.clone();
        r.modalities.reverse();
        assert_eq!(s.key("http://p", false), r.key("http://p", false));
        assert_ne!(s.key("http://p", false), s.key("http://p", true));
        assert_eq!(Selection::default().queries(), vec![Vec::new()]);
    }
}
