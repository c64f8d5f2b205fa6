use thiserror::Error;

/// Why an event or key could not be built, decoded or checked.
#[derive(Debug, Error)]
pub enum EventError {
    /// The bytes are not a decodable envelope / event.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The event decodes but breaks a rule of the contract.
    #[error("invalid payload: {0}")]
    Invalid(String),
    /// The canonical envelope is larger than a ledger leaf may be.
    #[error("envelope is {size} bytes; a ledger leaf holds at most {limit} (store bulk content by digest)")]
    Oversized {
        /// Size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The signature does not verify with the named key.
    #[error("signature does not verify with key {0}")]
    BadSignature(String),
    /// A key text is not in the C2SP signed-note key format.
    #[error("bad key: {0}")]
    BadKey(String),
}
