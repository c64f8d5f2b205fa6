//! The read model: every answer Clew gives about the catalogue and the
//! ledger, for one viewer. GraphQL resolvers, the REST routes and the
//! linked-data exports all call these, so what a caller may see is decided
//! once: entities as of a tree size, one lineage hop, receipts, proof-carrying
//! answers and PROV lineage. A hidden entity and an absent one get the same
//! answer. Nothing here knows which transport asked.

pub(crate) mod access;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_catalog::{Admit, Direction, HistoryEntry, NodeRecord};
use clew_events::proto::{self, event::Body};
use clew_ledger::SignedCheckpoint;
use clew_node::Node;

use async_graphql::{Json, SimpleObject};
use clew_catalog::{Edge, NodeView};

use crate::access::Viewer;
use crate::ApiError;

/// The entity `subject` as it stood at tree size `as_of`, if the viewer may
/// see it. A hidden entity and one that never existed get the same answer,
/// word for word: for a viewer, hidden is indistinguishable from absent.
pub(crate) fn visible_entity(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    as_of: u64,
) -> std::result::Result<NodeRecord, ApiError> {
    node.catalog()
        .node(subject)?
        .filter(|r| r.exists_at(as_of))
        .filter(|r| viewer.node_visible(node.catalog(), r))
        .ok_or_else(|| ApiError::NotFound(format!("no entity {subject}")))
}

/// The uint64 fields of the wire contract (ImagingSummary's counts), which
/// proto3 JSON writes as strings, as JSON numbers: every count Clew keeps
/// is far below 2^53, so no client loses precision.
pub(crate) fn counts_as_numbers(value: &mut serde_json::Value) {
    const COUNTS: &[&str] = &[
        "numberOfStudies",
        "numberOfSeries",
        "numberOfInstances",
        "numberOfPatients",
    ];
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(t) if COUNTS.contains(&k.as_str()) => {
                        if let Ok(n) = t.parse::<u64>() {
                            *v = serde_json::Value::from(n);
                        }
                    }
                    other => counts_as_numbers(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(counts_as_numbers),
        _ => {}
    }
}

/// One hop of lineage from `subject`, through what the viewer may see.
pub(crate) fn one_hop(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    direction: Direction,
    as_of: u64,
) -> std::result::Result<clew_catalog::LineageAnswer, ApiError> {
    let visible = admit(viewer, node);
    Ok(node.catalog().lineage_within(
        subject,
        direction,
        1,
        Some(as_of),
        walk_gate(viewer, &visible),
    )?)
}

/// Whether the viewer may see an entity, by subject: the lineage walk's
/// gate.
pub(crate) fn admit<'a>(viewer: &'a Viewer, node: &'a Node) -> impl Fn(&str) -> bool + Sync + 'a {
    move |subject| viewer.subject_visible(node.catalog(), subject)
}

/// The walk's gate for `viewer`: only what `visible` admits is entered; a
/// viewer who sees everything lets the walk ask nothing per node.
pub(crate) fn walk_gate<'a>(
    viewer: &Viewer,
    visible: &'a (dyn Fn(&str) -> bool + Sync),
) -> Admit<'a> {
    if viewer.sees_all() {
        Admit::All
    } else {
        Admit::Only(visible)
    }
}

/// The body of an event as proto3 JSON, without the oneof wrapper.
pub(crate) fn body_json(body: &Body) -> serde_json::Value {
    let event = proto::Event {
        body: Some(body.clone()),
        ..Default::default()
    };
    serde_json::to_value(&event)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.values().find(|x| x.is_object()).cloned())
        })
        .unwrap_or(serde_json::Value::Null)
}

pub(crate) fn checkpoint_of(
    node: &Node,
    size: Option<u64>,
) -> std::result::Result<SignedCheckpoint, ApiError> {
    match size {
        None => Ok(node.checkpoint()?),
        Some(s) => node
            .ledger()
            .checkpoint_at(s)?
            .ok_or_else(|| ApiError::NotFound(format!("no checkpoint was signed at size {s}"))),
    }
}

/// The C2SP tlog-proof receipt of leaf `index` against the latest
/// checkpoint, for a viewer who may see the whole event (it carries the
/// envelope); anything else answers as if there were no such leaf.
pub(crate) fn visible_receipt(
    node: &Node,
    viewer: &Viewer,
    index: u64,
) -> std::result::Result<String, ApiError> {
    let cp = checkpoint_of(node, None)?;
    let absent = || ApiError::NotFound(format!("no event at leaf {index}"));
    if index >= cp.size {
        return Err(absent());
    }
    let leaf = node.ledger().leaf(index)?;
    let opened =
        clew_events::open(&leaf).map_err(|e| ApiError::Internal(format!("leaf {index}: {e}")))?;
    if !viewer.subject_visible(node.catalog(), &opened.event.subject)
        || !leaf_fully_visible(node, viewer, &opened)
    {
        return Err(absent());
    }
    let proof = node.ledger().inclusion_proof(index, cp.size)?;
    Ok(clew_ledger::format_receipt(index, &leaf, &proof, &cp))
}

/// A lineage answer (or, for `kind` "impact", everything downstream of a
/// dataset version) with every leaf it cites, the key registrations that sign
/// those, and their inclusion proofs against one checkpoint. Only for a
/// viewer who may see every cited event in full.
pub(crate) fn proven_answer(
    node: &Node,
    viewer: &Viewer,
    kind: &str,
    subject: &str,
    direction: Direction,
    depth: u32,
) -> std::result::Result<clew_ledger::ProvenAnswer, ApiError> {
    use std::collections::BTreeSet;
    let lineage = lineage(node, viewer, subject, direction, depth, None)?;
    // After the answer: every leaf it cites is inside this checkpoint.
    let cp = node.checkpoint()?;
    let mut leaves: BTreeSet<u64> = lineage.nodes.iter().map(|n| n.created_leaf).collect();
    leaves.extend(lineage.edges.iter().map(|e| e.created_leaf));
    let opened = with_signing_keys(node, viewer, &leaves)?;
    let events = proven_events(node, &opened, cp.size)?;
    Ok(clew_ledger::ProvenAnswer {
        format: clew_ledger::PROVEN_ANSWER_FORMAT.into(),
        query: serde_json::json!({
            "kind": kind,
            "subject": subject,
            "direction": match direction { Direction::Upstream => "upstream", Direction::Downstream => "downstream" },
            "depth": depth,
            "asOf": lineage.as_of,
        }),
        checkpoint: cp.note_text(),
        nodes: lineage
            .nodes
            .iter()
            .map(|n| clew_ledger::ProvenNode {
                subject: n.subject.clone(),
                leaf_index: n.created_leaf,
            })
            .collect(),
        edges: lineage
            .edges
            .iter()
            .map(|e| clew_ledger::ProvenEdge {
                from: e.from.clone(),
                relation: e.relation.clone(),
                to: e.to.clone(),
                role: e.role.clone(),
                leaf_index: e.created_leaf,
            })
            .collect(),
        events,
        holders: Vec::new(),
    })
}

/// The leaves `leaves` (opened), closed over the registrations of the keys
/// that sign them, back to the genesis leaf: what a proof-carrying answer
/// carries. Refused unless the viewer may see every one of them in full.
pub(crate) fn with_signing_keys(
    node: &Node,
    viewer: &Viewer,
    leaves: &std::collections::BTreeSet<u64>,
) -> std::result::Result<
    std::collections::BTreeMap<u64, (Vec<u8>, clew_events::OpenedEnvelope)>,
    ApiError,
> {
    let mut pending: Vec<u64> = leaves.iter().copied().collect();
    let mut opened = std::collections::BTreeMap::new();
    while let Some(i) = pending.pop() {
        if opened.contains_key(&i) {
            continue;
        }
        let leaf = node.ledger().leaf(i)?;
        let o =
            clew_events::open(&leaf).map_err(|e| ApiError::Internal(format!("leaf {i}: {e}")))?;
        if !leaf_fully_visible(node, viewer, &o) {
            return Err(ApiError::Forbidden(format!(
                "this answer cites leaf {i}, which you may not see in full; proof-carrying answers carry every cited event"
            )));
        }
        let record = node.ledger().key(o.key_id())?.ok_or_else(|| {
            ApiError::Internal(format!(
                "leaf {i} is signed by unregistered key {}",
                o.key_id()
            ))
        })?;
        if !opened.contains_key(&record.registered_leaf) {
            pending.push(record.registered_leaf);
        }
        opened.insert(i, (leaf, o));
    }
    Ok(opened)
}

/// Each opened leaf with its inclusion proof against tree size `size`.
pub(crate) fn proven_events(
    node: &Node,
    opened: &std::collections::BTreeMap<u64, (Vec<u8>, clew_events::OpenedEnvelope)>,
    size: u64,
) -> std::result::Result<Vec<clew_ledger::ProvenEvent>, ApiError> {
    opened
        .iter()
        .map(|(i, (leaf, _))| {
            let proof = node.ledger().inclusion_proof(*i, size)?;
            Ok(clew_ledger::ProvenEvent {
                leaf_index: *i,
                envelope: B64.encode(leaf),
                inclusion_proof: hashes_b64(&proof),
            })
        })
        .collect()
}

/// A lineage answer as a W3C PROV-JSON document: datasets, versions and
/// models are entities, runs, transforms, validations and deployments are
/// activities, sites and principals are agents; every edge is the PROV
/// relation of the same name (`used` carries the training role).
pub(crate) fn prov_lineage(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    direction: Direction,
    depth: u32,
    base: &str,
) -> std::result::Result<serde_json::Value, ApiError> {
    use serde_json::{json, Map, Value};
    let l = lineage(node, viewer, subject, direction, depth, None)?;
    let qn = |subject: &str| format!("clew:{subject}");
    let class = |t: &str| match t {
        "transform" | "training-run" | "validation" | "deployment" => "activity",
        "site" | "principal" => "agent",
        _ => "entity",
    };
    let mut doc = Map::new();
    doc.insert(
        "prefix".into(),
        json!({"clew": format!("{base}/entity/"), "clewt": format!("{base}/ns#")}),
    );
    for n in &l.nodes {
        let mut attrs = Map::new();
        attrs.insert("prov:label".into(), n.label.clone().into());
        attrs.insert(
            "prov:type".into(),
            json!({"$": format!("clewt:{}", n.r#type), "type": "prov:QUALIFIED_NAME"}),
        );
        if n.r#type == "site" {
            attrs.insert(
                "prov:type".into(),
                json!({"$": "prov:Organization", "type": "prov:QUALIFIED_NAME"}),
            );
        }
        attrs.insert("clewt:leafIndex".into(), json!(n.created_leaf));
        if let Some(st) = &n.status {
            attrs.insert("clewt:status".into(), st.clone().into());
        }
        doc.entry(class(&n.r#type))
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .map(|m| m.insert(qn(&n.subject), Value::Object(attrs)));
    }
    for (i, e) in l.edges.iter().enumerate() {
        let (from, to) = (qn(&e.from), qn(&e.to));
        // PROV-DM: the argument names of each relation.
        let (kind, mut rel) = match e.relation.as_str() {
            "used" => ("used", json!({"prov:activity": from, "prov:entity": to})),
            "wasGeneratedBy" => (
                "wasGeneratedBy",
                json!({"prov:entity": from, "prov:activity": to}),
            ),
            "wasDerivedFrom" => (
                "wasDerivedFrom",
                json!({"prov:generatedEntity": from, "prov:usedEntity": to}),
            ),
            "wasAssociatedWith" => (
                "wasAssociatedWith",
                json!({"prov:activity": from, "prov:agent": to}),
            ),
            "wasAttributedTo" => (
                "wasAttributedTo",
                json!({"prov:entity": from, "prov:agent": to}),
            ),
            "wasInformedBy" => (
                "wasInformedBy",
                json!({"prov:informed": from, "prov:informant": to}),
            ),
            "specializationOf" => (
                "specializationOf",
                json!({"prov:specificEntity": from, "prov:generalEntity": to}),
            ),
            _ => continue,
        };
        if let Some(role) = &e.role {
            rel["prov:role"] = role.clone().into();
        }
        rel["clewt:leafIndex"] = json!(e.created_leaf);
        doc.entry(kind)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .map(|m| m.insert(format!("_:{kind}{i}"), rel));
    }
    Ok(Value::Object(doc))
}

pub(crate) fn hashes_b64(hashes: &[clew_ledger::Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h.0)).collect()
}

/// Whether the caller may see a leaf whole: its subject is visible and
/// nothing in it needs redacting.
pub(crate) fn leaf_fully_visible(
    node: &Node,
    viewer: &Viewer,
    opened: &clew_events::OpenedEnvelope,
) -> bool {
    if viewer.sees_all() {
        return true;
    }
    let mut payload = body_json(opened.body());
    viewer.subject_visible(node.catalog(), &opened.event.subject)
        && !viewer.redact(node.catalog(), &mut payload)
}

/// A withdrawal upstream of an entity.
#[derive(SimpleObject, Clone)]
pub struct Withdrawal {
    /// The withdrawn dataset version (or `[restricted]`).
    pub(crate) withdrawn: String,
    /// Leaf of the withdrawal event.
    pub(crate) leaf_index: u64,
}

/// A W3C PROV edge: `from` depends on `to`.
#[derive(SimpleObject, Clone)]
pub struct LineageEdge {
    /// Dependent entity.
    pub(crate) from: String,
    /// What it depends on.
    pub(crate) to: String,
    /// `used`, `wasGeneratedBy`, `wasDerivedFrom`, `wasAssociatedWith`, `wasAttributedTo`…
    pub(crate) relation: String,
    /// Training role of a dataset version (`train`, `validation`, `test`).
    pub(crate) role: Option<String>,
    /// Leaf that created the edge.
    pub(crate) created_leaf: u64,
}

pub(crate) fn edge_out(e: &Edge) -> LineageEdge {
    {
        LineageEdge {
            from: e.from.clone(),
            to: e.to.clone(),
            relation: e.relation.as_str().to_string(),
            role: e.role.clone(),
            created_leaf: e.created_leaf,
        }
    }
}

/// An entity as seen in a lineage or impact answer.
#[derive(SimpleObject, Clone)]
pub struct LineageNode {
    /// `<type>/<id>`.
    pub(crate) subject: String,
    /// Entity type.
    pub(crate) r#type: String,
    /// Human-readable name.
    pub(crate) label: String,
    /// Leaf that created it.
    pub(crate) created_leaf: u64,
    /// Leaf that withdrew or retired it.
    pub(crate) ended_leaf: Option<u64>,
    /// Status (deployments, validations, withdrawals).
    pub(crate) status: Option<String>,
    /// Whether a withdrawn dataset version lies upstream (or this is one).
    pub(crate) affected: bool,
    /// The withdrawals upstream.
    pub(crate) affected_by: Vec<Withdrawal>,
    /// Hops from the start.
    pub(crate) depth: u32,
    /// Impact answers only: the site it belongs to (its own, or its
    /// dataset's custodian).
    pub(crate) site: Option<String>,
    /// Impact answers only: who recorded it.
    pub(crate) owner: Option<String>,
    /// Impact answers only: the entity one hop nearer the withdrawn version
    /// it is reached from (follow these back to the start for the path).
    pub(crate) reached_from: Option<String>,
    /// Impact answers only: the PROV relation of that hop.
    pub(crate) reached_by: Option<String>,
}

pub(crate) fn lineage_node(v: &NodeView, viewer: &Viewer, node: &Node) -> LineageNode {
    LineageNode {
        subject: v.subject.clone(),
        r#type: v.node_type.clone(),
        label: v.label.clone(),
        created_leaf: v.created_leaf,
        ended_leaf: v.ended_leaf,
        status: v.status.clone(),
        affected: v.affected,
        affected_by: v
            .affected_by
            .iter()
            .map(|a| Withdrawal {
                withdrawn: viewer.redact_subject(node.catalog(), &a.withdrawn),
                leaf_index: a.leaf,
            })
            .collect(),
        depth: v.depth,
        site: v.site.clone(),
        owner: v.owner.clone(),
        reached_from: v.reached_from.clone(),
        reached_by: v.reached_by.clone(),
    }
}

/// A lineage answer: entities and the PROV edges between them.
#[derive(SimpleObject, Clone)]
pub struct Lineage {
    /// Tree size the answer is for.
    pub(crate) as_of: u64,
    /// Entities, the start first.
    pub(crate) nodes: Vec<LineageNode>,
    /// Edges between them.
    pub(crate) edges: Vec<LineageEdge>,
}

/// A lineage answer as GraphQL serves it. The walk behind it was gated by
/// [`admit`], so it holds only what the viewer may see and what is connected
/// to the start through visible entities (a hidden entity is not a bridge).
pub(crate) fn lineage_out(
    answer: clew_catalog::LineageAnswer,
    viewer: &Viewer,
    node: &Node,
) -> Lineage {
    Lineage {
        as_of: answer.as_of,
        nodes: answer
            .nodes
            .iter()
            .map(|n| lineage_node(n, viewer, node))
            .collect(),
        edges: answer.edges.iter().map(edge_out).collect(),
    }
}

/// The event that created or changed an entity.
#[derive(SimpleObject, Clone)]
pub struct EventRef {
    /// Leaf index of the event in the ledger.
    pub(crate) leaf_index: u64,
    /// Event id (UUIDv7).
    pub(crate) event_id: String,
    /// Event kind, e.g. `DATASET_REGISTERED`.
    pub(crate) kind: String,
    /// Principal recorded as the actor.
    pub(crate) actor: String,
    /// RFC 3339 time the producer gave.
    pub(crate) time: String,
}

pub(crate) fn kind_name(kind: &str) -> String {
    kind.trim_start_matches("EVENT_KIND_").to_string()
}

impl From<&HistoryEntry> for EventRef {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            leaf_index: h.leaf,
            event_id: h.event_id.clone(),
            kind: kind_name(&h.kind),
            actor: h.actor.clone(),
            time: h.time.clone(),
        }
    }
}

/// What the withdrawal of a dataset version affects.
#[derive(SimpleObject, Clone)]
pub struct Impact {
    /// Tree size the answer is for.
    pub(crate) as_of: u64,
    /// The dataset version.
    pub(crate) dataset_version: LineageNode,
    /// Everything downstream: live deployments first.
    pub(crate) affected: Vec<LineageNode>,
    /// Live deployments among them.
    pub(crate) live_deployments: usize,
}

/// One event, as recorded in the ledger.
#[derive(SimpleObject, Clone)]
pub struct HistoryEvent {
    /// Leaf index, event id, kind, actor and time.
    #[graphql(flatten)]
    pub(crate) event: EventRef,
    /// Key id (`<name>+<8 hex digits>`) of the producer key that signed the
    /// event's envelope (DSSE `keyid`).
    pub(crate) signer: String,
    /// The event body (proto3 JSON), references the caller may not see redacted.
    pub(crate) payload: Json<serde_json::Value>,
}

/// Every event about `subject` before tree size `as_of`, payloads redacted
/// for the viewer; an entity it may not see answers as absent.
pub(crate) fn history_of(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    as_of: u64,
) -> std::result::Result<Vec<HistoryEvent>, ApiError> {
    visible_entity(node, viewer, subject, as_of)?;
    let mut out = Vec::new();
    for h in node.catalog().history(subject)? {
        if h.leaf >= as_of {
            continue;
        }
        let leaf = node.ledger().leaf(h.leaf)?;
        let opened = clew_events::open(&leaf)
            .map_err(|e| ApiError::Internal(format!("leaf {}: {e}", h.leaf)))?;
        let mut payload = body_json(opened.body());
        viewer.redact(node.catalog(), &mut payload);
        out.push(HistoryEvent {
            event: EventRef::from(&h),
            signer: opened.key_id().to_string(),
            payload: Json(payload),
        });
    }
    Ok(out)
}

/// Lineage up or down from `subject`, at most `depth` hops (≤ 50), through
/// what the viewer may see.
pub(crate) fn lineage(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    direction: Direction,
    depth: u32,
    as_of: Option<u64>,
) -> std::result::Result<Lineage, ApiError> {
    if depth > 50 {
        return Err(ApiError::BadInput(format!(
            "depth {depth} is over the limit of 50"
        )));
    }
    let visible = admit(viewer, node);
    let a = node.catalog().lineage_within(
        subject,
        direction,
        depth,
        as_of,
        walk_gate(viewer, &visible),
    )?;
    Ok(lineage_out(a, viewer, node))
}

/// The shortest chain of lineage between two entities (either way) through
/// what the viewer may see, if there is one.
pub(crate) fn path(
    node: &Node,
    viewer: &Viewer,
    from: &str,
    to: &str,
    as_of: Option<u64>,
) -> std::result::Result<Option<Lineage>, ApiError> {
    let visible = admit(viewer, node);
    Ok(node
        .catalog()
        .path_within(from, to, as_of, walk_gate(viewer, &visible))?
        .map(|a| lineage_out(a, viewer, node)))
}

/// Everything downstream of a dataset version that the viewer may see: what
/// its withdrawal affects, live deployments counted.
pub(crate) fn impact(
    node: &Node,
    viewer: &Viewer,
    dataset_version: &str,
    as_of: Option<u64>,
) -> std::result::Result<Impact, ApiError> {
    let subject = if dataset_version.starts_with("dataset-version/") {
        dataset_version.to_string()
    } else {
        format!("dataset-version/{dataset_version}")
    };
    let visible = admit(viewer, node);
    let a = node
        .catalog()
        .impact_within(&subject, as_of, walk_gate(viewer, &visible))?;
    let affected: Vec<LineageNode> = a
        .affected
        .iter()
        .map(|n| lineage_node(n, viewer, node))
        .collect();
    let live = affected
        .iter()
        .filter(|n| {
            n.r#type == "deployment"
                && n.status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("live"))
        })
        .count();
    Ok(Impact {
        as_of: a.as_of,
        dataset_version: lineage_node(&a.dataset_version, viewer, node),
        affected,
        live_deployments: live,
    })
}
