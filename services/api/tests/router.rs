//! The HTTP router in process (tower `oneshot`, no socket): routing, the
//! bearer-token check, role refusals and the error → status mapping, over a
//! real node (sled ledger, catalogue, sequencer thread).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use clew_api::{app, AppState, Limits, Metrics, Node, TokenStore};
use clew_catalog::Catalog;
use clew_events::proto::Role;
use clew_events::{sample, seal, ProducerKey};
use clew_ledger::{Ledger, LedgerOptions, Submission};
use prost::Message;
use tower::ServiceExt;

struct World {
    _tmp: tempfile::TempDir,
    node: Arc<Node>,
    router: Router,
    admin: String,
    researcher: String,
}

impl World {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let ledger_key = ProducerKey::generate("test.clew.example/ledger")
            .expect("key")
            .to_signer_text();
        let admin = ProducerKey::generate("admin").expect("key");
        let service = ProducerKey::generate("svc").expect("key");
        let rita = ProducerKey::generate("rita").expect("key");
        let ledger = Ledger::create(
            &tmp.path().join("ledger"),
            &ledger_key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .expect("ledger");
        let setup = [
            sample::principal("svc", &service, &[Role::Service]),
            sample::principal("rita", &rita, &[Role::Researcher]),
        ];
        let r = ledger
            .sequence(
                "setup",
                setup
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| {
                        Submission::received(
                            i as u64,
                            seal(&admin, "admin", b, None, None)
                                .expect("seal")
                                .encode_to_vec(),
                        )
                    })
                    .collect(),
            )
            .expect("sequence");
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let catalog = Catalog::open(&tmp.path().join("catalog")).expect("catalogue");
        let node = Node::start(
            Arc::new(ledger),
            Arc::new(catalog),
            service,
            Arc::new(Metrics::new().expect("metrics")),
        )
        .expect("node");
        let mut applied = node.applied();
        tokio::time::timeout(
            Duration::from_secs(30),
            applied.wait_for(|a| a.size().is_some()),
        )
        .await
        .expect("the node catches up")
        .expect("watch");
        let tokens = Arc::new(TokenStore::open(&tmp.path().join("tokens.json")).expect("tokens"));
        let admin_token = tokens.issue("admin").expect("token");
        let researcher = tokens.issue("rita").expect("token");
        let router = app(AppState::new(node.clone(), tokens, Limits::default()));
        World {
            _tmp: tmp,
            node,
            router,
            admin: admin_token,
            researcher,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).expect("request"))
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, json)
    }
}

fn code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_token() {
    let w = World::new().await;
    let (status, _, body) = w.call(Method::GET, "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = w.call(Method::GET, "/readyz", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_get_json_errors_that_are_not_cached() {
    let w = World::new().await;
    let (status, headers, body) = w.call(Method::GET, "/no/such/route", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (status, _, body) = w.call(Method::DELETE, "/graphql", Some(&w.admin), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    w.node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unknown_token_is_401_with_a_challenge_and_a_role_refusal_is_403() {
    let w = World::new().await;
    for token in [None, Some("clew_not-a-token")] {
        let (status, headers, body) = w.call(Method::GET, "/checkpoint", token, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(code(&body), "UNAUTHENTICATED");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"clew\"");
    }
    let (status, _, body) = w
        .call(Method::GET, "/metrics", Some(&w.researcher), "")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("metrics needs one of the roles"),
        "{body}"
    );
    let (status, _, body) = w.call(Method::GET, "/metrics", Some(&w.admin), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .unwrap_or("")
            .contains("clew_ledger_tree_size 3"),
        "{body}"
    );
    // The lineage graph's size is read off the catalogue when the metrics
    // are asked for: never zero once anything is projected.
    let gauge = |name: &str| {
        body.as_str()
            .unwrap_or("")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let graph_bytes = gauge("clew_catalog_lineage_graph_bytes");
    assert!(graph_bytes.is_some_and(|b| b > 0), "{body}");
    // The admin key checked the setup's signatures in this process, and
    // holds its table while the node's ledger is open.
    let table_keys = gauge("clew_signature_table_keys");
    assert!(table_keys.is_some_and(|k| k >= 1), "{body}");
    w.node.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_answers_malformed_bodies_with_400_and_policy_refusals_with_forbidden() {
    let w = World::new().await;
    let (status, _, body) = w
        .call(Method::POST, "/graphql", Some(&w.admin), "{not json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The researcher may not register a site: the ledger's policy, asked
    // before anything is signed, names the roles.
    let q = r#"{"query":"mutation { registerSite(input: {siteId: \"s\", name: \"S\", kind: SITE_KIND_HOSPITAL_TRUST}) { leafIndex } }"}"#;
    let (status, _, body) = w
        .call(Method::POST, "/graphql", Some(&w.researcher), q)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("SITE_REGISTERED needs one of the roles [GOVERNANCE]; actor principal/rita has [RESEARCHER]"),
        "{body}"
    );
    // The admin may: the service key signs it for the admin.
    let (status, _, body) = w.call(Method::POST, "/graphql", Some(&w.admin), q).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["registerSite"]["leafIndex"], 3, "{body}");
    w.node.shutdown();
}
