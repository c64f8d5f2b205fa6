//! Mirrors: a read replica's verified copy of a ledger sequenced elsewhere.
//!
//! A mirror never sequences and holds no signing key. It receives leaves and
//! signed checkpoints from the sequenced and checkpoint streams and appends
//! leaves only together with a checkpoint that covers them: the leaves are
//! hashed into the mirror's own tree and the batch is written only when the
//! root equals the one the ledger signed (RFC 6962 §2.1 tree hash). A stream
//! that was rewritten, reordered or had a leaf dropped therefore cannot enter
//! a mirror; it is refused with [`LedgerError::Inconsistent`]. Everything the
//! mirror stores (leaves, hashes, event index, checkpoints, rejected log,
//! stream positions) uses the primary's key layout, so every read — proofs,
//! tiles, receipts, history — works on a mirror exactly as on the primary.

use std::path::Path;

use clew_events::proto;
use prost::Message;
use tlog_tiles::{record_hash, stored_hashes_for_record_hash, tree_hash};

use crate::checkpoint::{self, SignedCheckpoint};
use crate::ledger::{open_db, WriterState};
use crate::store::{keys, Overlay};
use crate::{Ledger, LedgerError, LedgerOptions};

/// What [`Ledger::append_verified`] stored.
#[derive(Debug, Clone)]
pub struct MirroredBatch {
    /// The verified checkpoint that now heads the mirror.
    pub checkpoint: SignedCheckpoint,
    /// (leaf index, event id) of each appended leaf.
    pub appended: Vec<(u64, String)>,
}

impl Ledger {
    /// Opens the mirror in `data_dir`, creating it on first use, of the ledger
    /// whose checkpoints verify with `ledger_vkey` (C2SP verifier key text).
    pub fn open_mirror(
        data_dir: &Path,
        ledger_vkey: &str,
        options: LedgerOptions,
    ) -> Result<Self, LedgerError> {
        // Fails early on a malformed key, before anything is created.
        let verifier = signed_note::StandardVerifier::new(ledger_vkey.trim())
            .map_err(|e| LedgerError::Key(format!("ledger verifier key: {e}")))?;
        let origin = signed_note::Verifier::name(&verifier).to_string();
        let db = open_db(data_dir, &options)?;
        let tree = db.open_tree("ledger")?;
        match tree.get(keys::LEDGER_VKEY)? {
            None => {
                tree.insert(keys::ORIGIN, origin.as_bytes())?;
                tree.insert(keys::LEDGER_VKEY, ledger_vkey.trim().as_bytes())?;
                tree.insert(keys::MIRROR, &b"1"[..])?;
                db.flush()?;
            }
            Some(stored) if stored.as_ref() != ledger_vkey.trim().as_bytes() => {
                return Err(LedgerError::Key(format!(
                    "{} mirrors the ledger with key {}, not {}",
                    data_dir.display(),
                    String::from_utf8_lossy(&stored),
                    ledger_vkey.trim()
                )));
            }
            Some(_) => {
                if tree.get(keys::MIRROR)?.is_none() {
                    return Err(LedgerError::Setup(format!(
                        "{} holds the primary ledger, not a mirror",
                        data_dir.display()
                    )));
                }
            }
        }
        Self::from_parts(
            db,
            tree,
            None,
            origin,
            ledger_vkey.trim().to_string(),
            options,
        )
    }

    /// Whether this is a mirror (it never sequences).
    pub fn is_mirror(&self) -> bool {
        self.signer.is_none()
    }

    /// Appends `leaves` (canonical envelope bytes, the first at leaf index
    /// `first`, which must be the current size) together with the signed
    /// checkpoint `note` that covers exactly them, and records the stream
    /// `positions` (source name, next offset) in the same atomic batch;
    /// `signed_at` is when the sequencer says it signed the checkpoint.
    ///
    /// The checkpoint's signature is verified with the ledger's key and its
    /// root compared with the root of the mirror's tree after the append; on
    /// any mismatch nothing is written.
    pub fn append_verified(
        &self,
        first: u64,
        leaves: Vec<Vec<u8>>,
        note: &[u8],
        signed_at: Option<i64>,
        positions: &[(&str, u64)],
    ) -> Result<MirroredBatch, LedgerError> {
        let mut w = self.lock_writer()?;
        if first != w.size {
            return Err(LedgerError::Inconsistent(format!(
                "leaves start at {first} but the mirror holds {} leaves",
                w.size
            )));
        }
        let signed = checkpoint::parse_own(note, &self.verifier_key)?;
        let size = first + leaves.len() as u64;
        if signed.size != size {
            return Err(LedgerError::Inconsistent(format!(
                "checkpoint for size {} does not cover leaves {first}..{size}",
                signed.size
            )));
        }
        let mut ov = Overlay::new(&self.tree);
        let mut appended = Vec::with_capacity(leaves.len());
        for (i, leaf) in leaves.into_iter().enumerate() {
            let index = first + i as u64;
            let opened = clew_events::open(&leaf).map_err(|e| {
                LedgerError::Inconsistent(format!("leaf {index} is not a Clew envelope: {e}"))
            })?;
            if opened.canonical != leaf {
                return Err(LedgerError::Inconsistent(format!(
                    "leaf {index} is not in canonical form"
                )));
            }
            let hashes = stored_hashes_for_record_hash(index, record_hash(&leaf), &ov)?;
            ov.put_leaf_hashes(index, hashes);
            ov.put_leaf(index, leaf);
            ov.index_event(&opened.event.event_id, index);
            appended.push((index, opened.event.event_id));
        }
        // RFC 6962 §2.1: the Merkle tree hash of the first `size` leaves must be
        // the root the ledger signed for `size`.
        let root = tree_hash(size, &ov)?;
        if root != signed.root {
            return Err(LedgerError::Inconsistent(format!(
                "the ledger signed root {} for size {size}, but the leaves received hash to {}",
                hex::encode(signed.root.0),
                hex::encode(root.0)
            )));
        }
        ov.put(keys::checkpoint(size).to_vec(), signed.note.clone());
        // The sequencer's clock as it published it, kept monotone here too.
        let time = signed_at.map(|t| t.max(self.checkpoint_time()));
        if let Some(t) = time {
            ov.put(
                keys::checkpoint_time(size).to_vec(),
                t.to_be_bytes().to_vec(),
            );
        }
        ov.put(keys::SIZE.to_vec(), size.to_be_bytes().to_vec());
        for (source, next) in positions {
            ov.put(keys::cursor(source), next.to_be_bytes().to_vec());
        }
        let new_hashes: Vec<_> = ov.hashes.iter().map(|(i, h)| (*i, *h)).collect();
        let indexed = ov.indexed_events();
        self.tree.apply_batch(ov.into_batch())?;
        if self.options.flush_every_batch {
            self.db.flush()?;
        }
        self.index_events(&indexed);
        self.proof_hashes.appended(new_hashes.into_iter());
        if let Some(t) = time {
            self.signed_at
                .store(t, std::sync::atomic::Ordering::Release);
        }
        w.size = size;
        self.checkpointed.send_replace(size);
        Ok(MirroredBatch {
            checkpoint: signed,
            appended,
        })
    }

    /// Checks a signed checkpoint for a size the mirror already holds (a
    /// checkpoint re-published after a sequencer restart, or one that arrived
    /// after later leaves) and stores it if new. Returns it when it verified.
    pub fn accept_past_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, LedgerError> {
        let signed = checkpoint::parse_own(note, &self.verifier_key)?;
        let root = self.root_at(signed.size)?;
        if root != signed.root {
            return Err(LedgerError::Inconsistent(format!(
                "the ledger signed root {} for size {}, but this mirror's tree of that size has root {}",
                hex::encode(signed.root.0),
                signed.size,
                hex::encode(root.0)
            )));
        }
        if self.tree.get(keys::checkpoint(signed.size))?.is_none() {
            self.tree
                .insert(keys::checkpoint(signed.size), signed.note.clone())?;
        }
        Ok(signed)
    }

    /// Stores refused submissions published by the sequencer, in rejection
    /// index order; records already held are skipped. A gap (a record whose
    /// index is beyond the next expected one) is an error: nothing is written.
    pub fn store_rejections(
        &self,
        records: &[proto::RejectedSubmission],
        positions: &[(&str, u64)],
    ) -> Result<usize, LedgerError> {
        let mut w = self.lock_writer()?;
        let mut next = w.rejected;
        let mut batch = sled::Batch::default();
        for r in records {
            if r.rejection_index < next {
                continue;
            }
            if r.rejection_index > next {
                return Err(LedgerError::Inconsistent(format!(
                    "rejection {} arrived but {next} is missing",
                    r.rejection_index
                )));
            }
            batch.insert(&keys::rejected(next)[..], r.encode_to_vec());
            next += 1;
        }
        let added = (next - w.rejected) as usize;
        if added > 0 {
            batch.insert(keys::REJECTED_COUNT, &next.to_be_bytes()[..]);
        }
        for (source, offset) in positions {
            batch.insert(keys::cursor(source), &offset.to_be_bytes()[..]);
        }
        self.tree.apply_batch(batch)?;
        w.rejected = next;
        Ok(added)
    }

    /// Records the next offset to read from `source` (an outbox mark or a
    /// stream position), on its own. Not flushed: a crash may lose it, after
    /// which the source is read again from the earlier mark.
    pub fn set_cursor(&self, source: &str, next: u64) -> Result<(), LedgerError> {
        self.tree
            .insert(keys::cursor(source), &next.to_be_bytes()[..])?;
        Ok(())
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, WriterState>, LedgerError> {
        self.writer
            .lock()
            .map_err(|_| LedgerError::Corrupt("a previous writer panicked".into()))
    }
}
