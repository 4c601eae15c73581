//! Which events a subscriber wants: by correlation id, by subject, or by the value
//! at a JSON pointer into the structured CloudEvent (`/data/status`).

use serde_json::Value;

/// A subscriber's filter; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub correlation_id: Option<String>,
    pub subject: Option<String>,
    /// A JSON pointer and the value (as text) it must point at.
    pub pointer: Option<(String, String)>,
}

impl Filter {
    /// Whether the structured CloudEvent `event` passes.
    pub fn matches(&self, event: &Value) -> bool {
        let attr = |name: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| event.get(name).and_then(Value::as_str) == Some(w))
        };
        attr(
            eventpipe_core::envelope::CORRELATION_ID,
            &self.correlation_id,
        ) && attr("subject", &self.subject)
            && self
                .pointer
                .as_ref()
                .is_none_or(|(p, want)| event.pointer(p).is_some_and(|v| text(v) == *want))
    }
}

/// A JSON value as a query parameter spells it: strings bare, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"id": "e1", "correlationid": "c1", "subject": "note/7",
               "data": {"status": "saved", "n": 3}})
    }

    #[test]
    fn every_condition_given_must_hold() {
        let f = |c: Option<&str>, s: Option<&str>, p: Option<(&str, &str)>| Filter {
            correlation_id: c.map(Into::into),
            subject: s.map(Into::into),
            pointer: p.map(|(a, b)| (a.into(), b.into())),
        };
        assert!(f(None, None, None).matches(&event()));
        assert!(f(Some("c1"), Some("note/7"), Some(("/data/status", "saved"))).matches(&event()));
        assert!(f(None, None, Some(("/data/n", "3"))).matches(&event()));
        assert!(!f(Some("c2"), None, None).matches(&event()));
        assert!(!f(None, Some("note/8"), None).matches(&event()));
        assert!(!f(None, None, Some(("/data/status", "failed"))).matches(&event()));
        assert!(!f(None, None, Some(("/data/missing", "saved"))).matches(&event()));
    }
}
