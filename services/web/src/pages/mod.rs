//! The page handlers, one module per family, and what every page shares:
//! the header ([`Chrome`]), the error page, redirects, the static assets
//! and the `/session/…` bridge to the API's own routes.

pub(crate) mod access;
pub(crate) mod entity;
pub(crate) mod graphiql;
pub(crate) mod history;
pub(crate) mod impact;
pub(crate) mod ledger;
pub(crate) mod lineage;
pub(crate) mod register;
pub(crate) mod search;
pub(crate) mod sign_in;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;

use clew_events::proto::Role;

use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

/// The header of every signed-in page: who is signed in, with which roles,
/// and the sign-out form's anti-forgery token.
pub(crate) struct Chrome {
    pub principal: String,
    pub roles: String,
    pub csrf: String,
    /// The navigation entry of this page.
    pub here: &'static str,
    /// Governance: reviews access requests.
    pub reviews: bool,
    /// Governance or admin: reads the rejected log.
    pub reads_rejected: bool,
    /// Whether anyone is signed in (the public pages are open to all).
    pub signed_in: bool,
}

impl Chrome {
    pub fn of(who: &SignedIn, here: &'static str) -> Self {
        let mut roles: Vec<String> = who
            .viewer
            .roles
            .iter()
            .map(|r| text::role_label(r.as_str_name()))
            .collect();
        roles.sort();
        // The same rules the API enforces on what these pages ask for; a
        // link the role cannot open is not offered.
        Self {
            principal: who.viewer.principal.clone(),
            roles: roles.join(", "),
            csrf: who.csrf.clone(),
            here,
            reviews: who.viewer.has(Role::Governance),
            reads_rejected: who.viewer.has_any(&[Role::Governance, Role::Admin]),
            signed_in: true,
        }
    }

    /// The header of a public page seen by someone not signed in.
    pub fn signed_out(here: &'static str) -> Self {
        Self {
            principal: String::new(),
            roles: String::new(),
            csrf: String::new(),
            here,
            reviews: false,
            reads_rejected: false,
            signed_in: false,
        }
    }

    /// The navigation: (path, label, whether it is this page), only what
    /// the signed-in person may open.
    pub fn nav(&self) -> Vec<(&'static str, &'static str, bool)> {
        [
            ("/", "Search", "search", self.signed_in),
            ("/lineage", "Lineage", "lineage", self.signed_in),
            ("/impact", "Impact", "impact", self.signed_in),
            ("/access", "Access requests", "access", self.signed_in),
            ("/access/review", "Review queue", "review", self.reviews),
            ("/data-use-register", "Data uses", "data-uses", true),
            ("/rejected", "Rejected", "rejected", self.reads_rejected),
            ("/ledger", "Ledger", "ledger", self.signed_in),
            ("/graphql", "GraphiQL", "graphiql", self.signed_in),
        ]
        .into_iter()
        .filter(|(.., shown)| *shown)
        .map(|(path, label, key, _)| (path, label, key == self.here))
        .collect()
    }
}

/// A rendered page.
pub(crate) fn html(t: &impl Template) -> Result<Response, WebError> {
    Ok(Html(t.render()?).into_response())
}

/// `303 See Other` to `to` (a path of this site).
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: String,
}

/// The page of an error: its status and the message that names the problem
/// (the API's messages already say nothing of what the viewer may not see).
pub(crate) fn error_page(e: &WebError) -> Response {
    let status = e.status();
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message: e.to_string(),
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{} {}", status.as_u16(), page.reason));
    (status, Html(body)).into_response()
}

/// A path nothing answers: a page saying so to a browser, the API's own
/// JSON 404 to any other client.
pub(crate) async fn not_found(api_routes: axum::Router, req: Request) -> Response {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if !browser {
        return api_routes
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
    }
    let e = WebError::Api(clew_api::ApiError::NotFound(format!(
        "there is no page at {}; search the catalogue from the first page",
        req.uri().path()
    )));
    crate::protect(error_page(&e)).await
}

/// API routes a page may reach with its session (`GET /session/<route>`):
/// downloads and proof-carrying answers, never a state change.
const BRIDGED: &[&str] = &[
    "checkpoint",
    "catalog.jsonld",
    "datasets/",
    "dataset-versions/",
    "prov/lineage",
    "proofs/lineage",
    "proofs/impact",
    "receipt/",
];

/// `GET /session/<route>`: the API's answer to `GET /<route>` with the
/// session's bearer token, so a link or a page's script can fetch what the
/// API serves without the token ever reaching the browser.
pub(crate) async fn bridge(
    State(web): State<Web>,
    who: SignedIn,
    Path(route): Path<String>,
    req: Request,
) -> Result<Response, WebError> {
    if !BRIDGED.iter().any(|p| route.starts_with(p)) || route.contains("..") {
        return Err(WebError::Api(clew_api::ApiError::NotFound(
            "no such route".into(),
        )));
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    web.forward(
        &who,
        "GET",
        &format!("/{route}{query}"),
        None,
        Body::empty(),
    )
    .await
}

impl Web {
    /// The API's own answer to `method uri` with the signed-in person's
    /// bearer token, run in this process (`tower::oneshot` on its router).
    pub(crate) async fn forward(
        &self,
        who: &SignedIn,
        method: &str,
        uri: &str,
        content_type: Option<&HeaderValue>,
        body: Body,
    ) -> Result<Response, WebError> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", who.token));
        if let Some(kind) = content_type {
            request = request.header(header::CONTENT_TYPE, kind);
        }
        let request = request
            .body(body)
            .map_err(|e| WebError::BadRequest(format!("{uri} cannot be asked for: {e}")))?;
        Ok(self
            .api_routes
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {}))
    }
}

/// The static assets, compiled into the binary: Clew's own script and
/// style, and the vendored npm code the evidence panel, the drawn graphs
/// and GraphiQL import
/// (`assets/vendor/LICENSES.md`).
const ASSETS: &[(&str, &str)] = &[
    ("clew.css", include_str!("../../assets/clew.css")),
    ("clew.js", include_str!("../../assets/clew.js")),
    ("evidence.js", include_str!("../../assets/evidence.js")),
    ("graph.js", include_str!("../../assets/graph.js")),
    (
        "graphiql-start.js",
        include_str!("../../assets/graphiql-start.js"),
    ),
    (
        "vendor/graphiql/graphiql.min.js",
        include_str!("../../assets/vendor/graphiql/graphiql.min.js"),
    ),
    (
        "vendor/graphiql/graphiql.min.css",
        include_str!("../../assets/vendor/graphiql/graphiql.min.css"),
    ),
    (
        "vendor/react/umd/react.production.min.js",
        include_str!("../../assets/vendor/react/umd/react.production.min.js"),
    ),
    (
        "vendor/react-dom/umd/react-dom.production.min.js",
        include_str!("../../assets/vendor/react-dom/umd/react-dom.production.min.js"),
    ),
    (
        "vendor/@dagrejs/dagre/dist/dagre.esm.js",
        include_str!("../../assets/vendor/@dagrejs/dagre/dist/dagre.esm.js"),
    ),
    (
        "vendor/@noble/ed25519/index.js",
        include_str!("../../assets/vendor/@noble/ed25519/index.js"),
    ),
    (
        "vendor/@noble/hashes/sha2.js",
        include_str!("../../assets/vendor/@noble/hashes/sha2.js"),
    ),
    (
        "vendor/@noble/hashes/_md.js",
        include_str!("../../assets/vendor/@noble/hashes/_md.js"),
    ),
    (
        "vendor/@noble/hashes/_u64.js",
        include_str!("../../assets/vendor/@noble/hashes/_u64.js"),
    ),
    (
        "vendor/@noble/hashes/utils.js",
        include_str!("../../assets/vendor/@noble/hashes/utils.js"),
    ),
    (
        "vendor/@bufbuild/protobuf/dist/esm/wire/binary-encoding.js",
        include_str!("../../assets/vendor/@bufbuild/protobuf/dist/esm/wire/binary-encoding.js"),
    ),
    (
        "vendor/@bufbuild/protobuf/dist/esm/wire/varint.js",
        include_str!("../../assets/vendor/@bufbuild/protobuf/dist/esm/wire/varint.js"),
    ),
    (
        "vendor/@bufbuild/protobuf/dist/esm/wire/text-encoding.js",
        include_str!("../../assets/vendor/@bufbuild/protobuf/dist/esm/wire/text-encoding.js"),
    ),
    (
        "vendor/@bufbuild/protobuf/dist/esm/proto-int64.js",
        include_str!("../../assets/vendor/@bufbuild/protobuf/dist/esm/proto-int64.js"),
    ),
];

/// The assets' paths under `/assets/` (what the vendored-code test checks).
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(p, _)| *p)
}

/// `GET /assets/<path>`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(p, _)| *p == file) else {
        return error_page(&WebError::Api(clew_api::ApiError::NotFound(format!(
            "no asset {file}"
        ))));
    };
    let kind = if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Static, the same for everyone.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    )
        .into_response()
}
