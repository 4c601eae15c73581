//! One message through the pipeline: decoded into an event, handled under a consumer
//! span that continues the producer's trace, and the decision carried out
//! (acknowledged, scheduled for a retry, or dead-lettered).

use aws_sdk_sqs::types::Message;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope::{self, Decoded, NewEvent};
use eventpipe_core::sqs_message;
use tracing::Instrument;

use super::{Received, Run, SqsSource};
use crate::backoff::visibility_seconds;
use crate::handler::{Attempt, Decision};
use crate::holding::{Held, Holding};
use crate::pressure::MAX_HOLD;
use crate::processor::Failure;
use crate::sources::lock;
use crate::verdict::exhausted_after_hold;

impl SqsSource {
    /// Handles one message; true when it is finished (acknowledged or dead-lettered).
    /// `waiting` are the receipts of the group's messages that wait for this one.
    pub(super) async fn process(&self, received: Received, waiting: &[String], run: &Run) -> bool {
        let Received { message, decoded } = received;
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        let span = self.span(&message, &decoded);
        let decided = tokio::select! {
            d = self.decide(&message, decoded, waiting, run).instrument(span.clone()) => Some(d),
            _ = run.release.cancelled() => None,
        };
        lock(&self.inflight).remove(&receipt);
        let receive_count = sqs_message::receive_count(&message);
        let (event, decision) = match decided {
            Some((event, Held::Decided(decision))) => (event, decision),
            Some((event, Held::HandBack(_, why)))
                if exhausted_after_hold(self.policy.as_ref(), receive_count) =>
            {
                let held = format!("held {MAX_HOLD:?} on each of {receive_count} receives");
                (event, Decision::DeadLetter(format!("{why} ({held})")))
            }
            Some((_, Held::HandBack(wait, _))) => {
                self.handler.metrics.outcome(&self.labels, "handed_back");
                Box::pin(self.set_visibility(&receipt, visibility_seconds(wait))).await;
                return false;
            }
            Some((_, Held::Stopped)) | None => {
                Box::pin(self.make_visible(vec![receipt])).await;
                return false;
            }
        };
        // Every line about an event names it, its correlation id and its trace.
        let correlation_id = envelope::correlation_id(&event).unwrap_or_default();
        let event_id = event.id().to_string();
        let trace_id = eventpipe_core::telemetry::trace_id(&span);
        let acks = &run.acks;
        let outcome = match &decision {
            Decision::Ack(outcome) => outcome,
            Decision::Retry(..) => "retried",
            Decision::DeadLetter(_) => "dead_lettered",
        };
        (self.handler.metrics).record(&self.labels, &event, outcome, &span);
        // Instrumented, not entered: a span entered across an await would be current
        // for whatever else runs on the thread meanwhile.
        let conclude = async {
            match decision {
                Decision::Ack(outcome) => {
                    tracing::info!(outcome, receive_count, %correlation_id, %event_id, %trace_id, "acknowledged");
                    self.handler.metrics.outcome(&self.labels, outcome);
                    let _ = acks.send(receipt);
                    true
                }
                Decision::Retry(delay, error) => {
                    tracing::warn!(error = %error, retry_in = ?delay, %correlation_id, %event_id, %trace_id, "delivery failed; will retry");
                    self.handler.metrics.outcome(&self.labels, "retried");
                    if let Some(delay) = delay {
                        Box::pin(self.set_visibility(&receipt, visibility_seconds(delay))).await;
                    }
                    false
                }
                Decision::DeadLetter(error) => {
                    Box::pin(self.dead_letter(&message, &event, &error, acks)).await
                }
            }
        };
        conclude.instrument(span).await
    }

    pub(super) fn event_source(&self) -> String {
        format!("/eventpipe/{}/{}", self.labels.pipeline, self.labels.source)
    }

    /// Runs the decoded message through the pipeline, holding it while the
    /// processor throttles (at most [`MAX_HOLD`], and not past shutdown).
    async fn decide(
        &self,
        message: &Message,
        decoded: Decoded,
        waiting: &[String],
        run: &Run,
    ) -> (Event, Held) {
        let group = sqs_message::group_of(message);
        let attempt = Attempt {
            receive_count: sqs_message::receive_count(message),
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
                let receipt = message.receipt_handle.as_deref().unwrap_or_default();
                let holding = Holding {
                    gate: &run.gate,
                    labels: &self.labels,
                    stop: &run.stop,
                    limit: Some(MAX_HOLD),
                    on_hold: &|| {
                        self.mark_held(waiting.iter().map(String::as_str).chain([receipt]))
                    },
                };
                let held = self
                    .handler
                    .handle_holding(&event, &attempt, &holding)
                    .await;
                (*event, held)
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
                (raw, Held::Decided(decision))
            }
        }
    }

    /// A consumer span continuing the event's trace, named after the event from the
    /// start: fields recorded later cost the JSON log layer a re-serialization each.
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
            pipeline = %self.labels.pipeline,
            correlation.id = event.and_then(|e| envelope::correlation_id(e)),
            event.id = event.map(|e| e.id()),
        );
        let id = message.message_id.as_deref().unwrap_or_default();
        eventpipe_core::telemetry::process_attributes(&span, "aws_sqs", queue, id);
        if let Some(event) = event {
            eventpipe_core::telemetry::continue_trace(&span, envelope::trace_pairs(event));
        }
        span
    }
}
