//! The sequencer service: the one writer of the ledger in a deployment that
//! runs on a bus.
//!
//! ```text
//!   bus INBOUND ──poll──▶ group by source ──▶ Ledger::precheck (all cores)
//!                                                 │ while the poll before it
//!                                                 ▼ is committed
//!                              Ledger::commit_sources (every source of the poll)
//!                                                 │ ONE sled batch: leaves, state,
//!                                                 │ rejected log, checkpoint AND
//!                                                 │ each source's next offset; fsync
//!                                                 ▼
//!                                   wake the outbox publisher
//!                                                 │
//!   outbox publisher: leaves [mark..size), checkpoints, rejections
//!        ──publish (acks=all, idempotent)──▶ SEQUENCED / CHECKPOINTS / REJECTED
//!        ──then──▶ store the new marks (outbox positions) in the ledger
//! ```
//!
//! # Exactly once into the ledger
//!
//! The inbound offsets the sequencer has consumed are not kept by the bus: they
//! are the ledger's per-source cursors, written in the same atomic sled batch
//! as the leaves (and rejections) those submissions became. On start the
//! reader is positioned at those cursors. A crash before the batch is durable
//! loses the leaves *and* the cursor together, so the same submissions are
//! read again; a crash after it loses nothing, and submissions re-delivered
//! below the cursor are skipped by the ledger. A submission is therefore
//! sequenced exactly once however often the process dies. A producer that
//! sends the same event id again (a retry after a lost acknowledgement) gets a
//! `DUPLICATE` rejection naming the original leaf — the original receipt,
//! never a second leaf.
//!
//! # Cited content
//!
//! A dataset version is sequenced only when its series manifest is in the
//! blob store (`LedgerOptions::content`). While the store cannot answer, the
//! batch is neither written nor skipped: it is tried again with back-off,
//! and the cursor stays where it was.
//!
//! # The ledger as an outbox
//!
//! Publishing is a separate loop that reads what the ledger already holds.
//! Marks (next leaf, last checkpoint size, next rejection) advance only after
//! the bus acknowledged a publish, and are stored without a flush. After a
//! crash the publisher resumes from the last stored mark, so the outbound
//! streams may carry a record twice but never miss one; each record carries
//! its index (leaf index, tree size, rejection index) and readers drop what
//! they already hold. A checkpoint is published only after the leaves it
//! covers, so a reader that has a checkpoint can fetch everything under it.
//! The committer hands the publisher what it knows of each leaf it appended
//! (event id, kind, subject), so a leaf is read back but not decoded again;
//! only leaves appended before a restart are.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use clew_bus::{Bus, BusError, CheckpointRecord, Outgoing, SequencedEntry};
use clew_ledger::{AcceptedEvent, Ledger, LedgerError, PrecheckedBatch, Submission};
use thiserror::Error;

/// Ledger cursor under which the next leaf to publish is stored.
pub const OUTBOX_SEQUENCED: &str = "outbox:sequenced";
/// Ledger cursor under which the size of the last published checkpoint is stored.
pub const OUTBOX_CHECKPOINTS: &str = "outbox:checkpoints";
/// Ledger cursor under which the next rejection to publish is stored.
pub const OUTBOX_REJECTED: &str = "outbox:rejected";
/// Ledger cursor under which the sequence number of the next witness
/// cosignature to publish is stored.
pub const OUTBOX_COSIGNED: &str = "outbox:cosigned";

/// Largest raw submission copied into a published rejection; the rest is cut
/// (the full bytes, up to 1 MiB, stay in the ledger's rejected log). Keeps
/// each record under Kafka's default 1 MB message limit.
pub const MAX_RAW_ON_BUS: usize = 256 * 1024;

/// Failures that stop the sequencer.
#[derive(Debug, Error)]
pub enum SequencerError {
    /// The ledger failed (storage); the process should exit and be restarted.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The bus could not be opened.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// A thread of the sequencer (the outbox publisher, the ledger
    /// committer) could not start or panicked.
    #[error("{0}")]
    Thread(String),
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    /// Most inbound records read per batch (one fsync and one checkpoint per
    /// source in the batch).
    pub batch: usize,
    /// Most leaves per publish call.
    pub publish_batch: u64,
}

impl Default for SequencerOptions {
    fn default() -> Self {
        Self {
            batch: 4096,
            publish_batch: 4096,
        }
    }
}

/// Counters a caller can watch (progress bars, benchmarks, metrics).
#[derive(Debug, Default)]
pub struct Progress {
    /// Leaves appended by this process.
    pub sequenced: AtomicU64,
    /// Submissions refused by this process.
    pub rejected: AtomicU64,
    /// Next leaf to publish (everything below is acknowledged by the bus).
    pub published: AtomicU64,
    /// Tree size after the last batch.
    pub tree_size: AtomicU64,
    /// Set once the inbound reader is positioned (readiness).
    pub reading: AtomicBool,
}

/// Wakes the publisher when a batch is durable.
#[derive(Default)]
struct Wake {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Wake {
    fn bump(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.cond.notify_all();
    }

    fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let Ok(g) = self.generation.lock() else {
            return seen;
        };
        match self.cond.wait_timeout_while(g, timeout, |g| *g == seen) {
            Ok((g, _)) => *g,
            Err(_) => seen,
        }
    }

    fn current(&self) -> u64 {
        self.generation.lock().map(|g| *g).unwrap_or(0)
    }
}

/// Most appended events the committer holds for the publisher (16 publish
/// batches, a few MiB); past it, the publisher decodes leaves itself until
/// it catches up (a bus that is down for long).
const MAX_HELD: usize = 1 << 16;

/// What the committer knows of each leaf it appended (event id, kind,
/// subject), held for the publisher so it need not decode the leaf again.
/// A leaf not held (appended before a restart, or while the publisher was
/// far behind) is decoded.
#[derive(Default)]
struct Appended {
    held: Mutex<VecDeque<AcceptedEvent>>,
}

impl Appended {
    fn hold(&self, accepted: Vec<AcceptedEvent>) {
        if let Ok(mut held) = self.held.lock() {
            let room = MAX_HELD.saturating_sub(held.len());
            held.extend(accepted.into_iter().take(room));
        }
    }

    /// The published form of each of `leaves`, the first at `first`.
    fn entries(&self, first: u64, leaves: Vec<Vec<u8>>) -> Vec<SequencedEntry> {
        // A poisoned lock only means every leaf is decoded.
        let mut held = self.held.lock().ok();
        (first..)
            .zip(leaves)
            .map(
                |(index, leaf)| match held.as_mut().and_then(|h| take(h, index)) {
                    Some(a) => SequencedEntry {
                        leaf_index: index,
                        envelope: leaf,
                        event_id: a.event_id,
                        kind: a.kind as i32,
                        subject: a.subject,
                        sequenced_at: None,
                    },
                    None => sequenced_entry(index, leaf),
                },
            )
            .collect()
    }
}

/// What `held` knows of leaf `index`, dropping what it holds of leaves
/// before it (published already).
fn take(held: &mut VecDeque<AcceptedEvent>, index: u64) -> Option<AcceptedEvent> {
    while held.front().is_some_and(|a| a.leaf_index < index) {
        held.pop_front();
    }
    held.front()
        .is_some_and(|a| a.leaf_index == index)
        .then(|| held.pop_front())
        .flatten()
}

/// Runs the sequencer until `stop` is set; then finishes the batch in hand,
/// publishes everything the ledger holds, and returns.
pub fn run(
    ledger: Arc<Ledger>,
    bus: Arc<dyn Bus>,
    options: SequencerOptions,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<(), SequencerError> {
    let wake = Wake::default();
    let appended = Appended::default();
    let reading_done = AtomicBool::new(false);
    progress.tree_size.store(ledger.size(), Ordering::Relaxed);
    std::thread::scope(|scope| {
        let publisher = std::thread::Builder::new()
            .name("sequencer-publish".into())
            .spawn_scoped(scope, || {
                publish_loop(
                    &ledger,
                    bus.as_ref(),
                    &options,
                    &reading_done,
                    &wake,
                    &appended,
                    progress,
                )
            })
            .map_err(|e| SequencerError::Thread(e.to_string()))?;
        let result = read_loop(
            &ledger,
            bus.as_ref(),
            &options,
            stop,
            &wake,
            &appended,
            progress,
        );
        reading_done.store(true, Ordering::SeqCst);
        wake.bump();
        let published = publisher.join().map_err(|_| {
            SequencerError::Thread("the outbox publisher stopped unexpectedly".into())
        })?;
        result.and(published)
    })
}

/// Reads the inbound stream and sequences it in two stages that overlap:
/// this thread polls the bus and pre-checks each poll's records (decoding,
/// signatures and cited content, on rayon's pool) while [`commit_loop`]
/// commits the poll before it. Each poll is ONE ledger batch whatever the
/// sources in it (one fsync, one checkpoint, every source's cursor written
/// with it); the cursors committed are what the bus is then told was
/// consumed.
fn read_loop(
    ledger: &Ledger,
    bus: &dyn Bus,
    options: &SequencerOptions,
    stop: &AtomicBool,
    wake: &Wake,
    appended: &Appended,
    progress: &Progress,
) -> Result<(), SequencerError> {
    let start = |source: &str| ledger.cursor(source).unwrap_or(0);
    let mut reader = bus.inbound(&start)?;
    progress.reading.store(true, Ordering::SeqCst);
    tracing::info!(bus = %bus.describe(), tree_size = ledger.size(), "sequencer reading");
    // One pre-checked poll waits while the one before it is committed.
    let (to_commit, prechecked) = std::sync::mpsc::sync_channel(1);
    let (committed, consumed) = std::sync::mpsc::channel::<Vec<(String, u64)>>();
    std::thread::scope(|scope| {
        let committer = std::thread::Builder::new()
            .name("sequencer-commit".into())
            .spawn_scoped(scope, move || {
                commit_loop(
                    ledger, prechecked, committed, stop, wake, appended, progress,
                )
            })
            .map_err(|e| SequencerError::Thread(e.to_string()))?;
        while !stop.load(Ordering::SeqCst) {
            for positions in consumed.try_iter() {
                reader.consumed(&positions);
            }
            let records = match reader.poll(options.batch, Duration::from_millis(100)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the inbound stream");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            let mut by_source: BTreeMap<String, Vec<Submission>> = BTreeMap::new();
            for r in records {
                by_source
                    .entry(r.source)
                    .or_default()
                    .push(Submission::received(r.offset, r.bytes));
            }
            let batch: Vec<(String, PrecheckedBatch)> = by_source
                .into_iter()
                .map(|(source, submissions)| (source, ledger.precheck(submissions)))
                .collect();
            if to_commit.send(batch).is_err() {
                // The committer stopped; its result says why.
                break;
            }
        }
        drop(to_commit);
        let result = committer
            .join()
            .map_err(|_| SequencerError::Thread("the ledger committer panicked".into()))?;
        for positions in consumed.try_iter() {
            reader.consumed(&positions);
        }
        result
    })
}

/// Commits each pre-checked poll in the order read, wakes the publisher,
/// and hands the committed cursors back to the reader.
fn commit_loop(
    ledger: &Ledger,
    prechecked: std::sync::mpsc::Receiver<Vec<(String, PrecheckedBatch)>>,
    committed: std::sync::mpsc::Sender<Vec<(String, u64)>>,
    stop: &AtomicBool,
    wake: &Wake,
    appended: &Appended,
    progress: &Progress,
) -> Result<(), SequencerError> {
    for batch in prechecked {
        let Some((receipt, positions)) = commit_when_content_answers(ledger, batch, stop)? else {
            // Stopped while the blob store was away: nothing of this batch
            // was written, and the ledger's cursors re-deliver it.
            return Ok(());
        };
        progress
            .sequenced
            .fetch_add(receipt.accepted.len() as u64, Ordering::Relaxed);
        progress
            .rejected
            .fetch_add(receipt.rejected.len() as u64, Ordering::Relaxed);
        progress
            .tree_size
            .store(receipt.tree_size, Ordering::Relaxed);
        appended.hold(receipt.accepted);
        wake.bump();
        // The reader may have stopped already; the cursors are in the ledger.
        let _ = committed.send(positions);
    }
    Ok(())
}

/// A committed poll: its receipt and each source's next offset.
type Committed = (clew_ledger::BatchReceipt, Vec<(String, u64)>);

/// Commits one pre-checked poll; while the blob store cannot say whether a
/// cited manifest is there, nothing is written and the same submissions are
/// pre-checked and tried again with back-off (None: `stop` was set
/// meanwhile).
fn commit_when_content_answers(
    ledger: &Ledger,
    mut batch: Vec<(String, PrecheckedBatch)>,
    stop: &AtomicBool,
) -> Result<Option<Committed>, SequencerError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(why) = batch
            .iter()
            .find_map(|(_, b)| b.content_unanswered().map(str::to_string))
        else {
            return Ok(Some(ledger.commit_sources(batch)?));
        };
        tracing::warn!(
            error = %why,
            retry_in_ms = backoff.as_millis() as u64,
            "the blob store did not answer; the batch waits for it"
        );
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        batch = batch
            .into_iter()
            .map(|(source, b)| (source, ledger.precheck(b.into_submissions())))
            .collect();
    }
}

/// Builds the published form of leaf `index`.
pub fn sequenced_entry(index: u64, leaf: Vec<u8>) -> SequencedEntry {
    let (event_id, kind, subject) = match clew_events::open(&leaf) {
        Ok(opened) => {
            let body = opened.event.body.as_ref();
            (
                opened.event.event_id.clone(),
                body.map(|b| clew_events::kind_of(b) as i32).unwrap_or(0),
                body.and_then(|b| clew_events::subject_of(b).ok())
                    .map(|s| s.subject())
                    .unwrap_or_default(),
            )
        }
        // The ledger only holds envelopes that opened; keep publishing anyway.
        Err(_) => (String::new(), 0, String::new()),
    };
    SequencedEntry {
        leaf_index: index,
        envelope: leaf,
        event_id,
        kind,
        subject,
        sequenced_at: None,
    }
}

/// The checkpoint of `size` as published, with the witness cosignatures
/// held for it appended to its note.
fn cosigned_checkpoint(
    ledger: &Ledger,
    size: u64,
) -> Result<Option<CheckpointRecord>, SequencerError> {
    let Some(cp) = ledger.checkpoint_at(size)? else {
        return Ok(None);
    };
    let mut note = cp.note;
    for (_, line) in ledger.cosignatures(size)? {
        note.extend_from_slice(&line);
    }
    Ok(Some(CheckpointRecord {
        tree_size: size,
        root_hash: cp.root.0.to_vec(),
        origin: ledger.origin().to_string(),
        signed_note: note,
        signed_at: ledger
            .checkpoint_time_at(size)?
            .map(|seconds| pbjson_types::Timestamp { seconds, nanos: 0 }),
    }))
}

fn publish_loop(
    ledger: &Ledger,
    bus: &dyn Bus,
    options: &SequencerOptions,
    reading_done: &AtomicBool,
    wake: &Wake,
    appended: &Appended,
    progress: &Progress,
) -> Result<(), SequencerError> {
    let mut next_leaf = ledger.cursor(OUTBOX_SEQUENCED)?;
    let mut last_cp = ledger.cursor(OUTBOX_CHECKPOINTS)?;
    let mut next_rej = ledger.cursor(OUTBOX_REJECTED)?;
    let mut next_cosigned = ledger.cursor(OUTBOX_COSIGNED)?;
    progress.published.store(next_leaf, Ordering::Relaxed);
    if next_leaf < ledger.size() {
        tracing::info!(
            from_leaf = next_leaf,
            tree_size = ledger.size(),
            "publishing from the last confirmed mark"
        );
    }
    let mut writer: Option<Box<dyn clew_bus::OutboundWriter>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let seen = wake.current();
        let size = ledger.size();
        let rejected = ledger.rejected_count();
        let cosigned = ledger.next_cosigned_seq();
        if next_leaf >= size && next_rej >= rejected && next_cosigned >= cosigned {
            if reading_done.load(Ordering::SeqCst) {
                return Ok(());
            }
            wake.wait(seen, Duration::from_millis(200));
            continue;
        }
        let end = size.min(next_leaf + options.publish_batch);
        let mut out: Vec<Outgoing> = appended
            .entries(next_leaf, ledger.leaves(next_leaf..end)?)
            .into_iter()
            .map(Outgoing::Sequenced)
            .collect();
        let mut cp_mark = last_cp;
        for cp in ledger.checkpoints_after(last_cp, usize::MAX)? {
            if cp.size > end {
                break;
            }
            cp_mark = cp.size;
            let signed_at = ledger
                .checkpoint_time_at(cp.size)?
                .map(|seconds| pbjson_types::Timestamp { seconds, nanos: 0 });
            out.push(Outgoing::Checkpoint(CheckpointRecord {
                tree_size: cp.size,
                root_hash: cp.root.0.to_vec(),
                origin: ledger.origin().to_string(),
                signed_note: cp.note,
                signed_at,
            }));
        }
        // Witness cosignatures, in the order they were stored, each as its
        // checkpoint again with every cosignature held for it appended (C2SP
        // tlog-cosignature lines after the ledger's own); only once the
        // checkpoint itself went out, so a reader always has it first.
        let mut cosigned_mark = next_cosigned;
        let mut cosigned_sizes = Vec::new();
        for (seq, cp_size, _) in ledger.cosigned_from(next_cosigned, 256)? {
            if cp_size > cp_mark {
                break;
            }
            cosigned_mark = seq + 1;
            if !cosigned_sizes.contains(&cp_size) {
                cosigned_sizes.push(cp_size);
            }
        }
        for cp_size in cosigned_sizes {
            if let Some(record) = cosigned_checkpoint(ledger, cp_size)? {
                out.push(Outgoing::Checkpoint(record));
            }
        }
        let rejections = ledger.rejected(next_rej, options.publish_batch as usize)?;
        let rej_mark = next_rej + rejections.len() as u64;
        for mut r in rejections {
            r.raw.truncate(MAX_RAW_ON_BUS);
            out.push(Outgoing::Rejected(r));
        }
        let w = match writer.as_mut() {
            Some(w) => w,
            None => match bus.outbound() {
                Ok(w) => writer.insert(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the outbound streams; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        match w.publish(&out) {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                next_leaf = end;
                last_cp = cp_mark;
                next_rej = rej_mark;
                next_cosigned = cosigned_mark;
                ledger.set_cursor(OUTBOX_SEQUENCED, next_leaf)?;
                ledger.set_cursor(OUTBOX_CHECKPOINTS, last_cp)?;
                ledger.set_cursor(OUTBOX_REJECTED, next_rej)?;
                ledger.set_cursor(OUTBOX_COSIGNED, next_cosigned)?;
                progress.published.store(next_leaf, Ordering::Relaxed);
            }
            Err(e) => {
                // Publish again from the same marks with a new producer; what
                // did land is published twice and dropped by readers.
                tracing::warn!(error = %e, from_leaf = next_leaf, "publishing failed; retrying");
                writer = None;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_events::{sample, seal, ProducerKey};
    use prost::Message;

    #[test]
    fn held_leaves_are_published_as_decoding_them_would_and_the_rest_are_decoded() {
        let key = ProducerKey::from_seed("ingest", [7; 32]).expect("key");
        let leaves: Vec<Vec<u8>> = (0..6)
            .map(|v| {
                seal(
                    &key,
                    "ingest",
                    sample::dataset_version(1, v, vec![]),
                    None,
                    None,
                )
                .expect("seal")
                .encode_to_vec()
            })
            .collect();
        let decoded: Vec<SequencedEntry> = (10..)
            .zip(leaves.clone())
            .map(|(i, l)| sequenced_entry(i, l))
            .collect();
        let summary = |e: &SequencedEntry, tag: &str| AcceptedEvent {
            source_offset: 0,
            event_id: e.event_id.clone(),
            leaf_index: e.leaf_index,
            kind: clew_events::proto::EventKind::try_from(e.kind).expect("kind"),
            subject: format!("{}{tag}", e.subject),
        };
        let appended = Appended::default();
        // Held: leaves 9 (already published), 10 and 12; 11 and 13-15 not.
        let mut held = vec![AcceptedEvent {
            leaf_index: 9,
            ..summary(&decoded[0], "")
        }];
        held.push(summary(&decoded[0], ""));
        held.push(summary(&decoded[2], " (held)"));
        appended.hold(held);
        let got = appended.entries(10, leaves);
        assert_eq!(got[0], decoded[0]);
        // Leaf 12 came from what was held, not from a decode.
        assert_eq!(got[2].subject, format!("{} (held)", decoded[2].subject));
        for i in [1, 3, 4, 5] {
            assert_eq!(got[i], decoded[i], "leaf {}", 10 + i);
        }
        assert!(appended.held.lock().expect("lock").is_empty());
        assert!(!decoded[3].subject.is_empty() && decoded[3].kind != 0);
    }
}
