//! What the ingress serves, read from the manifest file: every webhook of every
//! pipeline that has an `ingress`, checked and compiled (header names parsed,
//! references resolved) so that a bad file fails at start-up, not per request.

use std::{collections::BTreeMap, path::Path};

use eventpipe_crds::{
    Manifest, ManifestError, QueueBindingSpec, SecretKeyRef, SignatureScheme, SqsQueue,
    Subscription, Webhook,
};

use crate::extract::{Field, Fields, InvalidField};
use crate::github::Github;
use crate::signature::{InvalidRule, Verifier};

/// Every webhook the ingress serves.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    pub webhooks: Vec<WebhookConfig>,
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// Where clients subscribe to a pipeline's pushes, and what admits them.
#[derive(Clone, Debug)]
pub struct SubscriptionConfig {
    pub pipeline: String,
    pub spec: Subscription,
    /// The webhook's token admits any subscriber (scheme bearer).
    pub bearer: bool,
    /// The webhook's secrets: its token, or the key of subscribe tokens.
    pub secrets: Vec<SecretKeyRef>,
}

/// One webhook, ready to serve.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub pipeline: String,
    pub spec: Webhook,
    pub verifier: Verifier,
    pub fields: Fields,
    pub github: Github,
    pub max_body_bytes: usize,
    pub target: Target,
    /// Its `202` carries a subscribe token: a subscription names this webhook.
    pub subscribable: bool,
}

impl WebhookConfig {
    /// CloudEvent `source` of this webhook's events.
    pub fn source(&self) -> String {
        format!("/eventpipe/{}/{}", self.pipeline, self.spec.name)
    }

    /// CloudEvent `type` when the request does not give one.
    pub fn default_type(&self) -> String {
        format!("eventpipe.webhook.{}", self.spec.name)
    }
}

/// Where a webhook's events are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// An SQS queue of a QueueBinding.
    Queue {
        binding: String,
        spec: Box<QueueBindingSpec>,
        queue: SqsQueue,
    },
    /// A DynamoDB table, whose stream carries the events on.
    Table { table_name: String },
}

impl Target {
    /// A stable key: webhooks with the same target share one publisher.
    pub fn key(&self) -> String {
        match self {
            Target::Queue { binding, .. } => format!("queueBinding/{binding}"),
            Target::Table { table_name } => format!("dynamodb/{table_name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{file}: no EventPipeline has an ingress{}", pipelines_list(.pipelines))]
    NoIngress {
        file: String,
        pipelines: Vec<String>,
    },
    #[error("path {path:?} is used twice: by {first} and by {second}")]
    DuplicatePath {
        path: String,
        first: String,
        second: String,
    },
    #[error("{webhook}: path {path:?} must start with /")]
    BadPath { webhook: String, path: String },
    #[error(
        "pipeline {pipeline:?} subscription {subscription:?}: webhook {webhook:?} is not one of the pipeline's webhooks"
    )]
    UnknownWebhook {
        pipeline: String,
        subscription: String,
        webhook: String,
    },
    #[error("{webhook}: signature: {source}")]
    Signature {
        webhook: String,
        source: InvalidRule,
    },
    #[error("{webhook}: {field}: {source}")]
    Field {
        webhook: String,
        field: &'static str,
        source: InvalidField,
    },
    #[error("{webhook}: secretRef {name}/{key}: names must not contain / or be . or ..")]
    SecretRef {
        webhook: String,
        name: String,
        key: String,
    },
    #[error(
        "pipeline {pipeline:?}: spec.ingress.publishTo.queueBindingRef: QueueBinding {binding:?} is not an SQS queue (the ingress publishes to SQS queues or, with publishTo.dynamodb, to a table)"
    )]
    NotAQueue { pipeline: String, binding: String },
    #[error(
        "pipeline {pipeline:?}: spec.ingress.publishTo must name exactly one of queueBindingRef or dynamodb"
    )]
    NoTarget { pipeline: String },
}

fn pipelines_list(names: &[String]) -> String {
    if names.is_empty() {
        " (the file has no EventPipeline)".into()
    } else {
        format!(" (pipelines: {})", names.join(", "))
    }
}

/// `pipeline "hooks" webhook "github"`, for error messages.
fn webhook_label(pipeline: &str, webhook: &str) -> String {
    format!("pipeline {pipeline:?} webhook {webhook:?}")
}

fn name_of(p: &eventpipe_crds::EventPipeline) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

impl IngressConfig {
    /// Reads the manifest file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        Self::from_manifest(&Manifest::load(path)?, &path.display().to_string())
    }

    /// The webhooks of every pipeline with an ingress; `file` names the source in errors.
    pub fn from_manifest(manifest: &Manifest, file: &str) -> Result<Self, ConfigError> {
        let with_ingress: Vec<String> = manifest
            .pipelines
            .iter()
            .filter(|p| p.spec.ingress.is_some())
            .map(name_of)
            .collect();
        if with_ingress.is_empty() {
            return Err(ConfigError::NoIngress {
                file: file.into(),
                pipelines: manifest.pipeline_names(),
            });
        }
        let mut webhooks = Vec::new();
        let mut subscriptions = Vec::new();
        for name in with_ingress {
            let pipeline = manifest.pipeline(&name)?;
            let ingress = pipeline.pipeline.spec.ingress.as_ref().expect("filtered");
            let target = target(&name, &pipeline, &ingress.publish_to)?;
            for spec in &ingress.webhooks {
                let mut webhook = compile(&name, spec, target.clone())?;
                webhook.subscribable = ingress.subscriptions.iter().any(|s| s.webhook == spec.name);
                webhooks.push(webhook);
            }
            for spec in &ingress.subscriptions {
                subscriptions.push(subscription(&name, spec, &ingress.webhooks)?);
            }
        }
        unique_paths(&webhooks, &subscriptions)?;
        Ok(Self {
            webhooks,
            subscriptions,
        })
    }
}

fn target(
    pipeline: &str,
    resolved: &eventpipe_crds::Pipeline,
    publish_to: &eventpipe_crds::PublishTarget,
) -> Result<Target, ConfigError> {
    match (&publish_to.queue_binding_ref, &publish_to.dynamodb) {
        (Some(r), None) => {
            let binding = resolved.binding(r);
            let queue = binding
                .spec
                .sqs
                .clone()
                .ok_or_else(|| ConfigError::NotAQueue {
                    pipeline: pipeline.into(),
                    binding: r.name.clone(),
                })?;
            Ok(Target::Queue {
                binding: r.name.clone(),
                spec: Box::new(binding.spec.clone()),
                queue,
            })
        }
        (None, Some(table)) => Ok(Target::Table {
            table_name: table.table_name.clone(),
        }),
        _ => Err(ConfigError::NoTarget {
            pipeline: pipeline.into(),
        }),
    }
}

fn compile(pipeline: &str, spec: &Webhook, target: Target) -> Result<WebhookConfig, ConfigError> {
    let webhook = webhook_label(pipeline, &spec.name);
    if !spec.path.starts_with('/') {
        return Err(ConfigError::BadPath {
            webhook,
            path: spec.path.clone(),
        });
    }
    let unsafe_part = |s: &str| s.contains('/') || s == "." || s == "..";
    for secret in spec.signature.secret_refs() {
        if unsafe_part(&secret.name) || unsafe_part(&secret.key) {
            return Err(ConfigError::SecretRef {
                webhook,
                name: secret.name.clone(),
                key: secret.key.clone(),
            });
        }
    }
    let verifier = Verifier::new(&spec.signature).map_err(|source| ConfigError::Signature {
        webhook: webhook.clone(),
        source,
    })?;
    let field = |name: &'static str, source: &Option<eventpipe_crds::ValueSource>| {
        source
            .as_ref()
            .map(Field::new)
            .transpose()
            .map_err(|source| ConfigError::Field {
                webhook: webhook.clone(),
                field: name,
                source,
            })
    };
    let fields = Fields {
        event_type: field("eventType", &spec.event_type)?,
        correlation_id: field("correlationId", &spec.correlation_id)?,
        deduplication_id: field("deduplicationId", &spec.deduplication_id)?,
        message_group_id: field("messageGroupId", &spec.message_group_id)?,
    };
    Ok(WebhookConfig {
        pipeline: pipeline.into(),
        spec: spec.clone(),
        verifier,
        fields,
        github: Github::new(spec),
        max_body_bytes: usize::try_from(spec.max_body_bytes.max(1)).unwrap_or(usize::MAX),
        target,
        subscribable: false,
    })
}

fn subscription(
    pipeline: &str,
    spec: &Subscription,
    webhooks: &[Webhook],
) -> Result<SubscriptionConfig, ConfigError> {
    if !spec.path.starts_with('/') {
        return Err(ConfigError::BadPath {
            webhook: subscription_label(pipeline, &spec.name),
            path: spec.path.clone(),
        });
    }
    let Some(webhook) = webhooks.iter().find(|w| w.name == spec.webhook) else {
        return Err(ConfigError::UnknownWebhook {
            pipeline: pipeline.into(),
            subscription: spec.name.clone(),
            webhook: spec.webhook.clone(),
        });
    };
    Ok(SubscriptionConfig {
        pipeline: pipeline.into(),
        spec: spec.clone(),
        bearer: webhook.signature.scheme == SignatureScheme::Bearer,
        secrets: webhook.signature.secret_refs().cloned().collect(),
    })
}

fn subscription_label(pipeline: &str, subscription: &str) -> String {
    format!("pipeline {pipeline:?} subscription {subscription:?}")
}

/// Webhook and subscription paths, each served once.
fn unique_paths(
    webhooks: &[WebhookConfig],
    subscriptions: &[SubscriptionConfig],
) -> Result<(), ConfigError> {
    let mut seen = BTreeMap::new();
    let webhook_paths =
        (webhooks.iter()).map(|w| (&w.spec.path, webhook_label(&w.pipeline, &w.spec.name)));
    let subscription_paths = (subscriptions.iter())
        .map(|s| (&s.spec.path, subscription_label(&s.pipeline, &s.spec.name)));
    for (path, label) in webhook_paths.chain(subscription_paths) {
        if let Some(first) = seen.insert(path.clone(), label.clone()) {
            return Err(ConfigError::DuplicatePath {
                path: path.clone(),
                first,
                second: label,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: &str = r#"
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: orders}
spec:
  sqs: {queueName: orders}
"#;

    fn pipeline(name: &str, path: &str, publish_to: &str) -> String {
        format!(
            r#"
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {{name: {name}}}
spec:
  ingress:
    webhooks:
      - name: github
        path: {path}
        signature: {{scheme: github, secretRef: {{name: gh, key: secret}}}}
        eventType: {{header: X-GitHub-Event}}
        correlationId: {{jsonPointer: /issue/number}}
    publishTo: {publish_to}
  sources: [{{queueBindingRef: {{name: orders}}}}]
  processor: {{http: {{url: "http://example.test/"}}}}
"#
        )
    }

    fn load(yaml: &str) -> Result<IngressConfig, ConfigError> {
        IngressConfig::from_manifest(&Manifest::from_yaml("test.yaml", yaml)?, "test.yaml")
    }

    const TO_QUEUE: &str = "{queueBindingRef: {name: orders}}";

    #[test]
    fn serves_the_webhooks_of_every_pipeline_with_an_ingress() {
        let yaml = [
            QUEUE,
            &pipeline("a", "/hooks/a", TO_QUEUE),
            &pipeline("b", "/hooks/b", "{dynamodb: {tableName: events}}"),
        ]
        .concat();
        let config = load(&yaml).unwrap();
        let paths: Vec<_> = config
            .webhooks
            .iter()
            .map(|w| w.spec.path.as_str())
            .collect();
        assert_eq!(paths, ["/hooks/a", "/hooks/b"]);
        let a = &config.webhooks[0];
        assert_eq!(a.source(), "/eventpipe/a/github");
        assert_eq!(a.default_type(), "eventpipe.webhook.github");
        assert_eq!(a.max_body_bytes, 1 << 20);
        assert!(matches!(&a.target, Target::Queue { binding, .. } if binding == "orders"));
        assert_eq!(
            config.webhooks[1].target,
            Target::Table {
                table_name: "events".into()
            }
        );
        assert!(a.fields.correlation_id.is_some() && a.fields.deduplication_id.is_none());
    }

    #[test]
    fn a_file_without_ingress_is_an_error_naming_the_pipelines() {
        let worker_only = r#"
---
apiVersion: eventpipe.dev/v1alpha1
kind: EventPipeline
metadata: {name: a}
spec:
  sources: [{queueBindingRef: {name: orders}}]
  processor: {http: {url: "http://example.test/"}}
"#;
        let err = load(&[QUEUE, worker_only].concat())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test.yaml: no EventPipeline has an ingress (pipelines: a)"
        );
        let err = load(QUEUE).unwrap_err().to_string();
        assert_eq!(
            err,
            "test.yaml: no EventPipeline has an ingress (the file has no EventPipeline)"
        );
    }

    #[test]
    fn duplicate_paths_across_pipelines_are_an_error() {
        let yaml = [
            QUEUE,
            &pipeline("a", "/hooks", TO_QUEUE),
            &pipeline("b", "/hooks", TO_QUEUE),
        ]
        .concat();
        let err = load(&yaml).unwrap_err().to_string();
        assert_eq!(
            err,
            r#"path "/hooks" is used twice: by pipeline "a" webhook "github" and by pipeline "b" webhook "github""#
        );
    }

    #[test]
    fn subscriptions_name_a_webhook_of_their_pipeline_and_a_path_of_their_own() {
        let with = |subscription: &str| {
            let p = pipeline("a", "/x", TO_QUEUE).replace(
                "    publishTo:",
                &format!("    subscriptions: [{subscription}]\n    publishTo:"),
            );
            load(&[QUEUE, &p].concat())
        };
        let config = with("{name: events, path: /events, webhook: github}").unwrap();
        assert!(config.webhooks[0].subscribable);
        let s = &config.subscriptions[0];
        assert_eq!((s.pipeline.as_str(), s.bearer), ("a", false));
        assert_eq!(s.secrets[0].name, "gh");
        let err = with("{name: events, path: /events, webhook: gitlab}").unwrap_err();
        assert!(
            (err.to_string())
                .ends_with("a subscription's webhook must be one of the ingress's webhooks"),
            "{err}"
        );
        // Across pipelines (within one, the manifest's own rules refuse it).
        let a = pipeline("a", "/x", TO_QUEUE).replace(
            "    publishTo:",
            "    subscriptions: [{name: events, path: /y, webhook: github}]\n    publishTo:",
        );
        let err = load(&[QUEUE, &a, &pipeline("b", "/y", TO_QUEUE)].concat()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"path "/y" is used twice: by pipeline "b" webhook "github" and by pipeline "a" subscription "events""#
        );
    }

    #[test]
    fn a_missing_queue_binding_names_the_field_and_the_binding() {
        let yaml = [
            QUEUE,
            &pipeline("a", "/x", "{queueBindingRef: {name: missing}}"),
        ]
        .concat();
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.contains("spec.ingress.publishTo.queueBindingRef")
                && err.contains("QueueBinding \"missing\" not found (defined: orders)"),
            "{err}"
        );
    }

    #[test]
    fn a_stream_binding_is_not_a_queue() {
        let stream = r#"
---
apiVersion: eventpipe.dev/v1alpha1
kind: QueueBinding
metadata: {name: comments}
spec:
  dynamodbStream: {tableName: comments}
"#;
        let yaml = [
            QUEUE,
            stream,
            &pipeline("a", "/x", "{queueBindingRef: {name: comments}}"),
        ]
        .concat();
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.contains("QueueBinding \"comments\" is not an SQS queue"),
            "{err}"
        );
    }

    #[test]
    fn bad_header_names_and_secret_paths_fail_at_load() {
        let yaml = [QUEUE, &pipeline("a", "/x", TO_QUEUE)].concat();
        let bad_header = yaml.replace("X-GitHub-Event", "\"X GitHub Event\"");
        let err = load(&bad_header).unwrap_err().to_string();
        assert_eq!(
            err,
            r#"pipeline "a" webhook "github": eventType: "X GitHub Event" is not a valid HTTP header name"#
        );
        let escape = yaml.replace("key: secret", "key: ../../etc/passwd");
        let err = load(&escape).unwrap_err().to_string();
        assert!(err.contains("secretRef gh/../../etc/passwd"), "{err}");
        let previous = yaml.replace(
            "key: secret}",
            "key: secret}, previousSecretRef: {name: .., key: old}",
        );
        assert_ne!(previous, yaml);
        let err = load(&previous).unwrap_err().to_string();
        assert!(err.contains("secretRef ../old"), "{err}");
    }
}
