//! The catalogue: what users query, projected from the ledger.
//!
//! The catalogue holds nothing the ledger does not. It reads sequenced leaves
//! in order and turns each event into:
//!
//! - **entity state and the lineage graph** (sled): a node per entity with
//!   its W3C PROV edges, per-entity history, access grants (node records
//!   and history entries in the binary form of `stored`, node records
//!   zstd-compressed with a dictionary the catalogue trains on its own
//!   records); every node and
//!   edge records the leaf that created it (and the leaf that withdrew or
//!   retired it), so "as of tree size N" is a filter;
//! - **the graph's shape in memory** ([`adjacency`]): subjects interned to
//!   numbers with their edges both ways and a bit for what is ended or
//!   affected by a withdrawal, built at open from compact walk records and
//!   grown as leaves are applied; walks run over it and read node records
//!   only for the nodes they reached, and projection reads an upstream
//!   node only when its bit says it has withdrawals to pass down;
//! - **a search index** (tantivy) over dataset versions and model versions,
//!   with facets, ranges, typo tolerance, phrases and snippets.
//!
//! ```text
//!  Ledger leaves [applied..size) ──chunk──▶ project::apply (Pending overlay)
//!       │                                     │ touched dataset/model versions
//!       ▼                                     ▼
//!  ONE sled batch: state + graph + history + applied marker   then tantivy
//!  upsert of the touched documents, committed with payload = applied
//!  (while catching up, on a `catalog-search` thread of its own, so the
//!  next chunk's state is applied meanwhile)
//! ```
//!
//! Replays are idempotent: the applied-leaf marker is written in the same sled
//! batch as the state it describes, so a crash re-applies at most the chunk in
//! flight; search documents are a pure function of that state, keyed by
//! subject, and a search index behind the state is repaired on open by
//! rebuilding every document. [`Catalog::rebuild`] throws everything away and
//! projects the ledger again (`clew reindex`).
//!
//! Lineage stays acyclic because the sequencer only admits references to
//! entities that already exist and refuses a transform whose output predates
//! one of its inputs.

mod access;
mod adjacency;
mod graph;
mod lineage;
mod project;
mod search;
mod stored;

use std::path::{Path, PathBuf};

use clew_ledger::Ledger;
use rayon::prelude::*;
use thiserror::Error;

pub use access::Spell;
pub use graph::{Affect, Edge, HistoryEntry, NodeRecord, OutEdge, Relation, NODE_TYPES};
pub use lineage::{Admit, Direction, ImpactAnswer, KeptEdges, LineageAnswer, NodeView, Reach};
pub use search::{
    FacetCounts, Range, SearchHit, SearchIndex, SearchRequest, SearchResponse, SortOrder,
    Visibility, FACETS,
};

use adjacency::{LineageIndex, WalkRecord};
use graph::keys;
use project::Pending;

/// The state's storage format: 2 adds walk records and drops the in-edge
/// keys of format 1; 3 stores node records and history entries in binary
/// (`stored`), and still reads the JSON ones of format 2; 4 keeps node
/// records compressed, and still reads those of formats 2 and 3; 5 writes
/// walk records in groups (`WalkRecord::grouped`), and still reads the
/// single records of formats 2–4; 6 compresses node records with a
/// dictionary trained on the catalogue's own (`stored::NodeDictionary`),
/// and still reads the records of formats 2–5.
const FORMAT: u8 = 6;

/// Default sled page cache of a catalogue.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Leaves applied per sled batch and search commit.
pub const CHUNK: u64 = 8192;

/// Failures of the catalogue.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// sled failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// tantivy failed.
    #[error("search index: {0}")]
    Search(#[from] tantivy::TantivyError),
    /// tantivy's directory could not be opened.
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    /// The ledger could not be read.
    #[error("ledger: {0}")]
    Ledger(#[from] clew_ledger::LedgerError),
    /// Stored data is not what the catalogue wrote.
    #[error("corrupt catalogue data: {0}")]
    Corrupt(String),
    /// No such entity.
    #[error("not found: {0}")]
    NotFound(String),
    /// A query the catalogue cannot answer as asked.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Directory set-up failed.
    #[error("{0}")]
    Setup(String),
}

/// Search documents touched by applied leaves and not yet committed.
#[derive(Debug, Default)]
pub struct SearchBacklog {
    subjects: std::collections::BTreeSet<String>,
    /// What the commit taking them claims to have indexed: the end of the
    /// last chunk that touched a document, which is what `SEARCH_AT` says.
    applied: u64,
}

impl SearchBacklog {
    /// Whether nothing awaits a search commit.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// Adds a later backlog's documents to this one.
    fn absorb(&mut self, later: SearchBacklog) {
        self.subjects.extend(later.subjects);
        self.applied = self.applied.max(later.applied);
    }
}

/// A run of ledger leaves, decoded: `events[i]` is leaf `first + i`.
struct OpenedLeaves {
    first: u64,
    events: Vec<(u64, clew_events::OpenedEnvelope)>,
}

impl OpenedLeaves {
    fn len(&self) -> usize {
        self.events.len()
    }

    /// The leaf after the last.
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

/// Decodes `leaves`, the first of them leaf `first`, on every core
/// (decoding is independent per leaf).
fn open_leaves(first: u64, leaves: &[Vec<u8>]) -> Result<OpenedLeaves, CatalogError> {
    let events = leaves
        .par_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let leaf = first + i as u64;
            clew_events::open(bytes).map(|o| (leaf, o)).map_err(|e| {
                CatalogError::Corrupt(format!("ledger leaf {leaf} does not decode: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(OpenedLeaves { first, events })
}

/// The catalogue projection.
pub struct Catalog {
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    search: SearchIndex,
    graph: std::sync::RwLock<LineageIndex>,
    /// See [`Catalog::access_epoch`].
    access_epoch: std::sync::atomic::AtomicU64,
    /// The dictionaries node records are compressed with, one per node
    /// type once trained (see [`stored::NodeDictionary`]).
    node_dictionaries: std::sync::RwLock<std::sync::Arc<stored::NodeDictionaries>>,
    /// Node types whose dictionary is not yet durable: every batch carries
    /// them until one is flushed.
    unstored_dictionaries: std::sync::Mutex<Vec<String>>,
    /// Records of node types with no dictionary yet, gathered from chunks
    /// too small to train one on their own (a live node's batches), until
    /// a type has enough to train from.
    training_records: std::sync::Mutex<std::collections::BTreeMap<String, Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir).finish()
    }
}

impl Catalog {
    /// Opens (or creates) the catalogue in `dir` (`catalog.db/` and `search/`)
    /// with the default page cache, repairing a search index that is behind
    /// the projected state.
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Catalog::open`] with a page cache of `cache_bytes` (projection of a
    /// large ledger runs faster with a cache the size of the state).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, CatalogError> {
        // A serving catalogue commits small batches often, and tantivy
        // zeroes a fresh arena sized by this budget at every commit, so it
        // gets the minimum.
        Self::open_indexing_with(dir, cache_bytes, 15 << 20)
    }

    /// Opens the catalogue with `writer_bytes` for tantivy's indexing arena.
    fn open_indexing_with(
        dir: &Path,
        cache_bytes: u64,
        writer_bytes: usize,
    ) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CatalogError::Setup(format!("{}: {e}", dir.display())))?;
        let config = sled::Config::new()
            .path(dir.join("catalog.db"))
            .cache_capacity(cache_bytes)
            // Flushed explicitly after each chunk, before the search commit, so
            // the index never claims more than the durable state.
            .flush_every_ms(None);
        let db = clew_ledger::store::open_sled(&config)?;
        let tree = db.open_tree("catalog")?;
        let search = SearchIndex::open(&dir.join("search"), writer_bytes)?;
        let mut catalog = Self {
            dir: dir.to_path_buf(),
            db,
            tree,
            search,
            graph: Default::default(),
            access_epoch: Default::default(),
            node_dictionaries: Default::default(),
            unstored_dictionaries: Default::default(),
            training_records: Default::default(),
        };
        let mut dictionaries = stored::NodeDictionaries::default();
        for item in catalog.tree.scan_prefix(keys::NODE_DICTIONARIES) {
            let (k, v) = item?;
            let node_type = String::from_utf8_lossy(&k[keys::NODE_DICTIONARIES.len()..]);
            dictionaries = dictionaries.with(&node_type, stored::NodeDictionary::of(v.to_vec())?);
        }
        *catalog
            .node_dictionaries
            .write()
            .unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(dictionaries);
        let applied = catalog.applied()?;
        catalog.upgrade_format()?;
        catalog.load_graph(applied)?;
        // The store is opened again once the graph is loaded from every walk
        // record. sled counts a page's use against its cache only once 64
        // uses have queued in the page's shard of the cache (256 shards), so
        // a scan of the whole store leaves many pages in memory beyond the
        // cache's size: 269 MiB of walk records on a 3.5M-event catalogue
        // with a 96 MiB cache, which no answer reads again. Opened afresh,
        // the store starts with an empty cache. (The memory freed comes back
        // to the system only when the allocator gives it: see
        // `clew::memory::return_freed_memory`.)
        drop(catalog.tree);
        drop(catalog.db);
        catalog.db = clew_ledger::store::open_sled(&config)?;
        catalog.tree = catalog.db.open_tree("catalog")?;
        // Batches that touch no search document commit nothing to the index,
        // so the index is current when it is at the last batch that did.
        let search_at = catalog
            .tree
            .get(keys::SEARCH_AT)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(applied);
        if catalog.search.indexed_up_to()? != search_at {
            tracing::warn!(
                applied,
                "search index is not at the projected state; rebuilding its documents"
            );
            let started = std::time::Instant::now();
            catalog.reindex_documents()?;
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "search index rebuilt from the catalogue"
            );
        }
        Ok(catalog)
    }

    /// Deletes the catalogue in `dir` and projects `ledger` into a new one.
    pub fn rebuild(
        dir: &Path,
        ledger: &Ledger,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Self, CatalogError> {
        Self::rebuild_with_cache(dir, ledger, DEFAULT_CACHE_BYTES, progress)
    }

    /// [`Catalog::rebuild`] with a page cache of `cache_bytes`.
    pub fn rebuild_with_cache(
        dir: &Path,
        ledger: &Ledger,
        cache_bytes: u64,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Self, CatalogError> {
        for sub in ["catalog.db", "search"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .map_err(|e| CatalogError::Setup(format!("{}: {e}", p.display())))?;
            }
        }
        // A rebuild indexes the whole ledger in big chunks: a larger arena.
        let catalog = Self::open_indexing_with(dir, cache_bytes, 64 << 20)?;
        catalog.catch_up(ledger, progress)?;
        Ok(catalog)
    }

    /// Number of ledger leaves applied (the next leaf to apply).
    pub fn applied(&self) -> Result<u64, CatalogError> {
        Ok(self
            .tree
            .get(keys::APPLIED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Applies every leaf of `ledger` not yet applied; returns how many.
    ///
    /// The state of each chunk is applied on this thread while the search
    /// documents of the chunks before it are built and committed on
    /// another, so the two use a core each (a search commit would otherwise
    /// stall the next chunk). A document built there may already show a
    /// later chunk's state than the commit it goes into claims: documents
    /// are a pure function of the state, and a crash in between leaves the
    /// index behind `SEARCH_AT`, which the next open repairs.
    ///
    /// A chunk is stored (compressed, written, flushed, added to the graph)
    /// on this thread before the next is projected, not beside it: sled
    /// 0.34 writes a batch under a lock that every read in the process
    /// waits on, so a projector reading while the chunk before it is
    /// written only waits. Tried twice, with the chunk's changes readable
    /// to the next until stored; no faster (see the benchmarks' guide).
    pub fn catch_up(
        &self,
        ledger: &Ledger,
        progress: &dyn Fn(u64, u64),
    ) -> Result<u64, CatalogError> {
        self.catch_up_in_chunks(ledger, CHUNK, progress)
    }

    /// [`Catalog::catch_up`] `chunk` leaves at a time.
    fn catch_up_in_chunks(
        &self,
        ledger: &Ledger,
        chunk: u64,
        progress: &dyn Fn(u64, u64),
    ) -> Result<u64, CatalogError> {
        std::thread::scope(|scope| {
            // A few chunks may wait for the search thread, which takes
            // them into one commit: the projector goes on meanwhile.
            let (chunks, backlogs) = std::sync::mpsc::sync_channel::<SearchBacklog>(4);
            let indexer = std::thread::Builder::new()
                .name("catalog-search".into())
                .spawn_scoped(scope, move || -> Result<(), CatalogError> {
                    while let Ok(mut backlog) = backlogs.recv() {
                        // Whatever queued meanwhile goes into the same commit.
                        while let Ok(later) = backlogs.try_recv() {
                            backlog.absorb(later);
                        }
                        self.commit_search(&mut backlog)?;
                    }
                    Ok(())
                })
                .map_err(|e| CatalogError::Setup(format!("search thread: {e}")))?;
            let applied = self.each_unapplied_chunk(ledger, chunk, |leaves| {
                let mut backlog = SearchBacklog::default();
                let end = leaves.end();
                self.apply_opened(leaves, &mut backlog)?;
                if !backlog.is_empty() && chunks.send(backlog).is_err() {
                    // The search thread stopped: its error is returned below.
                    return Err(CatalogError::Setup("search thread stopped".into()));
                }
                progress(end, ledger.size());
                Ok(())
            });
            drop(chunks);
            let indexed = indexer
                .join()
                .map_err(|_| CatalogError::Corrupt("search thread panicked".into()))?;
            // The search thread's own error names the cause better.
            indexed?;
            applied
        })
    }

    /// Hands `apply` the leaves of `ledger` not yet applied, a chunk at a
    /// time and decoded; returns how many there were. When there is more
    /// than one chunk, a `catalog-read` thread reads and decodes the next
    /// while `apply` projects this one.
    fn each_unapplied_chunk(
        &self,
        ledger: &Ledger,
        chunk: u64,
        mut apply: impl FnMut(OpenedLeaves) -> Result<(), CatalogError>,
    ) -> Result<u64, CatalogError> {
        let size = ledger.size();
        let start = self.applied()?;
        if size.saturating_sub(start) <= chunk {
            // One chunk or none (a serving node's usual catch-up): nothing
            // to read ahead.
            if start < size {
                let leaves = ledger.leaves(start..size)?;
                apply(open_leaves(start, &leaves)?)?;
            }
            return Ok(size.saturating_sub(start));
        }
        std::thread::scope(|scope| {
            let (chunks, read) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("catalog-read".into())
                .spawn_scoped(scope, move || {
                    let mut at = start;
                    while at < size {
                        let end = (at + chunk).min(size);
                        let opened = ledger
                            .leaves(at..end)
                            .map_err(CatalogError::from)
                            .and_then(|leaves| open_leaves(at, &leaves));
                        let failed = opened.is_err();
                        // Nobody listens once a chunk failed to apply.
                        if chunks.send(opened).is_err() || failed {
                            return;
                        }
                        at = end;
                    }
                })
                .map_err(|e| CatalogError::Setup(format!("ledger reading thread: {e}")))?;
            let mut applied = 0;
            for chunk in read {
                let chunk = chunk?;
                applied += chunk.len() as u64;
                apply(chunk)?;
            }
            Ok(applied)
        })
    }

    /// Applies leaves `first..first + leaves.len()`. Leaves already applied
    /// are skipped; a gap is an error.
    pub fn apply(&self, first: u64, leaves: &[Vec<u8>]) -> Result<(), CatalogError> {
        let mut search = SearchBacklog::default();
        self.apply_state(first, leaves, &mut search)?;
        self.commit_search(&mut search)
    }

    /// Applies every leaf of `ledger` not yet applied to the state and graph
    /// only, adding the search documents they touch to `search` for a later
    /// [`Catalog::commit_search`]; returns how many leaves were applied.
    pub fn catch_up_state(
        &self,
        ledger: &Ledger,
        search: &mut SearchBacklog,
    ) -> Result<u64, CatalogError> {
        self.each_unapplied_chunk(ledger, CHUNK, |leaves| self.apply_opened(leaves, search))
    }

    /// The state half of [`Catalog::apply`]: entity state, graph, history
    /// and the applied marker in one durable sled batch. Lookups and lineage
    /// see the leaves at once; search sees them at the next
    /// [`Catalog::commit_search`]. Every tantivy commit writes a segment, so
    /// a server taking many small batches commits search less often than it
    /// applies state.
    pub fn apply_state(
        &self,
        first: u64,
        leaves: &[Vec<u8>],
        search: &mut SearchBacklog,
    ) -> Result<(), CatalogError> {
        let skip = self.applied()?.saturating_sub(first) as usize;
        if skip >= leaves.len() {
            return Ok(());
        }
        let opened = open_leaves(first + skip as u64, &leaves[skip..])?;
        self.apply_opened(opened, search)
    }

    /// [`Catalog::apply_state`] of leaves already decoded. Leaves already
    /// applied are skipped; a gap is an error.
    fn apply_opened(
        &self,
        mut opened: OpenedLeaves,
        search: &mut SearchBacklog,
    ) -> Result<(), CatalogError> {
        let applied = self.applied()?;
        // A chunk made durable but not added to the graph (its flush
        // failed after the batch was written) would be skipped from here
        // on: the graph is then loaded again from the walk records.
        if self.graph_read().applied != applied {
            tracing::warn!(
                applied,
                "lineage graph behind the catalogue; loading it again"
            );
            self.load_graph(applied)?;
        }
        let first = opened.first;
        if first > applied {
            return Err(CatalogError::BadRequest(format!(
                "leaf {first} given but the catalogue has applied only {applied}"
            )));
        }
        let skip = (applied - first) as usize;
        if skip >= opened.len() {
            return Ok(());
        }
        let new_applied = opened.end();
        let opened = opened.events.split_off(skip);
        // Only this method writes the graph, and it is not run twice at
        // once (the catalogue has one projector), so the graph read here is
        // still current when the chunk's walks are added below.
        let graph = self.graph_read();
        let mut pending = Pending::projecting(&self.tree, &graph, self.dictionaries());
        for (leaf, o) in &opened {
            project::apply(&mut pending, *leaf, o)?;
        }
        let walks = std::mem::take(&mut pending.walks);
        // One sled value per group of records instead of one per record:
        // half of what a chunk inserted were walk records.
        pending.writes.extend(WalkRecord::grouped(walks.values()));
        let nodes = pending.take_nodes();
        let writes = std::mem::take(&mut pending.writes);
        let touched = std::mem::take(&mut pending.touched);
        drop(pending);
        drop(graph);
        // Node records are encoded and compressed here, once per chunk and
        // on every core, however often the chunk changed them: in one pass
        // with the dictionary of their type, or kept apart to train one
        // when their type has none yet.
        let current = self.dictionaries();
        let (compressed, fresh): (Vec<_>, Vec<_>) = nodes
            .into_par_iter()
            .map(|(subject, node)| {
                let record = stored::encode_node(&node);
                let dictionary = current.of_type(&node.node_type);
                let done = dictionary.is_some();
                let record = if done {
                    stored::kept_node(record, dictionary)
                } else {
                    record
                };
                (keys::node(&subject), record, done)
            })
            .partition(|(_, _, done)| *done);
        // Sorted by key: the records a dictionary is trained from, and so
        // the dictionary, do not depend on the order a hash map gave them.
        let fresh: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            fresh.into_iter().map(|(k, v, _)| (k, v)).collect();
        let dictionaries = self.train_dictionaries(&fresh);
        let fresh: Vec<(Vec<u8>, Vec<u8>)> = if fresh.is_empty() {
            Vec::new()
        } else {
            fresh
                .into_par_iter()
                .map(|(k, v)| {
                    let dictionary = dictionaries.of_type(keys::node_type(&k));
                    (k, stored::kept_node(v, dictionary))
                })
                .collect()
        };
        let writes = writes
            .into_iter()
            .chain(compressed.into_iter().map(|(k, v, _)| (k, v)))
            .chain(fresh);
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            batch.insert(k, v);
        }
        // A dictionary is durable with the first records made with it.
        let unstored = self
            .unstored_dictionaries
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        for node_type in &unstored {
            if let Some(d) = dictionaries.of_type(node_type) {
                batch.insert(keys::node_dictionary(node_type), d.bytes());
            }
        }
        batch.insert(keys::APPLIED, &new_applied.to_be_bytes());
        let touches_search = !touched.is_empty();
        if touches_search {
            // The index is current only once it has caught up to here.
            batch.insert(keys::SEARCH_AT, &new_applied.to_be_bytes());
        }
        let changes_access = opened
            .iter()
            .any(|(_, o)| access::may_change_viewers(o.body()));
        self.tree.apply_batch(batch)?;
        // Freeing a chunk's decoded events is not the projector's work.
        rayon::spawn(move || drop(opened));
        if changes_access {
            // After the state is readable: see `access_epoch`.
            self.access_epoch
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        // Durable state first: the index never claims more than it.
        self.db.flush()?;
        if !unstored.is_empty() {
            if let Ok(mut u) = self.unstored_dictionaries.lock() {
                u.retain(|t| !unstored.contains(t));
            }
        }
        // Durable: walks may now see the chunk.
        let mut graph = self.graph_write();
        for walk in walks.values() {
            graph.add(walk);
        }
        graph.applied = new_applied;
        drop(graph);
        // The commit that takes these documents claims the applied size
        // `SEARCH_AT` names (written above only when the chunk touched a
        // document): a later chunk that touched none must not move that
        // claim past it, or the next open finds the index "behind" and
        // rebuilds every document.
        if touches_search {
            search.applied = new_applied;
        }
        search.subjects.extend(touched);
        Ok(())
    }

    /// A number that changes each time applied events may have changed
    /// what a principal is to the API — its roles, its projects, the grants
    /// it holds (a registration, a grant or revocation, a membership, a
    /// review: every kind but those that only add lineage). It changes only
    /// after their state is readable, so whoever reads it and then resolves
    /// a principal from the catalogue holds an answer at least as new as
    /// that value: kept against it, the answer is stale exactly when the
    /// value has moved on. Time still counts apart (grants and projects
    /// end at a time).
    pub fn access_epoch(&self) -> u64 {
        self.access_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes the resident lineage graph holds (approximate: its tables'
    /// capacities).
    pub fn lineage_graph_bytes(&self) -> usize {
        self.graph_read().approximate_bytes()
    }

    fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, LineageIndex> {
        // A panic while adding walks leaves at worst a node without all its
        // edges; nothing is gained by refusing every later walk.
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The dictionaries node records are read with.
    fn dictionaries(&self) -> std::sync::Arc<stored::NodeDictionaries> {
        self.node_dictionaries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The dictionaries a chunk's node records are compressed with: the
    /// catalogue's, and one trained now for each node type that has none
    /// once enough of its records have been applied, in this chunk or in
    /// the small chunks since the catalogue opened. `records` are the
    /// chunk's encoded node records of types with no dictionary, by key.
    fn train_dictionaries(
        &self,
        records: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> std::sync::Arc<stored::NodeDictionaries> {
        let mut dictionaries = self.dictionaries();
        let mut trained = false;
        let mut gathered = self
            .training_records
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (k, v) in records {
            let node_type = keys::node_type(k);
            if dictionaries.of_type(node_type).is_none() {
                match gathered.get_mut(node_type) {
                    Some(records) => records.push(v.clone()),
                    None => {
                        gathered.insert(node_type.to_string(), vec![v.clone()]);
                    }
                }
            }
        }
        let ready: Vec<String> = gathered
            .iter()
            .filter(|(_, records)| records.len() >= stored::NodeDictionary::TRAIN_FROM)
            .map(|(node_type, _)| node_type.clone())
            .collect();
        for node_type in ready {
            // Tried once from these records: a type whose records train
            // nothing gathers afresh rather than without bound.
            let Some(records) = gathered.remove(&node_type) else {
                continue;
            };
            let node_type = node_type.as_str();
            let started = std::time::Instant::now();
            let Some(d) = stored::NodeDictionary::train(records.iter().map(|r| &r[..])) else {
                continue;
            };
            tracing::info!(
                node_type,
                bytes = d.bytes().len(),
                seconds = started.elapsed().as_secs_f64(),
                "trained a compression dictionary for node records"
            );
            dictionaries = std::sync::Arc::new(dictionaries.with(node_type, d));
            trained = true;
            if let Ok(mut u) = self.unstored_dictionaries.lock() {
                u.push(node_type.to_string());
            }
        }
        drop(gathered);
        if trained {
            *self
                .node_dictionaries
                .write()
                .unwrap_or_else(|e| e.into_inner()) = dictionaries.clone();
        }
        dictionaries
    }

    fn graph_write(&self) -> std::sync::RwLockWriteGuard<'_, LineageIndex> {
        self.graph.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Upgrades state of an older format in place (see the crate docs).
    fn upgrade_format(&self) -> Result<(), CatalogError> {
        let format = self.tree.get(keys::FORMAT)?.map(|v| v.first().copied());
        match format {
            Some(Some(FORMAT)) => return Ok(()),
            Some(Some(old @ (4 | 5))) => {
                // Format 5 reads format 4's walk records as they are and
                // writes groups from here on; format 6 reads format 5's node
                // records as they are and compresses new ones with a
                // dictionary once it has one. The marker keeps a build that
                // cannot read groups or dictionary frames from opening the
                // catalogue.
                self.tree.insert(keys::FORMAT, &[FORMAT])?;
                self.db.flush()?;
                tracing::info!("catalogue storage is format {old}; its records are read as they are and new ones written in format {FORMAT} (walk records in groups, node records with a trained dictionary)");
                return Ok(());
            }
            Some(Some(old @ (2 | 3))) => {
                // Format 4 reads the records of formats 2 (JSON) and 3
                // (binary, uncompressed) as they are: each is rewritten
                // when it next changes, and `clew reindex` rewrites them all.
                // Its walk records also mark what is ended or affected: one
                // pass over the node records adds those marks.
                let started = std::time::Instant::now();
                let marked = self.mark_ended_or_affected()?;
                self.db.flush()?;
                tracing::info!(
                    marked,
                    seconds = started.elapsed().as_secs_f64(),
                    "catalogue storage is format {old}; its records are read as they are and rewritten in format {FORMAT} as they change (`clew reindex` rewrites them all)"
                );
                return Ok(());
            }
            Some(other) => {
                return Err(CatalogError::Corrupt(format!(
                    "catalogue storage format {other:?} is not one this build reads (it reads {FORMAT}); run `clew reindex`"
                )))
            }
            None if self.applied()? == 0 => {
                self.tree.insert(keys::FORMAT, &[FORMAT])?;
                return Ok(());
            }
            None => {}
        }
        let started = std::time::Instant::now();
        tracing::warn!("catalogue storage is format 1; upgrading to format {FORMAT} in place");
        let mut batch = sled::Batch::default();
        let mut nodes = 0u64;
        let dictionaries = self.dictionaries();
        for item in self.tree.scan_prefix(keys::node("")) {
            let (k, v) = item?;
            let node = stored::decode_node(&String::from_utf8_lossy(&k[1..]), &v, &dictionaries)?;
            for walk in WalkRecord::of_node(&node, false, 0, false) {
                batch.insert(walk.key(), walk.value());
            }
            nodes += 1;
        }
        let mut edges = 0u64;
        for item in self.tree.scan_prefix(keys::FORMAT_1_IN_EDGES) {
            let (k, _) = item?;
            batch.remove(k);
            edges += 1;
        }
        batch.insert(keys::FORMAT, &[FORMAT]);
        // One batch: a crash leaves format 1 whole, and the next open upgrades again.
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        tracing::info!(
            nodes,
            in_edge_keys_removed = edges,
            seconds = started.elapsed().as_secs_f64(),
            "catalogue storage upgraded to format {FORMAT}"
        );
        Ok(())
    }

    /// Adds to the walk records a mark for every node ended or affected (in
    /// one sled batch with the format marker, so a crash leaves the old
    /// format whole); how many it marked.
    fn mark_ended_or_affected(&self) -> Result<u64, CatalogError> {
        let mut batch = sled::Batch::default();
        let mut marked = 0u64;
        let dictionaries = self.dictionaries();
        for item in self.tree.scan_prefix(keys::node("")) {
            let (k, v) = item?;
            let subject = String::from_utf8_lossy(&k[1..]);
            let node = stored::decode_node(&subject, &v, &dictionaries)?;
            let Some(at) = node.ended_or_affected_at() else {
                continue;
            };
            let leaf = at.max(node.created_leaf);
            let key = WalkRecord::key_of(leaf, &subject);
            let mut walk = match self.tree.get(&key)? {
                Some(known) => WalkRecord::decode(&key, &known)?,
                None => WalkRecord::mark(&subject, leaf),
            };
            walk.ended_or_affected = true;
            batch.insert(key, walk.value());
            marked += 1;
        }
        batch.insert(keys::FORMAT, &[FORMAT]);
        self.tree.apply_batch(batch)?;
        Ok(marked)
    }

    /// Builds the resident graph from the walk records.
    fn load_graph(&self, applied: u64) -> Result<(), CatalogError> {
        let started = std::time::Instant::now();
        let mut graph = LineageIndex::load(self.tree.scan_prefix(keys::WALKS).flat_map(|item| {
            let records = item
                .map_err(CatalogError::from)
                .and_then(|(k, v)| WalkRecord::decode_stored(&k, &v));
            match records {
                Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        }))?;
        graph.applied = applied;
        tracing::info!(
            nodes = graph.len(),
            mib = graph.approximate_bytes() >> 20,
            seconds = started.elapsed().as_secs_f64(),
            "lineage graph loaded"
        );
        *self.graph_write() = graph;
        Ok(())
    }

    /// Rebuilds the search documents in `search` from the current state and
    /// commits them (nothing to do when no document was touched).
    pub fn commit_search(&self, search: &mut SearchBacklog) -> Result<(), CatalogError> {
        if search.subjects.is_empty() {
            return Ok(());
        }
        let p = Pending::new(&self.tree, self.dictionaries());
        let docs = self.documents(&p, search.subjects.iter())?;
        self.search.upsert(docs, search.applied)?;
        search.subjects.clear();
        Ok(())
    }

    /// The search documents of `subjects` (None for a subject with no
    /// document), each made with its dataset's and custodian site's records.
    /// Those are read and their attributes parsed once per call: the
    /// versions of one dataset, and the datasets of one site, share them.
    fn documents<'s>(
        &self,
        p: &Pending<'_>,
        subjects: impl Iterator<Item = &'s String>,
    ) -> Result<Vec<(String, Option<tantivy::TantivyDocument>)>, CatalogError> {
        // Records read so far, by subject (None: not there), shared by the
        // documents that need them, each with its attributes once parsed
        // (a dataset's are; a site's label is all a document takes).
        type Shared = std::rc::Rc<(NodeRecord, std::cell::OnceCell<serde_json::Value>)>;
        let mut read: std::collections::HashMap<String, Option<Shared>> =
            std::collections::HashMap::new();
        let mut shared = |subject: String| -> Result<Option<Shared>, CatalogError> {
            if let Some(node) = read.get(&subject) {
                return Ok(node.clone());
            }
            let node = p
                .node(&subject)?
                .map(|n| std::rc::Rc::new((n, std::cell::OnceCell::new())));
            read.insert(subject, node.clone());
            Ok(node)
        };
        fn attributes_of(d: &Shared) -> &serde_json::Value {
            d.1.get_or_init(|| d.0.attributes())
        }
        let mut out = Vec::new();
        for subject in subjects {
            let Some(node) = p.node(subject)? else {
                continue;
            };
            let attributes = node.attributes();
            let dataset = match attributes["datasetId"].as_str() {
                Some(d) if node.node_type == "dataset-version" => shared(format!("dataset/{d}"))?,
                _ => None,
            };
            let custodian = dataset.as_ref().and_then(|d| {
                attributes_of(d)["custodianSiteId"]
                    .as_str()
                    .map(|s| format!("site/{s}"))
            });
            let site = match custodian {
                Some(s) => shared(s)?,
                None => None,
            };
            out.push((
                subject.clone(),
                self.search.document(
                    &node,
                    &attributes,
                    dataset.as_ref().map(|d| (&d.0, attributes_of(d))),
                    site.as_deref().map(|(s, _)| s),
                ),
            ));
        }
        Ok(out)
    }

    /// Rebuilds every search document from the projected state.
    fn reindex_documents(&self) -> Result<(), CatalogError> {
        self.search.clear()?;
        let p = Pending::new(&self.tree, self.dictionaries());
        let mut subjects = Vec::new();
        for prefix in ["ndataset-version/", "nmodel-version/"] {
            for item in self.tree.scan_prefix(prefix.as_bytes()) {
                let (k, _) = item?;
                subjects.push(String::from_utf8_lossy(&k[1..]).into_owned());
            }
        }
        let applied = self.applied()?;
        for chunk in subjects.chunks(50_000) {
            let docs = self.documents(&p, chunk.iter())?;
            self.search.upsert(docs, applied)?;
        }
        if subjects.is_empty() {
            self.search.upsert(Vec::new(), applied)?;
        }
        self.tree.insert(keys::SEARCH_AT, &applied.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// An entity's current state.
    pub fn node(&self, subject: &str) -> Result<Option<NodeRecord>, CatalogError> {
        Pending::new(&self.tree, self.dictionaries()).node(subject)
    }

    /// Every entity of one type (`dataset`, `site`, `dataset-version`…), in
    /// subject order.
    pub fn nodes_of_type(&self, node_type: &str) -> Result<Vec<NodeRecord>, CatalogError> {
        let dictionaries = self.dictionaries();
        self.tree
            .scan_prefix(keys::node(&format!("{node_type}/")))
            .map(|item| {
                let (k, v) = item?;
                stored::decode_node(&String::from_utf8_lossy(&k[1..]), &v, &dictionaries)
            })
            .collect()
    }

    /// Every event about an entity, in leaf order: the one that created it,
    /// then every change (withdrawal, status change, revocation).
    pub fn history(&self, subject: &str) -> Result<Vec<HistoryEntry>, CatalogError> {
        let mut out: Vec<HistoryEntry> = self
            .node(subject)?
            .map(|n| n.created_by)
            .into_iter()
            .collect();
        for item in self.tree.scan_prefix(keys::history_of(subject)) {
            let (_, v) = item?;
            out.push(stored::decode_history(&v)?);
        }
        Ok(out)
    }

    /// Live access grants of a dataset (grant ids).
    pub fn grants(&self, dataset_id: &str) -> Result<Vec<NodeRecord>, CatalogError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(project::grants_prefix(dataset_id)) {
            let (_, grant) = item?;
            let subject = format!("access-grant/{}", String::from_utf8_lossy(&grant));
            if let Some(n) = self.node(&subject)? {
                if n.ended_leaf.is_none() {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Access grants held by a principal (`principal:<id>`) or a project
    /// (`project:<id>`) that are live: not revoked and, when they carry an
    /// expiry, not expired at `now` (unix seconds).
    pub fn grants_held_by(&self, grantee: &str, now: i64) -> Result<Vec<NodeRecord>, CatalogError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(project::grantee_prefix(grantee)) {
            let (key, _) = item?;
            let grant = String::from_utf8_lossy(&key[grantee.len() + 2..]).to_string();
            if let Some(n) = self.node(&format!("access-grant/{grant}"))? {
                let expired = n.attributes()["expiresAt"]
                    .as_str()
                    .and_then(clew_ledger::audit::unix_seconds)
                    .is_some_and(|at| at <= now);
                if n.ended_leaf.is_none() && !expired {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Searches dataset versions and model versions.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, CatalogError> {
        self.search.search(request)
    }

    /// The peer a benchmark holds [`Catalog::search`] against: the same
    /// search with its facets counted by tantivy's fast-field terms
    /// aggregations ([`SearchIndex::search_by_aggregation`]).
    pub fn search_by_aggregation(
        &self,
        request: &SearchRequest,
    ) -> Result<SearchResponse, CatalogError> {
        self.search.search_by_aggregation(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_events::{sample, seal, ProducerKey};
    use clew_ledger::{LedgerOptions, Submission};
    use prost::Message;

    /// A ledger in `dir` holding an ingest principal and the benchmarks'
    /// stream of `total` events (its first 200 the sites, which an admin
    /// records).
    fn stream_ledger(dir: &Path, total: u64) -> Ledger {
        stream_ledger_and_ingest(dir, total).0
    }

    /// [`stream_ledger`] and the key of its ingest principal.
    fn stream_ledger_and_ingest(dir: &Path, total: u64) -> (Ledger, ProducerKey) {
        let key = ProducerKey::generate("test.clew.example/ledger")
            .unwrap()
            .to_signer_text();
        let admin = ProducerKey::generate("admin").unwrap();
        let ledger = Ledger::create(
            &dir.join("ledger"),
            &key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .unwrap();
        let ingest = ProducerKey::generate("ingest").unwrap();
        let mut offset = 0;
        let mut submit =
            |key: &ProducerKey, actor: &str, bodies: Vec<clew_events::proto::event::Body>| {
                let subs = bodies
                    .into_iter()
                    .map(|b| {
                        offset += 1;
                        Submission::received(
                            offset,
                            seal(key, actor, b, None, None).unwrap().encode_to_vec(),
                        )
                    })
                    .collect();
                let r = ledger.sequence("test", subs).unwrap();
                assert!(r.rejected.is_empty(), "{:?}", r.rejected);
            };
        let ingest_role = [clew_events::proto::Role::Ingest];
        let mut first = vec![sample::principal("ingest", &ingest, &ingest_role)];
        first.extend((0..200).map(|i| sample::stream_body(i, total)));
        submit(&admin, "admin", first);
        submit(
            &ingest,
            "ingest",
            (200..total)
                .map(|i| sample::stream_body(i, total))
                .collect(),
        );
        (ledger, ingest)
    }

    /// The benchmarks' stream of 600 events, then what reaches back into
    /// earlier chunks: transforms naming versions made before as their
    /// outputs, training runs, models, validations and deployments (some
    /// retired again), withdrawals that mark what is downstream, and
    /// versions derived from a withdrawn one. Each its own ledger batch.
    fn lineage_ledger(dir: &Path) -> Ledger {
        use clew_events::proto::{self, event::Body};
        let (ledger, ingest) = stream_ledger_and_ingest(dir, 600);
        let dv = sample::dataset_version_id;
        // Deployment `d` of model `d` at site `d`, justified by validation `d`.
        let deployment = |d: u64, status: proto::DeploymentStatus| {
            sample::deployment(
                &format!("dep-x-{d}"),
                &format!("mv-x-{d}"),
                &sample::site_id(d),
                status,
                vec![format!("val-x-{d}")],
            )
        };
        let mut offset = 10_000;
        let mut submit = |body: Body| {
            offset += 1;
            let sealed = seal(&ingest, "ingest", body, None, None).unwrap();
            let r = ledger
                .sequence(
                    "test",
                    vec![Submission::received(offset, sealed.encode_to_vec())],
                )
                .unwrap();
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        };
        for d in 0..12u64 {
            submit(sample::transform(
                &format!("tf-gen-{d}"),
                vec![dv(d, 1)],
                vec![dv(d, 2)],
            ));
            submit(sample::training_run(
                &format!("run-x-{d}"),
                &format!("mv-x-{d}"),
                &dv(d, 2),
                &dv(d + 1, 2),
                &dv(d + 2, 2),
            ));
            submit(sample::model_version(
                &format!("mv-x-{d}"),
                &format!("run-x-{d}"),
            ));
            submit(sample::validation(
                &format!("val-x-{d}"),
                &format!("mv-x-{d}"),
                &dv(d + 3, 1),
                &sample::site_id(d),
                true,
            ));
            submit(deployment(d, proto::DeploymentStatus::Live));
        }
        for d in (0..12u64).step_by(2) {
            submit(deployment(d, proto::DeploymentStatus::Retired));
        }
        for d in 0..6u64 {
            submit(Body::DatasetVersionWithdrawn(
                proto::DatasetVersionWithdrawn {
                    dataset_version_id: dv(d, 1),
                    reason: proto::WithdrawalReason::ConsentWithdrawn as i32,
                    detail: String::new(),
                },
            ));
            submit(sample::dataset_version(d, 9, vec![dv(d, 2)]));
        }
        ledger
    }

    /// Every node record, and every lineage and impact answer, of `c`.
    fn every_answer(c: &Catalog) -> String {
        let mut out = Vec::new();
        for t in NODE_TYPES {
            let nodes = c.nodes_of_type(t).unwrap();
            out.push(serde_json::to_string(&nodes).unwrap());
            if *t == "site" || *t == "principal" {
                continue;
            }
            for n in nodes {
                let subject = n.subject();
                for d in [Direction::Upstream, Direction::Downstream] {
                    let a = c.lineage(&subject, d, 100, None).unwrap();
                    out.push(serde_json::to_string(&a).unwrap());
                }
                if *t == "dataset-version" {
                    let a = c.impact(&subject, None).unwrap();
                    out.push(serde_json::to_string(&a).unwrap());
                }
            }
        }
        out.join("\n")
    }

    #[test]
    fn chunks_that_reach_back_into_earlier_chunks_end_where_one_batch_does() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = lineage_ledger(dir.path());
        let size = ledger.size();
        let whole = Catalog::open(&dir.path().join("whole")).unwrap();
        whole.apply(0, &ledger.leaves(0..size).unwrap()).unwrap();
        let expected = every_answer(&whole);
        // The stream reaches back: withdrawals marked what is downstream,
        // a version was born affected, deployments were retired.
        let affected = |t: &str| {
            whole
                .nodes_of_type(t)
                .unwrap()
                .iter()
                .filter(|n| !n.affected_by.is_empty())
                .count()
        };
        assert!(affected("deployment") >= 6, "{}", affected("deployment"));
        assert!(affected("dataset-version") >= 12);
        let retired = whole
            .nodes_of_type("deployment")
            .unwrap()
            .iter()
            .filter(|n| n.ended_leaf.is_some())
            .count();
        assert_eq!(retired, 6);
        // Chunks of one leaf: every read of an earlier leaf, every edge and
        // mark a chunk adds to a node, is of a chunk already in sled and in
        // the resident graph.
        for chunk in [1, 3, 64] {
            let path = dir.path().join(format!("chunks-of-{chunk}"));
            let c = Catalog::open(&path).unwrap();
            assert_eq!(
                c.catch_up_in_chunks(&ledger, chunk, &|_, _| {}).unwrap(),
                size
            );
            assert_eq!(c.applied().unwrap(), size);
            assert_eq!(c.graph_read().applied, size);
            assert!(every_answer(&c) == expected, "chunks of {chunk}");
            // Reopened, the graph is loaded from the walk records stored.
            drop(c);
            let c = Catalog::open(&path).unwrap();
            assert!(every_answer(&c) == expected, "chunks of {chunk}, reopened");
        }
    }

    #[test]
    fn a_graph_left_behind_the_durable_state_is_loaded_again_before_the_next_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = stream_ledger(dir.path(), 600);
        let c = Catalog::open(&dir.path().join("catalog")).unwrap();
        let half = ledger.size() / 2;
        let leaves: Vec<Vec<u8>> = (0..ledger.size())
            .map(|i| ledger.leaf(i).unwrap())
            .collect();
        c.apply(0, &leaves[..half as usize]).unwrap();
        // As after a flush that failed once the batch was written: the
        // state has the chunk, the graph does not.
        *c.graph_write() = LineageIndex::default();
        c.apply(half, &leaves[half as usize..]).unwrap();
        let live = c.graph_read().len();
        let reopened = {
            drop(c);
            Catalog::open(&dir.path().join("catalog")).unwrap()
        };
        assert!(live > 200, "{live} nodes");
        assert_eq!(reopened.graph_read().len(), live);
        assert_eq!(reopened.graph_read().applied, ledger.size());
    }

    #[test]
    fn a_catch_up_over_many_chunks_reads_ahead_and_indexes_apart_and_ends_where_one_batch_does() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = stream_ledger(dir.path(), 1500);
        let size = ledger.size();
        // Many chunks: read ahead on the reading thread, search documents
        // committed on the search thread, several chunks to a commit when
        // it falls behind.
        let chunked = Catalog::open(&dir.path().join("chunked")).unwrap();
        let reported = std::sync::Mutex::new(Vec::new());
        let applied = chunked
            .catch_up_in_chunks(&ledger, 64, &|done, of| {
                reported.lock().unwrap().push((done, of))
            })
            .unwrap();
        assert_eq!(applied, size);
        let reported = reported.into_inner().unwrap();
        assert_eq!(reported.len() as u64, size.div_ceil(64));
        assert!(reported.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(reported.last(), Some(&(size, size)));
        // The same leaves in one batch.
        let whole = Catalog::open(&dir.path().join("whole")).unwrap();
        let leaves = ledger.leaves(0..size).unwrap();
        whole.apply(0, &leaves).unwrap();

        assert_eq!(chunked.applied().unwrap(), size);
        assert_eq!(chunked.search.indexed_up_to().unwrap(), size);
        for t in NODE_TYPES {
            let nodes = |c: &Catalog| serde_json::to_string(&c.nodes_of_type(t).unwrap()).unwrap();
            assert_eq!(nodes(&chunked), nodes(&whole), "{t}");
        }
        let everything = SearchRequest {
            limit: 500,
            ..Default::default()
        };
        let hits = |c: &Catalog| {
            let r = c.search(&everything).unwrap();
            let subjects: Vec<String> = r.hits.iter().map(|h| h.subject.clone()).collect();
            (r.total, serde_json::to_string(&r.facets).unwrap(), subjects)
        };
        let (total, _, _) = hits(&chunked);
        assert!(total > 300, "{total} documents");
        assert_eq!(hits(&chunked), hits(&whole));
        assert_eq!(chunked.graph_read().len(), whole.graph_read().len());
        // Nothing left to apply: no thread, nothing reported.
        assert_eq!(
            chunked
                .catch_up_in_chunks(&ledger, 64, &|_, _| panic!())
                .unwrap(),
            0
        );
    }

    #[test]
    fn a_chunk_touching_no_search_document_leaves_the_next_commit_claiming_what_the_state_says() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = stream_ledger(dir.path(), 600);
        let leaves = ledger.leaves(0..ledger.size()).unwrap();
        // A transform with no outputs changes no dataset or model version.
        let t = leaves
            .iter()
            .position(|b| {
                matches!(
                    clew_events::open(b).unwrap().body(),
                    clew_events::proto::event::Body::TransformRecorded(_)
                )
            })
            .expect("the stream records a transform") as u64;
        let c = Catalog::open(&dir.path().join("catalog")).unwrap();
        let search_at = |c: &Catalog| {
            let v = c.tree.get(keys::SEARCH_AT).unwrap().unwrap();
            u64::from_be_bytes(v.as_ref().try_into().unwrap())
        };
        let mut backlog = SearchBacklog::default();
        c.apply_state(0, &leaves[..t as usize], &mut backlog)
            .unwrap();
        assert!(!backlog.is_empty());
        assert_eq!(search_at(&c), t);
        c.apply_state(t, &leaves[t as usize..t as usize + 1], &mut backlog)
            .unwrap();
        assert_eq!(search_at(&c), t, "the transform touched a search document");
        c.commit_search(&mut backlog).unwrap();
        // What the next open compares: equal, so it rebuilds nothing.
        assert_eq!(c.search.indexed_up_to().unwrap(), search_at(&c));
        assert_eq!(c.applied().unwrap(), t + 1);
    }
}
