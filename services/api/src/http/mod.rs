//! The HTTP surface: the router, its middleware and the server loop (its
//! connections bounded in [`connections`]). Routes
//! are grouped by family, one module each ([`graphql`], [`tlog`], [`linked`],
//! [`lineage_in`], [`manifests`], [`access`], [`ops`]); every one starts from the
//! [`respond::Caller`] extractor and answers errors through one mapping.

mod access;
mod connections;
mod graphql;
mod lineage_in;
mod linked;
mod manifests;
mod ops;
mod respond;
mod tlog;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

use crate::state::AppState;
use crate::ApiError;
use access::{data_uses, proven_access};
pub use connections::{serve_connections, ConnectionLimits, ConnectionMetrics};
use graphql::{graphql, graphql_ws};
use lineage_in::openlineage_in;
use linked::{dcat_catalog, dcat_dataset, prov_lineage};
pub use manifests::MAX_MANIFEST_BYTES;
use manifests::{get_manifest, put_manifest};
use ops::{metrics, readyz};
use respond::{error_response, is_json, payload_too_large};
use tlog::{checkpoint, proven_impact, proven_lineage, receipt, tile};

/// The router: every route of the API over `state`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.limits.body_bytes;
    Router::new()
        .route("/graphql", axum::routing::post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/checkpoint", get(checkpoint))
        .route("/tile/{*path}", get(tile))
        .route("/receipt/{index}", get(receipt))
        .route("/proofs/lineage", get(proven_lineage))
        .route("/api/v1/lineage", axum::routing::post(openlineage_in))
        .route("/catalog.jsonld", get(dcat_catalog))
        .route("/datasets/{id}/dcat.jsonld", get(dcat_dataset))
        .route("/prov/lineage", get(prov_lineage))
        .route("/proofs/impact", get(proven_impact))
        .route("/proofs/access", get(proven_access))
        .route("/data-uses", get(data_uses))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/dataset-versions/{id}/manifest", get(get_manifest))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .merge(
            Router::new()
                .route("/manifests/{digest}", put(put_manifest))
                .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES))
                .layer(RequestBodyLimitLayer::new(MAX_MANIFEST_BYTES))
                .layer(middleware::map_response(|r: Response| async move {
                    if r.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&r) {
                        return payload_too_large(MAX_MANIFEST_BYTES);
                    }
                    r
                })),
        )
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                &ApiError::NotFound("no such route".into()),
            )
        })
        .layer(middleware::map_response(
            move |mut r: Response| async move {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&r) {
                    r = payload_too_large(body_limit);
                }
                if r.status() == StatusCode::METHOD_NOT_ALLOWED {
                    r = error_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &ApiError::BadInput("this route does not take that method".into()),
                    );
                }
                // Nothing is cached unless a route says so: answers depend on
                // who asks (RFC 9111 §5.2.2.5).
                r.headers_mut()
                    .entry(header::CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-store"));
                r
            },
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then stops
/// the node cleanly (the sequencer finishes its batch, the ledger flushes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(state.clone());
    serve_router(listener, state, router, shutdown).await
}

/// [`serve`] with a router built from `app(state)` and more (the web pages
/// merged in front of the API).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let node = state.node.clone();
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let signal_node = node.clone();
    // Every connection shares the router as built (a clone is a reference
    // to it): built again per connection, it would hold 80 KiB of the
    // server's memory a connection instead of 30 (`clew-bench api` prints
    // the figure).
    let server = serve_connections(
        listener,
        router,
        state.limits.connections,
        ConnectionMetrics::of(node.metrics()),
        async move {
            shutdown.await;
            // Ends subscription streams and refuses new mutations.
            signal_node.begin_shutdown();
            let _ = stopping_tx.send(());
        },
    );
    let result = tokio::select! {
        r = server => r,
        // A WebSocket client may keep its connection open; don't wait forever.
        _ = async {
            let _ = stopping.await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => {
            tracing::warn!("connections still open 5 s after the shutdown signal; closing them");
            Ok(())
        }
    };
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    result
}

/// Counts and times every request by route and status.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    let m = state.node.metrics();
    m.http_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}
