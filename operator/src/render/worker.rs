//! The workers: their Deployment (with the user's container processor as a sidecar),
//! which drains in-flight deliveries before it is killed, and the
//! HorizontalPodAutoscaler on queue depth or stream lag.

use std::collections::{BTreeMap, BTreeSet};

use eventpipe_crds::{ContainerProcessor, EventPipeline, Pipeline};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{
    CONFIG_HASH, PIPELINE_LABEL, QUEUE_DEPTH_METRIC, STREAM_LAG_METRIC, Settings, base_args,
    config_mount, container, credential_secrets, from, labels, meta, pod_security, secret_volumes,
    selector, worker_name, workload_env,
};

/// The Secrets, with their keys, the workers read for the processor (`headersFrom`, the
/// bearer token): mounted, so their values appear in no ConfigMap or pod spec.
pub fn processor_secrets(p: &EventPipeline) -> BTreeMap<String, BTreeSet<String>> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in p.spec.processor.http.iter().flat_map(|h| h.secret_refs()) {
        wanted
            .entry(r.name.clone())
            .or_default()
            .insert(r.key.clone());
    }
    wanted
}

/// The user's sidecar: what the `restricted` Pod Security Standard asks of a container
/// (the root filesystem stays writable, as many images expect), each field replaced
/// by the one the user gives in `securityContext`.
fn sidecar_security(c: &ContainerProcessor) -> Value {
    let mut context = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if let Some(Value::Object(given)) = c.security_context.as_ref().map(|s| json!(s)) {
        for (field, value) in given {
            context[field] = value;
        }
    }
    context
}

/// The longest a delivery may take: the pipeline's delivery timeout, or its processor's.
pub fn longest_delivery_seconds(p: &EventPipeline) -> u64 {
    let s = &p.spec;
    let processor = [
        s.processor.http.as_ref().map(|h| &h.timeout),
        s.processor.container.as_ref().map(|c| &c.timeout),
    ];
    processor
        .into_iter()
        .flatten()
        .map(|d| d.as_std().as_secs())
        .chain([s.delivery.timeout.as_std().as_secs()])
        .max()
        .unwrap_or(30)
}

pub(super) fn deployment(pipeline: &Pipeline, settings: &Settings, hash: &str) -> Deployment {
    let p = &pipeline.pipeline;
    let mut secrets = credential_secrets(pipeline);
    secrets.extend(processor_secrets(p).into_keys());
    let (mut volumes, mut mounts) = secret_volumes(&secrets);
    let (v, m) = config_mount(p);
    volumes.push(v);
    mounts.push(m);
    // Drain in-flight deliveries on shutdown before Kubernetes kills the pod.
    let grace = longest_delivery_seconds(p) + 5;
    let mut args = base_args();
    args.push(format!("--grace-period={grace}s"));
    let mut containers = vec![container(
        "worker",
        &settings.worker_image,
        args,
        settings,
        mounts,
        workload_env(p, settings),
    )];
    if let Some(c) = &p.spec.processor.container {
        let mut sidecar = json!({
            "name": "processor",
            "image": c.image,
            "ports": [{"name": "processor", "containerPort": c.port}],
            "env": c.env,
            "securityContext": sidecar_security(c),
        });
        if let Some(r) = &c.resources {
            sidecar["resources"] = json!(r);
        }
        containers.push(sidecar);
    }
    from(json!({
        "metadata": meta(p, &worker_name(p), "worker"),
        "spec": {
            "selector": {"matchLabels": selector(p, "worker")},
            "template": {
                "metadata": {"labels": labels(p, "worker"), "annotations": {CONFIG_HASH: hash}},
                "spec": {
                    "containers": containers,
                    "volumes": volumes,
                    "securityContext": pod_security(),
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": grace + 10,
                },
            },
        },
    }))
}

pub(super) fn autoscaler(pipeline: &Pipeline) -> HorizontalPodAutoscaler {
    let p = &pipeline.pipeline;
    let s = &p.spec.scaling;
    let kinds: Vec<bool> = p
        .spec
        .sources
        .iter()
        .map(|src| pipeline.binding(&src.queue_binding_ref).spec.sqs.is_some())
        .collect();
    let select = json!({"matchLabels": {PIPELINE_LABEL: p.name_any()}});
    let mut metrics = vec![];
    if kinds.contains(&true) {
        metrics.push(json!({"type": "External", "external": {
            "metric": {"name": QUEUE_DEPTH_METRIC, "selector": select},
            "target": {"type": "AverageValue", "averageValue": s.target_depth_per_replica.to_string()},
        }}));
    }
    if kinds.contains(&false) {
        metrics.push(json!({"type": "External", "external": {
            "metric": {"name": STREAM_LAG_METRIC, "selector": select},
            "target": {"type": "Value", "value": s.target_lag_seconds.to_string()},
        }}));
    }
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker_name(p)},
        // HPAs scale to zero only behind an alpha feature gate.
        "minReplicas": s.min_replicas.max(1),
        "maxReplicas": s.max_replicas,
        "metrics": metrics,
    });
    if let Some(b) = &s.behavior {
        spec["behavior"] = json!(b);
    }
    from(json!({"metadata": meta(p, &worker_name(p), "worker"), "spec": spec}))
}
