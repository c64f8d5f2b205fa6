//! `clew monitor`: a partner's monitor of a remote Clew. It follows the
//! ledger's checkpoints over HTTP, checks each one's signature with the
//! ledger's key and its witness quorum, and proves it consistent with the
//! last checkpoint it saw — a proof it computes itself from the hash tiles
//! (C2SP tlog-tiles), authenticated against the new checkpoint — so a log
//! that rewrote history, or shows this monitor a different one than before,
//! is caught. The last checkpoint seen is kept on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clew_ledger::{SignedCheckpoint, TileRef};
use tlog_tiles::{check_tree, prove_tree, Hash, Tile, TileHashReader, TileReader};

/// What the monitor was told to follow.
pub struct MonitorConfig {
    /// The Clew server's base URL.
    pub url: String,
    /// Bearer token (hash tiles are served to authenticated callers).
    pub token: String,
    /// The ledger's verifier key text.
    pub vkey: String,
    /// Witnesses required of each checkpoint (may be empty).
    pub witnesses: clew_witness::WitnessPolicy,
    /// Where the last checkpoint seen is kept.
    pub state: PathBuf,
}

/// What one look at the log found.
#[derive(Debug)]
pub enum Observation {
    /// The first checkpoint seen (nothing to be consistent with yet).
    First { size: u64 },
    /// The same checkpoint as last time.
    Unchanged { size: u64 },
    /// A larger tree, proven to extend the last one.
    Grown { from: u64, to: u64 },
    /// Two checkpoints that cannot both be true of one append-only log.
    Fork {
        seen: String,
        now: String,
        why: String,
    },
}

/// Counters the monitor exports.
#[derive(Debug, Default)]
pub struct MonitorStats {
    pub tree_size: AtomicU64,
    pub checks: AtomicU64,
    pub forks: AtomicU64,
    /// 1 when the latest checkpoint met the witness quorum.
    pub witnessed: AtomicU64,
}

struct HttpTiles<'a> {
    rt: &'a tokio::runtime::Runtime,
    http: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
}

impl TileReader for HttpTiles<'_> {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(tiles.len());
        for t in tiles {
            let path = TileRef::Hashes {
                level: t.level(),
                index: t.level_index(),
                width: t.width(),
            }
            .path();
            let url = format!("{}/{path}", self.url);
            let bytes = self
                .rt
                .block_on(async {
                    let resp = self.http.get(&url).bearer_auth(self.token).send().await?;
                    let resp = resp.error_for_status()?;
                    resp.bytes().await
                })
                .map_err(|e| tlog_tiles::Error::InvalidInput(format!("{url}: {e}")))?;
            out.push(bytes.to_vec());
        }
        Ok(out)
    }
    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

/// The monitor of one remote ledger.
pub struct Monitor {
    config: MonitorConfig,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    pub stats: Arc<MonitorStats>,
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Result<Self> {
        Ok(Monitor {
            config,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            stats: Arc::default(),
        })
    }

    fn fetch_checkpoint(&self) -> Result<SignedCheckpoint> {
        let url = format!("{}/checkpoint", self.config.url);
        let text = self.rt.block_on(async {
            let resp = self
                .http
                .get(&url)
                .bearer_auth(&self.config.token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            if !status.is_success() {
                bail!("GET {url}: {status}");
            }
            Ok(resp.bytes().await?)
        })?;
        clew_ledger::checkpoint::parse(&text, &self.config.vkey)
            .with_context(|| format!("the checkpoint {url} served"))
    }

    fn last_seen(&self) -> Result<Option<SignedCheckpoint>> {
        match std::fs::read(&self.config.state) {
            Ok(note) => Ok(Some(
                clew_ledger::checkpoint::parse(&note, &self.config.vkey).with_context(|| {
                    format!(
                        "the last checkpoint kept in {}",
                        self.config.state.display()
                    )
                })?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.config.state.display())),
        }
    }

    fn keep(&self, cp: &SignedCheckpoint) -> Result<()> {
        write_atomically(&self.config.state, &cp.note)
    }

    /// Looks once: fetch, verify, compare with the last seen, keep.
    pub fn check_once(&self) -> Result<Observation> {
        let now = self.fetch_checkpoint()?;
        self.stats.checks.fetch_add(1, Ordering::Relaxed);
        let witnessed = if self.config.witnesses.is_empty() {
            true
        } else {
            match self.config.witnesses.check(&now.note) {
                Ok(_) => true,
                Err(why) => {
                    tracing::warn!(size = now.size, "checkpoint not witnessed: {why}");
                    false
                }
            }
        };
        self.stats
            .witnessed
            .store(u64::from(witnessed), Ordering::Relaxed);
        let Some(seen) = self.last_seen()? else {
            self.keep(&now)?;
            self.stats.tree_size.store(now.size, Ordering::Relaxed);
            return Ok(Observation::First { size: now.size });
        };
        let fork = |why: String| {
            self.stats.forks.fetch_add(1, Ordering::Relaxed);
            Observation::Fork {
                seen: seen.note_text(),
                now: now.note_text(),
                why,
            }
        };
        if now.size < seen.size {
            return Ok(fork(format!(
                "the log shrank from {} to {} leaves",
                seen.size, now.size
            )));
        }
        if now.size == seen.size {
            if now.root != seen.root {
                return Ok(fork(format!(
                    "two different root hashes for the tree of {} leaves",
                    now.size
                )));
            }
            self.stats.tree_size.store(now.size, Ordering::Relaxed);
            return Ok(Observation::Unchanged { size: now.size });
        }
        // The proof comes from tiles authenticated against the new
        // checkpoint, so the server cannot choose it (RFC 6962 2.1.2).
        let tiles = HttpTiles {
            rt: &self.rt,
            http: &self.http,
            url: &self.config.url,
            token: &self.config.token,
        };
        let reader = TileHashReader::new(now.size, now.root, &tiles);
        let proof: Vec<Hash> = prove_tree(now.size, seen.size, &reader)
            .map_err(|e| anyhow::anyhow!("computing the consistency proof from the tiles: {e}"))?;
        if check_tree(&proof, now.size, now.root, seen.size, seen.root).is_err() {
            return Ok(fork(format!(
                "the tree of {} leaves does not extend the tree of {} leaves seen before",
                now.size, seen.size
            )));
        }
        self.keep(&now)?;
        self.stats.tree_size.store(now.size, Ordering::Relaxed);
        Ok(Observation::Grown {
            from: seen.size,
            to: now.size,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `clew_monitor_*` metrics in the Prometheus text format.
pub fn render_metrics(s: &MonitorStats) -> String {
    format!(
        "# HELP clew_monitor_tree_size Size of the latest checkpoint proven consistent\n# TYPE clew_monitor_tree_size gauge\nclew_monitor_tree_size {}\n\
         # HELP clew_monitor_checks_total Checkpoints fetched and checked\n# TYPE clew_monitor_checks_total counter\nclew_monitor_checks_total {}\n\
         # HELP clew_monitor_forks_total Checkpoints inconsistent with the last one seen\n# TYPE clew_monitor_forks_total counter\nclew_monitor_forks_total {}\n\
         # HELP clew_monitor_witnessed Whether the latest checkpoint met the witness quorum\n# TYPE clew_monitor_witnessed gauge\nclew_monitor_witnessed {}\n",
        s.tree_size.load(Ordering::Relaxed),
        s.checks.load(Ordering::Relaxed),
        s.forks.load(Ordering::Relaxed),
        s.witnessed.load(Ordering::Relaxed),
    )
}
