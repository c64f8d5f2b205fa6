//! GraphQL inputs: search inputs, enums, and one input per event body —
//! the proto3 JSON mapping of `proto/clew/v1/events.proto`, checked field by
//! field (unknown fields are refused).

use async_graphql::{
    Description, Enum, InputObject, InputValueError, InputValueResult, Scalar, ScalarType, Value,
};
use clew_events::proto;

use crate::ApiError;

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
    pub(crate) facet: String,
    /// Any of these values.
    pub(crate) values: Vec<String>,
}

/// Inclusive number range; either end may be open.
#[derive(InputObject, Default)]
pub struct FloatRange {
    /// Lower bound.
    pub(crate) min: Option<f64>,
    /// Upper bound.
    pub(crate) max: Option<f64>,
}

/// Inclusive count range.
#[derive(InputObject, Default)]
pub struct CountRange {
    /// Lower bound.
    pub(crate) min: Option<u64>,
    /// Upper bound.
    pub(crate) max: Option<u64>,
}

/// Inclusive DICOM DA date range (`YYYYMMDD`).
#[derive(InputObject, Default)]
pub struct DateRange {
    /// From.
    pub(crate) from: Option<String>,
    /// To.
    pub(crate) to: Option<String>,
}

/// A catalogue search.
#[derive(InputObject, Default)]
pub struct SearchInput {
    /// Words (all must match; longer words tolerate a typo) and "quoted phrases".
    pub(crate) text: Option<String>,
    /// Facet filters (OR within a facet, AND across facets).
    pub(crate) filters: Option<Vec<FacetFilter>>,
    /// Slice thickness in mm: versions with some series in the range.
    pub(crate) slice_thickness_mm: Option<FloatRange>,
    /// Study date range.
    pub(crate) study_date: Option<DateRange>,
    /// Number of studies.
    pub(crate) studies: Option<CountRange>,
    /// Number of series.
    pub(crate) series: Option<CountRange>,
    /// Include withdrawn dataset versions.
    #[graphql(default = false)]
    pub(crate) include_withdrawn: bool,
    /// Order.
    #[graphql(default)]
    pub(crate) sort: SearchOrder,
    /// Page size (default 20, at most 200).
    pub(crate) limit: Option<usize>,
    /// Cursor from a previous page.
    pub(crate) cursor: Option<String>,
}

pub(crate) fn date(s: &Option<String>, what: &str) -> std::result::Result<Option<u64>, ApiError> {
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
            pub(crate) fn to_proto(self) -> proto::EventKind {
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
    ProjectRegistered,
    ProjectMemberAdded,
    ProjectMemberRemoved,
    AccessRequestSubmitted,
    AccessRequestResubmitted,
    AccessRequestWithdrawn,
    AccessRequestReviewed,
);

/// Mutation inputs: the proto3 JSON of each event body, parsed strictly.
macro_rules! body_inputs {
    ($($name:ident($msg:ident) = $doc:literal;)*) => {$(
        #[doc = $doc]
        #[doc = ""]
        #[doc = "The proto3 JSON mapping of the message of the same name in proto/clew/v1/events.proto; unknown fields are refused."]
        #[derive(Description)]
        pub struct $name(pub(crate) proto::$msg);

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
    ProjectInput(ProjectRegistered) = "A project: id, title, lead principal, organisation, purpose, startsAt, endsAt.";
    ProjectMemberInput(ProjectMemberAdded) = "A member joins a project: projectId, principalId.";
    ProjectMemberRemovalInput(ProjectMemberRemoved) = "A member leaves a project: projectId, principalId, reason.";
    AccessRequestInput(AccessRequestSubmitted) = "An access request: requestId and terms (projectId, datasetIds, datasetVersionIds, purpose, requestedDays, dataUseAgreement).";
    AccessResubmissionInput(AccessRequestResubmitted) = "New terms for a request governance asked to change: requestId, terms, response.";
    AccessWithdrawalInput(AccessRequestWithdrawn) = "The requester withdraws a request: requestId, reason.";
}

/// A review decision on an access request.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ReviewDecision {
    /// Taken up for review.
    UnderReview,
    /// The requester is asked to change the terms and resubmit.
    ChangesRequested,
    /// Approved as asked.
    Approved,
    /// Approved with conditions of use.
    ApprovedWithConditions,
    /// Denied (final: asking again is a new request).
    Denied,
}

impl ReviewDecision {
    pub(crate) fn to_proto(self) -> proto::AccessRequestState {
        use proto::AccessRequestState as S;
        match self {
            ReviewDecision::UnderReview => S::UnderReview,
            ReviewDecision::ChangesRequested => S::ChangesRequested,
            ReviewDecision::Approved => S::Approved,
            ReviewDecision::ApprovedWithConditions => S::ApprovedWithConditions,
            ReviewDecision::Denied => S::Denied,
        }
    }
}

/// Governance's review of an access request. An approval writes the grants
/// in the same event: one per dataset asked for, to the request's project
/// (or requester), expiring at `expiresAt` or at the end of the duration
/// asked for, whichever is sooner.
#[derive(InputObject)]
pub struct AccessReviewInput {
    /// The request.
    pub(crate) request_id: String,
    /// The decision.
    pub(crate) decision: ReviewDecision,
    /// Why (required to request changes or deny).
    #[graphql(default)]
    pub(crate) reason: String,
    /// Conditions of an approval with conditions.
    #[graphql(default)]
    pub(crate) conditions: Vec<String>,
    /// RFC 3339 end of access, no later than the duration asked for.
    pub(crate) expires_at: Option<String>,
}
