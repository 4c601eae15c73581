//! Processors: where events are delivered. One module per kind behind [`Processor`];
//! `container` is the user's sidecar, reached over HTTP on localhost.

mod batch_response;
mod batching;
mod dynamodb;
mod dynamodb_batch;
#[cfg(test)]
mod fixtures;
mod http;
mod http_batch;
mod push;
mod secret_headers;
mod sqs;

use std::borrow::Cow;
use std::time::Duration;
use std::{future::Future, pin::Pin};

use anyhow::bail;
use cloudevents::Event;
use cloudevents::event::ExtensionValue;
use eventpipe_crds::Pipeline;

use crate::clients::Clients;

use self::batching::Batching;
pub use self::dynamodb::DynamoDbProcessor;
pub use self::http::HttpProcessor;
pub use self::push::PushProcessor;
pub use self::sqs::SqsProcessor;

/// What became of one delivery.
#[derive(Debug)]
pub enum Outcome {
    /// The processor took the event; `reply` is a CloudEvent it answered with.
    Delivered {
        reply: Option<Box<Event>>,
    },
    Failed(Failure),
}

/// Why a delivery failed, for the dead-letter policy to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The processor answered with this HTTP status.
    Status(u16),
    /// The event cannot be processed as it is (a key part missing, not a valid event).
    Invalid,
    /// Errors worth retrying that say nothing about the processor's load.
    Transient,
    /// The processor cannot take it now (429, 503, refused connection, timeout,
    /// DynamoDB throttling), asking for this wait when it said: the event is held
    /// and tried again, spending no retry.
    Throttled(Option<Duration>),
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    pub fn throttled(retry_after: Option<Duration>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Throttled(retry_after),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Invalid,
            message: message.into(),
        }
    }
}

/// Context of one delivery.
pub struct Delivery<'a> {
    pub event: &'a Event,
    /// Trace context of the delivery span, for what the processor sends on.
    pub trace: Vec<(String, String)>,
    /// FIFO message group of the source message, kept when forwarding.
    pub group: Option<&'a str>,
    /// The idempotency claim's completion, for a processor that can make it part of
    /// its own DynamoDB write ([`Processor::completes_claims`]).
    pub completion: Option<aws_sdk_dynamodb::types::TransactWriteItem>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Processor: Send + Sync {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Outcome>;

    /// Delivers several events, an outcome for each in their order. Only called
    /// with at most [`Processor::batch_size`] deliveries, on a processor that has one.
    fn deliver_batch<'a>(&'a self, deliveries: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                outcomes.push(self.deliver(d).await);
            }
            outcomes
        })
    }

    /// The most events one [`Processor::deliver_batch`] takes; `None`: one at a time.
    fn batch_size(&self) -> Option<usize> {
        None
    }

    /// Whether a delivery that succeeded with a [`Delivery::completion`] has written
    /// it, so the claim needs no completing after.
    fn completes_claims(&self) -> bool {
        false
    }
}

/// The processor the pipeline's `spec.processor` names, each kind built from its
/// own spec; `aws` is the worker's own AWS configuration (for SigV4 signing).
pub async fn build(
    pipeline: &Pipeline,
    aws: &aws_config::SdkConfig,
    ddb: &aws_sdk_dynamodb::Client,
    clients: &mut Clients<'_>,
) -> anyhow::Result<Box<dyn Processor>> {
    let spec = &pipeline.pipeline.spec.processor;
    let timeout = pipeline.pipeline.spec.delivery.timeout.as_std();
    if let Some(http) = &spec.http {
        let secrets = clients.secrets_dir();
        let p = HttpProcessor::from_spec(http, secrets, aws)?;
        return batched(p, http.batch.as_ref(), "processor.http", timeout);
    }
    if let Some(container) = &spec.container {
        return Ok(Box::new(HttpProcessor::from_container(container)?));
    }
    if let Some(table) = &spec.dynamodb {
        let p = DynamoDbProcessor::build(table, ddb.clone()).await?;
        return batched(p, table.batch.as_ref(), "processor.dynamodb", timeout);
    }
    if let Some(push) = &spec.push {
        return Ok(Box::new(PushProcessor::new(
            push,
            clients.push_to(),
            timeout,
        )?));
    }
    if let Some(queue) = &spec.sqs {
        return Ok(Box::new(
            SqsProcessor::build(queue, pipeline, clients).await?,
        ));
    }
    bail!("spec.processor names no processor");
}

/// The processor, behind a collector of concurrent deliveries into batches when the
/// spec asks for them. Its window must leave time for the delivery itself.
fn batched<P: Processor + 'static>(
    processor: P,
    batch: Option<&eventpipe_crds::Batch>,
    field: &str,
    timeout: Duration,
) -> anyhow::Result<Box<dyn Processor>> {
    let Some(batch) = batch else {
        return Ok(Box::new(processor));
    };
    if batch.window.as_std() >= timeout {
        bail!(
            "{field}.batch.window ({}) must be shorter than delivery.timeout ({timeout:?}), which it counts toward",
            batch.window.as_str()
        );
    }
    let max = batch.max_size.max(1) as usize;
    Ok(Box::new(Batching::new(
        processor,
        max,
        batch.window.as_std(),
    )))
}

/// The event with its trace context replaced by the delivery's, so what it causes
/// downstream (a table's stream, another queue) continues the same trace; the event
/// itself when it carries that context already (a batched delivery's copy does).
pub fn with_trace<'a>(event: &'a Event, trace: &[(String, String)]) -> Cow<'a, Event> {
    if trace.iter().all(|pair| carries(event, pair)) {
        return Cow::Borrowed(event);
    }
    let mut event = event.clone();
    for (key, value) in trace {
        event.set_extension(key, value.as_str());
    }
    Cow::Owned(event)
}

/// Whether `event` has the extension `key` set to the string `value`.
fn carries(event: &Event, (key, value): &(String, String)) -> bool {
    matches!(event.extension(key), Some(ExtensionValue::String(v)) if v == value)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use eventpipe_core::envelope::{self, TRACEPARENT};

    use super::{fixtures, with_trace};

    const DELIVERY: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn an_event_takes_its_deliverys_trace_and_is_copied_only_to_take_it() {
        let event = fixtures::events(&["e-1"]).remove(0);
        let trace = vec![(TRACEPARENT.to_string(), DELIVERY.to_string())];
        let traced = with_trace(&event, &trace);
        assert!(matches!(traced, Cow::Owned(_)));
        assert_eq!(envelope::trace_context(&traced), trace);
        assert!(
            envelope::trace_context(&event).is_empty(),
            "the original is left as it was"
        );
        let again = with_trace(&traced, &trace);
        assert!(
            matches!(again, Cow::Borrowed(_)),
            "it carries that trace already"
        );
        assert_eq!(envelope::trace_context(&again), trace);
    }
}
