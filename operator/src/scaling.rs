//! A pipeline's autoscaler as the reconciler applies it: the HorizontalPodAutoscaler,
//! or KEDA's ScaledObject and TriggerAuthentication; switching engines removes the
//! other's objects. And the `Active` condition of pipelines that may scale to zero.

use eventpipe_crds::EventPipeline;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};

use crate::conditions::Observed;
use crate::context::{Context, Error, MANAGER, Problem};
use crate::pipeline::{apply, delete_if_present};
use crate::render::{Autoscaler, keda, worker_name};
use crate::scaler::idle_note;

const KEDA_KINDS: [&str; 2] = ["ScaledObject", "TriggerAuthentication"];

/// Applies the pipeline's autoscaler and, on a new generation or a new engine (the
/// operator's default may change with a restart), removes what the other engine left:
/// two autoscalers would fight over the workers.
pub async fn apply_autoscaler(
    ctx: &Context,
    p: &EventPipeline,
    ns: &str,
    autoscaler: &Autoscaler,
    changed: bool,
) -> Result<(), Error> {
    let previous = p.status.as_ref().and_then(|s| s.scaling_engine);
    let clean = changed || previous != Some(autoscaler.engine());
    match autoscaler {
        Autoscaler::Hpa(hpa) => {
            apply::<HorizontalPodAutoscaler>(ctx, ns, hpa).await?;
            for kind in KEDA_KINDS.iter().filter(|_| clean) {
                delete_keda(ctx, ns, kind, &worker_name(p)).await?;
            }
        }
        Autoscaler::Keda(k) => {
            apply_keda(ctx, ns, &k.authentication).await?;
            apply_keda(ctx, ns, &k.scaled_object).await?;
            if clean {
                delete_if_present::<HorizontalPodAutoscaler>(ctx, ns, &worker_name(p)).await?;
            }
        }
    }
    Ok(())
}

fn keda_api(ctx: &Context, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), ns, &keda::resource(kind))
}

/// Server-side, like every workload; a cluster without KEDA's CRDs blocks the pipeline.
async fn apply_keda(ctx: &Context, ns: &str, obj: &DynamicObject) -> Result<(), Error> {
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    let applied = keda_api(ctx, ns, &kind)
        .patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await;
    match applied {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(Error::Blocked(Problem {
            reason: "KedaNotInstalled",
            message: format!(
                "scaling.engine is keda, but the cluster serves no {}/{} {kind}: install KEDA, or use engine hpa",
                keda::GROUP,
                keda::VERSION
            ),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Removes a KEDA object the pipeline no longer uses; none, or no KEDA, is fine.
async fn delete_keda(ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<(), Error> {
    match keda_api(ctx, ns, kind)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `Active` for pipelines with `minReplicas: 0`: false (`IdleAtZero`) while their
/// workers are at zero.
pub fn activity(p: &EventPipeline, worker: &Deployment) -> Option<Observed> {
    if p.spec.scaling.min_replicas != 0 {
        return None;
    }
    Some(match worker.spec.replicas {
        Some(0) => Observed::new("Active", false, "IdleAtZero", idle_note(p)),
        _ => Observed::new("Active", true, "Consuming", "workers running"),
    })
}
