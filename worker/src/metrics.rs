//! The worker's Prometheus metrics (DESIGN.md section 4).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    pub pipeline: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Processed {
    pub pipeline: String,
    pub source: String,
    /// delivered, filtered, duplicate, retried, dead_lettered
    pub outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub received: Family<Source, Counter>,
    pub processed: Family<Processed, Counter>,
    pub delivery_seconds: Family<Source, Histogram>,
    pub queue_depth: Family<Source, Gauge>,
    pub dlq_depth: Family<Source, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            received: Family::default(),
            processed: Family::default(),
            delivery_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
            queue_depth: Family::default(),
            dlq_depth: Family::default(),
        };
        registry.register(
            "eventpipe_events_received",
            "Events received from sources",
            m.received.clone(),
        );
        registry.register(
            "eventpipe_events_processed",
            "Events finished, by outcome",
            m.processed.clone(),
        );
        registry.register(
            "eventpipe_delivery_duration_seconds",
            "Time spent delivering to the processor",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "eventpipe_queue_depth",
            "Approximate messages in the source queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "eventpipe_dlq_depth",
            "Approximate messages in the dead-letter queue",
            m.dlq_depth.clone(),
        );
        m
    }

    pub fn outcome(&self, source: &Source, outcome: &str) {
        let labels = Processed {
            pipeline: source.pipeline.clone(),
            source: source.source.clone(),
            outcome: outcome.into(),
        };
        self.processed.get_or_create(&labels).inc();
    }
}
