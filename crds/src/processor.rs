//! An EventPipeline's processor: what each event is delivered to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecurityContext};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, ObjectRef, SecretKeyRef, defaults};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.http) ? 1 : 0) + (has(self.container) ? 1 : 0) + (has(self.dynamodb) ? 1 : 0) + (has(self.sqs) ? 1 : 0) + (has(self.push) ? 1 : 0) == 1").message("processor must name exactly one of http, container, dynamodb, sqs or push"))]
pub struct Processor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::PushProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<DynamoDbProcessor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsProcessor>,
}

/// POST each event as a binary-mode CloudEvent, or with `batch` several in one
/// request; 2xx is success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.sigv4) && has(self.bearerTokenSecretRef))").message("sigv4 and bearerTokenSecretRef both set the Authorization header; choose one"))]
pub struct HttpProcessor {
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    #[serde(default = "defaults::processor_timeout")]
    pub timeout: Duration,
    /// Extra request headers, in plain text: never credentials (see `headersFrom`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are keys of Secrets, mounted in the workers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers_from: Vec<HeaderFromSecret>,
    /// `Authorization: Bearer <token>`, the token a key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Sign each request with AWS Signature Version 4 and the workers' AWS credentials
    /// (API Gateway with IAM authorization, Lambda function URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4: Option<SigV4>,
    /// Several events per request, in the CloudEvents batched content mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
}

/// Events delivered together: up to `maxSize` per request, waiting at most `window`
/// for a request to fill. For `http`, a JSON array of structured CloudEvents
/// (`application/cloudevents-batch+json`); a 2xx response may name the failed events
/// as `{"batchItemFailures": [{"itemIdentifier": "<event id>"}]}`, and only those are
/// retried; any other status fails them all. For `dynamodb`, one `BatchWriteItem` of
/// up to 25 puts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    #[schemars(range(min = 1, max = 1000))]
    pub max_size: i32,
    /// How long the first event of a request waits for others; it counts toward
    /// `delivery.timeout`. `0s`: only what is waiting already goes with it.
    #[serde(default = "defaults::batch_window")]
    pub window: Duration,
}

/// A request header whose value is a key of a Secret: `{name: X-Api-Key, secretRef: {name, key}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderFromSecret {
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), length(max = 256))]
    pub name: String,
    pub secret_ref: SecretKeyRef,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigV4 {
    /// The AWS service the URL belongs to.
    pub service: SigV4Service,
    /// The URL's region; the workers' AWS region when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SigV4Service {
    /// API Gateway, with IAM authorization.
    #[serde(rename = "execute-api")]
    ExecuteApi,
    /// Lambda function URLs with `AuthType: AWS_IAM`.
    #[serde(rename = "lambda")]
    Lambda,
}

impl SigV4Service {
    /// The signing name of the service.
    pub fn name(self) -> &'static str {
        match self {
            Self::ExecuteApi => "execute-api",
            Self::Lambda => "lambda",
        }
    }
}

impl HttpProcessor {
    /// Every Secret key the processor reads, bearer token included.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeyRef> {
        self.headers_from
            .iter()
            .map(|h| &h.secret_ref)
            .chain(&self.bearer_token_secret_ref)
    }
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
    /// Fields that replace those of the sidecar's default securityContext (which meets
    /// the `restricted` Pod Security Standard), e.g. `runAsUser` for an image that needs
    /// its own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// Write events into a table, idempotently (keyed by event id), or count them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.batch) || !has(self.aggregate)").message("batch applies to puts only: a count is an update (in a transaction with its idempotency claim), which BatchWriteItem cannot make"))]
#[x_kube(validation = Rule::new("!has(self.batch) || self.batch.maxSize <= 25").message("batch.maxSize: BatchWriteItem takes at most 25 items"))]
#[x_kube(validation = Rule::new("!has(self.required) || !has(self.batch)").message("required checks each event before its own put: remove batch or required"))]
pub struct DynamoDbProcessor {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub table_name: String,
    /// Create the table (key `id`, stream of new and old images) when missing.
    #[serde(default)]
    pub create: bool,
    /// Instead of putting the event, add one to a counter item keyed by parts of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Puts in `BatchWriteItem`s of up to 25, the unprocessed ones retried. Such a put
    /// has no condition: a redelivered event's item is written again (same content,
    /// a `MODIFY` on the table's stream) instead of being left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// JSON pointers into the CloudEvent (`/data/text`) that must hold a value (not
    /// null, an empty string or an empty list). An event without is invalid: nothing
    /// is written, it is dead-lettered (at once with `nonRetryable.undecodable`) and
    /// its `onFailure` outcome is published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub required: Vec<String>,
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
