//! Witnessing the ledger: every new checkpoint of the node's ledger sent
//! to the configured witnesses (`clew_witness::feed`, one task each), their
//! cosignatures stored in the ledger and so appended wherever the node
//! serves the checkpoint.

use std::sync::Arc;

use clew_node::Node;
use clew_witness::{WitnessEndpoint, WitnessStats, WitnessedLog};
use tlog_tiles::Hash;

/// The node's ledger as the feeder sees it.
struct LedgerLog(Arc<Node>);

impl WitnessedLog for LedgerLog {
    fn latest(&self) -> Result<(u64, Vec<u8>), String> {
        // The ledger's own note, without cosignatures.
        let cp = self
            .0
            .ledger()
            .latest_checkpoint()
            .map_err(|e| e.to_string())?;
        Ok((cp.size, cp.note))
    }
    fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, String> {
        self.0
            .ledger()
            .consistency_proof(old, new)
            .map_err(|e| e.to_string())
    }
    fn store_cosignature(&self, size: u64, witness: &str, line: &[u8]) -> Result<(), String> {
        self.0
            .ledger()
            .store_cosignature(size, witness, line)
            .map_err(|e| e.to_string())
    }
    fn last_cosigned(&self, witness: &str) -> Result<Option<u64>, String> {
        self.0
            .ledger()
            .last_cosigned_by(witness)
            .map_err(|e| e.to_string())
    }
}

/// The witnesses of a deployment, and how many make a checkpoint witnessed.
#[derive(Debug, Clone, Default)]
pub struct Witnesses {
    pub endpoints: Vec<WitnessEndpoint>,
    pub quorum: usize,
}

/// The running feeders.
pub struct Witnessing {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts one feeder per witness, and the task keeping the witness metrics
/// (none configured: nothing runs).
pub fn start(node: Arc<Node>, witnesses: Witnesses) -> Witnessing {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if witnesses.endpoints.is_empty() {
        return Witnessing { stop, tasks };
    }
    let log: Arc<dyn WitnessedLog> = Arc::new(LedgerLog(node.clone()));
    let mut stats = Vec::new();
    for w in witnesses.endpoints {
        let s = Arc::new(WitnessStats::default());
        stats.push((w.name().to_string(), s.clone()));
        tracing::info!(witness = %w.name(), url = %w.url, "sending checkpoints to the witness");
        tasks.push(tokio::spawn(clew_witness::feed(
            log.clone(),
            w,
            s,
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(keep_metrics(
        node,
        stats,
        witnesses.quorum,
        rx,
    )));
    Witnessing { stop, tasks }
}

/// Mirrors the feeders' counters into the node's metrics and works out the
/// latest witnessed checkpoint: the largest size a witness last cosigned for
/// which a quorum of cosignatures is stored.
async fn keep_metrics(
    node: Arc<Node>,
    stats: Vec<(String, Arc<WitnessStats>)>,
    quorum: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let m = node.metrics().clone();
    m.witnesses.set(stats.len() as i64);
    m.witness_quorum.set(quorum as i64);
    let mut seen: Vec<[u64; 4]> = vec![[0; 4]; stats.len()];
    loop {
        let mut sizes = Vec::new();
        for ((name, s), last) in stats.iter().zip(seen.iter_mut()) {
            let size = s.cosigned_size.load(Relaxed);
            sizes.push(size);
            m.witness_cosigned_size
                .with_label_values(&[name.as_str()])
                .set(size as i64);
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
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.dedup();
        let witnessed = sizes
            .into_iter()
            .find(|&size| {
                size > 0
                    && node
                        .ledger()
                        .cosignatures(size)
                        .is_ok_and(|c| c.len() >= quorum)
            })
            .unwrap_or(0);
        m.witnessed_tree_size.set(witnessed as i64);
        let latest = node
            .ledger()
            .latest_checkpoint()
            .map(|c| c.size)
            .unwrap_or(0);
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
