//! PodDisruptionBudgets: voluntary disruptions (node drains, cluster upgrades) evict
//! one pod of a Deployment at a time, its replacement started elsewhere first.
//!
//! `maxUnavailable: 1` rather than `minAvailable`: a budget of `minAvailable: 1` on a
//! one-replica ingress, or on workers scaled to their minimum, could never be met
//! during an eviction and would block a node drain for good. Pods that are not
//! healthy anyway (crash-looping, not ready) may always be evicted, so a broken pod
//! never holds a drain either.

use eventpipe_crds::EventPipeline;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use super::{from, ingress_name, meta, selector, worker_name};

/// The ingress's budget, when the pipeline has one, and the workers'.
pub(super) fn budgets(p: &EventPipeline) -> Vec<PodDisruptionBudget> {
    let ingress = p
        .spec
        .ingress
        .as_ref()
        .map(|_| (ingress_name(p), "ingress"));
    let worker = (worker_name(p), "worker");
    (ingress.into_iter().chain([worker]))
        .map(|(name, component)| budget(p, &name, component))
        .collect()
}

fn budget(p: &EventPipeline, name: &str, component: &str) -> PodDisruptionBudget {
    from(json!({
        "metadata": meta(p, name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(p, component)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }))
}
