//! The eventpipe API (`eventpipe.dev/v1alpha1`): the types, their CRDs, and the loader
//! that reads the same manifests from files for the ingress, the worker and local mode.

#[macro_use]
mod kind;

mod common;
mod dead_letter_policy;
mod defaults;
mod destinations;
mod duration;
mod event_pipeline;
mod ingress;
mod manifest;
mod processor;
mod push;
mod queue_binding;
mod scaling;
pub mod schema;

pub use common::{ObjectRef, SecretKeyRef, ValueSource};
pub use dead_letter_policy::{
    Backoff, DeadLetterPolicy, DeadLetterPolicySpec, DeadLetterPolicyStatus, DeadLetterQueue,
    DeadLetterQueueStatus, Jitter, NonRetryable,
};
pub use destinations::{Destinations, OutcomeTarget};
pub use duration::{Duration, InvalidDuration};
pub use event_pipeline::{
    Delivery, EventPattern, EventPipeline, EventPipelineSpec, EventPipelineStatus, Idempotency,
    Ordering, Source, Tracing,
};
pub use ingress::{
    Algorithm, Encoding, GithubOptions, Ingress, IngressTls, PublishTarget, ReplayWindow,
    Signature, SignatureScheme, TableRef, Webhook,
};
pub use manifest::{Manifest, ManifestError, Origin, Pipeline};
pub use processor::{
    Aggregate, AggregateKey, Batch, ContainerProcessor, DynamoDbProcessor, HeaderFromSecret,
    HttpProcessor, Processor, SigV4, SigV4Service, SqsProcessor,
};
pub use queue_binding::{
    Credentials, DeletionPolicy, DynamoDbStream, QueueBinding, QueueBindingSpec,
    QueueBindingStatus, SqsQueue, StartingPosition,
};
pub use scaling::{Scaling, ScalingEngine};

pub use push::{PushProcessor, Subscription};

pub const GROUP: &str = "eventpipe.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "eventpipe.dev/v1alpha1";

/// The pattern every duration field carries in the CRD schemas.
pub fn duration_pattern() -> &'static str {
    duration::PATTERN
}
