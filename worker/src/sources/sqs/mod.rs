//! The SQS source: long polling with backpressure (never more messages received than
//! there is capacity to start), per-message acknowledgement in batched deletes,
//! retries scheduled through the visibility timeout, dead-lettering with the reason
//! attached, heartbeats for slow deliveries, in-order delivery per FIFO message
//! group, and a graceful shutdown that hands unfinished messages back at once.

mod ack;
mod dead_letter;
mod lanes;
mod poll;
mod process;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gate::Gate;
use aws_sdk_sqs::types::Message;
use eventpipe_core::envelope::Decoded;
use eventpipe_core::resolve;
use eventpipe_crds::{DeadLetterPolicySpec, Ordering, SqsQueue};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::lanes::Lanes;
use self::wire::Wire;
use super::{Binding, Kind, Source};
use crate::clients::Clients;
use crate::handler::Handler;
use crate::metrics::Source as Labels;

/// A received message and the event it carries, read once.
struct Received {
    message: Message,
    decoded: Decoded,
}

/// What the tasks of a running source share.
struct Run {
    /// Receipt handles to delete.
    acks: mpsc::UnboundedSender<String>,
    /// The grace period is over: hand back whatever is unfinished.
    release: CancellationToken,
    /// Shutting down: receive nothing more, hand back what is held.
    stop: CancellationToken,
    /// The pipeline's delivery capacity and circuit.
    gate: Arc<Gate>,
}

/// A message being worked on.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// When it was last made invisible.
    at: Instant,
    /// Held for a throttling processor: its visibility is extended even without
    /// `heartbeat`, since holding it must not cost it a receive.
    held: bool,
}

impl InFlight {
    fn new() -> Self {
        Self {
            at: Instant::now(),
            held: false,
        }
    }
}

/// Everything an SQS source is built from.
pub struct SqsConfig {
    pub labels: Labels,
    pub sqs: aws_sdk_sqs::Client,
    /// Receives and deletes, the calls made for every few messages.
    pub wire: Arc<Wire>,
    pub url: String,
    pub queue: SqsQueue,
    pub policy: Option<DeadLetterPolicySpec>,
    pub dlq_url: Option<String>,
    /// Deliver each FIFO message group in order, one message at a time.
    pub ordered: bool,
    pub handler: Arc<Handler>,
    /// The pipeline's delivery concurrency, which sets the number of receive loops.
    pub concurrency: usize,
}

impl SqsConfig {
    /// The queue's URL and its dead-letter queue, looked up.
    pub async fn resolve(
        source: Binding<'_>,
        queue: &SqsQueue,
        clients: &mut Clients<'_>,
    ) -> anyhow::Result<Self> {
        let sqs = clients.sqs(source.binding).await?;
        let wire = Wire::new(&clients.config(source.binding).await?).await?;
        let url = resolve::queue_url(&sqs, queue).await?;
        let policy = source.pipeline.policy_of(source.binding);
        let dlq_url = match policy {
            Some(policy) => Some(resolve::queue_dead_letters(&sqs, &url, queue, policy).await?),
            None => None,
        };
        let ordering = source.pipeline.pipeline.spec.delivery.ordering;
        Ok(Self {
            labels: source.labels,
            sqs,
            wire: Arc::new(wire),
            url,
            queue: queue.clone(),
            policy: policy.map(|p| p.spec.clone()),
            dlq_url,
            ordered: queue.fifo && ordering == Ordering::PerGroup,
            handler: source.handler,
            concurrency: source.concurrency,
        })
    }

    pub fn build(self) -> SqsSource {
        let pollers = poll::pollers(self.concurrency, self.queue.batch_size.max(1) as usize);
        SqsSource {
            labels: self.labels,
            sqs: self.sqs,
            wire: self.wire,
            url: self.url,
            queue: self.queue,
            policy: self.policy,
            dlq_url: self.dlq_url,
            ordered: self.ordered,
            handler: self.handler,
            pollers,
            inflight: Mutex::default(),
            lanes: Lanes::default(),
        }
    }
}

pub struct SqsSource {
    labels: Labels,
    sqs: aws_sdk_sqs::Client,
    wire: Arc<Wire>,
    url: String,
    queue: SqsQueue,
    policy: Option<DeadLetterPolicySpec>,
    dlq_url: Option<String>,
    ordered: bool,
    handler: Arc<Handler>,
    /// Receive loops: fixed from the pipeline's concurrency, not from what the shared
    /// semaphore happens to hold when the source starts.
    pollers: usize,
    /// Receipt handles of messages being worked on.
    inflight: Mutex<HashMap<String, InFlight>>,
    /// A lane per FIFO message group in flight, so a group's messages never overlap.
    lanes: Lanes,
}

impl Source for SqsSource {
    fn run(
        self: Arc<Self>,
        permits: Arc<Gate>,
        stop: CancellationToken,
        grace: Duration,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.consume(permits, stop, grace))
    }

    fn kind(&self) -> Kind {
        Kind::Queue
    }

    fn describe(&self) -> &str {
        &self.url
    }
}

impl SqsSource {
    fn queue_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    fn visibility(&self) -> Duration {
        self.queue.visibility_timeout.as_std()
    }

    /// Consumes until `stop`, then lets in-flight deliveries finish within `grace`
    /// and hands back whatever is left.
    async fn consume(
        self: Arc<Self>,
        permits: Arc<Gate>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let (acks, acker) = ack::spawn_acker(self.wire.clone(), self.url.clone());
        let release = CancellationToken::new();
        let run = Arc::new(Run {
            acks,
            release: release.clone(),
            stop: stop.clone(),
            gate: permits,
        });
        let tasks = TaskTracker::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat(release.clone()));
        let depth = tokio::spawn(self.clone().report_depth(release.clone()));
        let batch = self.queue.batch_size.max(1) as usize;
        futures::future::join_all((0..self.pollers).map(|_| self.poll(&run, batch, &tasks))).await;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::info!(
                queue = self.queue_name(),
                "grace period over; releasing unfinished messages"
            );
            release.cancel();
            tasks.wait().await;
        }
        release.cancel();
        drop(run);
        let _ = acker.await;
        let _ = heartbeat.await;
        let _ = depth.await;
    }

    /// Keeps `eventpipe_queue_depth` and `eventpipe_dlq_depth` current (visible plus in
    /// flight), every 15 seconds.
    async fn report_depth(self: Arc<Self>, done: CancellationToken) {
        let metrics = &self.handler.metrics;
        loop {
            if let Some(n) = queue_depth(&self.sqs, &self.url).await {
                metrics.queue_depth.get_or_create(&self.labels).set(n);
            }
            if let Some(dlq) = &self.dlq_url
                && let Some(n) = queue_depth(&self.sqs, dlq).await
            {
                metrics.dlq_depth.get_or_create(&self.labels).set(n);
            }
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(15)) => {}, _ = done.cancelled() => return }
        }
    }
}

/// Approximate messages visible and in flight.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<i64> {
    eventpipe_core::provision::queue_depth(sqs, url).await.ok()
}
