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
    return_freed_memory();
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

/// Gives the system back the memory this thread freed while opening the
/// stores. mimalloc (the `clew` binary's allocator) keeps a thread's freed
/// pages until that thread allocates again after a delay, and the thread
/// that opened the stores does little once the server runs. On a
/// 3.5M-event catalogue the server's RSS once started was 1,285 MiB; 1,263
/// with this call alone; 1,302 with the catalogue's store opened a second
/// time after loading the lineage graph (`clew_catalog::Catalog`) alone;
/// 896 with both. Nothing to give back when mimalloc is not the allocator.
pub fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it only returns free pages of
    // mimalloc's heaps to the system.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc's `purge_delay` option (number 15 of `mi_option_t` in mimalloc
/// v2 and v3; `libmimalloc-sys` names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before giving them back to the
/// system, unless `MIMALLOC_PURGE_DELAY` says otherwise (mimalloc v3's own
/// default is 1,000 ms). Measured with `clew-bench api` (1.0–1.9M events,
/// each setting alternated with the default): 300 ms held 50–54 MiB less
/// once warm, with a query's CPU and the write path's within the runs'
/// spread; 100 ms held 60–76 MiB less but the write path took about 10%
/// more CPU, and 0 ms 95 MiB less for about 20% more (probably tantivy's
/// arenas, freed at each search commit every 200 ms, given back and
/// faulted in again; not profiled).
pub const PURGE_DELAY_MS: i64 = 300;

/// Sets how long freed memory stays with the allocator before it goes back
/// to the system ([`PURGE_DELAY_MS`]), unless `MIMALLOC_PURGE_DELAY` is set.
/// The `clew` binary calls it first thing in `main`.
pub fn set_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one of mimalloc's options; no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
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

#[cfg(test)]
mod tests {
    const CHILD: &str = "CLEW_TEST_PURGE_DELAY_CHILD";
    const TEST: &str = "server::tests::the_purge_delay_is_option_15_and_its_variable_wins";

    /// mimalloc's purge delay as this process sees it.
    fn purge_delay() -> i64 {
        // SAFETY: reads one of mimalloc's options; no pointers.
        unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) as i64 }
    }

    /// mimalloc reads its options from the environment when the process
    /// starts, so each case runs this test binary again: with
    /// `MIMALLOC_PURGE_DELAY` set, option 15 holds its value before and
    /// after [`super::set_purge_delay`]; without it, the call sets
    /// [`super::PURGE_DELAY_MS`].
    #[test]
    fn the_purge_delay_is_option_15_and_its_variable_wins() {
        match std::env::var(CHILD).as_deref() {
            Ok("variable") => {
                assert_eq!(purge_delay(), 1234, "option 15 is not the purge delay");
                super::set_purge_delay();
                assert_eq!(purge_delay(), 1234, "the variable was overridden");
                return;
            }
            Ok("none") => {
                super::set_purge_delay();
                assert_eq!(purge_delay(), super::PURGE_DELAY_MS);
                return;
            }
            _ => {}
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        for (case, variable) in [("variable", Some("1234")), ("none", None)] {
            let mut child = std::process::Command::new(&exe);
            child.args(["--exact", TEST]).env(CHILD, case);
            match variable {
                Some(v) => child.env("MIMALLOC_PURGE_DELAY", v),
                None => child.env_remove("MIMALLOC_PURGE_DELAY"),
            };
            let out = child.output().expect("the test binary runs again");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "case {case} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
