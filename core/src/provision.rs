//! Creating what a QueueBinding asks for: the queue, its dead-letter queue and redrive
//! policy, stream-enabled tables, checkpoint and idempotency tables. Everything is
//! idempotent: existing resources are kept and their attributes brought in line.
//!
//! What is created for a binding carries its uid in the [`OWNER_TAG`], written at
//! creation only: an existing resource that is adopted never gets it, so deleting the
//! binding can tell what it made from what it found.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_crds::{DeadLetterPolicy, SqsQueue};

use crate::resolve::{self, DeadLetterTarget};
use crate::sqs_message;

/// The tag naming the QueueBinding (by uid) that created a queue or table. Resources
/// created without one (local mode, the worker's own tables) are nobody's to delete.
pub const OWNER_TAG: &str = "eventpipe.dev/owner";

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

/// Turns an SDK error about `what` into a [`ProvisionError`], for `map_err`.
pub fn fail<E, R>(what: impl Into<String>) -> impl FnOnce(SdkError<E, R>) -> ProvisionError
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
/// redrive policy. Only for bindings with `create: true` and a `queueName`. What it
/// creates has no owner: see [`ensure_sqs_for`].
pub async fn ensure_sqs(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
    policy: Option<&DeadLetterPolicy>,
) -> Result<Queues, ProvisionError> {
    ensure_sqs_for(sqs, queue, policy, None).await
}

/// [`ensure_sqs`] for the binding with `uid`, whose [`OWNER_TAG`] goes on the queue
/// and its own DLQ when they are created.
pub async fn ensure_sqs_for(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
    policy: Option<&DeadLetterPolicy>,
    uid: Option<&str>,
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
        let url = ensure_dead_letter_queue(sqs, &name, policy, uid).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn_of(sqs, &url).await?,
            "maxReceiveCount": policy.spec.max_receive_count.to_string(),
        });
        attrs.insert(Attr::RedrivePolicy, redrive.to_string());
        dlq_url = Some(url);
    }
    let url = ensure_queue(sqs, &name, attrs, uid).await?;
    let arn = arn_of(sqs, &url).await?;
    Ok(Queues { url, arn, dlq_url })
}

/// The DLQ a policy gives `owner` (a queue, or a stream's table), by
/// [`resolve::dead_letter_target`]: created unless the policy names an existing one,
/// tagged as the binding `uid`'s when it is the owner's own (default-named) DLQ.
pub async fn ensure_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    owner: &str,
    policy: &DeadLetterPolicy,
    uid: Option<&str>,
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
    // A DLQ the policy names may be shared by many bindings: none of them owns it.
    let uid = uid.filter(|_| policy.spec.dead_letter_queue.is_none());
    ensure_queue(sqs, &name, attrs, uid).await
}

/// Creates the queue, tagged as the binding `uid`'s, or sets the attributes of the
/// one that exists (which keeps its tags).
pub async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attrs: HashMap<Attr, String>,
    uid: Option<&str>,
) -> Result<String, ProvisionError> {
    match url_of(sqs, name).await {
        Ok(url) => return update_queue(sqs, &url, attrs).await.map(|()| url),
        // Only a queue known to be missing is created: CreateQueue may answer with,
        // and tag, a queue that exists.
        Err(e) if e.kind != FailureKind::QueueNotFound => return Err(e),
        Err(_) => {}
    }
    let mut create = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs));
    if let Some(uid) = uid {
        create = create.tags(OWNER_TAG, uid);
    }
    let out = create.send().await.map_err(fail(name))?;
    Ok(out.queue_url.unwrap_or_default())
}

async fn update_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    attrs: HashMap<Attr, String>,
) -> Result<(), ProvisionError> {
    // FifoQueue cannot be changed after creation.
    let settable = attrs
        .into_iter()
        .filter(|(k, _)| *k != Attr::FifoQueue)
        .collect();
    sqs.set_queue_attributes()
        .queue_url(url)
        .set_attributes(Some(settable))
        .send()
        .await
        .map_err(fail(url))?;
    Ok(())
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
/// What it creates has no owner: see [`ensure_stream_table_for`].
pub async fn ensure_stream_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    ensure_stream_table_for(ddb, name, None).await
}

/// [`ensure_stream_table`] for the binding with `uid`, whose [`OWNER_TAG`] goes on
/// the table when it is created.
pub async fn ensure_stream_table_for(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    uid: Option<&str>,
) -> Result<Option<String>, ProvisionError> {
    ensure_table(ddb, name, "id", true, uid).await
}

/// A stream consumer's lease and checkpoint table.
pub async fn ensure_checkpoint_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", false, None).await.map(drop)
}

/// An idempotency table, whose claims expire by the epoch-seconds `ttl_attribute`.
pub async fn ensure_idempotency_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    ttl_attribute: &str,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", false, None).await?;
    ensure_ttl(ddb, name, ttl_attribute).await
}

/// The table a `dynamodb` processor writes to; with a stream when it stores events
/// as they come (so another pipeline can consume them), not when it aggregates.
pub async fn ensure_processor_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    stream: bool,
) -> Result<(), ProvisionError> {
    ensure_table(ddb, name, "id", stream, None).await.map(drop)
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
/// and old images when `stream` is set and tagged as the binding `uid`'s; returns the
/// stream ARN when there is one. (CreateTable fails on a table that exists, so an
/// existing table is never tagged.)
async fn ensure_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    key: &str,
    stream: bool,
    uid: Option<&str>,
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
    if let Some(uid) = uid {
        let tag = Tag::builder().key(OWNER_TAG).value(uid).build();
        create = create.tags(tag.expect("key and value are set"));
    }
    let out = create.send().await.map_err(fail(name))?;
    Ok(out.table_description.and_then(|t| t.latest_stream_arn))
}

/// The uid in a queue's [`OWNER_TAG`]: the binding that created it, if one did.
pub async fn queue_owner(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Option<String>, ProvisionError> {
    let out = sqs
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .map_err(fail(url))?;
    Ok(out.tags.and_then(|mut tags| tags.remove(OWNER_TAG)))
}

/// The uid in a table's [`OWNER_TAG`]: the binding that created it, if one did.
pub async fn table_owner(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<String>, ProvisionError> {
    let what = format!("table {table:?}");
    let described = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(fail(what.clone()))?;
    let arn = described
        .table
        .and_then(|t| t.table_arn)
        .unwrap_or_default();
    let mut next = None;
    loop {
        let out = ddb
            .list_tags_of_resource()
            .resource_arn(&arn)
            .set_next_token(next)
            .send()
            .await
            .map_err(fail(what.clone()))?;
        if let Some(tag) = out.tags().iter().find(|t| t.key() == OWNER_TAG) {
            return Ok(Some(tag.value().to_string()));
        }
        next = out.next_token;
        if next.is_none() {
            return Ok(None);
        }
    }
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
