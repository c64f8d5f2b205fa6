//! Linked data for outside tools: DCAT-AP JSON-LD of the catalogue and its
//! datasets, W3C PROV-JSON of lineage, each for the caller.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::respond::*;
use crate::access::Viewer;
use crate::state::AppState;
use crate::ApiError;
use clew_node::Node;

pub(crate) async fn linked_data(
    state: AppState,
    viewer: Arc<Viewer>,
    headers: HeaderMap,
    content_type: &'static str,
    make: impl FnOnce(&Node, &Viewer, &str) -> Result<serde_json::Value, ApiError> + Send + 'static,
) -> Response {
    let base = base_of(&headers);
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || make(&node, &viewer, &base)).await {
        Ok(Ok(doc)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            doc.to_string(),
        )
            .into_response(),
        Ok(Err(e)) => error_response(e.status(), &e),
        Err(e) => internal(e),
    }
}

/// DCAT-AP 3 / HealthDCAT-AP JSON-LD of every dataset the caller may see.
pub(crate) async fn dcat_catalog(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    headers: HeaderMap,
) -> Response {
    linked_data(
        state,
        viewer,
        headers,
        "application/ld+json",
        crate::standards::dcat_catalog,
    )
    .await
}

/// DCAT-AP 3 / HealthDCAT-AP JSON-LD of one dataset and its versions.
pub(crate) async fn dcat_dataset(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    linked_data(
        state,
        viewer,
        headers,
        "application/ld+json",
        move |node, viewer, base| crate::standards::dcat_dataset(node, viewer, base, &id),
    )
    .await
}

/// W3C PROV-JSON of a lineage answer.
pub(crate) async fn prov_lineage(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    headers: HeaderMap,
    Params(q): Params<LineageProofQuery>,
) -> Response {
    let direction = match direction_of(q.direction.as_deref()) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let depth = q.depth.unwrap_or(10);
    linked_data(
        state,
        viewer,
        headers,
        "application/json",
        move |node, viewer, base| {
            crate::read::prov_lineage(node, viewer, &q.subject, direction, depth, base)
        },
    )
    .await
}
