//! `EventPipeline.spec.scaling`: how many workers run, from queue depth or stream lag,
//! down to none while a source is idle.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, defaults};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct Scaling {
    /// 0: no worker runs while the sources are idle (see `cooldown` and `activationDepth`).
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    #[serde(default = "defaults::max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Queue messages per worker replica the HPA aims for (SQS sources).
    #[serde(default = "defaults::target_depth")]
    #[schemars(range(min = 1))]
    pub target_depth_per_replica: i64,
    /// Stream lag the HPA aims for (DynamoDB Streams sources).
    #[serde(default = "defaults::target_lag")]
    #[schemars(range(min = 1))]
    pub target_lag_seconds: i64,
    /// Passed to the HorizontalPodAutoscaler (or KEDA's) as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    /// With `minReplicas: 0`: how long the sources must stay idle (no visible, in-flight
    /// or delayed message; no stream record past a shard's checkpoint) before the
    /// workers go to zero.
    #[serde(default = "defaults::cooldown")]
    pub cooldown: Duration,
    /// How often queue depth and stream lag are read: the most a wake-up from zero waits
    /// (plus a pod's start) and the age of the depth the HPA reads.
    #[serde(default = "defaults::polling_interval")]
    pub polling_interval: Duration,
    /// With `minReplicas: 0`: the backlog above which idle workers wake (0: the first
    /// message wakes them); a stream counts its shards with records waiting.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub activation_depth: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<ScalingEngine>,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            min_replicas: defaults::one(),
            max_replicas: defaults::max_replicas(),
            target_depth_per_replica: defaults::target_depth(),
            target_lag_seconds: defaults::target_lag(),
            behavior: None,
            cooldown: defaults::cooldown(),
            polling_interval: defaults::polling_interval(),
            activation_depth: 0,
            engine: None,
        }
    }
}

/// What scales the workers: `hpa`, a HorizontalPodAutoscaler on the metrics the
/// operator serves (the operator itself scaling to and from zero), or `keda`, a KEDA
/// ScaledObject (KEDA installed). Absent: the operator's `--scaling-engine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScalingEngine {
    #[default]
    Hpa,
    Keda,
}
