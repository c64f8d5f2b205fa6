//! Dataset-version manifests: uploaded by digest before the event that
//! cites them, served to whoever may see the version.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::respond::*;
use crate::state::AppState;
use crate::ApiError;
use clew_ingest::{Manifest, MANIFEST_FORMAT};

/// Largest manifest accepted: about 200,000 files.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn no_manifests() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &ApiError::NotFound("this server keeps no manifests".into()),
    )
}

/// Stores a dataset-version manifest under its digest before the event that
/// cites it is recorded. Ingest, governance or admin.
pub(crate) async fn put_manifest(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Path(digest): Path<String>,
    body: axum::body::Body,
) -> Response {
    // Who is asking comes before a single byte of the body is read.
    if let Err(e) = viewer.require(
        clew_events::policy::actor_roles(clew_events::proto::EventKind::DatasetVersionPublished),
        "storing a manifest",
    ) {
        return error_response(e.status(), &e);
    }
    let Some(store) = state.manifests.clone() else {
        return no_manifests();
    };
    // Uploads held in memory at once are bounded, whoever sends them.
    let Ok(_turn) = uploads().acquire().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError::Unavailable("shutting down".into()),
        );
    };
    let body = match read_body(body, MAX_MANIFEST_BYTES).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match serde_json::from_slice::<Manifest>(&body) {
        Ok(m) if m.format == MANIFEST_FORMAT => {}
        Ok(m) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(format!(
                    "manifest format {:?} is not {MANIFEST_FORMAT:?}",
                    m.format
                )),
            )
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(format!("not a Clew DICOM series manifest: {e}")),
            )
        }
    }
    let outcome =
        tokio::task::spawn_blocking(move || store.put_expecting(&digest, &body).map(|_| digest))
            .await;
    match outcome {
        Ok(Ok(digest)) => {
            tracing::info!(principal = %viewer.principal, %digest, "stored a manifest");
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "digest": digest })),
            )
                .into_response()
        }
        Ok(Err(
            e @ (clew_ingest::IngestError::BadDigest(_)
            | clew_ingest::IngestError::DigestMismatch { .. }),
        )) => error_response(StatusCode::BAD_REQUEST, &ApiError::BadInput(e.to_string())),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Manifest uploads read at once (each up to [`MAX_MANIFEST_BYTES`]).
pub(crate) fn uploads() -> &'static tokio::sync::Semaphore {
    static UPLOADS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    UPLOADS.get_or_init(|| tokio::sync::Semaphore::new(2))
}

/// The manifest of a dataset version, to whoever may see that version.
pub(crate) async fn get_manifest(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Path(id): Path<String>,
) -> Response {
    let subject = format!("dataset-version/{id}");
    let catalog = state.node.catalog();
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            &ApiError::NotFound(format!("{subject} is not in the catalogue")),
        )
    };
    let node = match catalog.node(&subject) {
        Ok(Some(n)) => n,
        Ok(None) => return not_found(),
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.into()),
    };
    // Restricted versions are invisible, not forbidden: the same answer as absent.
    if !viewer.node_visible(catalog, &node) {
        return not_found();
    }
    let digest = node.attributes()["manifestDigest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(store) = state.manifests.clone() else {
        return no_manifests();
    };
    match tokio::task::spawn_blocking(move || store.get(&digest)).await {
        Ok(Ok(Some(bytes))) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CACHE_CONTROL,
                    "private, max-age=31536000, immutable",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => error_response(
            StatusCode::NOT_FOUND,
            &ApiError::NotFound(format!("the manifest of {subject} is not stored here")),
        ),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
