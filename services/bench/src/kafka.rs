//! `clew-bench kafka`: the distributed path on a real broker.
//!
//! 1. Throughput: producers put a pre-signed synthetic stream on the inbound
//!    stream; the sequencer (in this process, on the bus under test) reads it
//!    into a durable ledger and publishes every leaf, checkpoint and refusal.
//!    Measured from the first submission to the last leaf acknowledged on the
//!    sequenced stream. Run on the embedded log (the same sequencer without
//!    a broker) and on Kafka, each held against the same stream sequenced
//!    straight into a ledger with no bus at all (the ledger-only rate, same
//!    run): what the bus costs.
//! 2. A replica joining: a read replica follows the Kafka run's streams from
//!    their start (mirrors, verifies and projects every leaf, as a partner or
//!    a new replica does), timed until its catalogue holds them all; then its
//!    mirror is reindexed into a new catalogue, the projection it is held
//!    against, and both against the ledger-only sequencing rate (goal 2).
//!    This stream is heavier to project than `clew-bench catalog`'s: nearly
//!    every event is a dataset version, each a search document.
//! 3. Latency at a steady rate: a read replica (mirror + catalogue) follows
//!    the Kafka streams; events are submitted through it at a fixed rate and
//!    each is timed until the replica has it in its catalogue and search
//!    index (what a client of the replica's API waits for).
//!
//! The stream is submitted in dependency order (sites, then datasets, then
//! first versions, then the rest), each range by all producers at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clew_bus::{Bus, EmbeddedBus, KafkaBus, KafkaConfig, Topics};
use clew_sequencer::{Progress, SequencerOptions};
use serde::Serialize;

use clew::synthetic::{self, Producers};

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct KafkaBench {
    /// Which broker: `harness <bootstrap>` or `external <bootstrap>`.
    pub broker: String,
    /// Events in the throughput stream.
    pub events: u64,
    /// Producer threads.
    pub producers: usize,
    /// Producers → sequenced and published, on Kafka.
    pub kafka_events_per_s: f64,
    /// The same on the embedded log (baseline, same run).
    pub embedded_events_per_s: f64,
    /// kafka / embedded.
    pub ratio_to_embedded: f64,
    /// The same stream sequenced straight into a ledger, no bus (same run).
    pub ledger_only_events_per_s: f64,
    /// kafka / ledger only.
    pub kafka_ratio_to_ledger_only: f64,
    /// embedded / ledger only.
    pub embedded_ratio_to_ledger_only: f64,
    /// CPU this process spent per event (µs) in the ledger-only run…
    pub ledger_only_cpu_us_per_event: f64,
    /// … on the embedded log (producers, bus, sequencer, publisher)…
    pub embedded_cpu_us_per_event: f64,
    /// … and on Kafka (librdkafka's threads included).
    pub kafka_cpu_us_per_event: f64,
    /// The local broker's CPU per event in the Kafka run (µs; null for an
    /// external broker).
    pub broker_cpu_us_per_event: Option<f64>,
    /// Share of the machine's cores busy in each run (this process, plus
    /// the broker in the Kafka run): below 1, the run waited.
    pub ledger_only_busy: f64,
    /// … the embedded log.
    pub embedded_busy: f64,
    /// … Kafka.
    pub kafka_busy: f64,
    /// Submissions refused in the throughput runs and the warm-up (should
    /// be 0).
    pub refused: u64,
    /// A read replica joining the Kafka run's streams from their start:
    /// leaves a second into its catalogue (mirrored, verified, projected).
    pub joining_events_per_s: f64,
    /// … this process's CPU an event meanwhile (µs).
    pub joining_cpu_us_per_event: f64,
    /// Its mirror reindexed into a new catalogue, as `clew reindex` does
    /// (events/s).
    pub joining_reindex_events_per_s: f64,
    /// … CPU an event (µs).
    pub joining_reindex_cpu_us_per_event: f64,
    /// joining / reindex.
    pub joining_ratio_to_reindex: f64,
    /// joining / the ledger-only sequencing rate (goal 2 asks projection
    /// for 2× sequencing, the live node's catch-up included).
    pub joining_ratio_to_ledger_only: f64,
    /// Target rate of the latency run.
    pub rate_per_s: u64,
    /// Events timed in the latency run.
    pub latency_events: u64,
    /// Event submitted → searchable on a replica, median.
    pub searchable_p50_ms: f64,
    /// … 99th percentile.
    pub searchable_p99_ms: f64,
    /// Achieved submission rate of the latency run.
    pub achieved_rate_per_s: f64,
}

/// Record ranges in dependency order (see the module comment); indexes into
/// `synthetic::events(.., 0..total, total)`.
fn phases(total: u64) -> Vec<(u64, u64)> {
    let datasets = (total / 5).clamp(1, 20_000);
    let a = synthetic::SITES;
    let b = a + datasets;
    let c = b + datasets;
    vec![(0, a), (a, b), (b, c), (c, total)]
}

fn connect_kafka(bootstrap: &str, prefix: &str) -> Result<Arc<KafkaBus>> {
    let mut c = KafkaConfig::new(bootstrap);
    c.topics = Topics::with_prefix(prefix);
    Ok(Arc::new(
        KafkaBus::connect(c).context("connecting to Kafka")?,
    ))
}

/// Runs the benchmark.
pub fn run(
    bootstrap: Option<String>,
    events: u64,
    producers: usize,
    rate: u64,
    seconds: u64,
) -> Result<KafkaBench> {
    ensure!(events >= 10_000, "use at least 10,000 events");
    let (broker_guard, bootstrap, broker) = match bootstrap {
        Some(b) => (None, b.clone(), format!("external {b}")),
        None => {
            eprintln!("starting a local Kafka broker (tests/kafka)…");
            let b = clew_kafka_broker::KafkaBroker::start_local()
                .map_err(|e| anyhow::anyhow!("cannot start the harness broker: {e}"))?;
            let s = b.bootstrap().to_string();
            (Some(b), s.clone(), format!("harness {s}"))
        }
    };
    let (ledger_key, p) = crate::spine::bench_keys(producers)?;
    eprintln!("signing {events} events…");
    let stream = keyed(synthetic::events(&p, 0..events, events));

    let ledger = ledger_only(&ledger_key, &p, &stream)?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let embedded_dir = tempfile::tempdir()?;
    let embedded: Arc<dyn Bus> = Arc::new(EmbeddedBus::open(&embedded_dir.path().join("bus"))?);
    let embedded = throughput(
        "embedded",
        embedded,
        &ledger_key,
        &p,
        StreamPrefix {
            records: &stream,
            whole: events,
        },
        producers,
        None,
    )?
    .0;
    // A broker in service has compiled its hot paths long ago; this one
    // has just started, so half the stream goes through it first, on
    // topics of its own, untimed (after a tenth, its JIT compilers still
    // took 3.4 s of the 8 s that followed).
    let warm_up = &stream[..(stream.len() / 2)];
    let warm: Arc<dyn Bus> = connect_kafka(&bootstrap, &format!("bench-warm-{run_id}"))?;
    let broker_pid = broker_guard.as_ref().and_then(|b| b.pid());
    let warm = throughput(
        "kafka warm-up",
        warm,
        &ledger_key,
        &p,
        StreamPrefix {
            records: warm_up,
            whole: events,
        },
        producers,
        broker_pid,
    )?
    .0;
    let kafka: Arc<dyn Bus> = connect_kafka(&bootstrap, &format!("bench-{run_id}"))?;
    let (kafka, leaves, verifier_key) = throughput(
        "kafka",
        kafka,
        &ledger_key,
        &p,
        StreamPrefix {
            records: &stream,
            whole: events,
        },
        producers,
        broker_pid,
    )?;
    let joining = replica_joining(
        &bootstrap,
        &format!("bench-{run_id}"),
        &verifier_key,
        &p,
        leaves,
    )?;

    let latency = latency(&bootstrap, &run_id, &ledger_key, &p, rate, seconds)?;
    drop(broker_guard);
    Ok(KafkaBench {
        broker,
        events,
        producers,
        kafka_events_per_s: kafka.rate,
        embedded_events_per_s: embedded.rate,
        ratio_to_embedded: kafka.rate / embedded.rate,
        ledger_only_events_per_s: ledger.rate,
        kafka_ratio_to_ledger_only: kafka.rate / ledger.rate,
        embedded_ratio_to_ledger_only: embedded.rate / ledger.rate,
        ledger_only_cpu_us_per_event: ledger.cpu_us_per_event,
        embedded_cpu_us_per_event: embedded.cpu_us_per_event,
        kafka_cpu_us_per_event: kafka.cpu_us_per_event,
        broker_cpu_us_per_event: kafka.broker_cpu_us_per_event,
        ledger_only_busy: ledger.busy,
        embedded_busy: embedded.busy,
        kafka_busy: kafka.busy,
        refused: embedded.refused + warm.refused + kafka.refused,
        joining_events_per_s: leaves as f64 / joining.seconds,
        joining_cpu_us_per_event: joining.cpu_us_per_event,
        joining_reindex_events_per_s: leaves as f64 / joining.reindex_seconds,
        joining_reindex_cpu_us_per_event: joining.reindex_cpu_us_per_event,
        joining_ratio_to_reindex: joining.reindex_seconds / joining.seconds,
        joining_ratio_to_ledger_only: leaves as f64 / joining.seconds / ledger.rate,
        rate_per_s: rate,
        latency_events: latency.0,
        searchable_p50_ms: latency.1,
        searchable_p99_ms: latency.2,
        achieved_rate_per_s: latency.3,
    })
}

/// Each record with its signing key's id, as a producer that signed it
/// knows it (worked out here once, before anything is timed).
fn keyed(records: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    records
        .into_iter()
        .map(|b| {
            let key = clew_events::open(&b)
                .map(|o| o.key_id().to_string())
                .unwrap_or_default();
            (key, b)
        })
        .collect()
}

/// Submits `records` (keyed by [`keyed`]) from `producers` threads at once,
/// each its share, in chunks (each chunk waits for the bus's
/// acknowledgement).
fn submit_concurrently(
    bus: &dyn Bus,
    records: &[(String, Vec<u8>)],
    producers: usize,
) -> Result<()> {
    let shards: Vec<Vec<(&str, &[u8])>> = (0..producers)
        .map(|k| {
            records
                .iter()
                .enumerate()
                .filter(|(i, _)| i % producers == k)
                .map(|(_, (key, b))| (key.as_str(), b.as_slice()))
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .map(|shard| {
                s.spawn(move || -> Result<()> {
                    for chunk in shard.chunks(5_000) {
                        bus.submit(chunk)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        }
        Ok(())
    })
}

fn wait_published(progress: &Progress, leaves: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while progress.published.load(Ordering::Relaxed) < leaves {
        if Instant::now() > deadline {
            bail!(
                "only {} of {leaves} leaves published within {}s",
                progress.published.load(Ordering::Relaxed),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The stream sequenced straight into a fresh ledger, in the sequencer's
/// batch size and the same dependency phases (each finished before the
/// next, as the producers wait for theirs), with no bus in front or
/// behind: the rate the buses are held against.
fn ledger_only(
    ledger_key: &clew_events::ProducerKey,
    p: &Producers,
    stream: &[(String, Vec<u8>)],
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let ledger = crate::spine::bench_ledger(dir.path(), ledger_key, p)?;
    let total = stream.len() as u64;
    let phases: Vec<Vec<Vec<u8>>> = phases(total)
        .into_iter()
        .map(|(a, b)| {
            stream[a as usize..b as usize]
                .iter()
                .map(|(_, b)| b.clone())
                .collect()
        })
        .collect();
    let pb = clew::progress_bar(total, "ledger only");
    let mut offset = 0;
    let clock = Clock::start(None);
    for envelopes in phases {
        let n = envelopes.len() as u64;
        crate::spine::sequence_all(
            &ledger,
            envelopes,
            offset,
            SequencerOptions::default().batch,
            &pb,
        )?;
        offset += n;
    }
    let run = clock.stop(total, 0);
    pb.finish_and_clear();
    eprintln!(
        "ledger only: {:.0} events/s sequenced, no bus ({:.0} µs of CPU an event)",
        run.rate, run.cpu_us_per_event
    );
    eprintln!("  µs an event by thread: {}", run.threads());
    Ok(run)
}

/// One timed run's figures.
struct Run {
    /// Events/s.
    rate: f64,
    /// Submissions refused.
    refused: u64,
    /// This process's CPU per event, µs.
    cpu_us_per_event: f64,
    /// The broker's, if it runs here.
    broker_cpu_us_per_event: Option<f64>,
    /// CPU used (this process and the broker) over what the cores had.
    busy: f64,
    /// This process's CPU per event by thread name, µs, most first.
    by_thread: Vec<(String, f64)>,
}

impl Run {
    /// "name µs, …" for the threads that took at least 1 µs an event.
    fn threads(&self) -> String {
        self.by_thread
            .iter()
            .filter(|(_, us)| *us >= 1.0)
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Wall time and CPU time (this process's, and a local broker's) from
/// `start` to `stop`.
struct Clock {
    start: Instant,
    cpu: f64,
    threads: std::collections::BTreeMap<String, (String, f64)>,
    broker: Option<(u32, f64)>,
}

impl Clock {
    fn start(broker_pid: Option<u32>) -> Self {
        Self {
            start: Instant::now(),
            cpu: crate::api::cpu_seconds(std::process::id()),
            threads: crate::api::cpu_seconds_by_thread(std::process::id()),
            broker: broker_pid.map(|pid| (pid, crate::api::cpu_seconds(pid))),
        }
    }

    fn stop(self, events: u64, refused: u64) -> Run {
        let wall = self.start.elapsed().as_secs_f64();
        let cpu = crate::api::cpu_seconds(std::process::id()) - self.cpu;
        let threads = crate::api::cpu_between(
            &self.threads,
            crate::api::cpu_seconds_by_thread(std::process::id()),
            cpu,
        );
        let broker = self
            .broker
            .map(|(pid, before)| crate::api::cpu_seconds(pid) - before);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per_event = |s: f64| s * 1e6 / events.max(1) as f64;
        let mut by_thread: Vec<(String, f64)> = threads
            .into_iter()
            .map(|(name, s)| (name, per_event(s)))
            .collect();
        by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
        Run {
            by_thread,
            rate: events as f64 / wall,
            refused,
            cpu_us_per_event: per_event(cpu),
            broker_cpu_us_per_event: broker.map(per_event),
            busy: (cpu + broker.unwrap_or(0.0)) / (wall * cores),
        }
    }
}

/// The first records of a synthetic stream of `whole` events (keyed by
/// [`keyed`]): all of it, or the warm-up's half.
#[derive(Clone, Copy)]
struct StreamPrefix<'a> {
    records: &'a [(String, Vec<u8>)],
    whole: u64,
}

/// One throughput run (`broker_pid`: a local broker whose CPU to count).
fn throughput(
    name: &str,
    bus: Arc<dyn Bus>,
    ledger_key: &clew_events::ProducerKey,
    p: &Producers,
    prefix: StreamPrefix<'_>,
    producers: usize,
    broker_pid: Option<u32>,
) -> Result<(Run, u64, String)> {
    let StreamPrefix {
        records: stream,
        whole,
    } = prefix;
    let dir = tempfile::tempdir()?;
    let ledger = Arc::new(crate::spine::bench_ledger(dir.path(), ledger_key, p)?);
    let base = ledger.size();
    let progress = Progress::default();
    let total = stream.len() as u64;
    let pb = clew::progress_bar(total, name);
    let result = with_sequencer(&ledger, &bus, &progress, || {
        // The ledger's own leaves (genesis, registrations) published first.
        wait_published(&progress, base, Duration::from_secs(120))?;
        let clock = Clock::start(broker_pid);
        // `stream` opens a stream of `whole` events (the warm-up is its
        // first half): that stream's phases, cut where `stream` ends, so no
        // event comes before what it cites.
        let cut = phases(whole)
            .into_iter()
            .map(|(a, b)| (a.min(total), b.min(total)))
            .filter(|(a, b)| a < b);
        for (a, b) in cut {
            let outcome =
                submit_concurrently(bus.as_ref(), &stream[a as usize..b as usize], producers)
                    .and_then(|_| {
                        let expect = base + b - progress.rejected.load(Ordering::Relaxed);
                        wait_published(&progress, expect, Duration::from_secs(1800))
                    });
            pb.set_position(progress.published.load(Ordering::Relaxed) - base);
            outcome?;
        }
        Ok(clock.stop(total, progress.rejected.load(Ordering::Relaxed)))
    });
    pb.finish_and_clear();
    let run = result?;
    eprintln!(
        "{name}: {:.0} events/s producers → sequenced and published ({} refused; {:.0} µs of CPU an event{}; cores {:.0}% busy)",
        run.rate,
        run.refused,
        run.cpu_us_per_event,
        run.broker_cpu_us_per_event
            .map(|b| format!(", the broker {b:.0} µs"))
            .unwrap_or_default(),
        run.busy * 100.0
    );
    eprintln!("  µs an event by thread: {}", run.threads());
    Ok((run, ledger.size(), ledger.verifier_key().to_string()))
}

/// What a replica joining the streams from their start took.
struct Joining {
    /// From its start until its catalogue held every leaf.
    seconds: f64,
    /// This process's CPU an event meanwhile, µs.
    cpu_us_per_event: f64,
    /// Projecting the same leaves from its mirror into a new catalogue as
    /// `clew reindex` does.
    reindex_seconds: f64,
    /// … its CPU an event, µs.
    reindex_cpu_us_per_event: f64,
}

/// A read replica that joins the streams of the timed Kafka run (`prefix`)
/// from their start, as a partner or a new replica does, until its
/// catalogue holds all `leaves`; then its mirror reindexed into a new
/// catalogue, the peer it is held against (both after the sequencer
/// stopped, so each has the cores to itself).
fn replica_joining(
    bootstrap: &str,
    prefix: &str,
    verifier_key: &str,
    p: &Producers,
    leaves: u64,
) -> Result<Joining> {
    let dir = tempfile::tempdir()?;
    let bus: Arc<dyn Bus> = connect_kafka(bootstrap, prefix)?;
    let (mirror, catalog) = open_replica(dir.path(), verifier_key)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pb = clew::progress_bar(leaves, "replica joining");
    let clock = Clock::start(None);
    let node = start_replica(&mirror, &catalog, p, &bus, "bench-joining")?;
    let joined = rt.block_on(until_applied(
        &node,
        leaves,
        Duration::from_secs(1800),
        |n| pb.set_position(n),
    ));
    node.begin_shutdown();
    node.shutdown();
    if let Err(a) = joined {
        bail!("the joining replica did not catch up: want {leaves} leaves, applied {a:?}");
    }
    let joined = clock.stop(leaves, 0);
    pb.finish_and_clear();
    drop(catalog);
    let pb = clew::progress_bar(leaves, "reindexing its mirror");
    let clock = Clock::start(None);
    let kept = clew::memory::keep_freed_memory();
    clew_catalog::Catalog::rebuild_with_cache(
        &dir.path().join("reindexed"),
        &mirror,
        crate::spine::PROJECTION_CACHE_BYTES,
        &|done, _| pb.set_position(done),
    )?;
    drop(kept);
    let reindexed = clock.stop(leaves, 0);
    pb.finish_and_clear();
    Ok(Joining {
        seconds: leaves as f64 / joined.rate,
        cpu_us_per_event: joined.cpu_us_per_event,
        reindex_seconds: leaves as f64 / reindexed.rate,
        reindex_cpu_us_per_event: reindexed.cpu_us_per_event,
    })
}

/// A read replica's mirror and catalogue in `dir`, for the ledger whose
/// checkpoints `verifier_key` signs.
fn open_replica(
    dir: &std::path::Path,
    verifier_key: &str,
) -> Result<(Arc<clew_ledger::Ledger>, Arc<clew_catalog::Catalog>)> {
    let mirror = Arc::new(clew_ledger::Ledger::open_mirror(
        &dir.join("replica"),
        verifier_key,
        clew_ledger::LedgerOptions::default(),
    )?);
    let catalog = Arc::new(clew_catalog::Catalog::open(&dir.join("replica/catalog"))?);
    Ok((mirror, catalog))
}

/// Starts a replica node over `mirror` and `catalog`, following `bus` as
/// the consumer group `group`.
fn start_replica(
    mirror: &Arc<clew_ledger::Ledger>,
    catalog: &Arc<clew_catalog::Catalog>,
    p: &Producers,
    bus: &Arc<dyn Bus>,
    group: &str,
) -> Result<Arc<clew_node::Node>> {
    Ok(clew_node::Node::start_replica(
        mirror.clone(),
        catalog.clone(),
        p.admin.clone(),
        Arc::new(clew_node::Metrics::new()?),
        bus.clone(),
        group,
        None,
    )?)
}

/// Waits until `node`'s catalogue holds `want` leaves, telling `seen` each
/// size it reaches; the last state it reached when `limit` passes first.
async fn until_applied(
    node: &clew_node::Node,
    want: u64,
    limit: Duration,
    mut seen: impl FnMut(u64),
) -> std::result::Result<(), clew_node::Applied> {
    let mut applied = node.applied();
    let deadline = Instant::now() + limit;
    loop {
        let a = *applied.borrow();
        if let Some(n) = a.size() {
            seen(n);
            if n >= want {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(a);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), applied.changed()).await;
    }
}

/// The latency run; returns (events timed, p50 ms, p99 ms, achieved rate).
fn latency(
    bootstrap: &str,
    run_id: &str,
    ledger_key: &clew_events::ProducerKey,
    p: &Producers,
    rate: u64,
    seconds: u64,
) -> Result<(u64, f64, f64, f64)> {
    let timed = rate * seconds;
    // Datasets to cite: one first version per timed event.
    let total = (timed * 5).max(10_000);
    let stream = synthetic::events(p, 0..total, total);
    let ph = phases(total);
    let (setup_end, steady) = (
        ph[1].1 as usize,
        &stream[ph[2].0 as usize..ph[2].1 as usize],
    );
    let steady = &steady[..(timed as usize).min(steady.len())];
    // Only the sites and datasets go on the bus directly (keyed); the timed
    // events go through the replica, which needs no key id.
    let setup = keyed(stream[..setup_end].to_vec());

    let dir = tempfile::tempdir()?;
    let ledger = Arc::new(crate::spine::bench_ledger(
        &dir.path().join("ledger"),
        ledger_key,
        p,
    )?);
    let bus: Arc<dyn Bus> = connect_kafka(bootstrap, &format!("latency-{run_id}"))?;
    let (mirror, catalog) = open_replica(dir.path(), ledger.verifier_key())?;
    let progress = Progress::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    with_sequencer(&ledger, &bus, &progress, || {
        rt.block_on(async {
            let node = start_replica(&mirror, &catalog, p, &bus, "bench-replica")?;
            // Sites and datasets, then wait until the replica holds them.
            let base = ledger.size();
            let want = base + setup_end as u64;
            // Datasets cite sites signed by another key (another partition):
            // the sites must be sequenced first.
            submit_concurrently(bus.as_ref(), &setup[..ph[0].1 as usize], 2)?;
            wait_published(&progress, base + ph[0].1, Duration::from_secs(120))?;
            submit_concurrently(bus.as_ref(), &setup[ph[0].1 as usize..], 2)?;
            if let Err(a) = until_applied(&node, want, Duration::from_secs(180), |_| {}).await {
                bail!(
                    "the replica did not catch up with the set-up events: want {want}, \
                     ledger {}, published {}, mirror {}, applied {a:?}",
                    ledger.size(),
                    progress.published.load(Ordering::Relaxed),
                    mirror.size()
                );
            }
            eprintln!(
                "latency: replica holds {} leaves; submitting {} events at {rate}/s",
                mirror.size(),
                steady.len()
            );
            let pb = clew::progress_bar(steady.len() as u64, "latency");
            let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut tasks = tokio::task::JoinSet::new();
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let start = tokio::time::Instant::now();
            for (i, bytes) in steady.iter().enumerate() {
                tokio::time::sleep_until(start + period * i as u32).await;
                let node = node.clone();
                let bytes = bytes.clone();
                tasks.spawn(async move {
                    let t = Instant::now();
                    let outcome = node.submit(bytes).await;
                    (t.elapsed(), outcome)
                });
                while let Some(done) = tasks.try_join_next() {
                    record(&mut hist, done?)?;
                    pb.inc(1);
                }
            }
            let sent = start.elapsed().as_secs_f64();
            while let Some(done) = tasks.join_next().await {
                record(&mut hist, done?)?;
                pb.inc(1);
            }
            pb.finish_and_clear();
            node.begin_shutdown();
            node.shutdown();
            anyhow::Ok((
                hist.len(),
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                steady.len() as f64 / sent,
            ))
        })
    })
}

/// Runs the sequencer (on `bus`, into `ledger`) in a thread while `body`
/// runs, then stops it, waits for it to publish what it holds, and returns
/// `body`'s result (a sequencer failure first).
fn with_sequencer<T>(
    ledger: &Arc<clew_ledger::Ledger>,
    bus: &Arc<dyn Bus>,
    progress: &Progress,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sequencer = std::thread::Builder::new()
            .name("sequencer-read".into())
            .spawn_scoped(s, || {
                clew_sequencer::run(
                    ledger.clone(),
                    bus.clone(),
                    SequencerOptions::default(),
                    &stop,
                    progress,
                )
            })?;
        let result = body();
        stop.store(true, Ordering::SeqCst);
        sequencer
            .join()
            .map_err(|_| anyhow::anyhow!("the sequencer panicked"))??;
        result
    })
}

fn record(
    hist: &mut hdrhistogram::Histogram<u64>,
    (elapsed, outcome): (Duration, Result<clew_node::Outcome, clew_node::NodeError>),
) -> Result<()> {
    match outcome? {
        clew_node::Outcome::Accepted(_) => {
            hist.record(elapsed.as_micros() as u64)?;
            Ok(())
        }
        clew_node::Outcome::Rejected(r) => bail!("latency event refused: {}", r.detail),
    }
}
