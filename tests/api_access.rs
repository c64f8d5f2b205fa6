//! The access matrix, through the real binary over the demo scenario: every
//! query, mutation and subscription × every role. Restricted and controlled
//! datasets must never show — not in results, facet counts, snippets,
//! lineage, history, proofs or subscriptions — to a role that may not see
//! them; mutations are allowed exactly to the roles that may record them.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use clew_events::proto::{self, event::Body};
use prost::Message;
use serde_json::{json, Value};
use support::server::{Api, Server, Subscription};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Admin,
    Governance,
    /// A researcher holding a grant for the restricted CT collection.
    GrantedResearcher,
    /// A researcher without grants.
    Researcher,
    Ingest,
    Partner,
}

const EVERYONE: [Who; 6] = [
    Who::Admin,
    Who::Governance,
    Who::GrantedResearcher,
    Who::Researcher,
    Who::Ingest,
    Who::Partner,
];

const TRUSTS: [(&str, &str); 5] = [
    ("northgate", "Northgate"),
    ("riverside", "Riverside"),
    ("st-aldhelm", "St Aldhelm's"),
    ("moorland", "Moorland"),
    ("harbourside", "Harbourside"),
];

impl Who {
    fn sees_all(self) -> bool {
        matches!(self, Who::Admin | Who::Governance)
    }

    /// Datasets this caller may not see, with text that only they carry.
    fn hidden(self) -> Vec<(String, Vec<String>)> {
        if self.sees_all() {
            return vec![];
        }
        let mut out = Vec::new();
        for (site, short) in TRUSTS {
            out.push((
                format!("{site}-cxr"),
                vec![
                    format!("{short} chest X-ray collection"),
                    "pseudonymised at the trust gateway".into(),
                    "Burned-in patient names".into(),
                ],
            ));
            out.push((
                format!("{site}-ct"),
                vec![format!("{short} chest CT collection")],
            ));
        }
        out.push(("nccid-cxr-test".into(), vec!["held-back test split".into()]));
        if self != Who::GrantedResearcher {
            out.push((
                "nccid-ct-deid".into(),
                vec![
                    "National chest CT collection".into(),
                    "rare-disease re-identification risk".into(),
                ],
            ));
        }
        out
    }

    /// Ids of hidden datasets this caller itself asked for in an access
    /// request (the demo's partner asked for the Northgate CT collection and
    /// was denied): its own request echoes the id it typed, as it would for an
    /// id that does not exist, so the echo tells it nothing. Every other trace
    /// of the dataset (title, description, versions) stays hidden.
    fn asked_for(self) -> &'static [&'static str] {
        match self {
            Who::Partner => &["northgate-ct"],
            _ => &[],
        }
    }

    /// Fails if `answer` carries anything of a dataset this caller may not see.
    fn assert_nothing_hidden(self, what: &str, answer: &Value) {
        let text = answer.to_string();
        for (id, texts) in self.hidden() {
            let ids = if self.asked_for().contains(&id.as_str()) {
                vec![format!("{id}@")]
            } else {
                vec![format!("{id}\\\""), format!("{id}\""), format!("{id}@")]
            };
            for marker in ids.into_iter().chain(texts) {
                assert!(
                    !text.contains(&marker),
                    "{self:?} must not see {id} but {what} shows {marker:?}: {text}"
                );
            }
        }
    }

    fn tag(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// The principal behind this caller's token.
    fn principal(self) -> &'static str {
        match self {
            Who::Admin => "admin",
            Who::Governance => "governance-board",
            Who::GrantedResearcher => "ada-researcher",
            Who::Researcher => "ben-researcher",
            Who::Ingest => "model-team",
            Who::Partner => "eucaim-partner",
        }
    }
}

/// What a query is expected to do for a caller.
enum Expect {
    Ok,
    Code(&'static str),
}

async fn ask(api: &Api, token: &str, query: &str, vars: Value, expect: Expect) -> Value {
    let (status, body) = api.post(Some(token), query, vars).await;
    assert_eq!(status, 200, "{query}: {body}");
    match expect {
        Expect::Ok => assert!(body.get("errors").is_none(), "{query}: {body}"),
        Expect::Code(code) => assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{query}: expected {code}: {body}"
        ),
    }
    body
}

fn forbidden_or_ok(allowed: bool) -> Expect {
    if allowed {
        Expect::Ok
    } else {
        Expect::Code("FORBIDDEN")
    }
}

/// One demo server per case, with a token for every kind of caller and the
/// ids the cases ask about.
struct World {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    server: Server,
    api: Api,
    admin: String,
    tokens: BTreeMap<Who, String>,
    withdrawal_event: String,
    deid_event: String,
    all_versions: u64,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = Server::demo(&data);
    let api = Api::new(&server.base);
    let admin = server.admin_token();

    // A researcher without grants, registered and given a token by the admin.
    ask(
        &api,
        &admin,
        "mutation($i: PrincipalInput!) { registerPrincipal(input: $i) { leafIndex } }",
        json!({"i": {"principalId": "ben-researcher", "displayName": "Ben", "roles": ["ROLE_RESEARCHER"]}}),
        Expect::Ok,
    )
    .await;
    let ben = ask(
        &api,
        &admin,
        r#"mutation { issueToken(principalId: "ben-researcher") { token } }"#,
        json!({}),
        Expect::Ok,
    )
    .await["data"]["issueToken"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let tokens: BTreeMap<Who, String> = [
        (Who::Admin, admin.clone()),
        (Who::Governance, server.demo_token("governance-board")),
        (Who::GrantedResearcher, server.demo_token("ada-researcher")),
        (Who::Researcher, ben),
        (Who::Ingest, server.demo_token("model-team")),
        (Who::Partner, server.demo_token("eucaim-partner")),
    ]
    .into_iter()
    .collect();

    // Event ids governance can look up, to ask others for their proofs.
    let gov = &tokens[&Who::Governance];
    let withdrawal_event = ask(
        &api,
        gov,
        r#"{ history(subject: "dataset-version/northgate-cxr@1.0") { eventId kind } }"#,
        json!({}),
        Expect::Ok,
    )
    .await["data"]["history"][1]["eventId"]
        .as_str()
        .expect("withdrawal event")
        .to_string();
    let deid_event = ask(
        &api,
        gov,
        r#"{ transform(id: "deid-cxr-2026-01") { createdBy { eventId } } }"#,
        json!({}),
        Expect::Ok,
    )
    .await["data"]["transform"]["createdBy"]["eventId"]
        .as_str()
        .expect("transform event")
        .to_string();
    let all_versions = ask(
        &api,
        gov,
        "{ search(input: {includeWithdrawn: true, limit: 200}) { total } }",
        json!({}),
        Expect::Ok,
    )
    .await["data"]["search"]["total"]
        .as_u64()
        .expect("total");

    World {
        _tmp: tmp,
        data,
        server,
        api,
        admin,
        tokens,
        withdrawal_event,
        deid_event,
        all_versions,
    }
}

async fn size_of(api: &Api, admin: &str) -> u64 {
    ask(api, admin, "{ checkpoint { size } }", json!({}), Expect::Ok).await["data"]["checkpoint"]
        ["size"]
        .as_u64()
        .expect("size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_sees_only_what_it_may_through_every_query() {
    let World {
        _tmp,
        server,
        api,
        tokens,
        withdrawal_event,
        deid_event,
        all_versions,
        ..
    } = world().await;
    // ---------------------------------------------------------------- queries
    for who in EVERYONE {
        let t = &tokens[&who];
        let sees_all = who.sees_all();
        let mut answers: Vec<(&str, Value)> = Vec::new();

        let me = ask(
            &api,
            t,
            "{ me { principal roles grantedDatasets } }",
            json!({}),
            Expect::Ok,
        )
        .await;
        answers.push(("me", me));

        // Search: totals and facet counts only over what the caller may see.
        let all = ask(
            &api,
            t,
            "{ search(input: {includeWithdrawn: true, limit: 200}) { total hits { subject title snippet titleSnippet entity { attributes } } facets { name values { value count } } } }",
            json!({}),
            Expect::Ok,
        )
        .await;
        let hidden_versions = who.hidden().len() as u64;
        assert_eq!(
            all["data"]["search"]["total"].as_u64(),
            Some(all_versions - hidden_versions),
            "{who:?}: search total"
        );
        let access_facet: BTreeMap<String, u64> = all["data"]["search"]["facets"]
            .as_array()
            .expect("facets")
            .iter()
            .filter(|f| f["name"] == "access_level")
            .flat_map(|f| f["values"].as_array().cloned().unwrap_or_default())
            .map(|v| {
                (
                    v["value"].as_str().unwrap_or("").to_string(),
                    v["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            access_facet.contains_key("controlled"),
            sees_all,
            "{who:?}: {access_facet:?}"
        );
        let restricted = access_facet.get("restricted").copied().unwrap_or(0);
        let expected_restricted = match who {
            Who::Admin | Who::Governance => 2,
            Who::GrantedResearcher => 1,
            _ => 0,
        };
        assert_eq!(
            restricted, expected_restricted,
            "{who:?}: restricted facet count"
        );
        answers.push(("search", all));
        for text in [
            "chest",
            "\\\"chest CT\\\"",
            "northgate",
            "held-back",
            "rare disease",
        ] {
            let q = format!(
                "{{ search(input: {{text: \"{text}\", includeWithdrawn: true}}) {{ total hits {{ subject snippet titleSnippet }} facets {{ name values {{ value count }} }} }} }}"
            );
            answers.push(("search text", ask(&api, t, &q, json!({}), Expect::Ok).await));
        }
        let only_restricted = ask(
            &api,
            t,
            r#"{ search(input: {filters: [{facet: "access_level", values: ["restricted", "controlled"]}], includeWithdrawn: true}) { total } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        assert_eq!(
            only_restricted["data"]["search"]["total"].as_u64(),
            Some(match who {
                Who::Admin | Who::Governance => 12,
                Who::GrantedResearcher => 1,
                _ => 0,
            }),
            "{who:?}: restricted + controlled results"
        );

        // Lookups of hidden entities answer null; visible ones are redacted.
        for subject in [
            "dataset/northgate-cxr",
            "dataset-version/northgate-cxr@1.0",
            "dataset-version/nccid-cxr-test@1.0",
            "dataset/nccid-ct-deid",
        ] {
            let a = ask(
                &api,
                t,
                "query($s: String!) { entity(subject: $s) { subject label attributes endedDetail history { payload } } }",
                json!({"s": subject}),
                Expect::Ok,
            )
            .await;
            let visible =
                sees_all || (who == Who::GrantedResearcher && subject.contains("nccid-ct-deid"));
            assert_eq!(
                !a["data"]["entity"].is_null(),
                visible,
                "{who:?} {subject}: {a}"
            );
            answers.push(("entity", a));
        }
        let typed = ask(
            &api,
            t,
            r#"{
              site(id: "northgate") { label attributes downstream { from to } }
              dataset(id: "riverside-cxr") { label }
              datasetVersion(id: "riverside-ct@1.0") { label }
              transform(id: "deid-cxr-2026-01") { label attributes upstream { to } downstream { from } history { payload } }
              trainingRun(id: "train-cxr-2026-04") { attributes upstream { to role } }
              modelVersion(id: "cxr-pneumonia-triage-1.1") { attributes affected affectedBy { withdrawn } }
              validation(id: "val-heldback-1.1") { attributes status }
              deployment(id: "riverside-cxr-triage") { status affected affectedBy { withdrawn } }
              principal(id: "ada-researcher") { label attributes }
              accessGrant(id: "grant-ada-ct-2026") { attributes }
            }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        let d = &typed["data"];
        assert_eq!(d["dataset"].is_null(), !sees_all, "{who:?}: {d}");
        assert_eq!(d["datasetVersion"].is_null(), !sees_all, "{who:?}: {d}");
        assert!(
            !d["transform"].is_null() && !d["deployment"].is_null(),
            "{who:?}: {d}"
        );
        assert_eq!(d["deployment"]["affected"], true);
        assert_eq!(d["deployment"]["status"], "LIVE");
        let ada_visible = sees_all || who == Who::GrantedResearcher;
        assert_eq!(!d["principal"].is_null(), ada_visible, "{who:?}: principal");
        assert_eq!(!d["accessGrant"].is_null(), ada_visible, "{who:?}: grant");
        if !sees_all {
            assert!(
                d["transform"]["attributes"]
                    .to_string()
                    .contains("[restricted]"),
                "{who:?}: the transform's hidden inputs are redacted: {d}"
            );
            assert_eq!(
                d["deployment"]["affectedBy"][0]["withdrawn"],
                "[restricted]"
            );
        } else {
            assert_eq!(
                d["deployment"]["affectedBy"][0]["withdrawn"],
                "dataset-version/northgate-cxr@1.0"
            );
        }
        answers.push(("typed lookups", typed));

        // History.
        let h = ask(
            &api,
            t,
            r#"{ history(subject: "transform/deid-cxr-2026-01") { leafIndex kind actor payload } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        answers.push(("history", h));
        ask(
            &api,
            t,
            r#"{ history(subject: "dataset-version/northgate-cxr@1.0") { payload } }"#,
            json!({}),
            if sees_all {
                Expect::Ok
            } else {
                Expect::Code("NOT_FOUND")
            },
        )
        .await;

        // Lineage, path and impact.
        for q in [
            r#"{ lineage(subject: "deployment/riverside-cxr-triage", direction: UPSTREAM, depth: 12) { nodes { subject label affectedBy { withdrawn } } edges { from to relation role } } }"#,
            r#"{ lineage(subject: "dataset-version/nccid-cxr-deid@1.0", direction: DOWNSTREAM, depth: 12) { nodes { subject label } edges { from to } } }"#,
            r#"{ lineage(subject: "site/northgate", direction: DOWNSTREAM, depth: 12) { nodes { subject label } edges { from to } } }"#,
            r#"{ lineage(subject: "dataset-version/nccid-cxr-deid@1.0", direction: DOWNSTREAM, depth: 12, asOf: 45) { nodes { subject label } } }"#,
        ] {
            let l = ask(&api, t, q, json!({}), Expect::Ok).await;
            answers.push(("lineage", l));
        }
        let up = ask(
            &api,
            t,
            r#"{ lineage(subject: "deployment/riverside-cxr-triage", direction: UPSTREAM, depth: 12) { nodes { subject } } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        let reaches_source = up.to_string().contains("dataset-version/northgate-cxr@1.0");
        assert_eq!(
            reaches_source, sees_all,
            "{who:?}: lineage to the hidden source"
        );
        ask(
            &api,
            t,
            r#"{ lineage(subject: "dataset-version/northgate-cxr@1.0", direction: DOWNSTREAM) { nodes { subject } } }"#,
            json!({}),
            if sees_all { Expect::Ok } else { Expect::Code("NOT_FOUND") },
        )
        .await;
        let p = ask(
            &api,
            t,
            r#"{ open: path(from: "deployment/riverside-cxr-triage", to: "dataset-version/nccid-cxr-deid@1.0") { nodes { subject } }
                 hidden: path(from: "deployment/riverside-cxr-triage", to: "dataset-version/northgate-cxr@1.0") { nodes { subject label } edges { from to } } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        assert!(!p["data"]["open"].is_null(), "{who:?}: {p}");
        assert_eq!(p["data"]["hidden"].is_null(), !sees_all, "{who:?}: {p}");
        answers.push(("path", p));
        let impact = ask(
            &api,
            t,
            r#"{ impact(datasetVersion: "nccid-cxr-deid@1.0") { liveDeployments datasetVersion { subject affectedBy { withdrawn } } affected { subject label status affectedBy { withdrawn } } } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        assert_eq!(impact["data"]["impact"]["liveDeployments"], 1, "{who:?}");
        answers.push(("impact", impact));
        ask(
            &api,
            t,
            r#"{ impact(datasetVersion: "northgate-cxr@1.0") { liveDeployments } }"#,
            json!({}),
            if sees_all {
                Expect::Ok
            } else {
                Expect::Code("NOT_FOUND")
            },
        )
        .await;

        // Checkpoints and proofs.
        let cp = ask(&api, t, "{ checkpoint { size rootHash note } checkpointAt(size: 1) { size } consistencyProof(fromSize: 10) { fromSize toSize hashes } }", json!({}), Expect::Ok).await;
        answers.push(("checkpoints", cp));
        ask(
            &api,
            t,
            "query($e: String!) { inclusionProof(eventId: $e) { leafIndex leaf receipt } }",
            json!({"e": withdrawal_event}),
            if sees_all {
                Expect::Ok
            } else {
                Expect::Code("NOT_FOUND")
            },
        )
        .await;
        let deid_proof = ask(
            &api,
            t,
            "query($e: String!) { inclusionProof(eventId: $e) { leafIndex hashes leaf receipt } }",
            json!({"e": deid_event}),
            Expect::Ok,
        )
        .await;
        assert_eq!(
            deid_proof["data"]["inclusionProof"]["leaf"].is_null(),
            !sees_all,
            "{who:?}: a leaf citing hidden data is withheld, its proof is not"
        );
        assert!(deid_proof["data"]["inclusionProof"]["hashes"].is_array());
        answers.push(("inclusion proof", deid_proof));

        // Access: requests, projects, audits and the data-use register.
        let is_ada = who == Who::GrantedResearcher;
        let mine = ask(
            &api,
            t,
            r#"{ myAccessRequests { id state projectId datasetIds transitions { state actor } }
                 accessRequest(id: "req-img-2026-117-ct") { id state }
                 other: accessRequest(id: "req-eucaim-benchmark") { id state }
                 project(id: "img-2026-117") { label attributes }
                 dataUseRegister { project organisation purpose datasets datasetTitles status } }"#,
            json!({}),
            Expect::Ok,
        )
        .await;
        let d = &mine["data"];
        let own: Vec<&str> = d["myAccessRequests"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        let expected_own: Vec<&str> = match who {
            Who::GrantedResearcher => vec!["req-img-2026-117-ct"],
            Who::Partner => vec!["req-eucaim-benchmark"],
            _ => vec![],
        };
        assert_eq!(own, expected_own, "{who:?}: my requests");
        assert_eq!(
            !d["accessRequest"].is_null(),
            sees_all || is_ada,
            "{who:?}: a request is its requester's, its project's and governance's: {d}"
        );
        assert_eq!(
            !d["other"].is_null(),
            sees_all || who == Who::Partner,
            "{who:?}: {d}"
        );
        assert_eq!(!d["project"].is_null(), sees_all || is_ada, "{who:?}: {d}");
        let register = d["dataUseRegister"].to_string();
        assert!(
            register.contains("ILD progression from serial chest CT"),
            "the register is for everyone: {register}"
        );
        assert_eq!(
            register.contains("National chest CT collection"),
            sees_all || is_ada,
            "{who:?}: {register}"
        );
        answers.push(("access requests and the register", mine));
        let queue = ask(
            &api,
            t,
            r#"{ accessReviewQueue { id } }"#,
            json!({}),
            forbidden_or_ok(sees_all),
        )
        .await;
        answers.push(("review queue", queue));
        let audit = ask(
            &api,
            t,
            r#"{ datasetAccess(datasetId: "nccid-ct-deid", from: "2020-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z") { holdersNow { principal } heldBetween { principal } } }"#,
            json!({}),
            forbidden_or_ok(sees_all),
        )
        .await;
        if sees_all {
            assert_eq!(
                audit["data"]["datasetAccess"]["holdersNow"][0]["principal"],
                "ada-researcher"
            );
        }
        answers.push(("access audit", audit));
        let (status, proof) = api
            .get(
                Some(t),
                "/proofs/access?dataset=nccid-ct-deid&from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
            )
            .await;
        assert_eq!(status, if sees_all { 200 } else { 403 }, "{who:?}");
        let proof: Value = serde_json::from_slice(&proof).expect("JSON");
        answers.push(("access audit proof", proof));

        // The rejected log is for operators.
        ask(
            &api,
            t,
            "{ rejected { reason detail raw } }",
            json!({}),
            forbidden_or_ok(sees_all),
        )
        .await;

        for (what, answer) in &answers {
            who.assert_nothing_hidden(what, answer);
        }
        if sees_all {
            // The same answers do carry every marker to a role that may see
            // them, so the checks above are not vacuous.
            let text = answers
                .iter()
                .map(|(_, a)| a.to_string())
                .collect::<String>();
            for (id, texts) in Who::Researcher.hidden() {
                assert!(text.contains(&format!("{id}@")), "{who:?} should see {id}");
                assert!(
                    texts.iter().any(|t| text.contains(t.as_str())),
                    "{who:?} should see the text of {id}"
                );
            }
        }
    }

    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_record_exactly_what_the_ledgers_policy_allows() {
    let World {
        _tmp,
        data,
        server,
        api,
        admin,
        tokens,
        ..
    } = world().await;
    // -------------------------------------------------------------- mutations
    let size_before = ask(
        &api,
        &admin,
        "{ checkpoint { size } }",
        json!({}),
        Expect::Ok,
    )
    .await["data"]["checkpoint"]["size"]
        .as_u64()
        .expect("size");
    let gateway_key = clew_events::ProducerKey::parse(
        &std::fs::read_to_string(data.join("keys/demo/riverside-gateway.key")).expect("key"),
    )
    .expect("gateway key");
    let mut recorded = 0;
    // The manifest the versions below cite, in the store before they are published.
    let manifest = api.upload_manifest(&admin, "matrix 1.0").await;
    let manifest_2 = api.upload_manifest(&admin, "matrix 2.0").await;
    for who in EVERYONE {
        let t = &tokens[&who];
        let r = who.tag();
        let admin_only = who == Who::Admin;
        let gov = matches!(who, Who::Admin | Who::Governance);
        // The ledger's policy: partners record lineage too (data kinds), but
        // do not withdraw versions.
        let data = matches!(
            who,
            Who::Admin | Who::Governance | Who::Ingest | Who::Partner
        );
        let withdraw = matches!(who, Who::Admin | Who::Governance | Who::Ingest);
        let submit = matches!(
            who,
            Who::Admin | Who::Governance | Who::Ingest | Who::Partner
        );
        let digest = format!("sha256:{}", "ef".repeat(32));
        let key = clew_events::ProducerKey::generate(&format!("test/{r}")).expect("key");
        // Projects: researchers (for projects they lead) and governance.
        let leads = matches!(
            who,
            Who::Admin | Who::Governance | Who::GrantedResearcher | Who::Researcher
        );
        // Access requests: researchers and partners ask; governance decides.
        let asks = matches!(
            who,
            Who::Admin | Who::GrantedResearcher | Who::Researcher | Who::Partner
        );
        let terms = |id: &str| {
            json!({"datasetIds": [id], "purpose": "a study", "requestedDays": 30,
                   "dataUseAgreement": {"agreementId": "nccid-data-access-agreement", "version": "4.0"}})
        };
        // Set-up: a request of ben's for this caller to review, and one of
        // the caller's own (when it may ask) that governance sent back.
        let record = |token: &str, mutation: &str, input_type: &str, input: Value| {
            let q =
                format!("mutation($i: {input_type}!) {{ {mutation}(input: $i) {{ leafIndex }} }}");
            (token.to_string(), q, input)
        };
        let mut setup = vec![record(
            &tokens[&Who::Researcher],
            "submitAccessRequest",
            "AccessRequestInput",
            json!({"requestId": format!("req-ben-{r}"), "terms": terms("nccid-cxr-deid")}),
        )];
        if asks {
            setup.push(record(
                t,
                "submitAccessRequest",
                "AccessRequestInput",
                json!({"requestId": format!("req2-{r}"), "terms": terms("nccid-cxr-deid")}),
            ));
            setup.push(record(
                &tokens[&Who::Governance],
                "reviewAccessRequest",
                "AccessReviewInput",
                json!({"requestId": format!("req2-{r}"), "decision": "CHANGES_REQUESTED", "reason": "say more"}),
            ));
        }
        for (token, q, input) in setup {
            ask(&api, &token, &q, json!({"i": input}), Expect::Ok).await;
            recorded += 1;
        }
        let steps: Vec<(&str, &str, Value, bool)> = vec![
            (
                "registerProject",
                "ProjectInput",
                json!({"projectId": format!("proj-{r}"), "title": "A project", "leadPrincipalId": who.principal(), "organisation": "A university", "purpose": "research"}),
                leads,
            ),
            (
                "addProjectMember",
                "ProjectMemberInput",
                json!({"projectId": format!("proj-{r}"), "principalId": "eucaim-partner"}),
                leads,
            ),
            (
                "removeProjectMember",
                "ProjectMemberRemovalInput",
                json!({"projectId": format!("proj-{r}"), "principalId": "eucaim-partner", "reason": "moved on"}),
                leads,
            ),
            (
                "submitAccessRequest",
                "AccessRequestInput",
                json!({"requestId": format!("req-{r}"), "terms": terms(&format!("ds-{r}"))}),
                asks,
            ),
            (
                "withdrawAccessRequest",
                "AccessWithdrawalInput",
                json!({"requestId": format!("req-{r}"), "reason": "not needed"}),
                asks,
            ),
            (
                "resubmitAccessRequest",
                "AccessResubmissionInput",
                json!({"requestId": format!("req2-{r}"), "terms": terms("nccid-cxr-deid"), "response": "more said"}),
                asks,
            ),
            (
                "reviewAccessRequest",
                "AccessReviewInput",
                json!({"requestId": format!("req-ben-{r}"), "decision": "UNDER_REVIEW"}),
                gov,
            ),
            (
                "registerSite",
                "SiteInput",
                json!({"siteId": format!("site-{r}"), "name": "A site", "kind": "SITE_KIND_HOSPITAL_TRUST"}),
                gov,
            ),
            (
                "registerDataset",
                "DatasetInput",
                json!({"datasetId": format!("ds-{r}"), "title": "A dataset", "custodianSiteId": "riverside", "accessLevel": "ACCESS_LEVEL_OPEN", "licence": "CC-BY-4.0"}),
                data,
            ),
            (
                "publishDatasetVersion",
                "DatasetVersionInput",
                json!({"datasetId": format!("ds-{r}"), "version": "1.0", "manifestDigest": manifest}),
                data,
            ),
            (
                "publishDatasetVersion",
                "DatasetVersionInput",
                json!({"datasetId": format!("ds-{r}"), "version": "2.0", "manifestDigest": manifest_2, "wasDerivedFrom": [format!("ds-{r}@1.0")]}),
                data,
            ),
            (
                "recordTransform",
                "TransformInput",
                json!({"transformId": format!("t-{r}"), "kind": "TRANSFORM_KIND_RESAMPLING", "toolName": "resample", "toolVersion": "1", "codeDigest": digest, "used": [format!("ds-{r}@1.0")], "generated": [format!("ds-{r}@2.0")]}),
                data,
            ),
            (
                "recordTrainingRun",
                "TrainingRunInput",
                json!({"trainingRunId": format!("run-{r}"), "modelName": "m", "used": [{"datasetVersionId": format!("ds-{r}@2.0"), "role": "DATASET_ROLE_TRAIN"}], "codeDigest": digest, "generatedModelVersionId": format!("mv-{r}")}),
                data,
            ),
            (
                "registerModelVersion",
                "ModelVersionInput",
                json!({"modelVersionId": format!("mv-{r}"), "modelName": "m", "version": "1", "artifactDigest": digest, "trainingRunId": format!("run-{r}")}),
                data,
            ),
            (
                "recordValidation",
                "ValidationInput",
                json!({"validationId": format!("v-{r}"), "modelVersionId": format!("mv-{r}"), "datasetVersionId": format!("ds-{r}@2.0"), "siteId": "riverside", "verdict": "VERDICT_PASS", "metrics": [{"name": "auroc", "value": 0.9, "subgroup": "sex=F"}]}),
                data,
            ),
            (
                "recordDeployment",
                "DeploymentInput",
                json!({"deploymentId": format!("dep-{r}"), "modelVersionId": format!("mv-{r}"), "siteId": "riverside", "environment": "shadow PACS", "status": "DEPLOYMENT_STATUS_SHADOW"}),
                data,
            ),
            (
                "withdrawDatasetVersion",
                "WithdrawalInput",
                json!({"datasetVersionId": format!("ds-{r}@1.0"), "reason": "WITHDRAWAL_REASON_LABEL_ERRORS", "detail": "bad labels"}),
                withdraw,
            ),
            (
                "registerPrincipal",
                "PrincipalInput",
                json!({"principalId": format!("p-{r}"), "displayName": "P", "roles": ["ROLE_PARTNER"], "verifierKey": key.verifier().to_text()}),
                admin_only,
            ),
            (
                "revokeKey",
                "KeyRevocationInput",
                json!({"keyId": key.key_id(), "reason": "rotated"}),
                admin_only,
            ),
            (
                "grantAccess",
                "AccessGrantInput",
                json!({"grantId": format!("g-{r}"), "principalId": "eucaim-partner", "datasetId": format!("ds-{r}"), "purpose": "audit"}),
                admin_only,
            ),
            (
                "revokeAccess",
                "AccessRevocationInput",
                json!({"grantId": format!("g-{r}"), "reason": "done"}),
                admin_only,
            ),
        ];
        for (mutation, input_type, input, allowed) in steps {
            let q = format!(
                "mutation($i: {input_type}!) {{ {mutation}(input: $i) {{ leafIndex eventId }} }}"
            );
            let body = ask(&api, t, &q, json!({"i": input}), forbidden_or_ok(allowed)).await;
            if allowed {
                recorded += 1;
                assert!(
                    body["data"][mutation]["leafIndex"].is_u64(),
                    "{who:?} {mutation}: {body}"
                );
            } else {
                assert!(
                    body["errors"][0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("needs one of the roles"),
                    "{who:?} {mutation}: {body}"
                );
            }
        }
        // A partner-style envelope signed by the riverside gateway's own key.
        let envelope = clew_events::seal(
            &gateway_key,
            "riverside-gateway",
            Body::DatasetRegistered(proto::DatasetRegistered {
                dataset_id: format!("env-ds-{r}"),
                title: "Signed elsewhere".into(),
                custodian_site_id: "riverside".into(),
                access_level: proto::AccessLevel::Open as i32,
                licence: "CC-BY-4.0".into(),
                ..Default::default()
            }),
            None,
            None,
        )
        .expect("seal");
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            envelope.encode_to_vec(),
        );
        ask(
            &api,
            t,
            "mutation($e: String!) { submitEnvelope(envelope: $e) { leafIndex } }",
            json!({"e": b64}),
            forbidden_or_ok(submit),
        )
        .await;
        if submit {
            recorded += 1;
        }
        ask(
            &api,
            t,
            r#"mutation { issueToken(principalId: "eucaim-partner") { token } }"#,
            json!({}),
            forbidden_or_ok(admin_only),
        )
        .await;
        ask(
            &api,
            t,
            r#"mutation { revokeTokens(principalId: "nobody") }"#,
            json!({}),
            forbidden_or_ok(admin_only),
        )
        .await;
    }
    let size_after = ask(
        &api,
        &admin,
        "{ checkpoint { size } }",
        json!({}),
        Expect::Ok,
    )
    .await["data"]["checkpoint"]["size"]
        .as_u64()
        .expect("size");
    assert_eq!(
        size_after - size_before,
        recorded,
        "exactly the allowed mutations were recorded"
    );

    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_streamed_only_what_it_may_see() {
    let World {
        _tmp,
        server,
        api,
        admin,
        tokens,
        ..
    } = world().await;
    let size_after = size_of(&api, &admin).await;
    // ---------------------------------------------------------- subscriptions
    let q = "subscription { events(fromLeaf: 0) { leafIndex eventId kind subject actor payload envelope } }";
    let mut checkpoint_subs = Vec::new();
    for who in EVERYONE {
        let t = &tokens[&who];
        let mut sub = Subscription::start(&server.base, t, q)
            .await
            .expect("subscribe");
        let events = sub.drain(Duration::from_secs(3)).await;
        let stream = Value::Array(events.clone());
        who.assert_nothing_hidden("the event stream", &stream);
        if who.sees_all() {
            assert_eq!(events.len() as u64, size_after, "{who:?} sees every event");
        } else {
            assert!(
                events.len() as u64 > 0 && (events.len() as u64) < size_after,
                "{who:?}"
            );
        }
        for e in &events {
            let redacted = e["events"]["payload"].to_string().contains("[restricted]");
            assert_eq!(e["events"]["envelope"].is_null(), redacted, "{who:?}: {e}");
        }
        // Access requests reach their requester, its project and governance only.
        let requests: std::collections::BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e["events"]["subject"].as_str())
            .filter(|s| s.starts_with("access-request/") || s.starts_with("project/"))
            .collect();
        let expected: Vec<&str> = match who {
            Who::Admin | Who::Governance => vec![
                "access-request/req-eucaim-benchmark",
                "access-request/req-img-2026-117-ct",
                "project/img-2026-117",
            ],
            Who::GrantedResearcher => {
                vec!["access-request/req-img-2026-117-ct", "project/img-2026-117"]
            }
            Who::Partner => vec!["access-request/req-eucaim-benchmark"],
            Who::Researcher | Who::Ingest => vec![],
        };
        assert_eq!(
            requests.into_iter().collect::<Vec<_>>(),
            expected,
            "{who:?}: access requests streamed"
        );
        checkpoint_subs.push((
            who,
            Subscription::start(
                &server.base,
                t,
                "subscription { checkpoints { size rootHash note } }",
            )
            .await
            .expect("subscribe"),
        ));
    }
    ask(
        &api,
        &admin,
        "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
        json!({"i": {"siteId": "last-site", "name": "Last", "kind": "SITE_KIND_DATA_PROVIDER"}}),
        Expect::Ok,
    )
    .await;
    for (who, mut sub) in checkpoint_subs {
        let cp = sub
            .next(Duration::from_secs(10))
            .await
            .expect("a new checkpoint");
        assert_eq!(
            cp["checkpoints"]["size"].as_u64(),
            Some(size_after + 1),
            "{who:?}"
        );
    }
    server.stop();
}
