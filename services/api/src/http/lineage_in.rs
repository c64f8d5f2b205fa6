//! OpenLineage in, Marquez-compatible (`POST /api/v1/lineage`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::respond::*;
use crate::state::AppState;
use crate::ApiError;

/// OpenLineage in (Marquez-compatible): see [`crate::openlineage`].
pub(crate) async fn openlineage_in(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    body: axum::body::Body,
) -> Response {
    use crate::openlineage::{map_event, recorded, Mapped};
    if let Err(e) = viewer.require(
        clew_events::policy::actor_roles(clew_events::proto::EventKind::TransformRecorded),
        "recording OpenLineage runs",
    ) {
        return error_response(e.status(), &e);
    }
    let body = match read_body(body, state.limits.body_bytes).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(format!("not JSON: {e}")),
            )
        }
    };
    let node = state.node.clone();
    let v = viewer.clone();
    let mapped =
        match tokio::task::spawn_blocking(move || map_event(&event, node.catalog(), &v)).await {
            Ok(m) => m,
            Err(e) => return internal(e),
        };
    let refused = |status: StatusCode, e: ApiError| {
        tracing::warn!(principal = %viewer.principal, error = %e, "refused an OpenLineage event");
        error_response(status, &e)
    };
    match mapped {
        Err(e @ ApiError::NotFound(_)) => refused(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e @ ApiError::BadInput(_)) => refused(StatusCode::BAD_REQUEST, e),
        Err(e) => internal(e),
        Ok(Mapped::Acknowledge(answer)) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Ok(Mapped::Record { body, event_id }) => {
            let subject = clew_events::subject_of(&body)
                .map(|s| s.subject())
                .unwrap_or_default();
            match state
                .node
                .record(&viewer.principal, *body, event_id)
                .await
                .map_err(ApiError::from)
            {
                Ok(crate::Outcome::Accepted(s)) => (
                    StatusCode::CREATED,
                    axum::Json(recorded(subject, s.event_id, s.leaf_index)),
                )
                    .into_response(),
                // A client's retry of a run already recorded: the first answer.
                Ok(crate::Outcome::Rejected(r))
                    if r.reason == clew_events::proto::RejectionReason::Duplicate
                        && r.original_leaf_index.is_some() =>
                {
                    (
                        StatusCode::OK,
                        axum::Json(recorded(
                            subject,
                            r.event_id,
                            r.original_leaf_index.unwrap_or_default(),
                        )),
                    )
                        .into_response()
                }
                Ok(crate::Outcome::Rejected(r)) => {
                    // The refusal as this caller may read it: no hidden names or leaves.
                    let mut e = ApiError::from(r);
                    if let ApiError::Rejected { detail, .. } = &mut e {
                        *detail = viewer.redact_text(state.node.catalog(), detail).0;
                    }
                    refused(StatusCode::CONFLICT, e)
                }
                Err(e @ ApiError::BadInput(_)) => refused(StatusCode::BAD_REQUEST, e),
                Err(e) => internal(e),
            }
        }
    }
}
