//! The event envelope: CloudEvents 1.0 in structured JSON mode, with the extensions
//! that carry one correlation id and one trace from the webhook to the last sink.

use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde_json::Value;

/// CloudEvent extension names (lowercase alphanumerics, as the spec requires).
pub const CORRELATION_ID: &str = "correlationid";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// What a new event is made of.
#[derive(Clone, Debug, Default)]
pub struct NewEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub correlation_id: String,
    pub data: Value,
    /// W3C trace context (`traceparent`, `tracestate`) of the span that produced it.
    pub trace: Vec<(String, String)>,
}

/// Builds the CloudEvent, time set to now.
pub fn build(new: NewEvent) -> Event {
    let mut builder = EventBuilderV10::new()
        .id(new.id)
        .source(new.source)
        .ty(new.event_type)
        .time(chrono::Utc::now())
        .data("application/json", new.data)
        .extension(CORRELATION_ID, new.correlation_id);
    if let Some(subject) = new.subject {
        builder = builder.subject(subject);
    }
    for (key, value) in new.trace {
        if key == TRACEPARENT || key == TRACESTATE {
            builder = builder.extension(&key, value);
        }
    }
    builder.build().expect("id, source and type are set")
}

/// The event in structured JSON mode, as it travels in an SQS message body.
pub fn to_json(event: &Event) -> String {
    serde_json::to_string(event).expect("a CloudEvent serializes")
}

/// A string extension of the event.
pub fn extension(event: &Event, name: &str) -> Option<String> {
    event.extension(name).map(|v| v.to_string())
}

pub fn correlation_id(event: &Event) -> Option<String> {
    extension(event, CORRELATION_ID)
}

/// The event's W3C trace context, for continuing its trace.
pub fn trace_context(event: &Event) -> Vec<(String, String)> {
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|k| extension(event, k).map(|v| (k.to_string(), v)))
        .collect()
}

/// The event's data as JSON: JSON data as is, text as a string, binary as base64 text.
pub fn data_json(event: &Event) -> Value {
    match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(Data::Binary(b)) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
        None => Value::Null,
    }
}

/// The event with JSON text or bytes as JSON data, so it travels as readable JSON in
/// structured mode (binary-mode bodies arrive as bytes).
pub fn with_json_data(mut event: Event) -> Event {
    let json = match event.data() {
        Some(Data::Binary(b)) => serde_json::from_slice::<Value>(b).ok(),
        Some(Data::String(s)) => serde_json::from_str::<Value>(s).ok(),
        _ => None,
    };
    let content_type = event
        .datacontenttype()
        .unwrap_or("application/json")
        .to_string();
    let is_json = content_type.starts_with("application/json") || content_type.ends_with("+json");
    if let (Some(value), true) = (json, is_json) {
        event.set_data(content_type, value);
    }
    event
}

/// The whole event as one JSON object (attributes, extensions and `data`): what
/// filters and JSON pointers look at.
pub fn as_json(event: &Event) -> Value {
    let mut v = serde_json::to_value(event).expect("a CloudEvent serializes");
    if let Some(obj) = v.as_object_mut() {
        obj.remove("data_base64");
        obj.insert("data".into(), data_json(event));
    }
    v
}

/// How a message body was understood.
#[derive(Debug)]
pub enum Decoded {
    /// A structured-mode CloudEvent.
    Event(Box<Event>),
    /// Not a CloudEvent (another producer's message): wrapped, body as `data`.
    Wrapped(Box<Event>),
    /// Claims to be a CloudEvent (has `specversion`) but is not a valid one.
    Undecodable(String),
}

/// Reads a message body: a CloudEvent as is, anything else wrapped with `id` as its id.
pub fn decode(body: &str, id: &str, source: &str) -> Decoded {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let data = match parsed {
        // A CloudEvent is read through a JSON value in any case: reading it from the
        // one parsed here spares parsing every body twice.
        Some(value) if value.get("specversion").is_some() => {
            return match serde_json::from_value::<Event>(value) {
                Ok(event) => Decoded::Event(Box::new(event)),
                Err(e) => Decoded::Undecodable(format!("invalid CloudEvent: {e}")),
            };
        }
        Some(value) => value,
        None => Value::String(body.to_string()),
    };
    Decoded::Wrapped(Box::new(build(NewEvent {
        id: id.into(),
        source: source.into(),
        event_type: "eventpipe.message".into(),
        correlation_id: id.into(),
        data,
        ..Default::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        build(NewEvent {
            id: "d-1".into(),
            source: "/eventpipe/hooks/github".into(),
            event_type: "issue_comment".into(),
            subject: Some("42".into()),
            correlation_id: "42".into(),
            data: json!({"issue": {"number": 42}}),
            trace: vec![
                (
                    TRACEPARENT.into(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                ),
                ("baggage".into(), "ignored".into()),
            ],
        })
    }

    #[test]
    fn structured_json_round_trips_with_extensions() {
        let body = to_json(&sample());
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "d-1");
        assert_eq!(v["type"], "issue_comment");
        assert_eq!(v["correlationid"], "42");
        assert_eq!(
            v["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(v.get("baggage").is_none());
        assert_eq!(v["data"]["issue"]["number"], 42);
        let Decoded::Event(back) = decode(&body, "m-1", "q") else {
            panic!("not decoded")
        };
        assert_eq!(correlation_id(&back).as_deref(), Some("42"));
        assert_eq!(trace_context(&back).len(), 1);
        assert_eq!(as_json(&back)["data"]["issue"]["number"], 42);
    }

    #[test]
    fn foreign_messages_are_wrapped_not_rejected() {
        let Decoded::Wrapped(e) = decode(r#"{"order": 7}"#, "m-1", "sqs://orders") else {
            panic!()
        };
        assert_eq!(e.id(), "m-1");
        assert_eq!(data_json(&e), json!({"order": 7}));
        let Decoded::Wrapped(e) = decode("plain text", "m-2", "sqs://orders") else {
            panic!()
        };
        assert_eq!(data_json(&e), json!("plain text"));
    }

    #[test]
    fn json_bytes_become_json_data() {
        let mut e = sample();
        e.set_data(
            "application/json",
            cloudevents::Data::Binary(br#"{"a": 1}"#.to_vec()),
        );
        let e = with_json_data(e);
        assert_eq!(
            serde_json::from_str::<Value>(&to_json(&e)).unwrap()["data"]["a"],
            1
        );
        let mut text = sample();
        text.set_data("text/plain", cloudevents::Data::Binary(b"{}".to_vec()));
        assert!(matches!(with_json_data(text).data(), Some(Data::Binary(_))));
    }

    #[test]
    fn a_broken_cloudevent_is_undecodable() {
        let Decoded::Undecodable(why) = decode(r#"{"specversion": "1.0", "id": 5}"#, "m", "q")
        else {
            panic!()
        };
        assert!(why.starts_with("invalid CloudEvent"), "{why}");
    }
}
