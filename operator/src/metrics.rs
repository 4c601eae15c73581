//! The operator's own Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Failure {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<Kind, Counter>,
    pub failures: Family<Failure, Counter>,
    pub duration: Family<Kind, Histogram, fn() -> Histogram>,
}

fn buckets() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(buckets),
        };
        registry.register(
            "eventpipe_operator_reconciles",
            "Reconciliations by kind",
            m.reconciles.clone(),
        );
        registry.register(
            "eventpipe_operator_reconcile_failures",
            "Reconciliations that found a problem, by reason",
            m.failures.clone(),
        );
        registry.register(
            "eventpipe_operator_reconcile_duration_seconds",
            "Time spent reconciling",
            m.duration.clone(),
        );
        m
    }

    pub fn failed(&self, kind: &str, reason: &str) {
        self.failures
            .get_or_create(&Failure {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }
}
