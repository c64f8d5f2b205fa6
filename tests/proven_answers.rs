//! Proof-carrying lineage and impact answers from a running `clew demo`,
//! checked offline by `clew verify-answer`, which refuses every tampering.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::server::Server;
use support::{clew, ok};

fn verify(file: &Path, vkey: &Path) -> (bool, String) {
    let out = clew()
        .arg("verify-answer")
        .arg(file)
        .arg("--vkey")
        .arg(vkey)
        .output()
        .expect("clew runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn walk_for_vkey(dir: &Path) -> std::path::PathBuf {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            return walk_for_vkey(&p);
        }
        if p.extension().is_some_and(|x| x == "vkey") {
            return p;
        }
    }
    panic!("no .vkey under {}", dir.display());
}

async fn get(url: &str, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_carrying_answers_verify_offline_and_any_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let governance = server.demo_token("governance-board");
    let vkey = data.join("keys/ledger.vkey");
    let (status, body) = get(
        &format!(
            "{}/proofs/lineage?subject=deployment/riverside-cxr-triage&direction=upstream&depth=10",
            server.base
        ),
        &governance,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let nodes = doc["nodes"].as_array().unwrap().len();
    let edges = doc["edges"].as_array().unwrap().len();
    assert!(
        nodes >= 8 && edges >= nodes - 1,
        "{nodes} nodes, {edges} edges"
    );
    let file = tmp.path().join("answer.json");
    std::fs::write(&file, &body).unwrap();
    let (good, out) = verify(&file, &vkey);
    assert!(good, "{out}");
    assert!(
        out.contains(&format!("ok: {nodes} nodes, {edges} edges")),
        "{out}"
    );

    // Impact of a dataset version, the same way.
    let (status, impact) = get(
        &format!(
            "{}/proofs/impact?datasetVersion=riverside-cxr@1.0",
            server.base
        ),
        &governance,
    )
    .await;
    assert_eq!(status, 200, "{impact}");
    let impact_file = tmp.path().join("impact.json");
    std::fs::write(&impact_file, &impact).unwrap();
    let (good, out) = verify(&impact_file, &vkey);
    assert!(good, "{out}");

    let tampered = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        edit(&mut d);
        let f = tmp.path().join(format!("{name}.json"));
        std::fs::write(&f, serde_json::to_vec(&d).unwrap()).unwrap();
        let (good, out) = verify(&f, &vkey);
        assert!(!good, "{name}: tampering not detected:\n{out}");
        out
    };
    // Remove a node that an edge needs.
    let out = tampered("node-removed", &|d| {
        let to = d["edges"][0]["to"].clone();
        d["nodes"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["subject"] != to);
    });
    assert!(out.contains("is not among the nodes"), "{out}");
    // Alter fields: an edge's relation, a node's subject, a byte of an envelope.
    let out = tampered("relation", &|d| {
        let e = d["edges"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["relation"] == "used")
            .unwrap();
        e["relation"] = "wasDerivedFrom".into();
    });
    assert!(out.contains("FAILED"), "{out}");
    let out = tampered("subject", &|d| {
        d["nodes"][1]["subject"] = "dataset-version/somewhere-else@1.0".into();
    });
    assert!(out.contains("FAILED"), "{out}");
    let out = tampered("envelope", &|d| {
        use base64::{engine::general_purpose::STANDARD as B64, Engine};
        let e = &mut d["events"][2]["envelope"];
        let mut raw = B64.decode(e.as_str().unwrap()).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 1;
        *e = B64.encode(raw).into();
    });
    assert!(out.contains("inclusion proof"), "{out}");
    // Swap two events' proofs.
    let out = tampered("swapped-proofs", &|d| {
        let events = d["events"].as_array_mut().unwrap();
        let p = events[1]["inclusionProof"].clone();
        events[1]["inclusionProof"] = events[3]["inclusionProof"].clone();
        events[3]["inclusionProof"] = p;
    });
    assert!(out.contains("inclusion proof"), "{out}");
    // Drop a key registration: the signatures no longer check.
    let out = tampered("key-dropped", &|d| {
        d["events"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["leafIndex"] != 0);
    });
    assert!(out.contains("registration is not in the answer"), "{out}");
    // Another ledger's key.
    let other = tmp.path().join("other");
    ok(&[
        "keygen",
        "--name",
        "clew.example.org/ledger",
        "--out",
        &other.to_string_lossy(),
    ]);
    let other_vkey = walk_for_vkey(&other);
    let (good, out) = verify(&file, &other_vkey);
    assert!(!good && out.contains("signature"), "{out}");

    // A researcher without a grant cannot get proofs of what they may not see.
    let researcher = server.demo_token("ada-researcher");
    let (status, body) = get(
        &format!(
            "{}/proofs/lineage?subject=deployment/riverside-cxr-triage&direction=upstream&depth=10",
            server.base
        ),
        &researcher,
    )
    .await;
    assert!(status == 403 || status == 404, "{status}: {body}");
    let (status, _) = get(&format!("{}/proofs/lineage?subject=x", server.base), "bad").await;
    assert_eq!(status, 401);
}
