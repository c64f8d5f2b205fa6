//! The GraphQL output types and the entity resolvers: what a query answers
//! with, built from the read model (`crate::read`) for one viewer.

use std::sync::Arc;

use async_graphql::{Context, Json, Object, SimpleObject};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_catalog::{Direction, NodeRecord};
use clew_ledger::SignedCheckpoint;

use super::context::*;
use crate::access::Viewer;
use crate::read::{
    counts_as_numbers, history_of, lineage_out, one_hop, EventRef, HistoryEvent, LineageEdge,
    Withdrawal,
};
use clew_node::Node;

/// A signed checkpoint of the ledger (C2SP tlog-checkpoint).
#[derive(SimpleObject, Clone)]
pub struct Checkpoint {
    /// Tree size.
    pub(crate) size: u64,
    /// Base64 RFC 6962 root hash.
    pub(crate) root_hash: String,
    /// The signed note, byte for byte as served at /checkpoint.
    pub(crate) note: String,
}

impl From<&SignedCheckpoint> for Checkpoint {
    fn from(cp: &SignedCheckpoint) -> Self {
        Self {
            size: cp.size,
            root_hash: B64.encode(cp.root.0),
            note: cp.note_text(),
        }
    }
}

/// An entity of the catalogue.
pub struct Entity {
    pub(crate) record: NodeRecord,
    pub(crate) as_of: u64,
    pub(crate) viewer: Arc<Viewer>,
    pub(crate) node: Arc<Node>,
}

#[Object]
impl Entity {
    /// `<type>/<id>`.
    async fn subject(&self) -> String {
        self.record.subject()
    }
    /// `site`, `dataset`, `dataset-version`, `transform`, `training-run`,
    /// `model-version`, `validation`, `deployment`, `principal`, `access-grant`.
    async fn r#type(&self) -> &str {
        &self.record.node_type
    }
    /// Entity id.
    async fn id(&self) -> &str {
        &self.record.id
    }
    /// Human-readable name.
    async fn label(&self) -> &str {
        &self.record.label
    }
    /// The event that created it.
    async fn created_by(&self) -> EventRef {
        EventRef::from(&self.record.created_by)
    }
    /// Leaf that withdrew, revoked or retired it (as of the answer's size).
    async fn ended_leaf(&self) -> Option<u64> {
        self.record.ended_leaf.filter(|l| *l < self.as_of)
    }
    /// Status (deployments, validations) as of the answer's size.
    async fn status(&self) -> Option<&str> {
        self.record.status_at(self.as_of)
    }
    /// Whether a withdrawn dataset version lies upstream (or this is one).
    async fn affected(&self) -> bool {
        !self.record.affected_at(self.as_of).is_empty()
            || (self.record.node_type == "dataset-version" && self.record.ended_at(self.as_of))
    }
    /// The withdrawals upstream.
    async fn affected_by(&self) -> Vec<Withdrawal> {
        self.record
            .affected_at(self.as_of)
            .into_iter()
            .map(|a| Withdrawal {
                withdrawn: self
                    .viewer
                    .redact_subject(self.node.catalog(), &a.withdrawn),
                leaf_index: a.leaf,
            })
            .collect()
    }
    /// Its attributes: the defining event's body in proto3 JSON, except that
    /// counts are JSON numbers (proto3 JSON writes 64-bit integers as strings).
    async fn attributes(&self) -> Json<serde_json::Value> {
        let mut v = self.record.attributes();
        self.viewer.redact(self.node.catalog(), &mut v);
        counts_as_numbers(&mut v);
        Json(v)
    }
    /// A dataset's versions the caller may see, oldest first (empty for
    /// other entities).
    async fn versions(&self) -> Result<Vec<Entity>> {
        if self.record.node_type != "dataset" {
            return Ok(vec![]);
        }
        let (node, viewer, subject, as_of) = self.owned();
        blocking(move || {
            let a = one_hop(&node, &viewer, &subject, Direction::Downstream, as_of)?;
            let mut out = Vec::new();
            for n in a.nodes.iter().filter(|n| n.node_type == "dataset-version") {
                if let Some(record) = node.catalog().node(&n.subject)? {
                    out.push(Entity {
                        record,
                        as_of,
                        viewer: viewer.clone(),
                        node: node.clone(),
                    });
                }
            }
            out.sort_by_key(|e| e.record.created_leaf);
            Ok(out)
        })
        .await
    }
    /// The withdrawal / revocation / retirement details, if any.
    async fn ended_detail(&self) -> Option<Json<serde_json::Value>> {
        self.record.ended_detail.clone().map(|mut v| {
            self.viewer.redact(self.node.catalog(), &mut v);
            Json(v)
        })
    }
    /// What it depends on (one hop upstream).
    async fn upstream(&self) -> Result<Vec<LineageEdge>> {
        let (node, viewer, subject, as_of) = self.owned();
        blocking(move || {
            let a = one_hop(&node, &viewer, &subject, Direction::Upstream, as_of)?;
            Ok(lineage_out(a, &viewer, &node).edges)
        })
        .await
    }
    /// What depends on it (one hop downstream), at most `first`.
    async fn downstream(&self, #[graphql(default = 100)] first: usize) -> Result<Vec<LineageEdge>> {
        let (node, viewer, subject, as_of) = self.owned();
        blocking(move || {
            let a = one_hop(&node, &viewer, &subject, Direction::Downstream, as_of)?;
            let mut edges = lineage_out(a, &viewer, &node).edges;
            edges.truncate(first.min(1000));
            Ok(edges)
        })
        .await
    }
    /// Every event about it, with its leaf index.
    async fn history(&self) -> Result<Vec<HistoryEvent>> {
        let (node, viewer, subject, as_of) = self.owned();
        blocking(move || history_of(&node, &viewer, &subject, as_of)).await
    }
}

impl Entity {
    fn owned(&self) -> (Arc<Node>, Arc<Viewer>, String, u64) {
        (
            self.node.clone(),
            self.viewer.clone(),
            self.record.subject(),
            self.as_of,
        )
    }
}

/// One search result.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct SearchHit {
    /// `dataset-version/…` or `model-version/…`.
    pub(crate) subject: String,
    /// Title.
    pub(crate) title: String,
    /// Relevance score (0 when sorted by recency).
    pub(crate) score: f32,
    /// Leaf that published it.
    pub(crate) leaf_index: u64,
    /// Highlighted description snippet (`<b>` marks).
    pub(crate) snippet: String,
    /// Highlighted title.
    pub(crate) title_snippet: String,
}

#[async_graphql::ComplexObject]
impl SearchHit {
    /// The entity itself.
    async fn entity(&self, ctx: &Context<'_>) -> Result<Option<Entity>> {
        let (node, viewer) = parts(ctx)?;
        lookup(node.clone(), viewer.clone(), self.subject.clone(), None).await
    }
}

/// One value of a facet and how many results carry it.
#[derive(SimpleObject)]
pub struct FacetValue {
    /// Value.
    pub(crate) value: String,
    /// Results carrying it (over the whole filtered result set).
    pub(crate) count: u64,
}

/// Counts of one facet.
#[derive(SimpleObject)]
pub struct Facet {
    /// Facet name (`modality`, `body_part`, `manufacturer`, `manufacturer_model`, `site`, …).
    pub(crate) name: String,
    /// Values, most frequent first.
    pub(crate) values: Vec<FacetValue>,
}

/// A page of search results.
#[derive(SimpleObject)]
pub struct SearchResult {
    /// Matches in total.
    pub(crate) total: usize,
    /// This page.
    pub(crate) hits: Vec<SearchHit>,
    /// Facet counts over every match the caller may see.
    pub(crate) facets: Vec<Facet>,
    /// Cursor of the next page.
    pub(crate) next_cursor: Option<String>,
}

/// An inclusion proof of one event in the ledger (RFC 6962 section 2.1.1).
#[derive(SimpleObject)]
pub struct InclusionProof {
    /// Event id.
    pub(crate) event_id: String,
    /// Leaf index.
    pub(crate) leaf_index: u64,
    /// Tree size the proof is for.
    pub(crate) tree_size: u64,
    /// Base64 sibling hashes, leaf to root.
    pub(crate) hashes: Vec<String>,
    /// The checkpoint of that size.
    pub(crate) checkpoint: Checkpoint,
    /// Base64 leaf (the canonical envelope); null when it refers to
    /// something the caller may not see.
    pub(crate) leaf: Option<String>,
    /// Self-contained C2SP tlog-proof receipt (null when `leaf` is).
    pub(crate) receipt: Option<String>,
}

/// A consistency proof between two tree sizes (RFC 6962 section 2.1.2).
#[derive(SimpleObject)]
pub struct ConsistencyProof {
    /// Older size.
    pub(crate) from_size: u64,
    /// Newer size.
    pub(crate) to_size: u64,
    /// Base64 proof hashes.
    pub(crate) hashes: Vec<String>,
    /// Checkpoint of the older size, if one was signed at it.
    pub(crate) from: Option<Checkpoint>,
    /// Checkpoint of the newer size, if one was signed at it.
    pub(crate) to: Option<Checkpoint>,
}

/// A refused submission (operators).
#[derive(SimpleObject)]
pub struct RejectedSubmission {
    /// Index in the rejected log.
    pub(crate) rejection_index: u64,
    /// Reason code, e.g. `BAD_SIGNATURE`.
    pub(crate) reason: String,
    /// What exactly was wrong.
    pub(crate) detail: String,
    /// Event id when it could be decoded.
    pub(crate) event_id: String,
    /// Input source and offset.
    pub(crate) source: String,
    /// Offset in that source.
    pub(crate) source_offset: u64,
    /// For duplicates, the leaf that already holds the event.
    pub(crate) original_leaf_index: Option<u64>,
    /// Base64 of the submitted bytes (first 1 MiB).
    pub(crate) raw: String,
}

/// The sequenced receipt of a recorded event.
#[derive(SimpleObject)]
pub struct Receipt {
    /// Event id.
    pub(crate) event_id: String,
    /// Subject of the event.
    pub(crate) subject: String,
    /// Leaf index.
    pub(crate) leaf_index: u64,
    /// The checkpoint signed for the batch that appended it.
    pub(crate) checkpoint: Checkpoint,
    /// Base64 inclusion proof hashes against that checkpoint.
    pub(crate) inclusion_proof: Vec<String>,
    /// Self-contained C2SP tlog-proof receipt, checkable offline.
    pub(crate) receipt: String,
}

/// The caller.
#[derive(SimpleObject)]
pub struct Me {
    /// Principal id.
    pub(crate) principal: String,
    /// Roles.
    pub(crate) roles: Vec<String>,
    /// Datasets the caller holds live access grants for (itself or through
    /// a project).
    pub(crate) granted_datasets: Vec<String>,
    /// Projects the caller belongs to now.
    pub(crate) projects: Vec<String>,
}

/// A newly issued bearer token (shown once).
#[derive(SimpleObject)]
pub struct IssuedToken {
    /// Principal it authenticates.
    pub(crate) principal: String,
    /// The token; only its digest is stored.
    pub(crate) token: String,
}

/// An event delivered to a subscriber.
#[derive(SimpleObject, Clone)]
pub struct SequencedEvent {
    /// Leaf index, event id, kind, actor and time.
    #[graphql(flatten)]
    pub(crate) event: EventRef,
    /// Subject.
    pub(crate) subject: String,
    /// Body (proto3 JSON), references the subscriber may not see redacted.
    pub(crate) payload: Json<serde_json::Value>,
    /// Base64 canonical envelope (the leaf), for verification; null when
    /// the payload had to be redacted.
    pub(crate) envelope: Option<String>,
}

/// Entity lookup shared by the typed lookups.
pub(crate) async fn lookup(
    node: Arc<Node>,
    viewer: Arc<Viewer>,
    subject: String,
    as_of: Option<u64>,
) -> Result<Option<Entity>> {
    blocking(move || {
        let applied = node.catalog().applied()?;
        let as_of = as_of.map_or(applied, |a| a.min(applied));
        let record = node
            .catalog()
            .node(&subject)?
            .filter(|r| r.exists_at(as_of))
            .filter(|r| viewer.node_visible(node.catalog(), r));
        Ok(record.map(|record| Entity {
            record,
            as_of,
            viewer,
            node,
        }))
    })
    .await
}
