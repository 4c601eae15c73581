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

/// The owner tag of the queue named `name`.
async fn queue_owner(sqs: &aws_sdk_sqs::Client, name: &str) -> Option<String> {
    let url = provision::url_of(sqs, name)
        .await
        .expect("the queue exists");
    provision::queue_owner(sqs, &url).await.expect("its tags")
}

#[tokio::test]
async fn queues_a_binding_creates_carry_its_uid_and_adopted_ones_do_not() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let existing = sqs
        .create_queue()
        .queue_name("orders")
        .send()
        .await
        .unwrap();
    let p = policy("metadata: {name: p}\nspec: {maxReceiveCount: 4}");
    let b = binding("metadata: {name: orders}\nspec: {sqs: {queueName: orders, create: true}}");
    let q = provision::ensure_sqs_for(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p), Some("b-1"))
        .await
        .unwrap();
    assert_eq!(Some(q.url), existing.queue_url, "adopted");
    assert_eq!(
        queue_owner(&sqs, "orders").await,
        None,
        "adoption tags nothing"
    );
    assert_eq!(
        queue_owner(&sqs, "orders-dlq").await.as_deref(),
        Some("b-1")
    );

    // Applied again by another binding: tags stay as they were at creation.
    provision::ensure_sqs_for(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p), Some("b-2"))
        .await
        .unwrap();
    assert_eq!(queue_owner(&sqs, "orders").await, None);
    assert_eq!(
        queue_owner(&sqs, "orders-dlq").await.as_deref(),
        Some("b-1")
    );

    // Created fresh: the queue is the binding's; without a uid (local mode), nobody's.
    let b = binding("metadata: {name: o}\nspec: {sqs: {queueName: fresh, create: true}}");
    provision::ensure_sqs_for(&sqs, b.spec.sqs.as_ref().unwrap(), None, Some("b-3"))
        .await
        .unwrap();
    assert_eq!(queue_owner(&sqs, "fresh").await.as_deref(), Some("b-3"));
    let b = binding("metadata: {name: o}\nspec: {sqs: {queueName: local, create: true}}");
    provision::ensure_sqs(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p))
        .await
        .unwrap();
    assert_eq!(queue_owner(&sqs, "local").await, None);
    assert_eq!(queue_owner(&sqs, "local-dlq").await, None);
}

#[tokio::test]
async fn a_dlq_the_policy_names_is_nobodys_even_when_a_binding_creates_it() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let p = policy(
        "metadata: {name: p}\nspec: {deadLetterQueue: {queueName: shared-dlq, create: true}}",
    );
    let b = binding("metadata: {name: o}\nspec: {sqs: {queueName: orders, create: true}}");
    provision::ensure_sqs_for(&sqs, b.spec.sqs.as_ref().unwrap(), Some(&p), Some("b-1"))
        .await
        .unwrap();
    assert_eq!(queue_owner(&sqs, "orders").await.as_deref(), Some("b-1"));
    assert_eq!(queue_owner(&sqs, "shared-dlq").await, None);
}

#[tokio::test]
async fn tables_a_binding_creates_carry_its_uid_and_adopted_ones_do_not() {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    // Made by someone else: untagged.
    provision::ensure_stream_table(&ddb, "comments")
        .await
        .unwrap();
    let adopted = provision::ensure_stream_table_for(&ddb, "comments", Some("b-1"))
        .await
        .unwrap();
    assert!(adopted.is_some(), "the existing table's stream");
    assert_eq!(
        provision::table_owner(&ddb, "comments").await.unwrap(),
        None
    );

    provision::ensure_stream_table_for(&ddb, "made", Some("b-1"))
        .await
        .unwrap();
    assert_eq!(
        provision::table_owner(&ddb, "made")
            .await
            .unwrap()
            .as_deref(),
        Some("b-1")
    );
    // The worker's own tables belong to no binding.
    provision::ensure_checkpoint_table(&ddb, "checkpoints")
        .await
        .unwrap();
    assert_eq!(
        provision::table_owner(&ddb, "checkpoints").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn owners_of_what_is_not_there_are_errors_saying_so() {
    let moto = Moto::start();
    let err = provision::table_owner(&moto.dynamodb(), "absent")
        .await
        .unwrap_err();
    assert_eq!(err.kind, provision::FailureKind::TableNotFound);
    let url = format!("{}/123456789012/absent", moto.endpoint());
    let err = provision::queue_owner(&moto.sqs(), &url).await.unwrap_err();
    assert_eq!(err.kind, provision::FailureKind::QueueNotFound);

    // No answer: never mistaken for a missing queue, so nothing is created either.
    let port = eventpipe_testkit::free_port();
    let config = aws_sdk_sqs::config::Builder::from(&moto.sdk_config())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    let unreachable = aws_sdk_sqs::Client::from_conf(config);
    let err = provision::ensure_queue(&unreachable, "orders", Default::default(), Some("b-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, provision::FailureKind::Unreachable);
}
