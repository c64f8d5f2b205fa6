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
//! | `l` + u64 first leaf    | a [leaf group]: consecutive Merkle leaves     |
//! | `h` + u64 first leaf    | the stored hashes appending those leaves made |
//! | `E` + u64 first leaf    | an [`EventRun`]: the tags of those leaves' event ids (the dedupe index) |
//! | `M` + u64 first leaf    | [`TaggedLeaves`]: the leaves of a batch's dataset versions, each with its manifest's tag |
//! | `k` + key id            | [`KeyRecord`] JSON                            |
//! | `n` + subject           | [`EntityRecord`] JSON                         |
//! | `c` + u64 tree size     | signed checkpoint note for that size          |
//! | `r` + u64 rejection idx | `RejectedSubmission` protobuf                 |
//!
//! # Leaf and hash groups
//!
//! A batch's leaves are stored a few to a value rather than one per key:
//! sled's cost is per key written (each insert links a delta to a page, and
//! sequential keys split a page every eight), so grouping takes most of the
//! ledger's inserts away. A leaf group under `l` + its first leaf index holds
//! consecutive leaves as a C2SP tlog-tiles entry bundle (each entry a
//! big-endian uint16 length, then the entry), after a byte saying how it is
//! kept: 1 compressed with zstd (RFC 8878, with its content checksum), 0 as
//! it is (when compressing would not make it smaller); a group of
//! hashes under `h` + its first leaf holds the stored hashes those leaves
//! created, in stored-hash order. A group never crosses a 256-leaf tile and
//! never spans two batches, so a group is written once and never rewritten.
//! A reader finds the group holding leaf `n` as the last key at or before
//! `l` + `n`.
//!
//! Ledgers written before groups hold one leaf per `l` key (its bytes, which
//! open with a protobuf field tag, 8 or more, never 0 or 1) and
//! one leaf's hashes per `h` key: each is a group of one, read the same way,
//! so those ledgers need no upgrade and go on growing in groups.
//!
//! [leaf group]: LeafGroup

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sled::IVec;
use tlog_tiles::{Hash, HashReader, HASH_SIZE};

use crate::event_index::{self, BatchTags, EventRun, TagIndex, TaggedLeaves};
use crate::tiles::TILE_WIDTH;
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

    pub(super) fn indexed(prefix: u8, i: u64) -> [u8; 9] {
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

    /// The leaf group whose first leaf is `i`.
    pub fn leaf(i: u64) -> [u8; 9] {
        indexed(b'l', i)
    }
    /// The hash group whose first leaf is `n` (see [`super::hash_location`]).
    pub fn hashes_of_leaf(n: u64) -> [u8; 9] {
        indexed(b'h', n)
    }
    /// Prefix of all leaf groups.
    pub const LEAVES: u8 = b'l';
    /// Prefix of all hash groups.
    pub const HASHES: u8 = b'h';
    /// Checkpoint for tree size `n`.
    pub fn checkpoint(n: u64) -> [u8; 9] {
        indexed(b'c', n)
    }
    /// Rejection `i`.
    pub fn rejected(i: u64) -> [u8; 9] {
        indexed(b'r', i)
    }
    /// Dedupe entry for an event id, as ledgers kept them before
    /// [`crate::event_index::EventRun`]s (opening one turns them into runs).
    pub fn event(id: &str) -> Vec<u8> {
        named(b'e', id)
    }
    /// The dedupe run whose first leaf is `first`.
    pub fn event_run(first: u64) -> [u8; 9] {
        indexed(EVENT_RUNS, first)
    }
    /// Prefix of all dedupe runs.
    pub const EVENT_RUNS: u8 = b'E';
    /// The manifest run written by the batch whose first version is leaf `first`.
    pub fn manifest_run(first: u64) -> [u8; 9] {
        indexed(MANIFEST_RUNS, first)
    }
    /// Prefix of all manifest runs.
    pub const MANIFEST_RUNS: u8 = b'M';
    /// Key registry entry.
    pub fn key(key_id: &str) -> Vec<u8> {
        named(b'k', key_id)
    }
    /// Entity state for a subject.
    pub fn entity(subject: &str) -> Vec<u8> {
        named(b'n', subject)
    }
    /// The dataset version that published a manifest digest within a
    /// dataset, as ledgers kept it before manifest runs (opening one turns
    /// these into a run).
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
/// among that leaf's hashes. Appending leaf n stores, from stored-hash index
/// `stored_hash_index(0, n)` on, the hashes of levels 0..=trailing_ones(n)
/// (tlog `stored_hashes`), so the hash of (level L, node k) was created by leaf
/// `(k + 1) * 2^L - 1` at position L.
pub fn hash_location(stored_index: u64) -> (u64, usize) {
    let (level, node) = tlog_tiles::split_stored_hash_index(stored_index);
    (((node + 1) << level) - 1, usize::from(level))
}

/// A leaf group is closed before its entry bundle would pass this many bytes
/// (a leaf larger than that is a group of its own). Compressed, a group of
/// envelopes keeps about a third of that, so a sled page of sixteen groups
/// stays well under the size sled writes as a separate blob file.
pub const LEAF_GROUP_BYTES: usize = 16 * 1024;

/// The zstd level leaf groups are compressed at (on groups of envelopes,
/// levels 1 and 3 both keep 36% of the bytes; 3 is no slower).
const LEAF_GROUP_ZSTD_LEVEL: i32 = 3;

/// How a leaf group's entry bundle is kept (its value's first byte).
const KEPT_AS_IS: u8 = 0;
const KEPT_COMPRESSED: u8 = 1;

/// Leaves per hash group at most (about 4 KiB of hashes).
pub const HASH_GROUP_LEAVES: usize = 64;

/// The group, among the keys of `prefix`, holding leaf `n`: the last key at
/// or before `prefix` + `n`, as (its first leaf, its value).
fn group_at(tree: &sled::Tree, prefix: u8, n: u64) -> Result<Option<(u64, IVec)>, sled::Error> {
    let Some((k, v)) = tree
        .range(..=keys::indexed(prefix, n))
        .next_back()
        .transpose()?
    else {
        return Ok(None);
    };
    Ok(group_first(&k, prefix).map(|first| (first, v)))
}

/// The first leaf of the group stored under `key`, if it is a key of `prefix`.
fn group_first(key: &[u8], prefix: u8) -> Option<u64> {
    match key.split_first() {
        Some((&p, index)) if p == prefix => index.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// Reads one stored hash from the hash group holding its leaf.
pub(crate) fn read_stored_hash(
    tree: &sled::Tree,
    stored_index: u64,
) -> Result<Hash, tlog_tiles::Error> {
    let (leaf, _) = hash_location(stored_index);
    match group_at(tree, keys::HASHES, leaf) {
        Ok(Some((first, v))) => {
            // Hashes of consecutive leaves are consecutive stored indexes.
            let at = (stored_index - tlog_tiles::stored_hash_index(0, first)) as usize;
            v.get(at * HASH_SIZE..(at + 1) * HASH_SIZE)
                .ok_or(tlog_tiles::Error::IndexesNotInTree)
                .and_then(hash_value)
        }
        _ => Err(tlog_tiles::Error::IndexesNotInTree),
    }
}

/// Consecutive leaves stored under one key (see the module docs), decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafGroup {
    /// Index of the group's first leaf.
    pub first: u64,
    /// The leaves, each its canonical envelope bytes.
    pub leaves: Vec<Vec<u8>>,
}

impl LeafGroup {
    /// Encodes leaves as one group value: the C2SP tlog-tiles entry bundle
    /// ("Log entries": big-endian uint16 length, then the entry) of the
    /// leaves, compressed unless that would not make it smaller. Leaves are
    /// at most `clew_events::MAX_LEAF_BYTES`.
    pub fn encode<'l>(leaves: impl IntoIterator<Item = &'l [u8]>) -> Vec<u8> {
        let mut bundle = Vec::new();
        for leaf in leaves {
            bundle.extend_from_slice(&(leaf.len() as u16).to_be_bytes());
            bundle.extend_from_slice(leaf);
        }
        let compressed = crate::frames::compressed(&bundle, LEAF_GROUP_ZSTD_LEVEL, true);
        let (kept, body) = match &compressed {
            Some(c) => (KEPT_COMPRESSED, &c[..]),
            None => (KEPT_AS_IS, &bundle[..]),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(kept);
        out.extend_from_slice(body);
        out
    }

    /// Decodes the group stored under `l` + `first`; a value that does not
    /// decode is named.
    pub fn decode(first: u64, value: &[u8]) -> Result<Self, LedgerError> {
        let damaged =
            |what: String| LedgerError::Corrupt(format!("the leaf group at leaf {first}: {what}"));
        let bundle = match value.split_first() {
            None => return Err(damaged("empty".into())),
            Some((&KEPT_AS_IS, rest)) => std::borrow::Cow::Borrowed(rest),
            Some((&KEPT_COMPRESSED, rest)) => {
                // No group is larger than this, whatever its frame claims.
                let bound = LEAF_GROUP_BYTES.max(2 + clew_events::MAX_LEAF_BYTES);
                std::borrow::Cow::Owned(crate::frames::decompressed(rest, bound).map_err(damaged)?)
            }
            // A group of one, as ledgers before groups stored every leaf (an
            // envelope's protobuf encoding opens with a field tag, 8 or more).
            Some(_) => {
                return Ok(Self {
                    first,
                    leaves: vec![value.to_vec()],
                })
            }
        };
        let mut leaves = Vec::new();
        let mut at = 0;
        while at < bundle.len() {
            let len = bundle
                .get(at..at + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or_else(|| damaged("a length is cut short".into()))?;
            let entry = bundle
                .get(at + 2..at + 2 + len)
                .filter(|e| !e.is_empty())
                .ok_or_else(|| damaged("an entry is cut short or empty".into()))?;
            leaves.push(entry.to_vec());
            at += 2 + len;
        }
        if leaves.is_empty() {
            return Err(damaged("holds no leaf".into()));
        }
        Ok(Self { first, leaves })
    }

    /// One past the group's last leaf.
    pub fn end(&self) -> u64 {
        self.first + self.leaves.len() as u64
    }

    /// Leaf `n`, if this group holds it.
    pub fn into_leaf(self, n: u64) -> Option<Vec<u8>> {
        let at = usize::try_from(n.checked_sub(self.first)?).ok()?;
        self.leaves.into_iter().nth(at)
    }
}

/// Where a stored hash is kept: the key of its hash group and its bytes
/// within the group's value (for tools and tests that inspect the store).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAt {
    /// The group's key.
    pub key: [u8; 9],
    /// The byte range within the group's value.
    pub bytes: std::ops::Range<usize>,
}

/// The key of the leaf group holding leaf `n`, if one does.
pub fn locate_leaf(tree: &sled::Tree, n: u64) -> Result<Option<[u8; 9]>, LedgerError> {
    Ok(match group_at(tree, keys::LEAVES, n)? {
        Some((first, v)) if LeafGroup::decode(first, &v)?.end() > n => Some(keys::leaf(first)),
        _ => None,
    })
}

/// Where the stored hash `stored_index` is stored.
pub fn locate_stored_hash(
    tree: &sled::Tree,
    stored_index: u64,
) -> Result<Option<StoredAt>, LedgerError> {
    let (leaf, _) = hash_location(stored_index);
    Ok(group_at(tree, keys::HASHES, leaf)?.map(|(first, _)| {
        let at = (stored_index - tlog_tiles::stored_hash_index(0, first)) as usize * HASH_SIZE;
        StoredAt {
            key: keys::hashes_of_leaf(first),
            bytes: at..at + HASH_SIZE,
        }
    }))
}

/// Leaf `n`'s bytes, or None when no group holds it.
pub(crate) fn read_leaf(tree: &sled::Tree, n: u64) -> Result<Option<Vec<u8>>, LedgerError> {
    match group_at(tree, keys::LEAVES, n)? {
        Some((first, v)) => Ok(LeafGroup::decode(first, &v)?.into_leaf(n)),
        None => Ok(None),
    }
}

/// Leaves `start..end` in order, read by one range scan over their groups.
/// A leaf that no group holds, or held by two, is named as the error's index.
pub(crate) fn read_leaves(
    tree: &sled::Tree,
    start: u64,
    end: u64,
) -> Result<Vec<Vec<u8>>, (u64, LedgerError)> {
    let missing = |i: u64| (i, LedgerError::Corrupt(format!("leaf {i} is missing")));
    let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
    if start >= end {
        return Ok(out);
    }
    let first = match group_at(tree, keys::LEAVES, start) {
        Ok(Some((first, _))) => first,
        Ok(None) => return Err(missing(start)),
        Err(e) => return Err((start, e.into())),
    };
    let mut next = start;
    for item in tree.range(keys::leaf(first)..keys::leaf(end)) {
        let (k, v) = item.map_err(|e| (next, e.into()))?;
        let group_first = group_first(&k, keys::LEAVES)
            .ok_or_else(|| (next, LedgerError::Corrupt("a leaf group key".into())))?;
        if group_first > next {
            return Err(missing(next));
        }
        let group = LeafGroup::decode(group_first, &v).map_err(|e| (next, e))?;
        for (i, leaf) in (group_first..).zip(group.leaves) {
            if i < next {
                // Only the group the range starts in may hold leaves before `start`.
                if next > start {
                    return Err((i, LedgerError::Corrupt(format!("leaf {i} is stored twice"))));
                }
                continue;
            }
            if i >= end {
                break;
            }
            out.push(leaf);
            next = i + 1;
        }
    }
    if next < end {
        return Err(missing(next));
    }
    Ok(out)
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

/// The leaves under tag `t`: those `index` holds, then those of this
/// batch's (leaf, tag) pairs `here`.
fn tagged<'s>(
    index: Option<&'s TagIndex>,
    here: &'s BatchTags,
    t: u64,
) -> impl Iterator<Item = u64> + 's {
    let stored = index.into_iter().flat_map(move |i| i.leaves(t));
    stored.chain(here.leaves(t))
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

/// Lowest tree level whose hashes [`ProofHashes`] keeps in memory. Levels
/// 4 and up are 1/16 of all stored hashes (about 4 MB per million leaves) but
/// 80% of the hashes an inclusion proof at a million leaves needs.
pub(crate) const CACHED_FROM_LEVEL: u8 = 4;

/// How many of the lower levels' most recently appended stored hashes
/// [`ProofHashes`] keeps (32 bytes each: 256 KiB): those of the last ~4,000
/// leaves, which hold every lower-level hash a receipt's inclusion proof for
/// a leaf just appended needs.
pub(crate) const RECENT_LOWER_HASHES: usize = 8192;

/// The stored hashes inclusion proofs read most, in memory: the upper
/// levels of the tree (filled at append time and lazily on read), and the
/// lower levels' hashes of the leaves appended last — so a receipt's proof
/// for a leaf just appended touches sled not at all, and an older leaf's
/// only for its lowest few hashes.
#[derive(Default)]
pub(crate) struct ProofHashes {
    upper: std::sync::RwLock<HashMap<u64, Hash>>,
    /// Lower-level hashes by stored-hash index, the newest kept.
    recent: std::sync::RwLock<std::collections::BTreeMap<u64, Hash>>,
}

impl ProofHashes {
    /// Hashes just appended to the tree: upper levels kept, lower levels
    /// kept among the most recent.
    pub fn appended(&self, hashes: impl Iterator<Item = (u64, Hash)>) {
        let (Ok(mut upper), Ok(mut recent)) = (self.upper.write(), self.recent.write()) else {
            return;
        };
        for (i, h) in hashes {
            if is_upper(i) {
                upper.insert(i, h);
            } else {
                recent.insert(i, h);
            }
        }
        while recent.len() > RECENT_LOWER_HASHES {
            recent.pop_first();
        }
    }

    /// A hash read from sled, kept when it is of an upper level.
    pub fn read(&self, i: u64, h: Hash) {
        if is_upper(i) {
            if let Ok(mut upper) = self.upper.write() {
                upper.insert(i, h);
            }
        }
    }

    fn get(&self, i: u64) -> Option<Hash> {
        if is_upper(i) {
            self.upper.read().ok()?.get(&i).copied()
        } else {
            self.recent.read().ok()?.get(&i).copied()
        }
    }
}

/// Whether stored hash `i` is of a level [`ProofHashes`] keeps whole.
fn is_upper(i: u64) -> bool {
    tlog_tiles::split_stored_hash_index(i).0 >= CACHED_FROM_LEVEL
}

/// Reads stored hashes from sled through [`ProofHashes`].
pub(crate) struct CachedHashes<'a> {
    pub tree: &'a sled::Tree,
    pub cache: &'a ProofHashes,
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
                self.cache.read(i, h);
                Ok(h)
            })
            .collect()
    }
}

/// The writes of one batch in progress, read through before sled.
pub(crate) struct Overlay<'a> {
    pub tree: &'a sled::Tree,
    pub writes: hashbrown::HashMap<Vec<u8>, Vec<u8>>,
    /// Hashes appended in this batch, by stored-hash index.
    pub hashes: hashbrown::HashMap<u64, Hash>,
    /// The same hashes by the leaf that created them, in leaf order.
    leaf_hashes: Vec<(u64, Vec<Hash>)>,
    /// Leaves appended in this batch, in order.
    leaves: Vec<(u64, Vec<u8>)>,
    /// The ledger's dedupe index as of the last batch, when checking for
    /// duplicates.
    event_index: Option<&'a TagIndex>,
    /// Leaves indexed in this batch, each with its event id's tag.
    indexed: BatchTags,
    /// The ledger's manifest index as of the last batch.
    manifest_index: Option<&'a TagIndex>,
    /// Dataset versions published in this batch, each with its manifest's tag.
    manifests: BatchTags,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self::for_events(tree, 0)
    }

    /// An overlay sized for a batch of `events`, so its tables do not grow
    /// while the batch is decided (each event writes its entity record and
    /// about two stored hashes): growing them rehashed their entries and
    /// faulted in fresh pages, 7% of the committing thread in a profile.
    pub fn for_events(tree: &'a sled::Tree, events: usize) -> Self {
        Self {
            tree,
            writes: hashbrown::HashMap::with_capacity(2 * events),
            hashes: hashbrown::HashMap::with_capacity(2 * events + 64),
            leaf_hashes: Vec::with_capacity(events),
            leaves: Vec::with_capacity(events),
            event_index: None,
            indexed: BatchTags::default(),
            manifest_index: None,
            manifests: BatchTags::default(),
        }
    }

    /// The overlay over a ledger whose manifest index is `index`.
    pub fn with_manifest_index(mut self, index: &'a TagIndex) -> Self {
        self.manifest_index = Some(index);
        self
    }

    /// The dataset version (`dataset@version`) that published `digest`
    /// within `dataset_id`, if one did (stored or in this batch): a leaf
    /// under the manifest's tag whose version has that very dataset and
    /// digest.
    pub fn manifest_version(
        &self,
        dataset_id: &str,
        digest: &str,
    ) -> Result<Option<String>, LedgerError> {
        let t = event_index::manifest_tag(dataset_id, digest);
        for leaf in tagged(self.manifest_index, &self.manifests, t) {
            if let clew_events::proto::event::Body::DatasetVersionPublished(v) =
                self.opened_leaf(leaf)?.body()
            {
                if v.dataset_id == dataset_id && v.manifest_digest == digest {
                    return Ok(Some(format!("{}@{}", v.dataset_id, v.version)));
                }
            }
        }
        Ok(None)
    }

    /// Indexes the dataset version at leaf `leaf` as publishing `digest`
    /// within `dataset_id`.
    pub fn index_manifest(&mut self, dataset_id: &str, digest: &str, leaf: u64) {
        self.manifests
            .push(leaf, event_index::manifest_tag(dataset_id, digest));
    }

    /// The dataset versions indexed in this batch, each with its tag.
    pub fn indexed_manifests(&self) -> Vec<(u64, u64)> {
        self.manifests.pairs().to_vec()
    }

    /// The overlay over a ledger whose dedupe index is `index`.
    pub fn with_event_index(mut self, index: &'a TagIndex) -> Self {
        self.event_index = Some(index);
        self
    }

    /// The leaf holding `event_id`, if one does (stored or in this batch):
    /// a leaf under the id's tag whose event has that very id.
    pub fn event_leaf(&self, event_id: &str) -> Result<Option<u64>, LedgerError> {
        let t = event_index::tag(event_id);
        for leaf in tagged(self.event_index, &self.indexed, t) {
            if self.event_id_of(leaf)? == event_id {
                return Ok(Some(leaf));
            }
        }
        Ok(None)
    }

    /// Indexes `event_id` as leaf `leaf` (the next after the last one indexed).
    pub fn index_event(&mut self, event_id: &str, leaf: u64) {
        self.indexed.push(leaf, event_index::tag(event_id));
    }

    /// The leaves indexed in this batch, each with its tag.
    pub fn indexed_events(&self) -> Vec<(u64, u64)> {
        self.indexed.pairs().to_vec()
    }

    /// The event id leaf `leaf` holds (appended in this batch or stored).
    pub fn event_id_of(&self, leaf: u64) -> Result<String, LedgerError> {
        Ok(self.opened_leaf(leaf)?.event.event_id)
    }

    /// Leaf `leaf` (appended in this batch or stored), opened.
    fn opened_leaf(&self, leaf: u64) -> Result<clew_events::OpenedEnvelope, LedgerError> {
        let stored;
        let bytes = match self.leaves.binary_search_by_key(&leaf, |(i, _)| *i) {
            Ok(at) => &self.leaves[at].1,
            Err(_) => {
                stored = read_leaf(self.tree, leaf)?.ok_or_else(|| {
                    LedgerError::Corrupt(format!("an index names leaf {leaf}, which is missing"))
                })?;
                &stored
            }
        };
        clew_events::open(bytes).map_err(|e| LedgerError::Corrupt(format!("leaf {leaf}: {e}")))
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), value.into());
    }

    pub fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, LedgerError> {
        // Parsed where the bytes are (this batch's writes or sled's own
        // buffer): entity records are read several times an event.
        let parse = |v: &[u8]| {
            serde_json::from_slice(v).map_err(|e| {
                LedgerError::Corrupt(format!("record {:?}: {e}", String::from_utf8_lossy(key)))
            })
        };
        if let Some(v) = self.writes.get(key) {
            return parse(v).map(Some);
        }
        match self.tree.get(key)? {
            Some(v) => parse(&v).map(Some),
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

    /// Appends leaf `index` (the next after the last one put).
    pub fn put_leaf(&mut self, index: u64, canonical: Vec<u8>) {
        self.leaves.push((index, canonical));
    }

    /// Turns the overlay into one atomic sled batch, the leaves and their
    /// hashes in groups (see the module docs).
    /// No group crosses a tile's edge (C2SP tlog-tiles: 256 leaves).
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            batch.insert(k, v);
        }
        // One dedupe run per stretch of consecutive leaves (a batch's are).
        for run in EventRun::of_leaves(self.indexed.pairs()) {
            batch.insert(&keys::event_run(run.first)[..], run.encode());
        }
        if let Some(&(first, _)) = self.manifests.pairs().first() {
            batch.insert(
                &keys::manifest_run(first)[..],
                TaggedLeaves::encode_pairs(self.manifests.pairs()),
            );
        }
        let mut group: Vec<&[u8]> = Vec::new();
        let mut group_first = 0;
        let mut group_bytes = 0;
        for (i, leaf) in &self.leaves {
            let new_tile = i % TILE_WIDTH == 0;
            if !group.is_empty() && (new_tile || group_bytes + 2 + leaf.len() > LEAF_GROUP_BYTES) {
                batch.insert(
                    &keys::leaf(group_first)[..],
                    LeafGroup::encode(group.drain(..)),
                );
                group_bytes = 0;
            }
            if group.is_empty() {
                group_first = *i;
            }
            group.push(leaf);
            group_bytes += 2 + leaf.len();
        }
        if !group.is_empty() {
            batch.insert(&keys::leaf(group_first)[..], LeafGroup::encode(group));
        }
        let mut hashes: Vec<u8> = Vec::new();
        let mut group_first = None;
        let mut group_leaves = 0;
        for (leaf, created) in &self.leaf_hashes {
            let close = *leaf % TILE_WIDTH == 0 || group_leaves == HASH_GROUP_LEAVES;
            if let (Some(first), true) = (group_first, close) {
                batch.insert(
                    &keys::hashes_of_leaf(first)[..],
                    std::mem::take(&mut hashes),
                );
                group_first = None;
                group_leaves = 0;
            }
            group_first.get_or_insert(*leaf);
            hashes.extend(created.iter().flat_map(|h| h.0));
            group_leaves += 1;
        }
        if let Some(first) = group_first {
            batch.insert(&keys::hashes_of_leaf(first)[..], hashes);
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
    use tlog_tiles::{record_hash, stored_hashes_for_record_hash};

    fn temporary_tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("ledger").unwrap()
    }

    /// Leaf `i` of the tests: 1 to 1,000 bytes, every 97th 20,000 (a group of
    /// its own); opening, as an envelope's protobuf encoding does, with a byte
    /// of 8 or more.
    fn test_leaf(i: u64) -> Vec<u8> {
        let len = if i % 97 == 96 {
            20_000
        } else {
            1 + (i * 997 % 1000) as usize
        };
        (0..len)
            .map(|j| 8 + ((i as usize + j) % 240) as u8)
            .collect()
    }

    /// Appends leaves `range` as one batch, hashes and all, like the sequencer.
    fn append(tree: &sled::Tree, range: std::ops::Range<u64>) -> Vec<Hash> {
        let mut ov = Overlay::new(tree);
        let mut all = Vec::new();
        for i in range {
            let leaf = test_leaf(i);
            let hashes = stored_hashes_for_record_hash(i, record_hash(&leaf), &ov).unwrap();
            all.extend(hashes.iter().copied());
            ov.put_leaf_hashes(i, hashes);
            ov.put_leaf(i, leaf);
        }
        tree.apply_batch(ov.into_batch()).unwrap();
        all
    }

    fn group_starts(tree: &sled::Tree, prefix: u8) -> Vec<u64> {
        tree.scan_prefix([prefix])
            .map(|kv| u64::from_be_bytes(kv.unwrap().0[1..].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn leaves_and_hashes_are_read_back_from_their_groups() {
        let tree = temporary_tree();
        let mut expected = Vec::new();
        // Batches of 1, of 300 (crossing a tile), of 7 and of 700.
        for range in [0..1, 1..301, 301..308, 308..1008] {
            expected.extend(append(&tree, range));
        }
        for i in 0..1008 {
            assert_eq!(read_leaf(&tree, i).unwrap(), Some(test_leaf(i)), "leaf {i}");
        }
        assert_eq!(read_leaf(&tree, 1008).unwrap(), None);
        for (start, end) in [(0, 1008), (5, 6), (255, 257), (300, 309), (1000, 1008)] {
            let want: Vec<_> = (start..end).map(test_leaf).collect();
            assert_eq!(
                read_leaves(&tree, start, end).unwrap(),
                want,
                "{start}..{end}"
            );
        }
        assert_eq!(read_leaves(&tree, 1000, 1009).unwrap_err().0, 1008);
        for (i, h) in expected.iter().enumerate() {
            assert_eq!(read_stored_hash(&tree, i as u64).unwrap(), *h, "hash {i}");
        }

        // Groups start with each batch and each tile, and stay small.
        let leaf_groups = group_starts(&tree, keys::LEAVES);
        let hash_groups = group_starts(&tree, keys::HASHES);
        for start in [0, 1, 256, 301, 308, 512, 768] {
            assert!(
                leaf_groups.contains(&start),
                "a leaf group starts at {start}"
            );
            assert!(
                hash_groups.contains(&start),
                "a hash group starts at {start}"
            );
        }
        for pair in leaf_groups.windows(2) {
            assert_eq!(
                pair[0] / 256,
                (pair[1] - 1) / 256,
                "groups {pair:?} cross a tile"
            );
            let bytes = tree.get(keys::leaf(pair[0])).unwrap().unwrap().len();
            assert!(
                bytes <= LEAF_GROUP_BYTES + 1 || pair[1] - pair[0] == 1,
                "group {} holds {bytes} bytes",
                pair[0]
            );
        }
        assert!(
            leaf_groups.len() < 1008 / 5,
            "{} leaf groups",
            leaf_groups.len()
        );
        assert!(hash_groups
            .windows(2)
            .all(|p| p[1] - p[0] <= HASH_GROUP_LEAVES as u64));
        assert!(
            hash_groups.len() <= 1008 / 32,
            "{} hash groups",
            hash_groups.len()
        );
    }

    #[test]
    fn a_ledger_stored_a_leaf_per_key_is_read_as_groups_of_one_and_grows_in_groups() {
        let tree = temporary_tree();
        // As ledgers before groups stored them: each leaf and its hashes under its own key.
        let mut expected = Vec::new();
        for i in 0..40 {
            let leaf = test_leaf(i);
            let hashes =
                stored_hashes_for_record_hash(i, record_hash(&leaf), &StoredHashes(&tree)).unwrap();
            expected.extend(hashes.iter().copied());
            let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
            tree.insert(keys::leaf(i), leaf).unwrap();
            tree.insert(keys::hashes_of_leaf(i), bytes).unwrap();
        }
        expected.extend(append(&tree, 40..100));
        assert_eq!(
            read_leaves(&tree, 0, 100).unwrap(),
            (0..100).map(test_leaf).collect::<Vec<_>>()
        );
        assert_eq!(read_leaf(&tree, 39).unwrap(), Some(test_leaf(39)));
        for (i, h) in expected.iter().enumerate() {
            assert_eq!(read_stored_hash(&tree, i as u64).unwrap(), *h, "hash {i}");
        }
        assert!(group_starts(&tree, keys::LEAVES).len() < 40 + 60 / 5);
    }

    #[test]
    fn a_damaged_or_doubled_leaf_group_is_named() {
        let tree = temporary_tree();
        append(&tree, 0..20);
        let key = locate_leaf(&tree, 3).unwrap().unwrap();
        let first = u64::from_be_bytes(key[1..].try_into().unwrap());
        let group = LeafGroup::decode(first, &tree.get(key).unwrap().unwrap()).unwrap();
        assert_eq!(group.into_leaf(3), Some(test_leaf(3)));

        // A leaf written again under its own key, inside a group that holds it.
        let inside = (1..20)
            .find(|&i| locate_leaf(&tree, i).unwrap().unwrap() != keys::leaf(i))
            .unwrap();
        tree.insert(keys::leaf(inside), test_leaf(inside)).unwrap();
        let (at, e) = read_leaves(&tree, 0, 20).unwrap_err();
        assert!(e.to_string().contains("stored twice"), "{e}");
        assert_eq!(at, inside);
        tree.remove(keys::leaf(inside)).unwrap();
        assert_eq!(read_leaves(&tree, 0, 20).unwrap().len(), 20);

        // A compressed group with one byte changed, and one cut short.
        let good = tree.get(key).unwrap().unwrap().to_vec();
        assert_eq!(good[0], KEPT_COMPRESSED);
        for cut in [false, true] {
            let mut value = good.clone();
            if cut {
                value.truncate(value.len() - 1);
            } else {
                let middle = value.len() / 2;
                value[middle] ^= 0x01;
            }
            tree.insert(key, value).unwrap();
            let e = read_leaf(&tree, 3).unwrap_err().to_string();
            assert!(
                e.contains(&format!("the leaf group at leaf {first}")),
                "{e}"
            );
            let (at, _) = read_leaves(&tree, 0, 20).unwrap_err();
            assert!(at <= 3, "{at}");
        }
    }

    #[test]
    fn a_group_is_kept_as_it_is_when_compressing_would_not_shrink_it() {
        // Bytes that do not compress (hashes).
        let leaves: Vec<Vec<u8>> = (0..8u8)
            .map(|i| (0..64u8).flat_map(|j| record_hash(&[i, j]).0).collect())
            .collect();
        let value = LeafGroup::encode(leaves.iter().map(Vec::as_slice));
        assert_eq!(value[0], KEPT_AS_IS);
        assert_eq!(LeafGroup::decode(9, &value).unwrap().leaves, leaves);
        let text: Vec<Vec<u8>> = (0..8).map(test_leaf).collect();
        let value = LeafGroup::encode(text.iter().map(Vec::as_slice));
        assert_eq!(value[0], KEPT_COMPRESSED);
        assert_eq!(LeafGroup::decode(9, &value).unwrap().leaves, text);
    }

    #[test]
    fn a_receipts_proof_for_a_leaf_just_appended_is_answered_from_memory() {
        // 10,000 leaves appended in batches of 100, as the sequencer does.
        let mut all = MemoryHashes(Vec::new());
        let cache = ProofHashes::default();
        for batch in 0..100u64 {
            let first = all.0.len() as u64;
            for n in batch * 100..(batch + 1) * 100 {
                let h = record_hash(&n.to_be_bytes());
                let new = stored_hashes_for_record_hash(n, h, &all).unwrap();
                all.0.extend(new);
            }
            let appended = (first..all.0.len() as u64).map(|i| (i, all.0[i as usize]));
            cache.appended(appended);
        }
        // No sled behind it: any hash not kept is an error.
        let empty = temporary_tree();
        let reader = CachedHashes {
            tree: &empty,
            cache: &cache,
        };
        for n in [9_999, 9_950, 9_000, 8_000] {
            assert_eq!(
                tlog_tiles::prove_record(10_000, n, &reader).unwrap(),
                tlog_tiles::prove_record(10_000, n, &all).unwrap(),
                "leaf {n}"
            );
        }
        // Bounded: the oldest lower-level hashes are gone (leaf 0's), the
        // upper levels all kept.
        assert!(tlog_tiles::prove_record(10_000, 0, &reader).is_err());
        assert_eq!(cache.recent.read().unwrap().len(), RECENT_LOWER_HASHES);
        for (i, h) in all.0.iter().enumerate() {
            if is_upper(i as u64) {
                assert_eq!(cache.get(i as u64), Some(*h), "upper hash {i}");
            }
        }
    }

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
