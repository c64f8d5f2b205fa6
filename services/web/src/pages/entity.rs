//! Entity pages (`/entity/<type>/<id>`): a dataset (what it is, custodian,
//! licence, access level and the caller's own access, versions, downloads),
//! a dataset version (imaging summary, manifest, withdrawal), a model
//! version's card (intended use, training and evaluation data with held-back
//! sets marked, metrics with subgroups, deployments), and every other kind
//! as its attributes. Each shows one hop of lineage either way and links to
//! the explorer, the impact report and the history.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{html, Chrome};
use crate::answers::{entities_document, Edge, Entity, EntityAnswer, LinkedEntity, ENTITY};
use crate::session::SignedIn;
use crate::text;
use crate::{Web, WebError};

/// A name and a value, as a definition list shows them.
pub(crate) struct Fact {
    pub name: String,
    pub value: String,
}

fn fact(name: &str, value: impl Into<String>) -> Fact {
    Fact {
        name: name.into(),
        value: value.into(),
    }
}

/// One hop of lineage, as a list item.
pub(crate) struct Hop {
    pub link: String,
    pub kind: &'static str,
    pub id: String,
    pub relation: String,
}

fn hops(edges: &[Edge], upstream: bool) -> Vec<Hop> {
    edges
        .iter()
        .map(|e| {
            let other = if upstream { &e.to } else { &e.from };
            let relation = match &e.role {
                Some(role) => format!("{} ({role})", e.relation),
                None => e.relation.clone(),
            };
            Hop {
                link: text::entity_link(other),
                kind: text::kind_label(text::kind_of(other)),
                id: text::id_of(other).to_string(),
                relation,
            }
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(s).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// An entity's attributes as facts: nested objects by dotted name, lists
/// of plain values joined.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<Fact>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, x, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for (i, x) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{}]", i + 1), x, out);
            }
        }
        other => out.push(fact(prefix, s(other))),
    }
}

/// What every entity page shows.
struct Common {
    subject: String,
    kind: &'static str,
    label: String,
    status: Option<String>,
    created: String,
    withdrawn_upstream: Vec<(String, String)>,
    ended: Option<String>,
    upstream: Vec<Hop>,
    downstream: Vec<Hop>,
    lineage_up: String,
    lineage_down: String,
    history: String,
}

impl Common {
    fn of(e: &Entity) -> Self {
        let created = e
            .created_by
            .as_ref()
            .map(|c| {
                format!(
                    "recorded {} by {} (leaf {})",
                    text::when(&c.time),
                    c.actor,
                    c.leaf_index
                )
            })
            .unwrap_or_default();
        let ended = e.ended_leaf.map(|leaf| {
            let reason = e
                .ended_detail
                .as_ref()
                .map(|d| s(d.get("reason").unwrap_or(&Value::Null)))
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("Ended at leaf {leaf}{reason}")
        });
        Self {
            subject: e.subject.clone(),
            kind: text::kind_label(&e.kind),
            label: e.label.clone(),
            status: e.status.clone(),
            created,
            withdrawn_upstream: e
                .affected_by
                .iter()
                .map(|w| {
                    // A subject, or (older answers) a version id.
                    let subject = if w.withdrawn.contains('/') {
                        w.withdrawn.clone()
                    } else {
                        format!("dataset-version/{}", w.withdrawn)
                    };
                    let id = subject.trim_start_matches("dataset-version/").to_string();
                    (text::entity_link(&subject), id)
                })
                .collect(),
            ended,
            upstream: hops(&e.upstream, true),
            downstream: hops(&e.downstream, false),
            lineage_up: text::link(
                "/lineage",
                &[("subject", &e.subject), ("direction", "upstream")],
            ),
            lineage_down: text::link(
                "/lineage",
                &[("subject", &e.subject), ("direction", "downstream")],
            ),
            history: text::link("/history", &[("subject", &e.subject)]),
        }
    }
}

struct VersionRow {
    link: String,
    version: String,
    published: String,
    studies: String,
    series: String,
    instances: String,
    patients: String,
    modalities: String,
    deidentification: String,
    withdrawn: bool,
}

/// The caller's own access to a dataset, in words, and whether to offer
/// the request form.
struct MyAccess {
    words: String,
    /// The access-request page, asking for this dataset, when the caller
    /// holds no access.
    request: Option<String>,
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage {
    chrome: Chrome,
    c: Common,
    description: String,
    facts: Vec<Fact>,
    access: MyAccess,
    versions: Vec<VersionRow>,
    dcat: String,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    chrome: Chrome,
    c: Common,
    /// The dataset it is a version of: link and id.
    dataset: (String, String),
    facts: Vec<Fact>,
    summary: Vec<Fact>,
    manifest: Option<String>,
    impact: String,
}

struct Metric {
    name: String,
    subgroup: String,
    value: String,
    interval: String,
}

struct Evaluation {
    link: String,
    label: String,
    status: String,
    site: String,
    dataset_link: Option<String>,
    dataset: String,
    held_back: bool,
    summary: String,
    overall: Vec<Metric>,
    subgroups: Vec<Metric>,
}

struct Deployment {
    link: String,
    label: String,
    status: String,
    site: String,
    environment: String,
    approvals: Vec<String>,
}

struct TrainingData {
    link: String,
    id: String,
    role: String,
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    chrome: Chrome,
    c: Common,
    card: Vec<Fact>,
    facts: Vec<Fact>,
    training_run: Option<(String, String)>,
    training: Vec<TrainingData>,
    evaluations: Vec<Evaluation>,
    deployments: Vec<Deployment>,
}

#[derive(Template)]
#[template(path = "entity.html")]
struct EntityPage {
    chrome: Chrome,
    c: Common,
    facts: Vec<Fact>,
}

/// `GET /entity/<type>/<id>`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let subject = format!("{kind}/{id}");
    let answer: EntityAnswer = web
        .ask(&who.viewer, ENTITY, json!({ "subject": subject }))
        .await?;
    let e = answer.entity.clone().ok_or_else(|| {
        WebError::Api(clew_api::ApiError::NotFound(format!("no entity {subject}")))
    })?;
    match e.kind.as_str() {
        "dataset" => html(&dataset_page(&who, &e, &answer)),
        "dataset-version" => html(&version_page(&who, &e)),
        "model-version" => html(&model_page(&web, &who, &e).await?),
        _ => {
            let mut facts = Vec::new();
            flatten("", &e.attributes, &mut facts);
            html(&EntityPage {
                chrome: Chrome::of(&who, ""),
                c: Common::of(&e),
                facts,
            })
        }
    }
}

fn dataset_page(who: &SignedIn, e: &Entity, answer: &EntityAnswer) -> DatasetPage {
    let a = &e.attributes;
    let level = text::enum_label(&s(&a["accessLevel"]), "ACCESS_LEVEL_");
    let custodian = s(&a["custodianSiteId"]);
    let facts = vec![
        fact("Custodian", custodian),
        fact("Licence", s(&a["licence"])),
        fact("Access level", level.clone()),
        fact("Tags", s(&a["tags"])),
    ];
    let pending = answer.my_access_requests.iter().find(|r| {
        r.dataset_ids.contains(&e.id)
            && !matches!(
                r.state.as_str(),
                "APPROVED" | "APPROVED_WITH_CONDITIONS" | "DENIED" | "WITHDRAWN"
            )
    });
    let access = if answer.me.granted_datasets.contains(&e.id) {
        MyAccess {
            words: "You hold a live access grant for this dataset.".into(),
            request: None,
        }
    } else if level == "open" {
        MyAccess {
            words: "Open: anyone signed in may use it under its licence.".into(),
            request: None,
        }
    } else if let Some(r) = pending {
        MyAccess {
            words: format!(
                "Your request {} is {} (submitted {}): “{}”.",
                r.id,
                text::enum_label(&r.state, "").replace('_', " "),
                text::when(&r.submitted_at),
                r.purpose
            ),
            request: None,
        }
    } else {
        MyAccess {
            words: format!("Access is {level}: you hold no grant for it."),
            request: Some(text::link("/access", &[("dataset", &e.id)])),
        }
    };
    let versions = e
        .versions
        .iter()
        .map(|v| {
            let sum = &v.attributes["imagingSummary"];
            let n = |k: &str| text::count(sum[k].as_u64().unwrap_or(0));
            let deid: Vec<String> = sum["deidentificationMethods"]
                .as_array()
                .map(|m| m.iter().map(|x| s(&x["codeMeaning"])).collect())
                .unwrap_or_default();
            VersionRow {
                link: text::entity_link(&v.subject),
                version: Some(s(&v.attributes["version"]))
                    .filter(|x| !x.is_empty())
                    .unwrap_or_else(|| v.id.clone()),
                published: text::when(&v.created_by.time),
                studies: n("numberOfStudies"),
                series: n("numberOfSeries"),
                instances: n("numberOfInstances"),
                patients: n("numberOfPatients"),
                modalities: s(&sum["modalities"]),
                deidentification: deid.join("; "),
                withdrawn: v.ended_leaf.is_some(),
            }
        })
        .collect();
    DatasetPage {
        chrome: Chrome::of(who, ""),
        c: Common::of(e),
        description: s(&a["description"]),
        facts,
        access,
        versions,
        dcat: format!(
            "/session/datasets/{}/dcat.jsonld",
            text::encode_segment(&e.id)
        ),
    }
}

fn imaging_summary(sum: &Value) -> Vec<Fact> {
    if sum.is_null() {
        return Vec::new();
    }
    let n = |k: &str| text::count(sum[k].as_u64().unwrap_or(0));
    let scanners: Vec<String> = sum["manufacturers"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    format!(
                        "{} {}",
                        s(&x["manufacturer"]),
                        s(&x["manufacturerModelName"])
                    )
                    .trim()
                    .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let deid: Vec<String> = sum["deidentificationMethods"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| format!("{} ({})", s(&x["codeMeaning"]), s(&x["codeValue"])))
                .collect()
        })
        .unwrap_or_default();
    let thickness = match (
        sum["sliceThicknessMinMm"].as_f64(),
        sum["sliceThicknessMaxMm"].as_f64(),
    ) {
        (Some(a), Some(b)) => format!("{a}–{b} mm"),
        (Some(a), None) | (None, Some(a)) => format!("{a} mm"),
        (None, None) => String::new(),
    };
    let mut facts = vec![
        fact("Studies", n("numberOfStudies")),
        fact("Series", n("numberOfSeries")),
        fact("Instances", n("numberOfInstances")),
        fact("Patients", n("numberOfPatients")),
        fact("Modalities", s(&sum["modalities"])),
        fact("Body parts", s(&sum["bodyPartsExamined"])),
        fact("Scanners", scanners.join("; ")),
        fact(
            "Study dates",
            format!(
                "{} to {}",
                text::dicom_date(&s(&sum["studyDateFrom"])),
                text::dicom_date(&s(&sum["studyDateTo"]))
            ),
        ),
        fact("Slice thickness", thickness),
        fact("De-identification (PS3.15 Annex E)", deid.join("; ")),
        fact(
            "Patient identity removed",
            if sum["patientIdentityRemoved"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
        ),
    ];
    facts.retain(|f| !f.value.is_empty() && f.value != " to ");
    facts
}

fn version_page(who: &SignedIn, e: &Entity) -> VersionPage {
    let a = &e.attributes;
    let dataset = s(&a["datasetId"]);
    let mut facts = vec![
        fact("Version", s(&a["version"])),
        fact("Release notes", s(&a["releaseNotes"])),
        fact("Derived from", s(&a["wasDerivedFrom"])),
        fact("Manifest digest", s(&a["manifestDigest"])),
    ];
    facts.retain(|f| !f.value.is_empty());
    VersionPage {
        chrome: Chrome::of(who, ""),
        c: Common::of(e),
        dataset: (text::entity_link(&format!("dataset/{dataset}")), dataset),
        facts,
        summary: imaging_summary(&a["imagingSummary"]),
        manifest: (!s(&a["manifestDigest"]).is_empty()).then(|| {
            format!(
                "/session/dataset-versions/{}/manifest",
                text::encode_segment(&e.id)
            )
        }),
        impact: text::link("/impact", &[("version", &e.id)]),
    }
}

fn metrics(v: &Value) -> (Vec<Metric>, Vec<Metric>) {
    let mut overall = Vec::new();
    let mut subgroups = Vec::new();
    for m in v.as_array().into_iter().flatten() {
        let interval = match (m["ciLower"].as_f64(), m["ciUpper"].as_f64()) {
            (Some(l), Some(u)) => format!("{l}–{u}"),
            _ => String::new(),
        };
        let metric = Metric {
            name: s(&m["name"]),
            subgroup: s(&m["subgroup"]),
            value: s(&m["value"]),
            interval,
        };
        if metric.subgroup.is_empty() {
            overall.push(metric);
        } else {
            subgroups.push(metric);
        }
    }
    (overall, subgroups)
}

async fn model_page(web: &Web, who: &SignedIn, e: &Entity) -> Result<ModelPage, WebError> {
    let a = &e.attributes;
    let card = &a["modelCard"];
    let mut card_facts = vec![
        fact("Intended use", s(&card["intendedUse"])),
        fact("Out of scope", s(&card["outOfScopeUse"])),
        fact("Limitations", s(&card["limitations"])),
        fact("Regulatory class", s(&card["regulatoryClass"])),
        fact("Contact", s(&card["contact"])),
    ];
    card_facts.retain(|f| !f.value.is_empty());
    let mut facts = vec![
        fact("Model", s(&a["modelName"])),
        fact("Version", s(&a["version"])),
        fact("Artifact digest", s(&a["artifactDigest"])),
    ];
    facts.retain(|f| !f.value.is_empty());
    // The training run (upstream) and what uses the model (downstream).
    let mut subjects: Vec<String> = e
        .upstream
        .iter()
        .filter(|x| text::kind_of(&x.to) == "training-run")
        .map(|x| x.to.clone())
        .collect();
    subjects.extend(
        e.downstream
            .iter()
            .filter(|x| matches!(text::kind_of(&x.from), "validation" | "deployment"))
            .map(|x| x.from.clone()),
    );
    let linked: Vec<LinkedEntity> = if subjects.is_empty() {
        Vec::new()
    } else {
        let vars: serde_json::Map<String, Value> = subjects
            .iter()
            .enumerate()
            .map(|(i, sub)| (format!("s{i}"), json!(sub)))
            .collect();
        let answer: serde_json::Map<String, Value> = web
            .ask(
                &who.viewer,
                &entities_document(subjects.len()),
                Value::Object(vars),
            )
            .await?;
        (0..subjects.len())
            .filter_map(|i| answer.get(&format!("e{i}")).cloned())
            .filter_map(|v| {
                serde_json::from_value::<Option<LinkedEntity>>(v)
                    .ok()
                    .flatten()
            })
            .collect()
    };
    let run = linked.iter().find(|x| x.kind == "training-run");
    let training: Vec<TrainingData> = run
        .map(|r| {
            r.upstream
                .iter()
                .filter(|x| text::kind_of(&x.to) == "dataset-version")
                .map(|x| TrainingData {
                    link: text::entity_link(&x.to),
                    id: x.to.trim_start_matches("dataset-version/").to_string(),
                    role: x.role.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let seen_in_training: BTreeSet<&str> = training.iter().map(|t| t.id.as_str()).collect();
    let evaluations = linked
        .iter()
        .filter(|x| x.kind == "validation")
        .map(|v| {
            let dataset = s(&v.attributes["datasetVersionId"]);
            let (overall, subgroups) = metrics(&v.attributes["metrics"]);
            // The API writes a reference the viewer may not see as a marker;
            // nothing about it is shown, not even whether training used it.
            let hidden = dataset.starts_with('[');
            Evaluation {
                link: text::entity_link(&v.subject),
                label: v.label.clone(),
                status: v.status.clone().unwrap_or_default(),
                site: s(&v.attributes["siteId"]),
                dataset_link: (!hidden)
                    .then(|| text::entity_link(&format!("dataset-version/{dataset}"))),
                held_back: !hidden && !seen_in_training.contains(dataset.as_str()),
                dataset: if hidden {
                    "a dataset version you may not see".into()
                } else {
                    dataset
                },
                summary: s(&v.attributes["summary"]),
                overall,
                subgroups,
            }
        })
        .collect();
    let deployments = linked
        .iter()
        .filter(|x| x.kind == "deployment")
        .map(|d| Deployment {
            link: text::entity_link(&d.subject),
            label: d.label.clone(),
            status: d.status.clone().unwrap_or_default(),
            site: s(&d.attributes["siteId"]),
            environment: s(&d.attributes["environment"]),
            approvals: d.attributes["approvals"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    format!(
                        "{} — {} ({})",
                        s(&x["role"]),
                        s(&x["approver"]),
                        s(&x["reference"])
                    )
                })
                .collect(),
        })
        .collect();
    Ok(ModelPage {
        chrome: Chrome::of(who, ""),
        c: Common::of(e),
        card: card_facts,
        facts,
        training_run: run.map(|r| (text::entity_link(&r.subject), r.label.clone())),
        training,
        evaluations,
        deployments,
    })
}
