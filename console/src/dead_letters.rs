//! A pipeline's dead-letter queues: list and show what they hold, and redrive
//! messages (all, or those matching a pattern) back to their source queue at a
//! limited rate, each deleted from the DLQ only after it was re-sent. `eventpipe dlq`
//! and the console both go through here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName as SysAttr,
};
use cloudevents::AttributesReader;
use eventpipe_core::sqs_message::{self, DeadLetterReasons, Outgoing};
use eventpipe_core::{aws, envelope, provision, resolve};
use eventpipe_crds::Pipeline;
use eventpipe_worker::Pattern;

/// How long listed messages stay hidden while a listing or redrive runs.
const HOLD_SECONDS: i32 = 60;

/// One source queue and its dead-letter queue.
pub struct DeadLetterQueue {
    pub binding: String,
    sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub source_url: String,
}

/// A dead-lettered message, as a person wants to see it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub error: Option<String>,
    pub receive_count: Option<String>,
    pub body: String,
    pub attributes: HashMap<String, String>,
    #[serde(skip)]
    receipt: String,
    /// As received, to be sent on as it is.
    #[serde(skip)]
    message: Message,
}

impl DeadLetter {
    fn from_message(m: Message) -> Self {
        let body = m.body.clone().unwrap_or_default();
        let event = serde_json::from_str::<cloudevents::Event>(&body).ok();
        let attributes = sqs_message::string_attributes(&m);
        let reasons = DeadLetterReasons::read(&attributes);
        Self {
            message_id: m.message_id.clone().unwrap_or_default(),
            event_id: event.as_ref().map(|e| e.id().to_string()),
            event_type: event.as_ref().map(|e| e.ty().to_string()),
            error: reasons.as_ref().map(|r| r.error.clone()),
            receive_count: reasons.map(|r| r.receive_count.to_string()),
            receipt: m.receipt_handle.clone().unwrap_or_default(),
            body,
            attributes,
            message: m,
        }
    }

    /// The event as JSON for filters: the CloudEvent, or the raw body wrapped.
    fn as_event_json(&self) -> serde_json::Value {
        match envelope::decode(&self.body, &self.message_id, "/eventpipe/dlq") {
            envelope::Decoded::Event(e) | envelope::Decoded::Wrapped(e) => envelope::as_json(&e),
            envelope::Decoded::Undecodable(_) => serde_json::json!({"data": self.body}),
        }
    }
}

/// The dead-letter queues of a pipeline's SQS sources (or of one of them).
pub async fn queues(
    pipeline: &Pipeline,
    only: Option<&str>,
    secrets_dir: &Path,
) -> anyhow::Result<Vec<DeadLetterQueue>> {
    let mut out = vec![];
    for s in &pipeline.pipeline.spec.sources {
        let name = &s.queue_binding_ref.name;
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let binding = pipeline.binding(&s.queue_binding_ref);
        let (Some(queue), Some(policy)) = (&binding.spec.sqs, pipeline.policy_of(binding)) else {
            continue;
        };
        let sqs = aws_sdk_sqs::Client::new(&aws::config_for(&binding.spec, secrets_dir).await?);
        let source_url = resolve::queue_url(&sqs, queue)
            .await
            .with_context(|| format!("QueueBinding {name:?}"))?;
        let url = resolve::queue_dead_letters(&sqs, &source_url, queue, policy).await?;
        out.push(DeadLetterQueue {
            binding: name.clone(),
            sqs,
            url,
            source_url,
        });
    }
    if out.is_empty() {
        anyhow::bail!(
            "EventPipeline {:?} has no SQS source{} with a DeadLetterPolicy",
            pipeline.name(),
            only.map(|o| format!(" named {o:?}")).unwrap_or_default()
        );
    }
    Ok(out)
}

impl DeadLetterQueue {
    /// The dead-letter queue at `url` of source queue `source_url`, read by `sqs`, of
    /// QueueBinding `binding` (where the queues are known already, as in a cluster).
    pub fn new(binding: String, sqs: aws_sdk_sqs::Client, url: String, source_url: String) -> Self {
        Self {
            binding,
            sqs,
            url,
            source_url,
        }
    }

    /// Messages in the dead-letter queue and in its source queue (visible and in flight).
    pub async fn depths(&self) -> anyhow::Result<(i64, i64)> {
        let dead = provision::queue_depth(&self.sqs, &self.url).await?;
        let source = provision::queue_depth(&self.sqs, &self.source_url).await?;
        Ok((dead, source))
    }

    /// Up to `max` dead letters, left in the queue.
    pub async fn list(&self, max: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let letters = self.hold(max).await?;
        self.release(&letters).await;
        Ok(letters)
    }

    /// Receives up to `max` messages and keeps them hidden for [`HOLD_SECONDS`].
    async fn hold(&self, max: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let mut letters = vec![];
        // Bounded: each round takes up to ten, and stops at the first empty one.
        for _ in 0..max.div_ceil(10).max(1) {
            let want = (max - letters.len()).clamp(1, 10) as i32;
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(want)
                .visibility_timeout(HOLD_SECONDS)
                .message_attribute_names("All")
                .message_system_attribute_names(SysAttr::All)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {}",
                        self.url,
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    )
                })?;
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                break;
            }
            letters.extend(got.into_iter().map(DeadLetter::from_message));
            if letters.len() >= max {
                break;
            }
        }
        Ok(letters)
    }

    /// Makes held messages visible again.
    async fn release(&self, letters: &[DeadLetter]) {
        for chunk in letters.chunks(10) {
            let entries = chunk.iter().enumerate().map(|(i, l)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&l.receipt)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt set")
            });
            let _ = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
        }
    }

    /// Sends dead letters matching `filter` back to the source queue, at most `rate`
    /// per second and `max` in all; returns (redriven, left in the DLQ).
    pub async fn redrive(
        &self,
        filter: Option<&Pattern>,
        rate: f64,
        max: usize,
    ) -> anyhow::Result<(usize, usize)> {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.01)));
        let (mut moved, mut skipped) = (0, vec![]);
        // A few messages at a time, so none is held longer than it takes to send them;
        // skipped ones stay hidden until the end so each is looked at once.
        for _ in 0..100_000 {
            if moved >= max {
                break;
            }
            let batch = self.hold((max - moved).min(10)).await?;
            if batch.is_empty() {
                break;
            }
            for letter in batch {
                if !filter.is_none_or(|f| f.matches(&letter.as_event_json())) {
                    skipped.push(letter);
                    continue;
                }
                pace.tick().await;
                self.resend(&letter).await?;
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(&letter.receipt)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "re-sent {} but could not delete it from the DLQ: {}",
                            letter.message_id,
                            aws_sdk_sqs::error::DisplayErrorContext(&e)
                        )
                    })?;
                moved += 1;
            }
        }
        self.release(&skipped).await;
        Ok((moved, skipped.len()))
    }

    /// The message again on its source queue, without the reasons it was dead-lettered.
    async fn resend(&self, letter: &DeadLetter) -> anyhow::Result<()> {
        // A new deduplication id: the same message may be redriven more than once.
        let dedup = format!("{}-redrive-{}", letter.message_id, fastrand::u32(..));
        let fifo = sqs_message::is_fifo(&self.source_url);
        let message = Outgoing::forward(&letter.message, fifo, "redrive", &dedup).without_reasons();
        let send = message.send(self.sqs.send_message().queue_url(&self.source_url));
        send.send().await.map(|_| ()).map_err(|e| {
            anyhow::anyhow!(
                "re-send {} to {}: {}",
                letter.message_id,
                self.source_url,
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
    }
}
