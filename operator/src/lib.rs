//! The operator: reconciles EventPipelines into workloads, provisions the queues and
//! tables QueueBindings ask for, reports DeadLetterPolicy health, and serves queue
//! depth and stream lag to the HorizontalPodAutoscaler.

pub mod binding;
pub mod check;
pub mod conditions;
pub mod context;
pub mod credentials;
pub mod external_metrics;
pub mod metrics;
pub mod pipeline;
pub mod pod_trouble;
pub mod policy;
pub mod rbac;
pub mod render;
pub mod run;
