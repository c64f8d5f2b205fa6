use thiserror::Error;

/// Failures of the ledger itself (not refusals of submissions, which are
/// recorded in the rejected log and reported in a `BatchReceipt`).
#[derive(Debug, Error)]
pub enum LedgerError {
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// Stored data does not have the shape the ledger wrote.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// Merkle tree computation failed (usually: a needed hash is missing).
    #[error("merkle tree: {0}")]
    Tlog(#[from] tlog_tiles::Error),
    /// A key or note could not be used.
    #[error("signing key: {0}")]
    Key(String),
    /// A data directory that holds no ledger, or already holds one.
    #[error("{0}")]
    Setup(String),
    /// A request outside the tree (index beyond size, unknown tile...).
    #[error("not found: {0}")]
    NotFound(String),
    /// What a mirror received contradicts what the ledger signed (a leaf or
    /// checkpoint missing, reordered or rewritten on the way).
    #[error("inconsistent with the signed ledger: {0}")]
    Inconsistent(String),
    /// The blob store could not say whether content a submission cites is
    /// there; nothing of the batch was written (retry it when it answers).
    #[error("the blob store holding cited content did not answer: {0}")]
    ContentUnavailable(String),
    /// The genesis event could not be built.
    #[error("event: {0}")]
    Event(#[from] clew_events::EventError),
}
