//! Catalogue queries and rebuilds over a data directory.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clew_ledger::LedgerOptions;

use super::args::*;

/// Runs one command of this family.
pub(super) fn run(command: CatalogCommand) -> Result<ExitCode> {
    match command {
        CatalogCommand::Reindex { dir } => {
            // Chunk after chunk frees what the one before allocated: kept,
            // not given back and faulted in again (the process ends soon).
            let _kept = crate::memory::keep_freed_memory();
            let data = dir.data();
            let ledger = data.open(None, LedgerOptions::default())?;
            let pb = crate::progress_bar(ledger.size(), "reindexing");
            let started = std::time::Instant::now();
            let catalog = clew_catalog::Catalog::rebuild_with_cache(
                &data.catalog_dir(),
                &ledger,
                crate::PROJECTION_CACHE_BYTES,
                &|done, _| pb.set_position(done),
            )?;
            pb.finish_and_clear();
            eprintln!(
                "rebuilt the catalogue from {} leaves in {:.1} s",
                catalog.applied()?,
                started.elapsed().as_secs_f64()
            );
        }
        CatalogCommand::Search {
            dir,
            text,
            filters,
            recent,
            limit,
            cursor,
            researcher,
            grants,
        } => {
            let data = dir.data();
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            let mut req = clew_catalog::SearchRequest {
                text,
                sort: if recent {
                    clew_catalog::SortOrder::Recency
                } else {
                    clew_catalog::SortOrder::Relevance
                },
                limit,
                cursor,
                visibility: clew_catalog::Visibility {
                    all: !researcher,
                    granted_datasets: grants,
                },
                ..Default::default()
            };
            for f in filters {
                let (k, v) = f
                    .split_once('=')
                    .with_context(|| format!("filter {f:?} is not facet=value"))?;
                req.filters
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_string());
            }
            println!("{}", serde_json::to_string_pretty(&catalog.search(&req)?)?);
        }
        CatalogCommand::Lineage {
            dir,
            subject,
            down,
            depth,
            as_of,
        } => {
            let data = dir.data();
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            let direction = if down {
                clew_catalog::Direction::Downstream
            } else {
                clew_catalog::Direction::Upstream
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.lineage(&subject, direction, depth, as_of)?)?
            );
        }
        CatalogCommand::Impact {
            dir,
            subject,
            as_of,
        } => {
            let data = dir.data();
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.impact(&subject, as_of)?)?
            );
        }
        CatalogCommand::History { dir, subject } => {
            let data = dir.data();
            let catalog = data.catalog(&data.open(None, LedgerOptions::default())?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&catalog.history(&subject)?)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
