//! Sessions: the cookie a browser holds is a random id; the bearer token it
//! stands for stays in this process. Signing in resolves the token to a
//! viewer first (an unknown token makes no session); every page resolves it
//! again, so a revoked token or a changed grant takes effect at once.
//!
//! State changes are protected against cross-site requests three ways: the
//! cookie is `SameSite=Strict`, a `POST` must carry a same-origin `Origin`
//! (or `Sec-Fetch-Site: same-origin`), and a signed-in form must carry the
//! session's anti-forgery token (OWASP's synchronizer-token pattern).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use clew_api::Viewer;

use crate::{Web, WebError};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "clew_session";

/// A session ends this long after its last use.
const IDLE: Duration = Duration::from_secs(8 * 3600);

/// A demo principal offered for one-click sign-in.
#[derive(Clone)]
pub struct DemoPrincipal {
    /// Principal id, e.g. `ada-researcher`.
    pub principal: String,
    /// Its bearer token.
    pub token: String,
}

impl std::fmt::Debug for DemoPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens never reach a log line.
        f.debug_struct("DemoPrincipal")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

struct Session {
    token: String,
    csrf: String,
    last_used: Instant,
}

/// The signed-in sessions of this process.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    secure: bool,
}

/// 256 random bits, hex.
fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    pub fn new(secure: bool) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// Starts a session for `token`; the `Set-Cookie` value to send.
    pub fn start(&self, token: String) -> String {
        let id = random_id();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last_used.elapsed() < IDLE);
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: random_id(),
                last_used: Instant::now(),
            },
        );
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// Ends a session; the `Set-Cookie` value that clears the cookie.
    pub fn end(&self, id: &str) -> String {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// The token and anti-forgery token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id)?;
        if s.last_used.elapsed() >= IDLE {
            map.remove(id);
            return None;
        }
        s.last_used = Instant::now();
        Some((s.token.clone(), s.csrf.clone()))
    }
}

/// The session id a request's cookies carry (RFC 6265 §5.4).
pub(crate) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A signed-in person: their viewer, and what their forms must carry.
pub(crate) struct SignedIn {
    pub viewer: Arc<Viewer>,
    pub token: String,
    pub csrf: String,
}

impl FromRequestParts<Web> for SignedIn {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, WebError> {
        let session = session_id(&parts.headers).ok_or(WebError::SignedOut)?;
        let (token, csrf) = web.sessions.get(&session).ok_or(WebError::SignedOut)?;
        let viewer = web.api.viewer(&token).map_err(|e| match e {
            clew_api::ApiError::Unauthenticated(_) => WebError::SignedOut,
            e => WebError::Api(e),
        })?;
        Ok(SignedIn {
            viewer,
            token,
            csrf,
        })
    }
}

impl SignedIn {
    /// Refuses a form without this session's anti-forgery token.
    pub fn check_form(&self, sent: &str) -> Result<(), WebError> {
        // Both are 64 hex digits of this process's making; compared whole.
        if sent.len() == self.csrf.len()
            && sent
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        {
            Ok(())
        } else {
            Err(WebError::CrossSite(
                "its anti-forgery token is missing or stale",
            ))
        }
    }
}

/// Refuses a state change that a page of another origin sent: the
/// `Origin` must be this host's (RFC 6454 §7), or, where a browser sends
/// none, `Sec-Fetch-Site` must say `same-origin` (Fetch Metadata).
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(WebError::CrossSite("the request names no host"))?;
    // `Origin: null` (an opaque origin, Fetch §3.1) says nothing either way.
    match headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    {
        Some(origin) => {
            let ours = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host);
            ours.then_some(())
                .ok_or(WebError::CrossSite("it came from another site"))
        }
        None => (headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            == Some("same-origin"))
        .then_some(())
        .ok_or(WebError::CrossSite(
            "the browser did not say where it came from",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; clew_session=abc ; b=2")]);
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        assert_eq!(session_id(&headers(&[("cookie", "clew_session=")])), None);
        assert_eq!(session_id(&headers(&[("cookie", "xclew_session=1")])), None);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let ok = headers(&[
            ("host", "clew.example:8080"),
            ("origin", "http://clew.example:8080"),
        ]);
        assert!(same_origin(&ok).is_ok());
        let other = headers(&[
            ("host", "clew.example:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(same_origin(&other), Err(WebError::CrossSite(_))));
        let prefix = headers(&[
            ("host", "clew.example"),
            ("origin", "http://clew.example.evil"),
        ]);
        assert!(same_origin(&prefix).is_err());
        let fetch_meta = headers(&[("host", "h"), ("sec-fetch-site", "same-origin")]);
        assert!(same_origin(&fetch_meta).is_ok());
        let opaque = headers(&[
            ("host", "h"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_origin(&opaque).is_ok());
        let opaque_cross = headers(&[
            ("host", "h"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(same_origin(&opaque_cross).is_err());
        let cross_meta = headers(&[("host", "h"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&cross_meta).is_err());
        assert!(same_origin(&headers(&[("host", "h")])).is_err());
    }

    #[test]
    fn a_session_holds_its_token_until_it_ends() {
        let s = Sessions::new(false);
        let cookie = s.start("tok".into());
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("tok;") && !cookie.contains("Secure"));
        let id = cookie
            .trim_start_matches("clew_session=")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(s.get(&id).map(|(t, _)| t).as_deref(), Some("tok"));
        assert!(s.end(&id).contains("Max-Age=0"));
        assert!(s.get(&id).is_none());
        assert!(Sessions::new(true).start("t".into()).ends_with("; Secure"));
    }
}
