//! The in-process sequencer: one thread owns the ledger's write path and
//! keeps the catalogue projection in step.
//!
//! ```text
//!  Node::submit ──▶ queue ──▶ sequencer thread
//!                            │ gather jobs until search is due
//!                            │ (or GATHER wait; at most BATCH)
//!                            ▼
//!       Ledger::sequence("api", batch)   (ONE durable sled batch)
//!                            ▼
//!       Catalog::catch_up_state          (projection; search paced)
//!                            ▼
//!   reply to each job (receipt or refusal) once search covers it
//! ```
//!
//! A crash before the reply loses nothing acknowledged; a retry of the same
//! envelope (or of a mutation with the same `eventId`) is recognised by its
//! event id and answered with the first receipt, never recorded twice.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use clew_catalog::Catalog;
use clew_ledger::{Ledger, Submission};
use tokio::sync::{oneshot, watch};

use crate::projector::{catch_up_at_start, publish, SearchPacer, SEARCH_COMMIT_EVERY};
use crate::{Applied, Metrics, NodeError, Outcome, Sequenced, API_SOURCE};

/// Most submissions sequenced in one batch (one fsync, one checkpoint).
const BATCH: usize = 1024;

/// Submissions gathered while a search commit is not yet due before they
/// are sequenced anyway (see [`run`]).
const GATHER: usize = 128;

/// One submission waiting for the sequencer.
pub(crate) struct Job {
    pub bytes: Vec<u8>,
    /// Present when this process sealed `bytes` (the API's mutations).
    pub sealed_here: Option<clew_events::SealedHere>,
    pub reply: oneshot::Sender<Result<Outcome, NodeError>>,
}

type Reply = (
    oneshot::Sender<Result<Outcome, NodeError>>,
    Result<Outcome, NodeError>,
);

/// Commits the search documents of everything applied so far, then answers
/// the callers waiting for it.
fn commit_search(catalog: &Catalog, pacer: &mut SearchPacer, held: &mut Vec<Reply>) {
    let result = pacer.commit(catalog).map_err(Arc::new);
    for (reply, answer) in held.drain(..) {
        let answer = match (&result, answer) {
            (Err(e), Ok(_)) => Err(NodeError::SearchIndex(e.clone())),
            (_, a) => a,
        };
        let _ = reply.send(answer);
    }
}

/// The sequencer thread's loop; ends when every sender is gone.
pub(crate) fn run(
    ledger: Arc<Ledger>,
    catalog: Arc<Catalog>,
    rx: std_mpsc::Receiver<Job>,
    applied: watch::Sender<Applied>,
    metrics: Arc<Metrics>,
) {
    if !catch_up_at_start(&catalog, &ledger) {
        return;
    }
    let mut size = ledger.size();
    publish(&applied, &metrics, size);

    let mut next_offset = match ledger.cursor(API_SOURCE) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the API input cursor");
            return;
        }
    };
    // Replies wait for the search commit that covers them (read-your-writes
    // for search too); under load that commit is shared by batches arriving
    // within SEARCH_COMMIT_EVERY, since each tantivy commit writes a segment.
    let mut pacer = SearchPacer::new(SEARCH_COMMIT_EVERY);
    let mut held: Vec<Reply> = Vec::new();
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None if held.is_empty() && pacer.backlog.is_empty() => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            None => match rx.recv_timeout(pacer.wait()) {
                Ok(job) => job,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    commit_search(&catalog, &mut pacer, &mut held);
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut jobs = vec![first];
        // Until the next search commit is due no reply can be sent (each
        // waits for the commit that covers it), so jobs arriving meanwhile
        // join one ledger batch — one fsync, one signed checkpoint — rather
        // than each taking a batch of its own; a batch goes early once
        // GATHER jobs wait, so that little is left to do when the commit
        // is due.
        loop {
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if jobs.len() >= GATHER || pacer.due() {
                break;
            }
            match rx.recv_timeout(pacer.wait()) {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let t = Instant::now();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut submissions = Vec::with_capacity(jobs.len());
        for job in jobs {
            submissions.push(Submission {
                offset: next_offset,
                bytes: job.bytes,
                sealed_here: job.sealed_here,
            });
            replies.push((next_offset, job.reply));
            next_offset += 1;
        }
        let result = ledger
            .sequence(API_SOURCE, submissions)
            .and_then(|receipt| {
                catalog
                    .catch_up_state(&ledger, &mut pacer.backlog)
                    .map_err(|e| clew_ledger::LedgerError::Setup(format!("catalogue: {e}")))?;
                Ok(receipt)
            });
        let receipt = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "sequencing a batch failed");
                let e = Arc::new(e);
                for (_, reply) in replies {
                    let _ = reply.send(Err(NodeError::Sequencing(e.clone())));
                }
                // The cursor is what the ledger says it is; resume from there.
                next_offset = ledger.cursor(API_SOURCE).unwrap_or(next_offset);
                continue;
            }
        };
        next_offset = receipt.next_offset;
        metrics.batch_seconds.observe(t.elapsed().as_secs_f64());
        metrics.sequenced.inc_by(receipt.accepted.len() as u64);
        for r in &receipt.rejected {
            metrics
                .rejected
                .with_label_values(&[r.reason.as_str_name()])
                .inc();
        }
        let mut outcomes: HashMap<u64, Outcome> = HashMap::new();
        if let Some(cp) = &receipt.checkpoint {
            for a in &receipt.accepted {
                outcomes.insert(
                    a.source_offset,
                    Outcome::Accepted(Sequenced {
                        event_id: a.event_id.clone(),
                        leaf_index: a.leaf_index,
                        checkpoint: cp.clone(),
                    }),
                );
            }
        }
        for r in receipt.rejected {
            outcomes.insert(r.source_offset, Outcome::Rejected(r));
        }
        size = receipt.tree_size;
        publish(&applied, &metrics, size);
        for (offset, reply) in replies {
            let answer = outcomes.remove(&offset).ok_or_else(|| {
                NodeError::Internal(format!("the sequencer gave no outcome for input {offset}"))
            });
            held.push((reply, answer));
        }
        // At most one search commit per SEARCH_COMMIT_EVERY: batches that
        // arrive meanwhile share it.
        match rx.try_recv() {
            Ok(job) => {
                carry = Some(job);
                if pacer.due() {
                    commit_search(&catalog, &mut pacer, &mut held);
                }
            }
            // Idle: commit now, unless search was committed moments ago; then
            // wait (above) for the commit deadline or more work to share it.
            Err(_) => {
                if pacer.backlog.is_empty() || pacer.due() {
                    commit_search(&catalog, &mut pacer, &mut held);
                }
            }
        }
    }
    commit_search(&catalog, &mut pacer, &mut held);
    tracing::info!(tree_size = size, "sequencer stopped");
}
