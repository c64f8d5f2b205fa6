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
//! - 5: a node record compressed as one zstd frame with a
//!   [`NodeDictionary`] the catalogue trained for its node type (the frame
//!   names it, RFC 8878 §3.1.1.1.3);
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

/// The first byte of a node record compressed with the catalogue's
/// dictionary.
const WITH_DICTIONARY: u8 = 5;

/// The size of a trained dictionary: of 16, 64 and 112 KiB trained on the
/// benchmarks' node records, the smallest kept the smallest share of them.
const DICTIONARY_BYTES: usize = 16 * 1024;

/// A zstd dictionary (RFC 8878 §5) trained on a catalogue's own node
/// records of one type. Records of a type are small and alike (one event
/// body each, the same field names and vocabularies), so a frame that
/// starts from what they share is a fraction of one that starts from
/// nothing. A catalogue trains one per type, once the chunks it applied
/// since opening hold enough records of it, and keeps it beside them;
/// records written before it stay as they are.
pub(crate) struct NodeDictionary {
    /// As trained and stored.
    bytes: Vec<u8>,
    /// Its id, which each frame made with it names.
    id: u32,
    compress: zstd::zstd_safe::CDict<'static>,
    decompress: zstd::zstd_safe::DDict<'static>,
}

impl std::fmt::Debug for NodeDictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDictionary")
            .field("id", &self.id)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

thread_local! {
    static DICTIONARY_CONTEXTS: std::cell::RefCell<
        Option<(zstd::zstd_safe::CCtx<'static>, zstd::zstd_safe::DCtx<'static>)>,
    > = const { std::cell::RefCell::new(None) };
}

impl NodeDictionary {
    /// Fewest node records a dictionary is trained from.
    pub const TRAIN_FROM: usize = 1024;

    /// Trains a dictionary on node records as [`encode_node`] makes them
    /// (of one type); none when there are too few or zstd cannot train on
    /// them.
    pub fn train<'m>(records: impl Iterator<Item = &'m [u8]>) -> Option<Self> {
        let messages: Vec<&[u8]> = records
            .filter_map(|r| match r.split_first() {
                Some((&VERSION, message)) => Some(message),
                _ => None,
            })
            .collect();
        if messages.len() < Self::TRAIN_FROM {
            return None;
        }
        let bytes = zstd::dict::from_samples(&messages, DICTIONARY_BYTES).ok()?;
        Self::of(bytes).ok()
    }

    /// A dictionary as stored.
    pub fn of(bytes: Vec<u8>) -> Result<Self, CatalogError> {
        let damaged = || {
            CatalogError::Corrupt(
                "the node records' compression dictionary is damaged; `clew reindex` rebuilds the catalogue from the ledger"
                    .into(),
            )
        };
        let id = zstd::zstd_safe::get_dict_id(&bytes)
            .ok_or_else(damaged)?
            .get();
        let compress =
            zstd::zstd_safe::CDict::try_create(&bytes, ZSTD_LEVEL).ok_or_else(damaged)?;
        let decompress = zstd::zstd_safe::DDict::try_create(&bytes).ok_or_else(damaged)?;
        Ok(Self {
            bytes,
            id,
            compress,
            decompress,
        })
    }

    /// What is stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn with_contexts<T>(
        f: impl FnOnce(&mut zstd::zstd_safe::CCtx<'static>, &mut zstd::zstd_safe::DCtx<'static>) -> T,
    ) -> Option<T> {
        DICTIONARY_CONTEXTS.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some((
                    zstd::zstd_safe::CCtx::try_create()?,
                    zstd::zstd_safe::DCtx::try_create()?,
                ));
            }
            let (c, d) = slot.as_mut()?;
            Some(f(c, d))
        })
    }

    /// `message` as one frame made with this dictionary (content size
    /// and dictionary id in its header, no checksum).
    fn compressed(&self, message: &[u8]) -> Option<Vec<u8>> {
        Self::with_contexts(|c, _| {
            let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(message.len()));
            c.compress_using_cdict(&mut frame, message, &self.compress)
                .ok()
                .map(|_| frame)
        })
        .flatten()
    }

    /// The message a frame made with this dictionary holds.
    fn decompressed(&self, frame: &[u8]) -> Result<Vec<u8>, String> {
        let size = clew_ledger::frames::content_size(frame, MAX_NODE_BYTES as usize)?;
        Self::with_contexts(|_, d| {
            let mut message = Vec::with_capacity(size);
            d.decompress_using_ddict(&mut message, frame, &self.decompress)
                .map_err(|e| {
                    format!(
                        "it does not decompress: {}",
                        zstd::zstd_safe::get_error_name(e)
                    )
                })?;
            if message.len() != size {
                return Err("its zstd frame holds less than it says".to_string());
            }
            Ok(message)
        })
        .ok_or("no zstd context")?
    }
}

/// A catalogue's node dictionaries: by node type to compress, by id to
/// decompress (a frame names the dictionary it was made with).
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeDictionaries {
    by_type: std::collections::HashMap<String, std::sync::Arc<NodeDictionary>>,
    by_id: std::collections::HashMap<u32, std::sync::Arc<NodeDictionary>>,
}

impl NodeDictionaries {
    /// The dictionary of node type `node_type`, if trained.
    pub fn of_type(&self, node_type: &str) -> Option<&NodeDictionary> {
        self.by_type.get(node_type).map(|d| d.as_ref())
    }

    /// These and `dictionary` for `node_type`.
    pub fn with(&self, node_type: &str, dictionary: NodeDictionary) -> Self {
        let mut more = self.clone();
        let d = std::sync::Arc::new(dictionary);
        more.by_id.insert(d.id, d.clone());
        more.by_type.insert(node_type.to_string(), d);
        more
    }

    /// The message of a frame made with one of these.
    fn decompressed(&self, frame: &[u8]) -> Result<Vec<u8>, String> {
        let id = zstd::zstd_safe::get_dict_id_from_frame(frame)
            .ok_or("its zstd frame names no dictionary")?;
        self.by_id
            .get(&id.get())
            .ok_or_else(|| {
                format!("it was compressed with dictionary {id}, which the catalogue does not have")
            })?
            .decompressed(frame)
    }
}

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
/// With `dictionary`, a record is compressed with it.
pub(crate) fn kept_node(value: Vec<u8>, dictionary: Option<&NodeDictionary>) -> Vec<u8> {
    let Some((&VERSION, message)) = value.split_first() else {
        return value;
    };
    let framed = match dictionary {
        Some(d) => d
            .compressed(message)
            .filter(|f| f.len() < message.len())
            .map(|f| (WITH_DICTIONARY, f)),
        None => compressed(message).map(|f| (COMPRESSED, f)),
    };
    match framed {
        Some((first, frame)) => {
            let mut v = Vec::with_capacity(1 + frame.len());
            v.push(first);
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
    dictionaries: &NodeDictionaries,
    binary: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, CatalogError> {
    match bytes.split_first() {
        Some((&VERSION, message)) => binary(message),
        Some((&COMPRESSED, frame)) => decompressed(frame).and_then(|m| binary(&m)),
        Some((&WITH_DICTIONARY, frame)) => {
            dictionaries.decompressed(frame).and_then(|m| binary(&m))
        }
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
/// `dictionaries` are the catalogue's.
pub(crate) fn decode_node(
    subject: &str,
    bytes: &[u8],
    dictionaries: &NodeDictionaries,
) -> Result<NodeRecord, CatalogError> {
    read(&format!("node {subject}"), bytes, dictionaries, |message| {
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
    read(
        "history entry",
        bytes,
        &NodeDictionaries::default(),
        |message| history_of(StoredHistory::decode(message).map_err(|e| e.to_string())?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> NodeDictionaries {
        NodeDictionaries::default()
    }

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
        let bytes = kept_node(encode_node(&n), None);
        assert!([VERSION, COMPRESSED].contains(&bytes[0]), "{}", bytes[0]);
        assert_eq!(decode_node(&n.subject(), &bytes, &none()).unwrap(), n);
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
        assert_eq!(decode_node(&n.subject(), &json, &none()).unwrap(), n);
        let h = n.created_by.clone();
        assert_eq!(decode_history(&serde_json::to_vec(&h).unwrap()).unwrap(), h);
        assert_eq!(decode_history(&encode_history(&h)).unwrap(), h);
    }

    #[test]
    fn an_unknown_kind_name_is_kept_and_damage_is_named() {
        let mut h = node().created_by;
        h.kind = "EVENT_KIND_FROM_A_LATER_BUILD".into();
        assert_eq!(decode_history(&encode_history(&h)).unwrap(), h);
        let err = decode_node("dataset/ds-1", &[VERSION, 0xff, 0xff], &none()).unwrap_err();
        assert!(
            err.to_string()
                .contains("node dataset/ds-1 does not decode"),
            "{err}"
        );
        let err = decode_node("dataset/ds-1", b"\x07", &none()).unwrap_err();
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
        let bytes = kept_node(encode_node(&n), None);
        assert_eq!(bytes[0], COMPRESSED);
        let plain = encode_node(&n);
        assert_eq!(plain[0], VERSION);
        assert_eq!(decode_node(&n.subject(), &plain, &none()).unwrap(), n);
        assert!(
            bytes.len() * 2 < plain.len(),
            "{} bytes kept for a message of {}",
            bytes.len(),
            plain.len()
        );
        assert_eq!(decode_node(&n.subject(), &bytes, &none()).unwrap(), n);
        // Many records through the same thread's contexts.
        for i in 0..100 {
            let n = with_attributes(format!(r#"{{"i":{i},"m":[{}]}}"#, manufacturers.join(",")));
            assert_eq!(
                decode_node(&n.subject(), &kept_node(encode_node(&n), None), &none()).unwrap(),
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
        let bytes = kept_node(encode_node(&n), None);
        assert!(bytes.len() < 1 + COMPRESS_FROM, "{} bytes", bytes.len());
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode_node(&n.subject(), &bytes, &none()).unwrap(), n);
    }

    #[test]
    fn a_damaged_or_overlong_compressed_record_is_named() {
        let n = with_attributes(format!(
            r#"{{"notes":"{}"}}"#,
            "same words again ".repeat(50)
        ));
        let bytes = kept_node(encode_node(&n), None);
        assert_eq!(bytes[0], COMPRESSED);
        let truncated = &bytes[..bytes.len() - 3];
        let err = decode_node("dataset/ds-1", truncated, &none())
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
        let err = decode_node("dataset/ds-1", &overlong, &none())
            .unwrap_err()
            .to_string();
        assert!(err.contains("claims 67108865 bytes"), "{err}");
    }

    /// Node records alike as a catalogue's are: the same fields, differing
    /// in ids, numbers and a few words.
    fn alike(n: usize) -> Vec<NodeRecord> {
        let words = ["chest", "knee", "brain", "liver", "spine", "heart"];
        (0..n)
            .map(|i| {
                let mut r = with_attributes(format!(
                    r#"{{"datasetId":"ds-{i}","version":"1.{}","releaseNotes":"{} {} study {i}","imagingSummary":{{"modalities":["CT","MR"],"numberOfStudies":"{}"}}}}"#,
                    i % 7,
                    words[i % 6],
                    words[(i / 6) % 6],
                    i * 13 % 1000
                ));
                r.id = format!("ds-{i}@1.{}", i % 7);
                r.label = format!("{} imaging v1.{}", words[i % 6], i % 7);
                r
            })
            .collect()
    }

    #[test]
    fn a_trained_dictionary_keeps_alike_records_smaller_and_reads_each_back() {
        let nodes = alike(2 * NodeDictionary::TRAIN_FROM);
        let encoded: Vec<Vec<u8>> = nodes.iter().map(encode_node).collect();
        assert!(
            NodeDictionary::train(
                encoded
                    .iter()
                    .take(NodeDictionary::TRAIN_FROM - 1)
                    .map(Vec::as_slice)
            )
            .is_none(),
            "too few records train none"
        );
        let trained = NodeDictionary::train(encoded.iter().map(Vec::as_slice)).expect("trained");
        // As stored and read back: the dictionary a catalogue opens with.
        let d = NodeDictionary::of(trained.bytes().to_vec()).unwrap();
        let all = none().with(
            "dataset-version",
            NodeDictionary::of(trained.bytes().to_vec()).unwrap(),
        );
        let (mut plain, mut with) = (0, 0);
        for (n, e) in nodes.iter().zip(&encoded) {
            let without = kept_node(e.clone(), None);
            let kept = kept_node(e.clone(), Some(&d));
            assert_eq!(kept[0], WITH_DICTIONARY);
            assert_eq!(decode_node(&n.subject(), &kept, &all).unwrap(), *n);
            // A record written before the dictionary still reads.
            assert_eq!(decode_node(&n.subject(), &without, &all).unwrap(), *n);
            plain += without.len();
            with += kept.len();
        }
        assert!(
            with * 2 < plain,
            "with the dictionary {with} bytes, without {plain}"
        );
    }

    #[test]
    fn a_record_made_with_a_dictionary_is_refused_without_it_and_read_with_another_beside() {
        let nodes = alike(2 * NodeDictionary::TRAIN_FROM);
        let encoded: Vec<Vec<u8>> = nodes.iter().map(encode_node).collect();
        let d = NodeDictionary::train(encoded.iter().map(Vec::as_slice)).unwrap();
        let other =
            NodeDictionary::train(encoded.iter().skip(1).step_by(2).map(Vec::as_slice)).unwrap();
        assert_ne!(other.id, d.id, "trained on other records");
        let n = &nodes[3];
        let kept = kept_node(encode_node(n), Some(&d));
        let only_other = none().with("model-version", other);
        for without in [none(), only_other.clone()] {
            let err = decode_node(&n.subject(), &kept, &without)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("which the catalogue does not have") && err.contains("clew reindex"),
                "{err}"
            );
        }
        let both = only_other.with("dataset-version", d);
        assert_eq!(decode_node(&n.subject(), &kept, &both).unwrap(), *n);
        let err = NodeDictionary::of(b"not a dictionary".to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dictionary is damaged"), "{err}");
        let mut truncated = kept.clone();
        truncated.truncate(kept.len() - 3);
        let err = decode_node(&n.subject(), &truncated, &both)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not decode"), "{err}");
    }
}
