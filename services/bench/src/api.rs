//! `clew-bench api`: concurrent GraphQL clients (a search / lineage mix)
//! against `clew serve` over the synthetic national catalogue, while events
//! are being recorded through GraphQL mutations at a fixed rate.
//!
//! The server is a separate `clew serve` process on loopback; the clients and
//! the recorder run in this process. Both share the machine's cores, as a
//! client on the same host would.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use clew::datadir::{DataDir, ADMIN_PRINCIPAL};
use clew::synthetic::{NationalCatalogue, Producers};

/// Figures printed as the last line of `clew-bench api`.
#[derive(Debug, Default, Serialize)]
pub struct ApiBench {
    /// Events in the served catalogue before the run.
    pub events: u64,
    /// Concurrent query clients.
    pub clients: usize,
    /// Measured seconds (the phases with recording, all rounds).
    pub seconds: f64,
    /// Rounds of (reads alone, reads while recording).
    pub rounds: u32,
    /// Queries answered per second (all clients) while events are recorded.
    pub queries_per_s: f64,
    /// Queries answered per second with nothing recorded, measured in the
    /// same run on the same catalogue, alternating with the phases with
    /// recording (0 when not measured).
    pub queries_alone_per_s: f64,
    /// The median over the rounds of queries/s while recording ÷ queries/s
    /// alone in the same round (goal ≥ 0.8): the phases alternate, so the
    /// machine's drift over a run falls on both sides of each ratio.
    pub reads_under_writes_ratio: f64,
    /// Each round's ratio, in order.
    pub reads_under_writes_by_round: Vec<f64>,
    /// Each round's phases: the cores each of the server's threads kept
    /// busy (by name, largest first), so a round that falls shows what took
    /// the CPU the queries lost.
    pub threads_by_round: Vec<RoundThreads>,
    /// All queries with nothing recorded: median and 99th percentile, ms.
    pub alone_p50_ms: f64,
    /// See alone_p50_ms.
    pub alone_p99_ms: f64,
    /// Search queries: median latency, ms.
    pub search_p50_ms: f64,
    /// Search queries: 99th percentile, ms.
    pub search_p99_ms: f64,
    /// Lineage queries: median latency, ms.
    pub lineage_p50_ms: f64,
    /// Lineage queries: 99th percentile, ms.
    pub lineage_p99_ms: f64,
    /// All queries: median latency, ms.
    pub p50_ms: f64,
    /// All queries: 99th percentile, ms.
    pub p99_ms: f64,
    /// Target recording rate, events/s.
    pub record_target_per_s: u64,
    /// Events recorded per second during the run (sequenced, with receipts).
    pub recorded_per_s: f64,
    /// Mutation latency (until the receipt), 99th percentile, ms.
    pub record_p99_ms: f64,
    /// Queries or mutations that failed.
    pub errors: u64,
    /// Events per ledger batch (one fsync, one checkpoint) in the write-cost
    /// phase, from the server's own count of its batches.
    pub events_per_batch_alone: f64,
    /// Events recorded per second with no query running (the write-cost
    /// phase, measured last; 0 when not measured).
    pub recorded_alone_per_s: f64,
    /// The server's CPU time (user + system) per event recorded in that
    /// phase, µs: what the write path costs, whatever the machine's load.
    pub server_cpu_us_per_event: f64,
    /// Of server_cpu_us_per_event, what each of the server's threads took
    /// (by name: `sequencer`, `tokio-rt-worker`, tantivy's `thrd-tantivy-in`
    /// and `merge_thread`, …), µs per event, largest first.
    pub server_cpu_us_per_event_by_thread: Vec<(String, f64)>,
    /// The server's CPU time per query answered with nothing recorded, µs.
    pub server_cpu_us_per_query: f64,
    /// The cores the write path takes at the target rate
    /// (server_cpu_us_per_event × record_target_per_s), as a share of the
    /// machine's: what is left of them bounds reads under writes.
    pub write_share_of_cores: f64,
    /// The server's CPU time while queries ran alone, as a share of the
    /// machine's cores.
    pub server_busy_alone: f64,
    /// The server's CPU time while queries ran and events were recorded, as
    /// a share of the machine's cores.
    pub server_busy_recording: f64,
    /// Of that time, what is left per query answered once the events'
    /// share (server_cpu_us_per_event each) is taken out, µs: beside
    /// server_cpu_us_per_query, what recording makes a query cost.
    pub server_cpu_us_per_query_recording: f64,
    /// The server's resident memory (MiB) when measuring began (after the
    /// warm-up), half-way, and at the end.
    pub server_rss_mib: [f64; 3],
    /// Of which anonymous (heap) memory, MiB, at the same three moments.
    pub server_rss_anon_mib: [f64; 3],
    /// The resident lineage graph (the server's own gauge), MiB, at the
    /// same three moments: memory that grows with the data, not with time.
    pub lineage_graph_mib: [f64; 3],
    /// RSS growth from start to end less the graph's growth, as a share of
    /// the starting RSS (goal ≤ 0.10 over 30 minutes).
    pub rss_growth_beyond_data: f64,
    /// Connections opened, each served one request and left open, before
    /// the queries start.
    pub idle_connections: usize,
    /// What each of the second half held of the server's resident memory
    /// while the first half stayed open, KiB.
    pub server_kib_per_idle_connection: f64,
    /// RSS of a server opened afresh on the data the run left, at the end
    /// of the same load (`--fresh-seconds`; 0 when not measured), MiB.
    pub fresh_server_rss_mib: f64,
    /// Its lineage graph, MiB.
    pub fresh_lineage_graph_mib: f64,
    /// The run's RSS at the end ÷ the fresh server's (goal ≤ 1.10): above
    /// 1, the soaked server holds memory its uptime left, not its data.
    pub rss_over_fresh_server: f64,
}

/// The server's threads in one round of `clew-bench api`: cores each kept
/// busy, by thread name, largest first, and the server's CPU over the
/// queries answered. A round that falls with its threads as busy as in the
/// others shows here whether each query (with the events' share, while
/// recording) cost more.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RoundThreads {
    /// While queries ran alone.
    pub alone: Vec<(String, f64)>,
    /// While queries ran and events were recorded.
    pub recording: Vec<(String, f64)>,
    /// The server's CPU µs per query answered alone.
    pub alone_cpu_us_per_query: f64,
    /// The server's CPU µs per query answered while recording, the events'
    /// CPU included.
    pub recording_cpu_us_per_query: f64,
}

/// Cores each thread kept busy over `secs` seconds, from
/// [`cpu_between`]'s seconds, largest first.
fn cores_busy(by_thread: Vec<(String, f64)>, secs: f64) -> Vec<(String, f64)> {
    largest_first(by_thread, |s| ratio(s, secs))
}

/// [`cpu_between`]'s seconds by thread, each put through `scale`, largest
/// first.
fn largest_first(by_thread: Vec<(String, f64)>, scale: impl Fn(f64) -> f64) -> Vec<(String, f64)> {
    let mut by: Vec<(String, f64)> = by_thread
        .into_iter()
        .map(|(name, s)| (name, scale(s)))
        .collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by
}

/// Memory fields (`VmRSS:`, `VmHWM:`, …) of `process` (a pid or `self`)
/// from `/proc/<process>/status`, MiB; 0 for a field it does not have.
pub(crate) fn status_mib<const N: usize>(process: &str, fields: [&str; N]) -> [f64; N] {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    fields.map(|name| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    })
}

/// `VmRSS` and `RssAnon` of process `pid`, MiB.
fn resident_mib(pid: u32) -> (f64, f64) {
    let [rss, anon] = status_mib(&pid.to_string(), ["VmRSS:", "RssAnon:"]);
    (rss, anon)
}

/// CPU time process `pid` has used (user + system), seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// Each of process `pid`'s threads now: its id, its name with any
/// trailing number dropped (`sled-io-3` is `sled-io`), and its CPU time, s.
pub(crate) fn cpu_seconds_by_thread(pid: u32) -> std::collections::BTreeMap<String, (String, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let name = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches(['-', '_'])
            .to_string();
        let cpu = stat_cpu_seconds(&path.join("stat").to_string_lossy());
        out.insert(task.file_name().to_string_lossy().into_owned(), (name, cpu));
    }
    out
}

/// CPU time by thread name between two [`cpu_seconds_by_thread`] samples,
/// with what the process used in all (`total`) beyond the threads still
/// running at the end: the threads that ended meanwhile (tantivy starts
/// indexing threads afresh at each commit; blocking-task threads retire).
pub(crate) fn cpu_between(
    before: &std::collections::BTreeMap<String, (String, f64)>,
    after: std::collections::BTreeMap<String, (String, f64)>,
    total: f64,
) -> Vec<(String, f64)> {
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    for (tid, (name, cpu)) in after {
        let took = cpu - before.get(&tid).map_or(0.0, |(_, c)| *c);
        *by.entry(name).or_default() += took;
    }
    let ended = total - by.values().sum::<f64>();
    by.insert("threads that ended meanwhile".into(), ended.max(0.0));
    by.into_iter().filter(|(_, s)| *s > 0.0).collect()
}

/// User + system CPU time in a `stat` file of /proc (fields 14 and 15,
/// proc(5)), seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second.max(1) as f64
}

/// How long `clew-bench api` runs each of its phases.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Measured reads while recording, all rounds together.
    pub recording: Duration,
    /// Measured reads with nothing recorded, all rounds together (zero:
    /// none, and one round).
    pub alone: Duration,
    /// Rounds the two alternate in, each alone phase first.
    pub rounds: u32,
    /// Recording before the first round's is measured (5 s at least).
    pub warm_up: Duration,
    /// Recording with no query running, measured last (zero: skipped).
    pub write_cost: Duration,
    /// After the run, a server opened afresh on the data the run left runs
    /// the same load for this long, and its RSS is the peer of the end's
    /// (zero: skipped): what the soaked server holds beyond it is held by
    /// its uptime, not by the data.
    pub fresh: Duration,
}

/// Builds the catalogue, starts `clew serve` on it, and measures.
pub fn api(
    datasets: u64,
    clients: usize,
    phases: Phases,
    record_rate: u64,
    keep: Option<&std::path::Path>,
    exe: &std::path::Path,
) -> Result<ApiBench> {
    let (_tmp, data, events) = catalogue(datasets, keep)?;
    // The manifest the write load's versions cite, stored before they are
    // published (as a producer uploads it first).
    let manifest = clew_events::sample::manifest(1);
    let manifest_digest = data.manifest_store()?.put_blocking(manifest.into())?.digest;

    let runs = NationalCatalogue { datasets }.runs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = |phases: Phases| -> Result<ApiBench> {
        let (child, base) = start_serve(exe, data.root(), &[], &[])?;
        // The server writes the admin token when it first starts.
        let admin = std::fs::read_to_string(data.root().join("admin.token"))
            .context("reading the server's admin token")?
            .trim()
            .to_string();
        let result = rt.block_on(drive(
            base,
            admin,
            runs,
            clients,
            phases,
            record_rate,
            manifest_digest.clone(),
            child.id(),
        ));
        stop_serve(child);
        result
    };
    let mut r = run(phases)?;
    r.events = events;
    if !phases.fresh.is_zero() {
        // The same load on a server that opens the data the run left: its
        // caches fill as the soaked server's did after its warm-up.
        let fresh = run(Phases {
            recording: phases
                .fresh
                .saturating_sub(FRESH_WARM_UP)
                .max(Duration::from_secs(1)),
            alone: Duration::ZERO,
            rounds: 1,
            warm_up: FRESH_WARM_UP.min(phases.fresh),
            write_cost: Duration::ZERO,
            fresh: Duration::ZERO,
        })?;
        let [.., end] = r.server_rss_mib;
        let [.., fresh_end] = fresh.server_rss_mib;
        r.fresh_server_rss_mib = fresh_end;
        r.fresh_lineage_graph_mib = fresh.lineage_graph_mib[2];
        r.rss_over_fresh_server = ratio(end, fresh_end);
    }
    Ok(r)
}

/// Of `--fresh-seconds`, what the fresh server warms up before its RSS is
/// taken (at most).
const FRESH_WARM_UP: Duration = Duration::from_secs(60);

/// The national catalogue of `datasets` datasets in a fresh temporary data
/// directory, or the one kept in `keep` from an earlier run (--data-dir),
/// built there first if it has none; the directory (kept alive while the
/// temporary one is in use) and the number of events.
pub(crate) fn catalogue(
    datasets: u64,
    keep: Option<&std::path::Path>,
) -> Result<(tempfile::TempDir, DataDir, u64)> {
    let tmp = tempfile::tempdir()?;
    let data = DataDir::new(keep.map_or_else(|| tmp.path().join("data"), |k| k.to_path_buf()));
    let events = if data.has_ledger() {
        data.open(None, clew_ledger::LedgerOptions::default())?
            .size()
    } else {
        build(&data, datasets)?
    };
    Ok((tmp, data, events))
}

/// Starts `clew serve` (the `exe` binary) over `data` on a free loopback
/// port, with `extra` arguments and `env` variables; returns the child and
/// its base URL once it serves. Its stdout is drained so its last lines
/// never meet a closed pipe.
pub(crate) fn start_serve(
    exe: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
    env: &[(String, String)],
) -> Result<(std::process::Child, String)> {
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        // Room for the idle connections measured beside the clients (the
        // server lowers it to what its open-file limit allows).
        .args([
            "--max-connections",
            &(2 * IDLE_CONNECTIONS + 1024).to_string(),
        ])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CLEW_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting clew serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut addr = None;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    while stdout.read_line(&mut line)? > 0 {
        if let Some(rest) = line.trim().strip_prefix("Clew is serving http://") {
            addr = rest.split('/').next().map(str::to_string);
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    match addr {
        Some(a) => Ok((child, format!("http://{a}"))),
        None => {
            let _ = child.kill();
            bail!("clew serve did not start")
        }
    }
}

/// Stops a server [`start_serve`] started (SIGTERM: a clean shutdown) and
/// waits for it.
pub(crate) fn stop_serve(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Sequences the synthetic national catalogue into a fresh data directory
/// and projects it, so the server starts on a complete catalogue.
fn build(data: &DataDir, datasets: u64) -> Result<u64> {
    let ledger = data.init(
        "bench.clew.example/ledger",
        clew_ledger::LedgerOptions::default(),
    )?;
    let admin = clew::keyfiles::read_producer(&data.admin_key())?;
    let p = Producers::new(admin, ADMIN_PRINCIPAL, 8);
    let setup: Vec<clew_ledger::Submission> = p
        .registrations()
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| clew_ledger::Submission::received(i as u64, bytes))
        .collect();
    let r = ledger.sequence("setup-producers", setup)?;
    ensure!(r.rejected.is_empty(), "producer registration refused");
    let scale = NationalCatalogue { datasets };
    let total = scale.events();
    let pb = clew::progress_bar(total, "sequencing");
    let mut at = 0;
    while at < total {
        let end = (at + 50_000).min(total);
        crate::spine::sequence_all(&ledger, scale.envelopes(&p, at..end), at, 2048, &pb)?;
        at = end;
    }
    pb.finish_and_clear();
    let pb = clew::progress_bar(ledger.size(), "projecting");
    clew_catalog::Catalog::rebuild_with_cache(
        &data.catalog_dir(),
        &ledger,
        crate::spine::PROJECTION_CACHE_BYTES,
        &|done, _| pb.set_position(done),
    )?;
    pb.finish_and_clear();
    Ok(ledger.size())
}

/// One GraphQL request; its `errors` are an error.
pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> Result<Value> {
    let body: Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await?
        .json()
        .await?;
    if let Some(e) = body.get("errors") {
        bail!("{e}");
    }
    Ok(body)
}

/// Between a round's recording and its next reads alone: the last
/// mutations answered and their events projected and indexed.
const SETTLE: Duration = Duration::from_secs(3);

/// The server's count of ledger batches sequenced (a Prometheus histogram's
/// count).
const BATCHES: &str = "clew_sequencer_batch_seconds_count";
const SEARCH: &str = "query($t: String!, $m: String!, $b: String!) { search(input: {text: $t, filters: [{facet: \"modality\", values: [$m]}, {facet: \"body_part\", values: [$b]}]}) { total hits { subject title snippet } facets { name values { value count } } } }";
const LINEAGE: &str = "query($s: String!) { lineage(subject: $s, direction: UPSTREAM, depth: 10) { nodes { subject label status affected } edges { from to relation } } }";
const REGISTER: &str = "mutation($i: DatasetInput!) { registerDataset(input: $i) { leafIndex } }";
const PUBLISH: &str =
    "mutation($i: DatasetVersionInput!) { publishDatasetVersion(input: $i) { leafIndex } }";

#[allow(clippy::too_many_arguments)] // one run's settings, passed once
async fn drive(
    base: String,
    admin: String,
    runs: u64,
    clients: usize,
    phases: Phases,
    record_rate: u64,
    manifest_digest: String,
    server_pid: u32,
) -> Result<ApiBench> {
    let Phases {
        recording: duration,
        alone,
        rounds,
        warm_up,
        write_cost,
        fresh: _,
    } = phases;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients + 64)
        .build()?;
    // A researcher (grants apply) runs the queries; a governance principal records.
    for (id, role) in [
        ("bench-researcher", "ROLE_RESEARCHER"),
        ("bench-recorder", "ROLE_INGEST"),
    ] {
        post(
            &client,
            &base,
            &admin,
            "mutation($i: PrincipalInput!) { registerPrincipal(input: $i) { leafIndex } }",
            json!({"i": {"principalId": id, "displayName": id, "roles": [role]}}),
        )
        .await?;
    }
    let token = |id: &'static str| {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        async move {
            let v = post(
                &client,
                &base,
                &admin,
                "mutation($p: String!) { issueToken(principalId: $p) { token } }",
                json!({"p": id}),
            )
            .await?;
            anyhow::Ok(
                v["data"]["issueToken"]["token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    let (idle_connections, server_kib_per_idle_connection) =
        idle_connection_kib(&base, server_pid, IDLE_CONNECTIONS).await?;
    let reader = Arc::new(token("bench-researcher").await?);
    let recorder = Arc::new(token("bench-recorder").await?);

    let hist = || hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    // Index 0: the phase with nothing recorded; 1: the phase with recording.
    let search_h = Arc::new(Mutex::new([hist(), hist()]));
    let lineage_h = Arc::new(Mutex::new([hist(), hist()]));
    let record_h = Arc::new(Mutex::new(hist()));
    let errors = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let recorded_alone = Arc::new(AtomicU64::new(0));
    // 0: warming up (nothing counted); 1: reads alone; 2: reads while
    // recording; 3: recording alone (the write path's cost).
    let phase = Arc::new(AtomicU8::new(0));
    let querying = Arc::new(AtomicBool::new(true));
    let recording = Arc::new(AtomicBool::new(alone.is_zero()));
    let stop = Arc::new(AtomicBool::new(false));

    // Recorder: every 2/rate s a task registers a dataset, then publishes
    // its first version (a search document), each answered with its receipt.
    let rec = {
        let (client, base, recorder) = (client.clone(), base.clone(), recorder.clone());
        let (record_h, errors, recorded, recorded_alone, phase, recording, stop) = (
            record_h.clone(),
            errors.clone(),
            recorded.clone(),
            recorded_alone.clone(),
            phase.clone(),
            recording.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            if record_rate < 2 {
                return;
            }
            let in_flight = Arc::new(tokio::sync::Semaphore::new(2_000));
            let mut tick = tokio::time::interval(Duration::from_micros(2_000_000 / record_rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            let run = clew_events::now_timestamp().seconds;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if !recording.load(Ordering::Relaxed) {
                    continue;
                }
                n += 1;
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (client, base, recorder) = (client.clone(), base.clone(), recorder.clone());
                let manifest_digest = manifest_digest.clone();
                let (record_h, errors, recorded, recorded_alone, phase) = (
                    record_h.clone(),
                    errors.clone(),
                    recorded.clone(),
                    recorded_alone.clone(),
                    phase.clone(),
                );
                tokio::spawn(async move {
                    let id = format!("bench-ds-{run}-{n}");
                    let steps = [
                        (
                            REGISTER,
                            json!({"i": {"datasetId": id, "title": format!("Benchmark chest CT cohort {n}"),
                            "description": "Recorded while the API benchmark runs.", "custodianSiteId": "site-0000",
                            "accessLevel": "ACCESS_LEVEL_OPEN", "licence": "CC-BY-4.0"}}),
                        ),
                        (
                            PUBLISH,
                            json!({"i": {"datasetId": id, "version": "1.0",
                            "manifestDigest": manifest_digest,
                            "imagingSummary": {"modalities": ["CT"], "bodyPartsExamined": ["CHEST"],
                                "numberOfStudies": "120", "studyDateFrom": "20240101", "studyDateTo": "20241231"}}}),
                        ),
                    ];
                    for (q, vars) in steps {
                        let t = Instant::now();
                        let r = post(&client, &base, &recorder, q, vars).await;
                        let now = phase.load(Ordering::Relaxed);
                        if now == 3 {
                            match r {
                                Ok(_) => recorded_alone.fetch_add(1, Ordering::Relaxed),
                                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                            };
                        } else if now == 2 {
                            match r {
                                Ok(_) => {
                                    recorded.fetch_add(1, Ordering::Relaxed);
                                    if let Ok(mut h) = record_h.lock() {
                                        let _ = h.record(t.elapsed().as_micros() as u64);
                                    }
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    drop(permit);
                });
            }
        })
    };

    // Query clients: alternate search and lineage.
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, reader) = (client.clone(), base.clone(), reader.clone());
        let (search_h, lineage_h, errors, phase, querying, stop) = (
            search_h.clone(),
            lineage_h.clone(),
            errors.clone(),
            phase.clone(),
            querying.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let texts = ["chest imaging", "cohort research", "ct", "covid", "routinely collected"];
            let modalities = ["CT", "DX", "CR", "MR", "PT"];
            let parts = ["CHEST", "ABDOMEN", "HEAD", "PELVIS", "SPINE"];
            let mut i = c as u64 * 7_919;
            while !stop.load(Ordering::Relaxed) {
                if !querying.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                i += 1;
                let search = i.is_multiple_of(2);
                let t = Instant::now();
                let r = if search {
                    let k = i as usize;
                    post(
                        &client,
                        &base,
                        &reader,
                        SEARCH,
                        json!({"t": texts[k % 5], "m": modalities[(k / 2) % 5], "b": parts[(k / 10) % 5]}),
                    )
                    .await
                } else {
                    let k = (i * 7_919) % runs.max(1);
                    post(&client, &base, &reader, LINEAGE, json!({"s": format!("deployment/dep-{k}")})).await
                };
                // The phase the query ended in (one straddling a change
                // counts in the later phase).
                let slot = match phase.load(Ordering::Relaxed) {
                    1 => 0,
                    2 => 1,
                    _ => continue,
                };
                match r {
                    Ok(_) => {
                        let h = if search { &search_h } else { &lineage_h };
                        if let Ok(mut h) = h.lock() {
                            let _ = h[slot].record(t.elapsed().as_micros() as u64);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Warm up; then rounds of reads alone (when asked) and reads while
    // recording, each recording phase warmed up before it is measured.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rounds = if alone.is_zero() { 1 } else { rounds.max(1) };
    let (alone_each, measured_each) = (alone / rounds, duration / rounds);
    let sample = || async {
        let (rss, anon) = resident_mib(server_pid);
        let graph = lineage_graph_mib(&client, &base, &admin).await;
        graph.map(|g| (rss, anon, g))
    };
    // Queries answered so far in a phase (0: alone, 1: recording): what its
    // two histograms hold.
    let answered_in = |slot: usize| {
        let count =
            |h: &Mutex<[hdrhistogram::Histogram<u64>; 2]>| h.lock().map_or(0, |h| h[slot].len());
        (count(&search_h) + count(&lineage_h)) as f64
    };
    let (mut alone_elapsed, mut alone_cpu, mut elapsed, mut recording_cpu) = (0.0, 0.0, 0.0, 0.0);
    let mut by_round = Vec::new();
    let mut threads_by_round = Vec::new();
    let mut memory = Vec::new();
    let pb = clew::progress_bar((alone + duration).as_secs(), "measuring");
    let mut measured = Duration::ZERO;
    for round in 0..rounds {
        let mut alone_rate = 0.0;
        let mut threads = RoundThreads::default();
        if !alone.is_zero() {
            if round > 0 {
                // The last round's mutations finish and their events are
                // projected before reads are measured alone again.
                recording.store(false, Ordering::Relaxed);
                pb.set_message("settling");
                tokio::time::sleep(SETTLE).await;
            }
            pb.set_message(format!("reads alone {}/{rounds}", round + 1));
            phase.store(1, Ordering::Relaxed);
            let (cpu, queries, started) = (cpu_seconds(server_pid), answered_in(0), Instant::now());
            let before = cpu_seconds_by_thread(server_pid);
            while started.elapsed() < alone_each {
                tokio::time::sleep(Duration::from_secs(1).min(alone_each)).await;
                pb.set_position((measured + started.elapsed()).as_secs());
            }
            phase.store(0, Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            let answered = answered_in(0) - queries;
            alone_rate = ratio(answered, secs);
            alone_elapsed += secs;
            let took = cpu_seconds(server_pid) - cpu;
            alone_cpu += took;
            let after = cpu_seconds_by_thread(server_pid);
            threads.alone = cores_busy(cpu_between(&before, after, took), secs);
            threads.alone_cpu_us_per_query = ratio(took * 1e6, answered);
            measured += alone_each;
        }
        // The recording warms up (a soak's caches fill) before it is measured.
        recording.store(true, Ordering::Relaxed);
        pb.set_message("warming up");
        let warm = if round == 0 { warm_up } else { Duration::ZERO };
        tokio::time::sleep(warm.max(Duration::from_secs(5))).await;
        pb.set_message(format!("recording {}/{rounds}", round + 1));
        phase.store(2, Ordering::Relaxed);
        if memory.is_empty() {
            memory.push(sample().await?);
        }
        let (cpu, queries, started) = (cpu_seconds(server_pid), answered_in(1), Instant::now());
        let before = cpu_seconds_by_thread(server_pid);
        while started.elapsed() < measured_each {
            tokio::time::sleep(Duration::from_secs(1).min(measured_each)).await;
            pb.set_position((measured + started.elapsed()).as_secs());
            if memory.len() == 1 && (measured + started.elapsed()) >= (alone + duration) / 2 {
                memory.push(sample().await?);
            }
        }
        phase.store(0, Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        let answered = answered_in(1) - queries;
        let took = cpu_seconds(server_pid) - cpu;
        recording_cpu += took;
        let after = cpu_seconds_by_thread(server_pid);
        threads.recording = cores_busy(cpu_between(&before, after, took), secs);
        threads.recording_cpu_us_per_query = ratio(took * 1e6, answered);
        threads_by_round.push(threads);
        if alone_rate > 0.0 {
            by_round.push(ratio(answered, secs) / alone_rate);
        }
        elapsed += secs;
        measured += measured_each;
    }
    memory.push(sample().await?);
    pb.finish_and_clear();
    // Recording alone: the queries stop (those under way finish first), and
    // the server's CPU time per event recorded is the write path's cost.
    let mut write_cost_cpu = 0.0;
    let mut write_cost_elapsed = 0.0;
    let mut write_cost_threads: Vec<(String, f64)> = Vec::new();
    let mut write_cost_batches = 0.0;
    if !write_cost.is_zero() && record_rate >= 2 {
        querying.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pb = clew::progress_bar(write_cost.as_secs(), "recording alone");
        phase.store(3, Ordering::Relaxed);
        let batches = server_metric(&client, &base, &admin, BATCHES).await?;
        let cpu = cpu_seconds(server_pid);
        let threads = cpu_seconds_by_thread(server_pid);
        let started = Instant::now();
        while started.elapsed() < write_cost {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pb.set_position(started.elapsed().as_secs());
        }
        phase.store(0, Ordering::Relaxed);
        let threads_after = cpu_seconds_by_thread(server_pid);
        write_cost_cpu = cpu_seconds(server_pid) - cpu;
        write_cost_batches = server_metric(&client, &base, &admin, BATCHES).await? - batches;
        write_cost_threads = cpu_between(&threads, threads_after, write_cost_cpu);
        write_cost_elapsed = started.elapsed().as_secs_f64();
        pb.finish_and_clear();
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = rec.await;

    let [s0, s] = search_h
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let [l0, l] = lineage_h
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let w = record_h
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut all = s.clone();
    all.add(&l)?;
    let mut all_alone = s0.clone();
    all_alone.add(&l0)?;
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let queries_per_s = all.len() as f64 / elapsed;
    let queries_alone_per_s = ratio(all_alone.len() as f64, alone_elapsed);
    let alone_recorded = recorded_alone.load(Ordering::Relaxed) as f64;
    // Seconds of CPU in the write-cost phase as µs per event recorded there.
    let per_event = |s: f64| ratio(s * 1e6, alone_recorded);
    let server_cpu_us_per_event = per_event(write_cost_cpu);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let at = |k: usize| memory[k.min(memory.len() - 1)];
    let (first, middle, last) = (at(0), at(1), at(2));
    Ok(ApiBench {
        events: 0,
        clients,
        seconds: elapsed,
        rounds,
        queries_per_s,
        queries_alone_per_s,
        reads_under_writes_ratio: median(&by_round),
        reads_under_writes_by_round: by_round,
        threads_by_round,
        alone_p50_ms: ms(&all_alone, 0.5),
        alone_p99_ms: ms(&all_alone, 0.99),
        search_p50_ms: ms(&s, 0.5),
        search_p99_ms: ms(&s, 0.99),
        lineage_p50_ms: ms(&l, 0.5),
        lineage_p99_ms: ms(&l, 0.99),
        p50_ms: ms(&all, 0.5),
        p99_ms: ms(&all, 0.99),
        record_target_per_s: record_rate,
        recorded_per_s: recorded.load(Ordering::Relaxed) as f64 / elapsed,
        record_p99_ms: ms(&w, 0.99),
        events_per_batch_alone: ratio(alone_recorded, write_cost_batches),
        recorded_alone_per_s: ratio(alone_recorded, write_cost_elapsed),
        server_cpu_us_per_event,
        server_cpu_us_per_event_by_thread: largest_first(write_cost_threads, per_event),
        server_cpu_us_per_query: ratio(alone_cpu * 1e6, all_alone.len() as f64),
        write_share_of_cores: server_cpu_us_per_event * record_rate as f64 / 1e6 / cores,
        server_busy_alone: ratio(alone_cpu, alone_elapsed) / cores,
        server_busy_recording: recording_cpu / elapsed / cores,
        server_cpu_us_per_query_recording: if all.is_empty() || server_cpu_us_per_event == 0.0 {
            0.0
        } else {
            let writes = server_cpu_us_per_event * recorded.load(Ordering::Relaxed) as f64;
            (recording_cpu * 1e6 - writes).max(0.0) / all.len() as f64
        },
        errors: errors.load(Ordering::Relaxed),
        server_rss_mib: [first.0, middle.0, last.0],
        server_rss_anon_mib: [first.1, middle.1, last.1],
        lineage_graph_mib: [first.2, middle.2, last.2],
        rss_growth_beyond_data: ((last.0 - first.0) - (last.2 - first.2)) / first.0,
        idle_connections,
        server_kib_per_idle_connection,
        ..Default::default()
    })
}

/// Connections [`idle_connection_kib`] opens in each of its two steps.
const IDLE_CONNECTIONS: usize = 1_000;

/// What an open connection holds on the server at `base` (process
/// `server_pid`): opens `n` connections, sends one request on each and reads
/// its answer, and leaves them open (HTTP/1.1 keep-alive, RFC 9112 §9.3);
/// then `n` more the same way. The second `n` are measured (the server's
/// RSS before and after them), so what the server frees after starting up
/// falls outside the figure. Returns the connections opened in all (fewer
/// when the system refuses more) and KiB of RSS each of the second `n` held.
async fn idle_connection_kib(base: &str, server_pid: u32, n: usize) -> Result<(usize, f64)> {
    let addr = base
        .strip_prefix("http://")
        .context("the server's address is not http://host:port")?
        .to_string();
    let mut open = Vec::with_capacity(2 * n);
    open_connections(&addr, n, &mut open).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = resident_mib(server_pid);
    let first = open.len();
    open_connections(&addr, n, &mut open).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, _) = resident_mib(server_pid);
    let opened = open.len();
    drop(open);
    Ok((
        opened,
        ratio((after - before) * 1024.0, (opened - first) as f64),
    ))
}

/// Opens up to `n` connections to `addr`, each served one request, into
/// `open`; stops early when the system or the server's connection cap
/// refuses one.
async fn open_connections(
    addr: &str,
    n: usize,
    open: &mut Vec<tokio::net::TcpStream>,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answer = [0u8; 512];
    for _ in 0..n {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            break;
        };
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await?;
        let read = stream.read(&mut answer).await?;
        if answer[..read].starts_with(b"HTTP/1.1 503") {
            break;
        }
        ensure!(
            answer[..read].starts_with(b"HTTP/1.1 200"),
            "/healthz answered {:?}",
            String::from_utf8_lossy(&answer[..read])
        );
        open.push(stream);
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two when their number is
/// even), 0 when there are none.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n / d`, or 0 when nothing was measured (`d` is 0).
fn ratio(n: f64, d: f64) -> f64 {
    if d > 0.0 {
        n / d
    } else {
        0.0
    }
}

/// The server's own gauge of its resident lineage graph, MiB.
async fn lineage_graph_mib(client: &reqwest::Client, base: &str, admin: &str) -> Result<f64> {
    Ok(
        server_metric(client, base, admin, "clew_catalog_lineage_graph_bytes").await?
            / (1024.0 * 1024.0),
    )
}

/// One unlabelled figure of the server's metrics (Prometheus text format).
async fn server_metric(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    name: &str,
) -> Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("the server's metrics have no {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(threads: &[(&str, &str, f64)]) -> std::collections::BTreeMap<String, (String, f64)> {
        threads
            .iter()
            .map(|(tid, name, cpu)| (tid.to_string(), (name.to_string(), *cpu)))
            .collect()
    }

    #[test]
    fn cpu_between_counts_threads_by_name_and_puts_ended_ones_apart() {
        let before = sample(&[
            ("1", "sequencer", 10.0),
            ("2", "sled-io", 1.0),
            ("3", "thrd", 5.0),
        ]);
        // Thread 3 ended (its time stays in the process's total); thread 4
        // began and carries the same name as 2 once its number is dropped.
        let after = sample(&[
            ("1", "sequencer", 12.0),
            ("2", "sled-io", 1.5),
            ("4", "sled-io", 0.25),
        ]);
        let by = cpu_between(&before, after, 3.25);
        let get = |n: &str| by.iter().find(|(name, _)| name == n).map(|(_, s)| *s);
        assert_eq!(get("sequencer"), Some(2.0));
        assert_eq!(get("sled-io"), Some(0.75));
        assert_eq!(get("threads that ended meanwhile"), Some(0.5));
        assert_eq!(get("thrd"), None);
    }

    #[test]
    fn cores_busy_divides_each_thread_by_the_phase_and_puts_the_largest_first() {
        let by = cores_busy(
            vec![
                ("merge_thread".into(), 1.0),
                ("tokio-rt-worker".into(), 30.0),
                ("sequencer".into(), 4.0),
            ],
            20.0,
        );
        assert_eq!(
            by,
            vec![
                ("tokio-rt-worker".to_string(), 1.5),
                ("sequencer".to_string(), 0.2),
                ("merge_thread".to_string(), 0.05),
            ]
        );
        assert!(cores_busy(vec![("sequencer".into(), 1.0)], 0.0)[0].1 == 0.0);
    }

    #[test]
    fn median_takes_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[0.9, 0.7, 1.1]), 0.9);
        assert_eq!(median(&[1.0, 0.5, 1.5, 0.75]), 0.875);
    }

    #[test]
    fn stat_cpu_seconds_reads_user_and_system_time_past_a_name_with_spaces() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("stat");
        // Fields 14 and 15 (utime, stime) are 300 and 200 ticks.
        std::fs::write(
            &path,
            "42 (a name) with) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0 20 0 1 0 100",
        )
        .expect("write");
        // SAFETY: sysconf reads a constant of the running system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let got = stat_cpu_seconds(&path.to_string_lossy());
        assert!((got - 500.0 / ticks).abs() < 1e-9, "{got}");
    }
}
