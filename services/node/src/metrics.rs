//! Prometheus metrics of a serving node (`GET /metrics`, text format 0.0.4).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the node exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events appended to the ledger through this node.
    pub sequenced: IntCounter,
    /// Submissions refused, by reason.
    pub rejected: IntCounterVec,
    /// Ledger tree size.
    pub tree_size: IntGauge,
    /// Leaves applied to the catalogue.
    pub applied: IntGauge,
    /// Time to sequence and project one batch.
    pub batch_seconds: Histogram,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route.
    pub http_seconds: HistogramVec,
    /// HTTP connections open (WebSockets included).
    pub http_connections_open: IntGauge,
    /// HTTP connections refused at the server's cap.
    pub http_connections_refused: IntCounter,
    /// HTTP connections closed because no request head arrived in time.
    pub http_header_timeouts: IntCounter,
    /// HTTP requests not received and answered in time (answered 408).
    pub http_request_timeouts: IntCounter,
    /// Idle HTTP connections closed to make room for a new one at the cap.
    pub http_idle_closed: IntCounter,
    /// HTTP connections closed because the client read nothing of what was
    /// sent to it in time.
    pub http_write_timeouts: IntCounter,
    /// GraphQL operations by type and outcome (`ok`, or the first error code).
    pub graphql_operations: IntCounterVec,
    /// Open subscriptions.
    pub subscriptions: IntGauge,
    /// WebSockets closed at `connection_init` because their principal held
    /// as many as it may.
    pub websockets_refused: IntCounter,
    /// Size of the latest checkpoint each witness cosigned, by witness.
    pub witness_cosigned_size: IntGaugeVec,
    /// Checkpoints sent to witnesses, by witness and outcome
    /// (cosigned, conflict, failed, fork).
    pub witness_requests: IntCounterVec,
    /// Size of the latest checkpoint cosigned by a quorum of the witnesses
    /// (0: none yet, or no witnesses configured).
    pub witnessed_tree_size: IntGauge,
    /// Leaves between the latest signed checkpoint and the latest witnessed one.
    pub witness_lag_leaves: IntGauge,
    /// The quorum, and the number of witnesses configured (0: none).
    pub witness_quorum: IntGauge,
    pub witnesses: IntGauge,
    /// Bytes the catalogue's resident lineage graph holds (it grows with
    /// the data: what a memory limit must allow per event).
    pub lineage_graph_bytes: IntGauge,
    /// Producer keys holding a table for the sequencer's signature check.
    pub signature_table_keys: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("clew".into()), None)?;
        let sequenced = IntCounter::new("events_sequenced_total", "Events appended to the ledger")?;
        let rejected = IntCounterVec::new(
            Opts::new("events_rejected_total", "Submissions refused, by reason"),
            &["reason"],
        )?;
        let tree_size = IntGauge::new("ledger_tree_size", "Leaves in the ledger")?;
        let applied = IntGauge::new("catalog_applied_leaves", "Leaves applied to the catalogue")?;
        let batch_seconds = Histogram::with_opts(HistogramOpts::new(
            "sequencer_batch_seconds",
            "Time to sequence, persist and project one batch",
        ))?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_seconds", "HTTP request latency by route").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            ),
            &["route"],
        )?;
        let http_connections_open = IntGauge::new(
            "http_connections_open",
            "HTTP connections open (WebSockets included)",
        )?;
        let http_connections_refused = IntCounter::new(
            "http_connections_refused_total",
            "HTTP connections refused (503) because as many as the server serves at once were open",
        )?;
        let http_header_timeouts = IntCounter::new(
            "http_header_timeouts_total",
            "HTTP connections closed because no request head arrived in time (idle keep-alive ones included)",
        )?;
        let http_request_timeouts = IntCounter::new(
            "http_request_timeouts_total",
            "HTTP requests not received and answered in time (answered 408)",
        )?;
        let http_idle_closed = IntCounter::new(
            "http_idle_connections_closed_total",
            "Idle HTTP connections closed to make room for a new one when as many as the server serves at once were open",
        )?;
        let http_write_timeouts = IntCounter::new(
            "http_write_timeouts_total",
            "HTTP connections closed because the client read nothing of what was sent to it in time (WebSockets included)",
        )?;
        let graphql_operations = IntCounterVec::new(
            Opts::new(
                "graphql_operations_total",
                "GraphQL operations by outcome (ok or the first error code)",
            ),
            &["outcome"],
        )?;
        let subscriptions = IntGauge::new("graphql_subscriptions_open", "Open subscriptions")?;
        let websockets_refused = IntCounter::new(
            "graphql_websockets_refused_total",
            "WebSockets closed at connection_init (1013) because their principal held as many as it may",
        )?;
        let witness_cosigned_size = IntGaugeVec::new(
            Opts::new(
                "witness_cosigned_tree_size",
                "Size of the latest checkpoint each witness cosigned",
            ),
            &["witness"],
        )?;
        let witness_requests = IntCounterVec::new(
            Opts::new(
                "witness_requests_total",
                "Checkpoints sent to witnesses, by witness and outcome",
            ),
            &["witness", "outcome"],
        )?;
        let witnessed_tree_size = IntGauge::new(
            "witnessed_tree_size",
            "Size of the latest checkpoint cosigned by a quorum of the witnesses",
        )?;
        let witness_lag_leaves = IntGauge::new(
            "witness_lag_leaves",
            "Leaves between the latest signed checkpoint and the latest witnessed one",
        )?;
        let witness_quorum = IntGauge::new(
            "witness_quorum",
            "Cosignatures a checkpoint needs to be witnessed",
        )?;
        let witnesses = IntGauge::new("witnesses", "Witnesses every checkpoint is sent to")?;
        let lineage_graph_bytes = IntGauge::new(
            "catalog_lineage_graph_bytes",
            "Bytes held by the catalogue's resident lineage graph",
        )?;
        registry.register(Box::new(sequenced.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(tree_size.clone()))?;
        registry.register(Box::new(applied.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(http_connections_open.clone()))?;
        registry.register(Box::new(http_connections_refused.clone()))?;
        registry.register(Box::new(http_header_timeouts.clone()))?;
        registry.register(Box::new(http_request_timeouts.clone()))?;
        registry.register(Box::new(http_write_timeouts.clone()))?;
        registry.register(Box::new(http_idle_closed.clone()))?;
        registry.register(Box::new(graphql_operations.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(websockets_refused.clone()))?;
        registry.register(Box::new(witness_cosigned_size.clone()))?;
        registry.register(Box::new(witness_requests.clone()))?;
        registry.register(Box::new(witnessed_tree_size.clone()))?;
        registry.register(Box::new(witness_lag_leaves.clone()))?;
        registry.register(Box::new(witness_quorum.clone()))?;
        registry.register(Box::new(witnesses.clone()))?;
        let signature_table_keys = IntGauge::new(
            "signature_table_keys",
            format!(
                "Producer keys holding a table for the sequencer's signature check (at most {}; a key beyond them is checked more slowly)",
                clew_events::WIDE_KEYS_AT_MOST
            ),
        )?;
        registry.register(Box::new(lineage_graph_bytes.clone()))?;
        registry.register(Box::new(signature_table_keys.clone()))?;
        Ok(Self {
            registry,
            sequenced,
            rejected,
            tree_size,
            applied,
            batch_seconds,
            http_requests,
            http_seconds,
            http_connections_open,
            http_connections_refused,
            http_header_timeouts,
            http_request_timeouts,
            http_write_timeouts,
            http_idle_closed,
            graphql_operations,
            subscriptions,
            websockets_refused,
            witness_cosigned_size,
            witness_requests,
            witnessed_tree_size,
            witness_lag_leaves,
            witness_quorum,
            witnesses,
            lineage_graph_bytes,
            signature_table_keys,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        encode(&self.registry.gather())
    }

    /// The text exposition of the witness families only (what a process
    /// that feeds witnesses but serves no catalogue exports).
    pub fn render_witnesses(&self) -> String {
        let families: Vec<_> = self
            .registry
            .gather()
            .into_iter()
            .filter(|f| f.name().starts_with("clew_witness"))
            .collect();
        encode(&families)
    }

    /// `/readyz`'s line on how far the last witnessed checkpoint lags the
    /// last signed one; None when no witnesses are configured.
    pub fn witnessed_line(&self) -> Option<String> {
        (self.witnesses.get() > 0).then(|| {
            format!(
                "witnessed: tree size {} ({} leaves behind the latest checkpoint; quorum {} of {} witnesses)\n",
                self.witnessed_tree_size.get(),
                self.witness_lag_leaves.get(),
                self.witness_quorum.get(),
                self.witnesses.get()
            )
        })
    }
}

fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(families, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
