//! The DeadLetterPolicy reconciler against kube's mock API service.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{CRD, FakeApi};
use eventpipe_crds::DeadLetterPolicy;
use eventpipe_operator::{Context, reconcile_policy as reconcile};
use serde_json::{Value, json};

const PATH: &str = "/apis/eventpipe.dev/v1alpha1/namespaces/default/deadletterpolicies/p";

fn binding(name: &str, depth: i64) -> Value {
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"sqs": {"queueName": name}, "deadLetterPolicyRef": {"name": "p"}},
        "status": {"dlqUrl": format!("http://sqs/{name}-dlq"), "dlqDepth": depth}
    })
}

async fn run(api: &FakeApi) -> DeadLetterPolicy {
    let obj: DeadLetterPolicy = serde_json::from_value(api.get(PATH).unwrap()).unwrap();
    let aws = aws_config::SdkConfig::builder().build();
    reconcile(
        Arc::new(obj),
        Context::new(api.client(), Default::default(), aws, Default::default()),
    )
    .await
    .unwrap();
    serde_json::from_value(api.get(PATH).unwrap()).unwrap()
}

fn warnings(api: &FakeApi) -> usize {
    api.calls()
        .iter()
        .filter(|c| c.path.ends_with("/events") && c.body["type"] == "Warning")
        .count()
}

#[tokio::test]
async fn reports_its_queues_and_warns_once_when_dead_letters_pile_up() {
    let api = FakeApi::new();
    api.put(PATH, json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "DeadLetterPolicy", "metadata": {"name": "p", "namespace": "default", "generation": 1}, "spec": {"alertThreshold": 3}}));
    api.put(&format!("{CRD}/queuebindings/a"), binding("a", 1));
    let d = run(&api).await;
    let s = d.status.unwrap();
    assert_eq!(s.depth, Some(1));
    assert_eq!(s.queues[0].binding, "a");
    assert_eq!(s.queues[0].queue_url, "http://sqs/a-dlq");
    let alert = s
        .conditions
        .iter()
        .find(|c| c.type_ == "AlertThresholdExceeded")
        .unwrap();
    assert_eq!(alert.status, "False");
    assert_eq!(warnings(&api), 0);

    api.put(&format!("{CRD}/queuebindings/b"), binding("b", 5));
    let d = run(&api).await;
    let alert = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "AlertThresholdExceeded")
        .unwrap()
        .clone();
    assert_eq!(
        (alert.status.as_str(), alert.message.as_str()),
        ("True", "6 dead letters (threshold 3)")
    );
    assert_eq!(warnings(&api), 1);
    run(&api).await;
    assert_eq!(warnings(&api), 1, "no new warning while it stays exceeded");
}
