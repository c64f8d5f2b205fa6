//! Proof-carrying answers: a lineage or impact answer together with, for
//! every node and edge, the leaf that recorded it, that leaf's envelope and
//! its RFC 6962 inclusion proof against one signed checkpoint — one JSON
//! document a governance team can hand to anyone holding the ledger's
//! verifier key. [`verify_answer`] checks it offline:
//!
//! 1. the checkpoint's signature (C2SP signed-note) with the verifier key;
//! 2. every event's inclusion at its leaf index (RFC 6962 section 2.1.1
//!    audit path against the checkpoint's root);
//! 3. every event's DSSE signature, with a key whose own registration event
//!    is in the document, earlier in the log (the chain ends at leaf 0, the
//!    genesis administrator's self-registration);
//! 4. every node is the subject of its event; every edge joins two nodes of
//!    the answer, is recorded by an event about one of its ends that names the
//!    other, and its relation fits W3C PROV for the two entity types.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_events::proto::event::Body;
use clew_events::{OpenedEnvelope, VerifierKey};
use serde::{Deserialize, Serialize};
use tlog_tiles::{check_record, record_hash, Hash};

use crate::{checkpoint, LedgerError};

/// Format name of the document.
pub const PROVEN_ANSWER_FORMAT: &str = "clew.proven-answer/1";

/// An entity of the answer and the leaf that created it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenNode {
    pub subject: String,
    pub leaf_index: u64,
}

/// A PROV relation of the answer and the leaf that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenEdge {
    pub from: String,
    pub relation: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub leaf_index: u64,
}

/// One leaf: its envelope and inclusion proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenEvent {
    pub leaf_index: u64,
    /// Base64 of the leaf (the canonical DSSE envelope bytes).
    pub envelope: String,
    /// Base64 hashes, leaf sibling first.
    pub inclusion_proof: Vec<String>,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenAnswer {
    pub format: String,
    /// What was asked (kind, subject, direction, depth).
    pub query: serde_json::Value,
    /// The signed checkpoint every proof is against.
    pub checkpoint: String,
    pub nodes: Vec<ProvenNode>,
    pub edges: Vec<ProvenEdge>,
    /// Every leaf the nodes and edges cite, plus the key registrations that
    /// sign them, each once.
    pub events: Vec<ProvenEvent>,
    /// For an access audit (`query.kind` "access-audit"): who held access to
    /// the dataset in the window, which the verifier recomputes from `events`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<crate::audit::AccessHolder>,
}

/// What a verified document holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedAnswer {
    pub tree_size: u64,
    pub nodes: usize,
    pub edges: usize,
    pub events: usize,
}

/// Which (from type, relation, to type) triples Clew records (W3C PROV-O
/// terms: used, wasGeneratedBy, wasDerivedFrom, wasAssociatedWith,
/// wasAttributedTo, wasInformedBy, specializationOf).
const PROV_TRIPLES: &[(&str, &str, &str)] = &[
    ("dataset", "wasAttributedTo", "site"),
    ("dataset-version", "specializationOf", "dataset"),
    ("dataset-version", "wasDerivedFrom", "dataset-version"),
    ("dataset-version", "wasGeneratedBy", "transform"),
    ("transform", "used", "dataset-version"),
    ("transform", "wasAssociatedWith", "principal"),
    ("training-run", "used", "dataset-version"),
    ("training-run", "wasAssociatedWith", "principal"),
    ("model-version", "wasGeneratedBy", "training-run"),
    ("validation", "used", "model-version"),
    ("validation", "used", "dataset-version"),
    ("validation", "wasAssociatedWith", "site"),
    ("deployment", "used", "model-version"),
    ("deployment", "wasAssociatedWith", "site"),
    ("deployment", "wasInformedBy", "validation"),
];

fn entity_type(subject: &str) -> &str {
    subject.split_once('/').map(|(t, _)| t).unwrap_or("")
}

fn entity_id(subject: &str) -> &str {
    subject.split_once('/').map(|(_, i)| i).unwrap_or(subject)
}

/// Whether `needle` is one of the string values of `v`, at any depth.
fn names(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s == needle,
        serde_json::Value::Array(a) => a.iter().any(|x| names(x, needle)),
        serde_json::Value::Object(o) => o.values().any(|x| names(x, needle)),
        _ => false,
    }
}

fn decode_hash(text: &str) -> Option<Hash> {
    let raw = B64.decode(text).ok()?;
    Some(Hash(raw.try_into().ok()?))
}

/// Checks a proof-carrying answer offline with the ledger's verifier key.
pub fn verify_answer(doc: &ProvenAnswer, vkey: &str) -> Result<VerifiedAnswer, LedgerError> {
    let bad = |why: String| LedgerError::Corrupt(why);
    if doc.format != PROVEN_ANSWER_FORMAT {
        return Err(bad(format!(
            "format {:?} is not {PROVEN_ANSWER_FORMAT:?}",
            doc.format
        )));
    }
    let cp = checkpoint::parse(doc.checkpoint.as_bytes(), vkey)?;

    // 2. Inclusion of every event.
    let mut events: BTreeMap<u64, OpenedEnvelope> = BTreeMap::new();
    for e in &doc.events {
        let i = e.leaf_index;
        if i >= cp.size {
            return Err(bad(format!(
                "event at leaf {i} is beyond the checkpoint's {} leaves",
                cp.size
            )));
        }
        let leaf = B64
            .decode(&e.envelope)
            .map_err(|_| bad(format!("event at leaf {i}: the envelope is not base64")))?;
        let proof = e
            .inclusion_proof
            .iter()
            .map(|h| decode_hash(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(format!(
                    "event at leaf {i}: a proof hash is not 32 bytes of base64"
                ))
            })?;
        check_record(&proof, cp.size, cp.root, i, record_hash(&leaf)).map_err(|_| {
            bad(format!(
                "event at leaf {i}: its inclusion proof does not lead to the checkpoint's root"
            ))
        })?;
        let opened =
            clew_events::open(&leaf).map_err(|e| bad(format!("event at leaf {i}: {e}")))?;
        if events.insert(i, opened).is_some() {
            return Err(bad(format!("leaf {i} is listed twice")));
        }
    }

    // 3. Signatures, with keys registered in the document.
    let mut keys: HashMap<String, (u64, VerifierKey)> = HashMap::new();
    for (i, o) in &events {
        if let Body::PrincipalRegistered(p) = o.body() {
            if !p.verifier_key.is_empty() {
                let k = VerifierKey::parse(&p.verifier_key)
                    .map_err(|e| bad(format!("key registered at leaf {i}: {e}")))?;
                keys.entry(k.key_id().to_string()).or_insert((*i, k));
            }
        }
    }
    for (i, o) in &events {
        let key_id = o.key_id();
        let Some((registered, key)) = keys.get(key_id) else {
            return Err(bad(format!(
                "event at leaf {i} is signed by key {key_id}, whose registration is not in the answer"
            )));
        };
        // Only the genesis leaf may be signed by the key it registers.
        if registered > i || (registered == i && *i != 0) {
            return Err(bad(format!(
                "event at leaf {i} is signed by key {key_id}, registered only at leaf {registered}"
            )));
        }
        o.verify_signature(key)
            .map_err(|e| bad(format!("event at leaf {i}: {e}")))?;
    }

    if doc.query.get("kind").and_then(|k| k.as_str()) == Some(crate::audit::ACCESS_AUDIT_KIND) {
        return verify_access_audit(doc, &events, cp.size);
    }

    // 4. Nodes and edges are what the events say.
    let mut subjects = HashSet::new();
    for n in &doc.nodes {
        let Some(o) = events.get(&n.leaf_index) else {
            return Err(bad(format!(
                "node {} cites leaf {}, which is not in the answer",
                n.subject, n.leaf_index
            )));
        };
        if o.event.subject != n.subject {
            return Err(bad(format!(
                "node {} cites leaf {}, which is about {}",
                n.subject, n.leaf_index, o.event.subject
            )));
        }
        if !subjects.insert(n.subject.as_str()) {
            return Err(bad(format!("node {} is listed twice", n.subject)));
        }
    }
    if let Some(start) = doc.query.get("subject").and_then(|s| s.as_str()) {
        if !subjects.contains(start) {
            return Err(bad(format!(
                "the subject asked about, {start}, is not among the nodes"
            )));
        }
    }
    for e in &doc.edges {
        let what = format!("edge {} {} {}", e.from, e.relation, e.to);
        for end in [&e.from, &e.to] {
            if !subjects.contains(end.as_str()) {
                return Err(bad(format!("{what}: {end} is not among the nodes")));
            }
        }
        let triple = (
            entity_type(&e.from),
            e.relation.as_str(),
            entity_type(&e.to),
        );
        if !PROV_TRIPLES.contains(&triple) {
            return Err(bad(format!(
                "{what}: not a relation Clew records between these types"
            )));
        }
        let Some(o) = events.get(&e.leaf_index) else {
            return Err(bad(format!(
                "{what} cites leaf {}, which is not in the answer",
                e.leaf_index
            )));
        };
        let other = if o.event.subject == e.from {
            &e.to
        } else if o.event.subject == e.to {
            &e.from
        } else {
            return Err(bad(format!(
                "{what} cites leaf {}, which is about {}",
                e.leaf_index, o.event.subject
            )));
        };
        let body = serde_json::to_value(&o.event).map_err(|e| bad(e.to_string()))?;
        let id = entity_id(other);
        if !(names(&body, id) || names(&body, other)) {
            return Err(bad(format!(
                "{what}: leaf {} does not name {other}",
                e.leaf_index
            )));
        }
        if let Some(role) = &e.role {
            // Roles are enum names in the event (DATASET_ROLE_TRAIN for "train").
            if !body
                .to_string()
                .to_lowercase()
                .contains(&role.to_lowercase())
            {
                return Err(bad(format!(
                    "{what}: leaf {} does not give the role {role}",
                    e.leaf_index
                )));
            }
        }
    }
    Ok(VerifiedAnswer {
        tree_size: cp.size,
        nodes: doc.nodes.len(),
        edges: doc.edges.len(),
        events: doc.events.len(),
    })
}

/// Step 4 of an access audit: the holders are exactly what the carried
/// events give for the dataset and window asked about.
fn verify_access_audit(
    doc: &ProvenAnswer,
    events: &BTreeMap<u64, OpenedEnvelope>,
    tree_size: u64,
) -> Result<VerifiedAnswer, LedgerError> {
    let bad = |why: String| LedgerError::Corrupt(why);
    let text = |field: &str| {
        doc.query
            .get(field)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("the access audit's query has no {field}")))
    };
    let dataset = text("dataset")?;
    let from = crate::audit::unix_seconds(text("from")?)
        .ok_or_else(|| bad("the query's from is not an RFC 3339 time".into()))?;
    let to = crate::audit::unix_seconds(text("to")?)
        .ok_or_else(|| bad("the query's to is not an RFC 3339 time".into()))?;
    let registered = format!("dataset/{dataset}");
    if !events.values().any(|o| o.event.subject == registered) {
        return Err(bad(format!(
            "the registration of {registered} is not in the answer"
        )));
    }
    let derived = crate::audit::access_holders(dataset, from, to, events);
    let mut claimed = doc.holders.clone();
    claimed.sort();
    let span = |h: &crate::audit::AccessHolder| {
        format!(
            "principal/{} held access through grant {} from {} to {}",
            h.principal,
            h.grant_id,
            h.from,
            h.until.as_deref().unwrap_or("no end")
        )
    };
    if let Some(h) = claimed.iter().find(|h| !derived.contains(h)) {
        return Err(bad(format!(
            "the answer says {}, which its events do not give",
            span(h)
        )));
    }
    if let Some(h) = derived.iter().find(|h| !claimed.contains(h)) {
        return Err(bad(format!(
            "the events say {}, which the answer leaves out",
            span(h)
        )));
    }
    Ok(VerifiedAnswer {
        tree_size,
        nodes: 0,
        edges: 0,
        events: events.len(),
    })
}

/// Base64 of each proof hash.
pub fn proof_b64(proof: &[Hash]) -> Vec<String> {
    proof.iter().map(|h| B64.encode(h.0)).collect()
}
