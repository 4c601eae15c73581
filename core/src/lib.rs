//! What the ingress, the worker and the operator share: the CloudEvent envelope and
//! its SQS and DynamoDB forms, telemetry (JSON logs, OpenTelemetry traces, W3C
//! propagation), the ops endpoints (`/metrics`, `/healthz`, `/readyz`) and the feed of
//! recent events, AWS client set-up, what a QueueBinding resolves to and provisions, the layout of the stream
//! checkpoint table, comparing presented tokens with secret ones, and moto's server
//! for local mode.
//!
//! Each module is one concern, used by its path (`eventpipe_core::telemetry::init`).

// Events as they travel: the envelope, as an SQS message, as a DynamoDB item.
pub mod envelope;
pub mod item;
pub mod sqs_message;

// AWS: clients, what a QueueBinding resolves to and creates, stream checkpoints.
pub mod aws;
pub mod checkpoints;
pub mod provision;
pub mod resolve;

// Secrets: comparing a presented token with one.
pub mod token;

// Running a component: logs and traces, the ops endpoints, the feed of recent events.
pub mod feed;
pub mod feed_http;
mod json_log;
pub mod log_writer;
pub mod ops;
pub mod telemetry;

// Local mode and tests: moto's server.
pub mod local_aws;
