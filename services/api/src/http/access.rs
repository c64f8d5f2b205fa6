//! Access routes: the public data-use register and the proof-carrying
//! access audit (`clew verify-answer` checks it offline).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::respond::{authenticate, error_response, internal, Caller, Params};
use crate::state::AppState;
use crate::ApiError;

/// `GET /proofs/access?dataset=…&from=…&to=…` (RFC 3339 times).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AccessProofQuery {
    dataset: String,
    from: String,
    to: String,
}

/// Who held access to a dataset between two times, carrying its own proofs.
pub(crate) async fn proven_access(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    Params(q): Params<AccessProofQuery>,
) -> Response {
    let node = state.node.clone();
    let answer = tokio::task::spawn_blocking(move || {
        crate::read::access::proven_access_audit(&node, &viewer, &q.dataset, &q.from, &q.to)
    })
    .await;
    match answer {
        Ok(Ok(doc)) => axum::Json(doc).into_response(),
        Ok(Err(e @ ApiError::Internal(_))) => internal(e),
        Ok(Err(e)) => error_response(e.status(), &e),
        Err(e) => internal(e),
    }
}

/// `GET /data-uses`: the data-use register. Without a token it is the
/// public view (open datasets by name, restricted ones as `[restricted]`);
/// with one, as that caller may see it. A token that is not valid is refused
/// rather than quietly treated as none.
pub(crate) async fn data_uses(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = if headers.contains_key(header::AUTHORIZATION) {
        match authenticate(&state, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    } else {
        state.anonymous_viewer()
    };
    let node = state.node.clone();
    let answer =
        tokio::task::spawn_blocking(move || crate::read::access::data_use_register(&node, &viewer))
            .await;
    match answer {
        Ok(Ok(uses)) => axum::Json(serde_json::json!({ "dataUses": uses })).into_response(),
        Ok(Err(e @ ApiError::Internal(_))) => internal(e),
        Ok(Err(e)) => error_response(e.status(), &e),
        Err(e) => internal(e),
    }
}
