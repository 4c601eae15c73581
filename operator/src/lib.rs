//! The operator: reconciles EventPipelines into workloads, provisions the queues and
//! tables QueueBindings ask for, reports DeadLetterPolicy health, and serves queue
//! depth and stream lag to the HorizontalPodAutoscaler; on request, it also serves the
//! web [`console`].
//!
//! [`run`] is the operator as its binary runs it and [`check`] what `helm test` runs;
//! the reconcilers, [`render`] and the [`external_metrics`] server are public for tests.

mod binding;
mod check;
mod conditions;
pub mod console;
mod context;
mod controllers;
mod credentials;
pub mod external_metrics;
mod metrics;
pub mod metrics_auth;
mod pipeline;
mod pod_trouble;
mod policy;
mod rbac;
mod render;
mod run;
mod scale_to_zero;
pub mod scaler;
mod scaling;
mod scope;
pub mod tls;

pub use binding::reconcile as reconcile_binding;
pub use check::{CheckArgs, check};
pub use context::{Context, Error};
pub use credentials::SecretCredentials;
pub use metrics::Metrics;
pub use pipeline::reconcile as reconcile_pipeline;
pub use policy::reconcile as reconcile_policy;
pub use rbac::{AUTH_RULES, FRONT_PROXY_READER, LEASE_RULES, RULES};
pub use render::{Autoscaler, Settings, Workloads, keda, render};
pub use run::{RunArgs, run};
