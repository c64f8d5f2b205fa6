//! The stored form of node records and history entries.
//!
//! Each is a protobuf message (prost): leaves and edges as varints, event
//! kinds as their `EventKind` numbers, and a node's type and id left out
//! (they are its key). The attributes stay the JSON text they are served
//! as, in a field of their own. The value's first byte says how the message
//! is kept:
//!
//! - 3: as it is (history entries, and node records compression would not
//!   make smaller);
//! - 4: a node record compressed as one zstd frame (RFC 8878) with its
//!   content size; a node record keeps about 70% of its bytes so;
//! - `{`: a JSON object, as format 2 wrote every record.
//!
//! Every form is read, so a catalogue of format 2 or 3 is read as it is, its
//! records rewritten as they change, and `clew reindex` rewrites them all.
//! The projection's overlay holds node records uncompressed and compresses
//! each once, when its chunk is written ([`kept_node`]). Compression
//! contexts are kept per thread: a fresh one costs more than compressing a
//! record.

use clew_events::proto::EventKind;
use prost::Message;
use serde_json::value::RawValue;

use crate::graph::{Affect, HistoryEntry, NodeRecord, OutEdge, Relation};
use crate::CatalogError;

/// The first byte of a message kept as it is (a JSON record opens with `{`).
const VERSION: u8 = 3;

/// The first byte of a node record kept compressed.
const COMPRESSED: u8 = 4;

/// The zstd level node records are compressed at (levels 1 and 3 keep the
/// same share of a node record; 1 is the faster).
const ZSTD_LEVEL: i32 = 1;

/// Messages shorter than this are kept as they are: a zstd frame's own
/// header and block header would eat what compressing them saves.
const COMPRESS_FROM: usize = 128;

/// The largest node record a compressed frame may claim to hold: a node's
/// attributes are one event body (or an access request's few transitions),
/// far below this; a frame claiming more is damaged.
const MAX_NODE_BYTES: u64 = 64 * 1024 * 1024;

/// `message` compressed, when that makes it smaller.
fn compressed(message: &[u8]) -> Option<Vec<u8>> {
    if message.len() < COMPRESS_FROM {
        return None;
    }
    clew_ledger::frames::compressed(message, ZSTD_LEVEL, false)
}

/// The message a compressed frame holds.
fn decompressed(frame: &[u8]) -> Result<Vec<u8>, String> {
    clew_ledger::frames::decompressed(frame, MAX_NODE_BYTES as usize)
}

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

/// The stored form of `node` (its key holds its type and id), uncompressed:
/// what a chunk's overlay holds until [`kept_node`] makes it the form kept.
pub(crate) fn encode_node(node: &NodeRecord) -> Vec<u8> {
    with_version(&stored_node(node))
}

/// The form a node record's `value` is kept in: compressed when it is
/// uncompressed and compressing makes it smaller; any other as it is.
/// The projection calls it once per node and chunk, when the chunk's sled
/// batch is built (on every core), not each time a node changes.
pub(crate) fn kept_node(value: Vec<u8>) -> Vec<u8> {
    let Some((&VERSION, message)) = value.split_first() else {
        return value;
    };
    match compressed(message) {
        Some(frame) => {
            let mut v = Vec::with_capacity(1 + frame.len());
            v.push(COMPRESSED);
            v.extend_from_slice(&frame);
            v
        }
        None => value,
    }
}

fn stored_node(node: &NodeRecord) -> StoredNode {
    StoredNode {
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
    }
}

/// Reads a stored record kept as it is or compressed (`binary` decodes its
/// message) or of format 2 (JSON); `what` names it in the error.
fn read<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
    binary: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, CatalogError> {
    match bytes.split_first() {
        Some((&VERSION, message)) => binary(message),
        Some((&COMPRESSED, frame)) => decompressed(frame).and_then(|m| binary(&m)),
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => Err("unknown record format".into()),
    }
    .map_err(|e| {
        CatalogError::Corrupt(format!(
            "{what} does not decode ({e}); `clew reindex` rebuilds the catalogue from the ledger"
        ))
    })
}

/// Reads the stored node of `subject` (`<type>/<id>`), in any form.
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
        let bytes = kept_node(encode_node(&n));
        assert!([VERSION, COMPRESSED].contains(&bytes[0]), "{}", bytes[0]);
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

    fn with_attributes(json: String) -> NodeRecord {
        NodeRecord {
            attributes: RawValue::from_string(json).unwrap(),
            ..node()
        }
    }

    #[test]
    fn a_large_node_record_is_kept_compressed_and_reads_back() {
        let manufacturers: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"manufacturer":"GE MEDICAL SYSTEMS","model":"Revolution {i}"}}"#))
            .collect();
        let n = with_attributes(format!(
            r#"{{"datasetId":"ds-1","manufacturers":[{}]}}"#,
            manufacturers.join(",")
        ));
        let bytes = kept_node(encode_node(&n));
        assert_eq!(bytes[0], COMPRESSED);
        let plain = encode_node(&n);
        assert_eq!(plain[0], VERSION);
        assert_eq!(decode_node(&n.subject(), &plain).unwrap(), n);
        assert!(
            bytes.len() * 2 < plain.len(),
            "{} bytes kept for a message of {}",
            bytes.len(),
            plain.len()
        );
        assert_eq!(decode_node(&n.subject(), &bytes).unwrap(), n);
        // Many records through the same thread's contexts.
        for i in 0..100 {
            let n = with_attributes(format!(r#"{{"i":{i},"m":[{}]}}"#, manufacturers.join(",")));
            assert_eq!(
                decode_node(&n.subject(), &kept_node(encode_node(&n))).unwrap(),
                n
            );
        }
    }

    #[test]
    fn a_small_node_record_is_kept_as_it_is() {
        let n = NodeRecord {
            label: "x".into(),
            statuses: vec![],
            affected_by: vec![],
            out: vec![],
            ended_detail: None,
            created_by: HistoryEntry {
                event_id: "e".into(),
                time: String::new(),
                ..node().created_by
            },
            ..with_attributes("{}".into())
        };
        let bytes = kept_node(encode_node(&n));
        assert!(bytes.len() < 1 + COMPRESS_FROM, "{} bytes", bytes.len());
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode_node(&n.subject(), &bytes).unwrap(), n);
    }

    #[test]
    fn a_damaged_or_overlong_compressed_record_is_named() {
        let n = with_attributes(format!(
            r#"{{"notes":"{}"}}"#,
            "same words again ".repeat(50)
        ));
        let bytes = kept_node(encode_node(&n));
        assert_eq!(bytes[0], COMPRESSED);
        let truncated = &bytes[..bytes.len() - 3];
        let err = decode_node("dataset/ds-1", truncated)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node dataset/ds-1 does not decode") && err.contains("decompress"),
            "{err}"
        );
        // A frame that claims more than any node record holds is refused
        // before it is decompressed.
        let zeros = vec![0u8; MAX_NODE_BYTES as usize + 1];
        let mut overlong = vec![COMPRESSED];
        overlong.extend(zstd::bulk::compress(&zeros, 1).unwrap());
        let err = decode_node("dataset/ds-1", &overlong)
            .unwrap_err()
            .to_string();
        assert!(err.contains("claims 67108865 bytes"), "{err}");
    }
}
