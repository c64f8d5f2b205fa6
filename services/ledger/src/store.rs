//! Where every ledger datum lives in sled, and read views over it.
//!
//! Everything is in ONE sled tree so that one `apply_batch` is atomic across
//! leaves, hashes, the dedupe index, entity state, checkpoints, rejections and
//! input cursors. Keys are a one-byte family prefix plus a big-endian index (so
//! sled's byte order is numeric order) or a string:
//!
//! | key                     | value                                         |
//! |-------------------------|-----------------------------------------------|
//! | `m` + name              | metadata (origin, ledger verifier key, size)  |
//! | `u` + source            | next input offset to consume from `source`    |
//! | `l` + u64 leaf index    | canonical envelope bytes (the Merkle leaf)    |
//! | `h` + u64 leaf index    | the stored hashes appending that leaf created |
//! | `e` + event id          | u64 leaf index holding that event             |
//! | `k` + key id            | [`KeyRecord`] JSON                            |
//! | `n` + subject           | [`EntityRecord`] JSON                         |
//! | `c` + u64 tree size     | signed checkpoint note for that size          |
//! | `r` + u64 rejection idx | `RejectedSubmission` protobuf                 |

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tlog_tiles::{Hash, HashReader, HASH_SIZE};

use crate::LedgerError;

/// Storage key layout.
pub mod keys {
    /// Metadata: checkpoint origin.
    pub const ORIGIN: &[u8] = b"morigin";
    /// Metadata: the ledger's C2SP verifier key text.
    pub const LEDGER_VKEY: &[u8] = b"mledger_vkey";
    /// Metadata: number of leaves.
    pub const SIZE: &[u8] = b"msize";
    /// Metadata: number of rejections recorded.
    pub const REJECTED_COUNT: &[u8] = b"mrejected";
    /// Metadata: present when this database is a mirror (a read replica's
    /// verified copy of a ledger another process sequences).
    pub const MIRROR: &[u8] = b"mmirror";

    fn indexed(prefix: u8, i: u64) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = prefix;
        k[1..].copy_from_slice(&i.to_be_bytes());
        k
    }

    fn named(prefix: u8, name: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + name.len());
        k.push(prefix);
        k.extend_from_slice(name.as_bytes());
        k
    }

    /// Leaf `i`.
    pub fn leaf(i: u64) -> [u8; 9] {
        indexed(b'l', i)
    }
    /// The stored hashes created by appending leaf `n` (see [`super::hash_location`]).
    pub fn hashes_of_leaf(n: u64) -> [u8; 9] {
        indexed(b'h', n)
    }
    /// Checkpoint for tree size `n`.
    pub fn checkpoint(n: u64) -> [u8; 9] {
        indexed(b'c', n)
    }
    /// Rejection `i`.
    pub fn rejected(i: u64) -> [u8; 9] {
        indexed(b'r', i)
    }
    /// Dedupe entry for an event id.
    pub fn event(id: &str) -> Vec<u8> {
        named(b'e', id)
    }
    /// Key registry entry.
    pub fn key(key_id: &str) -> Vec<u8> {
        named(b'k', key_id)
    }
    /// Entity state for a subject.
    pub fn entity(subject: &str) -> Vec<u8> {
        named(b'n', subject)
    }
    /// The dataset version that published a manifest digest within a dataset.
    pub fn manifest(dataset_id: &str, digest: &str) -> Vec<u8> {
        named(b'm', &format!("{dataset_id}\n{digest}"))
    }
    /// Input cursor of a source.
    pub fn cursor(source: &str) -> Vec<u8> {
        named(b'u', source)
    }
    /// The authorisation policy's fact about a subject (`clew_events::policy::Fact`).
    pub fn fact(subject: &str) -> Vec<u8> {
        named(b'a', subject)
    }
    /// When the checkpoint for tree size `n` was signed (unix seconds, big-endian i64).
    pub fn checkpoint_time(n: u64) -> [u8; 9] {
        indexed(b't', n)
    }
    /// Metadata: present once the policy's facts cover every leaf (ledgers
    /// from before facts were kept gain them when first opened).
    pub const FACTS: &[u8] = b"mfacts";
    /// Prefix of all checkpoints.
    pub const CHECKPOINTS: &[u8] = b"c";
    /// Prefix of all checkpoint times.
    pub const CHECKPOINT_TIMES: &[u8] = b"t";
    /// Prefix of all rejections.
    pub const REJECTIONS: &[u8] = b"r";
}

/// Opens a sled database, waiting up to two seconds for the lock of a
/// just-closed handle to be released (sled drops its file lock from a
/// background thread after the last handle goes away, so an immediate
/// re-open in the same process can find it still held).
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A registered signing key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Principal the key belongs to.
    pub principal_id: String,
    /// The principal's roles (`clew.v1.Role` numbers) when the key was registered.
    pub roles: Vec<i32>,
    /// C2SP verifier key text.
    pub verifier_key: String,
    /// Leaf that registered the key.
    pub registered_leaf: u64,
    /// Leaf that revoked it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_leaf: Option<u64>,
}

/// What the sequencer remembers about an entity to check later references.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EntityRecord {
    /// Leaf that created the entity.
    pub leaf: u64,
    /// Leaf that withdrew / revoked / retired it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_leaf: Option<u64>,
    /// Model version a validation or deployment is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_version_id: String,
    /// Site a validation or deployment ran at.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site_id: String,
    /// Validation verdict / deployment status (enum number).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub state: i32,
    /// A principal's roles at its latest registration (enum numbers): what
    /// the authorisation policy reads for it as signer and as actor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<i32>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// Where a stored hash lives: the leaf whose append created it and its position
/// in that leaf's group. Appending leaf n stores, from stored-hash index
/// `stored_hash_index(0, n)` on, the hashes of levels 0..=trailing_ones(n)
/// (tlog `stored_hashes`), so the hash of (level L, node k) was created by leaf
/// `(k + 1) * 2^L - 1` at position L. One sled value per leaf instead of one
/// per hash halves the writes per appended event.
pub fn hash_location(stored_index: u64) -> (u64, usize) {
    let (level, node) = tlog_tiles::split_stored_hash_index(stored_index);
    (((node + 1) << level) - 1, usize::from(level))
}

/// Reads one stored hash from its leaf group.
pub(crate) fn read_stored_hash(
    tree: &sled::Tree,
    stored_index: u64,
) -> Result<Hash, tlog_tiles::Error> {
    let (leaf, pos) = hash_location(stored_index);
    match tree.get(keys::hashes_of_leaf(leaf)) {
        Ok(Some(v)) => v
            .get(pos * HASH_SIZE..(pos + 1) * HASH_SIZE)
            .ok_or(tlog_tiles::Error::IndexesNotInTree)
            .and_then(hash_value),
        _ => Err(tlog_tiles::Error::IndexesNotInTree),
    }
}

pub(crate) fn u64_value(v: &[u8]) -> Result<u64, LedgerError> {
    let arr: [u8; 8] = v.try_into().map_err(|_| {
        LedgerError::Corrupt(format!(
            "expected an 8-byte integer, found {} bytes",
            v.len()
        ))
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn hash_value(v: &[u8]) -> Result<Hash, tlog_tiles::Error> {
    let arr: [u8; HASH_SIZE] = v.try_into().map_err(|_| tlog_tiles::Error::InvalidTile)?;
    Ok(Hash(arr))
}

/// Reads stored hashes straight from sled.
pub(crate) struct StoredHashes<'a>(pub &'a sled::Tree);

impl HashReader for StoredHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| read_stored_hash(self.0, i))
            .collect()
    }
}

/// Lowest tree level whose hashes [`UpperHashCache`] keeps in memory. Levels
/// 4 and up are 1/16 of all stored hashes (about 4 MB per million leaves) but
/// 80% of the hashes an inclusion proof at a million leaves needs.
pub(crate) const CACHED_FROM_LEVEL: u8 = 4;

/// In-memory copy of the upper levels of the tree (filled at append time and
/// lazily on read), so a proof touches sled only for its lowest few hashes.
#[derive(Default)]
pub(crate) struct UpperHashCache(std::sync::RwLock<HashMap<u64, Hash>>);

impl UpperHashCache {
    pub fn insert_many(&self, hashes: impl Iterator<Item = (u64, Hash)>) {
        if let Ok(mut map) = self.0.write() {
            for (i, h) in hashes {
                if tlog_tiles::split_stored_hash_index(i).0 >= CACHED_FROM_LEVEL {
                    map.insert(i, h);
                }
            }
        }
    }

    fn get(&self, i: u64) -> Option<Hash> {
        self.0.read().ok().and_then(|m| m.get(&i).copied())
    }
}

/// Reads stored hashes from sled through the upper-level cache.
pub(crate) struct CachedHashes<'a> {
    pub tree: &'a sled::Tree,
    pub cache: &'a UpperHashCache,
}

impl HashReader for CachedHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                if let Some(h) = self.cache.get(i) {
                    return Ok(h);
                }
                let h = read_stored_hash(self.tree, i)?;
                self.cache.insert_many(std::iter::once((i, h)));
                Ok(h)
            })
            .collect()
    }
}

/// The writes of one batch in progress, read through before sled.
pub(crate) struct Overlay<'a> {
    pub tree: &'a sled::Tree,
    pub writes: HashMap<Vec<u8>, Vec<u8>>,
    /// Hashes appended in this batch, by stored-hash index.
    pub hashes: HashMap<u64, Hash>,
    /// The same hashes grouped by the leaf that created them.
    leaf_hashes: Vec<(u64, Vec<Hash>)>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            writes: HashMap::new(),
            hashes: HashMap::new(),
            leaf_hashes: Vec::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(Some(v.clone()));
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), value.into());
    }

    pub fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, LedgerError> {
        match self.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                LedgerError::Corrupt(format!("record {:?}: {e}", String::from_utf8_lossy(key)))
            })?)),
            None => Ok(None),
        }
    }

    pub fn put_json<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        // Serialising these plain records cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.put(key, bytes);
    }

    /// Records the stored hashes created by appending `leaf`.
    pub fn put_leaf_hashes(&mut self, leaf: u64, hashes: Vec<Hash>) {
        let first = tlog_tiles::stored_hash_index(0, leaf);
        for (j, h) in hashes.iter().enumerate() {
            self.hashes.insert(first + j as u64, *h);
        }
        self.leaf_hashes.push((leaf, hashes));
    }

    /// Turns the overlay into one atomic sled batch.
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            batch.insert(k, v);
        }
        for (leaf, hashes) in self.leaf_hashes {
            let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
            batch.insert(&keys::hashes_of_leaf(leaf)[..], bytes);
        }
        batch
    }
}

impl HashReader for Overlay<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                if let Some(h) = self.hashes.get(&i) {
                    return Ok(*h);
                }
                read_stored_hash(self.tree, i)
            })
            .collect()
    }
}

/// Hashes held in memory by stored-hash index (used by the offline verifier).
pub(crate) struct MemoryHashes(pub Vec<Hash>);

impl HashReader for MemoryHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_hash_maps_back_to_the_leaf_that_created_it() {
        for n in 0..4096u64 {
            let created = (n + 1).trailing_zeros() as u64 + 1; // levels 0..=trailing_ones(n)
            let first = tlog_tiles::stored_hash_index(0, n);
            for j in 0..created {
                assert_eq!(
                    hash_location(first + j),
                    (n, j as usize),
                    "leaf {n}, hash {j}"
                );
            }
            assert_eq!(tlog_tiles::stored_hash_index(0, n + 1), first + created);
        }
    }
}
