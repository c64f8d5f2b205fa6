//! What every route shares: the [`Caller`] extractor (bearer token →
//! viewer, before the body is read), JSON error answers with the status of
//! [`crate::ApiError::status`], bounded body reading and query-string parsing.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::access::Viewer;
use crate::state::AppState;
use crate::state::{bearer, viewer_for};
use crate::ApiError;

/// A JSON error body in the GraphQL response shape, with its code.
pub(crate) fn error_response(status: StatusCode, e: &ApiError) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": e.to_string(), "extensions": { "code": e.code() } }]
    });
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"clew\""),
        );
    }
    r
}

/// The authenticated caller of a route: its bearer token resolved to a
/// [`Viewer`] before anything else of the request (its body above all) is
/// read. A missing or unknown token answers 401 with a challenge.
pub(crate) struct Caller(pub Arc<Viewer>);

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers)
            .map(Caller)
            .map_err(|r| *r)
    }
}

pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Viewer>, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    viewer_for(state, token).map_err(|e| Box::new(error_response(e.status(), &e)))
}

/// Reads a whole request body of at most `limit` bytes, after the caller
/// was authenticated: over the limit (declared or streamed) answers 413
/// `PAYLOAD_TOO_LARGE`, a broken body 400.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, Box<Response>> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        let mut too_large = false;
        while let Some(s) = source {
            too_large |= s.to_string().contains("length limit exceeded");
            source = s.source();
        }
        Box::new(if too_large {
            payload_too_large(limit)
        } else {
            error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput("the request body could not be read".into()),
            )
        })
    })
}

pub(crate) fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/json")
}

pub(crate) fn payload_too_large(limit: usize) -> Response {
    let e = ApiError::BadInput(format!(
        "the request body is over the limit of {limit} bytes"
    ));
    let body = serde_json::json!({
        "errors": [{ "message": e.to_string(), "extensions": { "code": "PAYLOAD_TOO_LARGE" } }]
    });
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ApiError::Internal(e.to_string()),
    )
}

/// Query-string parameters; a bad query string answers 400 with a JSON
/// error and its code, as every other refusal does.
pub(crate) struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(e.body_text()),
            )),
        }
    }
}

/// `upstream` (the default) or `downstream`.
pub(crate) fn direction_of(text: Option<&str>) -> Result<clew_catalog::Direction, Box<Response>> {
    match text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("upstream") => Ok(clew_catalog::Direction::Upstream),
        Some("downstream") => Ok(clew_catalog::Direction::Downstream),
        Some(other) => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            &ApiError::BadInput(format!("direction {other:?} is not upstream or downstream")),
        ))),
    }
}

/// `GET /proofs/lineage?subject=…&direction=upstream|downstream&depth=…`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct LineageProofQuery {
    pub(crate) subject: String,
    #[serde(default)]
    pub(crate) direction: Option<String>,
    #[serde(default)]
    pub(crate) depth: Option<u32>,
}

/// `http://<Host>` of the request: the base of the IRIs in linked-data answers.
pub(crate) fn base_of(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("clew.invalid");
    format!("http://{host}")
}
