//! Assembling a worker from resolved pipelines: AWS clients per binding, the
//! processor, filter, idempotency store and destinations, and one consumer per
//! source; then running them until shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_core::{aws, checkpoints, provision};
use eventpipe_crds::{
    DeadLetterPolicy, DynamoDbStream, ObjectRef, Ordering, Pipeline, QueueBinding,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::filter::Pattern;
use crate::handler::{Handler, OutcomeTarget};
use crate::idempotency::{self, Idempotency};
use crate::metrics::{Metrics, Source};
use crate::processor::{DynamoDbProcessor, HttpProcessor, Processor, SqsProcessor};
use crate::publish::Publisher;
use crate::sqs::SqsSource;
use crate::streams::lease::LeaseTable;
use crate::streams::{StreamOptions, StreamSource};

pub struct Options {
    /// Where mounted Secrets live (`<dir>/<name>/<key>`).
    pub secrets_dir: PathBuf,
    /// How long in-flight deliveries may run on after a shutdown signal.
    pub grace: Duration,
    /// AWS configuration for what no binding describes (processor and idempotency tables).
    pub aws: SdkConfig,
    /// Identity and lease timing for sharing DynamoDB streams with other replicas.
    pub streams: StreamOptions,
}

/// Everything one worker process consumes.
pub struct Worker {
    sources: Vec<(Arc<SqsSource>, Arc<Semaphore>)>,
    streams: Vec<(Arc<StreamSource>, Arc<Semaphore>)>,
    grace: Duration,
}

impl Worker {
    /// Builds consumers for every source of `pipelines` (SQS queues and DynamoDB
    /// streams), failing with a clear message when a queue, table, stream or
    /// dead-letter queue cannot be reached.
    pub async fn build(
        pipelines: &[Pipeline],
        options: &Options,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let mut sources = vec![];
        let mut streams = vec![];
        let mut clients = Clients::new(options);
        for p in pipelines {
            let name = p.name();
            let handler = Arc::new(
                handler(p, options, metrics, &mut clients)
                    .await
                    .with_context(|| format!("EventPipeline {name:?}"))?,
            );
            let concurrency = p.pipeline.spec.delivery.concurrency.max(1) as usize;
            let permits = Arc::new(Semaphore::new(concurrency));
            for s in &p.pipeline.spec.sources {
                let binding = p.binding(&s.queue_binding_ref);
                let what = format!(
                    "EventPipeline {name:?}: source QueueBinding {:?}",
                    s.queue_binding_ref.name
                );
                let labels = Source {
                    pipeline: name.clone(),
                    source: s.queue_binding_ref.name.clone(),
                };
                if let Some(stream) = &binding.spec.dynamodb_stream {
                    let source =
                        stream_source(p, binding, stream, labels, &handler, options, &mut clients)
                            .await
                            .with_context(|| what.clone())?;
                    streams.push((Arc::new(source), permits.clone()));
                    continue;
                }
                let Some(queue) = &binding.spec.sqs else {
                    continue;
                };
                let sqs = clients.sqs(binding).await?;
                let url = aws::queue_url(&sqs, queue)
                    .await
                    .with_context(|| what.clone())?;
                let policy = p.policy_of(binding);
                let dlq_url = match policy {
                    Some(policy) => Some(
                        dead_letter_queue(&sqs, &url, queue, policy)
                            .await
                            .with_context(|| what.clone())?,
                    ),
                    None => None,
                };
                let ordered = queue.fifo && p.pipeline.spec.delivery.ordering == Ordering::PerGroup;
                let source = SqsSource::new(
                    labels,
                    sqs,
                    url,
                    queue.clone(),
                    policy.map(|p| p.spec.clone()),
                    dlq_url,
                    ordered,
                    handler.clone(),
                    concurrency,
                );
                sources.push((Arc::new(source), permits.clone()));
            }
        }
        if sources.is_empty() && streams.is_empty() {
            bail!(
                "no SQS queue or DynamoDB stream to consume in {}",
                pipelines
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(Self {
            sources,
            streams,
            grace: options.grace,
        })
    }

    /// Consumes until `stop` is cancelled, then drains within the grace period.
    pub async fn run(self, stop: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for (source, permits) in self.sources {
            tasks.spawn(source.run(permits, stop.clone(), self.grace));
        }
        for (source, permits) in self.streams {
            tasks.spawn(source.run(permits, stop.clone(), self.grace));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Queue URLs consumed, for start-up logs.
    pub fn queues(&self) -> Vec<String> {
        self.sources.iter().map(|(s, _)| s.url.clone()).collect()
    }

    /// Stream ARNs consumed, for start-up logs.
    pub fn streams(&self) -> Vec<String> {
        self.streams
            .iter()
            .map(|(s, _)| s.stream_arn.clone())
            .collect()
    }
}

/// The DLQ of a source: the policy's queue, else the queue's redrive target, else
/// `<queue>-dlq`.
pub(crate) async fn dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    queue: &eventpipe_crds::SqsQueue,
    policy: &eventpipe_crds::DeadLetterPolicy,
) -> anyhow::Result<String> {
    if let Some(url) = policy.spec.dead_letter_queue_url() {
        return Ok(url);
    }
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::RedrivePolicy)
        .send()
        .await?;
    let redrive = attrs
        .attributes
        .and_then(|mut a| a.remove(&Attr::RedrivePolicy));
    let target = redrive
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
        .and_then(|r| {
            r["deadLetterTargetArn"]
                .as_str()
                .and_then(|arn| arn.rsplit(':').next())
                .map(str::to_string)
        });
    let own = url.rsplit('/').next().unwrap_or_default();
    let name = target.or_else(|| {
        provision::dead_letter_queue_name(queue.queue_name.as_deref().unwrap_or(own), policy)
    });
    let name = name.unwrap_or_default();
    provision::url_of(sqs, &name).await.map_err(|e| {
        anyhow::anyhow!(
            "dead-letter queue {name:?} of DeadLetterPolicy {:?} not found: {}",
            policy.metadata.name.as_deref().unwrap_or_default(),
            e.message
        )
    })
}

/// Calls to the stream and checkpoint table never hang a shard for long.
fn stream_timeouts() -> aws_sdk_dynamodb::config::timeout::TimeoutConfig {
    aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// A consumer of a `dynamodbStream` source: the stream resolved (the table created
/// when the binding says so), the checkpoint table created when missing, and the
/// dead-letter queue of its policy found.
async fn stream_source(
    p: &Pipeline,
    binding: &QueueBinding,
    stream: &DynamoDbStream,
    labels: Source,
    handler: &Arc<Handler>,
    options: &Options,
    clients: &mut Clients<'_>,
) -> anyhow::Result<StreamSource> {
    let config = aws::config_for(&binding.spec, &options.secrets_dir).await?;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .timeout_config(stream_timeouts())
            .build(),
    );
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::config::Builder::from(&config)
            .timeout_config(stream_timeouts())
            .build(),
    );
    let (arn, table) = stream_of(&ddb, stream).await?;
    streams
        .describe_stream()
        .stream_arn(&arn)
        .limit(1)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "stream {arn}: {}",
                aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
            )
        })?;
    provision::ensure_table(&ddb, &stream.checkpoint_table, "id", false)
        .await
        .context("checkpoint table")?;
    let policy = p.policy_of(binding);
    let dlq = match policy {
        Some(policy) => {
            let sqs = clients.sqs(binding).await?;
            Some(stream_dead_letter_queue(&sqs, &table, policy).await?)
        }
        None => None,
    };
    let consumer = checkpoints::consumer(&labels.pipeline, &labels.source, &arn);
    let leases = LeaseTable::new(
        ddb,
        &stream.checkpoint_table,
        &consumer,
        &options.streams.worker_id,
    );
    Ok(StreamSource::new(
        labels,
        streams,
        arn,
        table,
        stream.clone(),
        policy.map(|p| p.spec.clone()),
        dlq,
        handler.clone(),
        leases,
        options.streams.lease_duration,
    ))
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

/// The DLQ of a stream source: the policy's queue, else `<table>-dlq`.
async fn stream_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    policy: &DeadLetterPolicy,
) -> anyhow::Result<Publisher> {
    let url = match policy.spec.dead_letter_queue_url() {
        Some(url) => url,
        None => {
            let name = provision::dead_letter_queue_name(table, policy).unwrap_or_default();
            provision::url_of(sqs, &name).await.map_err(|e| {
                anyhow::anyhow!(
                    "dead-letter queue {name:?} of DeadLetterPolicy {:?} not found: {}",
                    policy.metadata.name.as_deref().unwrap_or_default(),
                    e.message
                )
            })?
        }
    };
    let fifo = url.ends_with(".fifo");
    Ok(Publisher::new(sqs.clone(), url, fifo))
}

async fn handler(
    p: &Pipeline,
    options: &Options,
    metrics: &Metrics,
    clients: &mut Clients<'_>,
) -> anyhow::Result<Handler> {
    let spec = &p.pipeline.spec;
    let filter = spec
        .filter
        .as_ref()
        .map(|f| Pattern::compile(&f.0))
        .transpose()?;
    let ddb = aws_sdk_dynamodb::Client::new(&options.aws);
    let processor: Box<dyn Processor> = if let Some(http) = &spec.processor.http {
        Box::new(HttpProcessor::new(
            &http.url,
            http.timeout.as_std(),
            &http.headers,
        )?)
    } else if let Some(c) = &spec.processor.container {
        let url = format!("http://127.0.0.1:{}{}", c.port, c.path);
        Box::new(HttpProcessor::new(
            &url,
            c.timeout.as_std(),
            &BTreeMap::new(),
        )?)
    } else if let Some(d) = &spec.processor.dynamodb {
        if d.create {
            provision::ensure_table(&ddb, &d.table_name, "id", d.aggregate.is_none()).await?;
        }
        Box::new(DynamoDbProcessor::new(ddb.clone(), d.clone()))
    } else if let Some(s) = &spec.processor.sqs {
        Box::new(SqsProcessor::new(
            clients.publisher(p, &s.queue_binding_ref).await?,
        ))
    } else {
        bail!("spec.processor names no processor");
    };
    let timeout = spec.delivery.timeout.as_std();
    let idempotency = match &spec.delivery.idempotency {
        Some(i) => {
            provision::ensure_table(&ddb, &i.table_name, "id", false).await?;
            provision::ensure_ttl(&ddb, &i.table_name, idempotency::TTL_ATTRIBUTE).await?;
            let claim_for = timeout + Duration::from_secs(5);
            Some(Idempotency::new(
                ddb.clone(),
                i.table_name.clone(),
                i.ttl.as_std(),
                claim_for,
            ))
        }
        None => None,
    };
    let mut handler = Handler {
        pipeline: p.name(),
        filter,
        processor,
        idempotency,
        timeout,
        on_success: None,
        on_failure: None,
        reply: None,
        metrics: metrics.clone(),
    };
    if let Some(d) = &spec.destinations {
        for (target, slot) in [
            (&d.on_success, &mut handler.on_success),
            (&d.on_failure, &mut handler.on_failure),
        ] {
            if let Some(t) = target {
                let publisher = clients.publisher(p, &t.queue_binding_ref).await?;
                *slot = Some(OutcomeTarget {
                    publisher,
                    event_type: t.event_type.clone(),
                });
            }
        }
        if let Some(r) = &d.reply {
            handler.reply = Some(clients.publisher(p, &r.queue_binding_ref).await?);
        }
    }
    Ok(handler)
}

/// SQS clients per binding, built once.
struct Clients<'a> {
    options: &'a Options,
    sqs: BTreeMap<String, aws_sdk_sqs::Client>,
}

impl<'a> Clients<'a> {
    fn new(options: &'a Options) -> Self {
        Self {
            options,
            sqs: BTreeMap::new(),
        }
    }

    async fn sqs(&mut self, binding: &QueueBinding) -> anyhow::Result<aws_sdk_sqs::Client> {
        let name = binding.metadata.name.clone().unwrap_or_default();
        if let Some(c) = self.sqs.get(&name) {
            return Ok(c.clone());
        }
        let config = aws::config_for(&binding.spec, &self.options.secrets_dir).await?;
        let client = aws_sdk_sqs::Client::new(&config);
        self.sqs.insert(name, client.clone());
        Ok(client)
    }

    async fn publisher(&mut self, p: &Pipeline, r: &ObjectRef) -> anyhow::Result<Publisher> {
        let binding = p.binding(r);
        let Some(queue) = &binding.spec.sqs else {
            bail!(
                "QueueBinding {:?} is not an SQS queue, so events cannot be sent to it",
                r.name
            );
        };
        let sqs = self.sqs(binding).await?;
        let url = aws::queue_url(&sqs, queue)
            .await
            .with_context(|| format!("QueueBinding {:?}", r.name))?;
        Ok(Publisher::new(sqs, url, queue.fifo))
    }
}
