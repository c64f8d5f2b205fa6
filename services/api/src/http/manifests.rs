//! Dataset-version manifests: uploaded by digest before the event that
//! cites them, served to whoever may see the version.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::respond::*;
use crate::state::AppState;
use crate::ApiError;
use clew_ingest::manifest::ManifestSeries;
use clew_ingest::MANIFEST_FORMAT;
use futures_util::StreamExt;

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
    // Uploads spooled at once are bounded, whoever sends them.
    let Ok(_turn) = uploads().acquire().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError::Unavailable("shutting down".into()),
        );
    };
    if let Err(e) = clew_blobs::hex_of(&digest) {
        return error_response(StatusCode::BAD_REQUEST, &e.into());
    }
    // Hashed and limited on disk: no body is held in memory whole.
    let chunks = body.into_data_stream().map(|chunk| {
        chunk.map_err(|e| clew_blobs::BlobError::Io {
            path: "the request body".into(),
            source: std::io::Error::other(e),
        })
    });
    let spooled = match clew_blobs::spool(chunks, MAX_MANIFEST_BYTES as u64, &state.spool_dir).await
    {
        Ok(s) => s,
        Err(clew_blobs::BlobError::TooLarge { .. }) => {
            return payload_too_large(MAX_MANIFEST_BYTES)
        }
        Err(e @ clew_blobs::BlobError::Io { .. }) => {
            tracing::warn!(error = %e, "a manifest upload could not be spooled");
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput("the request body could not be read".into()),
            );
        }
        Err(e) => {
            let e = ApiError::from(e);
            return error_response(e.status(), &e);
        }
    };
    if spooled.digest != digest {
        let e = clew_blobs::BlobError::DigestMismatch {
            expected: digest,
            actual: spooled.digest.clone(),
        };
        return error_response(StatusCode::BAD_REQUEST, &e.into());
    }
    // The format is checked as the body is read, one series at a time, while
    // a large body's parts go up; the object exists only if the check passed.
    let reader = match spooled.reader() {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let check = async move {
        match tokio::task::spawn_blocking(move || check_manifest(reader)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(clew_blobs::BlobError::Refused(message)),
            Err(e) => Err(clew_blobs::BlobError::Io {
                path: "the manifest check".into(),
                source: std::io::Error::other(e),
            }),
        }
    };
    match store.put_spooled_checked(&spooled, check).await {
        Ok(stored) => {
            tracing::info!(principal = %viewer.principal, digest = %stored.digest, created = stored.created, "stored a manifest");
            // 201 when this upload created it, 200 when the store had it
            // already (a second writer of one digest is a no-op).
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                axum::Json(serde_json::json!({ "digest": stored.digest })),
            )
                .into_response()
        }
        Err(e) => {
            let e = ApiError::from(e);
            if matches!(e, ApiError::BadInput(_)) {
                tracing::warn!(error = %e, "a manifest upload was refused");
            } else {
                tracing::error!(error = %e, "storing a manifest failed");
            }
            error_response(e.status(), &e)
        }
    }
}

/// A Clew DICOM series manifest: the right `format`, and `series` each of
/// the manifest's series shape. Read as a stream; one series in memory at a time.
fn check_manifest(file: Box<dyn std::io::Read + Send>) -> Result<(), String> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    struct Series;
    impl<'de> serde::Deserialize<'de> for Series {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Each;
            impl<'de> Visitor<'de> for Each {
                type Value = Series;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a list of series")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Series, A::Error> {
                    while seq.next_element::<ManifestSeries>()?.is_some() {}
                    Ok(Series)
                }
            }
            d.deserialize_seq(Each)
        }
    }
    #[derive(serde::Deserialize)]
    struct Head {
        format: String,
        #[allow(dead_code)]
        series: Series,
    }
    let head: Head = serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| format!("not a Clew DICOM series manifest: {e}"))?;
    if head.format != MANIFEST_FORMAT {
        return Err(format!(
            "manifest format {:?} is not {MANIFEST_FORMAT:?}",
            head.format
        ));
    }
    Ok(())
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
    let headers = |size: u64| {
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_string(),
            ),
            (header::CONTENT_LENGTH, size.to_string()),
        ]
    };
    match store.open_read(&digest).await {
        // Up to one part's size the whole body is read and checked first, so
        // an altered object is answered with an error that says so.
        Ok(Some(read)) if read.size <= clew_blobs::SINGLE_PUT_MAX => {
            let size = read.size;
            match read.collect(clew_blobs::SINGLE_PUT_MAX).await {
                Ok(body) => (headers(size), body).into_response(),
                Err(e) => {
                    tracing::error!(error = %e, %subject, "a stored manifest failed its digest");
                    let e = match e {
                        // Not the caller's doing: the store's copy is damaged.
                        clew_blobs::BlobError::DigestMismatch { .. } => ApiError::Internal(format!(
                            "the stored manifest of {subject} is damaged ({e}); an operator must restore it (`clew verify --content` lists every damaged one)"
                        )),
                        other => ApiError::from(other),
                    };
                    error_response(e.status(), &e)
                }
            }
        }
        Ok(Some(read)) => {
            let logged = subject.clone();
            // Verified as it streams: an altered object ends the response
            // before its last chunk (see `BlobStore::open_read`).
            let body = read.body.inspect(move |chunk| {
                if let Err(e) = chunk {
                    tracing::error!(error = %e, subject = %logged, "a stored manifest failed its digest");
                }
            });
            (headers(read.size), axum::body::Body::from_stream(body)).into_response()
        }
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            &ApiError::NotFound(format!("the manifest of {subject} is not stored here")),
        ),
        Err(e) => {
            tracing::error!(error = %e, %subject, "reading a manifest failed");
            let e = ApiError::from(e);
            error_response(e.status(), &e)
        }
    }
}
