//! Witnessed checkpoints: history nobody can fork unseen.
//!
//! A witness cosigns a log's checkpoint only if it is consistent with every
//! checkpoint of that log it cosigned before; a log that shows one history
//! to one party and another to another cannot get both witnessed. This crate
//! holds what both sides need:
//! - [`cosignature`]: witness keys and `cosignature/v1` signatures (C2SP
//!   tlog-cosignature), usable as signed-note signers and verifiers;
//! - [`protocol`]: the add-checkpoint request (C2SP tlog-witness);
//! - [`witness`]: the witness — per origin, the size and root hash last
//!   cosigned, in sled; a request is checked (the log's signature, the old
//!   size, the RFC 6962 consistency proof), the new state compared-and-swapped
//!   and flushed to disk, and only then cosigned;
//! - [`http`]: its HTTP interface, served by `clew witness`;
//! - [`policy`]: K of N witnesses, as verifiers require them;
//! - [`feeder`]: the log's side — every new checkpoint sent to each
//!   configured witness, apart from sequencing, each cosignature verified
//!   and stored ([`feeder::WitnessedLog`] is what the ledger provides).
//!
//! Data flow: log → `POST /add-checkpoint` (old size, proof, signed
//! checkpoint) → [`witness::Witness::add_checkpoint`] → cosignature lines
//! (200) or a refusal with the status tlog-witness gives it (400, 403, 404,
//! 409 with the size last cosigned, 422).

pub mod cosignature;
pub mod feeder;
pub mod http;
pub mod policy;
pub mod protocol;
pub mod witness;

pub use cosignature::{CosignatureSigner, CosignatureVerifier};
pub use feeder::{feed, WitnessEndpoint, WitnessStats, WitnessedLog};
pub use policy::{Cosigned, WitnessPolicy};
pub use protocol::AddCheckpoint;
pub use witness::{Refusal, Witness};

/// Errors of the witness crate.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// A key that cannot be used (malformed, wrong algorithm, wrong ID).
    #[error("{0}")]
    Key(String),
    /// The witness database.
    #[error("witness storage: {0}")]
    Storage(String),
}
