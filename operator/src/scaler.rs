//! Scaling to and from zero, on the elected leader: after each metrics refresh, every
//! pipeline with `minReplicas: 0` on the hpa engine is judged by
//! [`crate::scale_to_zero`] from its sources' backlog, and its worker Deployment set to
//! 0 or 1 through the `scale` subresource. The HPA keeps `spec.replicas` from 1 up;
//! the operator's own apply never sets it, so neither fights the other.

use std::collections::HashMap;
use std::sync::Arc;

use eventpipe_crds::{EventPipeline, ScalingEngine};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use crate::context::Context;
use crate::external_metrics::Cache;
use crate::render::{self, worker_name};
use crate::scale_to_zero::{Decision, Idleness, Policy};
use crate::scope::Stores;

/// The field manager of the replicas set here, apart from the operator's applies.
const SCALER: &str = "eventpipe-operator-scale-to-zero";

type Key = (String, String);

/// Whether the operator scales `p`'s workers to and from zero itself.
pub fn scales_to_zero(p: &EventPipeline, ctx: &Context) -> bool {
    p.spec.scaling.min_replicas == 0 && render::engine(p, &ctx.settings) == ScalingEngine::Hpa
}

/// Judges every pipeline after each refresh of `cache`, until the refreshes stop.
pub async fn run(
    ctx: Arc<Context>,
    pipelines: Stores<EventPipeline>,
    deployments: Stores<Deployment>,
    cache: Cache,
) {
    let mut refreshes = cache.refreshes();
    let mut scaler = Scaler::default();
    while refreshes.changed().await.is_ok() {
        let now = Instant::now().into_std();
        let (p, d) = (pipelines.state(), deployments.state());
        scaler.judge(&ctx, &p, &d, &cache, now).await;
    }
}

/// What the scaler remembers of each pipeline between refreshes.
#[derive(Default)]
pub struct Scaler {
    idle: HashMap<Key, Idleness>,
}

impl Scaler {
    /// Judges each pipeline that may go to zero by its backlog in `cache`, and scales
    /// its workers as decided.
    pub async fn judge(
        &mut self,
        ctx: &Context,
        pipelines: &[Arc<EventPipeline>],
        deployments: &[Arc<Deployment>],
        cache: &Cache,
        now: std::time::Instant,
    ) {
        wake_stranded(ctx, pipelines, deployments).await;
        let mine: Vec<_> = (pipelines.iter())
            .filter(|p| scales_to_zero(p, ctx))
            .collect();
        self.idle.retain(|k, _| mine.iter().any(|p| &key(p) == k));
        for p in mine {
            let Some(replicas) = replicas_of(deployments, p) else {
                continue;
            };
            let (ns, name) = key(p);
            let backlog = cache.get(&ns, &name).and_then(|v| v.backlog);
            let state = (self.idle.entry((ns, name))).or_insert_with(|| Idleness::new(now));
            let decision = state.observe(Policy::of(p), backlog, replicas, now);
            if decision != Decision::Hold && !carry_out(ctx, p, decision).await {
                state.failed();
            }
        }
    }
}

/// Workers left at 0 by a pipeline that may no longer go there (`minReplicas` raised,
/// still on the hpa engine): the HPA does nothing at 0, so they are set to 1 here.
async fn wake_stranded(
    ctx: &Context,
    pipelines: &[Arc<EventPipeline>],
    deployments: &[Arc<Deployment>],
) {
    let on_hpa = |p: &&Arc<EventPipeline>| render::engine(p, &ctx.settings) == ScalingEngine::Hpa;
    for p in pipelines.iter().filter(on_hpa) {
        if !scales_to_zero(p, ctx) && replicas_of(deployments, p) == Some(0) {
            let note = "minReplicas is above 0: workers scaled from 0 to 1".to_string();
            scale(ctx, p, 1, "Woke", note).await;
        }
    }
}

fn key(p: &EventPipeline) -> Key {
    (p.namespace().unwrap_or_default(), p.name_any())
}

/// The worker Deployment's replicas, once it exists.
fn replicas_of(deployments: &[Arc<Deployment>], p: &EventPipeline) -> Option<i32> {
    let (ns, name) = (p.namespace(), worker_name(p));
    let d = (deployments.iter()).find(|d| d.namespace() == ns && d.name_any() == name)?;
    Some(d.spec.replicas.unwrap_or(1))
}

/// Sets the workers to 0 or 1 as decided and says so on the pipeline; false when
/// refused.
async fn carry_out(ctx: &Context, p: &EventPipeline, decision: Decision) -> bool {
    match decision {
        Decision::ToZero => scale(ctx, p, 0, "ScaledToZero", idle_note(p)).await,
        _ => {
            let note = "messages waiting: workers scaled from 0 to 1".to_string();
            scale(ctx, p, 1, "Woke", note).await
        }
    }
}

/// Sets the workers' replicas through the `scale` subresource, with an event.
async fn scale(
    ctx: &Context,
    p: &EventPipeline,
    replicas: i32,
    reason: &str,
    note: String,
) -> bool {
    let ns = p.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams {
        field_manager: Some(SCALER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    match api.patch_scale(&worker_name(p), &params, &patch).await {
        Ok(_) => {
            tracing::info!(pipeline = %p.name_any(), %ns, replicas, "{note}");
            ctx.event(p, false, reason, note).await;
            true
        }
        Err(e) => {
            tracing::warn!(pipeline = %p.name_any(), %ns, error = %e, "workers not scaled");
            false
        }
    }
}

/// Why the workers are at zero, and what wakes them.
pub fn idle_note(p: &EventPipeline) -> String {
    let s = &p.spec.scaling;
    let wake = match s.activation_depth {
        0 => "the next message".to_string(),
        n => format!("more than {n} messages"),
    };
    format!(
        "sources idle for {}: workers at 0 until {wake}",
        s.cooldown.as_str()
    )
}
