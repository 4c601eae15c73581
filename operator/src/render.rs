//! EventPipeline → workloads, free of I/O: the ConfigMap the ingress and worker read,
//! the ingress Deployment and Service, the worker Deployment (with the user's
//! container processor as a sidecar) and the HorizontalPodAutoscaler on queue depth
//! or stream lag.

use std::collections::{BTreeMap, BTreeSet};

use eventpipe_crds::{ContainerProcessor, EventPipeline, IngressTls, Pipeline};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const PIPELINE_LABEL: &str = "eventpipe.dev/pipeline";
pub const CONFIG_HASH: &str = "eventpipe.dev/config-hash";
pub const QUEUE_DEPTH_METRIC: &str = "eventpipe_queue_depth";
pub const STREAM_LAG_METRIC: &str = "eventpipe_stream_lag_seconds";
const CONFIG_DIR: &str = "/etc/eventpipe/config";
const SECRETS_DIR: &str = "/etc/eventpipe/secrets";
const CONFIG_FILE: &str = "pipeline.yaml";

/// What the operator's own configuration adds to every workload.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub ingress_image: String,
    pub worker_image: String,
    /// Passed to ingress and worker containers (AWS region and endpoint, OTLP endpoint, log level).
    pub env: Vec<EnvVar>,
    /// A Secret with AWS credentials for the workloads, as environment variables.
    pub credentials_secret: Option<String>,
    /// `imagePullPolicy` of the ingress and worker containers (Kubernetes' default when
    /// unset: `Always` for `:latest`, which defeats images loaded into kind).
    pub image_pull_policy: Option<String>,
}

/// Everything one pipeline is made of in the cluster.
#[derive(Clone, Debug)]
pub struct Workloads {
    pub config: ConfigMap,
    pub ingress: Option<(Deployment, Service)>,
    pub worker: Deployment,
    pub autoscaler: HorizontalPodAutoscaler,
}

pub fn config_name(p: &EventPipeline) -> String {
    format!("{}-pipeline", p.name_any())
}
pub fn ingress_name(p: &EventPipeline) -> String {
    format!("{}-ingress", p.name_any())
}
pub fn worker_name(p: &EventPipeline) -> String {
    format!("{}-worker", p.name_any())
}

pub fn render(pipeline: &Pipeline, settings: &Settings) -> Workloads {
    let p = &pipeline.pipeline;
    let yaml = config_yaml(pipeline);
    let hash = hex::encode(&Sha256::digest(yaml.as_bytes())[..8]);
    Workloads {
        config: from(json!({
            "metadata": meta(p, &config_name(p), "config"),
            "data": { CONFIG_FILE: yaml },
        })),
        ingress: p
            .spec
            .ingress
            .as_ref()
            .map(|i| (ingress(pipeline, settings, i.replicas, &hash), service(p))),
        worker: worker(pipeline, settings, &hash),
        autoscaler: autoscaler(pipeline),
    }
}

/// The pipeline's documents as the binaries read them: names and specs only (all live
/// in one namespace), no cluster state.
fn config_yaml(pipeline: &Pipeline) -> String {
    let mut clean = pipeline.clone();
    clean.pipeline.metadata = bare(&pipeline.pipeline.metadata);
    clean.pipeline.status = None;
    for b in clean.bindings.values_mut() {
        b.metadata = bare(&b.metadata);
        b.status = None;
    }
    for d in clean.policies.values_mut() {
        d.metadata = bare(&d.metadata);
        d.status = None;
    }
    clean.to_yaml()
}

fn bare(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        ..Default::default()
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("rendered object matches its Kubernetes type")
}

fn labels(p: &EventPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "eventpipe".into()),
        ("app.kubernetes.io/instance".into(), p.name_any()),
        ("app.kubernetes.io/component".into(), component.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "eventpipe-operator".into(),
        ),
        (PIPELINE_LABEL.into(), p.name_any()),
    ])
}

fn selector(p: &EventPipeline, component: &str) -> Value {
    json!({ "app.kubernetes.io/component": component, PIPELINE_LABEL: p.name_any() })
}

pub fn owner(p: &EventPipeline) -> OwnerReference {
    p.controller_owner_ref(&())
        .expect("a stored pipeline has a name and uid")
}

fn meta(p: &EventPipeline, name: &str, component: &str) -> Value {
    json!({
        "name": name,
        "namespace": p.namespace(),
        "labels": labels(p, component),
        "ownerReferences": [owner(p)],
    })
}

/// Secrets a component mounts under the secrets directory, `<dir>/<name>/<key>`.
fn secret_volumes(names: &BTreeSet<String>) -> (Vec<Value>, Vec<Value>) {
    names
        .iter()
        .map(|s| {
            let volume = format!("secret-{s}");
            (
                json!({"name": volume, "secret": {"secretName": s}}),
                json!({"name": volume, "mountPath": format!("{SECRETS_DIR}/{s}"), "readOnly": true}),
            )
        })
        .unzip()
}

/// The Secrets the ingress reads, with the keys it needs: webhook signing keys and
/// its TLS certificate.
pub fn ingress_secrets(p: &EventPipeline) -> BTreeMap<String, BTreeSet<String>> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some(ingress) = &p.spec.ingress else {
        return wanted;
    };
    for w in &ingress.webhooks {
        let r = &w.signature.secret_ref;
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

/// The Secrets every component reads: AWS credentials of the bindings.
pub fn credential_secrets(pipeline: &Pipeline) -> BTreeSet<String> {
    pipeline
        .bindings
        .values()
        .filter_map(|b| b.spec.credentials.as_ref())
        .map(|c| c.secret_ref.name.clone())
        .collect()
}

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

/// The environment of the ingress and worker containers: the operator's settings, with
/// the pipeline's `tracing` (as the OpenTelemetry SDK's standard variables) in place of
/// the operator's own endpoint and sampler.
fn workload_env(p: &EventPipeline, settings: &Settings) -> Vec<EnvVar> {
    let mut own = vec![];
    if let Some(t) = &p.spec.tracing {
        if let Some(endpoint) = &t.otlp_endpoint {
            own.push(env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
        }
        own.push(env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
        own.push(env("OTEL_TRACES_SAMPLER_ARG", &t.sample_ratio.to_string()));
    }
    let overridden = |e: &EnvVar| own.iter().any(|o| o.name == e.name);
    let mut all: Vec<EnvVar> = settings
        .env
        .iter()
        .filter(|e| !overridden(e))
        .cloned()
        .collect();
    all.extend(own);
    all
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn container(
    name: &str,
    image: &str,
    args: Vec<String>,
    settings: &Settings,
    mounts: Vec<Value>,
    env: Vec<EnvVar>,
) -> Value {
    let env_from: Vec<Value> = settings
        .credentials_secret
        .iter()
        .map(|s| json!({"secretRef": {"name": s}}))
        .collect();
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "env": env,
        "envFrom": env_from,
        "ports": [{"name": "metrics", "containerPort": 9090}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

/// Meets the `restricted` Pod Security Standard with the containers' own contexts.
fn pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}})
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

fn config_mount(p: &EventPipeline) -> (Value, Value) {
    (
        json!({"name": "config", "configMap": {"name": config_name(p)}}),
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
    )
}

fn base_args() -> Vec<String> {
    vec![
        format!("--config={CONFIG_DIR}/{CONFIG_FILE}"),
        "--metrics-listen=0.0.0.0:9090".into(),
        format!("--secrets-dir={SECRETS_DIR}"),
    ]
}

fn ingress(pipeline: &Pipeline, settings: &Settings, replicas: i32, hash: &str) -> Deployment {
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
            "template": {
                "metadata": {"labels": labels(p, "ingress"), "annotations": {CONFIG_HASH: hash}},
                "spec": {
                    "containers": [c],
                    "volumes": volumes,
                    "securityContext": pod_security(),
                    // Workloads never call the Kubernetes API: no token to steal.
                    "automountServiceAccountToken": false,
                },
            },
        },
    }))
}

fn service(p: &EventPipeline) -> Service {
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

fn worker(pipeline: &Pipeline, settings: &Settings, hash: &str) -> Deployment {
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

fn autoscaler(pipeline: &Pipeline) -> HorizontalPodAutoscaler {
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
