//! DynamoDB Streams against moto: records as events in per-key order, where reading
//! starts, trace continuation and bad configuration. moto gives every table one
//! shard that never splits or closes, so lineage, splits and closed shards are
//! covered by the worker's unit tests of shards and leases; sharing a stream between
//! replicas is in `stream_replicas.rs`, giving records up in `stream_dead_letters.rs`.

mod common;

use std::collections::HashSet;

use common::streams::*;
use common::*;
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

#[tokio::test]
async fn inserts_modifies_and_removes_arrive_as_events_in_per_key_order() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    for round in 1..=3 {
        for key in ["a", "b", "c"] {
            put(&moto, key, round).await;
        }
    }
    delete(&moto, "b").await;
    let cfg = config(
        &http(&sink),
        "    batchSize: 4",
        "  delivery: {ordering: perGroup}",
    );
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "ten records delivered", async || {
        sink.completed_count() == 10
    })
    .await;

    let received = sink.received.lock().unwrap().clone();
    let of = |key: &str| {
        received
            .iter()
            .filter(|r| subject(r) == key)
            .map(|r| (r.headers["ce-type"].clone(), body(r)["n"].as_i64().unwrap()))
            .collect::<Vec<_>>()
    };
    let (insert, modify, remove) = (
        "eventpipe.dynamodb.INSERT".to_string(),
        "eventpipe.dynamodb.MODIFY".to_string(),
        "eventpipe.dynamodb.REMOVE".to_string(),
    );
    assert_eq!(
        of("a"),
        [
            (insert.clone(), 1),
            (modify.clone(), 2),
            (modify.clone(), 3)
        ]
    );
    // A REMOVE carries the item as it was.
    assert_eq!(
        of("b"),
        [(insert, 1), (modify.clone(), 2), (modify, 3), (remove, 3)]
    );
    let first = &received[0];
    assert_eq!(first.headers["ce-source"], "/eventpipe/t/in");
    assert_eq!(
        first.headers["ce-correlationid"], "a",
        "the key, without _eventpipe"
    );
    assert_eq!(
        body(first),
        json!({"id": "a", "n": 1}),
        "data is the item as plain JSON"
    );
    let ids: HashSet<&str> = received.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 10, "every record has its own id");

    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(
            r#"eventpipe_events_processed_total{pipeline="t",source="in",outcome="delivered"} 10"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"eventpipe_stream_iterator_age_seconds{pipeline="t",source="in",shard="shardId-"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eventpipe_stream_lag_seconds{pipeline="t",source="in"}"#),
        "{metrics}"
    );
    assert!(owns_a_lease(&worker).await, "{metrics}");
    eventually(10 * SECONDS, "checkpoint at the last record", async || {
        let l = lease(&moto).await;
        l["checkpoint"]
            .as_str()
            .is_some_and(|c| c.chars().all(|d| d.is_ascii_digit()))
            && l["owner"].is_string()
    })
    .await;
    // The lease carries the iterator age for the operator: zero once caught up,
    // measured moments ago.
    let since = eventpipe_core::checkpoints::unix_millis(std::time::SystemTime::now()) as f64;
    eventually(10 * SECONDS, "caught-up age on the lease", async || {
        let l = lease(&moto).await;
        l["iteratorAgeMs"] == 0 && l["iteratorAgeAt"].as_f64().is_some_and(|at| at >= since)
    })
    .await;
}

#[tokio::test]
async fn latest_starts_at_the_head_of_the_stream() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    put(&moto, "old", 1).await;
    let cfg = config(&http(&sink), "    startingPosition: LATEST", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "reading", async || reading(&worker).await).await;
    put(&moto, "new", 1).await;
    eventually(20 * SECONDS, "the new record delivered", async || {
        sink.completed_count() == 1
    })
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    assert_eq!(completed(&sink), ["new"]);
}

#[tokio::test]
async fn the_trace_in_the_item_continues_through_the_http_processor() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    put_event(&moto, "delivery-1", trace).await;
    let cfg = config(&http(&sink), "", "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "delivered", async || {
        sink.completed_count() == 1
    })
    .await;
    let r = sink.received.lock().unwrap()[0].clone();
    assert_eq!(trace_id(&r.headers["traceparent"]), trace);
    assert_eq!(r.headers["ce-correlationid"], "issue-42");
    assert_eq!(r.headers["ce-subject"], "delivery-1");
    assert_ne!(r.id(), "delivery-1", "the record's own id, not the item's");
    // The GitHub analytics example reads these pointers from the event.
    let event = json!({"data": body(&r)});
    assert_eq!(
        event.pointer("/data/data/repository/full_name"),
        Some(&json!("acme/widgets"))
    );
    assert!(event.pointer("/data/time").is_some_and(Value::is_string));
    assert!(
        event.pointer("/data/_eventpipe").is_none(),
        "metadata stays out of data"
    );
}

#[tokio::test]
async fn the_trace_in_the_item_continues_into_the_item_the_dynamodb_processor_writes() {
    let moto = Moto::start();
    setup(&moto).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    put_event(&moto, "delivery-2", trace).await;
    let cfg = config("{dynamodb: {tableName: copies, create: true}}", "", "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    let ddb = moto.dynamodb();
    let mut items = vec![];
    eventually(20 * SECONDS, "the copy written", async || {
        items = ddb
            .scan()
            .table_name("copies")
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        !items.is_empty()
    })
    .await;
    let copy = eventpipe_core::item::to_json(items[0].clone());
    assert_eq!(copy["type"], "eventpipe.dynamodb.INSERT");
    assert_eq!(copy["correlationid"], "issue-42");
    assert_eq!(
        copy["data"]["data"]["repository"]["full_name"],
        "acme/widgets"
    );
    let stored = copy["_eventpipe"]["traceparent"].as_str().unwrap();
    assert_eq!(trace_id(stored), trace);
}

#[tokio::test]
async fn bad_stream_configuration_is_a_clear_error() {
    let moto = Moto::start();
    let dir = temp_dir("streams-badcfg");
    let run = |cfg: &str| start_failing(&moto, &dir, cfg);
    let sink = "{http: {url: \"http://127.0.0.1:9/x\"}}";
    // No table, and the binding does not create it.
    let err = run(&config(sink, "", ""));
    assert!(
        err.contains(r#"source QueueBinding "in""#) && err.contains(r#"table "comments""#),
        "{err}"
    );
    // The table exists, but its policy's dead-letter queue does not.
    eventpipe_core::provision::ensure_stream_table(&moto.dynamodb(), TABLE)
        .await
        .unwrap();
    let err = run(&config(sink, "", ""));
    assert!(
        err.contains(r#"dead-letter queue "comments-dlq" of DeadLetterPolicy "p" not found"#),
        "{err}"
    );
    // A table without a stream.
    eventpipe_core::provision::ensure_checkpoint_table(&moto.dynamodb(), "plain")
        .await
        .unwrap();
    let err = run(&config(sink, "", "").replace("tableName: comments", "tableName: plain"));
    assert!(err.contains(r#"table "plain" has no stream"#), "{err}");
}
