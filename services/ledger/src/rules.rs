//! The sequencer's admission rules: key registry, roles, duplicates and
//! references. Everything here reads ledger state through the batch overlay
//! and writes nothing unless the event is admitted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use clew_events::policy::{self, Fact, FactStore, Party};
use clew_events::proto::{self, event::Body, RejectionReason as R, Role};
use clew_events::{subject_of, EntityRef, OpenedEnvelope, PreparedKey, VerifierKey};

use crate::ledger::CitedContent;
use crate::store::{keys, EntityRecord, KeyRecord, Overlay};
use crate::LedgerError;

/// The key registry as of the last committed batch. Replaced (copy on write)
/// when a batch registers or revokes keys, which is rare; pre-checks of later
/// batches read a snapshot without taking the writer lock.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyRegistry {
    pub keys: HashMap<String, RegisteredKey>,
    /// Principal id → roles at its latest registration.
    pub principals: HashMap<String, Vec<i32>>,
}

/// Why one submission is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: R,
    pub detail: String,
    pub event_id: String,
    pub original_leaf: Option<u64>,
}

/// A key from the registry with its parsed verifier, prepared for the
/// many signature checks the sequencer makes under it (`clew verify`
/// checks them again with the library's own `verify_strict`).
#[derive(Debug, Clone)]
pub(crate) struct RegisteredKey {
    pub record: KeyRecord,
    /// The verifier (`prepared.verifier()`), its multiples made at its
    /// first check.
    pub prepared: Arc<PreparedKey>,
}

impl RegisteredKey {
    pub fn new(record: KeyRecord) -> Result<Self, LedgerError> {
        let verifier = VerifierKey::parse(&record.verifier_key)
            .map_err(|e| LedgerError::Corrupt(format!("registered key: {e}")))?;
        Ok(Self::of(record, verifier))
    }

    /// `record` with its verifier already parsed.
    fn of(record: KeyRecord, verifier: VerifierKey) -> Self {
        Self {
            record,
            prepared: Arc::new(PreparedKey::new(verifier)),
        }
    }
}

/// A change to the registry the sequencer keeps in memory.
#[derive(Debug, Clone)]
pub(crate) enum RegistryChange {
    /// A key registered or revoked.
    Key(String, Box<RegisteredKey>),
    /// A principal registered or re-registered, with its roles now.
    Principal(String, Vec<i32>),
}

/// Result of admission: registry changes made by the event, or a refusal.
pub(crate) type Admission = Result<Vec<RegistryChange>, Refusal>;

/// Decides whether `opened` may be appended as leaf `size`; on success its
/// state changes are in the overlay. `batch_keys` are the registry changes
/// of the events admitted before it in the same batch.
pub(crate) fn admit(
    ov: &mut Overlay<'_>,
    registry: &KeyRegistry,
    batch_keys: &[RegistryChange],
    size: u64,
    opened: &OpenedEnvelope,
    presigned: Option<bool>,
    content: &CitedContent,
) -> Result<Admission, LedgerError> {
    let event = &opened.event;
    let refuse = |reason: R, detail: String| Refusal {
        reason,
        detail,
        event_id: event.event_id.clone(),
        original_leaf: None,
    };
    let body = opened.body();

    // 1. The signing key: registered, not revoked, signature valid.
    let key_id = opened.key_id();
    let signer = match lookup_key(batch_keys, &registry.keys, key_id) {
        Some(k) => k,
        None if size == 0 => match genesis_key(body, key_id) {
            Some(k) => k,
            None => {
                return Ok(Err(refuse(
                    R::Unauthorized,
                    "the first leaf must be the self-signed registration of an admin".into(),
                )))
            }
        },
        None => {
            return Ok(Err(refuse(
                R::UnknownKey,
                format!("key {key_id} is not registered"),
            )))
        }
    };
    if let Some(at) = signer.record.revoked_leaf {
        return Ok(Err(refuse(
            R::RevokedKey,
            format!("key {key_id} was revoked at leaf {at}"),
        )));
    }
    let valid = match presigned {
        Some(v) if registry.keys.contains_key(key_id) => v,
        _ => opened.verify_signature_prepared(&signer.prepared).is_ok(),
    };
    if !valid {
        return Ok(Err(refuse(
            R::BadSignature,
            format!("signature does not verify with key {key_id}"),
        )));
    }

    // 2. The actor is registered, and the one authorisation policy allows
    //    this signer to record this kind for this actor.
    let actor_roles = principal_roles(ov, registry, &event.actor)?;
    if size > 0 {
        let Some(actor_roles) = &actor_roles else {
            return Ok(Err(refuse(
                R::DanglingReference,
                format!("actor principal/{} is not registered", event.actor),
            )));
        };
        let signer_id = signer.record.principal_id.as_str();
        // Most events are signed by their actor's own key: one lookup.
        let signer_roles = if signer_id == event.actor {
            actor_roles.clone()
        } else {
            principal_roles(ov, registry, signer_id)?.unwrap_or(Cow::Borrowed(&signer.record.roles))
        };
        let key_owner = match body {
            Body::KeyRevoked(k) => {
                lookup_key(batch_keys, &registry.keys, &k.key_id).map(|k| k.record.principal_id)
            }
            _ => None,
        };
        let decision = policy::authorise(
            body,
            Party {
                id: signer_id,
                roles: &signer_roles,
            },
            Party {
                id: &event.actor,
                roles: actor_roles,
            },
            key_owner.as_deref(),
        );
        if let Err(e) = decision {
            return Ok(Err(refuse(R::Unauthorized, format!("key {key_id}: {e}"))));
        }
    }

    // 3. Exact duplicates by event id.
    if let Some(leaf) = ov.event_leaf(&event.event_id)? {
        return Ok(Err(Refusal {
            reason: R::Duplicate,
            detail: format!("event {} is already leaf {leaf}", event.event_id),
            event_id: event.event_id.clone(),
            original_leaf: Some(leaf),
        }));
    }

    // 4. Cited content: a version's series manifest is already in the store,
    //    so the ledger never cites bytes nobody can produce.
    if let CitedContent::Absent { digest, location } = content {
        return Ok(Err(refuse(
            R::MissingContent,
            format!(
                "manifest {digest} is not in the blob store ({location}); \
                 upload it (PUT /manifests/{digest}) before publishing the version"
            ),
        )));
    }

    // 5. Duties: the policy's rules about which entity (projects, requests),
    //    read from the facts kept beside the state.
    // (The genesis admin has no record yet: its registration gives its roles.)
    let genesis_roles: &[i32] = match body {
        Body::PrincipalRegistered(p) => &p.roles,
        _ => &[],
    };
    let actor = Party {
        id: &event.actor,
        roles: actor_roles.as_deref().unwrap_or(genesis_roles),
    };
    let facts = match policy::duties(event, actor, &Facts(&*ov))? {
        Ok(facts) => facts,
        Err(refusal) => return Ok(Err(refuse(refusal.reason, refusal.detail))),
    };

    // 6. References and state changes.
    let mut state = StateCheck { ov, size };
    match state.apply(body)? {
        Ok(changed) => {
            for (subject, fact) in facts {
                state.ov.put_json(keys::fact(&subject), &fact);
            }
            Ok(Ok(changed))
        }
        Err((reason, detail)) => Ok(Err(refuse(reason, detail))),
    }
}

/// The policy's facts as the batch overlay holds them.
pub(crate) struct Facts<'o, 'a>(pub &'o Overlay<'a>);

impl FactStore for Facts<'_, '_> {
    type Error = LedgerError;

    fn fact(&self, subject: &str) -> Result<Option<Fact>, LedgerError> {
        self.0.get_json(&keys::fact(subject))
    }
}

fn lookup_key(
    batch_keys: &[RegistryChange],
    cache: &HashMap<String, RegisteredKey>,
    key_id: &str,
) -> Option<RegisteredKey> {
    // A key registered or revoked earlier in this batch is not in the
    // registry yet: its latest change is (with its record as written to
    // the overlay, and its multiples already prepared).
    let changed = batch_keys.iter().rev().find_map(|c| match c {
        RegistryChange::Key(id, key) if id == key_id => Some(&**key),
        _ => None,
    });
    changed.or_else(|| cache.get(key_id)).cloned()
}

/// The roles of principal `id` at its latest registration, or None when it is
/// not registered; a registration earlier in this batch is only in the overlay.
/// Borrowed from the registry in the common case: this runs for every event.
fn principal_roles<'r>(
    ov: &Overlay<'_>,
    registry: &'r KeyRegistry,
    id: &str,
) -> Result<Option<Cow<'r, [i32]>>, LedgerError> {
    let key = keys::entity(&format!("principal/{id}"));
    if let Some(bytes) = ov.writes.get(&key) {
        let record: EntityRecord = serde_json::from_slice(bytes)
            .map_err(|e| LedgerError::Corrupt(format!("principal record: {e}")))?;
        return Ok(Some(Cow::Owned(record.roles)));
    }
    if let Some(roles) = registry.principals.get(id) {
        return Ok(Some(Cow::Borrowed(roles)));
    }
    Ok(ov
        .get_json::<EntityRecord>(&key)?
        .map(|r| Cow::Owned(r.roles)))
}

/// Leaf 0 registers an admin whose key signs its own registration.
fn genesis_key(body: &Body, key_id: &str) -> Option<RegisteredKey> {
    let Body::PrincipalRegistered(p) = body else {
        return None;
    };
    let verifier = VerifierKey::parse(&p.verifier_key).ok()?;
    if verifier.key_id() != key_id || !p.roles.contains(&(Role::Admin as i32)) {
        return None;
    }
    Some(RegisteredKey::of(
        KeyRecord {
            principal_id: p.principal_id.clone(),
            roles: p.roles.clone(),
            verifier_key: p.verifier_key.clone(),
            registered_leaf: 0,
            revoked_leaf: None,
        },
        verifier,
    ))
}

type Check<T> = Result<Result<T, (R, String)>, LedgerError>;

struct StateCheck<'o, 'a> {
    ov: &'o mut Overlay<'a>,
    size: u64,
}

macro_rules! check {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

impl StateCheck<'_, '_> {
    fn entity(&self, r: &EntityRef) -> Result<Option<EntityRecord>, LedgerError> {
        self.ov.get_json(&keys::entity(&r.subject()))
    }

    /// The entity must exist (and, when `live`, not be withdrawn/revoked).
    fn existing(&self, r: &EntityRef, field: &str, live: bool) -> Check<EntityRecord> {
        Ok(match self.entity(r)? {
            None => Err((
                R::DanglingReference,
                format!("{field} cites {r}, which does not exist"),
            )),
            Some(e) if live && e.ended_leaf.is_some() => Err((
                R::DanglingReference,
                format!(
                    "{field} cites {r}, which was withdrawn at leaf {}",
                    e.ended_leaf.unwrap_or_default()
                ),
            )),
            Some(e) => Ok(e),
        })
    }

    fn absent(&self, r: &EntityRef) -> Check<()> {
        Ok(match self.entity(r)? {
            Some(e) => Err((R::Conflict, format!("{r} already exists (leaf {})", e.leaf))),
            None => Ok(()),
        })
    }

    fn create(&mut self, r: &EntityRef, record: EntityRecord) {
        self.ov.put_json(keys::entity(&r.subject()), &record);
    }

    fn created(&self) -> EntityRecord {
        EntityRecord {
            leaf: self.size,
            ..Default::default()
        }
    }

    /// Creates or updates the principal record: its roles are those of its
    /// latest registration.
    fn register_principal(
        &mut self,
        subject: &EntityRef,
        p: &proto::PrincipalRegistered,
        changes: &mut Vec<RegistryChange>,
    ) -> Result<(), LedgerError> {
        let record = match self.entity(subject)? {
            Some(prev) => EntityRecord {
                roles: p.roles.clone(),
                ..prev
            },
            None => EntityRecord {
                roles: p.roles.clone(),
                ..self.created()
            },
        };
        self.create(subject, record);
        changes.push(RegistryChange::Principal(
            p.principal_id.clone(),
            p.roles.clone(),
        ));
        Ok(())
    }

    fn apply(&mut self, body: &Body) -> Check<Vec<RegistryChange>> {
        let subject = subject_of(body).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let dv = |id: &str| EntityRef::new("dataset-version", id);
        let mut changed_keys = Vec::new();
        match body {
            Body::PrincipalRegistered(p) if p.verifier_key.is_empty() => {
                // A keyless principal: it can be an actor, never a signer.
                self.register_principal(&subject, p, &mut changed_keys)?;
            }
            Body::PrincipalRegistered(p) => {
                // Re-registering a principal adds a key (rotation) and updates roles.
                let verifier = VerifierKey::parse(&p.verifier_key)
                    .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
                if let Some(existing) = self
                    .ov
                    .get_json::<KeyRecord>(&keys::key(verifier.key_id()))?
                {
                    return Ok(Err((
                        R::Conflict,
                        format!(
                            "key {} is already registered to principal {}",
                            verifier.key_id(),
                            existing.principal_id
                        ),
                    )));
                }
                let record = KeyRecord {
                    principal_id: p.principal_id.clone(),
                    roles: p.roles.clone(),
                    verifier_key: p.verifier_key.clone(),
                    registered_leaf: self.size,
                    revoked_leaf: None,
                };
                self.ov.put_json(keys::key(verifier.key_id()), &record);
                changed_keys.push(RegistryChange::Key(
                    verifier.key_id().to_string(),
                    Box::new(RegisteredKey::of(record, verifier)),
                ));
                self.register_principal(&subject, p, &mut changed_keys)?;
            }
            Body::KeyRevoked(k) => {
                let Some(mut record) = self.ov.get_json::<KeyRecord>(&keys::key(&k.key_id))? else {
                    return Ok(Err((
                        R::DanglingReference,
                        format!("key {} is not registered", k.key_id),
                    )));
                };
                if let Some(at) = record.revoked_leaf {
                    return Ok(Err((
                        R::Conflict,
                        format!("key {} was already revoked at leaf {at}", k.key_id),
                    )));
                }
                record.revoked_leaf = Some(self.size);
                self.ov.put_json(keys::key(&k.key_id), &record);
                let key = RegisteredKey::new(record)?;
                changed_keys.push(RegistryChange::Key(k.key_id.clone(), Box::new(key)));
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::SiteRegistered(_) => {
                check!(self.absent(&subject));
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::AccessGranted(g) if !g.request_id.is_empty() => {
                return Ok(Err((
                    R::InvalidPayload,
                    format!(
                        "grant {} names access-request/{}; a grant names a request only inside that request's approval",
                        g.grant_id, g.request_id
                    ),
                )));
            }
            Body::AccessGranted(g) => {
                check!(self.absent(&subject));
                check!(self.existing(
                    &EntityRef::new("dataset", &g.dataset_id),
                    "dataset_id",
                    false
                ));
                if let Some(proto::access_granted::Grantee::PrincipalId(p)) = &g.grantee {
                    check!(self.existing(&EntityRef::new("principal", p), "principal_id", false));
                }
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::AccessRevoked(_) => {
                let mut grant = check!(self.existing(&subject, "grant_id", false));
                if let Some(at) = grant.ended_leaf {
                    return Ok(Err((
                        R::Conflict,
                        format!("{subject} was already revoked at leaf {at}"),
                    )));
                }
                grant.ended_leaf = Some(self.size);
                self.create(&subject, grant);
            }
            Body::DatasetRegistered(d) => {
                check!(self.absent(&subject));
                check!(self.existing(
                    &EntityRef::new("site", &d.custodian_site_id),
                    "custodian_site_id",
                    false
                ));
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::DatasetVersionPublished(v) => {
                // The same content under a second version number is a
                // re-run, not a new version: refuse it, naming the first.
                if let Some(first) = self
                    .ov
                    .manifest_version(&v.dataset_id, &v.manifest_digest)?
                {
                    return Ok(Err((
                        R::Duplicate,
                        format!(
                            "manifest {} is already published as dataset-version/{first}; the same content is not a new version",
                            v.manifest_digest,
                        ),
                    )));
                }
                check!(self.absent(&subject));
                check!(self.existing(
                    &EntityRef::new("dataset", &v.dataset_id),
                    "dataset_id",
                    false
                ));
                for d in &v.was_derived_from {
                    check!(self.existing(&dv(d), "was_derived_from", true));
                }
                let rec = self.created();
                self.create(&subject, rec);
                self.ov
                    .index_manifest(&v.dataset_id, &v.manifest_digest, self.size);
            }
            Body::DatasetVersionWithdrawn(_) => {
                let mut version = check!(self.existing(&subject, "dataset_version_id", false));
                if let Some(at) = version.ended_leaf {
                    return Ok(Err((
                        R::Conflict,
                        format!("{subject} was already withdrawn at leaf {at}"),
                    )));
                }
                version.ended_leaf = Some(self.size);
                self.create(&subject, version);
            }
            Body::TransformRecorded(t) => {
                check!(self.absent(&subject));
                let mut newest_input = 0;
                for d in &t.used {
                    newest_input =
                        newest_input.max(check!(self.existing(&dv(d), "used", true)).leaf);
                }
                for d in &t.generated {
                    let output = check!(self.existing(&dv(d), "generated", true));
                    // Every lineage edge points from a newer node to an older one
                    // except output -> transform; requiring outputs to be newer than
                    // every input keeps the graph acyclic.
                    if t.used.contains(d) || output.leaf < newest_input {
                        return Ok(Err((
                            R::InvalidPayload,
                            format!(
                                "transform generated dataset-version/{d}, which predates or is one of its inputs; lineage would be cyclic"
                            ),
                        )));
                    }
                }
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::TrainingRunRecorded(t) => {
                check!(self.absent(&subject));
                for input in &t.used {
                    check!(self.existing(&dv(&input.dataset_version_id), "used", true));
                }
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::ModelVersionRegistered(m) => {
                check!(self.absent(&subject));
                if !m.training_run_id.is_empty() {
                    check!(self.existing(
                        &EntityRef::new("training-run", &m.training_run_id),
                        "training_run_id",
                        false
                    ));
                }
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::ValidationRecorded(v) => {
                check!(self.absent(&subject));
                check!(self.existing(
                    &EntityRef::new("model-version", &v.model_version_id),
                    "model_version_id",
                    false
                ));
                check!(self.existing(&dv(&v.dataset_version_id), "dataset_version_id", true));
                check!(self.existing(&EntityRef::new("site", &v.site_id), "site_id", false));
                let rec = EntityRecord {
                    model_version_id: v.model_version_id.clone(),
                    site_id: v.site_id.clone(),
                    state: v.verdict,
                    ..self.created()
                };
                self.create(&subject, rec);
            }
            Body::DeploymentRecorded(d) => {
                check!(self.existing(
                    &EntityRef::new("model-version", &d.model_version_id),
                    "model_version_id",
                    false
                ));
                check!(self.existing(&EntityRef::new("site", &d.site_id), "site_id", false));
                let mut justified = false;
                for v in &d.validation_ids {
                    let validation = check!(self.existing(
                        &EntityRef::new("validation", v),
                        "validation_ids",
                        false
                    ));
                    if validation.model_version_id != d.model_version_id {
                        return Ok(Err((
                            R::InvalidPayload,
                            format!(
                                "validation/{v} is of model version {}, not {}",
                                validation.model_version_id, d.model_version_id
                            ),
                        )));
                    }
                    justified |= validation.site_id == d.site_id
                        && validation.state == proto::Verdict::Pass as i32;
                }
                if d.status == proto::DeploymentStatus::Live as i32 && !justified {
                    return Ok(Err((
                        R::InvalidPayload,
                        format!(
                            "a LIVE deployment must cite a passing validation of model-version/{} at site/{}",
                            d.model_version_id, d.site_id
                        ),
                    )));
                }
                let record = match self.entity(&subject)? {
                    Some(prev) => {
                        if prev.model_version_id != d.model_version_id || prev.site_id != d.site_id
                        {
                            return Ok(Err((
                                R::Conflict,
                                format!(
                                    "{subject} is model-version/{} at site/{}; a status change may not move it",
                                    prev.model_version_id, prev.site_id
                                ),
                            )));
                        }
                        if prev.state == proto::DeploymentStatus::Retired as i32 {
                            return Ok(Err((R::Conflict, format!("{subject} is retired"))));
                        }
                        EntityRecord {
                            state: d.status,
                            ended_leaf: (d.status == proto::DeploymentStatus::Retired as i32)
                                .then_some(self.size),
                            ..prev
                        }
                    }
                    None => EntityRecord {
                        model_version_id: d.model_version_id.clone(),
                        site_id: d.site_id.clone(),
                        state: d.status,
                        ..self.created()
                    },
                };
                self.create(&subject, record);
            }
            Body::ProjectRegistered(p) => {
                check!(self.absent(&subject));
                check!(self.existing(
                    &EntityRef::new("principal", &p.lead_principal_id),
                    "lead_principal_id",
                    false
                ));
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::ProjectMemberAdded(m) => {
                check!(self.existing(&subject, "project_id", false));
                check!(self.existing(
                    &EntityRef::new("principal", &m.principal_id),
                    "principal_id",
                    false
                ));
            }
            Body::ProjectMemberRemoved(_) => {
                check!(self.existing(&subject, "project_id", false));
            }
            Body::AccessRequestSubmitted(r) => {
                check!(self.absent(&subject));
                check!(self.terms_cite_what_exists(r.terms.as_ref()));
                let rec = self.created();
                self.create(&subject, rec);
            }
            Body::AccessRequestResubmitted(r) => {
                check!(self.existing(&subject, "request_id", false));
                check!(self.terms_cite_what_exists(r.terms.as_ref()));
            }
            Body::AccessRequestWithdrawn(_) => {
                check!(self.existing(&subject, "request_id", false));
            }
            Body::AccessRequestReviewed(r) => {
                check!(self.existing(&subject, "request_id", false));
                // An approval's grants are entities of their own (revocable
                // one by one with AccessRevoked).
                for g in &r.grants {
                    let grant = EntityRef::new("access-grant", &g.grant_id);
                    check!(self.absent(&grant));
                    check!(self.existing(
                        &EntityRef::new("dataset", &g.dataset_id),
                        "grants.dataset_id",
                        false
                    ));
                    for v in &g.dataset_version_ids {
                        check!(self.existing(
                            &EntityRef::new("dataset-version", v),
                            "grants.dataset_version_ids",
                            false
                        ));
                    }
                    let rec = self.created();
                    self.create(&grant, rec);
                }
            }
        }
        Ok(Ok(changed_keys))
    }

    /// The project an access request is for exists. The datasets it names
    /// need not: a restricted dataset is invisible to the requester, so
    /// refusing a request that names one that does not exist would tell them
    /// which ones do (hidden reads as absent). Governance sees the request,
    /// and an approval's grants must name datasets that exist.
    fn terms_cite_what_exists(&self, terms: Option<&proto::AccessRequestTerms>) -> Check<()> {
        let Some(t) = terms else {
            return Ok(Ok(()));
        };
        if !t.project_id.is_empty() {
            check!(self.existing(
                &EntityRef::new("project", &t.project_id),
                "terms.project_id",
                false
            ));
        }
        Ok(Ok(()))
    }
}

/// The facts of every leaf of a ledger from before facts were kept: the
/// same [`policy::duties`] the sequencer runs, each leaf's writes applied in
/// order (refusals cannot occur: those ledgers hold no project or request
/// events). Returns how many leaves were read.
pub(crate) fn backfill_facts(tree: &sled::Tree, size: u64) -> Result<u64, LedgerError> {
    let mut ov = Overlay::new(tree);
    // Roles at each principal's latest registration so far, as the sequencer had them.
    let mut roles: HashMap<String, Vec<i32>> = HashMap::new();
    for start in (0..size).step_by(4096) {
        let leaves =
            crate::store::read_leaves(tree, start, (start + 4096).min(size)).map_err(|(_, e)| e)?;
        for (i, leaf) in (start..).zip(leaves) {
            let opened = clew_events::open(&leaf)
                .map_err(|e| LedgerError::Corrupt(format!("leaf {i}: {e}")))?;
            if let Body::PrincipalRegistered(p) = opened.body() {
                roles.insert(p.principal_id.clone(), p.roles.clone());
            }
            let actor = Party {
                id: &opened.event.actor,
                roles: roles.get(&opened.event.actor).map_or(&[], |r| &r[..]),
            };
            if let Ok(facts) = policy::duties(&opened.event, actor, &Facts(&ov))? {
                for (subject, fact) in facts {
                    ov.put_json(keys::fact(&subject), &fact);
                }
            }
        }
    }
    ov.put(keys::FACTS.to_vec(), b"1".to_vec());
    tree.apply_batch(ov.into_batch())?;
    Ok(size)
}
