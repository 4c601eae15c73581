//! The console the operator serves: the pipelines and pods it finds through the API,
//! the events of the pods' feeds, and no redrive.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{CRD, FakeApi};
use eventpipe_core::feed::{Feed, Record};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A pod's feed, served on 127.0.0.1 with one record of pipeline `orders`.
async fn feed_server() -> u16 {
    let feed = Feed::new(10);
    feed.record(Record {
        component: "worker".into(),
        pipeline: "orders".into(),
        id: "evt-1".into(),
        correlation_id: "order-42".into(),
        outcome: "delivered".into(),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = eventpipe_core::feed_http::router(feed);
    tokio::spawn(axum::serve(listener, router).into_future());
    port
}

/// An API with pipeline `default/orders` (ready, 2 replicas) and its worker pod,
/// whose feed is on 127.0.0.1:`port`.
fn api(port: u16) -> FakeApi {
    let api = FakeApi::new();
    api.put(
        &format!("{CRD}/eventpipelines/orders"),
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "orders", "namespace": "default", "uid": "p-1"},
            "spec": {"sources": [], "processor": {"http": {"url": "http://p"}}},
            "status": {"replicas": 2, "queueDepth": 5, "dlqDepth": 1, "conditions": [
                {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "all good",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }),
    );
    api.put(
        "/api/v1/namespaces/default/pods/orders-worker-1",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orders-worker-1", "namespace": "default", "uid": "pod-1",
                "labels": {"eventpipe.dev/pipeline": "orders", "app.kubernetes.io/component": "worker",
                    "app.kubernetes.io/managed-by": "eventpipe-operator"}},
            "spec": {"containers": [{"name": "worker", "image": "w",
                "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }),
    );
    api
}

/// The operator's console on 127.0.0.1, watching namespace `default` of `api`.
async fn console(api: &FakeApi) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serve = eventpipe_operator::console::serve(
        listener,
        api.client(),
        vec!["default".into()],
        Default::default(),
        stop.clone(),
    );
    tokio::spawn(serve);
    (url, stop)
}

async fn get_json(url: &str) -> Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The state once `ready` holds of it (within 10 s).
async fn state_when(url: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut state = Value::Null;
    for _ in 0..200 {
        state = get_json(&format!("{url}/api/state")).await;
        if ready(&state) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {state}");
}

#[tokio::test]
async fn shows_the_pipelines_and_pod_events_the_api_lists() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api).await;
    let state = state_when(&url, |s| {
        s["pipelines"][0]["stats"]["recent"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    let p = &state["pipelines"][0];
    assert_eq!(p["name"], "default/orders");
    assert_eq!(p["status"], "Ready");
    assert_eq!(p["replicas"], 2);
    assert_eq!(p["conditions"][0]["message"], "all good");
    assert_eq!(p["depths"], json!({"queue": 5, "dead_letters": 1}));
    assert_eq!(p["stats"]["recent"][0]["id"], "evt-1");
    assert_eq!(state["redrive"], false, "read-only");
    let found = get_json(&format!("{url}/api/search?correlation_id=order-42")).await;
    assert_eq!(found[0]["pipeline"], "default/orders");
    let page = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    stop.cancel();
}

#[tokio::test]
async fn pushes_its_state_as_server_sent_events() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api).await;
    let mut stream = reqwest::get(format!("{url}/api/stream")).await.unwrap();
    let content_type = stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut text = String::new();
    while !text.contains("default/orders") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("a state naming the pipeline within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: state"), "{text}");
    stop.cancel();
}

#[tokio::test]
async fn redrives_nothing() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api).await;
    state_when(&url, |s| s["pipelines"][0]["name"] == "default/orders").await;
    let redrive = format!("{url}/api/pipelines/default%2Forders/redrive");
    let http = reqwest::Client::new();
    let from_page = http
        .post(&redrive)
        .header("x-eventpipe-console", "1")
        .header("authorization", "Bearer anything")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(from_page.status(), 403);
    let body: Value = serde_json::from_str(&from_page.text().await.unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let cross_site = (http.post(&redrive).header("origin", "https://evil.example"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    stop.cancel();
}
