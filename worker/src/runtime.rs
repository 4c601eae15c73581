//! Assembling a worker from resolved pipelines (a handler per pipeline, one source
//! per binding it consumes) and running every source until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use eventpipe_crds::Pipeline;
use tokio_util::sync::CancellationToken;

use crate::clients::Clients;
use crate::gate::Gate;
use crate::handler::Handler;
use crate::metrics::{Metrics, Source as Labels};
use crate::sources::streams::StreamOptions;
use crate::sources::{self, Binding, Kind, Source};

pub struct Options {
    /// Where mounted Secrets live (`<dir>/<name>/<key>`).
    pub secrets_dir: PathBuf,
    /// How long in-flight deliveries may run on after a shutdown signal.
    pub grace: Duration,
    /// AWS configuration for what no binding describes (processor and idempotency tables).
    pub aws: SdkConfig,
    /// Identity and lease timing for sharing DynamoDB streams with other replicas.
    pub streams: StreamOptions,
    /// Where `push` processors deliver instead of their ingress's replicas (local
    /// mode: the ingress's ops address in process).
    pub push_to: Option<SocketAddr>,
}

/// Everything one worker process consumes: each source with the delivery permits of
/// its pipeline, which all sources of a pipeline share.
pub struct Worker {
    sources: Vec<(Arc<dyn Source>, Arc<Gate>)>,
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
        let mut clients = Clients::new(&options.secrets_dir).with_push_to(options.push_to);
        for p in pipelines {
            sources.extend(pipeline_sources(p, options, metrics, &mut clients).await?);
        }
        if sources.is_empty() {
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
            grace: options.grace,
        })
    }

    /// Consumes until `stop` is cancelled, then drains within the grace period.
    pub async fn run(self, stop: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for (source, permits) in self.sources {
            tasks.spawn(source.run(permits, stop.clone(), self.grace));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Queue URLs consumed, for start-up logs.
    pub fn queues(&self) -> Vec<String> {
        self.described(Kind::Queue)
    }

    /// Stream ARNs consumed, for start-up logs.
    pub fn streams(&self) -> Vec<String> {
        self.described(Kind::Stream)
    }

    fn described(&self, kind: Kind) -> Vec<String> {
        self.sources
            .iter()
            .filter(|(s, _)| s.kind() == kind)
            .map(|(s, _)| s.describe().to_string())
            .collect()
    }
}

/// The sources of one pipeline, sharing its handler and delivery permits.
async fn pipeline_sources(
    p: &Pipeline,
    options: &Options,
    metrics: &Metrics,
    clients: &mut Clients<'_>,
) -> anyhow::Result<Vec<(Arc<dyn Source>, Arc<Gate>)>> {
    let name = p.name();
    let handler = Handler::build(p, &options.aws, metrics, clients)
        .await
        .with_context(|| format!("EventPipeline {name:?}"))?;
    let handler = Arc::new(handler);
    let concurrency = p.pipeline.spec.delivery.concurrency.max(1) as usize;
    let permits = Gate::new(&name, concurrency, metrics);
    let mut built = vec![];
    for s in &p.pipeline.spec.sources {
        let binding = Binding {
            pipeline: p,
            binding: p.binding(&s.queue_binding_ref),
            labels: Labels {
                pipeline: name.clone(),
                source: s.queue_binding_ref.name.clone(),
            },
            handler: handler.clone(),
            concurrency,
        };
        let source = sources::build(binding, &options.streams, clients)
            .await
            .with_context(|| {
                format!(
                    "EventPipeline {name:?}: source QueueBinding {:?}",
                    s.queue_binding_ref.name
                )
            })?;
        built.extend(source.map(|source| (source, permits.clone())));
    }
    Ok(built)
}
