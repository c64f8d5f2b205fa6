use thiserror::Error;

/// Failures of the blob store, each naming what went wrong and where.
#[derive(Debug, Error)]
pub enum BlobError {
    /// Not a `sha256:<64 lowercase hex>` digest.
    #[error("{0:?} is not a digest of the form sha256:<64 lowercase hex digits>")]
    BadDigest(String),
    /// Bytes that do not hash to the digest they are stored or read under:
    /// on upload a client error, on read content altered inside the store.
    #[error("bytes given as {expected} hash to {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The store already holds an object of another size under this digest
    /// (a different body cannot hash to the same digest: the object was
    /// altered or truncated inside the store).
    #[error("the store holds {size} bytes under {digest}, not the {expected} uploaded")]
    Conflict {
        digest: String,
        size: u64,
        expected: u64,
    },
    /// A body larger than the limit the caller set.
    #[error("content larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The caller's check of the content (e.g. its format) refused it while
    /// it was being written: nothing was stored.
    #[error("{0}")]
    Refused(String),
    /// The store could not be configured (bad URL, CA file, options).
    #[error("blob store configuration: {0}")]
    Config(String),
    /// The store refused or could not be reached; the operation did nothing
    /// and may be retried when the store is back.
    #[error("blob store {location}: {reason}")]
    Store { location: String, reason: String },
    /// A local file (spooled upload, CA file) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BlobError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Whether retrying later can succeed (the store was unreachable or
    /// refused for a reason of its own), as opposed to bad input.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store { .. })
    }
}
