//! Where accepted events are stored, behind one small trait: an SQS queue
//! ([`crate::sqs`]), a DynamoDB table ([`crate::dynamodb`]) or nowhere ([`Noop`],
//! for measuring the ingress alone).

use std::{future::Future, pin::Pin};

use cloudevents::Event;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An event on its way out. Its correlation id and trace context travel in it.
#[derive(Clone, Debug)]
pub struct Message {
    pub event: Event,
    /// FIFO message group.
    pub group_id: String,
}

/// What the backend says about a stored event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The backend's id for it (the SQS message id), when it has one.
    pub message_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not stored; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Not stored, and never will be: the event exceeds what the backend accepts.
    #[error("the event is {size} bytes; {destination} accepts at most {limit}")]
    TooLarge {
        size: usize,
        limit: usize,
        destination: String,
    },
}

/// The messaging or database system of a destination, as OpenTelemetry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Sqs,
    DynamoDb,
    Noop,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Sqs => "aws_sqs",
            System::DynamoDb => "aws.dynamodb",
            System::Noop => "noop",
        }
    }
}

/// A queue or table, for spans, logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub system: System,
    pub name: String,
}

pub trait Publisher: Send + Sync + 'static {
    fn destination(&self) -> &Destination;

    /// Stores the event; resolves only once the backend has it (or has refused it).
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Receipt, PublishError>>;
}

/// Accepts every event and stores none: the ingress's own cost, for benchmarks.
pub struct Noop {
    destination: Destination,
}

impl Noop {
    pub fn new(name: &str) -> Self {
        Self {
            destination: Destination {
                system: System::Noop,
                name: name.into(),
            },
        }
    }
}

impl Publisher for Noop {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn publish(&self, _: Message) -> BoxFuture<'_, Result<Receipt, PublishError>> {
        Box::pin(std::future::ready(Ok(Receipt::default())))
    }
}
