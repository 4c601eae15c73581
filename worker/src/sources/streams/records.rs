//! A DynamoDB stream record as a CloudEvent: type `eventpipe.dynamodb.<INSERT|MODIFY|REMOVE>`,
//! subject the item key, `time` when the change was made, and `data` the item as
//! plain JSON: the new image, or the old one for REMOVE (the keys alone on a
//! KEYS_ONLY stream). `data` being the item itself is what lets pipelines point into
//! it (`/data/data/...` for an item the DynamoDB sink wrote); the old image of a
//! MODIFY is left out. The trace context and correlation id the item carries in
//! `_eventpipe` become the event's (the correlation id defaults to the key), so the
//! consumer continues the writer's trace; `_eventpipe` itself is not part of `data`.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record};
use chrono::Datelike;
use cloudevents::{AttributesWriter, Event};
use eventpipe_core::envelope::{self, NewEvent};
use eventpipe_core::item;
use serde_json::Value;

/// Where a record came from, for ids and the event's `source`.
pub struct Origin<'a> {
    pub pipeline: &'a str,
    pub binding: &'a str,
    pub shard: &'a str,
}

/// The record's sequence number (empty when the record has none).
pub fn sequence_number(record: &Record) -> &str {
    record
        .dynamodb()
        .and_then(|d| d.sequence_number())
        .unwrap_or_default()
}

/// When the change was made.
pub fn created(record: &Record) -> Option<SystemTime> {
    let at = record.dynamodb()?.approximate_creation_date_time()?;
    SystemTime::try_from(*at).ok()
}

/// The partition key (or the whole key, for composite keys): records of one key are
/// delivered in order, so this is the ordering group.
pub fn subject(record: &Record) -> String {
    let keys = image(record.dynamodb().and_then(|d| d.keys()));
    match keys.as_object() {
        Some(map) if map.len() == 1 => match map.values().next() {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        _ => keys.to_string(),
    }
}

/// The CloudEvent for `record`. Its id is the stream record's `eventID` (the same on
/// every read of the record, so idempotency recognises a redelivery), else
/// `<shard>:<sequence number>`.
pub fn to_event(record: &Record, origin: &Origin<'_>) -> Event {
    let stream = record.dynamodb();
    let kind = match record.event_name() {
        Some(OperationType::Insert) => "INSERT",
        Some(OperationType::Modify) => "MODIFY",
        Some(OperationType::Remove) => "REMOVE",
        _ => "UNKNOWN",
    };
    let image = match record.event_name() {
        Some(OperationType::Remove) => stream.and_then(|d| d.old_image()),
        _ => stream.and_then(|d| d.new_image()),
    };
    let mut data = match image {
        Some(i) => self::image(Some(i)),
        None => self::image(stream.and_then(|d| d.keys())),
    };
    let (trace, correlation) = item::trace_of(&data);
    if let Some(map) = data.as_object_mut() {
        map.remove(item::META);
    }
    let subject = subject(record);
    let id = match record.event_id() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("{}:{}", origin.shard, sequence_number(record)),
    };
    let mut event = envelope::build(NewEvent {
        id,
        source: format!("/eventpipe/{}/{}", origin.pipeline, origin.binding),
        event_type: format!("eventpipe.dynamodb.{kind}"),
        correlation_id: correlation.unwrap_or_else(|| subject.clone()),
        subject: Some(subject),
        data,
        trace,
    });
    if let Some(at) = time(record) {
        event.set_time(Some(at));
    }
    event
}

/// When the change was made, as the event's `time`. The record's timestamp is any
/// number of seconds; one outside RFC 3339's years 0000-9999 leaves `time` when the
/// record was read, as no consumer could read the event back (and chrono panics on
/// some).
fn time(record: &Record) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = record.dynamodb()?.approximate_creation_date_time()?;
    chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos())
        .filter(|t| (0..=9999).contains(&t.year()))
}

/// DynamoDB JSON as plain JSON; an absent image is `{}`.
fn image(attrs: Option<&HashMap<String, AttributeValue>>) -> Value {
    match attrs {
        Some(a) => item::to_json(a.clone()),
        None => Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::DateTime;
    use aws_sdk_dynamodbstreams::types::StreamRecord;
    use cloudevents::AttributesReader;
    use serde_json::json;

    const ORIGIN: Origin<'static> = Origin {
        pipeline: "agg",
        binding: "comments",
        shard: "shardId-1",
    };

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn record(kind: OperationType, new: bool, old: bool) -> Record {
        let meta = AttributeValue::M(HashMap::from([
            (
                "traceparent".into(),
                s("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ),
            ("correlationid".into(), s("issue-42")),
        ]));
        let mut stream = StreamRecord::builder()
            .keys("id", s("c-1"))
            .sequence_number("300")
            .approximate_creation_date_time(DateTime::from_secs(1_800_000_000));
        if new {
            stream = stream
                .new_image("id", s("c-1"))
                .new_image("n", AttributeValue::N("2".into()))
                .new_image("_eventpipe", meta.clone());
        }
        if old {
            stream = stream
                .old_image("id", s("c-1"))
                .old_image("n", AttributeValue::N("1".into()));
        }
        Record::builder()
            .event_id("e-9")
            .event_name(kind)
            .dynamodb(stream.build())
            .build()
    }

    #[test]
    fn an_insert_carries_the_new_image_as_plain_json_and_its_trace() {
        let event = to_event(&record(OperationType::Insert, true, false), &ORIGIN);
        assert_eq!(event.id(), "e-9");
        assert_eq!(event.ty(), "eventpipe.dynamodb.INSERT");
        assert_eq!(event.source().to_string(), "/eventpipe/agg/comments");
        assert_eq!(event.subject(), Some("c-1"));
        assert_eq!(envelope::data_json(&event), json!({"id": "c-1", "n": 2}));
        assert_eq!(
            envelope::correlation_id(&event).as_deref(),
            Some("issue-42")
        );
        let trace = envelope::trace_context(&event);
        assert_eq!(
            trace[0].1,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            event.time().map(|t| t.timestamp()),
            Some(1_800_000_000),
            "time is when the change was made"
        );
    }

    #[test]
    fn a_modify_carries_the_new_image_and_a_remove_the_old_one() {
        let modify = to_event(&record(OperationType::Modify, true, true), &ORIGIN);
        assert_eq!(modify.ty(), "eventpipe.dynamodb.MODIFY");
        assert_eq!(envelope::data_json(&modify)["n"], 2);
        let remove = to_event(&record(OperationType::Remove, false, true), &ORIGIN);
        assert_eq!(remove.ty(), "eventpipe.dynamodb.REMOVE");
        assert_eq!(envelope::data_json(&remove), json!({"id": "c-1", "n": 1}));
        assert_eq!(
            envelope::correlation_id(&remove).as_deref(),
            Some("c-1"),
            "without _eventpipe the key correlates"
        );
        assert!(envelope::trace_context(&remove).is_empty());
    }

    #[test]
    fn keys_only_streams_give_the_keys_and_ids_fall_back_to_shard_and_sequence() {
        let mut r = record(OperationType::Insert, false, false);
        r.event_id = None;
        let event = to_event(&r, &ORIGIN);
        assert_eq!(event.id(), "shardId-1:300");
        assert_eq!(envelope::data_json(&event), json!({"id": "c-1"}));
    }

    #[test]
    fn a_creation_time_outside_rfc3339_years_leaves_the_time_of_reading() {
        // 1e15 s is past chrono's range; 3e11 s and -1e11 s are years 11476 and
        // -1199, which RFC 3339 (and so a consumer of the event's JSON) cannot read.
        for secs in [1e15, 3e11, -1e11] {
            let mut r = record(OperationType::Insert, true, false);
            r.dynamodb.as_mut().unwrap().approximate_creation_date_time =
                Some(DateTime::from_secs_f64(secs));
            let event = to_event(&r, &ORIGIN);
            let year = event.time().map(|t| t.year());
            assert!(year.is_some_and(|y| y >= 2026), "{secs}: {year:?}");
            let json = envelope::to_json(&event);
            assert!(matches!(
                envelope::decode(&json, "x", "/x"),
                envelope::Decoded::Event(_)
            ));
        }
    }

    #[test]
    fn composite_keys_make_a_json_subject() {
        let stream = StreamRecord::builder()
            .keys("pk", s("a"))
            .keys("sk", AttributeValue::N("7".into()))
            .build();
        let r = Record::builder().dynamodb(stream).build();
        assert_eq!(subject(&r), r#"{"pk":"a","sk":7}"#);
        let numeric = Record::builder()
            .dynamodb(
                StreamRecord::builder()
                    .keys("n", AttributeValue::N("7".into()))
                    .build(),
            )
            .build();
        assert_eq!(subject(&numeric), "7");
    }
}
