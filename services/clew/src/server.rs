//! `clew serve`: the whole system in one process over one data directory —
//! sequencer, catalogue projection and API on the embedded default.
//!
//! First start creates the ledger and its keys, the API's service key
//! (registered as principal `clew-api` by the genesis admin) and an admin
//! bearer token in `<data-dir>/admin.token`. A restart resumes where it
//! stopped: the catalogue catches up with the ledger before `/readyz` says
//! ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clew_api::{AppState, Limits, TokenStore};
use clew_events::proto::{self, event::Body, Role};
use clew_events::ProducerKey;
use clew_ledger::{Ledger, LedgerOptions, Submission};
use clew_node::{Metrics, Node};
use prost::Message;

use crate::datadir::{DataDir, ADMIN_PRINCIPAL};
use crate::keyfiles;

/// Principal id of the API's service key.
pub const SERVICE_PRINCIPAL: &str = "clew-api";

/// Input source under which set-up events are sequenced.
const SETUP_SOURCE: &str = "setup";

/// A node ready to serve, and where its admin token is.
pub struct Prepared {
    /// The running spine.
    pub node: Arc<Node>,
    /// Bearer tokens.
    pub tokens: Arc<TokenStore>,
    /// File holding the admin token.
    pub admin_token_file: PathBuf,
    /// Whether this start created the data directory.
    pub created: bool,
    /// Where uploaded dataset-version manifests are kept.
    pub manifests: PathBuf,
}

/// Where the service key and the token file live.
fn api_dir(dir: &DataDir) -> PathBuf {
    dir.root().join("api")
}

/// Opens the primary ledger in `dir`, creating it on first start, with the
/// API's service key (`keys/api.key`) registered as principal `clew-api`.
/// Read replicas sign with a copy of that key.
pub fn open_primary(dir: &DataDir, origin: &str) -> Result<(Ledger, ProducerKey, bool)> {
    let created = !dir.has_ledger();
    let ledger = if created {
        tracing::info!(dir = %dir.root().display(), "creating a new data directory");
        dir.init(origin, LedgerOptions::default())?
    } else {
        dir.open(None, LedgerOptions::default())?
    };

    // The service key the API signs with, registered by the genesis admin.
    let key_path = dir.keys().join("api.key");
    let service_key = if key_path.exists() {
        keyfiles::read_producer(&key_path)?
    } else {
        let name = format!("{}/api", ledger.origin());
        keyfiles::generate(&dir.keys(), "api", &name)?.2
    };
    if ledger.key(service_key.key_id())?.is_none() {
        let admin = keyfiles::read_producer(&dir.admin_key()).with_context(|| {
            "registering the API's service key needs the genesis admin key in keys/admin.key"
        })?;
        let body = Body::PrincipalRegistered(proto::PrincipalRegistered {
            principal_id: SERVICE_PRINCIPAL.into(),
            display_name: "Clew API service".into(),
            // It signs for the authenticated caller, never as itself.
            roles: vec![Role::Service as i32],
            verifier_key: service_key.verifier().to_text(),
            organisation: String::new(),
        });
        let envelope = clew_events::seal(&admin, ADMIN_PRINCIPAL, body, None, None)?;
        let offset = ledger.cursor(SETUP_SOURCE)?;
        let receipt = ledger.sequence(
            SETUP_SOURCE,
            vec![Submission {
                offset,
                bytes: envelope.encode_to_vec(),
            }],
        )?;
        if let Some(r) = receipt.rejected.first() {
            anyhow::bail!("registering the API service key was refused: {}", r.detail);
        }
    }
    Ok((ledger, service_key, created))
}

/// Opens the bearer-token store of `dir`, writing `admin.token` on first use.
pub fn open_tokens(dir: &DataDir) -> Result<(Arc<TokenStore>, PathBuf)> {
    open_tokens_at(dir, None)
}

/// [`open_tokens`], or the shared token file `file` (several replicas, a
/// Kubernetes Secret; tokens are issued into it with `clew token issue`, and
/// no `admin.token` is written).
pub fn open_tokens_at(
    dir: &DataDir,
    file: Option<&std::path::Path>,
) -> Result<(Arc<TokenStore>, PathBuf)> {
    if let Some(file) = file {
        if !file.exists() {
            anyhow::bail!("token file {} does not exist", file.display());
        }
        return Ok((Arc::new(TokenStore::open(file)?), file.to_path_buf()));
    }
    let tokens = Arc::new(TokenStore::open(&api_dir(dir).join("tokens.json"))?);
    let admin_token_file = dir.root().join("admin.token");
    if !admin_token_file.exists() {
        let token = tokens.issue(ADMIN_PRINCIPAL)?;
        write_secret(&admin_token_file, &token)?;
    }
    Ok((tokens, admin_token_file))
}

/// Opens (creating on first start) everything `clew serve` needs and starts
/// the sequencer.
pub fn prepare(dir: &DataDir, origin: &str) -> Result<Prepared> {
    let (ledger, service_key, created) = open_primary(dir, origin)?;
    let (tokens, admin_token_file) = open_tokens(dir)?;
    let catalog = clew_catalog::Catalog::open(&dir.catalog_dir())?;
    let metrics = Arc::new(Metrics::new()?);
    let node = Node::start(Arc::new(ledger), Arc::new(catalog), service_key, metrics)?;
    Ok(Prepared {
        node,
        tokens,
        admin_token_file,
        created,
        manifests: dir.manifests(),
    })
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    Ok(())
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Serves a prepared node on `listen` until Ctrl-C / SIGTERM.
pub async fn run(prepared: Prepared, listen: SocketAddr, limits: Limits) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("Clew is serving http://{addr}/graphql (GraphiQL in a browser; POST queries with a bearer token)");
    if prepared.admin_token_file.ends_with("admin.token") {
        println!(
            "admin token: {} (send it as `Authorization: Bearer <token>`)",
            prepared.admin_token_file.display()
        );
    } else {
        println!(
            "bearer tokens: the digests in {} (issue with `clew token issue`)",
            prepared.admin_token_file.display()
        );
    }
    println!("health: http://{addr}/healthz  ready: http://{addr}/readyz  metrics: http://{addr}/metrics");
    let state = AppState::new(prepared.node.clone(), prepared.tokens.clone(), limits)
        .with_manifests(clew_ingest::ManifestStore::new(&prepared.manifests));
    clew_api::serve(listener, state, shutdown_signal()).await?;
    let size = prepared.node.ledger().size();
    println!("Clew stopped cleanly; ledger size {size}");
    Ok(())
}
