//! `EventPipeline`: where events come from, what processes them, how workers scale.

// kube's `printcolumn(...)` repeats keys by design.
#![allow(clippy::duplicated_attributes)]

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use k8s_openapi::api::{
    autoscaling::v2::HorizontalPodAutoscalerBehavior,
    core::v1::{EnvVar, ResourceRequirements},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::{Duration, ObjectRef, SecretKeyRef, ValueSource};

#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "eventpipe.dev",
    version = "v1alpha1",
    kind = "EventPipeline",
    namespaced,
    status = "EventPipelineStatus",
    shortname = "ep",
    category = "eventpipe",
    doc = "Where events come from (webhooks, queues, streams), what processes them, and how its workers scale.",
    derive = "PartialEq",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Webhook", type_ = "string", json_path = ".status.webhookUrl"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Depth", type_ = "integer", json_path = ".status.queueDepth"),
    printcolumn(name = "DLQ", type_ = "integer", json_path = ".status.dlqDepth"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineSpec {
    /// Webhooks that turn HTTP requests into events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    /// Queues and streams the workers consume.
    #[schemars(length(min = 1, max = 16))]
    pub sources: Vec<Source>,
    /// An EventBridge-style pattern; events that do not match are acknowledged, never delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<EventPattern>,
    pub processor: Processor,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub scaling: Scaling,
    /// Events sent on after each delivery: the processor's reply, or an outcome event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Destinations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

impl EventPipeline {
    /// Every QueueBinding the pipeline names, with the field that names it.
    pub fn binding_refs(&self) -> Vec<(String, &ObjectRef)> {
        let p = self;
        let mut refs: Vec<(String, &ObjectRef)> = p
            .spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("spec.sources[{i}].queueBindingRef"),
                    &s.queue_binding_ref,
                )
            })
            .collect();
        if let Some(r) = p
            .spec
            .ingress
            .as_ref()
            .and_then(|i| i.publish_to.queue_binding_ref.as_ref())
        {
            refs.push(("spec.ingress.publishTo.queueBindingRef".into(), r));
        }
        if let Some(sqs) = &p.spec.processor.sqs {
            refs.push((
                "spec.processor.sqs.queueBindingRef".into(),
                &sqs.queue_binding_ref,
            ));
        }
        if let Some(d) = &p.spec.destinations {
            let outcomes = [("onSuccess", &d.on_success), ("onFailure", &d.on_failure)];
            for (field, target) in outcomes {
                if let Some(t) = target {
                    refs.push((
                        format!("spec.destinations.{field}.queueBindingRef"),
                        &t.queue_binding_ref,
                    ));
                }
            }
            if let Some(reply) = &d.reply {
                refs.push((
                    "spec.destinations.reply.queueBindingRef".into(),
                    &reply.queue_binding_ref,
                ));
            }
        }
        refs
    }

    /// The QueueBindings the pipeline names, once each.
    pub fn binding_names(&self) -> BTreeSet<&str> {
        self.binding_refs()
            .into_iter()
            .map(|(_, r)| r.name.as_str())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.webhooks.all(w, self.webhooks.filter(x, x.name == w.name).size() == 1)").message("webhook names must be unique"))]
#[x_kube(validation = Rule::new("self.webhooks.all(w, self.webhooks.filter(x, x.path == w.path).size() == 1)").message("webhook paths must be unique"))]
pub struct Ingress {
    #[schemars(length(min = 1, max = 32))]
    pub webhooks: Vec<Webhook>,
    /// Where accepted events are stored.
    pub publish_to: PublishTarget,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.path.startsWith('/')").message("path must start with /"))]
pub struct Webhook {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
    pub signature: Signature,
    /// CloudEvent `type`; `eventpipe.webhook.<name>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<ValueSource>,
    /// Correlation id; generated (and echoed back) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<ValueSource>,
    /// The sender's delivery id; it becomes the event id, so retries keep one id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication_id: Option<ValueSource>,
    /// FIFO message group; the correlation id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_group_id: Option<ValueSource>,
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub max_body_bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scheme != 'hmac-sha256' || has(self.header)").message("scheme hmac-sha256 needs header"))]
#[x_kube(validation = Rule::new("!has(self.timestamp) || self.scheme == 'hmac-sha256'").message("timestamp (a replay window) applies to scheme hmac-sha256 only"))]
pub struct Signature {
    pub scheme: SignatureScheme,
    pub secret_ref: SecretKeyRef,
    /// Header carrying the signature (hmac-sha256) or token (bearer: `Authorization` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Text before the signature in the header, e.g. `sha256=` or `v0=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    /// Sign `timestamp.body` and reject requests whose timestamp is outside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<ReplayWindow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SignatureScheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(rename = "github")]
    Github,
    /// A configurable HMAC-SHA256 header (Stripe, Slack and most webhook senders).
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// A static token, for first-party producers.
    #[serde(rename = "bearer")]
    Bearer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayWindow {
    /// Header with the Unix timestamp (seconds) the sender signed.
    #[schemars(length(min = 1, max = 256))]
    pub header: String,
    #[serde(default = "default_tolerance")]
    pub tolerance: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.queueBindingRef) != has(self.dynamodb)").message("exactly one of queueBindingRef or dynamodb must be set"))]
pub struct PublishTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_binding_ref: Option<ObjectRef>,
    /// Put each event into a table (its stream carries it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<TableRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableRef {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub table_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub queue_binding_ref: ObjectRef,
}

/// An EventBridge event pattern over the CloudEvent, kept as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventPattern(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for EventPattern {
    fn schema_name() -> Cow<'static, str> {
        "EventPattern".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "description": "EventBridge pattern syntax: exact values, prefix, suffix, anything-but, numeric, exists, nested fields."
        })
    }
}

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
    #[serde(default = "default_processor_timeout")]
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
    #[serde(default = "default_container_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default = "default_container_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    #[serde(default = "default_processor_timeout")]
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
    #[serde(default = "default_counter")]
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

/// Where events go after a delivery, as Lambda destinations and Knative replies do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destinations {
    /// An outcome event (same correlation id, the input's id as subject) after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<OutcomeTarget>,
    /// An outcome event, with the error, when an event is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OutcomeTarget>,
    /// A CloudEvent the processor returns in its response is published here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Source>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeTarget {
    pub queue_binding_ref: ObjectRef,
    /// CloudEvent `type` of the outcome event, e.g. `note-saved`.
    #[schemars(length(min = 1, max = 256))]
    #[serde(rename = "type")]
    pub event_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Deliveries in flight per worker.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: i32,
    /// Longest a single delivery may take, processor included.
    #[serde(default = "default_delivery_timeout")]
    pub timeout: Duration,
    #[serde(default)]
    pub ordering: Ordering,
    /// Exactly-once effects: event ids claimed in a table before delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            timeout: default_delivery_timeout(),
            ordering: Ordering::default(),
            idempotency: None,
        }
    }
}

/// `perGroup`: events of one FIFO message group (or stream partition key) in order,
/// different groups in parallel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Ordering {
    #[default]
    None,
    PerGroup,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Idempotency {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub table_name: String,
    /// How long a processed event id is remembered.
    #[serde(default = "default_idempotency_ttl")]
    pub ttl: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct Scaling {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Queue messages per worker replica the HPA aims for (SQS sources).
    #[serde(default = "default_target_depth")]
    #[schemars(range(min = 1))]
    pub target_depth_per_replica: i64,
    /// Stream lag the HPA aims for (DynamoDB Streams sources).
    #[serde(default = "default_target_lag")]
    #[schemars(range(min = 1))]
    pub target_lag_seconds: i64,
    /// Passed to the HorizontalPodAutoscaler as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            min_replicas: one(),
            max_replicas: default_max_replicas(),
            target_depth_per_replica: default_target_depth(),
            target_lag_seconds: default_target_lag(),
            behavior: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    /// OTLP endpoint; `OTEL_EXPORTER_OTLP_ENDPOINT` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,
    /// Share of traces kept.
    #[serde(default = "default_sample_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_depth: Option<i64>,
}

fn one() -> i32 {
    1
}
fn default_max_body_bytes() -> i64 {
    1 << 20
}
fn default_tolerance() -> Duration {
    Duration::lit("5m")
}
fn default_processor_timeout() -> Duration {
    Duration::lit("10s")
}
fn default_container_port() -> i32 {
    8080
}
fn default_container_path() -> String {
    "/".into()
}
fn default_counter() -> String {
    "count".into()
}
fn default_concurrency() -> i32 {
    16
}
fn default_delivery_timeout() -> Duration {
    Duration::lit("30s")
}
fn default_idempotency_ttl() -> Duration {
    Duration::lit("24h")
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_depth() -> i64 {
    100
}
fn default_target_lag() -> i64 {
    60
}
fn default_sample_ratio() -> f64 {
    1.0
}
