//! A throttling processor, against moto: its events are held and tried again, never
//! dead-lettered and never charged a receive, from a queue and from a stream.

// Setup that fails fails the test, as in the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::IntoResponse};
use common::*;
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

/// A processor answering `status` with `Retry-After: retry_after` until `until`,
/// then 200; it records the events it took (id and body) in order.
#[derive(Clone)]
struct Throttler {
    url: String,
    taken: Arc<Mutex<Vec<(String, Value)>>>,
    throttled: Arc<Mutex<usize>>,
}

#[derive(Clone)]
struct Answer {
    until: Instant,
    status: u16,
    retry_after: Arc<dyn Fn() -> String + Send + Sync>,
    taken: Arc<Mutex<Vec<(String, Value)>>>,
    throttled: Arc<Mutex<usize>>,
}

impl Throttler {
    async fn start(
        status: u16,
        throttle_for: Duration,
        retry_after: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let answer = Answer {
            until: Instant::now() + throttle_for,
            status,
            retry_after: Arc::new(retry_after),
            taken: Arc::default(),
            throttled: Arc::default(),
        };
        let me = Self {
            url,
            taken: answer.taken.clone(),
            throttled: answer.throttled.clone(),
        };
        let app = axum::Router::new()
            .route("/events", axum::routing::post(answer_one))
            .with_state(answer);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }

    fn taken(&self) -> Vec<(String, Value)> {
        self.taken.lock().unwrap().clone()
    }

    fn throttled(&self) -> usize {
        *self.throttled.lock().unwrap()
    }
}

async fn answer_one(
    State(a): State<Answer>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if Instant::now() < a.until {
        *a.throttled.lock().unwrap() += 1;
        let status = axum::http::StatusCode::from_u16(a.status).unwrap();
        return (status, [("retry-after", (a.retry_after)())], "busy").into_response();
    }
    let id = headers["ce-id"].to_str().unwrap().to_string();
    let data = serde_json::from_slice(&body).unwrap();
    a.taken.lock().unwrap().push((id, data));
    axum::http::StatusCode::OK.into_response()
}

fn queue_config(url: &str) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {{name: p}}
spec:
  maxReceiveCount: 2
  backoff: {{initial: 1s, multiplier: 2, max: 5s, jitter: none}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  sqs: {{queueName: in, create: true, waitTime: 1s, visibilityTimeout: 6s, heartbeat: false}}
  deadLetterPolicyRef: {{name: p}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
  processor: {{http: {{url: "{url}", timeout: 5s}}}}
  delivery: {{concurrency: 4}}
"#
    )
}

/// `ApproximateReceiveCount` of each acknowledged event, from the worker's log.
fn receive_counts(log: &str) -> HashMap<String, u64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "acknowledged")
        .map(|v| {
            let id = v["event_id"].as_str().unwrap().to_string();
            (id, v["receive_count"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_processor_unavailable_for_two_minutes_loses_nothing_and_costs_no_receive() {
    let outage = Duration::from_secs(120);
    let processor = Throttler::start(503, outage, || "5".into()).await;
    let moto = Moto::start();
    let cfg = queue_config(&processor.url);
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    let sent: Vec<(String, Value)> = (0..20)
        .map(|i| {
            (
                format!("e{i}"),
                json!({"n": i, "text": format!("event {i}")}),
            )
        })
        .collect();
    for (id, data) in &sent {
        send(&sqs, &urls["in"], &cloudevent(id, "t", data.clone())).await;
    }
    let worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(outage + 90 * SECONDS, "every event delivered", async || {
        processor.taken().len() >= sent.len()
    })
    .await;
    eventually(20 * SECONDS, "the queue drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;

    let dlq = depth(&sqs, &urls["in-dlq"]).await;
    assert_eq!(dlq, (0, 0), "no dead letters");
    let mut taken = processor.taken();
    taken.sort_by_key(|(id, _)| id.clone());
    let mut expected = sent.clone();
    expected.sort_by_key(|(id, _)| id.clone());
    assert_eq!(taken, expected, "every event delivered once, as sent");
    // Log lines are buffered and written out every 100 ms, a moment after the fact.
    eventually(10 * SECONDS, "every acknowledgement logged", async || {
        receive_counts(&worker.log()).len() >= sent.len()
    })
    .await;
    let counts = receive_counts(&worker.log());
    assert_eq!(counts.len(), sent.len(), "{counts:?}");
    assert!(
        counts.values().all(|n| *n <= 2),
        "no message received more than twice: {counts:?}"
    );
    assert!(processor.throttled() > 0);
    let metrics = worker.metrics().await;
    assert!(metrics.contains("eventpipe_throttled_total{"), "{metrics}");
    assert!(metrics.contains(r#"eventpipe_circuit_state{pipeline="t"} 0"#));
    assert!(metrics.contains(r#"eventpipe_deliveries_held{pipeline="t",source="in"} 0"#));
    let log = worker.log();
    assert!(log.contains("circuit open"), "the circuit opened");
    assert!(log.contains("circuit closed"), "and closed again");
}

#[tokio::test]
async fn a_throttled_shard_waits_at_its_record_and_dead_letters_nothing() {
    // 429 with an HTTP date, for long enough that the policy's two attempts would
    // have been spent many times over.
    let processor = Throttler::start(429, 12 * SECONDS, || {
        let at = chrono::Utc::now() + chrono::Duration::seconds(2);
        at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    })
    .await;
    let moto = Moto::start();
    let dlq = common::streams::setup(&moto).await;
    for i in 0..6 {
        common::streams::put(&moto, &format!("k{i}"), i).await;
    }
    let http = format!("{{http: {{url: \"{}\", timeout: 5s}}}}", processor.url);
    let cfg = common::streams::config(&http, "", "");
    let worker = WorkerProcess::start(&moto, &cfg, common::streams::FAST_LEASES).await;
    eventually(60 * SECONDS, "every record delivered", async || {
        processor.taken().len() >= 6
    })
    .await;
    let keys: Vec<i64> = processor
        .taken()
        .iter()
        .map(|(_, data)| data["n"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, [0, 1, 2, 3, 4, 5], "in shard order, each once");
    assert!(processor.throttled() >= 3, "throttled for a while");
    assert_eq!(depth(&moto.sqs(), &dlq).await, (0, 0), "no dead letters");
    let metrics = worker.metrics().await;
    assert!(!metrics.contains(r#"outcome="dead_lettered""#), "{metrics}");
    assert!(
        !metrics.contains(r#"outcome="retried""#),
        "no retry spent: {metrics}"
    );
    assert!(metrics.contains(r#"eventpipe_throttled_total{pipeline="t",source="in"}"#));
}

#[tokio::test]
async fn a_held_message_is_handed_back_at_shutdown_not_left_invisible() {
    let processor = Throttler::start(503, 600 * SECONDS, || "30".into()).await;
    let moto = Moto::start();
    let cfg = queue_config(&processor.url);
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &cloudevent("held", "t", json!({}))).await;
    let mut worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "throttled", async || {
        processor.throttled() > 0
    })
    .await;
    let asked = Instant::now();
    assert!(worker.terminate(10 * SECONDS).await.success());
    assert!(asked.elapsed() < 5 * SECONDS, "held past shutdown");
    assert_eq!(
        depth(&sqs, &urls["in"]).await,
        (1, 0),
        "visible again at once"
    );
    assert_eq!(depth(&sqs, &urls["in-dlq"]).await, (0, 0));
}
