//! The HTTP surface: routes, authentication, limits and the server loop.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse};
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Path, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use clew_events::proto::Role;
use clew_ledger::TileRef;
use tower_http::limit::RequestBodyLimitLayer;

use crate::access::Viewer;
use crate::schema::is_introspection;
use crate::state::{bearer, viewer_for};
pub use crate::state::{AppState, Limits};
use crate::ApiError;
use clew_ingest::{Manifest, MANIFEST_FORMAT};
use clew_node::Node;

/// Largest manifest accepted: about 200,000 files.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

/// The router: every route of the API over `state`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.limits.body_bytes;
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
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
    let node = state.node.clone();
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let signal_node = node.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        // Ends subscription streams and refuses new mutations.
        signal_node.begin_shutdown();
        let _ = stopping_tx.send(());
    });
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

/// A JSON error body in the GraphQL response shape, with its code.
fn error_response(status: StatusCode, e: &ApiError) -> Response {
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

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<Viewer>, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    viewer_for(state, token).map_err(|e| Box::new(error_response(e.status(), &e)))
}

/// [`authenticate`], then one of `roles` (403 naming `what` otherwise).
fn authenticate_as(
    state: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
    what: &str,
) -> Result<Arc<Viewer>, Box<Response>> {
    let viewer = authenticate(state, headers)?;
    viewer
        .require(roles, what)
        .map_err(|e| Box::new(error_response(e.status(), &e)))?;
    Ok(viewer)
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Clew — GraphiQL (set the Authorization: Bearer header)")
            .finish(),
    )
}

/// Gives errors async-graphql raised itself (limits, parsing, validation)
/// a code, as ours have.
fn code_for(message: &str) -> &'static str {
    if message.contains("nested too deep") || message.contains("recursion depth") {
        "QUERY_TOO_DEEP"
    } else if message.contains("too complex") {
        "QUERY_TOO_COMPLEX"
    } else if message.contains("Failed to parse") || message.contains("Invalid value") {
        "BAD_USER_INPUT"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    }
}

/// Reads a whole request body of at most `limit` bytes, after the caller
/// was authenticated: over the limit (declared or streamed) answers 413
/// `PAYLOAD_TOO_LARGE`, a broken body 400.
async fn read_body(
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

fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/json")
}

fn payload_too_large(limit: usize) -> Response {
    let e = ApiError::BadInput(format!(
        "the request body is over the limit of {limit} bytes"
    ));
    let body = serde_json::json!({
        "errors": [{ "message": e.to_string(), "extensions": { "code": "PAYLOAD_TOO_LARGE" } }]
    });
    (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response()
}

/// GraphQL over HTTP: a JSON body `{query, operationName?, variables?}`.
async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let bytes = match read_body(body, state.limits.body_bytes).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // GraphQL over HTTP §4.4.1: a JSON object whose `query` is a string.
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|v| match v.get("query") {
            Some(serde_json::Value::String(_)) => {
                serde_json::from_value::<async_graphql::Request>(v).map_err(|e| e.to_string())
            }
            _ => Err("there is no \"query\" string".into()),
        });
    let request: async_graphql::Request = match parsed {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(format!(
                    "the body is not a GraphQL request (JSON with a \"query\" string): {e}"
                )),
            )
        }
    };
    let schema = if is_introspection(&request.query) {
        &state.introspection
    } else {
        &state.schema
    };
    let request = request.data(viewer);
    let executed = tokio::time::timeout(state.limits.timeout, schema.execute(request)).await;
    let mut response = match executed {
        Ok(r) => r,
        Err(_) => {
            state
                .node
                .metrics()
                .graphql_operations
                .with_label_values(&["TIMEOUT"])
                .inc();
            let e = ApiError::Unavailable(format!(
                "the request ran longer than the {} s limit",
                state.limits.timeout.as_secs()
            ));
            let body = serde_json::json!({
                "errors": [{ "message": e.to_string(), "extensions": { "code": "TIMEOUT" } }]
            });
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
    };
    for err in &mut response.errors {
        let has_code = err
            .extensions
            .as_ref()
            .is_some_and(|x| x.get("code").is_some());
        if !has_code {
            let code = code_for(&err.message);
            err.extensions
                .get_or_insert_with(Default::default)
                .set("code", code);
        }
    }
    let outcome = response
        .errors
        .first()
        .and_then(|e| e.extensions.as_ref())
        .and_then(|x| x.get("code"))
        .map(|c| c.to_string().trim_matches('"').to_string())
        .unwrap_or_else(|| "ok".into());
    state
        .node
        .metrics()
        .graphql_operations
        .with_label_values(&[outcome.as_str()])
        .inc();
    GraphQLResponse::from(response).into_response()
}

/// graphql-transport-ws (and the older graphql-ws) subscriptions. The token
/// comes in the upgrade request's Authorization header or in the
/// `connection_init` payload (`{"Authorization": "Bearer …"}`), which is what
/// browser clients can send.
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    _supported: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    use std::str::FromStr;
    // The extractor refused an upgrade naming no protocol Clew speaks; this
    // is the first one the client offered that it does.
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| async_graphql::http::WebSocketProtocols::from_str(p.trim()).ok())
        })
        .unwrap_or(async_graphql::http::WebSocketProtocols::SubscriptionsTransportWS);
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string);
    if header_token.is_some() {
        if let Err(r) = authenticate(&state, &headers) {
            return *r;
        }
    }
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| crate::ws::serve(socket, state, protocol, header_token))
}

async fn checkpoint(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authenticate(&state, &headers) {
        return *r;
    }
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
async fn tile(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let tile = match TileRef::parse(&format!("tile/{path}")) {
        Ok(t) => t,
        Err(e) => return error_response(StatusCode::NOT_FOUND, &ApiError::from(e)),
    };
    if let TileRef::Entries { .. } = tile {
        if let Err(e) = viewer.require(&[Role::Governance, Role::Admin], "entry bundles") {
            return error_response(StatusCode::FORBIDDEN, &e);
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

fn internal(e: impl std::fmt::Display) -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &ApiError::Internal(e.to_string()),
    )
}

fn no_manifests() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &ApiError::NotFound("this server keeps no manifests".into()),
    )
}

/// C2SP tlog-proof receipt of one leaf against the latest checkpoint, to a
/// caller who may see that whole event.
async fn receipt(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(index): Path<String>,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
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
        Ok(Err(e @ ApiError::NotFound(_))) => error_response(StatusCode::NOT_FOUND, &e),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Query-string parameters; a bad query string answers 400 with a JSON
/// error and its code, as every other refusal does.
struct Params<T>(T);

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
fn direction_of(text: Option<&str>) -> Result<clew_catalog::Direction, Box<Response>> {
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
struct LineageProofQuery {
    subject: String,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    depth: Option<u32>,
}

/// `GET /proofs/impact?datasetVersion=…`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpactProofQuery {
    dataset_version: String,
}

async fn proven(
    state: AppState,
    headers: HeaderMap,
    kind: &'static str,
    subject: String,
    direction: clew_catalog::Direction,
    depth: u32,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || {
        crate::read::proven_answer(&node, &viewer, kind, &subject, direction, depth)
    })
    .await
    {
        Ok(Ok(doc)) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(doc)).into_response(),
        Ok(Err(e @ ApiError::NotFound(_))) => error_response(StatusCode::NOT_FOUND, &e),
        Ok(Err(e @ ApiError::Forbidden(_))) => error_response(StatusCode::FORBIDDEN, &e),
        Ok(Err(e @ ApiError::BadInput(_))) => error_response(StatusCode::BAD_REQUEST, &e),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// A lineage answer carrying its own proofs (see `clew verify-answer`).
async fn proven_lineage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<LineageProofQuery>,
) -> Response {
    let direction = match direction_of(q.direction.as_deref()) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    proven(
        state,
        headers,
        "lineage",
        q.subject,
        direction,
        q.depth.unwrap_or(10),
    )
    .await
}

/// Everything downstream of a dataset version, carrying its own proofs.
async fn proven_impact(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<ImpactProofQuery>,
) -> Response {
    let subject = if q.dataset_version.starts_with("dataset-version/") {
        q.dataset_version
    } else {
        format!("dataset-version/{}", q.dataset_version)
    };
    proven(
        state,
        headers,
        "impact",
        subject,
        clew_catalog::Direction::Downstream,
        50,
    )
    .await
}

/// OpenLineage in (Marquez-compatible): see [`crate::openlineage`].
async fn openlineage_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use crate::openlineage::{map_event, recorded, Mapped};
    let viewer = match authenticate_as(
        &state,
        &headers,
        clew_events::policy::actor_roles(clew_events::proto::EventKind::TransformRecorded),
        "recording OpenLineage runs",
    ) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let body = match read_body(body, state.limits.body_bytes).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &ApiError::BadInput(format!("not JSON: {e}")),
            )
        }
    };
    let node = state.node.clone();
    let v = viewer.clone();
    let mapped =
        match tokio::task::spawn_blocking(move || map_event(&event, node.catalog(), &v)).await {
            Ok(m) => m,
            Err(e) => return internal(e),
        };
    let refused = |status: StatusCode, e: ApiError| {
        tracing::warn!(principal = %viewer.principal, error = %e, "refused an OpenLineage event");
        error_response(status, &e)
    };
    match mapped {
        Err(e @ ApiError::NotFound(_)) => refused(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e @ ApiError::BadInput(_)) => refused(StatusCode::BAD_REQUEST, e),
        Err(e) => internal(e),
        Ok(Mapped::Acknowledge(answer)) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Ok(Mapped::Record { body, event_id }) => {
            let subject = clew_events::subject_of(&body)
                .map(|s| s.subject())
                .unwrap_or_default();
            match state
                .node
                .record(&viewer.principal, *body, event_id)
                .await
                .map_err(ApiError::from)
            {
                Ok(crate::Outcome::Accepted(s)) => (
                    StatusCode::CREATED,
                    axum::Json(recorded(subject, s.event_id, s.leaf_index)),
                )
                    .into_response(),
                // A client's retry of a run already recorded: the first answer.
                Ok(crate::Outcome::Rejected(r))
                    if r.reason == clew_events::proto::RejectionReason::Duplicate
                        && r.original_leaf_index.is_some() =>
                {
                    (
                        StatusCode::OK,
                        axum::Json(recorded(
                            subject,
                            r.event_id,
                            r.original_leaf_index.unwrap_or_default(),
                        )),
                    )
                        .into_response()
                }
                Ok(crate::Outcome::Rejected(r)) => {
                    // The refusal as this caller may read it: no hidden names or leaves.
                    let mut e = ApiError::from(r);
                    if let ApiError::Rejected { detail, .. } = &mut e {
                        *detail = viewer.redact_text(state.node.catalog(), detail).0;
                    }
                    refused(StatusCode::CONFLICT, e)
                }
                Err(e @ ApiError::BadInput(_)) => refused(StatusCode::BAD_REQUEST, e),
                Err(e) => internal(e),
            }
        }
    }
}

/// `http://<Host>` of the request: the base of the IRIs in linked-data answers.
fn base_of(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("clew.invalid");
    format!("http://{host}")
}

async fn linked_data(
    state: AppState,
    headers: HeaderMap,
    content_type: &'static str,
    make: impl FnOnce(&Node, &Viewer, &str) -> Result<serde_json::Value, ApiError> + Send + 'static,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
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
        Ok(Err(e @ ApiError::NotFound(_))) => error_response(StatusCode::NOT_FOUND, &e),
        Ok(Err(e @ ApiError::BadInput(_))) => error_response(StatusCode::BAD_REQUEST, &e),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// DCAT-AP 3 / HealthDCAT-AP JSON-LD of every dataset the caller may see.
async fn dcat_catalog(State(state): State<AppState>, headers: HeaderMap) -> Response {
    linked_data(
        state,
        headers,
        "application/ld+json",
        crate::standards::dcat_catalog,
    )
    .await
}

/// DCAT-AP 3 / HealthDCAT-AP JSON-LD of one dataset and its versions.
async fn dcat_dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    linked_data(
        state,
        headers,
        "application/ld+json",
        move |node, viewer, base| crate::standards::dcat_dataset(node, viewer, base, &id),
    )
    .await
}

/// W3C PROV-JSON of a lineage answer.
async fn prov_lineage(
    State(state): State<AppState>,
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
        headers,
        "application/json",
        move |node, viewer, base| {
            crate::read::prov_lineage(node, viewer, &q.subject, direction, depth, base)
        },
    )
    .await
}

/// Stores a dataset-version manifest under its digest before the event that
/// cites it is recorded. Ingest, governance or admin.
async fn put_manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
    body: axum::body::Body,
) -> Response {
    // Who is asking comes before a single byte of the body is read.
    let viewer = match authenticate_as(
        &state,
        &headers,
        clew_events::policy::actor_roles(clew_events::proto::EventKind::DatasetVersionPublished),
        "storing a manifest",
    ) {
        Ok(v) => v,
        Err(r) => return *r,
    };
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
fn uploads() -> &'static tokio::sync::Semaphore {
    static UPLOADS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    UPLOADS.get_or_init(|| tokio::sync::Semaphore::new(2))
}

/// The manifest of a dataset version, to whoever may see that version.
async fn get_manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
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

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = match authenticate(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(e) = viewer.require(&[Role::Governance, Role::Admin], "metrics") {
        return error_response(StatusCode::FORBIDDEN, &e);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.node.metrics().render(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up with the ledger\n",
        )
            .into_response()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_raised_by_async_graphql_get_codes() {
        assert_eq!(code_for("Query is nested too deep."), "QUERY_TOO_DEEP");
        assert_eq!(code_for("Query is too complex."), "QUERY_TOO_COMPLEX");
        assert_eq!(
            code_for("Failed to parse \"DatasetInput\": unknown field `colour`"),
            "BAD_USER_INPUT"
        );
        assert_eq!(
            code_for("Unknown field \"noSuchField\" on type \"Query\"."),
            "GRAPHQL_VALIDATION_FAILED"
        );
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
