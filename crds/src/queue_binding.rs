//! `QueueBinding`: a concrete SQS queue or DynamoDB stream, and how to read it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, ObjectRef, defaults};

kind! {
    #[kube(
        kind = "QueueBinding",
        status = "QueueBindingStatus",
        shortname = "qb",
        doc = "An SQS queue or a DynamoDB stream, how to reach it and how to read it.",
        printcolumn(
            name = "Ready",
            type_ = "string",
            json_path = ".status.conditions[?(@.type==\"Ready\")].status"
        ),
        printcolumn(name = "Queue", type_ = "string", json_path = ".status.queueUrl"),
        printcolumn(
            name = "Stream",
            type_ = "string",
            json_path = ".status.streamArn",
            priority = 1
        ),
        printcolumn(name = "Depth", type_ = "integer", json_path = ".status.depth"),
        printcolumn(name = "DLQ", type_ = "integer", json_path = ".status.dlqDepth"),
    )]
    #[x_kube(validation = Rule::new("has(self.sqs) != has(self.dynamodbStream)").message("exactly one of sqs or dynamodbStream must be set"))]
    pub struct QueueBindingSpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sqs: Option<SqsQueue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dynamodb_stream: Option<DynamoDbStream>,
        /// AWS region; the SDK's default chain (`AWS_REGION`) when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
        pub region: Option<String>,
        /// Endpoint override, for emulators; `AWS_ENDPOINT_URL` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = r"^https?://"))]
        pub endpoint: Option<String>,
        /// Static credentials from a Secret; the pod's own identity (e.g. IRSA) when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub credentials: Option<Credentials>,
        /// Retries, backoff and dead-letter queue; without one, failures retry at the
        /// queue's visibility timeout and are never dead-lettered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dead_letter_policy_ref: Option<ObjectRef>,
        /// Whether deleting the binding deletes what it created: `Delete` removes only
        /// the queues and table tagged `eventpipe.dev/owner: <this binding's uid>` when it
        /// created them, never a queue or table that existed before, nor a DLQ the
        /// policy names.
        #[serde(default)]
        pub deletion_policy: DeletionPolicy,
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.queueName) != has(self.queueUrl)").message("exactly one of queueName or queueUrl must be set"))]
#[x_kube(validation = Rule::new("!self.create || has(self.queueName)").message("create needs queueName"))]
#[x_kube(validation = Rule::new("!has(self.queueName) || self.queueName.endsWith('.fifo') == self.fifo").message("a FIFO queue's name ends in .fifo, and only a FIFO queue's"))]
pub struct SqsQueue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$"))]
    pub queue_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub queue_url: Option<String>,
    #[serde(default)]
    pub fifo: bool,
    /// Create the queue (and the DLQ of its policy) when missing. The queue and its own
    /// `-dlq` are tagged as this binding's; an existing queue is adopted as it is and
    /// never deleted.
    #[serde(default)]
    pub create: bool,
    /// How long a received message stays hidden from other consumers.
    #[serde(default = "defaults::visibility_timeout")]
    pub visibility_timeout: Duration,
    /// Long-polling wait of each receive (at most 20s).
    #[serde(default = "defaults::wait_time")]
    pub wait_time: Duration,
    /// Messages per receive.
    #[serde(default = "defaults::sqs_batch_size")]
    #[schemars(range(min = 1, max = 10))]
    pub batch_size: i32,
    /// Extend the visibility of messages whose handler is still running.
    #[serde(default = "defaults::yes")]
    pub heartbeat: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tableName) != has(self.streamArn)").message("exactly one of tableName or streamArn must be set"))]
#[x_kube(validation = Rule::new("!self.create || has(self.tableName)").message("create needs tableName"))]
pub struct DynamoDbStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub table_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:dynamodb:"))]
    pub stream_arn: Option<String>,
    /// Create the table (key `id`, stream of new and old images) when missing, tagged
    /// as this binding's; an existing table is adopted as it is and never deleted.
    #[serde(default)]
    pub create: bool,
    /// Where a shard with no checkpoint starts.
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// Most records per batch a shard delivers (and per GetRecords).
    #[serde(default = "defaults::stream_batch_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: i32,
    /// How long a shard gathers records for a batch before delivering fewer than
    /// `batchSize` (at most 5m); absent, each GetRecords is delivered at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window: Option<Duration>,
    /// Batches of a shard delivered at the same time, its records split among them by
    /// partition key so each key's records stay in order.
    #[serde(default = "defaults::parallelization_factor")]
    #[schemars(range(min = 1, max = 10))]
    pub parallelization_factor: i32,
    /// Records older than this are dead-lettered instead of processed (checked
    /// before each delivery, not while held for a throttling processor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_age: Option<Duration>,
    /// Retries of a failed record before it is dead-lettered; the DeadLetterPolicy's
    /// `maxReceiveCount` (deliveries, first included) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_retry_attempts: Option<i32>,
    /// Split a batch whose every record failed in halves, down to the bad record, so
    /// the records around it are delivered without it.
    #[serde(default)]
    pub bisect_on_error: bool,
    /// Lease and checkpoint table, created when missing.
    #[serde(default = "defaults::checkpoint_table")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub checkpoint_table: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    #[default]
    TrimHorizon,
    Latest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// A Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    pub secret_ref: ObjectRef,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueBindingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_url: Option<String>,
    /// Approximate messages visible and in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
