//! Running Clew: the single-process server, the demo, the distributed services and their tokens.

use std::process::ExitCode;

use anyhow::Result;

use super::args::*;
use super::runtime;

/// Runs one command of this family.
pub(super) fn run(command: ServeCommand) -> Result<ExitCode> {
    match command {
        ServeCommand::Serve { dir, server: args } => {
            let data = dir.data();
            let prepared = crate::server::prepare(&data, &args.origin)?;
            if prepared.created {
                println!("created {}", data.root().display());
            }
            let witnesses = crate::witnessing::WitnessRole::Feed(args.witness.feed()?);
            runtime()?.block_on(crate::server::run(
                prepared,
                args.listen,
                args.limits(),
                witnesses,
            ))?;
        }
        ServeCommand::Demo {
            dir,
            server: args,
            serve,
        } => {
            let data = dir.data();
            let mut prepared = crate::server::prepare(&data, &args.origin)?;
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
                    let (n, _) =
                        crate::demo::record(&data, &node, &tokens, &prepared.manifests).await?;
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
                prepared.web.demo_principals = crate::demo::principals(&data)?;
                let witnesses = crate::witnessing::WitnessRole::Feed(args.witness.feed()?);
                rt.block_on(crate::server::run(
                    prepared,
                    args.listen,
                    args.limits(),
                    witnesses,
                ))?;
            } else {
                node.shutdown();
            }
        }
        ServeCommand::Ledger {
            dir,
            kafka,
            origin,
            health_listen,
            keys_from,
            witness,
        } => {
            crate::distributed::run_ledger(
                &dir.data(),
                &origin,
                &kafka,
                health_listen,
                keys_from.as_deref(),
                witness.feed()?,
            )?;
        }
        ServeCommand::Replica {
            dir,
            kafka,
            server: args,
            ledger_vkey,
            service_key,
            group,
            tokens_file,
        } => {
            let data = dir.data();
            let group = group.unwrap_or_else(crate::distributed::default_group);
            let witnesses = args.witness.keys()?;
            let prepared = crate::distributed::prepare_replica(
                &data,
                &ledger_vkey,
                &service_key,
                &kafka,
                &group,
                tokens_file.as_deref(),
                crate::witnessing::cosignature_filter(witnesses.clone()),
            )?;
            runtime()?.block_on(crate::server::run(
                prepared,
                args.listen,
                args.limits(),
                crate::witnessing::WitnessRole::Follow(witnesses),
            ))?;
        }
        ServeCommand::Topics { kafka } => {
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
        ServeCommand::Token {
            action:
                TokenAction::Issue {
                    tokens_file,
                    principal,
                },
        } => {
            let store = clew_api::TokenStore::open(&tokens_file)?;
            println!("{}", store.issue(&principal)?);
        }
        ServeCommand::Submit {
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
        ServeCommand::Schema => {
            print!("{}", clew_api::sdl());
        }
    }
    Ok(ExitCode::SUCCESS)
}
