//! HTTP routing: an exact-path table of webhooks (so paths are taken literally, never
//! as route patterns), the method check, the concurrency gate, the body limit, the
//! request deadline and the server span.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    response::{IntoResponse, Response},
};
use eventpipe_core::telemetry;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::{
    limits::{Gate, Limit, Limits},
    metrics::{Metrics, UNMATCHED},
    pages::Pages,
    push::subscribe::Subscriptions,
    reply::Reply,
    secrets::Secrets,
    spans,
    webhook::Route,
};

/// The webhooks by path, and what every request reports to.
pub struct Routes {
    by_path: HashMap<String, Arc<Route>>,
    subscriptions: Subscriptions,
    metrics: Metrics,
    gate: Gate,
    request_timeout: Duration,
    pages: Option<Pages>,
    /// Kept while the router lives: its watcher stops once nobody holds it.
    _secrets: Arc<Secrets>,
}

impl Routes {
    pub fn new(
        routes: impl IntoIterator<Item = Route>,
        subscriptions: Subscriptions,
        metrics: Metrics,
        secrets: Arc<Secrets>,
        limits: &Limits,
        pages: Option<Pages>,
    ) -> Self {
        let by_path = routes
            .into_iter()
            .map(|r| (r.config.spec.path.clone(), Arc::new(r)))
            .collect();
        Self {
            by_path,
            subscriptions,
            gate: Gate::new(limits.max_concurrent_requests, metrics.in_flight()),
            request_timeout: limits.request_timeout,
            metrics,
            pages,
            _secrets: secrets,
        }
    }
}

/// The webhook router.
pub fn router(routes: Arc<Routes>) -> Router {
    Router::new().fallback(dispatch).with_state(routes)
}

async fn dispatch(State(routes): State<Arc<Routes>>, request: Request) -> Response {
    // Subscribers stay connected: they take no place a webhook request needs.
    if let Some(endpoint) = routes.subscriptions.endpoint(request.uri().path()) {
        let response = routes.subscriptions.serve(&endpoint, request).await;
        let path = endpoint.path();
        routes.metrics.request(path, response.status().as_u16());
        return response;
    }
    let (parts, body) = request.into_parts();
    let Some(route) = routes.by_path.get(parts.uri.path()) else {
        if let Some(page) = routes.page(&parts.method, parts.uri.path()).await {
            return page;
        }
        routes.metrics.request(UNMATCHED, 404);
        return Reply::NotFound.into_response();
    };
    let path = route.config.spec.path.as_str();
    if parts.method != Method::POST {
        routes.metrics.request(path, 405);
        return Reply::MethodNotAllowed.into_response();
    }
    let span = spans::server(parts.method.as_str(), Some(path), parts.uri.path());
    telemetry::continue_trace(&span, trace_headers(&parts.headers));
    let reply = async {
        // Held until the answer is ready; none free means answering 503 now.
        let Some(_pass) = routes.gate.try_enter() else {
            return Reply::Overloaded;
        };
        let deadline = Instant::now() + routes.request_timeout;
        let limit = route.config.max_body_bytes;
        let body = tokio::time::timeout_at(deadline, read_body(body, &parts.headers, limit));
        match body.await {
            Ok(Ok(body)) => route.handle(&parts.headers, body, &span, deadline).await,
            Ok(Err(reply)) => reply,
            Err(_) => Reply::RequestTimeout(routes.request_timeout),
        }
    }
    .instrument(span.clone())
    .await;
    routes.finish(path, &span, reply)
}

impl Routes {
    /// A static page at `path`, when pages are served and it names one.
    async fn page(&self, method: &Method, path: &str) -> Option<Response> {
        self.pages.as_ref()?.serve(method, path).await
    }

    /// Logs a refusal once (a refusal for load at warn: the pod needs attention),
    /// counts the answer and records it on the span.
    fn finish(&self, path: &str, span: &Span, reply: Reply) -> Response {
        let status = reply.status().as_u16();
        if let Some(reason) = reply.rejection() {
            let limit = reply.limit();
            span.in_scope(|| match limit {
                Some(Limit::Overloaded) => tracing::warn!(status, %reason, limit = Limit::Overloaded.as_str(), "request rejected"),
                Some(l) => tracing::info!(status, %reason, limit = l.as_str(), "request rejected"),
                None => tracing::info!(status, %reason, "request rejected"),
            });
            if let Some(l) = limit {
                self.metrics.rejected(l);
            }
        }
        spans::record_status(span, status);
        self.metrics.request(path, status);
        reply.into_response()
    }
}

fn trace_headers(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| Some((k, headers.get(k)?.to_str().ok()?)))
}

/// The body, at most `limit` bytes: a declared length over it is refused before reading.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Reply> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Reply::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Reply::TooLarge { limit }),
        Err(e) => Err(Reply::BadBody(e.to_string())),
    }
}
