//! The read model of access: projects, access requests, who holds access to
//! a dataset (now and between two dates, also as a proof-carrying answer)
//! and the public data-use register, each for one viewer.
//!
//! What a viewer sees here follows the same rules as everywhere else
//! (`access::Viewer`): a request is visible to its requester, the members of
//! its project and governance; in the register a dataset the viewer may not
//! see appears only as `[restricted]`. A request shows the dataset ids its
//! requester typed, verbatim: the ledger accepts requests for ids that do not
//! exist, so the echo says nothing about which hidden datasets do (showing
//! `[restricted]` for exactly the existing ones would).

use std::collections::{BTreeMap, BTreeSet};

use async_graphql::SimpleObject;
use clew_catalog::NodeRecord;
use clew_events::proto::{self, Role};
use clew_ledger::{AccessHolder, ProvenAnswer};
use clew_node::Node;
use serde::Serialize;
use serde_json::Value;

use super::{proven_events, with_signing_keys};
use crate::access::{Viewer, REDACTED};
use crate::ApiError;

/// Answers of this module.
pub type Result<T> = std::result::Result<T, ApiError>;

/// One step of an access request's life.
#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStep {
    /// State the request entered.
    pub state: String,
    /// Leaf of the event.
    pub leaf_index: u64,
    /// Event id.
    pub event_id: String,
    /// Who took the step.
    pub actor: String,
    /// When (the event's time).
    pub time: String,
    /// The reviewer's or requester's reason.
    pub reason: Option<String>,
    /// The requester's answer to a request for changes.
    pub response: Option<String>,
    /// Conditions of an approval.
    pub conditions: Vec<String>,
    /// Grants an approval made.
    pub grant_ids: Vec<String>,
}

/// An access request as its requester, its project and governance see it.
#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    /// Request id.
    pub id: String,
    /// Principal that asked.
    pub requester: String,
    /// Project it is for, if any.
    pub project_id: Option<String>,
    /// Datasets asked for (every version).
    pub dataset_ids: Vec<String>,
    /// Specific versions asked for.
    pub dataset_version_ids: Vec<String>,
    /// Stated purpose.
    pub purpose: String,
    /// Days of access asked for.
    pub requested_days: u32,
    /// Data-use agreement accepted: id.
    pub agreement_id: String,
    /// Data-use agreement accepted: version.
    pub agreement_version: String,
    /// Current state (`SUBMITTED`, `UNDER_REVIEW`, `CHANGES_REQUESTED`,
    /// `RESUBMITTED`, `APPROVED`, `APPROVED_WITH_CONDITIONS`, `DENIED`, `WITHDRAWN`).
    pub state: String,
    /// When it was submitted.
    pub submitted_at: String,
    /// Every step, oldest first.
    pub transitions: Vec<RequestStep>,
    /// Grants its approval made.
    pub grant_ids: Vec<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestScope {
    /// The viewer's own, and those of its projects.
    Mine,
    /// Requests awaiting a decision (governance).
    Queue,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn request_view(node: &NodeRecord) -> AccessRequest {
    let a = node.attributes();
    let terms = &a["terms"];
    let transitions: Vec<RequestStep> = a["transitions"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|t| RequestStep {
                    state: text(&t["state"]),
                    leaf_index: t["leaf"].as_u64().unwrap_or_default(),
                    event_id: text(&t["eventId"]),
                    actor: text(&t["actor"]),
                    time: text(&t["time"]),
                    reason: t["reason"].as_str().map(str::to_string),
                    response: t["response"].as_str().map(str::to_string),
                    conditions: strings(&t["conditions"]),
                    grant_ids: strings(&t["grantIds"]),
                })
                .collect()
        })
        .unwrap_or_default();
    AccessRequest {
        id: node.id.clone(),
        requester: text(&a["requester"]),
        project_id: terms["projectId"].as_str().map(str::to_string),
        dataset_ids: strings(&terms["datasetIds"]),
        dataset_version_ids: strings(&terms["datasetVersionIds"]),
        purpose: text(&terms["purpose"]),
        requested_days: terms["requestedDays"].as_u64().unwrap_or_default() as u32,
        agreement_id: text(&terms["dataUseAgreement"]["agreementId"]),
        agreement_version: text(&terms["dataUseAgreement"]["version"]),
        state: text(&a["state"]),
        submitted_at: node.created_by.time.clone(),
        grant_ids: strings(&a["grantIds"]),
        transitions,
    }
}

const AWAITING: &[&str] = &["SUBMITTED", "UNDER_REVIEW", "RESUBMITTED"];

/// The viewer's requests (its own and its projects'), or, for governance,
/// the review queue: every request awaiting a decision, oldest first.
pub fn access_requests(
    node: &Node,
    viewer: &Viewer,
    scope: RequestScope,
) -> Result<Vec<AccessRequest>> {
    if scope == RequestScope::Queue {
        viewer.require(&[Role::Governance], "the review queue")?;
    }
    let catalog = node.catalog();
    let mut out = Vec::new();
    for r in catalog.nodes_of_type("access-request")? {
        let view = request_view(&r);
        let keep = match scope {
            RequestScope::Mine => {
                view.requester == viewer.principal
                    || view
                        .project_id
                        .as_ref()
                        .is_some_and(|p| viewer.projects.contains(p))
            }
            RequestScope::Queue => AWAITING.contains(&view.state.as_str()),
        };
        if keep {
            out.push((r.created_leaf, view));
        }
    }
    out.sort_by_key(|(leaf, _)| *leaf);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// One request, if the viewer may see it (hidden reads as absent).
pub(crate) fn access_request(node: &Node, viewer: &Viewer, id: &str) -> Result<AccessRequest> {
    let subject = format!("access-request/{id}");
    node.catalog()
        .node(&subject)?
        .filter(|r| viewer.node_visible(node.catalog(), r))
        .map(|r| request_view(&r))
        .ok_or_else(|| ApiError::NotFound(format!("no entity {subject}")))
}

/// The grants an approval of request `id` makes: one per dataset asked for,
/// to its project (or requester), for the versions asked for, with the
/// decision's conditions, expiring at `expires_at` (unix seconds) or at the
/// end of the requested duration, whichever is sooner.
pub(crate) fn approval_grants(
    node: &Node,
    id: &str,
    conditions: &[String],
    expires_at: Option<i64>,
) -> Result<Vec<proto::AccessGranted>> {
    let subject = format!("access-request/{id}");
    let request = node
        .catalog()
        .node(&subject)?
        .map(|r| request_view(&r))
        .ok_or_else(|| ApiError::NotFound(format!("no entity {subject}")))?;
    // The event's time is stamped when it is sealed, after this.
    let now = clew_events::now_timestamp().seconds;
    let latest = now + i64::from(request.requested_days) * 86_400;
    let expires = match expires_at {
        Some(t) if t > latest => {
            return Err(ApiError::BadInput(format!(
                "expiresAt is later than the {} days {subject} asks for",
                request.requested_days
            )))
        }
        Some(t) if t <= now => {
            return Err(ApiError::BadInput("expiresAt is not in the future".into()))
        }
        Some(t) => t,
        None => latest,
    };
    let grantee = match &request.project_id {
        Some(p) => proto::access_granted::Grantee::ProjectId(p.clone()),
        None => proto::access_granted::Grantee::PrincipalId(request.requester.clone()),
    };
    let mut datasets: Vec<String> = request.dataset_ids.clone();
    for v in &request.dataset_version_ids {
        let d = v.split_once('@').map_or(v.as_str(), |(d, _)| d);
        if !datasets.iter().any(|x| x == d) {
            datasets.push(d.to_string());
        }
    }
    Ok(datasets
        .into_iter()
        .map(|d| proto::AccessGranted {
            grant_id: format!("grant-{}", clew_events::new_event_id()),
            grantee: Some(grantee.clone()),
            dataset_version_ids: request
                .dataset_version_ids
                .iter()
                .filter(|v| v.starts_with(&format!("{d}@")))
                .cloned()
                .collect(),
            dataset_id: d,
            purpose: request.purpose.clone(),
            expires_at: Some(pbjson_types::Timestamp {
                seconds: expires,
                nanos: 0,
            }),
            request_id: id.to_string(),
            conditions: conditions.to_vec(),
        })
        .collect())
}

/// A principal's access to a dataset through one grant, for one span.
#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessHolding {
    /// Principal id.
    pub principal: String,
    /// The grant that gave access.
    pub grant_id: String,
    /// Leaf of the event that made the grant.
    pub grant_leaf: u64,
    /// The project it came through, if any.
    pub project_id: Option<String>,
    /// The access request the grant approves, if any.
    pub request_id: Option<String>,
    /// When access began.
    pub from: String,
    /// When it ended or ends (none: no end).
    pub until: Option<String>,
}

impl From<&AccessHolder> for AccessHolding {
    fn from(h: &AccessHolder) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Self {
            principal: h.principal.clone(),
            grant_id: h.grant_id.clone(),
            grant_leaf: h.grant_leaf,
            project_id: some(&h.project_id),
            request_id: some(&h.request_id),
            from: h.from.clone(),
            until: h.until.clone(),
        }
    }
}

/// Who holds access to a dataset now and who held it in a window.
#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessAudit {
    /// The dataset.
    pub dataset_id: String,
    /// Window start.
    pub from: String,
    /// Window end.
    pub to: String,
    /// The access time "now" was judged at.
    pub now: String,
    /// Tree size the answer is as of.
    pub tree_size: u64,
    /// Holders at `now`.
    pub holders_now: Vec<AccessHolding>,
    /// Everyone who held access at some time in the window.
    pub held_between: Vec<AccessHolding>,
    /// The access requests behind those grants.
    pub requests: Vec<AccessRequest>,
}

/// The leaves an access audit of `dataset` rests on: the dataset's
/// registration, every grant for it and its revocation, and for grants to
/// projects the project's registration and membership events.
fn audit_leaves(node: &Node, dataset: &str) -> Result<(BTreeSet<u64>, BTreeSet<String>)> {
    let catalog = node.catalog();
    let registered = catalog
        .node(&format!("dataset/{dataset}"))?
        .ok_or_else(|| ApiError::NotFound(format!("no entity dataset/{dataset}")))?;
    let mut leaves = BTreeSet::from([registered.created_leaf]);
    let mut requests = BTreeSet::new();
    for g in catalog.all_grants(dataset)? {
        leaves.insert(g.created_leaf);
        leaves.extend(g.ended_leaf);
        let a = g.attributes();
        if let Some(r) = a["requestId"].as_str() {
            requests.insert(r.to_string());
        }
        if let Some(project) = a["projectId"].as_str() {
            for h in catalog.history(&format!("project/{project}"))? {
                leaves.insert(h.leaf);
            }
        }
    }
    Ok((leaves, requests))
}

fn open_leaves(
    node: &Node,
    leaves: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, clew_events::OpenedEnvelope>> {
    leaves
        .iter()
        .map(|i| {
            let leaf = node.ledger().leaf(*i)?;
            let o = clew_events::open(&leaf)
                .map_err(|e| ApiError::Internal(format!("leaf {i}: {e}")))?;
            Ok((*i, o))
        })
        .collect()
}

fn window(from: &str, to: &str) -> Result<(i64, i64)> {
    let parse = |t: &str, what: &str| {
        clew_ledger::audit::unix_seconds(t)
            .ok_or_else(|| ApiError::BadInput(format!("{what} {t:?} is not an RFC 3339 time")))
    };
    let (a, b) = (parse(from, "from")?, parse(to, "to")?);
    if b < a {
        return Err(ApiError::BadInput("to is before from".into()));
    }
    Ok((a, b))
}

/// Who holds access to `dataset` now, and who held it at some time between
/// `from` and `to` (RFC 3339): governance only.
pub fn access_audit(
    node: &Node,
    viewer: &Viewer,
    dataset: &str,
    from: &str,
    to: &str,
) -> Result<AccessAudit> {
    viewer.require(&[Role::Governance], "an access audit")?;
    let (a, b) = window(from, to)?;
    let tree_size = node.checkpoint()?.size;
    let (leaves, request_ids) = audit_leaves(node, dataset)?;
    let events = open_leaves(node, &leaves)?;
    let between = clew_ledger::access_holders(dataset, a, b, &events);
    let now = viewer.now;
    let current = clew_ledger::access_holders(dataset, now, now, &events);
    let mut requests = Vec::new();
    for r in request_ids {
        requests.push(access_request(node, viewer, &r)?);
    }
    Ok(AccessAudit {
        dataset_id: dataset.to_string(),
        from: clew_ledger::audit::rfc3339(a),
        to: clew_ledger::audit::rfc3339(b),
        now: clew_ledger::audit::rfc3339(now),
        tree_size,
        holders_now: current.iter().map(Into::into).collect(),
        held_between: between.iter().map(Into::into).collect(),
        requests,
    })
}

/// The access audit as a proof-carrying answer: every event it rests on,
/// the key registrations that sign them, their inclusion proofs against one
/// checkpoint, and the holders, which `clew verify-answer` recomputes.
pub fn proven_access_audit(
    node: &Node,
    viewer: &Viewer,
    dataset: &str,
    from: &str,
    to: &str,
) -> Result<ProvenAnswer> {
    viewer.require(&[Role::Governance], "an access audit")?;
    let (a, b) = window(from, to)?;
    let cp = node.checkpoint()?;
    let (mut leaves, _) = audit_leaves(node, dataset)?;
    leaves.retain(|i| *i < cp.size);
    let opened = with_signing_keys(node, viewer, &leaves)?;
    let events: BTreeMap<u64, clew_events::OpenedEnvelope> =
        opened.iter().map(|(i, (_, o))| (*i, o.clone())).collect();
    let holders = clew_ledger::access_holders(dataset, a, b, &events);
    let proven = proven_events(node, &opened, cp.size)?;
    Ok(ProvenAnswer {
        format: clew_ledger::PROVEN_ANSWER_FORMAT.into(),
        query: serde_json::json!({
            "kind": clew_ledger::ACCESS_AUDIT_KIND,
            "dataset": dataset,
            "from": clew_ledger::audit::rfc3339(a),
            "to": clew_ledger::audit::rfc3339(b),
        }),
        checkpoint: cp.note_text(),
        nodes: Vec::new(),
        edges: Vec::new(),
        events: proven,
        holders,
    })
}

/// One approved use of data, as the public register lists it.
#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataUse {
    /// The access request approved (none for a grant made directly).
    pub request_id: Option<String>,
    /// Grants of this use.
    pub grant_ids: Vec<String>,
    /// Project title, when the use is a project's.
    pub project: Option<String>,
    /// Organisation using the data.
    pub organisation: String,
    /// Purpose, as stated.
    pub purpose: String,
    /// Datasets used: their ids, or `[restricted]` for one the viewer may not see.
    pub datasets: Vec<String>,
    /// Titles of the datasets the viewer may see (same order, `[restricted]` otherwise).
    pub dataset_titles: Vec<String>,
    /// When it was approved.
    pub approved_at: String,
    /// When access ends, if it does.
    pub expires_at: Option<String>,
    /// `ACTIVE`, `EXPIRED` or `REVOKED` at the register's time.
    pub status: String,
    /// Conditions of use.
    pub conditions: Vec<String>,
}

/// Every approved use of data, newest first: project, organisation,
/// purpose, datasets and dates. Open to anyone (the platform publishes it);
/// a dataset the viewer may not see shows as `[restricted]` with no title,
/// custodian or version, so the register says that restricted data was used
/// for this purpose, and nothing about which.
pub fn data_use_register(node: &Node, viewer: &Viewer) -> Result<Vec<DataUse>> {
    let catalog = node.catalog();
    let mut uses: BTreeMap<String, (u64, DataUse, Vec<bool>, Vec<bool>)> = BTreeMap::new();
    for g in catalog.nodes_of_type("access-grant")? {
        let a = g.attributes();
        let dataset = text(&a["datasetId"]);
        let request = a["requestId"].as_str().map(str::to_string);
        let key = request.clone().unwrap_or_else(|| format!("grant:{}", g.id));
        let (project, organisation) = match a["projectId"].as_str() {
            Some(p) => {
                let attrs = catalog
                    .node(&format!("project/{p}"))?
                    .map(|n| n.attributes())
                    .unwrap_or_default();
                (Some(text(&attrs["title"])), text(&attrs["organisation"]))
            }
            None => {
                let principal = text(&a["principalId"]);
                let attrs = catalog
                    .node(&format!("principal/{principal}"))?
                    .map(|n| n.attributes())
                    .unwrap_or_default();
                (None, text(&attrs["organisation"]))
            }
        };
        let expires = a["expiresAt"].as_str().map(str::to_string);
        let expired = expires
            .as_deref()
            .and_then(clew_ledger::audit::unix_seconds)
            .is_some_and(|t| t <= viewer.now);
        let visible = viewer.dataset_visible(catalog, &dataset);
        let title = if visible {
            catalog
                .node(&format!("dataset/{dataset}"))?
                .map(|d| d.label)
                .unwrap_or_default()
        } else {
            REDACTED.to_string()
        };
        let entry = uses.entry(key).or_insert_with(|| {
            (
                g.created_leaf,
                DataUse {
                    request_id: request.clone(),
                    grant_ids: Vec::new(),
                    project,
                    organisation,
                    purpose: text(&a["purpose"]),
                    datasets: Vec::new(),
                    dataset_titles: Vec::new(),
                    approved_at: g.created_by.time.clone(),
                    expires_at: expires.clone(),
                    status: String::new(),
                    conditions: strings(&a["conditions"]),
                },
                Vec::new(),
                Vec::new(),
            )
        });
        entry.1.grant_ids.push(g.id.clone());
        entry.1.datasets.push(if visible {
            dataset
        } else {
            REDACTED.to_string()
        });
        entry.1.dataset_titles.push(title);
        entry.2.push(g.ended_leaf.is_some());
        entry.3.push(expired);
    }
    let mut out: Vec<(u64, DataUse)> = uses
        .into_values()
        .map(|(leaf, mut u, revoked, expired)| {
            u.status = if revoked.iter().all(|r| *r) {
                "REVOKED"
            } else if revoked.iter().zip(&expired).all(|(r, e)| *r || *e) {
                "EXPIRED"
            } else {
                "ACTIVE"
            }
            .to_string();
            (leaf, u)
        })
        .collect();
    out.sort_by_key(|u| std::cmp::Reverse(u.0));
    Ok(out.into_iter().map(|(_, u)| u).collect())
}
