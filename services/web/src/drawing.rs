//! What the pages' drawn graphs are given (`/lineage/graph.json`,
//! `/impact/graph.json`): the nodes of a lineage or impact answer with their
//! hop, kind, label, link and badge, and the edges oriented from the hop
//! nearer the start to the hop after it — the way each node is reached.
//! The browser (`assets/graph.js`) groups wide hops, lays the visible boxes
//! out with dagre and draws them as SVG; everything in it is text.

use std::collections::HashMap;

use serde::Serialize;

use crate::answers::{Impact, Lineage, LineageNode};
use crate::text;

/// A graph to draw.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Drawing {
    /// The subject every walk starts from (hop 0).
    pub start: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Reach>,
}

/// One entity.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Node {
    pub id: String,
    pub label: String,
    /// Its kind, as people say it ("Dataset version").
    pub kind: &'static str,
    pub hop: u32,
    pub link: String,
    /// `live`, `ended`, `affected` or empty.
    pub badge: &'static str,
}

/// How `far` is reached from `near` (one hop further from the start).
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Reach {
    pub near: String,
    pub far: String,
    pub relation: String,
}

fn boxed(n: &LineageNode, hop: u32) -> Node {
    let badge = if n.status.as_deref() == Some("LIVE") {
        "live"
    } else if n.ended_leaf.is_some() {
        "ended"
    } else if n.affected {
        "affected"
    } else {
        ""
    };
    Node {
        id: n.subject.clone(),
        label: n.label.clone(),
        kind: text::kind_label(&n.kind),
        hop,
        link: text::entity_link(&n.subject),
        badge,
    }
}

/// A lineage answer: each edge oriented from the lower hop to the higher;
/// edges within one hop are left out (they do not say how a node is
/// reached).
pub(crate) fn of_lineage(subject: &str, l: &Lineage) -> Drawing {
    let hop: HashMap<&str, u32> = l
        .nodes
        .iter()
        .map(|n| (n.subject.as_str(), n.depth))
        .collect();
    let edges = l
        .edges
        .iter()
        .filter_map(|e| {
            let (a, b) = (hop.get(e.from.as_str())?, hop.get(e.to.as_str())?);
            let relation = match &e.role {
                Some(r) => format!("{} ({r})", e.relation),
                None => e.relation.clone(),
            };
            match a.cmp(b) {
                std::cmp::Ordering::Less => Some(Reach {
                    near: e.from.clone(),
                    far: e.to.clone(),
                    relation,
                }),
                std::cmp::Ordering::Greater => Some(Reach {
                    near: e.to.clone(),
                    far: e.from.clone(),
                    relation,
                }),
                std::cmp::Ordering::Equal => None,
            }
        })
        .collect();
    Drawing {
        start: subject.to_string(),
        nodes: l.nodes.iter().map(|n| boxed(n, n.depth)).collect(),
        edges,
    }
}

/// An impact answer: the withdrawn version at hop 0 and each affected
/// entity reached from the entity the walk came through.
pub(crate) fn of_impact(i: &Impact) -> Drawing {
    let mut nodes = vec![boxed(&i.dataset_version, 0)];
    nodes.extend(i.affected.iter().map(|n| boxed(n, n.depth)));
    let edges = i
        .affected
        .iter()
        .filter_map(|n| {
            Some(Reach {
                near: n.reached_from.clone()?,
                far: n.subject.clone(),
                relation: n.reached_by.clone().unwrap_or_default(),
            })
        })
        .collect();
    Drawing {
        start: i.dataset_version.subject.clone(),
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::LineageEdge;

    fn node(subject: &str, depth: u32) -> LineageNode {
        LineageNode {
            label: format!("<b>{subject}</b>"),
            ..LineageNode::plain(subject, depth)
        }
    }

    #[test]
    fn lineage_edges_point_away_from_the_start_whichever_way_they_were_recorded() {
        let mut deployed = node("deployment/d", 1);
        deployed.status = Some("LIVE".into());
        let l = Lineage {
            as_of: 5,
            nodes: vec![
                node("dataset-version/a@1", 0),
                deployed,
                node("training-run/t", 1),
            ],
            edges: vec![
                // Recorded from the dependent to what it used.
                LineageEdge {
                    from: "deployment/d".into(),
                    to: "dataset-version/a@1".into(),
                    relation: "used".into(),
                    role: Some("monitor".into()),
                },
                LineageEdge {
                    from: "dataset-version/a@1".into(),
                    to: "training-run/t".into(),
                    relation: "wasGeneratedBy".into(),
                    role: None,
                },
                // Within one hop: not how anything is reached.
                LineageEdge {
                    from: "deployment/d".into(),
                    to: "training-run/t".into(),
                    relation: "used".into(),
                    role: None,
                },
            ],
        };
        let d = of_lineage("dataset-version/a@1", &l);
        assert_eq!(
            d.edges,
            vec![
                Reach {
                    near: "dataset-version/a@1".into(),
                    far: "deployment/d".into(),
                    relation: "used (monitor)".into()
                },
                Reach {
                    near: "dataset-version/a@1".into(),
                    far: "training-run/t".into(),
                    relation: "wasGeneratedBy".into()
                },
            ]
        );
        assert_eq!(d.nodes[1].badge, "live");
        assert_eq!(d.nodes[1].kind, "Deployment");
        // Labels stay as given: the page sets them as text, never markup.
        assert_eq!(d.nodes[0].label, "<b>dataset-version/a@1</b>");
    }

    #[test]
    fn impact_nodes_are_reached_from_the_entity_the_walk_came_through() {
        let mut run = node("training-run/t", 1);
        run.affected = true;
        run.reached_from = Some("dataset-version/a@1".into());
        run.reached_by = Some("used".into());
        let i = Impact {
            as_of: 3,
            live_deployments: 0,
            dataset_version: node("dataset-version/a@1", 0),
            affected: vec![run],
        };
        let d = of_impact(&i);
        assert_eq!(d.start, "dataset-version/a@1");
        assert_eq!(d.nodes.len(), 2);
        assert_eq!(d.nodes[1].badge, "affected");
        assert_eq!(
            d.edges,
            vec![Reach {
                near: "dataset-version/a@1".into(),
                far: "training-run/t".into(),
                relation: "used".into()
            }]
        );
    }
}
