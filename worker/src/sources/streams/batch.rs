//! Delivering one `GetRecords` batch, in shard order: each record through the
//! pipeline's handler with the DeadLetterPolicy's retries and backoff; a record that
//! is out of attempts, or older than `maxRecordAge`, goes to the dead-letter queue
//! with its shard, sequence number and error, and the shard moves on.
//!
//! Records are delivered one at a time, so a failing record is known exactly. With
//! `bisectOnError` the dead-lettered range is therefore that record alone (what
//! Lambda's splitting converges to); without it, it is the failed range from that
//! record to the end of the batch, as Lambda's event-source mapping does.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodbstreams::types::Record;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope;
use eventpipe_core::sqs_message::{self, DeadLetterReasons};
use tracing::Instrument;

use super::reader::Reader;
use super::records::{self, Origin};
use crate::backoff;
use crate::handler::{Attempt, Decision};
use crate::holding::{Held, Holding};
use crate::publish::Publisher;

/// Pause before trying the dead-letter queue again.
const DLQ_RETRY: Duration = Duration::from_secs(2);

/// How far a batch got: its first `done` records are finished (delivered, filtered,
/// duplicates or dead-lettered); `interrupted` when it stopped before the end.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub interrupted: bool,
}

/// The records to dead-letter when the one at `failed` gives up.
pub fn failed_range(failed: usize, len: usize, bisect: bool) -> Range<usize> {
    match bisect {
        true => failed..failed + 1,
        false => failed..len,
    }
}

/// Whether a record made at `created` is older than `max_age` at `now`.
pub fn too_old(created: Option<SystemTime>, max_age: Option<Duration>, now: SystemTime) -> bool {
    match (created, max_age) {
        (Some(at), Some(max)) => now.duration_since(at).is_ok_and(|age| age > max),
        _ => false,
    }
}

/// The end of one record's delivery.
enum Finished {
    Done,
    /// Out of attempts (after this many deliveries), with the last error.
    Failed(String, u32),
    Interrupted,
}

impl Reader {
    /// Delivers `records` in order until done or told to stop.
    pub async fn deliver(&self, records: &[Record]) -> Progress {
        let bisect = self.source.spec.bisect_on_error;
        let mut i = 0;
        while i < records.len() {
            if self.control.lost.is_cancelled() {
                return Progress {
                    done: i,
                    interrupted: true,
                };
            }
            match self.deliver_one(&records[i]).await {
                Finished::Done => i += 1,
                Finished::Interrupted => {
                    return Progress {
                        done: i,
                        interrupted: true,
                    };
                }
                Finished::Failed(error, attempts) => {
                    let range = failed_range(i, records.len(), bisect);
                    let wanted = range.len();
                    let sent = self.dead_letter(&records[range], &error, attempts).await;
                    i += sent;
                    if sent < wanted {
                        return Progress {
                            done: i,
                            interrupted: true,
                        };
                    }
                }
            }
        }
        Progress {
            done: i,
            interrupted: false,
        }
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            pipeline: &self.source.labels.pipeline,
            binding: &self.source.labels.source,
            shard: self.shard(),
        }
    }

    /// Delivers one record until it is done, out of attempts, or the reader stops.
    async fn deliver_one(&self, record: &Record) -> Finished {
        let event = records::to_event(record, &self.origin());
        let group = records::subject(record);
        let handler = &self.source.handler;
        handler
            .metrics
            .received
            .get_or_create(&self.source.labels)
            .inc();
        let mut last_error = String::new();
        for attempt in 1..=u32::MAX {
            if too_old(records::created(record), self.max_age(), SystemTime::now()) {
                return Finished::Failed(self.too_old_error(&last_error), attempt - 1);
            }
            let span = self.span(record, &event);
            let attempt_of = Attempt {
                receive_count: attempt,
                group: Some(&group),
                policy: self.source.policy.as_ref(),
            };
            let decision = tokio::select! {
                d = self.attempt(&event, &attempt_of).instrument(span.clone()) => d,
                _ = self.control.abort.cancelled() => None,
                _ = self.control.lost.cancelled() => None,
            };
            let Some(decision) = decision else {
                return Finished::Interrupted;
            };
            match decision {
                Decision::Ack(outcome) => {
                    tracing::debug!(parent: &span, outcome, "done");
                    handler.metrics.outcome(&self.source.labels, outcome);
                    return Finished::Done;
                }
                Decision::DeadLetter(error) => return Finished::Failed(error, attempt),
                Decision::Retry(delay, error) => {
                    if !self.retry_after(delay, &error, attempt, &span).await {
                        return Finished::Interrupted;
                    }
                    last_error = error;
                }
            }
        }
        Finished::Interrupted
    }

    /// One delivery, holding a permit of the pipeline's concurrency. A throttled
    /// record is held here, the shard waiting at it, and never judged; `None` when
    /// the reader is told to finish first.
    async fn attempt(&self, event: &Event, attempt: &Attempt<'_>) -> Option<Decision> {
        let _permit = self.permits.reserve(1, &self.control.abort).await?;
        let source = &self.source;
        let holding = Holding {
            gate: &self.permits,
            labels: &source.labels,
            stop: &self.control.finish,
            limit: None,
            on_hold: &|| {},
        };
        match source
            .handler
            .handle_holding(event, attempt, &holding)
            .await
        {
            Held::Decided(decision) => Some(decision),
            Held::HandBack(..) | Held::Stopped => None,
        }
    }

    /// Waits before the next attempt; false when the reader must stop first.
    async fn retry_after(
        &self,
        delay: Option<Duration>,
        error: &str,
        attempt: u32,
        span: &tracing::Span,
    ) -> bool {
        // Without a policy, retry as a policy's default backoff would.
        let delay =
            delay.unwrap_or_else(|| backoff::delay(&Default::default(), attempt, fastrand::f64()));
        tracing::warn!(parent: span, error = %error, retry_in = ?delay, "delivery failed; will retry");
        let handler = &self.source.handler;
        handler.metrics.outcome(&self.source.labels, "retried");
        self.control.pause(delay).await
    }

    /// Why a record past `maxRecordAge` is given up, with the last delivery error.
    fn too_old_error(&self, last_error: &str) -> String {
        let max = self.source.spec.max_record_age.as_ref();
        let error = format!(
            "record older than maxRecordAge ({})",
            max.map(|d| d.as_str()).unwrap_or_default()
        );
        match last_error.is_empty() {
            true => error,
            false => format!("{error}; last error: {last_error}"),
        }
    }

    fn max_age(&self) -> Option<Duration> {
        self.source.spec.max_record_age.as_ref().map(|d| d.as_std())
    }

    /// A consumer span continuing the trace of whoever wrote the item.
    fn span(&self, record: &Record, event: &Event) -> tracing::Span {
        let table = &self.source.table;
        let span = tracing::info_span!(
            "process",
            otel.name = format!("process {table}"),
            otel.kind = "consumer",
            messaging.system = "aws_dynamodb_streams",
            messaging.operation.type = "process",
            messaging.destination.name = %table,
            messaging.destination.partition.id = self.shard(),
            messaging.message.id = records::sequence_number(record),
            pipeline = %self.source.labels.pipeline,
            correlation.id = envelope::correlation_id(event).unwrap_or_default(),
            event.id = event.id(),
        );
        let trace = envelope::trace_context(event);
        eventpipe_core::telemetry::continue_trace(
            &span,
            trace.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        span
    }

    /// Sends `records` (a failed range) to the dead-letter queue, the first with
    /// `error`; returns how many were sent before the reader had to stop.
    async fn dead_letter(&self, records: &[Record], error: &str, attempts: u32) -> usize {
        let first = records::sequence_number(&records[0]).to_string();
        for (k, record) in records.iter().enumerate() {
            let (why, count) = match k {
                0 => (error.to_string(), attempts),
                _ => (
                    format!("in the failed range from sequence number {first}: {error}"),
                    0,
                ),
            };
            let event = records::to_event(record, &self.origin());
            let span = self.span(record, &event);
            if !self
                .send_dead_letter(record, &event, &why, count)
                .instrument(span)
                .await
            {
                return k;
            }
        }
        records.len()
    }

    /// One record to the DLQ, retried until sent or the reader stops; true when done
    /// with it (sent, or discarded because there is no DLQ).
    async fn send_dead_letter(
        &self,
        record: &Record,
        event: &Event,
        error: &str,
        count: u32,
    ) -> bool {
        let metrics = &self.source.handler.metrics;
        let Some(dlq) = &self.source.dlq else {
            tracing::error!(
                error,
                sequence_number = records::sequence_number(record),
                "record given up and discarded: the source has no DeadLetterPolicy"
            );
            metrics.outcome(&self.source.labels, "discarded");
            return true;
        };
        let group = records::subject(record);
        let reasons = DeadLetterReasons {
            error: error.to_string(),
            receive_count: count,
            origin: sqs_message::Origin::StreamRecord {
                stream_arn: self.source.stream_arn.clone(),
                shard: self.shard().to_string(),
                sequence_number: records::sequence_number(record).to_string(),
            },
        };
        if !self.send_until_sent(dlq, event, &group, &reasons).await {
            return false;
        }
        tracing::warn!(error, dlq = dlq.url(), "dead-lettered");
        metrics.outcome(&self.source.labels, "dead_lettered");
        if let Err(e) = self
            .source
            .handler
            .dead_lettered(event, error, Some(&group))
            .await
        {
            tracing::error!(error = %e, "failure outcome event not sent");
        }
        true
    }

    /// Retries an unreachable DLQ, holding the shard rather than skipping the record;
    /// false when the reader must stop first.
    async fn send_until_sent(
        &self,
        dlq: &Publisher,
        event: &Event,
        group: &str,
        reasons: &DeadLetterReasons,
    ) -> bool {
        let mut failures = 0;
        loop {
            let Err(e) = dlq.dead_letter(event, Some(group), reasons).await else {
                return true;
            };
            tracing::error!(error = %e, "could not dead-letter; trying again");
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(DLQ_RETRY * failures.min(15)) => {}
                _ = self.control.abort.cancelled() => return false,
                _ = self.control.lost.cancelled() => return false,
                _ = self.control.finish.cancelled() => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisecting_isolates_the_failing_record_and_otherwise_the_rest_of_the_batch_fails() {
        assert_eq!(failed_range(3, 10, true), 3..4);
        assert_eq!(failed_range(3, 10, false), 3..10);
        assert_eq!(failed_range(9, 10, false), 9..10);
        assert_eq!(failed_range(0, 1, true), 0..1);
    }

    #[test]
    fn records_older_than_the_max_age_are_too_old() {
        let now = SystemTime::now();
        let minute = Duration::from_secs(60);
        assert!(too_old(Some(now - 2 * minute), Some(minute), now));
        assert!(!too_old(Some(now - minute / 2), Some(minute), now));
        assert!(!too_old(Some(now - 100 * minute), None, now), "no limit");
        assert!(!too_old(None, Some(minute), now), "age unknown");
        assert!(
            !too_old(Some(now + minute), Some(minute), now),
            "clock skew"
        );
    }
}
