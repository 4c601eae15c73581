//! A pipeline filter: the first line a pattern (JSON), each further line an event
//! (JSON) it is matched against.
#![no_main]

use eventpipe_worker::Pattern;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(Ok(Value::Object(spec))) = lines.next().map(serde_json::from_str::<Value>) else {
        return;
    };
    let events: Vec<Value> = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pattern = match Pattern::compile(&spec) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                e.to_string().starts_with("filter."),
                "errors name the field"
            );
            return;
        }
    };
    let either = compile(json!({ "$or": [spec] }));
    for event in &events {
        // `$or` of one pattern is that pattern.
        assert_eq!(pattern.matches(event), either.matches(event));
        let Some(fields) = event.as_object() else {
            continue;
        };
        for (key, value) in fields
            .iter()
            .filter(|(k, v)| *k != "$or" && !v.is_object() && !v.is_array())
        {
            // A field's own value matches it, `anything-but` it does not, it exists.
            let exact = compile(json!({ key: [value] }));
            assert!(exact.matches(event), "{key}: {value} matches itself");
            let but = compile(json!({ key: [{ "anything-but": [value] }] }));
            assert!(!but.matches(event), "{key}: anything-but {value}");
            assert!(compile(json!({ key: [{ "exists": true }] })).matches(event));
        }
    }
});

fn compile(spec: Value) -> Pattern {
    let Value::Object(spec) = spec else {
        unreachable!("an object")
    };
    Pattern::compile(&spec).expect("a pattern built from valid parts compiles")
}
