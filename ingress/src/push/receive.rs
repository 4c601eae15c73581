//! The internal push endpoint, `POST /push/{pipeline}` on the ops port: a `push`
//! processor sends each event (a structured CloudEvent) to every replica. Answered
//! `200` whether or not a subscriber wanted it, so an event nobody waits for is not
//! retried; `404` for a pipeline with no subscriptions here.

use std::time::Instant;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use super::{
    Pushes,
    hub::{Published, Push},
};

/// The route of the push endpoint, to merge into the ops server.
pub fn router(pushes: Pushes) -> Router {
    Router::new()
        .route("/push/{pipeline}", post(receive))
        .with_state(pushes)
}

async fn receive(
    State(pushes): State<Pushes>,
    Path(pipeline): Path<String>,
    Json(event): Json<Value>,
) -> Response {
    if !pushes.pipelines.contains(&pipeline) {
        let error = format!("pipeline {pipeline:?} has no subscriptions at this ingress");
        return (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response();
    }
    let Some(id) = event.get("id").and_then(Value::as_str).map(String::from) else {
        let error = "the body is not a structured CloudEvent with an id";
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    };
    let push = Push {
        pipeline,
        id,
        event,
    };
    let body = match pushes.hub().publish(push, Instant::now()) {
        Published::Delivered(n) => json!({ "delivered": n }),
        Published::Unmatched => json!({ "delivered": 0 }),
        Published::Duplicate => json!({ "duplicate": true }),
    };
    Json(body).into_response()
}
