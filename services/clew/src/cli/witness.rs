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
    let WitnessCommand::Witness { action } = command;
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
        WitnessAction::Serve { dir, listen, logs } => {
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
                axum::serve(listener, clew_witness::http::router(witness))
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
                    .context("serving")
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
