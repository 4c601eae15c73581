//! Test support for the worker: a recording HTTP sink, the worker binary run against
//! moto, and bounded waits; `streams` holds the DynamoDB stream fixtures.
#![allow(dead_code)]
// Setup that fails fails the test, as in the tests themselves.
#![allow(clippy::unwrap_used)]

pub mod batch_sink;
pub mod streams;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName as Attr};
use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use eventpipe_testkit::{Moto, free_port};

/// One request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn id(&self) -> &str {
        &self.headers["ce-id"]
    }
}

pub const SECONDS: Duration = Duration::from_secs(1);

type Behaviour = Arc<dyn Fn(&Received, usize) -> (u16, Duration) + Send + Sync>;

/// An HTTP processor on loopback that records every request and answers as told:
/// `behaviour(request, how many times this event id was seen before)`.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub completed: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<Mutex<(usize, usize)>>,
}

#[derive(Clone)]
struct SinkState {
    sink: Sink,
    behaviour: Behaviour,
}

impl Sink {
    pub async fn start(
        behaviour: impl Fn(&Received, usize) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let sink = Sink {
            url,
            received: Arc::default(),
            completed: Arc::default(),
            in_flight: Arc::default(),
        };
        let state = SinkState {
            sink: sink.clone(),
            behaviour: Arc::new(behaviour),
        };
        let app = axum::Router::new()
            .route("/events", post(handle))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    /// Answers 200 at once.
    pub async fn ok() -> Self {
        Self::start(|_, _| (200, Duration::ZERO)).await
    }

    /// Answers `status` at once to events whose id `fails`, and 200 to the others.
    pub async fn failing(
        status: u16,
        fails: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::start(move |r, _| match fails(r.id()) {
            true => (status, Duration::ZERO),
            false => (200, Duration::ZERO),
        })
        .await
    }

    pub fn ids(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.id().to_string())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn completed_count(&self) -> usize {
        self.completed.lock().unwrap().len()
    }

    /// The most requests that were being handled at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.in_flight.lock().unwrap().1
    }
}

async fn handle(State(s): State<SinkState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let r = Received {
        at: Instant::now(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let seen = {
        let mut all = s.sink.received.lock().unwrap();
        let seen = all
            .iter()
            .filter(|x| x.headers.get("ce-id") == r.headers.get("ce-id"))
            .count();
        all.push(r.clone());
        seen
    };
    {
        let mut f = s.sink.in_flight.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let (status, delay) = (s.behaviour)(&r, seen);
    tokio::time::sleep(delay).await;
    s.sink.in_flight.lock().unwrap().0 -= 1;
    if (200..300).contains(&status) {
        s.sink.completed.lock().unwrap().push(r);
    }
    StatusCode::from_u16(status).unwrap()
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// A worker process against moto; killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub metrics: String,
    pub dir: PathBuf,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("eventpipe-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the worker on `config` (YAML), expecting it to refuse; returns its stderr.
pub fn start_failing(moto: &Moto, dir: &std::path::Path, config: &str) -> String {
    let file = dir.join("p.yaml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eventpipe-worker"))
        .arg("--config")
        .arg(&file)
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl WorkerProcess {
    /// Starts `eventpipe-worker` on `config` (YAML) and waits until it is ready.
    pub async fn start(moto: &Moto, config: &str, extra: &[&str]) -> Self {
        Self::start_in(temp_dir("worker"), moto, config, extra).await
    }

    /// As [`WorkerProcess::start`], in `dir`, which is also the secrets directory.
    pub async fn start_in(dir: PathBuf, moto: &Moto, config: &str, extra: &[&str]) -> Self {
        Self::start_with_env(dir, moto, config, extra, &[]).await
    }

    /// As [`WorkerProcess::start_in`], with these environment variables besides.
    pub async fn start_with_env(
        dir: PathBuf,
        moto: &Moto,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let file = dir.join("pipeline.yaml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("worker.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_eventpipe-worker"))
            .arg("--config")
            .arg(&file)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .arg("--secrets-dir")
            .arg(&dir)
            .args(extra)
            .envs(moto.env())
            .env("RUST_LOG", "info,eventpipe_worker=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut w = Self {
            child,
            metrics: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let url = format!("{}/readyz", w.metrics);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                panic!("worker exited with {status}:\n{}", w.log());
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready after 30s:\n{}",
                w.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker still running {limit:?} after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The worker's log lines that name an event but were written in another event's span.
pub fn lines_in_another_events_span(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            let Ok(l) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            let span = &l["span"]["event.id"];
            l["event_id"].is_string() && span.is_string() && *span != l["event_id"]
        })
        .collect()
}

/// A CloudEvent body with this id and data.
pub fn cloudevent(id: &str, ty: &str, data: serde_json::Value) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": ty,
        "datacontenttype": "application/json", "correlationid": format!("corr-{id}"), "data": data
    })
    .to_string()
}

/// The trace id of a W3C `traceparent`.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap()
}

/// CloudEvents `(id, type, data)`, one message each.
pub async fn send_events(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    events: &[(&str, &str, serde_json::Value)],
) {
    for (id, ty, data) in events {
        send(sqs, url, &cloudevent(id, ty, data.clone())).await;
    }
}

/// `n` CloudEvents `e0`, `e1`, … of type `t` with empty data.
pub async fn send_numbered(sqs: &aws_sdk_sqs::Client, url: &str, n: usize) {
    for i in 0..n {
        send(
            sqs,
            url,
            &cloudevent(&format!("e{i}"), "t", serde_json::json!({})),
        )
        .await;
    }
}

pub async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

pub async fn send_fifo(sqs: &aws_sdk_sqs::Client, url: &str, body: &str, group: &str, dedup: &str) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .message_group_id(group)
        .message_deduplication_id(dedup)
        .send()
        .await
        .unwrap();
}

pub fn attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .unwrap()
}

/// (visible, in flight) messages of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (usize, usize) {
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let n = |k: &Attr| a.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        n(&Attr::ApproximateNumberOfMessages),
        n(&Attr::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Every message currently in a queue (received with a short visibility, then left).
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = vec![];
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .visibility_timeout(30)
            .send()
            .await
            .unwrap();
        let got = out.messages.unwrap_or_default();
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    all
}

/// Creates the pipeline's queues as the binding says (queue, DLQ, redrive policy).
pub async fn provision(moto: &Moto, config: &str) -> HashMap<String, String> {
    let manifest = eventpipe_crds::Manifest::from_yaml("test.yaml", config).unwrap();
    let mut urls = HashMap::new();
    for b in &manifest.bindings {
        let policy = b.spec.dead_letter_policy_ref.as_ref().map(|r| {
            manifest
                .policies
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(&r.name))
                .unwrap()
        });
        if let Some(q) = &b.spec.sqs {
            let made = eventpipe_core::provision::ensure_sqs(&moto.sqs(), q, policy)
                .await
                .unwrap();
            urls.insert(b.metadata.name.clone().unwrap(), made.url);
            if let Some(dlq) = made.dlq_url {
                urls.insert(format!("{}-dlq", b.metadata.name.clone().unwrap()), dlq);
            }
        }
    }
    urls
}
