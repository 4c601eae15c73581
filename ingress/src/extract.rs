//! Values taken from a request: a header, or a JSON pointer into the body.

use axum::http::{HeaderMap, HeaderName};
use eventpipe_crds::ValueSource;
use serde_json::Value;

use crate::signature::header_name;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("{0:?} is not a valid HTTP header name")]
    Header(String),
    #[error("{0:?} is not a JSON pointer (it must be empty or start with /)")]
    Pointer(String),
    #[error("exactly one of header or jsonPointer must be set")]
    NotOne,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Header(HeaderName),
    Pointer(String),
}

impl Field {
    pub fn new(source: &ValueSource) -> Result<Self, InvalidField> {
        match (&source.header, &source.json_pointer) {
            (Some(h), None) => header_name(h)
                .map(Field::Header)
                .map_err(|_| InvalidField::Header(h.clone())),
            (None, Some(p)) if p.is_empty() || p.starts_with('/') => Ok(Field::Pointer(p.clone())),
            (None, Some(p)) => Err(InvalidField::Pointer(p.clone())),
            _ => Err(InvalidField::NotOne),
        }
    }

    /// The value as text; absent when missing, empty, null or not a scalar.
    pub fn get(&self, headers: &HeaderMap, body: &Value) -> Option<String> {
        let text = match self {
            Field::Header(name) => headers.get(name)?.to_str().ok()?.trim().to_string(),
            Field::Pointer(pointer) => scalar(body.pointer(pointer)?)?,
        };
        (!text.is_empty()).then_some(text)
    }
}

/// Strings as they are, numbers and booleans as JSON writes them (`/issue/number`
/// gives `42`); objects and arrays are not ids.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The request values a webhook turns into event attributes.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pub event_type: Option<Field>,
    pub correlation_id: Option<Field>,
    pub deduplication_id: Option<Field>,
    pub message_group_id: Option<Field>,
}

/// What one request yields, before defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub deduplication_id: Option<String>,
    pub message_group_id: Option<String>,
}

impl Fields {
    pub fn values(&self, headers: &HeaderMap, body: &Value) -> Values {
        let get = |f: &Option<Field>| f.as_ref().and_then(|f| f.get(headers, body));
        Values {
            event_type: get(&self.event_type),
            correlation_id: get(&self.correlation_id),
            deduplication_id: get(&self.deduplication_id),
            message_group_id: get(&self.message_group_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "issue_comment".parse().unwrap());
        h.insert("x-empty", "  ".parse().unwrap());
        let binary = axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        h.insert("x-binary", binary);
        h
    }

    fn body() -> Value {
        json!({"issue": {"number": 42, "title": "t", "labels": [], "draft": null},
               "a/b": {"m~n": true}, "type": "OrderPlaced"})
    }

    fn get(source: ValueSource) -> Option<String> {
        Field::new(&source).unwrap().get(&headers(), &body())
    }

    #[test]
    fn headers_are_case_insensitive_trimmed_and_skipped_when_empty_or_binary() {
        assert_eq!(
            get(ValueSource::header("X-GitHub-Event")).as_deref(),
            Some("issue_comment")
        );
        assert_eq!(get(ValueSource::header("X-Empty")), None);
        assert_eq!(get(ValueSource::header("X-Binary")), None);
        assert_eq!(get(ValueSource::header("X-Missing")), None);
    }

    #[test]
    fn pointers_give_scalars_as_text() {
        assert_eq!(
            get(ValueSource::json_pointer("/issue/number")).as_deref(),
            Some("42")
        );
        assert_eq!(
            get(ValueSource::json_pointer("/type")).as_deref(),
            Some("OrderPlaced")
        );
        assert_eq!(
            get(ValueSource::json_pointer("/a~1b/m~0n")).as_deref(),
            Some("true")
        );
        assert_eq!(get(ValueSource::json_pointer("/issue/draft")), None);
        assert_eq!(get(ValueSource::json_pointer("/issue/labels")), None);
        assert_eq!(get(ValueSource::json_pointer("/issue")), None);
        assert_eq!(get(ValueSource::json_pointer("/nope")), None);
    }

    #[test]
    fn invalid_sources_are_configuration_errors() {
        assert_eq!(
            Field::new(&ValueSource::header("X Bad")),
            Err(InvalidField::Header("X Bad".into()))
        );
        assert_eq!(
            Field::new(&ValueSource::json_pointer("issue")),
            Err(InvalidField::Pointer("issue".into()))
        );
        let both = ValueSource {
            header: Some("a".into()),
            json_pointer: Some("/a".into()),
        };
        assert_eq!(Field::new(&both), Err(InvalidField::NotOne));
    }

    #[test]
    fn fields_collect_every_configured_value() {
        let fields = Fields {
            event_type: Some(Field::new(&ValueSource::header("X-GitHub-Event")).unwrap()),
            correlation_id: Some(Field::new(&ValueSource::json_pointer("/issue/number")).unwrap()),
            deduplication_id: None,
            message_group_id: Some(Field::new(&ValueSource::json_pointer("/nope")).unwrap()),
        };
        assert_eq!(
            fields.values(&headers(), &body()),
            Values {
                event_type: Some("issue_comment".into()),
                correlation_id: Some("42".into()),
                deduplication_id: None,
                message_group_id: None,
            }
        );
    }
}
