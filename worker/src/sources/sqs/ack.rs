//! Acknowledgement and visibility: acknowledged messages deleted in batches, retries
//! scheduled by changing a message's visibility, unfinished messages handed back at
//! once, and heartbeats that keep slow deliveries invisible.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::SqsSource;
use super::wire::Wire;
use crate::backoff::visibility_seconds;
use crate::sources::lock;

/// How long a delete waits for company: a message's deletion only has to beat its
/// visibility timeout, and fuller batches mean fewer requests.
const DELETE_LINGER: Duration = Duration::from_millis(50);

/// Deletes acknowledged messages (sent as receipt handles) in batches of up to ten,
/// waiting at most `DELETE_LINGER` for a batch to fill.
pub(super) fn spawn_acker(
    wire: Arc<Wire>,
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
            delete(&wire, &url, &batch).await;
        }
    });
    (tx, task)
}

/// One `DeleteMessageBatch`; failures are logged, as the messages come back anyway.
async fn delete(wire: &Wire, url: &str, receipts: &[String]) {
    match wire.delete(url, receipts).await {
        Ok(failed) => {
            for f in failed {
                tracing::warn!(
                    code = f.code,
                    message = f.message,
                    "delete failed; the message may be redelivered"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "delete failed; messages may be redelivered"),
    }
}

impl SqsSource {
    pub(super) async fn set_visibility(&self, receipt: &str, seconds: i32) {
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
    pub(super) async fn make_visible(&self, receipts: Vec<String>) {
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

    /// Extends the visibility of messages still being worked on (with `heartbeat`)
    /// or held (always), before it runs out.
    pub(super) async fn heartbeat(self: Arc<Self>, done: CancellationToken) {
        let visibility = self.visibility();
        let tick = (visibility / 3).max(Duration::from_millis(500));
        loop {
            tokio::select! { _ = tokio::time::sleep(tick) => {}, _ = done.cancelled() => return }
            let due = self.due_for_heartbeat(visibility / 2);
            if !due.is_empty() {
                tracing::debug!(count = due.len(), "extending visibility of slow deliveries");
                self.change_visibility(&due, visibility_seconds(visibility))
                    .await;
            }
        }
    }

    /// Messages to extend, last made invisible at least `after` ago, marked as
    /// extended now.
    fn due_for_heartbeat(&self, after: Duration) -> Vec<String> {
        let mut inflight = lock(&self.inflight);
        let now = Instant::now();
        let all = self.queue.heartbeat;
        inflight
            .iter_mut()
            .filter(|(_, m)| (all || m.held) && now.duration_since(m.at) >= after)
            .map(|(r, m)| {
                m.at = now;
                r.clone()
            })
            .collect()
    }

    /// Marks messages as held (or waiting for one that is), so that the heartbeat
    /// keeps them invisible.
    pub(super) fn mark_held<'a>(&self, receipts: impl IntoIterator<Item = &'a str>) {
        let mut inflight = lock(&self.inflight);
        for receipt in receipts {
            if let Some(m) = inflight.get_mut(receipt) {
                m.held = true;
            }
        }
    }
}
