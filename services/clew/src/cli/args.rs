//! The command line's argument types (clap derive): what each command
//! takes. The commands themselves live in one module per family.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Clew: the provenance catalogue and verifiable ledger of a medical-imaging AI platform.
#[derive(Debug, Parser)]
#[command(name = "clew", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// Data directory holding the ledger and its keys.
    #[arg(long, default_value = "clew-data")]
    pub(crate) data_dir: PathBuf,
    /// Where manifests are kept, if not in the data directory: an
    /// S3-compatible bucket `s3://bucket[/prefix]` (endpoint, region and
    /// credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY) or `file:///dir`. Replicas and the sequencer
    /// of one deployment share it.
    #[arg(long, env = "CLEW_BLOB_STORE")]
    pub(crate) blob_store: Option<String>,
    /// PEM file of the CA the blob store's TLS certificate is checked with.
    #[arg(long, env = "CLEW_BLOB_STORE_CA")]
    pub(crate) blob_store_ca: Option<PathBuf>,
    /// Page cache of the ledger's and the catalogue's stores together, MiB
    /// (default 128; a quarter to the ledger, all of it when there is no
    /// catalogue). Two parts of a server's memory grow with its data
    /// instead: the lineage graph (about 300 bytes a node:
    /// `clew_catalog_lineage_graph_bytes` in the metrics) and the stores'
    /// own bookkeeping of every page on disk (roughly a tenth to an eighth
    /// of their size on disk, from the moment they are opened).
    #[arg(long, env = "CLEW_CACHE_MIB")]
    pub(crate) cache_mib: Option<u64>,
}

impl DataDirArg {
    /// The data directory, with its content where the options say.
    pub(crate) fn data(&self) -> crate::datadir::DataDir {
        let dir = crate::datadir::DataDir::new(&self.data_dir)
            .with_blob_store(self.blob_store.clone(), self.blob_store_ca.clone());
        match self.cache_mib {
            Some(mib) => dir.with_page_cache(mib << 20),
            None => dir,
        }
    }
}

/// Every command, grouped by family (one module each); the families are
/// flattened, so the command line is `clew <command>`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    #[command(flatten)]
    Ledger(LedgerCommand),
    #[command(flatten)]
    Catalog(CatalogCommand),
    #[command(flatten)]
    Serve(ServeCommand),
    #[command(flatten)]
    Ingest(IngestCommand),
    #[command(flatten)]
    Access(AccessCommand),
    #[command(flatten)]
    Blobs(BlobsCommand),
    #[command(flatten)]
    Witness(WitnessCommand),
}

/// Clew as a witness (C2SP tlog-witness) for logs a partner follows.
#[derive(Debug, Subcommand)]
pub(crate) enum WitnessCommand {
    /// Witness logs: cosign each checkpoint only if it is consistent with the
    /// last one cosigned for that log (kept on disk before any answer).
    Witness {
        #[command(subcommand)]
        action: WitnessAction,
    },
    /// A partner's monitor of a remote Clew: fetches its checkpoint every
    /// --interval-s, checks the ledger's signature and the witness quorum,
    /// proves it consistent with the last checkpoint seen (kept in --state)
    /// from the hash tiles, and on a fork prints both checkpoints and exits 3.
    Monitor {
        /// The Clew server, e.g. https://clew.example.org.
        #[arg(long)]
        url: String,
        /// The ledger's verifier key (file or key text).
        #[arg(long)]
        vkey: String,
        /// Bearer token file (hash tiles need an authenticated caller).
        #[arg(long, env = "CLEW_TOKEN_FILE")]
        token_file: PathBuf,
        #[command(flatten)]
        witnesses: WitnessPolicyArgs,
        /// The last checkpoint seen.
        #[arg(long, default_value = "clew-monitor.checkpoint")]
        state: PathBuf,
        /// Seconds between looks.
        #[arg(long, default_value_t = 10)]
        interval_s: u64,
        /// Look once and exit (0 consistent, 3 fork).
        #[arg(long)]
        once: bool,
        /// Serve the monitor's metrics (`GET /metrics`) on this address.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WitnessAction {
    /// Create the witness's key in DIR (witness.key, witness.vkey); prints the
    /// verifier key partners configure.
    Init {
        /// The witness's directory (its key and database).
        #[arg(long, default_value = "clew-witness")]
        dir: PathBuf,
        /// The witness's URL-like name, e.g. witness.example.org/clew1.
        #[arg(long)]
        name: String,
    },
    /// Serve `POST /add-checkpoint` (C2SP tlog-witness) for the logs given.
    Serve {
        /// The witness's directory (made by `clew witness init`).
        #[arg(long, default_value = "clew-witness")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7380", env = "CLEW_WITNESS_LISTEN")]
        listen: std::net::SocketAddr,
        /// A log to witness: its checkpoint verifier key (signed-note
        /// Ed25519, its name the log's origin), as text or a .vkey file
        /// (repeatable; several keys for one origin are each trusted).
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
        #[command(flatten)]
        connections: ConnectionArgs,
    },
}

/// The blob stores that keep manifests.
#[derive(Debug, Subcommand)]
pub(crate) enum BlobsCommand {
    /// Content-addressed manifests in blob stores (a data directory's own,
    /// an S3-compatible bucket).
    Blobs {
        #[command(subcommand)]
        action: BlobsAction,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BlobsAction {
    /// Copy every manifest of one store into another (a data directory's
    /// own into the bucket a deployment moves to). Each copy is verified
    /// against its digest and written once; objects the target holds are
    /// skipped, so an interrupted run is resumed by running it again.
    Sync {
        /// The data directory whose own store is copied (unless --from).
        #[arg(long, default_value = "clew-data")]
        data_dir: PathBuf,
        /// The store to copy from (`file:///dir`, `s3://bucket[/prefix]`);
        /// default: the data directory's own.
        #[arg(long)]
        from: Option<String>,
        /// PEM CA file for --from's TLS.
        #[arg(long)]
        from_ca: Option<PathBuf>,
        /// The store to copy into.
        #[arg(long, env = "CLEW_BLOB_STORE")]
        to: String,
        /// PEM CA file for --to's TLS.
        #[arg(long, env = "CLEW_BLOB_STORE_CA")]
        to_ca: Option<PathBuf>,
    },
}

/// Recording events by hand, access requests, audits and the data-use
/// register over a data directory (while no server holds it).
#[derive(Debug, Subcommand)]
pub(crate) enum AccessCommand {
    /// Record events as a registered principal, signed by the service key
    /// on its behalf (the ledger's policy decides, as for the API). FILE holds
    /// one event body in proto3 JSON (`{"accessRequestSubmitted": {...}}`) or
    /// an array of them; `-` reads standard input. Prints one JSON line per
    /// event; exits non-zero if any is refused.
    Record {
        #[command(flatten)]
        dir: DataDirArg,
        /// The principal recorded as the actor.
        #[arg(long = "as")]
        actor: String,
        /// Event bodies (proto3 JSON).
        file: PathBuf,
    },
    /// A principal's access requests and its projects' (JSON), or with
    /// --queue the requests awaiting a decision (governance).
    AccessRequests {
        #[command(flatten)]
        dir: DataDirArg,
        /// Answer as this principal.
        #[arg(long = "as", default_value = "admin")]
        viewer: String,
        /// The review queue instead.
        #[arg(long)]
        queue: bool,
    },
    /// Who held access to a dataset between two times (JSON; governance).
    /// With --proof, the proof-carrying answer `clew verify-answer` checks.
    AccessAudit {
        #[command(flatten)]
        dir: DataDirArg,
        /// Dataset id.
        #[arg(long)]
        dataset: String,
        /// Window start (RFC 3339).
        #[arg(long)]
        from: String,
        /// Window end (RFC 3339).
        #[arg(long)]
        to: String,
        /// Answer as this principal.
        #[arg(long = "as", default_value = "admin")]
        viewer: String,
        /// Print the proof-carrying answer instead.
        #[arg(long)]
        proof: bool,
    },
    /// The data-use register (JSON): every approved use of data. Without
    /// --as, the public view.
    DataUses {
        #[command(flatten)]
        dir: DataDirArg,
        /// Answer as this principal instead of the public.
        #[arg(long = "as")]
        viewer: Option<String>,
    },
}

/// Keys, the ledger, proofs and receipts: everything that works on a data directory's ledger or on files it wrote.
#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
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
        /// Also read every manifest the ledger cites from the blob store
        /// (`--blob-store`, or the data directory's) and check it hashes to
        /// its digest; names the leaf of each missing or altered one.
        #[arg(long)]
        content: bool,
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
        #[command(flatten)]
        witnesses: WitnessPolicyArgs,
    },
    /// Check a proof-carrying answer offline (the JSON document of
    /// `GET /proofs/lineage`, `/proofs/impact` or `/proofs/access`): the
    /// checkpoint's signature, every event's inclusion proof and signature
    /// (with keys whose registrations it carries), and that every node and
    /// edge is what its event records, or, for an access audit, that the
    /// holders are exactly what its events give. Exits non-zero naming the
    /// first thing that does not hold.
    VerifyAnswer {
        /// The answer document.
        file: PathBuf,
        /// Ledger verifier key (file or key text).
        #[arg(long)]
        vkey: String,
        #[command(flatten)]
        witnesses: WitnessPolicyArgs,
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
}

/// Catalogue queries and rebuilds over a data directory.
#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
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
}

/// Running Clew: the single-process server, the demo, the distributed services and their tokens.
#[derive(Debug, Subcommand)]
pub(crate) enum ServeCommand {
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
        #[command(flatten)]
        witness: WitnessArgs,
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
    /// Print the GraphQL schema (SDL) the server serves.
    Schema,
}

/// Imaging ingest.
#[derive(Debug, Subcommand)]
pub(crate) enum IngestCommand {
    /// Ingest imaging data: scan, de-identification gate, manifest, one
    /// signed dataset-version-published event.
    Ingest {
        #[command(subcommand)]
        kind: IngestKind,
    },
}

/// The witnesses a verifier requires of a checkpoint.
#[derive(Debug, clap::Args)]
pub(crate) struct WitnessPolicyArgs {
    /// A witness's verifier key (cosignature/v1; file or key text),
    /// repeatable: the checkpoint must carry cosignatures by --quorum of them.
    #[arg(long = "witness")]
    pub(crate) witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned (default: all).
    #[arg(long)]
    pub(crate) quorum: Option<usize>,
}

impl WitnessPolicyArgs {
    pub(crate) fn policy(&self) -> anyhow::Result<clew_witness::WitnessPolicy> {
        let keys = self
            .witnesses
            .iter()
            .map(|w| super::key_arg(w))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(clew_witness::WitnessPolicy::new(&keys, self.quorum)?)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CLEW_LISTEN")]
    pub(crate) listen: std::net::SocketAddr,
    /// Checkpoint origin used when the data directory is created.
    #[arg(long, default_value = "clew.example.org/ledger")]
    pub(crate) origin: String,
    /// Deepest query nesting.
    #[arg(long, default_value_t = 12)]
    pub(crate) max_depth: usize,
    /// Highest query complexity (weighted field count).
    #[arg(long, default_value_t = 2000)]
    pub(crate) max_complexity: usize,
    /// Largest request body, KiB.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_body_kib: usize,
    /// Longest a query or mutation may run, seconds.
    #[arg(long, default_value_t = 15)]
    pub(crate) timeout_s: u64,
    /// Most WebSockets (subscriptions' connections) one principal holds at
    /// once; one more is closed at its connection_init with 1013 Try Again
    /// Later.
    #[arg(long, default_value_t = 16)]
    pub(crate) max_websockets_per_principal: usize,
    #[command(flatten)]
    pub(crate) connections: ConnectionArgs,
    #[command(flatten)]
    pub(crate) witness: WitnessArgs,
}

/// How many connections a server keeps, and how slow a client may be.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionArgs {
    /// Most connections open at once (WebSockets included); at the cap the
    /// connection idle longest is closed to make room for a new one, and
    /// with none idle one more is answered 503 and closed. The open-file limit (ulimit -n) is raised
    /// for them up to its hard value; lowered to what that leaves room for.
    #[arg(long, default_value_t = 1024, env = "CLEW_MAX_CONNECTIONS")]
    pub(crate) max_connections: usize,
    /// Longest a client may take to send a request's headers, and how long
    /// an idle connection is kept open, seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) header_timeout_s: u64,
    /// Longest from a request's headers to its answer (its body included),
    /// seconds; later it is answered 408.
    #[arg(long, default_value_t = 120)]
    pub(crate) request_timeout_s: u64,
    /// Longest the server waits for a client to read any of what it sends
    /// (an answer, a WebSocket's messages), seconds; then the connection is
    /// closed. Restarted by every write that goes through.
    #[arg(long, default_value_t = 60)]
    pub(crate) write_timeout_s: u64,
}

impl ConnectionArgs {
    pub(crate) fn limits(&self) -> clew_api::ConnectionLimits {
        clew_api::ConnectionLimits {
            max_open: self.max_connections,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_s.max(1)),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_s.max(1)),
            write_timeout: std::time::Duration::from_secs(self.write_timeout_s.max(1)),
        }
    }
}

/// The deployment's witnesses, as the process that signs checkpoints (which
/// sends them) and the replicas (which keep their cosignatures) take them.
#[derive(Debug, clap::Args)]
pub(crate) struct WitnessArgs {
    /// A witness every new checkpoint is sent to (C2SP tlog-witness), as
    /// `<witness verifier key>@<url>` (repeatable; env: one per line). Its
    /// verified cosignatures are stored and appended to the checkpoint
    /// wherever it is served; a slow or dead witness holds nothing up. A
    /// replica sends nothing: it keeps the cosignatures by these keys that
    /// the published checkpoints carry (the `@<url>` may be left out).
    #[arg(long = "witness", env = "CLEW_WITNESSES", value_delimiter = '\n')]
    pub(crate) witnesses: Vec<String>,
    /// Cosignatures that make a checkpoint witnessed (default: every
    /// --witness); `/readyz` and the metrics say how far the last witnessed
    /// checkpoint lags the last signed one.
    #[arg(long, env = "CLEW_WITNESS_QUORUM")]
    pub(crate) witness_quorum: Option<usize>,
}

impl WitnessArgs {
    fn given(&self) -> impl Iterator<Item = &str> {
        self.witnesses
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
    }

    fn quorum_of(&self, n: usize) -> anyhow::Result<usize> {
        let quorum = self.witness_quorum.unwrap_or(n);
        if quorum > n {
            anyhow::bail!("--witness-quorum {quorum} needs at least {quorum} --witness; {n} given");
        }
        Ok(quorum)
    }

    /// The witnesses to send checkpoints to.
    pub(crate) fn feed(&self) -> anyhow::Result<crate::witnessing::Witnesses> {
        let endpoints = self
            .given()
            .map(|w| Ok(clew_witness::WitnessEndpoint::parse(w)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let quorum = self.quorum_of(endpoints.len())?;
        Ok(crate::witnessing::Witnesses { endpoints, quorum })
    }

    /// The witnesses whose cosignatures a replica keeps (their keys only).
    pub(crate) fn keys(&self) -> anyhow::Result<clew_witness::WitnessPolicy> {
        let keys = self
            .given()
            .map(|w| w.split_once('@').map_or(w, |(key, _)| key).to_string())
            .collect::<Vec<_>>();
        let quorum = self.quorum_of(keys.len())?;
        Ok(clew_witness::WitnessPolicy::new(&keys, Some(quorum))?)
    }
}

impl ServerArgs {
    pub(crate) fn limits(&self) -> clew_api::Limits {
        clew_api::Limits {
            depth: self.max_depth,
            complexity: self.max_complexity,
            body_bytes: self.max_body_kib * 1024,
            timeout: std::time::Duration::from_secs(self.timeout_s),
            connections: self.connections.limits(),
            websockets_per_principal: self.max_websockets_per_principal.max(1),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProofKind {
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
pub(crate) enum TilesAction {
    /// Write checkpoint, tiles, entry bundles and all checkpoints into a directory.
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IngestKind {
    /// A folder of DICOM files (one dataset version). Refused as a whole,
    /// naming each file and tag, when any file is not de-identified (DICOM
    /// PS3.15 Annex E); files that are not DICOM or are damaged are skipped
    /// and reported. Exit status: 0 published, 1 error (e.g. no DICOM instances), 2 identifiable data found,
    /// 3 refused by the ledger (e.g. the same content already published).
    Dicom {
        /// The folder (walked recursively).
        folder: PathBuf,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// A PACS over DICOMweb (DICOM PS3.18): the studies the selection picks
    /// (QIDO-RS, paged), their series and each series' instance metadata
    /// (WADO-RS), gated exactly as files are; the manifest records where
    /// the data lives (this endpoint and the UIDs), never the pixels. An
    /// interrupted run publishes nothing; the next run with the same
    /// selection reads only what is left (--scan-state). Exit status as for
    /// `ingest dicom`; a PACS that cannot be read, or answers what Clew will
    /// not believe, is 1.
    Dicomweb {
        /// The DICOMweb base URL, e.g. https://pacs.example/dicom-web
        /// (credentials never go into it).
        base_url: String,
        #[command(flatten)]
        pacs: Box<PacsArgs>,
        #[command(flatten)]
        publish: PublishArgs,
    },
}

/// What is published, and where: the options of every ingest.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// Dataset id (registered beforehand).
    #[arg(long)]
    pub(crate) dataset: String,
    /// Version label, e.g. 2.0.
    #[arg(long)]
    pub(crate) version: String,
    /// The trust the data comes from: must be the dataset's custodian.
    #[arg(long)]
    pub(crate) site: Option<String>,
    /// Dataset version ids this one was made from (repeatable).
    #[arg(long = "derived-from")]
    pub(crate) derived_from: Vec<String>,
    /// Release notes.
    #[arg(long, default_value = "")]
    pub(crate) notes: String,
    /// JSON report of the run (written in every case).
    #[arg(long, default_value = "clew-ingest-report.json")]
    pub(crate) report: PathBuf,
    /// Scan and gate only; store and publish nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
    /// Principal recorded as the actor when publishing into the data directory.
    #[arg(long, default_value = crate::datadir::ADMIN_PRINCIPAL)]
    pub(crate) actor: String,
    /// Publish through a running server instead (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "CLEW_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token file for --server (ingest or governance role).
    #[arg(long, env = "CLEW_TOKEN_FILE", requires = "server")]
    pub(crate) token_file: Option<PathBuf>,
}

/// Which studies to read from a PACS, and how to talk to it.
#[derive(Debug, clap::Args)]
pub(crate) struct PacsArgs {
    /// The name the PACS is known by, recorded in the manifest (default: its host).
    #[arg(long)]
    pub(crate) source_name: Option<String>,
    /// StudyDate: a date or a range, e.g. 20200101-20201231.
    #[arg(long)]
    pub(crate) study_date: Option<String>,
    /// ModalitiesInStudy (repeatable: studies with any of them).
    #[arg(long = "modality")]
    pub(crate) modalities: Vec<String>,
    /// StudyInstanceUID (repeatable: just these studies).
    #[arg(long = "study-uid")]
    pub(crate) study_uids: Vec<String>,
    /// Any other QIDO-RS match, KEY=VALUE with an attribute keyword or tag
    /// (repeatable), e.g. --query AccessionNumber=A123.
    #[arg(long = "query", value_parser = parse_key_value)]
    pub(crate) query: Vec<(String, String)>,
    /// Search results asked for per request (QIDO-RS `limit`).
    #[arg(long, default_value_t = 100)]
    pub(crate) page_size: usize,
    /// Retrieve every instance (WADO-RS) to record its SHA-256 and size and
    /// gate the file itself: the manifest is then the one a folder of the
    /// same files gives.
    #[arg(long)]
    pub(crate) digests: bool,
    /// File holding a bearer token for the PACS (or its gateway).
    #[arg(
        long,
        env = "CLEW_PACS_TOKEN_FILE",
        conflicts_with = "pacs_basic_auth_file"
    )]
    pub(crate) pacs_token_file: Option<PathBuf>,
    /// File holding `user:password` for HTTP basic authentication; or set
    /// CLEW_PACS_USER and CLEW_PACS_PASSWORD.
    #[arg(long, env = "CLEW_PACS_BASIC_AUTH_FILE")]
    pub(crate) pacs_basic_auth_file: Option<PathBuf>,
    /// PEM file of the CA the PACS's TLS certificate is checked with.
    #[arg(long, env = "CLEW_PACS_CA")]
    pub(crate) pacs_ca: Option<PathBuf>,
    /// Requests to the PACS in flight at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Longest one request may take, seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout_s: u64,
    /// Further attempts after a failure that may pass (no answer, 5xx, 429),
    /// with back-off from 250 ms doubling to 8 s.
    #[arg(long, default_value_t = 4)]
    pub(crate) retries: u32,
    /// Largest search or metadata answer accepted, MiB.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_metadata_mib: u64,
    /// Largest instance accepted (with --digests), MiB.
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_instance_mib: u64,
    /// What a run has read so far, kept for the next run after an
    /// interruption; deleted once a run reaches an outcome.
    #[arg(long, default_value = "clew-dicomweb-scan-state.jsonl")]
    pub(crate) scan_state: PathBuf,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Issue a token for a principal: its SHA-256 goes into the file, the
    /// token is printed once.
    Issue {
        #[arg(long)]
        tokens_file: PathBuf,
        #[arg(long)]
        principal: String,
    },
}
