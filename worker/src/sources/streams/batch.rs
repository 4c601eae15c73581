//! Delivering one batch of a shard. Its records are split by partition key among
//! `parallelizationFactor` lanes, delivered at the same time; each lane's records go
//! to the processor together ([`Handler::handle_batch`]), round after round as
//! [`round::next`] decides: retries from the first failure with the
//! DeadLetterPolicy's backoff, halves with `bisectOnError`, and a record out of
//! attempts, or older than `maxRecordAge`, given up alone to the dead-letter queue
//! with its shard, sequence number and error. How far the batch got is the prefix
//! of its records that all finished.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodbstreams::types::Record;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::sqs_message::{self, DeadLetterReasons};
use eventpipe_core::{envelope, telemetry};
use futures::future::join_all;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::lanes::{finished_prefix, split};
use super::reader::Reader;
use super::records::{self, Origin};
use super::round::{self, Next};
use crate::backoff;
use crate::batch::Item;
use crate::handler::{Attempt, Decision};
use crate::holding::{Hold, Step};
use crate::publish::Publisher;
use crate::sources::lock;

/// Pause before trying the dead-letter queue again.
const DLQ_RETRY: Duration = Duration::from_secs(2);

/// How far a batch got: its first `done` records are finished (delivered, filtered,
/// duplicates or dead-lettered); `interrupted` when it stopped before the end.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub interrupted: bool,
}

/// Whether a record made at `created` is older than `max_age` at `now`.
pub fn too_old(created: Option<SystemTime>, max_age: Option<Duration>, now: SystemTime) -> bool {
    match (created, max_age) {
        (Some(at), Some(max)) => now.duration_since(at).is_ok_and(|age| age > max),
        _ => false,
    }
}

/// A batch's records read once, and what its lanes share.
struct Batch<'a> {
    records: &'a [Record],
    events: Vec<Event>,
    keys: Vec<String>,
    finished: Mutex<Vec<bool>>,
}

impl Batch<'_> {
    fn finish(&self, positions: &[usize]) {
        let mut finished = lock(&self.finished);
        for &p in positions {
            finished[p] = true;
        }
    }
}

/// A lane's count of failures and last error per record (a bisecting round's
/// failures are not counted).
#[derive(Default)]
struct Tries {
    failures: HashMap<usize, u32>,
    last_error: HashMap<usize, String>,
    /// Rounds in a row that ended holding, for the holds' backoff; the records of
    /// such a round are not aged out by `maxRecordAge` (they were not judged).
    holds: u32,
}

impl Tries {
    /// Counts the failures among `results` of the records at `range`.
    fn count(&mut self, range: &[usize], results: &[round::Result]) {
        for (p, r) in range.iter().zip(results) {
            if r.failed() {
                *self.failures.entry(*p).or_default() += 1;
            }
        }
    }
}

impl Reader {
    /// Delivers `records` until all are finished or the reader is told to stop.
    pub async fn deliver(&self, records: &[Record]) -> Progress {
        let origin = self.origin();
        let batch = Batch {
            records,
            events: records
                .iter()
                .map(|r| records::to_event(r, &origin))
                .collect(),
            keys: records.iter().map(records::subject).collect(),
            finished: Mutex::new(vec![false; records.len()]),
        };
        let metrics = &self.source.handler.metrics;
        (metrics.received.get_or_create(&self.source.labels)).inc_by(records.len() as u64);
        let factor = self.source.spec.parallelization_factor.max(1) as usize;
        let lanes = split(&batch.keys, factor);
        let ended = join_all(lanes.into_iter().map(|l| self.lane(&batch, l))).await;
        let done = finished_prefix(&lock(&batch.finished));
        Progress {
            done,
            interrupted: ended.contains(&false) || done < records.len(),
        }
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            pipeline: &self.source.labels.pipeline,
            binding: &self.source.labels.source,
            shard: self.shard(),
        }
    }

    /// One lane's records, round after round until all are finished; false when the
    /// reader must stop first.
    async fn lane(&self, batch: &Batch<'_>, positions: Vec<usize>) -> bool {
        let mut work = VecDeque::from([positions]);
        let mut tries = Tries::default();
        while let Some(range) = work.pop_front() {
            if self.control.lost.is_cancelled() {
                return false;
            }
            let range = match tries.holds {
                0 => match self.give_up_too_old(batch, range, &tries).await {
                    Some(range) => range,
                    None => return false,
                },
                _ => range,
            };
            if range.is_empty() {
                continue;
            }
            // A processor taking one event at a time gets a round per record, so an
            // interrupted batch is still checkpointed past each record done.
            let take = match self.source.handler.processor.batch_size() {
                Some(_) => range.len(),
                None => 1,
            };
            let (head, rest) = range.split_at(take);
            let Some(results) = self.round(batch, head, &mut tries).await else {
                return false;
            };
            let Some(again) = self.settle(batch, head, &results, &mut tries).await else {
                return false;
            };
            if !rest.is_empty() {
                work.push_front(rest.to_vec());
            }
            for range in again.into_iter().rev() {
                work.push_front(range);
            }
        }
        true
    }

    /// Acts on a round's results: finishes the records done, dead-letters one given
    /// up (reading on in the same results past it), waits before a retry; the ranges
    /// still to deliver, in order, or `None` when the reader must stop first.
    async fn settle(
        &self,
        batch: &Batch<'_>,
        head: &[usize],
        results: &[round::Result],
        tries: &mut Tries,
    ) -> Option<Vec<Vec<usize>>> {
        let bisect = self.source.spec.bisect_on_error;
        let holds = std::mem::take(&mut tries.holds);
        let mut from = 0;
        while from < head.len() {
            let (left, got) = (&head[from..], &results[from.min(results.len())..]);
            match round::next(got, left.len(), bisect) {
                Next::Done => {
                    batch.finish(left);
                    break;
                }
                Next::Split { at } => {
                    tracing::info!(
                        shard = self.shard(),
                        records = left.len(),
                        "every record of the batch failed; bisecting it"
                    );
                    return Some(vec![left[..at].to_vec(), left[at..].to_vec()]);
                }
                Next::Again { finished, wait } => {
                    tries.count(left, got);
                    batch.finish(&left[..finished]);
                    let failures = tries.failures.get(&left[finished]).copied().unwrap_or(1);
                    let wait = wait.unwrap_or_else(|| {
                        backoff::delay(&Default::default(), failures, fastrand::f64())
                    });
                    let held = got.iter().filter(|r| matches!(r, round::Result::Held(..)));
                    tries.holds = match got.get(finished) {
                        Some(round::Result::Held(..)) => holds + 1,
                        _ => 0,
                    };
                    if !self.wait(wait, held.count()).await {
                        return None;
                    }
                    return Some(vec![left[finished..].to_vec()]);
                }
                Next::GiveUp { finished, error } => {
                    tries.count(&left[..=finished], &got[..=finished]);
                    batch.finish(&left[..finished]);
                    let p = left[finished];
                    let attempts = tries.failures.get(&p).copied().unwrap_or(0);
                    if !self.dead_letter(batch, p, &error, attempts).await {
                        return None;
                    }
                    batch.finish(&[p]);
                    from += finished + 1;
                }
            }
        }
        Some(vec![])
    }

    /// Waits before a lane's next round, with the records it holds for a throttling
    /// processor counted in `eventpipe_deliveries_held`; false when stopping.
    async fn wait(&self, wait: Duration, held: usize) -> bool {
        let gauge = (self.source.handler.metrics.held)
            .get_or_create(&self.source.labels)
            .clone();
        gauge.inc_by(held as i64);
        let went_on = self.control.pause(wait).await;
        gauge.dec_by(held as i64);
        went_on
    }

    /// Gives up the records of `range` past `maxRecordAge`; the others, or `None`
    /// when the reader must stop first.
    async fn give_up_too_old(
        &self,
        batch: &Batch<'_>,
        range: Vec<usize>,
        tries: &Tries,
    ) -> Option<Vec<usize>> {
        let max_age = self.source.spec.max_record_age.as_ref().map(|d| d.as_std());
        let now = SystemTime::now();
        let mut young = Vec::with_capacity(range.len());
        for p in range {
            if !too_old(records::created(&batch.records[p]), max_age, now) {
                young.push(p);
                continue;
            }
            let last = tries.last_error.get(&p).map(String::as_str).unwrap_or("");
            let attempts = tries.failures.get(&p).copied().unwrap_or(0);
            if !self
                .dead_letter(batch, p, &self.too_old_error(last), attempts)
                .await
            {
                return None;
            }
            batch.finish(&[p]);
        }
        Some(young)
    }

    /// One delivery of `range` through the handler, holding a permit of the
    /// pipeline's concurrency and admitted by its circuit; `None` when the reader is
    /// told to stop first.
    async fn round(
        &self,
        batch: &Batch<'_>,
        range: &[usize],
        tries: &mut Tries,
    ) -> Option<Vec<round::Result>> {
        let _permit = self.permits.reserve(1, &self.control.abort).await?;
        let items: Vec<Item<'_>> = (range.iter())
            .map(|&p| Item {
                event: &batch.events[p],
                attempt: Attempt {
                    receive_count: tries.failures.get(&p).copied().unwrap_or(0) + 1,
                    group: Some(&batch.keys[p]),
                    policy: self.source.policy.as_ref(),
                },
                span: self.span(&batch.records[p], &batch.events[p]),
            })
            .collect();
        let handler = &self.source.handler;
        let steps = tokio::select! {
            steps = async {
                let admission = self.permits.admit().await;
                let steps = handler.handle_batch(&items, &self.source.labels).await;
                self.report(admission, &steps);
                steps
            } => steps,
            _ = self.control.abort.cancelled() => return None,
            _ = self.control.lost.cancelled() => return None,
        };
        let results = (items.iter().zip(range).zip(steps))
            .map(|((item, &p), step)| self.result(step, p, item, tries))
            .collect();
        Some(results)
    }

    /// Tells the circuit how the processor answered the round.
    fn report(&self, admission: crate::gate::Admission<'_>, steps: &[Step]) {
        let throttled = steps.iter().find_map(|s| match s {
            Step::Hold(Hold::Throttled(asked), _) => Some(*asked),
            _ => None,
        });
        let asked = |s: &Step| {
            !matches!(
                s,
                Step::Done(Decision::Ack("filtered" | "duplicate"))
                    | Step::Hold(Hold::Claimed(_), _)
            )
        };
        match throttled {
            Some(asked) => {
                let labels = &self.source.labels;
                self.source
                    .handler
                    .metrics
                    .throttled
                    .get_or_create(labels)
                    .inc();
                admission.throttled(asked);
            }
            None if steps.iter().any(asked) => admission.answered(),
            None => drop(admission), // the processor was not asked
        }
    }

    /// A record's step as the lane reads it, counted and logged.
    fn result(&self, step: Step, p: usize, item: &Item<'_>, tries: &mut Tries) -> round::Result {
        let metrics = &self.source.handler.metrics;
        let labels = &self.source.labels;
        let span = &item.span;
        match step {
            Step::Done(Decision::Ack(outcome)) => {
                tracing::debug!(parent: span, outcome, "done");
                metrics.outcome(labels, outcome);
                metrics.record(labels, item.event, outcome, span);
                round::Result::Done
            }
            Step::Done(Decision::Retry(delay, error)) => {
                tracing::warn!(parent: span, error = %error, retry_in = ?delay, "delivery failed; will retry");
                metrics.outcome(labels, "retried");
                metrics.record(labels, item.event, "retried", span);
                tries.last_error.insert(p, error.clone());
                round::Result::Retry(delay, error)
            }
            Step::Done(Decision::DeadLetter(error)) => round::Result::GiveUp(error),
            Step::Hold(hold, why) => {
                let wait = hold.wait(tries.holds + 1, fastrand::f64());
                tracing::debug!(parent: span, error = %why, retry_in = ?wait, "holding the record");
                round::Result::Held(wait, why)
            }
        }
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

    /// A consumer span continuing the trace of whoever wrote the item.
    fn span(&self, record: &Record, event: &Event) -> tracing::Span {
        let table = &self.source.table;
        let span = tracing::info_span!(
            "process",
            otel.name = format!("process {table}"),
            otel.kind = "consumer",
            pipeline = %self.source.labels.pipeline,
            correlation.id = envelope::correlation_id(event).unwrap_or_default(),
            event.id = event.id(),
        );
        let sequence = records::sequence_number(record);
        telemetry::process_attributes(&span, "aws_dynamodb_streams", table, sequence);
        let shard = self.shard().to_string();
        span.set_attribute("messaging.destination.partition.id", shard);
        eventpipe_core::telemetry::continue_trace(&span, envelope::trace_pairs(event));
        span
    }

    /// The record at `p` to the dead-letter queue after `attempts` deliveries; false
    /// when the reader had to stop first.
    async fn dead_letter(&self, batch: &Batch<'_>, p: usize, error: &str, attempts: u32) -> bool {
        let (record, event) = (&batch.records[p], &batch.events[p]);
        let span = self.span(record, event);
        (self.send_dead_letter(record, event, error, attempts))
            .instrument(span)
            .await
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
        // Given up either way: the feed shows it, under the record's span.
        let given_up = |outcome: &str| {
            metrics.outcome(&self.source.labels, outcome);
            metrics.record(
                &self.source.labels,
                event,
                outcome,
                &tracing::Span::current(),
            );
        };
        let Some(dlq) = &self.source.dlq else {
            tracing::error!(
                error,
                sequence_number = records::sequence_number(record),
                "record given up and discarded: the source has no DeadLetterPolicy"
            );
            given_up("discarded");
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
        given_up("dead_lettered");
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
