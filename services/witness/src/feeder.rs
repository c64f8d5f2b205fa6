//! The log's side: every new checkpoint goes to each configured witness
//! (C2SP tlog-witness), one task per witness, apart from sequencing — a
//! slow or dead witness holds nothing up, loses nothing, and is sent the
//! latest checkpoint (with a proof from the size it last cosigned) when it
//! answers again. A 409 is answered by adopting the size the witness gives
//! and asking again; every cosignature is verified against the witness's key
//! before it is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signed_note::{Signature, Verifier};
use tlog_tiles::tlog::Hash;

use crate::cosignature::CosignatureVerifier;
use crate::protocol::AddCheckpoint;
use crate::WitnessError;

/// Shortest time between two checkpoints sent to one witness.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// What the feeder needs of the log it feeds (the ledger, in Clew).
pub trait WitnessedLog: Send + Sync + 'static {
    /// The latest signed checkpoint: its size and note.
    fn latest(&self) -> Result<(u64, Vec<u8>), String>;
    /// RFC 6962 consistency proof from `old` to `new` leaves.
    fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, String>;
    /// Stores `witness`'s verified cosignature line over the checkpoint of `size`.
    fn store_cosignature(&self, size: u64, witness: &str, line: &[u8]) -> Result<(), String>;
    /// The largest size `witness` is known to have cosigned (from stored cosignatures).
    fn last_cosigned(&self, witness: &str) -> Result<Option<u64>, String>;
    /// Changes whenever the log signs a new checkpoint (its value: the
    /// size), so a feeder waits for news instead of asking again and again.
    fn checkpoints(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// One witness to feed.
#[derive(Clone, Debug)]
pub struct WitnessEndpoint {
    /// Its key (whose name is the witness's name).
    pub verifier: CosignatureVerifier,
    /// Its submission prefix: requests go to `<url>/add-checkpoint`.
    pub url: String,
}

impl WitnessEndpoint {
    /// Parses `<vkey>@<url>` (the form `--witness` takes).
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let (vkey, url) = text
            .trim()
            .split_once('@')
            .ok_or_else(|| WitnessError::Key(format!("{text:?} is not <witness vkey>@<url>")))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(WitnessError::Key(format!(
                "witness URL {url:?} is not http:// or https://"
            )));
        }
        Ok(WitnessEndpoint {
            verifier: CosignatureVerifier::from_vkey(vkey)?,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    pub fn name(&self) -> &str {
        self.verifier.name()
    }
}

/// Counters for one witness (exported as metrics by the caller).
#[derive(Debug, Default)]
pub struct WitnessStats {
    /// Size of the latest checkpoint this witness cosigned (0: none yet).
    pub cosigned_size: AtomicU64,
    pub cosignatures: AtomicU64,
    pub conflicts: AtomicU64,
    /// Failed requests (no answer, time-out, refusal, bad cosignature).
    pub failures: AtomicU64,
    /// Refusals that mean the log's history differs from what the witness cosigned.
    pub forks: AtomicU64,
}

/// What one request came to.
enum Answer {
    Cosigned(Vec<u8>),
    Conflict(u64),
    Failed(String),
}

/// Feeds one witness until `stop` says so.
pub async fn feed(
    log: Arc<dyn WitnessedLog>,
    witness: WitnessEndpoint,
    stats: Arc<WitnessStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(witness = %witness.name(), "no HTTP client: {e}");
            return;
        }
    };
    let name = witness.name().to_string();
    let mut known: u64 = log.last_cosigned(&name).ok().flatten().unwrap_or(0);
    stats.cosigned_size.store(known, Ordering::Relaxed);
    let mut backoff = Duration::from_millis(250);
    let mut repeated_conflict: Option<u64> = None;
    let mut last_sent: Option<tokio::time::Instant> = None;
    let mut news = log.checkpoints();
    loop {
        if *stop.borrow() {
            return;
        }
        // Read after marking: a checkpoint signed from here on wakes the
        // wait below, so none is missed between the read and the wait.
        news.mark_unchanged();
        let (size, note) = match log.latest() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(witness = %name, "reading the latest checkpoint: {e}");
                (known, Vec::new())
            }
        };
        if note.is_empty() || (size == known && repeated_conflict.is_none() && known > 0) {
            // Nothing new: wait for the next checkpoint (or the stop). The
            // time-out only guards against a notification that never comes.
            tokio::select! {
                _ = news.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        // At most one checkpoint per MIN_INTERVAL to each witness: under
        // load the latest one goes (a witness needs no intermediate ones),
        // and an idle log's next checkpoint goes at once.
        if let Some(at) = last_sent {
            if repeated_conflict.is_none() && at.elapsed() < MIN_INTERVAL {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + MIN_INTERVAL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        last_sent = Some(tokio::time::Instant::now());
        let old = known.min(size);
        let proof = if old == 0 || old == size {
            Ok(Vec::new())
        } else {
            log.consistency_proof(old, size)
        };
        let answer = match proof {
            Ok(proof) => {
                let req = AddCheckpoint {
                    old_size: old,
                    proof,
                    checkpoint: note.clone(),
                };
                submit(&http, &witness, &req).await
            }
            Err(e) => Answer::Failed(format!("consistency proof from {old} to {size}: {e}")),
        };
        match answer {
            Answer::Cosigned(line) => {
                if let Err(e) = log.store_cosignature(size, &name, &line) {
                    tracing::warn!(witness = %name, size, "storing a cosignature: {e}");
                }
                known = size;
                repeated_conflict = None;
                backoff = Duration::from_millis(250);
                stats.cosigned_size.store(size, Ordering::Relaxed);
                stats.cosignatures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(witness = %name, size, "cosigned");
            }
            Answer::Conflict(theirs) => {
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
                if theirs > size {
                    stats.forks.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        witness = %name,
                        witness_size = theirs,
                        ledger_size = size,
                        "the witness has cosigned a larger tree than this ledger holds: this ledger was rolled back or forked"
                    );
                    pause(&mut stop, &mut backoff).await;
                } else if repeated_conflict == Some(theirs) && theirs == old {
                    // Asked from the size it gave and refused again: at the
                    // same size it holds another root hash, or our history
                    // does not extend its.
                    stats.forks.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        witness = %name,
                        witness_size = theirs,
                        ledger_size = size,
                        "the witness refuses this ledger's history from the size it cosigned: a fork"
                    );
                    pause(&mut stop, &mut backoff).await;
                } else {
                    tracing::info!(witness = %name, witness_size = theirs, "adopting the size the witness last cosigned");
                    known = theirs;
                    repeated_conflict = Some(theirs);
                }
            }
            Answer::Failed(why) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(witness = %name, size, "not cosigned: {why}; retrying in {} ms", backoff.as_millis());
                pause(&mut stop, &mut backoff).await;
            }
        }
    }
}

async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, backoff: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(30));
}

async fn submit(http: &reqwest::Client, witness: &WitnessEndpoint, req: &AddCheckpoint) -> Answer {
    let url = format!("{}/add-checkpoint", witness.url);
    let resp = match http.post(&url).body(req.to_bytes()).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("no answer from {url}: {e}")),
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) if b.len() <= 64 * 1024 => b,
        Ok(_) => return Answer::Failed(format!("{url} answered more than 64 KiB")),
        Err(e) => return Answer::Failed(format!("{url}: the answer broke off: {e}")),
    };
    match status {
        200 => match verified_line(witness, &req.checkpoint, &body) {
            Ok(line) => Answer::Cosigned(line),
            Err(e) => Answer::Failed(format!("{url} answered 200 but {e}")),
        },
        // tlog-witness: the body is the size last cosigned.
        409 => match std::str::from_utf8(&body)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            Some(n) => Answer::Conflict(n),
            None => Answer::Failed(format!("{url} answered 409 without a size")),
        },
        // Anything else is "not cosigned" (some witnesses answer an unknown
        // origin with 403 or 500 rather than 404).
        s => Answer::Failed(format!(
            "{url} answered {s}: {}",
            String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        )),
    }
}

/// The witness's own cosignature line among those answered, verified over
/// the checkpoint's text.
fn verified_line(
    witness: &WitnessEndpoint,
    checkpoint: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let text = note_text(checkpoint).ok_or("the checkpoint is not a signed note")?;
    for line in body.split_inclusive(|b| *b == b'\n') {
        let Ok(sig) = Signature::from_bytes(line.strip_suffix(b"\n").unwrap_or(line)) else {
            continue;
        };
        if sig.name() == witness.verifier.name() && sig.id() == witness.verifier.key_id() {
            if witness.verifier.verify(text, sig.signature()) {
                return Ok(sig.to_bytes());
            }
            return Err("its cosignature does not verify with its key".into());
        }
    }
    Err("no cosignature by its key was in the answer".into())
}

/// The text of a signed note (up to and including the line before the blank line).
pub fn note_text(note: &[u8]) -> Option<&[u8]> {
    let split = note.windows(2).position(|w| w == b"\n\n")?;
    Some(&note[..split + 1])
}
