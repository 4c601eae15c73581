//! A batch of events through the pipeline (a shard's records): each filtered and
//! claimed on its own, the rest delivered together to a processor that takes
//! batches (in order, as many requests as its batch size needs), and each concluded
//! on its own (sent on, claim completed, failure judged). A processor that takes one
//! event at a time gets them in order, up to the first that is not done, so a
//! partition key's later records never overtake a failed one.

use cloudevents::Event;
use futures::future::join_all;
use tracing::Instrument;

use crate::handler::{Attempt, Decision, Handler, Prepared};
use crate::holding::Step;
use crate::metrics::Source;
use crate::processor::{Failure, Outcome};

/// One event of a batch, with its delivery so far and the span it is handled in.
pub struct Item<'a> {
    pub event: &'a Event,
    pub attempt: Attempt<'a>,
    pub span: tracing::Span,
}

/// Whether a step finishes its event (delivered, filtered, a duplicate).
pub fn is_done(step: &Step) -> bool {
    matches!(step, Step::Done(Decision::Ack(_)))
}

impl Handler {
    /// A step per item, in order; fewer than the items when a processor taking one
    /// event at a time stopped at one not done (the rest were not tried).
    pub(crate) async fn handle_batch(&self, items: &[Item<'_>], source: &Source) -> Vec<Step> {
        match self.processor.batch_size() {
            Some(max) => self.together(items, max.max(1), source).await,
            None => self.one_by_one(items, source).await,
        }
    }

    async fn one_by_one(&self, items: &[Item<'_>], source: &Source) -> Vec<Step> {
        let mut steps = Vec::with_capacity(items.len());
        for item in items {
            let step = (self.handle(item.event, &item.attempt, source))
                .instrument(item.span.clone())
                .await;
            let done = is_done(&step);
            steps.push(step);
            if !done {
                break;
            }
        }
        steps
    }

    async fn together(&self, items: &[Item<'_>], max: usize, source: &Source) -> Vec<Step> {
        let prepared = join_all(items.iter().map(|i| self.ready(i))).await;
        let mut ready: Vec<(usize, Prepared)> = vec![];
        let mut steps: Vec<Option<Step>> = Vec::with_capacity(items.len());
        for (k, p) in prepared.into_iter().enumerate() {
            match p {
                Ok(p) => {
                    ready.push((k, p));
                    steps.push(None);
                }
                Err(step) => steps.push(Some(step)),
            }
        }
        for chunk in ready.chunks_mut(max) {
            let deliveries = (chunk.iter_mut())
                .map(|(k, p)| p.delivery(items[*k].event, &items[*k].attempt))
                .collect();
            let outcomes = self.deliver_many(deliveries, source).await;
            let concluded = chunk.iter().zip(outcomes).map(|((k, p), outcome)| {
                let item = &items[*k];
                (self.conclude(item.event, &item.attempt, p, outcome)).instrument(item.span.clone())
            });
            for ((k, _), step) in chunk.iter().zip(join_all(concluded).await) {
                steps[*k] = Some(step);
            }
        }
        steps.into_iter().flatten().collect()
    }

    /// Filtered out, claimed elsewhere, or ready for the processor.
    async fn ready(&self, item: &Item<'_>) -> Result<Prepared, Step> {
        if self.filtered_out(item.event) {
            return Err(Step::Done(Decision::Ack("filtered")));
        }
        (self.prepare(item.event, &item.attempt))
            .instrument(item.span.clone())
            .await
    }

    /// One batch to the processor within the delivery timeout, timed.
    async fn deliver_many(
        &self,
        deliveries: Vec<crate::processor::Delivery<'_>>,
        source: &Source,
    ) -> Vec<Outcome> {
        let n = deliveries.len();
        let started = std::time::Instant::now();
        let batch = self.processor.deliver_batch(deliveries);
        let outcomes = tokio::time::timeout(self.timeout, batch)
            .await
            .unwrap_or_else(|_| {
                let why = format!("delivery timed out after {:?}", self.timeout);
                (0..n)
                    .map(|_| Outcome::Failed(Failure::throttled(None, why.clone())))
                    .collect()
            });
        self.metrics
            .delivery_seconds
            .get_or_create(source)
            .observe(started.elapsed().as_secs_f64());
        outcomes
    }
}
