//! The web catalogue in a real browser: headless Chromium driven through
//! chromedriver (both from the operating system's packages) against
//! `clew demo --serve`. A researcher's journey and a governance journey,
//! the role matrix on pages (nothing restricted reaches a researcher's DOM
//! or any response the page loaded), user-supplied text staying text under
//! the Content-Security-Policy, no request leaving the origin, and
//! cross-site form posts refused. Each page's screenshot is saved in
//! `target/web-screenshots/`.

use serde_json::json;

use crate::support::server::{Api, Server};
use clew_test_browser::Browser;

/// What a researcher without grants for them may never see anywhere: the
/// ids and titles of source datasets and of the held-back test split.
const HIDDEN_FROM_ADA: &[&str] = &[
    "northgate-cxr",
    "Northgate chest X-ray collection",
    "nccid-cxr-test",
    "held-back test split",
];

/// Signs in with the demo's one-click choice for `principal`.
async fn sign_in_as(b: &Browser, base: &str, principal: &str) {
    b.goto(&format!("{base}/sign-in")).await;
    b.follow(&format!("button[name=demo][value={principal}]"))
        .await;
    b.find("#q").await;
    assert!(
        b.text("header .who").await.contains(principal),
        "the header names who is signed in"
    );
}

/// Asserts the page and everything it loaded came from `base`, and that
/// nothing in `hidden` is in its DOM.
async fn check_page(b: &Browser, base: &str, hidden: &[&str], page: &str) {
    let dom = b.dom().await;
    for h in hidden {
        assert!(
            !dom.contains(h),
            "{page}: {h:?} reached the DOM of a viewer who may not see it"
        );
    }
    let requests = b.requests().await;
    assert!(
        !requests.is_empty(),
        "{page}: the browser recorded no request"
    );
    for r in &requests {
        assert!(
            r.starts_with(base),
            "{page}: a request left the origin {base}: {r}"
        );
    }
    assert!(
        !b.url().await.to_lowercase().contains("token"),
        "{page}: a token is in the address"
    );
    let violations = b.axe_violations().await;
    assert!(
        violations.is_empty(),
        "{page}: axe-core finds serious or critical accessibility violations:\n{}",
        violations.join("\n")
    );
    let missed = b.controls_keyboard_misses().await;
    assert!(
        missed.is_empty(),
        "{page}: Tab never reaches these controls:\n{}",
        missed.join("\n")
    );
}

/// Pins the ledger's key (read from the data directory, as an operator
/// would hand it over) on the ledger page.
async fn pin_ledger_key(b: &Browser, base: &str, server: &Server) {
    let vkey = std::fs::read_to_string(server.data.join("keys/ledger.vkey")).unwrap();
    b.goto(&format!("{base}/ledger")).await;
    b.fill("#given-key", vkey.trim()).await;
    b.click("[data-pin-given]").await;
    let status = b.text("[data-pin-status]").await;
    assert!(
        status.contains(&format!("Pinned in this browser: {}", vkey.trim())),
        "{status}"
    );
}

/// Presses the evidence panel's button and waits for its outcome; the
/// outcome and the status line.
async fn verify_evidence(b: &Browser) -> (String, String) {
    b.click("[data-verify]").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let outcome = b
            .script("return document.querySelector('[data-evidence]').dataset.outcome || ''")
            .await;
        let outcome = outcome.as_str().unwrap_or_default().to_string();
        if !outcome.is_empty() {
            return (outcome, b.text("[data-evidence-status]").await);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the evidence panel gave no outcome within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_searches_filters_opens_a_dataset_and_asks_for_access() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let base = server.base.clone();
    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    // Every page needs a session: the first visit lands on the sign-in page.
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.ends_with("/sign-in"), "{}", b.url().await);
    let offered = b.texts("button[name=demo]").await.join(" | ");
    assert!(
        offered.contains("ada-researcher researcher")
            && offered.contains("governance-board governance"),
        "each demo principal is offered with its role: {offered}"
    );
    b.screenshot("sign-in").await;
    sign_in_as(&b, &base, "ada-researcher").await;

    // Search, with a typo the index forgives.
    b.fill("#q", "chset").await;
    b.follow(".box button").await;
    let heading = b.text("#results-heading").await;
    let total: u64 = heading
        .split_whitespace()
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a result count in {heading:?}"));
    assert!(total > 0, "a typo still finds chest datasets: {heading}");
    check_page(&b, &base, HIDDEN_FROM_ADA, "search").await;
    b.screenshot("search").await;
    // The navigation offers only what a researcher may open.
    let nav = b.texts("nav[aria-label=Main] a").await;
    assert!(
        nav.contains(&"Data uses".to_string())
            && !nav.contains(&"Rejected".to_string())
            && !nav.contains(&"Review queue".to_string()),
        "{nav:?}"
    );
    let facets = b.texts(".facets legend").await.join(" | ");
    assert!(
        facets.contains("Scanner (manufacturer and model)"),
        "a facet for maker and model together: {facets}"
    );

    // A facet narrows the results, and its counts are the viewer's own.
    b.click("input[name=f][value=\"modality=CT\"]").await;
    b.follow(".facets button[type=submit]").await;
    b.wait_text("#results-heading", "results").await;
    let url = b.url().await;
    assert!(url.contains("f=modality%3DCT"), "{url}");
    let titles = b.texts(".hit-title").await;
    assert!(!titles.is_empty(), "the CT filter leaves results");
    for t in &titles {
        assert!(t.contains("CT"), "a non-CT result under the CT filter: {t}");
    }
    assert_eq!(
        b.script("return document.querySelector('input[value=\"modality=CT\"]').checked")
            .await,
        true,
        "the chosen filter stays chosen"
    );
    let filtered = b.text("#results-heading").await;
    assert_eq!(
        filtered,
        format!("{} results", titles.len()),
        "one page holds every CT result the viewer may see"
    );
    check_page(&b, &base, HIDDEN_FROM_ADA, "search with a facet").await;

    // A result's page: the version, then its dataset, then back to a version.
    b.follow(".hit-title").await;
    assert!(b.text("h1").await.contains("CT"));
    assert!(b.text(".facts").await.contains("Manifest digest"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "dataset version").await;
    b.screenshot("dataset-version").await;
    b.follow("main p a[href^=\"/entity/dataset/\"]").await;
    let access = b.text(".access").await;
    assert!(
        access.contains("You hold a live access grant"),
        "the dataset page says what the caller's own access is: {access}"
    );
    assert!(b.text("table").await.contains("Instances"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "dataset").await;
    b.screenshot("dataset").await;
    b.follow("table a[href^=\"/entity/dataset-version/\"]")
        .await;
    assert!(b.url().await.contains("/entity/dataset-version/"));

    // The model card, and lineage upstream of it: the held-back test split
    // is hers to know of only as "a dataset version you may not see".
    b.goto(&format!(
        "{base}/entity/model-version/cxr-pneumonia-triage-1.1"
    ))
    .await;
    assert!(b.text(".card").await.contains("Intended use"));
    assert!(b.dom().await.contains("a dataset version you may not see"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "model card").await;
    b.follow("a[href^=\"/lineage?\"]").await;
    b.fill("#depth", "10").await;
    b.follow("form.inline button").await;
    b.wait_text(".checkpoint", "tree size").await;
    // The drawn graph too: what it fetched and drew is checked with the page.
    b.wait_text("[data-graph-status]", "Drawn:").await;
    check_page(&b, &base, HIDDEN_FROM_ADA, "lineage").await;

    // Asking for access to a dataset by its id.
    b.follow("nav a[href=\"/access\"]").await;
    b.fill("#datasets", "moorland-ct").await;
    b.fill("#purpose", "Scanner-shift robustness study").await;
    b.fill("#days", "90").await;
    b.fill("#agreement_id", "nccid-data-access-agreement").await;
    b.fill("#agreement_version", "4.0").await;
    b.click("#accept").await;
    b.follow("form.request button").await;
    assert!(b.url().await.ends_with("/access"));
    let mine = b.text(".request-card").await;
    assert!(
        mine.contains("moorland-ct") && mine.contains("submitted"),
        "the new request is listed first, submitted: {mine}"
    );
    b.screenshot("access-requests").await;
    let id = b.text(".request-card h3 code").await;

    // Governance finds it in the review queue and approves it with a
    // condition; Ada sees the decision and the condition.
    sign_in_as(&b, &base, "governance-board").await;
    b.goto(&format!("{base}/access/review")).await;
    let queue = b.text("main").await;
    assert!(
        queue.contains(&id) && queue.contains("Asked by ada-researcher"),
        "the request waits in the queue: {queue}"
    );
    check_page(&b, &base, &[], "access review").await;
    let form = format!("form[aria-label=\"Decide on {id}\"]");
    b.click(&format!("{form} option[value=APPROVED_WITH_CONDITIONS]"))
        .await;
    b.fill(
        &format!("{form} textarea[name=conditions]"),
        "No linkage to other data",
    )
    .await;
    b.follow(&format!("{form} button")).await;
    assert!(
        !b.text("main").await.contains(&id),
        "a decided request leaves the queue"
    );
    sign_in_as(&b, &base, "ada-researcher").await;
    b.goto(&format!("{base}/access")).await;
    let decided = b.text(".request-card").await;
    assert!(
        decided.contains("approved with conditions")
            && decided.contains("by governance-board")
            && decided.contains("condition: No linkage to other data"),
        "{decided}"
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_traces_a_model_as_of_a_checkpoint_and_exports_the_impact() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let base = server.base.clone();
    let api = Api::new(&base);
    let admin = server.admin_token();
    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    sign_in_as(&b, &base, "governance-board").await;
    let nav = b.texts("nav[aria-label=Main] a").await;
    assert!(
        nav.contains(&"Rejected".to_string()) && nav.contains(&"Review queue".to_string()),
        "governance is offered its own pages: {nav:?}"
    );
    // A person is found by name: what the Riverside gateway registered.
    b.fill("#q", "riverside-gateway").await;
    b.follow(".box button").await;
    let found = b.texts(".hit-title").await;
    assert!(
        !found.is_empty(),
        "a search by a person's name finds what they recorded"
    );

    // The model card: intended use, training data, validations with
    // subgroup metrics, the held-back set marked, the live deployment.
    b.goto(&format!(
        "{base}/entity/model-version/cxr-pneumonia-triage-1.1"
    ))
    .await;
    let card = b.text("main").await;
    for expected in [
        "Intended use",
        "nccid-cxr-train@1.0",
        "held back: not used in training",
        "By subgroup",
        "LIVE",
    ] {
        assert!(card.contains(expected), "the model card shows {expected:?}");
    }
    check_page(&b, &base, &[], "model card").await;
    b.screenshot("model-card").await;
    pin_ledger_key(&b, &base, &server).await;

    // Downstream of the withdrawn source, now and as of the checkpoint
    // before the deployment was recorded.
    let deployment = api
        .ok(
            &admin,
            "{ entity(subject: \"deployment/riverside-cxr-triage\") { createdBy { leafIndex } } }",
            json!({}),
        )
        .await;
    let deployed_at = deployment["entity"]["createdBy"]["leafIndex"]
        .as_u64()
        .unwrap();
    b.goto(&format!("{base}/lineage")).await;
    b.fill("#subject", "dataset-version/northgate-cxr@1.0")
        .await;
    b.click("#direction option[value=downstream]").await;
    b.fill("#depth", "10").await;
    b.follow("form.inline button").await;
    let now = b.text("main").await;
    assert!(
        now.contains("riverside-cxr-triage"),
        "the live deployment is downstream"
    );
    b.wait_text("[data-graph-status]", "Drawn:").await;
    check_page(&b, &base, &[], "lineage").await;
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(outcome, "verified", "{status}");
    assert!(status.starts_with("Verified in this browser"), "{status}");
    let facts = b
        .contents("[data-evidence-facts] li[data-fact=verified]")
        .await;
    assert!(
        facts.iter().any(|f| f.contains("checkpoint of tree size"))
            && facts
                .iter()
                .any(|f| f.contains("is in the ledger (inclusion proof)"))
            && facts.iter().any(|f| f.contains("signed by"))
            && facts.iter().any(|f| f.contains("edge ")),
        "each kind of fact is marked verified: {facts:?}"
    );
    b.screenshot("lineage").await;
    b.fill("#as_of", &deployed_at.to_string()).await;
    b.follow("form.inline button").await;
    let then = b.text("main").await;
    assert!(
        then.contains(&format!("tree size {deployed_at}")),
        "the page names the checkpoint it shows: {then}"
    );
    assert!(then.contains("This is history"));
    assert!(
        !then.contains("riverside-cxr-triage"),
        "before its deployment was recorded, the model was deployed nowhere"
    );
    // As of a date: before the ledger existed there is no checkpoint, and
    // the end of a day to come is as of the latest one signed.
    b.fill("#as_of", "").await;
    b.fill("#when", "2000-01-01").await;
    b.follow("form.inline button").await;
    let none = b.text("main").await;
    assert!(
        none.contains("no checkpoint was signed at or before 2000-01-01T23:59:59Z"),
        "{none}"
    );
    b.goto(&format!(
        "{base}/lineage?subject=dataset-version%2Fnorthgate-cxr%401.0&direction=downstream&depth=10&when=2999-12-31"
    ))
    .await;
    let dated = b.text("main").await;
    assert!(
        dated.contains("riverside-cxr-triage") && dated.contains("the last signed by 2999-12-31"),
        "{dated}"
    );

    // The impact report: a list, live deployments first, with exports.
    b.follow("nav a[href=\"/impact\"]").await;
    b.fill("#version", "northgate-cxr@1.0").await;
    b.follow("form.inline button").await;
    let first_row = b.text("ol.impact > li").await;
    assert!(
        first_row.contains("riverside-cxr-triage") && first_row.contains("LIVE"),
        "the live deployment comes first: {first_row}"
    );
    assert!(
        first_row.contains("riverside")
            && first_row.contains("northgate-cxr@1.0 → ")
            && first_row.contains("→ riverside-cxr-triage (used)"),
        "each affected entity names its site and how it is reached: {first_row}"
    );
    let rows = b.texts("ol.impact > li").await.len();
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(
        outcome, "verified",
        "the impact answer verifies too: {status}"
    );
    b.screenshot("impact").await;
    b.wait_text("[data-graph-status]", "Drawn:").await;
    check_page(&b, &base, &[], "impact").await;
    // The exports, fetched by the page itself with its session.
    let csv = b
        .script(
            "return fetch(document.querySelector('a[href^=\"/impact.csv\"]').href)\
             .then(r => r.text())",
        )
        .await;
    let csv = csv.as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("subject,type,label,status,hops"));
    assert_eq!(lines.len() - 1, rows, "the CSV has the table's rows");
    assert!(lines[1].starts_with("deployment/riverside-cxr-triage,"));
    let exported = b
        .script(
            "return fetch(document.querySelector('a[href^=\"/impact.json\"]').href)\
             .then(r => r.json())",
        )
        .await;
    assert_eq!(
        exported["impact"]["affected"].as_array().unwrap().len(),
        rows
    );
    assert_eq!(exported["impact"]["liveDeployments"], 1);
    assert_eq!(exported["checkpoint"]["size"], exported["impact"]["asOf"]);

    // History as a timeline, and the ledger page with its verifier key.
    b.goto(&format!(
        "{base}/history?subject=deployment%2Friverside-cxr-triage"
    ))
    .await;
    let timeline = b.texts(".timeline li").await;
    assert!(!timeline.is_empty() && timeline[0].contains("leaf"));
    let signers = b.texts(".timeline .signer").await;
    assert_eq!(
        signers.len(),
        timeline.len(),
        "each event names its signing key"
    );
    for k in &signers {
        let (name, id) = k
            .rsplit_once('+')
            .unwrap_or_else(|| panic!("a key id: {k}"));
        assert!(
            !name.is_empty() && id.len() == 8 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "a key id is <name>+<8 hex digits>: {k}"
        );
    }
    check_page(&b, &base, &[], "history").await;
    b.screenshot("history").await;
    b.follow("nav a[href=\"/ledger\"]").await;
    let ledger = b.text("main").await;
    assert!(ledger.contains("signed events") && ledger.contains("C2SP"));
    b.screenshot("ledger").await;

    // GraphiQL, offline: its Docs pane reads the schema by introspection,
    // and a query runs as the signed-in person.
    b.follow("nav a[href=\"/graphql\"]").await;
    b.find(".graphiql-container").await;
    b.click("button[aria-label=\"Show Documentation Explorer\"]")
        .await;
    b.wait_text(".graphiql-doc-explorer", "QueryRoot").await;
    b.click(".graphiql-execute-button").await;
    b.wait_text(".graphiql-response", "governance-board").await;
    b.screenshot("graphiql").await;
    check_page(&b, &base, &[], "GraphiQL").await;
    let requests = b.requests().await;
    assert!(
        requests.iter().all(|r| r.starts_with(&base)),
        "GraphiQL loaded something from elsewhere: {requests:?}"
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_supplied_text_stays_text_and_state_changes_come_only_from_clew_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let base = server.base.clone();
    let api = Api::new(&base);
    let ingest = server.demo_token("model-team");
    let title = "<img src=x onerror=alert(1)>";
    let description = "<script>document.title='owned'</script> \"quoted\" & <b>bold</b>";
    api.ok(
        &ingest,
        "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }",
        json!({"i": {"datasetId": "xss-probe", "title": title, "description": description,
               "custodianSiteId": "riverside", "accessLevel": "ACCESS_LEVEL_OPEN",
               "licence": "CC-BY-4.0", "tags": ["<svg onload=alert(2)>"]}}),
    )
    .await;

    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    sign_in_as(&b, &base, "ada-researcher").await;
    b.goto(&format!("{base}/entity/dataset/xss-probe")).await;
    assert_eq!(b.text("h1").await, title, "the title is shown as text");
    assert!(b.text(".lead").await.contains("<script>"));
    let created = b
        .script(
            "return document.querySelectorAll('main img, main script, main svg, main b').length",
        )
        .await;
    assert_eq!(created, 0, "no element came from user-supplied text");
    assert_eq!(
        b.script("return document.title").await,
        format!("{title} — Clew")
    );
    b.screenshot("user-text-stays-text").await;

    // The accessibility and keyboard checks every page passes can fail: an
    // unlabelled field and a link Tab skips are found.
    b.script(
        "const i = document.createElement('input'); document.querySelector('main').append(i); \
         const a = document.createElement('a'); a.href = '/'; a.tabIndex = -1; a.textContent = 'skipped'; \
         document.querySelector('main').append(a); return true",
    )
    .await;
    let violations = b.axe_violations().await;
    assert!(
        violations.iter().any(|v| v.contains("label")),
        "axe-core finds the unlabelled field: {violations:?}"
    );
    let missed = b.controls_keyboard_misses().await;
    assert!(
        missed.len() == 1 && missed[0].contains("skipped"),
        "the keyboard check finds the skipped link: {missed:?}"
    );

    // Every page carries the policy; nothing is cached.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(format!("{base}/sign-in")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["x-frame-options"], "DENY");

    // A sign-in or request posted from another site is refused.
    let forged = client
        .post(format!("{base}/sign-in"))
        .header("origin", "http://evil.example")
        .form(&[("demo", "governance-board")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged
        .text()
        .await
        .unwrap()
        .contains("not sent from a Clew page"));
    assert!(forged_has_no_cookie(&client, &base).await);
    // Signed in (a session cookie of its own), a form without the page's
    // anti-forgery token is refused even from the same origin.
    let signed = client
        .post(format!("{base}/sign-in"))
        .header("origin", base.as_str())
        .form(&[("token", server.demo_token("ada-researcher"))])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(&server.demo_token("ada-researcher")));
    let session = cookie.split(';').next().unwrap().to_string();
    let no_csrf = client
        .post(format!("{base}/access-requests"))
        .header("origin", base.as_str())
        .header("cookie", &session)
        .form(&[
            ("datasets", "moorland-ct"),
            ("purpose", "p"),
            ("days", "30"),
            ("agreement_id", "a"),
            ("agreement_version", "1"),
            ("accept", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    b.quit().await;
}

/// A refused sign-in sets no session.
async fn forged_has_no_cookie(client: &reqwest::Client, base: &str) -> bool {
    let r = client
        .post(format!("{base}/sign-in"))
        .header("origin", "http://evil.example")
        .form(&[("demo", "governance-board")])
        .send()
        .await
        .unwrap();
    r.headers().get("set-cookie").is_none()
}

/// A hostile server in front of Clew: every request passes through
/// unchanged, except that each proof-carrying answer it hands on has the
/// envelope of the event its first edge cites altered by one bit.
async fn tampering_proxy(upstream: String) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move { forward_tampered(&client, &upstream, req).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn forward_tampered(
    client: &reqwest::Client,
    upstream: &str,
    req: axum::extract::Request,
) -> axum::response::Response {
    use base64::{engine::general_purpose::STANDARD as B64, Engine};
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut forwarded = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        forwarded = forwarded.header(name, value);
    }
    let answer = forwarded.body(bytes).send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut body = answer.bytes().await.unwrap().to_vec();
    if path.starts_with("/session/proofs/") && status == 200 {
        let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let leaf = doc["edges"][0]["leafIndex"].clone();
        let event = doc["events"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["leafIndex"] == leaf)
            .unwrap();
        let mut envelope = B64.decode(event["envelope"].as_str().unwrap()).unwrap();
        let middle = envelope.len() / 2;
        envelope[middle] ^= 0x01;
        event["envelope"] = B64.encode(envelope).into();
        body = serde_json::to_vec(&doc).unwrap();
    }
    let mut response = axum::response::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response.body(axum::body::Body::from(body)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_panel_names_the_fact_a_tampering_server_broke() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let hostile = tampering_proxy(server.base.clone()).await;
    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    sign_in_as(&b, &hostile, "governance-board").await;
    let lineage = format!(
        "{hostile}/lineage?subject=deployment%2Friverside-cxr-triage&direction=upstream&depth=10"
    );

    // Nothing pinned: the panel verifies nothing and says why.
    b.goto(&lineage).await;
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(outcome, "no-key", "{status}");
    assert!(status.contains("No ledger key is pinned"), "{status}");

    // With the real key pinned, the altered event is named.
    pin_ledger_key(&b, &hostile, &server).await;
    b.goto(&lineage).await;
    let (outcome, status) = verify_evidence(&b).await;
    let api = Api::new(&server.base);
    let (_, genuine) = api
        .get(
            Some(&server.demo_token("governance-board")),
            "/proofs/lineage?subject=deployment/riverside-cxr-triage&direction=upstream&depth=10",
        )
        .await;
    let genuine: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    let altered = genuine["edges"][0]["leafIndex"].as_u64().unwrap();
    assert_eq!(outcome, "failed", "{status}");
    assert!(
        status.contains(&format!("leaf {altered} inclusion"))
            && status.contains("does not lead to the checkpoint's root"),
        "the panel names the altered leaf: {status}"
    );
    let failed = b
        .contents("[data-evidence-facts] li[data-fact=failed]")
        .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    b.script("document.querySelector('[data-evidence]').scrollIntoView(); return true")
        .await;
    b.screenshot("evidence-tampered").await;

    // The same page straight from Clew verifies.
    sign_in_as(&b, &server.base, "governance-board").await;
    pin_ledger_key(&b, &server.base, &server).await;
    b.goto(&lineage.replace(&hostile, &server.base)).await;
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(outcome, "verified", "{status}");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_panel_checks_the_cosignatures_of_the_witnesses_the_person_pinned() {
    use clew_test_witnesses::{ClewWitness, Witness};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_str = data.to_string_lossy().into_owned();
    let clew = std::path::PathBuf::from(env!("CARGO_BIN_EXE_clew"));
    // The demo recorded first, so the witnesses can be told the ledger's key.
    let (witness, absent) = tokio::task::spawn_blocking({
        let (tmp, clew) = (tmp.path().to_path_buf(), clew.clone());
        move || {
            crate::support::ok(&["demo", "--data-dir", &data_str]);
            let vkey = tmp.join("data/keys/ledger.vkey");
            let witness =
                ClewWitness::start(&clew, &tmp.join("w1"), "witness.example.org/w1", &[&vkey]);
            // A witness this ledger never feeds: it cosigns nothing.
            let absent =
                ClewWitness::start(&clew, &tmp.join("w2"), "witness.example.org/w2", &[&vkey]);
            (witness, absent)
        }
    })
    .await
    .unwrap();
    let server = tokio::task::spawn_blocking({
        let (data, flag) = (data.clone(), witness.flag());
        move || {
            Server::start(
                &data,
                &[
                    "demo",
                    "--serve",
                    "--witness",
                    &flag,
                    "--witness-quorum",
                    "1",
                ],
            )
        }
    })
    .await
    .unwrap();
    let base = server.base.clone();
    let api = Api::new(&base);
    let admin = server.admin_token();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, note) = api.get(Some(&admin), "/checkpoint").await;
        if String::from_utf8_lossy(&note).contains("\u{2014} witness.example.org/w1 ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the witness never cosigned the checkpoint"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    sign_in_as(&b, &base, "governance-board").await;
    pin_ledger_key(&b, &base, &server).await;
    let pin_witnesses = |keys: String, quorum: &'static str| {
        let b = &b;
        async move {
            b.fill("#witness-keys", &keys).await;
            b.fill("#witness-quorum", quorum).await;
            b.click("[data-pin-witnesses]").await;
            b.wait_text("[data-witness-status]", "Pinned:").await
        }
    };
    let said = pin_witnesses(witness.vkey().to_string(), "1").await;
    assert!(said.contains("1 witnesses, quorum 1"), "{said}");
    let lineage = format!(
        "{base}/lineage?subject=deployment%2Friverside-cxr-triage&direction=upstream&depth=10"
    );
    b.goto(&lineage).await;
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(outcome, "verified", "{status}");
    assert!(status.contains("its witnesses' cosignatures"), "{status}");
    let facts = b
        .contents("[data-evidence-facts] li[data-fact=verified]")
        .await;
    assert!(
        facts
            .iter()
            .any(|f| f.contains("cosigned by the witness witness.example.org/w1")),
        "{facts:?}"
    );

    // A quorum that needs the witness that never saw this log fails, naming it.
    b.goto(&format!("{base}/ledger")).await;
    pin_witnesses(format!("{}\n{}", witness.vkey(), absent.vkey()), "2").await;
    b.goto(&lineage).await;
    let (outcome, status) = verify_evidence(&b).await;
    assert_eq!(outcome, "failed", "{status}");
    assert!(
        status.contains("witness quorum")
            && status.contains("cosigned by 1 of the pinned witnesses, and the quorum is 2")
            && status.contains("witness.example.org/w2"),
        "{status}"
    );
    b.quit().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_opens_a_wide_fan_out_the_feed_is_live_and_the_register_is_public() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let base = server.base.clone();
    let api = Api::new(&base);
    let team = server.demo_token("model-team");
    let b = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    sign_in_as(&b, &base, "governance-board").await;

    // The ledger page's feed opens with the recent past, then shows each
    // event as it is sequenced.
    b.goto(&format!("{base}/ledger")).await;
    b.wait_text("[data-feed-status]", "Live").await;
    let recent = b.texts(".feed-events li").await;
    assert!(!recent.is_empty(), "the feed opens with recent events");
    const RUNS: usize = 14;
    for i in 0..RUNS {
        api.ok(
            &team,
            "mutation($i: TrainingRunInput!) { recordTrainingRun(input: $i) { leafIndex } }",
            json!({"i": {"trainingRunId": format!("fan-run-{i:02}"), "modelName": "fan",
                   "used": [{"datasetVersionId": "nccid-cxr-train@1.0", "role": "DATASET_ROLE_TRAIN"}],
                   "codeDigest": "git:4f2a9c1e7b3d"}}),
        )
        .await;
    }
    let top = b
        .wait_text(
            ".feed-events li",
            &format!("training-run/fan-run-{:02}", RUNS - 1),
        )
        .await;
    assert!(
        top.contains("Training run recorded") && top.contains("by model-team"),
        "{top}"
    );
    check_page(&b, &base, &[], "ledger with its feed").await;
    b.script("document.querySelector('.feed-events').scrollTop = 0; document.querySelector('.feed').scrollIntoView(); return true")
        .await;
    b.screenshot("ledger-feed").await;

    // Downstream of the training set, the runs are one box with their
    // count; a press on the keyboard opens it, and its close button closes it.
    b.goto(&format!(
        "{base}/lineage?subject=dataset-version%2Fnccid-cxr-train%401.0&direction=downstream&depth=2"
    ))
    .await;
    b.wait_text("[data-graph-status]", "Drawn:").await;
    let group = "svg .graph-node.group[data-group=\"1|Training run\"]";
    let label = b.text(&format!("{group} .graph-label")).await;
    let runs: usize = label
        .split_whitespace()
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a count in {label:?}"));
    assert!(runs >= RUNS, "{label}");
    assert!(b
        .text(&format!("{group} .graph-kind"))
        .await
        .ends_with("hop 1"));
    let boxes_closed = b.texts("svg .graph-node").await.len();
    check_page(&b, &base, &[], "lineage with its graph").await;
    b.script("document.querySelector('.graph').scrollIntoView(); return true")
        .await;
    b.screenshot("lineage-graph").await;
    b.press(group, "\u{E007}").await;
    let status = b.wait_text("[data-graph-status]", "Drawn:").await;
    let opened = b.texts("svg a.graph-node").await.join(" | ");
    assert!(
        opened.contains("fan-run-00") && opened.contains(&format!("fan-run-{:02}", RUNS - 1)),
        "each run is a box of its own once opened: {opened} ({status})"
    );
    assert!(b.texts("svg .graph-node").await.len() >= boxes_closed + RUNS - 1);
    let focused = b.script("return document.activeElement.textContent").await;
    assert!(
        focused
            .as_str()
            .unwrap_or_default()
            .starts_with("Close Training run at hop 1"),
        "focus moves to the button that closes it again: {focused}"
    );
    check_page(&b, &base, &[], "lineage with a group opened").await;
    b.script("document.querySelector('.graph').scrollIntoView(); return true")
        .await;
    b.screenshot("lineage-graph-opened").await;
    b.click(".graph-closers button").await;
    b.find(group).await;
    assert_eq!(b.texts("svg .graph-node").await.len(), boxes_closed);

    // The impact report's graph comes after its list.
    b.goto(&format!("{base}/impact?version=nccid-cxr-train%401.0"))
        .await;
    b.wait_text("[data-graph-status]", "Drawn:").await;
    assert!(b.script("return document.querySelector('ol.impact').compareDocumentPosition(document.querySelector('.graph')) & Node.DOCUMENT_POSITION_FOLLOWING").await.as_u64().unwrap_or(0) > 0, "the list comes first");
    assert!(!b.texts("svg .graph-node").await.is_empty());
    check_page(&b, &base, &[], "impact with its graph").await;
    b.script("document.querySelector('.graph').scrollIntoView(); return true")
        .await;
    b.screenshot("impact-graph").await;

    // A path nothing serves: a page to a browser, JSON to anything else.
    b.goto(&format!("{base}/no-such-page")).await;
    assert_eq!(b.text("h1").await, "Not Found");
    assert!(b
        .text("main")
        .await
        .contains("there is no page at /no-such-page"));
    let plain = reqwest::get(format!("{base}/no-such-page")).await.unwrap();
    assert_eq!(plain.status(), 404);
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    // The data-use register is public: signed out, datasets that are not
    // open show as "a dataset you may not see".
    b.goto(&format!("{base}/ledger")).await;
    b.follow("form.who button").await;
    b.goto(&format!("{base}/data-use-register")).await;
    assert!(b.text("h1").await.contains("Data-use register"));
    let register = b.text("main").await;
    assert!(
        register.contains("This is the public register"),
        "{register}"
    );
    assert_eq!(
        b.texts("nav[aria-label=Main] a").await,
        vec!["Data uses".to_string()],
        "signed out, only the public page is offered"
    );
    assert!(b.text("header .who").await.contains("Sign in"));
    let rows = b.texts("table.register tbody tr").await;
    assert!(!rows.is_empty(), "the demo's approved uses are listed");
    check_page(&b, &base, HIDDEN_FROM_ADA, "public data-use register").await;
    b.screenshot("data-use-register").await;
    b.quit().await;
}
