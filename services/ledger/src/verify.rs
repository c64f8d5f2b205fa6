//! Offline verification of a whole ledger from its stored bytes alone.
//!
//! Trusts nothing the ledger computed: every leaf is decoded and its signature
//! checked against the key registry as replayed from the leaves themselves;
//! every Merkle hash is recomputed from the leaves and compared with the stored
//! one; every checkpoint's signature is checked with the ledger's verifier key,
//! its root compared with the recomputed root, and each checkpoint proven
//! consistent with the next from the stored hashes.

use std::collections::HashMap;
use std::path::Path;

use clew_events::policy::Party;
use clew_events::proto::{event::Body, Role};
use clew_events::VerifierKey;
use rayon::prelude::*;
use tlog_tiles::{
    check_tree, prove_tree, record_hash, split_stored_hash_index, stored_hash_count,
    stored_hash_index, stored_hashes_for_record_hash, tree_hash, Hash,
};

use crate::event_index::TagIndex;
use crate::store::{hash_value, keys, u64_value, MemoryHashes, StoredHashes};
use crate::{checkpoint, LEDGER_DB_DIR};

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    /// A leaf is missing, undecodable, badly signed or inconsistent.
    #[error("leaf {index}: {problem}")]
    Leaf {
        /// Leaf index.
        index: u64,
        /// What is wrong.
        problem: String,
    },
    /// A stored Merkle hash differs from the one recomputed from the leaves.
    #[error("stored hash {index} (level {level}, node {node}): {problem}")]
    Hash {
        /// Stored-hash index.
        index: u64,
        /// Tree level.
        level: u8,
        /// Node index within the level.
        node: u64,
        /// What is wrong.
        problem: String,
    },
    /// A checkpoint is badly signed, has the wrong root, or is inconsistent.
    #[error("checkpoint at tree size {size}: {problem}")]
    Checkpoint {
        /// Tree size the checkpoint is stored under.
        size: u64,
        /// What is wrong.
        problem: String,
    },
    /// The ledger could not be read at all.
    #[error("cannot read the ledger: {0}")]
    Unreadable(String),
    /// Every leaf is intact and proven, but some break the authorisation
    /// policy (`clew_events::policy`) as replayed from the log itself.
    #[error("{} leaves break the authorisation policy: {}", .0.len(), policy_lines(.0))]
    Policy(Vec<PolicyViolation>),
    /// Every leaf verifies, but content some of them cite is missing from
    /// the blob store or no longer hashes to its digest.
    #[error("{} cited manifests are missing or altered: {}", .0.len(), content_lines(.0))]
    Content(Vec<ContentProblem>),
    /// The blob store could not be asked about cited content.
    #[error("the blob store did not answer: {0}")]
    ContentUnavailable(String),
}

/// A leaf whose signer or actor the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    /// Leaf index.
    pub index: u64,
    /// Why the policy refuses it.
    pub problem: String,
}

/// A leaf whose cited manifest is missing from the blob store or altered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentProblem {
    /// Leaf index of the dataset version.
    pub index: u64,
    /// The manifest digest it cites.
    pub digest: String,
    /// What is wrong with the stored content.
    pub problem: String,
}

fn leaf_lines<'a>(n: usize, items: impl Iterator<Item = (u64, &'a str)>) -> String {
    let mut shown: Vec<String> = items
        .take(20)
        .map(|(index, problem)| format!("leaf {index}: {problem}"))
        .collect();
    if n > 20 {
        shown.push(format!("and {} more", n - 20));
    }
    shown.join("; ")
}

fn policy_lines(v: &[PolicyViolation]) -> String {
    leaf_lines(v.len(), v.iter().map(|p| (p.index, p.problem.as_str())))
}

fn content_lines(v: &[ContentProblem]) -> String {
    leaf_lines(v.len(), v.iter().map(|p| (p.index, p.problem.as_str())))
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Leaves checked.
    pub leaves: u64,
    /// Stored hashes checked.
    pub hashes: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The ledger's verifier key.
    pub verifier_key: String,
    /// Each dataset version's leaf and the manifest digest it cites.
    pub cited_manifests: Vec<(u64, String)>,
}

/// Checks that every manifest `report`'s leaves cite is in `store` and
/// still hashes to its digest (each read in full and hashed, a few at a
/// time); names the leaf of each that is not. Returns how many were read.
pub fn verify_content(
    report: &VerifyReport,
    store: &clew_blobs::BlobStore,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, VerifyFailure> {
    use clew_blobs::Presence;
    use futures_util::StreamExt;
    let total = report.cited_manifests.len() as u64;
    let mut answers = Vec::with_capacity(total as usize);
    // Eight reads at a time, in chunks so that progress can be reported.
    for chunk in report.cited_manifests.chunks(64) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        answers.extend(clew_blobs::block_on(async move {
            futures_util::stream::iter(chunk)
                .map(|(index, digest)| {
                    let store = store.clone();
                    async move {
                        let presence = store.check(&digest).await;
                        (index, digest, presence)
                    }
                })
                .buffered(8)
                .collect::<Vec<_>>()
                .await
        }));
        progress(answers.len() as u64, total);
    }
    let mut problems = Vec::new();
    for (index, digest, presence) in answers {
        let problem = match presence {
            Ok(Presence::Present { .. }) => continue,
            Ok(Presence::Absent) => format!("manifest {digest} is not in {}", store.location()),
            Ok(Presence::Altered { actual }) => format!(
                "manifest {digest} in {} was altered: its bytes hash to {actual}",
                store.location()
            ),
            Err(e) if e.is_transient() => {
                return Err(VerifyFailure::ContentUnavailable(e.to_string()))
            }
            Err(e) => format!("manifest {digest}: {e}"),
        };
        problems.push(ContentProblem {
            index,
            digest: digest.clone(),
            problem,
        });
    }
    if problems.is_empty() {
        Ok(total)
    } else {
        Err(VerifyFailure::Content(problems))
    }
}

struct KeyLife {
    principal: String,
    verifier: VerifierKey,
    registered: u64,
    revoked: Option<u64>,
}

const CHUNK: u64 = 8192;

/// The policy's facts as the replay has rebuilt them, leaf by leaf.
#[derive(Default)]
struct ReplayedFacts(HashMap<String, clew_events::policy::Fact>);

impl clew_events::policy::FactStore for ReplayedFacts {
    type Error = std::convert::Infallible;

    fn fact(&self, subject: &str) -> Result<Option<clew_events::policy::Fact>, Self::Error> {
        Ok(self.0.get(subject).cloned())
    }
}

/// Why the policy refuses leaf `o` given the registry before it, if it does.
/// An unregistered signing key is reported by the signature check instead.
fn policy_problem(
    o: &clew_events::OpenedEnvelope,
    registry: &HashMap<String, KeyLife>,
    roles: &HashMap<String, Vec<i32>>,
) -> Option<String> {
    let signer = registry.get(o.key_id())?;
    let actor = &o.event.actor;
    let Some(actor_roles) = roles.get(actor) else {
        return Some(format!("actor principal/{actor} is not registered"));
    };
    let signer_roles = roles.get(&signer.principal).map_or(&[][..], |r| &r[..]);
    let key_owner = match o.body() {
        Body::KeyRevoked(k) => registry.get(&k.key_id).map(|l| l.principal.as_str()),
        _ => None,
    };
    clew_events::policy::authorise(
        o.body(),
        Party {
            id: &signer.principal,
            roles: signer_roles,
        },
        Party {
            id: actor,
            roles: actor_roles,
        },
        key_owner,
    )
    .err()
    .map(|e| format!("key {}: {e}", o.key_id()))
}

/// Whether the dedupe index holds `event_id` at leaf `i` and at no other
/// leaf. Other leaves under the id's tag are read, to tell a shared tag from
/// a second leaf with the same id.
fn indexed_here(
    tree: &sled::Tree,
    index: &TagIndex,
    i: u64,
    event_id: &str,
) -> Result<bool, crate::LedgerError> {
    let leaves: Vec<u64> = index.leaves(crate::event_index::tag(event_id)).collect();
    if !leaves.contains(&i) {
        // A ledger from before runs, not opened since, keeps one key an event.
        return Ok(match tree.get(keys::event(event_id))? {
            Some(v) => u64_value(&v)? == i,
            None => false,
        });
    }
    let ov = crate::store::Overlay::new(tree);
    for other in leaves.into_iter().filter(|&j| j != i) {
        if ov.event_id_of(other)? == event_id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Verifies the ledger in `data_dir`. When `expected_vkey` is given the ledger
/// must be signed by exactly that key. `progress(done, total)` is called as
/// leaves are checked.
pub fn verify_ledger(
    data_dir: &Path,
    expected_vkey: Option<&str>,
    progress: &dyn Fn(u64, u64),
) -> Result<VerifyReport, VerifyFailure> {
    let unreadable = |e: &dyn std::fmt::Display| VerifyFailure::Unreadable(e.to_string());
    let db_path = data_dir.join(LEDGER_DB_DIR);
    if !db_path.exists() {
        return Err(VerifyFailure::Unreadable(format!(
            "{} does not exist",
            db_path.display()
        )));
    }
    let db =
        crate::store::open_sled(&sled::Config::new().path(&db_path)).map_err(|e| unreadable(&e))?;
    let tree = db.open_tree("ledger").map_err(|e| unreadable(&e))?;
    let get = |k: &[u8]| tree.get(k).map_err(|e| unreadable(&e));

    let vkey = get(keys::LEDGER_VKEY)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .ok_or_else(|| VerifyFailure::Unreadable("no ledger verifier key stored".into()))?;
    let vkey = match expected_vkey {
        Some(expected) if expected.trim() != vkey => {
            return Err(VerifyFailure::Checkpoint {
                size: 0,
                problem: format!("ledger claims key {vkey}, expected {}", expected.trim()),
            })
        }
        Some(expected) => expected.trim().to_string(),
        None => vkey,
    };
    let size = match get(keys::SIZE)? {
        Some(v) => u64_value(&v).map_err(|e| unreadable(&e))?,
        None => 0,
    };

    // The dedupe index, as runs (and, in a ledger from before them not
    // opened since, one key an event).
    let event_index = TagIndex::load(&tree).map_err(|e| unreadable(&e))?;

    // 1. Leaves: decode, replay the key registry, check signatures, recompute hashes.
    let mut registry: HashMap<String, KeyLife> = HashMap::new();
    // Roles at each principal's latest registration, as replayed.
    let mut roles: HashMap<String, Vec<i32>> = HashMap::new();
    let mut violations: Vec<PolicyViolation> = Vec::new();
    let mut cited_manifests: Vec<(u64, String)> = Vec::new();
    let mut facts = ReplayedFacts::default();
    let mut hashes = MemoryHashes(Vec::with_capacity((2 * size) as usize));
    let mut start = 0;
    while start < size {
        let end = (start + CHUNK).min(size);
        let leaves: Vec<(u64, Vec<u8>)> = crate::store::read_leaves(&tree, start, end)
            .map_err(|(index, e)| VerifyFailure::Leaf {
                index,
                problem: e.to_string(),
            })?
            .into_iter()
            .zip(start..)
            .map(|(v, i)| (i, v))
            .collect();
        let opened: Vec<_> = leaves
            .par_iter()
            .map(|(i, bytes)| {
                let o = clew_events::open(bytes).map_err(|e| VerifyFailure::Leaf {
                    index: *i,
                    problem: e.to_string(),
                })?;
                if o.canonical != *bytes {
                    return Err(VerifyFailure::Leaf {
                        index: *i,
                        problem: "stored bytes are not the canonical envelope encoding".into(),
                    });
                }
                Ok(o)
            })
            .collect::<Result<_, _>>()?;
        // The policy as of each leaf, then the registry changes it makes, in order.
        for (i, o) in (start..end).zip(&opened) {
            if i > 0 {
                if let Some(problem) = policy_problem(o, &registry, &roles) {
                    violations.push(PolicyViolation { index: i, problem });
                }
            }
            // The duties (projects, access requests) against the facts as
            // replayed so far, exactly as the sequencer decided them.
            let no_roles = Vec::new();
            let actor = Party {
                id: &o.event.actor,
                roles: roles.get(&o.event.actor).unwrap_or(&no_roles),
            };
            match clew_events::policy::duties(&o.event, actor, &facts) {
                Ok(Ok(writes)) => facts.0.extend(writes),
                Ok(Err(refusal)) => violations.push(PolicyViolation {
                    index: i,
                    problem: format!("{}: {refusal}", refusal.reason.as_str_name()),
                }),
                Err(never) => match never {},
            }
            if let Body::PrincipalRegistered(p) = o.body() {
                roles.insert(p.principal_id.clone(), p.roles.clone());
            }
            if let Body::DatasetVersionPublished(v) = o.body() {
                cited_manifests.push((i, v.manifest_digest.clone()));
            }
            match o.body() {
                Body::PrincipalRegistered(p) if p.verifier_key.is_empty() && i > 0 => {}
                Body::PrincipalRegistered(p) => {
                    let verifier =
                        VerifierKey::parse(&p.verifier_key).map_err(|e| VerifyFailure::Leaf {
                            index: i,
                            problem: e.to_string(),
                        })?;
                    if i == 0
                        && (verifier.key_id() != o.key_id()
                            || !p.roles.contains(&(Role::Admin as i32)))
                    {
                        return Err(VerifyFailure::Leaf {
                            index: 0,
                            problem: "genesis is not a self-signed admin registration".into(),
                        });
                    }
                    registry
                        .entry(verifier.key_id().to_string())
                        .or_insert(KeyLife {
                            principal: p.principal_id.clone(),
                            verifier,
                            registered: i,
                            revoked: None,
                        });
                }
                Body::KeyRevoked(k) => {
                    if let Some(life) = registry.get_mut(&k.key_id) {
                        life.revoked.get_or_insert(i);
                    }
                }
                _ => {}
            }
        }
        // Signatures, in parallel: the key must be registered before the leaf
        // (or be the genesis key signing itself) and not revoked before it.
        opened.par_iter().enumerate().try_for_each(|(offset, o)| {
            let i = start + offset as u64;
            let fail = |problem: String| VerifyFailure::Leaf { index: i, problem };
            let life = registry
                .get(o.key_id())
                .ok_or_else(|| fail(format!("signed by unregistered key {}", o.key_id())))?;
            if life.registered > i || (life.registered == i && i != 0) {
                return Err(fail(format!(
                    "signed by key {} before it was registered",
                    o.key_id()
                )));
            }
            if let Some(r) = life.revoked {
                if r < i {
                    return Err(fail(format!(
                        "signed by key {} revoked at leaf {r}",
                        o.key_id()
                    )));
                }
            }
            o.verify_signature(&life.verifier)
                .map_err(|e| fail(e.to_string()))
        })?;
        // Dedupe index and Merkle hashes, in order.
        for ((i, bytes), o) in leaves.iter().zip(&opened) {
            match indexed_here(&tree, &event_index, *i, &o.event.event_id) {
                Ok(true) => {}
                Err(e) => {
                    return Err(VerifyFailure::Leaf {
                        index: *i,
                        problem: format!("its dedupe entry: {e}"),
                    })
                }
                Ok(false) => {
                    return Err(VerifyFailure::Leaf {
                        index: *i,
                        problem: format!(
                            "event {} is not indexed to this leaf (duplicate or lost)",
                            o.event.event_id
                        ),
                    })
                }
            }
            let new =
                stored_hashes_for_record_hash(*i, record_hash(bytes), &hashes).map_err(|e| {
                    VerifyFailure::Leaf {
                        index: *i,
                        problem: e.to_string(),
                    }
                })?;
            hashes.0.extend(new);
        }
        progress(end, size);
        start = end;
    }

    // 2. Stored hashes equal the recomputed ones, and there are no extras.
    let expected_count = stored_hash_count(size);
    let mut seen = 0u64;
    for item in tree.scan_prefix(b"h") {
        let (k, v) = item.map_err(|e| unreadable(&e))?;
        let leaf = u64_value(&k[1..]).map_err(|e| unreadable(&e))?;
        let first = stored_hash_index(0, leaf);
        if v.len() % 32 != 0 || v.is_empty() {
            let (level, node) = split_stored_hash_index(first);
            return Err(VerifyFailure::Hash {
                index: first,
                level,
                node,
                problem: "hash group is not a list of 32-byte hashes".into(),
            });
        }
        for (j, stored) in v.chunks(32).enumerate() {
            let index = first + j as u64;
            let (level, node) = split_stored_hash_index(index);
            let problem = |p: &str| VerifyFailure::Hash {
                index,
                level,
                node,
                problem: p.to_string(),
            };
            let stored = hash_value(stored).map_err(|_| problem("not a 32-byte hash"))?;
            match hashes.0.get(index as usize) {
                Some(h) if *h == stored => {}
                Some(_) => return Err(problem("differs from the hash recomputed from the leaves")),
                None => return Err(problem("is beyond the tree")),
            }
            seen += 1;
        }
    }
    if seen != expected_count {
        return Err(VerifyFailure::Unreadable(format!(
            "{seen} stored hashes for {size} leaves, expected {expected_count}"
        )));
    }

    // 3. Checkpoints: signature, root, and consistency with the next one.
    let stored = StoredHashes(&tree);
    let mut previous: Option<(u64, Hash)> = None;
    let mut checkpoints = 0;
    for item in tree.scan_prefix(keys::CHECKPOINTS) {
        let (k, note) = item.map_err(|e| unreadable(&e))?;
        let at = u64_value(&k[1..]).map_err(|e| unreadable(&e))?;
        let fail = |problem: String| VerifyFailure::Checkpoint { size: at, problem };
        let cp = checkpoint::parse(&note, &vkey).map_err(|e| fail(e.to_string()))?;
        if cp.size != at {
            return Err(fail(format!("note says size {}", cp.size)));
        }
        if at > size {
            return Err(fail(format!("beyond the tree size {size}")));
        }
        let root = tree_hash(at, &hashes).map_err(|e| fail(e.to_string()))?;
        if root != cp.root {
            return Err(fail(
                "root hash differs from the root recomputed from the leaves".into(),
            ));
        }
        if let Some((old_size, old_root)) = previous {
            let proof = prove_tree(at, old_size, &stored).map_err(|e| fail(e.to_string()))?;
            check_tree(&proof, at, cp.root, old_size, old_root).map_err(|_| {
                fail(format!(
                    "not consistent with the checkpoint at size {old_size}"
                ))
            })?;
        }
        previous = Some((at, cp.root));
        checkpoints += 1;
    }
    match previous {
        Some((last, _)) if last == size => {}
        _ if size == 0 => {}
        _ => {
            return Err(VerifyFailure::Checkpoint {
                size,
                problem: "the latest leaves are not covered by a checkpoint".into(),
            })
        }
    }
    if !violations.is_empty() {
        return Err(VerifyFailure::Policy(violations));
    }
    Ok(VerifyReport {
        leaves: size,
        hashes: seen,
        checkpoints,
        verifier_key: vkey,
        cited_manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ledger, LedgerOptions, Submission};
    use clew_events::{proto, sample, seal, ProducerKey};
    use prost::Message;

    /// A mirror takes whatever the ledger key signed; `clew verify` must still
    /// catch history that breaks the policy. The forged history here is what a
    /// ledger that trusted its service key's actors would have held.
    #[test]
    fn verify_names_every_leaf_that_breaks_the_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger_key = ProducerKey::generate("test.clew.example/ledger")
            .unwrap()
            .to_signer_text();
        let admin = ProducerKey::generate("admin").unwrap();
        let service = ProducerKey::generate("svc").unwrap();
        let rita = ProducerKey::generate("rita").unwrap();
        let primary = Ledger::create(
            &tmp.path().join("primary"),
            &ledger_key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .unwrap();
        let good: Vec<Body> = vec![
            sample::principal("svc", &service, &[Role::Service]),
            sample::principal("rita", &rita, &[Role::Researcher]),
            sample::site(1),
            Body::AccessRequestSubmitted(proto::AccessRequestSubmitted {
                request_id: "req-1".into(),
                terms: Some(proto::AccessRequestTerms {
                    dataset_ids: vec!["xr-open".into()],
                    purpose: "audit".into(),
                    requested_days: 30,
                    data_use_agreement: Some(proto::DataUseAgreement {
                        agreement_id: "dua".into(),
                        version: "1".into(),
                    }),
                    ..Default::default()
                }),
            }),
        ];
        let subs = good
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                Submission::received(
                    i as u64,
                    seal(&admin, "admin", b, None, None)
                        .unwrap()
                        .encode_to_vec(),
                )
            })
            .collect();
        let r = primary.sequence("test", subs).unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        // What the primary refuses: rita (researcher) registering a dataset
        // through the service key, the admin's key signing for rita, and the
        // admin reviewing the request it made itself.
        let self_review = Body::AccessRequestReviewed(proto::AccessRequestReviewed {
            request_id: "req-1".into(),
            decision: proto::AccessRequestState::UnderReview as i32,
            ..Default::default()
        });
        let forged = [
            seal(&service, "rita", sample::dataset(1, 1), None, None).unwrap(),
            seal(&admin, "rita", sample::dataset(2, 1), None, None).unwrap(),
            seal(&admin, "admin", self_review, None, None).unwrap(),
        ];
        let refused = primary
            .sequence(
                "test",
                forged
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Submission::received(10 + i as u64, e.encode_to_vec()))
                    .collect(),
            )
            .unwrap();
        assert_eq!(refused.rejected.len(), 3, "the sequencer refuses all three");

        // The same leaves, plus the forged ones, signed into a checkpoint.
        let mut leaves: Vec<Vec<u8>> = (0..primary.size())
            .map(|i| primary.leaf(i).unwrap())
            .collect();
        leaves.extend(
            forged
                .iter()
                .map(|e| clew_events::open(&e.encode_to_vec()).unwrap().canonical),
        );
        let mut hashes = MemoryHashes(Vec::new());
        for (i, leaf) in leaves.iter().enumerate() {
            let new = stored_hashes_for_record_hash(i as u64, record_hash(leaf), &hashes).unwrap();
            hashes.0.extend(new);
        }
        let size = leaves.len() as u64;
        let root = tree_hash(size, &hashes).unwrap();
        let (signer, origin, vkey) = checkpoint::load_signer(&ledger_key).unwrap();
        let cp = checkpoint::sign(&signer, &origin, size, root).unwrap();
        let mirror_dir = tmp.path().join("mirror");
        let mirror = Ledger::open_mirror(&mirror_dir, &vkey, LedgerOptions::default()).unwrap();
        mirror
            .append_verified(0, leaves, &cp.note, None, &[])
            .unwrap();
        drop(mirror);

        let failure = verify_ledger(&mirror_dir, Some(&vkey), &|_, _| {}).unwrap_err();
        let VerifyFailure::Policy(violations) = &failure else {
            panic!("expected a policy failure, got {failure}");
        };
        assert_eq!(
            violations.iter().map(|v| v.index).collect::<Vec<_>>(),
            vec![5, 6, 7],
            "{failure}"
        );
        assert!(
            violations[2].problem.contains(
                "REJECTION_REASON_SELF_REVIEW: principal/admin submitted access-request/req-1"
            ),
            "{failure}"
        );
        assert!(
            violations[0]
                .problem
                .contains("DATASET_REGISTERED needs one of the roles")
                && violations[0]
                    .problem
                    .contains("actor principal/rita has [RESEARCHER]"),
            "{failure}"
        );
        assert!(
            violations[1].problem.contains("needs the role SERVICE"),
            "{failure}"
        );
        // The primary's own history obeys the policy.
        drop(primary);
        verify_ledger(&tmp.path().join("primary"), Some(&vkey), &|_, _| {}).unwrap();
    }
}
