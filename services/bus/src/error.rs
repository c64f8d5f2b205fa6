use thiserror::Error;

/// Failures of the bus.
#[derive(Debug, Error)]
pub enum BusError {
    /// The embedded log's files could not be read or written.
    #[error("embedded log storage: {0}")]
    Storage(String),
    /// A record of the embedded log does not check out.
    #[error(
        "embedded log corrupt: the {stream} stream's record at offset {offset} is cut short or damaged"
    )]
    Corrupt {
        /// Stream name.
        stream: &'static str,
        /// Offset of the first record that does not parse.
        offset: u64,
    },
    /// The Kafka client or broker failed (after the client's own retries).
    #[error("kafka: {0}")]
    Kafka(String),
    /// The bus could not be set up (bad configuration, missing topic…).
    #[error("{0}")]
    Setup(String),
    /// A record on an outbound stream does not decode as its proto message.
    #[error("undecodable record on the {stream} stream at offset {offset}: {detail}")]
    Undecodable {
        /// Stream name.
        stream: &'static str,
        /// Offset of the record.
        offset: u64,
        /// Decoder message.
        detail: String,
    },
}

impl From<rdkafka::error::KafkaError> for BusError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        BusError::Kafka(e.to_string())
    }
}
