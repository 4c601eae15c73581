//! Idempotency, the processors, destinations and a large run with poison messages,
//! against moto.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use eventpipe_testkit::Moto;
use serde_json::json;

const POLICY: &str = r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {name: p}
spec:
  maxReceiveCount: 3
  backoff: {initial: 1s, multiplier: 2, max: 1m, jitter: none}
  nonRetryable: {httpStatuses: [422]}
"#;

fn binding(name: &str, queue: &str) -> String {
    format!(
        "---\napiVersion: eventpipe.dev/v1alpha1\nkind: QueueBinding\nmetadata: {{name: {name}}}\nspec:\n  sqs: {{queueName: {queue}, create: true, waitTime: 1s, visibilityTimeout: 5s}}\n  deadLetterPolicyRef: {{name: p}}\n"
    )
}

fn pipeline(spec: &str) -> String {
    format!(
        "---\napiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline\nmetadata: {{name: t}}\nspec:\n  sources: [{{queueBindingRef: {{name: in}}}}]\n{spec}\n"
    )
}

/// Pipeline `t` consuming binding `in` with `spec`, with these other bindings (queues
/// of the same name), its queues created; returns the YAML and the queue URLs.
async fn provisioned(
    moto: &Moto,
    others: &[&str],
    spec: &str,
) -> (String, HashMap<String, String>) {
    let bindings: String = others.iter().map(|b| binding(b, b)).collect();
    let cfg = format!(
        "{POLICY}{}{bindings}{}",
        binding("in", "in"),
        pipeline(spec)
    );
    let urls = provision(moto, &cfg).await;
    (cfg, urls)
}

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

fn with_trace(id: &str, data: serde_json::Value, trace: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&cloudevent(id, "t", data)).expect("cloudevent() writes JSON");
    v["traceparent"] = json!(traceparent(trace));
    v.to_string()
}

#[tokio::test]
async fn duplicates_are_delivered_once_with_idempotency() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    let (cfg, urls) = provisioned(&moto, &[], &format!(
        "  processor: {{http: {{url: \"{}\"}}}}\n  delivery: {{idempotency: {{tableName: seen, ttl: 1h}}}}",
        sink.url
    )).await;
    let sqs = moto.sqs();
    for _ in 0..3 {
        send(&sqs, &urls["in"], &cloudevent("dup", "t", json!({}))).await;
    }
    send(&sqs, &urls["in"], &cloudevent("other", "t", json!({}))).await;
    let worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "queue drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, ["dup", "other"]);
    assert!(worker.metrics().await.contains(r#"outcome="duplicate"} 2"#));
    let item = moto
        .dynamodb()
        .get_item()
        .table_name("seen")
        .key("id", AttributeValue::S("dup".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        item.item.unwrap()["status"],
        AttributeValue::S("COMPLETED".into())
    );
}

#[tokio::test]
async fn a_crash_mid_delivery_is_retried_after_the_claim_expires_not_lost() {
    // The first delivery hangs; the worker is killed; a new one delivers it.
    let sink = Sink::start(|_, seen| {
        if seen == 0 {
            (200, Duration::from_secs(60))
        } else {
            (200, Duration::ZERO)
        }
    })
    .await;
    let moto = Moto::start();
    let (cfg, urls) = provisioned(&moto, &[], &format!(
        "  processor: {{http: {{url: \"{}\", timeout: 60s}}}}\n  delivery: {{timeout: 2s, idempotency: {{tableName: seen}}}}",
        sink.url
    )).await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &cloudevent("crash", "t", json!({}))).await;
    let mut first = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(10 * SECONDS, "first delivery under way", async || {
        sink.count() == 1
    })
    .await;
    first.kill();
    let _second = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(
        40 * SECONDS,
        "delivered after the claim expired",
        async || sink.completed_count() == 1,
    )
    .await;
    eventually(10 * SECONDS, "deleted", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    assert_eq!(sink.count(), 2);
}

#[tokio::test]
async fn dynamodb_processor_puts_events_with_their_trace_and_counts_aggregates() {
    let moto = Moto::start();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (put_cfg, urls) = provisioned(
        &moto,
        &[],
        "  processor: {dynamodb: {tableName: events, create: true}}",
    )
    .await;
    let sqs = moto.sqs();
    send(
        &sqs,
        &urls["in"],
        &with_trace("e1", json!({"repo": "acme/w"}), trace),
    )
    .await;
    send(
        &sqs,
        &urls["in"],
        &with_trace("e1", json!({"repo": "acme/w"}), trace),
    )
    .await; // redelivered
    let worker = WorkerProcess::start(&moto, &put_cfg, &[]).await;
    eventually(20 * SECONDS, "queue drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    drop(worker);
    let ddb = moto.dynamodb();
    let items = ddb
        .scan()
        .table_name("events")
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = eventpipe_core::item::to_json(items[0].clone());
    assert_eq!(item["id"], "e1");
    assert_eq!(item["data"]["repo"], "acme/w");
    assert_eq!(item["correlationid"], "corr-e1");
    let stored = item["_eventpipe"]["traceparent"].as_str().unwrap();
    assert_eq!(
        trace_id(stored),
        trace,
        "the stored trace continues the message's"
    );
    assert_ne!(stored, traceparent(trace), "and is the delivery's own span");
    let stored_at = item["_eventpipe"]["stored_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stored_at).is_ok(),
        "{stored_at}"
    );

    let count_cfg = format!(
        "{POLICY}{}{}",
        binding("in", "counts-in"),
        pipeline(
            "  processor: {dynamodb: {tableName: counts, create: true, aggregate: {key: [{name: repo, jsonPointer: /data/repo}, {name: day, jsonPointer: /data/at, date: true}], counter: comments}}}\n  delivery: {idempotency: {tableName: seen}}"
        )
    );
    let urls = provision(&moto, &count_cfg).await;
    for (id, repo) in [
        ("c1", "acme/w"),
        ("c2", "acme/w"),
        ("c2", "acme/w"),
        ("c3", "acme/g"),
    ] {
        send(
            &sqs,
            &urls["in"],
            &cloudevent(id, "t", json!({"repo": repo, "at": "2026-11-23T10:00:00Z"})),
        )
        .await;
    }
    let _worker = WorkerProcess::start(&moto, &count_cfg, &[]).await;
    eventually(20 * SECONDS, "queue drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    let get = |id: &str| {
        let ddb = ddb.clone();
        let id = id.to_string();
        async move {
            let out = ddb
                .get_item()
                .table_name("counts")
                .key("id", AttributeValue::S(id))
                .send()
                .await
                .unwrap();
            eventpipe_core::item::to_json(out.item.unwrap())
        }
    };
    let w = get("acme/w#2026-11-23").await;
    assert_eq!(w["comments"], 2, "{w}");
    assert_eq!(w["repo"], "acme/w");
    assert_eq!(w["day"], "2026-11-23");
    assert_eq!(get("acme/g#2026-11-23").await["comments"], 1);
}

#[tokio::test]
async fn sqs_processor_forwards_with_trace_and_correlation() {
    let moto = Moto::start();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let (cfg, urls) = provisioned(
        &moto,
        &["out"],
        "  processor: {sqs: {queueBindingRef: {name: out}}}",
    )
    .await;
    let sqs = moto.sqs();
    send(&sqs, &urls["in"], &with_trace("f1", json!({"x": 1}), trace)).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "forwarded", async || {
        depth(&sqs, &urls["out"]).await.0 == 1
    })
    .await;
    let got = drain(&sqs, &urls["out"]).await;
    let attrs = got[0].message_attributes.clone().unwrap();
    assert_eq!(
        attrs["correlation-id"].string_value.as_deref(),
        Some("corr-f1")
    );
    assert_eq!(
        trace_id(attrs["traceparent"].string_value.as_deref().unwrap()),
        trace
    );
    let body: serde_json::Value = serde_json::from_str(got[0].body().unwrap()).unwrap();
    assert_eq!(body["id"], "f1");
    assert_eq!(body["data"]["x"], 1);
    assert_eq!(trace_id(body["traceparent"].as_str().unwrap()), trace);
}

#[tokio::test]
async fn outcome_events_follow_success_and_dead_lettering() {
    let sink = Sink::failing(422, |id| id == "bad").await;
    let moto = Moto::start();
    let (cfg, urls) = provisioned(&moto, &["outcomes"], &format!(
        "  processor: {{http: {{url: \"{}\"}}}}\n  destinations:\n    onSuccess: {{queueBindingRef: {{name: outcomes}}, type: note-saved}}\n    onFailure: {{queueBindingRef: {{name: outcomes}}, type: note-failed}}",
        sink.url
    )).await;
    let sqs = moto.sqs();
    let events = [
        ("good", "note-created", json!({"text": "hi"})),
        ("bad", "note-created", json!({"text": ""})),
    ];
    send_events(&sqs, &urls["in"], &events).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "two outcomes", async || {
        depth(&sqs, &urls["outcomes"]).await.0 == 2
    })
    .await;
    let outcomes: HashMap<String, serde_json::Value> = drain(&sqs, &urls["outcomes"])
        .await
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap())
        .map(|v| (v["type"].as_str().unwrap().to_string(), v))
        .collect();
    let saved = &outcomes["note-saved"];
    assert_eq!(saved["subject"], "good");
    assert_eq!(saved["correlationid"], "corr-good");
    assert_eq!(saved["data"]["data"]["text"], "hi");
    let failed = &outcomes["note-failed"];
    assert_eq!(failed["subject"], "bad");
    assert!(failed["data"]["error"].as_str().unwrap().contains("422"));
    assert_eq!(depth(&sqs, &urls["in-dlq"]).await.0, 1);
}

#[tokio::test]
async fn a_cloudevent_in_the_response_is_published_as_the_reply() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/charge", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/charge",
        axum::routing::post(|headers: axum::http::HeaderMap| async move {
            let order = headers["ce-subject"].to_str().unwrap().to_string();
            (
                [
                    ("ce-id", format!("pay-{order}")),
                    ("ce-source", "/payments".into()),
                    ("ce-type", "PaymentCompleted".into()),
                    ("ce-specversion", "1.0".into()),
                    ("content-type", "application/json".into()),
                ],
                format!(r#"{{"orderId": "{order}"}}"#),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let moto = Moto::start();
    let (cfg, urls) = provisioned(&moto, &["payments"], &format!(
        "  processor: {{http: {{url: \"{url}\"}}}}\n  destinations: {{reply: {{queueBindingRef: {{name: payments}}}}}}"
    )).await;
    let sqs = moto.sqs();
    let mut placed: serde_json::Value =
        serde_json::from_str(&cloudevent("o1", "OrderPlaced", json!({}))).unwrap();
    placed["subject"] = json!("order-1");
    send(&sqs, &urls["in"], &placed.to_string()).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(20 * SECONDS, "a reply", async || {
        depth(&sqs, &urls["payments"]).await.0 == 1
    })
    .await;
    let reply: serde_json::Value =
        serde_json::from_str(drain(&sqs, &urls["payments"]).await[0].body().unwrap()).unwrap();
    assert_eq!(reply["type"], "PaymentCompleted");
    assert_eq!(reply["id"], "pay-order-1");
    assert_eq!(reply["data"]["orderId"], "order-1");
    assert_eq!(
        reply["correlationid"], "corr-o1",
        "the reply keeps the correlation id"
    );
}

#[tokio::test]
async fn two_thousand_messages_with_one_percent_poison() {
    let sink = Sink::failing(500, |id| id.starts_with("poison")).await;
    let moto = Moto::start();
    let (cfg, urls) = provisioned(&moto, &[], &format!(
        "  processor: {{http: {{url: \"{}\"}}}}\n  delivery: {{concurrency: 32, idempotency: {{tableName: seen}}}}",
        sink.url
    )).await;
    let sqs = moto.sqs();
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    // Fed at a steady 50/s in batches of ten: with idempotency each message costs moto
    // about three requests, and a deep backlog slows it sharply.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for batch in 0..200 {
        tick.tick().await;
        let entries = (0..10).map(|i| {
            let n = batch * 10 + i;
            let id = if n % 100 == 42 {
                format!("poison-{n}")
            } else {
                format!("good-{n}")
            };
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(cloudevent(&id, "t", json!({"n": n})))
                .build()
                .unwrap()
        });
        sqs.send_message_batch()
            .queue_url(&urls["in"])
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
    eventually(90 * SECONDS, "1980 good deliveries", async || {
        sink.completed_count() >= 1980
    })
    .await;
    eventually(60 * SECONDS, "20 dead letters", async || {
        depth(&sqs, &urls["in-dlq"]).await.0 == 20
    })
    .await;
    eventually(30 * SECONDS, "source drained", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in sink.completed.lock().unwrap().iter() {
        *per_id.entry(r.id().to_string()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 1980);
    assert!(
        per_id.values().all(|n| *n == 1),
        "a good message was delivered twice"
    );
    let poison_deliveries = sink
        .ids()
        .iter()
        .filter(|i| i.starts_with("poison"))
        .count();
    assert_eq!(
        poison_deliveries, 60,
        "each poison message delivered exactly maxReceiveCount times"
    );
}
