//! The push metrics of an ingress pod.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Default)]
pub struct PushMetrics {
    pub subscribers: Gauge,
    /// Pushes queued for a subscriber (one event to two subscribers is two).
    pub pushed: Counter,
    pub dropped_slow: Counter,
    /// Events no subscriber of this pod wanted.
    pub unmatched: Counter,
    /// Subscribers refused for the per-pod limit.
    pub refused: Counter,
}

impl PushMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("eventpipe_ingress_push");
        r.register(
            "subscribers",
            "Clients subscribed to pushes",
            m.subscribers.clone(),
        );
        r.register("pushed", "Events queued for a subscriber", m.pushed.clone());
        r.register(
            "dropped_slow_clients",
            "Subscribers dropped for falling behind",
            m.dropped_slow.clone(),
        );
        r.register(
            "unmatched",
            "Events pushed that no subscriber wanted",
            m.unmatched.clone(),
        );
        r.register(
            "refused_subscribers",
            "Subscribers refused for the limit per pod",
            m.refused.clone(),
        );
        m
    }
}
