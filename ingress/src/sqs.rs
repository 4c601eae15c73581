//! Publishing to an SQS queue. Concurrent events for one queue are coalesced into
//! `SendMessageBatch` calls (up to 10 entries and 1 MiB, gathered for a flush delay
//! of a few milliseconds); each caller is answered with the outcome of its own
//! entry only, so one failed entry fails one request. Only a few calls may carry
//! partial batches at once: when the queue answers slowly, batches grow instead of
//! calls multiplying.

use std::{sync::Arc, time::Duration};

use aws_sdk_sqs::{
    Client,
    error::DisplayErrorContext,
    types::{BatchResultErrorEntry, SendMessageBatchResultEntry},
};
use eventpipe_core::resolve;
use eventpipe_core::sqs_message::{self, MAX_BYTES, Outgoing};
use eventpipe_crds::SqsQueue;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::publish::{BoxFuture, Destination, Message, PublishError, Publisher, Receipt, System};

/// Entries per `SendMessageBatch`; SQS also limits a whole batch to
/// [`MAX_BYTES`], as it does one message.
pub const MAX_ENTRIES: usize = 10;

#[derive(Clone, Debug)]
pub struct BatchSettings {
    /// How long the first event of a batch waits for company.
    pub flush_delay: Duration,
    /// `SendMessageBatch` calls in flight at once, per queue.
    pub max_in_flight: usize,
    /// Of those, calls carrying a batch that is not full.
    pub partial_in_flight: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            flush_delay: Duration::from_millis(5),
            max_in_flight: 32,
            partial_in_flight: 2,
        }
    }
}

pub struct SqsPublisher {
    destination: Destination,
    fifo: bool,
    tx: mpsc::Sender<Pending>,
}

struct Pending {
    entry: Outgoing,
    reply: oneshot::Sender<Result<Receipt, PublishError>>,
}

impl SqsPublisher {
    /// Starts the queue's batcher on `tasks`; needs a Tokio runtime. The URL of a queue
    /// given by name is looked up on first use, so a missing queue fails requests
    /// (503), not start-up. Once this is dropped, the batcher sends what it holds and
    /// ends, and `tasks` tracks it until its last call returns.
    pub fn new(
        client: Client,
        queue: &SqsQueue,
        settings: BatchSettings,
        sizes: Histogram,
        tasks: &TaskTracker,
    ) -> Self {
        let name = resolve::queue_name(queue);
        let fifo = queue.fifo || sqs_message::is_fifo(&name);
        let (tx, rx) = mpsc::channel(4 * 1024);
        let sender = Arc::new(Sender {
            client,
            queue: queue.clone(),
            url: tokio::sync::OnceCell::new(),
        });
        tasks.spawn(batch_loop(rx, sender, settings, sizes, tasks.clone()));
        Self {
            destination: Destination {
                system: System::Sqs,
                name,
            },
            fifo,
            tx,
        }
    }
}

impl Publisher for SqsPublisher {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Receipt, PublishError>> {
        Box::pin(async move {
            let entry = Outgoing::event(&message.event, self.fifo, Some(&message.group_id));
            let size = entry.size();
            if size > MAX_BYTES {
                return Err(PublishError::TooLarge {
                    size,
                    limit: MAX_BYTES,
                    destination: format!("SQS queue {}", self.destination.name),
                });
            }
            let stopped = || PublishError::Unavailable("the queue's publisher has stopped".into());
            let (reply, answer) = oneshot::channel();
            self.tx
                .send(Pending { entry, reply })
                .await
                .map_err(|_| stopped())?;
            answer.await.unwrap_or_else(|_| Err(stopped()))
        })
    }
}

async fn batch_loop(
    mut rx: mpsc::Receiver<Pending>,
    sender: Arc<Sender>,
    settings: BatchSettings,
    sizes: Histogram,
    tasks: TaskTracker,
) {
    let calls = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let partial_calls = Arc::new(Semaphore::new(settings.partial_in_flight.max(1)));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return, // every publisher handle is gone
            },
        };
        let (mut batch, mut rest) = gather(&mut rx, first, settings.flush_delay).await;
        let mut partial = None;
        if rest.is_none() {
            (partial, rest) = hold_partial(&mut rx, &mut batch, &partial_calls).await;
        }
        carried = rest;
        let call = calls.clone().acquire_owned().await.expect("never closed");
        sizes.observe(batch.items.len() as f64);
        let sender = sender.clone();
        tasks.spawn(async move {
            sender.send(batch.items).await;
            drop((call, partial));
        });
    }
}

/// Events gathered for one call.
struct Batch {
    items: Vec<Pending>,
    bytes: usize,
}

impl Batch {
    fn new(first: Pending) -> Self {
        Self {
            bytes: first.entry.size(),
            items: vec![first],
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= MAX_ENTRIES
    }

    /// Adds an event, or hands it back when it would pass the byte limit.
    fn push(&mut self, p: Pending) -> Result<(), Pending> {
        let size = p.entry.size();
        if self.bytes + size > MAX_BYTES {
            return Err(p);
        }
        self.bytes += size;
        self.items.push(p);
        Ok(())
    }
}

/// A batch starting with `first`: what else arrives within `delay`, up to the
/// limits. An event past the byte limit is returned to start the next batch.
async fn gather(
    rx: &mut mpsc::Receiver<Pending>,
    first: Pending,
    delay: Duration,
) -> (Batch, Option<Pending>) {
    let deadline = tokio::time::Instant::now() + delay;
    let mut batch = Batch::new(first);
    while !batch.is_full() {
        let next = match rx.try_recv() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => break,
            },
        };
        if let Err(next) = batch.push(next) {
            return (batch, Some(next));
        }
    }
    (batch, None)
}

/// A batch that is not full needs one of the few partial-batch calls; while they
/// are all busy it keeps gathering. A slow queue thus gets fuller batches rather
/// than more calls; a full batch goes without one.
async fn hold_partial(
    rx: &mut mpsc::Receiver<Pending>,
    batch: &mut Batch,
    partial_calls: &Arc<Semaphore>,
) -> (Option<OwnedSemaphorePermit>, Option<Pending>) {
    while !batch.is_full() {
        tokio::select! {
            biased;
            permit = partial_calls.clone().acquire_owned() => {
                return (Some(permit.expect("never closed")), None);
            }
            next = rx.recv() => match next {
                Some(p) => {
                    if let Err(p) = batch.push(p) {
                        return (None, Some(p));
                    }
                }
                // Shutting down: send what there is.
                None => return (None, None),
            },
        }
    }
    (None, None)
}

struct Sender {
    client: Client,
    queue: SqsQueue,
    url: tokio::sync::OnceCell<String>,
}

impl Sender {
    async fn send(&self, batch: Vec<Pending>) {
        let (entries, replies): (Vec<Outgoing>, Vec<_>) =
            batch.into_iter().map(|p| (p.entry, p.reply)).unzip();
        let results = self.send_entries(entries).await;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result); // the request may have timed out meanwhile
        }
    }

    async fn send_entries(&self, entries: Vec<Outgoing>) -> Vec<Result<Receipt, PublishError>> {
        let n = entries.len();
        let url = match self.url().await {
            Ok(url) => url,
            Err(e) => return vec![Err(e); n],
        };
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.batch_entry(i))
            .collect();
        let sent = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Ok(out) => outcomes(n, out.successful, out.failed),
            Err(e) => {
                let why = format!("SendMessageBatch: {}", DisplayErrorContext(&e));
                vec![Err(PublishError::Unavailable(why)); n]
            }
        }
    }

    async fn url(&self) -> Result<&str, PublishError> {
        self.url
            .get_or_try_init(|| resolve::queue_url(&self.client, &self.queue))
            .await
            .map(String::as_str)
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}

/// Each entry's outcome, by the ids (`0`..`n`) the batch gave them.
fn outcomes(
    n: usize,
    successful: Vec<SendMessageBatchResultEntry>,
    failed: Vec<BatchResultErrorEntry>,
) -> Vec<Result<Receipt, PublishError>> {
    let unreported = PublishError::Unavailable("SQS did not report on the entry".into());
    let mut out = vec![Err(unreported); n];
    let index = |id: &str| id.parse::<usize>().ok().filter(|&i| i < n);
    for s in successful {
        if let Some(i) = index(&s.id) {
            out[i] = Ok(Receipt {
                message_id: Some(s.message_id),
            });
        }
    }
    for f in failed {
        if let Some(i) = index(&f.id) {
            let why = format!("{}: {}", f.code, f.message.unwrap_or_default());
            out[i] = Err(PublishError::Unavailable(why));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_answer_each_entry_by_its_id() {
        let ok = |id: &str, m: &str| {
            SendMessageBatchResultEntry::builder()
                .id(id)
                .message_id(m)
                .md5_of_message_body("x")
                .build()
                .unwrap()
        };
        let failed = BatchResultErrorEntry::builder()
            .id("1")
            .sender_fault(false)
            .code("InternalError")
            .message("boom")
            .build()
            .unwrap();
        let out = outcomes(3, vec![ok("0", "m-0"), ok("9", "stray")], vec![failed]);
        assert_eq!(
            out[0],
            Ok(Receipt {
                message_id: Some("m-0".into())
            })
        );
        assert_eq!(
            out[1],
            Err(PublishError::Unavailable("InternalError: boom".into()))
        );
        assert!(matches!(out[2], Err(PublishError::Unavailable(_))));
    }

    fn pending(body_len: usize) -> (Pending, oneshot::Receiver<Result<Receipt, PublishError>>) {
        let (reply, rx) = oneshot::channel();
        let entry = Outgoing {
            body: "x".repeat(body_len),
            attributes: Default::default(),
            group_id: None,
            deduplication_id: None,
        };
        (Pending { entry, reply }, rx)
    }

    #[tokio::test]
    async fn gather_stops_at_ten_entries() {
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..25 {
            tx.send(pending(10).0).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, rest) = gather(&mut rx, first, Duration::from_secs(5)).await;
        assert_eq!((batch.items.len(), rest.is_none()), (10, true));
    }

    #[tokio::test]
    async fn gather_stops_before_the_byte_limit() {
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..3 {
            tx.send(pending(MAX_BYTES / 2 - 10).0).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, rest) = gather(&mut rx, first, Duration::from_secs(5)).await;
        assert_eq!((batch.items.len(), rest.is_some()), (2, true));
    }

    #[tokio::test]
    async fn gather_sends_a_lone_event_after_the_flush_delay() {
        let (tx, mut rx) = mpsc::channel(64);
        tx.send(pending(10).0).await.unwrap();
        let first = rx.recv().await.unwrap();
        let (batch, rest) = tokio::time::timeout(
            Duration::from_secs(5),
            gather(&mut rx, first, Duration::from_millis(1)),
        )
        .await
        .expect("does not wait for more");
        assert_eq!((batch.items.len(), rest.is_none()), (1, true));
    }

    #[tokio::test]
    async fn a_partial_batch_keeps_gathering_while_partial_calls_are_busy() {
        let (tx, mut rx) = mpsc::channel(64);
        let partial_calls = Arc::new(Semaphore::new(1));
        let busy = partial_calls.clone().acquire_owned().await.unwrap();
        let mut batch = Batch::new(pending(10).0);
        for _ in 0..12 {
            tx.send(pending(10).0).await.unwrap();
        }
        let (permit, rest) = hold_partial(&mut rx, &mut batch, &partial_calls).await;
        // Full without a partial call; the rest waits in the channel.
        assert_eq!(
            (batch.items.len(), permit.is_none(), rest.is_none()),
            (10, true, true)
        );
        assert_eq!(rx.len(), 3);

        let mut batch = Batch::new(rx.recv().await.unwrap());
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(busy);
        });
        let (permit, _) = tokio::time::timeout(
            Duration::from_secs(5),
            hold_partial(&mut rx, &mut batch, &partial_calls),
        )
        .await
        .expect("a freed call is taken");
        release.await.unwrap();
        assert_eq!((batch.items.len(), permit.is_some()), (3, true));
    }
}
