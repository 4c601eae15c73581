//! The web console in a cluster (`--console-listen`): the page `eventpipe dev` serves,
//! from the same code. It shows the EventPipelines of the watched namespaces, listed
//! through the API every few seconds, with their status, conditions and worker
//! replicas, the queue depth this replica's metrics cache holds (else the status's)
//! and the status's DLQ depth; and the recent events of the ingress and worker pods it
//! finds there, followed over their feeds (`/events/stream` on their `metrics` port).
//!
//! Read-only: it has no dead-letter queues to list or redrive, so no token either.

use std::collections::BTreeMap;
use std::time::Duration;

use eventpipe_console::remote::{Remotes, Source};
use eventpipe_console::{Condition, Console, Depths, Pipeline, Settings};
use eventpipe_crds::EventPipeline;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::external_metrics::{Cache, Values};
use crate::render::{OWNED_SELECTOR, PIPELINE_LABEL};
use crate::scope::{Scope, api};

/// How often the pipelines and pods are listed again.
const EVERY: Duration = Duration::from_secs(5);
/// The container port the ingress and workers serve their feed on.
const FEED_PORT: &str = "metrics";

/// Serves the console on `listener` until `stop`, for the pipelines and pods of
/// `watch_namespaces` (empty: the whole cluster), with queue depths from `cache`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    watch_namespaces: Vec<String>,
    cache: Cache,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let console = Console::new(vec![], BTreeMap::new(), Settings::default());
    let namespaces = Scope::of(&watch_namespaces).namespaces();
    let discover = discover(console.clone(), client, namespaces, cache);
    tokio::select! {
        served = eventpipe_console::serve(listener, console, stop.clone().cancelled_owned()) => served,
        _ = discover => Ok(()),
    }
}

/// Keeps the console's pipelines, depths and followed feeds current; runs until dropped.
async fn discover(console: Console, client: Client, namespaces: Vec<Option<String>>, cache: Cache) {
    let mut remotes = Remotes::new(console.clone());
    loop {
        match list_pipelines(&client, &namespaces).await {
            Ok(pipelines) => show(&console, &pipelines, &cache),
            Err(e) => tracing::warn!(error = %e, "console: EventPipelines not listed"),
        }
        match list_pods(&client, &namespaces).await {
            Ok(pods) => remotes.sync(&feeds(&pods)),
            Err(e) => tracing::warn!(error = %e, "console: pods not listed"),
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn list_pipelines(
    client: &Client,
    namespaces: &[Option<String>],
) -> kube::Result<Vec<EventPipeline>> {
    let mut all = vec![];
    for ns in namespaces {
        let list = api::<EventPipeline>(client, ns.as_deref());
        all.extend(list.list(&ListParams::default()).await?.items);
    }
    Ok(all)
}

/// The ingress and worker pods (those the operator renders).
async fn list_pods(client: &Client, namespaces: &[Option<String>]) -> kube::Result<Vec<Pod>> {
    let owned = ListParams::default().labels(OWNED_SELECTOR);
    let mut all = vec![];
    for ns in namespaces {
        all.extend(api::<Pod>(client, ns.as_deref()).list(&owned).await?.items);
    }
    Ok(all)
}

fn show(console: &Console, pipelines: &[EventPipeline], cache: &Cache) {
    let mut views = vec![];
    for p in pipelines {
        let cached = cache.get(&p.namespace().unwrap_or_default(), &p.name_any());
        let (view, depths) = view(p, cached);
        if let Some(depths) = depths {
            console.set_depths(&view.name, depths);
        }
        views.push(view);
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    console.set_pipelines(views);
}

/// How the console shows a pipeline, named `namespace/name`, and its depths when any
/// is known: the cache's queue depth is fresher than the status's.
pub fn view(p: &EventPipeline, cached: Option<Values>) -> (Pipeline, Option<Depths>) {
    let status = p.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let summary = match ready {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(c) if !c.reason.is_empty() => c.reason.clone(),
        _ => "Pending".to_string(),
    };
    let conditions = (status.conditions.iter())
        .map(|c| Condition {
            kind: c.type_.clone(),
            status: c.status.clone(),
            message: c.message.clone(),
        })
        .collect();
    let queue = cached.and_then(|v| v.queue_depth).or(status.queue_depth);
    let depths = (queue.is_some() || status.dlq_depth.is_some()).then(|| Depths {
        queue: queue.unwrap_or_default(),
        dead_letters: status.dlq_depth.unwrap_or_default(),
    });
    let pipeline = Pipeline {
        name: qualified(&p.namespace().unwrap_or_default(), &p.name_any()),
        status: summary,
        conditions,
        replicas: u32::try_from(status.replicas.unwrap_or_default()).unwrap_or_default(),
    };
    (pipeline, depths)
}

fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The feeds of `pods`, by pod uid and container restarts (a restarted container's
/// feed starts again from its first record): those of running ingress and worker pods
/// with an IP and a `metrics` port.
pub fn feeds(pods: &[Pod]) -> BTreeMap<String, Source> {
    pods.iter().filter_map(feed).collect()
}

fn feed(pod: &Pod) -> Option<(String, Source)> {
    pod.labels().get(PIPELINE_LABEL)?;
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref()?;
    let port = (pod.spec.as_ref()?.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(FEED_PORT))?
        .container_port;
    let restarts: i32 = (status.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    let host = match ip.contains(':') {
        true => format!("[{ip}]"),
        false => ip.to_string(),
    };
    let source = Source {
        base_url: format!("http://{host}:{port}"),
        prefix: pod.namespace().unwrap_or_default(),
    };
    Some((format!("{}/{restarts}", pod.uid()?), source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ip: &str, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "labels": {PIPELINE_LABEL: "orders", "app.kubernetes.io/component": "worker"}},
            "spec": {"containers": [{"name": "worker", "image": "w",
                "ports": [{"name": "metrics", "containerPort": 9090}]}]},
            "status": {"phase": phase, "podIP": ip,
                "containerStatuses": [{"name": "worker", "restartCount": restarts, "ready": true,
                    "image": "w", "imageID": ""}]},
        }))
        .unwrap()
    }

    #[test]
    fn running_pods_with_an_ip_are_followed_on_their_metrics_port() {
        let pods = [
            pod("a", "Running", "10.0.0.7", 0),
            pod("b", "Running", "fd00::7", 2),
            pod("c", "Pending", "10.0.0.8", 0),
        ];
        let feeds = feeds(&pods);
        let urls: Vec<_> = (feeds.iter())
            .map(|(k, s)| format!("{k} {} {}", s.base_url, s.prefix))
            .collect();
        assert_eq!(
            urls,
            [
                "uid-a/0 http://10.0.0.7:9090 shop",
                "uid-b/2 http://[fd00::7]:9090 shop"
            ]
        );
    }

    #[test]
    fn pods_without_a_pipeline_or_a_metrics_port_are_not() {
        let mut unlabelled = pod("a", "Running", "10.0.0.7", 0);
        unlabelled.metadata.labels = None;
        let mut portless = pod("b", "Running", "10.0.0.8", 0);
        portless.spec.as_mut().unwrap().containers[0].ports = None;
        assert!(feeds(&[unlabelled, portless]).is_empty());
    }

    fn pipeline(status: serde_json::Value) -> EventPipeline {
        serde_json::from_value(json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"sources": [], "processor": {"http": {"url": "http://p"}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_pipeline_shows_its_readiness_replicas_and_depths() {
        let ready = pipeline(json!({"replicas": 3, "queueDepth": 4, "dlqDepth": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled",
                "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let (view, depths) = view(&ready, None);
        assert_eq!(
            (view.name.as_str(), view.status.as_str(), view.replicas),
            ("shop/orders", "Ready", 3)
        );
        assert_eq!(view.conditions[0].message, "ok");
        let depths = depths.unwrap();
        assert_eq!((depths.queue, depths.dead_letters), (4, 1));
        let fresh = Values {
            queue_depth: Some(9),
            ..Default::default()
        };
        assert_eq!(super::view(&ready, Some(fresh)).1.unwrap().queue, 9);
    }

    #[test]
    fn a_pipeline_not_ready_shows_why() {
        let blocked = pipeline(json!({"conditions": [{"type": "Ready", "status": "False",
            "reason": "SecretNotFound", "message": "no Secret aws",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let (view, depths) = view(&blocked, None);
        assert_eq!((view.status.as_str(), view.replicas), ("SecretNotFound", 0));
        assert!(depths.is_none());
        assert_eq!(super::view(&pipeline(json!({})), None).0.status, "Pending");
    }
}
