//! GraphiQL (`GET /graphql`), offline: its assets are vendored and served
//! from this origin; queries run as the signed-in person through
//! `POST /session/graphql`, which forwards them to the API's `POST /graphql`
//! with the session's bearer token — after the same cross-site checks as
//! every form (a same-origin `Origin`, the page's anti-forgery token in
//! `X-Clew-CSRF`).

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;

use super::{html, Chrome};
use crate::session::{same_origin, SignedIn};
use crate::{Web, WebError};

#[derive(Template)]
#[template(path = "graphiql.html")]
struct GraphiqlPage {
    chrome: Chrome,
}

/// `GET /graphql` in a browser.
pub(crate) async fn page(who: SignedIn) -> Result<Response, WebError> {
    html(&GraphiqlPage {
        chrome: Chrome::of(&who, "graphiql"),
    })
}

/// `POST /session/graphql`: the API's answer for the signed-in person.
pub(crate) async fn query(
    State(web): State<Web>,
    who: SignedIn,
    req: Request,
) -> Result<Response, WebError> {
    same_origin(req.headers())?;
    let sent = req
        .headers()
        .get("x-clew-csrf")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    who.check_form(&sent)?;
    let (parts, body) = req.into_parts();
    web.forward(
        &who,
        "POST",
        "/graphql",
        parts.headers.get(header::CONTENT_TYPE),
        Body::new(body),
    )
    .await
}
