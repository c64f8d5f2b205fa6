//! Blob stores: copying a store's manifests into another (`clew blobs sync`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clew_blobs::{BlobError, BlobStore};
use futures_util::StreamExt;

use crate::datadir::DataDir;

use super::args::*;

/// Runs one command of this family.
pub(super) fn run(command: BlobsCommand) -> Result<ExitCode> {
    let BlobsCommand::Blobs {
        action:
            BlobsAction::Sync {
                data_dir,
                from,
                from_ca,
                to,
                to_ca,
            },
    } = command;
    let data = DataDir::new(&data_dir);
    let source = match &from {
        Some(url) => BlobStore::open(url, from_ca.as_deref())
            .with_context(|| format!("opening the store to copy from, {url}"))?,
        None => data.local_manifest_store()?,
    };
    let target = BlobStore::open(&to, to_ca.as_deref())
        .with_context(|| format!("opening the store to copy into, {to}"))?;
    // Copies pass through a spool file (verified before they are written):
    // the data directory's spool, or a private temporary one.
    let spool = if from.is_none() {
        data.spool_dir()
    } else {
        std::env::temp_dir().join(format!("clew-blobs-sync-{}", std::process::id()))
    };
    std::fs::create_dir_all(&spool).with_context(|| format!("creating {}", spool.display()))?;
    let summary = clew_blobs::block_on(sync(source.clone(), target.clone(), spool.clone()));
    if from.is_some() {
        let _ = std::fs::remove_dir_all(&spool);
    }
    let summary = summary?;
    println!(
        "copied {} manifests ({} bytes) from {} to {}; {} were there already; {} could not be copied",
        summary.copied,
        summary.bytes,
        source.location(),
        target.location(),
        summary.present,
        summary.refused.len()
    );
    if summary.refused.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for (digest, why) in &summary.refused {
            eprintln!("not copied: {digest}: {why}");
        }
        Ok(ExitCode::from(2))
    }
}

/// What a sync did.
#[derive(Debug, Default)]
struct SyncSummary {
    copied: u64,
    bytes: u64,
    present: u64,
    /// Objects of the source that are not what their key says (altered or
    /// unreadable): reported, never copied.
    refused: Vec<(String, String)>,
}

/// Copies every object of `source` that `target` lacks, a few at a time, in
/// key order. A store that stops answering ends the run with its error
/// (what was copied stays copied; a re-run resumes); an object that fails
/// its digest is listed and skipped.
async fn sync(
    source: BlobStore,
    target: BlobStore,
    spool: std::path::PathBuf,
) -> Result<SyncSummary> {
    let digests = source.digests().await?;
    let pb = crate::progress_bar(digests.len() as u64, "copying manifests");
    let mut copies = futures_util::stream::iter(digests)
        .map(|digest| {
            let (source, target, spool) = (source.clone(), target.clone(), spool.clone());
            async move {
                let copied = source.copy_to(&digest, &target, &spool).await;
                (digest, copied)
            }
        })
        .buffer_unordered(4);
    let mut summary = SyncSummary::default();
    while let Some((digest, result)) = copies.next().await {
        match result {
            Ok(stored) if stored.created => {
                summary.copied += 1;
                summary.bytes += stored.size;
            }
            Ok(_) => summary.present += 1,
            Err(e @ (BlobError::DigestMismatch { .. } | BlobError::Conflict { .. })) => {
                summary.refused.push((digest, e.to_string()))
            }
            Err(e) => {
                pb.abandon();
                return Err(e).with_context(|| {
                    format!(
                        "copying {digest} stopped after {} copies (run it again to resume)",
                        summary.copied
                    )
                });
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(summary)
}
