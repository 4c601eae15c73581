//! The external metrics API: discovery, values from moto's queues, and TLS.

mod common;

use std::sync::Arc;

use eventpipe_crds::{EventPipeline, QueueBinding};
use eventpipe_operator::context::Context;
use eventpipe_operator::external_metrics::{self, Cache};
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

async fn serve(cache: Cache) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, external_metrics::router(cache))
            .await
            .unwrap()
    });
    url
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";

#[tokio::test]
async fn n_messages_in_the_queue_read_as_n() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = sqs
        .create_queue()
        .queue_name("orders")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for _ in 0..7 {
        sqs.send_message()
            .queue_url(&url)
            .message_body("x")
            .send()
            .await
            .unwrap();
    }
    let pipeline: EventPipeline = serde_json::from_value(json!({
        "metadata": {"name": "hooks", "namespace": "shop"},
        "spec": {"sources": [{"queueBindingRef": {"name": "orders"}}], "processor": {"http": {"url": "http://x"}}}
    }))
    .unwrap();
    let binding: QueueBinding = serde_json::from_value(json!({
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"sqs": {"queueName": "orders"}},
        "status": {"queueUrl": url}
    }))
    .unwrap();
    let cache = Cache::default();
    let ctx = Context::new(
        common::FakeApi::new().client(),
        Default::default(),
        moto.sdk_config(),
        Default::default(),
    );
    external_metrics::refresh(&ctx, &[Arc::new(pipeline)], &[Arc::new(binding)], &cache).await;
    let base = serve(cache).await;

    let (code, list) = get(&format!("{base}{BASE}/namespaces/shop/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks")).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][0]["value"], "7");
    assert_eq!(list["items"][0]["metricName"], "eventpipe_queue_depth");
    assert_eq!(
        list["items"][0]["metricLabels"]["eventpipe.dev/pipeline"],
        "hooks"
    );

    let (_, other) = get(&format!("{base}{BASE}/namespaces/other/eventpipe_queue_depth?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks")).await;
    assert_eq!(
        other["items"],
        json!([]),
        "another namespace's pipeline of the same name is not this one"
    );
    let (code, _) = get(&format!(
        "{base}{BASE}/namespaces/shop/cpu?labelSelector=eventpipe.dev%2Fpipeline%3Dhooks"
    ))
    .await;
    assert_eq!(code, 404);
    let (code, err) = get(&format!(
        "{base}{BASE}/namespaces/shop/eventpipe_queue_depth"
    ))
    .await;
    assert_eq!(code, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("labelSelector must select eventpipe.dev/pipeline")
    );
}

#[tokio::test]
async fn discovery_lists_both_metrics_over_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = external_metrics::tls_config(None, None).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(external_metrics::serve_tls(
        listener,
        tls,
        external_metrics::router(Cache::default()),
        stop.clone(),
    ));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let text = client
        .get(format!("https://{addr}{BASE}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let names: Vec<&str> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["eventpipe_queue_depth", "eventpipe_stream_lag_seconds"]
    );
    stop.cancel();
}
