//! `DeadLetterPolicy`: what happens to an event that cannot be processed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, defaults};

kind! {
    #[kube(
        kind = "DeadLetterPolicy",
        status = "DeadLetterPolicyStatus",
        shortname = "dlp",
        doc = "Retries, backoff and the dead-letter queue shared by the QueueBindings that name it.",
        printcolumn(
            name = "Max Receives",
            type_ = "integer",
            json_path = ".spec.maxReceiveCount"
        ),
        printcolumn(name = "DLQ Depth", type_ = "integer", json_path = ".status.depth"),
        printcolumn(
            name = "Alert",
            type_ = "string",
            json_path = ".status.conditions[?(@.type==\"AlertThresholdExceeded\")].status"
        ),
    )]
    /// Retries, backoff and the dead-letter queue shared by the bindings that name this policy.
    pub struct DeadLetterPolicySpec {
        /// Deliveries of a message before it is dead-lettered.
        #[serde(default = "defaults::max_receive_count")]
        #[schemars(range(min = 1, max = 1000))]
        pub max_receive_count: i32,
        /// Spacing of retries.
        #[serde(default)]
        pub backoff: Backoff,
        /// Where dead letters go. When absent, each queue gets its own `<queue>-dlq`
        /// (created with the queue when the binding creates it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dead_letter_queue: Option<DeadLetterQueue>,
        /// How long dead letters are kept.
        #[serde(default = "defaults::retention")]
        pub retention: Duration,
        /// Dead letters past which the policy reports `AlertThresholdExceeded`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 0))]
        pub alert_threshold: Option<i64>,
        /// Outcomes that go to the dead-letter queue at once instead of burning retries.
        #[serde(default)]
        pub non_retryable: NonRetryable,
    }
}

impl DeadLetterPolicySpec {
    /// The dead-letter queue's URL, when the policy gives one.
    pub fn dead_letter_queue_url(&self) -> Option<String> {
        self.dead_letter_queue.as_ref()?.queue_url.clone()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(default = "defaults::backoff_initial")]
    pub initial: Duration,
    /// Factor applied to the delay at each further retry.
    #[serde(default = "defaults::backoff_multiplier")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub multiplier: f64,
    /// Longest delay between retries.
    #[serde(default = "defaults::backoff_max")]
    pub max: Duration,
    #[serde(default)]
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: defaults::backoff_initial(),
            multiplier: defaults::backoff_multiplier(),
            max: defaults::backoff_max(),
            jitter: Jitter::default(),
        }
    }
}

/// `full`: a random delay between zero and the computed one (spreads retries of a burst);
/// `none`: exactly the computed delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    #[default]
    Full,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.queueName) != has(self.queueUrl)").message("exactly one of queueName or queueUrl must be set"))]
#[x_kube(validation = Rule::new("!self.create || has(self.queueName)").message("create needs queueName"))]
pub struct DeadLetterQueue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$"))]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub queue_url: Option<String>,
    /// Create the queue when it does not exist.
    #[serde(default)]
    pub create: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NonRetryable {
    /// Processor HTTP statuses that will not get better with retries (e.g. 400, 422).
    #[serde(default)]
    #[schemars(length(max = 50), inner(range(min = 400, max = 599)))]
    pub http_statuses: Vec<u16>,
    /// Dead-letter at once a message that claims to be a CloudEvent but cannot be decoded.
    #[serde(default)]
    pub undecodable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The dead-letter queues this policy serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<DeadLetterQueueStatus>,
    /// Dead letters across those queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQueueStatus {
    pub queue_url: String,
    /// The QueueBinding whose dead letters land here.
    pub binding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
}
