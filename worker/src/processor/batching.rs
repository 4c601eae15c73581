//! Collecting deliveries into batches: each event delivered on its own (an SQS
//! message's task) joins the batch being gathered, which goes to the processor once
//! it holds `max` events or its first has waited `window`; each delivery then gets
//! its own outcome. A batch is sent while the next one gathers.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use tokio::sync::mpsc::{self, UnboundedReceiver, error::TryRecvError};
use tokio::sync::oneshot;

use super::{BoxFuture, Delivery, Failure, Outcome, Processor, with_trace};

/// A delivery waiting for its batch, owned, with where its outcome goes.
struct Item {
    event: Event,
    trace: Vec<(String, String)>,
    group: Option<String>,
    completion: Option<aws_sdk_dynamodb::types::TransactWriteItem>,
    answer: oneshot::Sender<Outcome>,
}

pub struct Batching {
    inner: Arc<dyn Processor>,
    queue: mpsc::UnboundedSender<Item>,
    max: usize,
}

impl Batching {
    /// Batches of at most `max` for `inner`, gathered for at most `window`.
    pub fn new<P: Processor + 'static>(inner: P, max: usize, window: Duration) -> Self {
        let inner: Arc<dyn Processor> = Arc::new(inner);
        let (queue, items) = mpsc::unbounded_channel();
        tokio::spawn(collect(inner.clone(), items, max, window));
        Self { inner, queue, max }
    }
}

/// Gathers and sends batches until the processor is dropped.
async fn collect(
    inner: Arc<dyn Processor>,
    mut items: UnboundedReceiver<Item>,
    max: usize,
    window: Duration,
) {
    while let Some(batch) = gather(&mut items, max, window).await {
        tokio::spawn(send(inner.clone(), batch));
    }
}

/// The next batch: the first item to come and those that join it within `window`,
/// at most `max`; `None` once every sender is gone.
async fn gather<T>(
    items: &mut UnboundedReceiver<T>,
    max: usize,
    window: Duration,
) -> Option<Vec<T>> {
    let first = items.recv().await?;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < max {
        match items.try_recv() {
            Ok(item) => batch.push(item),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match tokio::time::timeout_at(deadline, items.recv()).await
            {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            },
        }
    }
    Some(batch)
}

/// One batch to the processor, leaving out deliveries that gave up waiting (their
/// delivery timed out), and each outcome to its delivery.
async fn send(inner: Arc<dyn Processor>, batch: Vec<Item>) {
    let mut answers = Vec::with_capacity(batch.len());
    let mut kept = Vec::with_capacity(batch.len());
    let mut moved = Vec::with_capacity(batch.len());
    for item in batch.into_iter().filter(|i| !i.answer.is_closed()) {
        answers.push(item.answer);
        kept.push((item.event, item.group));
        moved.push((item.trace, item.completion));
    }
    if kept.is_empty() {
        return;
    }
    let deliveries = kept
        .iter()
        .zip(moved)
        .map(|((event, group), (trace, completion))| Delivery {
            event,
            trace,
            group: group.as_deref(),
            completion,
        })
        .collect();
    let outcomes = inner.deliver_batch(deliveries).await;
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        let _ = answer.send(outcome);
    }
}

impl Processor for Batching {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let (answer, outcome) = oneshot::channel();
            let item = Item {
                // Copied with its delivery's trace context, which the batch keeps.
                event: with_trace(d.event, &d.trace).into_owned(),
                trace: d.trace,
                group: d.group.map(str::to_string),
                completion: d.completion,
                answer,
            };
            if self.queue.send(item).is_err() {
                return Outcome::Failed(Failure::transient("the batch collector has stopped"));
            }
            outcome.await.unwrap_or_else(|_| {
                Outcome::Failed(Failure::transient(
                    "the batch ended without this event's outcome",
                ))
            })
        })
    }

    /// Already a batch (a shard's): straight to the processor.
    fn deliver_batch<'a>(&'a self, deliveries: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
        self.inner.deliver_batch(deliveries)
    }

    fn batch_size(&self) -> Option<usize> {
        Some(self.max)
    }

    fn completes_claims(&self) -> bool {
        self.inner.completes_claims()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;
    use eventpipe_core::envelope::{NewEvent, build};
    use std::sync::Mutex;

    fn event(id: &str) -> Event {
        build(NewEvent {
            id: id.into(),
            source: "/s".into(),
            event_type: "t".into(),
            ..Default::default()
        })
    }

    /// Records each batch's ids and fails the events whose id ends in `!`.
    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<String>>>>);

    impl Processor for Recorder {
        fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async move { self.deliver_batch(vec![d]).await.remove(0) })
        }

        fn deliver_batch<'a>(&'a self, ds: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
            let ids: Vec<String> = ds.iter().map(|d| d.event.id().to_string()).collect();
            self.0.lock().unwrap().push(ids.clone());
            Box::pin(async move {
                ids.iter()
                    .map(|id| match id.ends_with('!') {
                        true => Outcome::Failed(Failure::transient("named")),
                        false => Outcome::Delivered { reply: None },
                    })
                    .collect()
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_what_waits_and_what_comes_within_the_window_up_to_its_size() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let window = Duration::from_millis(100);
        assert_eq!(gather(&mut rx, 3, window).await.unwrap(), [0, 1, 2]);
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.send(5).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            late.send(6).unwrap();
        });
        assert_eq!(gather(&mut rx, 10, window).await.unwrap(), [3, 4, 5]);
        assert_eq!(gather(&mut rx, 10, Duration::ZERO).await.unwrap(), [6]);
        drop(tx);
        assert!(gather(&mut rx, 10, window).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_deliveries_share_a_batch_and_each_gets_its_own_outcome() {
        let batches = Arc::new(Mutex::new(vec![]));
        let p = Batching::new(Recorder(batches.clone()), 3, Duration::from_millis(10));
        let events: Vec<Event> = ["a", "b!", "c", "d"].iter().map(|id| event(id)).collect();
        let deliver = |e| {
            p.deliver(Delivery {
                event: e,
                trace: vec![],
                group: None,
                completion: None,
            })
        };
        let outcomes = futures::future::join_all(events.iter().map(deliver)).await;
        let failed: Vec<bool> = outcomes
            .iter()
            .map(|o| matches!(o, Outcome::Failed(_)))
            .collect();
        assert_eq!(failed, [false, true, false, false]);
        assert_eq!(*batches.lock().unwrap(), [vec!["a", "b!", "c"], vec!["d"]]);
    }

    /// Answers no outcome at all.
    struct Mute;

    impl Processor for Mute {
        fn deliver<'a>(&'a self, _: Delivery<'a>) -> BoxFuture<'a, Outcome> {
            unreachable!("only batches")
        }

        fn deliver_batch<'a>(&'a self, _: Vec<Delivery<'a>>) -> BoxFuture<'a, Vec<Outcome>> {
            Box::pin(async { vec![] })
        }
    }

    #[tokio::test]
    async fn a_batch_without_an_outcome_for_an_event_fails_its_delivery() {
        let p = Batching::new(Mute, 10, Duration::ZERO);
        let e = event("a");
        let d = Delivery {
            event: &e,
            trace: vec![],
            group: None,
            completion: None,
        };
        let Outcome::Failed(f) = p.deliver(d).await else {
            panic!("delivered without an outcome");
        };
        assert_eq!(f.message, "the batch ended without this event's outcome");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_that_gave_up_waiting_is_left_out_of_its_batch() {
        let batches = Arc::new(Mutex::new(vec![]));
        let p = Batching::new(Recorder(batches.clone()), 10, Duration::from_millis(100));
        let (gone, kept) = (event("gone"), event("kept"));
        let d = |e| Delivery {
            event: e,
            trace: vec![],
            group: None,
            completion: None,
        };
        let timed_out = tokio::time::timeout(Duration::from_millis(10), p.deliver(d(&gone)));
        assert!(timed_out.await.is_err());
        assert!(matches!(
            p.deliver(d(&kept)).await,
            Outcome::Delivered { .. }
        ));
        assert_eq!(*batches.lock().unwrap(), [vec!["kept"]]);
    }
}
