//! Checks that need only the event itself: ids, digests, required fields and
//! the agreement of kind and subject with the body.

use crate::proto::{self, event::Body};
use crate::{kind_of, EventError};

/// The entity an event is about, or that an event cites.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    /// Entity type as written in subjects: `dataset-version`, `site`, ...
    pub entity_type: &'static str,
    /// Entity id (for a dataset version `<dataset_id>@<version>`).
    pub id: String,
}

impl EntityRef {
    /// A reference of the given type.
    pub fn new(entity_type: &'static str, id: impl Into<String>) -> Self {
        Self {
            entity_type,
            id: id.into(),
        }
    }

    /// `<type>/<id>`.
    pub fn subject(&self) -> String {
        format!("{}/{}", self.entity_type, self.id)
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.id)
    }
}

/// The entity an event body creates or changes.
pub fn subject_of(body: &Body) -> Result<EntityRef, EventError> {
    Ok(match body {
        Body::PrincipalRegistered(b) => {
            EntityRef::new("principal", id(&b.principal_id, "principal_id")?)
        }
        Body::KeyRevoked(b) => EntityRef::new("key", key_id(&b.key_id, "key_id")?),
        Body::SiteRegistered(b) => EntityRef::new("site", id(&b.site_id, "site_id")?),
        Body::AccessGranted(b) => EntityRef::new("access-grant", id(&b.grant_id, "grant_id")?),
        Body::AccessRevoked(b) => EntityRef::new("access-grant", id(&b.grant_id, "grant_id")?),
        Body::DatasetRegistered(b) => EntityRef::new("dataset", id(&b.dataset_id, "dataset_id")?),
        Body::DatasetVersionPublished(b) => EntityRef::new(
            "dataset-version",
            format!(
                "{}@{}",
                id(&b.dataset_id, "dataset_id")?,
                id(&b.version, "version")?
            ),
        ),
        Body::DatasetVersionWithdrawn(b) => EntityRef::new(
            "dataset-version",
            dataset_version_id(&b.dataset_version_id, "dataset_version_id")?,
        ),
        Body::TransformRecorded(b) => {
            EntityRef::new("transform", id(&b.transform_id, "transform_id")?)
        }
        Body::TrainingRunRecorded(b) => {
            EntityRef::new("training-run", id(&b.training_run_id, "training_run_id")?)
        }
        Body::ModelVersionRegistered(b) => EntityRef::new(
            "model-version",
            id(&b.model_version_id, "model_version_id")?,
        ),
        Body::ValidationRecorded(b) => {
            EntityRef::new("validation", id(&b.validation_id, "validation_id")?)
        }
        Body::DeploymentRecorded(b) => {
            EntityRef::new("deployment", id(&b.deployment_id, "deployment_id")?)
        }
        Body::ProjectRegistered(b) => EntityRef::new("project", id(&b.project_id, "project_id")?),
        Body::ProjectMemberAdded(b) => EntityRef::new("project", id(&b.project_id, "project_id")?),
        Body::ProjectMemberRemoved(b) => {
            EntityRef::new("project", id(&b.project_id, "project_id")?)
        }
        Body::AccessRequestSubmitted(b) => {
            EntityRef::new("access-request", id(&b.request_id, "request_id")?)
        }
        Body::AccessRequestResubmitted(b) => {
            EntityRef::new("access-request", id(&b.request_id, "request_id")?)
        }
        Body::AccessRequestWithdrawn(b) => {
            EntityRef::new("access-request", id(&b.request_id, "request_id")?)
        }
        Body::AccessRequestReviewed(b) => {
            EntityRef::new("access-request", id(&b.request_id, "request_id")?)
        }
    })
}

/// Checks an event's envelope-independent rules.
pub(crate) fn check_event(event: &proto::Event) -> Result<(), EventError> {
    let uuid = uuid::Uuid::parse_str(&event.event_id)
        .map_err(|_| EventError::Invalid(format!("event_id {:?} is not a UUID", event.event_id)))?;
    if uuid.get_version_num() != 7 {
        return Err(EventError::Invalid(format!(
            "event_id {} is a version {} UUID; Clew uses UUIDv7",
            event.event_id,
            uuid.get_version_num()
        )));
    }
    let Some(body) = &event.body else {
        return Err(EventError::Invalid("event has no body".into()));
    };
    let kind = kind_of(body);
    if event.kind != kind as i32 {
        return Err(EventError::Invalid(format!(
            "kind {} does not match the body {}",
            proto::EventKind::try_from(event.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_else(|_| event.kind.to_string()),
            kind.as_str_name()
        )));
    }
    let subject = subject_of(body)?.subject();
    if event.subject != subject {
        return Err(EventError::Invalid(format!(
            "subject {:?} does not match the body's subject {subject:?}",
            event.subject
        )));
    }
    id(&event.actor, "actor")?;
    key_id(&event.key_id, "key_id")?;
    if event.time.is_none() {
        return Err(EventError::Invalid("event has no time".into()));
    }
    check_body(body)
}

fn check_body(body: &Body) -> Result<(), EventError> {
    match body {
        Body::PrincipalRegistered(b) => {
            nonempty(&b.display_name, "display_name")?;
            if b.roles.is_empty() {
                return Err(EventError::Invalid("principal has no roles".into()));
            }
            for r in &b.roles {
                if matches!(
                    proto::Role::try_from(*r),
                    Err(_) | Ok(proto::Role::Unspecified)
                ) {
                    return Err(EventError::Invalid(format!("unknown role {r}")));
                }
            }
            // A principal without a key acts only through a service that
            // signs on its behalf (the API records it as the actor).
            if !b.verifier_key.is_empty() {
                crate::VerifierKey::parse(&b.verifier_key)?;
            }
        }
        Body::KeyRevoked(_) => {}
        Body::SiteRegistered(b) => {
            nonempty(&b.name, "name")?;
            known_enum::<proto::SiteKind>(b.kind, "kind")?;
        }
        Body::AccessGranted(b) => check_grant(b)?,
        Body::AccessRevoked(_) => {}
        Body::DatasetRegistered(b) => {
            nonempty(&b.title, "title")?;
            id(&b.custodian_site_id, "custodian_site_id")?;
            known_enum::<proto::AccessLevel>(b.access_level, "access_level")?;
        }
        Body::DatasetVersionPublished(b) => {
            digest(&b.manifest_digest, "manifest_digest")?;
            for d in &b.was_derived_from {
                dataset_version_id(d, "was_derived_from")?;
            }
            if let Some(s) = &b.imaging_summary {
                for (date, field) in [
                    (&s.study_date_from, "study_date_from"),
                    (&s.study_date_to, "study_date_to"),
                ] {
                    if !date.is_empty() && !is_dicom_date(date) {
                        return Err(EventError::Invalid(format!(
                            "{field} {date:?} is not a DICOM DA value (YYYYMMDD)"
                        )));
                    }
                }
            }
        }
        Body::DatasetVersionWithdrawn(b) => {
            known_enum::<proto::WithdrawalReason>(b.reason, "reason")?;
        }
        Body::TransformRecorded(b) => {
            known_enum::<proto::TransformKind>(b.kind, "kind")?;
            nonempty(&b.tool_name, "tool_name")?;
            if b.used.is_empty() {
                return Err(EventError::Invalid(
                    "transform uses no dataset version".into(),
                ));
            }
            for d in b.used.iter().chain(&b.generated) {
                dataset_version_id(d, "used/generated")?;
            }
            if !b.code_digest.is_empty() {
                code_digest(&b.code_digest)?;
            }
        }
        Body::TrainingRunRecorded(b) => {
            nonempty(&b.model_name, "model_name")?;
            if b.used.is_empty() {
                return Err(EventError::Invalid(
                    "training run uses no dataset version".into(),
                ));
            }
            for input in &b.used {
                dataset_version_id(&input.dataset_version_id, "used.dataset_version_id")?;
                known_enum::<proto::DatasetRole>(input.role, "used.role")?;
            }
            if !b.generated_model_version_id.is_empty() {
                id(&b.generated_model_version_id, "generated_model_version_id")?;
            }
            if !b.code_digest.is_empty() {
                code_digest(&b.code_digest)?;
            }
        }
        Body::ModelVersionRegistered(b) => {
            nonempty(&b.model_name, "model_name")?;
            nonempty(&b.version, "version")?;
            digest(&b.artifact_digest, "artifact_digest")?;
            if !b.training_run_id.is_empty() {
                id(&b.training_run_id, "training_run_id")?;
            }
        }
        Body::ValidationRecorded(b) => {
            id(&b.model_version_id, "model_version_id")?;
            dataset_version_id(&b.dataset_version_id, "dataset_version_id")?;
            id(&b.site_id, "site_id")?;
            known_enum::<proto::Verdict>(b.verdict, "verdict")?;
            for m in &b.metrics {
                nonempty(&m.name, "metrics.name")?;
                if !m.value.is_finite() {
                    return Err(EventError::Invalid(format!(
                        "metric {} is not a finite number",
                        m.name
                    )));
                }
            }
        }
        Body::DeploymentRecorded(b) => {
            id(&b.model_version_id, "model_version_id")?;
            id(&b.site_id, "site_id")?;
            known_enum::<proto::DeploymentStatus>(b.status, "status")?;
            for v in &b.validation_ids {
                id(v, "validation_ids")?;
            }
        }
        Body::ProjectRegistered(b) => {
            nonempty(&b.title, "title")?;
            id(&b.lead_principal_id, "lead_principal_id")?;
            nonempty(&b.organisation, "organisation")?;
            nonempty(&b.purpose, "purpose")?;
            if let (Some(from), Some(to)) = (&b.starts_at, &b.ends_at) {
                if (to.seconds, to.nanos) <= (from.seconds, from.nanos) {
                    return Err(EventError::Invalid(
                        "project ends_at is not after starts_at".into(),
                    ));
                }
            }
        }
        Body::ProjectMemberAdded(b) => {
            id(&b.principal_id, "principal_id")?;
        }
        Body::ProjectMemberRemoved(b) => {
            id(&b.principal_id, "principal_id")?;
        }
        Body::AccessRequestSubmitted(b) => check_terms(b.terms.as_ref())?,
        Body::AccessRequestResubmitted(b) => {
            check_terms(b.terms.as_ref())?;
            nonempty(&b.response, "response")?;
        }
        Body::AccessRequestWithdrawn(_) => {}
        Body::AccessRequestReviewed(b) => check_review(b)?,
    }
    Ok(())
}

fn check_grant(b: &proto::AccessGranted) -> Result<(), EventError> {
    id(&b.grant_id, "grant_id")?;
    match &b.grantee {
        Some(proto::access_granted::Grantee::PrincipalId(p)) => id(p, "principal_id")?,
        Some(proto::access_granted::Grantee::ProjectId(p)) => id(p, "project_id")?,
        None => return Err(EventError::Invalid("access grant names no grantee".into())),
    };
    id(&b.dataset_id, "dataset_id")?;
    nonempty(&b.purpose, "purpose")?;
    if !b.request_id.is_empty() {
        id(&b.request_id, "request_id")?;
    }
    for c in &b.conditions {
        nonempty(c, "conditions")?;
    }
    for v in &b.dataset_version_ids {
        dataset_version_id(v, "dataset_version_ids")?;
        if v.split_once('@').map(|(d, _)| d) != Some(b.dataset_id.as_str()) {
            return Err(EventError::Invalid(format!(
                "dataset_version_ids names {v}, which is not a version of {}",
                b.dataset_id
            )));
        }
    }
    Ok(())
}

/// Longest access a request may ask for (ten years).
pub const MAX_REQUESTED_DAYS: u32 = 3650;

fn check_terms(terms: Option<&proto::AccessRequestTerms>) -> Result<(), EventError> {
    let Some(t) = terms else {
        return Err(EventError::Invalid("access request has no terms".into()));
    };
    if !t.project_id.is_empty() {
        id(&t.project_id, "terms.project_id")?;
    }
    if t.dataset_ids.is_empty() && t.dataset_version_ids.is_empty() {
        return Err(EventError::Invalid(
            "access request names no dataset or dataset version".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in &t.dataset_ids {
        id(d, "terms.dataset_ids")?;
        if !seen.insert(d.as_str()) {
            return Err(EventError::Invalid(format!("terms name dataset {d} twice")));
        }
    }
    for v in &t.dataset_version_ids {
        dataset_version_id(v, "terms.dataset_version_ids")?;
        if !seen.insert(v.as_str()) {
            return Err(EventError::Invalid(format!("terms name {v} twice")));
        }
    }
    nonempty(&t.purpose, "terms.purpose")?;
    if !(1..=MAX_REQUESTED_DAYS).contains(&t.requested_days) {
        return Err(EventError::Invalid(format!(
            "terms.requested_days {} is not between 1 and {MAX_REQUESTED_DAYS}",
            t.requested_days
        )));
    }
    match &t.data_use_agreement {
        Some(a) => {
            id(&a.agreement_id, "terms.data_use_agreement.agreement_id")?;
            nonempty(&a.version, "terms.data_use_agreement.version")?;
        }
        None => {
            return Err(EventError::Invalid(
                "access request accepts no data-use agreement".into(),
            ))
        }
    }
    Ok(())
}

fn check_review(b: &proto::AccessRequestReviewed) -> Result<(), EventError> {
    use proto::AccessRequestState as S;
    let decision = S::try_from(b.decision).unwrap_or(S::Unspecified);
    let approval = matches!(decision, S::Approved | S::ApprovedWithConditions);
    match decision {
        S::UnderReview | S::Approved | S::ApprovedWithConditions => {}
        S::ChangesRequested | S::Denied => nonempty(&b.reason, "reason")?,
        other => {
            return Err(EventError::Invalid(format!(
                "decision {} is not a review decision (UNDER_REVIEW, CHANGES_REQUESTED, APPROVED, APPROVED_WITH_CONDITIONS, DENIED)",
                other.as_str_name()
            )))
        }
    }
    let with_conditions = decision == S::ApprovedWithConditions;
    if with_conditions == b.conditions.is_empty() {
        return Err(EventError::Invalid(
            "conditions are given exactly when the decision is APPROVED_WITH_CONDITIONS".into(),
        ));
    }
    for c in &b.conditions {
        nonempty(c, "conditions")?;
    }
    if approval == b.grants.is_empty() {
        return Err(EventError::Invalid(
            "an approval carries its grants, and only an approval does".into(),
        ));
    }
    for g in &b.grants {
        check_grant(g)?;
        if g.expires_at.is_none() {
            return Err(EventError::Invalid(format!(
                "grant {} of an approval has no expires_at",
                g.grant_id
            )));
        }
    }
    Ok(())
}

/// Identifier rule: 1-128 characters of `[A-Za-z0-9._:-]`.
fn id<'a>(value: &'a str, field: &str) -> Result<&'a str, EventError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(value)
    } else {
        Err(EventError::Invalid(format!(
            "{field} {value:?} must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        )))
    }
}

/// `<dataset_id>@<version>`.
fn dataset_version_id<'a>(value: &'a str, field: &str) -> Result<&'a str, EventError> {
    match value.split_once('@') {
        Some((d, v)) if id(d, field).is_ok() && id(v, field).is_ok() => Ok(value),
        _ => Err(EventError::Invalid(format!(
            "{field} {value:?} is not a dataset version id <dataset_id>@<version>"
        ))),
    }
}

/// Key ids are `<name>+<8 hex>`.
fn key_id<'a>(value: &'a str, field: &str) -> Result<&'a str, EventError> {
    match value.rsplit_once('+') {
        Some((name, hexid))
            if signed_note::is_key_name_valid(name)
                && hexid.len() == 8
                && hexid.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(value)
        }
        _ => Err(EventError::Invalid(format!(
            "{field} {value:?} is not a key id <name>+<8 hex digits>"
        ))),
    }
}

fn nonempty(value: &str, field: &str) -> Result<(), EventError> {
    if value.trim().is_empty() {
        Err(EventError::Invalid(format!("{field} is empty")))
    } else {
        Ok(())
    }
}

/// `sha256:<64 lowercase hex>`.
fn digest(value: &str, field: &str) -> Result<(), EventError> {
    match value.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(())
        }
        _ => Err(EventError::Invalid(format!(
            "{field} {value:?} is not sha256:<64 lowercase hex digits>"
        ))),
    }
}

fn code_digest(value: &str) -> Result<(), EventError> {
    if let Some(sha) = value.strip_prefix("git:") {
        if (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
    }
    digest(value, "code_digest").map_err(|_| {
        EventError::Invalid(format!(
            "code_digest {value:?} is neither sha256:<hex> nor git:<commit>"
        ))
    })
}

fn known_enum<E: TryFrom<i32>>(value: i32, field: &str) -> Result<(), EventError> {
    if value == 0 || E::try_from(value).is_err() {
        Err(EventError::Invalid(format!(
            "{field} is unset or unknown ({value})"
        )))
    } else {
        Ok(())
    }
}

/// DICOM DA (PS3.5 Table 6.2-1): YYYYMMDD.
fn is_dicom_date(s: &str) -> bool {
    s.len() == 8
        && s.bytes().all(|b| b.is_ascii_digit())
        && matches!(s[4..6].parse::<u8>(), Ok(1..=12))
        && matches!(s[6..8].parse::<u8>(), Ok(1..=31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_digests_and_dates_follow_their_rules() {
        assert!(id("ds-001.chest_ct:v2", "f").is_ok());
        assert!(id("", "f").is_err());
        assert!(id("has space", "f").is_err());
        assert!(id(&"x".repeat(129), "f").is_err());
        assert!(dataset_version_id("ds-1@1.0", "f").is_ok());
        assert!(dataset_version_id("ds-1", "f").is_err());
        assert!(digest(&format!("sha256:{}", "a".repeat(64)), "f").is_ok());
        assert!(digest(&format!("sha256:{}", "A".repeat(64)), "f").is_err());
        assert!(code_digest("git:0123abc").is_ok());
        assert!(is_dicom_date("20200131"));
        assert!(!is_dicom_date("20201301"));
        assert!(!is_dicom_date("2020-01-31"));
    }
}
