//! The event envelope: CloudEvents 1.0 in structured JSON mode, with the extensions
//! that carry one correlation id and one trace from the webhook to the last sink.

use std::collections::BTreeMap;

use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde::de::IgnoredAny;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

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
    serde_json::to_string(&Structured(event)).expect("a CloudEvent serializes")
}

/// The event in structured JSON mode, where JSON data kept as the bytes it arrived
/// in is written as they are (the SDK would write any bytes as `data_base64`).
pub struct Structured<'a>(pub &'a Event);

impl Serialize for Structured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let (SpecVersion::V10, Some(data)) = (e.specversion(), json_bytes(e)) else {
            return e.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", "1.0")?;
        map.serialize_entry("id", e.id())?;
        map.serialize_entry("type", e.ty())?;
        map.serialize_entry("source", e.source())?;
        if let Some(content_type) = e.datacontenttype() {
            map.serialize_entry("datacontenttype", content_type)?;
        }
        if let Some(schema) = e.dataschema() {
            map.serialize_entry("dataschema", schema.as_str())?;
        }
        if let Some(subject) = e.subject() {
            map.serialize_entry("subject", subject)?;
        }
        if let Some(time) = e.time() {
            map.serialize_entry("time", time)?;
        }
        map.serialize_entry("data", data)?;
        for (name, value) in e.iter_extensions() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Whether data of this content type is JSON (no content type: JSON, as in
/// structured mode).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(t) = content_type else { return true };
    let t = t.split(';').next().unwrap_or_default().trim();
    t == "application/json" || t.ends_with("+json")
}

/// The event's data when it is JSON held as bytes (valid JSON, a JSON content type).
fn json_bytes(event: &Event) -> Option<&RawValue> {
    let Some(Data::Binary(bytes)) = event.data() else {
        return None;
    };
    if !is_json(event.datacontenttype()) {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// A string extension of the event.
pub fn extension(event: &Event, name: &str) -> Option<String> {
    event.extension(name).map(|v| v.to_string())
}

pub fn correlation_id(event: &Event) -> Option<String> {
    extension(event, CORRELATION_ID)
}

/// The event's W3C trace context, for carrying it along.
pub fn trace_context(event: &Event) -> Vec<(String, String)> {
    (trace_pairs(event))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The event's W3C trace context where it is, for continuing its trace (only text
/// is a trace context).
pub fn trace_pairs(event: &Event) -> impl Iterator<Item = (&str, &str)> {
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|k| match event.extension(k)? {
            ExtensionValue::String(v) => Some((k, v.as_str())),
            _ => None,
        })
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
    if let (Some(value), true) = (json, is_json(Some(&content_type))) {
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
/// JSON data stays the bytes received: most processors take it as it came, and
/// parsing it only to write it out again would cost more than the rest of the event.
pub fn decode(body: &str, id: &str, source: &str) -> Decoded {
    // The top level only: members stay the text they are in the body.
    let object = body.trim_start().starts_with('{');
    let members = object.then(|| serde_json::from_str::<BTreeMap<String, &RawValue>>(body));
    let data = match members {
        Some(Ok(members)) if members.contains_key("specversion") => {
            return match cloudevent(members) {
                Ok(event) => Decoded::Event(Box::new(event)),
                Err(e) => Decoded::Undecodable(format!("invalid CloudEvent: {e}")),
            };
        }
        Some(Ok(_)) => Data::Binary(body.trim().as_bytes().to_vec()),
        _ if serde_json::from_str::<IgnoredAny>(body).is_ok() => {
            Data::Binary(body.trim().as_bytes().to_vec())
        }
        _ => Data::Json(Value::String(body.to_string())),
    };
    let mut event = build(NewEvent {
        id: id.into(),
        source: source.into(),
        event_type: "eventpipe.message".into(),
        correlation_id: id.into(),
        ..Default::default()
    });
    event.set_data("application/json", data);
    Decoded::Wrapped(Box::new(event))
}

/// A structured-mode CloudEvent from its members; JSON data is kept as its bytes.
fn cloudevent(mut members: BTreeMap<String, &RawValue>) -> Result<Event, serde_json::Error> {
    let data = members.remove("data");
    let mut object = serde_json::Map::new();
    for (name, value) in members {
        object.insert(name, serde_json::from_str(value.get())?);
    }
    let content_type = object.get("datacontenttype").and_then(Value::as_str);
    let v10 = object.get("specversion").and_then(Value::as_str) == Some("1.0");
    let keep = v10 && is_json(content_type) && !object.contains_key("data_base64");
    if let (Some(d), false) = (data, keep) {
        // Text, both forms at once, or CloudEvents 0.3: the SDK reads (or refuses) them.
        object.insert("data".into(), serde_json::from_str(d.get())?);
    }
    let mut event: Event = serde_json::from_value(Value::Object(object))?;
    if let (Some(d), true) = (data, keep) {
        event.set_data_unchecked(Data::Binary(d.get().as_bytes().to_vec()));
    }
    Ok(event)
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
    fn json_data_stays_the_bytes_received_and_is_written_back_as_json() {
        let data = r#"{"z": 1, "a": [true, null],  "s": "x\"y"}"#;
        let body = format!(
            r#"{{"specversion":"1.0","id":"e-1","source":"/s","type":"t","data":{data},"correlationid":"c"}}"#
        );
        let Decoded::Event(e) = decode(&body, "m", "q") else {
            panic!()
        };
        assert_eq!(e.data(), Some(&Data::Binary(data.as_bytes().to_vec())));
        assert_eq!(correlation_id(&e).as_deref(), Some("c"));
        assert_eq!(data_json(&e), serde_json::from_str::<Value>(data).unwrap());
        let json = to_json(&e);
        assert!(json.contains(&format!(r#""data":{data}"#)), "{json}");
        assert!(!json.contains("data_base64"), "{json}");
        let Decoded::Event(again) = decode(&json, "m", "q") else {
            panic!("{json}")
        };
        assert_eq!(again, e);

        let Decoded::Wrapped(w) = decode(&format!(" {data}\n"), "m", "q") else {
            panic!()
        };
        assert_eq!(w.data(), Some(&Data::Binary(data.as_bytes().to_vec())));
        assert_eq!(w.datacontenttype(), Some("application/json"));
        let json = to_json(&w);
        assert!(json.contains(&format!(r#""data":{data}"#)), "{json}");
        let Decoded::Wrapped(list) = decode("[1, 2]", "m", "q") else {
            panic!()
        };
        assert_eq!(data_json(&list), json!([1, 2]));
    }

    #[test]
    fn text_data_and_bytes_that_are_not_json_keep_their_cloudevents_forms() {
        let text = r#"{"specversion":"1.0","id":"e","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi"}"#;
        let Decoded::Event(e) = decode(text, "m", "q") else {
            panic!()
        };
        assert_eq!(e.data(), Some(&Data::String("hi".into())));
        assert_eq!(
            serde_json::from_str::<Value>(&to_json(&e)).unwrap()["data"],
            "hi"
        );
        let mut broken = sample();
        broken.set_data("application/json", Data::Binary(b"{not json".to_vec()));
        let json: Value = serde_json::from_str(&to_json(&broken)).unwrap();
        assert!(json.get("data").is_none(), "{json}");
        assert_eq!(json["data_base64"], "e25vdCBqc29u");
        let both = r#"{"specversion":"1.0","id":"e","source":"/s","type":"t","data":{},"data_base64":"e30="}"#;
        assert!(matches!(decode(both, "m", "q"), Decoded::Undecodable(_)));
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
