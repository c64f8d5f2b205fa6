//! Operations: `/metrics` (Prometheus; governance and admin) and `/readyz`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use clew_events::proto::Role;

use super::respond::*;
use crate::state::AppState;

pub(crate) async fn metrics(State(state): State<AppState>, Caller(viewer): Caller) -> Response {
    if let Err(e) = viewer.require(&[Role::Governance, Role::Admin], "metrics") {
        return error_response(e.status(), &e);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.node.render_metrics(),
    )
        .into_response()
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.ready() {
        let mut text = String::from("ready\n");
        // How far the last witnessed checkpoint lags the last signed one.
        if let Some(line) = state.node.metrics().witnessed_line() {
            text.push_str(&line);
        }
        (StatusCode::OK, text).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up with the ledger\n",
        )
            .into_response()
    }
}
