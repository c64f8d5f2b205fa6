//! Projection: how one sequenced event changes entity state, the lineage
//! graph and per-entity history. Writes go to a [`Pending`] overlay that the
//! caller turns into one sled batch together with the applied-leaf marker.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

// Keyed by subject and looked up for every node a chunk stores: hashbrown's
// default hash (randomly seeded, like std's) costs a fraction of SipHash.
use hashbrown::HashMap;

use clew_events::proto::{self, event::Body};
use clew_events::{subject_of, OpenedEnvelope};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::adjacency::{LineageIndex, WalkRecord};
use crate::graph::{keys, Affect, HistoryEntry, NodeRecord, OutEdge, Relation};
use crate::{access, stored, CatalogError};

/// What a chunk's walk records say of one subject.
#[derive(Debug, Default)]
struct Staged {
    /// The chunk created it (or found it created).
    created: bool,
    /// Out-edges the chunk added to it.
    out: usize,
    /// The chunk marked it ended or affected.
    ended_or_affected: bool,
}

/// Writes of a chunk of leaves, read through before sled.
pub(crate) struct Pending<'a> {
    pub tree: &'a sled::Tree,
    /// Writes other than node records.
    pub writes: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Node records written, by subject: kept decoded, since the next
    /// events often read them back (a version its transform, a run its
    /// model), and encoded once with the chunk.
    nodes: HashMap<String, NodeRecord>,
    /// Search documents to rebuild (subjects of dataset and model versions).
    pub touched: BTreeSet<String>,
    /// The resident graph as of the chunk's start (projection only).
    graph: Option<&'a LineageIndex>,
    /// What this chunk does to the graph's shape, by walk key: written
    /// with the chunk and added to the resident graph once it is durable.
    pub walks: BTreeMap<Vec<u8>, WalkRecord>,
    /// Per subject: what this chunk's walk records say of it.
    staged: HashMap<String, Staged>,
    /// What depends on each subject through edges this chunk adds.
    staged_dependents: HashMap<String, Vec<String>>,
    /// The catalogue's dictionaries for node records.
    dictionaries: std::sync::Arc<stored::NodeDictionaries>,
}

impl<'a> Pending<'a> {
    /// An overlay for reading state (node records compressed with one of
    /// `dictionaries` are read with it).
    pub fn new(
        tree: &'a sled::Tree,
        dictionaries: std::sync::Arc<stored::NodeDictionaries>,
    ) -> Self {
        Self {
            dictionaries,
            tree,
            writes: BTreeMap::new(),
            nodes: HashMap::new(),
            touched: BTreeSet::new(),
            graph: None,
            walks: BTreeMap::new(),
            staged: HashMap::new(),
            staged_dependents: HashMap::new(),
        }
    }

    /// An overlay for projecting a chunk onto `tree` and `graph`.
    pub fn projecting(
        tree: &'a sled::Tree,
        graph: &'a LineageIndex,
        dictionaries: std::sync::Arc<stored::NodeDictionaries>,
    ) -> Self {
        Self {
            graph: Some(graph),
            ..Self::new(tree, dictionaries)
        }
    }

    /// The node of `subject` as this chunk left it.
    pub fn node(&self, subject: &str) -> Result<Option<NodeRecord>, CatalogError> {
        if let Some(node) = self.nodes.get(subject) {
            return Ok(Some(node.clone()));
        }
        // Node records are never among `writes`.
        self.tree
            .get(keys::node(subject))?
            .map(|v| stored::decode_node(subject, &v, &self.dictionaries))
            .transpose()
    }

    /// Whether `subject` may be ended or affected by a withdrawal, so that
    /// a node created on top of it must read its record: when this chunk
    /// wrote it, when the graph marks it, or when the graph does not know it
    /// (the read then finds nothing).
    pub fn may_be_ended_or_affected(&self, subject: &str) -> bool {
        let Some(graph) = self.graph else {
            return true;
        };
        self.nodes.contains_key(subject)
            || graph
                .id(subject)
                .is_none_or(|id| graph.is_ended_or_affected(id))
    }

    /// Stores a node, and in walk records what the graph does not know of
    /// it yet: its creation, any out-edges added since, and that it is
    /// ended or affected.
    pub(crate) fn put_node(&mut self, node: NodeRecord) {
        let subject = node.subject();
        if matches!(node.node_type.as_str(), "dataset-version" | "model-version") {
            self.touched.insert(subject.clone());
        }
        if let Some(graph) = self.graph {
            let (mut created, mut out, mut marked) = graph
                .id(&subject)
                .map(|id| {
                    (
                        graph.created_leaf(id).is_some(),
                        graph.out_count(id),
                        graph.is_ended_or_affected(id),
                    )
                })
                .unwrap_or((false, 0, false));
            if let Some(staged) = self.staged.get(&subject) {
                created |= staged.created;
                out += staged.out;
                marked |= staged.ended_or_affected;
            }
            for walk in WalkRecord::of_node(&node, created, out, marked) {
                for (_, to, _) in &walk.out {
                    self.staged_dependents
                        .entry(to.clone())
                        .or_default()
                        .push(subject.clone());
                }
                let staged = self.staged.entry(subject.clone()).or_default();
                staged.created = true;
                staged.out += walk.out.len();
                staged.ended_or_affected |= walk.ended_or_affected;
                match self.walks.entry(walk.key()) {
                    std::collections::btree_map::Entry::Occupied(mut known) => {
                        known.get_mut().created |= walk.created;
                        known.get_mut().ended_or_affected |= walk.ended_or_affected;
                        known.get_mut().out.extend(walk.out);
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(walk);
                    }
                }
            }
        }
        // Encoded once, with the chunk (`Pending::take_nodes`).
        self.nodes.insert(subject, node);
    }

    /// The nodes this chunk stored, by subject, for the caller to encode
    /// (once each, however often the chunk changed them).
    pub fn take_nodes(&mut self) -> Vec<(String, NodeRecord)> {
        std::mem::take(&mut self.nodes).into_iter().collect()
    }

    /// Records an edge `from -> to` inside `from` (which the caller then
    /// stores, and with it the walk record that carries the edge).
    fn add_edge(
        &mut self,
        from: &mut NodeRecord,
        relation: Relation,
        to: &str,
        role: Option<String>,
        leaf: u64,
    ) {
        from.out.push(OutEdge {
            relation,
            to: to.to_string(),
            role,
            created_leaf: leaf,
        });
    }

    /// Subjects that depend on `subject` through one edge: the resident
    /// graph's and this chunk's.
    pub fn dependents(&self, subject: &str) -> Vec<String> {
        let mut out: Vec<String> = match self.graph.and_then(|g| Some((g, g.id(subject)?))) {
            Some((g, id)) => g
                .in_edges(id)
                .iter()
                .map(|(from, _)| g.subject(from).to_string())
                .collect(),
            None => Vec::new(),
        };
        if let Some(staged) = self.staged_dependents.get(subject) {
            out.extend(staged.iter().cloned());
        }
        out
    }
}

/// An edge to create from a new node: relation, target subject, role.
type Upstream = (Relation, String, Option<String>);

/// A node's attributes: the event body as JSON, serialized once (not parsed
/// again to check what the serializer just wrote).
fn attributes<T: Serialize>(body: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(body).unwrap_or_default()
}

fn dv(id: &str) -> String {
    format!("dataset-version/{id}")
}

fn status_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_string()
}

/// Applies one sequenced event at `leaf`.
pub(crate) fn apply(
    p: &mut Pending<'_>,
    leaf: u64,
    opened: &OpenedEnvelope,
) -> Result<(), CatalogError> {
    let event = &opened.event;
    let body = opened.body();
    let subject = subject_of(body).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
    let subject_key = subject.subject();
    let time = event
        .time
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let entry = HistoryEntry {
        leaf,
        event_id: event.event_id.clone(),
        kind: opened.kind().as_str_name().to_string(),
        actor: event.actor.clone(),
        time,
    };
    let new_node = |node_type: &str, id: &str, label: String, attrs: Box<RawValue>| NodeRecord {
        node_type: node_type.to_string(),
        id: id.to_string(),
        label,
        created_leaf: leaf,
        created_by: entry.clone(),
        ended_leaf: None,
        statuses: Vec::new(),
        affected_by: Vec::new(),
        out: Vec::new(),
        ended_detail: None,
        attributes: attrs,
    };
    let actor = format!("principal/{}", event.actor);
    // (node, its upstream edges) to create.
    let mut created: Option<(NodeRecord, Vec<Upstream>)> = None;
    // Whether the event changes an existing entity (a history entry of it);
    // events that create their entity without `created` leave this false.
    let mut history = false;

    match body {
        Body::PrincipalRegistered(b) => {
            // Keys are the ledger's business; the catalogue keeps the person.
            let public = proto::PrincipalRegistered {
                verifier_key: String::new(),
                ..b.clone()
            };
            if let Some(mut node) = p.node(&subject_key)? {
                // Re-registration (key rotation, role change): latest wins.
                node.label = b.display_name.clone();
                node.attributes = attributes(&public);
                p.put_node(node);
            } else {
                let node = new_node(
                    "principal",
                    &b.principal_id,
                    b.display_name.clone(),
                    attributes(&public),
                );
                created = Some((node, vec![]));
            }
        }
        Body::KeyRevoked(_) => {}
        Body::SiteRegistered(b) => {
            created = Some((
                new_node("site", &b.site_id, b.name.clone(), attributes(b)),
                vec![],
            ));
        }
        Body::AccessGranted(b) => {
            let label = format!("access to {}", b.dataset_id);
            let node = new_node("access-grant", &b.grant_id, label, attributes(b));
            access::put_grant(p, b, node)?;
        }
        Body::ProjectRegistered(b) => {
            let mut attrs = serde_json::to_value(b).unwrap_or_default();
            attrs["members"] = serde_json::json!([]);
            let node = new_node(
                "project",
                &b.project_id,
                b.title.clone(),
                access::raw(&attrs),
            );
            p.put_node(node);
            access::join(p, &b.project_id, &b.lead_principal_id, &entry)?;
        }
        Body::ProjectMemberAdded(b) => {
            access::join(p, &b.project_id, &b.principal_id, &entry)?;
            history = true;
        }
        Body::ProjectMemberRemoved(b) => {
            access::leave(p, &b.project_id, &b.principal_id, &entry)?;
            history = true;
        }
        Body::AccessRequestSubmitted(b) => {
            let step = access::transition(&entry, "SUBMITTED", serde_json::json!({}));
            let attrs = access::request_attributes(&b.request_id, &event.actor, &b.terms, step);
            let label = format!("access request {} by {}", b.request_id, event.actor);
            let mut node = new_node("access-request", &b.request_id, label, access::raw(&attrs));
            node.statuses.push((leaf, "SUBMITTED".into()));
            p.put_node(node);
        }
        Body::AccessRequestResubmitted(b) => {
            let step = access::transition(
                &entry,
                "RESUBMITTED",
                serde_json::json!({ "response": b.response }),
            );
            access::move_request(p, &subject_key, "RESUBMITTED", step, b.terms.as_ref(), &[])?;
            history = true;
        }
        Body::AccessRequestWithdrawn(b) => {
            let step = access::transition(
                &entry,
                "WITHDRAWN",
                serde_json::json!({ "reason": b.reason }),
            );
            access::move_request(p, &subject_key, "WITHDRAWN", step, None, &[])?;
            history = true;
        }
        Body::AccessRequestReviewed(b) => {
            let state = clew_events::policy::state_name(b.decision);
            let grant_ids: Vec<String> = b.grants.iter().map(|g| g.grant_id.clone()).collect();
            let step = access::transition(
                &entry,
                &state,
                serde_json::json!({
                    "reason": b.reason,
                    "conditions": b.conditions,
                    "grantIds": grant_ids,
                }),
            );
            access::move_request(p, &subject_key, &state, step, None, &grant_ids)?;
            for g in &b.grants {
                let label = format!("access to {}", g.dataset_id);
                let node = new_node("access-grant", &g.grant_id, label, attributes(g));
                access::put_grant(p, g, node)?;
            }
            history = true;
        }
        Body::AccessRevoked(b) => {
            if let Some(mut node) = p.node(&subject_key)? {
                node.ended_leaf = Some(leaf);
                node.ended_detail = serde_json::to_value(b).ok();
                p.put_node(node);
            }
        }
        Body::DatasetRegistered(b) => {
            let site = format!("site/{}", b.custodian_site_id);
            let node = new_node("dataset", &b.dataset_id, b.title.clone(), attributes(b));
            created = Some((node, vec![(Relation::WasAttributedTo, site, None)]));
        }
        Body::DatasetVersionPublished(b) => {
            let title = p
                .node(&format!("dataset/{}", b.dataset_id))?
                .map(|d| d.label)
                .unwrap_or_else(|| b.dataset_id.clone());
            let mut up = vec![(
                Relation::SpecializationOf,
                format!("dataset/{}", b.dataset_id),
                None,
            )];
            up.extend(
                b.was_derived_from
                    .iter()
                    .map(|d| (Relation::WasDerivedFrom, dv(d), None)),
            );
            let label = format!("{title} v{}", b.version);
            created = Some((
                new_node("dataset-version", &subject.id, label, attributes(b)),
                up,
            ));
        }
        Body::DatasetVersionWithdrawn(b) => {
            if let Some(mut node) = p.node(&subject_key)? {
                node.ended_leaf = Some(leaf);
                node.statuses.push((leaf, "WITHDRAWN".into()));
                node.ended_detail = serde_json::to_value(b).ok();
                p.put_node(node);
                mark_downstream_affected(p, &subject_key, leaf)?;
            }
        }
        Body::TransformRecorded(b) => {
            let mut up: Vec<Upstream> = b
                .used
                .iter()
                .map(|d| (Relation::Used, dv(d), None))
                .collect();
            up.push((Relation::WasAssociatedWith, actor.clone(), None));
            let label = format!("{} {}", b.tool_name, b.tool_version);
            created = Some((
                new_node("transform", &b.transform_id, label, attributes(b)),
                up,
            ));
            // Outputs were generated by this transform (edge output -> transform).
            for g in &b.generated {
                if let Some(mut output) = p.node(&dv(g))? {
                    p.add_edge(
                        &mut output,
                        Relation::WasGeneratedBy,
                        &subject_key,
                        None,
                        leaf,
                    );
                    p.put_node(output);
                }
            }
        }
        Body::TrainingRunRecorded(b) => {
            let mut up: Vec<Upstream> = b
                .used
                .iter()
                .map(|u| {
                    let role = proto::DatasetRole::try_from(u.role)
                        .map(|r| status_name(r.as_str_name(), "DATASET_ROLE_").to_lowercase())
                        .ok();
                    (Relation::Used, dv(&u.dataset_version_id), role)
                })
                .collect();
            up.push((Relation::WasAssociatedWith, actor.clone(), None));
            let label = format!("training of {}", b.model_name);
            created = Some((
                new_node("training-run", &b.training_run_id, label, attributes(b)),
                up,
            ));
        }
        Body::ModelVersionRegistered(b) => {
            let mut up = vec![];
            if !b.training_run_id.is_empty() {
                up.push((
                    Relation::WasGeneratedBy,
                    format!("training-run/{}", b.training_run_id),
                    None,
                ));
            }
            let label = format!("{} {}", b.model_name, b.version);
            created = Some((
                new_node("model-version", &b.model_version_id, label, attributes(b)),
                up,
            ));
        }
        Body::ValidationRecorded(b) => {
            let up = vec![
                (
                    Relation::Used,
                    format!("model-version/{}", b.model_version_id),
                    None,
                ),
                (Relation::Used, dv(&b.dataset_version_id), None),
                (
                    Relation::WasAssociatedWith,
                    format!("site/{}", b.site_id),
                    None,
                ),
            ];
            let verdict = proto::Verdict::try_from(b.verdict)
                .map(|v| status_name(v.as_str_name(), "VERDICT_"))
                .unwrap_or_default();
            let label = format!("validation of {}", b.model_version_id);
            let mut node = new_node("validation", &b.validation_id, label, attributes(b));
            node.statuses.push((leaf, verdict));
            created = Some((node, up));
        }
        Body::DeploymentRecorded(b) => {
            let status = proto::DeploymentStatus::try_from(b.status)
                .map(|s| status_name(s.as_str_name(), "DEPLOYMENT_STATUS_"))
                .unwrap_or_default();
            match p.node(&subject_key)? {
                Some(mut node) => {
                    node.statuses.push((leaf, status.clone()));
                    if status == "RETIRED" {
                        node.ended_leaf = Some(leaf);
                    }
                    node.attributes = attributes(b);
                    for v in &b.validation_ids {
                        let to = format!("validation/{v}");
                        if !node.out.iter().any(|e| e.to == to) {
                            p.add_edge(&mut node, Relation::WasInformedBy, &to, None, leaf);
                        }
                    }
                    p.put_node(node);
                }
                None => {
                    let mut up = vec![
                        (
                            Relation::Used,
                            format!("model-version/{}", b.model_version_id),
                            None,
                        ),
                        (
                            Relation::WasAssociatedWith,
                            format!("site/{}", b.site_id),
                            None,
                        ),
                    ];
                    up.extend(
                        b.validation_ids
                            .iter()
                            .map(|v| (Relation::WasInformedBy, format!("validation/{v}"), None)),
                    );
                    let label = format!("{} at {}", b.model_version_id, b.site_id);
                    let mut node = new_node("deployment", &b.deployment_id, label, attributes(b));
                    node.statuses.push((leaf, status));
                    created = Some((node, up));
                }
            }
        }
    }

    match created {
        Some((mut node, upstream)) => {
            let mut affected: BTreeSet<Affect> = BTreeSet::new();
            for (relation, to, role) in upstream {
                // Only an upstream node ended or affected passes anything
                // down: the graph says which are, so most are not read.
                let up = if p.may_be_ended_or_affected(&to) {
                    p.node(&to)?
                } else {
                    None
                };
                if let Some(up) = up {
                    affected.extend(up.affected_by.iter().cloned());
                    if let (true, Some(at)) = (up.node_type == "dataset-version", up.ended_leaf) {
                        affected.insert(Affect {
                            withdrawn: to.clone(),
                            leaf: at,
                        });
                    }
                }
                p.add_edge(&mut node, relation, &to, role, leaf);
            }
            node.affected_by = affected.into_iter().collect();
            p.put_node(node);
        }
        // Events that change an existing entity are history keys; the
        // creating event lives in the node itself.
        None if history || !creates_itself(body) => {
            p.writes.insert(
                keys::history(&subject_key, leaf),
                stored::encode_history(&entry),
            );
        }
        None => {}
    }
    Ok(())
}

/// Whether the event creates its subject's node itself (outside `created`).
fn creates_itself(body: &Body) -> bool {
    matches!(
        body,
        Body::AccessGranted(_) | Body::ProjectRegistered(_) | Body::AccessRequestSubmitted(_)
    )
}

/// Every node downstream of a withdrawn dataset version records the withdrawal.
fn mark_downstream_affected(
    p: &mut Pending<'_>,
    withdrawn: &str,
    leaf: u64,
) -> Result<(), CatalogError> {
    let affect = Affect {
        withdrawn: withdrawn.to_string(),
        leaf,
    };
    let mut seen: HashSet<String> = HashSet::from([withdrawn.to_string()]);
    let mut queue: VecDeque<String> = VecDeque::from([withdrawn.to_string()]);
    while let Some(subject) = queue.pop_front() {
        for from in p.dependents(&subject) {
            if seen.insert(from.clone()) {
                if let Some(mut node) = p.node(&from)? {
                    if !node.affected_by.contains(&affect) {
                        node.affected_by.push(affect.clone());
                        p.put_node(node);
                    }
                }
                queue.push_back(from);
            }
        }
    }
    Ok(())
}

/// Index of grants per dataset: `g` dataset 0 grant.
pub(crate) fn grant_key(dataset_id: &str, grant_id: &str) -> Vec<u8> {
    let mut k = grants_prefix(dataset_id);
    k.extend_from_slice(grant_id.as_bytes());
    k
}

/// `principal:<id>` or `project:<id>`: who an access grant is for.
pub(crate) fn grantee_of(b: &proto::AccessGranted) -> Option<String> {
    use proto::access_granted::Grantee;
    match b.grantee.as_ref()? {
        Grantee::PrincipalId(p) => Some(format!("principal:{p}")),
        Grantee::ProjectId(p) => Some(format!("project:{p}")),
    }
}

/// Index of grants per grantee: `G` grantee 0 grant → dataset id.
pub(crate) fn grantee_key(grantee: &str, grant_id: &str) -> Vec<u8> {
    let mut k = grantee_prefix(grantee);
    k.extend_from_slice(grant_id.as_bytes());
    k
}

pub(crate) fn grantee_prefix(grantee: &str) -> Vec<u8> {
    let mut k = vec![b'G'];
    k.extend_from_slice(grantee.as_bytes());
    k.push(0);
    k
}

pub(crate) fn grants_prefix(dataset_id: &str) -> Vec<u8> {
    let mut k = vec![b'g'];
    k.extend_from_slice(dataset_id.as_bytes());
    k.push(0);
    k
}
