//! The SQS source: long polling with backpressure (never more messages received than
//! there is capacity to start), per-message acknowledgement in batched deletes,
//! retries scheduled through the visibility timeout, dead-lettering with the reason
//! attached, heartbeats for slow deliveries, in-order delivery per FIFO message
//! group, and a graceful shutdown that hands unfinished messages back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName as SysAttr,
};
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope::{self, Decoded, NewEvent, attribute};
use eventpipe_crds::{DeadLetterPolicySpec, SqsQueue};
use opentelemetry::trace::TraceContextExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::backoff::visibility_seconds;
use crate::handler::{Attempt, Decision, Handler};
use crate::metrics::Source;
use crate::processor::Failure;
use crate::publish::{dedup_id, string_attribute};

/// Attributes the worker adds to a dead-lettered message.
pub const ERROR_ATTRIBUTE: &str = "eventpipe-error";
pub const RECEIVE_COUNT_ATTRIBUTE: &str = "eventpipe-receive-count";
pub const SOURCE_QUEUE_ATTRIBUTE: &str = "eventpipe-source-queue";
/// SQS allows ten message attributes.
const MAX_ATTRIBUTES: usize = 10;

pub struct SqsSource {
    pub labels: Source,
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub queue: SqsQueue,
    pub policy: Option<DeadLetterPolicySpec>,
    pub dlq_url: Option<String>,
    /// Deliver each FIFO message group in order, one message at a time.
    pub ordered: bool,
    pub handler: Arc<Handler>,
    /// Receive loops: fixed from the pipeline's concurrency, not from what the shared
    /// semaphore happens to hold when the source starts.
    pollers: usize,
    /// Receipt handles of messages being worked on, with when they were last made invisible.
    inflight: Mutex<HashMap<String, Instant>>,
    /// One lock per FIFO message group, so a group's messages never overlap.
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SqsSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        labels: Source,
        sqs: aws_sdk_sqs::Client,
        url: String,
        queue: SqsQueue,
        policy: Option<DeadLetterPolicySpec>,
        dlq_url: Option<String>,
        ordered: bool,
        handler: Arc<Handler>,
        concurrency: usize,
    ) -> Self {
        let pollers = pollers(concurrency, queue.batch_size.max(1) as usize);
        Self {
            labels,
            sqs,
            url,
            queue,
            policy,
            dlq_url,
            ordered,
            handler,
            pollers,
            inflight: Mutex::default(),
            lanes: Mutex::default(),
        }
    }

    fn queue_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    fn visibility(&self) -> Duration {
        self.queue.visibility_timeout.as_std()
    }

    /// Consumes until `stop`, then lets in-flight deliveries finish within `grace`
    /// and hands back whatever is left.
    pub async fn run(
        self: Arc<Self>,
        permits: Arc<Semaphore>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let (acks, acker) = spawn_acker(self.sqs.clone(), self.url.clone());
        let release = CancellationToken::new();
        let tasks = TaskTracker::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat(release.clone()));
        let depth = tokio::spawn(self.clone().report_depth(release.clone()));
        let batch = self.queue.batch_size.max(1) as usize;
        futures::future::join_all(
            (0..self.pollers).map(|_| self.poll(&permits, batch, &stop, &tasks, &acks, &release)),
        )
        .await;
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
        drop(acks);
        let _ = acker.await;
        let _ = heartbeat.await;
        let _ = depth.await;
    }

    /// One receive loop: reserves capacity, long-polls for at most that many messages
    /// and starts them, until `stop`.
    async fn poll(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        batch: usize,
        stop: &CancellationToken,
        tasks: &TaskTracker,
        acks: &mpsc::UnboundedSender<String>,
        release: &CancellationToken,
    ) {
        while let Some(held) = reserve(permits, batch, stop).await {
            let Some(messages) = self.receive(held.len(), stop).await else {
                continue;
            };
            if stop.is_cancelled() {
                // Received while shutting down: give them back rather than start them.
                self.make_visible(
                    messages
                        .iter()
                        .filter_map(|m| m.receipt_handle.clone())
                        .collect(),
                )
                .await;
                break;
            }
            self.dispatch(messages, held, tasks, acks, release);
        }
    }

    /// Keeps `eventpipe_queue_depth` and `eventpipe_dlq_depth` current (visible plus in
    /// flight), every 15 seconds.
    async fn report_depth(self: Arc<Self>, done: CancellationToken) {
        loop {
            if let Some(n) = queue_depth(&self.sqs, &self.url).await {
                self.handler
                    .metrics
                    .queue_depth
                    .get_or_create(&self.labels)
                    .set(n);
            }
            if let Some(dlq) = &self.dlq_url
                && let Some(n) = queue_depth(&self.sqs, dlq).await
            {
                self.handler
                    .metrics
                    .dlq_depth
                    .get_or_create(&self.labels)
                    .set(n);
            }
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(15)) => {}, _ = done.cancelled() => return }
        }
    }

    /// One long-poll receive for at most `max` messages; `None` after an error (logged,
    /// with a pause so an unreachable queue is not hammered).
    async fn receive(&self, max: usize, stop: &CancellationToken) -> Option<Vec<Message>> {
        let request = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(self.queue.wait_time.as_std().as_secs().min(20) as i32)
            .visibility_timeout(visibility_seconds(self.visibility()))
            // Only what the worker reads: every attribute is parsed on each receive.
            .message_system_attribute_names(SysAttr::ApproximateReceiveCount)
            .message_system_attribute_names(SysAttr::MessageGroupId)
            .message_attribute_names("All")
            .send();
        let queue = self.queue_name();
        let span = tracing::info_span!(
            "receive",
            otel.name = format!("receive {queue}"),
            otel.kind = "consumer",
            messaging.system = "aws_sqs",
            messaging.operation.type = "receive",
            messaging.destination.name = queue,
            messaging.batch.message_count = Empty,
        );
        match request.instrument(span.clone()).await {
            Ok(out) => {
                let messages = out.messages.unwrap_or_default();
                // The batch span links to the trace of every message it brought.
                span.record("messaging.batch.message_count", messages.len());
                for m in &messages {
                    let trace = trace_of(m);
                    let cx = eventpipe_core::telemetry::context_of(
                        trace.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    );
                    span.add_link(cx.span().span_context().clone());
                }
                Some(messages)
            }
            Err(e) => {
                tracing::error!(queue = self.queue_name(), error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receive failed");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.cancelled() => {} }
                None
            }
        }
    }

    fn dispatch(
        self: &Arc<Self>,
        messages: Vec<Message>,
        mut held: Vec<OwnedSemaphorePermit>,
        tasks: &TaskTracker,
        acks: &mpsc::UnboundedSender<String>,
        release: &CancellationToken,
    ) {
        held.truncate(messages.len()); // unused capacity goes back at once
        for m in &messages {
            if let Some(r) = &m.receipt_handle {
                self.inflight
                    .lock()
                    .unwrap()
                    .insert(r.clone(), Instant::now());
            }
        }
        let mut work: Vec<(Vec<Message>, Vec<OwnedSemaphorePermit>)> = vec![];
        if self.ordered {
            let mut groups: Vec<(String, Vec<Message>, Vec<OwnedSemaphorePermit>)> = vec![];
            for (m, p) in messages.into_iter().zip(held) {
                let g = system_attribute(&m, SysAttr::MessageGroupId).unwrap_or_default();
                match groups.iter_mut().find(|(k, _, _)| *k == g) {
                    Some((_, ms, ps)) => {
                        ms.push(m);
                        ps.push(p);
                    }
                    None => groups.push((g, vec![m], vec![p])),
                }
            }
            work.extend(groups.into_iter().map(|(_, ms, ps)| (ms, ps)));
        } else {
            work.extend(
                messages
                    .into_iter()
                    .zip(held)
                    .map(|(m, p)| (vec![m], vec![p])),
            );
        }
        for (batch, permits) in work {
            let (me, acks, release) = (self.clone(), acks.clone(), release.clone());
            // Boxed: spawning moves the future, and unboxed it is several KiB.
            tasks.spawn(Box::pin(async move {
                me.process_in_order(batch, &acks, &release).await;
                drop(permits);
            }));
        }
    }

    /// Messages of one group (or a single message), one at a time; after a message is
    /// not finished, the group's later messages are handed back so order holds.
    async fn process_in_order(
        &self,
        batch: Vec<Message>,
        acks: &mpsc::UnboundedSender<String>,
        release: &CancellationToken,
    ) {
        let group = batch
            .first()
            .and_then(|m| system_attribute(m, SysAttr::MessageGroupId));
        let lane = group.map(|g| self.lanes.lock().unwrap().entry(g).or_default().clone());
        let _turn = match &lane {
            Some(lane) => Some(lane.lock().await),
            None => None,
        };
        let mut rest = batch.into_iter();
        while let Some(message) = rest.next() {
            if !self.process(message, acks, release).await {
                let receipts = rest.by_ref().filter_map(|m| m.receipt_handle).collect();
                self.make_visible(receipts).await;
            }
        }
    }

    /// Handles one message; true when it is finished (acknowledged or dead-lettered).
    async fn process(
        &self,
        message: Message,
        acks: &mpsc::UnboundedSender<String>,
        release: &CancellationToken,
    ) -> bool {
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        let decoded = self.decode(&message);
        let span = self.span(&message, &decoded);
        let decided = tokio::select! {
            d = self.decide(&message, decoded).instrument(span.clone()) => Some(d),
            _ = release.cancelled() => None,
        };
        self.inflight.lock().unwrap().remove(&receipt);
        let Some((event, decision)) = decided else {
            self.make_visible(vec![receipt]).await;
            return false;
        };
        let _enter = span.enter();
        // Every line about an event names it, its correlation id and its trace.
        let correlation_id = envelope::correlation_id(&event).unwrap_or_default();
        let event_id = event.id().to_string();
        let trace_id = eventpipe_core::telemetry::trace_id(&span);
        match decision {
            Decision::Ack(outcome) => {
                tracing::info!(outcome, %correlation_id, %event_id, %trace_id, "acknowledged");
                self.handler.metrics.outcome(&self.labels, outcome);
                let _ = acks.send(receipt);
                true
            }
            Decision::Retry(delay, error) => {
                tracing::warn!(error = %error, retry_in = ?delay, %correlation_id, %event_id, %trace_id, "delivery failed; will retry");
                self.handler.metrics.outcome(&self.labels, "retried");
                if let Some(delay) = delay {
                    self.set_visibility(&receipt, visibility_seconds(delay))
                        .await;
                }
                false
            }
            Decision::DeadLetter(error) => self.dead_letter(&message, &event, &error, acks).await,
        }
    }

    fn decode(&self, message: &Message) -> Decoded {
        let id = message.message_id.as_deref().unwrap_or_default();
        let body = message.body.as_deref().unwrap_or_default();
        envelope::decode(body, id, &self.event_source())
    }

    fn event_source(&self) -> String {
        format!("/eventpipe/{}/{}", self.labels.pipeline, self.labels.source)
    }

    /// Runs the decoded message through the pipeline.
    async fn decide(&self, message: &Message, decoded: Decoded) -> (Event, Decision) {
        let receive_count = system_attribute(message, SysAttr::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let group = system_attribute(message, SysAttr::MessageGroupId);
        let attempt = Attempt {
            receive_count,
            group: group.as_deref(),
            policy: self.policy.as_ref(),
        };
        self.handler
            .metrics
            .received
            .get_or_create(&self.labels)
            .inc();
        match decoded {
            Decoded::Event(event) | Decoded::Wrapped(event) => {
                let decision = self.handler.handle(&event, &attempt, &self.labels).await;
                (*event, decision)
            }
            Decoded::Undecodable(why) => {
                let raw = envelope::build(NewEvent {
                    id: message.message_id.clone().unwrap_or_default(),
                    source: self.event_source(),
                    event_type: "eventpipe.undecodable".into(),
                    data: serde_json::Value::String(message.body.clone().unwrap_or_default()),
                    ..Default::default()
                });
                let decision = self.handler.judge(Failure::invalid(why), &attempt);
                (raw, decision)
            }
        }
    }

    /// A consumer span continuing the producer's trace (message attributes first, then
    /// the CloudEvent's own extensions), named after the event from the start: fields
    /// recorded later cost the JSON log layer a re-serialization each.
    fn span(&self, message: &Message, decoded: &Decoded) -> tracing::Span {
        let event = match decoded {
            Decoded::Event(e) | Decoded::Wrapped(e) => Some(e),
            Decoded::Undecodable(_) => None,
        };
        let queue = self.queue_name();
        let span = tracing::info_span!(
            "process",
            otel.name = format!("process {queue}"),
            otel.kind = "consumer",
            messaging.system = "aws_sqs",
            messaging.operation.type = "process",
            messaging.destination.name = queue,
            messaging.message.id = message.message_id.as_deref().unwrap_or_default(),
            pipeline = %self.labels.pipeline,
            correlation.id = event.and_then(|e| envelope::correlation_id(e)),
            event.id = event.map(|e| e.id()),
        );
        let trace = trace_of(message);
        eventpipe_core::telemetry::continue_trace(
            &span,
            trace.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        span
    }

    /// Moves the message to the DLQ, reason attached, then deletes it from the source.
    async fn dead_letter(
        &self,
        message: &Message,
        event: &Event,
        error: &str,
        acks: &mpsc::UnboundedSender<String>,
    ) -> bool {
        let Some(dlq) = &self.dlq_url else {
            tracing::error!(
                error,
                "no dead-letter queue to move the message to; it will be retried"
            );
            return false;
        };
        let count = system_attribute(message, SysAttr::ApproximateReceiveCount)
            .unwrap_or_else(|| "1".into());
        let mut attributes: HashMap<String, MessageAttributeValue> =
            message.message_attributes.clone().unwrap_or_default();
        let reasons = [
            (
                ERROR_ATTRIBUTE,
                error.chars().take(1024).collect::<String>(),
            ),
            (RECEIVE_COUNT_ATTRIBUTE, count),
            (SOURCE_QUEUE_ATTRIBUTE, self.url.clone()),
        ];
        for (k, _) in &reasons {
            attributes.remove(*k);
        }
        while attributes.len() > MAX_ATTRIBUTES - reasons.len() {
            let drop = attributes.keys().next().cloned().unwrap_or_default();
            attributes.remove(&drop);
        }
        for (k, v) in reasons {
            attributes.insert(k.to_string(), string_attribute(&v));
        }
        let mut send = self
            .sqs
            .send_message()
            .queue_url(dlq)
            .message_body(message.body.clone().unwrap_or_default())
            .set_message_attributes(Some(attributes));
        if dlq.ends_with(".fifo") {
            let group = system_attribute(message, SysAttr::MessageGroupId)
                .unwrap_or_else(|| "dead-letters".into());
            send = send
                .message_group_id(group)
                .message_deduplication_id(dedup_id(
                    message.message_id.as_deref().unwrap_or_default(),
                ));
        }
        if let Err(e) = send.send().await {
            tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not dead-letter; the message will be retried");
            return false;
        }
        let correlation_id = envelope::correlation_id(event).unwrap_or_default();
        tracing::warn!(error, dlq, %correlation_id, event_id = event.id(), "dead-lettered");
        self.handler.metrics.outcome(&self.labels, "dead_lettered");
        let group = system_attribute(message, SysAttr::MessageGroupId);
        if let Err(e) = self
            .handler
            .dead_lettered(event, error, group.as_deref())
            .await
        {
            tracing::error!(error = %e, "failure outcome event not sent");
        }
        let _ = acks.send(message.receipt_handle.clone().unwrap_or_default());
        true
    }

    async fn set_visibility(&self, receipt: &str, seconds: i32) {
        let change = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds);
        if let Err(e) = change.send().await {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not change visibility");
        }
    }

    /// Makes messages visible again at once (handing them back).
    async fn make_visible(&self, receipts: Vec<String>) {
        self.change_visibility(&receipts, 0).await;
    }

    async fn change_visibility(&self, receipts: &[String], seconds: i32) {
        for chunk in receipts.chunks(10) {
            let entries = chunk.iter().enumerate().map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(seconds)
                    .build()
                    .expect("id and receipt set")
            });
            let change = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries.collect()));
            if let Err(e) = change.send().await {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not change visibility");
            }
        }
    }

    /// Extends the visibility of messages still being worked on, before it runs out.
    async fn heartbeat(self: Arc<Self>, done: CancellationToken) {
        if !self.queue.heartbeat {
            return;
        }
        let visibility = self.visibility();
        let tick = (visibility / 3).max(Duration::from_millis(500));
        loop {
            tokio::select! { _ = tokio::time::sleep(tick) => {}, _ = done.cancelled() => return }
            let due: Vec<String> = {
                let mut inflight = self.inflight.lock().unwrap();
                let now = Instant::now();
                inflight
                    .iter_mut()
                    .filter(|(_, at)| now.duration_since(**at) >= visibility / 2)
                    .map(|(r, at)| {
                        *at = now;
                        r.clone()
                    })
                    .collect()
            };
            if !due.is_empty() {
                tracing::debug!(count = due.len(), "extending visibility of slow deliveries");
                self.change_visibility(&due, visibility_seconds(visibility))
                    .await;
            }
        }
    }
}

/// The producer's trace context: message attributes first, then the CloudEvent's own
/// extensions.
fn trace_of(message: &Message) -> Vec<(String, String)> {
    let attrs = message.message_attributes.as_ref();
    let from_attrs: Vec<(String, String)> = [attribute::TRACEPARENT, attribute::TRACESTATE]
        .into_iter()
        .filter_map(|k| {
            attrs
                .and_then(|a| a.get(k))
                .and_then(|v| v.string_value.clone())
                .map(|v| (k.to_string(), v))
        })
        .collect();
    let body = message.body.as_deref().unwrap_or_default();
    // Only a structured CloudEvent carries its trace in the body; parse nothing else.
    if !from_attrs.is_empty() || !body.contains("\"specversion\"") {
        return from_attrs;
    }
    serde_json::from_str::<Event>(body)
        .map(|e| envelope::trace_context(&e))
        .unwrap_or_default()
}

/// Receive loops per queue: enough long polls in flight to fill the pipeline's
/// concurrency, since one receive round trip would otherwise cap throughput at
/// `batch` messages per round trip.
pub fn pollers(concurrency: usize, batch: usize) -> usize {
    concurrency.div_ceil(batch.max(1)).clamp(1, MAX_POLLERS)
}

/// Beyond this, more long polls only add empty receives.
const MAX_POLLERS: usize = 10;

/// Waits for capacity for at least one message, then takes what more is free, up to
/// `batch`; `None` once `stop` is cancelled.
async fn reserve(
    permits: &Arc<Semaphore>,
    batch: usize,
    stop: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        p = permits.clone().acquire_owned() => p.ok()?,
        _ = stop.cancelled() => return None,
    };
    let mut held = vec![first];
    while held.len() < batch {
        match permits.clone().try_acquire_owned() {
            Ok(p) => held.push(p),
            Err(_) => break,
        }
    }
    Some(held)
}

/// Approximate messages visible and in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<i64> {
    eventpipe_core::provision::queue_depth(sqs, url).await.ok()
}

pub fn system_attribute(message: &Message, name: SysAttr) -> Option<String> {
    message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&name))
        .cloned()
}

/// How long a delete waits for company: a message's deletion only has to beat its
/// visibility timeout, and fuller batches mean fewer requests.
const DELETE_LINGER: Duration = Duration::from_millis(50);

/// Deletes acknowledged messages in batches of up to ten, waiting at most
/// `DELETE_LINGER` for a batch to fill.
fn spawn_acker(
    sqs: aws_sdk_sqs::Client,
    url: String,
) -> (mpsc::UnboundedSender<String>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let linger = tokio::time::sleep(DELETE_LINGER);
            tokio::pin!(linger);
            while batch.len() < 10 {
                tokio::select! {
                    next = rx.recv() => match next { Some(r) => batch.push(r), None => break },
                    _ = &mut linger => break,
                }
            }
            let entries = batch.iter().enumerate().map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .expect("id and receipt set")
            });
            match sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
            {
                Ok(out) => {
                    for failed in out.failed() {
                        tracing::warn!(
                            code = failed.code(),
                            message = failed.message(),
                            "delete failed; the message may be redelivered"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed; messages may be redelivered")
                }
            }
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::pollers;

    #[test]
    fn enough_receive_loops_to_fill_the_concurrency() {
        assert_eq!(pollers(16, 10), 2);
        assert_eq!(pollers(40, 10), 4);
        assert_eq!(pollers(1, 10), 1);
        assert_eq!(pollers(5, 1), 5);
    }

    #[test]
    fn receive_loops_are_bounded() {
        assert_eq!(pollers(1000, 1), 10);
        assert_eq!(pollers(0, 10), 1);
        assert_eq!(pollers(8, 0), 8);
    }
}
