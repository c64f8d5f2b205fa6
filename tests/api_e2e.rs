//! End to end through the real binary: `clew serve` records events sent as
//! GraphQL mutations, answers searches and lineage, streams them to a
//! graphql-transport-ws subscriber, hands out inclusion proofs that verify
//! offline, and gives the same answers after a restart.

use crate::support;

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde_json::{json, Value};
use support::server::{subscription_refusal_without_token, Api, Server, Subscription};

const RECEIPT_FIELDS: &str =
    "eventId subject leafIndex receipt inclusionProof checkpoint { size rootHash note }";

fn imaging(ct: bool) -> Value {
    json!({
        "modalities": [if ct { "CT" } else { "DX" }],
        "bodyPartsExamined": ["CHEST"],
        "manufacturers": [{"manufacturer": "SIEMENS", "manufacturerModelName": "SOMATOM go.Top"}],
        "numberOfStudies": "1200", "numberOfSeries": "3600", "numberOfInstances": "400000",
        "studyDateFrom": "20210101", "studyDateTo": "20241231",
        "sliceThicknessMinMm": 0.625, "sliceThicknessMaxMm": 1.25,
        "deidentificationMethods": [{"codeValue": "113100", "codingSchemeDesignator": "DCM",
            "codeMeaning": "Basic Application Confidentiality Profile"}],
        "patientIdentityRemoved": true,
        "numberOfPatients": "1000"
    })
}

async fn record(api: &Api, token: &str, mutation: &str, input_type: &str, input: Value) -> Value {
    let q =
        format!("mutation($i: {input_type}!) {{ {mutation}(input: $i) {{ {RECEIPT_FIELDS} }} }}");
    api.ok(token, &q, json!({ "i": input })).await[mutation].clone()
}

/// Verifies a receipt the way an outside party would: the checkpoint's
/// signature with the ledger's public key, then the inclusion proof.
fn verify_offline(receipt: &Value, vkey: &str) {
    let cp = clew_ledger::checkpoint::parse(
        receipt["checkpoint"]["note"]
            .as_str()
            .expect("note")
            .as_bytes(),
        vkey,
    )
    .expect("checkpoint signature verifies with the ledger key");
    let proof: Vec<tlog_tiles::Hash> = receipt["inclusionProof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| {
            let b = B64.decode(h.as_str().expect("b64")).expect("base64");
            tlog_tiles::Hash(b.try_into().expect("32 bytes"))
        })
        .collect();
    // The tlog-proof receipt carries the leaf; clew verify-receipt checks it too.
    let text = receipt["receipt"].as_str().expect("receipt text");
    let verified = clew_ledger::verify_receipt(text, vkey).expect("receipt verifies");
    let index = receipt["leafIndex"].as_u64().expect("leaf index");
    assert_eq!(verified.index, index);
    tlog_tiles::check_record(
        &proof,
        cp.size,
        cp.root,
        index,
        tlog_tiles::record_hash(&verified.leaf),
    )
    .expect("inclusion proof verifies against the signed checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_records_searches_streams_proves_and_survives_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = Server::serve(&data);
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let vkey = std::fs::read_to_string(data.join("keys/ledger.vkey"))
        .expect("ledger.vkey")
        .trim()
        .to_string();

    // No token: 401 everywhere but health; the web pages (GraphiQL among
    // them) send a browser to sign in.
    let (status, body) = api.post(None, "{ me { principal } }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    for path in ["/checkpoint", "/tile/0/000.p/1", "/metrics"] {
        assert_eq!(api.get(None, path).await.0, 401, "{path}");
    }
    assert_eq!(api.get(None, "/healthz").await.0, 200);
    assert_eq!(api.get(None, "/readyz").await.0, 200);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for page in ["/graphql", "/"] {
        let r = no_redirects
            .get(format!("{}{page}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(r.headers()["location"], "/sign-in", "{page}");
    }
    let refusal = subscription_refusal_without_token(&server.base).await;
    assert!(
        refusal
            .as_deref()
            .is_some_and(|r| r.contains("Bearer token")),
        "a subscription without a token must be closed with the reason: {refusal:?}"
    );

    // Admin registers the people, issues their tokens.
    for (id, role) in [("ingest-bot", "ROLE_INGEST"), ("rita", "ROLE_RESEARCHER")] {
        record(
            &api,
            &admin,
            "registerPrincipal",
            "PrincipalInput",
            json!({"principalId": id, "displayName": id, "roles": [role]}),
        )
        .await;
    }
    let issue = |who: &'static str| {
        let api = api.clone();
        let admin = admin.clone();
        async move {
            api.ok(
                &admin,
                "mutation($p: String!) { issueToken(principalId: $p) { token } }",
                json!({ "p": who }),
            )
            .await["issueToken"]["token"]
                .as_str()
                .expect("token")
                .to_string()
        }
    };
    let ingest = issue("ingest-bot").await;
    let rita = issue("rita").await;

    // The researcher subscribes before anything is published.
    let mut sub = Subscription::start(
        &server.base,
        &rita,
        "subscription { events(kinds: [DATASET_VERSION_PUBLISHED]) { leafIndex eventId kind subject actor payload envelope } }",
    )
    .await
    .expect("subscribe");

    record(
        &api,
        &admin,
        "registerSite",
        "SiteInput",
        json!({"siteId": "leeds", "name": "Leeds Teaching Hospitals", "kind": "SITE_KIND_HOSPITAL_TRUST"}),
    )
    .await;
    for (id, access, title) in [
        (
            "chest-ct-open",
            "ACCESS_LEVEL_OPEN",
            "Chest CT pneumonia cohort",
        ),
        (
            "chest-ct-secret",
            "ACCESS_LEVEL_RESTRICTED",
            "Chest CT rare disease registry",
        ),
    ] {
        record(
            &api,
            &ingest,
            "registerDataset",
            "DatasetInput",
            json!({"datasetId": id, "title": title, "description": format!("{title}, thin-slice CT"),
                   "custodianSiteId": "leeds", "accessLevel": access, "licence": "CC-BY-4.0"}),
        )
        .await;
    }
    let mut published = Vec::new();
    let digest = api.upload_manifest(&ingest, "chest ct").await;
    for id in ["chest-ct-open", "chest-ct-secret"] {
        published.push(
            record(
                &api,
                &ingest,
                "publishDatasetVersion",
                "DatasetVersionInput",
                json!({"datasetId": id, "version": "1.0",
                       "manifestDigest": digest,
                       "imagingSummary": imaging(true)}),
            )
            .await,
        );
    }
    let run = record(
        &api,
        &ingest,
        "recordTrainingRun",
        "TrainingRunInput",
        json!({"trainingRunId": "run-1", "modelName": "ct-pneumonia",
               "used": [{"datasetVersionId": "chest-ct-open@1.0", "role": "DATASET_ROLE_TRAIN"},
                        {"datasetVersionId": "chest-ct-secret@1.0", "role": "DATASET_ROLE_VALIDATION"}],
               "codeDigest": "git:4f2a9c1e7b3d", "generatedModelVersionId": "ct-pneumonia-1"}),
    )
    .await;
    assert_eq!(run["subject"], "training-run/run-1");
    record(
        &api,
        &ingest,
        "registerModelVersion",
        "ModelVersionInput",
        json!({"modelVersionId": "ct-pneumonia-1", "modelName": "ct-pneumonia", "version": "1.0.0",
               "artifactDigest": format!("sha256:{}", "cd".repeat(32)), "trainingRunId": "run-1"}),
    )
    .await;

    // The mutation's actor is the authenticated principal.
    let hist = api
        .ok(
            &rita,
            r#"{ history(subject: "dataset-version/chest-ct-open@1.0") { leafIndex actor kind } }"#,
            json!({}),
        )
        .await;
    assert_eq!(hist["history"][0]["actor"], "ingest-bot");
    assert_eq!(hist["history"][0]["kind"], "DATASET_VERSION_PUBLISHED");

    // The subscriber got the open publication, never the restricted one.
    let first = sub.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(
        first["events"]["subject"],
        "dataset-version/chest-ct-open@1.0"
    );
    assert_eq!(first["events"]["actor"], "ingest-bot");
    assert_eq!(first["events"]["leafIndex"], published[0]["leafIndex"]);
    assert!(first["events"]["envelope"].is_string());
    let rest = sub.drain(Duration::from_secs(2)).await;
    assert!(
        rest.is_empty(),
        "restricted publication reached a researcher: {rest:?}"
    );

    // A retried mutation with the same eventId answers with the first receipt.
    let retry_id = "0190f3a4-5b6c-7d8e-9f01-23456789abcd";
    let register_york = format!(
        "mutation($i: SiteInput!) {{ registerSite(input: $i, eventId: \"{retry_id}\") {{ {RECEIPT_FIELDS} }} }}"
    );
    let york = json!({"i": {"siteId": "york-1", "name": "York Hospital", "kind": "SITE_KIND_HOSPITAL_TRUST"}});
    let first = api.ok(&admin, &register_york, york.clone()).await["registerSite"].clone();
    let again = api.ok(&admin, &register_york, york).await["registerSite"].clone();
    assert_eq!(first["eventId"], retry_id);
    assert_eq!(first["leafIndex"], again["leafIndex"], "recorded once");
    verify_offline(&again, &vkey);

    // Wrong input is refused with a code, and recorded nowhere.
    let size_before =
        api.ok(&admin, "{ checkpoint { size } }", json!({})).await["checkpoint"]["size"].clone();
    api.fails(
        &ingest,
        "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }",
        json!({"i": {"datasetId": "x", "title": "t", "custodianSiteId": "leeds", "colour": "red"}}),
        "BAD_USER_INPUT",
    )
    .await;
    let refused = api
        .fails(
            &ingest,
            "mutation($i: TrainingRunInput!) { recordTrainingRun(input: $i) { leafIndex } }",
            json!({"i": {"trainingRunId": "run-2", "modelName": "m",
                   "used": [{"datasetVersionId": "no-such@1.0", "role": "DATASET_ROLE_TRAIN"}],
                   "codeDigest": "git:4f2a9c1e7b3d", "generatedModelVersionId": "m-2"}}),
            "REJECTED",
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["reason"],
        "DANGLING_REFERENCE"
    );
    api.fails(
        &rita,
        "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
        json!({"i": {"siteId": "x", "name": "x", "kind": "SITE_KIND_HOSPITAL_TRUST"}}),
        "FORBIDDEN",
    )
    .await;
    let size_after =
        api.ok(&admin, "{ checkpoint { size } }", json!({})).await["checkpoint"]["size"].clone();
    assert_eq!(
        size_before, size_after,
        "refused input must not be appended"
    );
    let rejected = api
        .ok(&admin, "{ rejected { reason detail } }", json!({}))
        .await;
    let reasons: Vec<&str> = rejected["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        ["DUPLICATE", "DANGLING_REFERENCE"],
        "the operator sees both"
    );

    // Hostile queries are refused with codes; nothing runs.
    let wide = format!(
        "{{ {} }}",
        (0..800)
            .map(|i| format!("a{i}: checkpoint {{ size rootHash note }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    api.fails(&rita, &wide, json!({}), "QUERY_TOO_COMPLEX")
        .await;
    api.fails(
        &rita,
        "{ noSuchField }",
        json!({}),
        "GRAPHQL_VALIDATION_FAILED",
    )
    .await;
    api.fails(
        &rita,
        r#"{ lineage(subject: "site/leeds", direction: UPSTREAM, depth: 1000) { nodes { subject } } }"#,
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
    let huge = "x".repeat(300 * 1024);
    let (status, body) = api
        .post(Some(&rita), "{ me { principal } }", json!({ "pad": huge }))
        .await;
    assert_eq!(status, 413, "an oversized body is refused: {body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    // Search and lineage, as the researcher.
    let search_q = r#"{ search(input: {text: "chest CT"}) { total hits { subject title snippet } facets { name values { value count } } } }"#;
    let lineage_q = r#"{ lineage(subject: "model-version/ct-pneumonia-1", direction: UPSTREAM, depth: 5) { nodes { subject } edges { from relation to } } }"#;
    let found = api.ok(&rita, search_q, json!({})).await;
    let text = found.to_string();
    assert!(text.contains("chest-ct-open@1.0"), "{text}");
    assert!(
        !text.contains("secret") && !text.contains("rare disease"),
        "{text}"
    );
    let lineage = api.ok(&rita, lineage_q, json!({})).await;
    let ltext = lineage.to_string();
    assert!(
        ltext.contains("dataset-version/chest-ct-open@1.0"),
        "{ltext}"
    );
    assert!(!ltext.contains("secret"), "{ltext}");
    let run_attrs = api
        .ok(
            &rita,
            r#"{ trainingRun(id: "run-1") { attributes } }"#,
            json!({}),
        )
        .await;
    assert!(
        run_attrs.to_string().contains("[restricted]") && !run_attrs.to_string().contains("secret"),
        "{run_attrs}"
    );

    // Every receipt verifies offline; so does a proof fetched later.
    for r in &published {
        verify_offline(r, &vkey);
    }
    let event_id = published[0]["eventId"].as_str().expect("id");
    let fetched = api
        .ok(
            &rita,
            "query($e: String!) { inclusionProof(eventId: $e) { leafIndex hashes leaf receipt checkpoint { size note } } }",
            json!({ "e": event_id }),
        )
        .await["inclusionProof"]
        .clone();
    let as_receipt = json!({
        "leafIndex": fetched["leafIndex"], "inclusionProof": fetched["hashes"],
        "receipt": fetched["receipt"], "checkpoint": fetched["checkpoint"],
    });
    verify_offline(&as_receipt, &vkey);
    let receipt_file = tmp.path().join("receipt.txt");
    std::fs::write(&receipt_file, fetched["receipt"].as_str().expect("receipt")).expect("write");
    support::ok(&[
        "verify-receipt",
        &receipt_file.to_string_lossy(),
        "--vkey",
        &data.join("keys/ledger.vkey").to_string_lossy(),
    ]);
    // The restricted event's proof is not handed to the researcher.
    let secret_id = published[1]["eventId"].as_str().expect("id");
    api.fails(
        &rita,
        "query($e: String!) { inclusionProof(eventId: $e) { leafIndex } }",
        json!({ "e": secret_id }),
        "NOT_FOUND",
    )
    .await;
    let consistency = api
        .ok(
            &rita,
            "{ consistencyProof(fromSize: 2) { fromSize toSize hashes } }",
            json!({}),
        )
        .await;
    assert!(consistency["consistencyProof"]["hashes"]
        .as_array()
        .is_some());
    // Checkpoint and tiles endpoints answer with a token.
    let (status, note) = api.get(Some(&rita), "/checkpoint").await;
    assert_eq!(status, 200);
    clew_ledger::checkpoint::parse(&note, &vkey).expect("served checkpoint verifies");
    assert_eq!(api.get(Some(&rita), "/tile/0/000.p/1").await.0, 200);
    assert_eq!(api.get(Some(&rita), "/tile/entries/000.p/1").await.0, 403);
    assert_eq!(api.get(Some(&admin), "/tile/entries/000.p/1").await.0, 200);
    let (status, metrics) = api.get(Some(&admin), "/metrics").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&metrics).contains("clew_events_sequenced_total"));

    // Restart: same answers, tokens still valid.
    let answers_before = (
        api.ok(&rita, search_q, json!({})).await,
        api.ok(&rita, lineage_q, json!({})).await,
        api.ok(&admin, "{ checkpoint { size rootHash } }", json!({}))
            .await,
    );
    // A subscriber still connected must not keep the server from stopping.
    let mut checkpoints =
        Subscription::start(&server.base, &rita, "subscription { checkpoints { size } }")
            .await
            .expect("subscribe");
    let stopping = std::time::Instant::now();
    let status = server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert!(checkpoints.next(Duration::from_secs(1)).await.is_none());
    drop(sub);
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");
    let server = Server::serve(&data);
    let api = Api::new(&server.base);
    let answers_after = (
        api.ok(&rita, search_q, json!({})).await,
        api.ok(&rita, lineage_q, json!({})).await,
        api.ok(&admin, "{ checkpoint { size rootHash } }", json!({}))
            .await,
    );
    assert_eq!(answers_before, answers_after);
    // And it keeps recording where it stopped.
    let next = record(
        &api,
        &admin,
        "registerSite",
        "SiteInput",
        json!({"siteId": "york", "name": "York and Scarborough Teaching Hospitals", "kind": "SITE_KIND_HOSPITAL_TRUST"}),
    )
    .await;
    assert_eq!(
        next["leafIndex"].as_u64(),
        answers_before.2["checkpoint"]["size"].as_u64()
    );
    server.stop();
    support::ok(&["verify", "--data-dir", &data.to_string_lossy()]);
}

/// A data directory from before the authorisation policy registered the
/// API's service key as an admin (which may not sign for anyone else now).
/// Serving it again gives the key the role SERVICE once (a keyless
/// re-registration by the genesis admin), after which mutations record for
/// their callers and the whole history verifies, policy included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_before_the_policy_is_upgraded_on_start() {
    use clew::datadir::{DataDir, ADMIN_PRINCIPAL};
    use clew_events::proto::{self, event::Body, Role};
    use prost::Message;

    let f = support::Fixture::new();
    let dir = DataDir::new(f.data());
    let admin = clew::keyfiles::read_producer(&dir.admin_key()).expect("admin key");
    let name = "test.clew.example/ledger/api";
    let service = clew::keyfiles::generate(&dir.keys(), "api", name)
        .expect("service key")
        .2;
    let old_registration = |roles: Vec<i32>| {
        clew_events::seal(
            &admin,
            ADMIN_PRINCIPAL,
            Body::PrincipalRegistered(proto::PrincipalRegistered {
                principal_id: "clew-api".into(),
                display_name: "Clew API service".into(),
                roles,
                verifier_key: service.verifier().to_text(),
                organisation: String::new(),
            }),
            None,
            None,
        )
        .expect("seal")
        .encode_to_vec()
    };
    let stream = f.path("old.stream");
    clew::stream::append(&stream, &[old_registration(vec![Role::Admin as i32])]).expect("stream");
    f.sequence(&stream, 16);

    let server = Server::serve(&f.data());
    let api = Api::new(&server.base);
    let admin_token = server.admin_token();
    let site = api
        .ok(
            &admin_token,
            "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
            json!({"i": {"siteId": "after-upgrade", "name": "After", "kind": "SITE_KIND_HOSPITAL_TRUST"}}),
        )
        .await;
    assert!(site["registerSite"]["leafIndex"].is_u64(), "{site}");
    let roles = api
        .ok(
            &admin_token,
            r#"{ principal(id: "clew-api") { attributes } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        roles["principal"]["attributes"]["roles"],
        json!(["ROLE_SERVICE"]),
        "{roles}"
    );
    server.stop();
    let verified = support::ok(&["verify", "--data-dir", f.data_str()]);
    assert!(
        verified.contains("every leaf obeys the authorisation policy"),
        "{verified}"
    );
}
