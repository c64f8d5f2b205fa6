//! `clew-bench`: Clew's benchmarks, apart from the shipped binary. Each
//! prints its figures, the peer or limit it is measured against in the same
//! run, and, last, one JSON line.
//!
//! [`spine`] sequences and projects a synthetic national catalogue (ledger
//! throughput against raw Ed25519 verification; projection, search, lineage
//! and impact); [`api`] drives `clew serve` with concurrent GraphQL clients;
//! [`kafka`] measures the distributed path on a real broker against the
//! embedded log; [`dicom`] times the DICOM header scan against pydicom;
//! [`blobs`] puts and gets manifests through Clew against the S3 store's
//! own client; [`growth`] runs the catalogue and API benchmarks at several
//! sizes and prints how each figure grows.

/// The same allocator as the `clew` binary, set as `main` sets it there, so
/// the in-process benchmarks (ledger, catalogue, Kafka) measure what the
/// product runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod blobs;
mod dicom;
mod dicomweb;
mod growth;
mod kafka;
mod spine;
mod web;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Clew's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "clew-bench", version, about)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// A national-scale catalogue through the real event path: projection,
    /// search, lineage and impact latency, serving memory.
    Catalog {
        /// Number of datasets (each brings 50 lineage nodes; 20,000 make about a million).
        #[arg(long, default_value_t = 20_000)]
        datasets: u64,
        #[arg(long, default_value_t = 8)]
        producers: usize,
        /// Page cache of the serving process, MiB.
        #[arg(long, default_value_t = 256)]
        serve_cache_mib: u64,
    },
    /// The serving half of `bench catalog` (run by it in a separate process).
    #[command(hide = true)]
    CatalogServe {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        runs: u64,
        #[arg(long, default_value_t = 256)]
        cache_mib: u64,
    },
    /// Concurrent GraphQL clients (search / lineage mix) against `clew serve`
    /// over the national catalogue while events are recorded at a fixed rate.
    Api {
        /// Number of datasets (as for `bench catalog`: 20,000 make about a million nodes).
        #[arg(long, default_value_t = 20_000)]
        datasets: u64,
        /// Concurrent query clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Measured seconds (after a 5 s warm-up); the server's RSS is
        /// printed at the start, half-way and the end, so a long run (1,800)
        /// is the soak test.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Seconds of queries with nothing recorded, measured in the same
        /// run (the peer of the run with recording; 0: skip).
        #[arg(long, default_value_t = 30)]
        alone_seconds: u64,
        /// Rounds the two phases alternate in (alone, recording, alone, …),
        /// each a share of their seconds; reads under writes is the median
        /// of the rounds' ratios, so the machine's drift cancels.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of recording before it is measured (5 at least; a soak
        /// gives its caches time to fill: 300).
        #[arg(long, default_value_t = 5)]
        warm_up_seconds: u64,
        /// Seconds of recording with no query running, measured last: the
        /// server's CPU time per event recorded (0: skip).
        #[arg(long, default_value_t = 10)]
        write_cost_seconds: u64,
        /// Seconds of the same load, after the run, on a server opened
        /// afresh on the data the run left (the first 60 warm it up), whose
        /// RSS is set beside the end's: a soak's peer (0: skip).
        #[arg(long, default_value_t = 0)]
        fresh_seconds: u64,
        /// Events recorded per second through GraphQL mutations meanwhile.
        #[arg(long, default_value_t = 1000)]
        record_rate: u64,
        /// Build the catalogue in (or reuse it from) this directory instead
        /// of a temporary one.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The web catalogue's pages against the API calls they are built from
    /// (server time, p50/p99, same run), and each page's navigation timing
    /// in a real headless Chromium, over the national catalogue.
    Web {
        /// Number of datasets (20,000 make about a million nodes; the hub
        /// version's impact then reaches about 10,000).
        #[arg(long, default_value_t = 20_000)]
        datasets: u64,
        /// Requests per page (and per API side), interleaved.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Browser visits per page.
        #[arg(long, default_value_t = 20)]
        visits: usize,
        /// Build the catalogue in (or reuse it from) this directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The distributed path on Kafka: producers → sequenced-and-published
    /// events/s (baseline: the same sequencer on the embedded log), and
    /// event → searchable latency on a read replica at a steady rate.
    /// Starts a local broker unless --kafka / KAFKA_BOOTSTRAP names one.
    Kafka {
        /// Bootstrap servers of an existing broker.
        #[arg(long = "kafka", env = "KAFKA_BOOTSTRAP")]
        bootstrap: Option<String>,
        /// Events in the throughput stream.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Submission rate of the latency run, events/s.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Length of the latency run, seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Clew's DICOM scan (SHA-256 of every byte, the whole data set parsed,
    /// de-identification gate) against pydicom's
    /// dcmread(stop_before_pixels=True) over the same tree of real files.
    Dicom {
        /// Files in the tree (copies of the real files with new UIDs).
        #[arg(long, default_value_t = 20_000)]
        files: usize,
        /// Timed runs per contender; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The real DICOM files (tests/dicom/fetch.sh puts them here).
        #[arg(long, default_value = "target/dicom-files")]
        source: PathBuf,
        /// Python with pydicom (tests/dicom/fetch.sh makes it).
        #[arg(long, default_value = "target/dicom-venv/bin/python")]
        python: PathBuf,
        /// The pydicom side of the benchmark.
        #[arg(long, default_value = "tests/dicom/pydicom_scan.py")]
        script: PathBuf,
        /// Build the tree here and keep it (reused when it has --files files).
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Metadata ingest from a real PACS (Orthanc with its DICOMweb plugin):
    /// `clew ingest dicomweb --dry-run` against the dicomweb-client Python
    /// package reading the same series metadata, same run, with the CPU
    /// Orthanc spent on each.
    Dicomweb {
        /// Instances loaded into the PACS (20 per series, 2 series per study).
        #[arg(long, default_value_t = 2_000)]
        instances: usize,
        /// Clew's requests in flight at once (its --concurrency).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Timed runs per contender; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The real DICOM files (tests/dicom/fetch.sh puts them here).
        #[arg(long, default_value = "target/dicom-files")]
        source: PathBuf,
        /// Python with dicomweb-client (tests/setup.sh makes it).
        #[arg(long, default_value = "target/dicomweb-venv/bin/python")]
        python: PathBuf,
        /// The dicomweb-client side of the benchmark.
        #[arg(long, default_value = "tests/dicom/dicomweb_client_scan.py")]
        script: PathBuf,
    },
    /// What witnessing costs: events/s recorded through `clew serve` with
    /// two real witnesses (litewitness, clew witness; quorum 2) against the
    /// same without witnesses, same run, and the signed → witnessed latency.
    Witness {
        /// Events recorded per server per run.
        #[arg(long, default_value_t = 2_000)]
        events: usize,
        /// Concurrent GraphQL clients recording.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Runs (medians reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Latency samples per run (one event at a time).
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// Manifests of 1 MiB and 32 MiB put and read through `clew serve` on a
    /// real S3-compatible store (SeaweedFS, built by tests/setup.sh) against
    /// the same operations done directly with the S3 client, same run.
    Blobs {
        /// Timed runs of 1 MiB manifests.
        #[arg(long, default_value_t = 40)]
        runs_small: usize,
        /// Timed runs of 32 MiB manifests.
        #[arg(long, default_value_t = 10)]
        runs_large: usize,
    },
    /// How cost grows with the catalogue: `catalog` and `api` at each size
    /// (each in its own process), every figure with its growth from one
    /// size to the next beside the catalogue's own growth.
    Growth {
        /// Sizes in datasets, smallest first (50 events each: 2,000 make
        /// about 100k events, 20,000 a million, 100,000 five million).
        #[arg(long, value_delimiter = ',', default_values_t = [2_000u64, 20_000])]
        datasets: Vec<u64>,
        /// Seconds of each API phase (reads alone, then while recording).
        #[arg(long, default_value_t = 30)]
        api_seconds: u64,
    },
    /// Sequencing throughput with signature checks vs the raw Ed25519 verify rate.
    Ledger {
        /// Number of events to sequence.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 2048)]
        batch_size: usize,
        /// Number of producers (ingest keys) signing the stream.
        #[arg(long, default_value_t = 8)]
        producers: usize,
    },
}

/// Figures by thread as `name figure, …`, those below `at_least` left
/// out, each with `decimals` decimals.
fn by_thread(by: &[(String, f64)], at_least: f64, decimals: usize) -> String {
    by.iter()
        .filter(|(_, x)| *x >= at_least)
        .map(|(name, x)| format!("{name} {x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `clew` binary beside this one (`cargo build --release` builds both).
fn clew_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating the clew-bench binary")?;
    let clew = me.with_file_name(format!("clew{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        clew.exists(),
        "{} is missing: build it with `cargo build --release -p clew`",
        clew.display()
    );
    Ok(clew)
}

fn main() -> ExitCode {
    // The allocator as the `clew` binary sets it, so the sequencer, the
    // serving process and the buses run here as they run there (the
    // projection keeps freed memory as `clew reindex` does).
    clew::memory::set_allocator_policy();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLEW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse().bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(bench: Bench) -> Result<()> {
    match bench {
        Bench::Web {
            datasets,
            requests,
            visits,
            data_dir,
        } => {
            let exe = clew_binary()?;
            let r = crate::web::web(
                datasets.max(10),
                requests.max(1),
                visits.max(1),
                data_dir.as_deref(),
                &exe,
            )?;
            println!("catalogue events:  {}", r.events);
            for p in &r.pages {
                println!(
                    "{:<15} page p50 {:>7.2} ms p99 {:>7.2} ms | API p50 {:>7.2} ms p99 {:>7.2} ms | ratio {:.2} | browser p50 {:>7.1} ms p99 {:>7.1} ms",
                    p.page, p.page_p50_ms, p.page_p99_ms, p.api_p50_ms, p.api_p99_ms, p.ratio,
                    p.browser_p50_ms, p.browser_p99_ms
                );
            }
            println!(
                "impact report:   {} nodes, usable (loaded, scrolled to the last row, painted) p50 {:.0} ms (goal < 1000 ms)",
                r.impact_nodes, r.impact_usable_p50_ms
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Api {
            datasets,
            clients,
            seconds,
            alone_seconds,
            rounds,
            warm_up_seconds,
            write_cost_seconds,
            fresh_seconds,
            record_rate,
            data_dir,
        } => {
            let exe = clew_binary()?;
            let phases = crate::api::Phases {
                recording: Duration::from_secs(seconds.max(1)),
                alone: Duration::from_secs(alone_seconds),
                rounds,
                warm_up: Duration::from_secs(warm_up_seconds),
                write_cost: Duration::from_secs(write_cost_seconds),
                fresh: Duration::from_secs(fresh_seconds),
            };
            let r = crate::api::api(
                datasets.max(10),
                clients.max(1),
                phases,
                record_rate,
                data_dir.as_deref(),
                &exe,
            )?;
            println!("catalogue events:  {}", r.events);
            if r.queries_alone_per_s > 0.0 {
                println!(
                    "queries alone:     {:.0}/s from {} clients (p50 {:.2} ms, p99 {:.2} ms)",
                    r.queries_alone_per_s, r.clients, r.alone_p50_ms, r.alone_p99_ms
                );
            }
            println!(
                "open connections:  {:.0} KiB of server RSS each ({} opened, one request each, left open; the second half measured)",
                r.server_kib_per_idle_connection, r.idle_connections
            );
            println!(
                "queries recording: {:.0}/s from {} clients (p50 {:.2} ms, p99 {:.2} ms, p99/p50 {:.1})",
                r.queries_per_s,
                r.clients,
                r.p50_ms,
                r.p99_ms,
                r.p99_ms / r.p50_ms
            );
            if r.queries_alone_per_s > 0.0 {
                let rounds: Vec<String> = r
                    .reads_under_writes_by_round
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect();
                println!(
                    "reads under writes: {:.2} of the queries/s alone, median of {} rounds ({}) (goal ≥ 0.8)",
                    r.reads_under_writes_ratio,
                    r.rounds,
                    rounds.join(", ")
                );
            }
            // What kept the server's cores busy in each round's phases: a
            // round that falls shows where the queries' CPU went.
            for (k, t) in r.threads_by_round.iter().enumerate() {
                if !t.alone.is_empty() {
                    println!(
                        "  round {} alone, cores by thread:     {} ({:.0} µs of CPU a query)",
                        k + 1,
                        by_thread(&t.alone, 0.02, 2),
                        t.alone_cpu_us_per_query
                    );
                }
                println!(
                    "  round {} recording, cores by thread: {} ({:.0} µs of CPU a query, events included)",
                    k + 1,
                    by_thread(&t.recording, 0.02, 2),
                    t.recording_cpu_us_per_query
                );
            }
            println!(
                "  search:          p50 {:.2} ms, p99 {:.2} ms",
                r.search_p50_ms, r.search_p99_ms
            );
            println!(
                "  10-hop lineage:  p50 {:.2} ms, p99 {:.2} ms",
                r.lineage_p50_ms, r.lineage_p99_ms
            );
            println!(
                "recording:         {:.0} events/s of {} targeted (p99 {:.1} ms to receipt); {} errors",
                r.recorded_per_s, r.record_target_per_s, r.record_p99_ms, r.errors
            );
            if r.server_cpu_us_per_event > 0.0 {
                println!(
                    "write path:        {:.0} µs of server CPU per event ({:.0} events/s recorded with no query, {:.1} to a ledger batch; a query alone takes {:.0} µs): {:.0}% of the cores at {}/s",
                    r.server_cpu_us_per_event,
                    r.recorded_alone_per_s,
                    r.events_per_batch_alone,
                    r.server_cpu_us_per_query,
                    r.write_share_of_cores * 100.0,
                    r.record_target_per_s
                );
                println!(
                    "  by thread (µs):  {}",
                    by_thread(&r.server_cpu_us_per_event_by_thread, 1.0, 0)
                );
                println!(
                    "  while recording: the server busy {:.0}% of the cores (alone {:.0}%); a query took ~{:.0} µs of CPU besides the events' share (alone {:.0} µs)",
                    r.server_busy_recording * 100.0,
                    r.server_busy_alone * 100.0,
                    r.server_cpu_us_per_query_recording,
                    r.server_cpu_us_per_query
                );
            }
            let [start, middle, end] = r.server_rss_mib;
            let [anon_start, anon_middle, anon_end] = r.server_rss_anon_mib;
            println!(
                "server RSS:        start {start:.0} MiB, middle {middle:.0} MiB, end {end:.0} MiB ({:+.1}%); anonymous {anon_start:.0} / {anon_middle:.0} / {anon_end:.0} MiB",
                (end / start - 1.0) * 100.0
            );
            let [g_start, g_middle, g_end] = r.lineage_graph_mib;
            println!(
                "lineage graph:     {g_start:.0} / {g_middle:.0} / {g_end:.0} MiB; RSS growth beyond the graph's {:+.1}% (goal ≤ 10% over 30 minutes)",
                r.rss_growth_beyond_data * 100.0
            );
            if r.fresh_server_rss_mib > 0.0 {
                println!(
                    "fresh server:      {:.0} MiB on the data the run left (lineage graph {:.0} MiB), after {fresh_seconds} s of the same load; the run's end holds {:.2}× it (goal ≤ 1.10: memory follows the data, not the uptime)",
                    r.fresh_server_rss_mib, r.fresh_lineage_graph_mib, r.rss_over_fresh_server
                );
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Catalog {
            datasets,
            producers,
            serve_cache_mib,
        } => {
            let exe = std::env::current_exe().context("locating the clew-bench binary")?;
            let r = spine::catalog(
                datasets.max(10),
                producers.max(1),
                serve_cache_mib << 20,
                &exe,
            )?;
            println!("lineage nodes / events:  {} / {}", r.nodes, r.events);
            println!(
                "sequencing:              {:.0} events/s | raw Ed25519 verify on all cores {:.0}/s | ratio {:.2} (goal ≥ 0.8)",
                r.sequencing_events_per_s,
                r.raw_verify_per_s,
                r.sequencing_events_per_s / r.raw_verify_per_s
            );
            println!(
                "                         | the sequencer's own check (keys' multiples precomputed) {:.0}/s, {:.2}x raw | ratio {:.2}",
                r.prepared_verify_per_s,
                r.prepared_verify_per_s / r.raw_verify_per_s,
                r.sequencing_events_per_s / r.prepared_verify_per_s
            );
            println!(
                "                         | CPU an event {:.1} µs, of which the committing thread {:.1} µs ({:.2}); the goal allows {:.1} µs with every core busy",
                r.sequencing_cpu_us_per_event,
                r.committing_cpu_us_per_event,
                r.committing_cpu_us_per_event / r.sequencing_cpu_us_per_event,
                r.sequencing_cpu_budget_us_per_event
            );
            println!(
                "projection:              {:.0} events/s (reindex {:.1} s) | ratio to sequencing {:.2} (goal ≥ 2)",
                r.projection_events_per_s,
                r.reindex_s,
                r.projection_events_per_s / r.sequencing_events_per_s
            );
            println!(
                "                         | CPU an event {:.1} µs ({:.2} cores busy), of which the projecting thread {:.1} µs ({:.2}); the goal allows {:.1} µs with every core busy",
                r.projection_cpu_us_per_event,
                r.projection_cpu_us_per_event * r.projection_events_per_s / 1e6,
                r.projecting_cpu_us_per_event,
                r.projecting_cpu_us_per_event / r.projection_cpu_us_per_event,
                r.projection_cpu_budget_us_per_event
            );
            println!(
                "search + 3 facets:       p50 {:.2} ms, p99 {:.2} ms | facets by tantivy terms aggregations p50 {:.2} ms | ratio {:.2}",
                r.search_p50_ms,
                r.search_p99_ms,
                r.search_by_aggregation_p50_ms,
                r.search_p50_ms / r.search_by_aggregation_p50_ms
            );
            println!(
                "10-hop upstream lineage: walk p50 {:.4} ms, again {:.4} ms | in memory: its subgraph {:.4} ms (ratio {:.1}, again {:.1}), the whole graph {:.4} ms (ratio {:.1}) | answer p50 {:.2} ms, p99 {:.2} ms",
                r.lineage_walk_p50_ms,
                r.lineage_walk_again_p50_ms,
                r.lineage_in_memory_p50_ms,
                r.lineage_walk_p50_ms / r.lineage_in_memory_p50_ms,
                r.lineage_walk_again_p50_ms / r.lineage_in_memory_p50_ms,
                r.lineage_whole_graph_p50_ms,
                r.lineage_walk_p50_ms / r.lineage_whole_graph_p50_ms,
                r.lineage_10_hop_p50_ms,
                r.lineage_10_hop_p99_ms,
            );
            println!(
                "withdrawal impact:       walk {:.3} ms, again {:.3} ms over {} downstream nodes | in memory: its subgraph {:.3} ms (ratio {:.1}, again {:.1}), the whole graph {:.3} ms (ratio {:.1}) | answer {:.1} ms",
                r.impact_walk_ms,
                r.impact_walk_again_ms,
                r.impact_nodes,
                r.impact_in_memory_ms,
                r.impact_walk_ms / r.impact_in_memory_ms,
                r.impact_walk_again_ms / r.impact_in_memory_ms,
                r.impact_whole_graph_ms,
                r.impact_walk_ms / r.impact_whole_graph_ms,
                r.impact_ms,
            );
            let stores = r.ledger_bytes_per_event
                + r.catalog_state_bytes_per_event
                + r.search_bytes_per_event;
            println!(
                "on disk per event:       ledger {:.0} B + catalogue {:.0} B + search {:.0} B = {:.0} B | envelope {:.0} B | ratio {:.2}",
                r.ledger_bytes_per_event,
                r.catalog_state_bytes_per_event,
                r.search_bytes_per_event,
                stores,
                r.envelope_bytes_per_event,
                stores / r.envelope_bytes_per_event
            );
            println!("serving peak RSS:        {:.0} MiB", r.serving_peak_rss_mib);
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Growth {
            datasets,
            api_seconds,
        } => {
            clew_binary()?;
            let exe = std::env::current_exe().context("locating the clew-bench binary")?;
            let r = growth::growth(&datasets, api_seconds.max(1), &exe)?;
            let size_growth: Vec<f64> = r
                .events
                .windows(2)
                .map(|w| w[1] as f64 / w[0] as f64)
                .collect();
            print!("{:<38}", "figure");
            for e in &r.events {
                print!(" {:>12}", format!("{e} ev"));
            }
            println!(" | growth from one size to the next");
            for f in &r.figures {
                print!("{:<38}", f.name);
                for v in &f.values {
                    print!(" {v:>12.3}");
                }
                let steps: Vec<String> = f
                    .growth
                    .iter()
                    .zip(&size_growth)
                    .map(|(g, size)| {
                        if f.latency {
                            let shape = if g < size {
                                "sub-linear"
                            } else {
                                "NOT sub-linear"
                            };
                            format!("×{g:.2} ({shape})")
                        } else {
                            format!("×{g:.2}")
                        }
                    })
                    .collect();
                println!(" | {}", steps.join(", "));
            }
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::CatalogServe {
            dir,
            runs,
            cache_mib,
        } => {
            let r = spine::catalog_serve(&dir, runs.max(1), cache_mib << 20)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Dicom {
            files,
            runs,
            source,
            python,
            script,
            keep,
        } => {
            let r = crate::dicom::run(
                files.max(1),
                runs.max(1),
                &source,
                &python,
                &script,
                keep.as_deref(),
            )?;
            println!(
                "{} files ({} MiB, copies of {} real files); medians of {} runs",
                r.files,
                r.bytes >> 20,
                r.source_files,
                r.runs
            );
            println!(
                "clew ingest scan: {:.0} files/s on {} cores, {:.0} files/s on 1 thread",
                r.clew_files_per_s, r.cores, r.clew_1_thread_files_per_s
            );
            println!(
                "pydicom {} dcmread(stop_before_pixels=True): {:.0} files/s",
                r.pydicom, r.pydicom_files_per_s
            );
            println!(
                "ratio: {:.1}x ({:.1}x on one thread)",
                r.ratio, r.ratio_1_thread
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Kafka {
            bootstrap,
            events,
            producers,
            rate,
            seconds,
        } => {
            let r = crate::kafka::run(bootstrap, events, producers.max(1), rate, seconds)?;
            println!("broker:                         {}", r.broker);
            println!(
                "producers → sequenced+published: {:.0} events/s on Kafka, {:.0} on the embedded log (ratio {:.2}; {} events, {} producers)",
                r.kafka_events_per_s, r.embedded_events_per_s, r.ratio_to_embedded, r.events, r.producers
            );
            println!(
                "the bus's cost:                 {:.0} events/s sequenced with no bus, same stream; Kafka {:.2}×, embedded {:.2}× of it (goal ≥ 0.8)",
                r.ledger_only_events_per_s, r.kafka_ratio_to_ledger_only, r.embedded_ratio_to_ledger_only
            );
            println!(
                "CPU an event (cores busy):      ledger only {:.0} µs ({:.0}%), embedded {:.0} µs ({:.0}%), Kafka {:.0} µs + the broker {} ({:.0}%)",
                r.ledger_only_cpu_us_per_event,
                r.ledger_only_busy * 100.0,
                r.embedded_cpu_us_per_event,
                r.embedded_busy * 100.0,
                r.kafka_cpu_us_per_event,
                r.broker_cpu_us_per_event
                    .map_or("not measured".to_string(), |b| format!("{b:.0} µs")),
                r.kafka_busy * 100.0
            );
            println!(
                "a replica joining the stream:   {:.0} events/s to its catalogue ({:.0} µs of CPU an event), {:.2}× its mirror reindexed ({:.0} events/s, {:.0} µs); {:.2}× the ledger-only sequencing rate (goal 2: projection ≥ 2×)",
                r.joining_events_per_s,
                r.joining_cpu_us_per_event,
                r.joining_ratio_to_reindex,
                r.joining_reindex_events_per_s,
                r.joining_reindex_cpu_us_per_event,
                r.joining_ratio_to_ledger_only
            );
            println!(
                "event → searchable on a replica: p50 {:.1} ms, p99 {:.1} ms at {:.0} events/s ({} events)",
                r.searchable_p50_ms, r.searchable_p99_ms, r.achieved_rate_per_s, r.latency_events
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Dicomweb {
            instances,
            concurrency,
            runs,
            source,
            python,
            script,
        } => {
            let exe = clew_binary()?;
            let r = crate::dicomweb::run(
                &exe,
                instances.max(1),
                concurrency.max(1),
                runs.max(1),
                &source,
                &python,
                &script,
            )?;
            println!(
                "PACS: {}; {} instances in {} series of {} studies (de-identified copies of real files); medians of {} runs",
                r.pacs, r.instances, r.series, r.studies, r.runs
            );
            println!(
                "clew ingest dicomweb --dry-run ({} requests at once): {:.0} instances/s; Orthanc busy {:.2} cores, clew {:.2} cores (of {})",
                r.concurrency,
                r.clew_instances_per_s, r.orthanc_cores_clew_run, r.clew_cores, r.cores
            );
            println!(
                "dicomweb-client {} (one request at a time): {:.0} instances/s; Orthanc busy {:.2} cores, Python {:.2} cores",
                r.client, r.client_instances_per_s, r.orthanc_cores_client_run, r.client_cores
            );
            println!(
                "Orthanc during Clew's run: {:.2} of the {:.2} cores Clew left it ({:.2} of its limit)",
                r.orthanc_cores_clew_run,
                r.cores as f64 - r.clew_cores,
                r.orthanc_share_of_its_limit
            );
            println!("ratio: {:.1}x the Python client (goal 3x)", r.ratio);
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Witness {
            events,
            clients,
            runs,
            samples,
        } => {
            let exe = clew_binary()?;
            let r = crate::witness::run(
                &exe,
                events.max(1),
                clients.max(1),
                runs.max(1),
                samples.max(1),
            )?;
            println!(
                "witnesses: {} (quorum {}); {} events per server, {} clients, medians of {} runs",
                r.witnesses.join(", "),
                r.witnesses.len(),
                r.events,
                r.clients,
                r.runs
            );
            println!(
                "signed → witnessed by both: p50 {:.1} ms, p99 {:.1} ms ({} events one at a time)",
                r.latency_p50_ms, r.latency_p99_ms, r.latency_samples
            );
            println!(
                "recording: {:.0} events/s with witnesses, {:.0} without",
                r.events_per_s_on, r.events_per_s_off
            );
            println!("ratio: {:.2} (goal 0.95)", r.ratio);
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Blobs {
            runs_small,
            runs_large,
        } => {
            let exe = clew_binary()?;
            let r = crate::blobs::run(&exe, runs_small.max(1), runs_large.max(1))?;
            println!("store: {}", r.store);
            for s in &r.sizes {
                println!(
                    "{:>2} MiB put: Clew p50 {:.1} ms p99 {:.1} ms ({:.0} MiB/s), direct p50 {:.1} ms p99 {:.1} ms ({:.0} MiB/s); ratio {:.2} ({} runs)",
                    s.mib, s.clew_put_p50_ms, s.clew_put_p99_ms, s.clew_put_mib_per_s,
                    s.direct_put_p50_ms, s.direct_put_p99_ms, s.direct_put_mib_per_s, s.put_ratio, s.runs
                );
                println!(
                    "{:>2} MiB get: Clew p50 {:.1} ms p99 {:.1} ms ({:.0} MiB/s), direct p50 {:.1} ms p99 {:.1} ms ({:.0} MiB/s); ratio {:.2}",
                    s.mib, s.clew_get_p50_ms, s.clew_get_p99_ms, s.clew_get_mib_per_s,
                    s.direct_get_p50_ms, s.direct_get_p99_ms, s.direct_get_mib_per_s, s.get_ratio
                );
            }
            println!("lowest ratio: {:.2} (goal 0.8)", r.worst_ratio);
            println!("{}", serde_json::to_string(&r)?);
        }
        Bench::Ledger {
            events,
            batch_size,
            producers,
        } => {
            let r = spine::ledger(events, batch_size, producers.max(1))?;
            println!("events sequenced:        {}", r.events);
            println!("mean event size:         {} bytes", r.mean_event_bytes);
            println!(
                "sequenced events/s:      {:.0} (batch {}, fsync per batch)",
                r.events_per_s, r.batch
            );
            println!("raw verify/s, all cores: {:.0}", r.raw_verify_per_s);
            println!(
                "raw verify/s, one core:  {:.0}",
                r.raw_verify_single_core_per_s
            );
            println!("ratio to raw verify:     {:.2}", r.ratio_to_raw_verify);
            println!(
                "prepared-key verify/s:   {:.0} (all cores; ratio {:.2})",
                r.prepared_verify_per_s, r.ratio_to_prepared_verify
            );
            println!(
                "inclusion proof at {}:   p50 {:.1} us, p99 {:.1} us",
                r.tree_size, r.inclusion_proof_p50_us, r.inclusion_proof_p99_us
            );
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
