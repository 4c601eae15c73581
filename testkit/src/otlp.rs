//! An OTLP/HTTP trace receiver on a free loopback port, decoding export requests with
//! the protocol's own types: what tests of exported spans point
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

pub use opentelemetry_proto::tonic::trace::v1::Span;

/// The spans received so far, each as the test's `view` of it.
pub type Received<S> = Arc<Mutex<Vec<S>>>;

/// Starts the receiver; its base URL, and what it receives, each span through `view`.
pub async fn receiver<S: Send + 'static>(view: fn(&Span) -> S) -> (String, Received<S>) {
    let spans: Received<S> = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let all = (request.resource_spans.iter())
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans);
                store.lock().expect("not poisoned").extend(all.map(view));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    (url, spans)
}

/// An id as OTLP/JSON and W3C traceparent write it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
