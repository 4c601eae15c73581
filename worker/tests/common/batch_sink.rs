//! An HTTP processor on loopback that takes batches (CloudEvents batched mode),
//! records each request and answers as told, naming failed events in Lambda's
//! `batchItemFailures`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};

/// One batch request: its headers and its events (structured CloudEvents).
#[derive(Clone, Debug)]
pub struct BatchRequest {
    pub headers: HashMap<String, String>,
    pub events: Vec<Value>,
}

impl BatchRequest {
    pub fn ids(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// `answer(request, its index)`: the status and the ids to name as failed.
type Answer = Arc<dyn Fn(&BatchRequest, usize) -> (u16, Vec<String>) + Send + Sync>;

#[derive(Clone)]
pub struct BatchSink {
    pub url: String,
    pub requests: Arc<Mutex<Vec<BatchRequest>>>,
    /// Events answered as delivered (2xx, not named), in order.
    pub delivered: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct SinkState {
    sink: BatchSink,
    answer: Answer,
}

impl BatchSink {
    pub async fn start(
        answer: impl Fn(&BatchRequest, usize) -> (u16, Vec<String>) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/batch", listener.local_addr().unwrap());
        let sink = BatchSink {
            url,
            requests: Arc::default(),
            delivered: Arc::default(),
        };
        let state = SinkState {
            sink: sink.clone(),
            answer: Arc::new(answer),
        };
        let app = axum::Router::new()
            .route("/batch", post(handle))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    pub fn requests(&self) -> Vec<BatchRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Ids answered as delivered, in order.
    pub fn delivered_ids(&self) -> Vec<String> {
        (self.delivered.lock().unwrap().iter())
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// How many times each id was sent, in any request.
    pub fn sent(&self) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for id in self.requests().iter().flat_map(BatchRequest::ids) {
            *n.entry(id).or_default() += 1;
        }
        n
    }
}

async fn handle(
    State(s): State<SinkState>,
    headers: HeaderMap,
    body: Bytes,
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    String,
) {
    let request = BatchRequest {
        headers: (headers.iter())
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        events: serde_json::from_slice(&body).unwrap_or_default(),
    };
    let index = {
        let mut all = s.sink.requests.lock().unwrap();
        all.push(request.clone());
        all.len() - 1
    };
    let (status, failed) = (s.answer)(&request, index);
    if (200..300).contains(&status) {
        let mut delivered = s.sink.delivered.lock().unwrap();
        (request.events.iter())
            .filter(|e| !failed.iter().any(|f| e["id"] == f.as_str()))
            .for_each(|e| delivered.push(e.clone()));
    }
    let failures: Vec<Value> = failed
        .iter()
        .map(|id| json!({"itemIdentifier": id}))
        .collect();
    let body = json!({"batchItemFailures": failures}).to_string();
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    (status, [("content-type", "application/json")], body)
}
