//! The ledger: opening/creating it, the sequencer's write path, and reads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use clew_events::proto::{self, RejectionReason};
use clew_events::{EventError, OpenedEnvelope, ProducerKey};
use prost::Message;
use rayon::prelude::*;
use signed_note::StandardSigner;
use tlog_tiles::{record_hash, stored_hashes_for_record_hash, tree_hash, Hash};

use crate::checkpoint::{self, SignedCheckpoint};
use crate::event_index::TagIndex;
use crate::rules::{self, KeyRegistry, Refusal, RegisteredKey};
use crate::store::{keys, u64_value, CachedHashes, KeyRecord, Overlay, ProofHashes};
use crate::LedgerError;

/// Name of the sled database directory inside a data directory.
pub const LEDGER_DB_DIR: &str = "ledger.db";

/// Input source name under which the genesis event is sequenced.
pub const GENESIS_SOURCE: &str = "genesis";

/// How the ledger trades durability for speed.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// fsync after every batch before reporting it sequenced (default true).
    /// Only benchmarks that measure the sequencing logic itself turn this off.
    pub flush_every_batch: bool,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
    /// Where the content events cite (dataset versions' series manifests)
    /// must already be: a version whose manifest is not there is refused
    /// with `MISSING_CONTENT`, and a batch is not sequenced while the store
    /// cannot answer ([`LedgerError::ContentUnavailable`]). None: not checked
    /// (benchmarks of the sequencing logic alone; mirrors never sequence).
    pub content: Option<clew_blobs::BlobStore>,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            flush_every_batch: true,
            cache_bytes: 512 * 1024 * 1024,
            content: None,
        }
    }
}

impl LedgerOptions {
    /// The defaults, checking cited content against `store`.
    pub fn citing(store: clew_blobs::BlobStore) -> Self {
        Self {
            content: Some(store),
            ..Self::default()
        }
    }
}

/// One submission read from an input source at `offset` (a Kafka offset, a
/// position in the embedded log or in a stream file).
#[derive(Debug, Clone)]
pub struct Submission {
    /// Position in the input source; offsets in one batch strictly increase.
    pub offset: u64,
    /// The submitted envelope bytes, verbatim.
    pub bytes: Vec<u8>,
    /// Set only where this process sealed `bytes` itself (the API's
    /// mutations, signed with the node's key): their signature is then
    /// known to hold under that key, and is not checked again when that key
    /// is the one registered for the envelope's key id. Everything else —
    /// a bus, a stream file, a partner's envelope, `clew verify` — has
    /// `None`, and its signature is checked.
    pub sealed_here: Option<clew_events::SealedHere>,
}

impl Submission {
    /// An envelope received from outside this process (a bus, a stream
    /// file, a partner, a test): its signature is checked.
    pub fn received(offset: u64, bytes: Vec<u8>) -> Self {
        Self {
            offset,
            bytes,
            sealed_here: None,
        }
    }
}

/// An event the sequencer appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedEvent {
    /// Input offset it came from.
    pub source_offset: u64,
    /// Its event id.
    pub event_id: String,
    /// Its leaf index in the Merkle log.
    pub leaf_index: u64,
    /// Its kind.
    pub kind: clew_events::proto::EventKind,
    /// The entity it creates or changes (`dataset/…`), empty if it names
    /// none.
    pub subject: String,
}

/// A submission the sequencer refused (also kept in the rejected log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Input offset it came from.
    pub source_offset: u64,
    /// Index in the rejected log.
    pub rejection_index: u64,
    /// Machine-readable reason.
    pub reason: RejectionReason,
    /// What exactly was wrong.
    pub detail: String,
    /// Event id, when the envelope decoded far enough to tell.
    pub event_id: String,
    /// For duplicates: where the event already is.
    pub original_leaf_index: Option<u64>,
}

/// The outcome of sequencing one batch; everything in it is durable.
#[derive(Debug, Clone, Default)]
pub struct BatchReceipt {
    /// Appended events, in leaf order.
    pub accepted: Vec<AcceptedEvent>,
    /// Refused submissions, in input order.
    pub rejected: Vec<Rejection>,
    /// The checkpoint signed for this batch (None when nothing was appended).
    pub checkpoint: Option<SignedCheckpoint>,
    /// Tree size after the batch.
    pub tree_size: u64,
    /// Next input offset the source should deliver.
    pub next_offset: u64,
}

pub(crate) struct WriterState {
    pub(crate) size: u64,
    pub(crate) rejected: u64,
}

/// The threads pre-checks run on: one a core, named `ledger-precheck`, each
/// at a lower scheduling priority than the rest of the process (nice +5 on
/// Linux). A batch is committed by one thread while the next is pre-checked
/// on every core; on a busy machine the equal share each runnable thread
/// gets would starve that one committing thread, which every batch waits
/// for, in favour of verification that only needs to keep one batch ahead.
/// None if the pool cannot be built (then rayon's global pool serves).
fn precheck_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ledger-precheck-{i}"))
            .start_handler(|_| lower_this_threads_priority(PRECHECK_NICE))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no pre-check pool; using the global one"))
            .ok()
    })
    .as_ref()
}

/// How much lower the pre-check threads' priority is (nice increment).
const PRECHECK_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: a
/// thread is a task of its own, and `setpriority(PRIO_PROCESS, 0, ..)` sets
/// the calling thread's nice value, setpriority(2) NOTES). Raising it back
/// would need privileges, so this only ever yields. Best effort: a failure
/// leaves the thread at the process's priority.
fn lower_this_threads_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority/setpriority read and write the scheduling
        // attributes of the calling thread only; no memory is passed.
        let ok = unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS, 0);
            libc::setpriority(libc::PRIO_PROCESS, 0, current.saturating_add(nice)) == 0
        };
        if !ok {
            tracing::debug!("could not lower a pre-check thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

pub(crate) fn time_value(v: &[u8]) -> Result<i64, LedgerError> {
    let bytes: [u8; 8] = v
        .try_into()
        .map_err(|_| LedgerError::Corrupt("checkpoint time is not 8 bytes".into()))?;
    Ok(i64::from_be_bytes(bytes))
}

/// Submissions decoded and signature-checked, ready for [`Ledger::commit`].
pub struct PrecheckedBatch {
    items: Vec<(Submission, Precheck)>,
}

impl PrecheckedBatch {
    /// Number of submissions in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Why the blob store could not say whether content a submission cites
    /// is there, if it could not for any: [`Ledger::commit_sources`] would
    /// refuse the batch with [`LedgerError::ContentUnavailable`], and the
    /// caller pre-checks its submissions again later.
    pub fn content_unanswered(&self) -> Option<&str> {
        self.items.iter().find_map(|(_, pre)| match pre {
            Precheck::Opened {
                content: CitedContent::Unanswered(why),
                ..
            } => Some(why.as_str()),
            _ => None,
        })
    }

    /// The submissions, to pre-check again.
    pub fn into_submissions(self) -> Vec<Submission> {
        self.items.into_iter().map(|(s, _)| s).collect()
    }
}

/// The sled tree of witnesses' cosignatures: apart from the log's own tree,
/// since they are evidence about checkpoints, not part of what the
/// checkpoints commit to.
const COSIGNATURES: &str = "cosignatures";

/// The append-only, verifiable provenance ledger.
///
/// One `Ledger` is the single writer of its database: [`Ledger::sequence`] is
/// serialised internally; reads may run concurrently from any thread.
pub struct Ledger {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    origin: String,
    /// None for a mirror: it stores checkpoints it verified, never signs.
    pub(crate) signer: Option<StandardSigner>,
    pub(crate) verifier_key: String,
    pub(crate) options: LedgerOptions,
    pub(crate) writer: Mutex<WriterState>,
    registry: RwLock<Arc<KeyRegistry>>,
    pub(crate) proof_hashes: ProofHashes,
    /// Every leaf's event id tag: the dedupe index as of the last batch
    /// (see [`crate::event_index`]).
    pub(crate) event_index: RwLock<TagIndex>,
    /// Every dataset version's manifest tag: the manifest index as of the
    /// last batch (see [`crate::event_index`]).
    manifest_index: RwLock<TagIndex>,
    /// When the latest checkpoint was signed (unix seconds; 0 before any).
    pub(crate) signed_at: std::sync::atomic::AtomicI64,
    /// The size of the latest checkpoint, for those who wait for the next.
    pub(crate) checkpointed: tokio::sync::watch::Sender<u64>,
    /// The next cosignature sequence number (read from the cosignature tree
    /// at open, moved by each one stored), for those who wait for
    /// witnesses' cosignatures.
    cosigned: tokio::sync::watch::Sender<u64>,
    /// Serialises cosignature writes, so their sequence numbers are stored
    /// in the order they are allocated (the outbox publishes by them).
    cosigning: Mutex<()>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("origin", &self.origin)
            .finish()
    }
}

/// What a parallel pre-check found out about a submission.
enum Precheck {
    /// Decoded; `signature` is the verification result against the key known
    /// when the batch started (None: key unknown then, check in order).
    Opened {
        opened: Box<OpenedEnvelope>,
        signature: Option<bool>,
        content: CitedContent,
    },
    Refused(Refusal),
}

/// Whether the content an event cites is in the blob store, as the
/// pre-check found (asked in parallel, like the signatures).
pub(crate) enum CitedContent {
    /// The event cites no content, or no store is configured.
    NotChecked,
    Present,
    /// Not in the store at `location`.
    Absent {
        digest: String,
        location: String,
    },
    /// The store did not answer: the batch must not be sequenced now.
    Unanswered(String),
}

impl Ledger {
    /// Creates a new ledger in `data_dir`, signing checkpoints with
    /// `ledger_key` (C2SP signer key text; its name is the checkpoint origin),
    /// and appends leaf 0: the self-signed registration of the genesis admin.
    pub fn create(
        data_dir: &Path,
        ledger_key: &str,
        admin_key: &ProducerKey,
        admin_principal_id: &str,
        options: LedgerOptions,
    ) -> Result<Self, LedgerError> {
        let db = open_db(data_dir, &options)?;
        let tree = db.open_tree("ledger")?;
        if tree.get(keys::ORIGIN)?.is_some() {
            return Err(LedgerError::Setup(format!(
                "{} already holds a ledger",
                data_dir.display()
            )));
        }
        let (signer, origin, vkey) = checkpoint::load_signer(ledger_key)?;
        tree.insert(keys::ORIGIN, origin.as_bytes())?;
        tree.insert(keys::LEDGER_VKEY, vkey.as_bytes())?;
        tree.insert(keys::FACTS, b"1")?;
        db.flush()?;
        let ledger = Self::from_parts(db, tree, Some(signer), origin, vkey, options)?;

        let genesis = clew_events::seal(
            admin_key,
            admin_principal_id,
            proto::event::Body::PrincipalRegistered(proto::PrincipalRegistered {
                principal_id: admin_principal_id.to_string(),
                display_name: "Genesis administrator".into(),
                roles: vec![proto::Role::Admin as i32],
                verifier_key: admin_key.verifier().to_text(),
                organisation: String::new(),
            }),
            None,
            None,
        )?;
        let receipt = ledger.sequence(
            GENESIS_SOURCE,
            vec![Submission::received(0, genesis.encode_to_vec())],
        )?;
        if receipt.tree_size != 1 {
            return Err(LedgerError::Setup(format!(
                "genesis event was refused: {:?}",
                receipt.rejected
            )));
        }
        ledger.db.flush()?;
        Ok(ledger)
    }

    /// Opens an existing ledger; `ledger_key` must be the key it was created with.
    pub fn open(
        data_dir: &Path,
        ledger_key: &str,
        options: LedgerOptions,
    ) -> Result<Self, LedgerError> {
        let db = open_db(data_dir, &options)?;
        let tree = db.open_tree("ledger")?;
        let Some(stored_vkey) = tree.get(keys::LEDGER_VKEY)? else {
            return Err(LedgerError::Setup(format!(
                "{} holds no ledger (run `clew init` first)",
                data_dir.display()
            )));
        };
        let (signer, origin, vkey) = checkpoint::load_signer(ledger_key)?;
        if stored_vkey.as_ref() != vkey.as_bytes() {
            return Err(LedgerError::Key(format!(
                "the ledger in {} was created with key {}, not {}",
                data_dir.display(),
                String::from_utf8_lossy(&stored_vkey),
                vkey
            )));
        }
        if tree.get(keys::MIRROR)?.is_some() {
            return Err(LedgerError::Setup(format!(
                "{} holds a mirror of a ledger sequenced elsewhere; it cannot sequence",
                data_dir.display()
            )));
        }
        if tree.get(keys::FACTS)?.is_none() {
            let size = tree
                .get(keys::SIZE)?
                .map(|v| u64_value(&v))
                .transpose()?
                .unwrap_or(0);
            let read = crate::rules::backfill_facts(&tree, size)?;
            db.flush()?;
            tracing::info!(
                leaves = read,
                "the authorisation policy's facts were built from the log"
            );
        }
        Self::from_parts(db, tree, Some(signer), origin, vkey, options)
    }

    pub(crate) fn from_parts(
        db: sled::Db,
        tree: sled::Tree,
        signer: Option<StandardSigner>,
        origin: String,
        verifier_key: String,
        options: LedgerOptions,
    ) -> Result<Self, LedgerError> {
        let size = tree
            .get(keys::SIZE)?
            .map(|v| u64_value(&v))
            .transpose()?
            .unwrap_or(0);
        let rejected = tree
            .get(keys::REJECTED_COUNT)?
            .map(|v| u64_value(&v))
            .transpose()?
            .unwrap_or(0);
        let mut registry = KeyRegistry::default();
        for item in tree.scan_prefix(b"k") {
            let (k, v) = item?;
            let record: KeyRecord = serde_json::from_slice(&v)
                .map_err(|e| LedgerError::Corrupt(format!("key record: {e}")))?;
            // A ledger from before principal records kept roles has only its
            // keys' roles; the principal records below take precedence.
            registry
                .principals
                .entry(record.principal_id.clone())
                .or_insert_with(|| record.roles.clone());
            registry.keys.insert(
                String::from_utf8_lossy(&k[1..]).into_owned(),
                RegisteredKey::new(record)?,
            );
        }
        // Roles at each principal's latest registration (keyless ones too).
        for item in tree.scan_prefix(keys::entity("principal/")) {
            let (k, v) = item?;
            let record: crate::store::EntityRecord = serde_json::from_slice(&v)
                .map_err(|e| LedgerError::Corrupt(format!("principal record: {e}")))?;
            let id = String::from_utf8_lossy(&k[1 + "principal/".len()..]).into_owned();
            if !record.roles.is_empty() || !registry.principals.contains_key(&id) {
                registry.principals.insert(id, record.roles);
            }
        }
        for (upgraded, what) in [
            (
                crate::event_index::upgrade_keys_to_runs(&tree)?,
                "the dedupe index was kept one key an event; it is now kept in runs",
            ),
            (
                crate::event_index::upgrade_manifest_keys_to_runs(&tree)?,
                "the manifest index was kept one key a version; it is now kept in runs",
            ),
        ] {
            if upgraded > 0 {
                db.flush()?;
                tracing::info!(entries = upgraded, "{what}");
            }
        }
        let event_index = TagIndex::load(&tree)?;
        let manifest_index = TagIndex::load_manifests(&tree)?;
        let next_cosigned = match db.open_tree(COSIGNATURES)?.scan_prefix(b"s").next_back() {
            Some(item) => u64_value(&item?.0[1..])? + 1,
            None => 0,
        };
        let signed_at = match tree.scan_prefix(keys::CHECKPOINT_TIMES).next_back() {
            Some(item) => time_value(&item?.1)?,
            None => 0,
        };
        Ok(Self {
            db,
            tree,
            origin,
            signer,
            verifier_key,
            options,
            writer: Mutex::new(WriterState { size, rejected }),
            registry: RwLock::new(Arc::new(registry)),
            proof_hashes: ProofHashes::default(),
            event_index: RwLock::new(event_index),
            manifest_index: RwLock::new(manifest_index),
            signed_at: std::sync::atomic::AtomicI64::new(signed_at),
            checkpointed: tokio::sync::watch::Sender::new(size),
            cosigned: tokio::sync::watch::Sender::new(next_cosigned),
            cosigning: Mutex::new(()),
        })
    }

    /// A receiver that changes whenever a witness cosignature is stored.
    pub fn watch_cosignatures(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cosigned.subscribe()
    }

    /// A receiver that changes whenever a new checkpoint is stored (signed by
    /// this ledger, or verified by a mirror); its value is the tree size.
    pub fn watch_checkpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.checkpointed.subscribe()
    }

    /// Sequences one batch read from `source`: [`Ledger::precheck`] then
    /// [`Ledger::commit`].
    pub fn sequence(
        &self,
        source: &str,
        submissions: Vec<Submission>,
    ) -> Result<BatchReceipt, LedgerError> {
        self.commit(source, self.precheck(submissions))
    }

    /// Sequences a stream of batches, pre-checking batch k+1 (decode and
    /// signatures, on the pre-check pool) while batch k is committed, and hands
    /// each durable receipt to `on_receipt` in order.
    pub fn sequence_pipelined<I, F, E>(
        &self,
        source: &str,
        batches: I,
        mut on_receipt: F,
    ) -> Result<(), E>
    where
        I: Iterator<Item = Vec<Submission>> + Send,
        F: FnMut(&BatchReceipt) -> Result<(), E>,
        E: From<LedgerError>,
    {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<PrecheckedBatch>(1);
            let checker = scope.spawn(move || {
                for batch in batches {
                    if tx.send(self.precheck(batch)).is_err() {
                        break;
                    }
                }
            });
            for prechecked in rx {
                let receipt = self.commit(source, prechecked)?;
                on_receipt(&receipt)?;
            }
            checker
                .join()
                .map_err(|_| E::from(LedgerError::Corrupt("the pre-check thread panicked".into())))
        })
    }

    /// Decodes each submission and checks its signature against the keys
    /// registered as of the last commit, in parallel. Needs no lock: it may
    /// run while another batch is being committed.
    pub fn precheck(&self, submissions: Vec<Submission>) -> PrecheckedBatch {
        let registry = self.registry_snapshot();
        let content = self.options.content.as_ref();
        let check = || -> Vec<Precheck> {
            submissions
                .par_iter()
                .map(|s| precheck(s, &registry.keys, content))
                .collect()
        };
        let checks = match precheck_pool() {
            Some(pool) => pool.install(check),
            None => check(),
        };
        PrecheckedBatch {
            items: submissions.into_iter().zip(checks).collect(),
        }
    }

    fn registry_snapshot(&self) -> Arc<KeyRegistry> {
        self.registry
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Commits a pre-checked batch read from `source`.
    ///
    /// Submissions below the source's stored cursor were already consumed
    /// (before a crash) and are skipped, so re-delivering a batch is harmless.
    /// In input order: key registry check (signatures not settled by the
    /// pre-check are verified here), role check, duplicate check, reference
    /// checks, append. The appended leaves, their hashes, dedupe entries,
    /// entity state, rejections, the new cursor and the new signed checkpoint
    /// are written in ONE atomic sled batch and flushed before this returns: a
    /// crash before the flush loses the whole batch and its cursor (the source
    /// re-delivers it), a crash after loses nothing.
    pub fn commit(
        &self,
        source: &str,
        batch: PrecheckedBatch,
    ) -> Result<BatchReceipt, LedgerError> {
        let (mut receipt, positions) = self.commit_sources(vec![(source.to_string(), batch)])?;
        receipt.next_offset = positions.first().map(|(_, n)| *n).unwrap_or(0);
        Ok(receipt)
    }

    /// Sequences batches read from several sources (e.g. the partitions of
    /// a Kafka topic) as ONE ledger batch: one fsync and one checkpoint for
    /// all of them, each source's new cursor written with it. Returns the
    /// receipt (its `next_offset` unused) and each source's next offset.
    pub fn sequence_sources(
        &self,
        inputs: Vec<(String, Vec<Submission>)>,
    ) -> Result<(BatchReceipt, Vec<(String, u64)>), LedgerError> {
        let prechecked = inputs
            .into_iter()
            .map(|(source, subs)| (source, self.precheck(subs)))
            .collect();
        self.commit_sources(prechecked)
    }

    /// [`Ledger::commit`] for several sources at once (see
    /// [`Ledger::sequence_sources`]).
    pub fn commit_sources(
        &self,
        inputs: Vec<(String, PrecheckedBatch)>,
    ) -> Result<(BatchReceipt, Vec<(String, u64)>), LedgerError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| LedgerError::Corrupt("a previous writer panicked".into()))?;
        let Some(signer) = self.signer.as_ref() else {
            return Err(LedgerError::Setup(
                "this is a mirror of a ledger sequenced elsewhere; it cannot sequence".into(),
            ));
        };
        // A store that cannot say whether cited content is there stops the
        // whole batch before anything is written: the caller retries it.
        if let Some(why) = inputs.iter().find_map(|(_, b)| b.content_unanswered()) {
            return Err(LedgerError::ContentUnavailable(why.to_string()));
        }
        let mut positions: Vec<(String, u64)> = Vec::with_capacity(inputs.len());
        let mut fresh: Vec<(usize, Submission, Precheck)> = Vec::new();
        for (source, batch) in inputs {
            let cursor = self.cursor(&source)?;
            let items: Vec<(Submission, Precheck)> = batch
                .items
                .into_iter()
                .filter(|(s, _)| s.offset >= cursor)
                .collect();
            if items.windows(2).any(|p| p[1].0.offset <= p[0].0.offset) {
                return Err(LedgerError::Setup(
                    "submission offsets must strictly increase".into(),
                ));
            }
            let next = items.last().map(|(s, _)| s.offset + 1).unwrap_or(cursor);
            let idx = positions.len();
            positions.push((source, next));
            fresh.extend(items.into_iter().map(|(s, p)| (idx, s, p)));
        }
        if fresh.is_empty() {
            return Ok((
                BatchReceipt {
                    tree_size: w.size,
                    ..Default::default()
                },
                positions,
            ));
        }
        let registry = self.registry_snapshot();

        let start = w.size;
        let mut size = start;
        let mut rejections = w.rejected;
        let event_index = read_index(&self.event_index)?;
        let manifest_index = read_index(&self.manifest_index)?;
        let mut ov = Overlay::for_events(&self.tree, fresh.len())
            .with_event_index(&event_index)
            .with_manifest_index(&manifest_index);
        let mut receipt = BatchReceipt::default();
        let mut new_keys: Vec<rules::RegistryChange> = Vec::new();

        for (idx, sub, pre) in fresh {
            let source = positions[idx].0.as_str();
            let outcome = match pre {
                Precheck::Refused(r) => Err(r),
                Precheck::Opened {
                    opened,
                    signature,
                    content,
                } => rules::admit(
                    &mut ov, &registry, &new_keys, size, &opened, signature, &content,
                )?
                .map(|keys| (opened, keys)),
            };
            match outcome {
                Ok((opened, changed_keys)) => {
                    new_keys.extend(changed_keys);
                    let leaf_hash = record_hash(&opened.canonical);
                    let hashes = stored_hashes_for_record_hash(size, leaf_hash, &ov)?;
                    ov.put_leaf_hashes(size, hashes);
                    ov.put_leaf(size, opened.canonical);
                    ov.index_event(&opened.event.event_id, size);
                    receipt.accepted.push(AcceptedEvent {
                        source_offset: sub.offset,
                        event_id: opened.event.event_id,
                        leaf_index: size,
                        // `open` refused any event whose kind or subject
                        // disagree with its body.
                        kind: clew_events::proto::EventKind::try_from(opened.event.kind)
                            .unwrap_or_default(),
                        subject: opened.event.subject,
                    });
                    size += 1;
                }
                Err(refusal) => {
                    let record = proto::RejectedSubmission {
                        rejection_index: rejections,
                        reason: refusal.reason as i32,
                        detail: refusal.detail.clone(),
                        raw: sub.bytes[..sub.bytes.len().min(1 << 20)].to_vec(),
                        event_id: refusal.event_id.clone(),
                        source: source.to_string(),
                        source_offset: sub.offset,
                        rejected_at: Some(clew_events::now_timestamp()),
                        original_leaf_index: refusal.original_leaf,
                    };
                    ov.put(keys::rejected(rejections).to_vec(), record.encode_to_vec());
                    tracing::warn!(
                        source,
                        offset = sub.offset,
                        reason = refusal.reason.as_str_name(),
                        detail = %refusal.detail,
                        "submission refused"
                    );
                    receipt.rejected.push(Rejection {
                        source_offset: sub.offset,
                        rejection_index: rejections,
                        reason: refusal.reason,
                        detail: refusal.detail,
                        event_id: refusal.event_id,
                        original_leaf_index: refusal.original_leaf,
                    });
                    rejections += 1;
                }
            }
        }

        for (source, next) in &positions {
            ov.put(keys::cursor(source), next.to_be_bytes().to_vec());
        }
        if rejections != w.rejected {
            ov.put(
                keys::REJECTED_COUNT.to_vec(),
                rejections.to_be_bytes().to_vec(),
            );
        }
        let mut signed_at = None;
        if size > start {
            let root = tree_hash(size, &ov)?;
            let signed = checkpoint::sign(signer, &self.origin, size, root)?;
            ov.put(keys::checkpoint(size).to_vec(), signed.note.clone());
            // The ledger's clock only moves forward, whatever this machine's does.
            let t = clew_events::now_timestamp()
                .seconds
                .max(self.checkpoint_time());
            ov.put(
                keys::checkpoint_time(size).to_vec(),
                t.to_be_bytes().to_vec(),
            );
            signed_at = Some(t);
            ov.put(keys::SIZE.to_vec(), size.to_be_bytes().to_vec());
            receipt.checkpoint = Some(signed);
        }

        let appended: Vec<(u64, Hash)> = ov.hashes.iter().map(|(i, h)| (*i, *h)).collect();
        let indexed = ov.indexed_events();
        let manifests = ov.indexed_manifests();
        // The one write of the batch (see the doc comment for the crash order).
        self.tree.apply_batch(ov.into_batch())?;
        if self.options.flush_every_batch {
            self.db.flush()?;
        }
        drop((event_index, manifest_index));
        self.index_events(&indexed);
        if !manifests.is_empty() {
            write_index(&self.manifest_index).add(&manifests);
        }

        self.proof_hashes.appended(appended.into_iter());
        if let Some(t) = signed_at {
            self.signed_at
                .store(t, std::sync::atomic::Ordering::Release);
            self.checkpointed.send_replace(size);
        }
        w.size = size;
        w.rejected = rejections;
        if !new_keys.is_empty() {
            let mut next = (*registry).clone();
            for change in new_keys {
                match change {
                    rules::RegistryChange::Key(id, key) => {
                        next.keys.insert(id, *key);
                    }
                    rules::RegistryChange::Principal(id, roles) => {
                        next.principals.insert(id, roles);
                    }
                }
            }
            if let Ok(mut r) = self.registry.write() {
                *r = Arc::new(next);
            }
        }
        receipt.tree_size = size;
        Ok((receipt, positions))
    }

    /// Adds a written batch's leaves to the in-memory dedupe index.
    pub(crate) fn index_events(&self, indexed: &[(u64, u64)]) {
        write_index(&self.event_index).add(indexed);
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush()?;
        Ok(())
    }

    /// The checkpoint origin (the ledger key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ledger's C2SP verifier key text (what partners verify checkpoints with).
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.writer.lock().map(|w| w.size).unwrap_or(0)
    }

    /// Number of refused submissions recorded.
    pub fn rejected_count(&self) -> u64 {
        self.writer.lock().map(|w| w.rejected).unwrap_or(0)
    }

    /// Next offset to consume from `source` (0 if never read).
    pub fn cursor(&self, source: &str) -> Result<u64, LedgerError> {
        Ok(self
            .tree
            .get(keys::cursor(source))?
            .map(|v| u64_value(&v))
            .transpose()?
            .unwrap_or(0))
    }

    /// Canonical envelope bytes of leaf `index`.
    pub fn leaf(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        crate::store::read_leaf(&self.tree, index)?
            .ok_or_else(|| LedgerError::NotFound(format!("leaf {index}")))
    }

    /// Canonical envelope bytes of leaves `range`, in order (one range scan
    /// over their groups: what a reader of many leaves should use).
    pub fn leaves(&self, range: std::ops::Range<u64>) -> Result<Vec<Vec<u8>>, LedgerError> {
        crate::store::read_leaves(&self.tree, range.start, range.end).map_err(|(at, e)| {
            // The writer's lock is taken only to tell "not yet" from "lost".
            let size = self.size();
            if at >= size {
                LedgerError::NotFound(format!(
                    "leaves {}..{} (the tree holds {size})",
                    range.start, range.end
                ))
            } else {
                e
            }
        })
    }

    /// Leaf index holding `event_id`, if sequenced.
    pub fn leaf_index_of(&self, event_id: &str) -> Result<Option<u64>, LedgerError> {
        let index = read_index(&self.event_index)?;
        Overlay::new(&self.tree)
            .with_event_index(&index)
            .event_leaf(event_id)
    }

    /// A registered key.
    pub fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, LedgerError> {
        Ok(self
            .registry_snapshot()
            .keys
            .get(key_id)
            .map(|k| k.record.clone()))
    }

    /// A registered principal's roles at its latest registration (what the
    /// authorisation policy reads), or None when it is not registered.
    pub fn principal_roles(&self, principal_id: &str) -> Option<Vec<i32>> {
        self.registry_snapshot()
            .principals
            .get(principal_id)
            .cloned()
    }

    /// When the latest checkpoint was signed, in unix seconds (0 before any):
    /// the ledger's clock, which never goes back (each checkpoint is stamped
    /// no earlier than the one before, whatever the machine's clock says).
    /// Access expiry is read against the later of it and the machine's clock.
    pub fn checkpoint_time(&self) -> i64 {
        self.signed_at.load(std::sync::atomic::Ordering::Acquire)
    }

    /// When the checkpoint for tree size `size` was signed (unix seconds), if
    /// the ledger recorded it (checkpoints from before times were kept: None).
    pub fn checkpoint_time_at(&self, size: u64) -> Result<Option<i64>, LedgerError> {
        self.tree
            .get(keys::checkpoint_time(size))?
            .map(|v| time_value(&v))
            .transpose()
    }

    /// The tree size of the last checkpoint signed at or before `time`
    /// (unix seconds), by the ledger's clock; None when none was (or the
    /// checkpoints of that time were kept before times were).
    pub fn checkpoint_size_at_time(&self, time: i64) -> Result<Option<u64>, LedgerError> {
        // Checkpoint times never go back as the tree grows: the newest first.
        for item in self.tree.scan_prefix(keys::CHECKPOINT_TIMES).rev() {
            let (k, v) = item?;
            if time_value(&v)? <= time {
                return Ok(Some(u64_value(&k[1..])?));
            }
        }
        Ok(None)
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let (_, note) = self
            .tree
            .scan_prefix(keys::CHECKPOINTS)
            .next_back()
            .ok_or_else(|| LedgerError::Corrupt("ledger has no checkpoint".into()))??;
        checkpoint::parse(&note, &self.verifier_key)
    }

    /// The checkpoint signed when the tree had exactly `size` leaves, if any.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, LedgerError> {
        match self.tree.get(keys::checkpoint(size))? {
            Some(note) => Ok(Some(checkpoint::parse(&note, &self.verifier_key)?)),
            None => Ok(None),
        }
    }

    /// Tree sizes of every checkpoint ever signed, ascending.
    pub fn checkpoint_sizes(&self) -> Result<Vec<u64>, LedgerError> {
        self.tree
            .scan_prefix(keys::CHECKPOINTS)
            .map(|item| {
                let (k, _) = item?;
                u64_value(&k[1..])
            })
            .collect()
    }

    fn cosignature_tree(&self) -> Result<sled::Tree, LedgerError> {
        Ok(self.db.open_tree(COSIGNATURES)?)
    }

    /// Stores a witness's cosignature line (C2SP tlog-cosignature, already
    /// verified by the caller) over the checkpoint of `size`. Each new line
    /// also gets the next cosignature sequence number, the order in which a
    /// publisher passes them on ([`Ledger::cosigned_from`]); a line already
    /// stored is not stored again.
    pub fn store_cosignature(
        &self,
        size: u64,
        witness: &str,
        line: &[u8],
    ) -> Result<(), LedgerError> {
        let t = self.cosignature_tree()?;
        let mut key = b"c".to_vec();
        key.extend_from_slice(&size.to_be_bytes());
        key.extend_from_slice(witness.as_bytes());
        let _serial = self
            .cosigning
            .lock()
            .map_err(|_| LedgerError::Corrupt("cosignature lock poisoned".into()))?;
        if t.get(&key)?.is_some_and(|held| held.as_ref() == line) {
            return Ok(());
        }
        let seq = *self.cosigned.borrow();
        let mut last = b"l".to_vec();
        last.extend_from_slice(witness.as_bytes());
        let mut order = b"s".to_vec();
        order.extend_from_slice(&seq.to_be_bytes());
        let mut entry = size.to_be_bytes().to_vec();
        entry.extend_from_slice(witness.as_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(key, line);
        let newer = t
            .get(&last)?
            .map(|v| u64_value(&v))
            .transpose()?
            .is_none_or(|held| held < size);
        if newer {
            batch.insert(last, &size.to_be_bytes());
        }
        batch.insert(order, entry);
        t.apply_batch(batch)?;
        self.cosigned.send_replace(seq + 1);
        Ok(())
    }

    /// The sequence number the next stored cosignature will get.
    pub fn next_cosigned_seq(&self) -> u64 {
        *self.cosigned.borrow()
    }

    /// Stored cosignatures from sequence number `from`, in order, at most
    /// `limit`: (sequence number, checkpoint size, witness name).
    pub fn cosigned_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, String)>, LedgerError> {
        let t = self.cosignature_tree()?;
        let mut start = b"s".to_vec();
        start.extend_from_slice(&from.to_be_bytes());
        t.range(start..)
            .take_while(|item| matches!(item, Ok((k, _)) if k.starts_with(b"s")))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                if v.len() < 8 {
                    return Err(LedgerError::Corrupt("cosignature order entry".into()));
                }
                Ok((
                    u64_value(&k[1..])?,
                    u64_value(&v[..8])?,
                    String::from_utf8_lossy(&v[8..]).into_owned(),
                ))
            })
            .collect()
    }

    /// The cosignature lines stored for the checkpoint of `size`, by witness name.
    pub fn cosignatures(&self, size: u64) -> Result<Vec<(String, Vec<u8>)>, LedgerError> {
        let t = self.cosignature_tree()?;
        let mut prefix = b"c".to_vec();
        prefix.extend_from_slice(&size.to_be_bytes());
        t.scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((name, v.to_vec()))
            })
            .collect()
    }

    /// The largest checkpoint size `witness` has a stored cosignature for.
    pub fn last_cosigned_by(&self, witness: &str) -> Result<Option<u64>, LedgerError> {
        let mut last = b"l".to_vec();
        last.extend_from_slice(witness.as_bytes());
        self.cosignature_tree()?
            .get(last)?
            .map(|v| u64_value(&v))
            .transpose()
    }

    /// Checkpoints signed for tree sizes above `after`, ascending, at most `limit`.
    pub fn checkpoints_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, LedgerError> {
        self.tree
            .range(keys::checkpoint(after.saturating_add(1))..)
            .take_while(|item| matches!(item, Ok((k, _)) if k.starts_with(keys::CHECKPOINTS)))
            .take(limit)
            .map(|item| {
                let (_, note) = item?;
                checkpoint::parse(&note, &self.verifier_key)
            })
            .collect()
    }

    /// Root hash of the tree of `size` leaves (any size up to the current one).
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        self.check_size(size)?;
        Ok(tree_hash(size, &self.hashes())?)
    }

    /// RFC 6962 inclusion proof (audit path, leaf sibling first) of leaf
    /// `index` in the tree of `tree_size` leaves.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(tree_size)?;
        if index >= tree_size {
            return Err(LedgerError::NotFound(format!(
                "leaf {index} is not in a tree of size {tree_size}"
            )));
        }
        Ok(tlog_tiles::prove_record(tree_size, index, &self.hashes())?)
    }

    /// RFC 6962 consistency proof from the tree of `old_size` to `new_size` leaves.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, LedgerError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(LedgerError::NotFound(format!(
                "no consistency proof from {old_size} down to {new_size}"
            )));
        }
        Ok(tlog_tiles::prove_tree(new_size, old_size, &self.hashes())?)
    }

    /// Refused submissions from rejection index `from`, at most `limit`.
    pub fn rejected(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<proto::RejectedSubmission>, LedgerError> {
        self.tree
            .range(keys::rejected(from)..)
            .take_while(|item| matches!(item, Ok((k, _)) if k.starts_with(keys::REJECTIONS)))
            .take(limit)
            .map(|item| {
                let (_, v) = item?;
                proto::RejectedSubmission::decode(v.as_ref())
                    .map_err(|e| LedgerError::Corrupt(format!("rejected record: {e}")))
            })
            .collect()
    }

    /// Stored hashes, upper levels from memory.
    pub(crate) fn hashes(&self) -> CachedHashes<'_> {
        CachedHashes {
            tree: &self.tree,
            cache: &self.proof_hashes,
        }
    }

    fn check_size(&self, size: u64) -> Result<(), LedgerError> {
        let current = self.size();
        if size > current {
            return Err(LedgerError::NotFound(format!(
                "tree size {size} is beyond the current size {current}"
            )));
        }
        Ok(())
    }
}

pub(crate) fn open_db(data_dir: &Path, options: &LedgerOptions) -> Result<sled::Db, LedgerError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| LedgerError::Setup(format!("cannot create {}: {e}", data_dir.display())))?;
    let config = sled::Config::new()
        .path(data_dir.join(LEDGER_DB_DIR))
        .cache_capacity(options.cache_bytes)
        // Batches are flushed explicitly; no background flush timer needed.
        .flush_every_ms(None);
    Ok(crate::store::open_sled(&config)?)
}

fn precheck(
    submission: &Submission,
    keys: &HashMap<String, RegisteredKey>,
    store: Option<&clew_blobs::BlobStore>,
) -> Precheck {
    let bytes = &submission.bytes;
    let opened = match clew_events::open(bytes) {
        Ok(o) => o,
        Err(e) => return Precheck::Refused(Refusal::from_event_error(e, String::new())),
    };
    // A signature this process made over these very bytes with the key
    // registered for their key id holds (RFC 8032 §5.1.6 signing, §5.1.7
    // verifying); every other is verified.
    let signature = keys.get(opened.key_id()).map(|k| {
        let vouched = submission
            .sealed_here
            .as_ref()
            .is_some_and(|sealed| sealed.vouches_for(bytes, k.prepared.verifier()));
        vouched || opened.verify_signature_prepared(&k.prepared).is_ok()
    });
    let content = match (store, opened.body()) {
        (Some(store), proto::event::Body::DatasetVersionPublished(v)) => {
            cited_content(store, &v.manifest_digest)
        }
        _ => CitedContent::NotChecked,
    };
    Precheck::Opened {
        opened: Box::new(opened),
        signature,
        content,
    }
}

/// Asks `store` whether it holds `digest` (whether the object is there, not
/// a read: whether the bytes still hash to it is `clew verify --content`'s
/// question).
fn cited_content(store: &clew_blobs::BlobStore, digest: &str) -> CitedContent {
    use clew_blobs::BlobError;
    match store.contains_blocking(digest) {
        Ok(true) => CitedContent::Present,
        Ok(false) => CitedContent::Absent {
            digest: digest.to_string(),
            location: store.location().to_string(),
        },
        // A malformed digest is the validator's refusal (INVALID_PAYLOAD),
        // given in order by the rules; nothing to look up here.
        Err(BlobError::BadDigest(_)) => CitedContent::NotChecked,
        Err(e) => CitedContent::Unanswered(e.to_string()),
    }
}

impl Refusal {
    pub(crate) fn from_event_error(e: EventError, event_id: String) -> Self {
        let reason = match &e {
            EventError::Malformed(_) => RejectionReason::Malformed,
            EventError::Oversized { .. } => RejectionReason::Oversized,
            EventError::BadSignature(_) => RejectionReason::BadSignature,
            EventError::Invalid(_) | EventError::BadKey(_) => RejectionReason::InvalidPayload,
        };
        Refusal {
            reason,
            detail: e.to_string(),
            event_id,
            original_leaf: None,
        }
    }
}

/// An in-memory index as of the last batch, for reading.
fn read_index(index: &RwLock<TagIndex>) -> Result<RwLockReadGuard<'_, TagIndex>, LedgerError> {
    index
        .read()
        .map_err(|_| LedgerError::Corrupt("a previous writer panicked".into()))
}

/// An in-memory index, for adding a written batch.
fn write_index(index: &RwLock<TagIndex>) -> RwLockWriteGuard<'_, TagIndex> {
    index.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads that pre-check run at a lower priority than the thread
    /// that commits (the caller), so they cannot starve it.
    #[cfg(target_os = "linux")]
    #[test]
    fn prechecks_run_below_the_committing_threads_priority() {
        // SAFETY: getpriority reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let committer = nice();
        let pool = precheck_pool().expect("the pre-check pool is built");
        let checkers: Vec<i32> = pool.broadcast(|_| nice());
        assert_eq!(checkers.len(), pool.current_num_threads());
        for checker in checkers {
            assert_eq!(
                checker,
                (committer + PRECHECK_NICE).min(19),
                "a pre-check thread's nice value"
            );
        }
        assert_eq!(nice(), committer, "the caller's own priority is untouched");
    }
}
