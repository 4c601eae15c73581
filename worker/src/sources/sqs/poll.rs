//! Receiving: receive loops that reserve capacity before they long-poll, and the
//! dispatch of what arrives, one task per message or, for ordered FIFO queues, one
//! per message group taking its turn on the group's lane.

use std::sync::Arc;
use std::time::Duration;

use eventpipe_core::envelope::{self, Decoded};
use eventpipe_core::sqs_message;
use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{InFlight, Received, Run, SqsSource, wire};
use crate::backoff::visibility_seconds;
use crate::gate::Permit;
use crate::sources::lock;

/// How long a receive in flight at shutdown may still answer before it is abandoned.
const ANSWER_ON_ITS_WAY: Duration = Duration::from_millis(200);

/// How long a receive waits for deliveries in flight to give back room for a fuller
/// batch: each receive and delete costs a request whatever it carries.
const FILL_LINGER: Duration = Duration::from_millis(20);

/// Beyond this, more long polls only add empty receives.
const MAX_POLLERS: usize = 10;

/// Messages started together, with the capacity they hold.
type Work = (Vec<Received>, Vec<Permit>);

/// Receive loops per queue: enough long polls in flight to fill the pipeline's
/// concurrency, since one receive round trip would otherwise cap throughput at
/// `batch` messages per round trip.
pub(super) fn pollers(concurrency: usize, batch: usize) -> usize {
    concurrency.div_ceil(batch.max(1)).clamp(1, MAX_POLLERS)
}

/// Messages of the same FIFO group together, in the order received.
fn by_group(messages: Vec<Received>, held: Vec<Permit>) -> Vec<Work> {
    let mut groups: Vec<(String, Work)> = vec![];
    for (m, p) in messages.into_iter().zip(held) {
        let g = sqs_message::group_of(&m.message).unwrap_or_default();
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, (ms, ps))) => {
                ms.push(m);
                ps.push(p);
            }
            None => groups.push((g, (vec![m], vec![p]))),
        }
    }
    groups.into_iter().map(|(_, work)| work).collect()
}

impl SqsSource {
    /// One receive loop: reserves capacity, long-polls for at most that many messages
    /// and starts them, until `stop`.
    pub(super) async fn poll(self: &Arc<Self>, run: &Arc<Run>, batch: usize, tasks: &TaskTracker) {
        let stop = &run.stop;
        while let Some(mut held) = run.gate.reserve(batch, stop).await {
            run.gate.top_up(&mut held, batch, FILL_LINGER).await;
            let Some(messages) = self.receive(held.len(), stop).await else {
                continue;
            };
            // Received while shutting down, they are started all the same (within
            // the grace period): SQS has charged their receive already, and handing
            // them back would charge another.
            self.dispatch(messages, held, tasks, run);
        }
    }

    /// One long-poll receive for at most `max` messages, each read as an event;
    /// `None` after an error (logged, with a pause so an unreachable queue is not
    /// hammered).
    async fn receive(&self, max: usize, stop: &CancellationToken) -> Option<Vec<Received>> {
        let ask = wire::Receive {
            queue_url: &self.url,
            max_number_of_messages: max as i32,
            wait_time_seconds: self.queue.wait_time.as_std().as_secs().min(20) as i32,
            visibility_timeout: visibility_seconds(self.visibility()),
            // Only what the worker reads: every attribute is parsed on each receive.
            message_system_attribute_names: &["ApproximateReceiveCount", "MessageGroupId"],
            message_attribute_names: &["All"],
        };
        let request = self.wire.receive(&ask);
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
        let request = request.instrument(span.clone());
        tokio::pin!(request);
        let answer = tokio::select! {
            answer = &mut request => answer,
            _ = stop.cancelled() => {
                // A long poll still waiting at shutdown would hold it up to
                // `waitTime`: it is abandoned, after a moment for an answer already
                // on its way (one that carries messages comes back at once).
                tokio::time::timeout(ANSWER_ON_ITS_WAY, request).await.ok()?
            }
        };
        match answer {
            Ok(out) => {
                let source = self.event_source();
                let messages: Vec<Received> = (out.into_iter())
                    .map(|message| Received {
                        decoded: sqs_message::decode(&message, &source),
                        message,
                    })
                    .collect();
                link_traces(&span, &messages);
                Some(messages)
            }
            Err(e) => {
                tracing::error!(queue = self.queue_name(), error = %e, "receive failed");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.cancelled() => {} }
                None
            }
        }
    }

    /// Starts the received messages, each holding one of the reserved permits.
    fn dispatch(
        self: &Arc<Self>,
        messages: Vec<Received>,
        mut held: Vec<Permit>,
        tasks: &TaskTracker,
        run: &Arc<Run>,
    ) {
        held.truncate(messages.len()); // unused capacity goes back at once
        {
            let mut inflight = lock(&self.inflight);
            for r in messages
                .iter()
                .filter_map(|m| m.message.receipt_handle.as_ref())
            {
                inflight.insert(r.clone(), InFlight::new());
            }
        }
        let work = match self.ordered {
            true => by_group(messages, held),
            false => messages
                .into_iter()
                .zip(held)
                .map(|(m, p)| (vec![m], vec![p]))
                .collect(),
        };
        for (batch, permits) in work {
            let (me, run) = (self.clone(), run.clone());
            // Boxed: spawning moves the future, and unboxed it is several KiB.
            tasks.spawn(Box::pin(async move {
                me.process_in_order(batch, &run).await;
                drop(permits);
            }));
        }
    }

    /// Messages of one group (or a single message), one at a time; after a message is
    /// not finished, the group's later messages are handed back so order holds
    /// (SQS returns none of a group while one of it is in flight, so the retry of
    /// the first needs the others back). While the first is held, they wait with it.
    async fn process_in_order(&self, batch: Vec<Received>, run: &Run) {
        let group = batch
            .first()
            .and_then(|m| sqs_message::group_of(&m.message));
        let _turn = match group {
            Some(g) => Some(self.lanes.turn(g).await),
            None => None,
        };
        let mut batch = std::collections::VecDeque::from(batch);
        while let Some(message) = batch.pop_front() {
            let waiting: Vec<String> = (batch.iter())
                .filter_map(|m| m.message.receipt_handle.clone())
                .collect();
            if !self.process(message, &waiting, run).await {
                Box::pin(self.make_visible(waiting)).await;
                return;
            }
        }
    }
}

/// The receive span links to the trace of every event it brought.
fn link_traces(span: &tracing::Span, messages: &[Received]) {
    span.record("messaging.batch.message_count", messages.len());
    for m in messages {
        let (Decoded::Event(event) | Decoded::Wrapped(event)) = &m.decoded else {
            continue;
        };
        let cx = eventpipe_core::telemetry::context_of(envelope::trace_pairs(event));
        span.add_link(cx.span().span_context().clone());
    }
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
