//! Submission stream files: a sequence of DSSE envelopes, each prefixed with
//! its length as a protobuf varint (the protobuf "delimited" convention, so
//! any protobuf library can read and write them). The record number is the
//! input offset the sequencer stores as its cursor.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clew_ledger::Submission;
use prost::bytes::Buf;

/// Appends envelopes to a stream file.
pub fn append(path: &Path, envelopes: &[Vec<u8>]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    for e in envelopes {
        prost::encoding::encode_varint(e.len() as u64, &mut buf);
        buf.extend_from_slice(e);
    }
    file.write_all(&buf)?;
    file.sync_data()?;
    Ok(())
}

/// Reads every complete record of a stream file with offset `>= from`.
/// A truncated last record (a writer mid-append) is left for the next read.
pub fn read_from(path: &Path, from: u64) -> Result<Vec<Submission>> {
    let mut data = Vec::new();
    BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    )
    .read_to_end(&mut data)?;
    let mut rest = data.as_slice();
    let mut out = Vec::new();
    let mut offset = 0u64;
    while !rest.is_empty() {
        let mut probe = rest;
        let Ok(len) = prost::encoding::decode_varint(&mut probe) else {
            break;
        };
        let header = rest.len() - probe.remaining();
        if len > clew_events::MAX_SUBMISSION_BYTES as u64 * 4 {
            bail!(
                "record {offset} of {} claims {len} bytes: not a stream file",
                path.display()
            );
        }
        let len = len as usize;
        if probe.len() < len {
            break;
        }
        if offset >= from {
            out.push(Submission::received(offset, probe[..len].to_vec()));
        }
        rest = &rest[header + len..];
        offset += 1;
    }
    Ok(out)
}
