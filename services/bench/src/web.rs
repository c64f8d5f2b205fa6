//! `clew-bench web`: the web catalogue's pages against the API calls they
//! are built from, over the synthetic national catalogue, in one run.
//!
//! For each page — search, dataset, model card, 10-hop lineage, and the
//! impact report of the hub version (about 10,000 nodes downstream at the
//! default scale) — the server time of `GET <page>` (request sent to last
//! byte received, on loopback, with the session cookie) is measured
//! interleaved with the server time of the GraphQL documents the page runs
//! (`clew_web::documents`, same variables, posted in sequence with the
//! bearer token). Then a real headless Chromium (chromedriver, from the
//! operating system's packages) loads each page and reports its navigation
//! timing (start to `loadEvent` end); for the impact report, also the time
//! until the page has scrolled to its last row and painted.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// One page's figures.
#[derive(Debug, Default, Serialize)]
pub struct PageFigures {
    pub page: &'static str,
    /// Server time of the page, ms.
    pub page_p50_ms: f64,
    pub page_p99_ms: f64,
    /// Server time of the API calls it is built from, ms.
    pub api_p50_ms: f64,
    pub api_p99_ms: f64,
    /// page p50 / api p50 (goal ≤ 1.5).
    pub ratio: f64,
    /// Browser navigation, start to load end, ms.
    pub browser_p50_ms: f64,
    pub browser_p99_ms: f64,
}

/// Figures printed as the last line of `clew-bench web`.
#[derive(Debug, Default, Serialize)]
pub struct WebBench {
    /// Events in the served catalogue.
    pub events: u64,
    /// Requests per page and per API side.
    pub requests: usize,
    /// Nodes in the impact report.
    pub impact_nodes: u64,
    /// The impact report loaded, scrolled to its last row and painted,
    /// median, ms (goal < 1,000).
    pub impact_usable_p50_ms: f64,
    pub pages: Vec<PageFigures>,
}

/// A page and the GraphQL documents it runs.
struct Case {
    name: &'static str,
    path: String,
    calls: Vec<(String, Value)>,
}

/// The `q` quantile of `samples` (sorted here).
fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    crate::blobs::percentile(samples, q)
}

/// One GraphQL document's `data` (its `errors` are an error).
async fn graphql(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    doc: &str,
    vars: &Value,
) -> Result<Value> {
    Ok(crate::api::post(client, base, token, doc, vars.clone()).await?["data"].take())
}

/// The pages measured, with the documents each runs (the model card's
/// second document depends on the first answer, as the page's does).
async fn cases(client: &reqwest::Client, base: &str, token: &str) -> Result<Vec<Case>> {
    use clew_web::documents::*;
    let input = json!({
        "text": "chest imaging", "filters": [], "sliceThicknessMm": { "min": null, "max": null },
        "includeWithdrawn": false, "sort": "RELEVANCE", "limit": 20, "cursor": null,
    });
    let model = "model-version/mv-1";
    let card = graphql(client, base, token, ENTITY, &json!({ "subject": model })).await?;
    let mut linked: Vec<String> = Vec::new();
    for e in card["entity"]["upstream"].as_array().into_iter().flatten() {
        let to = e["to"].as_str().unwrap_or_default();
        if to.starts_with("training-run/") {
            linked.push(to.into());
        }
    }
    for e in card["entity"]["downstream"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let from = e["from"].as_str().unwrap_or_default();
        if from.starts_with("validation/") || from.starts_with("deployment/") {
            linked.push(from.into());
        }
    }
    ensure!(
        !linked.is_empty(),
        "{model} has no training run in the catalogue"
    );
    let linked_vars: serde_json::Map<String, Value> = linked
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("s{i}"), json!(s)))
        .collect();
    let size = graphql(client, base, token, "{ checkpoint { size } }", &json!({})).await?
        ["checkpoint"]["size"]
        .as_u64()
        .context("no checkpoint")?;
    let hub = clew::synthetic::HUB.trim_start_matches("dataset-version/");
    Ok(vec![
        Case {
            name: "search",
            path: "/?q=chest+imaging".into(),
            calls: vec![(SEARCH.into(), json!({ "input": input }))],
        },
        Case {
            name: "dataset",
            path: "/entity/dataset/ds-000001".into(),
            calls: vec![(ENTITY.into(), json!({ "subject": "dataset/ds-000001" }))],
        },
        Case {
            name: "model card",
            path: format!("/entity/{model}"),
            calls: vec![
                (ENTITY.into(), json!({ "subject": model })),
                (entities_document(linked.len()), Value::Object(linked_vars)),
            ],
        },
        Case {
            name: "10-hop lineage",
            path: "/lineage?subject=deployment%2Fdep-1&direction=upstream&depth=10".into(),
            calls: vec![
                (
                    LINEAGE.into(),
                    json!({ "subject": "deployment/dep-1", "direction": "UPSTREAM", "depth": 10, "asOf": null }),
                ),
                (CHECKPOINT_AT.into(), json!({ "size": size })),
            ],
        },
        Case {
            name: "impact",
            path: format!("/impact?version={hub}"),
            calls: vec![
                (IMPACT.into(), json!({ "version": hub, "asOf": null })),
                (CHECKPOINT_AT.into(), json!({ "size": size })),
            ],
        },
    ])
}

/// Builds (or reuses) the catalogue, serves it, and measures.
pub fn web(
    datasets: u64,
    requests: usize,
    visits: usize,
    keep: Option<&std::path::Path>,
    exe: &std::path::Path,
) -> Result<WebBench> {
    let (_tmp, data, events) = crate::api::catalogue(datasets, keep)?;
    let (child, base) = crate::api::start_serve(exe, data.root(), &[], &[])?;
    let token = std::fs::read_to_string(data.root().join("admin.token"))?
        .trim()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(&base, &token, requests, visits));
    crate::api::stop_serve(child);
    let mut r = result?;
    r.events = events;
    Ok(r)
}

async fn measure(base: &str, token: &str, requests: usize, visits: usize) -> Result<WebBench> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed = client
        .post(format!("{base}/sign-in"))
        .header("origin", base)
        .form(&[("token", token)])
        .send()
        .await?;
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("signing in gave no session")?
        .to_string();
    let cases = cases(&client, base, token).await?;
    let mut out = WebBench {
        requests,
        ..Default::default()
    };
    let pb = clew::progress_bar((cases.len() * requests) as u64, "pages vs API");
    for case in &cases {
        let (mut page, mut api) = (Vec::new(), Vec::new());
        // One of each first, unmeasured (caches, connections).
        for round in 0..=requests {
            let started = Instant::now();
            let r = client
                .get(format!("{base}{}", case.path))
                .header("cookie", &cookie)
                .send()
                .await?;
            ensure!(r.status() == 200, "{} answered {}", case.path, r.status());
            let body = r.bytes().await?;
            let page_ms = started.elapsed().as_secs_f64() * 1e3;
            ensure!(body.len() > 1000, "{} is nearly empty", case.path);
            let started = Instant::now();
            for (doc, vars) in &case.calls {
                graphql(&client, base, token, doc, vars).await?;
            }
            let api_ms = started.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                page.push(page_ms);
                api.push(api_ms);
                pb.inc(1);
            }
        }
        let (p50, a50) = (quantile(&mut page, 0.5), quantile(&mut api, 0.5));
        out.pages.push(PageFigures {
            page: case.name,
            page_p50_ms: p50,
            page_p99_ms: quantile(&mut page, 0.99),
            api_p50_ms: a50,
            api_p99_ms: quantile(&mut api, 0.99),
            ratio: p50 / a50.max(1e-9),
            ..Default::default()
        });
    }
    pb.finish_and_clear();
    let impact = graphql(
        &client,
        base,
        token,
        "query($v: String!) { impact(datasetVersion: $v) { affected { subject } } }",
        &json!({ "v": clew::synthetic::HUB.trim_start_matches("dataset-version/") }),
    )
    .await?;
    out.impact_nodes = impact["impact"]["affected"]
        .as_array()
        .map_or(0, |a| a.len() as u64);
    browse(base, token, &cases, visits, &mut out).await?;
    Ok(out)
}

/// Loads each page `visits` times in Chromium; navigation timing.
async fn browse(
    base: &str,
    token: &str,
    cases: &[Case],
    visits: usize,
    out: &mut WebBench,
) -> Result<()> {
    let browser = clew_test_browser::Browser::start()
        .await
        .map_err(anyhow::Error::msg)?;
    let c = &browser.client;
    c.goto(&format!("{base}/sign-in")).await?;
    let field = c.find(fantoccini::Locator::Css("#token")).await?;
    field.send_keys(token).await?;
    c.find(fantoccini::Locator::Css("form.token button"))
        .await?
        .click()
        .await?;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css("#q"))
        .await?;
    let pb = clew::progress_bar((cases.len() * visits) as u64, "browser");
    let mut usable = Vec::new();
    for (case, figures) in cases.iter().zip(out.pages.iter_mut()) {
        let mut times = Vec::new();
        for _ in 0..visits {
            c.goto(&format!("{base}{}", case.path)).await?;
            let nav = c
                .execute(
                    "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime",
                    vec![],
                )
                .await?;
            let ms = nav.as_f64().context("no navigation timing")?;
            times.push(ms);
            if case.name == "impact" {
                // Usable: loaded, then scrolled to the last row and painted
                // (two animation frames after the scroll).
                let scroll = c
                    .execute(
                        "return new Promise(done => { const t0 = performance.now(); \
                           const rows = document.querySelectorAll('ol.impact > li'); \
                           rows[rows.length - 1].scrollIntoView(); \
                           requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0))); })",
                        vec![],
                    )
                    .await?;
                usable.push(ms + scroll.as_f64().context("no scroll timing")?);
            }
            pb.inc(1);
        }
        figures.browser_p50_ms = quantile(&mut times, 0.5);
        figures.browser_p99_ms = quantile(&mut times, 0.99);
    }
    pb.finish_and_clear();
    out.impact_usable_p50_ms = quantile(&mut usable, 0.5);
    browser.quit().await;
    Ok(())
}
