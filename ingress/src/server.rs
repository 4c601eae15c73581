//! HTTP routing: an exact-path table of webhooks (so paths are taken literally, never
//! as route patterns), the method check, the body limit and the server span.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    response::{IntoResponse, Response},
};
use eventpipe_core::telemetry;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use crate::{
    metrics::{Metrics, UNMATCHED},
    reply::Reply,
    secrets::Secrets,
    spans,
    webhook::Route,
};

/// The webhooks by path, and what every request reports to.
pub struct Routes {
    by_path: HashMap<String, Arc<Route>>,
    metrics: Metrics,
    /// Kept while the router lives: its watcher stops once nobody holds it.
    _secrets: Arc<Secrets>,
}

impl Routes {
    pub fn new(
        routes: impl IntoIterator<Item = Route>,
        metrics: Metrics,
        secrets: Arc<Secrets>,
    ) -> Self {
        let by_path = routes
            .into_iter()
            .map(|r| (r.config.spec.path.clone(), Arc::new(r)))
            .collect();
        Self {
            by_path,
            metrics,
            _secrets: secrets,
        }
    }
}

/// The webhook router.
pub fn router(routes: Arc<Routes>) -> Router {
    Router::new().fallback(dispatch).with_state(routes)
}

async fn dispatch(State(routes): State<Arc<Routes>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(route) = routes.by_path.get(parts.uri.path()) else {
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
    let limit = route.config.max_body_bytes;
    let reply = async {
        let reply = match read_body(body, &parts.headers, limit).await {
            Ok(body) => route.handle(&parts.headers, body, &span).await,
            Err(reply) => reply,
        };
        if let Some(reason) = reply.rejection() {
            tracing::info!(status = reply.status().as_u16(), %reason, "request rejected");
        }
        reply
    }
    .instrument(span.clone())
    .await;
    let status = reply.status().as_u16();
    spans::record_status(&span, status);
    routes.metrics.request(path, status);
    reply.into_response()
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
