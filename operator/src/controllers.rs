//! The three controllers, per watched namespace (or once for the whole cluster), and
//! what makes them reconcile again: owned objects, the bindings and policies a
//! pipeline names, the bindings that name a policy. Secrets are not watched (the
//! operator may only read them by name): a pipeline blocked on one retries instead.

use std::sync::Arc;

use eventpipe_crds::{DeadLetterPolicy, EventPipeline, QueueBinding};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};

use crate::context::Context;
use crate::scope::{Scope, Stores, api};
use crate::{binding, pipeline, policy};

/// Runs every controller of every watched namespace until they stop.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    scope: &Scope,
    pipelines: Stores<EventPipeline>,
) {
    let all = scope.namespaces().into_iter().map(|ns| {
        let (client, ctx, pipelines) = (client.clone(), ctx.clone(), pipelines.clone());
        async move {
            let ns = ns.as_deref();
            tokio::join!(
                pipeline_controller(&client, ns, ctx.clone(), pipelines),
                binding_controller(&client, ns, ctx.clone()),
                policy_controller(&client, ns, ctx),
            );
        }
    });
    futures::future::join_all(all).await;
}

async fn binding_controller(client: &Client, ns: Option<&str>, ctx: Arc<Context>) {
    Controller::new(api::<QueueBinding>(client, ns), Default::default())
        .shutdown_on_signal()
        .run(binding::reconcile, binding::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// EventPipelines, reconciled again when what they own or name changes.
async fn pipeline_controller(
    client: &Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    store: Stores<EventPipeline>,
) {
    let wc = watcher::Config::default();
    let owned = watcher::Config::default().labels(crate::render::OWNED_SELECTOR);
    let (s1, s2) = (store.clone(), store);
    Controller::new(api::<EventPipeline>(client, ns), wc.clone())
        .owns(api::<ConfigMap>(client, ns), owned.clone())
        .owns(api::<Deployment>(client, ns), owned.clone())
        .owns(api::<Service>(client, ns), owned.clone())
        .owns(api::<HorizontalPodAutoscaler>(client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(client, ns), owned)
        .watches(api::<QueueBinding>(client, ns), wc.clone(), move |b| {
            let name = b.name_any();
            dependents(&s1, b.namespace(), |p| {
                p.binding_names().contains(name.as_str())
            })
        })
        // Cheap and always right: a policy change touches the pipelines of its namespace.
        .watches(api::<DeadLetterPolicy>(client, ns), wc, move |d| {
            dependents(&s2, d.namespace(), |_| true)
        })
        .shutdown_on_signal()
        .run(pipeline::reconcile, pipeline::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// DeadLetterPolicies, reconciled again when a QueueBinding that names one changes.
async fn policy_controller(client: &Client, ns: Option<&str>, ctx: Arc<Context>) {
    let wc = watcher::Config::default();
    Controller::new(api::<DeadLetterPolicy>(client, ns), wc.clone())
        .watches(api::<QueueBinding>(client, ns), wc, |b| {
            let ns = b.namespace().unwrap_or_default();
            (b.spec.dead_letter_policy_ref.iter())
                .map(|r| ObjectRef::new(&r.name).within(&ns))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(policy::reconcile, policy::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// Pipelines in `ns` that `matches` says depend on an object.
fn dependents(
    store: &Stores<EventPipeline>,
    ns: Option<String>,
    matches: impl Fn(&EventPipeline) -> bool,
) -> Vec<ObjectRef<EventPipeline>> {
    (store.state().iter())
        .filter(|p| p.namespace() == ns && matches(p))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}
