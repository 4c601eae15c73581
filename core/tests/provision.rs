//! Provisioning against moto: queues, DLQs with redrive policies, tables.

use aws_sdk_sqs::types::QueueAttributeName as Attr;
use eventpipe_core::provision;
use eventpipe_crds::{DeadLetterPolicy, QueueBinding};
use eventpipe_testkit::Moto;

fn binding(yaml: &str) -> QueueBinding {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

fn policy(yaml: &str) -> DeadLetterPolicy {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

async fn attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> std::collections::HashMap<Attr, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(Attr::All)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default()
}

#[tokio::test]
async fn a_queue_gets_its_dlq_and_redrive_policy_and_follows_spec_changes() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let p = policy("metadata: {name: p}\nspec: {maxReceiveCount: 4, retention: 2d}");
    let b = binding(
        "metadata: {name: orders}\nspec: {sqs: {queueName: orders, create: true, visibilityTimeout: 45s}}",
    );
    let q = provision::ensure_sqs(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p))
        .await
        .unwrap();
    assert!(q.url.ends_with("/orders"), "{}", q.url);
    let dlq = q.dlq_url.clone().unwrap();
    assert!(dlq.ends_with("/orders-dlq"), "{dlq}");
    let attrs = attributes(&sqs, &q.url).await;
    assert_eq!(attrs[&Attr::VisibilityTimeout], "45");
    let redrive: serde_json::Value = serde_json::from_str(&attrs[&Attr::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "4"
    );
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(":orders-dlq")
    );
    assert_eq!(
        attributes(&sqs, &dlq).await[&Attr::MessageRetentionPeriod],
        (2 * 86400).to_string()
    );

    // Applying again is harmless; a changed spec updates the queue in place.
    let b = binding(
        "metadata: {name: orders}\nspec: {sqs: {queueName: orders, create: true, visibilityTimeout: 90s}}",
    );
    let again = provision::ensure_sqs(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p))
        .await
        .unwrap();
    assert_eq!(again, q);
    assert_eq!(
        attributes(&sqs, &q.url).await[&Attr::VisibilityTimeout],
        "90"
    );
}

#[tokio::test]
async fn fifo_queues_get_fifo_dlqs_and_named_dlqs_are_shared() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let p = policy(
        "metadata: {name: p}\nspec: {deadLetterQueue: {queueName: shared-dlq.fifo, create: true}}",
    );
    let b = binding(
        "metadata: {name: o}\nspec: {sqs: {queueName: orders.fifo, fifo: true, create: true}}",
    );
    let q = provision::ensure_sqs(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p))
        .await
        .unwrap();
    assert_eq!(attributes(&sqs, &q.url).await[&Attr::FifoQueue], "true");
    assert!(q.dlq_url.as_ref().unwrap().ends_with("/shared-dlq.fifo"));
    assert_eq!(
        attributes(&sqs, q.dlq_url.as_ref().unwrap()).await[&Attr::FifoQueue],
        "true"
    );
}

#[tokio::test]
async fn a_dlq_that_must_exist_but_does_not_is_an_error() {
    let moto = Moto::start();
    let p = policy(
        "metadata: {name: p}\nspec: {deadLetterQueue: {queueName: missing-dlq, create: false}}",
    );
    let b = binding("metadata: {name: o}\nspec: {sqs: {queueName: orders, create: true}}");
    let err = provision::ensure_sqs(&moto.sqs(), b.spec.sqs.as_ref().unwrap(), Some(&p))
        .await
        .unwrap_err();
    assert_eq!(err.what, "missing-dlq");
}

#[tokio::test]
async fn tables_with_streams_and_ttl() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    let arn = provision::ensure_stream_table(&ddb, "comments")
        .await
        .unwrap();
    assert!(
        arn.as_deref()
            .is_some_and(|a| a.contains(":table/comments/stream/")),
        "{arn:?}"
    );
    assert_eq!(
        provision::ensure_stream_table(&ddb, "comments")
            .await
            .unwrap(),
        arn
    );
    assert_eq!(
        provision::latest_stream(&ddb, "comments").await.unwrap(),
        arn
    );
    // Twice: a TTL already on is left alone.
    for _ in 0..2 {
        provision::ensure_idempotency_table(&ddb, "plain", "expires_at")
            .await
            .unwrap();
    }
    assert_eq!(provision::latest_stream(&ddb, "plain").await.unwrap(), None);
    let ttl = ddb
        .describe_time_to_live()
        .table_name("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description
            .unwrap()
            .attribute_name
            .as_deref(),
        Some("expires_at")
    );
}
