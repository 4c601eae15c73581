//! Sending events to a QueueBinding's queue: forwarding, outcome events, replies and
//! a stream's dead letters, encoded by core's SQS message codec.

use cloudevents::Event;
use eventpipe_core::sqs_message::{self, DeadLetterReasons, Outgoing};

#[derive(Clone)]
pub struct Publisher {
    sqs: aws_sdk_sqs::Client,
    url: String,
    fifo: bool,
}

impl Publisher {
    pub fn new(sqs: aws_sdk_sqs::Client, url: String) -> Self {
        let fifo = sqs_message::is_fifo(&url);
        Self { sqs, url, fifo }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the event; on a FIFO queue its group is `group`, else its correlation id.
    pub async fn send(&self, event: &Event, group: Option<&str>) -> Result<(), String> {
        self.send_message(Outgoing::event(event, self.fifo, group))
            .await
    }

    /// Sends the event with why it was dead-lettered.
    pub async fn dead_letter(
        &self,
        event: &Event,
        group: Option<&str>,
        reasons: &DeadLetterReasons,
    ) -> Result<(), String> {
        self.send_message(Outgoing::event(event, self.fifo, group).with_reasons(reasons))
            .await
    }

    async fn send_message(&self, message: Outgoing) -> Result<(), String> {
        let request = message.send(self.sqs.send_message().queue_url(&self.url));
        request.send().await.map(|_| ()).map_err(|e| {
            format!(
                "send to {}: {}",
                self.url,
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
    }
}
