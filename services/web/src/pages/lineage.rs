//! The lineage explorer (`/lineage`): upstream or downstream from an entity,
//! to a chosen depth, as of the latest or any past signed checkpoint. The
//! answer is shown hop by hop, each hop grouped by kind with its count; a
//! hop or group wider than [`OPEN_UP_TO`] starts collapsed, so graphs of
//! thousands of nodes stay readable. The page names the signed checkpoint
//! (tree size and root hash) it shows.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{html, Chrome};
use crate::answers::{
    Checkpoint, CheckpointAtAnswer, Lineage, LineageAnswer, LineageEdge, LineageNode,
    CHECKPOINT_AT, LINEAGE,
};
use crate::drawing;
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

/// Groups this small start open.
pub(crate) const OPEN_UP_TO: usize = 25;

/// Deepest walk the API answers.
const MAX_DEPTH: u32 = 50;

pub(crate) struct NodeRow {
    pub link: String,
    pub label: String,
    pub id: String,
    pub status: String,
    pub affected: bool,
    pub ended: bool,
    /// How it is reached from the hop before: relation and entity id.
    pub via: String,
}

pub(crate) struct KindGroup {
    pub label: &'static str,
    pub count: String,
    pub open: bool,
    pub nodes: Vec<NodeRow>,
}

pub(crate) struct HopGroup {
    pub depth: u32,
    pub count: String,
    pub open: bool,
    pub kinds: Vec<KindGroup>,
}

/// How each node is reached from the hop before it: "relation id", the
/// first few of them.
fn reached_by(
    nodes: &[LineageNode],
    edges: &[LineageEdge],
    upstream: bool,
) -> BTreeMap<String, String> {
    let depth: BTreeMap<&str, u32> = nodes
        .iter()
        .map(|n| (n.subject.as_str(), n.depth))
        .collect();
    let mut via: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in edges {
        let (near, far) = if upstream {
            (&e.from, &e.to)
        } else {
            (&e.to, &e.from)
        };
        if let (Some(dn), Some(df)) = (depth.get(near.as_str()), depth.get(far.as_str())) {
            if df == &(dn + 1) {
                let id = text::id_of(near);
                let role = e
                    .role
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                via.entry(far.clone())
                    .or_default()
                    .push(format!("{}{role} {id}", e.relation));
            }
        }
    }
    via.into_iter()
        .map(|(k, mut v)| {
            let more = v.len().saturating_sub(3);
            v.truncate(3);
            let mut s = v.join("; ");
            if more > 0 {
                s.push_str(&format!("; and {more} more"));
            }
            (k, s)
        })
        .collect()
}

/// A lineage answer as hops of kind groups (the start, hop 0, left out).
pub(crate) fn hop_groups(lineage: &Lineage, upstream: bool) -> Vec<HopGroup> {
    let via = reached_by(&lineage.nodes, &lineage.edges, upstream);
    let mut by_hop: BTreeMap<u32, BTreeMap<&str, Vec<&LineageNode>>> = BTreeMap::new();
    for n in lineage.nodes.iter().filter(|n| n.depth > 0) {
        by_hop
            .entry(n.depth)
            .or_default()
            .entry(n.kind.as_str())
            .or_default()
            .push(n);
    }
    by_hop
        .into_iter()
        .map(|(depth, kinds)| {
            let count: usize = kinds.values().map(Vec::len).sum();
            HopGroup {
                depth,
                count: text::count(count as u64),
                open: count <= OPEN_UP_TO,
                kinds: kinds
                    .into_iter()
                    .map(|(kind, nodes)| KindGroup {
                        label: text::kind_label(kind),
                        count: text::count(nodes.len() as u64),
                        open: nodes.len() <= OPEN_UP_TO,
                        nodes: nodes
                            .into_iter()
                            .map(|n| NodeRow {
                                link: text::entity_link(&n.subject),
                                label: n.label.clone(),
                                id: text::id_of(&n.subject).to_string(),
                                status: n.status.clone().unwrap_or_default(),
                                affected: n.affected,
                                ended: n.ended_leaf.is_some(),
                                via: via.get(&n.subject).cloned().unwrap_or_default(),
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "lineage.html")]
struct LineagePage {
    chrome: Chrome,
    subject: String,
    upstream: bool,
    depth: u32,
    as_of: String,
    when: String,
    answer: Option<Shown>,
}

struct Shown {
    start_link: String,
    start_label: String,
    total: String,
    checkpoint: Checkpoint,
    latest: bool,
    hops: Vec<HopGroup>,
    prov: String,
    proofs: String,
    /// Where the drawn graph's data is.
    graph: String,
}

/// Reads `as_of` from a form: empty is the latest.
pub(crate) fn tree_size(value: &str) -> Result<Option<u64>, WebError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| WebError::BadRequest(format!("the tree size {v:?} is not a whole number")))
}

/// A moment as a person writes it — `2026-12-03` (the end of that day),
/// `2026-12-03 20:15` (the end of that minute), or RFC 3339 — as RFC 3339 in
/// UTC.
pub(crate) fn moment(value: &str) -> Option<String> {
    let v = value.trim();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let date = |d: &str| {
        d.len() == 10
            && d.as_bytes()[4] == b'-'
            && d.as_bytes()[7] == b'-'
            && digits(&d[..4])
            && digits(&d[5..7])
            && digits(&d[8..])
    };
    if v.is_empty() {
        None
    } else if date(v) {
        Some(format!("{v}T23:59:59Z"))
    } else if v.len() == 16 && date(&v[..10]) && matches!(v.as_bytes()[10], b' ' | b'T') {
        Some(format!("{}T{}:59Z", &v[..10], &v[11..]))
    } else {
        Some(v.to_string())
    }
}

/// The tree size an answer is asked as of: a size given, else the last
/// checkpoint signed by a moment given (the API's `checkpointAsOf`), else
/// the latest (None).
pub(crate) async fn as_of(
    web: &Web,
    who: &SignedIn,
    size: &str,
    when: &str,
) -> Result<Option<u64>, WebError> {
    if let Some(size) = tree_size(size)? {
        return Ok(Some(size));
    }
    match moment(when) {
        None => Ok(None),
        Some(time) => {
            let cp: crate::answers::CheckpointAsOfAnswer = web
                .ask(
                    &who.viewer,
                    crate::answers::CHECKPOINT_AS_OF,
                    json!({ "time": time }),
                )
                .await?;
            Ok(Some(cp.checkpoint_as_of.size))
        }
    }
}

/// What a lineage page or drawing asks for.
struct Asked {
    subject: String,
    upstream: bool,
    depth: u32,
    as_of: String,
    when: String,
}

fn asked(raw: Option<&str>) -> Result<Asked, WebError> {
    let mut a = Asked {
        subject: String::new(),
        upstream: true,
        depth: 3,
        as_of: String::new(),
        when: String::new(),
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "subject" => a.subject = v.trim().to_string(),
            "direction" => a.upstream = v != "downstream",
            "depth" => {
                a.depth = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=MAX_DEPTH).contains(d))
                    .ok_or_else(|| {
                        WebError::BadRequest(format!(
                            "the depth {v:?} is not a number of hops from 1 to {MAX_DEPTH}"
                        ))
                    })?
            }
            "as_of" => a.as_of = v.trim().to_string(),
            "when" => a.when = v.trim().to_string(),
            _ => {}
        }
    }
    Ok(a)
}

impl Asked {
    fn direction(&self) -> &'static str {
        if self.upstream {
            "upstream"
        } else {
            "downstream"
        }
    }

    /// This lineage's query string, for the links that fetch it again.
    fn link(&self, path: &str) -> String {
        let depth = self.depth.to_string();
        text::link(
            path,
            &[
                ("subject", &self.subject),
                ("direction", self.direction()),
                ("depth", &depth),
                ("as_of", &self.as_of),
                ("when", &self.when),
            ],
        )
    }
}

/// The API's lineage answer for what was asked, and the tree size asked
/// as of (None: the latest).
async fn lineage(web: &Web, who: &SignedIn, a: &Asked) -> Result<(Lineage, Option<u64>), WebError> {
    let size = self::as_of(web, who, &a.as_of, &a.when).await?;
    let answer: LineageAnswer = web
        .ask(
            &who.viewer,
            LINEAGE,
            json!({
                "subject": a.subject,
                "direction": if a.upstream { "UPSTREAM" } else { "DOWNSTREAM" },
                "depth": a.depth,
                "asOf": size,
            }),
        )
        .await?;
    Ok((answer.lineage, size))
}

/// `GET /lineage?subject=…&direction=upstream|downstream&depth=…&as_of=…`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let a = asked(raw.as_deref())?;
    let answer = if a.subject.is_empty() {
        None
    } else {
        let (l, size) = lineage(&web, &who, &a).await?;
        let cp: CheckpointAtAnswer = web
            .ask(&who.viewer, CHECKPOINT_AT, json!({ "size": l.as_of }))
            .await?;
        let start = l.nodes.iter().find(|n| n.depth == 0);
        let depth_s = a.depth.to_string();
        let only = [
            ("subject", a.subject.as_str()),
            ("direction", a.direction()),
            ("depth", depth_s.as_str()),
        ];
        Some(Shown {
            start_link: text::entity_link(&a.subject),
            start_label: start.map_or(a.subject.clone(), |n| n.label.clone()),
            total: text::count(l.nodes.len().saturating_sub(1) as u64),
            latest: size.is_none(),
            hops: hop_groups(&l, a.upstream),
            checkpoint: cp.checkpoint_at,
            prov: text::link("/session/prov/lineage", &only),
            proofs: text::link("/session/proofs/lineage", &only),
            graph: a.link("/lineage/graph.json"),
        })
    };
    html(&LineagePage {
        chrome: Chrome::of(&who, "lineage"),
        subject: a.subject,
        upstream: a.upstream,
        depth: a.depth,
        as_of: a.as_of,
        when: a.when,
        answer,
    })
}

/// `GET /lineage/graph.json?…` (the page's parameters): the answer the
/// page shows, as the drawn graph is given it.
pub(crate) async fn graph(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let a = asked(raw.as_deref())?;
    if a.subject.is_empty() {
        return Err(WebError::BadRequest(
            "name the entity whose lineage to draw".into(),
        ));
    }
    let (l, _) = lineage(&web, &who, &a).await?;
    Ok(axum::Json(drawing::of_lineage(&a.subject, &l)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(subject: &str, depth: u32) -> LineageNode {
        LineageNode::plain(subject, depth)
    }

    #[test]
    fn a_wide_hop_starts_collapsed_with_its_counts() {
        let mut nodes = vec![node("model-version/m", 0), node("training-run/t", 1)];
        let mut edges = vec![LineageEdge {
            from: "model-version/m".into(),
            to: "training-run/t".into(),
            relation: "wasGeneratedBy".into(),
            role: None,
        }];
        for i in 0..1000 {
            let v = format!("dataset-version/d{i}@1");
            nodes.push(node(&v, 2));
            edges.push(LineageEdge {
                from: "training-run/t".into(),
                to: v,
                relation: "used".into(),
                role: Some("train".into()),
            });
        }
        let l = Lineage {
            as_of: 9,
            nodes,
            edges,
        };
        let hops = hop_groups(&l, true);
        assert_eq!(hops.len(), 2);
        assert!(hops[0].open && hops[0].count == "1");
        assert_eq!(hops[0].kinds[0].nodes[0].via, "wasGeneratedBy m");
        assert!(!hops[1].open && hops[1].count == "1,000");
        assert_eq!(hops[1].kinds[0].label, "Dataset version");
        assert!(!hops[1].kinds[0].open);
        assert_eq!(hops[1].kinds[0].nodes[0].via, "used (train) t");
    }

    #[test]
    fn a_tree_size_is_a_whole_number_or_nothing() {
        assert_eq!(tree_size(" ").unwrap(), None);
        assert_eq!(tree_size("42").unwrap(), Some(42));
        assert!(tree_size("yesterday")
            .unwrap_err()
            .to_string()
            .contains("\"yesterday\""));
    }

    #[test]
    fn a_moment_a_person_writes_is_rfc_3339() {
        assert_eq!(moment(" "), None);
        assert_eq!(
            moment("2026-12-03").as_deref(),
            Some("2026-12-03T23:59:59Z")
        );
        assert_eq!(
            moment("2026-12-03 20:15").as_deref(),
            Some("2026-12-03T20:15:59Z")
        );
        assert_eq!(
            moment("2026-12-03T20:15").as_deref(),
            Some("2026-12-03T20:15:59Z")
        );
        assert_eq!(
            moment("2026-12-03T20:15:00+01:00").as_deref(),
            Some("2026-12-03T20:15:00+01:00")
        );
    }
}
