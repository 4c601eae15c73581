//! Publishing to a DynamoDB table: one conditional `PutItem` per event, keyed by the
//! event id, so the table's stream carries it on exactly once. A retried delivery
//! finds its item already there and counts as stored.

use aws_sdk_dynamodb::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata},
    operation::put_item::PutItemError,
};
use eventpipe_core::item;

use crate::publish::{BoxFuture, Destination, Message, PublishError, Publisher, Receipt, System};

/// DynamoDB's limit on one item.
const MAX_ITEM_BYTES: usize = 400 * 1024;

pub struct DynamoDbPublisher {
    client: Client,
    destination: Destination,
}

impl DynamoDbPublisher {
    pub fn new(client: Client, table_name: &str) -> Self {
        Self {
            client,
            destination: Destination {
                system: System::DynamoDb,
                name: table_name.into(),
            },
        }
    }

    async fn put(&self, message: Message) -> Result<Receipt, PublishError> {
        let item = item::from_event(&message.event);
        let result = self
            .client
            .put_item()
            .table_name(&self.destination.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Receipt::default()),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => Ok(Receipt::default()),
                e if is_too_large(&e) => Err(PublishError::TooLarge {
                    size: message_size(&message),
                    limit: MAX_ITEM_BYTES,
                    destination: format!("DynamoDB table {}", self.destination.name),
                }),
                e => Err(PublishError::Unavailable(format!(
                    "PutItem: {}",
                    DisplayErrorContext(&e)
                ))),
            },
        }
    }
}

impl Publisher for DynamoDbPublisher {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Receipt, PublishError>> {
        Box::pin(self.put(message))
    }
}

fn is_too_large(e: &PutItemError) -> bool {
    e.code() == Some("ValidationException") && e.message().is_some_and(|m| m.contains("Item size"))
}

/// The event's size as JSON, an estimate of its size as an item.
fn message_size(message: &Message) -> usize {
    eventpipe_core::envelope::to_json(&message.event).len()
}
