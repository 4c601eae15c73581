//! Many concurrent deliveries: every one answered 202 only after its own message is
//! stored, the messages of each queue sent in shared `SendMessageBatch` calls.
//!
//! moto's cost per message grows with the queue's backlog, and deleting while
//! sending can lose messages in moto, so the events are spread over a few queues
//! (one pipeline each, all in one manifest) and counted, not drained.

mod common;

use std::sync::Arc;

use common::*;
use eventpipe_testkit::Moto;
use tokio::{sync::Semaphore, task::JoinSet};

const REQUESTS: usize = 2000;
const IN_FLIGHT: usize = 64;
const QUEUES: usize = 4;

fn webhook(n: usize) -> String {
    GITHUB_WEBHOOK
        .replace("name: github", &format!("name: hook-{n}"))
        .replace("/hooks/github", &format!("/hooks/{n}"))
}

#[tokio::test]
async fn concurrent_deliveries_are_batched_and_each_is_stored() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let secrets = github_secrets();
    let mut config = String::new();
    let mut urls = Vec::new();
    for n in 0..QUEUES {
        let queue = format!("events-{n}");
        urls.push(create_queue(&sqs, &queue).await);
        config += &queue_binding(&queue, &queue);
        let to = format!("{{queueBindingRef: {{name: {queue}}}}}");
        config += &pipeline(&format!("p{n}"), &webhook(n), &to, &queue);
    }
    let ingress = Ingress::start(Launch::new(&config, secrets.path(), moto.env())).await;
    let client = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut requests = JoinSet::new();
    for i in 0..REQUESTS {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let hook = format!("{}/hooks/{}", ingress.url, i % QUEUES);
        requests.spawn(async move {
            let body = format!(r#"{{"issue":{{"number":{i}}}}}"#);
            let delivery = format!("d-{i}");
            let signature = github_signature(SECRET, body.as_bytes());
            let headers = [
                ("X-Hub-Signature-256", signature.as_str()),
                ("X-GitHub-Delivery", &delivery),
            ];
            let answer = post(&client, &hook, &headers, body.as_bytes()).await;
            drop(slot);
            (answer.status, answer.json["eventId"] == delivery.as_str())
        });
    }
    let mut accepted = 0;
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap(), (202, true));
        accepted += 1;
    }
    assert_eq!(accepted, REQUESTS);

    // Every 202 is exactly one stored message (moto's counts are exact).
    for url in &urls {
        assert_eq!(depth(&sqs, url).await, REQUESTS / QUEUES, "{url}");
    }

    let metrics = ingress.metrics().await;
    let (mut calls, mut entries, mut received) = (0.0, 0.0, 0.0);
    for n in 0..QUEUES {
        let destination = format!("{{destination=\"events-{n}\"}}");
        let series = |name: &str| metric(&metrics, &format!("{name}{destination}")).unwrap();
        calls += series("eventpipe_ingress_publish_batch_size_count");
        entries += series("eventpipe_ingress_publish_batch_size_sum");
        let events =
            format!("eventpipe_events_received_total{{pipeline=\"p{n}\",webhook=\"hook-{n}\"}}");
        received += metric(&metrics, &events).unwrap();
    }
    assert_eq!((entries, received), (REQUESTS as f64, REQUESTS as f64));
    eprintln!("{calls} SendMessageBatch calls for {REQUESTS} events");
    assert!(
        calls <= (REQUESTS / 2) as f64,
        "{calls} SendMessageBatch calls for {REQUESTS} events"
    );
}
