//! `push`: deliver each event to the clients subscribed at a pipeline's ingress, by
//! POSTing it (a structured CloudEvent) to every replica's push endpoint. In a
//! cluster the replicas are the addresses of a headless Service; locally, the
//! ingress in process. Every replica must take it. A replica unreachable, or none
//! found (the ingress rolling or scaled down), holds the event as a throttling
//! processor does, spending no retry; it is tried again on every replica, and the
//! ingress drops what it pushed already, by event id. An event no subscriber wants
//! is still taken (`200`), never retried.

use std::net::SocketAddr;
use std::time::Duration;

use eventpipe_core::envelope::Structured;
use eventpipe_crds::PushProcessor as Spec;
use futures::future::join_all;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use super::http::{no_answer, refused};
use super::{BoxFuture, Delivery, Failure, Outcome, Processor, with_trace};
use crate::http_client::{self, HttpClient};

const JSON: &str = "application/json";

/// Where the ingress replicas are.
#[derive(Clone, Debug)]
pub enum Replicas {
    /// Every address this `host:port` resolves to (a headless Service).
    Resolved(String),
    /// Ingresses at known addresses (local mode: the one in process).
    At(Vec<SocketAddr>),
}

pub struct PushProcessor {
    client: HttpClient,
    replicas: Replicas,
    pipeline: String,
    timeout: Duration,
}

impl PushProcessor {
    /// Pushes to `spec`'s pipeline, at `local` when given, else through its
    /// ingress's headless Service; each request within `timeout`.
    pub fn new(spec: &Spec, local: Option<SocketAddr>, timeout: Duration) -> anyhow::Result<Self> {
        let pipeline = spec.pipeline_ref.name.clone();
        let replicas = match local {
            Some(addr) => Replicas::At(vec![addr]),
            None => Replicas::Resolved(format!("{}:{}", Spec::service_name(&pipeline), Spec::PORT)),
        };
        Ok(Self {
            client: HttpClient::new(8)?,
            replicas,
            pipeline,
            timeout,
        })
    }

    async fn addresses(&self) -> Result<Vec<SocketAddr>, Failure> {
        let name = match &self.replicas {
            Replicas::At(addresses) => return Ok(addresses.clone()),
            Replicas::Resolved(name) => name,
        };
        let found = tokio::net::lookup_host(name.as_str()).await;
        let none = |why: String| Failure::throttled(None, format!("no ingress replica: {why}"));
        let addresses: Vec<_> = found.map_err(|e| none(format!("{name}: {e}")))?.collect();
        if addresses.is_empty() {
            return Err(none(name.clone()));
        }
        Ok(addresses)
    }

    async fn send(&self, addr: SocketAddr, body: &[u8]) -> Result<(), Failure> {
        let url = format!("http://{addr}/push/{}", self.pipeline);
        let uri = http_client::uri(&url).map_err(|e| Failure::invalid(format!("{url}: {e}")))?;
        let headers = HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static(JSON))]);
        let answer = (self
            .client
            .post(&uri, headers, body.to_vec(), self.timeout)
            .await)
            .map_err(|e| no_answer(&e, &url))?;
        refused(answer).map(drop).map_err(|f| Failure {
            message: format!("push to {addr}: {}", f.message),
            ..f
        })
    }
}

impl Processor for PushProcessor {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let event = with_trace(d.event, &d.trace);
            let body = match serde_json::to_vec(&Structured(&event)) {
                Ok(body) => body,
                Err(e) => return Outcome::Failed(Failure::invalid(e.to_string())),
            };
            let addresses = match self.addresses().await {
                Ok(a) => a,
                Err(failure) => return Outcome::Failed(failure),
            };
            let sent = join_all(addresses.iter().map(|a| self.send(*a, &body))).await;
            match sent.into_iter().find_map(Result::err) {
                None => Outcome::Delivered { reply: None },
                Some(failure) => Outcome::Failed(failure),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Json, Router, http::StatusCode, routing::post};
    use eventpipe_crds::ObjectRef;

    use super::*;
    use crate::processor::FailureKind;
    use crate::processor::fixtures::{deliveries, events};

    fn processor(replicas: Replicas) -> PushProcessor {
        let spec = Spec {
            pipeline_ref: ObjectRef {
                name: "notes".into(),
            },
        };
        let mut p = PushProcessor::new(&spec, None, Duration::from_secs(5)).unwrap();
        p.replicas = replicas;
        p
    }

    async fn failure(p: &PushProcessor) -> Failure {
        match deliver(p).await {
            Outcome::Failed(f) => f,
            Outcome::Delivered { .. } => panic!("delivered"),
        }
    }

    async fn deliver(p: &PushProcessor) -> Outcome {
        let events = events(&["e1"]);
        let d = deliveries(&events).remove(0);
        p.deliver(d).await
    }

    /// A stand-in for one ingress replica's push endpoint, answering `status` and
    /// keeping the ids of the events pushed to it.
    async fn replica(status: u16) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let got = Arc::new(Mutex::new(vec![]));
        let seen = got.clone();
        let app = Router::new().route(
            "/push/notes",
            post(move |Json(event): Json<serde_json::Value>| async move {
                seen.lock()
                    .unwrap()
                    .push(event["id"].as_str().unwrap().to_string());
                StatusCode::from_u16(status).unwrap()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, got)
    }

    #[tokio::test]
    async fn every_replica_gets_the_event_and_any_refusal_fails_the_delivery() {
        let (a, got_a) = replica(200).await;
        let (b, got_b) = replica(200).await;
        let outcome = deliver(&processor(Replicas::At(vec![a, b]))).await;
        assert!(
            matches!(outcome, Outcome::Delivered { reply: None }),
            "{outcome:?}"
        );
        assert_eq!(
            (got_a.lock().unwrap().len(), got_b.lock().unwrap().len()),
            (1, 1)
        );
        assert_eq!(got_a.lock().unwrap()[0], "e1");
        // A replica whose ingress has no subscriptions for the pipeline.
        let (c, _) = replica(404).await;
        let f = failure(&processor(Replicas::At(vec![a, c]))).await;
        assert_eq!(f.kind, FailureKind::Status(404), "{}", f.message);
    }

    #[test]
    fn in_a_cluster_the_replicas_are_the_headless_services_addresses() {
        let p = processor(Replicas::At(vec![]));
        let spec = Spec {
            pipeline_ref: ObjectRef {
                name: "notes".into(),
            },
        };
        let cluster = PushProcessor::new(&spec, None, p.timeout).unwrap();
        assert!(
            matches!(cluster.replicas, Replicas::Resolved(n) if n == "notes-ingress-push:9090")
        );
    }

    #[tokio::test]
    async fn an_unreachable_busy_or_missing_replica_holds_the_event_without_a_retry() {
        // A port just bound and closed: nothing listens on it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let f = failure(&processor(Replicas::At(vec![addr]))).await;
        assert_eq!(f.kind, FailureKind::Throttled(None), "{}", f.message);
        let (draining, _) = replica(503).await;
        let f = failure(&processor(Replicas::At(vec![draining]))).await;
        assert_eq!(f.kind, FailureKind::Throttled(None), "{}", f.message);
        let f = failure(&processor(Replicas::Resolved(
            "no-such-host.invalid:9090".into(),
        )))
        .await;
        assert_eq!(f.kind, FailureKind::Throttled(None));
        assert!(f.message.starts_with("no ingress replica"), "{}", f.message);
    }
}
