//! Prometheus metrics of a serving node (`GET /metrics`, text format 0.0.4).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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
    /// GraphQL operations by type and outcome (`ok`, or the first error code).
    pub graphql_operations: IntCounterVec,
    /// Open subscriptions.
    pub subscriptions: IntGauge,
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
        let graphql_operations = IntCounterVec::new(
            Opts::new(
                "graphql_operations_total",
                "GraphQL operations by outcome (ok or the first error code)",
            ),
            &["outcome"],
        )?;
        let subscriptions = IntGauge::new("graphql_subscriptions_open", "Open subscriptions")?;
        registry.register(Box::new(sequenced.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(tree_size.clone()))?;
        registry.register(Box::new(applied.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(graphql_operations.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        Ok(Self {
            registry,
            sequenced,
            rejected,
            tree_size,
            applied,
            batch_seconds,
            http_requests,
            http_seconds,
            graphql_operations,
            subscriptions,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
