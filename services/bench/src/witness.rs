//! `clew-bench witness`: what witnessing costs, measured against the same
//! server without it in the same run.
//!
//! Each run makes two fresh ledgers (`clew init`) and serves each with
//! `clew serve` (the release binary): one with no witnesses, one sending
//! every checkpoint to two real witnesses on this machine — litewitness
//! (filippo.io/torchwood, built by tests/setup.sh) and `clew witness` —
//! with a quorum of two. On each, C clients record N events (site
//! registrations through GraphQL, each answered once sequenced and applied);
//! the ratio of the two rates is the goal (≥ 0.95). Then, on the witnessed
//! server, one event at a time after a quiet spell longer than the
//! feeder's interval: the time from its answer (its checkpoint signed)
//! until `/checkpoint` carries both cosignatures is one latency sample.
//! Under load a witness is sent the latest checkpoint at most once per
//! interval (250 ms), which bounds the latency there instead. Medians of
//! the runs; latency percentiles over every sample.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clew_test_witnesses::{ClewWitness, LiteWitness, Witness};
use serde::Serialize;
use serde_json::json;

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct WitnessBench {
    pub runs: usize,
    pub events: usize,
    pub clients: usize,
    pub witnesses: Vec<String>,
    /// Events/s recorded without witnesses, and with (medians).
    pub events_per_s_off: f64,
    pub events_per_s_on: f64,
    /// on / off (goal ≥ 0.95).
    pub ratio: f64,
    /// Signed → witnessed by both, milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_samples: usize,
}

const REGISTER: &str = "mutation($i: SiteInput!) { registerSite(input: $i) { leafIndex } }";

fn read_token(dir: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(dir.join("admin.token"))
        .context("the server's admin token")?
        .trim()
        .to_string())
}

/// Records `events` site registrations with `clients` concurrent clients; events/s.
async fn record(base: &str, token: &str, events: usize, clients: usize, tag: &str) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, http, base, token, tag) = (
            next.clone(),
            http.clone(),
            base.to_string(),
            token.to_string(),
            tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return anyhow::Ok(());
                }
                let vars = json!({"i": {"siteId": format!("{tag}-{i}"), "name": format!("Bench Trust {i}"), "kind": "SITE_KIND_HOSPITAL_TRUST"}});
                crate::api::post(&http, &base, &token, REGISTER, vars).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn checkpoint(http: &reqwest::Client, base: &str, token: &str) -> Result<String> {
    Ok(http
        .get(format!("{base}/checkpoint"))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?)
}

/// One event at a time: its answer → both cosignatures on the served checkpoint.
async fn latencies(
    base: &str,
    token: &str,
    names: &[String],
    samples: usize,
    out: &mut Vec<f64>,
) -> Result<()> {
    let http = reqwest::Client::new();
    for i in 0..samples {
        // Apart by more than the feeder's interval: each sample is an
        // event after a quiet spell (under load a witness is sent the
        // latest checkpoint once per `clew_witness::feeder::MIN_INTERVAL`).
        tokio::time::sleep(clew_witness::feeder::MIN_INTERVAL + Duration::from_millis(50)).await;
        let vars = json!({"i": {"siteId": format!("latency-{i}"), "name": format!("Latency Trust {i}"), "kind": "SITE_KIND_HOSPITAL_TRUST"}});
        let answer = crate::api::post(&http, base, token, REGISTER, vars).await?;
        let t = Instant::now();
        let leaf = answer["data"]["registerSite"]["leafIndex"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| answer["data"]["registerSite"]["leafIndex"].as_u64())
            .context("a leaf index")?;
        let deadline = t + Duration::from_secs(30);
        loop {
            let note = checkpoint(&http, base, token).await?;
            let size: u64 = note
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if size > leaf && names.iter().all(|n| note.contains(&format!("— {n} "))) {
                out.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "leaf {leaf} was not witnessed within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn init(clew: &Path, dir: &Path) -> Result<()> {
    let out = std::process::Command::new(clew)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args(["--origin", "bench.clew.example/ledger"])
        .output()?;
    ensure!(
        out.status.success(),
        "clew init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs the benchmark.
pub fn run(
    clew: &Path,
    events: usize,
    clients: usize,
    runs: usize,
    samples: usize,
) -> Result<WitnessBench> {
    let rt = tokio::runtime::Runtime::new()?;
    let (mut off, mut on, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut names = Vec::new();
    let pb = clew::progress_bar(runs as u64, "timing");
    for run in 0..runs {
        let tmp = tempfile::tempdir()?;
        // Without witnesses.
        let plain = tmp.path().join("plain");
        init(clew, &plain)?;
        let (mut child, base) = crate::api::start_serve(clew, &plain, &[], &[])?;
        let token = read_token(&plain)?;
        off.push(rt.block_on(record(&base, &token, events, clients, &format!("r{run}")))?);
        let _ = child.kill();
        let _ = child.wait();
        // With two witnesses, a quorum of two.
        let witnessed = tmp.path().join("witnessed");
        init(clew, &witnessed)?;
        let vkey_file = witnessed.join("keys/ledger.vkey");
        let vkey = std::fs::read_to_string(&vkey_file)?;
        let origin = vkey.split('+').next().unwrap_or_default().to_string();
        let lite = LiteWitness::start(
            &tmp.path().join("litewitness"),
            "litewitness.bench/w1",
            &origin,
            &vkey,
        );
        let own = ClewWitness::start(
            clew,
            &tmp.path().join("clew-witness"),
            "clew-witness.bench/w2",
            &[&vkey_file],
        );
        names = vec![
            "litewitness.bench/w1".to_string(),
            "clew-witness.bench/w2".to_string(),
        ];
        let (mut child, base) = crate::api::start_serve(
            clew,
            &witnessed,
            &[
                "--witness",
                &lite.flag(),
                "--witness",
                &own.flag(),
                "--witness-quorum",
                "2",
            ],
            &[],
        )?;
        let token = read_token(&witnessed)?;
        on.push(rt.block_on(record(&base, &token, events, clients, &format!("r{run}")))?);
        rt.block_on(latencies(&base, &token, &names, samples, &mut lat))?;
        let _ = child.kill();
        let _ = child.wait();
        pb.inc(1);
    }
    pb.finish_and_clear();
    lat.sort_by(|a, b| a.total_cmp(b));
    let (off, on) = (median(off), median(on));
    Ok(WitnessBench {
        runs,
        events,
        clients,
        witnesses: names,
        events_per_s_off: off,
        events_per_s_on: on,
        ratio: on / off,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        latency_samples: lat.len(),
    })
}
