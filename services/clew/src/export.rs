//! `clew tiles export`: the ledger as a static C2SP tlog-tiles mirror
//! (checkpoint, hash tiles, entry bundles), plus every historical checkpoint
//! under `checkpoints/<size>` so a mirror can prove consistency between them.

use std::path::Path;

use anyhow::{Context, Result};
use clew_ledger::{Ledger, TileRef};

/// Every tile of a tree of `size` leaves: full tiles and the right-edge partial ones.
pub fn tiles_for(size: u64) -> Vec<TileRef> {
    let mut out = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256) as u32;
        out.push(TileRef::Entries { index: n, width });
    }
    let mut level = 0u8;
    loop {
        let level_size = size >> (8 * u32::from(level));
        if level_size == 0 || level > 5 {
            break;
        }
        for n in 0..level_size.div_ceil(256) {
            let width = (level_size - n * 256).min(256) as u32;
            out.push(TileRef::Hashes {
                level,
                index: n,
                width,
            });
        }
        level += 1;
    }
    out
}

/// Writes the mirror; returns the number of files written.
pub fn export(ledger: &Ledger, out: &Path, progress: &dyn Fn(u64, u64)) -> Result<u64> {
    let cp = ledger.latest_checkpoint()?;
    let tiles = tiles_for(cp.size);
    let total = tiles.len() as u64;
    let mut written = 0;
    for (i, tile) in tiles.into_iter().enumerate() {
        let path = out.join(tile.path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, ledger.read_tile(tile)?)
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        progress(i as u64 + 1, total);
    }
    std::fs::create_dir_all(out.join("checkpoints"))?;
    for size in ledger.checkpoint_sizes()? {
        if let Some(c) = ledger.checkpoint_at(size)? {
            std::fs::write(out.join("checkpoints").join(size.to_string()), &c.note)?;
            written += 1;
        }
    }
    std::fs::write(out.join("checkpoint"), &cp.note)?;
    Ok(written + 1)
}
