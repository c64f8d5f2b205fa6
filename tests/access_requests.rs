//! Access requests, projects and the data-use register through the real
//! binary over the demo scenario: a request's whole life through the API,
//! separation of duties refused with its reason code, project membership
//! giving and taking visibility the moment its event lands (search, facets,
//! lineage, subscriptions), a grant lapsing with no event, the audit answer
//! verified offline and caught when tampered with, the public register, and
//! the same answers after a restart and after `clew reindex`.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::server::{Api, Server, Subscription};

const RESTRICTED_TITLE: &str = "National chest CT collection";
const WINDOW: &str = r#"from: "2020-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z""#;

async fn register(api: &Api, admin: &str, id: &str, role: &str, organisation: &str) -> String {
    api.ok(
        admin,
        "mutation($i: PrincipalInput!) { registerPrincipal(input: $i) { leafIndex } }",
        json!({"i": {"principalId": id, "displayName": id, "roles": [role], "organisation": organisation}}),
    )
    .await;
    api.ok(
        admin,
        "mutation($p: String!) { issueToken(principalId: $p) { token } }",
        json!({ "p": id }),
    )
    .await["issueToken"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// What a caller can find of the restricted national CT collection.
async fn sees_restricted_ct(api: &Api, token: &str) -> bool {
    let d = api
        .ok(
            token,
            r#"{ dataset(id: "nccid-ct-deid") { label }
                 search(input: {text: "chest CT", limit: 200}) { hits { subject title } facets { name values { value count } } } }"#,
            json!({}),
        )
        .await;
    let lookup = !d["dataset"].is_null();
    let search = d["search"]["hits"].to_string().contains("nccid-ct-deid");
    // Lineage of a hidden version answers as if it did not exist.
    let (_, l) = api
        .post(
            Some(token),
            r#"{ lineage(subject: "dataset-version/nccid-ct-deid@1.0", direction: DOWNSTREAM, depth: 3) { nodes { subject } } }"#,
            json!({}),
        )
        .await;
    let lineage = l["data"]["lineage"]["nodes"]
        .to_string()
        .contains("nccid-ct-deid");
    if !lineage {
        assert_eq!(l["errors"][0]["extensions"]["code"], "NOT_FOUND", "{l}");
    }
    assert_eq!(lookup, search, "lookup and search agree: {d}");
    assert_eq!(lookup, lineage, "lookup and lineage agree: {d}");
    lookup
}

async fn review(api: &Api, token: &str, id: &str, decision: &str, extra: Value) -> Value {
    let mut input =
        json!({"requestId": id, "decision": decision, "reason": "reviewed by the committee"});
    if let (Some(i), Value::Object(more)) = (input.as_object_mut(), extra) {
        i.extend(more);
    }
    let (status, body) = api
        .post(
            Some(token),
            "mutation($i: AccessReviewInput!) { reviewAccessRequest(input: $i) { leafIndex } }",
            json!({ "i": input }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn terms(dataset: &str, project: Option<&str>, days: u32) -> Value {
    let mut t = json!({"datasetIds": [dataset], "purpose": "benchmark a nodule detector", "requestedDays": days,
                       "dataUseAgreement": {"agreementId": "nccid-data-access-agreement", "version": "4.0"}});
    if let Some(p) = project {
        t["projectId"] = json!(p);
    }
    t
}

fn refused_with(body: &Value, reason: &str, words: &str) {
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "REJECTED",
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("({reason})")) && message.contains(words),
        "expected {reason} naming {words:?}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lives_its_whole_life_and_membership_and_expiry_decide_visibility() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let ada = server.demo_token("ada-researcher");
    let board = server.demo_token("governance-board");
    let bo = register(
        &api,
        &admin,
        "bo-researcher",
        "ROLE_RESEARCHER",
        "University of Southmoor",
    )
    .await;
    let northgate_ig = register(&api, &admin, "northgate-ig", "ROLE_GOVERNANCE", "northgate").await;
    let riverside_ig = register(&api, &admin, "riverside-ig", "ROLE_GOVERNANCE", "riverside").await;

    // ------------------------------------------------------------ membership
    assert!(
        !sees_restricted_ct(&api, &bo).await,
        "bo starts outside the project"
    );
    assert!(
        sees_restricted_ct(&api, &ada).await,
        "ada's project holds the grant"
    );
    let facets_before = api
        .ok(
            &bo,
            r#"{ search(input: {limit: 1}) { total facets { name values { value count } } } }"#,
            json!({}),
        )
        .await;
    let mut bo_stream = Subscription::start(
        &server.base,
        &bo,
        r#"subscription { events(dataset: "nccid-ct-deid") { subject payload } }"#,
    )
    .await
    .expect("subscribe");
    // Only the lead (or governance) changes the members.
    let (_, refused) = api
        .post(
            Some(&bo),
            "mutation($i: ProjectMemberInput!) { addProjectMember(input: $i) { leafIndex } }",
            json!({"i": {"projectId": "img-2026-117", "principalId": "bo-researcher"}}),
        )
        .await;
    refused_with(
        &refused,
        "UNAUTHORIZED",
        "only the lead of project/img-2026-117",
    );
    api.ok(
        &ada,
        "mutation($i: ProjectMemberInput!) { addProjectMember(input: $i) { leafIndex } }",
        json!({"i": {"projectId": "img-2026-117", "principalId": "bo-researcher"}}),
    )
    .await;
    // The moment the event lands, the project's grant reaches bo.
    assert!(
        sees_restricted_ct(&api, &bo).await,
        "a member sees what the project may"
    );
    let facets_member = api
        .ok(
            &bo,
            r#"{ search(input: {limit: 1}) { total facets { name values { value count } } } }"#,
            json!({}),
        )
        .await;
    assert!(
        facets_member["search"]["total"].as_u64() > facets_before["search"]["total"].as_u64(),
        "facet counts grow with the grant: {facets_before} -> {facets_member}"
    );
    let me = api
        .ok(&bo, "{ me { projects grantedDatasets } }", json!({}))
        .await;
    assert_eq!(me["me"]["projects"], json!(["img-2026-117"]));
    assert_eq!(me["me"]["grantedDatasets"], json!(["nccid-ct-deid"]));
    let publish = |version: &str, digest: &str, notes: &str| {
        json!({"i": {"datasetId": "nccid-ct-deid", "version": version, "manifestDigest": digest,
                     "imagingSummary": {"modalities": ["CT"]}, "releaseNotes": notes}})
    };
    let q = "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }";
    api.ok(
        &board,
        q,
        publish(
            "2.0",
            &api.upload_manifest(&board, "ct 2.0").await,
            "release while bo is a member",
        ),
    )
    .await;
    let got = bo_stream.drain(Duration::from_secs(2)).await;
    assert!(
        got.iter()
            .any(|e| e.to_string().contains("release while bo is a member")),
        "a member's subscription delivers the project's data: {got:?}"
    );
    api.ok(
        &ada,
        "mutation($i: ProjectMemberRemovalInput!) { removeProjectMember(input: $i) { leafIndex } }",
        json!({"i": {"projectId": "img-2026-117", "principalId": "bo-researcher", "reason": "left the study"}}),
    )
    .await;
    assert!(
        !sees_restricted_ct(&api, &bo).await,
        "leaving the project takes it away"
    );
    let facets_after = api
        .ok(
            &bo,
            r#"{ search(input: {limit: 1}) { total facets { name values { value count } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(facets_after, facets_before, "counts as before joining");
    api.ok(
        &board,
        q,
        publish(
            "3.0",
            &api.upload_manifest(&board, "ct 3.0").await,
            "release after bo left",
        ),
    )
    .await;
    let got = bo_stream.drain(Duration::from_secs(2)).await;
    assert!(
        got.iter()
            .all(|e| !e.to_string().contains("release after bo left")),
        "a former member's subscription stops delivering: {got:?}"
    );

    // ------------------------------------------------------ a request's life
    let mut board_stream = Subscription::start(
        &server.base,
        &board,
        r#"subscription { events(kinds: [ACCESS_REQUEST_SUBMITTED, ACCESS_REQUEST_RESUBMITTED, ACCESS_REQUEST_REVIEWED]) { subject actor } }"#,
    )
    .await
    .expect("subscribe");
    let mut ada_stream = Subscription::start(
        &server.base,
        &ada,
        r#"subscription { events(kinds: [ACCESS_REQUEST_SUBMITTED]) { subject } }"#,
    )
    .await
    .expect("subscribe");
    api.ok(
        &bo,
        "mutation($i: AccessRequestInput!) { submitAccessRequest(input: $i) { leafIndex } }",
        json!({"i": {"requestId": "req-bo-1", "terms": terms("northgate-ct", None, 90)}}),
    )
    .await;
    let queued = board_stream
        .next(Duration::from_secs(5))
        .await
        .expect("live");
    assert_eq!(queued["events"]["subject"], "access-request/req-bo-1");
    assert!(
        ada_stream.drain(Duration::from_secs(1)).await.is_empty(),
        "someone else's request is not streamed to ada"
    );
    let queue = api
        .ok(&board, "{ accessReviewQueue { id state } }", json!({}))
        .await;
    assert_eq!(
        queue["accessReviewQueue"],
        json!([{"id": "req-bo-1", "state": "SUBMITTED"}])
    );
    // Only the custodian site's or national governance reviews restricted data.
    refused_with(
        &review(&api, &riverside_ig, "req-bo-1", "UNDER_REVIEW", json!({})).await,
        "OUT_OF_SCOPE",
        "dataset/northgate-ct is held by site/northgate",
    );
    assert!(
        review(&api, &northgate_ig, "req-bo-1", "UNDER_REVIEW", json!({})).await["errors"]
            .is_null()
    );
    assert!(review(
        &api,
        &northgate_ig,
        "req-bo-1",
        "CHANGES_REQUESTED",
        json!({})
    )
    .await["errors"]
        .is_null());
    refused_with(
        &review(&api, &northgate_ig, "req-bo-1", "APPROVED", json!({})).await,
        "INVALID_TRANSITION",
        "is CHANGES_REQUESTED and cannot become APPROVED",
    );
    api.ok(
        &bo,
        "mutation($i: AccessResubmissionInput!) { resubmitAccessRequest(input: $i) { leafIndex } }",
        json!({"i": {"requestId": "req-bo-1", "terms": terms("northgate-ct", None, 90), "response": "the detector and its outputs are described"}}),
    )
    .await;
    // Approved with conditions, for a few seconds: it lapses with no event.
    let expires = chrono_in(4);
    assert!(review(
        &api,
        &northgate_ig,
        "req-bo-1",
        "APPROVED_WITH_CONDITIONS",
        json!({"conditions": ["results stay inside the TRE"], "expiresAt": expires}),
    )
    .await["errors"]
        .is_null());
    let steps: Vec<Value> = board_stream.drain(Duration::from_secs(2)).await;
    assert!(
        steps.len() >= 4,
        "governance's queue updates live: {steps:?}"
    );
    let mine = api
        .ok(&bo, "{ myAccessRequests { id state grantIds transitions { state actor reason conditions } } me { grantedDatasets } }", json!({}))
        .await;
    let states: Vec<&str> = mine["myAccessRequests"][0]["transitions"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(
        states,
        [
            "SUBMITTED",
            "UNDER_REVIEW",
            "CHANGES_REQUESTED",
            "RESUBMITTED",
            "APPROVED_WITH_CONDITIONS"
        ]
    );
    assert_eq!(mine["me"]["grantedDatasets"], json!(["northgate-ct"]));
    let bo_sees_northgate = |api: &Api| {
        let api = Api::new(&api.base);
        let bo = bo.clone();
        async move {
            !api.ok(
                &bo,
                r#"{ dataset(id: "northgate-ct") { label } }"#,
                json!({}),
            )
            .await["dataset"]
                .is_null()
        }
    };
    assert!(bo_sees_northgate(&api).await);
    // Withdrawn after approval: refused, the approval stands.
    let (_, late) = api
        .post(
            Some(&bo),
            "mutation($i: AccessWithdrawalInput!) { withdrawAccessRequest(input: $i) { leafIndex } }",
            json!({"i": {"requestId": "req-bo-1", "reason": "changed my mind"}}),
        )
        .await;
    refused_with(&late, "INVALID_TRANSITION", "cannot become WITHDRAWN");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !bo_sees_northgate(&api).await,
        "an expired grant gives nothing, with no event written"
    );
    let me = api.ok(&bo, "{ me { grantedDatasets } }", json!({})).await;
    assert_eq!(me["me"]["grantedDatasets"], json!([]));

    // A denied request is never approved later.
    api.ok(
        &bo,
        "mutation($i: AccessRequestInput!) { submitAccessRequest(input: $i) { leafIndex } }",
        json!({"i": {"requestId": "req-bo-2", "terms": terms("northgate-cxr", None, 30)}}),
    )
    .await;
    assert!(review(&api, &board, "req-bo-2", "DENIED", json!({})).await["errors"].is_null());
    refused_with(
        &review(&api, &board, "req-bo-2", "APPROVED", json!({})).await,
        "INVALID_TRANSITION",
        "asking again is a new request",
    );

    // ---------------------------------------------------------------- audit
    let audit_q = format!(
        r#"{{ datasetAccess(datasetId: "northgate-ct", {WINDOW}) {{ holdersNow {{ principal }} heldBetween {{ principal grantId requestId from until }} requests {{ id state }} }} }}"#
    );
    let audit = api.ok(&board, &audit_q, json!({})).await;
    assert_eq!(
        audit["datasetAccess"]["holdersNow"],
        json!([]),
        "expired: {audit}"
    );
    assert_eq!(
        audit["datasetAccess"]["heldBetween"][0]["principal"],
        "bo-researcher"
    );
    assert_eq!(
        audit["datasetAccess"]["heldBetween"][0]["requestId"],
        "req-bo-1"
    );
    let (status, proof) = api
        .get(
            Some(&board),
            "/proofs/access?dataset=northgate-ct&from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(status, 200);
    let doc_path = tmp.path().join("audit.json");
    std::fs::write(&doc_path, &proof).expect("write");
    let vkey = data.join("keys/ledger.vkey");
    let ok = support::run(&[
        "verify-answer",
        "--vkey",
        &vkey.to_string_lossy(),
        &doc_path.to_string_lossy(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("1 access holdings of dataset/northgate-ct")
    );
    // Tampered: a longer access than the events give, a holder left out.
    let mut doc: Value = serde_json::from_slice(&proof).expect("JSON");
    doc["holders"][0]["until"] = json!("2099-01-01T00:00:00+00:00");
    let longer = tmp.path().join("longer.json");
    std::fs::write(&longer, doc.to_string()).expect("write");
    let bad = support::run(&[
        "verify-answer",
        "--vkey",
        &vkey.to_string_lossy(),
        &longer.to_string_lossy(),
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("principal/bo-researcher held access through grant"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let mut doc: Value = serde_json::from_slice(&proof).expect("JSON");
    doc["holders"] = json!([]);
    let hidden = tmp.path().join("hidden.json");
    std::fs::write(&hidden, doc.to_string()).expect("write");
    let bad = support::run(&[
        "verify-answer",
        "--vkey",
        &vkey.to_string_lossy(),
        &hidden.to_string_lossy(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("which the answer leaves out"));

    // ------------------------------------------------------ public register
    let (status, public) = api.get(None, "/data-uses").await;
    assert_eq!(status, 200);
    let public = String::from_utf8_lossy(&public).to_string();
    assert!(
        public.contains("ILD progression from serial chest CT"),
        "{public}"
    );
    assert!(public.contains("[restricted]"), "{public}");
    for hidden in ["nccid-ct-deid", "northgate-ct", RESTRICTED_TITLE] {
        assert!(
            !public.contains(hidden),
            "the public register names {hidden}: {public}"
        );
    }
    let (status, _) = api.get(Some("clew_not-a-token"), "/data-uses").await;
    assert_eq!(status, 401, "a bad token is refused, not read as none");

    // ------------------------------------------- restart, then reindex: same
    let answers = |api: Api, bo: String, board: String, audit_q: String| async move {
        let mine = api
            .ok(
                &bo,
                "{ myAccessRequests { id state grantIds transitions { state actor leafIndex } } }",
                json!({}),
            )
            .await;
        let audit = api.ok(&board, &audit_q, json!({})).await;
        let register = api
            .ok(
                &board,
                "{ dataUseRegister { requestId project datasets status expiresAt } }",
                json!({}),
            )
            .await;
        let (_, public) = api.get(None, "/data-uses").await;
        (mine, audit, register, public)
    };
    let before = answers(
        Api::new(&server.base),
        bo.clone(),
        board.clone(),
        audit_q.clone(),
    )
    .await;
    server.stop();
    let server = Server::serve(&data);
    let again = answers(
        Api::new(&server.base),
        bo.clone(),
        board.clone(),
        audit_q.clone(),
    )
    .await;
    assert_eq!(again, before, "a restart answers the same");
    server.stop();
    let out = support::run(&["reindex", "--data-dir", &data.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::serve(&data);
    let rebuilt = answers(Api::new(&server.base), bo, board, audit_q).await;
    assert_eq!(rebuilt, before, "a rebuilt catalogue answers the same");
    server.stop();
}

/// RFC 3339 time `secs` from now.
fn chrono_in(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    clew_ledger::audit::rfc3339(now + secs)
}
