//! A scripted Kubernetes API for reconcile tests: kube's mock service answering from
//! an in-memory object store, recording every request (the controller-rs pattern).
#![allow(dead_code)]
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

pub mod examples;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
    /// A GET for metadata only (`as=PartialObjectMetadata`), answered without data.
    pub metadata_only: bool,
}

/// The answer to a POST, from its body (e.g. a TokenReview's verdict).
pub type Answer = Arc<dyn Fn(&Value) -> (StatusCode, Value) + Send + Sync>;

/// Objects by API path (e.g. `/api/v1/namespaces/default/secrets/gh`).
#[derive(Clone, Default)]
pub struct FakeApi {
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// Available replicas reported for applied Deployments.
    pub available: Arc<Mutex<i32>>,
    /// `spec.replicas` of applied Deployments, as their autoscaler left it (unset: none).
    pub replicas: Arc<Mutex<Option<i32>>>,
    /// Answers to POSTs by path; others are echoed as created.
    pub answers: Arc<Mutex<BTreeMap<String, Answer>>>,
}

impl FakeApi {
    pub fn new() -> Self {
        let api = Self::default();
        *api.available.lock().unwrap() = 1;
        api
    }

    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.into(), object);
    }

    /// Answers POSTs to `path` with `answer`.
    pub fn answer_posts(
        &self,
        path: &str,
        answer: impl Fn(&Value) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        let answer: Answer = Arc::new(answer);
        self.answers.lock().unwrap().insert(path.into(), answer);
    }

    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            // Watches stay open without an event, as on a quiet cluster.
            let mut watches = vec![];
            while let Some((request, send)) = handle.next_request().await {
                if (request.uri().query()).is_some_and(|q| q.contains("watch=true")) {
                    watches.push(send);
                    continue;
                }
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let metadata_only = (parts.headers.get(http::header::ACCEPT))
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
                api.calls.lock().unwrap().push(Call {
                    method: parts.method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                    metadata_only,
                });
                let (status, mut answer) = api.answer(&parts.method, &path, body);
                if metadata_only && status == StatusCode::OK {
                    answer = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": answer["metadata"]});
                }
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    fn answer(&self, method: &Method, path: &str, body: Value) -> (StatusCode, Value) {
        let scripted = self.answers.lock().unwrap().get(path).cloned();
        if let Some(answer) = scripted.filter(|_| *method == Method::POST) {
            return answer(&body);
        }
        let mut objects = self.objects.lock().unwrap();
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found")});
        match *method {
            Method::GET => match objects.get(path) {
                Some(o) => (StatusCode::OK, o.clone()),
                // A collection: every stored object right under it.
                None if is_collection(path) => {
                    let prefix = format!("{path}/");
                    let items: Vec<Value> = objects
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                        .map(|(_, v)| v.clone())
                        .collect();
                    (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                    )
                }
                None => (StatusCode::NOT_FOUND, not_found),
            },
            Method::DELETE => match objects.remove(path) {
                Some(o) => (StatusCode::OK, o),
                None => (StatusCode::NOT_FOUND, not_found),
            },
            Method::POST => (StatusCode::CREATED, body),
            Method::PATCH if path.ends_with("/status") => {
                let object = objects
                    .get_mut(path.trim_end_matches("/status"))
                    .expect("status of a stored object");
                object["status"] = body["status"].clone();
                (StatusCode::OK, object.clone())
            }
            // JSON patches (finalizers) change the stored object in place.
            Method::PATCH if body.is_array() => {
                let object = objects.get_mut(path).expect("patch of a stored object");
                // The API server serializes absent finalizers as null, which patches test for.
                if object["metadata"].get("finalizers").is_none() {
                    object["metadata"]["finalizers"] = Value::Null;
                }
                let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
                json_patch::patch(object, &patch).unwrap();
                (StatusCode::OK, object.clone())
            }
            Method::PATCH => {
                let mut applied = body;
                if applied["kind"] == "Deployment" {
                    let n = *self.available.lock().unwrap();
                    applied["status"] = json!({"availableReplicas": n, "readyReplicas": n});
                    if let Some(r) = *self.replicas.lock().unwrap() {
                        applied["spec"]["replicas"] = json!(r);
                    }
                }
                objects.insert(path.into(), applied.clone());
                (StatusCode::OK, applied)
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, Value::Null),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// `METHOD path` of every call, in order.
    pub fn log(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }
}

/// `/api/v1/namespaces/ns/kind` or `/apis/group/version/namespaces/ns/kind`.
fn is_collection(path: &str) -> bool {
    let segments = path.trim_start_matches('/').split('/').count();
    (path.starts_with("/api/") && segments == 5) || (path.starts_with("/apis/") && segments == 6)
}

pub const CRD: &str = "/apis/eventpipe.dev/v1alpha1/namespaces/default";
