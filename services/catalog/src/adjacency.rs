//! The lineage graph's shape, resident in memory: every entity's subject
//! interned to a [`NodeId`], the leaf that created it, and its edges both
//! ways. Walks (lineage, impact, paths, withdrawal marks) run over this and
//! read node records only for what they reached.
//!
//! On disk the shape is a compact [`WalkRecord`] per entity and leaf that
//! created it or gave it edges, keyed `w <leaf, 8 bytes big-endian>
//! <subject>`, written in the same sled batch as the node record; since
//! format 5 a chunk's records are packed into groups of about
//! [`GROUP_BYTES`], each under its first record's key
//! ([`WalkRecord::grouped`]), and a single record of formats 2–4 is still
//! read as it is ([`WalkRecord::decode_stored`]). Scanning
//! the `w` prefix therefore visits changes in ledger order, so an index
//! built from disk at open has exactly the edge order of one grown leaf by
//! leaf: in-edges of a node are listed oldest first, out-edges in the order
//! they were added. Its node numbers differ: one grown numbers nodes as they
//! arrive, and one loaded numbers them afresh, depth-first down the edges,
//! so that what one walk reaches lies together in memory. Edges are never
//! removed; most arrive with the entity that depends (lineage only
//! references what already exists), a few later (a transform's outputs, a
//! deployment's new validations), each with the leaf that added it.
//!
//! In memory each direction's edges are kept as runs of one array, a run
//! per node (compressed sparse rows): a walk finds a node's edges in one
//! place, and looks up the runs of up to 256 nodes of a level before
//! reading any, so those memory reads overlap instead of waiting on one
//! another. Edges added after the runs were built are kept apart by node
//! (one bit per node says whether it has any) until they outnumber a
//! quarter of those in the runs; the runs are then built again, under the
//! graph's write lock, in two passes over the edges.
//!
//! A walk record also says when its entity became *ended or affected*:
//! ended (a dataset version withdrawn, a grant revoked, a deployment
//! retired) or downstream of a withdrawal. The index keeps that as one bit
//! per node, so the projection reads an upstream node's record (to carry
//! its withdrawals down to a new dependent) only when the bit is set, not
//! for every edge of every new entity.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::graph::{Edge, NodeRecord, Relation};
use crate::CatalogError;

/// An entity's number in the index, stable for the life of the process
/// (numbered afresh only as the index is loaded, before any is handed out).
pub type NodeId = u32;

/// The flag of a walk record (in its first byte) that its entity was
/// created at its leaf.
const CREATED: u8 = 1;

/// The flag of a walk record that its entity was ended or affected by a
/// withdrawal at its leaf.
const ENDED_OR_AFFECTED: u8 = 2;

/// The first byte of a stored walk group (format 5): records of one
/// chunk packed into one sled value. A single record's value (formats 2–4)
/// starts with its flags, which never set this bit.
const GROUP: u8 = 0x80;

/// About how many bytes of walk records go into one group: a chunk of
/// 8,192 events writes about a hundred groups instead of about nine
/// thousand records, and a sled leaf node of sixteen groups stays below
/// the size sled moves into a file of its own.
pub(crate) const GROUP_BYTES: usize = 4096;

/// A created leaf not known: an entity referenced but never created.
const UNKNOWN: u64 = u64::MAX;

/// One edge: `from` depends on `to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeSlot {
    pub from: NodeId,
    pub to: NodeId,
    pub relation: Relation,
    /// Index into the role names, 0 for none.
    role: u16,
    /// The leaf that added it.
    pub leaf: u64,
}

/// What one leaf did to one entity's shape, as stored under its `w` key:
/// created it, gave it edges, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkRecord {
    pub subject: String,
    /// The leaf.
    pub leaf: u64,
    /// Whether this leaf created the entity.
    pub created: bool,
    /// Whether the entity was ended or affected by a withdrawal by this
    /// leaf (and the index did not know).
    pub ended_or_affected: bool,
    /// Edges this leaf added, `(relation, target subject, role)` in order.
    pub out: Vec<(Relation, String, Option<String>)>,
}

impl WalkRecord {
    /// What `node` holds that a graph does not know yet, one record per
    /// leaf: its creation (unless `created_known`), the out-edges past the
    /// first `known_out`, each under the leaf that added it, and that it is
    /// ended or affected (unless `marked_known`), under the leaf of its
    /// latest end or withdrawal (or of its creation, if that came after).
    pub fn of_node(
        node: &NodeRecord,
        created_known: bool,
        known_out: usize,
        marked_known: bool,
    ) -> Vec<Self> {
        let added = || node.out.iter().skip(known_out);
        let mut leaves: std::collections::BTreeSet<u64> = added().map(|e| e.created_leaf).collect();
        if !created_known {
            leaves.insert(node.created_leaf);
        }
        // An entity created affected (it depends on a withdrawn version) is
        // marked by its creation.
        let marked_at = node
            .ended_or_affected_at()
            .map(|leaf| leaf.max(node.created_leaf))
            .filter(|_| !marked_known);
        leaves.extend(marked_at);
        leaves
            .into_iter()
            .map(|leaf| Self {
                subject: node.subject(),
                leaf,
                created: !created_known && leaf == node.created_leaf,
                ended_or_affected: marked_at == Some(leaf),
                out: added()
                    .filter(|e| e.created_leaf == leaf)
                    .map(|e| (e.relation, e.to.clone(), e.role.clone()))
                    .collect(),
            })
            .collect()
    }

    /// `records` (in key order) packed into groups of about
    /// [`GROUP_BYTES`], each as its sled key (the key of its first record)
    /// and value: [`GROUP`], then per record its key and its value, each a
    /// LEB128 length and the bytes. Scanning the groups in key order visits
    /// the records in key order.
    pub fn grouped<'r>(
        records: impl IntoIterator<Item = &'r WalkRecord>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut groups: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for record in records {
            let key = record.key();
            if groups
                .last()
                .is_none_or(|(_, group)| group.len() >= GROUP_BYTES)
            {
                let mut group = Vec::with_capacity(GROUP_BYTES + 256);
                group.push(GROUP);
                groups.push((key.clone(), group));
            }
            if let Some((_, group)) = groups.last_mut() {
                let value = record.value();
                put_length(group, key.len());
                group.extend_from_slice(&key);
                put_length(group, value.len());
                group.extend_from_slice(&value);
            }
        }
        groups
    }

    /// The records one stored `w` value holds: every record of a group, or
    /// the one record of formats 2–4 (stored under its own key).
    pub fn decode_stored(key: &[u8], value: &[u8]) -> Result<Vec<Self>, CatalogError> {
        let Some((&GROUP, mut rest)) = value.split_first() else {
            return Ok(vec![Self::decode(key, value)?]);
        };
        let subject =
            |key: &[u8]| String::from_utf8_lossy(key.get(9..).unwrap_or_default()).into_owned();
        // Where a group is cut short: at its start, or at the record whose
        // value is missing.
        let cut = |at: Option<&[u8]>| {
            let at = at
                .map(|k| format!(" at {}", subject(k)))
                .unwrap_or_default();
            CatalogError::Corrupt(format!(
                "walk group {} is cut short{at}; `clew reindex` rebuilds the catalogue from the ledger",
                subject(key)
            ))
        };
        let mut records = Vec::new();
        while !rest.is_empty() {
            let (record_key, after) = take_bytes(rest).ok_or_else(|| cut(None))?;
            let (record_value, after) = take_bytes(after).ok_or_else(|| cut(Some(record_key)))?;
            records.push(Self::decode(record_key, record_value)?);
            rest = after;
        }
        Ok(records)
    }

    /// A record of `subject` at `leaf` saying only that it was ended or
    /// affected then.
    pub fn mark(subject: &str, leaf: u64) -> Self {
        Self {
            subject: subject.to_string(),
            leaf,
            created: false,
            ended_or_affected: true,
            out: Vec::new(),
        }
    }

    /// The sled key of the record of `subject` at `leaf`.
    pub fn key_of(leaf: u64, subject: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(9 + subject.len());
        k.push(b'w');
        k.extend_from_slice(&leaf.to_be_bytes());
        k.extend_from_slice(subject.as_bytes());
        k
    }

    /// The record's sled key: `w`, leaf, subject.
    pub fn key(&self) -> Vec<u8> {
        Self::key_of(self.leaf, &self.subject)
    }

    /// The value: a byte of flags (1: created here, 2: ended or affected
    /// here), then per edge its relation code, its role and its target, each
    /// a LEB128 length and UTF-8 bytes (an empty role is none).
    pub fn value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.out.len() * 48);
        let flag = |on: bool, flag: u8| if on { flag } else { 0 };
        v.push(flag(self.created, CREATED) | flag(self.ended_or_affected, ENDED_OR_AFFECTED));
        for (relation, to, role) in &self.out {
            v.push(relation.code());
            for text in [role.as_deref().unwrap_or(""), to.as_str()] {
                put_length(&mut v, text.len());
                v.extend_from_slice(text.as_bytes());
            }
        }
        v
    }

    /// Decodes a stored record.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, CatalogError> {
        let corrupt = || {
            CatalogError::Corrupt(format!(
                "walk record {} does not decode; `clew reindex` rebuilds the catalogue from the ledger",
                String::from_utf8_lossy(key.get(9..).unwrap_or_default())
            ))
        };
        let leaf = key
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)?;
        let subject = std::str::from_utf8(&key[9..]).map_err(|_| corrupt())?;
        let (&flags, mut rest) = value.split_first().ok_or_else(corrupt)?;
        if flags & !(CREATED | ENDED_OR_AFFECTED) != 0 {
            return Err(corrupt());
        }
        let mut out = Vec::new();
        while let Some((&code, after)) = rest.split_first() {
            let relation = Relation::from_code(code).ok_or_else(corrupt)?;
            let (role, after) = take_text(after).ok_or_else(corrupt)?;
            let (to, after) = take_text(after).ok_or_else(corrupt)?;
            out.push((
                relation,
                to.to_string(),
                (!role.is_empty()).then(|| role.to_string()),
            ));
            rest = after;
        }
        Ok(Self {
            subject: subject.to_string(),
            leaf,
            created: flags & CREATED != 0,
            ended_or_affected: flags & ENDED_OR_AFFECTED != 0,
            out,
        })
    }
}

/// Appends `n` as unsigned LEB128.
fn put_length(v: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(byte);
            return;
        }
        v.push(byte | 0x80);
    }
}

/// A LEB128 length and that many bytes of UTF-8 from the front of `b`.
fn take_text(b: &[u8]) -> Option<(&str, &[u8])> {
    let (text, rest) = take_bytes(b)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// A LEB128 length and that many bytes from the front of `b`.
fn take_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut n = 0usize;
    let mut at = 0;
    loop {
        let byte = *b.get(at)?;
        n |= usize::from(byte & 0x7f).checked_shl(7 * at as u32)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    split(&b[at..], n)
}

fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

/// Node `id`'s subject in the text of all subjects.
#[inline]
fn subject_in<'a>(text: &'a str, ends: &[usize], id: NodeId) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

/// The hash of an id's subject, for the table to move its entries.
fn rehash<'a>(
    hasher: &'a DefaultHashBuilder,
    text: &'a str,
    ends: &'a [usize],
) -> impl Fn(&NodeId) -> u64 + 'a {
    move |&id| hasher.hash_one(subject_in(text, ends, id))
}

/// One direction of the edges: each node's edges as a run of one array
/// (compressed sparse rows, so a walk reads a node's edges from one place,
/// and the runs of nodes made one after another lie one after another),
/// built over the edges known when it was last built; edges added since
/// are kept apart by node until the next build.
#[derive(Default)]
struct Runs {
    /// Node `i`'s run is `items[start[i]..start[i + 1]]` (a node past the
    /// end has none).
    start: Vec<u32>,
    /// Each edge: the node at the other end and the edge's number.
    items: Vec<(NodeId, u32)>,
    /// Edges added since the runs were built, by node, oldest first.
    recent: hashbrown::HashMap<NodeId, Vec<(NodeId, u32)>>,
    /// One bit per node: whether `recent` holds an edge of it (for nearly
    /// every node a walk looks at this bit, which stays in cache, not at
    /// the map).
    has_recent: Vec<u64>,
    /// Edges in `recent`.
    recent_len: usize,
}

impl Runs {
    /// The runs of `edges` over `nodes` nodes, each edge filed under the
    /// first of `ends(edge)` with the second as its other end (an edge for
    /// which it is `None` left out); each run in the edges' order (a
    /// counting sort: two passes over the edges).
    fn build(
        nodes: usize,
        edges: &[EdgeSlot],
        ends: impl Fn(&EdgeSlot) -> Option<(NodeId, NodeId)>,
    ) -> Self {
        let mut start = vec![0u32; nodes + 1];
        for (at, _) in edges.iter().filter_map(&ends) {
            start[at as usize + 1] += 1;
        }
        for i in 0..nodes {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut items = vec![(0, 0); start[nodes] as usize];
        for (e, slot) in edges.iter().enumerate() {
            let Some((at, other)) = ends(slot) else {
                continue;
            };
            let at = &mut next[at as usize];
            items[*at as usize] = (other, e as u32);
            *at += 1;
        }
        Self {
            start,
            items,
            ..Default::default()
        }
    }

    /// Node `id`'s edges, oldest first.
    #[inline]
    fn of(&self, id: NodeId) -> EdgeRun<'_> {
        let i = id as usize;
        let built: &[(NodeId, u32)] = match (self.start.get(i), self.start.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.items[a as usize..b as usize],
            _ => &[],
        };
        let recent: &[(NodeId, u32)] = if bit(&self.has_recent, i) {
            self.recent.get(&id).map_or(&[], Vec::as_slice)
        } else {
            &[]
        };
        EdgeRun { built, recent }
    }

    /// Adds edge `e` of node `at` (the newest edge of all).
    fn push(&mut self, at: NodeId, other: NodeId, e: u32) {
        let i = at as usize;
        if self.has_recent.len() <= i / 64 {
            self.has_recent.resize(i / 64 + 1, 0);
        }
        set_bit(&mut self.has_recent, i);
        self.recent.entry(at).or_default().push((other, e));
        self.recent_len += 1;
    }

    fn approximate_bytes(&self) -> usize {
        self.start.capacity() * 4
            + self.items.capacity() * 8
            + self.recent.capacity() * 32
            + self
                .recent
                .values()
                .map(|v| v.capacity() * 8)
                .sum::<usize>()
            + self.has_recent.capacity() * 8
    }
}

/// One node's edges in one direction, oldest first: where they are, so a
/// walk can find the runs of many nodes before it reads any.
#[derive(Clone, Copy)]
pub(crate) struct EdgeRun<'a> {
    built: &'a [(NodeId, u32)],
    recent: &'a [(NodeId, u32)],
}

impl<'a> EdgeRun<'a> {
    /// How many edges.
    #[inline]
    pub fn len(self) -> usize {
        self.built.len() + self.recent.len()
    }

    /// The node at the other end and the edge's number, of each edge.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = (NodeId, u32)> + 'a {
        self.built.iter().chain(self.recent).copied()
    }
}

/// Bit `i` of `bits` (false past the end).
#[inline]
fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets bit `i` of `bits` (within their length).
#[inline]
fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

/// Bitmaps of one bit per node, all clear, kept for walks to borrow (a
/// walk of ten thousand nodes would otherwise zero a bitmap of the whole
/// graph, and a small one hash what it meets).
#[derive(Default)]
pub(crate) struct BitmapPool(std::sync::Mutex<Vec<Vec<u64>>>);

impl BitmapPool {
    /// At most this many are kept: as many as walks run at once, nearly
    /// always.
    const KEPT: usize = 16;

    /// A clear bitmap of at least `nodes` bits.
    pub fn take(&self, nodes: usize) -> Vec<u64> {
        let mut bits = self.lock().pop().unwrap_or_default();
        if bits.len() < nodes.div_ceil(64) {
            bits.resize(nodes.div_ceil(64), 0);
        }
        bits
    }

    /// Keeps `bits`, which must be clear, for the next walk.
    pub fn give_back(&self, bits: Vec<u64>) {
        let mut pool = self.lock();
        if pool.len() < Self::KEPT {
            pool.push(bits);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u64>>> {
        // A walk that panicked gave nothing back; what is kept is clear.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn approximate_bytes(&self) -> usize {
        self.lock().iter().map(|b| b.capacity() * 8).sum()
    }
}

/// The resident lineage graph.
#[derive(Default)]
pub(crate) struct LineageIndex {
    hasher: DefaultHashBuilder,
    /// Subject → id.
    table: HashTable<NodeId>,
    /// Every subject, one after another; `ends[i]` is where node `i`'s ends.
    text: String,
    ends: Vec<usize>,
    /// Leaf that created each node, [`UNKNOWN`] for one only referenced.
    created: Vec<u64>,
    /// Each node's out-edges (to what it depends on), in the order they
    /// were added.
    out: Runs,
    /// Each node's in-edges (what depends on it), oldest first.
    inward: Runs,
    /// One bit per node: created (so present in every answer as of the
    /// latest size) — small enough to stay in cache.
    created_bits: Vec<u64>,
    /// One bit per node: ended or affected by a withdrawal.
    marked_bits: Vec<u64>,
    edges: Vec<EdgeSlot>,
    /// Role names; index 0 is "no role".
    roles: Vec<String>,
    /// Ledger leaves absorbed: walks answer as of at most this.
    pub applied: u64,
    /// What walks mark the nodes they meet on.
    pub bitmaps: BitmapPool,
}

impl LineageIndex {
    /// The id of `subject`, if the index has seen it.
    pub fn id(&self, subject: &str) -> Option<NodeId> {
        let hash = self.hasher.hash_one(subject);
        self.table
            .find(hash, |&id| self.subject(id) == subject)
            .copied()
    }

    /// The subject of node `id`.
    #[inline]
    pub fn subject(&self, id: NodeId) -> &str {
        subject_in(&self.text, &self.ends, id)
    }

    fn intern(&mut self, subject: &str) -> NodeId {
        if let Some(id) = self.id(subject) {
            return id;
        }
        let id = self.ends.len() as NodeId;
        self.text.push_str(subject);
        self.ends.push(self.text.len());
        self.created.push(UNKNOWN);
        if self.created_bits.len() * 64 < self.ends.len() {
            self.created_bits.push(0);
            self.marked_bits.push(0);
        }
        let hash = self.hasher.hash_one(subject);
        self.table
            .insert_unique(hash, id, rehash(&self.hasher, &self.text, &self.ends));
        id
    }

    fn role(&mut self, role: Option<&str>) -> u16 {
        let Some(role) = role else { return 0 };
        if self.roles.is_empty() {
            self.roles.push(String::new());
        }
        match self.roles.iter().position(|r| r == role) {
            Some(i) => i as u16,
            None => {
                self.roles.push(role.to_string());
                (self.roles.len() - 1) as u16
            }
        }
    }

    /// The index of `records` (walk records in ledger order, as read from
    /// disk at open): edges go only to the edge table as they are read, and
    /// the runs are built once at the end.
    pub fn load(
        records: impl IntoIterator<Item = Result<WalkRecord, CatalogError>>,
    ) -> Result<Self, CatalogError> {
        let mut graph = Self::default();
        for record in records {
            graph.add_shape(&record?);
        }
        graph.renumber();
        graph.build_runs();
        // Give back what growing left spare.
        graph.text.shrink_to_fit();
        graph.ends.shrink_to_fit();
        graph.created.shrink_to_fit();
        graph.edges.shrink_to_fit();
        graph.created_bits.shrink_to_fit();
        graph.marked_bits.shrink_to_fit();
        graph
            .table
            .shrink_to_fit(rehash(&graph.hasher, &graph.text, &graph.ends));
        Ok(graph)
    }

    /// Numbers the nodes afresh so that what one walk reaches lies
    /// together in every per-node table: in the order of a depth-first
    /// walk down the edges of data (to what depends on each node, oldest
    /// first) from each node that depends on no data, in the order first
    /// seen, so each node's descendants follow it unless reached before.
    /// Edges to agents (what an activity was associated with or an entity
    /// attributed to: principals, sites) are not walked: an agent is behind
    /// nearly everything recorded, so a walk down from it would number all of
    /// it in the order recorded — each training run with its model and
    /// deployment, but the runs of one dataset version among those of all
    /// the others. An impact walk then reads a few ranges of the tables
    /// instead of a node every few hundred, and a lineage walk a few
    /// chains. Only done as the index is loaded, before any id is handed
    /// out; the order of each node's edges is untouched (it is the edge
    /// table's).
    fn renumber(&mut self) {
        let nodes = self.len();
        // PROV-DM §5.3.2, §5.3.3: attributions and associations point at agents.
        let of_data = |s: &EdgeSlot| {
            !matches!(
                s.relation,
                Relation::WasAssociatedWith | Relation::WasAttributedTo
            )
        };
        let downward = Runs::build(nodes, &self.edges, |s| of_data(s).then_some((s.to, s.from)));
        let mut depends = vec![0u64; nodes.div_ceil(64)];
        for slot in self.edges.iter().filter(|s| of_data(s)) {
            set_bit(&mut depends, slot.from as usize);
        }
        // New number → old.
        let mut order: Vec<NodeId> = Vec::with_capacity(nodes);
        let mut placed = vec![0u64; nodes.div_ceil(64)];
        // Each node on the path down, with how many of its edges are done.
        let mut path: Vec<(NodeId, u32)> = Vec::new();
        let roots = (0..nodes).filter(|&i| !bit(&depends, i)).chain(0..nodes);
        for root in roots {
            if bit(&placed, root) {
                continue;
            }
            set_bit(&mut placed, root);
            order.push(root as NodeId);
            path.push((root as NodeId, 0));
            while let Some((at, done)) = path.last_mut() {
                let Some(&(next, _)) = downward.of(*at).built.get(*done as usize) else {
                    path.pop();
                    continue;
                };
                *done += 1;
                if !bit(&placed, next as usize) {
                    set_bit(&mut placed, next as usize);
                    order.push(next);
                    path.push((next, 0));
                }
            }
        }
        drop((downward, depends, placed, path));
        // Old number → new.
        let mut new_id = vec![0 as NodeId; nodes];
        for (new, &old) in order.iter().enumerate() {
            new_id[old as usize] = new as NodeId;
        }
        for slot in &mut self.edges {
            slot.from = new_id[slot.from as usize];
            slot.to = new_id[slot.to as usize];
        }
        // The table hashes subjects, which keep their places in it.
        for id in self.table.iter_mut() {
            *id = new_id[*id as usize];
        }
        drop(new_id);
        let mut text = String::with_capacity(self.text.len());
        let mut ends = Vec::with_capacity(nodes);
        let mut created = Vec::with_capacity(nodes);
        let mut created_bits = vec![0u64; self.created_bits.len()];
        let mut marked_bits = vec![0u64; self.marked_bits.len()];
        for (new, &old) in order.iter().enumerate() {
            text.push_str(self.subject(old));
            ends.push(text.len());
            created.push(self.created[old as usize]);
            if bit(&self.created_bits, old as usize) {
                set_bit(&mut created_bits, new);
            }
            if bit(&self.marked_bits, old as usize) {
                set_bit(&mut marked_bits, new);
            }
        }
        self.text = text;
        self.ends = ends;
        self.created = created;
        self.created_bits = created_bits;
        self.marked_bits = marked_bits;
    }

    /// Files every edge into the runs of both directions afresh.
    fn build_runs(&mut self) {
        let nodes = self.len();
        self.out = Runs::build(nodes, &self.edges, |s| Some((s.from, s.to)));
        self.inward = Runs::build(nodes, &self.edges, |s| Some((s.to, s.from)));
    }

    /// Adds what one leaf did to one entity, its edges filed with the
    /// recent ones. A creation the index already has is ignored whole (its
    /// record was added before).
    pub fn add(&mut self, record: &WalkRecord) {
        let first = self.edges.len();
        self.add_shape(record);
        for e in first..self.edges.len() {
            let slot = self.edges[e];
            self.out.push(slot.from, slot.to, e as u32);
            self.inward.push(slot.to, slot.from, e as u32);
        }
        // The runs are built again once the edges added since outnumber a
        // quarter of those in them: each edge is filed a bounded number of
        // times however the graph grows, and a walk nearly always finds a
        // node's edges in one run.
        if self.out.recent_len > (self.out.items.len() / 4).max(4096) {
            self.build_runs();
        }
    }

    /// Adds a record's node, marks and edges to the tables, not to the
    /// runs. A creation the index already has is ignored whole.
    fn add_shape(&mut self, record: &WalkRecord) {
        let id = self.intern(&record.subject);
        let i = id as usize;
        if record.ended_or_affected {
            set_bit(&mut self.marked_bits, i);
        }
        if record.created {
            if self.created[i] != UNKNOWN {
                return;
            }
            self.created[i] = record.leaf;
            set_bit(&mut self.created_bits, i);
        }
        for (relation, to, role) in &record.out {
            let to = self.intern(to);
            let role = self.role(role.as_deref());
            self.edges.push(EdgeSlot {
                from: id,
                to,
                relation: *relation,
                role,
                leaf: record.leaf,
            });
        }
    }

    /// How many out-edges node `id` has (all leaves).
    pub fn out_count(&self, id: NodeId) -> usize {
        self.out.of(id).len()
    }

    /// Whether node `id` existed in the tree of `as_of` leaves.
    #[inline]
    pub fn exists_at(&self, id: NodeId, as_of: u64) -> bool {
        self.created[id as usize] < as_of
    }

    /// Whether node `id` was created (at any size the graph has absorbed).
    #[inline]
    pub fn is_created(&self, id: NodeId) -> bool {
        bit(&self.created_bits, id as usize)
    }

    /// Whether node `id` is ended or affected by a withdrawal (as of
    /// everything absorbed).
    #[inline]
    pub fn is_ended_or_affected(&self, id: NodeId) -> bool {
        bit(&self.marked_bits, id as usize)
    }

    /// The leaf that created `id`, if the index knows it.
    pub fn created_leaf(&self, id: NodeId) -> Option<u64> {
        Some(self.created[id as usize]).filter(|l| *l != UNKNOWN)
    }

    /// The edges from `id` to what it depends on, in the order they were
    /// added: the node depended on and the edge's number.
    #[inline]
    pub fn out_edges(&self, id: NodeId) -> EdgeRun<'_> {
        self.out.of(id)
    }

    /// The edges into `id` (what depends on it), oldest first: the node at
    /// the other end and the edge's number.
    #[inline]
    pub fn in_edges(&self, id: NodeId) -> EdgeRun<'_> {
        self.inward.of(id)
    }

    /// Edge number `e`.
    #[inline]
    pub fn slot(&self, e: u32) -> &EdgeSlot {
        &self.edges[e as usize]
    }

    /// Edge number `e` as an answer edge.
    pub fn edge(&self, e: u32) -> Edge {
        let s = self.slot(e);
        Edge {
            from: self.subject(s.from).to_string(),
            to: self.subject(s.to).to_string(),
            relation: s.relation,
            role: (s.role != 0).then(|| self.roles[usize::from(s.role)].clone()),
            created_leaf: s.leaf,
        }
    }

    /// Nodes interned (created or only referenced).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes the index holds, roughly: for the operator's log.
    pub fn approximate_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * 8
            + self.created.capacity() * 8
            + self.out.approximate_bytes()
            + self.inward.approximate_bytes()
            + self.created_bits.capacity() * 8
            + self.marked_bits.capacity() * 8
            + self.edges.capacity() * std::mem::size_of::<EdgeSlot>()
            + self.table.capacity() * 5
            + self.bitmaps.approximate_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, leaf: u64, out: &[(Relation, &str, Option<&str>)]) -> WalkRecord {
        WalkRecord {
            subject: subject.into(),
            leaf,
            created: true,
            ended_or_affected: false,
            out: out
                .iter()
                .map(|(r, t, role)| (*r, t.to_string(), role.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn a_walk_record_reads_back_as_written() {
        let r = record(
            "training-run/r-1",
            4_000_000_000,
            &[
                (Relation::Used, "dataset-version/ds@1.0", Some("train")),
                (Relation::WasAssociatedWith, "site/s-é", None),
            ],
        );
        assert_eq!(WalkRecord::decode(&r.key(), &r.value()).unwrap(), r);
        let mut later = r.clone();
        later.created = false;
        assert_eq!(
            WalkRecord::decode(&later.key(), &later.value()).unwrap(),
            later
        );
        let long = "x".repeat(70_000);
        let big = record("site/s", 1, &[(Relation::Used, &long, Some("é"))]);
        assert_eq!(WalkRecord::decode(&big.key(), &big.value()).unwrap(), big);
        let empty = record("site/s", 0, &[]);
        assert_eq!(
            WalkRecord::decode(&empty.key(), &empty.value()).unwrap(),
            empty
        );
    }

    #[test]
    fn walk_records_grouped_read_back_in_order_and_groups_close_near_their_bound() {
        let records: Vec<WalkRecord> = (0..400)
            .map(|i| {
                let mut r = record(
                    &format!("training-run/r-{i:04}"),
                    100 + i,
                    &[(Relation::Used, "dataset-version/ds@1.0", Some("train"))],
                );
                r.ended_or_affected = i % 7 == 0;
                r
            })
            .collect();
        let groups = WalkRecord::grouped(&records);
        assert!(
            groups.len() > 3 && groups.len() < 20,
            "{} groups",
            groups.len()
        );
        for (key, value) in &groups {
            assert!(value.len() < GROUP_BYTES + 256, "{} bytes", value.len());
            assert_eq!(value[0], GROUP);
            let first = WalkRecord::decode_stored(key, value).unwrap()[0].key();
            assert_eq!(&first, key, "a group is keyed by its first record");
        }
        let back: Vec<WalkRecord> = groups
            .iter()
            .flat_map(|(k, v)| WalkRecord::decode_stored(k, v).unwrap())
            .collect();
        assert_eq!(back, records);
        // A single record (formats 2-4) still reads as itself.
        let one = &records[3];
        assert_eq!(
            WalkRecord::decode_stored(&one.key(), &one.value()).unwrap(),
            vec![one.clone()]
        );
        // A record bigger than the bound stands alone in its group.
        let long = "x".repeat(3 * GROUP_BYTES);
        let big = record("site/s", 1, &[(Relation::Used, &long, None)]);
        let both = [big.clone(), records[0].clone()];
        let groups = WalkRecord::grouped(&both);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            WalkRecord::decode_stored(&groups[0].0, &groups[0].1).unwrap(),
            vec![big]
        );
    }

    #[test]
    fn a_cut_walk_group_is_refused_naming_where() {
        let records: Vec<WalkRecord> = (0..10)
            .map(|i| record(&format!("deployment/d-{i}"), i, &[]))
            .collect();
        let (key, value) = WalkRecord::grouped(&records).remove(0);
        let err = WalkRecord::decode_stored(&key, &value[..value.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deployment/d-0") && err.contains("clew reindex"),
            "{err}"
        );
    }

    #[test]
    fn a_mark_reads_back_and_sets_the_nodes_bit_even_on_a_known_creation() {
        let mut marked = record("dataset-version/d@1", 1, &[]);
        marked.ended_or_affected = true;
        assert_eq!(marked.value(), [3]);
        assert_eq!(
            WalkRecord::decode(&marked.key(), &marked.value()).unwrap(),
            marked
        );
        assert!(WalkRecord::decode(&marked.key(), &[4]).is_err());

        let mut g = LineageIndex::default();
        g.add(&record("dataset-version/d@1", 1, &[]));
        g.add(&record("dataset-version/d@2", 2, &[]));
        let d1 = g.id("dataset-version/d@1").unwrap();
        let d2 = g.id("dataset-version/d@2").unwrap();
        assert!(!g.is_ended_or_affected(d1));
        // A mark only (a withdrawal at a later leaf) ...
        let mut withdrawn = record("dataset-version/d@1", 5, &[]);
        withdrawn.created = false;
        withdrawn.ended_or_affected = true;
        g.add(&withdrawn);
        // ... and a creation the index has, marked, both set the bit.
        let mut again = record("dataset-version/d@2", 2, &[]);
        again.ended_or_affected = true;
        g.add(&again);
        assert!(g.is_ended_or_affected(d1) && g.is_ended_or_affected(d2));
        assert_eq!(g.created_leaf(d1), Some(1));
    }

    #[test]
    fn a_node_ended_or_affected_gets_a_mark_under_its_latest_such_leaf() {
        use crate::graph::{Affect, HistoryEntry};
        let mut node = NodeRecord {
            node_type: "model-version".into(),
            id: "m".into(),
            label: String::new(),
            created_leaf: 3,
            created_by: HistoryEntry {
                leaf: 3,
                event_id: "e".into(),
                kind: "k".into(),
                actor: "a".into(),
                time: String::new(),
            },
            ended_leaf: None,
            statuses: vec![],
            affected_by: vec![],
            out: vec![],
            ended_detail: None,
            attributes: Default::default(),
        };
        let walks = WalkRecord::of_node(&node, false, 0, false);
        assert_eq!(walks.len(), 1);
        assert!(walks[0].created && !walks[0].ended_or_affected);
        // Created affected (it depends on a withdrawn version): one record.
        node.affected_by = vec![Affect {
            withdrawn: "dataset-version/d@1".into(),
            leaf: 2,
        }];
        let walks = WalkRecord::of_node(&node, false, 0, false);
        assert_eq!(walks.len(), 1, "{walks:?}");
        assert!(walks[0].created && walks[0].ended_or_affected && walks[0].leaf == 3);
        // Affected later, at leaf 9: a mark only, unless the graph knows.
        node.affected_by.push(Affect {
            withdrawn: "dataset-version/d@7".into(),
            leaf: 9,
        });
        let walks = WalkRecord::of_node(&node, true, 0, false);
        assert_eq!(walks.len(), 1);
        assert!(walks[0].ended_or_affected && !walks[0].created && walks[0].leaf == 9);
        assert!(WalkRecord::of_node(&node, true, 0, true).is_empty());
    }

    #[test]
    fn a_truncated_walk_record_is_corrupt_not_a_panic() {
        let r = record(
            "model-version/m",
            7,
            &[(Relation::WasGeneratedBy, "x/y", None)],
        );
        let v = r.value();
        // Cut after the first byte it is a record of no edges, which is whole.
        for cut in (0..v.len()).filter(|c| *c != 1) {
            assert!(
                WalkRecord::decode(&r.key(), &v[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(WalkRecord::decode(b"w123", &v).is_err());
        let err = WalkRecord::decode(&r.key(), &v[..3])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model-version/m") && err.contains("clew reindex"),
            "{err}"
        );
    }

    #[test]
    fn edges_are_kept_both_ways_in_creation_order() {
        let mut g = LineageIndex::default();
        g.add(&record("dataset-version/d@1", 1, &[]));
        g.add(&record(
            "training-run/a",
            2,
            &[(Relation::Used, "dataset-version/d@1", Some("train"))],
        ));
        g.add(&record(
            "training-run/b",
            3,
            &[(Relation::Used, "dataset-version/d@1", Some("test"))],
        ));
        // A creation added again changes nothing.
        g.add(&record(
            "training-run/a",
            2,
            &[(Relation::Used, "dataset-version/d@1", Some("train"))],
        ));
        // An edge added later (a transform's output generated by it).
        let mut late = record(
            "dataset-version/d@1",
            4,
            &[(Relation::WasGeneratedBy, "transform/t", None)],
        );
        late.created = false;
        g.add(&late);
        let d = g.id("dataset-version/d@1").unwrap();
        assert_eq!(g.out_count(d), 1);
        assert_eq!(g.created_leaf(d), Some(1));
        let t: Vec<Edge> = g.out_edges(d).iter().map(|(_, e)| g.edge(e)).collect();
        assert_eq!((t[0].to.as_str(), t[0].created_leaf), ("transform/t", 4));
        let from: Vec<String> = g.in_edges(d).iter().map(|(_, e)| g.edge(e).from).collect();
        assert_eq!(from, ["training-run/a", "training-run/b"]);
        let a = g.id("training-run/a").unwrap();
        let out: Vec<Edge> = g.out_edges(a).iter().map(|(_, e)| g.edge(e)).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].role.as_deref(), Some("train"));
        assert_eq!(out[0].created_leaf, 2);
        assert!(g.exists_at(a, 3) && !g.exists_at(a, 2) && g.is_created(a));
        // Referenced but never created: not there at any size.
        g.add(&record("x/y", 9, &[(Relation::Used, "ghost/g", None)]));
        let ghost = g.id("ghost/g").unwrap();
        assert!(!g.exists_at(ghost, u64::MAX) && !g.is_created(ghost));
        assert_eq!(g.created_leaf(ghost), None);
    }

    #[test]
    fn edges_read_the_same_grown_leaf_by_leaf_as_loaded_at_once() {
        // Enough edges that the grown index builds its runs several times
        // and still holds recent edges apart; some edges come late.
        let mut records = Vec::new();
        let mut expected_out: std::collections::HashMap<String, Vec<String>> = Default::default();
        let mut expected_in: std::collections::HashMap<String, Vec<String>> = Default::default();
        for i in 0..6_000u64 {
            let subject = format!("dataset-version/d@{i}");
            let mut out = Vec::new();
            for back in [1, 7, 500] {
                if i >= back {
                    out.push((
                        Relation::WasDerivedFrom,
                        format!("dataset-version/d@{}", i - back),
                        None,
                    ));
                }
            }
            records.push(WalkRecord {
                subject: subject.clone(),
                leaf: i,
                created: true,
                ended_or_affected: i % 13 == 0,
                out,
            });
            if i % 10 == 9 {
                // A late edge of an earlier node.
                records.push(WalkRecord {
                    subject: format!("dataset-version/d@{}", i / 2),
                    leaf: i,
                    created: false,
                    ended_or_affected: false,
                    out: vec![(Relation::WasGeneratedBy, format!("transform/t{i}"), None)],
                });
            }
        }
        for r in &records {
            for (_, to, _) in &r.out {
                expected_out
                    .entry(r.subject.clone())
                    .or_default()
                    .push(to.clone());
                expected_in
                    .entry(to.clone())
                    .or_default()
                    .push(r.subject.clone());
            }
        }
        let mut grown = LineageIndex::default();
        for r in &records {
            grown.add(r);
        }
        let loaded = LineageIndex::load(records.iter().cloned().map(Ok)).unwrap();
        assert!(
            !grown.out.items.is_empty() && grown.out.recent_len > 0,
            "the grown index holds built runs and recent edges both"
        );
        assert_eq!(loaded.out.recent_len, 0);
        for g in [&grown, &loaded] {
            assert_eq!(g.len(), loaded.len());
            for id in 0..g.len() as NodeId {
                let subject = g.subject(id);
                let out: Vec<&str> = g
                    .out_edges(id)
                    .iter()
                    .map(|(to, _)| g.subject(to))
                    .collect();
                let inward: Vec<&str> = g
                    .in_edges(id)
                    .iter()
                    .map(|(from, _)| g.subject(from))
                    .collect();
                let want_out = expected_out.get(subject).cloned().unwrap_or_default();
                let want_in = expected_in.get(subject).cloned().unwrap_or_default();
                assert_eq!(out, want_out, "out-edges of {subject}");
                assert_eq!(inward, want_in, "in-edges of {subject}");
                assert_eq!(g.out_count(id), want_out.len());
                // The loaded index numbers nodes afresh: each number still
                // names its subject, its creation and its mark.
                let same = grown.id(subject).unwrap();
                assert_eq!(g.id(subject), Some(id));
                assert_eq!(g.created_leaf(id), grown.created_leaf(same));
                assert_eq!(g.is_created(id), grown.is_created(same));
                assert_eq!(g.is_ended_or_affected(id), grown.is_ended_or_affected(same));
                // Each edge's number names the same edge.
                for (to, e) in g.out_edges(id).iter() {
                    assert_eq!((g.slot(e).from, g.slot(e).to), (id, to));
                }
            }
        }
    }

    #[test]
    fn a_loaded_index_numbers_what_one_walk_reaches_together() {
        // Ledger order interleaves what depends on the hub (every 20th run
        // and its model and deployment) with 19 runs of other datasets, as
        // a national catalogue does; the principal who recorded every run,
        // registered first, and the site the datasets are attributed to
        // are behind all of it.
        let site = (Relation::WasAttributedTo, "site/s", None);
        let mut records = vec![
            record("principal/p", 1, &[]),
            record("site/s", 2, &[]),
            record("dataset/hub", 3, &[site]),
            record("dataset/other", 4, &[site]),
            record(
                "dataset-version/hub",
                5,
                &[(Relation::SpecializationOf, "dataset/hub", None)],
            ),
            record(
                "dataset-version/other",
                6,
                &[(Relation::SpecializationOf, "dataset/other", None)],
            ),
        ];
        let mut leaf = 7;
        let mut push = |subject: String, to: &[String]| {
            let mut out: Vec<(Relation, &str, Option<&str>)> = to
                .iter()
                .map(|t| (Relation::Used, t.as_str(), None))
                .collect();
            out.push((Relation::WasAssociatedWith, "principal/p", None));
            records.push(record(&subject, leaf, &out));
            leaf += 1;
        };
        for k in 0..2_000 {
            let input = if k % 20 == 0 { "hub" } else { "other" };
            let (run, model) = (format!("training-run/r{k}"), format!("model-version/m{k}"));
            push(run.clone(), &[format!("dataset-version/{input}")]);
            push(model.clone(), &[run]);
            push(format!("deployment/d{k}"), &[model]);
        }
        let grown = {
            let mut g = LineageIndex::default();
            records.iter().for_each(|r| g.add(r));
            g
        };
        let loaded = LineageIndex::load(records.into_iter().map(Ok)).unwrap();
        // The hub and everything below it: 1 + 100 × 3 nodes.
        let below = |g: &LineageIndex| {
            let mut reached = vec![g.id("dataset-version/hub").unwrap()];
            let mut at = 0;
            while let Some(&n) = reached.get(at) {
                reached.extend(g.in_edges(n).iter().map(|(from, _)| from));
                at += 1;
            }
            let span = reached.iter().max().unwrap() - reached.iter().min().unwrap() + 1;
            (reached.len(), span as usize)
        };
        let (reached, span) = below(&loaded);
        assert_eq!(
            (reached, span),
            (301, 301),
            "contiguous once loaded, the principal and the site not walked down from"
        );
        let (reached, span) = below(&grown);
        assert_eq!(reached, 301);
        assert!(
            span > 5_000,
            "grown in ledger order they spread over {span}"
        );
        // A deployment's lineage (deployment, model, run) lies together too.
        let d = loaded.id("deployment/d7").unwrap();
        let m = loaded.id("model-version/m7").unwrap();
        let r = loaded.id("training-run/r7").unwrap();
        assert_eq!((m, d), (r + 1, r + 2));
    }

    #[test]
    fn ids_survive_the_table_growing() {
        let mut g = LineageIndex::default();
        for i in 0..10_000 {
            g.add(&record(&format!("site/s-{i}"), i, &[]));
        }
        for i in (0..10_000).step_by(97) {
            let id = g.id(&format!("site/s-{i}")).unwrap();
            assert_eq!(g.subject(id), format!("site/s-{i}"));
        }
        assert_eq!(g.id("site/none"), None);
        assert_eq!(g.len(), 10_000);
    }
}
