//! The ingress's Prometheus metrics, and its feed of recent events.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use eventpipe_core::feed::Feed;

use crate::limits::Limit;

/// The route label of requests to a path no webhook serves: one series, not one per path.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    pipeline: String,
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

type Histograms = Family<DestinationLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    received: Family<EventLabels, Counter>,
    publish: Histograms,
    batch: Histograms,
    rejected: Family<ReasonLabels, Counter>,
    in_flight: Gauge,
    feed: Feed,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

fn batch_histogram() -> Histogram {
    Histogram::new((1..=10).map(f64::from))
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            received: Family::default(),
            publish: Family::new_with_constructor(latency_histogram),
            batch: Family::new_with_constructor(batch_histogram),
            rejected: Family::default(),
            in_flight: Gauge::default(),
            feed: Feed::default(),
        };
        registry.register(
            "eventpipe_ingress_requests",
            "Webhook requests by route and response status",
            metrics.requests.clone(),
        );
        registry.register(
            "eventpipe_events_received",
            "Events accepted and stored",
            metrics.received.clone(),
        );
        registry.register_with_unit(
            "eventpipe_ingress_publish_duration",
            "Time to store an event, by destination",
            Unit::Seconds,
            metrics.publish.clone(),
        );
        registry.register(
            "eventpipe_ingress_publish_batch_size",
            "Events per SendMessageBatch call, by destination",
            metrics.batch.clone(),
        );
        registry.register(
            "eventpipe_ingress_rejected",
            "Requests and connections refused by a limit, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "eventpipe_ingress_requests_in_flight",
            "Webhook requests being handled",
            metrics.in_flight.clone(),
        );
        metrics
    }

    pub fn rejected(&self, limit: Limit) {
        let labels = ReasonLabels {
            reason: limit.as_str(),
        };
        self.rejected.get_or_create(&labels).inc();
    }

    /// Accepted events, served next to the metrics.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    pub fn in_flight(&self) -> Gauge {
        self.in_flight.clone()
    }

    pub fn request(&self, route: &str, status: u16) {
        let labels = RequestLabels {
            route: route.into(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The counter of one webhook's accepted events.
    pub fn received(&self, pipeline: &str, webhook: &str) -> Counter {
        let labels = EventLabels {
            pipeline: pipeline.into(),
            webhook: webhook.into(),
        };
        self.received.get_or_create_owned(&labels)
    }

    pub fn publish_duration(&self, destination: &str) -> Histogram {
        self.publish
            .get_or_create_owned(&destination_labels(destination))
    }

    pub fn batch_size(&self, destination: &str) -> Histogram {
        self.batch
            .get_or_create_owned(&destination_labels(destination))
    }
}

fn destination_labels(destination: &str) -> DestinationLabels {
    DestinationLabels {
        destination: destination.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.request("/hooks/github", 202);
        m.received("hooks", "github").inc();
        m.publish_duration("orders").observe(0.01);
        m.batch_size("orders").observe(3.0);
        m.rejected(Limit::Overloaded);
        m.in_flight().inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"eventpipe_ingress_requests_total{route="/hooks/github",status="202"} 1"#,
            r#"eventpipe_events_received_total{pipeline="hooks",webhook="github"} 1"#,
            r#"eventpipe_ingress_publish_duration_seconds_count{destination="orders"} 1"#,
            r#"eventpipe_ingress_publish_batch_size_count{destination="orders"} 1"#,
            r#"eventpipe_ingress_rejected_total{reason="overloaded"} 1"#,
            "eventpipe_ingress_requests_in_flight 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
