//! The GraphQL schema: queries over the catalogue and the ledger, one
//! mutation per event kind, and subscriptions to the sequenced stream.
//!
//! Every resolver starts from the request's [`Viewer`]; nothing is returned
//! that it may not see (see [`crate::access`]). Mutation inputs are the
//! proto3 JSON mapping of the event bodies in `proto/clew/v1/events.proto`
//! (the wire contract partners already use), checked field by field —
//! unknown fields are refused — then signed by the server's service key with
//! the caller as the actor.

use std::collections::VecDeque;
use std::sync::Arc;

use async_graphql::{
    Context, Description, Enum, InputObject, InputValueError, InputValueResult, Json, Object,
    Scalar, ScalarType, Schema, SimpleObject, Subscription, Value,
};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_catalog::{Direction, HistoryEntry, NodeRecord, Range, SearchRequest, SortOrder};
use clew_events::proto::{self, event::Body, Role};
use clew_ledger::SignedCheckpoint;
use futures_util::Stream;

use crate::access::{DatasetAccess, Session, Viewer};
use crate::read::{
    admit, body_json, checkpoint_of, counts_as_numbers, hashes_b64, leaf_fully_visible,
    lineage_node, lineage_out, one_hop, visible_entity, Lineage, LineageEdge, LineageNode,
    Withdrawal,
};
use crate::{ApiError, TokenStore};
use clew_node::{Node, Outcome};

/// The served schema.
pub type ClewSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

type Result<T> = std::result::Result<T, async_graphql::Error>;

/// Limits a query must stay within.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Deepest selection nesting.
    pub depth: usize,
    /// Most fields (weighted) in one query.
    pub complexity: usize,
}

/// Builds the schema over a running node.
pub fn build_schema(
    node: Arc<Node>,
    tokens: Arc<TokenStore>,
    access: Arc<DatasetAccess>,
    limits: QueryLimits,
) -> ClewSchema {
    limited(limits)
        .data(node)
        .data(tokens)
        .data(access)
        .finish()
}

/// The schema that answers introspection-only queries (the standard
/// `getIntrospectionQuery`, GraphiQL's Docs pane): they nest deeper than
/// user queries may (TypeRef's `ofType` chain), but reach no catalogue data,
/// so they are counted apart, as other servers do — with their own bounds.
pub fn build_introspection_schema(
    node: Arc<Node>,
    tokens: Arc<TokenStore>,
    access: Arc<DatasetAccess>,
) -> ClewSchema {
    limited(QueryLimits {
        depth: 24,
        complexity: 20_000,
    })
    .data(node)
    .data(tokens)
    .data(access)
    .finish()
}

/// Whether every operation of `query` selects only `__schema`, `__type` and
/// `__typename` at its top (what [`build_introspection_schema`] answers).
pub fn is_introspection(query: &str) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    // Most queries never name the introspection fields: no second parse.
    if !query.contains("__schema") && !query.contains("__type") {
        return false;
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    let ops: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(m) => m.values().collect(),
    };
    !ops.is_empty()
        && ops.iter().all(|op| {
            !op.node.selection_set.node.items.is_empty()
                && op
                    .node
                    .selection_set
                    .node
                    .items
                    .iter()
                    .all(|s| match &s.node {
                        Selection::Field(f) => {
                            matches!(
                                f.node.name.node.as_str(),
                                "__schema" | "__type" | "__typename"
                            )
                        }
                        _ => false,
                    })
        })
}

fn limited(
    limits: QueryLimits,
) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot::default(), MutationRoot, SubscriptionRoot)
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        .limit_recursive_depth(32)
        .limit_directives(16)
}

/// The SDL of the schema as served (checked into `schema/clew.graphql`).
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}

/// Converts our errors with their codes (see [`ApiError::into_graphql`]).
trait Coded<T> {
    fn coded(self) -> Result<T>;
}

impl<T, E: Into<ApiError>> Coded<T> for std::result::Result<T, E> {
    fn coded(self) -> Result<T> {
        self.map_err(|e| e.into().into_graphql())
    }
}

fn parts<'a>(ctx: &'a Context<'_>) -> Result<(&'a Arc<Node>, &'a Arc<Viewer>)> {
    let node = ctx.data::<Arc<Node>>()?;
    let viewer = ctx
        .data::<Arc<Viewer>>()
        .map_err(|_| ApiError::Unauthenticated("no bearer token".into()).into_graphql())?;
    Ok((node, viewer))
}

/// Catalogue reads running at once: twice the cores. More only makes every
/// read slower (they are CPU-bound) and starves the HTTP workers, which also
/// carry the mutations; the rest wait their turn here.
fn readers() -> &'static tokio::sync::Semaphore {
    static READERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    READERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Runs a catalogue / ledger read off the async workers.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
{
    let _turn = readers()
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()).into_graphql())?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("reader task failed: {e}")).into_graphql())?
        .coded()
}

// ---------------------------------------------------------------- outputs

/// A signed checkpoint of the ledger (C2SP tlog-checkpoint).
#[derive(SimpleObject, Clone)]
pub struct Checkpoint {
    /// Tree size.
    size: u64,
    /// Base64 RFC 6962 root hash.
    root_hash: String,
    /// The signed note, byte for byte as served at /checkpoint.
    note: String,
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

/// The event that created or changed an entity.
#[derive(SimpleObject, Clone)]
pub struct EventRef {
    /// Leaf index of the event in the ledger.
    leaf_index: u64,
    /// Event id (UUIDv7).
    event_id: String,
    /// Event kind, e.g. `DATASET_REGISTERED`.
    kind: String,
    /// Principal recorded as the actor.
    actor: String,
    /// RFC 3339 time the producer gave.
    time: String,
}

fn kind_name(kind: &str) -> String {
    kind.trim_start_matches("EVENT_KIND_").to_string()
}

impl From<&HistoryEntry> for EventRef {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            leaf_index: h.leaf,
            event_id: h.event_id.clone(),
            kind: kind_name(&h.kind),
            actor: h.actor.clone(),
            time: h.time.clone(),
        }
    }
}

/// What the withdrawal of a dataset version affects.
#[derive(SimpleObject, Clone)]
pub struct Impact {
    /// Tree size the answer is for.
    as_of: u64,
    /// The dataset version.
    dataset_version: LineageNode,
    /// Everything downstream: live deployments first.
    affected: Vec<LineageNode>,
    /// Live deployments among them.
    live_deployments: usize,
}

/// One event, as recorded in the ledger.
#[derive(SimpleObject, Clone)]
pub struct HistoryEvent {
    /// Leaf index, event id, kind, actor and time.
    #[graphql(flatten)]
    event: EventRef,
    /// The event body (proto3 JSON), references the caller may not see redacted.
    payload: Json<serde_json::Value>,
}

/// An entity of the catalogue.
pub struct Entity {
    record: NodeRecord,
    as_of: u64,
    viewer: Arc<Viewer>,
    node: Arc<Node>,
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

fn history_of(
    node: &Node,
    viewer: &Viewer,
    subject: &str,
    as_of: u64,
) -> std::result::Result<Vec<HistoryEvent>, ApiError> {
    visible_entity(node, viewer, subject, as_of)?;
    let mut out = Vec::new();
    for h in node.catalog().history(subject)? {
        if h.leaf >= as_of {
            continue;
        }
        let leaf = node.ledger().leaf(h.leaf)?;
        let opened = clew_events::open(&leaf)
            .map_err(|e| ApiError::Internal(format!("leaf {}: {e}", h.leaf)))?;
        let mut payload = body_json(opened.body());
        viewer.redact(node.catalog(), &mut payload);
        out.push(HistoryEvent {
            event: EventRef::from(&h),
            payload: Json(payload),
        });
    }
    Ok(out)
}

/// One search result.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct SearchHit {
    /// `dataset-version/…` or `model-version/…`.
    subject: String,
    /// Title.
    title: String,
    /// Relevance score (0 when sorted by recency).
    score: f32,
    /// Leaf that published it.
    leaf_index: u64,
    /// Highlighted description snippet (`<b>` marks).
    snippet: String,
    /// Highlighted title.
    title_snippet: String,
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
    value: String,
    /// Results carrying it (over the whole filtered result set).
    count: u64,
}

/// Counts of one facet.
#[derive(SimpleObject)]
pub struct Facet {
    /// Facet name (`modality`, `body_part`, `manufacturer`, `site`, …).
    name: String,
    /// Values, most frequent first.
    values: Vec<FacetValue>,
}

/// A page of search results.
#[derive(SimpleObject)]
pub struct SearchResult {
    /// Matches in total.
    total: usize,
    /// This page.
    hits: Vec<SearchHit>,
    /// Facet counts over every match the caller may see.
    facets: Vec<Facet>,
    /// Cursor of the next page.
    next_cursor: Option<String>,
}

/// An inclusion proof of one event in the ledger (RFC 6962 section 2.1.1).
#[derive(SimpleObject)]
pub struct InclusionProof {
    /// Event id.
    event_id: String,
    /// Leaf index.
    leaf_index: u64,
    /// Tree size the proof is for.
    tree_size: u64,
    /// Base64 sibling hashes, leaf to root.
    hashes: Vec<String>,
    /// The checkpoint of that size.
    checkpoint: Checkpoint,
    /// Base64 leaf (the canonical envelope); null when it refers to
    /// something the caller may not see.
    leaf: Option<String>,
    /// Self-contained C2SP tlog-proof receipt (null when `leaf` is).
    receipt: Option<String>,
}

/// A consistency proof between two tree sizes (RFC 6962 section 2.1.2).
#[derive(SimpleObject)]
pub struct ConsistencyProof {
    /// Older size.
    from_size: u64,
    /// Newer size.
    to_size: u64,
    /// Base64 proof hashes.
    hashes: Vec<String>,
    /// Checkpoint of the older size, if one was signed at it.
    from: Option<Checkpoint>,
    /// Checkpoint of the newer size, if one was signed at it.
    to: Option<Checkpoint>,
}

/// A refused submission (operators).
#[derive(SimpleObject)]
pub struct RejectedSubmission {
    /// Index in the rejected log.
    rejection_index: u64,
    /// Reason code, e.g. `BAD_SIGNATURE`.
    reason: String,
    /// What exactly was wrong.
    detail: String,
    /// Event id when it could be decoded.
    event_id: String,
    /// Input source and offset.
    source: String,
    /// Offset in that source.
    source_offset: u64,
    /// For duplicates, the leaf that already holds the event.
    original_leaf_index: Option<u64>,
    /// Base64 of the submitted bytes (first 1 MiB).
    raw: String,
}

/// The sequenced receipt of a recorded event.
#[derive(SimpleObject)]
pub struct Receipt {
    /// Event id.
    event_id: String,
    /// Subject of the event.
    subject: String,
    /// Leaf index.
    leaf_index: u64,
    /// The checkpoint signed for the batch that appended it.
    checkpoint: Checkpoint,
    /// Base64 inclusion proof hashes against that checkpoint.
    inclusion_proof: Vec<String>,
    /// Self-contained C2SP tlog-proof receipt, checkable offline.
    receipt: String,
}

/// The caller.
#[derive(SimpleObject)]
pub struct Me {
    /// Principal id.
    principal: String,
    /// Roles.
    roles: Vec<String>,
    /// Datasets the caller holds live access grants for.
    granted_datasets: Vec<String>,
}

/// A newly issued bearer token (shown once).
#[derive(SimpleObject)]
pub struct IssuedToken {
    /// Principal it authenticates.
    principal: String,
    /// The token; only its digest is stored.
    token: String,
}

/// An event delivered to a subscriber.
#[derive(SimpleObject, Clone)]
pub struct SequencedEvent {
    /// Leaf index, event id, kind, actor and time.
    #[graphql(flatten)]
    event: EventRef,
    /// Subject.
    subject: String,
    /// Body (proto3 JSON), references the subscriber may not see redacted.
    payload: Json<serde_json::Value>,
    /// Base64 canonical envelope (the leaf), for verification; null when
    /// the payload had to be redacted.
    envelope: Option<String>,
}

// ----------------------------------------------------------------- inputs

/// Search order.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum SearchOrder {
    /// Best match first.
    #[default]
    Relevance,
    /// Most recently published first.
    Recency,
}

/// Lineage direction.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum LineageDirection {
    /// Towards sources.
    Upstream,
    /// Towards models, validations and deployments.
    Downstream,
}

/// Accepted values of one facet.
#[derive(InputObject)]
pub struct FacetFilter {
    /// Facet name.
    facet: String,
    /// Any of these values.
    values: Vec<String>,
}

/// Inclusive number range; either end may be open.
#[derive(InputObject, Default)]
pub struct FloatRange {
    /// Lower bound.
    min: Option<f64>,
    /// Upper bound.
    max: Option<f64>,
}

/// Inclusive count range.
#[derive(InputObject, Default)]
pub struct CountRange {
    /// Lower bound.
    min: Option<u64>,
    /// Upper bound.
    max: Option<u64>,
}

/// Inclusive DICOM DA date range (`YYYYMMDD`).
#[derive(InputObject, Default)]
pub struct DateRange {
    /// From.
    from: Option<String>,
    /// To.
    to: Option<String>,
}

/// A catalogue search.
#[derive(InputObject, Default)]
pub struct SearchInput {
    /// Words (all must match; longer words tolerate a typo) and "quoted phrases".
    text: Option<String>,
    /// Facet filters (OR within a facet, AND across facets).
    filters: Option<Vec<FacetFilter>>,
    /// Slice thickness in mm: versions with some series in the range.
    slice_thickness_mm: Option<FloatRange>,
    /// Study date range.
    study_date: Option<DateRange>,
    /// Number of studies.
    studies: Option<CountRange>,
    /// Number of series.
    series: Option<CountRange>,
    /// Include withdrawn dataset versions.
    #[graphql(default = false)]
    include_withdrawn: bool,
    /// Order.
    #[graphql(default)]
    sort: SearchOrder,
    /// Page size (default 20, at most 200).
    limit: Option<usize>,
    /// Cursor from a previous page.
    cursor: Option<String>,
}

fn date(s: &Option<String>, what: &str) -> std::result::Result<Option<u64>, ApiError> {
    match s {
        None => Ok(None),
        Some(s) if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.parse().ok()),
        Some(s) => Err(ApiError::BadInput(format!(
            "{what} {s:?} is not a DICOM DA date (YYYYMMDD)"
        ))),
    }
}

macro_rules! event_kinds {
    ($($variant:ident),* $(,)?) => {
        /// Event kinds (the `EventKind` enum of the wire contract).
        #[derive(Enum, Copy, Clone, Eq, PartialEq)]
        pub enum EventKind {
            $(
                #[allow(missing_docs)]
                $variant,
            )*
        }

        impl EventKind {
            fn to_proto(self) -> proto::EventKind {
                match self {
                    $(EventKind::$variant => proto::EventKind::$variant,)*
                }
            }
        }
    };
}

event_kinds!(
    PrincipalRegistered,
    KeyRevoked,
    SiteRegistered,
    AccessGranted,
    AccessRevoked,
    DatasetRegistered,
    DatasetVersionPublished,
    DatasetVersionWithdrawn,
    TransformRecorded,
    TrainingRunRecorded,
    ModelVersionRegistered,
    ValidationRecorded,
    DeploymentRecorded,
);

/// Mutation inputs: the proto3 JSON of each event body, parsed strictly.
macro_rules! body_inputs {
    ($($name:ident($msg:ident) = $doc:literal;)*) => {$(
        #[doc = $doc]
        #[doc = ""]
        #[doc = "The proto3 JSON mapping of the message of the same name in proto/clew/v1/events.proto; unknown fields are refused."]
        #[derive(Description)]
        pub struct $name(proto::$msg);

        #[Scalar(use_type_description)]
        impl ScalarType for $name {
            fn parse(value: Value) -> InputValueResult<Self> {
                let json = value.into_json().map_err(InputValueError::custom)?;
                serde_json::from_value::<proto::$msg>(json)
                    .map($name)
                    .map_err(|e| InputValueError::custom(format!("{}: {e}", stringify!($msg))))
            }

            fn to_value(&self) -> Value {
                serde_json::to_value(&self.0)
                    .ok()
                    .and_then(|v| Value::from_json(v).ok())
                    .unwrap_or(Value::Null)
            }
        }
    )*};
}

body_inputs! {
    PrincipalInput(PrincipalRegistered) = "A principal: id, display name, roles, organisation, optional C2SP verifier key.";
    KeyRevocationInput(KeyRevoked) = "A key revocation: key id and reason.";
    SiteInput(SiteRegistered) = "A hospital trust, data provider, TRE or partner platform.";
    AccessGrantInput(AccessGranted) = "An access grant: grant id, principalId or projectId, datasetId, purpose, expiresAt.";
    AccessRevocationInput(AccessRevoked) = "An access revocation: grant id and reason.";
    DatasetInput(DatasetRegistered) = "A dataset: id, title, description, custodian site, access level, licence, tags.";
    DatasetVersionInput(DatasetVersionPublished) = "A dataset version: dataset id, version, manifest digest, imaging summary, derived-from versions.";
    WithdrawalInput(DatasetVersionWithdrawn) = "A withdrawal: dataset version id, reason, detail.";
    TransformInput(TransformRecorded) = "A transform run: kind, tool, code digest, parameters, used and generated versions.";
    TrainingRunInput(TrainingRunRecorded) = "A training run: model name, inputs with their roles, code, hyper-parameters, environment, metrics, model version.";
    ModelVersionInput(ModelVersionRegistered) = "A model version: artifact digest, training run, model card.";
    ValidationInput(ValidationRecorded) = "A validation: model version x dataset version x site, metrics with subgroups, verdict.";
    DeploymentInput(DeploymentRecorded) = "A deployment: model version at a site and environment, status, approvals, validations.";
}

// ---------------------------------------------------------------- queries

/// Entity lookup shared by the typed lookups.
async fn lookup(
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

/// Queries: typed entity lookups and everything over the catalogue and ledger.
#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(LookupQuery, CatalogueQuery);

/// Entity lookups by id.
#[derive(Default)]
pub struct LookupQuery;

macro_rules! typed_lookups {
    ($($fn_name:ident => $kind:literal, $doc:literal;)*) => {
        #[Object]
        impl LookupQuery {
            $(
                #[doc = $doc]
                async fn $fn_name(
                    &self,
                    ctx: &Context<'_>,
                    id: String,
                    #[graphql(desc = "Answer as of this tree size")] as_of: Option<u64>,
                ) -> Result<Option<Entity>> {
                    let (node, viewer) = parts(ctx)?;
                    lookup(node.clone(), viewer.clone(), format!("{}/{id}", $kind), as_of).await
                }
            )*
        }
    };
}

typed_lookups! {
    site => "site", "A site (hospital trust, data provider, TRE, partner platform).";
    dataset => "dataset", "A dataset.";
    dataset_version => "dataset-version", "A dataset version (`<dataset>@<version>`).";
    transform => "transform", "A transform run.";
    training_run => "training-run", "A training run.";
    model_version => "model-version", "A model version.";
    validation => "validation", "A validation.";
    deployment => "deployment", "A deployment.";
    principal => "principal", "A principal (governance, admin, or the caller itself).";
    access_grant => "access-grant", "An access grant (governance, admin, or its grantee).";
}

/// Queries over the catalogue and the ledger.
#[derive(Default)]
pub struct CatalogueQuery;

#[Object]
impl CatalogueQuery {
    /// The caller: principal, roles and granted datasets.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let (_, viewer) = parts(ctx)?;
        let mut granted: Vec<String> = viewer.granted.iter().cloned().collect();
        granted.sort();
        Ok(Me {
            principal: viewer.principal.clone(),
            roles: viewer
                .roles
                .iter()
                .map(|r| r.as_str_name().to_string())
                .collect(),
            granted_datasets: granted,
        })
    }

    /// Searches dataset versions and model versions, with facet counts.
    async fn search(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] input: SearchInput,
    ) -> Result<SearchResult> {
        let (node, viewer) = parts(ctx)?;
        let filters = input
            .filters
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.facet, f.values))
            .collect();
        let thickness = input.slice_thickness_mm.unwrap_or_default();
        let dates = input.study_date.unwrap_or_default();
        let studies = input.studies.unwrap_or_default();
        let series = input.series.unwrap_or_default();
        let request = SearchRequest {
            text: input.text.unwrap_or_default(),
            filters,
            slice_thickness_mm: Range {
                min: thickness.min,
                max: thickness.max,
            },
            study_date: Range {
                min: date(&dates.from, "studyDate.from").coded()?,
                max: date(&dates.to, "studyDate.to").coded()?,
            },
            studies: Range {
                min: studies.min,
                max: studies.max,
            },
            series: Range {
                min: series.min,
                max: series.max,
            },
            include_withdrawn: input.include_withdrawn,
            sort: match input.sort {
                SearchOrder::Relevance => SortOrder::Relevance,
                SearchOrder::Recency => SortOrder::Recency,
            },
            limit: input.limit.unwrap_or(20),
            cursor: input.cursor,
            visibility: viewer.visibility(),
        };
        let node = node.clone();
        blocking(move || {
            let r = node.catalog().search(&request)?;
            Ok(SearchResult {
                total: r.total,
                hits: r
                    .hits
                    .into_iter()
                    .map(|h| SearchHit {
                        subject: h.subject,
                        title: h.title,
                        score: h.score,
                        leaf_index: h.leaf,
                        snippet: h.snippet,
                        title_snippet: h.title_snippet,
                    })
                    .collect(),
                facets: r
                    .facets
                    .into_iter()
                    .map(|(name, values)| Facet {
                        name,
                        values: values
                            .into_iter()
                            .map(|(value, count)| FacetValue { value, count })
                            .collect(),
                    })
                    .collect(),
                next_cursor: r.next_cursor,
            })
        })
        .await
    }

    /// Any entity by subject (`<type>/<id>`).
    async fn entity(
        &self,
        ctx: &Context<'_>,
        subject: String,
        #[graphql(desc = "Answer as of this tree size")] as_of: Option<u64>,
    ) -> Result<Option<Entity>> {
        let (node, viewer) = parts(ctx)?;
        lookup(node.clone(), viewer.clone(), subject, as_of).await
    }

    /// Every event about an entity, in leaf order.
    async fn history(
        &self,
        ctx: &Context<'_>,
        subject: String,
        as_of: Option<u64>,
    ) -> Result<Vec<HistoryEvent>> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        blocking(move || {
            let applied = node.catalog().applied()?;
            history_of(
                &node,
                &viewer,
                &subject,
                as_of.map_or(applied, |a| a.min(applied)),
            )
        })
        .await
    }

    /// Lineage up or down from an entity, at most `depth` hops (≤ 50).
    async fn lineage(
        &self,
        ctx: &Context<'_>,
        subject: String,
        direction: LineageDirection,
        #[graphql(default = 3)] depth: u32,
        as_of: Option<u64>,
    ) -> Result<Lineage> {
        let (node, viewer) = parts(ctx)?;
        if depth > 50 {
            return Err(
                ApiError::BadInput(format!("depth {depth} is over the limit of 50")).into_graphql(),
            );
        }
        let (node, viewer) = (node.clone(), viewer.clone());
        blocking(move || {
            let dir = match direction {
                LineageDirection::Upstream => Direction::Upstream,
                LineageDirection::Downstream => Direction::Downstream,
            };
            let a = node.catalog().lineage_within(
                &subject,
                dir,
                depth,
                as_of,
                &admit(&viewer, &node),
            )?;
            Ok(lineage_out(a, &viewer, &node))
        })
        .await
    }

    /// The shortest chain of lineage between two entities (either way), or null.
    async fn path(
        &self,
        ctx: &Context<'_>,
        from: String,
        to: String,
        as_of: Option<u64>,
    ) -> Result<Option<Lineage>> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        blocking(move || {
            // Only chains through what the viewer may see are found.
            let Some(a) = node
                .catalog()
                .path_within(&from, &to, as_of, &admit(&viewer, &node))?
            else {
                return Ok(None);
            };
            Ok(Some(lineage_out(a, &viewer, &node)))
        })
        .await
    }

    /// Everything downstream of a dataset version: what its withdrawal affects.
    async fn impact(
        &self,
        ctx: &Context<'_>,
        dataset_version: String,
        as_of: Option<u64>,
    ) -> Result<Impact> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        blocking(move || {
            let subject = if dataset_version.starts_with("dataset-version/") {
                dataset_version
            } else {
                format!("dataset-version/{dataset_version}")
            };
            let a = node
                .catalog()
                .impact_within(&subject, as_of, &admit(&viewer, &node))?;
            let affected: Vec<LineageNode> = a
                .affected
                .iter()
                .map(|n| lineage_node(n, &viewer, &node))
                .collect();
            let live = affected
                .iter()
                .filter(|n| {
                    n.r#type == "deployment"
                        && n.status
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case("live"))
                })
                .count();
            Ok(Impact {
                as_of: a.as_of,
                dataset_version: lineage_node(&a.dataset_version, &viewer, &node),
                affected,
                live_deployments: live,
            })
        })
        .await
    }

    /// The latest signed checkpoint.
    async fn checkpoint(&self, ctx: &Context<'_>) -> Result<Checkpoint> {
        let (node, _) = parts(ctx)?;
        Ok(Checkpoint::from(&checkpoint_of(node, None).coded()?))
    }

    /// The checkpoint signed at a tree size.
    async fn checkpoint_at(&self, ctx: &Context<'_>, size: u64) -> Result<Checkpoint> {
        let (node, _) = parts(ctx)?;
        Ok(Checkpoint::from(&checkpoint_of(node, Some(size)).coded()?))
    }

    /// An inclusion proof of an event (by event id or leaf index) against a
    /// checkpoint (default: the latest).
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        event_id: Option<String>,
        leaf_index: Option<u64>,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        blocking(move || {
            let event_id_asked = event_id.clone();
            let index = match (event_id, leaf_index) {
                (Some(id), None) => node
                    .ledger()
                    .leaf_index_of(&id)?
                    .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?,
                (None, Some(i)) => i,
                _ => {
                    return Err(ApiError::BadInput(
                        "give exactly one of eventId and leafIndex".into(),
                    ))
                }
            };
            let cp = checkpoint_of(&node, tree_size)?;
            if index >= cp.size {
                return Err(ApiError::NotFound(format!(
                    "leaf {index} is not in the tree of size {}",
                    cp.size
                )));
            }
            let leaf = node.ledger().leaf(index)?;
            let opened = clew_events::open(&leaf)
                .map_err(|e| ApiError::Internal(format!("leaf {index}: {e}")))?;
            if !viewer.subject_visible(node.catalog(), &opened.event.subject) {
                // The answer a missing id or an unsigned size would get.
                return Err(match &event_id_asked {
                    Some(id) => ApiError::NotFound(format!("no event {id}")),
                    None => ApiError::NotFound(format!("no event at leaf {index}")),
                });
            }
            let proof = node.ledger().inclusion_proof(index, cp.size)?;
            let whole = leaf_fully_visible(&node, &viewer, &opened);
            Ok(InclusionProof {
                event_id: opened.event.event_id.clone(),
                leaf_index: index,
                tree_size: cp.size,
                hashes: hashes_b64(&proof),
                receipt: whole.then(|| clew_ledger::format_receipt(index, &leaf, &proof, &cp)),
                leaf: whole.then(|| B64.encode(&leaf)),
                checkpoint: Checkpoint::from(&cp),
            })
        })
        .await
    }

    /// A consistency proof between two tree sizes.
    async fn consistency_proof(
        &self,
        ctx: &Context<'_>,
        from_size: u64,
        to_size: Option<u64>,
    ) -> Result<ConsistencyProof> {
        let (node, _) = parts(ctx)?;
        let node = node.clone();
        blocking(move || {
            let to_size = match to_size {
                Some(s) => s,
                None => checkpoint_of(&node, None)?.size,
            };
            // RFC 6962 §2.1.2: a consistency proof is defined for 0 < m <= n.
            if from_size == 0 || from_size > to_size {
                return Err(ApiError::BadInput(format!(
                    "a consistency proof needs 0 < fromSize <= toSize; got {from_size} and {to_size}"
                )));
            }
            let proof = node.ledger().consistency_proof(from_size, to_size)?;
            Ok(ConsistencyProof {
                from_size,
                to_size,
                hashes: hashes_b64(&proof),
                from: node
                    .ledger()
                    .checkpoint_at(from_size)?
                    .as_ref()
                    .map(Checkpoint::from),
                to: node
                    .ledger()
                    .checkpoint_at(to_size)?
                    .as_ref()
                    .map(Checkpoint::from),
            })
        })
        .await
    }

    /// Refused submissions, oldest first (governance and admin).
    async fn rejected(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] from: u64,
        #[graphql(default = 50)] limit: usize,
    ) -> Result<Vec<RejectedSubmission>> {
        let (node, viewer) = parts(ctx)?;
        viewer
            .require(&[Role::Governance, Role::Admin], "the rejected log")
            .coded()?;
        let rows = node.ledger().rejected(from, limit.min(1000)).coded()?;
        Ok(rows
            .into_iter()
            .map(|r| RejectedSubmission {
                rejection_index: r.rejection_index,
                reason: proto::RejectionReason::try_from(r.reason)
                    .map(|x| {
                        x.as_str_name()
                            .trim_start_matches("REJECTION_REASON_")
                            .to_string()
                    })
                    .unwrap_or_else(|_| r.reason.to_string()),
                detail: r.detail,
                event_id: r.event_id,
                source: r.source,
                source_offset: r.source_offset,
                original_leaf_index: r.original_leaf_index,
                raw: B64.encode(&r.raw),
            })
            .collect())
    }
}

/// The receipt of the event at leaf `index` against checkpoint `cp`: read
/// back from the ledger, so it is exactly what an outside verifier sees.
fn receipt_for(
    node: &Node,
    index: u64,
    cp: &SignedCheckpoint,
) -> std::result::Result<Receipt, ApiError> {
    let proof = node.ledger().inclusion_proof(index, cp.size)?;
    let leaf = node.ledger().leaf(index)?;
    let opened =
        clew_events::open(&leaf).map_err(|e| ApiError::Internal(format!("leaf {index}: {e}")))?;
    Ok(Receipt {
        receipt: clew_ledger::format_receipt(index, &leaf, &proof, cp),
        event_id: opened.event.event_id,
        subject: opened.event.subject,
        leaf_index: index,
        checkpoint: Checkpoint::from(cp),
        inclusion_proof: hashes_b64(&proof),
    })
}

async fn answer(node: &Node, outcome: Outcome) -> Result<Receipt> {
    match outcome {
        Outcome::Accepted(s) => receipt_for(node, s.leaf_index, &s.checkpoint).coded(),
        // A retry of an event already in the ledger: the first receipt.
        // (A duplicate without an original leaf is other content refused as a
        // repeat, e.g. a manifest already published: an error like any refusal.)
        Outcome::Rejected(r)
            if r.reason == proto::RejectionReason::Duplicate && r.original_leaf_index.is_some() =>
        {
            let index = r.original_leaf_index.unwrap_or_default();
            let cp = checkpoint_of(node, None).coded()?;
            receipt_for(node, index, &cp).coded()
        }
        Outcome::Rejected(r) => Err(ApiError::from(r).into_graphql()),
    }
}

async fn record(ctx: &Context<'_>, body: Body, event_id: Option<String>) -> Result<Receipt> {
    let (node, viewer) = parts(ctx)?;
    let key_owner = match &body {
        Body::KeyRevoked(k) => node
            .ledger()
            .key(&k.key_id)
            .coded()?
            .map(|k| k.principal_id),
        _ => None,
    };
    viewer.may_record(&body, key_owner.as_deref()).coded()?;
    viewer.may_cite(node.catalog(), &body).coded()?;
    let outcome = node
        .record(&viewer.principal, body, event_id)
        .await
        .coded()?;
    answer(node, outcome)
        .await
        .map_err(|e| viewer.redact_error(node.catalog(), e))
}

/// Mutations: each records one signed event and answers with its receipt.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Registers (or re-registers, to change roles or add a key) a principal. Admin.
    async fn register_principal(
        &self,
        ctx: &Context<'_>,
        input: PrincipalInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::PrincipalRegistered(input.0), event_id).await
    }
    /// Revokes a signing key. Admin.
    async fn revoke_key(
        &self,
        ctx: &Context<'_>,
        input: KeyRevocationInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::KeyRevoked(input.0), event_id).await
    }
    /// Registers a site. Governance.
    async fn register_site(
        &self,
        ctx: &Context<'_>,
        input: SiteInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::SiteRegistered(input.0), event_id).await
    }
    /// Grants a principal or project access to a dataset. Admin.
    async fn grant_access(
        &self,
        ctx: &Context<'_>,
        input: AccessGrantInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::AccessGranted(input.0), event_id).await
    }
    /// Revokes an access grant. Admin.
    async fn revoke_access(
        &self,
        ctx: &Context<'_>,
        input: AccessRevocationInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::AccessRevoked(input.0), event_id).await
    }
    /// Registers a dataset. Ingest or governance.
    async fn register_dataset(
        &self,
        ctx: &Context<'_>,
        input: DatasetInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::DatasetRegistered(input.0), event_id).await
    }
    /// Publishes a dataset version. Ingest or governance.
    async fn publish_dataset_version(
        &self,
        ctx: &Context<'_>,
        input: DatasetVersionInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::DatasetVersionPublished(input.0), event_id).await
    }
    /// Withdraws a dataset version. Governance or ingest.
    async fn withdraw_dataset_version(
        &self,
        ctx: &Context<'_>,
        input: WithdrawalInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::DatasetVersionWithdrawn(input.0), event_id).await
    }
    /// Records a transform run. Ingest or governance.
    async fn record_transform(
        &self,
        ctx: &Context<'_>,
        input: TransformInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::TransformRecorded(input.0), event_id).await
    }
    /// Records a training run. Ingest or governance.
    async fn record_training_run(
        &self,
        ctx: &Context<'_>,
        input: TrainingRunInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::TrainingRunRecorded(input.0), event_id).await
    }
    /// Registers a model version with its model card. Ingest or governance.
    async fn register_model_version(
        &self,
        ctx: &Context<'_>,
        input: ModelVersionInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::ModelVersionRegistered(input.0), event_id).await
    }
    /// Records a validation. Ingest or governance.
    async fn record_validation(
        &self,
        ctx: &Context<'_>,
        input: ValidationInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::ValidationRecorded(input.0), event_id).await
    }
    /// Records a deployment or its status change. Ingest or governance.
    async fn record_deployment(
        &self,
        ctx: &Context<'_>,
        input: DeploymentInput,
        #[graphql(
            desc = "A UUIDv7 you choose: a retry with the same id answers with the first receipt instead of recording again"
        )]
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::DeploymentRecorded(input.0), event_id).await
    }
    /// Submits a DSSE envelope (base64 of its protobuf bytes) already signed
    /// by a registered key. Partner, ingest, governance or admin; the ledger
    /// checks the signing key's own roles.
    async fn submit_envelope(&self, ctx: &Context<'_>, envelope: String) -> Result<Receipt> {
        let (node, viewer) = parts(ctx)?;
        viewer
            .require(
                &[Role::Partner, Role::Ingest, Role::Governance],
                "submitting a signed envelope",
            )
            .coded()?;
        let bytes = B64
            .decode(envelope.trim())
            .map_err(|e| ApiError::BadInput(format!("envelope is not base64: {e}")))
            .coded()?;
        if bytes.len() > clew_events::MAX_LEAF_BYTES {
            return Err(ApiError::BadInput(format!(
                "envelope is {} bytes; the ledger's limit is {}",
                bytes.len(),
                clew_events::MAX_LEAF_BYTES
            ))
            .into_graphql());
        }
        let outcome = node.submit(bytes).await.coded()?;
        answer(node, outcome).await
    }
    /// Issues a new bearer token for a registered principal. Admin.
    async fn issue_token(&self, ctx: &Context<'_>, principal_id: String) -> Result<IssuedToken> {
        let (node, viewer) = parts(ctx)?;
        viewer.require(&[Role::Admin], "issuing tokens").coded()?;
        let known = node
            .catalog()
            .node(&format!("principal/{principal_id}"))
            .coded()?;
        if known.is_none() {
            return Err(
                ApiError::NotFound(format!("principal {principal_id} is not registered"))
                    .into_graphql(),
            );
        }
        let token = ctx
            .data::<Arc<TokenStore>>()?
            .issue(&principal_id)
            .coded()?;
        Ok(IssuedToken {
            principal: principal_id,
            token,
        })
    }
    /// Revokes every token of a principal; returns how many. Admin.
    async fn revoke_tokens(&self, ctx: &Context<'_>, principal_id: String) -> Result<usize> {
        let (_, viewer) = parts(ctx)?;
        viewer.require(&[Role::Admin], "revoking tokens").coded()?;
        ctx.data::<Arc<TokenStore>>()?
            .revoke_all(&principal_id)
            .coded()
    }
}

// ---------------------------------------------------------- subscriptions

struct SubscriptionGauge(prometheus::IntGauge);

impl SubscriptionGauge {
    fn new(g: &prometheus::IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for SubscriptionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Filter {
    kinds: Option<Vec<proto::EventKind>>,
    subject: Option<String>,
    dataset: Option<String>,
}

impl Filter {
    fn mentions_dataset(value: &serde_json::Value, dataset: &str) -> bool {
        match value {
            serde_json::Value::String(s) => {
                s == dataset || s.strip_prefix(dataset).is_some_and(|r| r.starts_with('@'))
            }
            serde_json::Value::Array(a) => a.iter().any(|v| Self::mentions_dataset(v, dataset)),
            serde_json::Value::Object(o) => o.values().any(|v| Self::mentions_dataset(v, dataset)),
            _ => false,
        }
    }
}

fn deliver(
    node: &Node,
    viewer: &Viewer,
    filter: &Filter,
    index: u64,
    leaf: &[u8],
) -> Option<SequencedEvent> {
    let opened = clew_events::open(leaf).ok()?;
    let kind = opened.kind();
    if let Some(kinds) = &filter.kinds {
        if !kinds.contains(&kind) {
            return None;
        }
    }
    if let Some(s) = &filter.subject {
        if &opened.event.subject != s {
            return None;
        }
    }
    if !viewer.subject_visible(node.catalog(), &opened.event.subject) {
        return None;
    }
    let mut payload = body_json(opened.body());
    let redacted = viewer.redact(node.catalog(), &mut payload);
    // After redaction: a hidden dataset is not mentioned, so filtering by
    // its id finds exactly what filtering by an id never used finds.
    if let Some(d) = &filter.dataset {
        let own = opened.event.subject == format!("dataset/{d}")
            || opened
                .event
                .subject
                .starts_with(&format!("dataset-version/{d}@"));
        if !own && !Filter::mentions_dataset(&payload, d) {
            return None;
        }
    }
    let time = opened
        .event
        .time
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Some(SequencedEvent {
        event: EventRef {
            leaf_index: index,
            event_id: opened.event.event_id.clone(),
            kind: kind_name(kind.as_str_name()),
            actor: opened.event.actor.clone(),
            time,
        },
        subject: opened.event.subject.clone(),
        payload: Json(payload),
        envelope: (!redacted).then(|| B64.encode(leaf)),
    })
}

/// Subscriptions (graphql-transport-ws at /graphql/ws).
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Sequenced events the caller may see, filtered by kind, subject or
    /// dataset (the dataset, its versions and events that cite them); from
    /// `fromLeaf` (default: the next one sequenced) onwards, in leaf order.
    async fn events(
        &self,
        ctx: &Context<'_>,
        kinds: Option<Vec<EventKind>>,
        subject: Option<String>,
        dataset: Option<String>,
        from_leaf: Option<u64>,
    ) -> Result<impl Stream<Item = SequencedEvent>> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        let session = ctx.data_opt::<Arc<Session>>().cloned();
        let access = ctx.data::<Arc<DatasetAccess>>()?.clone();
        let filter = Filter {
            kinds: kinds.map(|k| k.into_iter().map(EventKind::to_proto).collect()),
            subject,
            dataset,
        };
        let watch = node.applied();
        let current = *watch.borrow();
        let next = from_leaf.unwrap_or(current.size().unwrap_or(0));
        let gauge = SubscriptionGauge::new(&node.metrics().subscriptions);
        let state = (
            node,
            (viewer, session, access),
            filter,
            watch,
            next,
            VecDeque::new(),
            gauge,
        );
        Ok(futures_util::stream::unfold(
            state,
            |(
                node,
                (mut viewer, session, access),
                filter,
                mut watch,
                mut next,
                mut buffer,
                gauge,
            )| async move {
                loop {
                    if let Some(ev) = buffer.pop_front() {
                        let state = (
                            node,
                            (viewer, session, access),
                            filter,
                            watch,
                            next,
                            buffer,
                            gauge,
                        );
                        return Some((ev, state));
                    }
                    let Some(applied) = watch.borrow_and_update().size().filter(|a| *a > next)
                    else {
                        watch.changed().await.ok()?;
                        continue;
                    };
                    // Who is asking is decided again for every batch: a
                    // revoked token ends the stream, a revoked grant hides
                    // what it granted from the next event on.
                    if let Some(s) = &session {
                        viewer = Arc::new(s.viewer(node.catalog(), access.clone())?);
                    }
                    let end = applied.min(next + 256);
                    for i in next..end {
                        let leaf = node.ledger().leaf(i).ok()?;
                        if let Some(ev) = deliver(&node, &viewer, &filter, i, &leaf) {
                            buffer.push_back(ev);
                        }
                    }
                    next = end;
                }
            },
        ))
    }

    /// Every new checkpoint, as it is signed.
    async fn checkpoints(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Checkpoint>> {
        let (node, _) = parts(ctx)?;
        let node = node.clone();
        let session = ctx.data_opt::<Arc<Session>>().cloned();
        let watch = node.applied();
        let seen = watch.borrow().size();
        let gauge = SubscriptionGauge::new(&node.metrics().subscriptions);
        Ok(futures_util::stream::unfold(
            (node, watch, seen, (gauge, session)),
            |(node, mut watch, seen, (gauge, session))| async move {
                loop {
                    watch.changed().await.ok()?;
                    let size = watch.borrow_and_update().size();
                    if size.is_none() || size == seen {
                        continue;
                    }
                    if session.as_ref().is_some_and(|s| !s.valid()) {
                        return None;
                    }
                    let cp = node.checkpoint().ok()?;
                    let state = (node, watch, Some(cp.size), (gauge, session));
                    return Some((Checkpoint::from(&cp), state));
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits refuse a query before any resolver runs (no node is needed).
    #[tokio::test]
    async fn depth_and_complexity_limits_refuse_before_resolving() {
        let schema = limited(QueryLimits {
            depth: 4,
            complexity: 50,
        })
        .finish();
        let deep = "{ search { hits { entity { upstream { from } } } } }";
        let r = schema.execute(deep).await;
        assert!(r.data == Value::Null, "nothing resolved");
        assert!(
            r.errors[0].message.contains("nested too deep"),
            "{:?}",
            r.errors
        );
        let wide = format!(
            "{{ {} }}",
            (0..60)
                .map(|i| format!("a{i}: me {{ principal }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let r = schema.execute(wide.as_str()).await;
        assert!(
            r.errors[0].message.contains("too complex"),
            "{:?}",
            r.errors
        );
    }
}
