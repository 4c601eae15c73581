//! Creating what a QueueBinding asks for: the queue, its dead-letter queue and redrive
//! policy, stream-enabled tables, checkpoint and idempotency tables. Everything is
//! idempotent: existing resources are kept and their attributes brought in line.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_crds::{DeadLetterPolicy, SqsQueue};

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
        message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    }
}

/// The queue's dead-letter queue name: the policy's, else `<queue>-dlq` (FIFO kept).
pub fn dead_letter_queue_name(queue_name: &str, policy: &DeadLetterPolicy) -> Option<String> {
    match &policy.spec.dead_letter_queue {
        Some(dlq) => dlq.queue_name.clone(),
        None => Some(match queue_name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-dlq.fifo"),
            None => format!("{queue_name}-dlq"),
        }),
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

/// The DLQ a policy gives `queue_name` (a queue, or a stream's table): by URL as is,
/// else by name, created unless the policy names an existing one with `create: false`.
pub async fn ensure_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_name: &str,
    policy: &DeadLetterPolicy,
) -> Result<String, ProvisionError> {
    if let Some(url) = policy.spec.dead_letter_queue_url() {
        return Ok(url);
    }
    let name = dead_letter_queue_name(queue_name, policy).unwrap_or_default();
    if policy
        .spec
        .dead_letter_queue
        .as_ref()
        .is_some_and(|d| !d.create)
    {
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
    if name.ends_with(".fifo") {
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
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::QueueArn)
        .send()
        .await
        .map_err(fail(url))?;
    Ok(out
        .attributes
        .and_then(|mut a| a.remove(&Attr::QueueArn))
        .unwrap_or_default())
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

/// Creates an on-demand table keyed by string `key` when missing, with a stream of new
/// and old images when `stream` is set; returns the stream ARN when there is one.
pub async fn ensure_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    key: &str,
    stream: bool,
) -> Result<Option<String>, ProvisionError> {
    if let Ok(out) = ddb.describe_table().table_name(name).send().await {
        return Ok(out.table.and_then(|t| t.latest_stream_arn));
    }
    let mut create = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        );
    if stream {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        );
    }
    let out = create.send().await.map_err(fail(name))?;
    Ok(out.table_description.and_then(|t| t.latest_stream_arn))
}

/// Turns on expiry of items by the epoch-seconds attribute `attribute`.
pub async fn ensure_ttl(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
) -> Result<(), ProvisionError> {
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .unwrap();
    match ddb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already enabled on this attribute.
        Err(e)
            if format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&e))
                .contains("already enabled") =>
        {
            Ok(())
        }
        Err(e) => Err(fail(table)(e)),
    }
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
    use eventpipe_crds::{DeadLetterPolicySpec, DeadLetterQueue};

    fn policy(dlq: Option<DeadLetterQueue>) -> DeadLetterPolicy {
        let mut spec: DeadLetterPolicySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.dead_letter_queue = dlq;
        DeadLetterPolicy::new("p", spec)
    }

    #[test]
    fn dead_letter_queues_are_named_after_their_queue_unless_the_policy_names_one() {
        assert_eq!(
            dead_letter_queue_name("orders", &policy(None)).unwrap(),
            "orders-dlq"
        );
        assert_eq!(
            dead_letter_queue_name("orders.fifo", &policy(None)).unwrap(),
            "orders-dlq.fifo"
        );
        let named = DeadLetterQueue {
            queue_name: Some("shared-dlq".into()),
            queue_url: None,
            create: true,
        };
        assert_eq!(
            dead_letter_queue_name("orders", &policy(Some(named))).unwrap(),
            "shared-dlq"
        );
        let by_url = DeadLetterQueue {
            queue_name: None,
            queue_url: Some("http://x/1/d".into()),
            create: false,
        };
        assert_eq!(
            dead_letter_queue_name("orders", &policy(Some(by_url))),
            None
        );
    }
}
