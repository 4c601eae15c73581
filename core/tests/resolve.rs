//! Resolving bindings against moto: queue URLs, dead-letter queues by the one rule,
//! streams and their tables.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_core::provision::{self, FailureKind};
use eventpipe_core::resolve;
use eventpipe_crds::{DeadLetterPolicy, DynamoDbStream, SqsQueue};
use eventpipe_testkit::Moto;

fn policy(yaml: &str) -> DeadLetterPolicy {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

fn queue(yaml: &str) -> SqsQueue {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

fn stream(yaml: &str) -> DynamoDbStream {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

#[tokio::test]
async fn a_queue_made_elsewhere_keeps_the_dlq_its_redrive_policy_names() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let legacy = provision::ensure_queue(&sqs, "legacy-dead", HashMap::new(), None)
        .await
        .unwrap();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": provision::arn_of(&sqs, &legacy).await.unwrap(),
        "maxReceiveCount": "5",
    });
    let attrs = HashMap::from([(Attr::RedrivePolicy, redrive.to_string())]);
    let url = provision::ensure_queue(&sqs, "orders", attrs, None)
        .await
        .unwrap();
    let q = queue("queueName: orders");
    assert_eq!(resolve::queue_url(&sqs, &q).await.unwrap(), url);
    let p = policy("metadata: {name: p}\nspec: {}");
    assert_eq!(
        resolve::queue_dead_letters(&sqs, &url, &q, &p)
            .await
            .unwrap(),
        legacy
    );
    // The queue a policy names wins over the redrive policy.
    let shared = provision::ensure_queue(&sqs, "shared-dlq", HashMap::new(), None)
        .await
        .unwrap();
    let p = policy("metadata: {name: p}\nspec: {deadLetterQueue: {queueName: shared-dlq}}");
    assert_eq!(
        resolve::queue_dead_letters(&sqs, &url, &q, &p)
            .await
            .unwrap(),
        shared
    );
}

#[tokio::test]
async fn a_missing_queue_or_dlq_is_an_error_naming_it() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let err = resolve::queue_url(&sqs, &queue("queueName: nowhere"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.what.as_str(), err.kind),
        ("queue \"nowhere\"", FailureKind::QueueNotFound)
    );
    let url = provision::ensure_queue(&sqs, "orders", HashMap::new(), None)
        .await
        .unwrap();
    let p = policy("metadata: {name: p}\nspec: {}");
    let err = resolve::queue_dead_letters(&sqs, &url, &queue("queueName: orders"), &p)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"dead-letter queue "orders-dlq" of DeadLetterPolicy "p" not found"#),
        "{err}"
    );
    assert_eq!(err.kind, FailureKind::QueueNotFound);
}

#[tokio::test]
async fn a_stream_resolves_to_its_arn_and_table() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    // Created by the operator (or `eventpipe dev`), never by resolving.
    provision::ensure_stream_table(&ddb, "comments")
        .await
        .unwrap();
    let made = resolve::stream(&ddb, &stream("{tableName: comments, create: true}"))
        .await
        .unwrap();
    assert_eq!(made.table, "comments");
    assert!(made.arn.contains(":table/comments/stream/"), "{}", made.arn);
    let found = resolve::stream(&ddb, &stream("{tableName: comments}"))
        .await
        .unwrap();
    assert_eq!(found, made);
    let by_arn = resolve::stream(&ddb, &stream(&format!("{{streamArn: \"{}\"}}", made.arn)))
        .await
        .unwrap();
    assert_eq!(by_arn, made);
}

#[tokio::test]
async fn a_table_without_a_stream_says_how_to_enable_one() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    provision::ensure_checkpoint_table(&ddb, "plain")
        .await
        .unwrap();
    let err = resolve::stream(&ddb, &stream("{tableName: plain}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::StreamNotEnabled);
    assert!(
        err.to_string()
            .starts_with(r#"table "plain" has no stream"#),
        "{err}"
    );
    let err = resolve::stream(&ddb, &stream("{tableName: absent}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::TableNotFound);
}

#[tokio::test]
async fn resolving_a_stream_never_creates_its_table() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    let err = resolve::stream(&ddb, &stream("{tableName: comments, create: true}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::TableNotFound);
    let tables = ddb.list_tables().send().await.unwrap();
    assert!(tables.table_names().is_empty(), "{tables:?}");
}
