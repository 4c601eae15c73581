//! Moving a message to the dead-letter queue: the same body and attributes, plus why
//! it was given up (error, receive count, source queue); deleted from the source only
//! once the DLQ has it.

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName as SysAttr};
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope;
use tokio::sync::mpsc;

use super::{SqsSource, system_attribute};
use crate::dlq::{ERROR_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE, SOURCE_QUEUE_ATTRIBUTE};
use crate::publish::{dedup_id, string_attribute};

/// SQS allows ten message attributes.
const MAX_ATTRIBUTES: usize = 10;

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
        let group = system_attribute(message, SysAttr::MessageGroupId);
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
        let mut send = self
            .sqs
            .send_message()
            .queue_url(dlq)
            .message_body(message.body.clone().unwrap_or_default())
            .set_message_attributes(Some(self.with_reasons(message, error)));
        if dlq.ends_with(".fifo") {
            let group = system_attribute(message, SysAttr::MessageGroupId)
                .unwrap_or_else(|| "dead-letters".into());
            send = send
                .message_group_id(group)
                .message_deduplication_id(dedup_id(
                    message.message_id.as_deref().unwrap_or_default(),
                ));
        }
        send.send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }

    /// The message's attributes with the reasons added, dropping others when SQS's
    /// limit would be exceeded.
    fn with_reasons(
        &self,
        message: &Message,
        error: &str,
    ) -> HashMap<String, MessageAttributeValue> {
        let count = system_attribute(message, SysAttr::ApproximateReceiveCount)
            .unwrap_or_else(|| "1".into());
        let mut attributes = message.message_attributes.clone().unwrap_or_default();
        let reasons = [
            (
                ERROR_ATTRIBUTE,
                error.chars().take(1024).collect::<String>(),
            ),
            (RECEIVE_COUNT_ATTRIBUTE, count),
            (SOURCE_QUEUE_ATTRIBUTE, self.url.clone()),
        ];
        for (k, _) in &reasons {
            attributes.remove(*k);
        }
        while attributes.len() > MAX_ATTRIBUTES - reasons.len() {
            let drop = attributes.keys().next().cloned().unwrap_or_default();
            attributes.remove(&drop);
        }
        for (k, v) in reasons {
            attributes.insert(k.to_string(), string_attribute(&v));
        }
        attributes
    }
}
