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
#[x_kube(validation = Rule::new("!has(self.subscriptions) || self.subscriptions.all(s, self.webhooks.exists(w, w.name == s.webhook))").message("a subscription's webhook must be one of the ingress's webhooks"))]
#[x_kube(validation = Rule::new("!has(self.subscriptions) || self.subscriptions.all(s, !self.webhooks.exists(w, w.path == s.path) && self.subscriptions.filter(x, x.path == s.path).size() == 1)").message("subscription paths must be unique and differ from the webhooks' paths"))]
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
    /// Where clients subscribe to the events a `push` processor delivers here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub subscriptions: Vec<crate::Subscription>,
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
#[x_kube(validation = Rule::new("!has(self.github) || self.signature.scheme == 'github'").message("github applies to scheme github only"))]
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
    /// GitHub deliveries (scheme github).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubOptions>,
}

/// What the ingress does with GitHub's own requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubOptions {
    /// Enqueue `ping` events (sent when a hook is created) like any other; by
    /// default they are answered `200` and not enqueued.
    #[serde(default)]
    pub deliver_pings: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.scheme in ['hmac', 'hmac-sha256']) || has(self.header)").message("schemes hmac and hmac-sha256 need header"))]
#[x_kube(validation = Rule::new("!has(self.timestamp) || self.scheme in ['hmac', 'hmac-sha256']").message("timestamp (a replay window) applies to schemes hmac and hmac-sha256 only"))]
#[x_kube(validation = Rule::new("!has(self.timestamp) || !has(self.header) || self.timestamp.header.lowerAscii() != self.header.lowerAscii()").message("the timestamp header must not be the signature header"))]
#[x_kube(validation = Rule::new("(!has(self.algorithm) && !has(self.signedString) && !has(self.idHeader)) || self.scheme == 'hmac'").message("algorithm, signedString and idHeader apply to scheme hmac only"))]
#[x_kube(validation = Rule::new("!has(self.signedString) || self.signedString.contains('{body}')").message("signedString must contain {body}"))]
#[x_kube(validation = Rule::new("has(self.signedString) && self.signedString.contains('{timestamp}') ? has(self.timestamp) : true").message("a signedString with {timestamp} needs timestamp"))]
#[x_kube(validation = Rule::new("has(self.signedString) && self.signedString.contains('{id}') ? has(self.idHeader) : true").message("a signedString with {id} needs idHeader"))]
#[x_kube(validation = Rule::new("!has(self.tolerance) || self.scheme in ['slack', 'stripe', 'standard-webhooks']").message("tolerance applies to schemes slack, stripe and standard-webhooks; scheme hmac takes timestamp.tolerance"))]
#[x_kube(validation = Rule::new("!(has(self.header) || has(self.prefix)) || self.scheme in ['hmac', 'hmac-sha256', 'bearer']").message("header and prefix apply to schemes hmac, hmac-sha256 and bearer; the other schemes use their sender's headers"))]
pub struct Signature {
    pub scheme: SignatureScheme,
    pub secret_ref: SecretKeyRef,
    /// A second accepted secret, so a sender can move to a new one without a lost
    /// request: both verify until this is removed. For `standard-webhooks`, a
    /// `whsec_` secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_ref: Option<SecretKeyRef>,
    /// Header carrying the signature (hmac) or token (bearer: `Authorization` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Text before the signature (hmac) or token (bearer) in the header, e.g. `v1=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    /// How the hmac signature is written.
    #[serde(default)]
    pub encoding: Encoding,
    /// The hash of scheme hmac; `sha256` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// What scheme hmac signs: text with `{body}` (the raw body), `{timestamp}` (the
    /// timestamp header's value) and `{id}` (the idHeader's value), e.g.
    /// `{id}.{timestamp}.{body}`. Default: `{timestamp}.{body}` with a timestamp,
    /// `{body}` without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub signed_string: Option<String>,
    /// Header whose value `{id}` stands for in signedString.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub id_header: Option<String>,
    /// Scheme hmac's replay window: the timestamp header it signs, and how far from
    /// now it may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<ReplayWindow>,
    /// The replay window of schemes slack, stripe and standard-webhooks; 5m when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Duration>,
}

impl Signature {
    /// The secrets a request may be signed with: the current one, then the previous.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretKeyRef> {
        std::iter::once(&self.secret_ref).chain(&self.previous_secret_ref)
    }
}

/// How a webhook's requests are authenticated. Each named scheme verifies what its
/// sender sends, headers and signed string as the sender documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SignatureScheme {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(rename = "github")]
    Github,
    /// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of v0:<timestamp>:<body>>`,
    /// the timestamp in `X-Slack-Request-Timestamp`, within `tolerance`.
    #[serde(rename = "slack")]
    Slack,
    /// Stripe: `Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of
    /// <timestamp>.<body>>` (one or more v1), within `tolerance`.
    #[serde(rename = "stripe")]
    Stripe,
    /// Standard Webhooks (Svix and others): `webhook-signature: v1,<base64 HMAC-SHA256
    /// of <id>.<timestamp>.<body>>` (one or more, space-separated) with `webhook-id`
    /// and `webhook-timestamp`, within `tolerance`; the secret is `whsec_<base64 key>`.
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`.
    #[serde(rename = "shopify")]
    Shopify,
    /// GitLab: the secret token itself in `X-Gitlab-Token`.
    #[serde(rename = "gitlab")]
    Gitlab,
    /// A configurable HMAC: `header`, `prefix`, `encoding`, `algorithm`,
    /// `signedString`, and an optional replay window (`timestamp`).
    #[serde(rename = "hmac")]
    Hmac,
    /// Scheme hmac with algorithm sha256, kept for manifests that name it.
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
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
