//! The witness itself: for each log it follows (by origin, with the log's
//! verifier keys) the size and root hash of the last checkpoint it
//! cosigned, kept in sled; a new checkpoint is cosigned only if it is
//! signed by the log and consistent with that one (C2SP tlog-witness).

use std::collections::HashMap;
use std::path::Path;

use signed_note::{Note, NoteError, StandardVerifier, Verifier, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::{check_tree, Hash};

use crate::cosignature::CosignatureSigner;
use crate::protocol::AddCheckpoint;
use crate::WitnessError;

/// Why a checkpoint was not cosigned, with the HTTP status tlog-witness gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the request is malformed, or its old size is above the checkpoint's.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no signature by a key the witness trusts for this origin.
    #[error("not signed by the log: {0}")]
    Unsigned(String),
    /// 404: the witness does not follow this origin.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// 409: the old size is not the size last cosigned (`known`), or the same
    /// size came with another root hash.
    #[error("conflict: {detail} (last cosigned size {known})")]
    Conflict { known: u64, detail: String },
    /// 422: the consistency proof does not verify.
    #[error("inconsistent: {0}")]
    BadProof(String),
    /// 500: the witness's own storage failed.
    #[error("witness storage: {0}")]
    Internal(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Unsigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::BadProof(_) => 422,
            Refusal::Internal(_) => 500,
        }
    }
}

/// A witness over a sled database.
pub struct Witness {
    signer: CosignatureSigner,
    logs: HashMap<String, Vec<String>>,
    db: sled::Db,
    state: sled::Tree,
}

fn encode(size: u64, hash: &Hash) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(&hash.0);
    v
}

fn decode(v: &[u8]) -> Option<(u64, Hash)> {
    let size = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let hash: [u8; 32] = v.get(8..40)?.try_into().ok()?;
    Some((size, Hash(hash)))
}

impl Witness {
    /// Opens (or creates) the witness database in `dir` with its key.
    pub fn open(dir: &Path, signer: CosignatureSigner) -> Result<Self, WitnessError> {
        let db =
            sled::open(dir.join("witness.db")).map_err(|e| WitnessError::Storage(e.to_string()))?;
        let state = db
            .open_tree("latest-cosigned")
            .map_err(|e| WitnessError::Storage(e.to_string()))?;
        Ok(Witness {
            signer,
            logs: HashMap::new(),
            db,
            state,
        })
    }

    /// Follows the log whose checkpoints `vkey` (signed-note Ed25519) signs;
    /// its origin is the key's name. More keys for one origin are each trusted.
    pub fn follow(&mut self, vkey: &str) -> Result<String, WitnessError> {
        let v = StandardVerifier::new(vkey.trim())
            .map_err(|e| WitnessError::Key(format!("log key {vkey:?}: {e}")))?;
        let origin = v.name().to_string();
        self.logs
            .entry(origin.clone())
            .or_default()
            .push(vkey.trim().to_string());
        Ok(origin)
    }

    pub fn signer(&self) -> &CosignatureSigner {
        &self.signer
    }

    /// The origins followed.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.logs.keys().map(String::as_str)
    }

    /// The size and root hash last cosigned for `origin` (none before the first).
    pub fn latest(&self, origin: &str) -> Result<Option<(u64, Hash)>, WitnessError> {
        Ok(self
            .state
            .get(origin.as_bytes())
            .map_err(|e| WitnessError::Storage(e.to_string()))?
            .and_then(|v| decode(&v)))
    }

    fn verifiers(&self, origin: &str) -> Result<VerifierList, Refusal> {
        let keys = self
            .logs
            .get(origin)
            .ok_or_else(|| Refusal::UnknownLog(origin.to_string()))?;
        let mut list: Vec<Box<dyn Verifier>> = Vec::new();
        for k in keys {
            let v = StandardVerifier::new(k).map_err(|e| Refusal::Internal(e.to_string()))?;
            list.push(Box::new(v));
        }
        Ok(VerifierList::new(list))
    }

    /// Handles one add-checkpoint request body: the cosignature lines, or why not.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let req = AddCheckpoint::parse(body).map_err(Refusal::BadRequest)?;
        let origin = std::str::from_utf8(&req.checkpoint)
            .ok()
            .and_then(|t| t.split('\n').next())
            .unwrap_or_default()
            .to_string();
        let verifiers = self.verifiers(&origin)?;
        let note = Note::from_bytes(&req.checkpoint).map_err(|e| {
            Refusal::BadRequest(format!("the checkpoint is not a signed note: {e}"))
        })?;
        match note.verify(&verifiers) {
            Ok(_) => {}
            Err(NoteError::UnverifiedNote) => {
                return Err(Refusal::Unsigned(format!(
                    "no signature by a key trusted for {origin}"
                )))
            }
            Err(NoteError::InvalidSignature { name, id }) => {
                return Err(Refusal::Unsigned(format!(
                    "the signature of {name}+{id:08x} does not verify"
                )))
            }
            Err(e) => return Err(Refusal::BadRequest(format!("the checkpoint: {e}"))),
        }
        let cp = Checkpoint::from_bytes(note.text()).map_err(|_| {
            Refusal::BadRequest("the note is not a checkpoint (C2SP tlog-checkpoint)".into())
        })?;
        let (size, hash) = (cp.size(), *cp.hash());
        if req.old_size > size {
            return Err(Refusal::BadRequest(format!(
                "old size {} is above the checkpoint's size {size}",
                req.old_size
            )));
        }
        let current = self
            .state
            .get(origin.as_bytes())
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let (known, known_hash) = current
            .as_deref()
            .and_then(decode)
            .map_or((0, None), |(s, h)| (s, Some(h)));
        if req.old_size != known {
            return Err(Refusal::Conflict {
                known,
                detail: format!("old size {} is not the last cosigned size", req.old_size),
            });
        }
        match known_hash {
            // The first checkpoint of this log: nothing to be consistent with.
            None => {}
            Some(h) if size == known && h != hash => {
                tracing::warn!(%origin, size, "a checkpoint of the size last cosigned with another root hash: a fork");
                return Err(Refusal::Conflict {
                    known,
                    detail: format!("size {size} was cosigned with another root hash"),
                });
            }
            Some(_) if size == known => {}
            // RFC 6962 2.1.2 (checked as Go's sumdb/tlog CheckTree does).
            Some(h) if check_tree(&req.proof, size, hash, known, h).is_err() => {
                tracing::warn!(
                    %origin,
                    old = known,
                    size,
                    checkpoint = %String::from_utf8_lossy(note.text()),
                    "a checkpoint not consistent with the last cosigned: refused (evidence of a fork or a broken log)"
                );
                return Err(Refusal::BadProof(format!(
                    "the proof from size {known} to {size} does not verify"
                )));
            }
            Some(_) => {}
        }
        // Checked and persisted atomically: the stored value must still be
        // the one checked against (tlog-witness, the rollback race).
        let swapped = self
            .state
            .compare_and_swap(origin.as_bytes(), current, Some(encode(size, &hash)))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        if swapped.is_err() {
            let now = self
                .latest(&origin)
                .map_err(|e| Refusal::Internal(e.to_string()))?
                .map_or(0, |(s, _)| s);
            return Err(Refusal::Conflict {
                known: now,
                detail: "another request moved the log on meanwhile".into(),
            });
        }
        // Persisted before the cosignature is answered.
        self.db
            .flush()
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        self.signer
            .cosign(note.text())
            .map_err(|e| Refusal::Internal(e.to_string()))
    }
}
