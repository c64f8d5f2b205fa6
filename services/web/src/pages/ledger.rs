//! The ledger page (`/ledger`): its size and latest signed checkpoint, and
//! how a partner mirrors and checks it; and the rejected log
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
    })
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
