//! CloudEvents over HTTP in binary mode, as eventpipe's workers deliver them (`ce-*`
//! headers, the data as the body) and as the shop answers with the next event.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// An event delivered to the shop.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    pub id: String,
    pub event_type: String,
    pub correlation_id: Option<String>,
    /// W3C trace context of the delivery, so what the shop writes continues it.
    pub traceparent: Option<String>,
    pub data: Value,
}

impl Incoming {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, String> {
        let text = |name: &str| {
            let value = headers.get(name)?.to_str().ok()?;
            (!value.is_empty()).then(|| value.to_string())
        };
        let (Some(id), Some(event_type)) = (text("ce-id"), text("ce-type")) else {
            return Err("not a CloudEvent: ce-id and ce-type are required".into());
        };
        let data =
            serde_json::from_slice(body).map_err(|e| format!("the data is not JSON: {e}"))?;
        Ok(Self {
            id,
            event_type,
            correlation_id: text("ce-correlationid"),
            traceparent: text("traceparent"),
            data,
        })
    }

    /// The trace id of the delivery (`00-<trace id>-<span id>-<flags>`).
    pub fn trace_id(&self) -> Option<&str> {
        let id = self.traceparent.as_deref()?.split('-').nth(1)?;
        (id.len() == 32).then_some(id)
    }
}

/// The event the shop answers with: eventpipe publishes it to the pipeline's reply
/// destination.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub subject: Option<String>,
    pub data: Value,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        put("ce-specversion", "1.0");
        put("ce-id", &self.id);
        put("ce-type", &self.event_type);
        put("ce-source", &self.source);
        if let Some(subject) = &self.subject {
            put("ce-subject", subject);
        }
        put(header::CONTENT_TYPE.as_str(), "application/json");
        (StatusCode::OK, headers, self.data.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_binary_mode_event_is_read_with_its_trace() {
        let h = headers(&[
            ("ce-id", "e-1"),
            ("ce-type", "OrderPlaced"),
            ("ce-correlationid", "o-1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let event = Incoming::parse(&h, br#"{"orderId":"o-1"}"#).unwrap();
        assert_eq!(event.event_type, "OrderPlaced");
        assert_eq!(event.correlation_id.as_deref(), Some("o-1"));
        assert_eq!(event.trace_id(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(event.data["orderId"], "o-1");
    }

    #[test]
    fn what_is_not_an_event_says_why() {
        let err = Incoming::parse(&headers(&[("ce-type", "t")]), b"{}").unwrap_err();
        assert!(err.contains("ce-id and ce-type are required"), "{err}");
        let h = headers(&[("ce-id", "e"), ("ce-type", "t"), ("traceparent", "garbage")]);
        let err = Incoming::parse(&h, b"{nope").unwrap_err();
        assert!(err.contains("the data is not JSON"), "{err}");
        assert_eq!(Incoming::parse(&h, b"{}").unwrap().trace_id(), None);
    }

    #[test]
    fn a_reply_is_a_binary_mode_event() {
        let reply = Reply {
            id: "o-1.PaymentCompleted".into(),
            event_type: "PaymentCompleted".into(),
            source: "/shop/payments".into(),
            subject: Some("o-1".into()),
            data: serde_json::json!({"orderId": "o-1"}),
        };
        let r = reply.into_response();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "o-1.PaymentCompleted");
        assert_eq!(h["ce-type"], "PaymentCompleted");
        assert_eq!(h["ce-source"], "/shop/payments");
        assert_eq!(h["ce-subject"], "o-1");
        assert_eq!(h["content-type"], "application/json");
    }
}
