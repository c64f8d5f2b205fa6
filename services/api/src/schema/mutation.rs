//! The mutation root: one mutation per event kind. Each asks the ledger's
//! policy (`clew_events::policy`) first, then the node signs the event with
//! the service key for the caller and answers with its receipt.

use std::sync::Arc;

use async_graphql::{Context, Object};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_events::proto::{self, event::Body, Role};
use clew_ledger::SignedCheckpoint;

use super::context::*;
use super::inputs::*;
use super::types::*;
use crate::read::{checkpoint_of, hashes_b64};
use crate::{ApiError, TokenStore};
use clew_node::{Node, Outcome};

/// What a call that just recorded an event knows of it, which saves reading
/// its leaf back and decoding it.
pub(crate) struct Recorded {
    pub event_id: String,
    pub subject: String,
    /// The canonical envelope bytes: the leaf itself.
    pub leaf: Vec<u8>,
}

/// The receipt of the event at leaf `index` against checkpoint `cp`: read
/// back from the ledger unless the caller just recorded it (`known`); either
/// way exactly the bytes an outside verifier hashes.
pub(crate) fn receipt_for(
    node: &Node,
    index: u64,
    cp: &SignedCheckpoint,
    known: Option<Recorded>,
) -> std::result::Result<Receipt, ApiError> {
    let proof = node.ledger().inclusion_proof(index, cp.size)?;
    let (event_id, subject, leaf) = match known {
        Some(k) => (k.event_id, k.subject, k.leaf),
        None => {
            let leaf = node.ledger().leaf(index)?;
            let opened = clew_events::open(&leaf)
                .map_err(|e| ApiError::Internal(format!("leaf {index}: {e}")))?;
            (opened.event.event_id, opened.event.subject, leaf)
        }
    };
    Ok(Receipt {
        receipt: clew_ledger::format_receipt(index, &leaf, &proof, cp),
        event_id,
        subject,
        leaf_index: index,
        checkpoint: Checkpoint::from(cp),
        inclusion_proof: hashes_b64(&proof),
    })
}

/// The receipt of a submission's outcome; `recorded` is the subject and
/// leaf of the event, when the caller built it.
pub(crate) async fn answer(
    node: &Node,
    outcome: Outcome,
    recorded: Option<(String, Vec<u8>)>,
) -> Result<Receipt> {
    match outcome {
        Outcome::Accepted(s) => {
            let known = recorded.map(|(subject, leaf)| Recorded {
                event_id: s.event_id.clone(),
                subject,
                leaf,
            });
            receipt_for(node, s.leaf_index, &s.checkpoint, known).coded()
        }
        // A retry of an event already in the ledger: the first receipt.
        // (A duplicate without an original leaf is other content refused as a
        // repeat, e.g. a manifest already published: an error like any refusal.)
        Outcome::Rejected(r)
            if r.reason == proto::RejectionReason::Duplicate && r.original_leaf_index.is_some() =>
        {
            let index = r.original_leaf_index.unwrap_or_default();
            let cp = checkpoint_of(node, None).coded()?;
            receipt_for(node, index, &cp, None).coded()
        }
        Outcome::Rejected(r) => Err(ApiError::from(r).into_graphql()),
    }
}

pub(crate) async fn record(
    ctx: &Context<'_>,
    body: Body,
    event_id: Option<String>,
) -> Result<Receipt> {
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
    let subject = clew_events::subject_of(&body).ok().map(|s| s.subject());
    let (outcome, leaf) = node
        .record_leaf(&viewer.principal, body, event_id)
        .await
        .coded()?;
    answer(node, outcome, subject.map(|s| (s, leaf)))
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
    /// Publishes a dataset version. Ingest or governance. Its series manifest
    /// must be uploaded first (`PUT /manifests/{digest}`): a version citing a
    /// manifest the blob store does not hold is refused (`MISSING_CONTENT`).
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
    /// Registers a research project. A researcher registers one it leads;
    /// governance any.
    async fn register_project(
        &self,
        ctx: &Context<'_>,
        input: ProjectInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::ProjectRegistered(input.0), event_id).await
    }
    /// Adds a member to a project. Its lead, or governance.
    async fn add_project_member(
        &self,
        ctx: &Context<'_>,
        input: ProjectMemberInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::ProjectMemberAdded(input.0), event_id).await
    }
    /// Removes a member from a project (their access through it ends at
    /// once). Its lead, or governance.
    async fn remove_project_member(
        &self,
        ctx: &Context<'_>,
        input: ProjectMemberRemovalInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::ProjectMemberRemoved(input.0), event_id).await
    }
    /// Asks for access to datasets or versions, for oneself or (its lead)
    /// for a project, accepting a data-use agreement. Researcher or partner.
    async fn submit_access_request(
        &self,
        ctx: &Context<'_>,
        input: AccessRequestInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::AccessRequestSubmitted(input.0), event_id).await
    }
    /// Answers a request for changes with new terms. The requester.
    async fn resubmit_access_request(
        &self,
        ctx: &Context<'_>,
        input: AccessResubmissionInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::AccessRequestResubmitted(input.0), event_id).await
    }
    /// Withdraws a request not yet decided. The requester.
    async fn withdraw_access_request(
        &self,
        ctx: &Context<'_>,
        input: AccessWithdrawalInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        record(ctx, Body::AccessRequestWithdrawn(input.0), event_id).await
    }
    /// Reviews an access request: take it up, ask for changes, approve
    /// (with conditions) or deny. Governance that did not make it, is not in
    /// its project and, for restricted data, governs the custodian site or
    /// nationally; the ledger refuses anything else with a reason code.
    async fn review_access_request(
        &self,
        ctx: &Context<'_>,
        input: AccessReviewInput,
        event_id: Option<String>,
    ) -> Result<Receipt> {
        let (node, viewer) = parts(ctx)?;
        viewer
            .require(&[Role::Governance], "reviewing an access request")
            .coded()?;
        let decision = input.decision.to_proto();
        let expires_at = match &input.expires_at {
            Some(t) => Some(clew_ledger::audit::unix_seconds(t).ok_or_else(|| {
                ApiError::BadInput(format!("expiresAt {t:?} is not an RFC 3339 time"))
                    .into_graphql()
            })?),
            None => None,
        };
        let grants = if matches!(
            decision,
            proto::AccessRequestState::Approved | proto::AccessRequestState::ApprovedWithConditions
        ) {
            let (node, id, conditions) = (
                node.clone(),
                input.request_id.clone(),
                input.conditions.clone(),
            );
            blocking(move || {
                crate::read::access::approval_grants(&node, &id, &conditions, expires_at)
            })
            .await?
        } else {
            Vec::new()
        };
        let body = Body::AccessRequestReviewed(proto::AccessRequestReviewed {
            request_id: input.request_id,
            decision: decision as i32,
            reason: input.reason,
            conditions: input.conditions,
            grants,
        });
        record(ctx, body, event_id).await
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
        answer(node, outcome, None).await
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
