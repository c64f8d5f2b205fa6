//! What the local sequencer and the replica share: bringing the catalogue up
//! to the ledger at start, pacing search commits, and publishing how far the
//! catalogue has applied.

use std::time::{Duration, Instant};

use clew_catalog::{Catalog, CatalogError, SearchBacklog};
use clew_ledger::Ledger;
use tokio::sync::watch;

use crate::{Applied, Metrics};

/// Under load, how long applied leaves may share one search commit on the
/// node that sequences: each tantivy commit starts an indexing thread and
/// writes a segment (eight files, each registered with an fsync) that merges
/// later rewrite, a fixed cost however few documents it holds. At 1,000
/// events a second, 200 ms rather than 100 ms took ~15% off each event's
/// server CPU (`clew-bench api`); idle, a submission is still committed at
/// once.
pub(crate) const SEARCH_COMMIT_EVERY: Duration = Duration::from_millis(200);

/// The same on a read replica: what it is measured on is how soon an event
/// on the bus is searchable there (`clew-bench kafka`), so it commits twice
/// as often.
pub(crate) const REPLICA_SEARCH_COMMIT_EVERY: Duration = Duration::from_millis(100);

/// What the process holds while a node brings its catalogue up to the
/// ledger at start (see [`while_catching_up`]); dropped once it has.
pub type CatchUpGuard = Box<dyn std::any::Any>;

/// The process's hook for a catch-up at start, if it set one.
static CATCH_UP_HOOK: std::sync::OnceLock<fn() -> CatchUpGuard> = std::sync::OnceLock::new();

/// Sets what every node of this process calls before it brings its
/// catalogue up to the ledger at start, holding what it returns until the
/// catch-up ends: a process-wide setting for work of that shape, such as
/// the allocator's (the `clew` binary keeps freed memory for a while,
/// since each chunk of a long catch-up frees what the chunk before it
/// allocated). The first call wins; false when one was already set.
pub fn while_catching_up(hook: fn() -> CatchUpGuard) -> bool {
    CATCH_UP_HOOK.set(hook).is_ok()
}

/// Brings the catalogue up to the ledger (or mirror) before a node serves;
/// false (logged) when it cannot, and the node stays [`Applied::CatchingUp`].
pub(crate) fn catch_up_at_start(catalog: &Catalog, ledger: &Ledger) -> bool {
    let started = Instant::now();
    let guard = CATCH_UP_HOOK.get().map(|hook| hook());
    let caught_up = catalog.catch_up(ledger, &|_, _| {});
    drop(guard);
    match caught_up {
        Ok(n) => {
            tracing::info!(
                leaves = n,
                seconds = started.elapsed().as_secs_f64(),
                mirror = ledger.is_mirror(),
                "catalogue caught up with the ledger"
            );
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "catalogue could not catch up; not ready");
            false
        }
    }
}

/// Search documents applied but not yet committed, and when the last commit was.
pub(crate) struct SearchPacer {
    pub backlog: SearchBacklog,
    last_commit: Instant,
    every: Duration,
}

impl SearchPacer {
    /// Commits at most once per `every` under load.
    pub fn new(every: Duration) -> Self {
        Self {
            backlog: SearchBacklog::default(),
            last_commit: Instant::now(),
            every,
        }
    }

    /// Whether a commit is due: the pacing interval has passed.
    pub fn due(&self) -> bool {
        self.last_commit.elapsed() >= self.every
    }

    /// How long until a commit is due.
    pub fn wait(&self) -> Duration {
        self.every.saturating_sub(self.last_commit.elapsed())
    }

    /// Commits what is pending (logged on failure) and restarts the interval.
    pub fn commit(&mut self, catalog: &Catalog) -> Result<(), CatalogError> {
        let result = catalog.commit_search(&mut self.backlog);
        if let Err(e) = &result {
            tracing::error!(error = %e, "committing the search index failed");
        }
        self.last_commit = Instant::now();
        result
    }
}

/// Publishes the applied size to watchers and metrics.
pub(crate) fn publish(applied: &watch::Sender<Applied>, metrics: &Metrics, size: u64) {
    metrics.tree_size.set(size as i64);
    metrics.applied.set(size as i64);
    applied.send_replace(Applied::Ready(size));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use clew_catalog::Catalog;
    use clew_events::ProducerKey;
    use clew_ledger::{Ledger, LedgerOptions};

    /// Hooks called and guards dropped (this test is the binary's only
    /// setter of the process-wide hook).
    static CALLED: AtomicU64 = AtomicU64::new(0);
    static DROPPED: AtomicU64 = AtomicU64::new(0);

    struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_catch_up_at_start_holds_the_process_hook_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let key = ProducerKey::generate("test.clew.example/ledger")
            .unwrap()
            .to_signer_text();
        let admin = ProducerKey::generate("admin").unwrap();
        let ledger = Ledger::create(
            &dir.path().join("ledger"),
            &key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog")).unwrap();
        assert!(super::while_catching_up(|| {
            CALLED.fetch_add(1, Ordering::SeqCst);
            Box::new(Guard)
        }));
        assert!(
            !super::while_catching_up(|| Box::new(())),
            "a second hook replaced the first"
        );
        assert!(super::catch_up_at_start(&catalog, &ledger));
        assert!(ledger.size() > 0);
        assert_eq!(catalog.applied().unwrap(), ledger.size());
        assert_eq!(CALLED.load(Ordering::SeqCst), 1, "the hook was not called");
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            1,
            "what the hook returned outlived the catch-up"
        );
    }
}
