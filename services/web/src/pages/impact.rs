//! The withdrawal impact report (`/impact`): a list first — live
//! deployments first, every affected entity with how far downstream it is
//! and its status, counts per hop — as of the latest or a past checkpoint,
//! with CSV and JSON exports of exactly the list shown.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::lineage::as_of;
use super::{html, Chrome};
use crate::answers::{Checkpoint, CheckpointAtAnswer, Impact, ImpactAnswer, CHECKPOINT_AT, IMPACT};
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

struct Asked {
    version: String,
    as_of: String,
    when: String,
}

fn asked(raw: Option<&str>) -> Asked {
    let mut a = Asked {
        version: String::new(),
        as_of: String::new(),
        when: String::new(),
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            // A version id, or its subject.
            "version" => a.version = v.trim().trim_start_matches("dataset-version/").to_string(),
            "as_of" => a.as_of = v.trim().to_string(),
            "when" => a.when = v.trim().to_string(),
            _ => {}
        }
    }
    a
}

async fn impact(web: &Web, who: &SignedIn, a: &Asked) -> Result<(Impact, Checkpoint), WebError> {
    if a.version.is_empty() {
        return Err(WebError::BadRequest(
            "name the dataset version whose withdrawal to assess".into(),
        ));
    }
    let answer: ImpactAnswer = web
        .ask(
            &who.viewer,
            IMPACT,
            json!({ "version": a.version, "asOf": as_of(web, who, &a.as_of, &a.when).await? }),
        )
        .await?;
    let cp: CheckpointAtAnswer = web
        .ask(
            &who.viewer,
            CHECKPOINT_AT,
            json!({ "size": answer.impact.as_of }),
        )
        .await?;
    Ok((answer.impact, cp.checkpoint_at))
}

/// Rows rendered together; the browser skips laying out chunks off screen.
struct Chunk {
    /// The list number of its first row.
    start: usize,
    rows: Vec<Row>,
}

/// Rows per chunk.
const CHUNK: usize = 200;

struct Row {
    link: String,
    kind: &'static str,
    label: String,
    id: String,
    status: String,
    live: bool,
    hops: u32,
    site: String,
    owner: String,
    path: String,
}

/// How each affected entity is reached from the withdrawn version: the ids
/// along the way, by following each node's `reachedFrom` back to the start
/// (long paths shortened in the middle).
fn paths(i: &Impact) -> HashMap<String, String> {
    let from: HashMap<&str, (&str, &str)> = i
        .affected
        .iter()
        .filter_map(|n| {
            Some((
                n.subject.as_str(),
                (
                    n.reached_from.as_deref()?,
                    n.reached_by.as_deref().unwrap_or(""),
                ),
            ))
        })
        .collect();
    let id = |s: &str| text::id_of(s).to_string();
    i.affected
        .iter()
        .map(|n| {
            // Each step is an entity and (after the start) how it relates
            // to the one before: `nccid-cxr-deid@1.0 (wasDerivedFrom)`.
            let mut steps = Vec::new();
            let mut at = n.subject.as_str();
            loop {
                match from.get(at) {
                    Some((parent, relation)) => {
                        steps.push(format!("{} ({relation})", id(at)));
                        at = parent;
                    }
                    None => {
                        steps.push(id(at));
                        break;
                    }
                }
                if steps.len() > i.affected.len() + 1 {
                    break;
                }
            }
            steps.reverse();
            if steps.len() > 6 {
                let tail = steps.split_off(steps.len() - 3);
                steps.truncate(2);
                steps.push("…".into());
                steps.extend(tail);
            }
            (n.subject.clone(), steps.join(" → "))
        })
        .collect()
}

#[derive(Template)]
#[template(path = "impact.html")]
struct ImpactPage {
    chrome: Chrome,
    version: String,
    as_of: String,
    when: String,
    report: Option<Report>,
}

struct Report {
    /// Whether this is the latest answer (the evidence panel checks those).
    latest: bool,
    start_link: String,
    start_label: String,
    withdrawn: bool,
    affected: String,
    live: u64,
    per_hop: Vec<(u32, String)>,
    chunks: Vec<Chunk>,
    checkpoint: Checkpoint,
    csv: String,
    json: String,
    proofs: String,
    explorer: String,
    graph: String,
}

/// `GET /impact?version=…&as_of=…`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let a = asked(raw.as_deref());
    let report = if a.version.is_empty() {
        None
    } else {
        let (i, checkpoint) = impact(&web, &who, &a).await?;
        let mut per_hop: BTreeMap<u32, u64> = BTreeMap::new();
        for n in &i.affected {
            *per_hop.entry(n.depth).or_default() += 1;
        }
        let params = [
            ("version", a.version.as_str()),
            ("as_of", a.as_of.as_str()),
            ("when", a.when.as_str()),
        ];
        let subject = format!("dataset-version/{}", a.version);
        let path = paths(&i);
        Some(Report {
            latest: a.as_of.is_empty() && a.when.is_empty(),
            start_link: text::entity_link(&i.dataset_version.subject),
            start_label: i.dataset_version.label.clone(),
            withdrawn: i.dataset_version.ended_leaf.is_some(),
            affected: text::count(i.affected.len() as u64),
            live: i.live_deployments,
            per_hop: per_hop
                .into_iter()
                .map(|(d, n)| (d, text::count(n)))
                .collect(),
            chunks: i
                .affected
                .chunks(CHUNK)
                .enumerate()
                .map(|(k, part)| Chunk {
                    start: k * CHUNK + 1,
                    rows: part
                        .iter()
                        .map(|n| Row {
                            link: text::entity_link(&n.subject),
                            kind: text::kind_label(&n.kind),
                            label: n.label.clone(),
                            id: text::id_of(&n.subject).to_string(),
                            status: n.status.clone().unwrap_or_default(),
                            live: n.kind == "deployment" && n.status.as_deref() == Some("LIVE"),
                            hops: n.depth,
                            site: n.site.clone().unwrap_or_default(),
                            owner: n.owner.clone().unwrap_or_default(),
                            path: path.get(&n.subject).cloned().unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
            checkpoint,
            csv: text::link("/impact.csv", &params),
            json: text::link("/impact.json", &params),
            graph: text::link("/impact/graph.json", &params),
            proofs: text::link("/session/proofs/impact", &[("datasetVersion", &a.version)]),
            explorer: text::link(
                "/lineage",
                &[
                    ("subject", subject.as_str()),
                    ("direction", "downstream"),
                    ("depth", "10"),
                    ("as_of", a.as_of.as_str()),
                    ("when", a.when.as_str()),
                ],
            ),
        })
    };
    html(&ImpactPage {
        chrome: Chrome::of(&who, "impact"),
        version: a.version,
        as_of: a.as_of,
        when: a.when,
        report,
    })
}

/// One CSV field (RFC 4180 §2), with a leading formula character made
/// text so a spreadsheet never runs a cell (OWASP CSV injection).
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn attachment(name: &str, kind: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A file name from a version id: letters, digits, `-`, `.`, `_` only.
fn file_stem(version: &str) -> String {
    let stem: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("impact-{stem}")
}

/// `GET /impact.csv`: the report's list, one row per affected entity.
pub(crate) async fn csv(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let a = asked(raw.as_deref());
    let (i, cp) = impact(&web, &who, &a).await?;
    let path = paths(&i);
    let mut out = String::from(
        "subject,type,label,status,hops,live_deployment,site,owner,reached_from,relation,path,as_of_tree_size\r\n",
    );
    for n in &i.affected {
        let live = n.kind == "deployment" && n.status.as_deref() == Some("LIVE");
        let fields = [
            csv_field(&n.subject),
            csv_field(&n.kind),
            csv_field(&n.label),
            csv_field(n.status.as_deref().unwrap_or("")),
            n.depth.to_string(),
            live.to_string(),
            csv_field(n.site.as_deref().unwrap_or("")),
            csv_field(n.owner.as_deref().unwrap_or("")),
            csv_field(n.reached_from.as_deref().unwrap_or("")),
            csv_field(n.reached_by.as_deref().unwrap_or("")),
            csv_field(path.get(&n.subject).map_or("", String::as_str)),
            cp.size.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    Ok(attachment(
        &format!("{}.csv", file_stem(&a.version)),
        "text/csv; charset=utf-8",
        out,
    ))
}

/// `GET /impact.json`: the API's impact answer and the checkpoint it is for.
pub(crate) async fn json(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let a = asked(raw.as_deref());
    let (i, cp) = impact(&web, &who, &a).await?;
    let body = serde_json::to_string_pretty(&json!({ "impact": i, "checkpoint": cp }))
        .map_err(|e| WebError::Api(clew_api::ApiError::Internal(e.to_string())))?;
    Ok(attachment(
        &format!("{}.json", file_stem(&a.version)),
        "application/json",
        body,
    ))
}

/// `GET /impact/graph.json?…` (the page's parameters): the report, as the
/// drawn graph is given it.
pub(crate) async fn graph(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let (i, _) = impact(&web, &who, &asked(raw.as_deref())).await?;
    Ok(axum::Json(crate::drawing::of_impact(&i)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::LineageNode;

    #[test]
    fn a_csv_field_is_quoted_and_never_a_formula() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "'-1");
    }

    fn affected(subject: &str, from: Option<&str>, by: &str, depth: u32) -> LineageNode {
        LineageNode {
            affected: true,
            reached_from: from.map(str::to_string),
            reached_by: Some(by.into()),
            ..LineageNode::plain(subject, depth)
        }
    }

    #[test]
    fn a_path_runs_from_the_withdrawn_version_and_shortens_in_the_middle() {
        let start = "dataset-version/v0@1";
        let mut nodes = Vec::new();
        let mut parent = start.to_string();
        for k in 1..=8 {
            let s = format!("dataset-version/v{k}@1");
            nodes.push(affected(&s, Some(&parent), "wasDerivedFrom", k));
            parent = s;
        }
        let i = Impact {
            as_of: 9,
            live_deployments: 0,
            dataset_version: affected(start, None, "", 0),
            affected: nodes,
        };
        let p = paths(&i);
        assert_eq!(p["dataset-version/v1@1"], "v0@1 → v1@1 (wasDerivedFrom)");
        assert_eq!(
            p["dataset-version/v8@1"],
            "v0@1 → v1@1 (wasDerivedFrom) → … → v6@1 (wasDerivedFrom) → v7@1 (wasDerivedFrom) → v8@1 (wasDerivedFrom)"
        );
    }

    #[test]
    fn an_export_file_name_carries_no_path_or_quote() {
        assert_eq!(file_stem("northgate-cxr@1.0"), "impact-northgate-cxr_1.0");
        assert_eq!(file_stem("../\"x"), "impact-..__x");
    }
}
