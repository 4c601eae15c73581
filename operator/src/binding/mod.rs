//! The QueueBinding reconciler: creates what the binding asks for (queue, DLQ and
//! redrive policy; stream-enabled table), tagged with the binding's uid, resolves URLs
//! and ARNs, keeps the depth in status fresh, and with `deletionPolicy: Delete`
//! removes what carries that tag, never what it adopted ([`cleanup`]).

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::{Region, SharedCredentialsProvider};
use eventpipe_core::provision::{self, FailureKind, ProvisionError};
use eventpipe_core::resolve;
use eventpipe_crds::{
    DeadLetterPolicy, DeletionPolicy, DynamoDbStream, QueueBinding, QueueBindingStatus, SqsQueue,
};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use serde_json::json;

use crate::conditions::{self, Observed};
use crate::context::{Context, Error, Problem};

mod cleanup;

use cleanup::cleanup;

pub const FINALIZER: &str = "eventpipe.dev/delete-queues";
/// How often depth in status is refreshed.
const REFRESH: Duration = Duration::from_secs(10);

pub async fn reconcile(b: Arc<QueueBinding>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measured = ctx.metrics.count_and_measure("QueueBinding");
    let ns = b.namespace().unwrap_or_else(|| "default".into());
    let api: Api<QueueBinding> = Api::namespaced(ctx.client.clone(), &ns);
    // A finalizer only where deleting the binding must delete something outside the cluster.
    let deletes = b.spec.deletion_policy == DeletionPolicy::Delete;
    let has_finalizer = b.finalizers().iter().any(|f| f == FINALIZER);
    if !deletes && !has_finalizer {
        return apply(&b, &ctx, &ns).await;
    }
    finalizer(&api, FINALIZER, b, |event| async {
        match event {
            Finalizer::Apply(b) => apply(&b, &ctx, &ns).await,
            Finalizer::Cleanup(b) => cleanup(&b, &ctx, &ns).await.map(|_| Action::await_change()),
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Clients for the binding: the operator's AWS configuration, overridden by the
/// binding's region, endpoint and credentials Secret.
async fn clients(
    b: &QueueBinding,
    ctx: &Context,
    ns: &str,
) -> Result<(aws_sdk_sqs::Client, aws_sdk_dynamodb::Client), Error> {
    let config = sdk_config(b, ctx, ns).await?;
    Ok((
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_dynamodb::Client::new(&config),
    ))
}

/// The AWS configuration every client of the binding is built from.
async fn sdk_config(b: &QueueBinding, ctx: &Context, ns: &str) -> Result<SdkConfig, Error> {
    let mut config = ctx.aws.to_builder();
    if let Some(region) = &b.spec.region {
        config.set_region(Some(Region::new(region.clone())));
    }
    if let Some(endpoint) = &b.spec.endpoint {
        config.set_endpoint_url(Some(endpoint.clone()));
    }
    if let Some(c) = &b.spec.credentials {
        let creds = ctx
            .credentials
            .get(&ctx.client, ns, &c.secret_ref.name)
            .await?;
        config.set_credentials_provider(Some(SharedCredentialsProvider::new(creds)));
    }
    Ok(config.build())
}

/// Namespace, region, endpoint and credentials Secret of a binding.
pub type Reach = (String, Option<String>, Option<String>, Option<String>);

/// Everything [`clients`] builds a binding's clients from besides the operator's own
/// configuration: bindings with the same reach AWS the same way.
pub fn reach(b: &QueueBinding, ns: &str) -> Reach {
    let secret = b
        .spec
        .credentials
        .as_ref()
        .map(|c| c.secret_ref.name.clone());
    (
        ns.to_string(),
        b.spec.region.clone(),
        b.spec.endpoint.clone(),
        secret,
    )
}

/// The SQS client for a binding, when its configuration can be built.
pub async fn sqs_client(b: &QueueBinding, ctx: &Context, ns: &str) -> Option<aws_sdk_sqs::Client> {
    clients(b, ctx, ns).await.ok().map(|(sqs, _)| sqs)
}

/// The DynamoDB client for a binding, when its configuration can be built.
pub async fn dynamodb_client(
    b: &QueueBinding,
    ctx: &Context,
    ns: &str,
) -> Option<aws_sdk_dynamodb::Client> {
    clients(b, ctx, ns).await.ok().map(|(_, ddb)| ddb)
}

/// The DynamoDB Streams client for a binding, when its configuration can be built.
pub async fn streams_client(
    b: &QueueBinding,
    ctx: &Context,
    ns: &str,
) -> Option<aws_sdk_dynamodbstreams::Client> {
    let config = sdk_config(b, ctx, ns).await.ok()?;
    Some(aws_sdk_dynamodbstreams::Client::new(&config))
}

/// A reason a person can act on, from what kind of AWS failure it was.
fn reason(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::AccessDenied => "AccessDenied",
        FailureKind::QueueNotFound => "QueueNotFound",
        FailureKind::TableNotFound => "TableNotFound",
        FailureKind::StreamNotEnabled => "StreamNotEnabled",
        FailureKind::Unreachable => "QueueUnreachable",
        FailureKind::Other => "AwsError",
    }
}

fn problem(e: ProvisionError) -> Error {
    Error::Blocked(Problem {
        reason: reason(e.kind),
        message: e.to_string(),
    })
}

/// What the binding resolves to now, its queues and table made first when it asks.
async fn observe(b: &QueueBinding, ctx: &Context, ns: &str) -> Result<QueueBindingStatus, Error> {
    let (sqs, ddb) = clients(b, ctx, ns).await?;
    let policy = policy(b, ctx, ns).await?;
    let uid = b.metadata.uid.as_deref();
    match (&b.spec.sqs, &b.spec.dynamodb_stream) {
        (Some(q), _) => observe_sqs(&sqs, q, policy.as_ref(), uid).await,
        (None, Some(s)) => observe_stream(&ddb, &sqs, s, policy.as_ref(), uid).await,
        (None, None) => Err(Error::Blocked(Problem {
            reason: "Invalid",
            message: "neither sqs nor dynamodbStream is set".into(),
        })),
    }
}

async fn apply(b: &QueueBinding, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let observed = match observe(b, ctx, ns).await {
        Err(Error::Blocked(p)) => Err(p),
        Err(e) => return Err(e),
        Ok(status) => Ok(status),
    };
    let previous = b.status.clone().unwrap_or_default();
    let (status, condition, warning) = match observed {
        Ok(mut status) => {
            let condition = Observed::new(
                "Ready",
                true,
                "Available",
                status
                    .queue_url
                    .clone()
                    .or(status.stream_arn.clone())
                    .unwrap_or_default(),
            );
            status.conditions = previous.conditions.clone();
            (status, condition, None)
        }
        Err(p) => {
            ctx.metrics.failed("QueueBinding", p.reason);
            let new = !previous
                .conditions
                .iter()
                .any(|c| c.reason == p.reason && c.status == "False");
            (
                QueueBindingStatus {
                    conditions: previous.conditions.clone(),
                    ..previous.clone()
                },
                Observed::new("Ready", false, p.reason, p.message.clone()),
                new.then_some(p),
            )
        }
    };
    let status = QueueBindingStatus {
        observed_generation: b.metadata.generation,
        conditions: conditions::merge(&status.conditions, &[condition], b.metadata.generation),
        ..status
    };
    // An unchanged status is not written: a binding at rest costs AWS calls only.
    if b.status.as_ref() != Some(&status) {
        let api: Api<QueueBinding> = Api::namespaced(ctx.client.clone(), ns);
        api.patch_status(
            &b.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    if let Some(p) = warning {
        ctx.event(b, true, p.reason, p.message).await;
    }
    Ok(Action::requeue(REFRESH))
}

async fn policy(
    b: &QueueBinding,
    ctx: &Context,
    ns: &str,
) -> Result<Option<DeadLetterPolicy>, Error> {
    let Some(r) = &b.spec.dead_letter_policy_ref else {
        return Ok(None);
    };
    match Api::<DeadLetterPolicy>::namespaced(ctx.client.clone(), ns)
        .get_opt(&r.name)
        .await?
    {
        Some(p) => Ok(Some(p)),
        None => Err(Error::Blocked(Problem {
            reason: "DeadLetterPolicyNotFound",
            message: format!("DeadLetterPolicy {:?} not found in namespace {ns}", r.name),
        })),
    }
}

async fn observe_sqs(
    sqs: &aws_sdk_sqs::Client,
    q: &SqsQueue,
    policy: Option<&DeadLetterPolicy>,
    uid: Option<&str>,
) -> Result<QueueBindingStatus, Error> {
    let made = match q.create {
        true => Some(
            provision::ensure_sqs_for(sqs, q, policy, uid)
                .await
                .map_err(problem)?,
        ),
        false => None,
    };
    let url = match &made {
        Some(made) => made.url.clone(),
        None => resolve::queue_url(sqs, q).await.map_err(problem)?,
    };
    let arn = match &made {
        Some(made) => made.arn.clone(),
        None => provision::arn_of(sqs, &url).await.map_err(problem)?,
    };
    let dlq_url = match (made.and_then(|m| m.dlq_url), policy) {
        (Some(u), _) => Some(u),
        (None, Some(p)) => Some(
            resolve::queue_dead_letters(sqs, &url, q, p)
                .await
                .map_err(problem)?,
        ),
        (None, None) => None,
    };
    Ok(QueueBindingStatus {
        depth: Some(depth_of(sqs, &url).await?),
        dlq_depth: dlq_depth(sqs, dlq_url.as_deref()).await?,
        queue_url: Some(url),
        queue_arn: Some(arn),
        dlq_url,
        ..Default::default()
    })
}

async fn depth_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<i64, Error> {
    provision::queue_depth(sqs, url).await.map_err(problem)
}

async fn dlq_depth(sqs: &aws_sdk_sqs::Client, url: Option<&str>) -> Result<Option<i64>, Error> {
    match url {
        Some(u) => Ok(Some(depth_of(sqs, u).await?)),
        None => Ok(None),
    }
}

/// A stream has no queue of its own: its failed records go to its policy's DLQ.
async fn observe_stream(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    s: &DynamoDbStream,
    policy: Option<&DeadLetterPolicy>,
    uid: Option<&str>,
) -> Result<QueueBindingStatus, Error> {
    if let Some(table) = s.table_name.as_deref().filter(|_| s.create) {
        provision::ensure_stream_table_for(ddb, table, uid)
            .await
            .map_err(problem)?;
    }
    let stream = resolve::stream(ddb, s).await.map_err(problem)?;
    let dlq_url = match policy {
        Some(p) => Some(
            provision::ensure_dead_letter_queue(sqs, &stream.table, p, uid)
                .await
                .map_err(problem)?,
        ),
        None => None,
    };
    Ok(QueueBindingStatus {
        stream_arn: Some(stream.arn),
        dlq_depth: dlq_depth(sqs, dlq_url.as_deref()).await?,
        dlq_url,
        ..Default::default()
    })
}

pub fn error_policy(b: Arc<QueueBinding>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(binding = %b.name_any(), %error, "reconcile failed");
    ctx.metrics.failed("QueueBinding", error.metric_label());
    Action::requeue(Duration::from_secs(10))
}
