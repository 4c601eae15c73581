//! Moving a message to the dead-letter queue: the same body and attributes, plus why
//! it was given up (error, receive count, source queue); deleted from the source only
//! once the DLQ has it.

use aws_sdk_sqs::types::Message;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope;
use eventpipe_core::sqs_message::{self, DeadLetterReasons, Origin, Outgoing};
use tokio::sync::mpsc;

use super::SqsSource;

impl SqsSource {
    /// Moves the message to the DLQ, reason attached, then deletes it from the source;
    /// true when it is finished with.
    pub(super) async fn dead_letter(
        &self,
        message: &Message,
        event: &Event,
        error: &str,
        acks: &mpsc::UnboundedSender<String>,
    ) -> bool {
        let Some(dlq) = &self.dlq_url else {
            tracing::error!(
                error,
                "no dead-letter queue to move the message to; it will be retried"
            );
            return false;
        };
        if let Err(e) = self.send_to(dlq, message, error).await {
            tracing::error!(error = %e, "could not dead-letter; the message will be retried");
            return false;
        }
        let correlation_id = envelope::correlation_id(event).unwrap_or_default();
        tracing::warn!(error, dlq, %correlation_id, event_id = event.id(), "dead-lettered");
        self.handler.metrics.outcome(&self.labels, "dead_lettered");
        let group = sqs_message::group_of(message);
        if let Err(e) = self
            .handler
            .dead_lettered(event, error, group.as_deref())
            .await
        {
            tracing::error!(error = %e, "failure outcome event not sent");
        }
        let _ = acks.send(message.receipt_handle.clone().unwrap_or_default());
        true
    }

    async fn send_to(&self, dlq: &str, message: &Message, error: &str) -> Result<(), String> {
        let id = message.message_id.as_deref().unwrap_or_default();
        let reasons = DeadLetterReasons {
            error: error.to_string(),
            receive_count: sqs_message::receive_count(message),
            origin: Origin::Queue(self.url.clone()),
        };
        let outgoing = Outgoing::forward(message, sqs_message::is_fifo(dlq), "dead-letters", id)
            .with_reasons(&reasons);
        outgoing
            .send(self.sqs.send_message().queue_url(dlq))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}
