//! Projects, memberships, access requests and grants as the catalogue keeps
//! them: the state behind "who may see what now" and "who held access to a
//! dataset between two dates".
//!
//! ```text
//!  ProjectRegistered / MemberAdded / MemberRemoved ──▶ project node (members)
//!                                                      + membership spells  `M` project 0 principal
//!                                                      + principal's projects `W` principal 0 project
//!  AccessRequestSubmitted / Resubmitted / Withdrawn / Reviewed
//!                                                  ──▶ access-request node (terms, state, transitions)
//!  AccessGranted, or an approval's grants           ──▶ access-grant nodes + `g` / `G` indexes
//! ```
//!
//! A spell is one stretch of membership, from the leaf (and event time) that
//! began it to the one that ended it; a principal removed and added again
//! has two. Times are the events' own (signed) times.

use clew_events::proto;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::graph::{HistoryEntry, NodeRecord};
use crate::project::{grant_key, grantee_key, grantee_of, Pending};
use crate::{Catalog, CatalogError};

/// Whether applying `body` may change a principal's roles, projects or
/// grants ([`Catalog::access_epoch`]). Only the kinds named here leave them
/// alone; any other kind — one added later included — counts as a change.
pub(crate) fn may_change_viewers(body: &proto::event::Body) -> bool {
    use proto::event::Body;
    !matches!(
        body,
        Body::SiteRegistered(_)
            | Body::DatasetRegistered(_)
            | Body::DatasetVersionPublished(_)
            | Body::DatasetVersionWithdrawn(_)
            | Body::TransformRecorded(_)
            | Body::TrainingRunRecorded(_)
            | Body::ModelVersionRegistered(_)
            | Body::ValidationRecorded(_)
            | Body::DeploymentRecorded(_)
    )
}

/// One stretch of a principal's membership of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spell {
    /// Leaf that made the principal a member.
    pub from_leaf: u64,
    /// Its event time (RFC 3339).
    pub from: String,
    /// Leaf that removed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_leaf: Option<u64>,
    /// Its event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `<tag> a 0`: the prefix of every key `<tag> a 0 b`.
fn pair_prefix(tag: u8, a: &str) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k
}

fn pair_key(tag: u8, a: &str, b: &str) -> Vec<u8> {
    let mut k = pair_prefix(tag, a);
    k.extend_from_slice(b.as_bytes());
    k
}

/// A member's spells: `M` project 0 principal.
fn members_key(project: &str, principal: &str) -> Vec<u8> {
    pair_key(b'M', project, principal)
}

fn members_prefix(project: &str) -> Vec<u8> {
    pair_prefix(b'M', project)
}

/// A principal's projects: `W` principal 0 project.
fn projects_key(principal: &str, project: &str) -> Vec<u8> {
    pair_key(b'W', principal, project)
}

fn projects_prefix(principal: &str) -> Vec<u8> {
    pair_prefix(b'W', principal)
}

fn parse_spells(bytes: &[u8]) -> Result<Vec<Spell>, CatalogError> {
    serde_json::from_slice(bytes).map_err(|e| CatalogError::Corrupt(format!("membership: {e}")))
}

fn spells(p: &Pending<'_>, project: &str, principal: &str) -> Result<Vec<Spell>, CatalogError> {
    let key = members_key(project, principal);
    match p.writes.get(&key) {
        Some(v) => parse_spells(v),
        None => match p.tree.get(&key)? {
            Some(v) => parse_spells(&v),
            None => Ok(Vec::new()),
        },
    }
}

fn put_spells(p: &mut Pending<'_>, project: &str, principal: &str, all: &[Spell]) {
    p.writes.insert(
        members_key(project, principal),
        serde_json::to_vec(all).unwrap_or_default(),
    );
}

/// Records that `principal` became a member of `project` at `leaf`.
pub(crate) fn join(
    p: &mut Pending<'_>,
    project: &str,
    principal: &str,
    entry: &HistoryEntry,
) -> Result<(), CatalogError> {
    let mut all = spells(p, project, principal)?;
    all.push(Spell {
        from_leaf: entry.leaf,
        from: entry.time.clone(),
        until_leaf: None,
        until: None,
    });
    put_spells(p, project, principal, &all);
    p.writes
        .insert(projects_key(principal, project), Vec::new());
    set_members(p, project, |m| {
        if !m.iter().any(|x| x == principal) {
            m.push(principal.to_string());
        }
    })
}

/// Records that `principal` stopped being a member of `project` at `leaf`.
pub(crate) fn leave(
    p: &mut Pending<'_>,
    project: &str,
    principal: &str,
    entry: &HistoryEntry,
) -> Result<(), CatalogError> {
    let mut all = spells(p, project, principal)?;
    if let Some(open) = all.iter_mut().rev().find(|s| s.until_leaf.is_none()) {
        open.until_leaf = Some(entry.leaf);
        open.until = Some(entry.time.clone());
    }
    put_spells(p, project, principal, &all);
    set_members(p, project, |m| m.retain(|x| x != principal))
}

fn set_members(
    p: &mut Pending<'_>,
    project: &str,
    change: impl FnOnce(&mut Vec<String>),
) -> Result<(), CatalogError> {
    let subject = format!("project/{project}");
    let Some(mut node) = p.node(&subject)? else {
        return Ok(());
    };
    let mut attrs = node.attributes();
    let mut members: Vec<String> = attrs["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    change(&mut members);
    attrs["members"] = json!(members);
    node.attributes = raw(&attrs);
    p.put_node(node);
    Ok(())
}

pub(crate) fn raw(value: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// The attributes of a new access request.
pub(crate) fn request_attributes(
    request_id: &str,
    requester: &str,
    terms: &Option<proto::AccessRequestTerms>,
    transition: Value,
) -> Value {
    json!({
        "requestId": request_id,
        "requester": requester,
        "terms": terms,
        "state": "SUBMITTED",
        "transitions": [transition],
        "grantIds": [],
    })
}

/// One step of a request's life, as its node lists them.
pub(crate) fn transition(entry: &HistoryEntry, state: &str, extra: Value) -> Value {
    let mut t = json!({
        "state": state,
        "leaf": entry.leaf,
        "eventId": entry.event_id,
        "actor": entry.actor,
        "time": entry.time,
    });
    if let (Some(t), Value::Object(more)) = (t.as_object_mut(), extra) {
        for (k, v) in more {
            let empty = v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty());
            if !empty {
                t.insert(k, v);
            }
        }
    }
    t
}

/// Moves request `subject` to `state`, appending the transition; `terms`
/// replaces its terms on a resubmission.
pub(crate) fn move_request(
    p: &mut Pending<'_>,
    subject: &str,
    state: &str,
    step: Value,
    terms: Option<&proto::AccessRequestTerms>,
    grant_ids: &[String],
) -> Result<(), CatalogError> {
    let Some(mut node) = p.node(subject)? else {
        return Ok(());
    };
    let mut attrs = node.attributes();
    attrs["state"] = json!(state);
    node.statuses
        .push((step["leaf"].as_u64().unwrap_or_default(), state.to_string()));
    if let Some(t) = terms {
        attrs["terms"] = json!(t);
    }
    if let Some(list) = attrs["transitions"].as_array_mut() {
        list.push(step);
    }
    if let Some(list) = attrs["grantIds"].as_array_mut() {
        list.extend(grant_ids.iter().map(|g| json!(g)));
    }
    node.attributes = raw(&attrs);
    p.put_node(node);
    Ok(())
}

/// Stores a grant node and its per-dataset and per-grantee indexes.
pub(crate) fn put_grant(
    p: &mut Pending<'_>,
    g: &proto::AccessGranted,
    node: NodeRecord,
) -> Result<(), CatalogError> {
    p.writes.insert(
        grant_key(&g.dataset_id, &g.grant_id),
        g.grant_id.clone().into_bytes(),
    );
    if let Some(grantee) = grantee_of(g) {
        p.writes.insert(
            grantee_key(&grantee, &g.grant_id),
            g.dataset_id.clone().into_bytes(),
        );
    }
    p.put_node(node);
    Ok(())
}

impl Catalog {
    /// Every spell of every member of `project` (principal, spells).
    pub fn members_of(&self, project: &str) -> Result<Vec<(String, Vec<Spell>)>, CatalogError> {
        let prefix = members_prefix(project);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let principal = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((principal, parse_spells(&v)?));
        }
        Ok(out)
    }

    /// Projects `principal` has ever belonged to.
    pub fn projects_joined(&self, principal: &str) -> Result<Vec<String>, CatalogError> {
        let prefix = projects_prefix(principal);
        self.tree
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Projects `principal` belongs to at `now` (unix seconds): a membership
    /// spell still open, in a project that has not ended.
    pub fn current_projects(&self, principal: &str, now: i64) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        for project in self.projects_joined(principal)? {
            let Some(node) = self.node(&format!("project/{project}"))? else {
                continue;
            };
            let ends = node.attributes()["endsAt"]
                .as_str()
                .and_then(clew_ledger::audit::unix_seconds)
                .unwrap_or(i64::MAX);
            let open = self
                .tree
                .get(members_key(&project, principal))?
                .map(|v| parse_spells(&v))
                .transpose()?
                .is_some_and(|s| s.iter().any(|s| s.until_leaf.is_none()));
            if open && now < ends {
                out.push(project);
            }
        }
        Ok(out)
    }

    /// Every access grant ever made for a dataset, revoked or expired ones too.
    pub fn all_grants(&self, dataset_id: &str) -> Result<Vec<NodeRecord>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .tree
            .scan_prefix(crate::project::grants_prefix(dataset_id))
        {
            let (_, grant) = item?;
            let subject = format!("access-grant/{}", String::from_utf8_lossy(&grant));
            if let Some(n) = self.node(&subject)? {
                out.push(n);
            }
        }
        Ok(out)
    }
}
