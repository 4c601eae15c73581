//! The DeadLetterPolicy reconciler: which dead-letter queues the policy serves, how
//! deep they are, and an `AlertThresholdExceeded` condition (with a Warning event)
//! when dead letters pile up past `alertThreshold`.

use std::sync::Arc;
use std::time::Duration;

use eventpipe_crds::{
    DeadLetterPolicy, DeadLetterPolicyStatus, DeadLetterQueueStatus, QueueBinding,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::conditions::{self, Observed};
use crate::context::{Context, Error};

pub async fn reconcile(d: Arc<DeadLetterPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _measured = ctx.metrics.count_and_measure("DeadLetterPolicy");
    let ns = d.namespace().unwrap_or_else(|| "default".into());
    let bindings = Api::<QueueBinding>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let previous = d.status.clone().unwrap_or_default();
    let mut status = summarize(&d, &bindings.items);
    let exceeded = alert(&d, &status);
    let was = previous
        .conditions
        .iter()
        .any(|c| c.type_ == "AlertThresholdExceeded" && c.status == "True");
    status.conditions = conditions::merge(&previous.conditions, &exceeded, d.metadata.generation);
    let api: Api<DeadLetterPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &d.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await?;
    if let Some(c) = exceeded
        .iter()
        .find(|c| c.type_ == "AlertThresholdExceeded" && c.ok)
        && !was
    {
        ctx.event(
            d.as_ref(),
            true,
            "AlertThresholdExceeded",
            c.message.clone(),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The DLQs of the bindings that name this policy; a shared DLQ is counted once.
pub fn summarize(d: &DeadLetterPolicy, bindings: &[QueueBinding]) -> DeadLetterPolicyStatus {
    let mut queues: Vec<DeadLetterQueueStatus> = bindings
        .iter()
        .filter(|b| {
            b.spec
                .dead_letter_policy_ref
                .as_ref()
                .is_some_and(|r| r.name == d.name_any())
        })
        .filter_map(|b| {
            let s = b.status.as_ref()?;
            Some(DeadLetterQueueStatus {
                queue_url: s.dlq_url.clone()?,
                binding: b.name_any(),
                depth: s.dlq_depth,
            })
        })
        .collect();
    queues.sort_by(|a, b| (&a.queue_url, &a.binding).cmp(&(&b.queue_url, &b.binding)));
    let mut seen = std::collections::BTreeSet::new();
    let depth = queues
        .iter()
        .filter(|q| seen.insert(q.queue_url.clone()))
        .filter_map(|q| q.depth)
        .sum::<i64>();
    DeadLetterPolicyStatus {
        observed_generation: d.metadata.generation,
        depth: (!queues.is_empty()).then_some(depth),
        queues,
        conditions: vec![],
    }
}

fn alert(d: &DeadLetterPolicy, status: &DeadLetterPolicyStatus) -> Vec<Observed> {
    let depth = status.depth.unwrap_or(0);
    let mut observed = vec![Observed::new(
        "Ready",
        true,
        "Observed",
        format!("{} dead-letter queue(s)", status.queues.len()),
    )];
    if let Some(threshold) = d.spec.alert_threshold {
        let over = depth > threshold;
        let message = format!("{depth} dead letters (threshold {threshold})");
        observed.push(Observed::new(
            "AlertThresholdExceeded",
            over,
            if over {
                "TooManyDeadLetters"
            } else {
                "BelowThreshold"
            },
            message,
        ));
    }
    observed
}

pub fn error_policy(d: Arc<DeadLetterPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %d.name_any(), %error, "reconcile failed");
    ctx.metrics.failed("DeadLetterPolicy", error.metric_label());
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, policy: &str, dlq: &str, depth: i64) -> QueueBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"sqs": {"queueName": name}, "deadLetterPolicyRef": {"name": policy}},
            "status": {"dlqUrl": dlq, "dlqDepth": depth}
        }))
        .unwrap()
    }

    #[test]
    fn sums_the_dlqs_of_its_bindings_once_each() {
        let d: DeadLetterPolicy = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"alertThreshold": 5}}),
        )
        .unwrap();
        let bindings = [
            binding("a", "p", "http://q/a-dlq", 2),
            binding("b", "p", "http://q/shared", 4),
            binding("c", "p", "http://q/shared", 4),
            binding("other", "x", "http://q/x-dlq", 100),
        ];
        let s = summarize(&d, &bindings);
        assert_eq!(s.queues.len(), 3);
        assert_eq!(s.depth, Some(6));
        let a = alert(&d, &s);
        assert!(a.iter().any(|c| c.type_ == "AlertThresholdExceeded"
            && c.ok
            && c.message == "6 dead letters (threshold 5)"));
        let fine = summarize(&d, &bindings[..1]);
        assert!(
            alert(&d, &fine)
                .iter()
                .any(|c| c.type_ == "AlertThresholdExceeded" && !c.ok)
        );
    }
}
