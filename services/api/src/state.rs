//! What every request handler shares ([`AppState`]: the node, tokens, the
//! schemas, limits, the manifest store), and who is asking: the bearer token
//! of a request resolved to its [`Viewer`]. HTTP routes and the WebSocket
//! transport both start here.

use std::sync::Arc;
use std::time::Duration;

use clew_node::Node;

use crate::access::{DatasetAccess, ResolvedViewers, TokenStore, Viewer};
use crate::parsed::ParsedDocuments;
use crate::schema::{build_introspection_schema, build_schema, ClewSchema, QueryLimits};
use crate::ApiError;

/// Limits every request must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection nesting of a query.
    pub depth: usize,
    /// Weighted field count of a query.
    pub complexity: usize,
    /// Largest request body.
    pub body_bytes: usize,
    /// Longest a query or mutation may run.
    pub timeout: Duration,
    /// How many connections, and how slow a client may be.
    pub connections: crate::ConnectionLimits,
    /// Most WebSockets (GraphQL subscriptions' connections) one principal
    /// holds at once.
    pub websockets_per_principal: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            depth: 12,
            complexity: 2_000,
            body_bytes: 256 * 1024,
            timeout: Duration::from_secs(15),
            connections: crate::ConnectionLimits::default(),
            websockets_per_principal: 16,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The spine.
    pub node: Arc<Node>,
    /// Access levels of datasets, shared by every request's viewer.
    pub access: Arc<DatasetAccess>,
    /// Bearer tokens.
    pub tokens: Arc<TokenStore>,
    /// The schema.
    pub schema: ClewSchema,
    /// The same schema with the bounds of introspection-only queries.
    pub introspection: ClewSchema,
    /// Limits.
    pub limits: Limits,
    /// Dataset-version manifests (content-addressed), when this server keeps them.
    pub manifests: Option<clew_blobs::BlobStore>,
    /// Where manifest uploads are spooled while they are hashed and checked.
    pub spool_dir: std::path::PathBuf,
    /// GraphQL documents already parsed, by their text.
    pub(crate) parsed: Arc<ParsedDocuments>,
    /// Callers resolved recently, by principal.
    pub(crate) viewers: Arc<ResolvedViewers>,
    /// The WebSockets open, by principal.
    pub(crate) websockets: Arc<crate::ws::OpenWebSockets>,
}

impl AppState {
    /// Builds the state (and the schema) over a running node.
    pub fn new(node: Arc<Node>, tokens: Arc<TokenStore>, limits: Limits) -> Self {
        let access = Arc::new(DatasetAccess::default());
        let schema = build_schema(
            node.clone(),
            tokens.clone(),
            access.clone(),
            QueryLimits {
                depth: limits.depth,
                complexity: limits.complexity,
            },
        );
        let introspection =
            build_introspection_schema(node.clone(), tokens.clone(), access.clone());
        Self {
            node,
            access,
            tokens,
            schema,
            introspection,
            limits,
            manifests: None,
            spool_dir: std::env::temp_dir(),
            parsed: Arc::new(ParsedDocuments::default()),
            viewers: Arc::new(ResolvedViewers::default()),
            websockets: Arc::default(),
        }
    }

    /// Keeps uploaded manifests in `store` (`PUT /manifests/{digest}`) and
    /// serves them (`GET /dataset-versions/{id}/manifest`).
    /// Uploads are spooled in `spool_dir` while they are hashed.
    pub fn with_manifests(
        mut self,
        store: clew_blobs::BlobStore,
        spool_dir: std::path::PathBuf,
    ) -> Self {
        self.manifests = Some(store);
        self.spool_dir = spool_dir;
        self
    }
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 section 2.1).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller behind a token.
pub(crate) fn viewer_for(state: &AppState, token: Option<&str>) -> Result<Arc<Viewer>, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::Unauthenticated("this endpoint needs an Authorization: Bearer token".into())
    })?;
    let principal = state
        .tokens
        .principal_of(token)
        .ok_or_else(|| ApiError::Unauthenticated("the bearer token is not valid".into()))?;
    state.viewers.viewer(
        state.node.catalog(),
        state.access.clone(),
        &principal,
        state.node.access_time(),
    )
}

impl AppState {
    /// The viewer behind a bearer token: what `Authorization: Bearer` on
    /// any route resolves to.
    pub fn viewer(&self, token: &str) -> Result<Arc<Viewer>, ApiError> {
        viewer_for(self, Some(token))
    }

    /// Someone without a token: what the public routes (`GET /data-uses`)
    /// answer anyone.
    pub fn anonymous_viewer(&self) -> Arc<Viewer> {
        Arc::new(Viewer::anonymous(
            self.access.clone(),
            self.node.access_time(),
        ))
    }

    /// Runs one GraphQL subscription for the holder of `token` in this
    /// process: what `/graphql/ws` streams them, each item the `data` of one
    /// delivery or the error that ends the stream. The caller is resolved
    /// again for every batch, as on the WebSocket: a revoked token ends the
    /// stream, a revoked grant hides what it granted from then on.
    pub fn subscribe(
        &self,
        token: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<impl futures_util::Stream<Item = Result<serde_json::Value, ApiError>>, ApiError>
    {
        let viewer = self.viewer(token)?;
        let session = Arc::new(crate::access::Session::new(
            token.to_string(),
            self.tokens.clone(),
        ));
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables))
            .data(viewer)
            .data(session);
        Ok(futures_util::StreamExt::map(
            self.schema.execute_stream(request),
            data_of,
        ))
    }

    /// Runs one GraphQL operation for `viewer` in this process, on the
    /// served schema with its limits and timeout: what `POST /graphql`
    /// answers, as `data`, or its first error. The web pages are built from
    /// these answers, so a page shows exactly what the API would.
    pub async fn execute(
        &self,
        viewer: Arc<Viewer>,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let request = self
            .parsed
            .prepare(async_graphql::Request::new(query))
            .variables(async_graphql::Variables::from_json(variables))
            .data(viewer);
        let response = tokio::time::timeout(self.limits.timeout, self.schema.execute(request))
            .await
            .map_err(|_| {
                ApiError::Unavailable(format!(
                    "the request ran longer than the {} s limit",
                    self.limits.timeout.as_secs()
                ))
            })?;
        data_of(response)
    }
}

/// A GraphQL response's `data`, or its first error as the API's error.
fn data_of(response: async_graphql::Response) -> Result<serde_json::Value, ApiError> {
    if let Some(e) = response.errors.first() {
        let code = e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .map(|c| c.to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        return Err(ApiError::from_code(&code, e.message.clone()));
    }
    response
        .data
        .into_json()
        .map_err(|e| ApiError::Internal(format!("an answer is not JSON: {e}")))
}
