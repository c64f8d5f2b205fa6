//! The dedupe index: which leaf holds each event id.
//!
//! Each batch's accepted leaves are consecutive, so the index is kept as one
//! write-once sled value per batch, an [`EventRun`]: under `E` + its first
//! leaf, the 8-byte tag of each leaf's event id in leaf order. The tag is
//! the first 8 bytes of the SHA-256 of the id. The ledger holds every tag in
//! memory ([`TagIndex`], read from the runs when it opens: 8 bytes a leaf
//! on disk, 16 in memory), so the dedupe check reads nothing from
//! sled unless a tag matches, and then it reads the leaf and compares ids,
//! so two ids sharing a tag (about once in 2^64 pairs) never refuse an
//! event wrongly.
//!
//! Kept one sled key an event (`e` + event id → leaf), as ledgers did
//! before runs, a million entries took about 245 MB on disk for 45 MB of
//! keys and values (sled's pages split every sixteen keys, and each page's
//! rewrites leave garbage behind); a run is written once and never
//! rewritten. A ledger that still holds `e` keys has them turned into runs,
//! in one sled batch, when it is opened.
//!
//! The manifest index (which dataset version published a manifest digest
//! within a dataset, so the same content is refused as a second version) is
//! kept the same way: each batch that publishes versions writes one value
//! under `M` + its first leaf, a [`TaggedLeaves`] of (tag of dataset id and
//! digest, the version's leaf) pairs, and the ledger holds them in a second
//! [`TagIndex`]. Kept one key a version (`m` + dataset id + digest), the
//! random digests spread each batch's inserts over the whole key range:
//! at 1M events (100,000 versions) they took about 90 B an event on disk.

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use crate::store::{keys, u64_value};
use crate::LedgerError;

/// The tag of an event id: the first 8 bytes of its SHA-256.
pub fn tag(event_id: &str) -> u64 {
    let d = Sha256::digest(event_id.as_bytes());
    let mut t = [0u8; 8];
    t.copy_from_slice(&d[..8]);
    u64::from_be_bytes(t)
}

/// The tags of consecutive leaves, as one batch stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRun {
    /// The run's first leaf.
    pub first: u64,
    /// The tag of each leaf's event id, in leaf order.
    pub tags: Vec<u64>,
}

impl EventRun {
    /// The run as stored under `E` + its first leaf.
    pub fn encode(&self) -> Vec<u8> {
        self.tags.iter().flat_map(|t| t.to_be_bytes()).collect()
    }

    /// The run stored under `key`; a value that is not whole tags is named.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, LedgerError> {
        let first = key
            .get(1..)
            .and_then(|k| <[u8; 8]>::try_from(k).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| LedgerError::Corrupt("a dedupe run's key".into()))?;
        if !value.len().is_multiple_of(8) {
            return Err(LedgerError::Corrupt(format!(
                "the dedupe run at leaf {first} holds {} bytes, not whole 8-byte tags",
                value.len()
            )));
        }
        let tags = value
            .chunks_exact(8)
            .map(u64_value)
            .collect::<Result<_, _>>()?;
        Ok(Self { first, tags })
    }

    /// `(leaf, tag)` pairs in leaf order as runs: a new run at each gap
    /// between leaves, and every [`EventRun::MAX_TAGS`] leaves.
    pub fn of_leaves(entries: &[(u64, u64)]) -> Vec<Self> {
        let mut runs: Vec<Self> = Vec::new();
        for (leaf, tag) in entries {
            match runs.last_mut() {
                Some(r)
                    if r.first + r.tags.len() as u64 == *leaf && r.tags.len() < Self::MAX_TAGS =>
                {
                    r.tags.push(*tag)
                }
                _ => runs.push(Self {
                    first: *leaf,
                    tags: vec![*tag],
                }),
            }
        }
        runs
    }

    /// Tags in one run at most (32 KiB).
    pub const MAX_TAGS: usize = 4096;

    /// The leaves the run covers, each with its tag.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (self.first..).zip(self.tags.iter().copied())
    }
}

/// The tag of a dataset's manifest digest.
pub fn manifest_tag(dataset_id: &str, digest: &str) -> u64 {
    tag(&format!("{dataset_id}\n{digest}"))
}

/// (leaf, tag) pairs, as one batch stored them under `M` + its first leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedLeaves(pub Vec<(u64, u64)>);

impl TaggedLeaves {
    /// As stored: 16 bytes a pair (leaf, tag; big-endian).
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_pairs(&self.0)
    }

    /// `pairs` as stored (see [`TaggedLeaves::encode`]), without owning them.
    pub fn encode_pairs(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|(l, t)| l.to_be_bytes().into_iter().chain(t.to_be_bytes()))
            .collect()
    }

    /// The pairs stored in `value`; a value that is not whole pairs is named.
    pub fn decode(value: &[u8]) -> Result<Self, LedgerError> {
        if !value.len().is_multiple_of(16) {
            return Err(LedgerError::Corrupt(format!(
                "a manifest run holds {} bytes, not whole 16-byte entries",
                value.len()
            )));
        }
        value
            .chunks_exact(16)
            .map(|c| Ok((u64_value(&c[..8])?, u64_value(&c[8..])?)))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Leaves by a tag of what they hold (an event id, or a dataset's
/// manifest digest): a sorted array of (tag, leaf) pairs, 16 bytes
/// a leaf, and the leaves added since it was last merged in a small hash
/// map. The map is merged into the array when it holds
/// [`TagIndex::MERGE_AT`] leaves, so memory grows by 16 bytes a leaf
/// rather than by a hash table's doublings (a merge holds the old array
/// and the new one for as long as it takes).
#[derive(Debug, Default)]
pub struct TagIndex {
    /// (tag, leaf), sorted.
    sorted: Vec<(u64, u64)>,
    /// Tag → the first leaf added under it since the last merge.
    recent: HashMap<u64, u64>,
    /// (tag, leaf) added since the last merge under a tag `recent` already
    /// held (two ids sharing a tag: almost never).
    recent_shared: Vec<(u64, u64)>,
    recent_len: usize,
}

impl TagIndex {
    /// Leaves the recent map holds before it is merged into the array.
    pub const MERGE_AT: usize = 65_536;

    /// The index of the dedupe runs stored in `tree`.
    pub fn load(tree: &sled::Tree) -> Result<Self, LedgerError> {
        let mut pairs = Vec::new();
        for item in tree.scan_prefix([keys::EVENT_RUNS]) {
            let (k, v) = item?;
            pairs.extend(EventRun::decode(&k, &v)?.entries());
        }
        Ok(Self::of_leaves(pairs))
    }

    /// The manifest index of the runs stored in `tree`.
    pub fn load_manifests(tree: &sled::Tree) -> Result<Self, LedgerError> {
        let mut pairs = Vec::new();
        for item in tree.scan_prefix([keys::MANIFEST_RUNS]) {
            pairs.extend(TaggedLeaves::decode(&item?.1)?.0);
        }
        Ok(Self::of_leaves(pairs))
    }

    /// The index of (leaf, tag) pairs.
    fn of_leaves(pairs: Vec<(u64, u64)>) -> Self {
        let mut sorted: Vec<(u64, u64)> = pairs.into_iter().map(|(l, t)| (t, l)).collect();
        sorted.sort_unstable();
        sorted.shrink_to_fit();
        Self {
            sorted,
            ..Self::default()
        }
    }

    /// Adds the (leaf, tag) pairs of a written batch.
    pub fn add(&mut self, pairs: &[(u64, u64)]) {
        for &(leaf, tag) in pairs {
            self.insert(tag, leaf);
        }
    }

    /// Adds leaf `leaf` under `tag`.
    pub fn insert(&mut self, tag: u64, leaf: u64) {
        match self.recent.entry(tag) {
            Entry::Occupied(_) => self.recent_shared.push((tag, leaf)),
            Entry::Vacant(v) => {
                v.insert(leaf);
            }
        }
        self.recent_len += 1;
        if self.recent_len >= Self::MERGE_AT {
            let mut recent: Vec<(u64, u64)> = self.recent.drain().collect();
            recent.append(&mut self.recent_shared);
            recent.sort_unstable();
            // Two sorted arrays merged in one pass.
            let mut merged = Vec::with_capacity(self.sorted.len() + recent.len());
            let (mut a, mut b) = (self.sorted.iter().peekable(), recent.iter().peekable());
            while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
                if x <= y {
                    merged.push(**x);
                    a.next();
                } else {
                    merged.push(**y);
                    b.next();
                }
            }
            merged.extend(a);
            merged.extend(b);
            self.sorted = merged;
            self.recent_len = 0;
        }
    }

    /// The leaves under `tag`.
    pub fn leaves(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        let from = first_at_or_after(&self.sorted, tag);
        let recent = self.recent.get(&tag).copied();
        let shared = match recent {
            Some(_) => &self.recent_shared[..],
            None => &[],
        };
        self.sorted[from..]
            .iter()
            .take_while(move |(t, _)| *t == tag)
            .map(|(_, l)| *l)
            .chain(recent)
            .chain(
                shared
                    .iter()
                    .filter(move |(t, _)| *t == tag)
                    .map(|(_, l)| *l),
            )
    }

    /// How many leaves the index holds.
    pub fn len(&self) -> u64 {
        (self.sorted.len() + self.recent_len) as u64
    }

    /// Whether the index holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first position in `sorted` whose tag is at least `tag`. Tags are
/// SHA-256 prefixes, spread evenly over the u64 range, so the search starts
/// where `tag` would lie in an even spread and gallops out from there: a
/// few neighbouring cache lines read instead of the ~20 scattered ones a
/// binary search over a million pairs reads (any order of tags is still
/// answered right, only more slowly).
fn first_at_or_after(sorted: &[(u64, u64)], tag: u64) -> usize {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let below = |at: usize| sorted[at].0 < tag;
    let guess = ((u128::from(tag) * n as u128) >> 64) as usize;
    let mut step = 1;
    if below(guess) {
        // Every pair before `lo` is below `tag`.
        let mut lo = guess + 1;
        loop {
            let hi = lo + step;
            if hi >= n || !below(hi) {
                let hi = hi.min(n);
                return lo + sorted[lo..hi].partition_point(|(t, _)| *t < tag);
            }
            lo = hi + 1;
            step *= 2;
        }
    } else {
        // The pair at `hi` is not below `tag`.
        let mut hi = guess;
        loop {
            if hi < step {
                return sorted[..hi].partition_point(|(t, _)| *t < tag);
            }
            let lo = hi - step;
            if below(lo) {
                return lo + 1 + sorted[lo + 1..hi].partition_point(|(t, _)| *t < tag);
            }
            hi = lo;
            step *= 2;
        }
    }
}

/// The (leaf, tag) pairs one batch adds, in leaf order, found by tag
/// without scanning them: a batch checks each of its events against those
/// before it in the same batch, which a scan made quadratic in its size.
#[derive(Debug, Default)]
pub struct BatchTags {
    pairs: Vec<(u64, u64)>,
    /// Tag → the position of the first pair holding it.
    first: HashMap<u64, usize>,
    /// Whether two pairs share a tag (then the pairs after the first are
    /// scanned for it).
    shared: bool,
}

impl BatchTags {
    /// Adds leaf `leaf` under `tag` (leaves in rising order).
    pub fn push(&mut self, leaf: u64, tag: u64) {
        match self.first.entry(tag) {
            Entry::Occupied(_) => self.shared = true,
            Entry::Vacant(v) => {
                v.insert(self.pairs.len());
            }
        }
        self.pairs.push((leaf, tag));
    }

    /// The leaves under `tag`, in leaf order.
    pub fn leaves(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        let first = self.first.get(&tag).copied();
        let rest = match first {
            Some(at) if self.shared => &self.pairs[at + 1..],
            _ => &[],
        };
        first
            .map(|at| self.pairs[at].0)
            .into_iter()
            .chain(rest.iter().filter(move |(_, t)| *t == tag).map(|(l, _)| *l))
    }

    /// The (leaf, tag) pairs, in leaf order.
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.pairs
    }
}

/// Turns the `e` keys of a ledger from before runs (one key an event) into
/// runs, in one sled batch; returns how many it turned. Leaves without an
/// `e` key start a new run after them.
pub fn upgrade_keys_to_runs(tree: &sled::Tree) -> Result<u64, LedgerError> {
    let mut entries: Vec<(u64, u64)> = Vec::new();
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([b'e']) {
        let (k, v) = item?;
        let id = std::str::from_utf8(&k[1..])
            .map_err(|_| LedgerError::Corrupt("a dedupe key is not UTF-8".into()))?;
        entries.push((crate::store::u64_value(&v)?, tag(id)));
        batch.remove(k);
    }
    if entries.is_empty() {
        return Ok(0);
    }
    entries.sort_unstable();
    for run in EventRun::of_leaves(&entries) {
        batch.insert(&keys::event_run(run.first)[..], run.encode());
    }
    tree.apply_batch(batch)?;
    Ok(entries.len() as u64)
}

/// Turns the `m` manifest keys of a ledger from before runs (one key a
/// version: dataset id, a newline and the digest → `dataset@version`) into
/// one run, in one sled batch, reading each version's leaf from its entity
/// record; returns how many it turned.
pub fn upgrade_manifest_keys_to_runs(tree: &sled::Tree) -> Result<u64, LedgerError> {
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([b'm']) {
        let (k, v) = item?;
        // Metadata shares the prefix; manifest keys alone hold a newline.
        let Some((dataset_id, digest)) = std::str::from_utf8(&k[1..])
            .ok()
            .and_then(|name| name.split_once('\n'))
        else {
            continue;
        };
        let version = String::from_utf8_lossy(&v);
        let record = tree
            .get(keys::entity(&format!("dataset-version/{version}")))?
            .ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "manifest {digest} names dataset-version/{version}, which has no record"
                ))
            })?;
        let record: crate::store::EntityRecord = serde_json::from_slice(&record)
            .map_err(|e| LedgerError::Corrupt(format!("dataset-version/{version}: {e}")))?;
        pairs.push((record.leaf, manifest_tag(dataset_id, digest)));
        batch.remove(k);
    }
    pairs.sort_unstable();
    let Some(&(first, _)) = pairs.first() else {
        return Ok(0);
    };
    let count = pairs.len() as u64;
    batch.insert(&keys::manifest_run(first)[..], TaggedLeaves(pairs).encode());
    tree.apply_batch(batch)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_read_back_and_shared_tags_keep_every_leaf() {
        let run = EventRun {
            first: 40,
            tags: vec![tag("a"), tag("b"), tag("a")],
        };
        let key = keys::event_run(40);
        assert_eq!(EventRun::decode(&key, &run.encode()).unwrap(), run);
        let err = EventRun::decode(&key, &run.encode()[..20]).unwrap_err();
        assert!(err.to_string().contains("20 bytes"), "{err}");
        let mut index = TagIndex::default();
        for (leaf, t) in run.entries() {
            index.insert(t, leaf);
        }
        assert_eq!(index.leaves(tag("a")).collect::<Vec<_>>(), vec![40, 42]);
        assert_eq!(index.leaves(tag("b")).collect::<Vec<_>>(), vec![41]);
        assert_eq!(index.leaves(tag("c")).count(), 0);
        assert_eq!(index.len(), 3);
        assert_eq!(tag("a"), tag("a"), "a tag depends on the id alone");
        let pairs = TaggedLeaves(vec![(7, manifest_tag("ds", "sha256:1")), (9, 3)]);
        assert_eq!(TaggedLeaves::decode(&pairs.encode()).unwrap(), pairs);
        let err = TaggedLeaves::decode(&pairs.encode()[..20]).unwrap_err();
        assert!(err.to_string().contains("20 bytes"), "{err}");
    }

    #[test]
    fn leaves_are_found_before_and_after_a_merge() {
        let mut index = TagIndex::default();
        let n = TagIndex::MERGE_AT as u64 + 10;
        for leaf in 0..n {
            index.insert(tag(&leaf.to_string()), leaf);
        }
        assert_eq!(index.recent_len, 10, "merged once");
        assert_eq!(index.len(), n);
        for leaf in [0, 1, 65_535, 65_536, n - 1] {
            assert_eq!(
                index.leaves(tag(&leaf.to_string())).collect::<Vec<_>>(),
                vec![leaf]
            );
        }
        index.insert(tag("0"), n);
        assert_eq!(index.leaves(tag("0")).collect::<Vec<_>>(), vec![0, n]);
    }

    #[test]
    fn the_galloping_search_finds_what_a_binary_search_finds() {
        // Evenly spread tags, as SHA-256 gives, and skewed ones (all small,
        // all large, runs of one tag), each probed at, between and beyond
        // the stored tags.
        let spread: Vec<u64> = (0..5_000u64).map(|i| tag(&i.to_string())).collect();
        let small: Vec<u64> = (0..3_000u64).map(|i| i * 3).collect();
        let large: Vec<u64> = (0..3_000u64).map(|i| u64::MAX - i * 7).collect();
        let runs: Vec<u64> = (0..3_000u64).map(|i| (i / 50) << 58).collect();
        for tags in [spread, small, large, runs, vec![], vec![42]] {
            let mut sorted: Vec<(u64, u64)> = tags
                .iter()
                .enumerate()
                .map(|(l, t)| (*t, l as u64))
                .collect();
            sorted.sort_unstable();
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
            for (t, _) in &sorted {
                probes.extend([*t, t.wrapping_add(1), t.wrapping_sub(1)]);
            }
            for p in probes {
                assert_eq!(
                    first_at_or_after(&sorted, p),
                    sorted.partition_point(|(t, _)| *t < p),
                    "probe {p} over {} pairs",
                    sorted.len()
                );
            }
        }
    }

    #[test]
    fn a_batch_finds_its_leaves_by_tag_including_two_sharing_one() {
        let mut batch = BatchTags::default();
        for leaf in 10..2_010u64 {
            batch.push(leaf, tag(&leaf.to_string()));
        }
        assert_eq!(batch.leaves(tag("500")).collect::<Vec<_>>(), vec![500]);
        assert_eq!(batch.leaves(tag("9")).count(), 0);
        batch.push(2_010, tag("500"));
        batch.push(2_011, 7);
        assert_eq!(
            batch.leaves(tag("500")).collect::<Vec<_>>(),
            vec![500, 2_010]
        );
        assert_eq!(batch.leaves(7).collect::<Vec<_>>(), vec![2_011]);
        assert_eq!(batch.pairs().len(), 2_002);
        assert_eq!(batch.pairs()[0], (10, tag("10")));
    }
}
