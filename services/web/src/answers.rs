//! The GraphQL documents the pages are built from, and their answers as
//! types. Each page runs its document through `AppState::execute` for the
//! signed-in viewer: the same schema, resolvers and visibility rules as
//! `POST /graphql`, so a page can show nothing the API would not.

use std::sync::Arc;

use clew_api::Viewer;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::{Web, WebError};

impl Web {
    /// Runs `document` for `viewer` and reads the answer as `T`.
    pub(crate) async fn ask<T: DeserializeOwned>(
        &self,
        viewer: &Arc<Viewer>,
        document: &str,
        variables: Value,
    ) -> Result<T, WebError> {
        let data = self
            .api
            .execute(viewer.clone(), document, variables)
            .await?;
        serde_json::from_value(data).map_err(|e| {
            WebError::Api(clew_api::ApiError::Internal(format!(
                "an answer does not have the shape the page expects: {e}"
            )))
        })
    }
}

pub const SEARCH: &str = "query Search($input: SearchInput!) {
  search(input: $input) {
    total nextCursor
    hits { subject title snippet titleSnippet }
    facets { name values { value count } }
  }
}";

#[derive(Deserialize)]
pub(crate) struct SearchAnswer {
    pub search: SearchResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchResult {
    pub total: u64,
    pub next_cursor: Option<String>,
    pub hits: Vec<SearchHit>,
    pub facets: Vec<Facet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchHit {
    pub subject: String,
    pub title: String,
    pub snippet: String,
    pub title_snippet: String,
}

#[derive(Deserialize)]
pub(crate) struct Facet {
    pub name: String,
    pub values: Vec<FacetValue>,
}

#[derive(Deserialize)]
pub(crate) struct FacetValue {
    pub value: String,
    pub count: u64,
}

/// What every entity page asks about its entity.
pub const ENTITY: &str = "query Entity($subject: String!) {
  entity(subject: $subject) {
    subject type id label status endedLeaf endedDetail attributes
    affectedBy { withdrawn }
    createdBy { leafIndex actor time }
    versions { subject id endedLeaf attributes createdBy { time } }
    upstream { from to relation role }
    downstream(first: 200) { from to relation role }
  }
  me { principal grantedDatasets }
  myAccessRequests { id state datasetIds datasetVersionIds submittedAt purpose }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntityAnswer {
    pub entity: Option<Entity>,
    pub me: Me,
    pub my_access_requests: Vec<AccessRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Me {
    pub granted_datasets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessRequest {
    pub id: String,
    pub state: String,
    pub dataset_ids: Vec<String>,
    pub submitted_at: String,
    pub purpose: String,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entity {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub label: String,
    pub status: Option<String>,
    pub ended_leaf: Option<u64>,
    pub ended_detail: Option<Value>,
    pub attributes: Value,
    #[serde(default)]
    pub affected_by: Vec<Withdrawal>,
    pub created_by: Option<EventRef>,
    #[serde(default)]
    pub versions: Vec<Version>,
    #[serde(default)]
    pub upstream: Vec<Edge>,
    #[serde(default)]
    pub downstream: Vec<Edge>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Withdrawal {
    pub withdrawn: String,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventRef {
    pub leaf_index: u64,
    pub actor: String,
    pub time: String,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Version {
    pub subject: String,
    pub id: String,
    pub ended_leaf: Option<u64>,
    pub attributes: Value,
    pub created_by: VersionCreated,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionCreated {
    pub time: String,
}

#[derive(Deserialize, Clone)]
pub(crate) struct Edge {
    pub from: String,
    pub to: String,
    pub relation: String,
    pub role: Option<String>,
}

/// Several entities by subject in one operation (`e0`, `e1`, …): a model
/// card's training run, validations and deployments.
pub fn entities_document(n: usize) -> String {
    let params: Vec<String> = (0..n).map(|i| format!("$s{i}: String!")).collect();
    let fields: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "e{i}: entity(subject: $s{i}) {{ subject type id label status attributes \
                 upstream {{ from to relation role }} }}"
            )
        })
        .collect();
    format!(
        "query Entities({}) {{ {} }}",
        params.join(", "),
        fields.join(" ")
    )
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinkedEntity {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub label: String,
    pub status: Option<String>,
    pub attributes: Value,
    pub upstream: Vec<Edge>,
}

pub const LINEAGE: &str =
    "query Lineage($subject: String!, $direction: LineageDirection!, $depth: Int!, $asOf: Int) {
  lineage(subject: $subject, direction: $direction, depth: $depth, asOf: $asOf) {
    asOf
    nodes { subject type label depth status affected endedLeaf }
    edges { from to relation role }
  }
}";

#[derive(Deserialize)]
pub(crate) struct LineageAnswer {
    pub lineage: Lineage,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Lineage {
    pub as_of: u64,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LineageNode {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub label: String,
    pub depth: u32,
    pub status: Option<String>,
    pub affected: bool,
    pub ended_leaf: Option<u64>,
    /// Impact answers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_by: Option<String>,
}

impl LineageNode {
    /// A node of `subject` at `depth`, labelled with its subject, nothing
    /// else set (for the pages' unit tests).
    #[cfg(test)]
    pub(crate) fn plain(subject: &str, depth: u32) -> Self {
        Self {
            subject: subject.into(),
            kind: crate::text::kind_of(subject).into(),
            label: subject.into(),
            depth,
            status: None,
            affected: false,
            ended_leaf: None,
            site: None,
            owner: None,
            reached_from: None,
            reached_by: None,
        }
    }
}

#[derive(Deserialize, serde::Serialize, Clone)]
pub(crate) struct LineageEdge {
    pub from: String,
    pub to: String,
    pub relation: String,
    pub role: Option<String>,
}

pub const CHECKPOINT_AT: &str = "query CheckpointAt($size: Int!) {
  checkpointAt(size: $size) { size rootHash note }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckpointAtAnswer {
    pub checkpoint_at: Checkpoint,
}

pub const CHECKPOINT_AS_OF: &str = "query CheckpointAsOf($time: String!) {
  checkpointAsOf(time: $time) { size rootHash note }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckpointAsOfAnswer {
    pub checkpoint_as_of: Checkpoint,
}

pub(crate) const CHECKPOINT: &str = "query { checkpoint { size rootHash note } }";

#[derive(Deserialize)]
pub(crate) struct CheckpointAnswer {
    pub checkpoint: Checkpoint,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Checkpoint {
    pub size: u64,
    pub root_hash: String,
    pub note: String,
}

pub const IMPACT: &str = "query Impact($version: String!, $asOf: Int) {
  impact(datasetVersion: $version, asOf: $asOf) {
    asOf liveDeployments
    datasetVersion { subject type label depth status affected endedLeaf }
    affected { subject type label depth status affected endedLeaf site owner reachedFrom reachedBy }
  }
}";

#[derive(Deserialize)]
pub(crate) struct ImpactAnswer {
    pub impact: Impact,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Impact {
    pub as_of: u64,
    pub live_deployments: u64,
    pub dataset_version: LineageNode,
    pub affected: Vec<LineageNode>,
}

pub(crate) const HISTORY: &str = "query History($subject: String!) {
  entity(subject: $subject) { subject type label }
  history(subject: $subject) { leafIndex eventId kind actor time signer }
}";

#[derive(Deserialize)]
pub(crate) struct HistoryAnswer {
    pub entity: Option<Named>,
    pub history: Vec<HistoryEvent>,
}

#[derive(Deserialize)]
pub(crate) struct Named {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub label: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryEvent {
    pub leaf_index: u64,
    pub event_id: String,
    pub kind: String,
    pub actor: String,
    pub time: String,
    pub signer: String,
}

pub(crate) const REJECTED: &str = "query Rejected($from: Int!, $limit: Int!) {
  rejected(from: $from, limit: $limit) { rejectionIndex reason detail eventId source sourceOffset }
}";

#[derive(Deserialize)]
pub(crate) struct RejectedAnswer {
    pub rejected: Vec<Rejected>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rejected {
    pub rejection_index: u64,
    pub reason: String,
    pub detail: String,
    pub event_id: String,
    pub source: String,
}

pub(crate) const ME: &str = "query { me { principal roles } }";

#[derive(Deserialize)]
pub(crate) struct MeAnswer {
    pub me: MeRoles,
}

#[derive(Deserialize)]
pub(crate) struct MeRoles {
    pub principal: String,
    pub roles: Vec<String>,
}

pub(crate) const MY_REQUESTS: &str = "query {
  me { projects }
  myAccessRequests {
    id state projectId datasetIds datasetVersionIds purpose requestedDays submittedAt
    agreementId agreementVersion
    transitions { state actor time reason response conditions }
  }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MyRequestsAnswer {
    pub me: MyProjects,
    pub my_access_requests: Vec<FullRequest>,
}

#[derive(Deserialize)]
pub(crate) struct MyProjects {
    pub projects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FullRequest {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub requester: String,
    pub project_id: Option<String>,
    pub dataset_ids: Vec<String>,
    pub dataset_version_ids: Vec<String>,
    pub purpose: String,
    pub requested_days: u32,
    pub submitted_at: String,
    pub agreement_id: String,
    pub agreement_version: String,
    pub transitions: Vec<RequestStep>,
}

#[derive(Deserialize)]
pub(crate) struct RequestStep {
    pub state: String,
    pub actor: String,
    pub time: String,
    pub reason: Option<String>,
    pub response: Option<String>,
    pub conditions: Vec<String>,
}

pub(crate) const REVIEW_QUEUE: &str = "query {
  accessReviewQueue {
    id state requester projectId datasetIds datasetVersionIds purpose requestedDays submittedAt
    agreementId agreementVersion
    transitions { state actor time reason response conditions }
  }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReviewQueueAnswer {
    pub access_review_queue: Vec<FullRequest>,
}

pub(crate) const REVIEW_ACCESS: &str = "mutation ReviewAccess($input: AccessReviewInput!) {
  reviewAccessRequest(input: $input) { leafIndex }
}";

pub(crate) const REQUEST_ACCESS: &str = "mutation RequestAccess($input: AccessRequestInput!) {
  submitAccessRequest(input: $input) { leafIndex }
}";

pub(crate) const DATA_USE_REGISTER: &str = "query DataUses {
  dataUseRegister {
    requestId project organisation purpose datasets datasetTitles
    approvedAt expiresAt status conditions
  }
}";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataUseAnswer {
    pub data_use_register: Vec<DataUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataUse {
    pub request_id: Option<String>,
    pub project: Option<String>,
    pub organisation: String,
    pub purpose: String,
    pub datasets: Vec<String>,
    pub dataset_titles: Vec<String>,
    pub approved_at: String,
    pub expires_at: Option<String>,
    pub status: String,
    pub conditions: Vec<String>,
}
