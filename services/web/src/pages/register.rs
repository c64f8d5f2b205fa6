//! The public data-use register (`/data-use-register`): every approved use
//! of data — organisation, project, purpose, datasets, dates, conditions —
//! newest first, as the platform publishes it. Open to anyone: signed out,
//! it is the public view (a dataset that is not open shows only as "a
//! dataset you may not see"); signed in, as that person may see it. The
//! same register is `GET /data-uses` (JSON) and `dataUseRegister` (GraphQL).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::{html, Chrome};
use crate::answers::{DataUseAnswer, DATA_USE_REGISTER};
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

pub(crate) struct Use {
    pub organisation: String,
    pub project: String,
    pub purpose: String,
    /// (link, title); an empty link for a dataset the viewer may not see.
    pub datasets: Vec<(String, String)>,
    pub approved: String,
    pub expires: String,
    pub status: String,
    pub conditions: Vec<String>,
    pub request: String,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    chrome: Chrome,
    uses: Vec<Use>,
}

/// `GET /data-use-register`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: Result<SignedIn, WebError>,
) -> Result<Response, WebError> {
    let (viewer, chrome) = match who {
        Ok(who) => (who.viewer.clone(), Chrome::of(&who, "data-uses")),
        Err(WebError::SignedOut) => (web.api.anonymous_viewer(), Chrome::signed_out("data-uses")),
        Err(e) => return Err(e),
    };
    let answer: DataUseAnswer = web.ask(&viewer, DATA_USE_REGISTER, json!({})).await?;
    let uses = answer
        .data_use_register
        .into_iter()
        .map(|u| Use {
            datasets: u
                .datasets
                .iter()
                .zip(
                    u.dataset_titles
                        .iter()
                        .map(Some)
                        .chain(std::iter::repeat(None)),
                )
                .map(|(id, title)| {
                    if id == clew_api::access::REDACTED {
                        (String::new(), "a dataset you may not see".to_string())
                    } else {
                        let title =
                            title.filter(|t| !t.is_empty() && *t != clew_api::access::REDACTED);
                        (
                            text::entity_link(&format!("dataset/{id}")),
                            title.cloned().unwrap_or_else(|| id.clone()),
                        )
                    }
                })
                .collect(),
            organisation: u.organisation,
            project: u.project.unwrap_or_default(),
            purpose: u.purpose,
            approved: text::when(&u.approved_at),
            expires: u.expires_at.as_deref().map(text::when).unwrap_or_default(),
            status: u.status,
            conditions: u.conditions,
            request: u.request_id.unwrap_or_default(),
        })
        .collect();
    html(&RegisterPage { chrome, uses })
}
