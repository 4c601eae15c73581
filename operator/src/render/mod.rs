//! EventPipeline → workloads, free of I/O: the ConfigMap the ingress and worker read,
//! the ingress Deployment and Service ([`ingress`]), the worker Deployment (with the
//! user's container processor as a sidecar) and the HorizontalPodAutoscaler on queue
//! depth or stream lag ([`worker`]) or KEDA's ScaledObject ([`keda`]), and a
//! PodDisruptionBudget for each Deployment ([`disruption`]). What is shared lives here.

mod disruption;
mod ingress;
pub mod keda;
mod worker;

use std::collections::{BTreeMap, BTreeSet};

use eventpipe_crds::{EventPipeline, Pipeline, ScalingEngine};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use ingress::{ingress_secrets, serves_tls};
pub use worker::processor_secrets;

pub const PIPELINE_LABEL: &str = "eventpipe.dev/pipeline";
/// Selects every object the operator renders.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=eventpipe-operator";
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
    /// What scales the workers of pipelines that do not say (`scaling.engine`).
    pub scaling_engine: ScalingEngine,
}

/// What scales a pipeline's workers.
#[derive(Clone, Debug)]
pub enum Autoscaler {
    /// On the metrics the operator serves; the operator scales to and from zero.
    Hpa(HorizontalPodAutoscaler),
    Keda(keda::Keda),
}

/// Everything one pipeline is made of in the cluster.
#[derive(Clone, Debug)]
pub struct Workloads {
    pub config: ConfigMap,
    pub ingress: Option<(Deployment, Service)>,
    /// The headless Service of the ingress replicas, when clients subscribe there.
    pub push: Option<Service>,
    pub worker: Deployment,
    pub autoscaler: Autoscaler,
    /// The ingress's (when there is one) and the workers'.
    pub budgets: Vec<PodDisruptionBudget>,
}

impl Autoscaler {
    pub fn engine(&self) -> ScalingEngine {
        match self {
            Autoscaler::Hpa(_) => ScalingEngine::Hpa,
            Autoscaler::Keda(_) => ScalingEngine::Keda,
        }
    }
}

impl Workloads {
    /// The HorizontalPodAutoscaler, unless KEDA scales the workers.
    pub fn hpa(&self) -> Option<&HorizontalPodAutoscaler> {
        match &self.autoscaler {
            Autoscaler::Hpa(h) => Some(h),
            Autoscaler::Keda(_) => None,
        }
    }
}

/// The engine that scales `p`'s workers: its own choice, else the operator's.
pub fn engine(p: &EventPipeline, settings: &Settings) -> ScalingEngine {
    p.spec.scaling.engine.unwrap_or(settings.scaling_engine)
}

pub fn config_name(p: &EventPipeline) -> String {
    format!("{}-pipeline", p.name_any())
}
pub fn ingress_name(p: &EventPipeline) -> String {
    format!("{}-ingress", p.name_any())
}
/// The headless Service of the ingress replicas, for `push` processors.
pub fn push_service_name(p: &EventPipeline) -> String {
    eventpipe_crds::PushProcessor::service_name(&p.name_any())
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
        ingress: p.spec.ingress.as_ref().map(|i| {
            let deployment = ingress::deployment(pipeline, settings, i.replicas, &hash);
            (deployment, ingress::service(p))
        }),
        push: ingress::push_service(p),
        worker: worker::deployment(pipeline, settings, &hash),
        autoscaler: match engine(p, settings) {
            ScalingEngine::Hpa => Autoscaler::Hpa(worker::autoscaler(pipeline)),
            ScalingEngine::Keda => Autoscaler::Keda(keda::render(pipeline, settings)),
        },
        budgets: disruption::budgets(p),
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

/// The Secrets every component reads: AWS credentials of the bindings.
pub fn credential_secrets(pipeline: &Pipeline) -> BTreeSet<String> {
    pipeline
        .bindings
        .values()
        .filter_map(|b| b.spec.credentials.as_ref())
        .map(|c| c.secret_ref.name.clone())
        .collect()
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
