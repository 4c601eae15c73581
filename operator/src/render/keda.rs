//! KEDA in place of the HorizontalPodAutoscaler (`scaling.engine: keda`): a
//! `ScaledObject` on the worker Deployment with one `aws-sqs-queue` or
//! `aws-dynamodb-streams` trigger per source, and the `TriggerAuthentication` they use:
//! the credentials Secret (the binding's, else the workloads'), or KEDA's own AWS
//! identity. KEDA then owns scaling to and from zero, its own HPA and its metrics.

use eventpipe_crds::{EventPipeline, Pipeline, QueueBinding};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{Settings, from, meta, worker_name};

pub const GROUP: &str = "keda.sh";
pub const VERSION: &str = "v1alpha1";

/// The API of a KEDA kind (`ScaledObject`, `TriggerAuthentication`).
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

/// The ScaledObject and the TriggerAuthentication of its triggers.
#[derive(Clone, Debug)]
pub struct Keda {
    pub scaled_object: DynamicObject,
    pub authentication: DynamicObject,
}

pub(super) fn render(pipeline: &Pipeline, settings: &Settings) -> Keda {
    let p = &pipeline.pipeline;
    let s = &p.spec.scaling;
    let triggers: Vec<Value> = (p.spec.sources.iter())
        .map(|src| pipeline.binding(&src.queue_binding_ref))
        .filter_map(|b| trigger(p, b, settings))
        .collect();
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker_name(p)},
        "pollingInterval": s.polling_interval.as_std().as_secs().max(1),
        "cooldownPeriod": s.cooldown.as_std().as_secs(),
        "minReplicaCount": s.min_replicas,
        "maxReplicaCount": s.max_replicas,
        "triggers": triggers,
    });
    if let Some(b) = &s.behavior {
        spec["advanced"] = json!({"horizontalPodAutoscalerConfig": {"behavior": b}});
    }
    Keda {
        scaled_object: object(p, "ScaledObject", spec),
        authentication: object(
            p,
            "TriggerAuthentication",
            authentication(pipeline, settings),
        ),
    }
}

fn object(p: &EventPipeline, kind: &str, spec: Value) -> DynamicObject {
    let mut obj: DynamicObject = from(json!({
        "metadata": meta(p, &worker_name(p), "worker"),
        "spec": spec,
    }));
    obj.types = Some(kube::api::TypeMeta {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
    });
    obj
}

/// A source's trigger; none while a queue's URL is not known yet (the binding's
/// status gives it, and a change of the binding reconciles the pipeline again).
fn trigger(p: &EventPipeline, b: &QueueBinding, settings: &Settings) -> Option<Value> {
    let s = &p.spec.scaling;
    let mut metadata = match (&b.spec.sqs, &b.spec.dynamodb_stream) {
        (Some(q), _) => {
            let url = (q.queue_url.clone()).or_else(|| b.status.as_ref()?.queue_url.clone())?;
            json!({
                "queueURL": url,
                "queueLength": s.target_depth_per_replica.to_string(),
                "activationQueueLength": s.activation_depth.to_string(),
                "scaleOnInFlight": "true",
            })
        }
        (None, Some(stream)) => {
            let from_arn = || table_of_stream(stream.stream_arn.as_deref()?);
            let table = stream.table_name.clone().or_else(from_arn)?;
            // KEDA scales streams on open shards, not lag: a worker per shard at most.
            json!({"tableName": table, "shardCount": "1"})
        }
        (None, None) => return None,
    };
    let setting = |name: &str| {
        (settings.env.iter())
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    if let Some(region) = b.spec.region.clone().or_else(|| setting("AWS_REGION")) {
        metadata["awsRegion"] = json!(region);
    }
    if let Some(endpoint) = (b.spec.endpoint.clone()).or_else(|| setting("AWS_ENDPOINT_URL")) {
        metadata["awsEndpoint"] = json!(endpoint);
    }
    let kind = match b.spec.sqs {
        Some(_) => "aws-sqs-queue",
        None => "aws-dynamodb-streams",
    };
    Some(json!({
        "type": kind,
        "metadata": metadata,
        "authenticationRef": {"name": worker_name(p)},
    }))
}

/// `arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>` → `<name>`.
fn table_of_stream(arn: &str) -> Option<String> {
    let (_, rest) = arn.split_once(":table/")?;
    Some(rest.split('/').next()?.to_string())
}

/// Static keys from a credentials Secret (the first source binding's, else the
/// workloads'), or KEDA's own AWS identity (IRSA, EKS Pod Identity).
fn authentication(pipeline: &Pipeline, settings: &Settings) -> Value {
    let p = &pipeline.pipeline;
    let binding_secret = (p.spec.sources.iter())
        .filter_map(|s| {
            pipeline
                .binding(&s.queue_binding_ref)
                .spec
                .credentials
                .as_ref()
        })
        .map(|c| c.secret_ref.name.clone())
        .next();
    match binding_secret.or_else(|| settings.credentials_secret.clone()) {
        Some(secret) => {
            use eventpipe_core::aws::secret_keys::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
            let key = |parameter: &str, key: &str| json!({"parameter": parameter, "name": secret, "key": key});
            json!({"secretTargetRef": [
                key("awsAccessKeyID", ACCESS_KEY_ID),
                key("awsSecretAccessKey", SECRET_ACCESS_KEY),
            ]})
        }
        None => json!({"podIdentity": {"provider": "aws"}}),
    }
}

#[cfg(test)]
mod tests {
    use super::table_of_stream;

    #[test]
    fn a_stream_arn_names_its_table() {
        let arn =
            "arn:aws:dynamodb:eu-west-1:123456789012:table/comments/stream/2026-01-01T00:00:00.000";
        assert_eq!(table_of_stream(arn).as_deref(), Some("comments"));
        assert_eq!(table_of_stream("comments"), None);
    }
}
