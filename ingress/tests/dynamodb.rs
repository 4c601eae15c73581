//! Publishing to a DynamoDB table, with the ingress run in-process through the
//! library API (as local mode runs it) against moto.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use common::*;
use eventpipe_crds::Manifest;
use eventpipe_ingress::{Ingress, IngressConfig, Settings};
use eventpipe_testkit::Moto;
use prometheus_client::registry::Registry;

const BODY: &[u8] = br#"{"action":"created","issue":{"number":42}}"#;

async fn create_table(moto: &Moto, name: &str) {
    moto.dynamodb()
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("a complete definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("a complete definition"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("a complete definition"),
        )
        .send()
        .await
        .expect("moto creates the table");
}

/// How many items the table holds.
async fn items(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> i32 {
    let scan = dynamodb.scan().table_name(table).send().await;
    scan.expect("the table can be scanned").count
}

/// Serves the ingress on a loopback port until the returned sender is dropped.
async fn serve(
    config: IngressConfig,
    settings: Settings,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut registry = Registry::default();
    let ingress = Ingress::new(config, settings, &mut registry)
        .await
        .expect("the ingress starts");
    assert!(ingress.ready().get(), "secrets loaded");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.serve(listener, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test]
async fn events_are_put_into_the_table_once_with_their_trace() {
    let _telemetry = eventpipe_core::telemetry::init("eventpipe-ingress-test");
    let moto = Moto::start();
    create_table(&moto, "github-comments").await;
    let secrets = github_secrets();
    let github = GITHUB_WEBHOOK.replace("maxBodyBytes: 4096", "maxBodyBytes: 1048576");
    let missing_table = GITHUB_WEBHOOK
        .replace("name: github", "name: lost")
        .replace("/hooks/github", "/hooks/lost");
    let yaml = [
        queue_binding("unused", "unused"),
        pipeline(
            "ingest",
            &github,
            "{dynamodb: {tableName: github-comments}}",
            "unused",
        ),
        pipeline(
            "lost",
            &missing_table,
            "{dynamodb: {tableName: no-such-table}}",
            "unused",
        ),
    ]
    .concat();
    let config = IngressConfig::from_manifest(
        &Manifest::from_yaml("test.yaml", &yaml).unwrap(),
        "test.yaml",
    )
    .unwrap();
    let settings = Settings {
        secrets_dir: secrets.path().into(),
        aws: Some(moto.sdk_config()),
        publish_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let (url, _stop) = serve(config, settings).await;
    let client = reqwest::Client::new();
    let signature = github_signature(SECRET, BODY);
    let headers = [
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Event", "issue_comment"),
        ("X-GitHub-Delivery", "d-1"),
        ("traceparent", TRACEPARENT),
    ];
    let hook = format!("{url}/hooks/github");
    let first = post(&client, &hook, &headers, BODY).await;
    assert_eq!(first.status, 202, "{}", first.json);
    let retried = post(&client, &hook, &headers, BODY).await;
    assert_eq!(
        retried.status, 202,
        "a stored event stays accepted: {}",
        retried.json
    );
    assert_eq!(
        (
            first.json["eventId"].as_str(),
            retried.json["eventId"].as_str()
        ),
        (Some("d-1"), Some("d-1"))
    );

    let dynamodb = moto.dynamodb();
    assert_eq!(items(&dynamodb, "github-comments").await, 1);
    let item = dynamodb
        .get_item()
        .table_name("github-comments")
        .key("id", AttributeValue::S("d-1".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the event is stored");
    let item = eventpipe_core::item::to_json(item);
    assert_eq!(item["type"], "issue_comment");
    assert_eq!(item["source"], "/eventpipe/ingest/github");
    assert_eq!(item["correlationid"], "42");
    assert_eq!(item["data"]["issue"]["number"], 42);
    let (trace, correlation) = eventpipe_core::item::trace_of(&item);
    assert_eq!(correlation.as_deref(), Some("42"));
    let traceparent = &trace
        .iter()
        .find(|(k, _)| k == "traceparent")
        .expect("traceparent")
        .1;
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );

    // An event over DynamoDB's item size limit is refused for good, not retried.
    let big = format!(
        r#"{{"issue":{{"number":7}},"blob":"{}"}}"#,
        "x".repeat(450_000)
    );
    let big_signature = github_signature(SECRET, big.as_bytes());
    let too_large = post(
        &client,
        &hook,
        &[
            ("X-Hub-Signature-256", &big_signature),
            ("X-GitHub-Delivery", "d-big"),
        ],
        big.as_bytes(),
    )
    .await;
    assert_eq!(too_large.status, 413, "{}", too_large.json);
    let error = too_large.json["error"].as_str().unwrap();
    assert!(
        error.contains("DynamoDB table github-comments accepts at most 409600"),
        "{error}"
    );
    assert_eq!(items(&dynamodb, "github-comments").await, 1);

    let lost_signature = github_signature(SECRET, BODY);
    let lost = post(
        &client,
        &format!("{url}/hooks/lost"),
        &[("X-Hub-Signature-256", &lost_signature)],
        BODY,
    )
    .await;
    assert_eq!(lost.status, 503, "{}", lost.json);
    assert_eq!(lost.headers["retry-after"], "5");
}
