//! A message body as the worker reads it: a structured-mode CloudEvent, or another
//! producer's JSON or text, wrapped. An event that decodes re-encodes to JSON that
//! decodes to the same event (seen as JSON: its data may be held as bytes or as a
//! value); a wrapped body keeps the message id and the body.
#![no_main]

use cloudevents::AttributesReader;
use eventpipe_core::envelope::{self, Decoded};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let event = match envelope::decode(body, "m-1", "/queue") {
        Decoded::Event(event) => *event,
        Decoded::Wrapped(event) => {
            assert_eq!(event.id(), "m-1");
            assert_eq!(envelope::correlation_id(&event).as_deref(), Some("m-1"));
            let data = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
            assert_eq!(envelope::data_json(&event), data, "the body is the data");
            *event
        }
        Decoded::Undecodable(reason) => {
            let claims = serde_json::from_str::<Value>(body).ok();
            assert!(
                claims.is_some_and(|v| v.get("specversion").is_some()),
                "{reason}"
            );
            return;
        }
    };
    let _ = envelope::as_json(&event);
    let _ = envelope::trace_context(&event);
    let json = envelope::to_json(&event);
    match envelope::decode(&json, "m-2", "/other") {
        Decoded::Event(again) => {
            assert_eq!(
                envelope::as_json(&again),
                envelope::as_json(&event),
                "{json}"
            )
        }
        other => panic!("{json} decodes as {other:?}"),
    }
    let readable = envelope::with_json_data(event.clone());
    assert_eq!(envelope::data_json(&readable), envelope::data_json(&event));
});
