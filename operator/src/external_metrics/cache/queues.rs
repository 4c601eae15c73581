//! The SQS queues read during one refresh: each once, however many pipelines read it.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_crds::QueueBinding;

use crate::binding;
use crate::context::Context;

/// Approximate message counts of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub visible: i64,
    /// Received and not yet deleted or handed back.
    pub in_flight: i64,
    /// Sent with a delay that has not passed yet.
    pub delayed: i64,
}

impl QueueCounts {
    /// Everything still to be worked: a queue with none is idle.
    pub fn backlog(&self) -> i64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// A queue by URL, as a binding reaches it ([`binding::reach`]).
type QueueKey = (binding::Reach, String);

#[derive(Default)]
pub struct Queues(pub HashMap<QueueKey, Option<QueueCounts>>);

impl Queues {
    /// A binding's queue counts; none before its queue is known or when it cannot be read.
    pub async fn counts(
        &mut self,
        ctx: &Context,
        b: &QueueBinding,
        ns: &str,
    ) -> Option<QueueCounts> {
        let url = b.status.as_ref()?.queue_url.clone()?;
        let key = (binding::reach(b, ns), url.clone());
        if !self.0.contains_key(&key) {
            let counts = match binding::sqs_client(b, ctx, ns).await {
                Some(sqs) => read(&sqs, &url)
                    .await
                    .map_err(|e| tracing::warn!(queue = %url, error = %e, "queue depth not read"))
                    .ok(),
                None => None,
            };
            self.0.insert(key.clone(), counts);
        }
        self.0[&key]
    }
}

/// One GetQueueAttributes for the three counts.
async fn read(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueCounts, String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(Attr::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: Attr| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueCounts {
        visible: n(Attr::ApproximateNumberOfMessages),
        in_flight: n(Attr::ApproximateNumberOfMessagesNotVisible),
        delayed: n(Attr::ApproximateNumberOfMessagesDelayed),
    })
}
