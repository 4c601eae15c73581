//! DynamoDB Streams against moto: records as events in per-key order, two replicas
//! sharing a stream, takeover after a crash, resuming after the checkpoint,
//! bisect-on-error and dead-lettering, maxRecordAge, trace continuation and bad
//! configuration. moto gives every table one shard that never splits or closes, so
//! lineage, splits and closed shards are covered by the unit tests of
//! `streams::shards` and `streams::lease`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use eventpipe_core::envelope::{self, NewEvent};
use eventpipe_testkit::Moto;
use eventpipe_worker::streams::lease::{Checkpoint, LeaseError, LeaseTable};
use serde_json::{Value, json};

const SECONDS: Duration = Duration::from_secs(1);
const TABLE: &str = "comments";
const CHECKPOINTS: &str = "checkpoints";
/// Short leases, so takeover after a crash happens within a test.
const FAST_LEASES: &[&str] = &["--lease-duration", "2s", "--grace-period", "5s"];

/// A pipeline `t` reading the stream of `comments` (binding `in`, policy `p`) into
/// `processor`; `stream` and `spec` are extra YAML lines for the binding's
/// `dynamodbStream` and the pipeline's spec.
fn config(processor: &str, stream: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: eventpipe.dev/v1alpha1
kind: DeadLetterPolicy
metadata: {{name: p}}
spec:
  maxReceiveCount: 2
  backoff: {{initial: 200ms, multiplier: 2, max: 1s, jitter: none}}
  nonRetryable: {{httpStatuses: [422]}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {{name: in}}
spec:
  dynamodbStream:
    tableName: {TABLE}
    checkpointTable: {CHECKPOINTS}
{stream}
  deadLetterPolicyRef: {{name: p}}
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: t}}
spec:
  sources: [{{queueBindingRef: {{name: in}}}}]
  processor: {processor}
{spec}
"#
    )
}

fn http(sink: &Sink) -> String {
    format!("{{http: {{url: \"{}\", timeout: 10s}}}}", sink.url)
}

/// The stream-enabled table and its dead-letter queue; returns the DLQ's URL.
async fn setup(moto: &Moto) -> String {
    eventpipe_core::provision::ensure_table(&moto.dynamodb(), TABLE, "id", true)
        .await
        .unwrap();
    moto.sqs()
        .create_queue()
        .queue_name(format!("{TABLE}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

async fn put(moto: &Moto, id: &str, n: i64) {
    moto.dynamodb()
        .put_item()
        .table_name(TABLE)
        .item("id", AttributeValue::S(id.into()))
        .item("n", AttributeValue::N(n.to_string()))
        .send()
        .await
        .unwrap();
}

async fn delete(moto: &Moto, id: &str) {
    moto.dynamodb()
        .delete_item()
        .table_name(TABLE)
        .key("id", AttributeValue::S(id.into()))
        .send()
        .await
        .unwrap();
}

fn subject(r: &Received) -> String {
    r.headers["ce-subject"].clone()
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

/// Item keys the sink completed (answered 2xx for), in order.
fn completed(sink: &Sink) -> Vec<String> {
    sink.completed.lock().unwrap().iter().map(subject).collect()
}

fn distinct(v: &[String]) -> usize {
    v.iter().collect::<HashSet<_>>().len()
}

/// The lease item of the stream's only shard.
async fn lease(moto: &Moto) -> Value {
    let items = moto
        .dynamodb()
        .scan()
        .table_name(CHECKPOINTS)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    assert_eq!(items.len(), 1, "one shard, one lease");
    eventpipe_core::item::to_json(items[0].clone())
}

async fn owns_a_lease(w: &WorkerProcess) -> bool {
    w.metrics()
        .await
        .contains(r#"eventpipe_stream_leases_owned{pipeline="t",source="in"} 1"#)
}

/// Reading has begun: the shard has reported an iterator age.
async fn reading(w: &WorkerProcess) -> bool {
    w.metrics()
        .await
        .contains("eventpipe_stream_iterator_age_seconds{")
}

fn attribute(m: &aws_sdk_sqs::types::Message, name: &str) -> String {
    m.message_attributes.as_ref().unwrap()[name]
        .string_value
        .clone()
        .unwrap()
}

fn dead_letter_subjects(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    let mut subjects: Vec<String> = messages
        .iter()
        .map(|m| {
            let event: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            event["subject"].as_str().unwrap().to_string()
        })
        .collect();
    subjects.sort();
    subjects
}

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
async fn two_replicas_deliver_each_record_once_and_a_stopped_one_hands_over_at_once() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    // Leases long enough that only a released lease can change hands within the test.
    let args = |id| {
        [
            "--lease-duration",
            "30s",
            "--grace-period",
            "5s",
            "--worker-id",
            id,
        ]
    };
    let cfg = config(&http(&sink), "    batchSize: 7", "");
    let mut a = WorkerProcess::start(&moto, &cfg, &args("replica-a")).await;
    let mut b = WorkerProcess::start(&moto, &cfg, &args("replica-b")).await;
    for i in 0..40 {
        put(&moto, &format!("k{i:02}"), i).await;
    }
    eventually(30 * SECONDS, "forty records delivered", async || {
        sink.completed_count() >= 40
    })
    .await;
    let owner = lease(&moto).await["owner"].clone();
    let (stopped, other, other_id) = match owner.as_str() {
        Some("replica-a") => (&mut a, &mut b, "replica-b"),
        Some("replica-b") => (&mut b, &mut a, "replica-a"),
        unowned => panic!("lease owned by {unowned:?}"),
    };
    assert!(!owns_a_lease(other).await, "one owner");
    let status = stopped.terminate(20 * SECONDS).await;
    assert!(status.success(), "{}", stopped.log());
    let released = lease(&moto).await;
    assert_ne!(released["owner"], owner, "released on shutdown: {released}");

    for i in 40..60 {
        put(&moto, &format!("k{i:02}"), i).await;
    }
    eventually(
        20 * SECONDS,
        "the other replica delivers the rest",
        async || sink.completed_count() >= 60,
    )
    .await;
    let keys = completed(&sink);
    assert_eq!(keys.len(), 60, "no record twice: {keys:?}");
    assert_eq!(distinct(&keys), 60);
    assert!(owns_a_lease(other).await);
    assert_eq!(lease(&moto).await["owner"], other_id);
}

#[tokio::test]
async fn a_killed_replica_loses_nothing_and_the_other_takes_over_its_shard() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(30))).await;
    let moto = Moto::start();
    setup(&moto).await;
    for i in 0..120 {
        put(&moto, &format!("k{i:03}"), i).await;
    }
    let cfg = config(&http(&sink), "    batchSize: 10", "");
    let args = |id| [FAST_LEASES, &["--worker-id", id]].concat();
    let mut a = WorkerProcess::start(&moto, &cfg, &args("replica-a")).await;
    let mut b = WorkerProcess::start(&moto, &cfg, &args("replica-b")).await;
    eventually(30 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 25
    })
    .await;
    let owner = lease(&moto).await["owner"].clone();
    let (dead, survivor, survivor_id) = match owner.as_str() {
        Some("replica-a") => (&mut a, &mut b, "replica-b"),
        Some("replica-b") => (&mut b, &mut a, "replica-a"),
        other => panic!("lease owned by {other:?}"),
    };
    dead.kill();
    assert!(sink.completed_count() < 120, "killed mid-stream");
    eventually(60 * SECONDS, "every record delivered", async || {
        distinct(&completed(&sink)) == 120
    })
    .await;
    assert_eq!(lease(&moto).await["owner"], survivor_id);
    assert!(owns_a_lease(survivor).await, "{}", survivor.log());
    // Only records after the last checkpoint (at most one batch) may come twice.
    let deliveries = completed(&sink).len();
    assert!(
        deliveries - 120 <= 10,
        "{deliveries} deliveries for 120 records"
    );
}

#[tokio::test]
async fn shutdown_finishes_the_batch_and_a_restart_resumes_after_the_checkpoint() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(150))).await;
    let moto = Moto::start();
    setup(&moto).await;
    for i in 0..20 {
        put(&moto, &format!("first-{i:02}"), i).await;
    }
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let mut first = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "the second batch under way", async || {
        sink.completed_count() >= 7
    })
    .await;
    assert!(
        first.terminate(20 * SECONDS).await.success(),
        "{}",
        first.log()
    );
    let done = sink.completed_count();
    assert!(
        done % 5 == 0 && done < 20,
        "stopped after a whole batch: {done}"
    );
    let l = lease(&moto).await;
    assert!(l.get("owner").is_none(), "released: {l}");

    for i in 0..5 {
        put(&moto, &format!("second-{i}"), i).await;
    }
    let _second = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(30 * SECONDS, "the rest delivered", async || {
        sink.completed_count() >= 25
    })
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    let keys = completed(&sink);
    assert_eq!(
        keys.len(),
        25,
        "nothing before the checkpoint again: {keys:?}"
    );
    assert_eq!(distinct(&keys), 25);
    assert!(
        keys[20..].iter().all(|k| k.starts_with("second-")),
        "in order: {keys:?}"
    );
}

#[tokio::test]
async fn a_replica_asked_for_its_shard_hands_it_over_after_its_batch() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(150))).await;
    let moto = Moto::start();
    setup(&moto).await;
    for i in 0..60 {
        put(&moto, &format!("k{i:02}"), i).await;
    }
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let slow_leases = ["--lease-duration", "10s", "--worker-id", "replica-a"];
    let a = WorkerProcess::start(&moto, &cfg, &slow_leases).await;
    eventually(20 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 7
    })
    .await;
    // Another replica, as the balancing of a real one would, asks for the lease.
    let consumer = lease(&moto).await["consumer"].as_str().unwrap().to_string();
    let b = LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &consumer, "replica-b");
    b.ask(&b.scan().await.unwrap()[0]).await.unwrap();
    eventually(20 * SECONDS, "handed over", async || {
        lease(&moto).await["owner"] == "replica-b"
    })
    .await;
    let done = sink.completed_count();
    assert!(
        done % 5 == 0 && done < 60,
        "handed over mid-stream after a whole batch: {done}"
    );
    assert_eq!(
        lease(&moto).await["checkpoint"],
        sink_checkpoint(&moto, done).await
    );

    let b = WorkerProcess::start(
        &moto,
        &cfg,
        &["--lease-duration", "10s", "--worker-id", "replica-b"],
    )
    .await;
    eventually(
        30 * SECONDS,
        "the new owner delivers the rest",
        async || sink.completed_count() >= 60,
    )
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    let keys = completed(&sink);
    assert_eq!(keys.len(), 60, "no record twice: {keys:?}");
    assert_eq!(distinct(&keys), 60);
    assert!(owns_a_lease(&b).await);
    assert!(!owns_a_lease(&a).await);
}

/// The sequence number of the `n`-th record of the stream (1-based).
async fn sink_checkpoint(moto: &Moto, n: usize) -> Value {
    let streams = aws_sdk_dynamodbstreams::Client::new(&moto.sdk_config());
    let arn = streams
        .list_streams()
        .table_name(TABLE)
        .send()
        .await
        .unwrap()
        .streams
        .unwrap()[0]
        .stream_arn
        .clone()
        .unwrap();
    let shard = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = streams
        .get_records()
        .shard_iterator(iterator)
        .limit(n as i32)
        .send()
        .await
        .unwrap()
        .records
        .unwrap();
    json!(
        records[n - 1]
            .dynamodb
            .as_ref()
            .unwrap()
            .sequence_number
            .clone()
            .unwrap()
    )
}

#[tokio::test]
async fn lease_writes_are_conditional_so_one_replica_owns_a_shard() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    eventpipe_core::provision::ensure_table(&ddb, CHECKPOINTS, "id", false)
        .await
        .unwrap();
    let a = LeaseTable::new(ddb.clone(), CHECKPOINTS, "t/in|arn", "a");
    let b = LeaseTable::new(ddb.clone(), CHECKPOINTS, "t/in|arn", "b");
    let other = LeaseTable::new(ddb.clone(), CHECKPOINTS, "u/in|arn", "a");
    a.create("s1", None, &Checkpoint::TrimHorizon)
        .await
        .unwrap();
    b.create("s1", None, &Checkpoint::Latest).await.unwrap();
    other.create("s1", None, &Checkpoint::Latest).await.unwrap();
    let leases = a.scan().await.unwrap();
    assert_eq!(leases.len(), 1, "one lease per shard and consumer");
    let fresh = &leases[0];
    assert_eq!(
        fresh.checkpoint,
        Checkpoint::TrimHorizon,
        "the first create wins"
    );
    assert_eq!((fresh.owner.as_deref(), fresh.counter), (None, 0));

    // Both replicas saw it free; the second take finds the counter moved on. (Run
    // one after the other: moto's conditional writes are not atomic under
    // concurrent requests, DynamoDB's are.)
    let taken = a.take(fresh).await.unwrap();
    assert_eq!((taken.owner.as_deref(), taken.counter), (Some("a"), 1));
    assert_eq!(b.take(fresh).await, Err(LeaseError::Lost));
    let (winner, loser) = (&a, &b);
    let key = &fresh.key;
    assert_eq!(loser.renew(key, None).await, Err(LeaseError::Lost));
    assert_eq!(
        loser
            .checkpoint(key, &Checkpoint::After("9".into()), None)
            .await,
        Err(LeaseError::Lost)
    );
    assert_eq!(
        loser.finish(key, &Checkpoint::ShardEnd, None).await,
        Err(LeaseError::Lost)
    );
    assert_eq!(
        loser.take(fresh).await,
        Err(LeaseError::Lost),
        "seen counter is stale"
    );
    assert_eq!(winner.renew(key, None).await, Ok(None));
    winner
        .checkpoint(key, &Checkpoint::After("5".into()), None)
        .await
        .unwrap();

    // A hand-off: asked, seen at the next renewal, given with the checkpoint.
    let held = loser.scan().await.unwrap().remove(0);
    loser.ask(&held).await.unwrap();
    assert_eq!(
        loser.ask(&held).await,
        Err(LeaseError::Lost),
        "one request at a time"
    );
    assert_eq!(
        winner.renew(key, None).await,
        Ok(Some(loser.me().to_string()))
    );
    winner
        .finish(key, &Checkpoint::After("7".into()), Some(loser.me()))
        .await
        .unwrap();
    let moved = a.scan().await.unwrap().remove(0);
    assert_eq!(moved.owner.as_deref(), Some(loser.me()));
    assert_eq!(moved.checkpoint, Checkpoint::After("7".into()));
    assert_eq!(moved.handoff, None);
    assert_eq!(winner.renew(key, None).await, Err(LeaseError::Lost));

    // Released leases are free; only unowned leases can be deleted.
    assert_eq!(winner.delete(key).await, Err(LeaseError::Lost));
    loser
        .finish(key, &Checkpoint::ShardEnd, None)
        .await
        .unwrap();
    let done = a.scan().await.unwrap().remove(0);
    assert!(done.finished() && done.owner.is_none());
    winner.delete(key).await.unwrap();
    assert!(a.scan().await.unwrap().is_empty());
    assert_eq!(
        other.scan().await.unwrap().len(),
        1,
        "other consumers keep theirs"
    );
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

/// Keys 0..n with `poison` failing with HTTP 500 every time.
async fn poisoned(moto: &Moto, n: usize, poison: usize) {
    for i in 0..n {
        let id = if i == poison {
            "poison".to_string()
        } else {
            format!("k{i:02}")
        };
        put(moto, &id, i as i64).await;
    }
}

fn poison_sink_behaviour(r: &Received, _: usize) -> (u16, Duration) {
    if r.headers["ce-subject"] == "poison" {
        (500, Duration::ZERO)
    } else {
        (200, Duration::ZERO)
    }
}

#[tokio::test]
async fn a_poison_record_is_bisected_out_and_dead_lettered_without_stalling_the_shard() {
    let sink = Sink::start(poison_sink_behaviour).await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 12, 3).await;
    let cfg = config(
        &http(&sink),
        "    batchSize: 5\n    bisectOnError: true",
        "",
    );
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(
        30 * SECONDS,
        "the eleven good records delivered",
        async || sink.completed_count() == 11,
    )
    .await;
    put(&moto, "later", 99).await;
    eventually(20 * SECONDS, "the shard goes on", async || {
        completed(&sink).contains(&"later".to_string())
    })
    .await;

    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
    let letter = &letters[0];
    assert_eq!(attribute(letter, "eventpipe-receive-count"), "2");
    assert!(attribute(letter, "eventpipe-error").contains("500"));
    assert!(attribute(letter, "eventpipe-shard-id").starts_with("shardId-"));
    assert!(!attribute(letter, "eventpipe-sequence-number").is_empty());
    assert!(attribute(letter, "eventpipe-source-stream").contains(":table/comments/stream/"));

    // Delivered twice (the policy's maxReceiveCount), and in shard order: the next
    // record only after the poison's last attempt.
    let received = sink.received.lock().unwrap().clone();
    let order: Vec<String> = received.iter().map(subject).collect();
    assert_eq!(order.iter().filter(|s| *s == "poison").count(), 2);
    let last_poison = order.iter().rposition(|s| s == "poison").unwrap();
    let next = order.iter().position(|s| s == "k04").unwrap();
    assert!(last_poison < next, "{order:?}");
    assert_eq!(
        distinct(&completed(&sink)),
        completed(&sink).len(),
        "no repeats"
    );
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(r#"outcome="dead_lettered"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="retried"} 1"#), "{metrics}");
}

#[tokio::test]
async fn without_bisecting_the_failed_range_of_the_batch_is_dead_lettered() {
    let sink = Sink::start(poison_sink_behaviour).await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 10, 1).await;
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let _worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    // Batches are k00 poison k02 k03 k04 | k05 .. k09.
    eventually(30 * SECONDS, "the second batch delivered", async || {
        completed(&sink).contains(&"k09".to_string())
    })
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(
        dead_letter_subjects(&letters),
        ["k02", "k03", "k04", "poison"]
    );
    let mut delivered = completed(&sink);
    delivered.sort();
    assert_eq!(delivered, ["k00", "k05", "k06", "k07", "k08", "k09"]);
    let k02 = letters
        .iter()
        .find(|m| m.body.as_deref().unwrap().contains("\"k02\""))
        .unwrap();
    assert!(
        attribute(k02, "eventpipe-error").starts_with("in the failed range from sequence number"),
        "{}",
        attribute(k02, "eventpipe-error")
    );
}

#[tokio::test]
async fn records_older_than_max_record_age_go_to_the_dead_letter_queue() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    put(&moto, "stale-1", 1).await;
    put(&moto, "stale-2", 2).await;
    tokio::time::sleep(3 * SECONDS).await;
    let cfg = config(&http(&sink), "    maxRecordAge: 1s", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "both dead-lettered", async || {
        worker
            .metrics()
            .await
            .contains(r#"outcome="dead_lettered"} 2"#)
    })
    .await;
    let letters = drain(&moto.sqs(), &dlq).await;
    assert_eq!(dead_letter_subjects(&letters), ["stale-1", "stale-2"]);
    assert!(attribute(&letters[0], "eventpipe-error").contains("maxRecordAge"));
    assert_eq!(attribute(&letters[0], "eventpipe-receive-count"), "0");
    assert_eq!(sink.count(), 0, "never delivered");
}

#[tokio::test]
async fn without_a_policy_records_past_max_record_age_are_discarded_and_the_shard_goes_on() {
    let sink = Sink::ok().await;
    let moto = Moto::start();
    setup(&moto).await;
    put(&moto, "stale-1", 1).await;
    put(&moto, "stale-2", 2).await;
    tokio::time::sleep(3 * SECONDS).await;
    let cfg = config(&http(&sink), "    maxRecordAge: 1s", "")
        .replace("  deadLetterPolicyRef: {name: p}\n", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "both discarded", async || {
        worker.metrics().await.contains(r#"outcome="discarded"} 2"#)
    })
    .await;
    put(&moto, "fresh", 3).await;
    eventually(20 * SECONDS, "the fresh one delivered", async || {
        sink.completed_count() == 1
    })
    .await;
    assert_eq!(completed(&sink), ["fresh"]);
    assert!(worker.log().contains("record given up and discarded"));
}

#[tokio::test]
async fn an_unreachable_dead_letter_queue_holds_the_shard_instead_of_skipping_the_record() {
    // The poison record fails slowly, so the DLQ is gone before it is dead-lettered.
    let sink = Sink::start(|r, _| match r.headers["ce-subject"].as_str() {
        "poison" => (500, Duration::from_secs(1)),
        _ => (200, Duration::ZERO),
    })
    .await;
    let moto = Moto::start();
    let dlq = setup(&moto).await;
    poisoned(&moto, 3, 1).await;
    let cfg = config(&http(&sink), "    bisectOnError: true", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    let sqs = moto.sqs();
    sqs.delete_queue().queue_url(&dlq).send().await.unwrap();
    eventually(20 * SECONDS, "dead-lettering fails", async || {
        worker.log().contains("could not dead-letter")
    })
    .await;
    assert_eq!(
        completed(&sink),
        ["k00"],
        "k02 waits behind the poison record"
    );
    let recreated = sqs
        .create_queue()
        .queue_name(format!("{TABLE}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    eventually(30 * SECONDS, "dead-lettered, then the rest", async || {
        completed(&sink).contains(&"k02".to_string())
    })
    .await;
    let letters = drain(&sqs, &recreated).await;
    assert_eq!(dead_letter_subjects(&letters), ["poison"]);
}

#[tokio::test]
async fn a_replica_that_loses_its_lease_stops_and_takes_it_back_when_the_owner_goes_quiet() {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(50))).await;
    let moto = Moto::start();
    setup(&moto).await;
    for i in 0..40 {
        put(&moto, &format!("k{i:02}"), i).await;
    }
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    let worker = WorkerProcess::start(&moto, &cfg, FAST_LEASES).await;
    eventually(20 * SECONDS, "delivery under way", async || {
        sink.completed_count() >= 5
    })
    .await;
    // Another replica takes the lease (as after a pause long enough for it to expire)
    // and then never renews it.
    let consumer = lease(&moto).await["consumer"].as_str().unwrap().to_string();
    let thief = LeaseTable::new(moto.dynamodb(), CHECKPOINTS, &consumer, "thief");
    let mut stolen = false;
    for _ in 0..100 {
        let seen = thief.scan().await.unwrap().remove(0);
        if thief.take(&seen).await.is_ok() {
            stolen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stolen, "the lease could not be taken");
    eventually(20 * SECONDS, "the worker notices", async || {
        worker.log().contains("lease taken by another replica")
            || worker.log().contains("the lease is another replica's now")
    })
    .await;
    eventually(30 * SECONDS, "taken back and finished", async || {
        distinct(&completed(&sink)) == 40
    })
    .await;
    assert_ne!(lease(&moto).await["owner"], "thief");
    let deliveries = completed(&sink).len();
    assert!(
        deliveries - 40 <= 5,
        "only the batch in flight again: {deliveries}"
    );
}

#[tokio::test]
async fn after_the_grace_period_an_unfinished_delivery_is_abandoned_and_delivered_again_later() {
    let sink = Sink::start(|r, seen| match (r.headers["ce-subject"].as_str(), seen) {
        ("slow", 0) => (200, Duration::from_secs(20)),
        _ => (200, Duration::ZERO),
    })
    .await;
    let moto = Moto::start();
    setup(&moto).await;
    for key in ["k0", "slow", "k2"] {
        put(&moto, key, 1).await;
    }
    let cfg = config(
        &format!("{{http: {{url: \"{}\", timeout: 60s}}}}", sink.url),
        "",
        "  delivery: {timeout: 60s}",
    );
    let args = ["--lease-duration", "2s", "--grace-period", "1s"];
    let mut first = WorkerProcess::start(&moto, &cfg, &args).await;
    eventually(20 * SECONDS, "the slow delivery under way", async || {
        sink.count() == 2
    })
    .await;
    assert!(
        first.terminate(15 * SECONDS).await.success(),
        "{}",
        first.log()
    );
    let l = lease(&moto).await;
    assert!(l.get("owner").is_none(), "released: {l}");
    assert_eq!(completed(&sink), ["k0"]);

    let _second = WorkerProcess::start(&moto, &cfg, &args).await;
    eventually(
        20 * SECONDS,
        "the abandoned record delivered again",
        async || sink.completed_count() == 3,
    )
    .await;
    assert_eq!(completed(&sink), ["k0", "slow", "k2"]);
}

/// Writes an item the way the ingress's DynamoDB publish and the DynamoDB sink do:
/// the event, with its trace context and correlation id in `_eventpipe`.
async fn put_event(moto: &Moto, id: &str, trace: &str) {
    let event = envelope::build(NewEvent {
        id: id.into(),
        source: "/eventpipe/hooks/github".into(),
        event_type: "issue_comment".into(),
        correlation_id: "issue-42".into(),
        data: json!({"repository": {"full_name": "acme/widgets"}}),
        trace: vec![(
            "traceparent".into(),
            format!("00-{trace}-00f067aa0ba902b7-01"),
        )],
        ..Default::default()
    });
    moto.dynamodb()
        .put_item()
        .table_name(TABLE)
        .set_item(Some(eventpipe_core::item::from_event(&event)))
        .send()
        .await
        .unwrap();
}

fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap()
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
    let run = |cfg: &str| {
        let file = dir.join("p.yaml");
        std::fs::write(&file, cfg).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventpipe-worker"))
            .arg("--config")
            .arg(&file)
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", eventpipe_testkit::free_port()),
            ])
            .envs(moto.env())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let sink = "{http: {url: \"http://127.0.0.1:9/x\"}}";
    // No table, and the binding does not create it.
    let err = run(&config(sink, "", ""));
    assert!(
        err.contains(r#"source QueueBinding "in""#) && err.contains(r#"table "comments""#),
        "{err}"
    );
    // The table exists, but its policy's dead-letter queue does not.
    eventpipe_core::provision::ensure_table(&moto.dynamodb(), TABLE, "id", true)
        .await
        .unwrap();
    let err = run(&config(sink, "", ""));
    assert!(
        err.contains(r#"dead-letter queue "comments-dlq" of DeadLetterPolicy "p" not found"#),
        "{err}"
    );
    // A table without a stream.
    eventpipe_core::provision::ensure_table(&moto.dynamodb(), "plain", "id", false)
        .await
        .unwrap();
    let err = run(&config(sink, "", "").replace("tableName: comments", "tableName: plain"));
    assert!(err.contains(r#"table "plain" has no stream"#), "{err}");
}
