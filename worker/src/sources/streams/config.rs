//! What a stream source is built from: the stream resolved (its table created when
//! the binding says so), the checkpoint table created when missing, and the
//! dead-letter queue of its policy found.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use eventpipe_core::{checkpoints, provision};
use eventpipe_crds::{DeadLetterPolicySpec, DynamoDbStream};

use super::lease::LeaseTable;
use super::{StreamOptions, StreamSource};
use crate::clients::Clients;
use crate::dlq::stream_dead_letter_queue;
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
        let (binding, labels) = (source.binding, source.labels);
        let StreamClients { ddb, streams } = stream_clients(&clients.config(binding).await?);
        let (arn, table) = stream_of(&ddb, stream).await?;
        check_stream(&streams, &arn).await?;
        provision::ensure_table(&ddb, &stream.checkpoint_table, "id", false)
            .await
            .context("checkpoint table")?;
        let policy = source.pipeline.policy_of(binding);
        let dlq = match policy {
            Some(policy) => {
                let sqs = clients.sqs(binding).await?;
                let url = stream_dead_letter_queue(&sqs, &table, policy).await?;
                let fifo = url.ends_with(".fifo");
                Some(Publisher::new(sqs, url, fifo))
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
            policy: policy.map(|p| p.spec.clone()),
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

/// The stream's ARN and its table's name: as the binding gives them, else the
/// table's latest stream.
async fn stream_of(
    ddb: &aws_sdk_dynamodb::Client,
    stream: &DynamoDbStream,
) -> anyhow::Result<(String, String)> {
    if let Some(arn) = &stream.stream_arn {
        // arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
        let table = arn.split('/').nth(1).unwrap_or_default().to_string();
        return Ok((arn.clone(), table));
    }
    let table = stream.table_name.clone().unwrap_or_default();
    let arn = if stream.create {
        provision::ensure_table(ddb, &table, "id", true).await?
    } else {
        let out = ddb
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "table {table:?}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        out.table.and_then(|t| t.latest_stream_arn)
    };
    let arn = arn.ok_or_else(|| {
        anyhow::anyhow!("table {table:?} has no stream: enable one (view type NEW_AND_OLD_IMAGES)")
    })?;
    Ok((arn, table))
}
