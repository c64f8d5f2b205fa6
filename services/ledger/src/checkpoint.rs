//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes.

use clew_events::ProducerKey;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::LedgerError;

/// A checkpoint the ledger signed.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash of the tree of `size` leaves.
    pub root: Hash,
    /// The signed note, byte for byte as served (`<origin>\n<size>\n<b64 root>\n\n— <sig>\n`).
    pub note: Vec<u8>,
}

impl SignedCheckpoint {
    /// The note as text.
    pub fn note_text(&self) -> String {
        String::from_utf8_lossy(&self.note).into_owned()
    }
}

/// Loads the ledger's signer key; returns the signer, its name (the origin)
/// and the matching verifier key text.
pub(crate) fn load_signer(text: &str) -> Result<(StandardSigner, String, String), LedgerError> {
    let key = ProducerKey::parse(text).map_err(|e| LedgerError::Key(e.to_string()))?;
    let signer = StandardSigner::new(text.trim()).map_err(|e| LedgerError::Key(e.to_string()))?;
    Ok((signer, key.name().to_string(), key.verifier().to_text()))
}

/// Builds and signs the checkpoint for a tree.
pub(crate) fn sign(
    signer: &StandardSigner,
    origin: &str,
    size: u64,
    root: Hash,
) -> Result<SignedCheckpoint, LedgerError> {
    // C2SP tlog-checkpoint: origin line, decimal tree size, base64 root hash; no extensions.
    let body = Checkpoint::new(origin, size, root, "")
        .map_err(|e| LedgerError::Key(format!("checkpoint: {e}")))?
        .to_bytes();
    let note = sign_note(signer, &body)?;
    Ok(SignedCheckpoint { size, root, note })
}

/// Verifies a signed checkpoint note with `vkey` and parses its body; the
/// note is returned as given (other signatures, such as witnesses'
/// cosignatures, included).
pub fn parse(note: &[u8], vkey: &str) -> Result<SignedCheckpoint, LedgerError> {
    parse_keeping(note, vkey, true)
}

/// [`parse`], but the note returned keeps the ledger's own signature only:
/// what a ledger stores (witnesses' cosignatures, C2SP tlog-cosignature, are
/// evidence about the checkpoint, kept apart: the ledger holds its
/// checkpoints byte for byte as it signed them).
pub fn parse_own(note: &[u8], vkey: &str) -> Result<SignedCheckpoint, LedgerError> {
    parse_keeping(note, vkey, false)
}

fn parse_keeping(
    note: &[u8],
    vkey: &str,
    keep_others: bool,
) -> Result<SignedCheckpoint, LedgerError> {
    let verifier =
        StandardVerifier::new(vkey).map_err(|e| LedgerError::Key(format!("verifier key: {e}")))?;
    let origin = signed_note::Verifier::name(&verifier).to_string();
    let parsed = Note::from_bytes(note)
        .map_err(|e| LedgerError::Corrupt(format!("checkpoint note: {e}")))?;
    let (own, others) = parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| LedgerError::Corrupt(format!("checkpoint signature: {e}")))?;
    let note = if keep_others || others.is_empty() {
        note.to_vec()
    } else {
        Note::new(parsed.text(), &own)
            .map_err(|e| LedgerError::Corrupt(format!("checkpoint note: {e}")))?
            .to_bytes()
    };
    let body = Checkpoint::from_bytes(parsed.text())
        .map_err(|e| LedgerError::Corrupt(format!("checkpoint body: {e}")))?;
    if body.origin() != origin {
        return Err(LedgerError::Corrupt(format!(
            "checkpoint origin {:?} is not the ledger's {:?}",
            body.origin(),
            origin
        )));
    }
    Ok(SignedCheckpoint {
        size: body.size(),
        root: *body.hash(),
        note,
    })
}

/// Signs a note's text with the ledger key (c2sp.org/signed-note).
pub(crate) fn sign_note(signer: &StandardSigner, text: &[u8]) -> Result<Vec<u8>, LedgerError> {
    let mut note = Note::new(text, &[]).map_err(|e| LedgerError::Key(e.to_string()))?;
    note.add_sigs(&[signer])
        .map_err(|e| LedgerError::Key(e.to_string()))?;
    Ok(note.to_bytes())
}
