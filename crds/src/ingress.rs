//! An EventPipeline's ingress: its webhooks, how each request is authenticated, and
//! where accepted events are stored.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, ObjectRef, SecretKeyRef, ValueSource, defaults};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.webhooks.all(w, self.webhooks.filter(x, x.name == w.name).size() == 1)").message("webhook names must be unique"))]
#[x_kube(validation = Rule::new("self.webhooks.all(w, self.webhooks.filter(x, x.path == w.path).size() == 1)").message("webhook paths must be unique"))]
pub struct Ingress {
    #[schemars(length(min = 1, max = 32))]
    pub webhooks: Vec<Webhook>,
    /// Where accepted events are stored.
    pub publish_to: PublishTarget,
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Serve HTTPS with the certificate of a `kubernetes.io/tls` Secret (keys `tls.crt`
    /// and `tls.key`); a rotated Secret reaches new connections without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    pub secret_ref: ObjectRef,
}

impl IngressTls {
    /// The keys of a `kubernetes.io/tls` Secret.
    pub const KEYS: [&str; 2] = ["tls.crt", "tls.key"];
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
    #[serde(default = "defaults::max_body_bytes")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub max_body_bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scheme != 'hmac-sha256' || has(self.header)").message("scheme hmac-sha256 needs header"))]
#[x_kube(validation = Rule::new("!has(self.timestamp) || self.scheme == 'hmac-sha256'").message("timestamp (a replay window) applies to scheme hmac-sha256 only"))]
#[x_kube(validation = Rule::new("!has(self.timestamp) || !has(self.header) || self.timestamp.header.lowerAscii() != self.header.lowerAscii()").message("the timestamp header must not be the signature header"))]
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
    #[serde(default = "defaults::tolerance")]
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
