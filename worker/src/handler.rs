//! One event through a pipeline: filter, idempotency claim, processor (with the
//! delivery timeout), destinations (reply, outcome events), and the dead-letter
//! policy's verdict on failures. Shared by every source kind, and built once per
//! pipeline from its spec.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::TransactWriteItem;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope::{self, NewEvent};
use eventpipe_crds::{DeadLetterPolicySpec, Destinations, Pipeline};
use serde_json::json;

use crate::clients::Clients;
use crate::filter::Pattern;
use crate::holding::{Hold, Step};
use crate::idempotency::{Claim, Idempotency};
use crate::metrics::{Metrics, Source};
use crate::processor::{self, Delivery, Failure, FailureKind, Outcome, Processor, with_trace};
use crate::publish::Publisher;
use crate::verdict::{Verdict, judge};

/// What the source should do with the message or record.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Done (delivered, filtered out, or a duplicate): acknowledge.
    Ack(&'static str),
    /// Deliver again later; `None` leaves the delay to the queue.
    Retry(Option<Duration>, String),
    /// Send to the dead-letter queue with this error.
    DeadLetter(String),
}

/// Where this delivery stands.
pub struct Attempt<'a> {
    /// 1-based count of deliveries so far, this one included.
    pub receive_count: u32,
    /// FIFO message group or stream partition key.
    pub group: Option<&'a str>,
    pub policy: Option<&'a DeadLetterPolicySpec>,
}

/// An outcome event: its type and the queue it goes to.
pub struct OutcomeTarget {
    pub publisher: Publisher,
    pub event_type: String,
}

/// A claimed event ready for its processor, and what its end needs.
pub(crate) struct Prepared {
    claimed: bool,
    /// The processor writes the claim's completion with its effect.
    completed: bool,
    /// The delivery span's context, for the processor and what is sent on.
    trace: Vec<(String, String)>,
    completion: Option<TransactWriteItem>,
}

impl Prepared {
    /// The event's delivery (taking the claim's completion along).
    pub(crate) fn delivery<'a>(&mut self, event: &'a Event, attempt: &Attempt<'a>) -> Delivery<'a> {
        Delivery {
            event,
            trace: self.trace.clone(),
            group: attempt.group,
            completion: self.completion.take(),
        }
    }
}

pub struct Handler {
    pub pipeline: String,
    pub filter: Option<Pattern>,
    pub processor: Box<dyn Processor>,
    pub idempotency: Option<Idempotency>,
    pub timeout: Duration,
    pub on_success: Option<OutcomeTarget>,
    pub on_failure: Option<OutcomeTarget>,
    pub reply: Option<Publisher>,
    pub metrics: Metrics,
}

impl Handler {
    /// The handler of a pipeline: its filter, processor, idempotency store and
    /// destinations, with the tables they need created when missing.
    pub async fn build(
        p: &Pipeline,
        aws: &SdkConfig,
        metrics: &Metrics,
        clients: &mut Clients<'_>,
    ) -> anyhow::Result<Self> {
        let spec = &p.pipeline.spec;
        let filter = spec
            .filter
            .as_ref()
            .map(|f| Pattern::compile(&f.0))
            .transpose()?;
        let ddb = aws_sdk_dynamodb::Client::new(aws);
        let processor = processor::build(p, aws, &ddb, clients).await?;
        let timeout = spec.delivery.timeout.as_std();
        let idempotency = match &spec.delivery.idempotency {
            Some(i) => Some(Idempotency::build(ddb, i, timeout).await?),
            None => None,
        };
        let mut handler = Self {
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
            handler.set_destinations(p, d, clients).await?;
        }
        Ok(handler)
    }

    async fn set_destinations(
        &mut self,
        p: &Pipeline,
        d: &Destinations,
        clients: &mut Clients<'_>,
    ) -> anyhow::Result<()> {
        for (target, slot) in [
            (&d.on_success, &mut self.on_success),
            (&d.on_failure, &mut self.on_failure),
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
            self.reply = Some(clients.publisher(p, &r.queue_binding_ref).await?);
        }
        Ok(())
    }

    /// One try: filter, claim, deliver, send on; a step that is either final or a
    /// hold (throttled processor, claim held elsewhere). [`Handler::handle_holding`]
    /// is what sources call.
    pub(crate) async fn handle(
        &self,
        event: &Event,
        attempt: &Attempt<'_>,
        source: &Source,
    ) -> Step {
        if self.filtered_out(event) {
            return Step::Done(Decision::Ack("filtered"));
        }
        let mut prepared = match self.prepare(event, attempt).await {
            Ok(prepared) => prepared,
            Err(step) => return step,
        };
        let delivery = prepared.delivery(event, attempt);
        let outcome = self.deliver(delivery, source).await;
        self.conclude(event, attempt, &prepared, outcome).await
    }

    /// Claims the event and readies its delivery; the step to take when it must not
    /// be delivered now.
    pub(crate) async fn prepare(
        &self,
        event: &Event,
        attempt: &Attempt<'_>,
    ) -> Result<Prepared, Step> {
        let claimed = self.claim(event, attempt).await?;
        let trace = eventpipe_core::telemetry::inject(&tracing::Span::current());
        let completion = self.completion(event, claimed);
        let completed = completion.is_some() && self.processor.completes_claims();
        Ok(Prepared {
            claimed,
            completed,
            trace,
            completion,
        })
    }

    /// After the processor's outcome: send on, complete or release the claim, and
    /// judge a failure.
    pub(crate) async fn conclude(
        &self,
        event: &Event,
        attempt: &Attempt<'_>,
        prepared: &Prepared,
        outcome: Outcome,
    ) -> Step {
        let result = match outcome {
            Outcome::Delivered { reply } if self.sends_on() => {
                Box::pin(self.send_on(event, reply.as_deref(), &prepared.trace, attempt.group))
                    .await
            }
            Outcome::Delivered { .. } => Ok(()),
            Outcome::Failed(failure) => Err(failure),
        };
        let claimed = prepared.claimed;
        match (result, &self.idempotency) {
            (Ok(()), Some(store)) if claimed && !prepared.completed => {
                if let Err(e) = Box::pin(store.complete(event.id())).await {
                    tracing::warn!(error = %e, "delivered, but not marked completed; a redelivery may repeat it");
                }
                Step::Done(Decision::Ack("delivered"))
            }
            (Ok(()), _) => Step::Done(Decision::Ack("delivered")),
            (Err(failure), store) => {
                if let (Some(store), true) = (store, claimed)
                    && let Err(e) = Box::pin(store.release(event.id())).await
                {
                    tracing::warn!(error = %e, "claim not released; the retry waits for it to expire");
                }
                self.verdict(failure, attempt)
            }
        }
    }

    pub(crate) fn filtered_out(&self, event: &Event) -> bool {
        self.filter
            .as_ref()
            .is_some_and(|f| !f.matches(&envelope::as_json(event)))
    }

    /// Claims the event in the idempotency store: true when this delivery owns it,
    /// false without a store; the step to take when it must not be delivered now.
    async fn claim(&self, event: &Event, attempt: &Attempt<'_>) -> Result<bool, Step> {
        let Some(store) = &self.idempotency else {
            return Ok(false);
        };
        match Box::pin(store.claim(event.id())).await {
            Ok(Claim::Claimed) => Ok(true),
            Ok(Claim::Completed) => Err(Step::Done(Decision::Ack("duplicate"))),
            // Not the event's fault, so not judged: held, to look again soon (the
            // other delivery is usually quick), at the latest when its claim expires.
            Ok(Claim::InProgress(remaining)) => Err(Step::Hold(
                Hold::Claimed(remaining),
                "another delivery of this event is in progress".into(),
            )),
            Err(e) => Err(self.verdict(Failure::transient(e), attempt)),
        }
    }

    /// The claim's completion for the processor to write with its effect: only when
    /// nothing is sent on after it (a reply or outcome event that fails must leave
    /// the claim open, so its retry sends it).
    fn completion(&self, event: &Event, claimed: bool) -> Option<TransactWriteItem> {
        let store = (self.idempotency.as_ref()).filter(|_| claimed && !self.sends_on())?;
        store.completion(event.id())
    }

    /// The processor's outcome within the delivery timeout, timed.
    pub(crate) async fn deliver(&self, delivery: Delivery<'_>, source: &Source) -> Outcome {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.processor.deliver(delivery))
            .await
            .unwrap_or_else(|_| {
                Outcome::Failed(Failure::throttled(
                    None,
                    format!("delivery timed out after {:?}", self.timeout),
                ))
            });
        self.metrics
            .delivery_seconds
            .get_or_create(source)
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// The policy's decision on a failure that happened before delivery (e.g. a body
    /// that cannot be decoded).
    pub fn judge(&self, failure: Failure, attempt: &Attempt<'_>) -> Decision {
        match self.verdict(failure, attempt) {
            Step::Done(decision) => decision,
            // Only a processor throttles, and this failure came before delivery.
            Step::Hold(_, message) => Decision::Retry(None, message),
        }
    }

    fn verdict(&self, failure: Failure, attempt: &Attempt<'_>) -> Step {
        match judge(
            attempt.policy,
            &failure,
            attempt.receive_count,
            fastrand::f64(),
        ) {
            Verdict::Retry(delay) => Step::Done(Decision::Retry(delay, failure.message)),
            Verdict::DeadLetter => Step::Done(Decision::DeadLetter(failure.message)),
            Verdict::Hold => {
                let asked = match failure.kind {
                    FailureKind::Throttled(asked) => asked,
                    _ => None,
                };
                Step::Hold(Hold::Throttled(asked), failure.message)
            }
        }
    }

    /// Whether a delivered event is sent on (a reply or a success outcome event).
    fn sends_on(&self) -> bool {
        self.reply.is_some() || self.on_success.is_some()
    }

    /// The reply and the success outcome event; a failure to send them fails the
    /// delivery, so they are retried rather than lost.
    async fn send_on(
        &self,
        event: &Event,
        reply: Option<&Event>,
        trace: &[(String, String)],
        group: Option<&str>,
    ) -> Result<(), Failure> {
        if let (Some(publisher), Some(reply)) = (&self.reply, reply) {
            let mut reply = with_trace(reply, trace).into_owned();
            if envelope::correlation_id(&reply).is_none() {
                reply.set_extension(
                    envelope::CORRELATION_ID,
                    envelope::correlation_id(event).unwrap_or_default(),
                );
            }
            publisher
                .send(&reply, group)
                .await
                .map_err(Failure::transient)?;
        }
        if let Some(target) = &self.on_success {
            let outcome = outcome_event(event, &self.pipeline, &target.event_type, None, trace);
            target
                .publisher
                .send(&outcome, group)
                .await
                .map_err(Failure::transient)?;
        }
        Ok(())
    }

    /// Announces a dead-lettered event on the failure destination, when there is one.
    pub async fn dead_lettered(
        &self,
        event: &Event,
        error: &str,
        group: Option<&str>,
    ) -> Result<(), String> {
        let Some(target) = &self.on_failure else {
            return Ok(());
        };
        let trace = eventpipe_core::telemetry::inject(&tracing::Span::current());
        let outcome = outcome_event(
            event,
            &self.pipeline,
            &target.event_type,
            Some(error),
            &trace,
        );
        Box::pin(target.publisher.send(&outcome, group)).await
    }
}

/// The outcome of `input`: same correlation id, the input's id as subject, and an id
/// derived from the input's so a repeated outcome is recognisably the same event.
pub fn outcome_event(
    input: &Event,
    pipeline: &str,
    event_type: &str,
    error: Option<&str>,
    trace: &[(String, String)],
) -> Event {
    let mut data = json!({
        "eventId": input.id(),
        "eventType": input.ty(),
        "data": envelope::data_json(input),
    });
    if let Some(error) = error {
        data["error"] = json!(error);
    }
    envelope::build(NewEvent {
        id: format!("{}:{event_type}", input.id()),
        source: format!("/eventpipe/{pipeline}"),
        event_type: event_type.to_string(),
        subject: Some(input.id().to_string()),
        correlation_id: envelope::correlation_id(input).unwrap_or_else(|| input.id().to_string()),
        data,
        trace: trace.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_events_keep_the_correlation_and_point_at_their_input() {
        let input = envelope::build(NewEvent {
            id: "n-1".into(),
            source: "/eventpipe/notes/create-note".into(),
            event_type: "note-created".into(),
            correlation_id: "req-7".into(),
            data: json!({"text": "hi"}),
            ..Default::default()
        });
        let out = outcome_event(&input, "notes", "note-failed", Some("HTTP 500"), &[]);
        assert_eq!(out.id(), "n-1:note-failed");
        assert_eq!(out.ty(), "note-failed");
        assert_eq!(out.subject(), Some("n-1"));
        assert_eq!(envelope::correlation_id(&out).as_deref(), Some("req-7"));
        let data = envelope::data_json(&out);
        assert_eq!(data["data"]["text"], "hi");
        assert_eq!(data["error"], "HTTP 500");
        assert_eq!(data["eventType"], "note-created");
    }
}
