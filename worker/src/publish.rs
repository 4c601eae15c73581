//! Sending events to a QueueBinding's queue: forwarding, outcome events, replies and
//! redrive. The body is the structured CloudEvent; trace context and correlation id
//! are mirrored into message attributes.

use aws_sdk_sqs::types::MessageAttributeValue;
use cloudevents::{AttributesReader, Event};
use eventpipe_core::envelope::{self, attribute};

#[derive(Clone)]
pub struct Publisher {
    sqs: aws_sdk_sqs::Client,
    url: String,
    fifo: bool,
}

pub fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("type and value set")
}

impl Publisher {
    pub fn new(sqs: aws_sdk_sqs::Client, url: String, fifo: bool) -> Self {
        Self { sqs, url, fifo }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the event; a FIFO queue gets `group` (else the correlation id) as message
    /// group and the event id as deduplication id.
    pub async fn send(&self, event: &Event, group: Option<&str>) -> Result<(), String> {
        self.send_with(event, group, &[]).await
    }

    /// Sends the event with `extra` message attributes (e.g. why it was dead-lettered).
    pub async fn send_with(
        &self,
        event: &Event,
        group: Option<&str>,
        extra: &[(&str, String)],
    ) -> Result<(), String> {
        let correlation = envelope::correlation_id(event).unwrap_or_else(|| event.id().to_string());
        let mut request = self
            .sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(envelope::to_json(event))
            .message_attributes(attribute::CORRELATION_ID, string_attribute(&correlation));
        for (key, value) in envelope::trace_context(event) {
            request = request.message_attributes(key, string_attribute(&value));
        }
        for (key, value) in extra {
            request = request.message_attributes(*key, string_attribute(value));
        }
        if self.fifo {
            request = request
                .message_group_id(group.unwrap_or(&correlation))
                .message_deduplication_id(dedup_id(event.id()));
        }
        request.send().await.map(|_| ()).map_err(|e| {
            format!(
                "send to {}: {}",
                self.url,
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
    }
}

/// SQS deduplication ids are at most 128 characters.
pub fn dedup_id(id: &str) -> String {
    if id.len() <= 128 {
        id.to_string()
    } else {
        id[..id.floor_char_boundary(128)].to_string()
    }
}
