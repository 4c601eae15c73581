//! `push`: deliver each event to the clients subscribed at a pipeline's ingress, by
//! POSTing it (a structured CloudEvent) to every replica's push endpoint. In a
//! cluster the replicas are the addresses of a headless Service; locally, the
//! ingress in process. Every replica must take it: one unreachable fails the
//! delivery, to be retried (the ingress drops what it pushed already, by event id).
//! An event no subscriber wants is still taken (`200`), never retried.

use std::{net::SocketAddr, time::Duration};

use eventpipe_crds::PushProcessor as Spec;
use futures::future::join_all;
use reqwest::header::CONTENT_TYPE;

use super::{BoxFuture, Delivery, Failure, FailureKind, Outcome, Processor, with_trace};

/// Where the ingress replicas are.
#[derive(Clone, Debug)]
pub enum Replicas {
    /// Every address this `host:port` resolves to (a headless Service).
    Resolved(String),
    /// One ingress at a known address (local mode).
    At(SocketAddr),
}

pub struct PushProcessor {
    client: reqwest::Client,
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
            Some(addr) => Replicas::At(addr),
            None => Replicas::Resolved(format!("{}:{}", Spec::service_name(&pipeline), Spec::PORT)),
        };
        Ok(Self {
            client: reqwest::Client::builder().build()?,
            replicas,
            pipeline,
            timeout,
        })
    }

    async fn addresses(&self) -> Result<Vec<SocketAddr>, Failure> {
        let name = match &self.replicas {
            Replicas::At(addr) => return Ok(vec![*addr]),
            Replicas::Resolved(name) => name,
        };
        let found = tokio::net::lookup_host(name.as_str()).await;
        let addresses: Vec<_> = found
            .map_err(|e| Failure::transient(format!("no ingress replica: {name}: {e}")))?
            .collect();
        if addresses.is_empty() {
            return Err(Failure::transient(format!("no ingress replica: {name}")));
        }
        Ok(addresses)
    }

    async fn send(&self, addr: SocketAddr, body: &[u8]) -> Result<(), Failure> {
        let url = format!("http://{addr}/push/{}", self.pipeline);
        let sent = (self.client.post(&url))
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Failure::transient(format!("push to {addr}: {e}")))?;
        let status = sent.status();
        if status.is_success() {
            return Ok(());
        }
        let text = sent.text().await.unwrap_or_default();
        Err(Failure {
            kind: FailureKind::Status(status.as_u16()),
            message: format!("push to {addr}: {status}: {text}"),
        })
    }
}

impl Processor for PushProcessor {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let event = with_trace(d.event, &d.trace);
            let body = match serde_json::to_vec(&event) {
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
    use eventpipe_core::envelope::{NewEvent, build};
    use eventpipe_crds::ObjectRef;

    use super::*;

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
        let event = build(NewEvent {
            id: "e1".into(),
            source: "/s".into(),
            event_type: "t".into(),
            ..Default::default()
        });
        let d = Delivery {
            event: &event,
            trace: vec![],
            group: None,
            completion: None,
        };
        match p.deliver(d).await {
            Outcome::Failed(f) => f,
            Outcome::Delivered { .. } => panic!("delivered"),
        }
    }

    #[test]
    fn in_a_cluster_the_replicas_are_the_headless_services_addresses() {
        let p = processor(Replicas::At(([127, 0, 0, 1], 1).into()));
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
    async fn an_unreachable_or_unknown_replica_is_a_failure_to_retry() {
        // A port just bound and closed: nothing listens on it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let f = failure(&processor(Replicas::At(addr))).await;
        assert_eq!(f.kind, FailureKind::Transient, "{}", f.message);
        let f = failure(&processor(Replicas::Resolved(
            "no-such-host.invalid:9090".into(),
        )))
        .await;
        assert_eq!(f.kind, FailureKind::Transient);
        assert!(f.message.starts_with("no ingress replica"), "{}", f.message);
    }
}
