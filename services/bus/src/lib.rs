//! The event bus: how envelopes reach the sequencer and how the sequenced
//! ledger reaches everyone else.
//!
//! This crate owns the four streams of the event spine and nothing about what
//! flows through them. One trait, [`Bus`], has two implementations:
//!
//! - `EmbeddedBus` (feature `embedded`): a durable log of one file per
//!   stream, the contract's reference implementation for the conformance
//!   tests and the bus benchmark's baseline. A single-machine Clew does not
//!   use it: `clew serve` hands envelopes to its sequencer in process.
//! - [`KafkaBus`]: Apache Kafka through librdkafka, for a deployment of
//!   separate processes (sequencer, read replicas, partners).
//!
//! ```text
//!  producers ──submit(key, envelope)──▶ INBOUND   (Envelope bytes; Kafka: keyed by
//!                                        │          signing key id, N partitions)
//!                                        ▼
//!              sequencer: InboundReader::poll ─▶ Ledger ─▶ OutboundWriter::publish
//!                                        │
//!            ┌───────────────────────────┼───────────────────────────┐
//!            ▼                           ▼                           ▼
//!        SEQUENCED                   CHECKPOINTS                 REJECTED
//!   (SequencedEntry, one         (CheckpointRecord, one     (RejectedSubmission, one
//!    partition, leaf order)       partition, size order)      partition, index order)
//!            └──────────── Follower::poll (read replicas, partners) ──────────┘
//! ```
//!
//! Every record on every stream is a message from `proto/clew/v1`, so a
//! partner decodes the streams with the proto files alone.
//!
//! # Positions belong to the reader
//!
//! Neither reader keeps its place on the bus. The sequencer stores the next
//! offset of each inbound source in the same ledger batch as the leaves it
//! appended ([`InboundReader`] starts wherever it is told); a replica stores
//! its stream offsets with the leaves it mirrored ([`Follower`] likewise). A
//! crash between reading and storing therefore re-reads exactly what was not
//! stored, and nothing else: exactly once, with the bus's own offset commits
//! used only for monitoring (consumer lag).
//!
//! # Delivery
//!
//! [`Bus::submit`] and [`OutboundWriter::publish`] return only once the bus
//! has acknowledged every record (Kafka: `acks=all`, idempotent producer, so
//! retries inside the client neither duplicate nor reorder). The outbound
//! streams may still carry a record twice after a sequencer crash (it
//! re-publishes from its last confirmed mark); every record carries its index
//! (leaf index, tree size, rejection index) and readers drop what they hold.

mod codec;
#[cfg(feature = "embedded")]
mod embedded;
mod error;
mod kafka;

use std::time::Duration;

pub use clew_events::proto::{CheckpointRecord, RejectedSubmission, SequencedEntry};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBus;
pub use error::BusError;
pub use kafka::{KafkaBus, KafkaConfig, Topics};

/// One submission read from the inbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// The source it was read from (the embedded log, or one Kafka partition
    /// as `kafka:<topic>:<partition>`); offsets are per source.
    pub source: String,
    /// Its offset in that source.
    pub offset: u64,
    /// The submitted bytes, verbatim.
    pub bytes: Vec<u8>,
}

/// A record the sequencer publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A ledger entry (one leaf).
    Sequenced(SequencedEntry),
    /// A signed checkpoint.
    Checkpoint(CheckpointRecord),
    /// A refused submission.
    Rejected(RejectedSubmission),
}

/// The outbound streams, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Ledger entries in leaf order.
    Sequenced,
    /// Signed checkpoints.
    Checkpoints,
    /// Refused submissions.
    Rejected,
}

impl Stream {
    /// Every outbound stream.
    pub const ALL: [Stream; 3] = [Stream::Sequenced, Stream::Checkpoints, Stream::Rejected];

    /// A stable short name (used for stored positions and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Stream::Sequenced => "sequenced",
            Stream::Checkpoints => "checkpoints",
            Stream::Rejected => "rejected",
        }
    }
}

/// A record read from an outbound stream, with its offset there.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Which stream.
    pub stream: Stream,
    /// Offset in that stream (store `offset + 1` to resume after it).
    pub offset: u64,
    /// The record.
    pub record: Outgoing,
}

/// Where a follower starts: the next offset to read on each outbound stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowFrom {
    /// Next offset on the sequenced stream.
    pub sequenced: u64,
    /// Next offset on the checkpoint stream.
    pub checkpoints: u64,
    /// Next offset on the rejected stream.
    pub rejected: u64,
}

impl FollowFrom {
    /// The offset for one stream.
    pub fn of(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Sequenced => self.sequenced,
            Stream::Checkpoints => self.checkpoints,
            Stream::Rejected => self.rejected,
        }
    }
}

/// The event bus.
pub trait Bus: Send + Sync {
    /// A short description for logs ("embedded log at …", "kafka at …").
    fn describe(&self) -> String;

    /// Appends envelopes to the inbound stream; returns once the bus holds
    /// all of them durably. `key` is the partitioning key (Clew uses the
    /// signing key id, so one producer's events keep their order).
    fn submit(&self, records: &[(&str, &[u8])]) -> Result<(), BusError>;

    /// The sequencer's reader of the inbound stream. Each source starts at
    /// `start(source)` (the ledger's stored cursor for it).
    fn inbound(
        &self,
        start: &(dyn Fn(&str) -> u64 + Sync),
    ) -> Result<Box<dyn InboundReader>, BusError>;

    /// The sequencer's writer of the outbound streams.
    fn outbound(&self) -> Result<Box<dyn OutboundWriter>, BusError>;

    /// The next offset at the end of each outbound stream (where a reader
    /// that wants only what comes next starts).
    fn ends(&self) -> Result<FollowFrom, BusError>;

    /// A reader of the outbound streams starting at `from`. `group` names the
    /// reader on the bus (Kafka consumer group; used for lag monitoring).
    fn follow(&self, group: &str, from: FollowFrom) -> Result<Box<dyn Follower>, BusError>;
}

/// Reads the inbound stream for the sequencer.
pub trait InboundReader: Send {
    /// Up to `max` records, waiting at most `timeout` for the first one.
    /// Records of one source come in offset order.
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<InboundRecord>, BusError>;

    /// Tells the bus how far the sequencer has durably consumed (next
    /// offset per source). Informational only: positions live in the ledger.
    fn consumed(&mut self, positions: &[(String, u64)]);
}

/// Publishes the sequencer's output.
pub trait OutboundWriter: Send {
    /// Publishes `records` in order; returns once all are acknowledged.
    fn publish(&mut self, records: &[Outgoing]) -> Result<(), BusError>;
}

/// Reads the outbound streams.
pub trait Follower: Send {
    /// Up to `max` records, waiting at most `timeout` for the first one.
    /// Records of one stream come in offset order.
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Published>, BusError>;

    /// Tells the bus how far the reader has durably consumed (next offset per
    /// stream). Informational only.
    fn consumed(&mut self, positions: &FollowFrom);
}
