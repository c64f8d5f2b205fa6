//! The in-process spine: one sequencer thread that owns the ledger's write
//! path and keeps the catalogue projection in step.
//!
//! ```text
//!  mutation / partner envelope ──submit()──▶ queue ──▶ sequencer thread
//!                                                    │ drain up to BATCH jobs
//!                                                    ▼
//!                       Ledger::sequence("api", batch)   (ONE durable sled batch)
//!                                                    ▼
//!                       Catalog::catch_up                (projection, search)
//!                                                    ▼
//!                 reply to each job (receipt or refusal), publish the new size
//! ```
//!
//! A caller is answered only after its event is durable in the ledger *and*
//! applied to the catalogue, so a client that got a receipt can read its own
//! write. A crash before the reply loses nothing acknowledged; a retry of the
//! same envelope (or of a mutation with the same `eventId`) is recognised by
//! its event id and answered with the first receipt, never recorded twice.
//! Subscribers watch [`Node::applied`] and read leaves from the ledger, so a
//! slow subscriber never holds the sequencer back and never misses a leaf.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clew_bus::Bus;
use clew_catalog::{Catalog, SearchBacklog};
use clew_events::proto::event::Body;
use clew_events::ProducerKey;
use clew_ledger::{Ledger, Rejection, SignedCheckpoint, Submission};
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::metrics::Metrics;
use crate::replica::Waiters;
use crate::ApiError;

/// Input source name of everything submitted through the API.
pub const API_SOURCE: &str = "api";

/// Most submissions sequenced in one batch (one fsync, one checkpoint).
const BATCH: usize = 1024;

/// Under load, how long batches may share one search commit.
const SEARCH_COMMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

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

struct Job {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

/// How submissions reach the ledger.
enum Spine {
    /// This process sequences: an in-process queue into the sequencer thread.
    Embedded {
        jobs: std::sync::Mutex<Option<std_mpsc::Sender<Job>>>,
    },
    /// A read replica: submissions go onto the bus's inbound stream and the
    /// answer comes back on the outbound streams (see [`crate::replica`]).
    Replica {
        bus: Arc<dyn Bus>,
        waiters: Arc<Waiters>,
        stop: Arc<AtomicBool>,
        stopping: AtomicBool,
    },
}

/// How long a replica waits for a submitted event to come back sequenced.
pub const REPLICA_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The running spine: ledger writer (or mirror), catalogue projection and
/// their readers.
pub struct Node {
    ledger: Arc<Ledger>,
    catalog: Arc<Catalog>,
    service_key: ProducerKey,
    spine: Spine,
    applied: watch::Receiver<u64>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    access: Arc<crate::access::DatasetAccess>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl Node {
    /// Starts the sequencer thread. It first brings the catalogue up to the
    /// ledger (readiness waits for that), then serves submissions.
    pub fn start(
        ledger: Arc<Ledger>,
        catalog: Arc<Catalog>,
        service_key: ProducerKey,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ApiError> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        // u64::MAX until the start-up catch-up is done: "not ready".
        let (applied_tx, applied_rx) = watch::channel(u64::MAX);
        let thread = {
            let ledger = ledger.clone();
            let catalog = catalog.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("sequencer".into())
                .spawn(move || sequencer(ledger, catalog, rx, applied_tx, metrics))
                .map_err(|e| ApiError::Internal(format!("cannot start the sequencer: {e}")))?
        };
        Ok(Arc::new(Self {
            ledger,
            catalog,
            service_key,
            spine: Spine::Embedded {
                jobs: std::sync::Mutex::new(Some(tx)),
            },
            applied: applied_rx,
            thread: std::sync::Mutex::new(Some(thread)),
            metrics,
            access: Arc::default(),
        }))
    }

    /// Starts a read replica: `mirror` (see `Ledger::open_mirror`) and the
    /// catalogue follow the bus's outbound streams as consumer group `group`;
    /// submissions are put on the bus signed by `service_key`.
    pub fn start_replica(
        mirror: Arc<Ledger>,
        catalog: Arc<Catalog>,
        service_key: ProducerKey,
        metrics: Arc<Metrics>,
        bus: Arc<dyn Bus>,
        group: &str,
    ) -> Result<Arc<Self>, ApiError> {
        if !mirror.is_mirror() {
            return Err(ApiError::Internal(
                "a replica needs a mirror ledger, not the primary".into(),
            ));
        }
        let (applied_tx, applied_rx) = watch::channel(u64::MAX);
        let waiters = Arc::new(Waiters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let follow = crate::replica::Follow {
            ledger: mirror.clone(),
            catalog: catalog.clone(),
            bus: bus.clone(),
            group: group.to_string(),
            applied: applied_tx,
            metrics: metrics.clone(),
            waiters: waiters.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("replica".into())
            .spawn(move || follow.run())
            .map_err(|e| ApiError::Internal(format!("cannot start the replica: {e}")))?;
        Ok(Arc::new(Self {
            ledger: mirror,
            catalog,
            service_key,
            spine: Spine::Replica {
                bus,
                waiters,
                stop,
                stopping: AtomicBool::new(false),
            },
            applied: applied_rx,
            thread: std::sync::Mutex::new(Some(thread)),
            metrics,
            access: Arc::default(),
        }))
    }

    /// The ledger (reads only; the sequencer thread is its single writer).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The catalogue.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Access levels of datasets, shared by every request's viewer.
    pub fn dataset_access(&self) -> Arc<crate::access::DatasetAccess> {
        self.access.clone()
    }

    /// Metrics of this node.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The principal id of the service key the API signs with.
    pub fn service_key_id(&self) -> &str {
        self.service_key.key_id()
    }

    /// Leaves applied to the catalogue; `u64::MAX` while starting up.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The checkpoint this node answers as of: the one at the size applied to
    /// the catalogue (a replica's mirror may briefly hold more leaves than its
    /// catalogue has applied; nothing past the catalogue is shown).
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, ApiError> {
        let applied = *self.applied.borrow();
        if applied != u64::MAX {
            if let Some(cp) = self.ledger.checkpoint_at(applied)? {
                return Ok(cp);
            }
        }
        Ok(self.ledger.latest_checkpoint()?)
    }

    /// Whether the start-up catch-up has finished.
    pub fn ready(&self) -> bool {
        *self.applied.borrow() != u64::MAX
    }

    /// Submits envelope bytes exactly as received; answers once they are
    /// sequenced (or refused) and applied.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Outcome, ApiError> {
        let jobs = match &self.spine {
            Spine::Embedded { jobs } => jobs,
            Spine::Replica {
                bus,
                waiters,
                stopping,
                ..
            } => {
                if stopping.load(Ordering::SeqCst) {
                    return Err(ApiError::Unavailable("the server is shutting down".into()));
                }
                return self.submit_to_bus(bus.clone(), waiters, bytes).await;
            }
        };
        let (reply, answer) = oneshot::channel();
        {
            let jobs = jobs
                .lock()
                .map_err(|_| ApiError::Internal("sequencer queue poisoned".into()))?;
            let Some(jobs) = jobs.as_ref() else {
                return Err(ApiError::Unavailable("the server is shutting down".into()));
            };
            jobs.send(Job { bytes, reply })
                .map_err(|_| ApiError::Unavailable("the sequencer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| ApiError::Unavailable("the sequencer stopped before answering".into()))?
            .map_err(ApiError::Internal)
    }

    /// Replica mode: puts the envelope on the inbound stream (keyed by its
    /// signing key id) and waits for it to come back sequenced or refused.
    async fn submit_to_bus(
        &self,
        bus: Arc<dyn Bus>,
        waiters: &Waiters,
        bytes: Vec<u8>,
    ) -> Result<Outcome, ApiError> {
        // Without an event id the answer could not be matched; the sequencer
        // would refuse these bytes for the same reason.
        let opened = clew_events::open(&bytes).map_err(|e| ApiError::BadInput(e.to_string()))?;
        let event_id = opened.event.event_id.clone();
        let key_id = opened.key_id().to_string();
        let answer = waiters.register(&event_id);
        if let Some(leaf) = self.ledger.leaf_index_of(&event_id)? {
            // Already sequenced: this is a retry; the caller gets the first
            // leaf, exactly as the sequencer would say.
            waiters.forget(&event_id);
            return self.sequenced_at(&event_id, leaf);
        }
        let sent = tokio::task::spawn_blocking(move || bus.submit(&[(&key_id, &bytes)]))
            .await
            .map_err(|e| ApiError::Internal(format!("submitting: {e}")))?;
        if let Err(e) = sent {
            waiters.forget(&event_id);
            return Err(ApiError::Unavailable(format!(
                "the bus did not take event {event_id}: {e}; retry with the same eventId"
            )));
        }
        let outcome = match tokio::time::timeout(REPLICA_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                waiters.forget(&event_id);
                return Err(ApiError::Unavailable(format!(
                    "event {event_id} was submitted but not seen sequenced within {}s; \
                     retry with the same eventId",
                    REPLICA_ANSWER_TIMEOUT.as_secs()
                )));
            }
        };
        // A duplicate names a leaf this replica may not hold yet.
        if let Outcome::Rejected(r) = &outcome {
            if let Some(leaf) = r.original_leaf_index {
                let mut applied = self.applied();
                let _ = tokio::time::timeout(
                    REPLICA_ANSWER_TIMEOUT,
                    applied.wait_for(|n| *n != u64::MAX && *n > leaf),
                )
                .await;
            }
        }
        Ok(outcome)
    }

    /// The outcome for an event this replica already holds at `leaf`.
    fn sequenced_at(&self, event_id: &str, leaf: u64) -> Result<Outcome, ApiError> {
        let checkpoint = self.checkpoint()?;
        Ok(Outcome::Accepted(Sequenced {
            event_id: event_id.to_string(),
            leaf_index: leaf,
            checkpoint,
        }))
    }

    /// Builds, signs with the service key and submits an event whose actor is
    /// `actor` (the authenticated principal).
    /// `event_id` (a UUIDv7) makes retries idempotent; one is made when absent.
    pub async fn record(
        &self,
        actor: &str,
        body: Body,
        event_id: Option<String>,
    ) -> Result<Outcome, ApiError> {
        let envelope = clew_events::seal(&self.service_key, actor, body, event_id, None)
            .map_err(|e| ApiError::BadInput(e.to_string()))?;
        let bytes = envelope.encode_to_vec();
        // Every check that needs no ledger state, before anything is queued:
        // the caller hears exactly what is wrong with its input.
        if let Err(e) = clew_events::open(&bytes) {
            tracing::warn!(actor, error = %e, "refused API input");
            self.metrics
                .rejected
                .with_label_values(&["API_INPUT_INVALID"])
                .inc();
            return Err(ApiError::BadInput(e.to_string()));
        }
        self.submit(bytes).await
    }

    /// Stops taking submissions; the sequencer finishes what it holds and
    /// stops, which ends every subscription stream.
    pub fn begin_shutdown(&self) {
        match &self.spine {
            Spine::Embedded { jobs } => {
                if let Ok(mut jobs) = jobs.lock() {
                    jobs.take();
                }
            }
            Spine::Replica { stop, stopping, .. } => {
                stopping.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
            }
        }
    }

    /// [`Node::begin_shutdown`], waits for the sequencer, and flushes the
    /// ledger.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        if let Err(e) = self.ledger.flush() {
            tracing::error!(error = %e, "flushing the ledger at shutdown failed");
        }
    }
}

type Reply = (
    oneshot::Sender<Result<Outcome, String>>,
    Result<Outcome, String>,
);

/// Commits the search documents of everything applied so far, then answers
/// the callers waiting for it.
fn commit_search(
    catalog: &Catalog,
    backlog: &mut SearchBacklog,
    held: &mut Vec<Reply>,
    last_commit: &mut Instant,
) {
    let result = catalog.commit_search(backlog);
    if let Err(e) = &result {
        tracing::error!(error = %e, "committing the search index failed");
    }
    for (reply, answer) in held.drain(..) {
        let answer = match (&result, answer) {
            (Err(e), Ok(_)) => Err(format!("recorded, but the search index failed: {e}")),
            (_, a) => a,
        };
        let _ = reply.send(answer);
    }
    *last_commit = Instant::now();
}

/// Brings the catalogue up to the ledger (or mirror) before a node serves;
/// false (logged) when it cannot, and the node stays not ready.
pub(crate) fn catch_up_at_start(catalog: &Catalog, ledger: &Ledger) -> bool {
    let started = Instant::now();
    match catalog.catch_up(ledger, &|_, _| {}) {
        Ok(n) => {
            tracing::info!(
                leaves = n,
                seconds = started.elapsed().as_secs_f64(),
                mirror = ledger.is_mirror(),
                "catalogue caught up with the ledger"
            );
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "catalogue could not catch up; not ready");
            false
        }
    }
}

fn sequencer(
    ledger: Arc<Ledger>,
    catalog: Arc<Catalog>,
    rx: std_mpsc::Receiver<Job>,
    applied: watch::Sender<u64>,
    metrics: Arc<Metrics>,
) {
    if !catch_up_at_start(&catalog, &ledger) {
        return;
    }
    let mut size = ledger.size();
    metrics.tree_size.set(size as i64);
    metrics.applied.set(size as i64);
    applied.send_replace(size);

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
    let mut backlog = SearchBacklog::default();
    let mut held: Vec<Reply> = Vec::new();
    let mut last_commit = Instant::now();
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None if held.is_empty() && backlog.is_empty() => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            None => {
                let wait = SEARCH_COMMIT_EVERY.saturating_sub(last_commit.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        commit_search(&catalog, &mut backlog, &mut held, &mut last_commit);
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
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
            });
            replies.push((next_offset, job.reply));
            next_offset += 1;
        }
        let result = ledger
            .sequence(API_SOURCE, submissions)
            .and_then(|receipt| {
                catalog
                    .catch_up_state(&ledger, &mut backlog)
                    .map_err(|e| clew_ledger::LedgerError::Setup(format!("catalogue: {e}")))?;
                Ok(receipt)
            });
        let receipt = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "sequencing a batch failed");
                for (_, reply) in replies {
                    let _ = reply.send(Err(format!("sequencing failed: {e}")));
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
        let mut outcomes: std::collections::HashMap<u64, Outcome> =
            std::collections::HashMap::new();
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
        metrics.tree_size.set(size as i64);
        metrics.applied.set(size as i64);
        applied.send_replace(size);
        for (offset, reply) in replies {
            let answer = outcomes
                .remove(&offset)
                .ok_or_else(|| format!("the sequencer gave no outcome for input {offset}"));
            held.push((reply, answer));
        }
        // At most one search commit per SEARCH_COMMIT_EVERY: batches that
        // arrive meanwhile share it.
        match rx.try_recv() {
            Ok(job) => {
                carry = Some(job);
                if last_commit.elapsed() >= SEARCH_COMMIT_EVERY {
                    commit_search(&catalog, &mut backlog, &mut held, &mut last_commit);
                }
            }
            // Idle: commit now, unless search was committed moments ago; then
            // wait (above) for the commit deadline or more work to share it.
            Err(_) => {
                if backlog.is_empty() || last_commit.elapsed() >= SEARCH_COMMIT_EVERY {
                    commit_search(&catalog, &mut backlog, &mut held, &mut last_commit);
                }
            }
        }
    }
    commit_search(&catalog, &mut backlog, &mut held, &mut last_commit);
    tracing::info!(tree_size = size, "sequencer stopped");
}
