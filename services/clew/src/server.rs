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
use clew_node::Node;

use crate::datadir::{DataDir, ADMIN_PRINCIPAL};

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
    pub manifests: clew_blobs::BlobStore,
    /// Where uploads are spooled while they are hashed.
    pub spool: PathBuf,
    /// How the web pages are offered (the demo's one-click principals).
    pub web: clew_web::WebConfig,
}

/// Where the service key and the token file live.
fn api_dir(dir: &DataDir) -> PathBuf {
    dir.root().join("api")
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
        crate::local::write_secret(&admin_token_file, &token)?;
    }
    Ok((tokens, admin_token_file))
}

/// Opens (creating on first start) everything `clew serve` needs and starts
/// the sequencer.
pub fn prepare(dir: &DataDir, origin: &str) -> Result<Prepared> {
    let manifests = dir.manifest_store()?;
    let (node, created) = crate::local::start(dir, origin, &manifests)?;
    let (tokens, admin_token_file) = open_tokens(dir)?;
    crate::memory::return_freed_memory();
    Ok(Prepared {
        node,
        tokens,
        admin_token_file,
        created,
        manifests,
        spool: dir.spool_dir(),
        web: clew_web::WebConfig::default(),
    })
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

/// Serves a prepared node on `listen` until Ctrl-C / SIGTERM, sending every
/// new checkpoint to the witnesses meanwhile (a replica: keeping theirs).
pub async fn run(
    prepared: Prepared,
    listen: SocketAddr,
    limits: Limits,
    witnesses: crate::witnessing::WitnessRole,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("Clew is serving http://{addr}/ (the web catalogue; sign in with a bearer token)");
    println!(
        "GraphQL: http://{addr}/graphql (GraphiQL in a browser; POST queries with a bearer token)"
    );
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
        .with_manifests(prepared.manifests.clone(), prepared.spool.clone());
    let witnessing = witnesses.start(&prepared.node);
    let router = clew_web::site(state.clone(), prepared.web.clone());
    clew_api::serve_router(listener, state, router, shutdown_signal()).await?;
    witnessing.stop().await;
    let size = prepared.node.ledger().size();
    println!("Clew stopped cleanly; ledger size {size}");
    Ok(())
}
