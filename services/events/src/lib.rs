//! The signed event contract of Clew.
//!
//! Everything Clew knows arrives as an [`proto::Event`] (a fact such as
//! `DatasetVersionPublished`) serialised with protobuf and wrapped in a DSSE
//! [`proto::Envelope`]: the producer signs `PAE(payload_type, payload)` with its
//! Ed25519 key ([`dsse`]). Keys use the C2SP signed-note text formats
//! (`PRIVATE+KEY+<name>+<id>+<b64>` / `<name>+<id>+<b64>`), see [`keys`].
//!
//! Data flows one way through this crate:
//!
//! ```text
//!  producer: EventBody ──seal()──▶ Envelope bytes ──▶ bus
//!  sequencer: bytes ──open()──▶ OpenedEnvelope (decoded, structurally valid,
//!                               canonical leaf bytes) ──verify_signature()──▶ ok?
//! ```
//!
//! [`open`] checks everything that can be checked from the bytes alone (shape,
//! ids, digests, kind/subject consistency, size); checks that need ledger state
//! (is the key registered, does a cited dataset version exist) belong to the
//! ledger's sequencer. The generated types carry the canonical proto3 JSON
//! mapping (serde, via pbjson), which is what the API speaks. [`sample`]
//! makes realistic events (sites, chest imaging datasets, models) for the
//! benchmarks, tests and demos.

pub mod dsse;
mod error;
pub mod keys;
pub mod policy;
mod prepared;
pub mod sample;
mod validate;

pub use error::EventError;
pub use keys::{KeyId, ProducerKey, VerifierKey};
pub use prepared::{keys_holding_tables, PreparedKey, WIDE_KEYS_AT_MOST};
pub use validate::{subject_of, EntityRef};

use prost::Message;
use proto::event::Body;

/// Generated protobuf types (prost) with their proto3 JSON mapping (pbjson).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/clew.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/clew.v1.serde.rs"));
}

/// DSSE payloadType of every Clew event.
pub const PAYLOAD_TYPE: &str = "application/vnd.clew.event+protobuf";

/// Largest canonical envelope the ledger accepts: a C2SP tlog-tiles entry bundle
/// prefixes each entry with a 16-bit big-endian length (tlog-tiles, "Log entries").
pub const MAX_LEAF_BYTES: usize = 65_535;

/// Largest submission the decoder will even look at; anything bigger is refused
/// before decoding so hostile inputs cannot make the sequencer allocate.
pub const MAX_SUBMISSION_BYTES: usize = 4 * 1024 * 1024;

/// The kind that matches an event body.
pub fn kind_of(body: &Body) -> proto::EventKind {
    use proto::EventKind as K;
    match body {
        Body::PrincipalRegistered(_) => K::PrincipalRegistered,
        Body::KeyRevoked(_) => K::KeyRevoked,
        Body::SiteRegistered(_) => K::SiteRegistered,
        Body::AccessGranted(_) => K::AccessGranted,
        Body::AccessRevoked(_) => K::AccessRevoked,
        Body::DatasetRegistered(_) => K::DatasetRegistered,
        Body::DatasetVersionPublished(_) => K::DatasetVersionPublished,
        Body::DatasetVersionWithdrawn(_) => K::DatasetVersionWithdrawn,
        Body::TransformRecorded(_) => K::TransformRecorded,
        Body::TrainingRunRecorded(_) => K::TrainingRunRecorded,
        Body::ModelVersionRegistered(_) => K::ModelVersionRegistered,
        Body::ValidationRecorded(_) => K::ValidationRecorded,
        Body::DeploymentRecorded(_) => K::DeploymentRecorded,
        Body::ProjectRegistered(_) => K::ProjectRegistered,
        Body::ProjectMemberAdded(_) => K::ProjectMemberAdded,
        Body::ProjectMemberRemoved(_) => K::ProjectMemberRemoved,
        Body::AccessRequestSubmitted(_) => K::AccessRequestSubmitted,
        Body::AccessRequestResubmitted(_) => K::AccessRequestResubmitted,
        Body::AccessRequestWithdrawn(_) => K::AccessRequestWithdrawn,
        Body::AccessRequestReviewed(_) => K::AccessRequestReviewed,
    }
}

/// A new UUIDv7 event id (RFC 9562 section 5.7).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Builds the Event for `body`, signs it with `key` and returns the envelope.
///
/// `event_id` and `time` are filled in when `None`.
pub fn seal(
    key: &ProducerKey,
    actor: &str,
    body: Body,
    event_id: Option<String>,
    time: Option<pbjson_types::Timestamp>,
) -> Result<proto::Envelope, EventError> {
    let event = build_event(key, actor, body, event_id, time)?;
    Ok(sign_event(key, &event))
}

/// The event `key` signs for `actor` about `body`.
fn build_event(
    key: &ProducerKey,
    actor: &str,
    body: Body,
    event_id: Option<String>,
    time: Option<pbjson_types::Timestamp>,
) -> Result<proto::Event, EventError> {
    let subject = subject_of(&body)?.subject();
    Ok(proto::Event {
        event_id: event_id.unwrap_or_else(new_event_id),
        kind: kind_of(&body) as i32,
        subject,
        actor: actor.to_string(),
        time: Some(time.unwrap_or_else(now_timestamp)),
        key_id: key.key_id().to_string(),
        body: Some(body),
    })
}

/// [`seal`], with every check [`open`] makes of the bytes, made on the event
/// as built instead of on a decode of it: the opened form a producer in this
/// process hands the ledger, with its canonical bytes.
pub fn seal_opened(
    key: &ProducerKey,
    actor: &str,
    body: Body,
    event_id: Option<String>,
) -> Result<(OpenedEnvelope, SealedHere), EventError> {
    let event = build_event(key, actor, body, event_id, None)?;
    let envelope = sign_event(key, &event);
    let opened = checked(envelope, event)?;
    let sealed = SealedHere {
        canonical: opened.canonical.clone(),
        signer: key.verifying_key(),
    };
    Ok((opened, sealed))
}

/// Bytes this process sealed with [`seal_opened`], and the public half of
/// the key that signed them: proof, without checking the signature, that it
/// holds under that key — what checking it again (microseconds after
/// signing, in the same process) would find. [`seal_opened`] is its only
/// maker and it is never serialised, so bytes from anywhere else (a bus, a
/// file, a partner) carry none and are verified.
#[derive(Debug, Clone)]
pub struct SealedHere {
    canonical: Vec<u8>,
    signer: ed25519_dalek::VerifyingKey,
}

impl SealedHere {
    /// The canonical envelope bytes sealed.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// Whether `bytes` are exactly the bytes sealed and `key` the key that
    /// signed them: then `open(bytes)?.verify_signature(key)` holds.
    pub fn vouches_for(&self, bytes: &[u8], key: &VerifierKey) -> bool {
        self.signer == *key.verifying_key() && self.canonical == bytes
    }
}

/// Signs an already-built event (no checks; see [`seal`] for the checked path).
pub fn sign_event(key: &ProducerKey, event: &proto::Event) -> proto::Envelope {
    let payload = event.encode_to_vec();
    let sig = key.sign(&dsse::pae(PAYLOAD_TYPE, &payload));
    proto::Envelope {
        payload,
        payload_type: PAYLOAD_TYPE.to_string(),
        signatures: vec![proto::Signature {
            sig: sig.to_vec(),
            keyid: key.key_id().to_string(),
        }],
    }
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> pbjson_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

/// The time `days` from now, as a protobuf timestamp (grant expiries).
pub fn now_timestamp_plus_days(days: i64) -> pbjson_types::Timestamp {
    let mut t = now_timestamp();
    t.seconds += days * 86_400;
    t
}

/// A submission that decoded and passed every check that needs no ledger state.
#[derive(Debug, Clone)]
pub struct OpenedEnvelope {
    /// The decoded envelope.
    pub envelope: proto::Envelope,
    /// The decoded payload.
    pub event: proto::Event,
    /// Canonical envelope bytes: what the ledger stores and hashes as the leaf.
    pub canonical: Vec<u8>,
}

impl OpenedEnvelope {
    /// The body (always present after [`open`]).
    pub fn body(&self) -> &Body {
        // `open` refuses events without a body.
        self.event.body.as_ref().expect("open() guarantees a body")
    }

    /// The key id that signed the envelope.
    pub fn key_id(&self) -> &str {
        &self.event.key_id
    }

    /// The kind of the event.
    pub fn kind(&self) -> proto::EventKind {
        kind_of(self.body())
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> Result<ed25519_dalek::Signature, EventError> {
        let sig = &self.envelope.signatures[0].sig;
        ed25519_dalek::Signature::from_slice(sig)
            .map_err(|_| EventError::Malformed(format!("signature is {} bytes, not 64", sig.len())))
    }

    /// The DSSE pre-authentication encoding the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        dsse::pae(&self.envelope.payload_type, &self.envelope.payload)
    }

    /// Checks the envelope's signature with `key` (cofactorless, RFC 8032 section 5.1.7,
    /// rejecting small-order keys and non-canonical signatures).
    pub fn verify_signature(&self, key: &VerifierKey) -> Result<(), EventError> {
        let sig = self.signature()?;
        key.verifying_key()
            .verify_strict(&self.signed_message(), &sig)
            .map_err(|_| EventError::BadSignature(self.key_id().to_string()))
    }

    /// [`OpenedEnvelope::verify_signature`] with a key prepared for many
    /// checks: the same answer, in about half the time.
    pub fn verify_signature_prepared(&self, key: &PreparedKey) -> Result<(), EventError> {
        let bad = || EventError::BadSignature(self.key_id().to_string());
        let sig: &[u8; 64] = self.envelope.signatures[0]
            .sig
            .as_slice()
            .try_into()
            .map_err(|_| bad())?;
        let header = dsse::pae_header(&self.envelope.payload_type, self.envelope.payload.len());
        if key.verifies(&[&header, &self.envelope.payload], sig) {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// Decodes submitted bytes and applies every check that needs no ledger state.
///
/// Refuses (with a reason naming the problem): oversized input, bytes that are
/// not an Envelope, a payload type other than [`PAYLOAD_TYPE`], anything but
/// exactly one signature, a payload that is not an Event, a missing body, a
/// kind or subject that disagrees with the body, a key id that differs from the
/// signature's, a malformed event id, identifier or digest, and a canonical
/// envelope over [`MAX_LEAF_BYTES`].
pub fn open(bytes: &[u8]) -> Result<OpenedEnvelope, EventError> {
    if bytes.len() > MAX_SUBMISSION_BYTES {
        return Err(EventError::Oversized {
            size: bytes.len(),
            limit: MAX_LEAF_BYTES,
        });
    }
    let envelope = proto::Envelope::decode(bytes)
        .map_err(|e| EventError::Malformed(format!("not a DSSE envelope: {e}")))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(EventError::Malformed(format!(
            "payloadType is {:?}, expected {PAYLOAD_TYPE:?}",
            envelope.payload_type
        )));
    }
    if envelope.signatures.len() != 1 {
        return Err(EventError::Malformed(format!(
            "envelope has {} signatures, expected exactly 1",
            envelope.signatures.len()
        )));
    }
    let event = proto::Event::decode(envelope.payload.as_slice())
        .map_err(|e| EventError::Malformed(format!("payload is not a clew.v1.Event: {e}")))?;
    if envelope.signatures[0].keyid != event.key_id {
        return Err(EventError::Invalid(format!(
            "signature keyid {:?} differs from the event's key_id {:?}",
            envelope.signatures[0].keyid, event.key_id
        )));
    }
    checked(envelope, event)
}

/// The checks every envelope passes whether decoded or built here: the
/// event's own rules, and a canonical encoding that fits in a leaf.
fn checked(envelope: proto::Envelope, event: proto::Event) -> Result<OpenedEnvelope, EventError> {
    validate::check_event(&event)?;
    let canonical = envelope.encode_to_vec();
    if canonical.len() > MAX_LEAF_BYTES {
        return Err(EventError::Oversized {
            size: canonical.len(),
            limit: MAX_LEAF_BYTES,
        });
    }
    Ok(OpenedEnvelope {
        envelope,
        event,
        canonical,
    })
}

#[cfg(test)]
mod seal_opened_tests {
    use super::*;

    #[test]
    fn seal_opened_is_what_open_makes_of_the_sealed_bytes() {
        let k = ProducerKey::generate("ingest").unwrap();
        let (sealed, here) = seal_opened(&k, "ingest", sample::site(1), None).unwrap();
        let reopened = open(&sealed.canonical).unwrap();
        assert_eq!(reopened.canonical, sealed.canonical);
        assert_eq!(reopened.event, sealed.event);
        assert!(reopened.verify_signature(&k.verifier()).is_ok());
        // What it vouches for is what verifying would find: these bytes,
        // this key; not other bytes, not another key.
        assert_eq!(here.canonical(), sealed.canonical.as_slice());
        assert!(here.vouches_for(&sealed.canonical, &k.verifier()));
        let other = ProducerKey::generate("ingest").unwrap();
        assert!(!here.vouches_for(&sealed.canonical, &other.verifier()));
        let mut altered = sealed.canonical.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(!here.vouches_for(&altered, &k.verifier()));
        // And it refuses what open refuses, without a decode.
        let mut bad = sample::site(1);
        if let Body::SiteRegistered(s) = &mut bad {
            s.site_id = "not an id!".into();
        }
        assert!(matches!(
            seal_opened(&k, "ingest", bad, None),
            Err(EventError::Invalid(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ProducerKey {
        ProducerKey::from_seed("ingest", [9; 32]).unwrap()
    }

    /// Dataset version ds-000003@1.0, sealed by [`key`].
    fn sealed_version() -> (ProducerKey, proto::Envelope) {
        let k = key();
        let env = seal(
            &k,
            "ingest",
            sample::dataset_version(3, 1, vec![]),
            None,
            None,
        )
        .unwrap();
        (k, env)
    }

    #[test]
    fn a_sealed_event_opens_and_its_signature_verifies() {
        let (k, env) = sealed_version();
        let opened = open(&env.encode_to_vec()).unwrap();
        assert_eq!(opened.kind(), proto::EventKind::DatasetVersionPublished);
        assert_eq!(opened.event.subject, "dataset-version/ds-000003@1.0");
        assert_eq!(opened.canonical, env.encode_to_vec());
        opened.verify_signature(&k.verifier()).unwrap();
        let other = ProducerKey::from_seed("ingest", [8; 32]).unwrap();
        assert!(opened.verify_signature(&other.verifier()).is_err());
    }

    #[test]
    fn a_kind_or_subject_that_disagrees_with_the_body_is_refused() {
        let k = key();
        let env = seal(&k, "ingest", sample::site(1), None, None).unwrap();
        let mut event = proto::Event::decode(env.payload.as_slice()).unwrap();
        event.kind = proto::EventKind::DatasetRegistered as i32;
        let err = open(&sign_event(&k, &event).encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("does not match the body"), "{err}");
        event.kind = proto::EventKind::SiteRegistered as i32;
        event.subject = "site/other".into();
        let err = open(&sign_event(&k, &event).encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("subject"), "{err}");
        event.subject = "site/site-0001".into();
        event.event_id = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b".into(); // version 4
        let err = open(&sign_event(&k, &event).encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("UUIDv7"), "{err}");
    }

    #[test]
    fn events_map_to_canonical_proto3_json_and_back() {
        let (_, env) = sealed_version();
        let event = proto::Event::decode(env.payload.as_slice()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "EVENT_KIND_DATASET_VERSION_PUBLISHED");
        let summary = &json["datasetVersionPublished"]["imagingSummary"];
        assert_eq!(summary["bodyPartsExamined"][0], "CHEST");
        assert_eq!(summary["deidentificationMethods"][0]["codeValue"], "113100");
        let time = json["time"].as_str().unwrap();
        assert!(
            time.contains('T') && (time.ends_with('Z') || time.ends_with("+00:00")),
            "RFC 3339: {time}"
        );
        let back: proto::Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        // The envelope's JSON is DSSE's: base64 payload, payloadType, signatures.
        let env_json = serde_json::to_value(&env).unwrap();
        assert_eq!(env_json["payloadType"], PAYLOAD_TYPE);
        assert!(env_json["signatures"][0]["keyid"]
            .as_str()
            .unwrap()
            .starts_with("ingest+"));
    }
}
