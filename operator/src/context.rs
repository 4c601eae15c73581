//! What every reconciler shares.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use crate::credentials::{CREDENTIALS_TTL, SecretCredentials};
use crate::render::Settings;

pub const MANAGER: &str = "eventpipe-operator";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    /// AWS configuration from the operator's environment (the SDK's standard chain).
    pub aws: aws_config::SdkConfig,
    pub metrics: crate::metrics::Metrics,
    /// AWS credentials of bindings that name a Secret.
    pub credentials: SecretCredentials,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        aws: aws_config::SdkConfig,
        metrics: crate::metrics::Metrics,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            aws,
            metrics,
            credentials: SecretCredentials::new(CREDENTIALS_TTL),
        })
    }

    /// Publishes a Kubernetes Event about `obj`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(object = %obj.name_any(), error = %e, "event not published");
        }
    }
}

/// Something a person must fix before a reconcile can succeed (a missing binding,
/// Secret or queue): shown as a condition's reason and message, and as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// What stops a reconcile and has it retried; each kind counts under its own label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{what}: {message}")]
    Aws { what: String, message: String },
    #[error("{}: {}", .0.reason, .0.message)]
    Blocked(Problem),
}

impl Error {
    /// The `reason` label of `eventpipe_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Finalizer(_) => "FinalizerError",
            Error::Aws { .. } => "AwsError",
            Error::Blocked(p) => p.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, Problem};

    #[test]
    fn a_blocked_reconcile_counts_under_its_problem() {
        let missing = Problem {
            reason: "SecretNotFound",
            message: "credentials Secret \"aws\" not found in namespace shop".into(),
        };
        let e = Error::Blocked(missing);
        assert_eq!(e.metric_label(), "SecretNotFound");
        assert_eq!(
            e.to_string(),
            "SecretNotFound: credentials Secret \"aws\" not found in namespace shop"
        );
        let aws = Error::Aws {
            what: "delete queue orders".into(),
            message: "AccessDenied".into(),
        };
        assert_eq!(
            (aws.metric_label(), aws.to_string().as_str()),
            ("AwsError", "delete queue orders: AccessDenied")
        );
    }
}
