//! A read replica: a verified mirror of the ledger and its own catalogue,
//! fed from the bus.
//!
//! ```text
//!  SEQUENCED ──┐   pending leaves (contiguous from the mirror's size)
//!  CHECKPOINTS ┼─▶ pending checkpoints (by size)
//!  REJECTED ───┘   stored at once (rejected log), waiters told
//!                   │ when a checkpoint covers the pending leaves:
//!                   ▼
//!     Ledger::append_verified(leaves, checkpoint + its time, positions)   (one sled batch;
//!                   │              refused unless the leaves hash to the signed root)
//!                   ▼
//!     Catalog::catch_up_state + commit_search ─▶ `applied` ─▶ waiters, subscriptions
//! ```
//!
//! The replica serves only leaves under a checkpoint it verified. Its stream
//! positions are stored with the leaves, so after a crash it reads again
//! exactly what it had not stored. Leaves and checkpoints published twice
//! (after a sequencer restart) are recognised by index and dropped; a
//! re-published leaf whose bytes differ from the one held is reported, never
//! stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clew_bus::{Bus, FollowFrom, Outgoing, RejectedSubmission, Stream};
use clew_catalog::Catalog;
use clew_events::proto::RejectionReason;
use clew_ledger::{Ledger, Rejection, SignedCheckpoint};
use tokio::sync::{oneshot, watch};

use crate::metrics::Metrics;
use crate::projector::{catch_up_at_start, publish, SearchPacer, REPLICA_SEARCH_COMMIT_EVERY};
use crate::{Applied, Outcome, Sequenced};

/// Ledger cursor names of the replica's stream positions.
pub fn position_name(stream: Stream) -> String {
    format!("bus:{}", stream.name())
}

/// Callers waiting for the outcome of an event they submitted, by event id.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<Outcome>>>>,
}

impl Waiters {
    pub(crate) fn register(&self, event_id: &str) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.map.lock() {
            m.entry(event_id.to_string()).or_default().push(tx);
        }
        rx
    }

    pub(crate) fn forget(&self, event_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(event_id);
        }
    }

    fn is_empty(&self) -> bool {
        self.map.lock().map(|m| m.is_empty()).unwrap_or(true)
    }

    fn answer(&self, event_id: &str, outcome: impl Fn() -> Outcome) {
        let senders = self.map.lock().ok().and_then(|mut m| m.remove(event_id));
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(outcome());
        }
    }
}

fn rejection_of(r: &RejectedSubmission) -> Rejection {
    Rejection {
        source_offset: r.source_offset,
        rejection_index: r.rejection_index,
        reason: RejectionReason::try_from(r.reason).unwrap_or(RejectionReason::Unspecified),
        detail: r.detail.clone(),
        event_id: r.event_id.clone(),
        original_leaf_index: r.original_leaf_index,
    }
}

/// Picks the witness cosignatures worth keeping out of a published
/// checkpoint note: (witness name, cosignature line) for each line by a
/// witness the replica knows that verifies over the checkpoint.
pub type CosignatureFilter = Arc<dyn Fn(&[u8]) -> Vec<(String, Vec<u8>)> + Send + Sync>;

pub(crate) struct Follow {
    pub ledger: Arc<Ledger>,
    pub cosignatures: Option<CosignatureFilter>,
    pub catalog: Arc<Catalog>,
    pub bus: Arc<dyn Bus>,
    pub group: String,
    pub applied: watch::Sender<Applied>,
    pub metrics: Arc<Metrics>,
    pub waiters: Arc<Waiters>,
    pub stop: Arc<AtomicBool>,
}

struct PendingCheckpoint {
    note: Vec<u8>,
    offset: u64,
    /// When the sequencer signed it (unix seconds), as published.
    signed_at: Option<i64>,
}

impl Follow {
    pub(crate) fn run(self) {
        if !catch_up_at_start(&self.catalog, &self.ledger) {
            return;
        }
        let position = |s: Stream| self.ledger.cursor(&position_name(s)).unwrap_or(0);
        let mut from = FollowFrom {
            sequenced: position(Stream::Sequenced),
            checkpoints: position(Stream::Checkpoints),
            rejected: position(Stream::Rejected),
        };
        let mut follower = loop {
            match self.bus.follow(&self.group, from) {
                Ok(f) => break f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the bus; retrying");
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        self.publish_size();
        tracing::info!(
            bus = %self.bus.describe(),
            group = %self.group,
            tree_size = self.ledger.size(),
            "replica following"
        );
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut checkpoints: BTreeMap<u64, PendingCheckpoint> = BTreeMap::new();
        let mut pacer = SearchPacer::new(REPLICA_SEARCH_COMMIT_EVERY);
        let mut last_consumed = Instant::now();
        // Appended leaves wait for the search commit that covers them; under
        // load one commit (at most every REPLICA_SEARCH_COMMIT_EVERY) serves many.
        let mut unanswered: Vec<(u64, String)> = Vec::new();
        let mut head: Option<SignedCheckpoint> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let wait = if unanswered.is_empty() && pacer.backlog.is_empty() {
                Duration::from_millis(100)
            } else {
                pacer.wait().max(Duration::from_millis(1))
            };
            let records = match follower.poll(4096, wait) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbound streams");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let idle = records.is_empty();
            let mut rejected: Vec<RejectedSubmission> = Vec::new();
            for p in records {
                match p.record {
                    Outgoing::Sequenced(e) => {
                        self.take_leaf(&mut pending, p.offset, e);
                    }
                    Outgoing::Checkpoint(c) => {
                        if c.tree_size <= self.ledger.size() {
                            match self.ledger.accept_past_checkpoint(&c.signed_note) {
                                Ok(cp) => self.keep_cosignatures(cp.size, &c.signed_note),
                                Err(e) => tracing::error!(
                                    error = %e,
                                    tree_size = c.tree_size,
                                    "REFUSED a published checkpoint"
                                ),
                            }
                            from.checkpoints = from.checkpoints.max(p.offset + 1);
                            let _ = self
                                .ledger
                                .set_cursor(&position_name(Stream::Checkpoints), from.checkpoints);
                        } else {
                            checkpoints.insert(
                                c.tree_size,
                                PendingCheckpoint {
                                    signed_at: c.signed_at.as_ref().map(|t| t.seconds),
                                    note: c.signed_note,
                                    offset: p.offset,
                                },
                            );
                        }
                    }
                    Outgoing::Rejected(r) => {
                        from.rejected = from.rejected.max(p.offset + 1);
                        rejected.push(r);
                    }
                }
            }
            if let Some(batch) = self.append_covered(&mut pending, &mut checkpoints, &mut from) {
                unanswered.extend(batch.appended);
                head = Some(batch.checkpoint);
                if let Err(e) = self
                    .catalog
                    .catch_up_state(&self.ledger, &mut pacer.backlog)
                {
                    tracing::error!(error = %e, "applying mirrored leaves to the catalogue");
                }
            }
            if !rejected.is_empty() {
                if let Err(e) = self.ledger.store_rejections(
                    &rejected,
                    &[(&position_name(Stream::Rejected), from.rejected)],
                ) {
                    tracing::error!(error = %e, "storing published rejections");
                }
                self.answer(&[], None, &rejected);
            }
            let due = idle || pacer.due();
            if due && (!unanswered.is_empty() || !pacer.backlog.is_empty()) {
                // A failed commit is logged; the leaves are applied and durable.
                let _ = pacer.commit(&self.catalog);
                self.publish_size();
                self.answer(&unanswered, head.as_ref(), &[]);
                unanswered.clear();
            }
            if last_consumed.elapsed() >= Duration::from_secs(5) {
                follower.consumed(&from);
                last_consumed = Instant::now();
                if !pending.is_empty() || !checkpoints.is_empty() {
                    tracing::info!(
                        held = self.ledger.size(),
                        pending_leaves = pending.len(),
                        pending_checkpoints = ?checkpoints.keys().take(4).collect::<Vec<_>>(),
                        "replica waiting for leaves or a checkpoint covering them"
                    );
                }
            }
        }
        if let Err(e) = self.ledger.flush() {
            tracing::error!(error = %e, "flushing the mirror at shutdown failed");
        }
        tracing::info!(tree_size = self.ledger.size(), "replica stopped");
    }

    /// Appends the pending leaves up to the largest pending checkpoint that
    /// they reach, in one verified batch; smaller checkpoints passed on the
    /// way are then checked against the mirror and stored.
    fn append_covered(
        &self,
        pending: &mut Vec<(u64, Vec<u8>)>,
        checkpoints: &mut BTreeMap<u64, PendingCheckpoint>,
        from: &mut FollowFrom,
    ) -> Option<clew_ledger::MirroredBatch> {
        let held = self.ledger.size();
        let reach = held + pending.len() as u64;
        let size = *checkpoints.range(..=reach).next_back()?.0;
        let covered: Vec<(u64, PendingCheckpoint)> = {
            let later = checkpoints.split_off(&(size + 1));
            std::mem::replace(checkpoints, later).into_iter().collect()
        };
        let (_, cp) = covered.last()?;
        let n = (size - held) as usize;
        let leaves: Vec<(u64, Vec<u8>)> = pending.drain(..n).collect();
        let seq_next = leaves.last().map(|(o, _)| o + 1).unwrap_or(from.sequenced);
        let cp_next = covered
            .iter()
            .map(|(_, c)| c.offset + 1)
            .max()
            .unwrap_or(0)
            .max(from.checkpoints);
        let result = self.ledger.append_verified(
            held,
            leaves.into_iter().map(|(_, b)| b).collect(),
            &cp.note,
            cp.signed_at,
            &[
                (&position_name(Stream::Sequenced), seq_next),
                (&position_name(Stream::Checkpoints), cp_next),
            ],
        );
        match result {
            Ok(batch) => {
                from.sequenced = seq_next;
                from.checkpoints = cp_next;
                for (size, c) in &covered[..covered.len() - 1] {
                    match self.ledger.accept_past_checkpoint(&c.note) {
                        Ok(_) => self.keep_cosignatures(*size, &c.note),
                        Err(e) => {
                            tracing::error!(error = %e, tree_size = size, "REFUSED a published checkpoint")
                        }
                    }
                }
                self.keep_cosignatures(size, &cp.note);
                Some(batch)
            }
            Err(e) => {
                // Nothing was stored; the leaves are dropped from memory and
                // the stream must be repaired upstream.
                tracing::error!(
                    error = %e,
                    from_leaf = held,
                    tree_size = size,
                    "REFUSED leaves that do not match the signed checkpoint"
                );
                pending.clear();
                None
            }
        }
    }

    /// Stores the cosignatures of the witnesses this replica knows that the
    /// published note of a verified checkpoint carries, so the replica serves
    /// the checkpoint witnessed as the sequencer does. Others are dropped.
    fn keep_cosignatures(&self, size: u64, note: &[u8]) {
        let Some(filter) = &self.cosignatures else {
            return;
        };
        for (witness, line) in filter(note) {
            if let Err(e) = self.ledger.store_cosignature(size, &witness, &line) {
                tracing::error!(error = %e, tree_size = size, %witness, "storing a published cosignature");
            }
        }
    }

    /// Adds a published leaf to the pending run, dropping re-published ones.
    fn take_leaf(
        &self,
        pending: &mut Vec<(u64, Vec<u8>)>,
        offset: u64,
        e: clew_bus::SequencedEntry,
    ) {
        let held = self.ledger.size();
        let next = held + pending.len() as u64;
        if e.leaf_index < held {
            return;
        }
        if e.leaf_index < next {
            let i = (e.leaf_index - held) as usize;
            if pending[i].1 != e.envelope {
                tracing::error!(
                    leaf = e.leaf_index,
                    "REFUSED a re-published leaf whose bytes differ from the first"
                );
            }
            return;
        }
        if e.leaf_index > next {
            tracing::error!(
                leaf = e.leaf_index,
                expected = next,
                "a leaf is missing from the sequenced stream; waiting for it"
            );
            return;
        }
        pending.push((offset, e.envelope));
    }

    fn publish_size(&self) {
        publish(&self.applied, &self.metrics, self.ledger.size());
    }

    fn answer(
        &self,
        appended: &[(u64, String)],
        head: Option<&SignedCheckpoint>,
        rejected: &[RejectedSubmission],
    ) {
        if self.waiters.is_empty() {
            return;
        }
        if let Some(cp) = head {
            for (leaf, id) in appended {
                self.waiters.answer(id, || {
                    Outcome::Accepted(Sequenced {
                        event_id: id.clone(),
                        leaf_index: *leaf,
                        checkpoint: cp.clone(),
                    })
                });
            }
        }
        for r in rejected {
            if !r.event_id.is_empty() {
                self.waiters
                    .answer(&r.event_id, || Outcome::Rejected(rejection_of(r)));
            }
        }
    }
}
