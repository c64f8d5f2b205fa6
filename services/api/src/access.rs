//! Who is asking, and what they may see.
//!
//! A bearer token maps to a principal ([`TokenStore`]; only SHA-256 digests of
//! tokens are stored). The principal's roles and access grants come from the
//! catalogue, i.e. from signed events in the ledger, so a role change or a
//! revoked grant takes effect on the next request.
//!
//! Visibility ([`Viewer`]): governance and admin see everything. Everyone else
//! sees open datasets, and restricted or controlled ones only while they hold
//! a live access grant naming them, themselves or through a project they
//! belong to (the grant and the membership must both hold; expiry is judged
//! at the node's access time, see `Node::access_time`). A project, its
//! access requests and their grants are visible to its members; a request
//! made for oneself, to its requester. A dataset version is visible when its
//! dataset is. An entity that is not visible is absent from every answer
//! (search, facets, lookups, lineage, history, subscriptions); a visible
//! entity that *refers* to an invisible one (a training run that used a
//! restricted version) shows the reference as [`REDACTED`].

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use clew_catalog::{Catalog, NodeRecord, Visibility};
use clew_events::proto::Role;
use lru::LruCache;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// What a reference to something the caller may not see is replaced with.
pub const REDACTED: &str = "[restricted]";

/// Attribute names whose string values refer to datasets or dataset versions.
const REFERENCE_KEYS: &[&str] = &[
    "datasetId",
    "datasetVersionId",
    "wasDerivedFrom",
    "used",
    "generated",
    "withdrawn",
];

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    /// Hex SHA-256 of the token.
    sha256: String,
    principal: String,
}

/// Bearer tokens, stored as SHA-256 digests in one JSON file (written by
/// rename, so a crash leaves the old or the new file, never half of one).
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    by_digest: RwLock<HashMap<String, String>>,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenStore {
    /// Opens (or starts) the token file at `path`.
    pub fn open(path: &Path) -> Result<Self, ApiError> {
        let file: TokenFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Internal(format!("token file {} is damaged: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenFile::default(),
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            by_digest: RwLock::new(
                file.tokens
                    .into_iter()
                    .map(|t| (t.sha256, t.principal))
                    .collect(),
            ),
        })
    }

    /// Issues a new token for `principal` and persists it; the token itself
    /// is returned once and never stored.
    pub fn issue(&self, principal: &str) -> Result<String, ApiError> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = format!("clew_{}", B64URL.encode(raw));
        let mut map = self
            .by_digest
            .write()
            .map_err(|_| ApiError::Internal("token store poisoned".into()))?;
        map.insert(digest(&token), principal.to_string());
        self.save(&map)?;
        Ok(token)
    }

    /// Revokes every token of `principal`; returns how many.
    pub fn revoke_all(&self, principal: &str) -> Result<usize, ApiError> {
        let mut map = self
            .by_digest
            .write()
            .map_err(|_| ApiError::Internal("token store poisoned".into()))?;
        let before = map.len();
        map.retain(|_, p| p != principal);
        let n = before - map.len();
        self.save(&map)?;
        Ok(n)
    }

    /// The principal a token belongs to.
    pub fn principal_of(&self, token: &str) -> Option<String> {
        self.by_digest.read().ok()?.get(&digest(token)).cloned()
    }

    fn save(&self, map: &HashMap<String, String>) -> Result<(), ApiError> {
        let mut tokens: Vec<TokenEntry> = map
            .iter()
            .map(|(d, p)| TokenEntry {
                sha256: d.clone(),
                principal: p.clone(),
            })
            .collect();
        tokens.sort_by(|a, b| a.principal.cmp(&b.principal).then(a.sha256.cmp(&b.sha256)));
        let bytes = serde_json::to_vec_pretty(&TokenFile { tokens })
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| ApiError::Internal(format!("{}: {e}", self.path.display())))
    }
}

/// A long-lived connection's credentials (a WebSocket): the bearer token it
/// authenticated with, checked again for the life of the connection, so a
/// revoked token or grant takes effect on an open subscription too.
#[derive(Debug)]
pub struct Session {
    token: String,
    tokens: std::sync::Arc<TokenStore>,
}

impl Session {
    /// A session over `token` (already authenticated once).
    pub fn new(token: String, tokens: std::sync::Arc<TokenStore>) -> Self {
        Self { token, tokens }
    }

    /// Whether the token is still valid.
    pub fn valid(&self) -> bool {
        self.tokens.principal_of(&self.token).is_some()
    }

    /// The caller as of `now` (roles, projects and live grants read again),
    /// or `None` once the token has been revoked.
    pub fn viewer(
        &self,
        catalog: &Catalog,
        access: std::sync::Arc<DatasetAccess>,
        now: i64,
    ) -> Option<Viewer> {
        let principal = self.tokens.principal_of(&self.token)?;
        Viewer::resolve(catalog, access, &principal, now).ok()
    }
}

/// Whether each dataset is open, shared by every request. A dataset's
/// access level is fixed when it is registered (re-registration is refused),
/// so an entry never goes stale; unknown datasets are never cached. The
/// cache keeps the [`DatasetAccess::CAPACITY`] datasets asked about most
/// recently: a catalogue of millions of datasets must not hold one entry
/// each for as long as the server runs.
#[derive(Debug)]
pub struct DatasetAccess {
    open: Mutex<LruCache<String, bool>>,
}

impl Default for DatasetAccess {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl DatasetAccess {
    /// Datasets remembered by default (~100 bytes each).
    pub const CAPACITY: usize = 65_536;

    /// A cache remembering at most `capacity` datasets (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            open: bounded(capacity),
        }
    }

    fn is_open(&self, catalog: &Catalog, id: &str) -> Option<bool> {
        if let Some(v) = self.open.lock().ok().and_then(|mut m| m.get(id).copied()) {
            return Some(v);
        }
        let node = catalog.node(&format!("dataset/{id}")).ok()??;
        let open = node.attributes()["accessLevel"].as_str() == Some("ACCESS_LEVEL_OPEN");
        if let Ok(mut m) = self.open.lock() {
            m.put(id.to_string(), open);
        }
        Some(open)
    }
}

/// Callers resolved recently, by principal, shared by every request: a
/// client sends many requests a second with one token, and resolving one
/// reads the principal's record, its projects and every grant it holds. A
/// kept viewer answers only for the same access time (seconds) and the same
/// [`Catalog::access_epoch`], so a role, membership, grant or revocation
/// applied since is seen at once; the token itself is still checked on
/// every request, before this, so a revoked token is refused at once too.
#[derive(Debug)]
pub struct ResolvedViewers {
    viewers: Mutex<LruCache<String, (u64, std::sync::Arc<Viewer>)>>,
}

impl Default for ResolvedViewers {
    fn default() -> Self {
        Self {
            viewers: bounded(Self::CAPACITY),
        }
    }
}

/// A cache shared by every request that keeps at most `capacity` entries
/// (at least one), forgetting the least recently used.
pub(crate) fn bounded<K: std::hash::Hash + Eq, V>(capacity: usize) -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
    ))
}

impl ResolvedViewers {
    /// Principals kept (those asking most recently).
    pub const CAPACITY: usize = 1024;

    /// `principal` as of `now`: the viewer kept for it if nothing it is
    /// made of can have changed since, else resolved afresh and kept.
    pub fn viewer(
        &self,
        catalog: &Catalog,
        access: std::sync::Arc<DatasetAccess>,
        principal: &str,
        now: i64,
    ) -> Result<std::sync::Arc<Viewer>, ApiError> {
        // Read before resolving (see `Catalog::access_epoch`).
        let epoch = catalog.access_epoch();
        let kept = self.viewers.lock().ok().and_then(|mut kept| {
            kept.get(principal)
                .filter(|(at, v)| *at == epoch && v.now == now)
                .map(|(_, v)| v.clone())
        });
        if let Some(viewer) = kept {
            return Ok(viewer);
        }
        let viewer = std::sync::Arc::new(Viewer::resolve(catalog, access, principal, now)?);
        if let Ok(mut kept) = self.viewers.lock() {
            kept.put(principal.to_string(), (epoch, viewer.clone()));
        }
        Ok(viewer)
    }
}

/// The authenticated caller: principal, roles and what it may see.
#[derive(Debug)]
pub struct Viewer {
    /// Principal id.
    pub principal: String,
    /// Roles from the principal's latest registration.
    pub roles: Vec<Role>,
    /// Datasets named by the live access grants the principal holds itself
    /// or through its projects.
    pub granted: HashSet<String>,
    /// Projects the principal belongs to now.
    pub projects: HashSet<String>,
    /// The access time this viewer was resolved at (unix seconds).
    pub now: i64,
    access: std::sync::Arc<DatasetAccess>,
}

impl Viewer {
    /// Resolves `principal` against the catalogue at access time `now` (unix
    /// seconds). An unknown principal (its registration not yet sequenced, or
    /// never) has no roles.
    pub fn resolve(
        catalog: &Catalog,
        access: std::sync::Arc<DatasetAccess>,
        principal: &str,
        now: i64,
    ) -> Result<Self, ApiError> {
        let node = catalog.node(&format!("principal/{principal}"))?;
        let roles = node
            .map(|n| {
                n.attributes()["roles"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .filter_map(|r| r.as_str().and_then(Role::from_str_name))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let projects: HashSet<String> = catalog
            .current_projects(principal, now)?
            .into_iter()
            .collect();
        let mut granted = HashSet::new();
        let grantees = std::iter::once(format!("principal:{principal}"))
            .chain(projects.iter().map(|p| format!("project:{p}")));
        for grantee in grantees {
            granted.extend(
                catalog
                    .grants_held_by(&grantee, now)?
                    .into_iter()
                    .filter_map(|g| g.attributes()["datasetId"].as_str().map(str::to_string)),
            );
        }
        Ok(Self {
            principal: principal.to_string(),
            roles,
            granted,
            projects,
            now,
            access,
        })
    }

    /// Someone without a token (the public data-use register): no roles, no
    /// grants; sees open datasets only.
    pub fn anonymous(access: std::sync::Arc<DatasetAccess>, now: i64) -> Self {
        Self {
            principal: String::new(),
            roles: Vec::new(),
            granted: HashSet::new(),
            projects: HashSet::new(),
            now,
            access,
        }
    }

    /// Whether the caller holds `role` (admin holds every role).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Whether the caller holds any of `roles` (admin holds every role).
    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// Governance and admin see restricted metadata without grants.
    pub fn sees_all(&self) -> bool {
        self.has_any(&[Role::Governance, Role::Admin])
    }

    /// The search visibility of this caller.
    pub fn visibility(&self) -> Visibility {
        Visibility {
            all: self.sees_all(),
            granted_datasets: self.granted.iter().cloned().collect(),
        }
    }

    /// Requires one of `roles`, or refuses with FORBIDDEN naming them.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if self.has_any(roles) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "{what} needs one of the roles {}; principal {} has {}",
            names(roles),
            self.principal,
            names(&self.roles)
        )))
    }

    /// Whether the ledger's policy lets this caller be the actor of `body`
    /// (`clew_events::policy`: the service key signs only what its actor may
    /// record); `key_owner` is the principal of a key being revoked.
    pub fn may_record(
        &self,
        body: &clew_events::proto::event::Body,
        key_owner: Option<&str>,
    ) -> Result<(), ApiError> {
        let roles: Vec<i32> = self.roles.iter().map(|r| *r as i32).collect();
        clew_events::policy::actor_may(
            body,
            clew_events::policy::Party {
                id: &self.principal,
                roles: &roles,
            },
            key_owner,
        )
        .map_err(|e| ApiError::Forbidden(e.to_string()))
    }

    /// Whether the dataset `id` is visible: open, granted, or the caller
    /// sees everything. Unknown access levels count as restricted.
    pub fn dataset_visible(&self, catalog: &Catalog, id: &str) -> bool {
        if self.sees_all() || self.granted.contains(id) {
            return true;
        }
        // Nothing is known about an unregistered dataset, so nothing can leak.
        self.access.is_open(catalog, id).unwrap_or(true)
    }

    /// Whether an entity (`<type>/<id>`) is visible to the caller.
    pub fn subject_visible(&self, catalog: &Catalog, subject: &str) -> bool {
        let (kind, id) = subject.split_once('/').unwrap_or((subject, ""));
        match kind {
            "dataset" => self.dataset_visible(catalog, id),
            "dataset-version" => {
                self.dataset_visible(catalog, id.split_once('@').map_or(id, |(d, _)| d))
            }
            "access-grant" => {
                self.sees_all()
                    || catalog.node(subject).ok().flatten().is_some_and(|g| {
                        let a = g.attributes();
                        a["principalId"] == self.principal.as_str()
                            || a["projectId"]
                                .as_str()
                                .is_some_and(|p| self.projects.contains(p))
                    })
            }
            "project" => self.sees_all() || self.projects.contains(id),
            "access-request" => {
                self.sees_all()
                    || catalog.node(subject).ok().flatten().is_some_and(|r| {
                        let a = r.attributes();
                        a["requester"] == self.principal.as_str()
                            || a["terms"]["projectId"]
                                .as_str()
                                .is_some_and(|p| self.projects.contains(p))
                    })
            }
            "principal" => self.sees_all() || id == self.principal,
            _ => true,
        }
    }

    /// Whether a stored node is visible.
    pub fn node_visible(&self, catalog: &Catalog, node: &NodeRecord) -> bool {
        self.subject_visible(catalog, &node.subject())
    }

    /// Replaces references to invisible datasets / versions inside `value`
    /// with [`REDACTED`]; returns whether anything was replaced. Facets kept
    /// verbatim from OpenLineage (`facetsJson`) are free-form, so they are
    /// kept only for a viewer who may see every dataset they name and every
    /// dataset the event cites.
    pub fn redact(&self, catalog: &Catalog, value: &mut serde_json::Value) -> bool {
        if self.sees_all() {
            return false;
        }
        let mut any = self.redact_in(catalog, value, false);
        any |= self.redact_facets(catalog, value, any);
        any
    }

    /// Blanks every `facetsJson` string when `cited_hidden`, or when the
    /// facets themselves name a dataset the viewer may not see.
    fn redact_facets(
        &self,
        catalog: &Catalog,
        value: &mut serde_json::Value,
        cited_hidden: bool,
    ) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                let mut any = false;
                for (k, v) in map.iter_mut() {
                    if k == "facetsJson" {
                        if let serde_json::Value::String(text) = v {
                            let names_hidden = serde_json::from_str::<serde_json::Value>(text)
                                .map(|facets| self.names_hidden(catalog, &facets))
                                .unwrap_or(true);
                            if cited_hidden || names_hidden {
                                *v = serde_json::Value::String(REDACTED.into());
                                any = true;
                            }
                        }
                    } else {
                        any |= self.redact_facets(catalog, v, cited_hidden);
                    }
                }
                any
            }
            serde_json::Value::Array(items) => {
                let mut any = false;
                for item in items {
                    any |= self.redact_facets(catalog, item, cited_hidden);
                }
                any
            }
            _ => false,
        }
    }

    /// Whether any string inside `value` names a dataset (`<id>` or
    /// `<id>@<version>`) the viewer may not see.
    fn names_hidden(&self, catalog: &Catalog, value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) if s.len() <= 256 => {
                let id = s.split_once('@').map_or(s.as_str(), |(d, _)| d);
                !id.is_empty() && !self.dataset_visible(catalog, id)
            }
            serde_json::Value::Array(a) => a.iter().any(|v| self.names_hidden(catalog, v)),
            serde_json::Value::Object(o) => o.values().any(|v| self.names_hidden(catalog, v)),
            _ => false,
        }
    }

    /// The rule for writes scoped to one dataset, as the API applies it
    /// before signing: publishing or withdrawing a version of a dataset
    /// needs governance (or admin), a live grant for it, or being the
    /// principal that registered it (the custodian's own ingest). Anyone else
    /// is refused with the words a dataset that does not exist gets, so the
    /// refusal tells nothing about what is hidden. (Citing a dataset version
    /// as an input — transforms, training runs, validations — stays open to
    /// the ingest role: the platform's processing team cites the trusts'
    /// controlled collections it pooled.)
    pub fn may_cite(
        &self,
        catalog: &Catalog,
        body: &clew_events::proto::event::Body,
    ) -> Result<(), ApiError> {
        use clew_events::proto::event::Body;
        if self.sees_all() {
            return Ok(());
        }
        let named = match body {
            Body::DatasetVersionPublished(v) => v.dataset_id.clone(),
            Body::DatasetVersionWithdrawn(w) => w.dataset_version_id.clone(),
            _ => return Ok(()),
        };
        let id = named.split_once('@').map_or(named.as_str(), |(d, _)| d);
        let dataset = catalog.node(&format!("dataset/{id}"))?;
        let registered_here = dataset
            .as_ref()
            .is_some_and(|d| d.created_by.actor == self.principal);
        if dataset.is_none() || !(registered_here || self.dataset_visible(catalog, id)) {
            return Err(ApiError::NotFound(format!(
                "the event names {named}, which is not in the catalogue"
            )));
        }
        Ok(())
    }

    /// A refusal as this viewer may read it: names of hidden datasets and the
    /// leaves they sit at are taken out.
    pub fn redact_error(&self, catalog: &Catalog, e: async_graphql::Error) -> async_graphql::Error {
        if self.sees_all() {
            return e;
        }
        let (text, changed) = self.redact_text(catalog, &e.message);
        if !changed {
            return e;
        }
        async_graphql::Error { message: text, ..e }
    }

    /// `text` with every word that names a hidden dataset (or one of its
    /// versions) replaced, and "(leaf N)" dropped if anything was.
    pub fn redact_text(&self, catalog: &Catalog, text: &str) -> (String, bool) {
        let mut changed = false;
        let words: Vec<String> = text
            .split(' ')
            .map(|w| {
                let bare = w.trim_matches(|c: char| ",;:()'\"".contains(c));
                let id = bare
                    .strip_prefix("dataset-version/")
                    .or_else(|| bare.strip_prefix("dataset/"))
                    .unwrap_or(bare);
                let id = id.split_once('@').map_or(id, |(d, _)| d);
                // An unregistered id counts as visible, so only a known,
                // hidden dataset is replaced.
                if !id.is_empty() && !self.dataset_visible(catalog, id) {
                    changed = true;
                    w.replace(bare, REDACTED)
                } else {
                    w.to_string()
                }
            })
            .collect();
        let mut out = words.join(" ");
        if changed {
            while let Some(start) = out.find(" (leaf ") {
                match out[start..].find(')') {
                    Some(end) => out.replace_range(start..start + end + 1, ""),
                    None => break,
                }
            }
        }
        (out, changed)
    }

    fn redact_in(&self, catalog: &Catalog, value: &mut serde_json::Value, reference: bool) -> bool {
        match value {
            serde_json::Value::String(s) if reference => {
                let visible = match s.split_once('@') {
                    Some((ds, _)) => self.dataset_visible(catalog, ds),
                    None => self.dataset_visible(catalog, s),
                };
                if !visible {
                    *s = REDACTED.to_string();
                }
                !visible
            }
            serde_json::Value::Array(items) => {
                let mut any = false;
                for item in items {
                    any |= self.redact_in(catalog, item, reference);
                }
                any
            }
            serde_json::Value::Object(map) => {
                let mut any = false;
                for (k, v) in map.iter_mut() {
                    any |= self.redact_in(catalog, v, REFERENCE_KEYS.contains(&k.as_str()));
                }
                any
            }
            _ => false,
        }
    }

    /// Replaces a reference (a subject string) if it is invisible.
    pub fn redact_subject(&self, catalog: &Catalog, subject: &str) -> String {
        if self.subject_visible(catalog, subject) {
            subject.to_string()
        } else {
            REDACTED.to_string()
        }
    }
}

/// `ROLE_A, ROLE_B` (or `no roles`).
pub fn names(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "no roles".into();
    }
    roles
        .iter()
        .map(|r| r.as_str_name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_digests_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = TokenStore::open(&path).unwrap();
        let t = store.issue("alice").unwrap();
        assert_eq!(store.principal_of(&t).as_deref(), Some("alice"));
        assert_eq!(store.principal_of("clew_wrong"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t), "the token itself must not be stored");
        let again = TokenStore::open(&path).unwrap();
        assert_eq!(again.principal_of(&t).as_deref(), Some("alice"));
        assert_eq!(again.revoke_all("alice").unwrap(), 1);
        assert_eq!(again.principal_of(&t), None);
    }

    #[test]
    fn a_kept_viewer_answers_only_for_its_principal_and_second() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let access = std::sync::Arc::new(DatasetAccess::default());
        let viewers = ResolvedViewers::default();
        let ask = |who: &str, now| viewers.viewer(&catalog, access.clone(), who, now).unwrap();
        let first = ask("alice", 100);
        assert!(std::sync::Arc::ptr_eq(&first, &ask("alice", 100)));
        let later = ask("alice", 101);
        assert!(!std::sync::Arc::ptr_eq(&first, &later));
        assert_eq!(later.now, 101);
        assert_eq!(ask("bob", 101).principal, "bob");
        assert!(std::sync::Arc::ptr_eq(&later, &ask("alice", 101)));
        for i in 0..ResolvedViewers::CAPACITY + 10 {
            ask(&format!("p-{i}"), 101);
        }
        assert_eq!(
            viewers.viewers.lock().unwrap().len(),
            ResolvedViewers::CAPACITY,
            "at most its capacity is kept"
        );
        assert!(!std::sync::Arc::ptr_eq(&later, &ask("alice", 101)));
    }

    #[test]
    fn the_dataset_access_cache_forgets_the_least_recently_asked() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let access = DatasetAccess::with_capacity(2);
        // Unregistered datasets are answered but never remembered.
        assert_eq!(access.is_open(&catalog, "ds-unknown"), None);
        assert!(access.open.lock().unwrap().is_empty());
        for (id, open) in [("ds-a", true), ("ds-b", false), ("ds-c", true)] {
            access.open.lock().unwrap().put(id.to_string(), open);
        }
        assert_eq!(
            access.open.lock().unwrap().len(),
            2,
            "the cache holds at most its capacity"
        );
        // The oldest entry is gone: asked again, it is looked up (and, being
        // absent from this empty catalogue, not remembered).
        assert_eq!(access.is_open(&catalog, "ds-a"), None);
        assert_eq!(access.is_open(&catalog, "ds-b"), Some(false));
        assert_eq!(access.is_open(&catalog, "ds-c"), Some(true));
    }
}
