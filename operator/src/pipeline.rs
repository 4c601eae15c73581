//! The EventPipeline reconciler: resolve references, check Secrets, apply the rendered
//! workloads server-side (owned by the pipeline), and report status and events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eventpipe_crds::{
    DeadLetterPolicy, EventPipeline, EventPipelineStatus, Pipeline, QueueBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::conditions::{self, Observed};
use crate::context::{Context, Error, MANAGER, Problem};
use crate::pod_trouble::{self, Trouble};
use crate::render::{self, Workloads};

pub async fn reconcile(p: Arc<EventPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measured = ctx.metrics.count_and_measure("EventPipeline");
    reconcile_inner(&p, &ctx).await
}

/// What blocks the pipeline is reported on it; other errors are retried.
async fn reconcile_inner(p: &EventPipeline, ctx: &Context) -> Result<Action, Error> {
    match bring_in_line(p, ctx).await {
        Err(Error::Blocked(problem)) => report_problem(ctx, p, problem).await,
        done => done,
    }
}

/// Renders and applies the pipeline's workloads and writes its status.
async fn bring_in_line(p: &EventPipeline, ctx: &Context) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    let resolved = resolve(ctx, p, &ns).await?;
    check_secrets(ctx, &resolved, &ns).await?;
    let workloads = render::render(&resolved, &ctx.settings);
    let applied = apply_all(ctx, p, &ns, &workloads).await?;
    let observed = observe(&resolved, &applied);
    write_status(ctx, p, &ns, status(p, &resolved, &applied, &observed)).await?;
    if !reconciled(p) {
        let what = if workloads.ingress.is_some() {
            "ConfigMap, ingress, workers and autoscaler"
        } else {
            "ConfigMap, workers and autoscaler"
        };
        ctx.event(
            p,
            false,
            "Applied",
            format!(
                "applied {what} for generation {}",
                p.metadata.generation.unwrap_or_default()
            ),
        )
        .await;
    }
    // Every input is watched (the pipeline, its bindings and policies, Secrets, the
    // objects it owns), so nothing needs a timer: an idle pipeline costs no requests.
    Ok(Action::await_change())
}

/// Whether the pipeline's current spec was reconciled already.
fn reconciled(p: &EventPipeline) -> bool {
    p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
}

/// The referenced QueueBindings and DeadLetterPolicies, or what is missing.
async fn resolve(ctx: &Context, p: &EventPipeline, ns: &str) -> Result<Pipeline, Error> {
    let bindings_api: Api<QueueBinding> = Api::namespaced(ctx.client.clone(), ns);
    let policies_api: Api<DeadLetterPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let mut bindings = BTreeMap::new();
    for name in p.binding_names() {
        match bindings_api.get_opt(name).await? {
            Some(b) => bindings.insert(name.to_string(), b),
            None => {
                let message = format!("QueueBinding {name:?} not found in namespace {ns}");
                return Err(Error::Blocked(Problem {
                    reason: "QueueBindingNotFound",
                    message,
                }));
            }
        };
    }
    let mut policies = BTreeMap::new();
    for b in bindings.values() {
        let Some(r) = &b.spec.dead_letter_policy_ref else {
            continue;
        };
        match policies_api.get_opt(&r.name).await? {
            Some(d) => policies.insert(r.name.clone(), d),
            None => {
                let message = format!(
                    "DeadLetterPolicy {:?} (of QueueBinding {:?}) not found in namespace {ns}",
                    r.name,
                    b.name_any()
                );
                return Err(Error::Blocked(Problem {
                    reason: "DeadLetterPolicyNotFound",
                    message,
                }));
            }
        };
    }
    Ok(Pipeline {
        pipeline: p.clone(),
        bindings,
        policies,
    })
}

/// Secrets the workloads mount must exist, with the keys they read, or the pods would
/// never start; nothing is applied until they do. Kubernetes cannot name a Secret's
/// keys without its values, so a Secret with keys to check is read by name and its
/// values dropped at once; one whose keys are the workload's business (the workloads'
/// own credentials) is looked up as metadata only. Bindings' credentials, which the
/// operator itself uses, come from the credentials cache.
async fn check_secrets(ctx: &Context, pipeline: &Pipeline, ns: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut keyed = render::ingress_secrets(&pipeline.pipeline);
    for (name, keys) in render::processor_secrets(&pipeline.pipeline) {
        keyed.entry(name).or_default().extend(keys);
    }
    for (name, keys) in keyed {
        let present = secret_keys_of(&api, &name, ns).await?;
        if let Some(key) = keys.iter().find(|k| !present.contains(*k)) {
            return Err(Error::Blocked(Problem {
                reason: "SecretKeyNotFound",
                message: format!("Secret {name:?} has no key {key:?}"),
            }));
        }
    }
    if let Some(name) = &ctx.settings.credentials_secret
        && api.get_metadata_opt(name).await?.is_none()
    {
        return Err(not_found(name, ns));
    }
    for name in render::credential_secrets(pipeline) {
        ctx.credentials.get(&ctx.client, ns, &name).await?;
    }
    Ok(())
}

/// The keys Secret `name` holds (its values are not kept).
async fn secret_keys_of(
    api: &Api<Secret>,
    name: &str,
    ns: &str,
) -> Result<BTreeSet<String>, Error> {
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| not_found(name, ns))?;
    let data = secret.data.into_iter().flat_map(|d| d.into_keys());
    let string_data = secret.string_data.into_iter().flat_map(|d| d.into_keys());
    Ok(data.chain(string_data).collect())
}

fn not_found(name: &str, ns: &str) -> Error {
    Error::Blocked(Problem {
        reason: "SecretNotFound",
        message: format!("Secret {name:?} not found in namespace {ns}"),
    })
}

/// What the apply calls returned, for status.
struct Applied {
    ingress: Option<Deployment>,
    worker: Deployment,
    /// What keeps the ingress's and the workers' pods from running, when known.
    ingress_trouble: Option<Trouble>,
    worker_trouble: Option<Trouble>,
    scaling_engine: eventpipe_crds::ScalingEngine,
}

pub(crate) async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let mut obj = obj.clone();
    obj.meta_mut().managed_fields = None;
    let params = PatchParams::apply(MANAGER).force();
    Ok(api
        .patch(&obj.name_any(), &params, &Patch::Apply(&obj))
        .await?)
}

pub(crate) async fn delete_if_present<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply_all(
    ctx: &Context,
    p: &EventPipeline,
    ns: &str,
    w: &Workloads,
) -> Result<Applied, Error> {
    apply::<ConfigMap>(ctx, ns, &w.config).await?;
    let ingress = match &w.ingress {
        Some((deployment, service)) => {
            let d = apply::<Deployment>(ctx, ns, deployment).await?;
            apply::<Service>(ctx, ns, service).await?;
            match &w.push {
                Some(push) => {
                    apply::<Service>(ctx, ns, push).await?;
                }
                // Subscriptions removed: their headless Service goes, once per spec.
                None if !reconciled(p) => {
                    delete_if_present::<Service>(ctx, ns, &render::push_service_name(p)).await?;
                }
                None => {}
            }
            Some(d)
        }
        // The ingress was removed from the spec: remove what it left, once per spec
        // (a generation already reconciled has nothing left to remove).
        None if !reconciled(p) => {
            delete_if_present::<Deployment>(ctx, ns, &render::ingress_name(p)).await?;
            delete_if_present::<Service>(ctx, ns, &render::ingress_name(p)).await?;
            delete_if_present::<Service>(ctx, ns, &render::push_service_name(p)).await?;
            delete_if_present::<PodDisruptionBudget>(ctx, ns, &render::ingress_name(p)).await?;
            None
        }
        None => None,
    };
    let worker = apply::<Deployment>(ctx, ns, &w.worker).await?;
    crate::scaling::apply_autoscaler(ctx, p, ns, &w.autoscaler, !reconciled(p)).await?;
    for budget in &w.budgets {
        apply::<PodDisruptionBudget>(ctx, ns, budget).await?;
    }
    // The pods are asked only for a Deployment that is unavailable: a healthy pipeline
    // costs no list.
    let ingress_trouble = match &ingress {
        Some(d) if !ingress_available(d) => pod_trouble::of(ctx, ns, d).await,
        _ => None,
    };
    let worker_trouble = match workers_available(&worker, p) {
        true => None,
        false => pod_trouble::of(ctx, ns, &worker).await,
    };
    Ok(Applied {
        ingress,
        worker,
        ingress_trouble,
        worker_trouble,
        scaling_engine: w.autoscaler.engine(),
    })
}

/// The ingress serves when every replica it wants is available.
fn ingress_available(d: &Deployment) -> bool {
    let (ready, want) = available(d);
    ready >= want.max(1)
}

/// Workers consume when one replica is available, or when the pipeline may scale to zero.
fn workers_available(d: &Deployment, p: &EventPipeline) -> bool {
    available(d).0 >= 1 || p.spec.scaling.min_replicas == 0
}

/// The reason and message of an unavailable Deployment's condition.
fn unavailable(what: String, trouble: &Option<Trouble>) -> (String, String) {
    match trouble {
        Some(t) => (t.reason.clone(), format!("{what}; {}", t.message)),
        None => ("DeploymentUnavailable".into(), what),
    }
}

fn available(d: &Deployment) -> (i32, i32) {
    let want = d.spec.replicas.unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    (ready, want)
}

/// The pipeline's conditions from what the cluster reports.
fn observe(pipeline: &Pipeline, applied: &Applied) -> Vec<Observed> {
    let mut observed = vec![];
    let mut degraded: Vec<(String, String)> = vec![];
    let ingress_ok = match &applied.ingress {
        Some(d) => {
            let (ready, want) = available(d);
            let ok = ingress_available(d);
            if !ok {
                let what = format!("ingress: {ready}/{want} replicas available");
                degraded.push(unavailable(what, &applied.ingress_trouble));
            }
            let message = format!("{ready}/{want} replicas available");
            observed.push(workload_ready("IngressReady", ok, message));
            ok
        }
        None => true,
    };
    let (ready, _) = available(&applied.worker);
    let workers_ok = workers_available(&applied.worker, &pipeline.pipeline);
    if !workers_ok {
        let what = "no worker replica available".to_string();
        degraded.push(unavailable(what, &applied.worker_trouble));
    }
    let message = format!("{ready} replicas available");
    observed.push(workload_ready("WorkersReady", workers_ok, message));
    observed.extend(crate::scaling::activity(
        &pipeline.pipeline,
        &applied.worker,
    ));
    degraded.extend(unready_bindings(pipeline));
    observed.extend(overall(ingress_ok && workers_ok, &degraded));
    observed
}

/// `IngressReady` or `WorkersReady`: whether the Deployment has what it needs available.
fn workload_ready(type_: &'static str, ok: bool, message: String) -> Observed {
    let reason = if ok {
        "Available"
    } else {
        "DeploymentUnavailable"
    };
    Observed::new(type_, ok, reason, message)
}

/// (reason, message) of each QueueBinding of the pipeline that reports not ready.
fn unready_bindings(pipeline: &Pipeline) -> impl Iterator<Item = (String, String)> + '_ {
    pipeline.bindings.iter().filter_map(|(name, b)| {
        let c = b
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?;
        Some((
            c.reason.clone(),
            format!("QueueBinding {name:?}: {}", c.message),
        ))
    })
}

/// `Ready` and `Degraded`, which name the first problem found.
fn overall(workloads_ok: bool, degraded: &[(String, String)]) -> [Observed; 2] {
    let ready = workloads_ok && degraded.is_empty();
    let (reason, message) = degraded
        .first()
        .cloned()
        .unwrap_or_else(|| ("Reconciled".into(), "all workloads available".into()));
    let ready_reason = if ready {
        "Reconciled".into()
    } else {
        reason.clone()
    };
    let (degraded_reason, degraded_message) = if degraded.is_empty() {
        ("AsExpected".into(), String::new())
    } else {
        (reason, message.clone())
    };
    [
        Observed::new("Ready", ready, ready_reason, message),
        Observed::new(
            "Degraded",
            !degraded.is_empty(),
            degraded_reason,
            degraded_message,
        ),
    ]
}

fn status(
    p: &EventPipeline,
    pipeline: &Pipeline,
    applied: &Applied,
    observed: &[Observed],
) -> EventPipelineStatus {
    let previous = p.status.clone().unwrap_or_default();
    let sum = |f: fn(&eventpipe_crds::QueueBindingStatus) -> Option<i64>| {
        let values: Vec<i64> = p
            .spec
            .sources
            .iter()
            .filter_map(|s| pipeline.bindings.get(&s.queue_binding_ref.name))
            .filter_map(|b| b.status.as_ref().and_then(f))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    EventPipelineStatus {
        observed_generation: p.metadata.generation,
        conditions: conditions::merge(&previous.conditions, observed, p.metadata.generation),
        webhook_url: webhook_url(p),
        replicas: applied
            .worker
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .or(Some(0)),
        queue_depth: sum(|s| s.depth),
        dlq_depth: sum(|s| s.dlq_depth),
        scaling_engine: Some(applied.scaling_engine),
    }
}

/// Where senders post: the ingress Service, and the first webhook's path.
pub fn webhook_url(p: &EventPipeline) -> Option<String> {
    let hook = p.spec.ingress.as_ref()?.webhooks.first()?;
    let scheme = if render::serves_tls(p) {
        "https"
    } else {
        "http"
    };
    Some(format!(
        "{scheme}://{}.{}.svc{}",
        render::ingress_name(p),
        p.namespace().unwrap_or_else(|| "default".into()),
        hook.path
    ))
}

async fn write_status(
    ctx: &Context,
    p: &EventPipeline,
    ns: &str,
    status: EventPipelineStatus,
) -> Result<(), Error> {
    if p.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<EventPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"status": status});
    api.patch_status(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Reports a problem in status and as a Warning event (when it is new), and retries soon.
async fn report_problem(
    ctx: &Context,
    p: &EventPipeline,
    problem: Problem,
) -> Result<Action, Error> {
    ctx.metrics.failed("EventPipeline", problem.reason);
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    let previous = p.status.clone().unwrap_or_default();
    let already = previous
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == problem.reason && c.message == problem.message);
    let observed = [
        Observed::new("Ready", false, problem.reason, problem.message.clone()),
        Observed::new("Degraded", true, problem.reason, problem.message.clone()),
    ];
    let status = EventPipelineStatus {
        observed_generation: p.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &observed, p.metadata.generation),
        webhook_url: webhook_url(p),
        ..previous
    };
    write_status(ctx, p, &ns, status).await?;
    if !already {
        ctx.event(p, true, problem.reason, problem.message).await;
    }
    Ok(Action::requeue(Duration::from_secs(15)))
}

pub fn error_policy(p: Arc<EventPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), %error, "reconcile failed");
    ctx.metrics.failed("EventPipeline", error.metric_label());
    Action::requeue(Duration::from_secs(10))
}
