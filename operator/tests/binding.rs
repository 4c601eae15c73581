//! The QueueBinding reconciler against kube's mock API service and moto.
// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{CRD, FakeApi};
use eventpipe_core::provision::OWNER_TAG;
use eventpipe_crds::QueueBinding;
use eventpipe_operator::{Context, reconcile_binding as reconcile};
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

fn binding(spec: Value) -> Value {
    json!({
        "apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
        "metadata": {"name": "orders", "namespace": "default", "uid": "b-1", "generation": 1},
        "spec": spec
    })
}

const PATH: &str = "/apis/eventpipe.dev/v1alpha1/namespaces/default/queuebindings/orders";

async fn run(api: &FakeApi, moto: &Moto) -> QueueBinding {
    try_run(api, moto).await.unwrap();
    serde_json::from_value(api.get(PATH).unwrap()).unwrap()
}

async fn try_run(api: &FakeApi, moto: &Moto) -> Result<(), eventpipe_operator::Error> {
    let obj: QueueBinding = serde_json::from_value(api.get(PATH).unwrap()).unwrap();
    let ctx = Context::new(
        api.client(),
        Default::default(),
        moto.sdk_config(),
        Default::default(),
    );
    reconcile(Arc::new(obj), ctx).await.map(drop)
}

fn ready(b: &QueueBinding) -> (String, String, String) {
    let c = &b.status.as_ref().unwrap().conditions[0];
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn cluster(spec: Value) -> FakeApi {
    let api = FakeApi::new();
    api.put(PATH, binding(spec));
    api.put(
        &format!("{CRD}/deadletterpolicies/p"),
        json!({"apiVersion": "eventpipe.dev/v1alpha1", "kind": "DeadLetterPolicy", "metadata": {"name": "p", "namespace": "default"}, "spec": {"maxReceiveCount": 4}}),
    );
    api
}

/// moto and a cluster holding a binding with `spec`, reconciled once.
async fn reconciled(spec: Value) -> (Moto, FakeApi, QueueBinding) {
    let moto = Moto::start();
    let api = cluster(spec);
    let b = run(&api, &moto).await;
    (moto, api, b)
}

/// How many queues moto holds.
async fn queues(moto: &Moto) -> usize {
    moto.sqs()
        .list_queues()
        .send()
        .await
        .unwrap()
        .queue_urls()
        .len()
}

#[tokio::test]
async fn creates_the_queue_and_dlq_and_reports_urls_and_depth() {
    let (moto, api, b) = reconciled(
        json!({"sqs": {"queueName": "orders", "create": true}, "deadLetterPolicyRef": {"name": "p"}}),
    )
    .await;
    let s = b.status.clone().unwrap();
    assert!(s.queue_url.as_deref().unwrap().ends_with("/orders"));
    assert!(s.queue_arn.as_deref().unwrap().ends_with(":orders"));
    assert!(s.dlq_url.as_deref().unwrap().ends_with("/orders-dlq"));
    assert_eq!((s.depth, s.dlq_depth), (Some(0), Some(0)));
    assert_eq!(ready(&b).0, "True");
    let sqs = moto.sqs();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(s.queue_url.as_deref().unwrap())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    assert!(
        attrs
            .attributes
            .unwrap()
            .values()
            .next()
            .unwrap()
            .contains("orders-dlq")
    );

    for _ in 0..3 {
        sqs.send_message()
            .queue_url(s.queue_url.as_deref().unwrap())
            .message_body("x")
            .send()
            .await
            .unwrap();
    }
    let b = run(&api, &moto).await;
    assert_eq!(
        b.status.unwrap().depth,
        Some(3),
        "depth refreshed on the next reconcile"
    );
}

#[tokio::test]
async fn a_queue_that_must_exist_but_does_not_is_reported() {
    let (moto, api, b) = reconciled(json!({"sqs": {"queueName": "missing"}})).await;
    let (status, reason, message) = ready(&b);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "QueueNotFound")
    );
    assert!(message.starts_with("queue \"missing\":"), "{message}");
    let warnings: Vec<Value> = api
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body)
        .collect();
    assert_eq!(warnings[0]["reason"], "QueueNotFound");

    let api = cluster(
        json!({"sqs": {"queueName": "orders", "create": true}, "deadLetterPolicyRef": {"name": "gone"}}),
    );
    assert_eq!(ready(&run(&api, &moto).await).1, "DeadLetterPolicyNotFound");

    let api = cluster(
        json!({"sqs": {"queueName": "orders", "create": true}, "credentials": {"secretRef": {"name": "aws"}}}),
    );
    assert_eq!(ready(&run(&api, &moto).await).1, "SecretNotFound");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_reported() {
    let port = eventpipe_testkit::free_port();
    let (_moto, _api, b) = reconciled(
        json!({"sqs": {"queueName": "orders", "create": true}, "endpoint": format!("http://127.0.0.1:{port}")}),
    )
    .await;
    assert_eq!(ready(&b).1, "QueueUnreachable", "{:?}", ready(&b));
}

#[tokio::test]
async fn stream_bindings_resolve_or_create_their_table_stream() {
    let (moto, _api, b) = reconciled(
        json!({"dynamodbStream": {"tableName": "comments", "create": true}, "deadLetterPolicyRef": {"name": "p"}}),
    )
    .await;
    let s = b.status.unwrap();
    assert!(s.stream_arn.unwrap().contains(":table/comments/stream/"));
    assert!(
        s.dlq_url.unwrap().ends_with("/comments-dlq"),
        "failed records need a DLQ"
    );

    eventpipe_core::provision::ensure_checkpoint_table(&moto.dynamodb(), "plain")
        .await
        .unwrap();
    let api = cluster(json!({"dynamodbStream": {"tableName": "plain"}}));
    assert_eq!(ready(&run(&api, &moto).await).1, "StreamNotEnabled");
    let api = cluster(json!({"dynamodbStream": {"tableName": "nope"}}));
    assert_eq!(ready(&run(&api, &moto).await).1, "TableNotFound");
}

#[tokio::test]
async fn deletion_policy_delete_removes_the_queues_it_created() {
    let moto = Moto::start();
    let api = cluster(
        json!({"sqs": {"queueName": "orders", "create": true}, "deadLetterPolicyRef": {"name": "p"}, "deletionPolicy": "Delete"}),
    );
    let b = run(&api, &moto).await; // adds the finalizer
    assert!(
        b.metadata
            .finalizers
            .unwrap()
            .contains(&"eventpipe.dev/delete-queues".to_string())
    );
    run(&api, &moto).await; // provisions
    assert_eq!(queues(&moto).await, 2);
    mark_deleted(&api);
    let b = run(&api, &moto).await;
    assert!(
        b.metadata.finalizers.unwrap_or_default().is_empty(),
        "finalizer released"
    );
    assert_eq!(queues(&moto).await, 0);
    assert_eq!(
        last_event(&api),
        (
            "Deleted".into(),
            r#"deleted queue "orders", queue "orders-dlq" (deletionPolicy: Delete)"#.into()
        )
    );

    // Retain (the default) has no finalizer and leaves the queues.
    let api = cluster(json!({"sqs": {"queueName": "kept", "create": true}}));
    let b = run(&api, &moto).await;
    assert!(b.metadata.finalizers.unwrap_or_default().is_empty());
}

/// Marks the stored binding deleted, as the API server does while a finalizer holds it.
fn mark_deleted(api: &FakeApi) {
    let mut deleting = api.get(PATH).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-23T00:00:00Z");
    api.put(PATH, deleting);
}

/// A binding with `spec` reconciled until provisioned, then deleted: its finalizer
/// has run cleanup. Returns what is left of it.
async fn provisioned_then_deleted(moto: &Moto, spec: Value) -> (FakeApi, QueueBinding) {
    let api = cluster(spec);
    run(&api, moto).await; // adds the finalizer
    run(&api, moto).await; // provisions
    mark_deleted(&api);
    let b = run(&api, moto).await;
    (api, b)
}

/// Reason and note of the last Event published.
fn last_event(api: &FakeApi) -> (String, String) {
    let calls = api.calls();
    let event = calls
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/events"))
        .unwrap();
    let text = |k: &str| event.body[k].as_str().unwrap().to_string();
    (text("reason"), text("note"))
}

fn released(b: &QueueBinding) -> bool {
    b.metadata.finalizers.clone().unwrap_or_default().is_empty()
}

async fn depth(moto: &Moto, name: &str) -> i64 {
    let sqs = moto.sqs();
    let url = eventpipe_core::provision::url_of(&sqs, name).await.unwrap();
    eventpipe_core::provision::queue_depth(&sqs, &url)
        .await
        .unwrap()
}

async fn tables(moto: &Moto) -> Vec<String> {
    let out = moto.dynamodb().list_tables().send().await.unwrap();
    out.table_names().to_vec()
}

#[tokio::test]
async fn a_pre_existing_queue_holding_messages_survives_deletion() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let made = sqs
        .create_queue()
        .queue_name("orders")
        .send()
        .await
        .unwrap();
    for _ in 0..3 {
        sqs.send_message()
            .queue_url(made.queue_url().unwrap())
            .message_body("x")
            .send()
            .await
            .unwrap();
    }
    // Another binding's queue under this one's default DLQ name.
    sqs.create_queue()
        .queue_name("orders-dlq")
        .tags(OWNER_TAG, "b-2")
        .send()
        .await
        .unwrap();
    let (api, b) = provisioned_then_deleted(
        &moto,
        json!({"sqs": {"queueName": "orders", "create": true}, "deadLetterPolicyRef": {"name": "p"}, "deletionPolicy": "Delete"}),
    )
    .await;
    assert!(released(&b), "nothing to wait for");
    assert_eq!(queues(&moto).await, 2);
    assert_eq!(depth(&moto, "orders").await, 3, "its messages are kept too");
    let (reason, note) = last_event(&api);
    assert_eq!(reason, "Deleted");
    assert_eq!(
        note,
        "deleted nothing; kept queue \"orders\": not created by this binding; \
         kept queue \"orders-dlq\": not created by this binding (deletionPolicy: Delete)"
    );
}

#[tokio::test]
async fn a_table_the_binding_created_is_deleted_with_its_dlq() {
    let moto = Moto::start();
    let (api, b) = provisioned_then_deleted(
        &moto,
        json!({"dynamodbStream": {"tableName": "comments", "create": true}, "deadLetterPolicyRef": {"name": "p"}, "deletionPolicy": "Delete"}),
    )
    .await;
    assert!(released(&b));
    assert_eq!(tables(&moto).await, Vec::<String>::new());
    assert_eq!(queues(&moto).await, 0);
    assert_eq!(
        last_event(&api).1,
        r#"deleted table "comments", queue "comments-dlq" (deletionPolicy: Delete)"#
    );
}

#[tokio::test]
async fn a_pre_existing_table_holding_items_survives_deletion() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    eventpipe_core::provision::ensure_stream_table(&ddb, "comments")
        .await
        .unwrap();
    for id in ["a", "b"] {
        ddb.put_item()
            .table_name("comments")
            .item("id", AttributeValue::S(id.into()))
            .send()
            .await
            .unwrap();
    }
    let (api, b) = provisioned_then_deleted(
        &moto,
        json!({"dynamodbStream": {"tableName": "comments", "create": true}, "deadLetterPolicyRef": {"name": "p"}, "deletionPolicy": "Delete"}),
    )
    .await;
    assert!(released(&b));
    assert_eq!(tables(&moto).await, ["comments"]);
    let items = ddb.scan().table_name("comments").send().await.unwrap();
    assert_eq!(items.count(), 2);
    assert_eq!(queues(&moto).await, 0, "the DLQ it made is gone");
    assert_eq!(
        last_event(&api).1,
        "deleted queue \"comments-dlq\"; kept table \"comments\": not created by this binding \
         (deletionPolicy: Delete)"
    );
}

#[tokio::test]
async fn a_binding_switched_to_retain_deletes_nothing() {
    let moto = Moto::start();
    let api = cluster(
        json!({"sqs": {"queueName": "orders", "create": true}, "deletionPolicy": "Delete"}),
    );
    run(&api, &moto).await;
    run(&api, &moto).await;
    let mut retained = api.get(PATH).unwrap();
    retained["spec"]["deletionPolicy"] = json!("Retain");
    api.put(PATH, retained);
    run(&api, &moto).await;
    mark_deleted(&api);
    assert!(released(&run(&api, &moto).await));
    assert_eq!(queues(&moto).await, 1);
}

#[tokio::test]
async fn owners_that_cannot_be_read_delete_nothing_and_cleanup_retries() {
    let moto = Moto::start();
    let port = eventpipe_testkit::free_port();
    for spec in [
        json!({"sqs": {"queueName": "orders", "create": true}, "deletionPolicy": "Delete"}),
        json!({"dynamodbStream": {"tableName": "comments", "create": true}, "deletionPolicy": "Delete"}),
    ] {
        let api = cluster(spec);
        run(&api, &moto).await;
        run(&api, &moto).await;
        mark_deleted(&api);
        let reachable = api.get(PATH).unwrap();
        let mut cut_off = reachable.clone();
        cut_off["spec"]["endpoint"] = json!(format!("http://127.0.0.1:{port}"));
        api.put(PATH, cut_off);
        assert!(try_run(&api, &moto).await.is_err(), "retried");
        let b: QueueBinding = serde_json::from_value(api.get(PATH).unwrap()).unwrap();
        assert!(!released(&b), "the finalizer holds the binding");
        let left = queues(&moto).await + tables(&moto).await.len();
        assert_eq!(left, 1, "nothing deleted");
        let (reason, note) = last_event(&api);
        assert_eq!(reason, "DeleteFailed");
        assert!(note.contains("for now, will retry"), "{note}");

        api.put(PATH, reachable);
        assert!(released(&run(&api, &moto).await));
    }
    assert_eq!((queues(&moto).await, tables(&moto).await.len()), (0, 0));
}

#[tokio::test]
async fn a_binding_at_rest_is_not_written_again() {
    let moto = Moto::start();
    let api = cluster(json!({"sqs": {"queueName": "orders", "create": true}}));
    run(&api, &moto).await;
    let writes = |api: &FakeApi| {
        let log = api.log();
        log.iter()
            .filter(|l| l.starts_with("PATCH") && l.ends_with("/status"))
            .count()
    };
    assert_eq!(writes(&api), 1, "{:?}", api.log());
    // Nothing changed in AWS or in the spec: the refresh reads the queue, writes nothing.
    run(&api, &moto).await;
    assert_eq!(writes(&api), 1, "{:?}", api.log());
    moto.sqs()
        .send_message()
        .queue_url(run(&api, &moto).await.status.unwrap().queue_url.unwrap())
        .message_body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(run(&api, &moto).await.status.unwrap().depth, Some(1));
    assert_eq!(writes(&api), 2, "a new depth is written");
}
