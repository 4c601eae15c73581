//! The worker's Prometheus metrics (DESIGN.md section 4). Public with their label
//! sets: `eventpipe dev` registers them, and the operator's tests check the chart's
//! alerts against them.

use cloudevents::{AttributesReader, Event};
use eventpipe_core::feed::{self, Feed, Record};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    pub pipeline: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Processed {
    pub pipeline: String,
    pub source: String,
    /// delivered, filtered, duplicate, retried, dead_lettered (and for streams, discarded)
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pipeline {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Shard {
    pub pipeline: String,
    pub source: String,
    pub shard: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub received: Family<Source, Counter>,
    pub processed: Family<Processed, Counter>,
    pub delivery_seconds: Family<Source, Histogram>,
    pub queue_depth: Family<Source, Gauge>,
    pub dlq_depth: Family<Source, Gauge>,
    /// How far behind the head of its shard this worker reads (age of the last record read).
    pub iterator_age: Family<Shard, Gauge<f64, AtomicU64>>,
    /// The largest iterator age of a source's shards read here: what the autoscaler targets.
    pub stream_lag: Family<Source, Gauge<f64, AtomicU64>>,
    pub leases_owned: Family<Source, Gauge>,
    /// Deliveries the processor throttled (429, 503, refused, timed out).
    pub throttled: Family<Source, Counter>,
    /// Events held by the worker, waiting to try the throttled processor again.
    pub held: Family<Source, Gauge>,
    /// Deliveries a pipeline may have in flight now (AIMD, at most its concurrency).
    pub concurrency_limit: Family<Pipeline, Gauge>,
    /// The pipeline's circuit breaker: 0 closed, 1 half-open, 2 open.
    pub circuit_state: Family<Pipeline, Gauge>,
    /// Recent events and what became of them, served next to the metrics.
    pub feed: Feed,
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
            iterator_age: Family::default(),
            stream_lag: Family::default(),
            leases_owned: Family::default(),
            throttled: Family::default(),
            held: Family::default(),
            concurrency_limit: Family::default(),
            circuit_state: Family::default(),
            feed: Feed::default(),
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
        registry.register(
            "eventpipe_stream_iterator_age_seconds",
            "Age of the last record read from each DynamoDB stream shard (0 when caught up)",
            m.iterator_age.clone(),
        );
        registry.register(
            "eventpipe_stream_lag_seconds",
            "Largest iterator age among the stream shards this worker reads",
            m.stream_lag.clone(),
        );
        registry.register(
            "eventpipe_stream_leases_owned",
            "Stream shard leases this worker holds",
            m.leases_owned.clone(),
        );
        m.register_pressure(registry);
        m
    }

    fn register_pressure(&self, registry: &mut Registry) {
        registry.register(
            "eventpipe_throttled",
            "Deliveries the processor throttled (429, 503, refused connection, timeout); each is held and tried again",
            self.throttled.clone(),
        );
        registry.register(
            "eventpipe_deliveries_held",
            "Events held by the worker until the throttling processor takes them",
            self.held.clone(),
        );
        registry.register(
            "eventpipe_concurrency_limit",
            "Deliveries the pipeline may have in flight now: halved on throttling, grown back on success",
            self.concurrency_limit.clone(),
        );
        registry.register(
            "eventpipe_circuit_state",
            "Circuit breaker in front of the processor: 0 closed, 1 half-open (one probe), 2 open (nothing received)",
            self.circuit_state.clone(),
        );
    }

    /// Adds what became of `event` to the feed (metadata only, never its data).
    /// What became of `event`, in the feed and on its span (where a trace search finds
    /// it: the span carries no line at info level).
    pub fn record(&self, source: &Source, event: &Event, outcome: &str, span: &tracing::Span) {
        span.set_attribute("eventpipe.outcome", outcome.to_string());
        let time = event.time().copied();
        self.feed.record(Record {
            component: "worker".into(),
            pipeline: source.pipeline.clone(),
            source: source.source.clone(),
            id: event.id().into(),
            event_type: event.ty().into(),
            correlation_id: eventpipe_core::envelope::correlation_id(event).unwrap_or_default(),
            outcome: outcome.into(),
            latency_ms: feed::latency_ms(time, feed::now_ms()),
            trace_id: eventpipe_core::telemetry::trace_id(span),
            ..Default::default()
        });
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
