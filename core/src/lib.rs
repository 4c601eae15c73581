//! What the ingress, the worker and the operator share: the CloudEvent envelope,
//! telemetry (JSON logs, OpenTelemetry traces, W3C propagation), the ops endpoints
//! (`/metrics`, `/healthz`, `/readyz`), AWS client set-up and the layout of the
//! stream checkpoint table, and moto's server for local mode.

pub mod aws;
pub mod checkpoints;
pub mod envelope;
pub mod item;
pub mod local_aws;
pub mod log_writer;
pub mod ops;
pub mod provision;
pub mod resolve;
pub mod sqs_message;
pub mod telemetry;
