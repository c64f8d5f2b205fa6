//! Keys, the ledger, proofs and receipts: everything that works on a data directory's ledger or on files it wrote.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_ledger::{verify_ledger, LedgerOptions};

use crate::{export, keyfiles, stream};

use super::args::*;
use super::key_arg;

/// Runs one command of this family.
pub(super) fn run(command: LedgerCommand) -> Result<ExitCode> {
    match command {
        LedgerCommand::Keygen { name, out } => {
            let (skey, vkey, key) = keyfiles::generate(&out, &keyfiles::stem_for(&name), &name)?;
            println!("{}", key.verifier().to_text());
            eprintln!("wrote {} and {}", skey.display(), vkey.display());
        }
        LedgerCommand::Init { dir, origin } => {
            let data = dir.data();
            let ledger = data.init(&origin, LedgerOptions::default())?;
            println!("{}", ledger.verifier_key());
            eprintln!(
                "created ledger {origin} in {} (keys in {}); genesis admin is leaf 0",
                dir.data_dir.display(),
                data.keys().display()
            );
        }
        LedgerCommand::Sequence {
            dir,
            input,
            source,
            batch_size,
        } => {
            // A version is sequenced only when its manifest is in the store.
            let data = dir.data();
            let ledger = data.open(None, LedgerOptions::citing(data.manifest_store()?))?;
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
        LedgerCommand::SampleStream {
            dir,
            out,
            events,
            producers,
        } => {
            let data = dir.data();
            let admin = keyfiles::read_producer(&data.admin_key())?;
            let p = crate::synthetic::Producers::new(
                admin,
                crate::datadir::ADMIN_PRINCIPAL,
                producers.max(1),
            );
            let mut envelopes = p.registrations();
            envelopes.extend(crate::synthetic::events(&p, 0..events, events));
            // The manifests the sample versions cite, so that they are sequenced.
            let store = data.manifest_store()?;
            let mut manifests = 0;
            for manifest in clew_events::sample::stream_manifests(events) {
                store.put_blocking(manifest.into())?;
                manifests += 1;
            }
            stream::append(&out, &envelopes)?;
            eprintln!(
                "wrote {} signed events to {} and the {manifests} manifests they cite to {}",
                envelopes.len(),
                out.display(),
                store.location()
            );
        }
        LedgerCommand::Verify { dir, vkey, content } => {
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
            let report = match result {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut summary = format!(
                "ok: {} leaves, {} hashes and {} checkpoints verify with {}; every leaf obeys the authorisation policy",
                report.leaves, report.hashes, report.checkpoints, report.verifier_key
            );
            if content {
                let store = dir.data().manifest_store()?;
                let pb = crate::progress_bar(0, "reading manifests");
                let checked = clew_ledger::verify_content(&report, &store, &|done, total| {
                    pb.set_length(total);
                    pb.set_position(done);
                });
                pb.finish_and_clear();
                match checked {
                    Ok(n) => summary.push_str(&format!(
                        "; the {n} manifests it cites are in {} and hash to their digests",
                        store.location()
                    )),
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            println!("{summary}");
        }
        LedgerCommand::Checkpoint { dir, size } => {
            let ledger = dir.data().open(None, LedgerOptions::default())?;
            let cp = match size {
                Some(s) => ledger
                    .checkpoint_at(s)?
                    .with_context(|| format!("no checkpoint was signed at size {s}"))?,
                None => ledger.latest_checkpoint()?,
            };
            print!("{}", cp.note_text());
        }
        LedgerCommand::Receipt {
            dir,
            index,
            event_id,
        } => {
            let ledger = dir.data().open(None, LedgerOptions::default())?;
            let index = match (index, event_id) {
                (Some(i), _) => i,
                (None, Some(id)) => ledger
                    .leaf_index_of(&id)?
                    .with_context(|| format!("event {id} is not in the ledger"))?,
                (None, None) => bail!("give --index or --event-id"),
            };
            print!("{}", ledger.receipt(index)?);
        }
        LedgerCommand::VerifyReceipt {
            file,
            vkey,
            witnesses,
        } => {
            let policy = witnesses.policy()?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let verified = clew_ledger::verify_receipt(&text, &key_arg(&vkey)?)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    witnessed(&policy, &r.checkpoint.note)?;
                    Ok(r)
                });
            match verified {
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
        LedgerCommand::VerifyAnswer {
            file,
            vkey,
            witnesses,
        } => {
            let policy = witnesses.policy()?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc: clew_ledger::ProvenAnswer = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a proof-carrying answer", file.display()))?;
            let verified = clew_ledger::verify_answer(&doc, &key_arg(&vkey)?)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    witnessed(&policy, doc.checkpoint.as_bytes())?;
                    Ok(v)
                });
            match verified {
                Ok(v) if doc.query["kind"] == clew_ledger::ACCESS_AUDIT_KIND => println!(
                    "ok: {} access holdings of dataset/{}, recomputed from {} events proven against the signed checkpoint of {} leaves",
                    doc.holders.len(),
                    doc.query["dataset"].as_str().unwrap_or_default(),
                    v.events,
                    v.tree_size
                ),
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
        LedgerCommand::Proof { kind } => {
            let proof = match kind {
                ProofKind::Inclusion { dir, index, size } => {
                    let ledger = dir.data().open(None, LedgerOptions::default())?;
                    let size = size.unwrap_or(ledger.size());
                    ledger.inclusion_proof(index, size)?
                }
                ProofKind::Consistency { dir, old, new } => {
                    let ledger = dir.data().open(None, LedgerOptions::default())?;
                    let new = new.unwrap_or(ledger.size());
                    ledger.consistency_proof(old, new)?
                }
            };
            for h in proof {
                println!("{}", B64.encode(h.0));
            }
        }
        LedgerCommand::Tiles {
            action: TilesAction::Export { dir, out },
        } => {
            let ledger = dir.data().open(None, LedgerOptions::default())?;
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
        LedgerCommand::Rejected { dir, from, limit } => {
            let ledger = dir.data().open(None, LedgerOptions::default())?;
            for r in ledger.rejected(from, limit)? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the witness policy on a checkpoint the ledger's key already
/// verified, printing each counted cosignature.
fn witnessed(policy: &clew_witness::WitnessPolicy, note: &[u8]) -> Result<(), String> {
    if policy.is_empty() {
        return Ok(());
    }
    for c in policy.check(note)? {
        println!("witnessed: cosigned by {} at {}", c.witness, c.time);
    }
    Ok(())
}
