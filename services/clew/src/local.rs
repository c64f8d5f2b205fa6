//! The local node of a data directory: the primary ledger (created on first
//! start, with the API's service key registered as `clew-api`, role SERVICE),
//! its catalogue, and the sequencer thread of `clew-node` over them. This is
//! how the CLI records events (`clew ingest`, `clew demo`) without the HTTP
//! stack; `clew serve` adds tokens and the API on top ([`crate::server`]).

use std::sync::Arc;

use anyhow::{Context, Result};
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

/// Opens the primary ledger in `dir`, creating it on first start, with the
/// API's service key (`keys/api.key`) registered as principal `clew-api`.
/// Read replicas sign with a copy of that key. Dataset versions are
/// sequenced only when their manifests are in `content` (the data
/// directory's [`DataDir::manifest_store`]).
pub fn open_primary(
    dir: &DataDir,
    origin: &str,
    content: &clew_blobs::BlobStore,
) -> Result<(Ledger, ProducerKey, bool)> {
    let created = !dir.has_ledger();
    let options = dir.ledger_options(LedgerOptions::citing(content.clone()));
    let ledger = if created {
        tracing::info!(dir = %dir.root().display(), "creating a new data directory");
        dir.init(origin, options)?
    } else {
        dir.open(None, options)?
    };

    // The service key the API signs with, registered by the genesis admin.
    let key_path = dir.keys().join("api.key");
    let service_key = if key_path.exists() {
        keyfiles::read_producer(&key_path)?
    } else {
        let name = format!("{}/api", ledger.origin());
        keyfiles::generate(&dir.keys(), "api", &name)?.2
    };
    // Registered with the role SERVICE (it signs for the authenticated
    // caller, never as itself). A data directory from before the policy
    // registered it as an admin: its roles are changed once, by the genesis
    // admin, with a keyless re-registration; its earlier events stay as they
    // were, and `clew verify` names them.
    let registration = if ledger.key(service_key.key_id())?.is_none() {
        Some(service_key.verifier().to_text())
    } else if ledger.principal_roles(SERVICE_PRINCIPAL).as_deref() != Some(&[Role::Service as i32])
    {
        Some(String::new())
    } else {
        None
    };
    if let Some(verifier_key) = registration {
        let admin = keyfiles::read_producer(&dir.admin_key()).with_context(|| {
            "registering the API's service key needs the genesis admin key in keys/admin.key"
        })?;
        let body = Body::PrincipalRegistered(proto::PrincipalRegistered {
            principal_id: SERVICE_PRINCIPAL.into(),
            display_name: "Clew API service".into(),
            roles: vec![Role::Service as i32],
            verifier_key,
            organisation: String::new(),
        });
        let envelope = clew_events::seal(&admin, ADMIN_PRINCIPAL, body, None, None)?;
        let offset = ledger.cursor(SETUP_SOURCE)?;
        let receipt = ledger.sequence(
            SETUP_SOURCE,
            vec![Submission::received(offset, envelope.encode_to_vec())],
        )?;
        if let Some(r) = receipt.rejected.first() {
            anyhow::bail!("registering the API service key was refused: {}", r.detail);
        }
    }
    Ok((ledger, service_key, created))
}

/// Opens (creating on first start) the primary ledger and catalogue of
/// `dir` and starts the sequencer (citing content in `content`); returns the
/// node and whether this start created the data directory.
pub fn start(
    dir: &DataDir,
    origin: &str,
    content: &clew_blobs::BlobStore,
) -> Result<(Arc<Node>, bool)> {
    let (ledger, service_key, created) = open_primary(dir, origin, content)?;
    let catalog = dir.open_catalog()?;
    let metrics = Arc::new(Metrics::new()?);
    let node = Node::start(Arc::new(ledger), Arc::new(catalog), service_key, metrics)?;
    Ok((node, created))
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
