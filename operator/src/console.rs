//! The web console in a cluster (`--console-listen`): the page `eventpipe dev` serves,
//! from the same code. It shows the EventPipelines of the watched namespaces, as the
//! operator's watches hold them (no lists at steady state), with their status,
//! conditions and worker replicas, the queue depth and stream lag this replica's
//! metrics cache holds (else the status's queue depth) and the status's DLQ depth; and
//! the recent events of the ingress and worker pods it watches there, followed over
//! their feeds (`/events/stream` on their `metrics` port).
//!
//! It is reached through `kubectl port-forward`, so it answers only requests naming a
//! loopback host (see [`eventpipe_console::auth::host_allowed`]).
//!
//! Read-only unless given a token: then it also lists the dead letters of pipelines
//! whose SQS sources' QueueBindings report a DLQ, reads those queues' depths itself,
//! and redrives for requests bearing the token (see [`eventpipe_console::auth`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventpipe_console::dead_letters::DeadLetterQueue;
use eventpipe_console::remote::{Remotes, Source};
use eventpipe_console::{Condition, Console, Depths, Pipeline, Settings, follow};
use eventpipe_crds::{EventPipeline, QueueBinding};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::binding;
use crate::context::Context;
use crate::external_metrics::{Cache, Values};
use crate::render::{OWNED_SELECTOR, PIPELINE_LABEL};
use crate::scope::{Scope, Stores};

/// How often what the watches hold is shown again (and depths read).
const EVERY: Duration = Duration::from_secs(5);
/// The container port the ingress and workers serve their feed on.
const FEED_PORT: &str = "metrics";

/// What the console shows, as watches keep it.
#[derive(Clone)]
pub struct Watched {
    pipelines: Stores<EventPipeline>,
    bindings: Stores<QueueBinding>,
    /// The ingress and worker pods: those the operator renders.
    pods: Stores<Pod>,
}

impl Watched {
    /// Watches of the pipelines, bindings and pods of `watch_namespaces` (empty: the
    /// whole cluster).
    pub fn watch(client: &Client, watch_namespaces: &[String]) -> Self {
        let scope = Scope::of(watch_namespaces);
        let pipelines = Stores::watch(client, &scope);
        Self::sharing(client, &scope, pipelines, Stores::watch(client, &scope))
    }

    /// Once each watch has listed its objects.
    async fn ready(&self) {
        self.pipelines.ready().await;
        self.bindings.ready().await;
        self.pods.ready().await;
    }

    /// With the pipelines and bindings the operator already watches.
    pub(crate) fn sharing(
        client: &Client,
        scope: &Scope,
        pipelines: Stores<EventPipeline>,
        bindings: Stores<QueueBinding>,
    ) -> Self {
        let owned = watcher::Config::default().labels(OWNED_SELECTOR);
        Self {
            pipelines,
            bindings,
            pods: Stores::watch_with(client, scope, owned),
        }
    }
}

/// Serves the console on `listener` until `stop`, for what `watched` holds, with
/// queue depths from `cache`; a `token` lets it redrive.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    watched: Watched,
    cache: Cache,
    token: Option<String>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let redrive = token.is_some();
    let settings = Settings {
        token,
        jaeger_url: None,
        port_forwarded: true,
    };
    let console = Console::new(vec![], BTreeMap::new(), settings);
    let discover = discover(console.clone(), ctx, watched, cache, redrive);
    tokio::select! {
        served = eventpipe_console::serve(listener, console, stop.clone().cancelled_owned()) => served,
        _ = discover => Ok(()),
    }
}

/// The redrive token in `path`, without surrounding whitespace; read once, at start.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("console token {}: {e}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "console token {} is empty",
        path.display()
    );
    Ok(token.to_string())
}

/// Keeps the console's pipelines, depths and followed feeds current; runs until dropped.
async fn discover(
    console: Console,
    ctx: Arc<Context>,
    watched: Watched,
    cache: Cache,
    redrive: bool,
) {
    let mut remotes = Remotes::new(console.clone());
    // Shown at once when the watches have listed, but not held up by one that cannot.
    let _ = tokio::time::timeout(EVERY, watched.ready()).await;
    loop {
        let pipelines = watched.pipelines.state();
        if redrive {
            let bindings = watched.bindings.state();
            console.set_queues(dead_letter_queues(&ctx, &pipelines, &bindings).await);
        }
        show(&console, &pipelines, &cache).await;
        remotes.sync(&feeds(&watched.pods.state()));
        tokio::time::sleep(EVERY).await;
    }
}

/// Shows `pipelines`. The depths of those with dead-letter queues are read from SQS,
/// so that a redrive shows at once; the others' come from the cache and status, as
/// does every stream lag.
async fn show(console: &Console, pipelines: &[Arc<EventPipeline>], cache: &Cache) {
    let with_queues = console.with_queues();
    let mut views = vec![];
    for p in pipelines {
        let cached = cache.get(&p.namespace().unwrap_or_default(), &p.name_any());
        let (view, depths) = view(p, cached);
        if with_queues.contains(&view.name) {
            let read = follow::read(console, &view.name).await;
            let stream_lag_seconds = depths.and_then(|d| d.stream_lag_seconds);
            console.set_depths(
                &view.name,
                Depths {
                    stream_lag_seconds,
                    ..read
                },
            );
        } else if let Some(depths) = depths {
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
    let lag = cached.and_then(|v| v.stream_lag_seconds);
    let known = queue.is_some() || status.dlq_depth.is_some() || lag.is_some();
    let depths = known.then(|| Depths {
        queue: queue.unwrap_or_default(),
        dead_letters: status.dlq_depth.unwrap_or_default(),
        stream_lag_seconds: lag,
    });
    let pipeline = Pipeline {
        name: qualified(&p.namespace().unwrap_or_default(), &p.name_any()),
        status: summary,
        conditions,
        replicas: u32::try_from(status.replicas.unwrap_or_default()).unwrap_or_default(),
    };
    (pipeline, depths)
}

/// Per pipeline, the dead-letter queues of its SQS sources (see
/// [`dead_letter_sources`]) whose SQS client can be built.
async fn dead_letter_queues(
    ctx: &Context,
    pipelines: &[Arc<EventPipeline>],
    bindings: &[Arc<QueueBinding>],
) -> BTreeMap<String, Vec<DeadLetterQueue>> {
    let mut out = BTreeMap::new();
    for p in pipelines {
        let ns = p.namespace().unwrap_or_default();
        let mut queues = vec![];
        for (b, source_url, url) in dead_letter_sources(p, bindings) {
            match binding::sqs_client(b, ctx, &ns).await {
                Some(sqs) => queues.push(DeadLetterQueue::new(b.name_any(), sqs, url, source_url)),
                None => tracing::debug!(binding = b.name_any(), "console: no SQS client"),
            }
        }
        if !queues.is_empty() {
            out.insert(qualified(&ns, &p.name_any()), queues);
        }
    }
    out
}

/// The QueueBindings of `p`'s sources, in its namespace, that report a queue and its
/// dead-letter queue: each with (source queue URL, DLQ URL).
pub fn dead_letter_sources<'a>(
    p: &EventPipeline,
    bindings: &'a [Arc<QueueBinding>],
) -> Vec<(&'a QueueBinding, String, String)> {
    let ns = p.namespace();
    let named =
        |name: &str| (bindings.iter()).find(|b| b.namespace() == ns && b.name_any() == name);
    (p.spec.sources.iter())
        .filter_map(|s| {
            let b = named(&s.queue_binding_ref.name)?;
            let status = b.status.as_ref()?;
            Some((&**b, status.queue_url.clone()?, status.dlq_url.clone()?))
        })
        .collect()
}

fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The feeds of `pods`, by pod uid and container restarts (a restarted container's
/// feed starts again from its first record): those of running ingress and worker pods
/// with an IP and a `metrics` port.
pub fn feeds(pods: &[Arc<Pod>]) -> BTreeMap<String, Source> {
    pods.iter().filter_map(|p| feed(p)).collect()
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
        ]
        .map(Arc::new);
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
        assert!(feeds(&[Arc::new(unlabelled), Arc::new(portless)]).is_empty());
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
        assert_eq!(depths.stream_lag_seconds, None, "no stream source measured");
        let stream = Values {
            stream_lag_seconds: Some(12),
            ..Default::default()
        };
        let lag = super::view(&pipeline(json!({})), Some(stream)).1;
        assert_eq!(
            lag.unwrap().stream_lag_seconds,
            Some(12),
            "a stream's lag alone"
        );
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

    fn binding(name: &str, ns: &str, status: serde_json::Value) -> QueueBinding {
        serde_json::from_value(json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"sqs": {"queueName": name}}, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn dead_letters_come_from_the_sources_bindings_that_report_a_dlq() {
        let mut p = pipeline(json!({}));
        p.spec.sources = serde_json::from_value(json!([
            {"queueBindingRef": {"name": "a"}},
            {"queueBindingRef": {"name": "b"}},
            {"queueBindingRef": {"name": "c"}},
        ]))
        .unwrap();
        let urls = json!({"queueUrl": "http://q/a", "dlqUrl": "http://q/a-dlq"});
        let bindings = [
            binding("a", "shop", urls.clone()),
            binding("b", "shop", json!({"queueUrl": "http://q/b"})),
            binding("c", "billing", urls),
        ]
        .map(Arc::new);
        let found: Vec<_> = (dead_letter_sources(&p, &bindings).into_iter())
            .map(|(b, source, dlq)| (b.name_any(), source, dlq))
            .collect();
        let a = (
            "a".to_string(),
            "http://q/a".to_string(),
            "http://q/a-dlq".to_string(),
        );
        assert_eq!(found, [a], "b has no DLQ, c is in another namespace");
    }

    #[test]
    fn the_token_is_read_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("console-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "s3cret");
        std::fs::write(&file, " \n").unwrap();
        assert!(read_token(&file).unwrap_err().to_string().contains("empty"));
        assert!(read_token(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
