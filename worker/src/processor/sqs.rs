//! `sqs`: forward the event to another binding's queue, keeping its trace.

use crate::publish::Publisher;

use super::{BoxFuture, Delivery, Failure, Outcome, Processor, with_trace};

pub struct SqsProcessor {
    target: Publisher,
}

impl SqsProcessor {
    pub fn new(target: Publisher) -> Self {
        Self { target }
    }
}

impl Processor for SqsProcessor {
    fn deliver<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let event = with_trace(d.event, &d.trace);
            match self.target.send(&event, d.group).await {
                Ok(()) => Outcome::Delivered { reply: None },
                Err(e) => Outcome::Failed(Failure::transient(e.to_string())),
            }
        })
    }

    fn describe(&self) -> String {
        format!("sqs {}", self.target.url())
    }
}
