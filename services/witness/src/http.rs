//! The witness's HTTP interface (C2SP tlog-witness): `POST /add-checkpoint`,
//! and `GET /` naming the witness and its key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::witness::{Refusal, Witness};

/// Largest request accepted: an old size, 63 hashes and a checkpoint.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The routes of one witness.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/", get(about))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(witness)
}

async fn about(State(w): State<Arc<Witness>>) -> Response {
    let mut origins: Vec<&str> = w.origins().collect();
    origins.sort();
    let text = format!(
        "Clew witness (C2SP tlog-witness)\nkey: {}\nlogs:\n{}",
        w.signer().vkey(),
        origins
            .iter()
            .map(|o| format!("  {o}\n"))
            .collect::<String>()
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let answer = tokio::task::spawn_blocking(move || w.add_checkpoint(&body)).await;
    let answer = answer.unwrap_or_else(|e| Err(Refusal::Internal(e.to_string())));
    match answer {
        Ok(lines) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            lines,
        )
            .into_response(),
        // tlog-witness: the size last cosigned, as text/x.tlog.size.
        Err(Refusal::Conflict { known, detail }) => {
            tracing::info!(known, "add-checkpoint conflict: {detail}");
            (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, "text/x.tlog.size")],
                format!("{known}\n"),
            )
                .into_response()
        }
        Err(r) => {
            let status =
                StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::info!(status = status.as_u16(), "add-checkpoint refused: {r}");
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{r}\n"),
            )
                .into_response()
        }
    }
}
