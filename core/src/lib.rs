//! What the ingress, the worker and the operator share: the CloudEvent envelope,
//! telemetry (JSON logs, OpenTelemetry traces, W3C propagation), the ops endpoints
//! (`/metrics`, `/healthz`, `/readyz`) and AWS client set-up.

pub mod aws;
pub mod envelope;
pub mod item;
pub mod ops;
pub mod provision;
pub mod telemetry;
