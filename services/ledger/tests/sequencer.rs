//! The sequencer against a real sled database: every refusal reason, the
//! ledger still verifying after each, and the good events around each bad one.

use clew_events::proto::{self, event::Body, RejectionReason as R, Role};
use clew_events::{sample, seal, seal_opened, ProducerKey};
use clew_ledger::{verify_ledger, BatchReceipt, Ledger, LedgerOptions, Submission};
use prost::Message;

struct World {
    dir: tempfile::TempDir,
    ledger_key: String,
    ledger: Option<Ledger>,
    admin: ProducerKey,
    ingest: ProducerKey,
    offset: u64,
    /// What the ledger is reopened with.
    options: LedgerOptions,
}

impl World {
    /// A ledger with an admin, an ingest principal, one site, one dataset and
    /// its version 1.0.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger_key = ProducerKey::generate("test.clew.example/ledger")
            .unwrap()
            .to_signer_text();
        let admin = ProducerKey::generate("admin").unwrap();
        let ledger = Ledger::create(
            dir.path(),
            &ledger_key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .unwrap();
        let ingest = ProducerKey::generate("ingest").unwrap();
        let mut w = World {
            dir,
            ledger_key,
            ledger: Some(ledger),
            admin,
            ingest,
            offset: 0,
            options: LedgerOptions::default(),
        };
        let admin_env = w.sealed(
            &w.admin.clone(),
            "admin",
            sample::principal("ingest", &w.ingest, &[Role::Ingest]),
        );
        let r = w.submit(vec![admin_env]);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        // Sites need governance; the admin registers the site.
        let site = w.sealed(&w.admin.clone(), "admin", sample::site(1));
        let r = w.submit(vec![site]);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let r = w.submit(vec![
            w.sealed_ingest(sample::dataset(1, 1)),
            w.sealed_ingest(sample::dataset_version(1, 1, vec![])),
        ]);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let r = w.submit(vec![w.sealed_ingest(sample::site(2))]);
        assert_eq!(
            r.rejected[0].reason,
            R::Unauthorized,
            "ingest may not register sites"
        );
        w
    }

    fn ledger(&self) -> &Ledger {
        self.ledger.as_ref().unwrap()
    }

    fn sealed(&self, key: &ProducerKey, actor: &str, body: Body) -> Vec<u8> {
        seal(key, actor, body, None, None).unwrap().encode_to_vec()
    }

    fn sealed_ingest(&self, body: Body) -> Vec<u8> {
        self.sealed(&self.ingest, "ingest", body)
    }

    /// Submits versions `versions` of dataset 1 in one batch; all are accepted.
    fn submit_versions(&mut self, versions: std::ops::Range<u64>) {
        let count = versions.end - versions.start;
        let items = versions
            .map(|v| self.sealed_ingest(sample::dataset_version(1, v, vec![])))
            .collect();
        let r = self.submit(items);
        assert_eq!(r.accepted.len() as u64, count, "{:?}", r.rejected.first());
    }

    fn submit(&mut self, items: Vec<Vec<u8>>) -> BatchReceipt {
        let subs = items
            .into_iter()
            .map(|bytes| {
                self.offset += 1;
                Submission::received(self.offset, bytes)
            })
            .collect();
        let r = self.ledger().sequence("test", subs).unwrap();
        // What the receipt says of each appended event is what its leaf says
        // (the sequencer publishes it without decoding the leaf again).
        for a in &r.accepted {
            let leaf = self
                .ledger()
                .leaves(a.leaf_index..a.leaf_index + 1)
                .unwrap();
            let opened = clew_events::open(&leaf[0]).unwrap();
            assert_eq!(a.event_id, opened.event.event_id);
            assert_eq!(a.kind, opened.kind());
            let subject = clew_events::subject_of(opened.body()).unwrap().subject();
            assert_eq!(a.subject, subject);
            assert!(!a.subject.is_empty());
        }
        r
    }

    /// Submits good, bad, good; returns the bad one's rejection after checking
    /// both good ones landed and the ledger verifies.
    fn refused_between_good_events(&mut self, bad: Vec<u8>, n: u64) -> clew_ledger::Rejection {
        let before = self.sealed_ingest(sample::dataset_version(1, 100 + n, vec![]));
        let after = self.sealed_ingest(sample::dataset_version(1, 200 + n, vec![]));
        let size = self.ledger().size();
        let r = self.submit(vec![before, bad, after]);
        assert_eq!(
            r.accepted.len(),
            2,
            "good events around the bad one: {:?}",
            r.rejected
        );
        assert_eq!(r.accepted[0].leaf_index, size);
        assert_eq!(r.accepted[1].leaf_index, size + 1);
        assert_eq!(r.rejected.len(), 1);
        for a in &r.accepted {
            assert_eq!(
                self.ledger().leaf_index_of(&a.event_id).unwrap(),
                Some(a.leaf_index)
            );
        }
        let stored = self
            .ledger()
            .rejected(r.rejected[0].rejection_index, 1)
            .unwrap();
        assert_eq!(
            stored[0].reason, r.rejected[0].reason as i32,
            "kept in the rejected log"
        );
        assert!(!stored[0].raw.is_empty(), "raw bytes kept");
        self.verify();
        r.rejected[0].clone()
    }

    /// [`World::refused_between_good_events`] for a ledger that checks cited
    /// content in `store`: the good events' manifests are put there first.
    fn refused_between_good_events_citing(
        &mut self,
        store: &clew_blobs::BlobStore,
        bad: Vec<u8>,
        n: u64,
    ) -> clew_ledger::Rejection {
        for v in [100 + n, 200 + n] {
            store.put_blocking(sample::manifest(v).into()).unwrap();
        }
        self.refused_between_good_events(bad, n)
    }

    fn verify(&mut self) {
        // sled allows one open handle per database: close, verify, reopen.
        self.ledger = None;
        let report = verify_ledger(self.dir.path(), None, &|_, _| {}).expect("ledger verifies");
        assert!(report.leaves > 0);
        self.reopen();
    }

    /// Opens the ledger again with [`World::options`] (once sled let go of it).
    fn reopen(&mut self) {
        self.ledger = None;
        let (dir, key, options) = (self.dir.path(), &self.ledger_key, &self.options);
        self.ledger = Some(open_when_released(|| {
            Ledger::open(dir, key, options.clone())
        }));
    }
}

#[test]
fn garbled_bytes_are_refused_as_malformed() {
    let mut w = World::new();
    let r = w.refused_between_good_events(b"\xff\x00 this is not protobuf".to_vec(), 1);
    assert_eq!(r.reason, R::Malformed);
    assert!(r.detail.contains("not a DSSE envelope"), "{}", r.detail);
}

#[test]
fn a_wrong_signature_is_refused() {
    let mut w = World::new();
    let mut env = seal(
        &w.ingest,
        "ingest",
        sample::dataset_version(1, 2, vec![]),
        None,
        None,
    )
    .unwrap();
    env.signatures[0].sig[5] ^= 1;
    let r = w.refused_between_good_events(env.encode_to_vec(), 2);
    assert_eq!(r.reason, R::BadSignature);
    assert!(r.detail.contains(w.ingest.key_id()), "{}", r.detail);
}

#[test]
fn only_the_very_bytes_this_process_sealed_skip_the_signature_check() {
    let mut w = World::new();
    let size = w.ledger().size();
    let version = |key: &ProducerKey, v: u64| {
        seal_opened(key, "ingest", sample::dataset_version(1, v, vec![]), None).unwrap()
    };
    let (good, good_sealed) = version(&w.ingest, 2);
    // Sealed here, then altered: what was sealed no longer vouches for the
    // bytes, so their signature is checked and fails.
    let (other, other_sealed) = version(&w.ingest, 3);
    let mut altered = other.envelope.clone();
    altered.signatures[0].sig[5] ^= 1;
    // Sealed here by a key the ledger does not know: unknown, as ever.
    let stranger = ProducerKey::generate("stranger").unwrap();
    let (unknown, unknown_sealed) = version(&stranger, 4);
    let subs = vec![
        Submission {
            offset: w.offset + 1,
            bytes: good.canonical.clone(),
            sealed_here: Some(good_sealed),
        },
        Submission {
            offset: w.offset + 2,
            bytes: altered.encode_to_vec(),
            sealed_here: Some(other_sealed),
        },
        Submission {
            offset: w.offset + 3,
            bytes: unknown.canonical.clone(),
            sealed_here: Some(unknown_sealed),
        },
    ];
    w.offset += 3;
    let r = w.ledger().sequence("test", subs).unwrap();
    assert_eq!(r.accepted.len(), 1, "{:?}", r.rejected);
    assert_eq!(r.accepted[0].leaf_index, size);
    assert_eq!(r.accepted[0].event_id, good.event.event_id);
    let reasons: Vec<R> = r.rejected.iter().map(|x| x.reason).collect();
    assert_eq!(reasons, [R::BadSignature, R::UnknownKey]);
    // `clew verify` checks every signature in the log, this one included.
    w.verify();
}

#[test]
fn an_unknown_key_is_refused() {
    let mut w = World::new();
    let stranger = ProducerKey::generate("stranger").unwrap();
    let bad = w.sealed(&stranger, "ingest", sample::dataset_version(1, 3, vec![]));
    let r = w.refused_between_good_events(bad, 3);
    assert_eq!(r.reason, R::UnknownKey);
    assert!(r.detail.contains("stranger+"), "{}", r.detail);
}

#[test]
fn a_revoked_key_is_refused_after_its_revocation_only() {
    let mut w = World::new();
    let second = ProducerKey::generate("ingest2").unwrap();
    let reg = w.sealed(
        &w.admin.clone(),
        "admin",
        sample::principal("ingest2", &second, &[Role::Ingest]),
    );
    let before = w.sealed(&second, "ingest2", sample::dataset_version(1, 4, vec![]));
    let revoke = w.sealed(
        &w.admin.clone(),
        "admin",
        Body::KeyRevoked(proto::KeyRevoked {
            key_id: second.key_id().into(),
            reason: "laptop lost".into(),
        }),
    );
    let r = w.submit(vec![reg, before, revoke]);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let bad = w.sealed(&second, "ingest2", sample::dataset_version(1, 5, vec![]));
    let r = w.refused_between_good_events(bad, 4);
    assert_eq!(r.reason, R::RevokedKey);
    assert!(r.detail.contains("revoked at leaf"), "{}", r.detail);
}

#[test]
fn a_duplicate_event_id_is_refused_naming_the_original_leaf() {
    let mut w = World::new();
    let env = w.sealed_ingest(sample::dataset_version(1, 6, vec![]));
    let first = w.submit(vec![env.clone()]);
    let leaf = first.accepted[0].leaf_index;
    let r = w.refused_between_good_events(env.clone(), 5);
    assert_eq!(r.reason, R::Duplicate);
    assert_eq!(r.original_leaf_index, Some(leaf));
    // Within one batch too.
    let twin = w.sealed_ingest(sample::dataset_version(1, 7, vec![]));
    let r = w.submit(vec![twin.clone(), twin]);
    assert_eq!((r.accepted.len(), r.rejected.len()), (1, 1));
    assert_eq!(r.rejected[0].reason, R::Duplicate);
}

#[test]
fn the_same_manifest_under_a_second_version_is_refused_as_a_duplicate() {
    let mut w = World::new();
    let first = sample::dataset_version(1, 8, vec![]);
    let Body::DatasetVersionPublished(mut again) = first.clone() else {
        unreachable!()
    };
    w.submit(vec![w.sealed_ingest(first)]);
    again.version = "9.0".into();
    let r = w.refused_between_good_events(
        w.sealed_ingest(Body::DatasetVersionPublished(again.clone())),
        8,
    );
    assert_eq!(r.reason, R::Duplicate);
    assert!(
        r.detail.contains("dataset-version/ds-000001@8.0"),
        "{}",
        r.detail
    );
    // Within one batch too, and another dataset may carry the same content.
    let Body::DatasetVersionPublished(mut twin) = sample::dataset_version(1, 10, vec![]) else {
        unreachable!()
    };
    twin.manifest_digest = again.manifest_digest.clone();
    twin.version = "10.0".into();
    let mut twin2 = twin.clone();
    twin2.version = "11.0".into();
    let r = w.submit(vec![
        w.sealed_ingest(Body::DatasetVersionPublished(twin)),
        w.sealed_ingest(Body::DatasetVersionPublished(twin2)),
    ]);
    assert_eq!(
        (r.accepted.len(), r.rejected.len()),
        (0, 2),
        "{:?}",
        r.rejected
    );
}

#[test]
fn dangling_and_withdrawn_references_are_refused() {
    let mut w = World::new();
    let ghost = sample::training_run(
        "run-1",
        "mv-1",
        "ds-000001@9.0",
        "ds-000001@1.0",
        "ds-000001@1.0",
    );
    let r = w.refused_between_good_events(w.sealed_ingest(ghost), 6);
    assert_eq!(r.reason, R::DanglingReference);
    assert!(
        r.detail.contains("dataset-version/ds-000001@9.0"),
        "{}",
        r.detail
    );

    let withdraw = Body::DatasetVersionWithdrawn(proto::DatasetVersionWithdrawn {
        dataset_version_id: "ds-000001@1.0".into(),
        reason: proto::WithdrawalReason::ConsentWithdrawn as i32,
        detail: "patient opted out".into(),
    });
    let r = w.submit(vec![w.sealed_ingest(withdraw)]);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let uses_withdrawn = sample::training_run(
        "run-2",
        "mv-2",
        "ds-000001@1.0",
        "ds-000001@1.0",
        "ds-000001@1.0",
    );
    let r = w.refused_between_good_events(w.sealed_ingest(uses_withdrawn), 7);
    assert_eq!(r.reason, R::DanglingReference);
    assert!(r.detail.contains("withdrawn at leaf"), "{}", r.detail);
}

#[test]
fn an_oversized_leaf_is_refused() {
    let mut w = World::new();
    let mut body = sample::dataset_version(1, 8, vec![]);
    if let Body::DatasetVersionPublished(v) = &mut body {
        v.release_notes = "x".repeat(70_000);
    }
    let r = w.refused_between_good_events(w.sealed_ingest(body), 8);
    assert_eq!(r.reason, R::Oversized);
    assert!(r.detail.contains("65535"), "{}", r.detail);
}

#[test]
fn conflicts_roles_and_unjustified_live_deployments_are_refused() {
    let mut w = World::new();
    // Version 1.0 again, with other content (the same content is a Duplicate).
    let Body::DatasetVersionPublished(mut again) = sample::dataset_version(1, 1, vec![]) else {
        unreachable!()
    };
    again.manifest_digest = format!("sha256:{}", "0f".repeat(32));
    let r = w.refused_between_good_events(w.sealed_ingest(Body::DatasetVersionPublished(again)), 9);
    assert_eq!(r.reason, R::Conflict, "version 1.0 exists");
    let r = w.refused_between_good_events(
        w.sealed_ingest(sample::principal(
            "eve",
            &ProducerKey::generate("eve").unwrap(),
            &[Role::Admin],
        )),
        10,
    );
    assert_eq!(r.reason, R::Unauthorized);

    let setup = vec![
        w.sealed_ingest(sample::training_run(
            "run-1",
            "mv-1",
            "ds-000001@1.0",
            "ds-000001@1.0",
            "ds-000001@1.0",
        )),
        w.sealed_ingest(sample::model_version("mv-1", "run-1")),
        w.sealed_ingest(sample::validation(
            "val-fail",
            "mv-1",
            "ds-000001@1.0",
            "site-0001",
            false,
        )),
    ];
    let r = w.submit(setup);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let live = sample::deployment(
        "dep-1",
        "mv-1",
        "site-0001",
        proto::DeploymentStatus::Live,
        vec!["val-fail".into()],
    );
    let r = w.refused_between_good_events(w.sealed_ingest(live), 11);
    assert_eq!(r.reason, R::InvalidPayload);
    assert!(r.detail.contains("passing validation"), "{}", r.detail);
    let pass = w.sealed_ingest(sample::validation(
        "val-ok",
        "mv-1",
        "ds-000001@1.0",
        "site-0001",
        true,
    ));
    let live = w.sealed_ingest(sample::deployment(
        "dep-1",
        "mv-1",
        "site-0001",
        proto::DeploymentStatus::Live,
        vec!["val-ok".into()],
    ));
    let r = w.submit(vec![pass, live]);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
}

#[test]
fn proofs_receipts_and_tiles_check_out_against_signed_checkpoints() {
    let mut w = World::new();
    // Enough leaves for a full tile plus a partial one.
    for chunk in 0..3u64 {
        w.submit_versions(1000 + chunk * 100..1100 + chunk * 100);
    }
    let ledger = w.ledger();
    let size = ledger.size();
    let vkey = ledger.verifier_key().to_string();
    let cp = ledger.latest_checkpoint().unwrap();
    assert_eq!(cp.size, size);
    for i in (0..size).step_by(7) {
        let proof = ledger.inclusion_proof(i, size).unwrap();
        let leaf = ledger.leaf(i).unwrap();
        tlog_tiles::check_record(&proof, size, cp.root, i, tlog_tiles::record_hash(&leaf)).unwrap();
        let receipt = ledger.receipt(i).unwrap();
        let checked = clew_ledger::verify_receipt(&receipt, &vkey).unwrap();
        assert_eq!((checked.index, checked.leaf), (i, leaf));
    }
    // A receipt whose leaf was altered no longer verifies.
    let receipt = ledger.receipt(3).unwrap();
    let extra_line = receipt.lines().nth(1).unwrap().to_string();
    let mut chars: Vec<char> = extra_line.chars().collect();
    chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
    let tampered = receipt.replace(&extra_line, &chars.into_iter().collect::<String>());
    assert!(clew_ledger::verify_receipt(&tampered, &vkey).is_err());

    // Every pair of stored checkpoints is consistent.
    let sizes = ledger.checkpoint_sizes().unwrap();
    assert!(sizes.len() >= 6);
    for (a, &old) in sizes.iter().enumerate() {
        for &new in &sizes[a..] {
            let (o, n) = (
                ledger.checkpoint_at(old).unwrap().unwrap(),
                ledger.checkpoint_at(new).unwrap().unwrap(),
            );
            let proof = ledger.consistency_proof(old, new).unwrap();
            tlog_tiles::check_tree(&proof, new, n.root, old, o.root).unwrap();
        }
    }

    // Tiles: the full level-0 tile hashes to the same subtree the proofs use,
    // and the entry bundle holds the leaves with 2-byte lengths.
    use clew_ledger::TileRef;
    let full = ledger
        .read_tile(TileRef::Hashes {
            level: 0,
            index: 0,
            width: 256,
        })
        .unwrap();
    assert_eq!(full.len(), 256 * 32);
    let level1 = ledger
        .read_tile(TileRef::Hashes {
            level: 1,
            index: 0,
            width: 1,
        })
        .unwrap();
    assert_eq!(tlog_tiles::Tile::subtree_hash(&full).0.to_vec(), level1);
    let partial_width = (size - 256) as u32;
    let bundle = ledger
        .read_tile(TileRef::Entries {
            index: 1,
            width: partial_width,
        })
        .unwrap();
    let mut at = 0;
    for i in 256..size {
        let len = u16::from_be_bytes([bundle[at], bundle[at + 1]]) as usize;
        assert_eq!(
            &bundle[at + 2..at + 2 + len],
            ledger.leaf(i).unwrap().as_slice()
        );
        at += 2 + len;
    }
    assert_eq!(at, bundle.len());
    assert!(ledger
        .read_tile(TileRef::Entries {
            index: 1,
            width: partial_width + 1
        })
        .is_err());
}

#[test]
fn a_reopened_ledger_skips_input_it_already_consumed() {
    let mut w = World::new();
    let envs: Vec<Vec<u8>> = (0..5)
        .map(|v| w.sealed_ingest(sample::dataset_version(1, 50 + v, vec![])))
        .collect();
    let subs: Vec<Submission> = envs
        .iter()
        .enumerate()
        .map(|(i, b)| Submission::received(i as u64, b.clone()))
        .collect();
    let r = w.ledger().sequence("replay", subs.clone()).unwrap();
    assert_eq!(r.accepted.len(), 5);
    let size = w.ledger().size();
    w.verify(); // closes and reopens
    let again = w.ledger().sequence("replay", subs).unwrap();
    assert!(
        again.accepted.is_empty() && again.rejected.is_empty(),
        "already consumed input is skipped"
    );
    assert_eq!(again.next_offset, 5);
    assert_eq!(w.ledger().size(), size);
    assert_eq!(w.ledger().cursor("replay").unwrap(), 5);
}

#[test]
fn several_sources_are_sequenced_as_one_batch_with_a_cursor_each() {
    let mut w = World::new();
    let envs: Vec<Vec<u8>> = (0..6)
        .map(|v| w.sealed_ingest(sample::dataset_version(1, 70 + v, vec![])))
        .collect();
    let part = |range: std::ops::Range<usize>, first: u64| -> Vec<Submission> {
        range
            .enumerate()
            .map(|(i, e)| Submission::received(first + i as u64, envs[e].clone()))
            .collect()
    };
    let before = w.ledger().checkpoint_sizes().unwrap().len();
    let (receipt, positions) = w
        .ledger()
        .sequence_sources(vec![
            ("kafka:t:0".into(), part(0..3, 10)),
            ("kafka:t:1".into(), part(3..6, 40)),
        ])
        .unwrap();
    assert_eq!(receipt.accepted.len(), 6);
    assert_eq!(
        positions,
        vec![("kafka:t:0".to_string(), 13), ("kafka:t:1".to_string(), 43)]
    );
    assert_eq!(
        w.ledger().checkpoint_sizes().unwrap().len(),
        before + 1,
        "one checkpoint for the whole batch"
    );
    assert_eq!(w.ledger().cursor("kafka:t:0").unwrap(), 13);
    assert_eq!(w.ledger().cursor("kafka:t:1").unwrap(), 43);
    // Re-delivery of both (after a crash of the reader): nothing twice; a
    // record beyond one source's cursor is taken.
    let extra = w.sealed_ingest(sample::dataset_version(1, 90, vec![]));
    let mut again = part(3..6, 40);
    again.push(Submission::received(43, extra));
    let (receipt, positions) = w
        .ledger()
        .sequence_sources(vec![
            ("kafka:t:0".into(), part(0..3, 10)),
            ("kafka:t:1".into(), again),
        ])
        .unwrap();
    assert_eq!(receipt.accepted.len(), 1);
    assert!(receipt.rejected.is_empty());
    assert_eq!(positions[1], ("kafka:t:1".to_string(), 44));
    w.verify();
}

/// Who signs a case's event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SignedBy {
    /// The actor's own key.
    Own,
    /// The service principal's key (ROLE_SERVICE), for the actor.
    Service,
    /// Another principal's key without ROLE_SERVICE (the admin's), for the actor.
    Stranger,
}

/// Every event kind, as the policy names them in this table.
const KINDS: [&str; 21] = [
    "PRINCIPAL_REGISTERED",
    "KEY_REVOKED (another's key)",
    "KEY_REVOKED (own key)",
    "SITE_REGISTERED",
    "ACCESS_GRANTED",
    "ACCESS_REVOKED",
    "DATASET_REGISTERED",
    "DATASET_VERSION_PUBLISHED",
    "DATASET_VERSION_WITHDRAWN",
    "TRANSFORM_RECORDED",
    "TRAINING_RUN_RECORDED",
    "MODEL_VERSION_REGISTERED",
    "VALIDATION_RECORDED",
    "DEPLOYMENT_RECORDED",
    "PROJECT_REGISTERED",
    "PROJECT_MEMBER_ADDED",
    "PROJECT_MEMBER_REMOVED",
    "ACCESS_REQUEST_SUBMITTED",
    "ACCESS_REQUEST_RESUBMITTED",
    "ACCESS_REQUEST_WITHDRAWN",
    "ACCESS_REQUEST_REVIEWED",
];

/// The policy table, written out independently of the code that enforces it:
/// which actor roles may record each kind (R researcher, G governance,
/// I ingest, P partner, A admin, S service). The signer is then the actor
/// itself or a SERVICE principal; anyone else is refused whatever the roles.
fn allowed(kind: &str, role: Role) -> bool {
    let letters = match kind {
        "PRINCIPAL_REGISTERED" | "KEY_REVOKED (another's key)" => "A",
        "KEY_REVOKED (own key)" => "RGIPAS",
        "ACCESS_GRANTED" | "ACCESS_REVOKED" => "A",
        "SITE_REGISTERED" => "GA",
        "DATASET_VERSION_WITHDRAWN" => "GIA",
        "PROJECT_REGISTERED" | "PROJECT_MEMBER_ADDED" | "PROJECT_MEMBER_REMOVED" => "RGA",
        "ACCESS_REQUEST_SUBMITTED" | "ACCESS_REQUEST_RESUBMITTED" | "ACCESS_REQUEST_WITHDRAWN" => {
            "RPA"
        }
        "ACCESS_REQUEST_REVIEWED" => "GA",
        _ => "GIPA",
    };
    let letter = match role {
        Role::Researcher => 'R',
        Role::Governance => 'G',
        Role::Ingest => 'I',
        Role::Partner => 'P',
        Role::Admin => 'A',
        Role::Service => 'S',
        Role::Unspecified => '?',
    };
    letters.contains(letter)
}

#[test]
fn the_policy_is_enforced_on_signer_and_actor_for_every_kind_and_role() {
    let mut w = World::new();
    let admin = w.admin.clone();
    let roles = [
        Role::Researcher,
        Role::Governance,
        Role::Ingest,
        Role::Partner,
        Role::Admin,
        Role::Service,
    ];
    let service = ProducerKey::generate("svc").unwrap();
    let mut setup = vec![w.sealed(
        &admin,
        "admin",
        sample::principal("svc", &service, &[Role::Service]),
    )];
    let mut keys = Vec::new();
    for role in roles {
        let id = format!(
            "p-{}",
            role.as_str_name()
                .trim_start_matches("ROLE_")
                .to_lowercase()
        );
        let key = ProducerKey::generate(&id).unwrap();
        setup.push(w.sealed(&admin, "admin", sample::principal(&id, &key, &[role])));
        keys.push((role, id, key));
    }
    let r = w.submit(setup);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);

    let mut table = String::new();
    let mut n = 0u64;
    for kind in KINDS {
        table.push_str(&format!("{kind:<30}"));
        for (role, actor, own_key) in &keys {
            for signed_by in [SignedBy::Own, SignedBy::Service, SignedBy::Stranger] {
                // The stranger is the admin, which is also an actor here.
                if signed_by == SignedBy::Stranger && *role == Role::Admin {
                    continue;
                }
                n += 1;
                let (prereqs, body) = case(kind, n, actor, &admin);
                // Set-up is the admin's, except steps only an access request's
                // requester takes (signed by the service key for them).
                let prereqs: Vec<Vec<u8>> = prereqs
                    .into_iter()
                    .map(|(by, b)| match by {
                        "admin" => w.sealed(&admin, "admin", b),
                        requester => w.sealed(&service, requester, b),
                    })
                    .collect();
                if !prereqs.is_empty() {
                    let r = w.submit(prereqs);
                    assert!(r.rejected.is_empty(), "{kind} set-up: {:?}", r.rejected);
                }
                let signer = match signed_by {
                    SignedBy::Own => own_key,
                    SignedBy::Service => &service,
                    SignedBy::Stranger => &admin,
                };
                let r = w.submit(vec![w.sealed(signer, actor, body)]);
                let expected = allowed(kind, *role) && signed_by != SignedBy::Stranger;
                let outcome = if r.accepted.len() == 1 {
                    "accepted".to_string()
                } else {
                    format!("{:?}: {}", r.rejected[0].reason, r.rejected[0].detail)
                };
                assert_eq!(
                    r.accepted.len() == 1,
                    expected,
                    "{kind} by actor {actor} ({}) signed by {signed_by:?}: {outcome}",
                    role.as_str_name()
                );
                if !expected {
                    assert_eq!(r.rejected[0].reason, R::Unauthorized, "{kind}: {outcome}");
                    let names_the_problem = match signed_by {
                        SignedBy::Stranger => {
                            r.rejected[0].detail.contains("needs the role SERVICE")
                        }
                        _ => r.rejected[0].detail.contains("needs one of the roles"),
                    };
                    assert!(names_the_problem, "{kind} {signed_by:?}: {outcome}");
                }
                table.push_str(if expected { " +" } else { " ." });
            }
            table.push_str(" |");
        }
        table.push('\n');
    }
    println!("actor roles R G I P A S; each cell: own key, service key, stranger's key\n{table}");
    w.verify();
}

/// The events a case needs first (each with its actor: the admin, or a
/// requester the service key signs for) and the event under test.
fn case<'a>(
    kind: &str,
    n: u64,
    actor: &'a str,
    admin: &ProducerKey,
) -> (Vec<(&'a str, Body)>, Body) {
    if let Some(c) = access_case(kind, n, actor) {
        return c;
    }
    let (prereqs, body) = admin_case(kind, n, actor, admin);
    (prereqs.into_iter().map(|b| ("admin", b)).collect(), body)
}

fn terms(ds: &str, project: &str) -> Option<proto::AccessRequestTerms> {
    Some(proto::AccessRequestTerms {
        project_id: project.into(),
        dataset_ids: vec![ds.into()],
        dataset_version_ids: vec![],
        purpose: "a study of chest imaging".into(),
        requested_days: 365,
        data_use_agreement: Some(proto::DataUseAgreement {
            agreement_id: "nccid-dua".into(),
            version: "3.1".into(),
        }),
    })
}

fn request(n: u64, ds: &str) -> Body {
    Body::AccessRequestSubmitted(proto::AccessRequestSubmitted {
        request_id: format!("pol-req-{n}"),
        terms: terms(ds, ""),
    })
}

fn review(n: u64, decision: proto::AccessRequestState, reason: &str) -> Body {
    Body::AccessRequestReviewed(proto::AccessRequestReviewed {
        request_id: format!("pol-req-{n}"),
        decision: decision as i32,
        reason: reason.into(),
        conditions: vec![],
        grants: vec![],
    })
}

fn project(n: u64, lead: &str) -> Body {
    Body::ProjectRegistered(proto::ProjectRegistered {
        project_id: format!("pol-proj-{n}"),
        title: "Chest CT triage".into(),
        lead_principal_id: lead.into(),
        organisation: "University of Northgate".into(),
        purpose: "triage research".into(),
        starts_at: None,
        ends_at: None,
    })
}

fn admin_case(kind: &str, n: u64, actor: &str, admin: &ProducerKey) -> (Vec<Body>, Body) {
    let ds = format!("pol-ds-{n}");
    let v1 = format!("{ds}@1.0");
    let dataset = || {
        let Body::DatasetRegistered(mut d) = sample::dataset(1, 1) else {
            unreachable!()
        };
        d.dataset_id = ds.clone();
        Body::DatasetRegistered(d)
    };
    let version = |v: u64| {
        let Body::DatasetVersionPublished(mut p) = sample::dataset_version(1, v, vec![]) else {
            unreachable!()
        };
        p.dataset_id = ds.clone();
        p.manifest_digest = format!("sha256:{:064x}", n * 1000 + v);
        Body::DatasetVersionPublished(p)
    };
    let model = || sample::model_version(&format!("pol-mv-{n}"), "");
    match kind {
        "PRINCIPAL_REGISTERED" => {
            let key = ProducerKey::generate(&format!("new-{n}")).unwrap();
            (
                vec![],
                sample::principal(&format!("new-{n}"), &key, &[Role::Researcher]),
            )
        }
        "KEY_REVOKED (another's key)" => {
            let key = ProducerKey::generate(&format!("other-{n}")).unwrap();
            let reg = sample::principal(&format!("other-{n}"), &key, &[Role::Researcher]);
            (vec![reg], revoke(key.key_id()))
        }
        "KEY_REVOKED (own key)" => {
            // A second key of the actor (re-registration keeps its roles).
            let key = ProducerKey::generate(&format!("{actor}-spare-{n}")).unwrap();
            let mut reg = sample::principal(actor, &key, &[]);
            if let Body::PrincipalRegistered(p) = &mut reg {
                p.roles = role_of(actor);
            }
            (vec![reg], revoke(key.key_id()))
        }
        "SITE_REGISTERED" => (vec![], {
            let Body::SiteRegistered(mut s) = sample::site(1) else {
                unreachable!()
            };
            s.site_id = format!("pol-site-{n}");
            Body::SiteRegistered(s)
        }),
        "ACCESS_GRANTED" => (vec![dataset()], grant(n, &ds)),
        "ACCESS_REVOKED" => (
            vec![dataset(), grant(n, &ds)],
            Body::AccessRevoked(proto::AccessRevoked {
                grant_id: format!("pol-grant-{n}"),
                reason: "done".into(),
            }),
        ),
        "DATASET_REGISTERED" => (vec![], dataset()),
        "DATASET_VERSION_PUBLISHED" => (vec![dataset()], version(1)),
        "DATASET_VERSION_WITHDRAWN" => (
            vec![dataset(), version(1)],
            Body::DatasetVersionWithdrawn(proto::DatasetVersionWithdrawn {
                dataset_version_id: v1.clone(),
                reason: proto::WithdrawalReason::LabelErrors as i32,
                detail: "bad labels".into(),
            }),
        ),
        "TRANSFORM_RECORDED" => (
            vec![dataset(), version(1), version(2)],
            sample::transform(
                &format!("pol-t-{n}"),
                vec![v1.clone()],
                vec![format!("{ds}@2.0")],
            ),
        ),
        "TRAINING_RUN_RECORDED" => (
            vec![dataset(), version(1)],
            sample::training_run(
                &format!("pol-run-{n}"),
                &format!("pol-mv-{n}"),
                &v1,
                &v1,
                &v1,
            ),
        ),
        "MODEL_VERSION_REGISTERED" => (vec![], model()),
        "VALIDATION_RECORDED" => (
            vec![dataset(), version(1), model()],
            sample::validation(
                &format!("pol-val-{n}"),
                &format!("pol-mv-{n}"),
                &v1,
                "site-0001",
                true,
            ),
        ),
        "DEPLOYMENT_RECORDED" => (
            vec![model()],
            sample::deployment(
                &format!("pol-dep-{n}"),
                &format!("pol-mv-{n}"),
                "site-0001",
                proto::DeploymentStatus::Shadow,
                vec![],
            ),
        ),
        "PROJECT_REGISTERED" => (vec![], project(n, actor)),
        "ACCESS_REQUEST_SUBMITTED" => (vec![dataset()], request(n, &ds)),
        other => {
            let _ = admin;
            panic!("no case for {other}")
        }
    }
}

/// Cases whose set-up includes a request made by someone other than the admin.
fn access_case<'a>(kind: &str, n: u64, actor: &'a str) -> Option<(Vec<(&'a str, Body)>, Body)> {
    let ds = format!("pol-ds-{n}");
    let dataset = || {
        let Body::DatasetRegistered(mut d) = sample::dataset(1, 1) else {
            unreachable!()
        };
        d.dataset_id = ds.clone();
        Body::DatasetRegistered(d)
    };
    // A requester that may submit: the actor when its roles allow, else a researcher.
    let may_ask = ["p-researcher", "p-partner", "p-admin"].contains(&actor);
    let requester: &'a str = if may_ask { actor } else { "p-researcher" };
    Some(match kind {
        "PROJECT_MEMBER_ADDED" => (
            vec![("admin", project(n, actor))],
            Body::ProjectMemberAdded(proto::ProjectMemberAdded {
                project_id: format!("pol-proj-{n}"),
                principal_id: "svc".into(),
            }),
        ),
        "PROJECT_MEMBER_REMOVED" => (
            vec![
                ("admin", project(n, actor)),
                (
                    "admin",
                    Body::ProjectMemberAdded(proto::ProjectMemberAdded {
                        project_id: format!("pol-proj-{n}"),
                        principal_id: "svc".into(),
                    }),
                ),
            ],
            Body::ProjectMemberRemoved(proto::ProjectMemberRemoved {
                project_id: format!("pol-proj-{n}"),
                principal_id: "svc".into(),
                reason: "left".into(),
            }),
        ),
        "ACCESS_REQUEST_RESUBMITTED" => (
            vec![
                ("admin", dataset()),
                (requester, request(n, &ds)),
                (
                    "admin",
                    review(n, proto::AccessRequestState::ChangesRequested, "say more"),
                ),
            ],
            Body::AccessRequestResubmitted(proto::AccessRequestResubmitted {
                request_id: format!("pol-req-{n}"),
                terms: terms(&ds, ""),
                response: "purpose detailed".into(),
            }),
        ),
        "ACCESS_REQUEST_WITHDRAWN" => (
            vec![("admin", dataset()), (requester, request(n, &ds))],
            Body::AccessRequestWithdrawn(proto::AccessRequestWithdrawn {
                request_id: format!("pol-req-{n}"),
                reason: "no longer needed".into(),
            }),
        ),
        "ACCESS_REQUEST_REVIEWED" => {
            // Never one's own request (separation of duties is tested apart).
            let other = if actor == "p-researcher" {
                "p-partner"
            } else {
                "p-researcher"
            };
            (
                vec![("admin", dataset()), (other, request(n, &ds))],
                review(n, proto::AccessRequestState::UnderReview, ""),
            )
        }
        _ => return None,
    })
}

fn role_of(actor: &str) -> Vec<i32> {
    let name = format!("ROLE_{}", actor.trim_start_matches("p-").to_uppercase());
    vec![Role::from_str_name(&name).expect("role from the actor's name") as i32]
}

fn revoke(key_id: &str) -> Body {
    Body::KeyRevoked(proto::KeyRevoked {
        key_id: key_id.into(),
        reason: "rotated".into(),
    })
}

fn grant(n: u64, dataset: &str) -> Body {
    Body::AccessGranted(proto::AccessGranted {
        grant_id: format!("pol-grant-{n}"),
        grantee: Some(proto::access_granted::Grantee::PrincipalId(
            "p-researcher".into(),
        )),
        dataset_id: dataset.into(),
        purpose: "audit".into(),
        expires_at: None,
        request_id: String::new(),
        conditions: vec![],
        dataset_version_ids: vec![],
    })
}

/// Principals of the access-request tests, each signing for itself.
struct People {
    keys: std::collections::HashMap<&'static str, ProducerKey>,
}

impl People {
    fn key(&self, who: &str) -> &ProducerKey {
        &self.keys[who]
    }
}

/// rita and rory research, gus is governance inside rita's project, gina
/// is national governance, sam governs site-0001 and tess site-0002.
fn people(w: &mut World) -> People {
    let admin = w.admin.clone();
    let cast: [(&'static str, Role, &str); 6] = [
        ("rita", Role::Researcher, "University of Northgate"),
        ("rory", Role::Researcher, "University of Southmoor"),
        ("gus", Role::Governance, "National Imaging Platform"),
        ("gina", Role::Governance, "National Imaging Platform"),
        ("sam", Role::Governance, "site-0001"),
        ("tess", Role::Governance, "site-0002"),
    ];
    let mut keys = std::collections::HashMap::new();
    let mut batch = vec![w.sealed(&admin, "admin", sample::site(2))];
    for (id, role, org) in cast {
        let key = ProducerKey::generate(id).unwrap();
        let Body::PrincipalRegistered(mut p) = sample::principal(id, &key, &[role]) else {
            unreachable!()
        };
        p.organisation = org.into();
        batch.push(w.sealed(&admin, "admin", Body::PrincipalRegistered(p)));
        keys.insert(id, key);
    }
    // A restricted CT collection held by site-0001, an open one by site-0002.
    for (id, site, level) in [
        ("ct-restricted", "site-0001", proto::AccessLevel::Restricted),
        ("xr-open", "site-0002", proto::AccessLevel::Open),
    ] {
        let Body::DatasetRegistered(mut d) = sample::dataset(7, 1) else {
            unreachable!()
        };
        d.dataset_id = id.into();
        d.custodian_site_id = site.into();
        d.access_level = level as i32;
        batch.push(w.sealed(&admin, "admin", Body::DatasetRegistered(d)));
    }
    let r = w.submit(batch);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    People { keys }
}

fn request_for(id: &str, ds: &str, project: &str, days: u32) -> Body {
    let mut t = terms(ds, project);
    if let Some(t) = &mut t {
        t.requested_days = days;
    }
    Body::AccessRequestSubmitted(proto::AccessRequestSubmitted {
        request_id: id.into(),
        terms: t,
    })
}

fn decide(
    id: &str,
    decision: proto::AccessRequestState,
    grants: Vec<proto::AccessGranted>,
) -> Body {
    let conditions = if decision == proto::AccessRequestState::ApprovedWithConditions {
        vec!["results reviewed by the custodian before publication".to_string()]
    } else {
        vec![]
    };
    Body::AccessRequestReviewed(proto::AccessRequestReviewed {
        request_id: id.into(),
        decision: decision as i32,
        reason: "reviewed by the access committee".into(),
        conditions,
        grants,
    })
}

fn approval_grant(
    id: &str,
    ds: &str,
    project: &str,
    days: i64,
    conditions: bool,
) -> proto::AccessGranted {
    proto::AccessGranted {
        grant_id: format!("{id}-grant"),
        grantee: Some(proto::access_granted::Grantee::ProjectId(project.into())),
        dataset_id: ds.into(),
        purpose: "a study of chest imaging".into(),
        expires_at: Some(pbjson_types::Timestamp {
            seconds: clew_events::now_timestamp().seconds + days * 86_400,
            nanos: 0,
        }),
        request_id: id.into(),
        conditions: if conditions {
            vec!["results reviewed by the custodian before publication".into()]
        } else {
            vec![]
        },
        dataset_version_ids: vec![],
    }
}

#[test]
fn an_access_request_lives_through_every_state_and_each_duty_is_refused_with_its_reason_code() {
    use proto::AccessRequestState as S;
    let mut w = World::new();
    let p = people(&mut w);
    let step = |w: &mut World, who: &str, body: Body| {
        let key = if who == "admin" {
            w.admin.clone()
        } else {
            p.key(who).clone()
        };
        let r = w.submit(vec![w.sealed(&key, who, body)]);
        match r.rejected.first() {
            None => Ok(()),
            Some(rej) => {
                // Kept in the rejected log with its reason.
                let stored = w.ledger().rejected(rej.rejection_index, 1).unwrap();
                assert_eq!(stored[0].reason, rej.reason as i32);
                Err((rej.reason, rej.detail.clone()))
            }
        }
    };
    let refused = |r: Result<(), (R, String)>, reason: R, words: &str| {
        let (got, detail) = r.expect_err("refused");
        assert_eq!(got, reason, "{detail}");
        assert!(detail.contains(words), "{detail:?} names {words:?}");
    };

    // A project led by rita, with gus (governance) as a member.
    step(&mut w, "rita", project(1, "rita")).unwrap();
    let add_gus = Body::ProjectMemberAdded(proto::ProjectMemberAdded {
        project_id: "pol-proj-1".into(),
        principal_id: "gus".into(),
    });
    refused(
        step(&mut w, "rory", add_gus.clone()),
        R::Unauthorized,
        "only the lead of project/pol-proj-1 (principal/rita) or governance changes its members",
    );
    step(&mut w, "rita", add_gus).unwrap();
    refused(
        step(&mut w, "rory", project(2, "rita")),
        R::Unauthorized,
        "may register only a project it leads",
    );

    // Only the lead asks for the project.
    refused(
        step(
            &mut w,
            "rory",
            request_for("req-x", "ct-restricted", "pol-proj-1", 365),
        ),
        R::Unauthorized,
        "only the lead of project/pol-proj-1",
    );
    step(
        &mut w,
        "rita",
        request_for("req-1", "ct-restricted", "pol-proj-1", 365),
    )
    .unwrap();

    // Only governance decides; never its own request or its project's.
    refused(
        step(&mut w, "rita", decide("req-1", S::UnderReview, vec![])),
        R::Unauthorized,
        "needs one of the roles [GOVERNANCE]",
    );
    refused(
        step(&mut w, "gus", decide("req-1", S::UnderReview, vec![])),
        R::SelfReview,
        "is a member of project/pol-proj-1",
    );
    step(&mut w, "admin", request_for("req-admin", "xr-open", "", 30)).unwrap();
    refused(
        step(&mut w, "admin", decide("req-admin", S::Denied, vec![])),
        R::SelfReview,
        "submitted access-request/req-admin",
    );
    // Restricted data: the custodian site's governance or national, not another site's.
    refused(
        step(&mut w, "tess", decide("req-1", S::UnderReview, vec![])),
        R::OutOfScope,
        "dataset/ct-restricted is held by site/site-0001",
    );
    step(&mut w, "sam", decide("req-1", S::UnderReview, vec![])).unwrap();
    step(&mut w, "sam", decide("req-1", S::ChangesRequested, vec![])).unwrap();
    refused(
        step(
            &mut w,
            "sam",
            decide(
                "req-1",
                S::Approved,
                vec![approval_grant(
                    "req-1",
                    "ct-restricted",
                    "pol-proj-1",
                    30,
                    false,
                )],
            ),
        ),
        R::InvalidTransition,
        "is CHANGES_REQUESTED and cannot become APPROVED",
    );
    let resubmit = Body::AccessRequestResubmitted(proto::AccessRequestResubmitted {
        request_id: "req-1".into(),
        terms: terms("ct-restricted", "pol-proj-1"),
        response: "the purpose now names the triage study".into(),
    });
    refused(
        step(&mut w, "rory", resubmit.clone()),
        R::Unauthorized,
        "only the requester (principal/rita)",
    );
    step(&mut w, "rita", resubmit).unwrap();
    // The approval's grant may not outlast what was asked for.
    refused(
        step(
            &mut w,
            "gina",
            decide(
                "req-1",
                S::ApprovedWithConditions,
                vec![approval_grant(
                    "req-1",
                    "ct-restricted",
                    "pol-proj-1",
                    400,
                    true,
                )],
            ),
        ),
        R::InvalidPayload,
        "expires later than the 365 days asked for",
    );
    step(
        &mut w,
        "gina",
        decide(
            "req-1",
            S::ApprovedWithConditions,
            vec![approval_grant(
                "req-1",
                "ct-restricted",
                "pol-proj-1",
                365,
                true,
            )],
        ),
    )
    .unwrap();
    refused(
        step(
            &mut w,
            "rita",
            Body::AccessRequestWithdrawn(proto::AccessRequestWithdrawn {
                request_id: "req-1".into(),
                reason: "changed my mind".into(),
            }),
        ),
        R::InvalidTransition,
        "is APPROVED_WITH_CONDITIONS and cannot become WITHDRAWN",
    );

    // Denied and withdrawn requests stay so: asking again is a new request.
    step(&mut w, "rory", request_for("req-2", "xr-open", "", 90)).unwrap();
    step(&mut w, "tess", decide("req-2", S::Denied, vec![])).unwrap();
    let mut open_grant = approval_grant("req-2", "xr-open", "", 30, false);
    open_grant.grantee = Some(proto::access_granted::Grantee::PrincipalId("rory".into()));
    refused(
        step(
            &mut w,
            "gina",
            decide("req-2", S::Approved, vec![open_grant.clone()]),
        ),
        R::InvalidTransition,
        "asking again is a new request",
    );
    step(&mut w, "rory", request_for("req-3", "xr-open", "", 90)).unwrap();
    step(
        &mut w,
        "rory",
        Body::AccessRequestWithdrawn(proto::AccessRequestWithdrawn {
            request_id: "req-3".into(),
            reason: "found an open alternative".into(),
        }),
    )
    .unwrap();
    open_grant.request_id = "req-3".into();
    open_grant.grant_id = "req-3-grant".into();
    refused(
        step(
            &mut w,
            "gina",
            decide("req-3", S::Approved, vec![open_grant]),
        ),
        R::InvalidTransition,
        "is WITHDRAWN and cannot become APPROVED",
    );
    // A request naming a dataset that does not exist is accepted (refusing
    // it would tell the requester which hidden ones do); approving it is not.
    step(
        &mut w,
        "rory",
        request_for("req-4", "no-such-dataset", "", 30),
    )
    .unwrap();
    let mut ghost = approval_grant("req-4", "no-such-dataset", "", 30, false);
    ghost.grantee = Some(proto::access_granted::Grantee::PrincipalId("rory".into()));
    refused(
        step(&mut w, "gina", decide("req-4", S::Approved, vec![ghost])),
        R::DanglingReference,
        "dataset/no-such-dataset, which does not exist",
    );

    // `clew verify` replays the same duties over the whole log and finds no fault.
    w.verify();
    // The facts survive a restart: a decided request is still decided.
    let mut again = approval_grant("req-2", "xr-open", "", 30, false);
    again.grantee = Some(proto::access_granted::Grantee::PrincipalId("rory".into()));
    refused(
        step(&mut w, "gina", decide("req-2", S::Approved, vec![again])),
        R::InvalidTransition,
        "is DENIED",
    );

    // A ledger from before the facts were kept (simulated by deleting them)
    // rebuilds them from its log when opened, and the duties hold as before.
    w.ledger = None;
    {
        let db = open_when_released(|| sled::open(w.dir.path().join(clew_ledger::LEDGER_DB_DIR)));
        let tree = db.open_tree("ledger").unwrap();
        let facts: Vec<_> = tree.scan_prefix(b"a").keys().map(|k| k.unwrap()).collect();
        assert!(facts.len() > 10, "facts are kept: {}", facts.len());
        for k in facts {
            tree.remove(k).unwrap();
        }
        tree.remove(b"mfacts").unwrap();
        db.flush().unwrap();
    }
    w.ledger = Some(open_when_released(|| {
        Ledger::open(w.dir.path(), &w.ledger_key, LedgerOptions::default())
    }));
    step(
        &mut w,
        "rory",
        request_for("req-5", "ct-restricted", "", 30),
    )
    .unwrap();
    refused(
        step(&mut w, "tess", decide("req-5", S::UnderReview, vec![])),
        R::OutOfScope,
        "is held by site/site-0001",
    );
    step(&mut w, "sam", decide("req-5", S::UnderReview, vec![])).unwrap();

    // Open data: any governance may approve it outright.
    step(&mut w, "rory", request_for("req-6", "xr-open", "", 30)).unwrap();
    let mut grant = approval_grant("req-6", "xr-open", "", 30, false);
    grant.grantee = Some(proto::access_granted::Grantee::PrincipalId("rory".into()));
    step(&mut w, "sam", decide("req-6", S::Approved, vec![grant])).unwrap();
    w.verify();
}

#[test]
fn the_ledger_clock_never_goes_back() {
    let mut w = World::new();
    let before = w.ledger().checkpoint_time();
    assert!(
        before > 1_700_000_000,
        "checkpoints carry their signing time: {before}"
    );
    let r = w.submit(vec![w.sealed_ingest(sample::dataset_version(1, 9, vec![]))]);
    let size = r.tree_size;
    let at = w
        .ledger()
        .checkpoint_time_at(size)
        .unwrap()
        .expect("stamped");
    assert!(at >= before);
    assert_eq!(w.ledger().checkpoint_time(), at);
    // Survives a restart.
    w.verify();
    assert_eq!(w.ledger().checkpoint_time(), at);
}

/// Opens a sled database just closed by another handle: sled releases its
/// file lock from a background thread shortly after the last handle drops,
/// so an immediate reopen can find it still held.
fn open_when_released<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("the database stayed locked for 10 s: {e:?}"),
        }
    }
}

/// A dataset version is sequenced only when its manifest is in the blob
/// store (`MISSING_CONTENT` otherwise, events around it unaffected); a store
/// that cannot answer stops the whole batch with nothing written, and
/// `verify_content` names the leaf whose manifest went missing.
#[test]
fn a_version_is_cited_only_when_its_manifest_is_in_the_store() {
    let mut w = World::new();
    let blobs = tempfile::tempdir().unwrap();
    let store = clew_blobs::BlobStore::local(blobs.path()).unwrap();
    let dir = w.dir.path().to_path_buf();
    w.options = LedgerOptions::citing(store.clone());
    w.reopen();

    // Absent: refused by name, the events around it sequenced.
    let missing = w.sealed_ingest(sample::dataset_version(1, 300, vec![]));
    let refusal = w.refused_between_good_events_citing(&store, missing, 300);
    assert_eq!(refusal.reason, R::MissingContent);
    let Body::DatasetVersionPublished(v) = sample::dataset_version(1, 300, vec![]) else {
        unreachable!()
    };
    assert!(
        refusal.detail.contains(&v.manifest_digest) && refusal.detail.contains("upload it"),
        "{}",
        refusal.detail
    );

    // Present: accepted.
    store.put_blocking(sample::manifest(300).into()).unwrap();
    let again = w.sealed_ingest(sample::dataset_version(1, 300, vec![]));
    let r = w.submit(vec![again]);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let cited_leaf = r.accepted[0].leaf_index;

    // The store unreachable: nothing of the batch is written, the cursor
    // stays, and the same batch goes through once the store answers.
    std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "k");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "s");
    let dead = clew_blobs::BlobStore::open("s3://nowhere", None).unwrap();
    w.options = LedgerOptions::citing(dead);
    w.reopen();
    let size = w.ledger().size();
    let cursor = w.ledger().cursor("test").unwrap();
    let batch = vec![
        Submission::received(w.offset + 1, w.sealed_ingest(sample::dataset(7, 1))),
        Submission::received(
            w.offset + 2,
            w.sealed_ingest(sample::dataset_version(1, 301, vec![])),
        ),
    ];
    match w.ledger().sequence("test", batch.clone()) {
        Err(clew_ledger::LedgerError::ContentUnavailable(why)) => {
            assert!(why.contains("s3://nowhere"), "{why}")
        }
        other => panic!("an unreachable store must stop the batch: {other:?}"),
    }
    assert_eq!(w.ledger().size(), size, "nothing was appended");
    assert_eq!(
        w.ledger().cursor("test").unwrap(),
        cursor,
        "the cursor stayed"
    );
    store.put_blocking(sample::manifest(301).into()).unwrap();
    w.options = LedgerOptions::citing(store.clone());
    w.reopen();
    let r = w.ledger().sequence("test", batch).unwrap();
    assert_eq!(r.accepted.len(), 2, "{:?}", r.rejected);
    w.offset += 2;

    // Offline: the verified leaves' manifests, one of them deleted.
    w.ledger = None;
    let report = verify_ledger(&dir, None, &|_, _| {}).expect("ledger verifies");
    let Body::DatasetVersionPublished(cited) = sample::dataset_version(1, 300, vec![]) else {
        unreachable!()
    };
    let everything = tempfile::tempdir().unwrap();
    let full = clew_blobs::BlobStore::local(everything.path()).unwrap();
    for m in (1..=600).map(sample::manifest) {
        full.put_blocking(m.into()).unwrap();
    }
    assert_eq!(
        clew_ledger::verify_content(&report, &full, &|_, _| {}).unwrap(),
        report.cited_manifests.len() as u64
    );
    let hex = clew_blobs::hex_of(&cited.manifest_digest)
        .unwrap()
        .to_string();
    std::fs::remove_file(everything.path().join("sha256").join(hex)).unwrap();
    match clew_ledger::verify_content(&report, &full, &|_, _| {}) {
        Err(clew_ledger::VerifyFailure::Content(problems)) => {
            let named: Vec<u64> = problems.iter().map(|p| p.index).collect();
            assert!(named.contains(&cited_leaf), "{problems:?}");
            assert!(problems
                .iter()
                .all(|p| p.digest == cited.manifest_digest && p.problem.contains("is not in")));
        }
        other => panic!("a missing manifest must be named: {other:?}"),
    }
}

#[test]
fn cosignatures_are_kept_apart_in_the_order_stored_and_checkpoints_keep_the_ledgers_signature_only()
{
    let mut w = World::new();
    let size = w.ledger().size();
    let cp = w.ledger().latest_checkpoint().unwrap();
    let mut news = w.ledger().watch_checkpoints();
    assert_eq!(*news.borrow_and_update(), size);
    // Witnesses' lines (verified by the caller) are stored once each, in order.
    let line = |name: &str| format!("— {name} AAAAAAE=\n").into_bytes();
    w.ledger()
        .store_cosignature(size, "w1.example", &line("w1.example"))
        .unwrap();
    w.ledger()
        .store_cosignature(size, "w1.example", &line("w1.example"))
        .unwrap();
    w.ledger()
        .store_cosignature(size, "w2.example", &line("w2.example"))
        .unwrap();
    assert_eq!(w.ledger().next_cosigned_seq(), 2);
    assert_eq!(
        w.ledger().cosigned_from(0, 10).unwrap(),
        vec![
            (0, size, "w1.example".to_string()),
            (1, size, "w2.example".to_string())
        ]
    );
    assert_eq!(w.ledger().cosigned_from(1, 10).unwrap().len(), 1);
    assert_eq!(w.ledger().cosignatures(size).unwrap().len(), 2);
    // An older size cosigned later does not move a witness's last size back.
    w.ledger()
        .store_cosignature(size - 1, "w1.example", &line("w1.example"))
        .unwrap();
    assert_eq!(
        w.ledger().last_cosigned_by("w1.example").unwrap(),
        Some(size)
    );
    // The checkpoint itself is untouched, and a note carrying other
    // signatures parses to the ledger's own note, byte for byte.
    assert_eq!(w.ledger().latest_checkpoint().unwrap(), cp);
    let mut cosigned = cp.note.clone();
    cosigned.extend(line("w1.example"));
    let vkey = w.ledger().verifier_key().to_string();
    let parsed = clew_ledger::checkpoint::parse_own(&cosigned, &vkey).unwrap();
    assert_eq!(parsed, cp);
    // (a verifier's parse keeps them)
    let verbatim = clew_ledger::checkpoint::parse(&cosigned, &vkey).unwrap();
    assert_eq!(verbatim.note, cosigned);
    // A new checkpoint moves the watch feeders wait on.
    assert!(!news.has_changed().unwrap());
    let r = w.submit(vec![w.sealed_ingest(sample::dataset_version(1, 7, vec![]))]);
    assert!(news.has_changed().unwrap());
    assert_eq!(*news.borrow_and_update(), r.tree_size);
    // They survive a restart (and the log still verifies).
    w.verify();
    assert_eq!(w.ledger().next_cosigned_seq(), 3);
}

/// Rewrites a ledger's leaf and hash groups the way ledgers stored them before
/// groups: each leaf's bytes under its own `l` key, the hashes appending it
/// created under its own `h` key. Returns the number of leaves.
fn rewrite_as_a_leaf_per_key(dir: &std::path::Path) -> u64 {
    use clew_ledger::store::{keys, LeafGroup};
    let db = open_when_released(|| sled::open(dir.join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    let group_first = |k: &[u8]| u64::from_be_bytes(k[1..].try_into().unwrap());
    let mut leaves = 0;
    for kv in tree.scan_prefix([keys::LEAVES]).collect::<Vec<_>>() {
        let (k, v) = kv.unwrap();
        let group = LeafGroup::decode(group_first(&k), &v).unwrap();
        tree.remove(&k).unwrap();
        for (i, leaf) in (group.first..).zip(group.leaves) {
            tree.insert(keys::leaf(i), leaf).unwrap();
            leaves += 1;
        }
    }
    for kv in tree.scan_prefix([keys::HASHES]).collect::<Vec<_>>() {
        let (k, v) = kv.unwrap();
        tree.remove(&k).unwrap();
        let mut at = 0;
        let mut n = group_first(&k);
        while at < v.len() {
            let created = (tlog_tiles::stored_hash_index(0, n + 1)
                - tlog_tiles::stored_hash_index(0, n)) as usize
                * 32;
            tree.insert(keys::hashes_of_leaf(n), &v[at..at + created])
                .unwrap();
            at += created;
            n += 1;
        }
    }
    db.flush().unwrap();
    leaves
}

#[test]
fn a_ledger_stored_a_leaf_per_key_reads_verifies_and_grows_in_groups() {
    use clew_ledger::TileRef;
    let mut w = World::new();
    // 600 versions in batches of 100: groups start with each batch and tile.
    for batch in 0..6u64 {
        w.submit_versions(1000 + batch * 100..1100 + batch * 100);
    }
    let size = w.ledger().size();
    let leaves = w.ledger().leaves(0..size).unwrap();
    let tile = TileRef::Entries {
        index: 1,
        width: 256,
    };
    let entries = w.ledger().read_tile(tile).unwrap();
    let hash_tile = TileRef::Hashes {
        level: 0,
        index: 1,
        width: 256,
    };
    let hashes = w.ledger().read_tile(hash_tile).unwrap();
    let proofs: Vec<_> = [0, 3, 255, 256, 400, size - 1]
        .iter()
        .map(|&i| w.ledger().inclusion_proof(i, size).unwrap())
        .collect();
    let receipt = w.ledger().receipt(300).unwrap();

    // The same ledger as the code before groups would have left it.
    w.ledger = None;
    assert_eq!(rewrite_as_a_leaf_per_key(w.dir.path()), size);
    w.reopen();
    let l = w.ledger();
    assert_eq!(l.size(), size);
    assert_eq!(l.leaves(0..size).unwrap(), leaves);
    assert_eq!(l.leaf(137).unwrap(), leaves[137]);
    assert_eq!(l.read_tile(tile).unwrap(), entries);
    assert_eq!(l.read_tile(hash_tile).unwrap(), hashes);
    for (&i, proof) in [0, 3, 255, 256, 400, size - 1].iter().zip(&proofs) {
        assert_eq!(&l.inclusion_proof(i, size).unwrap(), proof, "leaf {i}");
    }
    assert_eq!(l.receipt(300).unwrap(), receipt);
    w.verify();

    // It goes on growing, in groups, and verifies as a whole.
    w.submit_versions(2000..2300);
    w.verify();
    let grown = w.ledger().size();
    assert_eq!(grown, size + 300);
    let all = w.ledger().leaves(0..grown).unwrap();
    assert_eq!(&all[..size as usize], &leaves[..]);
    for (i, leaf) in all.iter().enumerate().skip(size as usize) {
        assert_eq!(&w.ledger().leaf(i as u64).unwrap(), leaf);
    }
    let p = w.ledger().inclusion_proof(size + 10, grown).unwrap();
    assert!(!p.is_empty());
    w.ledger = None;
    let db = open_when_released(|| sled::open(w.dir.path().join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    let keys_after = tree.scan_prefix([clew_ledger::store::keys::LEAVES]).count() as u64;
    assert!(
        keys_after < size + 300 / 4,
        "{keys_after} leaf keys: the 300 new leaves were not grouped"
    );
}

/// Rewrites a ledger's dedupe index the way ledgers kept it before runs:
/// each event id under its own `e` key. Returns how many it wrote.
fn rewrite_event_runs_as_keys(dir: &std::path::Path) -> u64 {
    use clew_ledger::store::keys;
    let db = open_when_released(|| sled::open(dir.join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    let mut written = 0;
    for kv in tree.scan_prefix([keys::LEAVES]).collect::<Vec<_>>() {
        let (k, v) = kv.unwrap();
        let first = u64::from_be_bytes(k[1..].try_into().unwrap());
        let group = clew_ledger::store::LeafGroup::decode(first, &v).unwrap();
        for (i, leaf) in (first..).zip(group.leaves) {
            let id = clew_events::open(&leaf).unwrap().event.event_id;
            tree.insert(keys::event(&id), &i.to_be_bytes()).unwrap();
            written += 1;
        }
    }
    for kv in tree.scan_prefix([keys::EVENT_RUNS]).collect::<Vec<_>>() {
        tree.remove(kv.unwrap().0).unwrap();
    }
    db.flush().unwrap();
    written
}

fn count_keys(dir: &std::path::Path, prefix: u8) -> usize {
    let db = open_when_released(|| sled::open(dir.join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    tree.scan_prefix([prefix]).count()
}

#[test]
fn a_ledger_keeping_its_dedupe_index_one_key_an_event_verifies_and_is_turned_into_runs_when_opened()
{
    use clew_ledger::store::keys::EVENT_RUNS;
    let mut w = World::new();
    w.submit_versions(1000..1300);
    let size = w.ledger().size();
    let leaves = w.ledger().leaves(0..size).unwrap();
    let ids: Vec<String> = leaves
        .iter()
        .map(|l| clew_events::open(l).unwrap().event.event_id)
        .collect();
    // One run a batch: far fewer keys than events, and no `e` key.
    w.ledger = None;
    let runs = count_keys(w.dir.path(), EVENT_RUNS);
    assert!(runs > 0 && runs < 10, "{runs} runs for {size} leaves");
    assert_eq!(count_keys(w.dir.path(), b'e'), 0);

    // The same ledger as the code before runs would have left it verifies
    // as it is, and opening it turns its keys into runs.
    assert_eq!(rewrite_event_runs_as_keys(w.dir.path()), size);
    verify_ledger(w.dir.path(), None, &|_, _| {}).expect("a ledger before runs verifies");
    w.reopen();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            w.ledger().leaf_index_of(id).unwrap(),
            Some(i as u64),
            "{id}"
        );
    }
    let r = w.submit(vec![leaves[150].clone()]);
    assert_eq!(r.rejected[0].reason, R::Duplicate);
    assert_eq!(r.rejected[0].original_leaf_index, Some(150));
    w.submit_versions(2000..2100);
    w.verify();
    w.ledger = None;
    assert_eq!(
        count_keys(w.dir.path(), b'e'),
        0,
        "every key turned into runs"
    );
    assert!(count_keys(w.dir.path(), EVENT_RUNS) >= 2);
}

#[test]
fn an_event_sharing_a_tag_with_another_is_not_refused_and_a_lost_dedupe_entry_fails_verification() {
    use clew_ledger::event_index::{tag, EventRun};
    use clew_ledger::store::keys;
    let mut w = World::new();
    w.submit_versions(1000..1010);
    let size = w.ledger().size();
    let next = w.sealed_ingest(sample::dataset_version(1, 1010, vec![]));
    let next_id = clew_events::open(&next).unwrap().event.event_id;
    let leaf_4 = clew_events::open(&w.ledger().leaf(4).unwrap())
        .unwrap()
        .event
        .event_id;
    let open_tree = |w: &World| {
        let db = open_when_released(|| sled::open(w.dir.path().join(clew_ledger::LEDGER_DB_DIR)));
        let tree = db.open_tree("ledger").unwrap();
        (db, tree)
    };

    // Leaf 4 indexed under the new event's tag too, as if their ids shared one.
    w.ledger = None;
    {
        let (db, tree) = open_tree(&w);
        let run = EventRun {
            first: 4,
            tags: vec![tag(&next_id)],
        };
        assert!(tree.get(keys::event_run(4)).unwrap().is_none());
        tree.insert(keys::event_run(4), run.encode()).unwrap();
        db.flush().unwrap();
    }
    w.reopen();
    let r = w.submit(vec![next]);
    assert!(
        r.rejected.is_empty(),
        "a shared tag is no duplicate: {:?}",
        r.rejected
    );
    assert_eq!(w.ledger().leaf_index_of(&next_id).unwrap(), Some(size));
    assert_eq!(w.ledger().leaf_index_of(&leaf_4).unwrap(), Some(4));
    w.verify();

    // Leaf 4's own entry lost: its run says another tag for it.
    w.ledger = None;
    {
        let (db, tree) = open_tree(&w);
        let (k, v) = tree
            .range(..=keys::event_run(3))
            .next_back()
            .unwrap()
            .unwrap();
        let mut run = EventRun::decode(&k, &v).unwrap();
        assert!(
            run.first <= 4 && run.first + run.tags.len() as u64 > 4,
            "{run:?}"
        );
        run.tags[(4 - run.first) as usize] = tag("no such event");
        tree.insert(k, run.encode()).unwrap();
        tree.remove(keys::event_run(4)).unwrap();
        db.flush().unwrap();
    }
    let err = verify_ledger(w.dir.path(), None, &|_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("not indexed to this leaf"),
        "{err}"
    );
    assert!(err.to_string().contains(&leaf_4), "{err}");
}

/// Rewrites a ledger's manifest index the way ledgers kept it before runs:
/// each version under `m` + dataset id, a newline and the digest, its value
/// `dataset@version`. Returns how many it wrote.
fn rewrite_manifest_runs_as_keys(dir: &std::path::Path) -> usize {
    use clew_ledger::event_index::TaggedLeaves;
    use clew_ledger::store::keys;
    let db = open_when_released(|| sled::open(dir.join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    let mut written = 0;
    for kv in tree.scan_prefix([keys::MANIFEST_RUNS]).collect::<Vec<_>>() {
        let (k, v) = kv.unwrap();
        for (leaf, _) in TaggedLeaves::decode(&v).unwrap().0 {
            let group = tree
                .range(..=keys::leaf(leaf))
                .next_back()
                .unwrap()
                .unwrap();
            let first = u64::from_be_bytes(group.0[1..].try_into().unwrap());
            let bytes = clew_ledger::store::LeafGroup::decode(first, &group.1)
                .unwrap()
                .into_leaf(leaf)
                .unwrap();
            let Some(Body::DatasetVersionPublished(p)) =
                clew_events::open(&bytes).unwrap().event.body
            else {
                panic!("leaf {leaf} is not a dataset version")
            };
            tree.insert(
                keys::manifest(&p.dataset_id, &p.manifest_digest),
                format!("{}@{}", p.dataset_id, p.version).as_bytes(),
            )
            .unwrap();
            written += 1;
        }
        tree.remove(k).unwrap();
    }
    db.flush().unwrap();
    written
}

#[test]
fn a_ledger_keeping_its_manifest_index_one_key_a_version_refuses_the_same_content_and_is_turned_into_a_run_when_opened(
) {
    use clew_ledger::store::keys::MANIFEST_RUNS;
    let mut w = World::new();
    w.submit_versions(1000..1050);
    w.ledger = None;
    assert!(count_keys(w.dir.path(), MANIFEST_RUNS) >= 2);
    // dataset 1's versions 1.0 and 1000.0..1050.0
    assert_eq!(rewrite_manifest_runs_as_keys(w.dir.path()), 51);
    w.reopen();
    let Body::DatasetVersionPublished(mut again) = sample::dataset_version(1, 1010, vec![]) else {
        unreachable!()
    };
    again.version = "9999.0".into();
    let r = w.submit(vec![w.sealed_ingest(Body::DatasetVersionPublished(again))]);
    assert_eq!(r.rejected[0].reason, R::Duplicate, "{:?}", r.rejected);
    assert!(
        r.rejected[0]
            .detail
            .contains("dataset-version/ds-000001@1010.0"),
        "{}",
        r.rejected[0].detail
    );
    w.submit_versions(2000..2010);
    w.verify();
    w.ledger = None;
    let db = open_when_released(|| sled::open(w.dir.path().join(clew_ledger::LEDGER_DB_DIR)));
    let tree = db.open_tree("ledger").unwrap();
    let left = tree
        .scan_prefix(b"m")
        .filter(|kv| kv.as_ref().unwrap().0.contains(&b'\n'))
        .count();
    assert_eq!(left, 0, "every manifest key turned into a run");
    assert!(tree.scan_prefix([MANIFEST_RUNS]).count() >= 2);
}
