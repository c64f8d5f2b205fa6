//! The WebSocket side of GraphQL: subscriptions over graphql-transport-ws
//! (and the older subscriptions-transport-ws), driven here rather than by
//! the adapter so that the protocol's close codes and time limits hold:
//!
//! - a `connection_init` whose token is refused closes with 4403 Forbidden
//!   (graphql-transport-ws, "ConnectionInit"), not 1002;
//! - a connection that sends no `connection_init` within
//!   [`INIT_TIMEOUT`] closes with 4408 ("Connection initialisation timeout");
//! - a `subscribe` before the server acknowledged closes with 4401
//!   Unauthorized ("Subscribe");
//! - the token is checked again every [`RECHECK`]: once it is revoked the
//!   connection closes with 4403, and each subscription re-reads the
//!   caller's grants for every batch it delivers ([`Session`]);
//! - a principal holds at most `Limits::websockets_per_principal` of these
//!   connections at once ([`OpenWebSockets`]): one more closes at its
//!   `connection_init` with 1013 Try Again Later, so one token cannot take
//!   every connection the server serves and keep it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use crate::access::Session;
use crate::state::{bearer, viewer_for, AppState};
use crate::ApiError;

/// How long a client has to send `connection_init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an open connection's token is checked again.
pub const RECHECK: Duration = Duration::from_secs(1);

const WAITING: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;
/// Refused because the principal holds as many WebSockets as it may.
const FULL: u8 = 3;

/// RFC 6455 §7.4.2 (the IANA registry of close codes): 1013 Try Again Later.
const TRY_AGAIN_LATER: u16 = 1013;

/// The WebSockets open now, by principal, accepted at `connection_init`.
#[derive(Debug, Default)]
pub(crate) struct OpenWebSockets {
    by_principal: Mutex<HashMap<String, usize>>,
}

impl OpenWebSockets {
    /// A place for one more of `principal`'s WebSockets, if it holds fewer
    /// than `most`; given back when the place is dropped.
    fn hold(self: &Arc<Self>, principal: &str, most: usize) -> Option<WebSocketPlace> {
        let mut open = self.by_principal.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.entry(principal.to_string()).or_default();
        if *held >= most {
            return None;
        }
        *held += 1;
        Some(WebSocketPlace {
            open: self.clone(),
            principal: principal.to_string(),
        })
    }

    /// How many WebSockets `principal` holds.
    #[cfg(test)]
    fn held(&self, principal: &str) -> usize {
        self.by_principal
            .lock()
            .map(|open| open.get(principal).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// One WebSocket's place among its principal's.
#[derive(Debug)]
struct WebSocketPlace {
    open: Arc<OpenWebSockets>,
    principal: String,
}

impl Drop for WebSocketPlace {
    fn drop(&mut self) {
        let mut open = self
            .open
            .by_principal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.principal) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

/// Serves one upgraded connection until either side closes it.
pub(crate) async fn serve(
    socket: WebSocket,
    state: AppState,
    protocol: WebSocketProtocols,
    header_token: Option<String>,
) {
    let (mut sink, source) = socket.split();
    let input = source
        .take_while(|m| futures_util::future::ready(m.is_ok()))
        .filter_map(|m| {
            futures_util::future::ready(match m {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data()),
                _ => None,
            })
        });
    let phase = Arc::new(AtomicU8::new(WAITING));
    let session: Arc<Mutex<Option<Arc<Session>>>> = Arc::default();
    // Held until this function returns, when the socket has closed.
    let place: Arc<Mutex<Option<WebSocketPlace>>> = Arc::default();
    let (init_phase, init_session, init_state) = (phase.clone(), session.clone(), state.clone());
    let init_place = place.clone();
    let messages = async_graphql::http::WebSocket::new(state.schema.clone(), input, protocol)
        .on_connection_init(move |payload| async move {
            // graphql-transport-ws: the token may come in the upgrade's
            // Authorization header or in the connection_init payload.
            let from_payload = ["Authorization", "authorization"]
                .iter()
                .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
                .and_then(bearer)
                .map(str::to_string)
                .or_else(|| {
                    payload
                        .get("token")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                });
            let token = header_token.or(from_payload);
            match viewer_for(&init_state, token.as_deref()) {
                Ok(viewer) => {
                    let most = init_state.limits.websockets_per_principal;
                    let Some(held) = init_state.websockets.hold(&viewer.principal, most) else {
                        init_phase.store(FULL, Ordering::SeqCst);
                        init_state.node.metrics().websockets_refused.inc();
                        tracing::warn!(
                            principal = %viewer.principal,
                            most,
                            "a principal holding as many WebSockets as it may opened one more: closed (1013)"
                        );
                        return Err(async_graphql::Error::new(format!(
                            "{most} WebSockets open for this principal, the most it may hold; close one first"
                        )));
                    };
                    if let Ok(mut slot) = init_place.lock() {
                        *slot = Some(held);
                    }
                    let s = Arc::new(Session::new(
                        token.unwrap_or_default(),
                        init_state.tokens.clone(),
                    ));
                    if let Ok(mut slot) = init_session.lock() {
                        *slot = Some(s.clone());
                    }
                    init_phase.store(ACCEPTED, Ordering::SeqCst);
                    let mut data = Data::default();
                    data.insert(viewer);
                    data.insert(s);
                    Ok(data)
                }
                Err(e) => {
                    init_phase.store(REFUSED, Ordering::SeqCst);
                    Err(e.into_graphql())
                }
            }
        });
    futures_util::pin_mut!(messages);
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut recheck = tokio::time::interval(RECHECK);
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        let outgoing = tokio::select! {
            m = messages.next() => match m {
                Some(WsMessage::Text(t)) => Message::Text(t.into()),
                Some(WsMessage::Close(code, reason)) => {
                    let code = match (code, phase.load(Ordering::SeqCst)) {
                        (1002, REFUSED) => 4403,
                        (1002, FULL) => TRY_AGAIN_LATER,
                        (1011, WAITING) => 4401,
                        (c, _) => c,
                    };
                    let reason = match code {
                        4403 => format!("Forbidden: {reason}"),
                        TRY_AGAIN_LATER => format!("Try Again Later: {reason}"),
                        4401 => "Unauthorized: send connection_init first".to_string(),
                        _ => reason,
                    };
                    let _ = sink.send(close(code, reason)).await;
                    break;
                }
                None => break,
            },
            _ = &mut init_deadline, if phase.load(Ordering::SeqCst) == WAITING => {
                let _ = sink
                    .send(close(4408, "Connection initialisation timeout".into()))
                    .await;
                break;
            }
            _ = recheck.tick() => {
                let current = session.lock().ok().and_then(|s| s.clone());
                if current.is_some_and(|s| !s.valid()) {
                    let e = ApiError::Unauthenticated("the bearer token was revoked".into());
                    let _ = sink.send(close(4403, format!("Forbidden: {e}"))).await;
                    break;
                }
                continue;
            }
        };
        if sink.send(outgoing).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_holds_at_most_its_share_and_a_closed_socket_gives_its_place_back() {
        let open = Arc::new(OpenWebSockets::default());
        let first = open.hold("ben", 2).expect("the first place");
        let second = open.hold("ben", 2).expect("the second place");
        assert!(open.hold("ben", 2).is_none(), "a third place for ben");
        let other = open.hold("ana", 2).expect("another principal's place");
        assert_eq!((open.held("ben"), open.held("ana")), (2, 1));
        drop(first);
        assert_eq!(open.held("ben"), 1);
        let again = open.hold("ben", 2).expect("the place given back");
        drop((second, again, other));
        assert_eq!((open.held("ben"), open.held("ana")), (0, 0));
        assert!(
            open.by_principal.lock().unwrap().is_empty(),
            "principals holding nothing are forgotten"
        );
    }
}
