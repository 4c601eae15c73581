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

/// A request to the Kubernetes API: `watch`, `get` (a read, of one object or a list),
/// `post`, `put`, `patch` or `delete`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequest {
    pub verb: String,
}

impl ApiRequest {
    pub fn of<B>(request: &http::Request<B>) -> Self {
        let query = request.uri().query().unwrap_or_default();
        let watch = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
        let verb = match request.method().as_str() {
            "GET" if watch => "watch".to_string(),
            other => other.to_lowercase(),
        };
        Self { verb }
    }
}

/// The verdict on a caller of `/metrics` (see `metrics_auth`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthCheck {
    pub outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// Requests this process made to the Kubernetes API, by verb.
    pub api_requests: Family<ApiRequest, Counter>,
    pub reconciles: Family<Kind, Counter>,
    pub failures: Family<Failure, Counter>,
    pub duration: Family<Kind, Histogram, fn() -> Histogram>,
    /// Callers of `/metrics` checked (`--metrics-auth=token`), by outcome.
    pub metrics_auth_checks: Family<AuthCheck, Counter>,
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
            api_requests: Family::default(),
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(buckets),
            metrics_auth_checks: Family::default(),
        };
        registry.register(
            "eventpipe_operator_api_requests",
            "Requests to the Kubernetes API, by verb",
            m.api_requests.clone(),
        );
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
        registry.register(
            "eventpipe_operator_metrics_auth_checks",
            "Callers of /metrics checked for a bearer token, by outcome",
            m.metrics_auth_checks.clone(),
        );
        m
    }

    /// Counts a reconcile of `kind` now and observes its duration when the guard drops,
    /// however the reconcile ends.
    pub fn count_and_measure(&self, kind: &str) -> Measured {
        let kind = Kind { kind: kind.into() };
        self.reconciles.get_or_create(&kind).inc();
        Measured {
            histogram: self.duration.get_or_create(&kind).clone(),
            started: std::time::Instant::now(),
        }
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

/// A reconcile being timed; see [`Metrics::count_and_measure`].
pub struct Measured {
    histogram: Histogram,
    started: std::time::Instant,
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::ApiRequest;

    fn verb(method: &str, uri: &str) -> String {
        let r = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        ApiRequest::of(&r).verb
    }

    #[test]
    fn a_reconcile_is_counted_and_timed_however_it_ends() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = super::Metrics::register(&mut registry);
        let reconcile = |fail: bool| -> Result<(), ()> {
            let _measured = metrics.count_and_measure("QueueBinding");
            if fail {
                return Err(());
            }
            Ok(())
        };
        let _ = (reconcile(false), reconcile(true));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"eventpipe_operator_reconciles_total{kind="QueueBinding"} 2"#,
            r#"eventpipe_operator_reconcile_duration_seconds_count{kind="QueueBinding"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn watches_are_told_from_reads_and_writes() {
        let pods = "/api/v1/namespaces/a/pods";
        assert_eq!(
            verb("GET", &format!("{pods}?watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(verb("GET", &format!("{pods}?limit=500")), "get");
        assert_eq!(verb("GET", &format!("{pods}/p")), "get");
        assert_eq!(verb("PATCH", &format!("{pods}/p?fieldManager=x")), "patch");
        assert_eq!(verb("POST", pods), "post");
    }
}
