//! DynamoDB stream fixtures: a stream-enabled table with its dead-letter queue, a
//! pipeline reading it, items written and deleted, and what the sink, the lease
//! table and the dead-letter queue say afterwards.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use eventpipe_core::envelope::{self, NewEvent};
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

use super::{Received, Sink, WorkerProcess};

pub const TABLE: &str = "comments";

pub const CHECKPOINTS: &str = "checkpoints";

/// Short leases, so takeover after a crash happens within a test.
pub const FAST_LEASES: &[&str] = &["--lease-duration", "2s", "--grace-period", "5s"];

/// A pipeline `t` reading the stream of `comments` (binding `in`, policy `p`) into
/// `processor`; `stream` and `spec` are extra YAML lines for the binding's
/// `dynamodbStream` and the pipeline's spec.
pub fn config(processor: &str, stream: &str, spec: &str) -> String {
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

pub fn http(sink: &Sink) -> String {
    format!("{{http: {{url: \"{}\", timeout: 10s}}}}", sink.url)
}

/// The stream-enabled table and its dead-letter queue; returns the DLQ's URL.
pub async fn setup(moto: &Moto) -> String {
    eventpipe_core::provision::ensure_stream_table(&moto.dynamodb(), TABLE)
        .await
        .unwrap();
    create_dead_letter_queue(moto).await
}

/// The table's default dead-letter queue; returns its URL.
pub async fn create_dead_letter_queue(moto: &Moto) -> String {
    moto.sqs()
        .create_queue()
        .queue_name(format!("{TABLE}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

pub async fn put(moto: &Moto, id: &str, n: i64) {
    moto.dynamodb()
        .put_item()
        .table_name(TABLE)
        .item("id", AttributeValue::S(id.into()))
        .item("n", AttributeValue::N(n.to_string()))
        .send()
        .await
        .unwrap();
}

pub async fn delete(moto: &Moto, id: &str) {
    moto.dynamodb()
        .delete_item()
        .table_name(TABLE)
        .key("id", AttributeValue::S(id.into()))
        .send()
        .await
        .unwrap();
}

pub fn subject(r: &Received) -> String {
    r.headers["ce-subject"].clone()
}

pub fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

/// Item keys the sink completed (answered 2xx for), in order.
pub fn completed(sink: &Sink) -> Vec<String> {
    sink.completed.lock().unwrap().iter().map(subject).collect()
}

pub fn distinct(v: &[String]) -> usize {
    v.iter().collect::<HashSet<_>>().len()
}

/// The lease item of the stream's only shard.
pub async fn lease(moto: &Moto) -> Value {
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

pub async fn owns_a_lease(w: &WorkerProcess) -> bool {
    w.metrics()
        .await
        .contains(r#"eventpipe_stream_leases_owned{pipeline="t",source="in"} 1"#)
}

/// Reading has begun: the shard has reported an iterator age.
pub async fn reading(w: &WorkerProcess) -> bool {
    w.metrics()
        .await
        .contains("eventpipe_stream_iterator_age_seconds{")
}

pub fn attribute(m: &aws_sdk_sqs::types::Message, name: &str) -> String {
    m.message_attributes.as_ref().unwrap()[name]
        .string_value
        .clone()
        .unwrap()
}

pub fn dead_letter_subjects(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
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

/// Items `<prefix>NN` for each `n` of `range`, with `n` as their number.
pub async fn put_numbered(moto: &Moto, prefix: &str, range: std::ops::Range<i64>) {
    for i in range {
        put(moto, &format!("{prefix}{i:02}"), i).await;
    }
}

/// A stream holding `records` items `<prefix>NN`, read in batches of five into a
/// sink taking 150 ms a record: slow enough to stop or move a reader mid-stream.
pub async fn slow_batches(prefix: &str, records: i64) -> (Sink, Moto, String) {
    let sink = Sink::start(|_, _| (200, Duration::from_millis(150))).await;
    let moto = Moto::start();
    setup(&moto).await;
    put_numbered(&moto, prefix, 0..records).await;
    let cfg = config(&http(&sink), "    batchSize: 5", "");
    (sink, moto, cfg)
}

/// Writes an item the way the ingress's DynamoDB publish and the DynamoDB sink do:
/// the event, with its trace context and correlation id in `_eventpipe`.
pub async fn put_event(moto: &Moto, id: &str, trace: &str) {
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

/// The sequence number of the `n`-th record of the stream (1-based).
pub async fn sink_checkpoint(moto: &Moto, n: usize) -> Value {
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
