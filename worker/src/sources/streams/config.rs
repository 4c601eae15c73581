//! What a stream source is built from: the stream resolved (its table, which the
//! operator or `eventpipe dev` creates for a binding that says so, must exist), the
//! checkpoint table created when missing, the dead-letter queue of its policy found,
//! and `maxRetryAttempts` applied to the policy records are judged by.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use eventpipe_core::{checkpoints, provision, resolve};
use eventpipe_crds::{DeadLetterPolicySpec, DynamoDbStream};

use super::lease::LeaseTable;
use super::{StreamOptions, StreamSource};
use crate::clients::Clients;
use crate::handler::Handler;
use crate::metrics::Source as Labels;
use crate::publish::Publisher;
use crate::sources::Binding;

/// Everything a DynamoDB stream source is built from.
pub struct StreamConfig {
    pub labels: Labels,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub stream_arn: String,
    pub table: String,
    pub spec: DynamoDbStream,
    pub policy: Option<DeadLetterPolicySpec>,
    pub dlq: Option<Publisher>,
    pub handler: Arc<Handler>,
    pub leases: LeaseTable,
    pub lease_duration: Duration,
}

/// The clients a stream source reads with.
struct StreamClients {
    ddb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
}

impl StreamConfig {
    /// Resolves the binding's stream, checkpoint table and dead-letter queue.
    pub async fn resolve(
        source: Binding<'_>,
        stream: &DynamoDbStream,
        options: &StreamOptions,
        clients: &mut Clients<'_>,
    ) -> anyhow::Result<Self> {
        check_window(stream)?;
        let (binding, labels) = (source.binding, source.labels);
        let StreamClients { ddb, streams } = stream_clients(&clients.config(binding).await?);
        let resolve::Stream { arn, table } = resolve::stream(&ddb, stream).await?;
        check_stream(&streams, &arn).await?;
        provision::ensure_checkpoint_table(&ddb, &stream.checkpoint_table)
            .await
            .context("checkpoint table")?;
        let policy = source.pipeline.policy_of(binding);
        let dlq = match policy {
            Some(policy) => {
                let sqs = clients.sqs(binding).await?;
                let url = resolve::stream_dead_letters(&sqs, &table, policy).await?;
                Some(Publisher::new(sqs, url))
            }
            None => None,
        };
        let consumer = checkpoints::consumer(&labels.pipeline, &labels.source, &arn);
        let leases = LeaseTable::new(ddb, &stream.checkpoint_table, &consumer, &options.worker_id);
        Ok(Self {
            labels,
            streams,
            stream_arn: arn,
            table,
            spec: stream.clone(),
            policy: attempts(policy.map(|p| &p.spec), stream.max_retry_attempts),
            dlq,
            handler: source.handler,
            leases,
            lease_duration: options.lease_duration,
        })
    }

    pub fn build(self) -> StreamSource {
        StreamSource {
            labels: self.labels,
            streams: self.streams,
            stream_arn: self.stream_arn,
            table: self.table,
            spec: self.spec,
            policy: self.policy,
            dlq: self.dlq,
            handler: self.handler,
            leases: self.leases,
            lease_duration: self.lease_duration,
            ages: Mutex::default(),
        }
    }
}

/// The longest `batchWindow`, Lambda's.
const MAX_WINDOW: Duration = Duration::from_secs(300);

fn check_window(stream: &DynamoDbStream) -> anyhow::Result<()> {
    match &stream.batch_window {
        Some(w) if w.as_std() > MAX_WINDOW => anyhow::bail!(
            "dynamodbStream.batchWindow ({}) must be at most 5m",
            w.as_str()
        ),
        _ => Ok(()),
    }
}

/// The policy records are judged by: with `maxRetryAttempts`, a record is given up
/// after that many retries (deliveries: one more) whatever the policy's
/// `maxReceiveCount`; without a policy it is then discarded, as there is no
/// dead-letter queue.
fn attempts(
    policy: Option<&DeadLetterPolicySpec>,
    retries: Option<i32>,
) -> Option<DeadLetterPolicySpec> {
    let Some(retries) = retries else {
        return policy.cloned();
    };
    let mut policy = match policy {
        Some(p) => p.clone(),
        None => serde_json::from_value(serde_json::json!({})).expect("the defaults deserialize"),
    };
    policy.max_receive_count = retries.saturating_add(1);
    Some(policy)
}

/// Calls to the stream and checkpoint table never hang a shard for long.
fn stream_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

fn stream_clients(config: &aws_config::SdkConfig) -> StreamClients {
    StreamClients {
        ddb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .timeout_config(stream_timeouts())
                .build(),
        ),
        streams: aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(config)
                .timeout_config(stream_timeouts())
                .build(),
        ),
    }
}

/// Fails clearly when the stream cannot be read.
async fn check_stream(streams: &aws_sdk_dynamodbstreams::Client, arn: &str) -> anyhow::Result<()> {
    streams
        .describe_stream()
        .stream_arn(arn)
        .limit(1)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "stream {arn}: {}",
                aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: i32) -> DeadLetterPolicySpec {
        serde_json::from_value(serde_json::json!({"maxReceiveCount": max})).unwrap()
    }

    #[test]
    fn max_retry_attempts_overrides_the_policys_receive_count() {
        assert_eq!(attempts(Some(&policy(3)), None), Some(policy(3)));
        assert_eq!(attempts(Some(&policy(3)), Some(0)), Some(policy(1)));
        assert_eq!(attempts(Some(&policy(3)), Some(9)), Some(policy(10)));
        assert_eq!(attempts(None, None), None, "retried until it works");
        let alone = attempts(None, Some(2)).unwrap();
        assert_eq!(alone.max_receive_count, 3);
        assert!(alone.dead_letter_queue.is_none());
    }

    #[test]
    fn a_batch_window_longer_than_five_minutes_is_refused() {
        let stream = |w: &str| -> DynamoDbStream {
            serde_json::from_value(serde_json::json!({"tableName": "t", "batchWindow": w})).unwrap()
        };
        assert!(check_window(&stream("5m")).is_ok());
        let err = check_window(&stream("301s")).unwrap_err().to_string();
        assert_eq!(err, "dynamodbStream.batchWindow (301s) must be at most 5m");
    }
}
