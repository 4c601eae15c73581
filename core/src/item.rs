//! Events as DynamoDB items, as the ingress's DynamoDB publish and the worker's
//! DynamoDB sink write them, and back as the stream consumer reads them. The trace
//! context and correlation id ride in the `_eventpipe` map, so the table's stream
//! continues the same trace.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use cloudevents::{AttributesReader, Event};
use serde_json::{Value, json};

use crate::envelope;

/// The map attribute carrying trace context and correlation id through a table.
pub const META: &str = "_eventpipe";

/// The item for an event, keyed by `id` (the event id, so writes are idempotent).
pub fn from_event(event: &Event) -> HashMap<String, AttributeValue> {
    let mut meta = json!({ envelope::CORRELATION_ID: envelope::correlation_id(event) });
    for (k, v) in envelope::trace_context(event) {
        meta[k] = Value::String(v);
    }
    let mut doc = json!({
        "id": event.id(),
        "source": event.source().to_string(),
        "type": event.ty(),
        "correlationid": envelope::correlation_id(event),
        "data": envelope::data_json(event),
        META: meta,
    });
    if let Some(time) = event.time() {
        doc["time"] = Value::String(time.to_rfc3339());
    }
    if let Some(subject) = event.subject() {
        doc["subject"] = Value::String(subject.to_string());
    }
    serde_dynamo::to_item(strip_nulls(doc)).expect("JSON converts to a DynamoDB item")
}

/// An item (or a stream image) as plain JSON.
pub fn to_json<A>(item: HashMap<String, A>) -> Value
where
    serde_dynamo::Item: From<HashMap<String, A>>,
{
    serde_dynamo::from_item(item).unwrap_or(Value::Null)
}

/// The trace context (`traceparent`, `tracestate`) and correlation id an item carries.
pub fn trace_of(item: &Value) -> (Vec<(String, String)>, Option<String>) {
    let meta = &item[META];
    let trace = [envelope::TRACEPARENT, envelope::TRACESTATE]
        .into_iter()
        .filter_map(|k| meta[k].as_str().map(|v| (k.to_string(), v.to_string())))
        .collect();
    (
        trace,
        meta[envelope::CORRELATION_ID].as_str().map(str::to_string),
    )
}

/// DynamoDB rejects empty sets and, in keys, empty strings; nulls are simply left out.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{NewEvent, TRACEPARENT, build};

    #[test]
    fn an_event_becomes_an_item_and_back_with_its_trace() {
        let event = build(NewEvent {
            id: "d-1".into(),
            source: "/eventpipe/hooks/github".into(),
            event_type: "issue_comment".into(),
            correlation_id: "42".into(),
            data: json!({"issue": {"number": 42, "labels": []}, "draft": null}),
            trace: vec![(
                TRACEPARENT.into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            )],
            ..Default::default()
        });
        let item = from_event(&event);
        assert_eq!(item["id"], AttributeValue::S("d-1".into()));
        let back = to_json(item);
        assert_eq!(back["data"]["issue"]["number"], 42);
        assert_eq!(back["type"], "issue_comment");
        let (trace, correlation) = trace_of(&back);
        assert_eq!(correlation.as_deref(), Some("42"));
        assert_eq!(trace[0].0, "traceparent");
    }
}
