//! Access requests (`/access`): the signed-in person's own requests, each
//! with its steps (who reviewed, when, why, on what conditions), and the
//! form to ask for datasets. A dataset the person may not see yet is asked
//! for by its id (from the public data-use register, a colleague, a data
//! custodian); the request is a signed event with the person as its actor,
//! and the ledger's policy decides, as for the API. Governance reviews the
//! queue at `/access/review`: take up, ask for changes, approve (with
//! conditions) or deny — each decision a signed event, separation of duties
//! enforced by the ledger.

use askama::Template;
use axum::extract::{Form, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{html, redirect, Chrome};
use crate::answers::{
    FullRequest, MyRequestsAnswer, ReviewQueueAnswer, MY_REQUESTS, REQUEST_ACCESS, REVIEW_ACCESS,
    REVIEW_QUEUE,
};
use crate::session::{same_origin, SignedIn};
use crate::text;
use crate::{Web, WebError};

struct Step {
    state: String,
    actor: String,
    when: String,
    notes: Vec<String>,
}

struct Request {
    id: String,
    requester: String,
    state: String,
    settled: bool,
    what: String,
    project: String,
    purpose: String,
    days: u32,
    submitted: String,
    agreement: String,
    steps: Vec<Step>,
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    chrome: Chrome,
    dataset: String,
    projects: Vec<String>,
    requests: Vec<Request>,
}

/// `GET /access?dataset=…` (the dataset prefills the form).
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let dataset = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "dataset")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let answer: MyRequestsAnswer = web.ask(&who.viewer, MY_REQUESTS, json!({})).await?;
    let mut requests: Vec<Request> = answer.my_access_requests.into_iter().map(shown).collect();
    // Newest first.
    requests.reverse();
    html(&AccessPage {
        chrome: Chrome::of(&who, "access"),
        dataset,
        projects: answer.me.projects,
        requests,
    })
}

/// A request as the pages show it.
fn shown(r: FullRequest) -> Request {
    {
        {
            let mut what = r.dataset_ids.clone();
            what.extend(r.dataset_version_ids.iter().cloned());
            Request {
                requester: r.requester,
                settled: matches!(
                    r.state.as_str(),
                    "APPROVED" | "APPROVED_WITH_CONDITIONS" | "DENIED" | "WITHDRAWN"
                ),
                state: text::enum_label(&r.state, ""),
                id: r.id,
                what: what.join(", "),
                project: r.project_id.unwrap_or_default(),
                purpose: r.purpose,
                days: r.requested_days,
                submitted: text::when(&r.submitted_at),
                agreement: format!("{} version {}", r.agreement_id, r.agreement_version),
                steps: r
                    .transitions
                    .into_iter()
                    .map(|t| {
                        let mut notes: Vec<String> = Vec::new();
                        notes.extend(t.reason.filter(|x| !x.is_empty()));
                        notes.extend(t.response.filter(|x| !x.is_empty()));
                        notes.extend(t.conditions.into_iter().map(|c| format!("condition: {c}")));
                        Step {
                            state: text::enum_label(&t.state, ""),
                            actor: t.actor,
                            when: text::when(&t.time),
                            notes,
                        }
                    })
                    .collect(),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    chrome: Chrome,
    requests: Vec<Request>,
}

/// `GET /access/review`: governance's queue (the API refuses anyone else).
pub(crate) async fn review_page(
    State(web): State<Web>,
    who: SignedIn,
) -> Result<Response, WebError> {
    let answer: ReviewQueueAnswer = web.ask(&who.viewer, REVIEW_QUEUE, json!({})).await?;
    html(&ReviewPage {
        chrome: Chrome::of(&who, "review"),
        requests: answer.access_review_queue.into_iter().map(shown).collect(),
    })
}

#[derive(Deserialize)]
pub(crate) struct ReviewForm {
    #[serde(default)]
    csrf: String,
    request: String,
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    conditions: String,
}

/// `POST /access-reviews`: a governance decision on one request.
pub(crate) async fn review(
    State(web): State<Web>,
    who: SignedIn,
    headers: HeaderMap,
    Form(form): Form<ReviewForm>,
) -> Result<Response, WebError> {
    same_origin(&headers)?;
    who.check_form(&form.csrf)?;
    const DECISIONS: &[&str] = &[
        "UNDER_REVIEW",
        "CHANGES_REQUESTED",
        "APPROVED",
        "APPROVED_WITH_CONDITIONS",
        "DENIED",
    ];
    if !DECISIONS.contains(&form.decision.as_str()) {
        return Err(WebError::BadRequest(format!(
            "{:?} is not a decision (one of {})",
            form.decision,
            DECISIONS.join(", ")
        )));
    }
    let conditions: Vec<&str> = form
        .conditions
        .lines()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let input = json!({
        "requestId": form.request,
        "decision": form.decision,
        "reason": form.reason.trim(),
        "conditions": conditions,
    });
    let _: Value = web
        .ask(&who.viewer, REVIEW_ACCESS, json!({ "input": input }))
        .await?;
    Ok(redirect("/access/review"))
}

#[derive(Deserialize)]
pub(crate) struct AccessForm {
    #[serde(default)]
    csrf: String,
    datasets: String,
    #[serde(default)]
    project: String,
    purpose: String,
    days: String,
    agreement_id: String,
    agreement_version: String,
    #[serde(default)]
    accept: String,
}

/// `POST /access-requests`: the signed-in person asks for datasets.
pub(crate) async fn submit(
    State(web): State<Web>,
    who: SignedIn,
    headers: HeaderMap,
    Form(form): Form<AccessForm>,
) -> Result<Response, WebError> {
    same_origin(&headers)?;
    who.check_form(&form.csrf)?;
    if form.accept != "yes" {
        return Err(WebError::BadRequest(
            "the data-use agreement must be accepted to ask for access".into(),
        ));
    }
    let days: u32 = form
        .days
        .trim()
        .parse()
        .ok()
        .filter(|d| (1..=3650).contains(d))
        .ok_or_else(|| {
            WebError::BadRequest(format!(
                "the number of days {:?} is not a whole number from 1 to 3650",
                form.days
            ))
        })?;
    // Whole datasets by id; `<dataset>@<version>` asks for one version.
    let (versions, datasets): (Vec<&str>, Vec<&str>) = form
        .datasets
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .partition(|d| d.contains('@'));
    if datasets.is_empty() && versions.is_empty() {
        return Err(WebError::BadRequest(
            "name at least one dataset to ask for".into(),
        ));
    }
    let request_id = format!("req-{}", hex::encode(rand::random::<[u8; 8]>()));
    let input = json!({
        "requestId": request_id,
        "terms": {
            "projectId": form.project.trim(),
            "datasetIds": datasets,
            "datasetVersionIds": versions,
            "purpose": form.purpose.trim(),
            "requestedDays": days,
            "dataUseAgreement": {
                "agreementId": form.agreement_id.trim(),
                "version": form.agreement_version.trim(),
            },
        },
    });
    let _: Value = web
        .ask(&who.viewer, REQUEST_ACCESS, json!({ "input": input }))
        .await?;
    Ok(redirect("/access"))
}
