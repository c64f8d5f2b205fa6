//! The sequencer and the verifiable provenance ledger.
//!
//! This crate owns the system of record. A [`Ledger`] is an RFC 6962 Merkle
//! log stored in sled, whose leaves are canonical DSSE envelope bytes of Clew
//! events, and whose tree heads are C2SP tlog-checkpoints signed as C2SP
//! signed-notes with the ledger's Ed25519 key.
//!
//! # Data flow
//!
//! ```text
//!  input source (embedded log, Kafka partition, stream file)
//!    │  Submission { offset, bytes, sealed_here }   batch of N
//!    ▼
//!  Ledger::sequence ── parallel: open() + signature check (rayon, on the
//!    │                 `ledger-precheck` threads at a lower priority than
//!    │                 the committer; skipped only where this process
//!    │                 sealed those very bytes)
//!    │               ── in order: key registry, roles, dedupe, references (rules)
//!    │               ── append leaves, stored hashes, entity state, rejections
//!    ▼
//!  ONE sled batch: leaf groups + hash groups (a few leaves to a key, see
//!                  [`store`]) + dedupe run ([`event_index`]) + entity state + rejected
//!                  log + input cursor + signed checkpoint   ── then fsync
//!    ▼
//!  BatchReceipt (accepted leaf indexes, rejections, checkpoint)
//! ```
//!
//! # Crash consistency
//!
//! The order of writes is the whole story: nothing is written until the batch
//! is decided, then a single atomic `apply_batch` writes every effect together
//! with the input cursor, then `flush` makes it durable, and only then is the
//! receipt returned (and the events acknowledged). A crash before the flush
//! loses the batch *and* its cursor, so the source re-delivers exactly those
//! submissions; a crash after it loses nothing, and re-delivered submissions
//! below the cursor are skipped. Neither case can lose an acknowledged event or
//! append one twice; an event id submitted again later is refused as a
//! duplicate naming the original leaf.
//!
//! # Reads
//!
//! Inclusion and consistency proofs ([`Ledger::inclusion_proof`],
//! [`Ledger::consistency_proof`]), every checkpoint ever signed
//! ([`Ledger::checkpoint_at`]), C2SP tlog-tiles hash tiles and entry bundles
//! ([`Ledger::read_tile`]), per-event C2SP tlog-proof receipts
//! ([`Ledger::receipt`]) and the rejected log ([`Ledger::rejected`]).
//! [`verify_ledger`] re-derives all of it offline from the stored bytes.

pub mod answer;
pub mod audit;
pub mod checkpoint;
mod error;
pub mod event_index;
pub mod frames;
mod ledger;
mod mirror;
mod rules;
pub mod store;
pub mod tiles;
mod verify;

pub use answer::{
    verify_answer, ProvenAnswer, ProvenEdge, ProvenEvent, ProvenNode, VerifiedAnswer,
    PROVEN_ANSWER_FORMAT,
};
pub use audit::{access_holders, AccessHolder, ACCESS_AUDIT_KIND};
pub use checkpoint::SignedCheckpoint;
pub use error::LedgerError;
pub use ledger::{
    AcceptedEvent, BatchReceipt, Ledger, LedgerOptions, PrecheckedBatch, Rejection, Submission,
    GENESIS_SOURCE, LEDGER_DB_DIR,
};
pub use mirror::MirroredBatch;
pub use tiles::{format_receipt, verify_receipt, TileRef, VerifiedReceipt};
pub use tlog_tiles::Hash;
pub use verify::{
    verify_content, verify_ledger, ContentProblem, PolicyViolation, VerifyFailure, VerifyReport,
};
