//! An entity's history (`/history?subject=…`): every event about it as a
//! timeline, oldest first, each with its leaf, kind, actor, signing key and
//! time, and a link to the leaf's inclusion receipt.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::{html, Chrome};
use crate::answers::{HistoryAnswer, HISTORY};
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

struct Moment {
    leaf: u64,
    what: String,
    actor: String,
    signer: String,
    when: String,
    time: String,
    event_id: String,
    receipt: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    chrome: Chrome,
    subject: String,
    link: String,
    label: String,
    kind: &'static str,
    moments: Vec<Moment>,
}

/// `GET /history?subject=…`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let subject = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "subject")
        .map(|(_, v)| v.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebError::BadRequest("name the entity whose history to show".into()))?;
    let answer: HistoryAnswer = web
        .ask(&who.viewer, HISTORY, json!({ "subject": subject }))
        .await?;
    let named = answer.entity.ok_or_else(|| {
        WebError::Api(clew_api::ApiError::NotFound(format!("no entity {subject}")))
    })?;
    html(&HistoryPage {
        chrome: Chrome::of(&who, ""),
        link: text::entity_link(&named.subject),
        label: named.label,
        kind: text::kind_label(&named.kind),
        subject,
        moments: answer
            .history
            .into_iter()
            .map(|h| Moment {
                leaf: h.leaf_index,
                what: text::event_label(&h.kind),
                actor: h.actor,
                signer: h.signer,
                when: text::when(&h.time),
                time: h.time,
                event_id: h.event_id,
                receipt: format!("/session/receipt/{}", h.leaf_index),
            })
            .collect(),
    })
}
