//! Creating what a QueueBinding asks for: the queue, its dead-letter queue and redrive
//! policy, stream-enabled tables, checkpoint and idempotency tables. Everything is
//! idempotent: existing resources are kept and their attributes brought in line.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_crds::{DeadLetterPolicy, SqsQueue};

use crate::resolve::{self, DeadLetterTarget};
use crate::sqs_message;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ProvisionError {
    /// The queue, URL or table it was about.
    pub what: String,
    pub message: String,
    pub kind: FailureKind,
}

/// What went wrong, as far as a person can act on it, from the SDK's error code or
/// from the request never getting an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    AccessDenied,
    QueueNotFound,
    TableNotFound,
    /// The table exists but has no stream to consume.
    StreamNotEnabled,
    /// No answer: a wrong endpoint, the network, a timeout.
    Unreachable,
    Other,
}

impl FailureKind {
    pub fn of<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Self {
        match e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Self::Unreachable,
            _ => Self::of_code(e.code()),
        }
    }

    /// From an AWS error code; SQS's query protocol prefixes its codes
    /// (`AWS.SimpleQueueService.NonExistentQueue`), its JSON protocol does not.
    pub fn of_code(code: Option<&str>) -> Self {
        let code = code.unwrap_or_default();
        let code = code.rsplit('.').next().unwrap_or(code);
        match code {
            "AccessDenied"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId" => Self::AccessDenied,
            "NonExistentQueue" | "QueueDoesNotExist" => Self::QueueNotFound,
            "ResourceNotFoundException" => Self::TableNotFound,
            _ => Self::Other,
        }
    }
}

fn fail<E, R>(what: impl Into<String>) -> impl FnOnce(SdkError<E, R>) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let what = what.into();
    move |e| ProvisionError {
        what,
        kind: FailureKind::of(&e),
        message: describe(&e),
    }
}

/// What AWS answered (its code and message), or, without an answer, the whole
/// chain of causes: a person reads this in a condition or a log line.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    }
}

/// What a created binding resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queues {
    pub url: String,
    pub arn: String,
    pub dlq_url: Option<String>,
}

/// Creates (or updates) the binding's queue and, when it has a policy, its DLQ and
/// redrive policy. Only for bindings with `create: true` and a `queueName`.
pub async fn ensure_sqs(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
    policy: Option<&DeadLetterPolicy>,
) -> Result<Queues, ProvisionError> {
    let name = queue.queue_name.clone().unwrap_or_default();
    let mut attrs = HashMap::from([(
        Attr::VisibilityTimeout,
        queue.visibility_timeout.as_std().as_secs().to_string(),
    )]);
    if queue.fifo {
        attrs.insert(Attr::FifoQueue, "true".into());
    }
    let mut dlq_url = None;
    if let Some(policy) = policy {
        let url = ensure_dead_letter_queue(sqs, &name, policy).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn_of(sqs, &url).await?,
            "maxReceiveCount": policy.spec.max_receive_count.to_string(),
        });
        attrs.insert(Attr::RedrivePolicy, redrive.to_string());
        dlq_url = Some(url);
    }
    let url = ensure_queue(sqs, &name, attrs).await?;
    let arn = arn_of(sqs, &url).await?;
    Ok(Queues { url, arn, dlq_url })
}

/// The DLQ a policy gives `owner` (a queue, or a stream's table), by
/// [`resolve::dead_letter_target`]: created unless the policy names an existing one.
pub async fn ensure_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    owner: &str,
    policy: &DeadLetterPolicy,
) -> Result<String, ProvisionError> {
    let (name, create) = match resolve::dead_letter_target(owner, None, policy) {
        DeadLetterTarget::Url(url) => return Ok(url),
        DeadLetterTarget::Name { name, create } => (name, create),
    };
    if !create {
        return url_of(sqs, &name).await;
    }
    let retention = policy
        .spec
        .retention
        .as_std()
        .as_secs()
        .min(1_209_600)
        .to_string();
    let mut attrs = HashMap::from([(Attr::MessageRetentionPeriod, retention)]);
    if sqs_message::is_fifo(&name) {
        attrs.insert(Attr::FifoQueue, "true".into());
    }
    ensure_queue(sqs, &name, attrs).await
}

/// Creates the queue, or sets the attributes of the one that exists.
pub async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attrs: HashMap<Attr, String>,
) -> Result<String, ProvisionError> {
    if let Ok(url) = url_of(sqs, name).await {
        // FifoQueue cannot be changed after creation.
        let settable = attrs
            .into_iter()
            .filter(|(k, _)| *k != Attr::FifoQueue)
            .collect();
        sqs.set_queue_attributes()
            .queue_url(&url)
            .set_attributes(Some(settable))
            .send()
            .await
            .map_err(fail(name))?;
        return Ok(url);
    }
    let out = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .map_err(fail(name))?;
    Ok(out.queue_url.unwrap_or_default())
}

pub async fn url_of(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, ProvisionError> {
    let out = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(fail(name))?;
    Ok(out.queue_url.unwrap_or_default())
}

pub async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, ProvisionError> {
    Ok(attribute(sqs, url, Attr::QueueArn)
        .await?
        .unwrap_or_default())
}

/// One attribute of a queue.
pub async fn attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: Attr,
) -> Result<Option<String>, ProvisionError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .map_err(fail(url))?;
    Ok(out.attributes.and_then(|mut a| a.remove(&name)))
}

/// Approximate messages in a queue, visible plus in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<i64, ProvisionError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(fail(url))?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: &Attr| {
        attrs
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(n(&Attr::ApproximateNumberOfMessages) + n(&Attr::ApproximateNumberOfMessagesNotVisible))
}

/// A table whose stream a `dynamodbStream` binding consumes; returns the stream's ARN.
pub async fn ensure_stream_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    ensure_table(ddb, name, "id", true).await
}

/// A stream consumer's lease and checkpoint table.
pub async fn ensure_checkpoint_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", false).await.map(drop)
}

/// An idempotency table, whose claims expire by the epoch-seconds `ttl_attribute`.
pub async fn ensure_idempotency_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    ttl_attribute: &str,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", false).await?;
    ensure_ttl(ddb, name, ttl_attribute).await
}

/// The table a `dynamodb` processor writes to; with a stream when it stores events
/// as they come (so another pipeline can consume them), not when it aggregates.
pub async fn ensure_processor_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    stream: bool,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", stream).await.map(drop)
}

/// The table's latest stream, if it has one.
pub async fn latest_stream(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<String>, ProvisionError> {
    let out = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(fail(format!("table {table:?}")))?;
    Ok(out.table.and_then(|t| t.latest_stream_arn))
}

/// Creates an on-demand table keyed by string `key` when missing, with a stream of new
/// and old images when `stream` is set; returns the stream ARN when there is one.
async fn ensure_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    key: &str,
    stream: bool,
) -> Result<Option<String>, ProvisionError> {
    if let Ok(out) = ddb.describe_table().table_name(name).send().await {
        return Ok(out.table.and_then(|t| t.latest_stream_arn));
    }
    let string_key = AttributeDefinition::builder()
        .attribute_name(key)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set");
    let hash_key = KeySchemaElement::builder()
        .attribute_name(key)
        .key_type(KeyType::Hash)
        .build()
        .expect("name and type are set");
    let mut create = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_key)
        .key_schema(hash_key);
    if stream {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("enabled is set"),
        );
    }
    let out = create.send().await.map_err(fail(name))?;
    Ok(out.table_description.and_then(|t| t.latest_stream_arn))
}

/// Turns on expiry of items by the epoch-seconds attribute `attribute`, unless it
/// is on already.
pub async fn ensure_ttl(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
) -> Result<(), ProvisionError> {
    let now = ddb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(fail(table))?;
    let on = now.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(attribute)
            && matches!(
                d.time_to_live_status(),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
    });
    if on {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .expect("enabled and attribute are set");
    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(fail(table))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_come_from_error_codes_in_either_protocol() {
        let kind = |c: &str| FailureKind::of_code(Some(c));
        assert_eq!(
            kind("AWS.SimpleQueueService.NonExistentQueue"),
            FailureKind::QueueNotFound
        );
        assert_eq!(kind("QueueDoesNotExist"), FailureKind::QueueNotFound);
        assert_eq!(
            kind("ResourceNotFoundException"),
            FailureKind::TableNotFound
        );
        assert_eq!(kind("AccessDeniedException"), FailureKind::AccessDenied);
        assert_eq!(kind("InvalidClientTokenId"), FailureKind::AccessDenied);
        assert_eq!(kind("ThrottlingException"), FailureKind::Other);
        assert_eq!(FailureKind::of_code(None), FailureKind::Other);
    }
}
