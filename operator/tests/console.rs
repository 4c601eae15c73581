//! The console the operator serves: the pipelines and pods it finds through the API,
//! the events of the pods' feeds, and redrive only with its token.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use common::{CRD, FakeApi};
use eventpipe_core::feed::{Feed, Record};
use eventpipe_operator::Context;
use eventpipe_operator::console::Watched;
use eventpipe_operator::external_metrics::{Cache, Values};
use eventpipe_testkit::Moto;
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

/// AWS configuration for tests that never reach AWS.
fn no_aws() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .build()
}

/// The operator's console on 127.0.0.1, watching namespace `default` of `api`,
/// reaching AWS with `aws`, redriving with `token`.
async fn console(
    api: &FakeApi,
    aws: SdkConfig,
    token: Option<&str>,
) -> (String, CancellationToken) {
    console_with(api, aws, token, Cache::default()).await
}

/// [`console`], with the metrics `cache` of the operator.
async fn console_with(
    api: &FakeApi,
    aws: SdkConfig,
    token: Option<&str>,
    cache: Cache,
) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let client = api.client();
    let watched = Watched::watch(&client, &["default".into()]);
    let ctx = Context::new(client, Default::default(), aws, Default::default());
    let serve = eventpipe_operator::console::serve(
        listener,
        ctx,
        watched,
        cache,
        token.map(String::from),
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
    let (url, stop) = console(&api, no_aws(), None).await;
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
    let depths = json!({"queue": 5, "dead_letters": 1, "stream_lag_seconds": null});
    assert_eq!(p["depths"], depths, "a queue, no stream");
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
    let (url, stop) = console(&api, no_aws(), None).await;
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
async fn without_a_token_redrives_nothing() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api, no_aws(), None).await;
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

/// POSTs a redrive of every dead letter of `default/orders` with `headers`.
async fn redrive(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut post = reqwest::Client::new()
        .post(format!("{url}/api/pipelines/default%2Forders/redrive"))
        .header("content-type", "application/json")
        .body(r#"{"rate": 100}"#);
    for (k, v) in headers {
        post = post.header(*k, *v);
    }
    let answer = post.send().await.unwrap();
    let status = answer.status().as_u16();
    (
        status,
        serde_json::from_str(&answer.text().await.unwrap()).unwrap(),
    )
}

const PAGE: (&str, &str) = ("x-eventpipe-console", "1");

#[tokio::test]
async fn with_a_token_refuses_whoever_lacks_it() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api, no_aws(), Some("s3cret")).await;
    let state = state_when(&url, |s| s["pipelines"][0]["name"] == "default/orders").await;
    assert_eq!(state["redrive"], true);
    let (status, _) = redrive(&url, &[PAGE]).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = redrive(&url, &[PAGE, ("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401, "a wrong token");
    let bearer = ("authorization", "Bearer s3cret");
    let (status, _) = redrive(&url, &[bearer]).await;
    assert_eq!(status, 403, "not from the page");
    let elsewhere = ("origin", "https://evil.example");
    let (status, _) = redrive(&url, &[PAGE, bearer, elsewhere]).await;
    assert_eq!(status, 403, "from another site");
    let (status, body) = redrive(&url, &[PAGE, bearer]).await;
    assert_eq!(status, 404, "authorised, but no DLQ: {body}");
    stop.cancel();
}

#[tokio::test]
async fn with_its_token_redrives_the_dead_letters_a_binding_reports() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let queue_url = |name: &'static str| {
        let sqs = sqs.clone();
        async move {
            let out = sqs.create_queue().queue_name(name).send().await.unwrap();
            out.queue_url.unwrap()
        }
    };
    let (source_url, dlq_url) = (queue_url("orders").await, queue_url("orders-dlq").await);
    let event =
        json!({"specversion": "1.0", "id": "evt-9", "source": "/t", "type": "order.placed"});
    (sqs.send_message().queue_url(&dlq_url))
        .message_body(event.to_string())
        .send()
        .await
        .unwrap();
    let api = api(feed_server().await);
    let pipeline = format!("{CRD}/eventpipelines/orders");
    let mut p = api.get(&pipeline).unwrap();
    p["spec"]["sources"] = json!([{"queueBindingRef": {"name": "orders"}}]);
    api.put(&pipeline, p);
    api.put(
        &format!("{CRD}/queuebindings/orders"),
        json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
            "metadata": {"name": "orders", "namespace": "default", "uid": "b-1"},
            "spec": {"sqs": {"queueName": "orders"}},
            "status": {"queueUrl": source_url, "dlqUrl": dlq_url},
        }),
    );
    // The stream lag comes from the metrics cache, the DLQ depth from SQS.
    let cache = Cache::default();
    let lag = Values {
        stream_lag_seconds: Some(12),
        ..Default::default()
    };
    cache.set("default", "orders", lag);
    let (url, stop) = console_with(&api, moto.sdk_config(), Some("s3cret"), cache).await;
    let dlq_depth = |s: &Value| s["pipelines"][0]["depths"]["dead_letters"].clone();
    let state = state_when(&url, |s| {
        dlq_depth(s) == 1 && s["pipelines"][0]["dead_letters"] == true
    })
    .await;
    assert_eq!(state["pipelines"][0]["depths"]["stream_lag_seconds"], 12);
    let listed = get_json(&format!(
        "{url}/api/pipelines/default%2Forders/dead-letters"
    ))
    .await;
    assert_eq!(listed[0]["letters"][0]["event_id"], "evt-9");
    let (status, _) = redrive(&url, &[PAGE]).await;
    assert_eq!(status, 401);
    let (status, body) = redrive(&url, &[PAGE, ("authorization", "Bearer s3cret")]).await;
    assert_eq!((status, body), (200, json!({"redriven": 1, "left": 0})));
    let state = state_when(&url, |s| dlq_depth(s) == 0).await;
    assert_eq!(
        state["pipelines"][0]["depths"]["queue"], 1,
        "back on its queue"
    );
    assert_eq!(state["pipelines"][0]["depths"]["stream_lag_seconds"], 12);
    stop.cancel();
}

/// Reached through `kubectl port-forward`, it answers only requests naming a loopback
/// host, though it listens beyond loopback in its pod: a site whose name was
/// re-pointed at 127.0.0.1 reads nothing.
#[tokio::test]
async fn answers_only_requests_naming_a_loopback_host() {
    let api = api(feed_server().await);
    let (url, stop) = console(&api, no_aws(), None).await;
    let http = reqwest::Client::new();
    let ask = |host: &'static str| {
        let get = http.get(format!("{url}/api/state")).header("host", host);
        async move { get.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ask("localhost:7070").await, 200);
    assert_eq!(ask("evil.example:7070").await, 421);
    stop.cancel();
}
