//! Pushing events to clients: the subscriptions an ingress serves, and the `push`
//! processor that delivers a pipeline's events to them.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectRef;

/// Where clients subscribe at the ingress, over WebSocket or Server-Sent Events, to
/// the events a `push` processor delivers to this pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.path.startsWith('/')").message("path must start with /"))]
pub struct Subscription {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
    /// The webhook whose secret authenticates subscribers: its bearer token (scheme
    /// `bearer`), or a subscribe token from its `202` answer, which admits only
    /// that request's correlation id.
    pub webhook: String,
}

/// Deliver each event to the clients subscribed at a pipeline's ingress, on every
/// replica. An event no client waits for is acknowledged; an unreachable replica
/// is retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushProcessor {
    /// The pipeline whose ingress declares the subscriptions.
    pub pipeline_ref: ObjectRef,
}

impl PushProcessor {
    /// The port of the ingress's push endpoint: its ops port.
    pub const PORT: u16 = 9090;

    /// The headless Service that names every ingress replica of `pipeline`.
    pub fn service_name(pipeline: &str) -> String {
        format!("{pipeline}-ingress-push")
    }
}
