//! Reads in the shapes partners mirror and verify: C2SP tlog-tiles hash tiles
//! and entry bundles, and C2SP tlog-proof receipts.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use tlog_tiles::{check_record, record_hash, stored_hash_index, Hash};

use crate::checkpoint::{self, SignedCheckpoint};
use crate::{Ledger, LedgerError};
use tlog_tiles::HashReader;

/// Tile height: c2sp.org/tlog-tiles fixes tiles at 2^8 = 256 hashes or entries.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile, entries in a full bundle (also a leaf group's bound).
pub(crate) const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// First line of a C2SP tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// One tile of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileRef {
    /// `tile/<L>/<N>[.p/<W>]`: `width` hashes of tree level `8 * level`.
    Hashes {
        /// Tile level L.
        level: u8,
        /// Tile index N within the level.
        index: u64,
        /// Number of hashes (256 for a full tile).
        width: u32,
    },
    /// `tile/entries/<N>[.p/<W>]`: `width` leaves, each with a 2-byte length.
    Entries {
        /// Bundle index N.
        index: u64,
        /// Number of entries (256 for a full bundle).
        width: u32,
    },
}

impl TileRef {
    /// The tile's path (c2sp.org/tlog-tiles, "Merkle Tree" and "Log entries").
    pub fn path(&self) -> String {
        let (level, index, width) = match *self {
            TileRef::Hashes {
                level,
                index,
                width,
            } => (level.to_string(), index, width),
            TileRef::Entries { index, width } => ("entries".to_string(), index, width),
        };
        // "<N> is the index of the tile within the level ... encoded into path
        // elements of three digits, all but the last prefixed with x".
        let mut n = index;
        let mut path = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            path = format!("x{:03}/{path}", n % 1000);
        }
        let partial = if u64::from(width) == TILE_WIDTH {
            String::new()
        } else {
            format!(".p/{width}")
        };
        format!("tile/{level}/{path}{partial}")
    }

    /// Parses a tile path; refuses anything that is not exactly canonical.
    pub fn parse(path: &str) -> Result<Self, LedgerError> {
        let bad = || LedgerError::NotFound(format!("{path:?} is not a tlog-tiles tile path"));
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (level, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (digits, width) = match rest.split_once(".p/") {
            Some((d, w)) => {
                let w: u32 = w.parse().map_err(|_| bad())?;
                if w == 0 || u64::from(w) >= TILE_WIDTH {
                    return Err(bad());
                }
                (d, w)
            }
            None => (rest, TILE_WIDTH as u32),
        };
        let parts: Vec<&str> = digits.split('/').collect();
        let mut index: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let num = if last {
                *part
            } else {
                part.strip_prefix('x').ok_or_else(bad)?
            };
            if num.len() != 3 || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            index = index
                .checked_mul(1000)
                .and_then(|v| v.checked_add(num.parse::<u64>().unwrap_or(0)))
                .ok_or_else(bad)?;
        }
        let tile = if level == "entries" {
            TileRef::Entries { index, width }
        } else {
            let level: u8 = level.parse().map_err(|_| bad())?;
            if level > 5 {
                return Err(bad());
            }
            TileRef::Hashes {
                level,
                index,
                width,
            }
        };
        if tile.path() != path {
            return Err(bad());
        }
        Ok(tile)
    }
}

impl Ledger {
    /// The bytes of a tile of the current tree; refuses tiles beyond it.
    pub fn read_tile(&self, tile: TileRef) -> Result<Vec<u8>, LedgerError> {
        let size = self.size();
        match tile {
            TileRef::Hashes {
                level,
                index,
                width,
            } => {
                let shift = u32::from(level) * u32::from(TILE_HEIGHT);
                let level_size = size.checked_shr(shift).unwrap_or(0);
                let start = index * TILE_WIDTH;
                if start + u64::from(width) > level_size {
                    return Err(LedgerError::NotFound(format!(
                        "{} is beyond tree size {size}",
                        tile.path()
                    )));
                }
                let mut out = Vec::with_capacity(width as usize * 32);
                for n in start..start + u64::from(width) {
                    let i = stored_hash_index(level * TILE_HEIGHT, n);
                    let h = self
                        .hashes()
                        .read_hashes(&[i])
                        .map_err(|_| LedgerError::Corrupt(format!("stored hash {i} is missing")))?;
                    out.extend_from_slice(&h[0].0);
                }
                Ok(out)
            }
            TileRef::Entries { index, width } => {
                let start = index * TILE_WIDTH;
                if start + u64::from(width) > size {
                    return Err(LedgerError::NotFound(format!(
                        "{} is beyond tree size {size}",
                        tile.path()
                    )));
                }
                let mut out = Vec::new();
                let leaves = self.leaves(start..start + u64::from(width))?;
                for (leaf, i) in leaves.into_iter().zip(start..) {
                    // tlog-tiles entry bundle: big-endian uint16 length, then the entry.
                    let len = u16::try_from(leaf.len()).map_err(|_| {
                        LedgerError::Corrupt(format!("leaf {i} exceeds 65,535 bytes"))
                    })?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&leaf);
                }
                Ok(out)
            }
        }
    }

    /// An offline receipt for leaf `index` against the latest checkpoint, in
    /// C2SP tlog-proof format; the `extra` line carries the leaf itself so the
    /// receipt alone is enough to check the event's inclusion.
    pub fn receipt(&self, index: u64) -> Result<String, LedgerError> {
        let cp = self.latest_checkpoint()?;
        let proof = self.inclusion_proof(index, cp.size)?;
        let leaf = self.leaf(index)?;
        Ok(format_receipt(index, &leaf, &proof, &cp))
    }
}

/// Formats a C2SP tlog-proof: header, optional extra, index, proof hashes
/// (leaf sibling first, RFC 6962 section 2.1.1), empty line, checkpoint.
pub fn format_receipt(index: u64, leaf: &[u8], proof: &[Hash], cp: &SignedCheckpoint) -> String {
    let mut out = format!(
        "{TLOG_PROOF_HEADER}\nextra {}\nindex {index}\n",
        B64.encode(leaf)
    );
    for h in proof {
        out.push_str(&B64.encode(h.0));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&cp.note_text());
    out
}

/// A receipt that checked out.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// Leaf index.
    pub index: u64,
    /// The leaf (canonical envelope bytes) from the extra line.
    pub leaf: Vec<u8>,
    /// The checkpoint it is proven against.
    pub checkpoint: SignedCheckpoint,
}

/// Checks a tlog-proof receipt offline with the ledger's verifier key.
pub fn verify_receipt(text: &str, vkey: &str) -> Result<VerifiedReceipt, LedgerError> {
    let bad = |why: &str| LedgerError::Corrupt(format!("receipt: {why}"));
    let (head, note) = text
        .split_once("\n\n")
        .ok_or_else(|| bad("no empty line before the checkpoint"))?;
    let mut lines = head.lines();
    if lines.next() != Some(TLOG_PROOF_HEADER) {
        return Err(bad("first line is not c2sp.org/tlog-proof@v1"));
    }
    let mut line = lines.next().ok_or_else(|| bad("truncated"))?;
    let mut leaf = None;
    if let Some(extra) = line.strip_prefix("extra ") {
        leaf = Some(B64.decode(extra).map_err(|_| bad("extra is not base64"))?);
        line = lines.next().ok_or_else(|| bad("truncated"))?;
    }
    let index: u64 = line
        .strip_prefix("index ")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| bad("no index line"))?;
    let proof = lines
        .map(|l| {
            let raw = B64.decode(l).map_err(|_| bad("proof line is not base64"))?;
            let arr: [u8; 32] = raw
                .try_into()
                .map_err(|_| bad("proof hash is not 32 bytes"))?;
            Ok(Hash(arr))
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let leaf = leaf.ok_or_else(|| bad("no extra line with the leaf"))?;
    let cp = checkpoint::parse(note.as_bytes(), vkey)?;
    check_record(&proof, cp.size, cp.root, index, record_hash(&leaf))
        .map_err(|_| bad("inclusion proof does not match the checkpoint"))?;
    Ok(VerifiedReceipt {
        index,
        leaf,
        checkpoint: cp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_follow_tlog_tiles() {
        let t = TileRef::Hashes {
            level: 0,
            index: 1_234_067,
            width: 256,
        };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        let p = TileRef::Entries { index: 5, width: 3 };
        assert_eq!(p.path(), "tile/entries/005.p/3");
        for t in [
            t,
            p,
            TileRef::Hashes {
                level: 2,
                index: 0,
                width: 1,
            },
        ] {
            assert_eq!(TileRef::parse(&t.path()).unwrap(), t);
        }
        for bad in [
            "tile/0/5",
            "tile/0/x005",
            "tile/0/005.p/256",
            "tile/0/005.p/0",
            "tile/0/005.p/07",
            "tile/9/000",
            "x/0/000",
        ] {
            assert!(TileRef::parse(bad).is_err(), "{bad}");
        }
    }
}
