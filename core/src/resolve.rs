//! What a QueueBinding resolves to: its queue's URL, its stream's ARN and table, and
//! the dead-letter queue its policy gives it, by one rule for the operator's status,
//! the worker and local mode.

use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_crds::{DeadLetterPolicy, DynamoDbStream, SqsQueue};

use crate::provision::{self, FailureKind, ProvisionError};

/// Where a binding's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterTarget {
    Url(String),
    /// A queue by name, which the policy may let the binding create.
    Name {
        name: String,
        create: bool,
    },
}

/// The rule, in order: the queue the policy names (by URL or name); the target of
/// the queue's own redrive policy; `<owner>-dlq` (a FIFO owner's `-dlq.fifo`), where
/// `owner` is the queue's or the stream table's name.
pub fn dead_letter_target(
    owner: &str,
    redrive_target: Option<&str>,
    policy: &DeadLetterPolicy,
) -> DeadLetterTarget {
    if let Some(url) = policy.spec.dead_letter_queue_url() {
        return DeadLetterTarget::Url(url);
    }
    let named = policy.spec.dead_letter_queue.as_ref();
    if let Some(name) = named.and_then(|d| d.queue_name.clone()) {
        let create = named.is_some_and(|d| d.create);
        return DeadLetterTarget::Name { name, create };
    }
    DeadLetterTarget::Name {
        name: redrive_target.map_or_else(|| own_dead_letter_queue(owner), str::to_string),
        create: redrive_target.is_none(),
    }
}

/// The name of the DLQ that is `owner`'s own, not shared: `<owner>-dlq`, or a FIFO
/// owner's `<base>-dlq.fifo`.
pub fn own_dead_letter_queue(owner: &str) -> String {
    match owner.strip_suffix(".fifo") {
        Some(base) => format!("{base}-dlq.fifo"),
        None => format!("{owner}-dlq"),
    }
}

/// The queue's name: as given, or the last segment of its URL.
pub fn queue_name(queue: &SqsQueue) -> String {
    match (&queue.queue_name, &queue.queue_url) {
        (Some(name), _) => name.clone(),
        (None, Some(url)) => url.rsplit('/').next().unwrap_or(url).to_string(),
        (None, None) => String::new(),
    }
}

/// The table a stream belongs to, from the stream's ARN
/// (`arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`).
pub fn table_of_stream(arn: &str) -> String {
    arn.split('/').nth(1).unwrap_or_default().to_string()
}

/// The URL of the binding's queue: as given, or looked up by name.
pub async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &SqsQueue,
) -> Result<String, ProvisionError> {
    let Some(url) = &queue.queue_url else {
        let name = queue_name(queue);
        return provision::url_of(sqs, &name)
            .await
            .map_err(|e| ProvisionError {
                what: format!("queue {name:?}"),
                ..e
            });
    };
    Ok(url.clone())
}

/// The name of the queue a queue's redrive policy sends to, if it has one.
async fn redrive_target(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Option<String>, ProvisionError> {
    let redrive = provision::attribute(sqs, url, Attr::RedrivePolicy).await?;
    Ok(redrive
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
        .and_then(|r| {
            let arn = r["deadLetterTargetArn"].as_str()?;
            arn.rsplit(':').next().map(str::to_string)
        }))
}

/// The URL of an SQS source's dead-letter queue, which must exist.
pub async fn queue_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    queue: &SqsQueue,
    policy: &DeadLetterPolicy,
) -> Result<String, ProvisionError> {
    let redrive = redrive_target(sqs, url).await?;
    let target = dead_letter_target(&queue_name(queue), redrive.as_deref(), policy);
    find(sqs, target, policy).await
}

/// The URL of a stream's dead-letter queue (a stream has no queue of its own, so
/// it is named after its table), which must exist.
pub async fn stream_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    policy: &DeadLetterPolicy,
) -> Result<String, ProvisionError> {
    find(sqs, dead_letter_target(table, None, policy), policy).await
}

async fn find(
    sqs: &aws_sdk_sqs::Client,
    target: DeadLetterTarget,
    policy: &DeadLetterPolicy,
) -> Result<String, ProvisionError> {
    match target {
        DeadLetterTarget::Url(url) => Ok(url),
        DeadLetterTarget::Name { name, .. } => {
            provision::url_of(sqs, &name)
                .await
                .map_err(|e| ProvisionError {
                    what: format!(
                        "dead-letter queue {name:?} of DeadLetterPolicy {:?} not found",
                        policy.metadata.name.as_deref().unwrap_or_default()
                    ),
                    ..e
                })
        }
    }
}

/// A stream and the table it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub arn: String,
    pub table: String,
}

/// The binding's stream: by ARN as given, else its table's latest stream. The table
/// must exist: with `create: true` the operator (or `eventpipe dev`) creates it, tagged
/// as the binding's, and a table the worker made would belong to no binding.
pub async fn stream(
    ddb: &aws_sdk_dynamodb::Client,
    stream: &DynamoDbStream,
) -> Result<Stream, ProvisionError> {
    if let Some(arn) = &stream.stream_arn {
        return Ok(Stream {
            arn: arn.clone(),
            table: table_of_stream(arn),
        });
    }
    let table = stream.table_name.clone().unwrap_or_default();
    match provision::latest_stream(ddb, &table).await? {
        Some(arn) => Ok(Stream { arn, table }),
        None => Err(ProvisionError {
            what: format!("table {table:?} has no stream"),
            message: "enable one (view type NEW_AND_OLD_IMAGES)".into(),
            kind: FailureKind::StreamNotEnabled,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventpipe_crds::{DeadLetterPolicySpec, DeadLetterQueue};

    fn policy(dlq: Option<DeadLetterQueue>) -> DeadLetterPolicy {
        let mut spec: DeadLetterPolicySpec = serde_json::from_value(serde_json::json!({})).unwrap();
        spec.dead_letter_queue = dlq;
        DeadLetterPolicy::new("p", spec)
    }

    fn name(name: &str, create: bool) -> DeadLetterTarget {
        DeadLetterTarget::Name {
            name: name.into(),
            create,
        }
    }

    #[test]
    fn a_dead_letter_queue_is_named_after_its_owner_by_default() {
        let p = policy(None);
        assert_eq!(
            dead_letter_target("orders", None, &p),
            name("orders-dlq", true)
        );
        assert_eq!(
            dead_letter_target("orders.fifo", None, &p),
            name("orders-dlq.fifo", true)
        );
    }

    #[test]
    fn an_existing_redrive_policy_comes_before_the_default_name() {
        let p = policy(None);
        assert_eq!(
            dead_letter_target("orders", Some("legacy-dlq"), &p),
            name("legacy-dlq", false)
        );
    }

    #[test]
    fn the_queue_a_policy_names_comes_first() {
        let named = DeadLetterQueue {
            queue_name: Some("shared-dlq".into()),
            queue_url: None,
            create: false,
        };
        assert_eq!(
            dead_letter_target("orders", Some("legacy-dlq"), &policy(Some(named))),
            name("shared-dlq", false)
        );
        let by_url = DeadLetterQueue {
            queue_name: None,
            queue_url: Some("http://x/1/d".into()),
            create: false,
        };
        assert_eq!(
            dead_letter_target("orders", Some("legacy-dlq"), &policy(Some(by_url))),
            DeadLetterTarget::Url("http://x/1/d".into())
        );
    }

    #[test]
    fn names_come_from_the_binding_or_the_url() {
        let q: SqsQueue =
            serde_json::from_value(serde_json::json!({"queueUrl": "http://h/000/orders.fifo"}))
                .unwrap();
        assert_eq!(queue_name(&q), "orders.fifo");
        assert_eq!(
            table_of_stream("arn:aws:dynamodb:us-east-1:000:table/orders/stream/2026-01-01"),
            "orders"
        );
    }
}
