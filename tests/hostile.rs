//! Hostile input against a real `clew demo --serve`: every route sent
//! oversized, extreme, malformed and wrong-typed input must answer with the
//! right code while the server's memory stays bounded and it keeps
//! answering; and for a viewer, a hidden entity must be indistinguishable
//! from one that never existed — same codes, same shapes, same counts.

use crate::support;

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64URL, Engine};
use serde_json::{json, Value};
use support::server::{ws_close, ws_close_code, Api, Server, Subscription};

/// Registers a researcher without grants and returns its token.
async fn researcher(api: &Api, admin: &str, id: &str) -> String {
    api.ok(
        admin,
        "mutation($i: PrincipalInput!) { registerPrincipal(input: $i) { leafIndex } }",
        json!({"i": {"principalId": id, "displayName": id, "roles": ["ROLE_RESEARCHER"]}}),
    )
    .await;
    api.ok(
        admin,
        "mutation($p: String!) { issueToken(principalId: $p) { token } }",
        json!({"p": id}),
    )
    .await["issueToken"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// POST /graphql with a raw body; (status, JSON body).
async fn raw_post(base: &str, token: &str, body: reqwest::Body) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: the body is not JSON: {text:?}"));
    (status, body)
}

/// A streamed (chunked) body of `mib` MiB of `x`, with no Content-Length.
fn chunked(mib: usize) -> reqwest::Body {
    let stream = futures_util::stream::iter(
        (0..mib).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024 * 1024])),
    );
    reqwest::Body::wrap_stream(stream)
}

/// One HTTP/1.1 response read off a raw connection: status, head, body.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (its body by Content-Length) from `s`; None if the
/// connection closes or fails first.
async fn read_response(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<RawResponse> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while bytes.len() < end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&bytes[end..end + length]).to_string();
    Some(RawResponse { status, head, body })
}

/// POSTs `mib` MiB to /graphql as a chunked body over a plain socket,
/// reading the answer while still sending (the server answers, and stops
/// reading, as soon as the body is over its limit); (status, JSON body).
async fn chunked_post(base: &str, token: &str, mib: usize) -> (u16, Value) {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..mib {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), read_response(&mut rd))
        .await
        .ok()
        .flatten();
    writer.abort();
    let r = answer.unwrap_or_else(|| panic!("no answer to a chunked POST of {mib} MiB"));
    let body = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {:?}", r.body));
    (r.status, body)
}

fn cursor(text: &str) -> String {
    B64URL.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_codes_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut server = Server::demo_async(&tmp.path().join("data")).await;
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let ben = researcher(&api, &admin, "ben-researcher").await;
    let before = server.rss_mib();
    let search =
        "query($i: SearchInput!) { search(input: $i) { total nextCursor hits { subject } } }";

    // 1. Cursors are checked, whatever a client puts in them.
    for c in [
        cursor(r#"{"before_leaf":1000000,"offset":10000000000000}"#),
        cursor(r#"{"before_leaf":1000000,"offset":4611686018427387904}"#),
        cursor(r#"{"before_leaf":0,"offset":20}"#),
        cursor(r#"{"before_leaf":10,"offset":20,"extra":1}"#),
        "not-base64!".to_string(),
        "A".repeat(100_000),
    ] {
        let body = api
            .fails(&ben, search, json!({"i": {"cursor": c}}), "BAD_USER_INPUT")
            .await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("cursor"),
            "{body}"
        );
    }
    // A page size past the cap is capped, not refused.
    let all = api
        .ok(&ben, search, json!({"i": {"limit": 1_000_000_000}}))
        .await;
    assert!(all["search"]["hits"].as_array().unwrap().len() <= 200);

    // 2. Search text is bounded in length and words; typo tolerance too.
    let long_word = "q".repeat(30_000);
    let many_words = (0..40)
        .map(|i| format!("unknownword{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let huge = "zyxwvutsrq ".repeat(22_000); // 242 KB, under the body limit
    for text in [long_word.as_str(), many_words.as_str(), huge.as_str()] {
        api.fails(&ben, search, json!({"i": {"text": text}}), "BAD_USER_INPUT")
            .await;
    }
    // The worst text that is served: the most words, each unknown and as long
    // as typo tolerance allows, in parallel.
    let worst = (0..32)
        .map(|i| format!("{}{}", "pneumothoraxradiograph", i % 10))
        .collect::<Vec<_>>()
        .join(" ");
    let runs = (0..8).map(|_| api.ok(&ben, search, json!({"i": {"text": worst}})));
    for r in futures_util::future::join_all(runs).await {
        assert_eq!(r["search"]["total"], 0);
    }

    // 3. Uploads: no body is read before the token is checked.
    let uploads = (0..12).map(|i| {
        let base = server.base.clone();
        async move {
            reqwest::Client::new()
                .put(format!("{base}/manifests/sha256:{i:064x}"))
                .body(chunked(60))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // Refused at once; a client may see the refusal, or a reset while it is
    // still sending. Either way nothing was read (memory is checked below).
    let answered: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(answered.iter().all(|s| *s == 401), "{answered:?}");
    // An oversized streamed GraphQL body: 413 with its code, as JSON.
    let (status, body) = chunked_post(&server.base, &ben, 50).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE", "{body}");
    // A manifest declared over its own limit: 413 naming that limit, before
    // a byte of it is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = server.base.trim_start_matches("http://").to_string();
        let mut tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let head = format!(
            "PUT /manifests/sha256:{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 70000000\r\nConnection: close\r\n\r\n",
            "0".repeat(64)
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut answer = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("PAYLOAD_TOO_LARGE") && answer.contains("67108864"),
            "{answer}"
        );
    }
    // Malformed JSON and wrong types: 400 with a code.
    for bad in [
        "{not json",
        "[]",
        r#"{"query": 5}"#,
        r#"{"query": "{ me { principal } }", "variables": "x"}"#,
    ] {
        let (status, body) = raw_post(&server.base, &ben, bad.to_string().into()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    for (path, want) in [
        ("/proofs/lineage?depth=abc&subject=x", 400),
        ("/proofs/impact", 400),
        ("/prov/lineage?subject=x&depth=-1", 400),
        ("/receipt/abc", 400),
        ("/receipt/99999999999999999999999", 400),
        ("/no/such/route", 404),
        (
            "/proofs/lineage?subject=model-version/x&depth=4000000000",
            400,
        ),
    ] {
        let (status, body) = api.get(Some(&ben), path).await;
        assert_eq!(status, want, "{path}: {}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert!(!code(&v).is_empty(), "{path}: {v}");
    }
    api.fails(
        &ben,
        "{ consistencyProof(fromSize: 0) { hashes } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
    api.fails(
        &ben,
        r#"{ lineage(subject: "site/northgate", direction: UPSTREAM, depth: 4000000) { asOf } }"#,
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;

    // 12. The standard introspection query is answered; deep user queries
    // and deep introspection are still refused.
    let introspection = std::fs::read_to_string(
        support::repo_root().join("tests/standards/introspection_query.graphql"),
    )
    .expect("introspection query");
    let schema = api.ok(&ben, &introspection, json!({})).await;
    assert!(schema["__schema"]["types"].as_array().unwrap().len() > 20);
    let deep = format!(
        "{{ __schema {{ types {{ {}name{} }} }} }}",
        "ofType { ".repeat(40),
        " }".repeat(40)
    );
    api.fails(&ben, &deep, json!({}), "QUERY_TOO_DEEP").await;
    api.fails(
        &ben,
        "{ search { hits { entity { versions { versions { versions { versions { versions { versions { versions { versions { versions { versions { subject } } } } } } } } } } } } } }",
        json!({}),
        "QUERY_TOO_DEEP",
    )
    .await;

    // 13. WebSocket protocol codes (graphql-transport-ws).
    let bad_init =
        json!({"type": "connection_init", "payload": {"Authorization": "Bearer clew_wrong"}});
    assert_eq!(
        ws_close_code(&server.base, Some(bad_init), Duration::from_secs(10)).await,
        Some(4403)
    );
    let early = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { checkpoints { size } }"}});
    assert_eq!(
        ws_close_code(&server.base, Some(early), Duration::from_secs(10)).await,
        Some(4401)
    );
    assert_eq!(
        ws_close_code(&server.base, None, Duration::from_secs(20)).await,
        Some(4408),
        "a connection that never sends connection_init is closed"
    );
    // One principal holds at most 16 WebSockets (the default); one more is
    // closed at its connection_init with 1013 Try Again Later, naming the
    // limit, while another principal still subscribes.
    let feed = "subscription { checkpoints { size } }";
    let mut held = subscriptions(&server.base, &ben, feed, 16).await;
    let ben_init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {ben}")}});
    let (code, reason) = ws_close(&server.base, Some(ben_init), Duration::from_secs(10))
        .await
        .expect("ben's 17th WebSocket is closed");
    assert_eq!(code, 1013, "{reason}");
    assert!(
        reason.contains("16 WebSockets open for this principal"),
        "{reason}"
    );
    let other = Subscription::start(&server.base, &admin, feed)
        .await
        .expect("another principal's WebSocket while ben holds 16");
    // Once one of ben's closes, its place is his again.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        match Subscription::start(&server.base, &ben, feed).await {
            Ok(s) => break s,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "ben's place not given back 10 s after one of his WebSockets closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop((held, other, again));
    let metrics = api.get(Some(&admin), "/metrics").await;
    let refused = String::from_utf8_lossy(&metrics.1).lines().find_map(|l| {
        l.strip_prefix("clew_graphql_websockets_refused_total ")
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "refusals not counted: {refused:?}"
    );

    // 10. Caches: full tiles are private to the caller (partial ones and
    // every other answer are not stored at all). Grow the log past one tile.
    use futures_util::StreamExt;
    let size = api.ok(&admin, "{ checkpoint { size } }", json!({})).await["checkpoint"]["size"]
        .as_u64()
        .unwrap();
    futures_util::stream::iter(size..300)
        .map(|i| {
            api.ok(
                &admin,
                "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }",
                json!({"i": {"siteId": format!("filler-{i}"), "name": "Filler", "kind": "SITE_KIND_HOSPITAL_TRUST"}}),
            )
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/tile/0/000", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("tile");
    let cache = resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cache.starts_with("private"), "{cache}");
    assert_eq!(resp.headers()["vary"], "Authorization");
    let resp = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .bearer_auth(&ben)
        .json(&json!({"query": "{ me { principal } }"}))
        .send()
        .await
        .expect("graphql");
    assert_eq!(resp.headers()["cache-control"], "no-store");

    // Still answering, memory bounded.
    assert!(server.alive(), "the server died");
    api.ok(&ben, "{ me { principal } }", json!({})).await;
    let after = server.rss_mib();
    eprintln!("resident memory: {before} MiB before the hostile requests, {after} MiB after");
    assert!(
        after < before + 400,
        "resident memory grew from {before} MiB to {after} MiB"
    );
}

/// The answer with every spelling of `id` replaced, so two answers can be
/// compared.
fn normalised(v: &Value, id: &str) -> String {
    v.to_string().replace(id, "<ID>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_a_viewer_a_hidden_entity_is_indistinguishable_from_an_absent_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let ben = researcher(&api, &admin, "ben-researcher").await;
    let ingest = server.demo_token("model-team");
    let governance = server.demo_token("governance-board");
    // A restricted dataset (hidden from ben and the ingest team) and an id
    // that never existed, of the same length.
    let (hidden, absent) = ("northgate-cxr", "zzzzzzzzz-cxr");
    let hidden_event = api
        .ok(
            &governance,
            "query($s: String!) { history(subject: $s) { eventId } }",
            json!({"s": format!("dataset/{hidden}")}),
        )
        .await["history"][0]["eventId"]
        .as_str()
        .expect("event id")
        .to_string();
    let absent_event = "01900000-0000-7000-8000-000000000000";
    assert_eq!(hidden_event.len(), absent_event.len());

    let queries = [
        "{ entity(subject: \"dataset/ID\") { subject } }",
        "{ dataset(id: \"ID\") { subject } }",
        "{ datasetVersion(id: \"ID@1.0\") { subject } }",
        "{ history(subject: \"dataset/ID\") { leafIndex } }",
        "{ history(subject: \"dataset-version/ID@1.0\") { leafIndex } }",
        "{ lineage(subject: \"dataset-version/ID@1.0\", direction: DOWNSTREAM, depth: 5) { nodes { subject } } }",
        "{ lineage(subject: \"dataset/ID\", direction: UPSTREAM) { nodes { subject } } }",
        "{ path(from: \"dataset-version/ID@1.0\", to: \"model-version/cxr-pneumonia-triage-1.1\") { nodes { subject } } }",
        "{ path(from: \"model-version/cxr-pneumonia-triage-1.1\", to: \"dataset-version/ID@1.0\") { nodes { subject } } }",
        "{ impact(datasetVersion: \"ID@1.0\") { liveDeployments } }",
        "{ search(input: {text: \"ID\", includeWithdrawn: true}) { total facets { name values { value count } } } }",
        "{ search(input: {filters: [{facet: \"site\", values: [\"ID\"]}]}) { total } }",
    ];
    for who in [&ben, &ingest] {
        for q in queries {
            let (_, a) = api
                .post(Some(who), &q.replace("ID", hidden), json!({}))
                .await;
            let (_, b) = api
                .post(Some(who), &q.replace("ID", absent), json!({}))
                .await;
            assert_eq!(
                normalised(&a, hidden),
                normalised(&b, absent),
                "{q}: hidden and absent answer differently"
            );
        }
        let proof = "query($e: String!) { inclusionProof(eventId: $e) { leafIndex } }";
        let (_, a) = api.post(Some(who), proof, json!({"e": hidden_event})).await;
        let (_, b) = api.post(Some(who), proof, json!({"e": absent_event})).await;
        assert_eq!(
            normalised(&a, &hidden_event),
            normalised(&b, absent_event),
            "inclusionProof by event id"
        );
        for route in [
            "/datasets/ID/dcat.jsonld",
            "/dataset-versions/ID@1.0/manifest",
            "/prov/lineage?subject=dataset-version/ID@1.0&direction=downstream",
            "/proofs/lineage?subject=dataset-version/ID@1.0",
            "/proofs/impact?datasetVersion=ID@1.0",
        ] {
            let (sa, a) = api.get(Some(who), &route.replace("ID", hidden)).await;
            let (sb, b) = api.get(Some(who), &route.replace("ID", absent)).await;
            assert_eq!(sa, sb, "{route}: status");
            assert_eq!(
                String::from_utf8_lossy(&a).replace(hidden, "<ID>"),
                String::from_utf8_lossy(&b).replace(absent, "<ID>"),
                "{route}: body"
            );
        }
        // Subscriptions: filtering by a hidden id finds what an unused id finds.
        for id in [hidden, absent] {
            let mut sub = Subscription::start(
                &server.base,
                who,
                &format!(
                    "subscription {{ events(dataset: \"{id}\", fromLeaf: 0) {{ leafIndex }} }}"
                ),
            )
            .await
            .expect("subscribe");
            let got = sub.drain(Duration::from_secs(2)).await;
            assert!(got.is_empty(), "events(dataset: {id}) delivered {got:?}");
        }
    }
    // Mutations citing a hidden dataset are refused as citing an absent one.
    let publish =
        "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }";
    let digest = api.upload_manifest(&ingest, "hidden").await;
    let version = |d: &str| {
        json!({"i": {"datasetId": d, "version": "9.9", "manifestDigest": digest,
                     "imagingSummary": {"modalities": ["DX"]}}})
    };
    let (_, a) = api.post(Some(&ingest), publish, version(hidden)).await;
    let (_, b) = api.post(Some(&ingest), publish, version(absent)).await;
    assert_eq!(code(&a), "NOT_FOUND", "{a}");
    assert_eq!(normalised(&a, hidden), normalised(&b, absent));
    let withdraw =
        "mutation($i: WithdrawalInput!) { withdrawDatasetVersion(input: $i) { leafIndex } }";
    let w = |d: &str| json!({"i": {"datasetVersionId": format!("{d}@1.0"), "reason": "WITHDRAWAL_REASON_OTHER", "detail": "x"}});
    let (_, a) = api.post(Some(&ingest), withdraw, w(hidden)).await;
    let (_, b) = api.post(Some(&ingest), withdraw, w(absent)).await;
    assert_eq!(code(&a), "NOT_FOUND", "{a}");
    assert_eq!(normalised(&a, hidden), normalised(&b, absent));
    // Registering an id that is taken cannot succeed, but the refusal does
    // not say where the hidden dataset sits in the ledger.
    let register = "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }";
    let (_, a) = api
        .post(
            Some(&ingest),
            register,
            json!({"i": {"datasetId": hidden, "title": "t", "custodianSiteId": "northgate", "accessLevel": "ACCESS_LEVEL_OPEN"}}),
        )
        .await;
    let message = a["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{a}");
    assert!(
        !message.contains("(leaf") && !message.contains(hidden),
        "the refusal names what is hidden: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_hidden_leaks_through_exports_impact_facets_or_open_subscriptions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = Server::demo_async(&data).await;
    let api = Api::new(&server.base);
    let admin = server.admin_token();
    let ben = researcher(&api, &admin, "ben-researcher").await;
    let governance = server.demo_token("governance-board");
    let hidden_ids = [
        "northgate-cxr",
        "riverside-cxr",
        "nccid-cxr-test",
        "nccid-ct-deid",
    ];
    let assert_clean = |what: &str, text: &str| {
        for id in hidden_ids {
            for marker in [format!("{id}\""), format!("{id}\\\""), format!("{id}@")] {
                assert!(
                    !text.contains(&marker),
                    "{what} shows {id} to a researcher: {text}"
                );
            }
        }
    };

    // 4. DCAT-AP names no hidden version, not even in prov:wasDerivedFrom.
    let (status, body) = api.get(Some(&ben), "/catalog.jsonld").await;
    assert_eq!(status, 200);
    assert_clean("/catalog.jsonld", &String::from_utf8_lossy(&body));
    let (_, body) = api
        .get(Some(&ben), "/datasets/nccid-cxr-deid/dcat.jsonld")
        .await;
    assert_clean("the dataset's DCAT-AP", &String::from_utf8_lossy(&body));

    // 7. Impact reaches exactly what downstream lineage reaches through
    // visible entities, for every version the researcher can see.
    let versions = api
        .ok(
            &ben,
            "{ search(input: {includeWithdrawn: true, limit: 200, filters: [{facet: \"entity_type\", values: [\"dataset-version\"]}]}) { hits { subject } } }",
            json!({}),
        )
        .await;
    for hit in versions["search"]["hits"].as_array().unwrap() {
        let subject = hit["subject"].as_str().unwrap();
        let impact = api
            .ok(
                &ben,
                "query($v: String!) { impact(datasetVersion: $v) { affected { subject } } }",
                json!({"v": subject}),
            )
            .await;
        let lineage = api
            .ok(
                &ben,
                "query($s: String!) { lineage(subject: $s, direction: DOWNSTREAM, depth: 50) { nodes { subject } } }",
                json!({"s": subject}),
            )
            .await;
        let mut a: Vec<String> = impact["impact"]["affected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["subject"].as_str().unwrap().to_string())
            .collect();
        let mut b: Vec<String> = lineage["lineage"]["nodes"].as_array().unwrap()[1..]
            .iter()
            .map(|n| n["subject"].as_str().unwrap().to_string())
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "impact of {subject}");
        assert_clean("impact", &impact.to_string());
    }

    // 8. OpenLineage facets that name a hidden dataset are not shown.
    let run = json!({
        "eventType": "COMPLETE", "eventTime": "2026-11-30T10:00:00Z",
        "producer": "https://example.org/pipeline", "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent",
        "run": {"runId": "3f9c4e2a-8b1d-4c7e-9a2f-6d5e4c3b2a10", "facets": {"lineageNote": {"_producer": "x", "_schemaURL": "x", "source": "riverside-cxr@1.0"}}},
        "job": {"namespace": "hospital", "name": "resample", "facets": {"jobType": {"_producer": "x", "_schemaURL": "x", "processingType": "BATCH", "integration": "x", "jobType": "RESAMPLING"}}},
        "inputs": [{"namespace": "clew", "name": "nccid-cxr-deid@1.0"}],
        "outputs": [{"namespace": "clew", "name": "nccid-cxr-annotated@1.0"}]
    });
    let post = |body: Value| {
        let base = server.base.clone();
        let token = governance.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/v1/lineage"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST lineage");
            (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, first) = post(run.clone()).await;
    assert_eq!(status, 201, "{first}");
    // 15. A retry of a run with a UUIDv4 id answers with the first leaf.
    let (status, again) = post(run.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["leafIndex"], first["leafIndex"]);
    let t = api
        .ok(
            &ben,
            "{ transform(id: \"3f9c4e2a-8b1d-4c7e-9a2f-6d5e4c3b2a10\") { attributes } }",
            json!({}),
        )
        .await;
    assert_eq!(
        t["transform"]["attributes"]["openlineage"]["facetsJson"], "[restricted]",
        "{t}"
    );
    assert_clean("OpenLineage facets", &t.to_string());
    let t = api
        .ok(
            &governance,
            "{ transform(id: \"3f9c4e2a-8b1d-4c7e-9a2f-6d5e4c3b2a10\") { attributes } }",
            json!({}),
        )
        .await;
    assert!(
        t.to_string().contains("riverside-cxr@1.0"),
        "governance sees the facets"
    );

    // 5. An open subscription follows revocations: a revoked grant hides
    // what it granted from the next event on; a revoked token closes it.
    let ada = server.demo_token("ada-researcher");
    let mut sub = Subscription::start(
        &server.base,
        &ada,
        "subscription { events(dataset: \"nccid-ct-deid\") { leafIndex subject payload envelope } }",
    )
    .await
    .expect("subscribe");
    let grant = api.ok(&ada, "{ me { grantedDatasets } }", json!({})).await;
    assert_eq!(grant["me"]["grantedDatasets"], json!(["nccid-ct-deid"]));
    api.ok(
        &admin,
        "mutation($i: AccessRevocationInput!) { revokeAccess(input: $i) { leafIndex } }",
        json!({"i": {"grantId": "grant-ada-ct-2026", "reason": "project ended"}}),
    )
    .await;
    // The caller's very next request sees it, however recently the caller
    // was resolved (the server keeps callers by principal).
    let after = api.ok(&ada, "{ me { grantedDatasets } }", json!({})).await;
    assert_eq!(after["me"]["grantedDatasets"], json!([]), "{after}");
    let digest = api.upload_manifest(&governance, "ct 7.0").await;
    api.ok(
        &governance,
        "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }",
        json!({"i": {"datasetId": "nccid-ct-deid", "version": "7.0", "manifestDigest": digest,
                     "imagingSummary": {"modalities": ["CT"]}, "releaseNotes": "secret release notes"}}),
    )
    .await;
    let got = sub.drain(Duration::from_secs(3)).await;
    assert!(
        got.iter()
            .all(|e| !e.to_string().contains("secret release notes")),
        "a revoked grant still delivers: {got:?}"
    );
    assert!(got.is_empty(), "{got:?}");
    api.ok(
        &admin,
        "mutation { revokeTokens(principalId: \"ada-researcher\") }",
        json!({}),
    )
    .await;
    assert_eq!(sub.closed_with(Duration::from_secs(10)).await, Some(4403));

    // 11. The data directory is the operator's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    for file in files_under(&data) {
        let m = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(m & 0o077, 0, "{} is {:o}", file.display(), m & 0o777);
    }

    // 14. Facet values match whatever their case; free text reaches the
    // scanners; datasets list their versions; counts are numbers.
    let total = |v: Value| v["search"]["total"].as_u64().unwrap();
    let by = |facet: &str, value: &str| {
        api.ok(
            &ben,
            "query($f: String!, $v: String!) { search(input: {filters: [{facet: $f, values: [$v]}]}) { total } }",
            json!({"f": facet, "v": value}),
        )
    };
    let upper = total(by("modality", "DX").await);
    assert!(upper > 0);
    assert_eq!(total(by("modality", "dx").await), upper);
    let text = |t: &str| {
        api.ok(
            &ben,
            "query($t: String!) { search(input: {text: $t}) { total } }",
            json!({"t": t}),
        )
    };
    let manufacturers = api
        .ok(
            &ben,
            "{ search { facets { name values { value } } } }",
            json!({}),
        )
        .await;
    let maker = manufacturers["search"]["facets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "manufacturer")
        .and_then(|f| f["values"][0]["value"].as_str())
        .expect("a manufacturer")
        .to_string();
    assert!(total(text(&maker.to_lowercase()).await) > 0, "{maker}");
    let d = api
        .ok(
            &ben,
            "{ dataset(id: \"nccid-cxr-deid\") { versions { subject attributes } } }",
            json!({}),
        )
        .await;
    let v = &d["dataset"]["versions"][0];
    assert_eq!(v["subject"], "dataset-version/nccid-cxr-deid@1.0");
    assert!(
        v["attributes"]["imagingSummary"]["numberOfStudies"].is_u64(),
        "{v}"
    );
}

/// A new connection to `addr` that sends `request` and reads its answer.
async fn raw_request(addr: &str, request: &str) -> (tokio::net::TcpStream, Option<RawResponse>) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .ok()
        .flatten();
    (s, r)
}

/// How long until the server closes `s` (reads until the end, at most
/// `wait`); None if it stays open.
async fn closed_after(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + wait),
            s.read(&mut sink),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// `n` subscriptions to `feed` by the holder of `token`, each acknowledged.
async fn subscriptions(base: &str, token: &str, feed: &str, n: usize) -> Vec<Subscription> {
    let mut open = Vec::with_capacity(n);
    for i in 1..=n {
        open.push(
            Subscription::start(base, token, feed)
                .await
                .unwrap_or_else(|e| panic!("subscription {i} of {n}: {e}")),
        );
    }
    open
}

/// A metric's value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// A greedy or slow client cannot hold the server: at the cap, the
/// connection idle longest is closed to make room for a new one, and with
/// none idle a connection past the cap is answered 503 naming the cap (a
/// WebSocket holds its place until it closes); a connection that sends no
/// request head, or stays idle after one, is closed after the header
/// timeout; a body sent too slowly is answered 408; each is counted in the
/// metrics and logged; and the server answers throughout and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_and_slow_clients_are_refused_or_cut_off_with_a_reason() {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            Server::start(
                &data,
                &[
                    "serve",
                    "--max-connections",
                    "6",
                    "--header-timeout-s",
                    "6",
                    "--request-timeout-s",
                    "3",
                    "--write-timeout-s",
                    "3",
                ],
            )
        })
        .await
        .expect("start")
    };
    let addr = server.base.trim_start_matches("http://").to_string();
    let admin = server.admin_token();
    let get = |path: &str, close: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: clew\r\nAuthorization: Bearer {admin}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let metrics = || async {
        let (_, r) = raw_request(&addr, &get("/metrics", true)).await;
        let r = r.expect("an answer from /metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    // Start from no connection but the one asking (the readiness probes
    // have closed theirs). It asks over one kept-alive connection, the idle
    // one of step 1: a connection closed after each answer would keep its place
    // until the server saw the close (RFC 9112 §9.6), which on a loaded
    // machine can come after the next connections are opened.
    let (mut first, r) = raw_request(&addr, &get("/metrics", false)).await;
    let mut r = r.expect("an answer from /metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&r.body, "clew_http_connections_open") != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections other than the test's stay open:\n{}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        first
            .write_all(get("/metrics", false).as_bytes())
            .await
            .expect("send");
        r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut first))
            .await
            .expect("an answer from /metrics within 10 s")
            .expect("an answer from /metrics");
    }

    // 1. Five WebSocket subscriptions and the kept-alive connection above,
    //    answered and left idle: six places, the cap.
    let feed = "subscription { checkpoints { size rootHash note } }";
    let mut subscriptions = subscriptions(&server.base, &admin, feed, 5).await;

    // 2. A seventh connection is served: the idle one is closed to make
    //    room for it (a WebSocket is never idle in this sense).
    let (mut seventh, r) = raw_request(&addr, &get("/healthz", false)).await;
    let r = r.expect("a connection at the cap is answered");
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert!(
        closed_after(&mut first, Duration::from_secs(5))
            .await
            .is_some(),
        "the idle connection is closed to make room"
    );

    // 3. A sixth WebSocket takes the place of the seventh connection, idle
    //    in its turn.
    subscriptions.push(
        Subscription::start(&server.base, &admin, feed)
            .await
            .expect("a sixth subscription, in the place of an idle connection"),
    );
    assert!(
        closed_after(&mut seventh, Duration::from_secs(5))
            .await
            .is_some(),
        "the seventh connection, idle, is closed to make room"
    );

    // 4. With no connection idle, the next is answered 503 naming the cap,
    //    and closed.
    let (mut s, r) = raw_request(&addr, &get("/healthz", false)).await;
    let r = r.expect("a connection past the cap is answered, not dropped");
    assert_eq!(r.status, 503, "{}\n{}", r.head, r.body);
    let body: Value = serde_json::from_str(&r.body).expect("a JSON error");
    assert_eq!(code(&body), "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("6 connections open"), "{message}");
    let head = r.head.to_ascii_lowercase();
    assert!(head.contains("retry-after: 5"), "{}", r.head);
    assert!(head.contains("cache-control: no-store"), "{}", r.head);
    assert!(
        closed_after(&mut s, Duration::from_secs(5)).await.is_some(),
        "a refused connection is closed"
    );

    // 5. The WebSockets held their places: once they close, connections are
    //    served again. One is left idle and one sends a request head that
    //    never ends; both are cut off after the header timeout.
    drop(subscriptions);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut partial = loop {
        let (s, r) = raw_request(&addr, &get("/healthz", false)).await;
        match r {
            Some(r) if r.status == 200 => break s,
            other => assert!(
                std::time::Instant::now() < deadline,
                "no connection served 10 s after the WebSockets closed: {:?}",
                other.map(|r| r.status)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut idle, r) = raw_request(&addr, &get("/healthz", false)).await;
    assert_eq!(r.expect("an answer").status, 200);
    let idle = tokio::spawn(async move { closed_after(&mut idle, Duration::from_secs(60)).await });
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: clew\r\n")
        .await
        .expect("send");
    let after = closed_after(&mut partial, Duration::from_secs(30))
        .await
        .expect("a request head that never ends is cut off within 30 s");
    assert!(
        after >= Duration::from_secs(5),
        "cut off after {after:?}, before the 6 s header timeout"
    );
    let after = idle
        .await
        .expect("watching an idle connection")
        .expect("an idle keep-alive connection is closed within 60 s");
    assert!(
        after >= Duration::from_secs(5),
        "an idle connection closed {after:?} after its answer, before the 6 s header timeout"
    );

    // 6. A body sent too slowly is answered 408 after the request timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(
        format!(
            "POST /graphql HTTP/1.1\r\nHost: clew\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"query\":"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let sent = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), read_response(&mut slow))
        .await
        .expect("an answer to a stalled body within 30 s")
        .expect("an answer, not a closed connection");
    assert_eq!(r.status, 408, "{}\n{}", r.head, r.body);
    assert!(
        sent.elapsed() >= Duration::from_millis(2500),
        "408 after {:?}, before the 3 s request timeout",
        sent.elapsed()
    );
    let body: Value = serde_json::from_str(&r.body).expect("a JSON error");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("no answer within 3 s"), "{message}");

    // 7. Each was counted and logged, and the server still answers.
    let text = metrics().await;
    assert!(
        metric(&text, "clew_http_connections_refused_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "clew_http_header_timeouts_total") >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "clew_http_idle_connections_closed_total"),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "clew_http_request_timeouts_total"),
        1.0,
        "{text}"
    );
    // Every answer here was read: none was cut off while being written
    // (the server loop's own tests cut off a client that reads nothing).
    assert_eq!(
        metric(&text, "clew_http_write_timeouts_total"),
        0.0,
        "{text}"
    );
    let log = std::fs::read_to_string(data.with_extension("server.log")).expect("server log");
    assert!(
        log.contains("6 connections open, as many as the server serves at once"),
        "{log}"
    );
    assert!(log.contains("answered 408"), "{log}");
    let (_, r) = raw_request(&addr, &get("/readyz", true)).await;
    assert_eq!(r.expect("an answer").status, 200);
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");
    assert!(status.success(), "clew serve stopped with {status}");
}

/// `clew verify` on a damaged data directory reports the damage and exits
/// non-zero; it never panics (exit 101).
#[test]
fn verify_reports_a_damaged_data_directory_without_panicking() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    support::ok(&["demo", "--data-dir", &data.to_string_lossy()]);
    let files = files_under(&data.join(clew_ledger::LEDGER_DB_DIR));
    assert!(!files.is_empty());
    let mut damaged = 0;
    for (i, file) in files.iter().enumerate() {
        for how in ["truncate", "flip"] {
            let copy = tmp.path().join(format!("copy-{i}-{how}"));
            support::copy_dir(&data, &copy);
            let target = copy.join(file.strip_prefix(&data).unwrap());
            let bytes = std::fs::read(&target).unwrap();
            let broken = match how {
                "truncate" => bytes[..bytes.len() / 2].to_vec(),
                _ => bytes
                    .iter()
                    .enumerate()
                    .map(|(j, b)| if j % 7 == 3 { !b } else { *b })
                    .collect(),
            };
            if broken == bytes {
                continue;
            }
            std::fs::write(&target, broken).unwrap();
            let out = support::run(&["verify", "--data-dir", &copy.to_string_lossy()]);
            let code = out.status.code();
            assert_ne!(
                code,
                Some(101),
                "clew verify panicked on {} ({how}): {}",
                target.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() {
                damaged += 1;
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains("FAILED")
                        || String::from_utf8_lossy(&out.stderr).contains("error"),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(damaged > 0, "no damaged copy was reported");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
