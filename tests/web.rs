//! The web catalogue in a real browser: headless Chromium driven through
//! chromedriver (both from the operating system's packages) against
//! `clew demo --serve`. A researcher's journey and a governance journey,
//! the role matrix on pages (nothing restricted reaches a researcher's DOM
//! or any response the page loaded), user-supplied text staying text under
//! the Content-Security-Policy, no request leaving the origin, and
//! cross-site form posts refused. Each page's screenshot is saved in
//! `target/web-screenshots/`.

use serde_json::json;

use crate::support::browser::Browser;
use crate::support::server::{Api, Server};

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
    b.click(&format!("button[name=demo][value={principal}]"))
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_searches_filters_opens_a_dataset_and_asks_for_access() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::demo_async(&tmp.path().join("data")).await;
    let base = server.base.clone();
    let b = Browser::start().await;

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
    b.click(".box button").await;
    let heading = b.text("#results-heading").await;
    let total: u64 = heading
        .split_whitespace()
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a result count in {heading:?}"));
    assert!(total > 0, "a typo still finds chest datasets: {heading}");
    check_page(&b, &base, HIDDEN_FROM_ADA, "search").await;
    b.screenshot("search").await;

    // A facet narrows the results, and its counts are the viewer's own.
    b.click("input[name=f][value=\"modality=CT\"]").await;
    b.click(".facets button[type=submit]").await;
    assert!(b.url().await.contains("f=modality%3DCT"));
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
    b.click(".hit-title").await;
    assert!(b.text("h1").await.contains("CT"));
    assert!(b.text(".facts").await.contains("Manifest digest"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "dataset version").await;
    b.screenshot("dataset-version").await;
    b.click("main p a[href^=\"/entity/dataset/\"]").await;
    let access = b.text(".access").await;
    assert!(
        access.contains("You hold a live access grant"),
        "the dataset page says what the caller's own access is: {access}"
    );
    assert!(b.text("table").await.contains("Instances"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "dataset").await;
    b.screenshot("dataset").await;
    b.click("table a[href^=\"/entity/dataset-version/\"]").await;
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
    b.click("a[href^=\"/lineage?\"]").await;
    b.fill("#depth", "10").await;
    b.click("form.inline button").await;
    assert!(b.text(".checkpoint").await.contains("tree size"));
    check_page(&b, &base, HIDDEN_FROM_ADA, "lineage").await;

    // Asking for access to a dataset by its id.
    b.click("nav a[href=\"/access\"]").await;
    b.fill("#datasets", "moorland-ct").await;
    b.fill("#purpose", "Scanner-shift robustness study").await;
    b.fill("#days", "90").await;
    b.fill("#agreement_id", "nccid-data-access-agreement").await;
    b.fill("#agreement_version", "4.0").await;
    b.click("#accept").await;
    b.click("form.request button").await;
    assert!(b.url().await.ends_with("/access"));
    let mine = b.text(".request-card").await;
    assert!(
        mine.contains("moorland-ct") && mine.contains("submitted"),
        "the new request is listed first, submitted: {mine}"
    );
    b.screenshot("access-requests").await;
    // Governance sees it in the ledger-backed queue.
    let api = Api::new(&base);
    let queue = api
        .ok(
            &server.demo_token("governance-board"),
            "{ accessReviewQueue { requester datasetIds purpose } }",
            json!({}),
        )
        .await;
    assert!(
        queue["accessReviewQueue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["requester"] == "ada-researcher" && r["datasetIds"][0] == "moorland-ct"),
        "{queue}"
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
    let b = Browser::start().await;
    sign_in_as(&b, &base, "governance-board").await;

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
    b.click("form.inline button").await;
    let now = b.text("main").await;
    assert!(
        now.contains("riverside-cxr-triage"),
        "the live deployment is downstream"
    );
    check_page(&b, &base, &[], "lineage").await;
    b.screenshot("lineage").await;
    b.fill("#as_of", &deployed_at.to_string()).await;
    b.click("form.inline button").await;
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

    // The impact report: a list, live deployments first, with exports.
    b.click("nav a[href=\"/impact\"]").await;
    b.fill("#version", "northgate-cxr@1.0").await;
    b.click("form.inline button").await;
    let first_row = b.text("table.impact tbody tr").await;
    assert!(
        first_row.contains("riverside-cxr-triage") && first_row.contains("LIVE"),
        "the live deployment comes first: {first_row}"
    );
    let rows = b.texts("table.impact tbody tr").await.len();
    b.screenshot("impact").await;
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
    b.screenshot("history").await;
    b.click("nav a[href=\"/ledger\"]").await;
    let ledger = b.text("main").await;
    assert!(ledger.contains("signed events") && ledger.contains("C2SP"));
    b.screenshot("ledger").await;
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

    let b = Browser::start().await;
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
