//! Clew's spine: the process that owns a ledger (or a verified mirror of
//! one) and keeps the catalogue projection in step with it. The API, the CLI
//! (`clew ingest`, `clew demo`) and the benchmarks record and read through a
//! [`Node`]; none of them needs the HTTP stack to do so.
//!
//! ```text
//!  Node::record(actor, body) ─ sign with the service key ─┐
//!  Node::submit(envelope bytes) ──────────────────────────┤
//!                                                         ▼
//!   local:   queue ─▶ sequencer thread ─▶ Ledger::sequence (one sled batch)
//!   replica: bus inbound ─▶ (remote sequencer) ─▶ bus outbound ─▶ Ledger::append_verified
//!                                                         ▼
//!                  projector: Catalog::catch_up_state, paced search commits
//!                                                         ▼
//!                  Applied::Ready(size) on the watch ─▶ callers answered, subscribers woken
//! ```
//!
//! A caller is answered only once its event is durable *and* applied to the
//! catalogue (search included), so whoever holds a receipt can read its own
//! write. Module by module: [`node`] the handle both kinds share, [`local`]
//! the in-process sequencer, [`replica`] the bus follower, [`projector`] the
//! catch-up and commit pacing they both use, [`metrics`] what they export.
//!
//! The embedded bus (`clew_bus::EmbeddedBus`) is not on this path: a local
//! node hands envelopes to the sequencer thread directly, which writes them
//! once (ledger batch) instead of twice (inbound log, then ledger); a
//! replica follows Kafka. The embedded log stays as the bus contract's
//! reference implementation for tests and the bus benchmark.

mod local;
pub mod metrics;
pub mod node;
mod projector;
pub mod replica;

use std::sync::Arc;

use clew_ledger::{Rejection, SignedCheckpoint};
use thiserror::Error;

pub use metrics::Metrics;
pub use node::{Node, API_SOURCE, REPLICA_ANSWER_TIMEOUT};
pub use projector::{while_catching_up, CatchUpGuard};
pub use replica::CosignatureFilter;

/// How far the catalogue has caught up with the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Still applying the ledger at start-up (or it failed to; see the log):
    /// not ready to answer.
    CatchingUp,
    /// Every leaf below this size is applied to the catalogue.
    Ready(u64),
}

impl Applied {
    /// The applied size, once ready.
    pub fn size(self) -> Option<u64> {
        match self {
            Applied::CatchingUp => None,
            Applied::Ready(n) => Some(n),
        }
    }
}

/// An event the ledger appended, with the checkpoint of its batch.
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Event id.
    pub event_id: String,
    /// Leaf index.
    pub leaf_index: u64,
    /// Checkpoint signed for the batch that appended it.
    pub checkpoint: SignedCheckpoint,
}

/// What became of a submission.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Appended (and applied to the catalogue).
    Accepted(Sequenced),
    /// Refused by the sequencer, with its reason; kept in the rejected log.
    Rejected(Rejection),
}

/// Failures of the spine.
#[derive(Debug, Clone, Error)]
pub enum NodeError {
    /// The input cannot become an event (caught before anything is queued).
    #[error("{0}")]
    BadInput(String),
    /// Starting up, shutting down, or the bus did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The batch holding the submission could not be sequenced or projected;
    /// nothing of it was acknowledged.
    #[error("sequencing failed: {0}")]
    Sequencing(Arc<clew_ledger::LedgerError>),
    /// The event is recorded and applied, but the search commit covering it failed.
    #[error("recorded, but the search index failed: {0}")]
    SearchIndex(Arc<clew_catalog::CatalogError>),
    /// A ledger read failed.
    #[error(transparent)]
    Ledger(Arc<clew_ledger::LedgerError>),
    /// A fault of this process (a thread that could not start, a lost reply).
    #[error("{0}")]
    Internal(String),
}

impl From<clew_ledger::LedgerError> for NodeError {
    fn from(e: clew_ledger::LedgerError) -> Self {
        NodeError::Ledger(Arc::new(e))
    }
}
