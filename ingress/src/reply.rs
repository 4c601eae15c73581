//! What the ingress answers: `202` with the ids once the event is stored, or a
//! short JSON error. Texts name the problem, never a credential.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{limits::Limit, signature::AuthError};

/// Seconds a sender should wait before retrying a `503`.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub enum Reply {
    Accepted {
        event_id: String,
        correlation_id: String,
        /// Admits the sender to its own request's pushes, when a subscription names
        /// this webhook.
        subscribe_token: Option<String>,
    },
    /// GitHub's `ping`, answered and not enqueued.
    Pong {
        hook_id: Option<String>,
    },
    /// Slack's `url_verification`, answered with its challenge and not enqueued.
    Challenge(String),
    NotFound,
    MethodNotAllowed,
    TooLarge {
        limit: usize,
    },
    Unauthorized(AuthError),
    UnsupportedMediaType(String),
    BadJson(serde_json::Error),
    BadBody(String),
    /// The event was refused by its destination for its size.
    EventTooLarge(String),
    /// Not stored; the sender should retry.
    Unavailable(&'static str),
    /// The body did not arrive within the request timeout.
    RequestTimeout(Duration),
    /// Every place for a request is taken; the sender should retry.
    Overloaded,
}

impl Reply {
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Accepted { .. } => StatusCode::ACCEPTED,
            Reply::Pong { .. } | Reply::Challenge(_) => StatusCode::OK,
            Reply::NotFound => StatusCode::NOT_FOUND,
            Reply::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reply::TooLarge { .. } | Reply::EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reply::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Reply::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reply::BadJson(_) | Reply::BadBody(_) => StatusCode::BAD_REQUEST,
            Reply::Unavailable(_) | Reply::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Reply::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The ingress limit behind this reply, if one refused the request.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Reply::TooLarge { .. } => Some(Limit::BodyTooLarge),
            Reply::RequestTimeout(_) => Some(Limit::RequestTimeout),
            Reply::Overloaded => Some(Limit::Overloaded),
            _ => None,
        }
    }

    /// The error text of anything but `202`.
    pub fn rejection(&self) -> Option<String> {
        Some(match self {
            Reply::Accepted { .. } | Reply::Pong { .. } | Reply::Challenge(_) => return None,
            Reply::NotFound => "no webhook at this path".into(),
            Reply::MethodNotAllowed => "webhooks accept POST only".into(),
            Reply::TooLarge { limit } => format!("body larger than {limit} bytes"),
            Reply::Unauthorized(e) => e.to_string(),
            Reply::UnsupportedMediaType(t) => {
                format!("content type {t:?} is not supported; send application/json")
            }
            Reply::BadJson(e) => format!("body is not valid JSON: {e}"),
            Reply::BadBody(e) => format!("could not read the body: {e}"),
            Reply::EventTooLarge(e) => e.clone(),
            Reply::Unavailable(why) => format!("{why}; retry later"),
            Reply::RequestTimeout(after) => {
                format!("the request was not received within {after:?}")
            }
            Reply::Overloaded => "too many requests in progress; retry later".into(),
        })
    }

    fn body(&self) -> serde_json::Value {
        match (self, self.rejection()) {
            (
                Reply::Accepted {
                    event_id,
                    correlation_id,
                    subscribe_token: Some(token),
                },
                _,
            ) => {
                json!({ "eventId": event_id, "correlationId": correlation_id, "subscribeToken": token })
            }
            (
                Reply::Accepted {
                    event_id,
                    correlation_id,
                    subscribe_token: None,
                },
                _,
            ) => json!({ "eventId": event_id, "correlationId": correlation_id }),
            (Reply::Pong { hook_id }, _) => json!({ "pong": true, "hookId": hook_id }),
            (Reply::Challenge(challenge), _) => json!({ "challenge": challenge }),
            (Reply::BadJson(e), Some(error)) => {
                json!({ "error": error, "line": e.line(), "column": e.column() })
            }
            (_, error) => json!({ "error": error }),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            Reply::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Reply::Unavailable(_) | Reply::Overloaded => {
                headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_give_the_position() {
        let e = serde_json::from_slice::<serde_json::Value>(b"{\n  \"a\": }").unwrap_err();
        let body = Reply::BadJson(e).body();
        assert_eq!(
            (body["line"].as_u64(), body["column"].as_u64()),
            (Some(2), Some(8))
        );
        assert!(body["error"].as_str().unwrap().contains("line 2 column 8"));
    }

    #[test]
    fn unavailable_tells_the_sender_when_to_retry() {
        let r = Reply::Unavailable("the event could not be stored").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = Reply::Overloaded.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = Reply::MethodNotAllowed.into_response();
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }
}
