//! A FIFO queue: message groups from a configured field (the correlation id by
//! default) and deduplication by event id.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName as Attr;
use common::*;
use eventpipe_testkit::Moto;

const WEBHOOKS: &str = "      - name: orders
        path: /orders
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        correlationId: {jsonPointer: /orderId}
        deduplicationId: {header: Idempotency-Key}
        messageGroupId: {jsonPointer: /customer}
      - name: payments
        path: /payments
        signature: {scheme: github, secretRef: {name: gh, key: secret}}
        correlationId: {jsonPointer: /orderId}
";

#[tokio::test]
async fn fifo_messages_get_group_and_deduplication_ids() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = create_queue(&sqs, "orders.fifo").await;
    let secrets = github_secrets();
    let config = queue_pipeline("shop", WEBHOOKS, "orders", "orders.fifo");
    let ingress = Ingress::start(Launch::new(&config, secrets.path(), moto.env())).await;
    let client = reqwest::Client::new();
    let send = |path: &'static str, key: Option<&'static str>, body: &'static [u8]| {
        let (client, url) = (client.clone(), format!("{}{path}", ingress.url));
        async move {
            let signature = github_signature(SECRET, body);
            let mut headers = vec![("X-Hub-Signature-256", signature.as_str())];
            headers.extend(key.map(|k| ("Idempotency-Key", k)));
            post(&client, &url, &headers, body).await
        }
    };
    let order = br#"{"orderId":"o-1","customer":"c-9"}"#;
    let first = send("/orders", Some("k-1"), order).await;
    let retried = send("/orders", Some("k-1"), order).await;
    assert_eq!((first.status, retried.status), (202, 202));
    assert_eq!(first.json["eventId"], "k-1");
    assert_eq!(retried.json["eventId"], "k-1");
    let payment = send("/payments", None, br#"{"orderId":"o-2"}"#).await;
    assert_eq!(payment.status, 202, "{}", payment.json);

    let messages = receive(&sqs, &url, 3, Duration::from_secs(5)).await;
    let mut seen: Vec<(String, String, String)> = messages
        .iter()
        .map(|m| {
            let attrs = m.attributes.clone().unwrap_or_default();
            (
                body_json(m)["id"].as_str().unwrap().to_string(),
                attrs[&Attr::MessageGroupId].clone(),
                attrs[&Attr::MessageDeduplicationId].clone(),
            )
        })
        .collect();
    seen.sort();
    let payment_id = payment.json["eventId"].as_str().unwrap().to_string();
    let mut expected = vec![
        ("k-1".to_string(), "c-9".to_string(), "k-1".to_string()),
        (payment_id.clone(), "o-2".into(), payment_id),
    ];
    expected.sort();
    // The retry was deduplicated by the queue; the payment grouped by its correlation id.
    assert_eq!(seen, expected);
}
