//! The `external.metrics.k8s.io/v1beta1` API the HorizontalPodAutoscaler reads:
//! queue depth and stream lag per pipeline, served over HTTPS ([`crate::tls`]) to the API
//! server's front proxy only ([`front_proxy`]) from a [`Cache`] that a background
//! task refreshes every few seconds, so the HPA never waits on AWS.

mod cache;
pub mod front_proxy;
mod subject;

pub use cache::{Cache, Refreshed, Values, polling_interval, refresh};
pub use front_proxy::{FrontProxy, Serving};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::render::{PIPELINE_LABEL, QUEUE_DEPTH_METRIC, STREAM_LAG_METRIC};

const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

pub fn router(cache: Cache) -> Router {
    Router::new()
        .route("/apis/external.metrics.k8s.io/v1beta1", get(discovery))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}",
            get(values),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(cache)
}

async fn discovery() -> Json<Value> {
    let resource = |name: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]});
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [resource(QUEUE_DEPTH_METRIC), resource(STREAM_LAG_METRIC)],
    }))
}

#[derive(Deserialize)]
struct Selector {
    #[serde(rename = "labelSelector", default)]
    label_selector: String,
}

/// `eventpipe.dev/pipeline=name` (or `==`) among comma-separated requirements.
pub fn pipeline_of(selector: &str) -> Option<String> {
    selector.split(',').find_map(|req| {
        let (key, value) = req.split_once("==").or_else(|| req.split_once('='))?;
        (key.trim() == PIPELINE_LABEL).then(|| value.trim().to_string())
    })
}

/// A Kubernetes `Status` answer.
fn status(code: StatusCode, message: String) -> (StatusCode, Json<Value>) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code.as_u16()});
    (code, Json(body))
}

async fn values(
    State(cache): State<Cache>,
    Path((ns, metric)): Path<(String, String)>,
    Query(q): Query<Selector>,
) -> impl IntoResponse {
    if metric != QUEUE_DEPTH_METRIC && metric != STREAM_LAG_METRIC {
        return status(
            StatusCode::NOT_FOUND,
            format!("no external metric {metric:?}"),
        );
    }
    let Some(pipeline) = pipeline_of(&q.label_selector) else {
        return status(
            StatusCode::BAD_REQUEST,
            format!("labelSelector must select {PIPELINE_LABEL}=<name>"),
        );
    };
    let found = cache.get(&ns, &pipeline);
    let value = found.and_then(|v| {
        if metric == QUEUE_DEPTH_METRIC {
            v.queue_depth
        } else {
            v.stream_lag_seconds
        }
    });
    let items: Vec<Value> = value
        .map(|v| {
            json!({
                "metricName": metric,
                "metricLabels": {PIPELINE_LABEL: pipeline},
                "timestamp": found.and_then(|f| f.at).unwrap_or_else(k8s_openapi::jiff::Timestamp::now).to_string(),
                "value": v.to_string(),
            })
        })
        .into_iter()
        .collect();
    (
        StatusCode::OK,
        Json(
            json!({"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_pipeline() {
        assert_eq!(
            pipeline_of("eventpipe.dev/pipeline=hooks").as_deref(),
            Some("hooks")
        );
        assert_eq!(
            pipeline_of("a=b,eventpipe.dev/pipeline==hooks").as_deref(),
            Some("hooks")
        );
        assert_eq!(pipeline_of("app=x"), None);
        assert_eq!(pipeline_of(""), None);
    }
}
