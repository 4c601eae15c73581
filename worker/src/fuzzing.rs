//! The stream record decoding as a function of arbitrary bytes: the body of the
//! `stream_record` cargo-fuzz target in `../fuzz`, and of a unit test over its seed
//! corpus, so the same code runs with or without a fuzzer.
//!
//! Input: one record as DynamoDB Streams JSON (what `GetRecords` and Lambda's
//! DynamoDB event carry), `dynamodb.Keys`/`NewImage`/`OldImage` in DynamoDB JSON.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord};
use cloudevents::AttributesReader;
use eventpipe_core::envelope::{self, Decoded};
use eventpipe_core::item;
use serde_json::{Map, Value};

use crate::sources::streams::records::{self, Origin};

const ORIGIN: Origin<'static> = Origin {
    pipeline: "p",
    binding: "b",
    shard: "shardId-1",
};

/// Decodes one record into its event. Panics when an invariant breaks: the event
/// has an id and a `eventpipe.dynamodb.*` type, its data never carries
/// `_eventpipe`, and it travels through SQS (structured JSON) unchanged.
pub fn stream_record(data: &[u8]) {
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let record = record(&json);
    let event = records::to_event(&record, &ORIGIN);
    assert!(!event.id().is_empty(), "an event has an id");
    assert!(event.ty().starts_with("eventpipe.dynamodb."));
    assert_eq!(event.subject(), Some(records::subject(&record).as_str()));
    let data = envelope::data_json(&event);
    assert!(data.get(item::META).is_none(), "_eventpipe is not data");
    let _ = envelope::as_json(&event);
    match envelope::decode(&envelope::to_json(&event), "other", "/other") {
        Decoded::Event(again) => assert_eq!(
            envelope::as_json(&again),
            envelope::as_json(&event),
            "an event survives SQS"
        ),
        other => panic!("an event's JSON decodes as itself, got {other:?}"),
    }
}

fn record(json: &Map<String, Value>) -> Record {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let stream = json.get("dynamodb").and_then(Value::as_object);
    let field = |name: &str| stream.and_then(|s| s.get(name));
    let image = |name: &str| field(name).and_then(Value::as_object).map(item_of);
    let created = field("ApproximateCreationDateTime")
        .and_then(Value::as_f64)
        .map(DateTime::from_secs_f64);
    let dynamodb = StreamRecord::builder()
        .set_keys(image("Keys"))
        .set_new_image(image("NewImage"))
        .set_old_image(image("OldImage"))
        .set_sequence_number(text(field("SequenceNumber")))
        .set_approximate_creation_date_time(created)
        .build();
    Record::builder()
        .set_event_id(text(json.get("eventID")))
        .set_event_name(text(json.get("eventName")).map(|n| OperationType::from(n.as_str())))
        .dynamodb(dynamodb)
        .build()
}

fn item_of(map: &Map<String, Value>) -> HashMap<String, AttributeValue> {
    map.iter()
        .filter_map(|(k, v)| Some((k.clone(), attribute(v)?)))
        .collect()
}

/// DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, `{"M": {...}}`, ...) as the SDK's value;
/// binary values are the text's bytes (base64 is the SDK's wire concern).
fn attribute(v: &Value) -> Option<AttributeValue> {
    let (kind, v) = v.as_object()?.iter().next()?;
    let text = || v.as_str().map(str::to_string);
    let texts = || -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    Some(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(Blob::new(text()?)),
        "BOOL" => AttributeValue::Bool(v.as_bool()?),
        "NULL" => AttributeValue::Null(v.as_bool()?),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(texts()?.into_iter().map(Blob::new).collect()),
        "L" => AttributeValue::L(v.as_array()?.iter().filter_map(attribute).collect()),
        "M" => AttributeValue::M(item_of(v.as_object()?)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seed corpus, run as a plain test.
    #[test]
    fn seed_corpus_runs_clean() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/stream_record");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("seed corpus exists") {
            stream_record(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen >= 3, "only {seen} seeds");
    }
}
