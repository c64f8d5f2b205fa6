//! The ledger through the `clew` command line: key formats, sequencing,
//! receipts, the rejected log, and tamper detection by `clew verify`.

use crate::support;

use clew_events::proto::RejectionReason;
use clew_ledger::store::{self, keys};
use support::{ok, run, Fixture};

#[test]
fn keygen_writes_c2sp_note_keys() {
    let f = Fixture::new();
    let out = f.path("keys");
    let printed = ok(&[
        "keygen",
        "--name",
        "partner.example.org/log",
        "--out",
        out.to_str().unwrap(),
    ]);
    let skey = std::fs::read_to_string(out.join("partner.example.org_log.key")).unwrap();
    let vkey = std::fs::read_to_string(out.join("partner.example.org_log.vkey")).unwrap();
    assert!(
        skey.starts_with("PRIVATE+KEY+partner.example.org/log+"),
        "{skey}"
    );
    assert!(vkey.starts_with("partner.example.org/log+"), "{vkey}");
    assert_eq!(printed.trim(), vkey.trim());
    // The formats are the signed-note ones (also read by Go's sumdb/note).
    let signer = signed_note::StandardSigner::new(skey.trim()).expect("signer key parses");
    let verifier = signed_note::StandardVerifier::new(vkey.trim()).expect("verifier key parses");
    use signed_note::{Signer, Verifier};
    assert_eq!(signer.key_id(), verifier.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("partner.example.org_log.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key is not readable by others");
    }
}

#[test]
fn a_sequenced_stream_verifies_and_yields_checkable_receipts() {
    let f = Fixture::new();
    let p = f.producers(3);
    let mut first = p.registrations();
    first.extend(clew::synthetic::events(&p, 0..700, 720));
    let rest = clew::synthetic::events(&p, 700..720, 720);
    f.put_sample_manifests(720);
    let stream = f.path("events.stream");
    clew::stream::append(&stream, &first).unwrap();
    // A garbled record in the middle is refused and the rest still lands.
    clew::stream::append(&stream, &[b"not an envelope".to_vec()]).unwrap();
    clew::stream::append(&stream, &rest).unwrap();
    let out = f.sequence(&stream, 128);
    let acks = out.lines().filter(|l| l.starts_with("ack\t")).count();
    let rejects: Vec<&str> = out.lines().filter(|l| l.starts_with("reject\t")).collect();
    assert_eq!(acks, first.len() + rest.len());
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].contains("REJECTION_REASON_MALFORMED"),
        "{}",
        rejects[0]
    );

    // Running again consumes nothing twice.
    let again = f.sequence(&stream, 1024);
    assert!(!again.contains("ack\t"), "{again}");

    let verified = ok(&["verify", "--data-dir", f.data_str(), "--vkey", &f.vkey()]);
    assert!(verified.starts_with("ok: 724 leaves"), "{verified}");

    let receipt = ok(&["receipt", "--data-dir", f.data_str(), "--index", "300"]);
    assert!(
        receipt.starts_with("c2sp.org/tlog-proof@v1\nextra "),
        "{receipt}"
    );
    let receipt_file = f.path("300.tlog-proof");
    std::fs::write(&receipt_file, &receipt).unwrap();
    let checked = ok(&[
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--vkey",
        &f.vkey(),
    ]);
    assert!(
        checked.contains("is leaf 300 of the tree of size 724"),
        "{checked}"
    );
    // Any other key refuses it.
    let other = clew_events::ProducerKey::generate("test.clew.example/ledger")
        .unwrap()
        .verifier()
        .to_text();
    assert!(!run(&[
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--vkey",
        &other
    ])
    .status
    .success());

    let rejected = ok(&["rejected", "--data-dir", f.data_str()]);
    let first: serde_json::Value = serde_json::from_str(rejected.lines().next().unwrap()).unwrap();
    assert_eq!(first["reason"], RejectionReason::Malformed.as_str_name());

    // A wrong expected key fails verification.
    let bad = run(&["verify", "--data-dir", f.data_str(), "--vkey", &other]);
    assert!(!bad.status.success());
}

/// Flips one byte of the value stored under `key`, bypassing the ledger.
fn flip_stored_byte(f: &Fixture, key: &[u8], at: usize) {
    flip_stored_byte_where(f, |_| (key.to_vec(), at));
}

/// Flips the byte `locate` finds in the ledger's tree, bypassing the ledger.
fn flip_stored_byte_where(f: &Fixture, locate: impl FnOnce(&sled::Tree) -> (Vec<u8>, usize)) {
    let db = sled::open(f.data().join(clew_ledger::LEDGER_DB_DIR)).unwrap();
    let tree = db.open_tree("ledger").unwrap();
    let (key, at) = locate(&tree);
    let key = &key[..];
    let mut value = tree.get(key).unwrap().expect("key exists").to_vec();
    let at = at.min(value.len() - 1);
    value[at] ^= 0x01;
    tree.insert(key, value).unwrap();
    db.flush().unwrap();
}

fn tampered_fixture() -> Fixture {
    let f = Fixture::new();
    let (stream, _) = f.write_stream("events.stream", 2, 400);
    f.sequence(&stream, 64);
    ok(&["verify", "--data-dir", f.data_str()]);
    f
}

fn verify_fails_naming(f: &Fixture, needle: &str) {
    let out = run(&["verify", "--data-dir", f.data_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "verify should fail; stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn verify_reports_a_flipped_leaf_byte() {
    let f = tampered_fixture();
    // A byte in the middle of the stored group holding leaf 137: leaves are
    // kept compressed with a checksum, so the damage names the whole group.
    let mut group = None;
    flip_stored_byte_where(&f, |tree| {
        let key = store::locate_leaf(tree, 137)
            .unwrap()
            .expect("leaf 137 is stored");
        let len = tree.get(key).unwrap().expect("the group is stored").len();
        group = Some(u64::from_be_bytes(key[1..].try_into().unwrap()));
        (key.to_vec(), len / 2)
    });
    let first = group.expect("the group was found");
    assert!(first <= 137);
    verify_fails_naming(&f, &format!("the leaf group at leaf {first}"));
}

#[test]
fn verify_reports_a_flipped_stored_hash_byte() {
    let f = tampered_fixture();
    // Leaf 255 created hashes at levels 0..=8; flip one in the level-3 hash
    // (node 31), wherever its hash group stores it.
    flip_stored_byte_where(&f, |tree| {
        let index = tlog_tiles::stored_hash_index(3, 31);
        let at = store::locate_stored_hash(tree, index)
            .unwrap()
            .expect("the hash is stored");
        (at.key.to_vec(), at.bytes.start + 7)
    });
    verify_fails_naming(&f, "stored hash");
    verify_fails_naming(&f, "level 3, node 31");
}

#[test]
fn verify_reports_a_flipped_checkpoint_byte() {
    let f = tampered_fixture();
    let db_sizes = {
        let db = sled::open(f.data().join(clew_ledger::LEDGER_DB_DIR)).unwrap();
        let tree = db.open_tree("ledger").unwrap();
        let sizes: Vec<Vec<u8>> = tree
            .scan_prefix(keys::CHECKPOINTS)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        sizes
    };
    let middle = &db_sizes[db_sizes.len() / 2];
    let size = u64::from_be_bytes(middle[1..].try_into().unwrap());
    // Byte 40 lies in the base64 root hash line of the note.
    flip_stored_byte(&f, middle, 40);
    verify_fails_naming(&f, &format!("checkpoint at tree size {size}"));
}
