//! Batch delivery from SQS, against moto: an HTTP processor taking several events per
//! request (CloudEvents batched mode) with Lambda's partial failures, whole-batch
//! failures and throttling, and the DynamoDB processor writing with BatchWriteItem.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::batch_sink::{BatchRequest, BatchSink};
use common::*;
use eventpipe_testkit::Moto;
use serde_json::json;

fn config(max_receive_count: u32, spec: &str) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {{name: p}}
spec:
  maxReceiveCount: {max_receive_count}
  backoff: {{initial: 200ms, multiplier: 2, max: 1s, jitter: none}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  sqs: {{queueName: in, create: true, waitTime: 1s, visibilityTimeout: 5s}}
  deadLetterPolicyRef: {{name: p}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
{spec}
"#
    )
}

/// Concurrency 10 means one receive at a time: moto can hand a message to two
/// receives at once (a standard queue's rare duplicate), which would make the
/// delivery counts these tests check depend on its timing.
fn batched(sink: &BatchSink, max: usize) -> String {
    format!(
        "  processor: {{http: {{url: \"{}\", batch: {{maxSize: {max}, window: 300ms}}}}}}\n  delivery: {{concurrency: 10}}",
        sink.url
    )
}

#[tokio::test]
async fn events_go_in_batches_and_only_the_items_a_response_names_are_retried() {
    let sink = BatchSink::start(|r, _| {
        let poison = r.ids().into_iter().filter(|id| id.starts_with('p'));
        (200, poison.collect())
    })
    .await;
    let moto = Moto::start();
    let filter = "\n  filter: {type: [t]}";
    let cfg = config(2, &format!("{}{filter}", batched(&sink, 10)));
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    let mut events: Vec<(String, &str)> = (0..25).map(|i| (format!("e{i}"), "t")).collect();
    events.extend([("p1".into(), "t"), ("p2".into(), "t")]);
    events.extend((0..3).map(|i| (format!("s{i}"), "skip")));
    for (id, ty) in &events {
        send(&sqs, &urls["in"], &cloudevent(id, ty, json!({"n": id}))).await;
    }
    let worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(
        30 * SECONDS,
        "25 delivered and 2 dead-lettered",
        async || sink.delivered_ids().len() == 25 && depth(&sqs, &urls["in-dlq"]).await.0 == 2,
    )
    .await;

    let requests = sink.requests();
    for r in &requests {
        assert_eq!(
            r.headers["content-type"],
            "application/cloudevents-batch+json"
        );
        assert!(r.events.len() <= 10, "{} events", r.events.len());
        assert!(r.headers.contains_key("traceparent"), "the batch span");
        for e in &r.events {
            assert_eq!(e["type"], "t", "filtered events are never sent");
            assert_eq!(
                e["correlationid"],
                format!("corr-{}", e["id"].as_str().unwrap())
            );
            assert_eq!(e["data"]["n"], e["id"]);
            assert!(
                e["traceparent"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("00-"))
            );
        }
    }
    assert!(requests.iter().any(|r| r.events.len() > 1), "batched");
    let sent = sink.sent();
    for i in 0..25 {
        assert_eq!(
            sent[&format!("e{i}")],
            1,
            "a delivered event is not sent again"
        );
    }
    assert_eq!(
        (sent["p1"], sent["p2"]),
        (2, 2),
        "maxReceiveCount deliveries each"
    );
    let letters = drain(&sqs, &urls["in-dlq"]).await;
    for m in &letters {
        let error = &m.message_attributes().unwrap()["eventpipe-error"];
        let error = error.string_value().unwrap();
        assert!(error.contains("batchItemFailures"), "{error}");
    }
    // Events concluded together from one answer each log in their own span.
    let log = worker.log();
    let astray = lines_in_another_events_span(&log);
    assert!(astray.is_empty(), "{astray:#?}");
    // Deletes go out in batches, a moment after the deliveries.
    eventually(10 * SECONDS, "every message acknowledged", async || {
        depth(&sqs, &urls["in"]).await == (0, 0)
    })
    .await;
}

#[tokio::test]
async fn a_failed_batch_fails_every_event_and_a_throttled_one_spends_no_receive() {
    // The first request fails whole; the next two throttle; then all is well.
    let answers: HashMap<usize, u16> = HashMap::from([(0, 500), (1, 429), (2, 503)]);
    let sink = BatchSink::start(move |_, n| (*answers.get(&n).unwrap_or(&200), vec![])).await;
    let moto = Moto::start();
    let cfg = config(2, &batched(&sink, 5));
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    send_numbered(&sqs, &urls["in"], 12).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(40 * SECONDS, "all twelve delivered", async || {
        distinct_ids(&sink.delivered_ids()) == 12
    })
    .await;
    let requests = sink.requests();
    let after_first: Vec<String> = requests[1..].iter().flat_map(BatchRequest::ids).collect();
    for id in requests[0].ids() {
        assert!(
            after_first.contains(&id),
            "{id} of the failed batch was sent again"
        );
    }
    let letters = drain(&sqs, &urls["in-dlq"]).await;
    let why: Vec<&str> = (letters.iter())
        .filter_map(|m| {
            m.message_attributes()?
                .get("eventpipe-error")?
                .string_value()
        })
        .collect();
    assert!(letters.is_empty(), "nothing dead-lettered, but: {why:?}");
}

#[tokio::test]
async fn duplicates_are_delivered_once_and_each_event_has_its_outcome_event() {
    let sink = BatchSink::start(|_, _| (200, vec![])).await;
    let moto = Moto::start();
    let spec = format!(
        "{}\n  delivery: {{concurrency: 30, idempotency: {{tableName: seen}}}}\n  destinations:\n    onSuccess: {{queueBindingRef: {{name: outcomes}}, type: saved}}",
        batched(&sink, 10).replace("\n  delivery: {concurrency: 10}", "")
    );
    let outcomes = "---\napiVersion: eventpipe.dev/v1alpha1\nkind: QueueBinding\nmetadata: {name: outcomes}\nspec:\n  sqs: {queueName: outcomes, create: true}\n";
    let cfg = config(2, &spec).replacen(
        "---\napiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline",
        &format!("{outcomes}---\napiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline"),
        1,
    );
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    send_numbered(&sqs, &urls["in"], 10).await;
    send_numbered(&sqs, &urls["in"], 5).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    eventually(30 * SECONDS, "every message acknowledged", async || {
        depth(&sqs, &urls["in"]).await == (0, 0) && depth(&sqs, &urls["outcomes"]).await.0 == 10
    })
    .await;
    assert!(sink.sent().values().all(|n| *n == 1), "{:?}", sink.sent());
    assert_eq!(sink.sent().len(), 10);
    let mut subjects: Vec<String> = drain(&sqs, &urls["outcomes"])
        .await
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap())
        .inspect(|o| {
            assert_eq!(
                o["correlationid"],
                format!("corr-{}", o["subject"].as_str().unwrap())
            )
        })
        .map(|o| o["subject"].as_str().unwrap().to_string())
        .collect();
    subjects.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    want.sort();
    assert_eq!(subjects, want, "one outcome per event");
}

fn distinct_ids(ids: &[String]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

#[tokio::test]
async fn the_dynamodb_processor_writes_batches_once_per_event_id() {
    let moto = Moto::start();
    let spec = "  processor: {dynamodb: {tableName: stored, create: true, batch: {maxSize: 25, window: 200ms}}}\n  delivery: {concurrency: 40}";
    let cfg = config(2, spec);
    let urls = provision(&moto, &cfg).await;
    let sqs = moto.sqs();
    send_numbered(&sqs, &urls["in"], 30).await;
    // The same event twice: one item.
    send(&sqs, &urls["in"], &cloudevent("e7", "t", json!({}))).await;
    let _worker = WorkerProcess::start(&moto, &cfg, &[]).await;
    let ddb = moto.dynamodb();
    eventually(
        30 * SECONDS,
        "thirty items and the queue empty",
        async || {
            let items = ddb.scan().table_name("stored").send().await.unwrap();
            items.count() == 30 && depth(&sqs, &urls["in"]).await == (0, 0)
        },
    )
    .await;
    let item = ddb
        .get_item()
        .table_name("stored")
        .key("id", AttributeValue::S("e3".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["type"].as_s().unwrap(), "t");
    assert_eq!(depth(&sqs, &urls["in-dlq"]).await.0, 0);
}

#[tokio::test]
async fn a_batch_window_as_long_as_the_delivery_timeout_is_refused_at_start() {
    let moto = Moto::start();
    let spec = "  processor: {http: {url: \"http://127.0.0.1:9/\", batch: {maxSize: 10, window: 30s}}}\n  delivery: {timeout: 30s}";
    let cfg = config(2, spec);
    provision(&moto, &cfg).await;
    let err = start_failing(&moto, &temp_dir("batch-window"), &cfg);
    assert!(
        err.contains(
            "processor.http.batch.window (30s) must be shorter than delivery.timeout (30s)"
        ),
        "{err}"
    );
}
