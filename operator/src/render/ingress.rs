//! The ingress: its Deployment, which rolls and stops without losing a webhook, and
//! its Service.
//!
//! On SIGTERM the ingress itself reports not ready and keeps serving for
//! `--drain-delay`, while endpoints and load balancers stop sending it connections;
//! then it finishes what is in flight and exits. That delay lives in the process
//! rather than in a `preStop` hook: the image has no shell to run `sleep`, the
//! `sleep` hook action needs Kubernetes 1.30 or later, and a hook would only add to the
//! wait. `terminationGracePeriodSeconds` covers the whole shutdown.

use std::collections::{BTreeMap, BTreeSet};

use eventpipe_crds::{EventPipeline, IngressTls, Pipeline, PushProcessor};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{
    CONFIG_HASH, SECRETS_DIR, Settings, base_args, config_mount, container, credential_secrets,
    from, ingress_name, labels, meta, pod_security, push_service_name, secret_volumes, selector,
    workload_env,
};

/// How long a stopping ingress keeps serving, not ready (`--drain-delay`): kube-proxy
/// and most load balancers stop sending new connections to a terminating pod within it.
const DRAIN_DELAY_SECONDS: u64 = 5;
/// The ingress's own limits, passed explicitly: the grace period is computed from them.
const HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
const REQUEST_TIMEOUT_SECONDS: u64 = 30;
const PUBLISH_TIMEOUT_SECONDS: u64 = 5;

/// SIGTERM to exit at worst: the drain delay; then a connection accepted at its very
/// end taking the longest allowed for its head and then its request; then the
/// publishers' last calls (bounded by the publish timeout); and a margin. A pod
/// normally exits soon after the drain delay.
fn grace_seconds() -> u64 {
    DRAIN_DELAY_SECONDS
        + HEADER_READ_TIMEOUT_SECONDS
        + REQUEST_TIMEOUT_SECONDS
        + PUBLISH_TIMEOUT_SECONDS
        + 5
}

fn shutdown_args() -> Vec<String> {
    vec![
        format!("--drain-delay={DRAIN_DELAY_SECONDS}s"),
        format!("--header-read-timeout={HEADER_READ_TIMEOUT_SECONDS}s"),
        format!("--request-timeout={REQUEST_TIMEOUT_SECONDS}s"),
        format!("--publish-timeout={PUBLISH_TIMEOUT_SECONDS}s"),
    ]
}

/// The Secrets the ingress reads, with the keys it needs: webhook signing keys and
/// its TLS certificate.
pub fn ingress_secrets(p: &EventPipeline) -> BTreeMap<String, BTreeSet<String>> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some(ingress) = &p.spec.ingress else {
        return wanted;
    };
    // The current secret and, while a rotation lasts, the previous one.
    for r in ingress
        .webhooks
        .iter()
        .flat_map(|w| w.signature.secret_refs())
    {
        wanted
            .entry(r.name.clone())
            .or_default()
            .insert(r.key.clone());
    }
    if let Some(tls) = &ingress.tls {
        let keys = wanted.entry(tls.secret_ref.name.clone()).or_default();
        keys.extend(IngressTls::KEYS.map(String::from));
    }
    wanted
}

/// Where the ingress finds its certificate and key, when it serves HTTPS.
fn tls_args(p: &EventPipeline) -> Vec<String> {
    let tls = p.spec.ingress.as_ref().and_then(|i| i.tls.as_ref());
    let Some(tls) = tls else {
        return vec![];
    };
    let [cert, key] =
        IngressTls::KEYS.map(|k| format!("{SECRETS_DIR}/{}/{k}", tls.secret_ref.name));
    vec![format!("--tls-cert={cert}"), format!("--tls-key={key}")]
}

/// Whether the ingress serves HTTPS.
pub fn serves_tls(p: &EventPipeline) -> bool {
    p.spec.ingress.as_ref().is_some_and(|i| i.tls.is_some())
}

pub(super) fn deployment(
    pipeline: &Pipeline,
    settings: &Settings,
    replicas: i32,
    hash: &str,
) -> Deployment {
    let p = &pipeline.pipeline;
    let mut secrets: BTreeSet<String> = ingress_secrets(p).into_keys().collect();
    secrets.extend(credential_secrets(pipeline));
    let (mut volumes, mut mounts) = secret_volumes(&secrets);
    let (v, m) = config_mount(p);
    volumes.push(v);
    mounts.push(m);
    let mut args = base_args();
    args.push("--listen=0.0.0.0:8080".into());
    args.extend(tls_args(p));
    args.extend(shutdown_args());
    let env = workload_env(p, settings);
    let mut c = container(
        "ingress",
        &settings.ingress_image,
        args,
        settings,
        mounts,
        env,
    );
    c["ports"]
        .as_array_mut()
        .expect("container() always lists the metrics port")
        .push(json!({"name": "http", "containerPort": 8080}));
    from(json!({
        "metadata": meta(p, &ingress_name(p), "ingress"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(p, "ingress")},
            // A new pod is ready before an old one stops serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(p, "ingress"), "annotations": {CONFIG_HASH: hash}},
                "spec": {
                    "containers": [c],
                    "volumes": volumes,
                    "securityContext": pod_security(),
                    // Workloads never call the Kubernetes API: no token to steal.
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": grace_seconds(),
                },
            },
        },
    }))
}

pub(super) fn service(p: &EventPipeline) -> Service {
    from(json!({
        "metadata": meta(p, &ingress_name(p), "ingress"),
        "spec": {
            "selector": selector(p, "ingress"),
            "ports": [
                match serves_tls(p) {
                    true => json!({"name": "https", "port": 443, "targetPort": "http"}),
                    false => json!({"name": "http", "port": 80, "targetPort": "http"}),
                },
                {"name": "metrics", "port": 9090, "targetPort": "metrics"},
            ],
        },
    }))
}

/// With subscriptions, the headless Service whose DNS name resolves to every
/// ingress replica: `push` processors deliver to each (on the ops port), where a
/// Service with a cluster IP would pick one.
pub(super) fn push_service(p: &EventPipeline) -> Option<Service> {
    let ingress = p.spec.ingress.as_ref()?;
    if ingress.subscriptions.is_empty() {
        return None;
    }
    Some(from(json!({
        "metadata": meta(p, &push_service_name(p), "ingress"),
        "spec": {
            "clusterIP": "None",
            "selector": selector(p, "ingress"),
            "ports": [{"name": "push", "port": PushProcessor::PORT, "targetPort": "metrics"}],
        },
    })))
}
