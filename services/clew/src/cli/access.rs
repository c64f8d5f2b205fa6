//! Recording events by hand, access requests, audits and the data-use
//! register, over a data directory through the local node and the API's
//! read model (the same answers GraphQL gives).

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clew_api::{RequestScope, Viewer};
use clew_events::proto;
use clew_node::{Node, Outcome};

use crate::datadir::DataDir;

use super::args::*;

/// Runs one command of this family.
pub(super) fn run(command: AccessCommand) -> Result<ExitCode> {
    match command {
        AccessCommand::Record { dir, actor, file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).context("the events are not JSON")?;
            let items = match value {
                serde_json::Value::Array(items) => items,
                one => vec![one],
            };
            let bodies = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let event: proto::Event = serde_json::from_value(item).with_context(|| {
                        format!("event {i} is not an event body in proto3 JSON")
                    })?;
                    event.body.with_context(|| format!("event {i} has no body"))
                })
                .collect::<Result<Vec<_>>>()?;
            with_node(&dir.data(), |node, rt| {
                let mut refused = 0;
                for body in bodies {
                    let kind = clew_events::kind_of(&body).as_str_name();
                    match rt.block_on(node.record(&actor, body, None))? {
                        Outcome::Accepted(s) => println!(
                            "{}",
                            serde_json::json!({"outcome": "accepted", "kind": kind, "leafIndex": s.leaf_index, "eventId": s.event_id})
                        ),
                        Outcome::Rejected(r) => {
                            refused += 1;
                            println!(
                                "{}",
                                serde_json::json!({"outcome": "refused", "kind": kind, "reason": r.reason.as_str_name(), "detail": r.detail})
                            );
                        }
                    }
                }
                Ok(if refused == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        AccessCommand::AccessRequests { dir, viewer, queue } => {
            with_node(&dir.data(), |node, _| {
                let v = viewer_of(node, &viewer)?;
                let scope = if queue {
                    RequestScope::Queue
                } else {
                    RequestScope::Mine
                };
                let answer = clew_api::access_requests(node, &v, scope)?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(ExitCode::SUCCESS)
            })
        }
        AccessCommand::AccessAudit {
            dir,
            dataset,
            from,
            to,
            viewer,
            proof,
        } => with_node(&dir.data(), |node, _| {
            let v = viewer_of(node, &viewer)?;
            let text = if proof {
                let doc = clew_api::proven_access_audit(node, &v, &dataset, &from, &to)?;
                serde_json::to_string_pretty(&doc)?
            } else {
                let audit = clew_api::access_audit(node, &v, &dataset, &from, &to)?;
                serde_json::to_string_pretty(&audit)?
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }),
        AccessCommand::DataUses { dir, viewer } => with_node(&dir.data(), |node, _| {
            let v = match &viewer {
                Some(p) => viewer_of(node, p)?,
                None => Viewer::anonymous(Default::default(), node.access_time()),
            };
            let uses = clew_api::data_use_register(node, &v)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "dataUses": uses }))?
            );
            Ok(ExitCode::SUCCESS)
        }),
    }
}

fn viewer_of(node: &Node, principal: &str) -> Result<Viewer> {
    if node
        .catalog()
        .node(&format!("principal/{principal}"))?
        .is_none()
    {
        bail!("principal {principal} is not registered");
    }
    Ok(Viewer::resolve(
        node.catalog(),
        Default::default(),
        principal,
        node.access_time(),
    )?)
}

/// Starts the local node of `dir`, waits until its catalogue has caught up,
/// runs `f`, and stops the node cleanly whatever `f` answered.
fn with_node<T>(
    dir: &DataDir,
    f: impl FnOnce(&Arc<Node>, &tokio::runtime::Runtime) -> Result<T>,
) -> Result<T> {
    if !dir.has_ledger() {
        bail!("{} holds no ledger", dir.root().display());
    }
    let (node, _) = crate::local::start(dir, "unused: the ledger exists", &dir.manifest_store()?)
        .with_context(|| {
        format!(
            "opening {} (is `clew serve` running on it?)",
            dir.root().display()
        )
    })?;
    let result = (|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        while !node.ready() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        f(&node, &rt)
    })();
    node.shutdown();
    result
}
