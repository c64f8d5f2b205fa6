//! Lineage queries: upstream / downstream to a depth, shortest path, and
//! withdrawal impact — each optionally "as of" a tree size.

use std::collections::HashMap;

use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use crate::adjacency::{BitmapPool, LineageIndex, NodeId};
use crate::graph::{Affect, Edge, NodeRecord};
use crate::{Catalog, CatalogError};

/// Which way to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Towards what a node was made from (sources, data, sites).
    Upstream,
    /// Towards what was made from a node (models, validations, deployments).
    Downstream,
}

/// Which edges a walk keeps: a lineage answer shows every edge between the
/// nodes reached; impact and path answers need only the edge each node was
/// first reached through, which every walk keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptEdges {
    /// Every edge crossed between nodes reached.
    All,
    /// Only each node's first edge (its parent).
    Parents,
}

/// Which nodes a walk may enter: the viewer's visibility. A node it
/// refuses is treated as absent — not shown, not crossed (a hidden entity is
/// not a bridge), and as a start it answers exactly as a node that never
/// existed.
#[derive(Clone, Copy)]
pub enum Admit<'a> {
    /// Every node (the ledger's own view, or a viewer who sees everything):
    /// the walk asks nothing per node.
    All,
    /// The nodes whose subject (`<type>/<id>`) this admits.
    Only(&'a (dyn Fn(&str) -> bool + Sync)),
}

impl Admit<'_> {
    /// Whether the node is admitted; its subject is looked up only when
    /// asked for.
    fn admits<'s>(&self, subject: impl FnOnce() -> &'s str) -> bool {
        match self {
            Admit::All => true,
            Admit::Only(f) => f(subject()),
        }
    }
}

/// Where a walk over the resident graph got to: the nodes reached (start
/// first, then hop by hop in the order reached), the edge each was first
/// reached through, and the edges between reached nodes. Node records are
/// read only when an answer is made of it.
#[derive(Debug)]
pub struct Reach {
    as_of: u64,
    upstream: bool,
    nodes: Vec<NodeId>,
    /// Where each hop's nodes start in `nodes` (hop 0, the start, at 0).
    hops: Vec<usize>,
    /// The edge each node was first reached through; [`NO_EDGE`] for the
    /// start.
    parents: Vec<u32>,
    edges: Vec<u32>,
}

/// The parent edge of the start of a walk.
const NO_EDGE: u32 = u32::MAX;

impl Reach {
    /// Nodes reached, the start included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a walk reaches at least its start.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Edges between the nodes reached (none kept by a walk of
    /// [`KeptEdges::Parents`]).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// The tree size the walk was made over.
    pub fn as_of(&self) -> u64 {
        self.as_of
    }

    /// What the walk reached, named in `graph` — the graph it was walked in,
    /// whose lock the caller still holds: the subjects, the edges, and each
    /// node's parent with the edge it came through.
    fn named(&self, graph: &LineageIndex) -> Named {
        let subjects: Vec<String> = self
            .nodes
            .iter()
            .map(|&id| graph.subject(id).to_string())
            .collect();
        let edges: Vec<Edge> = self.edges.iter().map(|&e| graph.edge(e)).collect();
        let parents: HashMap<String, (String, Edge)> = self
            .nodes
            .iter()
            .zip(&self.parents)
            .filter(|(_, &e)| e != NO_EDGE)
            .map(|(&id, &e)| {
                let from = self.parent_of(graph, e);
                (
                    graph.subject(id).to_string(),
                    (graph.subject(from).to_string(), graph.edge(e)),
                )
            })
            .collect();
        (subjects, edges, parents)
    }

    /// Each node's hops from the start, in the order of `nodes`.
    fn depths(&self) -> impl Iterator<Item = u32> + '_ {
        let ends = self.hops.iter().skip(1).copied().chain([self.nodes.len()]);
        self.hops
            .iter()
            .zip(ends)
            .enumerate()
            .flat_map(|(depth, (&start, end))| std::iter::repeat_n(depth as u32, end - start))
    }

    /// The node a walk came from when it first crossed edge `e` (the edge
    /// a node was reached through).
    fn parent_of(&self, graph: &LineageIndex, e: u32) -> NodeId {
        let slot = graph.slot(e);
        if self.upstream {
            slot.from
        } else {
            slot.to
        }
    }
}

/// Nodes reached (with their depth), edges crossed, and for each node the
/// node and edge it was first reached through.
type Walk = (
    Vec<(NodeRecord, u32)>,
    Vec<Edge>,
    HashMap<String, (String, Edge)>,
);

/// A walk's nodes as subjects, its edges, and each node's parent with the
/// edge it came through.
type Named = (Vec<String>, Vec<Edge>, HashMap<String, (String, Edge)>);

/// A node as seen in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// `<type>/<id>`.
    pub subject: String,
    /// Node type.
    pub node_type: String,
    /// Human-readable name.
    pub label: String,
    /// Leaf that created it.
    pub created_leaf: u64,
    /// Leaf that withdrew / retired it (as of the answer's tree size).
    pub ended_leaf: Option<u64>,
    /// Current status as of the answer's tree size (deployments, validations, withdrawals).
    pub status: Option<String>,
    /// True when a withdrawn dataset version lies upstream (or this is one).
    pub affected: bool,
    /// The withdrawals upstream.
    pub affected_by: Vec<Affect>,
    /// Hops from the start node.
    pub depth: u32,
    /// Impact answers: the site it belongs to (its own, or its dataset's
    /// custodian for a dataset or version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Impact answers: who recorded it (the creating event's actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Impact answers: the node one hop nearer the start it was reached from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_from: Option<String>,
    /// Impact answers: the PROV relation of that hop (e.g. `used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_by: Option<String>,
}

/// Nodes and edges of a lineage answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageAnswer {
    /// Tree size the answer is for.
    pub as_of: u64,
    /// Nodes, the start node first, then by depth.
    pub nodes: Vec<NodeView>,
    /// Edges between them.
    pub edges: Vec<Edge>,
}

/// What a withdrawal affects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactAnswer {
    /// Tree size the answer is for.
    pub as_of: u64,
    /// The dataset version.
    pub dataset_version: NodeView,
    /// Every downstream node: live deployments first, then other deployments,
    /// model versions, validations, training runs, transforms, dataset versions.
    pub affected: Vec<NodeView>,
    /// Count of live deployments among them.
    pub live_deployments: usize,
}

fn view(node: &NodeRecord, as_of: u64, depth: u32) -> NodeView {
    let ended = node.ended_leaf.filter(|l| *l < as_of);
    let affected_by: Vec<Affect> = node.affected_at(as_of).into_iter().cloned().collect();
    NodeView {
        subject: node.subject(),
        node_type: node.node_type.clone(),
        label: node.label.clone(),
        created_leaf: node.created_leaf,
        ended_leaf: ended,
        status: node.status_at(as_of).map(str::to_string),
        affected: !affected_by.is_empty()
            || (node.node_type == "dataset-version" && ended.is_some()),
        affected_by,
        depth,
        site: None,
        owner: None,
        reached_from: None,
        reached_by: None,
    }
}

impl Catalog {
    /// The tree size an answer is for: `as_of` if given, at most what the
    /// resident graph has absorbed (it is added to after sled, so it is
    /// never ahead of the node records).
    fn as_of(&self, as_of: Option<u64>) -> Result<u64, CatalogError> {
        let applied = self.graph_read().applied;
        Ok(as_of.map(|a| a.min(applied)).unwrap_or(applied))
    }

    fn node_at(&self, subject: &str, as_of: u64) -> Result<Option<NodeRecord>, CatalogError> {
        Ok(self.node(subject)?.filter(|n| n.exists_at(as_of)))
    }

    /// Walks the resident graph up or down from `start`, at most `max_depth`
    /// hops, over the first `as_of` leaves (default: everything applied),
    /// through the nodes `admit` lets in, keeping the edges `kept` says.
    /// This is the walk every lineage (all edges), path and impact answer
    /// (parents only) is made from, before any node record is read.
    pub fn reach(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        as_of: Option<u64>,
        admit: Admit<'_>,
        kept: KeptEdges,
    ) -> Result<Reach, CatalogError> {
        // One read of the lock (a second read while a writer waits would
        // deadlock): the graph's own applied size bounds the answer.
        let graph = self.graph_read();
        let as_of = as_of.map_or(graph.applied, |a| a.min(graph.applied));
        walk(&graph, start, direction, max_depth, as_of, admit, kept)
    }

    /// Walks as [`Catalog::reach`] does, names what the walk reached, and
    /// reads those nodes' records (in parallel: the graph's lock is not held
    /// while sled is read).
    fn walk(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        as_of: u64,
        admit: Admit<'_>,
        kept: KeptEdges,
    ) -> Result<Walk, CatalogError> {
        // The walk and the naming of its node numbers under one read of the
        // lock: a graph loaded again meanwhile (after a rebuild, or a chunk
        // that reached sled but not the graph) numbers its nodes afresh, and
        // a number read in another graph than it was walked in names another
        // node — one the walk's `admit` never saw.
        let (subjects, depths, edges, parents) = {
            let graph = self.graph_read();
            let reach = walk(
                &graph,
                start,
                direction,
                max_depth,
                as_of.min(graph.applied),
                admit,
                kept,
            )?;
            let (subjects, edges, parents) = reach.named(&graph);
            (subjects, reach.depths().collect::<Vec<_>>(), edges, parents)
        };
        let records: Vec<NodeRecord> = subjects
            .par_iter()
            .map(|subject| {
                self.node(subject)?.ok_or_else(|| {
                    CatalogError::Corrupt(format!(
                        "{subject} is in the lineage graph but has no node record"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let nodes = records.into_iter().zip(depths).collect();
        Ok((nodes, edges, parents))
    }

    /// Nodes and edges up or down from `start`, at most `depth` hops, over
    /// the first `as_of` leaves (default: everything applied).
    pub fn lineage(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        as_of: Option<u64>,
    ) -> Result<LineageAnswer, CatalogError> {
        self.lineage_within(start, direction, depth, as_of, Admit::All)
    }

    /// [`Catalog::lineage`] over the nodes `admit` lets in.
    pub fn lineage_within(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        as_of: Option<u64>,
        admit: Admit<'_>,
    ) -> Result<LineageAnswer, CatalogError> {
        let as_of = self.as_of(as_of)?;
        let (nodes, edges, _) = self.walk(start, direction, depth, as_of, admit, KeptEdges::All)?;
        Ok(LineageAnswer {
            as_of,
            nodes: nodes.iter().map(|(n, d)| view(n, as_of, *d)).collect(),
            edges,
        })
    }

    /// The shortest chain of lineage edges between two nodes, in whichever
    /// direction one depends on the other ("did this deployment ever see data
    /// from site X?"); `None` when neither depends on the other.
    pub fn path(
        &self,
        from: &str,
        to: &str,
        as_of: Option<u64>,
    ) -> Result<Option<LineageAnswer>, CatalogError> {
        self.path_within(from, to, as_of, Admit::All)
    }

    /// [`Catalog::path`] over the nodes `admit` lets in.
    pub fn path_within(
        &self,
        from: &str,
        to: &str,
        as_of: Option<u64>,
        admit: Admit<'_>,
    ) -> Result<Option<LineageAnswer>, CatalogError> {
        let as_of = self.as_of(as_of)?;
        // No chain joins an entity that is absent (or refused): null, not an error.
        for end in [from, to] {
            if self.node_at(end, as_of)?.is_none() || !admit.admits(|| end) {
                return Ok(None);
            }
        }
        for (a, b) in [(from, to), (to, from)] {
            let (nodes, _, parent) = self.walk(
                a,
                Direction::Upstream,
                u32::MAX,
                as_of,
                admit,
                KeptEdges::Parents,
            )?;
            if !nodes.iter().any(|(n, _)| n.subject() == b) {
                continue;
            }
            let by_subject: HashMap<String, &NodeRecord> =
                nodes.iter().map(|(n, _)| (n.subject(), n)).collect();
            let mut chain = vec![b.to_string()];
            let mut edges = Vec::new();
            let mut at = b.to_string();
            while let Some((prev, edge)) = parent.get(&at) {
                edges.push(edge.clone());
                chain.push(prev.clone());
                at = prev.clone();
            }
            chain.reverse();
            edges.reverse();
            let views = chain
                .iter()
                .enumerate()
                .filter_map(|(i, s)| by_subject.get(s).map(|n| view(n, as_of, i as u32)))
                .collect();
            return Ok(Some(LineageAnswer {
                as_of,
                nodes: views,
                edges,
            }));
        }
        Ok(None)
    }

    /// Everything downstream of a dataset version, live deployments first.
    pub fn impact(
        &self,
        dataset_version: &str,
        as_of: Option<u64>,
    ) -> Result<ImpactAnswer, CatalogError> {
        self.impact_within(dataset_version, as_of, Admit::All)
    }

    /// [`Catalog::impact`] over the nodes `admit` lets in: what is reachable
    /// only through a refused node is not affected as far as this view goes.
    pub fn impact_within(
        &self,
        dataset_version: &str,
        as_of: Option<u64>,
        admit: Admit<'_>,
    ) -> Result<ImpactAnswer, CatalogError> {
        let as_of = self.as_of(as_of)?;
        let (nodes, _, parent) = self.walk(
            dataset_version,
            Direction::Downstream,
            u32::MAX,
            as_of,
            admit,
            KeptEdges::Parents,
        )?;
        // Each dataset's custodian, read once however many versions cite it.
        let mut custodians: HashMap<String, Option<String>> = HashMap::new();
        let mut views: Vec<NodeView> = Vec::with_capacity(nodes.len());
        for (n, d) in &nodes {
            let mut v = view(n, as_of, *d);
            v.owner = Some(n.created_by.actor.clone());
            let own = SiteFields::of(n);
            v.site = match n.node_type.as_str() {
                "dataset" => own.custodian_site_id,
                "dataset-version" => {
                    let dataset = own.dataset_id.unwrap_or_default();
                    match custodians.get(&dataset) {
                        Some(site) => site.clone(),
                        None => {
                            let site = self
                                .node(&format!("dataset/{dataset}"))?
                                .and_then(|d| SiteFields::of(&d).custodian_site_id);
                            custodians.insert(dataset, site.clone());
                            site
                        }
                    }
                }
                "site" => Some(n.id.clone()),
                _ => own.site_id,
            };
            if let Some((from, edge)) = parent.get(&v.subject) {
                v.reached_from = Some(from.clone());
                v.reached_by = Some(edge.relation.as_str().to_string());
            }
            views.push(v);
        }
        let start = views.remove(0);
        if start.node_type != "dataset-version" {
            return Err(CatalogError::BadRequest(format!(
                "{dataset_version} is not a dataset version"
            )));
        }
        let rank = |v: &NodeView| match (v.node_type.as_str(), v.status.as_deref()) {
            ("deployment", Some("LIVE")) => 0,
            ("deployment", _) => 1,
            ("model-version", _) => 2,
            ("validation", _) => 3,
            ("training-run", _) => 4,
            ("transform", _) => 5,
            ("dataset-version", _) => 6,
            _ => 7,
        };
        views.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then(a.depth.cmp(&b.depth))
                .then(a.subject.cmp(&b.subject))
        });
        let live_deployments = views.iter().filter(|v| rank(v) == 0).count();
        Ok(ImpactAnswer {
            as_of,
            dataset_version: start,
            affected: views,
            live_deployments,
        })
    }
}

/// The attributes an impact answer reads to place a node at a site, parsed
/// without building the rest (an impact answer reads thousands).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SiteFields {
    custodian_site_id: Option<String>,
    dataset_id: Option<String>,
    site_id: Option<String>,
}

impl SiteFields {
    /// Of `node`'s attributes; none when they are not an object of these.
    fn of(node: &NodeRecord) -> Self {
        serde_json::from_str(node.attributes.get()).unwrap_or_default()
    }
}

/// Breadth-first over `graph` (see [`Catalog::reach`]). An edge counts when
/// it was created within the first `as_of` leaves; the node at its other end
/// is then there too (lineage only references what already exists), and a
/// node is entered once, when first met, if it exists and is admitted.
fn walk(
    graph: &LineageIndex,
    start: &str,
    direction: Direction,
    max_depth: u32,
    as_of: u64,
    admit: Admit<'_>,
    kept: KeptEdges,
) -> Result<Reach, CatalogError> {
    let all_edges = kept == KeptEdges::All;
    let first = graph
        .id(start)
        .filter(|&id| graph.exists_at(id, as_of) && admit.admits(|| start))
        .ok_or_else(|| CatalogError::NotFound(format!("no entity {start}")))?;
    let upstream = direction == Direction::Upstream;
    // As of everything absorbed, every edge counts and every created node
    // is there: the walk reads neither leaf.
    let latest = as_of >= graph.applied;
    // Room for a small walk (a 10-hop lineage reaches a few dozen nodes)
    // without growing one push at a time.
    const ROOM: usize = 64;
    let mut nodes = Vec::with_capacity(ROOM);
    nodes.push(first);
    let mut hops = Vec::with_capacity(16);
    hops.push(0);
    let mut parents = Vec::with_capacity(ROOM);
    parents.push(NO_EDGE);
    let mut edges = Vec::with_capacity(if all_edges { ROOM } else { 0 });
    let mut seen = Visited::new(&graph.bitmaps, graph.len());
    seen.insert(first);
    // Whether a node met was not entered (absent or refused).
    let mut refused = false;
    let mut level = 0..1;
    let mut depth = 0;
    // The edge runs of up to `RUNS` nodes of a level are found before any
    // is read: finding one does not wait on reading another, so the memory
    // reads overlap.
    const RUNS: usize = 256;
    let mut runs = Vec::new();
    while !level.is_empty() && depth < max_depth {
        depth += 1;
        let end = nodes.len();
        hops.push(end);
        for from in level.step_by(RUNS) {
            runs.clear();
            runs.extend(nodes[from..end.min(from + RUNS)].iter().map(|&at| {
                if upstream {
                    graph.out_edges(at)
                } else {
                    graph.in_edges(at)
                }
            }));
            for &run in &runs {
                for (next, e) in run.iter() {
                    if !latest && graph.slot(e).leaf >= as_of {
                        continue;
                    }
                    if all_edges {
                        edges.push(e);
                    }
                    if seen.insert(next) {
                        let there = if latest {
                            graph.is_created(next)
                        } else {
                            graph.exists_at(next, as_of)
                        };
                        if there && admit.admits(|| graph.subject(next)) {
                            nodes.push(next);
                            parents.push(e);
                        } else {
                            refused = true;
                        }
                    }
                }
            }
        }
        level = end..nodes.len();
    }
    // Only edges between nodes reached: none leads to a node not entered
    // (an edge is crossed only from a node entered).
    if refused {
        let reached: hashbrown::HashSet<NodeId> = nodes.iter().copied().collect();
        edges.retain(|&e| {
            let slot = graph.slot(e);
            reached.contains(if upstream { &slot.to } else { &slot.from })
        });
    }
    Ok(Reach {
        as_of,
        upstream,
        nodes,
        hops,
        parents,
        edges,
    })
}

/// The nodes a walk has met: one bit per node of the graph, in a bitmap
/// borrowed from the graph's pool, so a walk neither allocates nor zeroes a
/// bitmap of the whole graph (nor hashes a small walk's nodes), and given
/// back with only the words it set cleared.
struct Visited<'g> {
    bits: Vec<u64>,
    /// The words set, to clear when given back.
    words: Vec<u32>,
    pool: &'g BitmapPool,
}

impl<'g> Visited<'g> {
    /// A bitmap of at least `nodes` bits, all clear.
    fn new(pool: &'g BitmapPool, nodes: usize) -> Self {
        Visited {
            bits: pool.take(nodes),
            words: Vec::with_capacity(64),
            pool,
        }
    }

    /// Marks `id` (a node of the graph the bitmap was taken for); whether
    /// it was not marked before.
    #[inline]
    fn insert(&mut self, id: NodeId) -> bool {
        let (w, bit) = (id as usize / 64, 1u64 << (id % 64));
        let word = self.bits[w];
        if word & bit != 0 {
            return false;
        }
        if word == 0 {
            self.words.push(w as u32);
        }
        self.bits[w] = word | bit;
        true
    }
}

impl Drop for Visited<'_> {
    fn drop(&mut self) {
        for &w in &self.words {
            self.bits[w as usize] = 0;
        }
        self.pool.give_back(std::mem::take(&mut self.bits));
    }
}

#[cfg(test)]
mod tests {
    use super::{BitmapPool, Visited};

    #[test]
    fn visited_marks_each_node_once_and_gives_its_bitmap_back_clear() {
        let pool = BitmapPool::default();
        let ids: Vec<u32> = (0..10_000u32).map(|i| i * 7).chain([1, 99_999]).collect();
        {
            let mut v = Visited::new(&pool, 100_000);
            for &id in &ids {
                assert!(v.insert(id), "{id} first time");
                assert!(!v.insert(id), "{id} second time");
            }
        }
        let bits = pool.take(100_000);
        assert!(bits.len() * 64 >= 100_000 && bits.iter().all(|w| *w == 0));
        pool.give_back(bits);
        // The next walk on the pooled bitmap meets every node afresh, and a
        // graph grown since gets a bitmap long enough.
        let mut v = Visited::new(&pool, 200_000);
        for &id in ids.iter().chain(&[150_000, 199_999]) {
            assert!(v.insert(id), "{id} in the next walk");
        }
    }
}
