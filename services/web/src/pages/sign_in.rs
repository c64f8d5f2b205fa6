//! Signing in with a bearer token (pasted, or read from a token file by the
//! page's script into the same field), or, in the demo, with one click as
//! one of its principals; signing out.

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use serde::Deserialize;

use super::{html, redirect};
use crate::answers::{MeAnswer, ME};
use crate::session::{same_origin, session_id};
use crate::text;
use crate::{Web, WebError};

/// A demo principal as the sign-in page offers it.
struct Offered {
    principal: String,
    roles: String,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    problem: Option<String>,
    demo: Vec<Offered>,
}

async fn offered(web: &Web) -> Vec<Offered> {
    let mut out = Vec::new();
    for p in web.demo.iter() {
        // A principal whose token no longer works is not offered.
        let Ok(viewer) = web.api.viewer(&p.token) else {
            continue;
        };
        if let Ok(me) = web
            .ask::<MeAnswer>(&viewer, ME, serde_json::json!({}))
            .await
        {
            let mut roles: Vec<String> = me.me.roles.iter().map(|r| text::role_label(r)).collect();
            roles.sort();
            out.push(Offered {
                principal: me.me.principal,
                roles: roles.join(", "),
            });
        }
    }
    out
}

/// `GET /sign-in`.
pub(crate) async fn page(State(web): State<Web>) -> Result<Response, WebError> {
    html(&SignInPage {
        problem: None,
        demo: offered(&web).await,
    })
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    demo: String,
}

/// `POST /sign-in`: a token, or a demo principal's name.
pub(crate) async fn submit(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, WebError> {
    same_origin(&headers)?;
    let token = if !form.demo.is_empty() {
        web.demo
            .iter()
            .find(|p| p.principal == form.demo)
            .map(|p| p.token.clone())
    } else {
        Some(form.token.trim().to_string()).filter(|t| !t.is_empty())
    };
    let problem = match token {
        None if form.demo.is_empty() => "Paste a token, or choose a token file.",
        None => "That demo principal is not offered here.",
        Some(token) => match web.api.viewer(&token) {
            Ok(_) => {
                let cookie = web.sessions.start(token);
                let mut r = redirect("/");
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return Ok(r);
            }
            Err(clew_api::ApiError::Unauthenticated(_)) => {
                "That token is not valid here: it may have been revoked, or be for another Clew."
            }
            Err(e) => return Err(e.into()),
        },
    };
    let mut r = html(&SignInPage {
        problem: Some(problem.into()),
        demo: offered(&web).await,
    })?;
    *r.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
    Ok(r)
}

/// `POST /sign-out`: ends the session (no live session is needed, so a
/// stale page can still sign out).
pub(crate) async fn sign_out(
    State(web): State<Web>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    same_origin(&headers)?;
    let cleared = web.sessions.end(&session_id(&headers).unwrap_or_default());
    let mut r = redirect("/sign-in");
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}
