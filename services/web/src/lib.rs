//! Clew's web catalogue: the pages the people Clew serves use in a browser —
//! search with facets, dataset, version and model pages, the lineage
//! explorer (as of any signed checkpoint), the withdrawal impact report with
//! its exports, per-entity history, the rejected log and the ledger page.
//!
//! ```text
//!   browser ── GET /, /entity/…, /lineage, /impact, /history, /access,
//!              /data-use-register, /rejected, /ledger
//!      │  cookie `clew_session` (HttpOnly, SameSite=Strict): a random id
//!      ▼
//!   Sessions: session id ─▶ bearer token (kept here, never in the browser
//!      │                     after sign-in, never in a URL or a log line)
//!      ▼
//!   AppState::viewer(token) ─▶ AppState::execute(viewer, GraphQL document)
//!      │   the API's own schema, limits and Viewer: a page shows exactly
//!      │   what the API answers that person, and nothing else
//!      ▼
//!   typed answer (serde) ─▶ askama template (every value escaped) ─▶ HTML
//!
//!   GET /session/<API route> ─▶ that API route with the session's token
//!      (DCAT-AP and manifest downloads, proof-carrying answers for scripts)
//!   GET /lineage/graph.json, /impact/graph.json ─▶ the same answers shaped
//!      for the drawn graph (`drawing`), laid out in the browser
//!   GET /ledger/feed ─▶ the API's `events` subscription for the session's
//!      token, as Server-Sent Events (the ledger page's live feed)
//! ```
//!
//! [`site`] puts the pages and the API on one router; a path neither
//! serves is a "not found" page to a browser and the API's JSON to others.
//!
//! The technique is server-rendered templates compiled into the binary
//! (askama), with a little script of our own: nothing is built with Node,
//! nothing is fetched from another origin, and pages work without script.
//! Every answer carries a strict Content-Security-Policy (no inline script or
//! style, no other origin), `Cache-Control: no-store` and no referrer to other sites; every
//! form that changes state is checked for a same-origin `Origin` and the
//! session's anti-forgery token.

mod answers;
mod drawing;
mod pages;
mod session;
mod text;
#[cfg(test)]
mod vendored;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clew_api::{ApiError, AppState};
use thiserror::Error;

pub use pages::asset_paths;

/// The GraphQL documents pages are built from (for measuring a page against
/// the API calls it makes).
pub mod documents {
    pub use crate::answers::{entities_document, CHECKPOINT_AT, ENTITY, IMPACT, LINEAGE, SEARCH};
}
pub use session::DemoPrincipal;

/// How the pages are offered.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// The demo's principals, offered for one-click sign-in (`clew demo
    /// --serve` only; empty everywhere else).
    pub demo_principals: Vec<DemoPrincipal>,
    /// Mark the session cookie `Secure` (served behind TLS).
    pub secure_cookies: bool,
}

/// Failures of a page, each shown as a page that names the problem.
#[derive(Debug, Error)]
pub enum WebError {
    /// No session, or one that expired.
    #[error("sign in to see this page")]
    SignedOut,
    /// The API refused or failed (its message names the problem).
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A state change not sent from one of Clew's own pages.
    #[error("this form was not sent from a Clew page ({0}); open the page and send it again")]
    CrossSite(&'static str),
    /// A form or query string that cannot be what the page asks for.
    #[error("{0}")]
    BadRequest(String),
    /// A template failed to render.
    #[error("the page could not be rendered: {0}")]
    Render(#[from] askama::Error),
}

impl WebError {
    /// The HTTP status of the page that shows this error.
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::SignedOut => StatusCode::SEE_OTHER,
            WebError::Api(e) => e.status(),
            WebError::CrossSite(_) => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignedOut | WebError::Api(ApiError::Unauthenticated(_)) => {
                pages::redirect("/sign-in")
            }
            e => {
                if e.status().is_server_error() {
                    tracing::error!(error = %e, "a page failed");
                }
                pages::error_page(&e)
            }
        }
    }
}

/// What the page handlers share.
#[derive(Clone)]
pub(crate) struct Web {
    /// The API's state: the node, tokens, schema and limits.
    pub api: AppState,
    /// The API's router, for the `/session/…` bridge.
    pub api_routes: Router,
    /// Signed-in sessions.
    pub sessions: Arc<session::Sessions>,
    /// The demo's principals.
    pub demo: Arc<Vec<DemoPrincipal>>,
}

/// Everything one listener serves: the pages, the API (`clew_api::app`),
/// and for a path that is neither an HTML "not found" page to a browser
/// (`Accept: text/html`) and the API's JSON 404 to anything else.
pub fn site(api: AppState, config: WebConfig) -> Router {
    // One API router: the pages' `/session/…` bridge, the merged routes and
    // the JSON 404 all run it.
    let api_routes = clew_api::app(api.clone());
    let unknown = api_routes.clone();
    page_routes(api, config, api_routes.clone())
        .merge(api_routes)
        .fallback(move |req: axum::extract::Request| pages::not_found(unknown.clone(), req))
}

/// The pages alone; `api_routes` is the API's router they reach in process.
fn page_routes(api: AppState, config: WebConfig, api_routes: Router) -> Router {
    let web = Web {
        api_routes,
        api,
        sessions: Arc::new(session::Sessions::new(config.secure_cookies)),
        demo: Arc::new(config.demo_principals),
    };
    Router::new()
        .route("/", get(pages::search::page))
        .route(
            "/sign-in",
            get(pages::sign_in::page).post(pages::sign_in::submit),
        )
        .route("/sign-out", post(pages::sign_in::sign_out))
        .route("/entity/{kind}/{id}", get(pages::entity::page))
        .route("/lineage", get(pages::lineage::page))
        .route("/lineage/graph.json", get(pages::lineage::graph))
        .route("/impact", get(pages::impact::page))
        .route("/impact.csv", get(pages::impact::csv))
        .route("/impact.json", get(pages::impact::json))
        .route("/impact/graph.json", get(pages::impact::graph))
        .route("/history", get(pages::history::page))
        .route("/rejected", get(pages::ledger::rejected))
        .route("/ledger", get(pages::ledger::page))
        .route("/ledger/feed", get(pages::ledger::feed))
        .route("/access", get(pages::access::page))
        .route("/access-requests", post(pages::access::submit))
        .route("/access/review", get(pages::access::review_page))
        .route("/access-reviews", post(pages::access::review))
        .route("/data-use-register", get(pages::register::page))
        .route("/session/{*route}", get(pages::bridge))
        .route("/graphql", get(pages::graphiql::page))
        .route("/session/graphql", post(pages::graphiql::query))
        .route("/assets/{*file}", get(pages::asset))
        .layer(middleware::map_response(protect))
        .with_state(web)
}

/// Content-Security-Policy of every page (CSP Level 3): only this origin's
/// own scripts, styles and images; no inline script or style; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The headers every answer of the pages carries.
pub(crate) async fn protect(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // No address of Clew's reaches another site; same-origin form posts keep
    // their `Origin` (with `no-referrer` browsers send `Origin: null`).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // What a page shows depends on who asks (RFC 9111 §5.2.2.5); only the
    // static assets say otherwise.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}
