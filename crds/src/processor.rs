//! An EventPipeline's processor: what each event is delivered to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, ObjectRef, defaults};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.http) ? 1 : 0) + (has(self.container) ? 1 : 0) + (has(self.dynamodb) ? 1 : 0) + (has(self.sqs) ? 1 : 0) == 1").message("processor must name exactly one of http, container, dynamodb or sqs"))]
pub struct Processor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<DynamoDbProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsProcessor>,
}

/// POST each event as a binary-mode CloudEvent; 2xx is success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProcessor {
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    #[serde(default = "defaults::processor_timeout")]
    pub timeout: Duration,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The user's image, run as a sidecar of the worker and called over localhost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProcessor {
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default = "defaults::container_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default = "defaults::container_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    #[serde(default = "defaults::processor_timeout")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Write events into a table, idempotently (keyed by event id), or count them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDbProcessor {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub table_name: String,
    /// Create the table (key `id`, stream of new and old images) when missing.
    #[serde(default)]
    pub create: bool,
    /// Instead of putting the event, add one to a counter item keyed by parts of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// The counter item's key parts; its `id` is their values joined by `#`.
    #[schemars(length(min = 1, max = 8))]
    pub key: Vec<AggregateKey>,
    /// Attribute holding the count.
    #[serde(default = "defaults::counter")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub counter: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateKey {
    /// Attribute name of this part on the counter item.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Where the value is, in the CloudEvent (`/data/...`, `/time`).
    #[schemars(regex(pattern = r"^/"))]
    pub json_pointer: String,
    /// Keep only the calendar date (`YYYY-MM-DD`) of an RFC 3339 timestamp.
    #[serde(default)]
    pub date: bool,
}

/// Forward each event to another queue, keeping its trace context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqsProcessor {
    pub queue_binding_ref: ObjectRef,
}
