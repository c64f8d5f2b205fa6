//! Argument parsing and the commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clap::{Parser, Subcommand};
use clew_ledger::{verify_ledger, LedgerOptions};

use crate::datadir::DataDir;
use crate::{bench, export, keyfiles, stream};

/// Clew: the provenance catalogue and verifiable ledger of a medical-imaging AI platform.
#[derive(Debug, Parser)]
#[command(name = "clew", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DataDirArg {
    /// Data directory holding the ledger and its keys.
    #[arg(long, default_value = "clew-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an Ed25519 key pair in the C2SP signed-note text formats.
    Keygen {
        /// Key name (for a ledger key: its checkpoint origin, e.g. clew.example.org/ledger).
        #[arg(long)]
        name: String,
        /// Directory to write `<name>.key` (private, 0600) and `<name>.vkey` into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a ledger: its signing key, the genesis admin key and leaf 0.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        /// Checkpoint origin (the ledger key's name).
        #[arg(long, default_value = "clew.example.org/ledger")]
        origin: String,
    },
    /// Sequence the envelopes of a stream file into the ledger, resuming at the
    /// stored cursor. Prints `ack <offset> <event-id> <leaf>` and
    /// `reject <offset> <reason> <detail>` lines once each batch is durable.
    Sequence {
        #[command(flatten)]
        dir: DataDirArg,
        /// Stream file: varint-length-delimited DSSE envelopes.
        #[arg(long)]
        input: PathBuf,
        /// Input source name under which the cursor is stored (default: the file name).
        #[arg(long)]
        source: Option<String>,
        /// Submissions per batch (one fsync and one checkpoint per batch).
        #[arg(long, default_value_t = 1024)]
        batch_size: usize,
    },
    /// Write a stream file of realistic signed events (producer registrations
    /// signed by this ledger's admin key, then sites, datasets, versions,
    /// transforms and training runs) to try the ledger and catalogue with.
    SampleStream {
        #[command(flatten)]
        dir: DataDirArg,
        /// Stream file to write (appended to if it exists).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Number of producers (ingest keys) signing the stream.
        #[arg(long, default_value_t = 4)]
        producers: usize,
    },
    /// Verify the whole ledger offline: leaves, signatures, hashes, checkpoints.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
        /// Expected ledger verifier key (file or key text); default: the one stored.
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Print a signed checkpoint (the latest, or the one at --size).
    Checkpoint {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print an offline receipt (C2SP tlog-proof) for one event.
    Receipt {
        #[command(flatten)]
        dir: DataDirArg,
        /// Leaf index.
        #[arg(long, conflicts_with = "event_id")]
        index: Option<u64>,
        /// Event id (UUIDv7).
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Check a receipt offline against the ledger's verifier key.
    VerifyReceipt {
        /// Receipt file.
        file: PathBuf,
        /// Ledger verifier key (file or key text).
        #[arg(long)]
        vkey: String,
    },
    /// Check a proof-carrying lineage or impact answer offline (the JSON
    /// document of `GET /proofs/lineage` or `/proofs/impact`): the checkpoint's
    /// signature, every event's inclusion proof and signature (with keys whose
    /// registrations it carries), and that every node and edge is what its
    /// event records. Exits non-zero naming the first thing that does not hold.
    VerifyAnswer {
        /// The answer document.
        file: PathBuf,
        /// Ledger verifier key (file or key text).
        #[arg(long)]
        vkey: String,
    },
    /// Print a Merkle proof, one base64 hash per line.
    Proof {
        #[command(subcommand)]
        kind: ProofKind,
    },
    /// The ledger as static C2SP tlog-tiles.
    Tiles {
        #[command(subcommand)]
        action: TilesAction,
    },
    /// List refused submissions as JSON lines (operators).
    Rejected {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Rebuild the catalogue (state, lineage graph, search index) from the ledger alone.
    Reindex {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Search dataset and model versions (JSON).
    Search {
        #[command(flatten)]
        dir: DataDirArg,
        /// Words and "quoted phrases".
        #[arg(long, default_value = "")]
        text: String,
        /// Facet filter `facet=value` (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Order by recency instead of relevance.
        #[arg(long)]
        recent: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        /// Answer as a researcher would see it: open datasets plus --grant ones.
        #[arg(long)]
        researcher: bool,
        /// Dataset ids the researcher holds grants for.
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    /// Lineage up (default) or down from an entity (JSON).
    Lineage {
        #[command(flatten)]
        dir: DataDirArg,
        /// Subject, e.g. deployment/dep-1.
        #[arg(long)]
        subject: String,
        /// Walk downstream instead of upstream.
        #[arg(long)]
        down: bool,
        #[arg(long, default_value_t = 10)]
        depth: u32,
        /// Answer over the first N leaves only.
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// Everything downstream of a dataset version, live deployments first (JSON).
    Impact {
        #[command(flatten)]
        dir: DataDirArg,
        /// Subject, e.g. dataset-version/ds-1@2.0.
        #[arg(long)]
        subject: String,
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// Every event about an entity, with its leaf index (JSON).
    History {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        subject: String,
    },
    /// Run the whole system in one process on the embedded default:
    /// sequencer, catalogue and the GraphQL API. Creates the data directory
    /// (keys, ledger, an admin token) on first start; Ctrl-C stops cleanly.
    Serve {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Record a realistic national scenario (five trusts, de-identification,
    /// annotation, a split, two training runs, external validation, a live
    /// deployment, a withdrawal) through the signed-event path, print example
    /// queries, and with --serve keep serving it.
    Demo {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        server: ServerArgs,
        /// Keep serving after recording the scenario.
        #[arg(long)]
        serve: bool,
    },
    /// The sequencer on Kafka: reads the inbound topic into the ledger
    /// (exactly once) and publishes the ledger to the sequenced, checkpoint and
    /// rejected topics. Creates the data directory on first start.
    Ledger {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        kafka: crate::distributed::KafkaArgs,
        /// Checkpoint origin used when the data directory is created.
        #[arg(long, default_value = "clew.example.org/ledger")]
        origin: String,
        /// Address of /healthz, /readyz and /metrics (off when not given).
        #[arg(long, env = "CLEW_HEALTH_LISTEN")]
        health_listen: Option<std::net::SocketAddr>,
        /// Folder holding ledger.key, admin.key and api.key (e.g. a mounted
        /// Secret): copied into the data directory's keys/ when absent there,
        /// before it is created.
        #[arg(long, env = "CLEW_KEYS_FROM")]
        keys_from: Option<PathBuf>,
    },
    /// A read replica on Kafka: a verified mirror of the ledger, its own
    /// catalogue, and the GraphQL API (mutations go onto the inbound topic).
    Replica {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        kafka: crate::distributed::KafkaArgs,
        #[command(flatten)]
        server: ServerArgs,
        /// The ledger's verifier key (C2SP text, or a file holding it: the
        /// ledger's keys/ledger.vkey).
        #[arg(long, env = "CLEW_LEDGER_VKEY")]
        ledger_vkey: String,
        /// The API service key file (a copy of the ledger's keys/api.key).
        #[arg(long, env = "CLEW_SERVICE_KEY")]
        service_key: PathBuf,
        /// Kafka consumer group of this replica (default clew-replica-<host>).
        #[arg(long, env = "CLEW_REPLICA_GROUP")]
        group: Option<String>,
        /// Shared bearer-token file (see `clew token issue`) instead of the
        /// data directory's own.
        #[arg(long, env = "CLEW_TOKENS_FILE")]
        tokens_file: Option<PathBuf>,
    },
    /// Create the Kafka topics (if missing) and print their layout.
    Topics {
        #[command(flatten)]
        kafka: crate::distributed::KafkaArgs,
    },
    /// Bearer tokens kept in a token file (for replicas sharing one).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Put the envelopes of a stream file on the Kafka inbound topic, keyed
    /// by signing key id. Prints one JSON summary line.
    Submit {
        #[command(flatten)]
        kafka: crate::distributed::KafkaArgs,
        /// Stream file: varint-length-delimited DSSE envelopes.
        #[arg(long)]
        input: PathBuf,
        /// Only records A..B of the file (record numbers, B exclusive).
        #[arg(long)]
        records: Option<String>,
        /// Only records whose number is K modulo N ("K/N").
        #[arg(long)]
        shard: Option<String>,
        /// Then wait up to this many seconds until every submitted event is
        /// seen sequenced or refused on the outbound topics.
        #[arg(long)]
        wait_s: Option<u64>,
    },
    /// Ingest imaging data: scan, de-identification gate, manifest, one
    /// signed dataset-version-published event.
    Ingest {
        #[command(subcommand)]
        kind: IngestKind,
    },
    /// Print the GraphQL schema (SDL) the server serves.
    Schema,
    /// Benchmarks; each prints its figures and, last, one JSON line.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CLEW_LISTEN")]
    listen: std::net::SocketAddr,
    /// Checkpoint origin used when the data directory is created.
    #[arg(long, default_value = "clew.example.org/ledger")]
    origin: String,
    /// Deepest query nesting.
    #[arg(long, default_value_t = 12)]
    max_depth: usize,
    /// Highest query complexity (weighted field count).
    #[arg(long, default_value_t = 2000)]
    max_complexity: usize,
    /// Largest request body, KiB.
    #[arg(long, default_value_t = 256)]
    max_body_kib: usize,
    /// Longest a query or mutation may run, seconds.
    #[arg(long, default_value_t = 15)]
    timeout_s: u64,
}

impl ServerArgs {
    fn limits(&self) -> clew_api::Limits {
        clew_api::Limits {
            depth: self.max_depth,
            complexity: self.max_complexity,
            body_bytes: self.max_body_kib * 1024,
            timeout: std::time::Duration::from_secs(self.timeout_s),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[derive(Debug, Subcommand)]
enum ProofKind {
    /// Inclusion proof of leaf --index in the tree of --size leaves.
    Inclusion {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        index: u64,
        /// Tree size (default: current).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Consistency proof from tree size --old to --new.
    Consistency {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        old: u64,
        /// Default: current size.
        #[arg(long)]
        new: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum TilesAction {
    /// Write checkpoint, tiles, entry bundles and all checkpoints into a directory.
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum IngestKind {
    /// A folder of DICOM files (one dataset version). Refused as a whole,
    /// naming each file and tag, when any file is not de-identified (DICOM
    /// PS3.15 Annex E); files that are not DICOM or are damaged are skipped
    /// and reported. Exit status: 0 published, 1 error (e.g. no DICOM instances), 2 identifiable data found,
    /// 3 refused by the ledger (e.g. the same content already published).
    Dicom {
        /// The folder (walked recursively).
        folder: PathBuf,
        /// Dataset id (registered beforehand).
        #[arg(long)]
        dataset: String,
        /// Version label, e.g. 2.0.
        #[arg(long)]
        version: String,
        /// The trust the files come from: must be the dataset's custodian.
        #[arg(long)]
        site: Option<String>,
        /// Dataset version ids this one was made from (repeatable).
        #[arg(long = "derived-from")]
        derived_from: Vec<String>,
        /// Release notes.
        #[arg(long, default_value = "")]
        notes: String,
        /// JSON report of the run (written in every case).
        #[arg(long, default_value = "clew-ingest-report.json")]
        report: PathBuf,
        /// Scan and gate only; store and publish nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        dir: DataDirArg,
        /// Principal recorded as the actor when publishing into the data directory.
        #[arg(long, default_value = crate::datadir::ADMIN_PRINCIPAL)]
        actor: String,
        /// Publish through a running server instead (e.g. http://127.0.0.1:8080).
        #[arg(long, env = "CLEW_SERVER")]
        server: Option<String>,
        /// Bearer token file for --server (ingest or governance role).
        #[arg(long, env = "CLEW_TOKEN_FILE", requires = "server")]
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Issue a token for a principal: its SHA-256 goes into the file, the
    /// token is printed once.
    Issue {
        #[arg(long)]
        tokens_file: PathBuf,
        #[arg(long)]
        principal: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchKind {
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
        /// Measured seconds (after a 5 s warm-up).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Events recorded per second through GraphQL mutations meanwhile.
        #[arg(long, default_value_t = 1000)]
        record_rate: u64,
        /// Build the catalogue in (or reuse it from) this directory instead
        /// of a temporary one.
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
    /// Clew's DICOM header scan (SHA-256 of every byte, header up to pixel
    /// data, de-identification gate) against pydicom's
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Everything Clew writes — ledger, catalogue, keys, tokens, manifests,
    // reports — holds restricted metadata or secrets: the operator's alone.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLEW_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,dicom_object=error,dicom_parser=error,clew=info,clew_api=info,clew_sequencer=info,clew_bus=info",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A key given as a file path or as the key text itself.
fn key_arg(value: &str) -> Result<String> {
    let p = Path::new(value);
    if p.is_file() {
        keyfiles::read(p)
    } else {
        Ok(value.trim().to_string())
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { dir, server: args } => {
            let data = DataDir::new(&dir.data_dir);
            let prepared = crate::server::prepare(&data, &args.origin)?;
            if prepared.created {
                println!("created {}", data.root().display());
            }
            runtime()?.block_on(crate::server::run(prepared, args.listen, args.limits()))?;
        }
        Command::Ledger {
            dir,
            kafka,
            origin,
            health_listen,
            keys_from,
        } => {
            crate::distributed::run_ledger(
                &DataDir::new(&dir.data_dir),
                &origin,
                &kafka,
                health_listen,
                keys_from.as_deref(),
            )?;
        }
        Command::Topics { kafka } => {
            let bus = kafka.connect()?;
            let t = &bus.config().topics;
            for (name, role) in [
                (&t.submitted, "inbound: Envelope, keyed by signing key id"),
                (
                    &t.sequenced,
                    "outbound: SequencedEntry, one partition, kept forever",
                ),
                (
                    &t.checkpoints,
                    "outbound: CheckpointRecord, one partition, kept forever",
                ),
                (
                    &t.rejected,
                    "outbound: RejectedSubmission, one partition, kept forever",
                ),
            ] {
                println!(
                    "{name}\t{} partition(s)\t{role}",
                    bus.partitions(name)?.len()
                );
            }
        }
        Command::Token {
            action:
                TokenAction::Issue {
                    tokens_file,
                    principal,
                },
        } => {
            let store = clew_api::TokenStore::open(&tokens_file)?;
            println!("{}", store.issue(&principal)?);
        }
        Command::Replica {
            dir,
            kafka,
            server: args,
            ledger_vkey,
            service_key,
            group,
            tokens_file,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let group = group.unwrap_or_else(crate::distributed::default_group);
            let prepared = crate::distributed::prepare_replica(
                &data,
                &ledger_vkey,
                &service_key,
                &kafka,
                &group,
                tokens_file.as_deref(),
            )?;
            runtime()?.block_on(crate::server::run(prepared, args.listen, args.limits()))?;
        }
        Command::Submit {
            kafka,
            input,
            records,
            shard,
            wait_s,
        } => {
            let records = records
                .as_deref()
                .map(crate::distributed::parse_range)
                .transpose()?;
            let shard = shard
                .as_deref()
                .map(crate::distributed::parse_shard)
                .transpose()?;
            let summary = crate::distributed::submit(
                &kafka,
                &input,
                records,
                shard,
                wait_s.map(std::time::Duration::from_secs),
            )?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Demo {
            dir,
            server: args,
            serve,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let prepared = crate::server::prepare(&data, &args.origin)?;
            let rt = runtime()?;
            let node = prepared.node.clone();
            let tokens = prepared.tokens.clone();
            rt.block_on(async {
                while !node.ready() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                if crate::demo::recorded(&node)? {
                    println!("the demo is already recorded in {}", data.root().display());
                } else {
                    let (n, _) = crate::demo::record(&data, &node, &tokens).await?;
                    println!(
                        "recorded the demo: {n} signed events; ledger size {}",
                        node.ledger().size()
                    );
                }
                anyhow::Ok(())
            })?;
            println!(
                "{}",
                crate::demo::examples(&args.listen.to_string(), &prepared.admin_token_file, &data)
            );
            if serve {
                rt.block_on(crate::server::run(prepared, args.listen, args.limits()))?;
            } else {
                node.shutdown();
            }
        }
        Command::Ingest {
            kind:
                IngestKind::Dicom {
                    folder,
                    dataset,
                    version,
                    site,
                    derived_from,
                    notes,
                    report,
                    dry_run,
                    dir,
                    actor,
                    server,
                    token_file,
                },
        } => {
            let req = crate::ingest::IngestRequest {
                folder,
                dataset_id: dataset,
                version,
                site,
                derived_from,
                release_notes: notes,
                report,
                dry_run,
            };
            let data = DataDir::new(&dir.data_dir);
            let publisher = match (server, token_file) {
                (Some(url), Some(file)) => crate::ingest::Publisher::Server {
                    url,
                    token: std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?
                        .trim()
                        .to_string(),
                },
                (Some(_), None) => bail!("--server needs --token-file"),
                _ => crate::ingest::Publisher::Local { dir: &data, actor },
            };
            let (report, status) = crate::ingest::run(&req, publisher)?;
            println!(
                "{}",
                serde_json::json!({
                    "outcome": report.outcome,
                    "datasetVersion": format!("{}@{}", report.dataset_id, report.version),
                    "manifestDigest": report.manifest_digest,
                    "leafIndex": report.leaf_index,
                    "instances": report.instances,
                    "series": report.series,
                    "refusedFiles": report.refused_files.len(),
                    "skippedFiles": report.skipped_files.len(),
                    "detail": report.detail,
                })
            );
            return Ok(ExitCode::from(status));
        }
        Command::Schema => {
            print!("{}", clew_api::sdl());
        }
        Command::Keygen { name, out } => {
            let (skey, vkey, key) = keyfiles::generate(&out, &keyfiles::stem_for(&name), &name)?;
            println!("{}", key.verifier().to_text());
            eprintln!("wrote {} and {}", skey.display(), vkey.display());
        }
        Command::Init { dir, origin } => {
            let data = DataDir::new(&dir.data_dir);
            let ledger = data.init(&origin, LedgerOptions::default())?;
            println!("{}", ledger.verifier_key());
            eprintln!(
                "created ledger {origin} in {} (keys in {}); genesis admin is leaf 0",
                dir.data_dir.display(),
                data.keys().display()
            );
        }
        Command::Sequence {
            dir,
            input,
            source,
            batch_size,
        } => {
            let ledger = DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
            let source = source.unwrap_or_else(|| {
                input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "stream".into())
            });
            let cursor = ledger.cursor(&source)?;
            let pending = stream::read_from(&input, cursor)?;
            let pb = crate::progress_bar(pending.len() as u64, "sequencing");
            let (mut accepted, mut rejected) = (0u64, 0u64);
            let mut out = std::io::stdout().lock();
            let mut it = pending.into_iter();
            let size = batch_size.max(1);
            let batches = std::iter::from_fn(|| {
                let batch: Vec<_> = it.by_ref().take(size).collect();
                (!batch.is_empty()).then_some(batch)
            });
            ledger.sequence_pipelined(&source, batches, |r| -> Result<()> {
                // Acknowledge only what is durable (commit returns after fsync).
                for a in &r.accepted {
                    writeln!(
                        out,
                        "ack\t{}\t{}\t{}",
                        a.source_offset, a.event_id, a.leaf_index
                    )?;
                }
                for j in &r.rejected {
                    writeln!(
                        out,
                        "reject\t{}\t{}\t{}",
                        j.source_offset,
                        j.reason.as_str_name(),
                        j.detail
                    )?;
                }
                out.flush()?;
                accepted += r.accepted.len() as u64;
                rejected += r.rejected.len() as u64;
                pb.inc((r.accepted.len() + r.rejected.len()) as u64);
                Ok(())
            })?;
            pb.finish_and_clear();
            eprintln!(
                "sequenced {accepted} events, refused {rejected}; tree size {}, cursor {source}={}",
                ledger.size(),
                ledger.cursor(&source)?
            );
        }
        Command::SampleStream {
            dir,
            out,
            events,
            producers,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let admin = keyfiles::read_producer(&data.admin_key())?;
            let p = crate::synthetic::Producers::new(
                admin,
                crate::datadir::ADMIN_PRINCIPAL,
                producers.max(1),
            );
            let mut envelopes = p.registrations();
            envelopes.extend(crate::synthetic::events(&p, 0..events, events));
            stream::append(&out, &envelopes)?;
            eprintln!(
                "wrote {} signed events to {}",
                envelopes.len(),
                out.display()
            );
        }
        Command::Verify { dir, vkey } => {
            let vkey = vkey.as_deref().map(key_arg).transpose()?;
            let pb = crate::progress_bar(0, "verifying");
            // A damaged store can make sled itself panic while it reads
            // (e.g. "tried to serialize Uninitialized"): that is a finding
            // about the data directory, reported like any other.
            let previous_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                verify_ledger(&dir.data_dir, vkey.as_deref(), &|done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                })
            }));
            std::panic::set_hook(previous_hook);
            pb.finish_and_clear();
            let result = match result {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "no detail".into());
                    Err(format!(
                        "the data directory {} is damaged: its store failed while being read ({why})",
                        dir.data_dir.display()
                    ))
                }
            };
            match result {
                Ok(r) => {
                    println!(
                        "ok: {} leaves, {} hashes and {} checkpoints verify with {}",
                        r.leaves, r.hashes, r.checkpoints, r.verifier_key
                    );
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::Checkpoint { dir, size } => {
            let ledger = DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
            let cp = match size {
                Some(s) => ledger
                    .checkpoint_at(s)?
                    .with_context(|| format!("no checkpoint was signed at size {s}"))?,
                None => ledger.latest_checkpoint()?,
            };
            print!("{}", cp.note_text());
        }
        Command::Receipt {
            dir,
            index,
            event_id,
        } => {
            let ledger = DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
            let index = match (index, event_id) {
                (Some(i), _) => i,
                (None, Some(id)) => ledger
                    .leaf_index_of(&id)?
                    .with_context(|| format!("event {id} is not in the ledger"))?,
                (None, None) => bail!("give --index or --event-id"),
            };
            print!("{}", ledger.receipt(index)?);
        }
        Command::VerifyAnswer { file, vkey } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc: clew_ledger::ProvenAnswer = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a proof-carrying answer", file.display()))?;
            match clew_ledger::verify_answer(&doc, &key_arg(&vkey)?) {
                Ok(v) => println!(
                    "ok: {} nodes, {} edges, {} events proven against the signed checkpoint of {} leaves",
                    v.nodes, v.edges, v.events, v.tree_size
                ),
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::VerifyReceipt { file, vkey } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match clew_ledger::verify_receipt(&text, &key_arg(&vkey)?) {
                Ok(r) => {
                    let event = clew_events::open(&r.leaf)?;
                    println!(
                        "ok: event {} ({}) is leaf {} of the tree of size {}",
                        event.event.event_id,
                        event.kind().as_str_name(),
                        r.index,
                        r.checkpoint.size
                    );
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::Proof { kind } => {
            let proof = match kind {
                ProofKind::Inclusion { dir, index, size } => {
                    let ledger =
                        DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
                    let size = size.unwrap_or(ledger.size());
                    ledger.inclusion_proof(index, size)?
                }
                ProofKind::Consistency { dir, old, new } => {
                    let ledger =
                        DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
                    let new = new.unwrap_or(ledger.size());
                    ledger.consistency_proof(old, new)?
                }
            };
            for h in proof {
                println!("{}", B64.encode(h.0));
            }
        }
        Command::Tiles {
            action: TilesAction::Export { dir, out },
        } => {
            let ledger = DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
            let pb = crate::progress_bar(0, "exporting");
            let n = export::export(&ledger, &out, &|done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            eprintln!(
                "wrote {n} files for tree size {} to {}",
                ledger.size(),
                out.display()
            );
        }
        Command::Reindex { dir } => {
            let data = DataDir::new(&dir.data_dir);
            let ledger = data.open(None, LedgerOptions::default())?;
            let pb = crate::progress_bar(ledger.size(), "reindexing");
            let started = std::time::Instant::now();
            let catalog = clew_catalog::Catalog::rebuild_with_cache(
                &data.catalog_dir(),
                &ledger,
                bench::PROJECTION_CACHE_BYTES,
                &|done, _| pb.set_position(done),
            )?;
            pb.finish_and_clear();
            eprintln!(
                "rebuilt the catalogue from {} leaves in {:.1} s",
                catalog.applied()?,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Search {
            dir,
            text,
            filters,
            recent,
            limit,
            cursor,
            researcher,
            grants,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            let mut req = clew_catalog::SearchRequest {
                text,
                sort: if recent {
                    clew_catalog::SortOrder::Recency
                } else {
                    clew_catalog::SortOrder::Relevance
                },
                limit,
                cursor,
                visibility: clew_catalog::Visibility {
                    all: !researcher,
                    granted_datasets: grants,
                },
                ..Default::default()
            };
            for f in filters {
                let (k, v) = f
                    .split_once('=')
                    .with_context(|| format!("filter {f:?} is not facet=value"))?;
                req.filters
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_string());
            }
            println!("{}", serde_json::to_string_pretty(&catalog.search(&req)?)?);
        }
        Command::Lineage {
            dir,
            subject,
            down,
            depth,
            as_of,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            let direction = if down {
                clew_catalog::Direction::Downstream
            } else {
                clew_catalog::Direction::Upstream
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.lineage(&subject, direction, depth, as_of)?)?
            );
        }
        Command::Impact {
            dir,
            subject,
            as_of,
        } => {
            let data = DataDir::new(&dir.data_dir);
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.impact(&subject, as_of)?)?
            );
        }
        Command::History { dir, subject } => {
            let data = DataDir::new(&dir.data_dir);
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.history(&subject)?)?
            );
        }
        Command::Rejected { dir, from, limit } => {
            let ledger = DataDir::new(&dir.data_dir).open(None, LedgerOptions::default())?;
            for r in ledger.rejected(from, limit)? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        Command::Bench {
            which:
                BenchKind::Api {
                    datasets,
                    clients,
                    seconds,
                    record_rate,
                    data_dir,
                },
        } => {
            let exe = std::env::current_exe().context("locating the clew binary")?;
            let r = crate::bench_api::api(
                datasets.max(10),
                clients.max(1),
                seconds.max(1),
                record_rate,
                data_dir.as_deref(),
                &exe,
            )?;
            println!("catalogue events:  {}", r.events);
            println!(
                "queries:           {:.0}/s from {} clients (p50 {:.2} ms, p99 {:.2} ms)",
                r.queries_per_s, r.clients, r.p50_ms, r.p99_ms
            );
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
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench {
            which:
                BenchKind::Catalog {
                    datasets,
                    producers,
                    serve_cache_mib,
                },
        } => {
            let exe = std::env::current_exe().context("locating the clew binary")?;
            let r = bench::catalog(
                datasets.max(10),
                producers.max(1),
                serve_cache_mib << 20,
                &exe,
            )?;
            println!("lineage nodes / events:  {} / {}", r.nodes, r.events);
            println!(
                "projection:              {:.0} events/s (reindex {:.1} s)",
                r.projection_events_per_s, r.reindex_s
            );
            println!(
                "search + 3 facets:       p50 {:.2} ms, p99 {:.2} ms",
                r.search_p50_ms, r.search_p99_ms
            );
            println!(
                "10-hop upstream lineage: p50 {:.2} ms, p99 {:.2} ms",
                r.lineage_10_hop_p50_ms, r.lineage_10_hop_p99_ms
            );
            println!(
                "withdrawal impact:       {:.1} ms over {} downstream nodes",
                r.impact_ms, r.impact_nodes
            );
            println!("serving peak RSS:        {:.0} MiB", r.serving_peak_rss_mib);
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench {
            which:
                BenchKind::CatalogServe {
                    dir,
                    runs,
                    cache_mib,
                },
        } => {
            let r = bench::catalog_serve(&dir, runs.max(1), cache_mib << 20)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench {
            which:
                BenchKind::Dicom {
                    files,
                    runs,
                    source,
                    python,
                    script,
                    keep,
                },
        } => {
            let r = crate::bench_dicom::run(
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
        Command::Bench {
            which:
                BenchKind::Kafka {
                    bootstrap,
                    events,
                    producers,
                    rate,
                    seconds,
                },
        } => {
            let r = crate::bench_kafka::run(bootstrap, events, producers.max(1), rate, seconds)?;
            println!("broker:                         {}", r.broker);
            println!(
                "producers → sequenced+published: {:.0} events/s on Kafka, {:.0} on the embedded log (ratio {:.2}; {} events, {} producers)",
                r.kafka_events_per_s, r.embedded_events_per_s, r.ratio_to_embedded, r.events, r.producers
            );
            println!(
                "event → searchable on a replica: p50 {:.1} ms, p99 {:.1} ms at {:.0} events/s ({} events)",
                r.searchable_p50_ms, r.searchable_p99_ms, r.achieved_rate_per_s, r.latency_events
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Bench {
            which:
                BenchKind::Ledger {
                    events,
                    batch_size,
                    producers,
                },
        } => {
            let r = bench::ledger(events, batch_size, producers.max(1))?;
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
                "inclusion proof at {}:   p50 {:.1} us, p99 {:.1} us",
                r.tree_size, r.inclusion_proof_p50_us, r.inclusion_proof_p99_us
            );
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
