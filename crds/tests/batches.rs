//! The batch fields (`processor.http.batch`, `processor.dynamodb.batch` and a stream's
//! `batchWindow`, `parallelizationFactor`, `maxRetryAttempts`): defaults, ranges and
//! the combinations refused, with the errors a person reads.

use eventpipe_crds::schema;
use serde_json::{Value, json};

fn binding(stream: Value) -> Value {
    json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding", "metadata": {"name": "in"},
        "spec": {"dynamodbStream": stream}})
}

fn pipeline(processor: Value, destinations: Option<Value>) -> Value {
    let mut p = json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline", "metadata": {"name": "t"},
        "spec": {"sources": [{"queueBindingRef": {"name": "in"}}], "processor": processor}});
    if let Some(d) = destinations {
        p["spec"]["destinations"] = d;
    }
    p
}

fn problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().expect("the object has a kind");
    match schema::validate(kind, object) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_rejected(object: &Value, want: &str) {
    let got = problems(object);
    assert!(
        got.iter().any(|p| p.contains(want)),
        "want {want:?} in {got:?}"
    );
}

fn http(batch: Value) -> Value {
    json!({"http": {"url": "http://p/events", "batch": batch}})
}

#[test]
fn an_http_batch_takes_one_to_a_thousand_events_and_waits_nothing_by_default() {
    let p = pipeline(http(json!({"maxSize": 50})), None);
    let defaulted = schema::validate("EventPipeline", &p).unwrap();
    assert_eq!(
        defaulted["spec"]["processor"]["http"]["batch"]["window"],
        "0s"
    );
    for bad in [0, 1001] {
        assert_rejected(
            &pipeline(http(json!({"maxSize": bad})), None),
            &format!("spec.processor.http.batch.maxSize: must be between 1 and 1000, got {bad}"),
        );
    }
    assert_rejected(
        &pipeline(http(json!({})), None),
        "spec.processor.http.batch.maxSize: is required",
    );
    assert_rejected(
        &pipeline(http(json!({"maxSize": 10, "window": "soon"})), None),
        "spec.processor.http.batch.window: must be a duration",
    );
}

#[test]
fn a_batch_response_carries_no_reply_so_batches_and_replies_exclude_each_other() {
    let reply = json!({"reply": {"queueBindingRef": {"name": "out"}}});
    assert_rejected(
        &pipeline(http(json!({"maxSize": 10})), Some(reply.clone())),
        "destinations.reply publishes the reply to each event, and a batch response carries none",
    );
    let unbatched = json!({"http": {"url": "http://p/events"}});
    assert!(problems(&pipeline(unbatched, Some(reply))).is_empty());
    let outcome = json!({"onSuccess": {"queueBindingRef": {"name": "out"}, "type": "done"}});
    assert!(problems(&pipeline(http(json!({"maxSize": 10})), Some(outcome))).is_empty());
}

#[test]
fn a_dynamodb_batch_puts_at_most_25_items_and_never_counts() {
    let table = |extra: Value| {
        let mut t = json!({"tableName": "stored"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        pipeline(json!({"dynamodb": t}), None)
    };
    assert!(problems(&table(json!({"batch": {"maxSize": 25}}))).is_empty());
    assert_rejected(
        &table(json!({"batch": {"maxSize": 26}})),
        "batch.maxSize: BatchWriteItem takes at most 25 items",
    );
    let counted = json!({"batch": {"maxSize": 10}, "aggregate": {"key": [{"name": "r", "jsonPointer": "/data/r"}]}});
    assert_rejected(&table(counted), "batch applies to puts only");
}

#[test]
fn stream_batches_default_to_one_lane_and_check_their_ranges() {
    let b = schema::validate("QueueBinding", &binding(json!({"tableName": "tbl"}))).unwrap();
    let stream = &b["spec"]["dynamodbStream"];
    assert_eq!(stream["parallelizationFactor"], 1);
    assert_eq!(stream["batchSize"], 100);
    assert!(stream.get("batchWindow").is_none());
    assert!(stream.get("maxRetryAttempts").is_none());
    let all = json!({"tableName": "tbl", "batchWindow": "2s", "parallelizationFactor": 10,
        "maxRetryAttempts": 0, "bisectOnError": true});
    assert!(problems(&binding(all)).is_empty());
    for (field, value, want) in [
        (
            "parallelizationFactor",
            json!(0),
            "must be between 1 and 10, got 0",
        ),
        (
            "parallelizationFactor",
            json!(11),
            "must be between 1 and 10, got 11",
        ),
        (
            "maxRetryAttempts",
            json!(-1),
            "must be between 0 and 10000, got -1",
        ),
        (
            "maxRetryAttempts",
            json!(10001),
            "must be between 0 and 10000, got 10001",
        ),
        ("batchWindow", json!("1 minute"), "must be a duration"),
    ] {
        let mut stream = json!({"tableName": "tbl"});
        stream[field] = value;
        assert_rejected(
            &binding(stream),
            &format!("spec.dynamodbStream.{field}: {want}"),
        );
    }
}
