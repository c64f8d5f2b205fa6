//! GraphQL over HTTP (`POST /graphql`) and the WebSocket upgrade
//! for graphql-transport-ws (`GET /graphql/ws`).

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::respond::*;
use crate::schema::is_introspection;
use crate::state::bearer;
use crate::state::AppState;
use crate::ApiError;

/// Gives errors async-graphql raised itself (limits, parsing, validation)
/// a code, as ours have.
pub(crate) fn code_for(message: &str) -> &'static str {
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

/// GraphQL over HTTP: a JSON body `{query, operationName?, variables?}`.
pub(crate) async fn graphql(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    body: axum::body::Body,
) -> Response {
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
    let request = state.parsed.prepare(request).data(viewer);
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
pub(crate) async fn graphql_ws(
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
