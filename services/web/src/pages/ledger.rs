//! The ledger page (`/ledger`): its size and latest signed checkpoint, how
//! a partner mirrors and checks it, and a live feed of the events the viewer
//! may see (`/ledger/feed`: the API's `events` subscription for the
//! session's token, as Server-Sent Events); and the rejected log
//! (`/rejected`), every refused submission with the reason that names the
//! problem.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::{html, Chrome};
use crate::answers::{Checkpoint, CheckpointAnswer, RejectedAnswer, CHECKPOINT, REJECTED};
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

#[derive(Template)]
#[template(path = "ledger.html")]
struct LedgerPage {
    chrome: Chrome,
    size: String,
    checkpoint: Checkpoint,
    origin: String,
    vkey: String,
    feed_back: u64,
}

/// `GET /ledger`.
pub(crate) async fn page(State(web): State<Web>, who: SignedIn) -> Result<Response, WebError> {
    let answer: CheckpointAnswer = web.ask(&who.viewer, CHECKPOINT, json!({})).await?;
    let cp = answer.checkpoint;
    html(&LedgerPage {
        chrome: Chrome::of(&who, "ledger"),
        size: text::count(cp.size),
        origin: cp.note.lines().next().unwrap_or_default().to_string(),
        checkpoint: cp,
        vkey: web.api.node.ledger().verifier_key().to_string(),
        feed_back: FEED_BACK,
    })
}

/// How many leaves back the live feed starts, so it opens with the recent
/// past rather than empty.
const FEED_BACK: u64 = 50;

const FEED: &str = "subscription Feed($fromLeaf: Int) {
  events(fromLeaf: $fromLeaf) { leafIndex kind actor time subject }
}";

/// `GET /ledger/feed`: the events the signed-in person may see, from a
/// little before the latest leaf and then as they are sequenced, as
/// Server-Sent Events (HTML Living Standard §9.2) named `ledger-event`, each
/// a JSON object (leaf, what, subject, link, actor, time); an error the API
/// reports is sent as a `ledger-error` event naming it. Once the token is
/// revoked (or the session ends) the stream ends and the browser's
/// reconnection is refused like any page, so the feed closes.
pub(crate) async fn feed(
    State(web): State<Web>,
    who: SignedIn,
    headers: axum::http::HeaderMap,
) -> Result<impl axum::response::IntoResponse, WebError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    // A browser reconnecting sends the id of the last event it had (HTML
    // §9.2.4 "Last-Event-ID"): it continues from the leaf after it.
    let from = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(last) => last + 1,
        None => web.api.node.ledger().size().saturating_sub(FEED_BACK),
    };
    let events = web
        .api
        .subscribe(&who.token, FEED, json!({ "fromLeaf": from }))?
        .map(|delivery| {
            let event = match delivery {
                Ok(data) => {
                    let e = &data["events"];
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    let subject = s("subject");
                    let leaf = e["leafIndex"].as_u64().unwrap_or_default();
                    Event::default()
                        .event("ledger-event")
                        .id(leaf.to_string())
                        .json_data(json!({
                            "leaf": e["leafIndex"],
                            "what": text::event_label(&s("kind")),
                            "link": text::entity_link(&subject),
                            "subject": subject,
                            "actor": s("actor"),
                            "time": text::when(&s("time")),
                        }))
                }
                Err(e) => Ok(Event::default().event("ledger-error").data(e.to_string())),
            };
            event.map_err(|e| WebError::BadRequest(format!("an event could not be sent: {e}")))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Rejections per page.
const PAGE: u64 = 50;

struct Refusal {
    index: u64,
    reason: String,
    detail: String,
    event_id: String,
    source: String,
}

#[derive(Template)]
#[template(path = "rejected.html")]
struct RejectedPage {
    chrome: Chrome,
    from: u64,
    refusals: Vec<Refusal>,
    newer: Option<String>,
    older: Option<String>,
}

/// `GET /rejected?from=…`.
pub(crate) async fn rejected(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let from = match form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "from")
    {
        Some((_, v)) => v.trim().parse::<u64>().map_err(|_| {
            WebError::BadRequest(format!("the rejection index {v:?} is not a whole number"))
        })?,
        None => 0,
    };
    let answer: RejectedAnswer = web
        .ask(
            &who.viewer,
            REJECTED,
            json!({ "from": from, "limit": PAGE }),
        )
        .await?;
    let full = answer.rejected.len() as u64 == PAGE;
    html(&RejectedPage {
        chrome: Chrome::of(&who, "rejected"),
        from,
        newer: full.then(|| format!("/rejected?from={}", from + PAGE)),
        older: (from > 0).then(|| format!("/rejected?from={}", from.saturating_sub(PAGE))),
        refusals: answer
            .rejected
            .into_iter()
            .map(|r| Refusal {
                index: r.rejection_index,
                reason: r.reason,
                detail: r.detail,
                event_id: r.event_id,
                source: r.source,
            })
            .collect(),
    })
}
