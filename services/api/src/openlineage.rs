//! OpenLineage in: `POST /api/v1/lineage`, the endpoint Marquez serves and
//! OpenLineage clients post to (OpenLineage spec 2-0-x: RunEvent, DatasetEvent,
//! JobEvent).
//!
//! A COMPLETE RunEvent becomes one signed event: a training run when the job
//! says so (JobTypeJobFacet `jobType` = `TRAINING`), otherwise a transform
//! whose kind is the jobType when it names one (DEIDENTIFICATION, ANNOTATION,
//! RESAMPLING, COHORT_SPLIT, CONVERSION) and OTHER when not. The run id is the
//! entity id (and the event id: the run id when it is a UUIDv7, else one
//! derived from the run id and event time, so a client's retry is answered
//! with the first receipt). Every input and output dataset must
//! resolve to a Clew dataset version the caller may see: its name is the
//! dataset version id (`<dataset>@<version>`, any namespace), or its name is
//! the dataset id and its DatasetVersionDatasetFacet (`version`) gives the
//! version. A training run's outputs are model versions, named in the
//! namespace `clew-model`. The run, job and dataset facets are kept verbatim
//! in the event. START, RUNNING, ABORT, FAIL and OTHER run events, and
//! DatasetEvents and JobEvents, are checked the same way and acknowledged
//! without recording: Clew's ledger holds what was made, not attempts.

use serde_json::{json, Map, Value};

use clew_catalog::Catalog;
use clew_events::proto::{self, event::Body};

use crate::access::Viewer;
use crate::ApiError;

/// What an OpenLineage event becomes.
#[derive(Debug)]
pub enum Mapped {
    /// Record this body (with this event id when the run id is a UUIDv7).
    Record {
        body: Box<Body>,
        event_id: Option<String>,
    },
    /// Valid, resolvable, and not recorded; the detail says why.
    Acknowledge(Value),
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadInput(msg.into())
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn required<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, ApiError> {
    text(v, path)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("OpenLineage event without {}", path.join("."))))
}

/// Resolves an OpenLineage dataset to a Clew dataset version id.
fn resolve_dataset(
    ds: &Value,
    catalog: &Catalog,
    viewer: &Viewer,
    side: &str,
) -> Result<String, ApiError> {
    let namespace = required(ds, &["namespace"])?;
    let name = required(ds, &["name"])?;
    let bare = name.strip_prefix("dataset-version/").unwrap_or(name);
    let mut candidates = vec![bare.to_string()];
    if let Some(v) = text(ds, &["facets", "version", "datasetVersion"]) {
        candidates.push(format!("{bare}@{v}"));
    }
    for id in &candidates {
        let subject = format!("dataset-version/{id}");
        if catalog.node(&subject)?.is_some() && viewer.subject_visible(catalog, &subject) {
            return Ok(id.clone());
        }
    }
    if bare.contains('@') {
        // Named as Clew names versions: it is just not there (or not for you).
        return Err(ApiError::NotFound(format!(
            "{side} dataset {namespace}:{name} names dataset version {bare}, which is not published (or not one you may see): publish it first"
        )));
    }
    Err(ApiError::NotFound(format!(
        "{side} dataset {namespace}:{name} is not a Clew dataset version you may see: name it <dataset-id>@<version>, or give its version in the `version` dataset facet (datasetVersion)"
    )))
}

fn datasets<'a>(event: &'a Value, key: &str) -> Result<&'a [Value], ApiError> {
    match event.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("{key} is not a list"))),
    }
}

/// The facets, verbatim, of the run, the job and every dataset.
fn facets_of(event: &Value) -> String {
    let pick = |key: &str| -> Value {
        event
            .get(key)
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .map(|d| {
                        json!({
                            "namespace": d.get("namespace"),
                            "name": d.get("name"),
                            "facets": d.get("facets"),
                            "inputFacets": d.get("inputFacets"),
                            "outputFacets": d.get("outputFacets"),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into()
            })
            .unwrap_or(Value::Null)
    };
    json!({
        "producer": event.get("producer"),
        "schemaURL": event.get("schemaURL"),
        "eventTime": event.get("eventTime"),
        "run": event.pointer("/run/facets"),
        "job": event.pointer("/job/facets"),
        "inputs": pick("inputs"),
        "outputs": pick("outputs"),
    })
    .to_string()
}

fn transform_kind(job_type: &str) -> proto::TransformKind {
    use proto::TransformKind as K;
    match job_type
        .to_ascii_uppercase()
        .replace(['-', ' '], "_")
        .as_str()
    {
        "DEIDENTIFICATION" | "DE_IDENTIFICATION" => K::Deidentification,
        "ANNOTATION" => K::Annotation,
        "RESAMPLING" => K::Resampling,
        "COHORT_SPLIT" | "SPLIT" => K::CohortSplit,
        "CONVERSION" => K::Conversion,
        _ => K::Other,
    }
}

fn role_of(input: &Value) -> proto::DatasetRole {
    use proto::DatasetRole as R;
    let role = text(input, &["inputFacets", "datasetRole", "role"])
        .or_else(|| text(input, &["facets", "datasetRole", "role"]))
        .unwrap_or_default();
    match role.to_ascii_lowercase().as_str() {
        "train" | "training" => R::Train,
        "validation" | "val" => R::Validation,
        "test" => R::Test,
        _ => R::Unspecified,
    }
}

/// `git:<sha>` from a SourceCodeLocationJobFacet, when it has a commit.
fn code_digest(event: &Value) -> String {
    let loc = event.pointer("/job/facets/sourceCodeLocation");
    match loc.and_then(|l| text(l, &["version"])) {
        Some(v)
            if (7..=64).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_hexdigit())
                && loc.and_then(|l| text(l, &["type"])) == Some("git") =>
        {
            format!("git:{}", v.to_ascii_lowercase())
        }
        _ => String::new(),
    }
}

/// The event id of a run: the run id itself when it is a UUIDv7; otherwise
/// (many integrations send UUIDv4 run ids) a UUIDv7 derived from the run id
/// and the event's time — RFC 9562 §5.7's layout, its 48-bit timestamp the
/// eventTime in milliseconds, its 74 other bits from SHA-256 of the run id —
/// so a client's retry of the same event carries the same id and gets the
/// first receipt.
fn event_id_of(run_id: &str, event_time: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let u = uuid::Uuid::parse_str(run_id).ok()?;
    if u.get_version_num() == 7 {
        return Some(u.to_string());
    }
    let t: prost_types::Timestamp = event_time.parse().ok()?;
    let ms = u64::try_from(t.seconds).ok()? * 1000 + u64::try_from(t.nanos / 1_000_000).ok()?;
    let h = Sha256::digest(format!("clew-openlineage-run:{}", u.hyphenated()));
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&h[..10]);
    Some(
        uuid::Builder::from_unix_timestamp_millis(ms, &rand)
            .into_uuid()
            .to_string(),
    )
}

/// Maps one OpenLineage event (already parsed JSON).
pub fn map_event(event: &Value, catalog: &Catalog, viewer: &Viewer) -> Result<Mapped, ApiError> {
    if !event.is_object() {
        return Err(bad("an OpenLineage event is a JSON object"));
    }
    required(event, &["eventTime"])?;
    required(event, &["producer"])?;
    required(event, &["schemaURL"])?;
    let has_run = event.get("run").is_some();
    let has_job = event.get("job").is_some();
    let has_dataset = event.get("dataset").is_some();
    if has_dataset && !has_run {
        // DatasetEvent.
        let id = resolve_dataset(&event["dataset"], catalog, viewer, "the")?;
        return Ok(Mapped::Acknowledge(json!({
            "recorded": false,
            "datasetVersion": id,
            "detail": "DatasetEvent: the dataset resolves; Clew records dataset versions when they are published",
        })));
    }
    if has_job && !has_run {
        // JobEvent.
        let inputs: Result<Vec<String>, _> = datasets(event, "inputs")?
            .iter()
            .map(|d| resolve_dataset(d, catalog, viewer, "input"))
            .collect();
        return Ok(Mapped::Acknowledge(json!({
            "recorded": false,
            "job": format!("{}:{}", required(event, &["job", "namespace"])?, required(event, &["job", "name"])?),
            "inputs": inputs?,
            "detail": "JobEvent: acknowledged; Clew records runs when they COMPLETE",
        })));
    }
    if !(has_run && has_job) {
        return Err(bad(
            "not an OpenLineage RunEvent (run + job), DatasetEvent (dataset) or JobEvent (job)",
        ));
    }
    let run_id = required(event, &["run", "runId"])?;
    uuid::Uuid::parse_str(run_id)
        .map_err(|_| bad(format!("run.runId {run_id:?} is not a UUID")))?;
    let job_namespace = required(event, &["job", "namespace"])?.to_string();
    let job_name = required(event, &["job", "name"])?.to_string();
    let event_type = text(event, &["eventType"])
        .unwrap_or("OTHER")
        .to_ascii_uppercase();
    if !matches!(
        event_type.as_str(),
        "START" | "RUNNING" | "COMPLETE" | "ABORT" | "FAIL" | "OTHER"
    ) {
        return Err(bad(format!(
            "eventType {event_type:?} is not START, RUNNING, COMPLETE, ABORT, FAIL or OTHER"
        )));
    }
    let job_type = text(event, &["job", "facets", "jobType", "jobType"]).unwrap_or_default();
    let training = job_type.eq_ignore_ascii_case("TRAINING");
    let inputs = datasets(event, "inputs")?;
    let outputs = datasets(event, "outputs")?;
    let used = inputs
        .iter()
        .map(|d| resolve_dataset(d, catalog, viewer, "input"))
        .collect::<Result<Vec<_>, _>>()?;
    if event_type != "COMPLETE" {
        return Ok(Mapped::Acknowledge(json!({
            "recorded": false,
            "run": run_id,
            "eventType": event_type,
            "detail": format!("{event_type} acknowledged; Clew records a run when it COMPLETEs"),
        })));
    }
    let openlineage = Some(proto::OpenLineageRun {
        job_namespace,
        job_name: job_name.clone(),
        run_id: run_id.to_string(),
        facets_json: facets_of(event),
    });
    let engine = event.pointer("/run/facets/processing_engine");
    let tool_name = engine
        .and_then(|e| text(e, &["name"]))
        .or_else(|| text(event, &["producer"]))
        .unwrap_or_default()
        .to_string();
    let tool_version = engine
        .and_then(|e| text(e, &["version"]))
        .unwrap_or_default()
        .to_string();
    let body = if training {
        let mut models = Vec::new();
        for o in outputs {
            if text(o, &["namespace"]) != Some("clew-model") {
                return Err(bad(format!(
                    "a training run's outputs are model versions in the namespace clew-model; {}:{} is not",
                    text(o, &["namespace"]).unwrap_or_default(),
                    text(o, &["name"]).unwrap_or_default()
                )));
            }
            models.push(required(o, &["name"])?.to_string());
        }
        if models.len() > 1 {
            return Err(bad("a training run produces one model version"));
        }
        Body::TrainingRunRecorded(proto::TrainingRunRecorded {
            training_run_id: run_id.to_string(),
            model_name: job_name,
            used: inputs
                .iter()
                .zip(&used)
                .map(|(i, id)| proto::TrainingInput {
                    dataset_version_id: id.clone(),
                    role: role_of(i) as i32,
                })
                .collect(),
            code_digest: code_digest(event),
            hyperparameters: Default::default(),
            environment: Some(proto::ComputeEnvironment {
                framework: tool_name,
                framework_version: tool_version,
                ..Default::default()
            }),
            metrics: Default::default(),
            generated_model_version_id: models.pop().unwrap_or_default(),
            openlineage,
        })
    } else {
        let generated = outputs
            .iter()
            .map(|d| resolve_dataset(d, catalog, viewer, "output"))
            .collect::<Result<Vec<_>, _>>()?;
        // ExecutionParametersRunFacet: parameters is a list of {key, value, …}.
        let mut parameters = std::collections::BTreeMap::new();
        if let Some(Value::Array(vars)) =
            event.pointer("/run/facets/executionParameters/parameters")
        {
            for p in vars.iter().filter_map(Value::as_object) {
                if let (Some(k), Some(v)) = (p.get("key").and_then(Value::as_str), p.get("value")) {
                    parameters.insert(
                        k.to_string(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    );
                }
            }
        }
        Body::TransformRecorded(proto::TransformRecorded {
            transform_id: run_id.to_string(),
            kind: transform_kind(job_type) as i32,
            tool_name,
            tool_version,
            code_digest: code_digest(event),
            parameters,
            used,
            generated,
            openlineage,
        })
    };
    Ok(Mapped::Record {
        body: Box::new(body),
        event_id: event_id_of(run_id, required(event, &["eventTime"])?),
    })
}

/// The JSON answer for a recorded run.
pub fn recorded(subject: String, event_id: String, leaf_index: u64) -> Value {
    let mut m = Map::new();
    m.insert("recorded".into(), true.into());
    m.insert("subject".into(), subject.into());
    m.insert("eventId".into(), event_id.into());
    m.insert("leafIndex".into(), leaf_index.into());
    Value::Object(m)
}
