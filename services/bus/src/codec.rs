//! The byte form of outbound records: each is the protobuf message of its
//! stream (`proto/clew/v1`), so a partner decodes them with the proto files alone.

use prost::Message;

use crate::{
    BusError, CheckpointRecord, Outgoing, Published, RejectedSubmission, SequencedEntry, Stream,
};

pub(crate) fn stream_of(r: &Outgoing) -> Stream {
    match r {
        Outgoing::Sequenced(_) => Stream::Sequenced,
        Outgoing::Checkpoint(_) => Stream::Checkpoints,
        Outgoing::Rejected(_) => Stream::Rejected,
    }
}

pub(crate) fn encode(r: &Outgoing) -> Vec<u8> {
    match r {
        Outgoing::Sequenced(m) => m.encode_to_vec(),
        Outgoing::Checkpoint(m) => m.encode_to_vec(),
        Outgoing::Rejected(m) => m.encode_to_vec(),
    }
}

pub(crate) fn decode(stream: Stream, offset: u64, bytes: &[u8]) -> Result<Published, BusError> {
    let bad = |e: prost::DecodeError| BusError::Undecodable {
        stream: stream.name(),
        offset,
        detail: e.to_string(),
    };
    let record = match stream {
        Stream::Sequenced => Outgoing::Sequenced(SequencedEntry::decode(bytes).map_err(bad)?),
        Stream::Checkpoints => Outgoing::Checkpoint(CheckpointRecord::decode(bytes).map_err(bad)?),
        Stream::Rejected => Outgoing::Rejected(RejectedSubmission::decode(bytes).map_err(bad)?),
    };
    Ok(Published {
        stream,
        offset,
        record,
    })
}
