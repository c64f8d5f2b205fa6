//! The add-checkpoint request (C2SP tlog-witness, "add-checkpoint"): an old
//! size line, up to 63 consistency proof lines, an empty line, then the
//! signed checkpoint. Parsed by the witness, written by a log's client.

use base64::prelude::{Engine, BASE64_STANDARD};
use tlog_tiles::tlog::Hash;

/// Most consistency proof lines a request may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// One add-checkpoint request.
#[derive(Debug, Clone, PartialEq)]
pub struct AddCheckpoint {
    /// The size of the last checkpoint the client believes the witness cosigned.
    pub old_size: u64,
    /// RFC 6962 2.1.2 consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint (a signed note).
    pub checkpoint: Vec<u8>,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(BASE64_STANDARD.encode(h.0).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a request body; the error says what is malformed (a 400).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let split = body
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or("no empty line before the checkpoint")?;
        let head = std::str::from_utf8(&body[..split]).map_err(|_| "the header is not UTF-8")?;
        let checkpoint = body[split + 2..].to_vec();
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or("the first line is not \"old <size>\"")?;
        // tlog-witness: ASCII decimal, no leading zeroes unless it is 0.
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err(format!(
                "old size {old:?} is not a decimal without leading zeroes"
            ));
        }
        let old_size: u64 = old
            .parse()
            .map_err(|_| format!("old size {old:?} is too large"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(format!(
                    "more than {MAX_PROOF_LINES} consistency proof lines"
                ));
            }
            let bytes = BASE64_STANDARD
                .decode(line)
                .map_err(|_| format!("proof line {line:?} is not base64"))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("proof line {line:?} is not a 32-byte hash"))?;
            proof.push(Hash(hash));
        }
        if old_size == 0 && !proof.is_empty() {
            return Err("a request from old size 0 carries no proof".into());
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_malformed_ones_say_why() {
        let r = AddCheckpoint {
            old_size: 20852014,
            proof: vec![Hash([7; 32]), Hash([9; 32])],
            checkpoint: b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\xe2\x80\x94 x y\n".to_vec(),
        };
        assert_eq!(AddCheckpoint::parse(&r.to_bytes()).unwrap(), r);
        for (body, why) in [
            (&b"old 1\n"[..], "no empty line"),
            (b"new 1\n\ncp", "not \"old <size>\""),
            (b"old 01\n\ncp", "leading zeroes"),
            (b"old -1\n\ncp", "leading zeroes"),
            (b"old 99999999999999999999\n\ncp", "too large"),
            (b"old 1\n!!\n\ncp", "not base64"),
            (b"old 1\nAAAA\n\ncp", "32-byte hash"),
            (
                b"old 0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\ncp",
                "carries no proof",
            ),
        ] {
            let e = AddCheckpoint::parse(body).unwrap_err();
            assert!(e.contains(why), "{e} lacks {why}");
        }
        let long = AddCheckpoint {
            old_size: 1,
            proof: vec![Hash([1; 32]); 64],
            checkpoint: b"cp".to_vec(),
        };
        assert!(AddCheckpoint::parse(&long.to_bytes())
            .unwrap_err()
            .contains("more than 63"));
    }
}
