//! The query root: typed lookups, search, lineage, path, impact, history,
//! checkpoints and proofs, each through the read model for the caller.

use async_graphql::{Context, Object};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_catalog::{Direction, Range, SearchRequest, SortOrder};
use clew_events::proto::{self, Role};

use super::context::*;
use super::inputs::*;
use super::types::*;
use crate::read::access::{self, AccessAudit, AccessRequest, DataUse, RequestScope};
use crate::read::{
    self, checkpoint_of, hashes_b64, history_of, leaf_fully_visible, HistoryEvent, Impact, Lineage,
};
use crate::ApiError;

/// Queries: typed entity lookups and everything over the catalogue and ledger.
#[derive(async_graphql::MergedObject, Default)]
pub struct QueryRoot(LookupQuery, CatalogueQuery, AccessQuery);

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
    access_grant => "access-grant", "An access grant (governance, admin, or its grantee: the principal or a member of the project).";
    project => "project", "A research project (governance, admin, or its members).";
}

/// Projects, access requests, audits and the data-use register.
#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The caller's access requests and those of its projects, oldest first.
    async fn my_access_requests(&self, ctx: &Context<'_>) -> Result<Vec<AccessRequest>> {
        let (node, viewer) = owned(ctx)?;
        blocking(move || access::access_requests(&node, &viewer, RequestScope::Mine)).await
    }

    /// Requests awaiting a decision (submitted, under review, resubmitted),
    /// oldest first. Governance.
    async fn access_review_queue(&self, ctx: &Context<'_>) -> Result<Vec<AccessRequest>> {
        let (node, viewer) = owned(ctx)?;
        blocking(move || access::access_requests(&node, &viewer, RequestScope::Queue)).await
    }

    /// One access request (its requester, its project's members, governance).
    async fn access_request(&self, ctx: &Context<'_>, id: String) -> Result<Option<AccessRequest>> {
        let (node, viewer) = owned(ctx)?;
        blocking(move || match access::access_request(&node, &viewer, &id) {
            Ok(r) => Ok(Some(r)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// Who holds access to a dataset now and who held it at some time
    /// between `from` and `to` (RFC 3339), with the requests behind it.
    /// Governance. The same answer with its proofs: `GET /proofs/access`.
    async fn dataset_access(
        &self,
        ctx: &Context<'_>,
        dataset_id: String,
        from: String,
        to: String,
    ) -> Result<AccessAudit> {
        let (node, viewer) = owned(ctx)?;
        blocking(move || access::access_audit(&node, &viewer, &dataset_id, &from, &to)).await
    }

    /// Every approved use of data (project, organisation, purpose, datasets,
    /// dates), newest first; a dataset the caller may not see shows as
    /// `[restricted]`. Also public at `GET /data-uses`.
    async fn data_use_register(&self, ctx: &Context<'_>) -> Result<Vec<DataUse>> {
        let (node, viewer) = owned(ctx)?;
        blocking(move || access::data_use_register(&node, &viewer)).await
    }
}

fn owned(
    ctx: &Context<'_>,
) -> Result<(
    std::sync::Arc<clew_node::Node>,
    std::sync::Arc<crate::access::Viewer>,
)> {
    let (node, viewer) = parts(ctx)?;
    Ok((node.clone(), viewer.clone()))
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
        let mut projects: Vec<String> = viewer.projects.iter().cloned().collect();
        projects.sort();
        Ok(Me {
            principal: viewer.principal.clone(),
            roles: viewer
                .roles
                .iter()
                .map(|r| r.as_str_name().to_string())
                .collect(),
            granted_datasets: granted,
            projects,
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
        let (node, viewer) = (node.clone(), viewer.clone());
        let dir = match direction {
            LineageDirection::Upstream => Direction::Upstream,
            LineageDirection::Downstream => Direction::Downstream,
        };
        blocking(move || read::lineage(&node, &viewer, &subject, dir, depth, as_of)).await
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
        blocking(move || read::path(&node, &viewer, &from, &to, as_of)).await
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
        blocking(move || read::impact(&node, &viewer, &dataset_version, as_of)).await
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

    /// The last checkpoint signed at or before `time` (RFC 3339), by the
    /// ledger's clock: what an answer "as of" that moment is as of.
    async fn checkpoint_as_of(&self, ctx: &Context<'_>, time: String) -> Result<Checkpoint> {
        let (node, _) = parts(ctx)?;
        let secs = clew_ledger::audit::unix_seconds(&time)
            .ok_or_else(|| ApiError::BadInput(format!("time {time:?} is not an RFC 3339 time")))
            .coded()?;
        let size = node
            .ledger()
            .checkpoint_size_at_time(secs)
            .map_err(ApiError::from)
            .coded()?
            .ok_or_else(|| {
                ApiError::NotFound(format!("no checkpoint was signed at or before {time}"))
            })
            .coded()?;
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
