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

/// The running feeders.
pub struct Witnessing {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Per witness, by name.
    pub stats: Vec<(String, Arc<WitnessStats>)>,
}

/// Starts one feeder per witness (none: nothing runs).
pub fn start(node: Arc<Node>, witnesses: Vec<WitnessEndpoint>) -> Witnessing {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let log: Arc<dyn WitnessedLog> = Arc::new(LedgerLog(node));
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    for w in witnesses {
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
    Witnessing { stop, tasks, stats }
}

impl Witnessing {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
