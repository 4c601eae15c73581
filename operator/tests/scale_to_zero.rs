//! Scaling to and from zero against kube's mock API service: the scaler's decisions,
//! from the backlog in the metrics cache, reach the worker Deployment's `scale`.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::FakeApi;
use eventpipe_crds::EventPipeline;
use eventpipe_operator::external_metrics::{Cache, Values};
use eventpipe_operator::scaler::Scaler;
use eventpipe_operator::{Context, Settings};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-worker/scale";

fn pipeline(scaling: Value) -> Arc<EventPipeline> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "sources": [{"queueBindingRef": {"name": "orders"}}],
                "processor": {"http": {"url": "http://x"}},
                "scaling": scaling,
            }
        }))
        .unwrap(),
    )
}

fn workers(replicas: i32) -> Vec<Arc<Deployment>> {
    vec![Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "orders-worker", "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
        }))
        .unwrap(),
    )]
}

/// The replicas each `scale` PATCH asked for, in order.
fn scaled(api: &FakeApi) -> Vec<i64> {
    (api.calls().into_iter())
        .filter(|c| c.path == SCALE)
        .map(|c| c.body["spec"]["replicas"].as_i64().unwrap())
        .collect()
}

fn events(api: &FakeApi) -> Vec<String> {
    (api.calls().into_iter())
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body["reason"].as_str().unwrap().to_string())
        .collect()
}

struct Setup {
    api: FakeApi,
    ctx: Arc<Context>,
    cache: Cache,
    scaler: Scaler,
    start: Instant,
}

impl Setup {
    fn new() -> Self {
        let api = FakeApi::new();
        let aws = aws_config::SdkConfig::builder().build();
        let ctx = Context::new(api.client(), Settings::default(), aws, Default::default());
        Self {
            api,
            ctx,
            cache: Cache::default(),
            scaler: Scaler::default(),
            start: Instant::now(),
        }
    }

    /// One refresh's reading: `backlog` in the cache, the workers at `replicas`.
    async fn read(
        &mut self,
        p: &Arc<EventPipeline>,
        at: Duration,
        backlog: Option<i64>,
        replicas: i32,
    ) {
        let values = Values {
            backlog,
            ..Default::default()
        };
        self.cache.set("shop", "orders", values);
        let (ps, ds) = ([p.clone()], workers(replicas));
        self.scaler
            .judge(&self.ctx, &ps, &ds, &self.cache, self.start + at)
            .await;
    }
}

#[tokio::test]
async fn idle_workers_go_to_zero_after_the_cooldown_and_wake_on_a_message() {
    let p = pipeline(json!({"minReplicas": 0, "maxReplicas": 5, "cooldown": "1m"}));
    let mut s = Setup::new();
    s.read(&p, Duration::ZERO, Some(3), 2).await;
    s.read(&p, Duration::from_secs(30), Some(1), 1).await;
    s.read(&p, Duration::from_secs(85), Some(0), 1).await;
    assert!(scaled(&s.api).is_empty(), "idle 55s of a 1m cooldown");
    s.read(&p, Duration::from_secs(91), Some(0), 1).await;
    assert_eq!(scaled(&s.api), [0]);
    s.read(&p, Duration::from_secs(200), Some(0), 0).await;
    s.read(&p, Duration::from_secs(205), Some(1), 0).await;
    assert_eq!(scaled(&s.api), [0, 1]);
    assert_eq!(events(&s.api), ["ScaledToZero", "Woke"]);
    let patch = (s.api.calls().into_iter())
        .find(|c| c.path == SCALE)
        .unwrap();
    assert_eq!(patch.method, http::Method::PATCH);
}

#[tokio::test]
async fn the_activation_depth_and_an_unknown_backlog_keep_idle_workers_idle() {
    let p = pipeline(json!({"minReplicas": 0, "maxReplicas": 5, "activationDepth": 5}));
    let mut s = Setup::new();
    for (secs, backlog) in [(5, Some(5)), (10, None), (15, Some(2))] {
        s.read(&p, Duration::from_secs(secs), backlog, 0).await;
    }
    assert!(scaled(&s.api).is_empty());
    s.read(&p, Duration::from_secs(20), Some(6), 0).await;
    assert_eq!(scaled(&s.api), [1]);
}

#[tokio::test]
async fn a_flapping_queue_wakes_the_workers_once() {
    let p = pipeline(json!({"minReplicas": 0, "maxReplicas": 5, "cooldown": "1m"}));
    let mut s = Setup::new();
    let mut replicas = 0;
    // A message every 15 s for ten minutes, each gone by the next reading.
    for tick in 1..=120 {
        let backlog = if tick % 3 == 0 { 1 } else { 0 };
        s.read(&p, Duration::from_secs(tick * 5), Some(backlog), replicas)
            .await;
        replicas = scaled(&s.api).last().map_or(replicas, |&r| r as i32);
    }
    assert_eq!(
        scaled(&s.api),
        [1],
        "one wake-up, no stop while messages come"
    );
}

#[tokio::test]
async fn pipelines_that_keep_a_worker_or_use_keda_are_left_alone() {
    for scaling in [
        json!({"minReplicas": 1, "maxReplicas": 5, "cooldown": "1s"}),
        json!({"minReplicas": 0, "maxReplicas": 5, "cooldown": "1s", "engine": "keda"}),
    ] {
        let p = pipeline(scaling);
        let mut s = Setup::new();
        s.read(&p, Duration::from_secs(60), Some(0), 1).await;
        s.read(&p, Duration::from_secs(120), Some(0), 1).await;
        assert!(scaled(&s.api).is_empty());
    }
}

#[tokio::test]
async fn workers_left_at_zero_wake_once_min_replicas_is_raised() {
    let p = pipeline(json!({"minReplicas": 1, "maxReplicas": 5}));
    let mut s = Setup::new();
    s.read(&p, Duration::from_secs(5), Some(0), 0).await;
    assert_eq!(scaled(&s.api), [1], "the HPA does nothing at zero");
    assert_eq!(events(&s.api), ["Woke"]);
    s.read(&p, Duration::from_secs(10), Some(0), 1).await;
    assert_eq!(scaled(&s.api), [1], "once");
}
