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
        state.node.metrics().render(),
    )
        .into_response()
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.ready() {
        let m = state.node.metrics();
        let mut text = String::from("ready\n");
        if m.witnesses.get() > 0 {
            // How far the last witnessed checkpoint lags the last signed one.
            text.push_str(&format!(
                "witnessed: tree size {} ({} leaves behind the latest checkpoint; quorum {} of {} witnesses)\n",
                m.witnessed_tree_size.get(),
                m.witness_lag_leaves.get(),
                m.witness_quorum.get(),
                m.witnesses.get()
            ));
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
