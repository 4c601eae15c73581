//! `sqs`: forward the event to another binding's queue, keeping its trace.

use eventpipe_crds::{Pipeline, SqsProcessor as Spec};

use super::{BoxFuture, Delivery, Failure, Outcome, Processor, with_trace};
use crate::clients::Clients;
use crate::publish::Publisher;

pub struct SqsProcessor {
    target: Publisher,
}

impl SqsProcessor {
    /// Forwards to the queue of the binding `spec` names, one of `pipeline`'s.
    pub async fn build(
        spec: &Spec,
        pipeline: &Pipeline,
        clients: &mut Clients<'_>,
    ) -> anyhow::Result<Self> {
        let target = clients.publisher(pipeline, &spec.queue_binding_ref).await?;
        Ok(Self { target })
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
}
