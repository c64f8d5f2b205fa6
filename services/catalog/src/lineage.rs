//! Lineage queries: upstream / downstream to a depth, shortest path, and
//! withdrawal impact — each optionally "as of" a tree size.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use crate::graph::{keys, Affect, Edge, NodeRecord};
use crate::project::{in_edge_from, out_edge};
use crate::{Catalog, CatalogError};

/// Which way to walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Towards what a node was made from (sources, data, sites).
    Upstream,
    /// Towards what was made from a node (models, validations, deployments).
    Downstream,
}

/// Which nodes a walk may enter: the viewer's visibility. A node it refuses
/// is treated as absent — not shown, not crossed (a hidden entity is not a
/// bridge), and as a start it answers exactly as a node that never existed.
pub type Admit<'a> = &'a (dyn Fn(&NodeRecord) -> bool + Sync);

/// Admits every node (the ledger's own view).
pub fn admit_all(_: &NodeRecord) -> bool {
    true
}

/// Nodes reached (with their depth), edges crossed, and for each node the
/// node and edge it was first reached through.
type Walk = (
    Vec<(NodeRecord, u32)>,
    Vec<Edge>,
    HashMap<String, (String, Edge)>,
);

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
    fn as_of(&self, as_of: Option<u64>) -> Result<u64, CatalogError> {
        let applied = self.applied()?;
        Ok(as_of.map(|a| a.min(applied)).unwrap_or(applied))
    }

    fn node_at(&self, subject: &str, as_of: u64) -> Result<Option<NodeRecord>, CatalogError> {
        Ok(self.node(subject)?.filter(|n| n.exists_at(as_of)))
    }

    /// Edges of a node that existed in the tree of `as_of` leaves: what it
    /// depends on (`out`, kept in the node) or what depends on it.
    fn edges_at(
        &self,
        node: &NodeRecord,
        out: bool,
        as_of: u64,
    ) -> Result<Vec<Edge>, CatalogError> {
        if out {
            return Ok(node
                .out
                .iter()
                .filter(|e| e.created_leaf < as_of)
                .map(|e| out_edge(node, e))
                .collect());
        }
        let subject = node.subject();
        let prefix = keys::in_edges_of(&subject);
        let mut edges = Vec::new();
        for item in self.tree().scan_prefix(&prefix) {
            let (k, v) = item?;
            let e = in_edge_from(&k, &v, &subject, prefix.len())?;
            if e.created_leaf < as_of {
                edges.push(e);
            }
        }
        Ok(edges)
    }

    fn walk(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        as_of: u64,
        admit: Admit<'_>,
    ) -> Result<Walk, CatalogError> {
        let first = self
            .node_at(start, as_of)?
            .filter(|n| admit(n))
            .ok_or_else(|| CatalogError::NotFound(format!("no entity {start}")))?;
        let out = direction == Direction::Upstream;
        let mut nodes = vec![(first, 0)];
        let mut edges = Vec::new();
        let mut parent: HashMap<String, (String, Edge)> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
        // Level by level; each level's edge scans and node reads run in
        // parallel (order is kept, so answers are deterministic).
        let mut frontier: Vec<usize> = vec![0];
        let mut depth = 0;
        while !frontier.is_empty() && depth < max_depth {
            let expanded: Vec<Vec<Edge>> = frontier
                .par_iter()
                .map(|&i| self.edges_at(&nodes[i].0, out, as_of))
                .collect::<Result<_, _>>()?;
            let mut discovered: Vec<(String, String, Edge)> = Vec::new();
            for (&i, level_edges) in frontier.iter().zip(expanded) {
                let from = nodes[i].0.subject();
                for e in level_edges {
                    let next = if out { e.to.clone() } else { e.from.clone() };
                    edges.push(e.clone());
                    if seen.insert(next.clone()) {
                        discovered.push((next, from.clone(), e));
                    }
                }
            }
            let fetched: Vec<Option<NodeRecord>> = discovered
                .par_iter()
                .map(|(next, _, _)| Ok(self.node_at(next, as_of)?.filter(|n| admit(n))))
                .collect::<Result<_, CatalogError>>()?;
            frontier.clear();
            depth += 1;
            for ((next, from, e), node) in discovered.into_iter().zip(fetched) {
                if let Some(node) = node {
                    parent.insert(next, (from, e));
                    nodes.push((node, depth));
                    frontier.push(nodes.len() - 1);
                }
            }
        }
        // Only edges between nodes reached: none leads to a refused node.
        let reached: HashSet<String> = nodes.iter().map(|(n, _)| n.subject()).collect();
        edges.retain(|e| reached.contains(&e.from) && reached.contains(&e.to));
        Ok((nodes, edges, parent))
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
        self.lineage_within(start, direction, depth, as_of, &admit_all)
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
        let (nodes, edges, _) = self.walk(start, direction, depth, as_of, admit)?;
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
        self.path_within(from, to, as_of, &admit_all)
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
            if self.node_at(end, as_of)?.filter(|n| admit(n)).is_none() {
                return Ok(None);
            }
        }
        for (a, b) in [(from, to), (to, from)] {
            let (nodes, _, parent) = self.walk(a, Direction::Upstream, u32::MAX, as_of, admit)?;
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
        self.impact_within(dataset_version, as_of, &admit_all)
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
        )?;
        // Each dataset's custodian, read once however many versions cite it.
        let mut custodians: HashMap<String, Option<String>> = HashMap::new();
        let mut views: Vec<NodeView> = Vec::with_capacity(nodes.len());
        for (n, d) in &nodes {
            let mut v = view(n, as_of, *d);
            v.owner = Some(n.created_by.actor.clone());
            let attributes = n.attributes();
            let own = |key: &str| attributes[key].as_str().map(str::to_string);
            v.site = match n.node_type.as_str() {
                "dataset" => own("custodianSiteId"),
                "dataset-version" => {
                    let dataset = own("datasetId").unwrap_or_default();
                    match custodians.get(&dataset) {
                        Some(site) => site.clone(),
                        None => {
                            let site = self.node(&format!("dataset/{dataset}"))?.and_then(|d| {
                                d.attributes()["custodianSiteId"]
                                    .as_str()
                                    .map(str::to_string)
                            });
                            custodians.insert(dataset, site.clone());
                            site
                        }
                    }
                }
                "site" => Some(n.id.clone()),
                _ => own("siteId"),
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
