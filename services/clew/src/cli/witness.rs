//! `clew witness`: Clew as a witness (C2SP tlog-witness) for logs a partner
//! follows — its key, and the server.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clew_witness::{CosignatureSigner, Witness};

use super::args::*;

const KEY_FILE: &str = "witness.key";
const VKEY_FILE: &str = "witness.vkey";

/// Runs one command of this family.
pub(super) fn run(command: WitnessCommand) -> Result<ExitCode> {
    let action = match command {
        WitnessCommand::Witness { action } => action,
        WitnessCommand::Monitor {
            url,
            vkey,
            token_file,
            witnesses,
            state,
            interval_s,
            once,
            metrics_listen,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading {}", token_file.display()))?
                .trim()
                .to_string();
            let monitor = crate::monitor::Monitor::new(crate::monitor::MonitorConfig {
                url: url.trim_end_matches('/').to_string(),
                token,
                vkey: super::key_arg(&vkey)?,
                witnesses: witnesses.policy()?,
                state,
            })?;
            return monitor_loop(monitor, interval_s, once, metrics_listen);
        }
    };
    match action {
        WitnessAction::Init { dir, name } => {
            let key = dir.join(KEY_FILE);
            if key.exists() {
                bail!(
                    "{} exists: a witness keeps its key (a new key is a new witness)",
                    key.display()
                );
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let signer = CosignatureSigner::generate(&name)?;
            crate::local::write_secret(&key, &(signer.to_skey() + "\n"))?;
            std::fs::write(dir.join(VKEY_FILE), signer.vkey() + "\n")
                .with_context(|| format!("writing {}", dir.join(VKEY_FILE).display()))?;
            println!("{}", signer.vkey());
            Ok(ExitCode::SUCCESS)
        }
        WitnessAction::Serve {
            dir,
            listen,
            logs,
            connections,
        } => {
            let key = dir.join(KEY_FILE);
            let text = std::fs::read_to_string(&key).with_context(|| {
                format!(
                    "reading {} (create it with `clew witness init`)",
                    key.display()
                )
            })?;
            let signer = CosignatureSigner::from_skey(&text)
                .with_context(|| format!("{}", key.display()))?;
            let mut witness = Witness::open(&dir, signer)?;
            for log in &logs {
                let vkey = super::key_arg(log)?;
                let origin = witness.follow(&vkey)?;
                let latest = witness.latest(&origin)?.map_or(0, |(size, _)| size);
                tracing::info!(%origin, latest_cosigned = latest, "witnessing");
            }
            let witness = Arc::new(witness);
            let vkey = witness.signer().vkey();
            let rt = super::runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                tracing::info!(%listen, key = %vkey, "witness serving POST /add-checkpoint");
                // A witness is reached by logs it does not know: its
                // connections are bounded as the API's are.
                clew_api::serve_connections(
                    listener,
                    clew_witness::http::router(witness),
                    connections.limits(),
                    clew_api::ConnectionMetrics::unregistered(),
                    async {
                        let _ = tokio::signal::ctrl_c().await;
                    },
                )
                .await
                .context("serving")
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn monitor_loop(
    monitor: crate::monitor::Monitor,
    interval_s: u64,
    once: bool,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<ExitCode> {
    use crate::monitor::Observation;
    if let Some(addr) = metrics_listen {
        let stats = monitor.stats.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("metrics: {e}"),
            };
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let stats = stats.clone();
                        async move { crate::monitor::render_metrics(&stats) }
                    }),
                );
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        let _ = clew_api::serve_connections(
                            l,
                            app,
                            clew_api::ConnectionLimits::default(),
                            clew_api::ConnectionMetrics::unregistered(),
                            std::future::pending(),
                        )
                        .await;
                    }
                    Err(e) => tracing::error!("metrics on {addr}: {e}"),
                }
            });
        });
    }
    loop {
        match monitor.check_once() {
            Ok(Observation::Fork { seen, now, why }) => {
                eprintln!("FORK: {why}\n--- the checkpoint seen before ---\n{seen}--- the checkpoint served now ---\n{now}");
                return Ok(ExitCode::from(3));
            }
            Ok(Observation::First { size }) => println!("first checkpoint: tree size {size}"),
            Ok(Observation::Unchanged { size }) => {
                if once {
                    println!("unchanged: tree size {size}");
                }
            }
            Ok(Observation::Grown { from, to }) => {
                println!("consistent: tree size {from} → {to}")
            }
            Err(e) if once => return Err(e),
            Err(e) => tracing::warn!("monitor: {e:#}"),
        }
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs(interval_s.max(1)));
    }
}
