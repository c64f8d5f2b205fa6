//! Who held access to a dataset between two times, computed from signed
//! events alone: the audit answer the API gives and `clew verify-answer`
//! recomputes offline from the events a proof-carrying answer carries.
//!
//! ```text
//!  AccessGranted / an approval's grants for the dataset ─┐
//!  AccessRevoked of those grants                          ├─▶ grant spans [granted, min(expiry, revoked))
//!  ProjectRegistered / MemberAdded / MemberRemoved ───────┘   membership spans, project end
//!                 ──▶ one AccessHolder per (grant, principal, span) that meets [from, to]
//! ```
//!
//! Times are the events' own times (signed by their producers); a grant to
//! a project reaches each member for the part of their membership inside
//! the grant's span and the project's dates.

use std::collections::{BTreeMap, HashMap};

use clew_events::proto::{self, event::Body};
use clew_events::OpenedEnvelope;
use serde::{Deserialize, Serialize};

/// `query.kind` of an access-audit proof-carrying answer.
pub const ACCESS_AUDIT_KIND: &str = "access-audit";

/// One principal's access to the dataset through one grant, for one span.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessHolder {
    /// Principal id.
    pub principal: String,
    /// The grant that gave access.
    pub grant_id: String,
    /// Leaf of the event that made the grant.
    pub grant_leaf: u64,
    /// The project it came through ("" for a grant to the principal).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project_id: String,
    /// The access request the grant approves ("" for a grant made directly).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// When the access began (RFC 3339).
    pub from: String,
    /// When it ended or ends (RFC 3339); absent: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// RFC 3339 (UTC, whole seconds) of unix seconds, as proto3 JSON writes it.
pub fn rfc3339(seconds: i64) -> String {
    serde_json::to_value(pbjson_types::Timestamp { seconds, nanos: 0 })
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time.
pub fn unix_seconds(text: &str) -> Option<i64> {
    serde_json::from_value::<pbjson_types::Timestamp>(serde_json::Value::String(text.into()))
        .ok()
        .map(|t| t.seconds)
}

struct GrantSpan {
    grantee: proto::access_granted::Grantee,
    leaf: u64,
    start: i64,
    expires: Option<i64>,
    revoked: Option<i64>,
    request_id: String,
}

#[derive(Default)]
struct ProjectSpans {
    ends: Option<i64>,
    spells: BTreeMap<String, Vec<(i64, Option<i64>)>>,
}

fn seconds_of(t: &Option<pbjson_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds)
}

fn min_end(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Everyone who held access to `dataset` at some time in `[from, to]`
/// (unix seconds), from `events` (leaf index → opened event); sorted.
pub fn access_holders(
    dataset: &str,
    from: i64,
    to: i64,
    events: &BTreeMap<u64, OpenedEnvelope>,
) -> Vec<AccessHolder> {
    let mut grants: BTreeMap<String, GrantSpan> = BTreeMap::new();
    let mut projects: HashMap<String, ProjectSpans> = HashMap::new();
    for (leaf, o) in events {
        let at = o.event.time.as_ref().map_or(0, |t| t.seconds);
        let mut add_grant = |g: &proto::AccessGranted| {
            if g.dataset_id != dataset {
                return;
            }
            if let Some(grantee) = g.grantee.clone() {
                grants.insert(
                    g.grant_id.clone(),
                    GrantSpan {
                        grantee,
                        leaf: *leaf,
                        start: at,
                        expires: seconds_of(&g.expires_at),
                        revoked: None,
                        request_id: g.request_id.clone(),
                    },
                );
            }
        };
        match o.body() {
            Body::AccessGranted(g) => add_grant(g),
            Body::AccessRequestReviewed(r) => r.grants.iter().for_each(add_grant),
            Body::AccessRevoked(r) => {
                if let Some(g) = grants.get_mut(&r.grant_id) {
                    g.revoked.get_or_insert(at);
                }
            }
            Body::ProjectRegistered(p) => {
                let spans = projects.entry(p.project_id.clone()).or_default();
                spans.ends = seconds_of(&p.ends_at);
                spans
                    .spells
                    .entry(p.lead_principal_id.clone())
                    .or_default()
                    .push((at, None));
            }
            Body::ProjectMemberAdded(m) => projects
                .entry(m.project_id.clone())
                .or_default()
                .spells
                .entry(m.principal_id.clone())
                .or_default()
                .push((at, None)),
            Body::ProjectMemberRemoved(m) => {
                if let Some(open) = projects
                    .get_mut(&m.project_id)
                    .and_then(|p| p.spells.get_mut(&m.principal_id))
                    .and_then(|s| s.iter_mut().rev().find(|(_, end)| end.is_none()))
                {
                    open.1 = Some(at);
                }
            }
            _ => {}
        }
    }
    let meets =
        |start: i64, end: Option<i64>| start <= to && end.is_none_or(|e| e > from && e > start);
    let mut out = Vec::new();
    for (grant_id, g) in &grants {
        let end = min_end(g.expires, g.revoked);
        let holder = |principal: &str, project: &str, start: i64, end: Option<i64>| AccessHolder {
            principal: principal.to_string(),
            grant_id: grant_id.clone(),
            grant_leaf: g.leaf,
            project_id: project.to_string(),
            request_id: g.request_id.clone(),
            from: rfc3339(start),
            until: end.map(rfc3339),
        };
        match &g.grantee {
            proto::access_granted::Grantee::PrincipalId(p) => {
                if meets(g.start, end) {
                    out.push(holder(p, "", g.start, end));
                }
            }
            proto::access_granted::Grantee::ProjectId(project) => {
                let Some(spans) = projects.get(project) else {
                    continue;
                };
                for (principal, spells) in &spans.spells {
                    for (s_start, s_end) in spells {
                        let start = g.start.max(*s_start);
                        let stop = min_end(min_end(end, *s_end), spans.ends);
                        if meets(start, stop) {
                            out.push(holder(principal, project, start, stop));
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out
}
