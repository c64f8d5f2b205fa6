//! `clew-bench ledger`: sequencing throughput with signature verification
//! against the machine's raw Ed25519 verify rate, and inclusion-proof latency.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clew_events::ProducerKey;
use clew_ledger::{Ledger, LedgerOptions, Submission};
use rayon::prelude::*;
use serde::Serialize;

use clew::synthetic::{self, Producers};

/// Figures printed as the last line of `clew-bench ledger`.
#[derive(Debug, Serialize)]
pub struct LedgerBench {
    /// Events sequenced (excluding setup).
    pub events: u64,
    /// Mean canonical envelope size in bytes.
    pub mean_event_bytes: u64,
    /// Batch size used.
    pub batch: usize,
    /// Sequenced events per second, signature checks and fsync per batch included.
    pub events_per_s: f64,
    /// Ed25519 verifications per second on all cores (verify_strict, same messages).
    pub raw_verify_per_s: f64,
    /// Ed25519 verifications per second on one core.
    pub raw_verify_single_core_per_s: f64,
    /// events_per_s / raw_verify_per_s.
    pub ratio_to_raw_verify: f64,
    /// The sequencer's own signature check (each key's multiples
    /// precomputed) per second on all cores, same messages.
    pub prepared_verify_per_s: f64,
    /// events_per_s / prepared_verify_per_s.
    pub ratio_to_prepared_verify: f64,
    /// Leaves in the tree when proofs were measured.
    pub tree_size: u64,
    /// Inclusion proof latency, median, microseconds.
    pub inclusion_proof_p50_us: f64,
    /// Inclusion proof latency, 99th percentile, microseconds.
    pub inclusion_proof_p99_us: f64,
}

/// Runs the ledger benchmark with `events` events in batches of `batch`.
pub fn ledger(events: u64, batch: usize, producers: usize) -> Result<LedgerBench> {
    ensure!(events >= 1000, "use at least 1,000 events");
    let dir = tempfile::tempdir()?;
    let (ledger_key, p) = bench_keys(producers)?;

    // 1. Generate the signed stream (not timed).
    let gen = clew::progress_bar(events, "signing");
    let mut stream = Vec::with_capacity(events as usize);
    let chunk = 50_000u64;
    let mut at = 0;
    while at < events {
        let end = (at + chunk).min(events);
        stream.extend(synthetic::events(&p, at..end, events));
        gen.set_position(end);
        at = end;
    }
    gen.finish_and_clear();
    let mean_event_bytes = stream.iter().map(|e| e.len() as u64).sum::<u64>() / events;

    // 2. Raw Ed25519 verify rate over the same messages, one core and all cores.
    let rates = raw_verify_rates(&stream, &p)?;

    // 3. Sequence into a fresh durable ledger (fsync per batch, as in production).
    let ledger = bench_ledger(dir.path(), &ledger_key, &p)?;

    let pb = clew::progress_bar(events, "sequencing");
    let started = Instant::now();
    sequence_all(&ledger, stream, 0, batch, &pb)?;
    let elapsed = started.elapsed();
    pb.finish_and_clear();
    let events_per_s = events as f64 / elapsed.as_secs_f64();

    // 4. Inclusion proofs at the final size.
    let size = ledger.size();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..10_000 {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let index = rng_state % size;
        let t = Instant::now();
        let proof = ledger.inclusion_proof(index, size)?;
        let took = t.elapsed();
        std::hint::black_box(proof);
        hist.record(took.as_nanos().max(1) as u64)?;
    }
    let us = |q: f64| Duration::from_nanos(hist.value_at_quantile(q)).as_secs_f64() * 1e6;

    Ok(LedgerBench {
        events,
        mean_event_bytes,
        batch,
        events_per_s,
        raw_verify_per_s: rates.all,
        raw_verify_single_core_per_s: rates.single,
        ratio_to_raw_verify: events_per_s / rates.all,
        prepared_verify_per_s: rates.prepared_all,
        ratio_to_prepared_verify: events_per_s / rates.prepared_all,
        tree_size: size,
        inclusion_proof_p50_us: us(0.5),
        inclusion_proof_p99_us: us(0.99),
    })
}

/// Signature checks per second over (up to 20,000 of) a stream's
/// envelopes: the limits sequencing is held against.
struct VerifyRates {
    /// The library's own check (`verify_strict`), one core.
    single: f64,
    /// The same on all cores: the goal's raw verify rate.
    all: f64,
    /// The sequencer's check with each key's multiples precomputed
    /// (`PreparedKey`: the same answers), on all cores.
    prepared_all: f64,
}

fn raw_verify_rates(stream: &[Vec<u8>], p: &Producers) -> Result<VerifyRates> {
    let step = (stream.len() / 20_000).max(1);
    let sample: Vec<_> = stream
        .iter()
        .step_by(step)
        .take(20_000)
        .map(|b| clew_events::open(b).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let verifiers: std::collections::HashMap<String, clew_events::VerifierKey> = p
        .ingest
        .iter()
        .chain(std::iter::once(&p.admin))
        .map(|k| (k.key_id().to_string(), k.verifier()))
        .collect();
    let check = |o: &clew_events::OpenedEnvelope| {
        verifiers
            .get(o.key_id())
            .map(|v| o.verify_signature(v).is_ok())
            .unwrap_or(false)
    };
    let t = Instant::now();
    let ok = sample.iter().filter(|o| check(o)).count();
    let single = sample.len() as f64 / t.elapsed().as_secs_f64();
    let prepared: std::collections::HashMap<&str, clew_events::PreparedKey> = verifiers
        .iter()
        .map(|(id, v)| (id.as_str(), clew_events::PreparedKey::new(v.clone())))
        .collect();
    let check_prepared = |o: &clew_events::OpenedEnvelope| {
        prepared
            .get(o.key_id())
            .is_some_and(|k| o.verify_signature_prepared(k).is_ok())
    };
    // All cores, the two checks alternated three times each and the median
    // of each kept: this machine's speed moves within seconds, and one
    // half-second sample of each can land on either side of a change.
    let (mut all, mut prepared_all) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let ok_par = sample.par_iter().filter(|o| check(o)).count();
        all.push(sample.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let ok_prepared = sample.par_iter().filter(|o| check_prepared(o)).count();
        prepared_all.push(sample.len() as f64 / t.elapsed().as_secs_f64());
        ensure!(
            ok == sample.len() && ok_par == ok && ok_prepared == ok,
            "benchmark signatures must verify"
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (all, prepared_all) = (median(all), median(prepared_all));
    Ok(VerifyRates {
        single,
        all,
        prepared_all,
    })
}

/// Page cache for projecting a whole ledger (`reindex`): large enough to
/// hold a million-node catalogue's state, so projection does not re-read pages.
pub(crate) const PROJECTION_CACHE_BYTES: u64 = clew::PROJECTION_CACHE_BYTES;

/// Figures printed as the last line of `clew-bench catalog`.
#[derive(Debug, Serialize, serde::Deserialize, Default)]
pub struct CatalogBench {
    /// Events in the ledger (one per lineage node, plus set-up).
    pub events: u64,
    /// Lineage nodes projected.
    pub nodes: u64,
    /// Projection throughput from an empty catalogue (= `reindex`).
    pub projection_events_per_s: f64,
    /// Seconds to rebuild the catalogue from the ledger (`reindex`).
    pub reindex_s: f64,
    /// Sequencing throughput of the same stream into the ledger (signature
    /// checks and fsync per batch of 2,048), events/s.
    pub sequencing_events_per_s: f64,
    /// Ed25519 verifications per second on all cores over the stream's
    /// first envelopes, same run.
    pub raw_verify_per_s: f64,
    /// The sequencer's own signature check (each key's multiples
    /// precomputed) per second on all cores, same envelopes.
    #[serde(default)]
    pub prepared_verify_per_s: f64,
    /// The process's CPU time while sequencing, µs an event (pre-checks,
    /// the committing thread, sled's threads).
    #[serde(default)]
    pub sequencing_cpu_us_per_event: f64,
    /// Of that, the committing thread's (the rules, building and writing
    /// each batch), µs an event.
    #[serde(default)]
    pub committing_cpu_us_per_event: f64,
    /// The process's CPU time while projecting (`reindex`), µs an event.
    #[serde(default)]
    pub projection_cpu_us_per_event: f64,
    /// Of that, the projecting thread's (projecting each chunk, writing
    /// its batch, adding it to the graph), µs an event.
    #[serde(default)]
    pub projecting_cpu_us_per_event: f64,
    /// The CPU an event sequencing may take to reach its goal (0.8× the
    /// raw verify rate) with every core busy: cores ÷ that rate, µs. Rates
    /// move with the machine's speed; this says how far the sequencer's
    /// own CPU is from the goal.
    #[serde(default)]
    pub sequencing_cpu_budget_us_per_event: f64,
    /// The same for projection (2× the sequencing rate of the run), µs.
    #[serde(default)]
    pub projection_cpu_budget_us_per_event: f64,
    /// Search (text + 3 facet filters, facet counts), median ms.
    pub search_p50_ms: f64,
    /// Search, 99th percentile ms.
    pub search_p99_ms: f64,
    /// 10-hop upstream lineage from a deployment, median ms.
    pub lineage_10_hop_p50_ms: f64,
    /// 10-hop upstream lineage, 99th percentile ms.
    pub lineage_10_hop_p99_ms: f64,
    /// Withdrawal impact of the hub dataset version, median ms.
    pub impact_ms: f64,
    /// Nodes downstream of the hub.
    pub impact_nodes: u64,
    /// Peak resident memory of the serving process (catalogue open, queries run), MiB.
    pub serving_peak_rss_mib: f64,
    /// The same searches with their facets counted the way tantivy
    /// recommends (fast-field terms aggregations in the same one pass, not a
    /// collector per facet), median ms.
    pub search_by_aggregation_p50_ms: f64,
    /// The same 10-hop lineage subgraphs walked over an adjacency list in
    /// memory (interned ids), median ms.
    pub lineage_in_memory_p50_ms: f64,
    /// The impact subgraph (every downstream edge) walked in memory, median ms.
    pub impact_in_memory_ms: f64,
    /// The catalogue's own walk for the 10-hop lineage (its resident graph,
    /// before any node record is read), median ms.
    pub lineage_walk_p50_ms: f64,
    /// The catalogue's own walk for the impact answer, median ms.
    pub impact_walk_ms: f64,
    /// The catalogue's lineage walk of the same start again, right after
    /// the first (what it reads as recently touched as the in-memory
    /// peer's, which is walked right after it is built), median ms.
    pub lineage_walk_again_p50_ms: f64,
    /// The catalogue's impact walk again, right after the first, median ms.
    pub impact_walk_again_ms: f64,
    /// The 10-hop lineage walked over the whole graph held as adjacency
    /// lists in memory, median ms.
    pub lineage_whole_graph_p50_ms: f64,
    /// The impact walked over the whole graph in memory, median ms.
    pub impact_whole_graph_ms: f64,
    /// Signed envelope bytes per event (what the stores are held against).
    pub envelope_bytes_per_event: f64,
    /// Ledger directory bytes on disk per event.
    pub ledger_bytes_per_event: f64,
    /// Catalogue state (sled) bytes on disk per event.
    pub catalog_state_bytes_per_event: f64,
    /// Search index bytes on disk per event.
    pub search_bytes_per_event: f64,
}

/// CPU seconds of `clock` (a process's or this thread's CPU-time clock).
fn cpu_time(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Bytes a directory takes on disk (allocated blocks, so a sparse or
/// preallocated file counts what it really holds).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// An adjacency list in memory over interned ids: the limit a walk over the
/// catalogue is held against.
#[derive(Default)]
struct Adjacency {
    ids: std::collections::HashMap<String, u32>,
    next: Vec<Vec<u32>>,
}

impl Adjacency {
    fn id(&mut self, subject: &str) -> u32 {
        if let Some(id) = self.ids.get(subject) {
            return *id;
        }
        let id = self.next.len() as u32;
        self.ids.insert(subject.to_string(), id);
        self.next.push(Vec::new());
        id
    }

    fn add(&mut self, from: &str, to: &str) {
        let (a, b) = (self.id(from), self.id(to));
        self.next[a as usize].push(b);
    }

    /// Breadth-first from `start`, at most `depth` hops: the nodes reached.
    fn walk(&self, start: u32, depth: u32) -> usize {
        breadth_first(&self.next, start, depth, &mut vec![false; self.next.len()])
    }
}

/// Breadth-first over `next` from `start`, at most `depth` hops, marking
/// `seen` (all false on entry, as long as `next`): the nodes reached.
fn breadth_first(next: &[Vec<u32>], start: u32, depth: u32, seen: &mut [bool]) -> usize {
    seen[start as usize] = true;
    let mut frontier = vec![start];
    let mut reached = 1;
    for _ in 0..depth {
        let mut after = Vec::new();
        for n in frontier {
            for &m in &next[n as usize] {
                if !seen[m as usize] {
                    seen[m as usize] = true;
                    reached += 1;
                    after.push(m);
                }
            }
        }
        if after.is_empty() {
            break;
        }
        frontier = after;
    }
    reached
}

/// The whole lineage graph as adjacency lists in memory (interned ids, both
/// ways): a walk over it costs what a walk over any resident graph of this
/// size costs in memory latency, with nothing else in the way.
struct WholeGraph {
    /// Upstream: each node to what it depends on.
    up: Adjacency,
    /// Downstream: the same edges turned round.
    down: Vec<Vec<u32>>,
}

impl WholeGraph {
    /// Every node record of the catalogue, read once (untimed).
    fn of(catalog: &clew_catalog::Catalog) -> Result<Self> {
        let mut up = Adjacency::default();
        for node_type in clew_catalog::NODE_TYPES {
            for n in catalog.nodes_of_type(node_type)? {
                let from = n.subject();
                up.id(&from);
                for e in &n.out {
                    up.add(&from, &e.to);
                }
            }
        }
        let mut down = vec![Vec::new(); up.next.len()];
        for (from, targets) in up.next.iter().enumerate() {
            for &to in targets {
                down[to as usize].push(from as u32);
            }
        }
        Ok(WholeGraph { up, down })
    }

    fn id(&self, subject: &str) -> Option<u32> {
        self.up.ids.get(subject).copied()
    }
}

/// Builds the synthetic national catalogue through the real event path
/// (signed events, sequenced into a ledger, projected into a catalogue) and
/// measures it; the queries run in a separate serving process so its peak
/// memory is the catalogue's alone.
pub fn catalog(
    datasets: u64,
    producers: usize,
    serve_cache_bytes: u64,
    exe: &std::path::Path,
) -> Result<CatalogBench> {
    use clew::synthetic::NationalCatalogue;
    let scale = NationalCatalogue { datasets };
    let dir = tempfile::tempdir()?;
    let (ledger_key, p) = bench_keys(producers)?;
    let ledger = bench_ledger(&dir.path().join("ledger"), &ledger_key, &p)?;

    let total = scale.events();
    let pb = clew::progress_bar(total, "sequencing");
    let mut at = 0;
    let mut envelope_bytes = 0u64;
    // Only the ledger's own work is timed, not signing the stream.
    let mut sequencing = Duration::ZERO;
    let mut raw_verify_per_s = 0.0;
    let mut prepared_verify_per_s = 0.0;
    let (mut sequencing_cpu, mut committing_cpu) = (0.0, 0.0);
    while at < total {
        let end = (at + 50_000).min(total);
        let envelopes = scale.envelopes(&p, at..end);
        envelope_bytes += envelopes.iter().map(|e| e.len() as u64).sum::<u64>();
        if at == 0 {
            let rates = raw_verify_rates(&envelopes, &p)?;
            raw_verify_per_s = rates.all;
            prepared_verify_per_s = rates.prepared_all;
        }
        let started = Instant::now();
        let cpu = (
            cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID),
            cpu_time(libc::CLOCK_THREAD_CPUTIME_ID),
        );
        // This thread commits each batch (`sequence_pipelined`); pre-checks
        // run on the pool meanwhile.
        sequence_all(&ledger, envelopes, at, 2048, &pb)?;
        sequencing += started.elapsed();
        sequencing_cpu += cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu.0;
        committing_cpu += cpu_time(libc::CLOCK_THREAD_CPUTIME_ID) - cpu.1;
        at = end;
    }
    pb.finish_and_clear();
    let sequencing_events_per_s = total as f64 / sequencing.as_secs_f64();

    let catalog_dir = dir.path().join("catalog");
    let pb = clew::progress_bar(ledger.size(), "projecting");
    let started = Instant::now();
    let cpu = (
        cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID),
        cpu_time(libc::CLOCK_THREAD_CPUTIME_ID),
    );
    // As `clew reindex` runs it: freed memory kept, not given back and
    // faulted in again chunk after chunk.
    let kept = clew::memory::keep_freed_memory();
    let catalog = clew_catalog::Catalog::rebuild_with_cache(
        &catalog_dir,
        &ledger,
        PROJECTION_CACHE_BYTES,
        &|done, _| pb.set_position(done),
    )?;
    let reindex_s = started.elapsed().as_secs_f64();
    drop(kept);
    // This thread projects each chunk; reading ahead, compressing and
    // search run on others.
    let (projection_cpu, projecting_cpu) = (
        cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu.0,
        cpu_time(libc::CLOCK_THREAD_CPUTIME_ID) - cpu.1,
    );
    pb.finish_and_clear();
    let events = ledger.size();
    drop(catalog);
    drop(ledger);
    let per_event = |bytes: u64| bytes as f64 / events as f64;
    let stores = (
        per_event(envelope_bytes),
        per_event(disk_bytes(&dir.path().join("ledger"))),
        per_event(disk_bytes(&catalog_dir.join("catalog.db"))),
        per_event(disk_bytes(&catalog_dir.join("search"))),
    );

    let out = std::process::Command::new(exe)
        .args(["catalog-serve", "--dir"])
        .arg(&catalog_dir)
        .args(["--runs", &scale.runs().to_string()])
        .args(["--cache-mib", &(serve_cache_bytes >> 20).to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "serving process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let mut r: CatalogBench = serde_json::from_str(&last)?;
    r.events = events;
    r.nodes = 200 + 50 * datasets;
    r.reindex_s = reindex_s;
    r.projection_events_per_s = events as f64 / reindex_s;
    r.sequencing_events_per_s = sequencing_events_per_s;
    r.raw_verify_per_s = raw_verify_per_s;
    r.prepared_verify_per_s = prepared_verify_per_s;
    r.sequencing_cpu_us_per_event = sequencing_cpu * 1e6 / total as f64;
    r.committing_cpu_us_per_event = committing_cpu * 1e6 / total as f64;
    r.projection_cpu_us_per_event = projection_cpu * 1e6 / events as f64;
    r.projecting_cpu_us_per_event = projecting_cpu * 1e6 / events as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let budget = |rate: f64| if rate > 0.0 { cores * 1e6 / rate } else { 0.0 };
    r.sequencing_cpu_budget_us_per_event = budget(0.8 * raw_verify_per_s);
    r.projection_cpu_budget_us_per_event = budget(2.0 * sequencing_events_per_s);
    (
        r.envelope_bytes_per_event,
        r.ledger_bytes_per_event,
        r.catalog_state_bytes_per_event,
        r.search_bytes_per_event,
    ) = stores;
    Ok(r)
}

/// The serving half of `clew-bench catalog`: opens the catalogue and times
/// queries; reports this process's peak RSS.
pub fn catalog_serve(dir: &std::path::Path, runs: u64, cache_bytes: u64) -> Result<CatalogBench> {
    use clew_catalog::{Catalog, Direction, SearchRequest};
    let catalog = Catalog::open_with_cache(dir, cache_bytes)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };

    let texts = [
        "chest imaging",
        "cohort research",
        "ct",
        "covid",
        "imaging cohort",
        "curated development",
        "routinely collected",
    ];
    let modalities = ["CT", "DX", "CR", "MR", "PT"];
    let parts = ["CHEST", "ABDOMEN", "HEAD", "PELVIS", "SPINE"];
    let mut search = Vec::new();
    let mut by_aggregation = Vec::new();
    for i in 0..300usize {
        let mut req = SearchRequest {
            text: texts[i % texts.len()].into(),
            limit: 20,
            ..Default::default()
        };
        req.filters
            .insert("modality".into(), vec![modalities[i % 5].into()]);
        req.filters
            .insert("body_part".into(), vec![parts[(i / 5) % 5].into()]);
        req.filters.insert(
            "deidentification".into(),
            vec!["Clean Pixel Data Option".into()],
        );
        let t = Instant::now();
        let r = catalog.search(&req)?;
        search.push(ms(t.elapsed()));
        let t = Instant::now();
        let peer = catalog.search_by_aggregation(&req)?;
        by_aggregation.push(ms(t.elapsed()));
        ensure!(
            peer == r,
            "counted by aggregations, the search answered otherwise: {} / {} results, facets {:?} / {:?}",
            peer.total,
            r.total,
            peer.facets,
            r.facets
        );
        std::hint::black_box((r, peer));
    }

    let mut lineage = Vec::new();
    let mut lineage_walk = Vec::new();
    let mut lineage_walk_again = Vec::new();
    let mut lineage_in_memory = Vec::new();
    // The catalogue's own walk, timed: ms and the nodes it reached.
    let timed_walk = |start: &str, direction, max_depth, kept| {
        let t = Instant::now();
        let reach = catalog.reach(
            start,
            direction,
            max_depth,
            None,
            clew_catalog::Admit::All,
            kept,
        )?;
        anyhow::Ok((ms(t.elapsed()), reach.len()))
    };
    let upstream_walk =
        |start: &str| timed_walk(start, Direction::Upstream, 10, clew_catalog::KeptEdges::All);
    for i in 0..1000u64 {
        let k = (i * 7_919) % runs;
        let deployment = format!("deployment/dep-{k}");
        // First as a query meets it: its part of the graph cold.
        let (first, walked) = upstream_walk(&deployment)?;
        lineage_walk.push(first);
        // Again at once: warm, as its peer below is when walked.
        let (again, walked_again) = upstream_walk(&deployment)?;
        lineage_walk_again.push(again);
        let t = Instant::now();
        let a = catalog.lineage(&deployment, Direction::Upstream, 10, None)?;
        lineage.push(ms(t.elapsed()));
        // The same subgraph as an adjacency list in memory, walked the same
        // way (built untimed, so walked warm).
        let mut adjacency = Adjacency::default();
        let start = adjacency.id(&deployment);
        for e in &a.edges {
            adjacency.add(&e.from, &e.to);
        }
        let t = Instant::now();
        let reached = adjacency.walk(start, 10);
        lineage_in_memory.push(ms(t.elapsed()));
        ensure!(
            reached == a.nodes.len() && walked == a.nodes.len() && walked_again == walked,
            "the in-memory walk reached {reached} nodes, the catalogue's walk {walked} (again {walked_again}), its answer {}",
            a.nodes.len()
        );
    }

    let mut impact = Vec::new();
    let mut impact_walk = Vec::new();
    let mut impact_walk_again = Vec::new();
    let mut impact_nodes = 0;
    let mut answer = None;
    let downstream_walk = || {
        timed_walk(
            clew::synthetic::HUB,
            Direction::Downstream,
            u32::MAX,
            // As the impact answer walks: it needs each node's parent only.
            clew_catalog::KeptEdges::Parents,
        )
    };
    for _ in 0..5 {
        // First after an answer (which read node records through the
        // caches), then again at once, warm as its peer below is.
        let (first, walked) = downstream_walk()?;
        impact_walk.push(first);
        let (again, walked_again) = downstream_walk()?;
        impact_walk_again.push(again);
        let t = Instant::now();
        let a = catalog.impact(clew::synthetic::HUB, None)?;
        impact.push(ms(t.elapsed()));
        impact_nodes = a.affected.len() as u64;
        ensure!(
            walked == a.affected.len() + 1 && walked_again == walked,
            "the impact walk reached {walked} nodes (again {walked_again}), its answer {}",
            a.affected.len() + 1
        );
        answer = Some(a);
    }
    // Every downstream edge among the affected nodes, in memory (each
    // node's own upstream references, turned round).
    let mut impact_in_memory = Vec::new();
    if let Some(a) = answer {
        let mut adjacency = Adjacency::default();
        let hub = adjacency.id(&a.dataset_version.subject);
        let mut within: std::collections::HashSet<&str> =
            a.affected.iter().map(|n| n.subject.as_str()).collect();
        within.insert(a.dataset_version.subject.as_str());
        for n in &a.affected {
            let record = catalog
                .node(&n.subject)?
                .with_context(|| format!("{} is in the answer but not the catalogue", n.subject))?;
            for e in &record.out {
                if within.contains(e.to.as_str()) {
                    adjacency.add(&e.to, &n.subject);
                }
            }
        }
        for _ in 0..5 {
            let t = Instant::now();
            let reached = adjacency.walk(hub, u32::MAX);
            impact_in_memory.push(ms(t.elapsed()));
            ensure!(
                reached == a.affected.len() + 1,
                "the in-memory walk reached {reached} nodes, the catalogue {}",
                a.affected.len() + 1
            );
        }
    }

    // Peak memory before the whole-graph peer below is built.
    let [peak_rss_mib] = crate::api::status_mib("self", ["VmHWM:"]);

    // The same walks over the whole graph in memory: the latency floor of
    // a walk over a resident graph this large.
    let whole = WholeGraph::of(&catalog)?;
    let mut seen = vec![false; whole.down.len()];
    let mut lineage_whole = Vec::new();
    for i in 0..1000u64 {
        let k = (i * 7_919) % runs;
        let start = whole
            .id(&format!("deployment/dep-{k}"))
            .context("a deployment the catalogue has is not in the whole graph")?;
        seen.iter_mut().for_each(|s| *s = false);
        let t = Instant::now();
        let reached = breadth_first(&whole.up.next, start, 10, &mut seen);
        lineage_whole.push(ms(t.elapsed()));
        std::hint::black_box(reached);
    }
    let mut impact_whole = Vec::new();
    let hub = whole
        .id(clew::synthetic::HUB)
        .context("the hub is not in the whole graph")?;
    for _ in 0..5 {
        seen.iter_mut().for_each(|s| *s = false);
        let t = Instant::now();
        let reached = breadth_first(&whole.down, hub, u32::MAX, &mut seen);
        impact_whole.push(ms(t.elapsed()));
        ensure!(
            reached == impact_nodes as usize + 1,
            "the whole-graph walk reached {reached} nodes, the catalogue {}",
            impact_nodes + 1
        );
    }
    Ok(CatalogBench {
        search_p50_ms: pct(&mut search, 0.5),
        search_p99_ms: pct(&mut search, 0.99),
        lineage_10_hop_p50_ms: pct(&mut lineage, 0.5),
        lineage_10_hop_p99_ms: pct(&mut lineage, 0.99),
        impact_ms: pct(&mut impact, 0.5),
        impact_nodes,
        serving_peak_rss_mib: peak_rss_mib,
        search_by_aggregation_p50_ms: pct(&mut by_aggregation, 0.5),
        lineage_in_memory_p50_ms: pct(&mut lineage_in_memory, 0.5),
        impact_in_memory_ms: if impact_in_memory.is_empty() {
            0.0
        } else {
            pct(&mut impact_in_memory, 0.5)
        },
        lineage_walk_p50_ms: pct(&mut lineage_walk, 0.5),
        impact_walk_ms: pct(&mut impact_walk, 0.5),
        lineage_walk_again_p50_ms: pct(&mut lineage_walk_again, 0.5),
        impact_walk_again_ms: pct(&mut impact_walk_again, 0.5),
        lineage_whole_graph_p50_ms: pct(&mut lineage_whole, 0.5),
        impact_whole_graph_ms: pct(&mut impact_whole, 0.5),
        ..Default::default()
    })
}

/// Sequences benchmark envelopes (input offsets from `first_offset + 1`) in
/// pipelined batches; any refusal is an error, since the stream is valid by
/// construction.
pub(crate) fn sequence_all(
    ledger: &Ledger,
    envelopes: Vec<Vec<u8>>,
    first_offset: u64,
    batch: usize,
    pb: &indicatif::ProgressBar,
) -> Result<()> {
    let mut offset = first_offset;
    let mut it = envelopes.into_iter();
    let batches = std::iter::from_fn(|| {
        let subs: Vec<Submission> = it
            .by_ref()
            .take(batch)
            .map(|bytes| {
                offset += 1;
                Submission::received(offset, bytes)
            })
            .collect();
        (!subs.is_empty()).then_some(subs)
    });
    ledger.sequence_pipelined("bench", batches, |r| -> Result<()> {
        if let Some(first) = r.rejected.first() {
            anyhow::bail!("benchmark event refused: {first:?}");
        }
        pb.inc(r.accepted.len() as u64);
        Ok(())
    })
}

/// The benchmarks' deterministic keys: the ledger key and `producers`
/// ingest producers beside an admin.
pub(crate) fn bench_keys(producers: usize) -> Result<(ProducerKey, Producers)> {
    let ledger_key = ProducerKey::from_seed("bench.clew.example/ledger", [1; 32])?;
    let admin = ProducerKey::from_seed("bench-admin", [2; 32])?;
    Ok((ledger_key, Producers::new(admin, "admin", producers)))
}

/// A fresh durable ledger in `dir` with the benchmark's producers registered.
pub(crate) fn bench_ledger(
    dir: &std::path::Path,
    ledger_key: &ProducerKey,
    p: &Producers,
) -> Result<Ledger> {
    let ledger = Ledger::create(
        dir,
        &ledger_key.to_signer_text(),
        &p.admin,
        &p.admin_id,
        LedgerOptions::default(),
    )?;
    let setup: Vec<Submission> = p
        .registrations()
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| Submission::received(i as u64, bytes))
        .collect();
    let r = ledger.sequence("setup", setup)?;
    ensure!(
        r.rejected.is_empty(),
        "producer registration refused: {:?}",
        r.rejected
    );
    Ok(ledger)
}
