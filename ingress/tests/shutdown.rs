//! SIGTERM: the ingress stops taking requests, reports not ready, and finishes the
//! requests in flight (their events stored and answered 202) before exiting.

mod common;

use std::time::{Duration, Instant};

use common::*;
use eventpipe_testkit::Moto;

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let moto = Moto::start();
    let url = create_queue(&moto.sqs(), "github-events").await;
    let secrets = github_secrets();
    let config = queue_pipeline("hooks", GITHUB_WEBHOOK, "github-events", "github-events");
    // A long flush delay holds the request in the batcher while the signal arrives.
    let mut ingress = Ingress::start(Launch {
        args: vec!["--flush-delay", "1500ms"],
        ..Launch::new(&config, secrets.path(), moto.env())
    })
    .await;
    let client = reqwest::Client::new();
    let in_flight = {
        let client = client.clone();
        let hook = format!("{}/hooks/github", ingress.url);
        let body = br#"{"issue":{"number":1}}"#;
        let signature = github_signature(SECRET, body);
        tokio::spawn(async move {
            post(
                &client,
                &hook,
                &[
                    ("X-Hub-Signature-256", &signature),
                    ("X-GitHub-Delivery", "d-1"),
                ],
                body,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = ingress.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    // While draining, the ops server still answers, and says not ready.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let readyz = client
        .get(format!("{}/readyz", ingress.ops_url))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);

    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status, answer.json["eventId"].as_str()),
        (202, Some("d-1"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = ingress.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {}",
            ingress.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", ingress.output());
    assert!(ingress.log_text().contains("draining in-flight requests"));
    let messages = receive(&moto.sqs(), &url, 1, Duration::from_secs(5)).await;
    assert_eq!(body_json(&messages[0])["id"], "d-1");
}
