//! The stored form of node records and history entries.
//!
//! Format 3 writes each as one version byte (3) followed by a protobuf
//! message (prost): leaves and edges as varints, event kinds as their
//! `EventKind` numbers, and a node's type and id left out (they are its
//! key). The attributes stay the JSON text they are served as, in a field
//! of their own. Format 2 wrote the same records as JSON objects; a value
//! that opens with `{` is read as one, so a catalogue of format 2 is read
//! as it is, its records rewritten as they change, and `clew reindex`
//! rewrites them all.

use clew_events::proto::EventKind;
use prost::Message;
use serde_json::value::RawValue;

use crate::graph::{Affect, HistoryEntry, NodeRecord, OutEdge, Relation};
use crate::CatalogError;

/// The first byte of a record of format 3 (a JSON record opens with `{`).
const VERSION: u8 = 3;

#[derive(Clone, PartialEq, Message)]
struct StoredHistory {
    #[prost(uint64, tag = "1")]
    leaf: u64,
    #[prost(string, tag = "2")]
    event_id: String,
    /// The `EventKind` number.
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(string, tag = "4")]
    actor: String,
    #[prost(string, tag = "5")]
    time: String,
    /// The kind's name, only when it is not an `EventKind` this build knows.
    #[prost(string, tag = "6")]
    kind_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct StoredStatus {
    #[prost(uint64, tag = "1")]
    leaf: u64,
    #[prost(string, tag = "2")]
    status: String,
}

#[derive(Clone, PartialEq, Message)]
struct StoredAffect {
    #[prost(string, tag = "1")]
    withdrawn: String,
    #[prost(uint64, tag = "2")]
    leaf: u64,
}

#[derive(Clone, PartialEq, Message)]
struct StoredEdge {
    /// `Relation::code`.
    #[prost(uint32, tag = "1")]
    relation: u32,
    #[prost(string, tag = "2")]
    to: String,
    #[prost(string, optional, tag = "3")]
    role: Option<String>,
    #[prost(uint64, tag = "4")]
    created_leaf: u64,
}

#[derive(Clone, PartialEq, Message)]
struct StoredNode {
    #[prost(string, tag = "1")]
    label: String,
    #[prost(uint64, tag = "2")]
    created_leaf: u64,
    #[prost(message, optional, tag = "3")]
    created_by: Option<StoredHistory>,
    #[prost(uint64, optional, tag = "4")]
    ended_leaf: Option<u64>,
    #[prost(message, repeated, tag = "5")]
    statuses: Vec<StoredStatus>,
    #[prost(message, repeated, tag = "6")]
    affected_by: Vec<StoredAffect>,
    #[prost(message, repeated, tag = "7")]
    out: Vec<StoredEdge>,
    /// JSON text.
    #[prost(string, optional, tag = "8")]
    ended_detail: Option<String>,
    /// JSON text.
    #[prost(string, tag = "9")]
    attributes: String,
}

fn stored_history(h: &HistoryEntry) -> StoredHistory {
    let known = EventKind::from_str_name(&h.kind);
    StoredHistory {
        leaf: h.leaf,
        event_id: h.event_id.clone(),
        kind: known.map_or(0, |k| k as i32),
        actor: h.actor.clone(),
        time: h.time.clone(),
        kind_name: if known.is_some() {
            String::new()
        } else {
            h.kind.clone()
        },
    }
}

fn history_of(h: StoredHistory) -> Result<HistoryEntry, String> {
    let kind = if h.kind_name.is_empty() {
        EventKind::try_from(h.kind)
            .map_err(|_| format!("event kind {} is unknown", h.kind))?
            .as_str_name()
            .to_string()
    } else {
        h.kind_name
    };
    Ok(HistoryEntry {
        leaf: h.leaf,
        event_id: h.event_id,
        kind,
        actor: h.actor,
        time: h.time,
    })
}

fn with_version(message: &impl Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + message.encoded_len());
    v.push(VERSION);
    message.encode_raw(&mut v);
    v
}

/// The stored form of `node` (its key holds its type and id).
pub(crate) fn encode_node(node: &NodeRecord) -> Vec<u8> {
    with_version(&StoredNode {
        label: node.label.clone(),
        created_leaf: node.created_leaf,
        created_by: Some(stored_history(&node.created_by)),
        ended_leaf: node.ended_leaf,
        statuses: node
            .statuses
            .iter()
            .map(|(leaf, status)| StoredStatus {
                leaf: *leaf,
                status: status.clone(),
            })
            .collect(),
        affected_by: node
            .affected_by
            .iter()
            .map(|a| StoredAffect {
                withdrawn: a.withdrawn.clone(),
                leaf: a.leaf,
            })
            .collect(),
        out: node
            .out
            .iter()
            .map(|e| StoredEdge {
                relation: u32::from(e.relation.code()),
                to: e.to.clone(),
                role: e.role.clone(),
                created_leaf: e.created_leaf,
            })
            .collect(),
        ended_detail: node.ended_detail.as_ref().map(|d| d.to_string()),
        attributes: node.attributes.get().to_string(),
    })
}

/// Reads a stored record of format 3 (`binary` decodes its message) or of
/// format 2 (JSON); `what` names it in the error.
fn read<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
    binary: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, CatalogError> {
    match bytes.split_first() {
        Some((&VERSION, message)) => binary(message),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => Err("unknown record format".into()),
    }
    .map_err(|e| {
        CatalogError::Corrupt(format!(
            "{what} does not decode ({e}); `clew reindex` rebuilds the catalogue from the ledger"
        ))
    })
}

/// Reads the stored node of `subject` (`<type>/<id>`), of format 3 or 2.
pub(crate) fn decode_node(subject: &str, bytes: &[u8]) -> Result<NodeRecord, CatalogError> {
    read(&format!("node {subject}"), bytes, |message| {
        let s = StoredNode::decode(message).map_err(|e| e.to_string())?;
        let (node_type, id) = subject
            .split_once('/')
            .ok_or("the key is not <type>/<id>")?;
        let created_by = history_of(s.created_by.ok_or("no creating event")?)?;
        let out = s
            .out
            .into_iter()
            .map(|e| {
                let relation = u8::try_from(e.relation)
                    .ok()
                    .and_then(Relation::from_code)
                    .ok_or_else(|| format!("relation {} is unknown", e.relation))?;
                Ok(OutEdge {
                    relation,
                    to: e.to,
                    role: e.role,
                    created_leaf: e.created_leaf,
                })
            })
            .collect::<Result<_, String>>()?;
        let ended_detail = s
            .ended_detail
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(NodeRecord {
            node_type: node_type.to_string(),
            id: id.to_string(),
            label: s.label,
            created_leaf: s.created_leaf,
            created_by,
            ended_leaf: s.ended_leaf,
            statuses: s.statuses.into_iter().map(|x| (x.leaf, x.status)).collect(),
            affected_by: s
                .affected_by
                .into_iter()
                .map(|a| Affect {
                    withdrawn: a.withdrawn,
                    leaf: a.leaf,
                })
                .collect(),
            out,
            ended_detail,
            attributes: RawValue::from_string(s.attributes).map_err(|e| e.to_string())?,
        })
    })
}

/// The stored form of a history entry.
pub(crate) fn encode_history(entry: &HistoryEntry) -> Vec<u8> {
    with_version(&stored_history(entry))
}

/// Reads a stored history entry, of format 3 or 2.
pub(crate) fn decode_history(bytes: &[u8]) -> Result<HistoryEntry, CatalogError> {
    read("history entry", bytes, |message| {
        history_of(StoredHistory::decode(message).map_err(|e| e.to_string())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeRecord {
        NodeRecord {
            node_type: "dataset-version".into(),
            id: "ds-1@2.0".into(),
            label: "Chest CT 2.0".into(),
            created_leaf: 41,
            created_by: HistoryEntry {
                leaf: 41,
                event_id: "0190f1a2-0000-7000-8000-000000000001".into(),
                kind: "EVENT_KIND_DATASET_VERSION_REGISTERED".into(),
                actor: "alice".into(),
                time: "2026-01-02T03:04:05Z".into(),
            },
            ended_leaf: Some(90),
            statuses: vec![(50, "ACTIVE".into())],
            affected_by: vec![Affect {
                withdrawn: "dataset-version/ds-0@1.0".into(),
                leaf: 60,
            }],
            out: vec![
                OutEdge {
                    relation: Relation::SpecializationOf,
                    to: "dataset/ds-1".into(),
                    role: None,
                    created_leaf: 41,
                },
                OutEdge {
                    relation: Relation::Used,
                    to: "dataset-version/ds-0@1.0".into(),
                    role: Some("training".into()),
                    created_leaf: 41,
                },
            ],
            ended_detail: Some(serde_json::json!({"reason": "consent withdrawn"})),
            attributes: RawValue::from_string(r#"{"datasetId":"ds-1","version":"2.0"}"#.into())
                .unwrap(),
        }
    }

    #[test]
    fn a_node_reads_back_as_it_was_stored_in_two_thirds_of_its_json() {
        let n = node();
        let bytes = encode_node(&n);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode_node(&n.subject(), &bytes).unwrap(), n);
        let json = serde_json::to_vec(&n).unwrap();
        assert!(
            bytes.len() * 3 < json.len() * 2,
            "{} bytes stored against {} as JSON",
            bytes.len(),
            json.len()
        );
    }

    #[test]
    fn records_of_format_2_are_still_read() {
        let n = node();
        let json = serde_json::to_vec(&n).unwrap();
        assert_eq!(decode_node(&n.subject(), &json).unwrap(), n);
        let h = n.created_by.clone();
        assert_eq!(decode_history(&serde_json::to_vec(&h).unwrap()).unwrap(), h);
        assert_eq!(decode_history(&encode_history(&h)).unwrap(), h);
    }

    #[test]
    fn an_unknown_kind_name_is_kept_and_damage_is_named() {
        let mut h = node().created_by;
        h.kind = "EVENT_KIND_FROM_A_LATER_BUILD".into();
        assert_eq!(decode_history(&encode_history(&h)).unwrap(), h);
        let err = decode_node("dataset/ds-1", &[VERSION, 0xff, 0xff]).unwrap_err();
        assert!(
            err.to_string()
                .contains("node dataset/ds-1 does not decode"),
            "{err}"
        );
        let err = decode_node("dataset/ds-1", b"\x07").unwrap_err();
        assert!(err.to_string().contains("unknown record format"), "{err}");
    }
}
