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
//!   caller's grants for every batch it delivers ([`Session`]).

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
    let (init_phase, init_session, init_state) = (phase.clone(), session.clone(), state.clone());
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
                        (1011, WAITING) => 4401,
                        (c, _) => c,
                    };
                    let reason = match code {
                        4403 => format!("Forbidden: {reason}"),
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
