//! The ledger as C2SP serves it: `/checkpoint`, tlog-tiles (`/tile/…`),
//! tlog-proof receipts, and proof-carrying lineage and impact answers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use clew_events::proto::Role;
use clew_ledger::TileRef;

use super::respond::*;
use crate::access::Viewer;
use crate::state::AppState;
use crate::ApiError;

pub(crate) async fn checkpoint(State(state): State<AppState>, _caller: Caller) -> Response {
    match state.node.checkpoint() {
        Ok(cp) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            cp.note,
        )
            .into_response(),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &ApiError::from(e)),
    }
}

/// C2SP tlog-tiles: hash tiles for every authenticated caller; entry bundles
/// (the events themselves, restricted ones included) for governance and
/// admin only.
pub(crate) async fn tile(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Path(path): Path<String>,
) -> Response {
    let tile = match TileRef::parse(&format!("tile/{path}")) {
        Ok(t) => t,
        Err(e) => return error_response(StatusCode::NOT_FOUND, &ApiError::from(e)),
    };
    if let TileRef::Entries { .. } = tile {
        if let Err(e) = viewer.require(&[Role::Governance, Role::Admin], "entry bundles") {
            return error_response(e.status(), &e);
        }
    }
    let full = !matches!(
        tile,
        TileRef::Entries { width, .. } | TileRef::Hashes { width, .. } if u64::from(width) < 256
    );
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || node.ledger().read_tile(tile)).await {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CACHE_CONTROL,
                    // tlog-tiles: full tiles never change; partial ones do.
                    // Every tile is behind a token (entry bundles behind a
                    // role), so only the caller's own cache may keep one
                    // (RFC 9111 §5.2.2.7 private; §3.5 Authorization).
                    if full {
                        "private, max-age=31536000, immutable"
                    } else {
                        "no-store"
                    },
                ),
                (header::VARY, "Authorization"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => error_response(StatusCode::NOT_FOUND, &ApiError::from(e)),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ApiError::Internal(e.to_string()),
        ),
    }
}

/// C2SP tlog-proof receipt of one leaf against the latest checkpoint, to a
/// caller who may see that whole event.
pub(crate) async fn receipt(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Path(index): Path<String>,
) -> Response {
    let Ok(index) = index.parse::<u64>() else {
        return error_response(
            StatusCode::BAD_REQUEST,
            &ApiError::BadInput(format!("leaf index {index:?} is not a number")),
        );
    };
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || crate::read::visible_receipt(&node, &viewer, index))
        .await
    {
        Ok(Ok(text)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Ok(Err(e)) => error_response(e.status(), &e),
        Err(e) => internal(e),
    }
}

/// `GET /proofs/impact?datasetVersion=…`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImpactProofQuery {
    pub(crate) dataset_version: String,
}

pub(crate) async fn proven(
    state: AppState,
    viewer: Arc<Viewer>,
    kind: &'static str,
    subject: String,
    direction: clew_catalog::Direction,
    depth: u32,
) -> Response {
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || {
        crate::read::proven_answer(&node, &viewer, kind, &subject, direction, depth)
    })
    .await
    {
        Ok(Ok(doc)) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(doc)).into_response(),
        Ok(Err(e @ ApiError::Internal(_))) => internal(e),
        Ok(Err(e)) => error_response(e.status(), &e),
        Err(e) => internal(e),
    }
}

/// A lineage answer carrying its own proofs (see `clew verify-answer`).
pub(crate) async fn proven_lineage(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Params(q): Params<LineageProofQuery>,
) -> Response {
    let direction = match direction_of(q.direction.as_deref()) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    proven(
        state,
        viewer,
        "lineage",
        q.subject,
        direction,
        q.depth.unwrap_or(10),
    )
    .await
}

/// Everything downstream of a dataset version, carrying its own proofs.
pub(crate) async fn proven_impact(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Params(q): Params<ImpactProofQuery>,
) -> Response {
    let subject = if q.dataset_version.starts_with("dataset-version/") {
        q.dataset_version
    } else {
        format!("dataset-version/{}", q.dataset_version)
    };
    proven(
        state,
        viewer,
        "impact",
        subject,
        clew_catalog::Direction::Downstream,
        50,
    )
    .await
}
