//! The handle every user of the spine holds: submit envelopes, record
//! events signed with the service key, read the ledger and catalogue, watch
//! what is applied, shut down. Behind it runs either the in-process
//! sequencer ([`crate::local`]) or a bus follower ([`crate::replica`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clew_bus::Bus;
use clew_catalog::Catalog;
use clew_events::proto::event::Body;
use clew_events::ProducerKey;
use clew_ledger::{Ledger, SignedCheckpoint};
use tokio::sync::{oneshot, watch};

use crate::local::Job;
use crate::metrics::Metrics;
use crate::replica::Waiters;
use crate::{Applied, NodeError, Outcome, Sequenced};

/// Input source name of everything submitted through the API.
pub const API_SOURCE: &str = "api";

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
    applied: watch::Receiver<Applied>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
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
    ) -> Result<Arc<Self>, NodeError> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let (applied_tx, applied_rx) = watch::channel(Applied::CatchingUp);
        let thread = {
            let ledger = ledger.clone();
            let catalog = catalog.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("sequencer".into())
                .spawn(move || crate::local::run(ledger, catalog, rx, applied_tx, metrics))
                .map_err(|e| NodeError::Internal(format!("cannot start the sequencer: {e}")))?
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
        }))
    }

    /// Starts a read replica: `mirror` (see `Ledger::open_mirror`) and the
    /// catalogue follow the bus's outbound streams as consumer group `group`;
    /// submissions are put on the bus signed by `service_key`;
    /// `cosignatures` picks the witness cosignatures published checkpoints
    /// carry that the replica keeps and serves (None: it keeps none).
    pub fn start_replica(
        mirror: Arc<Ledger>,
        catalog: Arc<Catalog>,
        service_key: ProducerKey,
        metrics: Arc<Metrics>,
        bus: Arc<dyn Bus>,
        group: &str,
        cosignatures: Option<crate::replica::CosignatureFilter>,
    ) -> Result<Arc<Self>, NodeError> {
        if !mirror.is_mirror() {
            return Err(NodeError::Internal(
                "a replica needs a mirror ledger, not the primary".into(),
            ));
        }
        let (applied_tx, applied_rx) = watch::channel(Applied::CatchingUp);
        let waiters = Arc::new(Waiters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let follow = crate::replica::Follow {
            ledger: mirror.clone(),
            cosignatures,
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
            .map_err(|e| NodeError::Internal(format!("cannot start the replica: {e}")))?;
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
        }))
    }

    /// The ledger (reads only; the sequencer thread is its single writer).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The ledger, for a task that outlives a borrow of the node.
    pub fn shared_ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// The catalogue.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Metrics of this node.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text of this node's metrics, with the gauges read off
    /// the stores (the lineage graph's size) and the process (the keys
    /// holding a signature-check table) brought up to date first.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .lineage_graph_bytes
            .set(self.catalog.lineage_graph_bytes() as i64);
        self.metrics
            .signature_table_keys
            .set(clew_events::keys_holding_tables() as i64);
        self.metrics.render()
    }

    /// The principal id of the service key the API signs with.
    pub fn service_key_id(&self) -> &str {
        self.service_key.key_id()
    }

    /// How far the catalogue has applied the ledger.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }

    /// The time access is judged at (unix seconds): the later of this
    /// machine's clock and the time the ledger signed its latest checkpoint.
    /// The ledger's clock never goes back (each checkpoint is stamped no
    /// earlier than the one before), so a clock set back cannot revive an
    /// expired grant; expiry needs no event, since nothing is written to
    /// make a grant lapse.
    pub fn access_time(&self) -> i64 {
        clew_events::now_timestamp()
            .seconds
            .max(self.ledger.checkpoint_time())
    }

    /// The checkpoint this node answers as of: the one at the size applied to
    /// the catalogue (a replica's mirror may briefly hold more leaves than its
    /// catalogue has applied; nothing past the catalogue is shown).
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, NodeError> {
        let applied = match *self.applied.borrow() {
            Applied::Ready(applied) => Some(applied),
            _ => None,
        };
        let mut cp = match applied.map(|a| self.ledger.checkpoint_at(a)).transpose()? {
            Some(Some(cp)) => cp,
            _ => self.ledger.latest_checkpoint()?,
        };
        // The witnesses' cosignatures of it, wherever it is served (C2SP
        // tlog-witness: a client moves the valid signatures to its view).
        for (_, line) in self.ledger.cosignatures(cp.size)? {
            cp.note.extend_from_slice(&line);
        }
        Ok(cp)
    }

    /// Whether the start-up catch-up has finished.
    pub fn ready(&self) -> bool {
        *self.applied.borrow() != Applied::CatchingUp
    }

    /// Submits envelope bytes exactly as received; answers once they are
    /// sequenced (or refused) and applied.
    pub async fn submit(&self, bytes: Vec<u8>) -> Result<Outcome, NodeError> {
        self.enqueue(bytes, None).await
    }

    /// [`Node::submit`], with what this process sealed when it made `bytes`.
    async fn enqueue(
        &self,
        bytes: Vec<u8>,
        sealed_here: Option<clew_events::SealedHere>,
    ) -> Result<Outcome, NodeError> {
        let jobs = match &self.spine {
            Spine::Embedded { jobs } => jobs,
            Spine::Replica {
                bus,
                waiters,
                stopping,
                ..
            } => {
                if stopping.load(Ordering::SeqCst) {
                    return Err(NodeError::Unavailable("the server is shutting down".into()));
                }
                return self.submit_to_bus(bus.clone(), waiters, bytes).await;
            }
        };
        let (reply, answer) = oneshot::channel();
        {
            let jobs = jobs
                .lock()
                .map_err(|_| NodeError::Internal("sequencer queue poisoned".into()))?;
            let Some(jobs) = jobs.as_ref() else {
                return Err(NodeError::Unavailable("the server is shutting down".into()));
            };
            jobs.send(Job {
                bytes,
                sealed_here,
                reply,
            })
            .map_err(|_| NodeError::Unavailable("the sequencer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| NodeError::Unavailable("the sequencer stopped before answering".into()))?
    }

    /// Replica mode: puts the envelope on the inbound stream (keyed by its
    /// signing key id) and waits for it to come back sequenced or refused.
    async fn submit_to_bus(
        &self,
        bus: Arc<dyn Bus>,
        waiters: &Waiters,
        bytes: Vec<u8>,
    ) -> Result<Outcome, NodeError> {
        // Without an event id the answer could not be matched; the sequencer
        // would refuse these bytes for the same reason.
        let opened = clew_events::open(&bytes).map_err(|e| NodeError::BadInput(e.to_string()))?;
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
            .map_err(|e| NodeError::Internal(format!("submitting: {e}")))?;
        if let Err(e) = sent {
            waiters.forget(&event_id);
            return Err(NodeError::Unavailable(format!(
                "the bus did not take event {event_id}: {e}; retry with the same eventId"
            )));
        }
        let outcome = match tokio::time::timeout(REPLICA_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                waiters.forget(&event_id);
                return Err(NodeError::Unavailable(format!(
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
                    applied.wait_for(|a| a.size().is_some_and(|n| n > leaf)),
                )
                .await;
            }
        }
        Ok(outcome)
    }

    /// The outcome for an event this replica already holds at `leaf`.
    fn sequenced_at(&self, event_id: &str, leaf: u64) -> Result<Outcome, NodeError> {
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
    ) -> Result<Outcome, NodeError> {
        Ok(self.record_leaf(actor, body, event_id).await?.0)
    }

    /// [`Node::record`], answering with the leaf too: the canonical envelope
    /// bytes the ledger keeps (and hashes) if the event is accepted —
    /// `seal_opened` makes exactly what `open` makes of its bytes — so a
    /// receipt need not read them back from the ledger.
    pub async fn record_leaf(
        &self,
        actor: &str,
        body: Body,
        event_id: Option<String>,
    ) -> Result<(Outcome, Vec<u8>), NodeError> {
        // Every check that needs no ledger state, made on the event as built
        // (no encode-then-decode): the caller hears exactly what is wrong
        // with its input before anything is queued.
        let (opened, sealed) =
            match clew_events::seal_opened(&self.service_key, actor, body, event_id) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(actor, error = %e, "refused API input");
                    self.metrics
                        .rejected
                        .with_label_values(&["API_INPUT_INVALID"])
                        .inc();
                    return Err(NodeError::BadInput(e.to_string()));
                }
            };
        let leaf = opened.canonical.clone();
        Ok((self.enqueue(opened.canonical, Some(sealed)).await?, leaf))
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
