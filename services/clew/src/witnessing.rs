//! Witnessing the ledger: every new checkpoint sent to the configured
//! witnesses (`clew_witness::feed`, one task each) by whoever signs it — the
//! embedded node (`clew serve`) or the Kafka sequencer (`clew ledger`) —
//! their cosignatures stored in the ledger and so appended wherever the
//! checkpoint is served (and, on Kafka, published on the checkpoint topic
//! for the replicas). A replica feeds nobody: it keeps the cosignatures of
//! the witnesses it knows from the published checkpoints
//! ([`cosignature_filter`]) and reports the quorum like the sequencer.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use clew_ledger::Ledger;
use clew_node::Metrics;
use clew_witness::{WitnessEndpoint, WitnessPolicy, WitnessStats, WitnessedLog};
use tlog_tiles::Hash;

/// The ledger as the feeder sees it.
struct LedgerLog {
    ledger: Arc<Ledger>,
    /// The latest checkpoint read, by size (parsed and its signature checked
    /// once per new checkpoint, however often the feeders ask).
    cached: Mutex<Option<(u64, Vec<u8>)>>,
}

impl WitnessedLog for LedgerLog {
    fn latest(&self) -> Result<(u64, Vec<u8>), String> {
        let size = self.ledger.size();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, note)) = cached.as_ref().filter(|(at, _)| *at >= size) {
            return Ok((*at, note.clone()));
        }
        // The ledger's own note, without cosignatures.
        let cp = self.ledger.latest_checkpoint().map_err(|e| e.to_string())?;
        *cached = Some((cp.size, cp.note.clone()));
        Ok((cp.size, cp.note))
    }
    fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, String> {
        self.ledger
            .consistency_proof(old, new)
            .map_err(|e| e.to_string())
    }
    fn store_cosignature(&self, size: u64, witness: &str, line: &[u8]) -> Result<(), String> {
        self.ledger
            .store_cosignature(size, witness, line)
            .map_err(|e| e.to_string())
    }
    fn last_cosigned(&self, witness: &str) -> Result<Option<u64>, String> {
        self.ledger
            .last_cosigned_by(witness)
            .map_err(|e| e.to_string())
    }
    fn checkpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ledger.watch_checkpoints()
    }
}

/// The witnesses of a deployment, and how many make a checkpoint witnessed.
#[derive(Debug, Clone, Default)]
pub struct Witnesses {
    pub endpoints: Vec<WitnessEndpoint>,
    pub quorum: usize,
}

/// What a serving node does about witnesses.
pub enum WitnessRole {
    /// It signs checkpoints: it sends them to these witnesses.
    Feed(Witnesses),
    /// It mirrors them (a replica): it keeps the cosignatures of these
    /// witnesses that the published checkpoints carry.
    Follow(WitnessPolicy),
}

impl WitnessRole {
    /// Starts what the role needs for `node`.
    pub fn start(self, node: &clew_node::Node) -> Witnessing {
        let metrics = node.metrics().clone();
        match self {
            WitnessRole::Feed(w) => start(node.shared_ledger(), w, metrics),
            WitnessRole::Follow(p) => follow(node.shared_ledger(), &p, metrics),
        }
    }
}

/// The running feeders (or, on a replica, the quorum's bookkeeping).
pub struct Witnessing {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts one feeder per witness over `ledger`, and the task keeping the
/// witness figures in `metrics` (no witnesses: nothing runs). Call inside a
/// tokio runtime.
pub fn start(ledger: Arc<Ledger>, witnesses: Witnesses, metrics: Metrics) -> Witnessing {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if witnesses.endpoints.is_empty() {
        return Witnessing { stop, tasks };
    }
    let log: Arc<dyn WitnessedLog> = Arc::new(LedgerLog {
        ledger: ledger.clone(),
        cached: Mutex::new(None),
    });
    let mut stats = Vec::new();
    for w in witnesses.endpoints {
        let s = Arc::new(WitnessStats::default());
        stats.push((w.name().to_string(), Some(s.clone())));
        tracing::info!(witness = %w.name(), url = %w.url, "sending checkpoints to the witness");
        tasks.push(tokio::spawn(clew_witness::feed(
            log.clone(),
            w,
            s,
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(keep_metrics(
        ledger,
        metrics,
        stats,
        witnesses.quorum,
        rx,
    )));
    Witnessing { stop, tasks }
}

/// On a replica: keeps the witness figures in `metrics` from the
/// cosignatures it stored of the `policy`'s witnesses (none: nothing runs).
pub fn follow(ledger: Arc<Ledger>, policy: &WitnessPolicy, metrics: Metrics) -> Witnessing {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let names = policy.names();
    if names.is_empty() {
        return Witnessing { stop, tasks };
    }
    let names = names.into_iter().map(|n| (n, None)).collect();
    tasks.push(tokio::spawn(keep_metrics(
        ledger,
        metrics,
        names,
        policy.quorum(),
        rx,
    )));
    Witnessing { stop, tasks }
}

/// What a replica keeps of the cosignatures published checkpoints carry:
/// the lines by `policy`'s witnesses that verify (none configured: none).
pub fn cosignature_filter(policy: WitnessPolicy) -> Option<clew_node::CosignatureFilter> {
    if policy.names().is_empty() {
        return None;
    }
    Some(Arc::new(move |note: &[u8]| policy.verified_lines(note)))
}

/// The latest witnessed checkpoint: the largest of `last_cosigned` (each of
/// `names`' last cosigned size) for which at least `quorum` of their
/// cosignatures are stored.
fn witnessed_size(ledger: &Ledger, names: &[String], last_cosigned: &[u64], quorum: usize) -> u64 {
    let mut sizes = last_cosigned.to_vec();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    sizes
        .into_iter()
        .find(|&size| {
            size > 0
                && ledger
                    .cosignatures(size)
                    .is_ok_and(|c| c.iter().filter(|(w, _)| names.contains(w)).count() >= quorum)
        })
        .unwrap_or(0)
}

/// Mirrors the witnesses' figures into `m` every 250 ms: each witness's last
/// cosigned size, the feeders' request counts (where this process feeds), the
/// latest witnessed size and how far it lags the latest checkpoint.
async fn keep_metrics(
    ledger: Arc<Ledger>,
    m: Metrics,
    stats: Vec<(String, Option<Arc<WitnessStats>>)>,
    quorum: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    m.witnesses.set(stats.len() as i64);
    m.witness_quorum.set(quorum as i64);
    let names: Vec<String> = stats.iter().map(|(n, _)| n.clone()).collect();
    let mut seen: Vec<[u64; 4]> = vec![[0; 4]; stats.len()];
    let checkpoints = ledger.watch_checkpoints();
    loop {
        let mut last_cosigned = Vec::with_capacity(stats.len());
        for ((name, s), last) in stats.iter().zip(seen.iter_mut()) {
            let size = ledger.last_cosigned_by(name).ok().flatten().unwrap_or(0);
            last_cosigned.push(size);
            m.witness_cosigned_size
                .with_label_values(&[name.as_str()])
                .set(size as i64);
            let Some(s) = s else { continue };
            let now = [
                s.cosignatures.load(Relaxed),
                s.conflicts.load(Relaxed),
                s.failures.load(Relaxed),
                s.forks.load(Relaxed),
            ];
            for (i, outcome) in ["cosigned", "conflict", "failed", "fork"]
                .iter()
                .enumerate()
            {
                m.witness_requests
                    .with_label_values(&[name.as_str(), outcome])
                    .inc_by(now[i].saturating_sub(last[i]));
            }
            *last = now;
        }
        let witnessed = witnessed_size(&ledger, &names, &last_cosigned, quorum);
        m.witnessed_tree_size.set(witnessed as i64);
        let latest = *checkpoints.borrow();
        m.witness_lag_leaves
            .set(latest.saturating_sub(witnessed) as i64);
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Witnessing {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
