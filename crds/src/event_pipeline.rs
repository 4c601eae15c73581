//! `EventPipeline`: where events come from, what processes them, how workers scale.

use std::{borrow::Cow, collections::BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::{Destinations, Duration, Ingress, ObjectRef, Processor, Scaling, defaults};

kind! {
    #[kube(
        kind = "EventPipeline",
        status = "EventPipelineStatus",
        shortname = "ep",
        doc = "Where events come from (webhooks, queues, streams), what processes them, and how its workers scale.",
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
            name = "Activity",
            type_ = "string",
            json_path = ".status.conditions[?(@.type==\"Active\")].reason"
        ),
    )]
    #[x_kube(validation = Rule::new("!has(self.destinations) || !has(self.destinations.reply) || !has(self.processor.http) || !has(self.processor.http.batch)").message("destinations.reply publishes the reply to each event, and a batch response carries none: remove processor.http.batch or destinations.reply"))]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Deliveries in flight per worker.
    #[serde(default = "defaults::concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: i32,
    /// Longest a single delivery may take, processor included.
    #[serde(default = "defaults::delivery_timeout")]
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
            concurrency: defaults::concurrency(),
            timeout: defaults::delivery_timeout(),
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
    #[serde(default = "defaults::idempotency_ttl")]
    pub ttl: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    /// OTLP endpoint; `OTEL_EXPORTER_OTLP_ENDPOINT` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,
    /// Share of traces kept.
    #[serde(default = "defaults::sample_ratio")]
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
    /// The engine whose objects scale the workers now (`scaling.engine`, else the
    /// operator's default): when it changes, the other's are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_engine: Option<crate::ScalingEngine>,
}
