//! The distributed services: `clew ledger` (the sequencer), `clew replica`
//! (catalogue + API, one per replica) and `clew submit` (a producer), all
//! talking only through Kafka.
//!
//! The indexer and the API run in one replica process: the catalogue (sled
//! state + tantivy index) is local state that the API reads in memory, so
//! splitting them would need a shared disk or another protocol between them.
//! Replicas scale out behind a load balancer, each with its own consumer group
//! and its own verified mirror of the ledger.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clew_bus::{Bus, FollowFrom, KafkaBus, KafkaConfig, Outgoing, Topics};
use clew_ledger::{Ledger, LedgerOptions};

use crate::datadir::DataDir;
use crate::keyfiles;
use crate::server::Prepared;

/// How to reach the Kafka bus.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka `bootstrap.servers` (host:port,…).
    #[arg(long = "kafka", env = "CLEW_KAFKA", value_name = "BOOTSTRAP")]
    pub bootstrap: String,
    /// Topic name prefix: <prefix>.submitted, .sequenced, .checkpoints, .rejected.
    #[arg(long, default_value = "clew", env = "CLEW_TOPIC_PREFIX")]
    pub topic_prefix: String,
    /// Partitions of the inbound topic, when Clew creates it.
    #[arg(long, default_value_t = 3)]
    pub inbound_partitions: i32,
    /// Replication factor of the topics Clew creates (3 in production).
    #[arg(long, default_value_t = 1, env = "CLEW_KAFKA_REPLICATION")]
    pub replication_factor: i32,
    /// Do not create missing topics (they must exist already).
    #[arg(long)]
    pub no_create_topics: bool,
    /// Extra librdkafka property for every client, e.g.
    /// `security.protocol=SASL_SSL` (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// SASL user name (`sasl.username`).
    #[arg(long, env = "CLEW_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (`sasl.password`); prefer the file.
    #[arg(long, env = "CLEW_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
    /// A file holding the SASL user name (a mounted Secret key).
    #[arg(
        long,
        env = "CLEW_KAFKA_SASL_USERNAME_FILE",
        conflicts_with = "sasl_username"
    )]
    pub sasl_username_file: Option<PathBuf>,
    /// A file holding the SASL password (a mounted Secret key): it stays out
    /// of the process environment.
    #[arg(
        long,
        env = "CLEW_KAFKA_SASL_PASSWORD_FILE",
        conflicts_with = "sasl_password"
    )]
    pub sasl_password_file: Option<PathBuf>,
}

/// A credential given inline or as a file (trailing newline dropped).
fn credential(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} from {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(inline.clone())
}

impl KafkaArgs {
    /// The bus configuration.
    pub fn config(&self) -> Result<KafkaConfig> {
        let mut c = KafkaConfig::new(&self.bootstrap);
        c.topics = Topics::with_prefix(&self.topic_prefix);
        c.inbound_partitions = self.inbound_partitions;
        c.replication = self.replication_factor;
        c.create_topics = !self.no_create_topics;
        for p in &self.properties {
            let Some((k, v)) = p.split_once('=') else {
                bail!("--kafka-property {p:?} is not KEY=VALUE");
            };
            c.properties
                .push((k.trim().to_string(), v.trim().to_string()));
        }
        let username = credential(
            &self.sasl_username,
            &self.sasl_username_file,
            "SASL user name",
        )?;
        let password = credential(
            &self.sasl_password,
            &self.sasl_password_file,
            "SASL password",
        )?;
        if let Some(u) = username {
            c.properties.push(("sasl.username".into(), u));
        }
        if let Some(p) = password {
            c.properties.push(("sasl.password".into(), p));
        }
        Ok(c)
    }

    /// Connects (creating topics unless told not to).
    pub fn connect(&self) -> Result<Arc<KafkaBus>> {
        let config = self.config()?;
        let bus = KafkaBus::connect(config)
            .with_context(|| format!("connecting to Kafka at {}", self.bootstrap))?;
        Ok(Arc::new(bus))
    }
}

/// Sets `stop` when Ctrl-C or SIGTERM arrives.
fn stop_on_signal(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(crate::server::shutdown_signal());
            stop.store(true, Ordering::SeqCst);
        })?;
    Ok(())
}

/// Serves `/healthz`, `/readyz` and `/metrics` (Prometheus text) of the
/// sequencer on `listen`. The metrics are counts only, so they need no token.
fn serve_sequencer_health(
    listen: std::net::SocketAddr,
    progress: Arc<clew_sequencer::Progress>,
    witnesses: Option<clew_node::Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "health: http://{}/healthz  ready: /readyz  metrics: /metrics",
        listener.local_addr()?
    );
    let ready = progress.clone();
    let metrics = progress.clone();
    let ready_witnesses = witnesses.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.reading.load(Ordering::SeqCst);
                let line = ready_witnesses.as_ref().and_then(|m| m.witnessed_line());
                let text = format!("ready\n{}", line.unwrap_or_default());
                async move {
                    if ready {
                        (StatusCode::OK, text)
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "opening the inbound stream\n".to_string(),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let mut text = sequencer_metrics(&metrics);
                if let Some(m) = witnesses.as_ref() {
                    text.push_str(&m.render_witnesses());
                }
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            rt.block_on(async move {
                let until = async move {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                };
                if let Err(e) = clew_api::serve_connections(
                    listener,
                    app,
                    clew_api::ConnectionLimits::default(),
                    clew_api::ConnectionMetrics::unregistered(),
                    until,
                )
                .await
                {
                    tracing::error!(error = %e, "health endpoint failed");
                }
            })
        })?;
    Ok(())
}

/// The sequencer's counters in the Prometheus text format.
fn sequencer_metrics(p: &clew_sequencer::Progress) -> String {
    let tree = p.tree_size.load(Ordering::Relaxed);
    let published = p.published.load(Ordering::Relaxed);
    let lines = [
        (
            "clew_sequencer_tree_size",
            "gauge",
            "Leaves in the ledger.",
            tree,
        ),
        (
            "clew_sequencer_published_leaves",
            "gauge",
            "Leaves acknowledged on the sequenced topic.",
            published,
        ),
        (
            "clew_sequencer_publish_lag_leaves",
            "gauge",
            "Leaves in the ledger not yet acknowledged on the sequenced topic.",
            tree.saturating_sub(published),
        ),
        (
            "clew_sequencer_sequenced_total",
            "counter",
            "Events appended by this process.",
            p.sequenced.load(Ordering::Relaxed),
        ),
        (
            "clew_sequencer_rejected_total",
            "counter",
            "Submissions refused by this process.",
            p.rejected.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in lines {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

/// `clew ledger`: the sequencer, until Ctrl-C / SIGTERM.
pub fn run_ledger(
    dir: &DataDir,
    origin: &str,
    kafka: &KafkaArgs,
    listen: Option<std::net::SocketAddr>,
    keys_from: Option<&Path>,
    witnesses: crate::witnessing::Witnesses,
) -> Result<()> {
    if let Some(from) = keys_from {
        for stem in ["ledger", "admin", "api"] {
            if keyfiles::install(from, &dir.keys(), stem)? {
                tracing::info!(key = stem, from = %from.display(), "installed a key");
            }
        }
    }
    // The sequencer opens no catalogue: its ledger has the whole page cache.
    let dir = &dir.clone().ledger_only();
    let (ledger, _, created) = crate::local::open_primary(dir, origin, &dir.manifest_store()?)?;
    if created {
        println!("created {}", dir.root().display());
    }
    let ledger = Arc::new(ledger);
    let bus = kafka.connect()?;
    println!(
        "Clew ledger is sequencing from {} (ledger key {}: give it to replicas and partners)",
        bus.describe(),
        dir.ledger_vkey().display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone())?;
    let progress = Arc::new(clew_sequencer::Progress::default());
    // Witnesses are fed from a runtime of their own, apart from sequencing;
    // the cosignatures they return are published on the checkpoint topic.
    let witnessing = if witnesses.endpoints.is_empty() {
        None
    } else {
        let metrics = clew_node::Metrics::new()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("witnesses")
            .enable_all()
            .build()?;
        let running = {
            let _in_rt = rt.enter();
            crate::witnessing::start(ledger.clone(), witnesses, metrics.clone())
        };
        Some((rt, running, metrics))
    };
    if let Some(listen) = listen {
        serve_sequencer_health(
            listen,
            progress.clone(),
            witnessing.as_ref().map(|(_, _, m)| m.clone()),
            stop.clone(),
        )?;
    }
    let reporter = {
        let progress = progress.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut last = (u64::MAX, u64::MAX);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                let now = (
                    progress.tree_size.load(Ordering::Relaxed),
                    progress.published.load(Ordering::Relaxed),
                );
                if now != last {
                    tracing::info!(
                        tree_size = now.0,
                        published = now.1,
                        sequenced = progress.sequenced.load(Ordering::Relaxed),
                        rejected = progress.rejected.load(Ordering::Relaxed),
                        "sequencer progress"
                    );
                    last = now;
                }
            }
        })
    };
    let result = clew_sequencer::run(
        ledger.clone(),
        bus,
        clew_sequencer::SequencerOptions::default(),
        &stop,
        &progress,
    );
    stop.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    if let Some((rt, running, _)) = witnessing {
        rt.block_on(running.stop());
    }
    ledger.flush()?;
    result?;
    println!(
        "Clew ledger stopped cleanly; ledger size {}, published {}",
        ledger.size(),
        progress.published.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Reads a verifier key given as text or as a file holding it.
pub fn key_text(value: &str) -> Result<String> {
    let p = Path::new(value);
    if p.exists() {
        keyfiles::read(p)
    } else {
        Ok(value.trim().to_string())
    }
}

/// Opens a replica's mirror, catalogue and tokens and starts following.
pub fn prepare_replica(
    dir: &DataDir,
    ledger_vkey: &str,
    service_key: &Path,
    kafka: &KafkaArgs,
    group: &str,
    tokens_file: Option<&Path>,
    cosignatures: Option<clew_node::CosignatureFilter>,
) -> Result<Prepared> {
    let vkey = key_text(ledger_vkey)?;
    let created = !dir.has_ledger();
    // Flushed at every append: the catalogue (flushed after each chunk it
    // applies) must never hold leaves the mirror lost in a crash.
    let mirror = Ledger::open_mirror(
        dir.root(),
        &vkey,
        dir.ledger_options(LedgerOptions::default()),
    )
    .with_context(|| format!("opening the mirror in {}", dir.root().display()))?;
    let service_key = keyfiles::read_producer(service_key).with_context(|| {
        format!(
            "the replica signs with the ledger's API service key ({}), copied from the ledger's keys/api.key",
            service_key.display()
        )
    })?;
    let (tokens, admin_token_file) = crate::server::open_tokens_at(dir, tokens_file)?;
    let mut catalog = dir.open_catalog()?;
    if catalog.applied()? > mirror.size() {
        tracing::warn!(
            applied = catalog.applied()?,
            mirror = mirror.size(),
            "the catalogue is ahead of the mirror; rebuilding it from the mirror"
        );
        drop(catalog);
        catalog = clew_catalog::Catalog::rebuild(&dir.catalog_dir(), &mirror, &|_, _| {})?;
    }
    let metrics = Arc::new(clew_node::Metrics::new()?);
    let bus: Arc<dyn Bus> = kafka.connect()?;
    let node = clew_node::Node::start_replica(
        Arc::new(mirror),
        Arc::new(catalog),
        service_key,
        metrics,
        bus,
        group,
        cosignatures,
    )?;
    crate::memory::return_freed_memory();
    Ok(Prepared {
        node,
        tokens,
        admin_token_file,
        created,
        manifests: dir.manifest_store()?,
        spool: dir.spool_dir(),
        web: clew_web::WebConfig::default(),
    })
}

/// What `clew submit` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SubmitSummary {
    /// Envelopes the bus acknowledged.
    pub submitted: u64,
    /// Of those, seen sequenced (with `--wait`).
    pub sequenced: u64,
    /// Seen refused as duplicates of an earlier leaf (with `--wait`).
    pub duplicates: u64,
    /// Seen refused for another reason (with `--wait`).
    pub rejected: u64,
}

/// `clew submit`: puts the envelopes of a stream file on the inbound topic,
/// each keyed by its signing key id; with `wait`, follows the outbound
/// streams until every one of them is sequenced or refused.
pub fn submit(
    kafka: &KafkaArgs,
    input: &Path,
    records: Option<(u64, u64)>,
    shard: Option<(u64, u64)>,
    wait: Option<Duration>,
) -> Result<SubmitSummary> {
    let bus = kafka.connect()?;
    let all = crate::stream::read_from(input, 0)?;
    let chosen: Vec<Vec<u8>> = all
        .into_iter()
        .filter(|s| records.is_none_or(|(a, b)| s.offset >= a && s.offset < b))
        .filter(|s| shard.is_none_or(|(k, n)| s.offset % n == k))
        .map(|s| s.bytes)
        .collect();
    let start = if wait.is_some() {
        Some(bus.ends()?)
    } else {
        None
    };
    let mut ids = std::collections::HashSet::new();
    let keyed: Vec<(String, Vec<u8>)> = chosen
        .into_iter()
        .map(|b| match clew_events::open(&b) {
            Ok(o) => {
                ids.insert(o.event.event_id.clone());
                (o.key_id().to_string(), b)
            }
            // Sent anyway: the sequencer records why it is refused.
            Err(_) => (String::new(), b),
        })
        .collect();
    let pb = crate::progress_bar(keyed.len() as u64, "submitting");
    let mut summary = SubmitSummary::default();
    for chunk in keyed.chunks(2000) {
        let refs: Vec<(&str, &[u8])> = chunk
            .iter()
            .map(|(k, b)| (k.as_str(), b.as_slice()))
            .collect();
        bus.submit(&refs)?;
        summary.submitted += chunk.len() as u64;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    if let (Some(limit), Some(from)) = (wait, start) {
        await_outcomes(bus.as_ref(), from, ids, limit, &mut summary)?;
    }
    Ok(summary)
}

fn await_outcomes(
    bus: &dyn Bus,
    from: FollowFrom,
    mut ids: std::collections::HashSet<String>,
    limit: Duration,
    summary: &mut SubmitSummary,
) -> Result<()> {
    let mut follower = bus.follow(&format!("clew-submit-{}", std::process::id()), from)?;
    let pb = crate::progress_bar(ids.len() as u64, "awaiting sequencing");
    let deadline = Instant::now() + limit;
    while !ids.is_empty() {
        if Instant::now() >= deadline {
            pb.finish_and_clear();
            bail!(
                "{} submitted events were not seen sequenced or refused within {}s",
                ids.len(),
                limit.as_secs()
            );
        }
        for p in follower.poll(4096, Duration::from_millis(200))? {
            match p.record {
                Outgoing::Sequenced(e) => {
                    if ids.remove(&e.event_id) {
                        summary.sequenced += 1;
                        pb.inc(1);
                    }
                }
                Outgoing::Rejected(r) => {
                    if ids.remove(&r.event_id) {
                        if r.original_leaf_index.is_some() {
                            summary.duplicates += 1;
                        } else {
                            summary.rejected += 1;
                        }
                        pb.inc(1);
                    }
                }
                Outgoing::Checkpoint(_) => {}
            }
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// Parses `A..B`.
pub fn parse_range(s: &str) -> Result<(u64, u64)> {
    let Some((a, b)) = s.split_once("..") else {
        bail!("{s:?} is not a range A..B");
    };
    Ok((a.trim().parse()?, b.trim().parse()?))
}

/// Parses `K/N`.
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let Some((k, n)) = s.split_once('/') else {
        bail!("{s:?} is not a shard K/N");
    };
    let (k, n): (u64, u64) = (k.trim().parse()?, n.trim().parse()?);
    if n == 0 || k >= n {
        bail!("shard {k}/{n}: K must be below N");
    }
    Ok((k, n))
}

/// Default consumer group of a replica: `clew-replica-<host>`.
pub fn default_group() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    format!("clew-replica-{host}")
}

/// A path argument that must exist.
pub fn existing(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn sasl_credentials_from_files_reach_the_client_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("username"), "clew\n").unwrap();
        std::fs::write(tmp.path().join("password"), "s3cret\n").unwrap();
        let args = Args::try_parse_from([
            "x",
            "--kafka",
            "broker:9093",
            "--sasl-username-file",
            tmp.path().join("username").to_str().unwrap(),
            "--sasl-password-file",
            tmp.path().join("password").to_str().unwrap(),
        ])
        .unwrap();
        let c = args.kafka.config().unwrap();
        assert!(c
            .properties
            .contains(&("sasl.username".into(), "clew".into())));
        assert!(c
            .properties
            .contains(&("sasl.password".into(), "s3cret".into())));
        let missing = Args::try_parse_from([
            "x",
            "--kafka",
            "broker:9093",
            "--sasl-password-file",
            "/nonexistent/password",
        ])
        .unwrap();
        let e = missing.kafka.config().unwrap_err().to_string();
        assert!(
            e.contains("reading the SASL password from /nonexistent/password"),
            "{e}"
        );
    }
}
