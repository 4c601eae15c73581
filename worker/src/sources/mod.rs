//! Sources: what a worker consumes. Each kind is built from its own config struct
//! (everything resolved: clients, URL or ARN, policy, dead-letter queue, handler) and
//! runs behind [`Source`] until shutdown.

pub mod sqs;
pub mod streams;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use eventpipe_crds::{Pipeline, QueueBinding};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::clients::Clients;
use crate::gate::Gate;
use crate::handler::Handler;
use crate::metrics::Source as Labels;

use self::sqs::SqsConfig;
use self::streams::{StreamConfig, StreamOptions};

/// What a source reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Queue,
    Stream,
}

/// A running consumer of one source of a pipeline.
pub trait Source: Send + Sync {
    /// Consumes until `stop`, taking a permit of the pipeline's `permits` per event in
    /// delivery (and every try through its circuit), then lets in-flight deliveries
    /// finish within `grace`.
    fn run(
        self: Arc<Self>,
        permits: Arc<Gate>,
        stop: CancellationToken,
        grace: Duration,
    ) -> BoxFuture<'static, ()>;

    fn kind(&self) -> Kind;

    /// The queue URL or stream ARN, for start-up logs.
    fn describe(&self) -> &str;
}

/// One source of a pipeline, before its binding is resolved.
pub struct Binding<'a> {
    pub pipeline: &'a Pipeline,
    pub binding: &'a QueueBinding,
    pub labels: Labels,
    pub handler: Arc<Handler>,
    /// The pipeline's delivery concurrency.
    pub concurrency: usize,
}

/// The source a binding describes (a DynamoDB stream or an SQS queue); `None` for a
/// binding that is neither.
pub async fn build(
    source: Binding<'_>,
    streams: &StreamOptions,
    clients: &mut Clients<'_>,
) -> anyhow::Result<Option<Arc<dyn Source>>> {
    let spec = &source.binding.spec;
    if let Some(stream) = &spec.dynamodb_stream {
        let config = StreamConfig::resolve(source, stream, streams, clients).await?;
        return Ok(Some(Arc::new(config.build())));
    }
    if let Some(queue) = &spec.sqs {
        let config = SqsConfig::resolve(source, queue, clients).await?;
        return Ok(Some(Arc::new(config.build())));
    }
    Ok(None)
}

/// Locks `m`, carrying on after a panic elsewhere: the maps behind these locks hold
/// no invariant that a half-done update could break.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
