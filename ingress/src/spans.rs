//! Spans named and attributed per the OpenTelemetry HTTP, messaging and database
//! semantic conventions. Headers are never recorded: they carry credentials.

use tracing::{Span, field::Empty};

use crate::publish::{Destination, System};

/// The server span of one request; it continues the caller's trace when the
/// request carries a `traceparent`.
pub fn server(method: &str, route: Option<&str>, path: &str) -> Span {
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        url.path = %path,
        url.scheme = "http",
        http.response.status_code = Empty,
        correlation.id = Empty,
        event.id = Empty,
    )
}

/// Records the response on the server span; 5xx are errors of this server.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The span of storing one event; its context travels with the event.
pub fn producer(parent: &Span, destination: &Destination) -> Span {
    let name = &destination.name;
    match destination.system {
        System::DynamoDb => tracing::info_span!(
            parent: parent,
            "put",
            otel.name = %format_args!("PutItem {name}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "aws.dynamodb",
            db.operation.name = "PutItem",
            db.collection.name = %name,
            aws.dynamodb.table_names = %name,
            correlation.id = Empty,
            event.id = Empty,
        ),
        System::Sqs | System::Noop => tracing::info_span!(
            parent: parent,
            "send",
            otel.name = %format_args!("send {name}"),
            otel.kind = "producer",
            otel.status_code = Empty,
            messaging.system = destination.system.as_str(),
            messaging.destination.name = %name,
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.message.id = Empty,
            correlation.id = Empty,
            event.id = Empty,
        ),
    }
}
